/* SPDX-License-Identifier: Apache-2.0 */
/*
 * athena_ddl.h: for tests, a reader of the CREATE EXTERNAL TABLE statements
 * `kinlake athena-ddl` prints, and a matcher that does what Athena's
 * partition projection does with an object key: take the LOCATION or
 * storage.location.template, read each ${column} by its projection type
 * (date in its format within range start..now, integer within range and
 * digits, enum value, injected segment), then expect the kinlake object
 * name "<shard>/<esn>_<esn><ext>". Written from the Athena documentation,
 * not from src/cli/athena.c, so it checks the generator instead of
 * repeating it. Header-only; every function is static.
 */
#ifndef KL_ATHENA_DDL_H
#define KL_ATHENA_DDL_H

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DDL_COLS_MAX 64
#define DDL_PROPS_MAX 160

struct ddl_col {
	char name[72];
	char type[128];
};

struct ddl_prop {
	char key[128];
	char value[1024];
};

struct ddl_table {
	char database[72], table[72];
	struct ddl_col cols[DDL_COLS_MAX];
	size_t n_cols;
	struct ddl_col pcols[DDL_COLS_MAX];
	size_t n_pcols;
	char row_format[160];          /* the SerDe class, or "DELIMITED" */
	char location[1024];
	struct ddl_prop props[DDL_PROPS_MAX];
	size_t n_props;
};

/* ------------------------------------------------------------ lexing */

static void ddl_skip(const char **pp)
{
	const char *p = *pp;

	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
			continue;
		}
		break;
	}
	*pp = p;
}

/* Consumes the keyword kw (case-insensitive, whole word). */
static bool ddl_word(const char **pp, const char *kw)
{
	size_t n = strlen(kw);

	ddl_skip(pp);
	if (strncasecmp(*pp, kw, n) != 0 || isalnum((unsigned char)(*pp)[n]) || (*pp)[n] == '_')
		return false;
	*pp += n;
	return true;
}

static bool ddl_punct(const char **pp, char c)
{
	ddl_skip(pp);
	if (**pp != c)
		return false;
	(*pp)++;
	return true;
}

/* `ident` (no backquote inside). */
static bool ddl_ident(const char **pp, char *out, size_t size)
{
	const char *p, *end;

	ddl_skip(pp);
	p = *pp;
	if (*p != '`')
		return false;
	end = strchr(p + 1, '`');
	if (!end || (size_t)(end - p - 1) >= size || end == p + 1)
		return false;
	memcpy(out, p + 1, (size_t)(end - p - 1));
	out[end - p - 1] = '\0';
	*pp = end + 1;
	return true;
}

/* 'string' with backslash escapes. */
static bool ddl_string(const char **pp, char *out, size_t size)
{
	const char *p;
	size_t o = 0;

	ddl_skip(pp);
	p = *pp;
	if (*p != '\'')
		return false;
	for (p++; *p && *p != '\''; p++) {
		if (*p == '\\' && p[1])
			p++;
		if (o + 1 >= size)
			return false;
		out[o++] = *p;
	}
	if (*p != '\'')
		return false;
	out[o] = '\0';
	*pp = p + 1;
	return true;
}

/* ( `name` type, ... ): the type runs to a ',' or ')' outside <> and (). */
static bool ddl_columns(const char **pp, struct ddl_col *cols, size_t *ret_n)
{
	size_t n = 0;

	if (!ddl_punct(pp, '('))
		return false;
	do {
		const char *p;
		size_t len;
		int depth = 0;

		if (n == DDL_COLS_MAX || !ddl_ident(pp, cols[n].name, sizeof(cols[n].name)))
			return false;
		ddl_skip(pp);
		p = *pp;
		while (*p && (depth > 0 || (*p != ',' && *p != ')'))) {
			depth += *p == '<' || *p == '(';
			depth -= *p == '>' || *p == ')';
			p++;
		}
		len = (size_t)(p - *pp);
		while (len && isspace((unsigned char)(*pp)[len - 1]))
			len--;
		if (!len || len >= sizeof(cols[n].type))
			return false;
		memcpy(cols[n].type, *pp, len);
		cols[n].type[len] = '\0';
		*pp = p;
		n++;
	} while (ddl_punct(pp, ','));
	*ret_n = n;
	return ddl_punct(pp, ')');
}

