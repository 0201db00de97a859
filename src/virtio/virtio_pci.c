/* The virtio 1.x PCI transport (virtio_pci.h). */
#include "virtio/virtio_pci.h"

#include "err/err.h"
#include "le/le.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define VP_CAP_COMMON 1
#define VP_CAP_NOTIFY 2
#define VP_CAP_ISR 3
#define VP_CAP_DEVICE 4
#define VP_MSIX_MAX (VIRTIO_PCI_MAX_QUEUES + 1)
#define VP_MSIX_ENABLE 0x8000u
#define VP_MSIX_MASKALL 0x4000u
#define VP_STATE_VERSION 1u

struct vp_vector {
    uint32_t entry[4]; /* addr lo, addr hi, data, control (bit 0: masked) */
    int fd;            /* the irqfd */
    int gsi;           /* its route; -1 until first used */
    bool stale;        /* the entry changed since the route was set */
};

struct vp_queue {
    struct virtq q;
    uint16_t vector;
    int fd; /* the ioeventfd */
    bool fd_assigned;
    uint64_t fd_gpa;
};

struct virtio_pci {
    struct virtio_pci_params p;
    struct pci_fn *fn;
    struct virtq_mem mem;
    pthread_mutex_t lock;
    uint64_t features_offered, features_driver;
    uint32_t dev_sel, drv_sel;
    uint8_t status, generation, isr;
    uint16_t config_vector, queue_sel;
    unsigned msix_cap;
    uint64_t pba;
    struct vp_vector vec[VP_MSIX_MAX];
    struct vp_queue queues[VIRTIO_PCI_MAX_QUEUES];
};

/* ---- interrupts ------------------------------------------------------------------------------ */

static unsigned vp_vectors(const struct virtio_pci *vp)
{
    return vp->p.queues + 1;
}

static uint16_t vp_msix_control(struct virtio_pci *vp)
{
    return __atomic_load_n((uint16_t *)(pci_fn_config(vp->fn) + vp->msix_cap + 2),
                           __ATOMIC_RELAXED);
}

/* Locked. */
static void vp_signal_vector(struct virtio_pci *vp, uint16_t v)
{
    uint16_t ctl = vp_msix_control(vp);
    if (!(ctl & VP_MSIX_ENABLE)) {
        vp->p.host->set_irq(vp->p.host->opaque, pci_fn_gsi(vp->fn), 1);
        return;
    }
    if (v >= vp_vectors(vp))
        return;
    struct vp_vector *e = &vp->vec[v];
    if ((ctl & VP_MSIX_MASKALL) || (e->entry[3] & 1)) {
        vp->pba |= 1ull << v;
        return;
    }
    if (e->gsi < 0 || e->stale) {
        uint64_t addr = e->entry[0] | (uint64_t)e->entry[1] << 32;
        if (vp->p.host->msi_route(vp->p.host->opaque, &e->gsi, addr, e->entry[2], e->fd)) {
            err_warn("%s: MSI-X vector %u: %s", vp->p.name, v, err_msg());
            return;
        }
        e->stale = false;
    }
    uint64_t one = 1;
    if (write(e->fd, &one, sizeof(one)) != sizeof(one))
        err_warn("%s: MSI-X vector %u: eventfd write failed", vp->p.name, v);
}

void virtio_pci_interrupt(struct virtio_pci *vp, unsigned q)
{
    struct vp_queue *vq = &vp->queues[q];
    if (!virtq_should_notify(&vq->q, &vp->mem))
        return;
    vp->isr |= 1;
    vp_signal_vector(vp, (vp_msix_control(vp) & VP_MSIX_ENABLE) ? vq->vector : 0);
}

static void vp_config_interrupt(struct virtio_pci *vp)
{
    vp->isr |= 2;
    vp_signal_vector(vp, (vp_msix_control(vp) & VP_MSIX_ENABLE) ? vp->config_vector : 0);
}

