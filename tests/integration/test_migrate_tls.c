/* The migration channel: TLS 1.3 with X.509 or PSK credentials made fresh by each run, RAM over
 * several connections, and what a TLS destination refuses. Real tern processes, real sockets,
 * a memstamp guest that verifies its memory wherever it ends. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "migrate_util.h"

static char creds_root[256];

/* Credentials for the whole suite: CA "a" (the good one), CA "b" (a stranger), "expired" (a
 * client certificate that expired in 2020), and two PSK files for the same identity. */
static void make_creds(void)
{
    harness_require_kvm();
    snprintf(creds_root, sizeof(creds_root), "%s", harness_tmp("creds"));
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "set -e; s=%s/tests/integration/make-creds.sh; d=%s; $s x509 $d/a CA-A; "
             "$s x509 $d/b CA-B; $s x509 $d/expired CA-E expired; $s psk $d/psk1 src; "
             "$s psk $d/psk2 src",
             TERN_SOURCE_DIR, creds_root);
    if (system(cmd) != 0)
        cr_skip_test("cannot make test credentials (certtool and psktool, from gnutls-bin)");
}

TestSuite(migrate_tls, .init = make_creds, .timeout = 180);

static const char *cred(const char *name)
{
    static char paths[8][320];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 320, "%s/%s", creds_root, name);
    return p;
}

/* A writing guest moves with the given source arguments (NULL-terminated after them). */
static void moves(const char *dflag, const char *dval, const char *sflag, const char *sval,
                  const char *conns, const char *security)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dest_start(&dst, dflag, dval);
    /* 32 MiB/s of writes: well within one TLS connection even on a loaded machine, so the
     * move converges whatever else the suite runs beside it. */
    source_start(&src, sock, "2", "memstamp", "mib=64 passes=12 rate=32");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 10000), "%s", src.out);
    cr_assert_eq(migrate(&m, sock, uri, sflag, sval, "--connections", conns, NULL), 0, "%s\n%s",
                 m.out, m.err);
    json_t *done = last_event(&m, "completed");
    cr_assert(done, "%s", m.out);
    cr_expect_str_eq(json_string_value(json_object_get(done, "security")), security);
    cr_expect_eq(json_integer_value(json_object_get(done, "connections")), atoi(conns));
    json_decref(done);
    expect_moved(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

Test(migrate_tls, x509_with_4_connections_moves_a_writing_guest)
{
    moves("--tls-creds", cred("a"), "--tls-creds", cred("a"), "4", "TLS (X.509)");
}

Test(migrate_tls, psk_moves_a_writing_guest)
{
    moves("--tls-psk", cred("psk1"), "--tls-psk", cred("psk1"), "1", "TLS (PSK)");
}

/* The deal of blocks turns every pass, so a page rewritten between passes travels on two
 * connections: only the pass barrier keeps the later copy last. With the barrier taken out,
 * this test failed in 2 of 3 runs (the guest found a stale page). */
Test(migrate_tls, plain_tcp_with_16_connections_moves_a_writing_guest)
{
    moves(NULL, NULL, "--compress", "none", "16", "plain TCP");
}

/* The source is refused saying src_expect (and the destination logs dst_expect); the guest runs
 * on at the source and verifies; the destination goes on waiting. */
static void refused(const char *dflag, const char *dval, const char *dnames, const char *sflag,
                    const char *sval, const char *src_expect, const char *dst_expect)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    const char *uri = dnames  ? dest_start_args(&dst, dflag, dval, "--tls-names", dnames, NULL)
                      : dflag ? dest_start_args(&dst, dflag, dval, NULL)
                              : dest_start_args(&dst, NULL);
    source_start_small(&src, sock);
    cr_expect_eq(sflag ? migrate(&m, sock, uri, sflag, sval, NULL) : migrate(&m, sock, uri, NULL),
                 1, "%s\n%s", m.out, m.err);
    json_t *failed = last_event(&m, "failed");
    cr_assert(failed, "%s", m.out);
    const char *msg = json_string_value(json_object_get(failed, "message"));
    cr_expect(strstr(msg, src_expect), "source's message '%s' lacks '%s'", msg, src_expect);
    json_decref(failed);
    cr_expect(proc_wait_stderr(&dst, "still waiting for a migration", 10000), "%s", dst.err);
    cr_expect(strstr(dst.err, dst_expect), "destination's log lacks '%s': %s", dst_expect, dst.err);
    kill(dst.pid, SIGTERM);
    expect_stayed(&src, &dst, MEMSTAMP_DONE);
    proc_free(&src);
    proc_free(&dst);
    proc_free(&m);
}

Test(migrate_tls, a_source_without_credentials_is_refused)
{
    refused("--tls-creds", cred("a"), NULL, NULL, NULL, "takes only TLS connections",
            "refused: this destination takes only TLS");
}

