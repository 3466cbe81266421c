// SPDX-License-Identifier: GPL-2.0-only
// Shared library for the symbolizer tests: a known exported function in a .so.
volatile int sym_lib_sink;

__attribute__((noinline)) int sym_lib_func(int x)
{
    sym_lib_sink += x;
    return sym_lib_sink * 7;
}
