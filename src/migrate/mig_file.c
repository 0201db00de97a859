#include "migrate/mig_file.h"

#include "err/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *mig_file_uri_path(const char *what, const char *uri)
{
    if (!uri || strncmp(uri, "file:", 5) || !uri[5]) {
        err_set(-EINVAL, "%s: '%s' is not a file:PATH URI", what, uri ? uri : "");
        return NULL;
    }
    return uri + 5;
}

int mig_parse_compress(const char *what, const char *compress, int *level)
{
    if (!compress || !strcmp(compress, "none")) {
        *level = -1;
        return 0;
    }
    if (!strcmp(compress, "zlib")) {
        *level = 1; /* fast: pages are mostly code, stacks and zeros */
        return 0;
    }
    if (!strncmp(compress, "zlib:", 5) && compress[5] >= '0' && compress[5] <= '9' &&
        !compress[6]) {
        *level = compress[5] - '0';
        return 0;
    }
    return err_set(-EINVAL, "%s: '%s' is not none, zlib or zlib:LEVEL (0-9)", what, compress);
}

static int mig_file_sink(void *opaque, const void *buf, size_t len)
{
    if (fwrite(buf, 1, len, opaque) != len)
        return err_sys(-errno, "write failed");
    return 0;
}

int mig_snapshot_to_file(struct vm *vm, const char *path, int compress_level,
                         struct mig_stats *stats, uint64_t *bytes)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return err_set(-ENAMETOOLONG, "snapshot path too long");
    FILE *f = fopen(tmp, "wbe");
    if (!f)
        return err_sys(-errno, "snapshot %s: cannot create", tmp);
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    struct mig_writer w;
    mig_writer_init(&w, mig_file_sink, f);
    struct mig_capture_options opt = {.compress_level = compress_level};
    int rc = mig_capture(vm, &w, &opt, stats);
    if (fflush(f) != 0 && !rc)
        rc = err_sys(-errno, "snapshot %s: write failed", tmp);
    if (!rc && fsync(fileno(f)) != 0)
        rc = err_sys(-errno, "snapshot %s: fsync failed", tmp);
    fclose(f);
    if (!rc && rename(tmp, path) != 0)
        rc = err_sys(-errno, "snapshot: cannot rename %s to %s", tmp, path);
    if (rc) {
        unlink(tmp);
        return err_context(rc, "snapshot %s", path);
    }
    *bytes = w.offset;
    return 0;
}

static int mig_file_source(void *opaque, void *buf, size_t len)
{
    FILE *f = opaque;
    size_t n = fread(buf, 1, len, f);
    if (n == len)
        return 0;
    if (ferror(f))
        return err_sys(-EIO, "read failed");
    return -ENODATA;
}

int mig_file_open(const char *path, struct mig_file_reader *fr)
{
    memset(fr, 0, sizeof(*fr));
    fr->file = fopen(path, "rbe");
    if (!fr->file)
        return err_sys(-errno, "%s: cannot open", path);
    setvbuf(fr->file, NULL, _IOFBF, 1 << 20);
    mig_reader_init(&fr->reader, mig_file_source, fr->file);
    return 0;
}

void mig_file_close(struct mig_file_reader *fr)
{
    mig_reader_free(&fr->reader);
    if (fr->file)
        fclose(fr->file);
    fr->file = NULL;
}
