/* virtio-blk on a raw image through io_uring (dev_virtio_blk.h). */
#include "devices/dev_virtio_blk.h"

#include "err/err.h"
#include "le/le.h"
#include "virtio/virtio_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define VBLK_SECTOR 512u
#define VBLK_SEG_MAX 254u
#define VBLK_DISCARD_MAX_SECTORS (1u << 22)
#define VBLK_CONFIG_SIZE 60u
#define VBLK_RING (DEV_VIRTIO_BLK_QUEUE_SIZE + 8u)

/* Feature bits (virtio 1.2, 5.2.3). */
#define VBLK_F_SEG_MAX 2
#define VBLK_F_RO 5
#define VBLK_F_BLK_SIZE 6
#define VBLK_F_FLUSH 9
#define VBLK_F_DISCARD 13
#define VBLK_F_WRITE_ZEROES 14

/* Request types and status values. */
#define VBLK_T_IN 0u
#define VBLK_T_OUT 1u
#define VBLK_T_FLUSH 4u
#define VBLK_T_GET_ID 8u
#define VBLK_T_DISCARD 11u
#define VBLK_T_WRITE_ZEROES 13u
#define VBLK_S_OK 0
#define VBLK_S_IOERR 1
#define VBLK_S_UNSUPP 2

#define VBLK_TAG_KICK (1ull << 32)
#define VBLK_TAG_CTL (2ull << 32)
#define VBLK_TAG_NOP (3ull << 32)

struct vblk_req {
    bool busy;
    uint16_t head;
    uint8_t type;
    uint64_t status_gpa;
    int64_t expect;  /* the result that means success */
    uint32_t filled; /* bytes the device writes into the guest's buffers (reads) */
    unsigned nbufs;  /* the writable buffers, marked dirty on completion */
    struct virtq_buf *bufs;
    unsigned niov;
    struct iovec *iov;
};

struct vblk {
    struct dev_env env;
    const struct dev_host *host;
    struct dev_disk disk;
    char name[96];
    int fd;
    uint64_t size;
    bool locked;
    struct virtio_pci *vp;
    uint8_t config[VBLK_CONFIG_SIZE];

    struct io_uring ring;
    bool ring_ready;
    struct virtio_worker worker; /* holds: the VM's pause, a driver's reset */
    bool vm_held;                /* the VM's pause is one of them */
    unsigned inflight;

    struct virtq_chain chain; /* the I/O thread's */
    struct vblk_req reqs[DEV_VIRTIO_BLK_QUEUE_SIZE];
};

/* ---- the image ------------------------------------------------------------------------------ */

static int vblk_open(struct vblk *vb)
{
    const struct dev_disk *d = &vb->disk;
    int flags = (d->readonly ? O_RDONLY : O_RDWR) | (d->direct ? O_DIRECT : 0);
    return dev_disk_open(d->path, flags, vb->name, d->size, &vb->fd, &vb->size);
}

static int vblk_claim(void *dev)
{
    struct vblk *vb = dev;
    if (vb->locked)
        return 0;
    struct flock fl = {.l_type = vb->disk.readonly ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(vb->fd, F_OFD_SETLK, &fl)) {
        if (errno == EAGAIN || errno == EACCES)
            return err_set(-EBUSY, "%s: the image is locked by another process (a tern using it?)",
                           vb->name);
        return err_sys(-errno, "%s: F_OFD_SETLK", vb->name);
    }
    vb->locked = true;
    return 0;
}

static void vblk_release(void *dev)
{
    struct vblk *vb = dev;
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
    if (vb->locked && fcntl(vb->fd, F_OFD_SETLK, &fl))
        err_warn("%s: unlocking the image: %s", vb->name, strerror(errno));
    vb->locked = false;
}

/* ---- requests ------------------------------------------------------------------------------- */

static void vblk_finish(struct vblk *vb, struct vblk_req *r, uint8_t status, struct virtq *q)
{
    const struct virtq_mem *m = virtio_pci_mem(vb->vp);
    if (status == VBLK_S_OK)
        for (unsigned i = 0; i < r->nbufs; i++) /* the kernel wrote these: KVM cannot see it */
            m->dirty(m->opaque, r->bufs[i].gpa, r->bufs[i].len);
    uint8_t *s = m->ptr(m->opaque, r->status_gpa, 1);
    if (s) {
        *s = status;
        m->dirty(m->opaque, r->status_gpa, 1);
    }
    if (q)
        virtq_push(q, m, r->head, (status == VBLK_S_OK ? r->filled : 0) + 1);
    free(r->bufs);
    free(r->iov);
    *r = (struct vblk_req){0};
}

