#include <criterion/criterion.h>
#include <string.h>

#include "cli/cli.h"
#include "err/err.h"

Test(parse_size, accepts_suffixes_and_bytes)
{
    uint64_t v;
    cr_assert_eq(cli_parse_size("--mem", "64M", &v), 0);
    cr_assert_eq(v, 64ull << 20);
    cr_assert_eq(cli_parse_size("--mem", "1G", &v), 0);
    cr_assert_eq(v, 1ull << 30);
    cr_assert_eq(cli_parse_size("--mem", "512K", &v), 0);
    cr_assert_eq(v, 512ull << 10);
    cr_assert_eq(cli_parse_size("--mem", "8192", &v), 0);
    cr_assert_eq(v, 8192);
    cr_assert_eq(cli_parse_size("--mem", "2g", &v), 0);
    cr_assert_eq(v, 2ull << 30);
    cr_assert_eq(cli_parse_size("--mem", "16MiB", &v), 0);
    cr_assert_eq(v, 16ull << 20);
}

static void expect_size_error(const char *text, const char *fragment)
{
    uint64_t v = 12345;
    cr_assert_lt(cli_parse_size("--mem", text, &v), 0, "'%s' was accepted", text);
    cr_assert_eq(v, 12345, "output written on error");
    cr_assert(strstr(err_msg(), "--mem"), "error names the flag: %s", err_msg());
    cr_assert(strstr(err_msg(), fragment), "'%s' not in '%s'", fragment, err_msg());
}

Test(parse_size, rejects_bad_sizes)
{
    expect_size_error("0", "zero");
    expect_size_error("0M", "zero");
    expect_size_error("abc", "not a size");
    expect_size_error("", "not a size");
    expect_size_error("-1", "not a size");
    expect_size_error("12Q", "not a size");
    expect_size_error("64MB2", "not a size");
    expect_size_error("4097", "multiple of 4 KiB");
    expect_size_error("1000", "multiple of 4 KiB");
    expect_size_error("99999999999999999999", "too large");
    expect_size_error("99999999999T", "too large");
}

Test(parse_uint, bounds)
{
    unsigned long v;
    cr_assert_eq(cli_parse_uint("--cpus", "4", 1, 64, &v), 0);
    cr_assert_eq(v, 4);
    cr_assert_lt(cli_parse_uint("--cpus", "0", 1, 64, &v), 0);
    cr_assert(strstr(err_msg(), "--cpus: 0 is out of range (1-64)"), "%s", err_msg());
    cr_assert_lt(cli_parse_uint("--cpus", "65", 1, 64, &v), 0);
    cr_assert_lt(cli_parse_uint("--cpus", "4x", 1, 64, &v), 0);
    cr_assert(strstr(err_msg(), "not a number"), "%s", err_msg());
}

Test(parse_rate, suffixes_and_errors)
{
    uint64_t v;
    cr_assert_eq(cli_parse_rate("--bandwidth", "100M", &v), 0);
    cr_assert_eq(v, 100ull << 20);
    cr_assert_eq(cli_parse_rate("--bandwidth", "1000", &v), 0);
    cr_assert_eq(v, 1000, "a rate need not be a multiple of 4 KiB");
    cr_assert_lt(cli_parse_rate("--bandwidth", "fast", &v), 0);
    cr_assert(strstr(err_msg(), "--bandwidth: 'fast' is not a rate"), "%s", err_msg());
    cr_assert_lt(cli_parse_rate("--bandwidth", "0", &v), 0);
    cr_assert(strstr(err_msg(), "must not be zero"), "%s", err_msg());
}
