#include <criterion/criterion.h>
#include <elf.h>
#include <string.h>

#include "boot/boot_elf.h"
#include "boot/boot_protocol.h"
#include "err/err.h"

/* A synthetic ELF64 executable: header, program headers, then segment bytes, as a linker lays
 * out a static x86-64 binary. */
struct fake_elf {
    uint8_t bytes[8192];
    size_t len;
};

static Elf64_Ehdr *eh(struct fake_elf *f)
{
    return (Elf64_Ehdr *)f->bytes;
}

static Elf64_Phdr *ph(struct fake_elf *f, unsigned i)
{
    return (Elf64_Phdr *)(f->bytes + sizeof(Elf64_Ehdr)) + i;
}

static void make_elf(struct fake_elf *f, unsigned nseg)
{
    memset(f, 0, sizeof(*f));
    Elf64_Ehdr *h = eh(f);
    memcpy(h->e_ident, ELFMAG, SELFMAG);
    h->e_ident[EI_CLASS] = ELFCLASS64;
    h->e_ident[EI_DATA] = ELFDATA2LSB;
    h->e_ident[EI_VERSION] = EV_CURRENT;
    h->e_type = ET_EXEC;
    h->e_machine = EM_X86_64;
    h->e_version = EV_CURRENT;
    h->e_entry = 0x200000;
    h->e_phoff = sizeof(Elf64_Ehdr);
    h->e_ehsize = sizeof(Elf64_Ehdr);
    h->e_phentsize = sizeof(Elf64_Phdr);
    h->e_phnum = (uint16_t)nseg;
    for (unsigned i = 0; i < nseg; i++) {
        Elf64_Phdr *p = ph(f, i);
        p->p_type = PT_LOAD;
        p->p_offset = 0x1000 + i * 0x400;
        p->p_vaddr = p->p_paddr = 0x200000 + i * 0x10000;
        p->p_filesz = 0x400;
        p->p_memsz = 0x2000;
        memset(f->bytes + p->p_offset, 0xa0 + i, 0x400);
    }
    f->len = 0x1000 + nseg * 0x400;
}

static const struct mem_region ram64[] = {{.gpa = 0, .size = 64ull << 20}};

static void expect_parse_error(struct fake_elf *f, const char *fragment)
{
    struct boot_elf_image img;
    cr_assert_lt(boot_elf_parse(f->bytes, f->len, &img), 0, "accepted; wanted '%s'", fragment);
    cr_assert(strstr(err_msg(), fragment), "'%s' not in '%s'", fragment, err_msg());
}

static void expect_placement_error(struct fake_elf *f, const char *fragment)
{
    struct boot_elf_image img;
    cr_assert_eq(boot_elf_parse(f->bytes, f->len, &img), 0, "%s", err_msg());
    cr_assert_lt(boot_elf_check_placement(&img, ram64, 1), 0, "placed; wanted '%s'", fragment);
    cr_assert(strstr(err_msg(), fragment), "'%s' not in '%s'", fragment, err_msg());
}

Test(elf, good_file_parses_and_places)
{
    struct fake_elf f;
    make_elf(&f, 2);
    struct boot_elf_image img;
    cr_assert_eq(boot_elf_parse(f.bytes, f.len, &img), 0, "%s", err_msg());
    cr_assert_eq(img.entry, 0x200000);
    cr_assert_eq(img.segment_count, 2);
    cr_assert_eq(img.segments[1].paddr, 0x210000);
    cr_assert_eq(img.segments[1].filesz, 0x400);
    cr_assert_eq(img.segments[1].memsz, 0x2000);
    cr_assert_eq(boot_elf_check_placement(&img, ram64, 1), 0, "%s", err_msg());
}

Test(elf, skips_non_load_headers)
{
    struct fake_elf f;
    make_elf(&f, 2);
    ph(&f, 1)->p_type = PT_NOTE;
    struct boot_elf_image img;
    cr_assert_eq(boot_elf_parse(f.bytes, f.len, &img), 0, "%s", err_msg());
    cr_assert_eq(img.segment_count, 1);
}

