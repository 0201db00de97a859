/* mig_restore: a stream into a VM. The caller reads CONFIG first (mig_read_config) and builds
 * an empty VM of that shape (vm_create with no kernel); mig_restore() then reads every record
 * up to END, checks each at its place (mig_check.h) and hands it to its row's load (RAM and
 * devices at once, KVM state staged), checks END's counts, and applies the KVM state in KVM's
 * order (vm_state_restore). The clock is left for vm_start/vm_resume to set right before the
 * vCPUs run.
 */
#ifndef TERN_MIG_RESTORE_H
#define TERN_MIG_RESTORE_H

#include <stdint.h>

#include "migrate/mig_config.h"
#include "migrate/mig_stream.h"
#include "vm/vm.h"

/* What a restore saw on the way; switchover_ns is 0 unless a SWITCHOVER record came. */
struct mig_restore_info {
    uint64_t switchover_ns; /* CLOCK_MONOTONIC when it was read */
    uint64_t ram_records;
    unsigned nested_vcpus;     /* vCPUs that came in VMX operation */
    unsigned guest_mode_vcpus; /* of those, vCPUs that were running L2 */
    uint32_t nested_bytes;     /* the largest nested record */
};
/* A live migration over several connections: each stream's RAM_SYNC records go to reached(),
 * which returns once the pass is complete on every connection (mig_barrier.h). party: which
 * connection this stream is (0: the main one). */
struct mig_sync {
    int (*reached)(void *opaque, unsigned party, const struct mig_ram_sync *sync);
    void *opaque;
    unsigned party;
};
/* sync: NULL for a stream on its own (a snapshot, one connection): RAM_SYNC is then refused. */
int mig_restore(struct vm *vm, struct mig_reader *r, const struct mig_config *cfg,
                const struct mig_sync *sync, struct mig_restore_info *info);
/* A RAM-only stream of a migration over several connections (header, RAM and RAM_SYNC
 * records, END), read into vm as its party of sync. */
int mig_restore_ram_stream(struct vm *vm, struct mig_reader *r, const struct mig_config *cfg,
                           const struct mig_sync *sync, struct mig_restore_info *info);

#endif
