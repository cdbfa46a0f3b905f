#!/bin/sh
# Installs the Debian packages parley needs to build, run and test, when they are missing.
# Safe to run repeatedly: it asks apt only when something is absent. Needs root (or sudo).
set -eu

PACKAGES="
gcc make pkg-config git curl
clang libclang-rt-14-dev clang-format
libopenblas-dev
libmicrohttpd-dev libwebsockets-dev libjansson-dev
libopus-dev libopusfile-dev libopusenc-dev libsoxr-dev
libpcre2-dev libsystemd-dev
python3 python3-numpy python3-torch python3-yaml
espeak-ng sox
haproxy nginx-light
chromium chromium-driver nodejs
"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-deps: need root to install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
