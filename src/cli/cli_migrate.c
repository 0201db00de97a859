/* `tern migrate`: asks a running tern (through its control socket) to live-migrate its VM, and
 * follows the migration's events until it ends. */
#include "cli/cli.h"

#include "control/ctl_server.h"
#include "err/err.h"
#include "migrate/mig_file.h"
#include "migrate/mig_source.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char migrate_usage[] =
    "Usage: tern migrate --api-socket PATH tcp:HOST:PORT [OPTIONS]\n"
    "Live-migrate the VM of the tern serving PATH to a tern started with\n"
    "`tern run --incoming tcp:ADDR:PORT` on the destination host.\n"
    "\n"
    "  -A, --api-socket PATH    the source tern's control socket\n"
    "  -d, --downtime-ms N      longest pause to aim for at switchover (default 300)\n"
    "  -b, --bandwidth RATE     cap on pre-copy traffic, bytes/s: 100M, 1G (default none)\n"
    "  -z, --compress C         none, zlib or zlib:LEVEL (default none)\n"
    "  -t, --timeout SECONDS    give up after this long; the VM keeps running here\n"
    "  -n, --connections N      spread RAM over N TCP (or TLS) connections, 1-16\n"
    "                           (default 1); state and control stay on the first\n"
    "      --tls-creds DIR      TLS 1.3, verifying the destination against\n"
    "                           DIR/ca-cert.pem and showing DIR/client-cert.pem and\n"
    "                           DIR/client-key.pem (QEMU's tls-creds-x509 layout)\n"
    "      --tls-psk FILE       TLS 1.3 with the first key in FILE (identity:hexkey)\n"
    "      --tls-names LIST     with --tls-creds, the destination's certificate must name\n"
    "                           one of these (default: the HOST of the URI)\n"
    "  -j, --json               print every event as one JSON line\n"
    "  -h, --help               show this help\n"
    "\n"
    "On a terminal a live line shows pass, sent, remaining, dirty rate, throughput and ETA;\n"
    "a summary follows at the end. Ctrl-C cancels the migration (the VM keeps running here).\n"
    "Exit status: 0 when the VM runs on the destination, 1 when the migration failed or was\n"
    "cancelled (the VM still runs here, unless the summary says the source stays paused),\n"
    "2 for usage errors.\n";

static volatile sig_atomic_t migrate_interrupted;

static void migrate_on_sigint(int sig)
{
    (void)sig;
    migrate_interrupted = 1;
}

static void human_bytes(uint64_t n, char *buf, size_t size)
{
    if (n >= (1ull << 30))
        snprintf(buf, size, "%.2f GiB", n / 1073741824.0);
    else if (n >= (1ull << 20))
        snprintf(buf, size, "%.1f MiB", n / 1048576.0);
    else
        snprintf(buf, size, "%.1f KiB", n / 1024.0);
}

static uint64_t get_u64(json_t *data, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(data, key));
    return v > 0 ? (uint64_t)v : 0;
}

static void print_live_line(json_t *data)
{
    char sent[32], rate[32], tput[32];
    human_bytes(get_u64(data, "bytes_sent"), sent, sizeof(sent));
    human_bytes(get_u64(data, "dirty_rate"), rate, sizeof(rate));
    human_bytes(get_u64(data, "throughput"), tput, sizeof(tput));
    fprintf(stdout,
            "\r\033[K%s: pass %d, sent %s, remaining %llu pages, dirty %s/s, %s/s, ETA %llu ms%s",
            json_string_value(json_object_get(data, "phase")),
            (int)json_integer_value(json_object_get(data, "pass")), sent,
            (unsigned long long)get_u64(data, "remaining_pages"), rate, tput,
            (unsigned long long)get_u64(data, "eta_ms"),
            get_u64(data, "throttle_pct") ? ", throttled" : "");
    fflush(stdout);
}

