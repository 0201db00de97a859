#include "boot/boot_linux.h"

#include "err/err.h"
#include "le/le.h"

#include <errno.h>
#include <string.h>

#define HDR_SETUP_SECTS 0x1f1
#define HDR_JUMP_END 0x201 /* the byte that gives the header's length */
#define HDR_MAGIC 0x202
#define HDR_VERSION 0x206
#define HDR_LOADFLAGS 0x211
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE 0x234
#define HDR_XLOADFLAGS 0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE 0x260

/* boot_params (the zero page) outside the setup header. */
#define ZP_ACPI_RSDP_ADDR 0x070
#define ZP_EXT_RAMDISK_IMAGE 0x0c0
#define ZP_EXT_RAMDISK_SIZE 0x0c4
#define ZP_EXT_CMD_LINE_PTR 0x0c8
#define ZP_E820_ENTRIES 0x1e8
#define ZP_SETUP_HEADER_END 0x290 /* where boot_params' copy of the setup header stops */
#define ZP_E820_TABLE 0x2d0
/* Setup header fields the loader writes. */
#define HDR_VID_MODE 0x1fa
#define HDR_TYPE_OF_LOADER 0x210
#define HDR_CODE32_START 0x214
#define HDR_RAMDISK_IMAGE 0x218
#define HDR_RAMDISK_SIZE 0x21c
#define HDR_CMD_LINE_PTR 0x228

#define LOADER_UNDEFINED 0xff /* boot.rst: a loader with no assigned ID */
#define LOADFLAG_LOADED_HIGH 0x01u
#define XLF_KERNEL_64 0x01u

/* Below the EBDA: conventional memory a PC leaves to the OS. */
#define E820_LOW_END 0x9fc00ull
#define E820_ONE_MIB 0x100000ull

bool boot_linux_is_bzimage(const uint8_t *data, size_t len)
{
    return len >= HDR_MAGIC + 4 && !memcmp(data + HDR_MAGIC, "HdrS", 4);
}

int boot_linux_parse(const uint8_t *data, size_t len, struct boot_linux_image *out)
{
    memset(out, 0, sizeof(*out));
    if (!boot_linux_is_bzimage(data, len))
        return err_set(-ENOEXEC, "not a bzImage: no \"HdrS\" setup header at 0x202");
    if (len < HDR_VERSION + 2)
        return err_set(-ENOEXEC, "bzImage: the setup header is cut off");
    out->protocol = le_get16(data + HDR_VERSION);
    if (out->protocol < BOOT_LINUX_MIN_PROTOCOL)
        return err_set(-ENOEXEC,
                       "bzImage: boot protocol %u.%02u is too old; tern needs 2.06 or later",
                       out->protocol >> 8, out->protocol & 0xff);
    out->header_end = HDR_MAGIC + (size_t)data[HDR_JUMP_END];
    size_t needed = out->protocol >= 0x020a ? HDR_INIT_SIZE + 4 : HDR_CMDLINE_SIZE + 4;
    if (out->header_end < needed || len < needed)
        return err_set(-ENOEXEC,
                       "bzImage: the setup header ends at 0x%zx; protocol %u.%02u needs 0x%zx",
                       out->header_end, out->protocol >> 8, out->protocol & 0xff, needed);
    out->setup_sects = data[HDR_SETUP_SECTS];
    out->setup_size = ((size_t)(out->setup_sects ? out->setup_sects : 4) + 1) * 512;
    if (out->setup_size < out->header_end)
        return err_set(-ENOEXEC, "bzImage: setup_sects %u is smaller than the setup header",
                       out->setup_sects);
    if (out->setup_size >= len)
        return err_set(-ENOEXEC,
                       "bzImage: the file (%zu bytes) ends inside its %zu-byte setup code "
                       "(setup_sects %u): truncated",
                       len, out->setup_size, out->setup_sects);
    out->kernel_size = len - out->setup_size;
    out->loadflags = data[HDR_LOADFLAGS];
    if (!(out->loadflags & LOADFLAG_LOADED_HIGH))
        return err_set(-ENOEXEC,
                       "bzImage: loadflags 0x%02x lack LOADED_HIGH: a zImage, which "
                       "loads below 1 MiB, is not supported",
                       out->loadflags);
    out->initrd_addr_max = le_get32(data + HDR_INITRD_ADDR_MAX);
    out->kernel_alignment = le_get32(data + HDR_KERNEL_ALIGNMENT);
    out->relocatable = data[HDR_RELOCATABLE] != 0;
    out->cmdline_size = le_get32(data + HDR_CMDLINE_SIZE);
    if (out->protocol >= 0x020c) {
        out->xloadflags = le_get16(data + HDR_XLOADFLAGS);
        if (!(out->xloadflags & XLF_KERNEL_64))
            return err_set(-ENOEXEC,
                           "bzImage: xloadflags 0x%04x lack XLF_KERNEL_64: no 64-bit entry point",
                           out->xloadflags);
    }
    if (out->protocol >= 0x020a) {
        out->pref_address = (uint64_t)le_get32(data + HDR_PREF_ADDRESS) |
                            (uint64_t)le_get32(data + HDR_PREF_ADDRESS + 4) << 32;
        out->init_size = le_get32(data + HDR_INIT_SIZE);
    } else {
        out->pref_address = E820_ONE_MIB;
        out->init_size =
            (uint32_t)(out->kernel_size < UINT32_MAX / 4 ? out->kernel_size * 4 : UINT32_MAX);
    }
    if (out->init_size < out->kernel_size)
        return err_set(-ENOEXEC, "bzImage: init_size %u is smaller than the kernel's %zu bytes",
                       out->init_size, out->kernel_size);
    return 0;
}