/* The iovecs over [skip, skip+len) of the chain's readable or writable buffers. */
static int vblk_iov(struct vblk *vb, struct vblk_req *r, bool write, uint64_t skip, uint64_t len)
{
    const struct virtq_chain *c = &vb->chain;
    const struct virtq_mem *m = virtio_pci_mem(vb->vp);
    r->iov = calloc(c->count, sizeof(*r->iov));
    r->bufs = write ? calloc(c->count, sizeof(*r->bufs)) : NULL;
    if (!r->iov || (write && !r->bufs))
        return -ENOMEM;
    for (unsigned i = 0; i < c->count && len; i++) {
        const struct virtq_buf *b = &c->bufs[i];
        if (b->write != write)
            continue;
        if (skip >= b->len) {
            skip -= b->len;
            continue;
        }
        uint64_t n = b->len - skip < len ? b->len - skip : len;
        r->iov[r->niov++] =
            (struct iovec){.iov_base = m->ptr(m->opaque, b->gpa + skip, n), .iov_len = n};
        if (write)
            r->bufs[r->nbufs++] = (struct virtq_buf){.gpa = b->gpa + skip, .len = (uint32_t)n};
        len -= n;
        skip = 0;
    }
    return 0;
}

/* Whether [sector, +bytes) lies inside the disk. */
static bool vblk_in_range(const struct vblk *vb, uint64_t sector, uint64_t bytes)
{
    return sector <= vb->size / VBLK_SECTOR && bytes <= vb->size - sector * VBLK_SECTOR;
}

/* Prepares the request's I/O: 1 with an SQE filled, or a status to complete it with now. */
static int vblk_prepare(struct vblk *vb, struct vblk_req *r, struct io_uring_sqe *sqe)
{
    const struct virtq_chain *c = &vb->chain;
    const struct virtq_mem *m = virtio_pci_mem(vb->vp);
    uint8_t hdr[16];
    if (virtq_chain_copy(c, m, false, 0, hdr, sizeof(hdr)) != sizeof(hdr))
        return -VBLK_S_IOERR;
    r->type = (uint8_t)le_get32(hdr);
    uint32_t type = le_get32(hdr);
    uint64_t sector = le_get64(hdr + 8);
    uint64_t in_len = c->in_bytes - 1, out_len = c->out_bytes - sizeof(hdr);
    switch (type) {
    case VBLK_T_IN:
        if (in_len % VBLK_SECTOR || !vblk_in_range(vb, sector, in_len))
            return -VBLK_S_IOERR;
        if (vblk_iov(vb, r, true, 0, in_len))
            return -VBLK_S_IOERR;
        r->expect = (int64_t)in_len;
        r->filled = (uint32_t)in_len;
        io_uring_prep_readv(sqe, vb->fd, r->iov, r->niov, sector * VBLK_SECTOR);
        return 1;
    case VBLK_T_OUT:
        if (vb->disk.readonly || out_len % VBLK_SECTOR || !vblk_in_range(vb, sector, out_len))
            return -VBLK_S_IOERR;
        if (vblk_iov(vb, r, false, sizeof(hdr), out_len))
            return -VBLK_S_IOERR;
        r->expect = (int64_t)out_len;
        io_uring_prep_writev(sqe, vb->fd, r->iov, r->niov, sector * VBLK_SECTOR);
        return 1;
    case VBLK_T_FLUSH:
        io_uring_prep_fsync(sqe, vb->fd, IORING_FSYNC_DATASYNC);
        return 1;
    case VBLK_T_GET_ID: {
        char id[DEV_DISK_SERIAL_MAX] = {0};
        memcpy(id, vb->disk.serial, strnlen(vb->disk.serial, sizeof(id)));
        uint64_t n = in_len < sizeof(id) ? in_len : sizeof(id);
        r->filled = (uint32_t)virtq_chain_copy(c, m, true, 0, id, n);
        return -VBLK_S_OK;
    }
    case VBLK_T_DISCARD:
    case VBLK_T_WRITE_ZEROES: {
        uint8_t seg[16];
        if (vb->disk.readonly || out_len != sizeof(seg) ||
            virtq_chain_copy(c, m, false, sizeof(hdr), seg, sizeof(seg)) != sizeof(seg))
            return -VBLK_S_IOERR;
        uint64_t start = le_get64(seg), n = le_get32(seg + 8);
        uint32_t flags = le_get32(seg + 12);
        if (n > VBLK_DISCARD_MAX_SECTORS || !vblk_in_range(vb, start, n * VBLK_SECTOR) ||
            (flags & ~1u))
            return -VBLK_S_IOERR;
        int mode = type == VBLK_T_DISCARD || (flags & 1)
                       ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                       : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
        io_uring_prep_fallocate(sqe, vb->fd, mode, start * VBLK_SECTOR, n * VBLK_SECTOR);
        return 1;
    }
    default:
        return -VBLK_S_UNSUPP;
    }
}

