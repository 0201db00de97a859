# Helpers for the nested host's tests, sourced from /lib/tern-nested.sh. Each guest NAME gets
# /tmp/NAME.log (its serial output), /tmp/NAME.err (tern's own output), /tmp/NAME.sock.
now() { cut -d' ' -f1 /proc/uptime; }

# wait_for PATTERN FILE SECONDS: poll FILE until a line matches.
wait_for() {
    i=0
    while [ $i -lt $(($3 * 5)) ]; do
        grep -q "$1" "$2" 2>/dev/null && return 0
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}

fail() {
    echo "FAIL: $*"
    for f in /tmp/*.log /tmp/*.err; do
        [ -s "$f" ] && { echo "--- $f"; tail -6 "$f"; }
    done
    for s in /tmp/*.sock; do [ -S "$s" ] && tern quit --api-socket "$s" >/dev/null 2>&1; done
    exit 1
}

# start NAME [tern run options...]: runs tern in the background on NAME's files.
start() {
    name=$1
    shift
    : >/tmp/$name.log
    rm -f /tmp/$name.sock
    tern run --api-socket /tmp/$name.sock --serial file:/tmp/$name.log "$@" </dev/null \
        >/tmp/$name.err 2>&1 &
    eval "pid_$name=$!"
}

# l1 NAME CMDLINE [options...]: vmx_l1 with --nested in 16 MiB.
l1() {
    name=$1
    cmdline=$2
    shift 2
    start "$name" --nested --mem 16M --kernel /guests/vmx_l1.elf --cmdline "$cmdline" "$@"
}

# hold NAME STAGE: vmx_l1 under --nested that holds 5 s at STAGE (1 before VMXON, 2 in VMX
# operation, 3 with the VMCS loaded), once it says it does.
hold() {
    case $2 in
    1) what="before VMXON" ;;
    2) what="in VMX operation" ;;
    *) what="with the VMCS loaded" ;;
    esac
    l1 $1 "hold=$2 hold_ms=5000 rounds=30"
    wait_for "holding $what" /tmp/$1.log 60 || fail "$1: no hold line"
}

# finish NAME: waits for NAME's tern; fails unless it exited 0 with vmx_l1's PASS line.
finish() {
    eval "p=\$pid_$1"
    wait "$p"
    rc=$?
    [ $rc = 0 ] || fail "$1: tern exited $rc: $(tail -3 /tmp/$1.err)"
    grep -q "vmx_l1: PASS" /tmp/$1.log || fail "$1: no PASS line"
    grep "vmx_l1: PASS" /tmp/$1.log
}

# snapshot NAME: snapshots NAME to /tmp/NAME.snap and quits it.
snapshot() {
    tern snapshot --api-socket /tmp/$1.sock file:/tmp/$1.snap >/dev/null || fail "$1: snapshot failed"
    tern quit --api-socket /tmp/$1.sock >/dev/null || fail "$1: quit failed"
    eval "wait \$pid_$1"
}

# nested_line NAME: the snapshot's nested record as tern inspect shows it ("none" without one).
nested_line() {
    tern inspect /tmp/$1.snap >/tmp/$1.inspect || fail "$1: tern inspect failed"
    grep -q "^  nested:" /tmp/$1.inspect && grep "^  nested:\|^  vmcs12:" /tmp/$1.inspect ||
        echo "none"
}

# migrate SRC DST PORT [tern migrate options...]: migrates SRC to a new tern DST listening on
# PORT (DST's run options in $dst_opts); prints tern migrate's output; returns its status.
migrate() {
    src=$1
    dst=$2
    port=$3
    shift 3
    # shellcheck disable=SC2086
    start "$dst" --incoming tcp:127.0.0.1:$port $dst_opts
    wait_for "waiting for a migration" /tmp/$dst.err 30 || fail "$dst: not listening"
    tern migrate --api-socket /tmp/$src.sock tcp:127.0.0.1:$port "$@" >/tmp/$src.migrate 2>&1
    mrc=$?
    tail -3 /tmp/$src.migrate
    return $mrc
}
