/* The PCI host bridge: config mechanism #1, ECAM, BAR placement and BAR dispatch (pci.h). */
#include "pci/pci.h"

#include "err/err.h"
#include "le/le.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PCI_CONF1_ADDR 0xcf8
#define PCI_CONF1_ENABLE 0x80000000u
#define PCI_CAP_START 0x40u
#define PCI_CAP_END 0x100u /* capabilities live in the 256-byte legacy space */

struct pci_fn {
    struct pci_bus *bus;
    unsigned slot;
    struct pci_fn_info info;
    const struct pci_fn_ops *ops;
    void *opaque;
    unsigned cap_next; /* where the next capability goes */
    unsigned cap_last; /* offset of the last capability's next pointer; 0: none yet */
    uint64_t bar_addr[PCI_BARS];
    bool bar_on[PCI_BARS];
    uint8_t cfg[PCI_CFG_SIZE];
    uint8_t wmask[PCI_CFG_SIZE];
};

struct pci_bus {
    pthread_mutex_t lock;
    uint32_t conf1_addr;
    uint64_t mmio32_next, mmio64_base, mmio64_next;
    struct pci_fn *fns[PCI_MAX_SLOTS];
};

uint64_t pci_mmio64_base(uint64_t mem_top)
{
    uint64_t top = mem_top > (4ull << 30) ? mem_top : (4ull << 30);
    return (top + (1ull << 30) - 1) & ~((1ull << 30) - 1);
}

void pci_config_merge(uint8_t *cfg, const uint8_t *wmask, unsigned off, unsigned size, uint32_t v)
{
    for (unsigned i = 0; i < size && off + i < PCI_CFG_SIZE; i++) {
        uint8_t b = (uint8_t)(v >> (8 * i));
        cfg[off + i] = (uint8_t)((cfg[off + i] & ~wmask[off + i]) | (b & wmask[off + i]));
    }
}

/* ---- BARs ----------------------------------------------------------------------------------- */

static uint64_t pci_bar_read(const struct pci_fn *fn, unsigned bar)
{
    uint64_t v = le_get32(fn->cfg + PCI_BAR0 + 4 * bar) & ~0xfull;
    if (fn->info.bar_kind[bar] == PCI_BAR_MEM64)
        v |= (uint64_t)le_get32(fn->cfg + PCI_BAR0 + 4 * (bar + 1)) << 32;
    return v;
}

/* Recomputes where each BAR decodes and tells the device what changed. Under the lock. */
static void pci_bars_update(struct pci_fn *fn)
{
    bool mem_on = le_get16(fn->cfg + PCI_COMMAND) & PCI_CMD_MEMORY;
    for (unsigned b = 0; b < PCI_BARS; b++) {
        if (fn->info.bar_kind[b] == PCI_BAR_NONE)
            continue;
        uint64_t addr = pci_bar_read(fn, b);
        /* A BAR being sized reads as its mask, all ones above the size: not an address. */
        uint64_t size = fn->info.bar_size[b];
        bool sizing = (addr | (size - 1) | 0xf) ==
                      (fn->info.bar_kind[b] == PCI_BAR_MEM64 ? UINT64_MAX : 0xffffffffull);
        bool on = mem_on && addr != 0 && !sizing;
        if (on == fn->bar_on[b] && addr == fn->bar_addr[b])
            continue;
        fn->bar_on[b] = on;
        fn->bar_addr[b] = addr;
        if (fn->ops->bar_moved)
            fn->ops->bar_moved(fn->opaque, b, addr, on);
    }
}

