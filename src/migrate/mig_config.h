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
#define MIG_CONFIG_MAX                                                                             \
    (MIG_CONFIG_MIN +                                                                              \
     VM_MAX_CPUS * (4u + VCPU_CPUID_MAX_ENTRIES * (uint32_t)sizeof(struct kvm_cpuid_entry2)))

struct mig_config {
    uint64_t mem_size;
    uint32_t cpu_count;
    uint32_t features;
    struct kvm_cpuid2 *cpuid[VM_MAX_CPUS]; /* each vCPU's CPUID table */
};

/* Pure: decodes and checks a CONFIG payload. */
int mig_config_parse(const uint8_t *payload, size_t len, struct mig_config *cfg);
void mig_config_free(struct mig_config *cfg);
/* Reads the stream header and the CONFIG record that must follow it. */
int mig_read_config(struct mig_reader *r, struct mig_config *cfg);
/* Writes the CONFIG record of a VM. */
int mig_write_config(struct vm *vm, struct mig_writer *w);

#endif
