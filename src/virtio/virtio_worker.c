/* A virtio device's I/O thread: holds and their acknowledgement (virtio_worker.h). */
#include "virtio/virtio_worker.h"

#include "err/err.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

int virtio_worker_init(struct virtio_worker *w, const char *name)
{
    *w = (struct virtio_worker){.hold = 1, .ctl_fd = -1};
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if ((w->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return err_sys(-errno, "%s: eventfd", name);
    return 0;
}

int virtio_worker_start(struct virtio_worker *w, void *(*fn)(void *), void *arg, const char *name)
{
    int rc = pthread_create(&w->thread, NULL, fn, arg);
    if (rc)
        return err_set(-rc, "%s: cannot start its I/O thread", name);
    w->started = true;
    return 0;
}

void virtio_worker_kick(struct virtio_worker *w)
{
    uint64_t one = 1;
    if (write(w->ctl_fd, &one, sizeof(one)) != sizeof(one))
        err_warn("virtio: control eventfd write failed");
}

void virtio_worker_drain(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) == sizeof(v))
        ;
}

void virtio_worker_hold(struct virtio_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->hold++;
    w->stopped = false;
    pthread_mutex_unlock(&w->lock);
    if (!w->started)
        return;
    virtio_worker_kick(w);
    pthread_mutex_lock(&w->lock);
    while (!w->stopped)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

void virtio_worker_unhold(struct virtio_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->hold--;
    pthread_mutex_unlock(&w->lock);
    virtio_worker_kick(w);
}

bool virtio_worker_check(struct virtio_worker *w, bool idle, bool *quit)
{
    pthread_mutex_lock(&w->lock);
    bool run = w->hold == 0 && !w->quit;
    if ((w->hold || w->quit) && idle && !w->stopped) {
        w->stopped = true;
        pthread_cond_broadcast(&w->cond);
    }
    *quit = w->quit && idle;
    pthread_mutex_unlock(&w->lock);
    return run;
}

bool virtio_worker_stopped(struct virtio_worker *w)
{
    pthread_mutex_lock(&w->lock);
    bool stopped = w->hold && w->stopped;
    pthread_mutex_unlock(&w->lock);
    return stopped;
}

void virtio_worker_stop(struct virtio_worker *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_mutex_unlock(&w->lock);
    virtio_worker_kick(w);
    pthread_join(w->thread, NULL);
    w->started = false;
}

void virtio_worker_destroy(struct virtio_worker *w)
{
    virtio_worker_stop(w);
    if (w->ctl_fd >= 0)
        close(w->ctl_fd);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}
