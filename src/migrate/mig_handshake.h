/* mig_handshake: what a live migration's two sides tell each other before any RAM moves.
 *
 * The source sends a hello line (JSON): the stream format it writes and what the VM needs of
 * the destination — RAM, vCPUs, XSAVE size, nested-state size and eVMCS, and the CPUID feature
 * bits the guest was given. The destination answers with its own capabilities, its stream
 * format, and a verdict; a refusal carries a reason naming the missing capability. The source
 * then writes the older of the two formats. Both sides check: the destination
 * before it allocates anything, the source again on the answer. All functions here are pure.
 */
#ifndef TERN_MIG_HANDSHAKE_H
#define TERN_MIG_HANDSHAKE_H

#include <jansson.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/dev_disk.h"
#include "devices/dev_net.h"

#define MIG_HS_PROTOCOL 1
#define MIG_HS_FEATURE_REGS 8
#define MIG_HS_MAX_CONNECTIONS 16u
#define MIG_HS_MAX_DISKS 8u

/* One CPUID feature register: leaf, subleaf, register (0 eax .. 3 edx). */
struct mig_hs_feature_reg {
    uint32_t leaf, subleaf;
    uint8_t reg;
    const char *name; /* "1.ECX" */
};
extern const struct mig_hs_feature_reg mig_hs_feature_regs[MIG_HS_FEATURE_REGS];

#define MIG_HS_MAX_VMX_MSRS 18u
/* A VMX capability MSR the guest was given, or one a destination's KVM reports. */
struct mig_hs_msr {
    uint32_t index;
    uint64_t value;
};

struct mig_hs_need {
    unsigned stream_major, stream_minor;
    uint64_t mem_size;
    unsigned cpus;
    uint32_t xsave_size;
    uint32_t nested_size; /* bytes of nested state the largest vCPU carries; 0: none */
    bool evmcs;           /* an enlightened VMCS is active */
    uint32_t features[MIG_HS_FEATURE_REGS];
    unsigned connections; /* that carry RAM, the first included (absent: 1) */
    unsigned disks;       /* virtio-blk disks (absent: 0), which need format 1.4 */
    struct mig_hs_disk {
        char path[DEV_DISK_PATH_MAX];
        uint64_t size;
    } disk[MIG_HS_MAX_DISKS]; /* each disk's image, which the destination checks */
    unsigned nets;            /* virtio-net devices (absent: 0), which need format 1.4 */
    bool hyperv;              /* the guest has the Hyper-V interface ("hyperv": names) */
    uint32_t hyperv_set;      /* its enlightenments (hyperv_cpuid.h's HV_BIT()s) */
    uint32_t tsc_khz;         /* the guest's TSC rate (absent: 0, unknown) */
    unsigned vmx_count;       /* the VMX capability MSRs it was given ("vmx"; absent: 0) */
    struct mig_hs_msr vmx[MIG_HS_MAX_VMX_MSRS];
};

struct mig_hs_caps {
    unsigned stream_major, stream_minor;
    uint64_t mem_limit; /* host RAM, or the --mem the destination was given */
    bool mem_exact;     /* mem_limit came from --mem: the stream must match it */
    unsigned max_cpus;  /* or the --cpus given */
    bool cpus_exact;
    uint32_t xsave_size;                    /* KVM_CAP_XSAVE2, or 4096 */
    uint32_t nested_max;                    /* KVM_CAP_NESTED_STATE; 0: no nested support */
    bool evmcs;                             /* KVM_CAP_HYPERV_ENLIGHTENED_VMCS */
    uint32_t features[MIG_HS_FEATURE_REGS]; /* KVM_GET_SUPPORTED_CPUID */
    unsigned connections_max;               /* absent (a tern before format 1.3): 1 */
    unsigned disks_given; /* --disk on the destination (other paths, one per disk); 0: none */
    unsigned nets_given;  /* --net on the destination: one per network device of the VM */
    /* Said by a tern of this version on; absent from older ones, which are not asked. */
    bool hyperv_known; /* "hyperv": the enlightenments its KVM offers */
    uint32_t hyperv_set;
    uint32_t tsc_khz; /* its vCPUs' TSC rate (absent: 0) */
    bool tsc_scaling; /* KVM_CAP_TSC_CONTROL: it can run a guest at another rate */
    bool vmx_known;   /* "vmx": the VMX capability MSRs its KVM reports (none: no VMX) */
    unsigned vmx_count;
    struct mig_hs_msr vmx[MIG_HS_MAX_VMX_MSRS];
};

/* The feature registers of a CPUID table (absent leaves read as 0). */
void mig_hs_features(const struct kvm_cpuid2 *cpuid, uint32_t out[MIG_HS_FEATURE_REGS]);

json_t *mig_hs_need_to_json(const struct mig_hs_need *need);
int mig_hs_need_from_json(json_t *obj, struct mig_hs_need *need);
json_t *mig_hs_caps_to_json(const struct mig_hs_caps *caps);
int mig_hs_caps_from_json(json_t *obj, struct mig_hs_caps *caps);

/* The stream format both sides know: the source writes 1.minor, the older of the two. */
unsigned mig_hs_stream_minor(const struct mig_hs_need *need, const struct mig_hs_caps *caps);

/* 0 when caps can take a VM that needs need, in the format both know; else -errno and a
 * reason in why (a record the VM needs that the older format lacks is named). */
int mig_hs_check(const struct mig_hs_need *need, const struct mig_hs_caps *caps, char *why,
                 size_t why_size);

#endif
