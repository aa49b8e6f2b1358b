/* SPDX-License-Identifier: Apache-2.0 */
/*
 * athena.c: `kinlake athena-ddl`. Walks the parts of a compiled key
 * template up to its object name and turns them into partition columns
 * with projection properties and one storage.location.template:
 *
 *   timestamp fields with only '='-free text between them  -> one column:
 *       with a year: projection type date, the pattern as its format,
 *       interval 1 of the finest field; a lone HH/MM/dd/mm/ss: integer
 *   !{partitionKeyFromLambda:k}     -> injected, or what --key says
 *   !{firehose:error-output-type}   -> enum of errrec's output types
 *
 * A column is named by the "name=" just before it (Hive style), else by
 * the key name or a default (dt, datehour, hour, ...). Parts that share a
 * path segment with the object name, or !{shard} before a partition, are
 * refused: Athena could not project them.
 */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libconfig.h>

#include "athena.h"
#include "cfg.h"
#include "errrec.h"
#include "util.h"

#define DDL_MAX (1024 * 1024)      /* cap of the statement buffer */
#define COLS_MAX 64                /* partition columns / data columns */
#define NAME_MAX_LEN 64

enum proj {
	PROJ_DATE = 0,
	PROJ_INTEGER,
	PROJ_ENUM,
	PROJ_INJECTED,
};

/* Timestamp fields, as bits, in order from the coarsest. */
enum {
	F_YEAR = 1u << 0,
	F_MONTH = 1u << 1,
	F_DAY = 1u << 2,
	F_HOUR = 1u << 3,
	F_MINUTE = 1u << 4,
	F_SECOND = 1u << 5,
};

struct pcol {
	char name[NAME_MAX_LEN + 1];
	enum proj proj;
	const char *key;               /* PARTITION: the plugin key name (into the template) */
	bool error_type;
	char format[256];              /* DATE: Java DateTimeFormatter pattern */
	unsigned fields;               /* DATE: F_* present */
	int64_t lo, hi;                /* INTEGER */
	int digits;                    /* INTEGER: 0 = no padding */
	char values[512];              /* ENUM: comma-separated */
	size_t pos;                    /* template position, for messages */
};

struct dcol {
	char name[NAME_MAX_LEN + 1];
	char type[128];
};

struct builder {
	const struct athena_table_opts *o;
	struct kl_errinfo *info;
	struct pcol cols[COLS_MAX];
	size_t n_cols;
	struct buf tmpl;               /* storage.location.template */
	struct buf lit;                /* literal text not yet emitted */
	size_t lit_pos;
	/* the date span being collected */
	bool span_open;
	struct pcol span;
};

/* ------------------------------------------------------------ small helpers */

static const char *field_text(enum keytmpl_part_kind k)
{
	switch (k) {
	case KEYTMPL_PART_YEAR4: return "yyyy";
	case KEYTMPL_PART_YEAR2: return "yy";
	case KEYTMPL_PART_MONTH: return "MM";
	case KEYTMPL_PART_DAY: return "dd";
	case KEYTMPL_PART_HOUR: return "HH";
	case KEYTMPL_PART_MINUTE: return "mm";
	case KEYTMPL_PART_SECOND: return "ss";
	case KEYTMPL_PART_LITERAL:
	case KEYTMPL_PART_PARTITION:
	case KEYTMPL_PART_ERROR_TYPE:
	case KEYTMPL_PART_SHARD:
	case KEYTMPL_PART_ESN_FIRST:
	case KEYTMPL_PART_ESN_LAST:
	case KEYTMPL_PART_ESN_RANGE:
		break;
	}
	return NULL;
}

static unsigned field_bit(enum keytmpl_part_kind k)
{
	switch (k) {
	case KEYTMPL_PART_YEAR4:
	case KEYTMPL_PART_YEAR2: return F_YEAR;
	case KEYTMPL_PART_MONTH: return F_MONTH;
	case KEYTMPL_PART_DAY: return F_DAY;
	case KEYTMPL_PART_HOUR: return F_HOUR;
	case KEYTMPL_PART_MINUTE: return F_MINUTE;
	case KEYTMPL_PART_SECOND: return F_SECOND;
	case KEYTMPL_PART_LITERAL:
	case KEYTMPL_PART_PARTITION:
	case KEYTMPL_PART_ERROR_TYPE:
	case KEYTMPL_PART_SHARD:
	case KEYTMPL_PART_ESN_FIRST:
	case KEYTMPL_PART_ESN_LAST:
	case KEYTMPL_PART_ESN_RANGE:
		break;
	}
	return 0;
}

static bool is_field(enum keytmpl_part_kind k)
{
	return field_bit(k) != 0;
}

static bool is_object_part(enum keytmpl_part_kind k)
{
	return k == KEYTMPL_PART_SHARD || k == KEYTMPL_PART_ESN_FIRST || k == KEYTMPL_PART_ESN_LAST ||
	       k == KEYTMPL_PART_ESN_RANGE;
}

/* Describes part p for a message: "!{partitionKeyFromLambda:dt}", "'HH'". */
static const char *part_desc(const struct keytmpl_part *p, char *out, size_t size)
{
	if (is_field(p->kind))
		snprintf(out, size, "timestamp field '%s'", field_text(p->kind));
	else if (p->kind == KEYTMPL_PART_PARTITION)
		snprintf(out, size, "partition key '%s'", p->text);
	else if (p->kind == KEYTMPL_PART_ERROR_TYPE)
		snprintf(out, size, "!{firehose:error-output-type}");
	else if (p->kind == KEYTMPL_PART_SHARD)
		snprintf(out, size, "!{shard}");
	else
		snprintf(out, size, "text");
	return out;
}

