/* Restore: every record to its row's load, then the staged KVM state in KVM's order. */
#include "migrate/mig_restore.h"

#include "err/err.h"
#include "migrate/mig_check.h"
#include "migrate/mig_ram.h"
#include "migrate/mig_records.h"
#include "nested/nested_state.h"
#include "vm/vm_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Reads records up to END, each to its row's load (with ram_only, RAM and RAM_SYNC alone are
 * allowed). Raw pages land in guest RAM with no copy between: a failed restore discards the
 * VM. */
static int mig_restore_records(struct mig_load *l, struct mig_reader *r,
                               const struct mig_config *cfg, bool ram_only)
{
    uint64_t pages = 0;
    int rc = 0;
    r->place = mig_ram_place;
    r->place_opaque = l->vm;
    while (!rc) {
        struct mig_record rec;
        if ((rc = mig_read_record(r, &rec)) || (rc = mig_check_in_stream(&rec, r, cfg, &pages)) ||
            rec.type == MIG_REC_END)
            break;
        const struct mig_record_type *t = mig_record_find(rec.type);
        if (ram_only && t->scope != MIG_SCOPE_RAM && rec.type != MIG_REC_RAM_SYNC) {
            char what[96];
            mig_record_describe(&rec, what, sizeof(what));
            rc = err_set(-EPROTO, "%s on a connection that carries only RAM", what);
        } else if (t->load) {
            rc = t->load(l, t, &rec);
        }
    }
    r->place = NULL;
    return rc;
}

int mig_restore_ram_stream(struct vm *vm, struct mig_reader *r, const struct mig_config *cfg,
                           const struct mig_sync *sync, struct mig_restore_info *info)
{
    struct mig_load l = {.vm = vm, .info = info, .sync = sync};
    int rc = mig_read_header(r);
    return rc ? rc : mig_restore_records(&l, r, cfg, true);
}

/* What came in VMX operation, for the caller's report. */
static void mig_restore_count_nested(const struct vm_state *s, struct mig_restore_info *info)
{
    for (unsigned i = 0; i < s->cpu_count; i++) {
        const struct vcpu_state *v = &s->vcpus[i];
        struct nested_header h;
        if (!vcpu_state_has(v, VCPU_NESTED) || nested_parse_header(v->nested, v->nested_len, &h))
            continue;
        info->nested_vcpus++;
        info->guest_mode_vcpus += (h.flags & KVM_STATE_NESTED_GUEST_MODE) != 0;
        if (v->nested_len > info->nested_bytes)
            info->nested_bytes = v->nested_len;
    }
}

int mig_restore(struct vm *vm, struct mig_reader *r, const struct mig_config *cfg,
                const struct mig_sync *sync, struct mig_restore_info *info)
{
    struct mig_restore_info local = {0};
    if (!info)
        info = &local;
    memset(info, 0, sizeof(*info));
    struct vm_state *state = calloc(1, sizeof(*state));
    if (!state)
        return err_set(-ENOMEM, "out of memory");
    state->cpu_count = cfg->cpu_count;
    struct mig_load l = {.vm = vm, .state = state, .info = info, .sync = sync};
    int rc = mig_restore_records(&l, r, cfg, false);
    if (!rc)
        rc = vm_state_restore(vm, state, cfg->cpuid);
    if (!rc)
        mig_restore_count_nested(state, info);
    vm_state_free(state);
    free(state);
    return rc;
}
