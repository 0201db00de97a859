#include "devices/dev_serial.h"

#include "err/err.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERIAL_OUT_RING 65536
#define SERIAL_IN_MAX DEV_SERIAL_IN_MAX

/* Register offsets and bits (16550A). */
enum {
    REG_DATA = 0,
    REG_IER = 1,
    REG_IIR_FCR = 2,
    REG_LCR = 3,
    REG_MCR = 4,
    REG_LSR = 5,
    REG_MSR = 6,
    REG_SCR = 7,
};
#define IER_RX 0x01
#define IER_THRE 0x02
#define IIR_NONE 0x01
#define IIR_THRE 0x02
#define IIR_RX 0x04
#define IIR_FIFO 0xc0
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define LCR_DLAB 0x80
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

struct dev_serial {
    pthread_mutex_t lock;
    const struct dev_host *host;
    int out_fd;
    bool out_broken;

    /* Registers. */
    uint8_t ier, lcr, mcr, lsr_errors, scr, dll, dlm, fcr;
    bool thre_pending;
    int irq_level;

    /* Guest input. */
    uint8_t in[SERIAL_IN_MAX];
    unsigned in_head, in_len;
    bool in_overflow_warned;

    /* Output ring: [out_len bytes from out_head]. */
    uint8_t *out;
    unsigned out_head, out_len;

    uv_async_t out_async;
    union {
        uv_tty_t tty;
        uv_pipe_t pipe;
    } in_handle;
    bool in_is_stream;
    char in_buf[1024];
    int open_handles;
    bool closing;
};

static void serial_write_all(struct dev_serial *s, const uint8_t *buf, size_t len)
{
    while (len && !s->out_broken) {
        ssize_t n = write(s->out_fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = s->out_fd, .events = POLLOUT};
            poll(&p, 1, -1);
        } else {
            s->out_broken = true;
            err_warn("serial output failed (%s); further guest output is dropped",
                     n < 0 ? strerror(errno) : "short write");
        }
    }
}

/* Called with the lock held. */
static void serial_drain_locked(struct dev_serial *s)
{
    while (s->out_len) {
        unsigned chunk = SERIAL_OUT_RING - s->out_head;
        if (chunk > s->out_len)
            chunk = s->out_len;
        serial_write_all(s, s->out + s->out_head, chunk);
        s->out_head = (s->out_head + chunk) % SERIAL_OUT_RING;
        s->out_len -= chunk;
    }
    s->out_head = 0;
}

static void serial_on_out_async(uv_async_t *async)
{
    struct dev_serial *s = async->data;
    pthread_mutex_lock(&s->lock);
    serial_drain_locked(s);
    pthread_mutex_unlock(&s->lock);
}

/* Lock held. Returns whether the loop needs waking. */
static bool serial_emit_locked(struct dev_serial *s, uint8_t byte)
{
    if (s->out_fd < 0)
        return false;
    if (s->out_len == SERIAL_OUT_RING)
        serial_drain_locked(s);
    s->out[(s->out_head + s->out_len) % SERIAL_OUT_RING] = byte;
    return s->out_len++ == 0;
}

static void serial_push_input_locked(struct dev_serial *s, uint8_t byte)
{
    if (s->in_len == SERIAL_IN_MAX) {
        s->lsr_errors |= LSR_OE;
        if (!s->in_overflow_warned)
            err_warn("serial input overflow: the guest is not reading; bytes dropped");
        s->in_overflow_warned = true;
        return;
    }
    s->in[(s->in_head + s->in_len) % SERIAL_IN_MAX] = byte;
    s->in_len++;
}

static uint8_t serial_iir_locked(const struct dev_serial *s)
{
    uint8_t fifo = (s->fcr & FCR_ENABLE) ? IIR_FIFO : 0;
    if ((s->ier & IER_RX) && s->in_len)
        return IIR_RX | fifo;
    if ((s->ier & IER_THRE) && s->thre_pending)
        return IIR_THRE | fifo;
    return IIR_NONE | fifo;
}

