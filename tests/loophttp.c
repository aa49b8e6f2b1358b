/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loophttp.c: the loopback HTTP/1.1 test server. One thread polls the
 * listening socket, a wake-up pipe and every open connection; requests on
 * a keep-alive connection are answered in order, connections in the order
 * their bytes arrive, and a delayed answer holds up only its own
 * connection (poll() wakes up when it is due). Invariants: the recorded
 * list and the canned queue are touched only under srv->lock; a request
 * is recorded before its response is written; loophttp_stop() leaves no
 * thread or descriptor.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "loophttp.h"

#define LOOPHTTP_MAX_CONNS 64
#define LOOPHTTP_MAX_HEAD (64 * 1024)
#define LOOPHTTP_MAX_BODY ((size_t)128 << 20)

struct conn {
	int fd;
	unsigned id;
	char *in;
	size_t in_len;
	size_t in_alloc;
	int sent_continue;            /* "100 Continue" sent for the request being read */
	/* A response held back by delay_ms; nothing more is read from the
	 * buffer until it is written (HTTP/1.1 answers in order). */
	int pending;
	int64_t due_ms;
	struct loophttp_response resp;
	int resp_no_body;             /* the request was HEAD */
	int resp_close;               /* the client asked for Connection: close */
};

struct canned {
	int status;
	char *content_type;
	char *body;
	struct canned *next;
};

struct loophttp {
	int listen_fd;
	int wake[2];                  /* loophttp_stop() writes to wake[1] */
	pthread_t thread;
	pthread_mutex_t lock;
	loophttp_handler handler;
	void *arg;
	unsigned short port;
	char url[40];
	/* under lock */
	struct loophttp_request **reqs;
	size_t n_reqs;
	size_t alloc_reqs;
	struct canned *canned_head;
	struct canned *canned_tail;
	/* server thread only */
	struct conn conns[LOOPHTTP_MAX_CONNS];
	size_t n_conns;
	unsigned next_conn_id;
};

/* A parsed request still pointing into the connection's input buffer. */
struct parsed {
	const char *method;
	size_t method_len;
	const char *target;
	size_t target_len;
	size_t n_headers;
	struct {
		const char *name;
		size_t name_len;
		const char *value;
		size_t value_len;
	} headers[LOOPHTTP_MAX_HEADERS];
	size_t head_len;              /* bytes up to and including the blank line */
	int chunked;
	size_t content_length;
	int expect_continue;
	int close;
};

static char *dup_n(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (!p)
		return NULL;
	if (n)
		memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static void request_free(struct loophttp_request *r)
{
	if (!r)
		return;
	free(r->target);
	for (size_t i = 0; i < r->n_headers; i++) {
		free(r->headers[i].name);
		free(r->headers[i].value);
	}
	free(r->body);
	free(r);
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 412: return "Precondition Failed";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Status";
	}
}

