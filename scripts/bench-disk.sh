#!/usr/bin/env bash
# Disk benchmark: the freestanding virtio-blk driver (tests/guest/vblk.c, mode=4) against fio on
# the host, on the same image file, with the same block sizes and queue depth, in the same run:
# sequential 1 MiB and random 4 KiB, read and write, both with O_DIRECT (tern's cache=none; fio
# --direct=1 through io_uring). Prints each side's MiB/s and IOPS and the ratio tern/fio, twice:
# tern as it runs by default (guest RAM on transparent huge pages, so a 1 MiB O_DIRECT request
# pins one or two folios), and with --thp off (4 KiB pages, as fio's malloc'd buffers are): the
# second is the like-for-like figure.
# Each side runs twice, alternating (tern, fio, tern --thp off, and again), and keeps its better
# run: the host's storage varies from one run to the next, and the order must favour no side.
# Environment: TERN_BENCH_DIR (where the 1 GiB image goes; default /var/tmp), SECS (per case,
# default 5), QD (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh fio
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

secs=${SECS:-5}
qd=${QD:-16}
dir=$(mktemp -d "${TERN_BENCH_DIR:-/var/tmp}/tern-bench-disk-XXXXXX")
trap 'rm -rf "$dir"' EXIT
img=$dir/disk.img
# A written image (not sparse), so that reads hit the disk and both sides see the same blocks.
dd if=/dev/zero of="$img" bs=1M count=1024 oflag=direct status=none

tern_case() { # op kib thp -> "KiB/s iops"
    build/tern run --mem 256M --serial stdio --thp "$3" --kernel build/tests/guest/vblk.elf \
        --disk "path=$img,cache=none" \
        --cmdline "mode=4 op=$1 kib=$2 qd=$qd mib=1024 secs=$secs" |
        sed -n 's/.*KiB\/s=\([0-9]*\) iops=\([0-9]*\).*/\1 \2/p'
}

fio_case() { # rw bs -> "KiB/s iops"
    fio --name=bench --filename="$img" --rw="$1" --bs="$2" --iodepth="$qd" --ioengine=io_uring \
        --direct=1 --size=1G --time_based --runtime="$secs" --output-format=json 2>/dev/null |
        python3 -c 'import json,sys
j = json.load(sys.stdin)["jobs"][0]
d = j["write"] if "write" in sys.argv[1] else j["read"]
print(int(d["bw"]), int(d["iops"]))' "$1"
}

printf '%-22s %11s %10s %11s %10s %11s %10s %7s %7s\n' case "tern MiB/s" "tern IOPS" \
    "4K MiB/s" "4K IOPS" "fio MiB/s" "fio IOPS" ratio "4K rat."

for c in "0 1024 write 1M sequential-write-1M" "1 1024 read 1M sequential-read-1M" \
    "2 4 randwrite 4k random-write-4K" "3 4 randread 4k random-read-4K"; do
    set -- $c
    t_bw=0 s_bw=0 f_bw=0
    for _ in 1 2; do
        read -r bw iops < <(tern_case "$1" "$2" on)
        [ "$bw" -gt "$t_bw" ] && t_bw=$bw t_iops=$iops
        read -r bw iops < <(fio_case "$3" "$4")
        [ "$bw" -gt "$f_bw" ] && f_bw=$bw f_iops=$iops
        read -r bw iops < <(tern_case "$1" "$2" off)
        [ "$bw" -gt "$s_bw" ] && s_bw=$bw s_iops=$iops
    done
    printf '%-22s %11d %10d %11d %10d %11d %10d %7.2f %7.2f\n' "$5" $((t_bw / 1024)) "$t_iops" \
        $((s_bw / 1024)) "$s_iops" $((f_bw / 1024)) "$f_iops" \
        "$(python3 -c "print($t_bw / $f_bw)")" "$(python3 -c "print($s_bw / $f_bw)")"
done
echo "queue depth $qd, $secs s per case, image $(df -h --output=source "$dir" | tail -1) ($(df --output=fstype "$dir" | tail -1))"
