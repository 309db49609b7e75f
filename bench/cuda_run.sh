#!/usr/bin/env bash
# cuda_run.sh — everything the CUDA backend needs from one GPU machine, in one call: builds
# (unless prebuilt binaries are in $CUDA_BIN, default build-dev/cuda, made by
# `make cuda BUILD=build-dev ARCH=-march=x86-64-v3` on an x86-64 host and carried), runs the
# GPU tests (tests/cuda/test_cuda_moe, test_cuda_moe_fused), compute-sanitizer memcheck on the batch-1 cases (the
# fused kernel) and n=5, racecheck on n=5 (SAN_TIMEOUT s each), then bench/cuda_moe_bench
# ($BENCH_ARGS, e.g. --max-batch 1; its stderr, the stage profile with the fused kernel's
# per-block trace, goes to profile.log), then each tuning variant build-dev/v*/cuda at batch 1.
# Logs under $OUT (default /tmp/cuda_run): nvidia-smi.txt, test.log, test-fused.log, sanitizer.log, bench.log,
# bench.csv, profile.log, bench-v*.log. Exits non-zero if a test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_run}
mkdir -p "$OUT"
BIN=${CUDA_BIN:-build-dev/cuda}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
head -12 "$OUT/nvidia-smi.txt"
if [ ! -x "$BIN/tests/test_cuda_moe" ] || [ ! -x "$BIN/bench/cuda_moe_bench" ]; then
    make -j16 cuda BUILD=build-dev > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
    BIN=build-dev/cuda
fi
rc=0
echo "== tests"
"$BIN/tests/test_cuda_moe" > "$OUT/test.log" 2>&1 || rc=1
grep -v '^ok\|^ds4: CUDA MoE stage' "$OUT/test.log"
if [ -x "$BIN/tests/test_cuda_moe_fused" ]; then
    "$BIN/tests/test_cuda_moe_fused" > "$OUT/test-fused.log" 2>&1 || rc=1
    grep -v '^ok' "$OUT/test-fused.log"
fi
echo "== compute-sanitizer"
if command -v compute-sanitizer >/dev/null; then
    # memcheck on the batch-1 cases (the fused kernel) and n=5; racecheck on n=5
    for run in "memcheck gemv vs float64 n=1" "memcheck n=5" "racecheck n=5"; do
        tool=${run%% *}
        timeout ${SAN_TIMEOUT:-90} compute-sanitizer --tool $tool --error-exitcode 3 "$BIN/tests/test_cuda_moe" \
            "${run#* }" >> "$OUT/sanitizer.log" 2>&1
        echo "$run rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1)"
    done
fi
echo "== bench"
if [ "${BENCH_ARGS:-}" != skip ]; then
    "$BIN/bench/cuda_moe_bench" --csv "$OUT/bench.csv" ${BENCH_ARGS:-} > "$OUT/bench.log" 2> "$OUT/profile.log" || rc=1
    cat "$OUT/bench.log"
fi
# tuning variants (build-dev/v*/cuda, made with make cuda CUDA_TUNE=...): one table each
for v in build-dev/v*/cuda; do
    [ -x "$v/bench/cuda_moe_bench" ] || continue
    n=$(basename "$(dirname "$v")")
    echo "== variant $n"
    "$v/bench/cuda_moe_bench" --reps 9 --max-batch 1 > "$OUT/bench-$n.log" 2>/dev/null || rc=1
    grep -E '^# build|cold' "$OUT/bench-$n.log"
done
[ -f "$OUT/profile.log" ] && grep -E 'tokens=(1|8) ' "$OUT/profile.log" | sed 's/layer=0 //' | sort -u | head -24
echo "== summary"
tail -n 1 "$OUT/test.log"
[ -f "$OUT/test-fused.log" ] && tail -n 1 "$OUT/test-fused.log"
grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log"
exit $rc
