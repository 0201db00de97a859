/* The record table (src/migrate/mig_records.h): its own consistency, its agreement with the
 * state it carries and with docs/stream-format.md, and the VM and vCPU rows' save and load on
 * states shaped like KVM's. */
#include <criterion/criterion.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/dev.h"
#include "err/err.h"
#include "migrate/mig_check.h"
#include "migrate/mig_records.h"
#include "migrate/mig_restore.h"
#include "migrate/mig_stream.h"
#include "vcpu/vcpu_state.h"
#include "vm/vm_state.h"

Test(records, every_row_is_whole_and_unique)
{
    cr_assert_geq(mig_record_type_count, 25);
    for (unsigned i = 0; i < mig_record_type_count; i++) {
        const struct mig_record_type *t = &mig_record_types[i];
        cr_expect(t->name && t->name[0], "row %u has no name", i);
        cr_expect_leq(t->min_len, t->max_len, "%s", t->name);
        cr_expect_leq(t->max_len, MIG_MAX_RECORD, "%s", t->name);
        cr_expect_leq(t->since, MIG_VERSION_MINOR, "%s", t->name);
        cr_expect_eq(mig_record_find(t->type), t, "%s: its number finds it", t->name);
        for (unsigned j = 0; j < i; j++) {
            cr_expect_neq(t->type, mig_record_types[j].type, "%s", t->name);
            cr_expect_str_neq(t->name, mig_record_types[j].name);
        }
        bool state =
            t->scope == MIG_SCOPE_VM || t->scope == MIG_SCOPE_VCPU || t->scope == MIG_SCOPE_DEVICE;
        cr_expect(!state || (t->save && t->load), "%s: a state record saves and loads", t->name);
        cr_expect((t->scope == MIG_SCOPE_DEVICE) == (t->dev != NULL), "%s: device", t->name);
        if (t->dev)
            cr_expect_eq(t->max_len, t->dev->state_max, "%s: the device's own limit", t->name);
    }
    cr_expect_null(mig_record_find(0x6abc));
    cr_expect_null(mig_record_name(0x6abc));
}

Test(records, the_vcpu_rows_are_one_run_and_name_their_items)
{
    unsigned runs = 0;
    for (unsigned i = 0; i < mig_record_type_count; i++) {
        const struct mig_record_type *t = &mig_record_types[i];
        if (t->scope == MIG_SCOPE_VCPU) {
            runs += i == 0 || mig_record_types[i - 1].scope != MIG_SCOPE_VCPU;
            cr_expect_str_eq(vcpu_item_name(t->item), t->name);
        }
        if (t->scope == MIG_SCOPE_VM)
            cr_expect_str_eq(vm_item_name(t->item), t->name);
    }
    cr_expect_eq(runs, 1, "capture writes one run of vCPU records per vCPU");
    cr_expect_eq(mig_record_instances(mig_record_find(MIG_REC_IRQCHIP), 4), VM_IRQCHIPS);
    cr_expect_eq(mig_record_instances(mig_record_find(MIG_REC_REGS), 4), 4);
    cr_expect_eq(mig_record_instances(mig_record_find(MIG_REC_SERIAL), 4), 1);
}

Test(records, optional_ones_are_written_without_the_mandatory_flag)
{
    const uint16_t optional[] = {MIG_REC_RTC, MIG_REC_ACPI_PM, MIG_REC_EVMCS, MIG_REC_SWITCHOVER};
    for (unsigned i = 0; i < mig_record_type_count; i++) {
        uint16_t type = mig_record_types[i].type;
        bool want = false;
        for (size_t k = 0; k < sizeof(optional) / sizeof(optional[0]); k++)
            want |= optional[k] == type;
        cr_expect_eq(mig_record_default_flags(type), want ? 0 : MIG_REC_MANDATORY, "%s",
                     mig_record_types[i].name);
    }
}

/* docs/stream-format.md's record table: "| 0x0042 | REGS | vCPU | ... |". */
static bool doc_row(uint16_t type, const char *name, char *line, size_t size)
{
    FILE *f = fopen(TERN_SOURCE_DIR "/docs/stream-format.md", "r");
    cr_assert(f, "cannot open docs/stream-format.md");
    char want[64];
    snprintf(want, sizeof(want), "| 0x%04x | %s |", type, name);
    bool found = false;
    while (!found && fgets(line, (int)size, f))
        found = !strncmp(line, want, strlen(want));
    fclose(f);
    return found;
}

