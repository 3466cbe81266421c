/* SPDX-License-Identifier: GPL-2.0 */
/* mmapsnoop: the record sent per mmap() call (decoded in Python from this struct's BTF). */
#ifndef __MMAPSNOOP_H
#define __MMAPSNOOP_H

#define MMAP_PATH_LEVELS 16   /* steps up the dentry chain kept (leaf first): a name, or an
			       * empty slot for a mount crossing; more: path_truncated */
#define MMAP_NAME_LEN 128     /* bytes kept per component, NUL included */

enum mmap_file_kind {
	MMAP_ANON = 0,     /* MAP_ANONYMOUS: fd ignored */
	MMAP_FILE = 1,     /* the fd named an open file: path below */
	MMAP_NO_FILE = 2,  /* the fd named no open file (the call fails with EBADF) */
};

/* Every call: the arguments, the result, who.  Anonymous maps and calls without a file
 * (the storms: allocators, thread stacks) travel alone, 104 bytes, in ring `events`; a
 * file's map travels as struct mmap_file_event in ring `file_events` (2.2 KiB: the path's
 * components).  One fixed size per ring keeps each decodable as one numpy array; the
 * reader merges the two by ts_ns. */
struct mmap_event {
	__u64 ts_ns;         /* bpf_ktime_get_boot_ns() at syscall entry */
	__u64 addr_hint;     /* addr argument */
	__u64 len;
	__u64 prot;
	__u64 flags;
	__u64 off;
	__s64 ret;           /* mapped address, or -errno */
	__u32 pid;           /* tgid */
	__u32 tid;
	__s32 fd;
	__u16 path_levels;   /* slots filled in path[], leaf first (empty: mount crossing) */
	__u8 path_truncated; /* more components above those kept */
	__u8 file_kind;      /* enum mmap_file_kind */
	__u8 deleted;        /* the file's dentry is unlinked (d_path's " (deleted)") */
	__u8 pad[7];
	char comm[16];
};

struct mmap_file_event {
	struct mmap_event ev;
	char path[MMAP_PATH_LEVELS][MMAP_NAME_LEN];
};

/* the arguments stashed at syscall entry, keyed by pid_tgid, until the exit */
struct mmap_args {
	__u64 ts_ns;
	__u64 addr_hint;
	__u64 len;
	__u64 prot;
	__u64 flags;
	__u64 off;
	__u64 file;          /* struct file * the fd named at entry (0: none / anonymous) */
	__s32 fd;
	__u32 pad;
};

#endif
