/* Linux's 64-bit boot protocol, checked from inside a guest: the synthetic bzImage that the
 * suite builds (tests/guest/bzcheck) reports what it was handed, and these tests compare that
 * with what they passed to tern. Bad kernels, initrds and command lines give one-line errors. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "boot/boot_load.h"
#include "harness.h"

TestSuite(linuxboot, .init = harness_require_kvm, .timeout = 60);

static const char *bzimage(void)
{
    return TERN_GUEST_DIR "/bzcheck.bzImage";
}

/* A file of len pseudo-random bytes; returns its bzcheck checksum (sum = sum * 31 + byte). */
static uint32_t write_random_file(const char *path, size_t len, unsigned seed)
{
    uint8_t *buf = malloc(len ? len : 1);
    uint32_t sum = 0, x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
        sum = sum * 31 + buf[i];
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, buf, len), (ssize_t)len);
    close(fd);
    free(buf);
    return sum;
}

static void expect_line(const struct proc *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void expect_line(const struct proc *p, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    cr_expect(strstr(p->out, line), "'%s' not in:\n%s", line, p->out);
}

static void expect_clean_run(struct proc *p, int st)
{
    cr_expect_eq(st, 0, "status %d\nstdout: %s\nstderr: %s", st, p->out, p->err);
    cr_expect(strstr(p->out, "bzcheck: startup_64 reached"), "%s", p->out);
    cr_expect(strstr(p->out, "bzcheck: failures 0x0"), "%s", p->out);
    cr_expect(!strstr(p->out, "FAIL"), "%s", p->out);
}

Test(linuxboot, boots_with_initrd_cmdline_e820_and_cpus)
{
    const char *initrd = harness_tmp("initrd");
    size_t initrd_len = 300 * 1024 + 123;
    uint32_t sum = write_random_file(initrd, initrd_len, 7);
    const char *cmdline = "console=ttyS0 tern.check=linuxboot x=\"quoted value\"";
    struct proc p;
    int st = run_tern(&p, 30000, "run", "--kernel", bzimage(), "--initrd", initrd, "--cpus", "3",
                      "--mem", "96M", "--cmdline", cmdline, NULL);
    unlink(initrd);
    expect_clean_run(&p, st);
    uint64_t ram = 96ull << 20;
    expect_line(&p, "cmdline: %s\n", cmdline);
    expect_line(&p, "e820: 0x0 0x9fc00 0x1\n");
    expect_line(&p, "e820: 0x9fc00 0x60400 0x2\n");
    expect_line(&p, "e820: 0x100000 0x%llx 0x1\n", (unsigned long long)(ram - 0x100000));
    expect_line(&p, "e820 ram: 0x%llx\n", (unsigned long long)(ram - 0x60400));
    /* As high as it goes: the last page-aligned start that still ends inside RAM. */
    expect_line(&p, "initrd: 0x%llx 0x%zx 0x%x\n",
                (unsigned long long)((ram - initrd_len) & ~0xfffull), initrd_len, sum);
    expect_line(&p, "madt cpus: 0x3\n");
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    expect_line(&p, "rtc year: 0x%x\n", tm.tm_year + 1900);
    proc_free(&p);
}

Test(linuxboot, ram_above_the_hole_and_the_default_cmdline)
{
    struct proc p;
    int st = run_tern(&p, 30000, "run", "--kernel", bzimage(), "--mem", "4G", NULL);
    expect_clean_run(&p, st);
    expect_line(&p, "cmdline: %s\n", BOOT_LINUX_DEFAULT_CMDLINE);
    /* 4 GiB of RAM: 3 GiB below the 32-bit hole, the last GiB from 4 GiB up. */
    expect_line(&p, "e820: 0x100000 0x%llx 0x1\n", (3ull << 30) - 0x100000);
    expect_line(&p, "e820: 0x100000000 0x40000000 0x1\n");
    expect_line(&p, "initrd: 0x0 0x0 0x0\n");
    expect_line(&p, "madt cpus: 0x1\n");
    proc_free(&p);
}

/* bzcheck, told by end=... how to end, ends the VM that way: status 0 and the reason. */
static void expect_guest_ends(const char *end, const char *reason)
{
    struct proc p;
    int st =
        run_tern(&p, 30000, "run", "--kernel", bzimage(), "--mem", "64M", "--cmdline", end, NULL);
    cr_expect_eq(st, 0, "%s: status %d; stderr: %s", end, st, p.err);
    cr_expect(strstr(p.err, reason), "%s: '%s' not in: %s", end, reason, p.err);
    proc_free(&p);
}

Test(linuxboot, acpi_power_off_ends_the_vm)
{
    expect_guest_ends("end=poweroff", "guest powered off (ACPI S5)");
}

Test(linuxboot, i8042_reset_ends_the_vm)
{
    expect_guest_ends("end=reset", "guest requested a reset through the i8042");
}

static void expect_error(struct proc *p, int st, const char *fragment)
{
    cr_expect_eq(st, 2, "status %d; stderr: %s", st, p->err);
    cr_expect(strstr(p->err, fragment), "'%s' not in: %s", fragment, p->err);
    cr_expect_eq(strchr(p->err, '\n') - p->err + 1, (long)p->err_len, "one line: %s", p->err);
    proc_free(p);
}

/* A copy of the bzImage, cut to len bytes (0: whole) with byte at offset set to value. */
static const char *patched_bzimage(size_t len, size_t offset, int value)
{
    FILE *in = fopen(bzimage(), "rb");
    cr_assert(in);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    if (len && len < n)
        n = len;
    if (value >= 0)
        buf[offset] = (uint8_t)value;
    const char *path = harness_tmp("bzimage");
    FILE *out = fopen(path, "wb");
    cr_assert(out && fwrite(buf, 1, n, out) == n);
    fclose(out);
    return path;
}

Test(linuxboot, bad_kernels_initrds_and_cmdlines)
{
    struct proc p;
    const char *old = patched_bzimage(0, 0x206, 0x05); /* protocol 2.05 */
    int st = run_tern(&p, 10000, "run", "--kernel", old, NULL);
    expect_error(&p, st, "boot protocol 2.05 is too old; tern needs 2.06 or later");
    unlink(old);

    const char *cut = patched_bzimage(2000, 0, -1); /* inside the setup sectors */
    st = run_tern(&p, 10000, "run", "--kernel", cut, NULL);
    expect_error(&p, st, "truncated");
    unlink(cut);

    const char *no64 = patched_bzimage(0, 0x236, 0x00); /* xloadflags without XLF_KERNEL_64 */
    st = run_tern(&p, 10000, "run", "--kernel", no64, NULL);
    expect_error(&p, st, "lack XLF_KERNEL_64");
    unlink(no64);

    char longline[2049];
    memset(longline, 'x', 2048);
    longline[2048] = 0;
    st = run_tern(&p, 10000, "run", "--kernel", bzimage(), "--cmdline", longline, NULL);
    expect_error(&p, st, "--cmdline is 2048 bytes; this kernel takes at most 2047 (cmdline_size)");

    const char *big = harness_tmp("bigrd");
    write_random_file(big, 40u << 20, 1);
    st = run_tern(&p, 10000, "run", "--kernel", bzimage(), "--mem", "48M", "--initrd", big, NULL);
    expect_error(&p, st, "does not fit");
    unlink(big);

    const char *empty = harness_tmp("emptyrd");
    write_random_file(empty, 0, 1);
    st = run_tern(&p, 10000, "run", "--kernel", bzimage(), "--initrd", empty, NULL);
    expect_error(&p, st, "the file is empty");
    unlink(empty);

    st = run_tern(&p, 10000, "run", "--kernel", bzimage(), "--initrd", "/nonexistent/rd", NULL);
    expect_error(&p, st, "--initrd /nonexistent/rd: cannot open");

    st = run_tern(&p, 10000, "run", "--kernel", bzimage(), "--mem", "16M", NULL);
    expect_error(&p, st, "raise --mem");

    st =
        run_tern(&p, 10000, "run", "--kernel", harness_guest("hello"), "--initrd", bzimage(), NULL);
    expect_error(&p, st, "--initrd needs a bzImage kernel");

    st = run_tern(&p, 10000, "run", "--incoming", "file:/nonexistent", "--initrd", bzimage(), NULL);
    expect_error(&p, st, "--initrd and --incoming exclude each other");
}
