/* SPDX-License-Identifier: GPL-2.0 */
/* Shared BPF-side helpers for every memlens tool: loss accounting, PID and cgroup filters,
 * stack capture that counts its failures.  Include after vmlinux.h and bpf_helpers.h. */
#ifndef __MEMLENS_BPF_H
#define __MEMLENS_BPF_H

#include <bpf/bpf_core_read.h>
#include "memlens_common.h"

#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef EEXIST
#define EEXIST 17
#endif
#ifndef EFAULT
#define EFAULT 14
#endif
#ifndef ENOMEM
#define ENOMEM 12
#endif
#ifndef E2BIG
#define E2BIG 7
#endif

/* Nothing is lost silently: every reserve/update/stack failure is counted here and the
 * Python side reports the counts (text footer, JSON "lost" records). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MEMLENS_DROP_NR);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Add one to slot `idx` of a per-CPU u64 array (counters need no atomics per CPU). */
static __always_inline void percpu_inc(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);
	if (v)
		(*v)++;
}

static __always_inline void count_drop(__u32 kind)
{
	percpu_inc(&drops, kind);
}

/* Filters, set from user space before load (rodata). */
const volatile __u32 targ_tgid = 0;        /* 0 = every process */
const volatile __u32 targ_tid = 0;         /* 0 = every thread (-t) */
const volatile __u32 self_tgid = 0;        /* memlens itself: its own activity is noise */
const volatile __u64 targ_cgroup_id = 0;   /* 0 = every cgroup; else the cgroup dir inode */
const volatile bool targ_cgroup_v1 = false; /* compare the v1 memory hierarchy, not v2 */

#define MEMLENS_CGROUP_MAX_DEPTH 16

/* kernel commit 633488947ef6 ("kernfs: Use RCU to access kernfs_node::parent.", 6.15)
 * renamed kernfs_node::parent to __parent. */
struct kernfs_node___pre615 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___pre615 *)kn, parent);
}

/* kernfs node of the task's memory cgroup (v1) or default-hierarchy cgroup (v2). */
static __always_inline struct kernfs_node *task_cgroup_kn(struct task_struct *task, bool v1)
{
	if (v1) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		return BPF_CORE_READ(task, cgroups, subsys[id], cgroup, kn);
	}
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);
}

/* True when the task is in the target cgroup or one of its descendants. */
static __always_inline bool cgroup_allowed_task(struct task_struct *task)
{
	if (!targ_cgroup_id)
		return true;
	struct kernfs_node *kn = task_cgroup_kn(task, targ_cgroup_v1);
	for (int i = 0; i < MEMLENS_CGROUP_MAX_DEPTH && kn; i++) {
		if (BPF_CORE_READ(kn, id) == targ_cgroup_id)
			return true;
		kn = kn_parent(kn);
	}
	return false;
}

static __always_inline bool task_allowed(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (targ_tgid && tgid != targ_tgid)
		return false;
	if (targ_tid && (__u32)id != targ_tid)
		return false;
	if (self_tgid && tgid == self_tgid)
		return false;
	if (targ_cgroup_id)
		return cgroup_allowed_task((struct task_struct *)bpf_get_current_task());
	return true;
}

/* bpf_get_stackid() with every failure counted by cause.  -EFAULT means there was no
 * stack to walk (kernel thread, no user regs): "missing"; -EEXIST is a hash collision
 * and -ENOMEM a full map: "lost". */
static __always_inline __s32 stackid_counted(void *ctx, void *map, __u64 flags)
{
	long id = bpf_get_stackid(ctx, map, flags);
	if (id >= 0)
		return id;
	if (id == -EEXIST)
		count_drop(MEMLENS_DROP_STACK_COLLISION);
	else if (id == -ENOMEM || id == -E2BIG)
		count_drop(MEMLENS_DROP_STACK_FULL);
	else
		count_drop(MEMLENS_DROP_STACK_MISSING);
	return (__s32)id;
}

/* Reserve a ring-buffer record or count the loss. */
#define reserve_or_count(rb, size) ({                                   \
	void *__r = bpf_ringbuf_reserve(rb, size, 0);                    \
	if (!__r)                                                         \
		count_drop(MEMLENS_DROP_RINGBUF);                        \
	__r; })

/* A failed insert counted by its cause: the map full (-E2BIG), or no memory for a new
 * entry at that moment (-ENOMEM: a map that allocates as it inserts, 6.1+, found its
 * per-CPU cache of free entries empty in a burst, before the kernel refilled it). */
#define count_insert_failure(err, full, nomem) \
	count_drop((err) == -ENOMEM ? (nomem) : (full))

static __always_inline void update_or_count(void *map, const void *key, const void *val,
					     __u64 flags)
{
	long err = bpf_map_update_elem(map, key, val, flags);
	if (err)
		count_insert_failure(err, MEMLENS_DROP_MAP_FULL, MEMLENS_DROP_MAP_NOMEM);
}

/* ---- One stack store for every tool -------------------------------------------------
 * Stacks keyed by a 64-bit hash of their frames, not a BPF_MAP_TYPE_STACK_TRACE: that map
 * hashes into max_entries buckets and refuses (-EEXIST) a second stack landing in a taken
 * bucket, so with a few dozen distinct stacks one is lost now and then (bpftrace #2962,
 * PR #3060 made the same change).  Here only a full map loses a stack, and it is counted.
 * User space may delete stacks it has already read (pruning): a later event with the same
 * frames stores them again.  Define MEMLENS_STACK_STORE before including this header. */
#ifdef MEMLENS_STACK_STORE
struct stack_trace {
	__u64 ips[MEMLENS_STACK_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);
	__type(value, struct stack_trace);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_trace);
} stack_scratch SEC(".maps");

#ifdef MEMLENS_UNWIND
/* ---- User stacks unwound with .eh_frame, for code built without frame pointers ----------
 * The kernel's user stack walk follows rbp; Debian's libc, python3, git... use rbp as a
 * general register, so their stacks stop after a frame or two (KERNEL.md §9).  User space
 * (memlens/core/unwind) reduces each mapped ELF's call frame information to sorted 8-byte
 * rows (cfi.py: where the CFA is, where rbp was saved; the return address is at CFA-8) in
 * `unwind_rows`, one extent per file shared by every process mapping it, and gives each
 * process its executable mappings in `unwind_procs`.  The walk below finds a frame's
 * mapping and row by binary search, then the caller's rip, rsp and rbp; where no row covers
 * the pc it follows rbp as the kernel would.  A pc outside the process's known mappings (a
 * process not loaded yet, an exec, a dlopen) is looked up with bpf_find_vma: its file's
 * table is found by device and inode in `unwind_files` (one entry per file user space has
 * loaded for any process), and where none is, the frame is walked by its frame pointer,
 * counted as a fallback, and `unwind_requests` asks user space to load the process.
 * Needs bpf_loop and bpf_find_vma (5.17), bpf_task_pt_regs (5.15): user space checks before
 * setting
 * unwind_dwarf; with it false the verifier drops this code.  Define MEMLENS_UNWIND (and
 * MEMLENS_STACK_STORE) before including this header. */
