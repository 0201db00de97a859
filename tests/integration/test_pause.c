/* The internal pause/resume API on a real VM: memstamp survives 1000 pause/resume cycles, and
 * while paused no vCPU moves. Driven from the libuv loop, as the control socket will drive it. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "err/err.h"
#include "harness.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"

#define CYCLES 1000

struct pause_ctx {
    struct vm *vm;
    uv_idle_t idle;
    int cycles;
    int stable_checks;
    bool ended;
    int cycles_at_end;
};

static void check_still(struct pause_ctx *c)
{
    for (unsigned i = 0; i < vm_cpu_count(c->vm); i++) {
        struct kvm_regs a, b;
        cr_assert_eq(ioctl(vcpu_fd(vm_vcpu(c->vm, i)), KVM_GET_REGS, &a), 0);
        usleep(2000);
        cr_assert_eq(ioctl(vcpu_fd(vm_vcpu(c->vm, i)), KVM_GET_REGS, &b), 0);
        cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "vCPU %u moved while paused (RIP %llx -> %llx)",
                     i, a.rip, b.rip);
    }
    c->stable_checks++;
}

static void on_idle(uv_idle_t *h)
{
    struct pause_ctx *c = h->data;
    if (c->cycles == CYCLES) {
        uv_idle_stop(h);
        return;
    }
    vm_pause(c->vm);
    cr_assert(vm_is_paused(c->vm));
    if (c->cycles % 100 == 0)
        check_still(c);
    vm_resume(c->vm);
    c->cycles++;
}

static void on_end(struct vm *vm, void *opaque)
{
    struct pause_ctx *c = opaque;
    c->ended = true;
    c->cycles_at_end = c->cycles;
    uv_idle_stop(&c->idle);
    vm_stop(vm);
    uv_stop(c->idle.loop);
}

Test(pause, memstamp_survives_1000_pause_resume_cycles, .init = harness_require_kvm, .timeout = 120)
{
    char path[] = "/tmp/tern-pause-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pause_ctx c = {0};
    struct vm_config cfg = {
        .mem_size = 128ull << 20,
        .cpu_count = 2,
        .kernel_path = harness_guest("memstamp"),
        .cmdline = "mib=32 passes=2000 every=500",
        .serial_out_fd = fd,
        .serial_in_fd = -1,
    };
    cr_assert_eq(vm_create(&loop, &cfg, on_end, &c, &c.vm), 0, "%s", err_msg());
    uv_idle_init(&loop, &c.idle);
    c.idle.data = &c;
    uv_idle_start(&c.idle, on_idle);
    cr_assert_eq(vm_start(c.vm, false), 0, "%s", err_msg());
    uv_run(&loop, UV_RUN_DEFAULT);

    struct vm_end end = vm_end_state(c.vm);
    vm_close(c.vm);
    uv_close((uv_handle_t *)&c.idle, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    char out[8192] = "";
    ssize_t n = pread(fd, out, sizeof(out) - 1, 0);
    close(fd);
    unlink(path);
    cr_assert(c.ended, "the guest never finished");
    cr_expect_eq(c.cycles_at_end, CYCLES,
                 "the guest finished after only %d cycles: make it run longer", c.cycles_at_end);
    cr_expect_eq(c.stable_checks, CYCLES / 100);
    cr_expect_eq(end.kind, VM_END_EXIT_CODE, "%s", end.message);
    cr_expect_eq(end.code, 0, "guest output: %s", n > 0 ? out : "");
    cr_expect(n > 0 && strstr(out, "memstamp: verified 8192 pages x 2000 passes on 2 vCPU(s): OK"),
              "guest output: %s", n > 0 ? out : "");
}