/*
 * Parses one statement from *pp (comments skipped) into t and moves *pp past
 * its ';'. Returns NULL, or what was not as expected.
 */
static const char *ddl_parse(const char **pp, struct ddl_table *t)
{
	memset(t, 0, sizeof(*t));
	if (!ddl_word(pp, "CREATE") || !ddl_word(pp, "EXTERNAL") || !ddl_word(pp, "TABLE"))
		return "expected CREATE EXTERNAL TABLE";
	if (ddl_word(pp, "IF") && (!ddl_word(pp, "NOT") || !ddl_word(pp, "EXISTS")))
		return "expected IF NOT EXISTS";
	if (!ddl_ident(pp, t->database, sizeof(t->database)) || !ddl_punct(pp, '.') ||
	    !ddl_ident(pp, t->table, sizeof(t->table)))
		return "expected `database`.`table`";
	if (!ddl_columns(pp, t->cols, &t->n_cols))
		return "bad column list";
	if (ddl_word(pp, "PARTITIONED") &&
	    (!ddl_word(pp, "BY") || !ddl_columns(pp, t->pcols, &t->n_pcols)))
		return "bad PARTITIONED BY";
	if (!ddl_word(pp, "ROW") || !ddl_word(pp, "FORMAT"))
		return "expected ROW FORMAT";
	if (ddl_word(pp, "SERDE")) {
		if (!ddl_string(pp, t->row_format, sizeof(t->row_format)))
			return "bad SERDE";
	} else if (ddl_word(pp, "DELIMITED")) {
		snprintf(t->row_format, sizeof(t->row_format), "DELIMITED");
	} else {
		return "expected SERDE or DELIMITED";
	}
	if (!ddl_word(pp, "STORED") || !ddl_word(pp, "AS") || !ddl_word(pp, "INPUTFORMAT"))
		return "expected STORED AS INPUTFORMAT";
	{
		char in[160], outf[160];

		if (!ddl_string(pp, in, sizeof(in)) || !ddl_word(pp, "OUTPUTFORMAT") ||
		    !ddl_string(pp, outf, sizeof(outf)))
			return "bad INPUTFORMAT/OUTPUTFORMAT";
		if (strcmp(in, "org.apache.hadoop.mapred.TextInputFormat") != 0)
			return "not a text table";
	}
	if (!ddl_word(pp, "LOCATION") || !ddl_string(pp, t->location, sizeof(t->location)))
		return "expected LOCATION 's3://...'";
	if (ddl_word(pp, "TBLPROPERTIES")) {
		if (!ddl_punct(pp, '('))
			return "expected ( after TBLPROPERTIES";
		do {
			struct ddl_prop *pr = &t->props[t->n_props];

			if (t->n_props == DDL_PROPS_MAX || !ddl_string(pp, pr->key, sizeof(pr->key)) ||
			    !ddl_punct(pp, '=') || !ddl_string(pp, pr->value, sizeof(pr->value)))
				return "bad TBLPROPERTIES entry";
			for (size_t i = 0; i < t->n_props; i++)
				if (strcmp(t->props[i].key, pr->key) == 0)
					return "a table property appears twice";
			t->n_props++;
		} while (ddl_punct(pp, ','));
		if (!ddl_punct(pp, ')'))
			return "expected ) after TBLPROPERTIES";
	}
	if (!ddl_punct(pp, ';'))
		return "expected ';'";
	return NULL;
}

/* The value of table property key, or NULL. */
static const char *ddl_prop(const struct ddl_table *t, const char *key)
{
	for (size_t i = 0; i < t->n_props; i++)
		if (strcmp(t->props[i].key, key) == 0)
			return t->props[i].value;
	return NULL;
}

/* The value of projection.<col>.<what>, or NULL. */
static const char *ddl_colprop(const struct ddl_table *t, const char *col, const char *what)
{
	char key[160];

	snprintf(key, sizeof(key), "projection.%s.%s", col, what);
	return ddl_prop(t, key);
}

