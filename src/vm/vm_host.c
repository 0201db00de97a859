/* What this host offers a VM arriving by migration (vm.h: vm_host_offer). */
#include "err/err.h"
#include "kvm/kvm.h"
#include "kvm/kvm_host.h"
#include "kvm/kvm_vcpu.h"
#include "kvm/kvm_vm.h"
#include "vcpu/vcpu_cpuid.h"
#include "vm/vm.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* The CPUID table a vCPU of this host gets when asked for all KVM supports. */
static int vm_host_cpuid(const struct kvm_host *host, struct kvm_cpuid2 **out)
{
    struct kvm_cpuid2 *supported = NULL, *got = NULL;
    int vm_fd = -1, vcpu_fd = -1;
    int rc = kvm_supported_cpuid(host->fd, VCPU_CPUID_MAX_ENTRIES, &supported);
    if (!rc && (rc = kvm_create_vm(host->fd, &vm_fd)))
        err_context(rc, "a probe VM");
    if (!rc && (rc = kvm_vm_create_vcpu(vm_fd, 0, &vcpu_fd)))
        err_context(rc, "a probe VM");
    if (!rc && !(got = calloc(1, sizeof(*got) + VCPU_CPUID_MAX_ENTRIES * sizeof(got->entries[0]))))
        rc = err_set(-ENOMEM, "out of memory");
    if (!rc && !(rc = kvm_vcpu_set_cpuid2(vcpu_fd, 0, supported))) {
        got->nent = VCPU_CPUID_MAX_ENTRIES;
        rc = kvm_vcpu_get_cpuid2(vcpu_fd, 0, got);
    }
    if (vcpu_fd >= 0)
        close(vcpu_fd);
    if (vm_fd >= 0)
        close(vm_fd);
    free(supported);
    if (rc) {
        free(got);
        return rc;
    }
    *out = got;
    return 0;
}

int vm_host_offer(unsigned hidden_caps, struct vm_host_offer *out)
{
    const struct kvm_host *host;
    out->cpuid = NULL;
    int rc = kvm_host(&host);
    if (!rc)
        rc = vm_host_nested(hidden_caps, &out->nested);
    if (!rc)
        rc = vm_host_cpuid(host, &out->cpuid);
    out->xsave_size = rc ? 0 : host->xsave_size;
    return rc;
}
