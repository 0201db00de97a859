#include "memory/mem.h"

#include "err/err.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

int mem_create(uint64_t size, struct mem **out)
{
    struct mem *mem = calloc(1, sizeof(*mem));
    if (!mem)
        return err_set(-ENOMEM, "out of memory");
    mem->size = size;
    mem->region_count = mem_layout(size, mem->regions);

    /* NORESERVE: guest RAM is touched lazily; untouched pages cost nothing. */
    void *host = mmap(NULL, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) {
        int rc = -errno;
        free(mem);
        return err_sys(rc, "cannot map %llu bytes of guest RAM", (unsigned long long)size);
    }
    mem->host = host;
    /* Named so that tools (and scripts/bench-startup.sh) can tell guest RAM from tern's own. */
    prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)host, size, "tern-guest-ram");

    *out = mem;
    return 0;
}

int mem_register(const struct mem *mem, int vm_fd)
{
    for (unsigned i = 0; i < mem->region_count; i++) {
        const struct mem_region *r = &mem->regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)(mem->host + r->offset),
        };
        if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
            return err_sys(-errno, "KVM_SET_USER_MEMORY_REGION (slot %u, %llu bytes at 0x%llx)", i,
                           (unsigned long long)r->size, (unsigned long long)r->gpa);
    }
    return 0;
}

void mem_destroy(struct mem *mem)
{
    if (!mem)
        return;
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
