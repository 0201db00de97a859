#!/usr/bin/env bash
# Boots a nested-capable host — Debian's cloud kernel with kvm_intel nested=1 on Bochs' emulated
# VT-x — and runs tern's nested tests inside it (scripts/nested-host/tests). Prints their output
# live, the stage timings and one result line; exits non-zero when a test fails or no result
# line arrives in time.
#
# Usage: scripts/nested-host/run.sh [FILTER]   (run only tests whose name contains FILTER)
# Environment: TERN_NESTED_TIMEOUT (seconds, default 2400), TERN_NESTED_FAIL=1 (add a test that
# fails on purpose), TERN_NESTED_GOLDEN=1 (add golden-make, for scripts/nested-host/golden.sh),
# TERN_PINGPONG_SECONDS (how long the ping-pong tests move their L1 back and forth, in the nested
# host's seconds; default 45, about 3 minutes of wall time), TERN_EVMCS_PINGPONG=1 (ping-pong
# the eVMCS L1 of tests/hyperv.sh too).
# Everything built is cached under build/nested-host/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
filter=${1:-}
limit=${TERN_NESTED_TIMEOUT:-2400}
fail_on_purpose=${TERN_NESTED_FAIL:-0}
golden=${TERN_NESTED_GOLDEN:-0}
pingpong=${TERN_PINGPONG_SECONDS:-45}
evmcs_pingpong=${TERN_EVMCS_PINGPONG:-0}
work=$root/build/nested-host
mkdir -p "$work"
t_start=$(date +%s.%N)

scripts/lib/deps.sh bochs vgabios isolinux syslinux-common xorriso busybox-static cpio binutils e2fsprogs
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target tern guests nested_probe e9log >/dev/null
# The last release whose stream format predates nested state, for the test nested-compat.
tests/compat/build.sh 1.1

# --- the kernel: the newest cloud kernel apt offers, extracted once --------------------------
pkg=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-cloud-amd64-unsigned$' |
    awk '{print $1}' | sort -V | tail -1)
if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-cloud-amd64-unsigned$' |
        awk '{print $1}' | sort -V | tail -1)
