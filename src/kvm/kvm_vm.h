/* kvm_vm: the ioctls on a VM's fd, one typed wrapper each (see kvm.h). */
#ifndef TERN_KVM_VM_H
#define TERN_KVM_VM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

int kvm_vm_set_identity_map_addr(int vm_fd, uint64_t gpa);
int kvm_vm_set_tss_addr(int vm_fd, uint64_t gpa);
int kvm_vm_create_irqchip(int vm_fd);
int kvm_vm_create_pit2(int vm_fd, uint32_t flags);
int kvm_vm_create_vcpu(int vm_fd, unsigned index, int *vcpu_fd);
int kvm_vm_irq_line(int vm_fd, unsigned irq, int level);
int kvm_vm_set_memory_region(int vm_fd, const struct kvm_userspace_memory_region *slot);
int kvm_vm_enable_cap(int vm_fd, uint32_t cap, uint64_t arg0, const char *name);
/* The dirty log of one memslot: read, then re-armed for the pages read (manual protect). */
int kvm_vm_get_dirty_log(int vm_fd, unsigned slot, uint64_t *bitmap);
int kvm_vm_clear_dirty_log(int vm_fd, unsigned slot, uint32_t pages, uint64_t *bitmap);
/* chip->chip_id says which: 0 PIC master, 1 PIC slave, 2 IOAPIC. */
int kvm_vm_get_irqchip(int vm_fd, struct kvm_irqchip *chip);
int kvm_vm_set_irqchip(int vm_fd, const struct kvm_irqchip *chip);
int kvm_vm_get_pit2(int vm_fd, struct kvm_pit_state2 *pit);
int kvm_vm_set_pit2(int vm_fd, const struct kvm_pit_state2 *pit);
/* Device notifications and interrupts. ioeventfd: a guest write of len bytes at gpa signals
 * fd (no exit to userspace); irqfd: a write to fd raises gsi; the routing table is replaced whole
 * (the irqchip pins and the MSI routes tern adds). */
int kvm_vm_ioeventfd(int vm_fd, uint64_t gpa, uint32_t len, int fd, bool assign);
int kvm_vm_irqfd(int vm_fd, int fd, uint32_t gsi, bool assign);
int kvm_vm_set_gsi_routing(int vm_fd, const struct kvm_irq_routing *routing);
int kvm_vm_get_clock(int vm_fd, struct kvm_clock_data *clock);
int kvm_vm_set_clock(int vm_fd, const struct kvm_clock_data *clock);

#endif
