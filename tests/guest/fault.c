/* fault: triple-faults on purpose (an invalid opcode with no IDT to deliver it through). */
#include "rt.h"

int guest_main(unsigned cpu, const struct boot_info *info)
{
    (void)info;
    if (cpu != 0)
        return 0;
    rt_printf("fault: executing ud2 with no IDT\n");
    __asm__ volatile("ud2");
    return 1;
}
