/* SPDX-License-Identifier: Apache-2.0 */
/*
 * faultproxy.c: a small fault-injecting HTTP/1.1 reverse proxy for tests.
 * It sits between a client (kinlake) and one real local emulator
 * (kinesalite, dynalite, s3rver) and, per rules that can be changed while
 * it runs, answers errors instead of forwarding, fails requests *after* the
 * emulator applied them, delays, resets connections, or holds requests until
 * a test releases them. Everything else is passed through byte for byte.
 *
 * Invariants: it listens and connects on loopback only; bodies are streamed
 * through fixed per-connection buffers (memory does not grow with body
 * size); one thread per connection, at most FP_MAX_CONNS; every injected
 * fault is logged as one line on stderr; SIGTERM/SIGINT stop it cleanly.
 *
 * Usage:
 *   faultproxy --listen 127.0.0.1:0 --upstream http://127.0.0.1:4567
 *              [--control-listen 127.0.0.1:0] [--control-port-file F]
 *              [--rules FILE] [--seed N]
 * Once both ports listen it prints "PORT <proxy port>" and
 * "CONTROL <control port>" on stdout (one line each).
 *
 * Rules: one per line (or separated by ';'); blank lines and lines starting
 * with '#' are ignored. A rule is a name followed by key=value words:
 *   NAME [match...] [trigger...] action=ACTION [action options...]
 * match (all given must hold; none = every request):
 *   target=T    X-Amz-Target equals T, or starts with "T." (a service
 *               prefix): target=Kinesis_20131202.GetRecords,
 *               target=DynamoDB_20120810
 *   op=O        the operation name the stats use: the X-Amz-Target value,
 *               or S3.<Op> for requests without one (S3.PutObject,
 *               S3.UploadPart, S3.CreateMultipartUpload,
 *               S3.CompleteMultipartUpload, S3.AbortMultipartUpload,
 *               S3.GetObject, S3.HeadObject, S3.DeleteObject,
 *               S3.ListObjectsV2, S3.CreateBucket, ...); equals O or
 *               starts with "O." (op=S3 is every S3 request)
 *   method=M    request method (PUT, POST, ...)
 *   path=P      the request path (before '?', as sent) starts with P
 *   query=Q     the query string contains Q (query=uploadId,
 *               query=partNumber=2)
 * trigger (default: every matching request):
 *   skip=N      never fire on the first N matching requests
 *   first=N     fire on the first N matching requests (after skip)
 *   every=N     fire on every Nth matching request (after skip)
 *   prob=P      fire with probability P (0..1; --seed makes it repeatable)
 *   max=N       fire at most N times in total
 *   for=MS      only during the MS milliseconds after the rules were set
 * action (exactly one):
 *   throttle-kinesis | throttle-ddb | s3-slowdown | s3-500 | ddb-500 |
 *   kinesis-500     answer that AWS error, the request is not forwarded
 *   respond         answer status=N [body=PERCENT-ENCODED] [ctype=TYPE]
 *   reset           reset the client connection, not forwarded
 *   delay           wait ms=N, then forward
 *   hold            block until released through the control port (or
 *                   for ms=N when given), then forward
 *   after:PRESET, after:respond, after:reset
 *                   forward, let the upstream answer (the write landed),
 *                   discard its answer and send the error / reset instead
 *   delay-response  forward, wait ms=N, then relay the answer
 *   reset-mid       forward, relay the answer's head and its first
 *                   bytes=N (default 1) body bytes, then reset
 * Rules are tried in order; the first that fires decides, so a request
 * suffers at most one fault. Setting rules resets their counters and
 * releases every held request.
 *
 * Control port (HTTP, loopback). From a shell:
 *   faultproxy --listen 127.0.0.1:0 --upstream "$KL_TEST_KINESIS_ENDPOINT" \
 *       --control-port-file ctl.port >proxy.out 2>proxy.log &
 *   until grep -q '^CONTROL' proxy.out 2>/dev/null; do sleep 0.1; done
 *   P=$(sed -n 's/^PORT //p' proxy.out); C=$(cat ctl.port)
 *   # point the worker at http://127.0.0.1:$P instead of the emulator, then
 *   curl -s --data-binary 'thr op=Kinesis_20131202.GetRecords first=3 action=throttle-kinesis
 *   h op=Kinesis_20131202.PutRecords action=hold' http://127.0.0.1:$C/rules
 *   curl -s http://127.0.0.1:$C/rules          # the rules now in force
 *   curl -s http://127.0.0.1:$C/stats          # JSON, see below
 *   curl -s -X POST "http://127.0.0.1:$C/release?rule=h&n=1"
 *   curl -s --data-binary '' http://127.0.0.1:$C/rules   # no faults
 *   kill -TERM %1                               # exits 0
 * POST (or PUT) /rules answers 200 "ok N rules" or 400 "line L: why".
 * POST /release[?rule=NAME][&n=N] releases up to N (default all) held
 * requests, oldest first, and answers {"released":K}. GET /stats answers
 *   {"requests":R,"faults":F,"held":H,
 *    "rules":{"NAME":{"action":"...","matched":M,"faults":F,"held":H}},
 *    "ops":{"Kinesis_20131202.GetRecords":{"requests":R,"faults":F}}}
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FP_IO_BUF (64 * 1024)          /* per socket read buffer */
#define FP_HEAD_MAX (32 * 1024)        /* request or response head */
#define FP_OUT_MAX (FP_HEAD_MAX + 512) /* a rewritten head */
#define FP_MAX_HEADERS 128
#define FP_MAX_CONNS 128
#define FP_MAX_RULES 64
#define FP_MAX_OPS 128
#define FP_CONTROL_BODY_MAX (64 * 1024)
#define FP_RULE_BODY_MAX 8192
#define FP_NAME_MAX 64
#define FP_OP_MAX 128
#define FP_THREAD_STACK (256 * 1024)

/* Written by the signal handler only: the write end of the stop pipe. */
static volatile int stop_pipe_wr = -1;

/* ------------------------------------------------------------ rules */

enum fp_action {
	FP_ACT_RESPOND,        /* answer status/body; not forwarded */
	FP_ACT_RESET,          /* reset the client connection; not forwarded */
	FP_ACT_DELAY,          /* wait ms, then forward */
	FP_ACT_HOLD,           /* wait until released (or ms), then forward */
	FP_ACT_AFTER_RESPOND,  /* forward, discard the answer, send status/body */
	FP_ACT_AFTER_RESET,    /* forward, discard the answer, reset */
	FP_ACT_DELAY_RESPONSE, /* forward, wait ms, relay the answer */
	FP_ACT_RESET_MID,      /* forward, relay head + bytes of body, reset */
};

struct fp_rule {
	char name[FP_NAME_MAX];
	char action_text[48];
	/* match: each non-NULL / non-empty field must hold */
	char *target, *op, *path, *query;
	char method[16];
	/* trigger */
	uint64_t skip, first, every, max;
	double prob;
	int64_t for_ms;
	int64_t expires_ms;            /* monotonic deadline from for_ms; 0 = never */
	/* action */
	enum fp_action action;
	int status;
	char ctype[96];
	char *body;
	size_t body_len;
	long ms;
	uint64_t bytes;
	/* counters (under the proxy lock) */
	uint64_t matched, faults;
};

/* What one request gets: a copy, so rules can be replaced meanwhile. */
struct fp_decision {
	int fired;
	enum fp_action action;
	char rule[FP_NAME_MAX];
	char action_text[48];
	int status;
	char ctype[96];
	char body[FP_RULE_BODY_MAX];
	size_t body_len;
	long ms;
	uint64_t bytes;
};

struct fp_preset {
	const char *name;
	int status;
	const char *ctype;
	const char *body;
};

static const struct fp_preset presets[] = {
	{ "throttle-kinesis", 400, "application/x-amz-json-1.1",
	  "{\"__type\":\"ProvisionedThroughputExceededException\","
	  "\"message\":\"Rate exceeded for shard (injected by faultproxy)\"}" },
	{ "throttle-ddb", 400, "application/x-amz-json-1.0",
	  "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException\","
	  "\"message\":\"Throughput exceeded (injected by faultproxy)\"}" },
	{ "s3-slowdown", 503, "application/xml",
	  "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
	  "<Message>Please reduce your request rate (injected by faultproxy).</Message>"
	  "<RequestId>faultproxy</RequestId></Error>" },
	{ "s3-500", 500, "application/xml",
	  "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>"
	  "<Message>Internal error (injected by faultproxy).</Message>"
	  "<RequestId>faultproxy</RequestId></Error>" },
	{ "ddb-500", 500, "application/x-amz-json-1.0",
	  "{\"__type\":\"com.amazonaws.dynamodb.v20120810#InternalServerError\","
	  "\"message\":\"Internal server error (injected by faultproxy)\"}" },
	{ "kinesis-500", 500, "application/x-amz-json-1.1",
	  "{\"__type\":\"InternalFailure\",\"message\":\"Internal failure (injected by faultproxy)\"}" },
};

/* ------------------------------------------------------------ proxy state */

struct fp_op_stat {
	char name[FP_OP_MAX];
	uint64_t requests, faults;
};

/* A request waiting in a hold; lives on the waiting thread's stack. */
struct fp_held {
	char rule[FP_NAME_MAX];
	int released;
	struct fp_held *next;
};

