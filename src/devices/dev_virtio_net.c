/* virtio-net on a TAP (dev_virtio_net.h). */
#include "devices/dev_virtio_net.h"

#include "devices/dev_net.h"
#include "err/err.h"
#include "le/le.h"
#include "virtio/virtio_worker.h"

#include <errno.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Feature bits (virtio 1.2, 5.1.3). */
#define VNET_F_CSUM 0
#define VNET_F_GUEST_CSUM 1
#define VNET_F_MAC 5
#define VNET_F_GUEST_TSO4 7
#define VNET_F_GUEST_TSO6 8
#define VNET_F_HOST_TSO4 11
#define VNET_F_HOST_TSO6 12
#define VNET_F_HOST_UFO 14
#define VNET_F_MRG_RXBUF 15
#define VNET_F_STATUS 16
#define VNET_F_CTRL_VQ 17
#define VNET_F_CTRL_RX 18
#define VNET_F_GUEST_ANNOUNCE 21
#define VNET_F_CTRL_MAC_ADDR 23

#define VNET_S_LINK_UP 1u
#define VNET_S_ANNOUNCE 2u
#define VNET_HDR 12u /* struct virtio_net_hdr_mrg_rxbuf */
#define VNET_CONFIG_SIZE 12u
#define VNET_RX 0u
#define VNET_TX 1u
#define VNET_CTRL 2u
#define VNET_FRAME_MAX (65536u + VNET_HDR)

/* Control queue (5.1.6.5). */
#define VNET_CTRL_RX 0
#define VNET_CTRL_MAC 1
#define VNET_CTRL_ANNOUNCE 3
#define VNET_CTRL_MAC_ADDR_SET 1
#define VNET_OK 0
#define VNET_ERR 1

struct vnet {
    const struct dev_host *host;
    struct dev_net net;
    char name[64];
    int tap;
    struct virtio_pci *vp;
    pthread_mutex_t cfg_lock; /* config: the I/O thread and vCPU threads */
    uint8_t mac[6];
    uint16_t status;
    uint8_t rx_mode; /* bit 0 promiscuous, bit 1 all-multicast (informational: the TAP sees all) */
    unsigned offloads;
    struct virtio_worker worker;
    bool vm_held;
    bool restored;          /* its state came from a stream: it announces itself when it runs */
    unsigned announce_left; /* RARP frames still to send (the I/O thread's) */
    uint64_t announce_next_ms;
    bool rx_starved; /* a frame waits for receive buffers: the TAP is not read until a kick */
    bool tx_blocked; /* the TAP is full: transmit waits for POLLOUT */
    size_t rx_len;   /* a frame read from the TAP and not yet delivered */
    struct virtq_chain chain;
    struct virtq_chain rx_chains[64]; /* one frame's merged buffers (64 KiB in 1 KiB ones) */
    uint8_t frame[VNET_FRAME_MAX];
};

/* ---- the TAP's offloads -------------------------------------------------------------------- */

static unsigned vnet_tun_offloads(uint64_t f)
{
    unsigned o = 0;
    if (f & (1ull << VNET_F_GUEST_CSUM)) {
        o |= TUN_F_CSUM;
        if (f & (1ull << VNET_F_GUEST_TSO4))
            o |= TUN_F_TSO4;
        if (f & (1ull << VNET_F_GUEST_TSO6))
            o |= TUN_F_TSO6;
    }
    return o;
}

/* The TAP may hand the guest only what the driver negotiated. */
static void vnet_set_offloads(struct vnet *vn)
{
    unsigned o = vnet_tun_offloads(virtio_pci_features(vn->vp));
    if (o != vn->offloads && ioctl(vn->tap, TUNSETOFFLOAD, o))
        err_warn("%s: TUNSETOFFLOAD 0x%x: %s", vn->name, o, strerror(errno));
    vn->offloads = o;
}

/* ---- transmit ------------------------------------------------------------------------------ */

