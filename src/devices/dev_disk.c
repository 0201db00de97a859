/* Parsing --disk (dev_disk.h). */
#include "devices/dev_disk.h"

#include "err/err.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static int dev_disk_onoff(const char *key, const char *v, size_t n, bool *out)
{
    if (n == 2 && !strncmp(v, "on", 2))
        *out = true;
    else if (n == 3 && !strncmp(v, "off", 3))
        *out = false;
    else
        return err_set(-EINVAL, "--disk: %s=%.*s (on or off)", key, (int)n, v);
    return 0;
}

static int dev_disk_field(struct dev_disk *d, const char *f, size_t n)
{
    const char *eq = memchr(f, '=', n);
    if (!eq)
        return err_set(-EINVAL, "--disk: '%.*s' is not key=value", (int)n, f);
    size_t klen = (size_t)(eq - f), vlen = n - klen - 1;
    const char *v = eq + 1;
    if (klen == 4 && !strncmp(f, "path", 4)) {
        if (vlen == 0 || vlen >= DEV_DISK_PATH_MAX)
            return err_set(-EINVAL, "--disk: path is empty or longer than %u bytes",
                           DEV_DISK_PATH_MAX - 1);
        memcpy(d->path, v, vlen);
        d->path[vlen] = 0;
    } else if (klen == 8 && !strncmp(f, "readonly", 8)) {
        return dev_disk_onoff("readonly", v, vlen, &d->readonly);
    } else if (klen == 6 && !strncmp(f, "serial", 6)) {
        if (vlen > DEV_DISK_SERIAL_MAX)
            return err_set(-EINVAL, "--disk: serial=%.*s is longer than %u bytes", (int)vlen, v,
                           DEV_DISK_SERIAL_MAX);
        for (size_t i = 0; i < vlen; i++)
            if (v[i] < 0x21 || v[i] > 0x7e)
                return err_set(-EINVAL, "--disk: serial may hold printable ASCII only");
        memcpy(d->serial, v, vlen);
        d->serial[vlen] = 0;
    } else if (klen == 5 && !strncmp(f, "cache", 5)) {
        if (vlen == 4 && !strncmp(v, "none", 4))
            d->direct = true;
        else if (vlen == 9 && !strncmp(v, "writeback", 9))
            d->direct = false;
        else
            return err_set(-EINVAL, "--disk: cache=%.*s (none or writeback)", (int)vlen, v);
    } else {
        return err_set(-EINVAL, "--disk: unknown key '%.*s' (path, readonly, serial, cache)",
                       (int)klen, f);
    }
    return 0;
}

int dev_disk_parse(const char *spec, struct dev_disk *out)
{
    memset(out, 0, sizeof(*out));
    /* A plain path is path=PATH. */
    if (!strchr(spec, '=')) {
        if (!*spec || strlen(spec) >= DEV_DISK_PATH_MAX)
            return err_set(-EINVAL, "--disk: path is empty or longer than %u bytes",
                           DEV_DISK_PATH_MAX - 1);
        strcpy(out->path, spec);
        return 0;
    }
    for (const char *p = spec; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        int rc = dev_disk_field(out, p, n);
        if (rc)
            return rc;
        p += n + (comma ? 1 : 0);
    }
    if (!out->path[0])
        return err_set(-EINVAL, "--disk: path=FILE is missing");
    return 0;
}

static int dev_disk_size(int fd, const char *what, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st))
        return err_sys(-errno, "%s: fstat", what);
    if (S_ISDIR(st.st_mode))
        return err_set(-EISDIR, "%s: is a directory, not an image", what);
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, size))
            return err_sys(-errno, "%s: BLKGETSIZE64", what);
    } else if (S_ISREG(st.st_mode)) {
        *size = (uint64_t)st.st_size;
    } else {
        return err_set(-EINVAL, "%s: not a regular file or a block device", what);
    }
    if (*size == 0 || *size % 512)
        return err_set(-EINVAL, "%s: size %llu bytes is not a non-zero multiple of 512", what,
                       (unsigned long long)*size);
    return 0;
}

int dev_disk_open(const char *path, int flags, const char *what, uint64_t expect, int *fd,
                  uint64_t *size)
{
    int f = open(path, flags | O_CLOEXEC);
    if (f < 0 && errno == EISDIR)
        return err_set(-EISDIR, "%s: is a directory, not an image", what);
    if (f < 0)
        return err_sys(-errno, "%s: cannot open the image", what);
    int rc = dev_disk_size(f, what, size);
    if (!rc && expect && *size != expect)
        rc = err_set(-EINVAL, "%s: the image has %llu bytes; the VM's disk had %llu", what,
                     (unsigned long long)*size, (unsigned long long)expect);
    if (rc)
        close(f);
    else
        *fd = f;
    return rc;
}

int dev_disk_probe(const char *path, const char *what, uint64_t size)
{
    int fd = -1;
    uint64_t have = 0;
    int rc = dev_disk_open(path, O_RDONLY, what, size, &fd, &have);
    if (!rc)
        close(fd);
    return rc;
}
