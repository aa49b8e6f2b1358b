/* SPDX-License-Identifier: Apache-2.0 */
/*
 * faultctl.c: the test-side handle of a tests/tools/faultproxy child:
 * fork/exec, read its "PORT"/"CONTROL" lines, talk to its control port
 * with one short HTTP/1.1 request per connection (loopback only, no curl,
 * so it does not interfere with the client under test), and stop it.
 * Keeps a list of live proxies (the only mutable global here) so that an
 * atexit handler can stop what a failed test left running.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faultctl.h"

#define FAULTCTL_START_TIMEOUT_MS 10000
#define FAULTCTL_STOP_TIMEOUT_MS 5000
#define FAULTCTL_MAX_ANSWER (4 * 1024 * 1024)

struct faultctl {
	pid_t pid;
	unsigned short port, control_port;
	char url[64];
	char control_url[64];
	struct faultctl *next;
};

/* Proxies started and not yet stopped, for the atexit handler. */
static struct faultctl *live;
static int atexit_done;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void stop_leftovers(void)
{
	while (live)
		faultctl_stop(live);
}

/* Finds the proxy binary (see faultctl.h). Fills path; 0 or -1. */
static int find_binary(char *path, size_t cap)
{
	const char *env = getenv("KL_FAULTPROXY");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(path, cap, "%s", env);
		return access(path, X_OK);
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if ((size_t)snprintf(path, cap, "%s/../tools/faultproxy", self) < cap &&
			    access(path, X_OK) == 0)
				return 0;
		}
	}
#ifdef KL_FAULTPROXY_PATH
	snprintf(path, cap, "%s", KL_FAULTPROXY_PATH);
	return access(path, X_OK);
#else
	return -1;
#endif
}

/* Reaps pid within timeout_ms; returns its wait status or -1. */
static int reap(pid_t pid, long timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return st;
		if (r < 0 && errno != EINTR)
			return -1;
		if (now_ms() >= end)
			return -1;
		sleep_ms(5);
	}
}

/* Reads "PORT n" and "CONTROL n" from the child's stdout. */
static enum kl_err read_ports(int fd, struct faultctl *h)
{
	char buf[512];
	size_t len = 0;
	int64_t end = now_ms() + FAULTCTL_START_TIMEOUT_MS;

	while (!(h->port && h->control_port)) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		long left = (long)(end - now_ms());
		if (left <= 0) {
			fprintf(stderr, "faultctl: the proxy did not report its ports in time\n");
			return KL_ETIMEOUT;
		}
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			continue;
		if (len == sizeof(buf) - 1) {
			fprintf(stderr, "faultctl: unexpected output from the proxy\n");
			return KL_EIO;
		}
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "faultctl: the proxy exited before it was ready\n");
			return KL_ECONFIG;
		}
		len += (size_t)n;
		buf[len] = '\0';
		char *nl;
		while ((nl = strchr(buf, '\n')) != NULL) {
			unsigned v;
			*nl = '\0';
			if (sscanf(buf, "PORT %u", &v) == 1 && v > 0 && v < 65536)
				h->port = (unsigned short)v;
			else if (sscanf(buf, "CONTROL %u", &v) == 1 && v > 0 && v < 65536)
				h->control_port = (unsigned short)v;
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len + 1);
		}
	}
	return KL_OK;
}

enum kl_err faultctl_start(const char *upstream_url, struct faultctl **ret_h)
{
	char path[PATH_MAX], seed[32];
	const char *seed_env = getenv("KL_FAULTPROXY_SEED");
	struct faultctl *h;
	pid_t parent = getpid();
	long max_fd = sysconf(_SC_OPEN_MAX);
	int out[2];
	enum kl_err err;

