/* Live migration between real tern processes over loopback TCP: guests that verify their own
 * memory after the move, chains, compression, auto-converge, and the source keeping its VM
 * through every failure. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "migrate_util.h"

TestSuite(migrate, .init = harness_require_kvm, .timeout = 180);

static void live_memstamp(const char *compress)
{
    const char *sock = harness_tmp("sock"), *dsock = harness_tmp("dsock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, "--api-socket", dsock);
    source_start(&src, sock, "2", "memstamp", "mib=64 passes=12 rate=64");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 10000), "%s", src.out);
    int st = compress ? migrate(&m, sock, uri, "--compress", compress, NULL)
                      : migrate(&m, sock, uri, NULL);
    cr_assert_eq(st, 0, "tern migrate: %s\n%s", m.out, m.err);
    json_t *done = last_event(&m, "completed");
    cr_assert(done, "no completed event: %s", m.out);
    double downtime = json_number_value(json_object_get(done, "downtime_ms"));
    cr_expect(downtime > 0 && downtime < 5000, "downtime %f ms", downtime);
    cr_expect(json_integer_value(json_object_get(done, "raw_pages")) +
                      json_integer_value(json_object_get(done, "zlib_pages")) >=
                  16384,
              "fewer pages than memstamp stamps were sent");
    if (compress)
        cr_expect_gt(json_integer_value(json_object_get(done, "zlib_pages")), 0);
    else
        cr_expect_eq(json_integer_value(json_object_get(done, "zlib_pages")), 0);
    json_decref(done);
    /* The destination is the VM's process now, control socket and all. */
    cr_assert(harness_wait_socket(dsock, 10000), "%s", dst.err);
    json_t *status = harness_ctl(dsock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(status, "return"), "state")),
                     "running");
    json_decref(status);
    expect_moved(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

Test(migrate, memstamp_moves_while_it_writes)
{
    live_memstamp(NULL);
}

Test(migrate, memstamp_moves_compressed)
{
    live_memstamp("zlib");
}

Test(migrate, smp_with_4_vcpus)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, NULL, NULL);
    source_start(&src, sock, "4", "smp", "n=300000000");
    usleep(300000);
    cr_assert_eq(migrate(&m, sock, uri, NULL), 0, "%s\n%s", m.out, m.err);
    expect_moved(&src, &dst, "smp: OK: 4 vCPUs");
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

/* A -> B -> C, the guest stamping all along; B and C were each destinations first. */
Test(migrate, chain_a_b_c)
{
    const char *sa = harness_tmp("sock"), *sb = harness_tmp("sock");
    struct proc a, b, c, m1, m2;
    const char *ub = dest_start(&b, "--api-socket", sb);
    const char *uc = dest_start(&c, NULL, NULL);
    source_start(&a, sa, "2", "memstamp", "mib=32 passes=8 rate=64");
    cr_assert(proc_wait_output(&a, "pass 1 ok", 10000));
    cr_assert_eq(migrate(&m1, sa, ub, NULL), 0, "%s\n%s", m1.out, m1.err);
    cr_assert(harness_wait_socket(sb, 10000), "%s", b.err);
    cr_assert(proc_wait_output(&b, "ok", 10000), "B did not run the guest: %s", b.out);
    cr_assert_eq(migrate(&m2, sb, uc, NULL), 0, "%s\n%s", m2.out, m2.err);
    cr_expect_eq(proc_wait(&a, 30000), 0);
    expect_moved(&b, &c, MEMSTAMP_DONE);
    cr_expect(!strstr(a.out, MEMSTAMP_DONE));
    proc_free(&a);
    proc_free(&b);
    proc_free(&c);
    proc_free(&m1);
    proc_free(&m2);
}

