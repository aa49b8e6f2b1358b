/* SPDX-License-Identifier: Apache-2.0 */
/*
 * aws.c: one request to an AWS service: sign, send, classify, and retry
 * what is worth retrying. Retries use exponential backoff with full jitter
 * (sleep uniform in [0, min(cap, base * 2^n)]) and a token-bucket retry
 * budget per client, so a sick endpoint costs bounded extra traffic: each
 * retry spends tokens, each success refunds one.
 * Invariants: a 2xx response is the only KL_OK; an expired session token
 * invalidates the credential cache and is retried once with fresh keys.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aws.h"
#include "log.h"
#include "xml.h"

#define AWS_MAX_HEADERS 32

void aws_retry_policy_defaults(struct aws_retry_policy *p)
{
	if (p->max_attempts <= 0)
		p->max_attempts = 8;
	if (p->base_delay_ms <= 0)
		p->base_delay_ms = 50;
	if (p->max_delay_ms <= 0)
		p->max_delay_ms = 5000;
	if (p->throttle_base_delay_ms <= 0)
		p->throttle_base_delay_ms = 500;
	if (p->budget_capacity <= 0)
		p->budget_capacity = 500;
	if (p->budget_retry_cost <= 0)
		p->budget_retry_cost = 5;
}

long aws_backoff_ms(const struct aws_retry_policy *p, struct kl_rng *rng, int attempt,
		    int throttled)
{
	long base = throttled ? p->throttle_base_delay_ms : p->base_delay_ms;
	long ceiling = base;

	if (attempt < 1)
		attempt = 1;
	for (int i = 1; i < attempt && ceiling < p->max_delay_ms; i++)
		ceiling *= 2;
	if (ceiling > p->max_delay_ms)
		ceiling = p->max_delay_ms;
	return (long)kl_rng_below(rng, (uint64_t)ceiling + 1);
}

static int code_in(const char *code, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(code, *list) == 0)
			return 1;
	return 0;
}

enum kl_err aws_classify(long http_status, const char *aws_code)
{
	static const char *const throttle[] = {
		"ProvisionedThroughputExceededException", "ThrottlingException",
		"Throttling", "ThrottledException", "RequestLimitExceeded",
		"SlowDown", "TooManyRequestsException", "RequestThrottled",
		"RequestThrottledException", "LimitExceededException",
		"BandwidthLimitExceeded", "PriorRequestNotComplete",
		"EC2ThrottledException", "TransactionInProgressException",
		"RequestLimitExceededException", NULL
	};
	static const char *const conflict[] = {
		"ConditionalCheckFailedException", "PreconditionFailed",
		"TransactionConflictException", NULL
	};
	static const char *const notfound[] = {
		"ResourceNotFoundException", "NoSuchKey", "NoSuchBucket",
		"NoSuchUpload", "NotFound", "NoSuchEntity", NULL
	};
	static const char *const auth[] = {
		"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
		"InvalidSignatureException", "SignatureDoesNotMatch", "InvalidAccessKeyId",
		"MissingAuthenticationToken", "MissingAuthenticationTokenException",
		"IncompleteSignature", "IncompleteSignatureException",
		"InvalidClientTokenId", "AuthFailure", "NotAuthorized",
		"KMSAccessDeniedException", NULL
	};
	static const char *const expired[] = {
		"ExpiredIteratorException", "ExpiredTokenException", "ExpiredToken",
		"RequestExpired", NULL
	};
	static const char *const server[] = {
		"InternalFailure", "InternalServerError", "InternalError",
		"ServiceUnavailable", "ServiceUnavailableException",
		"InternalServerErrorException", "IDPCommunicationError",
		"KMSInternalException", NULL
	};
	static const char *const timeout[] = { "RequestTimeout", "RequestTimeoutException", NULL };
	static const char *const exists[] = {
		"BucketAlreadyExists", "BucketAlreadyOwnedByYou", "ResourceAlreadyExistsException",
		NULL
	};

	if (http_status >= 200 && http_status < 300)
		return KL_OK;
	if (aws_code && *aws_code) {
		if (code_in(aws_code, throttle))
			return KL_ETHROTTLED;
		if (code_in(aws_code, conflict))
			return KL_ECONFLICT;
		if (code_in(aws_code, notfound))
			return KL_ENOTFOUND;
		if (code_in(aws_code, auth))
			return KL_EAUTH;
		if (code_in(aws_code, expired))
			return KL_EEXPIRED;
		if (code_in(aws_code, server))
			return KL_ESERVER;
		if (code_in(aws_code, timeout))
			return KL_ETIMEOUT;
		if (code_in(aws_code, exists))
			return KL_EEXISTS;
		if (strcmp(aws_code, "ResourceInUseException") == 0)
			return KL_ESTATE;
	}
	/* 429, and a bare 503 (S3 answers HEAD with SlowDown but no body). */
	if (http_status == 429 || http_status == 503)
		return KL_ETHROTTLED;
	if (http_status >= 500)
		return KL_ESERVER;
	if (http_status == 404)
		return KL_ENOTFOUND;
	if (http_status == 412)
		return KL_ECONFLICT;
	if (http_status == 401 || http_status == 403)
		return KL_EAUTH;
	if (http_status == 408)
		return KL_ETIMEOUT;
	return KL_EAWS;
}

