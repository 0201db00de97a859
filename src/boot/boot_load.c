#include "boot/boot_load.h"

#include "boot/boot_acpi.h"
#include "boot/boot_direct.h"
#include "boot/boot_elf.h"
#include "boot/boot_linux.h"
#include "boot/boot_protocol.h"
#include "err/err.h"
#include "pci/pci.h"
#include "file/file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int boot_load_elf(struct mem *mem, const struct boot_load_params *p, const uint8_t *data,
                         size_t len, struct boot_entry *out)
{
    if (p->initrd_path)
        return err_set(-EINVAL, "--initrd needs a bzImage kernel; %s is an ELF64 payload",
                       p->kernel_path);
    struct boot_elf_image img;
    int rc = boot_elf_parse(data, len, &img);
    if (!rc)
        rc = boot_elf_check_placement(&img, mem->regions, mem->region_count);
    if (!rc)
        rc = boot_elf_load(&img, data, mem);
    if (rc)
        return err_context(rc, "--kernel %s", p->kernel_path);
    struct boot_direct_params params = {.cpu_count = p->cpu_count,
                                        .cmdline = p->cmdline,
                                        .tsc_khz = p->tsc_khz,
                                        .entry = img.entry};
    return boot_direct_setup(mem, &params, out);
}

static int boot_load_initrd(struct mem *mem, const struct boot_load_params *p,
                            const struct boot_linux_image *img, uint64_t kernel_end,
                            struct boot_linux_layout *layout)
{
    uint8_t *data;
    size_t len;
    int rc = file_read_all(p->initrd_path, mem->regions[0].size, &data, &len);
    if (rc)
        return err_context(rc, "--initrd %s", p->initrd_path);
    if (len == 0) {
        free(data);
        return err_set(-EINVAL, "--initrd %s: the file is empty", p->initrd_path);
    }
    uint64_t gpa;
    rc = boot_linux_place_initrd(len, img->initrd_addr_max, mem->regions, mem->region_count,
                                 kernel_end, &gpa);
    if (!rc) {
        memcpy(mem_ptr(mem, gpa, len), data, len);
        layout->initrd_gpa = gpa;
        layout->initrd_size = len;
    }
    free(data);
    return rc;
}

static int boot_load_linux(struct mem *mem, const struct boot_load_params *p, const uint8_t *data,
                           size_t len, struct boot_entry *out)
{
    struct boot_linux_image img;
    int rc = boot_linux_parse(data, len, &img);
    if (rc)
        return err_context(rc, "--kernel %s", p->kernel_path);
    const char *cmdline = p->cmdline ? p->cmdline : BOOT_LINUX_DEFAULT_CMDLINE;
    rc = boot_linux_check_cmdline(&img, cmdline);
    if (rc)
        return rc;
    /* Whatever the kernel takes, tern's area at BOOT_CMDLINE_GPA holds BOOT_CMDLINE_MAX. */
    size_t cmdline_len = strlen(cmdline);
    if (cmdline_len > BOOT_CMDLINE_MAX)
        return err_set(-E2BIG, "--cmdline is %zu bytes; tern passes at most %u", cmdline_len,
                       BOOT_CMDLINE_MAX);

    /* The decompressor works in place from the load address up to init_size. */
    uint64_t kernel_gpa = img.pref_address;
    uint64_t kernel_end = kernel_gpa + img.init_size;
    uint64_t low_end = mem->regions[0].gpa + mem->regions[0].size;
    if (kernel_gpa < BOOT_PAYLOAD_MIN_GPA || kernel_end > low_end)
        return err_set(-ENOMEM,
                       "--kernel %s: the kernel needs RAM from 0x%llx to 0x%llx (pref_address + "
                       "init_size); raise --mem",
                       p->kernel_path, (unsigned long long)kernel_gpa,
                       (unsigned long long)kernel_end);
    memcpy(mem_ptr(mem, kernel_gpa, img.kernel_size), data + img.setup_size, img.kernel_size);

    struct boot_linux_layout layout = {.kernel_gpa = kernel_gpa, .cmdline_gpa = BOOT_CMDLINE_GPA};
    if (p->initrd_path) {
        rc = boot_load_initrd(mem, p, &img, kernel_end, &layout);
        if (rc)
            return rc;
    }
    memcpy(mem_ptr(mem, BOOT_CMDLINE_GPA, cmdline_len + 1), cmdline, cmdline_len + 1);

    size_t acpi_len;
    rc = boot_acpi_build(mem_ptr(mem, BOOT_ACPI_GPA, BOOT_ACPI_MAX), BOOT_ACPI_MAX, BOOT_ACPI_GPA,
                         p->cpu_count, pci_mmio64_base(mem_top(mem)), &acpi_len);
    if (rc)
        return rc;
    layout.rsdp_gpa = BOOT_ACPI_GPA;

    struct boot_e820_entry e820[BOOT_LINUX_E820_MAX];
    unsigned n = boot_linux_e820(mem->regions, mem->region_count, e820, BOOT_LINUX_E820_MAX);
    boot_linux_zero_page(&img, data, &layout, e820, n,
                         mem_ptr(mem, BOOT_LINUX_ZERO_PAGE_GPA, BOOT_LINUX_ZERO_PAGE_SIZE));

    rc = boot_paging_flat_gdt(mem, BOOT_LINUX_SEL_CODE, BOOT_LINUX_SEL_DATA, BOOT_LINUX_SEL_TSS,
                              out);
    if (!rc)
        rc = boot_paging_identity_map(mem, out);
    out->rip = kernel_gpa + BOOT_LINUX_ENTRY_64_OFFSET;
    out->rsi = BOOT_LINUX_ZERO_PAGE_GPA;
    out->start_all = false;
    return rc;
}

#define BOOT_KERNEL_HEAD 1024 /* holds the ELF magic and the bzImage setup header's */

int boot_load(struct mem *mem, const struct boot_load_params *p, struct boot_entry *out)
{
    if (mem->region_count == 0 || mem->regions[0].gpa != 0 ||
        mem->regions[0].size < BOOT_PAYLOAD_MIN_GPA)
        return err_set(-ERANGE, "guest RAM is too small: booting needs at least 1 MiB");
    /* The magic first: a large file that is neither is refused without being read. */
    uint8_t head[BOOT_KERNEL_HEAD];
    size_t len;
    int rc = file_read_head(p->kernel_path, head, sizeof(head), &len);
    if (rc)
        return err_context(rc, "--kernel %s", p->kernel_path);
    bool bzimage = boot_linux_is_bzimage(head, len), elf = boot_elf_has_magic(head, len);
    if (!bzimage && !elf)
        return err_set(-ENOEXEC,
                       "--kernel %s: neither an ELF64 payload nor a bzImage (no ELF magic, no "
                       "\"HdrS\" setup header)",
                       p->kernel_path);
    uint8_t *data;
    if ((rc = file_read_all(p->kernel_path, mem->size, &data, &len)))
        return err_context(rc, "--kernel %s", p->kernel_path);
    memset(out, 0, sizeof(*out));
    rc = bzimage ? boot_load_linux(mem, p, data, len, out) : boot_load_elf(mem, p, data, len, out);
    free(data);
    return rc;
}