/* Locked: a pending vector whose mask is gone fires now. */
static void vp_msix_unmasked(struct virtio_pci *vp)
{
    uint16_t ctl = vp_msix_control(vp);
    if (!(ctl & VP_MSIX_ENABLE) || (ctl & VP_MSIX_MASKALL))
        return;
    for (unsigned v = 0; v < vp_vectors(vp); v++)
        if ((vp->pba & (1ull << v)) && !(vp->vec[v].entry[3] & 1)) {
            vp->pba &= ~(1ull << v);
            vp_signal_vector(vp, (uint16_t)v);
        }
}

void virtio_pci_config_changed(struct virtio_pci *vp)
{
    pthread_mutex_lock(&vp->lock);
    if (vp->status & VIRTIO_STATUS_DRIVER_OK) {
        vp->generation++;
        vp_config_interrupt(vp);
    }
    pthread_mutex_unlock(&vp->lock);
}

void virtio_pci_fail(struct virtio_pci *vp, const char *why)
{
    if (vp->status & VIRTIO_STATUS_NEEDS_RESET)
        return;
    err_warn("%s: the driver broke the virtqueue rules, device needs reset: %s", vp->p.name, why);
    vp->status |= VIRTIO_STATUS_NEEDS_RESET;
    vp->generation++;
    vp_config_interrupt(vp);
}

/* ---- queues --------------------------------------------------------------------------------- */

void virtio_pci_lock(struct virtio_pci *vp)
{
    pthread_mutex_lock(&vp->lock);
}

void virtio_pci_unlock(struct virtio_pci *vp)
{
    pthread_mutex_unlock(&vp->lock);
}

struct virtq *virtio_pci_queue(struct virtio_pci *vp, unsigned q)
{
    if (q >= vp->p.queues || !(vp->status & VIRTIO_STATUS_DRIVER_OK) ||
        (vp->status & VIRTIO_STATUS_NEEDS_RESET) || !vp->queues[q].q.enabled)
        return NULL;
    return &vp->queues[q].q;
}

uint64_t virtio_pci_features(struct virtio_pci *vp)
{
    return vp->features_driver;
}

int virtio_pci_queue_fd(struct virtio_pci *vp, unsigned q)
{
    return vp->queues[q].fd;
}

const struct virtq_mem *virtio_pci_mem(struct virtio_pci *vp)
{
    return &vp->mem;
}

/* Points each queue's ioeventfd at its notify address in the BAR (or nowhere). */
static void vp_ioeventfds(struct virtio_pci *vp, uint64_t bar, bool on)
{
    for (unsigned q = 0; q < vp->p.queues; q++) {
        struct vp_queue *vq = &vp->queues[q];
        uint64_t gpa = bar + VIRTIO_PCI_NOTIFY + VIRTIO_PCI_NOTIFY_MULT * q;
        if (vq->fd_assigned && (!on || vq->fd_gpa != gpa)) {
            vp->p.host->ioeventfd(vp->p.host->opaque, vq->fd_gpa, 2, vq->fd, false);
            vq->fd_assigned = false;
        }
        if (on && !vq->fd_assigned) {
            if (vp->p.host->ioeventfd(vp->p.host->opaque, gpa, 2, vq->fd, true))
                err_warn("%s: queue %u notifications will exit to tern: %s", vp->p.name, q,
                         err_msg());
            else
                vq->fd_assigned = true, vq->fd_gpa = gpa;
        }
    }
}

static void vp_bar_moved(void *opaque, unsigned bar, uint64_t addr, bool enabled)
{
    if (bar == VIRTIO_PCI_BAR)
        vp_ioeventfds(opaque, addr, enabled);
}

static void vp_config_written(void *opaque, unsigned off, unsigned size)
{
    struct virtio_pci *vp = opaque;
    if (off <= vp->msix_cap + 3 && off + size > vp->msix_cap + 2) {
        pthread_mutex_lock(&vp->lock);
        vp_msix_unmasked(vp);
        pthread_mutex_unlock(&vp->lock);
    }
}

