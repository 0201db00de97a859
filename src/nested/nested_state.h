/* nested_state: a vCPU's VMX nested state, the blob KVM_GET_NESTED_STATE returns (a 128-byte
 * struct kvm_nested_state header, then vmcs12 and, while L2 runs with a shadow VMCS, the shadow
 * vmcs12), as tern carries it: whole, header fields included.
 *
 * Pure. It decides when a vCPU needs a nested record at all (format VMX, and VMXON done or
 * VMXON held across SMM), what it requires of a destination (KVM_STATE_NESTED_EVMCS means an
 * enlightened VMCS is *active*, since KVM commit 323d73a8ec; eVMCS merely enabled requires
 * nothing), checks a blob against the rules KVM_SET_NESTED_STATE applies, so that a bad record
 * is refused with its field named before KVM sees it, and decodes the header and a few vmcs12
 * fields (KVM's frozen layout) for tern inspect.
 */
#ifndef TERN_NESTED_STATE_H
#define TERN_NESTED_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NESTED_HEADER_SIZE 128u
#define NESTED_VMCS12_SIZE 4096u
#define NESTED_MAX_SIZE (NESTED_HEADER_SIZE + 2 * NESTED_VMCS12_SIZE)
#define NESTED_VMCS12_REVISION 0x11e57ed0u
#define NESTED_INVALID_GPA UINT64_MAX

struct nested_header {
    uint16_t flags;  /* KVM_STATE_NESTED_* */
    uint16_t format; /* KVM_STATE_NESTED_FORMAT_VMX */
    uint32_t size;   /* header plus data */
    uint64_t vmxon_pa;
    uint64_t vmcs12_pa;
    uint16_t smm_flags; /* KVM_STATE_NESTED_SMM_* */
    uint32_t vmx_flags; /* KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE */
    uint64_t preemption_timer_deadline;
};

/* Decodes the header; the blob must hold at least NESTED_HEADER_SIZE bytes. */
int nested_parse_header(const uint8_t *blob, size_t len, struct nested_header *out);

/* A vCPU needs a nested record only in VMX operation (or holding it across SMM). Without one,
 * the stream stays readable by destinations that cannot restore nested state. */
bool nested_needed(const struct nested_header *h);
/* The destination must enable eVMCS before restoring this record. */
bool nested_needs_evmcs(const struct nested_header *h);

/* Every rule KVM_SET_NESTED_STATE checks that does not depend on the vCPU: size against len and
 * max_size and against the flags, known flags only, format, page alignment of vmxon_pa and
 * vmcs12_pa, vmcs12_pa != vmxon_pa, the vmcs12 (and shadow vmcs12) revision, guest mode not with
 * SMM guest mode. Errors name the field. */
int nested_validate(const uint8_t *blob, size_t len, uint32_t max_size);

/* vmcs12 fields tern inspect shows (offsets of KVM's struct vmcs12). */
struct nested_vmcs12_summary {
    uint32_t revision;
    bool shadow;
    uint32_t launch_state;
    uint64_t guest_rip, guest_rsp, guest_cr3;
    uint32_t exit_reason;
    uint32_t instruction_error;
};

/* False when the blob carries no vmcs12. */
bool nested_vmcs12_summary(const uint8_t *blob, size_t len, struct nested_vmcs12_summary *out);

/* "guest-mode,run-pending,evmcs,mtf-pending" and so on; "none" for no flags. */
void nested_describe_flags(const struct nested_header *h, char *buf, size_t cap);

#endif
