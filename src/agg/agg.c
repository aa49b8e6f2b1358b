/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agg.c: per-window aggregates of a shard's S3 batches (see agg.h and the
 * "Aggregates" section of the README for the exactly-once argument).
 *
 * An entry is one (window, dimension values) of the open batch with its
 * counters; entries live in an array indexed by an open-addressing hash
 * table, both freed at agg_reset(). Sums are kept in fixed point (10^-6
 * units, int64), so they add up exactly, in the same order on a rebuild.
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "agg.h"
#include "buf.h"
#include "ddb.h"
#include "delivery.h"
#include "util.h"

#define MICROS 1000000LL
#define SUM_LIMIT 9000000000000LL      /* |value| accepted for a sum: 9e12 */

struct entry {
	int64_t window_ms;
	char **values;                 /* n_dims, owned */
	uint64_t hash;
	uint64_t count, late, untimed;
	int64_t sums[AGG_MAX_SUMS];    /* micro-units */
	uint64_t (*distinct)[AGG_DISTINCT_BUCKETS / 64]; /* n_distinct bucket bitmaps, owned;
						       * NULL without distinct measures */
	bool done;                     /* applied (or found applied) for this batch */
};

struct agg {
	const struct agg_spec *spec;
	const char *shard_id;
	struct agg_writer writer;
	uint32_t bucket;
	char esn_attr[128];
	json_tokener *tok;
	bool need_json;

	struct entry *entries;
	size_t n, alloc;
	size_t *slots;                 /* index + 1; 0 = empty */
	size_t n_slots;                /* power of two */
	struct agg_stats st;
};

/* ================================================================ helpers */

static uint64_t fnv1a(const void *data, size_t len, uint64_t h)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

#define FNV_BASIS 0xcbf29ce484222325ULL

uint32_t agg_bucket(const char *shard_id, uint32_t buckets)
{
	size_t len = strlen(shard_id), i = len;
	uint64_t n = 0;

	if (buckets <= 1)
		return 0;
	while (i > 0 && shard_id[i - 1] >= '0' && shard_id[i - 1] <= '9')
		i--;
	if (i == len || len - i > 18)
		return (uint32_t)(fnv1a(shard_id, len, FNV_BASIS) % buckets);
	for (; i < len; i++)
		n = n * 10 + (uint64_t)(shard_id[i] - '0');
	return (uint32_t)(n % buckets);
}

int64_t agg_window_start(int64_t t_ms, int64_t window_ms)
{
	int64_t q = t_ms / window_ms;

	if (t_ms % window_ms < 0)
		q--;
	return q * window_ms;
}

static bool digits(const char *s, int n, int *ret)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return true;
}

bool agg_parse_time(const char *s, int64_t *ret_ms)
{
	struct tm tm;
	int y, mo, d, h, mi, sec, oh = 0, om = 0, frac_ms = 0;
	const char *p;
	int64_t t;

	if (!s || !*s)
		return false;
	if (s[0] >= '0' && s[0] <= '9' && !strchr(s, '-')) {
		char *end;
		long long v = strtoll(s, &end, 10);

		if (*end || v < 0)
			return false;
		*ret_ms = v;
		return true;
	}
	if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
	    s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
	    !digits(s + 17, 2, &sec))
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return false;
	p = s + 19;
	if (*p == '.') {
		int n = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, n++)
			if (n < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
		if (n == 0)
			return false;
		for (; n < 3; n++)
			frac_ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1;

		if (!digits(p + 1, 2, &oh))
			return false;
		if (p[3] == ':' && digits(p + 4, 2, &om))
			p += 6;
		else if (digits(p + 3, 2, &om))
			p += 5;
		else
			return false;
		if (oh > 23 || om > 59)
			return false;
		oh *= sign;
		om *= sign;
	} else {
		return false;
	}
	if (*p)
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = (int64_t)timegm(&tm);
	t -= (int64_t)oh * 3600 + (int64_t)om * 60;
	*ret_ms = t * 1000 + frac_ms;
	return true;
}

static void format_window(int64_t window_ms, char *out, size_t out_size)
{
	time_t t = (time_t)(window_ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, out_size, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, out_size, "%" PRId64, window_ms / 1000);
}

