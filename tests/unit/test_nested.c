/* Nested-state rules on synthetic struct kvm_nested_state blobs, laid out as
 * KVM_GET_NESTED_STATE returns them on a VT-x host (KVM_CAP_NESTED_STATE = 8320): the 128-byte
 * header, then vmcs12 (4096) and, in guest mode with a shadow VMCS, the shadow vmcs12 (4096). */
#include <criterion/criterion.h>
#include <linux/kvm.h>
#include <string.h>

#include "err/err.h"
#include "nested/nested_msr.h"
#include "nested/nested_state.h"

static uint8_t blob[NESTED_MAX_SIZE];

/* A blob of size bytes: header fields as given, vmcs12s stamped with KVM's revision. */
static size_t make(uint32_t size, uint16_t flags, uint64_t vmxon_pa, uint64_t vmcs12_pa)
{
    memset(blob, 0, sizeof(blob));
    struct kvm_nested_state s = {.flags = flags,
                                 .format = KVM_STATE_NESTED_FORMAT_VMX,
                                 .size = size,
                                 .hdr.vmx.vmxon_pa = vmxon_pa,
                                 .hdr.vmx.vmcs12_pa = vmcs12_pa};
    memcpy(blob, &s, sizeof(s));
    uint32_t rev = NESTED_VMCS12_REVISION, shadow_rev = NESTED_VMCS12_REVISION | 0x80000000u;
    if (size >= NESTED_HEADER_SIZE + NESTED_VMCS12_SIZE)
        memcpy(blob + NESTED_HEADER_SIZE, &rev, 4);
    if (size == NESTED_MAX_SIZE)
        memcpy(blob + NESTED_HEADER_SIZE + NESTED_VMCS12_SIZE, &shadow_rev, 4);
    return size;
}

static struct kvm_nested_state *hdr(void)
{
    return (struct kvm_nested_state *)blob;
}

static struct nested_header parsed(size_t len)
{
    struct nested_header h;
    cr_assert_eq(nested_parse_header(blob, len, &h), 0, "%s", err_msg());
    return h;
}

static void expect_valid(size_t len)
{
    cr_expect_eq(nested_validate(blob, len, NESTED_MAX_SIZE), 0, "%s", err_msg());
}

static void expect_invalid(size_t len, const char *fragment)
{
    cr_expect_lt(nested_validate(blob, len, NESTED_MAX_SIZE), 0, "accepted; wanted '%s'", fragment);
    cr_expect(strstr(err_msg(), fragment), "'%s' not in '%s'", fragment, err_msg());
}

Test(nested, outside_vmx_operation_no_record_is_needed)
{
    /* A fresh vCPU, or a guest that never ran VMXON (scenario a). */
    size_t n = make(128, 0, NESTED_INVALID_GPA, NESTED_INVALID_GPA);
    struct nested_header h = parsed(n);
    cr_expect_not(nested_needed(&h));
    cr_expect_not(nested_needs_evmcs(&h));
    expect_valid(n);
    /* Old userspace's "eVMCS enabled" flag with no VMXON: still nothing needed (scenario f). */
    hdr()->flags = KVM_STATE_NESTED_EVMCS;
    h = parsed(n);
    cr_expect_not(nested_needed(&h));
    cr_expect_not(nested_needs_evmcs(&h));
    expect_valid(n);
    /* An SVM-format blob is never tern's to carry. */
    hdr()->flags = 0;
    hdr()->format = KVM_STATE_NESTED_FORMAT_SVM;
    h = parsed(n);
    cr_expect_not(nested_needed(&h));
}

Test(nested, vmxon_without_vmcs_is_a_header_only_record)
{
    /* Scenario b: VMXON done, no current VMCS. */
    size_t n = make(128, 0, 0x7000, NESTED_INVALID_GPA);
    struct nested_header h = parsed(n);
    cr_expect(nested_needed(&h));
    cr_expect_not(nested_needs_evmcs(&h));
    expect_valid(n);
    /* VMXON held across SMM counts too. */
    hdr()->hdr.vmx.smm.flags = KVM_STATE_NESTED_SMM_VMXON;
    h = parsed(n);
    cr_expect(nested_needed(&h));
    expect_valid(n);
}

