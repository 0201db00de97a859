/* mig_dest: the receiving side of a live migration (tern run --incoming tcp:ADDR:PORT).
 *
 * Listens on the loop and takes one migration. Each connection gets a thread of its own for the
 * handshake, which must be done within MIG_DEST_HANDSHAKE_MS however its bytes trickle; at most
 * MIG_DEST_MAX_PEERS handshakes run at once (further connections are refused). A peer that
 * fails its handshake (a port scan, garbage, a refused source) is reported in one line and the
 * destination goes on waiting. The first peer through its handshake takes the migration: its
 * thread reads the stream into a VM the caller builds (create_vm runs on the loop once CONFIG is
 * known), says "ready" once the whole state is restored, and on the source's "go" has the caller
 * start the VM (start_vm, on the loop) and answers "resumed"; any connection after it is told it
 * is refused. on_done runs once on the loop when that migration is over (or on cancel), with the
 * listener and every connection closed: ok says whether the VM now runs here; otherwise message
 * says why, and the caller owns any VM create_vm made (never started) and must discard it.
 */
#ifndef TERN_MIG_DEST_H
#define TERN_MIG_DEST_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "migrate/mig_config.h"
#include "migrate/mig_restore.h"
#include "migrate/mig_tls.h"

#define MIG_DEST_HANDSHAKE_MS 10000u /* hello, answer and start, in all */
#define MIG_DEST_MAX_PEERS 8u        /* connections in their handshake at once */

struct mig_dest_params {
    char host[256];
    char port[16];
    unsigned idle_ms;   /* 0: MIG_DEFAULT_IDLE_MS */
    uint64_t mem_given; /* --mem the destination was started with, or 0 */
    unsigned cpus_given;
    unsigned hidden_caps; /* VM_HIDE_*: --hide-cap, what the handshake does not offer */
    /* TLS credentials (the caller's, kept until on_done), or NULL for plain TCP. With them,
     * every peer must complete TLS and be authenticated before the handshake: a plain-text
     * source is told so and refused, and nothing about this host is said before. */
    const struct mig_tls_creds *tls;
    /* --disk given here (other paths for the stream's disks, in order), or none. */
    const struct dev_disk *disks;
    unsigned disk_count;
    unsigned net_count; /* --net given here: one per network device of the stream's VM */
    void *opaque;
    int (*create_vm)(void *opaque, const struct mig_config *cfg, struct vm **out);
    int (*start_vm)(void *opaque);
    void (*on_done)(void *opaque, bool ok, const char *message);
};

struct mig_dest_result {
    double downtime_ms; /* SWITCHOVER record -> VM running */
    double total_ms;    /* connection -> VM running */
    uint64_t bytes;
    unsigned nested_vcpus, guest_mode_vcpus; /* as mig_restore_info */
    uint32_t nested_bytes;
};

struct mig_dest;

/* Binds and listens; prints nothing. *port_out gets the bound port (useful with port 0). On
 * failure nothing is left for the caller (what was made goes on the loop's next turn). */
int mig_dest_listen(uv_loop_t *loop, const struct mig_dest_params *params, struct mig_dest **out,
                    unsigned *port_out);
void mig_dest_result(const struct mig_dest *d, struct mig_dest_result *out);
/* Stops waiting (e.g. on SIGTERM): on_done follows with ok false. */
void mig_dest_cancel(struct mig_dest *d);
void mig_dest_free(struct mig_dest *d);

#endif
