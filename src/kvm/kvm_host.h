/* kvm_host: what this host's KVM offers, asked once per process (the first caller opens
 * /dev/kvm and probes; every later one gets the same answer, a failure included). The fd stays
 * open for the life of the process: VMs are created on it.
 */
#ifndef TERN_KVM_HOST_H
#define TERN_KVM_HOST_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#define KVM_HOST_MAX_MSRS 4096u /* the most MSRs tern carries per vCPU */
#define KVM_XSAVE_LEGACY_SIZE 4096u

struct kvm_host {
    int fd;
    bool irqchip, pit2, immediate_exit, user_memory; /* what every VM needs */
    int max_vcpus;                                   /* KVM_CAP_MAX_VCPUS; 0 when not said */
    bool xsave2;                                     /* KVM_CAP_XSAVE2 */
    uint32_t xsave_size;             /* KVM_CAP_XSAVE2's size, KVM_XSAVE_LEGACY_SIZE without it */
    bool xcrs, sregs2;               /* KVM_CAP_XCRS, KVM_CAP_SREGS2 */
    uint32_t nested_state;           /* KVM_CAP_NESTED_STATE: the largest nested state; 0: none */
    bool evmcs;                      /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
    uint32_t dirty_log;              /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2's flags; 0: none */
    bool hyperv_cpuid;               /* KVM_CAP_HYPERV_CPUID (the vCPU ioctl) */
    bool sys_hyperv_cpuid;           /* KVM_CAP_SYS_HYPERV_CPUID (the /dev/kvm ioctl) */
    bool hyperv_enforce_cpuid;       /* KVM_CAP_HYPERV_ENFORCE_CPUID */
    bool tsc_control;                /* KVM_CAP_TSC_CONTROL: KVM_SET_TSC_KHZ may scale */
    const struct kvm_msr_list *msrs; /* KVM_GET_MSR_INDEX_LIST */
};

int kvm_host(const struct kvm_host **out);

#endif