/* The guest dirties 160 MiB/s against a 40 MB/s cap: only throttling lets it converge. */
Test(migrate, converges_through_throttling)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, NULL, NULL);
    source_start(&src, sock, "2", "memstamp", "mib=16 passes=120 rate=160 every=20");
    cr_assert(proc_wait_output(&src, "pass 20 ok", 10000), "%s", src.out);
    cr_assert_eq(migrate(&m, sock, uri, "--bandwidth", "40M", NULL), 0, "%s\n%s", m.out, m.err);
    json_t *done = last_event(&m, "completed");
    cr_assert(done);
    int throttle = (int)json_integer_value(json_object_get(done, "throttle_pct"));
    int passes = (int)json_integer_value(json_object_get(done, "pass"));
    cr_expect_geq(throttle, 20, "converged without throttling (%d passes)", passes);
    cr_expect_geq(passes, 3);
    json_decref(done);
    expect_moved(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

/* ---- failures: the source keeps the VM -------------------------------------------------- */

Test(migrate, source_cuts_at_handshake)
{
    fails_and_stays("cut@handshake", NULL, "cut at handshake", NULL, NULL, 1);
}

Test(migrate, source_cuts_in_first_pass)
{
    fails_and_stays("cut@first-pass", NULL, "connection cut", NULL, NULL, 1);
}

Test(migrate, source_cuts_in_dirty_pass)
{
    fails_and_stays("cut@dirty-pass", NULL, "connection cut", "20M", "1", 1);
}

Test(migrate, source_cuts_in_state)
{
    fails_and_stays("cut@state", NULL, "cut at state", NULL, NULL, 1);
}

Test(migrate, source_cuts_before_go)
{
    fails_and_stays("cut@ready", NULL, "cut before go", NULL, NULL, 1);
}

Test(migrate, destination_killed_at_handshake)
{
    fails_and_stays(NULL, "kill@handshake", "destination", NULL, NULL, 1);
}

Test(migrate, destination_cuts_in_first_pass)
{
    fails_and_stays(NULL, "cut@first-pass", "destination", NULL, NULL, 1);
}

Test(migrate, destination_killed_before_acknowledging)
{
    fails_and_stays(NULL, "kill@restored", "destination", NULL, NULL, 1);
}

Test(migrate, destination_killed_mid_stream)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, NULL, NULL);
    source_start_small(&src, sock);
    migrate_start(&m, sock, uri, "--bandwidth", "4M", NULL);
    usleep(700000);
    kill(dst.pid, SIGKILL);
    cr_expect_eq(proc_wait(&m, 30000), 1, "%s\n%s", m.out, m.err);
    cr_expect_eq(proc_wait(&dst, 5000), 128 + SIGKILL);
    expect_stayed(&src, NULL, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

Test(migrate, timeout_keeps_the_vm_here)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, NULL, NULL);
    source_start_small(&src, sock);
    cr_expect_eq(migrate(&m, sock, uri, "--bandwidth", "2M", "--timeout", "1", NULL), 1);
    json_t *failed = last_event(&m, "failed");
    cr_assert(failed, "%s", m.out);
    cr_expect(strstr(json_string_value(json_object_get(failed, "message")), "--timeout 1 s"));
    json_decref(failed);
    expect_stayed(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

Test(migrate, cancel_keeps_the_vm_here)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, NULL, NULL);
    source_start_small(&src, sock);
    migrate_start(&m, sock, uri, "--bandwidth", "2M", NULL);
    cr_assert(proc_wait_output(&m, "first-pass", 10000), "%s", m.out);
    /* While it runs, the VM belongs to the migration. */
    json_t *r = harness_ctl(sock, "pause", NULL);
    cr_expect(json_object_get(r, "error"), "pause during a migration was accepted");
    json_decref(r);
    r = harness_ctl(sock, "migrate-cancel", NULL);
    cr_expect(json_object_get(r, "return"));
    json_decref(r);
    cr_expect_eq(proc_wait(&m, 30000), 1, "%s", m.out);
    json_t *cancelled = last_event(&m, "cancelled");
    cr_expect(cancelled, "%s", m.out);
    json_decref(cancelled);
    r = harness_ctl(sock, "migrate-status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r, "return"), "phase")),
                     "cancelled");
    json_decref(r);
    expect_stayed(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

Test(migrate, destination_refuses_at_handshake)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, "--mem", "128M");
    source_start(&src, sock, "2", "memstamp", "mib=16 passes=3 rate=16");
    cr_expect_eq(migrate(&m, sock, uri, NULL), 1);
    json_t *failed = last_event(&m, "failed");
    cr_assert(failed, "%s", m.out);
    const char *msg = json_string_value(json_object_get(failed, "message"));
    cr_expect(strstr(msg, "refused") && strstr(msg, "--mem 128 MiB"), "%s", msg);
    cr_expect_eq(json_integer_value(json_object_get(failed, "pages_sent")), 0);
    json_decref(failed);
    expect_stayed(&src, NULL, MEMSTAMP_DONE);
    /* The refused source was one peer: the destination says why and waits for another. */
    cr_expect(proc_wait_stderr(&dst, "still waiting for a migration", 5000), "%s", dst.err);
    cr_expect(strstr(dst.err, "--mem 128 MiB"), "%s", dst.err);
    kill(dst.pid, SIGTERM);
    cr_expect_eq(proc_wait(&dst, 10000), 128 + SIGTERM, "%s", dst.err);
    cr_expect(!strstr(dst.out, MEMSTAMP_DONE));
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

