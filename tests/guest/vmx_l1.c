/* vmx_l1: a minimal L1 hypervisor, for tern run --nested on a VT-x host (it runs at CPL0).
 *
 * It checks CPUID and IA32_FEATURE_CONTROL, then VMXON, VMCLEAR, VMPTRLD and the VMWRITEs of a
 * 64-bit L2 that shares its page tables and GDT, and VMLAUNCH. L2 counts in a loop and does a
 * VMCALL every `step` iterations with its count in RDI; L1 checks that each count follows the
 * last by exactly `step` and resumes it, `rounds` times. Each stage is printed; the exit code is
 * the number of discontinuities (0: L2's count was continuous throughout).
 *
 * Built as evmcs_l1 (needs --hyperv=evmcs too), it enters L2 through Hyper-V's enlightened VMCS
 * instead, named in the VP assist page, in the manner of KVM's hyperv_evmcs selftest; with
 * evmcs=1 it sets up the VP assist page but never makes an eVMCS active (plain VMCS entries).
 *
 * Command line (all optional): rounds=R step=N hold=H hold_ms=MS fill=MiB evmcs=0|1|2, where H
 * stops L1 for MS milliseconds (TSC time) at a stage, so that a test can snapshot or migrate the VM
 * there: 1 before VMXON, 2 after VMXON with no current VMCS, 3 with the VMCS loaded and written but
 * not launched. fill=MiB first writes a pattern over that much RAM from 4 MiB up, to give a
 * live migration's pre-copy something to send.
 */
#include "rt.h"

const bool rt_guest_cpl0 = true;

#ifndef L1_EVMCS_DEFAULT
#define L1_EVMCS_DEFAULT 0
#endif

#define MSR_FEATURE_CONTROL 0x3a
#define MSR_VMX_BASIC 0x480
#define MSR_VMX_PINBASED 0x481
#define MSR_VMX_PROCBASED 0x482
#define MSR_VMX_EXIT 0x483
#define MSR_VMX_ENTRY 0x484
#define MSR_VMX_CR0_FIXED0 0x486
#define MSR_VMX_CR0_FIXED1 0x487
#define MSR_VMX_CR4_FIXED0 0x488
#define MSR_VMX_CR4_FIXED1 0x489
#define MSR_VMX_TRUE_PINBASED 0x48d
#define MSR_VMX_TRUE_PROCBASED 0x48e
#define MSR_VMX_TRUE_EXIT 0x48f
#define MSR_VMX_TRUE_ENTRY 0x490
#define CR4_VMXE (1ul << 13)

/* VMCS field encodings (SDM Vol. 3, appendix B). */
enum {
    PIN_BASED_CONTROLS = 0x4000,
    PROC_BASED_CONTROLS = 0x4002,
    EXCEPTION_BITMAP = 0x4004,
    CR3_TARGET_COUNT = 0x400a,
    EXIT_CONTROLS = 0x400c,
    EXIT_MSR_STORE_COUNT = 0x400e,
    EXIT_MSR_LOAD_COUNT = 0x4010,
    ENTRY_CONTROLS = 0x4012,
    ENTRY_MSR_LOAD_COUNT = 0x4014,
    ENTRY_INTR_INFO = 0x4016,
    VM_INSTRUCTION_ERROR = 0x4400,
    EXIT_REASON = 0x4402,
    EXIT_QUALIFICATION = 0x6400,
    EXIT_INSTRUCTION_LEN = 0x440c,
    VMCS_LINK_POINTER = 0x2800,
    GUEST_ES_SELECTOR = 0x0800, /* ES CS SS DS FS GS LDTR TR, 2 apart */
    GUEST_ES_LIMIT = 0x4800,
    GUEST_GDTR_LIMIT = 0x4810,
    GUEST_IDTR_LIMIT = 0x4812,
    GUEST_ES_AR = 0x4814,
    GUEST_INTERRUPTIBILITY = 0x4824,
    GUEST_ACTIVITY_STATE = 0x4826,
    GUEST_SYSENTER_CS = 0x482a,
    GUEST_CR0 = 0x6800,
    GUEST_CR3 = 0x6802,
    GUEST_CR4 = 0x6804,
    GUEST_ES_BASE = 0x6806,
    GUEST_GDTR_BASE = 0x6816,
    GUEST_IDTR_BASE = 0x6818,
    GUEST_DR7 = 0x681a,
    GUEST_RSP = 0x681c,
    GUEST_RIP = 0x681e,
    GUEST_RFLAGS = 0x6820,
    GUEST_PENDING_DBG = 0x6822,
    GUEST_SYSENTER_ESP = 0x6824,
    GUEST_SYSENTER_EIP = 0x6826,
    HOST_ES_SELECTOR = 0x0c00, /* ES CS SS DS FS GS TR, 2 apart */
    HOST_SYSENTER_CS = 0x4c00,
    HOST_CR0 = 0x6c00,
    HOST_CR3 = 0x6c02,
    HOST_CR4 = 0x6c04,
    HOST_FS_BASE = 0x6c06,
    HOST_GS_BASE = 0x6c08,
    HOST_TR_BASE = 0x6c0a,
    HOST_GDTR_BASE = 0x6c0c,
    HOST_IDTR_BASE = 0x6c0e,
    HOST_SYSENTER_ESP = 0x6c10,
    HOST_SYSENTER_EIP = 0x6c12,
    HOST_RIP = 0x6c16,
};
#define EXIT_REASON_VMCALL 18
#define EXIT_HOST_64BIT (1u << 9)
#define ENTRY_IA32E_GUEST (1u << 9)
#define SEL_CODE 0x08
#define SEL_DATA 0x10

