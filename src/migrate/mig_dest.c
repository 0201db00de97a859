#include "migrate/mig_dest.h"

#include "clock/clock.h"
#include "err/err.h"
#include "migrate/mig_chan.h"
#include "migrate/mig_fault.h"
#include "migrate/mig_handshake.h"
#include "migrate/mig_source.h"

#include <errno.h>
#include <netdb.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct mig_dest {
    uv_loop_t *loop;
    struct mig_dest_params params;
    uv_tcp_t listener;
    uv_async_t async; /* worker -> loop: run a call, or the worker is done */
    struct mig_chan *ch;
    pthread_t worker;
    bool worker_started, finishing;
    int open_handles;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    int (*call)(struct mig_dest *d);
    bool call_pending;
    int call_rc;
    char call_msg[512];
    bool worker_done;
    int rc;
    char message[512];

    /* Worker only (and the loop once it is done). */
    struct mig_config cfg;
    struct vm *vm;
    double accept_ms, resumed_ms, switchover_ms;
    struct mig_restore_info restored;
    uint64_t bytes;
};

/* ---- calls onto the loop --------------------------------------------------------------- */

/* Runs fn on the loop thread (where the VM's handles live) and waits for it. */
static int dst_call(struct mig_dest *d, int (*fn)(struct mig_dest *d))
{
    pthread_mutex_lock(&d->lock);
    d->call = fn;
    d->call_pending = true;
    pthread_mutex_unlock(&d->lock);
    uv_async_send(&d->async);
    pthread_mutex_lock(&d->lock);
    while (d->call_pending)
        pthread_cond_wait(&d->cond, &d->lock);
    int rc = d->call_rc;
    if (rc)
        err_set(rc, "%s", d->call_msg);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int dst_create_vm(struct mig_dest *d)
{
    return d->params.create_vm(d->params.opaque, &d->cfg, &d->vm);
}

static int dst_start_vm(struct mig_dest *d)
{
    int rc = d->params.start_vm(d->params.opaque);
    d->resumed_ms = clock_now_ms();
    return rc;
}

/* ---- the worker ------------------------------------------------------------------------ */

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
    free(offer.cpuid);
    /* tern sets the hypervisor bit itself (vcpu_cpuid). */
    caps->features[0] |= 1u << 31;
    return 0;
}

