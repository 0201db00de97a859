/* vm: one virtual machine — the KVM fds, guest RAM, devices and vCPUs — and its lifecycle:
 * create, start, pause/resume, stop, close.
 *
 * The VM lives on a libuv loop (the caller's main thread). vCPU threads report the VM's end
 * (guest exit code, reset, fatal exit) through the loop: the callback given to vm_create runs
 * there once, with the VM still intact; the caller then vm_stop()s it. vm_pause() returns only
 * when every vCPU is out of KVM_RUN with any pending I/O completed, so that its state is
 * consistent and may be read; vm_resume() lets them run again.
 */
#ifndef TERN_VM_H
#define TERN_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define VM_MAX_CPUS 64

/* --hide-cap: the VM behaves as if the host's KVM lacked these (to try streams against older
 * or smaller hosts). */
#define VM_HIDE_NESTED_STATE (1u << 0) /* KVM_CAP_NESTED_STATE */
#define VM_HIDE_EVMCS (1u << 1)        /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */

/* What the host offers for nested guests, as the VM sees it (after --hide-cap). */
struct vm_host_nested {
    uint32_t nested_max; /* KVM_CAP_NESTED_STATE: the largest nested state; 0 when none */
    bool evmcs;          /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
};
void vm_host_nested(int kvm_fd, unsigned hidden_caps, struct vm_host_nested *out);

struct vm_config {
    uint64_t mem_size;
    unsigned cpu_count;
    const char *kernel_path; /* NULL: an empty VM whose state a restore will supply */
    const char *initrd_path; /* bzImage kernels only */
    const char *cmdline;     /* NULL: the boot protocol's default */
    int serial_out_fd;       /* -1: output discarded */
    int serial_in_fd;        /* -1: no input */
    /* The CPU a fresh boot gives its vCPUs (a restore takes the stream's instead). */
    bool nested;          /* VMX, feature control and the VMX capability MSRs */
    bool hyperv;          /* the Hyper-V CPUID leaves */
    bool evmcs;           /* enlightened VMCS enabled (needs nested and hyperv) */
    unsigned hidden_caps; /* VM_HIDE_* */
};

enum vm_end_kind {
    VM_END_NONE,      /* still running */
    VM_END_EXIT_CODE, /* the guest wrote its exit code */
    VM_END_RESET,     /* the guest pulsed the reset line */
    VM_END_POWER_OFF, /* the guest entered ACPI S5 */
    VM_END_FAULT,     /* a vCPU hit a fatal exit; message says which */
};

struct vm_end {
    enum vm_end_kind kind;
    uint32_t code;
    char message[256];
};

struct vm;
typedef void (*vm_end_fn)(struct vm *vm, void *opaque);

int vm_create(uv_loop_t *loop, const struct vm_config *cfg, vm_end_fn on_end, void *opaque,
              struct vm **out);
/* Starts the vCPU threads; with paused, they wait for vm_resume(). */
int vm_start(struct vm *vm, bool paused);
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
bool vm_is_paused(const struct vm *vm);
/* Auto-converge: each vCPU gets only (100 - pct)% of its time (pct 0..99; 0 lifts it). */
int vm_set_throttle(struct vm *vm, unsigned pct);
unsigned vm_throttle(struct vm *vm);
/* Stops every vCPU thread for good and writes out pending serial output. */
void vm_stop(struct vm *vm);
/* Releases everything; the loop must run once more to finish closing handles. */
void vm_close(struct vm *vm);

struct vm_end vm_end_state(struct vm *vm);

/* For state capture and restore (while paused or before start) and for tests. */
unsigned vm_cpu_count(const struct vm *vm);
int vm_vcpu_fd(const struct vm *vm, unsigned index);
int vm_fd(const struct vm *vm);
int vm_kvm_fd(const struct vm *vm);
struct mem *vm_mem(const struct vm *vm);
struct dev_serial *vm_serial(const struct vm *vm);
struct dev_rtc *vm_rtc(const struct vm *vm);
struct dev_acpi_pm *vm_acpi_pm(const struct vm *vm);
/* A vCPU's CPUID: set (before it runs), and read as KVM holds it (at any time). */
struct kvm_cpuid2;
int vm_set_vcpu_cpuid(struct vm *vm, unsigned index, const struct kvm_cpuid2 *cpuid);
const struct kvm_cpuid2 *vm_vcpu_cpuid(const struct vm *vm, unsigned index);

const struct vm_host_nested *vm_nested_caps(const struct vm *vm);
/* Enables eVMCS on a vCPU (vcpu_enable_evmcs); the version stays readable for captures. */
int vm_enable_evmcs(struct vm *vm, unsigned index, uint16_t *version);
uint16_t vm_vcpu_evmcs_version(const struct vm *vm, unsigned index);

/* A restored VM's clock is set right before its vCPUs first run (see mig_state.c). */
struct kvm_clock_data;
void vm_set_clock_on_resume(struct vm *vm, const struct kvm_clock_data *clock);
/* The clock still waiting to be set, if any: a restored VM that never ran. */
bool vm_pending_clock(const struct vm *vm, struct kvm_clock_data *out);

/* The host's RAM in bytes, the ceiling for --mem. */
uint64_t vm_host_ram_bytes(void);

#endif
