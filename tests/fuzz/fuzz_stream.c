/* libFuzzer target: any byte string as a tern state stream. The decoder must reject it with an
 * error or describe it; it must never crash, leak or read out of bounds. */
#include <stddef.h>
#include <stdint.h>

#include "migrate/mig_inspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mig_mem_source src = {.data = data, .len = size};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    json_t *summary = NULL;
    (void)mig_inspect(&r, &summary);
    json_decref(summary);
    mig_reader_free(&r);
    return 0;
}
