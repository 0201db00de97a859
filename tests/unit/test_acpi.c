/* The ACPI tables Linux reads at boot, and the state of the CMOS clock and the ACPI PM block,
 * checked field by field against the ACPI 6 layouts. */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "boot/boot_acpi.h"
#include "boot/boot_aml.h"
#include "pci/pci.h"
#include "devices/dev_acpi_pm.h"
#include "devices/dev_bus.h"
#include "devices/dev_rtc.h"
#include "err/err.h"
#include "le/le.h"

static uint8_t area[BOOT_ACPI_MAX];

static uint8_t sum(const uint8_t *p, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = (uint8_t)(s + p[i]);
    return s;
}

/* The table at guest address gpa, with signature sig and a valid checksum. */
static const uint8_t *table(uint64_t gpa, const char *sig)
{
    cr_assert(gpa >= BOOT_ACPI_GPA && gpa < BOOT_ACPI_GPA + BOOT_ACPI_MAX, "%s at 0x%llx", sig,
              (unsigned long long)gpa);
    const uint8_t *t = area + (gpa - BOOT_ACPI_GPA);
    cr_assert(!memcmp(t, sig, 4), "%.4s where %s was expected", t, sig);
    cr_expect_eq(sum(t, le_get32(t + 4)), 0, "%s checksum", sig);
    return t;
}

Test(acpi, tables_describe_cpus_ioapic_and_pm_block)
{
    size_t used;
    cr_assert_eq(boot_acpi_build(area, sizeof(area), BOOT_ACPI_GPA, 5, 0x100000000ull, &used), 0,
                 "%s", err_msg());
    cr_expect_lt(used, 8192u);
    cr_assert(!memcmp(area, "RSD PTR ", 8));
    cr_expect_eq(sum(area, 20), 0);
    cr_expect_eq(sum(area, 36), 0);
    cr_expect_eq(area[15], 2);
    const uint8_t *xsdt = table(le_get64(area + 24), "XSDT");
    cr_assert_eq(le_get32(xsdt + 4), 36 + 24);
    const uint8_t *fadt = table(le_get64(xsdt + 36), "FACP");
    const uint8_t *madt = table(le_get64(xsdt + 44), "APIC");

    cr_expect_eq(le_get32(fadt + 4), 276);
    cr_expect_eq(fadt[8], 6);
    cr_expect_eq(fadt[46] | fadt[47] << 8, DEV_ACPI_PM_SCI_IRQ);
    cr_expect_eq(le_get32(fadt + 48), 0, "no SMI command port");
    cr_expect_eq(le_get32(fadt + 56), DEV_ACPI_PM_PORT);
    cr_expect_eq(le_get32(fadt + 64), DEV_ACPI_PM_PORT + 4);
    cr_expect_eq(le_get32(fadt + 76), DEV_ACPI_PM_PORT + 8);
    cr_expect(fadt[88] == 4 && fadt[89] == 2 && fadt[91] == 4);
    cr_expect_eq(fadt[108], DEV_RTC_CENTURY);
    cr_expect_eq((fadt[109] | fadt[110] << 8) & 0x2, 0, "no 8042 to probe");
    const uint8_t *facs = area + (le_get32(fadt + 36) - BOOT_ACPI_GPA);
    cr_expect(!memcmp(facs, "FACS", 4) && le_get32(facs + 4) == 64);
    cr_expect_eq(le_get32(fadt + 36) % 64, 0, "FACS 64-byte aligned");
    const uint8_t *dsdt = table(le_get32(fadt + 40), "DSDT");
    cr_expect(!memcmp(dsdt + 36, "\x08_S5_\x12", 6), "DSDT body starts with \\_S5");
    const uint8_t *mcfg = table(le_get64(xsdt + 52), "MCFG");
    cr_expect_eq(le_get32(mcfg + 4), 60);
    cr_expect_eq(le_get64(mcfg + 44), PCI_ECAM_BASE);
    cr_expect(mcfg[54] == 0 && mcfg[55] == 0, "bus 0 only");
    /* The root bridge: Device (PCI0) with _HID EisaId ("PNP0A08"), its windows and _PRT. */
    uint32_t dlen = le_get32(dsdt + 4);
    cr_expect(memmem(dsdt, dlen, "\x5b\x82", 2) &&
                  memmem(dsdt, dlen, "PCI0\x08_HID\x0c\x41\xd0\x0a\x08", 14),
              "no Device (PCI0) with _HID PNP0A08");
    cr_expect(memmem(dsdt, dlen, "_PRT\x12", 5), "no _PRT package");
    cr_expect(memmem(dsdt, dlen, "MRES\x08_HID\x0c\x41\xd0\x0c\x02", 14), "no PNP0C02 reservation");
    uint8_t win32[] = {0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0,    0,    0,
                       0,    0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xdf};
    cr_expect(memmem(dsdt, dlen, win32, sizeof(win32)), "no 32-bit window 0xc0000000-0xdfffffff");

    cr_expect_eq(le_get32(madt + 36), BOOT_ACPI_LAPIC_GPA);
    unsigned lapics = 0, ioapics = 0, overrides = 0;
    for (uint32_t off = 44; off < le_get32(madt + 4); off += madt[off + 1]) {
        cr_assert_geq(madt[off + 1], 2);
        switch (madt[off]) {
        case 0:
            cr_expect_eq(madt[off + 3], lapics, "APIC IDs 0..n-1");
            cr_expect_eq(le_get32(madt + off + 4) & 1, 1, "enabled");
            lapics++;
            break;
        case 1:
            cr_expect_eq(le_get32(madt + off + 4), BOOT_ACPI_IOAPIC_GPA);
            cr_expect_eq(le_get32(madt + off + 8), 0, "GSI base");
            ioapics++;
            break;
        case 2:
            cr_expect_eq(madt[off + 3], DEV_ACPI_PM_SCI_IRQ, "only the SCI is overridden");
            overrides++;
            break;
        }
    }
    cr_expect_eq(lapics, 5);
    cr_expect_eq(ioapics, 1);
    cr_expect_eq(overrides, 1);
}

