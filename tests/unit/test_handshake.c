/* The migration handshake: what a source asks of a destination and the destination's rules.
 * Inputs mirror real values: 4096-byte XSAVE (KVM_GET_XSAVE), 8320-byte nested state
 * (KVM_CAP_NESTED_STATE on kvm_intel), CPUID entries as KVM_GET_CPUID2 returns them. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"
#include "nested/nested_msr.h"
#include "migrate/mig_handshake.h"
#include "migrate/mig_stream.h"

static struct mig_hs_need need_basic(void)
{
    struct mig_hs_need n;
    memset(&n, 0, sizeof(n)); /* padding too: the round-trip test compares bytes */
    n.stream_major = 1;
    n.mem_size = 256ull << 20;
    n.cpus = 2;
    n.xsave_size = 4096;
    n.features[0] = 0x80202001; /* 1.ECX: SSE3, X2APIC, hypervisor */
    n.features[2] = 0x00000209; /* 7.0.EBX */
    n.connections = 1;
    return n;
}

static struct mig_hs_caps caps_basic(void)
{
    struct mig_hs_caps c;
    memset(&c, 0, sizeof(c));
    c.stream_major = 1;
    c.mem_limit = 24ull << 30;
    c.max_cpus = 64;
    c.xsave_size = 4096;
    for (int k = 0; k < MIG_HS_FEATURE_REGS; k++)
        c.features[k] = 0xffffffff;
    c.connections_max = MIG_HS_MAX_CONNECTIONS;
    return c;
}

static void expect_refusal(const struct mig_hs_need *n, const struct mig_hs_caps *c,
                           const char *fragment)
{
    char why[512] = "";
    cr_assert_lt(mig_hs_check(n, c, why, sizeof(why)), 0, "accepted; wanted '%s'", fragment);
    cr_assert(strstr(why, fragment), "'%s' not in '%s'", fragment, why);
}

Test(handshake, a_matching_host_accepts)
{
    struct mig_hs_need n = need_basic();
    struct mig_hs_caps c = caps_basic();
    char why[512] = "";
    cr_assert_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
}

Test(handshake, each_missing_capability_is_named)
{
    struct mig_hs_need n = need_basic();
    struct mig_hs_caps c = caps_basic();
    c.stream_major = 2;
    expect_refusal(&n, &c, "stream format 1.0");
    c = caps_basic();
    c.mem_limit = 128ull << 20;
    expect_refusal(&n, &c, "the destination host has only 128 MiB");
    c.mem_exact = true;
    expect_refusal(&n, &c, "started with --mem 128 MiB");
    c = caps_basic();
    c.max_cpus = 1;
    expect_refusal(&n, &c, "takes at most 1");
    c.max_cpus = 4;
    c.cpus_exact = true;
    expect_refusal(&n, &c, "started with --cpus 4");
    c = caps_basic();
    n.xsave_size = 11008; /* AMX */
    expect_refusal(&n, &c, "KVM_CAP_XSAVE2");
    n = need_basic();
    n.nested_size = 8320;
    n.stream_minor = c.stream_minor = MIG_VERSION_MINOR; /* terns that carry nested state */
    expect_refusal(&n, &c, "has no nested VMX (KVM_CAP_NESTED_STATE 0)");
    c.nested_max = 4096;
    expect_refusal(&n, &c, "KVM_CAP_NESTED_STATE is 4096");
    c.nested_max = 8320;
    char why[512];
    cr_assert_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    n.evmcs = true;
    expect_refusal(&n, &c, "KVM_CAP_HYPERV_ENLIGHTENED_VMCS");
    n = need_basic();
    c = caps_basic();
    c.features[2] &= ~0x8u; /* 7.0.EBX bit 3: BMI1 */
    expect_refusal(&n, &c, "CPUID 7.0.EBX bit 3");
}

