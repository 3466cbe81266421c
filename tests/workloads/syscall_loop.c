/* syscall_loop N [raw|libc] [SPREAD_US]: exactly N getppid calls from a known call chain.
 *
 *   main -> ppid_level1 -> ppid_level2 -> getppid
 *
 * raw:  ppid_level2 issues the syscall with an inline `syscall` instruction (like
 *       brk_levels.c: the volatile frame makes gcc set up ppid_level2's frame before the
 *       syscall, so the frame-pointer chain names all three functions).
 * libc: ppid_level2 calls glibc's getppid() (a real function: uprobe u:c:getppid fires).
 * SPREAD_US > 0: sleep that long between calls (a long-lived process whose calls are
 *       spread over a run).
 *
 * Protocol (stdout, line buffered): "ready pid=P getppid=0xA" (A: the address of libc's
 * getppid, where a uprobe puts its breakpoint) then wait for one byte on stdin; make the
 * N calls, each checked against the parent's pid; print "done calls=N ppid=Q"; exit when
 * stdin reaches EOF (the tracer reads our maps meanwhile).  Nothing but the N calls makes
 * a getppid syscall.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

static int use_libc;

__attribute__((noinline)) long ppid_level2(long expect)
{
	volatile long frame[2];
	long ret;

	frame[0] = expect;
	if (use_libc) {
		ret = getppid();
	} else {
		__asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_getppid)
				 : "rcx", "r11", "memory");
	}
	frame[1] = ret;
	return frame[1] == frame[0];
}

__attribute__((noinline)) long ppid_level1(long expect)
{
	long r = ppid_level2(expect);
	__asm__ volatile("" : "+r"(r) :: "memory");
	return r;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 23;
	const char *mode = argc > 2 ? argv[2] : "raw";
	long spread_us = argc > 3 ? atol(argv[3]) : 0;
	char c;

	use_libc = strcmp(mode, "libc") == 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* the parent is known from /proc (not getppid, which would be counted): the test's
	 * Popen is our parent and stays alive */
	long ppid = 0;
	FILE *st = fopen("/proc/self/stat", "r");
	if (!st || fscanf(st, "%*d (%*[^)]) %*c %ld", &ppid) != 1)
		return 3;
	fclose(st);
	printf("ready pid=%d getppid=%p\n", (int)getpid(), (void *)getppid);
	if (read(0, &c, 1) != 1)
		return 1;
	int ok = 0;
	for (int i = 0; i < n; i++) {
		ok += ppid_level1(ppid);
		if (spread_us)
			usleep(spread_us);
	}
	if (ok != n) {
		printf("error: %d of %d getppid calls returned %ld\n", n - ok, n, ppid);
		return 1;
	}
	printf("done calls=%d ppid=%ld\n", ok, ppid);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
