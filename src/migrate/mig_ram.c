/* Guest RAM in the stream: the capture's passes and the records' decoding. */
#include "migrate/mig_ram.h"

#include "err/err.h"
#include "memory/mem.h"
#include "migrate/mig_capture.h"
#include "migrate/mig_restore.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *q = (const uint64_t *)p;
    for (unsigned i = 0; i < MEM_PAGE_SIZE / 8; i++)
        if (q[i])
            return false;
    return true;
}

static int mig_send_pages(struct mig_writer *w, uint64_t gpa, const uint8_t *host, uint32_t pages,
                          const struct mig_capture_options *opt, uint8_t *zbuf, size_t zcap,
                          uint8_t *copy, struct mig_stats *st)
{
    struct mig_ram_header h = {.gpa = gpa, .pages = pages};
    size_t len = (size_t)pages * MEM_PAGE_SIZE;
    if (opt->compress_level >= 0) {
        uLongf zlen = zcap;
        if (compress2(zbuf, &zlen, host, len, opt->compress_level) == Z_OK && zlen < len) {
            struct iovec iov[2] = {{&h, sizeof(h)}, {zbuf, zlen}};
            st->zlib_pages += pages;
            st->zlib_bytes += zlen;
            return mig_write_record_v(w, MIG_REC_RAM_ZLIB, 0, iov, 2);
        }
    }
    if (copy) {
        /* The guest runs on: the CRC must cover exactly the bytes that go out. */
        memcpy(copy, host, len);
        host = copy;
    }
    struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)host, len}};
    st->raw_pages += pages;
    st->raw_bytes += len;
    return mig_write_record_v(w, MIG_REC_RAM_RAW, 0, iov, 2);
}

static bool mig_zero_run(const uint8_t *base, uint64_t npages, uint64_t i, uint64_t *j)
{
    if (!page_is_zero(base + i * MEM_PAGE_SIZE))
        return false;
    uint64_t k = i + 1;
    while (k < npages && page_is_zero(base + k * MEM_PAGE_SIZE))
        k++;
    *j = k;
    return true;
}

/* Sends pages [i, j) of one region: runs of zero pages as one record each, others in records of
 * up to MIG_RAM_MAX_PAGES_PER_RECORD pages. */
static int mig_send_range(struct mig_capture *c, const struct mem_region *reg, uint64_t i,
                          uint64_t end)
{
    const uint8_t *base = vm_mem(c->vm)->host + reg->offset;
    int rc = 0;
    while (i < end && !rc) {
        uint64_t j;
        if (mig_zero_run(base, end, i, &j)) {
            /* A run of zero pages is one record, however long. */
            for (uint64_t k = i; k < j && !rc; k += UINT32_MAX) {
                uint64_t n = j - k < UINT32_MAX ? j - k : UINT32_MAX;
                struct mig_ram_header h = {.gpa = reg->gpa + k * MEM_PAGE_SIZE,
                                           .pages = (uint32_t)n};
                rc = mig_write_record(c->w, MIG_REC_RAM_ZERO, 0, &h, sizeof(h));
            }
            c->stats.zero_pages += j - i;
        } else {
            j = i + 1;
            while (j < end && j - i < MIG_RAM_MAX_PAGES_PER_RECORD &&
                   !page_is_zero(base + j * MEM_PAGE_SIZE))
                j++;
            rc = mig_send_pages(c->w, reg->gpa + i * MEM_PAGE_SIZE, base + i * MEM_PAGE_SIZE,
                                (uint32_t)(j - i), &c->opt, c->zbuf, c->zcap, c->copy, &c->stats);
        }
        c->pages += j - i;
        i = j;
    }
    return rc;
}

int mig_capture_ram_all(struct mig_capture *c)
{
    const struct mem *mem = vm_mem(c->vm);
    int rc = 0;
    for (unsigned r = 0; r < mem->region_count && !rc; r++)
        rc = mig_send_range(c, &mem->regions[r], 0, mem->regions[r].size / MEM_PAGE_SIZE);
    return rc;
}

/* Sends the marked pages among [first, limit) (host page indices), clearing their marks;
 * contiguous marked pages within one region go out as one range. */
