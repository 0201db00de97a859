#include "vm/vm.h"

#include "boot/boot_load.h"
#include "err/err.h"
#include "kvm/kvm.h"
#include "kvm/kvm_host.h"
#include "kvm/kvm_vm.h"
#include "kvm/kvm_vcpu.h"
#include "memory/mem.h"
#include "pci/pci.h"
#include "vm/vm_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* KVM needs three pages for the real-mode TSS and one for the identity-map table on Intel; both
 * sit in the 32-bit hole, below the firmware area, where no RAM is ever mapped. */
#define VM_IDENTITY_MAP_GPA 0xfeffc000ull
#define VM_TSS_GPA 0xfeffd000ull

uint64_t vm_host_ram_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

int vm_check_mem_size(uint64_t size, const char *what)
{
    uint64_t host = vm_host_ram_bytes();
    if (host && size > host)
        return err_set(-EINVAL, "%s: %llu MiB exceeds the host's %llu MiB of RAM", what,
                       (unsigned long long)(size >> 20), (unsigned long long)(host >> 20));
    return 0;
}

/* Records the first way the VM ended and tells the loop; later ones are ignored. */
static void vm_record_end(struct vm *vm, enum vm_end_kind kind, uint32_t code, const char *msg)
{
    pthread_mutex_lock(&vm->end_lock);
    bool first = vm->end.kind == VM_END_NONE;
    if (first) {
        vm->end.kind = kind;
        vm->end.code = code;
        snprintf(vm->end.message, sizeof(vm->end.message), "%s", msg ? msg : "");
    }
    pthread_mutex_unlock(&vm->end_lock);
    if (first)
        uv_async_send(&vm->end_async);
}

static void vm_host_request_end(void *opaque, enum dev_end why, uint32_t code)
{
    struct vm *vm = opaque;
    if (why == DEV_END_RESET)
        vm_record_end(vm, VM_END_RESET, 0, "guest requested a reset through the i8042");
    else if (why == DEV_END_POWER_OFF)
        vm_record_end(vm, VM_END_POWER_OFF, 0, "guest powered off (ACPI S5)");
    else
        vm_record_end(vm, VM_END_EXIT_CODE, code, NULL);
}

static void vm_host_set_irq(void *opaque, unsigned irq, int level)
{
    struct vm *vm = opaque;
    if (kvm_vm_irq_line(vm->vm_fd, irq, level))
        err_warn("%s", err_msg());
}

static void *vm_host_dma_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
    struct vm *vm = opaque;
    return mem_ptr(vm->mem, gpa, len);
}

static void vm_host_dma_dirty(void *opaque, uint64_t gpa, uint64_t len)
{
    struct vm *vm = opaque;
    mem_dirty_mark(vm->mem, gpa, len);
}

static int vm_host_ioeventfd(void *opaque, uint64_t gpa, uint32_t len, int fd, bool assign)
{
    struct vm *vm = opaque;
    return kvm_vm_ioeventfd(vm->vm_fd, gpa, len, fd, assign);
}

static void vm_vcpu_fault(void *opaque, unsigned index, const char *message)
{
    (void)index;
    vm_record_end(opaque, VM_END_FAULT, 0, message);
}

static void vm_on_end_async(uv_async_t *async)
{
    struct vm *vm = async->data;
    if (vm->end_reported || !vm->on_end)
        return;
    vm->end_reported = true;
    vm->on_end(vm, vm->on_end_opaque);
}

int vm_host_nested(unsigned hidden_caps, struct vm_host_nested *out)
{
    const struct kvm_host *host;
    int rc = kvm_host(&host);
    if (rc)
        return rc;
    out->nested_max = hidden_caps & VM_HIDE_NESTED_STATE ? 0 : host->nested_state;
    out->evmcs = !(hidden_caps & VM_HIDE_EVMCS) && host->evmcs;
    return 0;
}