#define MEMLENS_UNWIND_MAX_MAPS 128     /* executable mappings per process */
#define MEMLENS_UNWIND_MAP_STEPS 8      /* binary search over them */
#define MEMLENS_UNWIND_ROW_STEPS 24     /* binary search over a file's rows: up to 16M */
/* The stack is read a window at a time: one bpf_probe_read_user costs ~100 ns here
 * (the helper, the fault-proof copy's checks: hardened usercopy) and ~0.02 ns a byte of
 * hot stack, and a frame needs one or two 8-byte reads; frames are small, so a window
 * holds several.  A window runs to the end of its page: one read a page of stack the walk
 * crosses (the bench's 13 frames: 2 reads, with 1 KiB windows 3). */
#define MEMLENS_UNWIND_WINDOW 4096
#define MEMLENS_UNWIND_BELOW 128        /* of the window, below the first address asked */

/* cfi.py's row encoding */
#define UNWIND_CFA_END 0
#define UNWIND_CFA_RSP 1
#define UNWIND_CFA_RBP 2
#define UNWIND_CFA_PLT 3
#define UNWIND_CFA_DEREF_RBP 4
#define UNWIND_CFA_SIGNAL 5
#define UNWIND_CFA_GAP 6
#define UNWIND_CFA_UNSUPPORTED 7
#define UNWIND_CFA_SCALED 8
#define UNWIND_RBP_SAME 0
#define UNWIND_RBP_AT_CFA 1
#define UNWIND_RBP_AT_RBP 2
/* struct sigcontext: rbp and rip relative to the saved rsp */
#define UNWIND_SIG_RBP (-40)
#define UNWIND_SIG_RIP 8

struct unwind_row {
	__u32 pc;       /* ELF vaddr where the row starts */
	__s16 cfa_off;
	__u8 kind;      /* CFA rule | UNWIND_CFA_SCALED, rbp rule << 4 */
	__s8 rbp_off;   /* in 8 bytes; the PLT's threshold */
};

struct unwind_mapping {
	__u64 start;
	__u64 end;
	__u64 bias;       /* runtime address - ELF vaddr */
	__u32 row_start;  /* the file's rows in unwind_rows */
	__u32 row_count;  /* 0: no table, frame pointers (row_start UNWIND_NOT_LOADED: a table
			   * past the memory bound, and that is counted) */
};
#define UNWIND_NOT_LOADED 0xffffffff

struct unwind_proc {
	__u64 exe_ino;    /* of /proc/PID/exe when loaded: an exec makes the entry stale */
	__u32 nmaps;
	__u32 pad;
	struct unwind_mapping maps[MEMLENS_UNWIND_MAX_MAPS];  /* sorted by start */
};

/* A file's table, found from a mapping by the file's device and inode (the kernel's dev_t:
 * major << 20 | minor). */
struct unwind_file_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

struct unwind_file {
	__u64 seg_start;  /* file offsets of its executable PT_LOAD (page aligned start) */
	__u64 seg_end;
	__s64 delta;      /* that segment's p_offset - p_vaddr */
	__u32 row_start;
	__u32 row_count;
	__u64 vaddr;      /* that segment's p_vaddr */
};

struct unwind_request {
	__u32 tgid;
	__u32 reason;     /* 1: not loaded (or exec'd), 2: a pc in none of its mappings */
};

const volatile bool unwind_dwarf = false;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);            /* sized by user space */
	__uint(map_flags, BPF_F_MMAPABLE); /* user space writes tables in place */
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct unwind_proc);
} unwind_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct unwind_file_key);
	__type(value, struct unwind_file);
} unwind_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} unwind_requests SEC(".maps");

/* ---- Mappings that outlive their process ----
 * A short command (`ls`, `git log`) is gone before user space reads /proc/PID/maps, and its
 * stacks would print as bare addresses.  The walk meets each of its frames' mappings through
 * bpf_find_vma anyway (a process without an entry in unwind_procs): it sends each mapping
 * once per (process, mm) to user space, which resolves the frames by file without the
 * process (core/unwind/store.py: UnwindStore.mappings).  A file is named once per run: its
 * dentry's path within its filesystem, leaf first, which user space places under the
 * filesystem's mount points and checks by device and inode. */
#define MEMLENS_UNWIND_NAME_DEPTH 16
#define MEMLENS_UNWIND_NAME_LEN 64

struct unwind_vma_rec {
	__u32 tgid;
	__u32 dev;        /* the file's, as unwind_file_key */
	__u64 ino;
	__u64 start;
	__u64 end;
	__u64 off;        /* file offset of start */
	__u64 mm;         /* the address space it belongs to (an exec makes a new one) */
	__u32 depth;      /* path components below, leaf first (0: named before) */
	__u32 complete;   /* the components reach the filesystem's root */
	char names[MEMLENS_UNWIND_NAME_DEPTH][MEMLENS_UNWIND_NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} unwind_vmas SEC(".maps");

struct unwind_vma_key {
	__u32 tgid;
	__u32 pad;
	__u64 start;
};

/* (process, mapping start) -> mm it was sent for */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct unwind_vma_key);
	__type(value, __u64);
} unwind_vma_sent SEC(".maps");

/* files whose path was sent */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct unwind_file_key);
	__type(value, __u8);
} unwind_named SEC(".maps");

/* tgid -> when it was last asked for: one request a second at most */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} unwind_asked SEC(".maps");

/* ---- Mappings the walk met, per process ----
 * A process without an entry (new, short-lived, exec'd) has each frame's mapping found
 * from its vma (bpf_find_vma), and where the program runs with interrupts off (a page
 * fault's perf event and tracepoint) that finds one mapping an event: a stack through two
 * shared libraries was cut at the second at every event.  Each mapping so found is kept
 * here by (process, 2 MiB of address space), the two latest of each, and later events take
 * it from here: each event learns one more and the stacks are whole from the second or
 * third.  Valid while the process (its start time) has the same mm (an exec makes a new
 * one; a PID and an mm_struct's address may both be reused by a later process); a mapping
 * replaced in place by another file (dlclose, dlopen at the same address) goes unseen, as
 * it does in the process's entry.  Kept only once user space has the mapping (sent), so
 * that the frames it places are named. */
#define UNWIND_MET_SHIFT 21
#define UNWIND_MET_WAYS 2

struct unwind_met_key {
	__u32 tgid;
	__u32 bucket;     /* address >> UNWIND_MET_SHIFT */
};

