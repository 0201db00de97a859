# Debian's kernel with virtio_net (from the same linux-image package) brings eth0 up on a TAP of a
# bridge in a network namespace this test makes (tun and bridge from the same package). A TCP
# connection from the namespace to a busybox service in the guest carries 8 MiB of random data,
# slowly, while the guest is live-migrated to a second tern on another TAP of the bridge; the
# MD5 the guest computed on the destination must match the sender's.
. /lib/tern-nested.sh
if [ -z "${TERN_NET_INNER:-}" ]; then
    for m in tun llc stp bridge; do insmod /lib/modules/$m.ko || fail "insmod $m.ko"; done
    TERN_NET_INNER=1 exec unshare -n sh "$0"
fi
ip link set lo up
tunctl -t tap0 >/dev/null && tunctl -t tap1 >/dev/null || fail "tunctl"
brctl addbr br0 && brctl addif br0 tap0 && brctl addif br0 tap1 || fail "brctl"
ifconfig br0 10.0.0.1 netmask 255.255.255.0 up && ifconfig tap0 up && ifconfig tap1 up || fail "ifconfig"
start net --kernel /linux/vmlinuz --initrd /linux/initrd.gz --cpus 1 --mem 160M --net tap=tap0 \
    --cmdline "console=ttyS0 reboot=k panic=-1 mitigations=off init_on_alloc=0 nokaslr cryptomgr.notests tern.net=1"
wait_for "tern-net: listening\|end Kernel panic" /tmp/net.log 300
grep -a "tern-net:\|virtio_net" /tmp/net.log
grep -q "tern-net: listening" /tmp/net.log || fail "the guest's eth0 did not come up"
dd if=/dev/urandom of=/tmp/data bs=32k count=256 2>/dev/null
want=$(md5sum /tmp/data | cut -d' ' -f1)
# 8 MiB in 256 pieces, 0.1 s apart: the connection is busy through the whole migration.
(i=0; while [ $i -lt 256 ]; do dd if=/tmp/data bs=32k skip=$i count=1 2>/dev/null; i=$((i + 1)); sleep 0.1; done) |
    nc 10.0.0.2 5000 &
sender=$!
sleep 3
dst_opts="--net tap=tap1" migrate net net2 4601 || fail "the migration failed"
wait $sender
wait_for "tern-net: received md5" /tmp/net2.log 300 || fail "the guest did not finish receiving on the destination"
got=$(sed -n 's/.*tern-net: received md5 \([0-9a-f]*\).*/\1/p' /tmp/net2.log | head -1)
echo "sent md5 $want, the guest received md5 $got (on the destination)"
[ "$got" = "$want" ] || fail "the TCP stream was damaged or cut"
wait $pid_net2
echo "the TCP connection survived the live migration"
