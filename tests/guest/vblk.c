/* vblk: a freestanding virtio-blk driver at CPL3, the witness that no disk write is lost.
 *
 * It finds the device by PCI enumeration (ports 0xCF8/0xCFC), moves its 64-bit BAR into the
 * 32-bit window (bar=ADDR, default 0xd0000000), walks the virtio capabilities, negotiates
 * features (VERSION_1 and, with indirect=1 and event=1, INDIRECT_DESC and EVENT_IDX), sets up
 * queue 0 and, with msix=1, MSI-X vector 0 for it (checked in the LAPIC's IRR: interrupts are
 * off, so the vector stays pending), or with intx=1 the INTx line through the IOAPIC pin its
 * interrupt-line register names (vector 0x41; the ISR register reads it and lowers it).
 *
 * Modes (mode=N):
 *   0 write/verify: pass g writes every sector of the first mib MiB with {sector, g} tags,
 *     flushes, reads them back and checks each; passes=N (0: forever), qd=N requests in
 *     flight (1..32), kib=N per request (4..1024), rest=N ms idle after each pass (so that a
 *     test's guest runs for a known time).
 *   1 readhold: write once, then each round poisons a buffer of mib MiB with the CPU, waits
 *     gap=N ms, reads the disk into it, and re-checks it every ms for hold=N ms: a page the
 *     device wrote that a migration did not send again shows up as a mismatch on the
 *     destination.
 *   2 extras: GET_ID (printed), WRITE_ZEROES and DISCARD (read back as zeros), FLUSH.
 *   4 bench: op=N (0 sequential write, 1 sequential read, 2 random write, 3 random read) of
 *     kib=N requests, qd=N in flight, over the first mib MiB for secs=N seconds (TSC); prints
 *     MiB/s and IOPS.
 *   3 bad=N: a malformed request (1 buffer outside RAM, 2 a descriptor loop, 3 a 4 GiB
 *     length, 4 a queue size of 100); the device must report DEVICE_NEEDS_RESET, and after a
 *     reset a write/verify pass must succeed.
 * Exit 0 when every check passed; 1 on a mismatch; 2 on a device error; 3 when no device.
 */
#include "vdev.h"

#define SECTOR 512u
#define QSIZE 128u
#define MAXQD 32u
#define MAX_BLOCK (1024u * 1024)

static struct vdev dev;
static volatile uint8_t *common, *isr, *devcfg;
static struct vq_desc *desc;
static volatile uint16_t *avail, *used16;
static volatile uint32_t *used32;
static uint16_t avail_idx, used_seen;
static uint8_t (*hdrs)[16];
static volatile uint8_t *status;
static uint8_t *data;
static struct vq_desc (*itables)[4];
static bool use_indirect, use_event, use_msix, use_intx;
static unsigned intx_gsi;

#define alloc vdev_alloc
#define fill vdev_fill
#define cfg_read vdev_cfg_read
#define cfg_write vdev_cfg_write

static void kick(void)
{
    vdev_notify(&dev, 0);
}

static void negotiate(void)
{
    uint64_t want = (1ull << 32) | (1ull << 9) | (1ull << 13) | (1ull << 14) | (1ull << 2) |
                    (1ull << 6) | (use_indirect ? 1ull << 28 : 0) | (use_event ? 1ull << 29 : 0);
    if (vdev_negotiate(&dev, want) == ~0ull) {
        rt_printf("vblk: FEATURES_OK refused\n");
        rt_exit(2);
    }
}

static void setup_queue(uint16_t size)
{
    vdev_queue(&dev, 0, size, desc, avail, used16, use_msix ? 0 : 0xffff);
}

static void rings_reset(void)
{
    fill(desc, 0, 16 * QSIZE);
    fill((void *)avail, 0, 6 + 2 * QSIZE);
    fill((void *)used16, 0, 6 + 8 * QSIZE);
    avail_idx = used_seen = 0;
}

/* ---- requests ------------------------------------------------------------------------------ */

static uint8_t *slot_data(unsigned s)
{
    return data + (uint64_t)s * MAX_BLOCK;
}