static void print_summary(const char *event, json_t *data, bool tty)
{
    if (tty)
        fputs("\r\033[K", stdout);
    char bytes[32];
    human_bytes(get_u64(data, "bytes_sent"), bytes, sizeof(bytes));
    if (!strcmp(event, "completed")) {
        printf("migrated to %s\n", json_string_value(json_object_get(data, "uri")));
        printf("  total time   %.0f ms\n", json_number_value(json_object_get(data, "total_ms")));
        printf("  downtime     %.1f ms (destination's own measure: %.1f ms)\n",
               json_number_value(json_object_get(data, "downtime_ms")),
               json_number_value(json_object_get(data, "dest_downtime_ms")));
        printf("  stream       format %s\n", json_string_value(json_object_get(data, "stream")));
        printf("  channel      %s, %lld connection(s)\n",
               json_string_value(json_object_get(data, "security")),
               (long long)json_integer_value(json_object_get(data, "connections")));
    } else {
        printf("migration %s: %s\n", event, json_string_value(json_object_get(data, "message")));
        printf("  time         %.0f ms\n", json_number_value(json_object_get(data, "total_ms")));
        printf("  the VM %s\n", json_is_true(json_object_get(data, "source_paused"))
                                    ? "stays PAUSED on the source (see above)"
                                    : "keeps running on the source");
    }
    printf("  sent         %s in %d passes\n", bytes,
           (int)json_integer_value(json_object_get(data, "pass")));
    printf("  pages        %llu zero, %llu raw, %llu compressed\n",
           (unsigned long long)get_u64(data, "zero_pages"),
           (unsigned long long)get_u64(data, "raw_pages"),
           (unsigned long long)get_u64(data, "zlib_pages"));
    printf("  throttle     %llu%%\n", (unsigned long long)get_u64(data, "throttle_pct"));
}

static void send_cancel(const char *socket_path)
{
    json_t *req = json_pack("{s:s}", "command", "migrate-cancel"), *reply = NULL;
    if (ctl_request(socket_path, req, &reply))
        fprintf(stderr, "tern: cannot cancel: %s\n", err_msg());
    json_decref(req);
    json_decref(reply);
}

/* Follows events until the migration ends; returns the exit status. */
static int follow(struct ctl_client *c, const char *socket_path, bool json, bool tty)
{
    bool cancel_sent = false;
    for (;;) {
        if (migrate_interrupted && !cancel_sent) {
            fprintf(stderr, "\ntern: cancelling the migration\n");
            send_cancel(socket_path);
            cancel_sent = true;
        }
        json_t *msg;
        int rc = ctl_read_message(c, 500, &msg);
        if (rc == -EINTR || rc == -ETIMEDOUT)
            continue;
        if (rc) {
            fprintf(stderr, "tern: lost the source tern before the migration ended: %s\n",
                    err_msg());
            return 1;
        }
        const char *event = json_string_value(json_object_get(msg, "event"));
        json_t *data = json_object_get(msg, "data");
        if (!event || !json_is_object(data)) {
            json_decref(msg);
            continue;
        }
        if (json) {
            char *text = json_dumps(msg, JSON_COMPACT);
            if (text)
                puts(text);
            free(text);
            fflush(stdout);
        } else if (tty && !strcmp(event, "progress")) {
            print_live_line(data);
        }
        bool completed = !strcmp(event, "completed");
        bool ended = completed || !strcmp(event, "failed") || !strcmp(event, "cancelled");
        if (ended && !json)
            print_summary(event, data, tty);
        json_decref(msg);
        if (ended)
            return completed ? 0 : 1;
    }
}

struct migrate_options {
    const char *socket_path, *compress, *uri;
    char *tls_creds, *tls_psk; /* absolute: the source tern may run elsewhere */
    const char *tls_names;
    unsigned long downtime, timeout, connections;
    uint64_t bandwidth;
    bool json;
};

