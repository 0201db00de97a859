/* Hostile files, sockets and resource limits against real tern processes: each is refused in
 * one line naming the fault, or survived, and the VM runs on. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include "harness.h"

TestSuite(hostile, .init = harness_require_kvm, .timeout = 120);

/* A running memstamp with a control socket at sock. */
static void vm_start(struct proc *p, const char *sock, const char *mem, const char *cmdline)
{
    char *argv[] = {TERN_BINARY,
                    "run",
                    "--mem",
                    (char *)mem,
                    "--kernel",
                    (char *)harness_guest("memstamp"),
                    "--cmdline",
                    (char *)cmdline,
                    "--api-socket",
                    (char *)sock,
                    NULL};
    proc_start(p, argv);
    cr_assert(harness_wait_socket(sock, 10000), "no control socket: %s", p->err);
}

static const char *reply_error(json_t *reply)
{
    const char *m = json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
    return m ? m : "";
}

static void expect_running(const char *sock)
{
    json_t *r = harness_ctl(sock, "status", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r, "return"), "state")),
                     "running", "the VM does not run on");
    json_decref(r);
}

static void quit(struct proc *p, const char *sock)
{
    json_decref(harness_ctl(sock, "quit", NULL));
    cr_expect_eq(proc_wait(p, 20000), 0, "%s", p->err);
    proc_free(p);
}

static json_t *snapshot_to(const char *sock, const char *path)
{
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", path);
    return harness_ctl(sock, "snapshot", json_pack("{s:s}", "uri", uri));
}

/* Files in the snapshot's directory other than those named. */
static unsigned leftovers(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "ls %s.tmp* 2>/dev/null | wc -l", path);
    FILE *f = popen(cmd, "r");
    unsigned n = 0;
    cr_assert_eq(fscanf(f, "%u", &n), 1);
    pclose(f);
    return n;
}

Test(hostile, a_snapshot_replaces_a_planted_link_and_is_private)
{
    const char *sock = harness_tmp("sock"), *path = harness_tmp("snap"),
               *victim = harness_tmp("victim");
    FILE *f = fopen(victim, "w");
    fputs("precious", f);
    fclose(f);
    cr_assert_eq(symlink(victim, path), 0);
    struct proc p;
    vm_start(&p, sock, "16M", "mib=4 passes=0 every=1000");
    json_t *r = snapshot_to(sock, path);
    cr_expect(json_object_get(r, "return"), "%s", reply_error(r));
    json_decref(r);
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0);
    cr_expect(S_ISREG(st.st_mode), "the snapshot is a regular file, not the planted link");
    cr_expect_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
    char buf[16] = "";
    f = fopen(victim, "r");
    cr_assert(fgets(buf, sizeof(buf), f));
    fclose(f);
    cr_expect_str_eq(buf, "precious", "the link's target was written through");
    cr_expect_eq(leftovers(path), 0);
    quit(&p, sock);
    unlink(path);
    unlink(victim);
}

Test(hostile, a_snapshot_onto_a_socket_or_a_directory_is_refused)
{
    const char *sock = harness_tmp("sock"), *dir = harness_tmp("dir");
    struct proc p;
    vm_start(&p, sock, "16M", "mib=4 passes=0 every=1000");
    json_t *r = snapshot_to(sock, sock);
    cr_expect(strstr(reply_error(r), "is a socket, not a regular file"), "%s", reply_error(r));
    json_decref(r);
    cr_assert_eq(mkdir(dir, 0700), 0);
    r = snapshot_to(sock, dir);
    cr_expect(strstr(reply_error(r), "is a directory, not a regular file"), "%s", reply_error(r));
    json_decref(r);
    expect_running(sock); /* the control socket still answers */
    quit(&p, sock);
    rmdir(dir);
}

Test(hostile, a_snapshot_past_the_file_size_limit_fails_and_the_vm_runs_on)
{
    const char *sock = harness_tmp("sock"), *path = harness_tmp("snap");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "ulimit -f 2048 && exec %s run --mem 64M --kernel %s --cmdline "
             "'mib=32 passes=0 every=1000' --api-socket %s",
             TERN_BINARY, harness_guest("memstamp"), sock);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    struct proc p;
    proc_start(&p, argv);
    cr_assert(harness_wait_socket(sock, 10000), "%s", p.err);
    usleep(500000); /* 32 MiB stamped: more than 2 MiB to write */
    json_t *r = snapshot_to(sock, path);
    cr_expect(strstr(reply_error(r), "File too large"), "%s", reply_error(r));
    json_decref(r);
    cr_expect_eq(access(path, F_OK), -1);
    cr_expect_eq(leftovers(path), 0, "the partial file is removed");
    expect_running(sock);
    quit(&p, sock);
}

/* Not reading the replies: tern stops reading that client, so it cannot grow without bound. */
Test(hostile, a_client_that_never_reads_is_not_read_from)
{
    const char *sock = harness_tmp("sock");
    struct proc p;
    vm_start(&p, sock, "16M", "mib=4 passes=0 every=1000");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    static const char req[] = "{\"command\":\"status\"}\n";
    size_t sent = 0;
    for (int stuck = 0; sent < (64u << 20) && stuck < 50;) {
        ssize_t n = write(fd, req, sizeof(req) - 1);
        if (n > 0) {
            sent += (size_t)n;
            stuck = 0;
        } else {
            usleep(20000);
            stuck++;
        }
    }
    cr_expect_lt(sent, 32u << 20, "tern read %zu bytes of requests whose replies nobody reads",
                 sent);
    expect_running(sock); /* other clients are served */
    close(fd);
    quit(&p, sock);
}