/* Locked: back to the power-on state (the device's own work has stopped). */
static void vp_reset_locked(struct virtio_pci *vp)
{
    vp->status = 0;
    vp->features_driver = 0;
    vp->dev_sel = vp->drv_sel = 0;
    vp->isr = 0;
    vp->config_vector = VIRTIO_NO_VECTOR;
    vp->queue_sel = 0;
    for (unsigned q = 0; q < vp->p.queues; q++) {
        struct vp_queue *vq = &vp->queues[q];
        vq->q = (struct virtq){.size = vp->p.queue_max};
        vq->vector = VIRTIO_NO_VECTOR;
    }
    vp->p.host->set_irq(vp->p.host->opaque, pci_fn_gsi(vp->fn), 0);
}

/* ---- the common configuration -----------------------------------------------------------------
 */

static uint64_t vp_common_read(struct virtio_pci *vp, unsigned off)
{
    struct vp_queue *vq = vp->queue_sel < vp->p.queues ? &vp->queues[vp->queue_sel] : NULL;
    if (off >= 32 && off < 56) { /* the ring addresses, whole or by halves */
        if (!vq)
            return 0;
        uint64_t a = off < 40 ? vq->q.desc : off < 48 ? vq->q.avail : vq->q.used;
        return a >> (8 * (off % 8));
    }
    switch (off) {
    case 0:
        return vp->dev_sel;
    case 4:
        return vp->dev_sel < 2 ? (uint32_t)(vp->features_offered >> (32 * vp->dev_sel)) : 0;
    case 8:
        return vp->drv_sel;
    case 12:
        return vp->drv_sel < 2 ? (uint32_t)(vp->features_driver >> (32 * vp->drv_sel)) : 0;
    case 16:
        return vp->config_vector;
    case 18:
        return vp->p.queues;
    case 20:
        return vp->status;
    case 21:
        return vp->generation;
    case 22:
        return vp->queue_sel;
    case 24:
        return vq ? vq->q.size : 0;
    case 26:
        return vq ? vq->vector : VIRTIO_NO_VECTOR;
    case 28:
        return vq ? vq->q.enabled : 0;
    case 30:
        return vq ? vp->queue_sel : 0;
    default:
        return 0;
    }
}

static void vp_features_ok(struct virtio_pci *vp)
{
    /* A driver that takes what was not offered, or not VERSION_1, does not get FEATURES_OK. */
    if ((vp->features_driver & ~vp->features_offered) ||
        !(vp->features_driver & (1ull << VIRTIO_F_VERSION_1)))
        vp->status &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
}

static void vp_queue_enable(struct virtio_pci *vp, struct vp_queue *vq)
{
    vq->q.event_idx = vp->features_driver & (1ull << VIRTIO_F_EVENT_IDX);
    vq->q.indirect = vp->features_driver & (1ull << VIRTIO_F_INDIRECT_DESC);
    char why[160];
    if (virtq_check(&vq->q, &vp->mem, why, sizeof(why))) {
        char msg[200];
        snprintf(msg, sizeof(msg), "queue %u: %s", vp->queue_sel, why);
        virtio_pci_fail(vp, msg);
        return;
    }
    vq->q.enabled = true;
    vq->q.last_avail = vq->q.used_idx = 0;
    vq->q.signalled_valid = false;
}

