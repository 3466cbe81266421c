// madvise_mix HUGE OTHER: after a stdin gate, HUGE madvise(MADV_HUGEPAGE) calls among
// 3*OTHER other madvise calls (MADV_NORMAL, MADV_DONTNEED, MADV_NOHUGEPAGE), each checked.
// Prints "ready pid=N" before the gate and "done huge=H other=O len=L" after.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define LEN (4UL << 20)

int main(int argc, char **argv)
{
	int huge = argc > 1 ? atoi(argv[1]) : 23;
	int other = argc > 2 ? atoi(argv[2]) : 31;
	char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	char gate;
	if (read(0, &gate, 1) != 1)
		return 2;
	int h = 0, o = 0;
	for (int i = 0; i < huge || i < other; i++) {
		if (i < other) {
			o += madvise(p, LEN, MADV_NORMAL) == 0;
			o += madvise(p, LEN, MADV_DONTNEED) == 0;
			o += madvise(p, LEN, MADV_NOHUGEPAGE) == 0;
		}
		if (i < huge)
			h += madvise(p, LEN, MADV_HUGEPAGE) == 0;
	}
	printf("done huge=%d other=%d len=%lu\n", h, o, LEN);
	fflush(stdout);
	return 0;
}