/* Hyper-V's enlightened VMCS, version 1, as the TLFS lays it out (HV_VMX_ENLIGHTENED_VMCS);
 * natural alignment gives its offsets. */
struct evmcs_v1 {
    uint32_t revision_id, abort;
    uint16_t host_sel[7]; /* ES CS SS DS FS GS TR */
    uint64_t host_pat, host_efer, host_cr0, host_cr3, host_cr4;
    uint64_t host_sysenter_esp, host_sysenter_eip, host_rip;
    uint32_t host_sysenter_cs, pin_controls, exit_controls, secondary_controls;
    uint64_t io_bitmap_a, io_bitmap_b, msr_bitmap;
    uint16_t guest_sel[8];    /* ES CS SS DS FS GS LDTR TR */
    uint32_t guest_limit[10]; /* the same, then GDTR IDTR */
    uint32_t guest_ar[8];
    uint64_t guest_base[10];
    uint64_t reserved1[3];
    uint64_t exit_msr_store_addr, exit_msr_load_addr, entry_msr_load_addr;
    uint64_t cr3_target[4];
    uint32_t pfec_mask, pfec_match, cr3_target_count, exit_msr_store_count;
    uint32_t exit_msr_load_count, entry_msr_load_count;
    uint64_t tsc_offset, virtual_apic_page, vmcs_link_pointer;
    uint64_t guest_debugctl, guest_pat, guest_efer, guest_pdpte[4];
    uint64_t guest_pending_dbg, guest_sysenter_esp, guest_sysenter_eip;
    uint32_t guest_activity_state, guest_sysenter_cs;
    uint64_t cr0_mask, cr4_mask, cr0_shadow, cr4_shadow;
    uint64_t guest_cr0, guest_cr3, guest_cr4, guest_dr7;
    uint64_t host_fs_base, host_gs_base, host_tr_base, host_gdtr_base, host_idtr_base;
    uint64_t host_rsp, ept_pointer;
    uint16_t vpid, reserved2[3];
    uint64_t reserved3[5];
    uint64_t exit_guest_physical;
    uint32_t instruction_error, exit_reason, exit_intr_info, exit_intr_error;
    uint32_t idt_vectoring_info, idt_vectoring_error, exit_instruction_len, exit_instruction_info;
    uint64_t exit_qualification, io_rcx, io_rsi, io_rdi, io_rip, guest_linear;
    uint64_t guest_rsp, guest_rflags;
    uint32_t guest_interruptibility, proc_controls, exception_bitmap, entry_controls;
    uint32_t entry_intr_info, entry_exception_error, entry_instruction_len, tpr_threshold;
    uint64_t guest_rip;
    uint32_t clean_fields, reserved4, synthetic_controls, enlightenments_control;
    uint32_t vp_id;
    uint64_t vm_id, partition_assist_page;
};
_Static_assert(__builtin_offsetof(struct evmcs_v1, host_pat) == 24, "eVMCS layout");

