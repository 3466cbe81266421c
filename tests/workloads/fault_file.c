/* fault_file FILE [ANON_PAGES]: read a file through a shared mapping, one byte per page,
 * first cold (page cache dropped, MADV_RANDOM: no readahead, so every page is one fault and
 * one page-cache miss: KERNEL.md §5 "cold random"), then warm (the same pages, now cached,
 * through a second mapping: faults served by fault-around, 16 pages each, no miss).  In the cold window it
 * also writes to ANON_PAGES (default 23) fresh anonymous pages: faults that a file-fault
 * tool must not count.
 *
 * Protocol (stdin gates, one byte each; the process lives until its stdin ends, so a tool
 * can read its /proc/PID/maps whenever it likes):
 *   stdout "ready pid=P ino=I pages=N"
 *   gate 1: cold read + anonymous writes  -> "cold pages=N minflt=A majflt=B sum=S"
 *   gate 2: warm read                     -> "warm pages=N minflt=A majflt=B sum=S"
 *   exit 0 when stdin ends (at any gate).
 * Both mappings are made (and the cache dropped) before gate 1, and every function used
 * inside a window has run before it: a window's only faults are its reads and writes.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define COLD "cold pages=%ld minflt=%ld majflt=%ld sum=%lu\n"
#define WARM "warm pages=%ld minflt=%ld majflt=%ld sum=%lu\n"

static char line[256];

static void say(void)
{
	size_t len = strlen(line);
	if (write(1, line, len) != (ssize_t)len)
		exit(1);
}

static void gate(void)
{
	char c;
	if (read(0, &c, 1) != 1)
		exit(0); /* stdin ended: the test is done with us */
}

__attribute__((noinline)) unsigned long read_pages(volatile const char *p, long n, long pagesz)
{
	unsigned long s = 0;
	for (long i = 0; i < n; i++)
		s += p[i * pagesz];
	return s;
}

__attribute__((noinline)) void write_pages(volatile char *p, long n, long pagesz)
{
	for (long i = 0; i < n; i++)
		p[i * pagesz] = 1;
}

static const char *map_file(int fd, size_t size, int random)
{
	const char *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		exit(1);
	if (random && madvise((void *)p, size, MADV_RANDOM))
		exit(1);
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	long anon = argc > 2 ? atol(argv[2]) : 23;
	long pagesz = sysconf(_SC_PAGESIZE);
	volatile char stack_warm[64 * 1024];
	struct rusage r0, r1;
	struct stat st;

	memset((char *)stack_warm, 0, sizeof(stack_warm));
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st))
		return 1;
	long pages = st.st_size / pagesz;
	char *a = mmap(NULL, anon * pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (a == MAP_FAILED || madvise(a, anon * pagesz, MADV_NOHUGEPAGE))
		return 1;
	/* cold: dirty pages written back (none: the test synced), then dropped from the cache */
	fdatasync(fd);
	if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
		return 1;
	const char *p = map_file(fd, st.st_size, 1);
	/* warm: a second mapping, read after the first brought the pages into the cache (no
	 * MADV_RANDOM: as a program reads) */
	const char *w = map_file(fd, st.st_size, 0);
	/* the first call of a libc function resolves it (lazy binding writes its GOT slot, a
	 * fault in this program's file mapping): each one used in a window is called here */
	getrusage(RUSAGE_SELF, &r0);
	getrusage(RUSAGE_SELF, &r1);
	char c;
	if (read(0, &c, 0) < 0)
		return 1;
	/* the report formats too: printf's code for %ld/%lu is in other pages of libc than
	 * %d's, and whether fault-around mapped them already depends on where libc landed */
	snprintf(line, sizeof line, COLD, pages, 123456789L, 123456789L, ~0UL);
	snprintf(line, sizeof line, WARM, pages, 123456789L, 123456789L, ~0UL);
	read_pages(p, 0, pagesz);
	write_pages(a, 0, pagesz);
	snprintf(line, sizeof line, "ready pid=%d ino=%lu pages=%ld\n", (int)getpid(),
		 (unsigned long)st.st_ino, pages);
	say();

	gate();
	getrusage(RUSAGE_SELF, &r0);
	unsigned long s = read_pages(p, pages, pagesz);
	write_pages(a, anon, pagesz);
	getrusage(RUSAGE_SELF, &r1);
	snprintf(line, sizeof line, COLD, pages,
		 r1.ru_minflt - r0.ru_minflt, r1.ru_majflt - r0.ru_majflt, s);
	say();

	gate();
	getrusage(RUSAGE_SELF, &r0);
	s = read_pages(w, pages, pagesz);
	getrusage(RUSAGE_SELF, &r1);
	snprintf(line, sizeof line, WARM, pages,
		 r1.ru_minflt - r0.ru_minflt, r1.ru_majflt - r0.ru_majflt, s);
	say();

	while (read(0, &c, 1) > 0)
		;
	return 0;
}
