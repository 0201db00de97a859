/* vdev: what the test guests' virtio drivers share: PCI configuration through ports
 * 0xCF8/0xCFC, finding a virtio function (and checking that ECAM shows it the same), moving
 * its 64-bit BAR into the 32-bit window (the boot page tables map only that far), walking its
 * capabilities, feature negotiation, queue setup and notification, and a bump allocator. */
#ifndef TERN_GUEST_VDEV_H
#define TERN_GUEST_VDEV_H

#include "rt.h"

#define R8(b, o) (*(volatile uint8_t *)((b) + (o)))
#define R16(b, o) (*(volatile uint16_t *)((b) + (o)))
#define R32(b, o) (*(volatile uint32_t *)((b) + (o)))
#define R64(b, o) (*(volatile uint64_t *)((b) + (o)))

struct vdev {
    unsigned slot, msix_cap;
    uint64_t bar;
    volatile uint8_t *common, *isr, *devcfg, *notify;
    uint32_t notify_mult;
    uint16_t notify_off[8];
};

struct vq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

uint32_t vdev_cfg_read(unsigned slot, unsigned off);
void vdev_cfg_write(unsigned slot, unsigned off, uint32_t v);
/* Finds PCI device 1af4:pci_device, moves BAR 0 to bar, enables memory and bus mastering and
 * maps the capabilities; prints one line under who. 0, or -1 when absent or incomplete. */
int vdev_find(uint16_t pci_device, uint64_t bar, struct vdev *d, const char *who);
/* Reset, ACKNOWLEDGE, DRIVER, the features offered & want, FEATURES_OK: what was taken, or
 * ~0 when the device refused FEATURES_OK. */
uint64_t vdev_negotiate(struct vdev *d, uint64_t want);
/* Queue q: size (at most the device's), rings, MSI-X vector (0xffff: none); enabled. */
uint16_t vdev_queue(struct vdev *d, unsigned q, uint16_t size, const void *desc,
                    const volatile void *avail, const volatile void *used, uint16_t vector);
void vdev_notify(struct vdev *d, unsigned q);
void vdev_driver_ok(struct vdev *d);

void vdev_alloc_init(uint64_t start);
void *vdev_alloc(uint64_t bytes, uint64_t align);
void vdev_fill(void *p, uint8_t v, uint64_t n);

#endif
