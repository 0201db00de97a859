# Scenarios a-d of nested state through a snapshot: vmx_l1 is snapshotted at a stage, that tern
# quits, and a new tern restores the file; the guest must then finish with L2's count
# continuous. Each scenario prints its nested record as tern inspect shows it.
. /lib/tern-nested.sh

# a: --nested, the guest never ran VMXON: no nested record, and a destination that hides
# KVM_CAP_NESTED_STATE takes it.
l1 a "hold=1 hold_ms=4000 rounds=30"
wait_for "holding before VMXON" /tmp/a.log 60 || fail "a: no hold line"
snapshot a
echo "a: nested record: $(nested_line a)"
grep -q NESTED_STATE /tmp/a.inspect && fail "a: the stream has a nested record"
start a2 --incoming file:/tmp/a.snap --hide-cap nested-state
finish a2
grep -q "hold over" /tmp/a2.log || fail "a: the hold did not end in the restored VM"

# b: VMXON done, no current VMCS: a header-only record (128 bytes). A destination without
# nested state refuses it, naming the capability, and stays clean.
l1 b "hold=2 hold_ms=4000 rounds=30"
wait_for "holding in VMX operation" /tmp/b.log 60 || fail "b: no hold line"
snapshot b
echo "b: nested record: $(nested_line b)"
grep -q "^  nested: 128 bytes, flags none, vmxon_pa 0x[0-9a-f]*, vmcs12_pa 0xffffffffffffffff" \
    /tmp/b.inspect || fail "b: not a header-only record"
out=$(tern run --incoming file:/tmp/b.snap --hide-cap nested-state --serial none 2>&1 </dev/null)
rc=$?
echo "b on a destination without nested state: exit $rc: $out"
[ $rc = 2 ] && echo "$out" | grep -q "KVM_CAP_NESTED_STATE" || fail "b: not refused by name"
start b2 --incoming file:/tmp/b.snap
finish b2
grep -q "hold over" /tmp/b2.log || fail "b: the hold did not end in the restored VM"

# c: the VMCS loaded and written, L1 running: the record carries vmcs12 (128 + 4096 bytes).
l1 c "hold=3 hold_ms=4000 rounds=30"
wait_for "holding with the VMCS loaded" /tmp/c.log 60 || fail "c: no hold line"
snapshot c
echo "c: nested record: $(nested_line c)"
grep -q "^  nested: 4224 bytes, flags none" /tmp/c.inspect || fail "c: no vmcs12 in the record"
grep -q "^  vmcs12: revision 0x11e57ed0, clear" /tmp/c.inspect || fail "c: vmcs12 not as loaded"
start c2 --incoming file:/tmp/c.snap
finish c2
grep -q "hold over" /tmp/c2.log || fail "c: the hold did not end in the restored VM"

# d: L2 running: guest mode set, and L2 continues where it was. L1 takes a few microseconds
# of each 100 ms round (and its prints), so a snapshot may land in L1: take another then.
l1 d "rounds=15 step=10000000"
wait_for "vmx_l1: L2 running" /tmp/d.log 60 || fail "d: L2 not running"
for try in 1 2 3 4 5; do
    sleep 0.5
    tern snapshot --api-socket /tmp/d.sock file:/tmp/d.snap >/dev/null || fail "d: snapshot failed"
    nested_line d >/dev/null
    grep -q "^  nested: [0-9]* bytes, flags guest-mode" /tmp/d.inspect && break
    echo "d: snapshot $try landed in L1; again"
done
tern quit --api-socket /tmp/d.sock >/dev/null || fail "d: quit failed"
wait $pid_d
echo "d: nested record: $(nested_line d)"
grep -q "^  nested: [0-9]* bytes, flags guest-mode" /tmp/d.inspect || fail "d: not in guest mode"
grep -q "^  vmcs12: revision 0x11e57ed0, launched" /tmp/d.inspect || fail "d: vmcs12 not launched"
before=$(grep "vmx_l1: round" /tmp/d.log | tail -1)
start d2 --incoming file:/tmp/d.snap
finish d2
echo "d: before the snapshot: $before; restored: $(grep "vmx_l1: round" /tmp/d2.log | head -1)"
rm -f /tmp/*.snap
