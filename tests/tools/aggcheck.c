/* SPDX-License-Identifier: Apache-2.0 */
/*
 * aggcheck.c: verifies the DynamoDB aggregates of src/agg against the S3
 * data objects they were computed from (the judge of integ_agg and of the
 * chaos test). It reads every data object (gzip, zstd or plain, by its
 * extension), recomputes per (window, dimensions) what agg_add() adds for
 * each line (through agg_doc_values(), so both sides share one reading of
 * a record), scans the table, sums its items over their buckets, and
 * compares cell by cell.
 *
 * What S3 alone can tell: the window of a record with a usable event time,
 * its dimension values and summands. Not its Kinesis arrival time, so
 * "late" is not checked (a cell's count + late is), and an untimed record
 * (no usable event time: agg used the arrival time) has no known window:
 * untimed records are compared per dimensions over all windows, in a cell
 * whose window is "untimed" (DynamoDB side: the items' `untimed`), and
 * the sums of a DynamoDB cell holding untimed records move to that cell
 * too, so every count and every sum is still compared exactly.
 * key:NAME dimensions are not in the objects and are refused.
 *
 * Invariants: memory grows with the number of cells, never with object
 * sizes (objects are read through objread.c: streamed from an unlinked
 * temporary file, a line capped at OBJREAD_LINE_MAX). Never installed;
 * built for the tests that run it.
 *
 * Usage:
 *   aggcheck --s3-endpoint URL --bucket B --data-prefix P
 *            --ddb-endpoint URL --table T --window-seconds N
 *            --dimensions 'page, action' [--measures 'count, sum:price']
 *            [--time-field ts] [--region R] [--json]
 * (the defaults of the config: measures "count", time field "timestamp";
 * --time-field '' = the arrival time, every record untimed).
 * Credentials: the standard chain without instance metadata (environment,
 * shared files). Output on stdout, one "name=value" per line (or one JSON
 * object with --json): objects, s3_records, s3_untimed, s3_cells,
 * ddb_items, ddb_records (count + late), ddb_late, ddb_untimed,
 * ddb_cells, bad_items (an item without window_start or a dimension),
 * mismatches (cells whose count or a sum differs, or that one side lacks);
 * the first AC_REPORT_MAX mismatches are named on stderr. Exit status: 0
 * when mismatches and bad_items are 0 and the record totals are equal, 1
 * when not, 2 for bad usage or when the check could not be made.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "agg.h"
#include "aws.h"
#include "ddb.h"
#include "objread.h"

#define AC_REPORT_MAX 20
#define AC_SEP '\x1f'                  /* between key parts: agg turns control chars into '?' */
#define AC_UNTIMED "untimed"

/* One (window, dimensions) and what each side holds for it. */
struct cell {
	char *key;                     /* "<window start s | untimed>\x1f<v1>\x1f<v2>...", owned */
	uint64_t s3_n;                 /* records */
	uint64_t ddb_n;                /* count + late - untimed, or untimed in an untimed cell */
	uint64_t ddb_untimed;          /* of a window cell: its items' untimed */
	int64_t s3_sums[AGG_MAX_SUMS], ddb_sums[AGG_MAX_SUMS];   /* micro-units */
	uint64_t s3_set[AGG_MAX_DISTINCT][AGG_DISTINCT_BUCKETS / 64];  /* distinct: buckets */
	uint64_t ddb_set[AGG_MAX_DISTINCT][AGG_DISTINCT_BUCKETS / 64];
	bool in_s3, in_ddb;
};

struct figures {
	uint64_t objects, s3_records, s3_untimed, s3_cells;
	uint64_t ddb_items, ddb_records, ddb_late, ddb_untimed, ddb_cells, bad_items, mismatches;
	uint64_t distinct_buckets;     /* buckets set in the S3 side's sets that were compared */
};

