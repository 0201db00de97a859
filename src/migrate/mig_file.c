#include "migrate/mig_file.h"

#include "err/err.h"
#include "file/file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
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

/* The snapshot's path must be a regular file or nothing yet: never a socket (tern's own control
 * socket among them), a directory, a device or a FIFO. A link is replaced, not followed. */
static int mig_snapshot_target(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : err_sys(-errno, "cannot look at it");
    if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))
        return 0;
    return err_set(-EINVAL, "%s, not a regular file",
                   S_ISDIR(st.st_mode)    ? "is a directory"
                   : S_ISSOCK(st.st_mode) ? "is a socket"
                   : S_ISFIFO(st.st_mode) ? "is a FIFO"
                                          : "is a device");
}

/* Writes the stream into a file of its own: a new name in PATH's directory (O_EXCL, mode 0600,
 * so that nobody can plant a link or a file there first), fsynced, then renamed over PATH. */
int mig_snapshot_to_file(struct vm *vm, const char *path, int compress_level,
                         struct mig_stats *stats, uint64_t *bytes)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
        return err_set(-ENAMETOOLONG, "snapshot path too long");
    int rc = mig_snapshot_target(path);
    if (rc)
        return err_context(rc, "snapshot %s", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return err_sys(-errno, "snapshot %s: cannot create %s", path, tmp);
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        rc = err_sys(-errno, "snapshot %s: cannot write", path);
        close(fd);
        unlink(tmp);
        return rc;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    struct mig_writer w;
    mig_writer_init(&w, mig_file_sink, f);
    struct mig_capture_options opt = {.compress_level = compress_level};
    rc = mig_capture(vm, &w, &opt, stats);
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
    int fd;
    int rc = file_open_regular(path, &fd);
    if (rc)
        return rc;
    fr->file = fdopen(fd, "rb");
    if (!fr->file) {
        rc = err_sys(-errno, "%s: cannot open", path);
        close(fd);
        return rc;
    }
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
