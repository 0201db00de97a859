#!/usr/bin/env bash
# tern's main job, live: builds tern, starts memstamp (256 MiB, 2 vCPUs, stamping 128 MiB at
# 64 MiB/s and checking every stamp of the previous pass) in one tern, and migrates it over
# loopback, TLS 1.3 with a pre-shared key made on the spot, over 4 connections, to a second tern
# while it writes. The guest's own lines after the move come from the destination: every stamp
# written on the source must be found there. Then a guest with a disk: vblk, the freestanding
# virtio-blk driver, writes and reads back tagged sectors on a 64 MiB image through the move.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

work=$(mktemp -d /tmp/tern-demo.XXXXXX)
cleanup() {
    kill "${src_pid:-}" "${dst_pid:-}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The key both sides share (psktool, from gnutls-bin: docs/migration.md shows X.509 too).
psktool -u demo -p "$work/demo.psk" >/dev/null

# destination NAME: a tern that waits for one migration on a free loopback port, then runs the
# VM; its output in $work/NAME.out and .err, its pid in dst_pid, its port in port.
destination() {
    build/tern run --incoming tcp:127.0.0.1:0 --tls-psk "$work/demo.psk" \
        >"$work/$1.out" 2>"$work/$1.err" &
    dst_pid=$!
    for _ in $(seq 100); do
        grep -q "waiting for a migration" "$work/$1.err" && break
        sleep 0.05
    done
    port=$(grep -o '127.0.0.1:[0-9]*' "$work/$1.err" | cut -d: -f2)
}

destination dst

# Source: the guest, with its control socket.
build/tern run --mem 256M --cpus 2 --kernel build/tests/guest/memstamp.elf \
    --cmdline 'mib=128 passes=6 rate=64' --api-socket "$work/src.sock" \
    >"$work/src.out" 2>"$work/src.err" &
src_pid=$!
until grep -q "pass 1 ok" "$work/src.out"; do sleep 0.05; done

echo "== source: tern run --mem 256M --cpus 2 --kernel memstamp.elf --cmdline 'mib=128 passes=6 rate=64'"
cat "$work/src.out"
echo
echo "== tern migrate --api-socket SRC tcp:127.0.0.1:$port --tls-psk KEY --connections 4   (while the guest writes)"
build/tern migrate --api-socket "$work/src.sock" "tcp:127.0.0.1:$port" \
    --tls-psk "$work/demo.psk" --connections 4
wait "$src_pid" && src_status=0 || src_status=$?
echo "source tern (exit $src_status): $(tail -n 1 "$work/src.err")"
echo
wait "$dst_pid" && status=0 || status=$?
echo "== destination: the guest's own lines after the move"
grep -v "^memstamp: 128 MiB" "$work/dst.out" || true
grep "migration received" "$work/dst.err"
echo "demo: the guest exited with status $status on the destination"
[ "$status" = 0 ] || exit "$status"

# The same with a disk: the image is shared storage, its lock passes at the handover.
echo
truncate -s 64M "$work/disk.img"
destination dst2
build/tern run --mem 256M --kernel build/tests/guest/vblk.elf \
    --disk "path=$work/disk.img,serial=demo-disk" --cmdline 'mib=48 passes=6 qd=8 msix=1' \
    --api-socket "$work/src2.sock" >"$work/src2.out" 2>"$work/src2.err" &
src_pid=$!
until grep -q "pass 1 ok" "$work/src2.out"; do sleep 0.05; done
echo "== source: tern run --kernel vblk.elf --disk path=disk.img,serial=demo-disk --cmdline 'mib=48 passes=6 qd=8 msix=1'"
cat "$work/src2.out"
echo
echo "== tern migrate --api-socket SRC tcp:127.0.0.1:$port --tls-psk KEY   (while the guest does I/O)"
build/tern migrate --api-socket "$work/src2.sock" "tcp:127.0.0.1:$port" --tls-psk "$work/demo.psk"
wait "$src_pid" || true
wait "$dst_pid" && status=0 || status=$?
echo "== destination: the disk guest's own lines after the move"
cat "$work/dst2.out"
echo "demo: the disk guest exited with status $status on the destination"
exit "$status"
