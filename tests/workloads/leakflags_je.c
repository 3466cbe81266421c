// SPDX-License-Identifier: GPL-2.0-only
/* leakflags_je: allocates through libleakflags_alloc.so (je_* names) and through libc.
 * Built by tests/kernel/test_memleak_flags.py, linked against the library.
 *
 * Prints "ready", waits for one byte on stdin, then:
 *   leak_je_malloc   23 x je_malloc(4099), kept                 -> the only leak memleak
 *                                                                  -O lib --symbols-prefix je_
 *                                                                  may report
 *   churn_je          7 x je_malloc(100)+je_free, 5 x je_calloc(3, 100)+je_free,
 *                     3 x je_realloc(NULL, 50) -> je_realloc(p, 5000) -> je_free
 *   leak_libc_malloc 11 x malloc(4099) straight from libc, kept  -> must not be reported
 * prints "done" and waits for EOF on stdin.
 * je_* allocations: 23 + 7 + 5 + 3 * 2 = 41; frees seen: 7 + 5 + 3 (realloc) + 3 = 18. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *je_malloc(size_t n);
void *je_calloc(size_t nmemb, size_t n);
void *je_realloc(void *old, size_t n);
void je_free(void *p);

#define LEAKS 23
#define SIZE 4099

static void *volatile sink[64];
static int nsink;
static void *volatile escape;
#define KEEP(p) (sink[nsink++] = (p))
#define ESC(p) (escape = (p), escape)

__attribute__((noinline)) void leak_je_malloc(void) { KEEP(je_malloc(SIZE)); }
__attribute__((noinline)) void leak_libc_malloc(void) { KEEP(malloc(SIZE)); }

__attribute__((noinline)) void churn_je(void)
{
	for (int i = 0; i < 7; i++)
		je_free(ESC(je_malloc(100)));
	for (int i = 0; i < 5; i++)
		je_free(ESC(je_calloc(3, 100)));
	for (int i = 0; i < 3; i++) {
		void *p = ESC(je_realloc(NULL, 50));
		p = ESC(je_realloc(p, 5000));
		je_free(p);
	}
}

int main(void)
{
	char c;
	printf("ready\n");
	fflush(stdout);
	if (read(0, &c, 1) != 1)
		return 1;
	for (int i = 0; i < LEAKS; i++)
		leak_je_malloc();
	churn_je();
	for (int i = 0; i < 11; i++)
		leak_libc_malloc();
	printf("done\n");
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
