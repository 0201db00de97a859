/* The one place that knows in which order KVM gives and takes a vCPU's state. Each ordering
 * rule is written once, beside the step that obeys it. */
#include "vcpu/vcpu_state.h"

#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"
#include "kvm/kvm_vcpu.h"
#include "nested/nested_msr.h"
#include "nested/nested_state.h"
#include "vcpu/vcpu.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MSR_IA32_TSC_DEADLINE 0x6e0u
#define VCPU_BIT(item) (1u << (item))

/* ---- capture --------------------------------------------------------------------------- */

/* The host's list, then the Hyper-V MSRs the vCPU's enlightenments bring that the list lacks
 * (KVM names SynIC's control but not its pages, SINTs or most timer MSRs). */
static uint32_t vcpu_msr_indices(struct vcpu *v, const struct kvm_msr_list *list, uint32_t *out)
{
    uint32_t hv[HYPERV_MSR_MAX], n = list->nmsrs;
    const struct kvm_cpuid2 *cpuid = vcpu_cpuid(v);
    unsigned hv_n = cpuid ? hyperv_msrs(hyperv_decode(cpuid->entries, cpuid->nent), hv) : 0;
    memcpy(out, list->indices, n * sizeof(out[0]));
    if (!cpuid || !hyperv_present(cpuid->entries, cpuid->nent))
        return n;
    for (unsigned k = 0; k < hv_n; k++) {
        bool listed = false;
        for (uint32_t i = 0; i < list->nmsrs && !listed; i++)
            listed = list->indices[i] == hv[k];
        if (!listed)
            out[n++] = hv[k];
    }
    return n;
}

/* The MSRs of vcpu_msr_indices that read back on this vCPU, with their values: KVM_GET_MSRS
 * stops at the first MSR it cannot read, so keep what it read and go on after that one. */
static int vcpu_save_msrs(struct vcpu *v, const struct kvm_msr_list *list, struct vcpu_state *s)
{
    uint32_t max = list->nmsrs + HYPERV_MSR_MAX;
    struct kvm_msrs *q = calloc(1, sizeof(*q) + max * sizeof(struct kvm_msr_entry));
    uint32_t *indices = calloc(max, sizeof(*indices));
    s->msrs = calloc(max, sizeof(struct kvm_msr_entry));
    if (!q || !s->msrs || !indices) {
        free(q);
        free(indices);
        return err_set(-ENOMEM, "out of memory");
    }
    uint32_t count = vcpu_msr_indices(v, list, indices);
    int rc = 0;
    for (uint32_t next = 0, got; next < count && !rc; next += got + 1) {
        q->nmsrs = count - next;
        for (uint32_t i = 0; i < q->nmsrs; i++)
            q->entries[i] = (struct kvm_msr_entry){.index = indices[next + i]};
        rc = kvm_vcpu_get_msrs(vcpu_fd(v), vcpu_index(v), q, &got);
        if (!rc) {
            memcpy(&s->msrs[s->nmsrs], q->entries, (size_t)got * sizeof(q->entries[0]));
            s->nmsrs += got;
        }
    }
    free(q);
    free(indices);
    if (!rc)
        s->have |= VCPU_BIT(VCPU_MSRS);
    return rc;
}

/* XSAVE2 (KVM_CAP_XSAVE2 gives the size, at least 4096) carries AMX and other large components
 * that the 4 KiB KVM_GET_XSAVE would cut off. */
static int vcpu_save_xsave(struct vcpu *v, const struct kvm_host *host, struct vcpu_state *s)
{
    if (!(s->xsave = calloc(1, host->xsave_size)))
        return err_set(-ENOMEM, "out of memory");
    s->xsave_len = host->xsave_size;
    int rc = kvm_vcpu_get_xsave(vcpu_fd(v), vcpu_index(v), host->xsave2, s->xsave);
    if (!rc)
        s->have |= VCPU_BIT(VCPU_XSAVE);
    return rc;
}

