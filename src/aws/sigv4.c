/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sigv4.c: AWS Signature Version 4 for request headers: canonical request,
 * string to sign, signing-key derivation (with the optional per-client
 * cache) and the Authorization value.
 *
 * Invariants: every copy of key material (the "AWS4"+secret bytes, each
 * intermediate HMAC, the derived key) is wiped before its memory is
 * released; the outputs are written only once the whole signature has been
 * computed; there is no global state, so this file is as thread-safe as
 * libcrypto (1.1.1 and later are).
 */
#include "config.h"

#include <assert.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sigv4.h"
#include "util.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR "aws4_request"
#define SIGV4_KEY_LEN 32

/*
 * Cap of each working buffer. A canonical request is the request line and
 * the headers, which no AWS endpoint accepts beyond a few tens of KiB, so
 * hitting this means a caller bug; it fails with KL_ENOMEM.
 */
#define SIGV4_WORK_CAP ((size_t)1 << 20)

/* ------------------------------------------------------------ characters */

/* RFC 3986 unreserved: the only bytes SigV4 leaves unencoded. */
static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

/* RFC 7230 tchar: what a method or a header name may be made of. */
static bool is_tchar(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Header whitespace (RFC 7230 OWS): space and horizontal tab only. */
static bool is_header_space(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static unsigned char ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

static int ascii_casecmp(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;

	while (*x && ascii_lower(*x) == ascii_lower(*y)) {
		x++;
		y++;
	}
	return (int)ascii_lower(*x) - (int)ascii_lower(*y);
}

/* True when s is non-empty and every byte satisfies ok(). */
static bool all_of(const char *s, bool (*ok)(unsigned char))
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (!ok((unsigned char)*s))
			return false;
	return true;
}

/* Payload hashes are lowercase hex or a keyword such as UNSIGNED-PAYLOAD. */
static bool is_payload_hash_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

/* Credential scope parts must not contain the '/' that separates them. */
static bool is_scope_char(unsigned char c)
{
	return is_unreserved(c);
}

/* Access key ids are uppercase alphanumerics; refuse at least what would
 * break the Authorization value's syntax. */
static bool is_access_key_char(unsigned char c)
{
	return !is_control(c) && c != ' ' && c != '/' && c != ',' && c < 0x80;
}

/* ------------------------------------------------------------ encoding */

static enum kl_err append_escaped(struct buf *out, unsigned char c)
{
	static const char digits[] = "0123456789ABCDEF";
	char esc[3] = { '%', digits[c >> 4], digits[c & 15] };

	return buf_append(out, esc, sizeof(esc));
}

/* Appends s[0..len) with every byte but the unreserved ones (and '/' when
 * keep_slash) percent-encoded in uppercase hex. */
static enum kl_err append_encoded(struct buf *out, const char *s, size_t len, bool keep_slash)
{
	enum kl_err err = KL_OK;

	for (size_t i = 0; i < len && !err; i++) {
		unsigned char c = (unsigned char)s[i];
		if (is_unreserved(c) || (keep_slash && c == '/'))
			err = buf_append_byte(out, c);
		else
			err = append_escaped(out, c);
	}
	return err;
}

/* ------------------------------------------------------------ canonical URI */

/* A path as sent: absolute, and free of what would end it ('?', '#') or
 * break the request line or the canonical request (control bytes). */
static bool path_is_valid(const char *path)
{
	if (!path || path[0] != '/')
		return false;
	for (const char *p = path; *p; p++)
		if (is_control((unsigned char)*p) || *p == '?' || *p == '#')
			return false;
	return true;
}

/*
 * S3: the path is not normalised and not encoded a second time. A path the
 * S3 client built with http_uri_encode() comes out unchanged; a byte that
 * should have been encoded but was not (a raw space, UTF-8, '!') is encoded
 * here, as the spec's "URI-encode every byte except the unreserved ones"
 * asks, while existing %XX escapes are kept as written.
 */
static enum kl_err append_s3_uri(struct buf *out, const char *path)
{
	enum kl_err err = KL_OK;

	for (const char *p = path; *p && !err; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '%' && hex_value((unsigned char)p[1]) >= 0 &&
		    hex_value((unsigned char)p[2]) >= 0) {
			err = buf_append(out, p, 3);
			p += 2;
		} else if (is_unreserved(c) || c == '/') {
			err = buf_append_byte(out, c);
		} else {
			err = append_escaped(out, c);
		}
	}
	return err;
}

struct path_segment {
	const char *start;
	size_t len;
};

