/* Bad command lines: each gives one clear line naming the culprit and exit status 2. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "harness.h"

TestSuite(cli, .timeout = 30);

static void expect_error(const char *fragment, struct proc *p, int st)
{
    cr_expect_eq(st, 2, "status %d; stderr: %s", st, p->err);
    cr_expect(strstr(p->err, fragment), "'%s' not in: %s", fragment, p->err);
    cr_expect(p->err_len > 6 && !strncmp(p->err, "tern: ", 6), "%s", p->err);
    cr_expect_eq(strchr(p->err, '\n') - p->err + 1, (long)p->err_len, "one line: %s", p->err);
    proc_free(p);
}

Test(cli, help_and_version)
{
    struct proc p;
    cr_expect_eq(run_tern(&p, 5000, "--help", NULL), 0);
    cr_expect(strstr(p.out, "run "), "%s", p.out);
    proc_free(&p);
    cr_expect_eq(run_tern(&p, 5000, "--version", NULL), 0);
    cr_expect(!strncmp(p.out, "tern ", 5), "%s", p.out);
    proc_free(&p);
    cr_expect_eq(run_tern(&p, 5000, "run", "--help", NULL), 0);
    cr_expect(strstr(p.out, "--mem SIZE") && strstr(p.out, "--serial"), "%s", p.out);
    proc_free(&p);
}

/* A flag as roff writes it: every '-' as "\\-". */
static void roff_flag(const char *flag, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 3 < size; i++) {
        if (flag[i] == '-')
            out[n++] = '\\';
        out[n++] = flag[i];
    }
    out[n] = '\0';
}

Test(cli, every_flag_of_every_help_is_in_the_manual_page)
{
    FILE *f = fopen(TERN_SOURCE_DIR "/docs/tern.1", "r");
    cr_assert(f, "cannot open docs/tern.1");
    static char man[65536];
    size_t len = fread(man, 1, sizeof(man) - 1, f);
    fclose(f);
    man[len] = '\0';
    static const char *const subcommands[] = {"run",   "migrate", "inspect", "status",
                                              "pause", "resume",  "quit",    "snapshot"};
    unsigned flags = 0;
    for (size_t k = 0; k < sizeof(subcommands) / sizeof(subcommands[0]); k++) {
        struct proc p;
        cr_assert_eq(run_tern(&p, 5000, subcommands[k], "--help", NULL), 0, "%s", subcommands[k]);
        cr_expect(strstr(man, subcommands[k]), "the manual never names %s", subcommands[k]);
        for (const char *q = p.out; (q = strstr(q, "--")) != NULL;) {
            size_t n = 2;
            while (q[n] == '-' || (q[n] >= 'a' && q[n] <= 'z'))
                n++;
            char want[128];
            roff_flag(q, n, want, sizeof(want));
            cr_expect(strstr(man, want), "tern %s --help names %.*s; docs/tern.1 does not (%s)",
                      subcommands[k], (int)n, q, want);
            flags++;
            q += n;
        }
        proc_free(&p);
    }
    cr_expect_geq(flags, 25, "only %u flags found in the helps", flags);
    cr_expect(strstr(man, ".SH EXIT STATUS") && strstr(man, ".SH CONTROL SOCKET"));
}

Test(cli, missing_kernel_file)
{
    struct proc p;
    int st = run_tern(&p, 5000, "run", "--kernel", "/nonexistent/guest.elf", NULL);
    expect_error("--kernel /nonexistent/guest.elf: cannot open: No such file", &p, st);
}

Test(cli, kernel_neither_elf_nor_bzimage)
{
    char path[] = "/tmp/tern-notelf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(write(fd, "#!/bin/sh\necho hi\n", 18) == 18);
    close(fd);
    struct proc p;
    int st = run_tern(&p, 5000, "run", "--kernel", path, NULL);
    unlink(path);
    expect_error("neither an ELF64 payload nor a bzImage", &p, st);
}

Test(cli, kernel_required)
{
    struct proc p;
    int st = run_tern(&p, 5000, "run", "--mem", "64M", NULL);
    expect_error("--kernel FILE is required", &p, st);
}

