#include "control/ctl_server.h"

#include "err/err.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void ctl_listener_closed(uv_handle_t *h);

struct ctl_conn {
    uv_pipe_t pipe;
    struct ctl_server *srv;
    struct ctl_conn *next;
    char *line;
    size_t len;
    bool discarding; /* the current line overflowed: drop it up to its newline */
    bool subscribed; /* gets every event the server broadcasts */
    bool stalled;    /* not read from while its replies back up */
    bool dropped;    /* closed for never reading what it was sent */
    size_t queued;   /* reply bytes written to it, not yet sent */
};

struct ctl_server {
    uv_pipe_t listener;
    char *path;
    ctl_handler_fn handler;
    void *opaque;
    struct ctl_conn *conns;
    struct ctl_conn *current; /* the connection whose request the handler is serving */
    unsigned pending_writes;
    void (*drained)(void *opaque);
    void *drained_opaque;
    unsigned open_conns;
    bool listener_closed;
};

static void ctl_check_drained(struct ctl_server *srv)
{
    if (srv->drained && !srv->pending_writes) {
        void (*cb)(void *) = srv->drained;
        srv->drained = NULL;
        cb(srv->drained_opaque);
    }
}

static void ctl_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void ctl_on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);
static void ctl_conn_close(struct ctl_conn *c);

/* A write request and the line it sends. */
struct ctl_write {
    uv_write_t req;
    size_t len;
    char line[];
};

static void ctl_on_write(uv_write_t *req, int status)
{
    (void)status;
    struct ctl_write *w = (struct ctl_write *)req;
    struct ctl_conn *c = req->handle->data; /* still open: close waits for its writes */
    struct ctl_server *srv = c->srv;
    srv->pending_writes--;
    c->queued -= w->len;
    free(w);
    /* A client that reads again is read from again, once half its backlog has gone. */
    if (c->stalled && !c->dropped && c->queued <= CTL_MAX_QUEUED / 2 &&
        !uv_is_closing((uv_handle_t *)&c->pipe) &&
        uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_on_read) == 0)
        c->stalled = false;
    ctl_check_drained(srv);
}

/* Queues msg (a reference taken) as one line. Replies a client does not read are bounded: past
 * CTL_MAX_QUEUED bytes it is no longer read from (so it sends no more requests), and past four
 * times that (events it never reads) it is dropped. */
static void ctl_send(struct ctl_conn *c, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text || c->dropped) {
        free(text);
        return;
    }
    size_t n = strlen(text);
    if (c->queued + n + 1 > 4 * (size_t)CTL_MAX_QUEUED) {
        free(text);
        err_warn("control socket: dropped a client that does not read its replies");
        c->dropped = true;
        ctl_conn_close(c);
        return;
    }
    struct ctl_write *w = malloc(sizeof(*w) + n + 1);
    if (!w) {
        free(text);
        return;
    }
    memcpy(w->line, text, n);
    w->line[n] = '\n';
    w->len = n + 1;
    free(text);
    uv_buf_t buf = uv_buf_init(w->line, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, ctl_on_write) != 0) {
        free(w);
        return;
    }
    c->srv->pending_writes++;
    c->queued += w->len;
    if (c->queued > CTL_MAX_QUEUED && !c->stalled) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->stalled = true;
    }
}

static void ctl_send_error(struct ctl_conn *c, const char *message)
{
    ctl_send(c, json_pack("{s:{s:s}}", "error", "message", message));
}

static void ctl_handle_line(struct ctl_conn *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    if (!req) {
        char msg[256];
        snprintf(msg, sizeof(msg), "bad JSON: %s (column %d)", jerr.text, jerr.column);
        ctl_send_error(c, msg);
        return;
    }
    const char *command = json_string_value(json_object_get(req, "command"));
    if (!json_is_object(req) || !command) {
        ctl_send_error(c, "a request is a JSON object with a string \"command\"");
        json_decref(req);
        return;
    }
    char err[512] = "";
    c->srv->current = c;
    json_t *ret = c->srv->handler(c->srv->opaque, command, req, err, sizeof(err));
    c->srv->current = NULL;
    json_decref(req);
    if (ret)
        ctl_send(c, json_pack("{s:o}", "return", ret));
    else
        ctl_send_error(c, err[0] ? err : "command failed");
}