/*
 * Every other service: remove "." and ".." segments (RFC 3986 5.2.4; ".."
 * above the root stays at the root), drop empty segments (AWS collapses
 * "//"), then encode the result once more, so "%" becomes "%25". As in RFC
 * 3986, a path whose last segment is empty, "." or ".." keeps a trailing
 * '/'. Escapes are not decoded first: "%2E" is not a dot segment.
 */
static enum kl_err append_normalized_uri(struct buf *out, const char *path)
{
	struct path_segment *segs;
	size_t n_slashes = 0, n_segs = 0;
	bool trailing_slash = false;
	enum kl_err err = KL_OK;
	const char *p = path + 1;

	for (const char *q = path; *q; q++)
		n_slashes += *q == '/';
	/* One segment follows each '/', so n_slashes >= 1 bounds the count. */
	segs = calloc(n_slashes, sizeof(*segs));
	if (!segs)
		return KL_ENOMEM;
	for (;;) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		bool dot = len == 1 && p[0] == '.';
		bool dotdot = len == 2 && p[0] == '.' && p[1] == '.';

		if (dotdot && n_segs > 0)
			n_segs--;
		else if (len > 0 && !dot && !dotdot)
			segs[n_segs++] = (struct path_segment){ p, len };
		if (!end) {
			trailing_slash = len == 0 || dot || dotdot;
			break;
		}
		p = end + 1;
	}

	err = buf_append_byte(out, '/');
	for (size_t i = 0; i < n_segs && !err; i++) {
		err = append_encoded(out, segs[i].start, segs[i].len, false);
		if (!err && (i + 1 < n_segs || trailing_slash))
			err = buf_append_byte(out, '/');
	}
	free(segs);
	return err;
}

/* ------------------------------------------------------------ canonical query */

struct query_param {
	size_t name_off, value_off;   /* into the encoded-parameter buffer */
	const char *name, *value;     /* set once that buffer is complete */
};

static int query_param_cmp(const void *a, const void *b)
{
	const struct query_param *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

/*
 * Percent-decodes s[0..len) and appends it re-encoded, then a NUL. '+' is
 * a literal plus (this is RFC 3986, not form encoding); a '%' not followed
 * by two hex digits is taken literally, as most servers do.
 */
static enum kl_err append_reencoded(struct buf *out, const char *s, size_t len)
{
	enum kl_err err = KL_OK;

	for (size_t i = 0; i < len && !err; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '%' && i + 2 < len && hex_value((unsigned char)s[i + 1]) >= 0 &&
		    hex_value((unsigned char)s[i + 2]) >= 0) {
			c = (unsigned char)(hex_value((unsigned char)s[i + 1]) << 4 |
					    hex_value((unsigned char)s[i + 2]));
			i += 2;
		}
		err = is_unreserved(c) ? buf_append_byte(out, c) : append_escaped(out, c);
	}
	return err ? err : buf_append_byte(out, '\0');
}

/*
 * Appends the canonical query string: parameters split on '&' (empty
 * pieces skipped), each split at its first '=' (none: empty value),
 * decoded and re-encoded, sorted by encoded name then encoded value, and
 * joined as "name=value&...".
 */
static enum kl_err append_canonical_query(struct buf *out, const char *query)
{
	struct query_param *params;
	struct buf encoded;
	size_t max_params = 1, n_params = 0;
	enum kl_err err = KL_OK;

	if (!query || !*query)
		return KL_OK;
	for (const char *q = query; *q; q++) {
		if (is_control((unsigned char)*q) || *q == '#')
			return KL_EINVAL;
		max_params += *q == '&';
	}
	params = calloc(max_params, sizeof(*params));
	if (!params)
		return KL_ENOMEM;
	buf_init(&encoded, SIGV4_WORK_CAP);

	for (const char *p = query; !err;) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len > 0) {
			const char *eq = memchr(p, '=', len);
			size_t name_len = eq ? (size_t)(eq - p) : len;
			struct query_param *param = &params[n_params++];

			param->name_off = encoded.len;
			err = append_reencoded(&encoded, p, name_len);
			param->value_off = encoded.len;
			if (!err)
				err = eq ? append_reencoded(&encoded, eq + 1, len - name_len - 1)
					 : buf_append_byte(&encoded, '\0');
		}
		if (!end)
			break;
		p = end + 1;
	}

	if (!err && n_params > 0) {
		for (size_t i = 0; i < n_params; i++) {
			params[i].name = encoded.data + params[i].name_off;
			params[i].value = encoded.data + params[i].value_off;
		}
		qsort(params, n_params, sizeof(*params), query_param_cmp);
		for (size_t i = 0; i < n_params && !err; i++)
			err = buf_printf(out, "%s%s=%s", i ? "&" : "", params[i].name,
					 params[i].value);
	}
	buf_done(&encoded);
	free(params);
	return err;
}

