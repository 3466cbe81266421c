/* shm_seq: a known System V shared-memory sequence, each call printed with its result.
 *
 *   shmget(KEY, SIZE, IPC_CREAT|IPC_EXCL|0600)        -> id
 *   shmget(KEY, SIZE, IPC_CREAT|IPC_EXCL|0600)        -> -1 EEXIST
 *   shmat(id, NULL, 0)                                -> a
 *   shmat(id, NULL, SHM_RDONLY)                       -> b
 *   shmdt(a); shmdt(b)                                -> 0, 0
 *   shmctl(id, IPC_STAT, &ds)                         -> 0
 *   shmctl(id, IPC_RMID, NULL)                        -> 0
 *
 * KEY is 0x4d4c0000 | (pid & 0xffff), so runs in parallel do not collide; SIZE is not a
 * multiple of the page size (the kernel keeps the size asked for: IPC_STAT shows it).
 *
 * Protocol (stdout, line buffered): "ready pid=P key=0x... size=N", then wait for one byte
 * on stdin (the tracer is attached), then one line per call in call order:
 *   NAME ret=R errno=E [id=I] [addr=0x...] [flg=F] [cmd=C]
 * then "done"; exit when stdin reaches EOF.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#define SIZE 200005

static void show(const char *name, long ret, int err)
{
	printf("%s ret=%ld errno=%d\n", name, ret, ret < 0 ? err : 0);
}

int main(void)
{
	char c;
	key_t key = (key_t)(0x4d4c0000 | (getpid() & 0xffff));
	struct shmid_ds ds;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d key=0x%x size=%d\n", getpid(), (unsigned)key, SIZE);
	if (read(0, &c, 1) != 1)
		return 2;

	int id = shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0600);
	show("shmget", id, errno);
	if (id < 0)
		return 1;
	long again = shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0600);
	show("shmget", again, errno);
	void *a = shmat(id, NULL, 0);
	show("shmat", (long)a, errno);
	void *b = shmat(id, NULL, SHM_RDONLY);
	show("shmat", (long)b, errno);
	((volatile char *)a)[0] = 1; /* the read-only view sees the writable one's byte */
	if (((volatile char *)b)[0] != 1)
		return 1;
	show("shmdt", shmdt(a), errno);
	show("shmdt", shmdt(b), errno);
	show("shmctl", shmctl(id, IPC_STAT, &ds), errno);
	if ((long)ds.shm_segsz != SIZE)
		return 1;
	show("shmctl", shmctl(id, IPC_RMID, NULL), errno);
	printf("done\n");
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
