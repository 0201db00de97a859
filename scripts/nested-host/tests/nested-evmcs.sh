# Scenarios e and f: L2 entered through an active enlightened VMCS (evmcs_l1, --hyperv=vapic,evmcs),
# and eVMCS enabled but never active (evmcs_l1 evmcs=1, plain VMCS entries). Each goes through a
# snapshot and a live migration; e needs a destination with eVMCS (one that hides it refuses,
# by name, and the source keeps the guest), f is taken by one without.
. /lib/tern-nested.sh

ev() {
    name=$1
    cmdline=$2
    shift 2
    start "$name" --nested --hyperv=vapic,evmcs --mem 16M --kernel /guests/evmcs_l1.elf \
        --cmdline "$cmdline" "$@"
}

# snapshot_in_l2 NAME: snapshots NAME while L2 runs (again if one lands in L1), then quits it.
snapshot_in_l2() {
    for try in 1 2 3 4 5; do
        sleep 0.5
        tern snapshot --api-socket /tmp/$1.sock file:/tmp/$1.snap >/dev/null || fail "$1: snapshot failed"
        nested_line $1 >/dev/null
        grep -q "^  nested: [0-9]* bytes, flags guest-mode" /tmp/$1.inspect && break
        echo "$1: snapshot $try landed in L1; again"
    done
    tern quit --api-socket /tmp/$1.sock >/dev/null || fail "$1: quit failed"
    eval "wait \$pid_$1"
}

# e by snapshot.
ev e "rounds=15 step=10000000"
wait_for "vmx_l1: L2 running" /tmp/e.log 60 || fail "e: L2 not running"
grep "hypervisor\|eVMCS at" /tmp/e.log
snapshot_in_l2 e
echo "e: nested record: $(nested_line e)"
grep "eVMCS enabled" /tmp/e.inspect || fail "e: no EVMCS record"
grep -q "^  nested: 4224 bytes, flags guest-mode,evmcs-active, vmxon_pa 0x[0-9a-f]*, vmcs12_pa 0xffffffffffffffff" \
    /tmp/e.inspect || fail "e: the record does not show an active eVMCS"
out=$(tern run --incoming file:/tmp/e.snap --hide-cap evmcs --serial none 2>&1 </dev/null)
rc=$?
echo "e on a destination without eVMCS: exit $rc: $out"
[ $rc = 2 ] && echo "$out" | grep -q "KVM_CAP_HYPERV_ENLIGHTENED_VMCS" || fail "e: not refused by name"
start e2 --incoming file:/tmp/e.snap
finish e2

# e by live migration; first to a destination that hides eVMCS (refused at the handshake).
ev m "rounds=15 step=10000000"
wait_for "vmx_l1: L2 running" /tmp/m.log 60 || fail "e/migrate: L2 not running"
sleep 0.5
dst_opts="--hide-cap evmcs" migrate m m0 4411 && fail "e: migrated to a destination without eVMCS"
grep -q "KVM_CAP_HYPERV_ENLIGHTENED_VMCS" /tmp/m.migrate || fail "e: the refusal does not name eVMCS"
dst_opts="" migrate m m2 4412 || fail "e: migration failed"
grep "nested state restored" /tmp/m2.err || fail "e: the destination restored no nested state"
finish m2

# f: eVMCS enabled, never active: no eVMCS requirement.
ev f "evmcs=1 rounds=15 step=10000000"
wait_for "vmx_l1: L2 running" /tmp/f.log 60 || fail "f: L2 not running"
grep "VP assist page" /tmp/f.log
snapshot_in_l2 f
echo "f: nested record: $(nested_line f)"
grep "eVMCS enabled" /tmp/f.inspect || fail "f: no EVMCS record"
grep -q "evmcs-active" /tmp/f.inspect && fail "f: an eVMCS shows as active"
start f2 --incoming file:/tmp/f.snap --hide-cap evmcs
finish f2
ev n "evmcs=1 rounds=15 step=10000000"
wait_for "vmx_l1: L2 running" /tmp/n.log 60 || fail "f/migrate: L2 not running"
sleep 0.5
dst_opts="--hide-cap evmcs" migrate n n2 4413 || fail "f: refused by a destination without eVMCS"
finish n2
rm -f /tmp/*.snap