int vcpu_nested_save(struct vcpu *v, uint32_t nested_max, uint8_t *buf, uint32_t *len)
{
    unsigned i = vcpu_index(v);
    *len = 0;
    if (nested_max < NESTED_HEADER_SIZE)
        return err_set(-ENOTSUP,
                       "vCPU %u: this host cannot save nested state "
                       "(KVM_CAP_NESTED_STATE %u)",
                       i, nested_max);
    memset(buf, 0, nested_max);
    struct kvm_nested_state *ns = (struct kvm_nested_state *)buf;
    ns->size = nested_max;
    int rc = kvm_vcpu_get_nested_state(vcpu_fd(v), i, ns);
    if (rc)
        return err_context(rc, "buffer of %u bytes", nested_max);
    if (ns->size < NESTED_HEADER_SIZE || ns->size > nested_max)
        return err_set(-EPROTO, "vCPU %u: KVM_GET_NESTED_STATE reports %u bytes (buffer %u)", i,
                       ns->size, nested_max);
    struct nested_header h;
    if ((rc = nested_parse_header(buf, ns->size, &h)) || !nested_needed(&h))
        return rc;
    if ((rc = nested_validate(buf, ns->size, nested_max)))
        return err_context(rc, "vCPU %u: KVM_GET_NESTED_STATE gave a state tern cannot carry", i);
    *len = ns->size;
    return 0;
}

/* NESTED_STATE, where the vCPU can have one and is in VMX operation. */
static int vcpu_save_nested(struct vcpu *v, uint32_t nested_max, struct vcpu_state *s)
{
    if (!nested_max)
        return 0;
    if (!(s->nested = malloc(nested_max)))
        return err_set(-ENOMEM, "out of memory");
    int rc = vcpu_nested_save(v, nested_max, s->nested, &s->nested_len);
    if (!rc && s->nested_len)
        s->have |= VCPU_BIT(VCPU_NESTED);
    return rc;
}

/* Capture order. MP_STATE comes first: reading it makes KVM process pending INIT/SIPI events,
 * which may change CS:RIP and the LAPIC, so everything read after it is consistent with it. */
int vcpu_state_save(struct vcpu *v, const struct vcpu_save_env *env, struct vcpu_state *s)
{
    int fd = vcpu_fd(v);
    unsigned i = vcpu_index(v);
    const struct kvm_host *host = env->host;
    memset(s, 0, sizeof(*s));
    int rc = kvm_vcpu_get_mp_state(fd, i, &s->mp);
    if (!rc && !(rc = kvm_vcpu_get_events(fd, i, &s->events)))
        rc = kvm_vcpu_get_regs(fd, i, &s->regs);
    if (!rc)
        s->have |= VCPU_BIT(VCPU_MP_STATE) | VCPU_BIT(VCPU_EVENTS) | VCPU_BIT(VCPU_REGS);
    if (!rc)
        rc = vcpu_save_xsave(v, host, s);
    if (!rc && host->xcrs && !(rc = kvm_vcpu_get_xcrs(fd, i, &s->xcrs)))
        s->have |= VCPU_BIT(VCPU_XCRS);
    /* SREGS2 also carries the PDPTRs, which PAE paging needs exactly as they were loaded. */
    if (!rc && host->sregs2 && !(rc = kvm_vcpu_get_sregs2(fd, i, &s->sregs2)))
        s->have |= VCPU_BIT(VCPU_SREGS2);
    if (!rc && !host->sregs2 && !(rc = kvm_vcpu_get_sregs(fd, i, &s->sregs)))
        s->have |= VCPU_BIT(VCPU_SREGS);
    if (!rc && (rc = vcpu_save_msrs(v, host->msrs, s)))
        err_context(rc, "vCPU %u", i);
    if (!rc && !(rc = kvm_vcpu_get_lapic(fd, i, &s->lapic)) &&
        !(rc = kvm_vcpu_get_debugregs(fd, i, &s->debugregs)) &&
        !(rc = kvm_vcpu_get_tsc_khz(fd, i, &s->tsc_khz)))
        s->have |= VCPU_BIT(VCPU_LAPIC) | VCPU_BIT(VCPU_DEBUGREGS) | VCPU_BIT(VCPU_TSC_KHZ);
    s->evmcs = (struct vcpu_evmcs){.version = vcpu_evmcs_version(v)};
    if (s->evmcs.version)
        s->have |= VCPU_BIT(VCPU_EVMCS);
    /* NESTED_STATE last: the items above hold the vCPU's current registers (L2's, in guest
     * mode); this one adds vmcs12 (L1's view of L2 and L1's own host state), which KVM brings
     * up to date from the running L2 as it is read. */
    if (!rc)
        rc = vcpu_save_nested(v, env->nested_max, s);
    return rc;
}

/* ---- restore --------------------------------------------------------------------------- */

