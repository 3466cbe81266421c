// SPDX-License-Identifier: GPL-2.0-only
/* leakflags_alloc: a tiny "jemalloc-like" shared library for memleak's -O OBJ
 * --symbols-prefix je_ test (tests/kernel/test_memleak_flags.py).  Built by the test with
 * -shared -fPIC.  It exports the prefixed names memleak probes (je_malloc and je_free are
 * the mandatory ones, je_calloc/je_realloc optional) and forwards to libc, whose own malloc
 * memleak must then leave alone.  Each wrapper keeps a counter after the call so that it is
 * a real call (not a tail jump): libc's malloc then runs in a frame below je_malloc's. */
#include <stddef.h>
#include <stdlib.h>

volatile unsigned long je_calls;

void *je_malloc(size_t n)
{
	void *p = malloc(n);
	je_calls++;
	return p;
}

void *je_calloc(size_t nmemb, size_t n)
{
	void *p = calloc(nmemb, n);
	je_calls++;
	return p;
}

void *je_realloc(void *old, size_t n)
{
	void *p = realloc(old, n);
	je_calls++;
	return p;
}

void je_free(void *p)
{
	free(p);
	je_calls++;
}
