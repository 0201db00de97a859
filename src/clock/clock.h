/* clock: CLOCK_MONOTONIC time, for timings, timeouts and deadlines, and condition variables
 * whose timed waits count on the same clock (so that a change of the wall clock never stretches
 * or cuts a wait).
 */
#ifndef TERN_CLOCK_H
#define TERN_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

uint64_t clock_now_ns(void);
double clock_now_ms(void);

/* Initialises cond for pthread_cond_timedwait against clock_deadline's times. */
void clock_cond_init(pthread_cond_t *cond);

/* The CLOCK_MONOTONIC time ns nanoseconds from now, as pthread_cond_timedwait takes it. */
struct timespec clock_deadline(uint64_t ns);

#endif
