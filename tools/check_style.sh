#!/usr/bin/env bash
# check_style.sh — the mechanical rules of shared/spec/style.md that a script can check:
# no source file over 1,500 lines, every C/CUDA file opens with its ownership comment, and
# every exported symbol of the engine library carries a known module prefix.
# Usage: tools/check_style.sh [LIBRARY]   (default build/libds4.a). Exits non-zero on a breach.
set -u
cd "$(dirname "$0")/.."
lib=${1:-build/libds4.a}
bad=0

while read -r n f; do
    [ "$f" = total ] && continue
    if [ "$n" -gt 1500 ]; then echo "style: $f has $n lines (limit 1500)"; bad=1; fi
done < <(git ls-files 'src/*' 'tools/*' 'bench/*' 'tests/*' 'fuzz/*' | grep -E '\.(c|h|cu|cuh|py)$' | xargs -r wc -l)

for f in $(git ls-files 'src/*' 'tools/*' 'bench/*' 'tests/*' 'fuzz/*' 'include/*' | grep -E '\.(c|h|cu|cuh)$'); do
    head -c 2 "$f" | grep -q '^/[*/]' || { echo "style: $f does not open with its ownership comment"; bad=1; }
done

if [ -f "$lib" ]; then
    prefixes='^(ds4_|gguf_|quant_|cpu_|backend_|cuda_|model_|hc_|attn_|moe_|rope_|qat_|kv_|compressor_|indexer_|tok_|chat_|sample_|srv_)'
    syms=$(nm -g --defined-only "$lib" 2>/dev/null | awk 'NF==3 && $2 ~ /[TDBR]/ {print $3}' | sort -u)
    for s in $syms; do
        [[ $s =~ $prefixes ]] || { echo "style: exported symbol '$s' has no module prefix"; bad=1; }
    done
else
    echo "style: $lib not built; symbol prefixes not checked"; bad=1
fi

[ $bad -eq 0 ] && echo "style: ok"
exit $bad