Test(acpi, rejects_what_does_not_fit)
{
    size_t used;
    cr_expect_lt(boot_acpi_build(area, sizeof(area), BOOT_ACPI_GPA, 0, 1ull << 32, &used), 0);
    cr_expect_lt(boot_acpi_build(area, sizeof(area), BOOT_ACPI_GPA, 256, 1ull << 32, &used), 0);
    cr_expect(strstr(err_msg(), "256 vCPUs"), "%s", err_msg());
    cr_expect_lt(boot_acpi_build(area, 100, BOOT_ACPI_GPA, 1, 1ull << 32, &used), 0);
    cr_expect(strstr(err_msg(), "do not fit"), "%s", err_msg());
}

static unsigned ends;
static void count_end(void *opaque, enum dev_end why, uint32_t code)
{
    (void)opaque;
    (void)code;
    ends += why == DEV_END_POWER_OFF;
}

static uint32_t pio(struct dev_bus *bus, uint16_t port, unsigned size, bool write, uint32_t v)
{
    uint8_t data[4];
    memcpy(data, &v, 4);
    dev_bus_pio(bus, port, size, write, data, 1);
    uint32_t r = 0;
    memcpy(&r, data, size);
    return r;
}

/* A device made through its dev_ops, as the VM makes it, and attached to bus. */
static void *dev_make(const struct dev_ops *ops, const struct dev_host *host, struct dev_bus *bus)
{
    struct dev_env env = {.host = host, .serial_out_fd = -1, .serial_in_fd = -1};
    void *dev = NULL;
    cr_assert_eq(ops->create(&env, &dev), 0, "%s", err_msg());
    if (bus)
        cr_assert_eq(ops->attach(dev, bus), 0, "%s", err_msg());
    return dev;
}

static void dev_save(const struct dev_ops *ops, void *dev, uint8_t *buf)
{
    size_t len = 0;
    cr_assert_eq(ops->save(dev, buf, &len), 0, "%s", err_msg());
    cr_assert_eq(len, ops->state_max);
}

Test(acpi, pm_block_registers_timer_and_power_off)
{
    struct dev_host host = {.request_end = count_end};
    struct dev_bus *bus;
    cr_assert_eq(dev_bus_create(&bus), 0);
    void *pm = dev_make(&dev_acpi_pm_ops, &host, bus);
    uint16_t cnt = DEV_ACPI_PM_PORT + DEV_ACPI_PM_CNT_OFFSET;
    cr_expect_eq(pio(bus, cnt, 2, false, 0) & 1, 1, "SCI_EN");
    pio(bus, DEV_ACPI_PM_PORT + 2, 2, true, 0x0121); /* PM1 enable */
    cr_expect_eq(pio(bus, DEV_ACPI_PM_PORT + 2, 2, false, 0), 0x0121);
    cr_expect_eq(pio(bus, DEV_ACPI_PM_PORT, 4, false, 0), 0x01210000u);
    pio(bus, cnt, 2, true, 3u << 10 | 1u << 13); /* S3: not a state tern has */
    cr_expect_eq(ends, 0);

    uint8_t state[DEV_ACPI_PM_STATE_SIZE];
    dev_save(&dev_acpi_pm_ops, pm, state);
    uint32_t saved_timer;
    memcpy(&saved_timer, state + 8, 4);
    /* A destination continues from the saved timer value, not from its own clock. */
    void *other = dev_make(&dev_acpi_pm_ops, &host, NULL);
    memcpy(state + 8, &(uint32_t){(saved_timer + 0x800000) & 0xffffff}, 4);
    cr_assert_eq(dev_acpi_pm_ops.load(other, state, sizeof(state)), 0, "%s", err_msg());
    uint32_t loaded = (saved_timer + 0x800000) & 0xffffff, t;
    uint8_t again[DEV_ACPI_PM_STATE_SIZE];
    /* Held until the vCPUs run: a restored VM that never ran saves what it loaded. */
    dev_save(&dev_acpi_pm_ops, other, again);
    memcpy(&t, again + 8, 4);
    cr_expect_eq(t, loaded);
    dev_acpi_pm_ops.resume(other);
    dev_save(&dev_acpi_pm_ops, other, again);
    memcpy(&t, again + 8, 4);
    cr_expect_lt((t - loaded) & 0xffffff, 3579545u, "timer 0x%x continues from 0x%x", t, loaded);
    cr_expect_eq(again[0] | again[1] << 8, 0);
    cr_expect_eq(again[2] | again[3] << 8, 0x0121);
    cr_expect_lt(dev_acpi_pm_ops.load(other, state, 5), 0);
    memcpy(state + 8, &(uint32_t){0x1000000}, 4);
    cr_expect_lt(dev_acpi_pm_ops.load(other, state, sizeof(state)), 0);
    cr_expect(strstr(err_msg(), "exceeds 24 bits"), "%s", err_msg());

    pio(bus, cnt, 2, true, DEV_ACPI_PM_S5_TYPE << 10 | 1u << 13);
    cr_expect_eq(ends, 1);
    dev_acpi_pm_ops.destroy(other);
    dev_acpi_pm_ops.destroy(pm);
    dev_bus_destroy(bus);
}