static bool ident_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* A column name from s (letters, digits, '_' kept, '-' and '.' become
 * '_', lower-cased, "p_" before a leading digit). false if nothing fits. */
static bool column_name(const char *s, size_t n, char out[NAME_MAX_LEN + 1])
{
	size_t o = 0;

	if (n == 0)
		return false;
	if (s[0] >= '0' && s[0] <= '9') {
		out[o++] = 'p';
		out[o++] = '_';
	}
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (o >= NAME_MAX_LEN)
			return false;
		if (c == '-' || c == '.')
			c = '_';
		if (!ident_char(c))
			return false;
		out[o++] = (char)tolower((unsigned char)c);
	}
	out[o] = '\0';
	return true;
}

/* The Hive-style name that lit ends with ("dt=" -> "dt"), or false. */
static bool hive_name(const struct buf *lit, char out[NAME_MAX_LEN + 1])
{
	const char *s = (const char *)lit->data;
	size_t n = lit->len, start;

	if (n < 2 || s[n - 1] != '=')
		return false;
	start = n - 1;
	while (start > 0 && ident_char(s[start - 1]))
		start--;
	return column_name(s + start, n - 1 - start, out);
}

/* Appends s as the contents of a HiveQL string literal. */
static enum kl_err put_quoted(struct buf *b, const char *s, size_t n)
{
	enum kl_err err = KL_OK;

	for (size_t i = 0; i < n && !err; i++) {
		if (s[i] == '\'' || s[i] == '\\')
			err = buf_append_byte(b, '\\');
		if (!err)
			err = buf_append_byte(b, (uint8_t)s[i]);
	}
	return err;
}

/* Appends literal text to a Java date pattern, quoting what is not a
 * digit or safe punctuation ('' for a quote). */
static bool fmt_lit(char *fmt, size_t size, const char *s, size_t n)
{
	size_t o = strlen(fmt);
	bool quoted = false;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool safe = (c >= '0' && c <= '9') || strchr("/-_.:, ", c) != NULL;

		if (c == '\'') {
			if (o + 2 >= size)
				return false;
			fmt[o++] = '\'';
			fmt[o++] = '\'';
			continue;
		}
		if (safe == quoted) {
			if (o + 1 >= size)
				return false;
			fmt[o++] = '\'';
			quoted = !safe;
		}
		if (o + 1 >= size)
			return false;
		fmt[o++] = c;
	}
	if (quoted) {
		if (o + 1 >= size)
			return false;
		fmt[o++] = '\'';
	}
	fmt[o] = '\0';
	return true;
}

/*
 * Walks a Java date pattern (the subset keytmpl knows: yyyy yy MM dd HH mm
 * ss, 'quoted' text, other characters literal). With tm and render, writes
 * the date tm in that pattern to render. Returns the F_* mask of a valid
 * date pattern (a year, no gaps down to the finest field), or 0 with why.
 */
static unsigned scan_format(const char *fmt, const struct tm *tm, char *render, size_t render_size,
			    const char **why)
{
	unsigned mask = 0;
	size_t o = 0;

	for (size_t i = 0; fmt[i];) {
		char c = fmt[i], piece[16] = "";
		size_t run = 1;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			unsigned bit = 0;

			while (fmt[i + run] == c)
				run++;
			if (c == 'y' && run == 4) {
				bit = F_YEAR;
				snprintf(piece, sizeof(piece), "%04d", tm ? tm->tm_year + 1900 : 0);
			} else if (c == 'y' && run == 2) {
				bit = F_YEAR;
				snprintf(piece, sizeof(piece), "%02d", tm ? (tm->tm_year + 1900) % 100 : 0);
			} else if (c == 'M' && run == 2) {
				bit = F_MONTH;
				snprintf(piece, sizeof(piece), "%02d", tm ? tm->tm_mon + 1 : 0);
			} else if (c == 'd' && run == 2) {
				bit = F_DAY;
				snprintf(piece, sizeof(piece), "%02d", tm ? tm->tm_mday : 0);
			} else if (c == 'H' && run == 2) {
				bit = F_HOUR;
				snprintf(piece, sizeof(piece), "%02d", tm ? tm->tm_hour : 0);
			} else if (c == 'm' && run == 2) {
				bit = F_MINUTE;
				snprintf(piece, sizeof(piece), "%02d", tm ? tm->tm_min : 0);
			} else if (c == 's' && run == 2) {
				bit = F_SECOND;
				snprintf(piece, sizeof(piece), "%02d", tm ? tm->tm_sec : 0);
			} else {
				*why = "unsupported field (use yyyy yy MM dd HH mm ss)";
				return 0;
			}
			if (mask & bit) {
				*why = "a field appears twice";
				return 0;
			}
			mask |= bit;
			i += run;
		} else if (c == '\'') {
			size_t j = i + 1;

			if (fmt[j] == '\'') {
				piece[0] = '\'';
				piece[1] = '\0';
				i += 2;
			} else {
				while (fmt[j] && !(fmt[j] == '\'' && fmt[j + 1] != '\''))
					j += fmt[j] == '\'' ? 2 : 1;
				if (!fmt[j]) {
					*why = "unterminated quote";
					return 0;
				}
				for (size_t k = i + 1; k < j; k++) {
					if (render && o + 1 < render_size)
						render[o++] = fmt[k];
					if (fmt[k] == '\'')
						k++;
				}
				i = j + 1;
			}
		} else if (strchr("[]{}#", c)) {
			*why = "reserved character";
			return 0;
		} else {
			piece[0] = c;
			piece[1] = '\0';
			i++;
		}
		for (size_t k = 0; piece[k] && render; k++)
			if (o + 1 < render_size)
				render[o++] = piece[k];
	}
	if (render)
		render[o] = '\0';
	if (!(mask & F_YEAR)) {
		*why = "a date needs a year (yyyy or yy)";
		return 0;
	}
	for (unsigned bit = F_YEAR; bit <= F_SECOND; bit <<= 1) {
		/* Every field coarser than the finest one must be there. */
		if (!(mask & bit) && (mask & ~((bit << 1) - 1))) {
			*why = "a field between the year and the finest one is missing";
			return 0;
		}
	}
	return mask;
}

