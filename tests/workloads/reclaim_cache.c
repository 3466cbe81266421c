/* reclaim_cache FILE [PASSES]: read FILE from disk PASSES times (default 2), between gates.
 *
 * Run inside a memory cgroup whose limit is below FILE's size, each read charges fresh
 * page-cache pages to the cgroup and the charge reclaims older ones: memory-cgroup limit
 * reclaim (mm_vmscan_memcg_reclaim_begin/end), in this process's context, with nothing to
 * write (clean file pages) and no swap needed.  FILE's cached pages are dropped first
 * (POSIX_FADV_DONTNEED after fsync), wherever they were charged, so the reads miss the
 * cache and charge this process's cgroup; the reads use a 1 MiB buffer.
 *
 * Protocol:
 *   stdout "ready pid=P pages=N"   (N: pages of FILE) then wait for one byte on stdin
 *   read FILE PASSES times
 *   stdout "read bytes=B ns=T"     (T: CLOCK_MONOTONIC time the passes took) then wait for
 *                                  EOF on stdin (the test reads its witnesses while the
 *                                  process lives)
 * Exit status 0 when every pass read the whole file.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)

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
	int passes = argc > 2 ? atoi(argv[2]) : 2;
	static char buf[BUF];
	char line[96];
	struct stat st;
	long long total = 0;
	struct timespec t0, t1;
	int fd;

	if (argc < 2) {
		fputs("usage: reclaim_cache FILE [PASSES]\n", stderr);
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 2;
	}
	fsync(fd);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	snprintf(line, sizeof(line), "ready pid=%d pages=%lld\n", getpid(),
		 (long long)st.st_size / sysconf(_SC_PAGESIZE));
	gate(line);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < passes; i++) {
		ssize_t n;

		if (lseek(fd, 0, SEEK_SET) < 0)
			return 2;
		while ((n = read(fd, buf, BUF)) > 0)
			total += n;
		if (n < 0) {
			perror("read");
			return 2;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	snprintf(line, sizeof(line), "read bytes=%lld ns=%lld\n", total,
		 (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
	fputs(line, stdout);
	fflush(stdout);
	while (read(0, line, sizeof(line)) > 0)
		;
	return total != (long long)st.st_size * passes;
}
