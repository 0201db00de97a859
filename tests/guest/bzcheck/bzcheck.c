/* bzcheck: the payload of a synthetic bzImage. It checks, from inside the guest, what tern's
 * 64-bit boot protocol handed it: registers and segments, the zero page (loader type,
 * code32_start, command line, e820 map, initrd), the ACPI tables (RSDP, XSDT, FADT, MADT) and the
 * CMOS clock and PM timer they point at. It prints one line per finding on COM1 for the test to
 * compare with what it passed to tern, then ends through tern's exit port with the number of
 * failed checks, or, with nothing failed and "end=poweroff" on the command line, by entering
 * ACPI S5 ("end=reset": through the i8042's reset line). It runs at CPL0 throughout: keep it short,
 * CPL0 is emulated on the test machines. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "boot/boot_protocol.h"

static unsigned failures;

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void put(const char *s)
{
    while (*s)
        outb(0x3f8, (uint8_t)*s++);
}

static void put_hex(uint64_t v)
{
    char buf[19] = "0x";
    int n = 0;
    char digits[16];
    do {
        digits[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    for (int i = 0; i < n; i++)
        buf[2 + i] = digits[n - 1 - i];
    buf[2 + n] = 0;
    put(buf);
}

static void check(bool ok, const char *what)
{
    put(ok ? "ok " : "FAIL ");
    put(what);
    put("\n");
    failures += !ok;
}

static uint8_t rd8(uint64_t a)
{
    return *(volatile uint8_t *)a;
}

static uint32_t rd32(uint64_t a)
{
    return *(volatile uint32_t *)a;
}

static uint64_t rd64(uint64_t a)
{
    return *(volatile uint64_t *)a;
}

static bool same(uint64_t a, const char *s, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (rd8(a + i) != (uint8_t)s[i])
            return false;
    return true;
}

static bool sums_to_zero(uint64_t a, uint32_t len)
{
    uint8_t sum = 0;
    for (uint32_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + rd8(a + i));
    return sum == 0;
}

static bool cmdline_has(uint64_t cmdline, const char *word)
{
    for (uint64_t p = cmdline; rd8(p); p++) {
        unsigned i = 0;
        while (word[i] && rd8(p + i) == (uint8_t)word[i])
            i++;
        if (!word[i])
            return true;
    }
    return false;
}

static void check_entry(uint64_t zp)
{
    uint16_t cs, ds, ss;
    uint64_t rflags;
    __asm__ volatile("mov %%cs, %0; mov %%ds, %1; mov %%ss, %2" : "=r"(cs), "=r"(ds), "=r"(ss));
    __asm__ volatile("pushfq; pop %0" : "=r"(rflags));
    check(cs == 0x10 && ds == 0x18 && ss == 0x18, "segments: CS __BOOT_CS, DS/SS __BOOT_DS");
    check(!(rflags & 0x200), "interrupts off at entry");
    check(rd8(zp + 0x210) == 0xff, "type_of_loader 0xff");
    check(rd32(zp + 0x214) == 0x1000000, "code32_start is the load address");
    check(same(zp + 0x202, "HdrS", 4), "setup header copied into the zero page");
}

static void report_cmdline(uint64_t zp)
{
    uint64_t cmdline = rd32(zp + 0x228);
    put("cmdline: ");
    for (uint64_t p = cmdline; rd8(p); p++)
        outb(0x3f8, rd8(p));
    put("\n");
}

static void report_e820(uint64_t zp)
{
    unsigned n = rd8(zp + 0x1e8);
    uint64_t ram = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t e = zp + 0x2d0 + 20 * i;
        put("e820: ");
        put_hex(rd64(e));
        put(" ");
        put_hex(rd64(e + 8));
        put(" ");
        put_hex(rd32(e + 16));
        put("\n");
        if (rd32(e + 16) == 1)
            ram += rd64(e + 8);
    }
    put("e820 ram: ");
    put_hex(ram);
    put("\n");
}

static void report_initrd(uint64_t zp)
{
    uint64_t addr = rd32(zp + 0x218) | (uint64_t)rd32(zp + 0xc0) << 32;
    uint64_t size = rd32(zp + 0x21c) | (uint64_t)rd32(zp + 0xc4) << 32;
    uint32_t sum = 0;
    for (uint64_t i = 0; i < size; i++)
        sum = sum * 31 + rd8(addr + i);
    put("initrd: ");
    put_hex(addr);
    put(" ");
    put_hex(size);
    put(" ");
    put_hex(sum);
    put("\n");
    check(!size || (addr & 0xfff) == 0, "initrd page-aligned");
    check(!size || addr + size - 1 <= rd32(zp + 0x22c), "initrd below initrd_addr_max");
    check(!size || addr >= 0x1000000 + rd32(zp + 0x260), "initrd above the kernel's init_size");
}

static uint64_t find_table(uint64_t xsdt, const char *sig)
{
    uint32_t len = rd32(xsdt + 4);
    for (uint32_t off = 36; off + 8 <= len; off += 8) {
        uint64_t t = rd64(xsdt + off);
        if (same(t, sig, 4))
            return t;
    }
    return 0;
}

static void check_acpi(uint64_t zp)
{
    uint64_t rsdp = rd64(zp + 0x70);
    check(rsdp >= 0xe0000 && rsdp < 0x100000 && !(rsdp & 15), "acpi_rsdp_addr in the BIOS area");
    check(same(rsdp, "RSD PTR ", 8) && sums_to_zero(rsdp, 20) && sums_to_zero(rsdp, 36),
          "RSDP signature and checksums");
    uint64_t xsdt = rd64(rsdp + 24);
    check(same(xsdt, "XSDT", 4) && sums_to_zero(xsdt, rd32(xsdt + 4)), "XSDT checksum");
    uint64_t fadt = find_table(xsdt, "FACP");
    check(fadt && sums_to_zero(fadt, rd32(fadt + 4)), "FADT present, checksum");
    uint64_t dsdt = rd32(fadt + 40);
    check(same(dsdt, "DSDT", 4) && sums_to_zero(dsdt, rd32(dsdt + 4)), "DSDT checksum");
    uint64_t madt = find_table(xsdt, "APIC");
    check(madt && sums_to_zero(madt, rd32(madt + 4)), "MADT present, checksum");
    unsigned cpus = 0, ioapics = 0;
    for (uint32_t off = 44; off + 2 <= rd32(madt + 4); off += rd8(madt + off + 1)) {
        uint8_t type = rd8(madt + off), len = rd8(madt + off + 1);
        if (len < 2)
            break;
        if (type == 0 && (rd32(madt + off + 4) & 1))
            cpus++;
        ioapics += type == 1;
    }
    put("madt cpus: ");
    put_hex(cpus);
    put("\n");
    check(ioapics == 1, "MADT has one IOAPIC");

    uint16_t pm_tmr = (uint16_t)rd32(fadt + 76);
    uint32_t t0 = inl(pm_tmr) & 0xffffff, t1 = t0;
    for (int i = 0; i < 100 && t1 == t0; i++)
        t1 = inl(pm_tmr) & 0xffffff;
    check(t1 != t0, "PM timer advances");
    uint16_t pm1_cnt = (uint16_t)rd32(fadt + 64);
    uint16_t cnt;
    __asm__ volatile("inw %1, %0" : "=a"(cnt) : "Nd"(pm1_cnt));
    check(cnt & 1, "SCI_EN set: ACPI mode without an SMI port");
}

static void check_rtc(void)
{
    outb(0x70, 0x0a);
    uint8_t a = inb(0x71);
    outb(0x70, 0x0b);
    uint8_t b = inb(0x71);
    outb(0x70, 0x32);
    uint8_t century = inb(0x71);
    outb(0x70, 0x09);
    uint8_t year = inb(0x71);
    outb(0x70, 0x0d);
    uint8_t d = inb(0x71);
    check(!(a & 0x80), "RTC: UIP clear");
    check((d & 0x80) != 0, "RTC: valid RAM and time");
    bool bcd = !(b & 0x04);
    unsigned c = bcd ? (century >> 4) * 10 + (century & 15) : century;
    unsigned y = bcd ? (year >> 4) * 10 + (year & 15) : year;
    put("rtc year: ");
    put_hex(c * 100 + y);
    put("\n");
}

void bzcheck_main(uint64_t zp)
{
    put("bzcheck: startup_64 reached\n");
    check_entry(zp);
    report_cmdline(zp);
    report_e820(zp);
    report_initrd(zp);
    check_acpi(zp);
    check_rtc();
    put("bzcheck: failures ");
    put_hex(failures);
    put("\n");
    uint64_t cmdline = rd32(zp + 0x228);
    if (!failures && cmdline_has(cmdline, "end=poweroff")) {
        uint64_t fadt = find_table(rd64(rd64(zp + 0x70) + 24), "FACP");
        outw((uint16_t)rd32(fadt + 64), 5 << 10 | 1 << 13); /* SLP_TYP = \_S5, SLP_EN */
    }
    if (!failures && cmdline_has(cmdline, "end=reset"))
        outb(0x64, 0xfe); /* the i8042's reset line, as Linux's reboot=k pulses it */
    outl(BOOT_PORT_EXIT, failures);
}
