/* kvm: the KVM API as typed calls, one wrapper per ioctl (system-wide ones here; kvm_vm.h and
 * kvm_vcpu.h for a VM's and a vCPU's). Each returns 0 or -errno with a message that names the
 * ioctl and what it was about (the vCPU, chip, memory slot or MSR).
 *
 * Every ioctl tern issues goes through kvm_ioctl(), whose backend a test may replace: the
 * restore-order test records the calls a restore makes, with no /dev/kvm at all.
 */
#ifndef TERN_KVM_H
#define TERN_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvm_backend {
    /* As ioctl(2): the result, or -1 with errno set. */
    int (*ioctl)(void *opaque, int fd, unsigned long request, void *arg);
    void *opaque;
};

/* Replaces the backend for the whole process (tests only); NULL brings back ioctl(2). */
void kvm_set_backend(const struct kvm_backend *backend);
/* ioctl(2) through the backend. */
int kvm_ioctl(int fd, unsigned long request, void *arg);

/* Opens /dev/kvm (O_CLOEXEC) and checks its API version. */
int kvm_open(int *fd);
/* KVM_CHECK_EXTENSION: the capability's value, 0 when absent. */
int kvm_check_extension(int kvm_fd, long cap);
int kvm_create_vm(int kvm_fd, int *vm_fd);
int kvm_vcpu_mmap_size(int kvm_fd, size_t *size);

/* KVM_GET_SUPPORTED_CPUID into a malloc'd table of at most max entries (grown on E2BIG). */
int kvm_supported_cpuid(int kvm_fd, unsigned max, struct kvm_cpuid2 **out);
/* KVM_GET_SUPPORTED_HV_CPUID on fd (/dev/kvm, or a vCPU on older hosts; where names it). */
int kvm_supported_hv_cpuid(int fd, const char *where, unsigned max, struct kvm_cpuid2 **out);
/* KVM_GET_MSR_INDEX_LIST, or with feature KVM_GET_MSR_FEATURE_INDEX_LIST, malloc'd; refused
 * beyond max entries. */
int kvm_msr_index_list(int kvm_fd, bool feature, uint32_t max, struct kvm_msr_list **out);
/* KVM_GET_MSRS on /dev/kvm: the host's feature MSRs. Every entry must read. */
int kvm_get_feature_msrs(int kvm_fd, struct kvm_msrs *msrs);

#endif
