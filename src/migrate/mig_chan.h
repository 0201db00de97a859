/* mig_chan: one migration connection, driven by the one worker thread that runs the protocol.
 *
 * The worker owns the socket (non-blocking) and calls send/recv itself: bytes go from guest RAM to
 * the kernel and from the kernel to their place with no queue and no other thread in between.
 * Small writes gather in a buffer that goes out with the next large one (one sendmsg) or at
 * mig_chan_flush(); large reads land straight in the caller's buffer. Every wait is a poll of at
 * most 100 ms that ends on a failure (any thread may fail the channel, e.g. on cancel, and the
 * poll wakes at once), on the peer closing, on the deadline, or when the channel has been idle
 * (no byte in or out) for idle_ms; it returns -errno with the reason as the thread's error.
 *
 * With mig_chan_start_tls() every byte after it goes through a TLS 1.3 session (mig_tls.h).
 *
 * Lifecycle: create on the loop thread with a connected socket, hand to one worker; the loop
 * calls mig_chan_close() when the worker is done with it; on_closed then runs on the loop (on a
 * later turn) and the channel is freed.
 */
#ifndef TERN_MIG_CHAN_H
#define TERN_MIG_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "migrate/mig_tls.h"

#define MIG_CHAN_MAX_LINE 65536u

struct mig_chan;
typedef void (*mig_chan_closed_fn)(void *opaque);

/* Takes over fd (a connected stream socket; closed with the channel, also on failure). peer names
 * the other side in messages. */
int mig_chan_create(uv_loop_t *loop, int fd, const char *peer, unsigned idle_ms,
                    struct mig_chan **out);

/* Worker side. */
/* Runs the TLS handshake as client (host: the name the source dialled) or server, verifies the
 * peer (mig_tls.h) and from then on encrypts everything. Errors name the peer and why. */
int mig_chan_start_tls(struct mig_chan *ch, const struct mig_tls_creds *creds, const char *host);
/* The first byte the peer sent, left unread (to tell TLS from plain text). */
int mig_chan_peek(struct mig_chan *ch, uint8_t *byte);
int mig_chan_write(struct mig_chan *ch, const void *buf, size_t len);
/* Blocks until every buffered byte has been handed to the kernel. */
int mig_chan_flush(struct mig_chan *ch);
int mig_chan_read(struct mig_chan *ch, void *buf, size_t len);
/* Reads one '\n'-terminated line (without it, NUL-terminated); longer than max-1 is an error. */
int mig_chan_read_line(struct mig_chan *ch, char *buf, size_t max);
/* One JSON object as one line (msg's reference is taken), flushed. */
int mig_chan_write_json(struct mig_chan *ch, json_t *msg);
/* Reads one line that must be a JSON object; errors name the peer and what was awaited. */
int mig_chan_read_json(struct mig_chan *ch, const char *what, json_t **out);
/* Stream adapters: mig_sink_fn / mig_source_fn over the channel. */
int mig_chan_sink(void *ch, const void *buf, size_t len);
int mig_chan_source(void *ch, void *buf, size_t len);
/* Any thread: once ms milliseconds from now have passed, every wait fails with -ETIMEDOUT,
 * "PEER: WHAT not done within MS ms", however many bytes trickle in meanwhile (the idle timeout
 * alone would let one byte at a time hold it open). ms 0 lifts the deadline. */
void mig_chan_set_deadline(struct mig_chan *ch, unsigned ms, const char *what);
/* Worker: paces what it sends to bytes_per_s (0: as fast as it goes), in naps of at most 20 ms
 * that a failure ends. Time spent not sending is no credit for a later burst. */
void mig_chan_set_rate(struct mig_chan *ch, uint64_t bytes_per_s);
/* Fails the channel (any thread): every wait returns code with message. First failure wins. */
void mig_chan_fail(struct mig_chan *ch, int code, const char *message);
/* 0, or the failure code (its message becomes this thread's error). */
int mig_chan_error(struct mig_chan *ch);
/* Bytes handed to the kernel so far, and bytes received (TLS framing included). */
uint64_t mig_chan_bytes_sent(struct mig_chan *ch);
uint64_t mig_chan_bytes_received(struct mig_chan *ch);
const char *mig_chan_peer(const struct mig_chan *ch);
/* What protects the channel, for messages: "TLS (X.509)", "TLS (PSK)" or "plain TCP". */
const char *mig_chan_security(const struct mig_chan *ch);

/* Loop side: closes the socket and frees the channel, then calls on_closed. */
void mig_chan_close(struct mig_chan *ch, mig_chan_closed_fn on_closed, void *opaque);

#endif
