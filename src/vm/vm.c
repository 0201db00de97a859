#include "vm/vm.h"

#include "boot/boot_load.h"
#include "devices/dev_acpi_pm.h"
#include "devices/dev_bus.h"
#include "devices/dev_rtc.h"
#include "devices/dev_serial.h"
#include "devices/dev_sysport.h"
#include "err/err.h"
#include "memory/mem.h"
#include "vcpu/vcpu.h"
#include "vm/vm_cpu.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* KVM needs three pages for the real-mode TSS and one for the identity-map table on Intel; both
 * sit in the 32-bit hole, below the firmware area, where no RAM is ever mapped. */
#define VM_IDENTITY_MAP_GPA 0xfeffc000ull
#define VM_TSS_GPA 0xfeffd000ull

struct vm {
    uv_loop_t *loop;
    int kvm_fd;
    int vm_fd;
    unsigned cpu_count;
    unsigned hidden_caps;
    struct vm_host_nested host_nested;
    struct mem *mem;
    struct dev_bus *bus;
    struct dev_serial *serial;
    struct dev_rtc *rtc;
    struct dev_acpi_pm *acpi_pm;
    struct dev_host host;
    struct vcpu_events vcpu_events;
    struct vcpu *vcpus[VM_MAX_CPUS];
    bool started;
    bool paused;
    bool clock_pending;
    struct kvm_clock_data clock;

    pthread_mutex_t end_lock;
    struct vm_end end;
    uv_async_t end_async;
    vm_end_fn on_end;
    void *on_end_opaque;
    bool end_reported;

    /* Auto-converge: a thread that makes every vCPU sleep a share of each time slice. */
    pthread_mutex_t throttle_lock;
    pthread_cond_t throttle_cond;
    pthread_t throttle_thread;
    bool throttle_running;
    unsigned throttle_pct;
};

uint64_t vm_host_ram_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
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
    struct kvm_irq_level line = {.irq = irq, .level = (uint32_t)level};
    if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &line) < 0)
        err_warn("KVM_IRQ_LINE %u: %s", irq, strerror(errno));
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

static int vm_check_cap(struct vm *vm, long cap, const char *name)
{
    int r = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, cap);
    if (r <= 0)
        return err_set(-ENOTSUP, "host KVM lacks %s, which tern needs", name);
    return r;
}

static int vm_create_kvm(struct vm *vm)
{
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0)
        return err_sys(-errno, "cannot open /dev/kvm");
    int version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return err_set(-ENOTSUP, "/dev/kvm speaks KVM API version %d; tern needs %d", version,
                       KVM_API_VERSION);
    int rc;
    if ((rc = vm_check_cap(vm, KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")) < 0 ||
        (rc = vm_check_cap(vm, KVM_CAP_PIT2, "KVM_CAP_PIT2")) < 0 ||
        (rc = vm_check_cap(vm, KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")) < 0 ||
        (rc = vm_check_cap(vm, KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY")) < 0)
        return rc;
    int max_vcpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (max_vcpus > 0 && vm->cpu_count > (unsigned)max_vcpus)
        return err_set(-EINVAL, "--cpus %u exceeds the host KVM's limit of %d (KVM_CAP_MAX_VCPUS)",
                       vm->cpu_count, max_vcpus);

    vm_host_nested(vm->kvm_fd, vm->hidden_caps, &vm->host_nested);
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0)
        return err_sys(-errno, "KVM_CREATE_VM");
    return 0;
}

/* The in-kernel devices and the addresses KVM needs; all before the first vCPU is created. */
static int vm_create_platform(struct vm *vm)
{
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &(uint64_t){VM_IDENTITY_MAP_GPA}) < 0)
        return err_sys(-errno, "KVM_SET_IDENTITY_MAP_ADDR");
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)VM_TSS_GPA) < 0)
        return err_sys(-errno, "KVM_SET_TSS_ADDR");
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return err_sys(-errno, "KVM_CREATE_IRQCHIP");
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return err_sys(-errno, "KVM_CREATE_PIT2");
    return 0;
}

