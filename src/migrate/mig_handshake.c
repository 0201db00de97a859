#include "migrate/mig_handshake.h"

#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"
#include "nested/nested_msr.h"
#include "migrate/mig_records.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct mig_hs_feature_reg mig_hs_feature_regs[MIG_HS_FEATURE_REGS] = {
    {1, 0, 2, "1.ECX"},
    {1, 0, 3, "1.EDX"},
    {7, 0, 1, "7.0.EBX"},
    {7, 0, 2, "7.0.ECX"},
    {7, 0, 3, "7.0.EDX"},
    {0xd, 1, 0, "0xD.1.EAX"},
    {0x80000001, 0, 2, "0x80000001.ECX"},
    {0x80000001, 0, 3, "0x80000001.EDX"},
};

/* Bits that are not features of the host but state of the guest, which KVM reflects into the
 * vCPU's CPUID at run time: OSXSAVE (CR4.OSXSAVE), HTT (tern sets it for SMP guests), APIC
 * (cleared while the guest has its APIC disabled) and OSPKE (CR4.PKE). */
static const uint32_t mig_hs_dynamic[MIG_HS_FEATURE_REGS] = {
    1u << 27, (1u << 28) | (1u << 9), 0, 1u << 4, 0, 0, 0, 0,
};

static uint32_t cpuid_reg(const struct kvm_cpuid_entry2 *e, uint8_t reg)
{
    switch (reg) {
    case 0:
        return e->eax;
    case 1:
        return e->ebx;
    case 2:
        return e->ecx;
    default:
        return e->edx;
    }
}

void mig_hs_features(const struct kvm_cpuid2 *cpuid, uint32_t out[MIG_HS_FEATURE_REGS])
{
    for (unsigned k = 0; k < MIG_HS_FEATURE_REGS; k++) {
        const struct mig_hs_feature_reg *f = &mig_hs_feature_regs[k];
        out[k] = 0;
        for (uint32_t i = 0; i < cpuid->nent; i++) {
            const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
            bool indexed = e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
            if (e->function == f->leaf && (!indexed || e->index == f->subleaf))
                out[k] = cpuid_reg(e, f->reg) & ~mig_hs_dynamic[k];
        }
    }
}

static json_t *features_to_json(const uint32_t f[MIG_HS_FEATURE_REGS])
{
    json_t *o = json_object();
    for (unsigned k = 0; k < MIG_HS_FEATURE_REGS; k++)
        json_object_set_new(o, mig_hs_feature_regs[k].name, json_integer(f[k]));
    return o;
}

/* An optional integer member within [1, max]; absent, def. */
static int get_count(json_t *obj, const char *key, unsigned max, unsigned def, unsigned *out)
{
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
        return err_set(-EPROTO, "\"%s\" must be an integer from 1 to %u", key, max);
    *out = (unsigned)json_integer_value(v);
    return 0;
}

/* "disks": absent, or 1..MIG_HS_MAX_DISKS objects {path: a string, size: a multiple of 512}. */
static int get_disks(json_t *obj, struct mig_hs_need *n)
{
    json_t *a = json_object_get(obj, "disks");
    n->disks = 0;
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) < 1 || json_array_size(a) > MIG_HS_MAX_DISKS)
        return err_set(-EPROTO, "\"disks\" must be an array of 1 to %u disks", MIG_HS_MAX_DISKS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *d = json_array_get(a, i), *path = json_object_get(d, "path");
        json_t *size = json_object_get(d, "size");
        if (!json_is_string(path) || json_string_length(path) == 0 ||
            json_string_length(path) >= DEV_DISK_PATH_MAX ||
            strlen(json_string_value(path)) != json_string_length(path) || !json_is_integer(size) ||
            json_integer_value(size) <= 0 || json_integer_value(size) % 512)
            return err_set(-EPROTO,
                           "\"disks\"[%zu] must be {\"path\": 1-%u bytes, \"size\": "
                           "a multiple of 512}",
                           i, DEV_DISK_PATH_MAX - 1);
        strcpy(n->disk[i].path, json_string_value(path));
        n->disk[i].size = (uint64_t)json_integer_value(size);
    }
    n->disks = (unsigned)json_array_size(a);
    return 0;
}

