/* nested_kvm: what tern asks of KVM for nested VMX: the host's limits, one vCPU's nested state
 * (get and set), and the VMX capability MSRs a --nested vCPU is given.
 *
 * The blobs are those nested_state.h describes. Getting sizes the buffer by the host's
 * KVM_CAP_NESTED_STATE; setting checks the blob with nested_validate first, so a bad record is
 * refused with its field named before KVM sees it, and a KVM refusal names the vCPU.
 */
#ifndef TERN_NESTED_KVM_H
#define TERN_NESTED_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#define NESTED_VMX_MSR_FIRST 0x480u /* IA32_VMX_BASIC */
#define NESTED_VMX_MSR_LAST 0x491u  /* IA32_VMX_VMFUNC */
#define NESTED_MSR_FEATURE_CONTROL 0x3au
#define NESTED_FEATURE_CONTROL_LOCKED (1ull << 0)
#define NESTED_FEATURE_CONTROL_VMXON_OUTSIDE_SMX (1ull << 2)
#define NESTED_CPUID_1_ECX_VMX (1u << 5)
#define NESTED_VMX_MSR_MAX 18u

/* KVM_CHECK_EXTENSION(KVM_CAP_NESTED_STATE): the largest blob this host gives and takes, 0 when
 * it cannot save or restore nested state. */
uint32_t nested_kvm_max_size(int kvm_fd);

/* KVM_GET_NESTED_STATE into buf (max bytes, the host's maximum); *len receives the blob's size. */
int nested_kvm_get(int vcpu_fd, unsigned index, uint8_t *buf, uint32_t max, uint32_t *len);
/* Validates blob against the host's maximum, then KVM_SET_NESTED_STATE. */
int nested_kvm_set(int vcpu_fd, unsigned index, const uint8_t *blob, uint32_t len,
                   uint32_t host_max);

/* A VMX capability MSR that KVM lets userspace restore. The others (the non-"true" control
 * MSRs, CR0/CR4_FIXED1, VMFUNC) KVM derives from these and from CPUID, and refuses to set. */
bool nested_vmx_msr_restorable(uint32_t index);
bool nested_vmx_msr(uint32_t index);

/* The restorable VMX capability MSRs as the host reports them (KVM_GET_MSR_FEATURE_INDEX_LIST,
 * then KVM_GET_MSRS on the /dev/kvm fd). out holds NESTED_VMX_MSR_MAX entries. */
int nested_kvm_vmx_msrs(int kvm_fd, struct kvm_msr_entry *out, unsigned *n);

#endif
