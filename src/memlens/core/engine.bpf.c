// SPDX-License-Identifier: GPL-2.0
// The counting engine: one generic program per attach kind, whose key, filter and sum are
// chosen by user space in rodata before load.  One program attached many times serves
// `t:vmscan:*`: each attachment carries a BPF cookie, the probe's number.  (Not the trace
// event id a record starts with: syscall tracepoints hand BPF a pt_regs pointer there.)
//
// Counts live in `counts` (hash: engine_key -> count, sum).  User space drains it with
// lookup-and-delete each tick, so the map holds only the keys active since the last drain
// (a day-long run with many short-lived processes stays bounded), and no increment is lost
// between a read and a reset.  A key that cannot be inserted is counted in drops.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>
#define MEMLENS_STACK_STORE
#define MEMLENS_UNWIND /* user stacks by .eh_frame (memlens.bpf.h) */
#include "memlens.bpf.h"
#include "engine.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 key_parts = 0;        /* enum engine_key_part */
/* Several probes: each attachment's BPF cookie says which (kernel >= 5.15).  One probe
 * needs none, and with this false the verifier never sees the helper call, so a single
 * probe still loads on kernels without cookies. */
const volatile bool use_cookie = false;
const volatile bool cgroup_v1 = false;     /* cgroup key: v1 memory hierarchy, else v2 */
const volatile bool announce = false;      /* send engine_seen for each new key */
const volatile bool trace_mode = false;    /* stream engine_event per hit, no counting */
const volatile bool need_record = false;   /* copy the tracepoint record (fields, filter) */
const volatile __u32 record_size = 0;      /* bytes of the record to copy (<= RECORD_MAX) */
/* trace mode: the bytes streamed per hit — engine_event's head, the record, an end's begin
 * record placed right after it in data[] at begin_off — not the whole 864-byte struct: a
 * 24-byte syscall record makes a ~150-byte event, 5-6 times as many in the same ring */
const volatile __u32 event_size = sizeof(struct engine_event);
const volatile __u32 begin_off = ENGINE_RECORD_MAX;
/* bytes of a begin's record its `starts` entry keeps for the end (trace mode; 0 when none
 * is kept): user space makes the map's values that size (engine_start's head and
 * begin_keep bytes of data[]), not the whole struct (drsnoop's 4096 begins of 296 bytes
 * were ~0.6 ms of its load, and 10240 ~3 MB for the counting pairs) */
const volatile __u32 begin_keep = ENGINE_BEGIN_MAX;
/* per probe: the key field, the summed fields, KEY_FILE's inode and device, KEY_STR */
const volatile struct field_layout layouts[ENGINE_MAX_PROBES][L_NR] = {};
/* ends of latency pairs whose begin came before tracing: counted (without time) or not */
const volatile bool count_unstarted = false;
/* key fields masked in the kernel (0: whole): gfp_flags & (the bits that pick a kmalloc
 * cache type) makes a small key out of a wide field */
const volatile __u64 field_mask = 0, field2_mask = 0;
/* perf events: count only faults in this kind of mapping (enum engine_vma_kind) */
const volatile __u32 vma_select = VMA_ANY;
const volatile __u32 nfilters = 0;
const volatile __u32 filt_off[ENGINE_MAX_FILTERS] = {};
const volatile __u32 filt_size[ENGINE_MAX_FILTERS] = {};
const volatile bool filt_signed[ENGINE_MAX_FILTERS] = {};
const volatile __u32 filt_op[ENGINE_MAX_FILTERS] = {};
const volatile __u64 filt_val[ENGINE_MAX_FILTERS] = {};
const volatile __u32 filt_probe[ENGINE_MAX_FILTERS] = {}; /* the probe a term is for, or all */
/* KEY_FIELD on a perf event: its sampled address (else 0, the field being a tracepoint's) */
const volatile bool perf_field_addr = false;
/* latency pairs: each probe's role (enum engine_role), and for a begin, its end's number */
const volatile __u8 probe_role[ENGINE_MAX_PROBES] = {};
const volatile __u8 probe_partner[ENGINE_MAX_PROBES] = {};
const volatile bool want_hist = false;
const volatile __u64 hist_div = 1;  /* ns per histogram unit (1000: usecs, as BCC prints) */

