#include "err/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ERR_MSG_MAX 1024

static __thread char err_buf[ERR_MSG_MAX];

static void err_vformat(char *dst, size_t size, const char *fmt, va_list ap)
{
    vsnprintf(dst, size, fmt, ap);
}

int err_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vformat(err_buf, sizeof(err_buf), fmt, ap);
    va_end(ap);
    return code;
}

int err_sys(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vformat(err_buf, sizeof(err_buf), fmt, ap);
    va_end(ap);
    size_t used = strlen(err_buf);
    if (snprintf(err_buf + used, sizeof(err_buf) - used, ": %s",
                 strerror(code < 0 ? -code : code)) < 0)
        err_buf[used] = '\0';
    return code;
}

int err_context(int code, const char *fmt, ...)
{
    char prefix[ERR_MSG_MAX];
    char old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    err_vformat(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof(old));
    /* A message too long for the buffer is cut; the prefix names the context either way. */
    if (snprintf(err_buf, sizeof(err_buf), "%s: %s", prefix, old[0] ? old : "unknown error") < 0)
        err_buf[0] = '\0';
    return code;
}

const char *err_msg(void)
{
    return err_buf[0] ? err_buf : "unknown error";
}

void err_clear(void)
{
    err_buf[0] = '\0';
}

void err_warn(const char *fmt, ...)
{
    char line[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    err_vformat(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "tern: warning: %s\n", line);
}