/* After "go" the destination may run the guest: if it dies before acknowledging, the source
 * must not run it too. */
Test(migrate, destination_dies_after_resume_source_stays_paused)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    setenv("TERN_MIGRATE_FAULT", "kill@resumed", 1);
    const char *uri = dest_start(&dst, NULL, NULL);
    unsetenv("TERN_MIGRATE_FAULT");
    source_start_small(&src, sock);
    cr_expect_eq(migrate(&m, sock, uri, NULL), 1);
    json_t *failed = last_event(&m, "failed");
    cr_assert(failed, "%s", m.out);
    cr_expect(json_is_true(json_object_get(failed, "source_paused")));
    cr_expect(strstr(json_string_value(json_object_get(failed, "message")), "stays paused"));
    json_decref(failed);
    json_t *status = harness_ctl(sock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(status, "return"), "state")),
                     "paused");
    json_decref(status);
    json_decref(harness_ctl(sock, "quit", NULL));
    cr_expect_eq(proc_wait(&src, 10000), 0);
    cr_expect(!strstr(src.out, MEMSTAMP_DONE));
    cr_expect_eq(proc_wait(&dst, 10000), 128 + SIGKILL);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

Test(migrate, peer_sends_garbage)
{
    struct proc dst;
    const char *uri = dest_start(&dst, NULL, NULL);
    char reply[512];
    ask(uri, "GET / HTTP/1.0\r\n\r\n", reply, sizeof(reply));
    cr_expect(strstr(reply, "\"accept\":false"), "%s", reply);
    cr_expect(proc_wait_stderr(&dst, "still waiting for a migration", 5000), "%s", dst.err);
    cr_expect(strstr(dst.err, "not tern's migration protocol 1: no \"hello\" object"), "%s",
              dst.err);
    real_migration_after(&dst, uri, NULL);
    proc_free(&dst);
}

Test(migrate, peer_connects_and_closes)
{
    struct proc dst;
    const char *uri = dest_start(&dst, NULL, NULL);
    close(connect_to(uri));
    cr_expect(proc_wait_stderr(&dst, "still waiting for a migration", 5000), "%s", dst.err);
    cr_expect(strstr(dst.err, "closed the connection"), "%s", dst.err);
    real_migration_after(&dst, uri, NULL);
    proc_free(&dst);
}

Test(migrate, a_malformed_handshake_field_is_named)
{
    struct proc dst;
    const char *uri = dest_start(&dst, NULL, NULL);
    char reply[1024];
    ask(uri,
        "{\"hello\":{\"protocol\":1,\"stream_major\":1,\"stream_minor\":2,\"mem\":\"lots\"}}\n",
        reply, sizeof(reply));
    cr_expect(strstr(reply, "\\\"mem\\\" is not an integer"), "%s", reply);
    ask(uri, "{\"hello\":{\"protocol\":7}}\n", reply, sizeof(reply));
    cr_expect(strstr(reply, "\\\"protocol\\\" is 7"), "%s", reply);
    kill(dst.pid, SIGTERM);
    cr_expect_eq(proc_wait(&dst, 10000), 128 + SIGTERM, "%s", dst.err);
    proc_free(&dst);
}

