/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_agg.c: the aggregates module (src/agg/agg.c) with an in-memory
 * table that evaluates the same condition DynamoDB does: spec parsing,
 * event time, tumbling windows, lateness, measures and sums, key spreading
 * over buckets, the memory cap, and exactly-once application (repeats,
 * rebuilds, a crash in the middle, a stale zombie batch).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg.h"
#include "testutil.h"

/* ---------------------------------------------------------- an in-memory table */

#define T_MAX_ITEMS 256
#define T_MAX_SHARDS 4

struct t_item {
	char pk[AGG_PK_MAX + 1];
	uint64_t count, late, untimed;
	char sum0[32];
	double sum0_v;
	char shard[T_MAX_SHARDS][64];
	char esn[T_MAX_SHARDS][ESN_KEY_MAX];
	size_t n_shards;
	char dim0[AGG_VALUE_MAX + 1];
	uint32_t bucket;
	uint64_t set0[AGG_DISTINCT_BUCKETS / 64];   /* the first distinct measure's set */
};

struct t_table {
	struct t_item items[T_MAX_ITEMS];
	size_t n;
	int fail_after;                 /* > 0: fail the update after this many; -1 never */
	int calls;
};

static struct t_item *t_find(struct t_table *t, const char *pk)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->items[i].pk, pk) == 0)
			return &t->items[i];
	return NULL;
}

static enum kl_err t_update(void *ctx, const struct agg_update *u, struct kl_errinfo *info)
{
	struct t_table *t = ctx;
	struct t_item *it = t_find(t, u->pk);
	size_t s;

	t->calls++;
	if (t->fail_after >= 0 && t->calls > t->fail_after)
		return kl_errinfo_set(info, KL_ETHROTTLED, "throttled (test)");
	if (!it) {
		CU_ASSERT_FATAL(t->n < T_MAX_ITEMS);
		it = &t->items[t->n++];
		memset(it, 0, sizeof(*it));
		snprintf(it->pk, sizeof(it->pk), "%s", u->pk);
	}
	for (s = 0; s < it->n_shards; s++)
		if (strcmp(it->shard[s], u->esn_attr) == 0)
			break;
	/* attribute_not_exists(#e) OR #e < :e */
	if (s < it->n_shards && strcmp(it->esn[s], u->esn) >= 0)
		return kl_errinfo_set(info, KL_ECONFLICT, "The conditional request failed");
	if (s == it->n_shards) {
		CU_ASSERT_FATAL(s < T_MAX_SHARDS);
		snprintf(it->shard[s], sizeof(it->shard[s]), "%s", u->esn_attr);
		it->n_shards++;
	}
	snprintf(it->esn[s], sizeof(it->esn[s]), "%s", u->esn);
	it->count += u->count;
	it->late += u->late;
	it->untimed += u->untimed;
	if (u->n_sums) {
		it->sum0_v += strtod(u->sum_values[0], NULL);
		snprintf(it->sum0, sizeof(it->sum0), "%s", u->sum_values[0]);
	}
	if (u->n_dims)
		snprintf(it->dim0, sizeof(it->dim0), "%s", u->values[0]);
	if (u->n_distinct)
		for (size_t w = 0; w < AGG_DISTINCT_BUCKETS / 64; w++)
			it->set0[w] |= u->distinct[0][w];   /* ADD to a set: a union */
	it->bucket = u->bucket;
	return KL_OK;
}

static const struct agg_writer_ops t_ops = { .update = t_update };

static struct t_table *t_new(void)
{
	struct t_table *t = calloc(1, sizeof(*t));

	CU_ASSERT_FATAL(t != NULL);
	t->fail_after = -1;
	return t;
}

/* Totals of count + late over every item of dimension value v (all buckets). */
static uint64_t t_total(const struct t_table *t, const char *v)
{
	uint64_t n = 0;

	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->items[i].dim0, v) == 0)
			n += t->items[i].count + t->items[i].late;
	return n;
}

/* ---------------------------------------------------------- helpers */

