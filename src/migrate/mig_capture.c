/* Capture: the stream's records written from a paused VM, in the table's order. */
#include "migrate/mig_capture.h"

#include "err/err.h"
#include "memory/mem.h"
#include "migrate/mig_config.h"
#include "migrate/mig_records.h"
#include "vm/vm_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int mig_capture_lane_begin(struct mig_capture *c, struct vm *vm, struct mig_writer *w,
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
    return mig_write_header(w);
}

int mig_capture_begin(struct mig_capture *c, struct vm *vm, struct mig_writer *w,
                      const struct mig_capture_options *opt)
{
    int rc = mig_capture_lane_begin(c, vm, w, opt);
    return rc ? rc : mig_write_config(vm, w);
}

int mig_capture_lane_end(struct mig_capture *c)
{
    struct mig_end end = {.records = c->w->records - c->records_before,
                          .vcpus = vm_cpu_count(c->vm),
                          .ram_pages = c->pages};
    return mig_write_record(c->w, MIG_REC_END, 0, &end, sizeof(end));
}

void mig_capture_end(struct mig_capture *c)
{
    free(c->zbuf);
    free(c->copy);
    c->zbuf = c->copy = NULL;
}

/* Rows [first, end) are a run of vCPU rows: all of them for vCPU 0, then for vCPU 1, ... */
static int mig_save_vcpus(struct mig_save *s, unsigned first, unsigned end, unsigned cpus)
{
    int rc = 0;
    for (unsigned cpu = 0; cpu < cpus && !rc; cpu++)
        for (unsigned k = first; k < end && !rc; k++)
            if (mig_record_written(&mig_record_types[k], s->w->minor))
                rc = mig_record_types[k].save(s, &mig_record_types[k], cpu);
    return rc;
}

/* Every row with a save, in table order; optional rows newer than the stream's format are left
 * out (its reader can do without them: that is what optional means). */
static int mig_save_rows(struct mig_save *s, unsigned cpus)
{
    int rc = 0;
    for (unsigned k = 0; k < mig_record_type_count && !rc;) {
        const struct mig_record_type *t = &mig_record_types[k];
        if (!mig_record_written(t, s->w->minor)) {
            k++;
            continue;
        }
        if (t->scope == MIG_SCOPE_VCPU) {
            unsigned end = k;
            while (end < mig_record_type_count && mig_record_types[end].scope == MIG_SCOPE_VCPU)
                end++;
            rc = mig_save_vcpus(s, k, end, cpus);
            k = end;
            continue;
        }
        for (unsigned i = 0; t->save && i < mig_record_instances(t, cpus) && !rc; i++)
            rc = t->save(s, t, i);
        k++;
    }
    return rc;
}

int mig_capture_state(struct mig_capture *c)
{
    struct vm_state *state = calloc(1, sizeof(*state));
    if (!state)
        return err_set(-ENOMEM, "out of memory");
    int rc = vm_state_save(c->vm, state);
    struct mig_save s = {.w = c->w, .vm = c->vm, .state = state};
    if (!rc)
        rc = mig_save_rows(&s, vm_cpu_count(c->vm));
    vm_state_free(state);
    free(state);
    return rc ? rc : mig_capture_lane_end(c);
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