enum kl_err agg_item_key(const char *window, const char *const *values, size_t n,
			 uint32_t bucket, char *out, size_t out_size)
{
	size_t w = 0;
	int k;

#define PUT(c)                          \
	do {                            \
		if (w + 1 >= out_size)  \
			return KL_EINVAL; \
		out[w++] = (c);         \
	} while (0)
	for (const char *p = window; *p; p++)
		PUT(*p);
	for (size_t i = 0; i < n; i++) {
		PUT('#');
		for (const char *p = values[i]; *p; p++) {
			if (*p == '%' || *p == '#') {
				PUT('%');
				PUT('2');
				PUT(*p == '%' ? '5' : '3');
			} else {
				PUT(*p);
			}
		}
	}
#undef PUT
	k = snprintf(out + w, out_size - w, "#b%" PRIu32, bucket);
	if (k < 0 || (size_t)k >= out_size - w)
		return KL_EINVAL;
	return KL_OK;
}

void agg_format_micros(int64_t micros, char *out, size_t out_size)
{
	uint64_t a = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
	uint64_t ip = a / (uint64_t)MICROS, fp = a % (uint64_t)MICROS;
	char frac[8];
	int n;

	if (!fp) {
		snprintf(out, out_size, "%s%" PRIu64, micros < 0 ? "-" : "", ip);
		return;
	}
	snprintf(frac, sizeof(frac), "%06" PRIu64, fp);
	for (n = 6; n > 0 && frac[n - 1] == '0'; n--)
		frac[n - 1] = '\0';
	snprintf(out, out_size, "%s%" PRIu64 ".%s", micros < 0 ? "-" : "", ip, frac);
}

/*
 * Copies v into out (AGG_VALUE_MAX + 1 bytes): invalid UTF-8 bytes become
 * '?', and a value too long is cut at a character boundary.
 */
static void clean_value(const char *v, size_t len, char *out)
{
	size_t w = 0;

	for (size_t i = 0; i < len;) {
		size_t n = kl_utf8_seq_len((const unsigned char *)v + i, len - i);

		if (n == 0 || (n == 1 && (unsigned char)v[i] < 0x20)) {
			if (w + 1 > AGG_VALUE_MAX)
				break;
			out[w++] = '?';
			i++;
			continue;
		}
		if (w + n > AGG_VALUE_MAX)
			break;
		memcpy(out + w, v + i, n);
		w += n;
		i += n;
	}
	out[w] = '\0';
	if (w == 0)
		snprintf(out, AGG_VALUE_MAX + 1, "%s", "(empty)");
}

/* The value at a dotted path of obj, or NULL. */
static json_object *get_path(json_object *obj, const char *path)
{
	char part[AGG_NAME_MAX + 1];
	const char *p = path;

	while (obj && json_object_is_type(obj, json_type_object)) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		json_object *v = NULL;

		memcpy(part, p, len);
		part[len] = '\0';
		/* A field literally named "a.b" wins over the nested path. */
		if (p == path && json_object_object_get_ex(obj, path, &v))
			return v;
		if (!json_object_object_get_ex(obj, part, &v))
			return NULL;
		if (!dot)
			return v;
		obj = v;
		p = dot + 1;
	}
	return NULL;
}

static void value_text(json_object *v, char *out)
{
	const char *s;

	if (!v) {
		snprintf(out, AGG_VALUE_MAX + 1, "%s", AGG_NONE_VALUE);
		return;
	}
	if (json_object_is_type(v, json_type_string)) {
		clean_value(json_object_get_string(v), (size_t)json_object_get_string_len(v), out);
		return;
	}
	s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
	clean_value(s, strlen(s), out);
}

/* A summable value in micro-units. */
static bool sum_value(json_object *v, int64_t *ret)
{
	if (!v)
		return false;
	if (json_object_is_type(v, json_type_int)) {
		int64_t i = json_object_get_int64(v);

		if (i > SUM_LIMIT || i < -SUM_LIMIT)
			return false;
		*ret = i * MICROS;
		return true;
	}
	if (json_object_is_type(v, json_type_double)) {
		double d = json_object_get_double(v);

		if (!isfinite(d) || d > (double)SUM_LIMIT || d < -(double)SUM_LIMIT)
			return false;
		*ret = (int64_t)llround(d * (double)MICROS);
		return true;
	}
	return false;
}

