/* SPDX-License-Identifier: GPL-2.0 */
/* Constants shared by the BPF side and Python (memlens/core/drops.py mirrors the enum). */
#ifndef __MEMLENS_COMMON_H
#define __MEMLENS_COMMON_H

#define TASK_COMM_LEN 16
#define MEMLENS_STACK_DEPTH 127
/* The last "address" of a user stack the unwinder could not finish (core/stackresolve.py
 * prints it as a marker frame): no user address, a kernel one, never a frame. */
#define MEMLENS_STACK_TRUNCATED 0xfffffffffffffffeULL

/* What a tracepoint, kprobe or perf-attached uprobe program returns: 1, "go on".  With 0
 * the kernel does not hand the hit to any perf event on that probe point
 * (perf_trace_run_bpf_submit, uprobe_perf_func), so `perf stat -e` on a tracepoint memlens
 * watched counted 0 while memlens ran.  bpftrace returns 1 too. */
#define PASS_ON 1

enum memlens_drop {
	MEMLENS_DROP_RINGBUF = 0,         /* ring buffer full: event lost */
	MEMLENS_DROP_STACK_COLLISION = 1, /* stack map hash collision: stack lost */
	MEMLENS_DROP_STACK_FULL = 2,      /* stack map full: stack lost */
	MEMLENS_DROP_STACK_MISSING = 3,   /* no stack to walk (e.g. kernel thread) */
	MEMLENS_DROP_MAP_FULL = 4,        /* a hash map was full: entry not recorded */
	MEMLENS_DROP_VMA = 5,             /* an address not resolved to its mapping */
	MEMLENS_DROP_ANNOUNCE = 6,        /* a new key not announced (ring full): its counts
					   * are intact, its symbols may be missing */
	MEMLENS_DROP_UNWIND_FALLBACK = 7, /* user stack walked by frame pointers: the process's
					   * unwind tables not loaded yet */
	MEMLENS_DROP_UNWIND_TRUNCATED = 8, /* user stack cut short: a frame the unwinder could
					    * not follow */
	MEMLENS_DROP_STACK_NOMEM = 9,     /* no memory for a new stack at that moment */
	MEMLENS_DROP_MAP_NOMEM = 10,      /* no memory for a new entry at that moment */
	MEMLENS_DROP_NR = 16,
};

#endif
