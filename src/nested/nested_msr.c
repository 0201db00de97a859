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