static bool event_time(json_object *v, int64_t *ret_ms)
{
	if (!v)
		return false;
	if (json_object_is_type(v, json_type_string))
		return agg_parse_time(json_object_get_string(v), ret_ms);
	if (json_object_is_type(v, json_type_int)) {
		int64_t t = json_object_get_int64(v);

		if (t < 0)
			return false;
		*ret_ms = t;
		return true;
	}
	if (json_object_is_type(v, json_type_double)) {
		double d = json_object_get_double(v);

		if (!isfinite(d) || d < 0 || d > 9e15)
			return false;
		*ret_ms = (int64_t)d;
		return true;
	}
	return false;
}

int agg_distinct_bucket(const char *value)
{
	return (int)(fnv1a(value, strlen(value), FNV_BASIS) % AGG_DISTINCT_BUCKETS);
}

double agg_distinct_estimate(unsigned buckets_set)
{
	double m = AGG_DISTINCT_BUCKETS;

	if (buckets_set >= AGG_DISTINCT_BUCKETS)
		buckets_set = AGG_DISTINCT_BUCKETS - 1;  /* saturated: a lower bound */
	return -m * log(1.0 - (double)buckets_set / m);
}

bool agg_doc_values(const struct agg_spec *spec, struct json_object *doc, int64_t *ret_t_ms,
		    char (*ret_values)[AGG_VALUE_MAX + 1], int64_t *ret_sums, int *ret_distinct)
{
	bool timed = false;

	if (spec->time_field[0])
		timed = event_time(get_path(doc, spec->time_field), ret_t_ms);
	for (size_t i = 0; i < spec->n_dims; i++) {
		if (spec->dims[i].kind == AGG_DIM_FIELD)
			value_text(get_path(doc, spec->dims[i].name), ret_values[i]);
		else
			snprintf(ret_values[i], AGG_VALUE_MAX + 1, "%s", AGG_NONE_VALUE);
	}
	for (size_t i = 0; i < spec->n_sums; i++)
		if (!sum_value(get_path(doc, spec->sums[i]), &ret_sums[i]))
			ret_sums[i] = 0;
	for (size_t i = 0; i < spec->n_distinct; i++) {
		json_object *v = get_path(doc, spec->distincts[i]);
		char text[AGG_VALUE_MAX + 1];

		ret_distinct[i] = -1;
		if (v && !json_object_is_type(v, json_type_null)) {
			value_text(v, text);
			ret_distinct[i] = agg_distinct_bucket(text);
		}
	}
	return timed;
}

void agg_format_window(int64_t window_ms, char *out, size_t out_size)
{
	format_window(window_ms, out, out_size);
}

/* ================================================================ entries */

static void entry_free(struct entry *e, size_t n_dims)
{
	if (e->values)
		for (size_t i = 0; i < n_dims; i++)
			free(e->values[i]);
	free(e->values);
	free(e->distinct);
}

static uint64_t entry_hash(int64_t window_ms, char (*values)[AGG_VALUE_MAX + 1], size_t n)
{
	uint64_t h = fnv1a(&window_ms, sizeof(window_ms), FNV_BASIS);

	for (size_t i = 0; i < n; i++)
		h = fnv1a(values[i], strlen(values[i]) + 1, h);
	return h;
}

static bool entry_is(const struct entry *e, uint64_t h, int64_t window_ms,
		     char (*values)[AGG_VALUE_MAX + 1], size_t n)
{
	if (e->hash != h || e->window_ms != window_ms)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(e->values[i], values[i]) != 0)
			return false;
	return true;
}

static enum kl_err rehash(struct agg *a, size_t n_slots)
{
	size_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return KL_ENOMEM;
	for (size_t i = 0; i < a->n; i++) {
		size_t s = (size_t)a->entries[i].hash & (n_slots - 1);

		while (slots[s])
			s = (s + 1) & (n_slots - 1);
		slots[s] = i + 1;
	}
	free(a->slots);
	a->slots = slots;
	a->n_slots = n_slots;
	return KL_OK;
}

