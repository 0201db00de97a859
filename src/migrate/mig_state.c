/* The one place that knows what the VM's state is made of and in which order KVM wants it.
 * Each ordering rule is written here once, beside the step that obeys it. */
#include "migrate/mig_state.h"

#include "devices/dev_acpi_pm.h"
#include "devices/dev_rtc.h"
#include "devices/dev_serial.h"
#include "err/err.h"
#include "le/le.h"
#include "memory/mem.h"
#include "nested/nested_kvm.h"
#include "nested/nested_state.h"
#include "vcpu/vcpu.h"
#include "vcpu/vcpu_cpuid.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <zlib.h>

#define MSR_IA32_TSC 0x10u
#define MSR_IA32_FEATURE_CONTROL 0x3au
#define MSR_IA32_TSC_DEADLINE 0x6e0u
#define MIG_CONFIG_FIXED 24u
#define MIG_MAX_MSRS 4096u

/* ---- CONFIG ---------------------------------------------------------------------------- */

int mig_config_parse(const uint8_t *p, size_t len, struct mig_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    if (len < MIG_CONFIG_FIXED)
        return err_set(-EPROTO, "record CONFIG: %zu bytes is too short", len);
    memcpy(&cfg->mem_size, p, 8);
    cfg->cpu_count = le_get32(p + 8);
    cfg->features = le_get32(p + 12);
    if (cfg->mem_size == 0 || cfg->mem_size % MEM_PAGE_SIZE)
        return err_set(-EPROTO, "record CONFIG: RAM size %llu is not a non-zero multiple of 4 KiB",
                       (unsigned long long)cfg->mem_size);
    if (cfg->cpu_count < 1 || cfg->cpu_count > VM_MAX_CPUS)
        return err_set(-EPROTO, "record CONFIG: vCPU count %u is outside 1..%d", cfg->cpu_count,
                       VM_MAX_CPUS);
    if (cfg->features)
        return err_set(-EPROTO, "record CONFIG: unknown features 0x%x", cfg->features);
    size_t pos = MIG_CONFIG_FIXED;
    for (uint32_t i = 0; i < cfg->cpu_count; i++) {
        if (len - pos < 4)
            return err_set(-EPROTO, "record CONFIG: vCPU %u's CPUID is cut off", i);
        uint32_t nent = le_get32(p + pos);
        pos += 4;
        if (nent == 0 || nent > 256)
            return err_set(-EPROTO, "record CONFIG: vCPU %u has %u CPUID entries (1..256)", i,
                           nent);
        size_t bytes = (size_t)nent * sizeof(struct kvm_cpuid_entry2);
        if (len - pos < bytes)
            return err_set(-EPROTO, "record CONFIG: vCPU %u's CPUID is cut off", i);
        cfg->cpuid[i] = calloc(1, sizeof(struct kvm_cpuid2) + bytes);
        if (!cfg->cpuid[i])
            return err_set(-ENOMEM, "out of memory");
        cfg->cpuid[i]->nent = nent;
        memcpy(cfg->cpuid[i]->entries, p + pos, bytes);
        pos += bytes;
    }
    if (pos != len)
        return err_set(-EPROTO, "record CONFIG: %zu trailing bytes", len - pos);
    return 0;
}

void mig_config_free(struct mig_config *cfg)
{
    for (unsigned i = 0; i < VM_MAX_CPUS; i++) {
        free(cfg->cpuid[i]);
        cfg->cpuid[i] = NULL;
    }
}

int mig_read_config(struct mig_reader *r, struct mig_config *cfg)
{
    int rc = mig_read_header(r);
    if (rc)
        return rc;
    struct mig_record rec;
    rc = mig_read_record(r, &rec);
    if (rc)
        return rc;
    if (rec.type != MIG_REC_CONFIG)
        return err_set(-EPROTO, "stream starts with record %s, not CONFIG",
                       mig_record_name(rec.type));
    return mig_config_parse(rec.payload, rec.length, cfg);
}

static int mig_capture_config(struct vm *vm, struct mig_writer *w)
{
    unsigned n = vm_cpu_count(vm);
    size_t cap = MIG_CONFIG_FIXED + n * (4 + 256 * sizeof(struct kvm_cpuid_entry2));
    uint8_t *buf = calloc(1, cap);
    if (!buf)
        return err_set(-ENOMEM, "out of memory");
    uint64_t mem_size = vm_mem(vm)->size;
    memcpy(buf, &mem_size, 8);
    memcpy(buf + 8, &n, 4);
    size_t pos = MIG_CONFIG_FIXED;
    for (unsigned i = 0; i < n; i++) {
        /* The copy kept at set time: the vCPUs may be running now. */
        const struct kvm_cpuid2 *c = vm_vcpu_cpuid(vm, i);
        memcpy(buf + pos, &c->nent, 4);
        memcpy(buf + pos + 4, c->entries, c->nent * sizeof(c->entries[0]));
        pos += 4 + c->nent * sizeof(c->entries[0]);
    }
    int rc = mig_write_record(w, MIG_REC_CONFIG, 0, buf, pos);
    free(buf);
    return rc;
}

/* ---- RAM ------------------------------------------------------------------------------- */

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

