#!/usr/bin/env bash
# Debian packages: the union of every scripts/provision/*.apt list (one package per line).
set -euo pipefail
. "$(dirname "$0")/../env.sh"
pkgs=$(cat "$TGVOICE_ROOT"/scripts/provision/*.apt | sed 's/#.*//' | tr -s ' \n' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { say "Debian packages present"; exit 0; }
say "installing Debian packages: ${missing[*]}"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