Test(records, the_stream_format_document_describes_every_row)
{
    char line[2048];
    for (unsigned i = 0; i < mig_record_type_count; i++) {
        const struct mig_record_type *t = &mig_record_types[i];
        if (!doc_row(t->type, t->name, line, sizeof(line))) {
            cr_expect_fail("docs/stream-format.md has no row | 0x%04x | %s |", t->type, t->name);
            continue;
        }
        bool optional = t->flags & MIG_OPTIONAL;
        cr_expect_eq(strstr(line, "*optional") != NULL, optional, "%s: optional", t->name);
        char since[32];
        snprintf(since, sizeof(since), "since 1.%u", t->since);
        cr_expect_eq(strstr(line, since) != NULL, t->since > 0, "%s: '%s'", t->name, since);
    }
    /* And no row the table lacks. */
    FILE *f = fopen(TERN_SOURCE_DIR "/docs/stream-format.md", "r");
    unsigned listed = 0, number;
    char name[64];
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "| 0x%x | %63[A-Z0-9_] |", &number, name) == 2) {
            listed++;
            cr_expect_str_eq(mig_record_name((uint16_t)number) ? mig_record_name((uint16_t)number)
                                                               : "(none)",
                             name, "the document's 0x%04x", number);
        }
    fclose(f);
    cr_expect_eq(listed, mig_record_type_count);
}

struct membuf {
    uint8_t *data;
    size_t len;
};