static int pci_bar_place(struct pci_bus *pci, struct pci_fn *fn, unsigned b)
{
    uint64_t size = fn->info.bar_size[b];
    enum pci_bar_kind kind = fn->info.bar_kind[b];
    if (size < 16 || (size & (size - 1)) || (kind == PCI_BAR_MEM64 && b + 1 >= PCI_BARS))
        return err_set(-EINVAL, "PCI slot %u: BAR %u of %llu bytes is not a power of two >= 16",
                       fn->slot, b, (unsigned long long)size);
    uint64_t *next = kind == PCI_BAR_MEM64 ? &pci->mmio64_next : &pci->mmio32_next;
    uint64_t end = kind == PCI_BAR_MEM64 ? pci->mmio64_base + PCI_MMIO64_SIZE : PCI_ECAM_BASE;
    uint64_t addr = (*next + size - 1) & ~(size - 1);
    if (addr + size > end)
        return err_set(-ENOSPC, "PCI slot %u: no room for BAR %u (%llu bytes) in its window",
                       fn->slot, b, (unsigned long long)size);
    *next = addr + size;
    uint64_t mask = ~(size - 1);
    le_put32(fn->cfg + PCI_BAR0 + 4 * b, (uint32_t)addr | (kind == PCI_BAR_MEM64 ? 0x4u : 0));
    le_put32(fn->wmask + PCI_BAR0 + 4 * b, (uint32_t)mask & ~0xfu);
    if (kind == PCI_BAR_MEM64) {
        le_put32(fn->cfg + PCI_BAR0 + 4 * (b + 1), (uint32_t)(addr >> 32));
        le_put32(fn->wmask + PCI_BAR0 + 4 * (b + 1), 0xffffffffu);
    }
    return 0;
}

/* ---- functions ------------------------------------------------------------------------------ */

int pci_fn_add(struct pci_bus *pci, const struct pci_fn_info *info, const struct pci_fn_ops *ops,
               void *opaque, struct pci_fn **out)
{
    unsigned slot = 0;
    while (slot < PCI_MAX_SLOTS && pci->fns[slot])
        slot++;
    if (slot == PCI_MAX_SLOTS)
        return err_set(-ENOSPC, "the PCI bus has no free slot (%u in use)", PCI_MAX_SLOTS);
    struct pci_fn *fn = calloc(1, sizeof(*fn));
    if (!fn)
        return err_set(-ENOMEM, "out of memory");
    *fn = (struct pci_fn){.bus = pci,
                          .slot = slot,
                          .info = *info,
                          .ops = ops,
                          .opaque = opaque,
                          .cap_next = PCI_CAP_START};
    le_put16(fn->cfg + PCI_VENDOR_ID, info->vendor);
    le_put16(fn->cfg + PCI_DEVICE_ID, info->device);
    le_put32(fn->cfg + PCI_REVISION, (info->class_code & 0xffffff) << 8 | info->revision);
    le_put16(fn->cfg + PCI_SUBSYS_VENDOR, info->subsys_vendor);
    le_put16(fn->cfg + PCI_SUBSYS_ID, info->subsys);
    le_put16(fn->wmask + PCI_COMMAND,
             PCI_CMD_IO | PCI_CMD_MEMORY | PCI_CMD_MASTER | PCI_CMD_INTX_DISABLE);
    fn->wmask[PCI_INT_LINE] = 0xff;
    bool has_bars = false;
    for (unsigned b = 0; b < PCI_BARS; b++) {
        if (info->bar_kind[b] == PCI_BAR_NONE)
            continue;
        int rc = pci_bar_place(pci, fn, b);
        if (rc) {
            free(fn);
            return rc;
        }
        has_bars = true;
        if (info->bar_kind[b] == PCI_BAR_MEM64)
            b++;
    }
    if (has_bars) { /* an interrupt pin for the devices (the host bridge has none) */
        fn->cfg[PCI_INT_PIN] = 1;
        fn->cfg[PCI_INT_LINE] = (uint8_t)pci_fn_gsi(fn);
    }
    pthread_mutex_lock(&pci->lock);
    pci->fns[slot] = fn;
    pthread_mutex_unlock(&pci->lock);
    *out = fn;
    return 0;
}

unsigned pci_fn_slot(const struct pci_fn *fn)
{
    return fn->slot;
}

unsigned pci_fn_gsi(const struct pci_fn *fn)
{
    return PCI_IRQ_BASE + fn->slot % 4;
}

uint8_t *pci_fn_config(struct pci_fn *fn)
{
    return fn->cfg;
}

