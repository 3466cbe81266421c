/* mmap_named: 23 mmaps of a named file with known offsets, sizes, protections and flags,
 * 5 anonymous maps and 2 failing mmaps, each printed with its result.
 *
 * usage: mmap_named DIR    (creates DIR/mmap_named_target.dat, 32 pages)
 *
 * Protocol (stdout, line buffered): "ready pid=P file=PATH", then wait for one byte on
 * stdin (the tracer is attached), then one line per call in call order:
 *   file i=I addr=0x... off=O len=L prot=P flags=F fd=D
 *   anon i=I addr=0x... len=L prot=P flags=F
 *   fail what=badfd|eacces errno=E len=L prot=P flags=F fd=D off=O
 * then "done"; exit when stdin reaches EOF.  Every call goes through glibc's mmap(),
 * which passes its arguments to the syscall unchanged on x86-64 (strace shows the same).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#define PAGE 4096L
#define FILE_MAPS 23
#define ANON_MAPS 5

int main(int argc, char **argv)
{
	char path[4096], c;

	if (argc < 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(path, sizeof(path), "%s/mmap_named_target.dat", argv[1]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 32 * PAGE) != 0)
		return perror("open"), 1;
	int rofd = open(path, O_RDONLY);
	if (rofd < 0)
		return perror("open"), 1;
	printf("ready pid=%d file=%s\n", (int)getpid(), path);
	if (read(0, &c, 1) != 1)
		return 1;

	for (int i = 0; i < FILE_MAPS; i++) {
		long off = (i % 7) * PAGE;
		size_t len = (size_t)(i % 3 + 1) * PAGE;
		int prot = (i % 2) ? PROT_READ | PROT_WRITE : PROT_READ;
		if (i % 4 == 3)
			prot |= PROT_EXEC;
		int flags = (i % 2) ? MAP_SHARED : MAP_PRIVATE;
		if (i % 5 == 0)
			flags |= MAP_POPULATE;
		void *p = mmap(NULL, len, prot, flags, fd, off);
		if (p == MAP_FAILED)
			return perror("mmap file"), 1;
		printf("file i=%d addr=%p off=%ld len=%zu prot=%d flags=%d fd=%d\n",
		       i, p, off, len, prot, flags, fd);
	}
	for (int i = 0; i < ANON_MAPS; i++) {
		size_t len = (size_t)(i + 1) * 2 * PAGE;
		int flags = MAP_PRIVATE | MAP_ANONYMOUS | (i == 4 ? MAP_NORESERVE : 0);
		void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, -1, 0);
		if (p == MAP_FAILED)
			return perror("mmap anon"), 1;
		printf("anon i=%d addr=%p len=%zu prot=%d flags=%d\n", i, p, len,
		       PROT_READ | PROT_WRITE, flags);
	}
	/* an fd that names no open file: EBADF */
	int badfd = 1000;
	void *p = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, badfd, 0);
	printf("fail what=badfd errno=%d len=%ld prot=%d flags=%d fd=%d off=0 ret=%p\n",
	       p == MAP_FAILED ? errno : 0, PAGE, PROT_READ, MAP_PRIVATE, badfd, p);
	/* a writable shared map of a read-only fd: EACCES, with the file still named */
	p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, rofd, PAGE);
	printf("fail what=eacces errno=%d len=%ld prot=%d flags=%d fd=%d off=%ld ret=%p\n",
	       p == MAP_FAILED ? errno : 0, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, rofd,
	       PAGE, p);
	printf("done\n");
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