/* One byte every 200 ms keeps the idle timer quiet but not the handshake's own deadline. */
Test(migrate, a_trickling_peer_is_cut_at_the_handshake_deadline)
{
    struct proc dst;
    const char *uri = dest_start(&dst, "--incoming-idle-timeout", "3");
    int fd = connect_to(uri);
    const char *hello = "{\"hello\":{\"protocol\":1";
    bool cut = false;
    for (unsigned i = 0; i < 100 && !cut; i++) {
        if (write(fd, hello + i % strlen(hello), 1) != 1)
            break;
        usleep(200000);
        proc_wait_stderr(&dst, "not done within", 1);
        cut = strstr(dst.err, "the handshake not done within 10000 ms") != NULL;
    }
    cr_expect(cut, "the trickling peer was never cut: %s", dst.err);
    close(fd);
    real_migration_after(&dst, uri, NULL);
    proc_free(&dst);
}

/* Garbage, a trickle, a bare connect and idle connections all at once: the real source gets
 * through while they hold their connections. */
Test(migrate, hostile_peers_do_not_keep_the_real_source_out)
{
    struct proc dst;
    const char *uri = dest_start(&dst, NULL, NULL);
    struct hostile_peers h;
    hostile_peers_open(&h, uri, '{', "\x16\x03\x01 not a handshake\n");
    real_migration_after(&dst, uri, NULL);
    hostile_peers_close(&h);
    proc_free(&dst);
}

Test(migrate, too_many_connections_at_once_are_refused)
{
    struct proc dst;
    const char *uri = dest_start(&dst, NULL, NULL);
    int idle[8];
    for (int i = 0; i < 8; i++)
        idle[i] = connect_to(uri);
    usleep(300000); /* the destination has accepted all eight */
    int fd = connect_to(uri);
    char reply[512] = "";
    cr_expect_gt(read(fd, reply, sizeof(reply) - 1), 0);
    cr_expect(strstr(reply, "too many connections in their handshake at once"), "%s", reply);
    close(fd);
    for (int i = 0; i < 8; i++)
        close(idle[i]);
    cr_expect(proc_wait_stderr(&dst, "still waiting for a migration", 5000), "%s", dst.err);
    usleep(300000);
    real_migration_after(&dst, uri, NULL);
    proc_free(&dst);
}

Test(migrate, peer_stalls_mid_record)
{
    struct proc dst;
    const char *uri = dest_start(&dst, "--incoming-idle-timeout", "1");
    int fd = connect_to(uri);
    /* A handshake a source on this host would send (it asks for nothing the host lacks)... */
    const char hello[] = "{\"hello\":{\"protocol\":1,\"stream_major\":1,\"stream_minor\":0,"
                         "\"mem\":16777216,\"cpus\":1,\"xsave_size\":4096,\"nested_size\":0,"
                         "\"evmcs\":false,\"cpuid\":{\"1.ECX\":0,\"1.EDX\":0,\"7.0.EBX\":0,"
                         "\"7.0.ECX\":0,\"7.0.EDX\":0,\"0xD.1.EAX\":0,\"0x80000001.ECX\":0,"
                         "\"0x80000001.EDX\":0}}}\n";
    cr_assert_eq(write(fd, hello, sizeof(hello) - 1), (ssize_t)sizeof(hello) - 1);
    char reply[4096] = "";
    cr_assert_gt(read(fd, reply, sizeof(reply) - 1), 0);
    cr_assert(strstr(reply, "\"accept\":true"), "%s", reply);
    /* ...then the stream header and half a record header, and nothing more. */
    const char start[] = "{\"start\":true}\n";
    cr_assert_eq(write(fd, start, sizeof(start) - 1), (ssize_t)sizeof(start) - 1);
    const unsigned char partial[16 + 10] = {'T', 'E', 'R', 'N', 'S', 'T', 'R', 'M', 1, 0,
                                            0,   0,   0,   0,   0,   0,   1,   0,   1, 0};
    cr_assert_eq(write(fd, partial, sizeof(partial)), (ssize_t)sizeof(partial));
    cr_expect_eq(proc_wait(&dst, 10000), 2);
    cr_expect(strstr(dst.err, "nothing sent or received for 1000 ms"), "%s", dst.err);
    close(fd);
    proc_free(&dst);
}

