/* file: reading the files a user names (--kernel, --initrd, --incoming file:, tern inspect) as
 * the hostile input they may be: anything but a regular file is refused without blocking on it
 * (a FIFO nobody writes to would hang open()), and nothing larger than its limit is read.
 */
#ifndef TERN_FILE_H
#define TERN_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Opens path read-only; -EINVAL with "PATH: not a regular file" (or "is a directory") for
 * anything else. The message begins with the path. */
int file_open_regular(const char *path, int *fd);

/* The first len bytes (fewer for a shorter file, *got says how many), for a magic number. */
int file_read_head(const char *path, uint8_t *buf, size_t len, size_t *got);

/* The whole file, malloc'd, refused when larger than max_size. Messages do not name the path
 * (callers name the flag and the file). */
int file_read_all(const char *path, uint64_t max_size, uint8_t **data, size_t *len);

#endif
