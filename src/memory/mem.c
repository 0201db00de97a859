#include "memory/mem.h"

#include "err/err.h"
#include "kvm/kvm_host.h"
#include "kvm/kvm_vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

unsigned mem_layout(uint64_t size, struct mem_region out[MEM_MAX_REGIONS])
{
    if (size <= MEM_HOLE_START) {
        out[0] = (struct mem_region){.gpa = 0, .size = size, .offset = 0};
        return 1;
    }
    out[0] = (struct mem_region){.gpa = 0, .size = MEM_HOLE_START, .offset = 0};
    out[1] = (struct mem_region){
        .gpa = MEM_HIGH_START, .size = size - MEM_HOLE_START, .offset = MEM_HOLE_START};
    return 2;
}

/* An anonymous mapping of size bytes starting on a 2 MiB boundary (the slack either side is
 * unmapped again), so that every 2 MiB of guest RAM can be one huge page. */
static void *mem_map_aligned(uint64_t size)
{
    uint64_t slack = MEM_HUGE_PAGE_SIZE;
    uint8_t *raw = mmap(NULL, size + slack, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return MAP_FAILED;
    uint8_t *host = (uint8_t *)(((uintptr_t)raw + slack - 1) & ~(uintptr_t)(slack - 1));
    if (host > raw)
        munmap(raw, (size_t)(host - raw));
    if (host + size < raw + size + slack)
        munmap(host + size, (size_t)(raw + size + slack - (host + size)));
    return host;
}

int mem_create(uint64_t size, bool huge_pages, struct mem **out)
{
    struct mem *mem = calloc(1, sizeof(*mem));
    if (!mem)
        return err_set(-ENOMEM, "out of memory");
    mem->size = size;
    mem->vm_fd = -1;
    mem->region_count = mem_layout(size, mem->regions);

    /* NORESERVE: guest RAM is touched lazily; untouched pages cost nothing. */
    void *host = mem_map_aligned(size);
    if (host == MAP_FAILED) {
        int rc = -errno;
        free(mem);
        return err_sys(rc, "cannot map %llu bytes of guest RAM", (unsigned long long)size);
    }
    mem->host = host;
    /* Huge pages: a 512th of the faults and TLB misses, for the guest and for a migration's
     * reads and writes alike (an untouched 2 MiB reads as the one huge zero page). KVM's dirty
     * log still tracks 4 KiB pages: it maps huge pages small while logging. A host whose THP is
     * "never" ignores the advice. */
    if (huge_pages)
        madvise(host, size, MADV_HUGEPAGE);
    /* Named so that tools (and scripts/bench-startup.sh) can tell guest RAM from tern's own. */
    prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)host, size, "tern-guest-ram");

    *out = mem;
    return 0;
}

static int mem_register_flags(const struct mem *mem, uint32_t flags)
{
    for (unsigned i = 0; i < mem->region_count; i++) {
        const struct mem_region *r = &mem->regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i,
            .flags = flags,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)(mem->host + r->offset),
        };
        int rc = kvm_vm_set_memory_region(mem->vm_fd, &slot);
        if (rc)
            return rc;
    }
    return 0;
}

int mem_register(struct mem *mem, int vm_fd)
{
    mem->vm_fd = vm_fd;
    return mem_register_flags(mem, 0);
}

void mem_destroy(struct mem *mem)
{
    if (!mem)
        return;
    free(mem->dirty);
    if (mem->host)
        munmap(mem->host, mem->size);
    free(mem);
}

void *mem_ptr(const struct mem *mem, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < mem->region_count; i++) {
        const struct mem_region *r = &mem->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
            return mem->host + r->offset + (gpa - r->gpa);
    }
    return NULL;
}

uint64_t mem_top(const struct mem *mem)
{
    const struct mem_region *last = &mem->regions[mem->region_count - 1];
    return last->gpa + last->size;
}

void mem_zero(void *p, uint64_t len)
{
    const uintptr_t page = MEM_PAGE_SIZE;
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(page - 1);
    if (end <= start || madvise((void *)start, end - start, MADV_DONTNEED) != 0) {
        memset(p, 0, len);
        return;
    }
    memset(p, 0, start - (uintptr_t)p);
    memset((void *)end, 0, (uintptr_t)p + len - end);
}

static uint64_t mem_pages(const struct mem *mem)
{
    return mem->size / MEM_PAGE_SIZE;
}