static unsigned e820_add(struct boot_e820_entry *out, unsigned n, unsigned max, uint64_t addr,
                         uint64_t size, uint32_t type)
{
    if (n < max && size)
        out[n++] = (struct boot_e820_entry){.addr = addr, .size = size, .type = type};
    return n;
}

unsigned boot_linux_e820(const struct mem_region *regions, unsigned region_count,
                         struct boot_e820_entry *out, unsigned max)
{
    unsigned n = 0;
    for (unsigned r = 0; r < region_count; r++) {
        uint64_t start = regions[r].gpa, end = regions[r].gpa + regions[r].size;
        if (start != 0) {
            n = e820_add(out, n, max, start, end - start, BOOT_E820_RAM);
            continue;
        }
        /* The first region starts at 0: leave the PC's EBDA, VGA and BIOS area out of RAM. */
        uint64_t low_end = end < E820_LOW_END ? end : E820_LOW_END;
        n = e820_add(out, n, max, 0, low_end, BOOT_E820_RAM);
        if (end > E820_LOW_END)
            n = e820_add(out, n, max, E820_LOW_END, E820_ONE_MIB - E820_LOW_END,
                         BOOT_E820_RESERVED);
        if (end > E820_ONE_MIB)
            n = e820_add(out, n, max, E820_ONE_MIB, end - E820_ONE_MIB, BOOT_E820_RAM);
    }
    return n;
}

int boot_linux_place_initrd(uint64_t size, uint32_t initrd_addr_max,
                            const struct mem_region *regions, unsigned region_count, uint64_t low,
                            uint64_t *addr)
{
    if (!region_count || regions[0].gpa != 0)
        return err_set(-EINVAL, "no RAM below 4 GiB for the initrd");
    uint64_t ram_end = regions[0].size;
    uint64_t hi = (uint64_t)initrd_addr_max + 1 < ram_end ? (uint64_t)initrd_addr_max + 1 : ram_end;
    uint64_t start = hi >= size ? (hi - size) & ~(MEM_PAGE_SIZE - 1) : 0;
    if (size == 0 || hi < size || start < low)
        return err_set(-E2BIG,
                       "--initrd: %llu KiB does not fit between the kernel's end at 0x%llx and "
                       "0x%llx (RAM below the hole, or the kernel's initrd_addr_max 0x%x)",
                       (unsigned long long)(size >> 10), (unsigned long long)low,
                       (unsigned long long)hi, initrd_addr_max);
    *addr = start;
    return 0;
}

void boot_linux_zero_page(const struct boot_linux_image *img, const uint8_t *data,
                          const struct boot_linux_layout *layout,
                          const struct boot_e820_entry *e820, unsigned e820_count,
                          uint8_t zero_page[BOOT_LINUX_ZERO_PAGE_SIZE])
{
    memset(zero_page, 0, BOOT_LINUX_ZERO_PAGE_SIZE);
    size_t hdr_end = img->header_end < ZP_SETUP_HEADER_END ? img->header_end : ZP_SETUP_HEADER_END;
    memcpy(zero_page + HDR_SETUP_SECTS, data + HDR_SETUP_SECTS, hdr_end - HDR_SETUP_SECTS);

    le_put16(zero_page + HDR_VID_MODE, 0xffff); /* "normal": no mode change */
    zero_page[HDR_TYPE_OF_LOADER] = LOADER_UNDEFINED;
    le_put32(zero_page + HDR_CODE32_START, (uint32_t)layout->kernel_gpa);
    le_put32(zero_page + HDR_CMD_LINE_PTR, (uint32_t)layout->cmdline_gpa);
    le_put32(zero_page + ZP_EXT_CMD_LINE_PTR, (uint32_t)(layout->cmdline_gpa >> 32));
    le_put32(zero_page + HDR_RAMDISK_IMAGE, (uint32_t)layout->initrd_gpa);
    le_put32(zero_page + ZP_EXT_RAMDISK_IMAGE, (uint32_t)(layout->initrd_gpa >> 32));
    le_put32(zero_page + HDR_RAMDISK_SIZE, (uint32_t)layout->initrd_size);
    le_put32(zero_page + ZP_EXT_RAMDISK_SIZE, (uint32_t)(layout->initrd_size >> 32));
    /* Protocol 2.14 added the field; older kernels scan the BIOS area for the RSDP instead. */
    if (img->protocol >= 0x020e) {
        le_put32(zero_page + ZP_ACPI_RSDP_ADDR, (uint32_t)layout->rsdp_gpa);
        le_put32(zero_page + ZP_ACPI_RSDP_ADDR + 4, (uint32_t)(layout->rsdp_gpa >> 32));
    }

    unsigned n = e820_count < BOOT_LINUX_E820_MAX ? e820_count : BOOT_LINUX_E820_MAX;
    zero_page[ZP_E820_ENTRIES] = (uint8_t)n;
    memcpy(zero_page + ZP_E820_TABLE, e820, n * sizeof(e820[0]));
}

int boot_linux_check_cmdline(const struct boot_linux_image *img, const char *cmdline)
{
    size_t n = cmdline ? strlen(cmdline) : 0;
    if (n > img->cmdline_size)
        return err_set(-E2BIG,
                       "--cmdline is %zu bytes; this kernel takes at most %u (cmdline_size)", n,
                       img->cmdline_size);
    return 0;
}
