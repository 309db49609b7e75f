#!/usr/bin/env bash
# run_c_tests.sh — runs every C test program in a directory, prints each one's output, and
# totals the `N passed, N failed, N skipped` lines; exits non-zero if any program failed.
set -u
dir=${1:-build/tests}
pass=0; fail=0; skip=0; bad=()
for t in "$dir"/test_*; do
    [ -x "$t" ] || continue
    echo "== $(basename "$t")"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^ok ' || true
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' | tail -1)
    if [ -z "$line" ] || [ $rc -ne 0 ]; then bad+=("$(basename "$t") (rc=$rc)"); fi
    read -r p _ f _ s _ <<<"${line:-0 passed, 1 failed, 0 skipped}"
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
done
echo "== C tests: $pass passed, $fail failed, $skip skipped"
if [ ${#bad[@]} -ne 0 ]; then echo "failing programs: ${bad[*]}"; exit 1; fi