struct unwind_met {
	__u64 mm;
	__u64 start;      /* the process's start time: a PID reused, an mm_struct reused */
	struct unwind_mapping maps[UNWIND_MET_WAYS];  /* latest first; end 0: empty */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct unwind_met_key);
	__type(value, struct unwind_met);
} unwind_met SEC(".maps");

struct unwind_walk {
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u32 tgid;
	__u32 n;          /* frames stored */
	__u8 exact;       /* ip is where execution stands (frame 0, a signal's), not a return */
	__u8 bp_valid;
	__u8 done;
	__u8 truncated;
	__u8 unmapped;    /* a pc in none of the process's known mappings */
	__u8 no_proc;     /* the process has no (current) entry: every mapping by its vma */
	__u8 fallback;    /* a frame walked by its frame pointer for want of its file's table */
	__u8 proc_checked; /* no_proc is known (at the first frame needing a mapping) */
	__u32 lo;         /* a binary search's bounds */
	__u32 hi;
	__u64 exe_ino;    /* of the task's executable: a process entry of another is stale */
	__u64 mm;         /* the task's address space (unwind_met's entries are of one) */
	__u64 start;      /* the process's start time (boot-based ns) */
	__u32 gen;        /* unwind_gen at the walk's start */
	__u32 pad2;
	__u64 tramp;      /* the uretprobe trampoline's address (0: no uretprobe pending) */
	__u64 ri;         /* the next pending return_instance to match (a kernel pointer) */
	struct unwind_mapping last;  /* the mapping of the previous frame */
	struct unwind_mapping prev;  /* and of the one before in another file (libc, the
				      * program, libc again: the third is found here) */
	struct unwind_met met;       /* an unwind_met entry being made */
	struct unwind_met_key met_key;  /* and its key (map values: the BPF stack is full) */
	__u64 win_start;  /* user address of win[0]; win_len 0: empty */
	__u64 win_len;
	__u8 win[MEMLENS_UNWIND_WINDOW];
};

/* The walk's state lives in a map value, not on the stack: the verifier follows a bpf_loop
 * callback until the states it sees repeat, and stack values it must track (the frame
 * count indexes ips[]) would never repeat; a map value's are unknown scalars each time. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_walk);
} unwind_scratch SEC(".maps");

/* ---- A per-CPU pc -> row cache ----
 * A row found by binary search costs up to 24 dependent loads over a table of up to
 * megabytes (libc's 28k rows: 15 steps, each a likely cache miss): most of a frame's time.
 * The same return addresses come back event after event, so the row found for a (file's
 * extent, pc) is kept in a direct-mapped slot, with the tables' generation: user space
 * bumps it (unwind_gen) after writing any table's rows (store.py: an extent freed may be
 * given to another file), and a slot of another generation is not taken.  Generation 0:
 * no table written yet, no slot taken. */
#define MEMLENS_UNWIND_CACHE_SLOTS 4096

struct unwind_cache_slot {
	__u32 rel;        /* the pc, relative to the file */
	__u32 first;      /* the file's extent (row_start) */
	__u32 gen;
	__u32 pad;
	struct unwind_row row;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unwind_gen SEC(".maps");

/* a slot a map entry, CPU c's slots at [c * SLOTS, (c + 1) * SLOTS): one array (sized by
 * user space for the possible CPUs), made in ~0.1 ms where a per-CPU array's 4096 per-CPU
 * allocations were ~3 ms of every walking tool's start */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MEMLENS_UNWIND_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct unwind_cache_slot);
} unwind_rowcache SEC(".maps");

/* What each step of the walk needs, looked up once a walk and handed to the bpf_loop
 * callback through its context (a hash lookup of the process's entry at each change of
 * file, two array lookups a frame, else). */
struct unwind_ctx {
	struct unwind_walk *s;
	struct stack_trace *st;
	struct unwind_proc *p;  /* may be NULL: no entry */
};

static __always_inline void unwind_request(__u32 tgid, __u32 reason)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 *last = bpf_map_lookup_elem(&unwind_asked, &tgid);
	if (last && now - *last < 1000000000ULL)
		return;
	bpf_map_update_elem(&unwind_asked, &tgid, &now, BPF_ANY);
	struct unwind_request *r = bpf_ringbuf_reserve(&unwind_requests, sizeof(*r), 0);
	if (!r)
		return; /* asked again in a second */
	r->tgid = tgid;
	r->reason = reason;
	bpf_ringbuf_submit(r, 0);
}

/* The window refilled for addr (0), or addr's 8 bytes read alone into *out (1: the slot
 * crosses its page's end), or -1.  A window never leaves the page of the address asked for:
 * that page is present (the slot was written: a call, a push), while a page next to it may
 * not be (the untouched middle of a big stack buffer, the stack below its lowest use), and
 * a read that faults costs microseconds here.  A global function: the verifier checks it
 * once, not at each of the walk's seven reads (~2 refills an event, the rest from the
 * window). */
__attribute__((noinline)) int memlens_unwind_fill(struct unwind_walk *s, __u64 addr,
						  __u64 *out)
{
	if (!s || !out)
		return -1;
	__u64 page = addr & ~4095ULL;
	__u64 start = addr - MEMLENS_UNWIND_BELOW;
	if (start < page || start > addr)
		start = page;
	__u64 len = page + 4096 - start;
	if (len > MEMLENS_UNWIND_WINDOW)
		len = MEMLENS_UNWIND_WINDOW;
	if (addr + 8 > start + len) /* the slot crosses the page's end */
		return bpf_probe_read_user(out, sizeof(*out), (void *)addr) ? -1 : 1;
	s->win_len = 0;
	if (len < 8 || bpf_probe_read_user(s->win, len, (void *)start))
		return -1;
	s->win_start = start;
	s->win_len = len;
	return 0;
}

/* 8 bytes of the user stack at addr, through the window (memlens_unwind_fill). */
static __always_inline int unwind_read(struct unwind_walk *s, __u64 addr, __u64 *out)
{
	if (addr < s->win_start || addr + 8 > s->win_start + s->win_len) {
		int r = memlens_unwind_fill(s, addr, out);
		if (r)
			return r < 0 ? -1 : 0;
	}
	__u64 off = (addr - s->win_start) & (MEMLENS_UNWIND_WINDOW - 1);
	if (off > MEMLENS_UNWIND_WINDOW - 8)
		return -1;
	*out = *(__u64 *)(s->win + off);
	return 0;
}

