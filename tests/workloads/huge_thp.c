/* huge_thp MB: transparent huge pages at fault time.  A 2 MiB-aligned anonymous region of
 * MB (default 64) MiB is marked MADV_HUGEPAGE before the gate; after it, one byte is
 * written per 2 MiB, so each write is one fault that the kernel serves with a huge page
 * when it can get one (and with a 4 KiB page when it cannot).
 *
 * Its own witness: the region's AnonHugePages in /proc/self/smaps before and after the
 * touch loop; the delta / 2048 kB is the number of huge pages this process got.
 *
 * Protocol (stdout, line buffered):
 *   "ready pid=P addr=0x..."            then wait for one byte on stdin
 *   touch one byte per 2 MiB
 *   "done touched=N anon_huge_kb_before=A anon_huge_kb_after=B thp_pages=K"; exit at EOF.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE (2UL << 20)

/* kB after `field` in the smaps entry of the mapping that contains `addr` (-1: none) */
static long smaps_kb(uintptr_t addr, const char *field)
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
			in = lo <= addr && addr < hi;
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

__attribute__((noinline)) void touch_each_huge(volatile char *p, size_t len)
{
	for (size_t off = 0; off < len; off += HUGE)
		p[off] = 1;
}

int main(int argc, char **argv)
{
	size_t len = (size_t)(argc > 1 ? atol(argv[1]) : 64) << 20;
	char c, *raw, *p;
	long before, after;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* one spare huge page of room, so an aligned start fits */
	raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	p = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	if (madvise(p, len, MADV_HUGEPAGE)) {
		perror("madvise(MADV_HUGEPAGE)");
		return 1;
	}
	before = smaps_kb((uintptr_t)p, "AnonHugePages");
	printf("ready pid=%d addr=%p\n", getpid(), (void *)p);
	if (read(0, &c, 1) != 1)
		return 1;
	touch_each_huge(p, len);
	after = smaps_kb((uintptr_t)p, "AnonHugePages");
	printf("done touched=%zu anon_huge_kb_before=%ld anon_huge_kb_after=%ld thp_pages=%ld\n",
	       len / HUGE, before, after, (after - before) / 2048);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
