/* What this host offers a VM arriving by migration (vm.h: vm_host_offer). */
#include "err/err.h"
#include "kvm/kvm.h"
#include "kvm/kvm_host.h"
#include "kvm/kvm_vcpu.h"
#include "kvm/kvm_vm.h"
#include "vcpu/vcpu_cpuid.h"
#include "vm/vm.h"
#include "vm/vm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The CPUID table a vCPU of this host gets when asked for all KVM supports, its TSC rate, and
 * the Hyper-V enlightenments offered (asked of its vCPU where KVM has only that ioctl). */
static int vm_host_cpuid(const struct kvm_host *host, unsigned hidden_caps,
                         struct vm_host_offer *offer)
{
    struct kvm_cpuid2 **out = &offer->cpuid;
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
    if (!rc && kvm_vcpu_get_tsc_khz(vcpu_fd, 0, &offer->tsc_khz))
        offer->tsc_khz = 0;
    struct kvm_cpuid2 *hv = NULL;
    if (!rc && !vm_cpu_hv_leaves(host, vcpu_fd, &hv)) {
        offer->hyperv_set = vm_cpu_hyperv_offered(host, hidden_caps, hv, NULL);
        offer->hyperv = offer->hyperv_set != 0;
    }
    err_clear();
    free(hv);
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
    memset(out, 0, sizeof(*out));
    int rc = kvm_host(&host);
    if (!rc)
        rc = vm_host_nested(hidden_caps, &out->nested);
    if (!rc)
        rc = vm_host_cpuid(host, hidden_caps, out);
    /* The VMX capability MSRs a guest may be given here: none without VMX. They are asked
     * whatever KVM_CAP_NESTED_STATE says (hidden or not): a guest given VMX that never entered
     * VMX operation needs no nested state, but its MSRs are restored all the same. */
    if (!rc && vm_cpu_vmx_msrs(host, hidden_caps, &out->vmx)) {
        err_clear();
        out->vmx = NULL;
    }
    out->xsave_size = rc ? 0 : host->xsave_size;
    out->tsc_scaling = !rc && host->tsc_control;
    if (rc)
        vm_host_offer_free(out);
    return rc;
}

void vm_host_offer_free(struct vm_host_offer *offer)
{
    free(offer->cpuid);
    free(offer->vmx);
    offer->cpuid = NULL;
    offer->vmx = NULL;
}
