/* virtio-net with real tern processes in a network namespace each test makes: a bridge with
 * two TAPs, the host side at 10.0.0.1, the freestanding guest (tests/guest/vnet.c) at 10.0.0.2
 * answering ARP, ICMP echo and UDP echo. Hostile rings, bad --net values, a live migration
 * between two terns on two TAPs of the bridge under a stream of numbered datagrams, snapshot
 * and restore. Needs root (CAP_NET_ADMIN) and iproute2; skips with the reason otherwise. */
#include "harness.h"
#include "migrate_util.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char ns[40];
static char ip_bin[256], ping_bin[256];

/* The full path of a program on PATH (the harness spawns without a PATH search). */
static bool which(const char *name, char *out, size_t size)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "command -v %s", name);
    FILE *f = popen(cmd, "r");
    bool ok = f && fgets(out, (int)size, f) && out[0] == '/';
    if (f)
        pclose(f);
    out[strcspn(out, "\n")] = 0;
    return ok;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void net_setup(void)
{
    harness_require_kvm();
    if (geteuid() != 0)
        cr_skip_test("needs root (CAP_NET_ADMIN) for a network namespace, a bridge and TAPs");
    if (!which("ip", ip_bin, sizeof(ip_bin)))
        cr_skip_test("needs iproute2 (ip)");
    if (!which("ping", ping_bin, sizeof(ping_bin)))
        cr_skip_test("needs ping (iputils-ping)");
    snprintf(ns, sizeof(ns), "tern-net-%d", getpid());
    cr_assert_eq(sh("ip netns add %s && ip -n %s link set lo up && "
                    "ip -n %s link add br0 type bridge && "
                    "ip -n %s tuntap add tap0 mode tap && ip -n %s tuntap add tap1 mode tap && "
                    "ip -n %s link set tap0 master br0 && ip -n %s link set tap1 master br0 && "
                    "ip -n %s addr add 10.0.0.1/24 dev br0 && ip -n %s link set br0 up && "
                    "ip -n %s link set tap0 up && ip -n %s link set tap1 up",
                    ns, ns, ns, ns, ns, ns, ns, ns, ns, ns, ns),
                 0, "cannot make the namespace %s", ns);
    char path[96];
    snprintf(path, sizeof(path), "/run/netns/%s", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0 && setns(fd, CLONE_NEWNET) == 0, "cannot enter %s", ns);
    close(fd);
}

static void net_teardown(void)
{
    if (ns[0])
        sh("ip netns del %s 2>/dev/null", ns);
}

/* tern with the given arguments (NULL-terminated), inside the namespace. */
static void tern_in_ns(struct proc *p, ...)
{
    char *argv[32] = {ip_bin, "netns", "exec", ns, TERN_BINARY};
    int n = 5;
    va_list ap;
    va_start(ap, p);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 31;)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    proc_start(p, argv);
}

/* tern migrate from inside the namespace (the destination listens on its loopback). */
static void migrate_in_ns(struct proc *m, const char *sock, const char *uri)
{
    tern_in_ns(m, "migrate", "--api-socket", sock, uri, NULL);
}

static int udp_socket(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return s;
}

static const struct sockaddr_in guest = {.sin_family = AF_INET, .sin_port = 0x0700 /* 7 */};

static void udp_send(int s, const char *msg, size_t len)
{
    struct sockaddr_in to = guest;
    to.sin_addr.s_addr = htonl(0x0a000002);
    sendto(s, msg, len, 0, (struct sockaddr *)&to, sizeof(to));
}

/* Sends "quit" until it comes back (the guest then ends with 0). */
static void guest_quit(int s)
{
    char buf[64];
    for (int i = 0; i < 20; i++) {
        udp_send(s, "quit", 4);
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        if (n == 4 && !memcmp(buf, "quit", 4))
            return;
    }
    cr_expect(0, "the guest never echoed quit");
}

static void wait_up(struct proc *p)
{
    cr_assert(proc_wait_output(p, ", features 0x", 20000), "%s\n%s", p->out, p->err);
}

