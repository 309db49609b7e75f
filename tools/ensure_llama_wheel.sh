#!/usr/bin/env bash
# ensure_llama_wheel.sh — installs llama-cpp-python and its pinned closure (requirements-llama.txt)
# into .venv/ for tests/reference/test_llamacpp_ref.py. PyPI has only its source, so the wheel
# is built once — llama.cpp CPU only, generic x86-64-v3 (AVX2/FMA/F16C/BMI2, no -march=native,
# so a cached wheel runs on any such CPU), without the multimodal library — and kept in
# $DS4_WHEEL_CACHE (default ~/.cache/ds4-wheels)/llama-cpp-<hash of version and flags>/; later
# runs install from there without building. The first build takes about 8 minutes on 2 busy
# cores (measured 454 s; the time is printed; CI budgets it once per cache). A stamp makes
# a rerun with unchanged inputs a no-op. Exits non-zero if the installed library has no
# deepseek4 architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || tools/ensure_venv.sh
PY=.venv/bin/python
stamp=.venv/.llama-stamp
ver=$(sed -n 's/^llama-cpp-python==//p' requirements-llama.txt)
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
flags="$flags -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF"
key=$(printf '%s %s' "$ver" "$flags" | sha256sum | cut -c1-12)
want=$(cat requirements-llama.txt "$0" | sha256sum | cut -d' ' -f1)
check='import llama_cpp, os, sys
lib = os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libllama.so")
sys.exit(0 if b"deepseek4" in open(lib, "rb").read() else "libllama.so has no deepseek4 architecture")'

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "$check" 2>/dev/null; then
    exit 0
fi
wheels=${DS4_WHEEL_CACHE:-$HOME/.cache/ds4-wheels}
built=$wheels/llama-cpp-$key
mkdir -p "$wheels" "$built"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! ls "$built"/llama_cpp_python-"$ver"-*.whl >/dev/null 2>&1; then
    echo "ensure_llama_wheel: building llama-cpp-python $ver (llama.cpp, CPU, generic x86-64-v3) once;" \
         "about 8 min on 2 cores, kept in $built"
    t0=$(date +%s)
    # --no-cache-dir: pip caches sdist builds by URL, not by CMAKE_ARGS
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$PY" -m pip wheel -q --disable-pip-version-check --no-cache-dir --no-deps \
        --no-binary llama-cpp-python \
        -w "$tmp" "llama-cpp-python==$ver"
    mv "$tmp"/llama_cpp_python-"$ver"-*.whl "$built"/
    echo "ensure_llama_wheel: built in $(( $(date +%s) - t0 )) s"
fi
grep -v '^llama-cpp-python==' requirements-llama.txt > "$tmp/deps.txt"
"$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" -r "$tmp/deps.txt"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-index --find-links "$wheels" \
    -r "$tmp/deps.txt"
# --force-reinstall: the same version built with other flags may be installed
"$PY" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
    "$built"/llama_cpp_python-"$ver"-*.whl
"$PY" -c "$check"
echo "$want" > "$stamp"
