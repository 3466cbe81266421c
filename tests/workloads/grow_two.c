/* grow_two STEPS [DELAY_MS] [nogate]: grow RSS in two functions at known rates.
 *
 * Each step, grow_fast() maps and touches 3 MiB of new anonymous memory (768 pages) and
 * grow_slow() 1 MiB (256 pages); nothing is ever freed.  Each region is mmap'ed and marked
 * MADV_NOHUGEPAGE first, so each first write is exactly one order-0 page fault (no THP,
 * no multi-size THP folios), made from the touching function itself.
 *
 * Its own witness: RssAnon from /proc/self/status just before and just after the steps.
 *
 * Protocol (gated, for `memlens growth -p PID`):
 *   stdout "ready pid=P rss_anon=B"       then wait for one byte on stdin
 *   STEPS steps, DELAY_MS apart
 *   stdout "done steps=S fast_pages=F slow_pages=L rss_anon_before=B rss_anon_after=A"
 *   exit when stdin reaches EOF (everything touched is kept until then).
 * With "nogate" (for `memlens growth -c`): no wait on stdin, and exit right after "done".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024L * 1024L)

static long pagesz;

/* RssAnon of this process in bytes, -1 when unreadable.  The file is read with read(2)
 * into a stack buffer: no stdio buffer is allocated (and faulted) while growing. */
static long rss_anon(void)
{
	char buf[4096];
	long total = 0, kb = -1;
	int fd;
	ssize_t n;
	char *p;

	fd = open("/proc/self/status", 0);
	if (fd < 0)
		return -1;
	while ((n = read(fd, buf + total, sizeof(buf) - 1 - total)) > 0)
		total += n;
	close(fd);
	buf[total] = 0;
	p = strstr(buf, "RssAnon:");
	if (p)
		kb = strtol(p + 8, NULL, 10);
	return kb < 0 ? -1 : kb * 1024;
}

static volatile char *new_region(long bytes)
{
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || madvise(p, bytes, MADV_NOHUGEPAGE)) {
		perror("mmap");
		exit(1);
	}
	return p;
}

/* The volatile local makes gcc set up this function's frame even as a leaf, so its caller
 * is on the frame-pointer chain of every fault it takes. */
__attribute__((noinline)) long grow_fast(void)
{
	volatile long frame[2];
	volatile char *p = new_region(3 * MIB);

	frame[0] = 3 * MIB / pagesz;
	for (long i = 0; i < frame[0]; i++)
		p[i * pagesz] = 1;
	frame[1] = 0;
	return frame[0];
}

__attribute__((noinline)) long grow_slow(void)
{
	volatile long frame[2];
	volatile char *p = new_region(1 * MIB);

	frame[0] = 1 * MIB / pagesz;
	for (long i = 0; i < frame[0]; i++)
		p[i * pagesz] = 1;
	frame[1] = 0;
	return frame[0];
}

int main(int argc, char **argv)
{
	long steps = argc > 1 ? atol(argv[1]) : 8;
	long delay_ms = argc > 2 ? atol(argv[2]) : 50;
	int gate = !(argc > 3 && strcmp(argv[3], "nogate") == 0);
	struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };
	long before, after, fast = 0, slow = 0;
	char c;

	pagesz = sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	before = rss_anon();
	if (gate) {
		printf("ready pid=%d rss_anon=%ld\n", (int)getpid(), before);
		if (read(0, &c, 1) != 1)
			return 2;
		before = rss_anon();
	}
	for (long s = 0; s < steps; s++) {
		fast += grow_fast();
		slow += grow_slow();
		if (delay_ms)
			nanosleep(&ts, NULL);
	}
	after = rss_anon();
	printf("done steps=%ld fast_pages=%ld slow_pages=%ld rss_anon_before=%ld "
	       "rss_anon_after=%ld\n", steps, fast, slow, before, after);
	if (gate)
		while (read(0, &c, 1) > 0)
			;
	return 0;
}