Test(net, arp_icmp_and_udp_echo_through_virtio_net, .init = net_setup, .fini = net_teardown,
     .timeout = 60)
{
    struct proc g, ping;
    tern_in_ns(&g, "run", "--kernel", harness_guest("vnet"), "--net",
               "tap=tap0,mac=52:54:00:aa:bb:01", "--cmdline", "every=100", NULL);
    wait_up(&g);
    cr_expect(strstr(g.out, "mac 52:54:0:aa:bb:1, link up"), "%s", g.out);
    char *pargv[] = {ping_bin, "-c", "3", "-W", "2", "10.0.0.2", NULL};
    proc_start(&ping, pargv);
    cr_expect_eq(proc_wait(&ping, 20000), 0, "ping: %s %s", ping.out, ping.err);
    cr_expect(strstr(ping.out, "3 received"), "%s", ping.out);
    proc_free(&ping);
    int s = udp_socket();
    unsigned back = 0;
    for (unsigned i = 0; i < 200; i++) {
        char msg[32], buf[64];
        int len = snprintf(msg, sizeof(msg), "datagram %u", i);
        udp_send(s, msg, (size_t)len);
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        back += n == len && !memcmp(buf, msg, (size_t)len);
    }
    cr_expect_eq(back, 200, "%u of 200 datagrams came back", back);
    guest_quit(s);
    close(s);
    cr_expect_eq(proc_wait(&g, 20000), 0, "%s\n%s", g.out, g.err);
    cr_expect(strstr(g.out, "vnet: echoed 200 datagrams"), "%s", g.out);
    proc_free(&g);
}

ParameterizedTestParameters(net, a_malformed_transmit_ring_needs_a_reset)
{
    static int bad[] = {1, 2, 3};
    return cr_make_param_array(int, bad, 3);
}

ParameterizedTest(int *bad, net, a_malformed_transmit_ring_needs_a_reset, .init = net_setup,
                  .fini = net_teardown, .timeout = 60)
{
    static const char *why[] = {"", "lie outside guest RAM", "loops (more than 128", "4294967295"};
    char cmdline[32];
    snprintf(cmdline, sizeof(cmdline), "bad=%d", *bad);
    struct proc g;
    tern_in_ns(&g, "run", "--kernel", harness_guest("vnet"), "--net", "tap=tap0", "--cmdline",
               cmdline, NULL);
    wait_up(&g);
    cr_expect(strstr(g.err, "the driver broke the virtqueue rules, device needs reset") &&
                  strstr(g.err, why[*bad]),
              "%s", g.err);
    cr_expect(strstr(g.out, "vnet: reset and up again"), "%s", g.out);
    int s = udp_socket();
    guest_quit(s); /* it serves after the reset */
    close(s);
    cr_expect_eq(proc_wait(&g, 20000), 0, "%s\n%s", g.out, g.err);
    proc_free(&g);
}

static void refused(const char *net, const char *expect)
{
    struct proc p;
    tern_in_ns(&p, "run", "--kernel", harness_guest("hello"), "--net", net, NULL);
    int st = proc_wait(&p, 20000);
    cr_expect_eq(st, 2, "--net %s: status %d", net, st);
    cr_expect(strstr(p.err, expect), "--net %s: expected '%s' in: %s", net, expect, p.err);
    cr_expect(strchr(p.err, '\n') == p.err + p.err_len - 1, "not one line: %s", p.err);
    proc_free(&p);
}

Test(net, a_tap_fd_an_orchestrator_passes, .init = net_setup, .fini = net_teardown, .timeout = 60)
{
    /* As an orchestrator does: the TAP opened here (with a virtio-net header), its fd inherited
     * by tern, which needs no privilege for it. */
    int fd = open("/dev/net/tun", O_RDWR);
    cr_assert(fd >= 0);
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    strcpy(ifr.ifr_name, "tap1");
    cr_assert_eq(ioctl(fd, TUNSETIFF, &ifr), 0, "TUNSETIFF: %s", strerror(errno));
    char spec[32];
    snprintf(spec, sizeof(spec), "fd=%d", fd);
    struct proc g;
    tern_in_ns(&g, "run", "--kernel", harness_guest("vnet"), "--net", spec, NULL);
    wait_up(&g);
    close(fd); /* tern holds its own copy */
    int s = udp_socket();
    guest_quit(s);
    close(s);
    cr_expect_eq(proc_wait(&g, 20000), 0, "%s\n%s", g.out, g.err);
    proc_free(&g);
    /* A TAP without the virtio-net header is refused, naming the fd. */
    fd = open("/dev/net/tun", O_RDWR);
    struct ifreq plain = {.ifr_flags = IFF_TAP | IFF_NO_PI};
    strcpy(plain.ifr_name, "tap1");
    cr_assert_eq(ioctl(fd, TUNSETIFF, &plain), 0, "TUNSETIFF: %s", strerror(errno));
    snprintf(spec, sizeof(spec), "fd=%d", fd);
    char expect[64];
    snprintf(expect, sizeof(expect), "--net fd=%d: tap1 is not a TAP opened with", fd);
    refused(spec, expect);
    close(fd);
}

