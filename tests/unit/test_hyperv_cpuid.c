/* The Hyper-V CPUID table, from synthetic inputs that mirror KVM's: a vCPU table with KVM's
 * signature leaves (KVM_GET_SUPPORTED_CPUID) and the leaves KVM_GET_SUPPORTED_HV_CPUID returns
 * on a VT-x host with eVMCS (vendor "Linux KVM Hv", max leaf 0x4000000A, nested features with
 * eVMCS versions 1..1 and the direct-flush bits). */
#include <criterion/criterion.h>
#include <string.h>

#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"

static struct kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    return (struct kvm_cpuid_entry2){.function = fn, .eax = a, .ebx = b, .ecx = c, .edx = d};
}

static uint32_t sig(const char *s)
{
    uint32_t v;
    memcpy(&v, s, 4);
    return v;
}

static unsigned base_table(struct kvm_cpuid_entry2 *b)
{
    b[0] = leaf(0, 0xd, sig("Genu"), sig("ntel"), sig("ineI"));
    b[1] = leaf(1, 0x306c3, 0x800, 0x80000000u | 0x20, 0x178bfbff);
    b[2] = leaf(0x40000000, 0x40000001, sig("KVMK"), sig("VMKV"), sig("M\0\0\0"));
    b[3] = leaf(0x40000001, 0x01007afb, 0, 0, 0);
    b[4] = leaf(0x80000000, 0x80000008, 0, 0, 0);
    return 5;
}

static unsigned hv_table(struct kvm_cpuid_entry2 *h)
{
    h[0] = leaf(0x40000000, 0x4000000a, sig("Linu"), sig("x KV"), sig("M Hv"));
    h[1] = leaf(0x40000001, sig("Hv#1"), 0, 0, 0);
    h[2] = leaf(0x40000002, 0x00003839, 0x000a0000, 0, 0);
    h[3] = leaf(0x40000003, 0x00002bff, 0x00000803, 0, 0x00001bbc);
    h[4] = leaf(0x40000004, 0x00000a2c | HYPERV_EVMCS_RECOMMENDED, 0xffffffff, 0, 0);
    h[5] = leaf(0x40000005, 0x40, 0, 0, 0);
    h[6] = leaf(0x40000006, 0, 0, 0, 0);
    h[7] = leaf(0x4000000a, 0x000e0101, 0, 0, 0);
    return 8;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid_entry2 *e, unsigned n,
                                           uint32_t fn)
{
    for (unsigned i = 0; i < n; i++)
        if (e[i].function == fn)
            return &e[i];
    return NULL;
}

Test(hyperv_cpuid, evmcs_version_1_and_the_vendor)
{
    struct kvm_cpuid_entry2 base[8], hv[16], out[32];
    unsigned bn = base_table(base), hn = hv_table(hv), n;
    hv[7].eax = 0x000e0301; /* a host offering versions 1..3: the guest sees 1..1 */
    struct hyperv_cpuid_options o = {.evmcs = true};
    cr_assert_eq(hyperv_cpuid_build(base, bn, hv, hn, &o, out, 32, &n), 0, "%s", err_msg());
    cr_expect_eq(n, bn + hn);
    const struct kvm_cpuid_entry2 *v = find(out, n, 0x40000000);
    cr_assert(v);
    cr_expect(v->ebx == sig("Micr") && v->ecx == sig("osof") && v->edx == sig("t Hv"));
    cr_expect_eq(v->eax, 0x4000000a);
    cr_expect_eq(find(out, n, 0x4000000a)->eax, 0x000e0101, "other nested-feature bits kept");
    cr_expect(find(out, n, 0x40000004)->eax & HYPERV_EVMCS_RECOMMENDED);
    cr_expect_eq(hyperv_cpuid_evmcs_version(out, n), HYPERV_EVMCS_VERSION_1);
    cr_expect_eq(find(out, n, 0x40000001)->eax, sig("Hv#1"));
}

Test(hyperv_cpuid, kvm_leaves_move_to_0x40000100)
{
    struct kvm_cpuid_entry2 base[8], hv[16], out[32];
    unsigned bn = base_table(base), hn = hv_table(hv), n;
    struct hyperv_cpuid_options o = {.evmcs = false};
    cr_assert_eq(hyperv_cpuid_build(base, bn, hv, hn, &o, out, 32, &n), 0, "%s", err_msg());
    const struct kvm_cpuid_entry2 *k = find(out, n, 0x40000100);
    cr_assert(k);
    cr_expect(k->ebx == sig("KVMK") && k->ecx == sig("VMKV"));
    cr_expect_eq(k->eax, 0x40000101, "KVM's range ends at its moved features leaf");
    cr_expect_eq(find(out, n, 0x40000101)->eax, 0x01007afb);
    cr_expect_eq(find(out, n, 1)->ecx, base[1].ecx, "ordinary leaves untouched");
    /* Exactly one leaf 0x40000000, and it is Hyper-V's. */
    unsigned vendors = 0;
    for (unsigned i = 0; i < n; i++)
        vendors += out[i].function == 0x40000000;
    cr_expect_eq(vendors, 1);
    /* No eVMCS: no version, no recommendation. */
    cr_expect_eq(hyperv_cpuid_evmcs_version(out, n), 0);
    cr_expect_not(find(out, n, 0x40000004)->eax & HYPERV_EVMCS_RECOMMENDED);
    cr_expect_eq(find(out, n, 0x40000004)->eax, 0x00000a2c);
}

Test(hyperv_cpuid, refuses_missing_leaves_and_small_tables)
{
    struct kvm_cpuid_entry2 base[8], hv[16], out[32];
    unsigned bn = base_table(base), hn = hv_table(hv), n;
    struct hyperv_cpuid_options o = {.evmcs = true};
    cr_expect_lt(hyperv_cpuid_build(base, bn, hv, hn - 1, &o, out, 32, &n), 0);
    cr_expect(strstr(err_msg(), "no leaf 0x4000000a (nested features)"), "%s", err_msg());
    cr_expect_lt(hyperv_cpuid_build(base, bn, hv + 1, hn - 1, &o, out, 32, &n), 0);
    cr_expect(strstr(err_msg(), "no leaf 0x40000000"), "%s", err_msg());
    cr_expect_lt(hyperv_cpuid_build(base, bn, hv, hn, &o, out, bn + 2, &n), 0);
    cr_expect(strstr(err_msg(), "more than 7 entries"), "%s", err_msg());
}
