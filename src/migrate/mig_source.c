#include "migrate/mig_source.h"

#include "clock/clock.h"
#include "err/err.h"
#include "memory/mem.h"
#include "migrate/mig_chan.h"
#include "migrate/mig_lanes.h"
#include "migrate/mig_fault.h"
#include "migrate/mig_handshake.h"
#include "migrate/mig_loopcall.h"
#include "migrate/mig_capture.h"
#include "vm/vm_state.h"
#include "migrate/mig_stream.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIG_FIRST_THROTTLE 20u
#define MIG_THROTTLE_STEP 10u
#define MIG_MAX_THROTTLE 99u
/* Passes smaller than this say little about the link's speed. */
#define MIG_MIN_BANDWIDTH_SAMPLE (256u << 10)
#define MIG_SMALL_FINAL_PAGES 64u
#define MIG_MAX_SHRINK_PASSES 30u
/* What the switchover may take beyond the downtime budget before the source resumes its VM. */
#define MIG_SWITCHOVER_MARGIN_MS 10000u

struct mig_source {
    uv_loop_t *loop;
    struct vm *vm;
    struct mig_source_params params;
    mig_source_done_fn on_done;
    void *opaque;

    struct mig_loopcall calls; /* the worker has the loop attach the connection */
    int fd;                    /* the connected socket, until the loop takes it */
    uv_timer_t timeout_timer;
    uv_async_t done_async;
    struct mig_chan *ch;
    pthread_t worker;
    bool worker_started;
    bool cancel_requested, timed_out; /* guarded by lock: the worker polls them */

    pthread_mutex_t lock; /* guards progress */
    struct mig_progress progress;
    double start_ms;

    /* Worker only. */
    struct mig_writer writer;
    struct mig_lanes lanes; /* the further connections (--connections) */
    char session[64];       /* the destination's token for them */
    unsigned attach_lane;   /* which connection the loop attaches (0: the main one) */
    unsigned closing;       /* connections the loop is closing */
    bool pass_fault_armed;
    uint64_t pass_start_offset;
    uint64_t progress_offset;
    char cancel_reason[128];
    struct mig_hs_need need;      /* what the handshake said the VM needs */
    struct mig_hs_caps dest_caps; /* what the destination said it offers */
};

const char *mig_phase_name(enum mig_phase phase)
{
    static const char *const names[] = {"connecting", "handshake", "first-pass",
                                        "dirty-pass", "state",     "ack",
                                        "completed",  "failed",    "cancelled"};
    return phase <= MIG_PHASE_CANCELLED ? names[phase] : "?";
}

int mig_parse_tcp_uri(const char *what, const char *uri, char *host, size_t host_size, char *port,
                      size_t port_size)
{
    if (!uri || strncmp(uri, "tcp:", 4))
        return err_set(-EINVAL, "%s: '%s' is not a tcp:HOST:PORT URI", what, uri ? uri : "");
    const char *h = uri + 4, *colon;
    size_t hlen;
    if (*h == '[') {
        const char *end = strchr(h, ']');
        if (!end || end[1] != ':')
            return err_set(-EINVAL, "%s: '%s': an IPv6 host is written [ADDR]:PORT", what, uri);
        h++;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            return err_set(-EINVAL, "%s: '%s' has no :PORT", what, uri);
        hlen = (size_t)(colon - h);
    }
    const char *p = colon + 1;
    char *endp;
    unsigned long pn = strtoul(p, &endp, 10);
    if (!*p || *endp || pn > 65535)
        return err_set(-EINVAL, "%s: '%s': port '%s' is not 0-65535", what, uri, p);
    if (hlen == 0 || hlen >= host_size)
        return err_set(-EINVAL, "%s: '%s': missing or overlong host", what, uri);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    snprintf(port, port_size, "%lu", pn);
    return 0;
}

