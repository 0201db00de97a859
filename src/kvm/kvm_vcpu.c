#include "kvm/kvm_vcpu.h"

#include "err/err.h"
#include "kvm/kvm.h"

#include <errno.h>

static int kvm_vcpu_call(int fd, unsigned index, unsigned long request, const void *arg,
                         const char *name)
{
    if (kvm_ioctl(fd, request, (void *)arg) < 0)
        return err_sys(-errno, "%s on vCPU %u", name, index);
    return 0;
}

/* The plain getters and setters: a pointer to the structure KVM reads or fills. */
#define KVM_VCPU_GET(fn, REQUEST, type)                                                            \
    int kvm_vcpu_get_##fn(int fd, unsigned index, type *arg)                                       \
    {                                                                                              \
        return kvm_vcpu_call(fd, index, REQUEST, arg, #REQUEST);                                   \
    }
#define KVM_VCPU_SET(fn, REQUEST, type)                                                            \
    int kvm_vcpu_set_##fn(int fd, unsigned index, const type *arg)                                 \
    {                                                                                              \
        return kvm_vcpu_call(fd, index, REQUEST, arg, #REQUEST);                                   \
    }

KVM_VCPU_GET(mp_state, KVM_GET_MP_STATE, struct kvm_mp_state)
KVM_VCPU_SET(mp_state, KVM_SET_MP_STATE, struct kvm_mp_state)
KVM_VCPU_GET(events, KVM_GET_VCPU_EVENTS, struct kvm_vcpu_events)
KVM_VCPU_SET(events, KVM_SET_VCPU_EVENTS, struct kvm_vcpu_events)
KVM_VCPU_GET(regs, KVM_GET_REGS, struct kvm_regs)
KVM_VCPU_SET(regs, KVM_SET_REGS, struct kvm_regs)
KVM_VCPU_GET(sregs, KVM_GET_SREGS, struct kvm_sregs)
KVM_VCPU_SET(sregs, KVM_SET_SREGS, struct kvm_sregs)
KVM_VCPU_GET(sregs2, KVM_GET_SREGS2, struct kvm_sregs2)
KVM_VCPU_SET(sregs2, KVM_SET_SREGS2, struct kvm_sregs2)
KVM_VCPU_GET(xcrs, KVM_GET_XCRS, struct kvm_xcrs)
KVM_VCPU_SET(xcrs, KVM_SET_XCRS, struct kvm_xcrs)
KVM_VCPU_GET(lapic, KVM_GET_LAPIC, struct kvm_lapic_state)
KVM_VCPU_SET(lapic, KVM_SET_LAPIC, struct kvm_lapic_state)
KVM_VCPU_GET(debugregs, KVM_GET_DEBUGREGS, struct kvm_debugregs)
KVM_VCPU_SET(debugregs, KVM_SET_DEBUGREGS, struct kvm_debugregs)
KVM_VCPU_SET(cpuid2, KVM_SET_CPUID2, struct kvm_cpuid2)
KVM_VCPU_GET(cpuid2, KVM_GET_CPUID2, struct kvm_cpuid2)
KVM_VCPU_GET(nested_state, KVM_GET_NESTED_STATE, struct kvm_nested_state)

int kvm_vcpu_run(int fd)
{
    return kvm_ioctl(fd, KVM_RUN, NULL);
}

int kvm_vcpu_get_xsave(int fd, unsigned index, bool xsave2, void *buf)
{
    if (xsave2)
        return kvm_vcpu_call(fd, index, KVM_GET_XSAVE2, buf, "KVM_GET_XSAVE2");
    return kvm_vcpu_call(fd, index, KVM_GET_XSAVE, buf, "KVM_GET_XSAVE");
}

int kvm_vcpu_set_xsave(int fd, unsigned index, const void *buf)
{
    return kvm_vcpu_call(fd, index, KVM_SET_XSAVE, buf, "KVM_SET_XSAVE");
}

int kvm_vcpu_get_tsc_khz(int fd, unsigned index, uint32_t *khz)
{
    int r = kvm_ioctl(fd, KVM_GET_TSC_KHZ, NULL);
    if (r <= 0)
        return err_sys(r < 0 ? -errno : -EINVAL, "KVM_GET_TSC_KHZ on vCPU %u", index);
    *khz = (uint32_t)r;
    return 0;
}

int kvm_vcpu_set_tsc_khz(int fd, unsigned index, uint32_t khz)
{
    if (kvm_ioctl(fd, KVM_SET_TSC_KHZ, (void *)(uintptr_t)khz) < 0)
        return err_sys(-errno, "KVM_SET_TSC_KHZ %u on vCPU %u", khz, index);
    return 0;
}

int kvm_vcpu_get_msrs(int fd, unsigned index, struct kvm_msrs *msrs, uint32_t *got)
{
    int n = kvm_ioctl(fd, KVM_GET_MSRS, msrs);
    if (n < 0)
        return err_sys(-errno, "KVM_GET_MSRS on vCPU %u", index);
    *got = (uint32_t)n;
    return 0;
}

int kvm_vcpu_set_msrs(int fd, unsigned index, const struct kvm_msrs *msrs)
{
    if (!msrs->nmsrs)
        return 0;
    int n = kvm_ioctl(fd, KVM_SET_MSRS, (void *)msrs);
    if (n < 0)
        return err_sys(-errno, "KVM_SET_MSRS on vCPU %u", index);
    if ((uint32_t)n < msrs->nmsrs)
        return err_set(-EINVAL, "vCPU %u: KVM rejected MSR 0x%x = 0x%llx", index,
                       msrs->entries[n].index, (unsigned long long)msrs->entries[n].data);
    return 0;
}

int kvm_vcpu_set_nested_state(int fd, unsigned index, const struct kvm_nested_state *state)
{
    if (kvm_ioctl(fd, KVM_SET_NESTED_STATE, (void *)state) < 0)
        return err_sys(-errno, "KVM_SET_NESTED_STATE on vCPU %u refused its nested state", index);
    return 0;
}

int kvm_vcpu_enable_evmcs(int fd, unsigned index, uint16_t *version)
{
    struct kvm_enable_cap cap = {.cap = KVM_CAP_HYPERV_ENLIGHTENED_VMCS,
                                 .args = {(uint64_t)(uintptr_t)version}};
    if (kvm_ioctl(fd, KVM_ENABLE_CAP, &cap) < 0)
        return err_sys(-errno, "KVM_ENABLE_CAP(KVM_CAP_HYPERV_ENLIGHTENED_VMCS) on vCPU %u", index);
    return 0;
}

int kvm_vcpu_enable_cap(int fd, unsigned index, uint32_t cap, const char *name)
{
    struct kvm_enable_cap c = {.cap = cap};
    if (kvm_ioctl(fd, KVM_ENABLE_CAP, &c) < 0)
        return err_sys(-errno, "KVM_ENABLE_CAP(%s) on vCPU %u", name, index);
    return 0;
}
