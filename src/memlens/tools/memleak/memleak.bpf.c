// SPDX-License-Identifier: GPL-2.0
// memleak: outstanding allocations by stack, in a process (uprobes on its allocator) or in
// the kernel (kmem/page/percpu tracepoints).
//
// Differences from BCC/libbpf-tools memleak, each fixing a reported problem (ANCHORS §3):
// - Nesting is resolved by the stack pointer, not by a {tid} or {tid, kind} key: only the
//   outermost allocator call of a thread is recorded (operator new -> malloc, memalign ->
//   malloc, malloc -> mmap are one allocation, not two; BCC PR #4970 fixed the overwrite but
//   still counts malloc's internal mmap as a second allocation).  A return that never came
//   (longjmp) cannot wedge a thread: the next call at the same or a shallower depth replaces
//   the stale state.
// - The stack is taken at the allocator's *return*, where the instruction pointer is the
//   return address into the direct caller: the caller that an entry probe misses
//   (KERNEL.md §9, BCC #4958) is the first frame.  Probing operator new itself (not only the
//   malloc under it) makes the caller of `new` visible.
// - A failed allocation is not recorded (PR #3085); realloc/mremap free the old block only
//   when they succeed, and only if that block was not handed out again meanwhile.
// - Every loss is counted: stack collisions/full map (drops), full allocs map (drops), and
//   addresses reused without a free seen (counters; BCC #2997's missed frees): the reused
//   address's old entry is taken out of the per-stack totals instead of leaking into them
//   (BCC's --wa-missing-free is always on).
// - Sampling (-s N) is every Nth allocation of each thread, not ktime % N, so it is
//   deterministic and the scaled totals are exact for regular workloads.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#define MEMLENS_STACK_STORE /* the shared hash-keyed `stacks` map */
#define MEMLENS_UNWIND /* user stacks by .eh_frame (memlens.bpf.h) */
#include "memlens.bpf.h"
#include "memleak.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 min_size = 0;
const volatile __u64 max_size = ~0ULL;
const volatile __u64 sample_rate = 1;
const volatile bool track_stats = false;   /* keep per-stack totals (stats map) */
const volatile bool need_exec = false;     /* -c: record only after the command's exec */
const volatile bool user_mode = true;

/* [0]: incremented when the target execs (blocks of the replaced image no longer exist). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} exec_gen SEC(".maps");

static __always_inline __u32 current_gen(void)
{
	__u32 zero = 0;
	__u32 *g = bpf_map_lookup_elem(&exec_gen, &zero);
	return g ? *g : 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1000000);
	__type(key, __u64);
	__type(value, struct alloc_info);
} allocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct stack_key);
	__type(value, struct stack_stats);
} stats SEC(".maps");

/* LRU: states of exited threads age out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct thread_state);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ML_CNT_NR);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	percpu_inc(&counters, which);
}

static __always_inline void stats_add(struct alloc_info *info, __s64 sign)
{
	struct stack_key key = { .stack = info->stack, .kind = info->kind };
	struct stack_stats *s = bpf_map_lookup_elem(&stats, &key);
	if (!s) {
		if (sign < 0)
			return;
		struct stack_stats zero = {};
		long err = bpf_map_update_elem(&stats, &key, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&stats, &key);
		if (!s) {
			count_insert_failure(err, MEMLENS_DROP_MAP_FULL, MEMLENS_DROP_MAP_NOMEM);
			return;
		}
	}
	/* One atomic add per field: each total is exact under concurrency (BCC #3341). */
	if (sign > 0) {
		__sync_fetch_and_add(&s->alloc_objects, 1);
		__sync_fetch_and_add(&s->alloc_space, info->size);
	}
	__sync_fetch_and_add(&s->inuse_objects, sign);
	__sync_fetch_and_add(&s->inuse_space, sign * (__s64)info->size);
}

static __always_inline void record(void *ctx, __u64 addr, __u64 size, __u32 kind, __u64 flags)
{
	struct alloc_info info = {
		.size = size,
		.ts_ns = bpf_ktime_get_ns(),
		.kind = kind,
		.gen = (__u16)current_gen(),
	};
	info.stack = stack_store(ctx, flags);
	struct alloc_info *old = bpf_map_lookup_elem(&allocs, &addr);
	if (old) {
		/* The address was handed out again but its free was never seen. */
		count(ML_CNT_MISSED_FREE);
		if (track_stats)
			stats_add(old, -1);
	}
	long err = bpf_map_update_elem(&allocs, &addr, &info, BPF_ANY);
	if (err) {
		count_insert_failure(err, MEMLENS_DROP_MAP_FULL, MEMLENS_DROP_MAP_NOMEM);
		return;
	}
	count(ML_CNT_RECORDED);
	if (track_stats)
		stats_add(&info, 1);
}

