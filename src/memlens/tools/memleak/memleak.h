/* SPDX-License-Identifier: GPL-2.0 */
/* memleak: map values shared with Python (layouts read from this object's BTF). */
#ifndef __MEMLEAK_H
#define __MEMLEAK_H

/* What allocated a block.  User-mode kinds arrive as the uprobe's BPF cookie, so one
 * program serves every allocator with the same argument layout. */
enum ml_kind {
	ML_MALLOC = 0,
	ML_CALLOC = 1,
	ML_REALLOC = 2,
	ML_POSIX_MEMALIGN = 3,
	ML_ALIGNED_ALLOC = 4,
	ML_VALLOC = 5,
	ML_MEMALIGN = 6,
	ML_PVALLOC = 7,
	ML_MMAP = 8,
	ML_MREMAP = 9,
	ML_NEW = 10,
	ML_NEW_ARRAY = 11,
	ML_KMALLOC = 16,
	ML_KMEM_CACHE = 17,
	ML_PAGE = 18,
	ML_PERCPU = 19,
};

/* Value of `allocs` (key: block address; page pfn in kernel mode). */
struct alloc_info {
	__u64 size;
	__u64 ts_ns;        /* bpf_ktime_get_ns() at the allocation */
	__u64 stack;        /* key in `stacks` (a 64-bit hash of the frames); 0: no stack */
	__u16 kind;         /* enum ml_kind */
	__u16 gen;          /* exec generation of the target: blocks of a replaced image are void */
	__u32 pad;
};

/* Key of `stats`: per-stack totals kept in the kernel (--combined-only, --pprof). */
struct stack_key {
	__u64 stack;
	__u32 kind;
	__u32 pad;
};

struct stack_stats {
	__u64 alloc_objects;   /* cumulative since tracing started */
	__u64 alloc_space;
	__s64 inuse_objects;   /* outstanding now */
	__s64 inuse_space;
};

/* Per-thread scratch between an allocator's entry and its return. */
struct thread_state {
	__u64 sp;       /* stack pointer at the outermost allocator entry; 0: idle */
	__u64 size;
	__u64 arg;      /* realloc/mremap: old block; posix_memalign: memptr */
	__u64 ts_ns;    /* entry time (staleness; realloc/mremap: see free_old) */
	__u32 kind;
	__u32 skip;     /* filtered by size or by sampling: track nesting, record nothing */
	__u64 calls;    /* allocations seen on this thread (deterministic -s sampling) */
};

/* memleak's own counters (per-CPU array `counters`). */
enum ml_counter {
	ML_CNT_RECORDED = 0,      /* allocations recorded */
	ML_CNT_FREED = 1,         /* frees that matched a recorded block */
	ML_CNT_MISSED_FREE = 2,   /* an address was handed out again with no free seen */
	ML_CNT_NESTED = 3,        /* allocator calls made by another allocator (not counted) */
	ML_CNT_SAMPLED_OUT = 4,   /* allocations skipped by -s */
	ML_CNT_FAILED = 5,        /* allocations that failed (NULL / MAP_FAILED / error) */
	ML_CNT_NR = 8,
};

#endif
