#!/usr/bin/env bash
# ensure_deps.sh — installs the Debian packages the build and tests need, only those missing.
# Called by `make test` on a fresh machine; a no-op when everything is present.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_cmd cc || need+=(gcc)
have_cmd make || need+=(make)
have_cmd pkg-config || need+=(pkg-config)
have_cmd python3 || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
have_cmd clang || need+=(clang)
have_pkg libclang-rt-14-dev || have_pkg libclang-rt-dev || need+=(libclang-rt-dev)
have_pkg libpcre2-dev || need+=(libpcre2-dev)   # tokenizer pre-tokenizer regex
have_pkg libedit-dev || need+=(libedit-dev)     # ds4 line editing

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "ensure_deps: installing ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
