/* exitcode: exits with the code given as code=N on the command line. */
#include "rt.h"

int guest_main(unsigned cpu, const struct boot_info *info)
{
    if (cpu != 0)
        return 0;
    uint64_t code = rt_cmdline_u64(info, "code", 0);
    rt_printf("exitcode: exiting with %lu\n", code);
    rt_exit((uint32_t)code);
}