/* ------------------------------------------------------------ canonical headers */

struct header_ref {
	const char *name;
	const char *value;
	size_t index;                 /* position in the request: keeps the sort stable */
};

static int header_ref_cmp(const void *a, const void *b)
{
	const struct header_ref *x = a, *y = b;
	int c = ascii_casecmp(x->name, y->name);

	if (c)
		return c;
	return x->index < y->index ? -1 : x->index > y->index;
}

static bool header_value_is_valid(const char *value)
{
	if (!value)
		return false;
	for (; *value; value++)
		if (is_control((unsigned char)*value) && *value != '\t')
			return false;
	return true;
}

/* Appends value trimmed, with each inner run of spaces and tabs folded to
 * one space. */
static enum kl_err append_header_value(struct buf *out, const char *value)
{
	bool pending_space = false, started = false;
	enum kl_err err = KL_OK;

	for (const char *v = value; *v && !err; v++) {
		if (is_header_space((unsigned char)*v)) {
			pending_space = started;
			continue;
		}
		if (pending_space)
			err = buf_append_byte(out, ' ');
		if (!err)
			err = buf_append_byte(out, (unsigned char)*v);
		pending_space = false;
		started = true;
	}
	return err;
}

static enum kl_err append_lowercase(struct buf *out, const char *s)
{
	enum kl_err err = KL_OK;

	for (; *s && !err; s++)
		err = buf_append_byte(out, ascii_lower((unsigned char)*s));
	return err;
}

/*
 * Appends the canonical headers ("name:value\n" each, names lowercased and
 * sorted, values of one name joined with ',' in request order) to
 * canonical and the signed-header list ("a;b;c") to signed_names.
 * KL_EINVAL for a bad name or value, or when there is no host header.
 */
static enum kl_err append_canonical_headers(struct buf *canonical, struct buf *signed_names,
					    const struct http_header *headers, size_t n_headers)
{
	struct header_ref *refs;
	bool have_host = false;
	enum kl_err err = KL_OK;

	if (n_headers == 0 || !headers)
		return KL_EINVAL;
	for (size_t i = 0; i < n_headers; i++) {
		if (!all_of(headers[i].name, is_tchar) || !header_value_is_valid(headers[i].value))
			return KL_EINVAL;
		have_host |= ascii_casecmp(headers[i].name, "host") == 0;
	}
	if (!have_host)
		return KL_EINVAL;

	refs = calloc(n_headers, sizeof(*refs));
	if (!refs)
		return KL_ENOMEM;
	for (size_t i = 0; i < n_headers; i++)
		refs[i] = (struct header_ref){ headers[i].name, headers[i].value, i };
	qsort(refs, n_headers, sizeof(*refs), header_ref_cmp);

	for (size_t i = 0; i < n_headers && !err; i++) {
		bool first_of_name = i == 0 || ascii_casecmp(refs[i - 1].name, refs[i].name) != 0;
		bool last_of_name = i + 1 == n_headers ||
				    ascii_casecmp(refs[i].name, refs[i + 1].name) != 0;

		if (first_of_name) {
			if (signed_names->len > 0)
				err = buf_append_byte(signed_names, ';');
			if (!err)
				err = append_lowercase(signed_names, refs[i].name);
			if (!err)
				err = append_lowercase(canonical, refs[i].name);
			if (!err)
				err = buf_append_byte(canonical, ':');
		} else {
			err = buf_append_byte(canonical, ',');
		}
		if (!err)
			err = append_header_value(canonical, refs[i].value);
		if (!err && last_of_name)
			err = buf_append_byte(canonical, '\n');
	}
	free(refs);
	return err;
}

/* ------------------------------------------------------------ crypto */

static enum kl_err sha256(const void *data, size_t len, uint8_t out[SIGV4_KEY_LEN])
{
	unsigned int out_len = 0;

	if (!EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) ||
	    out_len != SIGV4_KEY_LEN)
		return KL_ENOMEM;   /* only an allocation inside libcrypto can fail */
	return KL_OK;
}

