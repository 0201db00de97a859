/* Snapshots of running guests restored in new tern processes, state identity across a
 * restore, and the control socket. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "migrate/mig_file.h"

TestSuite(snapshot, .init = harness_require_kvm, .timeout = 240);

static void start_with_socket(struct proc *p, const char *sock, const char *cpus, const char *mem,
                              const char *guest, const char *cmdline)
{
    char *argv[] = {TERN_BINARY, "run",           "--cpus",       (char *)cpus,
                    "--mem",     (char *)mem,     "--kernel",     (char *)harness_guest(guest),
                    "--cmdline", (char *)cmdline, "--api-socket", (char *)sock,
                    NULL};
    proc_start(p, argv);
    cr_assert(harness_wait_socket(sock, 10000), "no control socket; stderr: %s", p->err);
}

/* Takes 20 snapshots at pseudo-random moments of a running guest, lets the guest finish, then
 * restores each in a new tern and expects the guest to finish correctly there too. */
static void snapshots_at_random_moments(const char *guest, const char *cpus, const char *cmdline,
                                        const char *done_line)
{
    enum { N = 20 };
    unsigned seed = (unsigned)getpid();
    srand(seed);
    const char *sock = harness_tmp("sock");
    char *paths[N];
    struct proc src;
    start_with_socket(&src, sock, cpus, "64M", guest, cmdline);
    for (int i = 0; i < N; i++) {
        usleep(2000 + rand() % 20000);
        paths[i] = strdup(harness_tmp("snap"));
        harness_snapshot(sock, paths[i]);
    }
    int st = proc_wait(&src, 60000);
    cr_assert_eq(st, 0, "the source guest failed (seed %u): %s %s", seed, src.out, src.err);
    cr_assert(strstr(src.out, done_line), "the source guest never finished: %s", src.out);
    proc_free(&src);
    for (int i = 0; i < N; i++) {
        char uri[300];
        snprintf(uri, sizeof(uri), "file:%s", paths[i]);
        struct proc p;
        st = run_tern(&p, 60000, "run", "--incoming", uri, NULL);
        cr_expect_eq(st, 0, "snapshot %d (seed %u): status %d\nstdout: %s\nstderr: %s", i, seed, st,
                     p.out, p.err);
        cr_expect(strstr(p.out, done_line), "snapshot %d: %s", i, p.out);
        proc_free(&p);
        unlink(paths[i]);
        free(paths[i]);
    }
}

Test(snapshot, memstamp_restored_from_20_random_moments)
{
    snapshots_at_random_moments("memstamp", "2", "mib=8 passes=50000 every=10000",
                                "memstamp: verified 2048 pages x 50000 passes on 2 vCPU(s): OK");
}

Test(snapshot, smp_4_vcpus_restored_from_20_random_moments)
{
    snapshots_at_random_moments("smp", "4", "n=150000000",
                                "smp: OK: 4 vCPUs added 150000000 each, counter 600000000");
}

Test(snapshot, restore_checks_mem_and_cpus_flags)
{
    const char *sock = harness_tmp("sock");
    const char *path = harness_tmp("snap");
    struct proc src;
    start_with_socket(&src, sock, "2", "32M", "memstamp", "mib=4 passes=0 every=100000000");
    harness_snapshot(sock, path);
    json_decref(harness_ctl(sock, "quit", NULL));
    cr_assert_eq(proc_wait(&src, 10000), 0);
    proc_free(&src);
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", path);
    struct proc p;
    int st = run_tern(&p, 10000, "run", "--incoming", uri, "--mem", "64M", NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "--mem 64 MiB does not match the stream's 32 MiB"), "%s", p.err);
    proc_free(&p);
    st = run_tern(&p, 10000, "run", "--incoming", uri, "--cpus", "3", NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "--cpus 3 does not match the stream's 2 vCPUs"), "%s", p.err);
    proc_free(&p);
    st = run_tern(&p, 10000, "run", "--incoming", uri, "--kernel", harness_guest("hello"), NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "--kernel and --incoming exclude each other"), "%s", p.err);
    proc_free(&p);
    st = run_tern(&p, 10000, "run", "--incoming", "file:/nonexistent/snap", NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "/nonexistent/snap: cannot open"), "%s", p.err);
    proc_free(&p);
    unlink(path);
}

