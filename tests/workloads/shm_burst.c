/* shm_burst N: a System V segment made (shmget, IPC_PRIVATE), then N shmat+shmdt pairs as
 * fast as they go, then the segment removed (shmctl IPC_RMID): 2N+2 shm calls, none
 * paced — the load of shmsnoop's exact-accounting test (calls shown + calls counted lost =
 * calls made, for a tracer given -p of this process).
 *
 * Protocol (stdout, unbuffered): "ready pid=P" then wait for one byte on stdin; make the
 * calls; print "done calls=C failed=F secs=S"; exit when stdin reaches EOF.  No shm call
 * before "ready" and none after "done".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/shm.h>
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
	long n = argc > 1 ? atol(argv[1]) : 50000, calls = 0, failed = 0;
	char c;

	setvbuf(stdout, NULL, _IONBF, 0);
	printf("ready pid=%d\n", getpid());
	if (read(0, &c, 1) != 1)
		return 1;
	double t0 = now();
	int id = shmget(IPC_PRIVATE, 1 << 16, IPC_CREAT | 0600);
	calls++;
	if (id < 0) {
		perror("shmget");
		return 1;
	}
	for (long i = 0; i < n; i++) {
		void *p = shmat(id, NULL, 0);
		calls++;
		if (p == (void *)-1) {
			failed++;
			continue;
		}
		failed += shmdt(p) != 0;
		calls++;
	}
	failed += shmctl(id, IPC_RMID, NULL) != 0;
	calls++;
	printf("done calls=%ld failed=%ld secs=%.6f\n", calls, failed, now() - t0);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