/* Whole pages: KVM reads the eVMCS's later fields (zero here) too. */
static union {
    struct evmcs_v1 e;
    uint8_t page[4096];
} evmcs_page __attribute__((aligned(4096)));
#define evmcs evmcs_page.e
/* What VMWRITE/VMREAD reach in the eVMCS: the encodings vmcs_setup and the exit path use. */
static const struct {
    uint16_t field;
    uint16_t offset;
    uint8_t size;
} evmcs_fields[] = {
#define F(enc, member)                                                                             \
    {                                                                                              \
        enc, __builtin_offsetof(struct evmcs_v1, member), sizeof(evmcs.member)                     \
    }
#define FA(enc, member, i)                                                                         \
    {                                                                                              \
        enc, __builtin_offsetof(struct evmcs_v1, member[i]), sizeof(evmcs.member[0])               \
    }
    F(0x4000, pin_controls),
    F(0x4002, proc_controls),
    F(0x4004, exception_bitmap),
    F(0x400a, cr3_target_count),
    F(0x400c, exit_controls),
    F(0x400e, exit_msr_store_count),
    F(0x4010, exit_msr_load_count),
    F(0x4012, entry_controls),
    F(0x4014, entry_msr_load_count),
    F(0x4016, entry_intr_info),
    F(0x4400, instruction_error),
    F(0x4402, exit_reason),
    F(0x6400, exit_qualification),
    F(0x440c, exit_instruction_len),
    F(0x2800, vmcs_link_pointer),
    FA(0x0800, guest_sel, 0),
    FA(0x0802, guest_sel, 1),
    FA(0x0804, guest_sel, 2),
    FA(0x0806, guest_sel, 3),
    FA(0x0808, guest_sel, 4),
    FA(0x080a, guest_sel, 5),
    FA(0x080c, guest_sel, 6),
    FA(0x080e, guest_sel, 7),
    FA(0x4800, guest_limit, 0),
    FA(0x4802, guest_limit, 1),
    FA(0x4804, guest_limit, 2),
    FA(0x4806, guest_limit, 3),
    FA(0x4808, guest_limit, 4),
    FA(0x480a, guest_limit, 5),
    FA(0x480c, guest_limit, 6),
    FA(0x480e, guest_limit, 7),
    FA(0x4810, guest_limit, 8),
    FA(0x4812, guest_limit, 9),
    FA(0x4814, guest_ar, 0),
    FA(0x4816, guest_ar, 1),
    FA(0x4818, guest_ar, 2),
    FA(0x481a, guest_ar, 3),
    FA(0x481c, guest_ar, 4),
    FA(0x481e, guest_ar, 5),
    FA(0x4820, guest_ar, 6),
    FA(0x4822, guest_ar, 7),
    FA(0x6806, guest_base, 0),
    FA(0x6808, guest_base, 1),
    FA(0x680a, guest_base, 2),
    FA(0x680c, guest_base, 3),
    FA(0x680e, guest_base, 4),
    FA(0x6810, guest_base, 5),
    FA(0x6812, guest_base, 6),
    FA(0x6814, guest_base, 7),
    FA(0x6816, guest_base, 8),
    FA(0x6818, guest_base, 9),
    F(0x4824, guest_interruptibility),
    F(0x4826, guest_activity_state),
    F(0x482a, guest_sysenter_cs),
    F(0x6800, guest_cr0),
    F(0x6802, guest_cr3),
    F(0x6804, guest_cr4),
    F(0x681a, guest_dr7),
    F(0x681c, guest_rsp),
    F(0x681e, guest_rip),
    F(0x6820, guest_rflags),
    F(0x6822, guest_pending_dbg),
    F(0x6824, guest_sysenter_esp),
    F(0x6826, guest_sysenter_eip),
    FA(0x0c00, host_sel, 0),
    FA(0x0c02, host_sel, 1),
    FA(0x0c04, host_sel, 2),
    FA(0x0c06, host_sel, 3),
    FA(0x0c08, host_sel, 4),
    FA(0x0c0a, host_sel, 5),
    FA(0x0c0c, host_sel, 6),
    F(0x4c00, host_sysenter_cs),
    F(0x6c00, host_cr0),
    F(0x6c02, host_cr3),
    F(0x6c04, host_cr4),
    F(0x6c06, host_fs_base),
    F(0x6c08, host_gs_base),
    F(0x6c0a, host_tr_base),
    F(0x6c0c, host_gdtr_base),
    F(0x6c0e, host_idtr_base),
    F(0x6c10, host_sysenter_esp),
    F(0x6c12, host_sysenter_eip),
    F(0x6c14, host_rsp),
    F(0x6c16, host_rip),
#undef F
#undef FA
};

