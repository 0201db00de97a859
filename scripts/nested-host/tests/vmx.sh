# The vmx_l1 guest (a minimal L1 hypervisor) runs its L2 under tern --nested: VMXON, VMCS,
# VMLAUNCH, and L2's count continuous over every VMCALL. A VM without --nested sees no VMX.
now() { cut -d' ' -f1 /proc/uptime; }
t0=$(now)
out=$(tern run --nested --mem 16M --serial stdio --kernel /guests/vmx_l1.elf \
    --cmdline "rounds=40 step=1000000" </dev/null 2>&1)
rc=$?
echo "$out"
echo "ran in $(awk "BEGIN{print $(now) - $t0}") s (host uptime)"
[ $rc = 0 ] || { echo "tern exited $rc"; exit 1; }
echo "$out" | grep -q "vmx_l1: PASS" || { echo "no PASS line"; exit 1; }
out=$(tern run --mem 16M --serial stdio --kernel /guests/vmx_l1.elf </dev/null 2>&1)
rc=$?
echo "$out" | grep -q "vmx_l1: no VMX: CPUID.1:ECX" || { echo "VMX visible without --nested: $out"; exit 1; }
echo "without --nested the guest sees no VMX (exit $rc)"
