/* mig_check: the rules every reader (restore, inspect) applies to a record at its place in the
 * stream, beyond what mig_read_record checks alone: no second CONFIG, per-vCPU records within
 * the VM's vCPUs, the row's rules on its content (IRQCHIP holding the chip it claims, nested
 * state KVM would take), and END's counts matching what came before. Pure.
 */
#ifndef TERN_MIG_CHECK_H
#define TERN_MIG_CHECK_H

#include <stdint.h>

#include "migrate/mig_config.h"
#include "migrate/mig_stream.h"

/* ram_pages accumulates the pages of RAM records. */
int mig_check_in_stream(const struct mig_record *rec, const struct mig_reader *r,
                        const struct mig_config *cfg, uint64_t *ram_pages);

#endif
