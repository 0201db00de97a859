#include "file/file.h"

#include "err/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Opens a regular file, or says what path is instead; *st receives its status. */
static int file_open(const char *path, int *out, struct stat *st)
{
    /* O_NONBLOCK: opening a FIFO nobody writes to would otherwise block for ever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return err_sys(-errno, "cannot open");
    if (fstat(fd, st) < 0) {
        int rc = err_sys(-errno, "cannot stat");
        close(fd);
        return rc;
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return err_set(-EINVAL,
                       S_ISDIR(st->st_mode) ? "is a directory, not a file" : "not a regular file");
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    *out = fd;
    return 0;
}

int file_open_regular(const char *path, int *fd)
{
    struct stat st;
    int rc = file_open(path, fd, &st);
    return rc ? err_context(rc, "%s", path) : 0;
}

/* Reads up to len bytes from fd's start; *got says how many came (fewer at the end). */
static int file_read_fd(int fd, uint8_t *buf, size_t len, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return err_sys(-errno, "read failed");
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

int file_read_head(const char *path, uint8_t *buf, size_t len, size_t *got)
{
    struct stat st;
    int fd;
    int rc = file_open(path, &fd, &st);
    if (rc)
        return rc;
    rc = file_read_fd(fd, buf, len, got);
    close(fd);
    return rc;
}

int file_read_all(const char *path, uint64_t max_size, uint8_t **data, size_t *len)
{
    struct stat st;
    int fd;
    int rc = file_open(path, &fd, &st);
    if (rc)
        return rc;
    if ((uint64_t)st.st_size > max_size) {
        close(fd);
        return err_set(-EFBIG, "file is %lld bytes, larger than the %llu allowed",
                       (long long)st.st_size, (unsigned long long)max_size);
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        close(fd);
        return err_set(-ENOMEM, "out of memory reading file");
    }
    size_t got = 0;
    rc = file_read_fd(fd, buf, (size_t)st.st_size, &got);
    close(fd);
    if (!rc && got != (size_t)st.st_size)
        rc = err_set(-EIO, "read failed: the file shrank to %zu bytes", got);
    if (rc) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = got;
    return 0;
}
