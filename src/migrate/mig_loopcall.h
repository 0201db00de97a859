/* mig_loopcall: a migration worker thread has the loop thread run a function (where the VM's
 * and the connection's libuv handles live) and waits for its result. The function's error
 * message comes back as the worker's. */
#ifndef TERN_MIG_LOOPCALL_H
#define TERN_MIG_LOOPCALL_H

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

struct mig_loopcall {
    uv_async_t async;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int (*fn)(void *arg);
    void *arg;
    bool pending;
    int rc;
    char msg[512];
};

/* On the loop thread. async.data stays the caller's (for its close callback). */
int mig_loopcall_init(struct mig_loopcall *c, uv_loop_t *loop);
/* On the loop thread, once no worker can call any more; on_closed runs when the handle is. */
void mig_loopcall_close(struct mig_loopcall *c, uv_close_cb on_closed);
/* On a worker thread: runs fn(arg) on the loop and returns its result. */
int mig_loopcall_run(struct mig_loopcall *c, int (*fn)(void *arg), void *arg);

#endif