/* The VP assist page (HV_VP_ASSIST_PAGE): where L1 says which eVMCS its next entry uses. */
struct vp_assist {
    uint32_t apic_assist, reserved;
    uint64_t vtl_control[2], nested_control[2];
    uint32_t enlighten_vmentry;
    uint64_t current_nested_vmcs;
};
static union {
    struct vp_assist a;
    uint8_t page[4096];
} vp_assist_page __attribute__((aligned(4096)));
#define vp_assist vp_assist_page.a
#define HV_MSR_GUEST_OS_ID 0x40000000
#define HV_MSR_VP_ASSIST_PAGE 0x40000073

/* 0: ordinary VMCS; 1: the same with the VP assist page set up (eVMCS enabled, never
 * active); 2: entries through the enlightened VMCS. */
static unsigned l1_evmcs;
uint64_t *l1_host_rsp_slot; /* in eVMCS mode, where l1_run_l2 stores HOST_RSP */

static uint8_t vmxon_region[4096] __attribute__((aligned(4096)));
static uint8_t vmcs_region[4096] __attribute__((aligned(4096)));
static uint8_t l2_stack[16384] __attribute__((aligned(16)));

/* L2's general registers while L1 runs: saved at every exit, loaded at every entry. */
struct l2_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15;
};
struct l2_regs l2_regs;
uint8_t l1_launched;
static volatile uint64_t l2_step;

/* l1_run_l2: enters L2 (VMLAUNCH the first time, VMRESUME after) and returns 0 at its next
 * VM exit, with L2's registers in l2_regs; returns 1 when the entry itself failed. HOST_RSP is
 * written here, so that the exit lands on this frame. */
int l1_run_l2(void);
void l1_exit_point(void);
__asm__(".text\n"
        ".global l1_run_l2\n"
        "l1_run_l2:\n"
        "  push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
        "  mov l1_host_rsp_slot(%rip), %rax\n"
        "  test %rax, %rax\n"
        "  jz 3f\n"
        "  mov %rsp, (%rax)\n"
        "  jmp 4f\n"
        "3: mov $0x6c14, %rax\n"
        "  vmwrite %rsp, %rax\n"
        "4:\n"
        "  mov l2_regs+8(%rip), %rbx\n  mov l2_regs+16(%rip), %rcx\n"
        "  mov l2_regs+24(%rip), %rdx\n  mov l2_regs+32(%rip), %rsi\n"
        "  mov l2_regs+40(%rip), %rdi\n  mov l2_regs+48(%rip), %rbp\n"
        "  mov l2_regs+56(%rip), %r8\n  mov l2_regs+64(%rip), %r9\n"
        "  mov l2_regs+72(%rip), %r10\n  mov l2_regs+80(%rip), %r11\n"
        "  mov l2_regs+88(%rip), %r12\n  mov l2_regs+96(%rip), %r13\n"
        "  mov l2_regs+104(%rip), %r14\n  mov l2_regs+112(%rip), %r15\n"
        "  cmpb $0, l1_launched(%rip)\n"
        "  mov l2_regs(%rip), %rax\n"
        "  jne 1f\n"
        "  vmlaunch\n"
        "  jmp 2f\n"
        "1: vmresume\n"
        "2: pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
        "  mov $1, %eax\n"
        "  ret\n"
        ".global l1_exit_point\n"
        "l1_exit_point:\n"
        "  mov %rax, l2_regs(%rip)\n  mov %rbx, l2_regs+8(%rip)\n"
        "  mov %rcx, l2_regs+16(%rip)\n  mov %rdx, l2_regs+24(%rip)\n"
        "  mov %rsi, l2_regs+32(%rip)\n  mov %rdi, l2_regs+40(%rip)\n"
        "  mov %rbp, l2_regs+48(%rip)\n  mov %r8, l2_regs+56(%rip)\n"
        "  mov %r9, l2_regs+64(%rip)\n  mov %r10, l2_regs+72(%rip)\n"
        "  mov %r11, l2_regs+80(%rip)\n  mov %r12, l2_regs+88(%rip)\n"
        "  mov %r13, l2_regs+96(%rip)\n  mov %r14, l2_regs+104(%rip)\n"
        "  mov %r15, l2_regs+112(%rip)\n"
        "  pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
        "  xor %eax, %eax\n"
        "  ret\n");

