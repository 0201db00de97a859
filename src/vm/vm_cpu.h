/* vm_cpu: the CPU a freshly booted VM's vCPUs are given, from what the host's KVM supports:
 * the CPUID table (VMX only with --nested; the Hyper-V leaves with --hyperv), eVMCS enabled
 * with --hyperv=evmcs, and for --nested the VMX capability MSRs as KVM reports them and
 * IA32_FEATURE_CONTROL locked with VMXON allowed outside SMX, as firmware leaves it.
 *
 * A host that cannot give what was asked is refused in one line that names the option and the
 * KVM capability. A restored VM gets none of this: its stream carries the CPU.
 */
#ifndef TERN_VM_CPU_H
#define TERN_VM_CPU_H

#include "vm/vm.h"

int vm_cpu_setup(struct vm *vm, const struct vm_config *cfg);

#endif
