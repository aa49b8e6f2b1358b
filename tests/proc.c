/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proc.c: one copy of the process and file helpers that the integration
 * tests and the chaos test share (tests/proc.h). Between fork and exec the
 * child only calls async-signal-safe functions plus setenv/unsetenv
 * (the test is single-threaded when it forks).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "util.h"

/* In the child: the environment every test child gets, then c's extras. */
static void child_env(const struct tp_child *c)
{
	unsetenv("HTTP_PROXY");
	unsetenv("HTTPS_PROXY");
	unsetenv("http_proxy");
	unsetenv("https_proxy");
	unsetenv("ALL_PROXY");
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	if (c->notify_socket) {
		setenv("NOTIFY_SOCKET", c->notify_socket, 1);
		if (c->watchdog_usec)
			setenv("WATCHDOG_USEC", c->watchdog_usec, 1);
	}
	if (c->aws_key_id) {
		setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
		setenv("AWS_ACCESS_KEY_ID", c->aws_key_id, 1);
		setenv("AWS_SECRET_ACCESS_KEY", c->aws_secret ? c->aws_secret : "", 1);
		unsetenv("AWS_SESSION_TOKEN");
	}
}

/* In the child: stdin, stdout and stderr as c says. */
static void child_fds(const struct tp_child *c)
{
	int out = -1, err = -1;

	if (c->flags & TP_STDIN_NULL) {
		int in = open("/dev/null", O_RDONLY);

		if (in >= 0) {
			dup2(in, 0);
			close(in);
		}
	}
	if (c->out_fd > 0)
		out = dup(c->out_fd);
	else if (c->out_path)
		out = open(c->out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (c->err_path && c->out_fd <= 0 && c->out_path && strcmp(c->err_path, c->out_path) == 0)
		err = out >= 0 ? dup(out) : -1;
	else if (c->err_path)
		err = open(c->err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (out >= 0) {
		dup2(out, 1);
		close(out);
	}
	if (err >= 0) {
		dup2(err, 2);
		close(err);
	}
}

pid_t tp_spawn(char *const argv[], const struct tp_child *c)
{
	static const struct tp_child defaults = { 0 };
	pid_t parent = getpid(), pid;

	if (!c)
		c = &defaults;
	fflush(NULL);
	pid = fork();
	if (pid != 0) {
		/* Both sides set the group: no race with a kill of the group. */
		if (pid > 0 && (c->flags & TP_OWN_GROUP))
			setpgid(pid, pid);
		return pid;
	}
	if (c->flags & TP_OWN_GROUP)
		setpgid(0, 0);
	if (c->flags & TP_DIE_WITH_PARENT) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
	}
	if (c->flags & TP_DEFAULT_SIGNALS) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGALRM, SIG_DFL);
	}
	if (c->flags & TP_NO_CORE) {
		struct rlimit no_core = { 0, 0 };

		setrlimit(RLIMIT_CORE, &no_core);
	}
	child_env(c);
	child_fds(c);
	execv(argv[0], argv);
	_exit(127);
}

int tp_run(char *const argv[], char *out, size_t size, const struct tp_child *c)
{
	struct tp_child piped = { 0 };
	size_t used = 0;
	int p[2], status;
	pid_t pid;

	if (c)
		piped = *c;
	piped.out_path = NULL;
	if (pipe2(p, O_CLOEXEC) != 0)
		return -2;
	piped.out_fd = p[1];
	pid = tp_spawn(argv, &piped);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return -2;
	}
	for (;;) {
		char sink[4096];
		bool room = used + 1 < size;
		ssize_t n = room ? read(p[0], out + used, size - 1 - used) : read(p[0], sink, sizeof(sink));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (room)
			used += (size_t)n;
	}
	out[used] = '\0';
	close(p[0]);
	while (waitpid(pid, &status, 0) != pid)
		if (errno != EINTR)
			return -2;
	return tp_exit_code(status);
}

bool tp_reap(pid_t pid, int64_t ms, int *ret_status)
{
	int64_t end = kl_mono_ms() + ms;
	int status;

	for (;;) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			if (ret_status)
				*ret_status = status;
			return true;
		}
		if (kl_mono_ms() >= end)
			return false;
		kl_sleep_ms(20);
	}
}

int tp_exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void tp_kill(pid_t pid)
{
	if (pid <= 0)
		return;
	/* A child without its own group: no group has its pid, ESRCH. */
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

char *tp_read_file(const char *path, size_t max, size_t *ret_len)
{
	FILE *f = fopen(path, "r");
	size_t cap = max < (64u << 10) ? max : 64u << 10, len = 0, n;
	char *buf;

	if (!f)
		return NULL;
	buf = malloc(cap + 1);
	while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap && cap < max) {
			size_t next = cap > max / 2 ? max : cap * 2;
			char *bigger = realloc(buf, next + 1);

			if (!bigger) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = bigger;
			cap = next;
		}
	}
	fclose(f);
	if (!buf)
		return NULL;
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	return buf;
}

int tp_write_file(const char *path, const char *fmt, ...)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f;
	va_list ap;
	int ok;

	if (fd < 0)
		return -1;
	if (fchmod(fd, 0600) != 0 || !(f = fdopen(fd, "w"))) {
		close(fd);
		return -1;
	}
	va_start(ap, fmt);
	ok = vfprintf(f, fmt, ap) >= 0;
	va_end(ap);
	ok &= fclose(f) == 0;
	return ok ? 0 : -1;
}

void tp_step(const char *fmt, ...)
{
	int64_t now = kl_wall_ms();
	time_t secs = (time_t)(now / 1000);
	struct tm tm;
	char when[32];
	va_list ap;

	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	fprintf(stderr, "\n  [%s.%03d] ", when, (int)(now % 1000));
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}
