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

/* One disk at p + *pos. */
static int mig_config_disk(const uint8_t *p, size_t len, size_t *pos, unsigned i,
                           struct dev_disk *d)
{
    if (len - *pos < MIG_CONFIG_DISK_FIXED)
        return err_set(-EPROTO, "record CONFIG: disk %u is cut off", i);
    d->size = le_get64(p + *pos);
    uint32_t flags = le_get32(p + *pos + 8);
    size_t plen = le_get16(p + *pos + 12), slen = le_get16(p + *pos + 14);
    *pos += MIG_CONFIG_DISK_FIXED;
    if (flags & ~(MIG_CONFIG_DISK_READONLY | MIG_CONFIG_DISK_DIRECT))
        return err_set(-EPROTO, "record CONFIG: disk %u has unknown flags 0x%x", i, flags);
    if (d->size == 0 || d->size % 512)
        return err_set(-EPROTO, "record CONFIG: disk %u's size %llu is not a multiple of 512", i,
                       (unsigned long long)d->size);
    if (plen == 0 || plen >= DEV_DISK_PATH_MAX || slen > DEV_DISK_SERIAL_MAX)
        return err_set(-EPROTO,
                       "record CONFIG: disk %u's path (%zu bytes) or serial (%zu) is "
                       "out of bounds",
                       i, plen, slen);
    if (len - *pos < plen + slen)
        return err_set(-EPROTO, "record CONFIG: disk %u is cut off", i);
    memcpy(d->path, p + *pos, plen);
    memcpy(d->serial, p + *pos + plen, slen);
    if (memchr(d->path, 0, plen) || memchr(d->serial, 0, slen))
        return err_set(-EPROTO, "record CONFIG: disk %u's path or serial holds a NUL", i);
    *pos += plen + slen;
    d->readonly = flags & MIG_CONFIG_DISK_READONLY;
    d->direct = flags & MIG_CONFIG_DISK_DIRECT;
    d->incoming = true;
    return 0;
}

static int mig_config_disks(const uint8_t *p, size_t len, size_t *pos, struct mig_config *cfg)
{
    if (len - *pos < 4)
        return err_set(-EPROTO, "record CONFIG: the disk count is cut off");
    uint32_t n = le_get32(p + *pos);
    *pos += 4;
    if (n == 0 || n > DEV_MAX_DISKS)
        return err_set(-EPROTO, "record CONFIG: %u disks (1..%u)", n, DEV_MAX_DISKS);
    for (unsigned i = 0; i < n; i++) {
        int rc = mig_config_disk(p, len, pos, i, &cfg->disks[i]);
        if (rc)
            return rc;
    }
    cfg->disk_count = n;
    return 0;
}

static int mig_config_nets(const uint8_t *p, size_t len, size_t *pos, struct mig_config *cfg)
{
    if (len - *pos < 4)
        return err_set(-EPROTO, "record CONFIG: the network device count is cut off");
    uint32_t n = le_get32(p + *pos);
    *pos += 4;
    if (n == 0 || n > DEV_MAX_NETS)
        return err_set(-EPROTO, "record CONFIG: %u network devices (1..%u)", n, DEV_MAX_NETS);
    if (len - *pos < 8ull * n)
        return err_set(-EPROTO, "record CONFIG: the network devices are cut off");
    for (unsigned i = 0; i < n; i++, *pos += 8) {
        if ((p[*pos] & 1) || le_get16(p + *pos + 6))
            return err_set(-EPROTO, "record CONFIG: network device %u has a group MAC or a "
                           "non-zero pad", i);
        memcpy(cfg->net_mac[i], p + *pos, 6);
    }
    cfg->net_count = n;
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
    if (cfg->features & ~(MIG_CONFIG_F_DISKS | MIG_CONFIG_F_NETS))
        return err_set(-EPROTO, "record CONFIG: unknown features 0x%x", cfg->features);
    size_t pos = MIG_CONFIG_MIN;
    for (uint32_t i = 0; i < cfg->cpu_count; i++) {
        int rc = mig_config_cpuid(p, len, &pos, i, &cfg->cpuid[i]);
        if (rc)
            return rc;
    }
    if (cfg->features & MIG_CONFIG_F_DISKS) {
        int rc = mig_config_disks(p, len, &pos, cfg);
        if (rc)
            return rc;
    }
    if (cfg->features & MIG_CONFIG_F_NETS) {
        int rc = mig_config_nets(p, len, &pos, cfg);
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
    size_t cap = MIG_CONFIG_MIN +
                 n * (4 + VCPU_CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2)) +
                 MIG_CONFIG_DISKS_MAX;
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
    const struct dev_disk *disks;
    unsigned nd = vm_disks(vm, &disks);
    if (nd) { /* only then: a stream without disks stays readable by a tern before 1.4 */
        le_put32(buf + 12, MIG_CONFIG_F_DISKS);
        le_put32(buf + pos, nd);
        pos += 4;
        for (unsigned i = 0; i < nd; i++) {
            const struct dev_disk *d = &disks[i];
            size_t plen = strlen(d->path), slen = strlen(d->serial);
            le_put64(buf + pos, d->size);
            le_put32(buf + pos + 8, (d->readonly ? MIG_CONFIG_DISK_READONLY : 0) |
                                        (d->direct ? MIG_CONFIG_DISK_DIRECT : 0));
            le_put16(buf + pos + 12, (uint16_t)plen);
            le_put16(buf + pos + 14, (uint16_t)slen);
            memcpy(buf + pos + 16, d->path, plen);
            memcpy(buf + pos + 16 + plen, d->serial, slen);
            pos += 16 + plen + slen;
        }
    }
    const struct dev_net *nets;
    unsigned nn = vm_nets(vm, &nets);
    if (nn) { /* likewise: only a VM with network devices says so */
        le_put32(buf + 12, le_get32(buf + 12) | MIG_CONFIG_F_NETS);
        le_put32(buf + pos, nn);
        pos += 4;
        for (unsigned i = 0; i < nn; i++, pos += 8) {
            memcpy(buf + pos, nets[i].mac, 6);
            le_put16(buf + pos + 6, 0);
        }
    }
    int rc = mig_write_record(w, MIG_REC_CONFIG, 0, buf, pos);
    free(buf);
    return rc;
}
