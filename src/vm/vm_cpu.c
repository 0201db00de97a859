#include "vm/vm_cpu.h"

#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"
#include "hyperv_cpuid/hyperv_cpuid_kvm.h"
#include "nested/nested_kvm.h"
#include "vcpu/vcpu.h"
#include "vcpu/vcpu_cpuid.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

/* Refuses what this host cannot give, before any vCPU is touched. */
static int vm_cpu_check(const struct vm *vm, const struct vm_config *cfg,
                        const struct kvm_cpuid2 *supported)
{
    const struct vm_host_nested *host = vm_nested_caps(vm);
    if (cfg->nested && !vcpu_cpuid_has_vmx(supported))
        return err_set(-ENOTSUP, "--nested: host KVM offers no nested VMX (kvm_intel nested=0, "
                                 "or not VT-x)");
    if (cfg->nested && !host->nested_max)
        return err_set(-ENOTSUP,
                       "--nested: host KVM cannot save nested state (KVM_CAP_NESTED_STATE is 0%s), "
                       "so the guest could be neither snapshotted nor migrated",
                       cfg->hidden_caps & VM_HIDE_NESTED_STATE ? ", hidden by --hide-cap" : "");
    if (cfg->evmcs && !(cfg->nested && cfg->hyperv))
        return err_set(-EINVAL, "--hyperv=evmcs needs --nested: an enlightened VMCS is a VMX "
                                "feature");
    if (cfg->evmcs && !host->evmcs)
        return err_set(-ENOTSUP, "--hyperv=evmcs: host KVM lacks KVM_CAP_HYPERV_ENLIGHTENED_VMCS%s",
                       cfg->hidden_caps & VM_HIDE_EVMCS ? " (hidden by --hide-cap)" : "");
    return 0;
}

/* VMX capability MSRs first, then feature control: KVM refuses changes to the capability MSRs
 * once the vCPU is in VMX operation, and checks VMXON against feature control. */
static int vm_cpu_set_vmx_msrs(struct vm *vm, unsigned i, const struct kvm_msr_entry *vmx,
                               unsigned nvmx)
{
    struct kvm_msrs *m = calloc(1, sizeof(*m) + (nvmx + 1) * sizeof(m->entries[0]));
    if (!m)
        return err_set(-ENOMEM, "out of memory");
    memcpy(m->entries, vmx, nvmx * sizeof(vmx[0]));
    m->entries[nvmx] = (struct kvm_msr_entry){.index = NESTED_MSR_FEATURE_CONTROL,
                                              .data = NESTED_FEATURE_CONTROL_LOCKED |
                                                      NESTED_FEATURE_CONTROL_VMXON_OUTSIDE_SMX};
    m->nmsrs = nvmx + 1;
    int rc = vcpu_set_msrs_fd(vm_vcpu_fd(vm, i), i, m);
    free(m);
    return rc ? err_context(rc, "--nested") : 0;
}

int vm_cpu_setup(struct vm *vm, const struct vm_config *cfg)
{
    int kvm = vm_kvm_fd(vm);
    struct kvm_cpuid2 *supported = NULL, *hv = NULL, *table = NULL;
    struct kvm_cpuid_entry2 *base = NULL;
    struct kvm_msr_entry vmx[NESTED_VMX_MSR_MAX];
    unsigned nvmx = 0;
    int rc = vcpu_cpuid_supported(kvm, &supported);
    if (!rc)
        rc = vm_cpu_check(vm, cfg, supported);
    if (!rc && cfg->nested && (rc = nested_kvm_vmx_msrs(kvm, vmx, &nvmx)))
        err_context(rc, "--nested");
    /* eVMCS before the Hyper-V leaves are asked for: the per-vCPU KVM_GET_SUPPORTED_HV_CPUID
     * (older hosts) shows the eVMCS leaf only on a vCPU that has it enabled. KVM does not mind
     * whether it comes before or after the CPUID table. */
    for (unsigned i = 0; cfg->evmcs && i < vm_cpu_count(vm) && !rc; i++)
        rc = vm_enable_evmcs(vm, i, NULL);
    if (!rc && cfg->hyperv)
        rc = hyperv_cpuid_supported(kvm, vm_vcpu_fd(vm, 0), &hv);
    if (!rc &&
        !(table = calloc(1, sizeof(*table) + VCPU_CPUID_MAX_ENTRIES * sizeof(table->entries[0]))))
        rc = err_set(-ENOMEM, "out of memory");
    /* With --hyperv the ordinary table is only hyperv_cpuid_build's input. */
    if (!rc && hv && !(base = malloc(supported->nent * sizeof(base[0]))))
        rc = err_set(-ENOMEM, "out of memory");
    for (unsigned i = 0; i < vm_cpu_count(vm) && !rc; i++) {
        vcpu_cpuid_build(supported->entries, supported->nent, i, vm_cpu_count(vm), cfg->nested,
                         hv ? base : table->entries);
        table->nent = supported->nent;
        if (hv) {
            struct hyperv_cpuid_options opt = {.evmcs = cfg->evmcs};
            rc = hyperv_cpuid_build(base, supported->nent, hv->entries, hv->nent, &opt,
                                    table->entries, VCPU_CPUID_MAX_ENTRIES, &table->nent);
            if (rc) {
                err_context(rc, "--hyperv");
                break;
            }
        }
        rc = vm_set_vcpu_cpuid(vm, i, table);
        if (!rc && cfg->nested)
            rc = vm_cpu_set_vmx_msrs(vm, i, vmx, nvmx);
    }
    free(base);
    free(table);
    free(hv);
    free(supported);
    return rc;
}