/* L2: counts for ever, telling L1 its count every l2_step iterations. Every 2^20 iterations
 * it also writes port 0x80: L1 does not intercept I/O, so that exit goes to tern itself, with
 * the vCPU in L2. It gives the host a point to pause the vCPU while L2 runs, which Bochs
 * needs: its host receives no timer interrupt while an L2 runs, so otherwise a pause (and the
 * whole host) would wait for L2's next VMCALL, and always find L1. */
static void __attribute__((noreturn, used)) l2_main(void)
{
    uint64_t count = 0, step = l2_step;
    for (;;) {
        for (uint64_t i = 0; i < step; i++) {
            count++;
            __asm__ volatile("" : "+r"(count));
            if (!(count & 0xfffff))
                rt_outb(0x80, 0);
        }
        __asm__ volatile("vmcall" ::"D"(count) : "memory");
    }
}

static void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

#define READ_CR(n)                                                                                 \
    static uint64_t read_cr##n(void)                                                               \
    {                                                                                              \
        uint64_t v;                                                                                \
        __asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));                                          \
        return v;                                                                                  \
    }
READ_CR(0)
READ_CR(3)
READ_CR(4)

/* Each VMX instruction reports failure in CF (VMfailInvalid) or ZF (VMfailValid); setna reads
 * both in the same asm statement, before anything else can touch the flags. */
#define VMX_OP(name, insn)                                                                         \
    static bool name(uint64_t pa)                                                                  \
    {                                                                                              \
        uint8_t failed;                                                                            \
        __asm__ volatile(insn " %1\n setna %0" : "=qm"(failed) : "m"(pa) : "cc", "memory");        \
        return !failed;                                                                            \
    }
VMX_OP(vmxon, "vmxon")
VMX_OP(vmclear, "vmclear")
VMX_OP(vmptrld, "vmptrld")

static int vmwrite_errors;

static void *evmcs_field(uint64_t field, unsigned *size)
{
    for (unsigned i = 0; i < sizeof(evmcs_fields) / sizeof(evmcs_fields[0]); i++)
        if (evmcs_fields[i].field == field) {
            *size = evmcs_fields[i].size;
            return (uint8_t *)&evmcs + evmcs_fields[i].offset;
        }
    return NULL;
}

static void vmwrite(uint64_t field, uint64_t value)
{
    if (l1_evmcs == 2) {
        unsigned size;
        uint8_t *p = evmcs_field(field, &size);
        if (!p) {
            rt_printf("vmx_l1: field 0x%lx has no place in the eVMCS\n", field);
            vmwrite_errors++;
            return;
        }
        for (unsigned i = 0; i < size; i++)
            p[i] = (uint8_t)(value >> (8 * i));
        return;
    }
    uint8_t failed;
    __asm__ volatile("vmwrite %2, %1\n setna %0"
                     : "=qm"(failed)
                     : "r"(field), "rm"(value)
                     : "cc", "memory");
    if (failed) {
        rt_printf("vmx_l1: VMWRITE 0x%lx failed\n", field);
        vmwrite_errors++;
    }
}

static uint64_t vmread(uint64_t field)
{
    uint64_t v = 0;
    if (l1_evmcs == 2) {
        unsigned size;
        const uint8_t *p = evmcs_field(field, &size);
        for (unsigned i = 0; p && i < size; i++)
            v |= (uint64_t)p[i] << (8 * i);
        return v;
    }
    __asm__ volatile("vmread %1, %0" : "=rm"(v) : "r"(field) : "cc");
    return v;
}

/* A control value with the bits the CPU requires set and those it forbids cleared. */
static uint32_t vmx_adjust(uint32_t msr, uint32_t want)
{
    uint64_t caps = rdmsr(msr);
    return (want | (uint32_t)caps) & (uint32_t)(caps >> 32);
}

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static void write_segment(unsigned seg, uint16_t sel, uint32_t ar)
{
    vmwrite(GUEST_ES_SELECTOR + 2 * seg, sel);
    vmwrite(GUEST_ES_LIMIT + 2 * seg, 0xffffffff);
    vmwrite(GUEST_ES_AR + 2 * seg, ar);
    vmwrite(GUEST_ES_BASE + 2 * seg, 0);
}

