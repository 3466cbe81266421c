/* SPDX-License-Identifier: GPL-2.0 */
/* The counting engine's records, shared with Python (layouts read from this object's BTF). */
#ifndef __MEMLENS_ENGINE_H
#define __MEMLENS_ENGINE_H

/* Which parts of an event make its key: chosen by user space in rodata (key_parts). */
enum engine_key_part {
	KEY_TGID = 1 << 0,
	KEY_TID = 1 << 1,
	KEY_COMM = 1 << 2,
	KEY_CGROUP = 1 << 3,
	KEY_USTACK = 1 << 4,
	KEY_KSTACK = 1 << 5,
	KEY_PROBE = 1 << 6,
	KEY_FIELD = 1 << 7,  /* a tracepoint field, or a perf event's sample address */
	KEY_FILE = 1 << 8,   /* the file: of the mapping holding a perf event's address, or a
			      * tracepoint's inode and device fields */
	KEY_VMA = 1 << 9,    /* the kind of mapping holding a perf event's address */
	KEY_STR = 1 << 10,   /* a tracepoint's string field (a __data_loc char[] or char[N]) */
	KEY_FIELD2 = 1 << 11, /* a second integer field (kmalloc: size and gfp class) */
};

/* Where each probe's fields are, by role (a probe without the field has size 0): the same
 * field sits at different offsets in different tracepoints. */
enum engine_layout_role {
	L_FIELD = 0,
	L_SUM = 1,
	L_SUM2 = 2,
	L_INO = 3,
	L_DEV = 4,
	L_STR = 5,   /* size: 1 __data_loc, 2 __rel_loc, 3 char array (sign: its length) */
	L_FIELD2 = 6,
	L_NR = 7,
};

struct field_layout {
	__u16 off;
	__u8 size;
	__u8 sign;
};

#define ENGINE_STR_LEN 32

/* Kinds of mapping (KEY_VMA, and vma_select to count only one kind). */
enum engine_vma_kind {
	VMA_ANY = 0,
	VMA_FILE = 1,       /* file-backed (not hugetlbfs) */
	VMA_ANON = 2,       /* anonymous, incl. shared anonymous memory */
	VMA_HUGETLB = 3,    /* hugetlbfs or MAP_HUGETLB */
	VMA_NONE = 4,       /* no mapping at that address (a fault that will SIGSEGV) */
	VMA_UNRESOLVED = 5, /* not looked up: the mmap lock was busy (another thread mapping) */
};

#define ENGINE_MAX_FILTERS 8 /* terms over all probes (a probe's own filter, or all) */
#define FILTER_ALL_PROBES 0xffffffff
#define ENGINE_RECORD_MAX 512 /* bytes of a tracepoint record copied for fields and trace */

enum engine_op {
	FILT_EQ = 1, FILT_NE = 2, FILT_LT = 3, FILT_LE = 4, FILT_GT = 5, FILT_GE = 6, FILT_AND = 7,
};

/* Parts not chosen stay zero, so equal choices give equal keys. */
struct engine_key {
	__u64 ustack;   /* key in `stacks` (memlens.bpf.h); 0: none (counted in drops) */
	__u64 kstack;
	__u64 cgroup;   /* kernfs id of the task's cgroup (v1 memory hierarchy or v2) */
	__u64 field;
	__u64 file_ino;  /* KEY_FILE: inode number */
	__u32 file_dev;  /* KEY_FILE: the kernel's dev_t of the inode's superblock */
	__u32 vma;       /* KEY_VMA: enum engine_vma_kind */
	__u32 tgid;
	__u32 tid;
	__u32 probe;    /* the probe's number: the BPF cookie of its attachment */
	__u32 pad;
	char comm[16];
	char str[ENGINE_STR_LEN]; /* KEY_STR */
	__u64 field2;             /* KEY_FIELD2 */
};

#define ENGINE_MAX_PROBES 64
#define ENGINE_BEGIN_MAX 256 /* bytes of a begin record kept for its end (trace mode) */

/* A probe's part in a latency pair: the begin stamps its thread, the end measures. */
enum engine_role {
	ROLE_COUNT = 0,
	ROLE_BEGIN = 1,
	ROLE_END = 2,
	ROLE_ADD = 3,   /* adds its sum fields to its thread's open pair, given at the end */
};

struct engine_value {
	__u64 count;
	__u64 sum;      /* of the sum field (tracepoints), else 0 */
	__u64 sum2;     /* of a second sum field */
	__u64 time_ns;  /* end probes: total time since their thread's begin */
	__u64 timed;    /* end probes: how many of the counted ends had their begin seen */
	/* the longest time among the ends of one read epoch, in two slots by the epoch's
	 * parity: user space bumps the epoch, then reads the slot of the epoch that ended,
	 * which no end writes any more (see read_epoch in engine.bpf.c) */
	__u64 max_ns;       /* even epochs */
	__u64 max_epoch;
	__u64 max_ns_odd;   /* odd epochs */
	__u64 max_epoch_odd;
};

/* A begin waiting for its end: per thread and pair. */
struct engine_start_key {
	__u32 tid;
	__u32 pair;     /* the end probe's number */
};

struct engine_start {
	__u64 ts_ns;
	__u32 size;     /* bytes of data[] (trace mode) */
	__u32 pad;
	__u64 add_count; /* ROLE_ADD hits of this thread since its begin, and their sums */
	__u64 add_sum;
	__u64 add_sum2;
	__u8 data[ENGINE_BEGIN_MAX];
};

/* latency histograms: log2 buckets of ns per end probe */
struct engine_hist_key {
	__u32 probe;
	__u32 slot;
};

/* Sent once when a key is first inserted: user space snapshots the process's memory map
 * while the process lives (short-lived processes are symbolized this way). */
struct engine_seen {
	__u64 ustack;   /* resolved at once: after an exec the same PID maps other files */
	__u32 tgid;     /* the process that inserted the key (its maps name its files) */
	__u32 pad;
	char comm[16];
};

/* trace mode: one record per hit, with the tracepoint's raw record. */
struct engine_event {
	__u64 ts_ns;
	__u64 ustack;
	__u64 kstack;
	__u32 tgid;
	__u32 tid;
	__u32 probe;
	__u32 cpu;
	__u32 size;     /* bytes of data[] that hold the record */
	__u32 begin_size; /* end of a pair: bytes of begin_data[] (the begin's record) */
	__u64 latency_ns; /* end of a pair: time since its begin, else 0 */
	__u64 cgroup;     /* the task's memory cgroup (v1) or cgroup (v2): its kernfs id */
	__u32 uid;
	__u32 pad2;
	char comm[16];
	__u64 add_count;  /* end of a pair: the ROLE_ADD hits since its begin, their sums */
	__u64 add_sum;
	__u64 add_sum2;
	__u8 data[ENGINE_RECORD_MAX];
	__u8 begin_data[ENGINE_BEGIN_MAX];
};

#endif
