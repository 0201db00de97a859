#include "vcpu/vcpu.h"

#include "clock/clock.h"
#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"
#include "kvm/kvm_host.h"
#include "kvm/kvm_vcpu.h"
#include "kvm/kvm_vm.h"
#include "vcpu/vcpu_cpuid.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Kicks a vCPU thread out of KVM_RUN. The handler does nothing; what matters is that it is
 * installed without SA_RESTART, so KVM_RUN returns EINTR. */
#define VCPU_KICK_SIGNAL SIGUSR2

enum vcpu_state { VCPU_IDLE, VCPU_RUNNING, VCPU_PAUSED };

struct vcpu {
    unsigned index;
    int fd;
    struct kvm_run *run;
    size_t run_size;
    struct dev_bus *bus;
    const struct vcpu_events *events;

    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum vcpu_state state;
    bool pause_requested;
    bool stop_requested;
    bool parked;              /* parked by the guest or after a fatal exit: never runs again */
    bool io_pending;          /* last exit was IO/MMIO: KVM completes it on the next KVM_RUN */
    uint64_t throttle_ns;     /* sleep this long before running on (auto-converge) */
    struct kvm_cpuid2 *cpuid; /* as KVM holds it after the last vcpu_set_cpuid */
    uint16_t evmcs_version;   /* what enabling eVMCS returned; 0: not enabled */
};

static void vcpu_kick_handler(int sig)
{
    (void)sig;
}

int vcpu_signals_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = vcpu_kick_handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0)
        return err_sys(-errno, "sigaction");
    return 0;
}

int vcpu_create(int vm_fd, unsigned index, size_t run_size, struct dev_bus *bus,
                const struct vcpu_events *events, struct vcpu **out)
{
    struct vcpu *v = calloc(1, sizeof(*v));
    if (!v)
        return err_set(-ENOMEM, "out of memory");
    v->index = index;
    v->bus = bus;
    v->events = events;
    v->run_size = run_size;
    int rc = kvm_vm_create_vcpu(vm_fd, index, &v->fd);
    if (rc) {
        free(v);
        return rc;
    }
    pthread_mutex_init(&v->lock, NULL);
    clock_cond_init(&v->cond);
    v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        rc = -errno;
        close(v->fd);
        pthread_cond_destroy(&v->cond);
        pthread_mutex_destroy(&v->lock);
        free(v);
        return err_sys(rc, "mmap of vCPU %u's kvm_run", index);
    }
    *out = v;
    return 0;
}

void vcpu_destroy(struct vcpu *v)
{
    if (!v)
        return;
    vcpu_stop(v);
    munmap(v->run, v->run_size);
    free(v->cpuid);
    close(v->fd);
    pthread_cond_destroy(&v->cond);
    pthread_mutex_destroy(&v->lock);
    free(v);
}

int vcpu_fd(const struct vcpu *v)
{
    return v->fd;
}

unsigned vcpu_index(const struct vcpu *v)
{
    return v->index;
}

/* A vCPU given the Hyper-V interface: KVM_CAP_HYPERV_ENFORCE_CPUID, so that KVM offers the
 * guest exactly the MSRs and hypercalls its CPUID names; SynIC (version 2, which keeps the
 * message and event pages as they are when their MSRs are restored) where the CPUID offers
 * it, since KVM refuses SynIC and timer MSRs until it is active. Both before any state is
 * restored: the restore writes SynIC's MSRs. */
static int vcpu_hyperv_caps(struct vcpu *v, const struct kvm_cpuid2 *cpuid)
{
    if (!hyperv_present(cpuid->entries, cpuid->nent))
        return 0;
    const struct kvm_host *host;
    int rc = kvm_host(&host);
    if (!rc && host->hyperv_enforce_cpuid)
        rc = kvm_vcpu_enable_cap(v->fd, v->index, KVM_CAP_HYPERV_ENFORCE_CPUID,
                                 "KVM_CAP_HYPERV_ENFORCE_CPUID");
    if (!rc && hyperv_decode(cpuid->entries, cpuid->nent) & HV_BIT(HV_SYNIC))
        rc = kvm_vcpu_enable_cap(v->fd, v->index, KVM_CAP_HYPERV_SYNIC2, "KVM_CAP_HYPERV_SYNIC2");
    return rc;
}

int vcpu_set_cpuid(struct vcpu *v, const struct kvm_cpuid2 *cpuid)
{
    int rc = kvm_vcpu_set_cpuid2(v->fd, v->index, cpuid);
    if (!rc)
        rc = vcpu_hyperv_caps(v, cpuid);
    if (rc)
        return rc;
    /* Keep what KVM made of it (it may add bits as it sets the table): reading it later would
     * have to wait for the vCPU to leave KVM_RUN, which a guest that never exits never does. */
    struct kvm_cpuid2 *got =
        calloc(1, sizeof(*got) + VCPU_CPUID_MAX_ENTRIES * sizeof(got->entries[0]));
    if (!got)
        return err_set(-ENOMEM, "out of memory");
    got->nent = VCPU_CPUID_MAX_ENTRIES;
    if ((rc = kvm_vcpu_get_cpuid2(v->fd, v->index, got))) {
        free(got);
        return rc;
    }
    free(v->cpuid);
    v->cpuid = got;
    return 0;
}

