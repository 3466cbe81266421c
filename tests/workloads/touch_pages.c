/* touch_pages N: write one byte to each of N fresh anonymous pages, between two gates.
 *
 * The region is mmap'ed and marked MADV_NOHUGEPAGE before the first gate, so each first
 * write is exactly one order-0 page fault.  Its own witness: getrusage() minor+major fault
 * counters read just before and just after the touch loop.
 *
 * Protocol:
 *   stdout "ready pid=P"            then wait for one byte on stdin (gate 1)
 *   getrusage, touch N pages, getrusage
 *   write(1, "t\n")                 the loop is over; wait for one byte (gate 2)
 *   stdout "done pages=N minflt=A majflt=B"; exit when stdin reaches EOF.
 * Between gate 1 and the "t" line the program makes no fault but the N (every function it
 * calls there, read/write/getrusage, has been called once before gate 1, and the stack is
 * pre-touched).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

/* The volatile local makes gcc set up this leaf's frame (it omits a leaf's frame pointer
 * otherwise, and touch_region would be missing from the stack). */
__attribute__((noinline)) void touch_each_page(volatile char *p, long n, long pagesz)
{
	volatile long frame[2];

	frame[0] = n;
	for (long i = 0; i < frame[0]; i++)
		p[i * pagesz] = 1;
	frame[1] = 0;
}

__attribute__((noinline)) void touch_region(volatile char *p, long n, long pagesz)
{
	touch_each_page(p, n, pagesz);
	__asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 4099;
	long pagesz = sysconf(_SC_PAGESIZE);
	struct rusage r0, r1;
	volatile char stack_warm[64 * 1024];
	char c;

	memset((char *)stack_warm, 0, sizeof(stack_warm));
	setvbuf(stdout, NULL, _IOLBF, 0);
	char *p = mmap(NULL, n * pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED)
		return 1;
	if (madvise(p, n * pagesz, MADV_NOHUGEPAGE))
		return 1;
	getrusage(RUSAGE_SELF, &r0);    /* warm the wrappers used inside the window */
	if (write(1, "", 0) < 0)
		return 1;
	printf("ready pid=%d\n", (int)getpid());
	if (read(0, &c, 1) != 1)
		return 2;
	getrusage(RUSAGE_SELF, &r0);
	touch_region(p, n, pagesz);
	getrusage(RUSAGE_SELF, &r1);
	if (write(1, "t\n", 2) != 2)
		return 1;
	if (read(0, &c, 1) != 1)
		return 2;
	printf("done pages=%ld minflt=%ld majflt=%ld\n", n, r1.ru_minflt - r0.ru_minflt,
	       r1.ru_majflt - r0.ru_majflt);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