struct aggcheck {
	const char *s3_endpoint, *bucket, *data_prefix, *ddb_endpoint, *table, *region;
	bool json;
	struct agg_spec spec;
	struct cell *cells;            /* open addressing, n_slots a power of two */
	size_t n_cells, n_slots;
	struct figures fig;
	struct objread rd;             /* S3, the download, the line; its creds serve ddb too */
	struct aws_client ddb;
	bool ddb_ready;
};

static void *xrealloc(void *p, size_t n)
{
	void *r = realloc(p, n ? n : 1);

	if (!r) {
		fprintf(stderr, "aggcheck: out of memory\n");
		exit(2);
	}
	return r;
}

/* ------------------------------------------------------------ cells */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;  /* FNV-1a */

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h ^ (h >> 29);
}

static void cells_grow(struct aggcheck *ac)
{
	size_t n = ac->n_slots ? ac->n_slots * 2 : 1024;
	struct cell *cells = xrealloc(NULL, n * sizeof(*cells));

	memset(cells, 0, n * sizeof(*cells));
	for (size_t i = 0; i < ac->n_slots; i++) {
		size_t j;

		if (!ac->cells[i].key)
			continue;
		j = hash_str(ac->cells[i].key) & (n - 1);
		while (cells[j].key)
			j = (j + 1) & (n - 1);
		cells[j] = ac->cells[i];
	}
	free(ac->cells);
	ac->cells = cells;
	ac->n_slots = n;
}

/* The cell of window (a decimal of epoch seconds, or AC_UNTIMED) x values. */
static struct cell *cell_get(struct aggcheck *ac, const char *window, const char *const *values)
{
	char key[32 + AGG_MAX_DIMS * (AGG_VALUE_MAX + 2)];
	size_t w = (size_t)snprintf(key, sizeof(key), "%s", window), j = 0;

	for (size_t i = 0; i < ac->spec.n_dims; i++)
		w += (size_t)snprintf(key + w, sizeof(key) - w, "%c%s", AC_SEP, values[i]);
	/* Finding never moves the table; only adding may. */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1 && (ac->n_cells + 1) * 2 > ac->n_slots)
			cells_grow(ac);
		if (!ac->n_slots)
			continue;
		j = hash_str(key) & (ac->n_slots - 1);
		while (ac->cells[j].key) {
			if (strcmp(ac->cells[j].key, key) == 0)
				return &ac->cells[j];
			j = (j + 1) & (ac->n_slots - 1);
		}
	}
	ac->cells[j].key = strdup(key);
	if (!ac->cells[j].key) {
		fprintf(stderr, "aggcheck: out of memory\n");
		exit(2);
	}
	ac->n_cells++;
	return &ac->cells[j];
}

/* The untimed cell of the dimensions of cell c (same values). */
static struct cell *untimed_of(struct aggcheck *ac, const struct cell *c)
{
	char key[32 + AGG_MAX_DIMS * (AGG_VALUE_MAX + 2)];
	const char *values[AGG_MAX_DIMS];
	char *p;

	snprintf(key, sizeof(key), "%s", c->key);
	p = strchr(key, AC_SEP);
	for (size_t i = 0; i < ac->spec.n_dims; i++) {
		*p++ = '\0';
		values[i] = p;
		p = strchr(p, AC_SEP);
		if (!p && i + 1 < ac->spec.n_dims)
			return NULL;  /* cannot happen: keys are built with n_dims parts */
	}
	return cell_get(ac, AC_UNTIMED, values);
}

/* ------------------------------------------------------------ S3 */

