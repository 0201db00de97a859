#include "migrate/mig_check.h"

#include "err/err.h"

#include <errno.h>
#include <string.h>

/* END announces the records before it (CONFIG included, as the writer counted), the vCPUs and
 * the pages; r->records counts the same way. */
static int mig_check_end(const struct mig_record *rec, const struct mig_reader *r,
                         const struct mig_config *cfg, uint64_t ram_pages, const char *what)
{
    struct mig_end end;
    memcpy(&end, rec->payload, sizeof(end));
    if (end.records == r->records && end.vcpus == cfg->cpu_count && end.ram_pages == ram_pages)
        return 0;
    return err_set(-EPROTO,
                   "%s: counts do not match: %u records, %u vCPUs, %llu pages announced; %u, "
                   "%u, %llu received",
                   what, end.records, end.vcpus, (unsigned long long)end.ram_pages, r->records,
                   cfg->cpu_count, (unsigned long long)ram_pages);
}

int mig_check_in_stream(const struct mig_record *rec, const struct mig_reader *r,
                        const struct mig_config *cfg, uint64_t *ram_pages)
{
    const struct mig_record_type *t = mig_record_find(rec->type);
    char what[96];
    mig_record_describe(rec, what, sizeof(what));
    if (!t) /* mig_read_record returns none such */
        return err_set(-EPROTO, "%s: unknown record", what);
    if (rec->type == MIG_REC_CONFIG)
        return err_set(-EPROTO, "%s: a second CONFIG record", what);
    if (t->scope == MIG_SCOPE_VCPU && rec->index >= cfg->cpu_count)
        return err_set(-EPROTO, "%s: the VM has only %u vCPUs", what, cfg->cpu_count);
    int rc = t->verify ? t->verify(rec, what) : 0;
    if (rc)
        return rc;
    if (t->scope == MIG_SCOPE_RAM) {
        struct mig_ram_header h;
        memcpy(&h, rec->payload, sizeof(h));
        *ram_pages += h.pages;
    }
    return rec->type == MIG_REC_END ? mig_check_end(rec, r, cfg, *ram_pages, what) : 0;
}
