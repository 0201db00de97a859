/* hello: prints one line and exits 0. */
#include "rt.h"

int guest_main(unsigned cpu, const struct boot_info *info)
{
    if (cpu != 0)
        return 0;
    rt_printf("hello from a tern guest: %u vCPU(s), %lu MiB of RAM\n", info->cpu_count,
              info->ram_size >> 20);
    return 0;
}