/* ------------------------------------------------------------ dates */

/*
 * Reads text at s in the Java date pattern fmt (yyyy yy MM dd HH mm ss,
 * 'quoted', other characters literal); returns the characters consumed
 * (0 = no match) and the time in *ret_secs (UTC).
 */
static size_t ddl_read_date(const char *fmt, const char *s, int64_t *ret_secs)
{
	struct tm tm = { .tm_mday = 1 };
	size_t o = 0;
	int year = 1970;

	for (size_t i = 0; fmt[i];) {
		char c = fmt[i];
		size_t run = 1;

		if (isalpha((unsigned char)c)) {
			int v = 0;

			while (fmt[i + run] == c)
				run++;
			for (size_t k = 0; k < run; k++) {
				if (!isdigit((unsigned char)s[o + k]))
					return 0;
				v = v * 10 + (s[o + k] - '0');
			}
			o += run;
			if (c == 'y')
				year = run == 2 ? 2000 + v : v;
			else if (c == 'M' && run == 2 && v >= 1 && v <= 12)
				tm.tm_mon = v - 1;
			else if (c == 'd' && run == 2 && v >= 1 && v <= 31)
				tm.tm_mday = v;
			else if (c == 'H' && run == 2 && v <= 23)
				tm.tm_hour = v;
			else if (c == 'm' && run == 2 && v <= 59)
				tm.tm_min = v;
			else if (c == 's' && run == 2 && v <= 59)
				tm.tm_sec = v;
			else
				return 0;
			i += run;
		} else if (c == '\'') {
			if (fmt[i + 1] == '\'') {
				if (s[o] != '\'')
					return 0;
				o++;
				i += 2;
				continue;
			}
			for (i++; fmt[i] && !(fmt[i] == '\'' && fmt[i + 1] != '\''); i++) {
				if (fmt[i] == '\'')
					i++;
				if (s[o] != fmt[i])
					return 0;
				o++;
			}
			if (!fmt[i])
				return 0;
			i++;
		} else {
			if (s[o] != c)
				return 0;
			o++;
			i++;
		}
	}
	tm.tm_year = year - 1900;
	{
		struct tm check = tm;
		time_t t = timegm(&check);

		/* 02-30 and the like normalise to another day: not a date. */
		if (check.tm_mday != tm.tm_mday || check.tm_mon != tm.tm_mon)
			return 0;
		*ret_secs = (int64_t)t;
	}
	return o;
}

/* ------------------------------------------------------------ matching */

/* Checks that s starts with the kinlake object name and nothing else:
 * "<shard>/<56 digits>-<10 digits>_<56 digits>-<10 digits><ext>". */
static bool ddl_object_name(const char *s, const char *ext)
{
	const char *slash = strchr(s, '/');
	size_t n;

	if (!slash || slash == s)
		return false;
	s = slash + 1;
	for (int half = 0; half < 2; half++) {
		for (int i = 0; i < 56; i++)
			if (!isdigit((unsigned char)*s++))
				return false;
		if (*s++ != '-')
			return false;
		for (int i = 0; i < 10; i++)
			if (!isdigit((unsigned char)*s++))
				return false;
		if (half == 0 && *s++ != '_')
			return false;
	}
	n = strlen(ext);
	return strncmp(s, ext, n) == 0 && s[n] == '\0';
}

/*
 * Does uri ("s3://bucket/key") belong to table t as an object written by
 * kinlake with extension ext, every partition value inside its projection
 * (dates up to now_secs)? Returns true, or false with why.
 */
