# The nested golden snapshots (tests/golden, "nested" in tests/golden/expect): each restores in a
# new tern on this host's KVM, and its guest finishes as the line in expect says. (Their inspect
# output is checked on every machine by tests/integration/test_golden.c.)
. /lib/tern-nested.sh

n=0
while IFS="$(printf '\t')" read -r file where line; do
    case "$file" in '#'* | '') continue ;; esac
    [ "$where" = nested ] || continue
    [ -f "/golden/$file" ] || fail "$file: not in the initramfs"
    name=g$n
    start $name --incoming "file:/golden/$file"
    eval "wait \$pid_$name"
    rc=$?
    [ $rc = 0 ] || fail "$file: tern exited $rc: $(tail -3 /tmp/$name.err)"
    grep -q "$line" /tmp/$name.log || fail "$file: no '$line' line"
    echo "$file: $(grep "$line" /tmp/$name.log)"
    n=$((n + 1))
done </golden/expect
[ $n -ge 4 ] || fail "only $n nested golden snapshots restored"
