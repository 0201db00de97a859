/* bzImage setup headers, the e820 map, initrd placement and command-line limits. The synthetic
 * headers carry the values of a Debian 6.1 x86-64 kernel (protocol 2.15, setup_sects 27,
 * header end 0x26c, pref_address 16 MiB, initrd_addr_max 0x7fffffff, cmdline_size 2047). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot_linux.h"
#include "err/err.h"
#include "le/le.h"

#define IMAGE_SIZE (64u << 10)

static uint8_t *make_image(uint16_t protocol)
{
    uint8_t *d = calloc(1, IMAGE_SIZE);
    d[0x1f1] = 27;
    d[0x201] = 0x6a; /* the jump over the header: it ends at 0x26c */
    memcpy(d + 0x202, "HdrS", 4);
    le_put16(d + 0x206, protocol);
    d[0x211] = 0x01; /* LOADED_HIGH */
    le_put32(d + 0x22c, 0x7fffffff);
    le_put32(d + 0x230, 0x200000);
    d[0x234] = 1;
    le_put16(d + 0x236, 0x7f); /* XLF_KERNEL_64 and friends */
    le_put32(d + 0x238, 2047);
    le_put32(d + 0x258, 0x1000000);
    le_put32(d + 0x260, IMAGE_SIZE * 2);
    return d;
}

static void expect_parse_error(uint8_t *d, size_t len, const char *fragment)
{
    struct boot_linux_image img;
    cr_assert_lt(boot_linux_parse(d, len, &img), 0, "accepted; wanted '%s'", fragment);
    cr_assert(strstr(err_msg(), fragment), "'%s' not in '%s'", fragment, err_msg());
}

Test(bzimage, parses_a_current_kernel_header)
{
    uint8_t *d = make_image(0x020f);
    struct boot_linux_image img;
    cr_assert_eq(boot_linux_parse(d, IMAGE_SIZE, &img), 0, "%s", err_msg());
    cr_expect_eq(img.protocol, 0x020f);
    cr_expect_eq(img.setup_size, 28 * 512);
    cr_expect_eq(img.kernel_size, IMAGE_SIZE - 28 * 512);
    cr_expect_eq(img.header_end, 0x26c);
    cr_expect_eq(img.pref_address, 0x1000000);
    cr_expect_eq(img.initrd_addr_max, 0x7fffffff);
    cr_expect_eq(img.cmdline_size, 2047);
    cr_expect(img.relocatable);
    cr_expect(boot_linux_is_bzimage(d, IMAGE_SIZE));
    free(d);
}

Test(bzimage, rejects_bad_headers_naming_the_field)
{
    uint8_t *d = make_image(0x0205);
    expect_parse_error(d, IMAGE_SIZE, "boot protocol 2.05 is too old");
    free(d);
    d = make_image(0x020f);
    expect_parse_error(d, 28 * 512, "truncated");
    expect_parse_error(d, 0x100, "no \"HdrS\"");
    d[0x211] = 0;
    expect_parse_error(d, IMAGE_SIZE, "LOADED_HIGH");
    d[0x211] = 1;
    le_put16(d + 0x236, 0);
    expect_parse_error(d, IMAGE_SIZE, "XLF_KERNEL_64");
    le_put16(d + 0x236, 1);
    d[0x201] = 0x20;
    expect_parse_error(d, IMAGE_SIZE, "the setup header ends at 0x222");
    d[0x201] = 0x6a;
    le_put32(d + 0x260, 100);
    expect_parse_error(d, IMAGE_SIZE, "init_size 100");
    memcpy(d + 0x202, "HdrX", 4);
    expect_parse_error(d, IMAGE_SIZE, "not a bzImage");
    free(d);
}

static unsigned e820_for(uint64_t ram, struct boot_e820_entry *out)
{
    struct mem_region regions[MEM_MAX_REGIONS];
    unsigned n = mem_layout(ram, regions);
    return boot_linux_e820(regions, n, out, BOOT_LINUX_E820_MAX);
}

Test(bzimage, e820_around_the_hole)
{
    struct boot_e820_entry e[BOOT_LINUX_E820_MAX];
    cr_assert_eq(e820_for(64ull << 20, e), 3);
    cr_expect(e[0].addr == 0 && e[0].size == 0x9fc00 && e[0].type == BOOT_E820_RAM);
    cr_expect(e[1].addr == 0x9fc00 && e[1].size == 0x60400 && e[1].type == BOOT_E820_RESERVED);
    cr_expect(e[2].addr == 0x100000 && e[2].size == (64ull << 20) - 0x100000 &&
              e[2].type == BOOT_E820_RAM);
    /* Exactly 3 GiB: everything below the hole, nothing above 4 GiB. */
    cr_assert_eq(e820_for(3ull << 30, e), 3);
    cr_expect_eq(e[2].addr + e[2].size, 0xc0000000ull);
    /* 5 GiB: 3 below the hole, 2 from 4 GiB on. */
    cr_assert_eq(e820_for(5ull << 30, e), 4);
    cr_expect_eq(e[2].addr + e[2].size, 0xc0000000ull);
    cr_expect(e[3].addr == 0x100000000ull && e[3].size == 2ull << 30 && e[3].type == BOOT_E820_RAM);
    /* 512 KiB: only conventional memory. */
    cr_assert_eq(e820_for(512ull << 10, e), 1);
    cr_expect_eq(e[0].size, 512ull << 10);
}