Test(handshake, json_round_trip)
{
    struct mig_hs_need n = need_basic(), n2;
    n.nested_size = 8320;
    n.evmcs = true;
    json_t *j = mig_hs_need_to_json(&n);
    cr_assert_eq(mig_hs_need_from_json(j, &n2), 0);
    cr_assert_eq(memcmp(&n, &n2, sizeof(n)), 0);
    json_decref(j);
    struct mig_hs_caps c = caps_basic(), c2;
    c.mem_exact = true;
    c.nested_max = 8320;
    j = mig_hs_caps_to_json(&c);
    cr_assert_eq(mig_hs_caps_from_json(j, &c2), 0);
    cr_assert_eq(memcmp(&c, &c2, sizeof(c)), 0);
    json_decref(j);
}

/* --connections: said only when more than one, and read as one when absent, so that a tern of
 * format 1.2 (which knows neither field) and this one understand each other. */
Test(handshake, connections_travel_and_older_terns_take_one)
{
    struct mig_hs_need n = need_basic(), n2;
    n.connections = 4;
    json_t *j = mig_hs_need_to_json(&n);
    cr_assert_eq(json_integer_value(json_object_get(j, "connections")), 4);
    cr_assert_eq(mig_hs_need_from_json(j, &n2), 0);
    cr_expect_eq(n2.connections, 4);
    json_object_del(j, "connections");
    cr_assert_eq(mig_hs_need_from_json(j, &n2), 0);
    cr_expect_eq(n2.connections, 1);
    json_object_set_new(j, "connections", json_integer(17));
    cr_expect_lt(mig_hs_need_from_json(j, &n2), 0);
    cr_expect(strstr(err_msg(), "\"connections\" must be an integer from 1 to 16"), "%s",
              err_msg());
    json_decref(j);
    n.connections = 1;
    j = mig_hs_need_to_json(&n);
    cr_expect_null(json_object_get(j, "connections"));
    json_decref(j);

    struct mig_hs_caps c = caps_basic(), c2;
    j = mig_hs_caps_to_json(&c);
    json_object_del(j, "connections_max");
    cr_assert_eq(mig_hs_caps_from_json(j, &c2), 0);
    cr_expect_eq(c2.connections_max, 1);
    json_decref(j);

    n.connections = 4;
    expect_refusal(&n, &c2, "--connections 4: the destination takes one connection");
    c.connections_max = 2;
    expect_refusal(&n, &c, "--connections 4: the destination takes at most 2");
}

Test(handshake, malformed_json_is_rejected)
{
    struct mig_hs_need n;
    const char *bad[] = {
        "[]",
        "{}",
        "{\"protocol\":2}",
        "{\"protocol\":1,\"stream_major\":1,\"stream_minor\":0,\"mem\":-1,\"cpus\":1,"
        "\"xsave_size\":4096,\"nested_size\":0,\"evmcs\":false,\"cpuid\":{}}",
        "{\"protocol\":1,\"stream_major\":1,\"stream_minor\":0,\"mem\":4096,\"cpus\":1,"
        "\"xsave_size\":4096,\"nested_size\":0,\"evmcs\":0,\"cpuid\":{}}",
        "{\"protocol\":1,\"stream_major\":1,\"stream_minor\":0,\"mem\":4096,\"cpus\":1,"
        "\"xsave_size\":4096,\"nested_size\":0,\"evmcs\":false,\"cpuid\":{\"1.ECX\":1}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        cr_assert(j, "test input %zu", i);
        cr_expect_neq(mig_hs_need_from_json(j, &n), 0, "accepted: %s", bad[i]);
        json_decref(j);
    }
}