static const char *interval_unit(unsigned mask)
{
	if (mask & F_SECOND)
		return "SECONDS";
	if (mask & F_MINUTE)
		return "MINUTES";
	if (mask & F_HOUR)
		return "HOURS";
	if (mask & F_DAY)
		return "DAYS";
	if (mask & F_MONTH)
		return "MONTHS";
	return "YEARS";
}

/* ------------------------------------------------------------ --key specs */

static enum kl_err apply_key_spec(struct builder *b, struct pcol *c, const char *spec)
{
	struct kl_errinfo *info = b->info;
	const char *why = NULL;

	if (strcmp(spec, "injected") == 0) {
		c->proj = PROJ_INJECTED;
		return KL_OK;
	}
	if (strncmp(spec, "enum:", 5) == 0) {
		const char *v = spec + 5;

		if (!*v || strlen(v) >= sizeof(c->values))
			return kl_errinfo_set(info, KL_ECONFIG, "athena: --key %s: enum needs 1 to %zu bytes "
					      "of comma-separated values", c->name, sizeof(c->values) - 1);
		for (const char *p = v; *p; p++)
			if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20 ||
			    (*p == ',' && (p[1] == ',' || p[1] == '\0' || p == v)))
				return kl_errinfo_set(info, KL_ECONFIG,
						      "athena: --key %s: enum values '%s' are not valid "
						      "path segments", c->name, v);
		c->proj = PROJ_ENUM;
		snprintf(c->values, sizeof(c->values), "%s", v);
		return KL_OK;
	}
	if (strncmp(spec, "date:", 5) == 0) {
		unsigned mask;

		if (strlen(spec + 5) >= sizeof(c->format))
			return kl_errinfo_set(info, KL_ECONFIG, "athena: --key %s: date format too long", c->name);
		mask = scan_format(spec + 5, NULL, NULL, 0, &why);
		if (!mask)
			return kl_errinfo_set(info, KL_ECONFIG, "athena: --key %s: date format '%s': %s",
					      c->name, spec + 5, why);
		c->proj = PROJ_DATE;
		c->fields = mask;
		snprintf(c->format, sizeof(c->format), "%s", spec + 5);
		return KL_OK;
	}
	if (strncmp(spec, "integer:", 8) == 0) {
		long long lo, hi;
		int digits = 0, n = 0;

		if ((sscanf(spec + 8, "%lld,%lld%n", &lo, &hi, &n) != 2 ||
		     (spec[8 + n] && sscanf(spec + 8 + n, ":%d%n", &digits, &n) != 1)) ||
		    lo > hi || digits < 0 || digits > 19)
			return kl_errinfo_set(info, KL_ECONFIG,
					      "athena: --key %s: '%s' is not integer:LO,HI[:DIGITS]",
					      c->name, spec);
		c->proj = PROJ_INTEGER;
		c->lo = lo;
		c->hi = hi;
		c->digits = digits;
		return KL_OK;
	}
	return kl_errinfo_set(info, KL_ECONFIG, "athena: --key %s: unknown projection '%s' (use injected, "
			      "enum:A,B, date:FORMAT or integer:LO,HI[:DIGITS])", c->name, spec);
}

/* ------------------------------------------------------------ building */

static struct pcol *find_col(struct builder *b, const char *name)
{
	for (size_t i = 0; i < b->n_cols; i++)
		if (strcmp(b->cols[i].name, name) == 0)
			return &b->cols[i];
	return NULL;
}

static enum kl_err add_col(struct builder *b, const struct pcol *c)
{
	const struct pcol *old = find_col(b, c->name);

	if (old)
		return kl_errinfo_set(b->info, KL_ECONFIG,
				      "athena: partition column '%s' at positions %zu and %zu of '%s'"
				      " (give them different names with NAME= before them)",
				      c->name, old->pos, c->pos, b->o->template);
	if (b->n_cols == COLS_MAX)
		return kl_errinfo_set(b->info, KL_ECONFIG, "athena: more than %d partition columns", COLS_MAX);
	b->cols[b->n_cols++] = *c;
	return KL_OK;
}

static enum kl_err emit_placeholder(struct builder *b, const char *name)
{
	return buf_printf(&b->tmpl, "${%s}", name);
}

static enum kl_err flush_lit(struct builder *b)
{
	const char *s = (const char *)b->lit.data;
	enum kl_err err;

	for (size_t i = 0; i + 1 < b->lit.len; i++)
		if (s[i] == '$' && s[i + 1] == '{')
			return kl_errinfo_set(b->info, KL_ECONFIG,
					      "athena: '${' in the text at position %zu of '%s' would be read "
					      "as a placeholder of storage.location.template",
					      b->lit_pos, b->o->template);
	err = buf_append(&b->tmpl, b->lit.data, b->lit.len);
	buf_reset(&b->lit);
	return err;
}

static enum kl_err close_span(struct builder *b)
{
	struct pcol *c = &b->span;
	static const struct {
		unsigned bit;
		const char *name;
		int64_t lo, hi;
	} lone[] = {
		{ F_MONTH, "month", 1, 12 }, { F_DAY, "day", 1, 31 }, { F_HOUR, "hour", 0, 23 },
		{ F_MINUTE, "minute", 0, 59 }, { F_SECOND, "second", 0, 59 },
	};
	enum kl_err err;

