#include "nested/nested_msr.h"

#define MSR_VMX_BASIC 0x480u
#define MSR_VMX_MISC 0x485u
#define MSR_VMX_CR0_FIXED0 0x486u
#define MSR_VMX_CR4_FIXED0 0x488u
#define MSR_VMX_VMCS_ENUM 0x48au
#define MSR_VMX_PROCBASED_CTLS2 0x48bu
#define MSR_VMX_EPT_VPID_CAP 0x48cu
#define MSR_VMX_TRUE_PINBASED 0x48du
#define MSR_VMX_TRUE_ENTRY 0x490u

bool nested_vmx_msr(uint32_t index)
{
    return index >= NESTED_VMX_MSR_FIRST && index <= NESTED_VMX_MSR_LAST;
}

bool nested_vmx_msr_restorable(uint32_t index)
{
    switch (index) {
    case MSR_VMX_BASIC:
    case MSR_VMX_MISC:
    case MSR_VMX_CR0_FIXED0:
    case MSR_VMX_CR4_FIXED0:
    case MSR_VMX_VMCS_ENUM:
    case MSR_VMX_PROCBASED_CTLS2:
    case MSR_VMX_EPT_VPID_CAP:
        return true;
    default:
        return index >= MSR_VMX_TRUE_PINBASED && index <= MSR_VMX_TRUE_ENTRY;
    }
}

static const char *const nested_vmx_msr_names[NESTED_VMX_MSR_LAST - NESTED_VMX_MSR_FIRST + 1] = {
    "IA32_VMX_BASIC",          "IA32_VMX_PINBASED_CTLS",      "IA32_VMX_PROCBASED_CTLS",
    "IA32_VMX_EXIT_CTLS",      "IA32_VMX_ENTRY_CTLS",         "IA32_VMX_MISC",
    "IA32_VMX_CR0_FIXED0",     "IA32_VMX_CR0_FIXED1",         "IA32_VMX_CR4_FIXED0",
    "IA32_VMX_CR4_FIXED1",     "IA32_VMX_VMCS_ENUM",          "IA32_VMX_PROCBASED_CTLS2",
    "IA32_VMX_EPT_VPID_CAP",   "IA32_VMX_TRUE_PINBASED_CTLS", "IA32_VMX_TRUE_PROCBASED_CTLS",
    "IA32_VMX_TRUE_EXIT_CTLS", "IA32_VMX_TRUE_ENTRY_CTLS",    "IA32_VMX_VMFUNC",
};

const char *nested_vmx_msr_name(uint32_t index)
{
    return nested_vmx_msr(index) ? nested_vmx_msr_names[index - NESTED_VMX_MSR_FIRST] : "a VMX MSR";
}

#define BIT64(n) (1ull << (n))
#define FIELD(v, hi, lo) (((v) >> (lo)) & ((1ull << ((hi) - (lo) + 1)) - 1))
#define MASK(hi, lo) (((1ull << ((hi) - (lo) + 1)) - 1) << (lo))
/* BASIC: the features (49 dual-monitor, 54 INS/OUTS info, 55 true controls), revision 30:0,
 * VMCS size 44:32. */
#define BASIC_FEATURES (BIT64(49) | BIT64(54) | BIT64(55))
/* MISC: the features (5, 8:6 activity states, 14, 15, 28-30), preemption timer rate 4:0,
 * CR3 targets 24:16, MSR list size 27:25. */
#define MISC_FEATURES (BIT64(5) | MASK(8, 6) | BIT64(14) | BIT64(15) | MASK(30, 28))

static uint64_t missing_basic(uint64_t guest, uint64_t host)
{
    uint64_t m = guest & ~host & BASIC_FEATURES;
    if (FIELD(guest, 30, 0) != FIELD(host, 30, 0))
        m |= MASK(30, 0);
    if (FIELD(host, 44, 32) > FIELD(guest, 44, 32))
        m |= MASK(44, 32);
    return m;
}

static uint64_t missing_misc(uint64_t guest, uint64_t host)
{
    uint64_t m = guest & ~host & MISC_FEATURES;
    if (FIELD(guest, 4, 0) != FIELD(host, 4, 0))
        m |= MASK(4, 0);
    if (FIELD(guest, 24, 16) > FIELD(host, 24, 16))
        m |= MASK(24, 16);
    if (FIELD(guest, 27, 25) > FIELD(host, 27, 25))
        m |= MASK(27, 25);
    return m;
}

uint64_t nested_vmx_msr_missing(uint32_t index, uint64_t guest, uint64_t host)
{
    switch (index) {
    case MSR_VMX_BASIC:
        return missing_basic(guest, host);
    case MSR_VMX_MISC:
        return missing_misc(guest, host);
    case MSR_VMX_CR0_FIXED0:
    case MSR_VMX_CR4_FIXED0:
        return host & ~guest;
    case MSR_VMX_VMCS_ENUM:
        return 0;
    case MSR_VMX_EPT_VPID_CAP:
        return guest & ~host;
    default:
        if (!nested_vmx_msr_restorable(index))
            return 0;
        /* A control MSR (PROCBASED_CTLS2 included, whose must-be-1 half is 0). */
        return (host & ~guest & MASK(31, 0)) | (guest & ~host & MASK(63, 32));
    }
}

uint64_t nested_vmx_msr_hide_controls(uint32_t index, uint64_t value)
{
    return index == MSR_VMX_PROCBASED_CTLS2 ? value & MASK(31, 0) : value;
}
