#include "hyperv_cpuid/hyperv_cpuid_kvm.h"

#include "err/err.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/ioctl.h>

int hyperv_cpuid_supported(int kvm_fd, int vcpu_fd, struct kvm_cpuid2 **out)
{
    int fd;
    const char *where;
    if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYS_HYPERV_CPUID) > 0) {
        fd = kvm_fd;
        where = "/dev/kvm";
    } else if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_HYPERV_CPUID) > 0) {
        fd = vcpu_fd;
        where = "a vCPU";
    } else {
        return err_set(-ENOTSUP, "--hyperv: host KVM offers no Hyper-V CPUID "
                                 "(KVM_CAP_HYPERV_CPUID, KVM_CAP_SYS_HYPERV_CPUID)");
    }
    for (unsigned nent = 16; nent <= HYPERV_CPUID_MAX_ENTRIES; nent *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
        if (!c)
            return err_set(-ENOMEM, "out of memory");
        c->nent = nent;
        if (ioctl(fd, KVM_GET_SUPPORTED_HV_CPUID, c) == 0) {
            *out = c;
            return 0;
        }
        int rc = -errno;
        free(c);
        if (rc != -E2BIG)
            return err_sys(rc, "KVM_GET_SUPPORTED_HV_CPUID on %s", where);
    }
    return err_set(-E2BIG, "KVM_GET_SUPPORTED_HV_CPUID offers more than %u entries",
                   HYPERV_CPUID_MAX_ENTRIES);
}