	if (!b->span_open)
		return KL_OK;
	b->span_open = false;
	if (c->fields & F_YEAR) {
		const char *why = NULL;

		if (!scan_format(c->format, NULL, NULL, 0, &why))
			return kl_errinfo_set(b->info, KL_ECONFIG,
					      "athena: the date '%s' at position %zu of '%s' cannot be "
					      "projected: %s", c->format, c->pos, b->o->template, why);
		c->proj = PROJ_DATE;
		if (!c->name[0]) {
			const char *unit = interval_unit(c->fields);

			snprintf(c->name, sizeof(c->name), "%s",
				 strcmp(unit, "DAYS") == 0 ? "dt" : strcmp(unit, "HOURS") == 0 ? "datehour" :
				 strcmp(unit, "MINUTES") == 0 ? "dateminute" :
				 strcmp(unit, "SECONDS") == 0 ? "datesecond" :
				 strcmp(unit, "MONTHS") == 0 ? "month" : "year");
		}
	} else {
		size_t k = 0;

		while (k < sizeof(lone) / sizeof(lone[0]) && lone[k].bit != c->fields)
			k++;
		if (k == sizeof(lone) / sizeof(lone[0]))
			return kl_errinfo_set(b->info, KL_ECONFIG,
					      "athena: the timestamp fields '%s' at position %zu of '%s' have "
					      "no year: project them as one date (add yyyy) or give each its "
					      "own NAME= segment", c->format, c->pos, b->o->template);
		c->proj = PROJ_INTEGER;
		c->lo = lone[k].lo;
		c->hi = lone[k].hi;
		c->digits = 2;
		if (!c->name[0])
			snprintf(c->name, sizeof(c->name), "%s", lone[k].name);
	}
	err = add_col(b, c);
	if (!err)
		err = emit_placeholder(b, c->name);
	return err;
}

static enum kl_err on_field(struct builder *b, const struct keytmpl_part *p)
{
	unsigned bit = field_bit(p->kind);
	enum kl_err err;

	if (b->span_open && !memchr(b->lit.data, '=', b->lit.len) && !(b->span.fields & bit)) {
		/* Same date: the text in between belongs to its format. */
		if (!fmt_lit(b->span.format, sizeof(b->span.format), (const char *)b->lit.data,
			     b->lit.len))
			return kl_errinfo_set(b->info, KL_ECONFIG, "athena: date format too long");
		buf_reset(&b->lit);
	} else {
		if (b->span_open && !memchr(b->lit.data, '=', b->lit.len))
			return kl_errinfo_set(b->info, KL_ECONFIG,
					      "athena: timestamp field '%s' at position %zu of '%s' repeats "
					      "a field of the date before it (name each with NAME=)",
					      field_text(p->kind), p->pos, b->o->template);
		err = close_span(b);
		if (err)
			return err;
		memset(&b->span, 0, sizeof(b->span));
		hive_name(&b->lit, b->span.name);
		b->span.pos = p->pos;
		err = flush_lit(b);
		if (err)
			return err;
		b->span_open = true;
	}
	{
		size_t n = strlen(b->span.format);
		const char *f = field_text(p->kind);

		if (n + strlen(f) + 1 > sizeof(b->span.format))
			return kl_errinfo_set(b->info, KL_ECONFIG, "athena: date format too long");
		memcpy(b->span.format + n, f, strlen(f) + 1);
	}
	b->span.fields |= bit;
	return KL_OK;
}

static enum kl_err on_key(struct builder *b, const struct keytmpl_part *p)
{
	const struct athena_table_opts *o = b->o;
	struct pcol c = { .proj = PROJ_INJECTED, .pos = p->pos };
	char what[96];
	enum kl_err err;

	err = close_span(b);
	if (err)
		return err;
	if (!hive_name(&b->lit, c.name)) {
		if (p->kind == KEYTMPL_PART_ERROR_TYPE)
			snprintf(c.name, sizeof(c.name), "error_output_type");
		else if (!column_name(p->text, p->len, c.name))
			return kl_errinfo_set(b->info, KL_ECONFIG,
					      "athena: %s at position %zu of '%s' makes no column name",
					      part_desc(p, what, sizeof(what)), p->pos, o->template);
	}
	err = flush_lit(b);
	if (err)
		return err;
	if (p->kind == KEYTMPL_PART_ERROR_TYPE) {
		size_t n = 0;

		c.error_type = true;
		c.proj = PROJ_ENUM;
		for (int code = ERRREC_PROCESSING_FAILED; code <= ERRREC_PLUGIN_CRASH; code++) {
			const char *t = errrec_output_type((enum errrec_code)code);

			if (strstr(c.values, t))
				continue;
			n += (size_t)snprintf(c.values + n, sizeof(c.values) - n, "%s%s", n ? "," : "", t);
		}
	} else {
		struct pcol *old;

		c.key = p->text;
		old = find_col(b, c.name);
		if (old && old->key && strcmp(old->key, p->text) == 0)
			return emit_placeholder(b, c.name);   /* the same key again */
		for (size_t i = 0; i < o->n_keys; i++)
			if (strcmp(o->keys[i].name, p->text) == 0 || strcmp(o->keys[i].name, c.name) == 0) {
				err = apply_key_spec(b, &c, o->keys[i].spec);
				if (err)
					return err;
				break;
			}
	}
	err = add_col(b, &c);
	if (!err)
		err = emit_placeholder(b, c.name);
	return err;
}

/* ------------------------------------------------------------ data columns */

