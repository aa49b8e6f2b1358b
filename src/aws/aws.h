/* SPDX-License-Identifier: Apache-2.0 */
/*
 * aws.h: what every AWS service client shares: an endpoint, request
 * signing, the retry policy (exponential backoff with full jitter and a
 * retry budget), the classification of AWS errors into enum kl_err, and
 * the JSON 1.0/1.1 protocol used by Kinesis and DynamoDB.
 *
 * A struct aws_client is used by one thread at a time (it owns an HTTP
 * client and a signing-key cache); the credential chain it points to is
 * shared and thread-safe. Counters are plain integers read by the owning
 * thread (metrics copy them out).
 */
#ifndef KL_AWS_H
#define KL_AWS_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "buf.h"
#include "creds.h"
#include "http.h"
#include "kl_err.h"
#include "sigv4.h"
#include "util.h"

struct aws_retry_policy {
	int max_attempts;             /* total tries, >= 1; default 8 */
	long base_delay_ms;           /* default 50 */
	long max_delay_ms;            /* cap of one sleep; default 5000 */
	long throttle_base_delay_ms;  /* base when throttled; default 500 */
	int budget_capacity;          /* retry token bucket; default 500 */
	int budget_retry_cost;        /* tokens per retry; default 5 (10 for timeouts) */
};

struct aws_client_config {
	const char *service;          /* signing name: "kinesis", "dynamodb", "s3", "sts" */
	const char *region;           /* "us-east-1" */
	const char *endpoint;         /* "https://kinesis.us-east-1.amazonaws.com" or
					 "http://127.0.0.1:4567"; NULL = AWS default */
	int s3_virtual_host;          /* S3 only: bucket.host addressing (default path-style off) */
	struct http_opts http;
	struct aws_retry_policy retry;  /* zeros = defaults */
};

/* Counters, for metrics and tests. */
struct aws_stats {
	uint64_t calls;               /* logical calls */
	uint64_t attempts;            /* HTTP requests sent */
	uint64_t retries;
	uint64_t throttles;
	uint64_t errors;              /* calls that finally failed */
};

struct aws_client {
	char *service;
	char *region;
	char *endpoint;               /* no trailing slash */
	char *host;                   /* host[:port] as used in the Host header */
	int s3_virtual_host;
	struct aws_retry_policy retry;
	struct http_client *http;     /* owned */
	struct creds_chain *creds;    /* borrowed, shared */
	struct sigv4_cache sig_cache;
	struct kl_rng rng;
	int budget;                   /* retry tokens left */
	struct aws_stats stats;
};

/*
 * Sets up a client. cfg strings are copied; creds is borrowed and must
 * outlive the client. Release with aws_client_done() (safe on a half-built
 * or zeroed client).
 */
enum kl_err aws_client_init(struct aws_client *c, const struct aws_client_config *cfg,
			    struct creds_chain *creds);
void aws_client_done(struct aws_client *c);

/* A service request before signing. All fields borrowed. */
struct aws_request {
	const char *method;
	const char *path;             /* percent-encoded path, starting with '/' */
	const char *query;            /* encoded query without '?', or NULL */
	const char *host_prefix;      /* S3 virtual host: "bucket." prepended; or NULL */
	const struct http_header *headers;  /* extra headers (content-type, x-amz-target ...) */
	size_t n_headers;
	const void *body;
	size_t body_len;
	int body_fd;                  /* -1, or the file holding the body ... */
	uint64_t body_offset;         /* ... from this offset, body_len bytes */
	const char *payload_hash;     /* hex SHA-256; NULL = computed from body
					 (memory) or UNSIGNED-PAYLOAD (file) */
	int download_fd;              /* -1, or write a 2xx body to this fd */
	int s3;                       /* adds x-amz-content-sha256, no path normalisation */
};

void aws_request_init(struct aws_request *req);

/*
 * Signs and sends req, retrying retryable failures with full-jitter
 * backoff while the attempt limit and the retry budget allow. On KL_OK
 * *resp holds a 2xx response. On failure *resp holds the last response
 * (if any) and info the parsed AWS error. Either way the caller calls
 * http_response_done(resp). The error body is parsed as JSON
 * (__type/message/Message) or S3 XML (Code/Message/RequestId).
 */
enum kl_err aws_send(struct aws_client *c, const struct aws_request *req,
		     struct http_response *resp, struct kl_errinfo *info);

/*
 * JSON protocol call (Kinesis: "Kinesis_20131202", "1.1"; DynamoDB:
 * "DynamoDB_20120810", "1.0"). Serialises in (borrowed), sends, and on
 * success parses the body into *ret_out, always a JSON object (caller
 * json_object_put()s it); any other body is KL_EPARSE.
 */
enum kl_err aws_json_call(struct aws_client *c, const char *target_prefix,
			  const char *json_version, const char *operation,
			  json_object *in, json_object **ret_out, struct kl_errinfo *info);

/*
 * aws_json_call() without the parsing, for callers that scan the body
 * themselves (GetRecords): serialises in (borrowed) and sends it. On KL_OK
 * resp holds the 2xx response, resp->body its body (resp->body.len bytes,
 * NUL-terminated; data may be NULL when the body is empty). resp must have
 * been http_response_init()ed, and the caller http_response_done()s it
 * whatever the result, as with aws_send().
 */
enum kl_err aws_json_call_raw(struct aws_client *c, const char *target_prefix,
			      const char *json_version, const char *operation,
			      json_object *in, struct http_response *resp,
			      struct kl_errinfo *info);

/*
 * Maps an HTTP status and AWS error code (the part after '#', e.g.
 * "ProvisionedThroughputExceededException") to an error. Pure function.
 */
enum kl_err aws_classify(long http_status, const char *aws_code);

/*
 * Backoff before retry number attempt (1 = first retry): uniform in
 * [0, min(max_delay, base * 2^(attempt-1))], with base the throttle base
 * when throttled. Pure apart from the rng.
 */
long aws_backoff_ms(const struct aws_retry_policy *p, struct kl_rng *rng, int attempt,
		    int throttled);

/* Fills zero fields of p with the defaults above. */
void aws_retry_policy_defaults(struct aws_retry_policy *p);

#endif
