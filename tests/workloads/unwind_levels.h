/* shared by unwind_chain.c and unwind_levels.c */
enum job_kind { JOB_MALLOC, JOB_BRK, JOB_FAULT, JOB_GETPPID, JOB_SIGNAL, JOB_DEEP };

struct job {
	enum job_kind kind;
	int n;          /* actions to do */
	int i;          /* the current one */
	char *pages;    /* JOB_FAULT: n fresh pages */
	void *keep[64]; /* JOB_MALLOC: the blocks (kept: they are the leak) */
};

long chain5(struct job *j, long depth);
