/* vnet: a freestanding virtio-net driver at CPL3 that answers ARP, ICMP echo and UDP echo.
 *
 * It finds the device on the PCI bus (rt/vdev.c), negotiates VERSION_1, MAC, STATUS and
 * MRG_RXBUF (and, with csum=1, CSUM and GUEST_CSUM), posts 64 receive buffers of 2 KiB and
 * polls. Its address is ip=N (an IPv4 address as one number, default 10.0.0.2 = 167772162);
 * it answers ARP requests for it, ICMP echo requests to it, and UDP datagrams to port 7 with
 * the same payload. A datagram "quit" ends it with exit code 0 after the answer. Every
 * `every=N` datagrams (default 1000) it prints how many it echoed.
 * bad=N instead queues one malformed transmit chain (1: a buffer outside RAM, 2: a loop, 3: a
 * 4 GiB length) and expects DEVICE_NEEDS_RESET; it then resets the device, brings it up again
 * and serves as above.
 */
#include "vdev.h"

#define RXQ 0
#define TXQ 1
#define QSIZE 128u
#define NRX 64u
#define BUF 2048u
#define HDR 12u

struct ring {
    struct vq_desc *desc;
    volatile uint16_t *avail;
    volatile uint16_t *used;
    uint16_t avail_idx, used_seen;
};

static struct vdev dev;
static struct ring rx, tx;
static uint8_t *rxbufs, *txbufs;
static uint8_t mac[6];
static uint32_t my_ip;
static unsigned tx_next;
static uint64_t echoed, every;

static void ring_init(struct ring *r)
{
    r->desc = vdev_alloc(16 * QSIZE, 4096);
    r->avail = vdev_alloc(6 + 2 * QSIZE, 4096);
    r->used = vdev_alloc(6 + 8 * QSIZE, 4096);
    vdev_fill(r->desc, 0, 16 * QSIZE);
    vdev_fill((void *)r->avail, 0, 6 + 2 * QSIZE);
    vdev_fill((void *)r->used, 0, 6 + 8 * QSIZE);
}

static void ring_offer(struct ring *r, unsigned q, uint16_t head)
{
    r->avail[2 + r->avail_idx % QSIZE] = head;
    __atomic_store_n(&r->avail[1], (uint16_t)(r->avail_idx + 1), __ATOMIC_RELEASE);
    r->avail_idx++;
    vdev_notify(&dev, q);
}

/* The next used entry: its id and length, or -1 when none. */
static int ring_used(struct ring *r, uint32_t *len)
{
    if (__atomic_load_n(&r->used[1], __ATOMIC_ACQUIRE) == r->used_seen)
        return -1;
    volatile uint32_t *e = (volatile uint32_t *)(r->used + 2) + 2 * (r->used_seen % QSIZE);
    r->used_seen++;
    *len = e[1];
    return (int)e[0];
}

