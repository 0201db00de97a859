#include "migrate/mig_config.h"

#include "err/err.h"
#include "le/le.h"
#include "memory/mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One vCPU's CPUID table at p + *pos: u32 nent, then nent entries. */
static int mig_config_cpuid(const uint8_t *p, size_t len, size_t *pos, uint32_t i,
                            struct kvm_cpuid2 **out)
{
    if (len - *pos < 4)
        return err_set(-EPROTO, "record CONFIG: vCPU %u's CPUID is cut off", i);
    uint32_t nent = le_get32(p + *pos);
    *pos += 4;
    if (nent == 0 || nent > VCPU_CPUID_MAX_ENTRIES)
        return err_set(-EPROTO, "record CONFIG: vCPU %u has %u CPUID entries (1..%u)", i, nent,
                       VCPU_CPUID_MAX_ENTRIES);
    size_t bytes = (size_t)nent * sizeof(struct kvm_cpuid_entry2);
    if (len - *pos < bytes)
        return err_set(-EPROTO, "record CONFIG: vCPU %u's CPUID is cut off", i);
    if (!(*out = calloc(1, sizeof(struct kvm_cpuid2) + bytes)))
        return err_set(-ENOMEM, "out of memory");
    (*out)->nent = nent;
    memcpy((*out)->entries, p + *pos, bytes);
    *pos += bytes;
    return 0;
}

static int mig_config_decode(const uint8_t *p, size_t len, struct mig_config *cfg)
{
    if (len < MIG_CONFIG_MIN)
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
    size_t pos = MIG_CONFIG_MIN;
    for (uint32_t i = 0; i < cfg->cpu_count; i++) {
        int rc = mig_config_cpuid(p, len, &pos, i, &cfg->cpuid[i]);
        if (rc)
            return rc;
    }
    if (pos != len)
        return err_set(-EPROTO, "record CONFIG: %zu trailing bytes", len - pos);
    return 0;
}

int mig_config_parse(const uint8_t *p, size_t len, struct mig_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    int rc = mig_config_decode(p, len, cfg);
    if (rc) {
        /* Nothing of a refused CONFIG stays: no reader may loop over its vCPU count. */
        mig_config_free(cfg);
        memset(cfg, 0, sizeof(*cfg));
    }
    return rc;
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

int mig_write_config(struct vm *vm, struct mig_writer *w)
{
    unsigned n = vm_cpu_count(vm);
    size_t cap =
        MIG_CONFIG_MIN + n * (4 + VCPU_CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
    uint8_t *buf = calloc(1, cap);
    if (!buf)
        return err_set(-ENOMEM, "out of memory");
    uint64_t mem_size = vm_mem(vm)->size;
    memcpy(buf, &mem_size, 8);
    memcpy(buf + 8, &n, 4);
    size_t pos = MIG_CONFIG_MIN;
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
