/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sigv4.h: AWS Signature Version 4 for request headers.
 *
 * The caller builds the complete header set that will be sent (including
 * "host", "x-amz-date", and where applicable "x-amz-security-token" and
 * "x-amz-content-sha256") and sigv4_sign() signs all of them, returning the
 * Authorization header value. This mirrors how AWS's published test suite
 * is written, so the vectors can be checked directly.
 *
 * Invariants: the canonical request follows the SigV4 spec: the path is
 * normalised (RFC 3986 dot segments removed, empty segments dropped) and
 * encoded once more for every service except S3 (no normalisation, no
 * double encoding: existing %XX escapes are kept, only bytes that were
 * left raw get encoded); query parameters are decoded, re-encoded with the
 * RFC 3986 unreserved set and sorted by name then value (a parameter
 * without '=' has an empty value); header names are lowercased, values
 * trimmed with inner runs of spaces and tabs folded to one space, and
 * headers with the same name joined with ',' in the order given.
 * Every header passed is signed: leave out hop-by-hop headers (Connection,
 * Expect, Transfer-Encoding) and User-Agent, which proxies may change.
 */
#ifndef KL_SIGV4_H
#define KL_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "http.h"
#include "kl_err.h"

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

struct sigv4_request {
	const char *method;            /* "GET", "POST", ... */
	const char *path;              /* as sent on the wire, starts with '/' */
	const char *query;             /* as sent, without '?'; NULL or "" = none */
	const struct http_header *headers;
	size_t n_headers;
	const char *payload_hash;      /* lowercase hex SHA-256 of the body, or
					  SIGV4_UNSIGNED_PAYLOAD */
	const char *region;            /* "us-east-1" */
	const char *service;           /* signing name: "kinesis", "dynamodb", "s3", "sts" */
	time_t when;                   /* the instant named in x-amz-date */
};

struct sigv4_creds {
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token;     /* NULL when none; the caller adds the
					  x-amz-security-token header itself */
};

/*
 * Cache of the derived signing key for one (secret, day, region, service).
 * Optional: pass NULL to derive every time. Not thread-safe: one per
 * client. sigv4_cache_done() wipes it.
 */
struct sigv4_cache {
	char scope[128];               /* "<date>/<region>/<service>/aws4_request" */
	uint8_t secret_digest[32];     /* SHA-256 of the secret the key came from */
	uint8_t key[32];
	int valid;
};
void sigv4_cache_init(struct sigv4_cache *cache);
void sigv4_cache_done(struct sigv4_cache *cache);

/* Formats when as "YYYYMMDDTHHMMSSZ" into out (17 bytes); writes "" for a
 * time whose year has no four digits. Thread-safe. */
void sigv4_amz_date(time_t when, char out[17]);

/* Lowercase hex SHA-256 of data into out (65 bytes); "" only if libcrypto
 * cannot allocate. Thread-safe. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/*
 * Signs req with creds (both borrowed). On success appends the
 * Authorization header value ("AWS4-HMAC-SHA256 Credential=...,
 * SignedHeaders=..., Signature=...") to ret_authorization (caller-owned
 * buffer). When debug_canonical is not NULL the canonical request, an
 * empty line and the string to sign are appended to it (for tests; never
 * log it in production, it holds header values). On failure neither buffer
 * is written.
 * Returns KL_EINVAL for a malformed request: no host header, a path that
 * does not start with '/' or holds '?', '#' or a control byte, a query
 * with '#' or a control byte, a header name that is not an RFC 7230 token,
 * a header value with a control byte other than tab, a payload hash that
 * is not hex or a keyword, a region or service that is empty or not made
 * of RFC 3986 unreserved characters, an access key id that is empty or
 * holds '/', ',', a space or a byte outside printable ASCII, a NULL
 * secret, or a time without a four-digit year. KL_ENOMEM when memory or a
 * buffer cap runs out.
 * Thread-safe if each thread uses its own cache.
 */
enum kl_err sigv4_sign(const struct sigv4_request *req, const struct sigv4_creds *creds,
		       struct sigv4_cache *cache, struct buf *ret_authorization,
		       struct buf *debug_canonical);

#endif