Test(migrate, second_connection_is_refused)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, NULL, NULL);
    source_start_small(&src, sock);
    migrate_start(&m, sock, uri, "--bandwidth", "20M", NULL);
    cr_assert(proc_wait_output(&m, "first-pass", 10000), "%s", m.out);
    int fd = connect_to(uri);
    char reply[512] = "";
    cr_expect_gt(read(fd, reply, sizeof(reply) - 1), 0);
    cr_expect(strstr(reply, "already taking a migration"), "%s", reply);
    close(fd);
    cr_expect_eq(proc_wait(&m, 60000), 0, "%s\n%s", m.out, m.err);
    expect_moved(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

/* ---- a destination that does not answer, or trickles ---------------------------------- */

/* A loopback port whose accept queue is full: the kernel drops further SYNs, so a connect
 * hangs as it would towards a host that never answers. *fds gets what to close after. */
static const char *black_hole(int fds[4])
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof(sa);
    cr_assert_eq(bind(fds[0], (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fds[0], 0), 0);
    cr_assert_eq(getsockname(fds[0], (struct sockaddr *)&sa, &len), 0);
    for (int i = 1; i < 4; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fds[i], (struct sockaddr *)&sa, sizeof(sa));
    }
    usleep(200000);
    static char uri[64];
    snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", ntohs(sa.sin_port));
    return uri;
}

static double ms_since(struct timespec t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6;
}

Test(migrate, timeout_and_cancel_act_while_connecting)
{
    const char *sock = harness_tmp("sock");
    struct proc src, m;
    int fds[4];
    const char *uri = black_hole(fds);
    source_start_small(&src, sock);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_expect_eq(migrate(&m, sock, uri, "--timeout", "2", NULL), 1, "%s", m.out);
    cr_expect_lt(ms_since(t0), 5000, "--timeout 2 took %.0f ms", ms_since(t0));
    json_t *failed = last_event(&m, "failed");
    cr_expect(failed && strstr(json_string_value(json_object_get(failed, "message")),
                               "--timeout 2 s expired"),
              "%s", m.out);
    json_decref(failed);
    proc_free(&m);
    /* And a cancel: acknowledged at once, the migration ends cancelled within a second. */
    migrate_start(&m, sock, uri, NULL);
    usleep(500000);
    json_decref(harness_ctl(sock, "migrate-cancel", NULL));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_expect_eq(proc_wait(&m, 10000), 1, "%s", m.out);
    cr_expect_lt(ms_since(t0), 2000, "the cancel took %.0f ms", ms_since(t0));
    cr_expect(last_event(&m, "cancelled"), "%s", m.out);
    json_t *status = harness_ctl(sock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(status, "return"), "state")),
                     "running");
    json_decref(status);
    expect_stayed(&src, NULL, MEMSTAMP_DONE);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    proc_free(&src);
    proc_free(&m);
}

/* A destination that takes the handshake and the stream, then sends one byte a second and never
 * "ready": the source takes its VM back after the downtime budget and the margin. */
struct trickler {
    int listen_fd;
    pthread_t thread;
    volatile bool stop;
};

