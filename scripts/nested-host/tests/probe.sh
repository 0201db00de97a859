# Nested state, eVMCS and VMX are offered by the nested host's KVM.
exec /bin/nested_probe
