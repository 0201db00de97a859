/* mig_lanes: a live migration's RAM spread over several connections (--connections N), on the
 * source.
 *
 * The main connection carries the handshake, CONFIG, its share of RAM, the state and END; each
 * further connection (a lane) carries a stream of its own: a header, its share of every pass's
 * RAM, and END. Shares are blocks of MIG_CAPTURE_BLOCK_PAGES pages dealt round-robin, the deal
 * turning by one block each pass, so each thread takes dirty marks only from its own words of
 * the bitmap and a page's copies of two passes go on different connections. Every pass ends on
 * every connection with RAM_SYNC naming it; the destination applies nothing of pass p+1 before
 * every connection's RAM_SYNC of pass p (mig_barrier.h), which is how a later copy of a page
 * always wins. The main connection's share is sent on the caller's thread, the lanes' on one thread
 * each, so that copying, CRC and sending run in parallel.
 */
#ifndef TERN_MIG_LANES_H
#define TERN_MIG_LANES_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migrate/mig_capture.h"
#include "migrate/mig_chan.h"
#include "migrate/mig_stream.h"

#define MIG_LANES_MAX 16u

struct mig_lane {
    struct mig_chan *ch; /* set by the caller before mig_lanes_begin */
    struct mig_writer w;
    struct mig_capture cap;
    unsigned index; /* 1.. (0 is the main connection) */
    struct mig_lanes *lanes;
    pthread_t thread;
    int rc;
    char message[400];
    bool fault_armed; /* TERN_MIGRATE_FAULT=cut@lane: cut lane 1 one MiB into the first pass */
};

struct mig_lanes {
    unsigned count; /* connections carrying RAM, the main one included */
    struct mig_lane lane[MIG_LANES_MAX];
    uint32_t pass; /* the last pass sent */
};

/* count connections (1: none further). */
void mig_lanes_init(struct mig_lanes *l, unsigned count);
/* Each lane's header, and the main capture told its part. */
int mig_lanes_begin(struct mig_lanes *l, struct vm *vm, struct mig_capture *main,
                    const struct mig_capture_options *opt, uint16_t minor);
/* One pass of the marked pages: the main capture's share here, each lane's on its thread, then
 * RAM_SYNC on every connection. With one connection, just the pass. */
int mig_lanes_pass(struct mig_lanes *l, struct mig_capture *main);
/* The lanes' END, flushed (after the final pass). */
int mig_lanes_end(struct mig_lanes *l);
/* Stream bytes, pages and kinds of pages over the lanes (the main capture not included). */
uint64_t mig_lanes_bytes(const struct mig_lanes *l);
void mig_lanes_add_stats(const struct mig_lanes *l, uint64_t *pages, struct mig_stats *st);
/* Fails every lane's connection (any thread). */
void mig_lanes_fail(struct mig_lanes *l, int code, const char *why);
void mig_lanes_free(struct mig_lanes *l);

#endif
