/* SPDX-License-Identifier: GPL-2.0 */
/* brkstack: map key/records shared with Python (layouts read from this struct's BTF). */
#ifndef __BRKSTACK_H
#define __BRKSTACK_H

/* counts: {process, user stack, comm} -> number of brk() calls */
struct brk_key {
	__u32 tgid;
	__s32 user_stack_id; /* < 0: the stack could not be walked or stored (-errno) */
	char comm[16];
};

/* "new key" notification: one per distinct brk_key, so user space can snapshot the
 * process's memory map (and resolve the stack) while the process still lives. */
struct brk_seen {
	__u32 tgid;
	__s32 user_stack_id;
	char comm[16];       /* a new comm under a known PID means exec: re-read its maps */
};

#endif
