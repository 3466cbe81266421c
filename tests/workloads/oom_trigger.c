/* Touches MB megabytes in touch_pages() (frame pointers: it appears in user stacks), then
 * prints "touched" and waits for stdin to close.  Run a big idle one and a small one in
 * the same memory cgroup: the small one's faults trigger the OOM, the big one is killed. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

__attribute__((noinline)) void touch_pages(volatile char *p, size_t n)
{
	/* a stack local forces the frame (push rbp) before the loop: without it gcc omits
	 * the leaf function's frame and main vanishes from the frame-pointer walk */
	volatile char frame[16];
	frame[0] = 0;
	for (size_t i = 0; i < n; i += 4096)
		p[i] = 1;
	__asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
	size_t n = (size_t)atol(argv[1]) << 20;
	char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	char c;
	if (argc > 2 && read(0, &c, 1) != 1) /* "wait": touch only when told */
		return 1;
	touch_pages(p, n);
	printf("touched\n");
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
