#include "migrate/mig_lanes.h"

#include "err/err.h"
#include "migrate/mig_fault.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void mig_lanes_init(struct mig_lanes *l, unsigned count)
{
    memset(l, 0, sizeof(*l));
    l->count = count ? count : 1;
    for (unsigned i = 1; i < l->count; i++) {
        l->lane[i].index = i;
        l->lane[i].lanes = l;
    }
}

static int lane_sink(void *opaque, const void *buf, size_t len)
{
    struct mig_lane *lane = opaque;
    if (lane->fault_armed && lane->w.offset > (1u << 20)) {
        lane->fault_armed = false;
        mig_chan_fail(lane->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: further connection cut");
    }
    return mig_chan_write(lane->ch, buf, len);
}

int mig_lanes_begin(struct mig_lanes *l, struct vm *vm, struct mig_capture *main,
                    const struct mig_capture_options *opt, uint16_t minor)
{
    main->part = 0;
    main->parts = l->count;
    int rc = 0;
    for (unsigned i = 1; i < l->count && !rc; i++) {
        struct mig_lane *lane = &l->lane[i];
        mig_writer_init(&lane->w, lane_sink, lane);
        lane->w.minor = minor;
        lane->fault_armed = i == 1 && mig_fault_cut_at("lane");
        rc = mig_capture_lane_begin(&lane->cap, vm, &lane->w, opt);
        lane->cap.part = i;
        lane->cap.parts = l->count;
    }
    return rc;
}

static int lanes_sync(struct mig_writer *w, uint32_t pass, unsigned count)
{
    struct mig_ram_sync sync = {.pass = pass, .connections = count};
    return mig_write_record(w, MIG_REC_RAM_SYNC, 0, &sync, sizeof(sync));
}

static void *lane_pass_main(void *arg)
{
    struct mig_lane *lane = arg;
    pthread_setname_np(pthread_self(), "migrate-lane");
    struct mig_lanes *l = lane->lanes;
    lane->rc = mig_capture_ram_dirty(&lane->cap);
    if (!lane->rc)
        lane->rc = lanes_sync(&lane->w, l->pass, l->count);
    if (lane->rc)
        snprintf(lane->message, sizeof(lane->message), "connection %u: %s", lane->index + 1,
                 err_msg());
    return NULL;
}

int mig_lanes_pass(struct mig_lanes *l, struct mig_capture *main)
{
    if (l->count <= 1)
        return mig_capture_ram_dirty(main);
    l->pass++;
    main->pass = l->pass;
    for (unsigned i = 1; i < l->count; i++)
        l->lane[i].cap.pass = l->pass;
    unsigned started = 1;
    int rc = 0;
    for (; started < l->count; started++) {
        int e = pthread_create(&l->lane[started].thread, NULL, lane_pass_main, &l->lane[started]);
        if (e) {
            rc = err_sys(-e, "cannot start a thread for connection %u", started + 1);
            break;
        }
    }
    if (!rc)
        rc = mig_capture_ram_dirty(main);
    if (!rc)
        rc = lanes_sync(main->w, l->pass, l->count);
    if (rc) /* the lanes' threads must not wait on a destination that will not read */
        mig_lanes_fail(l, rc, err_msg());
    char message[400];
    snprintf(message, sizeof(message), "%s", rc ? err_msg() : "");
    for (unsigned i = 1; i < started; i++) {
        pthread_join(l->lane[i].thread, NULL);
        if (!rc && l->lane[i].rc) {
            rc = l->lane[i].rc;
            snprintf(message, sizeof(message), "%s", l->lane[i].message);
            mig_lanes_fail(l, rc, message);
        }
    }
    return rc ? err_set(rc, "%s", message) : 0;
}

int mig_lanes_end(struct mig_lanes *l)
{
    int rc = 0;
    for (unsigned i = 1; i < l->count && !rc; i++) {
        rc = mig_capture_lane_end(&l->lane[i].cap);
        if (!rc)
            rc = mig_chan_flush(l->lane[i].ch);
        if (rc)
            rc = err_context(rc, "connection %u", i + 1);
    }
    return rc;
}

uint64_t mig_lanes_bytes(const struct mig_lanes *l)
{
    uint64_t n = 0;
    for (unsigned i = 1; i < l->count; i++)
        n += l->lane[i].w.offset;
    return n;
}

void mig_lanes_add_stats(const struct mig_lanes *l, uint64_t *pages, struct mig_stats *st)
{
    for (unsigned i = 1; i < l->count; i++) {
        const struct mig_capture *c = &l->lane[i].cap;
        *pages += c->pages;
        st->zero_pages += c->stats.zero_pages;
        st->raw_pages += c->stats.raw_pages;
        st->zlib_pages += c->stats.zlib_pages;
        st->raw_bytes += c->stats.raw_bytes;
        st->zlib_bytes += c->stats.zlib_bytes;
    }
}

void mig_lanes_fail(struct mig_lanes *l, int code, const char *why)
{
    for (unsigned i = 1; i < l->count; i++)
        if (l->lane[i].ch)
            mig_chan_fail(l->lane[i].ch, code, why);
}

void mig_lanes_free(struct mig_lanes *l)
{
    for (unsigned i = 1; i < l->count; i++)
        mig_capture_end(&l->lane[i].cap);
}
