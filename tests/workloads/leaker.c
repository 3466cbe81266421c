// SPDX-License-Identifier: GPL-2.0-only
/* leaker: leaks exactly LEAKS (23) blocks of 4099 bytes through each allocator from a named
 * noinline function, frees other blocks (which must not be reported), and leaks from
 * several threads.  Used by tests/kernel/test_memleak.py.
 *
 *   leaker [wait|start] [threads N] [sample N]
 *     wait   (default) print "ready", wait for one byte on stdin, then do the work
 *     start  do the work at once (memlens memleak -c must catch it)
 *   then print "done" and wait for EOF/one more byte on stdin (or SIGTERM) before exiting.
 *
 * Every leaking call is followed by a store, so the call is never a tail call and the
 * leak_* function is the direct caller of the allocator.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LEAKS 23
#define FREES 7
#define SIZE 4099

static void *volatile sink[64 * LEAKS];
static int nsink;
static void *early[LEAKS];

#define KEEP(p) (sink[__atomic_fetch_add(&nsink, 1, __ATOMIC_RELAXED)] = (p))

__attribute__((noinline)) void leak_malloc(void) { KEEP(malloc(SIZE)); }
__attribute__((noinline)) void leak_calloc(void) { KEEP(calloc(1, SIZE)); }
__attribute__((noinline)) void leak_realloc(int i) { KEEP(realloc(early[i], SIZE)); }
__attribute__((noinline)) void leak_posix_memalign(void)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, SIZE) == 0)
		KEEP(p);
}
__attribute__((noinline)) void leak_aligned_alloc(void) { KEEP(aligned_alloc(64, SIZE)); }
__attribute__((noinline)) void leak_memalign(void) { KEEP(memalign(256, SIZE)); }
__attribute__((noinline)) void leak_valloc(void) { KEEP(valloc(SIZE)); }
__attribute__((noinline)) void leak_mmap(void)
{
	void *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED)
		KEEP(p);
}
__attribute__((noinline)) void leak_in_thread(void) { KEEP(malloc(SIZE)); }

/* Freed again: none of these may appear in a report.  Each pointer escapes through a
 * volatile store, or gcc removes the malloc/free pair altogether. */
static void *volatile escape;
#define ESC(p) (escape = (p), escape)

__attribute__((noinline)) void churn(void)
{
	void *p = ESC(malloc(SIZE));
	void *q = ESC(calloc(3, SIZE));
	void *r = NULL;
	if (posix_memalign(&r, 128, SIZE))
		r = NULL;
	void *s = ESC(aligned_alloc(64, SIZE));
	void *t = ESC(realloc(NULL, SIZE));
	t = ESC(realloc(t, 2 * SIZE));
	void *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *big = ESC(malloc(1 << 20));        /* malloc -> mmap inside: one allocation */
	void *bad = ESC(malloc((size_t)-1 / 2));  /* fails: must not be recorded */
	free(p); free(q); free(r); free(s); free(t); free(big); free(bad);
	munmap(m, SIZE);
}

__attribute__((noinline)) void early_alloc(void)
{
	for (int i = 0; i < LEAKS; i++)
		early[i] = malloc(10);
}

static void *thread_main(void *arg)
{
	for (int i = 0; i < LEAKS; i++)
		leak_in_thread();
	return arg;
}

__attribute__((noinline)) void sample_leaks(long n)
{
	for (long i = 0; i < n; i++)
		leak_in_thread();
}

static void *sample_thread(void *arg)
{
	sample_leaks((long)arg);
	return NULL;
}

__attribute__((noinline)) void leak_all(int nthreads, long sample)
{
	if (sample) {
		pthread_t t;
		pthread_create(&t, NULL, sample_thread, (void *)sample);
		pthread_join(t, NULL);
		return;
	}
	for (int i = 0; i < LEAKS; i++) {
		leak_malloc();
		leak_calloc();
		leak_realloc(i);
		leak_posix_memalign();
		leak_aligned_alloc();
		leak_memalign();
		leak_valloc();
		leak_mmap();
	}
	for (int i = 0; i < FREES; i++)
		churn();
	pthread_t t[16];
	for (int i = 0; i < nthreads && i < 16; i++)
		pthread_create(&t[i], NULL, thread_main, NULL);
	for (int i = 0; i < nthreads && i < 16; i++)
		pthread_join(t[i], NULL);
}

static void wait_byte(void)
{
	char c;
	if (read(0, &c, 1) < 0)
		perror("read");
}

int main(int argc, char **argv)
{
	int start = 0, nthreads = 0;
	long sample = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "start"))
			start = 1;
		else if (!strcmp(argv[i], "threads") && i + 1 < argc)
			nthreads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "sample") && i + 1 < argc)
			sample = atol(argv[++i]);
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	early_alloc();
	if (!start) {
		printf("ready %d\n", getpid());
		wait_byte();
	}
	leak_all(nthreads, sample);
	printf("done\n");
	wait_byte();
	return 0;
}
