/* Each test guest under a real tern process on /dev/kvm. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(guests, .init = harness_require_kvm, .timeout = 60);

Test(guests, hello_prints_and_exits_0)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--mem", "64M", "--kernel", harness_guest("hello"), NULL);
    cr_expect_eq(st, 0, "stderr: %s", p.err);
    cr_expect(strstr(p.out, "hello from a tern guest: 1 vCPU(s), 64 MiB of RAM\n"), "out: %s",
              p.out);
    cr_expect_eq(p.err_len, 0, "nothing on stderr: %s", p.err);
    proc_free(&p);
}

Test(guests, exitcode_becomes_exit_status)
{
    const char *codes[] = {"code=0", "code=7", "code=42", "code=255"};
    const int want[] = {0, 7, 42, 255};
    for (int i = 0; i < 4; i++) {
        struct proc p;
        int st = run_tern(&p, 20000, "run", "--kernel", harness_guest("exitcode"), "--cmdline",
                          codes[i], NULL);
        cr_expect_eq(st, want[i], "%s gave %d; stderr: %s", codes[i], st, p.err);
        proc_free(&p);
    }
}

Test(guests, exitcode_too_large_for_a_status_is_reported)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--kernel", harness_guest("exitcode"), "--cmdline",
                      "code=300", NULL);
    cr_expect_eq(st, 255);
    cr_expect(strstr(p.err, "guest exit code 300 does not fit an exit status"), "%s", p.err);
    proc_free(&p);
}

Test(guests, smp_four_vcpus_count_exactly)
{
    struct proc p;
    int st = run_tern(&p, 30000, "run", "--cpus", "4", "--kernel", harness_guest("smp"), NULL);
    cr_expect_eq(st, 0, "stdout: %s stderr: %s", p.out, p.err);
    cr_expect(strstr(p.out, "smp: OK: 4 vCPUs added 1000000 each, counter 4000000"), "%s", p.out);
    proc_free(&p);
}

Test(guests, memstamp_two_vcpus_verifies)
{
    struct proc p;
    int st = run_tern(&p, 30000, "run", "--cpus", "2", "--mem", "128M", "--kernel",
                      harness_guest("memstamp"), "--cmdline", "mib=64 passes=5", NULL);
    cr_expect_eq(st, 0, "stdout: %s stderr: %s", p.out, p.err);
    cr_expect(strstr(p.out, "vCPU 1 pass 5 ok (8192 pages)"), "%s", p.out);
    cr_expect(strstr(p.out, "memstamp: verified 16384 pages x 5 passes on 2 vCPU(s): OK"), "%s",
              p.out);
    proc_free(&p);
}

Test(guests, memstamp_range_too_big_fails_in_guest)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--mem", "64M", "--kernel", harness_guest("memstamp"),
                      "--cmdline", "mib=128", NULL);
    cr_expect_eq(st, 3, "stdout: %s", p.out);
    cr_expect(strstr(p.out, "does not fit"), "%s", p.out);
    proc_free(&p);
}

Test(guests, fault_reports_triple_fault_with_rip)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--kernel", harness_guest("fault"), NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(p.err, "tern: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x"), "%s",
              p.err);
    cr_expect_eq(strchr(p.err, '\n') - p.err + 1, (long)p.err_len, "one line: %s", p.err);
    proc_free(&p);
}

Test(guests, serial_to_file_and_none)
{
    char path[] = "/tmp/tern-serial-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    char spec[64];
    snprintf(spec, sizeof(spec), "file:%s", path);
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--serial", spec, "--kernel", harness_guest("hello"), NULL);
    cr_expect_eq(st, 0);
    cr_expect_eq(p.out_len, 0, "stdout stays empty: %s", p.out);
    FILE *f = fopen(path, "r");
    char line[256] = "";
    cr_assert(f);
    cr_expect(fgets(line, sizeof(line), f) && strstr(line, "hello from a tern guest"), "%s", line);
    fclose(f);
    unlink(path);
    proc_free(&p);

    st = run_tern(&p, 20000, "run", "--serial", "none", "--kernel", harness_guest("hello"), NULL);
    cr_expect_eq(st, 0);
    cr_expect_eq(p.out_len, 0, "--serial none prints nothing: %s", p.out);
    proc_free(&p);
}

Test(guests, sigterm_and_sigint_stop_the_vm)
{
    const int sigs[] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
        struct proc p;
        char *argv[] = {TERN_BINARY, "run",
                        "--cpus",    "2",
                        "--kernel",  (char *)harness_guest("memstamp"),
                        "--cmdline", "mib=8 passes=0 every=1000",
                        NULL};
        proc_start(&p, argv);
        cr_assert(proc_wait_output(&p, "pass 1000 ok", 20000), "guest never got going: %s", p.out);
        kill(p.pid, sigs[i]);
        int st = proc_wait(&p, 10000);
        cr_expect_eq(st, 128 + sigs[i], "status %d; stderr: %s", st, p.err);
        cr_expect(strstr(p.err, "stopping the VM"), "%s", p.err);
        proc_free(&p);
    }
}

static unsigned count(const char *hay, const char *needle)
{
    unsigned n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

Test(guests, unclaimed_port_and_mmio_read_all_ones_and_log_once)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--kernel", harness_guest("probe"), NULL);
    cr_expect_eq(st, 0, "stdout: %s stderr: %s", p.out, p.err);
    cr_expect_eq(count(p.out, "port 0x80 reads 0xff, mmio 0xf0000000 reads 0xffffffff"), 2, "%s",
                 p.out);
    cr_expect_eq(count(p.err, "unhandled port I/O read at 0x80"), 1, "%s", p.err);
    cr_expect_eq(count(p.err, "unhandled MMIO read at 0xf0000000"), 1, "%s", p.err);
    proc_free(&p);
}

/* A fresh boot shows KVM's signature at 0x40000000 (the nested host's hyperv test reads what a
 * guest on VT-x sees with --hide-kvm and --hyperv; PVM answers that leaf itself). */
Test(guests, the_guest_finds_kvm_at_0x40000000)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--kernel", harness_guest("probe"), NULL);
    cr_expect_eq(st, 0, "stderr: %s", p.err);
    cr_expect(strstr(p.out, "probe: CPUID 0x40000000: signature \"KVMKVMKVM...\""), "%s", p.out);
    proc_free(&p);
}

Test(guests, serial_input_from_stdin_reaches_the_guest)
{
    struct proc p;
    char *argv[] = {TERN_BINARY, "run",    "--kernel", (char *)harness_guest("probe"),
                    "--cmdline", "echo=1", NULL};
    proc_start_input(&p, argv, "tern says hi\n");
    int st = proc_wait(&p, 20000);
    cr_expect_eq(st, 0, "stdout: %s stderr: %s", p.out, p.err);
    cr_expect(strstr(p.out, "probe: got line 'tern says hi'"), "%s", p.out);
    proc_free(&p);
}

Test(guests, ram_above_the_hole)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--mem", "5G", "--kernel", harness_guest("hello"), NULL);
    cr_expect_eq(st, 0, "stderr: %s", p.err);
    cr_expect(strstr(p.out, "5120 MiB of RAM"), "%s", p.out);
    proc_free(&p);
}
