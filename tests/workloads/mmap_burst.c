/* mmap_burst N: N anonymous mmap(4 KiB)+munmap pairs as fast as they go, the load of the
 * event-stream benchmark and of the exact-accounting test (events shown + events counted
 * lost = N, for a tracer given -p of this process).
 *
 * Protocol (stdout, unbuffered): "ready pid=P" then wait for one byte on stdin; make the N
 * pairs; print "done calls=N secs=S rate=R" (R: pairs per second of wall time, the
 * producer's own figure); exit when stdin reaches EOF.  Nothing but the N pairs calls mmap
 * after "ready" (printf's buffer is allocated before it: stdout is unbuffered).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 200000;
	char c;

	setvbuf(stdout, NULL, _IONBF, 0);
	printf("ready pid=%d\n", getpid());
	if (read(0, &c, 1) != 1)
		return 1;
	double t0 = now();
	for (long i = 0; i < n; i++) {
		void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		munmap(p, 4096);
	}
	double secs = now() - t0;
	printf("done calls=%ld secs=%.6f rate=%.0f\n", n, secs, n / secs);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
