// SPDX-License-Identifier: GPL-2.0-only
/* leakflags: workloads for memleak's flags (tests/kernel/test_memleak_flags.py).
 *
 *   leakflags MODE [N]
 * prints "ready" (stdout's buffer is allocated by then, before memleak attaches), waits for
 * one byte on stdin, does MODE, prints "done", then waits for EOF on stdin before exiting.
 *
 *   sort    leak_many_small: 23 x malloc(64) (1472 bytes); leak_few_big: 3 x malloc(4099)
 *           (12297 bytes): more allocations in one stack, more bytes in the other
 *   older   leak_old: 23 x malloc(4099), prints "old", waits for a second byte, then
 *           leak_young: 7 x malloc(4099)
 *   addrs   holds 7 x malloc(4099) (hold_temp), leak_addrs: 23 x malloc(4099) printing
 *           "leak 0x..." for each, then frees the 7 printing "freed 0x..."
 *   fork N  forks N children that block on a pipe until this process exits (their mms,
 *           and the per-CPU counters the kernel allocated for them, stay alive)
 *
 * Every leaking call is followed by a store, so it is never a tail call and the leak_*
 * function is the allocator's direct caller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LEAKS 23
#define SIZE 4099

static void *volatile sink[256];
static int nsink;
#define KEEP(p) (sink[nsink++] = (p))

__attribute__((noinline)) void leak_many_small(void) { KEEP(malloc(64)); }
__attribute__((noinline)) void leak_few_big(void) { KEEP(malloc(SIZE)); }
__attribute__((noinline)) void leak_old(void) { KEEP(malloc(SIZE)); }
__attribute__((noinline)) void leak_young(void) { KEEP(malloc(SIZE)); }
__attribute__((noinline)) void *leak_addrs(void) { return KEEP(malloc(SIZE)); }
__attribute__((noinline)) void *hold_temp(void) { return KEEP(malloc(SIZE)); }

/* Trip counts read from volatiles: gcc cannot unroll the loops, so each leak_* function
 * is called from one call site and its blocks share one stack. */
static volatile int n_leaks = LEAKS, n_big = 3, n_young = 7;

static void wait_byte(void)
{
	char c;
	if (read(0, &c, 1) != 1)
		exit(1);
}

static void say(const char *s)
{
	printf("%s\n", s);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "addrs";
	int n = argc > 2 ? atoi(argv[2]) : LEAKS;
	int pfd[2] = {-1, -1};
	char c;

	say("ready");
	wait_byte();
	if (!strcmp(mode, "sort")) {
		for (int i = 0; i < n_leaks; i++)
			leak_many_small();
		for (int i = 0; i < n_big; i++)
			leak_few_big();
	} else if (!strcmp(mode, "older")) {
		for (int i = 0; i < n_leaks; i++)
			leak_old();
		say("old");
		wait_byte();
		for (int i = 0; i < n_young; i++)
			leak_young();
	} else if (!strcmp(mode, "addrs")) {
		void *tmp[7];
		for (int i = 0; i < n_young; i++)
			tmp[i] = hold_temp();
		for (int i = 0; i < n_leaks; i++)
			printf("leak %p\n", leak_addrs());
		for (int i = 0; i < n_young; i++) {
			printf("freed %p\n", tmp[i]);
			free(tmp[i]);
		}
	} else if (!strcmp(mode, "fork")) {
		if (pipe(pfd))
			return 1;
		for (int i = 0; i < n; i++) {
			pid_t pid = fork();
			if (pid < 0)
				return 1;
			if (pid == 0) {
				close(pfd[1]);
				while (read(pfd[0], &c, 1) > 0)
					;
				_exit(0);
			}
		}
		close(pfd[0]);
	} else {
		fprintf(stderr, "leakflags: unknown mode %s\n", mode);
		return 2;
	}
	say("done");
	while (read(0, &c, 1) > 0)
		;
	if (pfd[1] >= 0) {
		close(pfd[1]);
		while (wait(NULL) > 0)
			;
	}
	return 0;
}