Test(net, bad_net_values_are_refused_in_one_line_naming_the_flag, .init = net_setup,
     .fini = net_teardown, .timeout = 60)
{
    refused("tap=nosuch0", "--net tap=nosuch0: no such interface");
    refused("tap=br0", "--net tap=br0: the interface exists and is not a TAP");
    refused("tap=tap0,mac=01:00:5e:00:00:01", "--net: mac=01:00:5e:00:00:01 is not a unicast MAC");
    refused("tap=tap0,mac=52:54:00:zz:00:01", "is not a unicast MAC");
    refused("fd=0", "--net fd=0: not a TAP device");
    refused("tap=tap0,fd=3", "--net: give tap= or fd=, once");
    refused("mac=52:54:00:00:00:01", "--net: tap=IFNAME or fd=N is missing");
    refused("tap=tap0,speed=10G", "--net: unknown key 'speed'");
    /* A TAP another tern holds is busy. */
    struct proc a;
    tern_in_ns(&a, "run", "--kernel", harness_guest("vnet"), "--net", "tap=tap0", NULL);
    wait_up(&a);
    refused("tap=tap0", "--net tap=tap0: the interface is busy");
    int s = udp_socket();
    guest_quit(s);
    close(s);
    proc_wait(&a, 20000);
    proc_free(&a);
}

/* ---- a live migration under a stream of datagrams ----------------------------------------- */

