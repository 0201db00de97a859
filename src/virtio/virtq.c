/* The split virtqueue walker (virtq.h). */
#include "virtio/virtq.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define VIRTQ_DESC_SIZE 16u

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

static int virtq_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int virtq_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static uint64_t virtq_avail_bytes(uint16_t size)
{
    return 6 + 2ull * size;
}

static uint64_t virtq_used_bytes(uint16_t size)
{
    return 6 + 8ull * size;
}

int virtq_check(const struct virtq *q, const struct virtq_mem *m, char *err, size_t errlen)
{
    if (q->size == 0 || q->size > VIRTQ_MAX_SIZE || (q->size & (q->size - 1)))
        return virtq_fail(err, errlen, "queue size %u is not a power of two in 1..%u", q->size,
                          VIRTQ_MAX_SIZE);
    if (q->desc % 16 || q->avail % 2 || q->used % 4)
        return virtq_fail(
            err, errlen, "ring addresses desc 0x%llx avail 0x%llx used 0x%llx are misaligned",
            (unsigned long long)q->desc, (unsigned long long)q->avail, (unsigned long long)q->used);
    if (!m->ptr(m->opaque, q->desc, (uint64_t)VIRTQ_DESC_SIZE * q->size))
        return virtq_fail(err, errlen, "descriptor table at 0x%llx (%u entries) is outside RAM",
                          (unsigned long long)q->desc, q->size);
    if (!m->ptr(m->opaque, q->avail, virtq_avail_bytes(q->size)))
        return virtq_fail(err, errlen, "available ring at 0x%llx is outside RAM",
                          (unsigned long long)q->avail);
    if (!m->ptr(m->opaque, q->used, virtq_used_bytes(q->size)))
        return virtq_fail(err, errlen, "used ring at 0x%llx is outside RAM",
                          (unsigned long long)q->used);
    return 0;
}

static uint16_t virtq_load16(const void *p, bool acquire)
{
    return __atomic_load_n((const uint16_t *)p, acquire ? __ATOMIC_ACQUIRE : __ATOMIC_RELAXED);
}

static void virtq_desc_read(const uint8_t *table, unsigned i, struct virtq_desc *d)
{
    /* One copy: the guest may change the entry meanwhile; only the copy is checked and used. */
    memcpy(d, table + (size_t)i * VIRTQ_DESC_SIZE, sizeof(*d));
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

struct virtq_walk {
    const uint8_t *table;
    unsigned table_len;
    bool indirect;
    bool seen_write;
};

static int virtq_add_buf(struct virtq_chain *c, const struct virtq_mem *m, struct virtq_walk *w,
                         const struct virtq_desc *d, unsigned idx, char *err, size_t errlen)
{
    bool write = d->flags & VIRTQ_DESC_F_WRITE;
    const char *where = w->indirect ? "indirect descriptor" : "descriptor";
    if (d->len && !m->ptr(m->opaque, d->addr, d->len))
        return virtq_fail(err, errlen, "%s %u: %u bytes at 0x%llx lie outside guest RAM", where,
                          idx, d->len, (unsigned long long)d->addr);
    if (!write && w->seen_write)
        return virtq_fail(err, errlen, "%s %u: a readable buffer after a writable one", where, idx);
    if (c->count == VIRTQ_CHAIN_MAX)
        return virtq_fail(err, errlen, "chain at head %u has more than %u buffers", c->head,
                          VIRTQ_CHAIN_MAX);
    w->seen_write |= write;
    c->bufs[c->count++] = (struct virtq_buf){.gpa = d->addr, .len = d->len, .write = write};
    if (write)
        c->in_bytes += d->len;
    else
        c->out_bytes += d->len;
    return 0;
}

static int virtq_enter_indirect(const struct virtq *q, const struct virtq_mem *m,
                                struct virtq_walk *w, const struct virtq_desc *d, unsigned idx,
                                char *err, size_t errlen)
{
    if (!q->indirect)
        return virtq_fail(err, errlen,
                          "descriptor %u is indirect; INDIRECT_DESC was not "
                          "negotiated",
                          idx);
    if (w->indirect)
        return virtq_fail(err, errlen, "indirect descriptor %u points at another table", idx);
    if (d->flags & VIRTQ_DESC_F_NEXT)
        return virtq_fail(err, errlen, "descriptor %u is both indirect and chained", idx);
    if (d->len == 0 || d->len % VIRTQ_DESC_SIZE || d->len / VIRTQ_DESC_SIZE > VIRTQ_MAX_SIZE)
        return virtq_fail(err, errlen,
                          "descriptor %u: indirect table of %u bytes (a multiple "
                          "of 16, at most %u entries)",
                          idx, d->len, VIRTQ_MAX_SIZE);
    const uint8_t *t = m->ptr(m->opaque, d->addr, d->len);
    if (!t)
        return virtq_fail(err, errlen,
                          "descriptor %u: indirect table at 0x%llx (%u bytes) is "
                          "outside guest RAM",
                          idx, (unsigned long long)d->addr, d->len);
    *w = (struct virtq_walk){.table = t,
                             .table_len = d->len / VIRTQ_DESC_SIZE,
                             .indirect = true,
                             .seen_write = w->seen_write};
    return 0;
}

static int virtq_walk_chain(const struct virtq *q, const struct virtq_mem *m, struct virtq_chain *c,
                            char *err, size_t errlen)
{
    struct virtq_walk w = {.table = m->ptr(m->opaque, q->desc, (uint64_t)VIRTQ_DESC_SIZE * q->size),
                           .table_len = q->size};
    if (!w.table)
        return virtq_fail(err, errlen, "descriptor table at 0x%llx is outside RAM",
                          (unsigned long long)q->desc);
    unsigned idx = c->head, steps = 0;
    for (;;) {
        /* No chain visits more descriptors than its table holds: one more is a loop. */
        if (++steps > w.table_len)
            return virtq_fail(err, errlen,
                              "%s chain from head %u loops (more than %u "
                              "descriptors)",
                              w.indirect ? "indirect" : "descriptor", c->head, w.table_len);
        struct virtq_desc d;
        virtq_desc_read(w.table, idx, &d);
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            int rc = virtq_enter_indirect(q, m, &w, &d, idx, err, errlen);
            if (rc)
                return rc;
            idx = 0;
            steps = 0;
            continue;
        }
        int rc = virtq_add_buf(c, m, &w, &d, idx, err, errlen);
        if (rc)
            return rc;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        if (d.next >= w.table_len)
            return virtq_fail(err, errlen, "descriptor %u: next %u is outside its table of %u", idx,
                              d.next, w.table_len);
        idx = d.next;
    }
}

