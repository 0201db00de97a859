/* mig_fault: test-only fault injection for live migration.
 *
 * TERN_MIGRATE_FAULT=ACTION@PHASE makes this process fail on purpose when it reaches PHASE:
 * ACTION "cut" drops the connection, "kill" ends the process with SIGKILL (as if killed from
 * outside). Phases, in order: handshake, first-pass, dirty-pass (source), state (source),
 * restored (destination), ready, resumed (destination), and lane (source: the second of several
 * connections); docs/migration.md says where each one is on either side. Unset, nothing happens.
 */
#ifndef TERN_MIG_FAULT_H
#define TERN_MIG_FAULT_H

#include <stdbool.h>

/* True when the variable names "cut" at phase (a "kill" there never returns). */
bool mig_fault_cut_at(const char *phase);

#endif