static void *trickle_destination(void *arg)
{
    struct trickler *t = arg;
    int fd = accept(t->listen_fd, NULL, NULL);
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof(buf)); /* the hello */
    (void)n;
    const char caps[] = "{\"accept\":true,\"caps\":{\"stream_major\":1,\"stream_minor\":2,"
                        "\"mem_limit\":1099511627776,\"mem_exact\":false,\"max_cpus\":64,"
                        "\"cpus_exact\":false,\"xsave_size\":1048576,\"nested_max\":0,"
                        "\"evmcs\":false,\"cpuid\":{\"1.ECX\":4294967295,\"1.EDX\":4294967295,"
                        "\"7.0.EBX\":4294967295,\"7.0.ECX\":4294967295,\"7.0.EDX\":4294967295,"
                        "\"0xD.1.EAX\":4294967295,\"0x80000001.ECX\":4294967295,"
                        "\"0x80000001.EDX\":4294967295}}}\n";
    cr_assert_eq(write(fd, caps, sizeof(caps) - 1), (ssize_t)sizeof(caps) - 1);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    for (unsigned tick = 0; !t->stop; tick++) {
        while (read(fd, buf, sizeof(buf)) > 0)
            ; /* drain the stream as fast as it comes */
        if (tick % 100 == 0 && send(fd, " ", 1, MSG_NOSIGNAL) != 1)
            break; /* a byte a second, never a line */
        usleep(10000);
    }
    close(fd);
    return NULL;
}

Test(migrate, a_trickling_destination_cannot_keep_the_source_paused)
{
    const char *sock = harness_tmp("sock");
    struct proc src, m;
    struct trickler t = {0};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof(sa);
    t.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(bind(t.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(t.listen_fd, 1), 0);
    cr_assert_eq(getsockname(t.listen_fd, (struct sockaddr *)&sa, &len), 0);
    char uri[64];
    snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", ntohs(sa.sin_port));
    pthread_create(&t.thread, NULL, trickle_destination, &t);
    source_start(&src, sock, "2", "memstamp", "mib=16 passes=40 rate=16"); /* about 40 s */
    cr_assert(proc_wait_output(&src, "pass 1 ok", 10000), "%s", src.out);
    cr_expect_eq(migrate(&m, sock, uri, "--downtime-ms", "300", NULL), 1, "%s", m.out);
    json_t *failed = last_event(&m, "failed");
    const char *msg = failed ? json_string_value(json_object_get(failed, "message")) : "";
    cr_expect(strstr(msg, "the switchover (final pass, state, \"ready\") not done within 10300 ms"),
              "%s", m.out);
    cr_expect(failed && !json_is_true(json_object_get(failed, "source_paused")), "%s", m.out);
    json_decref(failed);
    json_t *status = harness_ctl(sock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(status, "return"), "state")),
                     "running");
    json_decref(status);
    expect_stayed(&src, NULL, MEMSTAMP_DONE);
    t.stop = true;
    pthread_join(t.thread, NULL);
    close(t.listen_fd);
    proc_free(&src);
    proc_free(&m);
}

Test(migrate, bad_arguments)
{
    struct proc p;
    cr_expect_eq(run_tern(&p, 5000, "migrate", "tcp:127.0.0.1:1", NULL), 2);
    cr_expect(strstr(p.err, "--api-socket PATH is required"), "%s", p.err);
    proc_free(&p);
    cr_expect_eq(run_tern(&p, 5000, "migrate", "--api-socket", "/nonexistent", "file:/x", NULL), 2);
    cr_expect(strstr(p.err, "is not a tcp:HOST:PORT URI"), "%s", p.err);
    proc_free(&p);
    cr_expect_eq(
        run_tern(&p, 5000, "migrate", "--api-socket", "/x", "tcp:h:1", "--bandwidth", "fast", NULL),
        2);
    cr_expect(strstr(p.err, "--bandwidth: 'fast' is not a rate"), "%s", p.err);
    proc_free(&p);
    cr_expect_eq(run_tern(&p, 5000, "run", "--incoming", "tcp:127.0.0.1:99999", NULL), 2);
    cr_expect(strstr(p.err, "port '99999' is not 0-65535"), "%s", p.err);
    proc_free(&p);
    cr_expect_eq(run_tern(&p, 5000, "run", "--incoming", "tcp:127.0.0.1:0", "--paused", NULL), 2);
    cr_expect(strstr(p.err, "--paused needs --incoming file:PATH"), "%s", p.err);
    proc_free(&p);
}

