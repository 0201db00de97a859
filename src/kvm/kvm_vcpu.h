/* kvm_vcpu: the ioctls on a vCPU's fd, one typed wrapper each (see kvm.h). index is the vCPU's,
 * for the messages: "KVM_SET_REGS on vCPU 1: Invalid argument". */
#ifndef TERN_KVM_VCPU_H
#define TERN_KVM_VCPU_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

/* KVM_RUN as ioctl(2) gives it (the caller tells EINTR from failure): the hot path. */
int kvm_vcpu_run(int fd);

int kvm_vcpu_get_mp_state(int fd, unsigned index, struct kvm_mp_state *mp);
int kvm_vcpu_set_mp_state(int fd, unsigned index, const struct kvm_mp_state *mp);
int kvm_vcpu_get_events(int fd, unsigned index, struct kvm_vcpu_events *ev);
int kvm_vcpu_set_events(int fd, unsigned index, const struct kvm_vcpu_events *ev);
int kvm_vcpu_get_regs(int fd, unsigned index, struct kvm_regs *regs);
int kvm_vcpu_set_regs(int fd, unsigned index, const struct kvm_regs *regs);
int kvm_vcpu_get_sregs(int fd, unsigned index, struct kvm_sregs *sregs);
int kvm_vcpu_set_sregs(int fd, unsigned index, const struct kvm_sregs *sregs);
int kvm_vcpu_get_sregs2(int fd, unsigned index, struct kvm_sregs2 *sregs2);
int kvm_vcpu_set_sregs2(int fd, unsigned index, const struct kvm_sregs2 *sregs2);
/* KVM_GET_XSAVE2 into a buffer of KVM_CAP_XSAVE2's size where xsave2, else KVM_GET_XSAVE's 4 KiB.
 */
int kvm_vcpu_get_xsave(int fd, unsigned index, bool xsave2, void *buf);
int kvm_vcpu_set_xsave(int fd, unsigned index, const void *buf);
int kvm_vcpu_get_xcrs(int fd, unsigned index, struct kvm_xcrs *xcrs);
int kvm_vcpu_set_xcrs(int fd, unsigned index, const struct kvm_xcrs *xcrs);
int kvm_vcpu_get_lapic(int fd, unsigned index, struct kvm_lapic_state *lapic);
int kvm_vcpu_set_lapic(int fd, unsigned index, const struct kvm_lapic_state *lapic);
int kvm_vcpu_get_debugregs(int fd, unsigned index, struct kvm_debugregs *dr);
int kvm_vcpu_set_debugregs(int fd, unsigned index, const struct kvm_debugregs *dr);
int kvm_vcpu_get_tsc_khz(int fd, unsigned index, uint32_t *khz);
int kvm_vcpu_set_tsc_khz(int fd, unsigned index, uint32_t khz);
/* KVM_GET_MSRS reads entries in order and stops at the first it cannot read: *got says how
 * many it read. */
int kvm_vcpu_get_msrs(int fd, unsigned index, struct kvm_msrs *msrs, uint32_t *got);
/* KVM_SET_MSRS of every entry; KVM stops at the first it rejects, which the error names with
 * its value. */
int kvm_vcpu_set_msrs(int fd, unsigned index, const struct kvm_msrs *msrs);
int kvm_vcpu_set_cpuid2(int fd, unsigned index, const struct kvm_cpuid2 *cpuid);
/* cpuid->nent gives the room; KVM writes back how many it filled. */
int kvm_vcpu_get_cpuid2(int fd, unsigned index, struct kvm_cpuid2 *cpuid);
/* state->size gives the room (the host's KVM_CAP_NESTED_STATE). */
int kvm_vcpu_get_nested_state(int fd, unsigned index, struct kvm_nested_state *state);
int kvm_vcpu_set_nested_state(int fd, unsigned index, const struct kvm_nested_state *state);
/* KVM_ENABLE_CAP(KVM_CAP_HYPERV_ENLIGHTENED_VMCS): *version gets the range KVM supports. */
int kvm_vcpu_enable_evmcs(int fd, unsigned index, uint16_t *version);
/* KVM_ENABLE_CAP(cap) with no arguments; name is the capability's, for the error. */
int kvm_vcpu_enable_cap(int fd, unsigned index, uint32_t cap, const char *name);

#endif