/* Reads an integer member within [0, max]; a missing or wrong one is an error naming it. */
static int get_uint(json_t *obj, const char *key, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return err_set(-EPROTO, "\"%s\" is %s; it must be an integer from 0 to %llu", key,
                       !v                   ? "missing"
                       : json_is_integer(v) ? "out of range"
                                            : "not an integer",
                       (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_bool(json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_boolean(v))
        return err_set(-EPROTO, "\"%s\" is %s, not true or false", key,
                       v ? "of another type" : "missing");
    *out = json_is_true(v);
    return 0;
}

static int features_from_json(json_t *obj, uint32_t f[MIG_HS_FEATURE_REGS])
{
    json_t *o = json_object_get(obj, "cpuid");
    if (!json_is_object(o))
        return err_set(-EPROTO, "\"cpuid\" is %s, not an object",
                       o ? "of another type" : "missing");
    for (unsigned k = 0; k < MIG_HS_FEATURE_REGS; k++) {
        uint64_t v = 0;
        if (get_uint(o, mig_hs_feature_regs[k].name, UINT32_MAX, &v))
            return -EPROTO;
        f[k] = (uint32_t)v;
    }
    return 0;
}

/* "hyperv": ["relaxed", ...], the names of set. */
static json_t *hyperv_to_json(uint32_t set)
{
    json_t *a = json_array();
    for (unsigned f = 0; f < HV_FEATURE_COUNT; f++)
        if (set & HV_BIT(f))
            json_array_append_new(a, json_string(hyperv_features[f].name));
    return a;
}

/* "hyperv": absent (*known false), or an array of the names of hyperv_cpuid.h; a name this
 * tern does not know is refused (its guest could rely on it). */
static int hyperv_from_json(json_t *obj, bool *known, uint32_t *set)
{
    json_t *a = json_object_get(obj, "hyperv");
    *known = a != NULL;
    *set = 0;
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > HV_FEATURE_COUNT)
        return err_set(-EPROTO, "\"hyperv\" must be an array of at most %u names",
                       HV_FEATURE_COUNT);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *name = json_string_value(json_array_get(a, i));
        unsigned f = 0;
        while (name && f < HV_FEATURE_COUNT && strcmp(name, hyperv_features[f].name))
            f++;
        if (!name || f == HV_FEATURE_COUNT)
            return err_set(-EPROTO, "\"hyperv\"[%zu] is not an enlightenment this tern knows", i);
        *set |= HV_BIT(f);
    }
    return 0;
}

/* "vmx": {"0x48b": "0x...", ...}: hex strings, since a control MSR may have bit 63 set. */
static json_t *vmx_to_json(const struct mig_hs_msr *m, unsigned n)
{
    json_t *o = json_object();
    for (unsigned i = 0; i < n; i++) {
        char key[16], value[24];
        snprintf(key, sizeof(key), "0x%x", m[i].index);
        snprintf(value, sizeof(value), "0x%llx", (unsigned long long)m[i].value);
        json_object_set_new(o, key, json_string(value));
    }
    return o;
}

