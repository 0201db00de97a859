/* smp: every vCPU adds to one shared counter with locked adds; vCPU 0 waits for all of them and
 * exits 0 only if the total is exact. Options: n=N additions per vCPU (default 1000000). */
#include "rt.h"

static volatile uint64_t smp_counter;
static volatile uint32_t smp_done;

int guest_main(unsigned cpu, const struct boot_info *info)
{
    uint64_t n = rt_cmdline_u64(info, "n", 1000000);
    for (uint64_t i = 0; i < n; i++)
        __atomic_fetch_add(&smp_counter, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&smp_done, 1, __ATOMIC_RELEASE);
    if (cpu != 0)
        return 0;
    while (__atomic_load_n(&smp_done, __ATOMIC_ACQUIRE) != info->cpu_count)
        rt_pause();
    uint64_t want = n * info->cpu_count;
    uint64_t got = __atomic_load_n(&smp_counter, __ATOMIC_RELAXED);
    if (got != want) {
        rt_printf("smp: FAIL: counter %lu, expected %lu\n", got, want);
        return 1;
    }
    rt_printf("smp: OK: %u vCPUs added %lu each, counter %lu\n", info->cpu_count, n, got);
    return 0;
}
