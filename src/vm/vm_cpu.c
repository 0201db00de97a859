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
#include "kvm/kvm_vcpu.h"
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
    bool evmcs = cfg->hyperv && (cfg->hyperv_set & HV_BIT(HV_EVMCS));
    if (cfg->nested && !vcpu_cpuid_has_vmx(supported))
        return err_set(-ENOTSUP, "--nested: host KVM offers no nested VMX (kvm_intel nested=0, "
                                 "or not VT-x)");
    if (cfg->nested && !host->nested_max)
        return err_set(-ENOTSUP,
                       "--nested: host KVM cannot save nested state (KVM_CAP_NESTED_STATE is 0%s), "
                       "so the guest could be neither snapshotted nor migrated",
                       cfg->hidden_caps & VM_HIDE_NESTED_STATE ? ", hidden by --hide-cap" : "");
    if (cfg->hyperv) {
        int rc = hyperv_check_needs(cfg->hyperv_set);
        if (rc)
            return rc;
    }
    if (evmcs && !cfg->nested)
        return err_set(-EINVAL, "--hyperv=evmcs needs --nested: an enlightened VMCS is a VMX "
                                "feature");
    return 0;
}

struct vm_cpu_caps {
    const struct kvm_host *host;
    unsigned hidden;
};

/* A KVM capability, as --hide-cap leaves it. */
static bool vm_cpu_has_cap(long cap, void *ctx)
{
    const struct vm_cpu_caps *c = ctx;
    if ((cap == KVM_CAP_HYPERV_SYNIC2 && (c->hidden & VM_HIDE_SYNIC)) ||
        (cap == KVM_CAP_HYPERV_ENLIGHTENED_VMCS && (c->hidden & VM_HIDE_EVMCS)))
        return false;
    return kvm_check_extension(c->host->fd, cap) > 0;
}

uint32_t vm_cpu_hyperv_offered(const struct kvm_host *host, unsigned hidden_caps,
                               const struct kvm_cpuid2 *hv, uint32_t *no_cap)
{
    struct vm_cpu_caps caps = {host, hidden_caps};
    if (no_cap)
        *no_cap = 0;
    if (!hv || !kvm_check_extension(host->fd, KVM_CAP_HYPERV))
        return 0;
    return hyperv_offered(hv->entries, hv->nent, vm_cpu_has_cap, &caps, no_cap);
}

/* Each enlightenment asked for is one this host's KVM offers; the first that is not is named,
 * with the capability it lacks. */
static int vm_cpu_check_hyperv(const struct kvm_host *host, const struct vm_config *cfg,
                               const struct kvm_cpuid2 *hv)
{
    uint32_t no_cap;
    uint32_t missing =
        cfg->hyperv_set & ~vm_cpu_hyperv_offered(host, cfg->hidden_caps, hv, &no_cap);
    if (!missing)
        return 0;
    unsigned bit = __builtin_ctz(missing);
    const struct hyperv_feature_info *f = &hyperv_features[bit];
    bool cap_missing = no_cap & HV_BIT(bit);
    return err_set(-ENOTSUP, "--hyperv: host KVM cannot give %s (%s%s)", f->name,
                   cap_missing ? "it lacks " : "KVM_GET_SUPPORTED_HV_CPUID does not offer its bits",
                   cap_missing ? f->cap_name : "");
}

/* The VMX capability MSRs KVM lets userspace restore, as the host reports them
 * (KVM_GET_MSR_FEATURE_INDEX_LIST, then KVM_GET_MSRS on /dev/kvm): what a guest given VMX here
 * gets, and what the handshake compares. */
int vm_cpu_vmx_msrs(const struct kvm_host *host, unsigned hidden_caps, struct kvm_msrs **out)
{
    struct kvm_msr_list *list = NULL;
    int rc = kvm_msr_index_list(host->fd, true, KVM_HOST_MAX_MSRS, &list);
    struct kvm_msrs *m =
        rc ? NULL : calloc(1, sizeof(*m) + NESTED_VMX_MSR_MAX * sizeof(m->entries[0]));
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
    for (uint32_t i = 0; !rc && (hidden_caps & VM_HIDE_VMX_CONTROLS) && i < m->nmsrs; i++)
        m->entries[i].data = nested_vmx_msr_hide_controls(m->entries[i].index, m->entries[i].data);
    free(list);
    if (rc) {
        free(m);
        return err_context(rc, "--nested");
    }
    *out = m;
    return 0;
}

/* A fresh vCPU's VMX MSRs: the capability MSRs, then IA32_FEATURE_CONTROL locked with VMXON
 * allowed outside SMX, as firmware leaves it. Both before the first KVM_RUN: KVM refuses
 * changes to the capability MSRs once the vCPU is in VMX operation, and checks VMXON against
 * feature control. */
static int vm_cpu_set_vmx(struct vcpu *v, struct kvm_msrs *vmx)
{
    struct kvm_msrs *fc = calloc(1, sizeof(*fc) + sizeof(fc->entries[0]));
    if (!fc)
        return err_set(-ENOMEM, "out of memory");
    fc->nmsrs = 1;
    fc->entries[0] = (struct kvm_msr_entry){.index = NESTED_MSR_FEATURE_CONTROL,
                                            .data = NESTED_FEATURE_CONTROL_LOCKED |
                                                    NESTED_FEATURE_CONTROL_VMXON_OUTSIDE_SMX};
    int rc = vcpu_set_msrs(v, vmx);
    if (!rc)
        rc = vcpu_set_msrs(v, fc);
    free(fc);
    return rc ? err_context(rc, "--nested") : 0;
}