Test(snapshot, inspect_summarises_a_real_snapshot)
{
    const char *sock = harness_tmp("sock");
    const char *path = harness_tmp("snap");
    struct proc src;
    start_with_socket(&src, sock, "2", "64M", "memstamp", "mib=8 passes=0 every=100");
    /* Both vCPUs have stamped their halves of the range. */
    cr_assert(proc_wait_output(&src, "vCPU 0 pass 100 ok", 10000), "%s", src.out);
    cr_assert(proc_wait_output(&src, "vCPU 1 pass 100 ok", 10000), "%s", src.out);
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", path);
    json_t *reply =
        harness_ctl(sock, "snapshot", json_pack("{s:s,s:s}", "uri", uri, "compress", "zlib"));
    cr_assert(json_object_get(reply, "return"));
    json_t *ret = json_object_get(reply, "return");
    json_int_t zlib_pages = json_integer_value(json_object_get(ret, "zlib_pages"));
    cr_expect_geq(zlib_pages, 2048, "stamped pages compress: %lld", (long long)zlib_pages);
    json_decref(reply);
    json_decref(harness_ctl(sock, "quit", NULL));
    proc_wait(&src, 10000);
    proc_free(&src);

    struct proc p;
    cr_assert_eq(run_tern(&p, 10000, "inspect", path, NULL), 0, "%s", p.err);
    cr_expect(strstr(p.out, "config: 64 MiB RAM, 2 vCPU(s)"), "%s", p.out);
    cr_expect(strstr(p.out, "REGS         vCPU 1"), "%s", p.out);
    cr_expect(strstr(p.out, "64-bit mode"), "%s", p.out);
    cr_expect(strstr(p.out, "zlib pages"), "%s", p.out);
    proc_free(&p);
    cr_assert_eq(run_tern(&p, 10000, "inspect", "--json", path, NULL), 0, "%s", p.err);
    json_t *j = json_loads(p.out, 0, NULL);
    cr_assert(j, "inspect --json prints JSON: %s", p.out);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "config"), "cpus")), 2);
    cr_expect_eq(json_array_size(json_object_get(j, "vcpus")), 2);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "ram"), "zlib_pages")),
                 zlib_pages);
    json_decref(j);
    proc_free(&p);
    unlink(path);
}

/* ---- control socket ------------------------------------------------------------------- */

static json_t *raw_request(const char *sock, const char *bytes, size_t len)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, bytes + off, len - off);
        cr_assert_gt(n, 0);
        off += (size_t)n;
    }
    char buf[4096];
    size_t got = 0;
    while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    json_t *j = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert(j, "reply is not JSON: %s", buf);
    return j;
}

static const char *error_message(json_t *reply)
{
    const char *m = json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
    return m ? m : "";
}

Test(control, bad_requests_get_errors_and_the_server_keeps_serving)
{
    const char *sock = harness_tmp("sock");
    struct proc src;
    harness_require_kvm();
    start_with_socket(&src, sock, "1", "32M", "memstamp", "mib=4 passes=0 every=100000000");
    struct stat stt;
    cr_assert_eq(stat(sock, &stt), 0);
    cr_expect_eq(stt.st_mode & 0777, 0600, "socket mode %o", stt.st_mode & 0777);

    json_t *r = raw_request(sock, "{not json\n", strlen("{not json\n"));
    cr_expect(strstr(error_message(r), "bad JSON"), "%s", error_message(r));
    json_decref(r);
    r = raw_request(sock, "[1,2]\n", strlen("[1,2]\n"));
    cr_expect(strstr(error_message(r), "string \"command\""), "%s", error_message(r));
    json_decref(r);
    r = raw_request(sock, "{\"command\":\"frobnicate\"}\n",
                    strlen("{\"command\":\"frobnicate\"}\n"));
    cr_expect(strstr(error_message(r), "unknown command 'frobnicate'"), "%s", error_message(r));
    json_decref(r);
    size_t big = 200000;
    char *huge = malloc(big + 1);
    memset(huge, 'x', big);
    huge[big] = '\n';
    r = raw_request(sock, huge, big + 1);
    cr_expect(strstr(error_message(r), "exceeds 65536 bytes"), "%s", error_message(r));
    json_decref(r);
    free(huge);
    r = harness_ctl(sock, "snapshot", json_pack("{s:s}", "uri", "tcp:1.2.3.4:5"));
    cr_expect(strstr(error_message(r), "is not a file:PATH URI"), "%s", error_message(r));
    json_decref(r);
    r = harness_ctl(sock, "snapshot",
                    json_pack("{s:s,s:s}", "uri", "file:/tmp/x", "compress", "lz4"));
    cr_expect(strstr(error_message(r), "snapshot compress: 'lz4' is not none, zlib or zlib:LEVEL"),
              "%s", error_message(r));
    json_decref(r);
    r = harness_ctl(sock, "snapshot", json_pack("{s:s}", "uri", "file:/nonexistent/dir/snap"));
    cr_expect(strstr(error_message(r), "cannot create"), "%s", error_message(r));
    json_decref(r);

    /* migrate's channel members; no migration starts from any of them. */
    r = harness_ctl(sock, "migrate",
                    json_pack("{s:s,s:i}", "uri", "tcp:127.0.0.1:1", "connections", 0));
    cr_expect(strstr(error_message(r), "\"connections\" must be 1 to 16"), "%s", error_message(r));
    json_decref(r);
    r = harness_ctl(sock, "migrate",
                    json_pack("{s:s,s:i}", "uri", "tcp:127.0.0.1:1", "connections", 17));
    cr_expect(strstr(error_message(r), "\"connections\" must be an integer from 0 to 16"), "%s",
              error_message(r));
    json_decref(r);
    r = harness_ctl(sock, "migrate",
                    json_pack("{s:s,s:s}", "uri", "tcp:127.0.0.1:1", "tls_psk", "/nonexistent"));
    cr_expect(strstr(error_message(r), "--tls-psk /nonexistent"), "%s", error_message(r));
    json_decref(r);
    r = harness_ctl(sock, "migrate",
                    json_pack("{s:s,s:s}", "uri", "tcp:127.0.0.1:1", "tls_names", "a"));
    cr_expect(strstr(error_message(r), "--tls-names needs --tls-creds"), "%s", error_message(r));
    json_decref(r);

    r = harness_ctl(sock, "pause", NULL);
    json_decref(r);
    r = harness_ctl(sock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r, "return"), "state")),
                     "paused");
    json_decref(r);
    json_decref(harness_ctl(sock, "resume", NULL));
    r = harness_ctl(sock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r, "return"), "state")),
                     "running");
    json_decref(r);

    struct proc c;
    cr_expect_eq(run_tern(&c, 5000, "status", "--api-socket", sock, NULL), 0, "%s", c.err);
    cr_expect(strstr(c.out, "\"state\":\"running\""), "%s", c.out);
    proc_free(&c);
    cr_expect_eq(run_tern(&c, 5000, "quit", "--api-socket", sock, NULL), 0, "%s", c.err);
    proc_free(&c);
    cr_expect_eq(proc_wait(&src, 10000), 0, "%s", src.err);
    cr_expect_neq(access(sock, F_OK), 0, "the socket file is removed at exit");
    proc_free(&src);
    cr_expect_eq(run_tern(&c, 5000, "status", "--api-socket", sock, NULL), 2);
    cr_expect(strstr(c.err, "cannot connect"), "%s", c.err);
    proc_free(&c);
}

