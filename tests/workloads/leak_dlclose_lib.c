// SPDX-License-Identifier: GPL-2.0-only
// The library leak_dlclose.c loads, leaks from and unloads: three functions, three stacks.
#include <stdlib.h>

#define LEAKER(name)                                                   \
	__attribute__((noinline)) void *name(size_t n)                 \
	{                                                              \
		void *p = malloc(n);                                   \
		__asm__ volatile("" : : "r"(p) : "memory");            \
		return p;                                              \
	}

LEAKER(lib_leak_a)
LEAKER(lib_leak_b)
LEAKER(lib_leak_c)