/* Sends every queued frame to the TAP (locked); true when one was completed. */
static bool vnet_tx(struct vnet *vn)
{
    const struct virtq_mem *m = virtio_pci_mem(vn->vp);
    struct virtq *q = virtio_pci_queue(vn->vp, VNET_TX);
    bool done = false;
    while (q && !vn->tx_blocked) {
        char why[200];
        int rc = virtq_pop(q, m, &vn->chain, why, sizeof(why));
        if (rc < 0) {
            virtio_pci_fail(vn->vp, why);
            break;
        }
        if (rc == 0)
            break;
        struct iovec iov[VIRTQ_CHAIN_MAX];
        unsigned n = 0;
        for (unsigned i = 0; i < vn->chain.count; i++)
            if (!vn->chain.bufs[i].write && vn->chain.bufs[i].len)
                iov[n++] =
                    (struct iovec){m->ptr(m->opaque, vn->chain.bufs[i].gpa, vn->chain.bufs[i].len),
                                   vn->chain.bufs[i].len};
        if (vn->chain.out_bytes < VNET_HDR || vn->chain.out_bytes > VNET_FRAME_MAX) {
            snprintf(why, sizeof(why), "transmit chain at head %u holds %llu bytes (%u..%u)",
                     vn->chain.head, (unsigned long long)vn->chain.out_bytes, VNET_HDR,
                     VNET_FRAME_MAX);
            virtio_pci_fail(vn->vp, why);
            break;
        }
        ssize_t w = writev(vn->tap, iov, (int)n);
        if (w < 0 && errno == EAGAIN) {
            q->last_avail--; /* not taken: it goes when the TAP has room */
            vn->tx_blocked = true;
            break;
        }
        /* A frame the TAP refuses (a malformed header, the link down) is dropped, as a NIC
         * drops it; the guest gets its buffer back either way. */
        virtq_push(q, m, vn->chain.head, 0);
        done = true;
    }
    if (done)
        virtio_pci_interrupt(vn->vp, VNET_TX);
    return done;
}

/* ---- receive ------------------------------------------------------------------------------- */

/* Puts the frame in receive buffers (locked): 1 delivered, 0 no buffers yet, -1 dropped. */
static int vnet_rx_deliver(struct vnet *vn, struct virtq *q)
{
    const struct virtq_mem *m = virtio_pci_mem(vn->vp);
    bool merge = virtio_pci_features(vn->vp) & (1ull << VNET_F_MRG_RXBUF);
    unsigned max = merge ? sizeof(vn->rx_chains) / sizeof(vn->rx_chains[0]) : 1;
    unsigned used = 0;
    uint64_t room = 0;
    while (room < vn->rx_len && used < max) {
        char why[200];
        int rc = virtq_pop(q, m, &vn->rx_chains[used], why, sizeof(why));
        if (rc < 0) {
            q->last_avail -= (uint16_t)used;
            virtio_pci_fail(vn->vp, why);
            return -1;
        }
        if (rc == 0) { /* not enough buffers: give back what was taken, wait for more */
            q->last_avail -= (uint16_t)used;
            return 0;
        }
        room += vn->rx_chains[used++].in_bytes;
    }
    if (room < vn->rx_len) { /* larger than what the driver can ever take: dropped */
        for (unsigned i = 0; i < used; i++)
            virtq_push(q, m, vn->rx_chains[i].head, 0);
        return -1;
    }
    le_put16(vn->frame + 10, (uint16_t)used); /* num_buffers */
    size_t off = 0;
    for (unsigned i = 0; i < used; i++) {
        size_t n = vn->rx_len - off;
        if (n > vn->rx_chains[i].in_bytes)
            n = vn->rx_chains[i].in_bytes;
        virtq_chain_copy(&vn->rx_chains[i], m, true, 0, vn->frame + off, n); /* marks dirty */
        virtq_push(q, m, vn->rx_chains[i].head, (uint32_t)n);
        off += n;
    }
    return 1;
}

