/* virtio_worker: how a virtio device's I/O thread is held still and let go.
 *
 * The VM's pause (quiesce) and a driver's reset both need the thread to stop taking requests
 * and to finish those in flight; each is a hold, and the thread runs only when none is held.
 * A holder waits until the thread says it is still (nothing in flight); the thread says so
 * from virtio_worker_check, which it calls after every wake-up. The control eventfd wakes it.
 */
#ifndef TERN_VIRTIO_WORKER_H
#define TERN_VIRTIO_WORKER_H

#include <pthread.h>
#include <stdbool.h>

struct virtio_worker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned hold;
    bool stopped; /* the thread saw the hold with nothing in flight */
    bool quit;
    bool started;
    int ctl_fd; /* an eventfd the thread waits on */
    pthread_t thread;
};

/* Starts held once (the VM has not run yet). */
int virtio_worker_init(struct virtio_worker *w, const char *name);
int virtio_worker_start(struct virtio_worker *w, void *(*fn)(void *), void *arg, const char *name);
void virtio_worker_kick(struct virtio_worker *w);
void virtio_worker_hold(struct virtio_worker *w);
void virtio_worker_unhold(struct virtio_worker *w);
/* The thread's side, after each wake-up: true when it may take work; *quit when it must end
 * (asked to, with nothing in flight). idle: nothing is in flight now. */
bool virtio_worker_check(struct virtio_worker *w, bool idle, bool *quit);
/* The thread's side: whether a hold is acknowledged (it must not touch the rings then: the
 * state may be being read). */
bool virtio_worker_stopped(struct virtio_worker *w);
/* Ends the thread (it finishes what is in flight first) and joins it. */
void virtio_worker_stop(struct virtio_worker *w);
void virtio_worker_destroy(struct virtio_worker *w);
/* Drains an eventfd (non-blocking). */
void virtio_worker_drain(int fd);

#endif