static void ctl_server_release(struct ctl_server *srv)
{
    /* The server goes last: a closing connection's write callbacks still count on it. */
    if (srv->listener_closed && !srv->open_conns) {
        free(srv->path);
        free(srv);
    }
}

static void ctl_conn_closed(uv_handle_t *h)
{
    struct ctl_conn *c = h->data;
    struct ctl_server *srv = c->srv;
    free(c->line);
    free(c);
    srv->open_conns--;
    ctl_server_release(srv);
}

static void ctl_conn_close(struct ctl_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->pipe))
        return;
    if (c->srv->current == c)
        c->srv->current = NULL;
    struct ctl_conn **pp = &c->srv->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    uv_close((uv_handle_t *)&c->pipe, ctl_conn_closed);
}

static void ctl_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    static char chunk[16384];
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void ctl_on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    struct ctl_conn *c = stream->data;
    if (n < 0) {
        ctl_conn_close(c);
        return;
    }
    for (ssize_t i = 0; i < n && !c->dropped; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            if (c->discarding) {
                c->discarding = false;
            } else if (c->len) {
                ctl_handle_line(c, c->line, c->len);
            }
            c->len = 0;
            continue;
        }
        if (c->discarding)
            continue;
        if (c->len == CTL_MAX_LINE) {
            char msg[96];
            snprintf(msg, sizeof(msg), "request line exceeds %d bytes; ignored", CTL_MAX_LINE);
            ctl_send_error(c, msg);
            c->discarding = true;
            c->len = 0;
            continue;
        }
        c->line[c->len++] = ch;
    }
}

static void ctl_on_connection(uv_stream_t *listener, int status)
{
    struct ctl_server *srv = listener->data;
    if (status < 0)
        return;
    struct ctl_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->line = malloc(CTL_MAX_LINE);
    c->srv = srv;
    srv->open_conns++;
    uv_pipe_init(listener->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = srv->conns;
    srv->conns = c;
    if (!c->line || uv_accept(listener, (uv_stream_t *)&c->pipe) != 0 ||
        uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_on_read) != 0)
        ctl_conn_close(c);
}

int ctl_server_start(uv_loop_t *loop, const char *path, ctl_handler_fn handler, void *opaque,
                     struct ctl_server **out)
{
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof(sa.sun_path))
        return err_set(-ENAMETOOLONG, "--api-socket %s: path longer than %zu bytes", path,
                       sizeof(sa.sun_path) - 1);
    struct stat st;
    char dir[sizeof(sa.sun_path)];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), "%s", slash ? "/" : ".");
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return err_set(-ENOENT, "--api-socket %s: the directory %s does not exist", path, dir);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return err_set(-EEXIST, "--api-socket %s: exists and is not a socket", path);
        /* A socket nobody listens on is left over from a process that died: reuse the name. */
        if (ctl_request(path, NULL, NULL) == 0)
            return err_set(-EADDRINUSE, "--api-socket %s: another tern is serving it", path);
        unlink(path);
    }
    struct ctl_server *srv = calloc(1, sizeof(*srv));
    if (!srv || !(srv->path = strdup(path))) {
        free(srv);
        return err_set(-ENOMEM, "out of memory");
    }
    srv->handler = handler;
    srv->opaque = opaque;
    uv_pipe_init(loop, &srv->listener, 0);
    srv->listener.data = srv;
    /* Created 0600 from the start: the socket controls the VM. */
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&srv->listener, path);
    umask(old);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&srv->listener, 8, ctl_on_connection);
    if (rc) {
        rc = err_set(rc, "--api-socket %s: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&srv->listener, ctl_listener_closed);
        return rc;
    }
    *out = srv;
    return 0;
}

void ctl_server_subscribe_current(struct ctl_server *srv)
{
    if (srv->current)
        srv->current->subscribed = true;
}

