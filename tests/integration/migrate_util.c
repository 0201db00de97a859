/* Live migration between real tern processes: the helpers the migration suites share. */
#include "migrate_util.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *dest_start_args(struct proc *d, ...)
{
    char *argv[16] = {TERN_BINARY, "run", "--incoming", "tcp:127.0.0.1:0"};
    int n = 4;
    va_list ap;
    va_start(ap, d);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 15;)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    proc_start(d, argv);
    cr_assert(proc_wait_stderr(d, "waiting for a migration on 127.0.0.1:", 10000),
              "the destination did not listen: %s", d->err);
    const char *at = strstr(d->err, "127.0.0.1:") + strlen("127.0.0.1:");
    static char uris[4][64];
    static int next;
    char *uri = uris[next++ % 4];
    snprintf(uri, 64, "tcp:127.0.0.1:%d", atoi(at));
    return uri;
}

const char *dest_start(struct proc *d, const char *extra1, const char *extra2)
{
    return extra1 ? dest_start_args(d, extra1, extra2, NULL) : dest_start_args(d, NULL);
}

void source_start(struct proc *p, const char *sock, const char *cpus, const char *guest,
                  const char *cmdline)
{
    char *argv[] = {TERN_BINARY, "run",           "--cpus",       (char *)cpus,
                    "--mem",     "256M",          "--kernel",     (char *)harness_guest(guest),
                    "--cmdline", (char *)cmdline, "--api-socket", (char *)sock,
                    NULL};
    proc_start(p, argv);
    cr_assert(harness_wait_socket(sock, 10000), "no control socket; stderr: %s", p->err);
}

void source_start_args(struct proc *p, const char *sock, ...)
{
    char *argv[24] = {TERN_BINARY, "run"};
    int n = 2;
    va_list ap;
    va_start(ap, sock);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 21;)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n++] = "--api-socket";
    argv[n++] = (char *)sock;
    argv[n] = NULL;
    proc_start(p, argv);
    cr_assert(harness_wait_socket(sock, 10000), "no control socket; stderr: %s", p->err);
}

void migrate_startv(struct proc *m, const char *sock, const char *uri, va_list ap)
{
    char *argv[24] = {TERN_BINARY, "migrate", "--api-socket", (char *)sock, (char *)uri, "--json"};
    int n = 6;
    for (const char *a; (a = va_arg(ap, const char *)) && n < 23;)
        argv[n++] = (char *)a;
    argv[n] = NULL;
    proc_start(m, argv);
}

/* Starts tern migrate --json with extra arguments (NULL-terminated). */
void migrate_start(struct proc *m, const char *sock, const char *uri, ...)
{
    va_list ap;
    va_start(ap, uri);
    migrate_startv(m, sock, uri, ap);
    va_end(ap);
}

/* The same, run to its end; returns its exit status. */
int migrate(struct proc *m, const char *sock, const char *uri, ...)
{
    va_list ap;
    va_start(ap, uri);
    migrate_startv(m, sock, uri, ap);
    va_end(ap);
    return proc_wait(m, 120000);
}

/* The source most failure tests use: memstamp over 16 MiB for about 5 s, past its first pass. */
void source_start_small(struct proc *p, const char *sock)
{
    source_start(p, sock, "2", "memstamp", "mib=16 passes=5 rate=16");
    cr_assert(proc_wait_output(p, "pass 1 ok", 10000), "%s", p->out);
}

/* The data of the last event named name in tern migrate --json output (a new reference). */
json_t *last_event(const struct proc *m, const char *name)
{
    json_t *found = NULL;
    char *copy = strdup(m->out), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *ev = json_loads(line, 0, NULL);
        if (ev && !strcmp(json_string_value(json_object_get(ev, "event")) ?: "", name)) {
            json_decref(found);
            found = json_incref(json_object_get(ev, "data"));
        }
        json_decref(ev);
    }
    free(copy);
    return found;
}

/* The guest moved: the source exited 0 saying so, the destination finished the guest. */
void expect_moved(struct proc *src, struct proc *dst, const char *done_line)
{
    cr_expect_eq(proc_wait(src, 30000), 0, "source: %s", src->err);
    cr_expect(strstr(src->err, "tern: migrated to tcp:127.0.0.1:"), "source: %s", src->err);
    cr_expect(!strstr(src->out, done_line), "the guest finished on the source: %s", src->out);
    cr_expect_eq(proc_wait(dst, 60000), 0, "destination: %s\n%s", dst->out, dst->err);
    cr_expect(strstr(dst->out, done_line), "the guest did not finish on the destination: %s",
              dst->out);
    cr_expect(strstr(dst->err, "migration received"), "destination: %s", dst->err);
}

