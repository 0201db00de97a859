/* harness: runs real tern processes for the integration tests and collects what they print. */
#ifndef TERN_TEST_HARNESS_H
#define TERN_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct proc {
    pid_t pid;
    int out_fd, err_fd;
    char *out, *err;
    size_t out_len, err_len;
    int status;  /* exit status, or 128+signal */
    bool reaped; /* proc_wait saw it end; proc_free ends one that has not */
};

/* Skips the test (with its reason) when /dev/kvm cannot be used. */
void harness_require_kvm(void);

/* Path of a test guest: build/tests/guest/NAME.elf */
const char *harness_guest(const char *name);

/* Starts argv (argv[0] is the program) with stdin from /dev/null. */
void proc_start(struct proc *p, char *const argv[]);
/* Same, with stdin a pipe that first delivers input (then EOF). */
void proc_start_input(struct proc *p, char *const argv[], const char *input);
/* Reads until stdout contains needle; false on timeout or exit first. */
bool proc_wait_output(struct proc *p, const char *needle, int timeout_ms);
/* The same for stderr. */
bool proc_wait_stderr(struct proc *p, const char *needle, int timeout_ms);
/* Waits for exit, reading output; kills and fails the test on timeout. Returns p->status. */
int proc_wait(struct proc *p, int timeout_ms);
void proc_free(struct proc *p);

/* Runs "tern ARGS..." (NULL-terminated) to completion. */
int run_tern(struct proc *p, int timeout_ms, ...);

#endif

#ifndef TERN_TEST_HARNESS_CTL
#define TERN_TEST_HARNESS_CTL
#include <jansson.h>
/* Waits until a tern serves its control socket at path. */
bool harness_wait_socket(const char *path, int timeout_ms);
/* Sends {"command": command, ...extra} and returns the reply (asserts it arrived). */
json_t *harness_ctl(const char *path, const char *command, json_t *extra);
/* Asks the tern at sock for a snapshot to path; asserts it was written. */
void harness_snapshot(const char *sock, const char *path);
/* A fresh path under /tmp for a socket or file: /tmp/tern-test-<pid>-<n>-<suffix>; valid
 * until 64 more have been asked for. */
const char *harness_tmp(const char *suffix);
#endif
