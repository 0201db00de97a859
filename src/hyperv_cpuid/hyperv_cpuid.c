#include "hyperv_cpuid/hyperv_cpuid.h"

#include "err/err.h"

#include <errno.h>
#include <string.h>

/* KVM's hypervisor range in a table from KVM_GET_SUPPORTED_CPUID. */
#define KVM_RANGE_FIRST 0x40000000u
#define KVM_RANGE_LAST 0x400000ffu
#define HYPERV_RANGE_LAST 0x400000ffu

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid_entry2 *e, unsigned n,
                                           uint32_t function)
{
    for (unsigned i = 0; i < n; i++)
        if (e[i].function == function)
            return &e[i];
    return NULL;
}

int hyperv_cpuid_build(const struct kvm_cpuid_entry2 *base, unsigned base_n,
                       const struct kvm_cpuid_entry2 *hv, unsigned hv_n,
                       const struct hyperv_cpuid_options *options, struct kvm_cpuid_entry2 *out,
                       unsigned max, unsigned *out_n)
{
    if (!find(hv, hv_n, HYPERV_CPUID_VENDOR_LEAF))
        return err_set(-ENOENT, "KVM_GET_SUPPORTED_HV_CPUID: no leaf 0x%x",
                       HYPERV_CPUID_VENDOR_LEAF);
    if (options->evmcs && !find(hv, hv_n, HYPERV_CPUID_NESTED_FEATURES))
        return err_set(-ENOENT,
                       "KVM_GET_SUPPORTED_HV_CPUID: no leaf 0x%x (nested features), "
                       "which eVMCS needs",
                       HYPERV_CPUID_NESTED_FEATURES);
    unsigned n = 0;
    for (unsigned i = 0; i < base_n; i++) {
        if (n == max)
            return err_set(-E2BIG, "CPUID: more than %u entries with the Hyper-V leaves", max);
        out[n] = base[i];
        /* KVM's leaves move up a range; KVM and Linux look for the signature at every 0x100. */
        if (base[i].function >= KVM_RANGE_FIRST && base[i].function <= KVM_RANGE_LAST) {
            out[n].function += HYPERV_CPUID_KVM_BASE - KVM_RANGE_FIRST;
            if (base[i].function == KVM_RANGE_FIRST && out[n].eax >= KVM_RANGE_FIRST &&
                out[n].eax <= KVM_RANGE_LAST)
                out[n].eax += HYPERV_CPUID_KVM_BASE - KVM_RANGE_FIRST;
        }
        n++;
    }
    for (unsigned i = 0; i < hv_n; i++) {
        if (hv[i].function < HYPERV_CPUID_VENDOR_LEAF || hv[i].function > HYPERV_RANGE_LAST)
            continue;
        if (n == max)
            return err_set(-E2BIG, "CPUID: more than %u entries with the Hyper-V leaves", max);
        struct kvm_cpuid_entry2 e = hv[i];
        switch (e.function) {
        case HYPERV_CPUID_VENDOR_LEAF:
            memcpy(&e.ebx, "Micr", 4);
            memcpy(&e.ecx, "osof", 4);
            memcpy(&e.edx, "t Hv", 4);
            break;
        case HYPERV_CPUID_RECOMMENDATIONS:
            e.eax = options->evmcs ? e.eax | HYPERV_EVMCS_RECOMMENDED
                                   : e.eax & ~HYPERV_EVMCS_RECOMMENDED;
            break;
        case HYPERV_CPUID_NESTED_FEATURES:
            e.eax = (e.eax & ~HYPERV_EVMCS_VERSION_MASK) |
                    (options->evmcs ? HYPERV_EVMCS_VERSION_1 : 0);
            break;
        default:
            break;
        }
        out[n++] = e;
    }
    *out_n = n;
    return 0;
}

unsigned hyperv_cpuid_evmcs_version(const struct kvm_cpuid_entry2 *entries, unsigned n)
{
    const struct kvm_cpuid_entry2 *vendor = find(entries, n, HYPERV_CPUID_VENDOR_LEAF);
    const struct kvm_cpuid_entry2 *nested = find(entries, n, HYPERV_CPUID_NESTED_FEATURES);
    if (!vendor || !nested || memcmp(&vendor->ebx, "Micr", 4))
        return 0;
    return nested->eax & HYPERV_EVMCS_VERSION_MASK;
}
