#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

void harness_require_kvm(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return;
    }
    cr_skip_test("needs /dev/kvm (%s)", strerror(errno));
}

const char *harness_guest(const char *name)
{
    static __thread char path[512];
    snprintf(path, sizeof(path), "%s/%s.elf", TERN_GUEST_DIR, name);
    return path;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void proc_spawn(struct proc *p, char *const argv[], int in_fd)
{
    int out[2], err[2];
    memset(p, 0, sizeof(*p));
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(err, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (in_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    int rc = posix_spawn(&p->pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "spawn %s: %s", argv[0], strerror(rc));
    close(out[1]);
    close(err[1]);
    p->out_fd = out[0];
    p->err_fd = err[0];
    p->out = calloc(1, 1);
    p->err = calloc(1, 1);
}

void proc_start(struct proc *p, char *const argv[])
{
    proc_spawn(p, argv, -1);
}

void proc_start_input(struct proc *p, char *const argv[], const char *input)
{
    int in[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    size_t len = strlen(input);
    cr_assert_eq(write(in[1], input, len), (ssize_t)len);
    close(in[1]);
    proc_spawn(p, argv, in[0]);
    close(in[0]);
}

/* Reads what is available (waiting up to wait_ms); false once both pipes are at EOF. */
static bool proc_pump(struct proc *p, int wait_ms)
{
    struct pollfd fds[2] = {{.fd = p->out_fd, .events = POLLIN},
                            {.fd = p->err_fd, .events = POLLIN}};
    if (p->out_fd < 0 && p->err_fd < 0)
        return false;
    if (poll(fds, 2, wait_ms) <= 0)
        return true;
    for (int i = 0; i < 2; i++) {
        if (!fds[i].revents)
            continue;
        int *fd = i ? &p->err_fd : &p->out_fd;
        char **buf = i ? &p->err : &p->out;
        size_t *len = i ? &p->err_len : &p->out_len;
        char chunk[65536];
        ssize_t n = read(*fd, chunk, sizeof(chunk));
        if (n <= 0) {
            close(*fd);
            *fd = -1;
            continue;
        }
        *buf = realloc(*buf, *len + (size_t)n + 1);
        memcpy(*buf + *len, chunk, (size_t)n);
        *len += (size_t)n;
        (*buf)[*len] = '\0';
    }
    return true;
}

bool proc_wait_output(struct proc *p, const char *needle, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    while (!strstr(p->out, needle)) {
        if (now_ms() > deadline || !proc_pump(p, 50))
            return strstr(p->out, needle) != NULL;
    }
    return true;
}

bool proc_wait_stderr(struct proc *p, const char *needle, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    while (!strstr(p->err, needle)) {
        if (now_ms() > deadline || !proc_pump(p, 50))
            return strstr(p->err, needle) != NULL;
    }
    return true;
}

int proc_wait(struct proc *p, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    int ws;
    for (;;) {
        proc_pump(p, 20);
        pid_t r = waitpid(p->pid, &ws, WNOHANG);
        if (r == p->pid)
            break;
        if (now_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &ws, 0);
            p->reaped = true;
            cr_assert_fail("timed out after %d ms; stdout: %s\nstderr: %s", timeout_ms, p->out,
                           p->err);
        }
    }
    while (proc_pump(p, 100))
        ;
    p->reaped = true;
    p->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    return p->status;
}

void proc_free(struct proc *p)
{
    /* A tern a test left running (a destination still waiting after a refusal) ends here, so
     * that no test leaves processes behind. */
    if (p->pid > 0 && !p->reaped && waitpid(p->pid, NULL, WNOHANG) == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    p->reaped = true;
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    free(p->out);
    free(p->err);
}

int run_tern(struct proc *p, int timeout_ms, ...)
{
    char *argv[64] = {TERN_BINARY};
    int n = 1;
    va_list ap;
    va_start(ap, timeout_ms);
    for (char *a; n < 63 && (a = va_arg(ap, char *)) != NULL;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    proc_start(p, argv);
    return proc_wait(p, timeout_ms);
}

#include "control/ctl_server.h"
#include "err/err.h"

bool harness_wait_socket(const char *path, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (ctl_request(path, NULL, NULL) == 0)
            return true;
        usleep(5000);
    }
    return false;
}

json_t *harness_ctl(const char *path, const char *command, json_t *extra)
{
    json_t *req = extra ? extra : json_object();
    json_object_set_new(req, "command", json_string(command));
    json_t *reply = NULL;
    int rc = ctl_request(path, req, &reply);
    json_decref(req);
    cr_assert_eq(rc, 0, "%s: %s", command, err_msg());
    return reply;
}

void harness_snapshot(const char *sock, const char *path)
{
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", path);
    json_t *reply = harness_ctl(sock, "snapshot", json_pack("{s:s}", "uri", uri));
    cr_assert(json_object_get(reply, "return"), "snapshot: %s",
              json_string_value(json_object_get(json_object_get(reply, "error"), "message")));
    json_decref(reply);
}

const char *harness_tmp(const char *suffix)
{
    /* A ring of buffers: a test may hold several paths at once without copying them. */
    static __thread char paths[64][256];
    static int counter;
    int n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    char *path = paths[n % 64];
    snprintf(path, sizeof(paths[0]), "/tmp/tern-test-%d-%d-%s", (int)getpid(), n, suffix);
    return path;
}
