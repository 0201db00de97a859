/* mig_capture: a VM as a stream — header, CONFIG, RAM, then each record of the table
 * (mig_records.h) in its order, then END.
 *
 * The state is captured while the VM is paused (vm_pause: devices quiesced, every vCPU out of
 * KVM_RUN with pending I/O completed): vm_state_save reads the KVM state in KVM's order, then
 * each row writes its part in the stream's order.
 */
#ifndef TERN_MIG_CAPTURE_H
#define TERN_MIG_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migrate/mig_stream.h"
#include "vm/vm.h"

/* compress_level: -1 for raw pages, 0..9 for zlib. live: the VM runs while RAM is sent, so
 * raw pages are copied before their CRC is taken. */
struct mig_capture_options {
    int compress_level;
    bool live;
};

struct mig_stats {
    uint64_t zero_pages, raw_pages, zlib_pages;
    uint64_t raw_bytes, zlib_bytes; /* payload bytes written for RAW / ZLIB records */
};

/* A whole stream in one go (snapshots). */
int mig_capture(struct vm *vm, struct mig_writer *w, const struct mig_capture_options *opt,
                struct mig_stats *stats);

/* The same stream in steps, for live migration: begin (header, CONFIG), RAM passes while the VM
 * runs, then the state while it is paused. The context counts what END must announce. */
struct mig_capture {
    struct vm *vm;
    struct mig_writer *w;
    struct mig_capture_options opt;
    struct mig_stats stats;
    uint64_t pages;          /* pages covered by RAM records so far */
    uint32_t records_before; /* writer's count before the header */
    uint8_t *zbuf, *copy;
    size_t zcap;
    /* A pass spread over several connections: this capture sends part (0..parts-1) of pass
     * `pass`, the blocks of MIG_CAPTURE_BLOCK_PAGES pages whose number plus pass is part modulo
     * parts. The deal turns by one block every pass, so a page's copies of two passes travel on
     * different connections: their order is the pass barrier's to keep (mig_barrier.h). */
    unsigned part, parts, pass;
};
#define MIG_CAPTURE_BLOCK_PAGES MIG_RAM_MAX_PAGES_PER_RECORD
int mig_capture_begin(struct mig_capture *c, struct vm *vm, struct mig_writer *w,
                      const struct mig_capture_options *opt);
/* Every page of guest RAM. */
int mig_capture_ram_all(struct mig_capture *c);
/* Every page marked in the memory's dirty bitmap (clearing the marks), or this capture's part of
 * them; c->pages counts what went out. */
int mig_capture_ram_dirty(struct mig_capture *c);
/* The context, its buffers and the stream's header: a further connection's stream begins so
 * (mig_capture_begin adds CONFIG); the rest is RAM passes, RAM_SYNC and mig_capture_lane_end(),
 * the END record, which mig_capture_state also ends with. */
int mig_capture_lane_begin(struct mig_capture *c, struct vm *vm, struct mig_writer *w,
                           const struct mig_capture_options *opt);
int mig_capture_lane_end(struct mig_capture *c);
/* Devices, VM, vCPUs, clock and END. The VM must be paused. */
int mig_capture_state(struct mig_capture *c);
void mig_capture_end(struct mig_capture *c);

#endif
