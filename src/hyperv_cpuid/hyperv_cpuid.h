/* hyperv_cpuid: the CPUID table of a guest that sees Hyper-V enlightenments (--hyperv), built
 * purely from a vCPU's ordinary table and KVM_GET_SUPPORTED_HV_CPUID's leaves.
 *
 * The Hyper-V leaves take 0x40000000 onwards, with the vendor "Microsoft Hv"; KVM's own leaves
 * (signature "KVMKVMKVM", PV features) move to 0x40000100, where Linux and KVM still find them.
 * With eVMCS, leaf 0x4000000A advertises enlightened VMCS version 1 only (fixed, whatever the
 * host offers beyond it, so that streams stay portable between hosts) and leaf 0x40000004
 * recommends using it; without, both say nothing of eVMCS.
 */
#ifndef TERN_HYPERV_CPUID_H
#define TERN_HYPERV_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#define HYPERV_CPUID_VENDOR_LEAF 0x40000000u
#define HYPERV_CPUID_RECOMMENDATIONS 0x40000004u
#define HYPERV_CPUID_NESTED_FEATURES 0x4000000au
#define HYPERV_CPUID_KVM_BASE 0x40000100u
#define HYPERV_EVMCS_RECOMMENDED (1u << 14)
/* EAX[7:0] the oldest and EAX[15:8] the newest eVMCS version: 1 and 1. */
#define HYPERV_EVMCS_VERSION_1 0x0101u
#define HYPERV_EVMCS_VERSION_MASK 0xffffu
/* The most leaves KVM_GET_SUPPORTED_HV_CPUID is asked for. */
#define HYPERV_CPUID_MAX_ENTRIES 64u

struct hyperv_cpuid_options {
    bool evmcs;
};

/* Writes base's entries with KVM's hypervisor range moved to HYPERV_CPUID_KVM_BASE, then the
 * Hyper-V leaves of hv, into out (max entries); *out_n receives the count. Fails, naming the
 * leaf, when hv lacks the vendor or nested-features leaf, or when out is too small. */
int hyperv_cpuid_build(const struct kvm_cpuid_entry2 *base, unsigned base_n,
                       const struct kvm_cpuid_entry2 *hv, unsigned hv_n,
                       const struct hyperv_cpuid_options *options, struct kvm_cpuid_entry2 *out,
                       unsigned max, unsigned *out_n);

/* The eVMCS version range a table advertises (leaf 0x4000000A EAX[15:0]); 0 when none. */
unsigned hyperv_cpuid_evmcs_version(const struct kvm_cpuid_entry2 *entries, unsigned n);

#endif
