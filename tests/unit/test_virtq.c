/* The split virtqueue walker on rings laid out in a fake guest RAM exactly as a driver writes
 * them (virtio 1.2, 2.7): descriptor table, available and used rings, indirect tables. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "devices/dev_disk.h"
#include "devices/dev_net.h"
#include "err/err.h"
#include "pci/pci.h"
#include "virtio/virtq.h"

#define RAM_BASE 0x100000ull
#define RAM_SIZE 0x40000ull
static uint8_t ram[RAM_SIZE];
static uint64_t dirtied;

static void *ptr(void *opaque, uint64_t gpa, uint64_t len)
{
    (void)opaque;
    if (gpa < RAM_BASE || len > RAM_SIZE || gpa - RAM_BASE > RAM_SIZE - len)
        return NULL;
    return ram + (gpa - RAM_BASE);
}

static void dirty(void *opaque, uint64_t gpa, uint64_t len)
{
    (void)opaque;
    (void)gpa;
    dirtied += len;
}

static const struct virtq_mem mem = {.ptr = ptr, .dirty = dirty};

#define DESC (RAM_BASE + 0x0000)
#define AVAIL (RAM_BASE + 0x1000)
#define USED (RAM_BASE + 0x2000)
#define BUFS (RAM_BASE + 0x10000)

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

static struct virtq q;

static void setup(void)
{
    memset(ram, 0, sizeof(ram));
    dirtied = 0;
    q = (struct virtq){
        .size = 16, .enabled = true, .desc = DESC, .avail = AVAIL, .used = USED, .indirect = true};
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    struct desc d = {addr, len, flags, next};
    memcpy(ptr(NULL, table + 16 * i, 16), &d, 16);
}

static void offer(uint16_t head)
{
    uint16_t *a = ptr(NULL, AVAIL, 4 + 2 * 16);
    a[2 + a[1] % 16] = head;
    a[1]++;
}

static int pop(struct virtq_chain *c, char *err)
{
    return virtq_pop(&q, &mem, c, err, 200);
}

Test(virtq, a_block_request_chain_is_walked_in_order, .init = setup)
{
    static struct virtq_chain c;
    char err[200];
    cr_assert_eq(virtq_check(&q, &mem, err, sizeof(err)), 0, "%s", err);
    put_desc(DESC, 0, BUFS, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc(DESC, 1, BUFS + 0x1000, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    put_desc(DESC, 2, BUFS + 0x3000, 1, VIRTQ_DESC_F_WRITE, 0);
    cr_expect_eq(pop(&c, err), 0, "an empty ring");
    offer(0);
    cr_assert_eq(pop(&c, err), 1, "%s", err);
    cr_expect_eq(c.head, 0);
    cr_expect_eq(c.count, 3);
    cr_expect_eq(c.out_bytes, 16);
    cr_expect_eq(c.in_bytes, 4097);
    cr_expect(!c.bufs[0].write && c.bufs[1].write && c.bufs[2].write);
    cr_expect_eq(pop(&c, err), 0, "taken once");
    cr_expect_eq(virtq_push(&q, &mem, 0, 4097), 0);
    uint32_t *used = ptr(NULL, USED, 4 + 8 * 16);
    cr_expect_eq(used[0] >> 16, 1, "used index published");
    cr_expect(used[1] == 0 && used[2] == 4097);
    cr_expect_geq(dirtied, 10, "the used entry and index are marked dirty");
    cr_expect(virtq_should_notify(&q, &mem), "no NO_INTERRUPT flag");
    uint8_t out[20] = {0};
    memcpy(ptr(NULL, BUFS, 16), "0123456789abcdef", 16);
    cr_expect_eq(virtq_chain_copy(&c, &mem, false, 4, out, 8), 8);
    cr_expect(!memcmp(out, "456789ab", 8));
}

Test(virtq, indirect_tables_and_event_idx, .init = setup)
{
    static struct virtq_chain c;
    char err[200];
    q.event_idx = true;
    uint64_t table = BUFS + 0x8000;
    put_desc(table, 0, BUFS, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc(table, 1, BUFS + 0x100, 512, VIRTQ_DESC_F_NEXT, 2);
    put_desc(table, 2, BUFS + 0x400, 1, VIRTQ_DESC_F_WRITE, 0);
    put_desc(DESC, 5, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
    offer(5);
    cr_assert_eq(pop(&c, err), 1, "%s", err);
    cr_expect_eq(c.count, 3);
    cr_expect_eq(c.out_bytes, 528);
    uint16_t *avail_event = ptr(NULL, USED + 4 + 8 * 16, 2);
    cr_expect_eq(*avail_event, 1, "avail_event follows the device");
    uint16_t *used_event = ptr(NULL, AVAIL + 4 + 2 * 16, 2);
    *used_event = 5; /* the driver wants an interrupt only past entry 5 */
    virtq_push(&q, &mem, 5, 1);
    cr_expect(virtq_should_notify(&q, &mem), "the first one always notifies");
    virtq_push(&q, &mem, 5, 1);
    cr_expect(!virtq_should_notify(&q, &mem), "used_event 5 not reached");
    for (int i = 0; i < 4; i++)
        virtq_push(&q, &mem, 5, 1);
    cr_expect(virtq_should_notify(&q, &mem), "used_event 5 passed");
}