Test(handshake, features_come_from_the_right_leaves)
{
    struct kvm_cpuid2 *t = calloc(1, sizeof(*t) + 4 * sizeof(struct kvm_cpuid_entry2));
    cr_assert(t);
    t->nent = 4;
    t->entries[0] = (struct kvm_cpuid_entry2){.function = 1, .ecx = 0x88000001, .edx = 0x10000200};
    t->entries[1] = (struct kvm_cpuid_entry2){
        .function = 7, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 0x209};
    t->entries[2] = (struct kvm_cpuid_entry2){
        .function = 7, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 0xdead};
    t->entries[3] = (struct kvm_cpuid_entry2){
        .function = 0xd, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0xf};
    uint32_t f[MIG_HS_FEATURE_REGS];
    mig_hs_features(t, f);
    free(t);
    /* OSXSAVE (1.ECX bit 27), HTT and APIC (1.EDX bits 28, 9) are guest state, not features. */
    cr_expect_eq(f[0], 0x80000001);
    cr_expect_eq(f[1], 0);
    cr_expect_eq(f[2], 0x209, "subleaf 1 must not count as 7.0");
    cr_expect_eq(f[5], 0xf);
    cr_expect_eq(f[6], 0, "absent leaves read as 0");
}

/* An older destination: the source writes its format, and refuses a VM whose state needs a
 * record that format lacks, naming the record. */
Test(handshake, an_older_destination_gets_its_own_format)
{
    struct mig_hs_need n = need_basic();
    struct mig_hs_caps c = caps_basic();
    char why[512] = "";
    n.stream_minor = MIG_VERSION_MINOR;
    for (unsigned minor = 0; minor <= MIG_VERSION_MINOR; minor++) {
        c.stream_minor = minor;
        cr_expect_eq(mig_hs_stream_minor(&n, &c), minor);
        cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "1.%u: %s", minor, why);
    }
    n.nested_size = 128; /* a vCPU in VMX operation */
    c.nested_max = 8320;
    c.stream_minor = 1;
    expect_refusal(&n, &c, "stream format 1.1, which has no record NESTED_STATE (new in 1.2)");
    n.nested_size = 0; /* outside VMX operation, but --nested: it may enter it on the way */
    n.features[0] |= 1u << 5;
    expect_refusal(&n, &c, "has no record NESTED_STATE (new in 1.2); the VM's vCPUs offer VMX");
    c.stream_minor = MIG_VERSION_MINOR;
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    /* A newer destination: the source's own format. */
    c.stream_minor = MIG_VERSION_MINOR + 1;
    cr_expect_eq(mig_hs_stream_minor(&n, &c), MIG_VERSION_MINOR);
}

static int null_sink(void *opaque, const void *buf, size_t len)
{
    (void)opaque, (void)buf, (void)len;
    return 0;
}

Test(handshake, a_writer_of_an_older_format_refuses_newer_records)
{
    struct mig_writer w;
    mig_writer_init(&w, null_sink, NULL);
    cr_assert_eq(w.minor, MIG_VERSION_MINOR);
    w.minor = 1;
    uint8_t payload[8] = {0};
    cr_expect_lt(mig_write_record(&w, MIG_REC_EVMCS, 0, payload, sizeof(payload)), 0);
    cr_expect(strstr(err_msg(), "record EVMCS is new in stream format 1.2; this stream is 1.1"),
              "%s", err_msg());
    cr_expect_eq(w.records, 0);
    cr_expect_eq(mig_write_record(&w, MIG_REC_TSC_KHZ, 0, payload, 4), 0, "%s", err_msg());
    /* What a capture of format 1.minor writes: optional rows only up to their version. */
    cr_expect_not(mig_record_written(mig_record_find(MIG_REC_RTC), 0));
    cr_expect(mig_record_written(mig_record_find(MIG_REC_RTC), 1));
    cr_expect_not(mig_record_written(mig_record_find(MIG_REC_EVMCS), 1));
    cr_expect(mig_record_written(mig_record_find(MIG_REC_NESTED_STATE), 1),
              "a mandatory row is never left out: the handshake refuses the VM instead");
}

