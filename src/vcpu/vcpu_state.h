/* vcpu_state: everything KVM holds for one vCPU, as tern saves and restores it.
 *
 * Each item is one KVM structure (or blob) exactly as the KVM API lays it out, which is also how
 * the stream carries it (one record per item). vcpu_state_save() reads them in the order KVM
 * needs for a consistent capture; vcpu_state_restore() writes them in the order KVM needs to
 * accept them, a table of steps (vcpu_restore_steps) each naming what it must follow and why.
 * Both run only while the vCPU is out of KVM_RUN (paused, or not started).
 */
#ifndef TERN_VCPU_STATE_H
#define TERN_VCPU_STATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvm/kvm_host.h"
#include "order/order.h"

struct vcpu;

enum vcpu_item {
    VCPU_MP_STATE,
    VCPU_EVENTS,
    VCPU_REGS,
    VCPU_XSAVE,
    VCPU_XCRS,
    VCPU_SREGS2,
    VCPU_SREGS,
    VCPU_MSRS,
    VCPU_LAPIC,
    VCPU_DEBUGREGS,
    VCPU_TSC_KHZ,
    VCPU_EVMCS,
    VCPU_NESTED,
    VCPU_ITEMS
};

#define VCPU_XSAVE_MAX (1u << 20)
#define VCPU_NESTED_MAX (64u << 10)
#define VCPU_MSRS_MAX_BYTES (KVM_HOST_MAX_MSRS * sizeof(struct kvm_msr_entry))

/* VCPU_EVMCS: the version range KVM_ENABLE_CAP(KVM_CAP_HYPERV_ENLIGHTENED_VMCS) returned. */
struct vcpu_evmcs {
    uint16_t version; /* bits 7:0 oldest, 15:8 newest */
    uint16_t reserved0;
    uint32_t reserved1;
};

struct vcpu_state {
    uint32_t have; /* 1u << enum vcpu_item */
    struct kvm_mp_state mp;
    struct kvm_vcpu_events events;
    struct kvm_regs regs;
    struct kvm_xcrs xcrs;
    struct kvm_sregs2 sregs2;
    struct kvm_sregs sregs;
    struct kvm_lapic_state lapic;
    struct kvm_debugregs debugregs;
    uint32_t tsc_khz;
    struct vcpu_evmcs evmcs;
    uint8_t *xsave;
    uint32_t xsave_len;
    struct kvm_msr_entry *msrs;
    uint32_t nmsrs;
    uint8_t *nested;
    uint32_t nested_len;
};

bool vcpu_state_has(const struct vcpu_state *s, enum vcpu_item item);
/* An item's bytes (valid until the state changes or is freed); NULL when absent. */
const void *vcpu_state_get(const struct vcpu_state *s, enum vcpu_item item, size_t *len);
/* Sets an item from its bytes; a length the item cannot have is refused (-EPROTO). */
int vcpu_state_put(struct vcpu_state *s, enum vcpu_item item, const void *data, size_t len);
void vcpu_state_free(struct vcpu_state *s);
/* "REGS", "NESTED_STATE": the name of the item and of its stream record. */
const char *vcpu_item_name(enum vcpu_item item);

/* What a capture reads on this host. nested_max: the host's KVM_CAP_NESTED_STATE when the vCPU
 * may be in VMX operation (its CPUID offers VMX), else 0: nested state is not asked for. */
struct vcpu_save_env {
    const struct kvm_host *host;
    uint32_t nested_max;
};

/* Reads every item (s is reset first; free it with vcpu_state_free, after a failure too).
 * NESTED is kept only for a vCPU in VMX operation (nested_needed), so that
 * a stream of any other guest loads on a destination without nested state; EVMCS only where
 * eVMCS was enabled. */
int vcpu_state_save(struct vcpu *v, const struct vcpu_save_env *env, struct vcpu_state *s);

/* The vCPU's nested state now, into buf (env->nested_max bytes); *len is 0 when the vCPU is not
 * in VMX operation, so no record is needed. A state a destination would refuse is refused. */
int vcpu_nested_save(struct vcpu *v, uint32_t nested_max, uint8_t *buf, uint32_t *len);

/* What a restore may ask of this host (as the VM sees it, after --hide-cap). */
struct vcpu_restore_env {
    uint32_t nested_max; /* KVM_CAP_NESTED_STATE; 0: nested state cannot be restored */
    bool evmcs;          /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
    uint32_t xsave_size; /* KVM_CAP_XSAVE2's size: what KVM_SET_XSAVE reads */
};

/* Writes every item in KVM's order. The VM sets the vCPU's CPUID first (vcpu_set_cpuid), and
 * all guest RAM must be in place (KVM reads vmcs12 and the eVMCS from it). Missing required
 * items are refused, naming them. */
int vcpu_state_restore(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s);

/* The restore order as data (vcpu_state_restore runs it), for its check and its test. */
struct vcpu_restore_step {
    struct order_rule rule;
    int (*apply)(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s);
};
extern const struct vcpu_restore_step vcpu_restore_steps[];
extern const unsigned vcpu_restore_step_count;

#endif