/* The hand-over (memlens.bpf.h, core/handover.py): a system-wide stack tool attaches the
 * *_handing twins and hands over to the whole program; one array for the tracepoint
 * program, one for the perf one. */
MEMLENS_HAND_OVER_ARRAY(hand_over_tp);
MEMLENS_HAND_OVER_ARRAY(hand_over_perf);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct engine_key);
	__type(value, struct engine_value);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 1024);
} events SEC(".maps");

/* The tracepoint record, copied once per hit when fields are read: a variable offset into
 * a map value is what the verifier accepts (not into ctx). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct engine_event);
} scratch SEC(".maps");

/* LRU: a begin whose end never comes (the thread died, tracing started mid-way) ages out */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct engine_start_key);
	__type(value, struct engine_start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct engine_start);
} start_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENGINE_MAX_PROBES * 64);
	__type(key, struct engine_hist_key);
	__type(value, __u64);
} hists SEC(".maps");

/* User space's read epoch, bumped before each read of `counts`.  A value keeps the max of
 * each epoch in the slot of its parity, restarted at the epoch's first timed end; a read
 * takes the slot of the epoch that just ended, so each read gets the longest end since the
 * previous read (an interval's MAX, not the longest since the key was made), and ends that
 * come while user space reads go to the other slot instead of overwriting it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} read_epoch SEC(".maps");

static __always_inline __u64 current_epoch(void)
{
	__u32 zero = 0;
	__u64 *e = bpf_map_lookup_elem(&read_epoch, &zero);
	return e ? *e : 0;
}

struct engine_seen engine_seen_btf_anchor __attribute__((unused));
struct engine_hist_key engine_hist_key_btf_anchor __attribute__((unused));

/* A field of the copied record as a u64, sign-extended when the field is signed. */
static __always_inline __u64 record_field(const __u8 *rec, __u32 off, __u32 size, bool sign)
{
	/* the mask bounds the offset for the verifier (data[] is followed by begin_data[]
	 * in the same map value, so an 8-byte read at 511 stays inside it); it must not clear
	 * low bits: a 4-byte field at 60 is read at 60, not 56 */
	off &= ENGINE_RECORD_MAX - 1;
	switch (size) {
	case 1:
		return sign ? (__u64)(__s64) * (__s8 *)(rec + off) : *(__u8 *)(rec + off);
	case 2:
		return sign ? (__u64)(__s64) * (__s16 *)(rec + off) : *(__u16 *)(rec + off);
	case 4:
		return sign ? (__u64)(__s64) * (__s32 *)(rec + off) : *(__u32 *)(rec + off);
	default:
		return *(__u64 *)(rec + off);
	}
}

static __always_inline bool term_holds(__u64 v, __u32 op, __u64 c, bool sign)
{
	switch (op) {
	case FILT_EQ: return v == c;
	case FILT_NE: return v != c;
	case FILT_AND: return (v & c) != 0;
	}
	if (sign) {
		__s64 a = (__s64)v, b = (__s64)c;
		switch (op) {
		case FILT_LT: return a < b;
		case FILT_LE: return a <= b;
		case FILT_GT: return a > b;
		case FILT_GE: return a >= b;
		}
	} else {
		switch (op) {
		case FILT_LT: return v < c;
		case FILT_LE: return v <= c;
		case FILT_GT: return v > c;
		case FILT_GE: return v >= c;
		}
	}
	return false;
}

static __always_inline bool filters_pass(const __u8 *rec, __u32 probe)
{
	for (__u32 i = 0; i < ENGINE_MAX_FILTERS; i++) {
		if (i >= nfilters)
			break;
		if (filt_probe[i] != FILTER_ALL_PROBES && filt_probe[i] != probe)
			continue;
		__u64 v = record_field(rec, filt_off[i], filt_size[i], filt_signed[i]);
		if (!term_holds(v, filt_op[i], filt_val[i], filt_signed[i]))
			return false;
	}
	return true;
}

