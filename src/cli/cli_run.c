/* `tern run`: build a VM from the command line and run it on the main thread's libuv loop until
 * the guest ends it or a signal arrives. */
#include "cli/cli.h"

#include "boot/boot_protocol.h"
#include "boot/boot_load.h"
#include "control/ctl_server.h"
#include "err/err.h"
#include "memory/mem.h"
#include "migrate/mig_dest.h"
#include "migrate/mig_file.h"
#include "migrate/mig_source.h"
#include "vm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RUN_DEFAULT_MEM (256ull << 20)

static const char run_usage[] =
    "Usage: tern run --kernel FILE [OPTIONS]\n"
    "       tern run --incoming file:PATH|tcp:ADDR:PORT [OPTIONS]\n"
    "Run a guest on /dev/kvm until it ends.\n"
    "\n"
    "  -k, --kernel FILE      a Linux bzImage (64-bit boot protocol 2.06+), or an ELF64\n"
    "                         payload for tern's direct boot (see README)\n"
    "  -r, --initrd FILE      initramfs for a bzImage, placed high in RAM below 4 GiB\n"
    "  -i, --incoming URI     restore the VM from a snapshot (file:PATH), or listen on\n"
    "                         tcp:ADDR:PORT for one live migration and run it once it\n"
    "                         arrives (port 0: any free port, printed); the stream gives\n"
    "                         RAM size and vCPUs (--mem/--cpus, if given, must match)\n"
    "      --incoming-idle-timeout SECONDS\n"
    "                         give up a migration whose source sends nothing for this long\n"
    "                         (default 30)\n"
    "  -p, --paused           with --incoming file:, stay paused until a resume command\n"
    "  -A, --api-socket PATH  serve the JSON control socket at PATH (mode 0600)\n"
    "  -m, --mem SIZE         guest RAM: 64M, 1G, 512K or bytes (default 256M)\n"
    "  -c, --cpus N           vCPUs, 1-64 (default 1)\n"
    "  -a, --cmdline STRING   a bzImage's command line (default\n"
    "                         \"" BOOT_LINUX_DEFAULT_CMDLINE "\"), or a payload's, in\n"
    "                         its boot-info block (default empty)\n"
    "  -s, --serial WHERE     COM1 goes to stdio (default), file:PATH or none\n"
    "      --nested           expose VMX: the guest may run its own guests (needs\n"
    "                         kvm_intel nested=1); their state travels with the VM\n"
    "      --hyperv[=evmcs]   Hyper-V enlightenments: the \"Microsoft Hv\" CPUID leaves\n"
    "                         (KVM's own move to 0x40000100); evmcs also enables the\n"
    "                         enlightened VMCS (version 1; needs --nested)\n"
    "      --hide-cap CAP     behave as if the host's KVM lacked CAP, to try streams\n"
    "                         against older hosts: nested-state (KVM_CAP_NESTED_STATE)\n"
    "                         or evmcs (KVM_CAP_HYPERV_ENLIGHTENED_VMCS); repeatable\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: the guest's exit code; 0 after a guest reset or power-off; 2 for errors\n"
    "and fatal guest exits (triple fault, KVM internal error, failed VM entry); 128+N when\n"
    "stopped by signal N.\n";

struct run_state {
    uv_loop_t loop;
    struct vm *vm;
    struct vm_config *cfg;
    struct ctl_server *ctl;
    const char *api_socket;
    uv_signal_t sigint, sigterm;
    uv_timer_t quit_timer;
    int exit_status;
    bool ending;

    /* Outgoing live migration. */
    struct mig_source *migration;
    uv_timer_t progress_timer;
    struct mig_progress last_migration; /* the last one's final progress */
    bool have_last_migration;
    bool end_after_migration; /* the guest ended or a signal came while migrating */

    /* Incoming live migration. */
    struct mig_dest *incoming;
    const char *incoming_uri;
};

