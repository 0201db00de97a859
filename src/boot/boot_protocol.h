/* boot_protocol: the direct-boot contract between tern and ELF64 payloads.
 *
 * Shared by tern and the test guests (which include it freestanding). tern enters every vCPU in
 * 64-bit mode at e_entry with RDI = vCPU index and RSI = BOOT_INFO_GPA, paging on identity tables
 * mapping all guest-physical memory with 2 MiB user-accessible pages, a flat GDT (0x08 code,
 * 0x10 data, 0x18 TSS), no IDT and interrupts off. Everything below BOOT_PAYLOAD_MIN_GPA belongs
 * to tern; payload segments must lie above it, inside RAM.
 */
#ifndef TERN_BOOT_PROTOCOL_H
#define TERN_BOOT_PROTOCOL_H

#include <stdint.h>

#define BOOT_INFO_MAGIC 0x4e524554u /* "TERN" */
#define BOOT_INFO_VERSION 1u

#define BOOT_INFO_GPA 0x1000ull
#define BOOT_CMDLINE_GPA 0x2000ull
#define BOOT_CMDLINE_MAX 4095u /* bytes, without the terminating NUL */
#define BOOT_GDT_GPA 0x3000ull
#define BOOT_PML4_GPA 0x10000ull
#define BOOT_PAGE_TABLES_END 0x92000ull
#define BOOT_PAYLOAD_MIN_GPA 0x100000ull

#define BOOT_MAX_RAM_REGIONS 4

/* Ports of tern's guest interface. */
#define BOOT_PORT_EXIT 0x501 /* 32-bit write: the VM ends, tern exits with this code */
#define BOOT_PORT_PARK 0x502 /* any write: this vCPU stops running until the VM ends */
#define BOOT_PORT_IDLE 0x503 /* 32-bit write N: this vCPU sleeps N microseconds (at most 1000) */
#define BOOT_IDLE_MAX_US 1000u

struct boot_ram_region {
    uint64_t gpa;
    uint64_t size;
};

struct boot_info {
    uint32_t magic;
    uint32_t version;
    uint64_t ram_size; /* total bytes of RAM, all regions together */
    uint32_t cpu_count;
    uint32_t region_count;
    struct boot_ram_region regions[BOOT_MAX_RAM_REGIONS];
    uint64_t cmdline_gpa; /* NUL-terminated */
    uint32_t cmdline_len; /* without the NUL */
    uint32_t tsc_khz;     /* guest TSC frequency, 0 if unknown */
};

#endif