/* The guest finishes on the source while its migration is still in the first pass. */
Test(migrate, guest_ending_mid_migration_cancels_it)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, NULL, NULL);
    source_start(&src, sock, "2", "memstamp", "mib=16 passes=2 rate=16");
    cr_expect_eq(migrate(&m, sock, uri, "--bandwidth", "1M", NULL), 1, "%s", m.out);
    json_t *cancelled = last_event(&m, "cancelled");
    cr_assert(cancelled, "%s", m.out);
    cr_expect(strstr(json_string_value(json_object_get(cancelled, "message")),
                     "the guest ended during the migration"));
    json_decref(cancelled);
    expect_stayed(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

static void expect_ctl_error(const char *sock, const char *command, json_t *extra,
                             const char *fragment)
{
    json_t *r = harness_ctl(sock, command, extra);
    const char *msg = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
    cr_expect(msg && strstr(msg, fragment), "%s: wanted an error with '%s', got %s", command,
              fragment, msg ? msg : "no error");
    json_decref(r);
}

/* The control socket's migration commands reject what they cannot do, naming the field. */
Test(migrate, control_commands_reject_bad_requests)
{
    const char *sock = harness_tmp("sock");
    struct proc src;
    source_start(&src, sock, "1", "memstamp", "mib=4 passes=0 rate=4");
    expect_ctl_error(sock, "migrate", NULL, "is not a tcp:HOST:PORT URI");
    expect_ctl_error(sock, "migrate", json_pack("{s:s}", "uri", "tcp:127.0.0.1:0"),
                     "port 0 names no destination");
    expect_ctl_error(sock, "migrate",
                     json_pack("{s:s,s:s}", "uri", "tcp:127.0.0.1:1", "downtime_ms", "fast"),
                     "\"downtime_ms\" must be an integer");
    expect_ctl_error(sock, "migrate",
                     json_pack("{s:s,s:s}", "uri", "tcp:127.0.0.1:1", "compress", "lz4"),
                     "migrate compress: 'lz4' is not none, zlib or zlib:LEVEL");
    expect_ctl_error(sock, "migrate-cancel", NULL, "no migration is under way");
    json_t *r = harness_ctl(sock, "migrate-status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r, "return"), "phase")),
                     "none");
    json_decref(r);
    json_decref(harness_ctl(sock, "pause", NULL));
    expect_ctl_error(sock, "migrate", json_pack("{s:s}", "uri", "tcp:127.0.0.1:1"),
                     "the VM is paused");
    json_decref(harness_ctl(sock, "quit", NULL));
    cr_expect_eq(proc_wait(&src, 10000), 0, "%s", src.err);
    proc_free(&src);
}

Test(migrate, more_bad_arguments)
{
    struct proc p;
    cr_expect_eq(run_tern(&p, 5000, "run", "--incoming", "tcp:127.0.0.1:0",
                          "--incoming-idle-timeout", "0", NULL),
                 2);
    cr_expect(strstr(p.err, "--incoming-idle-timeout: 0 is out of range"), "%s", p.err);
    proc_free(&p);
    cr_expect_eq(
        run_tern(&p, 5000, "migrate", "--api-socket", "/x", "tcp:h:1", "--compress", "lz4", NULL),
        2);
    cr_expect(strstr(p.err, "--compress: 'lz4' is not none, zlib or zlib:LEVEL"), "%s", p.err);
    proc_free(&p);
    cr_expect_eq(
        run_tern(&p, 5000, "migrate", "--api-socket", "/x", "tcp:h:1", "--downtime-ms", "0", NULL),
        2);
    cr_expect(strstr(p.err, "--downtime-ms: 0 is out of range"), "%s", p.err);
    proc_free(&p);
    cr_expect_eq(run_tern(&p, 5000, "migrate", "--api-socket", "/x", "tcp:nohostport", NULL), 2);
    cr_expect(strstr(p.err, "has no :PORT"), "%s", p.err);
    proc_free(&p);
}
