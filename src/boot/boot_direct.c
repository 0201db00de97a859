#include "boot/boot_direct.h"

#include "boot/boot_elf.h"
#include "boot/boot_protocol.h"
#include "err/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PTE_PRESENT 0x1ull
#define PTE_WRITE 0x2ull
#define PTE_USER 0x4ull
#define PTE_LARGE 0x80ull
#define GIB (1ull << 30)
#define PAGE 0x1000ull

static int boot_write_page_tables(struct mem *mem)
{
    uint64_t top = mem_top(mem);
    uint64_t pd_count = (top + GIB - 1) / GIB;
    /* Map at least the 32-bit space, so the MMIO hole is addressable whatever the RAM size. */
    if (pd_count < 4)
        pd_count = 4;
    uint64_t max_pds = (BOOT_PAGE_TABLES_END - BOOT_PML4_GPA) / PAGE - 2;
    if (pd_count > max_pds)
        return err_set(-E2BIG,
                       "guest-physical space of %llu GiB exceeds the %llu GiB direct boot maps",
                       (unsigned long long)pd_count, (unsigned long long)max_pds);

    uint64_t pdpt_gpa = BOOT_PML4_GPA + PAGE;
    uint64_t pd_gpa = pdpt_gpa + PAGE;
    uint64_t *pml4 = mem_ptr(mem, BOOT_PML4_GPA, PAGE);
    uint64_t *pdpt = mem_ptr(mem, pdpt_gpa, PAGE);
    uint64_t *pd = mem_ptr(mem, pd_gpa, pd_count * PAGE);
    if (!pml4 || !pdpt || !pd)
        return err_set(-ERANGE, "guest RAM is too small for the direct-boot page tables");

    /* User-accessible, so payloads may run their workload at CPL3 on these same tables. */
    const uint64_t flags = PTE_PRESENT | PTE_WRITE | PTE_USER;
    memset(pml4, 0, PAGE);
    memset(pdpt, 0, PAGE);
    pml4[0] = pdpt_gpa | flags;
    for (uint64_t g = 0; g < pd_count; g++) {
        pdpt[g] = (pd_gpa + g * PAGE) | flags;
        for (uint64_t e = 0; e < 512; e++)
            pd[g * 512 + e] = (g * GIB + e * (2ull << 20)) | flags | PTE_LARGE;
    }
    return 0;
}

static int boot_write_gdt(struct mem *mem, struct boot_entry *out)
{
    uint64_t *gdt = mem_ptr(mem, BOOT_GDT_GPA, 5 * sizeof(uint64_t));
    if (!gdt)
        return err_set(-ERANGE, "guest RAM is too small for the direct-boot GDT");
    gdt[0] = 0;
    gdt[BOOT_SEL_CODE / 8] = 0x00af9b000000ffffull; /* 64-bit code, DPL0 */
    gdt[BOOT_SEL_DATA / 8] = 0x00cf93000000ffffull; /* data, DPL0 */
    gdt[BOOT_SEL_TSS / 8] = 0x00008b0000000067ull;  /* busy 64-bit TSS at 0, limit 0x67 */
    gdt[BOOT_SEL_TSS / 8 + 1] = 0;
    out->gdt_base = BOOT_GDT_GPA;
    out->gdt_limit = 5 * sizeof(uint64_t) - 1;
    return 0;
}

int boot_direct_setup(struct mem *mem, const struct boot_direct_params *p, struct boot_entry *out)
{
    size_t cmdline_len = p->cmdline ? strlen(p->cmdline) : 0;
    if (cmdline_len > BOOT_CMDLINE_MAX)
        return err_set(-E2BIG, "--cmdline is %zu bytes; direct boot takes at most %u", cmdline_len,
                       BOOT_CMDLINE_MAX);

    struct boot_info *info = mem_ptr(mem, BOOT_INFO_GPA, sizeof(*info));
    char *cmdline = mem_ptr(mem, BOOT_CMDLINE_GPA, BOOT_CMDLINE_MAX + 1);
    if (!info || !cmdline || !mem_ptr(mem, 0, BOOT_PAYLOAD_MIN_GPA))
        return err_set(-ERANGE, "guest RAM is too small: direct boot needs at least 1 MiB");

    memset(info, 0, sizeof(*info));
    info->magic = BOOT_INFO_MAGIC;
    info->version = BOOT_INFO_VERSION;
    info->ram_size = mem->size;
    info->cpu_count = p->cpu_count;
    info->region_count = mem->region_count;
    for (unsigned i = 0; i < mem->region_count; i++) {
        info->regions[i].gpa = mem->regions[i].gpa;
        info->regions[i].size = mem->regions[i].size;
    }
    info->cmdline_gpa = BOOT_CMDLINE_GPA;
    info->cmdline_len = (uint32_t)cmdline_len;
    info->tsc_khz = p->tsc_khz;
    memcpy(cmdline, p->cmdline ? p->cmdline : "", cmdline_len);
    cmdline[cmdline_len] = '\0';

    int rc = boot_write_gdt(mem, out);
    if (rc)
        return rc;
    rc = boot_write_page_tables(mem);
    if (rc)
        return rc;
    out->rip = p->entry;
    out->rsi = BOOT_INFO_GPA;
    out->cr3 = BOOT_PML4_GPA;
    return 0;
}

int boot_read_file(const char *path, uint64_t max_size, uint8_t **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(-errno, "cannot open");
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = -errno;
        close(fd);
        return err_sys(rc, "cannot stat");
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(-EINVAL, "not a regular file");
    }
    if ((uint64_t)st.st_size > max_size) {
        close(fd);
        return err_set(-EFBIG, "file is %lld bytes, larger than the %llu allowed",
                       (long long)st.st_size, (unsigned long long)max_size);
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        close(fd);
        return err_set(-ENOMEM, "out of memory reading file");
    }
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int rc = n < 0 ? -errno : -EIO;
            free(buf);
            close(fd);
            return err_sys(rc, "read failed");
        }
        done += (size_t)n;
    }
    close(fd);
    *data = buf;
    *len = done;
    return 0;
}

int boot_load_payload(const char *path, struct mem *mem, uint64_t *entry)
{
    uint8_t *data;
    size_t len;
    int rc = boot_read_file(path, mem->size, &data, &len);
    if (rc)
        return err_context(rc, "--kernel %s", path);
    struct boot_elf_image img;
    rc = boot_elf_parse(data, len, &img);
    if (!rc)
        rc = boot_elf_check_placement(&img, mem->regions, mem->region_count);
    if (!rc)
        rc = boot_elf_load(&img, data, mem);
    free(data);
    if (rc)
        return err_context(rc, "--kernel %s", path);
    *entry = img.entry;
    return 0;
}