static __always_inline void add_value(struct engine_value *v, __u64 sum, __u64 sum2,
				      __u64 ns)
{
	__sync_fetch_and_add(&v->count, 1);
	if (sum)
		__sync_fetch_and_add(&v->sum, sum);
	if (sum2)
		__sync_fetch_and_add(&v->sum2, sum2);
	if (ns) {
		__sync_fetch_and_add(&v->timed, 1);
		__sync_fetch_and_add(&v->time_ns, ns);
		/* racy across CPUs: a max, not an exact figure */
		__u64 epoch = current_epoch();
		__u64 *mx = (epoch & 1) ? &v->max_ns_odd : &v->max_ns;
		__u64 *me = (epoch & 1) ? &v->max_epoch_odd : &v->max_epoch;
		if (*me != epoch) {
			*me = epoch;
			*mx = ns;
		} else if (ns > *mx) {
			*mx = ns;
		}
	}
}

static __always_inline void count_key_ns(struct engine_key *key, __u64 sum, __u64 sum2,
					 __u64 ns)
{
	struct engine_value *v = bpf_map_lookup_elem(&counts, key);
	if (v) {
		add_value(v, sum, sum2, ns);
		return;
	}
	struct engine_value init = { .count = 1, .sum = sum, .sum2 = sum2, .time_ns = ns,
				     .timed = ns ? 1 : 0 };
	if (ns) {
		__u64 epoch = current_epoch();
		if (epoch & 1) {
			init.max_ns_odd = ns;
			init.max_epoch_odd = epoch;
		} else {
			init.max_ns = ns;
			init.max_epoch = epoch;
		}
	}
	long err = bpf_map_update_elem(&counts, key, &init, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* another CPU inserted it between our lookup and update */
		v = bpf_map_lookup_elem(&counts, key);
		if (v)
			add_value(v, sum, sum2, ns);
		return;
	}
	if (err) {
		count_insert_failure(err, MEMLENS_DROP_MAP_FULL, MEMLENS_DROP_MAP_NOMEM);
		return;
	}
	if (!announce)
		return;
	struct engine_seen *s = bpf_ringbuf_reserve(&seen, sizeof(*s), 0);
	if (!s) {
		/* the counts are intact; only the early look at the process is missed */
		count_drop(MEMLENS_DROP_ANNOUNCE);
		return;
	}
	s->ustack = key->ustack;
	s->tgid = bpf_get_current_pid_tgid() >> 32;
	s->pad = 0;
	/* the current comm, whatever the key: a new comm under a known PID is an exec */
	bpf_get_current_comm(s->comm, sizeof(s->comm));
	bpf_ringbuf_submit(s, 0);
}

/* VM_HUGETLB (include/linux/mm.h): a #define, so not in BTF; the same bit since 2.6 */
#define ENGINE_VM_HUGETLB 0x00400000

struct vma_info {
	__u64 ino;
	__u32 dev;
	__u32 kind;
	__u64 start, end;  /* the mapping's range, for the cache below */
};

/* The last mapping looked up per process, valid while the process's mm_lock_seq has not
 * moved (every mmap/munmap/mprotect takes the mmap write lock, which bumps it).  Faults
 * come in runs over the same mapping, and bpf_find_vma is dear here: taken with interrupts
 * off, its unlock is deferred to an IRQ work, one interrupt per fault (~6 us on this VM). */
struct vma_cache_entry {
	__u32 seq;
	__u32 pad;
	struct vma_info info;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct vma_cache_entry);
} vma_cache SEC(".maps");

/* mm->mm_lock_seq (6.4+; an int, later a seqcount whose first member is the count); false
 * where the kernel has none: then every fault is looked up. */
static __always_inline bool mm_seq(struct task_struct *task, __u32 *seq)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (!mm || !bpf_core_field_exists(mm->mm_lock_seq))
		return false;
	__u32 off = bpf_core_field_offset(mm->mm_lock_seq);
	if (bpf_probe_read_kernel(seq, sizeof(*seq), (void *)mm + off))
		return false;
	return !(*seq & 1); /* odd: a writer holds the lock now */
}

static long vma_cb(struct task_struct *task, struct vm_area_struct *vma, struct vma_info *info)
{
	__u64 flags = BPF_CORE_READ(vma, vm_flags);
	struct file *f = BPF_CORE_READ(vma, vm_file);
	if (flags & ENGINE_VM_HUGETLB)
		info->kind = VMA_HUGETLB;
	else
		info->kind = f ? VMA_FILE : VMA_ANON;
	info->start = BPF_CORE_READ(vma, vm_start);
	info->end = BPF_CORE_READ(vma, vm_end);
	if (f) {
		struct inode *inode = BPF_CORE_READ(f, f_inode);
		info->ino = BPF_CORE_READ(inode, i_ino);
		info->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	}
	return 0;
}

