/* dev_sysport: tern's guest-interface ports (boot_protocol.h) and the i8042 reset line.
 *
 * BOOT_PORT_EXIT: a 32-bit write ends the VM with that exit code. BOOT_PORT_PARK: any write stops
 * the writing vCPU until the VM ends (how an idle secondary vCPU waits at CPL3 without spinning).
 * i8042 (0x60/0x64): command 0xfe on 0x64 pulses the reset line, which ends the VM cleanly; the
 * controller otherwise reads as present and idle.
 */
#ifndef TERN_DEV_SYSPORT_H
#define TERN_DEV_SYSPORT_H

#include "devices/dev.h"

extern const struct dev_ops dev_sysport_ops;

#endif
