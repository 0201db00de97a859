/* probe: checks tern's unclaimed-address behaviour and serial input.
 * Prints the hypervisor signatures at CPUID 0x40000000 and 0x40000100 (KVM's, Hyper-V's, or
 * none with --hide-kvm), reads port 0x80 and an MMIO address in the hole twice each (both must
 * read all-ones), then, with echo=1, reads one line from COM1 and prints it back. Exits 0 when
 * all is as expected. */
#include "rt.h"

#define COM1 0x3f8
#define PROBE_MMIO 0xf0000000ul /* in the 32-bit hole above the PCI windows: no RAM, no device */

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

int guest_main(unsigned cpu, const struct boot_info *info)
{
    if (cpu != 0)
        return 0;
    int bad = 0;
    for (uint32_t leaf = 0x40000000; leaf <= 0x40000100; leaf += 0x100) {
        uint32_t a, sig[4] = {0};
        __asm__ volatile("cpuid"
                         : "=a"(a), "=b"(sig[0]), "=c"(sig[1]), "=d"(sig[2])
                         : "a"(leaf), "c"(0));
        for (int k = 0; k < 12; k++) /* printable, or '.' */
            if (((char *)sig)[k] < 32 || ((char *)sig)[k] > 126)
                ((char *)sig)[k] = '.';
        rt_printf("probe: CPUID 0x%x: signature \"%s\"\n", leaf, (char *)sig);
    }
    for (int i = 0; i < 2; i++) {
        uint8_t port = inb(0x80);
        uint32_t mmio = *(volatile uint32_t *)(uintptr_t)PROBE_MMIO;
        rt_printf("probe: port 0x80 reads 0x%x, mmio 0x%lx reads 0x%x\n", port, PROBE_MMIO, mmio);
        bad |= port != 0xff || mmio != 0xffffffffu;
    }
    if (rt_cmdline_u64(info, "echo", 0)) {
        char line[128];
        unsigned n = 0;
        for (;;) {
            while (!(inb(COM1 + 5) & 1)) /* LSR.DR */
                rt_pause();
            char c = (char)inb(COM1);
            if (c == '\n' || n == sizeof(line) - 1)
                break;
            line[n++] = c;
        }
        line[n] = '\0';
        rt_printf("probe: got line '%s'\n", line);
    }
    return bad;
}