Test(cli, bad_sizes)
{
    struct proc p;
    int st = run_tern(&p, 5000, "run", "--mem", "12Q", "--kernel", harness_guest("hello"), NULL);
    expect_error("--mem: '12Q' is not a size", &p, st);
    st = run_tern(&p, 5000, "run", "--mem", "0", "--kernel", harness_guest("hello"), NULL);
    expect_error("--mem: must not be zero", &p, st);
    st = run_tern(&p, 5000, "run", "--mem", "5000", "--kernel", harness_guest("hello"), NULL);
    expect_error("--mem: 5000 bytes is not a multiple of 4 KiB", &p, st);
    st = run_tern(&p, 5000, "run", "--mem", "64T", "--kernel", harness_guest("hello"), NULL);
    expect_error("exceeds the host's", &p, st);
}

Test(cli, bad_cpus)
{
    struct proc p;
    int st = run_tern(&p, 5000, "run", "--cpus", "0", "--kernel", harness_guest("hello"), NULL);
    expect_error("--cpus: 0 is out of range (1-64)", &p, st);
    st = run_tern(&p, 5000, "run", "--cpus", "65", "--kernel", harness_guest("hello"), NULL);
    expect_error("--cpus: 65 is out of range (1-64)", &p, st);
    st = run_tern(&p, 5000, "run", "--cpus", "two", "--kernel", harness_guest("hello"), NULL);
    expect_error("--cpus: 'two' is not a number", &p, st);
}

Test(cli, bad_options)
{
    struct proc p;
    int st = run_tern(&p, 5000, "run", "--frobnicate", NULL);
    expect_error("unknown option '--frobnicate'", &p, st);
    st = run_tern(&p, 5000, "run", "--kernel", NULL);
    expect_error("--kernel needs a value", &p, st);
    st = run_tern(&p, 5000, "run", "--serial", "tcp:1", "--kernel", harness_guest("hello"), NULL);
    expect_error("--serial: 'tcp:1' is not stdio, file:PATH or none", &p, st);
    st = run_tern(&p, 5000, "frob", NULL);
    expect_error("unknown command 'frob'", &p, st);
}

/* The migration channel's flags and credential files: each bad one in one line naming it. */
Test(cli, migration_channel_options)
{
    struct proc p;
    const char *hello = harness_guest("hello");
    int st = run_tern(&p, 5000, "run", "--thp", "maybe", "--kernel", hello, NULL);
    expect_error("--thp: 'maybe' is not on or off", &p, st);
    st = run_tern(&p, 5000, "run", "--tls-psk", "/dev/null", "--kernel", hello, NULL);
    expect_error("--tls-psk needs --incoming tcp:ADDR:PORT", &p, st);
    st = run_tern(&p, 5000, "run", "--incoming", "tcp:127.0.0.1:0", "--tls-creds", "/tmp",
                  "--tls-psk", "/tmp/x", NULL);
    expect_error("--tls-creds and --tls-psk: choose one", &p, st);
    st = run_tern(&p, 5000, "run", "--incoming", "tcp:127.0.0.1:0", "--tls-names", "a", NULL);
    expect_error("--tls-names needs --tls-creds", &p, st);
    st = run_tern(&p, 5000, "run", "--incoming", "tcp:127.0.0.1:0", "--tls-creds", "/nonexistent",
                  NULL);
    expect_error("--tls-creds /nonexistent: /nonexistent/ca-cert.pem", &p, st);

    const char *psk = harness_tmp("psk");
    const char *bad[][2] = {{"src\n", "line 1: not \"identity:hexkey\""},
                            {"src:zz\n", "line 1: the key must be 16 to 127 bytes in hex digits"},
                            {"# nothing\n", "holds no \"identity:hexkey\" line"}};
    for (unsigned i = 0; i < 3; i++) {
        FILE *f = fopen(psk, "w");
        cr_assert(f);
        fputs(bad[i][0], f);
        fclose(f);
        st = run_tern(&p, 5000, "run", "--incoming", "tcp:127.0.0.1:0", "--tls-psk", psk, NULL);
        expect_error(bad[i][1], &p, st);
    }

    st = run_tern(&p, 5000, "migrate", "--api-socket", "/nonexistent", "tcp:127.0.0.1:1",
                  "--connections", "17", NULL);
    expect_error("--connections: 17 is out of range (1-16)", &p, st);
    st = run_tern(&p, 5000, "migrate", "--api-socket", "/nonexistent", "tcp:127.0.0.1:1",
                  "--connections", "0", NULL);
    expect_error("--connections: 0 is out of range (1-16)", &p, st);
    st = run_tern(&p, 5000, "migrate", "--api-socket", "/nonexistent", "tcp:127.0.0.1:1",
                  "--tls-creds", "/nonexistent", NULL);
    expect_error("--tls-creds /nonexistent: No such file or directory", &p, st);
    st = run_tern(&p, 5000, "migrate", "--api-socket", "/nonexistent", "tcp:127.0.0.1:1",
                  "--tls-names", "a", NULL);
    expect_error("--tls-names needs --tls-creds", &p, st);
}