Test(hostile, an_api_socket_in_a_missing_directory_says_so)
{
    struct proc p;
    int st = run_tern(&p, 10000, "run", "--kernel", harness_guest("hello"), "--api-socket",
                      "/nonexistent-tern-dir/vm.sock", NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "the directory /nonexistent-tern-dir does not exist"), "%s", p.err);
    proc_free(&p);
}

Test(hostile, a_fifo_is_refused_not_waited_on)
{
    const char *fifo = harness_tmp("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", fifo);
    const char *cases[][4] = {{"run", "--kernel", fifo, NULL},
                              {"run", "--incoming", uri, NULL},
                              {"inspect", fifo, NULL, NULL}};
    for (size_t i = 0; i < 3; i++) {
        struct proc p;
        int st = run_tern(&p, 10000, cases[i][0], cases[i][1], cases[i][2], cases[i][3], NULL);
        cr_expect_eq(st, 2, "tern %s %s: %d", cases[i][0], cases[i][1], st);
        cr_expect(strstr(p.err, "not a regular file"), "%s", p.err);
        proc_free(&p);
    }
    unlink(fifo);
}

Test(hostile, a_large_file_that_is_no_kernel_is_refused_unread)
{
    const char *path = harness_tmp("sparse");
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert_eq(ftruncate(fd, 2ll << 30), 0);
    close(fd);
    struct proc p;
    int st = run_tern(&p, 10000, "run", "--mem", "3G", "--kernel", path, NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "neither an ELF64 payload nor a bzImage"), "%s", p.err);
    proc_free(&p);
    unlink(path);
}

/* A stream of only its header and a CONFIG with these fields. */
static void write_config_stream(const char *path, uint64_t mem, uint32_t cpus)
{
    uint8_t s[16 + 20 + 24 + 4 + 40] = {'T', 'E', 'R', 'N', 'S', 'T', 'R', 'M', 1, 0, 2, 0};
    uint8_t *h = s + 16, *c = h + 20;
    uint32_t len = 24 + 4 + 40, one = 1, mandatory = 1, type = 1;
    memcpy(h, &type, 2);
    memcpy(h + 2, &mandatory, 2);
    memcpy(h + 8, &len, 4);
    memcpy(c, &mem, 8);
    memcpy(c + 8, &cpus, 4);
    memcpy(c + 24, &one, 4); /* one CPUID entry (zeros) */
    uint32_t crc = (uint32_t)crc32(crc32(0L, h, 12), c, len);
    memcpy(h + 12, &crc, 4);
    FILE *f = fopen(path, "wb");
    cr_assert_eq(fwrite(s, 1, sizeof(s), f), sizeof(s));
    fclose(f);
}

Test(hostile, a_stream_claiming_4g_vcpus_is_refused_by_inspect_at_once)
{
    const char *path = harness_tmp("snap");
    write_config_stream(path, 16 << 20, 0xffffffffu);
    struct proc p;
    int st = run_tern(&p, 10000, "inspect", path, NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "vCPU count 4294967295 is outside 1..64"), "%s", p.err);
    proc_free(&p);
    unlink(path);
}

Test(hostile, a_stream_claiming_more_ram_than_the_host_has_is_refused)
{
    const char *path = harness_tmp("snap");
    write_config_stream(path, 1ull << 40, 1); /* 1 TiB */
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", path);
    struct proc p;
    int st = run_tern(&p, 10000, "run", "--incoming", uri, NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "guest RAM: 1048576 MiB exceeds the host's"), "%s", p.err);
    proc_free(&p);
    unlink(path);
}

/* A migration that cannot start its thread fails as a request; the VM runs on. The source is
 * put in a pids cgroup whose limit is the threads it has. */
Test(hostile, a_migration_without_threads_fails_and_the_vm_runs_on)
{
    const char *sock = harness_tmp("sock");
    char cg[256];
    snprintf(cg, sizeof(cg), "/sys/fs/cgroup/pids/tern-test-%d", (int)getpid());
    if (mkdir(cg, 0755) != 0)
        cr_skip_test("needs a writable pids cgroup (/sys/fs/cgroup/pids): %s", strerror(errno));
    struct proc p;
    vm_start(&p, sock, "16M", "mib=4 passes=0 every=1000");
    char file[300], value[64];
    snprintf(file, sizeof(file), "%s/cgroup.procs", cg);
    FILE *f = fopen(file, "w");
    fprintf(f, "%d\n", (int)p.pid);
    fclose(f);
    snprintf(file, sizeof(file), "%s/pids.current", cg);
    f = fopen(file, "r");
    cr_assert(fgets(value, sizeof(value), f));
    fclose(f);
    snprintf(file, sizeof(file), "%s/pids.max", cg);
    f = fopen(file, "w");
    fputs(value, f);
    fclose(f);
    json_t *r = harness_ctl(sock, "migrate", json_pack("{s:s}", "uri", "tcp:127.0.0.1:9"));
    cr_expect(strstr(reply_error(r), "cannot start the migration thread"), "%s", json_dumps(r, 0));
    json_decref(r);
    expect_running(sock);
    f = fopen(file, "w");
    fputs("max\n", f);
    fclose(f);
    snprintf(file, sizeof(file), "/sys/fs/cgroup/pids/cgroup.procs");
    f = fopen(file, "w");
    fprintf(f, "%d\n", (int)p.pid);
    fclose(f);
    quit(&p, sock);
    rmdir(cg);
}
