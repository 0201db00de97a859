#include "migrate/mig_stream.h"

#include "err/err.h"
#include "le/le.h"
#include "vm/vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <isa-l/crc.h>

/* zlib's CRC-32 (the reflected IEEE polynomial, as gzip's): ISA-L computes the same value with
 * carry-less multiplication, several times faster than zlib, so that checking every byte of RAM
 * is not what limits a migration. */
static uint32_t mig_crc(uint32_t crc, const void *buf, size_t len)
{
    return crc32_gzip_refl(crc, buf, len);
}

void mig_record_describe(const struct mig_record *rec, char *buf, size_t size)
{
    const char *name = mig_record_name(rec->type);
    char type[32];
    if (name)
        snprintf(type, sizeof(type), "%s", name);
    else
        snprintf(type, sizeof(type), "type 0x%04x", rec->type);
    if (mig_record_is_per_vcpu(rec->type))
        snprintf(buf, size, "record %s (vCPU %u) at offset %llu", type, rec->index,
                 (unsigned long long)rec->offset);
    else if (rec->type == MIG_REC_IRQCHIP)
        snprintf(buf, size, "record %s (chip %u) at offset %llu", type, rec->index,
                 (unsigned long long)rec->offset);
    else
        snprintf(buf, size, "record %s at offset %llu", type, (unsigned long long)rec->offset);
}

static int mig_length_error(const struct mig_record *rec, const char *why)
{
    char what[96];
    mig_record_describe(rec, what, sizeof(what));
    return err_set(-EPROTO, "%s: length %u %s", what, rec->length, why);
}

static int mig_check_length(const struct mig_record *rec, const struct mig_record_type *t)
{
    char why[64];
    if (t->min_len == t->max_len && rec->length != t->min_len) {
        snprintf(why, sizeof(why), "is not the expected %u", t->min_len);
        return mig_length_error(rec, why);
    }
    if (rec->length < t->min_len || rec->length > t->max_len) {
        snprintf(why, sizeof(why), "is outside %u..%u", t->min_len, t->max_len);
        return mig_length_error(rec, why);
    }
    return 0;
}

int mig_record_check(const struct mig_record *rec)
{
    const struct mig_record_type *t = mig_record_find(rec->type);
    if (!t)
        return 0;
    int rc = mig_check_length(rec, t);
    if (rc)
        return rc;
    char what[96];
    mig_record_describe(rec, what, sizeof(what));
    if (t->check && (rc = t->check(rec, what)))
        return rc;
    if (t->scope == MIG_SCOPE_VCPU && rec->index >= VM_MAX_CPUS)
        return err_set(-EPROTO, "%s: vCPU index %u is out of range", what, rec->index);
    return 0;
}

void mig_writer_init(struct mig_writer *w, mig_sink_fn sink, void *opaque)
{
    memset(w, 0, sizeof(*w));
    w->sink = sink;
    w->opaque = opaque;
    w->minor = MIG_VERSION_MINOR;
}

static int mig_emit(struct mig_writer *w, const void *buf, size_t len)
{
    int rc = w->sink(w->opaque, buf, len);
    if (!rc)
        w->offset += len;
    return rc;
}

int mig_write_header(struct mig_writer *w)
{
    uint8_t h[MIG_HEADER_SIZE] = {0};
    memcpy(h, MIG_MAGIC, 8);
    le_put16(h + 8, MIG_VERSION_MAJOR);
    le_put16(h + 10, w->minor);
    return mig_emit(w, h, sizeof(h));
}

int mig_write_record_v(struct mig_writer *w, uint16_t type, uint32_t index, const struct iovec *iov,
                       int iovcnt)
{
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len > MIG_MAX_RECORD)
        return err_set(-E2BIG, "record %s of %llu bytes exceeds the stream limit",
                       mig_record_name(type), (unsigned long long)len);
    const struct mig_record_type *t = mig_record_find(type);
    if (t && t->since > w->minor)
        return err_set(-ENOTSUP, "record %s is new in stream format %u.%u; this stream is %u.%u",
                       t->name, MIG_VERSION_MAJOR, t->since, MIG_VERSION_MAJOR, w->minor);
    uint8_t h[MIG_RECORD_HEADER_SIZE] = {0};
    le_put16(h, type);
    le_put16(h + 2, mig_record_default_flags(type));
    le_put32(h + 4, index);
    le_put32(h + 8, (uint32_t)len);
    uint32_t crc = mig_crc(0, h, 12);
    for (int i = 0; i < iovcnt; i++)
        crc = mig_crc(crc, iov[i].iov_base, iov[i].iov_len);
    le_put32(h + 12, (uint32_t)crc);
    int rc = mig_emit(w, h, sizeof(h));
    for (int i = 0; i < iovcnt && !rc; i++)
        rc = mig_emit(w, iov[i].iov_base, iov[i].iov_len);
    if (!rc)
        w->records++;
    return rc;
}

int mig_write_record(struct mig_writer *w, uint16_t type, uint32_t index, const void *payload,
                     size_t len)
{
    struct iovec iov = {.iov_base = (void *)payload, .iov_len = len};
    return mig_write_record_v(w, type, index, &iov, 1);
}

void mig_reader_init(struct mig_reader *r, mig_source_fn source, void *opaque)
{
    memset(r, 0, sizeof(*r));
    r->source = source;
    r->opaque = opaque;
}