/* Once src has stamped 10 passes: a snapshot to path, quit, and tern inspect's text into p. */
static void snapshot_and_inspect(struct proc *src, const char *sock, const char *path,
                                 struct proc *p)
{
    cr_assert(proc_wait_output(src, "pass 10 ok", 10000), "%s", src->out);
    harness_snapshot(sock, path);
    json_decref(harness_ctl(sock, "quit", NULL));
    proc_wait(src, 10000);
    proc_free(src);
    cr_assert_eq(run_tern(p, 10000, "inspect", path, NULL), 0, "%s", p->err);
}

/* --hide-kvm: the CPUID tern gives has no KVM signature at any base, the snapshot carries that
 * table (tern inspect says so), and the restored guest runs on with it; a plain VM's snapshot
 * says nothing of its hypervisor leaves. The first guest stamps at 32 MiB/s (4 passes a second)
 * so that it is still running when it is told to quit after its snapshot: unpaced, it could
 * finish its 40 passes first (it did once, under ASan), and the quit found no tern. */
Test(snapshot, hide_kvm_travels_with_the_cpu)
{
    const char *sock = harness_tmp("sock"), *path = harness_tmp("snap");
    struct proc src, p;
    char *argv[] = {TERN_BINARY,
                    "run",
                    "--hide-kvm",
                    "--mem",
                    "64M",
                    "--kernel",
                    (char *)harness_guest("memstamp"),
                    "--cmdline",
                    "mib=8 passes=40 every=10 rate=32",
                    "--api-socket",
                    (char *)sock,
                    NULL};
    proc_start(&src, argv);
    cr_assert(harness_wait_socket(sock, 10000), "no control socket; stderr: %s", src.err);
    snapshot_and_inspect(&src, sock, path, &p);
    cr_expect(strstr(p.out, "  CPU: KVM leaves hidden; Hyper-V no\n"), "%s", p.out);
    proc_free(&p);
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", path);
    int st = run_tern(&p, 30000, "run", "--incoming", uri, NULL);
    cr_expect_eq(st, 0, "the restored guest finishes: %s", p.err);
    cr_expect(strstr(p.out, "pass 40 ok"), "%s", p.out);
    proc_free(&p);

    start_with_socket(&src, sock, "1", "64M", "memstamp", "mib=8 passes=0 every=10");
    snapshot_and_inspect(&src, sock, path, &p);
    cr_expect_null(strstr(p.out, "CPU:"), "%s", p.out);
    proc_free(&p);
    unlink(path);
}
