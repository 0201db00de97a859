#include "rt.h"

#include <stdarg.h>

struct rt_tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));

/* The I/O bitmap follows the TSS: all zero bits allow every port, and the byte after it must be
 * all ones. That is how CPL3 code gets port I/O (IOPL cannot be raised under PVM). */
struct rt_tss {
    struct rt_tss64 tss;
    uint8_t iomap[8192];
    uint8_t iomap_end;
} __attribute__((packed, aligned(16)));

#define RT_SEL_UDATA 0x18
#define RT_SEL_UCODE 0x20
#define RT_GDT_FIXED 5

/* Same kernel selectors as tern's boot GDT (0x08, 0x10), so loading it needs no far jump. */
static uint64_t rt_gdt[RT_GDT_FIXED + 2 * RT_MAX_CPUS] = {
    0,
    0x00af9b000000ffffull, /* 0x08: 64-bit code, DPL0 */
    0x00cf93000000ffffull, /* 0x10: data, DPL0 */
    0x00cff3000000ffffull, /* 0x18: data, DPL3 */
    0x00affb000000ffffull, /* 0x20: 64-bit code, DPL3 */
};
static struct rt_tss rt_tss[RT_MAX_CPUS];
uint8_t rt_kstacks[RT_MAX_CPUS][4096] __attribute__((aligned(16)));
static uint8_t rt_ustacks[RT_MAX_CPUS][16384] __attribute__((aligned(16)));
static volatile int rt_print_lock;

extern char _end[];

static void rt_main_entry(unsigned cpu, const struct boot_info *info);

void rt_cpl0_entry(unsigned cpu, const struct boot_info *info)
{
    if (cpu >= RT_MAX_CPUS)
        for (;;)
            ;
    struct rt_tss *t = &rt_tss[cpu];
    t->tss.iomap_base = (uint16_t) __builtin_offsetof(struct rt_tss, iomap);
    t->iomap_end = 0xff;

    uint64_t base = (uint64_t)(uintptr_t)t;
    uint64_t limit = sizeof(*t) - 1;
    unsigned slot = RT_GDT_FIXED + 2 * cpu;
    rt_gdt[slot] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
                   (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    rt_gdt[slot + 1] = base >> 32;

    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) gdtr = {sizeof(rt_gdt) - 1, (uint64_t)(uintptr_t)rt_gdt};
    __asm__ volatile("lgdt %0" ::"m"(gdtr));
    __asm__ volatile("ltr %w0" ::"r"((uint16_t)(slot * 8)));
    if (&rt_guest_cpl0 && rt_guest_cpl0)
        rt_main_entry(cpu, info);

    /* Enter CPL3 with interrupts off; the frame for the callee looks like after a call. */
    uint64_t user_rsp = (uint64_t)(uintptr_t)&rt_ustacks[cpu][sizeof(rt_ustacks[cpu])] - 8;
    __asm__ volatile("pushq %[ss]\n\t"
                     "pushq %[rsp]\n\t"
                     "pushq $0x2\n\t"
                     "pushq %[cs]\n\t"
                     "pushq %[rip]\n\t"
                     "iretq"
                     :
                     : [ss] "i"(RT_SEL_UDATA | 3), [rsp] "r"(user_rsp), [cs] "i"(RT_SEL_UCODE | 3),
                       [rip] "r"((uint64_t)(uintptr_t)rt_main_entry), "D"(cpu), "S"(info)
                     : "memory");
    __builtin_unreachable();
}

static void rt_main_entry(unsigned cpu, const struct boot_info *info)
{
    if (cpu == 0)
        if (info->magic != BOOT_INFO_MAGIC) {
            rt_printf("rt: bad boot-info magic 0x%x\n", info->magic);
            rt_exit(99);
        }
    int code = guest_main(cpu, info);
    if (cpu == 0)
        rt_exit((uint32_t)code);
    rt_park();
}

uint16_t rt_tss_selector(unsigned cpu)
{
    return (uint16_t)((RT_GDT_FIXED + 2 * cpu) * 8);
}

uint64_t rt_tss_base(unsigned cpu)
{
    return (uint64_t)(uintptr_t)&rt_tss[cpu];
}

uint32_t rt_tss_limit(void)
{
    return sizeof(struct rt_tss) - 1;
}

void rt_exit(uint32_t code)
{
    rt_outl(BOOT_PORT_EXIT, code);
    rt_park();
}

void rt_park(void)
{
    for (;;)
        rt_outb(BOOT_PORT_PARK, 0);
}

uintptr_t rt_image_end(void)
{
    return (uintptr_t)_end;
}

static size_t rt_put_num(char *buf, size_t pos, size_t cap, uint64_t v, unsigned base, bool neg)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg && pos < cap)
        buf[pos++] = '-';
    while (n && pos < cap)
        buf[pos++] = tmp[--n];
    return pos;
}

void rt_printf(const char *fmt, ...)
{
    char buf[256];
    size_t pos = 0, cap = sizeof(buf);
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p && pos < cap; p++) {
        if (*p != '%') {
            buf[pos++] = *p;
            continue;
        }
        p++;
        int longs = 0;
        while (*p == 'l') {
            longs++;
            p++;
        }
        switch (*p) {
        case 'd': {
            int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
            pos = rt_put_num(buf, pos, cap, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, v < 0);
            break;
        }
        case 'u':
        case 'x': {
            uint64_t v = longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            pos = rt_put_num(buf, pos, cap, v, *p == 'x' ? 16 : 10, false);
            break;
        }
        case 's':
            for (const char *s = va_arg(ap, const char *); *s && pos < cap; s++)
                buf[pos++] = *s;
            break;
        case 'c':
            buf[pos++] = (char)va_arg(ap, int);
            break;
        case '%':
            buf[pos++] = '%';
            break;
        default:
            p--;
            break;
        }
        if (!*p)
            break;
    }
    va_end(ap);
    /* One line at a time: vCPUs print concurrently. */
    while (__atomic_exchange_n(&rt_print_lock, 1, __ATOMIC_ACQUIRE))
        rt_pause();
    for (size_t i = 0; i < pos; i++)
        rt_outb(0x3f8, (uint8_t)buf[i]);
    __atomic_store_n(&rt_print_lock, 0, __ATOMIC_RELEASE);
}

uint64_t rt_cmdline_u64(const struct boot_info *info, const char *key, uint64_t fallback)
{
    const char *s = (const char *)(uintptr_t)info->cmdline_gpa;
    size_t klen = 0;
    while (key[klen])
        klen++;
    while (*s) {
        while (*s == ' ')
            s++;
        size_t i = 0;
        while (i < klen && s[i] == key[i])
            i++;
        if (i == klen && s[i] == '=') {
            const char *v = s + i + 1;
            if (*v < '0' || *v > '9')
                return fallback;
            uint64_t n = 0;
            while (*v >= '0' && *v <= '9')
                n = n * 10 + (uint64_t)(*v++ - '0');
            return n;
        }
        while (*s && *s != ' ')
            s++;
    }
    return fallback;
}
