#include "kvm/kvm_host.h"

#include "err/err.h"
#include "kvm/kvm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static struct kvm_host kvm_host_caps;
static int kvm_host_rc;
static char kvm_host_msg[256];
static pthread_once_t kvm_host_once = PTHREAD_ONCE_INIT;

static void kvm_host_probe(void)
{
    struct kvm_host *h = &kvm_host_caps;
    struct kvm_msr_list *msrs = NULL;
    int rc = kvm_open(&h->fd);
    if (!rc)
        rc = kvm_msr_index_list(h->fd, false, KVM_HOST_MAX_MSRS, &msrs);
    if (rc) {
        kvm_host_rc = rc;
        snprintf(kvm_host_msg, sizeof(kvm_host_msg), "%s", err_msg());
        return;
    }
    h->msrs = msrs;
    h->irqchip = kvm_check_extension(h->fd, KVM_CAP_IRQCHIP);
    h->pit2 = kvm_check_extension(h->fd, KVM_CAP_PIT2);
    h->immediate_exit = kvm_check_extension(h->fd, KVM_CAP_IMMEDIATE_EXIT);
    h->user_memory = kvm_check_extension(h->fd, KVM_CAP_USER_MEMORY);
    h->max_vcpus = kvm_check_extension(h->fd, KVM_CAP_MAX_VCPUS);
    /* XSAVE2's size is at least the legacy 4 KiB; larger with AMX and the like. */
    int xsize = kvm_check_extension(h->fd, KVM_CAP_XSAVE2);
    h->xsave2 = xsize > 0;
    h->xsave_size = xsize > (int)KVM_XSAVE_LEGACY_SIZE ? (uint32_t)xsize : KVM_XSAVE_LEGACY_SIZE;
    h->xcrs = kvm_check_extension(h->fd, KVM_CAP_XCRS);
    h->sregs2 = kvm_check_extension(h->fd, KVM_CAP_SREGS2);
    h->nested_state = (uint32_t)kvm_check_extension(h->fd, KVM_CAP_NESTED_STATE);
    h->evmcs = kvm_check_extension(h->fd, KVM_CAP_HYPERV_ENLIGHTENED_VMCS);
    h->dirty_log = (uint32_t)kvm_check_extension(h->fd, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    h->hyperv_cpuid = kvm_check_extension(h->fd, KVM_CAP_HYPERV_CPUID);
    h->sys_hyperv_cpuid = kvm_check_extension(h->fd, KVM_CAP_SYS_HYPERV_CPUID);
    h->hyperv_enforce_cpuid = kvm_check_extension(h->fd, KVM_CAP_HYPERV_ENFORCE_CPUID);
    h->tsc_control = kvm_check_extension(h->fd, KVM_CAP_TSC_CONTROL);
}

int kvm_host(const struct kvm_host **out)
{
    pthread_once(&kvm_host_once, kvm_host_probe);
    if (kvm_host_rc)
        return err_set(kvm_host_rc, "%s", kvm_host_msg);
    *out = &kvm_host_caps;
    return 0;
}