json_t *mig_progress_to_json(const struct mig_progress *p)
{
    json_t *o = json_pack(
        "{s:s,s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:I,s:f}", "phase",
        mig_phase_name(p->phase), "uri", p->uri, "pass", (int)p->pass, "bytes_sent",
        (json_int_t)p->bytes_sent, "pages_sent", (json_int_t)p->pages_sent, "remaining_pages",
        (json_int_t)p->remaining_pages, "dirty_rate", (json_int_t)p->dirty_rate, "throughput",
        (json_int_t)p->throughput, "eta_ms", (json_int_t)p->eta_ms, "throttle_pct",
        (int)p->throttle_pct, "zero_pages", (json_int_t)p->zero_pages, "raw_pages",
        (json_int_t)p->raw_pages, "zlib_pages", (json_int_t)p->zlib_pages, "total_ms", p->total_ms);
    if (p->phase >= MIG_PHASE_FIRST_PASS && p->phase <= MIG_PHASE_COMPLETED) {
        char format[16];
        snprintf(format, sizeof(format), "%u.%u", MIG_VERSION_MAJOR, p->stream_minor);
        json_object_set_new(o, "stream", json_string(format));
        json_object_set_new(o, "connections", json_integer(p->connections));
        json_object_set_new(o, "security", json_string(p->security));
    }
    if (p->phase == MIG_PHASE_COMPLETED) {
        json_object_set_new(o, "downtime_ms", json_real(p->downtime_ms));
        json_object_set_new(o, "dest_downtime_ms", json_real(p->dest_downtime_ms));
    }
    if (p->phase == MIG_PHASE_FAILED || p->phase == MIG_PHASE_CANCELLED) {
        json_object_set_new(o, "message", json_string(p->message));
        json_object_set_new(o, "source_paused", json_boolean(p->source_paused));
    }
    return o;
}

/* ---- progress -------------------------------------------------------------------------- */

static void src_set_phase(struct mig_source *s, enum mig_phase phase, unsigned pass)
{
    pthread_mutex_lock(&s->lock);
    s->progress.phase = phase;
    s->progress.pass = pass;
    pthread_mutex_unlock(&s->lock);
}

void mig_source_progress(struct mig_source *s, struct mig_progress *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->progress;
    if (out->phase < MIG_PHASE_COMPLETED)
        out->total_ms = clock_now_ms() - s->start_ms;
    pthread_mutex_unlock(&s->lock);
}

/* ---- the connections ------------------------------------------------------------------- */

/* --bandwidth (bytes/s, 0 for none): each connection takes its share. */
static void src_set_rate(struct mig_source *s, uint64_t bandwidth)
{
    mig_chan_set_rate(s->ch, bandwidth / s->lanes.count);
    for (unsigned i = 1; i < s->lanes.count; i++)
        mig_chan_set_rate(s->lanes.lane[i].ch, bandwidth / s->lanes.count);
}

/* Fails every connection there is (any thread): each wait on them returns code with why. */
static void src_fail_all(struct mig_source *s, int code, const char *why)
{
    if (s->ch)
        mig_chan_fail(s->ch, code, why);
    mig_lanes_fail(&s->lanes, code, why);
}

/* ---- the stream sink: fault injection, progress, channel ------------------------------- */