static bool type_ok(const char *t)
{
	static const char *const base[] = {
		"boolean", "tinyint", "smallint", "int", "integer", "bigint", "float", "double",
		"decimal", "string", "char", "varchar", "date", "timestamp", "binary", "array",
		"map", "struct",
	};
	size_t n = 0;

	while (ident_char(t[n]))
		n++;
	for (const char *p = t; *p; p++)
		if (!ident_char(*p) && !strchr("<>,:() ", *p))
			return false;
	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
		if (strlen(base[i]) == n && strncasecmp(t, base[i], n) == 0)
			return true;
	return false;
}

/* Parses "name type, name type<a,b>, ..." into cols. */
static enum kl_err parse_columns(const char *spec, struct dcol *cols, size_t *ret_n,
				 struct kl_errinfo *info)
{
	size_t n = 0;
	const char *p = spec;

	while (*p) {
		const char *start, *name_end, *type_start, *end;
		int depth = 0;
		size_t name_len, type_len;

		while (isspace((unsigned char)*p))
			p++;
		start = p;
		while (*p && (depth > 0 || *p != ',')) {
			depth += *p == '<' || *p == '(';
			depth -= *p == '>' || *p == ')';
			p++;
		}
		end = p;
		if (*p == ',')
			p++;
		while (end > start && isspace((unsigned char)end[-1]))
			end--;
		if (end == start)
			return kl_errinfo_set(info, KL_ECONFIG, "athena: --columns '%s' has an empty entry",
					      spec);
		name_end = start;
		while (name_end < end && !isspace((unsigned char)*name_end))
			name_end++;
		type_start = name_end;
		while (type_start < end && isspace((unsigned char)*type_start))
			type_start++;
		name_len = (size_t)(name_end - start);
		type_len = (size_t)(end - type_start);
		if (n == COLS_MAX)
			return kl_errinfo_set(info, KL_ECONFIG, "athena: more than %d columns", COLS_MAX);
		if (!column_name(start, name_len, cols[n].name) || start[0] == '_' ||
		    memchr(start, '-', name_len) || memchr(start, '.', name_len))
			return kl_errinfo_set(info, KL_ECONFIG,
					      "athena: --columns: '%.*s' is not a column name "
					      "(letters, digits, '_')", (int)name_len, start);
		if (type_len == 0 || type_len >= sizeof(cols[n].type))
			return kl_errinfo_set(info, KL_ECONFIG, "athena: --columns: column '%s' needs a type",
					      cols[n].name);
		memcpy(cols[n].type, type_start, type_len);
		cols[n].type[type_len] = '\0';
		if (!type_ok(cols[n].type))
			return kl_errinfo_set(info, KL_ECONFIG,
					      "athena: --columns: '%s' is not a Hive type (column '%s')",
					      cols[n].type, cols[n].name);
		for (size_t i = 0; i < n; i++)
			if (strcmp(cols[i].name, cols[n].name) == 0)
				return kl_errinfo_set(info, KL_ECONFIG, "athena: --columns: '%s' twice",
						      cols[n].name);
		n++;
	}
	if (n == 0)
		return kl_errinfo_set(info, KL_ECONFIG, "athena: --columns is empty");
	*ret_n = n;
	return KL_OK;
}

/* The error-record columns (errrec.h), lower case as Athena keeps them. */
#define ERROR_COLUMNS                                                                     \
	"attemptsmade int, arrivaltimestamp bigint, errorcode string, errormessage string, "  \
	"attemptendingtimestamp bigint, rawdata string, shardid string, "                     \
	"sequencenumber string, subsequencenumber bigint, partitionkey string"

/* ------------------------------------------------------------ the statement */

static enum kl_err walk_template(struct builder *b, const struct keytmpl *t)
{
	const struct athena_table_opts *o = b->o;
	size_t n = keytmpl_part_count(t), obj = 0, last_slash_part = SIZE_MAX, last_slash_off = 0;
	size_t first_dyn = SIZE_MAX;
	struct keytmpl_part p;
	char what[96];
	enum kl_err err = KL_OK;

	/* The object name starts at the first shard / ESN part. */
	while (obj < n && keytmpl_part(t, obj, &p) && !is_object_part(p.kind))
		obj++;
	for (size_t i = 0; i < obj; i++) {
		const char *slash;

		keytmpl_part(t, i, &p);
		if (p.kind == KEYTMPL_PART_LITERAL && (slash = memrchr(p.text, '/', p.len)) != NULL) {
			last_slash_part = i;
			last_slash_off = (size_t)(slash - p.text);
		}
		if (p.kind != KEYTMPL_PART_LITERAL && first_dyn == SIZE_MAX)
			first_dyn = i;
	}
	for (size_t i = first_dyn; i < obj && first_dyn != SIZE_MAX; i++) {
		keytmpl_part(t, i, &p);
		if (p.kind != KEYTMPL_PART_LITERAL && (last_slash_part == SIZE_MAX || i > last_slash_part))
			return kl_errinfo_set(b->info, KL_ECONFIG,
					      "athena: %s at position %zu of '%s' is in the same path "
					      "segment as the object name, so it cannot be a partition "
					      "(end the prefix with '/')",
					      part_desc(&p, what, sizeof(what)), p.pos, o->template);
	}
	/* A shard before the object name (full keys) cannot be projected. */
	for (size_t i = obj + 1; i < n; i++) {
		keytmpl_part(t, i, &p);
		if (is_field(p.kind) || p.kind == KEYTMPL_PART_PARTITION ||
		    p.kind == KEYTMPL_PART_ERROR_TYPE) {
			keytmpl_part(t, obj, &p);
			return kl_errinfo_set(b->info, KL_ECONFIG,
					      "athena: !{shard} at position %zu of '%s' comes before "
					      "partition parts; Athena cannot project a shard id (put "
					      "!{shard} after every timestamp and partition key)",
					      p.pos, o->template);
		}
	}
	/* Walk up to and including the last '/' before the object name. */
	b->lit_pos = 1;
	for (size_t i = 0; i < obj && last_slash_part != SIZE_MAX && i <= last_slash_part && !err; i++) {
		keytmpl_part(t, i, &p);
		if (p.kind == KEYTMPL_PART_LITERAL) {
			size_t len = i == last_slash_part ? last_slash_off + 1 : p.len;

			if (b->lit.len == 0)
				b->lit_pos = p.pos;
			err = buf_append(&b->lit, p.text, len);
		} else if (is_field(p.kind)) {
			err = on_field(b, &p);
		} else {
			err = on_key(b, &p);
		}
	}
	if (!err)
		err = close_span(b);
	if (!err)
		err = flush_lit(b);
	return err;
}

