/* virtio-blk with real tern processes: the freestanding driver (tests/guest/vblk.c) finds the
 * device on the PCI bus, and every sector it writes is verified by it and, from the host, in the
 * image file; hostile rings, bad --disk values, image locks; I/O through a live migration and
 * through snapshot -> restore; and the dirty-tracking witness (device writes during pre-copy). */
#include "harness.h"
#include "migrate_util.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <fcntl.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VBLK_DONE "vblk: verified"

/* A fresh image of mib MiB (sparse); its path. */
static const char *image(unsigned mib)
{
    const char *path = harness_tmp("img");
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    cr_assert(fd >= 0 && ftruncate(fd, (off_t)mib << 20) == 0, "cannot make %s", path);
    close(fd);
    return path;
}

static char *disk_arg(const char *path, const char *extra)
{
    static char bufs[4][1200];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof(bufs[0]), "path=%s%s%s", path, extra ? "," : "", extra ? extra : "");
    return b;
}

/* The vblk guest on img (with extra --disk options) and cmdline, run to its end; its status. */
static int run_vblk(struct proc *p, const char *img, const char *disk_extra, const char *cmdline)
{
    return run_tern(p, 50000, "run", "--kernel", harness_guest("vblk"), "--disk",
                    disk_arg(img, disk_extra), "--cmdline", cmdline, NULL);
}

/* Every sector of the first mib MiB of the image carries the tags of generation gen. */
static void expect_image(const char *path, unsigned mib, uint64_t gen)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    uint64_t w[64];
    for (uint64_t s = 0; s < (uint64_t)mib * 2048; s++) {
        cr_assert_eq(fread(w, 512, 1, f), 1);
        if (w[0] != s || w[1] != gen || w[63] != ~s) {
            cr_expect(0, "image sector %llu holds {%llu, %llu}, expected {%llu, %llu}",
                      (unsigned long long)s, (unsigned long long)w[0], (unsigned long long)w[1],
                      (unsigned long long)s, (unsigned long long)gen);
            break;
        }
    }
    fclose(f);
}

Test(disk, every_sector_written_through_virtio_blk_is_on_the_image, .init = harness_require_kvm,
     .timeout = 60)
{
    const char *img = image(32);
    struct proc p;
    int st = run_vblk(&p, img, "cache=none",
                      "mode=0 mib=16 passes=3 qd=16 kib=128 msix=1 indirect=1 event=1");
    cr_expect_eq(st, 0, "%s\n%s", p.out, p.err);
    cr_expect(strstr(p.out, "verified 32768 sectors x 3 passes: OK"), "%s", p.out);
    cr_expect(strstr(p.out, "MSI-X vector 0x40 pending in the LAPIC"), "%s", p.out);
    cr_expect(strstr(p.out, "device in slot 1 (ECAM agrees), BAR0 0x100000000 moved"),
              "the 64-bit BAR was not placed above RAM, or ECAM disagrees: %s", p.out);
    proc_free(&p);
    expect_image(img, 16, 3);
}

Test(disk, a_plain_ring_one_request_at_a_time, .init = harness_require_kvm, .timeout = 60)
{
    const char *img = image(8);
    struct proc p;
    int st = run_vblk(&p, img, NULL, "mode=0 mib=2 passes=2 qd=1 kib=4");
    cr_expect_eq(st, 0, "%s\n%s", p.out, p.err);
    cr_expect(strstr(p.out, VBLK_DONE), "%s", p.out);
    proc_free(&p);
    expect_image(img, 2, 2);
}

Test(disk, intx_through_the_ioapic_pin_the_prt_names, .init = harness_require_kvm, .timeout = 60)
{
    const char *img = image(8);
    struct proc p;
    int st = run_vblk(&p, img, NULL, "mode=0 mib=1 passes=1 intx=1");
    cr_expect_eq(st, 0, "%s\n%s", p.out, p.err);
    /* Slot 1's INTA: GSI 16 + 1 % 4 = 17; the ISR register reads 1 (a queue interrupt), and
     * reading it clears it. */
    cr_expect(strstr(p.out, "INTx on GSI 17: vector 0x41 pending in the LAPIC, ISR read 0x1 then "
                            "0x0"),
              "%s", p.out);
    proc_free(&p);
}

Test(disk, get_id_write_zeroes_discard_flush_and_a_read_past_the_end, .init = harness_require_kvm,
     .timeout = 60)
{
    const char *img = image(8);
    struct proc p;
    int st = run_vblk(&p, img, "serial=tern-disk-0", "mode=2");
    cr_expect_eq(st, 0, "%s\n%s", p.out, p.err);
    cr_expect(strstr(p.out, "vblk: id 'tern-disk-0'"), "%s", p.out);
    cr_expect(strstr(p.out, "read past the end: status 1"), "%s", p.out);
    cr_expect(strstr(p.out, "extras OK"), "%s", p.out);
    proc_free(&p);
}