static int vm_create_devices(struct vm *vm, const struct vm_config *cfg)
{
    vm->host = (struct dev_host){
        .opaque = vm, .request_end = vm_host_request_end, .set_irq = vm_host_set_irq};
    int rc = dev_bus_create(&vm->bus);
    if (!rc)
        rc = dev_serial_create(vm->loop, cfg->serial_out_fd, &vm->host, &vm->serial);
    if (!rc)
        rc = dev_serial_register(vm->serial, vm->bus);
    if (!rc && cfg->serial_in_fd >= 0)
        rc = dev_serial_attach_input(vm->serial, cfg->serial_in_fd);
    if (!rc)
        rc = dev_sysport_register(vm->bus, &vm->host);
    if (!rc)
        rc = dev_rtc_create(&vm->rtc);
    if (!rc)
        rc = dev_rtc_register(vm->rtc, vm->bus);
    if (!rc)
        rc = dev_acpi_pm_create(&vm->host, &vm->acpi_pm);
    if (!rc)
        rc = dev_acpi_pm_register(vm->acpi_pm, vm->bus);
    return rc;
}

static int vm_create_vcpus(struct vm *vm)
{
    int run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        return err_sys(-errno, "KVM_GET_VCPU_MMAP_SIZE");
    vm->vcpu_events = (struct vcpu_events){.opaque = vm, .on_fault = vm_vcpu_fault};
    int rc = 0;
    for (unsigned i = 0; i < vm->cpu_count && !rc; i++)
        rc = vcpu_create(vm->vm_fd, i, (size_t)run_size, vm->bus, &vm->vcpu_events, &vm->vcpus[i]);
    return rc;
}

static int vm_boot(struct vm *vm, const struct vm_config *cfg)
{
    int rc = vm_cpu_setup(vm, cfg);
    if (rc)
        return rc;
    int khz = ioctl(vcpu_fd(vm->vcpus[0]), KVM_GET_TSC_KHZ, 0);
    struct boot_load_params params = {.kernel_path = cfg->kernel_path,
                                      .initrd_path = cfg->initrd_path,
                                      .cmdline = cfg->cmdline,
                                      .cpu_count = vm->cpu_count,
                                      .tsc_khz = khz > 0 ? (uint32_t)khz : 0};
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

int vm_create(uv_loop_t *loop, const struct vm_config *cfg, vm_end_fn on_end, void *opaque,
              struct vm **out)
{
    if (cfg->cpu_count < 1 || cfg->cpu_count > VM_MAX_CPUS)
        return err_set(-EINVAL, "--cpus must be between 1 and %d", VM_MAX_CPUS);
    struct vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return err_set(-ENOMEM, "out of memory");
    vm->loop = loop;
    vm->kvm_fd = vm->vm_fd = -1;
    vm->cpu_count = cfg->cpu_count;
    vm->hidden_caps = cfg->hidden_caps;
    vm->on_end = on_end;
    vm->on_end_opaque = opaque;
    pthread_mutex_init(&vm->end_lock, NULL);
    pthread_mutex_init(&vm->throttle_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&vm->throttle_cond, &attr);
    pthread_condattr_destroy(&attr);
    int rc = uv_async_init(loop, &vm->end_async, vm_on_end_async);
    if (rc) {
        free(vm);
        return err_set(rc, "uv_async_init: %s", uv_strerror(rc));
    }
    vm->end_async.data = vm;

    rc = vm_create_kvm(vm);
    if (!rc)
        rc = mem_create(cfg->mem_size, &vm->mem);
    if (!rc) {
        /* Memslot registration sleeps in KVM for a fixed few milliseconds; nothing before the
         * first KVM_RUN needs the slots, so the rest of setup runs meanwhile. */
        struct vm_register_job job = {.vm = vm};
        bool threaded = pthread_create(&job.thread, NULL, vm_register_memory, &job) == 0;
        if (!threaded)
            vm_register_memory(&job);
        rc = vm_create_platform(vm);
        if (!rc)
            rc = vm_create_devices(vm, cfg);
        if (!rc)
            rc = vm_create_vcpus(vm);
        if (!rc && cfg->kernel_path)
            rc = vm_boot(vm, cfg);
        if (threaded)
            pthread_join(job.thread, NULL);
        if (!rc && job.rc)
            rc = err_set(job.rc, "%s", job.msg);
    }
    if (rc) {
        vm_close(vm);
        return rc;
    }
    *out = vm;
    return 0;
}

/* KVM_SET_CLOCK comes last, right before the vCPUs run again: a guest that runs before its
 * clock is set sees time jump (Hyper-V guests hang). */
static int vm_apply_pending_clock(struct vm *vm)
{
    dev_acpi_pm_release_timer(vm->acpi_pm); /* the PM timer follows the same rule */
    if (!vm->clock_pending)
        return 0;
    vm->clock_pending = false;
    if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &vm->clock) < 0)
        return err_sys(-errno, "KVM_SET_CLOCK");
    return 0;
}