/* The vCPU's MSRs for which pick() holds; KVM_SET_MSRS stops at the first it rejects. */
static int vcpu_restore_msrs(struct vcpu *v, const struct vcpu_state *s, bool (*pick)(uint32_t msr))
{
    struct kvm_msrs *m = calloc(1, sizeof(*m) + s->nmsrs * sizeof(m->entries[0]));
    if (!m)
        return err_set(-ENOMEM, "out of memory");
    for (uint32_t i = 0; i < s->nmsrs; i++)
        if (pick(s->msrs[i].index))
            m->entries[m->nmsrs++] = s->msrs[i];
    int rc = vcpu_set_msrs(v, m);
    free(m);
    return rc;
}

static bool msr_before_nested(uint32_t msr)
{
    return msr == NESTED_MSR_FEATURE_CONTROL || nested_vmx_msr_restorable(msr);
}

/* The VMX capability MSRs KVM cannot restore are derived (from the "true" ones and CPUID). */
static bool msr_is_ordinary(uint32_t msr)
{
    return msr != NESTED_MSR_FEATURE_CONTROL && msr != MSR_IA32_TSC_DEADLINE &&
           !nested_vmx_msr(msr) && !hyperv_msr(msr);
}

static bool msr_is_tsc_deadline(uint32_t msr)
{
    return msr == MSR_IA32_TSC_DEADLINE;
}

static int step_evmcs(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    unsigned i = vcpu_index(v);
    struct nested_header nh = {0};
    bool nested = vcpu_state_has(s, VCPU_NESTED);
    int rc;
    if (nested && (rc = nested_parse_header(s->nested, s->nested_len, &nh)))
        return err_context(rc, "vCPU %u", i);
    /* A host without eVMCS still takes a vCPU whose eVMCS was enabled but never active (KVM
     * commit 323d73a8ec). */
    if (vcpu_state_has(s, VCPU_EVMCS) && env->evmcs)
        return vcpu_enable_evmcs(v, NULL);
    if (nested && nested_needs_evmcs(&nh))
        return err_set(-ENOTSUP, "vCPU %u runs L2 through an active enlightened VMCS; %s", i,
                       vcpu_state_has(s, VCPU_EVMCS)
                           ? "this host lacks KVM_CAP_HYPERV_ENLIGHTENED_VMCS"
                           : "the stream has no EVMCS record to enable it");
    return 0;
}

static int step_vmx_msrs(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    return vcpu_restore_msrs(v, s, msr_before_nested);
}

static int step_sregs(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    if (vcpu_state_has(s, VCPU_SREGS2))
        return kvm_vcpu_set_sregs2(vcpu_fd(v), vcpu_index(v), &s->sregs2);
    return kvm_vcpu_set_sregs(vcpu_fd(v), vcpu_index(v), &s->sregs);
}

static int step_nested(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    unsigned i = vcpu_index(v);
    if (!vcpu_state_has(s, VCPU_NESTED))
        return 0;
    if (!env->nested_max)
        return err_set(-ENOTSUP,
                       "vCPU %u carries nested state; this host cannot restore it "
                       "(KVM_CAP_NESTED_STATE 0)",
                       i);
    int rc = nested_validate(s->nested, s->nested_len, env->nested_max);
    if (rc)
        return err_context(rc, "vCPU %u", i);
    /* KVM reads the struct through an aligned pointer; the state's copy need not be. */
    void *copy = aligned_alloc(8, (s->nested_len + 7) & ~7u);
    if (!copy)
        return err_set(-ENOMEM, "out of memory");
    memcpy(copy, s->nested, s->nested_len);
    rc = kvm_vcpu_set_nested_state(vcpu_fd(v), i, copy);
    free(copy);
    return rc;
}

static int step_tsc_khz(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    uint32_t khz;
    if (kvm_vcpu_get_tsc_khz(vcpu_fd(v), vcpu_index(v), &khz) || khz == s->tsc_khz)
        return 0;
    int rc = kvm_vcpu_set_tsc_khz(vcpu_fd(v), vcpu_index(v), s->tsc_khz);
    return rc ? err_context(rc, "host runs at %u kHz", khz) : 0;
}

static int step_regs(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    return kvm_vcpu_set_regs(vcpu_fd(v), vcpu_index(v), &s->regs);
}

static int step_xcrs(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    if (!vcpu_state_has(s, VCPU_XCRS))
        return 0;
    return kvm_vcpu_set_xcrs(vcpu_fd(v), vcpu_index(v), &s->xcrs);
}

/* KVM_SET_XSAVE reads as many bytes as this host's XSAVE2 size: a smaller saved area (from a
 * host with a smaller one) is padded with zeros, components it does not hold stay in reset. */