/* The mapping holding `addr` in the current process: VMA_NONE when there is none, and
 * VMA_UNRESOLVED when bpf_find_vma could not look (it only try-locks the mmap lock, busy
 * while another thread maps or unmaps): such faults are still counted, in their own row,
 * so the totals add up whatever the selection. */
static __always_inline void vma_of(__u64 addr, struct vma_info *info)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, seq = 0;
	bool cacheable = mm_seq((struct task_struct *)task, &seq);
	if (cacheable) {
		struct vma_cache_entry *c = bpf_map_lookup_elem(&vma_cache, &tgid);
		if (c && c->seq == seq && addr >= c->info.start && addr < c->info.end) {
			*info = c->info;
			return;
		}
	}
	info->kind = VMA_NONE;
	long err = bpf_find_vma(task, addr, vma_cb, info, 0);
	if (err && err != -ENOENT) {
		info->kind = VMA_UNRESOLVED;
		info->ino = 0;
		info->dev = 0xffffffff; /* the file key of an unresolved fault: user space says so */
		return;
	}
	if (cacheable && !err) {
		struct vma_cache_entry e = { .seq = seq, .info = *info };
		bpf_map_update_elem(&vma_cache, &tgid, &e, BPF_ANY);
	}
}

static __always_inline void count_key(struct engine_key *key, __u64 sum)
{
	count_key_ns(key, sum, 0, 0);
}

static __always_inline __u64 layout_read(const __u8 *rec, __u32 probe, __u32 role)
{
	const volatile struct field_layout *l = &layouts[probe & (ENGINE_MAX_PROBES - 1)][role];
	if (!l->size)
		return 0;
	return record_field(rec, l->off, l->size, l->sign);
}

/* KEY_STR: a string field, read from the record itself (a __data_loc's text lies past the
 * fixed fields, beyond what is copied for the numeric ones). */
static __always_inline void read_str_key(void *ctx, __u32 probe, char *out)
{
	const volatile struct field_layout *l =
		&layouts[probe & (ENGINE_MAX_PROBES - 1)][L_STR];
	__u32 off = l->off, kind = l->size;
	if (!kind)
		return;
	if (kind == 3) {
		bpf_probe_read_kernel_str(out, ENGINE_STR_LEN, (void *)((long)ctx + off));
		return;
	}
	__u32 loc = 0;
	if (bpf_probe_read_kernel(&loc, sizeof(loc), (void *)((long)ctx + off)))
		return;
	__u32 where = loc & 0xffff;
	if (kind == 2)
		where += off + 4; /* __rel_loc: relative to the end of the field */
	bpf_probe_read_kernel_str(out, ENGINE_STR_LEN, (void *)((long)ctx + where));
}

/* floor(log2(v)), 0 for v <= 1 (libbpf-tools' log2l: output/hist.py's buckets) */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

static __always_inline void hist_add(__u32 probe, __u64 ns)
{
	struct engine_hist_key hk = { .probe = probe, .slot = log2_u64(ns) };
	__u64 *n = bpf_map_lookup_elem(&hists, &hk);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&hists, &hk, &one, BPF_NOEXIST) == -EEXIST) {
		n = bpf_map_lookup_elem(&hists, &hk);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
}

/* A probe's index into the per-probe arrays, masked where the verifier sees it: once the
 * compiler knows probe < ENGINE_MAX_PROBES it drops a plain mask and indexes with a copy
 * the verifier knows nothing of (count_perf: "R1 unbounded memory access"). */
static __always_inline __u32 probe_slot(__u32 probe)
{
	asm volatile("%0 &= %1" : "+r"(probe) : "i"(ENGINE_MAX_PROBES - 1));
	return probe;
}

static __always_inline __u8 role_of(__u32 probe)
{
	return probe < ENGINE_MAX_PROBES ? probe_role[probe_slot(probe)] : ROLE_COUNT;
}

