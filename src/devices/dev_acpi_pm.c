#include "devices/dev_acpi_pm.h"

#include "clock/clock.h"
#include "err/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PM_TIMER_HZ 3579545u
#define PM_TIMER_MASK 0xffffffu
#define CNT_SCI_EN 0x0001u
#define CNT_SLP_TYP_SHIFT 10
#define CNT_SLP_TYP_MASK 0x7u
#define CNT_SLP_EN 0x2000u
/* The control bits that are plain read/write storage (SLP_EN and the write-only GBL_RLS are
 * not among them). */
#define CNT_STORED 0x1c06u

struct dev_acpi_pm {
    pthread_mutex_t lock;
    const struct dev_host *host;
    uint16_t status;
    uint16_t enable;
    uint16_t control;
    uint32_t timer_offset; /* added to the host-derived count */
    bool timer_held;       /* restored, not yet running: the timer reads timer_value */
    uint32_t timer_value;
};

static uint32_t pm_host_ticks(void)
{
    return (uint32_t)((unsigned __int128)clock_now_ns() * PM_TIMER_HZ / 1000000000u);
}

static uint32_t pm_timer(const struct dev_acpi_pm *pm)
{
    if (pm->timer_held)
        return pm->timer_value;
    return (pm_host_ticks() + pm->timer_offset) & PM_TIMER_MASK;
}

static void pm_reset(void *dev)
{
    struct dev_acpi_pm *pm = dev;
    pthread_mutex_lock(&pm->lock);
    pm->status = pm->enable = 0;
    pm->control = CNT_SCI_EN;
    pm->timer_offset = 0;
    pm->timer_held = false;
    pthread_mutex_unlock(&pm->lock);
}

static int pm_create(const struct dev_env *env, void **dev)
{
    struct dev_acpi_pm *pm = calloc(1, sizeof(*pm));
    if (!pm)
        return err_set(-ENOMEM, "out of memory");
    pthread_mutex_init(&pm->lock, NULL);
    pm->host = env->host;
    pm_reset(pm);
    *dev = pm;
    return 0;
}

static void pm_destroy(void *dev)
{
    struct dev_acpi_pm *pm = dev;
    pthread_mutex_destroy(&pm->lock);
    free(pm);
}

/* The 32 bits of register space starting at a register's first byte. */
static uint32_t pm_read_register(const struct dev_acpi_pm *pm, unsigned reg)
{
    switch (reg) {
    case DEV_ACPI_PM_EVT_OFFSET:
        return pm->status | (uint32_t)pm->enable << 16;
    case DEV_ACPI_PM_CNT_OFFSET:
        return pm->control | CNT_SCI_EN;
    case DEV_ACPI_PM_TMR_OFFSET:
        return pm_timer(pm);
    default:
        return 0;
    }
}

static enum dev_action pm_pio(void *opaque, uint16_t port, unsigned size, bool is_write,
                              uint32_t *value)
{
    struct dev_acpi_pm *pm = opaque;
    unsigned offset = port - DEV_ACPI_PM_PORT;
    unsigned reg = offset & ~3u, shift = (offset & 3u) * 8;
    uint32_t mask = size >= 4 ? 0xffffffffu : (1u << (size * 8)) - 1;
    bool power_off = false;

    pthread_mutex_lock(&pm->lock);
    if (!is_write) {
        *value = (pm_read_register(pm, reg) >> shift) & mask;
    } else {
        uint32_t v = (*value & mask) << shift, touched = mask << shift;
        if (reg == DEV_ACPI_PM_EVT_OFFSET) {
            /* Status bits clear when written with 1. */
            pm->status &= (uint16_t) ~(v & touched & 0xffff);
            if (touched >> 16)
                pm->enable = (uint16_t)((pm->enable & ~(touched >> 16)) | (v >> 16));
        } else if (reg == DEV_ACPI_PM_CNT_OFFSET && (touched & 0xffff)) {
            uint16_t c = (uint16_t)((pm->control & ~touched) | (v & touched));
            pm->control = (uint16_t)((c & CNT_STORED) | CNT_SCI_EN);
            power_off = (c & CNT_SLP_EN) &&
                        ((c >> CNT_SLP_TYP_SHIFT) & CNT_SLP_TYP_MASK) == DEV_ACPI_PM_S5_TYPE;
        }
    }
    pthread_mutex_unlock(&pm->lock);
    if (power_off)
        pm->host->request_end(pm->host->opaque, DEV_END_POWER_OFF, 0);
    return power_off ? DEV_PARK : DEV_CONTINUE;
}

static int pm_attach(void *dev, struct dev_bus *bus)
{
    return dev_bus_add_pio(bus, DEV_ACPI_PM_PORT, DEV_ACPI_PM_LEN, pm_pio, dev);
}

static int pm_save(void *dev, uint8_t *buf, size_t *len)
{
    struct dev_acpi_pm *pm = dev;
    pthread_mutex_lock(&pm->lock);
    uint16_t regs[4] = {pm->status, pm->enable, pm->control, 0};
    uint32_t timer = pm_timer(pm);
    pthread_mutex_unlock(&pm->lock);
    memcpy(buf, regs, sizeof(regs));
    memcpy(buf + 8, &timer, 4);
    *len = DEV_ACPI_PM_STATE_SIZE;
    return 0;
}

static int pm_load(void *dev, const uint8_t *buf, size_t len)
{
    struct dev_acpi_pm *pm = dev;
    if (len != DEV_ACPI_PM_STATE_SIZE)
        return err_set(-EPROTO, "ACPI PM state: %zu bytes, expected %u", len,
                       DEV_ACPI_PM_STATE_SIZE);
    uint16_t regs[4];
    uint32_t timer;
    memcpy(regs, buf, sizeof(regs));
    memcpy(&timer, buf + 8, 4);
    if (timer > PM_TIMER_MASK)
        return err_set(-EPROTO, "ACPI PM state: timer 0x%x exceeds 24 bits", timer);
    pthread_mutex_lock(&pm->lock);
    pm->status = regs[0];
    pm->enable = regs[1];
    pm->control = (uint16_t)((regs[2] & CNT_STORED) | CNT_SCI_EN);
    pm->timer_held = true;
    pm->timer_value = timer;
    pthread_mutex_unlock(&pm->lock);
    return 0;
}

/* The vCPUs run: a loaded timer runs on from the value it holds. */
static void pm_resume(void *dev)
{
    struct dev_acpi_pm *pm = dev;
    pthread_mutex_lock(&pm->lock);
    if (pm->timer_held) {
        pm->timer_offset = pm->timer_value - pm_host_ticks();
        pm->timer_held = false;
    }
    pthread_mutex_unlock(&pm->lock);
}

const struct dev_ops dev_acpi_pm_ops = {
    .name = "acpi-pm",
    .state_max = DEV_ACPI_PM_STATE_SIZE,
    .create = pm_create,
    .attach = pm_attach,
    .resume = pm_resume,
    .save = pm_save,
    .load = pm_load,
    .reset = pm_reset,
    .destroy = pm_destroy,
};