/* One output line of a data object, as agg_add() would have read it. */
static void data_line(void *arg, const char *line, size_t len)
{
	struct aggcheck *ac = arg;
	char values[AGG_MAX_DIMS][AGG_VALUE_MAX + 1], window[32];
	const char *vp[AGG_MAX_DIMS];
	int64_t sums[AGG_MAX_SUMS], t_ms = 0;
	int dist[AGG_MAX_DISTINCT];
	json_object *doc = NULL;
	struct cell *c;
	bool timed;

	doc = objread_parse_object(&ac->rd, line, len);
	timed = agg_doc_values(&ac->spec, doc, &t_ms, values, sums, dist);
	json_object_put(doc);
	for (size_t i = 0; i < ac->spec.n_dims; i++)
		vp[i] = values[i];
	if (timed)
		snprintf(window, sizeof(window), "%" PRId64,
			 agg_window_start(t_ms, ac->spec.window_ms) / 1000);
	else
		snprintf(window, sizeof(window), "%s", AC_UNTIMED);
	c = cell_get(ac, window, vp);
	c->in_s3 = true;
	c->s3_n++;
	for (size_t i = 0; i < ac->spec.n_sums; i++)
		c->s3_sums[i] += sums[i];
	for (size_t i = 0; i < ac->spec.n_distinct; i++)
		if (dist[i] >= 0)
			c->s3_set[i][dist[i] / 64] |= 1ULL << (dist[i] % 64);
	ac->fig.s3_records++;
	if (!timed)
		ac->fig.s3_untimed++;
}

static void line_too_long(void *arg)
{
	(void)arg;
	fprintf(stderr, "aggcheck: a line longer than %zu bytes, left out\n", OBJREAD_LINE_MAX);
}

static int read_object(void *arg, const char *key)
{
	struct aggcheck *ac = arg;
	const struct objread_sink sink = { data_line, line_too_long, ac };
	const char *why;

	if (objread_fetch(&ac->rd, ac->bucket, key, NULL) != 0)
		return -1;
	why = objread_decode(&ac->rd, objread_codec_of(key), &sink);
	if (why) {
		/* Its records cannot be counted: no verdict is possible. */
		fprintf(stderr, "aggcheck: %s: %s\n", key, why);
		return -1;
	}
	ac->fig.objects++;
	return 0;
}

static int count_s3(struct aggcheck *ac)
{
	return objread_list(&ac->rd, ac->bucket, ac->data_prefix, read_object, ac);
}

/* ------------------------------------------------------------ DynamoDB */

/* Exact decimal text ("12.5", "-3", "1e3" is refused) to micro-units. */
static bool parse_micros(const char *s, int64_t *ret)
{
	bool neg = *s == '-';
	int64_t ip = 0, fp = 0;
	int places = 0;

	if (*s == '-' || *s == '+')
		s++;
	if (!(*s >= '0' && *s <= '9'))
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (ip > (INT64_MAX / 1000000 - 9) / 10)
			return false;
		ip = ip * 10 + (*s - '0');
	}
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9'; s++) {
			if (places < 6) {
				fp = fp * 10 + (*s - '0');
				places++;
			} else if (*s != '0') {
				return false;   /* agg writes at most 6 places */
			}
		}
	}
	if (*s)
		return false;
	for (; places < 6; places++)
		fp *= 10;
	*ret = (neg ? -1 : 1) * (ip * 1000000 + fp);
	return true;
}

static uint64_t n_u64(json_object *item, const char *name, bool *bad)
{
	int64_t v = 0;

	if (!ddb_get_n(item, name))
		return 0;
	if (ddb_get_n_i64(item, name, &v) != KL_OK || v < 0) {
		*bad = true;
		return 0;
	}
	return (uint64_t)v;
}

/* ORs the number set attribute name of item (absent: nothing) into set;
 * false when it is not a set of bucket numbers. */
static bool ns_bits(json_object *item, const char *name, uint64_t *set)
{
	const char **nums = NULL;
	size_t n = 0;
	bool ok = true;
	enum kl_err err = ddb_get_ns(item, name, &nums, &n);

	if (err == KL_ENOTFOUND)
		return true;
	if (err)
		return false;
	for (size_t i = 0; i < n && ok; i++) {
		char *end;
		long b = strtol(nums[i], &end, 10);

		ok = !*end && end != nums[i] && b >= 0 && b < AGG_DISTINCT_BUCKETS;
		if (ok)
			set[b / 64] |= 1ULL << (b % 64);
	}
	free(nums);
	return ok;
}