	if (!upstream_url)
		return KL_EINVAL;
	if (find_binary(path, sizeof(path)) != 0) {
		fprintf(stderr, "faultctl: cannot find the faultproxy binary (set KL_FAULTPROXY)\n");
		return KL_ECONFIG;
	}
	snprintf(seed, sizeof(seed), "%s", seed_env && *seed_env ? seed_env : "1");
	h = calloc(1, sizeof(*h));
	if (!h)
		return KL_ENOMEM;
	if (pipe2(out, O_CLOEXEC) != 0) {
		free(h);
		return KL_EIO;
	}
	fflush(NULL);
	h->pid = fork();
	if (h->pid < 0) {
		close(out[0]);
		close(out[1]);
		free(h);
		return KL_EIO;
	}
	if (h->pid == 0) {
		char *argv[] = { path, "--listen", "127.0.0.1:0", "--upstream", (char *)upstream_url,
				 "--seed", seed, NULL };
		/* Die with the test process, however it ends. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		if (dup2(out[1], STDOUT_FILENO) < 0)
			_exit(127);
		/* Sockets of the test (curl's connections) must not live on in
		 * the proxy. Valgrind keeps its own descriptors above this limit. */
		if (max_fd < 0 || max_fd > 65536)
			max_fd = 65536;
		for (int fd = 3; fd < max_fd; fd++)
			close(fd);
		execv(path, argv);
		_exit(127);
	}
	close(out[1]);
	err = read_ports(out[0], h);
	close(out[0]);
	if (err == KL_ECONFIG) {
		/* it exited: 64 means it refused its arguments, anything else
		 * (127: exec failed) is a broken set-up */
		int st = reap(h->pid, FAULTCTL_STOP_TIMEOUT_MS);
		if (st == -1) {
			kill(h->pid, SIGKILL);
			reap(h->pid, FAULTCTL_STOP_TIMEOUT_MS);
		}
		if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 64)
			err = KL_EIO;
	} else if (err) {
		kill(h->pid, SIGKILL);
		reap(h->pid, FAULTCTL_STOP_TIMEOUT_MS);
	}
	if (err) {
		free(h);
		return err;
	}
	snprintf(h->url, sizeof(h->url), "http://127.0.0.1:%u", h->port);
	snprintf(h->control_url, sizeof(h->control_url), "http://127.0.0.1:%u", h->control_port);
	if (!atexit_done) {
		atexit(stop_leftovers);
		atexit_done = 1;
	}
	h->next = live;
	live = h;
	*ret_h = h;
	return KL_OK;
}

const char *faultctl_url(const struct faultctl *h)
{
	return h->url;
}

const char *faultctl_control_url(const struct faultctl *h)
{
	return h->control_url;
}

pid_t faultctl_pid(const struct faultctl *h)
{
	return h->pid;
}

/*
 * One request to the control port. On KL_OK *ret_status is the HTTP status
 * and *ret_body (NUL-terminated, malloc'd, caller frees) the answer body.
 */
static enum kl_err control(struct faultctl *h, const char *method, const char *target,
			   const char *body, int *ret_status, char **ret_body)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { .tv_sec = 10 };
	size_t body_len = body ? strlen(body) : 0, len = 0, cap = 4096;
	char head[512], *ans = NULL, *sep;
	int fd, n, status;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(h->control_port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return KL_EIO;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		goto io;
	n = snprintf(head, sizeof(head),
		     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n"
		     "Content-Length: %zu\r\n\r\n",
		     method, target, h->control_port, body_len);
	if (n < 0 || (size_t)n >= sizeof(head) || send(fd, head, (size_t)n, MSG_NOSIGNAL) != n)
		goto io;
	for (size_t off = 0; off < body_len;) {
		ssize_t w = send(fd, body + off, body_len - off, MSG_NOSIGNAL);
		if (w <= 0)
			goto io;
		off += (size_t)w;
	}
	ans = malloc(cap);
	if (!ans)
		goto io;
	for (;;) {
		if (len + 1 == cap) {
			char *np = cap >= FAULTCTL_MAX_ANSWER ? NULL : realloc(ans, cap * 2);
			if (!np)
				goto io;
			ans = np;
			cap *= 2;
		}
		ssize_t r = recv(fd, ans + len, cap - 1 - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto io;
		if (r == 0)
			break;
		len += (size_t)r;
	}
	ans[len] = '\0';
	close(fd);
	sep = strstr(ans, "\r\n\r\n");
	if (sscanf(ans, "HTTP/1.1 %d", &status) != 1 || !sep) {
		free(ans);
		fprintf(stderr, "faultctl: malformed control answer\n");
		return KL_EPARSE;
	}
	memmove(ans, sep + 4, len - (size_t)(sep + 4 - ans) + 1);
	*ret_status = status;
	*ret_body = ans;
	return KL_OK;
io:
	fprintf(stderr, "faultctl: control request %s %s failed: %s\n", method, target,
		strerror(errno));
	free(ans);
	close(fd);
	return KL_EIO;
}

enum kl_err faultctl_set_rules(struct faultctl *h, const char *text)
{
	char *ans;
	int status;
	enum kl_err err = control(h, "POST", "/rules", text ? text : "", &status, &ans);

	if (err)
		return err;
	if (status != 200) {
		fprintf(stderr, "faultctl: rules rejected (%d): %s", status, ans);
		err = KL_EINVAL;
	}
	free(ans);
	return err;
}

/* Appends s percent-encoded (RFC 3986 unreserved kept) to out. */
static int pct_encode(char *out, size_t cap, const char *s)
{
	size_t o = strlen(out);

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		int keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			   (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~';
		int n = keep ? snprintf(out + o, cap - o, "%c", ch)
			     : snprintf(out + o, cap - o, "%%%02X", ch);
		if (n < 0 || (size_t)n >= cap - o)
			return -1;
		o += (size_t)n;
	}
	return 0;
}

enum kl_err faultctl_release(struct faultctl *h, const char *rule, unsigned n,
			     unsigned *ret_released)
{
	char target[256] = "/release?n=";
	char num[16];
	char *ans;
	int status;
	unsigned released;
	enum kl_err err;

	snprintf(num, sizeof(num), "%u", n);
	strcat(target, num);
	if (rule) {
		strcat(target, "&rule=");
		if (pct_encode(target, sizeof(target), rule) != 0)
			return KL_EINVAL;
	}
	err = control(h, "POST", target, NULL, &status, &ans);
	if (err)
		return err;
	if (status != 200 || sscanf(ans, "{\"released\":%u}", &released) != 1) {
		fprintf(stderr, "faultctl: release failed (%d): %s", status, ans);
		free(ans);
		return KL_EPARSE;
	}
	free(ans);
	if (ret_released)
		*ret_released = released;
	return KL_OK;
}

enum kl_err faultctl_stats(struct faultctl *h, json_object **ret_stats)
{
	char *ans;
	int status;
	json_object *obj;
	enum kl_err err = control(h, "GET", "/stats", NULL, &status, &ans);

	if (err)
		return err;
	obj = status == 200 ? json_tokener_parse(ans) : NULL;
	free(ans);
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		fprintf(stderr, "faultctl: /stats did not answer a JSON object\n");
		return KL_EPARSE;
	}
	*ret_stats = obj;
	return KL_OK;
}