static int vm_create_kvm(struct vm *vm)
{
    const struct kvm_host *host;
    int rc = kvm_host(&host);
    if (rc)
        return rc;
    const char *missing = !host->irqchip          ? "KVM_CAP_IRQCHIP"
                          : !host->pit2           ? "KVM_CAP_PIT2"
                          : !host->immediate_exit ? "KVM_CAP_IMMEDIATE_EXIT"
                          : !host->user_memory    ? "KVM_CAP_USER_MEMORY"
                                                  : NULL;
    if (missing)
        return err_set(-ENOTSUP, "host KVM lacks %s, which tern needs", missing);
    if (host->max_vcpus > 0 && vm->cpu_count > (unsigned)host->max_vcpus)
        return err_set(-EINVAL, "--cpus %u exceeds the host KVM's limit of %d (KVM_CAP_MAX_VCPUS)",
                       vm->cpu_count, host->max_vcpus);
    if ((rc = vm_host_nested(vm->hidden_caps, &vm->host_nested)))
        return rc;
    return kvm_create_vm(host->fd, &vm->vm_fd);
}

/* The in-kernel devices and the addresses KVM needs; all before the first vCPU is created. */
static int vm_create_platform(struct vm *vm)
{
    int rc = kvm_vm_set_identity_map_addr(vm->vm_fd, VM_IDENTITY_MAP_GPA);
    if (!rc)
        rc = kvm_vm_set_tss_addr(vm->vm_fd, VM_TSS_GPA);
    if (!rc)
        rc = kvm_vm_create_irqchip(vm->vm_fd);
    if (!rc)
        rc = kvm_vm_create_pit2(vm->vm_fd, KVM_PIT_SPEAKER_DUMMY);
    return rc;
}

static int vm_create_vcpus(struct vm *vm)
{
    const struct kvm_host *host;
    size_t run_size;
    int rc = kvm_host(&host);
    if (!rc)
        rc = kvm_vcpu_mmap_size(host->fd, &run_size);
    vm->vcpu_events = (struct vcpu_events){.opaque = vm, .on_fault = vm_vcpu_fault};
    for (unsigned i = 0; i < vm->cpu_count && !rc; i++)
        rc = vcpu_create(vm->vm_fd, i, run_size, vm->bus, &vm->vcpu_events, &vm->vcpus[i]);
    return rc;
}

static int vm_boot(struct vm *vm, const struct vm_config *cfg)
{
    int rc = vm_cpu_setup(vm, cfg);
    if (rc)
        return rc;
    uint32_t khz = 0;
    if (kvm_vcpu_get_tsc_khz(vcpu_fd(vm->vcpus[0]), 0, &khz))
        khz = 0; /* the guest is told 0: unknown */
    struct boot_load_params params = {.kernel_path = cfg->kernel_path,
                                      .initrd_path = cfg->initrd_path,
                                      .cmdline = cfg->cmdline,
                                      .cpu_count = vm->cpu_count,
                                      .tsc_khz = khz};
    struct boot_entry be = {0};
    rc = boot_load(vm->mem, &params, &be);
    unsigned starting = !rc && be.start_all ? vm->cpu_count : 1;
    for (unsigned i = 0; i < starting && !rc; i++)
        rc = vcpu_setup_boot_entry(vm->vcpus[i], &be);
    return rc;
}

struct vm_register_job {
    struct vm *vm;
    pthread_t thread;
    int rc;
    char msg[256];
};

static void *vm_register_memory(void *arg)
{
    struct vm_register_job *job = arg;
    job->rc = mem_register(job->vm->mem, job->vm->vm_fd);
    if (job->rc) /* the error message is per thread: carry it over */
        snprintf(job->msg, sizeof(job->msg), "%s", err_msg());
    return NULL;
}

/* Everything after the KVM VM exists. Memslot registration sleeps in KVM for a fixed few
 * milliseconds; nothing before the first KVM_RUN needs the slots, so the rest of setup runs
 * meanwhile. */