int vcpu_set_msrs(struct vcpu *v, const struct kvm_msrs *msrs)
{
    return kvm_vcpu_set_msrs(v->fd, v->index, msrs);
}

int vcpu_enable_evmcs(struct vcpu *v, uint16_t *version)
{
    uint16_t got = 0;
    int rc = kvm_vcpu_enable_evmcs(v->fd, v->index, &got);
    if (rc)
        return rc;
    v->evmcs_version = got;
    if (version)
        *version = got;
    return 0;
}

uint16_t vcpu_evmcs_version(const struct vcpu *v)
{
    return v->evmcs_version;
}

const struct kvm_cpuid2 *vcpu_cpuid(const struct vcpu *v)
{
    return v->cpuid;
}

static void vcpu_segment(struct kvm_segment *s, uint16_t selector, uint8_t type, bool code)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = selector;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->g = 1;
    s->l = code;
    s->db = !code;
}

int vcpu_setup_boot_entry(struct vcpu *v, const struct boot_entry *entry)
{
    struct kvm_sregs sregs;
    int rc = kvm_vcpu_get_sregs(v->fd, v->index, &sregs);
    if (rc)
        return rc;

    vcpu_segment(&sregs.cs, entry->code_sel, 0xb, true);
    vcpu_segment(&sregs.ds, entry->data_sel, 0x3, false);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    memset(&sregs.tr, 0, sizeof(sregs.tr));
    sregs.tr.selector = entry->tss_sel;
    sregs.tr.limit = 0x67;
    sregs.tr.type = 0xb; /* busy 64-bit TSS: VM entry insists on one */
    sregs.tr.present = 1;
    memset(&sregs.ldt, 0, sizeof(sregs.ldt));
    sregs.ldt.type = 0x2;
    sregs.ldt.unusable = 1;
    sregs.gdt.base = entry->gdt_base;
    sregs.gdt.limit = entry->gdt_limit;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    /* PE | MP | ET | NE | WP | PG */
    sregs.cr0 = 0x80010033;
    sregs.cr3 = entry->cr3;
    /* PAE | OSFXSR | OSXMMEXCPT */
    sregs.cr4 = 0x620;
    /* LME | LMA */
    sregs.efer = 0x500;
    if ((rc = kvm_vcpu_set_sregs(v->fd, v->index, &sregs)))
        return rc;

    struct kvm_regs regs;
    memset(&regs, 0, sizeof(regs));
    regs.rip = entry->rip;
    regs.rdi = v->index;
    regs.rsi = entry->rsi;
    regs.rflags = 0x2;
    if ((rc = kvm_vcpu_set_regs(v->fd, v->index, &regs)))
        return rc;

    /* With the in-kernel irqchip every vCPU but 0 starts waiting for INIT/SIPI; direct boot
     * starts them all at once. */
    if (!entry->start_all)
        return 0;
    struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
    return kvm_vcpu_set_mp_state(v->fd, v->index, &mp);
}

static void vcpu_report_fault(struct vcpu *v, const char *what)
{
    struct kvm_regs regs;
    char line[256];
    if (kvm_vcpu_get_regs(v->fd, v->index, &regs) == 0)
        snprintf(line, sizeof(line), "vCPU %u: %s at RIP 0x%llx", v->index, what,
                 (unsigned long long)regs.rip);
    else
        snprintf(line, sizeof(line), "vCPU %u: %s (RIP unreadable)", v->index, what);
    v->events->on_fault(v->events->opaque, v->index, line);
}

/* Handles one exit; returns false when the vCPU must stop running. */
static bool vcpu_handle_exit(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    char what[160];
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        v->io_pending = true;
        enum dev_action a =
            dev_bus_pio(v->bus, run->io.port, run->io.size, run->io.direction == KVM_EXIT_IO_OUT,
                        (uint8_t *)run + run->io.data_offset, run->io.count);
        return a == DEV_CONTINUE;
    }
    case KVM_EXIT_MMIO: {
        v->io_pending = true;
        enum dev_action a = dev_bus_mmio(v->bus, run->mmio.phys_addr, run->mmio.len,
                                         run->mmio.is_write, run->mmio.data);
        return a == DEV_CONTINUE;
    }
    case KVM_EXIT_SHUTDOWN:
        vcpu_report_fault(v, "triple fault (KVM_EXIT_SHUTDOWN)");
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        snprintf(what, sizeof(what), "KVM internal error, suberror %u", run->internal.suberror);
        vcpu_report_fault(v, what);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        snprintf(what, sizeof(what), "VM entry failed, hardware reason 0x%llx",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        vcpu_report_fault(v, what);
        return false;
    case KVM_EXIT_HYPERV:
        /* SynIC MSR writes are KVM's business (tern has no VMBus); a hypercall KVM leaves to
         * userspace is answered "invalid code": tern offers none of them. */
        hyperv_exit_answer(&run->hyperv);
        return true;
    case KVM_EXIT_SYSTEM_EVENT:
        snprintf(what, sizeof(what), "system event %u (shutdown/reset requested by KVM)",
                 run->system_event.type);
        vcpu_report_fault(v, what);
        return false;
    default:
        snprintf(what, sizeof(what), "unexpected KVM exit reason %u", run->exit_reason);
        vcpu_report_fault(v, what);
        return false;
    }
}

