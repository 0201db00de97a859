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

#endif
