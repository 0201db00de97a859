/* hyperv_cpuid: the Hyper-V face tern gives a guest (--hyperv=LIST), as pure data and rules.
 *
 * Each named enlightenment sets exactly its bits from one fixed table (hyperv_features): in
 * leaf 0x40000003 (features: EAX privileges, EDX feature flags) and 0x40000004 (hints), plus
 * the eVMCS version in 0x4000000A. Nothing is passed through from the host, so a guest's CPUID
 * is the same on every host that offers the set, and the set can be read back from any
 * table (hyperv_decode) — a stream's CPUID says which enlightenments its guest has.
 *
 * Every Hyper-V face also carries the hypercall and guest-OS-id MSRs (leaf 0x40000003 EAX bit
 * 5), without which no guest takes the Hyper-V path. Bits tern never sets: partition-id
 * access, CPU management and isolation (EBX), SynDbg, crash and reset (their exits are not
 * handled), extended hypercalls.
 *
 * KVM's own leaves ("KVMKVMKVM", PV features) move to HYPERV_CPUID_KVM_BASE, where Linux and
 * KVM still find them, unless hidden (kvm_hidden): then the guest sees only Hyper-V. Linux
 * takes the hypervisor with the highest base, so a Linux L1 uses Hyper-V (and the enlightened
 * VMCS) only with KVM hidden.
 */
#ifndef TERN_HYPERV_CPUID_H
#define TERN_HYPERV_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HYPERV_CPUID_VENDOR_LEAF 0x40000000u
#define HYPERV_CPUID_INTERFACE 0x40000001u
#define HYPERV_CPUID_VERSION 0x40000002u
#define HYPERV_CPUID_FEATURES 0x40000003u
#define HYPERV_CPUID_RECOMMENDATIONS 0x40000004u
#define HYPERV_CPUID_LIMITS 0x40000005u
#define HYPERV_CPUID_NESTED_FEATURES 0x4000000au
#define HYPERV_CPUID_KVM_BASE 0x40000100u
#define HYPERV_EVMCS_RECOMMENDED (1u << 14)
/* EAX[7:0] the oldest and EAX[15:8] the newest eVMCS version: 1 and 1. */
#define HYPERV_EVMCS_VERSION_1 0x0101u
#define HYPERV_EVMCS_VERSION_MASK 0xffffu
/* Leaf 0x40000003 EAX bit 5: the hypercall page and guest OS id MSRs, in every face. */
#define HYPERV_HYPERCALL_AVAILABLE (1u << 5)
#define HYPERV_SYNIC_AVAILABLE (1u << 2)
/* The most leaves KVM_GET_SUPPORTED_HV_CPUID is asked for. */
#define HYPERV_CPUID_MAX_ENTRIES 64u

enum hyperv_feature {
    HV_RELAXED,
    HV_VAPIC,
    HV_VPINDEX,
    HV_RUNTIME,
    HV_TIME,
    HV_SYNIC,
    HV_STIMER,
    HV_STIMER_DIRECT,
    HV_FREQUENCIES,
    HV_REENLIGHTENMENT,
    HV_TLBFLUSH,
    HV_IPI,
    HV_EVMCS,
    HV_FEATURE_COUNT
};
#define HV_BIT(f) (1u << (f))

struct hyperv_feature_info {
    const char *name;      /* as --hyperv spells it */
    const char *what;      /* one line for --help and docs */
    uint32_t features_eax; /* leaf 0x40000003 EAX (privileges) */
    uint32_t features_edx; /* leaf 0x40000003 EDX (feature flags) */
    uint32_t hints_eax;    /* leaf 0x40000004 EAX (recommendations) */
    uint32_t needs;        /* HV_BIT()s it depends on */
    long kvm_cap;          /* the KVM capability it needs beyond KVM_CAP_HYPERV; 0: none */
    const char *cap_name;
};
extern const struct hyperv_feature_info hyperv_features[HV_FEATURE_COUNT];