Test(acpi, cmos_clock_encodings_and_state)
{
    struct dev_bus *bus;
    struct dev_host host = {0};
    cr_assert_eq(dev_bus_create(&bus), 0);
    void *rtc = dev_make(&dev_rtc_ops, &host, bus);
    uint8_t a, d, b;
    pio(bus, 0x70, 1, true, 0x0a);
    a = (uint8_t)pio(bus, 0x71, 1, false, 0);
    pio(bus, 0x70, 1, true, 0x8d); /* bit 7 (NMI mask) is not part of the index */
    d = (uint8_t)pio(bus, 0x71, 1, false, 0);
    cr_expect_eq(a & 0x80, 0, "UIP clear");
    cr_expect_eq(d, 0x80, "valid");

    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    pio(bus, 0x70, 1, true, 0x08);
    uint8_t month_bcd = (uint8_t)pio(bus, 0x71, 1, false, 0);
    cr_expect_eq(month_bcd, (tm.tm_mon + 1) / 10 << 4 | (tm.tm_mon + 1) % 10);
    pio(bus, 0x70, 1, true, 0x0b);
    b = (uint8_t)pio(bus, 0x71, 1, false, 0);
    pio(bus, 0x71, 1, true, b | 0x04); /* binary */
    pio(bus, 0x70, 1, true, 0x08);
    cr_expect_eq(pio(bus, 0x71, 1, false, 0), (uint32_t)tm.tm_mon + 1);
    pio(bus, 0x70, 1, true, 0x32);
    cr_expect_eq(pio(bus, 0x71, 1, false, 0), (uint32_t)(tm.tm_year + 1900) / 100);

    pio(bus, 0x70, 1, true, 0x40);
    pio(bus, 0x71, 1, true, 0x5a); /* CMOS RAM */
    uint8_t state[DEV_RTC_STATE_SIZE];
    dev_save(&dev_rtc_ops, rtc, state);
    cr_expect_eq(state[0], 0x40);
    cr_expect_eq(state[4 + 0x40], 0x5a);
    void *other = dev_make(&dev_rtc_ops, &host, NULL);
    cr_assert_eq(dev_rtc_ops.load(other, state, sizeof(state)), 0);
    uint8_t again[DEV_RTC_STATE_SIZE];
    dev_save(&dev_rtc_ops, other, again);
    cr_expect(!memcmp(state, again, sizeof(state)));
    state[0] = 0x80;
    cr_expect_lt(dev_rtc_ops.load(other, state, sizeof(state)), 0);
    cr_expect_lt(dev_rtc_ops.load(other, state, 10), 0);
    dev_rtc_ops.destroy(other);
    dev_rtc_ops.destroy(rtc);
    dev_bus_destroy(bus);
}

Test(acpi, package_lengths_count_their_own_bytes)
{
    uint8_t e[4];
    cr_expect_eq(aml_pkglen(0, e), 1);
    cr_expect_eq(e[0], 1);
    cr_expect_eq(aml_pkglen(62, e), 1);
    cr_expect_eq(e[0], 63);
    /* 63 bytes of body: 65 in all with a 2-byte length: 0x41 -> 0x41 & 0xf | 1 << 6, 0x04 */
    cr_expect_eq(aml_pkglen(63, e), 2);
    cr_expect(e[0] == 0x41 && e[1] == 0x04, "%02x %02x", e[0], e[1]);
    cr_expect_eq(aml_pkglen(4093, e), 2); /* 4095 in all: the most two bytes hold */
    cr_expect_eq(aml_pkglen(4094, e), 3);
    cr_expect(e[0] == (0x80 | (4097 & 0xf)) && e[1] == ((4097 >> 4) & 0xff) && e[2] == 4097 >> 12);
}
