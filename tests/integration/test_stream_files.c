/* Real snapshot files: identity across a restore, and every kind of damage a file can carry. */
#include <criterion/criterion.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "err/err.h"
#include "harness.h"
#include "migrate/mig_stream.h"

TestSuite(stream_files, .init = harness_require_kvm, .timeout = 240);

struct file_records {
    uint8_t *data;
    size_t len;
    unsigned count;
    struct mig_record rec[512];
    uint8_t *payload[512];
};

static void load_records(const char *path, struct file_records *f)
{
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "open %s", path);
    fseek(fp, 0, SEEK_END);
    f->len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f->data = malloc(f->len);
    cr_assert_eq(fread(f->data, 1, f->len, fp), f->len);
    fclose(fp);
    struct mig_mem_source src = {.data = f->data, .len = f->len};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    cr_assert_eq(mig_read_header(&r), 0, "%s", err_msg());
    f->count = 0;
    for (;;) {
        cr_assert_lt(f->count, 512);
        struct mig_record *rec = &f->rec[f->count];
        cr_assert_eq(mig_read_record(&r, rec), 0, "%s", err_msg());
        f->payload[f->count] = f->data + rec->offset + MIG_RECORD_HEADER_SIZE;
        f->count++;
        if (rec->type == MIG_REC_END)
            break;
    }
    mig_reader_free(&r);
}

/* A small real snapshot of memstamp (2 vCPUs, 16 MiB) mid-run. */
static void make_snapshot(const char *path)
{
    const char *sock = harness_tmp("sock");
    char *argv[] = {TERN_BINARY,
                    "run",
                    "--cpus",
                    "2",
                    "--mem",
                    "16M",
                    "--kernel",
                    (char *)harness_guest("memstamp"),
                    "--cmdline",
                    "mib=2 passes=0 every=1000",
                    "--api-socket",
                    (char *)sock,
                    NULL};
    struct proc p;
    proc_start(&p, argv);
    cr_assert(harness_wait_socket(sock, 10000), "%s", p.err);
    cr_assert(proc_wait_output(&p, "pass 1000 ok", 10000), "%s", p.out);
    harness_snapshot(sock, path);
    json_decref(harness_ctl(sock, "quit", NULL));
    cr_assert_eq(proc_wait(&p, 10000), 0, "%s", p.err);
    proc_free(&p);
}

/* Fields that legitimately differ between a capture and the capture of its restore:
 * - MSR 0x10 (IA32_TSC): the TSC keeps counting in host time while the VM is paused;
 * - PIT2 count_load_time: an absolute host timestamp of when each counter was loaded. */
static bool msr_may_differ(uint32_t index)
{
    return index == 0x10;
}

static void expect_same_record(const struct file_records *a, const struct file_records *b,
                               unsigned i)
{
    const struct mig_record *ra = &a->rec[i], *rb = &b->rec[i];
    char what[96];
    mig_record_describe(ra, what, sizeof(what));
    cr_assert_eq(ra->type, rb->type, "record %u: %s vs type 0x%x", i, what, rb->type);
    cr_assert_eq(ra->index, rb->index, "%s", what);
    cr_assert_eq(ra->length, rb->length, "%s: length %u vs %u", what, ra->length, rb->length);
    const uint8_t *pa = a->payload[i], *pb = b->payload[i];
    if (ra->type == MIG_REC_MSRS) {
        /* Payloads sit at any offset of the file: copy each entry out before reading it. */
        for (unsigned k = 0; k < ra->length / sizeof(struct kvm_msr_entry); k++) {
            struct kvm_msr_entry ea, eb;
            memcpy(&ea, pa + k * sizeof(ea), sizeof(ea));
            memcpy(&eb, pb + k * sizeof(eb), sizeof(eb));
            cr_assert_eq(ea.index, eb.index, "%s: MSR list differs", what);
            if (!msr_may_differ(ea.index))
                cr_expect_eq(ea.data, eb.data, "%s: MSR 0x%x 0x%llx vs 0x%llx", what, ea.index,
                             (unsigned long long)ea.data, (unsigned long long)eb.data);
        }
        return;
    }
    if (ra->type == MIG_REC_PIT2) {
        struct kvm_pit_state2 x, y;
        memcpy(&x, pa, sizeof(x));
        memcpy(&y, pb, sizeof(y));
        for (int c = 0; c < 3; c++)
            x.channels[c].count_load_time = y.channels[c].count_load_time = 0;
        cr_expect_eq(memcmp(&x, &y, sizeof(x)), 0, "%s differs beyond count_load_time", what);
        return;
    }
    for (unsigned k = 0; k < ra->length; k++)
        if (pa[k] != pb[k]) {
            cr_expect_fail("%s differs at payload byte %u: 0x%02x vs 0x%02x", what, k, pa[k],
                           pb[k]);
            return;
        }
}

