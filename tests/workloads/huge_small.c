/* huge_small N: the control for hfaults — N (default 23) ordinary 4 KiB page faults, in a
 * region marked MADV_NOHUGEPAGE (so no transparent huge page even with THP `always`) and
 * outside any hugetlb mapping.  Witness: getrusage() minor faults before and after.
 *
 * Protocol (stdout, line buffered):
 *   "ready pid=P"                       then wait for one byte on stdin
 *   touch N pages
 *   "done pages=N minflt=M"; exit at stdin EOF.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

__attribute__((noinline)) void touch_small_pages(volatile char *p, long n, long pagesz)
{
	for (long i = 0; i < n; i++)
		p[i * pagesz] = 1;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 23;
	long pagesz = sysconf(_SC_PAGESIZE);
	struct rusage r0, r1;
	char c, *p;

	setvbuf(stdout, NULL, _IOLBF, 0);
	p = mmap(NULL, n * pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || madvise(p, n * pagesz, MADV_NOHUGEPAGE)) {
		perror("mmap/madvise");
		return 1;
	}
	getrusage(RUSAGE_SELF, &r0);
	printf("ready pid=%d\n", getpid());
	if (read(0, &c, 1) != 1)
		return 1;
	getrusage(RUSAGE_SELF, &r0);
	touch_small_pages(p, n, pagesz);
	getrusage(RUSAGE_SELF, &r1);
	printf("done pages=%ld minflt=%ld\n", n, r1.ru_minflt - r0.ru_minflt);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
