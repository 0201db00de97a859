/* The VM's KVM state and the order it is restored in, each rule beside its step. */
#include "vm/vm_state.h"

#include "err/err.h"
#include "kvm/kvm_host.h"
#include "kvm/kvm_vm.h"
#include "nested/nested_state.h"
#include "vcpu/vcpu.h"
#include "vcpu/vcpu_cpuid.h"
#include "vm/vm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- items ----------------------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned instances;
    size_t size;
} vm_items[VM_ITEMS] = {
    [VM_IRQCHIP] = {"IRQCHIP", VM_IRQCHIPS, sizeof(struct kvm_irqchip)},
    [VM_PIT2] = {"PIT2", 1, sizeof(struct kvm_pit_state2)},
    [VM_CLOCK] = {"CLOCK", 1, sizeof(struct kvm_clock_data)},
};

unsigned vm_item_instances(enum vm_item item)
{
    return item < VM_ITEMS ? vm_items[item].instances : 0;
}

const char *vm_item_name(enum vm_item item)
{
    return item < VM_ITEMS ? vm_items[item].name : "?";
}

static void *vm_item_slot(const struct vm_state *s, enum vm_item item, unsigned index)
{
    switch (item) {
    case VM_IRQCHIP:
        return (void *)&s->irqchip[index];
    case VM_PIT2:
        return (void *)&s->pit;
    default:
        return (void *)&s->clock;
    }
}

const void *vm_state_get(const struct vm_state *s, enum vm_item item, unsigned index, size_t *len)
{
    if (item >= VM_ITEMS || index >= vm_items[item].instances || !(s->have[item] & (1u << index)))
        return NULL;
    *len = vm_items[item].size;
    return vm_item_slot(s, item, index);
}

int vm_state_put(struct vm_state *s, enum vm_item item, unsigned index, const void *data,
                 size_t len)
{
    if (item >= VM_ITEMS || index >= vm_items[item].instances || len != vm_items[item].size)
        return err_set(-EPROTO, "%s %u: %zu bytes is not a state it can have", vm_item_name(item),
                       index, len);
    memcpy(vm_item_slot(s, item, index), data, len);
    s->have[item] |= 1u << index;
    return 0;
}

void vm_state_free(struct vm_state *s)
{
    for (unsigned i = 0; i < VM_MAX_CPUS; i++)
        vcpu_state_free(&s->vcpus[i]);
    memset(s, 0, sizeof(*s));
}

/* ---- capture --------------------------------------------------------------------------- */

uint32_t vm_nested_max(struct vm *vm)
{
    /* KVM refuses VMXON on a vCPU whose CPUID does not offer VMX. --hide-cap only limits what
     * this VM accepts: a state it has must never be left out, so the host's real limit. */
    const struct kvm_host *host;
    if (kvm_host(&host))
        return 0;
    for (unsigned i = 0; i < vm->cpu_count; i++) {
        const struct kvm_cpuid2 *c = vcpu_cpuid(vm->vcpus[i]);
        if (c && vcpu_cpuid_has_vmx(c))
            return host->nested_state;
    }
    return 0;
}

int vm_nested_need(struct vm *vm, uint32_t *size, bool *evmcs)
{
    *size = 0;
    *evmcs = false;
    uint32_t max = vm_nested_max(vm);
    uint8_t *buf = max ? malloc(max) : NULL;
    if (!max)
        return 0;
    if (!buf)
        return err_set(-ENOMEM, "out of memory");
    int rc = 0;
    for (unsigned i = 0; i < vm->cpu_count && !rc; i++) {
        uint32_t len;
        struct nested_header h;
        rc = vcpu_nested_save(vm->vcpus[i], max, buf, &len);
        if (rc || !len || (rc = nested_parse_header(buf, len, &h)))
            continue;
        if (len > *size)
            *size = len;
        *evmcs |= nested_needs_evmcs(&h);
    }
    free(buf);
    return rc;
}

static int vm_save_vcpus(struct vm *vm, struct vm_state *s)
{
    const struct kvm_host *host;
    int rc = kvm_host(&host);
    struct vcpu_save_env env = {.host = host, .nested_max = vm_nested_max(vm)};
    for (unsigned i = 0; i < vm->cpu_count && !rc; i++)
        rc = vcpu_state_save(vm->vcpus[i], &env, &s->vcpus[i]);
    return rc;
}

/* Capture order: the interrupt controllers and the PIT, every vCPU (vcpu_state_save), then the
 * clock. */
int vm_state_save(struct vm *vm, struct vm_state *s)
{
    memset(s, 0, sizeof(*s));
    s->cpu_count = vm->cpu_count;
    int rc = 0;
    for (uint32_t chip = 0; chip < VM_IRQCHIPS && !rc; chip++) {
        s->irqchip[chip].chip_id = chip;
        if (!(rc = kvm_vm_get_irqchip(vm->vm_fd, &s->irqchip[chip])))
            s->have[VM_IRQCHIP] |= 1u << chip;
    }
    if (!rc && !(rc = kvm_vm_get_pit2(vm->vm_fd, &s->pit)))
        s->have[VM_PIT2] = 1;
    if (!rc)
        rc = vm_save_vcpus(vm, s);
    /* A restored VM that never ran still holds its clock for the first resume. */
    if (!rc && vm->clock_pending)
        s->clock = vm->clock;
    else if (!rc)
        rc = kvm_vm_get_clock(vm->vm_fd, &s->clock);
    if (rc)
        return rc;
    /* Only the clock value travels: the flags and host readings are this host's. */
    s->clock.flags = 0;
    memset(s->clock.pad, 0, sizeof(s->clock.pad));
    s->clock.realtime = 0;
    s->clock.host_tsc = 0;
    s->have[VM_CLOCK] = 1;
    return 0;
}