static void ddb_item(struct aggcheck *ac, json_object *item)
{
	char window[32], attr[AGG_NAME_MAX + 8];
	const char *vp[AGG_MAX_DIMS], *pk = ddb_get_s(item, AGG_HASH_KEY);
	int64_t ws = 0, sums[AGG_MAX_SUMS] = { 0 };
	uint64_t sets[AGG_MAX_DISTINCT][AGG_DISTINCT_BUCKETS / 64] = { { 0 } };
	uint64_t count, late, untimed;
	bool bad = ddb_get_n_i64(item, "window_start", &ws) != KL_OK;
	struct cell *c;

	for (size_t i = 0; i < ac->spec.n_dims; i++) {
		snprintf(attr, sizeof(attr), "dim_%s", ac->spec.dims[i].name);
		vp[i] = ddb_get_s(item, attr);
		bad = bad || !vp[i];
	}
	count = n_u64(item, "count", &bad);
	late = n_u64(item, "late", &bad);
	untimed = n_u64(item, "untimed", &bad);
	bad = bad || untimed > count + late;
	for (size_t i = 0; i < ac->spec.n_sums; i++) {
		const char *s;

		snprintf(attr, sizeof(attr), "sum_%s", ac->spec.sums[i]);
		s = ddb_get_n(item, attr);
		if (s && !parse_micros(s, &sums[i]))
			bad = true;
	}
	for (size_t i = 0; i < ac->spec.n_distinct; i++) {
		snprintf(attr, sizeof(attr), "distinct_%s", ac->spec.distincts[i]);
		bad = bad || !ns_bits(item, attr, sets[i]);
	}
	ac->fig.ddb_items++;
	if (bad) {
		if (ac->fig.bad_items++ < AC_REPORT_MAX)
			fprintf(stderr, "aggcheck: item %s: no window_start or dimension, or a bad number\n",
				pk ? pk : "(no pk)");
		return;
	}
	ac->fig.ddb_records += count + late;
	ac->fig.ddb_late += late;
	ac->fig.ddb_untimed += untimed;
	snprintf(window, sizeof(window), "%" PRId64, ws);
	c = cell_get(ac, window, vp);
	c->in_ddb = true;
	c->ddb_n += count + late - untimed;
	c->ddb_untimed += untimed;
	for (size_t i = 0; i < ac->spec.n_sums; i++)
		c->ddb_sums[i] += sums[i];
	for (size_t i = 0; i < ac->spec.n_distinct; i++)
		for (size_t w = 0; w < AGG_DISTINCT_BUCKETS / 64; w++)
			c->ddb_set[i][w] |= sets[i][w];   /* the buckets' items: a union */
	if (untimed) {
		c = cell_get(ac, AC_UNTIMED, vp);
		c->in_ddb = true;
		c->ddb_n += untimed;
	}
}

static int count_ddb(struct aggcheck *ac)
{
	struct kl_errinfo info = { 0 };
	json_object *items = NULL;
	char buf[512];
	enum kl_err err = ddb_scan_all(&ac->ddb, ac->table, NULL, 0, &items, &info);

	if (err) {
		fprintf(stderr, "aggcheck: Scan %s: %s\n", ac->table,
			kl_errinfo_format(err, &info, buf, sizeof(buf)));
		return -1;
	}
	for (size_t i = 0; i < json_object_array_length(items); i++)
		ddb_item(ac, json_object_array_get_idx(items, i));
	json_object_put(items);
	return 0;
}

/* ------------------------------------------------------------ compare */

static void key_text(const struct aggcheck *ac, const char *key, char *out, size_t size)
{
	size_t w = 0;
	const char *p = key;
	int64_t ws;
	char *end;

	ws = strtoll(key, &end, 10);
	if (end != key && *end == AC_SEP) {
		agg_format_window(ws * 1000, out, size);
		w = strlen(out);
		p = end;
	}
	for (; *p && w + 1 < size; p++)
		out[w++] = *p == AC_SEP ? '|' : *p;
	out[w] = '\0';
	(void)ac;
}