/* Moves frames from the TAP to the guest while it has buffers (locked). */
static void vnet_rx(struct vnet *vn)
{
    struct virtq *q = virtio_pci_queue(vn->vp, VNET_RX);
    bool done = false;
    for (unsigned budget = 0; q && !vn->rx_starved && budget < 256; budget++) {
        if (!vn->rx_len) {
            ssize_t r = read(vn->tap, vn->frame, sizeof(vn->frame));
            if (r <= 0)
                break;
            if ((size_t)r < VNET_HDR)
                continue;
            vn->rx_len = (size_t)r;
        }
        int rc = vnet_rx_deliver(vn, q);
        if (rc == 0) {
            vn->rx_starved = true;
            break;
        }
        vn->rx_len = 0;
        done |= rc > 0;
        if (!virtio_pci_queue(vn->vp, VNET_RX))
            break;
    }
    if (done)
        virtio_pci_interrupt(vn->vp, VNET_RX);
}

/* ---- the control queue --------------------------------------------------------------------- */

static uint8_t vnet_ctrl_cmd(struct vnet *vn, uint8_t cls, uint8_t cmd, const uint8_t *data,
                             size_t len)
{
    pthread_mutex_lock(&vn->cfg_lock);
    uint8_t ack = VNET_ERR;
    if (cls == VNET_CTRL_RX && cmd <= 1 && len == 1) {
        vn->rx_mode = (uint8_t)((vn->rx_mode & ~(1u << cmd)) | (data[0] ? 1u << cmd : 0));
        ack = VNET_OK;
    } else if (cls == VNET_CTRL_RX && cmd <= 5 && len == 1) {
        ack = VNET_OK; /* no unicast, multicast or broadcast filtering: the TAP passes all */
    } else if (cls == VNET_CTRL_MAC && cmd == VNET_CTRL_MAC_ADDR_SET && len == 6) {
        memcpy(vn->mac, data, 6);
        ack = VNET_OK;
    } else if (cls == VNET_CTRL_MAC && cmd == 0) {
        ack = VNET_OK; /* MAC filter tables: accepted, nothing filtered */
    } else if (cls == VNET_CTRL_ANNOUNCE && cmd == 0) {
        vn->status &= (uint16_t)~VNET_S_ANNOUNCE;
        ack = VNET_OK;
    }
    pthread_mutex_unlock(&vn->cfg_lock);
    return ack;
}

static void vnet_ctrl(struct vnet *vn)
{
    const struct virtq_mem *m = virtio_pci_mem(vn->vp);
    struct virtq *q = virtio_pci_queue(vn->vp, VNET_CTRL);
    bool done = false;
    while (q) {
        char why[200];
        int rc = virtq_pop(q, m, &vn->chain, why, sizeof(why));
        if (rc < 0)
            virtio_pci_fail(vn->vp, why);
        if (rc <= 0)
            break;
        uint8_t cmd[2 + 64];
        size_t n = virtq_chain_copy(&vn->chain, m, false, 0, cmd, sizeof(cmd));
        uint8_t ack = n >= 2 && vn->chain.out_bytes <= sizeof(cmd)
                          ? vnet_ctrl_cmd(vn, cmd[0], cmd[1], cmd + 2, n - 2)
                          : VNET_ERR;
        if (vn->chain.in_bytes < 1) {
            snprintf(why, sizeof(why), "control command at head %u has no ack byte",
                     vn->chain.head);
            virtio_pci_fail(vn->vp, why);
            break;
        }
        virtq_chain_copy(&vn->chain, m, true, vn->chain.in_bytes - 1, &ack, 1);
        virtq_push(q, m, vn->chain.head, 1);
        done = true;
    }
    if (done)
        virtio_pci_interrupt(vn->vp, VNET_CTRL);
}

/* ---- announcing the new port ---------------------------------------------------------------- */

#define VNET_ANNOUNCE_FRAMES 5u
#define VNET_ANNOUNCE_MS 100u

static uint64_t vnet_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One RARP frame from the guest's MAC, as switches learn ports from (QEMU's announce-self
 * sends the same): broadcast, ethertype 0x8035, "reverse request" for the MAC itself. */
