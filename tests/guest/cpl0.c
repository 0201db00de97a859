/* cpl0: a guest that stays at CPL0 (emulated under PVM) and waits there, so that a pause, a
 * snapshot or a migration lands while the vCPU is at CPL0.
 *
 * Options: rounds=N (default 20), ms=N (sleep per round, default 100). Each round adds the round
 * number to a sum kept in a register-held loop and in memory, prints one line and sleeps ms
 * milliseconds through the idle port (1 ms per write). After the last round it checks the sum
 * against the closed form and exits 0, or 1 on a mismatch.
 */
#include "rt.h"

const bool rt_guest_cpl0 = true;

static volatile uint64_t cpl0_sum;

static uint16_t cpl0_cs(void)
{
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    return cs;
}

int guest_main(unsigned cpu, const struct boot_info *info)
{
    if (cpu != 0)
        return 0;
    uint64_t rounds = rt_cmdline_u64(info, "rounds", 20);
    uint64_t ms = rt_cmdline_u64(info, "ms", 100);
    rt_printf("cpl0: %lu rounds of %lu ms at CPL%u\n", rounds, ms, cpl0_cs() & 3);
    uint64_t sum = 0;
    for (uint64_t r = 1; r <= rounds; r++) {
        sum += r;
        cpl0_sum += r;
        rt_printf("cpl0: round %lu at CPL%u\n", r, cpl0_cs() & 3);
        for (uint64_t i = 0; i < ms; i++)
            rt_outl(BOOT_PORT_IDLE, 1000);
    }
    uint64_t want = rounds * (rounds + 1) / 2;
    if (sum != want || cpl0_sum != want) {
        rt_printf("cpl0: MISMATCH: sum %lu in a register, %lu in memory, expected %lu\n", sum,
                  cpl0_sum, want);
        return 1;
    }
    rt_printf("cpl0: %lu rounds: OK\n", rounds);
    return 0;
}
