#include "boot/boot_paging.h"

#include "boot/boot_protocol.h"
#include "err/err.h"

#include <errno.h>
#include <string.h>

#define PTE_PRESENT 0x1ull
#define PTE_WRITE 0x2ull
#define PTE_USER 0x4ull
#define PTE_LARGE 0x80ull
#define GIB (1ull << 30)
#define PAGE 0x1000ull
#define GDT_SLOTS 8u

int boot_paging_identity_map(struct mem *mem, struct boot_entry *out)
{
    uint64_t top = mem_top(mem);
    uint64_t pd_count = (top + GIB - 1) / GIB;
    /* Map at least the 32-bit space, so the MMIO hole is addressable whatever the RAM size. */
    if (pd_count < 4)
        pd_count = 4;
    uint64_t max_pds = (BOOT_PAGE_TABLES_END - BOOT_PML4_GPA) / PAGE - 2;
    if (pd_count > max_pds)
        return err_set(-E2BIG, "guest-physical space of %llu GiB exceeds the %llu GiB boot maps",
                       (unsigned long long)pd_count, (unsigned long long)max_pds);

    uint64_t pdpt_gpa = BOOT_PML4_GPA + PAGE;
    uint64_t pd_gpa = pdpt_gpa + PAGE;
    uint64_t *pml4 = mem_ptr(mem, BOOT_PML4_GPA, PAGE);
    uint64_t *pdpt = mem_ptr(mem, pdpt_gpa, PAGE);
    uint64_t *pd = mem_ptr(mem, pd_gpa, pd_count * PAGE);
    if (!pml4 || !pdpt || !pd)
        return err_set(-ERANGE, "guest RAM is too small for the boot page tables");

    /* User-accessible, so direct-boot payloads may run their workload at CPL3 on these same
     * tables (a kernel replaces them long before it runs anything at CPL3). */
    const uint64_t flags = PTE_PRESENT | PTE_WRITE | PTE_USER;
    memset(pml4, 0, PAGE);
    memset(pdpt, 0, PAGE);
    pml4[0] = pdpt_gpa | flags;
    for (uint64_t g = 0; g < pd_count; g++) {
        pdpt[g] = (pd_gpa + g * PAGE) | flags;
        for (uint64_t e = 0; e < 512; e++)
            pd[g * 512 + e] = (g * GIB + e * (2ull << 20)) | flags | PTE_LARGE;
    }
    out->cr3 = BOOT_PML4_GPA;
    return 0;
}

int boot_paging_flat_gdt(struct mem *mem, uint16_t code_sel, uint16_t data_sel, uint16_t tss_sel,
                         struct boot_entry *out)
{
    uint64_t *gdt = mem_ptr(mem, BOOT_GDT_GPA, GDT_SLOTS * sizeof(uint64_t));
    if (!gdt)
        return err_set(-ERANGE, "guest RAM is too small for the boot GDT");
    memset(gdt, 0, GDT_SLOTS * sizeof(uint64_t));
    gdt[code_sel / 8] = 0x00af9b000000ffffull; /* 64-bit code, DPL0 */
    gdt[data_sel / 8] = 0x00cf93000000ffffull; /* flat data, DPL0 */
    gdt[tss_sel / 8] = 0x00008b0000000067ull;  /* busy 64-bit TSS at 0, limit 0x67 */
    gdt[tss_sel / 8 + 1] = 0;                  /* its upper half */
    out->gdt_base = BOOT_GDT_GPA;
    out->gdt_limit = (uint16_t)(tss_sel + 16 - 1);
    out->code_sel = code_sel;
    out->data_sel = data_sel;
    out->tss_sel = tss_sel;
    return 0;
}