static void vnet_send_rarp(struct vnet *vn)
{
    uint8_t f[VNET_HDR + 60] = {0};
    uint8_t *e = f + VNET_HDR;
    pthread_mutex_lock(&vn->cfg_lock);
    memset(e, 0xff, 6);
    memcpy(e + 6, vn->mac, 6);
    e[12] = 0x80, e[13] = 0x35;
    e[14] = 0, e[15] = 1;    /* Ethernet */
    e[16] = 0x08, e[17] = 0; /* IPv4 */
    e[18] = 6, e[19] = 4;
    e[20] = 0, e[21] = 3; /* reverse request */
    memcpy(e + 22, vn->mac, 6);
    memcpy(e + 32, vn->mac, 6);
    pthread_mutex_unlock(&vn->cfg_lock);
    if (write(vn->tap, f, sizeof(f)) < 0)
        err_warn("%s: announcing the MAC: %s", vn->name, strerror(errno));
}

/* Due RARP frames go out; the poll timeout until the next one (-1: none left). */
static int vnet_announce(struct vnet *vn)
{
    if (!vn->announce_left)
        return -1;
    uint64_t now = vnet_now_ms();
    if (now >= vn->announce_next_ms) {
        vnet_send_rarp(vn);
        vn->announce_left--;
        vn->announce_next_ms = now + VNET_ANNOUNCE_MS;
    }
    return vn->announce_left
               ? (int)(vn->announce_next_ms - now > VNET_ANNOUNCE_MS ? VNET_ANNOUNCE_MS
                                                                     : vn->announce_next_ms - now)
               : -1;
}

/* ---- the I/O thread ------------------------------------------------------------------------ */

static void *vnet_thread(void *arg)
{
    struct vnet *vn = arg;
    for (;;) {
        /* A hold is acknowledged only with the transmit queue drained to the TAP: nothing the
         * guest queued is lost to a pause or a migration. */
        bool quit;
        bool run = virtio_worker_check(&vn->worker, !vn->tx_blocked, &quit);
        if (quit)
            break;
        short tap_events =
            (short)((run && !vn->rx_starved ? POLLIN : 0) | (vn->tx_blocked ? POLLOUT : 0));
        struct pollfd p[5] = {
            {.fd = vn->worker.ctl_fd, .events = POLLIN},
            {.fd = virtio_pci_queue_fd(vn->vp, VNET_RX), .events = POLLIN},
            {.fd = virtio_pci_queue_fd(vn->vp, VNET_TX), .events = POLLIN},
            {.fd = virtio_pci_queue_fd(vn->vp, VNET_CTRL), .events = POLLIN},
            {.fd = vn->tap, .events = tap_events},
        };
        int timeout = run ? vnet_announce(vn) : -1;
        if (poll(p, 5, timeout) < 0 && errno != EINTR) {
            err_warn("%s: poll: %s", vn->name, strerror(errno));
            break;
        }
        for (int i = 0; i < 4; i++)
            if (p[i].revents & POLLIN)
                virtio_worker_drain(p[i].fd);
        if (p[1].revents & POLLIN)
            vn->rx_starved = false; /* new receive buffers */
        if (p[4].revents & POLLOUT)
            vn->tx_blocked = false;
        if (!run && virtio_worker_stopped(&vn->worker))
            continue; /* held and said so: the rings are the state's now */
        virtio_pci_lock(vn->vp);
        vnet_tx(vn);
        if (run) {
            vnet_ctrl(vn);
            vnet_rx(vn);
        }
        virtio_pci_unlock(vn->vp);
    }
    return NULL;
}

/* ---- the transport's hooks ----------------------------------------------------------------- */

static void vnet_config_read(void *dev, unsigned off, uint8_t *buf, unsigned len)
{
    struct vnet *vn = dev;
    uint8_t c[VNET_CONFIG_SIZE] = {0};
    pthread_mutex_lock(&vn->cfg_lock);
    memcpy(c, vn->mac, 6);
    le_put16(c + 6, vn->status);
    le_put16(c + 8, 1); /* one queue pair */
    pthread_mutex_unlock(&vn->cfg_lock);
    memcpy(buf, c + off, len);
}

static void vnet_stop_io(void *dev, bool stop)
{
    struct vnet *vn = dev;
    if (stop) {
        virtio_worker_hold(&vn->worker);
        vn->rx_len = 0; /* a frame for the old rings goes */
        vn->rx_starved = vn->tx_blocked = false;
    } else {
        virtio_worker_unhold(&vn->worker);
    }
}

