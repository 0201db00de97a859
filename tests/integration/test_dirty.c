/* Dirty-page tracking on a real VM: the pages memstamp keeps writing come back dirty, pages
 * nobody touches do not, and pages tern marks itself join them. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err/err.h"
#include "harness.h"
#include "memory/mem.h"
#include "vm/vm.h"

struct dirty_ctx {
    struct vm *vm;
    uv_timer_t timer;
    int step;
    uint64_t first, second;
    bool range_all_dirty, far_page_clean;
};

/* memstamp's range starts at the first 2 MiB boundary after its image: 4 MiB here. */
#define RANGE_GPA (4ull << 20)
#define RANGE_PAGES 1024 /* mib=4 */
#define FAR_GPA (100ull << 20)

static void drain(struct mem *mem, bool *seen, uint64_t lo, uint64_t hi)
{
    uint64_t page = 0;
    while (mem_dirty_next(mem, &page)) {
        uint64_t gpa = mem_page_gpa(mem, page);
        if (gpa >= lo && gpa < hi)
            seen[(gpa - lo) / MEM_PAGE_SIZE] = true;
        page++;
    }
}

static void on_timer(uv_timer_t *t)
{
    struct dirty_ctx *c = t->data;
    struct mem *mem = vm_mem(c->vm);
    static bool seen[(FAR_GPA + MEM_PAGE_SIZE - RANGE_GPA) / MEM_PAGE_SIZE];
    if (c->step == 0) {
        cr_assert_eq(mem_dirty_start(mem), 0, "%s", err_msg());
        cr_assert_eq(mem_dirty_sync(mem, &c->first), 0, "%s", err_msg());
        memset(seen, 0, sizeof(seen));
        drain(mem, seen, RANGE_GPA, FAR_GPA + MEM_PAGE_SIZE);
    } else {
        vm_pause(c->vm);
        mem_dirty_mark(mem, FAR_GPA + 8 * MEM_PAGE_SIZE, 10); /* as if tern wrote there */
        cr_assert_eq(mem_dirty_sync(mem, &c->second), 0, "%s", err_msg());
        memset(seen, 0, sizeof(seen));
        drain(mem, seen, RANGE_GPA, FAR_GPA + MEM_PAGE_SIZE);
        c->range_all_dirty = true;
        for (unsigned i = 0; i < RANGE_PAGES; i++)
            c->range_all_dirty &= seen[i];
        c->far_page_clean = !seen[(FAR_GPA - RANGE_GPA) / MEM_PAGE_SIZE];
        cr_assert_eq(mem_dirty_stop(mem), 0, "%s", err_msg());
        vm_resume(c->vm);
        uv_timer_stop(t);
        vm_stop(c->vm);
        uv_stop(t->loop);
        return;
    }
    c->step++;
}

static void on_end(struct vm *vm, void *opaque)
{
    (void)vm;
    (void)opaque;
    cr_assert_fail("the guest ended early: %s", vm_end_state(vm).message);
}

Test(dirty, memstamp_pages_come_back_dirty, .init = harness_require_kvm, .timeout = 60)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dirty_ctx c = {0};
    struct vm_config cfg = {.mem_size = 128ull << 20,
                            .cpu_count = 1,
                            .kernel_path = harness_guest("memstamp"),
                            .cmdline = "mib=4 passes=0 every=1000000000",
                            .serial_out_fd = -1,
                            .serial_in_fd = -1};
    cr_assert_eq(vm_create(&loop, &cfg, on_end, &c, &c.vm), 0, "%s", err_msg());
    uv_timer_init(&loop, &c.timer);
    c.timer.data = &c;
    uv_timer_start(&c.timer, on_timer, 200, 100);
    cr_assert_eq(vm_start(c.vm, false), 0, "%s", err_msg());
    uv_run(&loop, UV_RUN_DEFAULT);
    vm_close(c.vm);
    uv_close((uv_handle_t *)&c.timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    cr_expect_gt(c.first, RANGE_PAGES, "the first sync sees at least the stamped range");
    cr_expect(c.range_all_dirty, "every stamped page was dirtied again after the first sync");
    cr_expect(c.far_page_clean, "a page nobody wrote stays clean");
    cr_expect_lt(c.second, RANGE_PAGES + 64, "only what the guest wrote is dirty (%llu)",
                 (unsigned long long)c.second);
    cr_expect_geq(c.second, RANGE_PAGES + 1, "the page tern marked is counted");
}