static void serial_update_irq_locked(struct dev_serial *s)
{
    int level = !(serial_iir_locked(s) & IIR_NONE) && (s->mcr & MCR_OUT2);
    if (level != s->irq_level) {
        s->irq_level = level;
        if (s->host && s->host->set_irq)
            s->host->set_irq(s->host->opaque, DEV_SERIAL_IRQ, level);
    }
}

static uint8_t serial_msr_locked(const struct dev_serial *s)
{
    if (s->mcr & MCR_LOOP) {
        uint8_t m = 0;
        if (s->mcr & MCR_RTS)
            m |= MSR_CTS;
        if (s->mcr & MCR_DTR)
            m |= MSR_DSR;
        if (s->mcr & MCR_OUT1)
            m |= MSR_RI;
        if (s->mcr & MCR_OUT2)
            m |= MSR_DCD;
        return m;
    }
    return MSR_DCD | MSR_DSR | MSR_CTS;
}

/* A guest write to register reg; returns whether the loop needs waking. Lock held. */
static bool serial_write_locked(struct dev_serial *s, unsigned reg, uint8_t v)
{
    bool dlab = s->lcr & LCR_DLAB, wake = false;
    switch (reg) {
    case REG_DATA:
        if (dlab) {
            s->dll = v;
            break;
        }
        if (s->mcr & MCR_LOOP)
            serial_push_input_locked(s, v);
        else
            wake = serial_emit_locked(s, v);
        s->thre_pending = true;
        break;
    case REG_IER:
        if (dlab) {
            s->dlm = v;
            break;
        }
        /* Enabling the THRE interrupt while THR is empty raises it at once. */
        if ((v & IER_THRE) && !(s->ier & IER_THRE))
            s->thre_pending = true;
        s->ier = v & 0x0f;
        break;
    case REG_IIR_FCR:
        s->fcr = v;
        if (v & FCR_CLEAR_RX)
            s->in_len = 0;
        break;
    case REG_LCR:
        s->lcr = v;
        break;
    case REG_MCR:
        s->mcr = v & 0x1f;
        break;
    case REG_SCR:
        s->scr = v;
        break;
    default: /* LSR and MSR are read-only */
        break;
    }
    return wake;
}

/* The next received byte (0 when there is none). Lock held. */
static uint8_t serial_pop_input_locked(struct dev_serial *s)
{
    if (!s->in_len)
        return 0;
    uint8_t v = s->in[s->in_head];
    s->in_head = (s->in_head + 1) % SERIAL_IN_MAX;
    s->in_len--;
    return v;
}

/* A guest read of register reg. Lock held. */
static uint8_t serial_read_locked(struct dev_serial *s, unsigned reg)
{
    bool dlab = s->lcr & LCR_DLAB;
    uint8_t v;
    switch (reg) {
    case REG_DATA:
        return dlab ? s->dll : serial_pop_input_locked(s);
    case REG_IER:
        return dlab ? s->dlm : s->ier;
    case REG_IIR_FCR:
        v = serial_iir_locked(s);
        /* Reading IIR while it reports THRE acknowledges that interrupt. */
        if ((v & 0x0f) == IIR_THRE)
            s->thre_pending = false;
        return v;
    case REG_LCR:
        return s->lcr;
    case REG_MCR:
        return s->mcr;
    case REG_LSR:
        v = LSR_THRE | LSR_TEMT | s->lsr_errors | (s->in_len ? LSR_DR : 0);
        s->lsr_errors = 0;
        return v;
    case REG_MSR:
        return serial_msr_locked(s);
    default:
        return s->scr;
    }
}

static enum dev_action serial_pio(void *opaque, uint16_t port, unsigned size, bool is_write,
                                  uint32_t *value)
{
    struct dev_serial *s = opaque;
    unsigned reg = port - DEV_SERIAL_PORT;
    bool wake = false;
    (void)size;
    pthread_mutex_lock(&s->lock);
    if (is_write)
        wake = serial_write_locked(s, reg, (uint8_t)*value);
    else
        *value = serial_read_locked(s, reg);
    serial_update_irq_locked(s);
    pthread_mutex_unlock(&s->lock);
    if (wake)
        uv_async_send(&s->out_async);
    return DEV_CONTINUE;
}