static void vnet_driver_ok(void *dev)
{
    struct vnet *vn = dev;
    vnet_set_offloads(vn);
    virtio_worker_kick(&vn->worker);
}

static const struct virtio_pci_ops vnet_vp_ops = {
    .config_read = vnet_config_read, .stop_io = vnet_stop_io, .driver_ok = vnet_driver_ok};

/* ---- dev_ops ------------------------------------------------------------------------------- */

static unsigned vnet_instances(const struct dev_env *env)
{
    return env->net_count;
}

static void vnet_destroy(void *dev);

static int vnet_setup(struct vnet *vn, const struct dev_env *env)
{
    int rc = dev_net_open(&vn->net, &vn->tap);
    if (rc)
        return rc;
    int hdr = VNET_HDR;
    if (ioctl(vn->tap, TUNSETVNETHDRSZ, &hdr))
        return err_sys(-errno, "%s: TUNSETVNETHDRSZ %d", vn->name, hdr);
    if (ioctl(vn->tap, TUNSETOFFLOAD, 0))
        return err_sys(-errno, "%s: TUNSETOFFLOAD", vn->name);
    uint64_t f = 1ull << VNET_F_CSUM | 1ull << VNET_F_GUEST_CSUM | 1ull << VNET_F_MAC |
                 1ull << VNET_F_GUEST_TSO4 | 1ull << VNET_F_GUEST_TSO6 | 1ull << VNET_F_HOST_TSO4 |
                 1ull << VNET_F_HOST_TSO6 | 1ull << VNET_F_HOST_UFO | 1ull << VNET_F_MRG_RXBUF |
                 1ull << VNET_F_STATUS | 1ull << VNET_F_CTRL_VQ | 1ull << VNET_F_CTRL_RX |
                 1ull << VNET_F_GUEST_ANNOUNCE | 1ull << VNET_F_CTRL_MAC_ADDR;
    struct virtio_pci_params p = {.device_type = 1,
                                  .class_code = 0x020000,
                                  .features = f,
                                  .config_size = VNET_CONFIG_SIZE,
                                  .queues = 3,
                                  .queue_max = DEV_VIRTIO_NET_QUEUE_SIZE,
                                  .ops = &vnet_vp_ops,
                                  .dev = vn,
                                  .host = env->host,
                                  .pci = env->pci,
                                  .name = vn->name};
    rc = virtio_pci_create(&p, &vn->vp);
    return rc ? rc : virtio_worker_start(&vn->worker, vnet_thread, vn, vn->name);
}

static int vnet_create(const struct dev_env *env, void **out)
{
    struct vnet *vn = calloc(1, sizeof(*vn));
    if (!vn)
        return err_set(-ENOMEM, "out of memory");
    vn->host = env->host;
    vn->net = env->nets[env->instance];
    vn->tap = -1;
    vn->vm_held = true;
    vn->status = VNET_S_LINK_UP;
    pthread_mutex_init(&vn->cfg_lock, NULL);
    if (vn->net.mac_given) {
        memcpy(vn->mac, vn->net.mac, 6);
    } else { /* locally administered, unique enough per process and device */
        uint32_t r = (uint32_t)getpid() * 2654435761u + env->instance;
        uint8_t m[6] = {0x52, 0x54, 0x00, (uint8_t)(r >> 16), (uint8_t)(r >> 8), (uint8_t)r};
        memcpy(vn->mac, m, 6);
        memcpy(env->nets[env->instance].mac, m, 6);
        env->nets[env->instance].mac_given = true;
    }
    if (vn->net.fd >= 0)
        snprintf(vn->name, sizeof(vn->name), "--net fd=%d", vn->net.fd);
    else
        snprintf(vn->name, sizeof(vn->name), "--net tap=%s", vn->net.ifname);
    int rc = virtio_worker_init(&vn->worker, vn->name);
    if (!rc)
        rc = vnet_setup(vn, env);
    if (rc) {
        vnet_destroy(vn);
        return rc;
    }
    *out = vn;
    return 0;
}

