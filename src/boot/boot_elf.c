#include "boot/boot_elf.h"

#include "boot/boot_protocol.h"
#include "err/err.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

bool boot_elf_has_magic(const uint8_t *data, size_t len)
{
    return len >= SELFMAG && memcmp(data, ELFMAG, SELFMAG) == 0;
}

static bool range_overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

int boot_elf_parse(const uint8_t *data, size_t len, struct boot_elf_image *out)
{
    Elf64_Ehdr eh;

    if (!boot_elf_has_magic(data, len))
        return err_set(-ENOEXEC, "not an ELF file");
    if (len < sizeof(eh))
        return err_set(-ENOEXEC, "truncated ELF header (%zu bytes)", len);
    memcpy(&eh, data, sizeof(eh));
    if (eh.e_ident[EI_CLASS] != ELFCLASS64)
        return err_set(-ENOEXEC, "not an ELF64 file (class %u)", eh.e_ident[EI_CLASS]);
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
        return err_set(-ENOEXEC, "not a little-endian x86-64 ELF (machine %u)", eh.e_machine);
    if (eh.e_type != ET_EXEC)
        return err_set(-ENOEXEC, "not an executable ELF (e_type %u); link it statically",
                       eh.e_type);
    if (eh.e_phentsize != sizeof(Elf64_Phdr))
        return err_set(-ENOEXEC, "unexpected program header size %u", eh.e_phentsize);
    if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
        return err_set(-ENOEXEC, "program headers lie outside the file");

    memset(out, 0, sizeof(*out));
    out->entry = eh.e_entry;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, data + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        if (out->segment_count == BOOT_ELF_MAX_SEGMENTS)
            return err_set(-E2BIG, "more than %d PT_LOAD segments", BOOT_ELF_MAX_SEGMENTS);
        if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
            return err_set(-ENOEXEC, "segment %u: file range lies outside the file", i);
        if (ph.p_filesz > ph.p_memsz)
            return err_set(-ENOEXEC, "segment %u: file size exceeds memory size", i);
        if (ph.p_paddr + ph.p_memsz < ph.p_paddr)
            return err_set(-ENOEXEC, "segment %u: address range wraps around", i);
        struct boot_elf_segment seg = {
            .paddr = ph.p_paddr, .offset = ph.p_offset, .filesz = ph.p_filesz, .memsz = ph.p_memsz};
        for (unsigned j = 0; j < out->segment_count; j++) {
            const struct boot_elf_segment *o = &out->segments[j];
            if (range_overlaps(seg.paddr, seg.memsz, o->paddr, o->memsz))
                return err_set(
                    -ENOEXEC, "segments overlap: [0x%llx, 0x%llx) and [0x%llx, 0x%llx)",
                    (unsigned long long)o->paddr, (unsigned long long)(o->paddr + o->memsz),
                    (unsigned long long)seg.paddr, (unsigned long long)(seg.paddr + seg.memsz));
        }
        out->segments[out->segment_count++] = seg;
    }
    if (out->segment_count == 0)
        return err_set(-ENOEXEC, "no PT_LOAD segment");
    return 0;
}

int boot_elf_check_placement(const struct boot_elf_image *img, const struct mem_region *regions,
                             unsigned region_count)
{
    bool entry_loaded = false;
    for (unsigned i = 0; i < img->segment_count; i++) {
        const struct boot_elf_segment *s = &img->segments[i];
        uint64_t end = s->paddr + s->memsz;
        if (s->paddr < BOOT_PAYLOAD_MIN_GPA)
            return err_set(-ERANGE,
                           "segment [0x%llx, 0x%llx) overlaps tern's boot area below 0x%llx",
                           (unsigned long long)s->paddr, (unsigned long long)end,
                           (unsigned long long)BOOT_PAYLOAD_MIN_GPA);
        bool inside = false;
        for (unsigned r = 0; r < region_count; r++)
            if (s->paddr >= regions[r].gpa && end <= regions[r].gpa + regions[r].size)
                inside = true;
        if (!inside)
            return err_set(-ERANGE, "segment [0x%llx, 0x%llx) lies outside guest RAM",
                           (unsigned long long)s->paddr, (unsigned long long)end);
        if (img->entry >= s->paddr && img->entry < end)
            entry_loaded = true;
    }
    if (!entry_loaded)
        return err_set(-ENOEXEC, "entry point 0x%llx is not inside a loaded segment",
                       (unsigned long long)img->entry);
    return 0;
}

int boot_elf_load(const struct boot_elf_image *img, const uint8_t *data, struct mem *mem)
{
    for (unsigned i = 0; i < img->segment_count; i++) {
        const struct boot_elf_segment *s = &img->segments[i];
        uint8_t *dst = mem_ptr(mem, s->paddr, s->memsz);
        if (!dst)
            return err_set(-ERANGE, "segment at 0x%llx lies outside guest RAM",
                           (unsigned long long)s->paddr);
        memcpy(dst, data + s->offset, s->filesz);
        mem_zero(dst + s->filesz, s->memsz - s->filesz);
    }
    return 0;
}
