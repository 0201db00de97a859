#include "migrate/mig_chan.h"

#include "clock/clock.h"
#include "err/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIG_CHAN_CHUNK (256u << 10)
#define MIG_CHAN_READ_CHUNK (64u << 10)
#define MIG_CHAN_SPARES 48u

struct out_chunk {
    struct out_chunk *next;
    struct mig_chan *ch;
    uv_write_t req;
    size_t len;
    char data[MIG_CHAN_CHUNK];
};

struct in_chunk {
    struct in_chunk *next;
    size_t len, pos;
    char data[MIG_CHAN_READ_CHUNK];
};

struct mig_chan {
    uv_loop_t *loop;
    uv_tcp_t *tcp;
    uv_async_t async;
    char peer[128];
    unsigned idle_ms;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct out_chunk *out_head, *out_tail; /* queued, not yet handed to uv_write */
    size_t out_bytes;                      /* queued or being written */
    struct in_chunk *in_head, *in_tail;
    size_t in_bytes;
    bool reading, restart_read;
    bool eof;
    int error;
    char message[256];
    uint64_t sent, received;
    uint64_t activity_ns; /* last byte in or out */
    uint64_t deadline_ns; /* 0: none */
    unsigned deadline_ms;
    char deadline_what[64];

    /* Spent chunks kept for reuse: fresh memory costs a page fault per 4 KiB, which on a
     * busy link adds up to a large share of the CPU. Guarded by lock. */
    struct out_chunk *spare_out;
    struct in_chunk *spare_in;
    unsigned spare_out_count, spare_in_count;

    bool closing;
    int open_handles;
    mig_chan_closed_fn on_closed;
    void *closed_opaque;
};

static void chan_fail_locked(struct mig_chan *ch, int code, const char *message)
{
    if (ch->error)
        return;
    ch->error = code;
    snprintf(ch->message, sizeof(ch->message), "%s", message);
    pthread_cond_broadcast(&ch->cond);
}

void mig_chan_fail(struct mig_chan *ch, int code, const char *message)
{
    pthread_mutex_lock(&ch->lock);
    chan_fail_locked(ch, code, message);
    pthread_mutex_unlock(&ch->lock);
    uv_async_send(&ch->async);
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

uint64_t mig_chan_bytes_sent(struct mig_chan *ch)
{
    pthread_mutex_lock(&ch->lock);
    uint64_t n = ch->sent;
    pthread_mutex_unlock(&ch->lock);
    return n;
}

uint64_t mig_chan_bytes_received(struct mig_chan *ch)
{
    pthread_mutex_lock(&ch->lock);
    uint64_t n = ch->received;
    pthread_mutex_unlock(&ch->lock);
    return n;
}

/* Waits on the condition once (up to 100 ms); returns -errno once the channel failed or went
 * idle for too long. Called with the lock held. */
static int chan_wait_locked(struct mig_chan *ch)
{
    if (ch->error)
        return err_set(ch->error, "%s", ch->message);
    struct timespec ts = clock_deadline(100 * 1000000ull);
    pthread_cond_timedwait(&ch->cond, &ch->lock, &ts);
    if (ch->error)
        return err_set(ch->error, "%s", ch->message);
    if (ch->deadline_ns && clock_now_ns() > ch->deadline_ns) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s: %s not done within %u ms", ch->peer, ch->deadline_what,
                 ch->deadline_ms);
        chan_fail_locked(ch, -ETIMEDOUT, msg);
        uv_async_send(&ch->async);
        return err_set(-ETIMEDOUT, "%s", msg);
    }
    if (ch->idle_ms && clock_now_ns() - ch->activity_ns > (uint64_t)ch->idle_ms * 1000000ull) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s: nothing sent or received for %u ms", ch->peer, ch->idle_ms);
        chan_fail_locked(ch, -ETIMEDOUT, msg);
        uv_async_send(&ch->async);
        return err_set(-ETIMEDOUT, "%s", msg);
    }
    return 0;
}

/* ---- worker side ----------------------------------------------------------------------- */

int mig_chan_write(struct mig_chan *ch, const void *buf, size_t len)
{
    const char *p = buf;
    int rc = 0;
    pthread_mutex_lock(&ch->lock);
    while (len && !rc) {
        if (ch->error) {
            rc = err_set(ch->error, "%s", ch->message);
            break;
        }
        if (ch->out_bytes >= MIG_CHAN_QUEUE_LIMIT) {
            rc = chan_wait_locked(ch);
            continue;
        }
        struct out_chunk *c = ch->out_tail;
        if (!c || c->len == MIG_CHAN_CHUNK) {
            c = ch->spare_out;
            if (c) {
                ch->spare_out = c->next;
                ch->spare_out_count--;
            } else {
                c = malloc(sizeof(*c));
            }
            if (!c) {
                rc = err_set(-ENOMEM, "out of memory for the send queue");
                break;
            }
            c->next = NULL;
            c->ch = ch;
            c->len = 0;
            if (ch->out_tail)
                ch->out_tail->next = c;
            else
                ch->out_head = c;
            ch->out_tail = c;
        }
        size_t n = MIG_CHAN_CHUNK - c->len;
        if (n > len)
            n = len;
        memcpy(c->data + c->len, p, n);
        c->len += n;
        ch->out_bytes += n;
        p += n;
        len -= n;
        if (c->len == MIG_CHAN_CHUNK)
            uv_async_send(&ch->async);
    }
    pthread_mutex_unlock(&ch->lock);
    /* A partly filled chunk goes out too: the loop takes whatever is queued when it wakes. */
    uv_async_send(&ch->async);
    return rc;
}

