/* The VM's interrupt routes: KVM's default irqchip pins, and the MSI routes devices take for
 * their irqfds (dev_host.msi_route). KVM_SET_GSI_ROUTING replaces the whole table, so tern keeps
 * it: the pins exactly as KVM sets them by default (GSI 0-15 on both PICs and the IOAPIC, 16-23
 * on the IOAPIC only), then one MSI route per vector in use. */
#include "err/err.h"
#include "kvm/kvm_vm.h"
#include "vm/vm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define VM_IRQ_PINS 24u

static int vm_irq_commit(struct vm *vm)
{
    size_t n = VM_IRQ_PINS + 16u + VM_MSI_ROUTES;
    struct kvm_irq_routing *r = calloc(1, sizeof(*r) + n * sizeof(r->entries[0]));
    if (!r)
        return err_set(-ENOMEM, "out of memory");
    unsigned k = 0;
    for (unsigned gsi = 0; gsi < VM_IRQ_PINS; gsi++) {
        if (gsi < 16)
            r->entries[k++] = (struct kvm_irq_routing_entry){
                .gsi = gsi,
                .type = KVM_IRQ_ROUTING_IRQCHIP,
                .u.irqchip = {.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
                              .pin = gsi % 8}};
        r->entries[k++] = (struct kvm_irq_routing_entry){
            .gsi = gsi,
            .type = KVM_IRQ_ROUTING_IRQCHIP,
            .u.irqchip = {.irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi}};
    }
    for (unsigned i = 0; i < VM_MSI_ROUTES; i++)
        if (vm->msi[i].used)
            r->entries[k++] = (struct kvm_irq_routing_entry){
                .gsi = VM_IRQ_PINS + i,
                .type = KVM_IRQ_ROUTING_MSI,
                .u.msi = {.address_lo = (uint32_t)vm->msi[i].addr,
                          .address_hi = (uint32_t)(vm->msi[i].addr >> 32),
                          .data = vm->msi[i].data}};
    r->nr = k;
    int rc = kvm_vm_set_gsi_routing(vm->vm_fd, r);
    free(r);
    return rc;
}

int vm_irq_msi_route(void *opaque, int *gsi, uint64_t addr, uint32_t data, int fd)
{
    struct vm *vm = opaque;
    pthread_mutex_lock(&vm->msi_lock);
    int rc = 0;
    bool fresh = *gsi < 0;
    unsigned i = 0;
    if (fresh) {
        while (i < VM_MSI_ROUTES && vm->msi[i].used)
            i++;
        if (i == VM_MSI_ROUTES)
            rc = err_set(-ENOSPC, "all %u MSI routes are taken", VM_MSI_ROUTES);
    } else {
        i = (unsigned)*gsi - VM_IRQ_PINS;
    }
    if (!rc) {
        vm->msi[i] = (struct vm_msi){.used = true, .addr = addr, .data = data};
        rc = vm_irq_commit(vm);
        if (!rc && fresh && (rc = kvm_vm_irqfd(vm->vm_fd, fd, VM_IRQ_PINS + i, true)))
            vm->msi[i].used = false;
        if (!rc)
            *gsi = (int)(VM_IRQ_PINS + i);
    }
    pthread_mutex_unlock(&vm->msi_lock);
    return rc;
}

void vm_irq_msi_release(void *opaque, int gsi, int fd)
{
    struct vm *vm = opaque;
    unsigned i = (unsigned)gsi - VM_IRQ_PINS;
    if (gsi < (int)VM_IRQ_PINS || i >= VM_MSI_ROUTES)
        return;
    pthread_mutex_lock(&vm->msi_lock);
    kvm_vm_irqfd(vm->vm_fd, fd, (uint32_t)gsi, false);
    vm->msi[i].used = false;
    pthread_mutex_unlock(&vm->msi_lock);
}
