/* The Hyper-V face: named enlightenments from the fixed table, on inputs that mirror KVM's: a
 * vCPU table with KVM's signature leaves (KVM_GET_SUPPORTED_CPUID) and the leaves
 * KVM_GET_SUPPORTED_HV_CPUID returns on a Debian 6.1 VT-x host (vendor "Linux KVM Hv", max
 * leaf 0x4000000A, eVMCS versions 1..1 and the direct-flush bits). */
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

#define ALL_FEATURES ((1u << HV_FEATURE_COUNT) - 1)

static unsigned build(uint32_t set, bool hidden, struct kvm_cpuid_entry2 *out, unsigned max)
{
    struct kvm_cpuid_entry2 base[8];
    unsigned bn = base_table(base), n = 0;
    struct hyperv_cpuid_options o = {
        .hyperv = true, .set = set, .kvm_hidden = hidden, .max_cpus = 4};
    cr_assert_eq(hyperv_cpuid_build(base, bn, &o, out, max, &n), 0, "%s", err_msg());
    return n;
}

Test(hyperv_cpuid, evmcs_version_1_and_the_vendor)
{
    struct kvm_cpuid_entry2 out[32];
    unsigned n = build(HV_BIT(HV_VAPIC) | HV_BIT(HV_EVMCS), false, out, 32);
    const struct kvm_cpuid_entry2 *v = find(out, n, 0x40000000);
    cr_assert(v);
    cr_expect(v->ebx == sig("Micr") && v->ecx == sig("osof") && v->edx == sig("t Hv"));
    cr_expect_eq(v->eax, 0x4000000a);
    cr_expect_eq(find(out, n, 0x4000000a)->eax, HYPERV_EVMCS_VERSION_1, "nothing but version 1");
    cr_expect_eq(find(out, n, 0x40000004)->eax, HYPERV_EVMCS_RECOMMENDED | (1u << 3));
    cr_expect_eq(find(out, n, 0x40000003)->eax, (1u << 4) | (1u << 5), "APIC access, hypercall");
    cr_expect_eq(hyperv_cpuid_evmcs_version(out, n), HYPERV_EVMCS_VERSION_1);
    cr_expect_eq(find(out, n, 0x40000001)->eax, sig("Hv#1"));
    cr_expect_eq(find(out, n, 0x40000005)->eax, 4, "the most virtual processors");
}

Test(hyperv_cpuid, kvm_leaves_move_to_0x40000100)
{
    struct kvm_cpuid_entry2 base[8], out[32];
    unsigned n = build(HV_BIT(HV_RELAXED), false, out, 32);
    base_table(base);
    const struct kvm_cpuid_entry2 *k = find(out, n, 0x40000100);
    cr_assert(k);
    cr_expect(k->ebx == sig("KVMK") && k->ecx == sig("VMKV"));
    cr_expect_eq(k->eax, 0x40000101, "KVM's range ends at its moved features leaf");
    cr_expect_eq(find(out, n, 0x40000101)->eax, 0x01007afb);
    cr_expect_eq(find(out, n, 1)->ecx, base[1].ecx, "ordinary leaves untouched");
    unsigned vendors = 0;
    for (unsigned i = 0; i < n; i++)
        vendors += out[i].function == 0x40000000;
    cr_expect_eq(vendors, 1, "exactly one leaf 0x40000000, Hyper-V's");
    cr_expect_eq(hyperv_cpuid_evmcs_version(out, n), 0, "no eVMCS: no version");
    cr_expect_eq(find(out, n, 0x40000004)->eax, 1u << 5, "relaxed timing only");
}

Test(hyperv_cpuid, hidden_kvm_leaves_leave_only_hyper_v)
{
    struct kvm_cpuid_entry2 out[32];
    unsigned n = build(HV_BIT(HV_VPINDEX), true, out, 32);
    for (unsigned i = 0; i < n; i++) {
        cr_expect(out[i].function < 0x40000100 || out[i].function > 0x400001ff,
                  "leaf 0x%x of KVM's range is left", out[i].function);
        cr_expect_neq(out[i].ebx, sig("KVMK"), "KVM's signature at 0x%x", out[i].function);
    }
    cr_expect_eq(find(out, n, 0x40000000)->ebx, sig("Micr"));
    /* Without --hyperv, hiding leaves no hypervisor leaf at all. */
    struct kvm_cpuid_entry2 base[8];
    unsigned bn = base_table(base);
    struct hyperv_cpuid_options o = {.kvm_hidden = true};
    cr_assert_eq(hyperv_cpuid_build(base, bn, &o, out, 32, &n), 0);
    cr_expect_eq(n, bn - 2);
    cr_expect_null(find(out, n, 0x40000000));
    cr_expect_not(hyperv_present(out, n));
}

