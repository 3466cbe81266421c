/* SPDX-License-Identifier: GPL-2.0 */
/* slabratetop's records, shared with Python (layouts read from the object's BTF). */
#ifndef __MEMLENS_SLABRATETOP_H
#define __MEMLENS_SLABRATETOP_H

#define SLAB_NAME_LEN 32 /* as BCC and libbpf-tools: longer cache names are cut */

/* Where an allocation came from: a named cache, or kmalloc, by the kmalloc cache type its
 * gfp flags choose (kmalloc_type() in include/linux/slab.h). */
enum slab_kind {
	SLAB_CACHE = 0,        /* kmem_cache_alloc*(): name[] holds the cache's name */
	SLAB_KMALLOC = 1,      /* kmalloc-N (or kmalloc-rnd-*-N, which only the caller tells) */
	SLAB_KMALLOC_CG = 2,   /* kmalloc-cg-N: __GFP_ACCOUNT */
	SLAB_KMALLOC_RCL = 3,  /* kmalloc-rcl-N: __GFP_RECLAIMABLE */
	SLAB_KMALLOC_DMA = 4,  /* dma-kmalloc-N: __GFP_DMA */
};

struct slab_key {
	char name[SLAB_NAME_LEN]; /* SLAB_CACHE; empty for kmalloc */
	__u64 size;               /* kmalloc: bytes_alloc (the kmalloc cache's object size,
				   * or the pages of a large kmalloc); 0 for named caches */
	__u32 kind;               /* enum slab_kind */
	__u32 pad;
};

struct slab_value {
	__u64 allocs;
	__u64 bytes; /* sum of bytes_alloc (the cache's object size per allocation) */
};

#endif
