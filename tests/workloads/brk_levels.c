/* brk_levels: exactly N (default 23) brk() expansions from a known call chain.
 *
 *   main -> grow_heap_level1 -> grow_heap_level2 -> grow_heap_level3 -> syscall(brk)
 *
 * The brk syscall is issued with an inline `syscall` instruction inside grow_heap_level3:
 * glibc's sbrk/__brk use rbp as a general register and break the frame-pointer chain
 * (KERNEL.md §9), so going through them would leave a 1-frame stack.  The local volatile
 * array forces grow_heap_level3 to set up its frame before the syscall (without it gcc
 * shrink-wraps the prologue past the syscall and grow_heap_level2 disappears from the
 * stack).  The empty asm after each call stops gcc from turning the calls into tail jumps.
 *
 * Protocol (stdout, line buffered):  "ready pid=P brk=0x..." then wait for one byte on
 * stdin; do the N expansions; print "done brk_start=0x... brk_end=0x... calls=N"; sleep
 * 300 ms (the tracer snapshots our maps meanwhile); exit when stdin reaches EOF.
 * Nothing here calls malloc after the first brk: glibc's malloc would use a stale break.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

#define STEP 4096UL

__attribute__((noinline)) unsigned long grow_heap_level3(unsigned long cur)
{
	volatile unsigned long frame[2];
	long ret;

	frame[0] = cur + STEP;
	__asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_brk), "D"(frame[0])
			 : "rcx", "r11", "memory");
	frame[1] = ret;
	return frame[1];
}

__attribute__((noinline)) unsigned long grow_heap_level2(unsigned long cur)
{
	unsigned long r = grow_heap_level3(cur);
	__asm__ volatile("" : "+r"(r) :: "memory");
	return r;
}

__attribute__((noinline)) unsigned long grow_heap_level1(unsigned long cur)
{
	unsigned long r = grow_heap_level2(cur);
	__asm__ volatile("" : "+r"(r) :: "memory");
	return r;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 23;
	char c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	unsigned long start = (unsigned long)syscall(SYS_brk, 0UL);
	printf("ready pid=%d brk=%#lx\n", (int)getpid(), start);
	if (read(0, &c, 1) != 1)
		return 1;
	unsigned long cur = start;
	for (int i = 0; i < n; i++) {
		unsigned long got = grow_heap_level1(cur);
		if (got != cur + STEP) {
			printf("error: brk(%#lx) returned %#lx\n", cur + STEP, got);
			return 1;
		}
		cur = got;
	}
	printf("done brk_start=%#lx brk_end=%#lx calls=%d\n", start, cur, n);
	usleep(300 * 1000);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
