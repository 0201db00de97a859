#include "boot/boot_acpi.h"

#include "boot/boot_aml.h"
#include "devices/dev_acpi_pm.h"
#include "devices/dev_rtc.h"
#include "err/err.h"
#include "le/le.h"
#include "pci/pci.h"

#include <errno.h>
#include <string.h>

#define HEADER_SIZE 36u
#define RSDP_SIZE 36u
#define FADT_SIZE 276u /* revision 6 */
#define FACS_SIZE 64u
#define MADT_LAPIC_SIZE 8u
#define MADT_IOAPIC_SIZE 12u
#define MADT_OVERRIDE_SIZE 10u
#define MCFG_SIZE (HEADER_SIZE + 8u + 16u)
#define DSDT_MAX 8192u

/* FADT field offsets (ACPI 6.x, table 5.9). */
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_SCI_INT 46
#define FADT_PM1A_EVT_BLK 56
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM_TMR_BLK 76
#define FADT_PM1_EVT_LEN 88
#define FADT_PM1_CNT_LEN 89
#define FADT_PM_TMR_LEN 91
#define FADT_P_LVL2_LAT 96
#define FADT_P_LVL3_LAT 98
#define FADT_CENTURY 108
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112

#define BOOT_ARCH_LEGACY_DEVICES 0x0001u /* ISA devices: the 16550, the PIT, the CMOS clock */
#define BOOT_ARCH_VGA_NOT_PRESENT 0x0004u
/* No 8042 flag: there is no keyboard to probe; the reset line at 0x64 still works. */
#define FADT_WBINVD 0x0001u
#define FADT_PROC_C1 0x0004u
#define FADT_PWR_BUTTON 0x0010u /* no fixed-feature power button */
#define FADT_SLP_BUTTON 0x0020u /* no fixed-feature sleep button */

#define MADT_PCAT_COMPAT 0x1u /* the dual 8259 PIC is there too (KVM's irqchip has both) */
#define MADT_ENABLED 0x1u
#define MADT_LEVEL_HIGH 0x000du /* polarity active high (01), trigger level (11) */

static uint8_t checksum(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + p[i]);
    return (uint8_t)-sum;
}

static void header(uint8_t *t, const char *sig, uint32_t len, uint8_t revision)
{
    memcpy(t, sig, 4);
    le_put32(t + 4, len);
    t[8] = revision;
    memcpy(t + 10, "TERN  ", 6);
    memcpy(t + 16, "TERNVM  ", 8);
    le_put32(t + 24, 1);
    memcpy(t + 28, "TERN", 4);
    le_put32(t + 32, 1);
}

static void seal(uint8_t *t, uint32_t len)
{
    t[9] = 0;
    t[9] = checksum(t, len);
}

