/* libFuzzer target: any byte string as a tern state stream, through the whole of `tern inspect`:
 * the decoder must reject it with an error or describe it, and the description must print; it
 * must never crash, leak, read out of bounds, or take long (scripts/test.sh gives each input
 * 10 s: a CONFIG claiming 4,294,967,295 vCPUs once made inspect spin for minutes). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "migrate/mig_inspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    if (!sink)
        sink = fopen("/dev/null", "w");
    struct mig_mem_source src = {.data = data, .len = size};
    struct mig_reader r;
    mig_reader_init(&r, mig_mem_source, &src);
    json_t *summary = NULL;
    if (mig_inspect(&r, &summary) == 0 && sink)
        mig_inspect_print(summary, sink);
    json_decref(summary);
    mig_reader_free(&r);
    return 0;
}