unsigned pci_fn_cap(struct pci_fn *fn, uint8_t id, const uint8_t *body, const uint8_t *wmask_body,
                    unsigned len)
{
    unsigned off = (fn->cap_next + 3) & ~3u;
    if (len < 2 || off + len > PCI_CAP_END)
        return 0;
    fn->cfg[off] = id;
    fn->cfg[off + 1] = 0;
    memcpy(fn->cfg + off + 2, body, len - 2);
    if (wmask_body)
        memcpy(fn->wmask + off + 2, wmask_body, len - 2);
    if (fn->cap_last)
        fn->cfg[fn->cap_last] = (uint8_t)off;
    else
        fn->cfg[PCI_CAP_PTR] = (uint8_t)off;
    le_put16(fn->cfg + PCI_STATUS, le_get16(fn->cfg + PCI_STATUS) | PCI_STATUS_CAP_LIST);
    fn->cap_last = off + 1;
    fn->cap_next = off + len;
    return off;
}

uint64_t pci_fn_bar_addr(const struct pci_fn *fn, unsigned bar, bool *enabled)
{
    pthread_mutex_lock(&fn->bus->lock);
    uint64_t a = fn->bar_addr[bar];
    if (enabled)
        *enabled = fn->bar_on[bar];
    pthread_mutex_unlock(&fn->bus->lock);
    return a;
}

void pci_fn_save(struct pci_fn *fn, uint8_t *out)
{
    pthread_mutex_lock(&fn->bus->lock);
    memcpy(out, fn->cfg, PCI_CFG_SIZE);
    pthread_mutex_unlock(&fn->bus->lock);
}

int pci_fn_load(struct pci_fn *fn, const uint8_t *in)
{
    /* Only what the guest could have written is taken: IDs, capabilities' layout and every
     * read-only bit stay the device's own, whatever a stream says. */
    pthread_mutex_lock(&fn->bus->lock);
    for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
        fn->cfg[i] = (uint8_t)((fn->cfg[i] & ~fn->wmask[i]) | (in[i] & fn->wmask[i]));
    pci_bars_update(fn);
    pthread_mutex_unlock(&fn->bus->lock);
    return 0;
}

/* ---- config access ------------------------------------------------------------------------- */

static uint32_t pci_config_read(struct pci_bus *pci, unsigned slot, unsigned func, unsigned off,
                                unsigned size)
{
    uint32_t v = 0xffffffffu;
    pthread_mutex_lock(&pci->lock);
    struct pci_fn *fn = slot < PCI_MAX_SLOTS && func == 0 ? pci->fns[slot] : NULL;
    if (fn && off + size <= PCI_CFG_SIZE) {
        v = 0;
        for (unsigned i = 0; i < size; i++)
            v |= (uint32_t)fn->cfg[off + i] << (8 * i);
    }
    pthread_mutex_unlock(&pci->lock);
    return v;
}

static void pci_config_write(struct pci_bus *pci, unsigned slot, unsigned func, unsigned off,
                             unsigned size, uint32_t v)
{
    pthread_mutex_lock(&pci->lock);
    struct pci_fn *fn = slot < PCI_MAX_SLOTS && func == 0 ? pci->fns[slot] : NULL;
    if (fn && off + size <= PCI_CFG_SIZE) {
        pci_config_merge(fn->cfg, fn->wmask, off, size, v);
        if (off < PCI_BAR0 + 4 * PCI_BARS && off + size > PCI_COMMAND)
            pci_bars_update(fn);
        if (fn->ops->config_written)
            fn->ops->config_written(fn->opaque, off, size);
    }
    pthread_mutex_unlock(&pci->lock);
}

static enum dev_action pci_conf1(void *opaque, uint16_t port, unsigned size, bool is_write,
                                 uint32_t *value)
{
    struct pci_bus *pci = opaque;
    if (port == PCI_CONF1_ADDR && size == 4) {
        if (is_write)
            __atomic_store_n(&pci->conf1_addr, *value, __ATOMIC_RELAXED);
        else
            *value = __atomic_load_n(&pci->conf1_addr, __ATOMIC_RELAXED);
        return DEV_CONTINUE;
    }
    uint32_t a = __atomic_load_n(&pci->conf1_addr, __ATOMIC_RELAXED);
    unsigned data_off = port - (PCI_CONF1_ADDR + 4);
    bool valid = port >= PCI_CONF1_ADDR + 4 && (a & PCI_CONF1_ENABLE) && ((a >> 16) & 0xff) == 0 &&
                 data_off + size <= 4;
    unsigned off = (a & 0xfc) + data_off;
    if (!valid) {
        if (!is_write)
            *value = size == 4 ? 0xffffffffu : (1u << (8 * size)) - 1;
        return DEV_CONTINUE;
    }
    if (is_write)
        pci_config_write(pci, (a >> 11) & 0x1f, (a >> 8) & 7, off, size, *value);
    else
        *value = pci_config_read(pci, (a >> 11) & 0x1f, (a >> 8) & 7, off, size);
    return DEV_CONTINUE;
}

