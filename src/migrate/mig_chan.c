#include "migrate/mig_chan.h"

#include "clock/clock.h"
#include "err/err.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIG_CHAN_BUF (256u << 10)
#define MIG_CHAN_DIRECT (64u << 10) /* reads and writes this large skip the buffers */
#define MIG_CHAN_WAIT_MS 100

struct mig_chan {
    uv_async_t closer; /* frees the channel on the loop's next turn */
    int fd;
    int wake; /* eventfd: a failure from another thread ends the worker's poll at once */
    char peer[128];
    unsigned idle_ms;
    struct mig_tls_session *tls;
    const char *security;

    /* Worker only. */
    uint8_t *out; /* small writes gathered */
    size_t out_len;
    uint8_t *in; /* read ahead */
    size_t in_pos, in_len;

    pthread_mutex_t lock; /* failure and deadline, set from any thread */
    int error;
    char message[256];
    uint64_t deadline_ns; /* 0: none */
    unsigned deadline_ms;
    char deadline_what[64];

    /* Worker only: the bandwidth cap. */
    uint64_t rate; /* bytes/s; 0: none */
    uint64_t pace_bytes;
    double pace_start_ms;

    /* Written by the worker, read by any thread (atomics). */
    uint64_t sent, received, activity_ns;

    mig_chan_closed_fn on_closed;
    void *closed_opaque;
};

static void chan_fail_locked(struct mig_chan *ch, int code, const char *message)
{
    if (ch->error)
        return;
    ch->error = code;
    snprintf(ch->message, sizeof(ch->message), "%s", message);
    uint64_t one = 1;
    ssize_t n = write(ch->wake, &one, sizeof(one));
    (void)n;
}

void mig_chan_fail(struct mig_chan *ch, int code, const char *message)
{
    pthread_mutex_lock(&ch->lock);
    chan_fail_locked(ch, code, message);
    pthread_mutex_unlock(&ch->lock);
}

int mig_chan_error(struct mig_chan *ch)
{
    pthread_mutex_lock(&ch->lock);
    int rc = ch->error ? err_set(ch->error, "%s", ch->message) : 0;
    pthread_mutex_unlock(&ch->lock);
    return rc;
}

void mig_chan_set_deadline(struct mig_chan *ch, unsigned ms, const char *what)
{
    pthread_mutex_lock(&ch->lock);
    ch->deadline_ns = ms ? clock_now_ns() + (uint64_t)ms * 1000000ull : 0;
    ch->deadline_ms = ms;
    snprintf(ch->deadline_what, sizeof(ch->deadline_what), "%s", what ? what : "");
    pthread_mutex_unlock(&ch->lock);
}

const char *mig_chan_peer(const struct mig_chan *ch)
{
    return ch->peer;
}

const char *mig_chan_security(const struct mig_chan *ch)
{
    return ch->security;
}

uint64_t mig_chan_bytes_sent(struct mig_chan *ch)
{
    return __atomic_load_n(&ch->sent, __ATOMIC_RELAXED);
}

uint64_t mig_chan_bytes_received(struct mig_chan *ch)
{
    return __atomic_load_n(&ch->received, __ATOMIC_RELAXED);
}

static void chan_moved(struct mig_chan *ch, uint64_t *counter, size_t n)
{
    __atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
    __atomic_store_n(&ch->activity_ns, clock_now_ns(), __ATOMIC_RELAXED);
}

/* The failure, deadline or idle timeout that ends the wait, as -errno with its message. */
static int chan_check(struct mig_chan *ch)
{
    char msg[256];
    int rc = 0;
    pthread_mutex_lock(&ch->lock);
    uint64_t now = clock_now_ns();
    uint64_t idle = now - __atomic_load_n(&ch->activity_ns, __ATOMIC_RELAXED);
    if (!ch->error && ch->deadline_ns && now > ch->deadline_ns) {
        snprintf(msg, sizeof(msg), "%s: %s not done within %u ms", ch->peer, ch->deadline_what,
                 ch->deadline_ms);
        chan_fail_locked(ch, -ETIMEDOUT, msg);
    } else if (!ch->error && ch->idle_ms && idle > (uint64_t)ch->idle_ms * 1000000ull) {
        snprintf(msg, sizeof(msg), "%s: nothing sent or received for %u ms", ch->peer, ch->idle_ms);
        chan_fail_locked(ch, -ETIMEDOUT, msg);
    }
    if (ch->error)
        rc = err_set(ch->error, "%s", ch->message);
    pthread_mutex_unlock(&ch->lock);
    return rc;
}