/* The guest stayed: the source finished it and exited 0; the destination gave up non-zero. */
void expect_stayed(struct proc *src, struct proc *dst, const char *done_line)
{
    cr_expect_eq(proc_wait(src, 60000), 0, "source: %s\n%s", src->out, src->err);
    cr_expect(strstr(src->out, done_line), "the guest did not finish on the source: %s", src->out);
    cr_expect(!strstr(src->err, "migrated to"), "source: %s", src->err);
    if (dst) {
        int st = proc_wait(dst, 60000);
        cr_expect_neq(st, 0, "the destination exited 0: %s", dst->err);
        cr_expect(!strstr(dst->out, done_line), "the guest also ran on the destination: %s",
                  dst->out);
    }
}

/* A destination with TERN_MIGRATE_FAULT set (or none), a source running memstamp, one migrate
 * with the source's fault setting and extra arguments; the guest must stay on the source. */
void fails_and_stays(const char *src_fault, const char *dst_fault, const char *expect,
                     const char *bw, const char *downtime, unsigned connections)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    if (dst_fault)
        setenv("TERN_MIGRATE_FAULT", dst_fault, 1);
    const char *uri = dest_start(&dst, NULL, NULL);
    unsetenv("TERN_MIGRATE_FAULT");
    if (src_fault)
        setenv("TERN_MIGRATE_FAULT", src_fault, 1);
    source_start_small(&src, sock);
    unsetenv("TERN_MIGRATE_FAULT");
    char conns[16];
    snprintf(conns, sizeof(conns), "%u", connections);
    int st = migrate(&m, sock, uri, "--bandwidth", bw ? bw : "1G", "--downtime-ms",
                     downtime ? downtime : "300", "--connections", conns, NULL);
    cr_expect_eq(st, 1, "tern migrate: %d\n%s\n%s", st, m.out, m.err);
    json_t *failed = last_event(&m, "failed");
    cr_assert(failed, "no failed event: %s", m.out);
    const char *msg = json_string_value(json_object_get(failed, "message"));
    cr_expect(strstr(msg, expect), "message '%s' lacks '%s'", msg, expect);
    cr_expect(!json_is_true(json_object_get(failed, "source_paused")));
    json_decref(failed);
    /* The guest goes on making progress here. */
    json_t *status = harness_ctl(sock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(status, "return"), "state")),
                     "running");
    json_decref(status);
    /* A source cut before its handshake was done was only a peer to the destination: it says
     * so and waits for another (stopped here by a signal). */
    bool dst_waits = src_fault && !strcmp(src_fault, "cut@handshake");
    if (dst_waits) {
        cr_expect(proc_wait_stderr(&dst, "still waiting for a migration", 10000), "%s", dst.err);
        kill(dst.pid, SIGTERM);
    }
    expect_stayed(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

/* ---- hostile peers: the destination refuses each, says why, and still takes the real source */

int connect_to(const char *uri)
{
    int port = atoi(strrchr(uri, ':') + 1);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Sends line on a new connection and returns the destination's answer (a JSON line). */
void ask(const char *uri, const char *line, char *reply, size_t size)
{
    int fd = connect_to(uri);
    cr_assert_eq(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    ssize_t n = read(fd, reply, size - 1);
    reply[n > 0 ? n : 0] = '\0';
    close(fd);
}

void real_migration_after(struct proc *dst, const char *uri, ...)
{
    const char *sock = harness_tmp("sock");
    struct proc src, m;
    source_start_small(&src, sock);
    va_list ap;
    va_start(ap, uri);
    migrate_startv(&m, sock, uri, ap);
    va_end(ap);
    cr_expect_eq(proc_wait(&m, 120000), 0, "%s\n%s", m.out, m.err);
    expect_moved(&src, dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&m);
}

void hostile_peers_open(struct hostile_peers *h, const char *uri, char trickle, const char *garbage)
{
    for (int i = 0; i < 3; i++)
        h->idle[i] = connect_to(uri);
    h->trickle = connect_to(uri);
    cr_assert_eq(write(h->trickle, &trickle, 1), 1);
    close(connect_to(uri));
    char reply[512];
    ask(uri, garbage, reply, sizeof(reply));
    cr_expect(strstr(reply, "\"accept\":false"), "%s", reply);
}

void hostile_peers_close(struct hostile_peers *h)
{
    for (int i = 0; i < 3; i++)
        close(h->idle[i]);
    close(h->trickle);
}
