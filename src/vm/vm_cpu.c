/* vm_cpu: the CPU a freshly booted VM's vCPUs are given, from what the host's KVM supports:
 * the CPUID table (VMX only with --nested; the Hyper-V leaves with --hyperv), eVMCS enabled
 * with --hyperv=evmcs, and for --nested the VMX capability MSRs as KVM reports them and
 * IA32_FEATURE_CONTROL locked with VMXON allowed outside SMX, as firmware leaves it.
 *
 * A host that cannot give what was asked is refused in one line that names the option and the
 * KVM capability. A restored VM gets none of this: its stream carries the CPU.
 */
#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"
#include "kvm/kvm.h"
#include "kvm/kvm_host.h"
#include "nested/nested_msr.h"
#include "vcpu/vcpu_cpuid.h"
#include "vm/vm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Refuses what this host cannot give, before any vCPU is touched. */
static int vm_cpu_check(const struct vm *vm, const struct vm_config *cfg,
                        const struct kvm_cpuid2 *supported)
{
    const struct vm_host_nested *host = &vm->host_nested;
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

/* The VMX capability MSRs KVM lets userspace restore, as the host reports them
 * (KVM_GET_MSR_FEATURE_INDEX_LIST, then KVM_GET_MSRS on /dev/kvm), then feature control: KVM
 * refuses changes to the capability MSRs once the vCPU is in VMX operation, and checks VMXON
 * against feature control. */
static int vm_cpu_vmx_msrs(const struct kvm_host *host, struct kvm_msrs **out)
{
    struct kvm_msr_list *list = NULL;
    int rc = kvm_msr_index_list(host->fd, true, KVM_HOST_MAX_MSRS, &list);
    struct kvm_msrs *m =
        rc ? NULL : calloc(1, sizeof(*m) + (NESTED_VMX_MSR_MAX + 1) * sizeof(m->entries[0]));
    if (!rc && !m)
        rc = err_set(-ENOMEM, "out of memory");
    for (uint32_t i = 0; !rc && i < list->nmsrs && m->nmsrs < NESTED_VMX_MSR_MAX; i++)
        if (nested_vmx_msr_restorable(list->indices[i]))
            m->entries[m->nmsrs++].index = list->indices[i];
    if (!rc && !m->nmsrs)
        rc = err_set(-ENOTSUP, "host KVM lists no VMX capability MSRs among its feature MSRs "
                               "(kvm_intel nested=0, or not VT-x)");
    if (!rc)
        rc = kvm_get_feature_msrs(host->fd, m);
    free(list);
    if (rc) {
        free(m);
        return err_context(rc, "--nested");
    }
    m->entries[m->nmsrs++] = (struct kvm_msr_entry){
        .index = NESTED_MSR_FEATURE_CONTROL,
        .data = NESTED_FEATURE_CONTROL_LOCKED | NESTED_FEATURE_CONTROL_VMXON_OUTSIDE_SMX};
    *out = m;
    return 0;
}

/* The Hyper-V leaves the host's KVM can offer: the system ioctl where KVM_CAP_SYS_HYPERV_CPUID
 * is offered, else the one on a vCPU (which must have eVMCS enabled already for the eVMCS leaf
 * to show). */
static int vm_cpu_hv_leaves(struct vm *vm, const struct kvm_host *host, struct kvm_cpuid2 **out)
{
    if (host->sys_hyperv_cpuid)
        return kvm_supported_hv_cpuid(host->fd, "/dev/kvm", HYPERV_CPUID_MAX_ENTRIES, out);
    if (host->hyperv_cpuid)
        return kvm_supported_hv_cpuid(vcpu_fd(vm->vcpus[0]), "a vCPU", HYPERV_CPUID_MAX_ENTRIES,
                                      out);
    return err_set(-ENOTSUP, "host KVM offers no Hyper-V CPUID "
                             "(KVM_CAP_HYPERV_CPUID, KVM_CAP_SYS_HYPERV_CPUID)");
}

/* vCPU i's table into table: the ordinary one, through hyperv_cpuid_build with --hyperv (base
 * is its scratch input then). */
static int vm_cpu_table(struct vm *vm, const struct vm_config *cfg, unsigned i,
                        const struct kvm_cpuid2 *supported, const struct kvm_cpuid2 *hv,
                        struct kvm_cpuid_entry2 *base, struct kvm_cpuid2 *table)
{
    vcpu_cpuid_build(supported->entries, supported->nent, i, vm->cpu_count, cfg->nested,
                     hv ? base : table->entries);
    table->nent = supported->nent;
    if (!hv)
        return 0;
    struct hyperv_cpuid_options opt = {.evmcs = cfg->evmcs};
    int rc = hyperv_cpuid_build(base, supported->nent, hv->entries, hv->nent, &opt, table->entries,
                                VCPU_CPUID_MAX_ENTRIES, &table->nent);
    return rc ? err_context(rc, "--hyperv") : 0;
}

int vm_cpu_setup(struct vm *vm, const struct vm_config *cfg)
{
    const struct kvm_host *host;
    struct kvm_cpuid2 *supported = NULL, *hv = NULL, *table = NULL;
    struct kvm_cpuid_entry2 *base = NULL;
    struct kvm_msrs *vmx = NULL;
    int rc = kvm_host(&host);
    if (!rc)
        rc = kvm_supported_cpuid(host->fd, VCPU_CPUID_MAX_ENTRIES, &supported);
    if (!rc)
        rc = vm_cpu_check(vm, cfg, supported);
    if (!rc && cfg->nested)
        rc = vm_cpu_vmx_msrs(host, &vmx);
    /* eVMCS before the Hyper-V leaves are asked for: the per-vCPU KVM_GET_SUPPORTED_HV_CPUID
     * (older hosts) shows the eVMCS leaf only on a vCPU that has it enabled. KVM does not mind
     * whether it comes before or after the CPUID table. */
    for (unsigned i = 0; cfg->evmcs && i < vm->cpu_count && !rc; i++)
        rc = vcpu_enable_evmcs(vm->vcpus[i], NULL);
    if (!rc && cfg->hyperv && (rc = vm_cpu_hv_leaves(vm, host, &hv)))
        err_context(rc, "--hyperv");
    if (!rc &&
        !(table = calloc(1, sizeof(*table) + VCPU_CPUID_MAX_ENTRIES * sizeof(table->entries[0]))))
        rc = err_set(-ENOMEM, "out of memory");
    if (!rc && hv && !(base = malloc(supported->nent * sizeof(base[0]))))
        rc = err_set(-ENOMEM, "out of memory");
    for (unsigned i = 0; i < vm->cpu_count && !rc; i++) {
        rc = vm_cpu_table(vm, cfg, i, supported, hv, base, table);
        if (!rc)
            rc = vcpu_set_cpuid(vm->vcpus[i], table);
        if (!rc && vmx && (rc = vcpu_set_msrs(vm->vcpus[i], vmx)))
            err_context(rc, "--nested");
    }
    free(vmx);
    free(base);
    free(table);
    free(hv);
    free(supported);
    return rc;
}