void vm_cpu_keep(struct vm *vm, const struct kvm_msr_entry *msrs, uint32_t n, uint32_t tsc_khz)
{
    struct kvm_msrs *vmx = calloc(1, sizeof(*vmx) + NESTED_VMX_MSR_MAX * sizeof(vmx->entries[0]));
    for (uint32_t i = 0; vmx && i < n && vmx->nmsrs < NESTED_VMX_MSR_MAX; i++)
        if (nested_vmx_msr_restorable(msrs[i].index))
            vmx->entries[vmx->nmsrs++] = msrs[i];
    if (vmx && !vmx->nmsrs) {
        free(vmx);
        vmx = NULL;
    }
    free(vm->vmx);
    vm->vmx = vmx;
    vm->tsc_khz = tsc_khz;
}

void vm_cpu_need(const struct vm *vm, struct vm_cpu_need *out)
{
    const struct kvm_cpuid2 *cpuid = vm->cpu_count ? vcpu_cpuid(vm->vcpus[0]) : NULL;
    memset(out, 0, sizeof(*out));
    if (vm->vmx) {
        out->vmx = vm->vmx->entries;
        out->vmx_count = vm->vmx->nmsrs;
    }
    out->hyperv = cpuid && hyperv_present(cpuid->entries, cpuid->nent);
    out->hyperv_set = cpuid ? hyperv_decode(cpuid->entries, cpuid->nent) : 0;
    out->tsc_khz = vm->tsc_khz;
}

/* The Hyper-V leaves the host's KVM can offer: the system ioctl where KVM_CAP_SYS_HYPERV_CPUID
 * is offered, else the one on vcpu_fd (any vCPU; -1 when there is none). */
int vm_cpu_hv_leaves(const struct kvm_host *host, int vcpu_fd, struct kvm_cpuid2 **out)
{
    if (host->sys_hyperv_cpuid)
        return kvm_supported_hv_cpuid(host->fd, "/dev/kvm", HYPERV_CPUID_MAX_ENTRIES, out);
    if (host->hyperv_cpuid && vcpu_fd >= 0)
        return kvm_supported_hv_cpuid(vcpu_fd, "a vCPU", HYPERV_CPUID_MAX_ENTRIES, out);
    return err_set(-ENOTSUP, "host KVM offers no Hyper-V CPUID "
                             "(KVM_CAP_HYPERV_CPUID, KVM_CAP_SYS_HYPERV_CPUID)");
}

/* vCPU i's table into table: the ordinary one (into base), then through hyperv_cpuid_build,
 * which adds the Hyper-V leaves with --hyperv and drops KVM's with --hide-kvm. */
static int vm_cpu_table(struct vm *vm, const struct vm_config *cfg, unsigned i,
                        const struct kvm_cpuid2 *supported, struct kvm_cpuid_entry2 *base,
                        struct kvm_cpuid2 *table)
{
    vcpu_cpuid_build(supported->entries, supported->nent, i, vm->cpu_count, cfg->nested, base);
    struct hyperv_cpuid_options opt = {.hyperv = cfg->hyperv,
                                       .set = cfg->hyperv_set,
                                       .kvm_hidden = cfg->kvm_hidden,
                                       .max_cpus = vm->cpu_count};
    int rc = hyperv_cpuid_build(base, supported->nent, &opt, table->entries, VCPU_CPUID_MAX_ENTRIES,
                                &table->nent);
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
        rc = vm_cpu_vmx_msrs(host, cfg->hidden_caps, &vmx);
    if (!rc && cfg->hyperv && (rc = vm_cpu_hv_leaves(host, vcpu_fd(vm->vcpus[0]), &hv)))
        err_context(rc, "--hyperv");
    if (!rc && cfg->hyperv)
        rc = vm_cpu_check_hyperv(host, cfg, hv);
    /* eVMCS is enabled per vCPU; KVM does not mind whether before or after the CPUID table. */
    for (unsigned i = 0;
         !rc && cfg->hyperv && (cfg->hyperv_set & HV_BIT(HV_EVMCS)) && i < vm->cpu_count; i++)
        rc = vcpu_enable_evmcs(vm->vcpus[i], NULL);
    if (!rc &&
        !(table = calloc(1, sizeof(*table) + VCPU_CPUID_MAX_ENTRIES * sizeof(table->entries[0]))))
        rc = err_set(-ENOMEM, "out of memory");
    if (!rc && !(base = malloc(supported->nent * sizeof(base[0]))))
        rc = err_set(-ENOMEM, "out of memory");
    for (unsigned i = 0; i < vm->cpu_count && !rc; i++) {
        rc = vm_cpu_table(vm, cfg, i, supported, base, table);
        if (!rc)
            rc = vcpu_set_cpuid(vm->vcpus[i], table);
        if (!rc && vmx)
            rc = vm_cpu_set_vmx(vm->vcpus[i], vmx);
    }
    uint32_t tsc_khz = 0;
    if (!rc && vm->cpu_count && kvm_vcpu_get_tsc_khz(vcpu_fd(vm->vcpus[0]), 0, &tsc_khz))
        tsc_khz = 0;
    if (!rc)
        vm_cpu_keep(vm, vmx ? vmx->entries : NULL, vmx ? vmx->nmsrs : 0, tsc_khz);
    free(vmx);
    free(base);
    free(table);
    free(hv);
    free(supported);
    return rc;
}
