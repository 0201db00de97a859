# Debian's kernel on a virtio disk: its initramfs loads virtio_pci and virtio_blk (from the same
# linux-image package), mounts the ext4 root on /dev/vda and switches to it. The guest writes
# files with their checksums while it is live-migrated to a second tern; on the destination it
# reads them all back through virtio-blk (page cache dropped) and checks every one.
. /lib/tern-nested.sh
# On a failure, what the guest said about its PCI bus, virtio and its root first.
diag() {
    grep -aiE "pci|virtio|vda|ext4|panic|BUG|switch_root|tern-|not syncing|RIP|kvm" /tmp/disk.log /tmp/l1disk.log 2>/dev/null |
        grep -av "^\[ *[0-9.]*\]  *[A-Z0-9]*: [0-9a-f]* " | head -60
    fail "$@"
}
cp /linux/disk.img /tmp/disk.img
start disk --kernel /linux/vmlinuz --initrd /linux/initrd.gz --cpus 1 --mem 160M \
    --disk path=/tmp/disk.img,serial=tern-root \
    --cmdline "console=ttyS0 reboot=k panic=-1 mitigations=off init_on_alloc=0 nokaslr cryptomgr.notests tern.root=vda tern.files=24"
wait_for "tern-disk: root is\|end Kernel panic" /tmp/disk.log 300
grep -q "tern-disk: root is" /tmp/disk.log || diag "the guest did not come up on its virtio disk"
grep -a "tern-disk: root is\|tern-disk: interrupts\|virtio_blk virtio0: \[vda\]" /tmp/disk.log
grep -q "tern-disk: root is /dev/vda / ext4" /tmp/disk.log || fail "the root is not ext4 on /dev/vda"
wait_for "tern-disk: wrote file 3" /tmp/disk.log 120 || fail "no file written"
migrate disk disk2 4501 || fail "the migration failed"
grep -a "tern-disk: wrote file" /tmp/disk.log | tail -1 | sed 's/^/last on the source: /'
wait_for "tern-disk: all 24 files verified\|CHECKSUM MISMATCH" /tmp/disk2.log 300 || fail "no verdict on the destination"
grep -a "tern-disk: wrote file" /tmp/disk2.log | head -1 | sed 's/^/first on the destination: /'
grep -a "tern-disk: all\|MISMATCH" /tmp/disk2.log
grep -q "all 24 files verified" /tmp/disk2.log || fail "a file did not verify on the destination"
wait $pid_disk2
rc=$?
[ $rc = 0 ] || fail "the destination exited $rc: $(tail -3 /tmp/disk2.err)"
echo "ext4 on virtio-blk intact after the move; the destination powered off cleanly"

# A Linux L1 (--nested) keeps its L2's image on its own virtio disk: it loads kvm_intel and runs
# a tern of its own whose guest, the freestanding vblk driver, writes and verifies that image.
cp /linux/disk.img /tmp/l1disk.img
start l1disk --nested --kernel /linux/vmlinuz --initrd /linux/initrd.gz --cpus 1 --mem 256M \
    --disk path=/tmp/l1disk.img \
    --cmdline "console=ttyS0 reboot=k panic=-1 mitigations=off init_on_alloc=0 nokaslr cryptomgr.notests tern.root=vda tern.l2=1"
wait_for "tern-disk: L2 image on vda" /tmp/l1disk.log 400 || diag "the L1 did not finish its L2"
grep -a "tern-disk: kvm_intel\|tern-disk: L2" /tmp/l1disk.log
grep -q "tern-disk: L2 tern exited 0: vblk: verified" /tmp/l1disk.log || fail "the L2 on the L1's disk did not verify"
wait $pid_l1disk