/* The entry of (window, values), created when missing. */
static enum kl_err find_entry(struct agg *a, int64_t window_ms, char (*values)[AGG_VALUE_MAX + 1],
			      struct entry **ret)
{
	size_t n_dims = a->spec->n_dims;
	uint64_t h = entry_hash(window_ms, values, n_dims);
	struct entry *e;
	size_t s;

	if (a->n_slots) {
		for (s = (size_t)h & (a->n_slots - 1); a->slots[s];
		     s = (s + 1) & (a->n_slots - 1)) {
			e = &a->entries[a->slots[s] - 1];
			if (entry_is(e, h, window_ms, values, n_dims)) {
				*ret = e;
				return KL_OK;
			}
		}
	}
	/* Keep the table at most half full. */
	if ((a->n + 1) * 2 > a->n_slots && rehash(a, a->n_slots ? a->n_slots * 2 : 64) != KL_OK)
		return KL_ENOMEM;
	if (a->n == a->alloc) {
		size_t na = a->alloc ? a->alloc * 2 : 32;
		struct entry *ne = realloc(a->entries, na * sizeof(*ne));

		if (!ne)
			return KL_ENOMEM;
		a->entries = ne;
		a->alloc = na;
	}
	e = &a->entries[a->n];
	memset(e, 0, sizeof(*e));
	e->window_ms = window_ms;
	e->hash = h;
	e->values = calloc(n_dims ? n_dims : 1, sizeof(*e->values));
	if (!e->values)
		return KL_ENOMEM;
	if (a->spec->n_distinct && !(e->distinct = calloc(a->spec->n_distinct, sizeof(*e->distinct)))) {
		entry_free(e, n_dims);
		return KL_ENOMEM;
	}
	for (size_t i = 0; i < n_dims; i++)
		if (!(e->values[i] = strdup(values[i]))) {
			entry_free(e, n_dims);
			return KL_ENOMEM;
		}
	for (s = (size_t)h & (a->n_slots - 1); a->slots[s]; s = (s + 1) & (a->n_slots - 1))
		;
	a->slots[s] = ++a->n;
	*ret = e;
	return KL_OK;
}

/* ================================================================ the aggregator */

enum kl_err agg_new(const struct agg_spec *spec, const char *shard_id,
		    const struct agg_writer *writer, struct agg **ret, struct kl_errinfo *info)
{
	struct agg *a;

	if (!spec || !shard_id || !writer || !writer->ops || !writer->ops->update ||
	    spec->window_ms <= 0 || spec->lateness_ms < 0 || spec->n_dims > AGG_MAX_DIMS ||
	    spec->n_sums > AGG_MAX_SUMS || spec->n_distinct > AGG_MAX_DISTINCT ||
	    strlen(shard_id) > 100)
		return kl_errinfo_set(info, KL_EINVAL, "agg: bad options");
	a = calloc(1, sizeof(*a));
	if (!a)
		return kl_errinfo_set(info, KL_ENOMEM, "agg: out of memory");
	a->spec = spec;
	a->shard_id = shard_id;
	a->writer = *writer;
	a->bucket = agg_bucket(shard_id, spec->buckets ? spec->buckets : 1);
	snprintf(a->esn_attr, sizeof(a->esn_attr), "esn_%s", shard_id);
	a->need_json = spec->time_field[0] || spec->n_sums || spec->n_distinct;
	for (size_t i = 0; i < spec->n_dims; i++)
		if (spec->dims[i].kind == AGG_DIM_FIELD)
			a->need_json = true;
	a->tok = json_tokener_new();
	if (!a->tok) {
		free(a);
		return kl_errinfo_set(info, KL_ENOMEM, "agg: out of memory");
	}
	*ret = a;
	return KL_OK;
}

void agg_reset(struct agg *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n; i++)
		entry_free(&a->entries[i], a->spec->n_dims);
	free(a->entries);
	free(a->slots);
	a->entries = NULL;
	a->slots = NULL;
	a->n = a->alloc = a->n_slots = 0;
}