/* ---- Return addresses a uretprobe replaced ----
 * A uretprobe (memleak's on malloc; any tool's, bpftrace's `uretprobe:libc:malloc`
 * system wide) makes the kernel replace the probed function's return address on the stack
 * with its trampoline's, the first slot of the process's [uprobes] page (xol_area: at
 * TASK_SIZE - 4096 where free, 0x7fffffffe000), and keep the real one in the task's
 * pending return_instances, innermost first, each with the stack slot it replaced
 * (`stack`: the sp at the function's entry).  Read as a return address that page is no
 * code (an anonymous mapping): the frame was printed as 0x7fffffffe000 [unknown] and the
 * walk ended there, every stack under a pending uretprobe cut at the probed function.  The
 * kernel's own walk swaps them back (fixup_uretprobe_trampoline_entries, 6.12); here the
 * slot's instance gives the real address, and the walk goes on.  Matched by slot, not by
 * order: an instance left by a longjmp out of its function (below the stack, until the
 * kernel drops it) and a chained one (a tail call from one probed function to another:
 * two instances of one slot) are passed over. */
#define MEMLENS_UNWIND_RI_STEPS 16
/* the trampoline's code (x86: push rax, rcx, r11; mov; syscall; pop r11, rcx; ret), at the
 * start of the page's first slot */
#define MEMLENS_UNWIND_TRAMP_BYTES 64

/* One pending instance looked at (a bpf_loop callback, checked in a few passes): 1 ends
 * the search, found or not. */
struct unwind_ri_walk {
	__u64 ri;         /* struct return_instance *: the one to look at */
	__u64 slot;
	__u64 ra;         /* found: its return address, */
	__u64 stack;      /* and its slot */
	__u32 in_tramp;
	__u32 found;
};

static long unwind_ri_step(__u64 k, struct unwind_ri_walk *w)
{
	struct return_instance *ri = (struct return_instance *)w->ri;
	if (!ri)
		return 1;
	__u64 stack = BPF_CORE_READ(ri, stack);
	if (stack == w->slot || (w->in_tramp && stack > w->slot)) {
		w->ra = BPF_CORE_READ(ri, orig_ret_vaddr);
		w->stack = stack;
		w->found = 1;
		return 1;
	}
	if (stack > w->slot)
		return 1; /* the instances are innermost first: none of this slot */
	w->ri = (__u64)BPF_CORE_READ(ri, next);
	return 0;
}

/* The return address the trampoline at `slot` stands for into *ra: 0, else -1 (no pending
 * instance of that slot among the next MEMLENS_UNWIND_RI_STEPS).  in_tramp: the thread
 * runs the trampoline itself (its function returned; a sample there, the uretprobe
 * syscall's tracepoint), `slot` the lowest the returned slot may be: the first instance at
 * or above it, and s->sp is set past its slot.  A global function: the verifier checks its
 * loop once, not at each of the walk's six return address reads. */
__attribute__((noinline)) int memlens_unwind_uretprobe(struct unwind_walk *s, __u64 slot,
						       __u64 *ra, int in_tramp)
{
	if (!s || !ra)
		return -1;
	struct unwind_ri_walk w = { .ri = s->ri, .slot = slot, .in_tramp = in_tramp };
	bpf_loop(MEMLENS_UNWIND_RI_STEPS, unwind_ri_step, &w, 0);
	if (!w.found)
		return -1;
	*ra = w.ra;
	struct return_instance *ri = (struct return_instance *)w.ri;
	s->ri = (__u64)BPF_CORE_READ(ri, next);
	if (in_tramp)
		s->sp = w.stack + 8;
	return 0;
}

/* ra, read from the stack at slot, made the real return address if a uretprobe replaced
 * it: 0, else -1 (the trampoline with no instance found: the stack ends there, marked
 * truncated, rather than with the trampoline's address) */
static __always_inline int unwind_return_address(struct unwind_walk *s, __u64 slot, __u64 *ra)
{
	if (!s->tramp || *ra != s->tramp)
		return 0;
	return memlens_unwind_uretprobe(s, slot, ra, 0);
}

/* One frame by its frame pointer: [rbp] is the caller's rbp, [rbp+8] the return address.
 * A global function: checked once, not at each of the four places a frame falls back to
 * it (a frame of a file without a table, a gap in one: a call per such frame only). */
__attribute__((noinline)) int memlens_unwind_fp_step(struct unwind_walk *s)
{
	__u64 bp, ra;
	if (!s)
		return 0;
	if (!s->bp_valid || !s->bp || s->bp < s->sp || unwind_read(s, s->bp, &bp) ||
	    unwind_read(s, s->bp + 8, &ra)) {
		s->done = 1;
		return 0;
	}
	if (unwind_return_address(s, s->bp + 8, &ra)) {
		s->truncated = 1;
		s->done = 1;
		return 0;
	}
	s->sp = s->bp + 16;
	s->bp = bp;
	s->ip = ra;
	s->exact = 0;
	return 0;
}

struct unwind_vma {
	__u64 start;
	__u64 end;
	__u64 off;        /* file offset of start */
	__u64 ino;
	__u32 dev;
	__u32 found;
	__u64 mm;
	__u32 tgid;
	__u32 sent;       /* user space has the mapping (sent now or before) */
};

/* One component of a file's path, leaf first, into the record (a bpf_loop callback: the
 * verifier checks it in a few passes, not the 16 steps of a loop along every path). */
struct unwind_name_walk {
	struct unwind_vma_rec *r;
	__u64 d;          /* struct dentry *: the next component's */
};

static long unwind_name_step(__u64 i, struct unwind_name_walk *w)
{
	struct unwind_vma_rec *r = w->r;
	struct dentry *d = (struct dentry *)w->d;
	if (!r || i >= MEMLENS_UNWIND_NAME_DEPTH)
		return 1;
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (!d || parent == d) { /* the filesystem's root */
		r->complete = 1;
		return 1;
	}
	bpf_probe_read_kernel_str(r->names[i], MEMLENS_UNWIND_NAME_LEN,
				  BPF_CORE_READ(d, d_name.name));
	r->depth = i + 1;
	w->d = (__u64)parent;
	return 0;
}

/* The mapping to user space, once per (process, mm, start); its file's path once a run
 * (file: its struct file).  1: user space has it, 0: not yet.  A global function: checked
 * once, where it is called from two places of the walk. */
