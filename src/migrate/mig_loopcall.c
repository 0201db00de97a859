#include "migrate/mig_loopcall.h"

#include "err/err.h"

#include <stddef.h>
#include <stdio.h>

static void mig_loopcall_on_async(uv_async_t *a)
{
    struct mig_loopcall *c =
        (struct mig_loopcall *)((char *)a - offsetof(struct mig_loopcall, async));
    pthread_mutex_lock(&c->lock);
    int (*fn)(void *) = c->pending ? c->fn : NULL;
    void *arg = c->arg;
    pthread_mutex_unlock(&c->lock);
    if (!fn)
        return;
    int rc = fn(arg);
    pthread_mutex_lock(&c->lock);
    c->rc = rc;
    snprintf(c->msg, sizeof(c->msg), "%s", rc ? err_msg() : "");
    c->pending = false;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

int mig_loopcall_init(struct mig_loopcall *c, uv_loop_t *loop)
{
    int rc = uv_async_init(loop, &c->async, mig_loopcall_on_async);
    if (rc)
        return err_set(rc, "uv_async_init: %s", uv_strerror(rc));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    return 0;
}

void mig_loopcall_close(struct mig_loopcall *c, uv_close_cb on_closed)
{
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    uv_close((uv_handle_t *)&c->async, on_closed);
}

int mig_loopcall_run(struct mig_loopcall *c, int (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&c->lock);
    c->fn = fn;
    c->arg = arg;
    c->pending = true;
    pthread_mutex_unlock(&c->lock);
    uv_async_send(&c->async);
    pthread_mutex_lock(&c->lock);
    while (c->pending)
        pthread_cond_wait(&c->cond, &c->lock);
    int rc = c->rc;
    if (rc)
        err_set(rc, "%s", c->msg);
    pthread_mutex_unlock(&c->lock);
    return rc;
}