static void spec_init(struct agg_spec *s, const char *dims, const char *measures)
{
	struct kl_errinfo info = { 0 };

	memset(s, 0, sizeof(*s));
	s->window_ms = 60000;
	s->lateness_ms = 10000;
	snprintf(s->time_field, sizeof(s->time_field), "ts");
	s->buckets = 4;
	s->max_entries = 1000;
	CU_ASSERT_EQUAL_FATAL(agg_spec_parse_dims(dims, s, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(agg_spec_parse_measures(measures, s, &info), KL_OK);
}

/* Adds one JSON output with the given arrival time. */
static void add(struct agg *a, const char *shard, const char *json, int64_t arrival_ms,
		const struct xform_pkey *keys, size_t nkeys)
{
	struct kl_transform_record rec;
	struct xform_output o;

	memset(&rec, 0, sizeof(rec));
	rec.data = (const uint8_t *)json;
	rec.len = strlen(json);
	rec.partition_key = "pk";
	rec.sequence_number = "1";
	rec.shard_id = shard;
	rec.approximate_arrival_ms = arrival_ms;
	memset(&o, 0, sizeof(o));
	o.data = (const uint8_t *)json;
	o.len = strlen(json);
	o.keys = keys;
	o.nkeys = nkeys;
	CU_ASSERT_EQUAL(agg_add(a, &rec, &o, NULL), KL_OK);
}

static struct esn esn_of(const char *seq)
{
	struct esn e;

	CU_ASSERT_EQUAL_FATAL(esn_set(seq, 0, &e, NULL), KL_OK);
	return e;
}

/* 2026-11-21T21:05:00Z */
#define T0 1795295100000LL

/* ---------------------------------------------------------- tests */

static void test_spec_parse(void)
{
	struct agg_spec s;
	struct kl_errinfo info = { 0 };

	memset(&s, 0, sizeof(s));
	CU_ASSERT_EQUAL(agg_spec_parse_dims(" page , key:dt,a.b ", &s, &info), KL_OK);
	CU_ASSERT_EQUAL(s.n_dims, 3);
	CU_ASSERT_STRING_EQUAL(s.dims[0].name, "page");
	CU_ASSERT_EQUAL(s.dims[0].kind, AGG_DIM_FIELD);
	CU_ASSERT_STRING_EQUAL(s.dims[1].name, "dt");
	CU_ASSERT_EQUAL(s.dims[1].kind, AGG_DIM_KEY);
	CU_ASSERT_STRING_EQUAL(s.dims[2].name, "a.b");
	CU_ASSERT_EQUAL(agg_spec_parse_dims("", &s, &info), KL_ECONFIG);
	CU_ASSERT_EQUAL(agg_spec_parse_dims("page,,action", &s, &info), KL_ECONFIG);
	CU_ASSERT_EQUAL(agg_spec_parse_dims("page,key:page", &s, &info), KL_ECONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "twice"));
	CU_ASSERT_EQUAL(agg_spec_parse_dims("pa ge", &s, &info), KL_ECONFIG);
	CU_ASSERT_EQUAL(agg_spec_parse_dims("a,b,c,d,e,f,g,h,i", &s, &info), KL_ECONFIG);
	CU_ASSERT_EQUAL(agg_spec_parse_measures("count, sum:price,sum:total", &s, &info), KL_OK);
	CU_ASSERT_EQUAL(s.n_sums, 2);
	CU_ASSERT_STRING_EQUAL(s.sums[1], "total");
	CU_ASSERT_EQUAL(agg_spec_parse_measures("", &s, &info), KL_OK);
	CU_ASSERT_EQUAL(s.n_sums, 0);
	CU_ASSERT_EQUAL(agg_spec_parse_measures("avg:price", &s, &info), KL_ECONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "avg:price"));
	CU_ASSERT_EQUAL(agg_spec_parse_measures("sum:", &s, &info), KL_ECONFIG);
	CU_ASSERT_EQUAL(agg_spec_parse_measures("count, distinct:session_id, sum:p, distinct:u",
						&s, &info), KL_OK);
	CU_ASSERT_EQUAL(s.n_distinct, 2);
	CU_ASSERT_EQUAL(s.n_sums, 1);
	CU_ASSERT_STRING_EQUAL(s.distincts[0], "session_id");
	CU_ASSERT_STRING_EQUAL(s.distincts[1], "u");
	CU_ASSERT_EQUAL(agg_spec_parse_measures("distinct:a, distinct:a", &s, &info), KL_ECONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "twice"));
	CU_ASSERT_EQUAL(agg_spec_parse_measures("distinct:a,distinct:b,distinct:c,distinct:d,distinct:e",
						&s, &info), KL_ECONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "at most 4"));
	CU_ASSERT_EQUAL(agg_spec_parse_measures("distinct:", &s, &info), KL_ECONFIG);
	CU_ASSERT_EQUAL(agg_spec_parse_measures("", &s, &info), KL_OK);
	CU_ASSERT_EQUAL(s.n_distinct, 0);
}