static enum kl_err hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
			       uint8_t out[SIGV4_KEY_LEN])
{
	unsigned int out_len = 0;

	if (key_len > INT_MAX)
		return KL_EINVAL;
	if (!HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &out_len) ||
	    out_len != SIGV4_KEY_LEN)
		return KL_ENOMEM;
	return KL_OK;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" secret, date), region), service),
 * "aws4_request"), every intermediate wiped. */
static enum kl_err derive_signing_key(const char *secret, const char *date8, const char *region,
				      const char *service, uint8_t ret_key[SIGV4_KEY_LEN])
{
	size_t secret_len = strlen(secret), k_secret_len;
	uint8_t *k_secret;
	uint8_t k_date[SIGV4_KEY_LEN], k_region[SIGV4_KEY_LEN], k_service[SIGV4_KEY_LEN];
	uint8_t k_signing[SIGV4_KEY_LEN];
	enum kl_err err;

	if (secret_len > SIZE_MAX - 4)
		return KL_EINVAL;
	k_secret_len = secret_len + 4;
	k_secret = malloc(k_secret_len);
	if (!k_secret)
		return KL_ENOMEM;
	memcpy(k_secret, "AWS4", 4);
	memcpy(k_secret + 4, secret, secret_len);

	err = hmac_sha256(k_secret, k_secret_len, date8, 8, k_date);
	if (!err)
		err = hmac_sha256(k_date, sizeof(k_date), region, strlen(region), k_region);
	if (!err)
		err = hmac_sha256(k_region, sizeof(k_region), service, strlen(service), k_service);
	if (!err)
		err = hmac_sha256(k_service, sizeof(k_service), SIGV4_TERMINATOR,
				  strlen(SIGV4_TERMINATOR), k_signing);
	if (!err)
		memcpy(ret_key, k_signing, SIGV4_KEY_LEN);

	kl_wipe(k_secret, k_secret_len);
	free(k_secret);
	kl_wipe(k_date, sizeof(k_date));
	kl_wipe(k_region, sizeof(k_region));
	kl_wipe(k_service, sizeof(k_service));
	kl_wipe(k_signing, sizeof(k_signing));
	return err;
}

/*
 * The signing key for scope, from cache when it holds the key for the same
 * scope and the same secret (compared by SHA-256 digest, so the cache never
 * holds the secret itself); otherwise derived and, if the scope fits,
 * stored in cache.
 */
static enum kl_err signing_key(const char *secret, const char *date8, const char *region,
			       const char *service, const char *scope,
			       struct sigv4_cache *cache, uint8_t ret_key[SIGV4_KEY_LEN])
{
	uint8_t digest[SIGV4_KEY_LEN], key[SIGV4_KEY_LEN];
	enum kl_err err = KL_OK;

	if (cache) {
		err = sha256(secret, strlen(secret), digest);
		if (err)
			return err;
		if (cache->valid && strcmp(cache->scope, scope) == 0 &&
		    CRYPTO_memcmp(cache->secret_digest, digest, sizeof(digest)) == 0) {
			memcpy(ret_key, cache->key, SIGV4_KEY_LEN);
			kl_wipe(digest, sizeof(digest));
			return KL_OK;
		}
	}
	err = derive_signing_key(secret, date8, region, service, key);
	if (!err && cache && strlen(scope) < sizeof(cache->scope)) {
		strcpy(cache->scope, scope);
		memcpy(cache->secret_digest, digest, sizeof(digest));
		memcpy(cache->key, key, sizeof(key));
		cache->valid = 1;
	}
	if (!err)
		memcpy(ret_key, key, SIGV4_KEY_LEN);
	kl_wipe(key, sizeof(key));
	kl_wipe(digest, sizeof(digest));
	return err;
}

/* ------------------------------------------------------------ public API */

void sigv4_cache_init(struct sigv4_cache *cache)
{
	memset(cache, 0, sizeof(*cache));
}

void sigv4_cache_done(struct sigv4_cache *cache)
{
	if (cache)
		kl_wipe(cache, sizeof(*cache));
}