int vm_start(struct vm *vm, bool paused)
{
    int rc = vcpu_signals_init();
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

/* Each vCPU runs VM_THROTTLE_SLICE_NS, then sleeps pct/(100-pct) of that, so it gets
 * (100-pct)% of its time. Short slices keep the guest responsive while it is slowed. */
#define VM_THROTTLE_SLICE_NS 10000000ull

static void *vm_throttle_thread(void *arg)
{
    struct vm *vm = arg;
    pthread_setname_np(pthread_self(), "throttle");
    pthread_mutex_lock(&vm->throttle_lock);
    while (vm->throttle_pct) {
        uint64_t sleep_ns = VM_THROTTLE_SLICE_NS * vm->throttle_pct / (100 - vm->throttle_pct);
        for (unsigned i = 0; i < vm->cpu_count; i++)
            vcpu_throttle(vm->vcpus[i], sleep_ns);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + sleep_ns + VM_THROTTLE_SLICE_NS;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&vm->throttle_cond, &vm->throttle_lock, &ts);
    }
    pthread_mutex_unlock(&vm->throttle_lock);
    return NULL;
}

int vm_set_throttle(struct vm *vm, unsigned pct)
{
    if (pct > 99)
        pct = 99;
    pthread_mutex_lock(&vm->throttle_lock);
    vm->throttle_pct = pct;
    pthread_cond_broadcast(&vm->throttle_cond);
    bool join = !pct && vm->throttle_running;
    int rc = 0;
    if (pct && !vm->throttle_running) {
        rc = pthread_create(&vm->throttle_thread, NULL, vm_throttle_thread, vm);
        if (rc)
            rc = err_sys(-rc, "cannot start the throttle thread");
        else
            vm->throttle_running = true;
    }
    if (join)
        vm->throttle_running = false;
    pthread_mutex_unlock(&vm->throttle_lock);
    if (join) {
        pthread_join(vm->throttle_thread, NULL);
        for (unsigned i = 0; i < vm->cpu_count; i++)
            vcpu_throttle(vm->vcpus[i], 0);
    }
    return rc;
}

unsigned vm_throttle(struct vm *vm)
{
    pthread_mutex_lock(&vm->throttle_lock);
    unsigned pct = vm->throttle_pct;
    pthread_mutex_unlock(&vm->throttle_lock);
    return pct;
}

void vm_stop(struct vm *vm)
{
    vm_set_throttle(vm, 0);
    for (unsigned i = 0; i < vm->cpu_count; i++)
        if (vm->vcpus[i])
            vcpu_stop(vm->vcpus[i]);
    if (vm->serial)
        dev_serial_flush(vm->serial);
}

