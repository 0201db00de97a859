#!/usr/bin/env bash
# Builds tern and runs the whole suite with ctest, then once more built with ASan+UBSan.
# Installs missing Debian packages first (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh

jobs=$(nproc)
kvm_usable=no
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then kvm_usable=yes; fi
skip_rule=()
if [ "${CI:-}" = "true" ] && [ "$kvm_usable" = yes ]; then skip_rule=(--no-skips); fi

run_suite() {
    local dir=$1; shift
    echo "== $dir: configure and build ($*)"
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
    rm -rf "$dir/results" && mkdir -p "$dir/results"
    echo "== $dir: ctest"
    local ctest_rc=0
    (cd "$dir" && ctest --output-on-failure) || ctest_rc=$?
    python3 scripts/lib/summarize.py "$dir"/results/*.json "${skip_rule[@]}"
    if [ "$ctest_rc" -ne 0 ]; then
        echo "error: ctest failed in $dir (status $ctest_rc)" >&2
        return 1
    fi
}

start=$(date +%s)
run_suite build -DTERN_SANITIZE=OFF
run_suite build-asan -DTERN_SANITIZE=ON
echo "== all suites passed in $(( $(date +%s) - start )) s (/dev/kvm usable: $kvm_usable)"
