/* dev_acpi_pm: the ACPI fixed-hardware registers that the FADT (boot_acpi) points a kernel at,
 * at DEV_ACPI_PM_PORT: PM1a status (+0) and enable (+2), PM1a control (+4) and the 24-bit,
 * 3.579545 MHz PM timer (+8).
 *
 * tern has no SMI port, so the platform is always in ACPI mode: SCI_EN reads as set. No event
 * is ever raised, so no SCI either. Writing SLP_EN with SLP_TYP = DEV_ACPI_PM_S5_TYPE (the value
 * the DSDT's \_S5 gives) powers the VM off; other sleep states do not exist.
 */
#ifndef TERN_DEV_ACPI_PM_H
#define TERN_DEV_ACPI_PM_H

#include <stddef.h>
#include <stdint.h>

#include "devices/dev.h"

#define DEV_ACPI_PM_PORT 0x600
#define DEV_ACPI_PM_EVT_OFFSET 0
#define DEV_ACPI_PM_CNT_OFFSET 4
#define DEV_ACPI_PM_TMR_OFFSET 8
#define DEV_ACPI_PM_LEN 12
#define DEV_ACPI_PM_SCI_IRQ 9
#define DEV_ACPI_PM_S5_TYPE 5
#define DEV_ACPI_PM_STATE_SIZE 12u

/* Its state: u16 status, u16 enable, u16 control, u16 zero, u32 timer value. A loaded timer
 * holds the saved value until the device resumes, which the VM does as its vCPUs run (right
 * after KVM_SET_CLOCK): the guest sees no time pass between the source's pause and the
 * destination's resume, as with kvmclock, and a restored VM that never ran saves exactly what
 * it loaded. */
extern const struct dev_ops dev_acpi_pm_ops;

#endif
