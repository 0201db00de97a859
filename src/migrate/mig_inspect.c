#include "migrate/mig_inspect.h"

#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"
#include "migrate/mig_check.h"
#include "migrate/mig_config.h"
#include "migrate/mig_ram.h"
#include "vcpu/vcpu_state.h"
#include "nested/nested_state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define EFER_LMA 0x400ull
#define CR0_PE 0x1ull

static const char *cpu_mode(uint64_t cr0, uint64_t efer, const struct kvm_segment *cs)
{
    if (!(cr0 & CR0_PE))
        return "real";
    if (efer & EFER_LMA)
        return cs->l ? "64-bit" : "compatibility";
    return cs->db ? "protected 32-bit" : "protected 16-bit";
}

static json_t *hex(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
    return json_string(buf);
}

static json_t *vcpu_entry(json_t *vcpus, uint32_t index)
{
    char key[16];
    snprintf(key, sizeof(key), "%u", index);
    json_t *v = json_object_get(vcpus, key);
    if (!v) {
        v = json_pack("{s:i}", "index", (int)index);
        json_object_set_new(vcpus, key, v);
    }
    return v;
}

static void add_count(json_t *obj, const char *key, json_int_t n)
{
    json_t *old = json_object_get(obj, key);
    json_object_set_new(obj, key, json_integer(json_integer_value(old) + n));
}

/* Adds the record to the listing: RAM records folded into one line per type. */
static void list_record(json_t *records, json_t *ram_lines, const struct mig_record *rec)
{
    const char *name = mig_record_name(rec->type);
    if (mig_record_is_ram(rec->type)) {
        json_t *line = json_object_get(ram_lines, name);
        if (!line) {
            line = json_pack("{s:s,s:i,s:i}", "type", name, "count", 0, "size", 0);
            json_object_set_new(ram_lines, name, line);
            json_array_append(records, line);
        }
        add_count(line, "count", 1);
        add_count(line, "size", rec->length);
        return;
    }
    json_t *line = json_pack("{s:s,s:i}", "type", name, "size", (int)rec->length);
    if (mig_record_is_per_vcpu(rec->type))
        json_object_set_new(line, "vcpu", json_integer(rec->index));
    json_array_append_new(records, line);
}

static int inspect_ram(const struct mig_record *rec, json_t *ram, uint8_t *scratch)
{
    struct mig_ram_header h;
    memcpy(&h, rec->payload, sizeof(h));
    if (rec->type == MIG_REC_RAM_ZERO) {
        add_count(ram, "zero_pages", h.pages);
    } else if (rec->type == MIG_REC_RAM_RAW) {
        add_count(ram, "raw_pages", h.pages);
        add_count(ram, "raw_bytes", rec->length - sizeof(h));
    } else {
        int rc = mig_ram_decode(rec, scratch); /* as a restore would, into scratch */
        if (rc)
            return rc;
        add_count(ram, "zlib_pages", h.pages);
        add_count(ram, "zlib_bytes", rec->length - sizeof(h));
    }
    return 0;
}

static json_t *inspect_nested(const uint8_t *blob, uint32_t len)
{
    struct nested_header h;
    nested_parse_header(blob, len, &h);
    char flags[128];
    nested_describe_flags(&h, flags, sizeof(flags));
    json_t *n = json_pack("{s:I,s:s,s:o,s:o}", "size", (json_int_t)len, "flags", flags, "vmxon_pa",
                          hex(h.vmxon_pa), "vmcs12_pa", hex(h.vmcs12_pa));
    if (h.vmx_flags & KVM_STATE_VMX_PREEMPTION_TIMER_DEADLINE)
        json_object_set_new(n, "preemption_timer_deadline", hex(h.preemption_timer_deadline));
    struct nested_vmcs12_summary v;
    if (nested_vmcs12_summary(blob, len, &v))
        json_object_set_new(n, "vmcs12",
                            json_pack("{s:o,s:b,s:s,s:o,s:o,s:o,s:o,s:I}", "revision",
                                      hex(v.revision), "shadow", v.shadow, "launch_state",
                                      v.launch_state ? "launched" : "clear", "l2_rip",
                                      hex(v.guest_rip), "l2_rsp", hex(v.guest_rsp), "l2_cr3",
                                      hex(v.guest_cr3), "exit_reason", hex(v.exit_reason),
                                      "instruction_error", (json_int_t)v.instruction_error));
    return n;
}

