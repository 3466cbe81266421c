// SPDX-License-Identifier: GPL-2.0
// mmapsnoop: one record per mmap() call with its arguments, result and file path.
//
// Hooks: the stable syscall tracepoints syscalls:sys_enter_mmap (arguments; the fd is
// turned into its struct file * right there, "at the time of the call") and
// sys_exit_mmap (the returned address or -errno).  The book's version used kprobes on
// fd_install/__close_fd to keep a pid+fd -> file cache; __close_fd was renamed close_fd in
// 5.11, and kernels without kprobes have neither.  Reading current->files->fdt->fd[fd]
// needs only CO-RE.
//
// The path is built here from the file's dentry chain (d_name up the d_parent links,
// crossing mount points through struct mount), not with bpf_d_path(): that helper is
// allowed only for a list of fentry/LSM attach points, not in tracepoint programs.
// Components are stored leaf first in fixed slots and joined in Python.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "memlens.bpf.h"
#include "mmapsnoop.h"

char LICENSE[] SEC("license") = "GPL";

#define MAP_ANONYMOUS 0x20
#define MMAP_MOUNT_CROSSINGS 8

const volatile bool targ_file_only = false;  /* --file-only: drop anonymous maps here */
/* --name: only tasks whose comm contains targ_comm (targ_comm_len bytes), tested here so
 * that other processes' calls cost no record, no ring space and no Python time */
const volatile char targ_comm[16] = {};
const volatile __u32 targ_comm_len = 0;

/* sized from --ring-size before load (the numbers here are placeholders) */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} file_events SEC(".maps");

/* LRU: an entry left behind by a thread that never reached the exit tracepoint (the
 * tool attached between enter and exit) is recycled instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct mmap_args);
} inflight SEC(".maps");

struct mmap_event mmap_event_btf_anchor __attribute__((unused));
struct mmap_file_event mmap_file_event_btf_anchor __attribute__((unused));

/* strstr(comm, targ_comm) within the comm's 16 bytes */
static __always_inline bool comm_allowed(void)
{
	char comm[16];
	__u32 n = targ_comm_len;
	int i, j;

	if (!n)
		return true;
	if (n > 15)
		return false;
	bpf_get_current_comm(comm, sizeof(comm));
	for (i = 0; i < 16; i++) {
		if (i + n > 15)
			return false;
		for (j = 0; j < 15; j++) {
			if (j >= n)
				return true;
			if (i + j >= 16 || comm[i + j] != targ_comm[j])
				break;
		}
	}
	return false;
}

static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int mmap_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (!task_allowed() || !comm_allowed())
		return PASS_ON;
	struct mmap_args a = {};
	a.ts_ns = bpf_ktime_get_boot_ns();
	a.addr_hint = ctx->args[0];
	a.len = ctx->args[1];
	a.prot = ctx->args[2];
	a.flags = ctx->args[3];
	a.fd = (int)ctx->args[4]; /* the field is unsigned long: -1 arrives as 0xffffffff */
	a.off = ctx->args[5];
	if (a.flags & MAP_ANONYMOUS) {
		if (targ_file_only)
			return PASS_ON;
	} else {
		a.file = (__u64)fd_file(a.fd);
	}
	__u64 id = bpf_get_current_pid_tgid();
	update_or_count(&inflight, &id, &a, BPF_ANY);
	return PASS_ON;
}

/* At the top of the mount tree, or of an internal mount attached nowhere (memfd, shm,
 * pipes): nothing above to name. */
static __always_inline bool at_root(struct dentry *dentry, struct mount *mnt)
{
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);

	if (dentry == mnt_root)
		return BPF_CORE_READ(mnt, mnt_parent) == mnt;
	return BPF_CORE_READ(dentry, d_parent) == dentry;
}

/* Fill path[] leaf first, one slot per step up: a dentry name, or an empty slot where the
 * walk crossed from a mount's root to its mount point.  Indexing slots by the loop counter
 * (not by a count of names) keeps the verifier's states mergeable: with a separate name
 * counter the unrolled walk exceeded the 1M-instruction budget.
 *
 * The file stays valid: a successful mmap holds a reference in the new vma, and a failed
 * one has dropped the fd's reference only if another thread closed the fd meanwhile (then
 * reads may see a recycled dentry; they never fault, bpf_probe_read_kernel is safe). */
static __always_inline void fill_path(struct mmap_file_event *fe, struct file *file)
{
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	struct mount *mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	struct hlist_bl_node **pprev = BPF_CORE_READ(dentry, d_hash.pprev);
	struct mmap_event *e = &fe->ev;
	int i;

	/* d_unlinked(): unhashed and not a root */
	e->deleted = !pprev && BPF_CORE_READ(dentry, d_parent) != dentry;
	for (i = 0; i < MMAP_PATH_LEVELS; i++) {
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);

		if (dentry == mnt_root || dentry == parent) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (dentry != mnt_root) {
				/* a pseudo file's dentry is its own parent (alloc_file_pseudo():
				 * memfd, anonymous shared memory): its name is the whole path */
				const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
				bpf_probe_read_kernel_str(fe->path[i], MMAP_NAME_LEN, name);
				i++;
				break;
			}
			if (up == mnt)
				break;
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			fe->path[i][0] = 0;
			continue;
		}
		const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
		bpf_probe_read_kernel_str(fe->path[i], MMAP_NAME_LEN, name);
		dentry = parent;
	}
	e->path_levels = i;
	e->path_truncated = i == MMAP_PATH_LEVELS && !at_root(dentry, mnt);
}

static __always_inline void fill_event(struct mmap_event *e, const struct mmap_args *a,
					long ret, __u64 id, __u8 kind)
{
	e->ts_ns = a->ts_ns;
	e->addr_hint = a->addr_hint;
	e->len = a->len;
	e->prot = a->prot;
	e->flags = a->flags;
	e->off = a->off;
	e->fd = a->fd;
	e->ret = ret;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->path_levels = 0;
	e->path_truncated = 0;
	e->deleted = 0;
	e->file_kind = kind;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int mmap_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct mmap_args *a = bpf_map_lookup_elem(&inflight, &id);
	if (!a)
		return PASS_ON;
	struct file *file = (struct file *)a->file;
	if (!(a->flags & MAP_ANONYMOUS) && file) {
		struct mmap_file_event *fe = reserve_or_count(&file_events, sizeof(*fe));
		if (fe) {
			fill_event(&fe->ev, a, ctx->ret, id, MMAP_FILE);
			fill_path(fe, file);
			bpf_ringbuf_submit(fe, 0);
		}
	} else {
		struct mmap_event *e = reserve_or_count(&events, sizeof(*e));
		if (e) {
			fill_event(e, a, ctx->ret, id,
				   (a->flags & MAP_ANONYMOUS) ? MMAP_ANON : MMAP_NO_FILE);
			bpf_ringbuf_submit(e, 0);
		}
	}
	bpf_map_delete_elem(&inflight, &id);
	return PASS_ON;
}