struct conn;

struct proxy {
	pthread_mutex_t lock;
	pthread_cond_t cond;          /* releases, stop, connection exits */
	int stopping;
	struct sockaddr_in upstream;
	char upstream_hostport[64];
	int listen_fd, control_fd;
	struct fp_rule *rules;
	size_t n_rules;
	char *rules_text;
	struct fp_held *held;         /* oldest first */
	struct fp_op_stat ops[FP_MAX_OPS];
	size_t n_ops;
	uint64_t requests, faults;
	struct conn *conns;           /* served now */
	size_t n_conns;
	struct conn *finished;        /* threads done, to be joined by main */
	int reap_wr;                  /* a byte here wakes main to join them */
	uint64_t rng;
	uint64_t reply_seq;
};

/* ------------------------------------------------------------ I/O */

struct reader {
	int fd;
	char *buf;
	size_t start, end;
};

/* Where copied body bytes go: fd (-1 = discarded), at most budget bytes. */
struct sink {
	int fd;
	uint64_t budget;
};

enum {
	IO_OK = 0,
	IO_SRC,      /* reading failed or ended early */
	IO_DST,      /* writing failed */
	IO_STOP,     /* the sink's budget ran out */
	IO_BAD,      /* malformed framing */
};

enum body_kind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_EOF };

struct msg {
	char head[FP_HEAD_MAX + 1];
	char *method, *target;        /* request */
	int status;                   /* response */
	char *reason;
	int http10;
	size_t n_headers;
	struct {
		char *name, *value;
	} h[FP_MAX_HEADERS];
	int chunked;
	int64_t content_length;       /* -1 when absent */
};