/* Lets KVM finish an I/O instruction whose exit was handled, without running the guest on. */
static void vcpu_complete_io(struct vcpu *v)
{
    if (!v->io_pending)
        return;
    v->run->immediate_exit = 1;
    if (kvm_vcpu_run(v->fd) < 0 && errno != EINTR && errno != EAGAIN)
        err_warn("vCPU %u: completing I/O before pause: %s", v->index, strerror(errno));
    v->io_pending = false;
}

/* Sleeps out a throttle request, waking early for a pause or stop. The vCPU counts as running:
 * a pause request simply ends the sleep. */
static void vcpu_throttle_sleep_locked(struct vcpu *v)
{
    struct timespec ts = clock_deadline(v->throttle_ns);
    v->throttle_ns = 0;
    while (!v->stop_requested && !v->pause_requested)
        if (pthread_cond_timedwait(&v->cond, &v->lock, &ts) == ETIMEDOUT)
            break;
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    char name[16];
    snprintf(name, sizeof(name), "vcpu%u", v->index);
    pthread_setname_np(pthread_self(), name);

    pthread_mutex_lock(&v->lock);
    for (;;) {
        while (!v->stop_requested && (v->pause_requested || v->parked)) {
            if (v->io_pending) {
                pthread_mutex_unlock(&v->lock);
                vcpu_complete_io(v);
                pthread_mutex_lock(&v->lock);
                continue;
            }
            if (v->state != VCPU_PAUSED) {
                v->state = VCPU_PAUSED;
                pthread_cond_broadcast(&v->cond);
            }
            pthread_cond_wait(&v->cond, &v->lock);
        }
        if (v->stop_requested)
            break;
        if (v->throttle_ns) {
            vcpu_throttle_sleep_locked(v);
            continue; /* a pause or stop may have come meanwhile */
        }
        v->state = VCPU_RUNNING;
        /* Cleared under the lock: a pause request made after this point sets it again (and
         * kicks), so KVM_RUN returns at once instead of missing the request. */
        v->run->immediate_exit = 0;
        pthread_mutex_unlock(&v->lock);

        int rc = kvm_vcpu_run(v->fd);
        int err = errno;
        bool keep_running = true;
        if (rc < 0) {
            v->io_pending = false; /* KVM_RUN was entered: any pending I/O is complete */
            if (err != EINTR && err != EAGAIN) {
                char what[96];
                snprintf(what, sizeof(what), "KVM_RUN failed: %s", strerror(err));
                vcpu_report_fault(v, what);
                keep_running = false;
            }
        } else {
            v->io_pending = false;
            keep_running = vcpu_handle_exit(v);
        }
        pthread_mutex_lock(&v->lock);
        if (!keep_running)
            v->parked = true;
    }
    v->state = VCPU_IDLE;
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

int vcpu_start(struct vcpu *v)
{
    v->state = VCPU_RUNNING;
    int rc = pthread_create(&v->thread, NULL, vcpu_thread, v);
    if (rc)
        return err_sys(-rc, "cannot start vCPU %u's thread", v->index);
    v->started = true;
    return 0;
}

static void vcpu_kick_locked(struct vcpu *v)
{
    v->run->immediate_exit = 1;
    if (v->started)
        pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_pause_request(struct vcpu *v)
{
    pthread_mutex_lock(&v->lock);
    v->pause_requested = true;
    vcpu_kick_locked(v);
    pthread_mutex_unlock(&v->lock);
}

void vcpu_pause_wait(struct vcpu *v)
{
    pthread_mutex_lock(&v->lock);
    while (v->started && v->state == VCPU_RUNNING)
        pthread_cond_wait(&v->cond, &v->lock);
    pthread_mutex_unlock(&v->lock);
}

void vcpu_throttle(struct vcpu *v, uint64_t sleep_ns)
{
    pthread_mutex_lock(&v->lock);
    v->throttle_ns = sleep_ns;
    if (sleep_ns)
        vcpu_kick_locked(v);
    pthread_mutex_unlock(&v->lock);
}

void vcpu_resume(struct vcpu *v)
{
    pthread_mutex_lock(&v->lock);
    v->pause_requested = false;
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
}

void vcpu_stop(struct vcpu *v)
{
    pthread_mutex_lock(&v->lock);
    if (!v->started) {
        pthread_mutex_unlock(&v->lock);
        return;
    }
    v->stop_requested = true;
    vcpu_kick_locked(v);
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
    pthread_join(v->thread, NULL);
    v->started = false;
}
