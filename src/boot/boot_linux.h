/* boot_linux: Linux bzImages and the x86 boot protocol's 64-bit entry (Documentation/arch/x86/
 * boot.rst), the pure part: the setup header, the e820 map, where the initrd goes, and the
 * command-line limit. Everything a hostile file can get wrong is checked here, with errors that
 * name the field.
 */
#ifndef TERN_BOOT_LINUX_H
#define TERN_BOOT_LINUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memory/mem.h"

#define BOOT_LINUX_MIN_PROTOCOL 0x0206u
#define BOOT_LINUX_E820_MAX 128u
#define BOOT_E820_RAM 1u
#define BOOT_E820_RESERVED 2u

/* The setup header fields tern reads (offsets are from the start of the file). */
struct boot_linux_image {
    uint16_t protocol;         /* 0x206: e.g. 0x020f */
    uint8_t setup_sects;       /* 0x1f1, 0 meaning 4 */
    uint8_t loadflags;         /* 0x211 */
    uint16_t xloadflags;       /* 0x236, protocol 2.12+ */
    uint32_t initrd_addr_max;  /* 0x22c */
    uint32_t kernel_alignment; /* 0x230 */
    bool relocatable;          /* 0x234 */
    uint32_t cmdline_size;     /* 0x238: longest command line, without the NUL */
    uint64_t pref_address;     /* 0x258, protocol 2.10+; else 0x100000 */
    uint32_t init_size; /* 0x260, protocol 2.10+: bytes the kernel needs from its load address */
    size_t setup_size;  /* bytes before the protected-mode kernel: (setup_sects + 1) * 512 */
    size_t header_end;  /* one past the setup header: 0x202 + the byte at 0x201 */
    size_t kernel_size; /* bytes of protected-mode kernel in the file */
};

struct boot_e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));

/* True when the file carries the setup header's "HdrS" magic. */
bool boot_linux_is_bzimage(const uint8_t *data, size_t len);

int boot_linux_parse(const uint8_t *data, size_t len, struct boot_linux_image *out);

/* The e820 map for RAM laid out as regions: conventional memory below the EBDA, the reserved
 * EBDA/VGA/BIOS area up to 1 MiB, RAM from 1 MiB to the 32-bit hole, and RAM above 4 GiB.
 * Returns the number of entries written to out (at most max). */
unsigned boot_linux_e820(const struct mem_region *regions, unsigned region_count,
                         struct boot_e820_entry *out, unsigned max);

/* Highest page-aligned address for an initrd of size bytes: ending at or below initrd_addr_max
 * and inside RAM below 4 GiB, starting at or above low (the end of the kernel). */
int boot_linux_place_initrd(uint64_t size, uint32_t initrd_addr_max,
                            const struct mem_region *regions, unsigned region_count, uint64_t low,
                            uint64_t *addr);

/* Where the loader put things, for the zero page. */
struct boot_linux_layout {
    uint64_t kernel_gpa; /* the protected-mode kernel; startup_64 is 0x200 further */
    uint64_t cmdline_gpa;
    uint64_t initrd_gpa; /* 0 with no initrd */
    uint64_t initrd_size;
    uint64_t rsdp_gpa; /* 0 with no ACPI tables */
};

#define BOOT_LINUX_ZERO_PAGE_SIZE 4096u
#define BOOT_LINUX_ENTRY_64_OFFSET 0x200u

/* Fills the zero page (struct boot_params) for the 64-bit entry: the image's setup header (data
 * is the whole file, already parsed into img) with the loader's fields set, and the e820 map. */
void boot_linux_zero_page(const struct boot_linux_image *img, const uint8_t *data,
                          const struct boot_linux_layout *layout,
                          const struct boot_e820_entry *e820, unsigned e820_count,
                          uint8_t zero_page[BOOT_LINUX_ZERO_PAGE_SIZE]);

/* The command line against the kernel's own limit (cmdline_size). */
int boot_linux_check_cmdline(const struct boot_linux_image *img, const char *cmdline);

#endif