/* A begin: stamp this thread for the pair's end (with the record, in trace mode). */
static __always_inline void pair_begin(__u32 probe, struct engine_event *ev)
{
	__u32 zero = 0;
	struct engine_start_key k = {
		.tid = (__u32)bpf_get_current_pid_tgid(),
		.pair = probe_partner[probe_slot(probe)],
	};
	struct engine_start *st;
	if (!trace_mode) {
		/* the thread's begin left by an earlier begin without its end (swapin: a minor
		 * fault's entry) is restamped in place: no LRU node allocated, no 272-byte copy
		 * on every page fault */
		st = bpf_map_lookup_elem(&starts, &k);
		if (st) {
			st->ts_ns = bpf_ktime_get_ns();
			st->add_count = st->add_sum = st->add_sum2 = 0;
			return;
		}
	}
	st = bpf_map_lookup_elem(&start_scratch, &zero);
	if (!st)
		return;
	st->ts_ns = bpf_ktime_get_ns();
	st->add_count = st->add_sum = st->add_sum2 = 0;
	st->size = 0;
	if (trace_mode && ev) {
		__u32 keep = begin_keep <= ENGINE_BEGIN_MAX ? begin_keep : ENGINE_BEGIN_MAX;
		st->size = record_size < keep ? record_size : keep;
		/* a helper, not __builtin_memcpy: the compiler unrolled these copies into
		 * hundreds of loads and stores (the end's, at a variable offset, byte by byte),
		 * each checked by the verifier and run on every event (count_tp_episodes: 1242
		 * -> 665 instructions, its check 1.7 -> 1.0 ms); a map value never faults */
		bpf_probe_read_kernel(st->data, keep, ev->data);
	}
	long err = bpf_map_update_elem(&starts, &k, st, BPF_ANY);
	if (err)
		count_insert_failure(err, MEMLENS_DROP_MAP_FULL, MEMLENS_DROP_MAP_NOMEM);
}

/* An end: the time since this thread's begin of the pair (0 when it began before tracing);
 * the begin's record is copied to `begin` (trace mode). */
static __always_inline __u64 pair_end(__u32 probe, struct engine_event *begin_out)
{
	struct engine_start_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .pair = probe };
	struct engine_start *st = bpf_map_lookup_elem(&starts, &k);
	if (!st)
		return 0;
	__u64 ns = bpf_ktime_get_ns() - st->ts_ns;
	if (begin_out && trace_mode) {
		/* data[] and begin_data[] are one area: begin_off <= RECORD_MAX keeps the copy
		 * inside the struct */
		__u32 off = begin_off <= ENGINE_RECORD_MAX ? begin_off : ENGINE_RECORD_MAX;
		/* no more than the entry holds (begin_keep: the map's values end there) */
		__u32 keep = begin_keep <= ENGINE_BEGIN_MAX ? begin_keep : ENGINE_BEGIN_MAX;
		begin_out->begin_size = st->size;
		begin_out->add_count = st->add_count;
		begin_out->add_sum = st->add_sum;
		begin_out->add_sum2 = st->add_sum2;
		bpf_probe_read_kernel((__u8 *)begin_out->data + off, keep, st->data);
	}
	bpf_map_delete_elem(&starts, &k);
	if (!ns)
		ns = 1; /* 0 means "no begin" */
	if (want_hist)
		hist_add(probe, ns / (hist_div ? hist_div : 1));
	return ns;
}

/* A ROLE_ADD hit: its sums go to its thread's open pair (compactsnoop: the pages each
 * migrate_pages() call of a compaction moved, summed in the kernel and handed over with the
 * episode's end, instead of an event per call streamed to user space).  Without an open
 * pair (tracing began mid-way) there is nothing to add to. */
static __always_inline void pair_add(__u32 probe, __u64 sum, __u64 sum2)
{
	struct engine_start_key k = {
		.tid = (__u32)bpf_get_current_pid_tgid(),
		.pair = probe_partner[probe_slot(probe)],
	};
	struct engine_start *st = bpf_map_lookup_elem(&starts, &k);
	if (!st)
		return;
	st->add_count += 1; /* one thread: its own entry, no other writer */
	st->add_sum += sum;
	st->add_sum2 += sum2;
}