static int src_sink(void *opaque, const void *buf, size_t len)
{
    struct mig_source *s = opaque;
    if (s->pass_fault_armed && s->writer.offset - s->pass_start_offset > (1u << 20)) {
        s->pass_fault_armed = false;
        mig_chan_fail(s->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut");
    }
    int rc = mig_chan_write(s->ch, buf, len);
    if (s->writer.offset - s->progress_offset >= (1u << 20)) {
        /* The live line moves within a pass, not only at its end. */
        s->progress_offset = s->writer.offset;
        pthread_mutex_lock(&s->lock);
        s->progress.bytes_sent = s->writer.offset;
        pthread_mutex_unlock(&s->lock);
    }
    return rc;
}

/* ---- handshake ------------------------------------------------------------------------- */

static int src_need(struct mig_source *s, struct mig_hs_need *need)
{
    struct vm *vm = s->vm;
    memset(need, 0, sizeof(*need));
    need->stream_major = MIG_VERSION_MAJOR;
    need->stream_minor = MIG_VERSION_MINOR;
    need->mem_size = vm_mem(vm)->size;
    need->cpus = vm_cpu_count(vm);
    need->xsave_size = vm_xsave_size(vm);
    mig_hs_features(vm_vcpu_cpuid(vm, 0), need->features);
    const struct dev_disk *disks;
    need->disks = vm_disks(vm, &disks);
    const struct dev_net *nets;
    need->nets = vm_nets(vm, &nets);
    for (unsigned i = 0; i < need->disks && i < MIG_HS_MAX_DISKS; i++) {
        memcpy(need->disk[i].path, disks[i].path, sizeof(need->disk[i].path));
        need->disk[i].size = disks[i].size;
    }
    struct vm_cpu_need cpu;
    vm_cpu_need(vm, &cpu);
    need->hyperv = cpu.hyperv;
    need->hyperv_set = cpu.hyperv_set;
    need->tsc_khz = cpu.tsc_khz;
    for (unsigned i = 0; i < cpu.vmx_count && need->vmx_count < MIG_HS_MAX_VMX_MSRS; i++)
        need->vmx[need->vmx_count++] = (struct mig_hs_msr){cpu.vmx[i].index, cpu.vmx[i].data};
    /* Nested state is the vCPUs' own: ask them, in a pause of a few microseconds, where any
     * of them can have some. */
    if (!vm_nested_max(vm))
        return 0;
    bool was_paused = vm_is_paused(vm);
    if (!was_paused)
        vm_pause(vm);
    int rc = vm_nested_need(vm, &need->nested_size, &need->evmcs);
    if (!was_paused)
        vm_resume(vm);
    return rc;
}

static int src_handshake(struct mig_source *s)
{
    struct mig_hs_need need;
    int rc = src_need(s, &need);
    need.connections = s->lanes.count;
    s->need = need;
    if (rc)
        return rc;
    rc = mig_chan_write_json(s->ch, json_pack("{s:o}", "hello", mig_hs_need_to_json(&need)));
    if (rc)
        return rc;
    if (mig_fault_cut_at("handshake"))
        mig_chan_fail(s->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut at handshake");
    json_t *reply;
    if ((rc = mig_chan_read_json(s->ch, "answer to the handshake", &reply)))
        return rc;
    const char *reason = json_string_value(json_object_get(reply, "reason"));
    struct mig_hs_caps caps;
    char why[512] = "";
    if (!json_is_true(json_object_get(reply, "accept"))) {
        rc = err_set(-ECONNREFUSED, "the destination refused the migration: %s",
                     reason ? reason : "no reason given");
    } else if (mig_hs_caps_from_json(json_object_get(reply, "caps"), &caps)) {
        rc = err_context(-EPROTO, "the destination's capabilities are malformed");
    } else if (mig_hs_check(&need, &caps, why, sizeof(why))) {
        /* The destination accepted, but we know better: tell it why before closing. */
        rc = err_set(-ENOTSUP, "the destination cannot take this VM: %s", why);
        mig_chan_write_json(s->ch, json_pack("{s:s}", "abort", why));
    } else if (need.connections > 1) {
        const char *session = json_string_value(json_object_get(reply, "session"));
        if (!session || strlen(session) >= sizeof(s->session))
            rc = err_set(-EPROTO, "the destination gave no session for further connections");
        else
            snprintf(s->session, sizeof(s->session), "%s", session);
    }
    json_decref(reply);
    if (rc)
        return rc;
    s->dest_caps = caps;
    return mig_chan_write_json(s->ch, json_pack("{s:b}", "start", 1));
}

/* ---- passes ---------------------------------------------------------------------------- */

static void src_note_stats(struct mig_source *s, const struct mig_capture *cap)
{
    uint64_t pages = cap->pages;
    struct mig_stats st = cap->stats;
    mig_lanes_add_stats(&s->lanes, &pages, &st);
    pthread_mutex_lock(&s->lock);
    s->progress.bytes_sent = s->writer.offset + mig_lanes_bytes(&s->lanes);
    s->progress.pages_sent = pages;
    s->progress.zero_pages = st.zero_pages;
    s->progress.raw_pages = st.raw_pages;
    s->progress.zlib_pages = st.zlib_pages;
    pthread_mutex_unlock(&s->lock);
}

/* Runs one pass over the marked pages; returns its bytes and duration. */
static int src_pass(struct mig_source *s, struct mig_capture *cap, uint64_t *bytes, double *ms)
{
    double t0 = clock_now_ms();
    s->pass_start_offset = s->writer.offset;
    uint64_t lanes_before = mig_lanes_bytes(&s->lanes);
    int rc = mig_lanes_pass(&s->lanes, cap);
    *bytes = s->writer.offset - s->pass_start_offset + mig_lanes_bytes(&s->lanes) - lanes_before;
    *ms = clock_now_ms() - t0;
    s->pass_fault_armed = false;
    src_note_stats(s, cap);
    return rc;
}

/* Pre-copy until the remaining dirty set fits the downtime limit. Returns with the VM running. */
static int src_precopy(struct mig_source *s, struct mig_capture *cap)
{
    struct vm *vm = s->vm;
    struct mem *mem = vm_mem(vm);
    /* The first sync write-protects every page (KVM_DIRTY_LOG_INITIALLY_SET leaves them all
     * dirty and unprotected until cleared); the first pass then sends them all. */
    int rc = mem_dirty_sync(mem, NULL);
    if (rc)
        return rc;
    for (unsigned r = 0; r < mem->region_count; r++)
        mem_dirty_mark(mem, mem->regions[r].gpa, mem->regions[r].size);

    unsigned pass = 1, strikes = 0, throttle = 0;
    src_set_phase(s, MIG_PHASE_FIRST_PASS, pass);
    s->pass_fault_armed = mig_fault_cut_at("first-pass");
    double bandwidth = 0; /* bytes per ms */
    double last_sync = clock_now_ms();
    for (;;) {
        uint64_t bytes;
        double ms;
        if ((rc = src_pass(s, cap, &bytes, &ms)))
            return rc;
        if (bytes >= MIG_MIN_BANDWIDTH_SAMPLE || bandwidth == 0)
            bandwidth = (double)bytes / (ms > 0.01 ? ms : 0.01);
        uint64_t dirty;
        double t = clock_now_ms();
        if ((rc = mem_dirty_sync(mem, &dirty)))
            return rc;
        double dirty_rate =
            (double)dirty * MEM_PAGE_SIZE / (t - last_sync > 0.01 ? t - last_sync : 0.01);
        last_sync = t;
        double eta = (double)dirty * MEM_PAGE_SIZE / bandwidth;
        pthread_mutex_lock(&s->lock);
        s->progress.remaining_pages = dirty;
        s->progress.dirty_rate = (uint64_t)(dirty_rate * 1e3);
        s->progress.throughput = (uint64_t)(bandwidth * 1e3);
        s->progress.eta_ms = (uint64_t)eta;
        pthread_mutex_unlock(&s->lock);
        /* Within the limit, one more pass is still worth it while it would at least halve
         * what the pause has to carry (the guest dirties less during a short pass than the
         * pass sends); a few pages, or a set that no longer shrinks, go now. */
        double next = dirty_rate * eta;
        if (eta <= s->params.downtime_ms &&
            (dirty <= MIG_SMALL_FINAL_PAGES || next >= (double)dirty * MEM_PAGE_SIZE / 2 ||
             pass >= MIG_MAX_SHRINK_PASSES))
            return 0;
        /* Auto-converge: once the guest has dirtied more than half of what the link carried
         * in the same time for two passes in a row, throttle it, and throttle harder after
         * every pass it still does. (Dirty pages are counted once however often they are
         * written, so "more than half" stands for "faster than the link" here.) */
        strikes = (double)dirty * MEM_PAGE_SIZE > (double)bytes / 2 ? strikes + 1 : 0;
        if (strikes >= 2 || (throttle && strikes)) {
            throttle = throttle ? throttle + MIG_THROTTLE_STEP : MIG_FIRST_THROTTLE;
            if (throttle > MIG_MAX_THROTTLE)
                throttle = MIG_MAX_THROTTLE;
            if ((rc = vm_set_throttle(vm, throttle)))
                return rc;
            pthread_mutex_lock(&s->lock);
            s->progress.throttle_pct = throttle;
            pthread_mutex_unlock(&s->lock);
        }
        src_set_phase(s, MIG_PHASE_DIRTY_PASS, ++pass);
        if (pass == 2 && mig_fault_cut_at("dirty-pass"))
            mig_chan_fail(s->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut");
    }
}

/* The destination's "ready", our "go" (from which it may run the guest), its "resumed". */
static int src_handover(struct mig_source *s, double paused_at, bool *go_sent)
{
    json_t *msg;
    int rc = mig_chan_read_json(s->ch, "ready message", &msg);
    if (rc)
        return rc;
    bool ready = json_is_true(json_object_get(msg, "ready"));
    const char *reason = json_string_value(json_object_get(msg, "reason"));
    if (!ready)
        rc = err_set(-EPROTO, "the destination could not restore the VM: %s",
                     reason ? reason : "no reason given");
    json_decref(msg);
    if (rc)
        return rc;
    if (mig_fault_cut_at("ready"))
        mig_chan_fail(s->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut before go");
    if ((rc = mig_chan_error(s->ch)))
        return rc;
    mig_chan_set_deadline(s->ch, 0, NULL);
    /* From here on the destination may run the guest: never resume it here again. Its
     * images' locks pass to it now (it takes them before the guest runs there). */
    *go_sent = true;
    vm_release(s->vm);
    if ((rc = mig_chan_write_json(s->ch, json_pack("{s:b}", "go", 1))))
        return rc;
    if ((rc = mig_chan_read_json(s->ch, "resumed message", &msg)))
        return rc;
    bool resumed = json_is_true(json_object_get(msg, "resumed"));
    reason = json_string_value(json_object_get(msg, "reason"));
    double dest_ms = json_number_value(json_object_get(msg, "downtime_ms"));
    if (!resumed) {
        /* It says it did not run the guest: the source may take it back. */
        *go_sent = false;
        rc = err_set(-EPROTO, "the destination could not resume the VM: %s",
                     reason ? reason : "no reason given");
    }
    json_decref(msg);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->lock);
    s->progress.downtime_ms = clock_now_ms() - paused_at;
    s->progress.dest_downtime_ms = dest_ms;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Paused: the final pass and the state, then the destination's ready / our go / its resumed. */
static int src_switchover(struct mig_source *s, struct mig_capture *cap, double *paused_at,
                          bool *go_sent)
{
    struct vm *vm = s->vm;
    struct mem *mem = vm_mem(vm);
    src_set_phase(s, MIG_PHASE_STATE, s->progress.pass + 1);
    /* The cap shapes pre-copy; downtime is no place to save bandwidth. */
    src_set_rate(s, 0);
    vm_pause(vm);
    *paused_at = clock_now_ms();
    /* From here to the destination's "ready", however its bytes trickle: the downtime budget
     * and a margin; past it the source takes its VM back. */
    mig_chan_set_deadline(s->ch, s->params.downtime_ms + MIG_SWITCHOVER_MARGIN_MS,
                          "the switchover (final pass, state, \"ready\")");
    vm_set_throttle(vm, 0);
    /* The guest may have entered VMX operation, or made an eVMCS active, since the handshake:
     * ask again before any state leaves. A refusal here resumes the VM where it is. */
    struct mig_hs_need now = s->need;
    char why[512];
    int rc = vm_nested_need(vm, &now.nested_size, &now.evmcs);
    if (!rc && mig_hs_check(&now, &s->dest_caps, why, sizeof(why)))
        rc = err_set(-ENOTSUP, "at switchover, the destination cannot take this VM: %s", why);
    if (rc)
        return rc;
    uint64_t dirty;
    if ((rc = mem_dirty_sync(mem, &dirty)))
        return rc;
    struct mig_switchover sw = {.dirty_pages = dirty};
    if ((rc = mig_write_record(&s->writer, MIG_REC_SWITCHOVER, 0, &sw, sizeof(sw))))
        return rc;
    if (mig_fault_cut_at("state"))
        mig_chan_fail(s->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut at state");
    if ((rc = mig_lanes_pass(&s->lanes, cap)) || (rc = mig_capture_state(cap)) ||
        (rc = mig_lanes_end(&s->lanes)) || (rc = mig_chan_flush(s->ch)))
        return rc;
    src_note_stats(s, cap);
    src_set_phase(s, MIG_PHASE_ACK, s->progress.pass);
    return src_handover(s, *paused_at, go_sent);
}

/* Below, with the loop side they talk to. */
static int src_connect(struct mig_source *s);
static int src_open_lane(struct mig_source *s, unsigned i);

static int src_run(struct mig_source *s, bool *paused, bool *go_sent)
{
    struct vm *vm = s->vm;
    int rc = src_connect(s);
    if (rc)
        return rc;
    src_set_phase(s, MIG_PHASE_HANDSHAKE, 0);
    /* TLS before a word of the protocol: the destination says nothing about its host to a peer
     * it has not authenticated, and neither do we. */
    if (s->params.tls && (rc = mig_chan_start_tls(s->ch, s->params.tls, s->params.host)))
        return rc;
    rc = src_handshake(s);
    for (unsigned i = 1; i < s->lanes.count && !rc; i++)
        rc = src_open_lane(s, i);
    if (rc)
        return rc;
    if ((rc = mem_dirty_start(vm_mem(vm))))
        return rc;
    mig_writer_init(&s->writer, src_sink, s);
    /* An older destination gets the older format: what it cannot read is either optional (left
     * out) or refused at the handshake (mig_hs_check). */
    s->writer.minor = (uint16_t)mig_hs_stream_minor(&s->need, &s->dest_caps);
    pthread_mutex_lock(&s->lock);
    s->progress.stream_minor = s->writer.minor;
    s->progress.connections = s->lanes.count;
    snprintf(s->progress.security, sizeof(s->progress.security), "%s", mig_chan_security(s->ch));
    pthread_mutex_unlock(&s->lock);
    src_set_rate(s, s->params.bandwidth);
    struct mig_capture cap;
    struct mig_capture_options opt = {.compress_level = s->params.compress_level, .live = true};
    rc = mig_capture_begin(&cap, vm, &s->writer, &opt);
    if (!rc)
        rc = mig_lanes_begin(&s->lanes, vm, &cap, &opt, s->writer.minor);
    if (!rc)
        rc = src_precopy(s, &cap);
    double paused_at = 0;
    if (!rc) {
        rc = src_switchover(s, &cap, &paused_at, go_sent);
        *paused = paused_at != 0;
    }
    mig_capture_end(&cap);
    mig_lanes_free(&s->lanes);
    return rc;
}

static void *src_worker(void *arg)
{
    struct mig_source *s = arg;
    pthread_setname_np(pthread_self(), "migrate");
    bool paused = false, go_sent = false;
    int rc = src_run(s, &paused, &go_sent);
    struct vm *vm = s->vm;
    vm_set_throttle(vm, 0);
    if (rc) {
        char message[400];
        snprintf(message, sizeof(message), "%s", err_msg());
        /* Pairs with the close below: the destination sees the connection end, not a hang. */
        src_fail_all(s, rc, message);
        if (vm_mem(vm)->tracking)
            mem_dirty_stop(vm_mem(vm));
        if (paused && !go_sent)
            vm_resume(vm);
        pthread_mutex_lock(&s->lock);
        s->progress.phase =
            s->cancel_requested && !s->timed_out ? MIG_PHASE_CANCELLED : MIG_PHASE_FAILED;
        s->progress.source_paused = paused && go_sent;
        if (paused && go_sent)
            snprintf(s->progress.message, sizeof(s->progress.message),
                     "%s; the destination may already run the guest, so the source stays paused",
                     message);
        else
            snprintf(s->progress.message, sizeof(s->progress.message), "%s", message);
    } else {
        pthread_mutex_lock(&s->lock);
        s->progress.phase = MIG_PHASE_COMPLETED;
    }
    s->progress.total_ms = clock_now_ms() - s->start_ms;
    pthread_mutex_unlock(&s->lock);
    uv_async_send(&s->done_async);
    return NULL;
}

/* ---- loop side ------------------------------------------------------------------------- */

/* The end of a source whose worker never started: nobody waits for it. */
static void src_discard(struct mig_source *s, void *opaque)
{
    (void)opaque;
    mig_source_free(s);
}

static void src_finish_closed(uv_handle_t *h)
{
    struct mig_source *s = h->data;
    s->on_done(s, s->opaque);
}

static void src_calls_closed(uv_handle_t *h)
{
    struct mig_source *s = h->data;
    uv_close((uv_handle_t *)&s->done_async, src_finish_closed);
}

static void src_chan_closed(void *opaque)
{
    struct mig_source *s = opaque;
    if (--s->closing)
        return;
    s->ch = NULL;
    mig_loopcall_close(&s->calls, src_calls_closed);
}

/* The timer lives inside s: everything that may free s waits for its close to finish (libuv
 * finishes closes in no promised order). */
static void src_timer_closed(uv_handle_t *h)
{
    struct mig_source *s = h->data;
    s->closing = 1; /* held until every close is under way */
    for (unsigned i = 1; i < s->lanes.count; i++)
        if (s->lanes.lane[i].ch) {
            s->closing++;
            mig_chan_close(s->lanes.lane[i].ch, src_chan_closed, s);
            s->lanes.lane[i].ch = NULL;
        }
    if (s->ch) {
        s->closing++;
        mig_chan_close(s->ch, src_chan_closed, s);
    }
    src_chan_closed(s);
}

/* Ends on the loop: the worker has finished. */
static void src_on_done_async(uv_async_t *a)
{
    struct mig_source *s = a->data;
    pthread_join(s->worker, NULL);
    if (s->fd >= 0)
        close(s->fd); /* connected, never attached */
    uv_timer_stop(&s->timeout_timer);
    uv_close((uv_handle_t *)&s->timeout_timer, src_timer_closed);
}

/* Cancel or timeout (-ETIMEDOUT), from the loop: the worker sees it at its next wait. */
static void src_stop(struct mig_source *s, int code, const char *why)
{
    pthread_mutex_lock(&s->lock);
    if (code == -ETIMEDOUT)
        s->timed_out = true;
    s->cancel_requested = true;
    snprintf(s->cancel_reason, sizeof(s->cancel_reason), "%s", why);
    pthread_mutex_unlock(&s->lock);
    src_fail_all(s, code, why);
}

static void src_on_timeout(uv_timer_t *t)
{
    struct mig_source *s = t->data;
    char msg[128];
    snprintf(msg, sizeof(msg), "--timeout %u s expired", s->params.timeout_s);
    src_stop(s, -ETIMEDOUT, msg);
}

/* On the loop: the worker's connected socket becomes the migration's channel. */
static int src_attach(void *arg)
{
    struct mig_source *s = arg;
    char peer[400];
    unsigned i = s->attach_lane;
    if (i)
        snprintf(peer, sizeof(peer), "the destination %s (connection %u)", s->progress.uri, i + 1);
    else
        snprintf(peer, sizeof(peer), "the destination %s", s->progress.uri);
    int fd = s->fd;
    s->fd = -1; /* the channel owns it now, also when it fails */
    return mig_chan_create(s->loop, fd, peer, s->params.idle_ms, i ? &s->lanes.lane[i].ch : &s->ch);
}

/* 0 while the migration may go on; else -ECANCELED (or -ETIMEDOUT) with the reason. */
static int src_cancelled(struct mig_source *s)
{
    pthread_mutex_lock(&s->lock);
    int rc = !s->cancel_requested ? 0
             : s->timed_out       ? err_set(-ETIMEDOUT, "%s", s->cancel_reason)
                                  : err_set(-ECANCELED, "%s", s->cancel_reason);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Waits for a non-blocking connect, 100 ms at a time, so that a cancel or the timeout acts at
 * once however long the kernel would try. */
static int src_connect_wait(struct mig_source *s, int fd)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n = poll(&p, 1, 100);
        int rc = src_cancelled(s);
        if (rc)
            return rc;
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n <= 0)
            continue;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        return -err;
    }
}

/* On the worker: resolves and connects (each address in turn), then has the loop attach the
 * socket as connection `lane` (0: the main one). No libuv threadpool: a host that cannot start
 * threads fails here, once, cleanly. */
static int src_connect_as(struct mig_source *s, unsigned lane)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(s->params.host, s->params.port, &hints, &res);
    if (g)
        return err_set(-EHOSTUNREACH, "cannot resolve %s: %s", s->params.host, gai_strerror(g));
    int rc = -EHOSTUNREACH;
    for (struct addrinfo *a = res; a && rc != 0 && rc != -ECANCELED && rc != -ETIMEDOUT;
         a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        rc = connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0
             : errno == EINPROGRESS                      ? src_connect_wait(s, fd)
                                                         : -errno;
        if (rc)
            close(fd);
        else
            s->fd = fd;
    }
    freeaddrinfo(res);
    if (rc == -ECANCELED || rc == -ETIMEDOUT)
        return rc; /* the message is set */
    if (rc)
        return err_set(rc, "cannot connect to %s: %s", s->progress.uri, strerror(-rc));
    s->attach_lane = lane;
    if ((rc = mig_loopcall_run(&s->calls, src_attach, s)))
        return rc;
    return src_cancelled(s);
}

static int src_connect(struct mig_source *s)
{
    return src_connect_as(s, 0);
}

/* A further connection: connected, secured like the first, and joined to the migration the
 * handshake opened (the destination checks the session token). */
static int src_open_lane(struct mig_source *s, unsigned i)
{
    int rc = src_connect_as(s, i);
    struct mig_chan *ch = s->lanes.lane[i].ch;
    if (!rc && s->params.tls)
        rc = mig_chan_start_tls(ch, s->params.tls, s->params.host);
    if (!rc)
        rc = mig_chan_write_json(ch, json_pack("{s:s,s:i}", "join", s->session, "lane", (int)i));
    json_t *reply = NULL;
    if (!rc)
        rc = mig_chan_read_json(ch, "answer to joining", &reply);
    if (!rc && !json_is_true(json_object_get(reply, "joined"))) {
        const char *why = json_string_value(json_object_get(reply, "reason"));
        rc = err_set(-ECONNREFUSED, "the destination refused connection %u: %s", i + 1,
                     why ? why : "no reason given");
    }
    json_decref(reply);
    return rc;
}

int mig_source_start(uv_loop_t *loop, struct vm *vm, const struct mig_source_params *params,
                     mig_source_done_fn on_done, void *opaque, struct mig_source **out)
{
    struct mig_source *s = calloc(1, sizeof(*s));
    if (!s) {
        mig_tls_creds_free(params->tls);
        return err_set(-ENOMEM, "out of memory");
    }
    s->loop = loop;
    s->vm = vm;
    s->params = *params;
    s->fd = -1;
    mig_lanes_init(&s->lanes, params->connections);
    if (!s->params.idle_ms)
        s->params.idle_ms = MIG_DEFAULT_IDLE_MS;
    s->on_done = on_done;
    s->opaque = opaque;
    snprintf(s->progress.uri, sizeof(s->progress.uri),
             strchr(params->host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s", params->host, params->port);
    int rc = mig_loopcall_init(&s->calls, loop);
    if (rc) {
        mig_tls_creds_free(params->tls);
        free(s);
        return rc;
    }
    s->calls.async.data = s;
    pthread_mutex_init(&s->lock, NULL);
    s->start_ms = clock_now_ms();
    uv_async_init(loop, &s->done_async, src_on_done_async);
    s->done_async.data = s;
    uv_timer_init(loop, &s->timeout_timer);
    s->timeout_timer.data = s;
    rc = pthread_create(&s->worker, NULL, src_worker, s);
    if (rc) {
        /* s goes with its handles, on the loop's next turns; the VM runs on untouched. */
        s->on_done = src_discard;
        uv_close((uv_handle_t *)&s->timeout_timer, src_timer_closed);
        return err_sys(-rc, "cannot start the migration thread");
    }
    if (params->timeout_s)
        uv_timer_start(&s->timeout_timer, src_on_timeout, (uint64_t)params->timeout_s * 1000, 0);
    *out = s;
    return 0;
}

void mig_source_cancel(struct mig_source *s, const char *why)
{
    src_stop(s, -ECANCELED, why);
}

void mig_source_free(struct mig_source *s)
{
    if (!s)
        return;
    mig_tls_creds_free(s->params.tls);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