/* Waits until the socket is ready for events (POLLIN/POLLOUT), at most 100 ms at a time. */
static int chan_wait(struct mig_chan *ch, short events)
{
    int rc = chan_check(ch);
    if (rc)
        return rc;
    struct pollfd p[2] = {{.fd = ch->fd, .events = events}, {.fd = ch->wake, .events = POLLIN}};
    if (poll(p, 2, MIG_CHAN_WAIT_MS) < 0 && errno != EINTR)
        return err_sys(-errno, "waiting on the connection to %s", ch->peer);
    return chan_check(ch);
}

static int chan_io_failed(struct mig_chan *ch, const char *what, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "%s %s failed: %s", what, ch->peer, why);
    mig_chan_fail(ch, -ECONNRESET, msg);
    return mig_chan_error(ch);
}

void mig_chan_set_rate(struct mig_chan *ch, uint64_t bytes_per_s)
{
    ch->rate = bytes_per_s;
    ch->pace_bytes = 0;
    ch->pace_start_ms = clock_now_ms();
}

/* Sleeps until the bytes sent so far fit the rate. */
static int chan_pace(struct mig_chan *ch, size_t len)
{
    if (!ch->rate)
        return 0;
    ch->pace_bytes += len;
    double due = ch->pace_start_ms + (double)ch->pace_bytes * 1e3 / (double)ch->rate;
    double now0 = clock_now_ms();
    if (now0 - due > 50) {
        /* Idle time (scanning zero pages, syncing) is no credit for a burst beyond the cap:
         * restart the window, with 50 ms of slack. */
        ch->pace_start_ms = now0 - 50;
        ch->pace_bytes = len;
        due = ch->pace_start_ms + (double)len * 1e3 / (double)ch->rate;
    }
    int rc = 0;
    for (double now = clock_now_ms(); now < due && !rc; now = clock_now_ms()) {
        double nap = due - now < 20 ? due - now : 20;
        struct timespec ts = {0, (long)(nap * 1e6)};
        nanosleep(&ts, NULL);
        rc = chan_check(ch);
    }
    return rc;
}

/* Sends the whole of iov (modified), waiting as needed. */
static int chan_send_iov(struct mig_chan *ch, struct iovec *iov, int n)
{
    while (n) {
        if (!iov->iov_len) {
            iov++, n--;
            continue;
        }
        ssize_t k;
        if (ch->tls)
            k = mig_tls_send(ch->tls, iov->iov_base, iov->iov_len);
        else {
            struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
            k = sendmsg(ch->fd, &m, MSG_NOSIGNAL);
            if (k < 0)
                k = -errno;
        }
        if (k == -EAGAIN || k == -EINTR) {
            int rc = chan_wait(ch, ch->tls ? mig_tls_wants(ch->tls) : POLLOUT);
            if (rc)
                return rc;
            continue;
        }
        if (k < 0)
            return chan_io_failed(ch, "sending to",
                                  ch->tls ? mig_tls_last_error(ch->tls) : strerror((int)-k));
        chan_moved(ch, &ch->sent, (size_t)k);
        int rc = chan_pace(ch, (size_t)k);
        if (rc)
            return rc;
        size_t left = (size_t)k;
        while (left && n) {
            size_t m = left < iov->iov_len ? left : iov->iov_len;
            iov->iov_base = (char *)iov->iov_base + m;
            iov->iov_len -= m;
            left -= m;
            if (!iov->iov_len)
                iov++, n--;
        }
    }
    return 0;
}

/* Receives up to len bytes (at least one), waiting as needed; the peer closing is -ECONNRESET. */
static int chan_recv_some(struct mig_chan *ch, void *buf, size_t len, size_t *got)
{
    for (;;) {
        ssize_t k;
        if (ch->tls)
            k = mig_tls_recv(ch->tls, buf, len);
        else {
            k = recv(ch->fd, buf, len, 0);
            if (k < 0)
                k = -errno;
        }
        if (k > 0) {
            chan_moved(ch, &ch->received, (size_t)k);
            *got = (size_t)k;
            return 0;
        }
        if (k == 0)
            return err_set(-ECONNRESET, "%s closed the connection", ch->peer);
        if (k != -EAGAIN && k != -EINTR)
            return chan_io_failed(ch, "receiving from",
                                  ch->tls ? mig_tls_last_error(ch->tls) : strerror((int)-k));
        int rc = chan_wait(ch, ch->tls ? mig_tls_wants(ch->tls) : POLLIN);
        if (rc)
            return rc;
    }
}

