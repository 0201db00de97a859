# A real Linux L1 under --nested (Debian's kernel, kvm_intel from the same package) runs its L2,
# memstamp in a tern of its own, and is live-migrated while the L2 runs; on the destination
# the L2 goes on stamping and checking every page of its last pass. Then ping-pong: the L1 is
# moved back and forth between two terns for TERN_PINGPONG_SECONDS of the nested host's clock
# (45 by default: about 3 minutes of wall time, since under Bochs that clock runs about 4 times
# slower while terns migrate), each move checked; the L2 then quits cleanly.
. /lib/tern-nested.sh
. /lib/tern-l1.sh

pingpong=${TERN_PINGPONG_SECONDS:-45}
l1 lx "tern.l2time=$((60 + pingpong))"
l1_wait_l2 lx
grep -a "tern-l1: dmesg: Hypervisor detected\|tern-l1: clocksource" /tmp/lx.log
grep -q "tern-l1: dmesg: Hypervisor detected: KVM" /tmp/lx.log || fail "the L1 does not see KVM"
move lx lx2 4501 || fail "the move while L2 runs failed"
pingpong lx2 "$pingpong" 4520
i=0
while ! grep -q "tern-l2: L2 tern exited" /tmp/$pp_last.log && [ $i -lt 20 ]; do
    sleep 10
    i=$((i + 1))
    echo "waiting for the L2's end: $(grep -a 'tern-l2: memstamp' /tmp/$pp_last.log | tail -1); $(grep -a 'tern-l1: time' /tmp/$pp_last.log | tail -1)"
done
grep -q "tern-l2: L2 tern exited" /tmp/$pp_last.log || fail "the L2 did not end on the destination"
grep -a "^tern-l2: L2 tern exited" /tmp/$pp_last.log
grep -q "^tern-l2: L2 tern exited 0" /tmp/$pp_last.log || fail "the L2 tern failed"
eval "wait \$pid_$pp_last" || fail "the destination exited $?"
rm -f /tmp/lx.img