static int step_xsave(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    size_t size = env->xsave_size > s->xsave_len ? env->xsave_size : s->xsave_len;
    uint8_t *area = calloc(1, size);
    if (!area)
        return err_set(-ENOMEM, "out of memory");
    memcpy(area, s->xsave, s->xsave_len);
    int rc = kvm_vcpu_set_xsave(vcpu_fd(v), vcpu_index(v), area);
    free(area);
    return rc;
}

static int step_msrs(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    return vcpu_restore_msrs(v, s, msr_is_ordinary);
}

static int step_events(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    /* The NMI and SIPI fields are valid in what KVM_GET_VCPU_EVENTS returned, but it does not
     * say so in flags. */
    s->events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    return kvm_vcpu_set_events(vcpu_fd(v), vcpu_index(v), &s->events);
}

static int step_mp_state(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    return kvm_vcpu_set_mp_state(vcpu_fd(v), vcpu_index(v), &s->mp);
}

static int step_lapic(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    return kvm_vcpu_set_lapic(vcpu_fd(v), vcpu_index(v), &s->lapic);
}

static int step_tsc_deadline(struct vcpu *v, const struct vcpu_restore_env *env,
                             struct vcpu_state *s)
{
    (void)env;
    return vcpu_restore_msrs(v, s, msr_is_tsc_deadline);
}

/* The Hyper-V MSRs in the order hyperv_msrs gives (its reasons are written there), then any
 * other of the range the stream carries. */
static int step_hyperv_msrs(struct vcpu *v, const struct vcpu_restore_env *env,
                            struct vcpu_state *s)
{
    (void)env;
    uint32_t order[HYPERV_MSR_MAX];
    unsigned order_n = hyperv_msrs(~0u, order);
    struct kvm_msrs *m = calloc(1, sizeof(*m) + s->nmsrs * sizeof(m->entries[0]));
    if (!m)
        return err_set(-ENOMEM, "out of memory");
    for (unsigned k = 0; k <= order_n; k++)
        for (uint32_t i = 0; i < s->nmsrs; i++) {
            uint32_t msr = s->msrs[i].index;
            bool ordered = false;
            for (unsigned j = 0; j < order_n && k == order_n && !ordered; j++)
                ordered = order[j] == msr;
            if (hyperv_msr(msr) && (k < order_n ? msr == order[k] : !ordered))
                m->entries[m->nmsrs++] = s->msrs[i];
        }
    int rc = m->nmsrs ? vcpu_set_msrs(v, m) : 0;
    free(m);
    return rc;
}

static int step_debugregs(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    (void)env;
    return kvm_vcpu_set_debugregs(vcpu_fd(v), vcpu_index(v), &s->debugregs);
}

enum {
    STEP_EVMCS,
    STEP_VMX_MSRS,
    STEP_SREGS,
    STEP_NESTED,
    STEP_TSC_KHZ,
    STEP_REGS,
    STEP_XCRS,
    STEP_XSAVE,
    STEP_MSRS,
    STEP_EVENTS,
    STEP_MP_STATE,
    STEP_LAPIC,
    STEP_TSC_DEADLINE,
    STEP_DEBUGREGS,
    STEP_HYPERV_MSRS,
    STEP_COUNT
};

/* Restore order, after the VM has set the vCPU's CPUID (KVM checks every later state against
 * it) and put all guest RAM in place (KVM reads vmcs12 and the eVMCS from guest memory when
 * nested state is set and at the first KVM_RUN). */
