#include "hyperv_cpuid/hyperv_cpuid.h"

#include "err/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* KVM's hypervisor range in a table from KVM_GET_SUPPORTED_CPUID. */
#define KVM_RANGE_FIRST 0x40000000u
#define KVM_RANGE_LAST 0x400000ffu
#define HYPERV_MAX_LEAF HYPERV_CPUID_NESTED_FEATURES
/* Leaf 0x40000002: the Hyper-V version a guest is told (build 14393, version 10.0), as Windows
 * Server 2016 reports it; Windows checks it is at least 6.0. */
#define HYPERV_VERSION_EAX 0x00003839u
#define HYPERV_VERSION_EBX 0x000a0000u
/* Leaf 0x40000004 EBX: how many spinlock retries before a notification; all ones: never. */
#define HYPERV_SPINLOCK_NEVER 0xffffffffu

/* Leaf 0x40000003 EAX (TLFS "partition privileges", group A). */
#define PRIV_VP_RUNTIME (1u << 0)
#define PRIV_TIME_REF_COUNT (1u << 1)
#define PRIV_SYNIC HYPERV_SYNIC_AVAILABLE
#define PRIV_SYNTIMER (1u << 3)
#define PRIV_APIC_ACCESS (1u << 4)
#define PRIV_VP_INDEX (1u << 6)
#define PRIV_REFERENCE_TSC (1u << 9)
#define PRIV_FREQUENCY_MSRS (1u << 11)
#define PRIV_REENLIGHTENMENT (1u << 13)
/* Leaf 0x40000003 EDX. */
#define FEAT_FREQUENCY_MSRS (1u << 8)
#define FEAT_STIMER_DIRECT (1u << 19)
/* Leaf 0x40000004 EAX. */
#define HINT_REMOTE_TLB_FLUSH (1u << 2)
#define HINT_APIC_ACCESS (1u << 3)
#define HINT_RELAXED_TIMING (1u << 5)
#define HINT_CLUSTER_IPI (1u << 10)
#define HINT_EX_PROCESSOR_MASKS (1u << 11)

const struct hyperv_feature_info hyperv_features[HV_FEATURE_COUNT] = {
    [HV_RELAXED] = {"relaxed", "no watchdog timeouts: the guest may be descheduled", 0, 0,
                    HINT_RELAXED_TIMING, 0, 0, NULL},
    [HV_VAPIC] = {"vapic", "APIC access through MSRs, and the VP assist page", PRIV_APIC_ACCESS, 0,
                  HINT_APIC_ACCESS, 0, 0, NULL},
    [HV_VPINDEX] = {"vpindex", "the virtual processor index MSR", PRIV_VP_INDEX, 0, 0, 0,
                    KVM_CAP_HYPERV_VP_INDEX, "KVM_CAP_HYPERV_VP_INDEX"},
    [HV_RUNTIME] = {"runtime", "the virtual processor run time MSR", PRIV_VP_RUNTIME, 0, 0, 0, 0,
                    NULL},
    [HV_TIME] = {"time", "the partition reference counter and reference TSC page",
                 PRIV_TIME_REF_COUNT | PRIV_REFERENCE_TSC, 0, 0, 0, KVM_CAP_HYPERV_TIME,
                 "KVM_CAP_HYPERV_TIME"},
    [HV_SYNIC] = {"synic", "the synthetic interrupt controller", PRIV_SYNIC, 0, 0,
                  HV_BIT(HV_VPINDEX), KVM_CAP_HYPERV_SYNIC2, "KVM_CAP_HYPERV_SYNIC2"},
    [HV_STIMER] = {"stimer", "four synthetic timers per processor", PRIV_SYNTIMER, 0, 0,
                   HV_BIT(HV_SYNIC) | HV_BIT(HV_TIME), KVM_CAP_HYPERV_TIME, "KVM_CAP_HYPERV_TIME"},
    [HV_STIMER_DIRECT] = {"stimer-direct", "synthetic timers that interrupt directly", 0,
                          FEAT_STIMER_DIRECT, 0, HV_BIT(HV_STIMER), 0, NULL},
    [HV_FREQUENCIES] = {"frequencies", "the TSC and APIC frequency MSRs", PRIV_FREQUENCY_MSRS,
                        FEAT_FREQUENCY_MSRS, 0, 0, 0, NULL},
    [HV_REENLIGHTENMENT] = {"reenlightenment",
                            "notification when the TSC frequency changes (after a move)",
                            PRIV_REENLIGHTENMENT, 0, 0, 0, 0, NULL},
    [HV_TLBFLUSH] = {"tlbflush", "remote TLB flushes by hypercall", 0, 0,
                     HINT_REMOTE_TLB_FLUSH | HINT_EX_PROCESSOR_MASKS, HV_BIT(HV_VPINDEX),
                     KVM_CAP_HYPERV_TLBFLUSH, "KVM_CAP_HYPERV_TLBFLUSH"},
    [HV_IPI] = {"ipi", "IPIs by hypercall", 0, 0, HINT_CLUSTER_IPI | HINT_EX_PROCESSOR_MASKS,
                HV_BIT(HV_VPINDEX), KVM_CAP_HYPERV_SEND_IPI, "KVM_CAP_HYPERV_SEND_IPI"},
    [HV_EVMCS] = {"evmcs", "the enlightened VMCS for an L1 hypervisor (needs --nested)", 0, 0,
                  HYPERV_EVMCS_RECOMMENDED, HV_BIT(HV_VAPIC), KVM_CAP_HYPERV_ENLIGHTENED_VMCS,
                  "KVM_CAP_HYPERV_ENLIGHTENED_VMCS"},
};

