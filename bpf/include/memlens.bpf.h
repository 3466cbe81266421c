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

static __always_inline void update_or_count(void *map, const void *key, const void *val,
					     __u64 flags)
{
	if (bpf_map_update_elem(map, key, val, flags))
		count_drop(MEMLENS_DROP_MAP_FULL);
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

/* The current stack's key in `stacks` (stored there if new); 0 when there is none, with
 * the reason counted (no stack to walk: "missing"; store full: "lost").  A kernel stack
 * of an event that happened in user mode (a perf event at a user page fault) is empty by
 * nature, not missing: kernel_may_be_empty leaves that uncounted. */
static __always_inline __u64 stack_store_opt(void *ctx, __u64 flags, bool kernel_may_be_empty)
{
	__u32 zero = 0;
	struct stack_trace *st = bpf_map_lookup_elem(&stack_scratch, &zero);
	if (!st)
		return 0;
	long len = bpf_get_stack(ctx, st->ips, sizeof(st->ips), flags);
	if (len <= 0) {
		if (!(kernel_may_be_empty && !(flags & BPF_F_USER_STACK)))
			count_drop(MEMLENS_DROP_STACK_MISSING);
		return 0;
	}
	__u32 n = len / sizeof(__u64);
	__u64 h = 0xcbf29ce484222325ULL; /* FNV-1a over the 64-bit frames */
	for (__u32 i = 0; i < MEMLENS_STACK_DEPTH; i++) {
		if (i >= n)
			break;
		h = (h ^ st->ips[i]) * 0x100000001b3ULL;
	}
	h |= 1; /* 0 means "no stack" */
	if (flags & BPF_F_USER_STACK)
		h ^= 2; /* a user and a kernel stack never share a key */
	if (bpf_map_lookup_elem(&stacks, &h))
		return h;
	/* bpf_get_stack leaves the tail as it was: zero it so that equal stacks read equal */
	for (__u32 i = 0; i < MEMLENS_STACK_DEPTH; i++) {
		if (i >= n)
			st->ips[i] = 0;
	}
	if (bpf_map_update_elem(&stacks, &h, st, BPF_NOEXIST) &&
	    !bpf_map_lookup_elem(&stacks, &h)) {
		count_drop(MEMLENS_DROP_STACK_FULL);
		return 0;
	}
	return h;
}

static __always_inline __u64 stack_store(void *ctx, __u64 flags)
{
	return stack_store_opt(ctx, flags, false);
}

/* clang emits BTF for the record only if something uses the type */
struct stack_trace stack_trace_btf_anchor __attribute__((unused));
#endif /* MEMLENS_STACK_STORE */

#endif /* __MEMLENS_BPF_H */