static void mismatch(struct aggcheck *ac, const struct cell *c, const char *what)
{
	char key[1024], s3v[32], ddbv[32];

	if (ac->fig.mismatches++ >= AC_REPORT_MAX)
		return;
	key_text(ac, c->key, key, sizeof(key));
	fprintf(stderr, "aggcheck: cell %s: %s: S3 %" PRIu64 ", DynamoDB %" PRIu64, key, what,
		c->s3_n, c->ddb_n);
	for (size_t i = 0; i < ac->spec.n_sums; i++) {
		agg_format_micros(c->s3_sums[i], s3v, sizeof(s3v));
		agg_format_micros(c->ddb_sums[i], ddbv, sizeof(ddbv));
		fprintf(stderr, ", sum_%s S3 %s DynamoDB %s", ac->spec.sums[i], s3v, ddbv);
	}
	fputc('\n', stderr);
}

static void compare(struct aggcheck *ac)
{
	/* A DynamoDB cell with untimed records holds their sums too, and S3
	 * cannot tell their window: its sums are compared in the untimed cell
	 * of its dimensions instead (which ddb_item() made, so untimed_of()
	 * finds it and the table does not move under this loop). */
	for (size_t i = 0; i < ac->n_slots; i++) {
		struct cell *c = &ac->cells[i], *u;

		if (!c->key || !c->ddb_untimed || strncmp(c->key, AC_UNTIMED, strlen(AC_UNTIMED)) == 0)
			continue;
		u = untimed_of(ac, c);
		if (!u || u == c)
			continue;
		for (size_t k = 0; k < ac->spec.n_sums; k++) {
			u->s3_sums[k] += c->s3_sums[k];
			u->ddb_sums[k] += c->ddb_sums[k];
			c->s3_sums[k] = c->ddb_sums[k] = 0;
		}
		/* Its sets hold the untimed records' values too: all that can be
		 * said is S3's timed set <= the item's <= that plus S3's untimed. */
		for (size_t k = 0; k < ac->spec.n_distinct; k++)
			for (size_t w = 0; w < AGG_DISTINCT_BUCKETS / 64; w++) {
				uint64_t lo = c->s3_set[k][w], hi = lo | u->s3_set[k][w];

				if ((c->ddb_set[k][w] & lo) != lo || (c->ddb_set[k][w] & ~hi)) {
					mismatch(ac, c, "distinct sets differ (untimed records in it)");
					break;
				}
			}
		memcpy(c->ddb_set, c->s3_set, sizeof(c->ddb_set));
	}
	for (size_t i = 0; i < ac->n_slots; i++) {
		const struct cell *c = &ac->cells[i];
		bool sums_equal = memcmp(c->s3_sums, c->ddb_sums, sizeof(c->s3_sums)) == 0;

		if (!c->key)
			continue;
		if (c->in_s3 && c->s3_n)
			ac->fig.s3_cells++;
		if (c->in_ddb && c->ddb_n)
			ac->fig.ddb_cells++;
		/* An untimed cell has no item of its own, hence no set. */
		if (strncmp(c->key, AC_UNTIMED, strlen(AC_UNTIMED)) != 0) {
			if (memcmp(c->s3_set, c->ddb_set, sizeof(c->s3_set)) != 0) {
				mismatch(ac, c, "distinct sets differ");
				continue;
			}
			for (size_t k = 0; k < ac->spec.n_distinct; k++)
				for (size_t w = 0; w < AGG_DISTINCT_BUCKETS / 64; w++)
					ac->fig.distinct_buckets += (uint64_t)__builtin_popcountll(c->s3_set[k][w]);
		}
		if (c->s3_n == c->ddb_n && sums_equal)
			continue;
		mismatch(ac, c, c->s3_n == 0 ? "only in DynamoDB" : c->ddb_n == 0 ? "only in S3" :
			 c->s3_n != c->ddb_n ? "counts differ" : "sums differ");
	}
}

/* ------------------------------------------------------------ main */

