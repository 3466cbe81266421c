/* Event generator for the runtime-core tests and the ring-buffer bench.
 * usage: core_gen MODE N   (waits for a line on stdin before and after the work)
 *   getppid N  N getppid() syscalls from emit_getppid()
 *   getpgid N  getpgid(1..N)
 *   call N     N calls of target_function()
 *   rate N R   N getppid() at R per second (R=0: as fast as possible) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

volatile long sink;

__attribute__((noinline)) void emit_getppid(long n)
{
	/* the raw instruction, not libc's syscall(): libc has no frame pointers, and its
	 * frame would hide this function from the user stack */
	for (long i = 0; i < n; i++) {
		long ret;
		__asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_getppid) : "rcx", "r11", "memory");
		sink += ret;
	}
	__asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void target_function(long i)
{
	sink += i;
	__asm__ volatile("" ::: "memory");
}

static void wait_line(void)
{
	char buf[16];
	if (!fgets(buf, sizeof buf, stdin))
		exit(0);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const char *mode = argv[1];
	long n = atol(argv[2]);
	setvbuf(stdout, NULL, _IONBF, 0);
	if (!strcmp(mode, "rate")) {
		printf("ready %d\n", getpid());
		wait_line();
		double rate = argc > 3 ? atof(argv[3]) : 0, t0 = now();
		long batch = 1000;
		for (long done = 0; done < n; done += batch) {
			emit_getppid(batch);
			if (rate > 0)
				while (now() - t0 < (done + batch) / rate)
					;
		}
		printf("rate: %ld events in %.6f s\n", n, now() - t0);
		wait_line();
		return 0;
	}
	printf("ready %d\n", getpid());
	wait_line();
	if (!strcmp(mode, "getppid"))
		emit_getppid(n);
	else if (!strcmp(mode, "getpgid"))
		for (long i = 1; i <= n; i++)
			sink += getpgid((pid_t)i);
	else if (!strcmp(mode, "call"))
		for (long i = 0; i < n; i++)
			target_function(i);
	printf("done\n");
	wait_line();
	return 0;
}
