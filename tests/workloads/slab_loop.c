// SPDX-License-Identifier: GPL-2.0-only
// slab_loop N: after a line on stdin, open and close N TCP sockets and N pipes, then print
// DONE and wait for another line before exiting (its PID stays the one traced).
//   socket(AF_INET, SOCK_STREAM): one object each from sock_inode_cache (a constructor
//     makes it unmergeable) and TCP (the protocol's sock cache), a dentry, a file
//   pipe(): an inode (inode_cache), and kzalloc'ed with GFP_KERNEL_ACCOUNT the
//     pipe_inode_info (kmalloc-cg-192) and its 16 pipe_buffers (640 bytes: kmalloc-cg-1k)
//   close() allocates nothing.
// slabratetop's test counts them with -p PID and compares with bpftrace.
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 23;
	char line[16];

	printf("READY %d\n", (int)getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	for (int i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0) {
			perror("socket");
			return 1;
		}
		close(fd);
	}
	for (int i = 0; i < n; i++) {
		int p[2];
		if (pipe(p)) {
			perror("pipe");
			return 1;
		}
		close(p[0]);
		close(p[1]);
	}
	printf("DONE %d\n", n);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 0;
	return 0;
}