static const struct {
    const char *name;
    uint32_t set;
} hyperv_presets[] = {{"windows", HYPERV_PRESET_WINDOWS}};

static int hyperv_lookup(const char *name, size_t len, uint32_t *set)
{
    for (unsigned f = 0; f < HV_FEATURE_COUNT; f++)
        if (strlen(hyperv_features[f].name) == len && !memcmp(hyperv_features[f].name, name, len)) {
            *set |= HV_BIT(f);
            return 0;
        }
    for (size_t p = 0; p < sizeof(hyperv_presets) / sizeof(hyperv_presets[0]); p++)
        if (strlen(hyperv_presets[p].name) == len && !memcmp(hyperv_presets[p].name, name, len)) {
            *set |= hyperv_presets[p].set;
            return 0;
        }
    return err_set(-EINVAL, "--hyperv: unknown enlightenment \"%.*s\" (tern run --help lists them)",
                   (int)(len > 64 ? 64 : len), name);
}

int hyperv_parse(const char *list, uint32_t *set)
{
    const char *p = list;
    for (unsigned n = 0; n <= HV_FEATURE_COUNT + 8; n++) {
        size_t len = strcspn(p, ",");
        if (!len)
            return err_set(-EINVAL, "--hyperv=%s: an empty name in the list", list);
        int rc = hyperv_lookup(p, len, set);
        if (rc)
            return rc;
        if (!p[len])
            return 0;
        p += len + 1;
    }
    return err_set(-EINVAL, "--hyperv: more than %u names", HV_FEATURE_COUNT + 8);
}

int hyperv_check_needs(uint32_t set)
{
    for (unsigned f = 0; f < HV_FEATURE_COUNT; f++) {
        uint32_t missing = (set & HV_BIT(f)) ? hyperv_features[f].needs & ~set : 0;
        if (missing)
            return err_set(-EINVAL, "--hyperv: %s needs %s", hyperv_features[f].name,
                           hyperv_features[__builtin_ctz(missing)].name);
    }
    return 0;
}