int mig_chan_flush(struct mig_chan *ch)
{
    int rc = 0;
    uv_async_send(&ch->async);
    pthread_mutex_lock(&ch->lock);
    while (ch->out_bytes && !rc)
        rc = chan_wait_locked(ch);
    if (!rc && ch->error)
        rc = err_set(ch->error, "%s", ch->message);
    pthread_mutex_unlock(&ch->lock);
    return rc;
}

int mig_chan_read(struct mig_chan *ch, void *buf, size_t len)
{
    char *p = buf;
    int rc = 0;
    pthread_mutex_lock(&ch->lock);
    while (len && !rc) {
        struct in_chunk *c = ch->in_head;
        if (c) {
            size_t n = c->len - c->pos;
            if (n > len)
                n = len;
            memcpy(p, c->data + c->pos, n);
            c->pos += n;
            p += n;
            len -= n;
            ch->in_bytes -= n;
            if (c->pos == c->len) {
                ch->in_head = c->next;
                if (!ch->in_head)
                    ch->in_tail = NULL;
                if (ch->spare_in_count < MIG_CHAN_SPARES) {
                    c->next = ch->spare_in;
                    ch->spare_in = c;
                    ch->spare_in_count++;
                } else {
                    free(c);
                }
            }
            if (!ch->reading && !ch->restart_read && ch->in_bytes < MIG_CHAN_QUEUE_LIMIT / 2) {
                ch->restart_read = true;
                uv_async_send(&ch->async);
            }
            continue;
        }
        if (ch->error)
            rc = err_set(ch->error, "%s", ch->message);
        else if (ch->eof)
            rc = err_set(-ECONNRESET, "%s closed the connection", ch->peer);
        else
            rc = chan_wait_locked(ch);
    }
    pthread_mutex_unlock(&ch->lock);
    return rc;
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
    if (rc == -ECONNRESET)
        return err_set(-ECONNRESET, "%s closed the connection mid-stream", ch->peer);
    return rc;
}

/* ---- loop side ------------------------------------------------------------------------- */

static void chan_maybe_finish_close(struct mig_chan *ch);

static void chan_on_write(uv_write_t *req, int status)
{
    struct out_chunk *c = req->data;
    struct mig_chan *ch = c->ch;
    pthread_mutex_lock(&ch->lock);
    ch->out_bytes -= c->len;
    if (status == 0) {
        ch->sent += c->len;
        ch->activity_ns = clock_now_ns();
    } else if (status != UV_ECANCELED) {
        char msg[256];
        snprintf(msg, sizeof(msg), "sending to %s failed: %s", ch->peer, uv_strerror(status));
        chan_fail_locked(ch, -ECONNRESET, msg);
    }
    if (ch->spare_out_count < MIG_CHAN_SPARES) {
        c->next = ch->spare_out;
        ch->spare_out = c;
        ch->spare_out_count++;
        c = NULL;
    }
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->lock);
    free(c);
    if (ch->closing)
        chan_maybe_finish_close(ch);
}

static void chan_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct mig_chan *ch = h->data;
    pthread_mutex_lock(&ch->lock);
    struct in_chunk *c = ch->spare_in;
    if (c) {
        ch->spare_in = c->next;
        ch->spare_in_count--;
    }
    pthread_mutex_unlock(&ch->lock);
    if (!c)
        c = malloc(sizeof(*c));
    *buf = c ? uv_buf_init(c->data, sizeof(c->data)) : uv_buf_init(NULL, 0);
}

static void chan_on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    struct mig_chan *ch = stream->data;
    struct in_chunk *c =
        buf->base ? (struct in_chunk *)(buf->base - offsetof(struct in_chunk, data)) : NULL;
    if (n <= 0) {
        free(c);
        if (n == 0)
            return;
        pthread_mutex_lock(&ch->lock);
        if (n == UV_EOF) {
            ch->eof = true;
        } else {
            char msg[256];
            snprintf(msg, sizeof(msg), "receiving from %s failed: %s", ch->peer,
                     uv_strerror((int)n));
            chan_fail_locked(ch, -ECONNRESET, msg);
        }
        ch->reading = false;
        pthread_cond_broadcast(&ch->cond);
        pthread_mutex_unlock(&ch->lock);
        uv_read_stop(stream);
        return;
    }
    c->next = NULL;
    c->len = (size_t)n;
    c->pos = 0;
    pthread_mutex_lock(&ch->lock);
    if (ch->in_tail)
        ch->in_tail->next = c;
    else
        ch->in_head = c;
    ch->in_tail = c;
    ch->in_bytes += (size_t)n;
    ch->received += (uint64_t)n;
    ch->activity_ns = clock_now_ns();
    bool full = ch->in_bytes >= MIG_CHAN_QUEUE_LIMIT;
    if (full)
        ch->reading = false;
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->lock);
    /* Backpressure: the peer's sends stall in TCP until the worker catches up. */
    if (full)
        uv_read_stop(stream);
}

