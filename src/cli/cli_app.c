/* `tern run`'s application: the VM on the loop, from its start to its end (cli_app.h). */
#include "cli/cli_app.h"

#include "cli/cli.h"
#include "err/err.h"
#include "migrate/mig_file.h"
#include "migrate/mig_restore.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void cli_app_finish(struct run_state *st)
{
    if (st->ending)
        return;
    if (st->migration) {
        /* The migration thread uses the VM: let it end first (its end comes back here). */
        st->end_after_migration = true;
        mig_source_cancel(st->migration, st->vm && vm_end_state(st->vm).kind != VM_END_NONE
                                             ? "the guest ended during the migration"
                                             : "tern is stopping");
        return;
    }
    if (st->incoming) {
        st->end_after_migration = true;
        mig_dest_cancel(st->incoming);
        return;
    }
    st->ending = true;
    uv_timer_stop(&st->progress_timer);
    if (st->vm)
        vm_stop(st->vm);
    ctl_server_close(st->ctl);
    st->ctl = NULL;
    uv_signal_stop(&st->sigint);
    uv_signal_stop(&st->sigterm);
    uv_stop(&st->loop);
}

static void app_on_vm_end(struct vm *vm, void *opaque)
{
    struct run_state *st = opaque;
    struct vm_end end = vm_end_state(vm);
    switch (end.kind) {
    case VM_END_EXIT_CODE:
        if (end.code > 255) {
            fprintf(stderr, "tern: guest exit code %u does not fit an exit status; exiting 255\n",
                    end.code);
            st->exit_status = 255;
        } else {
            st->exit_status = (int)end.code;
        }
        break;
    case VM_END_RESET:
    case VM_END_POWER_OFF:
        fprintf(stderr, "tern: VM ended: %s\n", end.message);
        st->exit_status = 0;
        break;
    case VM_END_FAULT:
    default:
        fprintf(stderr, "tern: %s\n", end.message);
        st->exit_status = CLI_EXIT_ERROR;
        break;
    }
    cli_app_finish(st);
}

static void app_on_signal(uv_signal_t *h, int signum)
{
    struct run_state *st = h->data;
    fprintf(stderr, "tern: %s: stopping the VM\n", strsignal(signum));
    st->exit_status = 128 + signum;
    cli_app_finish(st);
}

/* The stream's disks, each at the path it names or, where --disk was given here, at that
 * path (one --disk per disk of the stream, in order); the size must be the stream's. */
static int app_disks_from(const struct run_options *o, const struct mig_config *mc,
                          struct vm_config *cfg)
{
    if (o->vm.disk_count && o->vm.disk_count != mc->disk_count)
        return err_set(-EINVAL, "--disk given %u time(s); the stream's VM has %u disk(s)",
                       o->vm.disk_count, mc->disk_count);
    if (o->vm.net_count != mc->net_count)
        return err_set(-EINVAL,
                       "--net given %u time(s); the stream's VM has %u network device(s): give "
                       "one --net (its TAP on this host) for each",
                       o->vm.net_count, mc->net_count);
    for (unsigned i = 0; i < mc->net_count; i++) { /* the guest keeps its MAC */
        memcpy(cfg->nets[i].mac, mc->net_mac[i], 6);
        cfg->nets[i].mac_given = true;
    }
    cfg->disk_count = mc->disk_count;
    for (unsigned i = 0; i < mc->disk_count; i++) {
        cfg->disks[i] = mc->disks[i];
        if (o->vm.disk_count)
            memcpy(cfg->disks[i].path, o->vm.disks[i].path, sizeof(cfg->disks[i].path));
    }
    return 0;
}

/* A VM of the stream's shape: --mem and --cpus, where given, must match it. */
static int app_create_from(struct run_state *st, const struct mig_config *mc)
{
    const struct run_options *o = st->opt;
    if (o->mem_given && o->vm.mem_size != mc->mem_size)
        return err_set(-EINVAL, "--mem %llu MiB does not match the stream's %llu MiB",
                       (unsigned long long)(o->vm.mem_size >> 20),
                       (unsigned long long)(mc->mem_size >> 20));
    if (o->cpus_given && o->vm.cpu_count != mc->cpu_count)
        return err_set(-EINVAL, "--cpus %u does not match the stream's %u vCPUs", o->vm.cpu_count,
                       mc->cpu_count);
    struct vm_config cfg = o->vm;
    cfg.mem_size = mc->mem_size;
    cfg.cpu_count = mc->cpu_count;
    int rc = app_disks_from(o, mc, &cfg);
    return rc ? rc : vm_create(&st->loop, &cfg, app_on_vm_end, st, &st->vm);
}