void ctl_server_broadcast(struct ctl_server *srv, json_t *event)
{
    if (!srv) {
        json_decref(event);
        return;
    }
    for (struct ctl_conn *c = srv->conns; c; c = c->next)
        if (c->subscribed)
            ctl_send(c, json_incref(event));
    json_decref(event);
}

void ctl_server_when_drained(struct ctl_server *srv, void (*cb)(void *opaque), void *opaque)
{
    if (!srv) {
        cb(opaque);
        return;
    }
    srv->drained = cb;
    srv->drained_opaque = opaque;
    ctl_check_drained(srv);
}

static void ctl_listener_closed(uv_handle_t *h)
{
    struct ctl_server *srv = h->data;
    srv->listener_closed = true;
    ctl_server_release(srv);
}

void ctl_server_close(struct ctl_server *srv)
{
    if (!srv)
        return;
    while (srv->conns)
        ctl_conn_close(srv->conns);
    if (srv->path)
        unlink(srv->path);
    uv_close((uv_handle_t *)&srv->listener, ctl_listener_closed);
}

struct ctl_client {
    int fd;
    char *path;
    char *buf;
    size_t len;
};

void ctl_client_close(struct ctl_client *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->path);
    free(c->buf);
    free(c);
}

static int ctl_connect(const char *path, int *fd_out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return err_set(-ENAMETOOLONG, "--api-socket %s: path too long", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_sys(-errno, "socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int rc = err_sys(-errno, "--api-socket %s: cannot connect", path);
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

int ctl_open(const char *path, json_t *request, struct ctl_client **out)
{
    struct ctl_client *c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path)) || !(c->buf = malloc(CTL_MAX_LINE))) {
        if (c)
            free(c->path);
        free(c);
        return err_set(-ENOMEM, "out of memory");
    }
    int rc = ctl_connect(path, &c->fd);
    if (rc) {
        free(c->path);
        free(c->buf);
        free(c);
        return rc;
    }
    char *text = json_dumps(request, JSON_COMPACT);
    if (!text) {
        ctl_client_close(c);
        return err_set(-ENOMEM, "out of memory");
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps leaves room for the NUL we replace */
    if (write(c->fd, text, n + 1) != (ssize_t)(n + 1))
        rc = err_sys(-errno, "--api-socket %s: write failed", path);
    free(text);
    if (rc) {
        ctl_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int ctl_read_message(struct ctl_client *c, int timeout_ms, json_t **msg)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            json_error_t jerr;
            *msg = json_loadb(c->buf, (size_t)(nl - c->buf), 0, &jerr);
            size_t used = (size_t)(nl - c->buf) + 1;
            memmove(c->buf, nl + 1, c->len - used);
            c->len -= used;
            if (!*msg || !json_is_object(*msg)) {
                json_decref(*msg);
                return err_set(-EPROTO, "--api-socket %s: bad reply: %s", c->path, jerr.text);
            }
            return 0;
        }
        if (c->len == CTL_MAX_LINE)
            return err_set(-E2BIG, "--api-socket %s: reply too long", c->path);
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int n = poll(&p, 1, timeout_ms);
        if (n < 0)
            return errno == EINTR ? -EINTR : err_sys(-errno, "poll");
        if (n == 0)
            return -ETIMEDOUT;
        ssize_t got = read(c->fd, c->buf + c->len, CTL_MAX_LINE - c->len);
        if (got < 0 && errno == EINTR)
            return -EINTR;
        if (got <= 0)
            return err_set(-EPIPE, "--api-socket %s: connection closed before a reply", c->path);
        c->len += (size_t)got;
    }
}

/* Blocking client: one request, one reply line. With request NULL it only tests connecting. */
int ctl_request(const char *path, json_t *request, json_t **reply)
{
    if (!request) {
        int fd;
        int rc = ctl_connect(path, &fd);
        if (!rc)
            close(fd);
        return rc;
    }
    struct ctl_client *c;
    int rc = ctl_open(path, request, &c);
    if (rc)
        return rc;
    do
        rc = ctl_read_message(c, -1, reply);
    while (rc == -EINTR);
    ctl_client_close(c);
    return rc;
}
