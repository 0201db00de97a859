#!/usr/bin/env bash
# Builds tern and runs the whole suite with ctest, then once more built with ASan+UBSan; builds
# the gcc/clang x Debug/Release matrix, checks the install, runs the compatibility suite against
# the older releases, the fuzzers, and the nested host stage.
# Installs missing Debian packages first (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh man-db

jobs=$(nproc)
kvm_usable=no
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then kvm_usable=yes; fi
skip_rule=()
if [ "${CI:-}" = "true" ] && [ "$kvm_usable" = yes ]; then skip_rule=(--no-skips); fi

run_suite() {
    local dir=$1; shift
    echo "== $dir: configure and build ($*)"
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
    rm -rf "$dir/results" && mkdir -p "$dir/results"
    echo "== $dir: ctest"
    local ctest_rc=0
    (cd "$dir" && ctest --output-on-failure) || ctest_rc=$?
    python3 scripts/lib/summarize.py "$dir"/results/*.json "${skip_rule[@]}" | tee -a "$totals"
    if [ "$ctest_rc" -ne 0 ]; then
        echo "error: ctest failed in $dir (status $ctest_rc)" >&2
        return 1
    fi
}

# The libFuzzer targets, built with clang.
fuzz_configure() {
    cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DTERN_FUZZ=ON -DTERN_WERROR=ON -DTERN_TESTS=OFF \
        -DTERN_GUESTS=OFF >/dev/null
}

# A fresh seed folder for target NAME: build-fuzz/NAME-seeds.
fuzz_seed_dir() {
    rm -rf "build-fuzz/$1-seeds" && mkdir -p "build-fuzz/$1-seeds"
}

# fuzz_run NAME SECONDS MAX_LEN: runs one target from build-fuzz/NAME-seeds; a crash fails.
fuzz_run() {
    local name=$1 seconds=$2 max_len=$3
    echo "== build-fuzz: libFuzzer on $name for ${seconds} s"
    cmake --build build-fuzz -j "$jobs" --target "$name" >/dev/null
    local seeds=build-fuzz/$name-seeds corpus=build-fuzz/$name-corpus log=build-fuzz/$name.log
    mkdir -p "$corpus"
    if build-fuzz/tests/fuzz/"$name" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
        -artifact_prefix="build-fuzz/$name-" "$corpus" "$seeds" >"$log" 2>&1; then
        echo "fuzz: $(grep -o 'Done [0-9]* runs' "$log" | head -1), no crash"
    else
        tail -40 "$log"
        echo "error: $name found a crash (build-fuzz/$name-crash-*)" >&2
        return 1
    fi
}

# Real snapshots of a running guest, raw and zlib, for the stream decoder (none without
# /dev/kvm).
stream_seeds() {
    local dir=build-fuzz/fuzz_stream-seeds
    fuzz_seed_dir fuzz_stream
    [ "$kvm_usable" = yes ] || return 0
    local sock=build-fuzz/seed.sock
    build/tern run --cpus 2 --mem 8M --serial none --api-socket "$sock" \
        --kernel build/tests/guest/memstamp.elf --cmdline "mib=1 passes=0 every=1000000" &
    local pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    build/tern snapshot --api-socket "$sock" --compress zlib "file:$dir/memstamp-zlib" >/dev/null
    build/tern snapshot --api-socket "$sock" "file:$dir/memstamp-raw" >/dev/null
    build/tern quit --api-socket "$sock" >/dev/null 2>&1
    wait "$pid"
}

# Synthetic nested-state seeds: a header-only record (VMXON, no VMCS) and one with a vmcs12.
nested_seeds() {
    local dir=build-fuzz/fuzz_nested-seeds
    fuzz_seed_dir fuzz_nested
    python3 - "$dir" <<'PY'
import struct, sys
d = sys.argv[1]
hdr = lambda flags, size, vmxon, vmcs12: struct.pack('<HHIQQHHIQ', flags, 0, size, vmxon, vmcs12, 0, 0, 0, 0).ljust(128, b'\0')
open(d + '/vmxon', 'wb').write(hdr(0, 128, 0x7000, 2**64 - 1))
open(d + '/vmcs12', 'wb').write(hdr(1, 4224, 0x7000, 0x8000) + struct.pack('<I', 0x11e57ed0).ljust(4096, b'\0'))
PY
}

# A source's hello (with further connections), a destination's answer and a join, as tern
# writes them.
handshake_seeds() {
    local dir=build-fuzz/fuzz_handshake-seeds
    fuzz_seed_dir fuzz_handshake
    local regs='"1.ECX":2149589505,"1.EDX":0,"7.0.EBX":521,"7.0.ECX":0,"7.0.EDX":0,"0xD.1.EAX":0,"0x80000001.ECX":0,"0x80000001.EDX":0'
    printf '{"hello":{"protocol":1,"stream_major":1,"stream_minor":3,"mem":268435456,"cpus":2,"xsave_size":4096,"nested_size":0,"evmcs":false,"cpuid":{%s},"connections":4}}' \
        "$regs" >"$dir/hello"
    printf '{"accept":true,"session":"00112233445566778899aabbccddeeff","caps":{"stream_major":1,"stream_minor":3,"mem_limit":25769803776,"mem_exact":false,"max_cpus":64,"cpus_exact":false,"xsave_size":4096,"nested_max":0,"evmcs":false,"cpuid":{%s},"connections_max":16}}' \
        "$regs" >"$dir/answer"
    printf '{"join":"00112233445566778899aabbccddeeff","lane":1}' >"$dir/join"
    # Both in one object, so that the fuzzer reaches the check of one against the other.
    python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); a.update(json.load(open(sys.argv[2]))); print(json.dumps(a))' \
        "$dir/hello" "$dir/answer" >"$dir/both"
}

# Rings as a driver lays them out (fuzz_virtq's input: 8 bytes of queue setup, then RAM from
# 0x10000 with the descriptor table, the available ring at +0x1000 and the used ring at
# +0x2000): a three-buffer block request, and the same through an indirect table.
virtq_seeds() {
    local dir=build-fuzz/fuzz_virtq-seeds
    fuzz_seed_dir fuzz_virtq
    python3 - "$dir" <<'PY'
import struct, sys
def seed(name, flags, descs, heads, extra=b""):
    ram = bytearray(0x3000)
    for i, d in enumerate(descs):
        ram[16 * i:16 * i + 16] = struct.pack("<QIHH", *d)
    ram[0x1002:0x1004] = struct.pack("<H", len(heads))
    for i, h in enumerate(heads):
        ram[0x1004 + 2 * i:0x1006 + 2 * i] = struct.pack("<H", h)
    ram += extra
    open(f"{sys.argv[1]}/{name}", "wb").write(struct.pack("<HBBHH", 16, flags, 0, 0, 0) + ram)
seed("block", 1, [(0x14000, 16, 1, 1), (0x14100, 4096, 3, 2), (0x15200, 1, 2, 0)], [0])
table = b"".join(struct.pack("<QIHH", *d) for d in [(0x14000, 16, 1, 1), (0x14100, 512, 3, 2), (0x15200, 1, 2, 0)])
seed("indirect", 3, [(0x13000, 48, 4, 0)], [0], table)
PY
}

# Every compiler and build type CI promises, warnings as errors (the suites ran above).
build_matrix() {
    for cc in gcc clang; do
        for type in Debug Release; do
            local dir=build-matrix/$cc-$type
            echo "== $dir: configure and build"
            cmake -S . -B "$dir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE="$type" \
                -DTERN_WERROR=ON >/dev/null
            cmake --build "$dir" -j "$jobs" >"$dir.log" 2>&1 || {
                grep -E "error|warning" "$dir.log" | head -20
                echo "error: the $cc $type build failed ($dir.log)" >&2
                return 1
            }
        done
    done
}

# cmake --install puts tern and its manual page where they belong, and man finds the page.
install_check() {
    echo "== install: cmake --install build"
    local prefix
    prefix=$(mktemp -d)
    cmake --install build --prefix "$prefix" >/dev/null
    "$prefix/bin/tern" --version
    local page
    page=$(MANWIDTH=200 man -M "$prefix/share/man" tern 2>/dev/null)
    grep -q "^TERN(1)" <<<"$page" && grep -q "live-migrating nested guests" <<<"$page" || {
        echo "error: man -M $prefix/share/man tern does not show tern(1)" >&2
        return 1
    }
    echo "install: bin/tern and share/man/man1/tern.1; man tern shows it"
    rm -rf "$prefix"
}

# Streams to and from every older release (tests/compat), against this tree's build.
compat() {
    echo "== compat: the older releases of tests/compat/releases.txt"
    local out=build/compat.out rc=0
    tests/compat/run.sh build 2>&1 | tee "$out" || rc=$?
    grep '^compat: [0-9]* passed' "$out" | sed 's/^compat:/tests:/' >>"$totals" || true
    return "$rc"
}

# Nested tests run inside Bochs-emulated VT-x (scripts/nested-host), one boot for all of them.
nested_host() {
    echo "== nested host: Bochs with kvm_intel nested=1"
    local out=build/nested-host.out
    local rc=0
    scripts/nested-host/run.sh 2>&1 | tee "$out" || rc=$?
    grep '^nested: ' "$out" | sed 's/^nested:/tests:/' >>"$totals" || true
    return "$rc"
}

totals=$(mktemp)
trap 'rm -f "$totals"' EXIT
start=$(date +%s)
run_suite build -DTERN_SANITIZE=OFF
run_suite build-asan -DTERN_SANITIZE=ON
build_matrix
install_check
if [ "$kvm_usable" = yes ]; then
    compat
else
    echo "skipped: compat stage (no usable /dev/kvm)"
fi
fuzz_configure
stream_seeds
fuzz_run fuzz_stream "${TERN_FUZZ_SECONDS:-60}" 2000000
fuzz_seed_dir fuzz_bzimage && cp build/tests/guest/bzcheck.bzImage build-fuzz/fuzz_bzimage-seeds/
fuzz_run fuzz_bzimage "${TERN_FUZZ_SMALL_SECONDS:-20}" 65536
nested_seeds
fuzz_run fuzz_nested "${TERN_FUZZ_SMALL_SECONDS:-20}" 65536
handshake_seeds
fuzz_run fuzz_handshake "${TERN_FUZZ_SMALL_SECONDS:-20}" 65536
virtq_seeds
fuzz_run fuzz_virtq "${TERN_FUZZ_SMALL_SECONDS:-20}" 65544
if [ "${TERN_SKIP_NESTED:-0}" = 1 ]; then
    echo "skipped: nested host stage (TERN_SKIP_NESTED=1)"
else
    nested_host
fi
awk '/^tests: /{p+=$2; f+=$4; s+=$6} END {printf "total: %d passed, %d failed, %d skipped\n", p, f, s}' "$totals"
echo "== all suites passed in $(( $(date +%s) - start )) s (/dev/kvm usable: $kvm_usable)"
