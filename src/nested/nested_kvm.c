#include "nested/nested_kvm.h"

#include "err/err.h"
#include "nested/nested_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define MSR_VMX_BASIC 0x480u
#define MSR_VMX_MISC 0x485u
#define MSR_VMX_CR0_FIXED0 0x486u
#define MSR_VMX_CR4_FIXED0 0x488u
#define MSR_VMX_VMCS_ENUM 0x48au
#define MSR_VMX_PROCBASED_CTLS2 0x48bu
#define MSR_VMX_EPT_VPID_CAP 0x48cu
#define MSR_VMX_TRUE_PINBASED 0x48du
#define MSR_VMX_TRUE_ENTRY 0x490u
#define NESTED_MAX_FEATURE_MSRS 4096u

uint32_t nested_kvm_max_size(int kvm_fd)
{
    int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NESTED_STATE);
    return n > 0 ? (uint32_t)n : 0;
}

int nested_kvm_get(int vcpu_fd, unsigned index, uint8_t *buf, uint32_t max, uint32_t *len)
{
    if (max < NESTED_HEADER_SIZE)
        return err_set(-ENOTSUP,
                       "vCPU %u: this host cannot save nested state "
                       "(KVM_CAP_NESTED_STATE %u)",
                       index, max);
    memset(buf, 0, max);
    struct kvm_nested_state *s = (struct kvm_nested_state *)buf;
    s->size = max;
    if (ioctl(vcpu_fd, KVM_GET_NESTED_STATE, s) < 0)
        return err_sys(-errno, "KVM_GET_NESTED_STATE on vCPU %u (buffer of %u bytes)", index, max);
    if (s->size < NESTED_HEADER_SIZE || s->size > max)
        return err_set(-EPROTO, "vCPU %u: KVM_GET_NESTED_STATE reports %u bytes (buffer %u)", index,
                       s->size, max);
    *len = s->size;
    return 0;
}

int nested_kvm_set(int vcpu_fd, unsigned index, const uint8_t *blob, uint32_t len,
                   uint32_t host_max)
{
    if (!host_max)
        return err_set(-ENOTSUP,
                       "vCPU %u carries nested state; this host cannot restore it "
                       "(KVM_CAP_NESTED_STATE 0)",
                       index);
    int rc = nested_validate(blob, len, host_max);
    if (rc)
        return err_context(rc, "vCPU %u", index);
    /* KVM reads the struct through an aligned pointer; the record's payload need not be. */
    void *copy = aligned_alloc(8, (len + 7) & ~7u);
    if (!copy)
        return err_set(-ENOMEM, "out of memory");
    memcpy(copy, blob, len);
    if (ioctl(vcpu_fd, KVM_SET_NESTED_STATE, copy) < 0)
        rc = err_sys(-errno, "KVM_SET_NESTED_STATE on vCPU %u refused its nested state", index);
    free(copy);
    return rc;
}

bool nested_vmx_msr(uint32_t index)
{
    return index >= NESTED_VMX_MSR_FIRST && index <= NESTED_VMX_MSR_LAST;
}

bool nested_vmx_msr_restorable(uint32_t index)
{
    switch (index) {
    case MSR_VMX_BASIC:
    case MSR_VMX_MISC:
    case MSR_VMX_CR0_FIXED0:
    case MSR_VMX_CR4_FIXED0:
    case MSR_VMX_VMCS_ENUM:
    case MSR_VMX_PROCBASED_CTLS2:
    case MSR_VMX_EPT_VPID_CAP:
        return true;
    default:
        return index >= MSR_VMX_TRUE_PINBASED && index <= MSR_VMX_TRUE_ENTRY;
    }
}

int nested_kvm_vmx_msrs(int kvm_fd, struct kvm_msr_entry *out, unsigned *n)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (ioctl(kvm_fd, KVM_GET_MSR_FEATURE_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return err_sys(-errno, "KVM_GET_MSR_FEATURE_INDEX_LIST");
    if (probe.nmsrs > NESTED_MAX_FEATURE_MSRS)
        return err_set(-E2BIG, "KVM lists %u feature MSRs, more than %u", probe.nmsrs,
                       NESTED_MAX_FEATURE_MSRS);
    struct kvm_msr_list *list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
    struct kvm_msrs *msrs =
        calloc(1, sizeof(*msrs) + NESTED_VMX_MSR_MAX * sizeof(struct kvm_msr_entry));
    int rc = 0;
    if (!list || !msrs) {
        rc = err_set(-ENOMEM, "out of memory");
        goto out;
    }
    list->nmsrs = probe.nmsrs;
    if (ioctl(kvm_fd, KVM_GET_MSR_FEATURE_INDEX_LIST, list) < 0) {
        rc = err_sys(-errno, "KVM_GET_MSR_FEATURE_INDEX_LIST");
        goto out;
    }
    for (uint32_t i = 0; i < list->nmsrs && msrs->nmsrs < NESTED_VMX_MSR_MAX; i++)
        if (nested_vmx_msr_restorable(list->indices[i]))
            msrs->entries[msrs->nmsrs++].index = list->indices[i];
    if (msrs->nmsrs == 0) {
        rc = err_set(-ENOTSUP, "host KVM lists no VMX capability MSRs among its feature MSRs "
                               "(kvm_intel nested=0, or not VT-x)");
        goto out;
    }
    int got = ioctl(kvm_fd, KVM_GET_MSRS, msrs);
    if (got < 0 || (uint32_t)got != msrs->nmsrs) {
        rc = got < 0 ? err_sys(-errno, "KVM_GET_MSRS on /dev/kvm for the VMX capability MSRs")
                     : err_set(-EIO, "host KVM cannot read VMX capability MSR 0x%x",
                               msrs->entries[got].index);
        goto out;
    }
    memcpy(out, msrs->entries, msrs->nmsrs * sizeof(out[0]));
    *n = msrs->nmsrs;
out:
    free(list);
    free(msrs);
    return rc;
}