static enum dev_action pci_ecam(void *opaque, uint64_t addr, unsigned size, bool is_write,
                                uint64_t *value)
{
    struct pci_bus *pci = opaque;
    uint64_t off = addr - PCI_ECAM_BASE;
    unsigned reg = off & 0xfff;
    bool valid = size <= 4 && (reg & (size - 1)) == 0;
    if (!valid) {
        if (!is_write)
            *value = UINT64_MAX;
        return DEV_CONTINUE;
    }
    unsigned slot = (off >> 15) & 0x1f, func = (off >> 12) & 7;
    if (is_write)
        pci_config_write(pci, slot, func, reg, size, (uint32_t)*value);
    else
        *value = pci_config_read(pci, slot, func, reg, size);
    return DEV_CONTINUE;
}

/* ---- BAR windows ---------------------------------------------------------------------------- */

static enum dev_action pci_window(void *opaque, uint64_t addr, unsigned size, bool is_write,
                                  uint64_t *value)
{
    struct pci_bus *pci = opaque;
    struct pci_fn *hit = NULL;
    unsigned bar = 0;
    uint64_t off = 0;
    pthread_mutex_lock(&pci->lock);
    for (unsigned s = 0; s < PCI_MAX_SLOTS && !hit; s++) {
        struct pci_fn *fn = pci->fns[s];
        for (unsigned b = 0; fn && b < PCI_BARS; b++)
            if (fn->bar_on[b] && addr >= fn->bar_addr[b] &&
                addr - fn->bar_addr[b] < fn->info.bar_size[b]) {
                hit = fn, bar = b, off = addr - fn->bar_addr[b];
                break;
            }
    }
    pthread_mutex_unlock(&pci->lock);
    if (hit && off + size <= hit->info.bar_size[bar])
        return hit->ops->bar_access(hit->opaque, bar, off, size, is_write, value);
    if (!is_write)
        *value = UINT64_MAX;
    return DEV_CONTINUE;
}

int pci_bus_create(struct dev_bus *bus, uint64_t mmio64_base, struct pci_bus **out)
{
    struct pci_bus *pci = calloc(1, sizeof(*pci));
    if (!pci)
        return err_set(-ENOMEM, "out of memory");
    pthread_mutex_init(&pci->lock, NULL);
    pci->mmio32_next = PCI_MMIO32_BASE;
    pci->mmio64_base = pci->mmio64_next = mmio64_base;
    int rc = dev_bus_add_pio(bus, PCI_CONF1_ADDR, 8, pci_conf1, pci);
    if (!rc)
        rc = dev_bus_add_mmio(bus, PCI_ECAM_BASE, PCI_ECAM_SIZE, pci_ecam, pci);
    if (!rc)
        rc = dev_bus_add_mmio(bus, PCI_MMIO32_BASE, PCI_MMIO32_SIZE, pci_window, pci);
    if (!rc)
        rc = dev_bus_add_mmio(bus, mmio64_base, PCI_MMIO64_SIZE, pci_window, pci);
    /* The host bridge itself, at 00.0, as every PC has it. */
    static const struct pci_fn_ops bridge_ops = {0};
    struct pci_fn_info bridge = {.vendor = 0x1b36, .device = 0x0008, .class_code = 0x060000};
    struct pci_fn *fn;
    if (!rc)
        rc = pci_fn_add(pci, &bridge, &bridge_ops, NULL, &fn);
    if (rc) {
        pci_bus_destroy(pci);
        return err_context(rc, "PCI host bridge");
    }
    *out = pci;
    return 0;
}

void pci_bus_destroy(struct pci_bus *pci)
{
    if (!pci)
        return;
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++)
        free(pci->fns[s]);
    pthread_mutex_destroy(&pci->lock);
    free(pci);
}