Test(migrate_tls, a_destination_of_another_ca_is_refused)
{
    refused("--tls-creds", cred("a"), NULL, "--tls-creds", cred("b"),
            "certificate failed verification", "refused us");
}

Test(migrate_tls, a_different_psk_is_refused)
{
    refused("--tls-psk", cred("psk1"), NULL, "--tls-psk", cred("psk2"), "key or identity differs",
            "key or identity differs");
}

Test(migrate_tls, an_expired_certificate_is_refused)
{
    refused("--tls-creds", cred("expired"), NULL, "--tls-creds", cred("expired"),
            "refused our certificate", "expired");
}

Test(migrate_tls, a_name_not_on_the_list_is_refused)
{
    refused("--tls-creds", cred("a"), "other.example", "--tls-creds", cred("a"),
            "refused our certificate", "names none of --tls-names");
}

Test(migrate_tls, tls_to_a_plain_destination_is_refused)
{
    refused(NULL, NULL, NULL, "--tls-creds", cred("a"), "the peer answered in plain text",
            "this destination takes no TLS");
}

/* A peer that has not authenticated learns nothing of the host: no memory limit, no CPUID. */
Test(migrate_tls, the_destination_says_nothing_before_authentication)
{
    struct proc dst;
    const char *uri = dest_start(&dst, "--tls-creds", cred("a"));
    char reply[2048];
    ask(uri,
        "{\"hello\":{\"protocol\":1,\"stream_major\":1,\"stream_minor\":3,\"mem\":1048576,"
        "\"cpus\":1}}\n",
        reply, sizeof(reply));
    cr_expect(strstr(reply, "\"accept\":false"), "%s", reply);
    cr_expect(!strstr(reply, "caps") && !strstr(reply, "mem_limit") && !strstr(reply, "cpuid"),
              "told an unauthenticated peer: %s", reply);
    proc_free(&dst);
}

/* Garbage, a trickle, a bare connect and idle connections against a TLS destination, then the
 * real source gets through. */
Test(migrate_tls, hostile_peers_do_not_keep_a_tls_source_out)
{
    struct proc dst;
    const char *uri = dest_start(&dst, "--tls-creds", cred("a"));
    struct hostile_peers h;
    hostile_peers_open(&h, uri, '\x16', "GET / HTTP/1.0\r\n\r\n");
    real_migration_after(&dst, uri, "--tls-creds", cred("a"), "--connections", "4", NULL);
    hostile_peers_close(&h);
    proc_free(&dst);
}

/* A connection that claims to join a migration with a made-up session is refused. */
Test(migrate_tls, a_stranger_cannot_join)
{
    struct proc dst;
    const char *uri = dest_start(&dst, NULL, NULL);
    char reply[512];
    ask(uri, "{\"join\":\"00000000000000000000000000000000\",\"lane\":1}\n", reply, sizeof(reply));
    cr_expect(strstr(reply, "\"joined\":false"), "%s", reply);
    cr_expect(proc_wait_stderr(&dst, "still waiting for a migration", 15000), "%s", dst.err);
    proc_free(&dst);
}

/* ---- every fault phase with 4 connections, and one connection cut mid-pass ------------------ */

/* Copied into each test's own process (which may load at another address): text, no pointers;
 * "" for none. */
struct fault_case {
    char src_fault[24], dst_fault[24], expect[24], bw[8], downtime[8];
};

/* The fault phases test_migrate.c runs over one connection. */
static struct fault_case fault_cases[] = {
    {"cut@handshake", "", "cut at handshake", "", ""},
    {"cut@first-pass", "", "connection cut", "", ""},
    {"cut@dirty-pass", "", "connection cut", "20M", "1"},
    {"cut@state", "", "cut at state", "", ""},
    {"cut@ready", "", "cut before go", "", ""},
    {"", "kill@handshake", "destination", "", ""},
    {"", "cut@first-pass", "destination", "", ""},
    {"", "kill@restored", "destination", "", ""},
};

ParameterizedTestParameters(migrate_tls, every_fault_phase_with_four_connections)
{
    return cr_make_param_array(struct fault_case, fault_cases,
                               sizeof(fault_cases) / sizeof(fault_cases[0]));
}

ParameterizedTest(struct fault_case *f, migrate_tls, every_fault_phase_with_four_connections)
{
#define OR_NULL(x) ((x)[0] ? (x) : NULL)
    fails_and_stays(OR_NULL(f->src_fault), OR_NULL(f->dst_fault), f->expect, OR_NULL(f->bw),
                    OR_NULL(f->downtime), 4);
}

Test(migrate_tls, one_of_four_connections_cut_mid_pass)
{
    fails_and_stays("cut@lane", NULL, "further connection cut", NULL, NULL, 4);
}
