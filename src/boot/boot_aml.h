/* boot_aml: the few AML encodings the DSDT needs (ACPI 6.x, chapter 20), into a byte buffer.
 * Pure. Each writer appends at b->len and returns nothing; overflow is remembered in b->full
 * (and the caller refuses the table), so a table is built without a check at every call. */
#ifndef TERN_BOOT_AML_H
#define TERN_BOOT_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aml {
    uint8_t *p;
    size_t cap, len;
    bool full;
};

void aml_byte(struct aml *b, uint8_t v);
void aml_bytes(struct aml *b, const void *v, size_t n);
/* An integer in its shortest encoding (Zero, One, Byte/Word/DWord/QWordPrefix). */
void aml_int(struct aml *b, uint64_t v);
/* EisaId("PNP0A08") as its DWordPrefix integer. */
void aml_eisaid(struct aml *b, const char id[7]);
/* Name (seg, ...) : the caller appends the object right after. seg: 4 characters. */
void aml_name(struct aml *b, const char seg[4]);
/* A package-length scope: open returns the place to close; close writes the PkgLength of
 * everything appended since (moving it into place). op: 0 for none (only the length), else
 * the opcode bytes written before it (opn of them). */
size_t aml_open(struct aml *b, const uint8_t *op, size_t opn);
void aml_close(struct aml *b, size_t at);

/* Pure, for the unit tests: the PkgLength encoding of a body of len bytes (which the length
 * itself counts); its size in bytes (1..4). */
size_t aml_pkglen(size_t body, uint8_t out[4]);

#endif
