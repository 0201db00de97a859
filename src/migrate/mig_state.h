/* mig_state: the whole VM state as stream records, and the order it is captured and restored in.
 *
 * Capture runs while the VM is paused (vm_pause: every vCPU out of KVM_RUN with pending I/O
 * completed). Restore reads the CONFIG record first (mig_read_config), so the caller can build an
 * empty VM of that shape (vm_create with no kernel), then mig_restore() reads every other record
 * up to END, checks END's counts, and applies the state in KVM's required order. The clock is
 * left for vm_start/vm_resume to set right before the vCPUs run.
 */
#ifndef TERN_MIG_STATE_H
#define TERN_MIG_STATE_H

#include <linux/kvm.h>

#include "migrate/mig_stream.h"
#include "vm/vm.h"

struct mig_config {
    uint64_t mem_size;
    uint32_t cpu_count;
    uint32_t features;
    struct kvm_cpuid2 *cpuid[VM_MAX_CPUS]; /* each vCPU's CPUID table */
};

/* compress_level: -1 for raw pages, 0..9 for zlib. live: the VM runs while RAM is sent, so
 * raw pages are copied before their CRC is taken. */
struct mig_capture_options {
    int compress_level;
    bool live;
};

struct mig_stats {
    uint64_t zero_pages, raw_pages, zlib_pages;
    uint64_t raw_bytes, zlib_bytes; /* payload bytes written for RAW / ZLIB records */
};

/* A whole stream in one go (snapshots). */
int mig_capture(struct vm *vm, struct mig_writer *w, const struct mig_capture_options *opt,
                struct mig_stats *stats);

/* The same stream in steps, for live migration: begin (header, CONFIG), RAM passes while the VM
 * runs, then the state while it is paused. The context counts what END must announce. */
struct mig_capture {
    struct vm *vm;
    struct mig_writer *w;
    struct mig_capture_options opt;
    struct mig_stats stats;
    uint64_t pages;          /* pages covered by RAM records so far */
    uint32_t records_before; /* writer's count before the header */
    uint8_t *zbuf, *copy;
    size_t zcap;
};
int mig_capture_begin(struct mig_capture *c, struct vm *vm, struct mig_writer *w,
                      const struct mig_capture_options *opt);
/* Every page of guest RAM. */
int mig_capture_ram_all(struct mig_capture *c);
/* Every page marked in the memory's dirty bitmap (clearing the marks); *sent counts pages. */
int mig_capture_ram_dirty(struct mig_capture *c, uint64_t *sent);
/* Devices, vCPUs, clock and END. The VM must be paused. */
int mig_capture_state(struct mig_capture *c);
void mig_capture_end(struct mig_capture *c);

/* The most nested state this VM's vCPUs can have: the host's KVM_CAP_NESTED_STATE when some
 * vCPU's CPUID offers VMX (only those can enter VMX operation), else 0: nothing to ask. */
uint32_t mig_nested_max(struct vm *vm);

/* What the VM's nested state asks of a destination right now: the largest nested record a vCPU
 * would carry (0: none, no vCPU is in VMX operation) and whether an enlightened VMCS is active.
 * The VM must be paused. */
int mig_nested_need(struct vm *vm, uint32_t *size, bool *evmcs);

/* Pure: decodes and checks a CONFIG payload. */
int mig_config_parse(const uint8_t *payload, size_t len, struct mig_config *cfg);
void mig_config_free(struct mig_config *cfg);
/* Reads the stream header and the CONFIG record that must follow it. */
int mig_read_config(struct mig_reader *r, struct mig_config *cfg);

/* What a restore saw on the way; switchover_ns is 0 unless a SWITCHOVER record came. */
struct mig_restore_info {
    uint64_t switchover_ns; /* CLOCK_MONOTONIC when it was read */
    uint64_t ram_records;
    unsigned nested_vcpus;     /* vCPUs that came in VMX operation */
    unsigned guest_mode_vcpus; /* of those, vCPUs that were running L2 */
    uint32_t nested_bytes;     /* the largest nested record */
};
int mig_restore(struct vm *vm, struct mig_reader *r, const struct mig_config *cfg,
                struct mig_restore_info *info);

/* The rules every reader (restore, inspect) applies to a record at its place in the stream,
 * beyond what mig_read_record checks alone: no second CONFIG, per-vCPU records within the VM's
 * vCPUs, IRQCHIP holding the chip it claims, and END's counts matching what came before.
 * ram_pages accumulates the pages of RAM records. */
int mig_check_in_stream(const struct mig_record *rec, const struct mig_reader *r,
                        const struct mig_config *cfg, uint64_t *ram_pages);

/* Writes a RAM record's pages to dst (pages x 4 KiB): zeroed, copied or inflated, checking that
 * zlib data inflates to exactly that. */
int mig_ram_decode(const struct mig_record *rec, uint8_t *dst);

#endif
