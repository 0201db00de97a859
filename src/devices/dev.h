/* dev: the interface every device implements, and the table of the devices a VM is built with.
 *
 * A device is one file that defines its `struct dev_ops` and appears once in dev_table
 * (dev_table.c); the VM creates, attaches, pauses and saves every device of the table through
 * these operations and never names one. The lifecycle:
 *   create   make it, in its power-on state (reset); attach  claim its ports and MMIO ranges;
 *   quiesce  the VM is about to pause: finish in-flight work (nothing guest-visible may change
 *            from then until resume); resume  the vCPUs run (again);
 *   save / load  its state as bytes (a stream record's payload), while the VM is paused or
 *            before it first runs; load refuses malformed bytes with a message;
 *   reset    back to the power-on state; stop  the VM is ending: write out what is pending;
 *   destroy  free it (a device with loop handles goes once they are closed);
 *   instances  how many of it the VM has (NULL: one), e.g. one virtio-blk per --disk;
 *   claim    take what only one VM may hold (an image's lock) before the guest first runs;
 *            release  give it up at a migration's handover.
 * Every operation but create may be NULL where the device has nothing to do. Operations run on
 * the loop thread; the port and MMIO handlers the device attaches run on vCPU threads.
 */
#ifndef TERN_DEV_H
#define TERN_DEV_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "devices/dev_bus.h"
#include "devices/dev_disk.h"
#include "devices/dev_net.h"

struct pci_bus;

/* What devices are built with. */
struct dev_env {
    uv_loop_t *loop;
    const struct dev_host *host;
    struct pci_bus *pci;
    int serial_out_fd;      /* COM1's output; -1: discarded */
    int serial_in_fd;       /* COM1's input; -1: none */
    struct dev_disk *disks; /* a disk's create fills in its size */
    unsigned disk_count;
    struct dev_net *nets; /* a NIC's create fills in its MAC when none was given */
    unsigned net_count;
    unsigned instance; /* which of the device's instances create makes (0..instances-1) */
};

struct dev_ops {
    const char *name;
    size_t state_max; /* the most bytes save writes; 0: a device without state */
    unsigned (*instances)(const struct dev_env *env);
    int (*create)(const struct dev_env *env, void **dev);
    int (*attach)(void *dev, struct dev_bus *bus);
    void (*quiesce)(void *dev);
    void (*resume)(void *dev);
    /* buf holds state_max bytes; *len receives how many were written. */
    int (*save)(void *dev, uint8_t *buf, size_t *len);
    int (*load)(void *dev, const uint8_t *buf, size_t len);
    void (*reset)(void *dev);
    void (*stop)(void *dev);
    int (*claim)(void *dev);
    void (*release)(void *dev);
    void (*destroy)(void *dev);
};

/* Every device of a VM, in the order they are created and attached. */
extern const struct dev_ops *const dev_table[];
extern const unsigned dev_table_count;

#endif
