/* order: a sequence of steps kept as data, each naming the earlier steps it must follow and
 * why, and the check that a sequence keeps its own rules. Pure. vcpu_state.c and vm_state.c
 * write their restore orders this way; tests/unit/test_restore_order.c checks them.
 */
#ifndef TERN_ORDER_H
#define TERN_ORDER_H

#include <stddef.h>
#include <stdint.h>

#define ORDER_AFTER(step) (1u << (step))

struct order_rule {
    const char *name; /* as docs/stream-format.md lists it */
    uint32_t after;   /* ORDER_AFTER(i) for each step i that must come first */
    const char *why;  /* the reason, beside the rule */
};

/* n steps, stride bytes apart, each starting with a struct order_rule. 0 when each comes after
 * every step its mask names; else -EINVAL with a message naming the rule broken. */
int order_check(const char *what, const void *steps, size_t stride, unsigned n);

#endif