/* The table's LOCATION: the template's text before its first partition,
 * up to a '/'. */
static void location_root(const struct buf *tmpl, size_t base, char *out, size_t size)
{
	const char *s = (const char *)tmpl->data + base;
	size_t len = tmpl->len - base, cut = 0;

	for (size_t i = 0; i + 1 < len; i++) {
		if (s[i] == '$' && s[i + 1] == '{')
			break;
		if (s[i] == '/')
			cut = i + 1;
	}
	if (!memmem(s, len, "${", 2)) {
		for (size_t i = 0; i < len; i++)
			if (s[i] == '/')
				cut = i + 1;
	}
	snprintf(out, size, "%.*s", (int)cut, s);
}

enum kl_err athena_table_ddl(const struct athena_table_opts *o, struct buf *out,
			     struct kl_errinfo *info)
{
	struct builder *b;
	struct keytmpl *t = NULL;
	struct dcol *dcols = NULL;
	size_t n_dcols = 0, base;
	bool raw = false;
	char root[1024], range[160];
	struct tm tm;
	time_t secs;
	enum kl_err err;

	if (!o->bucket || !*o->bucket || !o->table || !*o->table || !o->template)
		return kl_errinfo_set(info, KL_ECONFIG, "athena: bucket, table and template are required");
	for (const char *p = o->table; *p; p++)
		if (!ident_char(*p))
			return kl_errinfo_set(info, KL_ECONFIG,
					      "athena: table name '%s' (letters, digits, '_')", o->table);
	for (const char *p = o->database ? o->database : ""; *p; p++)
		if (!ident_char(*p))
			return kl_errinfo_set(info, KL_ECONFIG,
					      "athena: database name '%s' (letters, digits, '_')", o->database);
	if (o->kind == KEYTMPL_DATA && (!o->delimiter || strcmp(o->delimiter, "\n") != 0))
		return kl_errinfo_set(info, KL_ECONFIG,
				      "athena: s3.delimiter must be \"\\n\": Athena reads text files "
				      "line by line");
	err = keytmpl_compile(o->template, o->kind, &t, info);
	if (err)
		return err;
	b = calloc(1, sizeof(*b));
	dcols = calloc(COLS_MAX, sizeof(*dcols));
	if (!b || !dcols) {
		free(b);
		free(dcols);
		keytmpl_free(t);
		return kl_errinfo_set(info, KL_ENOMEM, "athena: out of memory");
	}
	b->o = o;
	b->info = info;
	buf_init(&b->tmpl, 64 * 1024);
	buf_init(&b->lit, 8 * 1024);
	err = buf_printf(&b->tmpl, "s3://%s/", o->bucket);
	base = b->tmpl.len;
	if (!err)
		err = walk_template(b, t);
	if (err)
		goto out;

	if (o->kind == KEYTMPL_ERROR)
		err = parse_columns(ERROR_COLUMNS, dcols, &n_dcols, info);
	else if (o->columns)
		err = parse_columns(o->columns, dcols, &n_dcols, info);
	else {
		raw = true;
		snprintf(dcols[0].name, sizeof(dcols[0].name), "line");
		snprintf(dcols[0].type, sizeof(dcols[0].type), "string");
		n_dcols = 1;
	}
	if (err)
		goto out;
	for (size_t i = 0; i < n_dcols; i++)
		if (find_col(b, dcols[i].name)) {
			err = kl_errinfo_set(info, KL_ECONFIG,
					     "athena: data column '%s' has the name of a partition column "
					     "(rename one: --columns, or NAME= in the template)",
					     dcols[i].name);
			goto out;
		}

	location_root(&b->tmpl, base, root, sizeof(root));
	secs = (time_t)(o->start_ms / 1000);
	if (o->start_ms < 0 || !gmtime_r(&secs, &tm)) {
		err = kl_errinfo_set(info, KL_ECONFIG, "athena: bad range start");
		goto out;
	}

