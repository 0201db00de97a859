/* nested_probe: asserts, on the nested-capable host, that /dev/kvm offers what tern's nested
 * support stands on: nested state (KVM_CAP_NESTED_STATE, with room for the 128-byte header and two
 * 4 KiB VMCS pages), enlightened VMCS (KVM_CAP_HYPERV_ENLIGHTENED_VMCS, enabled on a vCPU with a
 * version range written back), and VMX in KVM_GET_SUPPORTED_CPUID. Prints each capability. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what)
{
    printf("probe: %s: %s\n", ok ? "ok" : "FAIL", what);
    if (!ok)
        failures++;
}

int main(void)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        printf("probe: FAIL: cannot open /dev/kvm: %s\n", strerror(errno));
        return 1;
    }
    int nested = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_NESTED_STATE);
    int evmcs = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_HYPERV_ENLIGHTENED_VMCS);
    int hv = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_HYPERV);
    int sys_hv_cpuid = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_SYS_HYPERV_CPUID);
    printf("probe: KVM_CAP_NESTED_STATE = %d\n", nested);
    printf("probe: KVM_CAP_HYPERV_ENLIGHTENED_VMCS = %d\n", evmcs);
    printf("probe: KVM_CAP_HYPERV = %d, KVM_CAP_SYS_HYPERV_CPUID = %d\n", hv, sys_hv_cpuid);
    check(nested >= 128 + 2 * 4096, "nested state holds a header and two VMCS pages");
    check(evmcs > 0, "enlightened VMCS offered");

    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 256 * sizeof(c->entries[0]));
    c->nent = 256;
    int vmx = 0;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
        for (unsigned i = 0; i < c->nent; i++)
            if (c->entries[i].function == 1)
                vmx = (c->entries[i].ecx >> 5) & 1;
    check(vmx, "VMX (CPUID.1:ECX[5]) in KVM_GET_SUPPORTED_CPUID");

    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    int vcpu = vm >= 0 ? ioctl(vm, KVM_CREATE_VCPU, 0) : -1;
    check(vcpu >= 0, "a VM and a vCPU can be created");
    if (vcpu >= 0) {
        uint16_t versions = 0;
        struct kvm_enable_cap cap = {.cap = KVM_CAP_HYPERV_ENLIGHTENED_VMCS,
                                     .args[0] = (uint64_t)(uintptr_t)&versions};
        int rc = ioctl(vcpu, KVM_ENABLE_CAP, &cap);
        printf("probe: KVM_ENABLE_CAP(eVMCS) = %d, versions 0x%04x\n", rc, versions);
        check(rc == 0 && versions != 0, "eVMCS enables on a vCPU and reports its versions");
        struct kvm_nested_state hdr = {.size = sizeof(hdr)};
        rc = ioctl(vcpu, KVM_GET_NESTED_STATE, &hdr);
        printf("probe: KVM_GET_NESTED_STATE = %d, size %u, vmxon_pa 0x%llx\n", rc, hdr.size,
               (unsigned long long)hdr.hdr.vmx.vmxon_pa);
        check(rc == 0 && hdr.hdr.vmx.vmxon_pa == (uint64_t)-1,
              "a fresh vCPU's nested state: not in VMX operation");
    }
    printf("probe: %s\n", failures ? "FAILED" : "all capabilities present");
    return failures ? 1 : 0;
}