/* ---- worker side ----------------------------------------------------------------------- */

int mig_chan_flush(struct mig_chan *ch)
{
    int rc = chan_check(ch);
    if (rc || !ch->out_len)
        return rc;
    struct iovec iov = {ch->out, ch->out_len};
    ch->out_len = 0;
    return chan_send_iov(ch, &iov, 1);
}

int mig_chan_write(struct mig_chan *ch, const void *buf, size_t len)
{
    if (len < MIG_CHAN_DIRECT && ch->out_len + len <= MIG_CHAN_BUF) {
        memcpy(ch->out + ch->out_len, buf, len);
        ch->out_len += len;
        return ch->out_len == MIG_CHAN_BUF ? mig_chan_flush(ch) : 0;
    }
    /* What was gathered goes out first, with this in the same call. */
    struct iovec iov[2] = {{ch->out, ch->out_len}, {(void *)buf, len}};
    ch->out_len = 0;
    int rc = chan_check(ch);
    return rc ? rc : chan_send_iov(ch, iov, 2);
}

int mig_chan_read(struct mig_chan *ch, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        if (ch->in_pos < ch->in_len) {
            size_t n = ch->in_len - ch->in_pos;
            if (n > len)
                n = len;
            memcpy(p, ch->in + ch->in_pos, n);
            ch->in_pos += n;
            p += n;
            len -= n;
            continue;
        }
        size_t got;
        int rc;
        if (len >= MIG_CHAN_DIRECT) {
            /* Large reads land where they belong, guest RAM among them. */
            if ((rc = chan_recv_some(ch, p, len, &got)))
                return rc;
            p += got;
            len -= got;
            continue;
        }
        if ((rc = chan_recv_some(ch, ch->in, MIG_CHAN_BUF, &got)))
            return rc;
        ch->in_pos = 0;
        ch->in_len = got;
    }
    return 0;
}

int mig_chan_peek(struct mig_chan *ch, uint8_t *byte)
{
    if (ch->in_pos < ch->in_len) {
        *byte = ch->in[ch->in_pos];
        return 0;
    }
    if (ch->tls)
        return err_set(-EINVAL, "peeking under TLS");
    /* Left in the socket: a TLS handshake that follows reads it from there. */
    for (;;) {
        ssize_t k = recv(ch->fd, byte, 1, MSG_PEEK);
        if (k == 1)
            return 0;
        if (k == 0)
            return err_set(-ECONNRESET, "%s closed the connection", ch->peer);
        if (errno != EAGAIN && errno != EINTR)
            return chan_io_failed(ch, "receiving from", strerror(errno));
        int rc = chan_wait(ch, POLLIN);
        if (rc)
            return rc;
    }
}

int mig_chan_start_tls(struct mig_chan *ch, const struct mig_tls_creds *creds, const char *host)
{
    if (ch->in_pos != ch->in_len)
        return err_set(-EPROTO, "%s sent before the TLS handshake", ch->peer);
    int rc = mig_tls_session_new(creds, ch->fd, host, ch->peer, &ch->tls);
    if (rc)
        return rc;
    for (;;) {
        rc = mig_tls_handshake(ch->tls);
        if (rc != -EAGAIN)
            break;
        if ((rc = chan_wait(ch, mig_tls_wants(ch->tls))))
            return err_context(rc, "TLS handshake with %s", ch->peer);
    }
    if (rc)
        return rc;
    __atomic_store_n(&ch->activity_ns, clock_now_ns(), __ATOMIC_RELAXED);
    ch->security = mig_tls_creds_kind(creds);
    return 0;
}