static void inspect_vcpu(const struct mig_record *rec, json_t *vcpus)
{
    json_t *v = vcpu_entry(vcpus, rec->index);
    switch (rec->type) {
    case MIG_REC_REGS: {
        struct kvm_regs r;
        memcpy(&r, rec->payload, sizeof(r));
        json_object_set_new(v, "rip", hex(r.rip));
        json_object_set_new(v, "rsp", hex(r.rsp));
        json_object_set_new(v, "rflags", hex(r.rflags));
        break;
    }
    case MIG_REC_SREGS2:
    case MIG_REC_SREGS: {
        struct kvm_sregs2 s2;
        struct kvm_sregs s;
        uint64_t cr0, cr3, cr4, efer;
        const struct kvm_segment *cs;
        if (rec->type == MIG_REC_SREGS2) {
            memcpy(&s2, rec->payload, sizeof(s2));
            cr0 = s2.cr0, cr3 = s2.cr3, cr4 = s2.cr4, efer = s2.efer, cs = &s2.cs;
        } else {
            memcpy(&s, rec->payload, sizeof(s));
            cr0 = s.cr0, cr3 = s.cr3, cr4 = s.cr4, efer = s.efer, cs = &s.cs;
        }
        json_object_set_new(v, "cr0", hex(cr0));
        json_object_set_new(v, "cr3", hex(cr3));
        json_object_set_new(v, "cr4", hex(cr4));
        json_object_set_new(v, "efer", hex(efer));
        json_object_set_new(v, "mode", json_string(cpu_mode(cr0, efer, cs)));
        break;
    }
    case MIG_REC_VCPU_EVENTS: {
        struct kvm_vcpu_events e;
        memcpy(&e, rec->payload, sizeof(e));
        json_object_set_new(v, "events",
                            json_pack("{s:b,s:b,s:b,s:b}", "exception", e.exception.pending,
                                      "interrupt", e.interrupt.injected, "nmi",
                                      e.nmi.pending || e.nmi.injected, "smi", e.smi.pending));
        break;
    }
    case MIG_REC_MSRS:
        json_object_set_new(v, "msrs", json_integer(rec->length / sizeof(struct kvm_msr_entry)));
        break;
    case MIG_REC_EVMCS: {
        struct vcpu_evmcs e;
        memcpy(&e, rec->payload, sizeof(e));
        char range[16];
        snprintf(range, sizeof(range), "%u..%u", e.version & 0xff, e.version >> 8);
        json_object_set_new(v, "evmcs_versions", json_string(range));
        break;
    }
    case MIG_REC_NESTED_STATE:
        /* mig_check_in_stream has validated it. */
        json_object_set_new(v, "nested", inspect_nested(rec->payload, rec->length));
        break;
    case MIG_REC_MP_STATE: {
        struct kvm_mp_state mp;
        memcpy(&mp, rec->payload, sizeof(mp));
        json_object_set_new(v, "mp_state", json_integer(mp.mp_state));
        break;
    }
    default:
        break;
    }
}

static json_t *inspect_disks(const struct mig_config *cfg)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < cfg->disk_count; i++) {
        const struct dev_disk *d = &cfg->disks[i];
        json_array_append_new(a, json_pack("{s:s,s:I,s:b,s:s,s:s}", "path", d->path, "size",
                                           (json_int_t)d->size, "readonly", d->readonly, "cache",
                                           d->direct ? "none" : "writeback", "serial", d->serial));
    }
    return a;
}

/* "hypervisor": where KVM's leaves are and the Hyper-V enlightenments, said only when the CPU
 * is not the plain one (KVM's leaves at 0x40000000, no Hyper-V), so that older streams' text
 * stays as it was. */
static void inspect_hypervisor(json_t *c, const struct kvm_cpuid2 *cpuid)
{
    uint32_t kvm = hyperv_kvm_base(cpuid->entries, cpuid->nent);
    bool hv = hyperv_present(cpuid->entries, cpuid->nent);
    if (kvm == 0x40000000u && !hv)
        return;
    char names[256];
    json_t *h = json_pack("{s:o}", "kvm_leaves", kvm ? hex(kvm) : json_string("hidden"));
    if (hv)
        json_object_set_new(h, "hyperv",
                            json_string(hyperv_names(hyperv_decode(cpuid->entries, cpuid->nent),
                                                     names, sizeof(names))));
    json_object_set_new(c, "hypervisor", h);
}

