#include "migrate/mig_dest.h"

#include "clock/clock.h"
#include "err/err.h"
#include "migrate/mig_barrier.h"
#include "migrate/mig_chan.h"
#include "migrate/mig_fault.h"
#include "migrate/mig_handshake.h"
#include "migrate/mig_loopcall.h"
#include "migrate/mig_source.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* A connection: a handshake, on a thread of its own, and for the one that completes it first
 * (the winner) the whole migration. */
struct dst_peer {
    struct mig_dest *d;
    struct mig_chan *ch;
    pthread_t thread;
    bool started;
    bool done;        /* its thread ended (d->lock) */
    bool counted;     /* its close is one the finishing destination waits for */
    unsigned lane;    /* >0: it joined the winner's migration as its connection number lane+1 */
    char session[33]; /* the token its handshake's answer gave, for further connections */
    unsigned lanes;   /* further connections its source said it opens */
    double accept_ms;
    struct dst_peer *next;
};

struct mig_dest {
    uv_loop_t *loop;
    struct mig_dest_params params;
    uv_tcp_t listener;
    uv_async_t async;          /* a peer's thread ended */
    struct mig_loopcall calls; /* the winner's calls onto the loop */
    bool finishing;
    int open_handles;

    pthread_mutex_t lock;
    struct dst_peer *peers; /* every connection not yet closed, the winner among them */
    unsigned handshaking;   /* peers still in their handshake */
    struct dst_peer *winner;
    bool over;           /* the winner's thread ended: the migration is over */
    pthread_cond_t cond; /* lanes joined, the VM built */

    /* A migration over several connections: the winner's source opens `lanes` more, which
     * join with its session token; each carries a share of every pass (mig_barrier.h). */
    unsigned lanes, lanes_joined, lanes_accepted; /* lanes_accepted: the loop's */
    bool lane_taken[MIG_BARRIER_MAX];
    char session[33];
    bool vm_ready;
    struct mig_barrier barrier;
    uint64_t lane_bytes;
    int rc;
    char message[512];

    /* The winner's thread only (and the loop once it is over). */
    struct mig_config cfg;
    struct vm *vm;
    double accept_ms, resumed_ms, switchover_ms;
    struct mig_restore_info restored;
    uint64_t bytes;
};

