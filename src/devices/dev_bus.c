#include "devices/dev_bus.h"

#include "err/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DEV_BUS_MAX 32
#define DEV_MMIO_LOGGED_MAX 64

struct dev_pio_range {
    uint16_t base;
    uint16_t len;
    dev_pio_fn fn;
    void *opaque;
};

struct dev_mmio_range {
    uint64_t base;
    uint64_t len;
    dev_mmio_fn fn;
    void *opaque;
};

struct dev_bus {
    unsigned pio_count;
    struct dev_pio_range pio[DEV_BUS_MAX];
    unsigned mmio_count;
    struct dev_mmio_range mmio[DEV_BUS_MAX];
    /* One bit per port: set once the unhandled access has been logged. */
    atomic_uchar pio_logged[65536 / 8];
    pthread_mutex_t mmio_log_lock;
    unsigned mmio_logged_count;
    uint64_t mmio_logged[DEV_MMIO_LOGGED_MAX];
};

int dev_bus_create(struct dev_bus **out)
{
    struct dev_bus *bus = calloc(1, sizeof(*bus));
    if (!bus)
        return err_set(-ENOMEM, "out of memory");
    pthread_mutex_init(&bus->mmio_log_lock, NULL);
    *out = bus;
    return 0;
}

void dev_bus_destroy(struct dev_bus *bus)
{
    if (!bus)
        return;
    pthread_mutex_destroy(&bus->mmio_log_lock);
    free(bus);
}

int dev_bus_add_pio(struct dev_bus *bus, uint16_t base, uint16_t len, dev_pio_fn fn, void *opaque)
{
    if (bus->pio_count == DEV_BUS_MAX)
        return err_set(-ENOSPC, "too many port-I/O devices");
    for (unsigned i = 0; i < bus->pio_count; i++) {
        const struct dev_pio_range *r = &bus->pio[i];
        if (base < r->base + r->len && r->base < base + len)
            return err_set(-EEXIST, "port range 0x%x+%u is already claimed", base, len);
    }
    bus->pio[bus->pio_count++] = (struct dev_pio_range){base, len, fn, opaque};
    return 0;
}

int dev_bus_add_mmio(struct dev_bus *bus, uint64_t base, uint64_t len, dev_mmio_fn fn, void *opaque)
{
    if (bus->mmio_count == DEV_BUS_MAX)
        return err_set(-ENOSPC, "too many MMIO devices");
    for (unsigned i = 0; i < bus->mmio_count; i++) {
        const struct dev_mmio_range *r = &bus->mmio[i];
        if (base < r->base + r->len && r->base < base + len)
            return err_set(-EEXIST, "MMIO range 0x%llx is already claimed",
                           (unsigned long long)base);
    }
    bus->mmio[bus->mmio_count++] = (struct dev_mmio_range){base, len, fn, opaque};
    return 0;
}

static void dev_bus_log_pio(struct dev_bus *bus, uint16_t port, bool is_write)
{
    unsigned char bit = (unsigned char)(1u << (port % 8));
    if (atomic_fetch_or(&bus->pio_logged[port / 8], bit) & bit)
        return;
    err_warn("unhandled port I/O %s at 0x%x (%s; logged once per port)",
             is_write ? "write" : "read", port, is_write ? "ignored" : "reads all-ones");
}

static void dev_bus_log_mmio(struct dev_bus *bus, uint64_t addr, bool is_write)
{
    bool first = true;
    pthread_mutex_lock(&bus->mmio_log_lock);
    for (unsigned i = 0; i < bus->mmio_logged_count; i++)
        if (bus->mmio_logged[i] == addr)
            first = false;
    if (first && bus->mmio_logged_count < DEV_MMIO_LOGGED_MAX)
        bus->mmio_logged[bus->mmio_logged_count++] = addr;
    else if (first)
        first = false; /* the table is full: stay quiet rather than flood the log */
    pthread_mutex_unlock(&bus->mmio_log_lock);
    if (first)
        err_warn("unhandled MMIO %s at 0x%llx (%s; logged once per address)",
                 is_write ? "write" : "read", (unsigned long long)addr,
                 is_write ? "ignored" : "reads all-ones");
}

enum dev_action dev_bus_pio(struct dev_bus *bus, uint16_t port, unsigned size, bool is_write,
                            uint8_t *data, uint32_t count)
{
    const struct dev_pio_range *dev = NULL;
    for (unsigned i = 0; i < bus->pio_count; i++)
        if (port >= bus->pio[i].base && port - bus->pio[i].base < bus->pio[i].len)
            dev = &bus->pio[i];
    enum dev_action action = DEV_CONTINUE;
    for (uint32_t n = 0; n < count; n++, data += size) {
        uint32_t value = 0;
        if (!dev) {
            dev_bus_log_pio(bus, port, is_write);
            if (!is_write)
                memset(data, 0xff, size);
            continue;
        }
        if (is_write)
            memcpy(&value, data, size);
        if (dev->fn(dev->opaque, port, size, is_write, &value) == DEV_PARK)
            action = DEV_PARK;
        if (!is_write)
            memcpy(data, &value, size);
    }
    return action;
}

enum dev_action dev_bus_mmio(struct dev_bus *bus, uint64_t addr, unsigned len, bool is_write,
                             uint8_t *data)
{
    if (len > 8)
        len = 8;
    for (unsigned i = 0; i < bus->mmio_count; i++) {
        const struct dev_mmio_range *r = &bus->mmio[i];
        if (addr >= r->base && addr - r->base < r->len) {
            uint64_t value = 0;
            if (is_write)
                memcpy(&value, data, len);
            enum dev_action action = r->fn(r->opaque, addr, len, is_write, &value);
            if (!is_write)
                memcpy(data, &value, len);
            return action;
        }
    }
    dev_bus_log_mmio(bus, addr, is_write);
    if (!is_write)
        memset(data, 0xff, len);
    return DEV_CONTINUE;
}