/* Queues request s: type, sector, len bytes of slot s's buffer (or of buf, when given). */
static void submit(unsigned s, uint32_t type, uint64_t sector, uint32_t len, void *buf)
{
    uint8_t *h = hdrs[s];
    *(uint32_t *)h = type;
    *(uint32_t *)(h + 4) = 0;
    *(uint64_t *)(h + 8) = sector;
    status[s] = 0xff;
    struct vq_desc chain[3];
    unsigned n = 0;
    chain[n++] = (struct vq_desc){(uint64_t)(uintptr_t)h, 16, 1, 0};
    if (len)
        chain[n++] = (struct vq_desc){(uint64_t)(uintptr_t)(buf ? buf : slot_data(s)), len,
                                      (uint16_t)(type == 0 || type == 8 ? 3 : 1), 0};
    chain[n++] = (struct vq_desc){(uint64_t)(uintptr_t)&status[s], 1, 2, 0};
    unsigned head = 3 * s;
    if (use_indirect) {
        for (unsigned i = 0; i < n; i++) {
            itables[s][i] = chain[i];
            itables[s][i].next = (uint16_t)(i + 1);
        }
        itables[s][n - 1].flags &= (uint16_t)~1u;
        desc[head] = (struct vq_desc){(uint64_t)(uintptr_t)itables[s], 16 * n, 4, 0};
    } else {
        for (unsigned i = 0; i < n; i++) {
            desc[head + i] = chain[i];
            desc[head + i].next = (uint16_t)(head + i + 1);
        }
        desc[head + n - 1].flags &= (uint16_t)~1u;
    }
    avail[2 + avail_idx % QSIZE] = (uint16_t)head;
    __atomic_store_n(&avail[1], (uint16_t)(avail_idx + 1), __ATOMIC_RELEASE);
    avail_idx++;
    kick();
}

static unsigned spins_limit = 400000000u;

/* Waits for one completion; returns its slot. */
static unsigned reap(void)
{
    for (unsigned spin = 0;; spin++) {
        uint16_t idx = __atomic_load_n(&used16[1], __ATOMIC_ACQUIRE);
        if (idx != used_seen) {
            uint32_t id = used32[1 + 2 * (used_seen % QSIZE)];
            used_seen++;
            if (use_event) /* used_event: interrupt me at every completion */
                avail[2 + QSIZE] = used_seen;
            return id / 3;
        }
        if (R8(common, 20) & 64) {
            rt_printf("vblk: device needs reset (status 0x%x)\n", R8(common, 20));
            rt_exit(2);
        }
        if (spin == spins_limit) {
            rt_printf("vblk: no completion\n");
            rt_exit(2);
        }
        rt_pause();
    }
}

static void check_status(unsigned s, const char *what, uint64_t sector)
{
    if (status[s] != 0) {
        rt_printf("vblk: %s at sector %lu: status %u\n", what, sector, status[s]);
        rt_exit(2);
    }
}

/* ---- the workloads ------------------------------------------------------------------------ */

static void stamp(uint8_t *p, uint64_t sector, uint64_t gen, uint32_t len)
{
    for (uint32_t o = 0; o < len; o += SECTOR) {
        uint64_t *w = (uint64_t *)(p + o);
        w[0] = sector + o / SECTOR;
        w[1] = gen;
        w[63] = ~(sector + o / SECTOR);
    }
}

static int verify(const uint8_t *p, uint64_t sector, uint64_t gen, uint32_t len)
{
    for (uint32_t o = 0; o < len; o += SECTOR) {
        const volatile uint64_t *w = (const volatile uint64_t *)(p + o);
        uint64_t s = sector + o / SECTOR;
        if (w[0] != s || w[1] != gen || w[63] != ~s) {
            rt_printf("vblk: MISMATCH at sector %lu: found {%lu, %lu}, expected {%lu, %lu}\n", s,
                      w[0], w[1], s, gen);
            return -1;
        }
    }
    return 0;
}

/* Every sector of [0, sectors) in requests of blk bytes, qd in flight: write (gen) or read and
 * verify. */
static void sweep(bool write, uint64_t sectors, uint32_t blk, unsigned qd, uint64_t gen)
{
    uint64_t next = 0, done = 0, total = sectors * SECTOR / blk;
    uint64_t sector_of[MAXQD];
    unsigned free_slots[MAXQD], nfree = qd;
    for (unsigned i = 0; i < qd; i++)
        free_slots[i] = i;
    while (done < total) {
        while (nfree && next < total) {
            unsigned s = free_slots[--nfree];
            sector_of[s] = next * blk / SECTOR;
            if (write)
                stamp(slot_data(s), sector_of[s], gen, blk);
            else
                fill(slot_data(s), 0xee, 64);
            submit(s, write ? 1 : 0, sector_of[s], blk, NULL);
            next++;
        }
        unsigned s = reap();
        check_status(s, write ? "write" : "read", sector_of[s]);
        if (!write && verify(slot_data(s), sector_of[s], gen, blk))
            rt_exit(1);
        free_slots[nfree++] = s;
        done++;
    }
}

