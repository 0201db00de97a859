/* nested_msr: the MSRs of nested VMX, as tern exposes and restores them (pure).
 *
 * A --nested vCPU gets IA32_FEATURE_CONTROL locked with VMXON allowed outside SMX, as firmware
 * leaves it, and the VMX capability MSRs KVM reports. Of those, KVM lets userspace restore only
 * some; it derives the others (the non-"true" control MSRs, CR0/CR4_FIXED1, VMFUNC) from them
 * and from CPUID, and refuses to set them.
 */
#ifndef TERN_NESTED_MSR_H
#define TERN_NESTED_MSR_H

#include <stdbool.h>
#include <stdint.h>

#define NESTED_VMX_MSR_FIRST 0x480u /* IA32_VMX_BASIC */
#define NESTED_VMX_MSR_LAST 0x491u  /* IA32_VMX_VMFUNC */
#define NESTED_VMX_MSR_MAX 18u
#define NESTED_MSR_FEATURE_CONTROL 0x3au
#define NESTED_FEATURE_CONTROL_LOCKED (1ull << 0)
#define NESTED_FEATURE_CONTROL_VMXON_OUTSIDE_SMX (1ull << 2)

/* A VMX capability MSR that KVM lets userspace restore. */
bool nested_vmx_msr_restorable(uint32_t index);
/* Any VMX capability MSR. */
bool nested_vmx_msr(uint32_t index);
/* "IA32_VMX_PROCBASED_CTLS2" for 0x48B; "a VMX MSR" outside the range. */
const char *nested_vmx_msr_name(uint32_t index);

/* The bits of restorable VMX capability MSR index that a guest given `guest` relies on and a
 * host whose KVM reports `host` cannot give: KVM_SET_MSRS would refuse the value there. The
 * rules are KVM's (vmx_set_vmx_msr): a control MSR's must-be-1 bits (31:0) on the host must be
 * must-be-1 for the guest and its allowed-1 bits (63:32) a subset of the host's; CR0/CR4
 * FIXED0 bits fixed on the host must be fixed for the guest; EPT/VPID capabilities and the
 * feature bits of BASIC and MISC a subset; BASIC's revision the same and VMCS size no smaller;
 * MISC's preemption timer rate the same and its limits no larger. 0: the host takes it. */
uint64_t nested_vmx_msr_missing(uint32_t index, uint64_t guest, uint64_t host);

/* --hide-cap vmx-controls: the value a smaller VT-x would report, without any secondary
 * processor-based control (IA32_VMX_PROCBASED_CTLS2's allowed-1 half cleared). */
uint64_t nested_vmx_msr_hide_controls(uint32_t index, uint64_t value);

#endif