/* Locked. Returns true when the device was reset by this write. */
static bool vp_common_write(struct virtio_pci *vp, unsigned off, unsigned size, uint64_t v)
{
    struct vp_queue *vq = vp->queue_sel < vp->p.queues ? &vp->queues[vp->queue_sel] : NULL;
    bool q_live = vq && vq->q.enabled; /* a live queue's layout is fixed until reset */
    bool before_ok = !(vp->status & VIRTIO_STATUS_FEATURES_OK);
    switch (off) {
    case 0:
        vp->dev_sel = (uint32_t)v;
        break;
    case 8:
        vp->drv_sel = (uint32_t)v;
        break;
    case 12:
        if (vp->drv_sel < 2 && before_ok) {
            unsigned sh = 32 * vp->drv_sel;
            vp->features_driver =
                (vp->features_driver & ~(0xffffffffull << sh)) | ((v & 0xffffffffull) << sh);
        }
        break;
    case 16:
        vp->config_vector = v < vp_vectors(vp) ? (uint16_t)v : VIRTIO_NO_VECTOR;
        break;
    case 20:
        if ((uint8_t)v == 0)
            return true;
        vp->status = (uint8_t)v | (vp->status & VIRTIO_STATUS_NEEDS_RESET);
        if ((vp->status & VIRTIO_STATUS_FEATURES_OK) && before_ok)
            vp_features_ok(vp);
        break;
    case 22:
        vp->queue_sel = (uint16_t)v;
        break;
    case 24:
        if (vq && !q_live)
            vq->q.size = (uint16_t)v; /* checked when enabled */
        break;
    case 26:
        if (vq)
            vq->vector = v < vp_vectors(vp) ? (uint16_t)v : VIRTIO_NO_VECTOR;
        break;
    case 28:
        if (vq && !q_live && (v & 1))
            vp_queue_enable(vp, vq);
        break;
    case 32:
    case 36:
    case 40:
    case 44:
    case 48:
    case 52:
        if (vq && !q_live) {
            uint64_t *a = off < 40 ? &vq->q.desc : off < 48 ? &vq->q.avail : &vq->q.used;
            unsigned sh = (off % 8) * 8;
            uint64_t mask = size == 8 ? ~0ull : (0xffffffffull << sh);
            *a = (*a & ~mask) | ((v << sh) & mask);
        }
        break;
    default:
        break;
    }
    return false;
}

/* ---- the BAR -------------------------------------------------------------------------------- */

static void vp_msix_write(struct virtio_pci *vp, uint64_t off, unsigned size, uint64_t v)
{
    unsigned idx = (unsigned)(off / 16), word = (unsigned)(off % 16) / 4;
    if (idx >= vp_vectors(vp) || (size != 4 && size != 8) || off % size)
        return;
    struct vp_vector *e = &vp->vec[idx];
    for (unsigned i = 0; i < size / 4; i++, word++) {
        uint32_t w = (uint32_t)(v >> (32 * i));
        if (e->entry[word] != w && word < 3)
            e->stale = true;
        e->entry[word] = word == 3 ? (w & 1) : w;
    }
    vp_msix_unmasked(vp);
}

static uint64_t vp_msix_read(struct virtio_pci *vp, uint64_t off, unsigned size)
{
    if (off >= VIRTIO_PCI_MSIX_PBA - VIRTIO_PCI_MSIX_TABLE)
        return off - (VIRTIO_PCI_MSIX_PBA - VIRTIO_PCI_MSIX_TABLE) == 0 ? vp->pba : 0;
    unsigned idx = (unsigned)(off / 16), word = (unsigned)(off % 16) / 4;
    if (idx >= vp_vectors(vp))
        return 0;
    uint64_t v = vp->vec[idx].entry[word];
    if (size == 8 && word < 3)
        v |= (uint64_t)vp->vec[idx].entry[word + 1] << 32;
    return v;
}

