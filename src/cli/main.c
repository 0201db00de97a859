/* tern: entry point; dispatches to the subcommand named by argv[1]. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static const char main_usage[] =
    "Usage: tern COMMAND [OPTIONS]\n"
    "tern: a minimal VMM for live-migrating nested guests.\n"
    "\n"
    "Commands:\n"
    "  run        run a guest, or restore one (tern run --help)\n"
    "  status     show a running tern's state (--api-socket PATH)\n"
    "  pause      pause its vCPUs\n"
    "  resume     resume them\n"
    "  snapshot   write its whole state to file:PATH\n"
    "  quit       stop it\n"
    "  migrate    live-migrate its VM to another tern (tcp:HOST:PORT)\n"
    "  inspect    describe a snapshot file (tern inspect --help)\n"
    "\n"
    "  tern --help      show this help\n"
    "  tern --version   show the version\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_usage, stderr);
        return CLI_EXIT_ERROR;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(main_usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("tern %s\n", TERN_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return cli_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "migrate"))
        return cli_migrate(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect"))
        return cli_inspect(argc - 1, argv + 1);
    static const char *const clients[] = {"status", "pause", "resume", "quit", "snapshot"};
    for (size_t i = 0; i < sizeof(clients) / sizeof(clients[0]); i++)
        if (!strcmp(cmd, clients[i]))
            return cli_client(argc - 1, argv + 1);
    fprintf(stderr, "tern: unknown command '%s' (see tern --help)\n", cmd);
    return CLI_EXIT_ERROR;
}
