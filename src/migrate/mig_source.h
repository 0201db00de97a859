/* mig_source: the sending side of a live migration (URI tcp:HOST:PORT).
 *
 * mig_source_start() connects on the loop, then a worker thread runs the whole protocol:
 * handshake, a first pass over all RAM with dirty logging on, dirty passes until the remaining
 * set would go within the downtime limit at the measured bandwidth (throttling the vCPUs when the
 * guest dirties faster than the link carries), then pause, final pass, state, and the
 * destination's "ready" / our "go" / its "resumed". The VM is never run on both sides: a failure
 * before "go" resumes the source; a failure after it leaves the source paused and says so.
 *
 * Progress is read with mig_source_progress() at any time; on_done runs on the loop once, after
 * the worker has ended, with the final progress (phase COMPLETED, FAILED or CANCELLED).
 * While a migration runs the VM belongs to it: callers must not pause, resume or snapshot it.
 */
#ifndef TERN_MIG_SOURCE_H
#define TERN_MIG_SOURCE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "migrate/mig_tls.h"
#include "vm/vm.h"

#define MIG_DEFAULT_DOWNTIME_MS 300u
#define MIG_DEFAULT_IDLE_MS 30000u
#define MIG_MAX_CONNECTIONS 16u

struct mig_source_params {
    char host[256];
    char port[16];
    unsigned downtime_ms;
    uint64_t bandwidth;   /* bytes/s; 0: unlimited */
    int compress_level;   /* -1 none, 0..9 zlib */
    unsigned timeout_s;   /* 0: none */
    unsigned idle_ms;     /* 0: MIG_DEFAULT_IDLE_MS */
    unsigned connections; /* 1..MIG_MAX_CONNECTIONS (0: 1) */
    /* TLS credentials (mig_tls.h), or NULL for plain TCP. mig_source_start() takes them over,
     * also when it fails. */
    struct mig_tls_creds *tls;
};

enum mig_phase {
    MIG_PHASE_CONNECTING,
    MIG_PHASE_HANDSHAKE,
    MIG_PHASE_FIRST_PASS,
    MIG_PHASE_DIRTY_PASS,
    MIG_PHASE_STATE, /* paused: final pass and state */
    MIG_PHASE_ACK,   /* waiting for the destination to restore and resume */
    MIG_PHASE_COMPLETED,
    MIG_PHASE_FAILED,
    MIG_PHASE_CANCELLED,
};
const char *mig_phase_name(enum mig_phase phase);

struct mig_progress {
    enum mig_phase phase;
    unsigned pass;
    uint64_t bytes_sent;      /* stream bytes queued so far */
    uint64_t pages_sent;      /* RAM pages, all passes */
    uint64_t remaining_pages; /* dirty pages at the last sync */
    uint64_t dirty_rate;      /* bytes/s the guest dirtied over the last pass */
    uint64_t throughput;      /* bytes/s over the last pass */
    uint64_t eta_ms;
    unsigned throttle_pct;
    unsigned stream_minor; /* the format written: 1.stream_minor, from the first pass on */
    unsigned connections;  /* from the first pass on: carrying RAM, the main one included */
    char security[24];     /* "plain TCP", "TLS (X.509)" or "TLS (PSK)" */
    uint64_t zero_pages, raw_pages, zlib_pages;
    double total_ms;
    double downtime_ms;      /* source pause -> destination's "resumed" received */
    double dest_downtime_ms; /* destination's own figure: SWITCHOVER record -> resumed */
    bool source_paused;      /* after a failure: the source stays paused (see above) */
    char message[512];       /* why it failed */
    char uri[300];
};

struct mig_source;
typedef void (*mig_source_done_fn)(struct mig_source *src, void *opaque);

/* Parses "tcp:HOST:PORT" into params (host may be a [v6] literal). */
int mig_parse_tcp_uri(const char *what, const char *uri, char *host, size_t host_size, char *port,
                      size_t port_size);

int mig_source_start(uv_loop_t *loop, struct vm *vm, const struct mig_source_params *params,
                     mig_source_done_fn on_done, void *opaque, struct mig_source **out);
void mig_source_progress(struct mig_source *src, struct mig_progress *out);
/* Asks the migration to stop; it ends through on_done (phase CANCELLED, message why). */
void mig_source_cancel(struct mig_source *src, const char *why);
/* After on_done: releases everything. */
void mig_source_free(struct mig_source *src);

json_t *mig_progress_to_json(const struct mig_progress *p);

#endif