struct figure_name {
	const char *name;
	size_t off;
};

#define FIG(n) { #n, offsetof(struct figures, n) }
static const struct figure_name figure_names[] = {
	FIG(objects), FIG(s3_records), FIG(s3_untimed), FIG(s3_cells), FIG(ddb_items),
	FIG(ddb_records), FIG(ddb_late), FIG(ddb_untimed), FIG(ddb_cells), FIG(bad_items),
	FIG(mismatches), FIG(distinct_buckets),
};
#undef FIG

static uint64_t figure(const struct figures *f, const struct figure_name *fn)
{
	return *(const uint64_t *)(const void *)((const char *)f + fn->off);
}

static void print_figures(const struct aggcheck *ac)
{
	size_t n = sizeof(figure_names) / sizeof(figure_names[0]);

	if (ac->json)
		fputc('{', stdout);
	for (size_t i = 0; i < n; i++) {
		if (ac->json)
			printf("%s\"%s\": %" PRIu64, i ? ", " : "", figure_names[i].name,
			       figure(&ac->fig, &figure_names[i]));
		else
			printf("%s=%" PRIu64 "\n", figure_names[i].name, figure(&ac->fig, &figure_names[i]));
	}
	if (ac->json)
		fputs("}\n", stdout);
}

static int usage(FILE *out)
{
	fprintf(out,
		"usage: aggcheck --s3-endpoint URL --bucket B --data-prefix P\n"
		"                --ddb-endpoint URL --table T --window-seconds N\n"
		"                --dimensions LIST [--measures LIST] [--time-field F]\n"
		"                [--region R] [--json]\n"
		"Recomputes the aggregates of src/agg (README \"Aggregates\"; LIST in the syntax of\n"
		"the config's aggregates keys: --dimensions 'page, action', --measures\n"
		"'count, sum:price'; no key:NAME dimensions) from every data object under P\n"
		"(newline-delimited, plain/.gz/.zst) and compares them per window x dimensions\n"
		"with the items of table T summed over their buckets: count + late (late itself\n"
		"needs the arrival time: not checked), untimed per dimensions, sums. Prints\n"
		"name=value figures (--json: one JSON object); the first mismatches on stderr.\n"
		"Defaults as in the config: --measures count, --time-field timestamp ('' = the\n"
		"arrival time: every record untimed).\n"
		"Exit 0 equal, 1 not equal, 2 usage or could not check.\n"
		"Credentials: the AWS environment variables or shared files (no IMDS).\n");
	return out == stdout ? -1 : 2;
}

