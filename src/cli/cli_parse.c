#include "cli/cli.h"

#include "err/err.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int cli_parse_size(const char *flag, const char *text, uint64_t *out)
{
    if (!text || !isdigit((unsigned char)text[0]))
        return err_set(-EINVAL, "%s: '%s' is not a size (try 64M, 1G, 512K or bytes)", flag,
                       text ? text : "");
    errno = 0;
    char *end;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno == ERANGE)
        return err_set(-ERANGE, "%s: '%s' is too large", flag, text);
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    default:
        break;
    }
    if (shift) {
        end++;
        if (!strcasecmp(end, "iB") || !strcasecmp(end, "B"))
            end += strlen(end);
    }
    if (*end)
        return err_set(-EINVAL, "%s: '%s' is not a size (try 64M, 1G, 512K or bytes)", flag, text);
    if (value == 0)
        return err_set(-EINVAL, "%s: size must not be zero", flag);
    if (shift && value > (UINT64_MAX >> shift))
        return err_set(-ERANGE, "%s: '%s' is too large", flag, text);
    value <<= shift;
    if (value % 4096)
        return err_set(-EINVAL, "%s: %llu bytes is not a multiple of 4 KiB", flag, value);
    *out = value;
    return 0;
}

int cli_parse_uint(const char *flag, const char *text, unsigned long min, unsigned long max,
                   unsigned long *out)
{
    if (!text || !isdigit((unsigned char)text[0]))
        return err_set(-EINVAL, "%s: '%s' is not a number", flag, text ? text : "");
    errno = 0;
    char *end;
    unsigned long value = strtoul(text, &end, 10);
    if (*end)
        return err_set(-EINVAL, "%s: '%s' is not a number", flag, text);
    if (errno == ERANGE || value < min || value > max)
        return err_set(-ERANGE, "%s: %s is out of range (%lu-%lu)", flag, text, min, max);
    *out = value;
    return 0;
}