const char *hyperv_names(uint32_t set, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = 0;
    for (unsigned f = 0; f < HV_FEATURE_COUNT && used < size; f++)
        if (set & HV_BIT(f)) {
            int n =
                snprintf(buf + used, size - used, "%s%s", used ? "," : "", hyperv_features[f].name);
            used += n > 0 ? (size_t)n : 0;
        }
    if (!buf[0])
        snprintf(buf, size, "none");
    return buf;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid_entry2 *e, unsigned n,
                                           uint32_t function)
{
    for (unsigned i = 0; i < n; i++)
        if (e[i].function == function)
            return &e[i];
    return NULL;
}

/* The Hyper-V leaves 0x40000000..0x4000000A for options, into out[0..10]. */
static unsigned hyperv_leaves(const struct hyperv_cpuid_options *o, struct kvm_cpuid_entry2 *out)
{
    uint32_t eax = HYPERV_HYPERCALL_AVAILABLE, edx = 0, hints = 0;
    for (unsigned f = 0; f < HV_FEATURE_COUNT; f++)
        if (o->set & HV_BIT(f)) {
            eax |= hyperv_features[f].features_eax;
            edx |= hyperv_features[f].features_edx;
            hints |= hyperv_features[f].hints_eax;
        }
    unsigned n = HYPERV_MAX_LEAF - HYPERV_CPUID_VENDOR_LEAF + 1;
    for (unsigned i = 0; i < n; i++)
        out[i] = (struct kvm_cpuid_entry2){.function = HYPERV_CPUID_VENDOR_LEAF + i};
    out[0].eax = HYPERV_MAX_LEAF;
    memcpy(&out[0].ebx, "Micr", 4);
    memcpy(&out[0].ecx, "osof", 4);
    memcpy(&out[0].edx, "t Hv", 4);
    memcpy(&out[1].eax, "Hv#1", 4);
    out[2].eax = HYPERV_VERSION_EAX;
    out[2].ebx = HYPERV_VERSION_EBX;
    out[3].eax = eax;
    out[3].edx = edx;
    out[4].eax = hints;
    out[4].ebx = HYPERV_SPINLOCK_NEVER;
    out[5].eax = o->max_cpus;
    out[5].ebx = o->max_cpus;
    if (o->set & HV_BIT(HV_EVMCS))
        out[HYPERV_CPUID_NESTED_FEATURES - HYPERV_CPUID_VENDOR_LEAF].eax = HYPERV_EVMCS_VERSION_1;
    return n;
}

int hyperv_cpuid_build(const struct kvm_cpuid_entry2 *base, unsigned base_n,
                       const struct hyperv_cpuid_options *o, struct kvm_cpuid_entry2 *out,
                       unsigned max, unsigned *out_n)
{
    struct kvm_cpuid_entry2 hv[HYPERV_MAX_LEAF - HYPERV_CPUID_VENDOR_LEAF + 1];
    unsigned hv_n = o->hyperv ? hyperv_leaves(o, hv) : 0, n = 0;
    for (unsigned i = 0; i < base_n; i++) {
        bool kvm = base[i].function >= KVM_RANGE_FIRST && base[i].function <= KVM_RANGE_LAST;
        if (kvm && o->kvm_hidden)
            continue;
        if (n == max)
            return err_set(-E2BIG, "CPUID: more than %u entries with the Hyper-V leaves", max);
        out[n] = base[i];
        /* KVM's leaves move up a range; KVM and Linux look for the signature at every 0x100. */
        if (kvm && o->hyperv) {
            out[n].function += HYPERV_CPUID_KVM_BASE - KVM_RANGE_FIRST;
            if (base[i].function == KVM_RANGE_FIRST && out[n].eax >= KVM_RANGE_FIRST &&
                out[n].eax <= KVM_RANGE_LAST)
                out[n].eax += HYPERV_CPUID_KVM_BASE - KVM_RANGE_FIRST;
        }
        n++;
    }
    if (n + hv_n > max)
        return err_set(-E2BIG, "CPUID: more than %u entries with the Hyper-V leaves", max);
    memcpy(&out[n], hv, hv_n * sizeof(hv[0]));
    *out_n = n + hv_n;
    return 0;
}

