// SPDX-License-Identifier: GPL-2.0-only
// Symbolizer test target (tests/unit/test_symbols.py).  Prints runtime addresses of known
// functions as "name 0xADDR" lines, then "READY", then waits for stdin to close.  Built as
// PIE and non-PIE, with and without frame pointers, linked to libsym_lib.so (sym_lib.c).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

volatile int sink;
void *ret_addr;

__attribute__((noinline)) int sym_alpha(int x) { sink += x; return sink * 3; }

__attribute__((noinline)) static int sym_gamma_static(int x) { sink ^= x; return sink + 1; }

__attribute__((noinline)) int sym_leaf(int x)
{
    ret_addr = __builtin_return_address(0);  // a return address inside sym_caller
    sink += x;
    return sink;
}

__attribute__((noinline)) int sym_caller(int x)
{
    int r = sym_leaf(x + 1);
    sink += r;  // keeps the call from being a tail call
    return sink;
}

extern int sym_lib_func(int);

int main(void)
{
    char buf[64];
    sym_alpha(1);
    sym_gamma_static(2);
    sym_caller(3);
    sym_lib_func(4);
    // An anonymous executable mapping stands in for JIT code (perf-PID.map test).
    void *jit = mmap(NULL, 8192, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    // dlsym gives the real code address; &malloc in a non-PIE binary would be a PLT stub.
    printf("sym_alpha %p\n", (void *)sym_alpha);
    printf("sym_alpha+5 %p\n", (void *)((char *)sym_alpha + 5));
    printf("sym_gamma_static %p\n", (void *)sym_gamma_static);
    printf("sym_leaf %p\n", (void *)sym_leaf);
    printf("ret_in_sym_caller %p\n", ret_addr);
    printf("sym_lib_func %p\n", dlsym(RTLD_DEFAULT, "sym_lib_func"));
    printf("malloc %p\n", dlsym(RTLD_DEFAULT, "malloc"));
    printf("jit %p\n", jit);
    printf("READY\n");
    fflush(stdout);
    while (fgets(buf, sizeof buf, stdin))
        ;
    return 0;
}
