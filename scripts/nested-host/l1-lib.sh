# Helpers for the tests whose L1 is real Linux (linux-l2.sh, hyperv.sh), sourced after
# /lib/tern-nested.sh. The L1 boots from a copy of the ext4 root (disk-init, tern.l2=memstamp).

# KVM's nested VM-entry consistency checks, traced, so that a failed entry names its check.
t=/sys/kernel/tracing
[ -d $t/events ] || mount -t tracefs nodev $t 2>/dev/null
echo 1 >$t/events/kvm/kvm_nested_vmenter_failed/enable 2>/dev/null
nested_checks() {
    grep -a "nested_vmenter_failed" $t/trace 2>/dev/null | tail -5
}

# l1 NAME "CMDLINE EXTRAS" [tern run options...]: a Linux L1 of 1 vCPU and 192 MiB on
# /tmp/NAME.img whose L2 prints a progress line every 4 passes (a second).
l1() {
    name=$1
    extra=$2
    shift 2
    cp /linux/disk.img /tmp/$name.img
    start "$name" --nested --kernel /linux/vmlinuz --initrd /linux/initrd.gz --cpus 1 --mem 192M \
        --disk path=/tmp/$name.img "$@" \
        --cmdline "console=ttyS0 reboot=k panic=-1 mitigations=off init_on_alloc=0 nokaslr cryptomgr.notests tern.root=vda tern.l2=memstamp tern.every=4 tern.idle=0 $extra"
}

# l1_wait_l2 NAME: until NAME's L2 prints its first progress line (the L1 boots first).
l1_wait_l2() {
    wait_for "tern-l2: memstamp: vCPU 0 pass\|end Kernel panic\|L2 tern exited" /tmp/$1.log 600
    grep -q "tern-l2: memstamp: vCPU 0 pass" /tmp/$1.log ||
        fail "$1: no L2 progress: $(grep -a 'tern-l1\|tern-l2\|panic' /tmp/$1.log | tail -5)"
}

# last_pass NAME: the last pass NAME's L2 reported (0 before any).
last_pass() {
    grep -a "tern-l2: memstamp: vCPU 0 pass" /tmp/$1.log | tail -1 | sed 's/.* pass \([0-9]*\) ok.*/\1/' |
        tr -d '\r' | grep . || echo 0
}

# move SRC DST PORT [tern migrate options...]: live-migrates SRC to DST while its L2 runs, then
# checks the move: DST restored nested state, its L2 reports a pass after the last one on SRC,
# and no stamp was lost. Prints one line.
move() {
    src=$1
    dst=$2
    migrate "$@" >/dev/null || return 1
    eval "wait \$pid_$src"
    before=$(last_pass $src)
    grep -q "nested state restored" /tmp/$dst.err || { echo "$dst: no nested state restored"; return 1; }
    wait_for "tern-l2: memstamp: vCPU 0 pass\|L2 tern exited\|MISMATCH" /tmp/$dst.log 120
    grep -q "MISMATCH" /tmp/$dst.log && { grep -a MISMATCH /tmp/$dst.log; return 1; }
    grep -q "tern-l2: memstamp: vCPU 0 pass" /tmp/$dst.log ||
        { echo "$dst: no L2 pass after the move; $(grep -a 'VM entry failed\|L2 tern exited' /tmp/$dst.log | head -2); L0's failed checks: $(nested_checks)"; sed -n '/VMCS .* for vcpu\|Guest State/,+30p' /tmp/$dst.log | head -40; return 1; }
    after=$(grep -a "tern-l2: memstamp: vCPU 0 pass" /tmp/$dst.log | head -1 | sed 's/.* pass \([0-9]*\) ok.*/\1/' | tr -d '\r')
    [ "$after" -gt "$before" ] || { echo "$dst: pass $after after $before"; return 1; }
    echo "$src -> $dst: $(grep -o 'nested state restored.*' /tmp/$dst.err | head -1); L2 pass $before on the source, $after next on the destination"
}

# dismiss NAME: ends a destination that refused a migration (it waits for another, and serves
# no control socket until one arrives) and reaps it.
dismiss() {
    eval "kill \$pid_$1; wait \$pid_$1"
}

# pingpong NAME SECONDS PORT: moves NAME back and forth between two terns (pp0, pp1) while its L2
# runs, for SECONDS or until the L2 ends, each move checked as move does; ports from PORT on.
# Sets pp_last to the tern that has the L1 in the end; fails on the first bad move.
pingpong() {
    cur=$1
    moves=0
    end=$(($(now | cut -d. -f1) + $2))
    while [ "$(now | cut -d. -f1)" -lt $end ] && ! grep -q "L2 tern exited" /tmp/$cur.log; do
        moves=$((moves + 1))
        next=pp$((moves % 2))
        rm -f /tmp/$next.log /tmp/$next.err
        move $cur $next $(($3 + moves)) >/tmp/move.out || fail "ping-pong move $moves: $(cat /tmp/move.out)"
        [ $((moves % 5)) = 1 ] && echo "move $moves: $(cat /tmp/move.out)"
        cur=$next
    done
    echo "ping-pong: $moves moves in $2 s, each verified (the L2 checked every page on each side)"
    [ $moves -ge 2 ] || fail "fewer than two ping-pong moves"
    pp_last=$cur
}