Test(stream_files, capture_restore_capture_is_identical)
{
    const char *first = harness_tmp("a");
    const char *second = harness_tmp("b");
    make_snapshot(first);

    const char *sock = harness_tmp("sock");
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", first);
    char *argv[] = {TERN_BINARY, "run",          "--incoming", uri,
                    "--paused",  "--api-socket", (char *)sock, NULL};
    struct proc p;
    proc_start(&p, argv);
    cr_assert(harness_wait_socket(sock, 10000), "%s", p.err);
    harness_snapshot(sock, second);
    json_decref(harness_ctl(sock, "quit", NULL));
    cr_assert_eq(proc_wait(&p, 10000), 0, "%s", p.err);
    proc_free(&p);

    static struct file_records a, b;
    load_records(first, &a);
    load_records(second, &b);
    cr_assert_eq(a.count, b.count, "record counts %u vs %u", a.count, b.count);
    for (unsigned i = 0; i < a.count; i++)
        expect_same_record(&a, &b, i);
    free(a.data);
    free(b.data);
    unlink(first);
    unlink(second);
}

/* ---- damaged files ---------------------------------------------------------------------- */

static void write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    cr_assert(fp);
    cr_assert_eq(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

/* Restores path and expects exit 2 with one line containing fragment. */
static void expect_rejected(const char *path, const char *fragment, const char *why)
{
    char uri[300];
    snprintf(uri, sizeof(uri), "file:%s", path);
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--incoming", uri, "--serial", "none", NULL);
    cr_expect_eq(st, 2, "%s: status %d, stderr: %s", why, st, p.err);
    cr_expect(strstr(p.err, fragment), "%s: '%s' not in: %s", why, fragment, p.err);
    cr_expect(p.err_len && strchr(p.err, '\n') == p.err + p.err_len - 1, "%s: one line: %s", why,
              p.err);
    proc_free(&p);
}

static void rewrite_crc(uint8_t *rec_header, const uint8_t *payload, uint32_t len)
{
    uint32_t crc = (uint32_t)crc32(crc32(0L, rec_header, 12), payload, len);
    memcpy(rec_header + 12, &crc, 4);
}

Test(stream_files, damaged_snapshots_are_rejected_with_the_record_named)
{
    const char *good = harness_tmp("good");
    const char *bad = harness_tmp("bad");
    make_snapshot(good);
    static struct file_records f;
    load_records(good, &f);
    uint8_t *copy = malloc(f.len + 4096);

    /* A flipped byte in each record type (first record of each type). */
    uint32_t seen[64] = {0};
    unsigned nseen = 0;
    for (unsigned i = 0; i < f.count; i++) {
        bool dup = false;
        for (unsigned k = 0; k < nseen; k++)
            dup |= seen[k] == f.rec[i].type;
        if (dup || f.rec[i].length == 0)
            continue;
        seen[nseen++] = f.rec[i].type;
        memcpy(copy, f.data, f.len);
        copy[f.rec[i].offset + MIG_RECORD_HEADER_SIZE + f.rec[i].length / 2] ^= 0x10;
        write_file(bad, copy, f.len);
        char want[96];
        snprintf(want, sizeof(want), "record %s", mig_record_name(f.rec[i].type));
        expect_rejected(bad, want, "flipped byte");
        expect_rejected(bad, "CRC mismatch", "flipped byte");
    }
    cr_expect_geq(nseen, 15, "every record type was damaged once (%u)", nseen);

    /* Truncation at every record boundary, and inside the header. */
    for (unsigned i = 0; i < f.count; i++) {
        write_file(bad, f.data, f.rec[i].offset);
        expect_rejected(bad, i == 0 ? "" : "stream truncated at offset", "truncated");
    }
    write_file(bad, f.data, 7);
    expect_rejected(bad, "stream header: truncated", "truncated header");
    write_file(bad, f.data, f.rec[2].offset + MIG_RECORD_HEADER_SIZE + 3);
    expect_rejected(bad, "truncated payload", "truncated payload");

    /* Oversized length fields: beyond the record limit, and beyond the type's own size. */
    memcpy(copy, f.data, f.len);
    uint32_t huge = 0xffffff00u;
    memcpy(copy + f.rec[0].offset + 8, &huge, 4);
    write_file(bad, copy, f.len);
    expect_rejected(bad, "record CONFIG at offset 16: length 4294967040 exceeds", "huge length");
    unsigned regs = 0;
    while (f.rec[regs].type != MIG_REC_REGS)
        regs++;
    memcpy(copy, f.data, f.len);
    uint32_t more = f.rec[regs].length + 8;
    memcpy(copy + f.rec[regs].offset + 8, &more, 4);
    write_file(bad, copy, f.len);
    expect_rejected(bad, "record REGS (vCPU 0)", "REGS length");
    expect_rejected(bad, "is not the expected 144", "REGS length");

    /* Wrong magic; newer major version. */
    memcpy(copy, f.data, f.len);
    copy[0] ^= 0xff;
    write_file(bad, copy, f.len);
    expect_rejected(bad, "bad magic", "magic");
    memcpy(copy, f.data, f.len);
    copy[8] = 2;
    write_file(bad, copy, f.len);
    char major[96];
    snprintf(major, sizeof(major), "format version %u.%u; this tern reads major version %u",
             MIG_VERSION_MAJOR + 1, MIG_VERSION_MINOR, MIG_VERSION_MAJOR);
    expect_rejected(bad, major, "major");

    /* Unknown records inserted after CONFIG: mandatory is refused, optional is skipped. */
    size_t at = f.rec[1].offset;
    for (int mandatory = 1; mandatory >= 0; mandatory--) {
        uint8_t h[MIG_RECORD_HEADER_SIZE] = {0};
        uint16_t type = 0x6abc, flags = mandatory ? MIG_REC_MANDATORY : 0;
        uint32_t len = 32;
        uint8_t payload[32];
        memset(payload, 0xa5, sizeof(payload));
        memcpy(h, &type, 2);
        memcpy(h + 2, &flags, 2);
        memcpy(h + 8, &len, 4);
        rewrite_crc(h, payload, len);
        memcpy(copy, f.data, at);
        memcpy(copy + at, h, sizeof(h));
        memcpy(copy + at + sizeof(h), payload, len);
        memcpy(copy + at + sizeof(h) + len, f.data + at, f.len - at);
        /* As a writer that knew the record would have: END counts it. */
        const struct mig_record *end = &f.rec[f.count - 1];
        uint8_t *eh = copy + end->offset + sizeof(h) + len;
        uint32_t records;
        memcpy(&records, eh + MIG_RECORD_HEADER_SIZE, 4);
        records++;
        memcpy(eh + MIG_RECORD_HEADER_SIZE, &records, 4);
        rewrite_crc(eh, eh + MIG_RECORD_HEADER_SIZE, end->length);
        write_file(bad, copy, f.len + sizeof(h) + len);
        if (mandatory) {
            expect_rejected(bad, "record type 0x6abc at offset", "unknown mandatory");
            expect_rejected(bad, "unknown mandatory record", "unknown mandatory");
            continue;
        }
        const char *sock = harness_tmp("sock");
        char uri[300];
        snprintf(uri, sizeof(uri), "file:%s", bad);
        char *argv[] = {TERN_BINARY, "run",          "--incoming", uri,
                        "--paused",  "--api-socket", (char *)sock, NULL};
        struct proc p;
        proc_start(&p, argv);
        cr_expect(harness_wait_socket(sock, 10000), "the optional record stops the load: %s",
                  p.err);
        json_t *r = harness_ctl(sock, "resume", NULL);
        json_decref(r);
        cr_expect(proc_wait_output(&p, "ok", 10000), "the guest runs on: %s", p.out);
        json_decref(harness_ctl(sock, "quit", NULL));
        cr_expect_eq(proc_wait(&p, 10000), 0, "%s", p.err);
        proc_free(&p);
    }

    /* A RAM record pointing outside RAM, with a valid CRC. */
    unsigned ram = 0;
    while (f.rec[ram].type != MIG_REC_RAM_ZERO)
        ram++;
    memcpy(copy, f.data, f.len);
    uint8_t *rh = copy + f.rec[ram].offset;
    uint64_t far = 64ull << 30;
    memcpy(rh + MIG_RECORD_HEADER_SIZE, &far, 8);
    rewrite_crc(rh, rh + MIG_RECORD_HEADER_SIZE, f.rec[ram].length);
    write_file(bad, copy, f.len);
    expect_rejected(bad, "lie outside guest RAM", "RAM outside");

    free(copy);
    free(f.data);
    unlink(good);
    unlink(bad);
}
