/* mem: guest RAM. One anonymous mapping holds all of it; KVM sees it as one memslot per region,
 * split around the 32-bit MMIO hole [MEM_HOLE_START, 4 GiB) when RAM is larger than the space
 * below the hole. Regions never change after creation; pointers into them stay valid until
 * mem_destroy().
 */
#ifndef TERN_MEM_H
#define TERN_MEM_H

#include <stdbool.h>
#include <stdint.h>

#define MEM_PAGE_SIZE 4096ull
#define MEM_HUGE_PAGE_SIZE (2ull << 20)
#define MEM_HOLE_START 0xc0000000ull  /* 3 GiB: PCI/LAPIC/IOAPIC/firmware live above */
#define MEM_HIGH_START 0x100000000ull /* RAM resumes at 4 GiB */
#define MEM_MAX_REGIONS 2

struct mem_region {
    uint64_t gpa;
    uint64_t size;
    uint64_t offset; /* into the host mapping */
};

struct mem {
    uint8_t *host; /* the whole of guest RAM, regions back to back */
    uint64_t size;
    unsigned region_count;
    struct mem_region regions[MEM_MAX_REGIONS];
    uint64_t *dirty; /* one bit per page, indexed by host offset / 4 KiB; kept once made */
    bool tracking;   /* between mem_dirty_start and mem_dirty_stop */
    int vm_fd;       /* the VM it is registered with (mem_register) */
};

/* Pure: splits "size" bytes of RAM into regions around the hole. size must be a non-zero
 * multiple of MEM_PAGE_SIZE. Returns the number of regions (1 or 2). */
unsigned mem_layout(uint64_t size, struct mem_region out[MEM_MAX_REGIONS]);

/* Maps RAM (host side only), 2 MiB-aligned; huge_pages asks for transparent huge pages. */
int mem_create(uint64_t size, bool huge_pages, struct mem **out);

/* Registers every region with the KVM VM behind vm_fd as a memslot (and keeps vm_fd for dirty
 * tracking). Each registration waits for KVM to publish the new slots, a fixed few
 * milliseconds, so callers may run it beside other setup. */
int mem_register(struct mem *mem, int vm_fd);

void mem_destroy(struct mem *mem);

/* Host pointer for [gpa, gpa+len), or NULL unless that range lies inside one region. */
void *mem_ptr(const struct mem *mem, uint64_t gpa, uint64_t len);

/* Zeroes [p, p+len) of guest RAM. Whole pages are dropped (MADV_DONTNEED on private anonymous
 * memory reads back as zeros), which costs nothing for pages never touched. */
void mem_zero(void *p, uint64_t len);

/* Dirty-page tracking, for live migration.
 *
 * mem_dirty_start() turns on KVM's dirty log for every memslot with
 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (and INITIALLY_SET where offered: then every page starts dirty
 * and KVM write-protects pages only as they are cleared, not all at once). mem_dirty_sync() moves
 * KVM's bits into mem's own bitmap and re-arms them in KVM (GET then CLEAR: a write in between
 * stays dirty in KVM), so a page written after a sync is seen by the next. mem_dirty_mark() adds
 * pages tern itself wrote. Page indexes count 4 KiB pages from the start of the host mapping (see
 * mem_page_gpa). */
int mem_dirty_start(struct mem *mem);
int mem_dirty_sync(struct mem *mem, uint64_t *marked);
void mem_dirty_mark(struct mem *mem, uint64_t gpa, uint64_t len);
/* Finds the next marked page at or after *page, clears its bit; false when there is none. */
bool mem_dirty_next(struct mem *mem, uint64_t *page);
/* The same, looking only below limit. Threads that each take pages from their own 64-page-
 * aligned blocks never touch the same bitmap word. */
bool mem_dirty_next_below(struct mem *mem, uint64_t *page, uint64_t limit);
/* Clears page's mark; true if it was marked. */
bool mem_dirty_take(struct mem *mem, uint64_t page);
int mem_dirty_stop(struct mem *mem);
uint64_t mem_page_gpa(const struct mem *mem, uint64_t page);

/* One past the highest guest-physical RAM address. */
uint64_t mem_top(const struct mem *mem);

#endif
