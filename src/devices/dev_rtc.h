/* dev_rtc: the PC's MC146818 CMOS clock at ports 0x70 (index; bit 7 masks NMI) and 0x71 (data).
 *
 * The time registers follow the host's UTC clock, encoded as register B asks (BCD or binary,
 * 12 or 24 hours); the guest's writes to them are ignored. UIP never reads as set, register D
 * reports a valid battery, and register C no pending interrupt: tern raises no IRQ 8, so the
 * periodic, alarm and update interrupts do not exist. The other 114 bytes are plain CMOS RAM.
 */
#ifndef TERN_DEV_RTC_H
#define TERN_DEV_RTC_H

#include <stddef.h>
#include <stdint.h>

#include "devices/dev.h"

#define DEV_RTC_PORT 0x70
#define DEV_RTC_CENTURY 0x32 /* the register that ACPI's FADT names for the century */
#define DEV_RTC_STATE_SIZE 132u

/* Its state: u8 index, 3 zero bytes, the 128 bytes of CMOS RAM (DEV_RTC_STATE_SIZE). */
extern const struct dev_ops dev_rtc_ops;

#endif
