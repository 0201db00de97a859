# An older destination: tern 1.1 (tests/compat/releases.txt), whose stream format predates nested
# state. A --nested guest, before VMXON (a) and in VMX operation (b), is refused at the
# handshake with the record named; the source keeps the guest, which finishes with L2's count
# continuous.
. /lib/tern-nested.sh

[ -x /bin/tern-1.1 ] || fail "no /bin/tern-1.1 in the initramfs (tests/compat/build.sh 1.1)"
port=4420
for s in a:1 b:2; do
    n=${s%:*}
    hold $n ${s#*:}
    port=$((port + 1))
    tern-1.1 run --incoming tcp:127.0.0.1:$port --serial none </dev/null >/tmp/${n}old.err 2>&1 &
    old=$!
    wait_for "waiting for a migration" /tmp/${n}old.err 30 || fail "$n: tern 1.1 not listening"
    tern migrate --api-socket /tmp/$n.sock tcp:127.0.0.1:$port >/tmp/$n.migrate 2>&1 &&
        fail "$n: migrated to tern 1.1"
    grep -q "stream format 1.1, which has no record NESTED_STATE" /tmp/$n.migrate ||
        fail "$n: the refusal does not name NESTED_STATE: $(tail -3 /tmp/$n.migrate)"
    head -1 /tmp/$n.migrate
    wait $old
    echo "$n: tern 1.1 exited $? having run nothing: $(tail -1 /tmp/${n}old.err)"
    finish $n
done