void agg_free(struct agg *a)
{
	if (!a)
		return;
	agg_reset(a);
	json_tokener_free(a->tok);
	free(a);
}

enum kl_err agg_add(struct agg *a, const struct kl_transform_record *rec,
		    const struct xform_output *o, struct kl_errinfo *info)
{
	const struct agg_spec *spec = a->spec;
	char values[AGG_MAX_DIMS][AGG_VALUE_MAX + 1];
	int64_t sums[AGG_MAX_SUMS];
	int distinct[AGG_MAX_DISTINCT];
	json_object *doc = NULL;
	int64_t t_ms = 0, window_ms, arrival = rec->approximate_arrival_ms;
	bool timed = false;
	struct entry *e;
	enum kl_err err;

	if (a->need_json && o->len <= (size_t)INT32_MAX) {
		json_tokener_reset(a->tok);
		doc = json_tokener_parse_ex(a->tok, (const char *)o->data, (int)o->len);
		if (doc && (json_tokener_get_error(a->tok) != json_tokener_success ||
			    json_tokener_get_parse_end(a->tok) != o->len ||
			    !json_object_is_type(doc, json_type_object))) {
			json_object_put(doc);
			doc = NULL;
		}
	}
	timed = agg_doc_values(spec, doc, &t_ms, values, sums, distinct);
	if (!timed)
		t_ms = arrival;
	window_ms = agg_window_start(t_ms, spec->window_ms);
	for (size_t i = 0; i < spec->n_dims; i++) {
		const struct agg_dim *dm = &spec->dims[i];

		if (dm->kind == AGG_DIM_FIELD)
			continue;
		for (size_t k = 0; k < o->nkeys; k++)
			if (o->keys[k].name && o->keys[k].value &&
			    strcmp(o->keys[k].name, dm->name) == 0) {
				clean_value(o->keys[k].value, strlen(o->keys[k].value), values[i]);
				break;
			}
	}
	err = find_entry(a, window_ms, values, &e);
	if (err) {
		json_object_put(doc);
		return kl_errinfo_set(info, KL_ENOMEM, "agg: out of memory");
	}
	/* Late: it arrived after its window closed plus the allowed lateness.
	 * Both times are record data, so a rebuild decides the same. */
	if (arrival >= window_ms + spec->window_ms + spec->lateness_ms) {
		e->late++;
		a->st.late++;
	} else {
		e->count++;
	}
	if (!timed) {
		e->untimed++;
		a->st.untimed++;
	}
	for (size_t i = 0; i < spec->n_sums; i++)
		e->sums[i] += sums[i];
	for (size_t i = 0; i < spec->n_distinct; i++)
		if (distinct[i] >= 0)
			e->distinct[i][distinct[i] / 64] |= 1ULL << (distinct[i] % 64);
	a->st.records++;
	json_object_put(doc);
	return KL_OK;
}

bool agg_full(const struct agg *a)
{
	return a->n >= a->spec->max_entries;
}

enum kl_err agg_apply(struct agg *a, const struct esn *last, struct kl_errinfo *info)
{
	const struct agg_spec *spec = a->spec;
	char esn[ESN_KEY_MAX];
	char window[40], pk[AGG_PK_MAX + 1];
	char sum_text[AGG_MAX_SUMS][32];
	const char *sum_ptrs[AGG_MAX_SUMS];
	bool any = false;

