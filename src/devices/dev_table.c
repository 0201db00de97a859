/* The devices every VM has. A new device is its own file and one line here. */
#include "devices/dev.h"

#include "devices/dev_acpi_pm.h"
#include "devices/dev_rtc.h"
#include "devices/dev_serial.h"
#include "devices/dev_sysport.h"
#include "devices/dev_virtio_blk.h"
#include "devices/dev_virtio_net.h"

const struct dev_ops *const dev_table[] = {
    &dev_serial_ops,     &dev_sysport_ops,    &dev_rtc_ops, &dev_acpi_pm_ops,
    &dev_virtio_blk_ops, &dev_virtio_net_ops,
};
const unsigned dev_table_count = sizeof(dev_table) / sizeof(dev_table[0]);