Test(disk, a_readonly_disk_refuses_writes_with_an_io_error, .init = harness_require_kvm,
     .timeout = 60)
{
    const char *img = image(8);
    struct proc p;
    int st = run_vblk(&p, img, "readonly=on", "mode=0 mib=1 passes=1");
    cr_expect_eq(st, 2, "%s\n%s", p.out, p.err);
    cr_expect(strstr(p.out, "vblk: write at sector 0: status 1"), "%s", p.out);
    proc_free(&p);
    struct stat sb;
    cr_expect(stat(img, &sb) == 0 && sb.st_blocks == 0, "a readonly image was written");
}

/* ---- hostile rings -------------------------------------------------------------------------- */

struct bad_ring {
    int bad;
    char reason[80];
};

ParameterizedTestParameters(disk, a_malformed_ring_needs_a_reset_and_tern_keeps_running)
{
    static struct bad_ring cases[] = {
        {1, "lie outside guest RAM"},
        {2, "loops (more than 128 descriptors)"},
        {3, "4294967295 bytes at"},
        {4, "queue size 100 is not a power of two"},
    };
    return cr_make_param_array(struct bad_ring, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_ring *c, disk, a_malformed_ring_needs_a_reset_and_tern_keeps_running,
                  .init = harness_require_kvm, .timeout = 60)
{
    const char *img = image(8);
    char cmdline[64];
    snprintf(cmdline, sizeof(cmdline), "mode=3 bad=%d", c->bad);
    struct proc p;
    int st = run_vblk(&p, img, NULL, cmdline);
    cr_expect_eq(st, 0, "%s\n%s", p.out, p.err);
    cr_expect(strstr(p.err, "the driver broke the virtqueue rules, device needs reset"), "%s",
              p.err);
    cr_expect(strstr(p.err, c->reason), "expected '%s' in: %s", c->reason, p.err);
    cr_expect(strstr(p.out, "vblk: device needs reset"), "%s", p.out);
    cr_expect(strstr(p.out, "reset and recovered: OK"), "%s", p.out);
    proc_free(&p);
}

/* ---- the flag ------------------------------------------------------------------------------- */

static void refused(const char *disk, const char *expect)
{
    struct proc p;
    int st = run_tern(&p, 20000, "run", "--kernel", harness_guest("hello"), "--disk", disk, NULL);
    cr_expect_eq(st, 2, "--disk %s: status %d", disk, st);
    cr_expect(strstr(p.err, expect), "--disk %s: expected '%s' in: %s", disk, expect, p.err);
    cr_expect(strchr(p.err, '\n') == p.err + p.err_len - 1, "not one line: %s", p.err);
    proc_free(&p);
}

Test(disk, bad_disk_values_are_refused_in_one_line_naming_the_flag, .init = harness_require_kvm)
{
    refused("path=/nonexistent/tern.img", "--disk path=/nonexistent/tern.img: cannot open");
    refused("path=/tmp", "--disk path=/tmp: is a directory");
    const char *odd = harness_tmp("odd");
    int fd = open(odd, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    cr_assert(fd >= 0 && ftruncate(fd, 1000) == 0);
    close(fd);
    char spec[256];
    snprintf(spec, sizeof(spec), "path=%s", odd);
    refused(spec, "size 1000 bytes is not a non-zero multiple of 512");
    refused("path=/x,cache=sometimes", "--disk: cache=sometimes (none or writeback)");
    refused("path=/x,readonly=yes", "--disk: readonly=yes (on or off)");
    refused("path=/x,colour=blue", "--disk: unknown key 'colour'");
    refused("readonly=on", "--disk: path=FILE is missing");
    refused("path=/x,serial=abcdefghijklmnopqrstuvwxyz", "longer than 20 bytes");
}

Test(disk, two_terns_never_share_an_image, .init = harness_require_kvm, .timeout = 60)
{
    const char *img = image(8);
    struct proc a;
    char *argv[] = {TERN_BINARY, "run",
                    "--kernel",  (char *)harness_guest("vblk"),
                    "--disk",    disk_arg(img, NULL),
                    "--cmdline", "mode=0 mib=4 passes=0",
                    NULL};
    proc_start(&a, argv);
    cr_assert(proc_wait_output(&a, "pass 1 ok", 20000), "%s", a.err);
    char spec[1200];
    snprintf(spec, sizeof(spec), "path=%s", img);
    refused(spec, "the image is locked by another process");
    snprintf(spec, sizeof(spec), "path=%s,readonly=on", img);
    refused(spec, "the image is locked by another process");
    kill(a.pid, SIGTERM);
    proc_wait(&a, 10000);
    proc_free(&a);
}

/* ---- moves ---------------------------------------------------------------------------------- */

static void vblk_source(struct proc *p, const char *sock, const char *img, const char *cmdline)
{
    source_start_args(p, sock, "--mem", "256M", "--kernel", harness_guest("vblk"), "--disk",
                      disk_arg(img, NULL), "--cmdline", cmdline, NULL);
}

Test(disk, io_goes_on_through_a_live_migration_and_every_sector_verifies,
     .init = harness_require_kvm, .timeout = 120)
{
    const char *img = image(64);
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    vblk_source(&src, sock, img, "mode=0 mib=48 passes=10 qd=8 kib=64 rest=200");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 30000), "%s", src.out);
    const char *uri = dest_start(&dst, NULL, NULL);
    cr_expect_eq(migrate(&m, sock, uri, "--bandwidth", "200M", NULL), 0, "%s\n%s", m.out, m.err);
    /* The destination holds the image now: nobody else may open it for writing. */
    char spec[1200];
    snprintf(spec, sizeof(spec), "path=%s", img);
    refused(spec, "the image is locked by another process");
    expect_moved(&src, &dst, VBLK_DONE);
    proc_free(&m);
    proc_free(&src);
    proc_free(&dst);
    expect_image(img, 48, 10);
}