static bool ddl_match(const struct ddl_table *t, const char *uri, const char *ext, int64_t now_secs,
		      char *why, size_t why_size)
{
	const char *tmpl = t->location, *s = uri;
	const char *enabled = ddl_prop(t, "projection.enabled");

	if (strncmp(uri, t->location, strlen(t->location)) != 0) {
		snprintf(why, why_size, "'%.240s' is not under LOCATION '%.240s'", uri, t->location);
		return false;
	}
	if (enabled && strcmp(enabled, "true") == 0) {
		tmpl = ddl_prop(t, "storage.location.template");
		if (!tmpl) {
			snprintf(why, why_size, "projection without storage.location.template");
			return false;
		}
	}
	while (*tmpl) {
		char col[80];
		const char *end, *type;
		size_t n;

		if (!(tmpl[0] == '$' && tmpl[1] == '{')) {
			if (*s != *tmpl) {
				snprintf(why, why_size, "'%.240s' differs from the template at '%.240s'", uri, s);
				return false;
			}
			s++;
			tmpl++;
			continue;
		}
		end = strchr(tmpl, '}');
		n = end ? (size_t)(end - tmpl - 2) : 0;
		if (!end || n == 0 || n >= sizeof(col)) {
			snprintf(why, why_size, "bad placeholder in the template");
			return false;
		}
		memcpy(col, tmpl + 2, n);
		col[n] = '\0';
		tmpl = end + 1;
		type = ddl_colprop(t, col, "type");
		if (!type) {
			snprintf(why, why_size, "column '%.240s' has no projection.%s.type", col, col);
			return false;
		}
		if (strcmp(type, "date") == 0) {
			const char *fmt = ddl_colprop(t, col, "format");
			const char *range = ddl_colprop(t, col, "range");
			int64_t v, lo;
			size_t used;

			if (!fmt || !range || !ddl_read_date(fmt, range, &lo) ||
			    strcmp(range + ddl_read_date(fmt, range, &lo), ",NOW") != 0) {
				snprintf(why, why_size, "date column '%.240s' without format or 'START,NOW' range", col);
				return false;
			}
			used = ddl_read_date(fmt, s, &v);
			if (!used) {
				snprintf(why, why_size, "'%.240s': no date in format '%.240s' at '%.240s'", uri, fmt, s);
				return false;
			}
			if (v < lo || v > now_secs) {
				snprintf(why, why_size, "'%.240s': %.80s '%.*s' outside '%.240s'", uri, col, (int)used, s, range);
				return false;
			}
			s += used;
		} else if (strcmp(type, "integer") == 0) {
			const char *range = ddl_colprop(t, col, "range");
			const char *digits = ddl_colprop(t, col, "digits");
			long long lo, hi, v = 0;
			size_t used = 0;

			if (!range || sscanf(range, "%lld,%lld", &lo, &hi) != 2) {
				snprintf(why, why_size, "integer column '%.240s' without a range", col);
				return false;
			}
			while (isdigit((unsigned char)s[used]))
				v = v * 10 + (s[used++] - '0');
			if (!used || (digits && used < (size_t)atoi(digits)) ||
			    (digits && used > (size_t)atoi(digits) && s[0] == '0') || v < lo || v > hi) {
				snprintf(why, why_size, "'%.240s': %.80s '%.*s' outside %.80s (digits %s)", uri, col,
					 (int)used, s, range, digits ? digits : "-");
				return false;
			}
			s += used;
		} else if (strcmp(type, "enum") == 0) {
			const char *values = ddl_colprop(t, col, "values");
			size_t best = 0;

			for (const char *v = values; v && *v;) {
				size_t len = strcspn(v, ",");

				if (len > best && strncmp(s, v, len) == 0 && (s[len] == *tmpl || s[len] == '/'))
					best = len;
				v += len + (v[len] == ',');
			}
			if (!best) {
				snprintf(why, why_size, "'%.240s': %.80s at '%.240s' is none of '%.240s'", uri, col, s,
					 values ? values : "");
				return false;
			}
			s += best;
		} else if (strcmp(type, "injected") == 0) {
			size_t used = 0;

			while (s[used] && s[used] != '/' && s[used] != *tmpl)
				used++;
			if (!used) {
				snprintf(why, why_size, "'%.240s': empty value for %s", uri, col);
				return false;
			}
			s += used;
		} else {
			snprintf(why, why_size, "column '%.240s' has projection type '%.240s'", col, type);
			return false;
		}
	}
	if (!ddl_object_name(s, ext)) {
		snprintf(why, why_size, "'%.240s': '%.240s' is not <shard>/<esn range>%s", uri, s, ext);
		return false;
	}
	return true;
}

#endif
