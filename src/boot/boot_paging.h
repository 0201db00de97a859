/* boot_paging: the 64-bit environment both boot protocols enter — identity page tables over all
 * of guest-physical memory (2 MiB pages, at least the 32-bit space) and a flat GDT whose code,
 * data and TSS selectors each protocol chooses — and the entry state handed to the vCPUs.
 */
#ifndef TERN_BOOT_PAGING_H
#define TERN_BOOT_PAGING_H

#include <stdbool.h>
#include <stdint.h>

#include "memory/mem.h"

/* Where and how the vCPUs enter the guest. */
struct boot_entry {
    uint64_t rip;
    uint64_t rsi;
    uint64_t cr3;
    uint64_t gdt_base;
    uint16_t gdt_limit;
    uint16_t code_sel;
    uint16_t data_sel;
    uint16_t tss_sel;
    /* true: every vCPU starts at rip (tern's direct boot, RDI = vCPU index). false: only vCPU 0
     * does; the others wait for the INIT/SIPI the guest sends them, as on a PC. */
    bool start_all;
};

/* Writes the identity tables at BOOT_PML4_GPA and sets out->cr3. */
int boot_paging_identity_map(struct mem *mem, struct boot_entry *out);

/* Writes a GDT at BOOT_GDT_GPA with a 64-bit DPL0 code descriptor at code_sel, a flat data
 * descriptor at data_sel and a busy 64-bit TSS descriptor (base 0) at tss_sel, and records them
 * in out. Selectors are multiples of 8 below 0x40. */
int boot_paging_flat_gdt(struct mem *mem, uint16_t code_sel, uint16_t data_sel, uint16_t tss_sel,
                         struct boot_entry *out);

#endif