static enum dev_action vp_bar_access(void *opaque, unsigned bar, uint64_t off, unsigned size,
                                     bool is_write, uint64_t *value)
{
    struct virtio_pci *vp = opaque;
    (void)bar;
    uint64_t v = 0;
    if (off >= VIRTIO_PCI_DEVCFG && off < VIRTIO_PCI_DEVCFG + vp->p.config_size) {
        unsigned o = (unsigned)(off - VIRTIO_PCI_DEVCFG);
        if (!is_write) { /* the device configuration is read-only here */
            uint8_t b[8] = {0};
            unsigned n = o + size <= vp->p.config_size ? size : vp->p.config_size - o;
            vp->p.ops->config_read(vp->p.dev, o, b, n);
            memcpy(&v, b, 8);
            *value = v;
        }
        return DEV_CONTINUE;
    }
    if (off >= VIRTIO_PCI_NOTIFY &&
        off < VIRTIO_PCI_NOTIFY + VIRTIO_PCI_NOTIFY_MULT * vp->p.queues) {
        /* A notification KVM did not take (another width): pass it on by hand. */
        if (is_write) {
            uint64_t one = 1;
            unsigned q = (unsigned)(off - VIRTIO_PCI_NOTIFY) / VIRTIO_PCI_NOTIFY_MULT;
            if (write(vp->queues[q].fd, &one, sizeof(one)) != sizeof(one))
                err_warn("%s: queue %u notification lost", vp->p.name, q);
        } else {
            *value = 0;
        }
        return DEV_CONTINUE;
    }
    bool reset = false;
    pthread_mutex_lock(&vp->lock);
    if (off < VIRTIO_PCI_COMMON_SIZE) {
        if (is_write)
            reset = vp_common_write(vp, (unsigned)off, size, *value);
        else
            v = vp_common_read(vp, (unsigned)off);
    } else if (off == VIRTIO_PCI_ISR && !is_write) {
        v = vp->isr; /* reading clears it and lowers INTx */
        vp->isr = 0;
        vp->p.host->set_irq(vp->p.host->opaque, pci_fn_gsi(vp->fn), 0);
    } else if (off >= VIRTIO_PCI_MSIX_TABLE && off < VIRTIO_PCI_MSIX_PBA + 8) {
        if (is_write)
            vp_msix_write(vp, off - VIRTIO_PCI_MSIX_TABLE, size, *value);
        else
            v = vp_msix_read(vp, off - VIRTIO_PCI_MSIX_TABLE, size);
    }
    pthread_mutex_unlock(&vp->lock);
    if (reset) {
        /* The device stops its work first (outside the lock: its I/O thread takes it). */
        vp->p.ops->stop_io(vp->p.dev, true);
        pthread_mutex_lock(&vp->lock);
        vp_reset_locked(vp);
        pthread_mutex_unlock(&vp->lock);
        vp->p.ops->stop_io(vp->p.dev, false);
    } else if (is_write && off == 20 && (*value & VIRTIO_STATUS_DRIVER_OK)) {
        vp->p.ops->driver_ok(vp->p.dev);
    }
    if (!is_write)
        *value = size == 8 ? v : v & ((1ull << (8 * size)) - 1);
    return DEV_CONTINUE;
}

/* ---- creation ------------------------------------------------------------------------------- */

static void *vp_dma_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
    const struct dev_host *h = opaque;
    return h->dma_ptr(h->opaque, gpa, len);
}

static void vp_dma_dirty(void *opaque, uint64_t gpa, uint64_t len)
{
    const struct dev_host *h = opaque;
    h->dma_dirty(h->opaque, gpa, len);
}

static const struct pci_fn_ops vp_fn_ops = {
    .bar_access = vp_bar_access, .bar_moved = vp_bar_moved, .config_written = vp_config_written};

/* The vendor capability pointing at one structure in the BAR (virtio 1.2, 4.1.4). */
static int vp_add_cap(struct virtio_pci *vp, uint8_t type, uint32_t off, uint32_t len, bool notify)
{
    uint8_t body[18] = {0};
    body[0] = notify ? 20 : 16; /* cap_len */
    body[1] = type;
    body[2] = VIRTIO_PCI_BAR;
    le_put32(body + 6, off);
    le_put32(body + 10, len);
    if (notify)
        le_put32(body + 14, VIRTIO_PCI_NOTIFY_MULT);
    return pci_fn_cap(vp->fn, PCI_CAP_ID_VENDOR, body, NULL, body[0]) ? 0 : -ENOSPC;
}

