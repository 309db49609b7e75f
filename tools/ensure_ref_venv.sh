#!/usr/bin/env bash
# ensure_ref_venv.sh — adds the reference packages of requirements-ref.txt (torch, transformers,
# safetensors and their pinned closure) to the .venv/ made by tools/ensure_venv.sh, for the
# transformers comparison in tests/reference/. torch is the PyPI CUDA wheel installed with
# --no-deps (no nvidia-* wheels); tools/torch_cuda_stubs.py then builds small stand-ins for the
# CUDA libraries it links, so torch imports and runs on the CPU. Wheels are kept in
# ~/.cache/ds4-wheels (pip's own HTTP cache does not keep them on this mirror), so a fresh venv
# on the same machine installs without downloading; a stamp (.venv/.ref-stamp) makes a rerun
# with unchanged inputs a no-op.
# Exits non-zero if torch cannot compute on the CPU afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || tools/ensure_venv.sh
PY=.venv/bin/python
stamp=.venv/.ref-stamp
want=$(cat requirements-ref.txt tools/torch_cuda_stubs.py | sha256sum | cut -d' ' -f1)
check='import torch; x = torch.randn(3) @ torch.randn(3); assert torch.isfinite(x); import transformers; from transformers import DeepseekV4ForCausalLM'

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "$check" 2>/dev/null; then
    exit 0
fi
wheels=${DS4_WHEEL_CACHE:-$HOME/.cache/ds4-wheels}
mkdir -p "$wheels"
echo "ensure_ref_venv: installing requirements-ref.txt into .venv/ (torch wheel ~540 MB, kept in $wheels)"
"$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" -r requirements-ref.txt
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-index --find-links "$wheels" \
    -r requirements-ref.txt
"$PY" tools/torch_cuda_stubs.py
"$PY" -c "$check"
echo "$want" > "$stamp"