static void vmcs_setup(void)
{
    bool true_ctls = rdmsr(MSR_VMX_BASIC) & (1ull << 55);
    vmwrite(PIN_BASED_CONTROLS,
            vmx_adjust(true_ctls ? MSR_VMX_TRUE_PINBASED : MSR_VMX_PINBASED, 0));
    vmwrite(PROC_BASED_CONTROLS,
            vmx_adjust(true_ctls ? MSR_VMX_TRUE_PROCBASED : MSR_VMX_PROCBASED, 0));
    vmwrite(EXIT_CONTROLS,
            vmx_adjust(true_ctls ? MSR_VMX_TRUE_EXIT : MSR_VMX_EXIT, EXIT_HOST_64BIT));
    vmwrite(ENTRY_CONTROLS,
            vmx_adjust(true_ctls ? MSR_VMX_TRUE_ENTRY : MSR_VMX_ENTRY, ENTRY_IA32E_GUEST));
    vmwrite(EXCEPTION_BITMAP, 0);
    vmwrite(CR3_TARGET_COUNT, 0);
    vmwrite(EXIT_MSR_STORE_COUNT, 0);
    vmwrite(EXIT_MSR_LOAD_COUNT, 0);
    vmwrite(ENTRY_MSR_LOAD_COUNT, 0);
    vmwrite(ENTRY_INTR_INFO, 0);
    vmwrite(VMCS_LINK_POINTER, ~0ull);

    struct desc_ptr gdt, idt;
    __asm__ volatile("sgdt %0\n sidt %1" : "=m"(gdt), "=m"(idt));
    uint16_t tr = rt_tss_selector(0);
    /* Host: L1 itself, as it runs now. */
    vmwrite(HOST_CR0, read_cr0());
    vmwrite(HOST_CR3, read_cr3());
    vmwrite(HOST_CR4, read_cr4());
    for (unsigned seg = 0; seg < 6; seg++)
        vmwrite(HOST_ES_SELECTOR + 2 * seg, seg == 1 ? SEL_CODE : SEL_DATA);
    vmwrite(HOST_ES_SELECTOR + 12, tr);
    vmwrite(HOST_FS_BASE, 0);
    vmwrite(HOST_GS_BASE, 0);
    vmwrite(HOST_TR_BASE, rt_tss_base(0));
    vmwrite(HOST_GDTR_BASE, gdt.base);
    vmwrite(HOST_IDTR_BASE, idt.base);
    vmwrite(HOST_SYSENTER_CS, 0);
    vmwrite(HOST_SYSENTER_ESP, 0);
    vmwrite(HOST_SYSENTER_EIP, 0);
    vmwrite(HOST_RIP, (uint64_t)(uintptr_t)l1_exit_point);

    /* Guest: 64-bit, same paging and GDT, its own stack, at l2_main. */
    vmwrite(GUEST_CR0, read_cr0());
    vmwrite(GUEST_CR3, read_cr3());
    vmwrite(GUEST_CR4, read_cr4());
    for (unsigned seg = 0; seg < 6; seg++)
        write_segment(seg, seg == 1 ? SEL_CODE : SEL_DATA, seg == 1 ? 0xa09b : 0xc093);
    vmwrite(GUEST_ES_SELECTOR + 12, 0); /* LDTR: unusable */
    vmwrite(GUEST_ES_LIMIT + 12, 0);
    vmwrite(GUEST_ES_AR + 12, 0x10000);
    vmwrite(GUEST_ES_BASE + 12, 0);
    vmwrite(GUEST_ES_SELECTOR + 14, tr); /* TR: busy 64-bit TSS */
    vmwrite(GUEST_ES_LIMIT + 14, rt_tss_limit());
    vmwrite(GUEST_ES_AR + 14, 0x8b);
    vmwrite(GUEST_ES_BASE + 14, rt_tss_base(0));
    vmwrite(GUEST_GDTR_BASE, gdt.base);
    vmwrite(GUEST_GDTR_LIMIT, gdt.limit);
    vmwrite(GUEST_IDTR_BASE, idt.base);
    vmwrite(GUEST_IDTR_LIMIT, idt.limit);
    vmwrite(GUEST_DR7, 0x400);
    vmwrite(GUEST_RSP, (uint64_t)(uintptr_t)&l2_stack[sizeof(l2_stack)] - 8);
    vmwrite(GUEST_RIP, (uint64_t)(uintptr_t)l2_main);
    vmwrite(GUEST_RFLAGS, 0x2);
    vmwrite(GUEST_PENDING_DBG, 0);
    vmwrite(GUEST_INTERRUPTIBILITY, 0);
    vmwrite(GUEST_ACTIVITY_STATE, 0);
    vmwrite(GUEST_SYSENTER_CS, 0);
    vmwrite(GUEST_SYSENTER_ESP, 0);
    vmwrite(GUEST_SYSENTER_EIP, 0);
}

