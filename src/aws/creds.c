/* SPDX-License-Identifier: Apache-2.0 */
/*
 * creds.c: the AWS credential provider chain (order and rules in creds.h).
 * Invariants: the cached set and the refresh state are read and written
 * only under chain->lock; at most one thread walks the chain at a time
 * (chain->refreshing), and only that thread touches chain->http and the
 * IMDSv2 token, so the network is used without holding the lock. Every
 * buffer that held a secret (keys, session tokens, web identity and
 * container tokens, IMDS tokens, response bodies) is wiped before it is
 * freed, and no message written here ever contains one.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "buf.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "util.h"
#include "xml.h"

#define CREDS_DEFAULT_IMDS "http://169.254.169.254"
#define CREDS_DEFAULT_ECS "http://169.254.170.2"
#define CREDS_DEFAULT_REGION "us-east-1"
#define CREDS_DEFAULT_TOKEN_TTL_S 21600L   /* also the most IMDS accepts */
#define CREDS_DEFAULT_WINDOW_S 300L
#define CREDS_DEFAULT_TIMEOUT_MS 2000L
#define CREDS_SHARED_FILE_MAX ((size_t)1 << 20)
#define CREDS_TOKEN_FILE_MAX ((size_t)64 << 10)
#define CREDS_RESPONSE_MAX ((size_t)256 << 10)
/* After a failed refresh while the current set is still valid, keep
 * handing it out for this long before trying again, so that a broken
 * endpoint does not cost every caller a timeout. */
#define CREDS_RETRY_MS 5000
#define STS_VERSION "2011-06-15"

struct creds_chain {
	/* configuration: immutable after creds_chain_new() */
	char *cfg_access_key_id;
	char *cfg_secret_access_key;
	char *cfg_session_token;
	char *profile;
	char *sts_endpoint;
	char *imds_endpoint;
	char *ecs_endpoint;
	char *region;
	char *ca_file;
	int allow_imdsv1;
	int disable_imds;
	long imds_token_ttl_s;
	int64_t refresh_window_ms;
	long timeout_ms;

	pthread_mutex_t lock;
	pthread_cond_t refreshed;
	/* under lock */
	struct aws_creds cur;
	int have;
	int invalidated;
	int refreshing;               /* a thread is walking the chain */
	uint64_t generation;          /* completed walks */
	int64_t retry_at_mono_ms;     /* see CREDS_RETRY_MS */
	enum kl_err last_err;         /* outcome of the last failed walk */
	struct kl_errinfo last_info;

	/* owned by the thread that set refreshing */
	struct http_client *http;
	char *imds_token;
	int64_t imds_token_stale_mono_ms;
};

/* What a provider concluded. */
enum prov_rc {
	PROV_FOUND,                   /* credentials in *out */
	PROV_SKIP,                    /* not configured: try the next provider */
	PROV_FAIL,                    /* configured but broken: stop the walk */
};

/* What the providers said, collected for the KL_ECREDS message. */
struct why {
	char text[sizeof(((struct kl_errinfo *)0)->message)];
	size_t len;
	long http_status;
	char aws_code[sizeof(((struct kl_errinfo *)0)->aws_code)];
	enum kl_err err;              /* KL_ECREDS unless something worse happened */
};

static void why_add(struct why *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void why_add(struct why *w, const char *fmt, ...)
{
	size_t room = sizeof(w->text) - w->len;
	va_list ap;
	int n;

	if (room <= 4)
		return;
	if (w->len) {
		n = snprintf(w->text + w->len, room, "; ");
		w->len += (size_t)n;
		room -= (size_t)n;
	}
	va_start(ap, fmt);
	n = vsnprintf(w->text + w->len, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= room) {
		/* truncated: say so instead of ending mid-word */
		memcpy(w->text + sizeof(w->text) - 4, "...", 4);
		w->len = sizeof(w->text) - 1;
		return;
	}
	w->len += (size_t)n;
}

/* Records an out-of-memory failure for provider name; returns PROV_FAIL. */
static enum prov_rc why_nomem(struct why *w, const char *name)
{
	w->err = KL_ENOMEM;
	why_add(w, "%s: out of memory", name);
	return PROV_FAIL;
}

/* ------------------------------------------------------------ small helpers */

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static void free_str(char **p)
{
	free(*p);
	*p = NULL;
}

static void secret_replace(char **slot, char *value)
{
	kl_free_secret(*slot);
	*slot = value;
}

/* strdup that reports failure through *ok (so several can be chained). */
static char *dup_or_null(const char *s, int *ok)
{
	char *p;

	if (!s)
		return NULL;
	p = strdup(s);
	if (!p)
		*ok = 0;
	return p;
}

static int has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

void creds_done(struct aws_creds *c)
{
	if (!c)
		return;
	kl_free_secret(c->access_key_id);
	kl_free_secret(c->secret_access_key);
	kl_free_secret(c->session_token);
	c->access_key_id = NULL;
	c->secret_access_key = NULL;
	c->session_token = NULL;
	c->expires_at_ms = 0;
	c->provider[0] = '\0';
}

/* Fills *out from borrowed strings (session_token may be NULL). */
static enum kl_err creds_fill(struct aws_creds *out, const char *provider,
			      const char *access_key_id, const char *secret_access_key,
			      const char *session_token, int64_t expires_at_ms)
{
	struct aws_creds c = { 0 };
	int ok = 1;

	c.access_key_id = dup_or_null(access_key_id, &ok);
	c.secret_access_key = dup_or_null(secret_access_key, &ok);
	c.session_token = dup_or_null(session_token, &ok);
	c.expires_at_ms = expires_at_ms;
	snprintf(c.provider, sizeof(c.provider), "%s", provider);
	if (!ok) {
		creds_done(&c);
		return KL_ENOMEM;
	}
	*out = c;
	return KL_OK;
}

static enum kl_err creds_copy(struct aws_creds *dst, const struct aws_creds *src)
{
	return creds_fill(dst, src->provider, src->access_key_id, src->secret_access_key,
			  src->session_token, src->expires_at_ms);
}

/*
 * Reads a whole regular file into out (which the caller wipes or frees).
 * Returns KL_OK, KL_ENOTFOUND (ENOENT), KL_ENOMEM (over max) or KL_EIO with
 * *ret_errno set.
 */
static enum kl_err read_small_file(const char *path, size_t max, struct buf *out,
				   int *ret_errno)
{
	struct stat st;
	enum kl_err err = KL_OK;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	*ret_errno = 0;
	if (fd < 0) {
		*ret_errno = errno;
		return errno == ENOENT ? KL_ENOTFOUND : KL_EIO;
	}
	if (fstat(fd, &st) < 0) {
		*ret_errno = errno;
		close(fd);
		return KL_EIO;
	}
	if (!S_ISREG(st.st_mode)) {
		/* a FIFO or device could block or never end */
		*ret_errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		close(fd);
		return KL_EIO;
	}
	buf_init(out, max);
	for (;;) {
		ssize_t n;

		err = buf_reserve(out, 4096);
		if (err)
			break;
		n = read(fd, out->data + out->len, 4096);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*ret_errno = errno;
			err = KL_EIO;
			break;
		}
		if (n == 0)
			break;
		out->len += (size_t)n;
		out->data[out->len] = '\0';
	}
	close(fd);
	if (!err && !out->data)
		err = buf_reserve(out, 0);   /* empty file: still a valid "" */
	if (err)
		buf_wipe(out);
	return err;
}