int virtq_pop(struct virtq *q, const struct virtq_mem *m, struct virtq_chain *c, char *err,
              size_t errlen)
{
    const uint8_t *avail = m->ptr(m->opaque, q->avail, virtq_avail_bytes(q->size));
    if (!avail)
        return virtq_fail(err, errlen, "available ring at 0x%llx is outside RAM",
                          (unsigned long long)q->avail);
    uint16_t avail_idx = virtq_load16(avail + 2, true);
    uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
    if (pending == 0)
        return 0;
    if (pending > q->size)
        return virtq_fail(err, errlen,
                          "available index %u is %u ahead of the device's %u, more "
                          "than the queue size %u",
                          avail_idx, pending, q->last_avail, q->size);
    c->head = virtq_load16(avail + 4 + 2u * (q->last_avail % q->size), false);
    c->count = 0;
    c->in_bytes = c->out_bytes = 0;
    if (c->head >= q->size)
        return virtq_fail(err, errlen, "available entry %u names head %u, outside the queue of %u",
                          q->last_avail, c->head, q->size);
    int rc = virtq_walk_chain(q, m, c, err, errlen);
    if (rc)
        return rc;
    q->last_avail++;
    if (q->event_idx) { /* avail_event: notify me again when you pass this */
        uint64_t gpa = q->used + 4 + 8ull * q->size;
        uint8_t *p = m->ptr(m->opaque, gpa, 2);
        if (p) {
            __atomic_store_n((uint16_t *)p, q->last_avail, __ATOMIC_RELAXED);
            m->dirty(m->opaque, gpa, 2);
        }
    }
    return 1;
}

int virtq_push(struct virtq *q, const struct virtq_mem *m, uint16_t head, uint32_t written)
{
    uint64_t elem = q->used + 4 + 8ull * (q->used_idx % q->size);
    uint8_t *e = m->ptr(m->opaque, elem, 8);
    uint8_t *idx = m->ptr(m->opaque, q->used + 2, 2);
    if (!e || !idx)
        return -EINVAL;
    uint32_t v[2] = {head, written};
    memcpy(e, v, sizeof(v));
    m->dirty(m->opaque, elem, 8);
    q->used_idx++;
    /* The entry is visible before the index that publishes it. */
    __atomic_store_n((uint16_t *)idx, q->used_idx, __ATOMIC_RELEASE);
    m->dirty(m->opaque, q->used + 2, 2);
    return 0;
}

bool virtq_should_notify(struct virtq *q, const struct virtq_mem *m)
{
    /* The used index must be visible before the driver's suppression fields are read. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    const uint8_t *avail = m->ptr(m->opaque, q->avail, virtq_avail_bytes(q->size));
    if (!avail)
        return false;
    if (!q->event_idx)
        return !(virtq_load16(avail, false) & VIRTQ_AVAIL_F_NO_INTERRUPT);
    uint16_t used_event = virtq_load16(avail + 4 + 2u * q->size, false);
    uint16_t old = q->signalled_used, now = q->used_idx;
    bool valid = q->signalled_valid;
    q->signalled_used = now;
    q->signalled_valid = true;
    return !valid || (uint16_t)(now - used_event - 1) < (uint16_t)(now - old);
}

size_t virtq_chain_copy(const struct virtq_chain *c, const struct virtq_mem *m, bool write,
                        uint64_t off, void *buf, size_t len)
{
    size_t done = 0;
    for (unsigned i = 0; i < c->count && done < len; i++) {
        const struct virtq_buf *b = &c->bufs[i];
        if (b->write != write)
            continue;
        if (off >= b->len) {
            off -= b->len;
            continue;
        }
        size_t n = b->len - off < len - done ? b->len - off : len - done;
        uint8_t *p = m->ptr(m->opaque, b->gpa + off, n);
        if (!p)
            break;
        if (write) {
            memcpy(p, (uint8_t *)buf + done, n);
            m->dirty(m->opaque, b->gpa + off, n);
        } else {
            memcpy((uint8_t *)buf + done, p, n);
        }
        done += n;
        off = 0;
    }
    return done;
}