int mem_dirty_start(struct mem *mem)
{
    const struct kvm_host *host;
    int rc = kvm_host(&host);
    if (rc)
        return rc;
    if (!host->dirty_log)
        return err_set(-ENOTSUP, "host KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
    size_t words = (mem_pages(mem) + 63) / 64;
    if (!mem->dirty && !(mem->dirty = calloc(words, sizeof(uint64_t))))
        return err_set(-ENOMEM, "out of memory for the dirty bitmap");
    memset(mem->dirty, 0, words * sizeof(uint64_t));
    __atomic_store_n(&mem->tracking, true, __ATOMIC_RELEASE);
    uint64_t flags =
        host->dirty_log & (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET);
    if ((rc = kvm_vm_enable_cap(mem->vm_fd, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, flags,
                                "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2")))
        return rc;
    return mem_register_flags(mem, KVM_MEM_LOG_DIRTY_PAGES);
}

int mem_dirty_sync(struct mem *mem, uint64_t *marked)
{
    if (!mem->dirty)
        return err_set(-EINVAL, "dirty tracking is not on");
    for (unsigned i = 0; i < mem->region_count; i++) {
        const struct mem_region *r = &mem->regions[i];
        uint64_t pages = r->size / MEM_PAGE_SIZE;
        /* Region offsets are multiples of 3 GiB, so each region starts on a bitmap word. */
        uint64_t *bits = &mem->dirty[r->offset / MEM_PAGE_SIZE / 64];
        uint64_t words = (pages + 63) / 64;
        uint64_t *got = calloc(words, sizeof(uint64_t));
        if (!got)
            return err_set(-ENOMEM, "out of memory for the dirty log");
        int rc = kvm_vm_get_dirty_log(mem->vm_fd, i, got);
        if (!rc)
            rc = kvm_vm_clear_dirty_log(mem->vm_fd, i, (uint32_t)pages, got);
        for (uint64_t w = 0; w < words && !rc; w++)
            __atomic_fetch_or(&bits[w], got[w], __ATOMIC_RELAXED);
        free(got);
        if (rc)
            return rc;
    }
    uint64_t n = 0;
    for (uint64_t w = 0; w < (mem_pages(mem) + 63) / 64; w++)
        n += (uint64_t)__builtin_popcountll(__atomic_load_n(&mem->dirty[w], __ATOMIC_RELAXED));
    if (marked)
        *marked = n;
    return 0;
}

void mem_dirty_mark(struct mem *mem, uint64_t gpa, uint64_t len)
{
    if (!__atomic_load_n(&mem->tracking, __ATOMIC_ACQUIRE) || !len)
        return;
    for (unsigned i = 0; i < mem->region_count; i++) {
        const struct mem_region *r = &mem->regions[i];
        uint64_t lo = gpa > r->gpa ? gpa : r->gpa;
        uint64_t hi = gpa + len < r->gpa + r->size ? gpa + len : r->gpa + r->size;
        for (uint64_t a = lo & ~(MEM_PAGE_SIZE - 1); a < hi; a += MEM_PAGE_SIZE) {
            uint64_t page = (r->offset + a - r->gpa) / MEM_PAGE_SIZE;
            __atomic_fetch_or(&mem->dirty[page / 64], 1ull << (page % 64), __ATOMIC_RELAXED);
        }
    }
}

bool mem_dirty_next(struct mem *mem, uint64_t *page)
{
    return mem_dirty_next_below(mem, page, mem_pages(mem));
}

bool mem_dirty_next_below(struct mem *mem, uint64_t *page, uint64_t limit)
{
    uint64_t pages = mem_pages(mem) < limit ? mem_pages(mem) : limit;
    for (uint64_t p = *page; p < pages;) {
        uint64_t w = __atomic_load_n(&mem->dirty[p / 64], __ATOMIC_RELAXED) >> (p % 64);
        if (!w) {
            p = (p / 64 + 1) * 64;
            continue;
        }
        p += (uint64_t)__builtin_ctzll(w);
        if (p >= pages)
            break;
        __atomic_fetch_and(&mem->dirty[p / 64], ~(1ull << (p % 64)), __ATOMIC_RELAXED);
        *page = p;
        return true;
    }
    return false;
}

bool mem_dirty_take(struct mem *mem, uint64_t page)
{
    uint64_t bit = 1ull << (page % 64);
    return __atomic_fetch_and(&mem->dirty[page / 64], ~bit, __ATOMIC_RELAXED) & bit;
}

int mem_dirty_stop(struct mem *mem)
{
    /* The bitmap stays until mem_destroy: a device's I/O thread may be marking it right now. */
    __atomic_store_n(&mem->tracking, false, __ATOMIC_RELEASE);
    return mem_register_flags(mem, 0);
}

uint64_t mem_page_gpa(const struct mem *mem, uint64_t page)
{
    uint64_t off = page * MEM_PAGE_SIZE;
    for (unsigned i = 0; i < mem->region_count; i++)
        if (off >= mem->regions[i].offset && off < mem->regions[i].offset + mem->regions[i].size)
            return mem->regions[i].gpa + (off - mem->regions[i].offset);
    return UINT64_MAX;
}
