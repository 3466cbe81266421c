// SPDX-License-Identifier: GPL-2.0
// slabratetop: kernel slab allocations counted by cache name in the kernel.
//
// Hooks, chosen by probing in Python (the registry declares them):
//   tracepoint kmem:kmem_cache_alloc  Linux 6.1+ (commit 2c1d697fb8ba, "mm/slab_common: drop
//                                     kmem_alloc & avoid dereferencing fields when not
//                                     using") records the cache's `name` as a __data_loc
//                                     string: read from the record, no kernel struct needed
//   kprobe kmem_cache_alloc(_node/_lru) older kernels: the cache's name and size read from
//                                     its struct kmem_cache with CO-RE (what libbpf-tools
//                                     does; BCC's copy of the struct broke at 6.8)
//   tracepoint kmem:kmalloc (+ kmalloc_node before 6.1): kmalloc has no cache name in its
//                                     record: keyed by bytes_alloc and the gfp bits that
//                                     pick the kmalloc cache type; named in Python
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "memlens.bpf.h"
#include "slabratetop.h"

char LICENSE[] SEC("license") = "GPL";

/* Record layouts, from the events' format files (offsets move between kernels). */
const volatile __u32 cache_name_off = 0;   /* kmem_cache_alloc: the __data_loc u32 of name */
const volatile __u32 cache_bytes_off = 0;  /* kmem_cache_alloc: bytes_alloc */
const volatile __u32 kmalloc_bytes_off = 0;
const volatile __u32 kmalloc_gfp_off = 0;
/* gfp bits (read from the kmalloc event's print format: the numbers moved in 6.9) */
const volatile __u64 gfp_dma = 0, gfp_reclaimable = 0, gfp_account = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct slab_key);
	__type(value, struct slab_value);
} counts SEC(".maps");

struct slab_key slab_key_btf_anchor __attribute__((unused));
struct slab_value slab_value_btf_anchor __attribute__((unused));

static __always_inline void count_alloc(struct slab_key *key, __u64 bytes)
{
	struct slab_value *v = bpf_map_lookup_elem(&counts, key);
	if (!v) {
		struct slab_value init = { .allocs = 1, .bytes = bytes };
		long err = bpf_map_update_elem(&counts, key, &init, BPF_NOEXIST);
		if (!err)
			return;
		if (err != -EEXIST) {
			count_drop(MEMLENS_DROP_MAP_FULL);
			return;
		}
		/* another CPU inserted it between our lookup and update */
		v = bpf_map_lookup_elem(&counts, key);
		if (!v)
			return;
	}
	__sync_fetch_and_add(&v->allocs, 1);
	__sync_fetch_and_add(&v->bytes, bytes);
}

static __always_inline __u64 record_u64(void *ctx, __u32 off)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), ctx + off);
	return v;
}

SEC("tracepoint")
int cache_alloc_tp(void *ctx)
{
	if (!task_allowed())
		return 0;
	struct slab_key key = {};
	__u32 loc = 0;
	bpf_probe_read_kernel(&loc, sizeof(loc), ctx + cache_name_off);
	/* __data_loc: the string's offset in the record (low 16 bits), its length above */
	bpf_probe_read_kernel_str(key.name, sizeof(key.name), ctx + (loc & 0xffff));
	count_alloc(&key, record_u64(ctx, cache_bytes_off));
	return 0;
}

SEC("tracepoint")
int kmalloc_tp(void *ctx)
{
	if (!task_allowed())
		return 0;
	struct slab_key key = {};
	__u64 bytes = record_u64(ctx, kmalloc_bytes_off);
	__u64 gfp = record_u64(ctx, kmalloc_gfp_off);
	key.size = bytes;
	/* kmalloc_type()'s order: DMA, then reclaimable, then accounted */
	if (gfp & gfp_dma)
		key.kind = SLAB_KMALLOC_DMA;
	else if (gfp & gfp_reclaimable)
		key.kind = SLAB_KMALLOC_RCL;
	else if (gfp & gfp_account)
		key.kind = SLAB_KMALLOC_CG;
	else
		key.kind = SLAB_KMALLOC;
	count_alloc(&key, bytes);
	return 0;
}

SEC("kprobe")
int BPF_KPROBE(cache_alloc_kp, struct kmem_cache *s)
{
	if (!task_allowed())
		return 0;
	struct slab_key key = {};
	const char *name = BPF_CORE_READ(s, name);
	bpf_probe_read_kernel_str(key.name, sizeof(key.name), name);
	count_alloc(&key, BPF_CORE_READ(s, size));
	return 0;
}