static int hex_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || strncmp(s, "0x", 2) || !s[2] || strlen(s) > 18)
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s + 2, &end, 16);
    if (*end || errno || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "vmx": absent, or at most MIG_HS_MAX_VMX_MSRS restorable VMX capability MSRs. */
static int vmx_from_json(json_t *obj, bool *known, struct mig_hs_msr *m, unsigned *n)
{
    json_t *o = json_object_get(obj, "vmx"), *v;
    const char *key;
    *known = o != NULL;
    *n = 0;
    if (!o)
        return 0;
    if (!json_is_object(o) || json_object_size(o) > MIG_HS_MAX_VMX_MSRS)
        return err_set(-EPROTO, "\"vmx\" must be an object of at most %u MSRs",
                       MIG_HS_MAX_VMX_MSRS);
    json_object_foreach(o, key, v)
    {
        uint64_t index, value;
        if (hex_u64(key, UINT32_MAX, &index) || !nested_vmx_msr_restorable((uint32_t)index) ||
            hex_u64(json_string_value(v), UINT64_MAX, &value))
            return err_set(-EPROTO,
                           "\"vmx\": \"%.20s\" must name a VMX capability MSR KVM restores, "
                           "with a hex string value",
                           key);
        m[(*n)++] = (struct mig_hs_msr){(uint32_t)index, value};
    }
    return 0;
}

json_t *mig_hs_need_to_json(const struct mig_hs_need *n)
{
    json_t *o = json_pack(
        "{s:i,s:i,s:i,s:I,s:i,s:i,s:i,s:b,s:o}", "protocol", MIG_HS_PROTOCOL, "stream_major",
        (int)n->stream_major, "stream_minor", (int)n->stream_minor, "mem", (json_int_t)n->mem_size,
        "cpus", (int)n->cpus, "xsave_size", (int)n->xsave_size, "nested_size", (int)n->nested_size,
        "evmcs", n->evmcs, "cpuid", features_to_json(n->features));
    /* Said only when more than one: an older destination then refuses nothing it could take. */
    if (o && n->connections > 1)
        json_object_set_new(o, "connections", json_integer(n->connections));
    if (o && n->disks) { /* [{"path": ..., "size": ...}], only when there are disks */
        json_t *a = json_array();
        for (unsigned i = 0; i < n->disks && i < MIG_HS_MAX_DISKS; i++)
            json_array_append_new(a, json_pack("{s:s,s:I}", "path", n->disk[i].path, "size",
                                               (json_int_t)n->disk[i].size));
        json_object_set_new(o, "disks", a);
    }
    if (o && n->nets)
        json_object_set_new(o, "nets", json_integer(n->nets));
    if (o && n->hyperv)
        json_object_set_new(o, "hyperv", hyperv_to_json(n->hyperv_set));
    if (o && n->tsc_khz)
        json_object_set_new(o, "tsc_khz", json_integer(n->tsc_khz));
    if (o && n->vmx_count)
        json_object_set_new(o, "vmx", vmx_to_json(n->vmx, n->vmx_count));
    return o;
}

int mig_hs_need_from_json(json_t *obj, struct mig_hs_need *n)
{
    uint64_t proto = 0, major = 0, minor = 0, mem = 0, cpus = 0, xsave = 0, nested = 0;
    bool vmx_known;
    memset(n, 0, sizeof(*n));
    if (!json_is_object(obj))
        return err_set(-EPROTO, "no \"hello\" object");
    if (get_uint(obj, "protocol", UINT32_MAX, &proto))
        return -EPROTO;
    if (proto != MIG_HS_PROTOCOL)
        return err_set(-EPROTO, "\"protocol\" is %llu", (unsigned long long)proto);
    if (get_uint(obj, "stream_major", 65535, &major) ||
        get_uint(obj, "stream_minor", 65535, &minor) || get_uint(obj, "mem", INT64_MAX, &mem) ||
        get_uint(obj, "cpus", 1u << 16, &cpus) || get_uint(obj, "xsave_size", 1u << 24, &xsave) ||
        get_uint(obj, "nested_size", 1u << 24, &nested) || get_bool(obj, "evmcs", &n->evmcs) ||
        features_from_json(obj, n->features) ||
        get_count(obj, "connections", MIG_HS_MAX_CONNECTIONS, 1, &n->connections) ||
        get_disks(obj, n) || get_count(obj, "nets", DEV_MAX_NETS, 0, &n->nets) ||
        hyperv_from_json(obj, &n->hyperv, &n->hyperv_set) ||
        get_count(obj, "tsc_khz", UINT32_MAX, 0, &n->tsc_khz) ||
        vmx_from_json(obj, &vmx_known, n->vmx, &n->vmx_count))
        return -EPROTO;
    n->stream_major = (unsigned)major;
    n->stream_minor = (unsigned)minor;
    n->mem_size = mem;
    n->cpus = (unsigned)cpus;
    n->xsave_size = (uint32_t)xsave;
    n->nested_size = (uint32_t)nested;
    return 0;
}

json_t *mig_hs_caps_to_json(const struct mig_hs_caps *c)
{
    json_t *o =
        json_pack("{s:i,s:i,s:I,s:b,s:i,s:b,s:i,s:i,s:b,s:o}", "stream_major", (int)c->stream_major,
                  "stream_minor", (int)c->stream_minor, "mem_limit", (json_int_t)c->mem_limit,
                  "mem_exact", c->mem_exact, "max_cpus", (int)c->max_cpus, "cpus_exact",
                  c->cpus_exact, "xsave_size", (int)c->xsave_size, "nested_max", (int)c->nested_max,
                  "evmcs", c->evmcs, "cpuid", features_to_json(c->features));
    if (o)
        json_object_set_new(o, "connections_max", json_integer(c->connections_max));
    if (o && c->disks_given)
        json_object_set_new(o, "disks_given", json_integer(c->disks_given));
    if (o && c->nets_given)
        json_object_set_new(o, "nets_given", json_integer(c->nets_given));
    if (o && c->hyperv_known)
        json_object_set_new(o, "hyperv", hyperv_to_json(c->hyperv_set));
    if (o && c->tsc_khz)
        json_object_set_new(o, "tsc_khz", json_integer(c->tsc_khz));
    if (o)
        json_object_set_new(o, "tsc_scaling", json_boolean(c->tsc_scaling));
    if (o && c->vmx_known)
        json_object_set_new(o, "vmx", vmx_to_json(c->vmx, c->vmx_count));
    return o;
}

int mig_hs_caps_from_json(json_t *obj, struct mig_hs_caps *c)
{
    uint64_t major = 0, minor = 0, mem = 0, cpus = 0, xsave = 0, nested = 0;
    memset(c, 0, sizeof(*c));
    if (!json_is_object(obj))
        return err_set(-EPROTO, "no \"caps\" object");
    if (get_uint(obj, "stream_major", 65535, &major) ||
        get_uint(obj, "stream_minor", 65535, &minor) ||
        get_uint(obj, "mem_limit", INT64_MAX, &mem) || get_bool(obj, "mem_exact", &c->mem_exact) ||
        get_uint(obj, "max_cpus", 1u << 16, &cpus) || get_bool(obj, "cpus_exact", &c->cpus_exact) ||
        get_uint(obj, "xsave_size", 1u << 24, &xsave) ||
        get_uint(obj, "nested_max", 1u << 24, &nested) || get_bool(obj, "evmcs", &c->evmcs) ||
        features_from_json(obj, c->features) ||
        get_count(obj, "connections_max", MIG_HS_MAX_CONNECTIONS, 1, &c->connections_max) ||
        get_count(obj, "disks_given", MIG_HS_MAX_DISKS, 0, &c->disks_given) ||
        get_count(obj, "nets_given", DEV_MAX_NETS, 0, &c->nets_given) ||
        hyperv_from_json(obj, &c->hyperv_known, &c->hyperv_set) ||
        get_count(obj, "tsc_khz", UINT32_MAX, 0, &c->tsc_khz) ||
        vmx_from_json(obj, &c->vmx_known, c->vmx, &c->vmx_count))
        return -EPROTO;
    json_t *scaling = json_object_get(obj, "tsc_scaling");
    if (scaling && get_bool(obj, "tsc_scaling", &c->tsc_scaling))
        return -EPROTO;
    c->stream_major = (unsigned)major;
    c->stream_minor = (unsigned)minor;
    c->mem_limit = mem;
    c->max_cpus = (unsigned)cpus;
    c->xsave_size = (uint32_t)xsave;
    c->nested_max = (uint32_t)nested;
    return 0;
}

unsigned mig_hs_stream_minor(const struct mig_hs_need *n, const struct mig_hs_caps *c)
{
    return n->stream_minor < c->stream_minor ? n->stream_minor : c->stream_minor;
}

#define MIG_HS_CPUID_1_ECX_VMX (1u << 5)

/* A record the VM's state needs, or may need before the migration ends, which a stream of
 * format 1.minor cannot carry: nested state, for a vCPU in VMX operation or one that may enter
 * it (its CPUID offers VMX). */
/* count devices whose record type the format 1.minor lacks. */
static int mig_hs_device_format(const struct mig_hs_need *n, unsigned minor, uint16_t type,
                                unsigned count, const char *what, char *why, size_t why_size)
{
    const struct mig_record_type *t = mig_record_find(type);
    if (!count || t->since <= minor)
        return 0;
    snprintf(why, why_size,
             "the destination reads stream format %u.%u, which has no record %s (new in %u.%u); "
             "the VM has %u %s",
             n->stream_major, minor, t->name, n->stream_major, t->since, count, what);
    return -ENOTSUP;
}

static int mig_hs_check_format(const struct mig_hs_need *n, unsigned minor, char *why,
                               size_t why_size)
{
    if (mig_hs_device_format(n, minor, MIG_REC_VIRTIO_BLK, n->disks, "disk(s) (--disk)", why,
                             why_size) ||
        mig_hs_device_format(n, minor, MIG_REC_VIRTIO_NET, n->nets, "network device(s) (--net)",
                             why, why_size))
        return -ENOTSUP;
    const struct mig_record_type *nested = mig_record_find(MIG_REC_NESTED_STATE);
    if (nested->since <= minor)
        return 0;
    const char *what = n->nested_size ? "the VM's nested state needs it"
                       : n->features[0] & MIG_HS_CPUID_1_ECX_VMX
                           ? "the VM's vCPUs offer VMX (--nested) and may need it"
                           : NULL;
    if (!what)
        return 0;
    snprintf(why, why_size,
             "the destination reads stream format %u.%u, which has no record %s (new in %u.%u); "
             "%s",
             n->stream_major, minor, nested->name, n->stream_major, nested->since, what);
    return -ENOTSUP;
}

/* KVM's tolerance (tsc_tolerance_ppm): within it, a vCPU runs at the host's rate unscaled. */
#define MIG_HS_TSC_TOLERANCE_PPM 250u

static int mig_hs_check_tsc(const struct mig_hs_need *n, const struct mig_hs_caps *c, char *why,
                            size_t why_size)
{
    if (!n->tsc_khz || !c->tsc_khz || c->tsc_scaling)
        return 0;
    uint64_t diff = n->tsc_khz > c->tsc_khz ? n->tsc_khz - c->tsc_khz : c->tsc_khz - n->tsc_khz;
    if (diff * 1000000u <= (uint64_t)c->tsc_khz * MIG_HS_TSC_TOLERANCE_PPM)
        return 0;
    snprintf(why, why_size,
             "the guest's TSC runs at %u kHz; the destination's at %u kHz, and its KVM cannot "
             "scale it (no KVM_CAP_TSC_CONTROL)",
             n->tsc_khz, c->tsc_khz);
    return -ENOTSUP;
}

static int mig_hs_check_vmx(const struct mig_hs_need *n, const struct mig_hs_caps *c, char *why,
                            size_t why_size)
{
    for (unsigned i = 0; c->vmx_known && i < n->vmx_count; i++) {
        const struct mig_hs_msr *g = &n->vmx[i], *h = NULL;
        for (unsigned j = 0; j < c->vmx_count && !h; j++)
            h = c->vmx[j].index == g->index ? &c->vmx[j] : NULL;
        const char *name = nested_vmx_msr_name(g->index);
        if (!h) {
            snprintf(why, why_size,
                     "the guest was given %s; the destination's KVM does not report it (no "
                     "nested VMX)",
                     name);
            return -ENOTSUP;
        }
        uint64_t missing = nested_vmx_msr_missing(g->index, g->value, h->value);
        if (missing) {
            snprintf(why, why_size,
                     "the destination's KVM cannot give %s as the guest has it: bits 0x%llx "
                     "differ (guest 0x%llx, destination 0x%llx)",
                     name, (unsigned long long)missing, (unsigned long long)g->value,
                     (unsigned long long)h->value);
            return -ENOTSUP;
        }
    }
    return 0;
}

/* The CPU beyond CPUID's feature bits: the enlightenments, the VMX capability MSRs and the
 * TSC rate, each against what the destination said (not asked of an older one). */
static int mig_hs_check_cpu(const struct mig_hs_need *n, const struct mig_hs_caps *c, char *why,
                            size_t why_size)
{
    /* evmcs is judged by the need of an active eVMCS (n->evmcs, above): a guest whose eVMCS
     * was enabled but is not in use moves to a host without (KVM commit 323d73a8ec). */
    uint32_t missing =
        n->hyperv && c->hyperv_known ? n->hyperv_set & ~c->hyperv_set & ~HV_BIT(HV_EVMCS) : 0;
    if (n->hyperv && c->hyperv_known && !c->hyperv_set) {
        snprintf(why, why_size,
                 "the guest has Hyper-V enlightenments; the destination's KVM offers none "
                 "(KVM_CAP_HYPERV)");
        return -ENOTSUP;
    }
    if (missing) {
        const struct hyperv_feature_info *f = &hyperv_features[__builtin_ctz(missing)];
        snprintf(why, why_size,
                 "the guest has the Hyper-V enlightenment %s; the destination's KVM cannot give "
                 "it%s%s",
                 f->name, f->cap_name ? " (" : "", f->cap_name ? f->cap_name : "");
        if (f->cap_name)
            snprintf(why + strlen(why), why_size - strlen(why), ")");
        return -ENOTSUP;
    }
    if (mig_hs_check_vmx(n, c, why, why_size))
        return -ENOTSUP;
    return mig_hs_check_tsc(n, c, why, why_size);
}

int mig_hs_check(const struct mig_hs_need *n, const struct mig_hs_caps *c, char *why,
                 size_t why_size)
{
    if (n->stream_major != c->stream_major) {
        snprintf(why, why_size,
                 "stream format %u.%u cannot be read by a destination of format %u.x",
                 n->stream_major, n->stream_minor, c->stream_major);
        return -EPROTO;
    }
    if (mig_hs_check_format(n, mig_hs_stream_minor(n, c), why, why_size))
        return -ENOTSUP;
    if (c->disks_given && c->disks_given != n->disks) {
        snprintf(why, why_size,
                 "the destination was given --disk %u time(s); the VM has %u disk(s)",
                 c->disks_given, n->disks);
        return -EINVAL;
    }
    if (c->nets_given != n->nets) {
        snprintf(why, why_size,
                 "the VM has %u network device(s); the destination was given --net %u time(s) "
                 "(one TAP on that host for each)",
                 n->nets, c->nets_given);
        return -EINVAL;
    }
    unsigned conns = n->connections ? n->connections : 1;
    unsigned conns_max = c->connections_max ? c->connections_max : 1;
    if (conns > conns_max) {
        snprintf(why, why_size,
                 conns_max == 1 ? "--connections %u: the destination takes one connection (a tern "
                                  "before stream format 1.3)"
                                : "--connections %u: the destination takes at most %u",
                 conns, conns_max);
        return -ENOTSUP;
    }
    if (c->mem_exact && n->mem_size != c->mem_limit) {
        snprintf(why, why_size,
                 "the VM has %llu MiB of RAM; the destination was started with --mem %llu MiB",
                 (unsigned long long)(n->mem_size >> 20), (unsigned long long)(c->mem_limit >> 20));
        return -EINVAL;
    }
    if (n->mem_size > c->mem_limit) {
        snprintf(why, why_size,
                 "the VM has %llu MiB of RAM; the destination host has only %llu MiB",
                 (unsigned long long)(n->mem_size >> 20), (unsigned long long)(c->mem_limit >> 20));
        return -ENOMEM;
    }
    if (c->cpus_exact ? n->cpus != c->max_cpus : n->cpus > c->max_cpus) {
        snprintf(why, why_size, "the VM has %u vCPUs; the destination %s %u", n->cpus,
                 c->cpus_exact ? "was started with --cpus" : "takes at most", c->max_cpus);
        return -EINVAL;
    }
    if (n->xsave_size > c->xsave_size) {
        snprintf(
            why, why_size,
            "the VM's XSAVE state is %u bytes; the destination's KVM takes %u (KVM_CAP_XSAVE2)",
            n->xsave_size, c->xsave_size);
        return -ENOTSUP;
    }
    if (n->nested_size > c->nested_max) {
        snprintf(why, why_size,
                 c->nested_max ? "the VM carries %u bytes of nested state; the destination's "
                                 "KVM_CAP_NESTED_STATE is %u"
                               : "the VM carries %u bytes of nested state; the destination has no "
                                 "nested VMX (KVM_CAP_NESTED_STATE %u)",
                 n->nested_size, c->nested_max);
        return -ENOTSUP;
    }
    if (n->evmcs && !c->evmcs) {
        snprintf(why, why_size,
                 "the VM has an active enlightened VMCS; the destination lacks "
                 "KVM_CAP_HYPERV_ENLIGHTENED_VMCS");
        return -ENOTSUP;
    }
    if (mig_hs_check_cpu(n, c, why, why_size))
        return -ENOTSUP;
    for (unsigned k = 0; k < MIG_HS_FEATURE_REGS; k++) {
        uint32_t missing = n->features[k] & ~c->features[k];
        if (missing) {
            snprintf(why, why_size,
                     "the destination CPU lacks CPUID %s bit %d, which the guest was given",
                     mig_hs_feature_regs[k].name, __builtin_ctz(missing));
            return -ENOTSUP;
        }
    }
    return 0;
}
