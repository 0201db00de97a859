/* Reading the files a user names: anything but a regular file is refused at once, without
 * blocking (a FIFO nobody writes to), and a file larger than its limit is not read. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err/err.h"
#include "file/file.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tern-file-test-XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(file, .init = make_dir, .fini = remove_dir, .timeout = 10);

Test(file, a_fifo_is_refused_without_blocking)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    int fd;
    cr_expect_eq(file_open_regular(path, &fd), -EINVAL);
    cr_expect(strstr(err_msg(), "fifo: not a regular file"), "%s", err_msg());
    uint8_t head[16];
    size_t got;
    cr_expect_lt(file_read_head(path, head, sizeof(head), &got), 0);
    cr_expect_lt(file_open_regular(dir, &fd), 0);
    cr_expect(strstr(err_msg(), "is a directory"), "%s", err_msg());
}

Test(file, a_file_beyond_its_limit_is_not_read)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/sparse", dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(ftruncate(fd, 2ll << 30), 0); /* 2 GiB, sparse */
    close(fd);
    uint8_t *data = NULL;
    size_t len;
    cr_expect_eq(file_read_all(path, 64 << 20, &data, &len), -EFBIG);
    cr_expect(strstr(err_msg(), "2147483648 bytes, larger than the 67108864 allowed"), "%s",
              err_msg());
    cr_expect_null(data);
    uint8_t head[8];
    cr_assert_eq(file_read_head(path, head, sizeof(head), &len), 0);
    cr_expect_eq(len, 8);
    cr_expect_eq(head[0] | head[7], 0);
}