static void vm_on_closed(uv_handle_t *h)
{
    struct vm *vm = h->data;
    pthread_mutex_destroy(&vm->end_lock);
    pthread_mutex_destroy(&vm->throttle_lock);
    pthread_cond_destroy(&vm->throttle_cond);
    free(vm);
}

void vm_close(struct vm *vm)
{
    if (!vm)
        return;
    vm_stop(vm);
    for (unsigned i = 0; i < vm->cpu_count; i++)
        vcpu_destroy(vm->vcpus[i]);
    dev_serial_close(vm->serial);
    dev_rtc_destroy(vm->rtc);
    dev_acpi_pm_destroy(vm->acpi_pm);
    dev_bus_destroy(vm->bus);
    mem_destroy(vm->mem);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    uv_close((uv_handle_t *)&vm->end_async, vm_on_closed);
}

struct vm_end vm_end_state(struct vm *vm)
{
    pthread_mutex_lock(&vm->end_lock);
    struct vm_end e = vm->end;
    pthread_mutex_unlock(&vm->end_lock);
    return e;
}

int vm_set_vcpu_cpuid(struct vm *vm, unsigned index, const struct kvm_cpuid2 *cpuid)
{
    return vcpu_set_cpuid(vm->vcpus[index], cpuid);
}

const struct kvm_cpuid2 *vm_vcpu_cpuid(const struct vm *vm, unsigned index)
{
    return vcpu_cpuid(vm->vcpus[index]);
}

void vm_host_nested(int kvm_fd, unsigned hidden_caps, struct vm_host_nested *out)
{
    int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NESTED_STATE);
    out->nested_max = n > 0 && !(hidden_caps & VM_HIDE_NESTED_STATE) ? (uint32_t)n : 0;
    out->evmcs = !(hidden_caps & VM_HIDE_EVMCS) &&
                 ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_HYPERV_ENLIGHTENED_VMCS) > 0;
}

const struct vm_host_nested *vm_nested_caps(const struct vm *vm)
{
    return &vm->host_nested;
}

int vm_enable_evmcs(struct vm *vm, unsigned index, uint16_t *version)
{
    if (!vm->host_nested.evmcs)
        return err_set(-ENOTSUP, "vCPU %u: this host lacks KVM_CAP_HYPERV_ENLIGHTENED_VMCS%s",
                       index, vm->hidden_caps & VM_HIDE_EVMCS ? " (hidden by --hide-cap)" : "");
    return vcpu_enable_evmcs(vm->vcpus[index], version);
}

uint16_t vm_vcpu_evmcs_version(const struct vm *vm, unsigned index)
{
    return vcpu_evmcs_version(vm->vcpus[index]);
}

unsigned vm_cpu_count(const struct vm *vm)
{
    return vm->cpu_count;
}

int vm_vcpu_fd(const struct vm *vm, unsigned index)
{
    return index < vm->cpu_count && vm->vcpus[index] ? vcpu_fd(vm->vcpus[index]) : -1;
}

int vm_fd(const struct vm *vm)
{
    return vm->vm_fd;
}

int vm_kvm_fd(const struct vm *vm)
{
    return vm->kvm_fd;
}

struct mem *vm_mem(const struct vm *vm)
{
    return vm->mem;
}

struct dev_serial *vm_serial(const struct vm *vm)
{
    return vm->serial;
}

struct dev_rtc *vm_rtc(const struct vm *vm)
{
    return vm->rtc;
}

struct dev_acpi_pm *vm_acpi_pm(const struct vm *vm)
{
    return vm->acpi_pm;
}

void vm_set_clock_on_resume(struct vm *vm, const struct kvm_clock_data *clock)
{
    vm->clock = *clock;
    vm->clock_pending = true;
}

bool vm_pending_clock(const struct vm *vm, struct kvm_clock_data *out)
{
    if (vm->clock_pending)
        *out = vm->clock;
    return vm->clock_pending;
}
