/* memstamp: the witness that no guest write is ever lost.
 *
 * Options: mib=N (range size, default 16), passes=N (0: run until stopped; default 8),
 * every=N (print a progress line every N passes, default 1), rate=N (stamp at most N MiB/s
 * in all, paced by the TSC; default 0: as fast as the vCPUs go).
 * The range starts at the first 2 MiB boundary after the image and is split among the vCPUs.
 * Pass g checks that each page of a vCPU's share still holds the stamp {page, g-1} written by the
 * previous pass (at both ends of the page), then writes {page, g}. A mismatch prints the page and
 * exits 1; after the last pass every stamp is verified once more.
 */
#include "rt.h"

#define PAGE 4096ull
#define WORDS (PAGE / 8)

static volatile uint32_t ms_done;
static volatile uint32_t ms_failed;

static int ms_check(volatile uint64_t *p, uint64_t page, uint64_t gen)
{
    if (p[0] == page && p[1] == gen && p[WORDS - 2] == page && p[WORDS - 1] == gen)
        return 0;
    rt_printf("memstamp: MISMATCH at page %lu (gpa 0x%lx): found {%lu, %lu} / {%lu, %lu}, "
              "expected {%lu, %lu}\n",
              page, (uint64_t)(uintptr_t)p, p[0], p[1], p[WORDS - 2], p[WORDS - 1], page, gen);
    __atomic_store_n(&ms_failed, 1, __ATOMIC_RELEASE);
    return -1;
}

int guest_main(unsigned cpu, const struct boot_info *info)
{
    uint64_t mib = rt_cmdline_u64(info, "mib", 16);
    uint64_t passes = rt_cmdline_u64(info, "passes", 8);
    uint64_t every = rt_cmdline_u64(info, "every", 1);
    uint64_t rate = rt_cmdline_u64(info, "rate", 0);
    /* Pacing: each vCPU stamps its share of the rate, 16 pages per 16 * tick_per_page TSC ticks. */
    uint64_t tick_per_page = 0;
    if (rate && info->tsc_khz)
        tick_per_page = (uint64_t)info->tsc_khz * 1000 * info->cpu_count / (rate * 256);
    uint64_t tick_us = info->tsc_khz / 1000 ? info->tsc_khz / 1000 : 1;
    uint64_t due = rt_rdtsc();
    uint64_t start = (rt_image_end() + (2ull << 20) - 1) & ~((2ull << 20) - 1);
    uint64_t pages = mib * 256;
    uint64_t low_end = info->regions[0].gpa + info->regions[0].size;
    if (every == 0)
        every = 1;
    if (mib == 0 || start + pages * PAGE > low_end) {
        if (cpu == 0)
            rt_printf("memstamp: mib=%lu does not fit below 0x%lx\n", mib, low_end);
        return cpu == 0 ? 3 : 0;
    }
    uint64_t first = pages * cpu / info->cpu_count;
    uint64_t last = pages * (cpu + 1) / info->cpu_count;
    if (cpu == 0)
        rt_printf("memstamp: %lu MiB at 0x%lx on %u vCPU(s), %lu passes\n", mib, start,
                  info->cpu_count, passes);

    uint64_t gen = 0;
    while (passes == 0 || gen < passes) {
        gen++;
        for (uint64_t page = first; page < last; page++) {
            volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)(start + page * PAGE);
            if (tick_per_page && page % 16 == 0) {
                uint64_t now;
                /* Ahead of the rate: give the host CPU away instead of spinning it. */
                while ((now = rt_rdtsc()) < due) {
                    uint64_t us = (due - now) / tick_us;
                    if (us > 20)
                        rt_outl(BOOT_PORT_IDLE, (uint32_t)(us < 1000 ? us : 1000));
                    else
                        rt_pause();
                }
                /* After a long stop (a pause, a migration) go on at the rate, not in a burst. */
                due = now - due > 1600 * tick_per_page ? now + 16 * tick_per_page
                                                       : due + 16 * tick_per_page;
            }
            if (gen > 1 && ms_check(p, page, gen - 1))
                rt_exit(1);
            p[0] = page;
            p[1] = gen;
            p[WORDS - 2] = page;
            p[WORDS - 1] = gen;
        }
        if (gen % every == 0)
            rt_printf("memstamp: vCPU %u pass %lu ok (%lu pages)\n", cpu, gen, last - first);
        if (__atomic_load_n(&ms_failed, __ATOMIC_ACQUIRE))
            rt_park();
    }
    for (uint64_t page = first; page < last; page++)
        if (ms_check((volatile uint64_t *)(uintptr_t)(start + page * PAGE), page, gen))
            rt_exit(1);
    __atomic_fetch_add(&ms_done, 1, __ATOMIC_RELEASE);
    if (cpu != 0)
        return 0;
    while (__atomic_load_n(&ms_done, __ATOMIC_ACQUIRE) != info->cpu_count)
        rt_pause();
    rt_printf("memstamp: verified %lu pages x %lu passes on %u vCPU(s): OK\n", pages, gen,
              info->cpu_count);
    return 0;
}