static void run_finish(struct run_state *st)
{
    if (st->ending)
        return;
    if (st->migration) {
        /* The migration thread uses the VM: let it end first (on_done comes back here). */
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

static void run_on_vm_end(struct vm *vm, void *opaque)
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
    run_finish(st);
}

static void run_on_signal(uv_signal_t *h, int signum)
{
    struct run_state *st = h->data;
    fprintf(stderr, "tern: %s: stopping the VM\n", strsignal(signum));
    st->exit_status = 128 + signum;
    run_finish(st);
}

static int run_open_serial(const char *spec, int *out_fd, int *in_fd)
{
    if (!strcmp(spec, "stdio")) {
        *out_fd = STDOUT_FILENO;
        *in_fd = STDIN_FILENO;
        return 0;
    }
    if (!strcmp(spec, "none")) {
        *out_fd = *in_fd = -1;
        return 0;
    }
    if (!strncmp(spec, "file:", 5) && spec[5]) {
        int fd = open(spec + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return err_sys(-errno, "--serial %s: cannot open", spec);
        *out_fd = fd;
        *in_fd = -1;
        return 0;
    }
    return err_set(-EINVAL, "--serial: '%s' is not stdio, file:PATH or none", spec);
}

static double run_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static json_t *run_snapshot(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    const char *uri = json_string_value(json_object_get(req, "uri"));
    const char *compress = json_string_value(json_object_get(req, "compress"));
    int level;
    const char *path = mig_file_uri_path("snapshot uri", uri);
    if (!path || mig_parse_compress("snapshot compress", compress, &level)) {
        snprintf(err, err_size, "%s", err_msg());
        return NULL;
    }
    double t0 = run_now_ms();
    bool was_running = !vm_is_paused(st->vm);
    if (was_running)
        vm_pause(st->vm);
    struct mig_stats stats;
    uint64_t bytes = 0;
    int rc = mig_snapshot_to_file(st->vm, path, level, &stats, &bytes);
    if (was_running)
        vm_resume(st->vm);
    if (rc) {
        snprintf(err, err_size, "%s", err_msg());
        return NULL;
    }
    return json_pack("{s:s,s:I,s:f,s:I,s:I,s:I}", "path", path, "bytes", (json_int_t)bytes, "ms",
                     run_now_ms() - t0, "zero_pages", (json_int_t)stats.zero_pages, "raw_pages",
                     (json_int_t)stats.raw_pages, "zlib_pages", (json_int_t)stats.zlib_pages);
}

/* ---- outgoing live migration ---------------------------------------------------------- */

static void run_broadcast_progress(struct run_state *st, const char *event,
                                   const struct mig_progress *p)
{
    ctl_server_broadcast(st->ctl,
                         json_pack("{s:s,s:o}", "event", event, "data", mig_progress_to_json(p)));
}

static void run_on_progress_timer(uv_timer_t *t)
{
    struct run_state *st = t->data;
    if (!st->migration)
        return;
    struct mig_progress p;
    mig_source_progress(st->migration, &p);
    run_broadcast_progress(st, "progress", &p);
}

static void run_after_migrated(void *opaque)
{
    run_finish(opaque);
}

static void run_on_migration_done(struct mig_source *src, void *opaque)
{
    struct run_state *st = opaque;
    struct mig_progress p;
    mig_source_progress(src, &p);
    mig_source_free(src);
    st->migration = NULL;
    uv_timer_stop(&st->progress_timer);
    st->last_migration = p;
    st->have_last_migration = true;
    run_broadcast_progress(st, mig_phase_name(p.phase), &p);
    if (p.phase == MIG_PHASE_COMPLETED) {
        fprintf(stderr, "tern: migrated to %s (downtime %.1f ms, %.0f ms in all)\n", p.uri,
                p.downtime_ms, p.total_ms);
        st->exit_status = 0;
        /* The VM runs on the destination now; this process ends once the final event is out. */
        ctl_server_when_drained(st->ctl, run_after_migrated, st);
        return;
    }
    fprintf(stderr, "tern: migration to %s %s: %s\n", p.uri,
            p.phase == MIG_PHASE_CANCELLED ? "cancelled" : "failed", p.message);
    if (st->end_after_migration)
        run_finish(st);
}

static int run_get_uint(json_t *req, const char *key, uint64_t max, uint64_t *out, char *err,
                        size_t err_size)
{
    json_t *v = json_object_get(req, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
        snprintf(err, err_size, "migrate: \"%s\" must be an integer from 0 to %llu", key,
                 (unsigned long long)max);
        return -EINVAL;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static json_t *run_migrate(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    if (st->migration) {
        snprintf(err, err_size, "a migration is already under way");
        return NULL;
    }
    struct mig_source_params params = {.downtime_ms = MIG_DEFAULT_DOWNTIME_MS};
    const char *uri = json_string_value(json_object_get(req, "uri"));
    const char *compress = json_string_value(json_object_get(req, "compress"));
    uint64_t downtime = params.downtime_ms, bandwidth = 0, timeout = 0, idle = 0;
    if (mig_parse_tcp_uri("migrate uri", uri, params.host, sizeof(params.host), params.port,
                          sizeof(params.port)) ||
        mig_parse_compress("migrate compress", compress, &params.compress_level)) {
        snprintf(err, err_size, "%s", err_msg());
        return NULL;
    }
    if (run_get_uint(req, "downtime_ms", 3600000, &downtime, err, err_size) ||
        run_get_uint(req, "bandwidth", UINT64_MAX >> 1, &bandwidth, err, err_size) ||
        run_get_uint(req, "timeout", 86400 * 365, &timeout, err, err_size) ||
        run_get_uint(req, "idle_timeout_ms", 86400000, &idle, err, err_size))
        return NULL;
    if (!strcmp(params.port, "0")) {
        snprintf(err, err_size, "migrate uri: port 0 names no destination");
        return NULL;
    }
    if (vm_is_paused(st->vm)) {
        /* Live migration of a paused VM would work, but its rules (resume on failure) would not
         * fit: keep it simple and honest. */
        snprintf(err, err_size, "the VM is paused; resume it first, or take a snapshot");
        return NULL;
    }
    params.downtime_ms = (unsigned)downtime;
    params.bandwidth = bandwidth;
    params.timeout_s = (unsigned)timeout;
    params.idle_ms = (unsigned)idle;
    if (mig_source_start(&st->loop, st->vm, &params, run_on_migration_done, st, &st->migration)) {
        snprintf(err, err_size, "%s", err_msg());
        return NULL;
    }
    if (json_is_true(json_object_get(req, "events")))
        ctl_server_subscribe_current(st->ctl);
    uv_timer_start(&st->progress_timer, run_on_progress_timer, 250, 250);
    struct mig_progress p;
    mig_source_progress(st->migration, &p);
    return json_pack("{s:s}", "uri", p.uri);
}

static json_t *run_migrate_status(struct run_state *st)
{
    struct mig_progress p;
    if (st->migration)
        mig_source_progress(st->migration, &p);
    else if (st->have_last_migration)
        p = st->last_migration;
    else
        return json_pack("{s:s}", "phase", "none");
    return mig_progress_to_json(&p);
}

static void run_on_quit_timer(uv_timer_t *t)
{
    run_finish(t->data);
}

/* The control socket's commands. */
static json_t *run_on_command(void *opaque, const char *command, json_t *req, char *err,
                              size_t err_size)
{
    struct run_state *st = opaque;
    if (st->ending) {
        snprintf(err, err_size, "the VM is shutting down");
        return NULL;
    }
    if (!strcmp(command, "status"))
        return json_pack("{s:s,s:i,s:I,s:b}", "state", vm_is_paused(st->vm) ? "paused" : "running",
                         "cpus", (int)vm_cpu_count(st->vm), "mem", (json_int_t)vm_mem(st->vm)->size,
                         "migrating", st->migration != NULL);
    if (!strcmp(command, "migrate"))
        return run_migrate(st, req, err, err_size);
    if (!strcmp(command, "migrate-status"))
        return run_migrate_status(st);
    if (!strcmp(command, "migrate-cancel")) {
        if (!st->migration) {
            snprintf(err, err_size, "no migration is under way");
            return NULL;
        }
        mig_source_cancel(st->migration, "migration cancelled");
        return json_object();
    }
    if (st->migration) {
        snprintf(err, err_size,
                 "a migration is under way: '%s' must wait for it (or migrate-cancel)", command);
        return NULL;
    }
    if (!strcmp(command, "pause")) {
        if (!vm_is_paused(st->vm))
            vm_pause(st->vm);
        return json_object();
    }
    if (!strcmp(command, "resume")) {
        if (vm_is_paused(st->vm))
            vm_resume(st->vm);
        return json_object();
    }
    if (!strcmp(command, "snapshot"))
        return run_snapshot(st, req, err, err_size);
    if (!strcmp(command, "quit")) {
        /* Finish on the next loop turn, once this reply has gone out. */
        fprintf(stderr, "tern: quit requested on the control socket\n");
        st->exit_status = 0;
        uv_timer_start(&st->quit_timer, run_on_quit_timer, 0, 0);
        return json_object();
    }
    snprintf(err, err_size,
             "unknown command '%s' (status, pause, resume, snapshot, quit, migrate, "
             "migrate-status, migrate-cancel)",
             command);
    return NULL;
}

/* Builds the VM from a snapshot: CONFIG first, then every other record. */
static int run_restore(struct run_state *st, struct vm_config *cfg, const char *uri, bool mem_given,
                       bool cpus_given)
{
    const char *path = mig_file_uri_path("--incoming", uri);
    if (!path)
        return -EINVAL;
    struct mig_file_reader fr;
    struct mig_config mc;
    memset(&mc, 0, sizeof(mc));
    int rc = mig_file_open(path, &fr);
    if (!rc)
        rc = mig_read_config(&fr.reader, &mc);
    if (!rc && mem_given && cfg->mem_size != mc.mem_size)
        rc = err_set(-EINVAL, "--mem %llu MiB does not match the stream's %llu MiB",
                     (unsigned long long)(cfg->mem_size >> 20),
                     (unsigned long long)(mc.mem_size >> 20));
    if (!rc && cpus_given && cfg->cpu_count != mc.cpu_count)
        rc = err_set(-EINVAL, "--cpus %u does not match the stream's %u vCPUs", cfg->cpu_count,
                     mc.cpu_count);
    if (!rc) {
        cfg->mem_size = mc.mem_size;
        cfg->cpu_count = mc.cpu_count;
        rc = vm_create(&st->loop, cfg, run_on_vm_end, st, &st->vm);
    }
    if (!rc) {
        rc = mig_restore(st->vm, &fr.reader, &mc, NULL);
        if (rc) {
            vm_close(st->vm);
            st->vm = NULL;
        }
    }
    mig_config_free(&mc);
    mig_file_close(&fr);
    return rc ? err_context(rc, "--incoming %s", uri) : 0;
}

/* ---- incoming live migration ---------------------------------------------------------- */

static int run_incoming_create_vm(void *opaque, const struct mig_config *mc, struct vm **out)
{
    struct run_state *st = opaque;
    struct vm_config cfg = *st->cfg;
    cfg.mem_size = mc->mem_size;
    cfg.cpu_count = mc->cpu_count;
    int rc = vm_create(&st->loop, &cfg, run_on_vm_end, st, &st->vm);
    *out = st->vm;
    return rc;
}

static int run_incoming_start_vm(void *opaque)
{
    struct run_state *st = opaque;
    return vm_start(st->vm, false);
}

static void run_incoming_done(void *opaque, bool ok, const char *message)
{
    struct run_state *st = opaque;
    struct mig_dest_result r;
    mig_dest_result(st->incoming, &r);
    if (!ok)
        fprintf(stderr, "tern: incoming migration failed: %s\n", message);
    /* message lives in the migration object: done with it now. */
    mig_dest_free(st->incoming);
    st->incoming = NULL;
    if (!ok) {
        if (st->vm) {
            /* Built but never run: the source still has the guest. */
            vm_close(st->vm);
            st->vm = NULL;
        }
        if (!st->end_after_migration)
            st->exit_status = CLI_EXIT_ERROR;
        run_finish(st);
        return;
    }
    fprintf(stderr,
            "tern: migration received: %.1f MiB in %.0f ms; downtime on this side %.1f ms\n",
            r.bytes / 1048576.0, r.total_ms, r.downtime_ms);
    if (r.nested_vcpus)
        fprintf(stderr,
                "tern: nested state restored: %u vCPU(s) in VMX operation, %u of them running "
                "L2; largest record %u bytes\n",
                r.nested_vcpus, r.guest_mode_vcpus, r.nested_bytes);
    if (st->end_after_migration) {
        run_finish(st);
        return;
    }
    /* The guest runs here now, and nowhere else: a control socket that cannot start is
     * reported, not a reason to stop it. */
    if (st->api_socket && ctl_server_start(&st->loop, st->api_socket, run_on_command, st, &st->ctl))
        err_warn("%s", err_msg());
}

static int run_listen(struct run_state *st, const char *uri, uint64_t mem_given,
                      unsigned cpus_given, unsigned idle_s)
{
    struct mig_dest_params p = {.mem_given = mem_given,
                                .cpus_given = cpus_given,
                                .hidden_caps = st->cfg->hidden_caps,
                                .idle_ms = idle_s * 1000,
                                .opaque = st,
                                .create_vm = run_incoming_create_vm,
                                .start_vm = run_incoming_start_vm,
                                .on_done = run_incoming_done};
    int rc = mig_parse_tcp_uri("--incoming", uri, p.host, sizeof(p.host), p.port, sizeof(p.port));
    unsigned port;
    if (!rc)
        rc = mig_dest_listen(&st->loop, &p, &st->incoming, &port);
    if (rc)
        return rc;
    fprintf(stderr, "tern: waiting for a migration on %s:%u\n", p.host, port);
    return 0;
}

static void run_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int cli_run(int argc, char **argv)
{
    static const struct option options[] = {
        {"kernel", required_argument, NULL, 'k'},
        {"initrd", required_argument, NULL, 'r'},
        {"mem", required_argument, NULL, 'm'},
        {"cpus", required_argument, NULL, 'c'},
        {"cmdline", required_argument, NULL, 'a'},
        {"serial", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {"incoming", required_argument, NULL, 'i'},
        {"paused", no_argument, NULL, 'p'},
        {"api-socket", required_argument, NULL, 'A'},
        {"incoming-idle-timeout", required_argument, NULL, 'T'},
        {"nested", no_argument, NULL, 'N'},
        {"hyperv", optional_argument, NULL, 'H'},
        {"hide-cap", required_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    struct vm_config cfg = {.mem_size = RUN_DEFAULT_MEM, .cpu_count = 1};
    const char *serial = "stdio";
    const char *incoming = NULL, *api_socket = NULL;
    bool paused = false, mem_given = false, cpus_given = false;
    unsigned long cpus, idle_s = MIG_DEFAULT_IDLE_MS / 1000;
    int opt, rc = 0;

    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":k:r:m:c:a:s:hi:pA:", options, NULL)) != -1) {
        switch (opt) {
        case 'k':
            cfg.kernel_path = optarg;
            break;
        case 'r':
            cfg.initrd_path = optarg;
            break;
        case 'm':
            rc = cli_parse_size("--mem", optarg, &cfg.mem_size);
            mem_given = true;
            break;
        case 'c':
            rc = cli_parse_uint("--cpus", optarg, 1, VM_MAX_CPUS, &cpus);
            cfg.cpu_count = (unsigned)cpus;
            cpus_given = true;
            break;
        case 'i':
            incoming = optarg;
            break;
        case 'p':
            paused = true;
            break;
        case 'A':
            api_socket = optarg;
            break;
        case 'T':
            rc = cli_parse_uint("--incoming-idle-timeout", optarg, 1, 86400, &idle_s);
            break;
        case 'a':
            cfg.cmdline = optarg;
            break;
        case 'N':
            cfg.nested = true;
            break;
        case 'H':
            cfg.hyperv = true;
            if (optarg && !strcmp(optarg, "evmcs"))
                cfg.evmcs = true;
            else if (optarg)
                rc = err_set(-EINVAL, "--hyperv=%s: the only value is evmcs", optarg);
            break;
        case 'C':
            if (!strcmp(optarg, "nested-state"))
                cfg.hidden_caps |= VM_HIDE_NESTED_STATE;
            else if (!strcmp(optarg, "evmcs"))
                cfg.hidden_caps |= VM_HIDE_EVMCS;
            else
                rc = err_set(-EINVAL, "--hide-cap %s: known are nested-state and evmcs", optarg);
            break;
        case 's':
            serial = optarg;
            break;
        case 'h':
            fputs(run_usage, stdout);
            return 0;
        case ':':
            rc = err_set(-EINVAL, "%s needs a value (see tern run --help)", argv[optind - 1]);
            break;
        default:
            rc = err_set(-EINVAL, "unknown option '%s' (see tern run --help)", argv[optind - 1]);
            break;
        }
        if (rc)
            goto fail;
    }
    if (optind < argc) {
        rc = err_set(-EINVAL, "unexpected argument '%s' (see tern run --help)", argv[optind]);
        goto fail;
    }
    if (incoming && cfg.kernel_path) {
        rc = err_set(-EINVAL, "--kernel and --incoming exclude each other");
        goto fail;
    }
    if (incoming && cfg.initrd_path) {
        rc = err_set(-EINVAL, "--initrd and --incoming exclude each other");
        goto fail;
    }
    if (incoming && (cfg.nested || cfg.hyperv)) {
        rc = err_set(-EINVAL, "%s and --incoming exclude each other: the stream carries the CPU",
                     cfg.nested ? "--nested" : "--hyperv");
        goto fail;
    }
    if (!incoming && !cfg.kernel_path) {
        rc = err_set(-EINVAL, "--kernel FILE is required (see tern run --help)");
        goto fail;
    }
    bool listen = incoming && !strncmp(incoming, "tcp:", 4);
    if (paused && (!incoming || listen)) {
        rc = err_set(-EINVAL, "--paused needs --incoming file:PATH");
        goto fail;
    }
    uint64_t host_ram = vm_host_ram_bytes();
    if (host_ram && cfg.mem_size > host_ram) {
        rc =
            err_set(-EINVAL, "--mem: %llu MiB exceeds the host's %llu MiB of RAM",
                    (unsigned long long)(cfg.mem_size >> 20), (unsigned long long)(host_ram >> 20));
        goto fail;
    }
    if (cfg.cmdline && strlen(cfg.cmdline) > BOOT_CMDLINE_MAX) {
        rc = err_set(-E2BIG, "--cmdline is %zu bytes; the limit is %u", strlen(cfg.cmdline),
                     BOOT_CMDLINE_MAX);
        goto fail;
    }
    rc = run_open_serial(serial, &cfg.serial_out_fd, &cfg.serial_in_fd);
    if (rc)
        goto fail;

    signal(SIGPIPE, SIG_IGN);
    struct run_state st = {.exit_status = 0, .cfg = &cfg, .api_socket = api_socket};
    uv_loop_init(&st.loop);
    uv_timer_init(&st.loop, &st.quit_timer);
    st.quit_timer.data = &st;
    uv_timer_init(&st.loop, &st.progress_timer);
    st.progress_timer.data = &st;
    if (listen)
        rc = run_listen(&st, incoming, mem_given ? cfg.mem_size : 0, cpus_given ? cfg.cpu_count : 0,
                        (unsigned)idle_s);
    else if (incoming)
        rc = run_restore(&st, &cfg, incoming, mem_given, cpus_given);
    else
        rc = vm_create(&st.loop, &cfg, run_on_vm_end, &st, &st.vm);
    if (!rc && api_socket && !listen) {
        rc = ctl_server_start(&st.loop, api_socket, run_on_command, &st, &st.ctl);
        if (rc) {
            vm_close(st.vm);
            st.vm = NULL;
        }
    }
    if (!rc) {
        uv_signal_init(&st.loop, &st.sigint);
        uv_signal_init(&st.loop, &st.sigterm);
        st.sigint.data = st.sigterm.data = &st;
        uv_signal_start(&st.sigint, run_on_signal, SIGINT);
        uv_signal_start(&st.sigterm, run_on_signal, SIGTERM);
        rc = listen ? 0 : vm_start(st.vm, paused);
        if (!rc)
            uv_run(&st.loop, UV_RUN_DEFAULT);
        else
            run_finish(&st);
        vm_close(st.vm);
    }
    uv_walk(&st.loop, run_close_walk, NULL);
    uv_run(&st.loop, UV_RUN_DEFAULT);
    uv_loop_close(&st.loop);
    if (cfg.serial_out_fd > STDERR_FILENO)
        close(cfg.serial_out_fd);
    if (rc)
        goto fail;
    return st.exit_status;

fail:
    fprintf(stderr, "tern: %s\n", err_msg());
    return CLI_EXIT_ERROR;
}
