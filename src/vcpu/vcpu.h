/* vcpu: one KVM vCPU and the thread that runs it.
 *
 * The thread loops on KVM_RUN and hands port-I/O and MMIO exits to the device bus. A fatal exit
 * (triple fault, internal error, failed entry) is reported once through vcpu_events with the vCPU
 * index, RIP and reason; the vCPU then waits, like a parked one, until it is stopped.
 *
 * Pausing (vcpu_pause_request + vcpu_pause_wait) follows KVM's rule for consistent state: a vCPU
 * whose last exit was port I/O or MMIO re-enters KVM_RUN once with immediate_exit set, so KVM
 * completes that instruction, before it reports "paused". A paused vCPU's state may be read and
 * written (vcpu_state.h) by the pausing thread until vcpu_resume().
 */
#ifndef TERN_VCPU_H
#define TERN_VCPU_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

#include "boot/boot_paging.h"
#include "devices/dev_bus.h"

struct vcpu_events {
    void *opaque;
    /* Called on the vCPU thread; message is one line without "tern: ". */
    void (*on_fault)(void *opaque, unsigned index, const char *message);
};

struct vcpu;

/* Installs the no-op kick signal handler; call once before any vCPU starts. */
int vcpu_signals_init(void);

/* Creates vCPU index on the VM behind vm_fd and maps its kvm_run area (run_size bytes). */
int vcpu_create(int vm_fd, unsigned index, size_t run_size, struct dev_bus *bus,
                const struct vcpu_events *events, struct vcpu **out);
void vcpu_destroy(struct vcpu *v);
int vcpu_fd(const struct vcpu *v);
unsigned vcpu_index(const struct vcpu *v);

int vcpu_set_cpuid(struct vcpu *v, const struct kvm_cpuid2 *cpuid);
/* The table as KVM holds it after the last vcpu_set_cpuid (NULL before), readable while the
 * vCPU runs. */
const struct kvm_cpuid2 *vcpu_cpuid(const struct vcpu *v);

/* KVM_SET_MSRS of every entry of msrs; KVM stops at the first it rejects, and the error names
 * that MSR and its value. */
int vcpu_set_msrs(struct vcpu *v, const struct kvm_msrs *msrs);

/* KVM_ENABLE_CAP(KVM_CAP_HYPERV_ENLIGHTENED_VMCS): the guest may use an enlightened VMCS.
 * *version receives the range KVM supports (bits 7:0 oldest, 15:8 newest), also kept for
 * vcpu_evmcs_version, which answers 0 until then. */
int vcpu_enable_evmcs(struct vcpu *v, uint16_t *version);
uint16_t vcpu_evmcs_version(const struct vcpu *v);

/* 64-bit mode at entry->rip, paging on entry->cr3, RDI = index, RSI = entry->rsi; made runnable
 * at once when entry->start_all. */
int vcpu_setup_boot_entry(struct vcpu *v, const struct boot_entry *entry);

int vcpu_start(struct vcpu *v);
void vcpu_pause_request(struct vcpu *v);
void vcpu_pause_wait(struct vcpu *v);
void vcpu_resume(struct vcpu *v);
/* Makes the vCPU leave KVM_RUN and sleep for sleep_ns before it runs on (auto-converge). */
void vcpu_throttle(struct vcpu *v, uint64_t sleep_ns);
/* Stops the thread for good and joins it. Safe on a vCPU never started. */
void vcpu_stop(struct vcpu *v);

#endif
