/* unwind_chain: an 8-deep call chain built without frame pointers that mallocs, brks or
 * faults at its bottom a known number of times (tests/kernel/test_unwind.py).
 *
 *   main -> chain1 -> chain2 -> ... -> chain8 -> malloc | sbrk | a store to a fresh page
 *
 * chain1..chain4 are here; chain5..chain8 and the actions in unwind_levels.c, linked into
 * the executable or built as libunwind_levels.so (the chain split across a shared library).
 * Built with -DUNWIND_DLOPEN, the library is dlopen'd after the gate (a mapping the tracer
 * has not seen), one action is done at once, then after a second the N actions.
 * Built with -O2 -fomit-frame-pointer: gcc then uses rbp as a general register where it
 * wants one, so a frame-pointer walk gets one or two frames.  The frames differ on purpose:
 * saved registers, a 40 KiB buffer (a CFA offset past 32 KiB), alloca (a CFA on rbp).
 *
 * usage: unwind_chain malloc|brk|fault|getppid|signal [N [nogate]]    (N = 23)
 * signal: chain8 raises SIGUSR1, whose handler (on_signal) calls sbrk.
 * deep: chain8 recurses 150 times (deeper) before calling sbrk.
 * Protocol (stdout, line buffered): "ready pid=P" then wait for one byte on stdin; do the N
 * actions; print "done n=N ns=NS" (NS: the CPU time they took, the probes' run in it);
 * wait for EOF on stdin, then exit.  With "nogate": no waiting at all (memleak -c).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <time.h>
#include <sys/mman.h>

#include "unwind_levels.h"

#ifdef UNWIND_DLOPEN
#include <dlfcn.h>
static long (*chain5_fn)(struct job *j, long depth);
#define CHAIN5 chain5_fn
#else
#define CHAIN5 chain5
#endif

#define NOINLINE __attribute__((noinline))
/* an empty asm after a call keeps it a call (no tail jump) */
#define KEEP(x) __asm__ volatile("" : "+r"(x) :: "memory")

NOINLINE long chain4(struct job *j, long depth)
{
	long r = CHAIN5(j, depth + 1);
	KEEP(r);
	return r + depth;
}

NOINLINE long chain3(struct job *j, long depth)
{
	/* alloca: gcc sets up rbp and the CFA is rbp-based in this function */
	volatile char *buf = __builtin_alloca(64 + (j->n & 7));
	buf[0] = (char)depth;
	long r = chain4(j, depth + 1);
	KEEP(r);
	return r + buf[0];
}

NOINLINE long chain2(struct job *j, long depth)
{
	/* 40 KiB on the stack: the CFA offset does not fit 16 bits */
	volatile char big[40 * 1024];
	big[0] = (char)depth;
	big[sizeof(big) - 1] = 1;
	long r = chain3(j, depth + 1);
	KEEP(r);
	return r + big[0] + big[sizeof(big) - 1];
}

NOINLINE long chain1(struct job *j, long depth)
{
	long a = j->n * 3, b = depth * 7, c = a ^ b;
	long r = chain2(j, depth + 1);
	KEEP(r);
	KEEP(a);
	KEEP(b);
	KEEP(c);
	return r + a + b + c;
}

/* The chain's stack (40 KiB in chain2, the dynamic loader's lazy binding below chain8)
 * touched once before the gate: no page fault of stack growth among the counted ones. */
NOINLINE static void prefault_stack(void)
{
	volatile char buf[128 * 1024];
	for (unsigned long i = 0; i < sizeof(buf); i += 4096)
		buf[i] = 0;
}

NOINLINE void on_signal(int sig)
{
	void *p = sbrk(4096);
	KEEP(p);
	(void)sig;
}

int main(int argc, char **argv)
{
	struct job j = { .kind = JOB_MALLOC, .n = 23 };
	char c;
	int gate;

	if (argc > 1 && !strcmp(argv[1], "brk"))
		j.kind = JOB_BRK;
	else if (argc > 1 && !strcmp(argv[1], "fault"))
		j.kind = JOB_FAULT;
	else if (argc > 1 && !strcmp(argv[1], "getppid"))
		j.kind = JOB_GETPPID;
	else if (argc > 1 && !strcmp(argv[1], "deep"))
		j.kind = JOB_DEEP;
	else if (argc > 1 && !strcmp(argv[1], "signal")) {
		j.kind = JOB_SIGNAL;
		signal(SIGUSR1, on_signal);
	}
	if (argc > 2)
		j.n = atoi(argv[2]);
	gate = !(argc > 3 && !strcmp(argv[3], "nogate"));
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (j.kind == JOB_FAULT) {
		j.pages = mmap(NULL, j.n * 4096L, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (j.pages == MAP_FAILED)
			return 1;
		madvise(j.pages, j.n * 4096L, MADV_NOHUGEPAGE);
	}
	prefault_stack();
	printf("ready pid=%d\n", (int)getpid());
	if (gate && read(0, &c, 1) != 1)
		return 1;
#ifdef UNWIND_DLOPEN
	void *lib = dlopen("libunwind_levels.so", RTLD_NOW);
	if (!lib || !(chain5_fn = (long (*)(struct job *, long))dlsym(lib, "chain5"))) {
		printf("error: %s\n", dlerror());
		return 1;
	}
	j.i = 0;
	chain1(&j, 1);  /* the first event in the new mapping */
	j.keep[0] = NULL;
	sleep(1);
#endif
	struct timespec t0, t1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	for (j.i = 0; j.i < j.n; j.i++) {
		long r = chain1(&j, 1);
		KEEP(r);
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	printf("done n=%d ns=%lld\n", j.n,
	       (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
	while (gate && read(0, &c, 1) > 0)
		;
	return 0;
}
