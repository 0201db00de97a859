/* vm: one virtual machine — guest RAM, its devices and vCPUs — and its lifecycle: create,
 * start, pause/resume, stop, close. Its KVM state (vm_state.h) and its devices' state are its
 * own: other folders save and restore them through this header and vm_state.h, never through
 * a raw fd.
 *
 * The VM lives on a libuv loop (the caller's main thread). vCPU threads report the VM's end
 * (guest exit code, reset, fatal exit) through the loop: the callback given to vm_create runs
 * there once, with the VM still intact; the caller then vm_stop()s it. vm_pause() returns only
 * when every device is quiesced and every vCPU is out of KVM_RUN with any pending I/O
 * completed, so that its state is consistent and may be read; vm_resume() lets them run again.
 */
#ifndef TERN_VM_H
#define TERN_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "devices/dev_disk.h"
#include "devices/dev_net.h"

#define VM_MAX_CPUS 64
#define VM_MAX_DEVICES 16

/* --hide-cap: the VM behaves as if the host's KVM lacked these (to try streams against older
 * or smaller hosts). */
#define VM_HIDE_NESTED_STATE (1u << 0) /* KVM_CAP_NESTED_STATE */
#define VM_HIDE_EVMCS (1u << 1)        /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
#define VM_HIDE_SYNIC (1u << 2)        /* KVM_CAP_HYPERV_SYNIC2 */
#define VM_HIDE_VMX_CONTROLS (1u << 3) /* the optional VMX controls (a smaller VT-x) */

/* What the host offers for nested guests, as the VM sees it (after --hide-cap). */
struct vm_host_nested {
    uint32_t nested_max; /* KVM_CAP_NESTED_STATE: the largest nested state; 0 when none */
    bool evmcs;          /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
};
int vm_host_nested(unsigned hidden_caps, struct vm_host_nested *out);

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
    bool hyperv;          /* the Hyper-V leaves (--hyperv), with hyperv_set */
    uint32_t hyperv_set;  /* HV_BIT()s of hyperv_cpuid.h: the named enlightenments */
    bool kvm_hidden;      /* --hide-kvm: no KVM leaves in CPUID */
    unsigned hidden_caps; /* VM_HIDE_* */
    bool thp_off;         /* guest RAM without MADV_HUGEPAGE (--thp off) */
    unsigned disk_count;  /* --disk, one virtio-blk each */
    struct dev_disk disks[DEV_MAX_DISKS];
    unsigned net_count; /* --net, one virtio-net each */
    struct dev_net nets[DEV_MAX_NETS];
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
/* Stops every vCPU thread for good and has the devices write out what is pending. */
void vm_stop(struct vm *vm);
/* Releases everything; the loop must run once more to finish closing handles. */
void vm_close(struct vm *vm);

struct vm_end vm_end_state(struct vm *vm);

unsigned vm_cpu_count(const struct vm *vm);
struct mem *vm_mem(const struct vm *vm);
/* A vCPU, for tests that read its registers while the VM is paused. */
struct vcpu *vm_vcpu(const struct vm *vm, unsigned index);
/* A vCPU's CPUID as KVM holds it (readable at any time, also while it runs). */
struct kvm_cpuid2;
const struct kvm_cpuid2 *vm_vcpu_cpuid(const struct vm *vm, unsigned index);
const struct vm_host_nested *vm_nested_caps(const struct vm *vm);
/* Bytes of XSAVE state each vCPU carries on this host (KVM_CAP_XSAVE2's size, >= 4096). */
uint32_t vm_xsave_size(const struct vm *vm);

/* A device's state, while the VM is paused or before it first runs (dev.h: save, load). */
struct dev_ops;
int vm_device_save(struct vm *vm, const struct dev_ops *dev, unsigned instance, uint8_t *buf,
                   size_t *len);
int vm_device_load(struct vm *vm, const struct dev_ops *dev, unsigned instance, const uint8_t *buf,
                   size_t len);
/* How many of a device the VM has (one virtio-blk per disk). */
unsigned vm_device_instances(struct vm *vm, const struct dev_ops *dev);
/* The VM's disks as it was given them, each size filled in from its image. */
unsigned vm_disks(const struct vm *vm, const struct dev_disk **out);
/* The VM's network devices, each MAC filled in. */
unsigned vm_nets(const struct vm *vm, const struct dev_net **out);
/* A live migration's handover: the source gives up what only one VM may hold (image locks);
 * the destination's vm_start takes it; a source that resumes takes it back. */
void vm_release(struct vm *vm);

/* What the guest's CPU was given that a destination must offer too (the handshake's
 * preflight): the VMX capability MSRs (none without --nested), the Hyper-V enlightenments
 * (hyperv_cpuid.h's HV_BIT()s, from vCPU 0's CPUID) and the TSC rate (0: unknown). */
struct vm_cpu_need {
    const struct kvm_msr_entry *vmx;
    uint32_t vmx_count;
    bool hyperv;
    uint32_t hyperv_set;
    uint32_t tsc_khz;
};
void vm_cpu_need(const struct vm *vm, struct vm_cpu_need *out);

/* What this host offers a VM that arrives by migration (a destination's side of the
 * handshake): the XSAVE size its vCPUs take, nested support (after --hide-cap), and the CPUID
 * a vCPU here really gets (KVM may add to a table as it sets it, as PVM does, so
 * KVM_GET_SUPPORTED_CPUID alone undercounts: a throwaway VM tells). */
struct vm_host_offer {
    uint32_t xsave_size;
    struct vm_host_nested nested;
    struct kvm_cpuid2 *cpuid; /* malloc'd */
    struct kvm_msrs *vmx;     /* malloc'd; NULL without nested VMX */
    bool hyperv;              /* KVM_CAP_HYPERV and the Hyper-V CPUID */
    uint32_t hyperv_set;      /* the enlightenments it offers (HV_BIT()s) */
    uint32_t tsc_khz;         /* a vCPU's TSC rate here */
    bool tsc_scaling;         /* KVM_CAP_TSC_CONTROL */
};
int vm_host_offer(unsigned hidden_caps, struct vm_host_offer *out);
void vm_host_offer_free(struct vm_host_offer *offer);

/* The host's RAM in bytes, the ceiling for --mem. */
uint64_t vm_host_ram_bytes(void);
/* 0 when size bytes of guest RAM fit the host's RAM; else an error naming what. */
int vm_check_mem_size(uint64_t size, const char *what);

#endif