struct conn {
	struct proxy *px;
	int is_control;
	int client_fd;
	int upstream_fd;
	struct reader cr, ur;
	struct msg req, resp;
	struct fp_decision dec;
	char out[FP_OUT_MAX];
	pthread_t tid;
	struct conn *next, *prev;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void logx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logx(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "faultproxy: %s\n", line);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads more into r; compacts first when the tail is full. >0, 0 EOF, -1. */
static ssize_t rd_fill(struct reader *r)
{
	ssize_t n;

	if (r->start == r->end)
		r->start = r->end = 0;
	if (r->end == FP_IO_BUF && r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
	}
	if (r->end == FP_IO_BUF)
		return -1;
	do
		n = recv(r->fd, r->buf + r->end, FP_IO_BUF - r->end, 0);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		r->end += (size_t)n;
	return n;
}

static int sink_write(struct sink *s, const char *p, size_t n)
{
	size_t m = n;

	if (m > s->budget)
		m = (size_t)s->budget;
	if (s->fd >= 0 && m > 0 && write_all(s->fd, p, m) != 0)
		return IO_DST;
	s->budget -= m;
	return m < n ? IO_STOP : IO_OK;
}

static int copy_length(struct reader *r, struct sink *s, uint64_t n)
{
	while (n > 0) {
		if (r->start == r->end) {
			ssize_t got = rd_fill(r);
			if (got <= 0)
				return IO_SRC;
		}
		size_t m = r->end - r->start;
		if (m > n)
			m = (size_t)n;
		int rc = sink_write(s, r->buf + r->start, m);
		r->start += m;
		n -= m;
		if (rc != IO_OK)
			return rc;
	}
	return IO_OK;
}

static int copy_until_eof(struct reader *r, struct sink *s)
{
	for (;;) {
		if (r->start == r->end) {
			ssize_t got = rd_fill(r);
			if (got == 0)
				return IO_OK;
			if (got < 0)
				return IO_SRC;
		}
		size_t m = r->end - r->start;
		int rc = sink_write(s, r->buf + r->start, m);
		r->start += m;
		if (rc != IO_OK)
			return rc;
	}
}

/* Copies one line (through its '\n', at most 4 KiB) verbatim; *ret_len its length. */
static int copy_line(struct reader *r, struct sink *s, char *line, size_t cap, size_t *ret_len)
{
	for (;;) {
		char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
		if (nl) {
			size_t len = (size_t)(nl - (r->buf + r->start)) + 1;
			if (len >= cap)
				return IO_BAD;
			memcpy(line, r->buf + r->start, len);
			line[len] = '\0';
			r->start += len;
			*ret_len = len;
			return sink_write(s, line, len);
		}
		if (r->end - r->start >= cap)
			return IO_BAD;
		ssize_t got = rd_fill(r);
		if (got <= 0)
			return IO_SRC;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Relays a chunked body verbatim (sizes, extensions, trailers included). */
static int copy_chunked(struct reader *r, struct sink *s)
{
	char line[4096];
	size_t len;
	int rc;

	for (;;) {
		rc = copy_line(r, s, line, sizeof(line), &len);
		if (rc != IO_OK)
			return rc;
		char *end;
		if (hexval(line[0]) < 0)
			return IO_BAD;
		errno = 0;
		unsigned long long size = strtoull(line, &end, 16);
		if (end == line || errno || (*end != ';' && *end != '\r' && *end != '\n' &&
					     *end != ' ' && *end != '\t'))
			return IO_BAD;
		if (size == 0)
			break;
		rc = copy_length(r, s, size);
		if (rc != IO_OK)
			return rc;
		rc = copy_line(r, s, line, sizeof(line), &len);
		if (rc != IO_OK)
			return rc;
		if (strcmp(line, "\r\n") != 0 && strcmp(line, "\n") != 0)
			return IO_BAD;
	}
	/* trailers, up to the empty line */
	do {
		rc = copy_line(r, s, line, sizeof(line), &len);
		if (rc != IO_OK)
			return rc;
	} while (strcmp(line, "\r\n") != 0 && strcmp(line, "\n") != 0);
	return IO_OK;
}

static int copy_body(struct reader *r, enum body_kind kind, int64_t len, struct sink *s)
{
	switch (kind) {
	case BODY_NONE:
		return IO_OK;
	case BODY_LENGTH:
		return copy_length(r, s, (uint64_t)len);
	case BODY_CHUNKED:
		return copy_chunked(r, s);
	case BODY_EOF:
		return copy_until_eof(r, s);
	}
	return IO_BAD;
}

/* ------------------------------------------------------------ messages */

enum { HEAD_OK = 0, HEAD_EOF, HEAD_ERR, HEAD_BAD };

static const char *msg_header(const struct msg *m, const char *name)
{
	for (size_t i = 0; i < m->n_headers; i++)
		if (strcasecmp(m->h[i].name, name) == 0)
			return m->h[i].value;
	return NULL;
}

/* True when a comma-separated header (any occurrence) lists token. */
static int msg_has_token(const struct msg *m, const char *name, const char *token)
{
	size_t tl = strlen(token);

	for (size_t i = 0; i < m->n_headers; i++) {
		if (strcasecmp(m->h[i].name, name) != 0)
			continue;
		const char *p = m->h[i].value;
		while (*p) {
			while (*p == ' ' || *p == '\t' || *p == ',')
				p++;
			size_t n = strcspn(p, ",");
			size_t t = n;
			while (t > 0 && (p[t - 1] == ' ' || p[t - 1] == '\t'))
				t--;
			if (t == tl && strncasecmp(p, token, tl) == 0)
				return 1;
			p += n;
		}
	}
	return 0;
}

/* The last transfer coding is "chunked". */
static int te_is_chunked(const char *te)
{
	const char *last = te, *p;
	size_t n;

	for (p = te; *p; p++)
		if (*p == ',')
			last = p + 1;
	while (*last == ' ' || *last == '\t')
		last++;
	n = strlen(last);
	while (n > 0 && (last[n - 1] == ' ' || last[n - 1] == '\t'))
		n--;
	return n == 7 && strncasecmp(last, "chunked", 7) == 0;
}

static int parse_head(struct msg *m, int is_request)
{
	char *line = m->head, *next;
	int first = 1;

	m->n_headers = 0;
	m->method = m->target = m->reason = NULL;
	m->status = 0;
	m->chunked = 0;
	m->content_length = -1;
	m->http10 = 0;
	for (; *line; line = next) {
		char *nl = strchr(line, '\n');
		next = nl ? nl + 1 : line + strlen(line);
		if (nl)
			*nl = '\0';
		size_t len = strlen(line);
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (len == 0)
			break;
		if (first) {
			char *a = line, *b = strchr(a, ' '), *c;
			first = 0;
			if (!b)
				return HEAD_BAD;
			*b++ = '\0';
			c = strchr(b, ' ');
			if (c)
				*c++ = '\0';
			if (is_request) {
				if (!c || strncmp(c, "HTTP/1.", 7) != 0 || !*a || !*b)
					return HEAD_BAD;
				m->method = a;
				m->target = b;
				m->http10 = strcmp(c, "HTTP/1.0") == 0;
			} else {
				char *end;
				if (strncmp(a, "HTTP/1.", 7) != 0)
					return HEAD_BAD;
				m->http10 = strcmp(a, "HTTP/1.0") == 0;
				long st = strtol(b, &end, 10);
				if (end == b || *end || st < 100 || st > 999)
					return HEAD_BAD;
				m->status = (int)st;
				m->reason = c ? c : "";
			}
			continue;
		}
		if (line[0] == ' ' || line[0] == '\t')
			return HEAD_BAD;  /* obsolete line folding */
		char *colon = strchr(line, ':');
		if (!colon || colon == line || m->n_headers == FP_MAX_HEADERS)
			return HEAD_BAD;
		*colon = '\0';
		if (strpbrk(line, " \t"))
			return HEAD_BAD;
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		size_t vl = strlen(v);
		while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			v[--vl] = '\0';
		m->h[m->n_headers].name = line;
		m->h[m->n_headers].value = v;
		m->n_headers++;
		if (strcasecmp(line, "content-length") == 0) {
			char *end;
			if (!*v || strspn(v, "0123456789") != vl)
				return HEAD_BAD;
			errno = 0;
			unsigned long long cl = strtoull(v, &end, 10);
			if (errno || cl > (unsigned long long)INT64_MAX)
				return HEAD_BAD;
			if (m->content_length >= 0 && (unsigned long long)m->content_length != cl)
				return HEAD_BAD;
			m->content_length = (int64_t)cl;
		} else if (strcasecmp(line, "transfer-encoding") == 0) {
			m->chunked = te_is_chunked(v);
			if (is_request && !m->chunked)
				return HEAD_BAD;
		}
	}
	if (first)
		return HEAD_BAD;
	return HEAD_OK;
}

/*
 * Reads one message head from r into m and parses it. HEAD_EOF: the peer
 * closed cleanly before sending anything.
 */
static int read_head(struct reader *r, struct msg *m, int is_request)
{
	for (;;) {
		/* tolerate empty lines before a request line */
		while (is_request && r->start < r->end &&
		       (r->buf[r->start] == '\r' || r->buf[r->start] == '\n'))
			r->start++;
		for (size_t i = r->start; i < r->end; i++) {
			if (r->buf[i] != '\n')
				continue;
			size_t end = 0;
			if (i + 1 < r->end && r->buf[i + 1] == '\n')
				end = i + 2;
			else if (i + 2 < r->end && r->buf[i + 1] == '\r' && r->buf[i + 2] == '\n')
				end = i + 3;
			if (!end)
				continue;
			size_t len = end - r->start;
			if (len > FP_HEAD_MAX)
				return HEAD_BAD;
			memcpy(m->head, r->buf + r->start, len);
			m->head[len] = '\0';
			r->start = end;
			return parse_head(m, is_request);
		}
		if (r->end - r->start >= FP_HEAD_MAX)
			return HEAD_BAD;
		size_t had = r->end - r->start;
		ssize_t got = rd_fill(r);
		if (got == 0)
			return had == 0 ? HEAD_EOF : HEAD_ERR;
		if (got < 0)
			return HEAD_ERR;
	}
}

static enum body_kind request_body(const struct msg *req)
{
	if (req->chunked)
		return BODY_CHUNKED;
	return req->content_length > 0 ? BODY_LENGTH : BODY_NONE;
}

static enum body_kind response_body(const struct msg *req, const struct msg *resp)
{
	if (strcmp(req->method, "HEAD") == 0 || resp->status < 200 || resp->status == 204 ||
	    resp->status == 304)
		return BODY_NONE;
	if (resp->chunked)
		return BODY_CHUNKED;
	if (resp->content_length >= 0)
		return resp->content_length > 0 ? BODY_LENGTH : BODY_NONE;
	return BODY_EOF;
}

static int keeps_alive(const struct msg *m)
{
	return !m->http10 && !msg_has_token(m, "connection", "close");
}

/* Headers that belong to one hop, not to the message. */
static int hop_by_hop(const char *name, int request)
{
	static const char *const hop[] = { "connection", "keep-alive", "proxy-connection",
					   "te", "upgrade", NULL };
	for (const char *const *h = hop; *h; h++)
		if (strcasecmp(name, *h) == 0)
			return 1;
	return request && strcasecmp(name, "expect") == 0;
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Status";
	}
}

/* ------------------------------------------------------------ operation names */

/* True when the query string has a parameter called name (value or not). */
static int query_has(const char *query, const char *name)
{
	size_t nl = strlen(name);

	while (*query) {
		size_t n = strcspn(query, "&");
		size_t k = strcspn(query, "=&");
		if (k == nl && strncmp(query, name, nl) == 0)
			return 1;
		query += n;
		if (*query == '&')
			query++;
	}
	return 0;
}

/* The operation a request is: its X-Amz-Target, or "S3.<Op>". */
static void derive_op(const struct msg *req, char *out, size_t cap)
{
	const char *t = msg_header(req, "x-amz-target");
	const char *path = req->target, *m = req->method, *op;
	size_t plen = strcspn(path, "?");
	const char *query = path[plen] == '?' ? path + plen + 1 : "";
	const char *p = path, *pend = path + plen;
	int has_bucket, has_key;

	if (t && *t) {
		snprintf(out, cap, "%s", t);
		return;
	}
	while (p < pend && *p == '/')
		p++;
	has_bucket = p < pend;
	const char *slash = has_bucket ? memchr(p, '/', (size_t)(pend - p)) : NULL;
	has_key = slash && slash + 1 < pend;

	if (query_has(query, "uploadId")) {
		if (!strcmp(m, "PUT"))
			op = query_has(query, "partNumber") ? "UploadPart" : "PUT";
		else if (!strcmp(m, "POST"))
			op = "CompleteMultipartUpload";
		else if (!strcmp(m, "DELETE"))
			op = "AbortMultipartUpload";
		else if (!strcmp(m, "GET"))
			op = "ListParts";
		else
			op = m;
	} else if (!strcmp(m, "POST") && query_has(query, "uploads")) {
		op = "CreateMultipartUpload";
	} else if (!strcmp(m, "POST") && query_has(query, "delete")) {
		op = "DeleteObjects";
	} else if (!strcmp(m, "PUT")) {
		op = has_key ? (msg_header(req, "x-amz-copy-source") ? "CopyObject" : "PutObject")
			     : "CreateBucket";
	} else if (!strcmp(m, "GET")) {
		if (!has_bucket)
			op = "ListBuckets";
		else if (has_key)
			op = "GetObject";
		else if (query_has(query, "uploads"))
			op = "ListMultipartUploads";
		else
			op = query_has(query, "list-type") ? "ListObjectsV2" : "ListObjects";
	} else if (!strcmp(m, "HEAD")) {
		op = has_key ? "HeadObject" : "HeadBucket";
	} else if (!strcmp(m, "DELETE")) {
		op = has_key ? "DeleteObject" : "DeleteBucket";
	} else {
		op = m;
	}
	snprintf(out, cap, "S3.%s", op);
}

/* name equals pattern, or starts with pattern followed by '.'. */
static int name_matches(const char *name, const char *pattern)
{
	size_t n = strlen(pattern);

	return strncmp(name, pattern, n) == 0 && (name[n] == '\0' || name[n] == '.');
}

static int rule_matches(const struct fp_rule *r, const struct msg *req, const char *op)
{
	if (r->method[0] && strcmp(r->method, req->method) != 0)
		return 0;
	if (r->target) {
		const char *t = msg_header(req, "x-amz-target");
		if (!t || !name_matches(t, r->target))
			return 0;
	}
	if (r->op && !name_matches(op, r->op))
		return 0;
	if (r->path) {
		size_t plen = strcspn(req->target, "?"), n = strlen(r->path);
		if (n > plen || strncmp(req->target, r->path, n) != 0)
			return 0;
	}
	if (r->query) {
		const char *q = strchr(req->target, '?');
		if (!q || !strstr(q + 1, r->query))
			return 0;
	}
	return 1;
}

static double rng_unit(struct proxy *px)
{
	/* xorshift64* */
	px->rng ^= px->rng >> 12;
	px->rng ^= px->rng << 25;
	px->rng ^= px->rng >> 27;
	return (double)((px->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* Called with the lock held, after r->matched was counted. */
static int rule_fires(struct proxy *px, const struct fp_rule *r, int64_t now)
{
	uint64_t k;

	if (r->expires_ms && now >= r->expires_ms)
		return 0;
	if (r->matched <= r->skip)
		return 0;
	k = r->matched - r->skip;
	if (r->first && k > r->first)
		return 0;
	if (r->every > 1 && k % r->every != 0)
		return 0;
	if (r->max && r->faults >= r->max)
		return 0;
	if (r->prob < 1.0 && rng_unit(px) >= r->prob)
		return 0;
	return 1;
}

/* The stats slot of op; the last slot collects the overflow. Lock held. */
static struct fp_op_stat *op_slot(struct proxy *px, const char *op)
{
	for (size_t i = 0; i < px->n_ops; i++)
		if (strcmp(px->ops[i].name, op) == 0)
			return &px->ops[i];
	if (px->n_ops == FP_MAX_OPS - 1) {
		snprintf(px->ops[px->n_ops].name, FP_OP_MAX, "(other)");
		px->n_ops++;
	}
	if (px->n_ops == FP_MAX_OPS)
		return &px->ops[FP_MAX_OPS - 1];
	snprintf(px->ops[px->n_ops].name, FP_OP_MAX, "%s", op);
	return &px->ops[px->n_ops++];
}

static void decide(struct proxy *px, const struct msg *req, const char *op, struct fp_decision *d)
{
	int64_t now = mono_ms();

	d->fired = 0;
	pthread_mutex_lock(&px->lock);
	struct fp_op_stat *os = op_slot(px, op);
	px->requests++;
	os->requests++;
	for (size_t i = 0; i < px->n_rules; i++) {
		struct fp_rule *r = &px->rules[i];
		if (!rule_matches(r, req, op))
			continue;
		r->matched++;
		if (!rule_fires(px, r, now))
			continue;
		r->faults++;
		px->faults++;
		os->faults++;
		d->fired = 1;
		d->action = r->action;
		snprintf(d->rule, sizeof(d->rule), "%s", r->name);
		snprintf(d->action_text, sizeof(d->action_text), "%s", r->action_text);
		d->status = r->status;
		snprintf(d->ctype, sizeof(d->ctype), "%s", r->ctype);
		d->body_len = r->body_len;
		if (r->body_len)
			memcpy(d->body, r->body, r->body_len);
		d->ms = r->ms;
		d->bytes = r->bytes;
		break;
	}
	pthread_mutex_unlock(&px->lock);
}

/* ------------------------------------------------------------ rule parsing */

static void rule_done(struct fp_rule *r)
{
	free(r->target);
	free(r->op);
	free(r->path);
	free(r->query);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static void rules_free(struct fp_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++)
		rule_done(&rules[i]);
	free(rules);
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;

	if (!*s || strspn(s, "0123456789") != strlen(s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	*ret = v;
	return 0;
}

/* Percent-decodes s into a new buffer; -1 on a bad escape or overflow. */
static int pct_decode(const char *s, char **ret, size_t *ret_len, size_t cap)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(n + 1);

	if (!out)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		int hi = i + 1 < n ? hexval(s[i + 1]) : -1;
		int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
		if (hi < 0 || lo < 0) {
			free(out);
			return -1;
		}
		out[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	if (o > cap) {
		free(out);
		return -1;
	}
	out[o] = '\0';
	*ret = out;
	*ret_len = o;
	return 0;
}

static int set_action(struct fp_rule *r, const char *v)
{
	const char *base = v;
	int after = 0;

	if (strncmp(v, "after:", 6) == 0) {
		after = 1;
		base = v + 6;
	}
	snprintf(r->action_text, sizeof(r->action_text), "%s", v);
	for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
		if (strcmp(base, presets[i].name) != 0)
			continue;
		r->action = after ? FP_ACT_AFTER_RESPOND : FP_ACT_RESPOND;
		r->status = presets[i].status;
		snprintf(r->ctype, sizeof(r->ctype), "%s", presets[i].ctype);
		free(r->body);
		r->body = strdup(presets[i].body);
		if (!r->body)
			return -1;
		r->body_len = strlen(r->body);
		return 0;
	}
	if (strcmp(base, "respond") == 0)
		r->action = after ? FP_ACT_AFTER_RESPOND : FP_ACT_RESPOND;
	else if (strcmp(base, "reset") == 0)
		r->action = after ? FP_ACT_AFTER_RESET : FP_ACT_RESET;
	else if (!after && strcmp(base, "delay") == 0)
		r->action = FP_ACT_DELAY;
	else if (!after && strcmp(base, "hold") == 0)
		r->action = FP_ACT_HOLD;
	else if (!after && strcmp(base, "delay-response") == 0)
		r->action = FP_ACT_DELAY_RESPONSE;
	else if (!after && strcmp(base, "reset-mid") == 0)
		r->action = FP_ACT_RESET_MID;
	else
		return -1;
	return 0;
}

/* Parses one rule line (modified in place). 0, or -1 with err filled. */
static int parse_rule(char *line, struct fp_rule *r, char *err, size_t errsz)
{
	char *save = NULL, *tok;
	int have_action = 0, have_status = 0, have_body = 0, have_ms = 0, status = 0;
	char *body_raw = NULL, *ctype_raw = NULL;

	memset(r, 0, sizeof(*r));
	r->prob = 1.0;
	r->bytes = 1;
	tok = strtok_r(line, " \t\r", &save);
	if (!tok)
		return -1;
	if (strchr(tok, '=') || strlen(tok) >= FP_NAME_MAX ||
	    strspn(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
		    strlen(tok)) {
		snprintf(err, errsz, "rule name '%.64s' must be 1-63 of [A-Za-z0-9_.-]", tok);
		return -1;
	}
	snprintf(r->name, sizeof(r->name), "%s", tok);
	while ((tok = strtok_r(NULL, " \t\r", &save)) != NULL) {
		char *eq = strchr(tok, '=');
		const char *k = tok, *v;
		char **slot = NULL;
		if (!eq) {
			snprintf(err, errsz, "rule '%s': '%.64s' is not key=value", r->name, tok);
			goto fail;
		}
		*eq = '\0';
		v = eq + 1;
		if (!strcmp(k, "target"))
			slot = &r->target;
		else if (!strcmp(k, "op"))
			slot = &r->op;
		else if (!strcmp(k, "path"))
			slot = &r->path;
		else if (!strcmp(k, "query"))
			slot = &r->query;
		if (slot) {
			if (!*v || *slot) {
				snprintf(err, errsz, "rule '%s': %s= is empty or given twice", r->name, k);
				goto fail;
			}
			*slot = strdup(v);
			if (!*slot) {
				snprintf(err, errsz, "out of memory");
				goto fail;
			}
			continue;
		}
		if (!strcmp(k, "method")) {
			if (!*v || strlen(v) >= sizeof(r->method)) {
				snprintf(err, errsz, "rule '%s': bad method", r->name);
				goto fail;
			}
			snprintf(r->method, sizeof(r->method), "%s", v);
		} else if (!strcmp(k, "skip") || !strcmp(k, "first") || !strcmp(k, "every") ||
			   !strcmp(k, "max") || !strcmp(k, "for") || !strcmp(k, "ms") ||
			   !strcmp(k, "bytes") || !strcmp(k, "status")) {
			uint64_t n;
			if (parse_u64(v, &n) != 0) {
				snprintf(err, errsz, "rule '%s': %s=%.32s is not a number", r->name, k, v);
				goto fail;
			}
			if (!strcmp(k, "skip")) {
				r->skip = n;
			} else if (!strcmp(k, "first")) {
				r->first = n;
			} else if (!strcmp(k, "every")) {
				r->every = n;
			} else if (!strcmp(k, "max")) {
				r->max = n;
			} else if (!strcmp(k, "for")) {
				if (n == 0 || n > 86400000) {
					snprintf(err, errsz, "rule '%s': for= must be 1..86400000", r->name);
					goto fail;
				}
				r->for_ms = (int64_t)n;
			} else if (!strcmp(k, "ms")) {
				if (n > 3600000) {
					snprintf(err, errsz, "rule '%s': ms= must be at most 3600000", r->name);
					goto fail;
				}
				r->ms = (long)n;
				have_ms = 1;
			} else if (!strcmp(k, "bytes")) {
				r->bytes = n;
			} else {
				if (n < 100 || n > 599) {
					snprintf(err, errsz, "rule '%s': status= must be 100..599", r->name);
					goto fail;
				}
				status = (int)n;
				have_status = 1;
			}
		} else if (!strcmp(k, "prob")) {
			char *end;
			errno = 0;
			double p = strtod(v, &end);
			if (!*v || *end || errno || !(p >= 0.0 && p <= 1.0)) {
				snprintf(err, errsz, "rule '%s': prob= must be 0..1", r->name);
				goto fail;
			}
			r->prob = p;
		} else if (!strcmp(k, "action")) {
			if (have_action || set_action(r, v) != 0) {
				snprintf(err, errsz, "rule '%s': unknown or second action '%.48s'", r->name,
					 v);
				goto fail;
			}
			have_action = 1;
		} else if (!strcmp(k, "body")) {
			body_raw = (char *)v;
			have_body = 1;
		} else if (!strcmp(k, "ctype")) {
			if (strlen(v) >= sizeof(r->ctype) || strpbrk(v, "\r\n")) {
				snprintf(err, errsz, "rule '%s': bad ctype", r->name);
				goto fail;
			}
			ctype_raw = (char *)v;
		} else {
			snprintf(err, errsz, "rule '%s': unknown key '%.32s'", r->name, k);
			goto fail;
		}
	}
	if (!have_action) {
		snprintf(err, errsz, "rule '%s': no action=", r->name);
		goto fail;
	}
	int answers = r->action == FP_ACT_RESPOND || r->action == FP_ACT_AFTER_RESPOND;
	if (have_status)
		r->status = status;  /* also overrides a preset's */
	if (answers && r->status == 0) {
		snprintf(err, errsz, "rule '%s': respond needs status=", r->name);
		goto fail;
	}
	if (!answers && (have_status || have_body || ctype_raw)) {
		snprintf(err, errsz, "rule '%s': status=/body=/ctype= only go with an answer",
			 r->name);
		goto fail;
	}
	if ((r->action == FP_ACT_DELAY || r->action == FP_ACT_DELAY_RESPONSE) && !have_ms) {
		snprintf(err, errsz, "rule '%s': %s needs ms=", r->name, r->action_text);
		goto fail;
	}
	if (have_ms && r->action != FP_ACT_DELAY && r->action != FP_ACT_DELAY_RESPONSE &&
	    r->action != FP_ACT_HOLD) {
		snprintf(err, errsz, "rule '%s': ms= goes with delay, delay-response, hold", r->name);
		goto fail;
	}
	if (have_body) {
		char *b;
		size_t bl;
		if (pct_decode(body_raw, &b, &bl, FP_RULE_BODY_MAX) != 0) {
			snprintf(err, errsz, "rule '%s': body= is not valid percent-encoding (or > %d bytes)",
				 r->name, FP_RULE_BODY_MAX);
			goto fail;
		}
		free(r->body);
		r->body = b;
		r->body_len = bl;
	}
	if (ctype_raw)
		snprintf(r->ctype, sizeof(r->ctype), "%s", ctype_raw);
	return 0;
fail:
	rule_done(r);
	return -1;
}

/* Parses a whole rule set. On success *ret_rules (maybe NULL) / *ret_n. */
static int parse_rules(const char *text, struct fp_rule **ret_rules, size_t *ret_n, char *err,
		       size_t errsz)
{
	char *copy = strdup(text), *p, *next;
	struct fp_rule *rules = calloc(FP_MAX_RULES, sizeof(*rules));
	size_t n = 0;
	int lineno = 1;

	if (!copy || !rules) {
		free(copy);
		free(rules);
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	for (p = copy; p && *p; p = next) {
		size_t len = strcspn(p, "\n;");
		int newline = p[len] == '\n';
		next = p[len] ? p + len + 1 : NULL;
		p[len] = '\0';
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		if (*p && *p != '#') {
			char why[300] = "empty rule";
			if (n == FP_MAX_RULES) {
				snprintf(err, errsz, "line %d: more than %d rules", lineno, FP_MAX_RULES);
				goto fail;
			}
			if (parse_rule(p, &rules[n], why, sizeof(why)) != 0) {
				snprintf(err, errsz, "line %d: %s", lineno, why);
				goto fail;
			}
			for (size_t i = 0; i < n; i++)
				if (strcmp(rules[i].name, rules[n].name) == 0) {
					snprintf(err, errsz, "line %d: rule name '%s' used twice", lineno,
						 rules[n].name);
					n++;
					goto fail;
				}
			n++;
		}
		if (newline)
			lineno++;
	}
	free(copy);
	if (n == 0) {
		free(rules);
		rules = NULL;
	}
	*ret_rules = rules;
	*ret_n = n;
	return 0;
fail:
	free(copy);
	rules_free(rules, n);
	return -1;
}

/* Installs rules (consumed) and their text; releases every held request. */
static void install_rules(struct proxy *px, struct fp_rule *rules, size_t n, char *text)
{
	int64_t now = mono_ms();
	struct fp_rule *old;
	size_t old_n;
	char *old_text;

	for (size_t i = 0; i < n; i++)
		rules[i].expires_ms = rules[i].for_ms ? now + rules[i].for_ms : 0;
	pthread_mutex_lock(&px->lock);
	old = px->rules;
	old_n = px->n_rules;
	old_text = px->rules_text;
	px->rules = rules;
	px->n_rules = n;
	px->rules_text = text;
	for (struct fp_held *h = px->held; h; h = h->next)
		h->released = 1;
	pthread_cond_broadcast(&px->cond);
	pthread_mutex_unlock(&px->lock);
	rules_free(old, old_n);
	free(old_text);
}

/* ------------------------------------------------------------ waiting */

static void deadline_ts(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Sleeps ms unless the proxy stops first (-1 then). */
static int wait_ms(struct proxy *px, long ms)
{
	struct timespec ts;
	int stopping;

	deadline_ts(&ts, ms);
	pthread_mutex_lock(&px->lock);
	while (!px->stopping && pthread_cond_timedwait(&px->cond, &px->lock, &ts) != ETIMEDOUT)
		;
	stopping = px->stopping;
	pthread_mutex_unlock(&px->lock);
	return stopping ? -1 : 0;
}

/* Blocks until released (or ms > 0 passed); -1 when the proxy stops. */
static int hold(struct proxy *px, const struct fp_decision *d)
{
	struct fp_held me = { .released = 0, .next = NULL };
	struct fp_held **pp;
	struct timespec ts;
	int stopping;

	snprintf(me.rule, sizeof(me.rule), "%s", d->rule);
	if (d->ms > 0)
		deadline_ts(&ts, d->ms);
	pthread_mutex_lock(&px->lock);
	for (pp = &px->held; *pp; pp = &(*pp)->next)
		;
	*pp = &me;
	while (!me.released && !px->stopping) {
		if (d->ms > 0) {
			if (pthread_cond_timedwait(&px->cond, &px->lock, &ts) == ETIMEDOUT)
				break;
		} else {
			pthread_cond_wait(&px->cond, &px->lock);
		}
	}
	for (pp = &px->held; *pp != &me; pp = &(*pp)->next)
		;
	*pp = me.next;
	stopping = px->stopping;
	pthread_mutex_unlock(&px->lock);
	return stopping ? -1 : 0;
}

/* ------------------------------------------------------------ connections */

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void upstream_close(struct conn *c)
{
	pthread_mutex_lock(&c->px->lock);
	if (c->upstream_fd >= 0)
		close(c->upstream_fd);
	c->upstream_fd = -1;
	pthread_mutex_unlock(&c->px->lock);
	c->ur.fd = -1;
	c->ur.start = c->ur.end = 0;
}

/* Reuses the upstream connection when it is still open, else connects. */
static int upstream_ensure(struct conn *c)
{
	struct proxy *px = c->px;
	int fd;

	if (c->upstream_fd >= 0) {
		char b;
		ssize_t n = recv(c->upstream_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && c->ur.start == c->ur.end)
			return 0;
		upstream_close(c);  /* closed by the server, or unexpected bytes */
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&px->upstream, sizeof(px->upstream)) != 0) {
		close(fd);
		return -1;
	}
	set_nodelay(fd);
	pthread_mutex_lock(&px->lock);
	if (px->stopping) {
		pthread_mutex_unlock(&px->lock);
		close(fd);
		return -1;
	}
	c->upstream_fd = fd;
	pthread_mutex_unlock(&px->lock);
	c->ur.fd = fd;
	c->ur.start = c->ur.end = 0;
	return 0;
}

/* Closes the client connection with a TCP reset (SO_LINGER 0). */
static void reset_client(struct conn *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	pthread_mutex_lock(&c->px->lock);
	if (c->client_fd >= 0) {
		setsockopt(c->client_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c->client_fd);
	}
	c->client_fd = -1;
	pthread_mutex_unlock(&c->px->lock);
}

/*
 * Ends our side of the client connection and reads away what the client
 * still sends (up to 2 s), so that closing does not turn into a reset that
 * could destroy the answer before the client has read it.
 */
static void close_gracefully(struct conn *c)
{
	char sink[4096];
	int64_t end = mono_ms() + 2000;

	shutdown(c->client_fd, SHUT_WR);
	for (;;) {
		struct pollfd pfd = { .fd = c->client_fd, .events = POLLIN };
		int64_t left = end - mono_ms();
		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return;
		if (recv(c->client_fd, sink, sizeof(sink), 0) <= 0)
			return;
	}
}

/* Waits (up to 1 s) until the peer acknowledged what was sent, so a reset
 * that follows does not throw away bytes still in our send queue. */
static void drain_send_queue(int fd)
{
	for (int i = 0; i < 500; i++) {
		int pending = 0;
		if (ioctl(fd, SIOCOUTQ, &pending) != 0 || pending == 0)
			return;
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
}

/* Sends a complete answer of our own. */
static int send_answer(struct conn *c, const char *method, int status, const char *ctype,
		       const char *body, size_t body_len, int keep)
{
	uint64_t seq;
	int n;

	pthread_mutex_lock(&c->px->lock);
	seq = ++c->px->reply_seq;
	pthread_mutex_unlock(&c->px->lock);
	n = snprintf(c->out, sizeof(c->out),
		     "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\n"
		     "x-amzn-RequestId: faultproxy-%" PRIu64 "\r\n%s\r\n",
		     status, reason_phrase(status), ctype && *ctype ? "Content-Type: " : "",
		     ctype && *ctype ? ctype : "", ctype && *ctype ? "\r\n" : "", body_len, seq,
		     keep ? "" : "Connection: close\r\n");
	if (n < 0 || (size_t)n >= sizeof(c->out) || write_all(c->client_fd, c->out, (size_t)n) != 0)
		return -1;
	if (strcmp(method, "HEAD") != 0 && body_len && write_all(c->client_fd, body, body_len) != 0)
		return -1;
	return 0;
}

static int send_text(struct conn *c, int status, const char *text, int keep)
{
	return send_answer(c, c->req.method ? c->req.method : "GET", status,
			   "text/plain; charset=utf-8", text, strlen(text), keep);
}

static int write_request_head(struct conn *c)
{
	const struct msg *req = &c->req;
	size_t o = 0;
	int n;

	n = snprintf(c->out, sizeof(c->out), "%s %s HTTP/1.1\r\n", req->method, req->target);
	if (n < 0 || (size_t)n >= sizeof(c->out))
		return -1;
	o = (size_t)n;
	for (size_t i = 0; i < req->n_headers; i++) {
		if (hop_by_hop(req->h[i].name, 1))
			continue;
		if (req->chunked && strcasecmp(req->h[i].name, "content-length") == 0)
			continue;
		n = snprintf(c->out + o, sizeof(c->out) - o, "%s: %s\r\n", req->h[i].name,
			     req->h[i].value);
		if (n < 0 || (size_t)n >= sizeof(c->out) - o)
			return -1;
		o += (size_t)n;
	}
	if (o + 2 > sizeof(c->out))
		return -1;
	memcpy(c->out + o, "\r\n", 2);
	return write_all(c->upstream_fd, c->out, o + 2);
}

static int write_response_head(struct conn *c, int close_after)
{
	const struct msg *resp = &c->resp;
	size_t o;
	int n;

	n = snprintf(c->out, sizeof(c->out), "HTTP/1.1 %d %s\r\n", resp->status,
		     resp->reason && *resp->reason ? resp->reason : reason_phrase(resp->status));
	if (n < 0 || (size_t)n >= sizeof(c->out))
		return -1;
	o = (size_t)n;
	for (size_t i = 0; i < resp->n_headers; i++) {
		if (hop_by_hop(resp->h[i].name, 0))
			continue;
		n = snprintf(c->out + o, sizeof(c->out) - o, "%s: %s\r\n", resp->h[i].name,
			     resp->h[i].value);
		if (n < 0 || (size_t)n >= sizeof(c->out) - o)
			return -1;
		o += (size_t)n;
	}
	n = snprintf(c->out + o, sizeof(c->out) - o, "%s\r\n",
		     close_after ? "Connection: close\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(c->out) - o)
		return -1;
	return write_all(c->client_fd, c->out, o + (size_t)n);
}

static void log_fault(const struct conn *c, const char *op)
{
	const struct fp_decision *d = &c->dec;

	logx("rule '%s': %s on %s (%s %.200s)", d->rule, d->action_text, op, c->req.method,
	     c->req.target);
}

/*
 * Reads the upstream's answer (skipping 1xx interim answers).
 * HEAD_OK, or an error after which the upstream connection is useless.
 */
static int read_response(struct conn *c)
{
	for (;;) {
		int rc = read_head(&c->ur, &c->resp, 0);
		if (rc != HEAD_OK)
			return rc;
		if (c->resp.status >= 200)
			return HEAD_OK;
		if (c->resp.status == 101)
			return HEAD_BAD;
	}
}

/* Forwards the request and relays (or replaces) the answer. Returns 1 to
 * keep the client connection. */
static int forward(struct conn *c, int client_keep, int expect)
{
	struct msg *req = &c->req;
	struct fp_decision *d = &c->dec;
	enum body_kind req_kind = request_body(req), resp_kind;
	struct sink up, to_client, discard = { -1, UINT64_MAX };
	int rc, up_keep, keep;

	if (upstream_ensure(c) != 0) {
		send_text(c, 502, "faultproxy: cannot connect to the upstream\n", 0);
		return 0;
	}
	if (write_request_head(c) != 0) {
		upstream_close(c);
		send_text(c, 502, "faultproxy: cannot write to the upstream\n", 0);
		return 0;
	}
	if (expect && req_kind != BODY_NONE &&
	    write_all(c->client_fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0) {
		upstream_close(c);
		return 0;
	}
	up = (struct sink){ c->upstream_fd, UINT64_MAX };
	rc = copy_body(&c->cr, req_kind, req->content_length, &up);
	if (rc == IO_SRC || rc == IO_BAD) {
		/* the client broke off (or framed badly): the upstream gets a
		 * truncated request, so drop that connection */
		upstream_close(c);
		if (rc == IO_BAD)
			send_text(c, 400, "faultproxy: bad chunked framing\n", 0);
		return 0;
	}
	/* rc == IO_DST: the upstream stopped reading; it may have answered. */
	if (rc == IO_DST)
		client_keep = 0;
	if (read_response(c) != HEAD_OK) {
		upstream_close(c);
		send_text(c, 502, "faultproxy: no valid answer from the upstream\n", 0);
		return 0;
	}
	resp_kind = response_body(req, &c->resp);
	up_keep = rc == IO_OK && keeps_alive(&c->resp) && resp_kind != BODY_EOF;

	if (d->fired) {
		switch (d->action) {
		case FP_ACT_AFTER_RESPOND:
		case FP_ACT_AFTER_RESET:
			if (copy_body(&c->ur, resp_kind, c->resp.content_length, &discard) != IO_OK ||
			    !up_keep)
				upstream_close(c);
			if (d->action == FP_ACT_AFTER_RESET) {
				reset_client(c);
				return 0;
			}
			return send_answer(c, req->method, d->status, d->ctype, d->body, d->body_len,
					   client_keep) == 0 &&
			       client_keep;
		case FP_ACT_DELAY_RESPONSE:
			if (wait_ms(c->px, d->ms) != 0) {
				upstream_close(c);
				return 0;
			}
			break;
		case FP_ACT_RESET_MID:
			if (write_response_head(c, 1) == 0) {
				to_client = (struct sink){ c->client_fd, d->bytes };
				copy_body(&c->ur, resp_kind, c->resp.content_length, &to_client);
				drain_send_queue(c->client_fd);
			}
			upstream_close(c);
			reset_client(c);
			return 0;
		case FP_ACT_RESPOND:
		case FP_ACT_RESET:
		case FP_ACT_DELAY:
		case FP_ACT_HOLD:
			break;
		}
	}
	keep = client_keep && resp_kind != BODY_EOF;
	if (write_response_head(c, !keep) != 0) {
		upstream_close(c);
		return 0;
	}
	to_client = (struct sink){ c->client_fd, UINT64_MAX };
	rc = copy_body(&c->ur, resp_kind, c->resp.content_length, &to_client);
	if (rc != IO_OK) {
		upstream_close(c);
		return 0;
	}
	if (!up_keep)
		upstream_close(c);
	return keep;
}

/* One request from the client. Returns 1 to keep the connection. */
static int handle_request(struct conn *c)
{
	struct msg *req = &c->req;
	struct fp_decision *d = &c->dec;
	struct sink discard = { -1, UINT64_MAX };
	char op[FP_OP_MAX];
	int client_keep = keeps_alive(req);
	int expect = !req->http10 && msg_has_token(req, "expect", "100-continue");

	derive_op(req, op, sizeof(op));
	decide(c->px, req, op, d);
	if (!d->fired)
		return forward(c, client_keep, expect);
	log_fault(c, op);
	switch (d->action) {
	case FP_ACT_RESET:
		reset_client(c);
		return 0;
	case FP_ACT_RESPOND:
		/* A client waiting for 100 Continue may never send the body:
		 * answer and close. Otherwise read the body away first, so the
		 * answer is not lost to a reset, and keep the connection. */
		if (expect) {
			if (send_answer(c, req->method, d->status, d->ctype, d->body, d->body_len, 0) == 0)
				close_gracefully(c);
			return 0;
		}
		if (copy_body(&c->cr, request_body(req), req->content_length, &discard) != IO_OK)
			return 0;
		return send_answer(c, req->method, d->status, d->ctype, d->body, d->body_len,
				   client_keep) == 0 &&
		       client_keep;
	case FP_ACT_DELAY:
		if (wait_ms(c->px, d->ms) != 0)
			return 0;
		break;
	case FP_ACT_HOLD:
		if (hold(c->px, d) != 0)
			return 0;
		break;
	case FP_ACT_AFTER_RESPOND:
	case FP_ACT_AFTER_RESET:
	case FP_ACT_DELAY_RESPONSE:
	case FP_ACT_RESET_MID:
		break;
	}
	return forward(c, client_keep, expect);
}

static void serve_proxy(struct conn *c)
{
	for (;;) {
		int rc = read_head(&c->cr, &c->req, 1);
		if (rc == HEAD_BAD) {
			c->req.method = NULL;
			send_text(c, 400, "faultproxy: malformed request\n", 0);
		}
		if (rc != HEAD_OK)
			return;
		if (!handle_request(c))
			return;
	}
}

/* ------------------------------------------------------------ control */

/* A growable string for control answers; capped at 4 MiB. */
struct dstr {
	char *p;
	size_t len, cap;
	int failed;
};

static void ds_printf(struct dstr *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ds_printf(struct dstr *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (s->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(s->p ? s->p + s->len : NULL, s->p ? s->cap - s->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			s->failed = 1;
			return;
		}
		if (s->p && (size_t)n < s->cap - s->len) {
			s->len += (size_t)n;
			return;
		}
		size_t want = s->len + (size_t)n + 1;
		size_t cap = s->cap ? s->cap : 256;
		while (cap < want)
			cap *= 2;
		char *np = cap > 4 * 1024 * 1024 ? NULL : realloc(s->p, cap);
		if (!np) {
			s->failed = 1;
			return;
		}
		s->p = np;
		s->cap = cap;
	}
}

static void ds_json_string(struct dstr *s, const char *str)
{
	ds_printf(s, "\"");
	for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
		if (*p == '"' || *p == '\\')
			ds_printf(s, "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			ds_printf(s, "\\u%04x", *p);
		else
			ds_printf(s, "%c", *p);
	}
	ds_printf(s, "\"");
}

static unsigned held_count(const struct proxy *px, const char *rule)
{
	unsigned n = 0;

	for (const struct fp_held *h = px->held; h; h = h->next)
		if (!h->released && (!rule || strcmp(h->rule, rule) == 0))
			n++;
	return n;
}

static void stats_json(struct proxy *px, struct dstr *s)
{
	pthread_mutex_lock(&px->lock);
	ds_printf(s, "{\"requests\":%" PRIu64 ",\"faults\":%" PRIu64 ",\"held\":%u,\"rules\":{",
		  px->requests, px->faults, held_count(px, NULL));
	for (size_t i = 0; i < px->n_rules; i++) {
		const struct fp_rule *r = &px->rules[i];
		ds_printf(s, "%s", i ? "," : "");
		ds_json_string(s, r->name);
		ds_printf(s, ":{\"action\":");
		ds_json_string(s, r->action_text);
		ds_printf(s, ",\"matched\":%" PRIu64 ",\"faults\":%" PRIu64 ",\"held\":%u}", r->matched,
			  r->faults, held_count(px, r->name));
	}
	ds_printf(s, "},\"ops\":{");
	for (size_t i = 0; i < px->n_ops; i++) {
		ds_printf(s, "%s", i ? "," : "");
		ds_json_string(s, px->ops[i].name);
		ds_printf(s, ":{\"requests\":%" PRIu64 ",\"faults\":%" PRIu64 "}", px->ops[i].requests,
			  px->ops[i].faults);
	}
	ds_printf(s, "}}\n");
	pthread_mutex_unlock(&px->lock);
}

/* The percent-decoded value of a query parameter into out; -1 when absent. */
static int query_value(const char *query, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);

	while (*query) {
		size_t n = strcspn(query, "&");
		if (n > nl && strncmp(query, name, nl) == 0 && query[nl] == '=') {
			char raw[256], *dec;
			size_t dl;
			size_t vl = n - nl - 1;
			if (vl >= sizeof(raw))
				return -1;
			memcpy(raw, query + nl + 1, vl);
			raw[vl] = '\0';
			if (pct_decode(raw, &dec, &dl, cap - 1) != 0)
				return -1;
			memcpy(out, dec, dl + 1);
			free(dec);
			return 0;
		}
		query += n;
		if (*query == '&')
			query++;
	}
	return -1;
}

static unsigned release_held(struct proxy *px, const char *rule, unsigned n)
{
	unsigned released = 0;

	pthread_mutex_lock(&px->lock);
	for (struct fp_held *h = px->held; h && (n == 0 || released < n); h = h->next) {
		if (h->released || (rule && strcmp(h->rule, rule) != 0))
			continue;
		h->released = 1;
		released++;
	}
	pthread_cond_broadcast(&px->cond);
	pthread_mutex_unlock(&px->lock);
	return released;
}

/* Handles one control request; fills status, content type and answer. */
static int control_route(struct conn *c, const char *body, size_t body_len, struct dstr *ans,
			 const char **ret_ctype)
{
	struct proxy *px = c->px;
	const char *m = c->req.method, *target = c->req.target;
	size_t plen = strcspn(target, "?");
	const char *query = target[plen] == '?' ? target + plen + 1 : "";
	char path[64];

	*ret_ctype = "text/plain; charset=utf-8";
	if (plen >= sizeof(path)) {
		ds_printf(ans, "not found\n");
		return 404;
	}
	memcpy(path, target, plen);
	path[plen] = '\0';
	if (!strcmp(path, "/stats")) {
		if (strcmp(m, "GET") != 0) {
			ds_printf(ans, "use GET\n");
			return 405;
		}
		*ret_ctype = "application/json";
		stats_json(px, ans);
		return 200;
	}
	if (!strcmp(path, "/rules")) {
		if (!strcmp(m, "GET")) {
			pthread_mutex_lock(&px->lock);
			ds_printf(ans, "%s", px->rules_text ? px->rules_text : "");
			pthread_mutex_unlock(&px->lock);
			return 200;
		}
		if (strcmp(m, "POST") != 0 && strcmp(m, "PUT") != 0) {
			ds_printf(ans, "use GET, PUT or POST\n");
			return 405;
		}
		if (memchr(body, '\0', body_len)) {
			ds_printf(ans, "rules contain a NUL byte\n");
			return 400;
		}
		struct fp_rule *rules;
		size_t n;
		char err[400];
		char *text = strdup(body);
		if (!text) {
			ds_printf(ans, "out of memory\n");
			return 500;
		}
		if (parse_rules(body, &rules, &n, err, sizeof(err)) != 0) {
			free(text);
			ds_printf(ans, "%s\n", err);
			return 400;
		}
		install_rules(px, rules, n, text);
		ds_printf(ans, "ok %zu rules\n", n);
		return 200;
	}
	if (!strcmp(path, "/release")) {
		char rule[FP_NAME_MAX], nbuf[32];
		uint64_t n = 0;
		int have_rule = query_value(query, "rule", rule, sizeof(rule)) == 0;
		if (strcmp(m, "POST") != 0) {
			ds_printf(ans, "use POST\n");
			return 405;
		}
		if (query_value(query, "n", nbuf, sizeof(nbuf)) == 0 &&
		    (parse_u64(nbuf, &n) != 0 || n > UINT_MAX)) {
			ds_printf(ans, "bad n=\n");
			return 400;
		}
		*ret_ctype = "application/json";
		ds_printf(ans, "{\"released\":%u}\n",
			  release_held(px, have_rule ? rule : NULL, (unsigned)n));
		return 200;
	}
	ds_printf(ans, "not found: GET /stats, GET|POST /rules, POST /release\n");
	return 404;
}

static void serve_control(struct conn *c)
{
	for (;;) {
		struct dstr ans = { 0 };
		const char *ctype;
		char *body;
		int rc = read_head(&c->cr, &c->req, 1);
		if (rc == HEAD_BAD) {
			c->req.method = NULL;
			send_text(c, 400, "malformed request\n", 0);
		}
		if (rc != HEAD_OK)
			return;
		if (c->req.chunked) {
			send_text(c, 411, "send a Content-Length\n", 0);
			return;
		}
		if (c->req.content_length > FP_CONTROL_BODY_MAX) {
			send_text(c, 413, "body too large\n", 0);
			return;
		}
		size_t len = c->req.content_length > 0 ? (size_t)c->req.content_length : 0;
		body = malloc(len + 1);
		if (!body)
			return;
		for (size_t got = 0; got < len;) {
			if (c->cr.start == c->cr.end && rd_fill(&c->cr) <= 0) {
				free(body);
				return;
			}
			size_t m = c->cr.end - c->cr.start;
			if (m > len - got)
				m = len - got;
			memcpy(body + got, c->cr.buf + c->cr.start, m);
			c->cr.start += m;
			got += m;
		}
		body[len] = '\0';
		int keep = keeps_alive(&c->req);
		int status = control_route(c, body, len, &ans, &ctype);
		free(body);
		if (ans.failed) {
			free(ans.p);
			send_text(c, 500, "out of memory\n", 0);
			return;
		}
		rc = send_answer(c, c->req.method, status, ctype, ans.p ? ans.p : "", ans.len, keep);
		free(ans.p);
		if (rc != 0 || !keep)
			return;
	}
}

/* ------------------------------------------------------------ threads */

static void conn_free(struct conn *c)
{
	free(c->cr.buf);
	free(c->ur.buf);
	free(c);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct proxy *px = c->px;

	if (c->is_control)
		serve_control(c);
	else
		serve_proxy(c);
	pthread_mutex_lock(&px->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		px->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->client_fd >= 0)
		close(c->client_fd);
	if (c->upstream_fd >= 0)
		close(c->upstream_fd);
	c->client_fd = c->upstream_fd = -1;
	px->n_conns--;
	c->next = px->finished;
	px->finished = c;
	pthread_cond_broadcast(&px->cond);
	pthread_mutex_unlock(&px->lock);
	if (write(px->reap_wr, "x", 1) < 0) {
		/* the pipe is full: main has wake-ups pending anyway */
	}
	return NULL;
}

/* Joins the threads that have finished and frees their connections. */
static void reap_finished(struct proxy *px)
{
	struct conn *c, *next;

	pthread_mutex_lock(&px->lock);
	c = px->finished;
	px->finished = NULL;
	pthread_mutex_unlock(&px->lock);
	for (; c; c = next) {
		next = c->next;
		pthread_join(c->tid, NULL);
		conn_free(c);
	}
}

static void start_conn(struct proxy *px, int fd, int is_control)
{
	struct conn *c = calloc(1, sizeof(*c));
	pthread_attr_t attr;

	if (c) {
		c->cr.buf = malloc(FP_IO_BUF);
		c->ur.buf = is_control ? NULL : malloc(FP_IO_BUF);
	}
	if (!c || !c->cr.buf || (!is_control && !c->ur.buf)) {
		logx("out of memory for a connection, closing it");
		if (c)
			conn_free(c);
		close(fd);
		return;
	}
	c->px = px;
	c->is_control = is_control;
	c->client_fd = fd;
	c->upstream_fd = -1;
	c->cr.fd = fd;
	c->ur.fd = -1;
	set_nodelay(fd);

	pthread_mutex_lock(&px->lock);
	if (px->n_conns >= FP_MAX_CONNS) {
		pthread_mutex_unlock(&px->lock);
		logx("more than %d connections, closing one", FP_MAX_CONNS);
		conn_free(c);
		close(fd);
		return;
	}
	c->next = px->conns;
	if (px->conns)
		px->conns->prev = c;
	px->conns = c;
	px->n_conns++;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, FP_THREAD_STACK);
	int rc = pthread_create(&c->tid, &attr, conn_main, c);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		px->conns = c->next;
		if (c->next)
			c->next->prev = NULL;
		px->n_conns--;
		pthread_mutex_unlock(&px->lock);
		logx("cannot start a thread (%s), closing a connection", strerror(rc));
		close(fd);
		conn_free(c);
		return;
	}
	pthread_mutex_unlock(&px->lock);
}

/* ------------------------------------------------------------ start-up */

/* "127.0.0.1:PORT" / "localhost:PORT"; loopback only. */
static int parse_loopback(const char *s, struct sockaddr_in *ret, int allow_port0)
{
	const char *colon = strrchr(s, ':');
	char host[64];
	uint64_t port;

	if (!colon || (size_t)(colon - s) >= sizeof(host) || parse_u64(colon + 1, &port) != 0 ||
	    port > 65535 || (port == 0 && !allow_port0))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(ret, 0, sizeof(*ret));
	ret->sin_family = AF_INET;
	ret->sin_port = htons((uint16_t)port);
	if (strcmp(host, "localhost") == 0)
		ret->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &ret->sin_addr) != 1)
		return -1;
	if ((ntohl(ret->sin_addr.s_addr) >> 24) != 127)
		return -1;
	return 0;
}

static int listen_on(const struct sockaddr_in *addr, unsigned short *ret_port)
{
	struct sockaddr_in bound;
	socklen_t bl = sizeof(bound);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0 || listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)&bound, &bl) != 0) {
		close(fd);
		return -1;
	}
	*ret_port = ntohs(bound.sin_port);
	return fd;
}

static void on_signal(int sig)
{
	int saved = errno;
	char b = (char)sig;

	if (stop_pipe_wr >= 0 && write(stop_pipe_wr, &b, 1) < 0) {
		/* nothing to do: the pipe is full, a stop is pending anyway */
	}
	errno = saved;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	size_t len = 0;

	if (!f)
		return NULL;
	text = malloc(FP_CONTROL_BODY_MAX + 1);
	if (text)
		len = fread(text, 1, FP_CONTROL_BODY_MAX + 1, f);
	if (text && (ferror(f) || len > FP_CONTROL_BODY_MAX)) {
		free(text);
		text = NULL;
	} else if (text) {
		text[len] = '\0';
	}
	fclose(f);
	return text;
}

static int write_port_file(const char *path, unsigned short port)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "%u\n", port);
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: faultproxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT\n"
		"                  [--control-listen 127.0.0.1:PORT] [--control-port-file FILE]\n"
		"                  [--rules FILE] [--seed N]\n"
		"Loopback addresses only. Prints \"PORT n\" and \"CONTROL n\" once ready.\n");
}

/* Parses "http://127.0.0.1:PORT[/]". */
static int parse_upstream(const char *url, struct proxy *px)
{
	char hostport[64];
	size_t n;

	if (strncmp(url, "http://", 7) != 0)
		return -1;
	url += 7;
	n = strcspn(url, "/");
	if (n >= sizeof(hostport) || (url[n] && strcmp(url + n, "/") != 0))
		return -1;
	memcpy(hostport, url, n);
	hostport[n] = '\0';
	if (parse_loopback(hostport, &px->upstream, 0) != 0)
		return -1;
	snprintf(px->upstream_hostport, sizeof(px->upstream_hostport), "%s", hostport);
	return 0;
}

static void stop_all(struct proxy *px)
{
	pthread_mutex_lock(&px->lock);
	px->stopping = 1;
	for (struct conn *c = px->conns; c; c = c->next) {
		if (c->client_fd >= 0)
			shutdown(c->client_fd, SHUT_RDWR);
		if (c->upstream_fd >= 0)
			shutdown(c->upstream_fd, SHUT_RDWR);
	}
	pthread_cond_broadcast(&px->cond);
	while (px->n_conns > 0)
		pthread_cond_wait(&px->cond, &px->lock);
	pthread_mutex_unlock(&px->lock);
	reap_finished(px);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "upstream", required_argument, NULL, 'u' },
		{ "control-listen", required_argument, NULL, 'c' },
		{ "control-port-file", required_argument, NULL, 'f' },
		{ "rules", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_arg = NULL, *upstream_arg = NULL, *control_arg = "127.0.0.1:0";
	const char *port_file = NULL, *rules_file = NULL;
	struct sockaddr_in listen_addr, control_addr;
	unsigned short port, control_port;
	struct proxy *px;
	pthread_condattr_t cattr;
	struct sigaction sa;
	int pipefd[2], reapfd[2] = { -1, -1 }, opt, status = 0;
	uint64_t seed = 0;
	int have_seed = 0;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen_arg = optarg; break;
		case 'u': upstream_arg = optarg; break;
		case 'c': control_arg = optarg; break;
		case 'f': port_file = optarg; break;
		case 'r': rules_file = optarg; break;
		case 's':
			if (parse_u64(optarg, &seed) != 0) {
				usage();
				return 64;
			}
			have_seed = 1;
			break;
		case 'h': usage(); return 0;
		default: usage(); return 64;
		}
	}
	if (optind != argc || !listen_arg || !upstream_arg) {
		usage();
		return 64;
	}
	px = calloc(1, sizeof(*px));
	if (!px) {
		logx("out of memory");
		return 70;
	}
	if (parse_loopback(listen_arg, &listen_addr, 1) != 0 ||
	    parse_loopback(control_arg, &control_addr, 1) != 0) {
		logx("listen addresses must be loopback (127.x.x.x:PORT or localhost:PORT)");
		free(px);
		return 64;
	}
	if (parse_upstream(upstream_arg, px) != 0) {
		logx("upstream must be http://127.x.x.x:PORT (loopback, no path): '%s'", upstream_arg);
		free(px);
		return 64;
	}
	if (!have_seed)
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	px->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;

	pthread_mutex_init(&px->lock, NULL);
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&px->cond, &cattr);
	pthread_condattr_destroy(&cattr);
	px->listen_fd = px->control_fd = px->reap_wr = -1;

	if (rules_file) {
		char *text = read_file(rules_file), err[400];
		struct fp_rule *rules;
		size_t n;
		if (!text) {
			logx("cannot read rules file '%s' (or it exceeds %d bytes)", rules_file,
			     FP_CONTROL_BODY_MAX);
			status = 66;
			goto out;
		}
		if (parse_rules(text, &rules, &n, err, sizeof(err)) != 0) {
			logx("%s: %s", rules_file, err);
			free(text);
			status = 65;
			goto out;
		}
		install_rules(px, rules, n, text);
	}

	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) {
		logx("pipe: %s", strerror(errno));
		status = 71;
		goto out;
	}
	if (pipe2(reapfd, O_CLOEXEC | O_NONBLOCK) != 0) {
		logx("pipe: %s", strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		status = 71;
		goto out;
	}
	px->reap_wr = reapfd[1];
	stop_pipe_wr = pipefd[1];
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	px->listen_fd = listen_on(&listen_addr, &port);
	px->control_fd = px->listen_fd >= 0 ? listen_on(&control_addr, &control_port) : -1;
	if (px->listen_fd < 0 || px->control_fd < 0) {
		logx("cannot listen: %s", strerror(errno));
		status = 71;
		goto out_pipe;
	}
	if (port_file && write_port_file(port_file, control_port) != 0) {
		logx("cannot write '%s': %s", port_file, strerror(errno));
		status = 73;
		goto out_pipe;
	}
	printf("PORT %u\nCONTROL %u\n", port, control_port);
	fflush(stdout);
	logx("listening on 127.0.0.1:%u (control %u), upstream %s, seed %" PRIu64, port,
	     control_port, px->upstream_hostport, seed);

	for (;;) {
		struct pollfd pfd[4] = {
			{ .fd = pipefd[0], .events = POLLIN },
			{ .fd = px->listen_fd, .events = POLLIN },
			{ .fd = px->control_fd, .events = POLLIN },
			{ .fd = reapfd[0], .events = POLLIN },
		};
		if (poll(pfd, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			logx("poll: %s", strerror(errno));
			status = 71;
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[3].revents) {
			char drain[64];
			while (read(reapfd[0], drain, sizeof(drain)) > 0)
				;
			reap_finished(px);
		}
		for (int i = 1; i < 3; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			int fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0) {
				if (errno == EMFILE || errno == ENFILE) {
					logx("accept: %s", strerror(errno));
					struct timespec ts = { 0, 10000000 };
					nanosleep(&ts, NULL);
				}
				continue;
			}
			start_conn(px, fd, i == 2);
		}
	}
	close(px->listen_fd);
	close(px->control_fd);
	px->listen_fd = px->control_fd = -1;
	stop_all(px);
	logx("stopped");
out_pipe:
	if (px->listen_fd >= 0)
		close(px->listen_fd);
	if (px->control_fd >= 0)
		close(px->control_fd);
	stop_pipe_wr = -1;
	close(pipefd[0]);
	close(pipefd[1]);
	close(reapfd[0]);
	close(reapfd[1]);
out:
	rules_free(px->rules, px->n_rules);
	free(px->rules_text);
	pthread_cond_destroy(&px->cond);
	pthread_mutex_destroy(&px->lock);
	free(px);
	return status;
}