/*
 * Reads a token file (web identity, container authorization): the whole
 * file minus trailing blanks and newlines. Caller kl_free_secret()s.
 */
static enum kl_err read_token_file(const char *path, char **ret_token, int *ret_errno)
{
	struct buf b;
	enum kl_err err = read_small_file(path, CREDS_TOKEN_FILE_MAX, &b, ret_errno);
	char *token;

	if (err)
		return err;
	while (b.len && isspace((unsigned char)b.data[b.len - 1]))
		b.data[--b.len] = '\0';
	token = buf_steal(&b);
	if (!token) {
		buf_wipe(&b);
		return KL_ENOMEM;
	}
	*ret_token = token;
	return KL_OK;
}

/* A path from env var name, else ~/.aws/leaf. Caller frees; NULL if unknown. */
static char *shared_file_path(const char *env, const char *leaf, int *nomem)
{
	const char *v = env_nonempty(env);
	const char *home = env_nonempty("HOME");
	char *p = NULL;
	int n;

	if (v && strncmp(v, "~/", 2) == 0 && home)
		n = asprintf(&p, "%s/%s", home, v + 2);
	else if (v)
		n = asprintf(&p, "%s", v);
	else if (home)
		n = asprintf(&p, "%s/.aws/%s", home, leaf);
	else
		return NULL;
	if (n < 0) {
		*nomem = 1;
		return NULL;
	}
	return p;
}

/* ---------------------------------------------------------------- ISO 8601 */

static int is_leap(long y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Leap years in [1, y). */
static long leaps_before(long y)
{
	y--;
	return y / 4 - y / 100 + y / 400;
}

static int digits(const char *s, int n, long *ret)
{
	long v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return 0;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return 1;
}

/*
 * Parses "YYYY-MM-DDThh:mm:ss[.fff...](Z|+hh:mm|-hh:mm|+hhmm)" (the forms
 * STS, ECS and IMDS use) into ms since the epoch. Returns 0 on success.
 */
static int parse_iso8601(const char *s, int64_t *ret_ms)
{
	static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	long y, mo, d, h, mi, sec, ms = 0, off_s = 0, days;

	if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
	    s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
	    !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) ||
	    s[16] != ':' || !digits(s + 17, 2, &sec))
		return -1;
	s += 19;
	if (*s == '.') {
		long scale = 100;

		s++;
		if (!isdigit((unsigned char)*s))
			return -1;
		for (; isdigit((unsigned char)*s); s++, scale /= 10)
			ms += (*s - '0') * scale;
	}
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		long oh, om;
		int sign = *s == '-' ? -1 : 1;

		s++;
		if (!digits(s, 2, &oh))
			return -1;
		s += 2;
		if (*s == ':')
			s++;
		if (!digits(s, 2, &om) || oh > 23 || om > 59)
			return -1;
		s += 2;
		off_s = sign * (oh * 3600 + om * 60);
	} else {
		return -1;
	}
	if (*s || y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 ||
	    d > mdays[mo - 1] + (mo == 2 && is_leap(y)) || h > 23 || mi > 59 || sec > 60)
		return -1;
	days = 365 * (y - 1970) + leaps_before(y) - leaps_before(1970);
	for (long m = 1; m < mo; m++)
		days += mdays[m - 1] + (m == 2 && is_leap(y));
	days += d - 1;
	*ret_ms = ((int64_t)days * 86400 + h * 3600 + mi * 60 + sec - off_s) * 1000 + ms;
	return 0;
}

/* ------------------------------------------------------------------ HTTP */

static enum kl_err chain_http(struct creds_chain *c, const char *method, const char *url,
			      const struct http_header *headers, size_t n_headers,
			      const struct buf *body, struct http_response *resp,
			      struct kl_errinfo *ei)
{
	struct http_request req;

	if (!c->http) {
		struct http_opts opts = {
			.connect_timeout_ms = c->timeout_ms,
			.timeout_ms = c->timeout_ms,
			.ca_file = c->ca_file,
			.max_response_bytes = CREDS_RESPONSE_MAX,
		};
		enum kl_err err = http_client_new(&opts, &c->http);

		if (err)
			return kl_errinfo_set(ei, err, "cannot create an HTTP client");
	}
	http_request_init(&req);
	req.method = method;
	req.url = url;
	req.headers = headers;
	req.n_headers = n_headers;
	if (body) {
		req.body = body->data;
		req.body_len = body->len;
	}
	return http_send(c->http, &req, resp, ei);
}

/* Drops a response that may hold secrets. */
static void response_wipe(struct http_response *resp)
{
	buf_wipe(&resp->body);
	http_response_done(resp);
}

