#include "nested/nested_state.h"

#include "err/err.h"
#include "le/le.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define PAGE_MASK 0xfffull
/* The guest-physical width KVM accepts at most (page_address_valid: MAXPHYADDR <= 52). */
#define PHYS_LIMIT (1ull << 52)

#define KNOWN_FLAGS                                                                                \
    (KVM_STATE_NESTED_GUEST_MODE | KVM_STATE_NESTED_RUN_PENDING | KVM_STATE_NESTED_EVMCS |         \
     KVM_STATE_NESTED_MTF_PENDING)
#define KNOWN_SMM_FLAGS (KVM_STATE_NESTED_SMM_GUEST_MODE | KVM_STATE_NESTED_SMM_VMXON)

/* KVM's struct vmcs12 (arch/x86/kvm/vmx/vmcs12.h): its layout is frozen. */
#define VMCS12_REVISION_OFF 0
#define VMCS12_LAUNCH_STATE_OFF 8
#define VMCS12_GUEST_CR3_OFF 432
#define VMCS12_GUEST_RSP_OFF 536
#define VMCS12_GUEST_RIP_OFF 544
#define VMCS12_INSTRUCTION_ERROR_OFF 808
#define VMCS12_EXIT_REASON_OFF 812
#define VMCS12_SHADOW_BIT 0x80000000u

int nested_parse_header(const uint8_t *blob, size_t len, struct nested_header *out)
{
    if (len < NESTED_HEADER_SIZE)
        return err_set(-EPROTO, "nested state: %zu bytes, shorter than its %u-byte header", len,
                       NESTED_HEADER_SIZE);
    struct kvm_nested_state s;
    memcpy(&s, blob, sizeof(s));
    *out = (struct nested_header){
        .flags = s.flags,
        .format = s.format,
        .size = s.size,
        .vmxon_pa = s.hdr.vmx.vmxon_pa,
        .vmcs12_pa = s.hdr.vmx.vmcs12_pa,
        .smm_flags = s.hdr.vmx.smm.flags,
        .vmx_flags = s.hdr.vmx.flags,
        .preemption_timer_deadline = s.hdr.vmx.preemption_timer_deadline,
    };
    return 0;
}

bool nested_needed(const struct nested_header *h)
{
    return h->format == KVM_STATE_NESTED_FORMAT_VMX &&
           (h->vmxon_pa != NESTED_INVALID_GPA || (h->smm_flags & KVM_STATE_NESTED_SMM_VMXON));
}

bool nested_needs_evmcs(const struct nested_header *h)
{
    return nested_needed(h) && (h->flags & KVM_STATE_NESTED_EVMCS);
}

static bool page_address_ok(uint64_t gpa)
{
    return !(gpa & PAGE_MASK) && gpa < PHYS_LIMIT;
}

static int check_vmcs12(const uint8_t *vmcs12, const char *which, bool want_shadow)
{
    uint32_t word = le_get32(vmcs12 + VMCS12_REVISION_OFF);
    if ((word & ~VMCS12_SHADOW_BIT) != NESTED_VMCS12_REVISION)
        return err_set(-EPROTO, "nested state: %s revision 0x%x is not KVM's 0x%x", which,
                       word & ~VMCS12_SHADOW_BIT, NESTED_VMCS12_REVISION);
    if (want_shadow && !(word & VMCS12_SHADOW_BIT))
        return err_set(-EPROTO, "nested state: %s lacks its shadow-VMCS indicator", which);
    return 0;
}

/* Size, format and flags: the rules on the header alone. */
static int validate_fields(const struct nested_header *h, size_t len, uint32_t max_size)
{
    if (h->size != len)
        return err_set(-EPROTO, "nested state: size field %u does not match the %zu bytes carried",
                       h->size, len);
    if (h->size > max_size)
        return err_set(-E2BIG, "nested state: %u bytes exceed the %u this KVM takes", h->size,
                       max_size);
    if (h->size != NESTED_HEADER_SIZE && h->size != NESTED_HEADER_SIZE + NESTED_VMCS12_SIZE &&
        h->size != NESTED_MAX_SIZE)
        return err_set(-EPROTO,
                       "nested state: size %u is none of 128 (header), 4224 (vmcs12) and 8320 "
                       "(vmcs12 and shadow)",
                       h->size);
    if (h->format != KVM_STATE_NESTED_FORMAT_VMX)
        return err_set(-EPROTO, "nested state: format %u is not VMX (0)", h->format);
    if (h->flags & ~KNOWN_FLAGS)
        return err_set(-EPROTO, "nested state: unknown flags 0x%x", h->flags & ~KNOWN_FLAGS);
    if (h->smm_flags & ~KNOWN_SMM_FLAGS)
        return err_set(-EPROTO, "nested state: unknown smm.flags 0x%x",
                       h->smm_flags & ~KNOWN_SMM_FLAGS);
    if (h->vmx_flags & ~KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE)
        return err_set(-EPROTO, "nested state: unknown hdr.vmx.flags 0x%x",
                       h->vmx_flags & ~KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE);
    if ((h->flags & KVM_STATE_NESTED_GUEST_MODE) &&
        (h->smm_flags & KVM_STATE_NESTED_SMM_GUEST_MODE))
        return err_set(-EPROTO, "nested state: GUEST_MODE together with SMM guest mode");
    if ((h->smm_flags & KVM_STATE_NESTED_SMM_GUEST_MODE) &&
        !(h->smm_flags & KVM_STATE_NESTED_SMM_VMXON))
        return err_set(-EPROTO, "nested state: SMM guest mode without SMM VMXON");
    return 0;
}

/* Not in VMX operation: nothing else may be set (EVMCS is tolerated by KVM for old userspace,
 * which used it to mean "enabled"). */
