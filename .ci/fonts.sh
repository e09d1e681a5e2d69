#!/usr/bin/env bash
# Make sure Debian's Noto Color Emoji font is installed (the icons dataset renders it; tests/test_icons.py).
exec bash "$(dirname "${BASH_SOURCE[0]}")/apt_package.sh" /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf \
    fonts-noto-color-emoji "the icons dataset"