/* Describes a transport failure in a few words, without secrets. */
static void why_transport(struct why *w, const char *name, const char *what,
			  enum kl_err err, const struct kl_errinfo *ei)
{
	if (ei->message[0])
		why_add(w, "%s: %s: %s (%s)", name, what, kl_strerror(err), ei->message);
	else
		why_add(w, "%s: %s: %s", name, what, kl_strerror(err));
}

/*
 * Pulls AccessKeyId, SecretAccessKey, Token and Expiration out of the JSON
 * document the container and IMDS endpoints return.
 */
static enum prov_rc parse_json_creds(const char *name, const struct buf *body,
				     struct aws_creds *out, struct why *w)
{
	static const char *const fields[] = { "AccessKeyId", "SecretAccessKey", "Token",
					      "Expiration", "Code" };
	const char *val[KL_ARRAY_LEN(fields)] = { NULL };
	struct json_object *str[KL_ARRAY_LEN(fields)] = { NULL };
	struct json_tokener *tok;
	struct json_object *root;
	enum prov_rc rc = PROV_FAIL;
	int64_t expires = 0;

	tok = json_tokener_new();
	if (!tok)
		return why_nomem(w, name);
	root = body->len ? json_tokener_parse_ex(tok, body->data, (int)body->len) : NULL;
	if (!root || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(root, json_type_object)) {
		why_add(w, "%s: response is not a JSON object", name);
		goto out;
	}
	for (size_t i = 0; i < KL_ARRAY_LEN(fields); i++) {
		struct json_object *o;

		if (json_object_object_get_ex(root, fields[i], &o) &&
		    json_object_is_type(o, json_type_string)) {
			str[i] = o;
			val[i] = json_object_get_string(o);
		}
	}
	if (val[4] && strcmp(val[4], "Success") != 0) {
		why_add(w, "%s: endpoint answered Code '%.64s'", name, val[4]);
		goto out;
	}
	if (!val[0] || !*val[0] || !val[1] || !*val[1]) {
		why_add(w, "%s: response lacks AccessKeyId or SecretAccessKey", name);
		goto out;
	}
	if (val[3] && parse_iso8601(val[3], &expires) != 0) {
		why_add(w, "%s: bad Expiration '%.40s'", name, val[3]);
		goto out;
	}
	if (creds_fill(out, name, val[0], val[1], val[2] && *val[2] ? val[2] : NULL,
		       expires) != KL_OK) {
		why_nomem(w, name);
		goto out;
	}
	rc = PROV_FOUND;
out:
	/*
	 * json-c has no wiping free. The strings it made are ours until the
	 * put below, so overwrite them in place (same length, so the object
	 * stays consistent). Its tokener's scratch copy of the last string
	 * parsed is freed unwiped: that part is out of our hands.
	 */
	for (size_t i = 0; i < 3; i++)
		if (str[i])
			kl_wipe((char *)val[i], (size_t)json_object_get_string_len(str[i]));
	if (root)
		json_object_put(root);
	json_tokener_free(tok);
	return rc;
}

/* -------------------------------------------------------------- providers */

static enum prov_rc prov_config(struct creds_chain *c, struct aws_creds *out, struct why *w)
{
	if (!c->cfg_access_key_id) {
		why_add(w, "config: no keys");
		return PROV_SKIP;
	}
	if (creds_fill(out, "config", c->cfg_access_key_id, c->cfg_secret_access_key,
		       c->cfg_session_token, 0) != KL_OK)
		return why_nomem(w, "config");
	return PROV_FOUND;
}

static enum prov_rc prov_env(struct creds_chain *c, struct aws_creds *out, struct why *w)
{
	const char *akid = env_nonempty("AWS_ACCESS_KEY_ID");
	const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");

	if (!akid && !secret) {
		why_add(w, "env: AWS_ACCESS_KEY_ID not set");
		return PROV_SKIP;
	}
	if (!akid || !secret) {
		why_add(w, "env: %s is set but %s is not",
			akid ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			akid ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		return PROV_FAIL;
	}
	if (creds_fill(out, "env", akid, secret, env_nonempty("AWS_SESSION_TOKEN"), 0) != KL_OK)
		return why_nomem(w, "env");
	return PROV_FOUND;
}

/* Keys the profile provider reads, in the order of struct profile_vals. */
static const char *const profile_keys[] = {
	"aws_access_key_id", "aws_secret_access_key", "aws_session_token",
};

struct profile_vals {
	char *v[KL_ARRAY_LEN(profile_keys)];   /* secrets: kl_free_secret */
	int found;                             /* the section exists in this file */
};

static void profile_vals_done(struct profile_vals *pv)
{
	for (size_t i = 0; i < KL_ARRAY_LEN(pv->v); i++)
		secret_replace(&pv->v[i], NULL);
}

/*
 * True when the section header text (trimmed, between the brackets) names
 * profile: "[name]" in the credentials file; "[profile name]" in the
 * config file, where the default profile may also be plain "[default]".
 */
static int section_matches(const char *sect, size_t len, const char *profile, int is_config)
{
	size_t plen = strlen(profile);

	if (is_config) {
		if (strcmp(profile, "default") == 0 && len == 7 && memcmp(sect, "default", 7) == 0)
			return 1;
		if (len < 8 || memcmp(sect, "profile", 7) != 0 || (sect[7] != ' ' && sect[7] != '\t'))
			return 0;
		sect += 8;
		len -= 8;
		while (len && (*sect == ' ' || *sect == '\t')) {
			sect++;
			len--;
		}
	}
	return len == plen && memcmp(sect, profile, plen) == 0;
}

/*
 * Parses one shared file (INI-like: "[section]", "key = value", "#" or ";"
 * comment lines, indented continuation lines of nested settings) and keeps
 * the values of profile. Returns PROV_SKIP when the file is absent (or was
 * parsed), PROV_FAIL for unreadable or malformed files.
 */
static enum prov_rc profile_parse_file(const char *path, const char *profile, int is_config,
				       struct profile_vals *pv, struct why *w)
{
	struct buf file;
	int sys_errno, in_section = 0, seen_section = 0, have_prop = 0;
	unsigned lineno = 0;
	enum prov_rc rc = PROV_SKIP;
	char *line, *next;
	enum kl_err err = read_small_file(path, CREDS_SHARED_FILE_MAX, &file, &sys_errno);

