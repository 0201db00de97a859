#include "devices/dev_rtc.h"

#include "err/err.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REG_SECONDS 0x00
#define REG_MINUTES 0x02
#define REG_HOURS 0x04
#define REG_WEEKDAY 0x06
#define REG_DAY 0x07
#define REG_MONTH 0x08
#define REG_YEAR 0x09
#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d

#define REG_A_UIP 0x80
#define REG_B_24H 0x02
#define REG_B_BINARY 0x04
#define REG_D_VRT 0x80

struct dev_rtc {
    pthread_mutex_t lock;
    uint8_t index;
    uint8_t ram[128];
};

static void rtc_reset(void *dev)
{
    struct dev_rtc *rtc = dev;
    pthread_mutex_lock(&rtc->lock);
    rtc->index = 0;
    memset(rtc->ram, 0, sizeof(rtc->ram));
    rtc->ram[REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate: what firmware leaves */
    rtc->ram[REG_B] = REG_B_24H;
    pthread_mutex_unlock(&rtc->lock);
}

static int rtc_create(const struct dev_env *env, void **dev)
{
    (void)env;
    struct dev_rtc *rtc = calloc(1, sizeof(*rtc));
    if (!rtc)
        return err_set(-ENOMEM, "out of memory");
    pthread_mutex_init(&rtc->lock, NULL);
    rtc_reset(rtc);
    *dev = rtc;
    return 0;
}

static void rtc_destroy(void *dev)
{
    struct dev_rtc *rtc = dev;
    pthread_mutex_destroy(&rtc->lock);
    free(rtc);
}

static uint8_t rtc_encode(const struct dev_rtc *rtc, unsigned value)
{
    if (rtc->ram[REG_B] & REG_B_BINARY)
        return (uint8_t)value;
    return (uint8_t)((value / 10) << 4 | value % 10);
}

static uint8_t rtc_hours(const struct dev_rtc *rtc, unsigned hour)
{
    if (rtc->ram[REG_B] & REG_B_24H)
        return rtc_encode(rtc, hour);
    unsigned h12 = hour % 12 ? hour % 12 : 12;
    return (uint8_t)(rtc_encode(rtc, h12) | (hour >= 12 ? 0x80 : 0));
}

/* The registers that show the host's time rather than CMOS RAM. */
static bool rtc_is_clock(uint8_t reg)
{
    switch (reg) {
    case REG_SECONDS:
    case REG_MINUTES:
    case REG_HOURS:
    case REG_WEEKDAY:
    case REG_DAY:
    case REG_MONTH:
    case REG_YEAR:
    case DEV_RTC_CENTURY:
        return true;
    default:
        return false; /* the alarms (1, 3, 5), the control registers and CMOS RAM */
    }
}

/* One clock register, read from the host's UTC time. */
static uint8_t rtc_read_clock(const struct dev_rtc *rtc, uint8_t reg)
{
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    switch (reg) {
    case REG_SECONDS:
        return rtc_encode(rtc, (unsigned)tm.tm_sec);
    case REG_MINUTES:
        return rtc_encode(rtc, (unsigned)tm.tm_min);
    case REG_HOURS:
        return rtc_hours(rtc, (unsigned)tm.tm_hour);
    case REG_WEEKDAY:
        return rtc_encode(rtc, (unsigned)tm.tm_wday + 1);
    case REG_DAY:
        return rtc_encode(rtc, (unsigned)tm.tm_mday);
    case REG_MONTH:
        return rtc_encode(rtc, (unsigned)tm.tm_mon + 1);
    case REG_YEAR:
        return rtc_encode(rtc, (unsigned)(tm.tm_year + 1900) % 100);
    default: /* DEV_RTC_CENTURY */
        return rtc_encode(rtc, (unsigned)(tm.tm_year + 1900) / 100);
    }
}

static uint8_t rtc_read(struct dev_rtc *rtc, uint8_t reg)
{
    if (rtc_is_clock(reg))
        return rtc_read_clock(rtc, reg);
    switch (reg) {
    case REG_A:
        return rtc->ram[REG_A] & (uint8_t)~REG_A_UIP;
    case REG_C:
        return 0;
    case REG_D:
        return REG_D_VRT;
    default:
        return rtc->ram[reg];
    }
}

static void rtc_write(struct dev_rtc *rtc, uint8_t reg, uint8_t value)
{
    /* The clock is the host's; C and D are read-only. */
    if (!rtc_is_clock(reg) && reg != REG_C && reg != REG_D)
        rtc->ram[reg] = value;
}

static enum dev_action rtc_pio(void *opaque, uint16_t port, unsigned size, bool is_write,
                               uint32_t *value)
{
    struct dev_rtc *rtc = opaque;
    (void)size;
    pthread_mutex_lock(&rtc->lock);
    if (port == DEV_RTC_PORT) {
        if (is_write)
            rtc->index = (uint8_t)(*value & 0x7f); /* bit 7 masks NMI, which tern never raises */
        else
            *value = 0xff; /* the index register is write-only */
    } else if (is_write) {
        rtc_write(rtc, rtc->index, (uint8_t)*value);
    } else {
        *value = rtc_read(rtc, rtc->index);
    }
    pthread_mutex_unlock(&rtc->lock);
    return DEV_CONTINUE;
}

static int rtc_attach(void *dev, struct dev_bus *bus)
{
    return dev_bus_add_pio(bus, DEV_RTC_PORT, 2, rtc_pio, dev);
}

static int rtc_save(void *dev, uint8_t *buf, size_t *len)
{
    struct dev_rtc *rtc = dev;
    pthread_mutex_lock(&rtc->lock);
    memset(buf, 0, 4);
    buf[0] = rtc->index;
    memcpy(buf + 4, rtc->ram, sizeof(rtc->ram));
    pthread_mutex_unlock(&rtc->lock);
    *len = DEV_RTC_STATE_SIZE;
    return 0;
}

static int rtc_load(void *dev, const uint8_t *buf, size_t len)
{
    struct dev_rtc *rtc = dev;
    if (len != DEV_RTC_STATE_SIZE)
        return err_set(-EPROTO, "RTC state: %zu bytes, expected %u", len, DEV_RTC_STATE_SIZE);
    if (buf[0] > 0x7f)
        return err_set(-EPROTO, "RTC state: index 0x%02x is out of range", buf[0]);
    pthread_mutex_lock(&rtc->lock);
    rtc->index = buf[0];
    memcpy(rtc->ram, buf + 4, sizeof(rtc->ram));
    pthread_mutex_unlock(&rtc->lock);
    return 0;
}

const struct dev_ops dev_rtc_ops = {
    .name = "rtc",
    .state_max = DEV_RTC_STATE_SIZE,
    .create = rtc_create,
    .attach = rtc_attach,
    .save = rtc_save,
    .load = rtc_load,
    .reset = rtc_reset,
    .destroy = rtc_destroy,
};
