#include "vdev.h"

#define CFG_ADDR 0xcf8
#define CFG_DATA 0xcfc

static uint64_t vdev_next;

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

uint32_t vdev_cfg_read(unsigned slot, unsigned off)
{
    rt_outl(CFG_ADDR, 0x80000000u | slot << 11 | (off & 0xfc));
    return inl(CFG_DATA);
}

void vdev_cfg_write(unsigned slot, unsigned off, uint32_t v)
{
    rt_outl(CFG_ADDR, 0x80000000u | slot << 11 | (off & 0xfc));
    rt_outl(CFG_DATA, v);
}

static void vdev_caps(struct vdev *d)
{
    unsigned cap = vdev_cfg_read(d->slot, 0x34) & 0xff;
    for (unsigned n = 0; cap && n < 48; n++) {
        uint32_t w0 = vdev_cfg_read(d->slot, cap);
        uint8_t id = w0 & 0xff, type = (w0 >> 24) & 0xff;
        if (id == 0x11)
            d->msix_cap = cap;
        if (id == 0x09) {
            uint32_t off = vdev_cfg_read(d->slot, cap + 8);
            volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)(d->bar + off);
            if (type == 1)
                d->common = p;
            else if (type == 2)
                d->notify = p, d->notify_mult = vdev_cfg_read(d->slot, cap + 16);
            else if (type == 3)
                d->isr = p;
            else if (type == 4)
                d->devcfg = p;
        }
        cap = (w0 >> 8) & 0xff;
    }
}

int vdev_find(uint16_t pci_device, uint64_t bar, struct vdev *d, const char *who)
{
    *d = (struct vdev){.bar = bar};
    unsigned slot = 0;
    while (slot < 32 && vdev_cfg_read(slot, 0) != ((uint32_t)pci_device << 16 | 0x1af4u))
        slot++;
    if (slot == 32) {
        rt_printf("%s: no PCI device 1af4:%x\n", who, pci_device);
        return -1;
    }
    d->slot = slot;
    /* ECAM (the MCFG's 0xe0000000, bus 0) shows the same function as the config ports. */
    volatile uint32_t *ecam = (volatile uint32_t *)(uintptr_t)(0xe0000000u + (slot << 15));
    if (ecam[0] != vdev_cfg_read(slot, 0) || ecam[0x34 / 4] != vdev_cfg_read(slot, 0x34)) {
        rt_printf("%s: ECAM reads 0x%x, the config ports 0x%x\n", who, ecam[0],
                  vdev_cfg_read(slot, 0));
        return -1;
    }
    uint64_t old = vdev_cfg_read(slot, 0x10) | (uint64_t)vdev_cfg_read(slot, 0x14) << 32;
    vdev_cfg_write(slot, 0x10, (uint32_t)bar);
    vdev_cfg_write(slot, 0x14, (uint32_t)(bar >> 32));
    vdev_cfg_write(slot, 0x04, vdev_cfg_read(slot, 0x04) | 0x6); /* memory, bus master */
    rt_printf("%s: device in slot %u (ECAM agrees), BAR0 0x%lx moved to 0x%lx\n", who, slot,
              (uint64_t)(old & ~0xfull), bar);
    vdev_caps(d);
    if (!d->common || !d->notify || !d->isr || !d->devcfg) {
        rt_printf("%s: a virtio capability is missing\n", who);
        return -1;
    }
    return 0;
}

uint64_t vdev_negotiate(struct vdev *d, uint64_t want)
{
    R8(d->common, 20) = 0;
    while (R8(d->common, 20) != 0)
        rt_pause();
    R8(d->common, 20) = 1 | 2;
    R32(d->common, 0) = 0;
    uint64_t f = R32(d->common, 4);
    R32(d->common, 0) = 1;
    f |= (uint64_t)R32(d->common, 4) << 32;
    uint64_t take = f & want;
    R32(d->common, 8) = 0;
    R32(d->common, 12) = (uint32_t)take;
    R32(d->common, 8) = 1;
    R32(d->common, 12) = (uint32_t)(take >> 32);
    R8(d->common, 20) = 1 | 2 | 8;
    return R8(d->common, 20) & 8 ? take : ~0ull;
}

uint16_t vdev_queue(struct vdev *d, unsigned q, uint16_t size, const void *desc,
                    const volatile void *avail, const volatile void *used, uint16_t vector)
{
    R16(d->common, 22) = (uint16_t)q;
    uint16_t max = R16(d->common, 24);
    if (size > max)
        size = max;
    R16(d->common, 24) = size;
    R64(d->common, 32) = (uint64_t)(uintptr_t)desc;
    R64(d->common, 40) = (uint64_t)(uintptr_t)avail;
    R64(d->common, 48) = (uint64_t)(uintptr_t)used;
    R16(d->common, 26) = vector;
    if (q < 8)
        d->notify_off[q] = R16(d->common, 30);
    R16(d->common, 28) = 1;
    return size;
}

void vdev_notify(struct vdev *d, unsigned q)
{
    R16(d->notify, (q < 8 ? d->notify_off[q] : 0) * d->notify_mult) = (uint16_t)q;
}

void vdev_driver_ok(struct vdev *d)
{
    R8(d->common, 20) = 1 | 2 | 8 | 4;
}

void vdev_alloc_init(uint64_t start)
{
    vdev_next = start;
}

void *vdev_alloc(uint64_t bytes, uint64_t align)
{
    vdev_next = (vdev_next + align - 1) & ~(align - 1);
    void *p = (void *)(uintptr_t)vdev_next;
    vdev_next += bytes;
    return p;
}

void vdev_fill(void *p, uint8_t v, uint64_t n)
{
    volatile uint8_t *b = p;
    for (uint64_t i = 0; i < n; i++)
        b[i] = v;
}
