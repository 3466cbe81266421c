/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __SELFTEST_H
#define __SELFTEST_H

struct selftest_event {
	__u64 ts_ns;
	__u32 pid;
	__u32 seq;
	__s32 stack_id;
	__u32 pad;
	char comm[16];
};

struct selftest_value {
	__u64 count;
	__u32 pid;
	__u32 pad;
};

#endif