Test(elf, rejects_non_elf)
{
    struct fake_elf f;
    make_elf(&f, 1);
    memcpy(f.bytes, "MZ\x90\x00", 4);
    expect_parse_error(&f, "not an ELF file");
}

Test(elf, rejects_elf32)
{
    struct fake_elf f;
    make_elf(&f, 1);
    f.bytes[EI_CLASS] = ELFCLASS32;
    expect_parse_error(&f, "not an ELF64 file");
}

Test(elf, rejects_other_machines_and_types)
{
    struct fake_elf f;
    make_elf(&f, 1);
    eh(&f)->e_machine = EM_AARCH64;
    expect_parse_error(&f, "x86-64");
    make_elf(&f, 1);
    eh(&f)->e_type = ET_DYN;
    expect_parse_error(&f, "not an executable");
}

Test(elf, rejects_truncated_files)
{
    struct fake_elf f;
    make_elf(&f, 2);
    f.len = 40; /* inside the ELF header */
    expect_parse_error(&f, "truncated ELF header");
    make_elf(&f, 2);
    f.len = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr); /* second program header cut off */
    expect_parse_error(&f, "program headers lie outside the file");
    make_elf(&f, 2);
    f.len = 0x1000 + 0x400 + 0x100; /* second segment's bytes cut off */
    expect_parse_error(&f, "segment 1: file range lies outside the file");
}

Test(elf, rejects_no_load_segment)
{
    struct fake_elf f;
    make_elf(&f, 1);
    ph(&f, 0)->p_type = PT_NOTE;
    expect_parse_error(&f, "no PT_LOAD segment");
    make_elf(&f, 0);
    expect_parse_error(&f, "no PT_LOAD segment");
}

Test(elf, rejects_overlapping_segments)
{
    struct fake_elf f;
    make_elf(&f, 2);
    ph(&f, 1)->p_paddr = 0x201000; /* inside segment 0's [0x200000, 0x202000) */
    expect_parse_error(&f, "segments overlap");
}

Test(elf, rejects_filesz_over_memsz_and_wrapping)
{
    struct fake_elf f;
    make_elf(&f, 1);
    ph(&f, 0)->p_memsz = 0x100;
    expect_parse_error(&f, "file size exceeds memory size");
    make_elf(&f, 1);
    ph(&f, 0)->p_paddr = UINT64_MAX - 0x10;
    expect_parse_error(&f, "wraps around");
}

Test(elf, rejects_segment_outside_ram)
{
    struct fake_elf f;
    make_elf(&f, 1);
    ph(&f, 0)->p_paddr = (64ull << 20) - 0x1000; /* crosses the end of 64 MiB */
    eh(&f)->e_entry = ph(&f, 0)->p_paddr;
    expect_placement_error(&f, "outside guest RAM");
}

Test(elf, rejects_segment_in_boot_area)
{
    struct fake_elf f;
    make_elf(&f, 1);
    ph(&f, 0)->p_paddr = 0x8000;
    eh(&f)->e_entry = 0x8000;
    expect_placement_error(&f, "boot area");
}

Test(elf, rejects_entry_outside_segments)
{
    struct fake_elf f;
    make_elf(&f, 1);
    eh(&f)->e_entry = 0x900000;
    expect_placement_error(&f, "entry point 0x900000");
}

Test(elf, load_copies_and_zero_fills)
{
    struct fake_elf f;
    make_elf(&f, 1);
    static uint8_t ram[4 << 20];
    memset(ram, 0x55, sizeof(ram));
    struct mem m = {.host = ram,
                    .size = sizeof(ram),
                    .region_count = 1,
                    .regions = {{.gpa = 0, .size = sizeof(ram), .offset = 0}}};
    struct boot_elf_image img;
    cr_assert_eq(boot_elf_parse(f.bytes, f.len, &img), 0);
    cr_assert_eq(boot_elf_load(&img, f.bytes, &m), 0);
    cr_assert_eq(ram[0x200000], 0xa0);
    cr_assert_eq(ram[0x2003ff], 0xa0);
    cr_assert_eq(ram[0x200400], 0, "tail beyond p_filesz is zeroed");
    cr_assert_eq(ram[0x201fff], 0);
    cr_assert_eq(ram[0x202000], 0x55, "nothing written past p_memsz");
}
