/* mig_config: the CONFIG record, the VM's shape that comes first in every stream: RAM size,
 * vCPU count and each vCPU's CPUID, so that a destination needs nothing but the stream. */
#ifndef TERN_MIG_CONFIG_H
#define TERN_MIG_CONFIG_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

#include "migrate/mig_stream.h"
#include "vcpu/vcpu_cpuid.h"
#include "vm/vm.h"

#define MIG_CONFIG_MIN 24u
#define MIG_CONFIG_DISK_FIXED 16u /* size, flags, path and serial lengths */
#define MIG_CONFIG_DISKS_MAX                                                                       \
    (4u + DEV_MAX_DISKS * (MIG_CONFIG_DISK_FIXED + DEV_DISK_PATH_MAX + DEV_DISK_SERIAL_MAX))
#define MIG_CONFIG_NETS_MAX (4u + DEV_MAX_NETS * 8u)
#define MIG_CONFIG_MAX                                                                             \
    (MIG_CONFIG_MIN +                                                                              \
     VM_MAX_CPUS * (4u + VCPU_CPUID_MAX_ENTRIES * (uint32_t)sizeof(struct kvm_cpuid_entry2)) +     \
     MIG_CONFIG_DISKS_MAX + MIG_CONFIG_NETS_MAX)

/* features: what follows the CPUID tables (each bit new in a format minor; a reader refuses
 * bits it does not know). */
#define MIG_CONFIG_F_DISKS                                                                         \
    0x1u /* 1.4: u32 count, then per disk: u64 size, u32 flags                                     \
          * (1 readonly, 2 cache=none), u16 path length, u16 serial                                \
          * length, the path, the serial */
#define MIG_CONFIG_F_NETS 0x2u /* 1.4: u32 count, then per network device its MAC and u16 0 */
#define MIG_CONFIG_DISK_READONLY 0x1u
#define MIG_CONFIG_DISK_DIRECT 0x2u

struct mig_config {
    uint64_t mem_size;
    uint32_t cpu_count;
    uint32_t features;
    struct kvm_cpuid2 *cpuid[VM_MAX_CPUS]; /* each vCPU's CPUID table */
    unsigned disk_count;
    struct dev_disk disks[DEV_MAX_DISKS]; /* each with its size */
    unsigned net_count;
    uint8_t net_mac[DEV_MAX_NETS][6];
};

/* Pure: decodes and checks a CONFIG payload. */
int mig_config_parse(const uint8_t *payload, size_t len, struct mig_config *cfg);
void mig_config_free(struct mig_config *cfg);
/* Reads the stream header and the CONFIG record that must follow it. */
int mig_read_config(struct mig_reader *r, struct mig_config *cfg);
/* Writes the CONFIG record of a VM. */
int mig_write_config(struct vm *vm, struct mig_writer *w);

#endif
