/* dev_bus: routes port-I/O and MMIO exits from vCPU threads to the device that owns the address.
 *
 * Devices are registered before the vCPUs start and never removed; dispatch runs concurrently on
 * vCPU threads, so handlers do their own locking. An access no device claims is logged once per
 * address and reads as all-ones, as on an empty ISA/PCI bus. A handler's return value tells the
 * vCPU whether to keep running (DEV_CONTINUE) or to stop until the VM ends (DEV_PARK).
 */
#ifndef TERN_DEV_BUS_H
#define TERN_DEV_BUS_H

#include <stdbool.h>
#include <stdint.h>

enum dev_action { DEV_CONTINUE = 0, DEV_PARK = 1 };

/* How a device asks the VM to end, and how it raises interrupts. Implemented by the VM. */
enum dev_end { DEV_END_EXIT_CODE, DEV_END_RESET, DEV_END_POWER_OFF };
struct dev_host {
    void *opaque;
    void (*request_end)(void *opaque, enum dev_end why, uint32_t code);
    void (*set_irq)(void *opaque, unsigned irq, int level);
    /* DMA: a host pointer to [gpa, gpa+len) when it lies wholly in guest RAM, else NULL; and
     * the mark a device sets on every page it wrote, so that a live migration sends it again
     * (KVM's dirty log sees only the vCPUs' writes). */
    void *(*dma_ptr)(void *opaque, uint64_t gpa, uint64_t len);
    void (*dma_dirty)(void *opaque, uint64_t gpa, uint64_t len);
    /* A guest write of len bytes at gpa signals fd without an exit (KVM_IOEVENTFD). */
    int (*ioeventfd)(void *opaque, uint64_t gpa, uint32_t len, int fd, bool assign);
    /* An MSI: a write to fd delivers {addr, data}. *gsi < 0 takes a new route and wires fd to
     * it (KVM_IRQFD); otherwise the route is pointed at the new message. msi_release undoes
     * both. */
    int (*msi_route)(void *opaque, int *gsi, uint64_t addr, uint32_t data, int fd);
    void (*msi_release)(void *opaque, int gsi, int fd);
};

/* value carries the written bytes (little-endian, zero-extended) or receives the read bytes. */
typedef enum dev_action (*dev_pio_fn)(void *opaque, uint16_t port, unsigned size, bool is_write,
                                      uint32_t *value);
typedef enum dev_action (*dev_mmio_fn)(void *opaque, uint64_t addr, unsigned size, bool is_write,
                                       uint64_t *value);

struct dev_bus;

int dev_bus_create(struct dev_bus **out);
void dev_bus_destroy(struct dev_bus *bus);

int dev_bus_add_pio(struct dev_bus *bus, uint16_t base, uint16_t len, dev_pio_fn fn, void *opaque);
int dev_bus_add_mmio(struct dev_bus *bus, uint64_t base, uint64_t len, dev_mmio_fn fn,
                     void *opaque);

/* One KVM_EXIT_IO: count accesses of size bytes each, packed in data. */
enum dev_action dev_bus_pio(struct dev_bus *bus, uint16_t port, unsigned size, bool is_write,
                            uint8_t *data, uint32_t count);
/* One KVM_EXIT_MMIO of len bytes (1..8) at addr. */
enum dev_action dev_bus_mmio(struct dev_bus *bus, uint64_t addr, unsigned len, bool is_write,
                             uint8_t *data);

#endif