static __always_inline void free_addr(__u64 addr)
{
	if (track_stats) {
		struct alloc_info *info = bpf_map_lookup_elem(&allocs, &addr);
		if (!info)
			return;
		stats_add(info, -1);
	}
	if (bpf_map_delete_elem(&allocs, &addr) == 0)
		count(ML_CNT_FREED);
}

/* ---- user mode ------------------------------------------------------------------------ */

static __always_inline bool user_target(void)
{
	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return false;
	if (need_exec && !current_gen())
		return false; /* -c: the forked child has not exec'd the command yet */
	return true;
}

#define STALE_NS 1000000000ULL

static __always_inline int enter(struct pt_regs *ctx, __u64 size, __u64 arg)
{
	if (!user_target())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 sp = PT_REGS_SP(ctx);
	__u64 now = bpf_ktime_get_ns();
	struct thread_state *st = bpf_map_lookup_elem(&threads, &tid);
	if (!st) {
		struct thread_state zero = {};
		long err = bpf_map_update_elem(&threads, &tid, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&threads, &tid);
		if (!st) {
			count_insert_failure(err, MEMLENS_DROP_MAP_FULL, MEMLENS_DROP_MAP_NOMEM);
			return 0;
		}
	} else if (st->sp && st->sp >= sp && now - st->ts_ns < STALE_NS) {
		/* Called by an allocator whose call is still running on this stack (the stack
		 * grows down; equal: a tail call, as operator new[] -> operator new): part of
		 * that allocation, not one of its own.  A state older than STALE_NS is a call
		 * whose return was never seen (longjmp): replaced below. */
		count(ML_CNT_NESTED);
		return 0;
	}
	__u32 kind = (__u32)bpf_get_attach_cookie(ctx);
	st->sp = sp;
	st->size = size;
	st->arg = arg;
	st->kind = kind;
	st->skip = 0;
	st->ts_ns = now;
	if (size < min_size || size > max_size) {
		st->skip = 1;
	} else if (sample_rate > 1) {
		st->calls++;
		if (st->calls % sample_rate) {
			st->skip = 1;
			count(ML_CNT_SAMPLED_OUT);
		}
	}
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ml_enter_size1, __u64 size)
{
	return enter(ctx, size, 0);
}

SEC("uprobe")
int BPF_KPROBE(ml_enter_size2, __u64 a0, __u64 size)
{
	return enter(ctx, size, 0);
}

SEC("uprobe")
int BPF_KPROBE(ml_enter_calloc, __u64 nmemb, __u64 size)
{
	return enter(ctx, nmemb * size, 0);
}

SEC("uprobe")
int BPF_KPROBE(ml_enter_realloc, __u64 ptr, __u64 size)
{
	return enter(ctx, size, ptr);
}

SEC("uprobe")
int BPF_KPROBE(ml_enter_posix_memalign, __u64 memptr, __u64 align, __u64 size)
{
	return enter(ctx, size, memptr);
}

SEC("uprobe")
int BPF_KPROBE(ml_enter_mremap, __u64 old, __u64 old_size, __u64 new_size)
{
	return enter(ctx, new_size, old);
}

/* realloc/mremap: the old block is gone only if the call succeeded, and the entry we hold
 * for it is that block only if it was recorded before the call began (another thread may
 * have been handed the same address after realloc released it). */
static __always_inline void free_old(struct thread_state *st)
{
	__u64 old = st->arg;
	if (!old)
		return;
	struct alloc_info *info = bpf_map_lookup_elem(&allocs, &old);
	if (info && info->ts_ns <= st->ts_ns)
		free_addr(old);
}

/* --quick-start (-p): the hand-over.  ml_return_handing, verified without the DWARF walk
 * (~5 ms of the verifier instead of ~30, with the walk's maps at their smallest), is
 * attached first and the banner printed; the whole ml_return, loaded next from a second
 * copy of this object sharing its maps, is put in ml_whole, and from then on every return
 * is handed to it.  Until then user stacks are the kernel's frame-pointer walk, each
 * counted as unwind_fallback.  Its own program, as the engine's count_tp_handing: a tail
 * call anywhere in a program holds its whole stack to the tail-call limits, which the
 * walk's frames exceed.  core/handover.py sets hand_over in the first copy only. */
MEMLENS_HAND_OVER_ARRAY(ml_whole);