Test(disk, io_goes_on_through_snapshot_and_restore, .init = harness_require_kvm, .timeout = 120)
{
    const char *img = image(32);
    const char *sock = harness_tmp("sock");
    const char *snap = harness_tmp("snap");
    struct proc src, dst;
    vblk_source(&src, sock, img, "mode=0 mib=24 passes=6 qd=8 kib=64 rest=200");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 30000), "%s", src.out);
    json_decref(harness_ctl(sock, "pause", NULL));
    harness_snapshot(sock, snap);
    json_decref(harness_ctl(sock, "quit", NULL));
    proc_wait(&src, 20000);
    struct proc ins;
    cr_expect_eq(run_tern(&ins, 20000, "inspect", snap, NULL), 0);
    char line[1200];
    snprintf(line, sizeof(line), "  disk 0: %s, 33554432 bytes, cache=writeback\n", img);
    cr_expect(strstr(ins.out, line), "no '%s' in:\n%s", line, ins.out);
    cr_expect(strstr(ins.out, "  VIRTIO_BLK "), "%s", ins.out);
    proc_free(&ins);
    char uri[512];
    snprintf(uri, sizeof(uri), "file:%s", snap);
    int st = run_tern(&dst, 60000, "run", "--incoming", uri, NULL);
    cr_expect_eq(st, 0, "%s\n%s", dst.out, dst.err);
    cr_expect(strstr(dst.out, VBLK_DONE), "%s", dst.out);
    proc_free(&src);
    proc_free(&dst);
    expect_image(img, 24, 6);
}

Test(disk, a_restore_names_a_disk_that_is_missing_or_changed_size, .init = harness_require_kvm,
     .timeout = 60)
{
    const char *img = image(16);
    const char *sock = harness_tmp("sock");
    const char *snap = harness_tmp("snap");
    struct proc src, dst;
    vblk_source(&src, sock, img, "mode=0 mib=4 passes=0");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 30000), "%s", src.out);
    harness_snapshot(sock, snap);
    json_decref(harness_ctl(sock, "quit", NULL));
    proc_wait(&src, 20000);
    char uri[512];
    snprintf(uri, sizeof(uri), "file:%s", snap);
    cr_assert_eq(truncate(img, 8 << 20), 0);
    int st = run_tern(&dst, 20000, "run", "--incoming", uri, NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(dst.err, "disk 0 (") && strstr(dst.err, "the image has 8388608 bytes; the "
                                                             "VM's disk had 16777216"),
              "%s", dst.err);
    proc_free(&dst);
    cr_assert_eq(unlink(img), 0);
    st = run_tern(&dst, 20000, "run", "--incoming", uri, NULL);
    cr_expect_eq(st, 2);
    cr_expect(strstr(dst.err, "disk 0 (") && strstr(dst.err, "cannot open the image"), "%s",
              dst.err);
    proc_free(&dst);
    proc_free(&src);
}