Test(bzimage, initrd_goes_high_below_its_limits)
{
    struct mem_region regions[MEM_MAX_REGIONS];
    unsigned n = mem_layout(2ull << 30, regions);
    uint64_t addr;
    /* Below initrd_addr_max (a 2.02-era 0x37ffffff), page-aligned. */
    cr_assert_eq(boot_linux_place_initrd(10000, 0x37ffffff, regions, n, 0x2000000, &addr), 0);
    cr_expect_eq(addr, (0x38000000ull - 10000) & ~0xfffull);
    /* Below the end of RAM when that comes first. */
    cr_assert_eq(boot_linux_place_initrd(1 << 20, 0x7fffffff, regions, n, 0x2000000, &addr), 0);
    cr_expect_eq(addr, (2ull << 30) - (1 << 20));
    /* 5 GiB of RAM: still below the hole. */
    n = mem_layout(5ull << 30, regions);
    cr_assert_eq(boot_linux_place_initrd(1 << 20, 0xffffffff, regions, n, 0x2000000, &addr), 0);
    cr_expect_eq(addr, 0xc0000000ull - (1 << 20));
    /* Too big to fit above the kernel. */
    n = mem_layout(64ull << 20, regions);
    cr_assert_lt(boot_linux_place_initrd(60ull << 20, 0x7fffffff, regions, n, 0x2000000, &addr), 0);
    cr_expect(strstr(err_msg(), "--initrd: 61440 KiB does not fit"), "%s", err_msg());
}

Test(bzimage, cmdline_limit_is_the_kernels)
{
    struct boot_linux_image img = {.cmdline_size = 2047};
    char *line = malloc(2049);
    memset(line, 'a', 2048);
    line[2047] = '\0';
    cr_expect_eq(boot_linux_check_cmdline(&img, line), 0);
    line[2047] = 'a';
    line[2048] = '\0';
    cr_expect_lt(boot_linux_check_cmdline(&img, line), 0);
    cr_expect(strstr(err_msg(), "--cmdline is 2048 bytes; this kernel takes at most 2047"), "%s",
              err_msg());
    cr_expect_eq(boot_linux_check_cmdline(&img, NULL), 0);
    free(line);
}

Test(bzimage, zero_page_carries_the_header_and_the_loader_fields)
{
    uint8_t *d = make_image(0x020f);
    d[0x26b] = 0x5a; /* the header's last byte: copied */
    d[0x26c] = 0xa5; /* past the header: not copied */
    d[0x210] = 0x00; /* type_of_loader: overwritten */
    struct boot_linux_image img;
    cr_assert_eq(boot_linux_parse(d, IMAGE_SIZE, &img), 0, "%s", err_msg());
    struct boot_linux_layout layout = {.kernel_gpa = 0x1000000,
                                       .cmdline_gpa = 0x2000,
                                       .initrd_gpa = 0x1234567000ull,
                                       .initrd_size = 0x100000123ull,
                                       .rsdp_gpa = 0xe0000};
    struct boot_e820_entry e820[BOOT_LINUX_E820_MAX];
    unsigned n = e820_for(5ull << 30, e820);
    uint8_t zp[BOOT_LINUX_ZERO_PAGE_SIZE];
    memset(zp, 0xcc, sizeof(zp));
    boot_linux_zero_page(&img, d, &layout, e820, n, zp);

    cr_expect(!memcmp(zp + 0x202, "HdrS", 4));
    cr_expect_eq(zp[0x1f1], 27);
    cr_expect_eq(zp[0x26b], 0x5a);
    cr_expect_eq(zp[0x26c], 0);
    cr_expect_eq(zp[0x210], 0xff);
    cr_expect_eq(le_get32(zp + 0x214), 0x1000000);
    cr_expect_eq(le_get32(zp + 0x228), 0x2000);
    cr_expect_eq(le_get32(zp + 0xc8), 0);
    /* The initrd's address and size split into the header's low halves and the ext_ fields. */
    cr_expect_eq(le_get32(zp + 0x218), 0x34567000u);
    cr_expect_eq(le_get32(zp + 0xc0), 0x12);
    cr_expect_eq(le_get32(zp + 0x21c), 0x123u);
    cr_expect_eq(le_get32(zp + 0xc4), 1);
    cr_expect_eq(le_get32(zp + 0x70), 0xe0000); /* acpi_rsdp_addr: protocol 2.14+ */
    cr_expect_eq(zp[0x1e8], 4);
    cr_expect(!memcmp(zp + 0x2d0, e820, 4 * 20));
    cr_expect_eq(zp[0x2d0 + 4 * 20], 0);
    free(d);

    /* Protocol 2.13 has no acpi_rsdp_addr: the kernel scans the BIOS area instead. */
    d = make_image(0x020d);
    cr_assert_eq(boot_linux_parse(d, IMAGE_SIZE, &img), 0, "%s", err_msg());
    boot_linux_zero_page(&img, d, &layout, e820, n, zp);
    cr_expect_eq(le_get32(zp + 0x70), 0);
    free(d);
}