__attribute__((noinline)) int memlens_unwind_send_vma(struct unwind_vma *v, __u64 file)
{
	if (!v)
		return 0;
	struct unwind_vma_key vk = { .tgid = v->tgid, .start = v->start };
	__u64 *sent = bpf_map_lookup_elem(&unwind_vma_sent, &vk);
	if (sent && *sent == v->mm)
		return 1;
	struct unwind_file_key fk = { .ino = v->ino, .dev = v->dev };
	bool name = !bpf_map_lookup_elem(&unwind_named, &fk);
	struct unwind_vma_rec *r;
	if (name)
		r = bpf_ringbuf_reserve(&unwind_vmas, sizeof(*r), 0);
	else
		r = bpf_ringbuf_reserve(&unwind_vmas, offsetof(struct unwind_vma_rec, names), 0);
	if (!r)
		return 0; /* sent at a later event */
	r->tgid = v->tgid;
	r->dev = v->dev;
	r->ino = v->ino;
	r->start = v->start;
	r->end = v->end;
	r->off = v->off;
	r->mm = v->mm;
	r->depth = 0;
	r->complete = 0;
	if (name) {
		struct file *f = (struct file *)file;
		struct unwind_name_walk w = { .r = r, .d = (__u64)BPF_CORE_READ(f, f_path.dentry) };
		bpf_loop(MEMLENS_UNWIND_NAME_DEPTH, unwind_name_step, &w, 0);
	}
	bpf_ringbuf_submit(r, 0);
	bpf_map_update_elem(&unwind_vma_sent, &vk, &v->mm, BPF_ANY);
	if (name) {
		__u8 one = 1;
		bpf_map_update_elem(&unwind_named, &fk, &one, BPF_ANY);
	}
	return 1;
}

static long unwind_vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct unwind_vma *v = data;
	struct file *f = BPF_CORE_READ(vma, vm_file);
	if (!f)
		return 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	v->start = BPF_CORE_READ(vma, vm_start);
	v->end = BPF_CORE_READ(vma, vm_end);
	v->off = BPF_CORE_READ(vma, vm_pgoff) << 12;
	v->ino = BPF_CORE_READ(inode, i_ino);
	v->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	v->found = 1;
	v->sent = memlens_unwind_send_vma(v, (__u64)f);
	return 0;
}

/* s->last, found for pc from the vma, into unwind_met */
static __always_inline void unwind_met_keep(struct unwind_walk *s, __u64 pc)
{
	s->met_key.tgid = s->tgid;
	s->met_key.bucket = pc >> UNWIND_MET_SHIFT;
	struct unwind_met *e = bpf_map_lookup_elem(&unwind_met, &s->met_key);
	if (e && e->mm == s->mm && e->start == s->start) {
		e->maps[1] = e->maps[0];
		e->maps[0] = s->last;
		return;
	}
	/* made in the walk's map value: the BPF stack has no room for it */
	s->met.mm = s->mm;
	s->met.start = s->start;
	s->met.maps[0] = s->last;
	__builtin_memset(&s->met.maps[1], 0, sizeof(s->met.maps[1]));
	bpf_map_update_elem(&unwind_met, &s->met_key, &s->met, BPF_ANY);
}

/* The mapping holding pc among those unwind_met kept: 1 and s->last set, else 0. */
static __always_inline int unwind_met_find(struct unwind_walk *s, __u64 pc)
{
	s->met_key.tgid = s->tgid;
	s->met_key.bucket = pc >> UNWIND_MET_SHIFT;
	struct unwind_met *e = bpf_map_lookup_elem(&unwind_met, &s->met_key);
	if (!e || e->mm != s->mm || e->start != s->start)
		return 0;
	if (pc >= e->maps[0].start && pc < e->maps[0].end) {
		s->last = e->maps[0];
		return 1;
	}
	if (pc >= e->maps[1].start && pc < e->maps[1].end) {
		s->last = e->maps[1];
		return 1;
	}
	return 0;
}

/* The mapping holding pc from the process's vma and its file's table: 0 and s->last set;
 * 1: a file whose table is not loaded; -1: no file there, or the mmap lock was busy.
 *
 * bpf_find_vma try-locks the mmap lock, and where the program runs with interrupts off (a
 * page fault's perf event and tracepoint) it leaves the unlock to an irq_work that runs
 * only once they are on again: until then every other call fails (-EBUSY), so it finds one
 * mapping an event there (the open-coded vma iterator is refused there outright).  The
 * program's own code is found without it, from the mm's start_code/end_code (its
 * executable segments, relocated) and exe_file: a stack through the program and one
 * library (libc's start of main under every stack) is whole from the first event. */
static __always_inline int unwind_by_vma(struct unwind_walk *s, __u64 pc)
{
	struct mm_struct *mm = BPF_CORE_READ(bpf_get_current_task_btf(), mm);
	struct unwind_vma v = { .tgid = s->tgid, .mm = (__u64)mm };
	__u64 code = BPF_CORE_READ(mm, start_code), code_end = BPF_CORE_READ(mm, end_code);
	struct file *exe = BPF_CORE_READ(mm, exe_file);
	bool in_exe = exe && pc >= code && pc < code_end;
	if (in_exe) {
		struct inode *inode = BPF_CORE_READ(exe, f_inode);
		v.ino = BPF_CORE_READ(inode, i_ino);
		v.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	} else if (bpf_find_vma(bpf_get_current_task_btf(), pc, unwind_vma_cb, &v, 0) ||
		   !v.found) {
		return -1;
	}
	struct unwind_file_key k = { .ino = v.ino, .dev = v.dev };
	struct unwind_file *f = bpf_map_lookup_elem(&unwind_files, &k);
	if (in_exe) {
		if (!f)
			return 1;
		/* the mapping of its executable segment, as the loader made it */
		v.start = code & ~4095ULL;
		v.end = (code_end + 4095) & ~4095ULL;
		v.off = f->seg_start;
		v.sent = memlens_unwind_send_vma(&v, (__u64)exe);
		s->last.start = code;
		s->last.end = code_end;
		s->last.bias = code - f->vaddr;
	} else {
		if (!f || v.off < f->seg_start || v.off >= f->seg_end)
			return 1;
		s->last.start = v.start;
		s->last.end = v.end;
		s->last.bias = v.start - v.off + f->delta;
	}
	s->last.row_start = f->row_start;
	s->last.row_count = f->row_count;
	if (v.sent)
		unwind_met_keep(s, pc);
	return 0;
}

/* The mapping holding pc in the process's entry (binary search over its sorted maps): 1
 * and s->last set, else 0. */
static __always_inline int unwind_proc_mapping(struct unwind_walk *s, struct unwind_proc *p,
					       __u64 pc)
{
	/* the bounds live in the map value: loaded back each step they are unknown to the
	 * verifier, which then sees the steps' states as one (kept in registers, each step's
	 * tighter bounds made it walk 2^8 paths).  Volatile: else clang forwards the values
	 * just stored and keeps them in registers. */
	s->lo = 0;
	s->hi = p->nmaps < MEMLENS_UNWIND_MAX_MAPS ? p->nmaps : MEMLENS_UNWIND_MAX_MAPS;
	for (int k = 0; k < MEMLENS_UNWIND_MAP_STEPS; k++) {
		__u32 l = *(volatile __u32 *)&s->lo, h = *(volatile __u32 *)&s->hi;
		if (l >= h)
			break;
		__u32 mid = (l + h) / 2;
		if (p->maps[mid & (MEMLENS_UNWIND_MAX_MAPS - 1)].start <= pc)
			s->lo = mid + 1;
		else
			s->hi = mid;
	}
	__u32 lo = *(volatile __u32 *)&s->lo;
	__u32 i = (lo - 1) & (MEMLENS_UNWIND_MAX_MAPS - 1);
	if (lo && pc < p->maps[i].end) {
		s->last = p->maps[i];
		return 1;
	}
	return 0;
}