Test(nested, loaded_vmcs12_and_guest_mode)
{
    /* Scenario c: vmcs12 loaded, L1 running. */
    size_t n = make(4224, 0, 0x7000, 0x8000);
    struct nested_header h = parsed(n);
    cr_expect(nested_needed(&h));
    expect_valid(n);
    /* Scenario d: L2 running, VM-entry pending, preemption timer armed. */
    hdr()->flags = KVM_STATE_NESTED_GUEST_MODE | KVM_STATE_NESTED_RUN_PENDING;
    hdr()->hdr.vmx.flags = KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE;
    hdr()->hdr.vmx.preemption_timer_deadline = 123456789;
    h = parsed(n);
    cr_expect_eq(h.preemption_timer_deadline, 123456789);
    cr_expect_eq(h.vmx_flags, KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE);
    expect_valid(n);
    /* L2 with a shadow VMCS: the shadow vmcs12 follows, with its shadow indicator. */
    n = make(NESTED_MAX_SIZE, KVM_STATE_NESTED_GUEST_MODE, 0x7000, 0x8000);
    expect_valid(n);
    blob[NESTED_HEADER_SIZE + NESTED_VMCS12_SIZE + 3] &= 0x7f;
    expect_invalid(n, "shadow vmcs12 lacks its shadow-VMCS indicator");
}

Test(nested, only_an_active_evmcs_requires_one)
{
    /* Scenario e: enlightened VM-entry done; vmcs12_pa is -1, the eVMCS is found through the VP
     * assist page. */
    size_t n = make(4224, KVM_STATE_NESTED_GUEST_MODE | KVM_STATE_NESTED_EVMCS, 0x7000,
                    NESTED_INVALID_GPA);
    struct nested_header h = parsed(n);
    cr_expect(nested_needed(&h));
    cr_expect(nested_needs_evmcs(&h));
    expect_valid(n);
    /* eVMCS enabled on the vCPU but never entered with: KVM reports no EVMCS flag. */
    n = make(4224, KVM_STATE_NESTED_GUEST_MODE, 0x7000, 0x8000);
    h = parsed(n);
    cr_expect(nested_needed(&h));
    cr_expect_not(nested_needs_evmcs(&h));
}

Test(nested, rejects_what_kvm_would_naming_the_field)
{
    size_t n = make(4224, 0, 0x7001, 0x8000);
    expect_invalid(n, "vmxon_pa 0x7001 is not a page-aligned address");
    make(4224, 0, 0x7000, 0x8800);
    expect_invalid(n, "vmcs12_pa 0x8800 is not a page-aligned address");
    make(4224, 0, 0x7000, 0x7000);
    expect_invalid(n, "vmcs12_pa equals vmxon_pa");
    make(4224, 0, 0x7000, 0x8000);
    blob[NESTED_HEADER_SIZE] ^= 1;
    expect_invalid(n, "vmcs12 revision 0x11e57ed1 is not KVM's 0x11e57ed0");
    make(4224, 0x40, 0x7000, 0x8000);
    expect_invalid(n, "unknown flags 0x40");
    make(4224, KVM_STATE_NESTED_GUEST_MODE, 0x7000, 0x8000);
    hdr()->hdr.vmx.smm.flags = KVM_STATE_NESTED_SMM_GUEST_MODE | KVM_STATE_NESTED_SMM_VMXON;
    expect_invalid(n, "GUEST_MODE together with SMM guest mode");
    make(4224, 0, 0x7000, 0x8000);
    hdr()->hdr.vmx.smm.flags = 0x4;
    expect_invalid(n, "unknown smm.flags 0x4");
    make(4224, 0, 0x7000, 0x8000);
    hdr()->hdr.vmx.flags = 0x2;
    expect_invalid(n, "unknown hdr.vmx.flags 0x2");
    make(4224, 0, 0x7000, 0x8000);
    hdr()->format = KVM_STATE_NESTED_FORMAT_SVM;
    expect_invalid(n, "format 1 is not VMX");
}

