/* boot_load: `tern run --kernel FILE`: reads FILE once, tells an ELF64 payload (tern's direct
 * boot, boot_protocol.h) from a Linux bzImage (the 64-bit boot protocol), writes everything the
 * guest needs into its RAM and returns how the vCPUs enter it.
 *
 * A bzImage gets the zero page at BOOT_LINUX_ZERO_PAGE_GPA, the command line at
 * BOOT_CMDLINE_GPA, the protected-mode kernel at its pref_address, the initrd as high as the
 * kernel allows below the 32-bit hole, the ACPI tables in the BIOS area, identity page tables
 * and a GDT with Linux's __BOOT_CS (0x10) and __BOOT_DS (0x18). vCPU 0 enters startup_64 with
 * RSI = the zero page; the others wait for the kernel's INIT/SIPI.
 */
#ifndef TERN_BOOT_LOAD_H
#define TERN_BOOT_LOAD_H

#include <stdint.h>

#include "boot/boot_paging.h"
#include "memory/mem.h"

#define BOOT_LINUX_ZERO_PAGE_GPA 0x7000ull
#define BOOT_LINUX_SEL_CODE 0x10
#define BOOT_LINUX_SEL_DATA 0x18
#define BOOT_LINUX_SEL_TSS 0x20
/* What a bzImage gets when --cmdline is not given. */
#define BOOT_LINUX_DEFAULT_CMDLINE "console=ttyS0 reboot=k panic=-1"

struct boot_load_params {
    const char *kernel_path;
    const char *initrd_path; /* bzImage only; NULL for none */
    const char *cmdline;     /* NULL: none for a payload, the default for a bzImage */
    unsigned cpu_count;
    uint32_t tsc_khz; /* for the direct boot's info block; 0 if unknown */
};

int boot_load(struct mem *mem, const struct boot_load_params *p, struct boot_entry *out);

#endif
