/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loophttp.h: a tiny HTTP/1.1 server for tests. One thread serves
 * 127.0.0.1 on a free port, answers each request from a callback or from
 * a queue of canned responses, and records every request it received
 * (method, target, headers, body) so a test can assert on exactly what
 * the client sent. A request is recorded before its response is written,
 * so once a client call has returned its request can be inspected.
 * Test code only: it trusts its peer, keeps everything in memory (capped)
 * and never listens on anything but loopback.
 */
#ifndef KL_LOOPHTTP_H
#define KL_LOOPHTTP_H

#include <stddef.h>

#define LOOPHTTP_MAX_HEADERS 64

/* One recorded request. Owned by the server; valid until loophttp_stop()
 * or loophttp_clear(). Text fields are NUL-terminated. */
struct loophttp_request {
	char method[16];
	char *target;                 /* as sent: path plus "?query" */
	size_t n_headers;
	struct {
		char *name;           /* as sent (case kept) */
		char *value;          /* surrounding blanks trimmed */
	} headers[LOOPHTTP_MAX_HEADERS];
	char *body;                   /* de-chunked; "" when none */
	size_t body_len;
	unsigned conn_id;             /* which accepted connection carried it */
};

/* The reply a handler fills in. Starts as 200 with an empty body. */
struct loophttp_response {
	int status;
	char headers[2048];           /* extra "Name: value\r\n" lines */
	char *body;                   /* malloc'd by the setters; freed by the server */
	size_t body_len;
	long delay_ms;                /* answer this much later; other connections
					 are served meanwhile, and a client that
					 gives up first just closes */
	int drop;                     /* close the connection without answering
					 (after delay_ms, if set) */
};

/*
 * Called on the server thread for each request, with the server's lock
 * held (so calls never overlap). arg is the one given to
 * loophttp_start(). Fill resp; leave it alone for an empty 200.
 */
typedef void (*loophttp_handler)(void *arg, const struct loophttp_request *req,
				 struct loophttp_response *resp);

struct loophttp;

/*
 * Starts a server thread on 127.0.0.1 and a kernel-chosen port. With a
 * NULL handler, requests are answered from the canned queue (see
 * loophttp_push()); an empty queue answers 500. Returns 0, or -1 with
 * errno set. Free with loophttp_stop().
 */
int loophttp_start(loophttp_handler handler, void *arg, struct loophttp **ret_srv);

/* Stops the thread, closes every socket, frees all. NULL-safe. */
void loophttp_stop(struct loophttp *srv);

unsigned short loophttp_port(const struct loophttp *srv);
/* "http://127.0.0.1:PORT" (no trailing slash); borrowed. */
const char *loophttp_url(const struct loophttp *srv);

/* Queues a canned response (copied), served in FIFO order when there is
 * no handler. content_type may be NULL. Returns 0 or -1 (ENOMEM). */
int loophttp_push(struct loophttp *srv, int status, const char *content_type,
		  const char *body);

/* Number of requests recorded so far. Thread-safe. */
size_t loophttp_count(struct loophttp *srv);
/* The i-th recorded request (0-based), or NULL. The pointer stays valid
 * until loophttp_clear() or loophttp_stop(). Thread-safe. */
const struct loophttp_request *loophttp_request(struct loophttp *srv, size_t i);
/* Forgets the recorded requests (call while no client is talking). */
void loophttp_clear(struct loophttp *srv);

/* Case-insensitive header lookup in a recorded request; NULL if absent. */
const char *loophttp_header(const struct loophttp_request *req, const char *name);

/*
 * Looks up name in an application/x-www-form-urlencoded string (a request
 * body, or the query part of a target) and percent-decodes its value
 * ('+' is a space). Returns a malloc'd string the caller frees, or NULL
 * when the parameter is absent. *ret_count, if not NULL, gets how many
 * parameters the string holds in total.
 */
char *loophttp_form_value(const char *form, const char *name, size_t *ret_count);

/* Response helpers for handlers. Both copy their arguments. */
void loophttp_set_body(struct loophttp_response *resp, const char *content_type,
		       const char *body);
void loophttp_add_header(struct loophttp_response *resp, const char *name,
			 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
