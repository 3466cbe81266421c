// SPDX-License-Identifier: GPL-2.0
// bench/launch_floor.py's program: nothing but an attach point (no maps, no CO-RE).
#define SEC(name) __attribute__((section(name), used))

SEC("tracepoint/syscalls/sys_enter_getppid")
int floor_getppid(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
