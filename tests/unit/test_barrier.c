/* The pass barrier of a migration over several connections (mig_barrier.h): real threads, as
 * the destination's readers are. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "err/err.h"
#include "migrate/mig_barrier.h"

struct waiter {
    struct mig_barrier *b;
    unsigned party;
    uint32_t pass;
    int rc;
    char message[256];
    volatile int done;
};

static void *wait_main(void *arg)
{
    struct waiter *w = arg;
    w->rc = mig_barrier_wait(w->b, w->party, w->pass);
    snprintf(w->message, sizeof(w->message), "%s", w->rc ? err_msg() : "");
    w->done = 1;
    return NULL;
}

static pthread_t start_waiter(struct waiter *w)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, wait_main, w), 0);
    return t;
}

Test(barrier, a_pass_is_over_once_every_connection_reached_it)
{
    struct mig_barrier b;
    cr_assert_eq(mig_barrier_init(&b, 3), 0);
    struct waiter w0 = {.b = &b, .party = 0, .pass = 1}, w2 = {.b = &b, .party = 2, .pass = 1};
    pthread_t t0 = start_waiter(&w0), t2 = start_waiter(&w2);
    usleep(150000);
    cr_expect(!w0.done && !w2.done, "a waiter left before connection 2 reached pass 1");
    cr_assert_eq(mig_barrier_wait(&b, 1, 1), 0, "%s", err_msg());
    pthread_join(t0, NULL);
    pthread_join(t2, NULL);
    cr_expect_eq(w0.rc, 0, "%s", w0.message);
    cr_expect_eq(w2.rc, 0, "%s", w2.message);
    mig_barrier_destroy(&b);
}

Test(barrier, passes_come_in_turn)
{
    struct mig_barrier b;
    cr_assert_eq(mig_barrier_init(&b, 2), 0);
    cr_expect_lt(mig_barrier_arrive(&b, 1, 2), 0);
    cr_expect(strstr(err_msg(), "connection 2: RAM_SYNC of pass 2 after pass 0"), "%s", err_msg());
    /* The first failure stays: every later call says it. */
    cr_expect_lt(mig_barrier_arrive(&b, 0, 1), 0);
    cr_expect(strstr(err_msg(), "pass 2 after pass 0"), "%s", err_msg());
    mig_barrier_destroy(&b);
    cr_assert_eq(mig_barrier_init(&b, 2), 0);
    cr_expect_lt(mig_barrier_arrive(&b, 2, 1), 0);
    cr_expect(strstr(err_msg(), "connection 3 of 2"), "%s", err_msg());
    mig_barrier_destroy(&b);
    cr_expect_lt(mig_barrier_init(&b, 17), 0);
}

Test(barrier, a_failure_wakes_every_waiter_with_its_message)
{
    struct mig_barrier b;
    cr_assert_eq(mig_barrier_init(&b, 3), 0);
    struct waiter w0 = {.b = &b, .party = 0, .pass = 1}, w1 = {.b = &b, .party = 1, .pass = 1};
    pthread_t t0 = start_waiter(&w0), t1 = start_waiter(&w1);
    usleep(100000);
    mig_barrier_fail(&b, -ECONNRESET, "connection 3: the source closed the connection");
    pthread_join(t0, NULL);
    pthread_join(t1, NULL);
    cr_expect_eq(w0.rc, -ECONNRESET);
    cr_expect_str_eq(w1.message, "connection 3: the source closed the connection");
    mig_barrier_destroy(&b);
}

Test(barrier, the_main_reader_waits_for_every_other_end)
{
    struct mig_barrier b;
    cr_assert_eq(mig_barrier_init(&b, 3), 0);
    for (unsigned p = 0; p < 3; p++)
        cr_assert_eq(mig_barrier_arrive(&b, p, 1), 0);
    struct waiter w0 = {.b = &b, .party = 0, .pass = MIG_BARRIER_END};
    pthread_t t0 = start_waiter(&w0);
    cr_assert_eq(mig_barrier_arrive(&b, 1, MIG_BARRIER_END), 0);
    usleep(150000);
    cr_expect(!w0.done, "the main reader went on before connection 3 ended");
    cr_assert_eq(mig_barrier_arrive(&b, 2, MIG_BARRIER_END), 0);
    pthread_join(t0, NULL);
    cr_expect_eq(w0.rc, 0, "%s", w0.message);
    /* Nothing after END. */
    cr_expect_lt(mig_barrier_arrive(&b, 1, 2), 0);
    mig_barrier_destroy(&b);
}
