/* The restore order, without /dev/kvm: a recording ioctl backend stands in for KVM while a full
 * VM state (two vCPUs in VMX operation with eVMCS enabled, as a nested guest has it) is
 * restored; the calls must keep each of KVM's rules (design notes, "Per-vCPU state"), follow
 * the step tables, and match the order docs/stream-format.md states. */
#include <criterion/criterion.h>
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "err/err.h"
#include "kvm/kvm.h"
#include "vcpu/vcpu.h"
#include "vcpu/vcpu_state.h"
#include "vm/vm_state.h"

#define CALLS_MAX 256
#define VM_FD 1000
#define RUN_SIZE 4096
#define MSR_TSC 0x10u
#define MSR_FEATURE_CONTROL 0x3au
#define MSR_VMX_BASIC 0x480u
#define MSR_TSC_DEADLINE 0x6e0u
#define MSR_HV_VP_ASSIST 0x40000073u
#define MSR_HV_GUEST_OS_ID 0x40000000u
#define MSR_HV_HYPERCALL 0x40000001u

struct call {
    int fd;
    unsigned long request;
    uint32_t msrs[8]; /* KVM_SET_MSRS: the indexes set */
    unsigned nmsrs;
};

static struct call calls[CALLS_MAX];
static unsigned ncalls;

static int record_ioctl(void *opaque, int fd, unsigned long request, void *arg)
{
    (void)opaque;
    cr_assert_lt(ncalls, CALLS_MAX);
    struct call *c = &calls[ncalls++];
    *c = (struct call){.fd = fd, .request = request};
    switch (request) {
    case KVM_CREATE_VCPU: { /* a real fd, so that kvm_run can be mapped */
        int m = memfd_create("vcpu", MFD_CLOEXEC);
        cr_assert(m >= 0 && ftruncate(m, RUN_SIZE) == 0);
        return m;
    }
    case KVM_GET_TSC_KHZ:
        return 1000000; /* not the state's rate: KVM_SET_TSC_KHZ must follow */
    case KVM_SET_MSRS: {
        const struct kvm_msrs *m = arg;
        for (uint32_t i = 0; i < m->nmsrs && c->nmsrs < 8; i++)
            c->msrs[c->nmsrs++] = m->entries[i].index;
        return (int)m->nmsrs;
    }
    default:
        return 0;
    }
}

static const struct kvm_backend recorder = {.ioctl = record_ioctl};

/* The first recorded call on fd with request (and, for KVM_SET_MSRS, naming msr); -1: none. */
static int call_index(int fd, unsigned long request, uint32_t msr)
{
    for (unsigned i = 0; i < ncalls; i++) {
        if (calls[i].fd != fd || calls[i].request != request)
            continue;
        if (request != KVM_SET_MSRS)
            return (int)i;
        for (unsigned k = 0; k < calls[i].nmsrs; k++)
            if (calls[i].msrs[k] == msr)
                return (int)i;
    }
    return -1;
}