Test(hyperv_cpuid, each_name_sets_exactly_its_bits_and_reads_back)
{
    struct kvm_cpuid_entry2 out[32];
    for (unsigned f = 0; f < HV_FEATURE_COUNT; f++) {
        unsigned n = build(HV_BIT(f), false, out, 32);
        cr_expect_eq(hyperv_decode(out, n), HV_BIT(f), "%s reads back as %#x",
                     hyperv_features[f].name, hyperv_decode(out, n));
        const struct kvm_cpuid_entry2 *feat = find(out, n, 0x40000003);
        cr_expect_eq(feat->eax, hyperv_features[f].features_eax | (1u << 5), "%s: EAX",
                     hyperv_features[f].name);
        cr_expect_eq(feat->edx, hyperv_features[f].features_edx, "%s: EDX",
                     hyperv_features[f].name);
        cr_expect_eq(find(out, n, 0x40000004)->eax, hyperv_features[f].hints_eax, "%s: hints",
                     hyperv_features[f].name);
    }
    unsigned n = build(HYPERV_PRESET_WINDOWS, false, out, 32);
    cr_expect_eq(hyperv_decode(out, n), HYPERV_PRESET_WINDOWS);
}

Test(hyperv_cpuid, bits_tern_never_sets_stay_clear)
{
    struct kvm_cpuid_entry2 out[32];
    unsigned n = build(ALL_FEATURES, false, out, 32);
    const struct kvm_cpuid_entry2 *feat = find(out, n, 0x40000003);
    cr_expect_eq(feat->ebx, 0,
                 "no partition privileges: partition id, CPU management, "
                 "isolation, extended hypercalls, messages");
    cr_expect_not(feat->eax & ((1u << 7) | (1u << 8) | (1u << 10) | (1u << 12)),
                  "no reset, statistics, idle or SynDbg MSRs: %#x", feat->eax);
    cr_expect_not(feat->edx & ((1u << 10) | (1u << 11)), "no crash or debug MSRs: %#x", feat->edx);
    cr_expect_eq(find(out, n, 0x40000006)->eax, 0, "no hardware features claimed");
}

Test(hyperv_cpuid, parse_names_presets_and_needs)
{
    uint32_t set = 0;
    cr_expect_eq(hyperv_parse("relaxed,vapic", &set), 0, "%s", err_msg());
    cr_expect_eq(set, HV_BIT(HV_RELAXED) | HV_BIT(HV_VAPIC));
    set = 0;
    cr_expect_eq(hyperv_parse("windows,evmcs", &set), 0);
    cr_expect_eq(set, HYPERV_PRESET_WINDOWS | HV_BIT(HV_EVMCS));
    cr_expect_eq(hyperv_check_needs(set), 0, "%s", err_msg());
    cr_expect_lt(hyperv_parse("relaxed,frobnicate", &set), 0);
    cr_expect_str_eq(err_msg(),
                     "--hyperv: unknown enlightenment \"frobnicate\" (tern run --help lists them)");
    cr_expect_lt(hyperv_parse("relaxed,,vapic", &set), 0);
    cr_expect(strstr(err_msg(), "an empty name"), "%s", err_msg());
    cr_expect_lt(hyperv_check_needs(HV_BIT(HV_EVMCS)), 0);
    cr_expect_str_eq(err_msg(), "--hyperv: evmcs needs vapic");
    cr_expect_lt(hyperv_check_needs(HV_BIT(HV_STIMER) | HV_BIT(HV_TIME)), 0);
    cr_expect_str_eq(err_msg(), "--hyperv: stimer needs synic");
    cr_expect_lt(hyperv_check_needs(HV_BIT(HV_SYNIC)), 0);
    cr_expect_str_eq(err_msg(), "--hyperv: synic needs vpindex");
    char buf[128];
    cr_expect_str_eq(hyperv_names(HV_BIT(HV_VAPIC) | HV_BIT(HV_EVMCS), buf, sizeof(buf)),
                     "vapic,evmcs");
    cr_expect_str_eq(hyperv_names(0, buf, sizeof(buf)), "none");
}

