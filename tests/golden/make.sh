#!/usr/bin/env bash
# Writes the golden snapshots that run on these (PVM) machines, and the text `tern inspect`
# printed for each. Run it only to add the snapshots of a new stream format version: the files
# already here are what older terns wrote, and every later tern must restore them and inspect
# them the same way (tests/integration/test_golden.c). The nested ones come from the Bochs
# host: scripts/nested-host/golden.sh.
#
# Usage: tests/golden/make.sh [BUILD [VERSION]]
#   BUILD: this tree's build (its guests, and its tern unless VERSION is given; default build)
#   VERSION: an older release of tests/compat/releases.txt, whose tern writes the snapshots
#            (tests/compat/build.sh builds it); the inspect text is then this tree's, the
#            reference every later tern must keep.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
tern=$build/tern
guests=$build/tests/guest
inspector=$tern
# The format version the snapshots are written in, as tern inspect reports it.
version=$(sed -n 's/^#define MIG_VERSION_MAJOR \([0-9]*\)u$/\1/p' src/migrate/mig_stream.h).$(
    sed -n 's/^#define MIG_VERSION_MINOR \([0-9]*\)u$/\1/p' src/migrate/mig_stream.h)
if [ -n "${2:-}" ]; then
    version=$2
    tests/compat/build.sh "$version"
    tern=build/compat/$version/tern
fi
out=tests/golden
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# snap NAME PATTERN OPTIONS...: runs a guest, waits for PATTERN on its serial output, writes
# out/VERSION-NAME.snap (zlib:9) and its inspect text, and quits the guest.
snap() {
    local name=$1 pattern=$2
    shift 2
    local sock=$work/$name.sock log=$work/$name.log file=$out/$version-$name.snap
    if [ -e "$file" ]; then
        echo "make.sh: $file exists: golden files are never rewritten" >&2
        return 0
    fi
    "$tern" run --api-socket "$sock" --serial "file:$log" "$@" </dev/null &
    local pid=$!
    for _ in $(seq 200); do grep -q "$pattern" "$log" 2>/dev/null && break; sleep 0.05; done
    grep -q "$pattern" "$log" || { echo "make.sh: $name never printed '$pattern'" >&2; kill $pid; exit 1; }
    "$tern" snapshot --api-socket "$sock" --compress zlib:9 "file:$file" >/dev/null
    "$tern" quit --api-socket "$sock" >/dev/null
    wait $pid || true
    "$inspector" inspect "$file" >"$file.inspect"
    "$inspector" inspect --json "$file" >"$file.json"
    echo "make.sh: $file ($(stat -c %s "$file") bytes)"
}

snap memstamp-2cpu "vCPU 1 pass 2 ok" --cpus 2 --mem 8M --kernel "$guests/memstamp.elf" \
    --cmdline "mib=2 passes=12 rate=8"
snap cpl0 "cpl0: round 3 at CPL0" --mem 8M --kernel "$guests/cpl0.elf" \
    --cmdline "rounds=12 ms=100"
