/* SPDX-License-Identifier: Apache-2.0 */
/*
 * s3.c: S3 REST calls on top of aws_send(): request paths and queries,
 * Content-MD5 (and, for file bodies, a payload SHA-256 computed in the
 * same single read of the range), response headers and XML bodies.
 * Invariants: no call keeps state between calls (the caller owns part
 * tables and upload ids); a file body is only ever held one chunk at a
 * time; ret_* outputs are written only when the call succeeds. The only
 * threads are s3_upload_file()'s part uploaders, joined before it returns.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "log.h"
#include "s3.h"
#include "util.h"
#include "xml.h"

/* Size of one pread() while hashing a file range: memory use per call. */
#define S3_READ_CHUNK ((size_t)256 << 10)
/* Attempts at CompleteMultipartUpload when a 200 carries a retryable error. */
#define S3_COMPLETE_ATTEMPTS 4
/* Attempts at a download whose written length disagrees with Content-Length. */
#define S3_DOWNLOAD_ATTEMPTS 3
#define S3_META_PREFIX "x-amz-meta-"
#define S3_META_NAME_MAX 100
/* Longest bucket name (legacy us-east-1 names could reach 255). */
#define S3_BUCKET_MAX 255

/* ------------------------------------------------------------ validation */

static int bucket_name_ok(const char *bucket)
{
	size_t len;

	if (!bucket)
		return 0;
	len = strlen(bucket);
	if (len == 0 || len > S3_BUCKET_MAX)
		return 0;
	for (const char *p = bucket; *p; p++) {
		char ch = *p;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
			return 0;
	}
	return 1;
}

/* A header value we are willing to send: no control characters (so no
 * CR/LF header injection), printable ASCII or UTF-8 bytes. */
static int header_value_ok(const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
			return 0;
	return 1;
}

/* An HTTP token (RFC 9110) of at most S3_META_NAME_MAX characters. */
static int meta_name_ok(const char *name)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";
	size_t len = strlen(name);

	if (len == 0 || len > S3_META_NAME_MAX)
		return 0;
	for (const char *p = name; *p; p++) {
		char ch = *p;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || strchr(extra, ch)))
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------ paths, queries */