static int vp_add_caps(struct virtio_pci *vp)
{
    int rc = vp_add_cap(vp, VP_CAP_COMMON, VIRTIO_PCI_COMMON, VIRTIO_PCI_COMMON_SIZE, false);
    rc = rc ? rc : vp_add_cap(vp, VP_CAP_ISR, VIRTIO_PCI_ISR, 1, false);
    rc = rc ? rc : vp_add_cap(vp, VP_CAP_DEVICE, VIRTIO_PCI_DEVCFG, vp->p.config_size, false);
    rc = rc ? rc
            : vp_add_cap(vp, VP_CAP_NOTIFY, VIRTIO_PCI_NOTIFY,
                         VIRTIO_PCI_NOTIFY_MULT * vp->p.queues, true);
    if (rc)
        return rc;
    uint8_t msix[10] = {0}, wmask[10] = {0};
    le_put16(msix, (uint16_t)(vp_vectors(vp) - 1));
    le_put32(msix + 2, VIRTIO_PCI_MSIX_TABLE | VIRTIO_PCI_BAR);
    le_put32(msix + 6, VIRTIO_PCI_MSIX_PBA | VIRTIO_PCI_BAR);
    le_put16(wmask, VP_MSIX_ENABLE | VP_MSIX_MASKALL);
    vp->msix_cap = pci_fn_cap(vp->fn, PCI_CAP_ID_MSIX, msix, wmask, 12);
    return vp->msix_cap ? 0 : -ENOSPC;
}