static int dst_create_vm(void *arg)
{
    struct mig_dest *d = arg;
    int rc = d->params.create_vm(d->params.opaque, &d->cfg, &d->vm);
    pthread_mutex_lock(&d->lock);
    d->vm_ready = rc == 0;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int dst_start_vm(void *arg)
{
    struct mig_dest *d = arg;
    int rc = d->params.start_vm(d->params.opaque);
    d->resumed_ms = clock_now_ms();
    return rc;
}

/* ---- a peer ---------------------------------------------------------------------------- */

static int dst_caps(struct mig_dest *d, struct mig_hs_caps *caps)
{
    memset(caps, 0, sizeof(*caps));
    caps->stream_major = MIG_VERSION_MAJOR;
    caps->stream_minor = MIG_VERSION_MINOR;
    caps->mem_limit = d->params.mem_given ? d->params.mem_given : vm_host_ram_bytes();
    caps->mem_exact = d->params.mem_given != 0;
    caps->max_cpus = d->params.cpus_given ? d->params.cpus_given : VM_MAX_CPUS;
    caps->cpus_exact = d->params.cpus_given != 0;
    struct vm_host_offer offer;
    int rc = vm_host_offer(d->params.hidden_caps, &offer);
    if (rc)
        return rc;
    caps->xsave_size = offer.xsave_size;
    caps->nested_max = offer.nested.nested_max;
    caps->evmcs = offer.nested.evmcs;
    mig_hs_features(offer.cpuid, caps->features);
    caps->hyperv_known = true;
    caps->hyperv_set = offer.hyperv_set;
    caps->tsc_khz = offer.tsc_khz;
    caps->tsc_scaling = offer.tsc_scaling;
    caps->vmx_known = true;
    for (unsigned i = 0; offer.vmx && i < offer.vmx->nmsrs && i < MIG_HS_MAX_VMX_MSRS; i++)
        caps->vmx[caps->vmx_count++] =
            (struct mig_hs_msr){offer.vmx->entries[i].index, offer.vmx->entries[i].data};
    vm_host_offer_free(&offer);
    /* tern sets the hypervisor bit itself (vcpu_cpuid). */
    caps->features[0] |= 1u << 31;
    caps->connections_max = MIG_HS_MAX_CONNECTIONS;
    caps->disks_given = d->params.disk_count;
    caps->nets_given = d->params.net_count;
    return 0;
}

/* Each disk the hello names is an image of its size here (at the path --disk gave, if any),
 * checked before any RAM moves; the reason names the disk. */
static int dst_check_disks(struct mig_dest *d, const struct mig_hs_need *need, char *why,
                           size_t why_size)
{
    for (unsigned i = 0; i < need->disks; i++) {
        const char *path = i < d->params.disk_count ? d->params.disks[i].path : need->disk[i].path;
        char what[DEV_DISK_PATH_MAX + 32];
        snprintf(what, sizeof(what), "disk %u (%s)", i, path);
        if (dev_disk_probe(path, what, need->disk[i].size)) {
            snprintf(why, why_size, "%s", err_msg());
            return -EINVAL;
        }
    }
    return 0;
}

/* TLS first, when this destination has credentials: the peer is authenticated before it hears
 * anything about this host (its memory, its CPU). A first byte of 0x16 is a TLS handshake
 * record; a plain-text tern begins with '{'. */
static int dst_secure(struct mig_dest *d, struct mig_chan *ch)
{
    uint8_t first;
    int rc = mig_chan_peek(ch, &first);
    if (rc)
        return err_context(rc, "waiting for the source's first byte");
    bool tls = first == 0x16;
    if (tls == (d->params.tls != NULL))
        return tls ? mig_chan_start_tls(ch, d->params.tls, NULL) : 0;
    /* Said in plain text: a TLS source cannot read it, but a person with nc can. */
    const char *why = tls ? "this destination takes no TLS (it has no --tls-creds or --tls-psk)"
                          : "this destination takes only TLS connections (migrate with "
                            "--tls-creds or --tls-psk)";
    mig_chan_write_json(ch, json_pack("{s:b,s:s}", "accept", 0, "reason", why));
    return err_set(-EACCES, "%s: refused: %s", mig_chan_peer(ch), why);
}

/* The first line: a JSON object (hello or join), or NULL for anything else. */
static int dst_first_line(struct mig_chan *ch, json_t **out)
{
    char *line = malloc(MIG_CHAN_MAX_LINE);
    if (!line)
        return err_set(-ENOMEM, "out of memory");
    int rc = mig_chan_read_line(ch, line, MIG_CHAN_MAX_LINE);
    *out = rc ? NULL : json_loads(line, 0, NULL);
    free(line);
    if (*out && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
    }
    return rc ? err_context(rc, "waiting for the source's handshake") : 0;
}

/* A session token for the connections a source adds: random, so that no other peer can join. */
static void dst_new_session(char out[33])
{
    uint8_t b[16] = {0};
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        memset(b, 0, sizeof(b)); /* never short for 16 bytes; a zero token joins nothing anyway */
    for (unsigned i = 0; i < sizeof(b); i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* hello (already read), our answer, start: the whole of it within MIG_DEST_HANDSHAKE_MS. */
static int dst_handshake(struct mig_dest *d, struct dst_peer *p, json_t *hello,
                         struct mig_hs_need *need)
{
    struct mig_chan *ch = p->ch;
    struct mig_hs_caps caps;
    char why[512] = "";
    int rc = 0;
    if (mig_hs_need_from_json(json_object_get(hello, "hello"), need)) {
        snprintf(why, sizeof(why), "the handshake is not tern's migration protocol %d: %s",
                 MIG_HS_PROTOCOL, err_msg());
        rc = -EPROTO;
    }
    if (!rc && (rc = dst_caps(d, &caps)))
        snprintf(why, sizeof(why), "%s", err_msg());
    if (!rc)
        rc = mig_hs_check(need, &caps, why, sizeof(why));
    if (!rc)
        rc = dst_check_disks(d, need, why, sizeof(why));
    if (mig_fault_cut_at("handshake"))
        mig_chan_fail(ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut at handshake");
    json_t *reply = rc ? json_pack("{s:b,s:s}", "accept", 0, "reason", why)
                       : json_pack("{s:b,s:o}", "accept", 1, "caps", mig_hs_caps_to_json(&caps));
    if (!rc && need->connections > 1) {
        p->lanes = need->connections - 1;
        dst_new_session(p->session);
        json_object_set_new(reply, "session", json_string(p->session));
    }
    int wrc = mig_chan_write_json(ch, reply);
    if (rc)
        return err_set(rc, "refused the migration: %s", why);
    if (wrc)
        return wrc;
    json_t *start;
    if ((rc = mig_chan_read_json(ch, "start message", &start)))
        return rc;
    const char *abort = json_string_value(json_object_get(start, "abort"));
    if (!json_is_true(json_object_get(start, "start")))
        rc = err_set(-ECONNABORTED, "the source gave up the migration: %s",
                     abort ? abort : "no reason given");
    json_decref(start);
    return rc;
}

/* ---- further connections (lanes) --------------------------------------------------------- */

/* Waits (100 ms at a time) until ready(d) holds, the barrier fails, or the migration is over. */
static int dst_wait_for(struct mig_dest *d, bool (*ready)(const struct mig_dest *), unsigned ms,
                        const char *what)
{
    uint64_t end = clock_now_ns() + (uint64_t)ms * 1000000ull;
    int rc = 0;
    pthread_mutex_lock(&d->lock);
    while (!ready(d) && !rc) {
        struct timespec ts = clock_deadline(100 * 1000000ull);
        pthread_cond_timedwait(&d->cond, &d->lock, &ts);
        if (d->barrier.error || d->over || d->finishing)
            rc = err_set(-ECANCELED, "the migration ended while waiting for %s", what);
        else if (!ready(d) && clock_now_ns() > end)
            rc = err_set(-ETIMEDOUT, "%s not done within %u ms", what, ms);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static bool dst_lanes_joined(const struct mig_dest *d)
{
    return d->lanes_joined == d->lanes;
}

static bool dst_has_winner(const struct mig_dest *d)
{
    return d->winner != NULL;
}

static bool dst_vm_ready(const struct mig_dest *d)
{
    return d->vm_ready;
}

/* Any stream's RAM_SYNC: the pass is complete once every connection has reached it. */
static int dst_sync_reached(void *opaque, unsigned party, const struct mig_ram_sync *sync)
{
    struct mig_dest *d = opaque;
    if (sync->connections != d->barrier.parties)
        return err_set(-EPROTO, "it names %u connections; the handshake said %u", sync->connections,
                       d->barrier.parties);
    return mig_barrier_wait(&d->barrier, party, sync->pass);
}

/* A lane's failure ends the whole migration: the winner's reader and the other lanes stop. */
static void dst_lane_failed(struct mig_dest *d, int rc, const char *message)
{
    mig_barrier_fail(&d->barrier, rc, message);
    pthread_mutex_lock(&d->lock);
    struct dst_peer *winner = d->winner;
    pthread_mutex_unlock(&d->lock);
    if (winner)
        mig_chan_fail(winner->ch, rc, message);
}

/* {"join": session, "lane": n} from a further connection of the migration under way. */
static int dst_join(struct mig_dest *d, struct dst_peer *p, json_t *join)
{
    const char *session = json_string_value(json_object_get(join, "join"));
    json_int_t lane = json_integer_value(json_object_get(join, "lane"));
    /* The source opens its further connections right after "start": the first one may come
     * before the main connection's thread has read it. Half the handshake's time, so that the
     * refusal still goes out within it. */
    int rc = dst_wait_for(d, dst_has_winner, MIG_DEST_HANDSHAKE_MS / 2, "the migration to start");
    pthread_mutex_lock(&d->lock);
    bool ok = !rc && d->winner && d->lanes && session && !strcmp(session, d->session) &&
              lane >= 1 && lane <= (json_int_t)d->lanes && !d->lane_taken[lane];
    if (ok) {
        d->lane_taken[lane] = true;
        d->lanes_joined++;
        d->handshaking--; /* its handshake is over */
        p->lane = (unsigned)lane;
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
    if (!ok) {
        mig_chan_write_json(p->ch, json_pack("{s:b,s:s}", "joined", 0, "reason",
                                             "not a connection of the migration under way"));
        return err_set(-EACCES, "%s: a further connection, but of no migration under way",
                       mig_chan_peer(p->ch));
    }
    mig_chan_set_deadline(p->ch, 0, NULL);
    return mig_chan_write_json(p->ch, json_pack("{s:b}", "joined", 1));
}

/* A joined lane's stream, into the VM the winner builds. */
static int dst_lane_receive(struct mig_dest *d, struct dst_peer *p)
{
    int rc = dst_wait_for(d, dst_vm_ready, UINT32_MAX / 2, "the VM");
    struct mig_reader r;
    mig_reader_init(&r, mig_chan_source, p->ch);
    struct mig_sync sync = {.reached = dst_sync_reached, .opaque = d, .party = p->lane};
    struct mig_restore_info info = {0};
    if (!rc)
        rc = mig_restore_ram_stream(d->vm, &r, &d->cfg, &sync, &info);
    mig_reader_free(&r);
    /* Counted before arriving at END: the winner adds them up once every lane has. */
    __atomic_add_fetch(&d->lane_bytes, mig_chan_bytes_received(p->ch), __ATOMIC_RELAXED);
    if (!rc)
        rc = mig_barrier_arrive(&d->barrier, p->lane, MIG_BARRIER_END);
    if (rc) {
        char message[400];
        snprintf(message, sizeof(message), "connection %u: %s", p->lane + 1, err_msg());
        dst_lane_failed(d, rc, message);
        return err_set(rc, "%s", message);
    }
    return 0;
}

/* The winner's migration, from the stream's first byte to "resumed". */
static int dst_receive(struct mig_dest *d, struct mig_chan *ch, const struct mig_hs_need *need)
{
    struct mig_reader r;
    mig_reader_init(&r, mig_chan_source, ch);
    int rc;
    rc = mig_read_config(&r, &d->cfg);
    if (!rc && (d->cfg.mem_size != need->mem_size || d->cfg.cpu_count != need->cpus))
        rc = err_set(-EPROTO, "the stream's CONFIG (%llu MiB, %u vCPUs) differs from the handshake",
                     (unsigned long long)(d->cfg.mem_size >> 20), d->cfg.cpu_count);
    if (!rc)
        rc = mig_loopcall_run(&d->calls, dst_create_vm, d);
    struct mig_restore_info info = {0};
    struct mig_sync sync = {.reached = dst_sync_reached, .opaque = d, .party = 0};
    if (!rc) {
        if (mig_fault_cut_at("first-pass"))
            mig_chan_fail(ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut");
        rc = mig_restore(d->vm, &r, &d->cfg, d->lanes ? &sync : NULL, &info);
        /* Every lane's stream read to its END before this side says ready. */
        if (!rc && d->lanes)
            rc = mig_barrier_wait(&d->barrier, 0, MIG_BARRIER_END);
        d->switchover_ms = info.switchover_ns / 1e6;
        d->restored = info;
        if (rc) {
            char why[400];
            snprintf(why, sizeof(why), "%s", err_msg());
            if (mig_chan_error(ch) == 0)
                mig_chan_write_json(ch, json_pack("{s:b,s:s}", "ready", 0, "reason", why));
            err_set(rc, "%s", why);
        }
    }
    mig_reader_free(&r);
    if (rc)
        return rc;
    mig_fault_cut_at("restored"); /* "kill@restored": dies with the state restored, unsaid */
    if ((rc = mig_chan_write_json(ch, json_pack("{s:b}", "ready", 1))))
        return rc;
    mig_fault_cut_at("ready"); /* "kill@ready": dies after saying ready, before go */
    json_t *go;
    if ((rc = mig_chan_read_json(ch, "go message", &go)))
        return rc;
    bool ok = json_is_true(json_object_get(go, "go"));
    json_decref(go);
    if (!ok)
        return err_set(-EPROTO, "the source did not say go");
    rc = mig_loopcall_run(&d->calls, dst_start_vm, d);
    if (rc) {
        char why[400];
        snprintf(why, sizeof(why), "%s", err_msg());
        mig_chan_write_json(ch, json_pack("{s:b,s:s}", "resumed", 0, "reason", why));
        return err_set(rc, "%s", why);
    }
    mig_fault_cut_at("resumed"); /* "kill@resumed": dies running the guest, before the ack */
    double downtime = d->switchover_ms ? d->resumed_ms - d->switchover_ms : 0;
    rc = mig_chan_write_json(ch, json_pack("{s:b,s:f}", "resumed", 1, "downtime_ms", downtime));
    /* The guest runs here now whatever happens to the ack: a lost ack leaves the source
     * paused, which is its rule, so the migration counts as done on this side. */
    if (rc)
        err_warn("the source did not get the acknowledgement: %s", err_msg());
    return 0;
}

/* The first peer through its handshake takes the destination; any later one is told so by the
 * connection closing (its source resumes its VM). */
static int dst_claim(struct mig_dest *d, struct dst_peer *p)
{
    pthread_mutex_lock(&d->lock);
    bool free_to_take = !d->winner && !d->finishing;
    if (free_to_take) {
        d->winner = p;
        d->accept_ms = p->accept_ms;
        d->handshaking--; /* its handshake is over */
        d->lanes = p->lanes;
        memcpy(d->session, p->session, sizeof(d->session));
        /* Before any lane can join: they meet at it from their first pass. */
        if (d->lanes)
            mig_barrier_init(&d->barrier, d->lanes + 1);
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
    if (!free_to_take)
        return err_set(-EBUSY, "%s: another source took this destination first",
                       mig_chan_peer(p->ch));
    return 0;
}

/* The winner: every lane joined, then the stream. */
static int dst_win(struct mig_dest *d, struct dst_peer *p, const struct mig_hs_need *need)
{
    mig_chan_set_deadline(p->ch, 0, NULL);
    int rc = 0;
    if (d->lanes)
        rc = dst_wait_for(d, dst_lanes_joined, MIG_DEST_HANDSHAKE_MS, "the further connections");
    if (!rc)
        rc = dst_receive(d, p->ch, need);
    d->bytes = mig_chan_bytes_received(p->ch) + __atomic_load_n(&d->lane_bytes, __ATOMIC_RELAXED);
    return rc;
}

static void *dst_peer_main(void *arg)
{
    struct dst_peer *p = arg;
    struct mig_dest *d = p->d;
    pthread_setname_np(pthread_self(), "migrate-in");
    struct mig_hs_need need;
    json_t *first = NULL;
    int rc = dst_secure(d, p->ch);
    if (!rc)
        rc = dst_first_line(p->ch, &first);
    bool won = false;
    if (!rc && json_object_get(first, "join")) {
        if (!(rc = dst_join(d, p, first)))
            rc = dst_lane_receive(d, p);
    } else if (!rc) {
        rc = dst_handshake(d, p, first, &need);
        won = !rc && !(rc = dst_claim(d, p));
        if (won)
            rc = dst_win(d, p, &need);
    }
    json_decref(first);
    char message[512];
    snprintf(message, sizeof(message), "%s", rc ? err_msg() : "");
    if (rc)
        mig_chan_fail(p->ch, rc, message);
    if (rc && won && d->lanes)
        mig_barrier_fail(&d->barrier, rc, message);
    pthread_mutex_lock(&d->lock);
    if (!won && !p->lane)
        err_warn("%s%s", message, d->winner ? "" : "; still waiting for a migration");
    p->done = true;
    d->handshaking -= !won && !p->lane;
    if (won) {
        d->over = true;
        d->rc = rc;
        snprintf(d->message, sizeof(d->message), "%s", message);
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
    uv_async_send(&d->async);
    return NULL;
}

/* ---- loop side ------------------------------------------------------------------------- */

static void dst_one_closed(struct mig_dest *d)
{
    if (--d->open_handles)
        return;
    if (d->params.on_done)
        d->params.on_done(d->params.opaque, d->rc == 0, d->message);
    else
        mig_dest_free(d); /* listening failed: nobody holds it */
}

static void dst_handle_closed(uv_handle_t *h)
{
    dst_one_closed(h->data);
}

static void dst_peer_closed(void *opaque)
{
    struct dst_peer *p = opaque;
    struct mig_dest *d = p->d;
    bool counted = p->counted;
    free(p);
    if (counted)
        dst_one_closed(d);
}

/* Joins a peer's ended thread and closes its connection (the peer is freed once it is); while
 * the destination finishes, the close counts among the handles it waits for. */
static void dst_peer_close(struct mig_dest *d, struct dst_peer *p)
{
    if (p->started)
        pthread_join(p->thread, NULL);
    p->counted = d->finishing;
    if (p->counted)
        d->open_handles++;
    mig_chan_close(p->ch, dst_peer_closed, p);
}

/* Closes the peers whose threads ended, but the winner's (the migration's end closes it). */
static void dst_reap(struct mig_dest *d)
{
    for (struct dst_peer **pp = &d->peers; *pp;) {
        struct dst_peer *p = *pp;
        pthread_mutex_lock(&d->lock);
        bool done = p->done && p != d->winner;
        pthread_mutex_unlock(&d->lock);
        if (!done) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        dst_peer_close(d, p);
    }
}

/* Ends the destination: no winner runs any more (it ended, or none came), so every thread left
 * is a peer's handshake, which the failed connection ends at once. */
static void dst_finish(struct mig_dest *d)
{
    pthread_mutex_lock(&d->lock);
    d->finishing = true;
    pthread_mutex_unlock(&d->lock);
    for (struct dst_peer *p = d->peers; p; p = p->next)
        mig_chan_fail(p->ch, -ECANCELED, "the destination is done");
    if (d->lanes)
        mig_barrier_fail(&d->barrier, -ECANCELED, "the destination is done");
    d->open_handles = 3;
    while (d->peers) {
        struct dst_peer *p = d->peers;
        d->peers = p->next;
        dst_peer_close(d, p);
    }
    uv_close((uv_handle_t *)&d->listener, dst_handle_closed);
    uv_close((uv_handle_t *)&d->async, dst_handle_closed);
    mig_loopcall_close(&d->calls, dst_handle_closed);
}

static void dst_on_async(uv_async_t *a)
{
    struct mig_dest *d = a->data;
    pthread_mutex_lock(&d->lock);
    bool over = d->over, finishing = d->finishing;
    pthread_mutex_unlock(&d->lock);
    if (finishing)
        return;
    dst_reap(d);
    if (over)
        dst_finish(d);
}

struct dst_refusal {
    uv_tcp_t tcp;
    uv_write_t req;
    char line[160];
};

static void dst_refusal_closed(uv_handle_t *h)
{
    free(h->data);
}

static void dst_refusal_written(uv_write_t *req, int status)
{
    (void)status;
    struct dst_refusal *r = req->data;
    uv_close((uv_handle_t *)&r->tcp, dst_refusal_closed);
}

/* A connection this destination will not serve: told why, then closed. */
static void dst_refuse(struct mig_dest *d, uv_stream_t *listener, const char *reason)
{
    struct dst_refusal *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    uv_tcp_init(d->loop, &r->tcp);
    r->tcp.data = r;
    r->req.data = r;
    if (uv_accept(listener, (uv_stream_t *)&r->tcp) != 0) {
        uv_close((uv_handle_t *)&r->tcp, dst_refusal_closed);
        return;
    }
    err_warn("refused a migration connection: %s", reason);
    int n = snprintf(r->line, sizeof(r->line), "{\"accept\":false,\"reason\":\"%s\"}\n", reason);
    uv_buf_t buf = uv_buf_init(r->line, (unsigned)n);
    if (uv_write(&r->req, (uv_stream_t *)&r->tcp, &buf, 1, dst_refusal_written) != 0)
        uv_close((uv_handle_t *)&r->tcp, dst_refusal_closed);
}

/* A new peer with its own handshake thread. */
static void dst_add_peer(struct mig_dest *d, uv_tcp_t *tcp)
{
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    char addr[64] = "?", name[128];
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&sa, &len) == 0)
        uv_ip_name((struct sockaddr *)&sa, addr, sizeof(addr));
    snprintf(name, sizeof(name), "the source %s", addr);
    struct dst_peer *p = calloc(1, sizeof(*p));
    if (!p) {
        tcp->data = tcp;
        uv_close((uv_handle_t *)tcp, dst_refusal_closed);
        return;
    }
    p->d = d;
    p->accept_ms = clock_now_ms();
    /* The channel drives the socket from the peer's thread: the handle only accepted it. */
    uv_os_fd_t ufd = -1;
    int fd = uv_fileno((uv_handle_t *)tcp, &ufd) == 0 ? fcntl(ufd, F_DUPFD_CLOEXEC, 0) : -1;
    tcp->data = tcp;
    uv_close((uv_handle_t *)tcp, dst_refusal_closed);
    if (fd < 0 || mig_chan_create(d->loop, fd, name, d->params.idle_ms, &p->ch)) {
        err_warn("cannot take the connection from %s: %s", addr,
                 fd < 0 ? strerror(errno) : err_msg());
        free(p);
        return;
    }
    mig_chan_set_deadline(p->ch, MIG_DEST_HANDSHAKE_MS, "the handshake");
    p->next = d->peers;
    d->peers = p;
    pthread_mutex_lock(&d->lock);
    d->handshaking++;
    pthread_mutex_unlock(&d->lock);
    int rc = pthread_create(&p->thread, NULL, dst_peer_main, p);
    if (rc) {
        err_warn("cannot start a migration thread for %s: %s", addr, strerror(rc));
        pthread_mutex_lock(&d->lock);
        d->handshaking--;
        p->done = true;
        pthread_mutex_unlock(&d->lock);
        mig_chan_fail(p->ch, -rc, "no thread for the connection");
        dst_reap(d);
        return;
    }
    p->started = true;
}

static void dst_on_connection(uv_stream_t *listener, int status)
{
    struct mig_dest *d = listener->data;
    if (status < 0)
        return;
    pthread_mutex_lock(&d->lock);
    /* The winner's own further connections still come in (they must show its session). */
    bool lane = d->winner && !d->over && d->lanes_accepted < d->lanes;
    bool taken = (d->winner && !lane) || d->finishing;
    bool crowded = d->handshaking >= MIG_DEST_MAX_PEERS;
    d->lanes_accepted += lane && !crowded;
    pthread_mutex_unlock(&d->lock);
    if (taken || crowded) {
        dst_refuse(d, listener,
                   taken ? "this destination is already taking a migration"
                         : "too many connections in their handshake at once");
        return;
    }
    uv_tcp_t *tcp = malloc(sizeof(*tcp));
    if (!tcp)
        return;
    uv_tcp_init(d->loop, tcp);
    if (uv_accept(listener, (uv_stream_t *)tcp) != 0) {
        tcp->data = tcp;
        uv_close((uv_handle_t *)tcp, dst_refusal_closed);
        return;
    }
    dst_add_peer(d, tcp);
}

int mig_dest_listen(uv_loop_t *loop, const struct mig_dest_params *params, struct mig_dest **out,
                    unsigned *port_out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(params->host, params->port, &hints, &res);
    if (g)
        return err_set(-EINVAL, "--incoming: cannot resolve %s: %s", params->host, gai_strerror(g));
    struct mig_dest *d = calloc(1, sizeof(*d));
    if (!d) {
        freeaddrinfo(res);
        return err_set(-ENOMEM, "out of memory");
    }
    d->loop = loop;
    d->params = *params;
    if (!d->params.idle_ms)
        d->params.idle_ms = MIG_DEFAULT_IDLE_MS;
    pthread_mutex_init(&d->lock, NULL);
    clock_cond_init(&d->cond);
    uv_tcp_init(loop, &d->listener);
    d->listener.data = d;
    uv_async_init(loop, &d->async, dst_on_async);
    d->async.data = d;
    mig_loopcall_init(&d->calls, loop);
    d->calls.async.data = d;
    int rc = uv_tcp_bind(&d->listener, res->ai_addr, 0);
    freeaddrinfo(res);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&d->listener, MIG_DEST_MAX_PEERS, dst_on_connection);
    if (rc) {
        int code = err_set(-EADDRNOTAVAIL, "--incoming: cannot listen on %s:%s: %s", params->host,
                           params->port, uv_strerror(rc));
        /* d goes once its handles have closed, on the loop's next turn. */
        d->params.on_done = NULL;
        d->open_handles = 3;
        uv_close((uv_handle_t *)&d->listener, dst_handle_closed);
        uv_close((uv_handle_t *)&d->async, dst_handle_closed);
        mig_loopcall_close(&d->calls, dst_handle_closed);
        *out = NULL;
        return code;
    }
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    *port_out = 0;
    if (uv_tcp_getsockname(&d->listener, (struct sockaddr *)&sa, &len) == 0)
        *port_out = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                   : ((struct sockaddr_in *)&sa)->sin_port);
    *out = d;
    return 0;
}

void mig_dest_result(const struct mig_dest *d, struct mig_dest_result *out)
{
    out->downtime_ms = d->switchover_ms ? d->resumed_ms - d->switchover_ms : 0;
    out->total_ms = d->resumed_ms - d->accept_ms;
    out->bytes = d->bytes;
    out->nested_vcpus = d->restored.nested_vcpus;
    out->guest_mode_vcpus = d->restored.guest_mode_vcpus;
    out->nested_bytes = d->restored.nested_bytes;
}

void mig_dest_cancel(struct mig_dest *d)
{
    pthread_mutex_lock(&d->lock);
    bool ending = d->finishing || d->over;
    struct dst_peer *winner = d->winner;
    if (!ending && !winner)
        d->finishing = true; /* no peer may take it from now on */
    pthread_mutex_unlock(&d->lock);
    if (ending)
        return; /* the loop finishes it */
    if (winner) {
        /* Its thread ends the migration, and the loop hears of it. */
        mig_chan_fail(winner->ch, -ECANCELED, "stopped while taking a migration");
        if (d->lanes)
            mig_barrier_fail(&d->barrier, -ECANCELED, "stopped while taking a migration");
        return;
    }
    d->rc = -ECANCELED;
    snprintf(d->message, sizeof(d->message), "stopped before any migration came");
    dst_finish(d);
}

void mig_dest_free(struct mig_dest *d)
{
    if (!d)
        return;
    mig_config_free(&d->cfg);
    if (d->lanes)
        mig_barrier_destroy(&d->barrier);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