static bool caps_but_synic2(long cap, void *ctx)
{
    (void)ctx;
    return cap != KVM_CAP_HYPERV_SYNIC2;
}

static bool all_caps(long cap, void *ctx)
{
    (void)cap;
    (void)ctx;
    return true;
}

Test(hyperv_cpuid, what_a_host_offers)
{
    struct kvm_cpuid_entry2 hv[16];
    unsigned hn = hv_table(hv);
    /* Debian 6.1's KVM: everything but direct timers (EDX bit 19 is not in 0x1bbc). */
    uint32_t all = hyperv_offered(hv, hn, all_caps, NULL, NULL);
    cr_expect_eq(all, ALL_FEATURES & ~HV_BIT(HV_STIMER_DIRECT), "offered %#x", all);
    uint32_t no_cap = ~0u;
    cr_expect_eq(hyperv_offered(hv, hn, caps_but_synic2, NULL, &no_cap), all & ~HV_BIT(HV_SYNIC));
    cr_expect_eq(no_cap, HV_BIT(HV_SYNIC), "left out for its capability alone: %#x", no_cap);
    /* A feature the leaves do not offer is not blamed on a capability. */
    hyperv_offered(hv, hn, all_caps, NULL, &no_cap);
    cr_expect_eq(no_cap, 0);
    hv[3].eax &= ~(1u << 5);
    cr_expect_eq(hyperv_offered(hv, hn, all_caps, NULL, NULL), 0, "no hypercall MSR: nothing");
}

Test(hyperv_cpuid, msr_order_and_set)
{
    uint32_t m[HYPERV_MSR_MAX];
    unsigned n = hyperv_msrs(HV_BIT(HV_VAPIC), m);
    cr_assert_eq(n, 3);
    cr_expect(m[0] == 0x40000000 && m[1] == 0x40000001 && m[2] == 0x40000073,
              "guest OS id, hypercall, VP assist page");
    n = hyperv_msrs(ALL_FEATURES, m);
    int at[0x200];
    memset(at, -1, sizeof(at));
    for (unsigned i = 0; i < n; i++)
        at[m[i] - 0x40000000] = (int)i;
    cr_expect_lt(at[0x00], at[0x01], "GUEST_OS_ID before HYPERCALL");
    cr_expect_lt(at[0x80], at[0x83], "SCONTROL before SIMP");
    cr_expect_lt(at[0x83], at[0x90], "SIMP before SINT0");
    cr_expect_lt(at[0x9f], at[0xb0], "every SINT before the timers");
    cr_expect_lt(at[0xb0], at[0xb1], "STIMER0 config before count");
    cr_expect_geq(at[0xb7], 0, "STIMER3_COUNT carried");
    cr_expect_geq(at[0x106], 0, "reenlightenment control carried");
    cr_expect(hyperv_msr(0x40000106) && !hyperv_msr(0x3a) && !hyperv_msr(0x40000200));
}

Test(hyperv_cpuid, exits_are_answered)
{
    struct kvm_hyperv_exit e = {.type = KVM_EXIT_HYPERV_HCALL};
    e.u.hcall.input = 0x8001; /* HvExtCallQueryCapabilities */
    hyperv_exit_answer(&e);
    cr_expect_eq(e.u.hcall.result, HYPERV_STATUS_INVALID_HYPERCALL_CODE);
    struct kvm_hyperv_exit syn = {.type = KVM_EXIT_HYPERV_SYNIC};
    syn.u.synic.msr = 0x40000080;
    syn.u.synic.control = 1;
    hyperv_exit_answer(&syn);
    cr_expect_eq(syn.u.synic.control, 1, "a SynIC exit is left as it is");
}

Test(hyperv_cpuid, a_table_without_hv1_has_no_enlightenments)
{
    struct kvm_cpuid_entry2 hv[16];
    unsigned hn = hv_table(hv);
    cr_expect_neq(hyperv_decode(hv, hn), 0);
    hv[1].eax = 0;
    cr_expect_eq(hyperv_decode(hv, hn), 0);
    cr_expect_not(hyperv_present(hv, hn));
}
