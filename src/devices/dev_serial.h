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

#include "devices/dev.h"

#define DEV_SERIAL_PORT 0x3f8
#define DEV_SERIAL_IRQ 4

/* Its state: the registers and the input FIFO (ier lcr mcr lsr_errors scr dll dlm fcr
 * thre_pending irq_level 0 0, u32 input length, the input bytes). Output goes to
 * env->serial_out_fd (-1 discards it, --serial none; the device does not own the fd), input
 * comes from env->serial_in_fd. */
#define DEV_SERIAL_IN_MAX 4096u
#define DEV_SERIAL_STATE_FIXED 16u
#define DEV_SERIAL_STATE_MAX (DEV_SERIAL_STATE_FIXED + DEV_SERIAL_IN_MAX)
extern const struct dev_ops dev_serial_ops;

#endif
