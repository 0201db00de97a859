/* libFuzzer target: any byte string as a `--kernel` bzImage. The setup-header parser must reject
 * it with an error or accept it, and whatever it accepts must build a zero page and place an
 * initrd without reading or writing out of bounds. */
#include <stddef.h>
#include <stdint.h>

#include "boot/boot_linux.h"
#include "memory/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct boot_linux_image img;
    if (boot_linux_parse(data, size, &img))
        return 0;
    struct mem_region regions[MEM_MAX_REGIONS];
    unsigned n = mem_layout(64ull << 20, regions);
    struct boot_e820_entry e820[BOOT_LINUX_E820_MAX];
    unsigned count = boot_linux_e820(regions, n, e820, BOOT_LINUX_E820_MAX);
    uint64_t initrd = 0;
    (void)boot_linux_place_initrd(size, img.initrd_addr_max, regions, n,
                                  img.pref_address + img.init_size, &initrd);
    (void)boot_linux_check_cmdline(&img, "console=ttyS0");
    struct boot_linux_layout layout = {.kernel_gpa = img.pref_address,
                                       .cmdline_gpa = 0x2000,
                                       .initrd_gpa = initrd,
                                       .initrd_size = initrd ? size : 0};
    static uint8_t zero_page[BOOT_LINUX_ZERO_PAGE_SIZE];
    boot_linux_zero_page(&img, data, &layout, e820, count, zero_page);
    return 0;
}
