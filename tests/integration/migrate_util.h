/* Helpers of the live-migration suites (test_migrate.c, test_migrate_tls.c): real tern
 * processes over loopback TCP, a memstamp guest that verifies its memory, and the checks that
 * the guest moved or stayed. */
#ifndef TERN_TEST_MIGRATE_UTIL_H
#define TERN_TEST_MIGRATE_UTIL_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>

#include "harness.h"

#define MEMSTAMP_DONE "memstamp: verified"

/* A destination on a free loopback port with extra arguments (NULL-terminated); its URI. */
const char *dest_start_args(struct proc *d, ...);
/* The same with at most two (NULL for none). */
const char *dest_start(struct proc *d, const char *extra1, const char *extra2);
void source_start(struct proc *p, const char *sock, const char *cpus, const char *guest,
                  const char *cmdline);
/* tern run with the given arguments (NULL-terminated) and a control socket at sock. */
void source_start_args(struct proc *p, const char *sock, ...);
/* memstamp over 16 MiB for about 5 s, past its first pass: the source most tests use. */
void source_start_small(struct proc *p, const char *sock);
/* tern migrate --json with extra arguments (NULL-terminated); migrate() runs it to its end. */
void migrate_startv(struct proc *m, const char *sock, const char *uri, va_list ap);
void migrate_start(struct proc *m, const char *sock, const char *uri, ...);
int migrate(struct proc *m, const char *sock, const char *uri, ...);
/* The data of the last event named name in tern migrate --json output (a new reference). */
json_t *last_event(const struct proc *m, const char *name);
/* The guest moved: the source exited 0 saying so, the destination finished the guest. */
void expect_moved(struct proc *src, struct proc *dst, const char *done_line);
/* The guest stayed: the source finished it and exited 0; the destination gave up non-zero. */
void expect_stayed(struct proc *src, struct proc *dst, const char *done_line);
/* A destination with TERN_MIGRATE_FAULT dst_fault (or none), a source with src_fault, one
 * migrate over `connections` connections: it fails saying expect, the guest stays. */
void fails_and_stays(const char *src_fault, const char *dst_fault, const char *expect,
                     const char *bw, const char *downtime, unsigned connections);
/* A plain TCP connection to the destination at uri (tcp:127.0.0.1:PORT). */
int connect_to(const char *uri);
/* Sends line on a new connection and returns the destination's answer (a JSON line). */
void ask(const char *uri, const char *line, char *reply, size_t size);
/* A real source migrates to dst after whatever came before (extra tern migrate arguments,
 * NULL-terminated), and the guest verifies there. */
void real_migration_after(struct proc *dst, const char *uri, ...);

/* All at once against the destination at uri: three idle connections, one that sends the byte
 * trickle and then nothing, a bare connect-and-close, and garbage (which must be refused). */
struct hostile_peers {
    int idle[3];
    int trickle;
};
void hostile_peers_open(struct hostile_peers *h, const char *uri, char trickle,
                        const char *garbage);
void hostile_peers_close(struct hostile_peers *h);

#endif