const struct vcpu_restore_step vcpu_restore_steps[STEP_COUNT] = {
    [STEP_EVMCS] = {{"EVMCS", 0,
                     "enabled before nested state: KVM refuses a nested state flagged "
                     "KVM_STATE_NESTED_EVMCS on a vCPU without it"},
                    step_evmcs},
    [STEP_VMX_MSRS] = {{"VMX_MSRS", 0,
                        "IA32_FEATURE_CONTROL and the VMX capability MSRs KVM lets userspace "
                        "set, before nested state: KVM refuses changes to the capability MSRs "
                        "once the vCPU is in VMX operation, and checks VMXON against feature "
                        "control"},
                       step_vmx_msrs},
    [STEP_SREGS] = {{"SREGS2", 0,
                     "SREGS2 (or SREGS) before nested state: KVM checks nested state against "
                     "EFER, CR0 and CR4"},
                    step_sregs},
    [STEP_NESTED] = {{"NESTED_STATE",
                      ORDER_AFTER(STEP_EVMCS) | ORDER_AFTER(STEP_VMX_MSRS) |
                          ORDER_AFTER(STEP_SREGS),
                      "after eVMCS, feature control and SREGS2, which KVM checks it against"},
                     step_nested},
    [STEP_TSC_KHZ] = {{"TSC_KHZ", 0, "set before the TSC MSR, so its value is scaled at the rate"},
                      step_tsc_khz},
    [STEP_REGS] = {{"REGS", ORDER_AFTER(STEP_NESTED),
                    "after nested state: in guest mode KVM loads L2's state from vmcs12 as it "
                    "sets nested state, and REGS (L2's live registers then) must land on top"},
                   step_regs},
    [STEP_XCRS] = {{"XCRS", 0, "before XSAVE, which depends on XCR0"}, step_xcrs},
    [STEP_XSAVE] = {{"XSAVE", ORDER_AFTER(STEP_XCRS),
                     "after XCRS: XCR0 decides which XSAVE components KVM accepts"},
                    step_xsave},
    [STEP_MSRS] = {{"MSRS", ORDER_AFTER(STEP_TSC_KHZ),
                    "every MSR but the VMX ones and TSC_DEADLINE; after TSC_KHZ, so the TSC is "
                    "scaled right"},
                   step_msrs},
    [STEP_EVENTS] = {{"VCPU_EVENTS", ORDER_AFTER(STEP_REGS),
                      "after REGS: KVM_SET_REGS clears pending exceptions"},
                     step_events},
    [STEP_MP_STATE] = {{"MP_STATE", 0, "no rule of its own: KVM takes it once CPUID2 is set"},
                       step_mp_state},
    [STEP_LAPIC] = {{"LAPIC", ORDER_AFTER(STEP_SREGS),
                     "after SREGS2: the APIC base (and so x2APIC mode) comes with the special "
                     "registers"},
                    step_lapic},
    [STEP_TSC_DEADLINE] = {{"TSC_DEADLINE", ORDER_AFTER(STEP_LAPIC),
                            "after LAPIC: writing it arms the LAPIC timer"},
                           step_tsc_deadline},
    [STEP_DEBUGREGS] = {{"DEBUGREGS", 0, "no rule of its own: KVM takes it once CPUID2 is set"},
                        step_debugregs},
    [STEP_HYPERV_MSRS] = {{"HYPERV_MSRS",
                           ORDER_AFTER(STEP_MSRS) | ORDER_AFTER(STEP_LAPIC) |
                               ORDER_AFTER(STEP_NESTED),
                           "the Hyper-V MSRs in their own order (hyperv_msrs), with SynIC "
                           "already active (enabled with CPUID2); after LAPIC, which a "
                           "synthetic timer due at once interrupts, and MSRS (the TSC); the VP "
                           "assist page before the first KVM_RUN, where KVM maps an active "
                           "eVMCS through it"},
                          step_hyperv_msrs},
};
const unsigned vcpu_restore_step_count = STEP_COUNT;

/* The items a vCPU cannot be restored without (and one of SREGS2 and SREGS). */
static const enum vcpu_item vcpu_required[] = {VCPU_MP_STATE,  VCPU_EVENTS, VCPU_REGS,
                                               VCPU_XSAVE,     VCPU_MSRS,   VCPU_LAPIC,
                                               VCPU_DEBUGREGS, VCPU_TSC_KHZ};

int vcpu_state_restore(struct vcpu *v, const struct vcpu_restore_env *env, struct vcpu_state *s)
{
    unsigned i = vcpu_index(v);
    if (!vcpu_cpuid(v))
        return err_set(-EINVAL, "vCPU %u: its CPUID must be set before its state", i);
    for (size_t k = 0; k < sizeof(vcpu_required) / sizeof(vcpu_required[0]); k++)
        if (!vcpu_state_has(s, vcpu_required[k]))
            return err_set(-EPROTO, "vCPU %u: the stream has no %s record", i,
                           vcpu_item_name(vcpu_required[k]));
    if (!vcpu_state_has(s, VCPU_SREGS2) && !vcpu_state_has(s, VCPU_SREGS))
        return err_set(-EPROTO, "vCPU %u: the stream has no SREGS2 or SREGS record", i);
    int rc = 0;
    for (unsigned k = 0; k < STEP_COUNT && !rc; k++)
        rc = vcpu_restore_steps[k].apply(v, env, s);
    return rc;
}
