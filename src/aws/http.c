/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http.c: HTTP/1.1 over one libcurl easy handle per client. Connections
 * are kept alive between requests; DNS answers and TLS sessions are shared
 * between clients through one CURLSH protected by a lock per data kind.
 * Invariants: a response body never grows past max_response_bytes; a file
 * body is read with pread() so the caller's file offset is untouched;
 * proxies come from the standard environment (HTTPS_PROXY, NO_PROXY),
 * which libcurl reads itself.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http.h"
#include "log.h"

struct http_client {
	CURL *curl;
	struct http_opts opts;
	char *ca_file;
};

/*
 * The share handle and its locks are process-wide by nature (that is what
 * sharing means); they are set once in http_global_init() before threads
 * start and only read afterwards.
 */
static CURLSH *share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ctx)
{
	(void)h;
	(void)access;
	(void)ctx;
	pthread_mutex_lock(&share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ctx)
{
	(void)h;
	(void)ctx;
	pthread_mutex_unlock(&share_locks[data]);
}

enum kl_err http_global_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return KL_ENOMEM;
	if (share)
		return KL_OK;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&share_locks[i], NULL);
	share = curl_share_init();
	if (!share)
		return KL_ENOMEM;
	curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return KL_OK;
}

void http_global_cleanup(void)
{
	if (share) {
		curl_share_cleanup(share);
		share = NULL;
		for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
			pthread_mutex_destroy(&share_locks[i]);
	}
	curl_global_cleanup();
}

enum kl_err http_client_new(const struct http_opts *opts, struct http_client **ret_client)
{
	struct http_client *c = calloc(1, sizeof(*c));

	if (!c)
		return KL_ENOMEM;
	if (opts)
		c->opts = *opts;
	if (!c->opts.connect_timeout_ms)
		c->opts.connect_timeout_ms = 3000;
	if (!c->opts.timeout_ms)
		c->opts.timeout_ms = 30000;
	if (!c->opts.max_response_bytes)
		c->opts.max_response_bytes = BUF_DEFAULT_CAP;
	if (opts && opts->ca_file) {
		c->ca_file = strdup(opts->ca_file);
		if (!c->ca_file) {
			free(c);
			return KL_ENOMEM;
		}
	}
	c->opts.ca_file = c->ca_file;
	c->curl = curl_easy_init();
	if (!c->curl) {
		http_client_free(c);
		return KL_ENOMEM;
	}
	*ret_client = c;
	return KL_OK;
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->ca_file);
	free(c);
}

void http_request_init(struct http_request *req)
{
	memset(req, 0, sizeof(*req));
	req->body_fd = -1;
	req->download_fd = -1;
}

void http_response_init(struct http_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	buf_init(&resp->body, 0);
}

static void response_clear_headers(struct http_response *resp)
{
	for (size_t i = 0; i < resp->n_headers; i++) {
		free(resp->headers[i].name);
		free(resp->headers[i].value);
	}
	resp->n_headers = 0;
}

void http_response_done(struct http_response *resp)
{
	if (!resp)
		return;
	response_clear_headers(resp);
	buf_done(&resp->body);
	resp->status = 0;
}

const char *http_response_header(const struct http_response *resp, const char *name)
{
	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	return NULL;
}

enum kl_err http_uri_encode(struct buf *out, const char *s, size_t len, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	enum kl_err err = buf_reserve(out, len * 3);

	if (err)
		return err;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		/* ASCII only: isalnum() would follow the locale. */
		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
		    (keep_slash && ch == '/')) {
			out->data[out->len++] = (char)ch;
		} else {
			out->data[out->len++] = '%';
			out->data[out->len++] = hex[ch >> 4];
			out->data[out->len++] = hex[ch & 15];
		}
	}
	out->data[out->len] = '\0';
	return KL_OK;
}

/* State of one transfer, handed to the curl callbacks. */
struct transfer {
	struct http_response *resp;
	size_t cap;
	int overflow;
	/* upload */
	const char *mem;
	int fd;
	uint64_t offset;
	size_t remaining;
	int read_errno;
	/* download */
	int download_fd;
	int write_errno;
};