/* The preset for Windows guests, and for Hyper-V ones with evmcs added. */
#define HYPERV_PRESET_WINDOWS                                                                      \
    (HV_BIT(HV_RELAXED) | HV_BIT(HV_VAPIC) | HV_BIT(HV_VPINDEX) | HV_BIT(HV_RUNTIME) |             \
     HV_BIT(HV_TIME) | HV_BIT(HV_SYNIC) | HV_BIT(HV_STIMER) | HV_BIT(HV_FREQUENCIES) |             \
     HV_BIT(HV_REENLIGHTENMENT) | HV_BIT(HV_TLBFLUSH) | HV_BIT(HV_IPI))

/* Parses a comma-separated list of names and presets ("windows") into *set (added to it).
 * Fails naming the unknown name. Dependencies are not checked here. */
int hyperv_parse(const char *list, uint32_t *set);
/* 0 when every enlightenment in set has those it needs; else -EINVAL naming the first pair. */
int hyperv_check_needs(uint32_t set);
/* "relaxed,vapic,..." for set into buf (truncated to size); "none" when empty. */
const char *hyperv_names(uint32_t set, char *buf, size_t size);

struct hyperv_cpuid_options {
    bool hyperv;       /* the Hyper-V leaves, with set */
    uint32_t set;      /* HV_BIT()s */
    bool kvm_hidden;   /* drop KVM's own leaves */
    unsigned max_cpus; /* leaf 0x40000005: the most virtual processors */
};

/* Writes base's entries (a vCPU table from KVM_GET_SUPPORTED_CPUID) with KVM's hypervisor
 * range moved to HYPERV_CPUID_KVM_BASE (or dropped when hidden), then, with hyperv, the
 * Hyper-V leaves for set, into out (max entries); *out_n receives the count. */
int hyperv_cpuid_build(const struct kvm_cpuid_entry2 *base, unsigned base_n,
                       const struct hyperv_cpuid_options *options, struct kvm_cpuid_entry2 *out,
                       unsigned max, unsigned *out_n);

/* Where a table has KVM's signature ("KVMKVMKVM"): 0x40000000, 0x40000100, or 0 (hidden). */
uint32_t hyperv_kvm_base(const struct kvm_cpuid_entry2 *entries, unsigned n);
/* Whether a table carries the Hyper-V interface ("Hv#1" in leaf 0x40000001). */
bool hyperv_present(const struct kvm_cpuid_entry2 *entries, unsigned n);
/* The enlightenments a table gives: each whose bits are all set (0 without Hyper-V). */
uint32_t hyperv_decode(const struct kvm_cpuid_entry2 *entries, unsigned n);
/* What a host offers, from KVM_GET_SUPPORTED_HV_CPUID's leaves and has_cap(cap) for each
 * feature's capability: each whose feature bits (leaf 0x40000003) are all among the host's and
 * whose cap is there. Hints are not asked: they are advice, and KVM's abilities behind them
 * are capabilities. With no_cap, also the features left out for their capability alone. */
uint32_t hyperv_offered(const struct kvm_cpuid_entry2 *hv, unsigned hv_n,
                        bool (*has_cap)(long cap, void *ctx), void *ctx, uint32_t *no_cap);

/* Answers a KVM_EXIT_HYPERV in place: a SynIC MSR write needs nothing (SynIC lives in KVM;
 * tern has no VMBus), a hypercall KVM leaves to userspace gets HV_STATUS_INVALID_HYPERCALL_CODE
 * (tern implements none), a SynDbg exit (never offered) is let go. */
void hyperv_exit_answer(struct kvm_hyperv_exit *exit);
#define HYPERV_STATUS_INVALID_HYPERCALL_CODE 2u

/* The eVMCS version range a table advertises (leaf 0x4000000A EAX[15:0]); 0 when none. */
unsigned hyperv_cpuid_evmcs_version(const struct kvm_cpuid_entry2 *entries, unsigned n);

/* The Hyper-V MSRs a guest with set may use, in the order KVM must take them back (the reason
 * beside each in hyperv_cpuid.c); at most HYPERV_MSR_MAX. KVM_GET_MSR_INDEX_LIST names only
 * some of them (not SIEFP, SIMP, the SINTs or stimers 1-3, nor any stimer count). */
#define HYPERV_MSR_MAX 48u
unsigned hyperv_msrs(uint32_t set, uint32_t out[HYPERV_MSR_MAX]);
/* Whether msr is in the Hyper-V synthetic range (0x40000000-0x400001ff). */
bool hyperv_msr(uint32_t msr);

#endif
