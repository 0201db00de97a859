#include "clock/clock.h"

#define CLOCK_NS_PER_S 1000000000ull

uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * CLOCK_NS_PER_S + (uint64_t)ts.tv_nsec;
}

double clock_now_ms(void)
{
    return (double)clock_now_ns() / 1e6;
}

void clock_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

struct timespec clock_deadline(uint64_t ns)
{
    uint64_t at = clock_now_ns() + ns;
    return (struct timespec){.tv_sec = (time_t)(at / CLOCK_NS_PER_S),
                             .tv_nsec = (long)(at % CLOCK_NS_PER_S)};
}