static int parse_args(struct aggcheck *ac, int argc, char **argv)
{
	enum { O_S3 = 256, O_BUCKET, O_DATA, O_DDB, O_TABLE, O_WINDOW, O_TIME, O_DIMS, O_MEASURES,
	       O_REGION, O_JSON, O_HELP };
	static const struct option opts[] = {
		{ "s3-endpoint", required_argument, NULL, O_S3 },
		{ "bucket", required_argument, NULL, O_BUCKET },
		{ "data-prefix", required_argument, NULL, O_DATA },
		{ "ddb-endpoint", required_argument, NULL, O_DDB },
		{ "table", required_argument, NULL, O_TABLE },
		{ "window-seconds", required_argument, NULL, O_WINDOW },
		{ "time-field", required_argument, NULL, O_TIME },
		{ "dimensions", required_argument, NULL, O_DIMS },
		{ "measures", required_argument, NULL, O_MEASURES },
		{ "region", required_argument, NULL, O_REGION },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	const char *dims = NULL, *measures = "count", *time_field = "timestamp", *window = NULL;
	struct kl_errinfo info = { 0 };
	char buf[512], *end;
	long long secs;
	int c;

	ac->region = "us-east-1";
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case O_S3: ac->s3_endpoint = optarg; break;
		case O_BUCKET: ac->bucket = optarg; break;
		case O_DATA: ac->data_prefix = optarg; break;
		case O_DDB: ac->ddb_endpoint = optarg; break;
		case O_TABLE: ac->table = optarg; break;
		case O_WINDOW: window = optarg; break;
		case O_TIME: time_field = optarg; break;
		case O_DIMS: dims = optarg; break;
		case O_MEASURES: measures = optarg; break;
		case O_REGION: ac->region = optarg; break;
		case O_JSON: ac->json = true; break;
		case O_HELP: return usage(stdout);
		default: return usage(stderr);
		}
	}
	if (optind != argc || !ac->s3_endpoint || !ac->bucket || !ac->data_prefix ||
	    !ac->ddb_endpoint || !ac->table || !window || !dims)
		return usage(stderr);
	/* window_seconds of the config: 1..86400. */
	errno = 0;
	secs = strtoll(window, &end, 10);
	if (errno || end == window || *end || secs < 1 || secs > 86400) {
		fprintf(stderr, "aggcheck: --window-seconds: 1..86400, not '%s'\n", window);
		return 2;
	}
	ac->spec.window_ms = (int64_t)secs * 1000;
	if (strlen(time_field) > AGG_NAME_MAX) {
		fprintf(stderr, "aggcheck: --time-field: longer than %d bytes\n", AGG_NAME_MAX);
		return 2;
	}
	snprintf(ac->spec.time_field, sizeof(ac->spec.time_field), "%s", time_field);
	if (agg_spec_parse_dims(dims, &ac->spec, &info) != KL_OK) {
		fprintf(stderr, "aggcheck: --dimensions: %s\n",
			kl_errinfo_format(KL_ECONFIG, &info, buf, sizeof(buf)));
		return 2;
	}
	if (agg_spec_parse_measures(measures, &ac->spec, &info) != KL_OK) {
		fprintf(stderr, "aggcheck: --measures: %s\n",
			kl_errinfo_format(KL_ECONFIG, &info, buf, sizeof(buf)));
		return 2;
	}
	for (size_t i = 0; i < ac->spec.n_dims; i++)
		if (ac->spec.dims[i].kind != AGG_DIM_FIELD) {
			fprintf(stderr, "aggcheck: key:%s: partition keys are not in the objects\n",
				ac->spec.dims[i].name);
			return 2;
		}
	return 0;
}

static int start(struct aggcheck *ac)
{
	struct aws_client_config cfg = { 0 };

	if (objread_init(&ac->rd, "aggcheck", ac->s3_endpoint, ac->region) != 0)
		return -1;
	cfg.region = ac->region;
	cfg.http.timeout_ms = 60000;
	cfg.retry.max_attempts = 5;
	cfg.service = "dynamodb";
	cfg.endpoint = ac->ddb_endpoint;
	if (aws_client_init(&ac->ddb, &cfg, ac->rd.creds) != KL_OK) {
		fprintf(stderr, "aggcheck: cannot set up the DynamoDB client for %s\n",
			ac->ddb_endpoint);
		return -1;
	}
	ac->ddb_ready = true;
	return 0;
}

static void aggcheck_done(struct aggcheck *ac)
{
	for (size_t i = 0; i < ac->n_slots; i++)
		free(ac->cells[i].key);
	free(ac->cells);
	/* Before objread_done(): the client borrows its creds. */
	if (ac->ddb_ready)
		aws_client_done(&ac->ddb);
	objread_done(&ac->rd);
}

int main(int argc, char **argv)
{
	struct aggcheck ac = { 0 };
	int rc = parse_args(&ac, argc, argv);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (start(&ac) != 0 || count_s3(&ac) != 0 || count_ddb(&ac) != 0) {
		rc = 2;
	} else {
		compare(&ac);
		print_figures(&ac);
		rc = ac.fig.mismatches || ac.fig.bad_items || ac.fig.s3_records != ac.fig.ddb_records ||
		     ac.fig.s3_untimed != ac.fig.ddb_untimed ? 1 : 0;
	}
	fflush(stdout);
	aggcheck_done(&ac);
	return rc;
}
