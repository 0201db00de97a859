/* dev_virtio_blk: a virtio block device on a raw image file, one per --disk.
 *
 * Requests (read, write, flush, discard, write-zeroes, get-id) go to the image through
 * io_uring on the device's own I/O thread, which also waits for the queue's notifications
 * (an ioeventfd). cache=none opens the image O_DIRECT; flush is fdatasync. The image is locked
 * with an OFD lock (shared for readonly=on) from the VM's start, so two terns never write one
 * image; a migration's source releases it at the handover and the destination takes it before
 * the guest runs there. At pause every request in flight completes and the image is
 * fdatasync'ed before the state is read; every guest page the device writes is marked dirty.
 *
 * Its state record: the transport's (virtio_pci.h) after the disk's size, so that a stream
 * restored onto another image size is refused.
 */
#ifndef TERN_DEV_VIRTIO_BLK_H
#define TERN_DEV_VIRTIO_BLK_H

#include "devices/dev.h"
#include "virtio/virtio_pci.h"

#define DEV_VIRTIO_BLK_STATE_SIZE (16u + VIRTIO_PCI_STATE_SIZE)
#define DEV_VIRTIO_BLK_QUEUE_SIZE 256u

extern const struct dev_ops dev_virtio_blk_ops;

#endif
