#!/usr/bin/env bash
# The Piper clips smart_turn_reference.py uses: en_US-joe-medium through the real tts-writer,
# resampled to 16 kHz mono by sox. Run from anywhere after scripts/setup and a release build.
set -euo pipefail
. "$(dirname "$0")/../../../../scripts/env.sh"
cd "$(dirname "$0")"
clip() {
    echo "$2" | TGVOICE_STATE_DIR=$(mktemp -d) tts-writer --engine piper --unpaced -q \
        | sox -q -t raw -r 48000 -e signed -b 16 -c 1 - -r 16000 -b 16 "$1"
}
clip capital-of-france.wav "What is the capital of France?"
clip table-for.wav "I'd like a table for,"
clip four-people.wav "four people."
clip table-for-um.wav "I'd like a table for, um..."
