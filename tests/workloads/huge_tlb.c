/* huge_tlb N: touch one byte in each of N (default 8) 2 MiB hugetlb pages, behind a gate.
 *
 * The region is mmap'ed MAP_HUGETLB|MAP_HUGE_2MB before the gate (mmap only reserves pool
 * pages; nothing is faulted until the first write), so after the gate each huge page is
 * exactly one hugetlb fault.  Its own witness: the region's Private_Hugetlb in
 * /proc/self/smaps, read before and after the touch loop (kB mapped from the pool).
 *
 * Protocol (stdout, line buffered):
 *   "ready pid=P addr=0x..."            then wait for one byte on stdin
 *   touch N huge pages
 *   "done hugetlb_pages=N hugetlb_kb_before=A hugetlb_kb_after=B"; exit at stdin EOF.
 * Exit 3 when the pool cannot back the mapping (mmap fails with ENOMEM).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#define HUGE (2UL << 20)

/* kB after `field` in the smaps entry of the mapping that starts at `start` (-1: none) */
static long smaps_kb(uintptr_t start, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0;
	long kb = -1;
	size_t flen = strlen(field);

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			in = lo == start;
			continue;
		}
		if (in && !strncmp(line, field, flen) && line[flen] == ':') {
			kb = atol(line + flen + 1);
			break;
		}
	}
	fclose(f);
	return kb;
}

__attribute__((noinline)) void touch_huge_pages(volatile char *p, long n)
{
	for (long i = 0; i < n; i++)
		p[i * HUGE] = 1;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 8;
	char c;
	char *p;
	long before, after;

	setvbuf(stdout, NULL, _IOLBF, 0);
	p = mmap(NULL, n * HUGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
	if (p == MAP_FAILED) {
		printf("error mmap(MAP_HUGETLB) of %ld x 2M: %s\n", n, strerror(errno));
		return 3;
	}
	before = smaps_kb((uintptr_t)p, "Private_Hugetlb");
	printf("ready pid=%d addr=%p\n", getpid(), (void *)p);
	if (read(0, &c, 1) != 1)
		return 1;
	touch_huge_pages(p, n);
	after = smaps_kb((uintptr_t)p, "Private_Hugetlb");
	printf("done hugetlb_pages=%ld hugetlb_kb_before=%ld hugetlb_kb_after=%ld\n",
	       n, before, after);
	while (read(0, &c, 1) > 0)
		;
	munmap(p, n * HUGE);
	return 0;
}
