/* dev_virtio_net: a virtio network device on a TAP, one per --net.
 *
 * Queues: 0 receive, 1 transmit, 2 control. Packets move on the device's I/O thread: it polls
 * the TAP and the queues' notification eventfds (KVM_IOEVENTFD), and interrupts the driver
 * through MSI-X irqfds. The TAP carries the 12-byte virtio-net header (IFF_VNET_HDR, version 1
 * layout with num_buffers), so checksum offload and TSO/UFO pass both ways untouched; the TAP's
 * own offloads follow what the driver negotiated (TUNSETOFFLOAD). Receive buffers may be
 * merged (MRG_RXBUF); every guest page the device writes is marked dirty. The control queue
 * takes RX mode, MAC address and announce acknowledgements.
 *
 * At pause the transmit queue is drained to the TAP (nothing the guest queued is lost); packets
 * that arrive while paused wait in the TAP's queue or are dropped by it.
 */
#ifndef TERN_DEV_VIRTIO_NET_H
#define TERN_DEV_VIRTIO_NET_H

#include "devices/dev.h"
#include "virtio/virtio_pci.h"

#define DEV_VIRTIO_NET_STATE_SIZE (16u + VIRTIO_PCI_STATE_SIZE)
#define DEV_VIRTIO_NET_QUEUE_SIZE 256u

extern const struct dev_ops dev_virtio_net_ops;

#endif
