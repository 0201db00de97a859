#include "kvm/kvm.h"

#include "err/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int kvm_real_ioctl(void *opaque, int fd, unsigned long request, void *arg)
{
    (void)opaque;
    return ioctl(fd, request, arg);
}

static const struct kvm_backend kvm_real = {.ioctl = kvm_real_ioctl};
static const struct kvm_backend *kvm_backend = &kvm_real;

void kvm_set_backend(const struct kvm_backend *backend)
{
    kvm_backend = backend ? backend : &kvm_real;
}

int kvm_ioctl(int fd, unsigned long request, void *arg)
{
    return kvm_backend->ioctl(kvm_backend->opaque, fd, request, arg);
}

int kvm_open(int *fd)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return err_sys(-errno, "cannot open /dev/kvm");
    int version = kvm_ioctl(kvm, KVM_GET_API_VERSION, NULL);
    if (version != KVM_API_VERSION) {
        close(kvm);
        return err_set(-ENOTSUP, "/dev/kvm speaks KVM API version %d; tern needs %d", version,
                       KVM_API_VERSION);
    }
    *fd = kvm;
    return 0;
}

int kvm_check_extension(int kvm_fd, long cap)
{
    int r = kvm_ioctl(kvm_fd, KVM_CHECK_EXTENSION, (void *)cap);
    return r > 0 ? r : 0;
}

int kvm_create_vm(int kvm_fd, int *vm_fd)
{
    int fd = kvm_ioctl(kvm_fd, KVM_CREATE_VM, NULL);
    if (fd < 0)
        return err_sys(-errno, "KVM_CREATE_VM");
    *vm_fd = fd;
    return 0;
}

int kvm_vcpu_mmap_size(int kvm_fd, size_t *size)
{
    int n = kvm_ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, NULL);
    if (n < (int)sizeof(struct kvm_run))
        return err_sys(n < 0 ? -errno : -EINVAL, "KVM_GET_VCPU_MMAP_SIZE");
    *size = (size_t)n;
    return 0;
}

/* A CPUID query that answers E2BIG until its buffer is large enough. */
static int kvm_cpuid_query(int fd, unsigned long request, const char *name, const char *where,
                           unsigned max, struct kvm_cpuid2 **out)
{
    for (unsigned nent = 16; nent <= max; nent *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
        if (!c)
            return err_set(-ENOMEM, "out of memory");
        c->nent = nent;
        if (kvm_ioctl(fd, request, c) == 0) {
            *out = c;
            return 0;
        }
        int rc = -errno;
        free(c);
        if (rc != -E2BIG)
            return err_sys(rc, "%s on %s", name, where);
    }
    return err_set(-E2BIG, "%s offers more than %u entries", name, max);
}

int kvm_supported_cpuid(int kvm_fd, unsigned max, struct kvm_cpuid2 **out)
{
    return kvm_cpuid_query(kvm_fd, KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", "/dev/kvm",
                           max, out);
}

int kvm_supported_hv_cpuid(int fd, const char *where, unsigned max, struct kvm_cpuid2 **out)
{
    return kvm_cpuid_query(fd, KVM_GET_SUPPORTED_HV_CPUID, "KVM_GET_SUPPORTED_HV_CPUID", where, max,
                           out);
}

int kvm_msr_index_list(int kvm_fd, bool feature, uint32_t max, struct kvm_msr_list **out)
{
    unsigned long request = feature ? KVM_GET_MSR_FEATURE_INDEX_LIST : KVM_GET_MSR_INDEX_LIST;
    const char *name = feature ? "KVM_GET_MSR_FEATURE_INDEX_LIST" : "KVM_GET_MSR_INDEX_LIST";
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (kvm_ioctl(kvm_fd, request, &probe) < 0 && errno != E2BIG)
        return err_sys(-errno, "%s", name);
    if (probe.nmsrs > max)
        return err_set(-E2BIG, "KVM lists %u %sMSRs, more than %u", probe.nmsrs,
                       feature ? "feature " : "", max);
    struct kvm_msr_list *list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
    if (!list)
        return err_set(-ENOMEM, "out of memory");
    list->nmsrs = probe.nmsrs;
    if (kvm_ioctl(kvm_fd, request, list) < 0) {
        int rc = err_sys(-errno, "%s", name);
        free(list);
        return rc;
    }
    *out = list;
    return 0;
}

int kvm_get_feature_msrs(int kvm_fd, struct kvm_msrs *msrs)
{
    int got = kvm_ioctl(kvm_fd, KVM_GET_MSRS, msrs);
    if (got < 0)
        return err_sys(-errno, "KVM_GET_MSRS on /dev/kvm");
    if ((uint32_t)got != msrs->nmsrs)
        return err_set(-EIO, "host KVM cannot read feature MSR 0x%x", msrs->entries[got].index);
    return 0;
}
