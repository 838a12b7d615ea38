// Memory: large aligned buffers (packed weights, arenas) that may use transparent huge pages, and handing back
// the pages of weights that were packed elsewhere, so that a loaded model does not hold both copies.
#define _DEFAULT_SOURCE 1  // madvise, MAP_ANONYMOUS
#include "CKilnKernels.h"

#include <stdlib.h>

#if defined(__linux__)
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KILN_HUGE_PAGE ((size_t)2 << 20)

void *kiln_large_alloc(size_t bytes) {
    if (bytes == 0) bytes = 1;
    if (bytes < 2 * KILN_HUGE_PAGE) {
        void *p = NULL;
        return posix_memalign(&p, 64, (bytes + 63) / 64 * 64) == 0 ? p : NULL;
    }
    // Map one huge page more than needed, then trim to a 2 MiB-aligned start: every whole 2 MiB inside can then
    // be a huge page (fewer page faults while packing, fewer TLB misses while running). The tail keeps small
    // pages, so nothing past `bytes` is ever touched or counted.
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t length = (bytes + page - 1) / page * page;
    char *raw = mmap(NULL, length + KILN_HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *start = (char *)(((uintptr_t)raw + KILN_HUGE_PAGE - 1) & ~(uintptr_t)(KILN_HUGE_PAGE - 1));
    if (start > raw) munmap(raw, (size_t)(start - raw));
    const size_t after = (size_t)(raw + length + KILN_HUGE_PAGE - (start + length));
    if (after > 0) munmap(start + length, after);
#ifdef MADV_HUGEPAGE
    madvise(start, length, MADV_HUGEPAGE);
#endif
    return start;
}

void kiln_large_free(void *pointer, size_t bytes) {
    if (!pointer) return;
    if (bytes == 0) bytes = 1;
    if (bytes < 2 * KILN_HUGE_PAGE) {
        free(pointer);
        return;
    }
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap(pointer, (bytes + page - 1) / page * page);
}

// Reads /proc/self/maps (lines ascending by address); 1 when [start, end) lies inside one read-only, file-backed
// mapping, whose bounds go to *lo and *hi. Parsed by hand: this runs once per packed tensor while a model loads.
static int find_readonly_file_mapping(uintptr_t start, uintptr_t end, uintptr_t *lo_out, uintptr_t *hi_out) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buffer[16384];
    size_t used = 0;
    int result = 0, done = 0;
    while (!done) {
        ssize_t got = read(fd, buffer + used, sizeof buffer - 1 - used);
        if (got <= 0) break;
        used += (size_t)got;
        buffer[used] = 0;
        char *line = buffer;
        for (;;) {
            char *newline = strchr(line, '\n');
            if (!newline) break;  // incomplete line: keep it for the next read
            *newline = 0;
            char *p = line;
            uintptr_t lo = (uintptr_t)strtoull(p, &p, 16);
            uintptr_t hi = *p == '-' ? (uintptr_t)strtoull(p + 1, &p, 16) : 0;
            if (start >= lo && start < hi) {
                // "lo-hi perms offset dev inode path"
                char perms[5] = {0};
                while (*p == ' ') p++;
                for (int i = 0; i < 4 && p[i]; i++) perms[i] = p[i];
                p += 4;
                strtoull(p, &p, 16);          // offset
                while (*p == ' ') p++;
                while (*p && *p != ' ') p++;  // dev
                unsigned long long inode = strtoull(p, &p, 10);
                result = end <= hi && perms[0] == 'r' && perms[1] == '-' && inode != 0;
                *lo_out = lo;
                *hi_out = hi;
                done = 1;
                break;
            }
            if (lo > start) {
                done = 1;
                break;
            }
            line = newline + 1;
        }
        const size_t rest = used - (size_t)(line - buffer);
        memmove(buffer, line, rest);
        used = rest;
        if (used == sizeof buffer - 1) break;  // a line longer than the buffer: give up (no release)
    }
    close(fd);
    return result;
}

int kiln_is_readonly_file_mapping(const void *pointer, size_t bytes) {
    const uintptr_t start = (uintptr_t)pointer, end = start + bytes;
    uintptr_t lo, hi;
    if (bytes == 0 || end < start) return 0;
    return find_readonly_file_mapping(start, end, &lo, &hi);
}

int kiln_release_file_pages(const void *pointer, size_t bytes) {
    const uintptr_t start = (uintptr_t)pointer, end = start + bytes;
    uintptr_t lo, hi;
    if (bytes == 0 || end < start || !find_readonly_file_mapping(start, end, &lo, &hi)) return 0;
    // Whole huge pages around the range, within the mapping: the page cache may hold the file in 2 MiB folios
    // mapped by one page-table entry, which a partial range would leave in place. What else lies in those
    // pages stays readable like the rest (a later read maps it again).
    uintptr_t first = start & ~(uintptr_t)(KILN_HUGE_PAGE - 1), last = (end + KILN_HUGE_PAGE - 1) & ~(uintptr_t)(KILN_HUGE_PAGE - 1);
    if (first < lo) first = lo;
    if (last > hi) last = hi;
    return madvise((void *)first, last - first, MADV_DONTNEED) == 0;
}
#else
void *kiln_large_alloc(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, 64, (bytes + 63) / 64 * 64 + 64) == 0 ? p : NULL;
}

void kiln_large_free(void *pointer, size_t bytes) {
    (void)bytes;
    free(pointer);
}

int kiln_is_readonly_file_mapping(const void *pointer, size_t bytes) {
    (void)pointer;
    (void)bytes;
    return 0;
}

int kiln_release_file_pages(const void *pointer, size_t bytes) {
    (void)pointer;
    (void)bytes;
    return 0;
}
#endif
