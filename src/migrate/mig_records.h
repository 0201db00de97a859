/* mig_records: the one table of stream record types. Each row says everything about a type:
 * its number and name, whose state it carries (scope), whether an older reader may skip it,
 * the minor version it appeared in, its length bounds, the rules its payload must follow, and
 * the functions that save it from a paused VM and load it into a VM being restored.
 *
 * The framing (mig_stream.c) takes names, limits and the mandatory flag from here; tern inspect
 * its names and scopes; capture writes the rows in table order, which is the stream's order
 * (a run of vCPU rows is written for each vCPU in turn); restore hands each record to its own
 * row's load, so a type no row knows never reaches any loader. A new record is one row here
 * and, where the generic ones do not fit, its two functions. docs/stream-format.md describes
 * every row; tests/unit/test_records.c checks that it does.
 */
#ifndef TERN_MIG_RECORDS_H
#define TERN_MIG_RECORDS_H

#include <stdbool.h>
#include <stdint.h>

/* clang-format off */
/* NAME, NUMBER, SCOPE, FLAGS, SINCE (minor), MIN and MAX payload bytes, then how the row is
 * handled (mig_records.c defines these). In stream order. */
#define MIG_RECORD_TABLE(R)                                                                     \
    R(CONFIG,       0x0001, STREAM, 0,            0, MIG_CONFIG_MIN, MIG_CONFIG_MAX, ROW_CONFIG) \
    R(RAM_ZERO,     0x0010, RAM,    0,            0, MIG_RAM_ZERO_LEN, MIG_RAM_ZERO_LEN, ROW_RAM) \
    R(RAM_RAW,      0x0011, RAM,    0,            0, MIG_RAM_RAW_MIN, MIG_RAM_RAW_MAX, ROW_RAM)  \
    R(RAM_ZLIB,     0x0012, RAM,    0,            0, MIG_RAM_ZLIB_MIN, MIG_RAM_ZLIB_MAX, ROW_RAM) \
    R(RAM_SYNC,     0x0013, STREAM, 0,            3, SIZE(mig_ram_sync), SIZE(mig_ram_sync),    \
      ROW_SYNC)                                                                                 \
    R(SERIAL,       0x0020, DEVICE, 0,            0, DEV_SERIAL_STATE_FIXED, DEV_SERIAL_STATE_MAX, \
      ROW_DEVICE(dev_serial_ops))                                                               \
    R(RTC,          0x0021, DEVICE, MIG_OPTIONAL, 1, DEV_RTC_STATE_SIZE, DEV_RTC_STATE_SIZE,     \
      ROW_DEVICE(dev_rtc_ops))                                                                  \
    R(ACPI_PM,      0x0022, DEVICE, MIG_OPTIONAL, 1, DEV_ACPI_PM_STATE_SIZE,                    \
      DEV_ACPI_PM_STATE_SIZE, ROW_DEVICE(dev_acpi_pm_ops))                                      \
    R(VIRTIO_BLK,   0x0023, DEVICE, 0,            4, DEV_VIRTIO_BLK_STATE_SIZE,                 \
      DEV_VIRTIO_BLK_STATE_SIZE, ROW_DEVICE(dev_virtio_blk_ops))                                \
    R(VIRTIO_NET,   0x0024, DEVICE, 0,            4, DEV_VIRTIO_NET_STATE_SIZE,                 \
      DEV_VIRTIO_NET_STATE_SIZE, ROW_DEVICE(dev_virtio_net_ops))                                \
    R(IRQCHIP,      0x0030, VM,     0,            0, SIZE(kvm_irqchip), SIZE(kvm_irqchip),       \
      ROW_VM(VM_IRQCHIP), .check = mig_check_irqchip_index, .verify = mig_verify_irqchip)       \
    R(PIT2,         0x0031, VM,     0,            0, SIZE(kvm_pit_state2), SIZE(kvm_pit_state2), \
      ROW_VM(VM_PIT2))                                                                          \
    R(MP_STATE,     0x0040, VCPU,   0,            0, SIZE(kvm_mp_state), SIZE(kvm_mp_state),     \
      ROW_VCPU(VCPU_MP_STATE))                                                                  \
    R(VCPU_EVENTS,  0x0041, VCPU,   0,            0, SIZE(kvm_vcpu_events),                      \
      SIZE(kvm_vcpu_events), ROW_VCPU(VCPU_EVENTS))                                             \
    R(REGS,         0x0042, VCPU,   0,            0, SIZE(kvm_regs), SIZE(kvm_regs),             \
      ROW_VCPU(VCPU_REGS))                                                                      \
    R(XSAVE,        0x0043, VCPU,   0,            0, KVM_XSAVE_LEGACY_SIZE, VCPU_XSAVE_MAX,       \
      ROW_VCPU(VCPU_XSAVE))                                                                     \
    R(XCRS,         0x0044, VCPU,   0,            0, SIZE(kvm_xcrs), SIZE(kvm_xcrs),             \
      ROW_VCPU(VCPU_XCRS))                                                                      \
    R(SREGS2,       0x0045, VCPU,   0,            0, SIZE(kvm_sregs2), SIZE(kvm_sregs2),         \
      ROW_VCPU(VCPU_SREGS2))                                                                    \
    R(SREGS,        0x0046, VCPU,   0,            0, SIZE(kvm_sregs), SIZE(kvm_sregs),           \
      ROW_VCPU(VCPU_SREGS))                                                                     \
    R(MSRS,         0x0047, VCPU,   0,            0, 0, VCPU_MSRS_MAX_BYTES,                     \
      ROW_VCPU(VCPU_MSRS), .check = mig_check_msrs)                                             \
    R(LAPIC,        0x0048, VCPU,   0,            0, SIZE(kvm_lapic_state),                      \
      SIZE(kvm_lapic_state), ROW_VCPU(VCPU_LAPIC))                                              \
    R(DEBUGREGS,    0x0049, VCPU,   0,            0, SIZE(kvm_debugregs), SIZE(kvm_debugregs),   \
      ROW_VCPU(VCPU_DEBUGREGS))                                                                 \
    R(TSC_KHZ,      0x004a, VCPU,   0,            0, 4, 4, ROW_VCPU(VCPU_TSC_KHZ))                \
    R(EVMCS,        0x004c, VCPU,   MIG_OPTIONAL, 2, SIZE(vcpu_evmcs), SIZE(vcpu_evmcs),         \
      ROW_VCPU(VCPU_EVMCS))                                                                     \
    R(NESTED_STATE, 0x004b, VCPU,   0,            2, NESTED_HEADER_SIZE, VCPU_NESTED_MAX,        \
      ROW_VCPU(VCPU_NESTED), .verify = mig_verify_nested)                                       \
    R(CLOCK,        0x0032, VM,     0,            0, SIZE(kvm_clock_data), SIZE(kvm_clock_data), \
      ROW_VM(VM_CLOCK))                                                                         \
    R(SWITCHOVER,   0x0100, STREAM, MIG_OPTIONAL, 0, SIZE(mig_switchover), SIZE(mig_switchover), \
      ROW_SWITCHOVER)                                                                           \
    R(END,          0x7fff, STREAM, 0,            0, SIZE(mig_end), SIZE(mig_end), ROW_END)
