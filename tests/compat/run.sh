#!/usr/bin/env bash
# Streams between this tree's tern and every older release (tests/compat/releases.txt), on
# /dev/kvm: a snapshot written by the release restores here; a live migration from the release
# to this tree, and one from this tree back to it, in the release's own format (the handshake
# negotiates it). The guest is memstamp on 2 vCPUs, which checks every page it ever wrote.
# Prints one line per case and a summary "compat: N passed, N failed, N skipped".
# Usage: tests/compat/run.sh [BUILD]   (BUILD: this tree's build folder, default build)
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
build=$(realpath "$build")
new=$build/tern
guest=$build/tests/guest/memstamp.elf
work=$(mktemp -d /tmp/tern-compat.XXXXXX)
trap 'pkill -P $$ 2>/dev/null; rm -rf "$work"' EXIT
versions=$(awk '!/^#/ && NF == 2 {print $1}' tests/compat/releases.txt)
tests/compat/build.sh $versions || exit 1
passed=0 failed=0 port=$((47000 + $$ % 1000))
done_line="memstamp: verified 512 pages x 12 passes on 2 vCPU(s): OK"

ok() { echo "compat: ok   $*"; passed=$((passed + 1)); }
bad() { echo "compat: FAIL $*"; failed=$((failed + 1)); }

# wait_for PATTERN FILE SECONDS
wait_for() {
    for _ in $(seq $(($3 * 20))); do
        grep -q "$1" "$2" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# source TERN NAME: memstamp on TERN with a control socket at $work/NAME.sock.
source_vm() {
    "$1" run --cpus 2 --mem 8M --kernel "$guest" --cmdline "mib=2 passes=12 rate=8" \
        --serial "file:$work/$2.log" --api-socket "$work/$2.sock" </dev/null 2>"$work/$2.err" &
    wait_for "vCPU 1 pass 2 ok" "$work/$2.log" 20
}

# snapshot OLD VERSION: OLD writes a snapshot; this tree inspects and restores it.
snapshot_case() {
    local old=$1 v=$2 name=snap-$2
    source_vm "$old" "$name" || { bad "$v snapshot: the guest did not start on $v"; return; }
    "$old" snapshot --api-socket "$work/$name.sock" "file:$work/$name.snap" >/dev/null &&
        "$old" quit --api-socket "$work/$name.sock" >/dev/null
    wait
    if ! "$new" inspect "$work/$name.snap" | grep -q "format $v"; then
        bad "$v snapshot: this tree's inspect does not read it as format $v"
        return
    fi
    "$new" run --incoming "file:$work/$name.snap" >"$work/$name.out" 2>&1
    if [ $? = 0 ] && grep -q "$done_line" "$work/$name.out"; then
        ok "snapshot written by $v restores here"
    else
        bad "snapshot written by $v: $(tail -2 "$work/$name.out")"
    fi
}

# migrate FROM TO LABEL WANT_FORMAT: a live migration from tern FROM to tern TO.
migrate_case() {
    local from=$1 to=$2 label=$3 want=$4 name=mig-$port
    port=$((port + 1))
    "$to" run --incoming "tcp:127.0.0.1:$port" >"$work/$name.dst" 2>&1 &
    local dst=$!
    wait_for "waiting for a migration" "$work/$name.dst" 10 || { bad "$label: no destination"; return; }
    source_vm "$from" "$name" || { bad "$label: the guest did not start"; return; }
    "$from" migrate --api-socket "$work/$name.sock" "tcp:127.0.0.1:$port" >"$work/$name.mig" 2>&1
    local mrc=$?
    wait "$dst"
    local drc=$?
    wait
    if [ $mrc != 0 ] || [ $drc != 0 ] || ! grep -q "$done_line" "$work/$name.dst"; then
        bad "$label: migrate $mrc, destination $drc: $(tail -2 "$work/$name.mig") $(tail -2 "$work/$name.dst")"
    elif [ -n "$want" ] && ! grep -q "stream       format $want" "$work/$name.mig"; then
        bad "$label: not written as format $want: $(grep stream "$work/$name.mig")"
    else
        ok "$label${want:+ (stream $want)}"
    fi
}

for v in $versions; do
    old=$PWD/build/compat/$v/tern
    snapshot_case "$old" "$v"
    migrate_case "$old" "$new" "live migration $v -> this tree" ""
    migrate_case "$new" "$old" "live migration this tree -> $v" "$v"
done
echo "compat: $passed passed, $failed failed, 0 skipped"
[ "$failed" = 0 ]