void mig_reader_free(struct mig_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

static int mig_pull(struct mig_reader *r, void *buf, size_t len)
{
    int rc = r->source(r->opaque, buf, len);
    if (!rc)
        r->offset += len;
    return rc;
}

int mig_read_header(struct mig_reader *r)
{
    uint8_t h[MIG_HEADER_SIZE];
    int rc = mig_pull(r, h, sizeof(h));
    if (rc == -ENODATA)
        return err_set(-EPROTO, "stream header: truncated (fewer than %u bytes)", MIG_HEADER_SIZE);
    if (rc)
        return err_context(rc, "stream header");
    if (memcmp(h, MIG_MAGIC, 8))
        return err_set(-EPROTO, "stream header: bad magic (not a tern state stream)");
    r->major = le_get16(h + 8);
    r->minor = le_get16(h + 10);
    if (r->major != MIG_VERSION_MAJOR)
        return err_set(-EPROTO,
                       "stream header: format version %u.%u; this tern reads major version %u",
                       r->major, r->minor, MIG_VERSION_MAJOR);
    return 0;
}

static int mig_read_payload(struct mig_reader *r, struct mig_record *rec, uint32_t *crc)
{
    int rc = rec->length ? mig_pull(r, r->buf, rec->length) : 0;
    if (!rc)
        *crc = mig_crc(*crc, r->buf, rec->length);
    return rc;
}

/* RAM_RAW: the RAM header into the buffer, checked by the row's rules, then the pages where
 * the reader's place() puts them. */
static int mig_read_placed(struct mig_reader *r, struct mig_record *rec, uint32_t *crc)
{
    const size_t hsize = sizeof(struct mig_ram_header);
    int rc = mig_pull(r, r->buf, hsize);
    if (rc)
        return rc;
    if ((rc = mig_record_check(rec)))
        return rc;
    struct mig_ram_header h;
    memcpy(&h, r->buf, hsize);
    uint8_t *dst = r->place(r->place_opaque, &h);
    uint8_t *to = dst ? dst : r->buf + hsize;
    if ((rc = mig_pull(r, to, rec->length - hsize)))
        return rc;
    *crc = mig_crc(mig_crc(*crc, r->buf, hsize), to, rec->length - hsize);
    rec->placed = dst;
    return 0;
}

int mig_read_record(struct mig_reader *r, struct mig_record *rec)
{
    for (;;) {
        uint8_t h[MIG_RECORD_HEADER_SIZE];
        memset(rec, 0, sizeof(*rec));
        rec->offset = r->offset;
        int rc = mig_pull(r, h, sizeof(h));
        if (rc == -ENODATA)
            return err_set(-EPROTO, "stream truncated at offset %llu: expected a record header",
                           (unsigned long long)rec->offset);
        if (rc)
            return err_context(rc, "record header at offset %llu", (unsigned long long)rec->offset);
        rec->type = le_get16(h);
        rec->flags = le_get16(h + 2);
        rec->index = le_get32(h + 4);
        rec->length = le_get32(h + 8);
        rec->crc = le_get32(h + 12);
        char what[96];
        mig_record_describe(rec, what, sizeof(what));

        const struct mig_record_type *t = mig_record_find(rec->type);
        if (!t && (rec->flags & MIG_REC_MANDATORY))
            return err_set(-EPROTO, "%s: unknown mandatory record; this tern cannot load it", what);
        if (rec->length > MIG_MAX_RECORD)
            return err_set(-EPROTO, "%s: length %u exceeds the %u-byte record limit", what,
                           rec->length, MIG_MAX_RECORD);
        if (t && (rc = mig_check_length(rec, t)) != 0)
            return rc;
        if (rec->length > r->buf_size) {
            uint8_t *nb = realloc(r->buf, rec->length);
            if (!nb)
                return err_set(-ENOMEM, "%s: out of memory", what);
            r->buf = nb;
            r->buf_size = rec->length;
        }
        rec->payload = r->buf;
        uint32_t crc = mig_crc(0, h, 12);
        /* A placed record's rules were checked before its pages landed. */
        bool placed = r->place && rec->type == MIG_REC_RAM_RAW;
        rc = placed ? mig_read_placed(r, rec, &crc) : mig_read_payload(r, rec, &crc);
        if (rc == -ENODATA)
            return err_set(-EPROTO, "%s: truncated payload (%u bytes expected)", what, rec->length);
        if (rc)
            return err_context(rc, "%s", what);
        if ((uint32_t)crc != rec->crc)
            return err_set(-EPROTO, "%s: CRC mismatch (stored 0x%08x, computed 0x%08x)", what,
                           rec->crc, (uint32_t)crc);
        if (!t) {
            /* An unknown optional record: skipped, but counted as the writer counted it. */
            r->skipped++;
            r->records++;
            continue;
        }
        if (!placed && (rc = mig_record_check(rec)))
            return rc;
        if (rec->type != MIG_REC_END)
            r->records++;
        return 0;
    }
}

int mig_mem_source(void *opaque, void *buf, size_t len)
{
    struct mig_mem_source *m = opaque;
    if (m->len - m->pos < len)
        return -ENODATA;
    memcpy(buf, m->data + m->pos, len);
    m->pos += len;
    return 0;
}

int mig_fd_sink(void *opaque, const void *buf, size_t len)
{
    int fd = *(int *)opaque;
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return err_sys(-errno, "write failed");
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int mig_fd_source(void *opaque, void *buf, size_t len)
{
    int fd = *(int *)opaque;
    uint8_t *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return err_sys(-errno, "read failed");
        if (n == 0)
            return -ENODATA;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
