/* CLinuxIO: Linux file calls that Swift's Glibc module does not export (they are _GNU_SOURCE-only
 * declarations, and syscall(2) is variadic). Used by ContentStore's pack files, MeshPeer's allocator
 * settings and gquic-sim's heap trimming. */
#ifndef GQUIC_CLINUXIO_SHIM_H
#define GQUIC_CLINUXIO_SHIM_H
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Frees the blocks of [offset, offset+length) without changing the file size (FALLOC_FL_PUNCH_HOLE |
 * FALLOC_FL_KEEP_SIZE). Returns 0, or -1 with errno (EOPNOTSUPP where the file system cannot). */
static inline int gq_punch_hole(int fd, long long offset, long long length) {
    return (int)syscall(SYS_fallocate, fd, 0x02 | 0x01, offset, length);
}

/* Starts writeback of a file range without waiting for it (SYNC_FILE_RANGE_WRITE); no durability. */
static inline int gq_start_writeback(int fd, long long offset, long long length) {
    return (int)syscall(SYS_sync_file_range, fd, offset, length, 2u);
}
/* Tells glibc's allocator to keep up to `trim` bytes of freed memory at the top of a heap instead of
 * handing it back to the kernel, to pad heap growth by `pad` bytes, and to take allocations below
 * `mmap_threshold` from the heaps (not from a fresh mmap each time). Returns 1 when all three took. */
static inline int gq_keep_freed_memory(int trim, int pad, int mmap_threshold) {
    return mallopt(M_TRIM_THRESHOLD, trim) && mallopt(M_TOP_PAD, pad) && mallopt(M_MMAP_THRESHOLD, mmap_threshold);
}
/* Hands freed heap pages back to the kernel (malloc_trim(0)); returns 1 if any memory was released. */
static inline int gq_return_freed_memory(void) { return malloc_trim(0); }
/* O_DIRECT (glibc defines __O_DIRECT for every architecture; O_DIRECT itself only under _GNU_SOURCE). */
static inline int gq_o_direct(void) { return __O_DIRECT; }
#endif