int mig_capture_ram_dirty(struct mig_capture *c, uint64_t *sent)
{
    struct mem *mem = vm_mem(c->vm);
    uint64_t page = 0, count = 0;
    int rc = 0;
    /* Contiguous marked pages within one region go out as one range. */
    while (!rc && mem_dirty_next(mem, &page)) {
        const struct mem_region *reg = &mem->regions[0];
        for (unsigned r = 1; r < mem->region_count; r++)
            if (page * MEM_PAGE_SIZE >= mem->regions[r].offset)
                reg = &mem->regions[r];
        uint64_t base = reg->offset / MEM_PAGE_SIZE;
        uint64_t limit = base + reg->size / MEM_PAGE_SIZE;
        uint64_t last = page + 1;
        while (last < limit && last - page < MIG_RAM_MAX_PAGES_PER_RECORD &&
               mem_dirty_take(mem, last))
            last++;
        rc = mig_send_range(c, reg, page - base, last - base);
        count += last - page;
        page = last;
    }
    if (sent)
        *sent = count;
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
        memcpy(dst, data, len);
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

static int mig_restore_ram(struct vm *vm, const struct mig_record *rec)
{
    struct mig_ram_header h;
    memcpy(&h, rec->payload, sizeof(h));
    uint8_t *dst = mem_ptr(vm_mem(vm), h.gpa, (uint64_t)h.pages * MEM_PAGE_SIZE);
    if (!dst) {
        char what[96];
        mig_record_describe(rec, what, sizeof(what));
        return err_set(-EPROTO, "%s: pages [0x%llx, +%u) lie outside guest RAM", what,
                       (unsigned long long)h.gpa, h.pages);
    }
    return mig_ram_decode(rec, dst);
}

int mig_check_in_stream(const struct mig_record *rec, const struct mig_reader *r,
                        const struct mig_config *cfg, uint64_t *ram_pages)
{
    char what[96];
    mig_record_describe(rec, what, sizeof(what));
    if (rec->type == MIG_REC_CONFIG)
        return err_set(-EPROTO, "%s: a second CONFIG record", what);
    if (mig_record_is_per_vcpu(rec->type) && rec->index >= cfg->cpu_count)
        return err_set(-EPROTO, "%s: the VM has only %u vCPUs", what, cfg->cpu_count);
    if (rec->type == MIG_REC_IRQCHIP) {
        struct kvm_irqchip chip;
        memcpy(&chip, rec->payload, sizeof(chip));
        if (chip.chip_id != rec->index)
            return err_set(-EPROTO, "%s: holds chip %u", what, chip.chip_id);
    }
    /* Every rule that does not depend on the host; the host's size limit is checked where the
     * state is set. */
    if (rec->type == MIG_REC_NESTED_STATE) {
        int rc = nested_validate(rec->payload, rec->length, MIG_MAX_NESTED_STATE);
        if (rc)
            return err_context(rc, "%s", what);
    }
    if (mig_record_is_ram(rec->type)) {
        struct mig_ram_header h;
        memcpy(&h, rec->payload, sizeof(h));
        *ram_pages += h.pages;
    }
    if (rec->type == MIG_REC_END) {
        struct mig_end end;
        memcpy(&end, rec->payload, sizeof(end));
        /* r->records counts CONFIG too, as the writer did. */
        if (end.records != r->records || end.vcpus != cfg->cpu_count || end.ram_pages != *ram_pages)
            return err_set(-EPROTO,
                           "%s: counts do not match: %u records, %u vCPUs, %llu pages "
                           "announced; %u, %u, %llu received",
                           what, end.records, end.vcpus, (unsigned long long)end.ram_pages,
                           r->records, cfg->cpu_count, (unsigned long long)*ram_pages);
    }
    return 0;
}

/* ---- per-vCPU state -------------------------------------------------------------------- */

/* What the host's KVM offers for vCPU state, asked once per capture, not once per vCPU: the
 * capture runs inside the migration's downtime. */
struct mig_vcpu_caps {
    int xsave_size; /* KVM_CAP_XSAVE2's size, or 0 for KVM_GET_XSAVE */
    bool xcrs, sregs2;
    struct kvm_msr_list *msrs; /* KVM_GET_MSR_INDEX_LIST */
    /* mig_nested_max: the host's real KVM_CAP_NESTED_STATE (--hide-cap only limits what this
     * VM accepts: a state it has must never be left out); 0: no vCPU can have any. */
    uint32_t nested_max;
    uint8_t *nested_buf;
};

uint32_t mig_nested_max(struct vm *vm)
{
    /* KVM refuses VMXON on a vCPU whose CPUID does not offer VMX. */
    for (unsigned i = 0; i < vm_cpu_count(vm); i++) {
        const struct kvm_cpuid2 *c = vm_vcpu_cpuid(vm, i);
        if (c && vcpu_cpuid_has_vmx(c))
            return nested_kvm_max_size(vm_kvm_fd(vm));
    }
    return 0;
}

static int mig_vcpu_caps_get(struct vm *vm, struct mig_vcpu_caps *caps)
{
    int kvm_fd = vm_kvm_fd(vm);
    memset(caps, 0, sizeof(*caps));
    int xsize = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    caps->xsave_size = xsize > 0 ? xsize : 0;
    caps->xcrs = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
    caps->sregs2 = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SREGS2) > 0;
    caps->nested_max = mig_nested_max(vm);
    if (caps->nested_max && !(caps->nested_buf = malloc(caps->nested_max)))
        return err_set(-ENOMEM, "out of memory");
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return err_sys(-errno, "KVM_GET_MSR_INDEX_LIST");
    if (probe.nmsrs > MIG_MAX_MSRS)
        return err_set(-E2BIG, "KVM lists %u MSRs, more than %u", probe.nmsrs, MIG_MAX_MSRS);
    caps->msrs = calloc(1, sizeof(*caps->msrs) + probe.nmsrs * sizeof(uint32_t));
    if (!caps->msrs)
        return err_set(-ENOMEM, "out of memory");
    caps->msrs->nmsrs = probe.nmsrs;
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, caps->msrs) < 0)
        return err_sys(-errno, "KVM_GET_MSR_INDEX_LIST");
    return 0;
}