static size_t on_header(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct transfer *t = ctx;
	struct http_response *resp = t->resp;
	size_t len = size * nmemb, name_len, vstart, vend;
	const char *colon;

	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new status line (e.g. after 100 Continue): forget headers. */
		response_clear_headers(resp);
		return len;
	}
	colon = memchr(data, ':', len);
	if (!colon || resp->n_headers >= HTTP_MAX_RESP_HEADERS)
		return len;
	name_len = (size_t)(colon - data);
	vstart = name_len + 1;
	vend = len;
	while (vstart < vend && (data[vstart] == ' ' || data[vstart] == '\t'))
		vstart++;
	while (vend > vstart && isspace((unsigned char)data[vend - 1]))
		vend--;
	char *name = strndup(data, name_len);
	char *value = strndup(data + vstart, vend - vstart);
	if (!name || !value) {
		free(name);
		free(value);
		return 0;
	}
	for (char *p = name; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	resp->headers[resp->n_headers].name = name;
	resp->headers[resp->n_headers].value = value;
	resp->n_headers++;
	return len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct transfer *t = ctx;
	size_t len = size * nmemb;

	if (t->download_fd >= 0 && t->resp->status >= 200 && t->resp->status < 300) {
		size_t off = 0;
		while (off < len) {
			ssize_t n = write(t->download_fd, data + off, len - off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				t->write_errno = errno;
				return 0;
			}
			off += (size_t)n;
		}
		return len;
	}
	if (t->resp->body.len + len > t->cap) {
		t->overflow = 1;
		return 0;
	}
	if (buf_append(&t->resp->body, data, len) != KL_OK) {
		t->overflow = 1;
		return 0;
	}
	return len;
}

static size_t on_read(char *dest, size_t size, size_t nmemb, void *ctx)
{
	struct transfer *t = ctx;
	size_t want = size * nmemb;

	if (want > t->remaining)
		want = t->remaining;
	if (want == 0)
		return 0;
	if (t->fd < 0) {
		memcpy(dest, t->mem, want);
		t->mem += want;
	} else {
		ssize_t n;
		do {
			n = pread(t->fd, dest, want, (off_t)t->offset);
		} while (n < 0 && errno == EINTR);
		if (n <= 0) {
			t->read_errno = n < 0 ? errno : EIO;
			return CURL_READFUNC_ABORT;
		}
		want = (size_t)n;
		t->offset += want;
	}
	t->remaining -= want;
	return want;
}

struct body_ctx {
	struct transfer *t;
	CURL *curl;
};

static size_t on_body_status(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct body_ctx *bc = ctx;

	/* The status is known once the headers are done; on_body needs it to
	 * decide whether the body is the download or an error document. */
	if (bc->t->resp->status == 0)
		curl_easy_getinfo(bc->curl, CURLINFO_RESPONSE_CODE, &bc->t->resp->status);
	return on_body(data, size, nmemb, bc->t);
}

static enum kl_err map_curl_error(CURLcode rc, struct transfer *t, const char *errbuf,
				  struct kl_errinfo *info)
{
	const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);

	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		return kl_errinfo_set(info, KL_ETIMEOUT, "%s", detail);
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
		return kl_errinfo_set(info, KL_ECONNECT, "%s", detail);
	case CURLE_WRITE_ERROR:
		if (t->overflow)
			return kl_errinfo_set(info, KL_ENOMEM,
					      "response body larger than %zu bytes", t->cap);
		if (t->write_errno) {
			if (info)
				info->sys_errno = t->write_errno;
			return kl_errinfo_set(info, t->write_errno == ENOSPC ? KL_ENOSPC : KL_EIO,
					      "writing response body: %s", strerror(t->write_errno));
		}
		return kl_errinfo_set(info, KL_EIO, "%s", detail);
	case CURLE_ABORTED_BY_CALLBACK:
	case CURLE_READ_ERROR:
		if (t->read_errno) {
			if (info)
				info->sys_errno = t->read_errno;
			return kl_errinfo_set(info, KL_EIO, "reading request body: %s",
					      strerror(t->read_errno));
		}
		return kl_errinfo_set(info, KL_EIO, "%s", detail);
	case CURLE_OUT_OF_MEMORY:
		return kl_errinfo_set(info, KL_ENOMEM, "%s", detail);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		return kl_errinfo_set(info, KL_EAUTH, "TLS: %s", detail);
	default:
		return kl_errinfo_set(info, KL_ECONNECT, "%s", detail);
	}
}

