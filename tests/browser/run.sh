#!/bin/sh
# The browser client's tests: its pure logic in node (tests/browser/unit.mjs), then the page in
# real headless Chromium against a real parleyd with the tiny golden models
# (tests/browser/run.mjs). Installs Chromium (Debian's package) when it is missing and this runs
# as root. Needs: make (build/parleyd), the golden models (tests/golden/*.py), node, espeak-ng,
# sox. Closes with one line "N passed, N failed"; exits non-zero on failure.
#   PARLEYD=build/san/parleyd tests/browser/run.sh     another parleyd
#   CHROMIUM=/path/to/chrome tests/browser/run.sh      another browser
set -u
cd "$(dirname "$0")/../.."

passed=0
failed=0

fail_setup() {
    echo "browser: $1"
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
}

# Packages a fresh machine may lack: installed when we may, else a clear failure.
need() {
    cmd=$1
    pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "browser: installing $pkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" \
            >build/browser-apt.log 2>&1 ||
            { apt-get update >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" \
                    >build/browser-apt.log 2>&1; }
    fi
    command -v "$cmd" >/dev/null 2>&1 || fail_setup "$cmd is missing (Debian package $pkg)"
}

mkdir -p build
need node nodejs
need espeak-ng espeak-ng
need sox sox
if [ -z "${CHROMIUM:-}" ]; then
    need chromium chromium
    CHROMIUM=$(command -v chromium)
fi
export CHROMIUM

# Sums the closing "N passed, N failed" of a suite into the totals.
run_part() {
    label=$1
    shift
    out=build/browser-$label.log
    "$@" >"$out" 2>&1
    rc=$?
    cat "$out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
    if [ -z "$line" ]; then
        echo "browser: $label ended without a summary (exit $rc)"
        failed=$((failed + 1))
        return
    fi
    passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
    failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
    if [ "$rc" -ne 0 ] && [ "$(echo "$line" | cut -d' ' -f3)" -eq 0 ]; then
        echo "browser: $label exited $rc"
        failed=$((failed + 1))
    fi
}

run_part unit node tests/browser/unit.mjs
run_part chromium node tests/browser/run.mjs --parleyd "${PARLEYD:-build/parleyd}"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
