/* err: one error message per thread, carried up to the top level.
 *
 * The function that detects a failure calls err_set() with the -errno it returns and a message
 * naming what was wrong; callers that add context call err_context(), which prefixes the message.
 * The top level prints err_msg() once. Warnings go straight to stderr with err_warn().
 */
#ifndef TERN_ERR_H
#define TERN_ERR_H

/* Records "fmt" as this thread's error and returns code (a negative errno) for tail-calling. */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like err_set, appending ": strerror(-code)". */
int err_sys(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with "context: " and returns code. */
int err_context(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The current message; "unknown error" when none was set. */
const char *err_msg(void);

void err_clear(void);

/* Prints "tern: warning: ..." on stderr. */
void err_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