static int validate_outside_vmx(const struct nested_header *h)
{
    if (h->smm_flags)
        return err_set(-EPROTO, "nested state: smm.flags 0x%x without a VMXON region",
                       h->smm_flags);
    if (h->vmcs12_pa != NESTED_INVALID_GPA)
        return err_set(-EPROTO, "nested state: vmcs12_pa 0x%llx without a VMXON region",
                       (unsigned long long)h->vmcs12_pa);
    if (h->flags & ~KVM_STATE_NESTED_EVMCS)
        return err_set(-EPROTO, "nested state: flags 0x%x without a VMXON region", h->flags);
    if (h->size != NESTED_HEADER_SIZE)
        return err_set(-EPROTO, "nested state: %u bytes without a VMXON region", h->size);
    return 0;
}

/* VMXON done, no VMCS loaded: the header says all. */
static int validate_header_only(const struct nested_header *h)
{
    if (h->flags & (KVM_STATE_NESTED_GUEST_MODE | KVM_STATE_NESTED_EVMCS))
        return err_set(-EPROTO,
                       "nested state: flags 0x%x need a vmcs12, but only the header is there",
                       h->flags);
    if (h->vmcs12_pa != NESTED_INVALID_GPA)
        return err_set(-EPROTO, "nested state: vmcs12_pa 0x%llx is set, but no vmcs12 is carried",
                       (unsigned long long)h->vmcs12_pa);
    return 0;
}

/* A vmcs12 is carried: where it lives, and its revision (and the shadow's). */
static int validate_vmcs12(const uint8_t *blob, const struct nested_header *h)
{
    if (h->vmcs12_pa != NESTED_INVALID_GPA) {
        if (h->vmcs12_pa == h->vmxon_pa)
            return err_set(-EPROTO, "nested state: vmcs12_pa equals vmxon_pa (0x%llx)",
                           (unsigned long long)h->vmxon_pa);
        if (!page_address_ok(h->vmcs12_pa))
            return err_set(-EPROTO, "nested state: vmcs12_pa 0x%llx is not a page-aligned address",
                           (unsigned long long)h->vmcs12_pa);
    } else if (!(h->flags & KVM_STATE_NESTED_EVMCS)) {
        return err_set(-EPROTO,
                       "nested state: a vmcs12 is carried, but neither vmcs12_pa nor EVMCS says "
                       "where it lives");
    }
    int rc = check_vmcs12(blob + NESTED_HEADER_SIZE, "vmcs12", false);
    if (rc)
        return rc;
    /* KVM reads the shadow vmcs12 only in guest mode (and only GET in guest mode adds it). */
    if (h->size == NESTED_MAX_SIZE && (h->flags & KVM_STATE_NESTED_GUEST_MODE))
        rc = check_vmcs12(blob + NESTED_HEADER_SIZE + NESTED_VMCS12_SIZE, "shadow vmcs12", true);
    return rc;
}

int nested_validate(const uint8_t *blob, size_t len, uint32_t max_size)
{
    struct nested_header h = {0};
    int rc = nested_parse_header(blob, len, &h);
    if (!rc)
        rc = validate_fields(&h, len, max_size);
    if (rc)
        return rc;
    if (h.vmxon_pa == NESTED_INVALID_GPA)
        return validate_outside_vmx(&h);
    if (!page_address_ok(h.vmxon_pa))
        return err_set(-EPROTO, "nested state: vmxon_pa 0x%llx is not a page-aligned address",
                       (unsigned long long)h.vmxon_pa);
    if (h.size == NESTED_HEADER_SIZE)
        return validate_header_only(&h);
    return validate_vmcs12(blob, &h);
}

bool nested_vmcs12_summary(const uint8_t *blob, size_t len, struct nested_vmcs12_summary *out)
{
    if (len < NESTED_HEADER_SIZE + NESTED_VMCS12_SIZE)
        return false;
    const uint8_t *v = blob + NESTED_HEADER_SIZE;
    uint32_t word = le_get32(v + VMCS12_REVISION_OFF);
    *out = (struct nested_vmcs12_summary){
        .revision = word & ~VMCS12_SHADOW_BIT,
        .shadow = (word & VMCS12_SHADOW_BIT) != 0,
        .launch_state = le_get32(v + VMCS12_LAUNCH_STATE_OFF),
        .guest_rip = le_get64(v + VMCS12_GUEST_RIP_OFF),
        .guest_rsp = le_get64(v + VMCS12_GUEST_RSP_OFF),
        .guest_cr3 = le_get64(v + VMCS12_GUEST_CR3_OFF),
        .exit_reason = le_get32(v + VMCS12_EXIT_REASON_OFF),
        .instruction_error = le_get32(v + VMCS12_INSTRUCTION_ERROR_OFF),
    };
    return true;
}

void nested_describe_flags(const struct nested_header *h, char *buf, size_t cap)
{
    const struct {
        bool set;
        const char *name;
    } names[] = {
        {h->flags & KVM_STATE_NESTED_GUEST_MODE, "guest-mode"},
        {h->flags & KVM_STATE_NESTED_RUN_PENDING, "run-pending"},
        {h->flags & KVM_STATE_NESTED_EVMCS, "evmcs-active"},
        {h->flags & KVM_STATE_NESTED_MTF_PENDING, "mtf-pending"},
        {h->vmx_flags & KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE, "preemption-deadline"},
        {h->smm_flags & KVM_STATE_NESTED_SMM_VMXON, "smm-vmxon"},
        {h->smm_flags & KVM_STATE_NESTED_SMM_GUEST_MODE, "smm-guest-mode"},
    };
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].set && n < cap) /* past cap, the text is already cut */
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "," : "", names[i].name);
    if (!n)
        snprintf(buf, cap, "none");
}
