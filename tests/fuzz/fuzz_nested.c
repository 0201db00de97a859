/* libFuzzer target: any byte string as a vCPU's nested-state record. Validation must accept or
 * refuse it without reading out of bounds, and whatever it accepts must decode. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nested/nested_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (nested_validate(data, size, NESTED_MAX_SIZE))
        return 0;
    struct nested_header h;
    if (nested_parse_header(data, size, &h))
        __builtin_trap(); /* validated yet undecodable */
    (void)nested_needed(&h);
    (void)nested_needs_evmcs(&h);
    char flags[128];
    nested_describe_flags(&h, flags, sizeof(flags));
    struct nested_vmcs12_summary s;
    (void)nested_vmcs12_summary(data, size, &s);
    return 0;
}
