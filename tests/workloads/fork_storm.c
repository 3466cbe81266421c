/* fork_storm N K [RATE]: N short-lived children, one after another, each making K getppid
 * syscalls and exiting; at most RATE forks per second (0: as fast as possible).
 * Prints "ready pid=P", waits for one byte on stdin, then "done children=N calls=C"
 * (C = children that made their K calls, times K) and exits.
 * The parent itself makes no getppid call.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 5000;
	int k = argc > 2 ? atoi(argv[2]) : 3;
	double rate = argc > 3 ? atof(argv[3]) : 0;
	char c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d\n", (int)getpid());
	if (read(0, &c, 1) != 1)
		return 1;
	pid_t me = getpid();
	double t0 = now();
	long good = 0;
	for (int i = 0; i < n; i++) {
		if (rate > 0) {
			double due = t0 + i / rate, t = now();
			if (due > t)
				usleep((useconds_t)((due - t) * 1e6));
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			int ok = 0;
			for (int j = 0; j < k; j++)
				ok += syscall(SYS_getppid) == me;
			_exit(ok == k ? 0 : 1);
		}
		int st;
		if (waitpid(pid, &st, 0) != pid)
			return 1;
		good += WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	printf("done children=%d calls=%ld\n", n, good * k);
	return 0;
}