	err = buf_printf(out, "-- %s objects of s3://%s/%s, key template '%s'\n",
			 o->kind == KEYTMPL_ERROR ? "Error" : "Data", o->bucket, root, o->template);
	if (!err && raw)
		err = buf_append_str(out, "-- One row per record: query fields with json_extract_scalar(line, "
					  "'$.field'), or name them with --columns.\n");
	for (size_t i = 0; !err && i < b->n_cols; i++)
		if (b->cols[i].proj == PROJ_INJECTED)
			err = buf_printf(out, "-- Partition '%s' is injected: every query must give it "
					 "(WHERE %s = '...').\n", b->cols[i].name, b->cols[i].name);
	if (!err)
		err = buf_printf(out, "CREATE EXTERNAL TABLE IF NOT EXISTS `%s`.`%s` (\n",
				 o->database && *o->database ? o->database : "default", o->table);
	for (size_t i = 0; !err && i < n_dcols; i++)
		err = buf_printf(out, "  `%s` %s%s\n", dcols[i].name, dcols[i].type,
				 i + 1 < n_dcols ? "," : "");
	if (!err)
		err = buf_append_str(out, ")\n");
	if (!err && b->n_cols) {
		err = buf_append_str(out, "PARTITIONED BY (\n");
		for (size_t i = 0; !err && i < b->n_cols; i++)
			err = buf_printf(out, "  `%s` %s%s\n", b->cols[i].name,
					 b->cols[i].proj == PROJ_INTEGER ? "int" : "string",
					 i + 1 < b->n_cols ? "," : "");
		if (!err)
			err = buf_append_str(out, ")\n");
	}
	if (!err)
		err = buf_append_str(out, raw ? "ROW FORMAT DELIMITED\n"
					      : "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n");
	if (!err)
		err = buf_append_str(out,
				     "STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'\n"
				     "  OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n"
				     "LOCATION '");
	if (!err)
		err = buf_printf(out, "s3://%s/", o->bucket);
	if (!err)
		err = put_quoted(out, root, strlen(root));
	if (!err)
		err = buf_append_str(out, "'\nTBLPROPERTIES (\n");
	if (!err && b->n_cols)
		err = buf_append_str(out, "  'projection.enabled' = 'true',\n");
	for (size_t i = 0; !err && i < b->n_cols; i++) {
		const struct pcol *c = &b->cols[i];

		switch (c->proj) {
		case PROJ_DATE:
			scan_format(c->format, &tm, range, sizeof(range), &(const char *){ NULL });
			err = buf_printf(out, "  'projection.%s.type' = 'date',\n  'projection.%s.format' = '",
					 c->name, c->name);
			if (!err)
				err = put_quoted(out, c->format, strlen(c->format));
			if (!err)
				err = buf_printf(out, "',\n  'projection.%s.range' = '", c->name);
			if (!err)
				err = put_quoted(out, range, strlen(range));
			if (!err)
				err = buf_printf(out, ",NOW',\n  'projection.%s.interval' = '1',\n"
						 "  'projection.%s.interval.unit' = '%s',\n",
						 c->name, c->name, interval_unit(c->fields));
			break;
		case PROJ_INTEGER:
			err = buf_printf(out, "  'projection.%s.type' = 'integer',\n"
					 "  'projection.%s.range' = '%" PRId64 ",%" PRId64 "',\n",
					 c->name, c->name, c->lo, c->hi);
			if (!err && c->digits)
				err = buf_printf(out, "  'projection.%s.digits' = '%d',\n", c->name, c->digits);
			break;
		case PROJ_ENUM:
			err = buf_printf(out, "  'projection.%s.type' = 'enum',\n  'projection.%s.values' = '",
					 c->name, c->name);
			if (!err)
				err = put_quoted(out, c->values, strlen(c->values));
			if (!err)
				err = buf_append_str(out, "',\n");
			break;
		case PROJ_INJECTED:
			err = buf_printf(out, "  'projection.%s.type' = 'injected',\n", c->name);
			break;
		}
	}
	if (!err && b->n_cols) {
		err = buf_append_str(out, "  'storage.location.template' = '");
		if (!err)
			err = put_quoted(out, (const char *)b->tmpl.data, b->tmpl.len);
		if (!err)
			err = buf_append_str(out, "',\n");
	}
	if (!err)
		err = buf_printf(out, "  'classification' = '%s',\n  'compressionType' = '%s'\n);\n",
				 raw ? "text" : "json", o->compression ? o->compression : "none");
	if (err == KL_ENOMEM)
		kl_errinfo_set(info, KL_ENOMEM, "athena: statement too large");
out:
	buf_done(&b->tmpl);
	buf_done(&b->lit);
	free(b);
	free(dcols);
	keytmpl_free(t);
	return err;
}

/* ------------------------------------------------------------ the command */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kinlake athena-ddl [-c FILE] [--database DB] [--table NAME] [--error-table NAME]\n"
		"                          [--columns 'name type, ...'] [--key NAME=SPEC]...\n"
		"                          [--start YYYY-MM-DD] [--data-only | --errors-only]\n"
		"Prints CREATE EXTERNAL TABLE statements (partition projection) for the data\n"
		"and the error objects of the configuration. SPEC: injected | enum:A,B,... |\n"
		"date:FORMAT | integer:LO,HI[:DIGITS]. Default range start: 365 days ago.\n");
}

/* "2024-05-01" -> ms since the epoch (UTC), or -1. */
static int64_t parse_day(const char *s)
{
	int y, m, d, n = 0;
	struct tm tm = { 0 };

	if (sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || s[n] || strlen(s) != 10 ||
	    y < 1970 || m < 1 || m > 12 || d < 1 || d > 31)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = m - 1;
	tm.tm_mday = d;
	return (int64_t)timegm(&tm) * 1000;
}

/* A table name from the application name: lower case, '_' for the rest. */
static void default_table(const char *app, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; app[i] && o + 1 < size; i++)
		out[o++] = ident_char(app[i]) ? (char)tolower((unsigned char)app[i]) : '_';
	out[o] = '\0';
	if (!o)
		snprintf(out, size, "kinlake");
}

static bool is_clickstream(const char *plugin)
{
	const char *base = strrchr(plugin, '/');

	base = base ? base + 1 : plugin;
	return strcmp(base, "clickstream") == 0 || strcmp(base, "clickstream.so") == 0;
}

