/* virtq: the split virtqueue, walked as hostile input.
 *
 * Everything here is pure over a guest-memory accessor, so that the walker runs the same in
 * tern and in its fuzz target. Every address and length the guest gives is checked before use:
 * the rings must lie in RAM, every buffer must lie in RAM, a chain is bounded (a loop is found
 * by counting: no chain is longer than its table), an indirect table lies in RAM, is a whole
 * number of descriptors and not nested, and the index the driver publishes may not run more
 * than the queue size ahead. A violation returns -EINVAL with a one-line reason in err (the
 * caller sets DEVICE_NEEDS_RESET); the walker never reads or writes outside what the accessor
 * hands out.
 */
#ifndef TERN_VIRTQ_H
#define TERN_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VIRTQ_MAX_SIZE 32768u
#define VIRTQ_CHAIN_MAX 1024u /* the most buffers one request may have, indirect included */
#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_DESC_F_INDIRECT 4u
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u
#define VIRTQ_USED_F_NO_NOTIFY 1u

/* Guest RAM as the device sees it. ptr: a host pointer to [gpa, gpa+len) when it lies wholly in
 * RAM, else NULL. dirty: the device wrote [gpa, gpa+len) (for live migration). */
struct virtq_mem {
    void *opaque;
    void *(*ptr)(void *opaque, uint64_t gpa, uint64_t len);
    void (*dirty)(void *opaque, uint64_t gpa, uint64_t len);
};

struct virtq {
    uint16_t size; /* a power of two, 1..VIRTQ_MAX_SIZE */
    bool enabled;
    bool event_idx;             /* VIRTIO_F_RING_EVENT_IDX negotiated */
    bool indirect;              /* VIRTIO_F_RING_INDIRECT_DESC negotiated */
    uint64_t desc, avail, used; /* guest-physical */
    uint16_t last_avail;        /* the next avail entry the device takes */
    uint16_t used_idx;          /* the device's used index */
    uint16_t signalled_used;    /* used_idx when the driver was last notified */
    bool signalled_valid;
};

struct virtq_buf {
    uint64_t gpa;
    uint32_t len;
    bool write; /* device-writable */
};

struct virtq_chain {
    uint16_t head;
    unsigned count;
    uint64_t out_bytes, in_bytes; /* device-readable and device-writable totals */
    struct virtq_buf bufs[VIRTQ_CHAIN_MAX];
};

/* Checks a queue's layout before it is used: size, alignment, every ring in RAM. */
int virtq_check(const struct virtq *q, const struct virtq_mem *m, char *err, size_t errlen);

/* Takes the next available chain: 1 and *c filled, 0 when the ring is empty, -EINVAL with err
 * when the ring or the chain is malformed. A chain's readable buffers must all come before its
 * writable ones. */
int virtq_pop(struct virtq *q, const struct virtq_mem *m, struct virtq_chain *c, char *err,
              size_t errlen);

/* Returns head to the driver with written bytes, and publishes the used index. Marks the used
 * entry and index dirty. */
int virtq_push(struct virtq *q, const struct virtq_mem *m, uint16_t head, uint32_t written);

/* Whether the driver wants an interrupt for what was pushed since the last one (EVENT_IDX's
 * used_event, or the avail ring's NO_INTERRUPT flag). */
bool virtq_should_notify(struct virtq *q, const struct virtq_mem *m);

/* Copies len bytes at offset off of the chain's readable (write false) or writable buffers
 * from or into buf; the number of bytes copied. */
size_t virtq_chain_copy(const struct virtq_chain *c, const struct virtq_mem *m, bool write,
                        uint64_t off, void *buf, size_t len);

#endif