/* The slot of (extent, pc) in the row cache */
static __always_inline __u32 unwind_slot_of(__u32 first, __u32 rel)
{
	__u32 h = (rel ^ (first * 0x9e3779b1U)) * 0x9e3779b1U;
	return (h >> 20) & (MEMLENS_UNWIND_CACHE_SLOTS - 1);
}

/* The mapping holding pc into s->last (it was not there): 0, else 1 where no table
 * covers pc and the frame was walked by its frame pointer instead. */
static __always_inline int unwind_mapping(struct unwind_walk *s, struct unwind_proc *p, __u64 pc)
{
	int found = 0;
	if (pc >= s->prev.start && pc < s->prev.end) {
		struct unwind_mapping t = s->last;
		s->last = s->prev;
		s->prev = t;
		found = 1;
	} else {
		if (!s->proc_checked) {
			/* an entry made for another executable (before an exec) is stale */
			s->no_proc = !p || p->exe_ino != s->exe_ino;
			s->proc_checked = 1;
		}
		s->prev = s->last;
		if (p && !s->no_proc)
			found = unwind_proc_mapping(s, p, pc);
	}
	if (!found) {
		s->unmapped = 1; /* user space reads the process again */
		if (!unwind_met_find(s, pc) && unwind_by_vma(s, pc)) {
			s->fallback = 1;
			memlens_unwind_fp_step(s);
			return 1;
		}
	}
	return 0;
}

/* One step of the binary search over a file's rows for the last whose pc <= rel, its
 * bounds in the walk's map value (s->lo, s->hi): a bpf_loop callback, which the verifier
 * checks in a few passes, where a rolled loop of 24 steps was checked step by step along
 * every path into it (~3,000 instructions, a third of the walk's). */
struct unwind_search {
	struct unwind_walk *s;
	__u32 rel;
	__u32 missing;    /* a row index past the map: the tables are inconsistent */
};

static long unwind_row_search_step(__u64 k, struct unwind_search *q)
{
	struct unwind_walk *s = q->s;
	if (!s)
		return 1;
	__u32 l = s->lo, h = s->hi;
	if (l >= h)
		return 1;
	__u32 mid = l + (h - l) / 2;
	struct unwind_row *r = bpf_map_lookup_elem(&unwind_rows, &mid);
	if (!r) {
		q->missing = 1;
		return 1;
	}
	if (r->pc <= q->rel)
		s->lo = mid + 1;
	else
		s->hi = mid;
	return 0;
}

/* The caller's registers by the row of s->last's table that covers pc: 0, else 1 (the
 * walk ends). */
static __always_inline int unwind_by_row(struct unwind_walk *s, __u64 pc)
{
	struct unwind_mapping *m = &s->last;
	__u64 rel = pc - m->bias;
	__u32 first = m->row_start, count = m->row_count;
	if (!count || rel > 0xffffffffULL) {
		if (first == UNWIND_NOT_LOADED)
			s->fallback = 1;
		memlens_unwind_fp_step(s);
		return 0;
	}
	__u32 end = first + count;
	struct unwind_row *row = NULL;
	/* (a program is not migrated while it runs) */
	__u32 slot = bpf_get_smp_processor_id() * MEMLENS_UNWIND_CACHE_SLOTS +
		     unwind_slot_of(first, (__u32)rel);
	struct unwind_cache_slot *cs = bpf_map_lookup_elem(&unwind_rowcache, &slot);
	__u32 gen = s->gen;
	if (cs && gen && cs->gen == gen && cs->rel == (__u32)rel && cs->first == first) {
		row = &cs->row;
	} else {
		/* the last row whose pc <= rel */
		struct unwind_search q = { .s = s, .rel = (__u32)rel };
		s->lo = first;
		s->hi = end;
		bpf_loop(MEMLENS_UNWIND_ROW_STEPS, unwind_row_search_step, &q, 0);
		if (q.missing) {
			s->truncated = 1;
			return 1;
		}
		__u32 lo = *(volatile __u32 *)&s->lo;
		if (lo == first) {
			memlens_unwind_fp_step(s);
			return 0;
		}
		__u32 idx = lo - 1;
		row = bpf_map_lookup_elem(&unwind_rows, &idx);
		if (!row) {
			s->truncated = 1;
			return 1;
		}
		if (cs && gen) {
			cs->rel = (__u32)rel;
			cs->first = first;
			cs->gen = gen;
			cs->row = *row;
		}
	}
	__u8 kind = row->kind;
	__s64 off = row->cfa_off;
	if (kind & UNWIND_CFA_SCALED)
		off *= 8;
	__u64 cfa;
	switch (kind & 7) {
	case UNWIND_CFA_END:
		s->done = 1;
		return 1;
	case UNWIND_CFA_RSP:
		cfa = s->sp + off;
		break;
	case UNWIND_CFA_RBP:
		if (!s->bp_valid) {
			s->truncated = 1;
			return 1;
		}
		cfa = s->bp + off;
		break;
	case UNWIND_CFA_PLT:
		/* binutils' PLT entries: 8 more once the entry's push has run */
		cfa = s->sp + off + (((s->ip & 15) >= (__u64)row->rbp_off) ? 8 : 0);
		break;
	case UNWIND_CFA_DEREF_RBP:
		if (!s->bp_valid || unwind_read(s, s->bp + off, &cfa)) {
			s->truncated = 1;
			return 1;
		}
		break;
	case UNWIND_CFA_SIGNAL: {
		/* every register from the sigcontext the kernel pushed: rsp at sp+off */
		__u64 rsp, rip, rbp;
		if (unwind_read(s, s->sp + off, &rsp) ||
		    unwind_read(s, s->sp + off + UNWIND_SIG_RIP, &rip) ||
		    unwind_read(s, s->sp + off + UNWIND_SIG_RBP, &rbp)) {
			s->truncated = 1;
			return 1;
		}
		s->sp = rsp;
		s->ip = rip;
		s->bp = rbp;
		s->bp_valid = 1;
		s->exact = 1; /* the interrupted instruction itself */
		return 0;
	}
	case UNWIND_CFA_GAP:
		memlens_unwind_fp_step(s);
		return 0;
	default:
		s->truncated = 1;
		return 1;
	}
	__u64 ra;
	if (cfa <= s->sp || unwind_read(s, cfa - 8, &ra) ||
	    unwind_return_address(s, cfa - 8, &ra)) {
		s->truncated = 1;
		return 1;
	}
	switch (kind >> 4) {
	case UNWIND_RBP_SAME:
		break;
	case UNWIND_RBP_AT_CFA:
		if (unwind_read(s, cfa + row->rbp_off * 8, &s->bp))
			s->bp_valid = 0;
		break;
	case UNWIND_RBP_AT_RBP:
		if (!s->bp_valid || unwind_read(s, s->bp + row->rbp_off * 8, &s->bp))
			s->bp_valid = 0;
		break;
	default:
		s->bp_valid = 0;
	}
	s->sp = cfa;
	s->ip = ra;
	s->exact = 0;
	return 0;
}


