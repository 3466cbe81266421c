// SPDX-License-Identifier: GPL-2.0
// oomkill: one record per OOM kill, with the victim's RSS and memory cgroup.
// Hooks, in order of preference (chosen by probing in Python):
//   raw_tp/mark_victim      tp_btf/mark_victim's arguments: the victim's task_struct
//                           (cgroup path, RSS), where vmlinux BTF gives that prototype
//   tracepoint/oom/mark_victim  the stable tracepoint's fields (victim pid, RSS on >= 6.8)
// Unlike the kprobe on oom_kill_process used by BCC/libbpf-tools, both work on kernels
// without kprobes (this project's development machines).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#define MEMLENS_STACK_STORE /* stack_scratch: the unwinder's output (`stacks` sized 1) */
#define MEMLENS_UNWIND /* the trigger's user stack by .eh_frame (memlens.bpf.h) */
#include "memlens.bpf.h"
#include "oomkill.h"

char LICENSE[] SEC("license") = "GPL";

const volatile bool targ_cgroup_v1_memcg = true; /* which hierarchy names the victim's cgroup */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

/* clang emits BTF for the record only if something uses the type */
struct oom_event oom_event_btf_anchor __attribute__((unused));

/* Before 6.2 (commit f1a7941243c1 "mm: convert mm's rss stats into percpu_counter")
 * rss_stat was a struct of atomic_long_t. */
struct mm_rss_stat___pre62 {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));
struct mm_struct___pre62 {
	struct mm_rss_stat___pre62 rss_stat;
} __attribute__((preserve_access_index));

static __always_inline __u64 mm_counter(struct mm_struct *mm, int member)
{
	/* same value the tracepoint prints: percpu_counter_read_positive() */
	struct mm_struct___pre62 *old = (void *)mm;
	if (bpf_core_field_exists(old->rss_stat.count)) {
		long v = BPF_CORE_READ(old, rss_stat.count[member].counter);
		return v > 0 ? v : 0;
	}
	s64 v = BPF_CORE_READ(mm, rss_stat[member].count);
	return v > 0 ? v : 0;
}

/* The hand-over (memlens.bpf.h, core/handover.py): system wide the twins below (*_handing)
 * are attached first (~5 ms of the verifier instead of ~65), each recording a kill itself
 * until the whole program is in its array; until then the trigger's user stack is the
 * kernel's frame-pointer walk (ustack_walk says so).  One array for each hook. */
MEMLENS_HAND_OVER_ARRAY(hand_over_tp);
MEMLENS_HAND_OVER_ARRAY(hand_over_raw);

/* The trigger's user stack: unwound with the tables where --stack-unwind says so (whole
 * through code without frame pointers), else, or where that finds nothing, the kernel's
 * frame-pointer walk.  A stack deeper than the record ends with the truncation mark. */
static __always_inline void trigger_user_stack(void *ctx, struct oom_event *e)
{
	long len = -1;
	e->ustack_walk = OOM_WALK_FP;
	if (unwind_dwarf) {
		__u32 zero = 0;
		len = memlens_unwind_user();
		struct stack_trace *st = bpf_map_lookup_elem(&stack_scratch, &zero);
		if (len > 0 && st) {
			__builtin_memcpy(e->ustack, st->ips, sizeof(e->ustack));
			if (len > sizeof(e->ustack)) {
				len = sizeof(e->ustack);
				e->ustack[OOM_STACK_DEPTH - 1] = MEMLENS_STACK_TRUNCATED;
			}
			struct unwind_walk *w = bpf_map_lookup_elem(&unwind_scratch, &zero);
			/* some frames by frame pointers, for want of their file's table */
			e->ustack_walk = w && w->fallback ? OOM_WALK_MIXED : OOM_WALK_DWARF;
		} else {
			len = -1;
		}
	}
	if (hand_over) /* the walk not loaded yet: the trigger asks for its tables (Python) */
		count_drop(MEMLENS_DROP_UNWIND_FALLBACK);
	if (len < 0)
		len = bpf_get_stack(ctx, e->ustack, sizeof(e->ustack), BPF_F_USER_STACK);
	e->ustack_bytes = len;
	e->handing = hand_over;
}

static __always_inline void fill_trigger(struct oom_event *e)
{
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->trigger_pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->trigger_comm, sizeof(e->trigger_comm));
}

