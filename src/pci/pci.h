/* pci: the VM's PCI host bridge and its bus 0.
 *
 * Configuration space is reached through ports 0xCF8/0xCFC (mechanism #1) and through ECAM at
 * PCI_ECAM_BASE (the MCFG table points there). Each function has a 4 KiB configuration space
 * with a write mask: the device fills its header and capabilities at creation, the guest changes
 * only the bits the mask allows. BARs are placed at creation, as firmware would, in the 32-bit
 * window below the ECAM (32-bit BARs) or in the window above RAM (64-bit BARs); the guest may
 * move them. Memory accesses inside a window go to the function whose BAR claims the address
 * while its command register enables memory decoding.
 *
 * Config accesses and BAR dispatch run on vCPU threads; the bus serialises config accesses with
 * a lock and calls a device's hooks under it (hooks must not call back into the bus).
 */
#ifndef TERN_PCI_H
#define TERN_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/dev_bus.h"

#define PCI_ECAM_BASE 0xe0000000ull /* bus 0 only: 32 devices x 8 functions x 4 KiB */
#define PCI_ECAM_SIZE 0x100000ull
#define PCI_MMIO32_BASE 0xc0000000ull /* the 32-bit BAR window, up to the ECAM */
#define PCI_MMIO32_SIZE (PCI_ECAM_BASE - PCI_MMIO32_BASE)
#define PCI_MMIO64_SIZE (64ull << 30) /* the 64-bit window, above RAM (pci_mmio64_base) */
#define PCI_CFG_SIZE 4096u
#define PCI_MAX_SLOTS 32u
#define PCI_BARS 6u
#define PCI_IRQ_BASE 16u /* slot s, pin p (0: INTA) -> IOAPIC GSI 16 + (s + p) % 4 (the _PRT) */

/* Standard header offsets and bits used by tern's devices. */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYS_VENDOR 0x2c
#define PCI_SUBSYS_ID 0x2e
#define PCI_CAP_PTR 0x34
#define PCI_INT_LINE 0x3c
#define PCI_INT_PIN 0x3d
#define PCI_CMD_IO 0x1u
#define PCI_CMD_MEMORY 0x2u
#define PCI_CMD_MASTER 0x4u
#define PCI_CMD_INTX_DISABLE 0x400u
#define PCI_STATUS_CAP_LIST 0x10u
#define PCI_STATUS_INTX 0x08u
#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VENDOR 0x09

enum pci_bar_kind { PCI_BAR_NONE, PCI_BAR_MEM32, PCI_BAR_MEM64 };

struct pci_bus;
struct pci_fn;

/* What a function gives the bus. bar_access: an access at offset off of BAR bar (vCPU thread,
 * no bus lock). bar_moved: BAR bar now decodes at addr (or stops decoding: enabled false), under
 * the bus lock. config_written: the guest wrote [off, off+size) of its config space (after the
 * mask was applied), under the bus lock. */
struct pci_fn_ops {
    enum dev_action (*bar_access)(void *opaque, unsigned bar, uint64_t off, unsigned size,
                                  bool is_write, uint64_t *value);
    void (*bar_moved)(void *opaque, unsigned bar, uint64_t addr, bool enabled);
    void (*config_written)(void *opaque, unsigned off, unsigned size);
};

struct pci_fn_info {
    uint16_t vendor, device, subsys_vendor, subsys;
    uint8_t revision;
    uint32_t class_code; /* class << 16 | subclass << 8 | prog-if */
    uint64_t bar_size[PCI_BARS];
    enum pci_bar_kind bar_kind[PCI_BARS]; /* a MEM64 BAR takes the next slot too */
};

/* Creates the bus and claims the config ports, the ECAM and both BAR windows on dev_bus.
 * mmio64_base: where the 64-bit window starts (above RAM: pci_mmio64_base). */
int pci_bus_create(struct dev_bus *bus, uint64_t mmio64_base, struct pci_bus **out);
void pci_bus_destroy(struct pci_bus *pci);
/* Pure: the 64-bit window of a VM whose RAM ends at mem_top: the first 1 GiB boundary at or
 * above both 4 GiB and mem_top. */
uint64_t pci_mmio64_base(uint64_t mem_top);

/* Adds a function in the next free slot, its BARs placed and its interrupt pin INTA. */
int pci_fn_add(struct pci_bus *pci, const struct pci_fn_info *info, const struct pci_fn_ops *ops,
               void *opaque, struct pci_fn **out);
unsigned pci_fn_slot(const struct pci_fn *fn);
unsigned pci_fn_gsi(const struct pci_fn *fn); /* the GSI its INTA is routed to */

/* Config space for the device's own use (capabilities at creation, register reads later).
 * pci_fn_cap adds a capability of len bytes (id first, next pointer second, the rest from
 * body) at the next free offset; wmask_body gives the guest-writable bits of the rest (NULL:
 * read-only). Returns the capability's offset, or 0 when the space is full. */
unsigned pci_fn_cap(struct pci_fn *fn, uint8_t id, const uint8_t *body, const uint8_t *wmask_body,
                    unsigned len);
uint8_t *pci_fn_config(struct pci_fn *fn);
/* A BAR's current address and whether it decodes (memory enable and an address set). */
uint64_t pci_fn_bar_addr(const struct pci_fn *fn, unsigned bar, bool *enabled);

/* Migration: the config space (PCI_CFG_SIZE bytes); load re-derives every BAR from it. */
void pci_fn_save(struct pci_fn *fn, uint8_t *out);
int pci_fn_load(struct pci_fn *fn, const uint8_t *in);

/* Pure, exported for the unit tests: a config write of size bytes at off, under mask. */
void pci_config_merge(uint8_t *cfg, const uint8_t *wmask, unsigned off, unsigned size, uint32_t v);

#endif
