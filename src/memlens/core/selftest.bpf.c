// SPDX-License-Identifier: GPL-2.0
// Programs that exercise the runtime core itself: used by tests/kernel/test_core.py and by
// bench/bench_ringbuf.py.  Not a user-facing tool.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>
#include "memlens.bpf.h"
#include "selftest.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct selftest_value);
} by_arg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1024);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MEMLENS_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct selftest_event selftest_event_anchor __attribute__((unused));

static __always_inline void bump(__u32 idx)
{
	percpu_inc(&counts, idx);
}

/* one ring record per getppid() of the target process: ring-buffer exactness and rate */
SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	if (!task_allowed())
		return 0;
	bump(0);
	struct selftest_event *e = reserve_or_count(&events, sizeof(*e));
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->seq = bpf_get_prandom_u32();
	e->ts_ns = bpf_ktime_get_ns();
	e->stack_id = stackid_counted(ctx, &stacks, BPF_F_USER_STACK);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* getpgid(arg): a hash keyed by the argument, for whole-map batch reads */
SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	if (!task_allowed())
		return 0;
	__u64 key = ctx->args[0];
	struct selftest_value *v = bpf_map_lookup_elem(&by_arg, &key);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		return 0;
	}
	struct selftest_value init = { .count = 1, .pid = bpf_get_current_pid_tgid() >> 32 };
	update_or_count(&by_arg, &key, &init, BPF_NOEXIST);
	return 0;
}

SEC("uprobe")
int on_uprobe(struct pt_regs *ctx)
{
	bump(1);
	return 0;
}

SEC("usdt")
int on_usdt(struct pt_regs *ctx)
{
	bump(2);
	return 0;
}

SEC("perf_event")
int on_perf_event(struct bpf_perf_event_data *ctx)
{
	if (!task_allowed())
		return 0;
	bump(3);
	return 0;
}

SEC("tracepoint/nonexistent_category/nonexistent_event")
int on_missing(void *ctx)
{
	return 0;
}
