/* libFuzzer target: any byte string as the JSON line a migration peer sends first — a source's
 * hello (with its optional "connections"), a destination's answer with its capabilities, or a
 * further connection's join. Parsing must accept or refuse without crashing; whatever it
 * accepts must survive a round trip and a check against the other side. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "migrate/mig_handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *msg = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!msg)
        return 0;
    struct mig_hs_need need, need2;
    struct mig_hs_caps caps, caps2;
    bool have_need = mig_hs_need_from_json(json_object_get(msg, "hello"), &need) == 0;
    bool have_caps = mig_hs_caps_from_json(json_object_get(msg, "caps"), &caps) == 0;
    if (have_need) {
        json_t *again = mig_hs_need_to_json(&need);
        if (!again || mig_hs_need_from_json(again, &need2) ||
            need2.connections != need.connections || need2.mem_size != need.mem_size ||
            need2.cpus != need.cpus)
            __builtin_trap(); /* accepted, yet not what it says again */
        json_decref(again);
    }
    if (have_caps) {
        json_t *again = mig_hs_caps_to_json(&caps);
        if (!again || mig_hs_caps_from_json(again, &caps2) ||
            caps2.connections_max != caps.connections_max)
            __builtin_trap();
        json_decref(again);
    }
    if (have_need && have_caps) {
        char why[512];
        (void)mig_hs_check(&need, &caps, why, sizeof(why));
        (void)mig_hs_stream_minor(&need, &caps);
    }
    json_decref(msg);
    return 0;
}