static const struct option migrate_long_options[] = {
    {"api-socket", required_argument, NULL, 'A'},
    {"downtime-ms", required_argument, NULL, 'd'},
    {"bandwidth", required_argument, NULL, 'b'},
    {"compress", required_argument, NULL, 'z'},
    {"timeout", required_argument, NULL, 't'},
    {"json", no_argument, NULL, 'j'},
    {"connections", required_argument, NULL, 'n'},
    {"tls-creds", required_argument, NULL, 'X'},
    {"tls-psk", required_argument, NULL, 'K'},
    {"tls-names", required_argument, NULL, 'W'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The path as the source tern, in its own working directory, will find it. */
static int migrate_abs_path(const char *flag, const char *path, char **out)
{
    free(*out);
    *out = realpath(path, NULL);
    return *out ? 0 : err_sys(-errno, "%s %s", flag, path);
}

static int migrate_option(int opt, void *ctx)
{
    struct migrate_options *o = ctx;
    int level;
    switch (opt) {
    case 'A':
        o->socket_path = optarg;
        return 0;
    case 'd':
        return cli_parse_uint("--downtime-ms", optarg, 1, 3600000, &o->downtime);
    case 'b':
        return cli_parse_rate("--bandwidth", optarg, &o->bandwidth);
    case 'z':
        o->compress = optarg;
        return mig_parse_compress("--compress", o->compress, &level);
    case 't':
        return cli_parse_uint("--timeout", optarg, 1, 86400 * 365, &o->timeout);
    case 'n':
        return cli_parse_uint("--connections", optarg, 1, MIG_MAX_CONNECTIONS, &o->connections);
    case 'X':
        return migrate_abs_path("--tls-creds", optarg, &o->tls_creds);
    case 'K':
        return migrate_abs_path("--tls-psk", optarg, &o->tls_psk);
    case 'W':
        o->tls_names = optarg;
        return 0;
    default: /* 'j' */
        o->json = true;
        return 0;
    }
}

/* Parses argv into o; 1 when --help was printed. */
static int migrate_parse(int argc, char **argv, struct migrate_options *o)
{
    int rc = cli_getopt(argc, argv, "migrate", ":A:d:b:z:t:n:jh", migrate_long_options,
                        migrate_usage, migrate_option, o);
    if (rc)
        return rc;
    if (!o->socket_path)
        return err_set(-EINVAL, "--api-socket PATH is required (see tern migrate --help)");
    if (optind + 1 != argc)
        return err_set(-EINVAL, optind == argc
                                    ? "the destination tcp:HOST:PORT is missing"
                                    : "one destination URI only (see tern migrate --help)");
    struct mig_tls_options tls = {o->tls_creds, o->tls_psk, o->tls_names};
    if ((rc = mig_tls_options_check(&tls)))
        return rc;
    char host[256], port[16];
    o->uri = argv[optind];
    return mig_parse_tcp_uri("destination", o->uri, host, sizeof(host), port, sizeof(port));
}

/* Sends the migrate request and reads its answer; *c is the connection events follow on. */
static int migrate_request(const struct migrate_options *o, struct ctl_client **c)
{
    json_t *req =
        json_pack("{s:s,s:s,s:I,s:I,s:I,s:b}", "command", "migrate", "uri", o->uri, "downtime_ms",
                  (json_int_t)o->downtime, "bandwidth", (json_int_t)o->bandwidth, "timeout",
                  (json_int_t)o->timeout, "events", 1);
    if (o->compress)
        json_object_set_new(req, "compress", json_string(o->compress));
    if (o->connections)
        json_object_set_new(req, "connections", json_integer((json_int_t)o->connections));
    if (o->tls_creds)
        json_object_set_new(req, "tls_creds", json_string(o->tls_creds));
    if (o->tls_psk)
        json_object_set_new(req, "tls_psk", json_string(o->tls_psk));
    if (o->tls_names)
        json_object_set_new(req, "tls_names", json_string(o->tls_names));
    int rc = ctl_open(o->socket_path, req, c);
    json_decref(req);
    if (rc)
        return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = migrate_on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    json_t *reply;
    do
        rc = ctl_read_message(*c, -1, &reply);
    while (rc == -EINTR);
    json_t *error = rc ? NULL : json_object_get(reply, "error");
    if (error)
        rc = err_set(-EINVAL, "%s", json_string_value(json_object_get(error, "message")));
    if (!rc || error)
        json_decref(reply);
    if (rc)
        ctl_client_close(*c);
    return rc;
}

int cli_migrate(int argc, char **argv)
{
    struct migrate_options o = {.downtime = MIG_DEFAULT_DOWNTIME_MS};
    struct ctl_client *c;
    int rc = migrate_parse(argc, argv, &o);
    if (rc == 1) {
        free(o.tls_creds);
        free(o.tls_psk);
        return 0;
    }
    if (!rc)
        rc = migrate_request(&o, &c);
    free(o.tls_creds);
    free(o.tls_psk);
    if (rc) {
        fprintf(stderr, "tern: %s\n", err_msg());
        return CLI_EXIT_ERROR;
    }
    int status = follow(c, o.socket_path, o.json, isatty(STDOUT_FILENO));
    ctl_client_close(c);
    return status;
}
