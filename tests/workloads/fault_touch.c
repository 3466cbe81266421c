/* fault_touch [N [read]]: write one byte to each of N (default 4099) fresh pages of an
 * anonymous mapping, from the noinline function touch_pages, between two stdin gates.
 * With "read": the kernel fills them instead, one read(2) of /dev/zero into the mapping:
 * each fault is then a kernel-mode one (clear_user), with a kernel and a user stack.
 *
 * Built with frame pointers (tests/conftest.py build_workload), so a fault's user stack is
 * touch_pages <- touch_region <- main.  The mapping is made and marked MADV_NOHUGEPAGE
 * before the first gate: each first write is one order-0 page fault.
 *
 * Its own witness: getrusage(RUSAGE_SELF) minor and major fault counters read just before
 * and just after the touch loop (the kernel's mm_account_fault, the same accounting as
 * /proc/PID/stat's minflt/majflt).
 *
 * Protocol:
 *   stdout "ready pid=P"                      then wait for one byte on stdin (gate 1)
 *   getrusage, touch N pages, getrusage
 *   stdout "touched pages=N minflt=A majflt=B" then live until stdin ends (gate 2)
 *   exit 0
 * Between gate 1 and the "touched" line the program makes no fault but the N: every
 * function called there has run once before gate 1 (with the same formats), the stack is
 * pre-touched, and the line is formatted into a buffer touched before gate 1.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

/* The faulting instruction is in touch_pages.  The volatile local makes gcc give this
 * leaf a frame (it leaves out a leaf's push %rbp when nothing is on its stack, and the walk
 * would then skip touch_region). */
__attribute__((noinline)) void touch_pages(volatile char *p, long n, long pagesz)
{
	volatile long frame[2];

	frame[0] = n;
	for (long i = 0; i < frame[0]; i++)
		p[i * pagesz] = 1;
	frame[1] = 0;
}

__attribute__((noinline)) void touch_region(volatile char *p, long n, long pagesz)
{
	touch_pages(p, n, pagesz);
	__asm__ volatile("" ::: "memory"); /* not a tail call: touch_region stays a frame */
}

#define TOUCHED "touched pages=%ld minflt=%ld majflt=%ld\n"

static void say(const char *buf)
{
	size_t len = strlen(buf);
	if (write(1, buf, len) != (ssize_t)len)
		exit(1);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 4099;
	int by_read = argc > 2 && !strcmp(argv[2], "read");
	int zero = by_read ? open("/dev/zero", O_RDONLY) : -1;
	long pagesz = sysconf(_SC_PAGESIZE);
	struct rusage r0, r1;
	volatile char stack_warm[64 * 1024];
	static char line[256];
	char c;

	memset((char *)stack_warm, 0, sizeof(stack_warm));
	char *p = mmap(NULL, n * pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED)
		return 1;
	if (madvise(p, n * pagesz, MADV_NOHUGEPAGE))
		return 1;
	/* warm everything the window and the report use: wrappers, snprintf, the line.  The
	 * first call of a libc function resolves it (lazy binding writes its GOT slot: a
	 * fault), so each one is called once here, read() too. */
	getrusage(RUSAGE_SELF, &r0);
	getrusage(RUSAGE_SELF, &r1);
	if (read(0, &c, 0) < 0)
		return 1;
	/* the report's own format too: printf code for %ld is in other pages of libc than
	 * %d's, and whether fault-around already mapped them depends on where libc landed */
	snprintf(line, sizeof line, TOUCHED, n, 123456789L, 123456789L);
	snprintf(line, sizeof line, "ready pid=%d\n", (int)getpid());
	say(line);
	if (by_read && (zero < 0 || read(zero, p, 0) < 0))
		return 1;
	if (read(0, &c, 1) != 1)
		return 2;
	getrusage(RUSAGE_SELF, &r0);
	if (by_read) {
		if (read(zero, p, n * pagesz) != n * pagesz)
			return 3;
	} else {
		touch_region(p, n, pagesz);
	}
	getrusage(RUSAGE_SELF, &r1);
	snprintf(line, sizeof line, TOUCHED, n, r1.ru_minflt - r0.ru_minflt,
		 r1.ru_majflt - r0.ru_majflt);
	say(line);
	while (read(0, &c, 1) > 0) /* gate 2: live until stdin ends */
		;
	return 0;
}