static int mig_send_dirty_in(struct mig_capture *c, uint64_t first, uint64_t limit)
{
    struct mem *mem = vm_mem(c->vm);
    uint64_t page = first;
    int rc = 0;
    while (!rc && mem_dirty_next_below(mem, &page, limit)) {
        const struct mem_region *reg = &mem->regions[0];
        for (unsigned r = 1; r < mem->region_count; r++)
            if (page * MEM_PAGE_SIZE >= mem->regions[r].offset)
                reg = &mem->regions[r];
        uint64_t base = reg->offset / MEM_PAGE_SIZE;
        uint64_t end = base + reg->size / MEM_PAGE_SIZE;
        if (end > limit)
            end = limit;
        uint64_t last = page + 1;
        while (last < end && last - page < MIG_RAM_MAX_PAGES_PER_RECORD &&
               mem_dirty_take(mem, last))
            last++;
        rc = mig_send_range(c, reg, page - base, last - base);
        page = last;
    }
    return rc;
}

int mig_capture_ram_dirty(struct mig_capture *c)
{
    uint64_t pages = vm_mem(c->vm)->size / MEM_PAGE_SIZE;
    int rc = 0;
    if (c->parts <= 1) {
        rc = mig_send_dirty_in(c, 0, pages);
    } else {
        /* This part's share: the blocks of MIG_CAPTURE_BLOCK_PAGES pages whose number plus the
         * pass is part modulo parts. */
        uint64_t first = (c->part + c->parts - c->pass % c->parts) % c->parts;
        for (uint64_t b = first * MIG_CAPTURE_BLOCK_PAGES; b < pages && !rc;
             b += (uint64_t)c->parts * MIG_CAPTURE_BLOCK_PAGES)
            rc = mig_send_dirty_in(c, b, b + MIG_CAPTURE_BLOCK_PAGES);
    }
    return rc;
}

int mig_ram_decode(const struct mig_record *rec, uint8_t *dst)
{
    struct mig_ram_header h;
    memcpy(&h, rec->payload, sizeof(h));
    uint64_t len = (uint64_t)h.pages * MEM_PAGE_SIZE;
    const uint8_t *data = rec->payload + sizeof(h);
    if (rec->type == MIG_REC_RAM_ZERO) {
        mem_zero(dst, len);
    } else if (rec->type == MIG_REC_RAM_RAW) {
        if (rec->placed != dst)
            memcpy(dst, rec->placed ? rec->placed : data, len);
    } else {
        uLongf out = len;
        int z = uncompress(dst, &out, data, rec->length - sizeof(h));
        if (z != Z_OK || out != len) {
            char what[96];
            mig_record_describe(rec, what, sizeof(what));
            return err_set(-EPROTO, "%s: zlib data does not decode to %u pages (%s)", what, h.pages,
                           z == Z_OK ? "short" : zError(z));
        }
    }
    return 0;
}

int mig_ram_check(const struct mig_record *rec, const char *what)
{
    struct mig_ram_header h;
    memcpy(&h, rec->payload, sizeof(h));
    if (h.gpa % MEM_PAGE_SIZE)
        return err_set(-EPROTO, "%s: gpa 0x%llx is not page-aligned", what,
                       (unsigned long long)h.gpa);
    if (h.pages == 0)
        return err_set(-EPROTO, "%s: zero pages", what);
    if (rec->type != MIG_REC_RAM_ZERO && h.pages > MIG_RAM_MAX_PAGES_PER_RECORD)
        return err_set(-EPROTO, "%s: %u pages exceeds %u per record", what, h.pages,
                       MIG_RAM_MAX_PAGES_PER_RECORD);
    if (rec->type == MIG_REC_RAM_RAW &&
        rec->length != sizeof(h) + (uint64_t)h.pages * MEM_PAGE_SIZE)
        return err_set(-EPROTO, "%s: length %u does not hold %u pages", what, rec->length, h.pages);
    if (h.gpa + (uint64_t)h.pages * MEM_PAGE_SIZE < h.gpa)
        return err_set(-EPROTO, "%s: page range wraps around", what);
    return 0;
}

uint8_t *mig_ram_place(void *vm, const struct mig_ram_header *h)
{
    return mem_ptr(vm_mem(vm), h->gpa, (uint64_t)h->pages * MEM_PAGE_SIZE);
}

int mig_ram_load(struct mig_load *l, const struct mig_record_type *t, const struct mig_record *rec)
{
    (void)t;
    struct mig_ram_header h;
    memcpy(&h, rec->payload, sizeof(h));
    uint8_t *dst = mem_ptr(vm_mem(l->vm), h.gpa, (uint64_t)h.pages * MEM_PAGE_SIZE);
    if (!dst) {
        char what[96];
        mig_record_describe(rec, what, sizeof(what));
        return err_set(-EPROTO, "%s: pages [0x%llx, +%u) lie outside guest RAM", what,
                       (unsigned long long)h.gpa, h.pages);
    }
    l->info->ram_records++;
    return mig_ram_decode(rec, dst);
}
