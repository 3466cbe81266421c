/* swap_reread MIB: fill MIB of anonymous memory, then read all of it back, between gates.
 *
 * Run inside a memory cgroup whose limit is below MIB (with swap on), the fill pushes most
 * pages out to swap (limit reclaim, in this process's context) and the re-read brings them
 * back in (swap-in faults, page-cluster readahead).  Every page gets a non-zero byte: 6.18
 * keeps zero-filled pages off the swap device (SWPOUT_ZERO/SWPIN_ZERO, no PSWPIN).
 * MADV_NOHUGEPAGE keeps the region in order-0 pages (one swap slot per page).
 *
 * Protocol:
 *   stdout "ready pid=P pages=N"   then wait for one byte on stdin (gate 1)
 *   fill every page
 *   stdout "written"               then wait for one byte (gate 2)
 *   read every page back, checking its byte; each read timed (CLOCK_MONOTONIC around
 *   the access) and, when the thread's major-fault count moved over it (getrusage), its
 *   time added to the major faults' wait: the witness of swapin's WAIT column
 *   stdout "reread bad=B majflt=M wait_ns=W max_ns=X"
 *                                  then wait for EOF on stdin (gate 3: the test reads the
 *                                  process's own counters while it lives)
 * Exit status 0 when every page read back its byte.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void gate(const char *line)
{
	char c;

	fputs(line, stdout);
	fflush(stdout);
	if (read(0, &c, 1) < 0)
		exit(3);
}

int main(int argc, char **argv)
{
	long mib = argc > 1 ? atol(argv[1]) : 64;
	long pagesz = sysconf(_SC_PAGESIZE);
	size_t n = (size_t)mib << 20, pages = n / pagesz;
	volatile unsigned char *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char line[96];
	unsigned long bad = 0;

	if (p == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	madvise((void *)p, n, MADV_NOHUGEPAGE);
	snprintf(line, sizeof(line), "ready pid=%d pages=%zu\n", getpid(), pages);
	gate(line);
	for (size_t i = 0; i < pages; i++)
		p[i * pagesz] = (unsigned char)(i % 251 + 1);
	gate("written\n");
	struct rusage ru;
	struct timespec a, b;
	long maj, nmaj = 0;
	long long wait_ns = 0, max_ns = 0;

	getrusage(RUSAGE_THREAD, &ru);
	maj = ru.ru_majflt;
	for (size_t i = 0; i < pages; i++) {
		clock_gettime(CLOCK_MONOTONIC, &a);
		bad += p[i * pagesz] != (unsigned char)(i % 251 + 1);
		clock_gettime(CLOCK_MONOTONIC, &b);
		getrusage(RUSAGE_THREAD, &ru);
		if (ru.ru_majflt != maj) {
			long long ns = (b.tv_sec - a.tv_sec) * 1000000000LL + b.tv_nsec - a.tv_nsec;

			nmaj += ru.ru_majflt - maj;
			maj = ru.ru_majflt;
			wait_ns += ns;
			if (ns > max_ns)
				max_ns = ns;
		}
	}
	snprintf(line, sizeof(line), "reread bad=%lu majflt=%ld wait_ns=%lld max_ns=%lld\n",
		 bad, nmaj, wait_ns, max_ns);
	fputs(line, stdout);
	fflush(stdout);
	while (read(0, line, sizeof(line)) > 0)
		;
	return bad != 0;
}