static void cpuid(uint32_t leaf, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}

/* The Hyper-V side: the vendor leaf, the eVMCS version and recommendation, then the guest OS
 * id and the VP assist page, as a Hyper-V-aware L1 sets them up. */
static int hyperv_setup(void)
{
    uint32_t r[4];
    cpuid(0x40000000, r);
    char vendor[13];
    for (int i = 0; i < 12; i++)
        vendor[i] = (char)(r[1 + i / 4] >> (8 * (i % 4)));
    vendor[12] = 0;
    uint32_t nested[4], recommended[4];
    cpuid(0x4000000a, nested);
    cpuid(0x40000004, recommended);
    rt_printf("vmx_l1: hypervisor \"%s\", eVMCS versions %u..%u, recommended %u\n", vendor,
              nested[0] & 0xff, (nested[0] >> 8) & 0xff, (recommended[0] >> 14) & 1);
    if (vendor[0] != 'M' || (nested[0] & 0xffff) != 0x0101 || !(recommended[0] & (1u << 14))) {
        rt_printf("vmx_l1: no enlightened VMCS offered\n");
        return 97;
    }
    wrmsr(HV_MSR_GUEST_OS_ID, 0x8100000000000001ull);
    wrmsr(HV_MSR_VP_ASSIST_PAGE, (uint64_t)(uintptr_t)&vp_assist_page | 1);
    rt_printf("vmx_l1: VP assist page at 0x%lx\n", (uint64_t)(uintptr_t)&vp_assist_page);
    return 0;
}

static void hold(unsigned stage, unsigned at, uint64_t ms, uint32_t tsc_khz, const char *what)
{
    if (stage != at)
        return;
    rt_printf("vmx_l1: holding %s for %lu ms\n", what, ms);
    uint64_t end = rt_rdtsc() + ms * (tsc_khz ? tsc_khz : 1000000);
    while (rt_rdtsc() < end)
        rt_pause();
    rt_printf("vmx_l1: hold over\n");
}