static void flush(void)
{
    submit(0, 4, 0, 0, NULL);
    check_status(reap(), "flush", 0);
}

static void lapic_enable(void)
{
    /* The LAPIC takes fixed interrupts only when software-enabled (SVR bit 8). */
    volatile uint32_t *svr = (volatile uint32_t *)(uintptr_t)0xfee000f0u;
    *svr = *svr | 0x1ffu;
}

/* INTx: the IOAPIC pin the device's interrupt line names, level-triggered, to vector 0x41. */
static void intx_route(unsigned gsi)
{
    volatile uint32_t *sel = (volatile uint32_t *)(uintptr_t)0xfec00000u;
    volatile uint32_t *win = (volatile uint32_t *)(uintptr_t)0xfec00010u;
    *sel = 0x11 + 2 * gsi;
    *win = 0; /* destination APIC 0 */
    *sel = 0x10 + 2 * gsi;
    *win = 0x41 | 1u << 15; /* level, active high, unmasked */
}

static bool lapic_irr(unsigned vector)
{
    volatile uint32_t *irr = (volatile uint32_t *)(uintptr_t)(0xfee00200u + 0x10 * (vector / 32));
    return *irr & (1u << (vector % 32));
}

static void check_intx(void)
{
    if (!use_intx)
        return;
    uint8_t first = R8(isr, 0), second = R8(isr, 0);
    rt_printf("vblk: INTx on GSI %u: vector 0x41 %s in the LAPIC, ISR read 0x%x then 0x%x\n",
              intx_gsi, lapic_irr(0x41) ? "pending" : "NOT pending", first, second);
}

