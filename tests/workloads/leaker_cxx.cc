// SPDX-License-Identifier: GPL-2.0-only
/* leaker_cxx: leaks exactly 23 blocks of 4099 bytes through operator new and 23 through
 * operator new[] from named noinline functions, and deletes others.  BCC's memleak sees
 * these only through malloc, with the caller of `new` missing (BCC #4958).
 *   leaker_cxx [wait|start]   as leaker.c */
#include <cstdio>
#include <cstring>
#include <new>
#include <unistd.h>

#define LEAKS 23
#define SIZE 4099

struct Block {
	char bytes[SIZE];
};

static void *volatile sink[4 * LEAKS];
static int nsink;

__attribute__((noinline)) void leak_new(void) { sink[nsink++] = new Block; }
__attribute__((noinline)) void leak_new_array(void) { sink[nsink++] = new char[SIZE]; }
__attribute__((noinline)) void churn_new(void)
{
	/* volatile stores: otherwise the new/delete pairs may be elided */
	Block *b = new Block;
	sink[4 * LEAKS - 1] = b;
	char *a = new char[SIZE];
	sink[4 * LEAKS - 2] = a;
	char *n = new (std::nothrow) char[SIZE];
	sink[4 * LEAKS - 3] = n;
	delete b;
	delete[] a;
	delete[] n;
}

static void wait_byte(void)
{
	char c;
	if (read(0, &c, 1) < 0)
		perror("read");
}

int main(int argc, char **argv)
{
	bool start = argc > 1 && !strcmp(argv[1], "start");
	setvbuf(stdout, NULL, _IONBF, 0);
	if (!start) {
		printf("ready %d\n", getpid());
		wait_byte();
	}
	for (int i = 0; i < LEAKS; i++) {
		leak_new();
		leak_new_array();
	}
	for (int i = 0; i < 7; i++)
		churn_new();
	printf("done\n");
	wait_byte();
	return 0;
}