/* A malformed hello names its field. */
Test(handshake, a_malformed_field_is_named)
{
    static const struct {
        const char *json, *fragment;
    } cases[] = {
        {"{\"protocol\":1,\"stream_major\":1,\"stream_minor\":2,\"mem\":\"lots\"}",
         "\"mem\" is not an integer"},
        {"{\"protocol\":1,\"stream_major\":1,\"stream_minor\":2,\"mem\":-5}",
         "\"mem\" is out of range"},
        {"{\"protocol\":1,\"stream_major\":1}", "\"stream_minor\" is missing"},
        {"{\"protocol\":3}", "\"protocol\" is 3"},
        {"[]", "no \"hello\" object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = json_loads(cases[i].json, 0, NULL);
        struct mig_hs_need n;
        cr_expect_lt(mig_hs_need_from_json(j, &n), 0, "%s", cases[i].json);
        cr_expect(strstr(err_msg(), cases[i].fragment), "'%s' not in '%s'", cases[i].fragment,
                  err_msg());
        json_decref(j);
    }
    struct mig_hs_need n = need_basic();
    json_t *j = mig_hs_need_to_json(&n);
    json_object_set_new(j, "evmcs", json_integer(1));
    cr_expect_lt(mig_hs_need_from_json(j, &n), 0);
    cr_expect(strstr(err_msg(), "\"evmcs\" is of another type, not true or false"), "%s",
              err_msg());
    json_decref(j);
}

Test(handshake, a_vm_with_disks_needs_a_destination_of_format_1_4)
{
    struct mig_hs_need n = need_basic();
    struct mig_hs_caps c = caps_basic();
    n.stream_minor = c.stream_minor = MIG_VERSION_MINOR;
    n.disks = 2;
    char why[512] = "";
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    c.stream_minor = 3;
    expect_refusal(&n, &c, "which has no record VIRTIO_BLK (new in 1.4); the VM has 2 disk(s)");
    n.disks = 0;
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    /* The disks travel only when there are some: each one's path and size. */
    n.disks = 2;
    strcpy(n.disk[0].path, "/srv/a.img");
    n.disk[0].size = 1ull << 30;
    strcpy(n.disk[1].path, "/srv/b.img");
    n.disk[1].size = 4096;
    json_t *j = mig_hs_need_to_json(&n);
    struct mig_hs_need back;
    cr_assert_eq(mig_hs_need_from_json(j, &back), 0, "%s", err_msg());
    cr_expect_eq(back.disks, 2);
    cr_expect(!strcmp(back.disk[1].path, "/srv/b.img") && back.disk[0].size == 1ull << 30);
    json_object_set_new(json_array_get(json_object_get(j, "disks"), 1), "size", json_integer(1000));
    cr_expect_lt(mig_hs_need_from_json(j, &back), 0);
    cr_expect(strstr(err_msg(), "\"disks\"[1] must be"), "%s", err_msg());
    json_decref(j);
    /* Network devices: a destination needs a --net for each, and format 1.4. */
    struct mig_hs_need nn = need_basic();
    struct mig_hs_caps nc = caps_basic();
    nn.stream_minor = nc.stream_minor = MIG_VERSION_MINOR;
    nn.nets = 1;
    expect_refusal(&nn, &nc, "the VM has 1 network device(s); the destination was given --net 0");
    nc.nets_given = 1;
    cr_expect_eq(mig_hs_check(&nn, &nc, why, sizeof(why)), 0, "%s", why);
    nc.stream_minor = 3;
    expect_refusal(&nn, &nc, "no record VIRTIO_NET (new in 1.4); the VM has 1 network device(s)");
    /* A destination given another number of --disk refuses, naming both. */
    c.stream_minor = MIG_VERSION_MINOR;
    c.disks_given = 1;
    expect_refusal(&n, &c, "the destination was given --disk 1 time(s); the VM has 2 disk(s)");
    n.disks = 0;
    j = mig_hs_need_to_json(&n);
    cr_expect(!json_object_get(j, "disks"));
    json_decref(j);
}

/* The CPU beyond CPUID bits. VMX values as KVM's nested VMX reports them on a Haswell host:
 * BASIC (revision 0x11e57ed0, 4 KiB VMCS, write-back, INS/OUTS info, true controls), the
 * secondary controls (EPT, VPID, unrestricted guest and more allowed) and the true
 * processor-based controls. */
#define VMX_BASIC 0x00d8100011e57ed0ull
#define VMX_CTLS2 0x000537fe00000000ull
#define VMX_TRUE_PROCBASED 0xfff9fffe04006172ull

static void give_vmx(struct mig_hs_msr *m, unsigned *n)
{
    m[0] = (struct mig_hs_msr){0x480, VMX_BASIC};
    m[1] = (struct mig_hs_msr){0x48b, VMX_CTLS2};
    m[2] = (struct mig_hs_msr){0x48e, VMX_TRUE_PROCBASED};
    *n = 3;
}

Test(handshake, vmx_capability_msrs_are_compared_bit_by_bit)
{
    struct mig_hs_need n = need_basic();
    struct mig_hs_caps c = caps_basic();
    char why[512] = "";
    give_vmx(n.vmx, &n.vmx_count);
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "an older destination is not asked");
    c.vmx_known = true;
    give_vmx(c.vmx, &c.vmx_count);
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    c.vmx[1].value = VMX_CTLS2 & 0xffffffffull; /* --hide-cap vmx-controls */
    expect_refusal(
        &n, &c, "cannot give IA32_VMX_PROCBASED_CTLS2 as the guest has it: bits 0x537fe00000000");
    c.vmx[1].value = VMX_CTLS2;
    c.vmx[2].value = VMX_TRUE_PROCBASED | 0x80; /* the destination must have HLT exiting */
    expect_refusal(&n, &c, "IA32_VMX_TRUE_PROCBASED_CTLS as the guest has it: bits 0x80");
    c.vmx_count = 1;
    expect_refusal(&n, &c,
                   "the guest was given IA32_VMX_PROCBASED_CTLS2; the destination's KVM "
                   "does not report it");
    c.vmx_count = 0;
    n.vmx_count = 0;
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "no VMX given, none needed: %s", why);
}