static int membuf_sink(void *opaque, const void *buf, size_t len)
{
    struct membuf *m = opaque;
    m->data = realloc(m->data, m->len + len);
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

/* A state of two vCPUs, each item's bytes a pattern of its own. */
static void fill(struct vm_state *s)
{
    static uint8_t bytes[8192];
    s->cpu_count = 2;
    for (unsigned item = 0; item < VM_ITEMS; item++)
        for (unsigned i = 0; i < vm_item_instances(item); i++) {
            size_t len = item == VM_IRQCHIP ? sizeof(struct kvm_irqchip)
                         : item == VM_PIT2  ? sizeof(struct kvm_pit_state2)
                                            : sizeof(struct kvm_clock_data);
            memset(bytes, 0x10 + item * 4 + i, len);
            if (item == VM_IRQCHIP)
                ((struct kvm_irqchip *)bytes)->chip_id = i;
            cr_assert_eq(vm_state_put(s, item, i, bytes, len), 0, "%s", err_msg());
        }
    for (unsigned cpu = 0; cpu < 2; cpu++)
        for (unsigned r = 0; r < mig_record_type_count; r++) {
            const struct mig_record_type *t = &mig_record_types[r];
            if (t->scope != MIG_SCOPE_VCPU || t->type == MIG_REC_SREGS)
                continue;
            size_t len = t->type == MIG_REC_MSRS ? 3 * sizeof(struct kvm_msr_entry) : t->min_len;
            memset(bytes, 0x40 + r + cpu, len);
            if (t->type == MIG_REC_NESTED_STATE)
                *(struct kvm_nested_state *)bytes =
                    (struct kvm_nested_state){.format = KVM_STATE_NESTED_FORMAT_VMX,
                                              .size = 128,
                                              .hdr.vmx = {.vmxon_pa = 0x7000, .vmcs12_pa = ~0ull}};
            cr_assert_eq(vcpu_state_put(&s->vcpus[cpu], t->item, bytes, len), 0, "%s: %s", t->name,
                         err_msg());
        }
}

Test(records, vm_and_vcpu_rows_save_and_load_what_they_carry)
{
    struct vm_state *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    fill(a);
    struct membuf m = {0};
    struct mig_writer w;
    mig_writer_init(&w, membuf_sink, &m);
    cr_assert_eq(mig_write_header(&w), 0);
    struct mig_save s = {.w = &w, .state = a};
    for (unsigned r = 0; r < mig_record_type_count; r++) {
        const struct mig_record_type *t = &mig_record_types[r];
        if (t->scope != MIG_SCOPE_VM && t->scope != MIG_SCOPE_VCPU)
            continue;
        for (unsigned i = 0; i < mig_record_instances(t, 2); i++)
            cr_assert_eq(t->save(&s, t, i), 0, "%s: %s", t->name, err_msg());
    }
    /* Read back through the table's loads, checked as a restore checks them. */
    struct mig_mem_source src = {.data = m.data, .len = m.len};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    cr_assert_eq(mig_read_header(&r), 0);
    struct mig_restore_info info = {0};
    struct mig_load l = {.state = b, .info = &info};
    struct mig_config cfg = {.mem_size = 1 << 20, .cpu_count = 2};
    uint64_t pages = 0;
    unsigned records = 0;
    b->cpu_count = 2;
    while (src.pos < src.len) {
        struct mig_record rec;
        cr_assert_eq(mig_read_record(&r, &rec), 0, "%s", err_msg());
        cr_assert_eq(mig_check_in_stream(&rec, &r, &cfg, &pages), 0, "%s", err_msg());
        const struct mig_record_type *t = mig_record_find(rec.type);
        cr_assert_eq(t->load(&l, t, &rec), 0, "%s", err_msg());
        records++;
    }
    cr_expect_eq(records, VM_IRQCHIPS + 2 + 2 * 12, "SREGS is not written: the state has SREGS2");
    for (unsigned item = 0; item < VM_ITEMS; item++)
        for (unsigned i = 0; i < vm_item_instances(item); i++) {
            size_t la, lb;
            const void *pa = vm_state_get(a, item, i, &la), *pb = vm_state_get(b, item, i, &lb);
            cr_assert(pa && pb && la == lb && !memcmp(pa, pb, la), "%s %u", vm_item_name(item), i);
        }
    for (unsigned cpu = 0; cpu < 2; cpu++)
        for (unsigned item = 0; item < VCPU_ITEMS; item++) {
            size_t la = 0, lb = 0;
            const void *pa = vcpu_state_get(&a->vcpus[cpu], item, &la);
            const void *pb = vcpu_state_get(&b->vcpus[cpu], item, &lb);
            cr_expect((!pa && !pb) || (pa && pb && la == lb && !memcmp(pa, pb, la)), "vCPU %u %s",
                      cpu, vcpu_item_name(item));
        }
    mig_reader_free(&r);
    free(m.data);
    vm_state_free(a);
    vm_state_free(b);
    free(a);
    free(b);
}

Test(records, a_load_refuses_a_length_its_item_cannot_have)
{
    struct vcpu_state v = {0};
    uint8_t bytes[64] = {0};
    cr_expect_lt(vcpu_state_put(&v, VCPU_REGS, bytes, 7), 0);
    cr_expect(strstr(err_msg(), "REGS: 7 bytes"), "%s", err_msg());
    cr_expect_lt(vcpu_state_put(&v, VCPU_MSRS, bytes, 17), 0);
    cr_expect_lt(vcpu_state_put(&v, VCPU_XSAVE, bytes, 64), 0);
    cr_expect_eq(v.have, 0);
    struct vm_state *s = calloc(1, sizeof(*s));
    cr_expect_lt(vm_state_put(s, VM_IRQCHIP, VM_IRQCHIPS, bytes, sizeof(struct kvm_irqchip)), 0);
    cr_expect_lt(vm_state_put(s, VM_PIT2, 0, bytes, 8), 0);
    cr_expect_eq(s->have[VM_IRQCHIP] | s->have[VM_PIT2], 0);
    free(s);
}

static int sync_reached(void *opaque, unsigned party, const struct mig_ram_sync *sync)
{
    unsigned *seen = opaque;
    *seen = party * 100 + sync->pass;
    return sync->pass == 7 ? err_set(-EPROTO, "pass 7 refused") : 0;
}

/* RAM_SYNC reaches the migration's barrier through its row, and nothing else takes one. */
Test(records, ram_sync_goes_to_the_barrier_and_only_there)
{
    const struct mig_record_type *t = mig_record_find(MIG_REC_RAM_SYNC);
    cr_assert(t && t->load);
    struct mig_ram_sync payload = {.pass = 3, .connections = 4};
    struct mig_record rec = {.type = MIG_REC_RAM_SYNC,
                             .length = sizeof(payload),
                             .payload = (uint8_t *)&payload,
                             .offset = 4096};
    struct mig_load l = {0};
    cr_expect_lt(t->load(&l, t, &rec), 0);
    cr_expect(strstr(err_msg(), "record RAM_SYNC at offset 4096: only a migration over several "
                                "connections has these"),
              "%s", err_msg());
    unsigned seen = 0;
    struct mig_sync sync = {.reached = sync_reached, .opaque = &seen, .party = 2};
    l.sync = &sync;
    cr_expect_eq(t->load(&l, t, &rec), 0, "%s", err_msg());
    cr_expect_eq(seen, 203);
    payload.pass = 7;
    cr_expect_lt(t->load(&l, t, &rec), 0);
    cr_expect(strstr(err_msg(), "record RAM_SYNC at offset 4096: pass 7 refused"), "%s", err_msg());
}
