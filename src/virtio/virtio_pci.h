/* virtio_pci: the virtio 1.x PCI transport, modern only (virtio 1.2, section 4.1).
 *
 * One PCI function with one 64-bit memory BAR holding the common configuration, the ISR, the
 * device configuration, the notification area and the MSI-X table and PBA; vendor capabilities
 * point at each. Feature negotiation, queue setup and the device status live here; the device
 * (virtio-blk...) supplies its feature bits, its configuration bytes, and does the queue work.
 *
 * Threads: register accesses arrive on vCPU threads; the device's I/O thread pops and pushes
 * with the transport locked (virtio_pci_lock) and signals the driver with virtio_pci_interrupt.
 * Notifications reach the device as eventfds (KVM_IOEVENTFD on each queue's notify address,
 * moved with the BAR); interrupts leave through MSI-X vectors wired with KVM_IRQFD, or the INTx
 * line when the driver has not enabled MSI-X.
 *
 * The rings are hostile: a malformed queue sets DEVICE_NEEDS_RESET (virtio_pci_fail), logs one
 * line and raises a configuration interrupt; the device stops using the queues until the
 * driver resets it.
 */
#ifndef TERN_VIRTIO_PCI_H
#define TERN_VIRTIO_PCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/dev_bus.h"
#include "pci/pci.h"
#include "virtio/virtq.h"

#define VIRTIO_PCI_MAX_QUEUES 8u
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED 128u
#define VIRTIO_NO_VECTOR 0xffffu

/* The BAR's layout. */
#define VIRTIO_PCI_BAR 0u
#define VIRTIO_PCI_BAR_SIZE 0x8000u
#define VIRTIO_PCI_COMMON 0x0000u
#define VIRTIO_PCI_COMMON_SIZE 0x40u
#define VIRTIO_PCI_ISR 0x1000u
#define VIRTIO_PCI_DEVCFG 0x2000u
#define VIRTIO_PCI_DEVCFG_MAX 0x100u
#define VIRTIO_PCI_NOTIFY 0x3000u
#define VIRTIO_PCI_NOTIFY_MULT 4u
#define VIRTIO_PCI_MSIX_TABLE 0x4000u
#define VIRTIO_PCI_MSIX_PBA 0x5000u

/* What a device gives the transport. Called on vCPU threads without the transport's lock. */
struct virtio_pci_ops {
    /* The device configuration's bytes [off, off+len) (len within config_size). */
    void (*config_read)(void *dev, unsigned off, uint8_t *buf, unsigned len);
    /* stop: stop taking requests and wait for those in flight (the driver is resetting the
     * device); !stop: go on (the transport's state is reset in between). */
    void (*stop_io)(void *dev, bool stop);
    /* DRIVER_OK: the queues are live. */
    void (*driver_ok)(void *dev);
};

struct virtio_pci_params {
    uint16_t device_type; /* virtio device ID: 2 for a block device */
    uint32_t class_code;
    uint64_t
        features; /* the device's own bits; the transport adds VERSION_1, INDIRECT, EVENT_IDX */
    unsigned config_size;
    unsigned queues;
    uint16_t queue_max; /* each queue's largest size */
    const struct virtio_pci_ops *ops;
    void *dev;
    const struct dev_host *host;
    struct pci_bus *pci;
    const char *name; /* for messages: "virtio-blk 0 (disk.img)" */
};

struct virtio_pci;

int virtio_pci_create(const struct virtio_pci_params *p, struct virtio_pci **out);
void virtio_pci_destroy(struct virtio_pci *vp);

/* The eventfd a queue's notifications arrive on. */
int virtio_pci_queue_fd(struct virtio_pci *vp, unsigned q);
/* Guest memory as the rings see it (with the device's dirty marking). */
const struct virtq_mem *virtio_pci_mem(struct virtio_pci *vp);

/* Queue work happens with the transport locked. virtio_pci_queue: the queue, or NULL when it is
 * not live (no DRIVER_OK, not enabled, or the device needs a reset). */
void virtio_pci_lock(struct virtio_pci *vp);
void virtio_pci_unlock(struct virtio_pci *vp);
struct virtq *virtio_pci_queue(struct virtio_pci *vp, unsigned q);
uint64_t virtio_pci_features(struct virtio_pci *vp); /* negotiated */
/* Locked: the queue's used entries reached the driver: interrupt it if it wants one. */
void virtio_pci_interrupt(struct virtio_pci *vp, unsigned q);
/* The device configuration changed: a configuration interrupt (takes the lock). */
void virtio_pci_config_changed(struct virtio_pci *vp);
/* Locked: the driver broke the rules (why: one line); DEVICE_NEEDS_RESET. */
void virtio_pci_fail(struct virtio_pci *vp, const char *why);

/* Migration. The state is the PCI config space, the transport's registers, the MSI-X table and
 * pending bits, and each queue's size, addresses, indices and enable state; load checks every
 * field (and every live queue's rings against guest RAM) before taking any. */
#define VIRTIO_PCI_STATE_SIZE                                                                      \
    (PCI_CFG_SIZE + 64u + 16u * (VIRTIO_PCI_MAX_QUEUES + 1) + 8u + VIRTIO_PCI_MAX_QUEUES * 48u)
int virtio_pci_save(struct virtio_pci *vp, uint8_t *buf, size_t *len);
int virtio_pci_load(struct virtio_pci *vp, const uint8_t *buf, size_t len);

#endif
