/* cli_app: `tern run`'s application — one VM on the main thread's libuv loop, from the moment
 * it is built (booted, restored from a file, or awaited from a live migration) until the guest
 * ends it, a signal stops it, or it leaves by migration. cli_run.c turns the command line into
 * struct run_options; cli_app.c runs the loop; cli_commands.c serves the control socket.
 * Internal to cli/.
 */
#ifndef TERN_CLI_APP_H
#define TERN_CLI_APP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "control/ctl_server.h"
#include "migrate/mig_dest.h"
#include "migrate/mig_source.h"
#include "vm/vm.h"

struct run_options {
    struct vm_config vm;
    const char *incoming;   /* file:PATH or tcp:ADDR:PORT; NULL: boot vm.kernel_path */
    const char *api_socket; /* NULL: no control socket */
    bool paused;            /* with --incoming file: */
    bool mem_given, cpus_given;
    unsigned idle_s;            /* --incoming-idle-timeout */
    struct mig_tls_options tls; /* --tls-creds, --tls-psk, --tls-names */
};

struct run_state {
    uv_loop_t loop;
    struct vm *vm;
    const struct run_options *opt;
    struct ctl_server *ctl;
    uv_signal_t sigint, sigterm;
    uv_timer_t quit_timer;
    int exit_status;
    bool ending;

    /* Outgoing live migration. */
    struct mig_source *migration;
    uv_timer_t progress_timer;
    struct mig_progress last_migration; /* the last one's final progress */
    bool have_last_migration;
    bool end_after_migration; /* the guest ended or a signal came while migrating */

    /* Incoming live migration. */
    struct mig_dest *incoming;
    struct mig_tls_creds *incoming_tls;
};

/* Runs the application to its end; returns the process exit status. */
int cli_app_run(const struct run_options *opt);

/* Ends the application (once any migration in flight has ended). */
void cli_app_finish(struct run_state *st);

/* The control socket's handler (cli_commands.c). */
json_t *cli_command(void *opaque, const char *command, json_t *req, char *err, size_t err_size);

#endif
