/* The golden snapshots (tests/golden): streams written by earlier terns, which every later tern
 * must inspect exactly as their writer did and restore (on these machines, those listed "pvm" in
 * tests/golden/expect; the nested ones restore in the Bochs host's test golden.sh). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "harness.h"
#include "migrate/mig_file.h"

#define GOLDEN_MAX 64

struct golden {
    char file[128];
    char where[16];
    char line[256];
};

/* Reads tests/golden/expect: FILE <tab> pvm|nested <tab> LINE, '#' comments. */
static unsigned golden_list(struct golden *out)
{
    FILE *f = fopen(TERN_GOLDEN_DIR "/expect", "r");
    cr_assert(f, "cannot open %s/expect", TERN_GOLDEN_DIR);
    char buf[512];
    unsigned n = 0;
    while (fgets(buf, sizeof(buf), f)) {
        if (buf[0] == '#' || buf[0] == '\n')
            continue;
        cr_assert_lt(n, GOLDEN_MAX);
        buf[strcspn(buf, "\n")] = '\0';
        char *file = strtok(buf, "\t"), *where = strtok(NULL, "\t"), *line = strtok(NULL, "\t");
        cr_assert(file && where && line, "malformed line in %s/expect", TERN_GOLDEN_DIR);
        snprintf(out[n].file, sizeof(out[n].file), "%s", file);
        snprintf(out[n].where, sizeof(out[n].where), "%s", where);
        snprintf(out[n].line, sizeof(out[n].line), "%s", line);
        n++;
    }
    fclose(f);
    return n;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    char *data = NULL;
    size_t len = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        data = realloc(data, len + n + 1);
        memcpy(data + len, chunk, n);
        len += n;
    }
    fclose(f);
    data = realloc(data, len + 1);
    data[len] = '\0';
    return data;
}

static const char *golden_path(const char *file, const char *suffix)
{
    static __thread char path[512];
    int n = snprintf(path, sizeof(path), "%s/%s%s", TERN_GOLDEN_DIR, file, suffix);
    cr_assert(n > 0 && (size_t)n < sizeof(path), "golden path too long");
    return path;
}

Test(golden, every_snapshot_is_listed_in_expect)
{
    struct golden g[GOLDEN_MAX];
    unsigned n = golden_list(g);
    cr_assert_geq(n, 6, "tests/golden/expect lists %u snapshots", n);
    DIR *d = opendir(TERN_GOLDEN_DIR);
    cr_assert(d);
    unsigned snaps = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".snap"))
            continue;
        snaps++;
        bool listed = false;
        for (unsigned i = 0; i < n; i++)
            listed |= !strcmp(g[i].file, e->d_name);
        cr_expect(listed, "%s is not in tests/golden/expect", e->d_name);
    }
    closedir(d);
    cr_assert_eq(snaps, n, "%u .snap files, %u listed", snaps, n);
}

Test(golden, inspect_prints_every_snapshot_as_its_writer_did)
{
    struct golden g[GOLDEN_MAX];
    unsigned n = golden_list(g);
    for (unsigned i = 0; i < n; i++) {
        char snap[512];
        snprintf(snap, sizeof(snap), "%s", golden_path(g[i].file, ""));
        struct proc p;
        int st = run_tern(&p, 30000, "inspect", snap, NULL);
        cr_assert_eq(st, 0, "%s: tern inspect exited %d: %s", g[i].file, st, p.err);
        char *want = slurp(golden_path(g[i].file, ".inspect"));
        cr_expect_str_eq(p.out, want, "%s: tern inspect prints it differently", g[i].file);
        free(want);
        proc_free(&p);

        st = run_tern(&p, 30000, "inspect", "--json", snap, NULL);
        cr_assert_eq(st, 0, "%s: tern inspect --json exited %d: %s", g[i].file, st, p.err);
        json_error_t jerr;
        json_t *got = json_loads(p.out, 0, &jerr);
        json_t *expected = json_load_file(golden_path(g[i].file, ".json"), 0, &jerr);
        cr_assert(got && expected, "%s: JSON: %s", g[i].file, jerr.text);
        cr_expect(json_equal(got, expected), "%s: tern inspect --json differs:\n%s", g[i].file,
                  p.out);
        json_decref(got);
        json_decref(expected);
        proc_free(&p);
    }
}

/* The code segment's privilege level of every vCPU in a snapshot (SREGS2 records). */
static void golden_cpls(const char *file, unsigned *cpl, unsigned *count)
{
    struct mig_file_reader fr;
    cr_assert_eq(mig_file_open(golden_path(file, ""), &fr), 0, "%s", err_msg());
    cr_assert_eq(mig_read_header(&fr.reader), 0, "%s", err_msg());
    *count = 0;
    for (;;) {
        struct mig_record rec;
        cr_assert_eq(mig_read_record(&fr.reader, &rec), 0, "%s: %s", file, err_msg());
        if (rec.type == MIG_REC_END)
            break;
        if (rec.type != MIG_REC_SREGS2)
            continue;
        struct kvm_sregs2 s;
        memcpy(&s, rec.payload, sizeof(s));
        cpl[(*count)++] = s.cs.dpl;
    }
    mig_file_close(&fr);
}

Test(golden, snapshots_hold_what_their_names_say)
{
    struct golden g[GOLDEN_MAX];
    unsigned n = golden_list(g), checked = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned cpl[64], vcpus, want;
        if (strstr(g[i].file, "-cpl0."))
            want = 0; /* paused in the guest's CPL0 code */
        else if (strstr(g[i].file, "-memstamp-2cpu."))
            want = 3; /* the workload at CPL3 */
        else
            continue;
        golden_cpls(g[i].file, cpl, &vcpus);
        cr_expect_eq(vcpus, want ? 2 : 1, "%s: %u vCPUs", g[i].file, vcpus);
        for (unsigned k = 0; k < vcpus; k++)
            cr_expect_eq(cpl[k], want, "%s: vCPU %u at CPL%u", g[i].file, k, cpl[k]);
        checked++;
    }
    cr_expect_geq(checked, 6, "%u snapshots checked", checked);
}

Test(golden, pvm_snapshots_restore_and_their_guests_finish, .init = harness_require_kvm,
     .timeout = 120)
{
    struct golden g[GOLDEN_MAX];
    unsigned n = golden_list(g), restored = 0;
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(g[i].where, "pvm"))
            continue;
        char uri[600];
        snprintf(uri, sizeof(uri), "file:%s", golden_path(g[i].file, ""));
        struct proc p;
        int st = run_tern(&p, 60000, "run", "--incoming", uri, NULL);
        cr_expect_eq(st, 0, "%s: exit %d\nstdout: %s\nstderr: %s", g[i].file, st, p.out, p.err);
        cr_expect(strstr(p.out, g[i].line), "%s: no '%s' in: %s", g[i].file, g[i].line, p.out);
        proc_free(&p);
        restored++;
    }
    cr_assert_geq(restored, 2);
}