int mig_chan_read_line(struct mig_chan *ch, char *buf, size_t max)
{
    size_t n = 0;
    for (;;) {
        char c;
        int rc = mig_chan_read(ch, &c, 1);
        if (rc)
            return rc;
        if (c == '\n')
            break;
        if (n + 1 >= max)
            return err_set(-EPROTO, "%s sent a control line longer than %zu bytes", ch->peer,
                           max - 1);
        buf[n++] = c;
    }
    buf[n] = '\0';
    return 0;
}

int mig_chan_write_json(struct mig_chan *ch, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return err_set(-ENOMEM, "out of memory");
    int rc = mig_chan_write(ch, text, strlen(text));
    if (!rc)
        rc = mig_chan_write(ch, "\n", 1);
    free(text);
    return rc ? rc : mig_chan_flush(ch);
}

int mig_chan_read_json(struct mig_chan *ch, const char *what, json_t **out)
{
    char *line = malloc(MIG_CHAN_MAX_LINE);
    if (!line)
        return err_set(-ENOMEM, "out of memory");
    int rc = mig_chan_read_line(ch, line, MIG_CHAN_MAX_LINE);
    if (rc) {
        free(line);
        return err_context(rc, "waiting for %s's %s", ch->peer, what);
    }
    *out = json_loads(line, 0, NULL);
    free(line);
    if (!*out || !json_is_object(*out)) {
        json_decref(*out);
        return err_set(-EPROTO, "%s's %s is not tern's (not a JSON object)", ch->peer, what);
    }
    return 0;
}

int mig_chan_sink(void *ch, const void *buf, size_t len)
{
    return mig_chan_write(ch, buf, len);
}

int mig_chan_source(void *opaque, void *buf, size_t len)
{
    struct mig_chan *ch = opaque;
    int rc = mig_chan_read(ch, buf, len);
    /* The stream reader takes -ENODATA as a clean end between records. */
    if (rc == -ECONNRESET && !mig_chan_error(ch))
        return err_set(-ECONNRESET, "%s closed the connection mid-stream", ch->peer);
    return rc;
}

/* ---- loop side ------------------------------------------------------------------------- */

int mig_chan_create(uv_loop_t *loop, int fd, const char *peer, unsigned idle_ms,
                    struct mig_chan **out)
{
    struct mig_chan *ch = calloc(1, sizeof(*ch));
    uint8_t *bufs = malloc(2 * MIG_CHAN_BUF);
    int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!ch || !bufs || wake < 0) {
        int rc = wake < 0 ? err_sys(-errno, "cannot make an eventfd for the connection")
                          : err_set(-ENOMEM, "out of memory");
        if (wake >= 0)
            close(wake);
        free(bufs);
        free(ch);
        close(fd);
        return rc;
    }
    ch->fd = fd;
    ch->wake = wake;
    ch->out = bufs;
    ch->in = bufs + MIG_CHAN_BUF;
    ch->idle_ms = idle_ms;
    ch->security = "plain TCP";
    snprintf(ch->peer, sizeof(ch->peer), "%s", peer);
    pthread_mutex_init(&ch->lock, NULL);
    ch->activity_ns = clock_now_ns();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uv_async_init(loop, &ch->closer, NULL);
    ch->closer.data = ch;
    *out = ch;
    return 0;
}

static void chan_on_closed(uv_handle_t *h)
{
    struct mig_chan *ch = h->data;
    mig_chan_closed_fn cb = ch->on_closed;
    void *opaque = ch->closed_opaque;
    mig_tls_session_free(ch->tls);
    /* What the peer sent that nobody read would make close() reset the connection, and a
     * reset can overtake what this side sent last (a TLS alert, a refusal): the peer would
     * hear "connection reset" instead of the reason. Read it away first (bounded). */
    char sink[16384];
    for (int i = 0; i < 64 && recv(ch->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    shutdown(ch->fd, SHUT_WR);
    close(ch->fd);
    close(ch->wake);
    free(ch->out);
    pthread_mutex_destroy(&ch->lock);
    free(ch);
    if (cb)
        cb(opaque);
}

void mig_chan_close(struct mig_chan *ch, mig_chan_closed_fn on_closed, void *opaque)
{
    ch->on_closed = on_closed;
    ch->closed_opaque = opaque;
    /* A clean end tells a TLS peer so (no truncation attack can pass for one). */
    if (ch->tls && !mig_chan_error(ch))
        mig_tls_bye(ch->tls);
    uv_close((uv_handle_t *)&ch->closer, chan_on_closed);
}