Test(nested, size_against_flags_and_limits)
{
    size_t n = make(4224, 0, 0x7000, 0x8000);
    expect_invalid(4000, "size field 4224 does not match the 4000 bytes");
    cr_expect_lt(nested_validate(blob, n, 128), 0);
    cr_expect(strstr(err_msg(), "4224 bytes exceed the 128 this KVM takes"), "%s", err_msg());
    hdr()->size = 5000;
    expect_invalid(5000, "size 5000 is none of");
    expect_invalid(64, "shorter than its 128-byte header");
    /* Guest mode or an active eVMCS need a vmcs12; a header alone cannot carry them. */
    n = make(128, KVM_STATE_NESTED_GUEST_MODE, 0x7000, NESTED_INVALID_GPA);
    expect_invalid(n, "need a vmcs12, but only the header is there");
    n = make(128, 0, 0x7000, 0x8000);
    expect_invalid(n, "vmcs12_pa 0x8000 is set, but no vmcs12 is carried");
    n = make(4224, 0, 0x7000, NESTED_INVALID_GPA);
    expect_invalid(n, "neither vmcs12_pa nor EVMCS");
    /* Outside VMX operation nothing but the header may be there. */
    n = make(4224, 0, NESTED_INVALID_GPA, 0x8000);
    expect_invalid(n, "vmcs12_pa 0x8000 without a VMXON region");
    n = make(128, KVM_STATE_NESTED_GUEST_MODE, NESTED_INVALID_GPA, NESTED_INVALID_GPA);
    expect_invalid(n, "flags 0x1 without a VMXON region");
    n = make(128, 0, NESTED_INVALID_GPA, NESTED_INVALID_GPA);
    hdr()->hdr.vmx.smm.flags = KVM_STATE_NESTED_SMM_VMXON;
    expect_invalid(n, "smm.flags 0x2 without a VMXON region");
}

Test(nested, vmcs12_fields_and_flag_names_for_inspect)
{
    size_t n =
        make(4224, KVM_STATE_NESTED_GUEST_MODE | KVM_STATE_NESTED_MTF_PENDING, 0x7000, 0x8000);
    uint8_t *v = blob + NESTED_HEADER_SIZE;
    uint64_t rip = 0x401234, rsp = 0x7ff0, cr3 = 0x9000;
    uint32_t launch = 1, reason = 18; /* VMCALL */
    memcpy(v + 8, &launch, 4);
    memcpy(v + 432, &cr3, 8);
    memcpy(v + 536, &rsp, 8);
    memcpy(v + 544, &rip, 8);
    memcpy(v + 812, &reason, 4);
    struct nested_vmcs12_summary s;
    cr_assert(nested_vmcs12_summary(blob, n, &s));
    cr_expect_eq(s.revision, NESTED_VMCS12_REVISION);
    cr_expect_eq(s.launch_state, 1);
    cr_expect_eq(s.guest_rip, rip);
    cr_expect_eq(s.guest_rsp, rsp);
    cr_expect_eq(s.guest_cr3, cr3);
    cr_expect_eq(s.exit_reason, 18);
    cr_expect_not(nested_vmcs12_summary(blob, 128, &s));

    char buf[128];
    struct nested_header h = parsed(n);
    hdr()->hdr.vmx.flags = KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE;
    h = parsed(n);
    nested_describe_flags(&h, buf, sizeof(buf));
    cr_expect_str_eq(buf, "guest-mode,mtf-pending,preemption-deadline");
    make(128, 0, 0x7000, NESTED_INVALID_GPA);
    h = parsed(128);
    nested_describe_flags(&h, buf, sizeof(buf));
    cr_expect_str_eq(buf, "none");
    make(4224, KVM_STATE_NESTED_EVMCS | KVM_STATE_NESTED_GUEST_MODE | KVM_STATE_NESTED_RUN_PENDING,
         0x7000, NESTED_INVALID_GPA);
    h = parsed(4224);
    nested_describe_flags(&h, buf, 10); /* truncated, still terminated */
    cr_expect_eq(strlen(buf), 9);
}

/* KVM restores the "true" control MSRs, BASIC, MISC, the FIXED0s, VMCS_ENUM, PROCBASED_CTLS2
 * and EPT_VPID_CAP; it derives the rest and refuses to set them (vmx_set_vmx_msr). */
Test(nested, vmx_msrs_that_kvm_restores)
{
    static const uint32_t yes[] = {0x480, 0x485, 0x486, 0x488, 0x48a, 0x48b,
                                   0x48c, 0x48d, 0x48e, 0x48f, 0x490};
    static const uint32_t no[] = {0x481, 0x482, 0x483, 0x484, 0x487, 0x489, 0x491, 0x3a, 0x47f};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        cr_expect(nested_vmx_msr_restorable(yes[i]), "0x%x", yes[i]);
        cr_expect(nested_vmx_msr(yes[i]), "0x%x", yes[i]);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        cr_expect_not(nested_vmx_msr_restorable(no[i]), "0x%x", no[i]);
    cr_expect(nested_vmx_msr(0x491) && nested_vmx_msr(0x487));
    cr_expect_not(nested_vmx_msr(0x3a) || nested_vmx_msr(0x492));
}