enum kl_err s3_build_path(struct buf *out, int virtual_host, const char *bucket,
			  const char *key)
{
	enum kl_err err = KL_OK;
	size_t start = out->len;

	if (!bucket_name_ok(bucket))
		return KL_EINVAL;
	if (key) {
		size_t klen = strlen(key);
		if (klen == 0 || klen > S3_MAX_KEY_LEN)
			return KL_EINVAL;
		/* Dot segments would be collapsed by URL normalisation on the
		 * way (curl does it), changing the key. kinlake's keys never
		 * need them, so refuse rather than send another key. */
		for (const char *seg = key;;) {
			size_t sl = strcspn(seg, "/");
			if ((sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.'))
				return KL_EINVAL;
			if (!seg[sl])
				break;
			seg += sl + 1;
		}
	}
	if (!virtual_host) {
		err = buf_append_byte(out, '/');
		if (!err)
			err = http_uri_encode(out, bucket, strlen(bucket), 0);
	}
	if (!err && (key || virtual_host))
		err = buf_append_byte(out, '/');
	if (!err && key)
		err = http_uri_encode(out, key, strlen(key), 1);
	if (err) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return err;
}

enum kl_err s3_query_add(struct buf *out, const char *name, const char *value)
{
	enum kl_err err = KL_OK;

	if (out->len > 0)
		err = buf_append_byte(out, '&');
	if (!err)
		err = http_uri_encode(out, name, strlen(name), 0);
	if (!err)
		err = buf_append_byte(out, '=');
	if (!err && value)
		err = http_uri_encode(out, value, strlen(value), 0);
	return err;
}

enum kl_err s3_build_list_query(struct buf *out, const struct s3_list_opts *opts)
{
	static const struct s3_list_opts none = { 0 };
	char max_keys[16];
	enum kl_err err = KL_OK;

	if (!opts)
		opts = &none;
	if (opts->max_keys < 0)
		return KL_EINVAL;
	snprintf(max_keys, sizeof(max_keys), "%d", opts->max_keys);
	/* Sorted by name, as the canonical request will have them anyway. */
	if (opts->continuation_token)
		err = s3_query_add(out, "continuation-token", opts->continuation_token);
	if (!err && opts->delimiter)
		err = s3_query_add(out, "delimiter", opts->delimiter);
	/* Keys that XML 1.0 cannot carry (control characters) come back
	 * percent-encoded; s3rver ignores this and sends keys raw. */
	if (!err)
		err = s3_query_add(out, "encoding-type", "url");
	if (!err)
		err = s3_query_add(out, "list-type", "2");
	if (!err && opts->max_keys > 0)
		err = s3_query_add(out, "max-keys", max_keys);
	if (!err && opts->prefix)
		err = s3_query_add(out, "prefix", opts->prefix);
	if (!err && opts->start_after)
		err = s3_query_add(out, "start-after", opts->start_after);
	return err;
}

/* ------------------------------------------------------------ digests */

enum kl_err s3_content_md5(const void *data, size_t len, char *ret_md5)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned md_len = 0;

	if (!EVP_Digest(len ? data : "", len, md, &md_len, EVP_md5(), NULL) || md_len != 16)
		return KL_ENOMEM;
	kl_b64_encode(md, md_len, ret_md5);
	return KL_OK;
}

enum kl_err s3_hash_file_range(int fd, uint64_t offset, uint64_t len, char *ret_md5,
			       char *ret_sha256_hex, struct kl_errinfo *info)
{
	EVP_MD_CTX *md5 = EVP_MD_CTX_new();
	EVP_MD_CTX *sha = ret_sha256_hex ? EVP_MD_CTX_new() : NULL;
	uint8_t *chunk = malloc(S3_READ_CHUNK);
	uint8_t md5_bin[EVP_MAX_MD_SIZE], sha_bin[EVP_MAX_MD_SIZE];
	unsigned md5_len = 0, sha_len = 0;
	uint64_t done = 0;
	enum kl_err err = KL_OK;

	if (!md5 || !chunk || (ret_sha256_hex && !sha)) {
		err = kl_errinfo_set(info, KL_ENOMEM, "s3: cannot set up digests");
		goto out;
	}
	if (!EVP_DigestInit_ex(md5, EVP_md5(), NULL) ||
	    (sha && !EVP_DigestInit_ex(sha, EVP_sha256(), NULL))) {
		/* e.g. a FIPS-only OpenSSL without MD5 */
		err = kl_errinfo_set(info, KL_ECONFIG, "s3: OpenSSL refuses MD5 or SHA-256");
		goto out;
	}
	while (done < len) {
		size_t want = len - done < S3_READ_CHUNK ? (size_t)(len - done) : S3_READ_CHUNK;
		ssize_t n = pread(fd, chunk, want, (off_t)(offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (info)
				info->sys_errno = errno;
			err = kl_errinfo_set(info, KL_EIO, "s3: reading body at offset %" PRIu64 ": %s",
					     offset + done, strerror(errno));
			goto out;
		}
		if (n == 0) {
			err = kl_errinfo_set(info, KL_EIO,
					     "s3: body file ends at offset %" PRIu64
					     ", before the end of the range (%" PRIu64 ")",
					     offset + done, offset + len);
			goto out;
		}
		if (!EVP_DigestUpdate(md5, chunk, (size_t)n) ||
		    (sha && !EVP_DigestUpdate(sha, chunk, (size_t)n))) {
			err = kl_errinfo_set(info, KL_ENOMEM, "s3: digest update failed");
			goto out;
		}
		done += (uint64_t)n;
	}
	if (!EVP_DigestFinal_ex(md5, md5_bin, &md5_len) || md5_len != 16 ||
	    (sha && (!EVP_DigestFinal_ex(sha, sha_bin, &sha_len) || sha_len != 32))) {
		err = kl_errinfo_set(info, KL_ENOMEM, "s3: digest final failed");
		goto out;
	}
	kl_b64_encode(md5_bin, md5_len, ret_md5);
	if (sha)
		kl_hex(sha_bin, sha_len, ret_sha256_hex);
out:
	free(chunk);
	EVP_MD_CTX_free(md5);
	EVP_MD_CTX_free(sha);
	return err;
}

/* ------------------------------------------------------------ requests */

/* The request headers of one call; names of metadata headers live here. */
struct s3_headers {
	struct http_header h[4 + S3_MAX_METADATA];
	size_t n;
	char meta_names[S3_MAX_METADATA][sizeof(S3_META_PREFIX) + S3_META_NAME_MAX];
	char content_md5[S3_MD5_B64_LEN];
};

static void headers_add(struct s3_headers *hs, const char *name, const char *value)
{
	/* Callers never add more than the array holds: 4 fixed + metadata
	 * (Content-Type, Content-Encoding, x-amz-storage-class, Content-MD5). */
	hs->h[hs->n++] = (struct http_header){ name, value };
}

/* Adds Content-Type, Content-Encoding, x-amz-storage-class and
 * x-amz-meta-* from opts. */
static enum kl_err headers_put_opts(struct s3_headers *hs, const struct s3_put_opts *opts,
				    struct kl_errinfo *info)
{
	if (!opts)
		return KL_OK;
	if (opts->content_type) {
		if (!*opts->content_type || !header_value_ok(opts->content_type))
			return kl_errinfo_set(info, KL_EINVAL, "s3: bad Content-Type");
		headers_add(hs, "Content-Type", opts->content_type);
	}
	if (opts->content_encoding) {
		if (!*opts->content_encoding || !header_value_ok(opts->content_encoding))
			return kl_errinfo_set(info, KL_EINVAL, "s3: bad Content-Encoding");
		headers_add(hs, "Content-Encoding", opts->content_encoding);
	}
	if (opts->storage_class) {
		if (!*opts->storage_class || !header_value_ok(opts->storage_class))
			return kl_errinfo_set(info, KL_EINVAL, "s3: bad storage class");
		headers_add(hs, "x-amz-storage-class", opts->storage_class);
	}
	if (opts->n_metadata > S3_MAX_METADATA)
		return kl_errinfo_set(info, KL_EINVAL, "s3: more than %d metadata entries",
				      S3_MAX_METADATA);
	for (size_t i = 0; i < opts->n_metadata; i++) {
		const struct http_header *m = &opts->metadata[i];
		if (!m->name || !meta_name_ok(m->name) || !m->value || !header_value_ok(m->value))
			return kl_errinfo_set(info, KL_EINVAL, "s3: bad metadata entry %zu", i);
		snprintf(hs->meta_names[i], sizeof(hs->meta_names[i]), "%s%s", S3_META_PREFIX,
			 m->name);
		headers_add(hs, hs->meta_names[i], m->value);
	}
	return KL_OK;
}

/* One S3 call, before addressing is applied. All borrowed. */
struct s3_call {
	const char *op;                   /* for messages: "PutObject" */
	const char *method;
	const char *bucket;
	const char *key;                  /* NULL for bucket-level calls */
	const char *query;                /* NULL = none */
	const struct s3_headers *headers; /* NULL = none */
	const void *body;
	size_t body_len;
	int body_fd;
	uint64_t body_offset;
	const char *payload_hash;         /* NULL = aws_send's default */
	int download_fd;
};

static void call_init(struct s3_call *call, const char *op, const char *method,
		      const char *bucket, const char *key)
{
	memset(call, 0, sizeof(*call));
	call->op = op;
	call->method = method;
	call->bucket = bucket;
	call->key = key;
	call->body_fd = -1;
	call->download_fd = -1;
}

/*
 * Addresses, signs and sends call. resp is the caller's (initialised with
 * http_response_init(), released by the caller with http_response_done()
 * whatever this returns).
 */
static enum kl_err s3_send(struct aws_client *c, const struct s3_call *call,
			   struct http_response *resp, struct kl_errinfo *info)
{
	char host_prefix[S3_BUCKET_MAX + 2];
	struct aws_request req;
	struct buf path;
	enum kl_err err;

	buf_init(&path, 4 * S3_MAX_KEY_LEN + S3_BUCKET_MAX + 8);
	err = s3_build_path(&path, c->s3_virtual_host, call->bucket, call->key);
	if (err) {
		buf_done(&path);
		return kl_errinfo_set(info, KL_EINVAL, "s3: %s: bad bucket or key", call->op);
	}
	aws_request_init(&req);
	req.method = call->method;
	req.path = path.data;
	req.query = call->query;
	if (c->s3_virtual_host) {
		snprintf(host_prefix, sizeof(host_prefix), "%s.", call->bucket);
		req.host_prefix = host_prefix;
	}
	if (call->headers) {
		req.headers = call->headers->h;
		req.n_headers = call->headers->n;
	}
	req.body = call->body;
	req.body_len = call->body_len;
	req.body_fd = call->body_fd;
	req.body_offset = call->body_offset;
	req.payload_hash = call->payload_hash;
	req.download_fd = call->download_fd;
	req.s3 = 1;
	err = aws_send(c, &req, resp, info);
	if (err)
		log_debug("s3: %s %s/%s failed: %s %s", call->op, call->bucket,
			  call->key ? call->key : "", kl_strerror(err),
			  info ? info->aws_code : "");
	buf_done(&path);
	return err;
}

static void copy_etag(char *dst, const char *src)
{
	snprintf(dst, S3_ETAG_MAX, "%s", src ? src : "");
}

/* ------------------------------------------------------------ objects */

enum kl_err s3_put_object(struct aws_client *c, const char *bucket, const char *key,
			  const void *data, size_t len, const struct s3_put_opts *opts,
			  struct s3_put_result *ret_result, struct kl_errinfo *info)
{
	struct s3_headers hs = { .n = 0 };
	struct http_response resp;
	struct s3_call call;
	enum kl_err err;

	err = headers_put_opts(&hs, opts, info);
	if (err)
		return err;
	err = s3_content_md5(data, len, hs.content_md5);
	if (err)
		return kl_errinfo_set(info, err, "s3: cannot compute Content-MD5");
	headers_add(&hs, "Content-MD5", hs.content_md5);

	call_init(&call, "PutObject", "PUT", bucket, key);
	call.headers = &hs;
	call.body = len ? data : "";
	call.body_len = len;
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (!err) {
		memset(ret_result, 0, sizeof(*ret_result));
		copy_etag(ret_result->etag, http_response_header(&resp, "etag"));
		memcpy(ret_result->content_md5, hs.content_md5, S3_MD5_B64_LEN);
	}
	http_response_done(&resp);
	return err;
}

enum kl_err s3_put_object_file(struct aws_client *c, const char *bucket, const char *key,
			       int fd, uint64_t offset, uint64_t len,
			       const struct s3_put_opts *opts,
			       struct s3_put_result *ret_result, struct kl_errinfo *info)
{
	struct s3_headers hs = { .n = 0 };
	char sha[65];
	int sign = !(opts && opts->unsigned_payload);
	struct http_response resp;
	struct s3_call call;
	enum kl_err err;

	if (fd < 0)
		return kl_errinfo_set(info, KL_EINVAL, "s3: PutObject: no body file");
	if (len > S3_MAX_PART_SIZE || len > SIZE_MAX)
		return kl_errinfo_set(info, KL_EINVAL,
				      "s3: PutObject of %" PRIu64 " bytes is over the 5 GiB limit", len);
	err = headers_put_opts(&hs, opts, info);
	if (err)
		return err;
	err = s3_hash_file_range(fd, offset, len, hs.content_md5, sign ? sha : NULL, info);
	if (err)
		return err;
	headers_add(&hs, "Content-MD5", hs.content_md5);

	call_init(&call, "PutObject", "PUT", bucket, key);
	call.headers = &hs;
	call.body_fd = fd;
	call.body_offset = offset;
	call.body_len = (size_t)len;
	call.payload_hash = sign ? sha : SIGV4_UNSIGNED_PAYLOAD;
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (!err) {
		memset(ret_result, 0, sizeof(*ret_result));
		copy_etag(ret_result->etag, http_response_header(&resp, "etag"));
		memcpy(ret_result->content_md5, hs.content_md5, S3_MD5_B64_LEN);
	}
	http_response_done(&resp);
	return err;
}

enum kl_err s3_delete_object(struct aws_client *c, const char *bucket, const char *key,
			     struct kl_errinfo *info)
{
	struct http_response resp;
	struct s3_call call;
	enum kl_err err;

	call_init(&call, "DeleteObject", "DELETE", bucket, key);
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	http_response_done(&resp);
	return err;
}

void s3_object_info_done(struct s3_object_info *obj)
{
	if (!obj)
		return;
	free(obj->content_type);
	free(obj->content_encoding);
	free(obj->last_modified);
	for (size_t i = 0; i < obj->n_metadata; i++) {
		free(obj->metadata[i].name);
		free(obj->metadata[i].value);
	}
	free(obj->metadata);
	memset(obj, 0, sizeof(*obj));
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*ret = (uint64_t)v;
	return 0;
}

static enum kl_err dup_header(const struct http_response *resp, const char *name, char **ret)
{
	const char *v = http_response_header(resp, name);

	*ret = NULL;
	if (!v)
		return KL_OK;
	*ret = strdup(v);
	return *ret ? KL_OK : KL_ENOMEM;
}

/* Fills a zeroed obj from the headers of a HEAD or GET response. */
static enum kl_err parse_object_headers(const struct http_response *resp,
					struct s3_object_info *obj, struct kl_errinfo *info)
{
	const size_t plen = strlen(S3_META_PREFIX);
	const char *cl = http_response_header(resp, "content-length");
	size_t n_meta = 0;

	if (cl && parse_u64(cl, &obj->size) != 0)
		return kl_errinfo_set(info, KL_EPARSE, "s3: bad Content-Length '%.40s'", cl);
	copy_etag(obj->etag, http_response_header(resp, "etag"));
	if (dup_header(resp, "content-type", &obj->content_type) ||
	    dup_header(resp, "content-encoding", &obj->content_encoding) ||
	    dup_header(resp, "last-modified", &obj->last_modified))
		return KL_ENOMEM;
	for (size_t i = 0; i < resp->n_headers; i++)
		if (strncmp(resp->headers[i].name, S3_META_PREFIX, plen) == 0)
			n_meta++;
	if (n_meta == 0)
		return KL_OK;
	obj->metadata = calloc(n_meta, sizeof(*obj->metadata));
	if (!obj->metadata)
		return KL_ENOMEM;
	for (size_t i = 0; i < resp->n_headers; i++) {
		if (strncmp(resp->headers[i].name, S3_META_PREFIX, plen) != 0)
			continue;
		struct s3_meta *m = &obj->metadata[obj->n_metadata++];
		m->name = strdup(resp->headers[i].name + plen);
		m->value = strdup(resp->headers[i].value);
		if (!m->name || !m->value)
			return KL_ENOMEM;
	}
	return KL_OK;
}

enum kl_err s3_head_object(struct aws_client *c, const char *bucket, const char *key,
			   struct s3_object_info *ret_obj, struct kl_errinfo *info)
{
	struct s3_object_info obj = { 0 };
	struct http_response resp;
	struct s3_call call;
	enum kl_err err;

	call_init(&call, "HeadObject", "HEAD", bucket, key);
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (!err)
		err = parse_object_headers(&resp, &obj, info);
	http_response_done(&resp);
	if (err) {
		s3_object_info_done(&obj);
		return err;
	}
	*ret_obj = obj;
	return KL_OK;
}

enum kl_err s3_get_object(struct aws_client *c, const char *bucket, const char *key,
			  size_t max_bytes, char **ret_data, size_t *ret_len,
			  struct s3_object_info *ret_obj, struct kl_errinfo *info)
{
	struct s3_object_info obj = { 0 };
	struct http_response resp;
	struct s3_call call;
	size_t len = 0;
	char *data = NULL;
	enum kl_err err;

	call_init(&call, "GetObject", "GET", bucket, key);
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (!err && resp.body.len > max_bytes)
		err = kl_errinfo_set(info, KL_ENOMEM, "s3: object %s/%s is %zu bytes, over the %zu cap",
				     bucket, key, resp.body.len, max_bytes);
	if (!err && ret_obj)
		err = parse_object_headers(&resp, &obj, info);
	if (!err) {
		len = resp.body.len;
		obj.size = len;
		data = buf_steal(&resp.body);
		if (!data)
			err = KL_ENOMEM;
	}
	http_response_done(&resp);
	if (err) {
		s3_object_info_done(&obj);
		return err;
	}
	*ret_data = data;
	*ret_len = len;
	if (ret_obj)
		*ret_obj = obj;
	return KL_OK;
}

/* Puts a regular file back to start (offset and length) after a failure. */
static void rewind_download(int fd, off_t start)
{
	if (ftruncate(fd, start) != 0 || lseek(fd, start, SEEK_SET) < 0)
		log_debug("s3: cannot rewind download file: %s", strerror(errno));
}

enum kl_err s3_get_object_to_fd(struct aws_client *c, const char *bucket, const char *key,
				int fd, struct s3_object_info *ret_obj, struct kl_errinfo *info)
{
	struct s3_object_info obj = { 0 };
	struct http_response resp;
	struct s3_call call;
	struct stat st;
	off_t start = -1;
	enum kl_err err = KL_OK;

	if (fd < 0)
		return kl_errinfo_set(info, KL_EINVAL, "s3: GetObject: no target file");
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		start = lseek(fd, 0, SEEK_CUR);
	call_init(&call, "GetObject", "GET", bucket, key);
	call.download_fd = fd;
	http_response_init(&resp);
	for (int attempt = 1; attempt <= S3_DOWNLOAD_ATTEMPTS; attempt++) {
		s3_object_info_done(&obj);
		err = s3_send(c, &call, &resp, info);
		if (!err)
			err = parse_object_headers(&resp, &obj, info);
		if (err || start < 0 || !http_response_header(&resp, "content-length"))
			break;
		/*
		 * aws_send() retries a transfer that broke mid-body, and each
		 * try writes from where the last one stopped: a mismatch here
		 * means the file holds a broken prefix plus a full body.
		 */
		off_t end = lseek(fd, 0, SEEK_CUR);
		if (end >= start && (uint64_t)(end - start) == obj.size)
			break;
		err = kl_errinfo_set(info, KL_ECONNECT,
				     "s3: GetObject %s/%s wrote %lld bytes, Content-Length is %" PRIu64,
				     bucket, key, (long long)(end - start), obj.size);
		log_debug("%s, downloading again", info ? info->message : "s3: short download");
		rewind_download(fd, start);
	}
	http_response_done(&resp);
	if (err) {
		if (start >= 0)
			rewind_download(fd, start);
		s3_object_info_done(&obj);
		return err;
	}
	if (ret_obj)
		*ret_obj = obj;
	else
		s3_object_info_done(&obj);
	return KL_OK;
}

/* ------------------------------------------------------------ listing */

void s3_list_result_done(struct s3_list_result *res)
{
	if (!res)
		return;
	for (size_t i = 0; i < res->n_entries; i++)
		free(res->entries[i].key);
	free(res->entries);
	for (size_t i = 0; i < res->n_common_prefixes; i++)
		free(res->common_prefixes[i]);
	free(res->common_prefixes);
	free(res->next_continuation_token);
	memset(res, 0, sizeof(*res));
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes an encoding-type=url value in place: %XX, and '+' is a space
 * (S3 form-encodes, as its SDKs' unquote_plus expects). */
static enum kl_err url_decode_inplace(char *s)
{
	char *w = s;

	for (const char *r = s; *r; r++) {
		if (*r == '+') {
			*w++ = ' ';
		} else if (*r == '%') {
			int hi = hexval(r[1]), lo = hi >= 0 ? hexval(r[2]) : -1;
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return KL_EPARSE;
			*w++ = (char)(hi << 4 | lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return KL_OK;
}

/* xml text of name in s, or KL_OK with *ret NULL when absent. */
static enum kl_err slice_text_opt(struct xml_slice s, const char *name, char **ret)
{
	enum kl_err err = xml_slice_text(s, name, ret);

	if (err == KL_ENOTFOUND) {
		*ret = NULL;
		return KL_OK;
	}
	return err;
}

/* Grows *arr (of elem bytes each) to hold at least n + 1 entries. */
static enum kl_err grow(void **arr, size_t *alloc, size_t n, size_t elem)
{
	if (n < *alloc)
		return KL_OK;
	size_t na = *alloc ? *alloc * 2 : 16;
	void *p = realloc(*arr, na * elem);
	if (!p)
		return KL_ENOMEM;
	memset((char *)p + *alloc * elem, 0, (na - *alloc) * elem);
	*arr = p;
	*alloc = na;
	return KL_OK;
}

static enum kl_err parse_entry(struct xml_slice contents, int url_encoded,
			       struct s3_list_entry *e)
{
	char *t = NULL;
	enum kl_err err;

	err = xml_slice_text(contents, "Key", &e->key);
	if (err)
		return err == KL_ENOTFOUND ? KL_EPARSE : err;
	if (url_encoded && url_decode_inplace(e->key))
		return KL_EPARSE;
	err = slice_text_opt(contents, "Size", &t);
	if (!err && t && parse_u64(t, &e->size) != 0)
		err = KL_EPARSE;
	free(t);
	t = NULL;
	if (!err)
		err = slice_text_opt(contents, "ETag", &t);
	if (!err && t)
		copy_etag(e->etag, t);
	free(t);
	t = NULL;
	if (!err)
		err = slice_text_opt(contents, "LastModified", &t);
	if (!err && t)
		snprintf(e->last_modified, sizeof(e->last_modified), "%s", t);
	free(t);
	return err;
}

enum kl_err s3_parse_list_result(const char *xml, size_t len, struct s3_list_result *ret_res)
{
	struct s3_list_result r = { 0 };
	size_t entries_alloc = 0, prefixes_alloc = 0, pos = 0;
	struct xml_slice root, item;
	char *t = NULL;
	int url_encoded = 0;
	enum kl_err err;

	if (!xml_next(xml, len, "ListBucketResult", &pos, &root))
		return KL_EPARSE;
	err = slice_text_opt(root, "EncodingType", &t);
	if (err)
		return err;
	url_encoded = t && strcmp(t, "url") == 0;
	free(t);
	err = slice_text_opt(root, "IsTruncated", &t);
	if (err)
		return err;
	r.is_truncated = t && strcmp(t, "true") == 0;
	free(t);
	if (r.is_truncated) {
		err = slice_text_opt(root, "NextContinuationToken", &r.next_continuation_token);
		if (!err && (!r.next_continuation_token || !*r.next_continuation_token))
			err = KL_EPARSE;   /* a truncated page we could not continue */
		if (err)
			goto fail;
	}

	pos = 0;
	while (xml_next(root.p, root.len, "Contents", &pos, &item)) {
		err = grow((void **)&r.entries, &entries_alloc, r.n_entries, sizeof(*r.entries));
		if (err)
			goto fail;
		/* Counted first so that a half-parsed entry is freed too. */
		err = parse_entry(item, url_encoded, &r.entries[r.n_entries++]);
		if (err)
			goto fail;
	}
	pos = 0;
	while (xml_next(root.p, root.len, "CommonPrefixes", &pos, &item)) {
		err = grow((void **)&r.common_prefixes, &prefixes_alloc, r.n_common_prefixes,
			   sizeof(*r.common_prefixes));
		if (err)
			goto fail;
		err = xml_slice_text(item, "Prefix", &r.common_prefixes[r.n_common_prefixes]);
		if (err) {
			err = err == KL_ENOTFOUND ? KL_EPARSE : err;
			goto fail;
		}
		if (url_encoded && url_decode_inplace(r.common_prefixes[r.n_common_prefixes])) {
			r.n_common_prefixes++;
			err = KL_EPARSE;
			goto fail;
		}
		r.n_common_prefixes++;
	}
	*ret_res = r;
	return KL_OK;
fail:
	s3_list_result_done(&r);
	return err;
}

enum kl_err s3_list_objects_v2(struct aws_client *c, const char *bucket,
			       const struct s3_list_opts *opts, struct s3_list_result *ret_res,
			       struct kl_errinfo *info)
{
	struct http_response resp;
	struct s3_call call;
	struct buf query;
	enum kl_err err;

	buf_init(&query, 8192);
	err = s3_build_list_query(&query, opts);
	if (err) {
		buf_done(&query);
		return kl_errinfo_set(info, KL_EINVAL, "s3: ListObjectsV2: bad parameters");
	}
	call_init(&call, "ListObjectsV2", "GET", bucket, NULL);
	call.query = query.data;
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (!err) {
		err = s3_parse_list_result(resp.body.data, resp.body.len, ret_res);
		if (err == KL_EPARSE)
			kl_errinfo_set(info, err, "s3: ListObjectsV2 response is not a listing");
	}
	http_response_done(&resp);
	buf_done(&query);
	return err;
}

/* ------------------------------------------------------------ buckets */

enum kl_err s3_create_bucket(struct aws_client *c, const char *bucket,
			     struct kl_errinfo *info)
{
	struct s3_headers hs = { .n = 0 };
	struct http_response resp;
	struct s3_call call;
	struct buf body;
	enum kl_err err = KL_OK;

	buf_init(&body, 1024);
	call_init(&call, "CreateBucket", "PUT", bucket, NULL);
	/* us-east-1 is the default location and must not be named. */
	if (strcmp(c->region, "us-east-1") != 0) {
		err = buf_append_str(&body, "<CreateBucketConfiguration xmlns=\""
				     "http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>");
		if (!err)
			err = xml_escape(&body, c->region);
		if (!err)
			err = buf_append_str(&body, "</LocationConstraint></CreateBucketConfiguration>");
		if (!err)
			err = s3_content_md5(body.data, body.len, hs.content_md5);
		if (err) {
			buf_done(&body);
			return kl_errinfo_set(info, err, "s3: CreateBucket: cannot build body");
		}
		headers_add(&hs, "Content-Type", "application/xml");
		headers_add(&hs, "Content-MD5", hs.content_md5);
		call.headers = &hs;
		call.body = body.data;
		call.body_len = body.len;
	}
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (err == KL_EEXISTS && info && strcmp(info->aws_code, "BucketAlreadyOwnedByYou") == 0)
		err = KL_OK;
	http_response_done(&resp);
	buf_done(&body);
	return err;
}

/* ------------------------------------------------------------ multipart */

static enum kl_err upload_id_query(struct buf *q, const char *upload_id)
{
	if (!upload_id || !*upload_id)
		return KL_EINVAL;
	return s3_query_add(q, "uploadId", upload_id);
}

enum kl_err s3_parse_initiate_result(const char *xml, size_t len, char **ret_upload_id)
{
	struct xml_slice root;
	size_t pos = 0;
	char *id = NULL;
	enum kl_err err;

	if (!xml_next(xml, len, "InitiateMultipartUploadResult", &pos, &root))
		return KL_EPARSE;
	err = xml_slice_text(root, "UploadId", &id);
	if (err)
		return err == KL_ENOTFOUND ? KL_EPARSE : err;
	if (!*id) {
		free(id);
		return KL_EPARSE;
	}
	*ret_upload_id = id;
	return KL_OK;
}

enum kl_err s3_create_multipart(struct aws_client *c, const char *bucket, const char *key,
				const struct s3_put_opts *opts, char **ret_upload_id,
				struct kl_errinfo *info)
{
	struct s3_headers hs = { .n = 0 };
	struct http_response resp;
	struct s3_call call;
	char *id = NULL;
	enum kl_err err;

	err = headers_put_opts(&hs, opts, info);
	if (err)
		return err;
	call_init(&call, "CreateMultipartUpload", "POST", bucket, key);
	call.headers = &hs;
	call.query = "uploads=";
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (!err) {
		err = s3_parse_initiate_result(resp.body.data, resp.body.len, &id);
		if (err == KL_EPARSE)
			kl_errinfo_set(info, err, "s3: CreateMultipartUpload response has no UploadId");
	}
	http_response_done(&resp);
	if (!err)
		*ret_upload_id = id;
	return err;
}

enum kl_err s3_upload_part(struct aws_client *c, const char *bucket, const char *key,
			   const char *upload_id, int part_number, int fd, uint64_t offset,
			   uint64_t len, const struct s3_put_opts *opts,
			   struct s3_part *ret_part, struct kl_errinfo *info)
{
	struct s3_headers hs = { .n = 0 };
	char sha[65], num[16];
	int sign = !(opts && opts->unsigned_payload);
	struct http_response resp;
	struct s3_call call;
	struct buf query;
	const char *etag;
	enum kl_err err;

	if (part_number < 1 || part_number > S3_MAX_PARTS || fd < 0 || len > S3_MAX_PART_SIZE ||
	    len > SIZE_MAX)
		return kl_errinfo_set(info, KL_EINVAL, "s3: UploadPart: bad part %d", part_number);
	buf_init(&query, 4096);
	snprintf(num, sizeof(num), "%d", part_number);
	err = s3_query_add(&query, "partNumber", num);
	if (!err)
		err = upload_id_query(&query, upload_id);
	if (err) {
		buf_done(&query);
		return kl_errinfo_set(info, KL_EINVAL, "s3: UploadPart: bad upload id");
	}
	err = s3_hash_file_range(fd, offset, len, hs.content_md5, sign ? sha : NULL, info);
	if (err) {
		buf_done(&query);
		return err;
	}
	headers_add(&hs, "Content-MD5", hs.content_md5);

	call_init(&call, "UploadPart", "PUT", bucket, key);
	call.query = query.data;
	call.headers = &hs;
	call.body_fd = fd;
	call.body_offset = offset;
	call.body_len = (size_t)len;
	call.payload_hash = sign ? sha : SIGV4_UNSIGNED_PAYLOAD;
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (!err) {
		etag = http_response_header(&resp, "etag");
		if (!etag || !*etag || strlen(etag) >= S3_ETAG_MAX) {
			err = kl_errinfo_set(info, KL_EPARSE, "s3: UploadPart %d: no usable ETag",
					     part_number);
		} else {
			ret_part->number = part_number;
			copy_etag(ret_part->etag, etag);
		}
	}
	http_response_done(&resp);
	buf_done(&query);
	return err;
}

static enum kl_err check_parts(const struct s3_part *parts, size_t n_parts)
{
	if (n_parts == 0 || n_parts > S3_MAX_PARTS)
		return KL_EINVAL;
	for (size_t i = 0; i < n_parts; i++) {
		if (parts[i].number < 1 || parts[i].number > S3_MAX_PARTS)
			return KL_EINVAL;
		if (i > 0 && parts[i].number <= parts[i - 1].number)
			return KL_EINVAL;
		if (!parts[i].etag[0] || !memchr(parts[i].etag, '\0', S3_ETAG_MAX))
			return KL_EINVAL;
	}
	return KL_OK;
}

enum kl_err s3_build_complete_body(struct buf *out, const struct s3_part *parts,
				   size_t n_parts)
{
	enum kl_err err = check_parts(parts, n_parts);

	if (!err)
		err = buf_append_str(out, "<CompleteMultipartUpload xmlns=\""
				     "http://s3.amazonaws.com/doc/2006-03-01/\">");
	for (size_t i = 0; i < n_parts && !err; i++) {
		err = buf_printf(out, "<Part><PartNumber>%d</PartNumber><ETag>", parts[i].number);
		if (!err)
			err = xml_escape(out, parts[i].etag);
		if (!err)
			err = buf_append_str(out, "</ETag></Part>");
	}
	if (!err)
		err = buf_append_str(out, "</CompleteMultipartUpload>");
	return err;
}

/* Copies the text of name in s into dst (size bytes) if present. */
static void slice_copy(struct xml_slice s, const char *name, char *dst, size_t size)
{
	char *t = NULL;

	if (xml_slice_text(s, name, &t) == KL_OK) {
		snprintf(dst, size, "%s", t);
		free(t);
	}
}

enum kl_err s3_parse_complete_result(const char *xml, size_t len, char *ret_etag,
				     struct kl_errinfo *info)
{
	struct xml_slice root;
	size_t pos = 0;
	char code[sizeof(info->aws_code)] = "";

	/* AWS and s3rver name the root ...Result, moto ...Response. */
	if (xml && (xml_next(xml, len, "CompleteMultipartUploadResult", &pos, &root) ||
		    (pos = 0, xml_next(xml, len, "CompleteMultipartUploadResponse", &pos, &root)))) {
		char etag[S3_ETAG_MAX] = "";
		slice_copy(root, "ETag", etag, sizeof(etag));
		memcpy(ret_etag, etag, S3_ETAG_MAX);
		return KL_OK;
	}
	pos = 0;
	if (xml && xml_next(xml, len, "Error", &pos, &root)) {
		/* S3 sends 200 and then this when it fails after the headers. */
		slice_copy(root, "Code", code, sizeof(code));
		if (info) {
			snprintf(info->aws_code, sizeof(info->aws_code), "%s", code);
			slice_copy(root, "Message", info->message, sizeof(info->message));
			slice_copy(root, "RequestId", info->request_id, sizeof(info->request_id));
		}
		/* 400, not 200: the status must not turn the code into success,
		 * and an unknown code must not look retryable. */
		return aws_classify(400, code[0] ? code : "InternalError");
	}
	return kl_errinfo_set(info, KL_EPARSE, "s3: CompleteMultipartUpload response not understood");
}

enum kl_err s3_complete_multipart(struct aws_client *c, const char *bucket, const char *key,
				  const char *upload_id, const struct s3_part *parts,
				  size_t n_parts, struct s3_put_result *ret_result,
				  struct kl_errinfo *info)
{
	struct s3_headers hs = { .n = 0 };
	char etag[S3_ETAG_MAX] = "";
	struct http_response resp;
	struct s3_call call;
	struct buf query, body;
	enum kl_err err;

	buf_init(&query, 4096);
	/* 10000 parts of ~180 bytes each fit easily. */
	buf_init(&body, (size_t)4 << 20);
	err = upload_id_query(&query, upload_id);
	if (!err)
		err = s3_build_complete_body(&body, parts, n_parts);
	if (!err)
		err = s3_content_md5(body.data, body.len, hs.content_md5);
	if (err) {
		buf_done(&query);
		buf_done(&body);
		return kl_errinfo_set(info, KL_EINVAL,
				      "s3: CompleteMultipartUpload: bad upload id or part list");
	}
	headers_add(&hs, "Content-Type", "application/xml");
	headers_add(&hs, "Content-MD5", hs.content_md5);
	call_init(&call, "CompleteMultipartUpload", "POST", bucket, key);
	call.query = query.data;
	call.headers = &hs;
	call.body = body.data;
	call.body_len = body.len;

	http_response_init(&resp);
	for (int attempt = 1;; attempt++) {
		err = s3_send(c, &call, &resp, info);
		if (err)
			break;
		err = s3_parse_complete_result(resp.body.data, resp.body.len, etag, info);
		if (info)
			info->http_status = resp.status;
		if (!err || !kl_err_retryable(err) || attempt >= S3_COMPLETE_ATTEMPTS)
			break;
		long delay = aws_backoff_ms(&c->retry, &c->rng, attempt, err == KL_ETHROTTLED);
		log_debug("s3: CompleteMultipartUpload %s/%s: %s in a 200 response, retrying in %ld ms",
			  bucket, key, info ? info->aws_code : "error", delay);
		kl_sleep_ms(delay);
	}
	http_response_done(&resp);
	buf_done(&query);
	buf_done(&body);
	if (!err) {
		memset(ret_result, 0, sizeof(*ret_result));
		memcpy(ret_result->etag, etag, S3_ETAG_MAX);
		ret_result->n_parts = (unsigned)n_parts;
	}
	return err;
}

enum kl_err s3_abort_multipart(struct aws_client *c, const char *bucket, const char *key,
			       const char *upload_id, struct kl_errinfo *info)
{
	struct http_response resp;
	struct s3_call call;
	struct buf query;
	enum kl_err err;

	buf_init(&query, 4096);
	if (upload_id_query(&query, upload_id)) {
		buf_done(&query);
		return kl_errinfo_set(info, KL_EINVAL, "s3: AbortMultipartUpload: bad upload id");
	}
	call_init(&call, "AbortMultipartUpload", "DELETE", bucket, key);
	call.query = query.data;
	http_response_init(&resp);
	err = s3_send(c, &call, &resp, info);
	if (err && info && strcmp(info->aws_code, "NoSuchUpload") == 0) {
		err = KL_OK;   /* already aborted or completed: nothing left to do */
	} else if (err && info && info->http_status == 405) {
		log_debug("s3: AbortMultipartUpload %s/%s: server does not implement it (405 %s);"
			  " upload %s is abandoned, its parts stay on the server", bucket, key,
			  info->aws_code, upload_id);
		err = KL_OK;
	}
	http_response_done(&resp);
	buf_done(&query);
	return err;
}

/* ------------------------------------------------------------ upload_file */

/* Part size for len bytes: the requested one, grown (in whole MiB) when
 * the object would otherwise need more than S3_MAX_PARTS parts. */
static uint64_t choose_part_size(uint64_t len, uint64_t requested)
{
	uint64_t size = requested;

	if ((len + size - 1) / size > S3_MAX_PARTS) {
		size = (len + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
		size = (size + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
	}
	return size;
}

/*
 * What the part uploaders of one multipart upload share. Parts are handed
 * out in order from next; slot parts[i] is written only by whoever took
 * part i, and read only after every uploader has finished.
 */
struct mp_job {
	const char *bucket;
	const char *key;
	const char *upload_id;
	int fd;
	uint64_t offset;                   /* of the object in fd */
	uint64_t len;
	uint64_t part_size;
	const struct s3_put_opts *put;
	struct s3_part *parts;
	size_t n_parts;
	pthread_mutex_t lock;              /* guards the fields below */
	size_t next;                       /* next part index to hand out */
	enum kl_err err;                   /* first failure; KL_OK while none */
	struct kl_errinfo info;            /* its details */
};

/* One extra uploader thread and the client it alone uses. */
struct mp_uploader {
	struct mp_job *job;
	struct aws_client client;
	pthread_t thread;
	int started;
};

/* Uploads part i of job on c; info gets the details of a failure. */
static enum kl_err mp_upload_one(struct mp_job *job, struct aws_client *c, size_t i,
				 struct kl_errinfo *info)
{
	uint64_t off = (uint64_t)i * job->part_size;
	uint64_t plen = job->len - off < job->part_size ? job->len - off : job->part_size;

	return s3_upload_part(c, job->bucket, job->key, job->upload_id, (int)i + 1, job->fd,
			      job->offset + off, plen, job->put, &job->parts[i], info);
}

/*
 * Takes parts of job until none is left or one has failed (its own or
 * another uploader's: then no new part is started). The first failure is
 * recorded in job. At most one part in flight per caller, which is what
 * bounds memory to one read chunk per uploader.
 */
static void mp_take_parts(struct mp_job *job, struct aws_client *c)
{
	for (;;) {
		struct kl_errinfo part_info = { 0 };
		enum kl_err err;
		size_t i;

		pthread_mutex_lock(&job->lock);
		if (job->err || job->next >= job->n_parts) {
			pthread_mutex_unlock(&job->lock);
			return;
		}
		i = job->next++;
		pthread_mutex_unlock(&job->lock);
		err = mp_upload_one(job, c, i, &part_info);
		if (err) {
			pthread_mutex_lock(&job->lock);
			if (!job->err) {
				job->err = err;
				job->info = part_info;
			}
			pthread_mutex_unlock(&job->lock);
			return;
		}
	}
}

static void *mp_uploader_main(void *arg)
{
	struct mp_uploader *u = arg;

	mp_take_parts(u->job, &u->client);
	return NULL;
}

/* Frees what s3_upload_file()'s extra uploaders hold (joined already). */
static void mp_uploaders_free(struct mp_uploader *ups, unsigned n)
{
	if (!ups)
		return;
	for (unsigned t = 0; t < n; t++)
		aws_client_done(&ups[t].client);
	free(ups);
}

/*
 * n extra uploaders with a client each, threads not started yet. Done
 * before CreateMultipartUpload so that this failing leaves nothing to
 * abort.
 */
static enum kl_err mp_uploaders_new(unsigned n, const struct aws_client_config *cfg,
				    struct creds_chain *creds, struct mp_uploader **ret_ups,
				    struct kl_errinfo *info)
{
	struct mp_uploader *ups = calloc(n, sizeof(*ups));
	enum kl_err err;

	if (!ups)
		return kl_errinfo_set(info, KL_ENOMEM, "s3: no memory for %u part uploaders", n);
	for (unsigned t = 0; t < n; t++) {
		err = aws_client_init(&ups[t].client, cfg, creds);
		if (err) {
			mp_uploaders_free(ups, n);   /* zeroed clients are safe to done */
			return kl_errinfo_set(info, err, "s3: cannot set up part uploader %u: %s",
					      t + 1, kl_strerror(err));
		}
	}
	*ret_ups = ups;
	return KL_OK;
}

/*
 * Uploads job's parts: on c alone in order when there are no extra
 * uploaders, else on c (in this thread) and n_ups threads at once.
 */
static enum kl_err mp_upload_parts(struct mp_job *job, struct aws_client *c,
				   struct mp_uploader *ups, unsigned n_ups,
				   struct kl_errinfo *info)
{
	enum kl_err err = KL_OK;
	int rc;

	if (n_ups == 0) {
		/* Exactly the historical sequential path: info gets the details. */
		for (size_t i = 0; i < job->n_parts && !err; i++)
			err = mp_upload_one(job, c, i, info);
		return err;
	}
	for (unsigned t = 0; t < n_ups; t++) {
		ups[t].job = job;
		rc = pthread_create(&ups[t].thread, NULL, mp_uploader_main, &ups[t]);
		if (rc != 0) {
			/* Fewer threads only means less overlap; the rest still works. */
			log_debug("s3: cannot start part uploader %u: %s; going on with %u",
				  t + 1, strerror(rc), t);
			break;
		}
		ups[t].started = 1;
	}
	mp_take_parts(job, c);
	for (unsigned t = 0; t < n_ups; t++)
		if (ups[t].started)
			pthread_join(ups[t].thread, NULL);
	if (job->err && info)
		*info = job->info;
	return job->err;
}

static enum kl_err upload_multipart(struct aws_client *c, const char *bucket, const char *key,
				    int fd, uint64_t offset, uint64_t len,
				    const struct s3_upload_opts *opts, uint64_t part_size,
				    struct s3_put_result *ret_result, struct kl_errinfo *info)
{
	size_t n_parts = (size_t)((len + part_size - 1) / part_size);
	struct s3_part *parts = calloc(n_parts, sizeof(*parts));
	struct mp_uploader *ups = NULL;
	unsigned n_ups = 0;
	char *upload_id = NULL;
	struct mp_job job;
	enum kl_err err;

	if (!parts)
		return kl_errinfo_set(info, KL_ENOMEM, "s3: no memory for %zu parts", n_parts);
	if (opts->parallel > 1)
		n_ups = (unsigned)(n_parts < opts->parallel ? n_parts : opts->parallel) - 1;
	if (n_ups > 0) {
		err = mp_uploaders_new(n_ups, opts->client_cfg, opts->creds, &ups, info);
		if (err) {
			free(parts);
			return err;
		}
	}
	err = s3_create_multipart(c, bucket, key, &opts->put, &upload_id, info);
	if (!err) {
		memset(&job, 0, sizeof(job));
		job.bucket = bucket;
		job.key = key;
		job.upload_id = upload_id;
		job.fd = fd;
		job.offset = offset;
		job.len = len;
		job.part_size = part_size;
		job.put = &opts->put;
		job.parts = parts;
		job.n_parts = n_parts;
		pthread_mutex_init(&job.lock, NULL);
		err = mp_upload_parts(&job, c, ups, n_ups, info);
		pthread_mutex_destroy(&job.lock);
		if (!err)
			err = s3_complete_multipart(c, bucket, key, upload_id, parts, n_parts,
						    ret_result, info);
		if (err) {
			/* Keep the first error in info; the abort's own outcome is only
			 * worth a debug line (the upload is abandoned either way). */
			struct kl_errinfo abort_info = { 0 };
			enum kl_err aerr = s3_abort_multipart(c, bucket, key, upload_id, &abort_info);
			if (aerr)
				log_debug("s3: abandoning upload %s of %s/%s: abort failed: %s %s",
					  upload_id, bucket, key, kl_strerror(aerr),
					  abort_info.aws_code);
		}
	}
	mp_uploaders_free(ups, n_ups);
	free(upload_id);
	free(parts);
	return err;
}

enum kl_err s3_upload_file(struct aws_client *c, const char *bucket, const char *key,
			   int fd, uint64_t offset, uint64_t len,
			   const struct s3_upload_opts *opts,
			   struct s3_put_result *ret_result, struct kl_errinfo *info)
{
	static const struct s3_upload_opts defaults = { .multipart_threshold = 0 };
	uint64_t threshold, part_size;

	if (!opts)
		opts = &defaults;
	threshold = opts->multipart_threshold ? opts->multipart_threshold
					      : S3_DEFAULT_MULTIPART_THRESHOLD;
	part_size = opts->part_size ? opts->part_size : S3_DEFAULT_PART_SIZE;
	if (part_size < S3_MIN_PART_SIZE || part_size > S3_MAX_PART_SIZE)
		return kl_errinfo_set(info, KL_EINVAL,
				      "s3: part size %" PRIu64 " is outside 5 MiB .. 5 GiB", part_size);
	if (threshold > S3_MAX_PART_SIZE)
		threshold = S3_MAX_PART_SIZE;
	if (len > S3_MAX_OBJECT_SIZE)
		return kl_errinfo_set(info, KL_EINVAL,
				      "s3: object of %" PRIu64 " bytes is over the 5 TiB limit", len);
	if (opts->parallel > S3_MAX_PARALLEL ||
	    (opts->parallel > 1 && (!opts->client_cfg || !opts->creds)))
		return kl_errinfo_set(info, KL_EINVAL,
				      "s3: %u parallel part uploads need a client config and "
				      "credentials (and at most %d)", opts->parallel, S3_MAX_PARALLEL);
	if (len <= threshold)
		return s3_put_object_file(c, bucket, key, fd, offset, len, &opts->put, ret_result,
					  info);
	return upload_multipart(c, bucket, key, fd, offset, len, opts,
				choose_part_size(len, part_size), ret_result, info);
}