static unsigned popcount_set(const uint64_t *set)
{
	unsigned n = 0;

	for (size_t w = 0; w < AGG_DISTINCT_BUCKETS / 64; w++)
		n += (unsigned)__builtin_popcountll(set[w]);
	return n;
}

static bool has_bucket(const uint64_t *set, int b)
{
	return set[b / 64] >> (b % 64) & 1;
}

/* distinct:FIELD keeps the set of the values' buckets; a rebuild adds the
 * same set (set union: idempotent even without the ESN condition); the
 * linear-counting estimate is close for a thousand values. */
static void test_distinct(void)
{
	struct agg_spec s;
	struct t_table *t = t_new();
	struct agg_writer w = { &t_ops, t };
	struct agg *a = NULL;
	struct esn e = esn_of("9");
	uint64_t set[AGG_DISTINCT_BUCKETS / 64] = { 0 };
	char json[160];
	unsigned n;
	double est;

	CU_ASSERT_NOT_EQUAL_FATAL(agg_distinct_bucket("s1"), agg_distinct_bucket("s2"));
	spec_init(&s, "page", "count, distinct:session_id");
	s.buckets = 1;
	CU_ASSERT_EQUAL_FATAL(agg_new(&s, "shardId-000000000001", &w, &a, NULL), KL_OK);
	add(a, "s", "{\"ts\":1795295100000,\"page\":\"/m\",\"session_id\":\"s1\"}", T0, NULL, 0);
	add(a, "s", "{\"ts\":1795295100000,\"page\":\"/m\",\"session_id\":\"s1\"}", T0, NULL, 0);
	add(a, "s", "{\"ts\":1795295100000,\"page\":\"/m\",\"session_id\":\"s2\"}", T0, NULL, 0);
	add(a, "s", "{\"ts\":1795295100000,\"page\":\"/m\"}", T0, NULL, 0);  /* no session */
	add(a, "s", "{\"ts\":1795295100000,\"page\":\"/m\",\"session_id\":null}", T0, NULL, 0);
	CU_ASSERT_EQUAL(agg_apply(a, &e, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(t->n, 1);
	CU_ASSERT_EQUAL(t->items[0].count, 5);
	CU_ASSERT_EQUAL(popcount_set(t->items[0].set0), 2);
	CU_ASSERT(has_bucket(t->items[0].set0, agg_distinct_bucket("s1")));
	CU_ASSERT(has_bucket(t->items[0].set0, agg_distinct_bucket("s2")));
	agg_free(a);

	/* The estimator: exact at 0, m ln 2 at half, a thousand values within
	 * 3 standard errors (2.6 % each at n = m). FNV-1a makes it repeatable. */
	CU_ASSERT_DOUBLE_EQUAL(agg_distinct_estimate(0), 0.0, 1e-9);
	CU_ASSERT_DOUBLE_EQUAL(agg_distinct_estimate(AGG_DISTINCT_BUCKETS / 2),
			       AGG_DISTINCT_BUCKETS * 0.693147, 0.01);
	CU_ASSERT(agg_distinct_estimate(AGG_DISTINCT_BUCKETS) > 7000);
	for (int i = 0; i < 1000; i++) {
		int b;

		snprintf(json, sizeof(json), "sess-%d-%08x", i, (unsigned)i * 2654435761u);
		b = agg_distinct_bucket(json);
		set[b / 64] |= 1ULL << (b % 64);
	}
	n = popcount_set(set);
	est = agg_distinct_estimate(n);
	printf("\n  1000 distinct values: %u of %d buckets set, estimate %.0f\n", n,
	       AGG_DISTINCT_BUCKETS, est);
	CU_ASSERT(est > 920 && est < 1080);
	free(t);
}

static void test_time_and_windows(void)
{
	int64_t ms = 0;

	CU_ASSERT_TRUE(agg_parse_time("2026-11-21T21:05:00Z", &ms));
	CU_ASSERT_EQUAL(ms, T0);
	CU_ASSERT_TRUE(agg_parse_time("2026-11-21T21:05:00.123Z", &ms));
	CU_ASSERT_EQUAL(ms, T0 + 123);
	CU_ASSERT_TRUE(agg_parse_time("2026-11-21T21:05:00.1Z", &ms));
	CU_ASSERT_EQUAL(ms, T0 + 100);
	CU_ASSERT_TRUE(agg_parse_time("2026-11-21T22:05:00+01:00", &ms));
	CU_ASSERT_EQUAL(ms, T0);
	CU_ASSERT_TRUE(agg_parse_time("2026-11-21T20:35:00-0030", &ms));
	CU_ASSERT_EQUAL(ms, T0);
	CU_ASSERT_TRUE(agg_parse_time("1795295100000", &ms));
	CU_ASSERT_EQUAL(ms, T0);
	CU_ASSERT_FALSE(agg_parse_time("2026-11-21T21:05:00", &ms));   /* no zone */
	CU_ASSERT_FALSE(agg_parse_time("2026-13-21T21:05:00Z", &ms));
	CU_ASSERT_FALSE(agg_parse_time("yesterday", &ms));
	CU_ASSERT_FALSE(agg_parse_time("", &ms));

	CU_ASSERT_EQUAL(agg_window_start(T0 + 59999, 60000), T0);
	CU_ASSERT_EQUAL(agg_window_start(T0 + 60000, 60000), T0 + 60000);
	CU_ASSERT_EQUAL(agg_window_start(-1, 60000), -60000);
	CU_ASSERT_EQUAL(agg_window_start(0, 60000), 0);
}

static void test_windowing_and_lateness(void)
{
	struct agg_spec s;
	struct t_table *t = t_new();
	struct agg_writer w = { &t_ops, t };
	struct agg *a = NULL;
	struct esn e = esn_of("100");
	struct agg_stats st;

	spec_init(&s, "page", "count");
	CU_ASSERT_EQUAL_FATAL(agg_new(&s, "shardId-000000000001", &w, &a, NULL), KL_OK);
	/* On time: in its window, arrived before window end + 10 s. */
	add(a, "shardId-000000000001", "{\"ts\":\"2026-11-21T21:05:10Z\",\"page\":\"/a\"}", T0 + 11000, NULL, 0);
	add(a, "shardId-000000000001", "{\"ts\":\"2026-11-21T21:05:59.999Z\",\"page\":\"/a\"}", T0 + 69999, NULL, 0);
	/* Late: arrived at window end + lateness exactly. */
	add(a, "shardId-000000000001", "{\"ts\":\"2026-11-21T21:05:30Z\",\"page\":\"/a\"}", T0 + 70000, NULL, 0);
	/* Next window. */
	add(a, "shardId-000000000001", "{\"ts\":\"2026-11-21T21:06:00Z\",\"page\":\"/a\"}", T0 + 70000, NULL, 0);
	/* No usable time: the arrival time decides the window, never late. */
	add(a, "shardId-000000000001", "{\"ts\":\"garbage\",\"page\":\"/a\"}", T0 + 5000, NULL, 0);
	add(a, "shardId-000000000001", "not json at all", T0 + 5000, NULL, 0);
	agg_get_stats(a, &st);
	CU_ASSERT_EQUAL(st.records, 6);
	CU_ASSERT_EQUAL(st.late, 1);
	CU_ASSERT_EQUAL(st.untimed, 2);
	CU_ASSERT_EQUAL(st.entries, 3);   /* (21:05,/a) (21:06,/a) (21:05,(none)) */
	CU_ASSERT_EQUAL(agg_apply(a, &e, NULL), KL_OK);
	CU_ASSERT_EQUAL(t->n, 3);
	{
		struct t_item *i1 = t_find(t, "2026-11-21T21:05:00Z#/a#b1");
		struct t_item *i2 = t_find(t, "2026-11-21T21:06:00Z#/a#b1");
		struct t_item *i3 = t_find(t, "2026-11-21T21:05:00Z#" AGG_NONE_VALUE "#b1");

		CU_ASSERT_FATAL(i1 && i2 && i3);
		CU_ASSERT_EQUAL(i1->count, 3);    /* 2 on time + 1 untimed */
		CU_ASSERT_EQUAL(i1->late, 1);
		CU_ASSERT_EQUAL(i1->untimed, 1);
		CU_ASSERT_EQUAL(i2->count, 1);
		CU_ASSERT_EQUAL(i2->late, 0);
		CU_ASSERT_EQUAL(i3->count, 1);
		CU_ASSERT_EQUAL(i3->untimed, 1);
	}
	agg_free(a);
	free(t);
}

static void test_measures_and_dims(void)
{
	struct agg_spec s;
	struct t_table *t = t_new();
	struct agg_writer w = { &t_ops, t };
	struct agg *a = NULL;
	struct esn e = esn_of("7");
	struct xform_pkey k = { "dt", "2026-11-21" };
	char txt[32];

	spec_init(&s, "key:dt, item.kind", "count,sum:price");
	CU_ASSERT_EQUAL_FATAL(agg_new(&s, "shardId-000000000002", &w, &a, NULL), KL_OK);
	add(a, "s", "{\"ts\":1795295100000,\"price\":12.34,\"item\":{\"kind\":\"pizza\"}}", T0, &k, 1);
	add(a, "s", "{\"ts\":1795295100000,\"price\":0.66,\"item\":{\"kind\":\"pizza\"}}", T0, &k, 1);
	add(a, "s", "{\"ts\":1795295100000,\"price\":\"3\",\"item\":{\"kind\":\"pizza\"}}", T0, &k, 1);
	add(a, "s", "{\"ts\":1795295100000,\"price\":7,\"item\":{\"kind\":\"pizza\"}}", T0, &k, 1);
	add(a, "s", "{\"ts\":1795295100000,\"price\":1,\"item\":{\"kind\":4}}", T0, NULL, 0);
	CU_ASSERT_EQUAL(agg_apply(a, &e, NULL), KL_OK);
	CU_ASSERT_EQUAL(t->n, 2);
	{
		struct t_item *i1 = t_find(t, "2026-11-21T21:05:00Z#2026-11-21#pizza#b2");
		struct t_item *i2 = t_find(t, "2026-11-21T21:05:00Z#" AGG_NONE_VALUE "#4#b2");

		CU_ASSERT_FATAL(i1 && i2);
		CU_ASSERT_EQUAL(i1->count, 4);
		CU_ASSERT_STRING_EQUAL(i1->sum0, "20");   /* 12.34 + 0.66 + 7; "3" is text */
		CU_ASSERT_STRING_EQUAL(i2->sum0, "1");
	}
	agg_format_micros(1234500000, txt, sizeof(txt));
	CU_ASSERT_STRING_EQUAL(txt, "1234.5");
	agg_format_micros(-1, txt, sizeof(txt));
	CU_ASSERT_STRING_EQUAL(txt, "-0.000001");
	agg_format_micros(0, txt, sizeof(txt));
	CU_ASSERT_STRING_EQUAL(txt, "0");
	agg_free(a);
	free(t);
}

static void test_keys_and_buckets(void)
{
	const char *v[] = { "a#b", "50%", "/p" };
	char key[64];
	unsigned seen[4] = { 0 };

	CU_ASSERT_EQUAL(agg_item_key("W", v, 3, 2, key, sizeof(key)), KL_OK);
	CU_ASSERT_STRING_EQUAL(key, "W#a%23b#50%25#/p#b2");
	CU_ASSERT_EQUAL(agg_item_key("W", v, 3, 2, key, 10), KL_EINVAL);
	/* Sequential shard numbers spread evenly; the id decides, nothing else. */
	CU_ASSERT_EQUAL(agg_bucket("shardId-000000000000", 4), 0);
	CU_ASSERT_EQUAL(agg_bucket("shardId-000000000007", 4), 3);
	CU_ASSERT_EQUAL(agg_bucket("shardId-000000000007", 1), 0);
	for (int i = 0; i < 16; i++) {
		char id[32];

		snprintf(id, sizeof(id), "shardId-%012d", i);
		seen[agg_bucket(id, 4)]++;
	}
	for (int b = 0; b < 4; b++)
		CU_ASSERT_EQUAL(seen[b], 4);
	CU_ASSERT(agg_bucket("no-digits-here", 4) < 4);
	CU_ASSERT_EQUAL(agg_bucket("no-digits-here", 4), agg_bucket("no-digits-here", 4));
}

/*
 * One popular page from 4 shards: 4 items (one per bucket), whose sum is
 * the total; a dashboard reads the buckets and adds them up.
 */
static void test_spreading_sums_to_total(void)
{
	struct agg_spec s;
	struct t_table *t = t_new();
	struct agg_writer w = { &t_ops, t };
	struct esn e = esn_of("9");

	spec_init(&s, "page", "count");
	for (int sh = 0; sh < 4; sh++) {
		char id[32];
		struct agg *a = NULL;

		snprintf(id, sizeof(id), "shardId-%012d", sh);
		CU_ASSERT_EQUAL_FATAL(agg_new(&s, id, &w, &a, NULL), KL_OK);
		for (int i = 0; i <= sh; i++)
			add(a, id, "{\"ts\":\"2026-11-21T21:05:10Z\",\"page\":\"/hot\"}", T0 + 1000, NULL, 0);
		CU_ASSERT_EQUAL(agg_apply(a, &e, NULL), KL_OK);
		agg_free(a);
	}
	CU_ASSERT_EQUAL(t->n, 4);
	CU_ASSERT_EQUAL(t_total(t, "/hot"), 1 + 2 + 3 + 4);
	free(t);
}

static void test_memory_cap(void)
{
	struct agg_spec s;
	struct t_table *t = t_new();
	struct agg_writer w = { &t_ops, t };
	struct agg *a = NULL;
	struct agg_stats st;
	char json[128];

	spec_init(&s, "page", "count");
	s.max_entries = 10;
	CU_ASSERT_EQUAL_FATAL(agg_new(&s, "shardId-000000000000", &w, &a, NULL), KL_OK);
	for (int i = 0; i < 9; i++) {
		snprintf(json, sizeof(json), "{\"ts\":\"2026-11-21T21:05:10Z\",\"page\":\"/p%d\"}", i);
		add(a, "s", json, T0, NULL, 0);
		add(a, "s", json, T0, NULL, 0);   /* same entry: no growth */
	}
	CU_ASSERT_FALSE(agg_full(a));
	add(a, "s", "{\"ts\":\"2026-11-21T21:05:10Z\",\"page\":\"/p9\"}", T0, NULL, 0);
	CU_ASSERT_TRUE(agg_full(a));
	agg_get_stats(a, &st);
	CU_ASSERT_EQUAL(st.entries, 10);
	/* A long value is cut at a character boundary, bad bytes replaced. */
	{
		char big[600];

		memcpy(big, "{\"page\":\"", 9);
		for (int i = 0; i < 150; i++)
			memcpy(big + 9 + 2 * i, "\xc3\xa9", 2);
		memcpy(big + 309, "\"}", 3);
		add(a, "s", big, T0, NULL, 0);
	}
	agg_reset(a);
	CU_ASSERT_FALSE(agg_full(a));
	agg_get_stats(a, &st);
	CU_ASSERT_EQUAL(st.entries, 0);
	agg_free(a);
	free(t);
}

/*
 * Exactly once: the same batch applied again (a retry, or a rebuild by the
 * next owner with the same end ESN) changes nothing; a crash in the middle
 * is completed by the rebuild; an older batch (a zombie's) is refused once
 * a later one is in; the next batch adds.
 */
static void test_exactly_once(void)
{
	struct agg_spec s;
	struct t_table *t = t_new();
	struct agg_writer w = { &t_ops, t };
	struct agg *a = NULL;
	struct agg_stats st;
	struct esn e1 = esn_of("49590338271490256608559692538361571095921575989136588898");
	struct esn e2 = esn_of("49590338271490256608559692540925702759324208523137515618");
	char json[128];

	spec_init(&s, "page", "count");
	CU_ASSERT_EQUAL_FATAL(agg_new(&s, "shardId-000000000003", &w, &a, NULL), KL_OK);
#define BATCH1()                                                                                   \
	for (int i = 0; i < 5; i++) {                                                              \
		snprintf(json, sizeof(json), "{\"ts\":\"2026-11-21T21:05:10Z\",\"page\":\"/p%d\"}", i); \
		add(a, "s", json, T0, NULL, 0);                                                    \
		add(a, "s", json, T0, NULL, 0);                                                    \
	}
	BATCH1();
	/* The writer fails after 2 items (throttled, then the worker died). */
	t->fail_after = 2;
	CU_ASSERT_EQUAL(agg_apply(a, &e1, NULL), KL_ETHROTTLED);
	CU_ASSERT_EQUAL(t->n, 2);
	/* A retry goes on where it stopped. */
	t->fail_after = 2;
	t->calls = 0;
	CU_ASSERT_EQUAL(agg_apply(a, &e1, NULL), KL_ETHROTTLED);
	CU_ASSERT_EQUAL(t->n, 4);
	/* The worker dies: a new owner rebuilds the same batch (same end). */
	agg_free(a);
	a = NULL;
	t->fail_after = -1;
	CU_ASSERT_EQUAL_FATAL(agg_new(&s, "shardId-000000000003", &w, &a, NULL), KL_OK);
	BATCH1();
	CU_ASSERT_EQUAL(agg_apply(a, &e1, NULL), KL_OK);
	agg_get_stats(a, &st);
	CU_ASSERT_EQUAL(st.already_applied, 4);
	CU_ASSERT_EQUAL(st.updates, 1);
	for (int i = 0; i < 5; i++) {
		snprintf(json, sizeof(json), "/p%d", i);
		CU_ASSERT_EQUAL(t_total(t, json), 2);
	}
	/* Applying again after success: still nothing (entries are done). */
	CU_ASSERT_EQUAL(agg_apply(a, &e1, NULL), KL_OK);
	agg_reset(a);
	/* And a fresh rebuild once more: refused by the condition. */
	BATCH1();
	CU_ASSERT_EQUAL(agg_apply(a, &e1, NULL), KL_OK);
	CU_ASSERT_EQUAL(t_total(t, "/p0"), 2);
	agg_reset(a);
	/* The next batch adds. */
	add(a, "s", "{\"ts\":\"2026-11-21T21:05:10Z\",\"page\":\"/p0\"}", T0, NULL, 0);
	CU_ASSERT_EQUAL(agg_apply(a, &e2, NULL), KL_OK);
	CU_ASSERT_EQUAL(t_total(t, "/p0"), 3);
	agg_reset(a);
	/* A zombie's late apply of batch 1 changes nothing now. */
	BATCH1();
	CU_ASSERT_EQUAL(agg_apply(a, &e1, NULL), KL_OK);
	CU_ASSERT_EQUAL(t_total(t, "/p0"), 3);
	CU_ASSERT_EQUAL(t_total(t, "/p1"), 2);
#undef BATCH1
	agg_free(a);
	free(t);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_spec_parse),
		KL_TEST(test_time_and_windows),
		KL_TEST(test_windowing_and_lateness),
		KL_TEST(test_measures_and_dims),
		KL_TEST(test_keys_and_buckets),
		KL_TEST(test_spreading_sums_to_total),
		KL_TEST(test_memory_cap),
		KL_TEST(test_exactly_once),
		KL_TEST(test_distinct),
		{ 0 },
	};

	return kl_test_run("agg", t);
}
