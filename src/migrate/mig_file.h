/* mig_file: the state stream in a file (URI file:PATH) — snapshots and their restore.
 *
 * A snapshot is written to a new file of its own, PATH.tmp.XXXXXX (created exclusively, mode
 * 0600: it holds guest RAM), and renamed over PATH only once complete and fsynced, so a failed
 * snapshot never leaves a half-written file under the name asked for, nor any file at all. PATH
 * must be a regular file or nothing yet.
 */
#ifndef TERN_MIG_FILE_H
#define TERN_MIG_FILE_H

#include <stdio.h>

#include "migrate/mig_capture.h"

/* Parses "file:PATH"; returns PATH or NULL (with a message naming uri). */
const char *mig_file_uri_path(const char *what, const char *uri);

/* compress: "none", "zlib" or "zlib:LEVEL"; NULL means none. */
int mig_parse_compress(const char *what, const char *compress, int *level);

int mig_snapshot_to_file(struct vm *vm, const char *path, int compress_level,
                         struct mig_stats *stats, uint64_t *bytes);

/* A buffered reader over an open file (a regular one). */
struct mig_file_reader {
    FILE *file;
    struct mig_reader reader;
};
int mig_file_open(const char *path, struct mig_file_reader *fr);
void mig_file_close(struct mig_file_reader *fr);

#endif