static int serial_attach_input(struct dev_serial *s, int in_fd);
static void serial_destroy(void *dev);

/* Power-on registers, no input pending (output already queued still goes out). */
static void serial_reset(void *dev)
{
    struct dev_serial *s = dev;
    pthread_mutex_lock(&s->lock);
    s->ier = s->lcr = s->mcr = s->lsr_errors = s->scr = s->dll = s->dlm = s->fcr = 0;
    s->thre_pending = false;
    s->in_head = s->in_len = 0;
    serial_update_irq_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static int serial_create(const struct dev_env *env, void **dev)
{
    struct dev_serial *s = calloc(1, sizeof(*s));
    if (!s)
        return err_set(-ENOMEM, "out of memory");
    s->out = malloc(SERIAL_OUT_RING);
    if (!s->out) {
        free(s);
        return err_set(-ENOMEM, "out of memory");
    }
    pthread_mutex_init(&s->lock, NULL);
    s->host = env->host;
    s->out_fd = env->serial_out_fd;
    int rc = uv_async_init(env->loop, &s->out_async, serial_on_out_async);
    if (rc) {
        pthread_mutex_destroy(&s->lock);
        free(s->out);
        free(s);
        return err_set(rc, "uv_async_init: %s", uv_strerror(rc));
    }
    s->out_async.data = s;
    s->open_handles = 1;
    serial_reset(s);
    rc = env->serial_in_fd >= 0 ? serial_attach_input(s, env->serial_in_fd) : 0;
    if (rc) {
        serial_destroy(s);
        return rc;
    }
    *dev = s;
    return 0;
}

static int serial_attach(void *dev, struct dev_bus *bus)
{
    return dev_bus_add_pio(bus, DEV_SERIAL_PORT, 8, serial_pio, dev);
}

/* Layout: ier lcr mcr lsr_errors scr dll dlm fcr thre_pending irq_level 0 0, u32 input length,
 * then the input bytes in order. */
static int serial_save(void *dev, uint8_t *buf, size_t *len)
{
    struct dev_serial *s = dev;
    pthread_mutex_lock(&s->lock);
    uint8_t regs[12] = {s->ier, s->lcr, s->mcr,          s->lsr_errors,         s->scr, s->dll,
                        s->dlm, s->fcr, s->thre_pending, (uint8_t)s->irq_level, 0,      0};
    memcpy(buf, regs, sizeof(regs));
    uint32_t n = s->in_len;
    memcpy(buf + 12, &n, 4);
    for (uint32_t i = 0; i < n; i++)
        buf[DEV_SERIAL_STATE_FIXED + i] = s->in[(s->in_head + i) % SERIAL_IN_MAX];
    pthread_mutex_unlock(&s->lock);
    *len = DEV_SERIAL_STATE_FIXED + n;
    return 0;
}

static int serial_load(void *dev, const uint8_t *buf, size_t len)
{
    struct dev_serial *s = dev;
    uint32_t n;
    if (len < DEV_SERIAL_STATE_FIXED)
        return err_set(-EPROTO, "serial state: %zu bytes is too short", len);
    memcpy(&n, buf + 12, 4);
    if (n > SERIAL_IN_MAX || len != DEV_SERIAL_STATE_FIXED + n)
        return err_set(-EPROTO, "serial state: input length %u does not match %zu bytes", n, len);
    if (buf[8] > 1 || buf[9] > 1)
        return err_set(-EPROTO, "serial state: flags out of range");
    pthread_mutex_lock(&s->lock);
    s->ier = buf[0] & 0x0f;
    s->lcr = buf[1];
    s->mcr = buf[2] & 0x1f;
    s->lsr_errors = buf[3] & LSR_OE;
    s->scr = buf[4];
    s->dll = buf[5];
    s->dlm = buf[6];
    s->fcr = buf[7];
    s->thre_pending = buf[8];
    /* The irqchip state travels separately and already holds the line's level. */
    s->irq_level = buf[9];
    s->in_head = 0;
    s->in_len = n;
    memcpy(s->in, buf + DEV_SERIAL_STATE_FIXED, n);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Writes every pending output byte now. */
static void serial_stop(void *dev)
{
    struct dev_serial *s = dev;
    pthread_mutex_lock(&s->lock);
    serial_drain_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static void serial_feed(struct dev_serial *s, const char *buf, size_t len)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < len; i++)
        serial_push_input_locked(s, (uint8_t)buf[i]);
    serial_update_irq_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static void serial_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct dev_serial *s = h->data;
    (void)hint;
    *buf = uv_buf_init(s->in_buf, sizeof(s->in_buf));
}

static void serial_on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    struct dev_serial *s = stream->data;
    if (n > 0)
        serial_feed(s, buf->base, (size_t)n);
    else if (n < 0)
        uv_read_stop(stream); /* EOF or error: the guest simply gets no more input */
}