/* clang-format on */

enum mig_record_number {
#define MIG_RECORD_ENUM(name, number, ...) MIG_REC_##name = number,
    MIG_RECORD_TABLE(MIG_RECORD_ENUM)
#undef MIG_RECORD_ENUM
};

/* Whose state a record carries. */
enum mig_scope {
    MIG_SCOPE_STREAM, /* the stream's own: CONFIG, SWITCHOVER, END */
    MIG_SCOPE_RAM,    /* guest pages */
    MIG_SCOPE_DEVICE, /* one device's state (dev.h) */
    MIG_SCOPE_VM,     /* the VM's KVM state (vm_state.h); index: the instance (IRQCHIP's chip) */
    MIG_SCOPE_VCPU,   /* one vCPU's KVM state (vcpu_state.h); index: the vCPU */
};

/* Row flags. */
#define MIG_OPTIONAL 0x1u /* written without MIG_REC_MANDATORY: an older reader may skip it */

struct mig_record;
struct mig_writer;
struct mig_restore_info;
struct mig_sync;
struct dev_ops;
struct vm;
struct vm_state;

/* What a row's save works on: the paused VM, its KVM state as vm_state_save read it, and the
 * stream being written. */
struct mig_save {
    struct mig_writer *w;
    struct vm *vm;
    const struct vm_state *state;
};

/* What a row's load works on: the VM being restored (devices load at once), the KVM state
 * staged until END (vm_state_restore applies it then), and what the restore reports. */
struct mig_load {
    struct vm *vm;
    struct vm_state *state;
    struct mig_restore_info *info;
    const struct mig_sync *sync; /* RAM_SYNC's: NULL outside a multi-connection migration */
};

struct mig_record_type {
    uint16_t type;
    const char *name;
    enum mig_scope scope;
    uint8_t flags;
    uint8_t since; /* the minor version of format 1 it appeared in */
    uint32_t min_len, max_len;
    int item;                  /* VM: enum vm_item; VCPU: enum vcpu_item */
    const struct dev_ops *dev; /* DEVICE: the device whose state it is */
    /* Payload rules beyond the length, checked as the record is read (pure). */
    int (*check)(const struct mig_record *rec, const char *what);
    /* Rules on the payload a reader applies once the record is at its place (pure). */
    int (*verify)(const struct mig_record *rec, const char *what);
    /* Writes the record (for each instance or vCPU) from a paused VM; NULL: written elsewhere
     * (CONFIG, RAM, SWITCHOVER, END). Writes nothing when the state does not need it. */
    int (*save)(struct mig_save *s, const struct mig_record_type *t, unsigned index);
    /* Takes the record into the VM being restored; NULL: nothing to take. */
    int (*load)(struct mig_load *l, const struct mig_record_type *t, const struct mig_record *rec);
};

extern const struct mig_record_type mig_record_types[];
extern const unsigned mig_record_type_count;

/* The row of a type, or NULL when no row knows it. */
const struct mig_record_type *mig_record_find(uint16_t type);
/* Name of a record type ("REGS"), or NULL when unknown. */
const char *mig_record_name(uint16_t type);
bool mig_record_is_ram(uint16_t type);
bool mig_record_is_per_vcpu(uint16_t type);
/* The flags a writer gives a type: MIG_REC_MANDATORY unless its row is MIG_OPTIONAL. */
uint16_t mig_record_default_flags(uint16_t type);
/* Whether a stream of format 1.minor carries this row: all rows up to its version, and no
 * optional row newer than it (a mandatory one that is needed is refused at the handshake). */
bool mig_record_written(const struct mig_record_type *t, unsigned minor);
/* How many instances of a row a VM of cpus vCPUs has (vCPU rows: cpus; IRQCHIP: 3; else 1).
 * A device row is saved once, and its save writes one record per instance of the device (one
 * VIRTIO_BLK per disk, none without disks), its index the instance. */
unsigned mig_record_instances(const struct mig_record_type *t, unsigned cpus);

#endif