Test(handshake, vmx_rules_are_kvms)
{
    cr_expect_eq(nested_vmx_msr_missing(0x480, VMX_BASIC, VMX_BASIC), 0);
    cr_expect_eq(nested_vmx_msr_missing(0x480, VMX_BASIC, VMX_BASIC & ~(1ull << 54)), 1ull << 54,
                 "INS/OUTS information");
    cr_expect_neq(nested_vmx_msr_missing(0x480, VMX_BASIC, VMX_BASIC + 1), 0, "another revision");
    cr_expect_eq(nested_vmx_msr_missing(0x486, 0x80000021, 0x80000021), 0);
    cr_expect_eq(nested_vmx_msr_missing(0x486, 0x80000001, 0x80000021), 0x20,
                 "CR0.NE fixed on the destination, free for the guest");
    cr_expect_eq(nested_vmx_msr_missing(0x48c, 0xf0106334141ull, 0xf0106114141ull), 0x220000,
                 "EPT/VPID capabilities the destination lacks");
    cr_expect_eq(nested_vmx_msr_missing(0x48a, 0x2e, 0x10), 0, "VMCS_ENUM is not checked");
    cr_expect_eq(nested_vmx_msr_hide_controls(0x48b, VMX_CTLS2), 0);
    cr_expect_eq(nested_vmx_msr_hide_controls(0x48e, VMX_TRUE_PROCBASED), VMX_TRUE_PROCBASED);
    cr_expect_str_eq(nested_vmx_msr_name(0x48b), "IA32_VMX_PROCBASED_CTLS2");
}

