#!/usr/bin/env bash
# Snapshot benchmark: write and restore times for a 1 GiB guest whose RAM is all stamped
# (memstamp over 1000 MiB), raw and zlib, each against the disk's own sequential write/read rate
# for a file of the same size measured in the same run (dd, fsync'd / cache dropped where root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

dir=$(mktemp -d /tmp/tern-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
sock=$dir/api.sock
build/tern run --mem 1G --cpus 2 --serial none --api-socket "$sock" \
    --kernel build/tests/guest/memstamp.elf --cmdline "mib=1000 passes=0 every=1000000" &
pid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
sleep 2 # let memstamp stamp every page at least once

ms() { python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["ms"])'; }
raw_ms=$(build/tern snapshot --api-socket "$sock" "file:$dir/raw" | ms)
zlib_ms=$(build/tern snapshot --api-socket "$sock" --compress zlib "file:$dir/zlib" | ms)
build/tern quit --api-socket "$sock" >/dev/null 2>&1 || true
wait "$pid" || true
raw_size=$(stat -c %s "$dir/raw")
zlib_size=$(stat -c %s "$dir/zlib")

restore_ms() {
    sync
    [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches
    local s=$dir/restore.sock
    local t0 t1
    t0=$(date +%s%N)
    build/tern run --incoming "file:$1" --paused --serial none --api-socket "$s" --thp "${2:-on}" &
    local p=$!
    for _ in $(seq 2000); do [ -S "$s" ] && break; sleep 0.005; done
    t1=$(date +%s%N)
    build/tern quit --api-socket "$s" >/dev/null 2>&1
    wait "$p" || true
    echo $(((t1 - t0) / 1000000))
}
raw_restore=$(restore_ms "$dir/raw")
raw_restore_small=$(restore_ms "$dir/raw" off)
zlib_restore=$(restore_ms "$dir/zlib")

# The disk's own rates for a file of the same size.
t0=$(date +%s%N)
dd if=/dev/urandom of="$dir/dd" bs=1M count=$((raw_size >> 20)) conv=fsync status=none 2>/dev/null ||
    dd if=/dev/zero of="$dir/dd" bs=1M count=$((raw_size >> 20)) conv=fsync status=none
t1=$(date +%s%N)
sync
[ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches
t2=$(date +%s%N)
dd if="$dir/dd" of=/dev/null bs=1M status=none
t3=$(date +%s%N)
dd_write=$(((t1 - t0) / 1000000))
dd_read=$(((t3 - t2) / 1000000))
# The same read into fresh anonymous memory, as a restore must land it (small and huge pages).
fresh_read() {
    sync
    [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches
    python3 - "$dir/dd" "$1" <<'PY'
import mmap, os, sys, time
path, huge = sys.argv[1], sys.argv[2] == "huge"
size = os.path.getsize(path)
t0 = time.time()
area = mmap.mmap(-1, size)
if huge:
    area.madvise(mmap.MADV_HUGEPAGE)
view = memoryview(area)
with open(path, "rb", buffering=0) as f:
    got = 0
    while got < size:
        n = f.readinto(view[got:got + (1 << 20)])
        if not n:
            break
        got += n
print(int((time.time() - t0) * 1000))
PY
}
fresh_small=$(fresh_read small)
fresh_huge=$(fresh_read huge)

printf 'guest: 1 GiB RAM, 2 vCPUs, memstamp over 1000 MiB\n'
printf 'snapshot raw : %5d ms write (%d MiB), %5d ms restore (%d ms with --thp off)\n' "$raw_ms" $((raw_size >> 20)) "$raw_restore" "$raw_restore_small"
printf 'snapshot zlib: %5d ms write (%d MiB), %5d ms restore\n' "$zlib_ms" $((zlib_size >> 20)) "$zlib_restore"
printf 'disk (dd, same size): %d ms write+fsync, %d ms read; the read into fresh memory: %d ms (4 KiB pages), %d ms (huge pages)\n' "$dd_write" "$dd_read" "$fresh_small" "$fresh_huge"
python3 -c "print('ratios: raw write/dd write %.2f; raw restore/dd read %.2f (target <= 1.2), --thp off %.2f; raw restore/read into fresh huge pages %.2f, --thp off/read into fresh 4 KiB pages %.2f' % ($raw_ms/$dd_write, $raw_restore/max($dd_read,1), $raw_restore_small/max($dd_read,1), $raw_restore/max($fresh_huge,1), $raw_restore_small/max($fresh_small,1)))"
