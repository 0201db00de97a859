/* boot_acpi: the ACPI tables a Linux guest reads to find its CPUs, interrupt controllers and
 * PCI bus: RSDP, XSDT, FADT (pointing at dev_acpi_pm's registers, SCI on IRQ 9, CMOS century
 * register), FACS, a DSDT with \_S5 (so the guest can power off), the PCI root bridge
 * \_SB.PCI0 (its bus, I/O and memory windows in _CRS, INTx routing to IOAPIC GSIs 16-19 in
 * _PRT) and the ECAM's reservation \_SB.MRES, a MADT with one local APIC per vCPU, KVM's
 * IOAPIC and the SCI's override, and the MCFG pointing at the ECAM. Pure: it fills a buffer that
 * guest RAM maps at a given address, in the BIOS area the e820 map reserves.
 */
#ifndef TERN_BOOT_ACPI_H
#define TERN_BOOT_ACPI_H

#include <stddef.h>
#include <stdint.h>

#define BOOT_ACPI_GPA 0xe0000ull /* RSDP here: the BIOS area Linux scans on 16-byte steps */
#define BOOT_ACPI_MAX 0x10000u
#define BOOT_ACPI_IOAPIC_GPA 0xfec00000u
#define BOOT_ACPI_LAPIC_GPA 0xfee00000u

/* Fills buf (cap bytes, guest-physical address base) for cpu_count vCPUs, the PCI root
 * bridge's 64-bit window starting at mmio64_base; *used receives the bytes written. The RSDP
 * is at base. */
int boot_acpi_build(uint8_t *buf, size_t cap, uint64_t base, unsigned cpu_count,
                    uint64_t mmio64_base, size_t *used);

#endif
