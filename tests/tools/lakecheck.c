/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lakecheck.c: verifies an S3 data lake written by kinlake against the
 * manifests of `kinlake demo produce --manifest` (the exactly-once and
 * chaos tests' judge). It lists the data and error prefixes, reads every
 * object (gzip, zstd or plain, by its extension, checked against its
 * Content-Encoding), takes the event id of each data line (a JSON object)
 * and of each error record (Firehose shape: the id is in the base64
 * rawData), and checks: every ok event exactly once in a data object,
 * every malformed event exactly once in an error object with an
 * errorCode and errorMessage, bot events nowhere, no unknown ids, per
 * partition key (session) within each shard the producer's seq increasing
 * through the objects taken in ESN order, every record inside the ESN
 * range its key names, and every key matching --key-regex.
 *
 * Invariants: memory grows with the number of manifest ids (one slot
 * each) and of objects (one key each), never with object sizes: objects
 * are read through objread.c (an unlinked temporary file, streamed
 * through the decompressor; a line is capped at OBJREAD_LINE_MAX).
 * Never installed; built for the tests that run it.
 *
 * Usage:
 *   lakecheck --endpoint URL --bucket B --data-prefix P --error-prefix E
 *             --manifest FILE [--manifest FILE ...] [--key-regex REGEX]
 *             [--region R] [--json] [--quiet]
 * Credentials: the standard chain without instance metadata (environment,
 * shared files). Output on stdout, one "name=value" per line (or one JSON
 * object with --json): records_expected (ok + malformed in the manifests),
 * records_found (records read from objects), objects, data_objects,
 * error_objects, batches (distinct ESN ranges), duplicates (copies beyond
 * the first), missing (expected ids found nowhere), unexpected (unknown
 * ids and bot events found), out_of_order, misplaced (malformed in data
 * or ok in errors), bad_keys (not matching the regex, no ESN range in
 * the name, or holding a record outside that range or records of two
 * shards), bad_objects (cannot be decoded, wrong Content-Encoding, no
 * record), bad_lines (not JSON, no id, an error record without code or
 * message or with another shard or sequence number than the manifest),
 * overlapping (objects of one shard whose ESN ranges overlap without
 * being the same batch). The first few
 * problems are named on stderr. Exit status: 0 when every count from
 * duplicates on is 0, 1 when one is not, 2 when the check could not be
 * made (S3, manifest, an object vanished meanwhile), 64 for bad usage.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "esn.h"
#include "objread.h"
#include "s3.h"
#include "util.h"

#define LC_MAX_MANIFESTS 64
#define LC_REPORT_MAX 20               /* problems named on stderr per kind */
#define LC_NONE UINT32_MAX

/* ------------------------------------------------------------ interned strings */

/* Maps a string to a dense index (shards, sessions). */
struct strtab {
	char **strs;                   /* by index, owned */
	uint32_t n, cap;
	uint32_t *slots;               /* index + 1, 0 = empty */
	size_t n_slots;                /* power of two */
};

static uint64_t hash_bytes(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;  /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

static void *xrealloc(void *p, size_t n)
{
	void *r = realloc(p, n ? n : 1);

	if (!r) {
		fprintf(stderr, "lakecheck: out of memory\n");
		exit(2);
	}
	return r;
}

static char *xstrndup(const char *s, size_t len)
{
	char *r = xrealloc(NULL, len + 1);

	memcpy(r, s, len);
	r[len] = '\0';
	return r;
}

static void strtab_grow(struct strtab *t)
{
	size_t n = t->n_slots ? t->n_slots * 2 : 64;
	uint32_t *slots = xrealloc(NULL, n * sizeof(*slots));

	memset(slots, 0, n * sizeof(*slots));
	for (uint32_t i = 0; i < t->n; i++) {
		size_t j = hash_bytes(t->strs[i], strlen(t->strs[i])) & (n - 1);

		while (slots[j])
			j = (j + 1) & (n - 1);
		slots[j] = i + 1;
	}
	free(t->slots);
	t->slots = slots;
	t->n_slots = n;
}

/* The index of s[0..len), added when new. */
static uint32_t strtab_intern(struct strtab *t, const char *s, size_t len)
{
	size_t j;

	if ((size_t)(t->n + 1) * 2 > t->n_slots)
		strtab_grow(t);
	j = hash_bytes(s, len) & (t->n_slots - 1);
	while (t->slots[j]) {
		const char *have = t->strs[t->slots[j] - 1];

		if (strlen(have) == len && memcmp(have, s, len) == 0)
			return t->slots[j] - 1;
		j = (j + 1) & (t->n_slots - 1);
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->strs = xrealloc(t->strs, t->cap * sizeof(*t->strs));
	}
	t->strs[t->n] = xstrndup(s, len);
	t->slots[j] = t->n + 1;
	return t->n++;
}

static void strtab_done(struct strtab *t)
{
	for (uint32_t i = 0; i < t->n; i++)
		free(t->strs[i]);
	free(t->strs);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------ manifest ids */

enum lc_kind { LC_OK = 0, LC_BOT, LC_MALFORMED };

/* One event of the manifests and where it was found. */
struct idrec {
	char *id;                      /* "<seed>-<n>", owned */
	char *seq;                     /* canonical sequence number, owned */
	uint64_t sub;                  /* KPL sub-sequence number */
	uint64_t key_seq;              /* the producer's per-key counter */
	uint32_t session;              /* interned partition key */
	uint32_t shard;                /* interned shard id */
	uint32_t first_obj;            /* object it was first found in, LC_NONE */
	uint32_t n_data, n_error;
	uint8_t kind;
};

struct idtab {
	struct idrec *recs;
	uint32_t n, cap;
	uint32_t *slots;               /* index + 1, 0 = empty */
	size_t n_slots;
};

static void idtab_grow(struct idtab *t)
{
	size_t n = t->n_slots ? t->n_slots * 2 : 1024;
	uint32_t *slots = xrealloc(NULL, n * sizeof(*slots));

	memset(slots, 0, n * sizeof(*slots));
	for (uint32_t i = 0; i < t->n; i++) {
		size_t j = hash_bytes(t->recs[i].id, strlen(t->recs[i].id)) & (n - 1);

		while (slots[j])
			j = (j + 1) & (n - 1);
		slots[j] = i + 1;
	}
	free(t->slots);
	t->slots = slots;
	t->n_slots = n;
}

/* The record of id[0..len), or NULL. */
static struct idrec *idtab_find(const struct idtab *t, const char *id, size_t len)
{
	size_t j;

	if (!t->n_slots)
		return NULL;
	j = hash_bytes(id, len) & (t->n_slots - 1);
	while (t->slots[j]) {
		struct idrec *r = &t->recs[t->slots[j] - 1];

		if (strlen(r->id) == len && memcmp(r->id, id, len) == 0)
			return r;
		j = (j + 1) & (t->n_slots - 1);
	}
	return NULL;
}

/* Adds a new record for id (which must not be there); returns it zeroed. */
static struct idrec *idtab_add(struct idtab *t, const char *id, size_t len)
{
	struct idrec *r;
	size_t j;

	if ((size_t)(t->n + 1) * 2 > t->n_slots)
		idtab_grow(t);
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 1024;
		t->recs = xrealloc(t->recs, t->cap * sizeof(*t->recs));
	}
	j = hash_bytes(id, len) & (t->n_slots - 1);
	while (t->slots[j])
		j = (j + 1) & (t->n_slots - 1);
	t->slots[j] = t->n + 1;
	r = &t->recs[t->n++];
	memset(r, 0, sizeof(*r));
	r->id = xstrndup(id, len);
	r->first_obj = LC_NONE;
	return r;
}

static void idtab_done(struct idtab *t)
{
	for (uint32_t i = 0; i < t->n; i++) {
		free(t->recs[i].id);
		free(t->recs[i].seq);
	}
	free(t->recs);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------ order state */

/*
 * Per (shard, session): what the order check needs. Objects are visited in
 * ESN order; objects with the same ESN range are parts of one batch (data
 * partitions and error objects), whose relative order means nothing, so a
 * record is compared with the highest seq of earlier batches and with the
 * record before it in the same object.
 */
struct order {
	uint64_t key;                  /* shard << 32 | session */
	uint32_t group;                /* batch of the last record seen */
	uint32_t obj;                  /* object of the last record seen */
	uint64_t max_before;           /* highest seq in earlier batches */
	uint64_t max_in_group;
	uint64_t last_in_obj;
};

struct ordtab {
	struct order *v;
	uint32_t n, cap;
	uint32_t *slots;
	size_t n_slots;
};

static void ordtab_grow(struct ordtab *t)
{
	size_t n = t->n_slots ? t->n_slots * 2 : 1024;
	uint32_t *slots = xrealloc(NULL, n * sizeof(*slots));

	memset(slots, 0, n * sizeof(*slots));
	for (uint32_t i = 0; i < t->n; i++) {
		size_t j = hash_u64(t->v[i].key) & (n - 1);

		while (slots[j])
			j = (j + 1) & (n - 1);
		slots[j] = i + 1;
	}
	free(t->slots);
	t->slots = slots;
	t->n_slots = n;
}

static struct order *ordtab_get(struct ordtab *t, uint64_t key)
{
	struct order *o;
	size_t j;

	if ((size_t)(t->n + 1) * 2 > t->n_slots)
		ordtab_grow(t);
	j = hash_u64(key) & (t->n_slots - 1);
	while (t->slots[j]) {
		if (t->v[t->slots[j] - 1].key == key)
			return &t->v[t->slots[j] - 1];
		j = (j + 1) & (t->n_slots - 1);
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 1024;
		t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
	}
	t->slots[j] = t->n + 1;
	o = &t->v[t->n++];
	memset(o, 0, sizeof(*o));
	o->key = key;
	o->group = LC_NONE;
	o->obj = LC_NONE;
	return o;
}

/* ------------------------------------------------------------ objects */

struct object {
	char *key;
	bool is_error;
	bool has_range;
	struct esn first, last;        /* from the key, when has_range */
	uint32_t group;                /* batch: objects with the same range */
	uint32_t shard;                /* of its first known record, LC_NONE */
	bool bad_key;                  /* counted once in bad_keys */
	uint64_t records;
};

struct figures {
	uint64_t records_expected, records_found, objects, data_objects, error_objects, batches;
	uint64_t duplicates, missing, unexpected, out_of_order, misplaced, bad_keys;
	uint64_t bad_objects, bad_lines, overlapping;
};

struct lakecheck {
	/* options */
	const char *endpoint, *bucket, *data_prefix, *error_prefix, *region;
	const char *manifests[LC_MAX_MANIFESTS];
	int n_manifests;
	const char *key_regex;
	bool json, quiet;
	regex_t re;
	bool have_re;
	/* state */
	struct idtab ids;
	struct strtab shards, sessions;
	struct ordtab order;
	struct object *objs;
	size_t n_objs, cap_objs;
	struct figures fig;
	unsigned reported[8];          /* problems named on stderr, by kind */
	uint32_t cur;                  /* the object being read */
	struct objread rd;             /* S3, the download, the line */
};

enum report_kind { R_DUP, R_MISSING, R_UNEXPECTED, R_ORDER, R_MISPLACED, R_KEY, R_OBJECT, R_LINE };

static void problem(struct lakecheck *lc, enum report_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Names a problem on stderr, at most LC_REPORT_MAX of each kind. */
static void problem(struct lakecheck *lc, enum report_kind kind, const char *fmt, ...)
{
	va_list ap;

	if (lc->quiet || lc->reported[kind]++ >= LC_REPORT_MAX)
		return;
	fputs("lakecheck: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ------------------------------------------------------------ manifests */

static bool parse_u64(const char *s, size_t len, uint64_t *ret)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*ret = v;
	return true;
}

static int kind_of(const char *s)
{
	static const char *const malformed[] = { "truncated", "not-json", "missing-fields",
						 "bad-utf8" };

	if (strcmp(s, "ok") == 0)
		return LC_OK;
	if (strcmp(s, "bot") == 0)
		return LC_BOT;
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
		if (strcmp(s, malformed[i]) == 0)
			return LC_MALFORMED;
	return -1;
}

/*
 * Reads one manifest: "id TAB key TAB seq TAB kind TAB shard TAB sequence
 * number TAB sub-sequence number" per line. Returns 0, or -1 with the
 * reason on stderr.
 */
static int load_manifest(struct lakecheck *lc, const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	unsigned long lineno = 0;
	int rc = 0;

	if (!f) {
		fprintf(stderr, "lakecheck: cannot open manifest %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, f)) > 0) {
		char *field[7], *p = line, *save = NULL;
		struct kl_errinfo info = { 0 };
		struct esn e;
		struct idrec *r;
		uint64_t key_seq, sub;
		int k = 0, kind;

		lineno++;
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		if (n == 0)
			continue;
		for (char *tokp = strtok_r(p, "\t", &save); tokp && k < 7; tokp = strtok_r(NULL, "\t", &save))
			field[k++] = tokp;
		if (k != 7 || !parse_u64(field[2], strlen(field[2]), &key_seq) ||
		    (kind = kind_of(field[3])) < 0 || !parse_u64(field[6], strlen(field[6]), &sub) ||
		    esn_set(field[5], sub, &e, &info) != KL_OK) {
			fprintf(stderr, "lakecheck: %s:%lu: not a manifest line (id, key, seq, kind, "
				"shard, sequence number, sub-sequence number)\n", path, lineno);
			rc = -1;
			break;
		}
		if (idtab_find(&lc->ids, field[0], strlen(field[0]))) {
			fprintf(stderr, "lakecheck: %s:%lu: event id %s is listed twice\n", path, lineno,
				field[0]);
			rc = -1;
			break;
		}
		r = idtab_add(&lc->ids, field[0], strlen(field[0]));
		r->seq = xstrndup(e.seq, strlen(e.seq));
		r->sub = e.sub;
		r->key_seq = key_seq;
		r->kind = (uint8_t)kind;
		r->session = strtab_intern(&lc->sessions, field[1], strlen(field[1]));
		r->shard = strtab_intern(&lc->shards, field[4], strlen(field[4]));
		if (kind != LC_BOT)
			lc->fig.records_expected++;
	}
	if (rc == 0 && ferror(f)) {
		fprintf(stderr, "lakecheck: reading %s: %s\n", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(f);
	return rc;
}

/* ------------------------------------------------------------ keys */

/*
 * Finds the batch's ESN range in the object name (after the last '/'):
 * the first two "<digits>-<digits>" tokens, as !{esn_range} (or
 * !{esn_first} ... !{esn_last}) writes them. False when there are none.
 */
static bool key_range(const char *key, struct esn *ret_first, struct esn *ret_last)
{
	const char *name = strrchr(key, '/');
	struct esn e[2];
	int found = 0;

	name = name ? name + 1 : key;
	for (const char *p = name; *p && found < 2;) {
		size_t d1 = strspn(p, "0123456789"), d2;
		uint64_t sub;
		char seq[ESN_SEQ_MAX + 1];

		/* At least 20 digits: a date in the name is not an ESN. */
		if (d1 < 20 || p[d1] != '-' || (p != name && p[-1] >= '0' && p[-1] <= '9')) {
			p += d1 ? d1 : 1;
			continue;
		}
		d2 = strspn(p + d1 + 1, "0123456789");
		if (d1 > ESN_SEQ_MAX || d2 == 0 || !parse_u64(p + d1 + 1, d2, &sub)) {
			p += d1 + 1;
			continue;
		}
		memcpy(seq, p, d1);
		seq[d1] = '\0';
		if (esn_set(seq, sub, &e[found], NULL) == KL_OK)
			found++;
		p += d1 + 1 + d2;
	}
	if (found < 2 || esn_cmp(&e[0], &e[1]) > 0)
		return false;
	*ret_first = e[0];
	*ret_last = e[1];
	return true;
}

static int cmp_objects(const void *a, const void *b)
{
	const struct object *x = a, *y = b;
	int c;

	if (x->has_range != y->has_range)
		return x->has_range ? 1 : -1;
	if (x->has_range) {
		c = esn_cmp(&x->first, &y->first);
		if (c)
			return c;
		c = esn_cmp(&x->last, &y->last);
		if (c)
			return c;
	}
	return strcmp(x->key, y->key);
}

static void add_object(struct lakecheck *lc, const char *key, bool is_error)
{
	struct object *o;

	if (lc->n_objs == lc->cap_objs) {
		lc->cap_objs = lc->cap_objs ? lc->cap_objs * 2 : 256;
		lc->objs = xrealloc(lc->objs, lc->cap_objs * sizeof(*lc->objs));
	}
	o = &lc->objs[lc->n_objs++];
	memset(o, 0, sizeof(*o));
	o->key = xstrndup(key, strlen(key));
	o->is_error = is_error;
	o->shard = LC_NONE;
	o->group = LC_NONE;
	o->has_range = key_range(key, &o->first, &o->last);
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

struct list_ctx {
	struct lakecheck *lc;
	const char *prefix, *other;
	bool is_error;
};

static int list_one(void *arg, const char *key)
{
	const struct list_ctx *ctx = arg;

	/* The other prefix lies under this one: its keys are its own. */
	if (strlen(ctx->other) > strlen(ctx->prefix) && starts_with(key, ctx->other))
		return 0;
	add_object(ctx->lc, key, ctx->is_error);
	return 0;
}

/* Lists prefix; keeps the keys whose longest matching prefix is it. */
static int list_prefix(struct lakecheck *lc, const char *prefix, bool is_error)
{
	struct list_ctx ctx = { lc, prefix, is_error ? lc->data_prefix : lc->error_prefix, is_error };

	return objread_list(&lc->rd, lc->bucket, prefix, list_one, &ctx);
}

static void mark_bad_key(struct lakecheck *lc, struct object *o, const char *why)
{
	if (o->bad_key)
		return;
	o->bad_key = true;
	lc->fig.bad_keys++;
	problem(lc, R_KEY, "bad key %s: %s", o->key, why);
}

/* ------------------------------------------------------------ records */

/* The id after "event_id":" in text[0..len) (borrowed), or NULL. */
static const char *find_id_literal(const char *text, size_t len, size_t *ret_len)
{
	static const char needle[] = "\"event_id\":\"";
	const size_t nl = sizeof(needle) - 1;

	for (size_t i = 0; i + nl <= len; i++) {
		const char *p = memchr(text + i, '"', len - i);

		if (!p)
			return NULL;
		i = (size_t)(p - text);
		if (i + nl <= len && memcmp(p, needle, nl) == 0) {
			const char *start = p + nl, *end = memchr(start, '"', len - i - nl);

			if (!end || end == start)
				return NULL;
			*ret_len = (size_t)(end - start);
			return start;
		}
	}
	return NULL;
}

/* Counts one occurrence of id in object oi. */
static void found_id(struct lakecheck *lc, uint32_t oi, const char *id, size_t id_len)
{
	struct object *o = &lc->objs[oi];
	struct idrec *r = idtab_find(&lc->ids, id, id_len);
	struct order *ord;
	struct esn e;
	uint32_t total;

	lc->fig.records_found++;
	o->records++;
	if (!r) {
		lc->fig.unexpected++;
		problem(lc, R_UNEXPECTED, "unknown id %.*s in %s", (int)id_len, id, o->key);
		return;
	}
	if (r->kind == LC_BOT) {
		lc->fig.unexpected++;
		problem(lc, R_UNEXPECTED, "bot event %s (dropped by the plugin) in %s", r->id, o->key);
	} else if (o->is_error != (r->kind == LC_MALFORMED)) {
		lc->fig.misplaced++;
		problem(lc, R_MISPLACED, "%s event %s in %s object %s",
			r->kind == LC_OK ? "ok" : "malformed", r->id, o->is_error ? "an error" : "a data",
			o->key);
	}
	if (o->is_error)
		r->n_error++;
	else
		r->n_data++;
	total = r->n_data + r->n_error;
	if (total > 1) {
		lc->fig.duplicates++;
		problem(lc, R_DUP, "%s found %u times: in %s and %s", r->id, total,
			lc->objs[r->first_obj].key, o->key);
	} else {
		r->first_obj = oi;
	}
	/* The key names the batch: the record must lie inside its range, and
	 * one object holds one shard. */
	if (o->shard == LC_NONE)
		o->shard = r->shard;
	else if (o->shard != r->shard)
		mark_bad_key(lc, o, "records of two shards");
	snprintf(e.seq, sizeof(e.seq), "%s", r->seq);
	e.sub = r->sub;
	if (o->has_range && (esn_cmp(&e, &o->first) < 0 || esn_cmp(&e, &o->last) > 0)) {
		char why[300];

		snprintf(why, sizeof(why), "record %s (%s/%" PRIu64 ") is outside the key's range",
			 r->id, r->seq, r->sub);
		mark_bad_key(lc, o, why);
	}
	if (r->kind == LC_BOT)
		return;
	ord = ordtab_get(&lc->order, (uint64_t)r->shard << 32 | r->session);
	if (ord->group != o->group) {
		if (ord->max_in_group > ord->max_before)
			ord->max_before = ord->max_in_group;
		ord->max_in_group = 0;
		ord->group = o->group;
		ord->obj = LC_NONE;
	}
	if (r->key_seq <= ord->max_before || (ord->obj == oi && r->key_seq <= ord->last_in_obj)) {
		lc->fig.out_of_order++;
		problem(lc, R_ORDER, "%s (key %s, seq %" PRIu64 ") in %s comes after seq %" PRIu64,
			r->id, lc->sessions.strs[r->session], r->key_seq, o->key,
			ord->obj == oi && ord->last_in_obj > ord->max_before ? ord->last_in_obj
									      : ord->max_before);
	}
	if (r->key_seq > ord->max_in_group)
		ord->max_in_group = r->key_seq;
	ord->obj = oi;
	ord->last_in_obj = r->key_seq;
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static void data_line(struct lakecheck *lc, uint32_t oi, const char *line, size_t len)
{
	struct object *ob = &lc->objs[oi];
	json_object *o = objread_parse_object(&lc->rd, line, len);
	const char *id = o ? jstr(o, "event_id") : NULL;
	size_t id_len = id ? strlen(id) : 0;

	if (!id) {
		lc->fig.bad_lines++;
		problem(lc, R_LINE, "%s: a data line that is not a JSON object with an event_id: "
			"%.80s", ob->key, line);
		id = find_id_literal(line, len, &id_len);
	}
	if (id && id_len)
		found_id(lc, oi, id, id_len);
	json_object_put(o);
}

/* Checks that a Firehose-shaped error record is whole and consistent. */
static const char *error_record_problem(const struct lakecheck *lc, json_object *o,
					const struct idrec *r)
{
	const char *code = jstr(o, "errorCode"), *msg = jstr(o, "errorMessage");
	const char *shard = jstr(o, "shardId"), *seq = jstr(o, "sequenceNumber");
	json_object *v;

	if (!code || !*code)
		return "no errorCode";
	if (!msg || !*msg)
		return "no errorMessage";
	if (!json_object_object_get_ex(o, "attemptsMade", &v) || !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) < 1)
		return "no attemptsMade";
	if (!r)
		return NULL;
	if (shard && strcmp(shard, lc->shards.strs[r->shard]) != 0)
		return "shardId differs from the manifest";
	if (seq) {
		struct esn e;

		if (esn_set(seq, 0, &e, NULL) != KL_OK || strcmp(e.seq, r->seq) != 0)
			return "sequenceNumber differs from the manifest";
	}
	return NULL;
}

static void error_line(struct lakecheck *lc, uint32_t oi, const char *line, size_t len)
{
	struct object *ob = &lc->objs[oi];
	json_object *o = objread_parse_object(&lc->rd, line, len);
	const char *raw = o ? jstr(o, "rawData") : NULL, *id = NULL, *why;
	uint8_t *data = NULL;
	size_t data_len = 0, id_len = 0;

	if (raw) {
		size_t rl = strlen(raw);

		data = xrealloc(NULL, (rl / 4 + 1) * 3 + 1);
		if (kl_b64_decode(raw, rl, data, &data_len) == KL_OK)
			id = find_id_literal((const char *)data, data_len, &id_len);
	}
	if (!id) {
		lc->fig.bad_lines++;
		problem(lc, R_LINE, "%s: an error line without a rawData holding an event id: %.80s",
			ob->key, line);
		/* Still count whatever id the line shows. */
		id = find_id_literal(line, len, &id_len);
	} else if ((why = error_record_problem(lc, o, idtab_find(&lc->ids, id, id_len))) != NULL) {
		lc->fig.bad_lines++;
		problem(lc, R_LINE, "%s: error record of %.*s: %s", ob->key, (int)id_len, id, why);
	}
	if (id && id_len)
		found_id(lc, oi, id, id_len);
	free(data);
	json_object_put(o);
}

/* ------------------------------------------------------------ objects */

static void object_line(void *arg, const char *line, size_t len)
{
	struct lakecheck *lc = arg;

	if (len == 0)
		return;
	if (lc->objs[lc->cur].is_error)
		error_line(lc, lc->cur, line, len);
	else
		data_line(lc, lc->cur, line, len);
}

static void object_line_too_long(void *arg)
{
	struct lakecheck *lc = arg;

	lc->fig.bad_lines++;
	problem(lc, R_LINE, "%s: a line longer than %zu bytes", lc->objs[lc->cur].key,
		OBJREAD_LINE_MAX);
}

/* Downloads object oi into the temporary file and checks it. -1: give up. */
static int check_object(struct lakecheck *lc, uint32_t oi)
{
	const struct objread_sink sink = { object_line, object_line_too_long, lc };
	struct object *o = &lc->objs[oi];
	struct s3_object_info meta = { 0 };
	enum objread_codec codec = objread_codec_of(o->key);
	const char *want = codec == OBJREAD_GZIP ? "gzip" : codec == OBJREAD_ZSTD ? "zstd" : NULL;
	const char *why;

	if (lc->have_re && regexec(&lc->re, o->key, 0, NULL, 0) != 0)
		mark_bad_key(lc, o, "does not match --key-regex");
	if (!o->has_range)
		mark_bad_key(lc, o, "no ESN range in the object name");
	if (objread_fetch(&lc->rd, lc->bucket, o->key, &meta) != 0)
		return -1;
	if ((want || meta.content_encoding) &&
	    (!want || !meta.content_encoding || strcmp(want, meta.content_encoding) != 0)) {
		lc->fig.bad_objects++;
		problem(lc, R_OBJECT, "%s: Content-Encoding '%s' does not fit its extension", o->key,
			meta.content_encoding ? meta.content_encoding : "");
	}
	s3_object_info_done(&meta);
	lc->cur = oi;
	why = objread_decode(&lc->rd, codec, &sink);
	if (why) {
		lc->fig.bad_objects++;
		problem(lc, R_OBJECT, "%s: %s", o->key, why);
	}
	if (o->records == 0 && !why) {
		lc->fig.bad_objects++;
		problem(lc, R_OBJECT, "%s: holds no record", o->key);
	}
	return 0;
}

/* Objects of one shard whose ranges overlap without being one batch. */
static int cmp_by_shard(const void *a, const void *b)
{
	const struct object *x = *(const struct object *const *)a, *y = *(const struct object *const *)b;

	if (x->shard != y->shard)
		return x->shard < y->shard ? -1 : 1;
	return cmp_objects(x, y);
}

static void count_overlaps(struct lakecheck *lc)
{
	struct object **v = xrealloc(NULL, (lc->n_objs ? lc->n_objs : 1) * sizeof(*v));
	size_t n = 0;

	for (size_t i = 0; i < lc->n_objs; i++)
		if (lc->objs[i].has_range && lc->objs[i].shard != LC_NONE)
			v[n++] = &lc->objs[i];
	if (n)
		qsort(v, n, sizeof(*v), cmp_by_shard);
	for (size_t i = 1; i < n; i++) {
		const struct object *a = v[i - 1], *b = v[i];

		if (a->shard != b->shard || (esn_cmp(&a->first, &b->first) == 0 &&
					     esn_cmp(&a->last, &b->last) == 0))
			continue;
		if (esn_cmp(&b->first, &a->last) <= 0) {
			lc->fig.overlapping++;
			problem(lc, R_KEY, "%s overlaps %s", b->key, a->key);
		}
	}
	free(v);
}

/* ------------------------------------------------------------ output */

struct figure_name {
	const char *name;
	size_t offset;
	bool must_be_zero;
};

#define FIG(name, zero) { #name, offsetof(struct figures, name), zero }
static const struct figure_name figure_names[] = {
	FIG(records_expected, false), FIG(records_found, false), FIG(objects, false),
	FIG(data_objects, false),     FIG(error_objects, false), FIG(batches, false),
	FIG(duplicates, true),        FIG(missing, true),        FIG(unexpected, true),
	FIG(out_of_order, true),      FIG(misplaced, true),      FIG(bad_keys, true),
	FIG(bad_objects, true),       FIG(bad_lines, true),      FIG(overlapping, true),
};
#undef FIG

static uint64_t figure(const struct figures *f, const struct figure_name *fn)
{
	return *(const uint64_t *)(const void *)((const char *)f + fn->offset);
}

static bool verdict(const struct figures *f)
{
	for (size_t i = 0; i < sizeof(figure_names) / sizeof(figure_names[0]); i++)
		if (figure_names[i].must_be_zero && figure(f, &figure_names[i]) != 0)
			return false;
	return true;
}

static void print_figures(const struct lakecheck *lc)
{
	const size_t n = sizeof(figure_names) / sizeof(figure_names[0]);

	if (lc->json) {
		json_object *o = json_object_new_object();

		for (size_t i = 0; i < n; i++)
			json_object_object_add(o, figure_names[i].name,
					       json_object_new_int64((int64_t)figure(&lc->fig, &figure_names[i])));
		json_object_object_add(o, "ok", json_object_new_boolean(verdict(&lc->fig)));
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
		return;
	}
	for (size_t i = 0; i < n; i++)
		printf("%s=%" PRIu64 "\n", figure_names[i].name, figure(&lc->fig, &figure_names[i]));
}

/* ------------------------------------------------------------ main */

static int usage(FILE *out)
{
	fprintf(out,
		"usage: lakecheck --endpoint URL --bucket B --data-prefix P --error-prefix E\n"
		"                 --manifest FILE [--manifest FILE ...] [--key-regex REGEX]\n"
		"                 [--region R] [--json] [--quiet]\n"
		"Checks every object under P (JSON lines) and E (Firehose error records) against\n"
		"the manifests of `kinlake demo produce --manifest`: each ok event once in data,\n"
		"each malformed one once in errors, bots nowhere, per-key order within a shard,\n"
		"keys matching REGEX (POSIX extended). Prints name=value figures (--json: one\n"
		"JSON object); exit 0 all good, 1 a problem found, 2 could not check, 64 usage.\n"
		"Credentials: the AWS environment variables or shared files (no IMDS).\n");
	return out == stdout ? 0 : 64;
}

static int parse_args(struct lakecheck *lc, int argc, char **argv)
{
	enum { O_ENDPOINT = 256, O_BUCKET, O_DATA, O_ERROR, O_MANIFEST, O_REGEX, O_REGION, O_JSON,
	       O_QUIET, O_HELP };
	static const struct option opts[] = {
		{ "endpoint", required_argument, NULL, O_ENDPOINT },
		{ "bucket", required_argument, NULL, O_BUCKET },
		{ "data-prefix", required_argument, NULL, O_DATA },
		{ "error-prefix", required_argument, NULL, O_ERROR },
		{ "manifest", required_argument, NULL, O_MANIFEST },
		{ "key-regex", required_argument, NULL, O_REGEX },
		{ "region", required_argument, NULL, O_REGION },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	lc->region = "us-east-1";
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case O_ENDPOINT: lc->endpoint = optarg; break;
		case O_BUCKET: lc->bucket = optarg; break;
		case O_DATA: lc->data_prefix = optarg; break;
		case O_ERROR: lc->error_prefix = optarg; break;
		case O_REGEX: lc->key_regex = optarg; break;
		case O_REGION: lc->region = optarg; break;
		case O_JSON: lc->json = true; break;
		case O_QUIET: lc->quiet = true; break;
		case O_HELP: usage(stdout); return -1;
		case O_MANIFEST:
			if (lc->n_manifests == LC_MAX_MANIFESTS) {
				fprintf(stderr, "lakecheck: at most %d manifests\n", LC_MAX_MANIFESTS);
				return 64;
			}
			lc->manifests[lc->n_manifests++] = optarg;
			break;
		default: return usage(stderr);
		}
	}
	if (optind != argc || !lc->endpoint || !lc->bucket || !lc->data_prefix ||
	    !lc->error_prefix || !lc->n_manifests)
		return usage(stderr);
	if (strcmp(lc->data_prefix, lc->error_prefix) == 0) {
		fprintf(stderr, "lakecheck: the data and error prefixes must differ\n");
		return 64;
	}
	if (lc->key_regex) {
		int rc = regcomp(&lc->re, lc->key_regex, REG_EXTENDED | REG_NOSUB);

		if (rc != 0) {
			char msg[256];

			regerror(rc, &lc->re, msg, sizeof(msg));
			fprintf(stderr, "lakecheck: --key-regex: %s\n", msg);
			return 64;
		}
		lc->have_re = true;
	}
	return 0;
}

static void lakecheck_done(struct lakecheck *lc)
{
	idtab_done(&lc->ids);
	strtab_done(&lc->shards);
	strtab_done(&lc->sessions);
	free(lc->order.v);
	free(lc->order.slots);
	for (size_t i = 0; i < lc->n_objs; i++)
		free(lc->objs[i].key);
	free(lc->objs);
	if (lc->have_re)
		regfree(&lc->re);
	objread_done(&lc->rd);
}

static int run(struct lakecheck *lc)
{
	uint32_t group = LC_NONE;
	int rc = 0;

	for (int i = 0; i < lc->n_manifests; i++)
		if (load_manifest(lc, lc->manifests[i]) != 0)
			return 2;
	if (objread_init(&lc->rd, "lakecheck", lc->endpoint, lc->region) != 0)
		return 2;
	if (list_prefix(lc, lc->data_prefix, false) != 0 || list_prefix(lc, lc->error_prefix, true) != 0)
		return 2;
	/* ESN order; the parts of one batch (same range) form one group. */
	if (lc->n_objs)
		qsort(lc->objs, lc->n_objs, sizeof(*lc->objs), cmp_objects);
	for (size_t i = 0; i < lc->n_objs; i++) {
		struct object *o = &lc->objs[i];

		if (i == 0 || !o->has_range || !lc->objs[i - 1].has_range ||
		    esn_cmp(&o->first, &lc->objs[i - 1].first) != 0 ||
		    esn_cmp(&o->last, &lc->objs[i - 1].last) != 0) {
			group++;
			if (o->has_range)
				lc->fig.batches++;
		}
		o->group = group;
	}
	for (size_t i = 0; i < lc->n_objs && rc == 0; i++) {
		lc->fig.objects++;
		if (lc->objs[i].is_error)
			lc->fig.error_objects++;
		else
			lc->fig.data_objects++;
		if (check_object(lc, (uint32_t)i) != 0)
			rc = 2;
	}
	if (rc)
		return rc;
	count_overlaps(lc);
	for (uint32_t i = 0; i < lc->ids.n; i++) {
		const struct idrec *r = &lc->ids.recs[i];

		if (r->kind != LC_BOT && r->n_data + r->n_error == 0) {
			lc->fig.missing++;
			problem(lc, R_MISSING, "%s event %s (key %s, seq %" PRIu64 ", shard %s, %s/%" PRIu64
				") is missing", r->kind == LC_OK ? "ok" : "malformed", r->id,
				lc->sessions.strs[r->session], r->key_seq, lc->shards.strs[r->shard],
				r->seq, r->sub);
		}
	}
	print_figures(lc);
	return verdict(&lc->fig) ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct lakecheck lc = { 0 };
	int rc = parse_args(&lc, argc, argv);

	if (rc != 0) {
		if (lc.have_re)
			regfree(&lc.re);
		return rc < 0 ? 0 : rc;
	}
	rc = run(&lc);
	fflush(stdout);
	lakecheck_done(&lc);
	return rc;
}