static __always_inline int on_return(struct pt_regs *ctx, __u64 ret)
{
	if (!user_target())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct thread_state *st = bpf_map_lookup_elem(&threads, &tid);
	/* `ret` popped the return address: sp is 8 above the entry's.  Anything else is the
	 * return of a nested call. */
	if (!st || !st->sp || PT_REGS_SP(ctx) != st->sp + 8)
		return 0;
	st->sp = 0;
	__u64 addr = ret;
	switch (st->kind) {
	case ML_POSIX_MEMALIGN:
		if ((int)ret != 0) {
			count(ML_CNT_FAILED);
			return 0;
		}
		if (bpf_probe_read_user(&addr, sizeof(addr), (void *)st->arg))
			return 0;
		break;
	case ML_MMAP:
		if (ret == (__u64)-1) {
			count(ML_CNT_FAILED);
			return 0;
		}
		break;
	case ML_MREMAP:
		if (ret == (__u64)-1) {
			count(ML_CNT_FAILED);
			return 0;
		}
		free_old(st);
		break;
	case ML_REALLOC:
		if (!ret && st->size) {
			count(ML_CNT_FAILED);
			return 0;
		}
		free_old(st);  /* realloc(p, 0) frees p and returns NULL */
		break;
	default:
		break;
	}
	if (!addr) {
		if (st->kind != ML_REALLOC)
			count(ML_CNT_FAILED);
		return 0;
	}
	if (st->skip)
		return 0;
	if (hand_over)
		count_drop(MEMLENS_DROP_UNWIND_FALLBACK); /* the walk not loaded yet */
	/* Taken here, at the return, the stack's first frame is the direct caller. */
	record(ctx, addr, st->size, st->kind, BPF_F_USER_STACK);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ml_return, __u64 ret)
{
	return on_return(ctx, ret);
}

SEC("uretprobe")
int BPF_KRETPROBE(ml_return_handing, __u64 ret)
{
	bpf_tail_call(ctx, &ml_whole, 0); /* returns only while the slot is empty */
	return on_return(ctx, ret);
}