static int ieq_n(const char *a, size_t alen, const char *b)
{
	return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

/* Trims blanks on both sides of s[0..*len) in place; returns the start. */
static const char *trim(const char *s, size_t *len)
{
	while (*len && (*s == ' ' || *s == '\t')) {
		s++;
		(*len)--;
	}
	while (*len && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
		(*len)--;
	return s;
}

/*
 * Parses the request head in buf[0..len). Returns 1 when complete, 0 when
 * more bytes are needed, -1 when malformed.
 */
static int parse_head(const char *buf, size_t len, struct parsed *p)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	const char *line, *eol, *sp1, *sp2;

	memset(p, 0, sizeof(*p));
	if (!end)
		return len > LOOPHTTP_MAX_HEAD ? -1 : 0;
	p->head_len = (size_t)(end - buf) + 4;

	eol = memmem(buf, p->head_len, "\r\n", 2);
	sp1 = memchr(buf, ' ', (size_t)(eol - buf));
	if (!sp1)
		return -1;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	if (!sp2 || sp1 == buf || sp2 == sp1 + 1 || (size_t)(sp1 - buf) >= 16)
		return -1;
	if ((size_t)(eol - sp2 - 1) < 8 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return -1;
	p->method = buf;
	p->method_len = (size_t)(sp1 - buf);
	p->target = sp1 + 1;
	p->target_len = (size_t)(sp2 - sp1 - 1);

	for (line = eol + 2; line < end + 2; line = eol + 2) {
		const char *colon;
		size_t name_len, value_len;

		eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
		if (eol == line)
			break;
		colon = memchr(line, ':', (size_t)(eol - line));
		if (!colon || colon == line || p->n_headers == LOOPHTTP_MAX_HEADERS)
			return -1;
		name_len = (size_t)(colon - line);
		value_len = (size_t)(eol - colon - 1);
		p->headers[p->n_headers].name = line;
		p->headers[p->n_headers].name_len = name_len;
		p->headers[p->n_headers].value = trim(colon + 1, &value_len);
		p->headers[p->n_headers].value_len = value_len;
		p->n_headers++;
	}

	for (size_t i = 0; i < p->n_headers; i++) {
		const char *v = p->headers[i].value;
		size_t vl = p->headers[i].value_len;

		if (ieq_n(p->headers[i].name, p->headers[i].name_len, "Content-Length")) {
			char tmp[32];
			char *endp;
			unsigned long long n;

			if (vl == 0 || vl >= sizeof(tmp))
				return -1;
			memcpy(tmp, v, vl);
			tmp[vl] = '\0';
			errno = 0;
			n = strtoull(tmp, &endp, 10);
			if (errno || *endp || n > LOOPHTTP_MAX_BODY)
				return -1;
			p->content_length = (size_t)n;
		} else if (ieq_n(p->headers[i].name, p->headers[i].name_len, "Transfer-Encoding")) {
			if (!ieq_n(v, vl, "chunked"))
				return -1;
			p->chunked = 1;
		} else if (ieq_n(p->headers[i].name, p->headers[i].name_len, "Expect")) {
			p->expect_continue = ieq_n(v, vl, "100-continue");
		} else if (ieq_n(p->headers[i].name, p->headers[i].name_len, "Connection")) {
			p->close = ieq_n(v, vl, "close");
		}
	}
	return 1;
}

/*
 * Walks a chunked body starting at buf[0..len). Returns 1 when it is
 * complete (*ret_wire = bytes it occupies, *ret_size = payload bytes),
 * 0 when more bytes are needed, -1 when malformed. When out is not NULL
 * the payload is copied there.
 */
static int scan_chunked(const char *buf, size_t len, char *out, size_t *ret_wire,
			size_t *ret_size)
{
	size_t pos = 0, size = 0;

	for (;;) {
		const char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
		unsigned long long n = 0;
		const char *q;

		if (!eol)
			return len - pos > 1024 ? -1 : 0;
		for (q = buf + pos; q < eol && isxdigit((unsigned char)*q); q++) {
			n = n * 16 + (unsigned)(isdigit((unsigned char)*q) ? *q - '0'
							: (tolower((unsigned char)*q) - 'a' + 10));
			if (n > LOOPHTTP_MAX_BODY)
				return -1;
		}
		if (q == buf + pos || (q < eol && *q != ';'))
			return -1;
		pos = (size_t)(eol - buf) + 2;
		if (n == 0) {
			/* optional trailers, then the final blank line */
			for (;;) {
				eol = memmem(buf + pos, len - pos, "\r\n", 2);
				if (!eol)
					return 0;
				if (eol == buf + pos) {
					*ret_wire = pos + 2;
					*ret_size = size;
					return 1;
				}
				pos = (size_t)(eol - buf) + 2;
			}
		}
		if (size + n > LOOPHTTP_MAX_BODY)
			return -1;
		if (len - pos < n + 2)
			return 0;
		if (buf[pos + n] != '\r' || buf[pos + n + 1] != '\n')
			return -1;
		if (out)
			memcpy(out + size, buf + pos, n);
		size += n;
		pos += n + 2;
	}
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conn_close(struct loophttp *srv, size_t i)
{
	close(srv->conns[i].fd);
	free(srv->conns[i].in);
	free(srv->conns[i].resp.body);
	if (i != srv->n_conns - 1)
		memcpy(&srv->conns[i], &srv->conns[srv->n_conns - 1], sizeof(srv->conns[i]));
	srv->n_conns--;
}

/* Writes (or drops) the response held in c->resp. Returns -1 to close. */
static int conn_answer(struct conn *c)
{
	struct loophttp_response *resp = &c->resp;
	char head[sizeof(resp->headers) + 256];
	int n, rc = -1;

	c->pending = 0;
	if (!resp->drop) {
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s\r\n",
			     resp->status, reason_phrase(resp->status), resp->body_len,
			     resp->headers, c->resp_close ? "Connection: close\r\n" : "");
		rc = send_all(c->fd, head, (size_t)n);
		if (rc == 0 && resp->body_len && !c->resp_no_body)
			rc = send_all(c->fd, resp->body, resp->body_len);
	}
	free(resp->body);
	resp->body = NULL;
	return rc < 0 || c->resp_close ? -1 : 0;
}

static struct loophttp_request *record(const struct conn *c,
				       const struct parsed *p, const char *body_start,
				       size_t body_wire)
{
	struct loophttp_request *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	memcpy(r->method, p->method, p->method_len);
	r->target = dup_n(p->target, p->target_len);
	r->conn_id = c->id;
	if (!r->target)
		goto fail;
	for (size_t i = 0; i < p->n_headers; i++) {
		r->headers[i].name = dup_n(p->headers[i].name, p->headers[i].name_len);
		r->headers[i].value = dup_n(p->headers[i].value, p->headers[i].value_len);
		r->n_headers = i + 1;
		if (!r->headers[i].name || !r->headers[i].value)
			goto fail;
	}
	if (p->chunked) {
		size_t wire, size;

		scan_chunked(body_start, body_wire, NULL, &wire, &size);
		r->body = malloc(size + 1);
		if (!r->body)
			goto fail;
		scan_chunked(body_start, body_wire, r->body, &wire, &size);
		r->body[size] = '\0';
		r->body_len = size;
	} else {
		r->body = dup_n(body_start, p->content_length);
		r->body_len = p->content_length;
		if (!r->body)
			goto fail;
	}
	return r;
fail:
	request_free(r);
	return NULL;
}

/* Records the request, asks the handler or the queue, returns the reply. */
static void dispatch(struct loophttp *srv, struct loophttp_request *r,
		     struct loophttp_response *resp)
{
	pthread_mutex_lock(&srv->lock);
	if (srv->n_reqs == srv->alloc_reqs) {
		size_t n = srv->alloc_reqs ? srv->alloc_reqs * 2 : 16;
		struct loophttp_request **q = realloc(srv->reqs, n * sizeof(*q));

		if (q) {
			srv->reqs = q;
			srv->alloc_reqs = n;
		}
	}
	if (srv->n_reqs < srv->alloc_reqs)
		srv->reqs[srv->n_reqs++] = r;
	else
		resp->drop = 1;       /* out of memory: never lose a request silently */

	if (resp->drop) {
		request_free(r);
	} else if (srv->handler) {
		srv->handler(srv->arg, r, resp);
	} else if (srv->canned_head) {
		struct canned *c = srv->canned_head;

		srv->canned_head = c->next;
		if (!srv->canned_head)
			srv->canned_tail = NULL;
		resp->status = c->status;
		loophttp_set_body(resp, c->content_type, c->body);
		free(c->content_type);
		free(c->body);
		free(c);
	} else {
		resp->status = 500;
		loophttp_set_body(resp, "text/plain", "loophttp: no canned response left\n");
	}
	pthread_mutex_unlock(&srv->lock);
}

/*
 * Serves every complete request buffered on connection i, stopping at one
 * whose response is delayed. Returns -1 when the connection must close.
 */
static int serve_buffered(struct loophttp *srv, size_t i)
{
	struct conn *c = &srv->conns[i];

	while (!c->pending) {
		struct parsed p;
		struct loophttp_request *r;
		size_t body_wire, body_size, total;
		int rc;

		rc = parse_head(c->in, c->in_len, &p);
		if (rc < 0) {
			static const char bad[] =
				"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
			send_all(c->fd, bad, sizeof(bad) - 1);
			return -1;
		}
		if (rc == 0)
			return 0;
		if (p.chunked) {
			rc = scan_chunked(c->in + p.head_len, c->in_len - p.head_len, NULL,
					  &body_wire, &body_size);
			if (rc < 0)
				return -1;
		} else {
			body_wire = p.content_length;
			rc = c->in_len - p.head_len >= body_wire;
		}
		if (!rc) {
			if (p.expect_continue && !c->sent_continue) {
				static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
				if (send_all(c->fd, cont, sizeof(cont) - 1) < 0)
					return -1;
				c->sent_continue = 1;
			}
			return 0;
		}
		c->sent_continue = 0;
		total = p.head_len + body_wire;

		memset(&c->resp, 0, sizeof(c->resp));
		c->resp.status = 200;
		c->resp_no_body = ieq_n(p.method, p.method_len, "HEAD");
		c->resp_close = p.close;
		r = record(c, &p, c->in + p.head_len, body_wire);
		if (!r)
			return -1;
		dispatch(srv, r, &c->resp);
		memmove(c->in, c->in + total, c->in_len - total);
		c->in_len -= total;
		if (c->resp.delay_ms > 0) {
			c->pending = 1;
			c->due_ms = mono_ms() + c->resp.delay_ms;
			return 0;
		}
		if (conn_answer(c) < 0)
			return -1;
	}
	return 0;
}

/* Reads what is available on connection i. Returns -1 to close it. */
static int conn_read(struct loophttp *srv, size_t i)
{
	struct conn *c = &srv->conns[i];
	ssize_t n;

	if (c->in_alloc - c->in_len < 16384) {
		size_t want = c->in_alloc ? c->in_alloc * 2 : 32768;
		char *p;

		if (want > LOOPHTTP_MAX_HEAD + LOOPHTTP_MAX_BODY + 65536)
			return -1;
		p = realloc(c->in, want);
		if (!p)
			return -1;
		c->in = p;
		c->in_alloc = want;
	}
	n = recv(c->fd, c->in + c->in_len, c->in_alloc - c->in_len, 0);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0)
		return -1;
	c->in_len += (size_t)n;
	return serve_buffered(srv, i);
}

static void *serve(void *arg)
{
	struct loophttp *srv = arg;
	struct pollfd pfds[LOOPHTTP_MAX_CONNS + 2];

	for (;;) {
		size_t n = 0, nc = srv->n_conns;
		int64_t now = mono_ms(), next_due = -1;
		int timeout = -1;

		pfds[n++] = (struct pollfd){ .fd = srv->wake[0], .events = POLLIN };
		pfds[n++] = (struct pollfd){
			.fd = nc < LOOPHTTP_MAX_CONNS ? srv->listen_fd : -1, .events = POLLIN };
		for (size_t i = 0; i < nc; i++) {
			pfds[n++] = (struct pollfd){ .fd = srv->conns[i].fd, .events = POLLIN };
			if (srv->conns[i].pending &&
			    (next_due < 0 || srv->conns[i].due_ms < next_due))
				next_due = srv->conns[i].due_ms;
		}
		if (next_due >= 0)
			timeout = next_due > now ? (int)(next_due - now) : 0;
		if (poll(pfds, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfds[0].revents)
			break;
		now = mono_ms();
		/* Walk backwards: conn_close() moves the last connection into the gap. */
		for (size_t i = nc; i-- > 0;) {
			struct conn *c = &srv->conns[i];
			int rc = 0;

			if (pfds[2 + i].revents)
				rc = conn_read(srv, i);
			if (rc == 0 && c->pending && c->due_ms <= now) {
				rc = conn_answer(c);
				if (rc == 0)
					rc = serve_buffered(srv, i);   /* pipelined requests */
			}
			if (rc < 0)
				conn_close(srv, i);
		}
		if (pfds[1].revents & POLLIN) {
			int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0) {
				struct conn *c = &srv->conns[srv->n_conns++];

				memset(c, 0, sizeof(*c));
				c->fd = fd;
				c->id = ++srv->next_conn_id;
			}
		}
	}
	while (srv->n_conns)
		conn_close(srv, srv->n_conns - 1);
	return NULL;
}

int loophttp_start(loophttp_handler handler, void *arg, struct loophttp **ret_srv)
{
	struct loophttp *srv = calloc(1, sizeof(*srv));
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	int one = 1, err;

	if (!srv)
		return -1;
	srv->listen_fd = -1;
	srv->wake[0] = srv->wake[1] = -1;
	srv->handler = handler;
	srv->arg = arg;
	if (pthread_mutex_init(&srv->lock, NULL) != 0) {
		free(srv);
		errno = ENOMEM;
		return -1;
	}
	srv->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv->listen_fd < 0)
		goto fail;
	setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = 0;
	if (bind(srv->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(srv->listen_fd, 64) < 0 ||
	    getsockname(srv->listen_fd, (struct sockaddr *)&sin, &slen) < 0 ||
	    pipe2(srv->wake, O_CLOEXEC) < 0)
		goto fail;
	srv->port = ntohs(sin.sin_port);
	snprintf(srv->url, sizeof(srv->url), "http://127.0.0.1:%u", (unsigned)srv->port);
	err = pthread_create(&srv->thread, NULL, serve, srv);
	if (err) {
		errno = err;
		goto fail;
	}
	*ret_srv = srv;
	return 0;
fail:
	err = errno;
	if (srv->listen_fd >= 0)
		close(srv->listen_fd);
	if (srv->wake[0] >= 0) {
		close(srv->wake[0]);
		close(srv->wake[1]);
	}
	pthread_mutex_destroy(&srv->lock);
	free(srv);
	errno = err;
	return -1;
}

void loophttp_stop(struct loophttp *srv)
{
	if (!srv)
		return;
	while (write(srv->wake[1], "x", 1) < 0 && errno == EINTR)
		;
	pthread_join(srv->thread, NULL);
	close(srv->listen_fd);
	close(srv->wake[0]);
	close(srv->wake[1]);
	loophttp_clear(srv);
	free(srv->reqs);
	while (srv->canned_head) {
		struct canned *c = srv->canned_head;

		srv->canned_head = c->next;
		free(c->content_type);
		free(c->body);
		free(c);
	}
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}

unsigned short loophttp_port(const struct loophttp *srv)
{
	return srv->port;
}

const char *loophttp_url(const struct loophttp *srv)
{
	return srv->url;
}

int loophttp_push(struct loophttp *srv, int status, const char *content_type,
		  const char *body)
{
	struct canned *c = calloc(1, sizeof(*c));

	if (!c)
		return -1;
	c->status = status;
	c->content_type = content_type ? strdup(content_type) : NULL;
	c->body = strdup(body ? body : "");
	if ((content_type && !c->content_type) || !c->body) {
		free(c->content_type);
		free(c->body);
		free(c);
		errno = ENOMEM;
		return -1;
	}
	pthread_mutex_lock(&srv->lock);
	if (srv->canned_tail)
		srv->canned_tail->next = c;
	else
		srv->canned_head = c;
	srv->canned_tail = c;
	pthread_mutex_unlock(&srv->lock);
	return 0;
}

size_t loophttp_count(struct loophttp *srv)
{
	size_t n;

	pthread_mutex_lock(&srv->lock);
	n = srv->n_reqs;
	pthread_mutex_unlock(&srv->lock);
	return n;
}

const struct loophttp_request *loophttp_request(struct loophttp *srv, size_t i)
{
	const struct loophttp_request *r = NULL;

	pthread_mutex_lock(&srv->lock);
	if (i < srv->n_reqs)
		r = srv->reqs[i];
	pthread_mutex_unlock(&srv->lock);
	return r;
}

void loophttp_clear(struct loophttp *srv)
{
	pthread_mutex_lock(&srv->lock);
	for (size_t i = 0; i < srv->n_reqs; i++)
		request_free(srv->reqs[i]);
	srv->n_reqs = 0;
	pthread_mutex_unlock(&srv->lock);
}

const char *loophttp_header(const struct loophttp_request *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes s[0..n) (percent escapes, '+' = space) into a new string. */
static char *form_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+') {
			*o++ = ' ';
		} else if (s[i] == '%' && i + 2 < n &&
			   hexval((unsigned char)s[i + 1]) >= 0 &&
			   hexval((unsigned char)s[i + 2]) >= 0) {
			*o++ = (char)(hexval((unsigned char)s[i + 1]) * 16 +
				      hexval((unsigned char)s[i + 2]));
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

char *loophttp_form_value(const char *form, const char *name, size_t *ret_count)
{
	char *found = NULL;
	size_t count = 0;
	const char *p = form;

	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		size_t key_len = eq ? (size_t)(eq - p) : len;

		if (len) {
			char *key = form_decode(p, key_len);

			count++;
			if (key && !found && strcmp(key, name) == 0)
				found = eq ? form_decode(eq + 1, len - key_len - 1) : strdup("");
			free(key);
		}
		p = amp ? amp + 1 : NULL;
	}
	if (ret_count)
		*ret_count = count;
	return found;
}

void loophttp_set_body(struct loophttp_response *resp, const char *content_type,
		       const char *body)
{
	size_t n = body ? strlen(body) : 0;

	free(resp->body);
	resp->body = dup_n(body ? body : "", n);
	resp->body_len = resp->body ? n : 0;
	if (content_type)
		loophttp_add_header(resp, "Content-Type", "%s", content_type);
}

void loophttp_add_header(struct loophttp_response *resp, const char *name,
			 const char *fmt, ...)
{
	size_t used = strlen(resp->headers);
	va_list ap;
	int n;

	n = snprintf(resp->headers + used, sizeof(resp->headers) - used, "%s: ", name);
	if (n < 0 || (size_t)n >= sizeof(resp->headers) - used)
		goto overflow;
	used += (size_t)n;
	va_start(ap, fmt);
	n = vsnprintf(resp->headers + used, sizeof(resp->headers) - used, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n + 2 >= sizeof(resp->headers) - used)
		goto overflow;
	used += (size_t)n;
	memcpy(resp->headers + used, "\r\n", 3);
	return;
overflow:
	/* A test asked for more header text than fits: fail loudly. */
	fprintf(stderr, "loophttp: response headers too long\n");
	abort();
}