static struct vblk_req *vblk_free_req(struct vblk *vb, unsigned *slot)
{
    for (unsigned i = 0; i < DEV_VIRTIO_BLK_QUEUE_SIZE; i++)
        if (!vb->reqs[i].busy) {
            *slot = i;
            return &vb->reqs[i];
        }
    return NULL;
}

/* Takes every available request (transport locked). */
static void vblk_process(struct vblk *vb)
{
    const struct virtq_mem *m = virtio_pci_mem(vb->vp);
    virtio_pci_lock(vb->vp);
    struct virtq *q = virtio_pci_queue(vb->vp, 0);
    bool pushed = false;
    unsigned slot;
    struct vblk_req *r;
    while (q && (r = vblk_free_req(vb, &slot))) {
        char why[200];
        int rc = virtq_pop(q, m, &vb->chain, why, sizeof(why));
        if (rc < 0) {
            virtio_pci_fail(vb->vp, why);
            break;
        }
        if (rc == 0)
            break;
        const struct virtq_buf *last =
            vb->chain.count ? &vb->chain.bufs[vb->chain.count - 1] : NULL;
        if (!last || !last->write || last->len == 0) {
            snprintf(why, sizeof(why), "request at head %u has no status byte", vb->chain.head);
            virtio_pci_fail(vb->vp, why);
            break;
        }
        *r = (struct vblk_req){
            .busy = true, .head = vb->chain.head, .status_gpa = last->gpa + last->len - 1};
        struct io_uring_sqe *sqe = io_uring_get_sqe(&vb->ring);
        rc = sqe ? vblk_prepare(vb, r, sqe) : -VBLK_S_IOERR;
        if (rc == 1) {
            io_uring_sqe_set_data64(sqe, slot);
            vb->inflight++;
            continue;
        }
        if (sqe)
            io_uring_prep_nop(sqe), io_uring_sqe_set_data64(sqe, VBLK_TAG_NOP);
        vblk_finish(vb, r, (uint8_t)-rc, q);
        pushed = true;
    }
    if (pushed && q)
        virtio_pci_interrupt(vb->vp, 0);
    virtio_pci_unlock(vb->vp);
}

/* ---- the I/O thread ------------------------------------------------------------------------- */

static void vblk_arm(struct vblk *vb, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&vb->ring);
    if (!sqe) {
        io_uring_submit(&vb->ring);
        sqe = io_uring_get_sqe(&vb->ring);
    }
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag);
}

static void vblk_complete(struct vblk *vb, struct io_uring_cqe *cqe)
{
    struct vblk_req *r = &vb->reqs[cqe->user_data];
    uint8_t status = cqe->res == r->expect ? VBLK_S_OK : VBLK_S_IOERR;
    if (status != VBLK_S_OK)
        err_warn("%s: request type %u failed: %s", vb->name, r->type,
                 cqe->res < 0 ? strerror(-cqe->res) : "short transfer");
    vb->inflight--;
    vblk_finish(vb, r, status, virtio_pci_queue(vb->vp, 0));
}