Test(cli, too_little_ram_for_the_payload)
{
    harness_require_kvm();
    struct proc p;
    int st = run_tern(&p, 5000, "run", "--mem", "1M", "--kernel", harness_guest("hello"), NULL);
    expect_error("lies outside guest RAM", &p, st);
}

Test(cli, cmdline_too_long)
{
    static char longline[5000];
    memset(longline, 'x', sizeof(longline) - 1);
    struct proc p;
    int st =
        run_tern(&p, 5000, "run", "--cmdline", longline, "--kernel", harness_guest("hello"), NULL);
    expect_error("--cmdline is 4999 bytes; the limit is 4095", &p, st);
}

static int kvm_cap(long cap)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int r = fd < 0 ? 0 : ioctl(fd, KVM_CHECK_EXTENSION, cap);
    if (fd >= 0)
        close(fd);
    return r > 0 ? r : 0;
}

Test(cli, nested_and_hyperv_options)
{
    struct proc p;
    const char *hello = harness_guest("hello");
    int st = run_tern(&p, 5000, "run", "--hyperv=relaxed,foo", "--kernel", hello, NULL);
    expect_error("--hyperv: unknown enlightenment \"foo\" (tern run --help lists them)", &p, st);
    st = run_tern(&p, 5000, "run", "--hyperv=relaxed,", "--kernel", hello, NULL);
    expect_error("--hyperv=relaxed,: an empty name in the list", &p, st);
    st = run_tern(&p, 5000, "run", "--hide-cap", "vmx", "--kernel", hello, NULL);
    expect_error("--hide-cap vmx: known are nested-state, evmcs, synic and vmx-controls", &p, st);
    st = run_tern(&p, 5000, "run", "--nested", "--incoming", "file:/nonexistent", NULL);
    expect_error("--nested and --incoming exclude each other", &p, st);
    st = run_tern(&p, 5000, "run", "--hyperv=vapic,evmcs", "--kernel", hello, NULL);
    expect_error("--hyperv=evmcs needs --nested", &p, st);
    st = run_tern(&p, 5000, "run", "--nested", "--hyperv=evmcs", "--kernel", hello, NULL);
    expect_error("--hyperv: evmcs needs vapic", &p, st);
    st = run_tern(&p, 5000, "run", "--hyperv=vpindex,synic,stimer", "--kernel", hello, NULL);
    expect_error("--hyperv: stimer needs time", &p, st);
    /* Whatever the host: with its nested state hidden, --nested has nothing to stand on. */
    st = run_tern(&p, 5000, "run", "--nested", "--hide-cap", "nested-state", "--kernel", hello,
                  NULL);
    expect_error("--nested: host KVM", &p, st);
    /* The refusals of a host without the feature (these machines); a host with it runs the
     * guest instead, which the nested host's tests cover. */
    if (!kvm_cap(KVM_CAP_NESTED_STATE)) {
        st = run_tern(&p, 5000, "run", "--nested", "--kernel", hello, NULL);
        expect_error("--nested: host KVM offers no nested VMX (kvm_intel nested=0, or not VT-x)",
                     &p, st);
    }
    if (!kvm_cap(KVM_CAP_HYPERV_CPUID) && !kvm_cap(KVM_CAP_SYS_HYPERV_CPUID)) {
        st = run_tern(&p, 5000, "run", "--hyperv", "--kernel", hello, NULL);
        expect_error("--hyperv: host KVM offers no Hyper-V CPUID", &p, st);
        st = run_tern(&p, 5000, "run", "--hyperv=vpindex,vapic", "--kernel", hello, NULL);
        expect_error("--hyperv: host KVM offers no Hyper-V CPUID", &p, st);
    }
}