/* One frame: its pc stored, the caller's registers found (0), or the walk ends (1).  A
 * global function: the verifier checks it once per program, its arguments unknown, where
 * the bpf_loop callback that calls it (static: the kernel refuses a global callback) is
 * checked again until the states it starts from repeat.  The mapping and row steps above
 * are inlined in it: a BPF-to-BPF call costs ~20 ns here (the kernel's return-stack
 * mitigations), and global functions for them and for each stack read (fewer
 * instructions to check) made an 8-frame walk ~350-500 ns slower; this one call a frame
 * costs ~70 ns a walk.  Their loops are bpf_loop callbacks instead. */
__attribute__((noinline)) int memlens_unwind_step(struct unwind_walk *s, struct stack_trace *st,
						  struct unwind_proc *p)
{
	if (!s || !st || s->done)
		return 1;
	if (!s->ip) {
		s->done = 1;
		return 1;
	}
	__u32 n = s->n;
	if (n >= MEMLENS_STACK_DEPTH) {
		s->truncated = 1;
		return 1;
	}
	st->ips[n] = s->ip;
	s->n = n + 1;
	/* a return address may be the first byte after a call to a noreturn function: the
	 * call itself is one byte before */
	__u64 pc = s->exact ? s->ip : s->ip - 1;
	/* consecutive frames are mostly in one file: the last mapping found is kept, and the
	 * one before it */
	if ((pc < s->last.start || pc >= s->last.end) && unwind_mapping(s, p, pc))
		return 0;
	return unwind_by_row(s, pc);
}

static long unwind_frame(__u64 index, struct unwind_ctx *c)
{
	int r = memlens_unwind_step(c->s, c->st, c->p);
	/* the verifier knows nothing of a global function's result, and bpf_loop takes 0 or
	 * 1 (clang, which knows the body, would return it as is) */
	asm volatile("" : "+r"(r));
	return r ? 1 : 0;
}

/* The current task's user stack into stack_scratch's ips, by the tables: its length in
 * bytes (-1: no scratch; the caller takes the kernel's walk).  A global function: the
 * verifier checks it once per program, not once per call site (several per program: a
 * key's stack, a trace event's), and the walk is most of what it has to check.  The task's
 * fields are read through its BTF pointer (plain loads the JIT guards), not with
 * bpf_probe_read_kernel calls: seven of those were ~200 ns an event. */
__attribute__((noinline)) long memlens_unwind_user(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 zero = 0;
	struct unwind_ctx c = {};
	struct unwind_walk *s = bpf_map_lookup_elem(&unwind_scratch, &zero);
	if (!s)
		return -1;
	c.s = s;
	c.st = bpf_map_lookup_elem(&stack_scratch, &zero);
	__u64 *gen = bpf_map_lookup_elem(&unwind_gen, &zero);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct mm_struct *mm = task->mm;
	if (!mm)
		return 0; /* a kernel thread: no user stack */
	/* not the window: 1 KiB cleared per event for nothing */
	__builtin_memset(s, 0, offsetof(struct unwind_walk, win));
	struct file *exe = mm->exe_file;
	s->exe_ino = exe ? exe->f_inode->i_ino : 0;
	s->mm = (__u64)mm;
	s->start = task->group_leader->start_time;
	s->gen = gen ? (__u32)*gen : 0;
	/* uretprobes pending in this thread: their trampoline's address and the first
	 * instance (none pending, as nearly always: tramp 0, no return address compared) */
	if (bpf_core_field_exists(task->utask)) {
		struct uprobe_task *ut = task->utask;
		struct return_instance *ri = ut ? ut->return_instances : NULL;
		struct xol_area *xa = ri ? mm->uprobes_state.xol_area : NULL;
		if (xa) {
			s->tramp = xa->vaddr;
			s->ri = (__u64)ri;
		}
	}
	/* the entry is checked against exe_ino at the first frame that needs it (no branch
	 * on it here: the callback is verified once, with an entry that may be NULL) */
	c.p = bpf_map_lookup_elem(&unwind_procs, &tgid);
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	s->tgid = tgid;
	s->ip = regs->ip;
	s->sp = regs->sp;
	s->bp = regs->bp;
	s->bp_valid = 1;
	s->exact = 1;
	if (s->tramp && s->ip - s->tramp < MEMLENS_UNWIND_TRAMP_BYTES) {
		/* in the trampoline: its function has returned (its slot popped, up to three
		 * registers pushed), and the stack goes on from its caller's return address */
		__u64 ra;
		if (!memlens_unwind_uretprobe(s, s->sp - 8, &ra, 1)) {
			s->ip = ra;
			s->exact = 0;
		}
	}
	/* one step more than the frames stored: a stack deeper than that is seen truncated */
	bpf_loop(MEMLENS_STACK_DEPTH + 1, unwind_frame, &c, 0);
	if (s->no_proc)
		unwind_request(tgid, 1);
	else if (s->unmapped)
		unwind_request(tgid, 2); /* dlopen, a JIT: read its mappings again */
	if (s->fallback)
		count_drop(MEMLENS_DROP_UNWIND_FALLBACK);
	__u32 n = s->n;
	if (s->truncated) {
		/* counted, and marked in the stack itself: every output shows it */
		count_drop(MEMLENS_DROP_UNWIND_TRUNCATED);
		struct stack_trace *st = c.st;
		if (st) {
			if (n > MEMLENS_STACK_DEPTH - 1)
				n = MEMLENS_STACK_DEPTH - 1;
			st->ips[n] = MEMLENS_STACK_TRUNCATED;
			n++;
		}
	}
	return n * sizeof(__u64);
}

struct unwind_row unwind_row_btf_anchor __attribute__((unused));
struct unwind_proc unwind_proc_btf_anchor __attribute__((unused));
struct unwind_request unwind_request_btf_anchor __attribute__((unused));
struct unwind_vma_rec unwind_vma_rec_btf_anchor __attribute__((unused));
#endif /* MEMLENS_UNWIND */

