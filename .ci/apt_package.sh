#!/usr/bin/env bash
# Make sure a Debian package is installed: .ci/apt_package.sh FILE PACKAGE WHY
# Idempotent: does nothing when FILE (a file the package provides) exists.
set -euo pipefail
file=$1 package=$2 why=$3
if [ -e "$file" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "[cola-mm] $file is missing and there is no apt-get: install $package by hand ($why)" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
echo "[cola-mm] installing Debian's $package ($why; once)" >&2
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1; then
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null
fi
