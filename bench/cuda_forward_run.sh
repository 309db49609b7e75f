#!/usr/bin/env bash
# cuda_forward_run.sh — the CUDA backend end to end, in one GPU-machine call: the GPU tests of
# the backend (tests/cuda/test_cuda_forward, + compute-sanitizer memcheck on one case), the
# decode-MoE kernel tests, then a Flash-shaped model (published dimensions, $LAYERS layers,
# q2 and q4 experts, random weights) decoded greedily by build/cuda/bin/ds4 with the routed
# experts on the CPU and on the GPU (generation tok/s from ds4's own stderr line), and the
# logits of both backends compared (ds4-logits). Binaries come from $BIN (default build-dev,
# made on an x86-64 host with `make cuda BUILD=build-dev ARCH=-march=x86-64-v3` and
# `make BUILD=build-dev ARCH=-march=x86-64-v3 build-dev/bin/ds4-mkmodel`) and the shared
# libraries they need from $LIBS when set. Logs under $OUT. Exits non-zero if a test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_forward_run}
BIN=${BIN:-build-dev}
LAYERS=${LAYERS:-2}
GEN=${GEN:-32}
mkdir -p "$OUT"
[ -n "${LIBS:-}" ] && export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
rc=0
echo "== tests"
for t in test_cuda_forward test_cuda_moe_fused test_cuda_moe; do
    "$BIN/cuda/tests/$t" > "$OUT/$t.log" 2>&1 || rc=1
    echo "$t: $(tail -n 1 "$OUT/$t.log")"
    grep -E '^FAIL' "$OUT/$t.log" | head -5
done
grep -E '^(ok|FAIL)' "$OUT/test_cuda_forward.log" | head -40
if command -v compute-sanitizer >/dev/null; then
    timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 \
        "$BIN/cuda/tests/test_cuda_forward" "tiny q2 all layers" > "$OUT/sanitizer.log" 2>&1
    echo "memcheck rc=$?: $(grep 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
fi
echo "== end to end: flash-shape, $LAYERS layers, greedy, $GEN tokens"
T=$(seq -s, 100 163)
for q in q2 q4; do
    m=/tmp/flash_$q.gguf
    "$BIN/bin/ds4-mkmodel" "$m" --preset flash-shape --layers "$LAYERS" --quant $q --fill random \
        --threads "$(nproc)" > "$OUT/mkmodel_$q.log" 2>&1 || { echo "mkmodel $q failed"; tail -3 "$OUT/mkmodel_$q.log"; rc=1; continue; }
    ls -la "$m" | awk '{print $5, $9}'
    for b in cpu cuda cpu cuda; do
        "$BIN/cuda/bin/ds4" -m "$m" --backend $b -p "The quick brown fox" -n "$GEN" --temp 0 --nothink \
            > "$OUT/gen_${q}_$b.txt" 2> "$OUT/gen_${q}_$b.err" || rc=1
        echo "$q $b: $(grep -E 'on CUDA|generation' "$OUT/gen_${q}_$b.err" | tr '\n' ' ')"
    done
    cmp -s "$OUT/gen_${q}_cpu.txt" "$OUT/gen_${q}_cuda.txt" && echo "$q: same text on both" || echo "$q: texts differ"
    for b in cpu cuda; do
        "$BIN/cuda/bin/ds4-logits" -m "$m" --tokens "$T" --out "$OUT/logits_${q}_$b.npy" --backend $b \
            > "$OUT/logits_${q}_$b.log" 2>&1 || rc=1
    done
    python3 - "$OUT/logits_${q}_cpu.npy" "$OUT/logits_${q}_cuda.npy" <<'PY' || rc=1
import sys, numpy as np
a, b = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
rel = np.linalg.norm(b - a) / np.linalg.norm(a)
agree = float((a.argmax(-1) == b.argmax(-1)).mean())
print(f"logits cuda vs cpu: rel L2 {rel:.3e}, argmax agree {agree:.3f} over {a.shape[0]} tokens")
PY
    rm -f "$m"
done
exit $rc
