/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keytmpl.c: compiling a key template into a flat token list (literals,
 * date fields, partition lookups, shard, ESNs) and rendering it. All text
 * the tokens refer to lives in one pool owned by the template, so a
 * compiled template is one allocation plus its token array, and rendering
 * allocates nothing.
 */
#include "config.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keytmpl.h"
#include "util.h"

enum tok_kind {
	TOK_LIT,          /* s/len: literal bytes */
	TOK_YEAR4,        /* yyyy */
	TOK_YEAR2,        /* yy */
	TOK_MONTH,        /* MM */
	TOK_DAY,          /* dd */
	TOK_HOUR,         /* HH */
	TOK_MINUTE,       /* mm */
	TOK_SECOND,       /* ss */
	TOK_PARTITION,    /* s: key name */
	TOK_ERROR_TYPE,
	TOK_SHARD,
	TOK_ESN_FIRST,
	TOK_ESN_LAST,
	TOK_ESN_RANGE,
};

struct tok {
	enum tok_kind kind;
	const char *s;    /* into the pool */
	size_t len;
	size_t pos;       /* 1-based position in the template, for messages */
};

struct keytmpl {
	enum keytmpl_kind kind;
	struct tok *toks;
	size_t n_toks;
	const char **pnames;   /* distinct partition names, into the pool */
	size_t n_pnames;
	bool has_error_type, has_timestamp, full_key;
	char *pool;            /* literals and names, NUL-separated */
	size_t pool_len, pool_cap;
	char text[];           /* the template as written (for messages) */
};

/* Compile-time state: where we are and what to report. */
struct compiler {
	struct keytmpl *t;
	const char *text;
	size_t tok_cap;
	struct kl_errinfo *info;
};

/* ---------------------------------------------------------------- messages */