/* Hands every queued chunk to uv_write. */
static void chan_write_queued(struct mig_chan *ch)
{
    pthread_mutex_lock(&ch->lock);
    struct out_chunk *list = ch->out_head;
    ch->out_head = ch->out_tail = NULL;
    pthread_mutex_unlock(&ch->lock);
    while (list) {
        struct out_chunk *c = list;
        list = c->next;
        c->req.data = c;
        uv_buf_t b = uv_buf_init(c->data, (unsigned)c->len);
        int rc = uv_write(&c->req, (uv_stream_t *)ch->tcp, &b, 1, chan_on_write);
        if (rc) {
            char msg[256];
            snprintf(msg, sizeof(msg), "sending to %s failed: %s", ch->peer, uv_strerror(rc));
            pthread_mutex_lock(&ch->lock);
            ch->out_bytes -= c->len;
            chan_fail_locked(ch, -ECONNRESET, msg);
            pthread_mutex_unlock(&ch->lock);
            free(c);
        }
    }
}

static void chan_on_async(uv_async_t *a)
{
    struct mig_chan *ch = a->data;
    if (ch->closing) {
        chan_maybe_finish_close(ch);
        return;
    }
    chan_write_queued(ch);
    pthread_mutex_lock(&ch->lock);
    bool restart = ch->restart_read && !ch->eof && !ch->error;
    ch->restart_read = false;
    if (restart)
        ch->reading = true;
    pthread_mutex_unlock(&ch->lock);
    if (restart && uv_read_start((uv_stream_t *)ch->tcp, chan_alloc, chan_on_read) != 0)
        mig_chan_fail(ch, -ECONNRESET, "cannot read from the connection");
}

int mig_chan_create(uv_loop_t *loop, uv_tcp_t *tcp, const char *peer, unsigned idle_ms,
                    struct mig_chan **out)
{
    struct mig_chan *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return err_set(-ENOMEM, "out of memory");
    ch->loop = loop;
    ch->tcp = tcp;
    ch->idle_ms = idle_ms;
    snprintf(ch->peer, sizeof(ch->peer), "%s", peer);
    pthread_mutex_init(&ch->lock, NULL);
    clock_cond_init(&ch->cond);
    ch->activity_ns = clock_now_ns();
    uv_async_init(loop, &ch->async, chan_on_async);
    ch->async.data = ch;
    tcp->data = ch;
    uv_tcp_nodelay(tcp, 1);
    ch->reading = true;
    int rc = uv_read_start((uv_stream_t *)tcp, chan_alloc, chan_on_read);
    if (rc)
        mig_chan_fail(ch, -ECONNRESET, "cannot read from the connection");
    *out = ch;
    return 0;
}

static void chan_on_handle_closed(uv_handle_t *h)
{
    struct mig_chan *ch = h->data;
    if (--ch->open_handles)
        return;
    while (ch->in_head) {
        struct in_chunk *c = ch->in_head;
        ch->in_head = c->next;
        free(c);
    }
    while (ch->out_head) {
        struct out_chunk *c = ch->out_head;
        ch->out_head = c->next;
        free(c);
    }
    while (ch->spare_out) {
        struct out_chunk *c = ch->spare_out;
        ch->spare_out = c->next;
        free(c);
    }
    while (ch->spare_in) {
        struct in_chunk *c = ch->spare_in;
        ch->spare_in = c->next;
        free(c);
    }
    mig_chan_closed_fn cb = ch->on_closed;
    void *opaque = ch->closed_opaque;
    free(ch->tcp);
    pthread_cond_destroy(&ch->cond);
    pthread_mutex_destroy(&ch->lock);
    free(ch);
    if (cb)
        cb(opaque);
}

static void chan_maybe_finish_close(struct mig_chan *ch)
{
    if (ch->open_handles)
        return; /* already closing the handles */
    /* A healthy channel sends what is queued first; a failed one drops it (freed with it). */
    if (!mig_chan_error(ch))
        chan_write_queued(ch);
    pthread_mutex_lock(&ch->lock);
    bool pending = ch->out_bytes && !ch->error;
    pthread_mutex_unlock(&ch->lock);
    if (pending)
        return; /* chan_on_write calls again once they are written */
    ch->open_handles = 2;
    uv_read_stop((uv_stream_t *)ch->tcp);
    uv_close((uv_handle_t *)ch->tcp, chan_on_handle_closed);
    uv_close((uv_handle_t *)&ch->async, chan_on_handle_closed);
}

void mig_chan_close(struct mig_chan *ch, mig_chan_closed_fn on_closed, void *opaque)
{
    ch->on_closed = on_closed;
    ch->closed_opaque = opaque;
    ch->closing = true;
    chan_maybe_finish_close(ch);
}
