#include <criterion/criterion.h>

#include "memory/mem.h"

Test(mem_layout, small_ram_is_one_region)
{
    struct mem_region r[MEM_MAX_REGIONS];
    cr_assert_eq(mem_layout(64ull << 20, r), 1);
    cr_assert_eq(r[0].gpa, 0);
    cr_assert_eq(r[0].size, 64ull << 20);
}

Test(mem_layout, ram_up_to_the_hole_is_one_region)
{
    struct mem_region r[MEM_MAX_REGIONS];
    cr_assert_eq(mem_layout(3ull << 30, r), 1);
    cr_assert_eq(r[0].size, 3ull << 30);
}

Test(mem_layout, large_ram_splits_around_the_hole)
{
    struct mem_region r[MEM_MAX_REGIONS];
    cr_assert_eq(mem_layout(6ull << 30, r), 2);
    cr_assert_eq(r[0].gpa, 0);
    cr_assert_eq(r[0].size, 3ull << 30);
    cr_assert_eq(r[1].gpa, 4ull << 30);
    cr_assert_eq(r[1].size, 3ull << 30);
    cr_assert_eq(r[1].offset, 3ull << 30, "high RAM follows low RAM in the host mapping");
}
