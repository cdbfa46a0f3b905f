#!/bin/sh
# The whole test suite, as the README's `make test` runs it:
#   1. build everything (warnings are errors here);
#   2. generate the PyTorch golden files (build/golden/);
#   3. run the unit and golden tests (every CPU kernel level this processor has);
#   4. run the same tests under AddressSanitizer + UndefinedBehaviorSanitizer.
# Closes with one line "N passed, N failed" summed over the runs; exits non-zero on failure.
set -u
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
PYTHON=${PYTHON:-/usr/bin/python3}

passed=0
failed=0

fail_build() {
    echo "tests: $1"
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
}

# Runs a test binary, echoing its output, and adds its closing counts to the totals.
run_suite() {
    label=$1
    shift
    echo "== $label"
    out=build/test-$label.log
    "$@" >"$out" 2>&1
    rc=$?
    cat "$out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
    if [ -z "$line" ]; then
        echo "tests: $label ended without a summary (exit $rc)"
        failed=$((failed + 1))
        return
    fi
    p=$(echo "$line" | cut -d' ' -f1)
    f=$(echo "$line" | cut -d' ' -f3)
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "tests: $label exited $rc"
        failed=$((failed + 1))
    fi
}

make -j"$JOBS" EXTRA_CFLAGS=-Werror all || fail_build "build failed"

mkdir -p build/golden
# engine_torch.py runs the other generators' checkpoints through the whole pipeline: it goes last
for gen in $(ls tests/golden/*.py | grep -v '/engine_torch\.py$') tests/golden/engine_torch.py; do
    [ -e "$gen" ] || continue
    echo "== golden: $gen"
    "$PYTHON" "$gen" build/golden || fail_build "golden generator $gen failed"
done

run_suite unit build/parley-tests
# scale-out: two parleyd behind HAProxy (deploy/haproxy.cfg) on loopback
run_suite scaleout tests/integration/scaleout.sh
# the browser client in headless Chromium against a real parleyd
run_suite browser tests/browser/run.sh

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
make -j"$JOBS" BUILD=build/san CFLAGS="-O1 -g -fno-omit-frame-pointer" \
    EXTRA_CFLAGS="$SAN -Werror" LDFLAGS="$SAN" build/san/parley-tests build/san/parley \
    >build/san-build.log 2>&1 || { cat build/san-build.log; fail_build "sanitizer build failed"; }
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 PARLEY_TEST_QUICK=1 \
    run_suite sanitizers build/san/parley-tests

# Every fuzz target over its corpus, under the same sanitizers: one test per target.
make -j"$JOBS" BUILD=build/san CFLAGS="-O1 -g -fno-omit-frame-pointer" \
    EXTRA_CFLAGS="$SAN -Werror" LDFLAGS="$SAN" fuzz-replay >build/san-build.log 2>&1 ||
    { cat build/san-build.log; fail_build "fuzz replay build failed"; }
echo "== fuzz corpus replay"
for target in build/san/fuzz-replay/*_fuzz; do
    name=$(basename "$target" _fuzz)
    if ASAN_OPTIONS=detect_leaks=1 "$target" "tests/fuzz/corpus/$name"; then
        passed=$((passed + 1))
    else
        echo "FAIL fuzz corpus $name"
        failed=$((failed + 1))
    fi
done

# every C file in the tree's style (.clang-format)
if make -s format-check >build/format-check.log 2>&1; then
    passed=$((passed + 1))
else
    cat build/format-check.log
    echo "FAIL format-check"
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
