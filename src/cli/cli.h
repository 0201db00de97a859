/* cli: the `tern` command line. Each subcommand is a function taking its own argv (argv[0] is the
 * subcommand name) and returning the process exit status. Parsing helpers are pure and
 * unit-tested.
 */
#ifndef TERN_CLI_H
#define TERN_CLI_H

#include <stdint.h>

/* Exit status for errors of tern's own (bad usage, failed setup, fatal guest exits). */
#define CLI_EXIT_ERROR 2

int cli_run(int argc, char **argv);
/* status, pause, resume, quit, snapshot: clients of the control socket. */
int cli_client(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_migrate(int argc, char **argv);

/* Parses "64M", "1G", "512K", "4096" (K/M/G/T, binary, case-insensitive, optional "iB"/"B").
 * Rejects zero, garbage, overflow and sizes that are not a multiple of 4 KiB; the error names
 * flag. */
int cli_parse_size(const char *flag, const char *text, uint64_t *out);

/* Parses a rate in bytes per second, with the same suffixes; no 4 KiB rule. */
int cli_parse_rate(const char *flag, const char *text, uint64_t *out);

/* getopt_long over argv for subcommand name: each option but -h goes to each(opt, ctx), -h
 * prints usage (returns 1), a missing value or an unknown option is an error naming it. */
struct option;
typedef int (*cli_option_fn)(int opt, void *ctx);
int cli_getopt(int argc, char **argv, const char *name, const char *shortopts,
               const struct option *longopts, const char *usage, cli_option_fn each, void *ctx);

/* Parses a decimal integer within [min, max]; the error names flag. */
int cli_parse_uint(const char *flag, const char *text, unsigned long min, unsigned long max,
                   unsigned long *out);

#endif
