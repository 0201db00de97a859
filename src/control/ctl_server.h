/* ctl_server: the JSON control socket (a Unix socket, mode 0600) on the libuv loop.
 *
 * Requests and replies are one JSON object per line. A request is {"command": NAME, ...}; the
 * reply is {"return": {...}} or {"error": {"message": "..."}}. Bad JSON, a missing command or a
 * line over CTL_MAX_LINE bytes gets an error reply and the connection keeps being served. The
 * handler runs on the loop thread.
 */
#ifndef TERN_CTL_SERVER_H
#define TERN_CTL_SERVER_H

#include <jansson.h>
#include <uv.h>

#define CTL_MAX_LINE 65536
#define CTL_MAX_QUEUED                                                                             \
    (1u << 20) /* reply bytes one client may leave unread before it is not                         \
                  read from (four times that: dropped) */

/* Returns the "return" object (a new reference), or NULL with a message written to err. */
typedef json_t *(*ctl_handler_fn)(void *opaque, const char *command, json_t *request, char *err,
                                  size_t err_size);

struct ctl_server;

int ctl_server_start(uv_loop_t *loop, const char *path, ctl_handler_fn handler, void *opaque,
                     struct ctl_server **out);
/* Closes the listener and every connection, and removes the socket file. */
void ctl_server_close(struct ctl_server *srv);

/* Called from a handler: the connection being served also gets every later broadcast, as
 * {"event": ...} lines, until it closes. */
void ctl_server_subscribe_current(struct ctl_server *srv);
/* Sends event (a reference taken) to every subscribed connection. */
void ctl_server_broadcast(struct ctl_server *srv, json_t *event);
/* Calls cb once everything written so far has gone out (at once when nothing is pending). */
void ctl_server_when_drained(struct ctl_server *srv, void (*cb)(void *opaque), void *opaque);

/* Client side: sends one request on a new connection and returns the parsed reply. */
int ctl_request(const char *path, json_t *request, json_t **reply);

/* Client side, for commands that stream events: connect and send a request, then read lines
 * (each a JSON object) until the caller is done. timeout_ms < 0 waits for ever; -ETIMEDOUT when
 * it passes, -EINTR when a signal arrived. */
struct ctl_client;
int ctl_open(const char *path, json_t *request, struct ctl_client **out);
int ctl_read_message(struct ctl_client *c, int timeout_ms, json_t **msg);
void ctl_client_close(struct ctl_client *c);

#endif
