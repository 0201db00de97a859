/* The VM's devices: every entry of dev_table, driven through its dev_ops. The VM names none. */
#include "err/err.h"
#include "vm/vm_internal.h"

#include <errno.h>

int vm_devices_create(struct vm *vm, const struct vm_config *cfg)
{
    struct dev_env env = {.loop = vm->loop,
                          .host = &vm->host,
                          .pci = vm->pci,
                          .serial_out_fd = cfg->serial_out_fd,
                          .serial_in_fd = cfg->serial_in_fd,
                          .disks = vm->disks,
                          .disk_count = vm->disk_count,
                          .nets = vm->nets,
                          .net_count = vm->net_count};
    for (unsigned i = 0; i < dev_table_count; i++) {
        const struct dev_ops *ops = dev_table[i];
        unsigned n = ops->instances ? ops->instances(&env) : 1;
        for (env.instance = 0; env.instance < n; env.instance++) {
            if (vm->device_count == VM_MAX_DEVICES)
                return err_set(-E2BIG, "more devices than a VM holds (%d)", VM_MAX_DEVICES);
            void *dev = NULL;
            int rc = ops->create(&env, &dev);
            if (rc) /* a device of many instances names the one at fault (a disk, its flag) */
                return ops->instances ? rc : err_context(rc, "device %s", ops->name);
            vm->devices[vm->device_count++] =
                (struct vm_device){.ops = ops, .dev = dev, .instance = env.instance};
            if (ops->attach && (rc = ops->attach(dev, vm->bus)))
                return err_context(rc, "device %s", ops->name);
        }
    }
    return 0;
}

unsigned vm_disks(const struct vm *vm, const struct dev_disk **out)
{
    *out = vm->disks;
    return vm->disk_count;
}

unsigned vm_nets(const struct vm *vm, const struct dev_net **out)
{
    *out = vm->nets;
    return vm->net_count;
}

int vm_devices_claim(struct vm *vm)
{
    for (unsigned i = 0; i < vm->device_count; i++) {
        const struct dev_ops *ops = vm->devices[i].ops;
        int rc = ops->claim ? ops->claim(vm->devices[i].dev) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

void vm_release(struct vm *vm)
{
    for (unsigned i = 0; i < vm->device_count; i++)
        if (vm->devices[i].ops->release)
            vm->devices[i].ops->release(vm->devices[i].dev);
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

static struct vm_device *vm_device_find(struct vm *vm, const struct dev_ops *ops, unsigned instance)
{
    for (unsigned i = 0; i < vm->device_count; i++)
        if (vm->devices[i].ops == ops && vm->devices[i].instance == instance)
            return &vm->devices[i];
    err_set(-ENODEV, "the VM has no device %s %u", ops->name, instance);
    return NULL;
}

unsigned vm_device_instances(struct vm *vm, const struct dev_ops *ops)
{
    unsigned n = 0;
    for (unsigned i = 0; i < vm->device_count; i++)
        n += vm->devices[i].ops == ops;
    return n;
}

int vm_device_save(struct vm *vm, const struct dev_ops *ops, unsigned instance, uint8_t *buf,
                   size_t *len)
{
    struct vm_device *d = vm_device_find(vm, ops, instance);
    *len = 0;
    if (!d)
        return -ENODEV;
    return ops->save ? ops->save(d->dev, buf, len) : 0;
}

int vm_device_load(struct vm *vm, const struct dev_ops *ops, unsigned instance, const uint8_t *buf,
                   size_t len)
{
    struct vm_device *d = vm_device_find(vm, ops, instance);
    if (!d)
        return -ENODEV;
    if (!ops->load)
        return err_set(-EPROTO, "device %s has no state to load", ops->name);
    return ops->load(d->dev, buf, len);
}
