/* boot_direct: what tern writes into guest RAM before the first KVM_RUN of a direct boot — the
 * boot-info block, the command line, a flat GDT and identity page tables over all of guest
 * physical memory (see boot_protocol.h) — and the register state each vCPU starts with.
 */
#ifndef TERN_BOOT_DIRECT_H
#define TERN_BOOT_DIRECT_H

#include <stddef.h>
#include <stdint.h>

#include "boot/boot_paging.h"
#include "memory/mem.h"

#define BOOT_SEL_CODE 0x08
#define BOOT_SEL_DATA 0x10
#define BOOT_SEL_TSS 0x18

struct boot_direct_params {
    unsigned cpu_count;
    const char *cmdline; /* may be NULL */
    uint32_t tsc_khz;
    uint64_t entry;
};

int boot_direct_setup(struct mem *mem, const struct boot_direct_params *p, struct boot_entry *out);

#endif
