/* mig_barrier: the pass barrier of a live migration over several connections.
 *
 * Each connection's stream (a "party") carries its share of every pass's RAM, then a RAM_SYNC
 * record naming the pass. A page goes out at most once per pass, so within a pass no two
 * connections carry the same page; across passes a later copy must win. The destination's reader
 * of each connection therefore waits at the RAM_SYNC of pass p until every party has reached it:
 * no page of pass p+1 is written before every page of pass p has landed, whichever connection
 * ran ahead. After its last pass a party may arrive at MIG_BARRIER_END without waiting, and one
 * party (the main connection's reader) waits for all the others to have done so.
 *
 * A party's passes must be 1, 2, 3... in turn. Any party may fail the barrier (its connection
 * broke, went idle, or the migration was cancelled): every wait then returns that error. The
 * barrier has no timeout of its own: a party that lags is one whose connection is still moving
 * bytes, or whose idle timeout will fail it.
 */
#ifndef TERN_MIG_BARRIER_H
#define TERN_MIG_BARRIER_H

#include <pthread.h>
#include <stdint.h>

#define MIG_BARRIER_MAX 16u
#define MIG_BARRIER_END UINT32_MAX

struct mig_barrier {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned parties;
    uint32_t reached[MIG_BARRIER_MAX];
    int error;
    char message[256];
};

int mig_barrier_init(struct mig_barrier *b, unsigned parties);
void mig_barrier_destroy(struct mig_barrier *b);
/* party has sent every page of pass (or MIG_BARRIER_END: of every pass) and does not wait. */
int mig_barrier_arrive(struct mig_barrier *b, unsigned party, uint32_t pass);
/* Arrives, then waits until every party has reached pass (for MIG_BARRIER_END: every other). */
int mig_barrier_wait(struct mig_barrier *b, unsigned party, uint32_t pass);
/* The first failure wins; its message becomes every waiter's error. */
void mig_barrier_fail(struct mig_barrier *b, int code, const char *message);

#endif
