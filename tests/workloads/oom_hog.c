/* Touches memory until the memory cgroup it runs in OOM-kills it. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	size_t mb = argc > 1 ? strtoul(argv[1], 0, 10) : 512;
	for (size_t i = 0; i < mb; i++) {
		char *p = malloc(1 << 20);
		if (!p)
			return 1;
		memset(p, 0x5a, 1 << 20);
	}
	pause();
	return 0;
}