SEC("uprobe")
int BPF_KPROBE(ml_free, __u64 ptr)
{
	if (!user_target() || !ptr)
		return 0;
	free_addr(ptr);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int ml_exec(void *ctx)
{
	__u32 zero = 0;
	__u32 *g = bpf_map_lookup_elem(&exec_gen, &zero);
	if (g && targ_tgid && (bpf_get_current_pid_tgid() >> 32) == targ_tgid)
		__sync_fetch_and_add(g, 1);
	return PASS_ON;
}

/* ---- kernel mode ---------------------------------------------------------------------- */

/* Before 6.0 (commit 2c1d697fb8ba "mm/slab_common: drop kmem_alloc & avoid dereferencing
 * fields when not using") kmalloc and kmem_cache_alloc (and their _node variants, removed
 * in 6.1: BCC #4384) shared the kmem_alloc event class. */
struct trace_event_raw_kmem_alloc___old {
	const void *ptr;
	size_t bytes_alloc;
} __attribute__((preserve_access_index));
struct trace_event_raw_kmem_alloc_node___old {
	const void *ptr;
	size_t bytes_alloc;
} __attribute__((preserve_access_index));
struct trace_event_raw_kmalloc___new {
	const void *ptr;
	size_t bytes_alloc;
} __attribute__((preserve_access_index));
struct trace_event_raw_kmem_cache_alloc___new {
	const void *ptr;
	size_t bytes_alloc;
} __attribute__((preserve_access_index));
/* kfree and kmem_cache_free: older kernels shared the kmem_free event class. */
struct trace_event_raw_kmem_free___old {
	const void *ptr;
} __attribute__((preserve_access_index));

static __always_inline void kalloc(void *ctx, __u64 ptr, __u64 size, __u32 kind)
{
	if (!ptr || !task_allowed())
		return;
	if (size < min_size || size > max_size)
		return;
	record(ctx, ptr, size, kind, 0);
}

SEC("tracepoint/kmem/kmalloc")
int ml_kmalloc(void *ctx)
{
	__u64 ptr, size;
	if (bpf_core_type_exists(struct trace_event_raw_kmalloc___new)) {
		struct trace_event_raw_kmalloc___new *a = ctx;
		ptr = (__u64)BPF_CORE_READ(a, ptr);
		size = BPF_CORE_READ(a, bytes_alloc);
	} else {
		struct trace_event_raw_kmem_alloc___old *a = ctx;
		ptr = (__u64)BPF_CORE_READ(a, ptr);
		size = BPF_CORE_READ(a, bytes_alloc);
	}
	kalloc(ctx, ptr, size, ML_KMALLOC);
	return PASS_ON;
}

SEC("tracepoint/kmem/kmem_cache_alloc")
int ml_kmem_cache_alloc(void *ctx)
{
	__u64 ptr, size;
	if (bpf_core_type_exists(struct trace_event_raw_kmem_cache_alloc___new)) {
		struct trace_event_raw_kmem_cache_alloc___new *a = ctx;
		ptr = (__u64)BPF_CORE_READ(a, ptr);
		size = BPF_CORE_READ(a, bytes_alloc);
	} else {
		struct trace_event_raw_kmem_alloc___old *a = ctx;
		ptr = (__u64)BPF_CORE_READ(a, ptr);
		size = BPF_CORE_READ(a, bytes_alloc);
	}
	kalloc(ctx, ptr, size, ML_KMEM_CACHE);
	return PASS_ON;
}

/* Only on kernels < 6.1 (autoloaded when the tracepoints exist). */
SEC("tracepoint/kmem/kmalloc_node")
int ml_kmalloc_node(struct trace_event_raw_kmem_alloc_node___old *a)
{
	kalloc(a, (__u64)BPF_CORE_READ(a, ptr), BPF_CORE_READ(a, bytes_alloc), ML_KMALLOC);
	return PASS_ON;
}

SEC("tracepoint/kmem/kmem_cache_alloc_node")
int ml_kmem_cache_alloc_node(struct trace_event_raw_kmem_alloc_node___old *a)
{
	kalloc(a, (__u64)BPF_CORE_READ(a, ptr), BPF_CORE_READ(a, bytes_alloc), ML_KMEM_CACHE);
	return PASS_ON;
}

/* Frees are not filtered by task: a block allocated by the target may be freed anywhere. */
static __always_inline __u64 freed_ptr(void *ctx, bool cache)
{
	if (cache && bpf_core_type_exists(struct trace_event_raw_kmem_cache_free))
		return (__u64)BPF_CORE_READ((struct trace_event_raw_kmem_cache_free *)ctx, ptr);
	if (!cache && bpf_core_type_exists(struct trace_event_raw_kfree))
		return (__u64)BPF_CORE_READ((struct trace_event_raw_kfree *)ctx, ptr);
	return (__u64)BPF_CORE_READ((struct trace_event_raw_kmem_free___old *)ctx, ptr);
}

SEC("tracepoint/kmem/kfree")
int ml_kfree(void *ctx)
{
	__u64 ptr = freed_ptr(ctx, false);
	if (ptr)
		free_addr(ptr);
	return PASS_ON;
}

SEC("tracepoint/kmem/kmem_cache_free")
int ml_kmem_cache_free(void *ctx)
{
	__u64 ptr = freed_ptr(ctx, true);
	if (ptr)
		free_addr(ptr);
	return PASS_ON;
}

SEC("tracepoint/kmem/mm_page_alloc")
int ml_page_alloc(struct trace_event_raw_mm_page_alloc *a)
{
	__u64 pfn = BPF_CORE_READ(a, pfn);
	if (pfn == (__u64)-1)
		return PASS_ON; /* allocation failed */
	kalloc(a, pfn, 4096ULL << BPF_CORE_READ(a, order), ML_PAGE);
	return PASS_ON;
}

SEC("tracepoint/kmem/mm_page_free")
int ml_page_free(struct trace_event_raw_mm_page_free *a)
{
	free_addr(BPF_CORE_READ(a, pfn));
	return PASS_ON;
}

/* Order-0 pages freed in batches (free_unref_folios) report here, not in mm_page_free;
 * BCC and libbpf-tools do not hook it, so such pages stay "outstanding" for ever. */
SEC("tracepoint/kmem/mm_page_free_batched")
int ml_page_free_batched(struct trace_event_raw_mm_page_free_batched *a)
{
	free_addr(BPF_CORE_READ(a, pfn));
	return PASS_ON;
}

struct trace_event_raw_percpu_alloc_percpu___pre62 {
	void *ptr;
	size_t size;
} __attribute__((preserve_access_index));

SEC("tracepoint/percpu/percpu_alloc_percpu")
int ml_percpu_alloc(struct trace_event_raw_percpu_alloc_percpu *a)
{
	__u64 size;
	/* bytes_alloc (size x possible CPUs) exists since 6.2 (commit f67bed134a05) */
	if (bpf_core_field_exists(a->bytes_alloc))
		size = BPF_CORE_READ(a, bytes_alloc);
	else
		size = BPF_CORE_READ((struct trace_event_raw_percpu_alloc_percpu___pre62 *)a, size);
	kalloc(a, (__u64)BPF_CORE_READ(a, ptr), size, ML_PERCPU);
	return PASS_ON;
}

SEC("tracepoint/percpu/percpu_free_percpu")
int ml_percpu_free(struct trace_event_raw_percpu_free_percpu *a)
{
	__u64 ptr = (__u64)BPF_CORE_READ(a, ptr);
	if (ptr)
		free_addr(ptr);
	return PASS_ON;
}

/* clang emits BTF for these only if something uses them */
struct stack_key stack_key_btf_anchor __attribute__((unused));
struct stack_stats stack_stats_btf_anchor __attribute__((unused));
