/* `tern status|pause|resume|quit|snapshot --api-socket PATH`: one request on the control socket,
 * the reply printed as one JSON line. */
#include "cli/cli.h"

#include "control/ctl_server.h"
#include "err/err.h"

#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void client_usage(const char *command, FILE *out)
{
    if (!strcmp(command, "snapshot"))
        fprintf(out, "Usage: tern snapshot --api-socket PATH [--compress none|zlib[:N]] "
                     "file:PATH\n"
                     "Write the running VM's whole state to a file (pausing it meanwhile).\n");
    else
        fprintf(out, "Usage: tern %s --api-socket PATH\n", command);
}

int cli_client(int argc, char **argv)
{
    static const struct option options[] = {
        {"api-socket", required_argument, NULL, 'A'},
        {"compress", required_argument, NULL, 'z'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *command = argv[0], *socket_path = NULL, *compress = NULL;
    bool is_snapshot = !strcmp(command, "snapshot");
    int opt, rc = 0;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":A:z:h", options, NULL)) != -1) {
        switch (opt) {
        case 'A':
            socket_path = optarg;
            break;
        case 'z':
            compress = optarg;
            break;
        case 'h':
            client_usage(command, stdout);
            return 0;
        case ':':
            rc = err_set(-EINVAL, "%s needs a value", argv[optind - 1]);
            break;
        default:
            rc = err_set(-EINVAL, "unknown option '%s' (see tern %s --help)", argv[optind - 1],
                         command);
            break;
        }
        if (rc)
            goto fail;
    }
    if (!socket_path) {
        rc = err_set(-EINVAL, "--api-socket PATH is required");
        goto fail;
    }
    if (compress && !is_snapshot) {
        rc = err_set(-EINVAL, "--compress applies only to snapshot");
        goto fail;
    }
    if (is_snapshot != (optind == argc - 1)) {
        rc = is_snapshot ? err_set(-EINVAL, "snapshot needs one destination, file:PATH")
                         : err_set(-EINVAL, "unexpected argument '%s'", argv[optind]);
        goto fail;
    }
    json_t *req = json_pack("{s:s}", "command", command);
    if (is_snapshot)
        json_object_set_new(req, "uri", json_string(argv[optind]));
    if (compress)
        json_object_set_new(req, "compress", json_string(compress));
    json_t *reply = NULL;
    rc = ctl_request(socket_path, req, &reply);
    json_decref(req);
    if (rc)
        goto fail;
    json_t *error = json_object_get(reply, "error");
    if (error) {
        const char *msg = json_string_value(json_object_get(error, "message"));
        rc = err_set(-EIO, "%s: %s", command, msg ? msg : "failed");
        json_decref(reply);
        goto fail;
    }
    char *text = json_dumps(json_object_get(reply, "return"), JSON_COMPACT | JSON_ENCODE_ANY);
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(reply);
    return 0;
fail:
    fprintf(stderr, "tern: %s\n", err_msg());
    return CLI_EXIT_ERROR;
}