	esn_key(last, esn);
	for (size_t i = 0; i < AGG_MAX_SUMS; i++)
		sum_ptrs[i] = sum_text[i];
	for (size_t i = 0; i < a->n; i++) {
		struct entry *e = &a->entries[i];
		struct agg_update u;
		enum kl_err err;

		if (e->done)
			continue;
		any = true;
		format_window(e->window_ms, window, sizeof(window));
		if (agg_item_key(window, (const char *const *)e->values, spec->n_dims, a->bucket, pk,
				 sizeof(pk)) != KL_OK)
			return kl_errinfo_set(info, KL_EINVAL, "agg: item key too long");
		for (size_t k = 0; k < spec->n_sums; k++)
			agg_format_micros(e->sums[k], sum_text[k], sizeof(sum_text[k]));
		memset(&u, 0, sizeof(u));
		u.pk = pk;
		u.window = window;
		u.window_start_s = e->window_ms / 1000;
		u.bucket = a->bucket;
		u.dims = spec->dims;
		u.values = (const char *const *)e->values;
		u.n_dims = spec->n_dims;
		u.count = e->count;
		u.late = e->late;
		u.untimed = e->untimed;
		u.sum_names = spec->sums;
		u.sum_values = sum_ptrs;
		u.n_sums = spec->n_sums;
		u.distinct_names = spec->distincts;
		u.distinct = (const uint64_t(*)[AGG_DISTINCT_BUCKETS / 64])e->distinct;
		u.n_distinct = spec->n_distinct;
		u.esn_attr = a->esn_attr;
		u.esn = esn;
		err = a->writer.ops->update(a->writer.ctx, &u, info);
		if (err == KL_OK) {
			a->st.updates++;
		} else if (err == KL_ECONFLICT) {
			/* This batch (or a later one of the shard) is in the item. */
			a->st.already_applied++;
		} else {
			a->st.failures++;
			return err;
		}
		e->done = true;
	}
	if (any)
		a->st.batches++;
	return KL_OK;
}

void agg_get_stats(const struct agg *a, struct agg_stats *ret)
{
	*ret = a->st;
	ret->entries = a->n;
}

/* ================================================================ delivery hook */

static enum kl_err hook_add(void *ctx, const struct kl_transform_record *rec,
			    const struct xform_output *o, struct kl_errinfo *info)
{
	return agg_add(ctx, rec, o, info);
}

static bool hook_full(void *ctx)
{
	return agg_full(ctx);
}

static enum kl_err hook_apply(void *ctx, const struct esn *last, struct kl_errinfo *info)
{
	return agg_apply(ctx, last, info);
}

static void hook_reset(void *ctx)
{
	agg_reset(ctx);
}

static const struct delivery_hook_ops agg_hook_ops = {
	.add = hook_add,
	.full = hook_full,
	.apply = hook_apply,
	.reset = hook_reset,
};

void agg_delivery_hook(struct agg *a, struct delivery_hook *ret)
{
	ret->ops = &agg_hook_ops;
	ret->ctx = a;
}

/* ================================================================ DynamoDB */

/*
 * Appends ", #<tag><i> = :<tag><i>" (a SET clause) or ", #<tag><i> :<tag><i>"
 * (ADD) to expr, naming attribute attr and value v (consumed, NULL = out of
 * memory). Returns 0, or -1 when memory ran out.
 */
static int add_clause(struct buf *expr, json_object *names, json_object *values, bool set,
		      char tag, size_t i, const char *attr, json_object *v)
{
	char n[24], val[24];

	snprintf(n, sizeof(n), "#%c%zu", tag, i);
	snprintf(val, sizeof(val), ":%c%zu", tag, i);
	if (ddb_set(values, val, v) != KL_OK)
		return -1;
	if (buf_printf(expr, set ? ", %s = %s" : ", %s %s", n, val) != KL_OK ||
	    json_object_object_add(names, n, json_object_new_string(attr)))
		return -1;
	return 0;
}

static enum kl_err ddb_update(void *ctx, const struct agg_update *u, struct kl_errinfo *info)
{
	struct agg_ddb *ddb = ctx;
	json_object *key = NULL, *names = NULL, *values = NULL;
	struct ddb_write_opts wo;
	struct buf expr;
	char attr[AGG_NAME_MAX + 8];
	enum kl_err err = KL_ENOMEM;

