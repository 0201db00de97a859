#include "vcpu/vcpu_cpuid.h"

#include <string.h>

#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT (1u << 28)
#define CPUID_1_ECX_VMX (1u << 5)

void vcpu_cpuid_build(const struct kvm_cpuid_entry2 *supported, unsigned n, unsigned vcpu_index,
                      unsigned vcpu_count, bool vmx, struct kvm_cpuid_entry2 *out)
{
    memcpy(out, supported, n * sizeof(*out));
    for (unsigned i = 0; i < n; i++) {
        struct kvm_cpuid_entry2 *e = &out[i];
        switch (e->function) {
        case 1:
            e->ecx |= CPUID_1_ECX_HYPERVISOR;
            if (!vmx)
                e->ecx &= ~CPUID_1_ECX_VMX;
            e->ebx = (e->ebx & 0x0000ffffu) | (vcpu_index << 24) | ((vcpu_count & 0xff) << 16);
            if (vcpu_count > 1)
                e->edx |= CPUID_1_EDX_HTT;
            break;
        case 0xb:
        case 0x1f:
            e->edx = vcpu_index;
            break;
        default:
            break;
        }
    }
}

bool vcpu_cpuid_has_vmx(const struct kvm_cpuid2 *cpuid)
{
    for (uint32_t i = 0; i < cpuid->nent; i++)
        if (cpuid->entries[i].function == 1)
            return cpuid->entries[i].ecx & CPUID_1_ECX_VMX;
    return false;
}
