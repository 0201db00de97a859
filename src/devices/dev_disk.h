/* dev_disk: a disk the VM is given (--disk path=FILE[,readonly=on][,serial=ID][,cache=none|
 * writeback]), as the command line, the control socket and a stream's CONFIG describe it.
 * Pure: parsing and checking the flag's text; opening the image is virtio-blk's. */
#ifndef TERN_DEV_DISK_H
#define TERN_DEV_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DEV_MAX_DISKS 8u
#define DEV_DISK_PATH_MAX 1024u
#define DEV_DISK_SERIAL_MAX 20u /* virtio-blk's GET_ID: 20 bytes */

struct dev_disk {
    char path[DEV_DISK_PATH_MAX];
    char serial[DEV_DISK_SERIAL_MAX + 1];
    bool readonly;
    bool direct;   /* cache=none: O_DIRECT */
    uint64_t size; /* a restore's expected size in bytes; 0: whatever the image has */
    bool incoming; /* opened for a restore: the lock is taken when the VM starts, not before */
};

/* Parses one --disk value into out; a bad value gives a one-line error naming the flag. */
int dev_disk_parse(const char *spec, struct dev_disk *out);

/* Opens path with flags (O_CLOEXEC added) as an image: a regular file or a block device whose
 * size is a non-zero multiple of 512 and, unless expect is 0, exactly expect bytes. Gives the
 * fd and the size; on error nothing is left open. Errors begin with what ("--disk path=X",
 * "disk 0 (X)"). */
int dev_disk_open(const char *path, int flags, const char *what, uint64_t expect, int *fd,
                  uint64_t *size);
/* Opens path read-only for a moment: it must be an image of exactly size bytes (a migration's
 * destination checks the disks the handshake names before any RAM moves). */
int dev_disk_probe(const char *path, const char *what, uint64_t size);

#endif
