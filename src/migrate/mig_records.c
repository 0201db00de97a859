/* The record table (mig_records.h) and the generic save and load of each scope. */
#include "migrate/mig_records.h"

#include "clock/clock.h"
#include "devices/dev_acpi_pm.h"
#include "devices/dev_rtc.h"
#include "devices/dev_serial.h"
#include "devices/dev_virtio_blk.h"
#include "devices/dev_virtio_net.h"
#include "err/err.h"
#include "kvm/kvm_host.h"
#include "migrate/mig_config.h"
#include "migrate/mig_ram.h"
#include "migrate/mig_restore.h"
#include "migrate/mig_stream.h"
#include "nested/nested_state.h"
#include "vcpu/vcpu_state.h"
#include "vm/vm_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- the generic saves and loads ------------------------------------------------------- */

/* Adds the record's name and offset to an error from its loader. */
static int mig_load_context(int rc, const struct mig_record *rec)
{
    char what[96];
    mig_record_describe(rec, what, sizeof(what));
    return err_context(rc, "%s", what);
}

static int mig_save_vcpu(struct mig_save *s, const struct mig_record_type *t, unsigned index)
{
    size_t len;
    const void *p = vcpu_state_get(&s->state->vcpus[index], t->item, &len);
    return p ? mig_write_record(s->w, t->type, index, p, len) : 0;
}

static int mig_load_vcpu(struct mig_load *l, const struct mig_record_type *t,
                         const struct mig_record *rec)
{
    int rc = vcpu_state_put(&l->state->vcpus[rec->index], t->item, rec->payload, rec->length);
    return rc ? mig_load_context(rc, rec) : 0;
}

static int mig_save_vm(struct mig_save *s, const struct mig_record_type *t, unsigned index)
{
    size_t len;
    const void *p = vm_state_get(s->state, t->item, index, &len);
    return p ? mig_write_record(s->w, t->type, index, p, len) : 0;
}

static int mig_load_vm(struct mig_load *l, const struct mig_record_type *t,
                       const struct mig_record *rec)
{
    int rc = vm_state_put(l->state, t->item, rec->index, rec->payload, rec->length);
    return rc ? mig_load_context(rc, rec) : 0;
}

static int mig_save_device(struct mig_save *s, const struct mig_record_type *t, unsigned index)
{
    (void)index;
    uint8_t *buf = malloc(t->max_len);
    if (!buf)
        return err_set(-ENOMEM, "out of memory");
    int rc = 0;
    unsigned n = vm_device_instances(s->vm, t->dev);
    for (unsigned i = 0; i < n && !rc; i++) {
        size_t len = 0;
        rc = vm_device_save(s->vm, t->dev, i, buf, &len);
        if (!rc)
            rc = mig_write_record(s->w, t->type, i, buf, len);
    }
    free(buf);
    return rc;
}

/* A device record: the device checks its own bytes, and the error names the record. */
static int mig_load_device(struct mig_load *l, const struct mig_record_type *t,
                           const struct mig_record *rec)
{
    int rc = vm_device_load(l->vm, t->dev, rec->index, rec->payload, rec->length);
    return rc ? mig_load_context(rc, rec) : 0;
}

static int mig_load_sync(struct mig_load *l, const struct mig_record_type *t,
                         const struct mig_record *rec)
{
    (void)t;
    struct mig_ram_sync sync;
    memcpy(&sync, rec->payload, sizeof(sync));
    char what[96];
    mig_record_describe(rec, what, sizeof(what));
    if (!l->sync)
        return err_set(-EPROTO, "%s: only a migration over several connections has these", what);
    int rc = l->sync->reached(l->sync->opaque, l->sync->party, &sync);
    return rc ? err_context(rc, "%s", what) : 0;
}

static int mig_load_switchover(struct mig_load *l, const struct mig_record_type *t,
                               const struct mig_record *rec)
{
    (void)t;
    (void)rec;
    l->info->switchover_ns = clock_now_ns();
    return 0;
}

/* ---- payload rules --------------------------------------------------------------------- */

