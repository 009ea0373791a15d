# Sourced by the Whisper provisioning steps (50-whisper-model.sh, 51-whisper-base.sh).
# install_whisper_model CT2_DIR DEST SHA256 LABEL: convert a CTranslate2 Whisper model to ggml
# with bins/whisper-convert, check the result's sha256 and that sttd loads and runs it, then
# move it to DEST.
install_whisper_model() {
    local ct2=$1 dest=$2 want=$3 label=$4 out got
    out="$(dirname "$ct2")/$(basename "$dest").new"
    (cd "$TGVOICE_ROOT" && cargo build --release --quiet -p whisper-convert -p sttd)
    "$TGVOICE_BIN/whisper-convert" "$ct2" -o "$out"
    got=$(sha_of "$out")
    [ "$got" = "$want" ] || die "converted $label has sha256 $got, expected $want (converter or wheel changed?)"
    "$TGVOICE_BIN/sttd" --check-model --model "$out" >&2
    mv "$out" "$dest"
    say "$label converted and verified: $dest"
}