/* Handles what completed; true when a request finished. */
static bool vblk_reap(struct vblk *vb)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    bool done = false;
    virtio_pci_lock(vb->vp);
    io_uring_for_each_cqe(&vb->ring, head, cqe)
    {
        n++;
        if (cqe->user_data == VBLK_TAG_KICK) {
            virtio_worker_drain(virtio_pci_queue_fd(vb->vp, 0));
            vblk_arm(vb, virtio_pci_queue_fd(vb->vp, 0), VBLK_TAG_KICK);
        } else if (cqe->user_data == VBLK_TAG_CTL) {
            virtio_worker_drain(vb->worker.ctl_fd);
            vblk_arm(vb, vb->worker.ctl_fd, VBLK_TAG_CTL);
        } else if (cqe->user_data < DEV_VIRTIO_BLK_QUEUE_SIZE) {
            vblk_complete(vb, cqe);
            done = true;
        }
    }
    io_uring_cq_advance(&vb->ring, n);
    if (done && virtio_pci_queue(vb->vp, 0))
        virtio_pci_interrupt(vb->vp, 0);
    virtio_pci_unlock(vb->vp);
    return done;
}

static void *vblk_thread(void *arg)
{
    struct vblk *vb = arg;
    vblk_arm(vb, virtio_pci_queue_fd(vb->vp, 0), VBLK_TAG_KICK);
    vblk_arm(vb, vb->worker.ctl_fd, VBLK_TAG_CTL);
    for (;;) {
        int rc = io_uring_submit_and_wait(&vb->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            err_warn("%s: io_uring: %s", vb->name, strerror(-rc));
            break;
        }
        vblk_reap(vb);
        bool quit;
        bool run = virtio_worker_check(&vb->worker, vb->inflight == 0, &quit);
        if (quit)
            break;
        if (run)
            vblk_process(vb);
    }
    return NULL;
}

/* ---- the transport's hooks -------------------------------------------------------------- */

static void vblk_config_read(void *dev, unsigned off, uint8_t *buf, unsigned len)
{
    struct vblk *vb = dev;
    memcpy(buf, vb->config + off, len);
}

static void vblk_stop_io(void *dev, bool stop)
{
    struct vblk *vb = dev;
    if (stop)
        virtio_worker_hold(&vb->worker);
    else
        virtio_worker_unhold(&vb->worker);
}

static void vblk_driver_ok(void *dev)
{
    struct vblk *vb = dev;
    virtio_worker_kick(&vb->worker);
}

static const struct virtio_pci_ops vblk_vp_ops = {
    .config_read = vblk_config_read, .stop_io = vblk_stop_io, .driver_ok = vblk_driver_ok};

/* ---- dev_ops ---------------------------------------------------------------------------- */

static unsigned vblk_instances(const struct dev_env *env)
{
    return env->disk_count;
}

static void vblk_fill_config(struct vblk *vb)
{
    uint8_t *c = vb->config;
    le_put64(c, vb->size / VBLK_SECTOR);
    le_put32(c + 12, VBLK_SEG_MAX);
    le_put32(c + 20, VBLK_SECTOR);
    le_put16(c + 34, 1);
    le_put32(c + 36, VBLK_DISCARD_MAX_SECTORS);
    le_put32(c + 40, 1);
    le_put32(c + 44, 1);
    le_put32(c + 48, VBLK_DISCARD_MAX_SECTORS);
    le_put32(c + 52, 1);
    c[56] = 1;
}

static void vblk_destroy(void *dev);
static int vblk_setup(struct vblk *vb, const struct dev_env *env);

static int vblk_create(const struct dev_env *env, void **out)
{
    struct vblk *vb = calloc(1, sizeof(*vb));
    if (!vb)
        return err_set(-ENOMEM, "out of memory");
    vb->env = *env;
    vb->host = env->host;
    vb->disk = env->disks[env->instance];
    vb->fd = -1;
    vb->vm_held = true; /* the VM has not started: the worker starts held */
    /* A restore names the stream's disk; a fresh VM the flag. */
    if (vb->disk.incoming)
        snprintf(vb->name, sizeof(vb->name), "disk %u (%.70s)", env->instance, vb->disk.path);
    else
        snprintf(vb->name, sizeof(vb->name), "--disk path=%.70s", vb->disk.path);
    int rc = virtio_worker_init(&vb->worker, vb->name);
    if (!rc)
        rc = vblk_setup(vb, env);
    if (rc) {
        vblk_destroy(vb);
        return rc;
    }
    *out = vb;
    return 0;
}