uint32_t hyperv_kvm_base(const struct kvm_cpuid_entry2 *entries, unsigned n)
{
    for (uint32_t base = KVM_RANGE_FIRST; base <= HYPERV_CPUID_KVM_BASE; base += 0x100) {
        const struct kvm_cpuid_entry2 *e = find(entries, n, base);
        if (e && !memcmp(&e->ebx, "KVMK", 4) && !memcmp(&e->ecx, "VMKV", 4))
            return base;
    }
    return 0;
}

bool hyperv_present(const struct kvm_cpuid_entry2 *entries, unsigned n)
{
    const struct kvm_cpuid_entry2 *vendor = find(entries, n, HYPERV_CPUID_VENDOR_LEAF);
    const struct kvm_cpuid_entry2 *iface = find(entries, n, HYPERV_CPUID_INTERFACE);
    return vendor && iface && vendor->eax >= HYPERV_CPUID_LIMITS && !memcmp(&iface->eax, "Hv#1", 4);
}

/* The enlightenments whose bits are all in (eax, edx, hints); evmcs also by its version. */
static uint32_t hyperv_match(uint32_t eax, uint32_t edx, uint32_t hints, unsigned evmcs_version)
{
    uint32_t set = 0;
    for (unsigned f = 0; f < HV_FEATURE_COUNT; f++) {
        const struct hyperv_feature_info *i = &hyperv_features[f];
        if ((eax & i->features_eax) == i->features_eax &&
            (edx & i->features_edx) == i->features_edx && (hints & i->hints_eax) == i->hints_eax &&
            (f != HV_EVMCS || evmcs_version))
            set |= HV_BIT(f);
    }
    return set;
}

uint32_t hyperv_decode(const struct kvm_cpuid_entry2 *entries, unsigned n)
{
    if (!hyperv_present(entries, n))
        return 0;
    const struct kvm_cpuid_entry2 *feat = find(entries, n, HYPERV_CPUID_FEATURES);
    const struct kvm_cpuid_entry2 *hints = find(entries, n, HYPERV_CPUID_RECOMMENDATIONS);
    return hyperv_match(feat ? feat->eax : 0, feat ? feat->edx : 0, hints ? hints->eax : 0,
                        hyperv_cpuid_evmcs_version(entries, n));
}

uint32_t hyperv_offered(const struct kvm_cpuid_entry2 *hv, unsigned hv_n,
                        bool (*has_cap)(long cap, void *ctx), void *ctx, uint32_t *no_cap)
{
    const struct kvm_cpuid_entry2 *feat = find(hv, hv_n, HYPERV_CPUID_FEATURES);
    uint32_t lacking = 0;
    /* Hints are tern's advice to the guest, not the host's abilities: what KVM can do behind
     * one (IPIs, TLB flushes, eVMCS) is its capability. */
    uint32_t set = feat && (feat->eax & HYPERV_HYPERCALL_AVAILABLE)
                       ? hyperv_match(feat->eax, feat->edx, ~0u, 1)
                       : 0;
    for (unsigned f = 0; f < HV_FEATURE_COUNT && set; f++)
        if (hyperv_features[f].kvm_cap && !has_cap(hyperv_features[f].kvm_cap, ctx))
            lacking |= HV_BIT(f);
    if (no_cap)
        *no_cap = lacking & set;
    return set & ~lacking;
}

unsigned hyperv_cpuid_evmcs_version(const struct kvm_cpuid_entry2 *entries, unsigned n)
{
    const struct kvm_cpuid_entry2 *vendor = find(entries, n, HYPERV_CPUID_VENDOR_LEAF);
    const struct kvm_cpuid_entry2 *nested = find(entries, n, HYPERV_CPUID_NESTED_FEATURES);
    if (!vendor || !nested || memcmp(&vendor->ebx, "Micr", 4))
        return 0;
    return nested->eax & HYPERV_EVMCS_VERSION_MASK;
}