/* Builds the VM from a snapshot: CONFIG first, then every other record. */
static int app_restore(struct run_state *st)
{
    const char *uri = st->opt->incoming;
    const char *path = mig_file_uri_path("--incoming", uri);
    if (!path)
        return -EINVAL;
    struct mig_file_reader fr;
    struct mig_config mc;
    memset(&mc, 0, sizeof(mc));
    int rc = mig_file_open(path, &fr);
    if (!rc)
        rc = mig_read_config(&fr.reader, &mc);
    if (!rc)
        rc = app_create_from(st, &mc);
    if (!rc && (rc = mig_restore(st->vm, &fr.reader, &mc, NULL, NULL))) {
        vm_close(st->vm);
        st->vm = NULL;
    }
    mig_config_free(&mc);
    mig_file_close(&fr);
    return rc ? err_context(rc, "--incoming %s", uri) : 0;
}

/* ---- incoming live migration ---------------------------------------------------------- */

static int app_incoming_create_vm(void *opaque, const struct mig_config *mc, struct vm **out)
{
    struct run_state *st = opaque;
    struct vm_config cfg = st->opt->vm;
    cfg.mem_size = mc->mem_size;
    cfg.cpu_count = mc->cpu_count;
    int rc = app_disks_from(st->opt, mc, &cfg);
    if (!rc)
        rc = vm_create(&st->loop, &cfg, app_on_vm_end, st, &st->vm);
    *out = st->vm;
    return rc;
}

static int app_incoming_start_vm(void *opaque)
{
    struct run_state *st = opaque;
    return vm_start(st->vm, false);
}

static void app_report_incoming(const struct mig_dest_result *r)
{
    fprintf(stderr,
            "tern: migration received: %.1f MiB in %.0f ms; downtime on this side %.1f ms\n",
            r->bytes / 1048576.0, r->total_ms, r->downtime_ms);
    if (r->nested_vcpus)
        fprintf(stderr,
                "tern: nested state restored: %u vCPU(s) in VMX operation, %u of them running "
                "L2; largest record %u bytes\n",
                r->nested_vcpus, r->guest_mode_vcpus, r->nested_bytes);
}

static void app_incoming_done(void *opaque, bool ok, const char *message)
{
    struct run_state *st = opaque;
    struct mig_dest_result r;
    mig_dest_result(st->incoming, &r);
    if (!ok)
        fprintf(stderr, "tern: incoming migration failed: %s\n", message);
    /* message lives in the migration object: done with it now. */
    mig_dest_free(st->incoming);
    st->incoming = NULL;
    mig_tls_creds_free(st->incoming_tls);
    st->incoming_tls = NULL;
    if (!ok) {
        if (st->vm) {
            /* Built but never run: the source still has the guest. */
            vm_close(st->vm);
            st->vm = NULL;
        }
        if (!st->end_after_migration)
            st->exit_status = CLI_EXIT_ERROR;
        cli_app_finish(st);
        return;
    }
    app_report_incoming(&r);
    if (st->end_after_migration) {
        cli_app_finish(st);
        return;
    }
    /* The guest runs here now, and nowhere else: a control socket that cannot start is
     * reported, not a reason to stop it. */
    if (st->opt->api_socket &&
        ctl_server_start(&st->loop, st->opt->api_socket, cli_command, st, &st->ctl))
        err_warn("%s", err_msg());
}

static bool app_loopback(const char *host)
{
    return !strcmp(host, "localhost") || !strncmp(host, "127.", 4) || !strcmp(host, "::1");
}