#define BEFORE(fd, a, ma, b, mb, why)                                                              \
    do {                                                                                           \
        int ia_ = call_index(fd, a, ma), ib_ = call_index(fd, b, mb);                              \
        cr_expect(ia_ >= 0 && ib_ >= 0 && ia_ < ib_, "%s: %s (call %d) before %s (call %d)", why,  \
                  #a, ia_, #b, ib_);                                                               \
    } while (0)

/* A vCPU state as a nested guest's looks: every item, eVMCS enabled, VMXON done. */
static void fill_vcpu(struct vcpu_state *v)
{
    struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
    struct kvm_vcpu_events ev = {0};
    struct kvm_regs regs = {.rip = 0x200000, .rflags = 2};
    struct kvm_xcrs xcrs = {.nr_xcrs = 1, .xcrs = {{.xcr = 0, .value = 3}}};
    struct kvm_sregs2 sregs2 = {.cr0 = 0x80050033, .cr4 = 0x2620, .efer = 0x500};
    struct kvm_lapic_state lapic = {0};
    struct kvm_debugregs dr = {0};
    uint32_t khz = 2000000;
    struct vcpu_evmcs evmcs = {.version = 0x0101};
    struct kvm_msr_entry msrs[] = {
        {.index = MSR_TSC, .data = 12345},
        {.index = MSR_FEATURE_CONTROL, .data = 5},
        {.index = MSR_VMX_BASIC, .data = 0xda0400000011ull},
        {.index = MSR_TSC_DEADLINE, .data = 99999},
        {.index = MSR_HV_VP_ASSIST, .data = 0x7001},
        {.index = MSR_HV_HYPERCALL, .data = 0x6001},
        {.index = MSR_HV_GUEST_OS_ID, .data = 0x8100000000000001ull},
    };
    struct kvm_nested_state ns = {.format = KVM_STATE_NESTED_FORMAT_VMX,
                                  .size = 128,
                                  .hdr.vmx.vmxon_pa = 0x7000,
                                  .hdr.vmx.vmcs12_pa = ~0ull};
    static uint8_t xsave[4096];
    cr_assert_eq(vcpu_state_put(v, VCPU_MP_STATE, &mp, sizeof(mp)), 0, "%s", err_msg());
    cr_assert_eq(vcpu_state_put(v, VCPU_EVENTS, &ev, sizeof(ev)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_REGS, &regs, sizeof(regs)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_XSAVE, xsave, sizeof(xsave)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_XCRS, &xcrs, sizeof(xcrs)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_SREGS2, &sregs2, sizeof(sregs2)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_MSRS, msrs, sizeof(msrs)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_LAPIC, &lapic, sizeof(lapic)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_DEBUGREGS, &dr, sizeof(dr)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_TSC_KHZ, &khz, sizeof(khz)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_EVMCS, &evmcs, sizeof(evmcs)), 0);
    cr_assert_eq(vcpu_state_put(v, VCPU_NESTED, &ns, sizeof(ns)), 0);
}

static struct vm_state *state;
static struct vcpu *vcpus[2];
static struct kvm_cpuid2 *cpuid[VM_MAX_CPUS];
static struct kvm_clock_data clock_out;
static bool clock_pending;
static int apply_rc;

/* Restores a two-vCPU state through the recorder. */
static void restore_through_recorder(void)
{
    static const struct vcpu_events events = {0};
    ncalls = 0;
    state = calloc(1, sizeof(*state));
    state->cpu_count = 2;
    for (uint32_t chip = 0; chip < VM_IRQCHIPS; chip++) {
        struct kvm_irqchip c = {.chip_id = chip};
        cr_assert_eq(vm_state_put(state, VM_IRQCHIP, chip, &c, sizeof(c)), 0);
    }
    struct kvm_pit_state2 pit = {0};
    struct kvm_clock_data clock = {.clock = 123456789};
    cr_assert_eq(vm_state_put(state, VM_PIT2, 0, &pit, sizeof(pit)), 0);
    cr_assert_eq(vm_state_put(state, VM_CLOCK, 0, &clock, sizeof(clock)), 0);
    kvm_set_backend(&recorder);
    for (unsigned i = 0; i < 2; i++) {
        fill_vcpu(&state->vcpus[i]);
        cpuid[i] = calloc(1, sizeof(*cpuid[i]) + sizeof(struct kvm_cpuid_entry2));
        cpuid[i]->nent = 1;
        cr_assert_eq(vcpu_create(VM_FD, i, RUN_SIZE, NULL, &events, &vcpus[i]), 0, "%s", err_msg());
    }
    struct vm_restore_target t = {
        .vm_fd = VM_FD,
        .cpu_count = 2,
        .vcpus = vcpus,
        .env = {.nested_max = 8320, .evmcs = true, .xsave_size = 4096},
        .clock = &clock_out,
        .clock_pending = &clock_pending,
    };
    apply_rc = vm_state_apply(&t, state, cpuid);
    kvm_set_backend(NULL);
}

static void release(void)
{
    for (unsigned i = 0; i < 2; i++) {
        vcpu_destroy(vcpus[i]);
        free(cpuid[i]);
    }
    vm_state_free(state);
    free(state);
}

Test(restore_order, keeps_every_rule_of_kvm_on_every_vcpu, .fini = release)
{
    restore_through_recorder();
    cr_assert_eq(apply_rc, 0, "%s", err_msg());
    int first_lapic = -1;
    for (unsigned i = 0; i < 2; i++) {
        int fd = vcpu_fd(vcpus[i]);
        BEFORE(fd, KVM_SET_CPUID2, 0, KVM_ENABLE_CAP, 0, "CPUID first");
        cr_expect_lt(call_index(fd, KVM_SET_CPUID2, 0), call_index(VM_FD, KVM_SET_IRQCHIP, 0),
                     "every vCPU's CPUID before the VM's irqchip");
        BEFORE(fd, KVM_ENABLE_CAP, 0, KVM_SET_NESTED_STATE, 0, "eVMCS before nested state");
        BEFORE(fd, KVM_SET_MSRS, MSR_FEATURE_CONTROL, KVM_SET_NESTED_STATE, 0,
               "feature control before nested state");
        BEFORE(fd, KVM_SET_MSRS, MSR_VMX_BASIC, KVM_SET_NESTED_STATE, 0,
               "VMX capability MSRs before nested state");
        BEFORE(fd, KVM_SET_SREGS2, 0, KVM_SET_NESTED_STATE, 0, "SREGS2 before nested state");
        BEFORE(fd, KVM_SET_NESTED_STATE, 0, KVM_SET_REGS, 0, "nested state before REGS");
        BEFORE(fd, KVM_SET_TSC_KHZ, 0, KVM_SET_MSRS, MSR_TSC, "TSC rate before the TSC");
        BEFORE(fd, KVM_SET_XCRS, 0, KVM_SET_XSAVE, 0, "XCR0 before XSAVE");
        BEFORE(fd, KVM_SET_REGS, 0, KVM_SET_VCPU_EVENTS, 0, "REGS before VCPU_EVENTS");
        BEFORE(fd, KVM_SET_SREGS2, 0, KVM_SET_LAPIC, 0, "SREGS2 (APIC base) before LAPIC");
        BEFORE(fd, KVM_SET_LAPIC, 0, KVM_SET_MSRS, MSR_TSC_DEADLINE, "LAPIC before TSC_DEADLINE");
        int hv = call_index(fd, KVM_SET_MSRS, MSR_HV_VP_ASSIST);
        cr_assert_geq(hv, 0, "the VP assist page");
        cr_expect(calls[hv].msrs[0] == MSR_HV_GUEST_OS_ID && calls[hv].msrs[1] == MSR_HV_HYPERCALL,
                  "the guest OS id before the hypercall page, in one KVM_SET_MSRS");
        BEFORE(fd, KVM_SET_LAPIC, 0, KVM_SET_MSRS, MSR_HV_VP_ASSIST, "LAPIC before Hyper-V MSRs");
        cr_expect_lt(call_index(VM_FD, KVM_SET_CLOCK, 0), call_index(fd, KVM_SET_MSRS, MSR_TSC),
                     "the clock before the vCPUs' MSRs (Hyper-V timers reckon from it)");
        cr_expect_geq(call_index(fd, KVM_SET_MP_STATE, 0), 0);
        cr_expect_geq(call_index(fd, KVM_SET_DEBUGREGS, 0), 0);
        int lapic = call_index(fd, KVM_SET_LAPIC, 0);
        if (first_lapic < 0 || lapic < first_lapic)
            first_lapic = lapic;
    }
    unsigned chips = 0;
    for (unsigned k = 0; k < ncalls; k++)
        chips += calls[k].fd == VM_FD && calls[k].request == KVM_SET_IRQCHIP;
    cr_expect_eq(chips, VM_IRQCHIPS, "one KVM_SET_IRQCHIP per chip");
    cr_expect_lt(call_index(VM_FD, KVM_SET_IRQCHIP, 0), first_lapic, "irqchip before LAPICs");
    cr_expect_lt(call_index(VM_FD, KVM_SET_PIT2, 0), first_lapic, "PIT before LAPICs");
    cr_expect(clock_pending && clock_out.clock == 123456789,
              "the clock is kept for vm_start, which sets it again right before the first run");
}

/* Which vCPU restore step a recorded call belongs to. */
static const char *step_of(const struct call *c)
{
    switch (c->request) {
    case KVM_ENABLE_CAP:
        return "EVMCS";
    case KVM_SET_SREGS2:
        return "SREGS2";
    case KVM_SET_NESTED_STATE:
        return "NESTED_STATE";
    case KVM_GET_TSC_KHZ:
    case KVM_SET_TSC_KHZ:
        return "TSC_KHZ";
    case KVM_SET_REGS:
        return "REGS";
    case KVM_SET_XCRS:
        return "XCRS";
    case KVM_SET_XSAVE:
        return "XSAVE";
    case KVM_SET_VCPU_EVENTS:
        return "VCPU_EVENTS";
    case KVM_SET_MP_STATE:
        return "MP_STATE";
    case KVM_SET_LAPIC:
        return "LAPIC";
    case KVM_SET_DEBUGREGS:
        return "DEBUGREGS";
    case KVM_SET_MSRS:
        if (c->msrs[0] == MSR_FEATURE_CONTROL || c->msrs[0] == MSR_VMX_BASIC)
            return "VMX_MSRS";
        if (c->msrs[0] >= MSR_HV_GUEST_OS_ID && c->msrs[0] <= 0x400001ffu)
            return "HYPERV_MSRS";
        return c->msrs[0] == MSR_TSC_DEADLINE ? "TSC_DEADLINE" : "MSRS";
    default:
        return NULL; /* CPUID2 and the vCPU's creation: the VM's steps */
    }
}

Test(restore_order, runs_the_vcpu_steps_as_the_table_lists_them, .fini = release)
{
    restore_through_recorder();
    cr_assert_eq(apply_rc, 0, "%s", err_msg());
    for (unsigned i = 0; i < 2; i++) {
        unsigned step = 0;
        const char *last = NULL;
        for (unsigned k = 0; k < ncalls; k++) {
            const char *name = calls[k].fd == vcpu_fd(vcpus[i]) ? step_of(&calls[k]) : NULL;
            if (!name || (last && !strcmp(name, last)))
                continue;
            cr_assert_lt(step, vcpu_restore_step_count, "more steps than the table: %s", name);
            cr_expect_str_eq(name, vcpu_restore_steps[step].rule.name, "vCPU %u, step %u", i, step);
            last = name;
            step++;
        }
        cr_expect_eq(step, vcpu_restore_step_count, "vCPU %u ran %u of %u steps", i, step,
                     vcpu_restore_step_count);
    }
}

Test(restore_order, tables_keep_their_own_rules)
{
    cr_expect_eq(order_check("vCPU restore", vcpu_restore_steps, sizeof(vcpu_restore_steps[0]),
                             vcpu_restore_step_count),
                 0, "%s", err_msg());
    cr_expect_eq(order_check("VM restore", vm_restore_steps, sizeof(vm_restore_steps[0]),
                             vm_restore_step_count),
                 0, "%s", err_msg());
    /* A table that puts REGS before nested state breaks REGS's rule, and the check says so. */
    struct vcpu_restore_step bad[32];
    unsigned n = vcpu_restore_step_count, regs = 0, nested = 0;
    memcpy(bad, vcpu_restore_steps, n * sizeof(bad[0]));
    for (unsigned k = 0; k < n; k++) {
        regs = strcmp(bad[k].rule.name, "REGS") ? regs : k;
        nested = strcmp(bad[k].rule.name, "NESTED_STATE") ? nested : k;
    }
    cr_assert_lt(nested, regs);
    struct vcpu_restore_step t = bad[nested];
    bad[nested] = bad[regs];
    bad[regs] = t;
    bad[nested].rule.after = ORDER_AFTER(regs); /* REGS, now at nested's place, follows it */
    cr_expect_lt(order_check("vCPU restore", bad, sizeof(bad[0]), n), 0);
    cr_expect(strstr(err_msg(), "step REGS must follow NESTED_STATE"), "%s", err_msg());
}

/* The numbered lines of docs/stream-format.md's "## Restore order": level 0 the VM's steps,
 * level 1 (indented) the vCPU's. */
static unsigned doc_steps(int level, char names[][32], unsigned max)
{
    FILE *f = fopen(TERN_SOURCE_DIR "/docs/stream-format.md", "r");
    cr_assert(f, "cannot open docs/stream-format.md");
    char line[512];
    bool in = false;
    unsigned n = 0;
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "## ", 3))
            in = !strncmp(line, "## Restore order", 16);
        const char *p = line;
        int indent = 0;
        while (*p == ' ')
            p++, indent++;
        unsigned num;
        char name[32];
        if (!in || sscanf(p, "%u. %31[A-Z0-9_]", &num, name) != 2 || (indent > 0) != level)
            continue;
        cr_assert_lt(n, max);
        snprintf(names[n++], 32, "%s", name);
    }
    fclose(f);
    return n;
}

Test(restore_order, the_stream_format_document_states_the_same_order)
{
    char names[32][32];
    unsigned n = doc_steps(0, names, 32);
    cr_expect_eq(n, vm_restore_step_count, "the document lists %u VM steps", n);
    for (unsigned k = 0; k < n && k < vm_restore_step_count; k++)
        cr_expect_str_eq(names[k], vm_restore_steps[k].rule.name, "VM step %u", k + 1);
    n = doc_steps(1, names, 32);
    cr_expect_eq(n, vcpu_restore_step_count, "the document lists %u vCPU steps", n);
    for (unsigned k = 0; k < n && k < vcpu_restore_step_count; k++)
        cr_expect_str_eq(names[k], vcpu_restore_steps[k].rule.name, "vCPU step %u", k + 1);
}