static void vnet_quiesce(void *dev)
{
    struct vnet *vn = dev;
    if (!vn->vm_held) {
        vn->vm_held = true;
        virtio_worker_hold(&vn->worker);
    }
}

/* After a restore the guest is on another port: switches must learn where its MAC is now.
 * A driver that took GUEST_ANNOUNCE is asked to announce itself (it sends its own gratuitous
 * ARPs and acknowledges on the control queue); for any other, tern sends RARP frames from the
 * guest's MAC. */
static void vnet_announce_start(struct vnet *vn)
{
    if (virtio_pci_features(vn->vp) & (1ull << VNET_F_GUEST_ANNOUNCE)) {
        pthread_mutex_lock(&vn->cfg_lock);
        vn->status |= VNET_S_ANNOUNCE;
        pthread_mutex_unlock(&vn->cfg_lock);
        virtio_pci_config_changed(vn->vp);
    } else {
        vn->announce_left = VNET_ANNOUNCE_FRAMES;
        vn->announce_next_ms = 0;
    }
}

static void vnet_resume(void *dev)
{
    struct vnet *vn = dev;
    if (!vn->vm_held)
        return;
    if (vn->restored) { /* the thread is held: announce_* are the loop's to set now */
        vn->restored = false;
        vnet_announce_start(vn);
    }
    vn->vm_held = false;
    virtio_worker_unhold(&vn->worker);
}

/* The state: u8 mac[6], u16 status, u8 rx mode, 7 bytes 0, then the transport's. */
static int vnet_save(void *dev, uint8_t *buf, size_t *len)
{
    struct vnet *vn = dev;
    memset(buf, 0, 16);
    pthread_mutex_lock(&vn->cfg_lock);
    memcpy(buf, vn->mac, 6);
    le_put16(buf + 6, vn->status);
    buf[8] = vn->rx_mode;
    pthread_mutex_unlock(&vn->cfg_lock);
    size_t n = 0;
    int rc = virtio_pci_save(vn->vp, buf + 16, &n);
    *len = 16 + n;
    return rc;
}

static int vnet_load(void *dev, const uint8_t *buf, size_t len)
{
    struct vnet *vn = dev;
    if (len != DEV_VIRTIO_NET_STATE_SIZE)
        return err_set(-EPROTO, "%s: %zu bytes of state, not %u", vn->name, len,
                       DEV_VIRTIO_NET_STATE_SIZE);
    uint16_t status = le_get16(buf + 6);
    if ((status & ~(VNET_S_LINK_UP | VNET_S_ANNOUNCE)) || (buf[0] & 1) || buf[8] > 3)
        return err_set(-EPROTO,
                       "%s: status 0x%x, MAC first byte 0x%x, RX mode %u: not a "
                       "device's",
                       vn->name, status, buf[0], buf[8]);
    int rc = virtio_pci_load(vn->vp, buf + 16, len - 16);
    if (rc)
        return rc;
    pthread_mutex_lock(&vn->cfg_lock);
    memcpy(vn->mac, buf, 6);
    vn->status = status;
    vn->rx_mode = buf[8];
    pthread_mutex_unlock(&vn->cfg_lock);
    vnet_set_offloads(vn);
    vn->restored = true;
    return 0;
}

static void vnet_stop(void *dev)
{
    struct vnet *vn = dev;
    virtio_worker_stop(&vn->worker);
}

static void vnet_destroy(void *dev)
{
    struct vnet *vn = dev;
    virtio_worker_destroy(&vn->worker);
    virtio_pci_destroy(vn->vp);
    if (vn->tap >= 0 && vn->net.fd < 0)
        close(vn->tap); /* an fd= TAP stays the orchestrator's */
    pthread_mutex_destroy(&vn->cfg_lock);
    free(vn);
}

const struct dev_ops dev_virtio_net_ops = {.name = "virtio-net",
                                           .state_max = DEV_VIRTIO_NET_STATE_SIZE,
                                           .instances = vnet_instances,
                                           .create = vnet_create,
                                           .quiesce = vnet_quiesce,
                                           .resume = vnet_resume,
                                           .save = vnet_save,
                                           .load = vnet_load,
                                           .stop = vnet_stop,
                                           .destroy = vnet_destroy};
