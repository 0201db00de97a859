/* boot_elf: ELF64 x86-64 payloads for direct boot.
 *
 * boot_elf_parse() and boot_elf_check_placement() are pure and validate everything a hostile file
 * could get wrong; boot_elf_load() copies checked segments into guest RAM by physical address
 * (p_paddr) and zero-fills each segment's tail (p_memsz beyond p_filesz).
 */
#ifndef TERN_BOOT_ELF_H
#define TERN_BOOT_ELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memory/mem.h"

#define BOOT_ELF_MAX_SEGMENTS 32

struct boot_elf_segment {
    uint64_t paddr;
    uint64_t offset;
    uint64_t filesz;
    uint64_t memsz;
};

struct boot_elf_image {
    uint64_t entry;
    unsigned segment_count;
    struct boot_elf_segment segments[BOOT_ELF_MAX_SEGMENTS];
};

/* True when data starts with the ELF magic (of any class). */
bool boot_elf_has_magic(const uint8_t *data, size_t len);

int boot_elf_parse(const uint8_t *data, size_t len, struct boot_elf_image *out);

/* Every segment inside one RAM region and above the boot area; the entry inside a segment. */
int boot_elf_check_placement(const struct boot_elf_image *img, const struct mem_region *regions,
                             unsigned region_count);

int boot_elf_load(const struct boot_elf_image *img, const uint8_t *data, struct mem *mem);

#endif