fi
[ -n "$pkg" ] || { echo "nested-host: apt offers no *-cloud-amd64-unsigned kernel" >&2; exit 1; }
kdir=$work/kernel/$pkg
if [ ! -f "$kdir/.done-net" ]; then
    echo "nested-host: fetching $pkg"
    rm -rf "$kdir" && mkdir -p "$kdir/deb"
    (cd "$kdir/deb" && apt-get download "$pkg" >/dev/null 2>&1 && dpkg-deb -x ./*.deb x)
    cp "$kdir"/deb/x/boot/vmlinuz-* "$kdir/vmlinuz"
    for m in irqbypass kvm kvm-intel virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev \
        virtio_pci virtio_blk failover net_failover virtio_net tun llc stp bridge; do
        src=$(find "$kdir/deb/x/lib/modules" -name "$m.ko*" | head -1)
        case "$src" in *.xz) xz -dc "$src" >"$kdir/$m.ko" ;; *.zst) zstd -qdc "$src" >"$kdir/$m.ko" ;; *) cp "$src" "$kdir/$m.ko" ;; esac
        # Signatures, BTF and debug info only slow loading down (10 s -> 5 s in Bochs).
        objcopy --remove-section=.BTF --remove-section=.note.module.sig "$kdir/$m.ko" 2>/dev/null || true
        strip -g "$kdir/$m.ko"
    done
    rm -rf "$kdir/deb"
    touch "$kdir/.done-net"
fi

# --- the initramfs: busybox, modules, tern and its libraries, guests, tests -------------------
stage=$work/initramfs
rm -rf "$stage" && mkdir -p "$stage"/{bin,lib/modules,guests,golden,tests,proc,sys,dev,tmp}
cp /bin/busybox "$stage/bin/busybox"
cp scripts/nested-host/init "$stage/init" && chmod +x "$stage/init"
cp "$kdir"/irqbypass.ko "$kdir"/kvm.ko "$kdir"/kvm-intel.ko "$kdir"/tun.ko "$kdir"/llc.ko \
    "$kdir"/stp.ko "$kdir"/bridge.ko "$stage/lib/modules/"
cp build/tern build/tests/nested/nested_probe build/tests/nested/e9log "$stage/bin/"
cp build/compat/1.1/tern "$stage/bin/tern-1.1"
cp build/tests/guest/*.elf "$stage/guests/"
cp scripts/nested-host/tests/*.sh "$stage/tests/"
cp tests/golden/expect tests/golden/*-nested-*.snap "$stage/golden/"
cp scripts/nested-host/lib.sh "$stage/lib/tern-nested.sh"
cp scripts/nested-host/l1-lib.sh "$stage/lib/tern-l1.sh"
# The Linux guest for tests/linux.sh: the same kernel, and busybox with its own /init.
guest=$work/linux-guest
rm -rf "$guest" && mkdir -p "$guest"/{bin,proc,sys,dev,lib/modules} "$stage/linux"
cp /bin/busybox "$guest/bin/busybox"
cp scripts/nested-host/linux-init "$guest/init" && chmod +x "$guest/init"
cp "$kdir"/virtio*.ko "$kdir"/failover.ko "$kdir"/net_failover.ko "$guest/lib/modules/"
# Its virtio disk (tests/disk.sh): an ext4 root with busybox and its own /init.
diskroot=$work/disk-root
rm -rf "$diskroot" && mkdir -p "$diskroot"/{bin,proc,sys,dev,tmp,data,guests,lib/modules}
cp /bin/busybox "$diskroot/bin/busybox"
# For an L1 on this root (tests/disk.sh, tern.l2=1): KVM, tern and the vblk guest.
cp "$kdir"/irqbypass.ko "$kdir"/kvm.ko "$kdir"/kvm-intel.ko "$diskroot/lib/modules/"
cp build/tern "$diskroot/bin/tern"
cp build/tests/guest/vblk.elf build/tests/guest/memstamp.elf "$diskroot/guests/"
for lib in $(ldd build/tern | grep -o '/[^ ]*'); do
    mkdir -p "$diskroot$(dirname "$lib")" && cp -L "$lib" "$diskroot$lib"
done
cp scripts/nested-host/disk-init "$diskroot/init" && chmod +x "$diskroot/init"
rm -f "$stage/linux/disk.img"
mke2fs -q -t ext4 -d "$diskroot" "$stage/linux/disk.img" 64M
(cd "$guest" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$stage/linux/initrd.gz"
cp "$kdir/vmlinuz" "$stage/linux/vmlinuz"
for lib in $(ldd build/tern | grep -o '/[^ ]*'); do
    mkdir -p "$stage$(dirname "$lib")" && cp -L "$lib" "$stage$lib"
done
initrd=$work/initrd.gz
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$initrd.new"
cmp -s "$initrd.new" "$initrd" 2>/dev/null && rm "$initrd.new" || mv "$initrd.new" "$initrd"

# --- the ISO: isolinux, a kernel command line that keeps the boot short -----------------------
iso=$work/iso
mkdir -p "$iso/isolinux" "$iso/boot"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
cp "$kdir/vmlinuz" "$iso/boot/vmlinuz"
cp "$initrd" "$iso/boot/initrd.gz"
cat >"$iso/isolinux/isolinux.cfg" <<CFG
DEFAULT tern
PROMPT 0
TIMEOUT 0
LABEL tern
  KERNEL /boot/vmlinuz
  APPEND initrd=/boot/initrd.gz console=ttyS0 quiet mitigations=off init_on_alloc=0 nokaslr cryptomgr.notests tern.filter=${filter} tern.fail=${fail_on_purpose} tern.golden=${golden} tern.pingpong=${pingpong} tern.evmcs_pingpong=${evmcs_pingpong}
CFG
xorriso -as mkisofs -quiet -o "$work/nested.iso.new" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$iso" 2>/dev/null
mv "$work/nested.iso.new" "$work/nested.iso"

# --- Bochs, headless and unattended ---------------------------------------------------------
cat >"$work/bochsrc" <<RC
megs: 1536
cpu: model=corei7_haswell_4770, count=1, ips=100000000, ignore_bad_msrs=1
clock: sync=none
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
ata0-master: type=cdrom, path="$work/nested.iso", status=inserted
boot: cdrom
display_library: rfb, options="timeout=0"
com1: enabled=1, mode=file, dev="$work/serial.log"
port_e9_hack: enabled=1
# No sound device here: Bochs' ALSA mixer thread aborts without one.
sound: driver=dummy
speaker: enabled=0
log: "$work/bochs.log"
RC
printf 'continue\nquit\n' >"$work/bochs.cmds"
t_prep=$(date +%s.%N)
echo "nested-host: booting $pkg under Bochs (limit ${limit} s, filter '${filter}')"

result=$work/result.line
rm -f "$result"
: >"$work/e9.log"
set +e
(cd "$work" && timeout "$limit" bochs-bin -q -f bochsrc -rc bochs.cmds </dev/null 2>"$work/bochs.err") |
    while IFS= read -r line; do
        line=${line//$'\r'/}
        now=$(date +%s.%N)
        printf '[%6.1f s] %s\n' "$(echo "$now - $t_prep" | bc)" "$line" | tee -a "$work/e9.log"
        case "$line" in TERN-NESTED-RESULT*) echo "$line" >"$result" ;; esac
    done
bochs_status=${PIPESTATUS[0]}
set -e
t_end=$(date +%s.%N)

stamp() { grep -m1 "$1" "$work/e9.log" | sed -n 's/^\[ *\([0-9.]*\) s\].*/\1/p'; }
printf 'nested-host: timings: preparation %.0f s, /init at %s s, kvm_intel loaded at %s s, tests %s..%s s, total %.0f s\n' \
    "$(echo "$t_prep - $t_start" | bc)" "$(stamp '/init at')" "$(stamp 'kvm_intel loaded')" \
    "$(stamp 'tests begin')" "$(stamp 'tests end')" "$(echo "$t_end - $t_start" | bc)"
if [ ! -s "$result" ]; then
    [ "$bochs_status" = 124 ] && echo "nested-host: no result within ${limit} s" >&2
    echo "nested-host: no result line; serial log tail:" >&2
    tail -20 "$work/serial.log" >&2 || true
    exit 1
fi
line=$(cat "$result")
echo "$line"
run=$(echo "$line" | sed -n 's/.*run=\([0-9]*\).*/\1/p')
passed=$(echo "$line" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
failed=$(echo "$line" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
skipped=$(echo "$line" | sed -n 's/.*skipped=\([0-9]*\).*/\1/p')
echo "nested: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] && [ "$run" -gt 0 ]