void hyperv_exit_answer(struct kvm_hyperv_exit *exit)
{
    if (exit->type == KVM_EXIT_HYPERV_HCALL)
        exit->u.hcall.result = HYPERV_STATUS_INVALID_HYPERCALL_CODE;
}

/* ---- MSRs ------------------------------------------------------------------------------- */

#define HV_MSR_GUEST_OS_ID 0x40000000u
#define HV_MSR_HYPERCALL 0x40000001u
#define HV_MSR_VP_INDEX 0x40000002u
#define HV_MSR_VP_RUNTIME 0x40000010u
#define HV_MSR_REFERENCE_TSC 0x40000021u
#define HV_MSR_VP_ASSIST_PAGE 0x40000073u
#define HV_MSR_SCONTROL 0x40000080u
#define HV_MSR_SIEFP 0x40000082u
#define HV_MSR_SIMP 0x40000083u
#define HV_MSR_SINT0 0x40000090u
#define HV_MSR_STIMER0_CONFIG 0x400000b0u
#define HV_MSR_REENLIGHTENMENT_CONTROL 0x40000106u
#define HV_MSR_TSC_EMULATION_CONTROL 0x40000107u
#define HV_MSR_TSC_EMULATION_STATUS 0x40000108u
#define HV_MSR_RANGE_LAST 0x400001ffu

/* The restore order, each run with the feature that brings it (every face: -1). */
static const struct {
    uint32_t first;
    unsigned count;
    int feature;
} hyperv_msr_order[] = {
    /* The guest OS id first: KVM ignores a hypercall page write while the OS id is 0. */
    {HV_MSR_GUEST_OS_ID, 1, -1},
    {HV_MSR_HYPERCALL, 1, -1},
    {HV_MSR_VP_INDEX, 1, HV_VPINDEX},
    {HV_MSR_VP_RUNTIME, 1, HV_RUNTIME},
    /* The VP assist page before the first KVM_RUN: KVM maps an active eVMCS through it. */
    {HV_MSR_VP_ASSIST_PAGE, 1, HV_VAPIC},
    {HV_MSR_REFERENCE_TSC, 1, HV_TIME},
    /* SynIC's MSRs are taken only while SynIC is active (vcpu_set_cpuid enables it with the
     * CPUID, before any state): control, then the event flags and message pages, the SINTs. */
    {HV_MSR_SCONTROL, 1, HV_SYNIC},
    {HV_MSR_SIEFP, 1, HV_SYNIC},
    {HV_MSR_SIMP, 1, HV_SYNIC},
    {HV_MSR_SINT0, 16, HV_SYNIC},
    /* Timers after the SynIC they deliver through: one due at once fires into a set-up SINT.
     * Config, then count, for each of the four. */
    {HV_MSR_STIMER0_CONFIG, 8, HV_STIMER},
    {HV_MSR_REENLIGHTENMENT_CONTROL, 1, HV_REENLIGHTENMENT},
    {HV_MSR_TSC_EMULATION_CONTROL, 1, HV_REENLIGHTENMENT},
    {HV_MSR_TSC_EMULATION_STATUS, 1, HV_REENLIGHTENMENT},
};

unsigned hyperv_msrs(uint32_t set, uint32_t out[HYPERV_MSR_MAX])
{
    unsigned n = 0;
    for (size_t r = 0; r < sizeof(hyperv_msr_order) / sizeof(hyperv_msr_order[0]); r++) {
        int f = hyperv_msr_order[r].feature;
        if (f >= 0 && !(set & HV_BIT(f)))
            continue;
        for (unsigned k = 0; k < hyperv_msr_order[r].count && n < HYPERV_MSR_MAX; k++)
            out[n++] = hyperv_msr_order[r].first + k;
    }
    return n;
}

bool hyperv_msr(uint32_t msr)
{
    return msr >= HV_MSR_GUEST_OS_ID && msr <= HV_MSR_RANGE_LAST;
}
