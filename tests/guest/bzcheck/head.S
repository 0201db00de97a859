/* The 32-bit entry a 64-bit loader never uses, then startup_64 at +0x200 as in Linux. */
    .section .head, "ax"
    .code32
startup_32:
    hlt
    jmp startup_32
    .org 0x200
    .code64
    .globl startup_64
startup_64:
    lea stack_top(%rip), %rsp
    mov %rsi, %rdi          /* the zero page */
    call bzcheck_main
1:  hlt
    jmp 1b

    .section .bss
    .balign 16
    .space 8192
stack_top:
    .section .note.GNU-stack, "", @progbits
