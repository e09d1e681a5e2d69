#!/usr/bin/env bash
# Make sure Debian's chromium is installed (the real-browser app test drives it with Playwright).
# Idempotent: does nothing when /usr/bin/chromium exists.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "[cola-mm] /usr/bin/chromium is missing and there is no apt-get: install Chromium by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
echo "[cola-mm] installing Debian's chromium for the browser test (once, ~1 min)" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