static int vm_build(struct vm *vm, const struct vm_config *cfg)
{
    struct vm_register_job job = {.vm = vm};
    bool threaded = pthread_create(&job.thread, NULL, vm_register_memory, &job) == 0;
    if (!threaded)
        vm_register_memory(&job);
    int rc = vm_create_platform(vm);
    if (!rc)
        rc = dev_bus_create(&vm->bus);
    if (!rc)
        rc = pci_bus_create(vm->bus, pci_mmio64_base(mem_top(vm->mem)), &vm->pci);
    if (!rc)
        rc = vm_devices_create(vm, cfg);
    if (!rc)
        rc = vm_create_vcpus(vm);
    if (!rc && cfg->kernel_path)
        rc = vm_boot(vm, cfg);
    if (threaded)
        pthread_join(job.thread, NULL);
    if (!rc && job.rc)
        rc = err_set(job.rc, "%s", job.msg);
    return rc;
}

int vm_create(uv_loop_t *loop, const struct vm_config *cfg, vm_end_fn on_end, void *opaque,
              struct vm **out)
{
    if (cfg->cpu_count < 1 || cfg->cpu_count > VM_MAX_CPUS)
        return err_set(-EINVAL, "--cpus must be between 1 and %d", VM_MAX_CPUS);
    /* --mem is checked so already; a stream's RAM size is here. */
    int rc = vm_check_mem_size(cfg->mem_size, "guest RAM");
    if (rc)
        return rc;
    struct vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return err_set(-ENOMEM, "out of memory");
    vm->loop = loop;
    vm->vm_fd = -1;
    vm->cpu_count = cfg->cpu_count;
    vm->hidden_caps = cfg->hidden_caps;
    vm->on_end = on_end;
    vm->on_end_opaque = opaque;
    vm->host = (struct dev_host){.opaque = vm,
                                 .request_end = vm_host_request_end,
                                 .set_irq = vm_host_set_irq,
                                 .dma_ptr = vm_host_dma_ptr,
                                 .dma_dirty = vm_host_dma_dirty,
                                 .ioeventfd = vm_host_ioeventfd,
                                 .msi_route = vm_irq_msi_route,
                                 .msi_release = vm_irq_msi_release};
    vm->disk_count = cfg->disk_count < DEV_MAX_DISKS ? cfg->disk_count : DEV_MAX_DISKS;
    memcpy(vm->disks, cfg->disks, sizeof(vm->disks[0]) * vm->disk_count);
    vm->net_count = cfg->net_count < DEV_MAX_NETS ? cfg->net_count : DEV_MAX_NETS;
    memcpy(vm->nets, cfg->nets, sizeof(vm->nets[0]) * vm->net_count);
    pthread_mutex_init(&vm->end_lock, NULL);
    pthread_mutex_init(&vm->msi_lock, NULL);
    vm_throttle_init(vm);
    rc = uv_async_init(loop, &vm->end_async, vm_on_end_async);
    if (rc) {
        vm_throttle_destroy(vm);
        pthread_mutex_destroy(&vm->end_lock);
        free(vm);
        return err_set(rc, "uv_async_init: %s", uv_strerror(rc));
    }
    vm->end_async.data = vm;
    rc = vm_create_kvm(vm);
    if (!rc)
        rc = mem_create(cfg->mem_size, !cfg->thp_off, &vm->mem);
    if (!rc)
        rc = vm_build(vm, cfg);
    if (rc) {
        vm_close(vm);
        return rc;
    }
    *out = vm;
    return 0;
}

/* KVM_SET_CLOCK comes last, right before the vCPUs run again: a guest that runs before its
 * clock is set sees time jump (Hyper-V guests hang). The devices resume with it (the ACPI PM
 * timer follows the same rule). */
