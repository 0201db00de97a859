#include "migrate/mig_fault.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool mig_fault_cut_at(const char *phase)
{
    const char *spec = getenv("TERN_MIGRATE_FAULT");
    if (!spec)
        return false;
    const char *at = strchr(spec, '@');
    if (!at || strcmp(at + 1, phase))
        return false;
    size_t n = (size_t)(at - spec);
    if (n == 4 && !strncmp(spec, "kill", 4)) {
        fprintf(stderr, "tern: TERN_MIGRATE_FAULT: killing this process at phase %s\n", phase);
        raise(SIGKILL);
    }
    return n == 3 && !strncmp(spec, "cut", 3);
}