/* `stacks` is a constant of each program: STACKS_NONE in the *_nostack programs, whose
 * code has no stack walk at all (neither the frame-pointer store nor the DWARF walk: a
 * quarter of count_tp's instructions), so the verifier has far less to check and to cut
 * as dead code for the many runs without a stack key (funccount, count: ~1 ms of ~2);
 * STACKS_FP in the hand-over's twins, which never walk (the walk is off in their copy),
 * and STACKS_ALL elsewhere. */
#define STACKS_NONE 0
#define STACKS_FP 1
#define STACKS_ALL 2

/* `shape`, the other constant of each program: which of the engine's parts it holds.  The
 * verifier checks every instruction of a program, whatever this run's rodata leaves dead,
 * and then removes the dead ones a block at a time, each removal moving the rest of the
 * program and its per-instruction data: count_tp_nostack was ~1840 instructions of which
 * funccount runs 180, and its check took ~1.1 ms where count_tp_simple's 330 take ~0.4
 * (bench/verifier_stats.py).  User space loads the smallest variant holding what the run
 * needs (core/engine.py, STACKLESS); the *_nostack programs hold everything. */
#define SHAPE_RECORD 0x01    /* the tracepoint's record copied: fields, sums, file keys */
#define SHAPE_FILTERS 0x02   /* filter terms on the record's fields */
#define SHAPE_PAIRS 0x04     /* begin, add and end probes: latencies, sums per episode */
#define SHAPE_TRACE 0x08     /* events streamed (trace_mode) */
#define SHAPE_COUNT 0x10     /* counts by key (not trace_mode) */
#define SHAPE_RICH_KEYS 0x20 /* file and string keys; a perf event's mapping (vma_of) */
#define SHAPE_ALL 0x3f

static __always_inline void fill_key(void *ctx, struct engine_key *key, __u32 probe,
				     __u64 field, const int stacks)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 parts = key_parts;
	if (parts & KEY_TGID)
		key->tgid = id >> 32;
	if (parts & KEY_TID)
		key->tid = (__u32)id;
	if (parts & KEY_COMM)
		bpf_get_current_comm(key->comm, sizeof(key->comm));
	if (parts & KEY_CGROUP) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		struct kernfs_node *kn = task_cgroup_kn(task, cgroup_v1);
		key->cgroup = kn ? BPF_CORE_READ(kn, id) : 0;
	}
	if (stacks && (parts & KEY_USTACK)) {
		key->ustack = stack_store_walk(ctx, BPF_F_USER_STACK, false, stacks == STACKS_ALL);
		if (hand_over)
			count_drop(MEMLENS_DROP_UNWIND_FALLBACK); /* the walk not loaded yet */
	}
	if (stacks && (parts & KEY_KSTACK))
		key->kstack = stack_store_opt(ctx, 0, true);
	if (parts & KEY_PROBE)
		key->probe = probe;
	if (parts & KEY_FIELD)
		key->field = field;
}

/* Streams one hit (trace mode): the event is made in the per-CPU scratch, where the
 * record (need_record) and an end's begin record already are, and its first event_size
 * bytes are copied to the ring. */
static __always_inline void emit_event(void *ctx, struct engine_event *e, __u32 probe,
				       __u64 latency_ns, const int stacks)
{
	if (e) {
		e->size = need_record ? record_size : 0;
		if (!latency_ns) { /* else pair_end set them */
			e->begin_size = 0;
			e->add_count = e->add_sum = e->add_sum2 = 0;
		}
	} else {
		__u32 zero = 0;
		e = bpf_map_lookup_elem(&scratch, &zero);
		if (!e)
			return;
		e->size = 0;
		e->begin_size = 0;
		e->add_count = e->add_sum = e->add_sum2 = 0;
	}
	e->latency_ns = latency_ns;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->pad2 = 0;
	struct kernfs_node *kn = task_cgroup_kn((struct task_struct *)bpf_get_current_task(),
						cgroup_v1);
	e->cgroup = kn ? BPF_CORE_READ(kn, id) : 0;
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = id >> 32;
	e->tid = (__u32)id;
	e->probe = probe;
	e->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->ustack = (stacks && (key_parts & KEY_USTACK))
		? stack_store_walk(ctx, BPF_F_USER_STACK, false, stacks == STACKS_ALL) : 0;
	if (stacks && hand_over && (key_parts & KEY_USTACK))
		count_drop(MEMLENS_DROP_UNWIND_FALLBACK); /* the walk not loaded yet */
	e->kstack = (stacks && (key_parts & KEY_KSTACK)) ? stack_store_opt(ctx, 0, true) : 0;
	__u32 n = event_size <= sizeof(*e) ? event_size : sizeof(*e);
	if (bpf_ringbuf_output(&events, e, n, 0))
		count_drop(MEMLENS_DROP_RINGBUF);
}

