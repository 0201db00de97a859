# Debian's cloud kernel with a busybox initramfs boots under tern with --cpus 2 to the line its
# /init prints, and sees 2 CPUs. The guest is then snapshotted, that tern quits, and a new tern
# restored from the snapshot keeps it running: its ticks carry on from where they were, until
# its /init powers it off (ACPI S5), which ends that tern with status 0.
log=/tmp/linux.log
sock=/tmp/linux.sock
. /lib/tern-nested.sh # now, wait_for
fail() {
    echo "FAIL: $*"
    echo "--- guest log tail:"
    tail -15 "$log"
    tern quit --api-socket "$sock" >/dev/null 2>&1
    exit 1
}

: >"$log"
ticks=12
t0=$(now)
tern run --kernel /linux/vmlinuz --initrd /linux/initrd.gz --cpus 2 --mem 160M \
    --api-socket "$sock" --serial "file:$log" \
    --cmdline "console=ttyS0 reboot=k panic=-1 mitigations=off init_on_alloc=0 nokaslr cryptomgr.notests tern.ticks=$ticks" \
    </dev/null >/tmp/linux.err 2>&1 &
wait_for "Linux version" "$log" 120 || fail "no kernel line within 120 s"
echo "first kernel line after $(awk "BEGIN{print $(now) - $t0}") s (host uptime)"
wait_for "tern-linux: /init at" "$log" 300 || fail "no /init line within 300 s"
echo "/init after $(awk "BEGIN{print $(now) - $t0}") s (host uptime)"
grep -m1 "tern-linux: /init at" "$log"
# What the kernel made of tern's platform: ACPI, CPUs, clocks, the UART and the CMOS clock.
grep -aiE "ACPI: (Using|Added|Interpreter)|ACPI.*(Error|Warning)|smp: Brought|Switched to clocksource|ttyS0 at|rtc_cmos|IOAPIC\[0\]|x2apic|tsc: Detected" "$log" | head -20
grep -aqE "ACPI (BIOS )?Error" "$log" && fail "the kernel reports ACPI errors"
grep -q "tern-linux: /init at .* 2 CPUs online" "$log" || fail "the guest does not see 2 CPUs"
wait_for "tern-linux: tick 3" "$log" 60 || fail "no third tick"

tern snapshot --api-socket "$sock" file:/tmp/linux.snap >/dev/null || fail "snapshot failed"
before=$(grep -c "tern-linux: tick" "$log")
tern quit --api-socket "$sock" >/dev/null || fail "quit failed"
wait
echo "snapshot taken after tick $before: $(du -k /tmp/linux.snap | cut -f1) KiB"

: >"$log"
tern run --incoming file:/tmp/linux.snap --api-socket "$sock" --serial "file:$log" \
    </dev/null >/tmp/linux.err 2>&1 &
want=$((before + 3))
wait_for "tern-linux: tick $want[^0-9]" "$log" 60 || fail "the restored guest did not reach tick $want"
first=$(grep -m1 "tern-linux: tick" "$log" | sed 's/.*tick //' | tr -dc 0-9)
echo "restored guest ticks on: first tick $first, reached $want"
[ "$first" -ge "$before" ] && [ "$first" -le $((before + 2)) ] || fail "tick $first does not follow $before"
wait_for "powering off after tick $ticks" "$log" 60 || fail "no power-off after tick $ticks"
wait $!
rc=$?
[ $rc = 0 ] || fail "the restored tern exited $rc after the power-off: $(cat /tmp/linux.err)"
grep -q "guest powered off (ACPI S5)" /tmp/linux.err || fail "no power-off reported: $(cat /tmp/linux.err)"
echo "the guest powered off after tick $ticks; tern exited 0"
rm -f /tmp/linux.snap
