/* The control socket's commands, as a table: each with whether it may run while an outgoing
 * migration owns the VM. */
#include "cli/cli_app.h"

#include "clock/clock.h"
#include "err/err.h"
#include "memory/mem.h"
#include "migrate/mig_file.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef json_t *(*run_command_fn)(struct run_state *st, json_t *req, char *err, size_t err_size);

/* ---- the VM ---------------------------------------------------------------------------- */

static json_t *cmd_status(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    (void)req, (void)err, (void)err_size;
    return json_pack("{s:s,s:i,s:I,s:b}", "state", vm_is_paused(st->vm) ? "paused" : "running",
                     "cpus", (int)vm_cpu_count(st->vm), "mem", (json_int_t)vm_mem(st->vm)->size,
                     "migrating", st->migration != NULL);
}

static json_t *cmd_pause(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    (void)req, (void)err, (void)err_size;
    if (!vm_is_paused(st->vm))
        vm_pause(st->vm);
    return json_object();
}

static json_t *cmd_resume(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    (void)req, (void)err, (void)err_size;
    if (vm_is_paused(st->vm))
        vm_resume(st->vm);
    return json_object();
}

static json_t *cmd_snapshot(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    const char *uri = json_string_value(json_object_get(req, "uri"));
    const char *compress = json_string_value(json_object_get(req, "compress"));
    int level;
    const char *path = mig_file_uri_path("snapshot uri", uri);
    if (!path || mig_parse_compress("snapshot compress", compress, &level)) {
        snprintf(err, err_size, "%s", err_msg());
        return NULL;
    }
    double t0 = clock_now_ms();
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
                     clock_now_ms() - t0, "zero_pages", (json_int_t)stats.zero_pages, "raw_pages",
                     (json_int_t)stats.raw_pages, "zlib_pages", (json_int_t)stats.zlib_pages);
}

static void cmd_on_quit_timer(uv_timer_t *t)
{
    cli_app_finish(t->data);
}

static json_t *cmd_quit(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    (void)req, (void)err, (void)err_size;
    /* Finish on the next loop turn, once this reply has gone out. */
    fprintf(stderr, "tern: quit requested on the control socket\n");
    st->exit_status = 0;
    uv_timer_start(&st->quit_timer, cmd_on_quit_timer, 0, 0);
    return json_object();
}

/* ---- outgoing live migration ------------------------------------------------------------ */

static void cmd_broadcast_progress(struct run_state *st, const char *event,
                                   const struct mig_progress *p)
{
    ctl_server_broadcast(st->ctl,
                         json_pack("{s:s,s:o}", "event", event, "data", mig_progress_to_json(p)));
}

static void cmd_on_progress_timer(uv_timer_t *t)
{
    struct run_state *st = t->data;
    if (!st->migration)
        return;
    struct mig_progress p;
    mig_source_progress(st->migration, &p);
    cmd_broadcast_progress(st, "progress", &p);
}

static void cmd_after_migrated(void *opaque)
{
    cli_app_finish(opaque);
}

static void cmd_on_migration_done(struct mig_source *src, void *opaque)
{
    struct run_state *st = opaque;
    struct mig_progress p;
    mig_source_progress(src, &p);
    mig_source_free(src);
    st->migration = NULL;
    uv_timer_stop(&st->progress_timer);
    st->last_migration = p;
    st->have_last_migration = true;
    cmd_broadcast_progress(st, mig_phase_name(p.phase), &p);
    if (p.phase == MIG_PHASE_COMPLETED) {
        fprintf(stderr, "tern: migrated to %s (downtime %.1f ms, %.0f ms in all)\n", p.uri,
                p.downtime_ms, p.total_ms);
        st->exit_status = 0;
        /* The VM runs on the destination now; this process ends once the final event is out. */
        ctl_server_when_drained(st->ctl, cmd_after_migrated, st);
        return;
    }
    fprintf(stderr, "tern: migration to %s %s: %s\n", p.uri,
            p.phase == MIG_PHASE_CANCELLED ? "cancelled" : "failed", p.message);
    if (st->end_after_migration)
        cli_app_finish(st);
}