static int app_listen(struct run_state *st)
{
    const struct run_options *o = st->opt;
    struct mig_dest_params p = {.mem_given = o->mem_given ? o->vm.mem_size : 0,
                                .cpus_given = o->cpus_given ? o->vm.cpu_count : 0,
                                .hidden_caps = o->vm.hidden_caps,
                                .disks = o->vm.disks,
                                .disk_count = o->vm.disk_count,
                                .net_count = o->vm.net_count,
                                .idle_ms = o->idle_s * 1000,
                                .opaque = st,
                                .create_vm = app_incoming_create_vm,
                                .start_vm = app_incoming_start_vm,
                                .on_done = app_incoming_done};
    int rc = mig_parse_tcp_uri("--incoming", o->incoming, p.host, sizeof(p.host), p.port,
                               sizeof(p.port));
    if (!rc && mig_tls_wanted(&o->tls))
        rc = mig_tls_creds_load(&o->tls, true, &st->incoming_tls);
    p.tls = st->incoming_tls;
    unsigned port;
    if (!rc)
        rc = mig_dest_listen(&st->loop, &p, &st->incoming, &port);
    if (rc) {
        mig_tls_creds_free(st->incoming_tls);
        st->incoming_tls = NULL;
        return rc;
    }
    if (!p.tls && !app_loopback(p.host))
        err_warn("--incoming %s takes migrations in plain text from anyone who can reach it "
                 "(guest memory crosses the network unencrypted): see --tls-creds, --tls-psk",
                 o->incoming);
    fprintf(stderr, "tern: waiting for a migration on %s:%u%s%s\n", p.host, port,
            p.tls ? " over " : "", p.tls ? mig_tls_creds_kind(p.tls) : "");
    return 0;
}

/* ---- the loop -------------------------------------------------------------------------- */

static bool app_listens(const struct run_options *o)
{
    return o->incoming && !strncmp(o->incoming, "tcp:", 4);
}

/* The VM (or the wait for one) and the control socket. */
static int app_build(struct run_state *st)
{
    const struct run_options *o = st->opt;
    int rc;
    if (app_listens(o))
        return app_listen(st); /* the control socket comes once the VM runs here */
    if (o->incoming)
        rc = app_restore(st);
    else
        rc = vm_create(&st->loop, &o->vm, app_on_vm_end, st, &st->vm);
    if (!rc && o->api_socket &&
        (rc = ctl_server_start(&st->loop, o->api_socket, cli_command, st, &st->ctl))) {
        vm_close(st->vm);
        st->vm = NULL;
    }
    return rc;
}

static void app_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Signals, then the loop until the VM ends. */
static int app_loop(struct run_state *st)
{
    uv_signal_init(&st->loop, &st->sigint);
    uv_signal_init(&st->loop, &st->sigterm);
    st->sigint.data = st->sigterm.data = st;
    uv_signal_start(&st->sigint, app_on_signal, SIGINT);
    uv_signal_start(&st->sigterm, app_on_signal, SIGTERM);
    int rc = app_listens(st->opt) ? 0 : vm_start(st->vm, st->opt->paused);
    if (!rc)
        uv_run(&st->loop, UV_RUN_DEFAULT);
    else
        cli_app_finish(st);
    vm_close(st->vm);
    return rc;
}

int cli_app_run(const struct run_options *opt)
{
    signal(SIGPIPE, SIG_IGN);
    /* A snapshot past RLIMIT_FSIZE fails with EFBIG (and is removed), instead of ending tern. */
    signal(SIGXFSZ, SIG_IGN);
    struct run_state st = {.exit_status = 0, .opt = opt};
    uv_loop_init(&st.loop);
    uv_timer_init(&st.loop, &st.quit_timer);
    st.quit_timer.data = &st;
    uv_timer_init(&st.loop, &st.progress_timer);
    st.progress_timer.data = &st;
    int rc = app_build(&st);
    if (!rc)
        rc = app_loop(&st);
    uv_walk(&st.loop, app_close_walk, NULL);
    /* A uv_stop still pending (a start that failed) makes the first run return at once; the
     * next one finishes closing every handle. */
    for (int i = 0; i < 4 && uv_run(&st.loop, UV_RUN_DEFAULT); i++)
        ;
    uv_loop_close(&st.loop);
    if (rc) {
        fprintf(stderr, "tern: %s\n", err_msg());
        return CLI_EXIT_ERROR;
    }
    return st.exit_status;
}
