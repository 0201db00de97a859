#include "kvm/kvm_vm.h"

#include "err/err.h"
#include "kvm/kvm.h"

#include <errno.h>

/* One ioctl whose failure is reported under its own name. */
static int kvm_vm_call(int vm_fd, unsigned long request, const void *arg, const char *name)
{
    if (kvm_ioctl(vm_fd, request, (void *)arg) < 0)
        return err_sys(-errno, "%s", name);
    return 0;
}

int kvm_vm_set_identity_map_addr(int vm_fd, uint64_t gpa)
{
    return kvm_vm_call(vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &gpa, "KVM_SET_IDENTITY_MAP_ADDR");
}

int kvm_vm_set_tss_addr(int vm_fd, uint64_t gpa)
{
    return kvm_vm_call(vm_fd, KVM_SET_TSS_ADDR, (void *)(uintptr_t)gpa, "KVM_SET_TSS_ADDR");
}

int kvm_vm_create_irqchip(int vm_fd)
{
    return kvm_vm_call(vm_fd, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP");
}

int kvm_vm_create_pit2(int vm_fd, uint32_t flags)
{
    struct kvm_pit_config pit = {.flags = flags};
    return kvm_vm_call(vm_fd, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2");
}

int kvm_vm_create_vcpu(int vm_fd, unsigned index, int *vcpu_fd)
{
    int fd = kvm_ioctl(vm_fd, KVM_CREATE_VCPU, (void *)(uintptr_t)index);
    if (fd < 0)
        return err_sys(-errno, "KVM_CREATE_VCPU %u", index);
    *vcpu_fd = fd;
    return 0;
}

int kvm_vm_irq_line(int vm_fd, unsigned irq, int level)
{
    struct kvm_irq_level line = {.irq = irq, .level = (uint32_t)level};
    if (kvm_ioctl(vm_fd, KVM_IRQ_LINE, &line) < 0)
        return err_sys(-errno, "KVM_IRQ_LINE %u", irq);
    return 0;
}

int kvm_vm_set_memory_region(int vm_fd, const struct kvm_userspace_memory_region *slot)
{
    if (kvm_ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, (void *)slot) < 0)
        return err_sys(-errno, "KVM_SET_USER_MEMORY_REGION (slot %u, %llu bytes at 0x%llx)",
                       slot->slot, (unsigned long long)slot->memory_size,
                       (unsigned long long)slot->guest_phys_addr);
    return 0;
}

int kvm_vm_enable_cap(int vm_fd, uint32_t cap, uint64_t arg0, const char *name)
{
    struct kvm_enable_cap c = {.cap = cap, .args = {arg0}};
    if (kvm_ioctl(vm_fd, KVM_ENABLE_CAP, &c) < 0)
        return err_sys(-errno, "KVM_ENABLE_CAP(%s)", name);
    return 0;
}

int kvm_vm_get_dirty_log(int vm_fd, unsigned slot, uint64_t *bitmap)
{
    struct kvm_dirty_log log = {.slot = slot, .dirty_bitmap = bitmap};
    if (kvm_ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
        return err_sys(-errno, "KVM_GET_DIRTY_LOG (slot %u)", slot);
    return 0;
}

int kvm_vm_clear_dirty_log(int vm_fd, unsigned slot, uint32_t pages, uint64_t *bitmap)
{
    struct kvm_clear_dirty_log clear = {
        .slot = slot, .num_pages = pages, .first_page = 0, .dirty_bitmap = bitmap};
    if (kvm_ioctl(vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0)
        return err_sys(-errno, "KVM_CLEAR_DIRTY_LOG (slot %u)", slot);
    return 0;
}

int kvm_vm_get_irqchip(int vm_fd, struct kvm_irqchip *chip)
{
    if (kvm_ioctl(vm_fd, KVM_GET_IRQCHIP, chip) < 0)
        return err_sys(-errno, "KVM_GET_IRQCHIP %u", chip->chip_id);
    return 0;
}

int kvm_vm_set_irqchip(int vm_fd, const struct kvm_irqchip *chip)
{
    if (kvm_ioctl(vm_fd, KVM_SET_IRQCHIP, (void *)chip) < 0)
        return err_sys(-errno, "KVM_SET_IRQCHIP %u", chip->chip_id);
    return 0;
}

int kvm_vm_get_pit2(int vm_fd, struct kvm_pit_state2 *pit)
{
    return kvm_vm_call(vm_fd, KVM_GET_PIT2, pit, "KVM_GET_PIT2");
}

int kvm_vm_set_pit2(int vm_fd, const struct kvm_pit_state2 *pit)
{
    return kvm_vm_call(vm_fd, KVM_SET_PIT2, pit, "KVM_SET_PIT2");
}

int kvm_vm_get_clock(int vm_fd, struct kvm_clock_data *clock)
{
    return kvm_vm_call(vm_fd, KVM_GET_CLOCK, clock, "KVM_GET_CLOCK");
}

int kvm_vm_set_clock(int vm_fd, const struct kvm_clock_data *clock)
{
    return kvm_vm_call(vm_fd, KVM_SET_CLOCK, clock, "KVM_SET_CLOCK");
}

int kvm_vm_ioeventfd(int vm_fd, uint64_t gpa, uint32_t len, int fd, bool assign)
{
    struct kvm_ioeventfd io = {
        .addr = gpa, .len = len, .fd = fd, .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN};
    if (kvm_ioctl(vm_fd, KVM_IOEVENTFD, &io) < 0)
        return err_sys(-errno, "KVM_IOEVENTFD (%s %u bytes at 0x%llx)",
                       assign ? "assign" : "deassign", len, (unsigned long long)gpa);
    return 0;
}

int kvm_vm_irqfd(int vm_fd, int fd, uint32_t gsi, bool assign)
{
    struct kvm_irqfd irq = {
        .fd = (uint32_t)fd, .gsi = gsi, .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN};
    if (kvm_ioctl(vm_fd, KVM_IRQFD, &irq) < 0)
        return err_sys(-errno, "KVM_IRQFD (%s GSI %u)", assign ? "assign" : "deassign", gsi);
    return 0;
}

int kvm_vm_set_gsi_routing(int vm_fd, const struct kvm_irq_routing *routing)
{
    if (kvm_ioctl(vm_fd, KVM_SET_GSI_ROUTING, (void *)routing) < 0)
        return err_sys(-errno, "KVM_SET_GSI_ROUTING (%u routes)", routing->nr);
    return 0;
}