/* An optional integer member within [0, max]. */
static int cmd_get_uint(json_t *req, const char *key, uint64_t max, uint64_t *out, char *err,
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

/* The migrate request's parameters; 0 or -EINVAL with err written. */
static int cmd_migrate_params(json_t *req, struct mig_source_params *params, char *err,
                              size_t err_size)
{
    const char *uri = json_string_value(json_object_get(req, "uri"));
    const char *compress = json_string_value(json_object_get(req, "compress"));
    uint64_t downtime = MIG_DEFAULT_DOWNTIME_MS, bandwidth = 0, timeout = 0, idle = 0;
    if (mig_parse_tcp_uri("migrate uri", uri, params->host, sizeof(params->host), params->port,
                          sizeof(params->port)) ||
        mig_parse_compress("migrate compress", compress, &params->compress_level)) {
        snprintf(err, err_size, "%s", err_msg());
        return -EINVAL;
    }
    if (cmd_get_uint(req, "downtime_ms", 3600000, &downtime, err, err_size) ||
        cmd_get_uint(req, "bandwidth", UINT64_MAX >> 1, &bandwidth, err, err_size) ||
        cmd_get_uint(req, "timeout", 86400 * 365, &timeout, err, err_size) ||
        cmd_get_uint(req, "idle_timeout_ms", 86400000, &idle, err, err_size))
        return -EINVAL;
    if (!strcmp(params->port, "0")) {
        snprintf(err, err_size, "migrate uri: port 0 names no destination");
        return -EINVAL;
    }
    uint64_t connections = 1;
    if (cmd_get_uint(req, "connections", MIG_MAX_CONNECTIONS, &connections, err, err_size))
        return -EINVAL;
    if (!connections) {
        snprintf(err, err_size, "migrate: \"connections\" must be 1 to %u", MIG_MAX_CONNECTIONS);
        return -EINVAL;
    }
    params->downtime_ms = (unsigned)downtime;
    params->bandwidth = bandwidth;
    params->timeout_s = (unsigned)timeout;
    params->idle_ms = (unsigned)idle;
    params->connections = (unsigned)connections;
    /* Credentials last: what holds them must be handed to the migration or freed. */
    struct mig_tls_options tls = {
        .creds_dir = json_string_value(json_object_get(req, "tls_creds")),
        .psk_file = json_string_value(json_object_get(req, "tls_psk")),
        .names = json_string_value(json_object_get(req, "tls_names")),
    };
    if ((tls.names || mig_tls_wanted(&tls)) && mig_tls_creds_load(&tls, false, &params->tls)) {
        snprintf(err, err_size, "%s", err_msg());
        return -EINVAL;
    }
    return 0;
}

static json_t *cmd_migrate(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    if (st->migration) {
        snprintf(err, err_size, "a migration is already under way");
        return NULL;
    }
    struct mig_source_params params = {.downtime_ms = MIG_DEFAULT_DOWNTIME_MS};
    if (cmd_migrate_params(req, &params, err, err_size))
        return NULL;
    if (vm_is_paused(st->vm)) {
        /* Live migration of a paused VM would work, but its rules (resume on failure) would not
         * fit: keep it simple and honest. */
        snprintf(err, err_size, "the VM is paused; resume it first, or take a snapshot");
        mig_tls_creds_free(params.tls);
        return NULL;
    }
    if (mig_source_start(&st->loop, st->vm, &params, cmd_on_migration_done, st, &st->migration)) {
        snprintf(err, err_size, "%s", err_msg());
        return NULL;
    }
    if (json_is_true(json_object_get(req, "events")))
        ctl_server_subscribe_current(st->ctl);
    uv_timer_start(&st->progress_timer, cmd_on_progress_timer, 250, 250);
    struct mig_progress p;
    mig_source_progress(st->migration, &p);
    return json_pack("{s:s}", "uri", p.uri);
}

static json_t *cmd_migrate_status(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    (void)req, (void)err, (void)err_size;
    struct mig_progress p;
    if (st->migration)
        mig_source_progress(st->migration, &p);
    else if (st->have_last_migration)
        p = st->last_migration;
    else
        return json_pack("{s:s}", "phase", "none");
    return mig_progress_to_json(&p);
}

static json_t *cmd_migrate_cancel(struct run_state *st, json_t *req, char *err, size_t err_size)
{
    (void)req;
    if (!st->migration) {
        snprintf(err, err_size, "no migration is under way");
        return NULL;
    }
    mig_source_cancel(st->migration, "migration cancelled");
    return json_object();
}

/* ---- the table ------------------------------------------------------------------------- */

static const struct {
    const char *name;
    bool while_migrating; /* may run while an outgoing migration owns the VM */
    run_command_fn handle;
} cmd_table[] = {
    {"status", true, cmd_status},
    {"pause", false, cmd_pause},
    {"resume", false, cmd_resume},
    {"snapshot", false, cmd_snapshot},
    {"quit", false, cmd_quit},
    {"migrate", true, cmd_migrate},
    {"migrate-status", true, cmd_migrate_status},
    {"migrate-cancel", true, cmd_migrate_cancel},
};
#define CMD_COUNT (sizeof(cmd_table) / sizeof(cmd_table[0]))

static void cmd_unknown(const char *command, char *err, size_t err_size)
{
    int n = snprintf(err, err_size, "unknown command '%s' (", command);
    for (size_t i = 0; i < CMD_COUNT && n > 0 && (size_t)n < err_size; i++)
        n += snprintf(err + n, err_size - (size_t)n, "%s%s", i ? ", " : "", cmd_table[i].name);
    if (n > 0 && (size_t)n < err_size)
        snprintf(err + n, err_size - (size_t)n, ")");
}

json_t *cli_command(void *opaque, const char *command, json_t *req, char *err, size_t err_size)
{
    struct run_state *st = opaque;
    if (st->ending) {
        snprintf(err, err_size, "the VM is shutting down");
        return NULL;
    }
    for (size_t i = 0; i < CMD_COUNT; i++) {
        if (strcmp(command, cmd_table[i].name))
            continue;
        if (st->migration && !cmd_table[i].while_migrating) {
            snprintf(err, err_size,
                     "a migration is under way: '%s' must wait for it (or migrate-cancel)",
                     command);
            return NULL;
        }
        return cmd_table[i].handle(st, req, err, err_size);
    }
    cmd_unknown(command, err, err_size);
    return NULL;
}