static int mig_check_msrs(const struct mig_record *rec, const char *what)
{
    if (rec->length % sizeof(struct kvm_msr_entry))
        return err_set(-EPROTO, "%s: length %u is not a whole number of MSR entries", what,
                       rec->length);
    return 0;
}

static int mig_check_irqchip_index(const struct mig_record *rec, const char *what)
{
    if (rec->index >= VM_IRQCHIPS)
        return err_set(-EPROTO, "%s: no irqchip %u (0: PIC master, 1: slave, 2: IOAPIC)", what,
                       rec->index);
    return 0;
}

static int mig_verify_irqchip(const struct mig_record *rec, const char *what)
{
    struct kvm_irqchip chip;
    memcpy(&chip, rec->payload, sizeof(chip));
    if (chip.chip_id != rec->index)
        return err_set(-EPROTO, "%s: holds chip %u", what, chip.chip_id);
    return 0;
}

/* Every rule that does not depend on the host; the host's size limit is checked where the
 * state is set. */
static int mig_verify_nested(const struct mig_record *rec, const char *what)
{
    int rc = nested_validate(rec->payload, rec->length, VCPU_NESTED_MAX);
    return rc ? err_context(rc, "%s", what) : 0;
}

/* ---- the table ------------------------------------------------------------------------- */

#define SIZE(type) sizeof(struct type)
#define ROW_CONFIG .save = NULL
#define ROW_RAM .check = mig_ram_check, .load = mig_ram_load
#define ROW_DEVICE(ops) .dev = &ops, .save = mig_save_device, .load = mig_load_device
#define ROW_VM(it) .item = it, .save = mig_save_vm, .load = mig_load_vm
#define ROW_VCPU(it) .item = it, .save = mig_save_vcpu, .load = mig_load_vcpu
#define ROW_SWITCHOVER .load = mig_load_switchover
#define ROW_SYNC .load = mig_load_sync
#define ROW_END .save = NULL
#define MIG_RECORD_ROW(NAME, NUMBER, SCOPE, FLAGS, SINCE, MIN, MAX, ...)                           \
    {.type = NUMBER,                                                                               \
     .name = #NAME,                                                                                \
     .scope = MIG_SCOPE_##SCOPE,                                                                   \
     .flags = FLAGS,                                                                               \
     .since = SINCE,                                                                               \
     .min_len = MIN,                                                                               \
     .max_len = MAX,                                                                               \
     __VA_ARGS__},

const struct mig_record_type mig_record_types[] = {MIG_RECORD_TABLE(MIG_RECORD_ROW)};
const unsigned mig_record_type_count = sizeof(mig_record_types) / sizeof(mig_record_types[0]);

const struct mig_record_type *mig_record_find(uint16_t type)
{
    for (unsigned i = 0; i < mig_record_type_count; i++)
        if (mig_record_types[i].type == type)
            return &mig_record_types[i];
    return NULL;
}

const char *mig_record_name(uint16_t type)
{
    const struct mig_record_type *t = mig_record_find(type);
    return t ? t->name : NULL;
}

bool mig_record_is_ram(uint16_t type)
{
    const struct mig_record_type *t = mig_record_find(type);
    return t && t->scope == MIG_SCOPE_RAM;
}

bool mig_record_is_per_vcpu(uint16_t type)
{
    const struct mig_record_type *t = mig_record_find(type);
    return t && t->scope == MIG_SCOPE_VCPU;
}

uint16_t mig_record_default_flags(uint16_t type)
{
    const struct mig_record_type *t = mig_record_find(type);
    return t && (t->flags & MIG_OPTIONAL) ? 0 : MIG_REC_MANDATORY;
}

bool mig_record_written(const struct mig_record_type *t, unsigned minor)
{
    return !(t->flags & MIG_OPTIONAL) || t->since <= minor;
}

unsigned mig_record_instances(const struct mig_record_type *t, unsigned cpus)
{
    if (t->scope == MIG_SCOPE_VCPU)
        return cpus;
    return t->scope == MIG_SCOPE_VM ? vm_item_instances(t->item) : 1;
}
