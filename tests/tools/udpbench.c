/* udpbench: UDP echo traffic for scripts/bench-net.sh.
 *   udpbench echo PORT                  answer every datagram with itself (the veth peer)
 *   udpbench load IP PORT SIZE SECONDS  keep 64 datagrams of SIZE bytes in flight to an echo
 *                                       service; prints datagrams and bytes echoed per second
 *   udpbench stream IP PORT RATE SECONDS  numbered datagrams at RATE a second; prints how many
 *                                       came back, how many were lost, and the longest gap
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int sock_to(const char *ip, int port, struct sockaddr_in *to, double timeout)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = (time_t)timeout,
                         .tv_usec = (suseconds_t)((timeout - (time_t)timeout) * 1e6)};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int big = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    *to = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &to->sin_addr);
    return s;
}

static int echo(int port)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (bind(s, (struct sockaddr *)&a, sizeof(a)))
        return perror("bind"), 1;
    char buf[65536];
    for (;;) {
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
        if (n >= 0)
            sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    }
}

static int load(const char *ip, int port, size_t size, double secs)
{
    struct sockaddr_in to;
    int s = sock_to(ip, port, &to, 0.2);
    char buf[65536];
    memset(buf, 'x', sizeof(buf));
    unsigned inflight = 0;
    uint64_t echoed = 0;
    double start = now(), end = start + secs;
    while (now() < end) {
        while (inflight < 64) {
            sendto(s, buf, size, 0, (struct sockaddr *)&to, sizeof(to));
            inflight++;
        }
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        if (n > 0)
            echoed++, inflight--;
        else
            inflight = 0; /* lost ones: refill the window */
    }
    double t = now() - start;
    printf("%.0f %.1f\n", echoed / t, echoed * size / t / 1e6);
    return 0;
}

static int stream(const char *ip, int port, double rate, double secs)
{
    struct sockaddr_in to;
    int s = sock_to(ip, port, &to, 0.0005);
    uint8_t *seen = calloc(1u << 22, 1);
    uint64_t sent = 0, back = 0;
    double start = now(), last = start, gap = 0, next = start;
    while (now() < start + secs + 0.5) {
        double t = now();
        if (t >= next && t < start + secs) {
            char msg[32];
            int len = snprintf(msg, sizeof(msg), "%llu", (unsigned long long)sent++);
            sendto(s, msg, (size_t)len, 0, (struct sockaddr *)&to, sizeof(to));
            next += 1 / rate;
        }
        char buf[64];
        ssize_t n = recv(s, buf, sizeof(buf) - 1, 0);
        if (n > 0) {
            buf[n] = 0;
            uint64_t i = strtoull(buf, NULL, 10);
            if (i < (1u << 22) && !seen[i])
                seen[i] = 1, back++;
            if (now() - last > gap)
                gap = now() - last;
            last = now();
        }
    }
    printf("%llu %llu %llu %.1f\n", (unsigned long long)sent, (unsigned long long)back,
           (unsigned long long)(sent - back), gap * 1e3);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "echo"))
        return echo(atoi(argv[2]));
    if (argc == 6 && !strcmp(argv[1], "load"))
        return load(argv[2], atoi(argv[3]), (size_t)atoi(argv[4]), atof(argv[5]));
    if (argc == 6 && !strcmp(argv[1], "stream"))
        return stream(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: udpbench echo PORT | load IP PORT SIZE SECONDS | "
                    "stream IP PORT RATE SECONDS\n");
    return 2;
}
