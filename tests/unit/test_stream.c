/* The stream codec on synthetic streams shaped like real ones (KVM structs as payloads). */
#include <criterion/criterion.h>
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "err/err.h"
#include "migrate/mig_check.h"
#include "migrate/mig_config.h"
#include "migrate/mig_stream.h"

struct membuf {
    uint8_t *data;
    size_t len, cap;
};

static int mem_sink(void *opaque, const void *buf, size_t len)
{
    struct membuf *m = opaque;
    if (m->len + len > m->cap) {
        m->cap = (m->len + len) * 2;
        m->data = realloc(m->data, m->cap);
    }
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

static void write_sample(struct membuf *m)
{
    struct mig_writer w;
    memset(m, 0, sizeof(*m));
    mig_writer_init(&w, mem_sink, m);
    cr_assert_eq(mig_write_header(&w), 0);
    struct kvm_regs regs = {.rip = 0x200000, .rsp = 0x300000, .rflags = 2};
    cr_assert_eq(mig_write_record(&w, MIG_REC_REGS, 1, &regs, sizeof(regs)), 0);
    struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
    cr_assert_eq(mig_write_record(&w, MIG_REC_MP_STATE, 1, &mp, sizeof(mp)), 0);
}

static int read_all(struct membuf *m, struct mig_record *last, unsigned *count)
{
    struct mig_mem_source src = {.data = m->data, .len = m->len};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    int rc = mig_read_header(&r);
    *count = 0;
    while (!rc && src.pos < src.len) {
        rc = mig_read_record(&r, last);
        if (!rc)
            (*count)++;
    }
    mig_reader_free(&r);
    return rc;
}

Test(stream, round_trip)
{
    struct membuf m;
    write_sample(&m);
    cr_assert_eq(m.len, MIG_HEADER_SIZE + 2 * MIG_RECORD_HEADER_SIZE + sizeof(struct kvm_regs) +
                            sizeof(struct kvm_mp_state));
    struct mig_mem_source src = {.data = m.data, .len = m.len};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    cr_assert_eq(mig_read_header(&r), 0, "%s", err_msg());
    cr_assert_eq(r.major, MIG_VERSION_MAJOR);
    struct mig_record rec;
    cr_assert_eq(mig_read_record(&r, &rec), 0, "%s", err_msg());
    cr_assert_eq(rec.type, MIG_REC_REGS);
    cr_assert_eq(rec.index, 1);
    cr_assert_eq(((struct kvm_regs *)rec.payload)->rip, 0x200000);
    cr_assert_eq(mig_read_record(&r, &rec), 0, "%s", err_msg());
    cr_assert_eq(rec.type, MIG_REC_MP_STATE);
    cr_assert_lt(mig_read_record(&r, &rec), 0, "end of data");
    cr_assert(strstr(err_msg(), "stream truncated"), "%s", err_msg());
    mig_reader_free(&r);
    free(m.data);
}

Test(stream, flipped_payload_byte_is_a_crc_error_naming_the_record)
{
    struct membuf m;
    write_sample(&m);
    m.data[MIG_HEADER_SIZE + MIG_RECORD_HEADER_SIZE + 8] ^= 0x40; /* inside REGS */
    struct mig_record rec;
    unsigned n;
    cr_assert_lt(read_all(&m, &rec, &n), 0);
    cr_assert(strstr(err_msg(), "record REGS (vCPU 1) at offset 16: CRC mismatch"), "%s",
              err_msg());
    free(m.data);
}

Test(stream, bad_magic_and_newer_major)
{
    struct membuf m;
    struct mig_record rec;
    unsigned n;
    write_sample(&m);
    m.data[0] = 'X';
    cr_assert_lt(read_all(&m, &rec, &n), 0);
    cr_assert(strstr(err_msg(), "bad magic"), "%s", err_msg());
    free(m.data);
    write_sample(&m);
    m.data[8] = MIG_VERSION_MAJOR + 1;
    cr_assert_lt(read_all(&m, &rec, &n), 0);
    char want[96];
    snprintf(want, sizeof(want), "format version %u.%u; this tern reads major version %u",
             MIG_VERSION_MAJOR + 1, MIG_VERSION_MINOR, MIG_VERSION_MAJOR);
    cr_assert(strstr(err_msg(), want), "'%s' not in '%s'", want, err_msg());
    free(m.data);
}

/* Appends a record with any type and flags (the writer only writes known ones). */
static void append_raw(struct membuf *m, uint16_t type, uint16_t flags, uint32_t len)
{
    uint8_t h[MIG_RECORD_HEADER_SIZE] = {0};
    memcpy(h, &type, 2);
    memcpy(h + 2, &flags, 2);
    memcpy(h + 8, &len, 4);
    uint8_t *payload = calloc(1, len ? len : 1);
    memset(payload, 0x5a, len);
    uint32_t crc = (uint32_t)crc32(crc32(0L, h, 12), payload, len);
    memcpy(h + 12, &crc, 4);
    mem_sink(m, h, sizeof(h));
    mem_sink(m, payload, len);
    free(payload);
}

Test(stream, unknown_optional_is_skipped_and_mandatory_is_an_error)
{
    struct membuf m;
    struct mig_record rec;
    unsigned n;
    write_sample(&m);
    append_raw(&m, 0x6123, 0, 100);
    struct kvm_mp_state mp = {0};
    struct mig_writer w;
    mig_writer_init(&w, mem_sink, &m);
    cr_assert_eq(mig_write_record(&w, MIG_REC_MP_STATE, 0, &mp, sizeof(mp)), 0);
    cr_assert_eq(read_all(&m, &rec, &n), 0, "%s", err_msg());
    cr_assert_eq(n, 3, "the optional record is skipped, the one after it read");
    cr_assert_eq(rec.type, MIG_REC_MP_STATE);
    free(m.data);

    write_sample(&m);
    append_raw(&m, 0x6123, MIG_REC_MANDATORY, 100);
    cr_assert_lt(read_all(&m, &rec, &n), 0);
    cr_assert(strstr(err_msg(), "record type 0x6123 at offset"), "%s", err_msg());
    cr_assert(strstr(err_msg(), "unknown mandatory record"), "%s", err_msg());
    free(m.data);
}

Test(stream, lengths_are_checked_before_allocation)
{
    struct membuf m;
    struct mig_record rec;
    unsigned n;
    write_sample(&m);
    append_raw(&m, 0x6123, 0, 0); /* placeholder: rewrite its length below */
    uint32_t huge = 0xfffffff0u;
    memcpy(m.data + m.len - MIG_RECORD_HEADER_SIZE + 8, &huge, 4);
    cr_assert_lt(read_all(&m, &rec, &n), 0);
    cr_assert(strstr(err_msg(), "exceeds the 16777216-byte record limit"), "%s", err_msg());
    free(m.data);

    write_sample(&m);
    append_raw(&m, MIG_REC_REGS, MIG_REC_MANDATORY, 7);
    cr_assert_lt(read_all(&m, &rec, &n), 0);
    cr_assert(strstr(err_msg(), "record REGS (vCPU 0)"), "%s", err_msg());
    cr_assert(strstr(err_msg(), "length 7 is not the expected"), "%s", err_msg());
    free(m.data);
}

Test(stream, ram_record_rules)
{
    struct membuf m;
    struct mig_record rec;
    unsigned n;
    write_sample(&m);
    struct mig_writer w;
    mig_writer_init(&w, mem_sink, &m);
    struct mig_ram_header h = {.gpa = 0x1234, .pages = 1};
    cr_assert_eq(mig_write_record(&w, MIG_REC_RAM_ZERO, 0, &h, sizeof(h)), 0);
    cr_assert_lt(read_all(&m, &rec, &n), 0);
    cr_assert(strstr(err_msg(), "record RAM_ZERO at offset"), "%s", err_msg());
    cr_assert(strstr(err_msg(), "not page-aligned"), "%s", err_msg());
    free(m.data);
}

/* CONFIG as tern writes it: fixed part, then each vCPU's CPUID. */
static size_t make_config(uint8_t *buf, uint64_t mem, uint32_t cpus, uint32_t nent)
{
    memset(buf, 0, 24);
    memcpy(buf, &mem, 8);
    memcpy(buf + 8, &cpus, 4);
    size_t pos = 24;
    for (uint32_t i = 0; i < cpus; i++) {
        memcpy(buf + pos, &nent, 4);
        pos += 4;
        for (uint32_t e = 0; e < nent; e++) {
            struct kvm_cpuid_entry2 ent = {.function = e, .eax = i};
            memcpy(buf + pos, &ent, sizeof(ent));
            pos += sizeof(ent);
        }
    }
    return pos;
}

Test(stream, config_parse)
{
    static uint8_t buf[65536];
    struct mig_config cfg;
    size_t len = make_config(buf, 64ull << 20, 2, 3);
    cr_assert_eq(mig_config_parse(buf, len, &cfg), 0, "%s", err_msg());
    cr_assert_eq(cfg.mem_size, 64ull << 20);
    cr_assert_eq(cfg.cpu_count, 2);
    cr_assert_eq(cfg.cpuid[1]->nent, 3);
    cr_assert_eq(cfg.cpuid[1]->entries[2].function, 2);
    cr_assert_eq(cfg.cpuid[1]->entries[2].eax, 1);
    mig_config_free(&cfg);

    cr_assert_lt(mig_config_parse(buf, len - 1, &cfg), 0);
    cr_assert(strstr(err_msg(), "vCPU 1's CPUID is cut off"), "%s", err_msg());
    mig_config_free(&cfg);
    len = make_config(buf, 64ull << 20, 65, 1);
    cr_assert_lt(mig_config_parse(buf, len, &cfg), 0);
    cr_assert(strstr(err_msg(), "vCPU count 65"), "%s", err_msg());
    mig_config_free(&cfg);
    len = make_config(buf, 1000, 1, 1);
    cr_assert_lt(mig_config_parse(buf, len, &cfg), 0);
    cr_assert(strstr(err_msg(), "RAM size 1000"), "%s", err_msg());
    mig_config_free(&cfg);
    len = make_config(buf, 64ull << 20, 1, 300);
    cr_assert_lt(mig_config_parse(buf, len, &cfg), 0);
    cr_assert(strstr(err_msg(), "300 CPUID entries"), "%s", err_msg());
    mig_config_free(&cfg);
}

/* A NESTED_STATE record (a header-only struct kvm_nested_state, as KVM gives for a vCPU after
 * VMXON with no current VMCS) read through the rules every reader applies. */
static int check_nested_record(uint64_t vmxon_pa, uint32_t index)
{
    struct membuf m;
    write_sample(&m);
    struct kvm_nested_state s = {.format = KVM_STATE_NESTED_FORMAT_VMX,
                                 .size = 128,
                                 .hdr.vmx.vmxon_pa = vmxon_pa,
                                 .hdr.vmx.vmcs12_pa = ~0ull};
    struct mig_writer w;
    mig_writer_init(&w, mem_sink, &m);
    cr_assert_eq(mig_write_record(&w, MIG_REC_NESTED_STATE, index, &s, 128), 0);
    struct mig_mem_source src = {.data = m.data, .len = m.len};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    struct mig_record rec;
    cr_assert_eq(mig_read_header(&r), 0, "%s", err_msg());
    for (int i = 0; i < 3; i++) /* REGS, MP_STATE, NESTED_STATE */
        cr_assert_eq(mig_read_record(&r, &rec), 0, "%s", err_msg());
    cr_assert_eq(rec.type, MIG_REC_NESTED_STATE);
    struct mig_config cfg = {.mem_size = 64 << 20, .cpu_count = 2};
    uint64_t pages = 0;
    int rc = mig_check_in_stream(&rec, &r, &cfg, &pages);
    mig_reader_free(&r);
    free(m.data);
    return rc;
}

Test(stream, nested_state_record_is_checked_in_the_stream)
{
    cr_assert_eq(check_nested_record(0x209000, 1), 0, "%s", err_msg());
    cr_assert_lt(check_nested_record(0x209010, 1), 0);
    cr_assert(strstr(err_msg(), "record NESTED_STATE (vCPU 1)"), "%s", err_msg());
    cr_assert(strstr(err_msg(), "vmxon_pa"), "%s", err_msg());
    cr_assert_lt(check_nested_record(0x209000, 2), 0);
    cr_assert(strstr(err_msg(), "the VM has only 2 vCPUs"), "%s", err_msg());
}

Test(stream, evmcs_record_is_optional_and_nested_state_mandatory)
{
    cr_assert_eq(mig_record_default_flags(MIG_REC_EVMCS), 0);
    cr_assert_eq(mig_record_default_flags(MIG_REC_NESTED_STATE), MIG_REC_MANDATORY);
    cr_assert(mig_record_is_per_vcpu(MIG_REC_EVMCS) &&
              mig_record_is_per_vcpu(MIG_REC_NESTED_STATE));
    cr_assert_str_eq(mig_record_name(MIG_REC_NESTED_STATE), "NESTED_STATE");
}

/* An unknown optional record counts in END as its writer counted it: a reader that skips it
 * still finds END's counts right (the minor-version promise). */
Test(stream, a_skipped_optional_record_counts_in_end)
{
    struct membuf m;
    write_sample(&m); /* REGS, MP_STATE */
    append_raw(&m, 0x6123, 0, 100);
    struct mig_writer w;
    mig_writer_init(&w, mem_sink, &m);
    w.offset = m.len;
    struct mig_end end = {.records = 3, .vcpus = 2, .ram_pages = 0};
    cr_assert_eq(mig_write_record(&w, MIG_REC_END, 0, &end, sizeof(end)), 0);
    struct mig_mem_source src = {.data = m.data, .len = m.len};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    cr_assert_eq(mig_read_header(&r), 0);
    struct mig_config cfg = {.mem_size = 64 << 20, .cpu_count = 2};
    struct mig_record rec;
    uint64_t pages = 0;
    int rc = 0;
    do {
        cr_assert_eq(mig_read_record(&r, &rec), 0, "%s", err_msg());
        rc = mig_check_in_stream(&rec, &r, &cfg, &pages);
    } while (!rc && rec.type != MIG_REC_END);
    cr_expect_eq(rc, 0, "%s", err_msg());
    cr_expect_eq(r.skipped, 1);
    mig_reader_free(&r);
    free(m.data);
}

Test(stream, a_refused_config_leaves_nothing_behind)
{
    static uint8_t buf[65536];
    struct mig_config cfg;
    size_t len = make_config(buf, 64ull << 20, 2, 3);
    uint32_t cpus = 0xffffffffu;
    memcpy(buf + 8, &cpus, 4);
    cr_assert_lt(mig_config_parse(buf, len, &cfg), 0);
    cr_expect(strstr(err_msg(), "vCPU count 4294967295"), "%s", err_msg());
    cr_expect_eq(cfg.cpu_count, 0, "a reader must not loop over a refused count");
    cr_expect_null(cfg.cpuid[0]);
    len = make_config(buf, 64ull << 20, 2, 3);
    cr_assert_lt(mig_config_parse(buf, len - 1, &cfg), 0);
    cr_expect_eq(cfg.cpu_count, 0);
    cr_expect_null(cfg.cpuid[0], "vCPU 0's table, parsed before vCPU 1's failed, is freed");
}

/* CONFIG's disk section (features bit 0, format 1.4): one disk appended to a one-vCPU CONFIG. */
static size_t add_disk(uint8_t *buf, size_t pos, uint64_t size, uint32_t flags, const char *path,
                       const char *serial)
{
    uint32_t features = MIG_CONFIG_F_DISKS, count = 1;
    uint16_t plen = (uint16_t)strlen(path), slen = (uint16_t)strlen(serial);
    memcpy(buf + 12, &features, 4);
    memcpy(buf + pos, &count, 4);
    memcpy(buf + pos + 4, &size, 8);
    memcpy(buf + pos + 12, &flags, 4);
    memcpy(buf + pos + 16, &plen, 2);
    memcpy(buf + pos + 18, &slen, 2);
    memcpy(buf + pos + 20, path, plen);
    memcpy(buf + pos + 20 + plen, serial, slen);
    return pos + 20 + plen + slen;
}

Test(stream, config_carries_the_network_devices)
{
    static uint8_t buf[65536];
    struct mig_config cfg;
    size_t pos = make_config(buf, 64ull << 20, 1, 2);
    uint32_t features = MIG_CONFIG_F_NETS, two = 2;
    memcpy(buf + 12, &features, 4);
    memcpy(buf + pos, &two, 4);
    uint8_t macs[16] = {0x52, 0x54, 0, 1, 2, 3, 0, 0, 0x52, 0x54, 0, 4, 5, 6, 0, 0};
    memcpy(buf + pos + 4, macs, sizeof(macs));
    size_t len = pos + 4 + sizeof(macs);
    cr_assert_eq(mig_config_parse(buf, len, &cfg), 0, "%s", err_msg());
    cr_expect_eq(cfg.net_count, 2);
    cr_expect(cfg.net_mac[1][5] == 6);
    mig_config_free(&cfg);
    buf[pos + 4] = 0x53; /* a group MAC */
    cr_expect_lt(mig_config_parse(buf, len, &cfg), 0);
    cr_expect(strstr(err_msg(), "network device 0 has a group MAC"), "%s", err_msg());
    mig_config_free(&cfg);
    buf[pos + 4] = 0x52;
    cr_expect_lt(mig_config_parse(buf, len - 1, &cfg), 0);
    cr_expect(strstr(err_msg(), "network devices are cut off"), "%s", err_msg());
    mig_config_free(&cfg);
}

Test(stream, config_carries_the_disks)
{
    static uint8_t buf[65536];
    struct mig_config cfg;
    size_t base = make_config(buf, 64ull << 20, 1, 2);
    size_t len = add_disk(buf, base, 1ull << 30, MIG_CONFIG_DISK_READONLY, "/img/a.raw", "S9");
    cr_assert_eq(mig_config_parse(buf, len, &cfg), 0, "%s", err_msg());
    cr_expect_eq(cfg.disk_count, 1);
    cr_expect(!strcmp(cfg.disks[0].path, "/img/a.raw") && !strcmp(cfg.disks[0].serial, "S9"));
    cr_expect(cfg.disks[0].readonly && !cfg.disks[0].direct && cfg.disks[0].incoming);
    cr_expect_eq(cfg.disks[0].size, 1ull << 30);
    mig_config_free(&cfg);

    struct {
        uint64_t size;
        uint32_t flags;
        const char *path;
        const char *expect;
    } bad[] = {
        {1000, 0, "/a", "size 1000 is not a multiple of 512"},
        {4096, 8, "/a", "unknown flags 0x8"},
        {4096, 0, "", "path (0 bytes)"},
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        len = add_disk(buf, base, bad[i].size, bad[i].flags, bad[i].path, "");
        cr_expect_lt(mig_config_parse(buf, len, &cfg), 0, "%s accepted", bad[i].expect);
        cr_expect(strstr(err_msg(), bad[i].expect), "%s", err_msg());
        mig_config_free(&cfg);
    }
    len = add_disk(buf, base, 4096, 0, "/a", "");
    cr_expect_lt(mig_config_parse(buf, len - 1, &cfg), 0);
    cr_expect(strstr(err_msg(), "disk 0 is cut off"), "%s", err_msg());
    mig_config_free(&cfg);
    uint32_t nine = 9;
    memcpy(buf + base, &nine, 4);
    cr_expect_lt(mig_config_parse(buf, len, &cfg), 0);
    cr_expect(strstr(err_msg(), "9 disks"), "%s", err_msg());
    mig_config_free(&cfg);
}
