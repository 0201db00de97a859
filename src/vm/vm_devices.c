/* The VM's devices: every entry of dev_table, driven through its dev_ops. The VM names none. */
#include "err/err.h"
#include "vm/vm_internal.h"

#include <errno.h>

int vm_devices_create(struct vm *vm, const struct vm_config *cfg)
{
    struct dev_env env = {.loop = vm->loop,
                          .host = &vm->host,
                          .serial_out_fd = cfg->serial_out_fd,
                          .serial_in_fd = cfg->serial_in_fd};
    if (dev_table_count > VM_MAX_DEVICES)
        return err_set(-E2BIG, "%u devices, more than a VM holds (%d)", dev_table_count,
                       VM_MAX_DEVICES);
    for (unsigned i = 0; i < dev_table_count; i++) {
        const struct dev_ops *ops = dev_table[i];
        void *dev = NULL;
        int rc = ops->create(&env, &dev);
        if (rc)
            return err_context(rc, "device %s", ops->name);
        vm->devices[vm->device_count++] = (struct vm_device){.ops = ops, .dev = dev};
        if (ops->attach && (rc = ops->attach(dev, vm->bus)))
            return err_context(rc, "device %s", ops->name);
    }
    return 0;
}

void vm_devices_quiesce(struct vm *vm)
{
    for (unsigned i = 0; i < vm->device_count; i++)
        if (vm->devices[i].ops->quiesce)
            vm->devices[i].ops->quiesce(vm->devices[i].dev);
}

void vm_devices_resume(struct vm *vm)
{
    for (unsigned i = vm->device_count; i-- > 0;)
        if (vm->devices[i].ops->resume)
            vm->devices[i].ops->resume(vm->devices[i].dev);
}

void vm_devices_stop(struct vm *vm)
{
    for (unsigned i = 0; i < vm->device_count; i++)
        if (vm->devices[i].ops->stop)
            vm->devices[i].ops->stop(vm->devices[i].dev);
}

void vm_devices_destroy(struct vm *vm)
{
    for (unsigned i = vm->device_count; i-- > 0;)
        if (vm->devices[i].ops->destroy)
            vm->devices[i].ops->destroy(vm->devices[i].dev);
    vm->device_count = 0;
}

static struct vm_device *vm_device_find(struct vm *vm, const struct dev_ops *ops)
{
    for (unsigned i = 0; i < vm->device_count; i++)
        if (vm->devices[i].ops == ops)
            return &vm->devices[i];
    err_set(-ENODEV, "the VM has no device %s", ops->name);
    return NULL;
}

int vm_device_save(struct vm *vm, const struct dev_ops *ops, uint8_t *buf, size_t *len)
{
    struct vm_device *d = vm_device_find(vm, ops);
    *len = 0;
    if (!d)
        return -ENODEV;
    return ops->save ? ops->save(d->dev, buf, len) : 0;
}

int vm_device_load(struct vm *vm, const struct dev_ops *ops, const uint8_t *buf, size_t len)
{
    struct vm_device *d = vm_device_find(vm, ops);
    if (!d)
        return -ENODEV;
    if (!ops->load)
        return err_set(-EPROTO, "device %s has no state to load", ops->name);
    return ops->load(d->dev, buf, len);
}