int virtio_pci_create(const struct virtio_pci_params *p, struct virtio_pci **out)
{
    if (p->queues == 0 || p->queues > VIRTIO_PCI_MAX_QUEUES ||
        p->config_size > VIRTIO_PCI_DEVCFG_MAX)
        return err_set(-EINVAL, "%s: %u queues, %u config bytes", p->name, p->queues,
                       p->config_size);
    struct virtio_pci *vp = calloc(1, sizeof(*vp));
    if (!vp)
        return err_set(-ENOMEM, "out of memory");
    vp->p = *p;
    vp->features_offered = p->features | 1ull << VIRTIO_F_VERSION_1 |
                           1ull << VIRTIO_F_INDIRECT_DESC | 1ull << VIRTIO_F_EVENT_IDX;
    vp->mem =
        (struct virtq_mem){.opaque = (void *)p->host, .ptr = vp_dma_ptr, .dirty = vp_dma_dirty};
    pthread_mutex_init(&vp->lock, NULL);
    for (unsigned v = 0; v < VP_MSIX_MAX; v++)
        vp->vec[v] = (struct vp_vector){.entry = {0, 0, 0, 1}, .fd = -1, .gsi = -1};
    for (unsigned q = 0; q < VIRTIO_PCI_MAX_QUEUES; q++)
        vp->queues[q].fd = -1;
    int rc = 0;
    for (unsigned v = 0; v < vp_vectors(vp) && !rc; v++)
        if ((vp->vec[v].fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
            rc = err_sys(-errno, "%s: eventfd", p->name);
    for (unsigned q = 0; q < p->queues && !rc; q++)
        if ((vp->queues[q].fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
            rc = err_sys(-errno, "%s: eventfd", p->name);
    struct pci_fn_info info = {.vendor = 0x1af4,
                               .device = (uint16_t)(0x1040 + p->device_type),
                               .revision = 1,
                               .class_code = p->class_code,
                               .subsys_vendor = 0x1af4,
                               .subsys = 0x1100};
    info.bar_size[VIRTIO_PCI_BAR] = VIRTIO_PCI_BAR_SIZE;
    info.bar_kind[VIRTIO_PCI_BAR] = PCI_BAR_MEM64;
    if (!rc)
        rc = pci_fn_add(p->pci, &info, &vp_fn_ops, vp, &vp->fn);
    if (!rc && vp_add_caps(vp))
        rc = err_set(-ENOSPC, "%s: no room for its PCI capabilities", p->name);
    if (rc) {
        virtio_pci_destroy(vp);
        return rc;
    }
    vp_reset_locked(vp);
    bool on;
    uint64_t bar = pci_fn_bar_addr(vp->fn, VIRTIO_PCI_BAR, &on);
    vp_ioeventfds(vp, bar, on);
    *out = vp;
    return 0;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
    if (!vp)
        return;
    for (unsigned q = 0; q < VIRTIO_PCI_MAX_QUEUES; q++) {
        if (vp->queues[q].fd_assigned)
            vp->p.host->ioeventfd(vp->p.host->opaque, vp->queues[q].fd_gpa, 2, vp->queues[q].fd,
                                  false);
        if (vp->queues[q].fd >= 0)
            close(vp->queues[q].fd);
    }
    for (unsigned v = 0; v < VP_MSIX_MAX; v++) {
        if (vp->vec[v].gsi >= 0)
            vp->p.host->msi_release(vp->p.host->opaque, vp->vec[v].gsi, vp->vec[v].fd);
        if (vp->vec[v].fd >= 0)
            close(vp->vec[v].fd);
    }
    pthread_mutex_destroy(&vp->lock);
    free(vp);
}

/* ---- migration ------------------------------------------------------------------------------ */

#define VP_HDR 64u
#define VP_VEC_OFF (PCI_CFG_SIZE + VP_HDR)
#define VP_PBA_OFF (VP_VEC_OFF + 16u * VP_MSIX_MAX)
#define VP_Q_OFF (VP_PBA_OFF + 8u)
#define VP_Q_SIZE 48u
_Static_assert(VP_Q_OFF + VP_Q_SIZE * VIRTIO_PCI_MAX_QUEUES == VIRTIO_PCI_STATE_SIZE,
               "the state layout and its size agree");

int virtio_pci_save(struct virtio_pci *vp, uint8_t *buf, size_t *len)
{
    memset(buf, 0, VIRTIO_PCI_STATE_SIZE);
    pci_fn_save(vp->fn, buf);
    pthread_mutex_lock(&vp->lock);
    uint8_t *h = buf + PCI_CFG_SIZE;
    le_put32(h, VP_STATE_VERSION);
    h[4] = vp->status, h[5] = vp->generation, h[6] = vp->isr;
    le_put64(h + 8, vp->features_driver);
    le_put32(h + 16, vp->dev_sel);
    le_put32(h + 20, vp->drv_sel);
    le_put16(h + 24, vp->config_vector);
    le_put16(h + 26, vp->queue_sel);
    le_put32(h + 28, vp->p.queues);
    for (unsigned v = 0; v < VP_MSIX_MAX; v++)
        for (unsigned w = 0; w < 4; w++)
            le_put32(buf + VP_VEC_OFF + 16 * v + 4 * w, vp->vec[v].entry[w]);
    le_put64(buf + VP_PBA_OFF, vp->pba);
    for (unsigned q = 0; q < vp->p.queues; q++) {
        const struct vp_queue *vq = &vp->queues[q];
        uint8_t *e = buf + VP_Q_OFF + VP_Q_SIZE * q;
        le_put16(e, vq->q.size);
        le_put16(e + 2, vq->vector);
        e[4] = vq->q.enabled, e[5] = vq->q.signalled_valid;
        le_put16(e + 6, vq->q.last_avail);
        le_put16(e + 8, vq->q.used_idx);
        le_put16(e + 10, vq->q.signalled_used);
        le_put64(e + 16, vq->q.desc);
        le_put64(e + 24, vq->q.avail);
        le_put64(e + 32, vq->q.used);
    }
    pthread_mutex_unlock(&vp->lock);
    *len = VIRTIO_PCI_STATE_SIZE;
    return 0;
}

/* Every field of a saved queue is checked before anything is taken. */
static int vp_load_queue(struct virtio_pci *vp, const uint8_t *e, unsigned q, uint64_t features,
                         struct vp_queue *out)
{
    *out = vp->queues[q];
    out->q = (struct virtq){.size = le_get16(e),
                            .enabled = e[4],
                            .signalled_valid = e[5],
                            .last_avail = le_get16(e + 6),
                            .used_idx = le_get16(e + 8),
                            .signalled_used = le_get16(e + 10),
                            .desc = le_get64(e + 16),
                            .avail = le_get64(e + 24),
                            .used = le_get64(e + 32),
                            .event_idx = features & (1ull << VIRTIO_F_EVENT_IDX),
                            .indirect = features & (1ull << VIRTIO_F_INDIRECT_DESC)};
    out->vector = le_get16(e + 2);
    if (out->vector != VIRTIO_NO_VECTOR && out->vector >= vp_vectors(vp))
        return err_set(-EPROTO, "%s: queue %u has MSI-X vector %u of %u", vp->p.name, q,
                       out->vector, vp_vectors(vp));
    if (e[4] > 1 || e[5] > 1)
        return err_set(-EPROTO, "%s: queue %u has flags %u/%u (0 or 1)", vp->p.name, q, e[4], e[5]);
    if (out->q.size > vp->p.queue_max)
        return err_set(-EPROTO, "%s: queue %u has size %u, more than %u", vp->p.name, q,
                       out->q.size, vp->p.queue_max);
    char why[160];
    if (out->q.enabled && virtq_check(&out->q, &vp->mem, why, sizeof(why)))
        return err_set(-EPROTO, "%s: queue %u: %s", vp->p.name, q, why);
    return 0;
}

int virtio_pci_load(struct virtio_pci *vp, const uint8_t *buf, size_t len)
{
    if (len != VIRTIO_PCI_STATE_SIZE)
        return err_set(-EPROTO, "%s: state of %zu bytes, not %u", vp->p.name, len,
                       VIRTIO_PCI_STATE_SIZE);
    const uint8_t *h = buf + PCI_CFG_SIZE;
    uint64_t features = le_get64(h + 8);
    uint16_t config_vector = le_get16(h + 24);
    if (le_get32(h) != VP_STATE_VERSION)
        return err_set(-EPROTO, "%s: state version %u, not %u", vp->p.name, le_get32(h),
                       VP_STATE_VERSION);
    if (le_get32(h + 28) != vp->p.queues)
        return err_set(-EPROTO, "%s: state of %u queues; the device has %u", vp->p.name,
                       le_get32(h + 28), vp->p.queues);
    if (features & ~vp->features_offered)
        return err_set(-EPROTO, "%s: negotiated features 0x%llx beyond the offered 0x%llx",
                       vp->p.name, (unsigned long long)features,
                       (unsigned long long)vp->features_offered);
    if (config_vector != VIRTIO_NO_VECTOR && config_vector >= vp_vectors(vp))
        return err_set(-EPROTO, "%s: configuration MSI-X vector %u of %u", vp->p.name,
                       config_vector, vp_vectors(vp));
    if (h[6] > 3)
        return err_set(-EPROTO, "%s: ISR 0x%x (bits 0 and 1 only)", vp->p.name, h[6]);
    struct vp_queue queues[VIRTIO_PCI_MAX_QUEUES];
    for (unsigned q = 0; q < vp->p.queues; q++) {
        int rc = vp_load_queue(vp, buf + VP_Q_OFF + VP_Q_SIZE * q, q, features, &queues[q]);
        if (rc)
            return rc;
    }
    pci_fn_load(vp->fn, buf);
    pthread_mutex_lock(&vp->lock);
    vp->status = h[4], vp->generation = h[5], vp->isr = h[6];
    vp->features_driver = features;
    vp->dev_sel = le_get32(h + 16);
    vp->drv_sel = le_get32(h + 20);
    vp->config_vector = config_vector;
    vp->queue_sel = le_get16(h + 26);
    for (unsigned v = 0; v < VP_MSIX_MAX; v++) {
        for (unsigned w = 0; w < 4; w++)
            vp->vec[v].entry[w] = le_get32(buf + VP_VEC_OFF + 16 * v + 4 * w);
        vp->vec[v].entry[3] &= 1;
        vp->vec[v].stale = true; /* routes are made on first use */
    }
    vp->pba = le_get64(buf + VP_PBA_OFF) & ((1ull << vp_vectors(vp)) - 1);
    for (unsigned q = 0; q < vp->p.queues; q++) { /* the eventfds stay the device's own */
        vp->queues[q].q = queues[q].q;
        vp->queues[q].vector = queues[q].vector;
    }
    if (vp->isr && !(vp_msix_control(vp) & VP_MSIX_ENABLE)) /* INTx is a level: raise it again */
        vp->p.host->set_irq(vp->p.host->opaque, pci_fn_gsi(vp->fn), 1);
    pthread_mutex_unlock(&vp->lock);
    return 0;
}
