/* dev_serial: a 16550A UART at COM1 (0x3f8, IRQ 4).
 *
 * Transmit is instant (THR always empty); bytes go to an output ring that the libuv loop drains
 * into the output fd, so vCPU threads never wait on a slow terminal. When the ring is full the
 * vCPU writes it out itself rather than lose bytes. Input (stdin with --serial stdio) is read by
 * the loop (a file on stdin: its first 4 KiB, read at start) and queued for the guest; the IRQ
 * follows the 16550 rules, gated by MCR.OUT2 as on a PC.
 */
#ifndef TERN_DEV_SERIAL_H
#define TERN_DEV_SERIAL_H

#include <uv.h>

#include "devices/dev_bus.h"

#define DEV_SERIAL_PORT 0x3f8
#define DEV_SERIAL_IRQ 4

struct dev_serial;

/* out_fd < 0 discards output (--serial none). The device does not own out_fd. */
int dev_serial_create(uv_loop_t *loop, int out_fd, const struct dev_host *host,
                      struct dev_serial **out);
int dev_serial_register(struct dev_serial *s, struct dev_bus *bus);

/* Reads guest input from in_fd on the loop (a tty, pipe, socket or file). */
int dev_serial_attach_input(struct dev_serial *s, int in_fd);

/* Register and input-FIFO state, for snapshots and migration. */
#define DEV_SERIAL_STATE_FIXED 16
#define DEV_SERIAL_STATE_MAX (DEV_SERIAL_STATE_FIXED + 4096)
/* Writes the state into buf (at least DEV_SERIAL_STATE_MAX bytes); returns its length. */
size_t dev_serial_save(struct dev_serial *s, uint8_t *buf);
/* Loads state saved by dev_serial_save; rejects malformed input with a message. */
int dev_serial_load(struct dev_serial *s, const uint8_t *buf, size_t len);

/* Writes every pending output byte now. Call before exiting. */
void dev_serial_flush(struct dev_serial *s);

/* Closes the device's loop handles; frees the device once they are closed. */
void dev_serial_close(struct dev_serial *s);

#endif