static char *default_endpoint(const char *service, const char *region)
{
	char tmp[256];

	snprintf(tmp, sizeof(tmp), "https://%s.%s.amazonaws.com", service, region);
	return strdup(tmp);
}

enum kl_err aws_client_init(struct aws_client *c, const struct aws_client_config *cfg,
			    struct creds_chain *creds)
{
	const char *p, *hs;
	size_t len;

	memset(c, 0, sizeof(*c));
	sigv4_cache_init(&c->sig_cache);
	if (!cfg->service || !cfg->region)
		return KL_EINVAL;
	c->service = strdup(cfg->service);
	c->region = strdup(cfg->region);
	c->endpoint = cfg->endpoint ? strdup(cfg->endpoint) : default_endpoint(cfg->service, cfg->region);
	if (!c->service || !c->region || !c->endpoint)
		goto nomem;
	len = strlen(c->endpoint);
	while (len > 0 && c->endpoint[len - 1] == '/')
		c->endpoint[--len] = '\0';
	hs = strstr(c->endpoint, "://");
	if (!hs || (strncmp(c->endpoint, "http://", 7) != 0 && strncmp(c->endpoint, "https://", 8) != 0)) {
		aws_client_done(c);
		return KL_ECONFIG;
	}
	hs += 3;
	p = strchr(hs, '/');
	c->host = p ? strndup(hs, (size_t)(p - hs)) : strdup(hs);
	if (!c->host || !*c->host)
		goto nomem;
	c->s3_virtual_host = cfg->s3_virtual_host;
	c->retry = cfg->retry;
	aws_retry_policy_defaults(&c->retry);
	c->budget = c->retry.budget_capacity;
	kl_rng_seed(&c->rng);
	c->creds = creds;
	if (http_client_new(&cfg->http, &c->http) != KL_OK)
		goto nomem;
	return KL_OK;
nomem:
	aws_client_done(c);
	return KL_ENOMEM;
}

void aws_client_done(struct aws_client *c)
{
	if (!c)
		return;
	free(c->service);
	free(c->region);
	free(c->endpoint);
	free(c->host);
	http_client_free(c->http);
	sigv4_cache_done(&c->sig_cache);
	memset(c, 0, sizeof(*c));
}

void aws_request_init(struct aws_request *req)
{
	memset(req, 0, sizeof(*req));
	req->body_fd = -1;
	req->download_fd = -1;
}

