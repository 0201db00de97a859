#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vcpu/vcpu_cpuid.h"

/* A small table shaped like KVM_GET_SUPPORTED_CPUID's answer on an Intel host. */
static const struct kvm_cpuid_entry2 supported[] = {
    {.function = 0, .eax = 0x1f, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69},
    {.function = 1, .eax = 0x000306c3, .ebx = 0x00000800, .ecx = 0x7ffafbff, .edx = 0xbfebfbff},
    {.function = 0xb,
     .index = 0,
     .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
     .eax = 1,
     .ebx = 1,
     .ecx = 0x100,
     .edx = 0},
    {.function = 0xb,
     .index = 1,
     .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
     .eax = 4,
     .ebx = 4,
     .ecx = 0x201,
     .edx = 0},
    {.function = 0x1f, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .edx = 0},
    {.function = 0x40000000, .eax = 0x40000001, .ebx = 0x4b4d564b, .ecx = 0x564b4d56, .edx = 0x4d},
};
#define N (sizeof(supported) / sizeof(supported[0]))

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid_entry2 *t, uint32_t fn,
                                           uint32_t idx)
{
    for (unsigned i = 0; i < N; i++)
        if (t[i].function == fn && t[i].index == idx)
            return &t[i];
    return NULL;
}

Test(cpuid, sets_hypervisor_bit_and_apic_ids)
{
    struct kvm_cpuid_entry2 out[N];
    vcpu_cpuid_build(supported, N, 3, 4, true, out);
    const struct kvm_cpuid_entry2 *l1 = find(out, 1, 0);
    cr_assert(l1->ecx & (1u << 31), "hypervisor bit");
    cr_assert_eq(l1->ebx >> 24, 3, "initial APIC id");
    cr_assert_eq((l1->ebx >> 16) & 0xff, 4, "logical processor count");
    cr_assert_eq(l1->ebx & 0xffff, 0x0800, "CLFLUSH size and brand kept");
    cr_assert(l1->edx & (1u << 28), "HTT with several vCPUs");
    cr_assert_eq(find(out, 0xb, 0)->edx, 3);
    cr_assert_eq(find(out, 0xb, 1)->edx, 3);
    cr_assert_eq(find(out, 0x1f, 0)->edx, 3);
}

Test(cpuid, leaves_other_leaves_alone)
{
    struct kvm_cpuid_entry2 out[N];
    vcpu_cpuid_build(supported, N, 0, 1, true, out);
    cr_assert_eq(memcmp(find(out, 0, 0), &supported[0], sizeof(supported[0])), 0);
    cr_assert_eq(memcmp(find(out, 0x40000000, 0), &supported[5], sizeof(supported[5])), 0);
    cr_assert_eq(find(out, 1, 0)->ecx, supported[1].ecx | (1u << 31));
    cr_assert_eq(find(out, 1, 0)->edx, supported[1].edx, "no HTT change with one vCPU");
}

Test(cpuid, vmx_only_when_asked_for)
{
    struct kvm_cpuid_entry2 out[N];
    cr_assert(supported[1].ecx & (1u << 5), "the input offers VMX, as KVM does with nested=1");
    vcpu_cpuid_build(supported, N, 0, 1, false, out);
    cr_assert_eq(find(out, 1, 0)->ecx, (supported[1].ecx | (1u << 31)) & ~(1u << 5));
    struct kvm_cpuid2 *t = calloc(1, sizeof(*t) + sizeof(out));
    cr_assert_not_null(t);
    t->nent = N;
    memcpy(t->entries, out, sizeof(out));
    cr_assert_not(vcpu_cpuid_has_vmx(t));
    vcpu_cpuid_build(supported, N, 0, 1, true, t->entries);
    cr_assert(vcpu_cpuid_has_vmx(t));
    free(t);
}
