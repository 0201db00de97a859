#include "boot/boot_direct.h"

#include "boot/boot_paging.h"
#include "boot/boot_protocol.h"
#include "err/err.h"

#include <errno.h>
#include <string.h>

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

    int rc = boot_paging_flat_gdt(mem, BOOT_SEL_CODE, BOOT_SEL_DATA, BOOT_SEL_TSS, out);
    if (!rc)
        rc = boot_paging_identity_map(mem, out);
    if (rc)
        return rc;
    out->rip = p->entry;
    out->rsi = BOOT_INFO_GPA;
    out->start_all = true;
    return 0;
}
