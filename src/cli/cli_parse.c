#include "cli/cli.h"

#include "err/err.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A byte count with an optional binary suffix; checks zero and overflow. */
static int cli_parse_bytes(const char *flag, const char *text, const char *what, uint64_t *out)
{
    if (!text || !isdigit((unsigned char)text[0]))
        return err_set(-EINVAL, "%s: '%s' is not %s", flag, text ? text : "", what);
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
        return err_set(-EINVAL, "%s: '%s' is not %s", flag, text, what);
    if (value == 0)
        return err_set(-EINVAL, "%s: must not be zero", flag);
    if (shift && value > (UINT64_MAX >> shift))
        return err_set(-ERANGE, "%s: '%s' is too large", flag, text);
    *out = value << shift;
    return 0;
}

int cli_parse_size(const char *flag, const char *text, uint64_t *out)
{
    uint64_t value;
    int rc = cli_parse_bytes(flag, text, "a size (try 64M, 1G, 512K or bytes)", &value);
    if (rc)
        return rc;
    if (value % 4096)
        return err_set(-EINVAL, "%s: %llu bytes is not a multiple of 4 KiB", flag,
                       (unsigned long long)value);
    *out = value;
    return 0;
}

int cli_parse_rate(const char *flag, const char *text, uint64_t *out)
{
    return cli_parse_bytes(flag, text, "a rate in bytes/s (try 100M, 1G or bytes)", out);
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

int cli_getopt(int argc, char **argv, const char *name, const char *shortopts,
               const struct option *longopts, const char *usage, cli_option_fn each, void *ctx)
{
    int opt, rc;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage, stdout);
            return 1;
        }
        if (opt == ':')
            return err_set(-EINVAL, "%s needs a value (see tern %s --help)", argv[optind - 1],
                           name);
        if (opt == '?')
            return err_set(-EINVAL, "unknown option '%s' (see tern %s --help)", argv[optind - 1],
                           name);
        if ((rc = each(opt, ctx)))
            return rc;
    }
    return 0;
}
