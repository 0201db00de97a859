/* The items of a vcpu_state: where each lives and which lengths it may have. */
#include "vcpu/vcpu_state.h"

#include "err/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define VCPU_FIELD(f) offsetof(struct vcpu_state, f), sizeof(((struct vcpu_state *)0)->f)

/* Fixed-size items live inside the state; the others (size 0 here) are allocated. */
static const struct {
    const char *name;
    size_t offset, size;
} vcpu_items[VCPU_ITEMS] = {
    [VCPU_MP_STATE] = {"MP_STATE", VCPU_FIELD(mp)},
    [VCPU_EVENTS] = {"VCPU_EVENTS", VCPU_FIELD(events)},
    [VCPU_REGS] = {"REGS", VCPU_FIELD(regs)},
    [VCPU_XSAVE] = {"XSAVE", 0, 0},
    [VCPU_XCRS] = {"XCRS", VCPU_FIELD(xcrs)},
    [VCPU_SREGS2] = {"SREGS2", VCPU_FIELD(sregs2)},
    [VCPU_SREGS] = {"SREGS", VCPU_FIELD(sregs)},
    [VCPU_MSRS] = {"MSRS", 0, 0},
    [VCPU_LAPIC] = {"LAPIC", VCPU_FIELD(lapic)},
    [VCPU_DEBUGREGS] = {"DEBUGREGS", VCPU_FIELD(debugregs)},
    [VCPU_TSC_KHZ] = {"TSC_KHZ", VCPU_FIELD(tsc_khz)},
    [VCPU_EVMCS] = {"EVMCS", VCPU_FIELD(evmcs)},
    [VCPU_NESTED] = {"NESTED_STATE", 0, 0},
};

bool vcpu_state_has(const struct vcpu_state *s, enum vcpu_item item)
{
    return s->have & (1u << item);
}

const void *vcpu_state_get(const struct vcpu_state *s, enum vcpu_item item, size_t *len)
{
    if (!vcpu_state_has(s, item))
        return NULL;
    switch (item) {
    case VCPU_XSAVE:
        *len = s->xsave_len;
        return s->xsave;
    case VCPU_MSRS:
        *len = s->nmsrs * sizeof(s->msrs[0]);
        return s->msrs;
    case VCPU_NESTED:
        *len = s->nested_len;
        return s->nested;
    default:
        *len = vcpu_items[item].size;
        return (const uint8_t *)s + vcpu_items[item].offset;
    }
}

/* The lengths a variable item may have. */
static bool vcpu_item_len_ok(enum vcpu_item item, size_t len)
{
    switch (item) {
    case VCPU_XSAVE:
        return len >= KVM_XSAVE_LEGACY_SIZE && len <= VCPU_XSAVE_MAX;
    case VCPU_MSRS:
        return len % sizeof(struct kvm_msr_entry) == 0 && len <= VCPU_MSRS_MAX_BYTES;
    case VCPU_NESTED:
        return len >= sizeof(struct kvm_nested_state) && len <= VCPU_NESTED_MAX;
    default:
        return len == vcpu_items[item].size;
    }
}

/* Replaces *slot with a copy of data. */
static int vcpu_item_copy(void *slot, const void *data, size_t len)
{
    void *copy = malloc(len ? len : 1);
    if (!copy)
        return err_set(-ENOMEM, "out of memory");
    memcpy(copy, data, len);
    free(*(void **)slot);
    *(void **)slot = copy;
    return 0;
}

int vcpu_state_put(struct vcpu_state *s, enum vcpu_item item, const void *data, size_t len)
{
    if (item >= VCPU_ITEMS || !vcpu_item_len_ok(item, len))
        return err_set(-EPROTO, "%s: %zu bytes is not a length it can have",
                       item < VCPU_ITEMS ? vcpu_items[item].name : "vCPU state", len);
    int rc = 0;
    switch (item) {
    case VCPU_XSAVE:
        if (!(rc = vcpu_item_copy(&s->xsave, data, len)))
            s->xsave_len = (uint32_t)len;
        break;
    case VCPU_MSRS:
        if (!(rc = vcpu_item_copy(&s->msrs, data, len)))
            s->nmsrs = (uint32_t)(len / sizeof(s->msrs[0]));
        break;
    case VCPU_NESTED:
        if (!(rc = vcpu_item_copy(&s->nested, data, len)))
            s->nested_len = (uint32_t)len;
        break;
    default:
        memcpy((uint8_t *)s + vcpu_items[item].offset, data, len);
        break;
    }
    if (!rc)
        s->have |= 1u << item;
    return rc;
}

void vcpu_state_free(struct vcpu_state *s)
{
    free(s->xsave);
    free(s->msrs);
    free(s->nested);
    memset(s, 0, sizeof(*s));
}

const char *vcpu_item_name(enum vcpu_item item)
{
    return item < VCPU_ITEMS ? vcpu_items[item].name : "?";
}
