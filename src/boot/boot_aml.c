/* AML encodings (boot_aml.h). */
#include "boot/boot_aml.h"

#include <string.h>

void aml_bytes(struct aml *b, const void *v, size_t n)
{
    if (b->full || b->cap - b->len < n) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
}

void aml_byte(struct aml *b, uint8_t v)
{
    aml_bytes(b, &v, 1);
}

void aml_int(struct aml *b, uint64_t v)
{
    uint8_t e[9];
    size_t n;
    if (v <= 1) {
        aml_byte(b, (uint8_t)v); /* ZeroOp, OneOp */
        return;
    }
    if (v <= 0xff)
        e[0] = 0x0a, n = 1;
    else if (v <= 0xffff)
        e[0] = 0x0b, n = 2;
    else if (v <= 0xffffffffull)
        e[0] = 0x0c, n = 4;
    else
        e[0] = 0x0e, n = 8;
    for (size_t i = 0; i < n; i++)
        e[1 + i] = (uint8_t)(v >> (8 * i));
    aml_bytes(b, e, 1 + n);
}

static unsigned hexval(char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)(c - 'A' + 10);
}

void aml_eisaid(struct aml *b, const char id[7])
{
    uint16_t vendor = (uint16_t)(((id[0] - 0x40) & 0x1f) << 10 | ((id[1] - 0x40) & 0x1f) << 5 |
                                 ((id[2] - 0x40) & 0x1f));
    uint8_t e[5] = {0x0c, (uint8_t)(vendor >> 8), (uint8_t)vendor,
                    (uint8_t)(hexval(id[3]) << 4 | hexval(id[4])),
                    (uint8_t)(hexval(id[5]) << 4 | hexval(id[6]))};
    aml_bytes(b, e, sizeof(e));
}

void aml_name(struct aml *b, const char seg[4])
{
    aml_byte(b, 0x08); /* NameOp */
    aml_bytes(b, seg, 4);
}

size_t aml_pkglen(size_t body, uint8_t out[4])
{
    /* The length counts its own bytes: try each size until the total fits it. */
    if (body + 1 < 0x40) {
        out[0] = (uint8_t)(body + 1);
        return 1;
    }
    for (size_t n = 2; n <= 4; n++) {
        size_t total = body + n;
        if (total < (1ull << (4 + 8 * (n - 1)))) {
            out[0] = (uint8_t)((n - 1) << 6 | (total & 0xf));
            for (size_t i = 1; i < n; i++)
                out[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
            return n;
        }
    }
    return 0;
}

size_t aml_open(struct aml *b, const uint8_t *op, size_t opn)
{
    aml_bytes(b, op, opn);
    return b->len;
}

void aml_close(struct aml *b, size_t at)
{
    if (b->full)
        return;
    uint8_t enc[4];
    size_t n = aml_pkglen(b->len - at, enc);
    if (n == 0 || b->cap - b->len < n) {
        b->full = true;
        return;
    }
    memmove(b->p + at + n, b->p + at, b->len - at);
    memcpy(b->p + at, enc, n);
    b->len += n;
}
