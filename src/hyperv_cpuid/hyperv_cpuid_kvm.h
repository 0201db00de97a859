/* hyperv_cpuid_kvm: the Hyper-V leaves the host's KVM can offer (KVM_GET_SUPPORTED_HV_CPUID),
 * the input hyperv_cpuid_build turns into a guest's table.
 */
#ifndef TERN_HYPERV_CPUID_KVM_H
#define TERN_HYPERV_CPUID_KVM_H

#include <linux/kvm.h>

#define HYPERV_CPUID_MAX_ENTRIES 64u

/* The system ioctl where KVM_CAP_SYS_HYPERV_CPUID is offered, else the one on vcpu_fd (which
 * must have eVMCS enabled already for the eVMCS leaf to show); the buffer grows on E2BIG. *out
 * is malloc'd. Refused, naming KVM_CAP_HYPERV_CPUID, where neither is offered. */
int hyperv_cpuid_supported(int kvm_fd, int vcpu_fd, struct kvm_cpuid2 **out);

#endif