	buf_init(&expr, 64 << 10);
	key = ddb_key_s(AGG_HASH_KEY, u->pk);
	names = json_object_new_object();
	values = json_object_new_object();
	if (!key || !names || !values)
		goto out;
	if (buf_append_str(&expr, "SET #w = :w, #ws = :ws, #b = :b, #e = :e") != KL_OK)
		goto out;
	if (json_object_object_add(names, "#w", json_object_new_string("window")) ||
	    json_object_object_add(names, "#ws", json_object_new_string("window_start")) ||
	    json_object_object_add(names, "#b", json_object_new_string("bucket")) ||
	    json_object_object_add(names, "#e", json_object_new_string(u->esn_attr)) ||
	    json_object_object_add(names, "#c", json_object_new_string("count")) ||
	    json_object_object_add(names, "#l", json_object_new_string("late")) ||
	    json_object_object_add(names, "#u", json_object_new_string("untimed")))
		goto out;
	if (ddb_set(values, ":w", ddb_s(u->window)) || ddb_set(values, ":ws", ddb_n_i64(u->window_start_s)) ||
	    ddb_set(values, ":b", ddb_n_i64(u->bucket)) || ddb_set(values, ":e", ddb_s(u->esn)) ||
	    ddb_set(values, ":c", ddb_n_i64((int64_t)u->count)) ||
	    ddb_set(values, ":l", ddb_n_i64((int64_t)u->late)) ||
	    ddb_set(values, ":u", ddb_n_i64((int64_t)u->untimed)))
		goto out;
	for (size_t i = 0; i < u->n_dims; i++) {
		snprintf(attr, sizeof(attr), "dim_%s", u->dims[i].name);
		if (add_clause(&expr, names, values, true, 'd', i, attr, ddb_s(u->values[i])))
			goto out;
	}
	if (buf_append_str(&expr, " ADD #c :c, #l :l, #u :u") != KL_OK)
		goto out;
	for (size_t i = 0; i < u->n_sums; i++) {
		snprintf(attr, sizeof(attr), "sum_%s", u->sum_names[i]);
		if (add_clause(&expr, names, values, false, 's', i, attr, ddb_n(u->sum_values[i])))
			goto out;
	}
	for (size_t i = 0; i < u->n_distinct; i++) {
		int64_t set[AGG_DISTINCT_BUCKETS];
		size_t n_set = 0;

		for (int b = 0; b < AGG_DISTINCT_BUCKETS; b++)
			if (u->distinct[i][b / 64] >> (b % 64) & 1)
				set[n_set++] = b;
		if (!n_set)
			continue;   /* no record had the field; DynamoDB refuses empty sets */
		snprintf(attr, sizeof(attr), "distinct_%s", u->distinct_names[i]);
		if (add_clause(&expr, names, values, false, 'x', i, attr, ddb_ns_i64(set, n_set)))
			goto out;
	}
	memset(&wo, 0, sizeof(wo));
	wo.condition = "attribute_not_exists(#e) OR #e < :e";
	wo.names = names;
	wo.values = values;
	err = ddb_update_item(ddb->client, ddb->table, key, expr.data, &wo, NULL, info);
	goto done;
out:
	kl_errinfo_set(info, err, "agg: out of memory");
done:
	json_object_put(key);
	json_object_put(names);
	json_object_put(values);
	buf_done(&expr);
	return err;
}

static const struct agg_writer_ops ddb_writer_ops = {
	.update = ddb_update,
};

void agg_ddb_writer(struct agg_ddb *ddb, struct agg_writer *ret)
{
	ret->ops = &ddb_writer_ops;
	ret->ctx = ddb;
}

enum kl_err agg_ensure_table(struct aws_client *client, const char *table, long timeout_ms,
			     struct kl_errinfo *info)
{
	struct ddb_table_desc desc;
	enum kl_err err;

	err = ddb_describe_table(client, table, &desc, info);
	if (err == KL_ENOTFOUND) {
		err = ddb_create_table(client, table, AGG_HASH_KEY, "S", info);
		if (err && err != KL_EEXISTS)
			return err;
		err = KL_OK;
	}
	if (err)
		return err;
	err = ddb_wait_table_active(client, table, timeout_ms, &desc, info);
	if (err)
		return err;
	if (strcmp(desc.hash_key, AGG_HASH_KEY) != 0 || strcmp(desc.hash_key_type, "S") != 0 ||
	    desc.range_key[0])
		return kl_errinfo_set(info, KL_ECONFIG, "aggregates: table '%s' has key '%s' (%s)%s;"
				      " it needs a string hash key '" AGG_HASH_KEY "' and no sort key",
				      table, desc.hash_key, desc.hash_key_type,
				      desc.range_key[0] ? " and a sort key" : "");
	return KL_OK;
}
