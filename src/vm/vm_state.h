/* vm_state: the VM's KVM state — the in-kernel interrupt controllers, the PIT, the clock — and
 * its vCPUs' (vcpu_state.h), as tern saves and restores it.
 *
 * vm_state_save() reads it all while the VM is paused. vm_state_restore() applies it to a VM
 * built empty (vm_create with no kernel) once all guest RAM is in place, in the order of
 * vm_restore_steps, each step naming what it must follow and why; the clock is left for
 * vm_start/vm_resume to set right before the vCPUs run. Device state is not here: each device
 * saves its own (vm_device_save).
 */
#ifndef TERN_VM_STATE_H
#define TERN_VM_STATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vcpu/vcpu_state.h"
#include "vm/vm.h"

enum vm_item { VM_IRQCHIP, VM_PIT2, VM_CLOCK, VM_ITEMS };
#define VM_IRQCHIPS 3 /* 0: PIC master, 1: PIC slave, 2: IOAPIC */

struct vm_state {
    uint32_t have[VM_ITEMS]; /* 1u << instance */
    struct kvm_irqchip irqchip[VM_IRQCHIPS];
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    unsigned cpu_count;
    struct vcpu_state vcpus[VM_MAX_CPUS];
};

/* How many of an item a VM has (IRQCHIP: 3; the others 1). */
unsigned vm_item_instances(enum vm_item item);
const char *vm_item_name(enum vm_item item);
const void *vm_state_get(const struct vm_state *s, enum vm_item item, unsigned index, size_t *len);
/* Sets one instance of an item from its bytes; a wrong length or instance is refused. */
int vm_state_put(struct vm_state *s, enum vm_item item, unsigned index, const void *data,
                 size_t len);
void vm_state_free(struct vm_state *s);

/* The VM must be paused. s is reset first; free it with vm_state_free, after a failure too. */
int vm_state_save(struct vm *vm, struct vm_state *s);
/* cpuid[i]: the CPUID vCPU i gets, first of its state. */
int vm_state_restore(struct vm *vm, struct vm_state *s, struct kvm_cpuid2 *const cpuid[]);

/* The most nested state this VM's vCPUs can have: the host's KVM_CAP_NESTED_STATE when some
 * vCPU's CPUID offers VMX (only those can enter VMX operation), else 0: nothing to ask. */
uint32_t vm_nested_max(struct vm *vm);
/* What the VM's nested state asks of a destination right now: the largest nested state a vCPU
 * would carry (0: none, no vCPU is in VMX operation) and whether an enlightened VMCS is active.
 * The VM must be paused. */
int vm_nested_need(struct vm *vm, uint32_t *size, bool *evmcs);

/* The restore order as data, and what it runs on: a VM's fd and vCPUs (vm_state_restore fills
 * it from the VM; the order test fakes one). */
struct vm_restore_target {
    int vm_fd;
    unsigned cpu_count;
    struct vcpu *const *vcpus;
    struct vcpu_restore_env env;
    struct kvm_clock_data *clock; /* receives CLOCK ... */
    bool *clock_pending;          /* ... to be set right before the vCPUs run */
};
struct vm_restore_step {
    struct order_rule rule;
    int (*apply)(const struct vm_restore_target *t, struct vm_state *s,
                 struct kvm_cpuid2 *const cpuid[]);
};
extern const struct vm_restore_step vm_restore_steps[];
extern const unsigned vm_restore_step_count;
int vm_state_apply(const struct vm_restore_target *t, struct vm_state *s,
                   struct kvm_cpuid2 *const cpuid[]);

#endif