/* Copies at most dst_size-1 bytes of src[0..len) into dst. */
static void copy_field(char *dst, size_t dst_size, const char *src, size_t len)
{
	if (len >= dst_size)
		len = dst_size - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* Extracts the AWS error code and message from a JSON or XML error body. */
static void parse_error_body(const struct http_response *resp, struct kl_errinfo *info)
{
	const char *body = resp->body.data, *rid;
	size_t len = resp->body.len;

	if (!info)
		return;
	rid = http_response_header(resp, "x-amzn-requestid");
	if (!rid)
		rid = http_response_header(resp, "x-amz-request-id");
	if (rid)
		copy_field(info->request_id, sizeof(info->request_id), rid, strlen(rid));
	info->aws_code[0] = '\0';
	info->message[0] = '\0';
	if (body && len > 0) {
		size_t i = 0;
		while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
			i++;
		if (i < len && body[i] == '{') {
			json_tokener *tok = json_tokener_new();
			json_object *obj = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
			json_object *v;
			if (tok)
				json_tokener_free(tok);
			if (obj) {
				if ((json_object_object_get_ex(obj, "__type", &v) ||
				     json_object_object_get_ex(obj, "code", &v)) &&
				    json_object_is_type(v, json_type_string)) {
					const char *t = json_object_get_string(v);
					const char *hash = strrchr(t, '#');
					t = hash ? hash + 1 : t;
					/* Some services append ":http://..." to the type. */
					const char *colon = strchr(t, ':');
					copy_field(info->aws_code, sizeof(info->aws_code), t,
						   colon ? (size_t)(colon - t) : strlen(t));
				}
				if ((json_object_object_get_ex(obj, "message", &v) ||
				     json_object_object_get_ex(obj, "Message", &v)) &&
				    json_object_is_type(v, json_type_string)) {
					const char *m = json_object_get_string(v);
					copy_field(info->message, sizeof(info->message), m, strlen(m));
				}
				json_object_put(obj);
			}
		} else if (i < len && body[i] == '<') {
			char *t = NULL;
			if (xml_text(body, len, "Code", &t) == KL_OK) {
				copy_field(info->aws_code, sizeof(info->aws_code), t, strlen(t));
				free(t);
			}
			if (xml_text(body, len, "Message", &t) == KL_OK) {
				copy_field(info->message, sizeof(info->message), t, strlen(t));
				free(t);
			}
			if (!info->request_id[0] && xml_text(body, len, "RequestId", &t) == KL_OK) {
				copy_field(info->request_id, sizeof(info->request_id), t, strlen(t));
				free(t);
			}
		}
	}
	if (!info->aws_code[0]) {
		const char *t = http_response_header(resp, "x-amzn-errortype");
		if (t)
			copy_field(info->aws_code, sizeof(info->aws_code), t, strcspn(t, ":"));
		else if (resp->status == 404)
			snprintf(info->aws_code, sizeof(info->aws_code), "NotFound");
	}
	if (!info->message[0] && body && len > 0 && body[0] != '<' && body[0] != '{')
		copy_field(info->message, sizeof(info->message), body, len);
}

/* One signed attempt. Fills resp; returns the transport error or KL_OK. */
static enum kl_err send_once(struct aws_client *c, const struct aws_request *req,
			     const struct aws_creds *cr, const char *payload_hash,
			     struct http_response *resp, struct kl_errinfo *info)
{
	struct http_header hdrs[AWS_MAX_HEADERS];
	size_t n = 0;
	char amz_date[17];
	struct buf host, url, auth;
	enum kl_err err;
	time_t now = time(NULL);

	if (req->n_headers + 5 > AWS_MAX_HEADERS)
		return kl_errinfo_set(info, KL_EINVAL, "too many request headers");
	buf_init(&host, 1024);
	buf_init(&url, 65536);
	buf_init(&auth, 4096);
	err = buf_printf(&host, "%s%s", req->host_prefix ? req->host_prefix : "", c->host);
	if (!err) {
		/* endpoint = scheme://host[/base]; a host prefix goes before the host. */
		const char *hs = strstr(c->endpoint, "://") + 3;
		err = buf_append(&url, c->endpoint, (size_t)(hs - c->endpoint));
		if (!err)
			err = buf_printf(&url, "%s%s%s%s%s", req->host_prefix ? req->host_prefix : "", hs,
					 req->path, req->query && *req->query ? "?" : "",
					 req->query ? req->query : "");
	}
	if (err) {
		err = kl_errinfo_set(info, KL_EINVAL, "request URL too long");
		goto out;
	}
	sigv4_amz_date(now, amz_date);
	hdrs[n++] = (struct http_header){ "Host", host.data };
	hdrs[n++] = (struct http_header){ "X-Amz-Date", amz_date };
	if (cr->session_token)
		hdrs[n++] = (struct http_header){ "X-Amz-Security-Token", cr->session_token };
	if (req->s3)
		hdrs[n++] = (struct http_header){ "X-Amz-Content-Sha256", payload_hash };
	for (size_t i = 0; i < req->n_headers; i++)
		hdrs[n++] = req->headers[i];

	struct sigv4_request sr = {
		.method = req->method, .path = req->path, .query = req->query,
		.headers = hdrs, .n_headers = n, .payload_hash = payload_hash,
		.region = c->region, .service = c->service, .when = now,
	};
	struct sigv4_creds sc = { cr->access_key_id, cr->secret_access_key, cr->session_token };
	err = sigv4_sign(&sr, &sc, &c->sig_cache, &auth, NULL);
	if (err) {
		kl_errinfo_set(info, err, "cannot sign request %s %s", req->method, req->path);
		goto out;
	}
	hdrs[n++] = (struct http_header){ "Authorization", auth.data };

	struct http_request hr;
	http_request_init(&hr);
	hr.method = req->method;
	hr.url = url.data;
	hr.headers = hdrs;
	hr.n_headers = n;
	hr.body = req->body;
	hr.body_len = req->body_len;
	hr.body_fd = req->body_fd;
	hr.body_offset = req->body_offset;
	hr.download_fd = req->download_fd;
	err = http_send(c->http, &hr, resp, info);
out:
	buf_wipe(&auth);
	buf_done(&host);
	buf_done(&url);
	return err;
}

enum kl_err aws_send(struct aws_client *c, const struct aws_request *req,
		     struct http_response *resp, struct kl_errinfo *info)
{
	char hash[65];
	const char *payload_hash = req->payload_hash;
	struct kl_errinfo scratch;
	enum kl_err err = KL_OK;
	int refreshed_creds = 0;

	if (!info)
		info = &scratch;
	kl_errinfo_clear(info);
	if (!payload_hash) {
		if (req->body_fd >= 0) {
			payload_hash = SIGV4_UNSIGNED_PAYLOAD;
		} else {
			sigv4_sha256_hex(req->body ? req->body : "", req->body ? req->body_len : 0, hash);
			payload_hash = hash;
		}
	}
	/* A retried download starts again from where the first one began. */
	off_t download_start = req->download_fd >= 0 ? lseek(req->download_fd, 0, SEEK_CUR) : -1;

	c->stats.calls++;
	for (int attempt = 1;; attempt++) {
		struct aws_creds cr = { 0 };
		int throttled = 0;

		kl_errinfo_clear(info);
		if (attempt > 1 && download_start >= 0 &&
		    (ftruncate(req->download_fd, download_start) != 0 ||
		     lseek(req->download_fd, download_start, SEEK_SET) != download_start)) {
			err = kl_errinfo_set(info, KL_EIO, "cannot rewind download file for retry");
			break;
		}
		err = creds_chain_get(c->creds, &cr, info);
		if (err)
			break;
		c->stats.attempts++;
		err = send_once(c, req, &cr, payload_hash, resp, info);
		creds_done(&cr);
		if (!err) {
			if (resp->status >= 200 && resp->status < 300) {
				if (c->budget < c->retry.budget_capacity)
					c->budget++;
				return KL_OK;
			}
			parse_error_body(resp, info);
			info->http_status = resp->status;
			err = aws_classify(resp->status, info->aws_code);
		}
		if (err == KL_EEXPIRED && !refreshed_creds &&
		    (strcmp(info->aws_code, "ExpiredToken") == 0 ||
		     strcmp(info->aws_code, "ExpiredTokenException") == 0)) {
			/* Our session credentials expired under us: get new ones. */
			refreshed_creds = 1;
			creds_chain_invalidate(c->creds);
			if (attempt < c->retry.max_attempts)
				continue;
		}
		if (!kl_err_retryable(err) || attempt >= c->retry.max_attempts)
			break;
		throttled = err == KL_ETHROTTLED;
		if (throttled)
			c->stats.throttles++;
		int cost = c->retry.budget_retry_cost * (err == KL_ETIMEOUT ? 2 : 1);
		if (c->budget < cost) {
			log_debug("aws: %s %s: retry budget exhausted after %d attempts",
				  c->service, req->path, attempt);
			break;
		}
		c->budget -= cost;
		c->stats.retries++;
		long delay = aws_backoff_ms(&c->retry, &c->rng, attempt, throttled);
		log_debug("aws: %s %s attempt %d failed (%s %s), retrying in %ld ms", c->service,
			  req->path, attempt, kl_strerror(err), info->aws_code, delay);
		kl_sleep_ms(delay);
	}
	c->stats.errors++;
	return err;
}

enum kl_err aws_json_call_raw(struct aws_client *c, const char *target_prefix,
			      const char *json_version, const char *operation,
			      json_object *in, struct http_response *resp,
			      struct kl_errinfo *info)
{
	char target[128], ctype[64];
	struct http_header hdrs[2];
	struct aws_request req;
	const char *body;
	size_t body_len;

	snprintf(target, sizeof(target), "%s.%s", target_prefix, operation);
	snprintf(ctype, sizeof(ctype), "application/x-amz-json-%s", json_version);
	hdrs[0] = (struct http_header){ "Content-Type", ctype };
	hdrs[1] = (struct http_header){ "X-Amz-Target", target };
	body = json_object_to_json_string_length(in, JSON_C_TO_STRING_PLAIN, &body_len);
	if (!body)
		return kl_errinfo_set(info, KL_ENOMEM, "cannot serialise %s request", operation);

	aws_request_init(&req);
	req.method = "POST";
	req.path = "/";
	req.headers = hdrs;
	req.n_headers = 2;
	req.body = body;
	req.body_len = body_len;
	return aws_send(c, &req, resp, info);
}

enum kl_err aws_json_call(struct aws_client *c, const char *target_prefix,
			  const char *json_version, const char *operation,
			  json_object *in, json_object **ret_out, struct kl_errinfo *info)
{
	struct http_response resp;
	enum kl_err err;

	http_response_init(&resp);
	err = aws_json_call_raw(c, target_prefix, json_version, operation, in, &resp, info);
	if (!err) {
		json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
		json_object *out = NULL;
		if (!tok) {
			err = KL_ENOMEM;
		} else {
			out = resp.body.len ? json_tokener_parse_ex(tok, resp.body.data, (int)resp.body.len)
					    : json_object_new_object();
			if (!out || json_tokener_get_error(tok) != json_tokener_success) {
				json_object_put(out);
				out = NULL;
				err = kl_errinfo_set(info, KL_EPARSE, "%s: response is not JSON (%zu bytes)",
						     operation, resp.body.len);
			} else if (!json_object_is_type(out, json_type_object)) {
				json_object_put(out);
				out = NULL;
				err = kl_errinfo_set(info, KL_EPARSE, "%s: response is not a JSON object",
						     operation);
			}
			json_tokener_free(tok);
		}
		if (!err)
			*ret_out = out;
	}
	http_response_done(&resp);
	return err;
}
