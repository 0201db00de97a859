/* Entry from tern's direct boot: 64-bit mode, CPL0, RDI = vCPU index, RSI = boot info. */
    .section .text.start, "ax"
    .global _start
_start:
    mov %rdi, %rax
    inc %rax
    shl $12, %rax                 /* each vCPU owns 4 KiB of CPL0 stack */
    lea rt_kstacks(%rip), %rsp
    add %rax, %rsp
    call rt_cpl0_entry
1:  jmp 1b

    .section .note.GNU-stack, "", @progbits
