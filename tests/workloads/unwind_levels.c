/* unwind_levels: chain5..chain8 and the actions of unwind_chain (see unwind_chain.c), in the
 * executable or as libunwind_levels.so. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "unwind_levels.h"

#define NOINLINE __attribute__((noinline))
#define KEEP(x) __asm__ volatile("" : "+r"(x) :: "memory")

/* JOB_DEEP: 150 more frames, then a brk: deeper than a stack can hold (127) */
NOINLINE long deeper(long n)
{
	long r;
	if (n == 0) {
		void *p = sbrk(4096);
		KEEP(p);
		r = p != (void *)-1;
	} else {
		r = deeper(n - 1);
	}
	KEEP(r);
	return r + 1;
}

/* No jump table (gcc makes one of a switch or of this if/else chain): read from .rodata it
 * would be a page fault of its own on the first call (the fault test counts exactly the
 * stores'). */
NOINLINE __attribute__((optimize("no-jump-tables"))) long chain8(struct job *j, long depth)
{
	long r = 0;
	enum job_kind kind = j->kind;

	if (kind == JOB_MALLOC) {
		void *p = malloc(1000 + j->i);
		KEEP(p);
		if (j->i < 64)
			j->keep[j->i] = p;
		r = p != NULL;
	} else if (kind == JOB_BRK) {
		void *p = sbrk(4096);
		KEEP(p);
		r = p != (void *)-1;
	} else if (kind == JOB_FAULT) {
		j->pages[j->i * 4096L] = (char)depth;
		r = 1;
	} else if (kind == JOB_GETPPID) {
		/* a cheap syscall: what tracing one costs (bench/bench_unwind.py) */
		r = getppid() > 0;
	} else if (kind == JOB_SIGNAL) {
		/* the handler brks: its stack goes back through the signal frame */
		r = raise(SIGUSR1) == 0;
	} else if (kind == JOB_DEEP) {
		r = deeper(150);
	}
	KEEP(r);
	return r + depth;
}

NOINLINE long chain7(struct job *j, long depth)
{
	long r = chain8(j, depth + 1);
	KEEP(r);
	return r * 3 + depth;
}

NOINLINE long chain6(struct job *j, long depth)
{
	long a = depth * 5, b = j->i + 11;
	long r = chain7(j, depth + 1);
	KEEP(r);
	KEEP(a);
	KEEP(b);
	return r + a + b;
}

NOINLINE long chain5(struct job *j, long depth)
{
	volatile long spill[6];
	for (int k = 0; k < 6; k++)
		spill[k] = depth + k;
	long r = chain6(j, depth + 1);
	KEEP(r);
	return r + spill[3];
}
