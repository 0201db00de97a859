/* mig_ram: guest RAM in the stream — RAM_ZERO for runs of zero pages, RAM_RAW and RAM_ZLIB for
 * the others, at most MIG_RAM_MAX_PAGES_PER_RECORD pages each — written by a capture's passes
 * (mig_capture.h: mig_capture_ram_all, mig_capture_ram_dirty) and read back here. */
#ifndef TERN_MIG_RAM_H
#define TERN_MIG_RAM_H

#include <stdint.h>

#include "migrate/mig_records.h"
#include "migrate/mig_stream.h"

/* The RAM header's rules (the row's check): page-aligned, 1..256 pages (any for RAM_ZERO), RAW
 * holding exactly its pages, no wrap-around. */
int mig_ram_check(const struct mig_record *rec, const char *what);
/* Writes a RAM record's pages to dst (pages x 4 KiB): zeroed, copied or inflated, checking that
 * zlib data inflates to exactly that. */
int mig_ram_decode(const struct mig_record *rec, uint8_t *dst);
/* mig_reader.place for a restore into vm (a struct vm *): where h's pages live in its RAM, or
 * NULL when they lie outside it (the load then refuses the record, naming it). */
uint8_t *mig_ram_place(void *vm, const struct mig_ram_header *h);
/* The rows' load: into the restored VM's RAM, refusing pages outside it. */
int mig_ram_load(struct mig_load *l, const struct mig_record_type *t, const struct mig_record *rec);

#endif
