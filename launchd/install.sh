#!/usr/bin/env bash
# launchd/install.sh [--uninstall] [--instance NAME] — install the tgvoice stages as launchd
# agents (macOS, ~/Library/LaunchAgents) or systemd user units (Linux, ~/.config/systemd/user).
# Each stage is kept alive by the service manager instead of scripts/voicecall's supervisor.
# Secrets (ANTHROPIC_API_KEY=…) go in ~/.config/tgvoice/env (mode 0600), read at each start.
# The stages are those of pipeline.table (tg-bridge only when a Telegram session exists; not
# the phone front); each plist is made from launchd/stage.plist.in.
#   --print-plist STAGE   print the plist that would be installed for STAGE, and exit
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/env.sh"
INSTANCE=default UNINSTALL=0 PRINT=
while [ $# -gt 0 ]; do
    case "$1" in
        --uninstall) UNINSTALL=1; shift ;;
        --instance) INSTANCE=$2; shift 2 ;;
        --print-plist) PRINT=$2; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# Every stage of the table except the phone front; tg-bridge only with a Telegram session.
has_session() { [ -f "${TGVOICE_TG_SESSION:-$(tgvoice_state_base)/telegram.session}" ]; }
STAGES=$(awk '!/^[[:space:]]*(#|$)/ && $4 != "phone-front" { print $1, $4 }' "$ROOT/pipeline.table" |
    while read -r s starts; do if [ "$starts" != telegram ] || has_session; then printf '%s ' "$s"; fi; done)
LOGS="$(tgvoice_state_base)/$INSTANCE/logs"
plist() { # STAGE: the launchd agent of one stage
    sed -e "s|@STAGE@|$1|g" -e "s|@ROOT@|$ROOT|g" -e "s|@INSTANCE@|$INSTANCE|g" -e "s|@LOGS@|$LOGS|g" -e "s|@HOME@|$HOME|g" \
        "$ROOT/launchd/stage.plist.in"
}
if [ -n "$PRINT" ]; then plist "$PRINT"; exit 0; fi
mkdir -p "$LOGS" "$HOME/.config/tgvoice"
[ -f "$HOME/.config/tgvoice/env" ] || { install -m 600 /dev/null "$HOME/.config/tgvoice/env"; }

if [ "$(uname -s)" = Darwin ]; then
    dest="$HOME/Library/LaunchAgents"; mkdir -p "$dest"
    for s in $STAGES; do
        plist="$dest/com.tgvoice.$INSTANCE.$s.plist"
        launchctl bootout "gui/$(id -u)" "$plist" 2>/dev/null || true
        if [ $UNINSTALL = 1 ]; then rm -f "$plist"; echo "removed $plist"; continue; fi
        plist "$s" > "$plist"
        plutil -lint "$plist" >/dev/null
        launchctl bootstrap "gui/$(id -u)" "$plist"
        echo "loaded $plist"
    done
else
    dest="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"; mkdir -p "$dest"
    [ "$INSTANCE" = default ] || { echo "install.sh: systemd units serve the default instance only" >&2; exit 2; }
    if [ $UNINSTALL = 1 ]; then
        systemctl --user disable --now tgvoice.target $(for s in $STAGES; do echo "tgvoice-stage@$s.service"; done) 2>/dev/null || true
        rm -f "$dest/tgvoice-stage@.service" "$dest/tgvoice.target"; systemctl --user daemon-reload || true
        echo "removed the tgvoice units"; exit 0
    fi
    sed "s|@ROOT@|$ROOT|g" "$ROOT/launchd/systemd/tgvoice-stage@.service" > "$dest/tgvoice-stage@.service"
    cp "$ROOT/launchd/systemd/tgvoice.target" "$dest/"
    systemctl --user daemon-reload
    for s in $STAGES; do systemctl --user enable "tgvoice-stage@$s.service"; done
    systemctl --user enable --now tgvoice.target
    echo "installed; see: systemctl --user status 'tgvoice-stage@*'"
fi