enum kl_err http_send(struct http_client *c, const struct http_request *req,
		      struct http_response *resp, struct kl_errinfo *info)
{
	CURL *curl = c->curl;
	struct curl_slist *hdrs = NULL, *tmp;
	struct transfer t = { 0 };
	struct body_ctx bc = { &t, curl };
	char errbuf[CURL_ERROR_SIZE] = "";
	struct buf line;
	enum kl_err err = KL_OK;
	CURLcode rc;
	int has_body = req->body_fd >= 0 || req->body != NULL ||
		       strcmp(req->method, "PUT") == 0 || strcmp(req->method, "POST") == 0;

	response_clear_headers(resp);
	buf_reset(&resp->body);
	resp->status = 0;
	t.resp = resp;
	t.cap = c->opts.max_response_bytes;
	t.mem = req->body;
	t.fd = req->body_fd;
	t.offset = req->body_offset;
	t.remaining = req->body_len;
	t.download_fd = req->download_fd;

	buf_init(&line, 16384);
	for (size_t i = 0; i < req->n_headers; i++) {
		buf_reset(&line);
		if (buf_printf(&line, "%s: %s", req->headers[i].name, req->headers[i].value)) {
			err = kl_errinfo_set(info, KL_ENOMEM, "header too long");
			goto out;
		}
		tmp = curl_slist_append(hdrs, line.data);
		if (!tmp) {
			err = KL_ENOMEM;
			goto out;
		}
		hdrs = tmp;
	}
	/* We send exact bodies with Content-Length; no 100-continue round trip
	 * and no chunked encoding (s3rver would store the chunk framing). */
	tmp = curl_slist_append(hdrs, "Expect:");
	if (!tmp) {
		err = KL_ENOMEM;
		goto out;
	}
	hdrs = tmp;
	if (has_body) {
		tmp = curl_slist_append(hdrs, "Transfer-Encoding:");
		if (!tmp) {
			err = KL_ENOMEM;
			goto out;
		}
		hdrs = tmp;
	}

	curl_easy_reset(curl);
	if (share)
		curl_easy_setopt(curl, CURLOPT_SHARE, share);
	curl_easy_setopt(curl, CURLOPT_URL, req->url);
	/* The path we signed is the path we send: no dot-segment squashing. */
	curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, c->opts.connect_timeout_ms);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->opts.timeout_ms);
	if (c->opts.low_speed_secs > 0) {
		curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, c->opts.low_speed_secs);
	}
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body_status);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &bc);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	/* The Accept-Encoding we send is our own business; never decode. */
	curl_easy_setopt(curl, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	if (c->opts.ca_file)
		curl_easy_setopt(curl, CURLOPT_CAINFO, c->opts.ca_file);

	if (strcmp(req->method, "HEAD") == 0) {
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
	} else if (strcmp(req->method, "GET") != 0) {
		if (has_body) {
			curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(curl, CURLOPT_READDATA, &t);
			curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
		}
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
	}

	rc = curl_easy_perform(curl);
	if (rc != CURLE_OK) {
		err = map_curl_error(rc, &t, errbuf, info);
		if (info)
			info->http_status = 0;
		log_debug("http: %s %s failed: %s", req->method, req->url,
			  info ? info->message : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
	if (info)
		info->http_status = resp->status;
out:
	buf_done(&line);
	curl_slist_free_all(hdrs);
	return err;
}
