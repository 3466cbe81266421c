// SPDX-License-Identifier: GPL-2.0-only
// memleak's lost "symbols": after a byte on stdin (the tracer attached), dlopen the library
// given (leak_dlclose_lib.c), leak LEAKS blocks from each of its three functions (three
// stacks whose first frame is in the library) and LEAKS from main's own (a stack that
// stays symbolizable), dlclose the library (unmapped: its frames are in no mapping now),
// then exit.  A tracer that had not read the process's map while the library was mapped
// can only print the library's frames as addresses.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define LEAKS 23

__attribute__((noinline)) void *main_leak(size_t n)
{
	void *p = malloc(n);
	__asm__ volatile("" : : "r"(p) : "memory");
	return p;
}

int main(int argc, char **argv)
{
	static const char *names[] = {"lib_leak_a", "lib_leak_b", "lib_leak_c"};
	char go;

	if (argc < 2 || read(0, &go, 1) != 1)
		return 2;
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "%s\n", dlerror());
		return 1;
	}
	for (int f = 0; f < 3; f++) {
		void *(*leak)(size_t) = (void *(*)(size_t))dlsym(lib, names[f]);
		if (!leak)
			return 1;
		for (int i = 0; i < LEAKS; i++)
			leak(100 + f);
	}
	for (int i = 0; i < LEAKS; i++)
		main_leak(200);
	return dlclose(lib) != 0;
}