static __always_inline int count_tp_body(void *ctx, const int stacks, const int shape)
{
	if (!task_allowed())
		return PASS_ON;
	__u32 probe = use_cookie ? bpf_get_attach_cookie(ctx) : 0;
	struct engine_event *ev = NULL;
	__u64 field = 0, field2 = 0, sum = 0, sum2 = 0;
	if ((shape & SHAPE_RECORD) && need_record) {
		__u32 zero = 0;
		ev = bpf_map_lookup_elem(&scratch, &zero);
		if (!ev)
			return PASS_ON;
		__u32 size = record_size;
		if (size > ENGINE_RECORD_MAX)
			size = ENGINE_RECORD_MAX;
		if (bpf_probe_read_kernel(ev->data, size, ctx))
			return PASS_ON;
		if ((shape & SHAPE_FILTERS) && !filters_pass(ev->data, probe))
			return PASS_ON;
		if (key_parts & KEY_FIELD) {
			field = layout_read(ev->data, probe, L_FIELD);
			if (field_mask)
				field &= field_mask;
		}
		if (key_parts & KEY_FIELD2) {
			field2 = layout_read(ev->data, probe, L_FIELD2);
			if (field2_mask)
				field2 &= field2_mask;
		}
		sum = layout_read(ev->data, probe, L_SUM);
		sum2 = layout_read(ev->data, probe, L_SUM2);
	}
	__u64 ns = 0;
	__u8 role = (shape & SHAPE_PAIRS) ? role_of(probe) : ROLE_COUNT;
	if (role == ROLE_BEGIN) {
		pair_begin(probe, ev);
		return PASS_ON;
	}
	if (role == ROLE_ADD) {
		pair_add(probe, sum, sum2);
		return PASS_ON;
	}
	if (role == ROLE_END) {
		ns = pair_end(probe, ev);
		if (!ns && !count_unstarted)
			return PASS_ON; /* began before tracing: no time to tell */
	}
	if ((shape & SHAPE_TRACE) && trace_mode) {
		emit_event(ctx, ev, probe, ns, stacks);
		return PASS_ON;
	}
	if (!(shape & SHAPE_COUNT))
		return PASS_ON;
	struct engine_key key = {};
	if ((shape & SHAPE_RICH_KEYS) && (key_parts & KEY_FILE) && ev) {
		key.file_ino = layout_read(ev->data, probe, L_INO);
		key.file_dev = layout_read(ev->data, probe, L_DEV);
	}
	if ((shape & SHAPE_RICH_KEYS) && (key_parts & KEY_STR))
		read_str_key(ctx, probe, key.str);
	key.field2 = field2;
	fill_key(ctx, &key, probe, field, stacks);
	count_key_ns(&key, sum, sum2, ns);
	return PASS_ON;
}

SEC("tracepoint")
int count_tp(void *ctx)
{
	return count_tp_body(ctx, STACKS_ALL, SHAPE_ALL);
}

SEC("tracepoint")
int count_tp_nostack(void *ctx)
{
	return count_tp_body(ctx, STACKS_NONE, SHAPE_ALL);
}

/* counts keyed by process, thread, comm, cgroup or probe (funccount, count t:) */
SEC("tracepoint")
int count_tp_simple(void *ctx)
{
	return count_tp_body(ctx, STACKS_NONE, SHAPE_COUNT);
}

/* events with their fields, filtered or not (trace) */
SEC("tracepoint")
int count_tp_trace(void *ctx)
{
	return count_tp_body(ctx, STACKS_NONE, SHAPE_RECORD | SHAPE_FILTERS | SHAPE_TRACE);
}

/* events of a begin and its end, with both their fields (drsnoop) */
SEC("tracepoint")
int count_tp_episodes(void *ctx)
{
	return count_tp_body(ctx, STACKS_NONE, SHAPE_RECORD | SHAPE_PAIRS | SHAPE_TRACE);
}