/* Copies s into out for a message, '?' for anything not printable ASCII. */
static const char *printable(const char *s, size_t n, char *out, size_t out_size)
{
	size_t o = 0;

	for (size_t i = 0; i < n && s[i] && o + 4 < out_size; i++) {
		unsigned char c = (unsigned char)s[i];

		out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (o + 4 < out_size && n > o && s[o])
		out[o++] = '.', out[o++] = '.', out[o++] = '.';
	out[o] = '\0';
	return out;
}

static enum kl_err cerr(struct compiler *c, size_t pos, const char *what, const char *detail)
{
	char tbuf[120];

	return kl_errinfo_set(c->info, KL_ECONFIG, "keytmpl: %s%s at position %zu of '%s'",
			      what, detail ? detail : "", pos,
			      printable(c->text, strlen(c->text), tbuf, sizeof(tbuf)));
}

/* ---------------------------------------------------------------- utf-8 */


/* ---------------------------------------------------------------- compiling */

static struct tok *add_tok(struct compiler *c, enum tok_kind kind, size_t pos)
{
	struct tok *tk;

	if (c->t->n_toks == c->tok_cap)
		return NULL;       /* cannot happen: tok_cap bounds every template */
	tk = &c->t->toks[c->t->n_toks++];
	tk->kind = kind;
	tk->s = NULL;
	tk->len = 0;
	tk->pos = pos;
	return tk;
}

/* Appends n bytes to the pool (NUL-terminated) and returns where they are. */
static const char *pool_add(struct keytmpl *t, const char *s, size_t n)
{
	char *p = t->pool + t->pool_len;

	/* Sized at compile start: output never exceeds twice the input. */
	assert(t->pool_len + n + 1 <= t->pool_cap);
	memcpy(p, s, n);
	p[n] = '\0';
	t->pool_len += n + 1;
	return p;
}

/* Adds a literal token (kept separate from its neighbours so that its
 * position stays exact for messages). */
static enum kl_err add_lit(struct compiler *c, const char *s, size_t n, size_t pos)
{
	struct keytmpl *t = c->t;
	struct tok *tk;

	if (n == 0)
		return KL_OK;
	tk = add_tok(c, TOK_LIT, pos);
	if (!tk)
		return cerr(c, pos, "template too complex", NULL);
	tk->s = pool_add(t, s, n);
	tk->len = n;
	return KL_OK;
}

/* Checks literal template text: valid UTF-8, no control characters. */
static enum kl_err check_lit(struct compiler *c, const char *s, size_t n, size_t base)
{
	for (size_t i = 0; i < n;) {
		unsigned char ch = (unsigned char)s[i];
		size_t l;

		if (ch < 0x20 || ch == 0x7f)
			return cerr(c, base + i, "control character", NULL);
		if (ch == '\\')
			return cerr(c, base + i, "backslash", " (not portable in S3 keys)");
		l = kl_utf8_seq_len((const unsigned char *)s + i, n - i);
		if (!l)
			return cerr(c, base + i, "invalid UTF-8", NULL);
		i += l;
	}
	return KL_OK;
}

/* Compiles a DateTimeFormatter-style pattern; pos is where it starts. */
static enum kl_err compile_pattern(struct compiler *c, const char *p, size_t n, size_t pos)
{
	static const struct {
		char letter;
		size_t count;
		enum tok_kind kind;
	} fields[] = {
		{ 'y', 4, TOK_YEAR4 }, { 'y', 2, TOK_YEAR2 }, { 'M', 2, TOK_MONTH },
		{ 'd', 2, TOK_DAY }, { 'H', 2, TOK_HOUR }, { 'm', 2, TOK_MINUTE },
		{ 's', 2, TOK_SECOND },
	};
	enum kl_err err;
	size_t i = 0;

	if (n == 0)
		return cerr(c, pos, "empty timestamp pattern", NULL);
	c->t->has_timestamp = true;
	while (i < n) {
		char ch = p[i];

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) {
			size_t run = 1, f;
			char name[64];

			while (i + run < n && p[i + run] == ch)
				run++;
			for (f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
				if (fields[f].letter == ch && fields[f].count == run)
					break;
			if (f == sizeof(fields) / sizeof(fields[0])) {
				snprintf(name, sizeof(name), "'%.*s' (supported: yyyy yy MM dd HH mm ss)",
					 run > 8 ? 8 : (int)run, p + i);
				return cerr(c, pos + i, "unsupported timestamp field ", name);
			}
			if (!add_tok(c, fields[f].kind, pos + i))
				return cerr(c, pos + i, "template too complex", NULL);
			i += run;
		} else if (ch == '\'') {
			/* 'quoted literal'; '' is a quote, inside or outside quotes */
			size_t start = i;

			if (i + 1 < n && p[i + 1] == '\'') {
				err = add_lit(c, "'", 1, pos + i);
				if (err)
					return err;
				i += 2;
				continue;
			}
			i++;
			for (;;) {
				size_t j = i;

				while (j < n && p[j] != '\'')
					j++;
				if (j == n)
					return cerr(c, pos + start,
						    "unterminated quote in timestamp pattern", NULL);
				err = check_lit(c, p + i, j - i, pos + i);
				if (!err)
					err = add_lit(c, p + i, j - i, pos + i);
				if (err)
					return err;
				if (j + 1 < n && p[j + 1] == '\'') {
					err = add_lit(c, "'", 1, pos + j);
					if (err)
						return err;
					i = j + 2;
					continue;
				}
				i = j + 1;
				break;
			}
		} else if (ch == '[' || ch == ']' || ch == '{' || ch == '}' || ch == '#') {
			char what[8];

			snprintf(what, sizeof(what), "'%c'", ch);
			return cerr(c, pos + i, "reserved pattern character ", what);
		} else {
			size_t j = i;

			while (j < n && !((p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z')) &&
			       p[j] != '\'' && p[j] != '[' && p[j] != ']' && p[j] != '{' &&
			       p[j] != '}' && p[j] != '#')
				j++;
			err = check_lit(c, p + i, j - i, pos + i);
			if (!err)
				err = add_lit(c, p + i, j - i, pos + i);
			if (err)
				return err;
			i = j;
		}
	}
	return KL_OK;
}

static bool name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '-' || ch == '.';
}

static enum kl_err compile_partition(struct compiler *c, const char *name, size_t n, size_t pos)
{
	struct keytmpl *t = c->t;
	struct tok *tk;
	const char *pooled = NULL;

	if (c->t->kind == KEYTMPL_ERROR)
		return cerr(c, pos, "partition keys cannot be used in the error prefix", NULL);
	if (n == 0)
		return cerr(c, pos, "missing partition key name", NULL);
	if (n > KEYTMPL_NAME_MAX)
		return cerr(c, pos, "partition key name too long", NULL);
	for (size_t i = 0; i < n; i++)
		if (!name_char(name[i]))
			return cerr(c, pos + i, "bad character in partition key name",
				    " (use letters, digits, '_', '-', '.')");
	for (size_t i = 0; i < t->n_pnames; i++)
		if (strlen(t->pnames[i]) == n && memcmp(t->pnames[i], name, n) == 0)
			pooled = t->pnames[i];
	if (!pooled) {
		pooled = pool_add(t, name, n);
		t->pnames[t->n_pnames++] = pooled;
	}
	tk = add_tok(c, TOK_PARTITION, pos);
	if (!tk)
		return cerr(c, pos, "template too complex", NULL);
	tk->s = pooled;
	tk->len = n;
	return KL_OK;
}

/* Compiles the expression expr[0..n) of "!{...}"; pos is where expr starts. */
static enum kl_err compile_expr(struct compiler *c, const char *expr, size_t n, size_t pos)
{
	const char *colon = memchr(expr, ':', n);
	size_t ns_len = colon ? (size_t)(colon - expr) : n;
	const char *arg = colon ? colon + 1 : NULL;
	size_t arg_len = colon ? n - ns_len - 1 : 0;
	size_t arg_pos = pos + ns_len + 1;
	char what[96];

#define NS_IS(s) (ns_len == sizeof(s) - 1 && memcmp(expr, s, ns_len) == 0)
	if (NS_IS("timestamp")) {
		if (!colon)
			return cerr(c, pos, "!{timestamp} needs a pattern",
				    " (e.g. !{timestamp:yyyy/MM/dd})");
		return compile_pattern(c, arg, arg_len, arg_pos);
	}
	if (NS_IS("partitionKeyFromLambda") || NS_IS("partition"))
		return compile_partition(c, arg ? arg : "", arg_len, arg_pos);
	if (NS_IS("partitionKeyFromQuery"))
		return cerr(c, pos, "!{partitionKeyFromQuery:...} is not supported",
			    " (kinlake has no jq: let the plugin set the key and use"
			    " !{partitionKeyFromLambda:NAME})");
	if (NS_IS("firehose")) {
		if (arg_len == sizeof("error-output-type") - 1 &&
		    memcmp(arg, "error-output-type", arg_len) == 0) {
			if (c->t->kind != KEYTMPL_ERROR)
				return cerr(c, pos, "!{firehose:error-output-type} is only allowed"
					    " in the error prefix", NULL);
			c->t->has_error_type = true;
			return add_tok(c, TOK_ERROR_TYPE, pos) ? KL_OK
							       : cerr(c, pos, "template too complex", NULL);
		}
		if (arg_len == sizeof("random-string") - 1 && memcmp(arg, "random-string", arg_len) == 0)
			return cerr(c, pos, "!{firehose:random-string} is not supported",
				    " (keys must be deterministic for exactly-once delivery;"
				    " the shard and ESN range already make them unique)");
		snprintf(what, sizeof(what), " '%.*s'", arg_len > 40 ? 40 : (int)arg_len, arg ? arg : "");
		return cerr(c, arg_pos, "unknown firehose keyword", what);
	}
	{
		static const struct {
			const char *name;
			enum tok_kind kind;
		} plain[] = {
			{ "shard", TOK_SHARD }, { "esn_first", TOK_ESN_FIRST },
			{ "esn_last", TOK_ESN_LAST }, { "esn_range", TOK_ESN_RANGE },
		};

		for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
			if (ns_len != strlen(plain[i].name) || memcmp(expr, plain[i].name, ns_len) != 0)
				continue;
			if (colon) {
				snprintf(what, sizeof(what), " (write !{%s})", plain[i].name);
				return cerr(c, pos + ns_len, "unexpected argument", what);
			}
			return add_tok(c, plain[i].kind, pos) ? KL_OK
							      : cerr(c, pos, "template too complex", NULL);
		}
	}
#undef NS_IS
	snprintf(what, sizeof(what), " '%.*s'", ns_len > 40 ? 40 : (int)ns_len, expr);
	return cerr(c, pos, ns_len ? "unknown namespace" : "empty expression", ns_len ? what : NULL);
}

/* Full-key templates: shard present, both ESNs after the last '/'. */
static enum kl_err check_full_key(struct compiler *c)
{
	struct keytmpl *t = c->t;
	size_t last_slash = 0;          /* index + 1 of the last token that may emit '/' */
	size_t slash_pos = 1;
	bool first = false, last = false, shard = false;

	for (size_t i = 0; i < t->n_toks; i++) {
		const char *slash;

		if (t->toks[i].kind != TOK_LIT)
			continue;
		slash = memrchr(t->toks[i].s, '/', t->toks[i].len);
		if (slash) {
			last_slash = i + 1;
			slash_pos = t->toks[i].pos + (size_t)(slash - t->toks[i].s) + 1;
		}
	}
	for (size_t i = 0; i < t->n_toks; i++) {
		switch (t->toks[i].kind) {
		case TOK_SHARD:
			shard = true;
			break;
		case TOK_ESN_FIRST:
		case TOK_ESN_LAST:
		case TOK_ESN_RANGE:
			if (i < last_slash)
				return cerr(c, t->toks[i].pos, "ESN expression before the last '/'",
					    " (the object name must contain the ESN range)");
			first |= t->toks[i].kind != TOK_ESN_LAST;
			last |= t->toks[i].kind != TOK_ESN_FIRST;
			break;
		default:
			break;
		}
	}
	if (!first || !last)
		return cerr(c, slash_pos, "missing ESN range in the object name",
			    " (add !{esn_range}, or both !{esn_first} and !{esn_last})");
	if (!shard)
		return cerr(c, strlen(c->text) + 1, "missing !{shard}",
			    " (a full key must contain the shard id)");
	return KL_OK;
}

void keytmpl_free(struct keytmpl *t)
{
	if (!t)
		return;
	free(t->toks);
	free(t->pnames);
	free(t->pool);
	free(t);
}

enum kl_err keytmpl_compile(const char *text, enum keytmpl_kind kind,
			    struct keytmpl **ret_t, struct kl_errinfo *info)
{
	struct compiler c = { .text = text, .info = info };
	struct keytmpl *t;
	size_t len, i = 0;
	enum kl_err err = KL_OK;

	if (!text)
		return kl_errinfo_set(info, KL_ECONFIG, "keytmpl: no template");
	len = strlen(text);
	if (len > KEYTMPL_TEXT_MAX)
		return kl_errinfo_set(info, KL_ECONFIG, "keytmpl: template is %zu bytes, at most %d allowed",
				      len, KEYTMPL_TEXT_MAX);
	t = calloc(1, sizeof(*t) + len + 1);
	if (!t)
		return kl_errinfo_set(info, KL_ENOMEM, "keytmpl: out of memory");
	memcpy(t->text, text, len + 1);
	t->kind = kind;
	/* Every token but the default tail consumes at least one character. */
	c.tok_cap = len + 8;
	t->toks = calloc(c.tok_cap, sizeof(*t->toks));
	t->pnames = calloc(len / 4 + 1, sizeof(*t->pnames));
	t->pool_cap = 2 * len + 8;
	t->pool = malloc(t->pool_cap);
	if (!t->toks || !t->pnames || !t->pool) {
		keytmpl_free(t);
		return kl_errinfo_set(info, KL_ENOMEM, "keytmpl: out of memory");
	}
	c.t = t;
	c.text = t->text;

	while (i < len && !err) {
		if (text[i] == '!' && text[i + 1] == '{') {
			size_t j = i + 2;

			while (j < len && text[j] != '}' && !(text[j] == '!' && text[j + 1] == '{'))
				j++;
			if (j == len) {
				err = cerr(&c, i + 1, "unterminated '!{'", " (missing '}')");
				break;
			}
			if (text[j] != '}') {
				err = cerr(&c, j + 1, "'!{' inside an expression",
					   " (the one opened before is not closed)");
				break;
			}
			err = compile_expr(&c, text + i + 2, j - i - 2, i + 3);
			i = j + 1;
		} else {
			size_t j = i;

			while (j < len && !(text[j] == '!' && text[j + 1] == '{'))
				j++;
			err = check_lit(&c, text + i, j - i, i + 1);
			if (!err)
				err = add_lit(&c, text + i, j - i, i + 1);
			i = j;
		}
	}
	if (!err && len && text[0] == '/')
		err = cerr(&c, 1, "key starts with '/'", " (S3 keys should not)");
	if (!err && strstr(text, "//"))
		err = cerr(&c, (size_t)(strstr(text, "//") - text) + 1, "empty path segment '//'", NULL);
	if (!err) {
		for (size_t k = 0; k < t->n_toks; k++)
			if (t->toks[k].kind == TOK_ESN_FIRST || t->toks[k].kind == TOK_ESN_LAST ||
			    t->toks[k].kind == TOK_ESN_RANGE)
				t->full_key = true;
		if (t->full_key) {
			err = check_full_key(&c);
		} else {
			/* Default object name: <prefix><shard>/<esn range><ext>. */
			if (!add_tok(&c, TOK_SHARD, len + 1))
				err = KL_ENOMEM;
			else if (add_lit(&c, "/", 1, len + 1) != KL_OK)
				err = KL_ENOMEM;
			else if (!add_tok(&c, TOK_ESN_RANGE, len + 1))
				err = KL_ENOMEM;
		}
	}
	if (err) {
		keytmpl_free(t);
		return err == KL_ENOMEM ? kl_errinfo_set(info, KL_ENOMEM, "keytmpl: out of memory") : err;
	}
	*ret_t = t;
	return KL_OK;
}

/* ---------------------------------------------------------------- rendering */

enum kl_err keytmpl_check_value(const char *value, struct kl_errinfo *info)
{
	char pbuf[64];
	size_t len;

	if (!value || !*value)
		return kl_errinfo_set(info, KL_EINVAL, "empty value");
	len = strlen(value);
	if (len > KEYTMPL_VALUE_MAX)
		return kl_errinfo_set(info, KL_EINVAL, "value of %zu bytes is longer than %d",
				      len, KEYTMPL_VALUE_MAX);
	if (strcmp(value, ".") == 0 || strcmp(value, "..") == 0)
		return kl_errinfo_set(info, KL_EINVAL, "value '%s' is a relative path segment", value);
	for (size_t i = 0; i < len;) {
		unsigned char ch = (unsigned char)value[i];
		size_t l;

		if (ch == '/' || ch == '\\')
			return kl_errinfo_set(info, KL_EINVAL, "value '%s' contains '%c'",
					      printable(value, len, pbuf, sizeof(pbuf)), ch);
		if (ch < 0x20 || ch == 0x7f)
			return kl_errinfo_set(info, KL_EINVAL, "value '%s' contains a control character",
					      printable(value, len, pbuf, sizeof(pbuf)));
		l = kl_utf8_seq_len((const unsigned char *)value + i, len - i);
		if (!l)
			return kl_errinfo_set(info, KL_EINVAL, "value '%s' is not valid UTF-8",
					      printable(value, len, pbuf, sizeof(pbuf)));
		i += l;
	}
	return KL_OK;
}

/* Prefixes the message in info (set by keytmpl_check_value) with context. */
static enum kl_err value_error(struct kl_errinfo *info, enum kl_err err, const char *what,
			       const char *name)
{
	char msg[sizeof(info->message)];

	if (!info)
		return err;
	snprintf(msg, sizeof(msg), "%s", info->message);
	return kl_errinfo_set(info, err, "keytmpl: %s%s%s%s: %s", what, name ? " '" : "",
			      name ? name : "", name ? "'" : "", msg);
}

struct out {
	char *p;
	size_t len, cap;
	bool overflow;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->overflow || n > o->cap - o->len) {
		o->overflow = true;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void put_num(struct out *o, unsigned v, int width)
{
	char b[16];
	int n = snprintf(b, sizeof(b), "%0*u", width, v);

	put(o, b, (size_t)n);
}

enum kl_err keytmpl_render(const struct keytmpl *t, const struct keytmpl_batch *b,
			   char *out, size_t out_size, size_t *ret_len,
			   struct kl_errinfo *info)
{
	struct out o = { .p = out };
	struct tm tm = { 0 };
	char ek[ESN_KEY_MAX];
	size_t ek_len;
	const char *ext = b->ext ? b->ext : "";
	enum kl_err err;

	if (!out || out_size == 0)
		return kl_errinfo_set(info, KL_ENOMEM, "keytmpl: no output buffer");
	o.cap = out_size - 1 < KEYTMPL_KEY_MAX ? out_size - 1 : KEYTMPL_KEY_MAX;
	err = keytmpl_check_value(b->shard_id, info);
	if (err)
		return value_error(info, err, "shard id", NULL);
	if (!b->first || !b->last || !esn_valid(b->first) || !esn_valid(b->last))
		return kl_errinfo_set(info, KL_EINVAL, "keytmpl: batch without a valid ESN range");
	if (esn_cmp(b->first, b->last) > 0)
		return kl_errinfo_set(info, KL_EINVAL, "keytmpl: first ESN is after the last");
	if (strchr(ext, '/'))
		return kl_errinfo_set(info, KL_EINVAL, "keytmpl: extension '%s' contains '/'", ext);
	if (t->has_timestamp) {
		time_t secs;

		if (b->first_arrival_ms < 0)
			return kl_errinfo_set(info, KL_EINVAL, "keytmpl: negative arrival time %" PRId64,
					      b->first_arrival_ms);
		secs = (time_t)(b->first_arrival_ms / 1000);
		if (!gmtime_r(&secs, &tm))
			return kl_errinfo_set(info, KL_EINVAL,
					      "keytmpl: arrival time %" PRId64 " out of range",
					      b->first_arrival_ms);
	}
	if (t->has_error_type) {
		err = keytmpl_check_value(b->error_output_type, info);
		if (err)
			return value_error(info, err, "error output type", NULL);
	}

	for (size_t i = 0; i < t->n_toks; i++) {
		const struct tok *tk = &t->toks[i];

		switch (tk->kind) {
		case TOK_LIT:
			put(&o, tk->s, tk->len);
			break;
		case TOK_YEAR4:
			put_num(&o, (unsigned)(tm.tm_year + 1900), 4);
			break;
		case TOK_YEAR2:
			put_num(&o, (unsigned)(tm.tm_year + 1900) % 100, 2);
			break;
		case TOK_MONTH:
			put_num(&o, (unsigned)tm.tm_mon + 1, 2);
			break;
		case TOK_DAY:
			put_num(&o, (unsigned)tm.tm_mday, 2);
			break;
		case TOK_HOUR:
			put_num(&o, (unsigned)tm.tm_hour, 2);
			break;
		case TOK_MINUTE:
			put_num(&o, (unsigned)tm.tm_min, 2);
			break;
		case TOK_SECOND:
			/* tm_sec can be 60 only for leap seconds, which time_t never has. */
			put_num(&o, (unsigned)tm.tm_sec, 2);
			break;
		case TOK_PARTITION: {
			const char *v = NULL;

			for (size_t k = 0; k < b->n_pkeys; k++)
				if (b->pkeys[k].name && strcmp(b->pkeys[k].name, tk->s) == 0) {
					v = b->pkeys[k].value;
					break;
				}
			if (!v)
				return kl_errinfo_set(info, KL_ENOTFOUND,
						      "keytmpl: partition key '%s' is missing", tk->s);
			err = keytmpl_check_value(v, info);
			if (err)
				return value_error(info, err, "partition key", tk->s);
			put(&o, v, strlen(v));
			break;
		}
		case TOK_ERROR_TYPE:
			put(&o, b->error_output_type, strlen(b->error_output_type));
			break;
		case TOK_SHARD:
			put(&o, b->shard_id, strlen(b->shard_id));
			break;
		case TOK_ESN_FIRST:
		case TOK_ESN_RANGE:
			ek_len = esn_key(b->first, ek);
			put(&o, ek, ek_len);
			if (tk->kind == TOK_ESN_FIRST)
				break;
			put(&o, "_", 1);
			/* fall through */
		case TOK_ESN_LAST:
			ek_len = esn_key(b->last, ek);
			put(&o, ek, ek_len);
			break;
		}
	}
	put(&o, ext, strlen(ext));
	if (o.overflow)
		return kl_errinfo_set(info, KL_ENOMEM, "keytmpl: key would be longer than %zu bytes", o.cap);
	out[o.len] = '\0';
	/* Only quoted '/' in a timestamp pattern can get here; refuse it too. */
	if (out[0] == '/' || strstr(out, "//"))
		return kl_errinfo_set(info, KL_EINVAL, "keytmpl: key '%.80s' has an empty path segment",
				      out);
	if (ret_len)
		*ret_len = o.len;
	return KL_OK;
}

size_t keytmpl_partition_count(const struct keytmpl *t)
{
	return t->n_pnames;
}

const char *keytmpl_partition_name(const struct keytmpl *t, size_t i)
{
	return i < t->n_pnames ? t->pnames[i] : NULL;
}

bool keytmpl_has_error_type(const struct keytmpl *t)
{
	return t->has_error_type;
}

bool keytmpl_has_timestamp(const struct keytmpl *t)
{
	return t->has_timestamp;
}

bool keytmpl_is_full_key(const struct keytmpl *t)
{
	return t->full_key;
}

size_t keytmpl_part_count(const struct keytmpl *t)
{
	return t->n_toks;
}

bool keytmpl_part(const struct keytmpl *t, size_t i, struct keytmpl_part *ret_part)
{
	enum keytmpl_part_kind kind = KEYTMPL_PART_LITERAL;

	if (i >= t->n_toks)
		return false;
	switch (t->toks[i].kind) {
	case TOK_LIT: kind = KEYTMPL_PART_LITERAL; break;
	case TOK_YEAR4: kind = KEYTMPL_PART_YEAR4; break;
	case TOK_YEAR2: kind = KEYTMPL_PART_YEAR2; break;
	case TOK_MONTH: kind = KEYTMPL_PART_MONTH; break;
	case TOK_DAY: kind = KEYTMPL_PART_DAY; break;
	case TOK_HOUR: kind = KEYTMPL_PART_HOUR; break;
	case TOK_MINUTE: kind = KEYTMPL_PART_MINUTE; break;
	case TOK_SECOND: kind = KEYTMPL_PART_SECOND; break;
	case TOK_PARTITION: kind = KEYTMPL_PART_PARTITION; break;
	case TOK_ERROR_TYPE: kind = KEYTMPL_PART_ERROR_TYPE; break;
	case TOK_SHARD: kind = KEYTMPL_PART_SHARD; break;
	case TOK_ESN_FIRST: kind = KEYTMPL_PART_ESN_FIRST; break;
	case TOK_ESN_LAST: kind = KEYTMPL_PART_ESN_LAST; break;
	case TOK_ESN_RANGE: kind = KEYTMPL_PART_ESN_RANGE; break;
	}
	ret_part->kind = kind;
	ret_part->text = t->toks[i].s;
	ret_part->len = t->toks[i].len;
	ret_part->pos = t->toks[i].pos;
	return true;
}

const char *keytmpl_text(const struct keytmpl *t)
{
	return t->text;
}