/* The loops over a stack's frames, as bpf_loop callbacks where the kernel has bpf_loop
 * (5.17; a CO-RE test of its helper id, resolved by libbpf at load: the other branch is
 * dead code the verifier never walks).  The verifier checks a callback's body once, where
 * it checks a rolled loop over 127 frames an iteration at a time with the loop's state:
 * the two loops below were ~2,900 of the ~3,500 instructions it checked for a stacked
 * count program, ~5 ms of every stack tool's start.  (Unrolled, or hashing all 127 slots
 * without a branch, cost as much at load or ~400 ns an event.) */
struct memlens_frames_ctx {
	struct stack_trace *st;
	__u64 h;
	__u32 from;
};

static long memlens_hash_frame(__u32 i, void *data)
{
	struct memlens_frames_ctx *c = data;
	if (i >= MEMLENS_STACK_DEPTH)
		return 1;
	c->h = (c->h ^ c->st->ips[i]) * 0x100000001b3ULL;
	return 0;
}

static long memlens_zero_frame(__u32 i, void *data)
{
	struct memlens_frames_ctx *c = data;
	__u32 k = c->from + i;
	if (k >= MEMLENS_STACK_DEPTH)
		return 1;
	c->st->ips[k] = 0;
	return 0;
}

/* The len bytes of frames in stack_scratch into `stacks`: their key (0: the store is full,
 * counted).  The key is FNV-1a over the frames; a new stack's tail is zeroed before it is
 * stored (bpf_get_stack and the walk leave it as the last stack left it: equal stacks must
 * read equal).  A global function, as memlens_unwind_user: checked once per program. */
__attribute__((noinline)) __u64 memlens_stack_commit(__u64 len, __u64 user)
{
	__u32 zero = 0;
	struct stack_trace *st = bpf_map_lookup_elem(&stack_scratch, &zero);
	if (!st)
		return 0;
	__u32 n = len / sizeof(__u64);
	if (n > MEMLENS_STACK_DEPTH)
		n = MEMLENS_STACK_DEPTH;
	struct memlens_frames_ctx c = {.st = st, .h = 0xcbf29ce484222325ULL, .from = n};
	bool loops = bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop);
	if (loops) {
		bpf_loop(n, memlens_hash_frame, &c, 0);
	} else {
		for (__u32 i = 0; i < MEMLENS_STACK_DEPTH; i++) {
			if (i >= n)
				break;
			c.h = (c.h ^ st->ips[i]) * 0x100000001b3ULL;
		}
	}
	__u64 h = c.h | 1; /* 0 means "no stack" */
	if (user)
		h ^= 2; /* a user and a kernel stack never share a key */
	if (bpf_map_lookup_elem(&stacks, &h))
		return h;
	if (loops) {
		bpf_loop(MEMLENS_STACK_DEPTH - n, memlens_zero_frame, &c, 0);
	} else {
		/* from n up: one path an iteration for the verifier, where a test of each
		 * frame against n made it walk four */
		__u64 k = n;
		for (int i = 0; i < MEMLENS_STACK_DEPTH; i++) {
			if (k >= MEMLENS_STACK_DEPTH)
				break;
			st->ips[k] = 0;
			k++;
			__asm__ volatile("" : "+r"(k)); /* not a memset call */
		}
	}
	long err = bpf_map_update_elem(&stacks, &h, st, BPF_NOEXIST);
	if (err && !bpf_map_lookup_elem(&stacks, &h)) {
		count_insert_failure(err, MEMLENS_DROP_STACK_FULL, MEMLENS_DROP_STACK_NOMEM);
		return 0;
	}
	return h;
}

/* The current stack's key in `stacks` (stored there if new); 0 when there is none, with
 * the reason counted (no stack to walk: "missing"; store full: "lost").  A kernel stack
 * of an event that happened in user mode (a perf event at a user page fault) is empty by
 * nature, not missing: kernel_may_be_empty leaves that uncounted.  With MEMLENS_UNWIND
 * and unwind_dwarf set, user stacks are unwound with the tables (above). */
static __always_inline __u64 stack_store_walk(void *ctx, __u64 flags, bool kernel_may_be_empty,
					       const bool walk)
{
	__u32 zero = 0;
	struct stack_trace *st = bpf_map_lookup_elem(&stack_scratch, &zero);
	if (!st)
		return 0;
	long len = -1;
#ifdef MEMLENS_UNWIND
	if (walk && unwind_dwarf && (flags & BPF_F_USER_STACK))
		len = memlens_unwind_user();
#endif
	if (len < 0)
		len = bpf_get_stack(ctx, st->ips, sizeof(st->ips), flags);
	if (len <= 0) {
		if (!(kernel_may_be_empty && !(flags & BPF_F_USER_STACK)))
			count_drop(MEMLENS_DROP_STACK_MISSING);
		return 0;
	}
	return memlens_stack_commit(len, flags & BPF_F_USER_STACK);
}

/* walk: a constant of the program; false compiles the walk out (the hand-over's twins,
 * which never walk: the verifier then has none of its code to check and cut) */
static __always_inline __u64 stack_store_opt(void *ctx, __u64 flags, bool kernel_may_be_empty)
{
	return stack_store_walk(ctx, flags, kernel_may_be_empty, true);
}

static __always_inline __u64 stack_store(void *ctx, __u64 flags)
{
	return stack_store_opt(ctx, flags, false);
}

/* clang emits BTF for the record only if something uses the type */
struct stack_trace stack_trace_btf_anchor __attribute__((unused));
#endif /* MEMLENS_STACK_STORE */

#ifdef MEMLENS_UNWIND
/* ---- The hand-over (core/handover.py) -----------------------------------------------------
 * A tool that walks user stacks attaches a twin of its program verified without the walk
 * (a few ms of the verifier instead of tens) and prints its banner; the whole program,
 * loaded next from a second copy of the object sharing its maps, goes in a one-entry
 * program array the twin tail-calls.  A tail call that succeeds does not return, so each
 * event runs one of the two bodies: the twin's until the slot is filled (user stacks by
 * frame pointers, counted as unwind_fallback), the whole program's after.  A program array
 * holds programs of one type (and, for tracing programs, of one attach target: the
 * kernel's bpf_prog_map_compatible): one array for each hook a tool hands over.
 * core/handover.py sets hand_over in the first copy only. */
const volatile bool hand_over = false;

#define MEMLENS_HAND_OVER_ARRAY(name)                   \
	struct {                                        \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY);  \
		__uint(max_entries, 1);                 \
		__type(key, __u32);                     \
		__type(value, __u32);                   \
	} name SEC(".maps")
#endif /* MEMLENS_UNWIND */

#endif /* __MEMLENS_BPF_H */
