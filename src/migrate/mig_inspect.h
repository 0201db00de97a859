/* mig_inspect: reads a whole state stream without KVM and summarises it as JSON — records, config,
 * each vCPU (RIP, control registers, EFER, CPU mode, pending events, MSR count) and RAM
 * statistics. Every record is checked as a restore would check it (CRC, lengths, zlib data, END
 * counts), so it doubles as the stream validator the fuzzer drives.
 */
#ifndef TERN_MIG_INSPECT_H
#define TERN_MIG_INSPECT_H

#include <jansson.h>
#include <stdio.h>

#include "migrate/mig_stream.h"

int mig_inspect(struct mig_reader *r, json_t **summary);
void mig_inspect_print(json_t *summary, FILE *out);

#endif
