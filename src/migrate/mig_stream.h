/* mig_stream: tern's state stream — the format of snapshots and of live migration.
 *
 * A 16-byte header (magic, major, minor, flags) is followed by records. Each record is a 20-byte
 * little-endian header {type u16, flags u16, index u32, length u32, crc u32, reserved u32} and
 * `length` payload bytes; crc is zlib's CRC32 over the header's first 12 bytes and the payload.
 * A record whose type the reader does not know is skipped when optional and an error naming it
 * when mandatory (MIG_REC_MANDATORY). Every length is checked against the record type's limit
 * before anything is allocated. docs/stream-format.md describes every record and the versioning.
 */
#ifndef TERN_MIG_STREAM_H
#define TERN_MIG_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define MIG_MAGIC "TERNSTRM"
#define MIG_VERSION_MAJOR 1u
#define MIG_VERSION_MINOR 2u
#define MIG_HEADER_SIZE 16u
#define MIG_RECORD_HEADER_SIZE 20u
#define MIG_REC_MANDATORY 0x0001u
#define MIG_MAX_RECORD (16u << 20) /* no record type may exceed this */

enum mig_record_type {
    MIG_REC_CONFIG = 0x0001,
    MIG_REC_RAM_ZERO = 0x0010,
    MIG_REC_RAM_RAW = 0x0011,
    MIG_REC_RAM_ZLIB = 0x0012,
    MIG_REC_SERIAL = 0x0020,
    MIG_REC_RTC = 0x0021,     /* optional since 1.1 */
    MIG_REC_ACPI_PM = 0x0022, /* optional since 1.1 */
    MIG_REC_IRQCHIP = 0x0030,
    MIG_REC_PIT2 = 0x0031,
    MIG_REC_CLOCK = 0x0032,
    MIG_REC_MP_STATE = 0x0040,
    MIG_REC_VCPU_EVENTS = 0x0041,
    MIG_REC_REGS = 0x0042,
    MIG_REC_XSAVE = 0x0043,
    MIG_REC_XCRS = 0x0044,
    MIG_REC_SREGS2 = 0x0045,
    MIG_REC_SREGS = 0x0046,
    MIG_REC_MSRS = 0x0047,
    MIG_REC_LAPIC = 0x0048,
    MIG_REC_DEBUGREGS = 0x0049,
    MIG_REC_TSC_KHZ = 0x004a,
    MIG_REC_NESTED_STATE = 0x004b, /* since 1.2, only for a vCPU in VMX operation */
    MIG_REC_EVMCS = 0x004c,        /* optional since 1.2: eVMCS was enabled on the vCPU */
    MIG_REC_SWITCHOVER = 0x0100,   /* optional: live migration's source paused here */
    MIG_REC_END = 0x7fff,
};

/* RAM records: this header, then for RAW `pages` pages, for ZLIB a zlib stream of them. */
struct mig_ram_header {
    uint64_t gpa;
    uint32_t pages;
    uint32_t reserved;
};
#define MIG_RAM_MAX_PAGES_PER_RECORD 256u

/* SWITCHOVER: the source paused the VM; what follows is the final pass and the state. */
struct mig_switchover {
    uint64_t dirty_pages; /* pages the final pass sends */
};

/* EVMCS: the version range KVM_ENABLE_CAP(KVM_CAP_HYPERV_ENLIGHTENED_VMCS) returned. */
struct mig_evmcs {
    uint16_t version; /* bits 7:0 oldest, 15:8 newest */
    uint16_t reserved0;
    uint32_t reserved1;
};
#define MIG_MAX_NESTED_STATE (64u << 10)

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
};

/* Name of a record type ("REGS"), or NULL when unknown. */
const char *mig_record_name(uint16_t type);
/* Record classes: RAM_ZERO/RAW/ZLIB, and the per-vCPU state records (index = vCPU). */
bool mig_record_is_ram(uint16_t type);
bool mig_record_is_per_vcpu(uint16_t type);
/* Checks a known record's payload length (and fixed fields) for its type. */
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
};

void mig_writer_init(struct mig_writer *w, mig_sink_fn sink, void *opaque);
int mig_write_header(struct mig_writer *w);
int mig_write_record(struct mig_writer *w, uint16_t type, uint32_t index, const void *payload,
                     size_t len);
int mig_write_record_v(struct mig_writer *w, uint16_t type, uint32_t index, const struct iovec *iov,
                       int iovcnt);
/* The default flags of a type: mandatory for all but SWITCHOVER, which a reader that does not
 * know it may skip. */
uint16_t mig_record_default_flags(uint16_t type);

/* Readers pull bytes from a source that returns 0, or -errno (-ENODATA at a clean end). */
typedef int (*mig_source_fn)(void *opaque, void *buf, size_t len);
struct mig_reader {
    mig_source_fn source;
    void *opaque;
    uint64_t offset;
    uint16_t major, minor;
    uint8_t *buf;
    size_t buf_size;
    uint32_t records;
    uint32_t skipped;
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
