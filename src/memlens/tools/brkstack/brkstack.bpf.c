// SPDX-License-Identifier: GPL-2.0
// brkstack: count brk() calls by process, comm and user stack (the book's brkstack.bt,
// BCC's `stackcount -U t:syscalls:sys_enter_brk`).  Hook: the stable syscall tracepoint
// syscalls:sys_enter_brk, which every kernel with CONFIG_FTRACE_SYSCALLS has; no kprobes.
//
// Counting is done in the kernel (hash map keyed by {tgid, stack id, comm}).  User space
// must still learn each new process early: its stacks are symbolized against a snapshot
// of /proc/PID/maps taken while it lives, and a short-lived process (most brk callers are)
// would be gone by the end-of-run report.  Streaming every brk event would cost a ring
// buffer record per call for information the hash already holds; instead the program
// sends one small "seen" record the first time a key is inserted (BPF_NOEXIST decides the
// single winner), so the ring buffer traffic is bounded by the number of distinct stacks,
// not by the call rate.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "memlens.bpf.h"
#include "brkstack.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct brk_key);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 10240);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MEMLENS_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} seen SEC(".maps");

/* clang emits BTF for the record only if something uses the type */
struct brk_seen brk_seen_btf_anchor __attribute__((unused));

SEC("tracepoint/syscalls/sys_enter_brk")
int brk_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (!task_allowed())
		return 0;

	struct brk_key key = {};
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.user_stack_id = stackid_counted(ctx, &stacks, BPF_F_USER_STACK);
	bpf_get_current_comm(key.comm, sizeof(key.comm));

	__u64 *count = bpf_map_lookup_elem(&counts, &key);
	if (count) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	__u64 one = 1;
	long err = bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* another CPU inserted it between our lookup and update */
		count = bpf_map_lookup_elem(&counts, &key);
		if (count)
			__sync_fetch_and_add(count, 1);
		return 0;
	}
	if (err) {
		count_drop(MEMLENS_DROP_MAP_FULL);
		return 0;
	}
	struct brk_seen *s = reserve_or_count(&seen, sizeof(*s));
	if (!s)
		return 0; /* counted; the stack still resolves if the process lives */
	s->tgid = key.tgid;
	s->user_stack_id = key.user_stack_id;
	__builtin_memcpy(s->comm, key.comm, sizeof(s->comm));
	bpf_ringbuf_submit(s, 0);
	return 0;
}
