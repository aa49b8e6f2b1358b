/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http.h: a small HTTP/1.1 client over libcurl. One struct http_client per
 * thread (it wraps one curl easy handle, so connections are reused); all
 * clients share one DNS and TLS-session cache. Nothing here retries:
 * aws.c decides that. TLS verification is always on for https; plain http
 * is only used when an endpoint says so explicitly (local emulators).
 */
#ifndef KL_HTTP_H
#define KL_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "kl_err.h"

struct http_client;

struct http_opts {
	long connect_timeout_ms;      /* 0 = 3000 */
	long timeout_ms;              /* whole transfer; 0 = 30000 */
	long low_speed_secs;          /* abort if < 1 byte/s for this long; 0 = off */
	const char *ca_file;          /* PEM bundle; NULL = system default */
	size_t max_response_bytes;    /* body cap; 0 = 64 MiB */
};

struct http_header {
	const char *name;
	const char *value;
};

/* A request; everything is borrowed for the duration of http_send(). */
struct http_request {
	const char *method;           /* "GET", "PUT", "POST", "HEAD", "DELETE" */
	const char *url;              /* absolute, already percent-encoded */
	const struct http_header *headers;
	size_t n_headers;
	/* Body: either memory (body/body_len) or a file range (body_fd >= 0). */
	const void *body;
	size_t body_len;
	int body_fd;                  /* -1 when the body is in memory */
	uint64_t body_offset;         /* file range start, with body_fd */
	/* Optional: write the response body here instead of into resp->body
	 * (only for 2xx responses; errors still land in resp->body). */
	int download_fd;
};

#define HTTP_MAX_RESP_HEADERS 48

/* A response. Owned by the caller; release with http_response_done(). */
struct http_response {
	long status;
	struct buf body;
	size_t n_headers;
	struct {
		char *name;           /* lowercased */
		char *value;          /* trimmed */
	} headers[HTTP_MAX_RESP_HEADERS];
};

/*
 * Process-wide setup (curl_global_init and the shared cache). Call once
 * from main before any thread starts; not thread-safe. Returns KL_OK.
 */
enum kl_err http_global_init(void);
void http_global_cleanup(void);

/* Creates a client. Caller frees with http_client_free() (NULL-safe). */
enum kl_err http_client_new(const struct http_opts *opts, struct http_client **ret_client);
void http_client_free(struct http_client *client);

/* Initialises an empty request: body_fd = download_fd = -1. */
void http_request_init(struct http_request *req);

/*
 * Sends req and fills *resp (which the caller must http_response_done()
 * even on failure). Returns KL_OK for any HTTP status (check resp->status);
 * KL_ETIMEOUT, KL_ECONNECT, KL_EIO (e.g. reading the body file) or
 * KL_ENOMEM (response over the cap) for transport failures, with detail in
 * info. Not thread-safe per client.
 */
enum kl_err http_send(struct http_client *client, const struct http_request *req,
		      struct http_response *resp, struct kl_errinfo *info);

void http_response_init(struct http_response *resp);
void http_response_done(struct http_response *resp);

/* Case-insensitive lookup; returns the borrowed value or NULL. */
const char *http_response_header(const struct http_response *resp, const char *name);

/*
 * Percent-encodes s per RFC 3986 (unreserved A-Z a-z 0-9 - _ . ~ kept);
 * keep_slash leaves '/' as is (for paths). Appends to out.
 */
enum kl_err http_uri_encode(struct buf *out, const char *s, size_t len, int keep_slash);

#endif
