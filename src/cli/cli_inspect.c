/* `tern inspect FILE`: describe a snapshot. */
#include "cli/cli.h"

#include "err/err.h"
#include "migrate/mig_file.h"
#include "migrate/mig_inspect.h"

#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_inspect(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool as_json = false;
    int opt, rc = 0;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "jh", options, NULL)) != -1) {
        if (opt == 'j') {
            as_json = true;
        } else if (opt == 'h') {
            printf("Usage: tern inspect [--json] FILE\n"
                   "Describe a snapshot: its records, config, vCPUs and RAM.\n");
            return 0;
        } else {
            fprintf(stderr, "tern: unknown option '%s' (see tern inspect --help)\n",
                    argv[optind - 1]);
            return CLI_EXIT_ERROR;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "tern: inspect needs one FILE\n");
        return CLI_EXIT_ERROR;
    }
    const char *path = argv[optind];
    struct mig_file_reader fr;
    json_t *summary = NULL;
    rc = mig_file_open(path, &fr);
    if (!rc)
        rc = mig_inspect(&fr.reader, &summary);
    mig_file_close(&fr);
    if (rc) {
        fprintf(stderr, "tern: %s: %s\n", path, err_msg());
        json_decref(summary);
        return CLI_EXIT_ERROR;
    }
    if (as_json) {
        char *text = json_dumps(summary, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
    } else {
        mig_inspect_print(summary, stdout);
    }
    json_decref(summary);
    return 0;
}
