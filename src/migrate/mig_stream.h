/* mig_stream: tern's state stream — the format of snapshots and of live migration.
 *
 * A 16-byte header (magic, major, minor, flags) is followed by records. Each record is a 20-byte
 * little-endian header {type u16, flags u16, index u32, length u32, crc u32, reserved u32} and
 * `length` payload bytes; crc is zlib's CRC32 over the header's first 12 bytes and the payload.
 * A record whose type the reader does not know is skipped when optional and an error naming it
 * when mandatory (MIG_REC_MANDATORY). Every length is checked against the limits of the type's
 * row (mig_records.h) before anything is allocated. docs/stream-format.md describes every record
 * and the versioning.
 */
#ifndef TERN_MIG_STREAM_H
#define TERN_MIG_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "memory/mem.h"
#include "migrate/mig_records.h"

#define MIG_MAGIC "TERNSTRM"
#define MIG_VERSION_MAJOR 1u
#define MIG_VERSION_MINOR 4u
#define MIG_HEADER_SIZE 16u
#define MIG_RECORD_HEADER_SIZE 20u
#define MIG_REC_MANDATORY 0x0001u
#define MIG_MAX_RECORD (16u << 20) /* no record type may exceed this */

/* RAM records: this header, then for RAW `pages` pages, for ZLIB a zlib stream of them. */
struct mig_ram_header {
    uint64_t gpa;
    uint32_t pages;
    uint32_t reserved;
};
#define MIG_RAM_MAX_PAGES_PER_RECORD 256u
#define MIG_RAM_ZERO_LEN sizeof(struct mig_ram_header)
#define MIG_RAM_RAW_MIN (sizeof(struct mig_ram_header) + MEM_PAGE_SIZE)
#define MIG_RAM_RAW_MAX                                                                            \
    (sizeof(struct mig_ram_header) + MIG_RAM_MAX_PAGES_PER_RECORD * MEM_PAGE_SIZE)
#define MIG_RAM_ZLIB_MIN (sizeof(struct mig_ram_header) + 1)
#define MIG_RAM_ZLIB_MAX (MIG_RAM_RAW_MAX + MEM_PAGE_SIZE)

/* SWITCHOVER: the source paused the VM; what follows is the final pass and the state. */
struct mig_switchover {
    uint64_t dirty_pages; /* pages the final pass sends */
};

/* RAM_SYNC (live migration over several connections, mig_barrier.h): this connection has sent
 * its share of pass `pass`; the streams' readers apply nothing of the next pass before every
 * connection's RAM_SYNC of this one. */
struct mig_ram_sync {
    uint32_t pass;        /* 1, 2, ... on every connection */
    uint32_t connections; /* how many carry RAM, the first included */
};

/* END: counts the reader checks against what it received. */
struct mig_end {
    uint32_t records; /* records before END */
    uint32_t vcpus;
    uint64_t ram_pages; /* pages covered by RAM records */
};

struct mig_record {
    uint16_t type;
    uint16_t flags;
    uint32_t index; /* vCPU index for per-vCPU records, chip for IRQCHIP, else 0 */
    uint32_t length;
    uint32_t crc;
    uint8_t *payload; /* owned by the reader until the next read */
    uint64_t offset;  /* of the record header in the stream */
    /* RAM_RAW read in place (mig_reader.place): payload holds only the RAM header, and the
     * pages are already here. NULL otherwise. */
    const uint8_t *placed;
};

/* Checks a known record's payload length and its row's payload rules (mig_records.h). */
int mig_record_check(const struct mig_record *rec);
/* "record REGS (vCPU 1) at offset N" — for error messages. */
void mig_record_describe(const struct mig_record *rec, char *buf, size_t size);

/* Writers append to a byte sink; the sink returns 0 or -errno. */
typedef int (*mig_sink_fn)(void *opaque, const void *buf, size_t len);
struct mig_writer {
    mig_sink_fn sink;
    void *opaque;
    uint64_t offset;
    uint32_t records;
    uint16_t minor; /* the format 1.minor written: MIG_VERSION_MINOR unless set lower */
};

/* A writer of format MIG_VERSION_MAJOR.MIG_VERSION_MINOR. For an older reader, set w->minor
 * lower before the header: a record type newer than that is then refused. */
void mig_writer_init(struct mig_writer *w, mig_sink_fn sink, void *opaque);
int mig_write_header(struct mig_writer *w);
int mig_write_record(struct mig_writer *w, uint16_t type, uint32_t index, const void *payload,
                     size_t len);
int mig_write_record_v(struct mig_writer *w, uint16_t type, uint32_t index, const struct iovec *iov,
                       int iovcnt);

/* Readers pull bytes from a source that returns 0, or -errno (-ENODATA at a clean end). */
typedef int (*mig_source_fn)(void *opaque, void *buf, size_t len);
struct mig_reader {
    mig_source_fn source;
    void *opaque;
    uint64_t offset;
    uint16_t major, minor;
    uint8_t *buf;
    size_t buf_size;
    uint32_t records; /* read before END (CONFIG and skipped ones included), as END counts */
    uint32_t skipped; /* unknown optional records skipped */
    /* Zero copy: when set, a RAM_RAW record's pages go from the source straight to where
     * place() says (its RAM header already checked against the record's rules), or into the
     * buffer as usual when it returns NULL. The CRC is checked after they landed: a reader
     * whose record fails must discard what place() pointed to. */
    uint8_t *(*place)(void *opaque, const struct mig_ram_header *h);
    void *place_opaque;
};

void mig_reader_init(struct mig_reader *r, mig_source_fn source, void *opaque);
void mig_reader_free(struct mig_reader *r);
int mig_read_header(struct mig_reader *r);
/* Reads the next record the reader knows (skipping unknown optional ones), CRC-checked and
 * length-checked. */
int mig_read_record(struct mig_reader *r, struct mig_record *rec);

/* A source over a memory buffer (for inspect, tests and the fuzzer). */
struct mig_mem_source {
    const uint8_t *data;
    size_t len, pos;
};
int mig_mem_source(void *opaque, void *buf, size_t len);

/* A sink and a source over a file descriptor. */
int mig_fd_sink(void *opaque, const void *buf, size_t len);
int mig_fd_source(void *opaque, void *buf, size_t len);

#endif
