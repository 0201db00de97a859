#include "order/order.h"

#include "err/err.h"

#include <errno.h>

static const struct order_rule *order_at(const void *steps, size_t stride, unsigned i)
{
    return (const struct order_rule *)((const char *)steps + (size_t)i * stride);
}

int order_check(const char *what, const void *steps, size_t stride, unsigned n)
{
    if (n > 32)
        return err_set(-EINVAL, "%s: %u steps, more than a mask holds", what, n);
    for (unsigned i = 0; i < n; i++) {
        const struct order_rule *r = order_at(steps, stride, i);
        for (unsigned j = i; j < n; j++)
            if (r->after & ORDER_AFTER(j))
                return err_set(-EINVAL, "%s: step %s must follow %s (%s), which comes later", what,
                               r->name, order_at(steps, stride, j)->name, r->why);
    }
    return 0;
}