	if (err == KL_ENOTFOUND)
		return PROV_SKIP;
	if (err == KL_ENOMEM) {
		why_add(w, "profile: %s is larger than %zu bytes", path, CREDS_SHARED_FILE_MAX);
		return PROV_FAIL;
	}
	if (err) {
		why_add(w, "profile: cannot read %s: %s", path, strerror(sys_errno));
		return PROV_FAIL;
	}
	if (memchr(file.data, '\0', file.len)) {
		why_add(w, "profile: %s is not a text file", path);
		buf_wipe(&file);
		return PROV_FAIL;
	}
	for (line = file.data; line; line = next) {
		char *p, *end, *eq;
		size_t klen, vlen;
		int indented;

		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		end = line + strlen(line);
		while (end > line && isspace((unsigned char)end[-1]))
			*--end = '\0';
		indented = *line == ' ' || *line == '\t';
		for (p = line; *p == ' ' || *p == '\t'; p++)
			;
		if (!*p || *p == '#' || *p == ';')
			continue;
		if (indented && have_prop)
			continue;     /* nested setting, e.g. "s3 =\n  addressing_style = path" */
		if (*p == '[') {
			char *close = strchr(p, ']'), *s = p + 1, *e;

			if (!close) {
				why_add(w, "profile: %s:%u: section header without ']'", path, lineno);
				rc = PROV_FAIL;
				break;
			}
			for (e = close + 1; *e == ' ' || *e == '\t'; e++)
				;
			if (*e && *e != '#' && *e != ';') {
				why_add(w, "profile: %s:%u: text after section header", path, lineno);
				rc = PROV_FAIL;
				break;
			}
			while (s < close && (*s == ' ' || *s == '\t'))
				s++;
			for (e = close; e > s && (e[-1] == ' ' || e[-1] == '\t'); e--)
				;
			if (e == s) {
				why_add(w, "profile: %s:%u: empty section name", path, lineno);
				rc = PROV_FAIL;
				break;
			}
			in_section = section_matches(s, (size_t)(e - s), profile, is_config);
			pv->found |= in_section;
			seen_section = 1;
			have_prop = 0;
			continue;
		}
		eq = strchr(p, '=');
		if (!eq || eq == p) {
			why_add(w, "profile: %s:%u: expected 'key = value' or '[section]'", path,
				lineno);
			rc = PROV_FAIL;
			break;
		}
		if (!seen_section) {
			why_add(w, "profile: %s:%u: setting before the first section", path, lineno);
			rc = PROV_FAIL;
			break;
		}
		have_prop = 1;
		if (!in_section)
			continue;
		for (klen = (size_t)(eq - p); klen && isspace((unsigned char)p[klen - 1]); klen--)
			;
		for (eq++; *eq == ' ' || *eq == '\t'; eq++)
			;
		vlen = strlen(eq);
		for (size_t i = 0; i < KL_ARRAY_LEN(profile_keys); i++) {
			if (strlen(profile_keys[i]) != klen || strncasecmp(p, profile_keys[i], klen))
				continue;
			secret_replace(&pv->v[i], vlen ? strdup(eq) : NULL);
			if (vlen && !pv->v[i]) {
				rc = why_nomem(w, "profile");
				goto out;
			}
		}
	}
out:
	buf_wipe(&file);
	return rc;
}

static enum prov_rc prov_profile(struct creds_chain *c, struct aws_creds *out, struct why *w)
{
	const char *explicit = c->profile ? c->profile : env_nonempty("AWS_PROFILE");
	const char *profile = explicit ? explicit : "default";
	struct profile_vals conf = { 0 }, cred = { 0 };
	char *cred_path, *conf_path;
	const char *v[KL_ARRAY_LEN(profile_keys)];
	enum prov_rc rc;
	int nomem = 0;

	cred_path = shared_file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials", &nomem);
	conf_path = shared_file_path("AWS_CONFIG_FILE", "config", &nomem);
	if (nomem) {
		rc = why_nomem(w, "profile");
		goto out;
	}
	if (!cred_path && !conf_path) {
		why_add(w, "profile: HOME not set and no AWS_SHARED_CREDENTIALS_FILE/AWS_CONFIG_FILE");
		rc = explicit ? PROV_FAIL : PROV_SKIP;
		goto out;
	}
	rc = conf_path ? profile_parse_file(conf_path, profile, 1, &conf, w) : PROV_SKIP;
	if (rc == PROV_SKIP && cred_path)
		rc = profile_parse_file(cred_path, profile, 0, &cred, w);
	if (rc == PROV_FAIL)
		goto out;

	/* The credentials file wins, key by key. */
	for (size_t i = 0; i < KL_ARRAY_LEN(v); i++)
		v[i] = cred.v[i] ? cred.v[i] : conf.v[i];
	if (v[0] && v[1]) {
		if (creds_fill(out, "profile", v[0], v[1], v[2], 0) != KL_OK)
			rc = why_nomem(w, "profile");
		else
			rc = PROV_FOUND;
	} else if (v[0] || v[1]) {
		why_add(w, "profile '%s': %s without %s", profile,
			v[0] ? "aws_access_key_id" : "aws_secret_access_key",
			v[0] ? "aws_secret_access_key" : "aws_access_key_id");
		rc = PROV_FAIL;
	} else if (conf.found || cred.found) {
		why_add(w, "profile '%s': no aws_access_key_id/aws_secret_access_key (role_arn, "
			"credential_process and sso settings are not supported)", profile);
		rc = explicit ? PROV_FAIL : PROV_SKIP;
	} else {
		why_add(w, "profile '%s': not found in %s or %s", profile,
			cred_path ? cred_path : "(no credentials file)",
			conf_path ? conf_path : "(no config file)");
		rc = explicit ? PROV_FAIL : PROV_SKIP;
	}
out:
	profile_vals_done(&conf);
	profile_vals_done(&cred);
	free(cred_path);
	free(conf_path);
	return rc;
}

/* Appends "&name=value" (or "name=value" first) percent-encoded. */
static enum kl_err form_add(struct buf *b, const char *name, const char *value)
{
	enum kl_err err = KL_OK;

