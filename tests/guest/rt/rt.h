/* rt: the test guests' runtime. It enters at CPL0, installs a GDT and a per-vCPU TSS whose I/O
 * bitmap allows every port, drops to CPL3 and calls guest_main() on every vCPU. guest_main's
 * return value on vCPU 0 ends the VM with that exit code; other vCPUs park when it returns.
 */
#ifndef TERN_GUEST_RT_H
#define TERN_GUEST_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "boot/boot_protocol.h"

#define RT_MAX_CPUS 64

int guest_main(unsigned cpu, const struct boot_info *info);

/* A guest that defines this as true runs guest_main at CPL0 (for guests that need privileged
 * instructions, such as an L1 hypervisor; under PVM, CPL0 code is emulated, so such guests
 * belong on VT-x hosts). */
extern const bool rt_guest_cpl0 __attribute__((weak));

/* The TSS selector and base of this vCPU (for a guest that builds VMCS host state). */
uint16_t rt_tss_selector(unsigned cpu);
uint64_t rt_tss_base(unsigned cpu);
uint32_t rt_tss_limit(void);

void rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void rt_exit(uint32_t code);
_Noreturn void rt_park(void);

/* "key=N" in the command line, or fallback when absent or malformed. */
uint64_t rt_cmdline_u64(const struct boot_info *info, const char *key, uint64_t fallback);

/* One past the last byte of the guest image (page-aligned). */
uintptr_t rt_image_end(void);

static inline void rt_outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static inline void rt_outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}

static inline uint64_t rt_rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void rt_pause(void)
{
    __asm__ volatile("pause" ::: "memory");
}

#endif
