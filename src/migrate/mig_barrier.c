#include "migrate/mig_barrier.h"

#include "clock/clock.h"
#include "err/err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int mig_barrier_init(struct mig_barrier *b, unsigned parties)
{
    memset(b, 0, sizeof(*b));
    if (parties == 0 || parties > MIG_BARRIER_MAX)
        return err_set(-EINVAL, "%u connections: 1 to %u", parties, MIG_BARRIER_MAX);
    b->parties = parties;
    pthread_mutex_init(&b->lock, NULL);
    clock_cond_init(&b->cond);
    return 0;
}

void mig_barrier_destroy(struct mig_barrier *b)
{
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
}

static void barrier_fail_locked(struct mig_barrier *b, int code, const char *message)
{
    if (b->error)
        return;
    b->error = code;
    snprintf(b->message, sizeof(b->message), "%s", message);
    pthread_cond_broadcast(&b->cond);
}

void mig_barrier_fail(struct mig_barrier *b, int code, const char *message)
{
    pthread_mutex_lock(&b->lock);
    barrier_fail_locked(b, code, message);
    pthread_mutex_unlock(&b->lock);
}

static int barrier_arrive_locked(struct mig_barrier *b, unsigned party, uint32_t pass)
{
    if (b->error)
        return err_set(b->error, "%s", b->message);
    char msg[160];
    if (party >= b->parties) {
        snprintf(msg, sizeof(msg), "connection %u of %u", party + 1, b->parties);
        barrier_fail_locked(b, -EPROTO, msg);
        return err_set(-EPROTO, "%s", msg);
    }
    uint32_t last = b->reached[party];
    if (last == MIG_BARRIER_END || (pass != MIG_BARRIER_END && pass != last + 1)) {
        snprintf(msg, sizeof(msg), "connection %u: RAM_SYNC of pass %u after pass %u", party + 1,
                 pass, last);
        barrier_fail_locked(b, -EPROTO, msg);
        return err_set(-EPROTO, "%s", msg);
    }
    b->reached[party] = pass;
    pthread_cond_broadcast(&b->cond);
    return 0;
}

int mig_barrier_arrive(struct mig_barrier *b, unsigned party, uint32_t pass)
{
    pthread_mutex_lock(&b->lock);
    int rc = barrier_arrive_locked(b, party, pass);
    pthread_mutex_unlock(&b->lock);
    return rc;
}

/* The first party short of pass (END: other than self), or parties when none is. */
static unsigned barrier_laggard(const struct mig_barrier *b, unsigned self, uint32_t pass)
{
    for (unsigned i = 0; i < b->parties; i++)
        if (b->reached[i] < pass && !(pass == MIG_BARRIER_END && i == self))
            return i;
    return b->parties;
}

int mig_barrier_wait(struct mig_barrier *b, unsigned party, uint32_t pass)
{
    pthread_mutex_lock(&b->lock);
    int rc = pass == MIG_BARRIER_END ? (b->error ? err_set(b->error, "%s", b->message) : 0)
                                     : barrier_arrive_locked(b, party, pass);
    while (!rc && barrier_laggard(b, party, pass) < b->parties) {
        struct timespec ts = clock_deadline(100 * 1000000ull);
        pthread_cond_timedwait(&b->cond, &b->lock, &ts);
        if (b->error)
            rc = err_set(b->error, "%s", b->message);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}