Test(disk, pages_the_device_wrote_during_pre_copy_reach_the_destination,
     .init = harness_require_kvm, .timeout = 120)
{
    const char *img = image(32);
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    vblk_source(&src, sock, img, "mode=1 mib=24 passes=14 hold=600 gap=200 kib=256");
    cr_assert(proc_wait_output(&src, "round 2 ok", 30000), "%s", src.out);
    const char *uri = dest_start(&dst, NULL, NULL);
    cr_expect_eq(migrate(&m, sock, uri, "--bandwidth", "48M", NULL), 0, "%s\n%s", m.out, m.err);
    expect_moved(&src, &dst, "readhold verified: OK");
    cr_expect(!strstr(dst.out, "MISMATCH"), "%s", dst.out);
    proc_free(&m);
    proc_free(&src);
    proc_free(&dst);
}

Test(disk, a_destination_that_cannot_lock_the_image_gives_the_vm_back, .init = harness_require_kvm,
     .timeout = 120)
{
    /* The destination is pointed (--disk) at an image another tern holds: it cannot take the
     * lock when it should start, answers "resumed": false, and the source takes its own lock
     * back and runs on. */
    const char *img = image(16), *other = image(16);
    const char *sock = harness_tmp("sock");
    struct proc src, holder, dst, m;
    char *argv[] = {TERN_BINARY, "run",
                    "--kernel",  (char *)harness_guest("vblk"),
                    "--disk",    disk_arg(other, NULL),
                    "--cmdline", "mode=0 mib=4 passes=0",
                    NULL};
    proc_start(&holder, argv);
    cr_assert(proc_wait_output(&holder, "pass 1 ok", 20000), "%s", holder.err);
    vblk_source(&src, sock, img, "mode=0 mib=8 passes=20 qd=4 rest=250");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 30000), "%s", src.out);
    const char *uri = dest_start_args(&dst, "--disk", disk_arg(other, NULL), NULL);
    cr_expect_neq(migrate(&m, sock, uri, NULL), 0, "%s", m.out);
    cr_expect(strstr(m.out, "could not resume the VM") && strstr(m.out, "is locked by another"),
              "%s", m.out);
    expect_stayed(&src, &dst, VBLK_DONE);
    kill(holder.pid, SIGTERM);
    proc_wait(&holder, 10000);
    proc_free(&holder);
    proc_free(&m);
    proc_free(&src);
    proc_free(&dst);
    expect_image(img, 8, 20);
}

/* A destination that refused at the handshake waits for another source: stop it. */
static void stop_waiting(struct proc *dst)
{
    cr_expect(strstr(dst->err, "still waiting for a migration") ||
                  proc_wait_stderr(dst, "still waiting for a migration", 5000),
              "%s", dst->err);
    kill(dst->pid, SIGTERM);
    proc_wait(dst, 10000);
    proc_free(dst);
}

Test(disk, a_destination_without_the_image_refuses_at_the_handshake_naming_the_disk,
     .init = harness_require_kvm, .timeout = 60)
{
    const char *img = image(16), *small = image(8);
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    vblk_source(&src, sock, img, "mode=0 mib=4 passes=20 qd=4 rest=250");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 30000), "%s", src.out);
    const char *uri = dest_start_args(&dst, "--disk", "path=/nonexistent/tern.img", NULL);
    cr_expect_neq(migrate(&m, sock, uri, NULL), 0, "%s", m.out);
    cr_expect(strstr(m.out, "disk 0 (/nonexistent/tern.img): cannot open the image"), "%s", m.out);
    stop_waiting(&dst);
    proc_free(&m);
    uri = dest_start_args(&dst, "--disk", disk_arg(small, NULL), NULL);
    cr_expect_neq(migrate(&m, sock, uri, NULL), 0, "%s", m.out);
    cr_expect(strstr(m.out, "the image has 8388608 bytes; the VM's disk had 16777216"), "%s",
              m.out);
    stop_waiting(&dst);
    expect_stayed(&src, NULL, VBLK_DONE);
    proc_free(&m);
    proc_free(&src);
}

Test(disk, a_destination_given_the_wrong_number_of_disks_refuses, .init = harness_require_kvm,
     .timeout = 60)
{
    const char *img = image(16);
    const char *sock = harness_tmp("sock");
    struct proc src, dst, m;
    vblk_source(&src, sock, img, "mode=0 mib=4 passes=20 qd=4 rest=250");
    cr_assert(proc_wait_output(&src, "pass 1 ok", 30000), "%s", src.out);
    const char *uri =
        dest_start_args(&dst, "--disk", disk_arg(img, NULL), "--disk", disk_arg(img, NULL), NULL);
    cr_expect_neq(migrate(&m, sock, uri, NULL), 0, "%s", m.out);
    cr_expect(strstr(m.out, "the destination was given --disk 2 time(s); the VM has 1 disk(s)"),
              "%s", m.out);
    stop_waiting(&dst);
    expect_stayed(&src, NULL, VBLK_DONE);
    proc_free(&m);
    proc_free(&src);
}
