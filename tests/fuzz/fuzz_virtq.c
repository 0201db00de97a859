/* libFuzzer target: the virtqueue walker over a guest RAM the input fills.
 *
 * Input: 8 bytes of queue setup (u16 size, u8 flags: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC,
 * u8 0, u16 last_avail, u16 used_idx), then guest RAM (64 KiB at 0x10000, the input padded with
 * zeros): the descriptor table at 0x10000, the available ring at 0x11000, the used ring at
 * 0x12000. Every chain the walker returns is copied from and into, pushed and notified, as the
 * device does; ASan checks that nothing outside that RAM is touched. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "virtio/virtq.h"

#define RAM_BASE 0x10000ull
#define RAM_SIZE 0x10000ull

static uint8_t *fz_ram;

static void *fz_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
    (void)opaque;
    if (gpa < RAM_BASE || len > RAM_SIZE || gpa - RAM_BASE > RAM_SIZE - len)
        return NULL;
    return fz_ram + (gpa - RAM_BASE);
}

static void fz_dirty(void *opaque, uint64_t gpa, uint64_t len)
{
    (void)opaque;
    (void)gpa;
    (void)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t ram[RAM_SIZE];
    static struct virtq_chain chain;
    if (size < 8)
        return 0;
    fz_ram = ram;
    memset(ram, 0, sizeof(ram));
    memcpy(ram, data + 8, size - 8 < RAM_SIZE ? size - 8 : RAM_SIZE);
    uint16_t qsize, last_avail, used_idx;
    memcpy(&qsize, data, 2);
    memcpy(&last_avail, data + 4, 2);
    memcpy(&used_idx, data + 6, 2);
    struct virtq q = {.size = qsize,
                      .enabled = true,
                      .event_idx = data[2] & 1,
                      .indirect = data[2] & 2,
                      .desc = RAM_BASE,
                      .avail = RAM_BASE + 0x1000,
                      .used = RAM_BASE + 0x2000,
                      .last_avail = last_avail,
                      .used_idx = used_idx};
    struct virtq_mem m = {.ptr = fz_ptr, .dirty = fz_dirty};
    char err[200];
    if (virtq_check(&q, &m, err, sizeof(err)))
        return 0;
    for (unsigned n = 0; n < 64; n++) {
        if (virtq_pop(&q, &m, &chain, err, sizeof(err)) != 1)
            break;
        uint8_t buf[64];
        virtq_chain_copy(&chain, &m, false, 0, buf, sizeof(buf));
        virtq_chain_copy(&chain, &m, true, chain.in_bytes ? chain.in_bytes - 1 : 0, buf, 1);
        virtq_push(&q, &m, chain.head, (uint32_t)chain.in_bytes);
        virtq_should_notify(&q, &m);
    }
    return 0;
}
