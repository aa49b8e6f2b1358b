/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proc.h: the child processes of the integration and chaos tests (`kinlake
 * run` workers, `kinlake status`, producers, checkers): start one with a
 * clean environment, run one and capture its stdout, reap or kill it; and
 * the files they share with the test (configs written 0600, logs read
 * back). No CUnit here, so tests/chaos uses it too: functions return
 * errors and the caller asserts.
 *
 * Invariant: every child starts with no HTTP proxy for loopback and no
 * systemd notify socket or watchdog of the test's own. None of this is
 * thread-safe: call it from the test's main thread.
 */
#ifndef KL_TEST_PROC_H
#define KL_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* struct tp_child.flags */
#define TP_OWN_GROUP       0x1u   /* its own process group (set on both sides of the fork) */
#define TP_DIE_WITH_PARENT 0x2u   /* SIGKILL when the test dies (PR_SET_PDEATHSIG) */
#define TP_NO_CORE         0x4u   /* RLIMIT_CORE 0: a child meant to crash leaves no core */
#define TP_DEFAULT_SIGNALS 0x8u   /* SIGINT, SIGTERM, SIGHUP, SIGALRM at SIG_DFL before exec */
#define TP_STDIN_NULL      0x10u  /* stdin from /dev/null */

/* How to start a child. All pointers are borrowed, only for the call. */
struct tp_child {
	unsigned flags;             /* TP_* */
	int out_fd;                 /* > 0: the child's stdout (the caller still closes its copy) */
	const char *out_path;       /* else: stdout appended to this file; NULL: inherited */
	const char *err_path;       /* stderr appended to this file (the same path as out_path:
				     * one file for both); NULL: inherited */
	const char *aws_key_id;     /* when set: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from */
	const char *aws_secret;     /* these, no session token, AWS_EC2_METADATA_DISABLED */
	const char *notify_socket;  /* when set: NOTIFY_SOCKET, and WATCHDOG_USEC = watchdog_usec */
	const char *watchdog_usec;
};

/*
 * Forks and execs argv[0] with argv as c says (NULL: all defaults). Returns
 * the child's pid, or -1 with errno when fork failed; an exec failure is
 * the child's exit status 127. The caller reaps the child (tp_reap,
 * tp_kill or waitpid).
 */
pid_t tp_spawn(char *const argv[], const struct tp_child *c);

/*
 * Runs argv[0] with argv as c says (its out_fd and out_path are ignored)
 * and waits for it; its stdout goes into out (size > 0; NUL-terminated,
 * truncated to size - 1 bytes, the rest read and dropped so the child never
 * blocks on a full pipe). Returns the exit status, -1 when a signal killed
 * it, -2 when it could not be started or reaped.
 */
int tp_run(char *const argv[], char *out, size_t size, const struct tp_child *c);

/* Waits up to ms (0: only looks) for pid to end, polling every 20 ms.
 * Returns true when it ended and was reaped, its wait status in
 * *ret_status (when not NULL); false while it still runs. */
bool tp_reap(pid_t pid, int64_t ms, int *ret_status);

/* The exit status in a wait status, -1 when a signal ended the process. */
int tp_exit_code(int status);

/* SIGKILL to pid and to its process group when it has one, then reaps it.
 * No-op for pid <= 0. */
void tp_kill(pid_t pid);

/*
 * Reads up to max bytes of path into a NUL-terminated buffer the caller
 * frees; its length in *ret_len when not NULL. Returns NULL when path
 * cannot be opened or memory runs out.
 */
char *tp_read_file(const char *path, size_t max, size_t *ret_len);

/* Writes a file (a config: mode 0600) from fmt. Returns 0, -1 with errno
 * when it could not be written. */
int tp_write_file(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints a progress line to stderr, stamped with the UTC wall-clock time
 * (HH:MM:SS.mmm) to line up with the workers' logs. */
void tp_step(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