	if (b->len)
		err = buf_append_byte(b, '&');
	if (!err)
		err = buf_printf(b, "%s=", name);
	if (!err)
		err = http_uri_encode(b, value, strlen(value), 0);
	return err;
}

/* "https://sts.REGION.amazonaws.com" (".com.cn" in the China regions). */
static char *sts_default_endpoint(const char *region)
{
	char *p = NULL;

	if (asprintf(&p, "https://sts.%s.amazonaws.com%s", region,
		     strncmp(region, "cn-", 3) == 0 ? ".cn" : "") < 0)
		return NULL;
	return p;
}

/* Copies the text of element name out of an STS error document. */
static void sts_error_field(const struct buf *body, const char *name, char *dst, size_t size)
{
	char *text = NULL;

	dst[0] = '\0';
	if (body->len && xml_text(body->data, body->len, name, &text) == KL_OK) {
		snprintf(dst, size, "%s", text);
		free(text);
	}
}

static enum prov_rc sts_parse(const struct buf *body, struct aws_creds *out, struct why *w)
{
	static const char *const names[] = { "AccessKeyId", "SecretAccessKey", "SessionToken",
					     "Expiration" };
	char *val[KL_ARRAY_LEN(names)] = { NULL };
	struct xml_slice cs;
	size_t pos = 0;
	int64_t expires = 0;
	enum prov_rc rc = PROV_FAIL;