int mig_inspect(struct mig_reader *r, json_t **summary)
{
    struct mig_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    json_t *s = json_object();
    json_t *records = json_array();
    json_t *ram_lines = json_object();
    json_t *vcpus = json_object();
    json_t *ram = json_pack("{s:i,s:i,s:i,s:i,s:i}", "zero_pages", 0, "raw_pages", 0, "zlib_pages",
                            0, "raw_bytes", 0, "zlib_bytes", 0);
    uint8_t *scratch = malloc(MIG_RAM_MAX_PAGES_PER_RECORD * MEM_PAGE_SIZE);
    uint64_t pages = 0;
    *summary = s;
    int rc = scratch ? mig_read_config(r, &cfg) : err_set(-ENOMEM, "out of memory");
    if (!rc) {
        char version[16];
        snprintf(version, sizeof(version), "%u.%u", r->major, r->minor);
        json_object_set_new(s, "version", json_string(version));
        json_array_append_new(
            records, json_pack("{s:s,s:I}", "type", "CONFIG", "size",
                               (json_int_t)(r->offset - MIG_HEADER_SIZE - MIG_RECORD_HEADER_SIZE)));
        json_t *cpuid = json_array();
        for (unsigned i = 0; i < cfg.cpu_count; i++)
            json_array_append_new(cpuid, json_integer(cfg.cpuid[i]->nent));
        json_t *c = json_pack("{s:I,s:i,s:o}", "mem", (json_int_t)cfg.mem_size, "cpus",
                              (int)cfg.cpu_count, "cpuid_entries", cpuid);
        if (cfg.disk_count) /* only then: the text of streams without disks stays as it was */
            json_object_set_new(c, "disks", inspect_disks(&cfg));
        if (cfg.net_count) {
            json_t *nets = json_array();
            for (unsigned i = 0; i < cfg.net_count; i++) {
                const uint8_t *m = cfg.net_mac[i];
                char mac[18];
                snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
                         m[4], m[5]);
                json_array_append_new(nets, json_pack("{s:s}", "mac", mac));
            }
            json_object_set_new(c, "nets", nets);
        }
        if (cfg.cpu_count)
            inspect_hypervisor(c, cfg.cpuid[0]);
        json_object_set_new(s, "config", c);
    }
    bool ended = false;
    while (!rc && !ended) {
        struct mig_record rec;
        if ((rc = mig_read_record(r, &rec)))
            break;
        list_record(records, ram_lines, &rec);
        if ((rc = mig_check_in_stream(&rec, r, &cfg, &pages)))
            break;
        if (mig_record_is_ram(rec.type))
            rc = inspect_ram(&rec, ram, scratch);
        else if (mig_record_is_per_vcpu(rec.type))
            inspect_vcpu(&rec, vcpus);
        ended = rec.type == MIG_REC_END;
    }
    json_t *vlist = json_array();
    for (unsigned i = 0; i < cfg.cpu_count; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%u", i);
        json_t *v = json_object_get(vcpus, key);
        if (v)
            json_array_append(vlist, v);
    }
    json_object_set_new(s, "records", records);
    json_object_set_new(s, "vcpus", vlist);
    json_object_set_new(s, "ram", ram);
    json_object_set_new(s, "skipped_optional_records", json_integer(r->skipped));
    json_decref(ram_lines);
    json_decref(vcpus);
    free(scratch);
    mig_config_free(&cfg);
    return rc;
}