static int dst_handshake(struct mig_dest *d, struct mig_hs_need *need)
{
    char *line = malloc(MIG_CHAN_MAX_LINE);
    if (!line)
        return err_set(-ENOMEM, "out of memory");
    int rc = mig_chan_read_line(d->ch, line, MIG_CHAN_MAX_LINE);
    json_t *hello = rc ? NULL : json_loads(line, 0, NULL);
    free(line);
    if (rc)
        return err_context(rc, "waiting for the source's handshake");
    struct mig_hs_caps caps;
    char why[512] = "";
    if (mig_hs_need_from_json(json_object_get(hello, "hello"), need)) {
        snprintf(why, sizeof(why), "the handshake is not tern's migration protocol %d",
                 MIG_HS_PROTOCOL);
        rc = -EPROTO;
    }
    json_decref(hello);
    if (!rc && (rc = dst_caps(d, &caps)))
        snprintf(why, sizeof(why), "%s", err_msg());
    if (!rc)
        rc = mig_hs_check(need, &caps, why, sizeof(why));
    if (mig_fault_cut_at("handshake"))
        mig_chan_fail(d->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut at handshake");
    json_t *reply = rc ? json_pack("{s:b,s:s}", "accept", 0, "reason", why)
                       : json_pack("{s:b,s:o}", "accept", 1, "caps", mig_hs_caps_to_json(&caps));
    int wrc = mig_chan_write_json(d->ch, reply);
    if (rc)
        return err_set(rc, "refused the migration: %s", why);
    if (wrc)
        return wrc;
    json_t *start;
    if ((rc = mig_chan_read_json(d->ch, "start message", &start)))
        return rc;
    const char *abort = json_string_value(json_object_get(start, "abort"));
    if (!json_is_true(json_object_get(start, "start")))
        rc = err_set(-ECONNABORTED, "the source gave up the migration: %s",
                     abort ? abort : "no reason given");
    json_decref(start);
    return rc;
}

static int dst_run(struct mig_dest *d)
{
    struct mig_hs_need need;
    int rc = dst_handshake(d, &need);
    if (rc)
        return rc;
    struct mig_reader r;
    mig_reader_init(&r, mig_chan_source, d->ch);
    rc = mig_read_config(&r, &d->cfg);
    if (!rc && (d->cfg.mem_size != need.mem_size || d->cfg.cpu_count != need.cpus))
        rc = err_set(-EPROTO, "the stream's CONFIG (%llu MiB, %u vCPUs) differs from the handshake",
                     (unsigned long long)(d->cfg.mem_size >> 20), d->cfg.cpu_count);
    if (!rc)
        rc = dst_call(d, dst_create_vm);
    struct mig_restore_info info = {0};
    if (!rc) {
        if (mig_fault_cut_at("first-pass"))
            mig_chan_fail(d->ch, -ECONNABORTED, "TERN_MIGRATE_FAULT: connection cut");
        rc = mig_restore(d->vm, &r, &d->cfg, &info);
        d->switchover_ms = info.switchover_ns / 1e6;
        d->restored = info;
        if (rc) {
            char why[400];
            snprintf(why, sizeof(why), "%s", err_msg());
            if (mig_chan_error(d->ch) == 0)
                mig_chan_write_json(d->ch, json_pack("{s:b,s:s}", "ready", 0, "reason", why));
            err_set(rc, "%s", why);
        }
    }
    mig_reader_free(&r);
    if (rc)
        return rc;
    mig_fault_cut_at("restored"); /* "kill@restored": dies with the state restored, unsaid */
    if ((rc = mig_chan_write_json(d->ch, json_pack("{s:b}", "ready", 1))))
        return rc;
    mig_fault_cut_at("ready"); /* "kill@ready": dies after saying ready, before go */
    json_t *go;
    if ((rc = mig_chan_read_json(d->ch, "go message", &go)))
        return rc;
    bool ok = json_is_true(json_object_get(go, "go"));
    json_decref(go);
    if (!ok)
        return err_set(-EPROTO, "the source did not say go");
    rc = dst_call(d, dst_start_vm);
    if (rc) {
        char why[400];
        snprintf(why, sizeof(why), "%s", err_msg());
        mig_chan_write_json(d->ch, json_pack("{s:b,s:s}", "resumed", 0, "reason", why));
        return err_set(rc, "%s", why);
    }
    mig_fault_cut_at("resumed"); /* "kill@resumed": dies running the guest, before the ack */
    double downtime = d->switchover_ms ? d->resumed_ms - d->switchover_ms : 0;
    rc = mig_chan_write_json(d->ch, json_pack("{s:b,s:f}", "resumed", 1, "downtime_ms", downtime));
    /* The guest runs here now whatever happens to the ack: a lost ack leaves the source
     * paused, which is its rule, so the migration counts as done on this side. */
    if (rc)
        err_warn("the source did not get the acknowledgement: %s", err_msg());
    return 0;
}

static void *dst_worker(void *arg)
{
    struct mig_dest *d = arg;
    pthread_setname_np(pthread_self(), "migrate-in");
    int rc = dst_run(d);
    d->bytes = mig_chan_bytes_received(d->ch);
    pthread_mutex_lock(&d->lock);
    d->worker_done = true;
    d->rc = rc;
    if (rc)
        snprintf(d->message, sizeof(d->message), "%s", err_msg());
    pthread_mutex_unlock(&d->lock);
    if (rc)
        mig_chan_fail(d->ch, rc, d->message);
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

static void dst_chan_closed(void *opaque)
{
    dst_one_closed(opaque);
}

static void dst_finish(struct mig_dest *d)
{
    if (d->finishing)
        return;
    d->finishing = true;
    if (d->worker_started)
        pthread_join(d->worker, NULL);
    d->open_handles = 2 + (d->ch != NULL);
    uv_close((uv_handle_t *)&d->listener, dst_handle_closed);
    uv_close((uv_handle_t *)&d->async, dst_handle_closed);
    if (d->ch)
        mig_chan_close(d->ch, dst_chan_closed, d);
    d->ch = NULL;
}

static void dst_on_async(uv_async_t *a)
{
    struct mig_dest *d = a->data;
    pthread_mutex_lock(&d->lock);
    int (*call)(struct mig_dest *) = d->call_pending ? d->call : NULL;
    bool done = d->worker_done;
    pthread_mutex_unlock(&d->lock);
    if (call) {
        int rc = call(d);
        pthread_mutex_lock(&d->lock);
        d->call_rc = rc;
        snprintf(d->call_msg, sizeof(d->call_msg), "%s", rc ? err_msg() : "");
        d->call_pending = false;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
    }
    if (done)
        dst_finish(d);
}

struct dst_refusal {
    uv_tcp_t tcp;
    uv_write_t req;
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

/* A second connection while a migration runs: told so, then closed. */
static void dst_refuse(struct mig_dest *d, uv_stream_t *listener)
{
    static char line[] = "{\"accept\":false,\"reason\":\"this destination is already taking a "
                         "migration\"}\n";
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
    err_warn("refused a second migration connection: one is already under way");
    uv_buf_t buf = uv_buf_init(line, sizeof(line) - 1);
    if (uv_write(&r->req, (uv_stream_t *)&r->tcp, &buf, 1, dst_refusal_written) != 0)
        uv_close((uv_handle_t *)&r->tcp, dst_refusal_closed);
}

static void dst_on_connection(uv_stream_t *listener, int status)
{
    struct mig_dest *d = listener->data;
    if (status < 0)
        return;
    if (d->ch || d->finishing) {
        dst_refuse(d, listener);
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
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    char addr[64] = "?", peer[128];
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&sa, &len) == 0)
        uv_ip_name((struct sockaddr *)&sa, addr, sizeof(addr));
    snprintf(peer, sizeof(peer), "the source %s", addr);
    d->accept_ms = clock_now_ms();
    mig_chan_create(d->loop, tcp, peer, d->params.idle_ms, &d->ch);
    int rc = pthread_create(&d->worker, NULL, dst_worker, d);
    if (rc) {
        d->rc = -rc;
        snprintf(d->message, sizeof(d->message), "cannot start the migration thread: %s",
                 strerror(rc));
        dst_finish(d);
        return;
    }
    d->worker_started = true;
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
    pthread_cond_init(&d->cond, NULL);
    uv_tcp_init(loop, &d->listener);
    d->listener.data = d;
    uv_async_init(loop, &d->async, dst_on_async);
    d->async.data = d;
    int rc = uv_tcp_bind(&d->listener, res->ai_addr, 0);
    freeaddrinfo(res);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&d->listener, 4, dst_on_connection);
    if (rc) {
        int code = err_set(-EADDRNOTAVAIL, "--incoming: cannot listen on %s:%s: %s", params->host,
                           params->port, uv_strerror(rc));
        /* d goes once its handles have closed, on the loop's next turn. */
        d->params.on_done = NULL;
        d->open_handles = 2;
        uv_close((uv_handle_t *)&d->listener, dst_handle_closed);
        uv_close((uv_handle_t *)&d->async, dst_handle_closed);
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
    if (d->finishing)
        return;
    if (d->ch) {
        mig_chan_fail(d->ch, -ECANCELED, "stopped while taking a migration");
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
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
