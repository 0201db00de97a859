# Scenarios a-d and g of nested state through live migration between two tern processes, and
# the refusals: a destination that lacks what the stream needs refuses at the handshake, or at
# switchover when the guest entered VMX operation during pre-copy; the source keeps running
# and the guest still finishes with L2's count continuous.
. /lib/tern-nested.sh

# a: never ran VMXON: a destination without nested state takes it.
hold a 1
dst_opts="--hide-cap nested-state" migrate a a2 4401 || fail "a: migration failed"
finish a2
grep -q "hold over" /tmp/a2.log || fail "a: the hold did not end on the destination"

# b, c: in VMX operation, without and with a current VMCS.
for s in b:2 c:3; do
    n=${s%:*}
    stage=${s#*:}
    hold $n $stage
    dst_opts="" migrate $n ${n}2 $((4400 + stage)) || fail "$n: migration failed"
    finish ${n}2
    grep -q "hold over" /tmp/${n}2.log || fail "$n: the hold did not end on the destination"
done

# d: L2 running.
l1 d "rounds=15 step=10000000"
wait_for "vmx_l1: L2 running" /tmp/d.log 60 || fail "d: L2 not running"
sleep 0.5
dst_opts="" migrate d d2 4404 || fail "d: migration failed"
grep "nested state restored" /tmp/d2.err || fail "d: the destination restored no nested state"
grep -q "1 of them running L2" /tmp/d2.err || echo "d: the switchover landed in L1 this time"
finish d2
echo "d: last on the source: $(grep "vmx_l1: round" /tmp/d.log | tail -1); first on the destination: $(grep "vmx_l1: round" /tmp/d2.log | head -1)"

# g, at the handshake: L2 runs, the destination hides KVM_CAP_NESTED_STATE.
l1 g "rounds=12 step=10000000"
wait_for "vmx_l1: L2 running" /tmp/g.log 60 || fail "g: L2 not running"
dst_opts="--hide-cap nested-state" migrate g g2 4405 && fail "g: the migration went through"
grep -q "KVM_CAP_NESTED_STATE" /tmp/g.migrate || fail "g: the refusal does not name the capability"
finish g
echo "g (handshake): the source kept the guest"

# g, at switchover: VMXON during pre-copy (8 MiB at 1 MiB/s), to the same destination.
l1 h "fill=8 hold=1 hold_ms=2000 rounds=20 step=10000000"
wait_for "holding before VMXON" /tmp/h.log 60 || fail "h: no hold line"
dst_opts="--hide-cap nested-state" migrate h h2 4406 --bandwidth 1M && fail "h: the migration went through"
grep -q "at switchover.*KVM_CAP_NESTED_STATE" /tmp/h.migrate || fail "h: not refused at switchover"
finish h
echo "g (switchover): the source kept the guest"
