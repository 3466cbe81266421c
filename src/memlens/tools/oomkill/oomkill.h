/* SPDX-License-Identifier: GPL-2.0 */
/* oomkill: the record sent per OOM kill (decoded in Python from this struct's BTF). */
#ifndef __OOMKILL_H
#define __OOMKILL_H

#define OOM_CGROUP_LEVELS 8
#define OOM_CGROUP_NAME_LEN 64
#define OOM_STACK_DEPTH 32

/* what walked the trigger's user stack: the kernel's frame-pointer walk (--stack-unwind fp,
 * or the first program before the hand-over), or the .eh_frame tables' walk */
enum oom_walk {
	OOM_WALK_FP = 0,
	OOM_WALK_DWARF = 1,       /* every frame by the tables */
	OOM_WALK_MIXED = 2,       /* by the tables, some frames by frame pointers */
};

struct oom_event {
	__u64 ts_ns;              /* bpf_ktime_get_boot_ns() */
	__u32 trigger_pid;        /* tgid of the task in whose context the kill ran */
	__u32 victim_pid;
	__u32 uid;
	__s32 oom_score_adj;
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__u64 shmem_rss_kb;
	__u64 pgtables_kb;
	__u64 cgroup_id;          /* kernfs id (= directory inode) of the victim's memcg */
	__u32 cgroup_levels;      /* how many names below were read, leaf first */
	__u8 has_details;         /* 0: only pid known (fallback hook) */
	__u8 ustack_walk;         /* enum oom_walk: what walked the trigger's user stack */
	__u8 cgroup_truncated;    /* more levels above the names read */
	__u8 handing;             /* recorded by the first program, before the hand-over */
	char trigger_comm[16];
	char victim_comm[16];
	char cgroup[OOM_CGROUP_LEVELS][OOM_CGROUP_NAME_LEN];
	/* the trigger's stacks at the kill (bytes from bpf_get_stack, < 0: errno) */
	__s32 kstack_bytes;
	__s32 ustack_bytes;
	__u64 kstack[OOM_STACK_DEPTH];
	__u64 ustack[OOM_STACK_DEPTH];
};

#endif