static void check_msix(void)
{
    check_intx();
    if (!use_msix)
        return;
    /* Vector 0x40 to APIC 0: pending in the IRR (interrupts are off at CPL3). */
    if (lapic_irr(0x40))
        rt_printf("vblk: MSI-X vector 0x40 pending in the LAPIC\n");
    else
        rt_printf("vblk: MSI-X vector 0x40 NOT pending\n");
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int mode_bench(const struct boot_info *info, uint64_t sectors, uint32_t blk, unsigned qd)
{
    static const char *names[] = {"seqwrite", "seqread", "randwrite", "randread"};
    uint64_t op = rt_cmdline_u64(info, "op", 0) & 3;
    uint64_t secs = rt_cmdline_u64(info, "secs", 5);
    uint64_t tick_s = (uint64_t)(info->tsc_khz ? info->tsc_khz : 1000000) * 1000;
    uint64_t blocks = sectors * SECTOR / blk, next = 0, done = 0, inflight = 0;
    bool write = op == 0 || op == 2, random = op >= 2;
    for (unsigned s = 0; s < qd; s++)
        fill(slot_data(s), (uint8_t)(0x30 + s), blk);
    uint64_t start = rt_rdtsc(), end = start + secs * tick_s;
    for (unsigned s = 0; s < qd; s++, inflight++) {
        uint64_t b = random ? rng() % blocks : next++ % blocks;
        submit(s, write ? 1 : 0, b * blk / SECTOR, blk, NULL);
    }
    while (inflight) {
        unsigned s = reap();
        check_status(s, names[op], 0);
        done++;
        inflight--;
        if (rt_rdtsc() < end) {
            uint64_t b = random ? rng() % blocks : next++ % blocks;
            submit(s, write ? 1 : 0, b * blk / SECTOR, blk, NULL);
            inflight++;
        }
    }
    uint64_t ticks = rt_rdtsc() - start;
    uint64_t us = ticks / (tick_s / 1000000);
    uint64_t kib_s = done * (blk / 1024) * 1000000 / (us ? us : 1);
    rt_printf("vblk-bench: %s bs=%u qd=%u ios=%lu us=%lu KiB/s=%lu iops=%lu\n", names[op], blk, qd,
              done, us, kib_s, done * 1000000 / (us ? us : 1));
    return 0;
}

static int mode_extras(uint64_t sectors)
{
    char id[21] = {0};
    submit(0, 8, 0, 20, id);
    check_status(reap(), "get-id", 0);
    rt_printf("vblk: id '%s'\n", id);
    sweep(true, 64, 4096, 4, 7);
    /* write-zeroes sectors 0..7, discard 8..15: both read back as zeros */
    for (unsigned k = 0; k < 2; k++) {
        uint64_t *seg = (uint64_t *)slot_data(1);
        seg[0] = 8 * k;
        seg[1] = 8; /* num_sectors 8, flags 0 */
        submit(1, k ? 11 : 13, 0, 16, seg);
        check_status(reap(), k ? "discard" : "write-zeroes", 8 * k);
    }
    fill(slot_data(0), 0xee, 8192);
    submit(0, 0, 0, 8192, NULL);
    check_status(reap(), "read", 0);
    for (unsigned i = 0; i < 8192; i++)
        if (slot_data(0)[i]) {
            rt_printf("vblk: byte %u not zero after write-zeroes/discard\n", i);
            return 1;
        }
    flush();
    /* A read past the end fails with IOERR, and the device goes on. */
    submit(0, 0, sectors, 4096, NULL);
    unsigned s = reap();
    rt_printf("vblk: read past the end: status %u\n", status[s]);
    rt_printf("vblk: extras OK\n");
    return status[s] == 1 ? 0 : 1;
}

static void mode_bad(unsigned bad, uint64_t ram_top)
{
    if (bad == 4) {
        R8(common, 20) = 0;
        rings_reset();
        R8(common, 20) = 1 | 2;
        R32(common, 8) = 1;
        R32(common, 12) = 1; /* VERSION_1 */
        R8(common, 20) = 1 | 2 | 8;
        R16(common, 22) = 0;
        R16(common, 24) = 100;
        R16(common, 28) = 1;
        return;
    }
    unsigned head = 0;
    desc[0] = (struct vq_desc){(uint64_t)(uintptr_t)hdrs[0], 16, 1, 1};
    if (bad == 1) /* data far outside RAM */
        desc[1] = (struct vq_desc){ram_top + (1ull << 30), 4096, 3, 2};
    else if (bad == 2) /* 1 -> 2 -> 1 ... */
        desc[1] = (struct vq_desc){(uint64_t)(uintptr_t)slot_data(0), 4096, 3, 2};
    else /* a 4 GiB length */
        desc[1] = (struct vq_desc){(uint64_t)(uintptr_t)slot_data(0), 0xffffffffu, 3, 2};
    desc[2] = (struct vq_desc){(uint64_t)(uintptr_t)&status[0], 1, bad == 2 ? 3 : 2,
                               (uint16_t)(bad == 2 ? 1 : 0)};
    *(uint32_t *)hdrs[0] = 0;
    avail[2 + avail_idx % QSIZE] = (uint16_t)head;
    __atomic_store_n(&avail[1], (uint16_t)(avail_idx + 1), __ATOMIC_RELEASE);
    avail_idx++;
    kick();
}

static void wait_needs_reset(void)
{
    for (unsigned spin = 0; spin < spins_limit; spin++)
        if (R8(common, 20) & 64) {
            rt_printf("vblk: device needs reset (status 0x%x)\n", R8(common, 20));
            return;
        }
    rt_printf("vblk: the device never asked for a reset\n");
    rt_exit(1);
}

static void start_device(unsigned slot, unsigned msix_cap, uint16_t qsize)
{
    rings_reset();
    negotiate();
    setup_queue(qsize);
    if (use_intx) {
        lapic_enable();
        intx_gsi = cfg_read(slot, 0x3c) & 0xff;
        intx_route(intx_gsi);
    }
    if (use_msix) {
        lapic_enable();
        uint32_t tbl = cfg_read(slot, msix_cap + 4); /* BAR 0, offset tbl & ~7 */
        volatile uint32_t *e = (volatile uint32_t *)(uintptr_t)(dev.bar + (tbl & ~7u));
        e[0] = 0xfee00000u;
        e[1] = 0;
        e[2] = 0x40;
        e[3] = 0;
        cfg_write(slot, msix_cap, cfg_read(slot, msix_cap) | (0x8000u << 16));
    }
    vdev_driver_ok(&dev);
}

int guest_main(unsigned cpu, const struct boot_info *info)
{
    if (cpu != 0)
        return 0;
    uint64_t mode = rt_cmdline_u64(info, "mode", 0);
    uint64_t mib = rt_cmdline_u64(info, "mib", 8);
    uint64_t passes = rt_cmdline_u64(info, "passes", 2);
    uint64_t qd = rt_cmdline_u64(info, "qd", 8);
    uint64_t kib = rt_cmdline_u64(info, "kib", 64);
    uint64_t bar = rt_cmdline_u64(info, "bar", 0xd0000000u);
    uint64_t rest = rt_cmdline_u64(info, "rest", 0);
    use_indirect = rt_cmdline_u64(info, "indirect", 0);
    use_event = rt_cmdline_u64(info, "event", 0);
    use_msix = rt_cmdline_u64(info, "msix", 0);
    use_intx = !use_msix && rt_cmdline_u64(info, "intx", 0);
    if (qd < 1 || qd > MAXQD || kib < 4 || kib > MAX_BLOCK / 1024 || kib % 4)
        return 3;
    if (vdev_find(0x1042, bar, &dev, "vblk"))
        return 3;
    unsigned slot = dev.slot, msix_cap = dev.msix_cap;
    common = dev.common, isr = dev.isr, devcfg = dev.devcfg;
    vdev_alloc_init((rt_image_end() + (2ull << 20) - 1) & ~((2ull << 20) - 1));
    desc = alloc(16 * QSIZE, 4096);
    avail = alloc(6 + 2 * QSIZE, 4096);
    used16 = alloc(6 + 8 * QSIZE, 4096);
    used32 = (volatile uint32_t *)used16;
    hdrs = alloc(16 * MAXQD, 64);
    status = alloc(MAXQD, 64);
    itables = alloc(sizeof(*itables) * MAXQD, 64);
    data = alloc((uint64_t)MAX_BLOCK * MAXQD, 4096);
    uint64_t capacity = R64(devcfg, 0);
    uint64_t sectors = mib * 2048;
    if (sectors > capacity)
        sectors = capacity;
    start_device(slot, msix_cap, QSIZE);
    rt_printf("vblk: %lu sectors, features negotiated, queue live%s%s%s\n", capacity,
              use_indirect ? ", indirect" : "", use_event ? ", event-idx" : "",
              use_msix ? ", MSI-X" : "");

    uint64_t ram_top =
        info->regions[info->region_count - 1].gpa + info->regions[info->region_count - 1].size;
    if (mode == 2)
        return mode_extras(capacity);
    if (mode == 3) {
        unsigned bad = (unsigned)rt_cmdline_u64(info, "bad", 1);
        mode_bad(bad, ram_top);
        wait_needs_reset();
        start_device(slot, msix_cap, QSIZE);
        sweep(true, 64, 4096, 4, 1);
        sweep(false, 64, 4096, 4, 1);
        rt_printf("vblk: reset and recovered: OK\n");
        return 0;
    }
    uint32_t blk = (uint32_t)kib * 1024;
    sectors -= sectors % (blk / SECTOR);
    if (mode == 4)
        return mode_bench(info, sectors, blk, (unsigned)qd);
    if (mode == 1) {
        uint64_t hold = rt_cmdline_u64(info, "hold", 300);
        uint64_t gap = rt_cmdline_u64(info, "gap", 0);
        uint8_t *buf = alloc(sectors * SECTOR, 4096);
        sweep(true, sectors, blk, (unsigned)qd, 1);
        flush();
        uint64_t tick_ms = info->tsc_khz ? info->tsc_khz : 1000000;
        for (uint64_t round = 1; passes == 0 || round <= passes; round++) {
            fill(buf, 0x5a, sectors * SECTOR); /* the CPU's writes: KVM logs these */
            /* A pause here lets a pre-copy pass take the poisoned pages before the device
             * overwrites them: only the device's own dirty marks send them again. */
            for (uint64_t until = rt_rdtsc() + gap * tick_ms; rt_rdtsc() < until;)
                rt_outl(BOOT_PORT_IDLE, 1000);
            for (uint64_t off = 0; off < sectors * SECTOR; off += blk) {
                submit(0, 0, off / SECTOR, blk, buf + off);
                check_status(reap(), "read", off / SECTOR);
            }
            uint64_t until = rt_rdtsc() + hold * tick_ms;
            do {
                if (verify(buf, 0, 1, (uint32_t)(sectors * SECTOR)))
                    return 1;
                rt_outl(BOOT_PORT_IDLE, 1000);
            } while (rt_rdtsc() < until);
            rt_printf("vblk: round %lu ok\n", round);
        }
        rt_printf("vblk: readhold verified: OK\n");
        return 0;
    }
    for (uint64_t g = 1; passes == 0 || g <= passes; g++) {
        sweep(true, sectors, blk, (unsigned)qd, g);
        flush();
        sweep(false, sectors, blk, (unsigned)qd, g);
        rt_printf("vblk: pass %lu ok (%lu sectors)\n", g, sectors);
        if (g == 1)
            check_msix();
        for (uint64_t ms = 0; ms < rest; ms++)
            rt_outl(BOOT_PORT_IDLE, 1000);
    }
    rt_printf("vblk: verified %lu sectors x %lu passes: OK\n", sectors, passes);
    return 0;
}
