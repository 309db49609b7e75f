#!/usr/bin/env bash
# validate_cuda.sh — the offline check of the CUDA backend (no GPU needed; runs in CI):
# every src/backend/cuda/*.cu compiled by nvcc for sm_80, sm_89 and sm_90a with warnings as
# errors (nvcc and the host compiler); the ptxas report must show no local-memory spills or
# stack frames in any kernel; cuobjdump -sass of the mini-GEMM object must show tensor-core
# instructions (IMMA/HMMA/HGMMA) in every k_mma_* kernel on every architecture, and the GEMV
# kernels their integer dot products (IDP); on sm_90a the fused kernels (moe_fused.cu)
# must show its bulk copies (UBLKCP), mbarrier waits (SYNCS) and IDP. Prints a summary; exits
# non-zero on any breach.
# Skips (exit 0, says why) only when nvcc is missing and DS4_REQUIRE_CUDA is unset.
set -u
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null 2>&1; then
    if [ -x /usr/local/cuda/bin/nvcc ]; then
        NVCC=/usr/local/cuda/bin/nvcc
    elif [ -n "${DS4_REQUIRE_CUDA:-}" ]; then
        echo "validate_cuda: nvcc not found"; exit 1
    else
        echo "validate_cuda: skip (nvcc not found)"; exit 0
    fi
fi
# cuobjdump (+ the nvdisasm it runs): PATH, beside nvcc, else NVIDIA's pinned wheels unpacked
# once into the cache (pip download; no install).
CU_TOOLS_VERSION=13.2.86
cache=${XDG_CACHE_HOME:-$HOME/.cache}/ds4-tools/cuda-tools-$CU_TOOLS_VERSION
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || echo "$(dirname "$(command -v "$NVCC")")/cuobjdump")}
if [ ! -x "$CUOBJDUMP" ] || ! { command -v nvdisasm >/dev/null || [ -x "$(dirname "$CUOBJDUMP")/nvdisasm" ]; }; then
    CUOBJDUMP=$cache/nvidia/cu13/bin/cuobjdump
    if [ ! -x "$CUOBJDUMP" ] || [ ! -x "$cache/nvidia/cu13/bin/nvdisasm" ]; then
        tmp=$(mktemp -d)
        python3 -m pip download -q --no-deps -d "$tmp" "nvidia-cuda-cuobjdump==$CU_TOOLS_VERSION" \
            "nvidia-cuda-nvdisasm==$CU_TOOLS_VERSION" && mkdir -p "$cache" &&
            for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$cache"; done &&
            chmod +x "$cache"/nvidia/cu13/bin/*
        rm -rf "$tmp"
    fi
    [ -x "$CUOBJDUMP" ] || { echo "validate_cuda: no cuobjdump (pip download failed)"; exit 1; }
fi
export PATH="$(dirname "$CUOBJDUMP"):$PATH"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bad=0
"$NVCC" --version | tail -1
for arch in 80 89 90a; do
    for f in src/backend/cuda/*.cu; do
        n=$(basename "$f" .cu)
        o="$out/$n.sm_$arch.o"
        if ! "$NVCC" -Iinclude -Isrc -D_GNU_SOURCE -O3 -std=c++17 -Werror all-warnings \
            -Xcompiler -Wall,-Wextra,-Werror -Xptxas -v,-warn-spills,-warn-lmem-usage \
            -gencode "arch=compute_$arch,code=sm_$arch" -c "$f" -o "$o" > "$out/$n.$arch.log" 2>&1; then
            cat "$out/$n.$arch.log"; echo "validate_cuda: FAIL $f sm_$arch does not compile cleanly"; bad=1
            continue
        fi
        if grep -E '[1-9][0-9]* bytes (stack frame|spill stores|spill loads)' "$out/$n.$arch.log" >/dev/null; then
            grep -B2 -E '[1-9][0-9]* bytes (stack frame|spill)' "$out/$n.$arch.log"
            echo "validate_cuda: FAIL $f sm_$arch has local-memory spills or a stack frame"; bad=1
        fi
        regs=$(grep -o 'Used [0-9]* registers' "$out/$n.$arch.log" | awk '{print $2}' | sort -n | tail -1)
        echo "  sm_$arch $n: $(grep -c 'Compiling entry' "$out/$n.$arch.log") kernels, max ${regs:-0} registers, 0 spills"
    done
    # tensor-core instructions in every mini-GEMM kernel, dp4a (IDP) in the GEMV kernels
    "$CUOBJDUMP" -sass "$out/moe_minigemm.sm_$arch.o" > "$out/mg.$arch.sass" &&
        "$CUOBJDUMP" -sass "$out/moe_gemv.sm_$arch.o" > "$out/gv.$arch.sass" ||
        { echo "validate_cuda: FAIL cuobjdump"; bad=1; continue; }
    awk -v arch="$arch" '
        /Function : / { if (fn ~ /k_mma_/ && !mma) { print "  no tensor-core instruction in " fn; miss = 1 }
                        fn = $3; mma = 0; next }
        /IMMA|HMMA|HGMMA/ { mma++ ; tot++ }
        END { if (fn ~ /k_mma_/ && !mma) { print "  no tensor-core instruction in " fn; miss = 1 }
              printf "  sm_%s moe_minigemm: %d tensor-core instructions (", arch, tot; exit miss }' \
        "$out/mg.$arch.sass" || { echo; echo "validate_cuda: FAIL sm_$arch mini-GEMM without MMA"; bad=1; }
    grep -oE '\b(IMMA|HMMA|HGMMA)[.A-Z0-9]*' "$out/mg.$arch.sass" | sort | uniq -c | tr -s ' ' | tr '\n' ',' ; echo ")"
    idp=$(grep -c 'IDP' "$out/gv.$arch.sass")
    echo "  sm_$arch moe_gemv: $idp IDP (dp4a) instructions"
    [ "$idp" -gt 0 ] || { echo "validate_cuda: FAIL sm_$arch GEMV without dp4a"; bad=1; }
    if [ "$arch" = 90a ]; then
        "$CUOBJDUMP" -sass "$out/moe_fused.sm_$arch.o" > "$out/fu.$arch.sass" || { echo "validate_cuda: FAIL cuobjdump"; bad=1; }
        blk=$(grep -c 'UBLKCP' "$out/fu.$arch.sass"); syn=$(grep -c 'SYNCS' "$out/fu.$arch.sass")
        fidp=$(grep -c 'IDP' "$out/fu.$arch.sass")
        echo "  sm_$arch moe_fused: $blk UBLKCP (bulk copy), $syn SYNCS (mbarrier), $fidp IDP"
        [ "$blk" -gt 0 ] && [ "$syn" -gt 0 ] && [ "$fidp" -gt 0 ] ||
            { echo "validate_cuda: FAIL sm_$arch fused kernel without bulk copies/mbarriers/dp4a"; bad=1; }
        if grep -qE '\b(LDL|STL)\b' "$out/fu.$arch.sass"; then
            echo "validate_cuda: FAIL sm_$arch local-memory instructions (LDL/STL) in the fused kernel"; bad=1
        fi
    fi
    if grep -qE '\b(LDL|STL)\b' "$out/mg.$arch.sass" "$out/gv.$arch.sass"; then
        echo "validate_cuda: FAIL sm_$arch local-memory instructions (LDL/STL) in SASS"; bad=1
    fi
done
[ $bad -eq 0 ] && echo "validate_cuda: ok"
exit $bad