static void rx_post(unsigned i)
{
    rx.desc[i] = (struct vq_desc){(uint64_t)(uintptr_t)(rxbufs + i * BUF), BUF, 2, 0};
    ring_offer(&rx, RXQ, (uint16_t)i);
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t csum(const uint8_t *p, unsigned n)
{
    uint32_t s = 0;
    for (unsigned i = 0; i + 1 < n; i += 2)
        s += be16(p + i);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static void copy(uint8_t *d, const uint8_t *s, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        d[i] = s[i];
}

/* Sends frame (len bytes, without the virtio header) from a transmit slot. */
static void send(const uint8_t *frame, unsigned len)
{
    uint32_t l;
    while (ring_used(&tx, &l) >= 0) /* reclaim what the device sent */
        ;
    unsigned slot = tx_next++ % QSIZE;
    uint8_t *b = txbufs + slot * BUF;
    vdev_fill(b, 0, HDR);
    copy(b + HDR, frame, len);
    tx.desc[slot] = (struct vq_desc){(uint64_t)(uintptr_t)b, HDR + len, 0, 0};
    ring_offer(&tx, TXQ, (uint16_t)slot);
}

static void answer_arp(const uint8_t *f, unsigned len)
{
    if (len < 42 || be16(f + 14) != 1 || be16(f + 16) != 0x0800 || be16(f + 20) != 1 ||
        be32(f + 38) != my_ip)
        return;
    uint8_t r[42];
    copy(r, f + 6, 6);
    copy(r + 6, mac, 6);
    put16(r + 12, 0x0806);
    copy(r + 14, f + 14, 6);
    put16(r + 20, 2);
    copy(r + 22, mac, 6);
    copy(r + 28, f + 38, 4);
    copy(r + 32, f + 22, 10); /* the asker's MAC and IP */
    send(r, sizeof(r));
}

/* ICMP echo and UDP echo: the frame turned around (MACs, IPs, ports swapped). */
static bool answer_ip(uint8_t *f, unsigned len)
{
    if (len < 34 || (f[14] >> 4) != 4 || be32(f + 30) != my_ip)
        return false;
    unsigned ihl = (f[14] & 0xf) * 4u, total = be16(f + 16);
    if (ihl < 20 || total < ihl + 8 || 14 + total > len)
        return false;
    uint8_t *l4 = f + 14 + ihl;
    bool quit = false;
    if (f[23] == 1 && l4[0] == 8) { /* echo request -> reply */
        l4[0] = 0;
        put16(l4 + 2, 0);
        put16(l4 + 2, csum(l4, total - ihl));
    } else if (f[23] == 17 && be16(l4 + 2) == 7) {
        uint16_t sport = be16(l4);
        put16(l4, 7);
        put16(l4 + 2, sport);
        put16(l4 + 6, 0); /* no UDP checksum (allowed over IPv4) */
        unsigned plen = be16(l4 + 4) >= 8 ? be16(l4 + 4) - 8u : 0;
        quit = plen == 4 && l4[8] == 'q' && l4[9] == 'u' && l4[10] == 'i' && l4[11] == 't';
        echoed++;
        if (every && echoed % every == 0)
            rt_printf("vnet: echoed %lu datagrams\n", echoed);
    } else {
        return false;
    }
    uint8_t t[6];
    copy(t, f, 6), copy(f, f + 6, 6), copy(f + 6, t, 6);
    uint8_t a[4];
    copy(a, f + 26, 4), copy(f + 26, f + 30, 4), copy(f + 30, a, 4);
    send(f, 14 + total);
    return quit;
}

static uint64_t bring_up(bool offload)
{
    vdev_fill(rx.desc, 0, 16 * QSIZE), vdev_fill((void *)rx.avail, 0, 6 + 2 * QSIZE);
    vdev_fill((void *)rx.used, 0, 6 + 8 * QSIZE);
    vdev_fill(tx.desc, 0, 16 * QSIZE), vdev_fill((void *)tx.avail, 0, 6 + 2 * QSIZE);
    vdev_fill((void *)tx.used, 0, 6 + 8 * QSIZE);
    rx.avail_idx = rx.used_seen = tx.avail_idx = tx.used_seen = 0;
    uint64_t want =
        1ull << 32 | 1ull << 5 | 1ull << 16 | 1ull << 15 | (offload ? (1ull << 0 | 1ull << 1) : 0);
    uint64_t took = vdev_negotiate(&dev, want);
    if (took == ~0ull)
        return took;
    vdev_queue(&dev, RXQ, QSIZE, rx.desc, rx.avail, rx.used, 0xffff);
    vdev_queue(&dev, TXQ, QSIZE, tx.desc, tx.avail, tx.used, 0xffff);
    vdev_driver_ok(&dev);
    for (unsigned i = 0; i < NRX; i++)
        rx_post(i);
    return took;
}

/* One malformed transmit chain; the device must ask for a reset. */
static int break_ring(unsigned bad, uint64_t ram_top)
{
    uint8_t *b = txbufs;
    if (bad == 1)
        tx.desc[0] = (struct vq_desc){ram_top + (1ull << 30), 64, 0, 0};
    else if (bad == 2)
        tx.desc[0] = (struct vq_desc){(uint64_t)(uintptr_t)b, 64, 1, 1},
        tx.desc[1] = (struct vq_desc){(uint64_t)(uintptr_t)b, 64, 1, 0};
    else
        tx.desc[0] = (struct vq_desc){(uint64_t)(uintptr_t)b, 0xffffffffu, 0, 0};
    ring_offer(&tx, TXQ, 0);
    for (unsigned spin = 0; spin < 400000000u; spin++)
        if (R8(dev.common, 20) & 64) {
            rt_printf("vnet: device needs reset (status 0x%x)\n", R8(dev.common, 20));
            return 0;
        }
    rt_printf("vnet: the device never asked for a reset\n");
    return 1;
}

int guest_main(unsigned cpu, const struct boot_info *info)
{
    if (cpu != 0)
        return 0;
    my_ip = (uint32_t)rt_cmdline_u64(info, "ip", 167772162u);
    every = rt_cmdline_u64(info, "every", 1000);
    bool offload = rt_cmdline_u64(info, "csum", 0);
    if (vdev_find(0x1041, rt_cmdline_u64(info, "bar", 0xd0000000u), &dev, "vnet"))
        return 3;
    vdev_alloc_init((rt_image_end() + (2ull << 20) - 1) & ~((2ull << 20) - 1));
    ring_init(&rx);
    ring_init(&tx);
    rxbufs = vdev_alloc(NRX * BUF, 4096);
    txbufs = vdev_alloc(QSIZE * BUF, 4096);
    uint64_t took = bring_up(offload);
    unsigned bad = (unsigned)rt_cmdline_u64(info, "bad", 0);
    if (took != ~0ull && bad) {
        const struct boot_ram_region *last = &info->regions[info->region_count - 1];
        if (break_ring(bad, last->gpa + last->size))
            return 1;
        took = bring_up(offload);
        rt_printf("vnet: reset and up again\n");
    }
    if (took == ~0ull) {
        rt_printf("vnet: FEATURES_OK refused\n");
        return 2;
    }
    for (unsigned i = 0; i < 6; i++)
        mac[i] = R8(dev.devcfg, i);
    rt_printf("vnet: up: mac %x:%x:%x:%x:%x:%x, link %s, ip %u.%u.%u.%u, features 0x%lx\n", mac[0],
              mac[1], mac[2], mac[3], mac[4], mac[5], R16(dev.devcfg, 6) & 1 ? "up" : "down",
              my_ip >> 24, (my_ip >> 16) & 0xff, (my_ip >> 8) & 0xff, my_ip & 0xff, took);
    for (;;) {
        uint32_t len;
        int id = ring_used(&rx, &len);
        if (id < 0) {
            if (R8(dev.common, 20) & 64) {
                rt_printf("vnet: device needs reset\n");
                return 2;
            }
            rt_pause();
            continue;
        }
        if (id >= (int)NRX)
            return 2;
        uint8_t *f = rxbufs + (unsigned)id * BUF + HDR;
        unsigned flen = len > HDR ? len - HDR : 0;
        bool quit = false;
        if (flen >= 14 && be16(f + 12) == 0x0806)
            answer_arp(f, flen);
        else if (flen >= 14 && be16(f + 12) == 0x0800)
            quit = answer_ip(f, flen);
        rx_post((unsigned)id);
        if (quit) {
            rt_printf("vnet: quit after %lu datagrams\n", echoed);
            for (unsigned spin = 0; spin < 1000000; spin++) /* let the answer leave */
                rt_pause();
            return 0;
        }
    }
}
