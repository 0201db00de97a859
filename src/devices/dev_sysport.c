#include "devices/dev_sysport.h"

#include "boot/boot_protocol.h"

#include <time.h>

#define I8042_DATA 0x60
#define I8042_COMMAND 0x64
#define I8042_CMD_RESET 0xfe

static enum dev_action sysport_pio(void *opaque, uint16_t port, unsigned size, bool is_write,
                                   uint32_t *value)
{
    const struct dev_host *host = opaque;
    if (!is_write) {
        *value = 0xffffffffu;
        return DEV_CONTINUE;
    }
    if (port == BOOT_PORT_IDLE) {
        /* Gives the host CPU away for a while: the only way a CPL3 test guest can wait
         * without spinning. Capped so that a pause request is never held up for long. */
        uint32_t us = *value < BOOT_IDLE_MAX_US ? *value : BOOT_IDLE_MAX_US;
        struct timespec ts = {0, (long)us * 1000};
        nanosleep(&ts, NULL);
        return DEV_CONTINUE;
    }
    if (port == BOOT_PORT_EXIT) {
        uint32_t code = *value;
        if (size < 4)
            code &= (1u << (size * 8)) - 1;
        host->request_end(host->opaque, DEV_END_EXIT_CODE, code);
    }
    /* The vCPU that ended the VM has nothing left to do either. */
    return DEV_PARK;
}

static enum dev_action i8042_pio(void *opaque, uint16_t port, unsigned size, bool is_write,
                                 uint32_t *value)
{
    const struct dev_host *host = opaque;
    (void)size;
    if (!is_write) {
        *value = 0; /* status: output buffer empty, input buffer empty */
        return DEV_CONTINUE;
    }
    if (port == I8042_COMMAND && (uint8_t)*value == I8042_CMD_RESET) {
        host->request_end(host->opaque, DEV_END_RESET, 0);
        return DEV_PARK;
    }
    return DEV_CONTINUE;
}

/* Stateless: the device is the VM's host interface itself. */
static int sysport_create(const struct dev_env *env, void **dev)
{
    *dev = (void *)env->host;
    return 0;
}

static int sysport_attach(void *dev, struct dev_bus *bus)
{
    int rc = dev_bus_add_pio(bus, BOOT_PORT_EXIT, 3, sysport_pio, dev);
    if (!rc)
        rc = dev_bus_add_pio(bus, I8042_DATA, 1, i8042_pio, dev);
    if (!rc)
        rc = dev_bus_add_pio(bus, I8042_COMMAND, 1, i8042_pio, dev);
    return rc;
}

const struct dev_ops dev_sysport_ops = {
    .name = "sysport",
    .create = sysport_create,
    .attach = sysport_attach,
};