static int vblk_setup(struct vblk *vb, const struct dev_env *env)
{
    int rc = vblk_open(vb);
    if (rc)
        return rc;
    vblk_fill_config(vb);
    env->disks[env->instance].size = vb->size;
    uint64_t features = 1ull << VBLK_F_SEG_MAX | 1ull << VBLK_F_BLK_SIZE | 1ull << VBLK_F_FLUSH;
    features |= vb->disk.readonly ? 1ull << VBLK_F_RO
                                  : 1ull << VBLK_F_DISCARD | 1ull << VBLK_F_WRITE_ZEROES;
    struct virtio_pci_params p = {.device_type = 2,
                                  .class_code = 0x018000,
                                  .features = features,
                                  .config_size = VBLK_CONFIG_SIZE,
                                  .queues = 1,
                                  .queue_max = DEV_VIRTIO_BLK_QUEUE_SIZE,
                                  .ops = &vblk_vp_ops,
                                  .dev = vb,
                                  .host = env->host,
                                  .pci = env->pci,
                                  .name = vb->name};
    rc = virtio_pci_create(&p, &vb->vp);
    if (rc)
        return rc;
    if ((rc = io_uring_queue_init(VBLK_RING, &vb->ring, 0)) < 0)
        return err_set(rc, "%s: io_uring_queue_init: %s", vb->name, strerror(-rc));
    vb->ring_ready = true;
    return virtio_worker_start(&vb->worker, vblk_thread, vb, vb->name);
}

static void vblk_quiesce(void *dev)
{
    struct vblk *vb = dev;
    if (vb->vm_held)
        return;
    vb->vm_held = true;
    virtio_worker_hold(&vb->worker);
    /* What the guest was told is written must be on the image before the state is read (a
     * migration's destination reads the image next). */
    if (!vb->disk.readonly && fdatasync(vb->fd))
        err_warn("%s: fdatasync: %s", vb->name, strerror(errno));
}

static void vblk_resume(void *dev)
{
    struct vblk *vb = dev;
    if (!vb->vm_held)
        return;
    if (vblk_claim(vb)) /* a source taking its VM back after a failed handover */
        err_warn("%s", err_msg());
    vb->vm_held = false;
    virtio_worker_unhold(&vb->worker);
}

static int vblk_save(void *dev, uint8_t *buf, size_t *len)
{
    struct vblk *vb = dev;
    memset(buf, 0, 16);
    le_put64(buf, vb->size);
    size_t n = 0;
    int rc = virtio_pci_save(vb->vp, buf + 16, &n);
    *len = 16 + n;
    return rc;
}

static int vblk_load(void *dev, const uint8_t *buf, size_t len)
{
    struct vblk *vb = dev;
    if (len != DEV_VIRTIO_BLK_STATE_SIZE)
        return err_set(-EPROTO, "%s: %zu bytes of state, not %u", vb->name, len,
                       DEV_VIRTIO_BLK_STATE_SIZE);
    if (le_get64(buf) != vb->size)
        return err_set(-EPROTO, "%s: the stream's disk has %llu bytes; the image has %llu",
                       vb->name, (unsigned long long)le_get64(buf), (unsigned long long)vb->size);
    return virtio_pci_load(vb->vp, buf + 16, len - 16);
}

static void vblk_stop(void *dev)
{
    struct vblk *vb = dev;
    if (!vb->worker.started)
        return;
    virtio_worker_stop(&vb->worker);
    if (!vb->disk.readonly && fdatasync(vb->fd))
        err_warn("%s: fdatasync: %s", vb->name, strerror(errno));
}

static void vblk_destroy(void *dev)
{
    struct vblk *vb = dev;
    vblk_stop(vb);
    for (unsigned i = 0; i < DEV_VIRTIO_BLK_QUEUE_SIZE; i++) {
        free(vb->reqs[i].bufs);
        free(vb->reqs[i].iov);
    }
    if (vb->ring_ready)
        io_uring_queue_exit(&vb->ring);
    virtio_pci_destroy(vb->vp);
    virtio_worker_destroy(&vb->worker);
    if (vb->fd >= 0)
        close(vb->fd); /* drops the OFD lock */
    free(vb);
}

const struct dev_ops dev_virtio_blk_ops = {.name = "virtio-blk",
                                           .state_max = DEV_VIRTIO_BLK_STATE_SIZE,
                                           .instances = vblk_instances,
                                           .create = vblk_create,
                                           .quiesce = vblk_quiesce,
                                           .resume = vblk_resume,
                                           .save = vblk_save,
                                           .load = vblk_load,
                                           .stop = vblk_stop,
                                           .claim = vblk_claim,
                                           .release = vblk_release,
                                           .destroy = vblk_destroy};