	if (!body->len || !xml_next(body->data, body->len, "Credentials", &pos, &cs)) {
		why_add(w, "web-identity: STS response has no Credentials");
		return PROV_FAIL;
	}
	for (size_t i = 0; i < KL_ARRAY_LEN(names); i++) {
		enum kl_err err = xml_slice_text(cs, names[i], &val[i]);

		if (err == KL_ENOMEM) {
			why_nomem(w, "web-identity");
			goto out;
		}
		if (err || !*val[i]) {
			why_add(w, "web-identity: STS response lacks %s", names[i]);
			goto out;
		}
	}
	if (parse_iso8601(val[3], &expires) != 0) {
		why_add(w, "web-identity: bad Expiration '%.40s'", val[3]);
		goto out;
	}
	if (creds_fill(out, "web-identity", val[0], val[1], val[2], expires) != KL_OK) {
		why_nomem(w, "web-identity");
		goto out;
	}
	rc = PROV_FOUND;
out:
	for (size_t i = 0; i < KL_ARRAY_LEN(val); i++)
		kl_free_secret(val[i]);
	return rc;
}

static enum prov_rc prov_web_identity(struct creds_chain *c, struct aws_creds *out,
				      struct why *w)
{
	static const struct http_header headers[] = {
		{ "Content-Type", "application/x-www-form-urlencoded; charset=utf-8" },
	};
	const char *token_file = env_nonempty("AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *role_arn = env_nonempty("AWS_ROLE_ARN");
	const char *session = env_nonempty("AWS_ROLE_SESSION_NAME");
	char session_buf[40], *token = NULL, *url = NULL;
	struct buf form;
	struct http_response resp;
	struct kl_errinfo ei = { 0 };
	enum prov_rc rc = PROV_FAIL;
	enum kl_err err;
	int sys_errno;

	if (!token_file) {
		why_add(w, "web-identity: AWS_WEB_IDENTITY_TOKEN_FILE not set");
		return PROV_SKIP;
	}
	if (!role_arn) {
		why_add(w, "web-identity: AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
		return PROV_FAIL;
	}
	err = read_token_file(token_file, &token, &sys_errno);
	if (err == KL_ENOMEM)
		return why_nomem(w, "web-identity");
	if (err) {
		why_add(w, "web-identity: cannot read %s: %s", token_file,
			err == KL_ENOTFOUND ? "no such file" : strerror(sys_errno));
		return PROV_FAIL;
	}
	if (!*token) {
		why_add(w, "web-identity: %s is empty", token_file);
		kl_free_secret(token);
		return PROV_FAIL;
	}
	if (!session) {
		snprintf(session_buf, sizeof(session_buf), "kinlake-%lld",
			 (long long)kl_wall_ms());
		session = session_buf;
	}

	/* Query protocol, parameters in the body (never in the URL: the token
	 * is a bearer secret), sorted by name; unsigned by design. */
	buf_init(&form, 0);
	http_response_init(&resp);
	url = c->sts_endpoint ? strdup(c->sts_endpoint) : sts_default_endpoint(c->region);
	if (!url || form_add(&form, "Action", "AssumeRoleWithWebIdentity") ||
	    form_add(&form, "RoleArn", role_arn) ||
	    form_add(&form, "RoleSessionName", session) ||
	    form_add(&form, "Version", STS_VERSION) ||
	    form_add(&form, "WebIdentityToken", token)) {
		rc = why_nomem(w, "web-identity");
		goto out;
	}
	err = chain_http(c, "POST", url, headers, KL_ARRAY_LEN(headers), &form, &resp, &ei);
	if (err) {
		why_transport(w, "web-identity", "STS", err, &ei);
		goto out;
	}
	if (resp.status != 200) {
		char code[64], msg[160];

		sts_error_field(&resp.body, "Code", code, sizeof(code));
		sts_error_field(&resp.body, "Message", msg, sizeof(msg));
		w->http_status = resp.status;
		snprintf(w->aws_code, sizeof(w->aws_code), "%s", code);
		why_add(w, "web-identity: STS AssumeRoleWithWebIdentity: HTTP %ld%s%s%s%s",
			resp.status, code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
		goto out;
	}
	rc = sts_parse(&resp.body, out, w);
out:
	response_wipe(&resp);
	buf_wipe(&form);
	kl_free_secret(token);
	free(url);
	return rc;
}

/*
 * Over plain http, AWS_CONTAINER_CREDENTIALS_FULL_URI may only name a
 * loopback address or the ECS/EKS agents' link-local addresses: anything
 * else would send the authorization token and receive credentials in clear
 * text over a network.
 */
static int full_uri_allowed(const char *uri)
{
	static const char *const allowed[] = { "169.254.170.2", "169.254.170.23",
					       "fd00:ec2::23", "localhost", "::1" };
	char host[64];
	const char *h, *e;
	struct in_addr a4;

	if (strncasecmp(uri, "https://", 8) == 0)
		return 1;
	if (strncasecmp(uri, "http://", 7) != 0)
		return 0;
	h = uri + 7;
	if (*h == '[') {
		e = strchr(++h, ']');
		if (!e)
			return 0;
	} else {
		e = h + strcspn(h, ":/?#");
	}
	if (strcspn(h, "@") < (size_t)(e - h) || (size_t)(e - h) >= sizeof(host) || e == h)
		return 0;
	memcpy(host, h, (size_t)(e - h));
	host[e - h] = '\0';
	for (size_t i = 0; i < KL_ARRAY_LEN(allowed); i++)
		if (strcasecmp(host, allowed[i]) == 0)
			return 1;
	/* 127.0.0.0/8 */
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

static enum prov_rc prov_container(struct creds_chain *c, struct aws_creds *out,
				   struct why *w)
{
	const char *rel = env_nonempty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *full = env_nonempty("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *token_file = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *token_env = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	char *token = NULL, *url = NULL;
	struct http_header auth = { "Authorization", NULL };
	struct http_response resp;
	struct kl_errinfo ei = { 0 };
	enum prov_rc rc = PROV_FAIL;
	enum kl_err err;

	if (!rel && !full) {
		why_add(w, "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI not set");
		return PROV_SKIP;
	}
	if (rel) {
		const char *base = c->ecs_endpoint ? c->ecs_endpoint : CREDS_DEFAULT_ECS;
		size_t blen = strlen(base);

		while (blen && base[blen - 1] == '/')
			blen--;
		if (asprintf(&url, "%.*s%s%s", (int)blen, base, rel[0] == '/' ? "" : "/", rel) < 0)
			return why_nomem(w, "container");
	} else {
		if (!full_uri_allowed(full)) {
			why_add(w, "container: AWS_CONTAINER_CREDENTIALS_FULL_URI must be https or "
				"http to a loopback or ECS/EKS agent address");
			return PROV_FAIL;
		}
		url = strdup(full);
		if (!url)
			return why_nomem(w, "container");
	}
	/* The token file wins: it is what rotates (EKS Pod Identity). */
	if (token_file) {
		int sys_errno;

		err = read_token_file(token_file, &token, &sys_errno);
		if (err == KL_ENOMEM) {
			rc = why_nomem(w, "container");
			goto out;
		}
		if (err) {
			why_add(w, "container: cannot read %s: %s", token_file,
				err == KL_ENOTFOUND ? "no such file" : strerror(sys_errno));
			goto out;
		}
	} else if (token_env) {
		token = strdup(token_env);
		if (!token) {
			rc = why_nomem(w, "container");
			goto out;
		}
	}
	if (token && has_ctl(token)) {
		why_add(w, "container: the authorization token contains control characters");
		goto out;
	}
	auth.value = token;

	http_response_init(&resp);
	err = chain_http(c, "GET", url, &auth, token && *token ? 1 : 0, NULL, &resp, &ei);
	if (err) {
		why_transport(w, "container", "credentials endpoint", err, &ei);
	} else if (resp.status != 200) {
		w->http_status = resp.status;
		why_add(w, "container: credentials endpoint answered HTTP %ld", resp.status);
	} else {
		rc = parse_json_creds("container", &resp.body, out, w);
	}
	response_wipe(&resp);
out:
	kl_free_secret(token);
	free(url);
	return rc;
}

/* IMDS request outcome. */
enum imds_rc {
	IMDS_OK,
	IMDS_UNAUTHORIZED,            /* 401: the token is stale */
	IMDS_FAILED,                  /* reason recorded */
};

/*
 * Makes sure c->imds_token is fresh, fetching one if needed. Sets *v1 when
 * the token request failed and IMDSv1 is allowed. Returns 0, or -1 with a
 * reason recorded.
 */
static int imds_ensure_token(struct creds_chain *c, const char *base, int *v1, struct why *w)
{
	char ttl[24], *url = NULL;
	struct http_header h = { "X-aws-ec2-metadata-token-ttl-seconds", ttl };
	struct http_response resp;
	struct kl_errinfo ei = { 0 };
	enum kl_err err;
	int64_t now = kl_mono_ms(), ttl_ms = (int64_t)c->imds_token_ttl_s * 1000;
	int rc = -1;

	*v1 = 0;
	if (c->imds_token && now < c->imds_token_stale_mono_ms)
		return 0;
	secret_replace(&c->imds_token, NULL);
	snprintf(ttl, sizeof(ttl), "%ld", c->imds_token_ttl_s);
	if (asprintf(&url, "%s/latest/api/token", base) < 0) {
		why_nomem(w, "imds");
		return -1;
	}
	http_response_init(&resp);
	err = chain_http(c, "PUT", url, &h, 1, NULL, &resp, &ei);
	if (err == KL_OK && resp.status == 200 && resp.body.len && !has_ctl(resp.body.data)) {
		c->imds_token = strdup(resp.body.data);
		if (!c->imds_token) {
			why_nomem(w, "imds");
			goto out;
		}
		/* Renew a little before the TTL runs out: a quarter of it, at most a minute. */
		c->imds_token_stale_mono_ms = now + ttl_ms - (ttl_ms / 4 < 60000 ? ttl_ms / 4 : 60000);
		rc = 0;
		goto out;
	}
	/* A connection failure would fail the same way without a token. */
	if (c->allow_imdsv1 && err != KL_ECONNECT) {
		*v1 = 1;
		rc = 0;
		goto out;
	}
	if (err) {
		why_transport(w, "imds", "token request", err, &ei);
	} else if (resp.status == 200) {
		why_add(w, "imds: token request returned an empty or unusable token");
	} else {
		w->http_status = resp.status;
		why_add(w, "imds: token request answered HTTP %ld%s", resp.status,
			c->allow_imdsv1 ? "" : " and IMDSv1 fallback is disabled");
	}
out:
	response_wipe(&resp);
	free(url);
	return rc;
}

static enum imds_rc imds_get(struct creds_chain *c, const char *url, int v1,
			     struct http_response *resp, const char *what, struct why *w)
{
	struct http_header h = { "X-aws-ec2-metadata-token", c->imds_token };
	struct kl_errinfo ei = { 0 };
	enum kl_err err = chain_http(c, "GET", url, &h, v1 ? 0 : 1, NULL, resp, &ei);

	if (err) {
		why_transport(w, "imds", what, err, &ei);
		return IMDS_FAILED;
	}
	if (resp->status == 200)
		return IMDS_OK;
	if (resp->status == 401 && !v1)
		return IMDS_UNAUTHORIZED;
	w->http_status = resp->status;
	if (resp->status == 404)
		why_add(w, "imds: %s: HTTP 404 (no IAM role attached to this instance?)", what);
	else if (resp->status == 401)
		why_add(w, "imds: %s: HTTP 401 without a token (IMDSv2 is required)", what);
	else
		why_add(w, "imds: %s answered HTTP %ld", what, resp->status);
	return IMDS_FAILED;
}

static int imds_disabled_by_env(void)
{
	const char *v = env_nonempty("AWS_EC2_METADATA_DISABLED");

	return v && strcasecmp(v, "true") == 0;
}

static enum prov_rc prov_imds(struct creds_chain *c, struct aws_creds *out, struct why *w)
{
	const char *ep = c->imds_endpoint ? c->imds_endpoint
					  : env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	char *base = NULL, *role = NULL;
	struct buf url;
	struct http_response resp;
	enum prov_rc rc = PROV_FAIL;
	size_t blen;

	if (c->disable_imds || imds_disabled_by_env()) {
		why_add(w, "imds: disabled");
		return PROV_SKIP;
	}
	if (!ep)
		ep = CREDS_DEFAULT_IMDS;
	for (blen = strlen(ep); blen && ep[blen - 1] == '/'; blen--)
		;
	base = strndup(ep, blen);
	if (!base)
		return why_nomem(w, "imds");
	buf_init(&url, 0);
	http_response_init(&resp);

	/* Two tries: a 401 means the token went stale under us; fetch a new one. */
	for (int attempt = 0; attempt < 2; attempt++) {
		enum imds_rc r;
		int v1;
		size_t n;

		if (imds_ensure_token(c, base, &v1, w) < 0)
			goto out;
		buf_reset(&url);
		if (buf_printf(&url, "%s/latest/meta-data/iam/security-credentials/", base)) {
			rc = why_nomem(w, "imds");
			goto out;
		}
		response_wipe(&resp);
		http_response_init(&resp);
		r = imds_get(c, url.data, v1, &resp, "role name", w);
		if (r == IMDS_UNAUTHORIZED) {
			secret_replace(&c->imds_token, NULL);
			continue;
		}
		if (r != IMDS_OK)
			goto out;
		n = resp.body.len ? strcspn(resp.body.data, "\r\n") : 0;
		while (n && isspace((unsigned char)resp.body.data[n - 1]))
			n--;
		if (!n) {
			why_add(w, "imds: empty IAM role name");
			goto out;
		}
		free(role);
		role = strndup(resp.body.data, n);
		if (!role || http_uri_encode(&url, role, n, 0)) {
			rc = why_nomem(w, "imds");
			goto out;
		}
		response_wipe(&resp);
		http_response_init(&resp);
		r = imds_get(c, url.data, v1, &resp, "role credentials", w);
		if (r == IMDS_UNAUTHORIZED) {
			secret_replace(&c->imds_token, NULL);
			continue;
		}
		if (r == IMDS_OK)
			rc = parse_json_creds("imds", &resp.body, out, w);
		goto out;
	}
	w->http_status = 401;
	why_add(w, "imds: HTTP 401 even with a new token");
out:
	response_wipe(&resp);
	buf_done(&url);
	free(role);
	free(base);
	return rc;
}

/* ------------------------------------------------------------------ chain */

static enum prov_rc (*const providers[])(struct creds_chain *, struct aws_creds *,
					  struct why *) = {
	prov_config, prov_env, prov_profile, prov_web_identity, prov_container, prov_imds,
};

/*
 * Walks the providers in order. Called by the one refreshing thread,
 * without the lock. Returns KL_OK with *ret_creds filled, or the error
 * with the reasons in *fail_info.
 */
static enum kl_err chain_walk(struct creds_chain *c, struct aws_creds *ret_creds,
			      struct kl_errinfo *fail_info)
{
	struct why w = { .err = KL_ECREDS };
	struct aws_creds fresh = { 0 };
	int64_t now = kl_wall_ms();

	for (size_t i = 0; i < KL_ARRAY_LEN(providers); i++) {
		enum prov_rc rc = providers[i](c, &fresh, &w);

		if (rc == PROV_SKIP)
			continue;
		if (rc == PROV_FAIL)
			break;
		if (fresh.expires_at_ms && fresh.expires_at_ms <= now) {
			why_add(&w, "%s: credentials already expired", fresh.provider);
			creds_done(&fresh);
			break;
		}
		log_debug("creds: using credentials from %s%s", fresh.provider,
			  fresh.expires_at_ms ? " (temporary)" : "");
		*ret_creds = fresh;
		return KL_OK;
	}
	kl_errinfo_clear(fail_info);
	fail_info->http_status = w.http_status;
	memcpy(fail_info->aws_code, w.aws_code, sizeof(fail_info->aws_code));
	memcpy(fail_info->message, w.text, sizeof(fail_info->message));
	return w.err;
}

enum kl_err creds_chain_new(const struct creds_config *cfg, struct creds_chain **ret_chain)
{
	struct creds_chain *c;
	int ok = 1;

	/* Explicit keys come as a pair; a lone token is a mistake too. */
	if (!cfg || !cfg->access_key_id != !cfg->secret_access_key ||
	    (cfg->session_token && !cfg->access_key_id) ||
	    (cfg->access_key_id && (!*cfg->access_key_id || !*cfg->secret_access_key)))
		return KL_ECONFIG;
	if (cfg->imds_token_ttl_s < 0 || cfg->imds_token_ttl_s > CREDS_DEFAULT_TOKEN_TTL_S ||
	    cfg->refresh_window_s < 0 || cfg->timeout_ms < 0)
		return KL_ECONFIG;
	c = calloc(1, sizeof(*c));
	if (!c)
		return KL_ENOMEM;
	if (pthread_mutex_init(&c->lock, NULL) != 0) {
		free(c);
		return KL_ENOMEM;
	}
	if (pthread_cond_init(&c->refreshed, NULL) != 0) {
		pthread_mutex_destroy(&c->lock);
		free(c);
		return KL_ENOMEM;
	}
	c->cfg_access_key_id = dup_or_null(cfg->access_key_id, &ok);
	c->cfg_secret_access_key = dup_or_null(cfg->secret_access_key, &ok);
	c->cfg_session_token = dup_or_null(cfg->session_token, &ok);
	c->profile = dup_or_null(cfg->profile && *cfg->profile ? cfg->profile : NULL, &ok);
	c->sts_endpoint = dup_or_null(cfg->sts_endpoint, &ok);
	c->imds_endpoint = dup_or_null(cfg->imds_endpoint, &ok);
	c->ecs_endpoint = dup_or_null(cfg->ecs_endpoint, &ok);
	c->region = dup_or_null(cfg->region ? cfg->region : CREDS_DEFAULT_REGION, &ok);
	c->ca_file = dup_or_null(cfg->ca_file, &ok);
	c->allow_imdsv1 = cfg->allow_imdsv1;
	c->disable_imds = cfg->disable_imds;
	c->imds_token_ttl_s = cfg->imds_token_ttl_s ? cfg->imds_token_ttl_s
						    : CREDS_DEFAULT_TOKEN_TTL_S;
	c->refresh_window_ms = (int64_t)(cfg->refresh_window_s ? cfg->refresh_window_s
							       : CREDS_DEFAULT_WINDOW_S) * 1000;
	c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : CREDS_DEFAULT_TIMEOUT_MS;
	if (!ok) {
		creds_chain_free(c);
		return KL_ENOMEM;
	}
	*ret_chain = c;
	return KL_OK;
}

void creds_chain_free(struct creds_chain *c)
{
	if (!c)
		return;
	kl_free_secret(c->cfg_access_key_id);
	kl_free_secret(c->cfg_secret_access_key);
	kl_free_secret(c->cfg_session_token);
	free_str(&c->profile);
	free_str(&c->sts_endpoint);
	free_str(&c->imds_endpoint);
	free_str(&c->ecs_endpoint);
	free_str(&c->region);
	free_str(&c->ca_file);
	creds_done(&c->cur);
	kl_free_secret(c->imds_token);
	http_client_free(c->http);
	pthread_cond_destroy(&c->refreshed);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Under lock: can c->cur be handed out as it is? */
static int current_usable(const struct creds_chain *c, int64_t now)
{
	if (!c->have || c->invalidated)
		return 0;
	if (!c->cur.expires_at_ms || now < c->cur.expires_at_ms - c->refresh_window_ms)
		return 1;
	/* Inside the window, still valid, and a refresh failed a moment ago. */
	return now < c->cur.expires_at_ms && kl_mono_ms() < c->retry_at_mono_ms;
}

/* Under lock: valid (maybe inside the window) and not rejected? */
static int current_valid(const struct creds_chain *c, int64_t now)
{
	return c->have && !c->invalidated &&
	       (!c->cur.expires_at_ms || now < c->cur.expires_at_ms);
}

enum kl_err creds_chain_get(struct creds_chain *c, struct aws_creds *ret_creds,
			    struct kl_errinfo *info)
{
	struct aws_creds fresh = { 0 }, copy;
	struct kl_errinfo walk_info;
	enum kl_err err;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		uint64_t gen;

		if (current_usable(c, kl_wall_ms()))
			goto hand_out;
		if (!c->refreshing)
			break;
		/* Someone else is refreshing: the current set will do if it is
		 * still valid; otherwise wait for the outcome and share it. */
		if (current_valid(c, kl_wall_ms()))
			goto hand_out;
		gen = c->generation;
		while (c->refreshing && c->generation == gen)
			pthread_cond_wait(&c->refreshed, &c->lock);
		if (c->generation == gen)
			continue;
		/* The walk we waited for is over: take its outcome, even a set
		 * that is already inside the window, rather than walk again. */
		if (c->have && !c->invalidated)
			goto hand_out;
		if (!c->have) {
			err = c->last_err;
			if (info)
				*info = c->last_info;
			pthread_mutex_unlock(&c->lock);
			return err;
		}
	}
	c->refreshing = 1;
	pthread_mutex_unlock(&c->lock);

	err = chain_walk(c, &fresh, &walk_info);

	pthread_mutex_lock(&c->lock);
	c->refreshing = 0;
	c->generation++;
	if (err == KL_OK) {
		creds_done(&c->cur);
		c->cur = fresh;
		c->have = 1;
		c->invalidated = 0;
		c->retry_at_mono_ms = 0;
	} else if (current_valid(c, kl_wall_ms())) {
		/* Keep serving the old set until it expires; retry later. */
		log_debug("creds: refresh failed, keeping the %s credentials until they expire: %s",
			  c->cur.provider, walk_info.message);
		c->retry_at_mono_ms = kl_mono_ms() + CREDS_RETRY_MS;
		err = KL_OK;
	} else {
		/* Nothing usable: forget the old set so waiters get this error. */
		creds_done(&c->cur);
		c->have = 0;
		c->last_err = err;
		c->last_info = walk_info;
		pthread_cond_broadcast(&c->refreshed);
		pthread_mutex_unlock(&c->lock);
		if (info)
			*info = walk_info;
		return err;
	}
	pthread_cond_broadcast(&c->refreshed);
hand_out:
	err = creds_copy(&copy, &c->cur);
	pthread_mutex_unlock(&c->lock);
	if (err)
		return kl_errinfo_set(info, err, "creds: out of memory copying credentials");
	*ret_creds = copy;
	return KL_OK;
}

void creds_chain_invalidate(struct creds_chain *c)
{
	pthread_mutex_lock(&c->lock);
	c->invalidated = 1;
	pthread_mutex_unlock(&c->lock);
}