struct stream {
    int s;
    volatile int stop;
    unsigned sent, echoed, echoed_after;
    double max_gap_ms;
    volatile int moved;
    uint8_t *seen;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *stream_rx(void *arg)
{
    struct stream *st = arg;
    double last = now_ms();
    char buf[64];
    while (!st->stop) {
        ssize_t n = recv(st->s, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = 0;
        unsigned i = (unsigned)strtoul(buf, NULL, 10);
        double t = now_ms();
        if (t - last > st->max_gap_ms)
            st->max_gap_ms = t - last;
        last = t;
        if (i < 100000 && !st->seen[i]) {
            st->seen[i] = 1;
            st->echoed++;
            st->echoed_after += st->moved;
        }
    }
    return NULL;
}

Test(net, datagrams_flow_through_a_live_migration_to_a_tap_on_another_port, .init = net_setup,
     .fini = net_teardown, .timeout = 120)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    tern_in_ns(&src, "run", "--kernel", harness_guest("vnet"), "--net", "tap=tap0", "--cmdline",
               "every=1000", "--api-socket", sock, NULL);
    wait_up(&src);
    tern_in_ns(&dst, "run", "--incoming", "tcp:127.0.0.1:4471", "--net", "tap=tap1", NULL);
    cr_assert(proc_wait_stderr(&dst, "waiting for a migration", 10000), "%s", dst.err);
    struct stream st = {.s = udp_socket(), .seen = calloc(100000, 1)};
    pthread_t rx;
    pthread_create(&rx, NULL, stream_rx, &st);
    double start = now_ms(), migrated_at = 0;
    bool started = false;
    /* 1000 datagrams a second for 4 s; the migration starts after 1 s. */
    while (now_ms() - start < 4000) {
        char msg[32];
        int len = snprintf(msg, sizeof(msg), "%u", st.sent++);
        udp_send(st.s, msg, (size_t)len);
        if (!started && now_ms() - start > 1000) {
            started = true;
            migrate_in_ns(&m, sock, "tcp:127.0.0.1:4471");
        }
        if (started && !st.moved && strstr(m.out, "migrated")) {
            st.moved = 1;
            migrated_at = now_ms() - start;
        }
        if (started && !st.moved)
            proc_wait_output(&m, "migrated to", 0);
        usleep(1000);
    }
    usleep(300000);
    st.stop = 1;
    pthread_join(rx, NULL);
    cr_expect_eq(proc_wait(&m, 30000), 0, "%s\n%s", m.out, m.err);
    unsigned lost = st.sent - st.echoed;
    cr_log_info("net migration: %u datagrams sent, %u echoed (%u after the move at %.0f ms), "
                "%u lost, longest gap %.1f ms",
                st.sent, st.echoed, st.echoed_after, migrated_at, lost, st.max_gap_ms);
    fprintf(stderr,
            "net migration: %u sent, %u echoed (%u after the move), %u lost, longest gap %.1f ms\n",
            st.sent, st.echoed, st.echoed_after, lost, st.max_gap_ms);
    /* The guest answers from the new port with no help from the sender: tern announced its MAC
     * there, so the bridge moved it. */
    cr_expect_gt(st.echoed_after, 1000, "%u echoed after the move", st.echoed_after);
    cr_expect_lt(lost, st.sent / 20, "%u of %u lost", lost, st.sent);
    guest_quit(st.s);
    close(st.s);
    free(st.seen);
    cr_expect_eq(proc_wait(&src, 20000), 0, "source: %s", src.err);
    cr_expect_eq(proc_wait(&dst, 20000), 0, "destination: %s\n%s", dst.out, dst.err);
    proc_free(&m);
    proc_free(&src);
    proc_free(&dst);
}

Test(net, a_destination_needs_a_tap_for_each_network_device, .init = net_setup,
     .fini = net_teardown, .timeout = 60)
{
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    tern_in_ns(&src, "run", "--kernel", harness_guest("vnet"), "--net", "tap=tap0", "--api-socket",
               sock, NULL);
    wait_up(&src);
    tern_in_ns(&dst, "run", "--incoming", "tcp:127.0.0.1:4472", NULL);
    cr_assert(proc_wait_stderr(&dst, "waiting for a migration", 10000), "%s", dst.err);
    migrate_in_ns(&m, sock, "tcp:127.0.0.1:4472");
    cr_expect_neq(proc_wait(&m, 30000), 0);
    cr_expect(strstr(m.out, "the VM has 1 network device(s); the destination was given --net 0 "
                            "time(s)"),
              "out: %s err: %s", m.out, m.err);
    kill(dst.pid, SIGTERM);
    proc_wait(&dst, 10000);
    int s = udp_socket();
    guest_quit(s); /* still on the source */
    close(s);
    cr_expect_eq(proc_wait(&src, 20000), 0, "%s", src.err);
    proc_free(&m);
    proc_free(&src);
    proc_free(&dst);
}

Test(net, a_snapshot_restores_onto_another_tap, .init = net_setup, .fini = net_teardown,
     .timeout = 60)
{
    const char *sock = harness_tmp("sock"), *snap = harness_tmp("snap");
    struct proc src, dst;
    tern_in_ns(&src, "run", "--kernel", harness_guest("vnet"), "--net", "tap=tap0", "--api-socket",
               sock, NULL);
    wait_up(&src);
    harness_snapshot(sock, snap);
    json_decref(harness_ctl(sock, "quit", NULL));
    proc_wait(&src, 20000);
    char uri[512];
    snprintf(uri, sizeof(uri), "file:%s", snap);
    struct proc bare;
    tern_in_ns(&bare, "run", "--incoming", uri, NULL);
    cr_expect_eq(proc_wait(&bare, 20000), 2);
    cr_expect(strstr(bare.err, "--net given 0 time(s); the stream's VM has 1 network device(s)"),
              "%s", bare.err);
    proc_free(&bare);
    tern_in_ns(&dst, "run", "--incoming", uri, "--net", "tap=tap1", NULL);
    int s = udp_socket();
    guest_quit(s);
    close(s);
    cr_expect_eq(proc_wait(&dst, 20000), 0, "%s\n%s", dst.out, dst.err);
    proc_free(&src);
    proc_free(&dst);
}
