/* vm_internal: the VM object, shared by the files of vm/ only (vm.c: lifecycle; vm_state.c: its
 * KVM state; vm_cpu.c: a fresh boot's CPU; vm_devices.c: its devices; vm_throttle.c:
 * auto-converge). Nothing outside vm/ includes this. */
#ifndef TERN_VM_INTERNAL_H
#define TERN_VM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>

#include "devices/dev.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"

struct vm_device {
    const struct dev_ops *ops;
    void *dev;
    unsigned instance;
};

#define VM_MSI_ROUTES 64u

struct vm_msi {
    bool used;
    uint64_t addr;
    uint32_t data;
};

struct vm {
    uv_loop_t *loop;
    int vm_fd;
    unsigned cpu_count;
    unsigned hidden_caps;
    struct vm_host_nested host_nested;
    struct mem *mem;
    struct dev_bus *bus;
    struct pci_bus *pci;
    struct dev_host host;
    pthread_mutex_t msi_lock;
    struct vm_msi msi[VM_MSI_ROUTES];
    unsigned disk_count;
    struct dev_disk disks[DEV_MAX_DISKS];
    unsigned net_count;
    struct dev_net nets[DEV_MAX_NETS];
    unsigned device_count;
    struct vm_device devices[VM_MAX_DEVICES];
    struct vcpu_events vcpu_events;
    struct vcpu *vcpus[VM_MAX_CPUS];
    bool started;
    bool paused;
    bool clock_pending;
    struct kvm_clock_data clock;
    struct kvm_msrs *vmx; /* the VMX capability MSRs the guest was given; NULL: none */
    uint32_t tsc_khz;     /* the guest's TSC rate; 0: unknown */

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

/* vm_devices.c: every device of dev_table, created and attached in order. */
int vm_devices_create(struct vm *vm, const struct vm_config *cfg);
/* Each device's quiesce, resume or stop, in table order (resume: the reverse). */
void vm_devices_quiesce(struct vm *vm);
void vm_devices_resume(struct vm *vm);
void vm_devices_stop(struct vm *vm);
void vm_devices_destroy(struct vm *vm);

/* vm_irq.c: dev_host's MSI routes. */
int vm_irq_msi_route(void *opaque, int *gsi, uint64_t addr, uint32_t data, int fd);
void vm_irq_msi_release(void *opaque, int gsi, int fd);

/* vm_devices.c: each device's claim (the first failure ends it) and release. */
int vm_devices_claim(struct vm *vm);

/* vm_throttle.c */
void vm_throttle_init(struct vm *vm);
void vm_throttle_destroy(struct vm *vm);

/* vm_cpu.c */
int vm_cpu_setup(struct vm *vm, const struct vm_config *cfg);
/* What the handshake will name of the guest's CPU (vm_cpu_need), after a boot or a restore:
 * the VMX capability MSRs among msrs (vCPU 0's; others, feature control among them, are left
 * out) and the TSC rate its vCPUs run at (0: unknown). */
void vm_cpu_keep(struct vm *vm, const struct kvm_msr_entry *msrs, uint32_t n, uint32_t tsc_khz);
struct kvm_host;
/* The host's VMX capability MSRs as --nested gives them (after --hide-cap vmx-controls);
 * feature control is not one of them. */
int vm_cpu_vmx_msrs(const struct kvm_host *host, unsigned hidden_caps, struct kvm_msrs **out);
/* The Hyper-V leaves KVM offers (the system ioctl, else the one on vcpu_fd, -1 for none). */
int vm_cpu_hv_leaves(const struct kvm_host *host, int vcpu_fd, struct kvm_cpuid2 **out);
/* The enlightenments (HV_BIT()s) the host offers after --hide-cap; 0 without hv. With no_cap,
 * also those its leaves offer but a capability it lacks keeps out. */
uint32_t vm_cpu_hyperv_offered(const struct kvm_host *host, unsigned hidden_caps,
                               const struct kvm_cpuid2 *hv, uint32_t *no_cap);

#endif