/* The MSRs of list that read back on this vCPU, with their values. */
static int mig_read_msrs(const struct kvm_msr_list *list, int vcpu_fd, struct kvm_msrs **out)
{
    struct kvm_msrs *m = calloc(1, sizeof(*m) + list->nmsrs * sizeof(struct kvm_msr_entry));
    struct kvm_msrs *q = calloc(1, sizeof(*q) + list->nmsrs * sizeof(struct kvm_msr_entry));
    if (!m || !q) {
        free(m);
        free(q);
        return err_set(-ENOMEM, "out of memory");
    }
    /* KVM_GET_MSRS stops at the first MSR it cannot read: keep what it read, skip that one. */
    uint32_t next = 0;
    while (next < list->nmsrs) {
        q->nmsrs = list->nmsrs - next;
        for (uint32_t i = 0; i < q->nmsrs; i++)
            q->entries[i] = (struct kvm_msr_entry){.index = list->indices[next + i]};
        int n = ioctl(vcpu_fd, KVM_GET_MSRS, q);
        if (n < 0) {
            int rc = err_sys(-errno, "KVM_GET_MSRS");
            free(q);
            free(m);
            return rc;
        }
        memcpy(&m->entries[m->nmsrs], q->entries, (size_t)n * sizeof(q->entries[0]));
        m->nmsrs += (uint32_t)n;
        next += (uint32_t)n + 1;
    }
    free(q);
    *out = m;
    return 0;
}

static int vcpu_get(int fd, unsigned long req, void *data, const char *name, unsigned index)
{
    if (ioctl(fd, req, data) < 0)
        return err_sys(-errno, "%s on vCPU %u", name, index);
    return 0;
}

/* The vCPU's nested state into caps->nested_buf, and whether the stream needs it: only a vCPU
 * in VMX operation does, so that streams of other guests stay readable by destinations that
 * cannot restore nested state. A blob that a destination would refuse is refused here. */
static int mig_vcpu_nested(int fd, unsigned i, const struct mig_vcpu_caps *caps, uint32_t *len,
                           struct nested_header *h, bool *needed)
{
    *needed = false;
    if (!caps->nested_max)
        return 0;
    int rc = nested_kvm_get(fd, i, caps->nested_buf, caps->nested_max, len);
    if (!rc)
        rc = nested_parse_header(caps->nested_buf, *len, h);
    if (rc || !(*needed = nested_needed(h)))
        return rc;
    if ((rc = nested_validate(caps->nested_buf, *len, caps->nested_max)))
        return err_context(rc, "vCPU %u: KVM_GET_NESTED_STATE gave a state tern cannot carry", i);
    return 0;
}

int mig_nested_need(struct vm *vm, uint32_t *size, bool *evmcs)
{
    *size = 0;
    *evmcs = false;
    struct mig_vcpu_caps caps = {.nested_max = mig_nested_max(vm)};
    if (!caps.nested_max)
        return 0;
    if (!(caps.nested_buf = malloc(caps.nested_max)))
        return err_set(-ENOMEM, "out of memory");
    int rc = 0;
    for (unsigned i = 0; i < vm_cpu_count(vm) && !rc; i++) {
        uint32_t len;
        struct nested_header h;
        bool needed;
        rc = mig_vcpu_nested(vm_vcpu_fd(vm, i), i, &caps, &len, &h, &needed);
        if (rc || !needed)
            continue;
        if (len > *size)
            *size = len;
        *evmcs |= nested_needs_evmcs(&h);
    }
    free(caps.nested_buf);
    return rc;
}

/* Capture order. MP_STATE comes first: reading it makes KVM process pending INIT/SIPI events,
 * which may change CS:RIP and the LAPIC, so everything read after it is consistent with it. */
