#!/usr/bin/env bash
# launchd/install.sh [--uninstall] [--instance NAME] — install the tgvoice stages as launchd
# agents (macOS, ~/Library/LaunchAgents) or systemd user units (Linux, ~/.config/systemd/user).
# Each stage is kept alive by the service manager instead of scripts/voicecall's supervisor.
# Secrets (ANTHROPIC_API_KEY=…) go in ~/.config/tgvoice/env (mode 0600), read at each start.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
INSTANCE=default UNINSTALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --uninstall) UNINSTALL=1; shift ;;
        --instance) INSTANCE=$2; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
STAGES="llm-server tgcat vadseg sttd llm-relay tts-writer"
[ -f "${XDG_STATE_HOME:-$HOME/.local/state}/tgvoice/telegram.session" ] && STAGES="$STAGES tg-bridge"
LOGS="${XDG_STATE_HOME:-$HOME/.local/state}/tgvoice/$INSTANCE/logs"
mkdir -p "$LOGS" "$HOME/.config/tgvoice"
[ -f "$HOME/.config/tgvoice/env" ] || { install -m 600 /dev/null "$HOME/.config/tgvoice/env"; }

if [ "$(uname -s)" = Darwin ]; then
    dest="$HOME/Library/LaunchAgents"; mkdir -p "$dest"
    for s in $STAGES; do
        plist="$dest/com.tgvoice.$INSTANCE.$s.plist"
        launchctl bootout "gui/$(id -u)" "$plist" 2>/dev/null || true
        if [ $UNINSTALL = 1 ]; then rm -f "$plist"; echo "removed $plist"; continue; fi
        sed -e "s|@ROOT@|$ROOT|g" -e "s|@INSTANCE@|$INSTANCE|g" -e "s|@LOGS@|$LOGS|g" -e "s|@HOME@|$HOME|g" \
            "$ROOT/launchd/com.tgvoice.$s.plist" > "$plist"
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