/* The clickstream plugin's setting name, or def. */
static const char *plugin_setting(const struct kl_config *cfg, const char *name, const char *def)
{
	const char *v = NULL;

	if (cfg->plugin.settings &&
	    config_setting_lookup_string(cfg->plugin.settings, name, &v) == CONFIG_TRUE)
		return v;
	return def;
}

#define KEYS_MAX 32

int athena_main(int argc, char **argv)
{
	const char *path = KL_SYSCONFDIR "/kinlake/kinlake.conf";
	const char *database = NULL, *table = NULL, *error_table = NULL, *columns = NULL;
	struct athena_key_spec keys[KEYS_MAX + 2];
	char *key_copies[KEYS_MAX] = { NULL };
	size_t n_keys = 0;
	int64_t start_ms = -1;
	bool data = true, errors = true;
	struct kl_config *cfg = NULL;
	struct cfg_errors cerrs;
	struct kl_errinfo info = { 0 };
	struct athena_table_opts o = { 0 };
	char tname[NAME_MAX_LEN + 1], ename[NAME_MAX_LEN + 8];
	struct buf out;
	int rc = CFG_EXIT_USAGE;
	enum kl_err err;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_arg = i + 1 < argc;

		if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && has_arg) {
			path = argv[++i];
		} else if (strcmp(a, "--database") == 0 && has_arg) {
			database = argv[++i];
		} else if (strcmp(a, "--table") == 0 && has_arg) {
			table = argv[++i];
		} else if (strcmp(a, "--error-table") == 0 && has_arg) {
			error_table = argv[++i];
		} else if (strcmp(a, "--columns") == 0 && has_arg) {
			columns = argv[++i];
		} else if (strcmp(a, "--key") == 0 && has_arg) {
			char *eq;

			if (n_keys == KEYS_MAX || !(key_copies[n_keys] = strdup(argv[++i])))
				goto usage_error;
			eq = strchr(key_copies[n_keys], '=');
			if (!eq || eq == key_copies[n_keys]) {
				fprintf(stderr, "kinlake athena-ddl: --key takes NAME=SPEC\n");
				n_keys++;
				goto done;
			}
			*eq = '\0';
			keys[n_keys].name = key_copies[n_keys];
			keys[n_keys].spec = eq + 1;
			n_keys++;
		} else if (strcmp(a, "--start") == 0 && has_arg) {
			start_ms = parse_day(argv[++i]);
			if (start_ms < 0) {
				fprintf(stderr, "kinlake athena-ddl: --start takes YYYY-MM-DD\n");
				goto done;
			}
		} else if (strcmp(a, "--data-only") == 0) {
			errors = false;
		} else if (strcmp(a, "--errors-only") == 0) {
			data = false;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			rc = 0;
			goto done;
		} else {
			goto usage_error;
		}
	}
	if (!data && !errors)
		goto usage_error;

	log_set_level(LOG_LEVEL_WARN);
	cfg_errors_init(&cerrs);
	err = cfg_load(path, &cfg, &cerrs);
	if (err) {
		cfg_errors_print(&cerrs, stderr);
		cfg_errors_done(&cerrs);
		rc = CFG_EXIT_CONFIG;
		goto done;
	}
	cfg_errors_done(&cerrs);
	if (start_ms < 0)
		start_ms = (kl_wall_ms() / 86400000 - 365) * 86400000;
	if (is_clickstream(cfg->plugin.name)) {
		/* What the plugin puts in its keys: dates yyyy-MM-dd, hours HH. */
		const char *dk = plugin_setting(cfg, "date_key", "dt");
		const char *hk = plugin_setting(cfg, "hour_key", "hour");

		if (*dk) {
			keys[n_keys].name = dk;
			keys[n_keys++].spec = "date:yyyy-MM-dd";
		}
		if (*hk) {
			keys[n_keys].name = hk;
			keys[n_keys++].spec = "integer:0,23:2";
		}
		if (!columns)
			columns = ATHENA_CLICKSTREAM_COLUMNS;
	}
	default_table(cfg->application, tname, sizeof(tname));
	if (!table)
		table = tname;
	snprintf(ename, sizeof(ename), "%s_errors", table);
	if (!error_table)
		error_table = ename;

	buf_init(&out, DDL_MAX);
	o.bucket = cfg->s3.bucket;
	o.database = database;
	o.compression = cfg_compression_name(cfg->s3.compression);
	o.delimiter = cfg->s3.delimiter;
	o.start_ms = start_ms;
	o.keys = keys;
	o.n_keys = n_keys;
	err = KL_OK;
	if (data) {
		o.template = cfg->s3.prefix;
		o.kind = KEYTMPL_DATA;
		o.table = table;
		o.columns = columns;
		err = athena_table_ddl(&o, &out, &info);
	}
	if (!err && errors) {
		if (data)
			err = buf_append_str(&out, "\n");
		o.template = cfg->s3.error_prefix;
		o.kind = KEYTMPL_ERROR;
		o.table = error_table;
		o.columns = NULL;
		if (!err)
			err = athena_table_ddl(&o, &out, &info);
	}
	if (err) {
		fprintf(stderr, "kinlake athena-ddl: %s\n", info.message[0] ? info.message : kl_strerror(err));
		rc = CFG_EXIT_CONFIG;
	} else {
		fwrite(out.data, 1, out.len, stdout);
		rc = fflush(stdout) == 0 ? 0 : 74;
	}
	buf_done(&out);
	goto done;

usage_error:
	usage(stderr);
	rc = CFG_EXIT_USAGE;
done:
	for (size_t i = 0; i < KEYS_MAX; i++)
		free(key_copies[i]);
	cfg_free(cfg);
	return rc;
}
