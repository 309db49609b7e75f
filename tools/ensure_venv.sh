#!/usr/bin/env bash
# ensure_venv.sh — creates .venv/ and installs the pinned Python test tools of
# requirements-dev.txt. Wheels are cached in ~/.cache/pip, so reruns on one machine are fast.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
