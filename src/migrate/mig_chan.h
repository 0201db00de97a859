/* mig_chan: a migration connection shared by a worker thread and the libuv loop.
 *
 * The loop owns the TCP stream: it writes what the worker queued and reads into a bounded inbound
 * queue. The worker runs the migration protocol as plain sequential code with blocking calls:
 * mig_chan_write() waits while more than MIG_CHAN_QUEUE_LIMIT bytes are queued (backpressure on a
 * slow link), mig_chan_read() waits for bytes; when the inbound queue is full the loop stops
 * reading until the worker drains it. Every wait ends on a failure (either side may fail the
 * channel, e.g. on cancel), on the peer closing, or when the channel has been idle (no byte in or
 * out) for idle_ms, and returns -errno with the reason as the thread's error message.
 *
 * Lifecycle: create on the loop thread with an accepted/connected stream, hand to one worker;
 * the loop calls mig_chan_close() when the worker is done with it (queued bytes are flushed
 * first); on_closed then runs on the loop and the channel is freed.
 */
#ifndef TERN_MIG_CHAN_H
#define TERN_MIG_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#define MIG_CHAN_QUEUE_LIMIT (8u << 20)
#define MIG_CHAN_MAX_LINE 65536u

struct mig_chan;
typedef void (*mig_chan_closed_fn)(void *opaque);

/* Takes over tcp (malloc'd, initialised on loop, connected; freed with the channel). peer names the
 * other side in messages. */
int mig_chan_create(uv_loop_t *loop, uv_tcp_t *tcp, const char *peer, unsigned idle_ms,
                    struct mig_chan **out);

/* Worker side. */
int mig_chan_write(struct mig_chan *ch, const void *buf, size_t len);
/* Blocks until every queued byte has been handed to the kernel. */
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
/* Fails the channel (any thread): every wait returns code with message. First failure wins. */
void mig_chan_fail(struct mig_chan *ch, int code, const char *message);
/* 0, or the failure code (its message becomes this thread's error). */
int mig_chan_error(struct mig_chan *ch);
/* Bytes handed to the kernel so far, and bytes received. */
uint64_t mig_chan_bytes_sent(struct mig_chan *ch);
uint64_t mig_chan_bytes_received(struct mig_chan *ch);
const char *mig_chan_peer(const struct mig_chan *ch);

/* Loop side: flushes, closes the stream and frees the channel, then calls on_closed. */
void mig_chan_close(struct mig_chan *ch, mig_chan_closed_fn on_closed, void *opaque);

#endif