/* ---- restore --------------------------------------------------------------------------- */

static int vm_step_cpuid(const struct vm_restore_target *t, struct vm_state *s,
                         struct kvm_cpuid2 *const cpuid[])
{
    (void)s;
    for (unsigned i = 0; i < t->cpu_count; i++) {
        int rc = vcpu_set_cpuid(t->vcpus[i], cpuid[i]);
        if (rc)
            return err_context(rc, "the stream's CPUID");
    }
    return 0;
}

static int vm_step_irqchip(const struct vm_restore_target *t, struct vm_state *s,
                           struct kvm_cpuid2 *const cpuid[])
{
    (void)cpuid;
    for (uint32_t chip = 0; chip < VM_IRQCHIPS; chip++) {
        if (!(s->have[VM_IRQCHIP] & (1u << chip)))
            return err_set(-EPROTO, "the stream has no IRQCHIP record for chip %u", chip);
        int rc = kvm_vm_set_irqchip(t->vm_fd, &s->irqchip[chip]);
        if (rc)
            return rc;
    }
    return 0;
}

static int vm_step_pit(const struct vm_restore_target *t, struct vm_state *s,
                       struct kvm_cpuid2 *const cpuid[])
{
    (void)cpuid;
    if (!s->have[VM_PIT2])
        return err_set(-EPROTO, "the stream has no PIT2 record");
    return kvm_vm_set_pit2(t->vm_fd, &s->pit);
}

static int vm_step_vcpus(const struct vm_restore_target *t, struct vm_state *s,
                         struct kvm_cpuid2 *const cpuid[])
{
    (void)cpuid;
    int rc = 0;
    for (unsigned i = 0; i < t->cpu_count && !rc; i++)
        rc = vcpu_state_restore(t->vcpus[i], &t->env, &s->vcpus[i]);
    return rc;
}

static int vm_step_clock(const struct vm_restore_target *t, struct vm_state *s,
                         struct kvm_cpuid2 *const cpuid[])
{
    (void)cpuid;
    if (!s->have[VM_CLOCK])
        return err_set(-EPROTO, "the stream has no CLOCK record");
    *t->clock = s->clock;
    *t->clock_pending = true;
    return kvm_vm_set_clock(t->vm_fd, &s->clock);
}

enum { VM_STEP_CPUID, VM_STEP_IRQCHIP, VM_STEP_PIT2, VM_STEP_CLOCK, VM_STEP_VCPUS, VM_STEPS };

/* Restore order, once all guest RAM is in place. */
const struct vm_restore_step vm_restore_steps[VM_STEPS] = {
    [VM_STEP_CPUID] = {{"CPUID2", 0,
                        "every vCPU's CPUID first of all its state: KVM checks each later state "
                        "against it"},
                       vm_step_cpuid},
    [VM_STEP_IRQCHIP] = {{"IRQCHIP", 0,
                          "the PICs and the IOAPIC before the vCPUs' LAPICs, as at power-on"},
                         vm_step_irqchip},
    [VM_STEP_PIT2] = {{"PIT2", 0, "with the interrupt controllers, before the vCPUs"}, vm_step_pit},
    [VM_STEP_CLOCK] = {{"CLOCK", 0,
                        "set now, for the Hyper-V timers the vCPUs' MSRs re-arm (a one-shot "
                        "expiry is a reference-counter time, which is kvmclock), and kept for "
                        "vm_start/vm_resume, which set it again right before the vCPUs run: a "
                        "guest that runs before its clock is set sees time jump (Hyper-V "
                        "guests hang)"},
                       vm_step_clock},
    [VM_STEP_VCPUS] = {{"VCPUS",
                        ORDER_AFTER(VM_STEP_CPUID) | ORDER_AFTER(VM_STEP_IRQCHIP) |
                            ORDER_AFTER(VM_STEP_PIT2) | ORDER_AFTER(VM_STEP_CLOCK),
                        "each vCPU in the order of vcpu_restore_steps, after CLOCK"},
                       vm_step_vcpus},
};
const unsigned vm_restore_step_count = VM_STEPS;

int vm_state_apply(const struct vm_restore_target *t, struct vm_state *s,
                   struct kvm_cpuid2 *const cpuid[])
{
    int rc = 0;
    for (unsigned k = 0; k < VM_STEPS && !rc; k++)
        rc = vm_restore_steps[k].apply(t, s, cpuid);
    return rc;
}

int vm_state_restore(struct vm *vm, struct vm_state *s, struct kvm_cpuid2 *const cpuid[])
{
    const struct kvm_host *host;
    int rc = kvm_host(&host);
    if (rc)
        return rc;
    struct vm_restore_target t = {.vm_fd = vm->vm_fd,
                                  .cpu_count = vm->cpu_count,
                                  .vcpus = vm->vcpus,
                                  .env = {.nested_max = vm->host_nested.nested_max,
                                          .evmcs = vm->host_nested.evmcs,
                                          .xsave_size = host->xsave_size},
                                  .clock = &vm->clock,
                                  .clock_pending = &vm->clock_pending};
    rc = vm_state_apply(&t, s, cpuid);
    if (!rc && s->cpu_count)
        vm_cpu_keep(vm, s->vcpus[0].msrs, s->vcpus[0].nmsrs, s->vcpus[0].tsc_khz);
    return rc;
}