int guest_main(unsigned cpu, const struct boot_info *info)
{
    if (cpu != 0)
        return 0;
    uint64_t rounds = rt_cmdline_u64(info, "rounds", 50);
    uint64_t step = rt_cmdline_u64(info, "step", 1000000);
    unsigned stage = (unsigned)rt_cmdline_u64(info, "hold", 0);
    uint64_t hold_ms = rt_cmdline_u64(info, "hold_ms", 3000);
    uint64_t fill = rt_cmdline_u64(info, "fill", 0);
    l2_step = step ? step : 1;
    l1_evmcs = (unsigned)rt_cmdline_u64(info, "evmcs", L1_EVMCS_DEFAULT);

    if (fill) {
        uint64_t *p = (uint64_t *)(uintptr_t)(4ul << 20);
        uint64_t n = (fill << 20) / 8;
        if ((4ul << 20) + (fill << 20) > info->ram_size) {
            rt_printf("vmx_l1: fill=%lu MiB does not fit the RAM\n", fill);
            return 90;
        }
        for (uint64_t i = 0; i < n; i++)
            p[i] = i * 0x9e3779b97f4a7c15ull + 1;
        rt_printf("vmx_l1: filled %lu MiB\n", fill);
    }
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    uint64_t fc = rdmsr(MSR_FEATURE_CONTROL);
    if (!(c & (1u << 5)) || (fc & 5) != 5) {
        rt_printf("vmx_l1: no VMX: CPUID.1:ECX 0x%x, IA32_FEATURE_CONTROL 0x%lx\n", c, fc);
        return 91;
    }
    uint64_t basic = rdmsr(MSR_VMX_BASIC);
    uint32_t revision = (uint32_t)basic & 0x7fffffff;
    rt_printf("vmx_l1: VMX offered: feature control 0x%lx, VMX basic 0x%lx\n", fc, basic);
    if (l1_evmcs) {
        int rc = hyperv_setup();
        if (rc)
            return rc;
    }
    hold(stage, 1, hold_ms, info->tsc_khz, "before VMXON");

    uint64_t cr0 = (read_cr0() | rdmsr(MSR_VMX_CR0_FIXED0)) & rdmsr(MSR_VMX_CR0_FIXED1);
    uint64_t cr4 =
        ((read_cr4() | CR4_VMXE) | rdmsr(MSR_VMX_CR4_FIXED0)) & rdmsr(MSR_VMX_CR4_FIXED1);
    __asm__ volatile("mov %0, %%cr0\n mov %1, %%cr4" ::"r"(cr0), "r"(cr4) : "memory");
    *(uint32_t *)vmxon_region = revision;
    *(uint32_t *)vmcs_region = revision;
    if (!vmxon((uint64_t)(uintptr_t)vmxon_region)) {
        rt_printf("vmx_l1: VMXON failed\n");
        return 92;
    }
    rt_printf("vmx_l1: VMXON done at 0x%lx\n", (uint64_t)(uintptr_t)vmxon_region);
    hold(stage, 2, hold_ms, info->tsc_khz, "in VMX operation with no current VMCS");

    if (l1_evmcs == 2) {
        /* No VMPTRLD: the next VM entry takes the eVMCS the VP assist page names. */
        evmcs.revision_id = 1;
        vp_assist.current_nested_vmcs = (uint64_t)(uintptr_t)&evmcs_page;
        vp_assist.enlighten_vmentry = 1;
        l1_host_rsp_slot = &evmcs.host_rsp;
    } else if (!vmclear((uint64_t)(uintptr_t)vmcs_region) ||
               !vmptrld((uint64_t)(uintptr_t)vmcs_region)) {
        rt_printf("vmx_l1: VMCLEAR/VMPTRLD failed\n");
        return 93;
    }
    vmcs_setup();
    if (vmwrite_errors)
        return 94;
    if (l1_evmcs == 2)
        rt_printf("vmx_l1: eVMCS at 0x%lx written and current\n", (uint64_t)(uintptr_t)&evmcs_page);
    else
        rt_printf("vmx_l1: VMCS at 0x%lx loaded and written\n", (uint64_t)(uintptr_t)vmcs_region);
    hold(stage, 3, hold_ms, info->tsc_khz, "with the VMCS loaded, L2 not launched");

    uint64_t last = 0;
    int bad = 0;
    for (uint64_t r = 1; r <= rounds; r++) {
        evmcs.clean_fields = 0; /* every field may have changed: KVM rereads them all */
        if (l1_run_l2()) {
            rt_printf("vmx_l1: VM%s failed: VM-instruction error %lu\n",
                      l1_launched ? "RESUME" : "LAUNCH", vmread(VM_INSTRUCTION_ERROR));
            return 95;
        }
        uint64_t reason = vmread(EXIT_REASON);
        if ((reason & 0xffff) != EXIT_REASON_VMCALL) {
            rt_printf("vmx_l1: unexpected exit reason 0x%lx (qualification 0x%lx) at L2 RIP "
                      "0x%lx\n",
                      reason, vmread(EXIT_QUALIFICATION), vmread(GUEST_RIP));
            return 96;
        }
        if (!l1_launched)
            rt_printf("vmx_l1: L2 running\n");
        l1_launched = 1;
        uint64_t count = l2_regs.rdi;
        if (count != last + step) {
            rt_printf("vmx_l1: L2's count jumped from %lu to %lu (round %lu)\n", last, count, r);
            bad++;
        }
        last = count;
        vmwrite(GUEST_RIP, vmread(GUEST_RIP) + vmread(EXIT_INSTRUCTION_LEN));
        if (r % 10 == 0 || r == rounds)
            rt_printf("vmx_l1: round %lu, L2 count %lu\n", r, count);
    }
    if (!bad)
        rt_printf("vmx_l1: PASS: L2 counted to %lu continuously over %lu VMCALLs\n", last, rounds);
    return bad;
}