/* The device goes once its last loop handle is closed. */
static void serial_maybe_free(struct dev_serial *s)
{
    if (!s->closing || s->open_handles > 0)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s->out);
    free(s);
}

/* Reads guest input from in_fd on the loop (a tty, pipe, socket or file). */
static int serial_attach_input(struct dev_serial *s, int in_fd)
{
    uv_loop_t *loop = s->out_async.loop;
    int rc;
    switch (uv_guess_handle(in_fd)) {
    case UV_TTY:
        rc = uv_tty_init(loop, &s->in_handle.tty, in_fd, 1);
        break;
    case UV_NAMED_PIPE:
    case UV_TCP:
        rc = uv_pipe_init(loop, &s->in_handle.pipe, 0);
        if (!rc && (rc = uv_pipe_open(&s->in_handle.pipe, in_fd)) != 0)
            uv_close((uv_handle_t *)&s->in_handle.pipe, NULL);
        break;
    case UV_FILE: {
        /* A regular file or a device such as /dev/null: its first SERIAL_IN_MAX bytes are the
         * guest's input, read now. (Reading it through libuv would start the threadpool.) */
        char buf[SERIAL_IN_MAX];
        ssize_t n = read(in_fd, buf, sizeof(buf));
        if (n < 0)
            return err_sys(-errno, "cannot read serial input");
        serial_feed(s, buf, (size_t)n);
        return 0;
    }
    default:
        return 0; /* nothing readable: the guest gets no input */
    }
    if (rc)
        return err_set(rc, "cannot read serial input: %s", uv_strerror(rc));
    uv_stream_t *stream = (uv_stream_t *)&s->in_handle;
    stream->data = s;
    rc = uv_read_start(stream, serial_alloc, serial_on_read);
    if (rc) {
        uv_close((uv_handle_t *)stream, NULL);
        return err_set(rc, "cannot read serial input: %s", uv_strerror(rc));
    }
    s->in_is_stream = true;
    s->open_handles++;
    return 0;
}

static void serial_on_close(uv_handle_t *h)
{
    struct dev_serial *s = h->data;
    s->open_handles--;
    serial_maybe_free(s);
}

/* Closes the device's loop handles; it is freed once they are closed. */
static void serial_destroy(void *dev)
{
    struct dev_serial *s = dev;
    s->closing = true;
    if (s->in_is_stream) {
        if (s->in_handle.tty.type == UV_TTY)
            uv_tty_reset_mode();
        uv_close((uv_handle_t *)&s->in_handle, serial_on_close);
    }
    uv_close((uv_handle_t *)&s->out_async, serial_on_close);
}

const struct dev_ops dev_serial_ops = {
    .name = "serial",
    .state_max = DEV_SERIAL_STATE_MAX,
    .create = serial_create,
    .attach = serial_attach,
    .save = serial_save,
    .load = serial_load,
    .reset = serial_reset,
    .stop = serial_stop,
    .destroy = serial_destroy,
};
