// SPDX-License-Identifier: GPL-2.0
// One trivial program per hook kind: `memlens doctor` loads and attaches each alone to
// learn what this kernel really allows (lockdown refuses fentry at load; kprobes may be
// compiled out; tp_btf needs BTF) — a feature list cannot tell that, a real attach can.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_rb SEC(".maps");

__u64 hits = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("tp_btf/sys_enter")
int BPF_PROG(probe_tp_btf, struct pt_regs *regs, long id) { return 0; }

SEC("raw_tp/sys_enter")
int probe_raw_tp(void *ctx) { return 0; }

SEC("fentry/vfs_read")
int BPF_PROG(probe_fentry) { return 0; }

SEC("kprobe/vfs_read")
int probe_kprobe(void *ctx) { return 0; }

SEC("perf_event")
int probe_perf_event(void *ctx) { return 0; }

SEC("uprobe")
int probe_uprobe(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_ringbuf(void *ctx)
{
	__u32 *e = bpf_ringbuf_reserve(&probe_rb, sizeof(*e), 0);
	if (e)
		bpf_ringbuf_discard(e, 0);
	return 0;
}