/* Formats when; false when it is not a date SigV4 can name (4-digit year). */
static bool format_amz_date(time_t when, char out[17])
{
	struct tm tm;

	if (!gmtime_r(&when, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
		return false;
	return strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) == 16;
}

void sigv4_amz_date(time_t when, char out[17])
{
	if (!format_amz_date(when, out))
		out[0] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	uint8_t digest[SIGV4_KEY_LEN];

	if (sha256(data, len, digest) != KL_OK) {
		out[0] = '\0';
		return;
	}
	kl_hex(digest, sizeof(digest), out);
}

static bool request_is_valid(const struct sigv4_request *req, const struct sigv4_creds *creds)
{
	return req && creds && all_of(req->method, is_tchar) && path_is_valid(req->path) &&
	       all_of(req->payload_hash, is_payload_hash_char) &&
	       all_of(req->region, is_scope_char) && all_of(req->service, is_scope_char) &&
	       all_of(creds->access_key_id, is_access_key_char) && creds->secret_access_key;
}

/* The canonical request (spec, task 1) into canonical; the signed-header
 * list into signed_names. */
static enum kl_err build_canonical_request(const struct sigv4_request *req,
					   struct buf *canonical, struct buf *signed_names)
{
	enum kl_err err;

	err = buf_printf(canonical, "%s\n", req->method);
	if (!err)
		err = strcmp(req->service, "s3") == 0 ? append_s3_uri(canonical, req->path)
						      : append_normalized_uri(canonical, req->path);
	if (!err)
		err = buf_append_byte(canonical, '\n');
	if (!err)
		err = append_canonical_query(canonical, req->query);
	if (!err)
		err = buf_append_byte(canonical, '\n');
	if (!err)
		err = append_canonical_headers(canonical, signed_names, req->headers,
					       req->n_headers);
	if (!err)
		err = buf_printf(canonical, "\n%s\n%s", signed_names->data, req->payload_hash);
	return err;
}

enum kl_err sigv4_sign(const struct sigv4_request *req, const struct sigv4_creds *creds,
		       struct sigv4_cache *cache, struct buf *ret_authorization,
		       struct buf *debug_canonical)
{
	struct buf canonical, signed_names, scope, to_sign, authorization;
	char amz_date[17], date8[9], canonical_hash[65], signature[65];
	uint8_t key[SIGV4_KEY_LEN], mac[SIGV4_KEY_LEN], digest[SIGV4_KEY_LEN];
	enum kl_err err;

	assert(ret_authorization);
	if (!request_is_valid(req, creds) || !format_amz_date(req->when, amz_date))
		return KL_EINVAL;
	memcpy(date8, amz_date, 8);
	date8[8] = '\0';

	buf_init(&canonical, SIGV4_WORK_CAP);
	buf_init(&signed_names, SIGV4_WORK_CAP);
	buf_init(&scope, SIGV4_WORK_CAP);
	buf_init(&to_sign, SIGV4_WORK_CAP);
	buf_init(&authorization, SIGV4_WORK_CAP);

	err = build_canonical_request(req, &canonical, &signed_names);
	if (!err)
		err = buf_printf(&scope, "%s/%s/%s/%s", date8, req->region, req->service,
				 SIGV4_TERMINATOR);
	if (!err)
		err = sha256(canonical.data, canonical.len, digest);
	if (!err) {
		kl_hex(digest, sizeof(digest), canonical_hash);
		err = buf_printf(&to_sign, "%s\n%s\n%s\n%s", SIGV4_ALGORITHM, amz_date,
				 scope.data, canonical_hash);
	}
	if (!err)
		err = signing_key(creds->secret_access_key, date8, req->region, req->service,
				  scope.data, cache, key);
	if (!err)
		err = hmac_sha256(key, sizeof(key), to_sign.data, to_sign.len, mac);
	if (!err) {
		kl_hex(mac, sizeof(mac), signature);
		err = buf_printf(&authorization,
				 "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s",
				 SIGV4_ALGORITHM, creds->access_key_id, scope.data,
				 signed_names.data, signature);
	}
	/* Reserve first so that either both outputs are written or neither. */
	if (!err)
		err = buf_reserve(ret_authorization, authorization.len);
	if (!err && debug_canonical)
		err = buf_reserve(debug_canonical, canonical.len + 2 + to_sign.len);
	if (!err && debug_canonical) {
		buf_append(debug_canonical, canonical.data, canonical.len);
		buf_append(debug_canonical, "\n\n", 2);
		buf_append(debug_canonical, to_sign.data, to_sign.len);
	}
	if (!err)
		buf_append(ret_authorization, authorization.data, authorization.len);

	kl_wipe(key, sizeof(key));
	kl_wipe(mac, sizeof(mac));
	/* The canonical request holds header values, the session token among
	 * them. */
	buf_wipe(&canonical);
	buf_done(&signed_names);
	buf_done(&scope);
	buf_done(&to_sign);
	buf_done(&authorization);
	return err;
}