struct bad_case {
    const char *what;
    const char *reason;
};

static void expect_bad(const char *reason)
{
    static struct virtq_chain c;
    char err[200] = "";
    cr_expect_eq(pop(&c, err), -EINVAL, "accepted; expected '%s'", reason);
    cr_expect(strstr(err, reason), "'%s' where '%s' was expected", err, reason);
}

Test(virtq, a_buffer_outside_ram_is_refused, .init = setup)
{
    put_desc(DESC, 0, RAM_BASE + RAM_SIZE - 8, 16, 0, 0);
    offer(0);
    expect_bad("lie outside guest RAM");
}

Test(virtq, a_4_gib_length_is_refused, .init = setup)
{
    put_desc(DESC, 0, BUFS, 0xffffffffu, VIRTQ_DESC_F_WRITE, 0);
    offer(0);
    expect_bad("4294967295 bytes at");
}

Test(virtq, a_loop_is_found, .init = setup)
{
    put_desc(DESC, 0, BUFS, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc(DESC, 1, BUFS, 16, VIRTQ_DESC_F_NEXT, 0);
    offer(0);
    expect_bad("loops (more than 16 descriptors)");
}

Test(virtq, a_loop_inside_an_indirect_table_is_found, .init = setup)
{
    uint64_t table = BUFS + 0x8000;
    put_desc(table, 0, BUFS, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc(table, 1, BUFS, 16, VIRTQ_DESC_F_NEXT, 0);
    put_desc(DESC, 0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_bad("indirect chain from head 0 loops");
}

Test(virtq, indirect_rules, .init = setup)
{
    uint64_t table = BUFS + 0x8000;
    put_desc(table, 0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc(DESC, 0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_bad("points at another table");
    setup();
    put_desc(DESC, 0, BUFS, 24, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_bad("indirect table of 24 bytes");
    setup();
    put_desc(DESC, 0, BUFS, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
    offer(0);
    expect_bad("both indirect and chained");
    setup();
    q.indirect = false;
    put_desc(DESC, 0, BUFS, 32, VIRTQ_DESC_F_INDIRECT, 0);
    offer(0);
    expect_bad("INDIRECT_DESC was not negotiated");
}

Test(virtq, ring_rules, .init = setup)
{
    put_desc(DESC, 0, BUFS, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc(DESC, 1, BUFS, 16, 0, 0);
    offer(0);
    expect_bad("a readable buffer after a writable one");
    setup();
    put_desc(DESC, 0, BUFS, 16, VIRTQ_DESC_F_NEXT, 40);
    offer(0);
    expect_bad("next 40 is outside its table of 16");
    setup();
    offer(17);
    expect_bad("names head 17, outside the queue of 16");
    setup();
    uint16_t *a = ptr(NULL, AVAIL, 4);
    a[1] = 40;
    expect_bad("available index 40 is 40 ahead");
}

Test(virtq, layouts_are_checked_before_use, .init = setup)
{
    char err[200];
    q.size = 100;
    cr_expect_eq(virtq_check(&q, &mem, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "queue size 100 is not a power of two"), "%s", err);
    q.size = 16;
    q.used = RAM_BASE + RAM_SIZE - 8;
    cr_expect_eq(virtq_check(&q, &mem, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "used ring at"), "%s", err);
    q.used = USED + 2;
    cr_expect_eq(virtq_check(&q, &mem, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "misaligned"), "%s", err);
}

/* ---- --disk and the PCI config mask -------------------------------------------------------- */

Test(disk_flag, values_parse_and_bad_ones_name_the_flag)
{
    struct dev_disk d;
    cr_assert_eq(dev_disk_parse("path=/a.img,readonly=on,serial=S1,cache=none", &d), 0);
    cr_expect(!strcmp(d.path, "/a.img") && d.readonly && d.direct && !strcmp(d.serial, "S1"));
    cr_assert_eq(dev_disk_parse("/b.img", &d), 0);
    cr_expect(!strcmp(d.path, "/b.img") && !d.readonly && !d.direct);
    cr_expect_lt(dev_disk_parse("path=", &d), 0);
    cr_expect(strstr(err_msg(), "--disk: path is empty"), "%s", err_msg());
    cr_expect_lt(dev_disk_parse("path=/x,serial=a b", &d), 0);
    cr_expect(strstr(err_msg(), "printable ASCII"), "%s", err_msg());
    cr_expect_lt(dev_disk_parse("path=/x,,", &d), 0);
    cr_expect(strstr(err_msg(), "is not key=value"), "%s", err_msg());
}

Test(net_flag, values_parse_and_bad_ones_name_the_flag)
{
    struct dev_net n;
    cr_assert_eq(dev_net_parse("tap=tap0,mac=52:54:00:AB:cd:01", &n), 0, "%s", err_msg());
    cr_expect(!strcmp(n.ifname, "tap0") && n.fd == -1 && n.mac_given);
    cr_expect(n.mac[0] == 0x52 && n.mac[3] == 0xab && n.mac[5] == 1);
    cr_assert_eq(dev_net_parse("fd=7", &n), 0);
    cr_expect(n.fd == 7 && !n.mac_given);
    uint8_t mac[6];
    cr_expect_lt(dev_net_parse_mac("01:00:5e:00:00:01", mac), 0, "a group MAC");
    cr_expect_lt(dev_net_parse_mac("52:54:00:00:00", mac), 0);
    cr_expect_lt(dev_net_parse_mac("52-54-00-00-00-01", mac), 0);
    cr_expect_lt(dev_net_parse("tap=a-name-of-more-than-15", &n), 0);
    cr_expect(strstr(err_msg(), "1 to 15 characters"), "%s", err_msg());
    cr_expect_lt(dev_net_parse("fd=-1", &n), 0);
    cr_expect_lt(dev_net_parse("tap=t0,fd=3", &n), 0);
    cr_expect(strstr(err_msg(), "give tap= or fd=, once"), "%s", err_msg());
}

Test(pci, config_writes_take_only_the_writable_bits)
{
    uint8_t cfg[PCI_CFG_SIZE] = {0}, wmask[PCI_CFG_SIZE] = {0};
    cfg[0] = 0xf4, cfg[1] = 0x1a;                       /* vendor: read-only */
    wmask[PCI_COMMAND] = 0x07;                          /* I/O, memory, master */
    wmask[PCI_BAR0] = 0x00, wmask[PCI_BAR0 + 1] = 0x80; /* a 32 KiB BAR: bits 15 and up */
    wmask[PCI_BAR0 + 2] = 0xff, wmask[PCI_BAR0 + 3] = 0xff;
    pci_config_merge(cfg, wmask, 0, 4, 0xffffffff);
    cr_expect(cfg[0] == 0xf4 && cfg[1] == 0x1a);
    pci_config_merge(cfg, wmask, PCI_COMMAND, 2, 0xffff);
    cr_expect_eq(cfg[PCI_COMMAND], 0x07);
    pci_config_merge(cfg, wmask, PCI_BAR0, 4, 0xffffffff); /* sizing */
    cr_expect(cfg[PCI_BAR0] == 0 && cfg[PCI_BAR0 + 1] == 0x80 && cfg[PCI_BAR0 + 3] == 0xff);
    pci_config_merge(cfg, wmask, PCI_CFG_SIZE - 2, 4, 0xffffffff); /* at the end: no overrun */
    cr_expect_eq(pci_mmio64_base(256ull << 20), 4ull << 30);
    cr_expect_eq(pci_mmio64_base((5ull << 30) + 1), 6ull << 30);
}