static int mig_capture_vcpu(struct vm *vm, unsigned i, struct mig_writer *w,
                            const struct mig_vcpu_caps *caps)
{
    int fd = vm_vcpu_fd(vm, i);
    int rc;
    struct kvm_mp_state mp;
    if ((rc = vcpu_get(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE", i)) ||
        (rc = mig_write_record(w, MIG_REC_MP_STATE, i, &mp, sizeof(mp))))
        return rc;
    struct kvm_vcpu_events ev;
    if ((rc = vcpu_get(fd, KVM_GET_VCPU_EVENTS, &ev, "KVM_GET_VCPU_EVENTS", i)) ||
        (rc = mig_write_record(w, MIG_REC_VCPU_EVENTS, i, &ev, sizeof(ev))))
        return rc;
    struct kvm_regs regs;
    if ((rc = vcpu_get(fd, KVM_GET_REGS, &regs, "KVM_GET_REGS", i)) ||
        (rc = mig_write_record(w, MIG_REC_REGS, i, &regs, sizeof(regs))))
        return rc;

    /* XSAVE2 (KVM_CAP_XSAVE2 gives the size, at least 4096) carries AMX and other large
     * components that the 4 KiB KVM_GET_XSAVE would cut off. */
    int xsize = caps->xsave_size;
    unsigned long xreq = xsize > 0 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
    if (xsize < (int)sizeof(struct kvm_xsave))
        xsize = sizeof(struct kvm_xsave);
    void *xs = calloc(1, (size_t)xsize);
    if (!xs)
        return err_set(-ENOMEM, "out of memory");
    rc = vcpu_get(fd, xreq, xs, "KVM_GET_XSAVE", i);
    if (!rc)
        rc = mig_write_record(w, MIG_REC_XSAVE, i, xs, (size_t)xsize);
    free(xs);
    if (rc)
        return rc;
    if (caps->xcrs) {
        struct kvm_xcrs xcrs;
        if ((rc = vcpu_get(fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS", i)) ||
            (rc = mig_write_record(w, MIG_REC_XCRS, i, &xcrs, sizeof(xcrs))))
            return rc;
    }
    /* SREGS2 also carries the PDPTRs, which PAE paging needs exactly as they were loaded. */
    if (caps->sregs2) {
        struct kvm_sregs2 s2;
        if ((rc = vcpu_get(fd, KVM_GET_SREGS2, &s2, "KVM_GET_SREGS2", i)) ||
            (rc = mig_write_record(w, MIG_REC_SREGS2, i, &s2, sizeof(s2))))
            return rc;
    } else {
        struct kvm_sregs s;
        if ((rc = vcpu_get(fd, KVM_GET_SREGS, &s, "KVM_GET_SREGS", i)) ||
            (rc = mig_write_record(w, MIG_REC_SREGS, i, &s, sizeof(s))))
            return rc;
    }
    struct kvm_msrs *msrs = NULL;
    if ((rc = mig_read_msrs(caps->msrs, fd, &msrs)))
        return err_context(rc, "vCPU %u", i);
    rc =
        mig_write_record(w, MIG_REC_MSRS, i, msrs->entries, msrs->nmsrs * sizeof(msrs->entries[0]));
    free(msrs);
    if (rc)
        return rc;
    struct kvm_lapic_state lapic;
    if ((rc = vcpu_get(fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC", i)) ||
        (rc = mig_write_record(w, MIG_REC_LAPIC, i, &lapic, sizeof(lapic))))
        return rc;
    struct kvm_debugregs dr;
    if ((rc = vcpu_get(fd, KVM_GET_DEBUGREGS, &dr, "KVM_GET_DEBUGREGS", i)) ||
        (rc = mig_write_record(w, MIG_REC_DEBUGREGS, i, &dr, sizeof(dr))))
        return rc;
    int khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
    if (khz <= 0)
        return err_sys(-errno, "KVM_GET_TSC_KHZ on vCPU %u", i);
    uint32_t k = (uint32_t)khz;
    if ((rc = mig_write_record(w, MIG_REC_TSC_KHZ, i, &k, sizeof(k))))
        return rc;
    struct mig_evmcs ev_cap = {.version = vm_vcpu_evmcs_version(vm, i)};
    if (ev_cap.version && (rc = mig_write_record(w, MIG_REC_EVMCS, i, &ev_cap, sizeof(ev_cap))))
        return rc;
    /* NESTED_STATE last: the records above hold the vCPU's current registers (L2's, in guest
     * mode); this one adds vmcs12 (L1's view of L2 and L1's own host state), which KVM brings
     * up to date from the running L2 as it is read. */
    uint32_t len;
    struct nested_header h;
    bool needed;
    if ((rc = mig_vcpu_nested(fd, i, caps, &len, &h, &needed)) || !needed)
        return rc;
    return mig_write_record(w, MIG_REC_NESTED_STATE, i, caps->nested_buf, len);
}

/* ---- capture --------------------------------------------------------------------------- */

int mig_capture_begin(struct mig_capture *c, struct vm *vm, struct mig_writer *w,
                      const struct mig_capture_options *opt)
{
    memset(c, 0, sizeof(*c));
    c->vm = vm;
    c->w = w;
    c->opt = *opt;
    c->records_before = w->records;
    if (opt->compress_level >= 0) {
        c->zcap = compressBound(MIG_RAM_MAX_PAGES_PER_RECORD * MEM_PAGE_SIZE);
        c->zbuf = malloc(c->zcap);
        if (!c->zbuf)
            return err_set(-ENOMEM, "out of memory");
    }
    if (opt->live && !(c->copy = malloc(MIG_RAM_MAX_PAGES_PER_RECORD * MEM_PAGE_SIZE)))
        return err_set(-ENOMEM, "out of memory");
    int rc = mig_write_header(w);
    if (!rc)
        rc = mig_capture_config(vm, w);
    return rc;
}

void mig_capture_end(struct mig_capture *c)
{
    free(c->zbuf);
    free(c->copy);
    c->zbuf = c->copy = NULL;
}

int mig_capture_state(struct mig_capture *c)
{
    struct vm *vm = c->vm;
    struct mig_writer *w = c->w;
    uint8_t serial[DEV_SERIAL_STATE_MAX];
    size_t n = dev_serial_save(vm_serial(vm), serial);
    int rc = mig_write_record(w, MIG_REC_SERIAL, 0, serial, n);
    if (!rc) {
        uint8_t rtc[DEV_RTC_STATE_SIZE];
        dev_rtc_save(vm_rtc(vm), rtc);
        rc = mig_write_record(w, MIG_REC_RTC, 0, rtc, sizeof(rtc));
    }
    if (!rc) {
        uint8_t pm[DEV_ACPI_PM_STATE_SIZE];
        dev_acpi_pm_save(vm_acpi_pm(vm), pm);
        rc = mig_write_record(w, MIG_REC_ACPI_PM, 0, pm, sizeof(pm));
    }
    for (uint32_t chip = 0; chip < 3 && !rc; chip++) {
        struct kvm_irqchip ic = {.chip_id = chip};
        if (ioctl(vm_fd(vm), KVM_GET_IRQCHIP, &ic) < 0)
            rc = err_sys(-errno, "KVM_GET_IRQCHIP %u", chip);
        else
            rc = mig_write_record(w, MIG_REC_IRQCHIP, chip, &ic, sizeof(ic));
    }
    if (!rc) {
        struct kvm_pit_state2 pit;
        if (ioctl(vm_fd(vm), KVM_GET_PIT2, &pit) < 0)
            rc = err_sys(-errno, "KVM_GET_PIT2");
        else
            rc = mig_write_record(w, MIG_REC_PIT2, 0, &pit, sizeof(pit));
    }
    struct mig_vcpu_caps caps = {0};
    if (!rc)
        rc = mig_vcpu_caps_get(vm, &caps);
    for (unsigned i = 0; i < vm_cpu_count(vm) && !rc; i++)
        rc = mig_capture_vcpu(vm, i, w, &caps);
    free(caps.msrs);
    free(caps.nested_buf);
    if (!rc) {
        /* A restored VM that never ran still holds its clock for the first resume. */
        struct kvm_clock_data clock = {0};
        if (!vm_pending_clock(vm, &clock) && ioctl(vm_fd(vm), KVM_GET_CLOCK, &clock) < 0)
            rc = err_sys(-errno, "KVM_GET_CLOCK");
        clock.flags = 0;
        memset(clock.pad, 0, sizeof(clock.pad));
        clock.realtime = 0;
        clock.host_tsc = 0;
        if (!rc)
            rc = mig_write_record(w, MIG_REC_CLOCK, 0, &clock, sizeof(clock));
    }
    if (!rc) {
        struct mig_end end = {.records = w->records - c->records_before,
                              .vcpus = vm_cpu_count(vm),
                              .ram_pages = c->pages};
        rc = mig_write_record(w, MIG_REC_END, 0, &end, sizeof(end));
    }
    return rc;
}

int mig_capture(struct vm *vm, struct mig_writer *w, const struct mig_capture_options *opt,
                struct mig_stats *stats)
{
    struct mig_capture c;
    int rc = mig_capture_begin(&c, vm, w, opt);
    if (!rc)
        rc = mig_capture_ram_all(&c);
    if (!rc)
        rc = mig_capture_state(&c);
    if (stats)
        *stats = c.stats;
    mig_capture_end(&c);
    return rc;
}

/* ---- restore --------------------------------------------------------------------------- */

enum {
    HAVE_MP,
    HAVE_EVENTS,
    HAVE_REGS,
    HAVE_XSAVE,
    HAVE_XCRS,
    HAVE_SREGS2,
    HAVE_SREGS,
    HAVE_MSRS,
    HAVE_LAPIC,
    HAVE_DEBUGREGS,
    HAVE_TSC_KHZ,
    HAVE_NESTED,
    HAVE_EVMCS,
    HAVE_COUNT
};

struct mig_vcpu_state {
    bool have[HAVE_COUNT];
    struct kvm_mp_state mp;
    struct kvm_vcpu_events events;
    struct kvm_regs regs;
    uint8_t *xsave;
    size_t xsave_len;
    struct kvm_xcrs xcrs;
    struct kvm_sregs2 sregs2;
    struct kvm_sregs sregs;
    struct kvm_msrs *msrs;
    struct kvm_lapic_state lapic;
    struct kvm_debugregs debugregs;
    uint32_t tsc_khz;
    uint8_t *nested;
    uint32_t nested_len;
    struct mig_evmcs evmcs;
};

struct mig_vm_state {
    struct mig_vcpu_state vcpu[VM_MAX_CPUS];
    bool have_irqchip[3], have_pit, have_clock;
    struct kvm_irqchip irqchip[3];
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
};

static void mig_vm_state_free(struct mig_vm_state *s)
{
    for (unsigned i = 0; i < VM_MAX_CPUS; i++) {
        free(s->vcpu[i].xsave);
        free(s->vcpu[i].msrs);
        free(s->vcpu[i].nested);
    }
    free(s);
}

/* A device record: the device checks its own bytes, and the error names the record. */
static int mig_restore_device(struct vm *vm, const struct mig_record *rec)
{
    int rc;
    switch (rec->type) {
    case MIG_REC_SERIAL:
        rc = dev_serial_load(vm_serial(vm), rec->payload, rec->length);
        break;
    case MIG_REC_RTC:
        rc = dev_rtc_load(vm_rtc(vm), rec->payload, rec->length);
        break;
    default: /* MIG_REC_ACPI_PM */
        rc = dev_acpi_pm_load(vm_acpi_pm(vm), rec->payload, rec->length);
        break;
    }
    if (rc) {
        char what[96];
        mig_record_describe(rec, what, sizeof(what));
        err_context(rc, "%s", what);
    }
    return rc;
}

/* Copies a fixed-size record into its slot. Lengths were checked by the reader. */
static void take(bool *have, void *dst, const struct mig_record *rec)
{
    memcpy(dst, rec->payload, rec->length);
    *have = true;
}

static int mig_stash_vcpu_record(struct mig_vcpu_state *v, const struct mig_record *rec)
{
    switch (rec->type) {
    case MIG_REC_MP_STATE:
        take(&v->have[HAVE_MP], &v->mp, rec);
        break;
    case MIG_REC_VCPU_EVENTS:
        take(&v->have[HAVE_EVENTS], &v->events, rec);
        break;
    case MIG_REC_REGS:
        take(&v->have[HAVE_REGS], &v->regs, rec);
        break;
    case MIG_REC_XCRS:
        take(&v->have[HAVE_XCRS], &v->xcrs, rec);
        break;
    case MIG_REC_SREGS2:
        take(&v->have[HAVE_SREGS2], &v->sregs2, rec);
        break;
    case MIG_REC_SREGS:
        take(&v->have[HAVE_SREGS], &v->sregs, rec);
        break;
    case MIG_REC_LAPIC:
        take(&v->have[HAVE_LAPIC], &v->lapic, rec);
        break;
    case MIG_REC_DEBUGREGS:
        take(&v->have[HAVE_DEBUGREGS], &v->debugregs, rec);
        break;
    case MIG_REC_TSC_KHZ:
        take(&v->have[HAVE_TSC_KHZ], &v->tsc_khz, rec);
        break;
    case MIG_REC_EVMCS:
        take(&v->have[HAVE_EVMCS], &v->evmcs, rec);
        break;
    case MIG_REC_NESTED_STATE:
        free(v->nested);
        if (!(v->nested = malloc(rec->length)))
            return err_set(-ENOMEM, "out of memory");
        memcpy(v->nested, rec->payload, rec->length);
        v->nested_len = rec->length;
        v->have[HAVE_NESTED] = true;
        break;
    case MIG_REC_XSAVE:
        free(v->xsave);
        v->xsave = malloc(rec->length);
        if (!v->xsave)
            return err_set(-ENOMEM, "out of memory");
        memcpy(v->xsave, rec->payload, rec->length);
        v->xsave_len = rec->length;
        v->have[HAVE_XSAVE] = true;
        break;
    case MIG_REC_MSRS: {
        free(v->msrs);
        v->msrs = calloc(1, sizeof(*v->msrs) + rec->length);
        if (!v->msrs)
            return err_set(-ENOMEM, "out of memory");
        v->msrs->nmsrs = rec->length / sizeof(struct kvm_msr_entry);
        memcpy(v->msrs->entries, rec->payload, rec->length);
        v->have[HAVE_MSRS] = true;
        break;
    }
    default:
        break;
    }
    return 0;
}

static int vcpu_set(int fd, unsigned long req, const void *data, const char *name, unsigned index)
{
    if (ioctl(fd, req, data) < 0)
        return err_sys(-errno, "%s on vCPU %u", name, index);
    return 0;
}

/* Sets the MSRs of list for which pick() holds; KVM_SET_MSRS stops at the first it rejects. */
static int mig_set_msrs(int fd, unsigned index, const struct kvm_msrs *list,
                        bool (*pick)(uint32_t msr))
{
    struct kvm_msrs *m = calloc(1, sizeof(*m) + list->nmsrs * sizeof(list->entries[0]));
    if (!m)
        return err_set(-ENOMEM, "out of memory");
    for (uint32_t i = 0; i < list->nmsrs; i++)
        if (pick(list->entries[i].index))
            m->entries[m->nmsrs++] = list->entries[i];
    int rc = vcpu_set_msrs_fd(fd, index, m);
    free(m);
    return rc;
}

static bool msr_before_nested(uint32_t msr)
{
    return msr == MSR_IA32_FEATURE_CONTROL || nested_vmx_msr_restorable(msr);
}

/* The VMX capability MSRs KVM cannot restore are derived (from the "true" ones and CPUID). */
static bool msr_is_ordinary(uint32_t msr)
{
    return msr != MSR_IA32_FEATURE_CONTROL && msr != MSR_IA32_TSC_DEADLINE && !nested_vmx_msr(msr);
}

static bool msr_is_tsc_deadline(uint32_t msr)
{
    return msr == MSR_IA32_TSC_DEADLINE;
}

/* Restore order for one vCPU, after all guest RAM is in place (KVM reads guest memory, e.g. the
 * vmcs12 pages, when nested state is set and at the first KVM_RUN). CPUID2 was set first, when
 * the VM was built from CONFIG: KVM checks every later state against it. */
static int mig_restore_vcpu(struct vm *vm, unsigned i, struct mig_vcpu_state *v)
{
    int fd = vm_vcpu_fd(vm, i);
    int rc;
    static const char *const names[HAVE_COUNT] = {
        "MP_STATE", "VCPU_EVENTS", "REGS",      "XSAVE",   "XCRS",         "SREGS2", "SREGS",
        "MSRS",     "LAPIC",       "DEBUGREGS", "TSC_KHZ", "NESTED_STATE", "EVMCS"};
    const int required[] = {HAVE_MP,   HAVE_EVENTS, HAVE_REGS,      HAVE_XSAVE,
                            HAVE_MSRS, HAVE_LAPIC,  HAVE_DEBUGREGS, HAVE_TSC_KHZ};
    for (size_t k = 0; k < sizeof(required) / sizeof(required[0]); k++)
        if (!v->have[required[k]])
            return err_set(-EPROTO, "vCPU %u: the stream has no %s record", i, names[required[k]]);
    if (!v->have[HAVE_SREGS2] && !v->have[HAVE_SREGS])
        return err_set(-EPROTO, "vCPU %u: the stream has no SREGS2 or SREGS record", i);

    /* eVMCS right after CPUID and before nested state: KVM refuses a nested state flagged
     * KVM_STATE_NESTED_EVMCS on a vCPU without it. A host without eVMCS still takes a vCPU
     * whose eVMCS was enabled but never active (KVM commit 323d73a8ec). */
    struct nested_header nh = {0};
    if (v->have[HAVE_NESTED] && (rc = nested_parse_header(v->nested, v->nested_len, &nh)))
        return err_context(rc, "vCPU %u", i);
    if (v->have[HAVE_EVMCS] && vm_nested_caps(vm)->evmcs) {
        if ((rc = vm_enable_evmcs(vm, i, NULL)))
            return rc;
    } else if (v->have[HAVE_NESTED] && nested_needs_evmcs(&nh)) {
        return err_set(-ENOTSUP, "vCPU %u runs L2 through an active enlightened VMCS; %s", i,
                       v->have[HAVE_EVMCS] ? "this host lacks KVM_CAP_HYPERV_ENLIGHTENED_VMCS"
                                           : "the stream has no EVMCS record to enable it");
    }
    /* The VMX capability MSRs and IA32_FEATURE_CONTROL before SREGS2 and nested state: KVM
     * refuses changes to the capability MSRs once the vCPU is in VMX operation, writing
     * feature control takes the vCPU out of VMX root operation on reset, and KVM checks VMXON
     * against it. */
    if ((rc = mig_set_msrs(fd, i, v->msrs, msr_before_nested)))
        return rc;
    /* SREGS2 before nested state: KVM validates nested state against EFER and CR0/CR4. */
    if (v->have[HAVE_SREGS2])
        rc = vcpu_set(fd, KVM_SET_SREGS2, &v->sregs2, "KVM_SET_SREGS2", i);
    else
        rc = vcpu_set(fd, KVM_SET_SREGS, &v->sregs, "KVM_SET_SREGS", i);
    if (rc)
        return rc;
    /* Nested state after all RAM (KVM maps vmcs12 and the eVMCS from guest memory), CPUID,
     * eVMCS, feature control and SREGS2, and before REGS: in guest mode KVM loads L2's state
     * from vmcs12 as it sets this, and REGS (L2's live registers then) must land on top. */
    if (v->have[HAVE_NESTED] &&
        (rc = nested_kvm_set(fd, i, v->nested, v->nested_len, vm_nested_caps(vm)->nested_max)))
        return rc;

    /* TSC frequency before the TSC MSR, so the TSC value is scaled at the right rate. */
    int khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
    if (khz > 0 && (uint32_t)khz != v->tsc_khz &&
        ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)v->tsc_khz) < 0)
        return err_sys(-errno, "vCPU %u: KVM_SET_TSC_KHZ %u (host runs at %d kHz)", i, v->tsc_khz,
                       khz);
    if ((rc = vcpu_set(fd, KVM_SET_REGS, &v->regs, "KVM_SET_REGS", i)))
        return rc;
    /* XCRS before XSAVE: XCR0 decides which XSAVE components KVM accepts. */
    if (v->have[HAVE_XCRS] && (rc = vcpu_set(fd, KVM_SET_XCRS, &v->xcrs, "KVM_SET_XCRS", i)))
        return rc;
    if ((rc = vcpu_set(fd, KVM_SET_XSAVE, v->xsave, "KVM_SET_XSAVE", i)))
        return rc;
    /* TSC_DEADLINE waits for the LAPIC (below): it arms the LAPIC timer. */
    if ((rc = mig_set_msrs(fd, i, v->msrs, msr_is_ordinary)))
        return rc;
    /* VCPU_EVENTS after REGS: KVM_SET_REGS clears pending exceptions. The NMI and SIPI fields
     * are valid in what GET returned, but GET does not say so in flags. */
    v->events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    if ((rc = vcpu_set(fd, KVM_SET_VCPU_EVENTS, &v->events, "KVM_SET_VCPU_EVENTS", i)))
        return rc;
    if ((rc = vcpu_set(fd, KVM_SET_MP_STATE, &v->mp, "KVM_SET_MP_STATE", i)))
        return rc;
    /* LAPIC after SREGS: the APIC base (and so x2APIC mode) comes with the special registers. */
    if ((rc = vcpu_set(fd, KVM_SET_LAPIC, &v->lapic, "KVM_SET_LAPIC", i)))
        return rc;
    if ((rc = mig_set_msrs(fd, i, v->msrs, msr_is_tsc_deadline)))
        return rc;
    return vcpu_set(fd, KVM_SET_DEBUGREGS, &v->debugregs, "KVM_SET_DEBUGREGS", i);
}

static int mig_apply(struct vm *vm, struct mig_vm_state *s, const struct mig_config *cfg)
{
    int rc = 0;
    for (unsigned i = 0; i < cfg->cpu_count && !rc; i++) {
        /* CPUID2 first of all per-vCPU state (already done for a fresh VM in vm_create). */
        if (vm_set_vcpu_cpuid(vm, i, cfg->cpuid[i]))
            rc = err_context(-EINVAL, "the stream's CPUID");
    }
    /* The interrupt controllers and PIT before the vCPUs' LAPICs, as at power-on. */
    for (uint32_t chip = 0; chip < 3 && !rc; chip++) {
        if (!s->have_irqchip[chip])
            rc = err_set(-EPROTO, "the stream has no IRQCHIP record for chip %u", chip);
        else if (ioctl(vm_fd(vm), KVM_SET_IRQCHIP, &s->irqchip[chip]) < 0)
            rc = err_sys(-errno, "KVM_SET_IRQCHIP %u", chip);
    }
    if (!rc && !s->have_pit)
        rc = err_set(-EPROTO, "the stream has no PIT2 record");
    if (!rc && ioctl(vm_fd(vm), KVM_SET_PIT2, &s->pit) < 0)
        rc = err_sys(-errno, "KVM_SET_PIT2");
    for (unsigned i = 0; i < cfg->cpu_count && !rc; i++)
        rc = mig_restore_vcpu(vm, i, &s->vcpu[i]);
    if (!rc && !s->have_clock)
        rc = err_set(-EPROTO, "the stream has no CLOCK record");
    /* KVM_SET_CLOCK last of all, right before the vCPUs run: vm_start/vm_resume do it. */
    if (!rc)
        vm_set_clock_on_resume(vm, &s->clock);
    return rc;
}

int mig_restore(struct vm *vm, struct mig_reader *r, const struct mig_config *cfg,
                struct mig_restore_info *info)
{
    struct mig_restore_info local = {0};
    if (!info)
        info = &local;
    memset(info, 0, sizeof(*info));
    struct mig_vm_state *s = calloc(1, sizeof(*s));
    if (!s)
        return err_set(-ENOMEM, "out of memory");
    uint64_t pages = 0;
    int rc = 0;
    for (;;) {
        struct mig_record rec;
        if ((rc = mig_read_record(r, &rec)))
            break;
        if ((rc = mig_check_in_stream(&rec, r, cfg, &pages)) || rec.type == MIG_REC_END)
            break;
        switch (rec.type) {
        case MIG_REC_RAM_ZERO:
        case MIG_REC_RAM_RAW:
        case MIG_REC_RAM_ZLIB:
            rc = mig_restore_ram(vm, &rec);
            info->ram_records++;
            break;
        case MIG_REC_SWITCHOVER: {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            info->switchover_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
            break;
        }
        case MIG_REC_SERIAL:
        case MIG_REC_RTC:
        case MIG_REC_ACPI_PM:
            rc = mig_restore_device(vm, &rec);
            break;
        case MIG_REC_IRQCHIP:
            take(&s->have_irqchip[rec.index], &s->irqchip[rec.index], &rec);
            break;
        case MIG_REC_PIT2:
            take(&s->have_pit, &s->pit, &rec);
            break;
        case MIG_REC_CLOCK:
            take(&s->have_clock, &s->clock, &rec);
            break;
        default:
            rc = mig_stash_vcpu_record(&s->vcpu[rec.index], &rec);
            break;
        }
        if (rc)
            break;
    }
    if (!rc)
        rc = mig_apply(vm, s, cfg);
    for (unsigned i = 0; i < cfg->cpu_count && !rc; i++) {
        struct nested_header h;
        if (!s->vcpu[i].have[HAVE_NESTED] ||
            nested_parse_header(s->vcpu[i].nested, s->vcpu[i].nested_len, &h))
            continue;
        info->nested_vcpus++;
        info->guest_mode_vcpus += (h.flags & KVM_STATE_NESTED_GUEST_MODE) != 0;
        if (s->vcpu[i].nested_len > info->nested_bytes)
            info->nested_bytes = s->vcpu[i].nested_len;
    }
    mig_vm_state_free(s);
    return rc;
}