enum kl_err faultctl_counter(struct faultctl *h, const char *section, const char *name,
			     const char *field, uint64_t *ret_value)
{
	json_object *stats, *node, *v;
	enum kl_err err = faultctl_stats(h, &stats);

	if (err)
		return err;
	node = stats;
	if (section) {
		if (!json_object_object_get_ex(stats, section, &node) || !name) {
			json_object_put(stats);
			return KL_ENOTFOUND;
		}
		if (!json_object_object_get_ex(node, name, &node)) {
			json_object_put(stats);
			if (strcmp(section, "ops") == 0) {
				*ret_value = 0;
				return KL_OK;
			}
			return KL_ENOTFOUND;
		}
	}
	if (!json_object_object_get_ex(node, field, &v) || !json_object_is_type(v, json_type_int)) {
		json_object_put(stats);
		return KL_ENOTFOUND;
	}
	*ret_value = (uint64_t)json_object_get_int64(v);
	json_object_put(stats);
	return KL_OK;
}

enum kl_err faultctl_wait_held(struct faultctl *h, const char *rule, unsigned n,
			       long timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	for (;;) {
		uint64_t held;
		enum kl_err err = rule ? faultctl_counter(h, "rules", rule, "held", &held)
				       : faultctl_counter(h, NULL, NULL, "held", &held);
		if (err)
			return err;
		if (held >= n)
			return KL_OK;
		if (now_ms() >= end)
			return KL_ETIMEOUT;
		sleep_ms(10);
	}
}

int faultctl_stop(struct faultctl *h)
{
	struct faultctl **pp;
	int st, ret;

	if (!h)
		return 0;
	for (pp = &live; *pp; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	kill(h->pid, SIGTERM);
	st = reap(h->pid, FAULTCTL_STOP_TIMEOUT_MS);
	if (st == -1) {
		fprintf(stderr, "faultctl: proxy %ld ignored SIGTERM, killing it\n", (long)h->pid);
		kill(h->pid, SIGKILL);
		reap(h->pid, FAULTCTL_STOP_TIMEOUT_MS);
		ret = -1;
	} else if (WIFEXITED(st)) {
		ret = WEXITSTATUS(st);
		if (ret)
			fprintf(stderr, "faultctl: proxy %ld exited with status %d\n", (long)h->pid,
				ret);
	} else {
		fprintf(stderr, "faultctl: proxy %ld died of signal %d\n", (long)h->pid,
			WIFSIGNALED(st) ? WTERMSIG(st) : 0);
		ret = -1;
	}
	free(h);
	return ret;
}
