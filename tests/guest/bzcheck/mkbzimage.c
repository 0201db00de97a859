/* mkbzimage: wraps a flat 64-bit payload (linked at 16 MiB, startup_64 at +0x200) in the setup
 * sectors of a bzImage, with the header values a Debian x86-64 kernel carries (boot protocol
 * 2.15, pref_address 16 MiB, kernel_alignment 2 MiB, cmdline_size 2047).
 * Usage: mkbzimage PAYLOAD.bin OUT.bzImage */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SETUP_SECTS 4
#define SETUP_SIZE ((SETUP_SECTS + 1) * 512)

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v);
    put16(p + 2, v >> 16);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mkbzimage PAYLOAD.bin OUT.bzImage\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    static uint8_t payload[16 << 20];
    size_t len = fread(payload, 1, sizeof(payload), in);
    fclose(in);
    if (len == 0 || len == sizeof(payload)) {
        fprintf(stderr, "mkbzimage: %s: empty or larger than 16 MiB\n", argv[1]);
        return 1;
    }

    uint8_t setup[SETUP_SIZE] = {0};
    setup[0x1f1] = SETUP_SECTS;
    put32(setup + 0x1f4, (uint32_t)((len + 15) / 16)); /* syssize */
    put16(setup + 0x1fe, 0xaa55);                      /* boot_flag */
    setup[0x200] = 0xeb;                               /* jmp over the header... */
    setup[0x201] = 0x6a;                               /* ...which ends at 0x26c */
    memcpy(setup + 0x202, "HdrS", 4);
    put16(setup + 0x206, 0x020f);
    setup[0x211] = 0x01; /* LOADED_HIGH */
    put32(setup + 0x214, 0x100000);
    put32(setup + 0x22c, 0x7fffffff); /* initrd_addr_max */
    put32(setup + 0x230, 0x200000);   /* kernel_alignment */
    setup[0x234] = 1;                 /* relocatable_kernel */
    setup[0x235] = 21;                /* min_alignment: 2 MiB */
    put16(setup + 0x236, 0x0003);     /* XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G */
    put32(setup + 0x238, 2047);       /* cmdline_size */
    put32(setup + 0x258, 0x1000000);  /* pref_address */
    put32(setup + 0x260, (uint32_t)((len + 4095) & ~(size_t)4095)); /* init_size */

    FILE *out = fopen(argv[2], "wb");
    if (!out || fwrite(setup, 1, sizeof(setup), out) != sizeof(setup) ||
        fwrite(payload, 1, len, out) != len || fclose(out) != 0) {
        perror(argv[2]);
        return 1;
    }
    return 0;
}