Test(handshake, enlightenments_and_tsc_rate)
{
    struct mig_hs_need n = need_basic();
    struct mig_hs_caps c = caps_basic();
    char why[512] = "";
    n.hyperv = true;
    n.hyperv_set = HV_BIT(HV_VPINDEX) | HV_BIT(HV_SYNIC);
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "an older destination is not asked");
    c.hyperv_known = true;
    expect_refusal(&n, &c, "the destination's KVM offers none (KVM_CAP_HYPERV)");
    c.hyperv_set = HV_BIT(HV_VPINDEX) | HV_BIT(HV_RELAXED); /* --hide-cap synic */
    expect_refusal(&n, &c,
                   "the guest has the Hyper-V enlightenment synic; the destination's KVM "
                   "cannot give it (KVM_CAP_HYPERV_SYNIC2)");
    c.hyperv_set |= HV_BIT(HV_SYNIC);
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    n.hyperv_set |= HV_BIT(HV_EVMCS); /* enabled, not active: the destination need not have it */
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    n.evmcs = true;
    expect_refusal(&n, &c, "KVM_CAP_HYPERV_ENLIGHTENED_VMCS");
    n.evmcs = false;
    n.tsc_khz = 2400000;
    c.tsc_khz = 2500000;
    expect_refusal(&n, &c,
                   "the guest's TSC runs at 2400000 kHz; the destination's at 2500000 kHz, "
                   "and its KVM cannot scale it (no KVM_CAP_TSC_CONTROL)");
    c.tsc_khz = 2400500; /* 208 ppm: KVM runs it unscaled */
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
    c.tsc_khz = 2500000;
    c.tsc_scaling = true;
    cr_expect_eq(mig_hs_check(&n, &c, why, sizeof(why)), 0, "%s", why);
}

Test(handshake, cpu_fields_round_trip_and_are_checked)
{
    struct mig_hs_need n = need_basic(), n2;
    n.hyperv = true;
    n.hyperv_set = HYPERV_PRESET_WINDOWS | HV_BIT(HV_EVMCS);
    n.tsc_khz = 2893299;
    give_vmx(n.vmx, &n.vmx_count);
    json_t *j = mig_hs_need_to_json(&n);
    cr_assert_eq(mig_hs_need_from_json(j, &n2), 0, "%s", err_msg());
    cr_expect_eq(memcmp(&n, &n2, sizeof(n)), 0);
    json_decref(j);
    struct mig_hs_caps c = caps_basic(), c2;
    c.hyperv_known = c.vmx_known = c.tsc_scaling = true;
    c.hyperv_set = HV_BIT(HV_RELAXED);
    c.tsc_khz = 2893299;
    give_vmx(c.vmx, &c.vmx_count);
    j = mig_hs_caps_to_json(&c);
    cr_assert_eq(mig_hs_caps_from_json(j, &c2), 0, "%s", err_msg());
    cr_expect_eq(memcmp(&c, &c2, sizeof(c)), 0);
    json_decref(j);
    static const struct {
        const char *key, *value, *fragment;
    } bad[] = {
        {"hyperv", "[\"warp-drive\"]", "\"hyperv\"[0] is not an enlightenment this tern knows"},
        {"hyperv", "\"relaxed\"", "\"hyperv\" must be an array"},
        {"vmx", "{\"0x10\": \"0x1\"}", "\"vmx\": \"0x10\" must name a VMX capability MSR"},
        {"vmx", "{\"0x48b\": 7}", "\"vmx\": \"0x48b\" must name"},
        {"vmx", "{\"0x48b\": \"0xfffffffffffffffff\"}", "\"vmx\": \"0x48b\" must name"},
        {"tsc_khz", "0", "\"tsc_khz\" must be an integer from 1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = mig_hs_need_to_json(&n);
        json_object_set_new(j, bad[i].key, json_loads(bad[i].value, JSON_DECODE_ANY, NULL));
        cr_expect_lt(mig_hs_need_from_json(j, &n2), 0, "%s: %s", bad[i].key, bad[i].value);
        cr_expect(strstr(err_msg(), bad[i].fragment), "'%s' not in '%s'", bad[i].fragment,
                  err_msg());
        json_decref(j);
    }
}
