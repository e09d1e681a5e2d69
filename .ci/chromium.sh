#!/usr/bin/env bash
# Make sure Debian's chromium is installed (the real-browser app test drives it with Playwright).
exec bash "$(dirname "${BASH_SOURCE[0]}")/apt_package.sh" /usr/bin/chromium chromium "the browser test"
