#!/usr/bin/env bash
# Make sure Debian's Noto Color Emoji font is installed (the icons dataset renders it; tests/test_icons.py).
# Idempotent: does nothing when the font file exists.
set -euo pipefail
font=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
if [ -f "$font" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "[cola-mm] $font is missing and there is no apt-get: install Noto Color Emoji by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
echo "[cola-mm] installing Debian's fonts-noto-color-emoji for the icons dataset (once)" >&2
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji \
        >/dev/null 2>&1; then
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji >/dev/null
fi
