# Writes the nested golden snapshots (scenarios b, c, d and e of docs/nested.md, zlib:9) and dumps
# each through port 0xE9 as base64 lines "GOLDEN-DATA NAME LINE", which
# scripts/nested-host/golden.sh turns back into tests/golden/VERSION-nested-NAME.snap. Runs only
# when that script asks for it (tern.golden=1 on the nested host's command line).
. /lib/tern-nested.sh

# take NAME PATTERN: snapshots NAME once its log shows PATTERN (for d and e, again until the
# snapshot lands in L2), and quits it.
take() {
    wait_for "$2" /tmp/$1.log 60 || fail "$1: no '$2' line"
    for try in 1 2 3 4 5; do
        [ "$1" = d ] || [ "$1" = e ] && sleep 0.5
        tern snapshot --api-socket /tmp/$1.sock --compress zlib:9 file:/tmp/$1.snap >/dev/null ||
            fail "$1: snapshot failed"
        [ "$1" = d ] || [ "$1" = e ] || break
        tern inspect /tmp/$1.snap | grep -q "^  nested: [0-9]* bytes, flags guest-mode" && break
        echo "$1: snapshot $try landed in L1; again"
    done
    tern quit --api-socket /tmp/$1.sock >/dev/null || fail "$1: quit failed"
    eval "wait \$pid_$1"
    tern inspect /tmp/$1.snap | grep "^  nested:"
}

l1 b "hold=2 hold_ms=4000 rounds=30"
take b "holding in VMX operation"
l1 c "hold=3 hold_ms=4000 rounds=30"
take c "holding with the VMCS loaded"
l1 d "rounds=15 step=10000000"
take d "vmx_l1: L2 running"
start e --nested --hyperv=vapic,evmcs --mem 16M --kernel /guests/evmcs_l1.elf \
    --cmdline "rounds=15 step=10000000"
take e "vmx_l1: L2 running"

# Straight to port 0xE9, not through /init's line-by-line relay: one writer, no interleaving.
sleep 1
for n in b c d e; do
    base64 /tmp/$n.snap | sed "s/^/GOLDEN-DATA $n /" | e9log
    echo "GOLDEN-SIZE $n $(wc -c </tmp/$n.snap)" | e9log
done
rm -f /tmp/*.snap