/* count_tp attached before the walk is loaded (the hand-over, above).  Its own program:
 * a tail call anywhere in a program makes the verifier hold the whole program's combined
 * stack to tail-call limits the walk's frames exceed. */
SEC("tracepoint")
int count_tp_handing(void *ctx)
{
	bpf_tail_call(ctx, &hand_over_tp, 0); /* returns only while the slot is empty */
	return count_tp_body(ctx, STACKS_FP, SHAPE_ALL);
}

static __always_inline int count_perf_body(struct bpf_perf_event_data *ctx,
					   const int stacks, const int shape)
{
	if (!task_allowed())
		return 0;
	__u32 probe = use_cookie ? bpf_get_attach_cookie(ctx) : 0;
	/* a perf event can end a pair a tracepoint began (swapin: a user fault's entry to
	 * its accounting as major, the time it waited) or begin one */
	__u64 ns = 0;
	__u8 role = (shape & SHAPE_PAIRS) ? role_of(probe) : ROLE_COUNT;
	if (role == ROLE_BEGIN) {
		pair_begin(probe, NULL);
		return 0;
	}
	if (role == ROLE_END) {
		ns = pair_end(probe, NULL);
		if (!ns && !count_unstarted)
			return 0;
	}
	if ((shape & SHAPE_TRACE) && trace_mode) {
		emit_event(ctx, NULL, probe, ns, stacks);
		return 0;
	}
	if (!(shape & SHAPE_COUNT))
		return 0;
	struct engine_key key = {};
	__u64 addr = ctx->addr; /* a direct ctx load: the verifier rewrites it */
	if ((shape & SHAPE_RICH_KEYS) && (vma_select || (key_parts & (KEY_FILE | KEY_VMA)))) {
		struct vma_info info = {};
		vma_of(addr, &info);
		if (vma_select && info.kind != vma_select && info.kind != VMA_UNRESOLVED)
			return 0;
		if (key_parts & KEY_FILE) {
			key.file_ino = info.ino;
			key.file_dev = info.dev;
		}
		if (key_parts & KEY_VMA)
			key.vma = info.kind;
	}
	fill_key(ctx, &key, probe, perf_field_addr ? addr : 0, stacks);
	count_key_ns(&key, 0, 0, ns);
	return 0;
}

SEC("perf_event")
int count_perf(struct bpf_perf_event_data *ctx)
{
	return count_perf_body(ctx, STACKS_ALL, SHAPE_ALL);
}

SEC("perf_event")
int count_perf_nostack(struct bpf_perf_event_data *ctx)
{
	return count_perf_body(ctx, STACKS_NONE, SHAPE_ALL);
}

/* counts of a software event keyed by process, thread, comm, cgroup, probe or address
 * (count sw:, the exporter's faults by cgroup) */
SEC("perf_event")
int count_perf_simple(struct bpf_perf_event_data *ctx)
{
	return count_perf_body(ctx, STACKS_NONE, SHAPE_COUNT);
}

SEC("perf_event")
int count_perf_handing(struct bpf_perf_event_data *ctx)
{
	bpf_tail_call(ctx, &hand_over_perf, 0);
	return count_perf_body(ctx, STACKS_FP, SHAPE_ALL);
}

static __always_inline int count_regs(struct pt_regs *ctx, __u32 probe)
{
	if (!task_allowed())
		return PASS_ON;
	if (trace_mode) {
		emit_event(ctx, NULL, probe, 0, STACKS_ALL);
		return PASS_ON;
	}
	struct engine_key key = {};
	fill_key(ctx, &key, probe, 0, STACKS_ALL);
	count_key(&key, 0);
	return PASS_ON;
}

SEC("uprobe")
int count_uprobe(struct pt_regs *ctx)
{
	return count_regs(ctx, use_cookie ? bpf_get_attach_cookie(ctx) : 0);
}

SEC("usdt")
int count_usdt(struct pt_regs *ctx)
{
	return count_regs(ctx, bpf_usdt_cookie(ctx));
}

SEC("kprobe")
int count_kprobe(struct pt_regs *ctx)
{
	return count_regs(ctx, use_cookie ? bpf_get_attach_cookie(ctx) : 0);
}