static __always_inline int mark_victim_task_body(void *ctx, struct task_struct *task, uid_t uid)
{
	/* -p / --cgroup select victims (the trigger may be anywhere) */
	if (targ_tgid && BPF_CORE_READ(task, tgid) != targ_tgid)
		return 0;
	if (!cgroup_allowed_task(task))
		return 0;
	struct oom_event *e = reserve_or_count(&events, sizeof(*e));
	if (!e)
		return 0;
	/* the stacks after the head are fully written by bpf_get_stack (zero padded) */
	__builtin_memset(e, 0, __builtin_offsetof(struct oom_event, kstack_bytes));
	fill_trigger(e);
	e->victim_pid = BPF_CORE_READ(task, tgid);
	e->uid = uid;
	e->oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	BPF_CORE_READ_STR_INTO(&e->victim_comm, task, comm);
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (mm) {
		int page_kb_shift = 2; /* PAGE_SHIFT - 10 for 4 KiB pages */
		e->total_vm_kb = BPF_CORE_READ(mm, total_vm) << page_kb_shift;
		e->file_rss_kb = mm_counter(mm, 0) << page_kb_shift;  /* MM_FILEPAGES */
		e->anon_rss_kb = mm_counter(mm, 1) << page_kb_shift;  /* MM_ANONPAGES */
		e->shmem_rss_kb = mm_counter(mm, 3) << page_kb_shift; /* MM_SHMEMPAGES */
		e->pgtables_kb = BPF_CORE_READ(mm, pgtables_bytes.counter) >> 10;
	}
	struct kernfs_node *kn = task_cgroup_kn(task, targ_cgroup_v1_memcg);
	e->cgroup_id = kn ? BPF_CORE_READ(kn, id) : 0;
	for (int i = 0; i < OOM_CGROUP_LEVELS && kn; i++) {
		const char *name = BPF_CORE_READ(kn, name);
		bpf_probe_read_kernel_str(e->cgroup[i], OOM_CGROUP_NAME_LEN, name);
		e->cgroup_levels = i + 1;
		kn = kn_parent(kn);
	}
	e->cgroup_truncated = kn != NULL;
	e->has_details = 1;
	/* the trigger is current: why it needed memory (kernel) and from where (user) */
	e->kstack_bytes = bpf_get_stack(ctx, e->kstack, sizeof(e->kstack), 0);
	trigger_user_stack(ctx, e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The typed hook, as a raw tracepoint: the arguments of tp_btf/mark_victim (the victim's
 * task, its uid), whose prototype Python checked in vmlinux BTF (core/hooks.py TpBtf), read
 * through CO-RE probe reads alike.  Not SEC("tp_btf"): libbpf resolves a tp_btf program's
 * attach BTF id by loading and parsing all of vmlinux BTF (its btf_custom_path serves
 * CO-RE only), ~16-20 ms of oomkill's start before its banner; a raw tracepoint attaches by
 * name.  (A tp_btf twin does hand over: the kernel takes two tracing programs on one BTF
 * id into one program array.) */
SEC("raw_tp/mark_victim")
int BPF_PROG(mark_victim_raw, struct task_struct *task, uid_t uid)
{
	return mark_victim_task_body(ctx, task, uid);
}

SEC("raw_tp/mark_victim")
int BPF_PROG(mark_victim_raw_handing, struct task_struct *task, uid_t uid)
{
	bpf_tail_call(ctx, &hand_over_raw, 0);
	return mark_victim_task_body(ctx, task, uid);
}

/* Fallback: the classic tracepoint.  RSS fields exist since 6.8 (commit 72ba14deb40a
 * "mm: oom: add rss and memcg info to mark_victim"): read them only where BTF says so. */
struct trace_event_raw_mark_victim___pre68 {
	int pid;
} __attribute__((preserve_access_index));

static __always_inline int mark_victim_tp_body(struct trace_event_raw_mark_victim *ctx)
{
	struct oom_event *e = reserve_or_count(&events, sizeof(*e));
	if (!e)
		return PASS_ON;
	/* the stacks after the head are fully written by bpf_get_stack (zero padded) */
	__builtin_memset(e, 0, __builtin_offsetof(struct oom_event, kstack_bytes));
	fill_trigger(e);
	e->victim_pid = BPF_CORE_READ((struct trace_event_raw_mark_victim___pre68 *)ctx, pid);
	if (targ_tgid && e->victim_pid != targ_tgid) { /* --cgroup: checked in user space */
		bpf_ringbuf_discard(e, 0);
		return PASS_ON;
	}
	if (bpf_core_field_exists(ctx->anon_rss)) {
		e->total_vm_kb = BPF_CORE_READ(ctx, total_vm);
		e->anon_rss_kb = BPF_CORE_READ(ctx, anon_rss);
		e->file_rss_kb = BPF_CORE_READ(ctx, file_rss);
		e->shmem_rss_kb = BPF_CORE_READ(ctx, shmem_rss);
		e->pgtables_kb = BPF_CORE_READ(ctx, pgtables);
		e->uid = BPF_CORE_READ(ctx, uid);
		e->oom_score_adj = BPF_CORE_READ(ctx, oom_score_adj);
		unsigned int loc = BPF_CORE_READ(ctx, __data_loc_comm);
		bpf_probe_read_kernel_str(e->victim_comm, sizeof(e->victim_comm),
					  (void *)ctx + (loc & 0xffff));
		e->has_details = 1;
	}
	e->kstack_bytes = bpf_get_stack(ctx, e->kstack, sizeof(e->kstack), 0);
	trigger_user_stack(ctx, e);
	bpf_ringbuf_submit(e, 0);
	return PASS_ON;
}

SEC("tracepoint/oom/mark_victim")
int mark_victim_tp(struct trace_event_raw_mark_victim *ctx)
{
	return mark_victim_tp_body(ctx);
}

SEC("tracepoint/oom/mark_victim")
int mark_victim_tp_handing(struct trace_event_raw_mark_victim *ctx)
{
	bpf_tail_call(ctx, &hand_over_tp, 0);
	return mark_victim_tp_body(ctx);
}