static int vm_apply_pending_clock(struct vm *vm)
{
    vm_devices_resume(vm);
    if (!vm->clock_pending)
        return 0;
    vm->clock_pending = false;
    return kvm_vm_set_clock(vm->vm_fd, &vm->clock);
}

int vm_start(struct vm *vm, bool paused)
{
    /* Images are locked before the guest can touch them (a destination's, only now). */
    int rc = vm_devices_claim(vm);
    if (!rc)
        rc = vcpu_signals_init();
    if (!rc && !paused)
        rc = vm_apply_pending_clock(vm);
    for (unsigned i = 0; i < vm->cpu_count && !rc; i++) {
        if (paused)
            vcpu_pause_request(vm->vcpus[i]);
        rc = vcpu_start(vm->vcpus[i]);
    }
    vm->started = true;
    vm->paused = paused;
    return rc;
}

void vm_pause(struct vm *vm)
{
    vm_devices_quiesce(vm);
    /* Ask them all first, then wait: the vCPUs stop in parallel. */
    for (unsigned i = 0; i < vm->cpu_count; i++)
        vcpu_pause_request(vm->vcpus[i]);
    for (unsigned i = 0; i < vm->cpu_count; i++)
        vcpu_pause_wait(vm->vcpus[i]);
    vm->paused = true;
}

void vm_resume(struct vm *vm)
{
    if (vm_apply_pending_clock(vm))
        err_warn("%s", err_msg());
    vm->paused = false;
    for (unsigned i = 0; i < vm->cpu_count; i++)
        vcpu_resume(vm->vcpus[i]);
}

bool vm_is_paused(const struct vm *vm)
{
    return vm->paused;
}

void vm_stop(struct vm *vm)
{
    vm_set_throttle(vm, 0);
    for (unsigned i = 0; i < vm->cpu_count; i++)
        if (vm->vcpus[i])
            vcpu_stop(vm->vcpus[i]);
    vm_devices_stop(vm);
}

static void vm_on_closed(uv_handle_t *h)
{
    struct vm *vm = h->data;
    pthread_mutex_destroy(&vm->end_lock);
    pthread_mutex_destroy(&vm->msi_lock);
    vm_throttle_destroy(vm);
    free(vm);
}

void vm_close(struct vm *vm)
{
    if (!vm)
        return;
    vm_stop(vm);
    for (unsigned i = 0; i < vm->cpu_count; i++)
        vcpu_destroy(vm->vcpus[i]);
    vm_devices_destroy(vm);
    pci_bus_destroy(vm->pci);
    dev_bus_destroy(vm->bus);
    mem_destroy(vm->mem);
    free(vm->vmx);
    vm->vmx = NULL;
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    uv_close((uv_handle_t *)&vm->end_async, vm_on_closed);
}

struct vm_end vm_end_state(struct vm *vm)
{
    pthread_mutex_lock(&vm->end_lock);
    struct vm_end e = vm->end;
    pthread_mutex_unlock(&vm->end_lock);
    return e;
}

unsigned vm_cpu_count(const struct vm *vm)
{
    return vm->cpu_count;
}

struct mem *vm_mem(const struct vm *vm)
{
    return vm->mem;
}

struct vcpu *vm_vcpu(const struct vm *vm, unsigned index)
{
    return index < vm->cpu_count ? vm->vcpus[index] : NULL;
}

const struct kvm_cpuid2 *vm_vcpu_cpuid(const struct vm *vm, unsigned index)
{
    return vcpu_cpuid(vm->vcpus[index]);
}

const struct vm_host_nested *vm_nested_caps(const struct vm *vm)
{
    return &vm->host_nested;
}

uint32_t vm_xsave_size(const struct vm *vm)
{
    const struct kvm_host *host;
    (void)vm; /* a VM exists: the host was probed */
    return kvm_host(&host) ? KVM_XSAVE_LEGACY_SIZE : host->xsave_size;
}
