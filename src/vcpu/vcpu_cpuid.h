/* vcpu_cpuid: the CPUID table each vCPU is given, built purely from KVM_GET_SUPPORTED_CPUID.
 *
 * Sets the hypervisor bit (leaf 1 ECX[31]) and the vCPU's APIC id wherever CPUID reports it
 * (leaf 1 EBX[31:24], the x2APIC id in EDX of every subleaf of 0xB and 0x1F), and the logical
 * processor count in leaf 1 EBX[23:16]. VMX (leaf 1 ECX[5]) stays only when vmx is asked for
 * (tern run --nested): KVM offers it whenever the host has nested=1, and a guest must not see it
 * unless its VMM means to carry its nested state. Everything else passes through unchanged.
 */
#ifndef TERN_VCPU_CPUID_H
#define TERN_VCPU_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#define VCPU_CPUID_MAX_ENTRIES 256

/* out must hold n entries. */
void vcpu_cpuid_build(const struct kvm_cpuid_entry2 *supported, unsigned n, unsigned vcpu_index,
                      unsigned vcpu_count, bool vmx, struct kvm_cpuid_entry2 *out);

/* Whether leaf 1 of the table offers VMX. */
bool vcpu_cpuid_has_vmx(const struct kvm_cpuid2 *cpuid);

#endif