static size_t align(size_t v, size_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* The DSDT's body: Name (_S5, Package (4) { 5, 5, 0, 0 }), the sleep type dev_acpi_pm takes. */
static const uint8_t dsdt_s5[] = {0x08, '_',
                                  'S',  '5',
                                  '_',  0x12,
                                  0x08, 0x04,
                                  0x0a, DEV_ACPI_PM_S5_TYPE,
                                  0x0a, DEV_ACPI_PM_S5_TYPE,
                                  0x00, 0x00};

static void build_facs(uint8_t *f)
{
    memcpy(f, "FACS", 4);
    le_put32(f + 4, FACS_SIZE);
    f[32] = 2; /* version */
}

/* Resource descriptors (ACPI 6.x, 6.4): an address space window the root bridge produces. */
static void res_window(struct aml *r, uint8_t tag, uint8_t type, uint8_t tflags, uint64_t min,
                       uint64_t len)
{
    unsigned w = tag == 0x88 ? 2 : tag == 0x87 ? 4 : 8; /* Word, DWord, QWord */
    uint8_t d[3 + 3 + 5 * 8] = {tag,  (uint8_t)(3 + 5 * w),      0,
                                type, 0x0c /* min, max fixed */, tflags};
    uint64_t v[5] = {0, min, min + len - 1, 0, len}; /* granularity, min, max, offset, length */
    for (unsigned i = 0; i < 5; i++)
        for (unsigned k = 0; k < w; k++)
            d[6 + i * w + k] = (uint8_t)(v[i] >> (8 * k));
    aml_bytes(r, d, 6 + 5 * w);
}

/* Name (seg, ResourceTemplate () { what r holds, EndTag }) */
static void aml_resources(struct aml *b, const char seg[4], struct aml *r)
{
    static const uint8_t end_tag[2] = {0x79, 0x00};
    aml_bytes(r, end_tag, sizeof(end_tag));
    aml_name(b, seg);
    static const uint8_t buffer_op = 0x11;
    size_t at = aml_open(b, &buffer_op, 1);
    aml_int(b, r->len);
    aml_bytes(b, r->p, r->len);
    aml_close(b, at);
    b->full |= r->full;
}

/* _PRT: slot s, pin p (0: INTA) -> GSI 16 + (s + p) % 4, as pci_fn_gsi routes INTA. */
static void aml_prt(struct aml *b)
{
    static const uint8_t package_op = 0x12;
    aml_name(b, "_PRT");
    size_t at = aml_open(b, &package_op, 1);
    aml_byte(b, (uint8_t)((PCI_MAX_SLOTS - 1) * 4));
    for (unsigned slot = 1; slot < PCI_MAX_SLOTS; slot++)
        for (unsigned pin = 0; pin < 4; pin++) {
            size_t e = aml_open(b, &package_op, 1);
            aml_byte(b, 4);
            aml_int(b, (uint64_t)slot << 16 | 0xffff);
            aml_int(b, pin);
            aml_int(b, 0);
            aml_int(b, PCI_IRQ_BASE + (slot + pin) % 4);
            aml_close(b, e);
        }
    aml_close(b, at);
}

static const uint8_t device_op[2] = {0x5b, 0x82};

/* Device (PCI0): the root bridge, its bus, its windows and its interrupt routing. */
static void aml_pci0(struct aml *b, uint64_t mmio64_base)
{
    size_t at = aml_open(b, device_op, 2);
    aml_bytes(b, "PCI0", 4);
    aml_name(b, "_HID");
    aml_eisaid(b, "PNP0A08"); /* PCI Express root bridge (ECAM in the MCFG) */
    aml_name(b, "_CID");
    aml_eisaid(b, "PNP0A03");
    aml_name(b, "_SEG");
    aml_int(b, 0);
    aml_name(b, "_BBN");
    aml_int(b, 0);
    aml_name(b, "_UID");
    aml_int(b, 0);
    uint8_t buf[256];
    struct aml r = {.p = buf, .cap = sizeof(buf)};
    res_window(&r, 0x88, 2, 0, 0, 1); /* bus 0 */
    static const uint8_t conf1[8] = {0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08};
    aml_bytes(&r, conf1, sizeof(conf1));
    res_window(&r, 0x88, 1, 0x03, 0x0000, 0x0cf8); /* I/O below and above the config ports */
    res_window(&r, 0x88, 1, 0x03, 0x0d00, 0xf300);
    res_window(&r, 0x87, 0, 0x01, PCI_MMIO32_BASE, PCI_MMIO32_SIZE);
    res_window(&r, 0x8a, 0, 0x01, mmio64_base, PCI_MMIO64_SIZE);
    aml_resources(b, "_CRS", &r);
    aml_prt(b);
    aml_close(b, at);
}

/* Device (MRES): motherboard resources, so that the OS trusts the MCFG's ECAM. */
static void aml_mres(struct aml *b)
{
    size_t at = aml_open(b, device_op, 2);
    aml_bytes(b, "MRES", 4);
    aml_name(b, "_HID");
    aml_eisaid(b, "PNP0C02");
    uint8_t buf[32];
    struct aml r = {.p = buf, .cap = sizeof(buf)};
    uint8_t m[12] = {0x86, 9, 0, 0x01};
    le_put32(m + 4, (uint32_t)PCI_ECAM_BASE);
    le_put32(m + 8, (uint32_t)PCI_ECAM_SIZE);
    aml_bytes(&r, m, sizeof(m));
    aml_resources(b, "_CRS", &r);
    aml_close(b, at);
}

/* The DSDT: \_S5, and \_SB with the PCI root bridge and the ECAM's reservation. Returns its
 * length, 0 when it does not fit. */
static size_t build_dsdt(uint8_t *d, size_t cap, uint64_t mmio64_base)
{
    struct aml b = {.p = d, .cap = cap, .len = HEADER_SIZE};
    aml_bytes(&b, dsdt_s5, sizeof(dsdt_s5));
    static const uint8_t scope_op = 0x10;
    size_t at = aml_open(&b, &scope_op, 1);
    aml_bytes(&b, "\\_SB_", 5);
    aml_pci0(&b, mmio64_base);
    aml_mres(&b);
    aml_close(&b, at);
    if (b.full || b.len > cap)
        return 0;
    header(d, "DSDT", (uint32_t)b.len, 2);
    seal(d, (uint32_t)b.len);
    return b.len;
}

/* The MCFG: ECAM for segment 0, bus 0. */
static void build_mcfg(uint8_t *m)
{
    header(m, "MCFG", MCFG_SIZE, 1);
    le_put64(m + HEADER_SIZE + 8, PCI_ECAM_BASE);
    m[HEADER_SIZE + 8 + 10] = 0; /* start bus */
    m[HEADER_SIZE + 8 + 11] = 0; /* end bus */
    seal(m, MCFG_SIZE);
}

static void build_fadt(uint8_t *p, uint64_t facs_gpa, uint64_t dsdt_gpa)
{
    header(p, "FACP", FADT_SIZE, 6);
    le_put32(p + FADT_FIRMWARE_CTRL, (uint32_t)facs_gpa);
    le_put32(p + FADT_DSDT, (uint32_t)dsdt_gpa);
    le_put16(p + FADT_SCI_INT, DEV_ACPI_PM_SCI_IRQ);
    /* No SMI command port: the platform is in ACPI mode from the start. */
    le_put32(p + FADT_PM1A_EVT_BLK, DEV_ACPI_PM_PORT + DEV_ACPI_PM_EVT_OFFSET);
    le_put32(p + FADT_PM1A_CNT_BLK, DEV_ACPI_PM_PORT + DEV_ACPI_PM_CNT_OFFSET);
    le_put32(p + FADT_PM_TMR_BLK, DEV_ACPI_PM_PORT + DEV_ACPI_PM_TMR_OFFSET);
    p[FADT_PM1_EVT_LEN] = 4;
    p[FADT_PM1_CNT_LEN] = 2;
    p[FADT_PM_TMR_LEN] = 4;
    le_put16(p + FADT_P_LVL2_LAT, 101);  /* > 100: no C2 */
    le_put16(p + FADT_P_LVL3_LAT, 1001); /* > 1000: no C3 */
    p[FADT_CENTURY] = DEV_RTC_CENTURY;
    le_put16(p + FADT_IAPC_BOOT_ARCH, BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_VGA_NOT_PRESENT);
    le_put32(p + FADT_FLAGS, FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON);
    seal(p, FADT_SIZE);
}

static void build_madt(uint8_t *m, size_t len, unsigned cpu_count)
{
    header(m, "APIC", (uint32_t)len, 4);
    le_put32(m + 36, BOOT_ACPI_LAPIC_GPA);
    le_put32(m + 40, MADT_PCAT_COMPAT);
    uint8_t *e = m + 44;
    for (unsigned i = 0; i < cpu_count; i++, e += MADT_LAPIC_SIZE) {
        e[0] = 0; /* processor local APIC */
        e[1] = MADT_LAPIC_SIZE;
        e[2] = (uint8_t)i; /* ACPI processor UID */
        e[3] = (uint8_t)i; /* APIC ID: KVM gives vCPU i the ID i */
        le_put32(e + 4, MADT_ENABLED);
    }
    e[0] = 1; /* I/O APIC: KVM's, ID 0, GSIs 0-23 */
    e[1] = MADT_IOAPIC_SIZE;
    le_put32(e + 4, BOOT_ACPI_IOAPIC_GPA);
    e += MADT_IOAPIC_SIZE;
    /* KVM routes ISA IRQ n to IOAPIC pin n (the PIT's IRQ 0 included), so the only override is
     * the one ACPI wants for its SCI: level-triggered, active high. */
    e[0] = 2;
    e[1] = MADT_OVERRIDE_SIZE;
    e[3] = DEV_ACPI_PM_SCI_IRQ;
    le_put32(e + 4, DEV_ACPI_PM_SCI_IRQ);
    le_put16(e + 8, MADT_LEVEL_HIGH);
    seal(m, (uint32_t)len);
}

static void build_xsdt(uint8_t *x, size_t len, uint64_t fadt_gpa, uint64_t madt_gpa,
                       uint64_t mcfg_gpa)
{
    header(x, "XSDT", (uint32_t)len, 1);
    le_put64(x + HEADER_SIZE, fadt_gpa);
    le_put64(x + HEADER_SIZE + 8, madt_gpa);
    le_put64(x + HEADER_SIZE + 16, mcfg_gpa);
    seal(x, (uint32_t)len);
}

static void build_rsdp(uint8_t *r, uint64_t xsdt_gpa)
{
    memcpy(r, "RSD PTR ", 8);
    memcpy(r + 9, "TERN  ", 6);
    r[15] = 2; /* ACPI 2.0+: the XSDT is used */
    le_put32(r + 20, RSDP_SIZE);
    le_put64(r + 24, xsdt_gpa);
    r[8] = checksum(r, 20);
    r[32] = checksum(r, RSDP_SIZE);
}

int boot_acpi_build(uint8_t *buf, size_t cap, uint64_t base, unsigned cpu_count,
                    uint64_t mmio64_base, size_t *used)
{
    if (cpu_count < 1 || cpu_count > 255)
        return err_set(-EINVAL, "ACPI: %u vCPUs; the MADT's xAPIC entries take 1 to 255",
                       cpu_count);
    size_t rsdp = 0, xsdt = 64, xsdt_len = HEADER_SIZE + 3 * 8;
    size_t facs = align(xsdt + xsdt_len, 64);
    size_t fadt = facs + FACS_SIZE;
    size_t dsdt = align(fadt + FADT_SIZE, 16);
    size_t madt_len =
        HEADER_SIZE + 8 + cpu_count * MADT_LAPIC_SIZE + MADT_IOAPIC_SIZE + MADT_OVERRIDE_SIZE;
    if (dsdt + DSDT_MAX + madt_len + MCFG_SIZE + 32 > cap || base + cap > 0x100000000ull)
        return err_set(-ENOSPC, "ACPI: the tables do not fit their %zu-byte area", cap);
    memset(buf, 0, cap);
    size_t dsdt_len = build_dsdt(buf + dsdt, DSDT_MAX, mmio64_base);
    if (!dsdt_len)
        return err_set(-ENOSPC, "ACPI: the DSDT does not fit %u bytes", DSDT_MAX);
    size_t madt = align(dsdt + dsdt_len, 16);
    size_t mcfg = align(madt + madt_len, 16);
    size_t end = mcfg + MCFG_SIZE;
    build_facs(buf + facs);
    build_fadt(buf + fadt, base + facs, base + dsdt);
    build_madt(buf + madt, madt_len, cpu_count);
    build_mcfg(buf + mcfg);
    build_xsdt(buf + xsdt, xsdt_len, base + fadt, base + madt, base + mcfg);
    build_rsdp(buf + rsdp, base + xsdt);
    *used = end;
    return 0;
}