static json_int_t geti(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static const char *gets(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "?";
}

void mig_inspect_print(json_t *s, FILE *out)
{
    json_t *cfg = json_object_get(s, "config");
    fprintf(out, "tern state stream, format %s\n", gets(s, "version"));
    fprintf(out, "config: %lld MiB RAM, %lld vCPU(s)\n", (long long)(geti(cfg, "mem") >> 20),
            (long long)geti(cfg, "cpus"));
    size_t k;
    json_t *d;
    json_array_foreach(json_object_get(cfg, "disks"), k, d)
    {
        fprintf(out, "  disk %zu: %s, %lld bytes, cache=%s%s", k, gets(d, "path"),
                (long long)geti(d, "size"), gets(d, "cache"),
                json_is_true(json_object_get(d, "readonly")) ? ", readonly" : "");
        fprintf(out, *gets(d, "serial") ? ", serial %s\n" : "%s\n", gets(d, "serial"));
    }
    json_array_foreach(json_object_get(cfg, "nets"), k, d)
        fprintf(out, "  network device %zu: MAC %s\n", k, gets(d, "mac"));
    json_t *h = json_object_get(cfg, "hypervisor");
    if (h)
        fprintf(out, "  CPU: KVM leaves %s; Hyper-V %s\n", gets(h, "kvm_leaves"),
                json_object_get(h, "hyperv") ? gets(h, "hyperv") : "no");
    fprintf(out, "records:\n");
    size_t i;
    json_t *rec;
    json_array_foreach(json_object_get(s, "records"), i, rec)
    {
        if (json_object_get(rec, "count"))
            fprintf(out, "  %-12s x%-7lld %lld bytes\n", gets(rec, "type"),
                    (long long)geti(rec, "count"), (long long)geti(rec, "size"));
        else if (json_object_get(rec, "vcpu"))
            fprintf(out, "  %-12s vCPU %-3lld %lld bytes\n", gets(rec, "type"),
                    (long long)geti(rec, "vcpu"), (long long)geti(rec, "size"));
        else
            fprintf(out, "  %-12s          %lld bytes\n", gets(rec, "type"),
                    (long long)geti(rec, "size"));
    }
    json_t *v;
    json_array_foreach(json_object_get(s, "vcpus"), i, v)
    {
        json_t *ev = json_object_get(v, "events");
        char pending[64] = "";
        static const char *const kinds[] = {"exception", "interrupt", "nmi", "smi"};
        for (size_t k = 0; k < 4; k++)
            if (json_is_true(json_object_get(ev, kinds[k])))
                snprintf(pending + strlen(pending), sizeof(pending) - strlen(pending), " %s",
                         kinds[k]);
        fprintf(out,
                "vCPU %lld: RIP %s RSP %s CR0 %s CR3 %s CR4 %s EFER %s, %s mode, %lld MSRs, "
                "pending events:%s\n",
                (long long)geti(v, "index"), gets(v, "rip"), gets(v, "rsp"), gets(v, "cr0"),
                gets(v, "cr3"), gets(v, "cr4"), gets(v, "efer"), gets(v, "mode"),
                (long long)geti(v, "msrs"), pending[0] ? pending : " none");
        if (json_object_get(v, "evmcs_versions"))
            fprintf(out, "  eVMCS enabled, versions %s\n", gets(v, "evmcs_versions"));
        json_t *n = json_object_get(v, "nested");
        if (!n)
            continue;
        fprintf(out, "  nested: %lld bytes, flags %s, vmxon_pa %s, vmcs12_pa %s",
                (long long)geti(n, "size"), gets(n, "flags"), gets(n, "vmxon_pa"),
                gets(n, "vmcs12_pa"));
        if (json_object_get(n, "preemption_timer_deadline"))
            fprintf(out, ", preemption deadline %s", gets(n, "preemption_timer_deadline"));
        fputc('\n', out);
        json_t *c = json_object_get(n, "vmcs12");
        if (c)
            fprintf(
                out,
                "  vmcs12: revision %s%s, %s, L2 RIP %s RSP %s CR3 %s, last exit reason %s, "
                "VM-instruction error %lld\n",
                gets(c, "revision"), json_is_true(json_object_get(c, "shadow")) ? " (shadow)" : "",
                gets(c, "launch_state"), gets(c, "l2_rip"), gets(c, "l2_rsp"), gets(c, "l2_cr3"),
                gets(c, "exit_reason"), (long long)geti(c, "instruction_error"));
    }
    json_t *ram = json_object_get(s, "ram");
    fprintf(out,
            "RAM: %lld zero pages; %lld raw pages (%lld bytes); %lld zlib pages (%lld bytes)\n",
            (long long)geti(ram, "zero_pages"), (long long)geti(ram, "raw_pages"),
            (long long)geti(ram, "raw_bytes"), (long long)geti(ram, "zlib_pages"),
            (long long)geti(ram, "zlib_bytes"));
    if (geti(s, "skipped_optional_records"))
        fprintf(out, "skipped %lld unknown optional record(s)\n",
                (long long)geti(s, "skipped_optional_records"));
}
