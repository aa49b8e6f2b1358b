/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_demo.c: the demo producer's generator and send queue, in-process.
 * Generator: determinism per seed, valid JSON except the intended
 * malformed events (and those are malformed the way they claim), ratios,
 * per-key seq, unique ids, sizes, bot user agents, and what the real
 * clickstream plugin makes of every kind. Queue: batches that the KPL
 * decoder reads back, limits, exactly-once and per-key order under
 * injected PutRecords failures and a stale shard map, and argument errors
 * of `kinlake demo produce`.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libconfig.h>
#include <openssl/evp.h>

#include "buf.h"
#include "demo.h"
#include "kinesis.h"
#include "kpl.h"
#include "testutil.h"
#include "util.h"
#include "xform.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define NOW_MS 1763716530000LL /* 2025-11-21T09:15:30Z */

static const char *const default_bots[] = { "bot", "crawler", "spider", "slurp", "headless" };

/* ------------------------------------------------------------ helpers */

/* n events from a fresh generator; texts NUL-separated in *ret_texts. */
struct events {
	size_t n;
	struct demo_event *ev;
	char **text;
	size_t *len;
};

static void events_make(struct events *e, uint64_t seed, const struct demo_gen_opts *opts,
			size_t n)
{
	struct demo_gen *g = NULL;
	struct buf b;

	CU_ASSERT_EQUAL_FATAL(demo_gen_new(seed, opts, &g), KL_OK);
	e->n = n;
	e->ev = calloc(n, sizeof(*e->ev));
	e->text = calloc(n, sizeof(*e->text));
	e->len = calloc(n, sizeof(*e->len));
	CU_ASSERT_FATAL(e->ev && e->text && e->len);
	buf_init(&b, 0);
	for (size_t i = 0; i < n; i++) {
		buf_reset(&b);
		CU_ASSERT_EQUAL_FATAL(demo_gen_event(g, NOW_MS + (int64_t)i * 7, &b, &e->ev[i]), KL_OK);
		e->text[i] = malloc(b.len + 1);
		CU_ASSERT_FATAL(e->text[i] != NULL);
		memcpy(e->text[i], b.data, b.len + 1);
		e->len[i] = b.len;
	}
	buf_done(&b);
	demo_gen_free(g);
}

static void events_free(struct events *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->text[i]);
	free(e->text);
	free(e->ev);
	free(e->len);
	memset(e, 0, sizeof(*e));
}

static struct demo_gen_opts gen_opts(double malformed, double bots, unsigned sessions)
{
	struct demo_gen_opts o;

	demo_gen_opts_default(&o);
	o.malformed_pct = malformed;
	o.bot_pct = bots;
	o.sessions = sessions;
	return o;
}

/* Strict JSON with UTF-8 validation, the way the clickstream plugin reads. */
static json_object *parse_strict(const char *data, size_t len)
{
	json_tokener *tok = json_tokener_new();
	json_object *o;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, data, (int)len);
	if (o && json_tokener_get_parse_end(tok) != len) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

static const char *str_field(json_object *o, const char *name)
{
	json_object *v;

	if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool is_bot_ua(const char *ua)
{
	for (size_t i = 0; i < KL_ARRAY_LEN(default_bots); i++)
		if (strcasestr(ua, default_bots[i]))
			return true;
	return false;
}

/* "2025-11-21T09:15:29.123Z" */
static bool is_iso_ms(const char *s)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	if (!s || strlen(s) != sizeof(pat) - 1)
		return false;
	for (size_t i = 0; pat[i]; i++)
		if (pat[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pat[i])
			return false;
	return true;
}

static bool contains_id(const char *text, size_t len, const char *id)
{
	char needle[DEMO_EVENT_ID_MAX + 16];
	size_t nl = (size_t)snprintf(needle, sizeof(needle), "\"event_id\":\"%s\"", id);

	for (size_t i = 0; i + nl <= len; i++)
		if (memcmp(text + i, needle, nl) == 0)
			return true;
	return false;
}

/* Per-key order: for every partition key, seq is 1, 2, 3, ... in the order
 * given. Sorts a copy; returns the number of keys, or -1 on a violation. */
struct keyseq {
	char key[DEMO_KEY_MAX];
	uint64_t seq;
	size_t order;
};

static int keyseq_cmp(const void *a, const void *b)
{
	const struct keyseq *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static long check_key_order(struct keyseq *v, size_t n)
{
	long keys = 0;

	qsort(v, n, sizeof(*v), keyseq_cmp);
	for (size_t i = 0; i < n; i++) {
		bool first = i == 0 || strcmp(v[i].key, v[i - 1].key) != 0;

		if (first)
			keys++;
		if (v[i].seq != (first ? 1 : v[i - 1].seq + 1)) {
			fprintf(stderr, "\n  key %s: seq %" PRIu64 " after %" PRIu64 "\n", v[i].key,
				v[i].seq, first ? 0 : v[i - 1].seq);
			return -1;
		}
	}
	return keys;
}

/* ------------------------------------------------------------ generator */

static void test_determinism(void)
{
	struct demo_gen_opts o = gen_opts(5, 10, 200);
	struct events a, b, c, d;
	size_t differ = 0;

	events_make(&a, 42, &o, 3000);
	events_make(&b, 42, &o, 3000);
	events_make(&c, 43, &o, 3000);
	for (size_t i = 0; i < a.n; i++) {
		CU_ASSERT_EQUAL(a.len[i], b.len[i]);
		CU_ASSERT(memcmp(a.text[i], b.text[i], a.len[i]) == 0);
		CU_ASSERT(memcmp(&a.ev[i], &b.ev[i], sizeof(a.ev[i])) == 0);
		differ += a.len[i] != c.len[i] || memcmp(a.text[i], c.text[i], a.len[i]) != 0;
	}
	CU_ASSERT_EQUAL(differ, a.n); /* another seed: other ids, so every event differs */
	CU_ASSERT_STRING_EQUAL(a.ev[0].event_id, "42-0");
	CU_ASSERT_STRING_EQUAL(a.ev[2999].event_id, "42-2999");
	CU_ASSERT_STRING_EQUAL(c.ev[5].event_id, "43-5");

	/* The kinds and keys do not depend on the clock. */
	{
		struct demo_gen *g = NULL;
		struct buf buf;

		buf_init(&buf, 0);
		CU_ASSERT_EQUAL_FATAL(demo_gen_new(42, &o, &g), KL_OK);
		for (size_t i = 0; i < a.n; i++) {
			struct demo_event ev;

			buf_reset(&buf);
			CU_ASSERT_EQUAL_FATAL(demo_gen_event(g, 1000LL * (int64_t)i, &buf, &ev), KL_OK);
			CU_ASSERT(memcmp(&ev, &a.ev[i], sizeof(ev)) == 0);
		}
		demo_gen_free(g);
		buf_done(&buf);
	}

	/* --ids-from: ids continue from there, and sessions are new ones
	 * (a reused session id would restart its seq at 1). */
	o.first_id = 3000;
	events_make(&d, 42, &o, 3000);
	CU_ASSERT_STRING_EQUAL(d.ev[0].event_id, "42-3000");
	CU_ASSERT_EQUAL(d.ev[2999].n, 5999);
	for (size_t i = 0; i < d.n; i++)
		for (size_t j = 0; j < a.n; j += 97)
			CU_ASSERT(strcmp(d.ev[i].partition_key, a.ev[j].partition_key) != 0);
	events_free(&a);
	events_free(&b);
	events_free(&c);
	events_free(&d);
}

static void test_json_and_kinds(void)
{
	static const char *const actions[] = { "view", "click", "add_to_cart", "purchase",
					       "track_parcel", "search" };
	struct demo_gen_opts o = gen_opts(5, 10, 500);
	const size_t n = 12000;
	struct events e;
	size_t kinds[DEMO_KIND_COUNT] = { 0 }, seen_action[6] = { 0 }, malformed = 0;

	events_make(&e, 7, &o, n);
	for (size_t i = 0; i < n; i++) {
		const struct demo_event *ev = &e.ev[i];
		json_object *j = parse_strict(e.text[i], e.len[i]);
		const char *action, *page, *ua;

		kinds[ev->kind]++;
		/* Every record names its id, so a reader can account for it. */
		CU_ASSERT(contains_id(e.text[i], e.len[i], ev->event_id));
		if (demo_kind_malformed(ev->kind))
			malformed++;
		switch (ev->kind) {
		case DEMO_KIND_TRUNCATED:
		case DEMO_KIND_NOT_JSON:
		case DEMO_KIND_BAD_UTF8:
			CU_ASSERT_PTR_NULL(j);
			if (ev->kind == DEMO_KIND_BAD_UTF8) {
				/* Well-formed apart from the encoding. */
				json_object *loose = json_tokener_parse(e.text[i]);

				CU_ASSERT_PTR_NOT_NULL(loose);
				json_object_put(loose);
			}
			if (ev->kind == DEMO_KIND_TRUNCATED)
				CU_ASSERT(e.text[i][0] == '{' && e.text[i][e.len[i] - 1] != '}');
			if (ev->kind == DEMO_KIND_NOT_JSON)
				CU_ASSERT(e.text[i][0] != '{');
			break;
		case DEMO_KIND_MISSING_FIELDS:
			CU_ASSERT_PTR_NOT_NULL_FATAL(j);
			CU_ASSERT_PTR_NULL(str_field(j, "user_id"));
			CU_ASSERT_PTR_NULL(str_field(j, "action"));
			CU_ASSERT_STRING_EQUAL(str_field(j, "event_id"), ev->event_id);
			CU_ASSERT(!is_bot_ua(str_field(j, "user_agent")));
			break;
		case DEMO_KIND_OK:
		case DEMO_KIND_BOT:
			CU_ASSERT_PTR_NOT_NULL_FATAL(j);
			CU_ASSERT_STRING_EQUAL(str_field(j, "event_id"), ev->event_id);
			CU_ASSERT_STRING_EQUAL(str_field(j, "session_id"), ev->partition_key);
			{
				json_object *seq;

				CU_ASSERT_FATAL(json_object_object_get_ex(j, "seq", &seq));
				CU_ASSERT_EQUAL((uint64_t)json_object_get_int64(seq), ev->seq);
			}
			CU_ASSERT(is_iso_ms(str_field(j, "ts")));
			CU_ASSERT_PTR_NOT_NULL(str_field(j, "user_id"));
			CU_ASSERT_PTR_NOT_NULL(str_field(j, "referrer"));
			CU_ASSERT_PTR_NOT_NULL(str_field(j, "device"));
			CU_ASSERT_EQUAL(strlen(str_field(j, "country")), 2);
			action = str_field(j, "action");
			page = str_field(j, "page");
			ua = str_field(j, "user_agent");
			CU_ASSERT_FATAL(action && page && ua);
			CU_ASSERT(page[0] == '/');
			CU_ASSERT_EQUAL(is_bot_ua(ua), ev->kind == DEMO_KIND_BOT);
			for (size_t k = 0; k < 6; k++)
				if (strcmp(action, actions[k]) == 0)
					seen_action[k]++;
			if (strcmp(action, "add_to_cart") == 0) {
				CU_ASSERT_PTR_NOT_NULL(str_field(j, "item_id"));
				CU_ASSERT(json_object_object_get_ex(j, "price", NULL));
				CU_ASSERT(strncmp(page, "/menu/", 6) == 0);
			} else if (strcmp(action, "purchase") == 0) {
				CU_ASSERT_PTR_NOT_NULL(str_field(j, "order_id"));
				CU_ASSERT(json_object_object_get_ex(j, "total", NULL));
				CU_ASSERT_STRING_EQUAL(page, "/checkout");
			} else if (strcmp(action, "track_parcel") == 0) {
				CU_ASSERT_PTR_NOT_NULL(str_field(j, "parcel_id"));
				CU_ASSERT(strncmp(page, "/track/", 7) == 0);
			} else if (strcmp(action, "search") == 0) {
				CU_ASSERT_PTR_NOT_NULL(str_field(j, "query"));
				CU_ASSERT(strncmp(page, "/search?q=", 10) == 0);
			}
			if (ev->kind == DEMO_KIND_BOT)
				CU_ASSERT_STRING_EQUAL(action, "view");
			break;
		}
		json_object_put(j);
	}
	/* Every action occurs; every kind occurs; ratios near the options. */
	for (size_t k = 0; k < 6; k++)
		CU_ASSERT(seen_action[k] > 100);
	for (int k = 0; k < DEMO_KIND_COUNT; k++)
		CU_ASSERT(kinds[k] > 0);
	CU_ASSERT(malformed >= n * 4 / 100 && malformed <= n * 6 / 100);
	/* Bots are chosen per session: 10 % of sessions, about 10 % of events. */
	CU_ASSERT(kinds[DEMO_KIND_BOT] >= n * 6 / 100 && kinds[DEMO_KIND_BOT] <= n * 14 / 100);
	events_free(&e);

	/* With both at 0 there are none. */
	o = gen_opts(0, 0, 100);
	events_make(&e, 8, &o, 5000);
	for (size_t i = 0; i < e.n; i++)
		CU_ASSERT_EQUAL(e.ev[i].kind, DEMO_KIND_OK);
	events_free(&e);
	/* And at 100 every event is malformed or from a bot. */
	o = gen_opts(100, 100, 100);
	events_make(&e, 9, &o, 2000);
	for (size_t i = 0; i < e.n; i++) {
		CU_ASSERT(demo_kind_malformed(e.ev[i].kind));
		CU_ASSERT(e.ev[i].kind != DEMO_KIND_MISSING_FIELDS); /* bots only get parse errors */
	}
	events_free(&e);
}

static void test_counts_and_options(void)
{
	struct demo_gen_opts o = gen_opts(3, 3, 50);
	struct demo_gen *g = NULL;
	struct buf b;
	uint64_t mine[DEMO_KIND_COUNT] = { 0 }, total = 0;

	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(demo_gen_new(1, &o, &g), KL_OK);
	for (int i = 0; i < 4000; i++) {
		struct demo_event ev;

		buf_reset(&b);
		CU_ASSERT_EQUAL_FATAL(demo_gen_event(g, NOW_MS, &b, &ev), KL_OK);
		mine[ev.kind]++;
	}
	for (int k = 0; k < DEMO_KIND_COUNT; k++) {
		CU_ASSERT_EQUAL(demo_gen_counts(g)[k], mine[k]);
		total += demo_gen_counts(g)[k];
	}
	CU_ASSERT_EQUAL(total, 4000);

	/* A full buffer: KL_ENOMEM, nothing appended, the generator not advanced. */
	{
		struct buf small;
		struct demo_event ev, ev2;

		buf_init(&small, 100);
		CU_ASSERT_EQUAL(demo_gen_event(g, NOW_MS, &small, &ev), KL_ENOMEM);
		CU_ASSERT_EQUAL(small.len, 0);
		buf_reset(&b);
		CU_ASSERT_EQUAL(demo_gen_event(g, NOW_MS, &b, &ev2), KL_OK);
		CU_ASSERT_EQUAL(ev2.n, 4000);
		buf_done(&small);
	}
	demo_gen_free(g);
	demo_gen_free(NULL);
	buf_done(&b);

	o.malformed_pct = 101;
	CU_ASSERT_EQUAL(demo_gen_new(1, &o, &g), KL_EINVAL);
	o = gen_opts(1, -1, 10);
	CU_ASSERT_EQUAL(demo_gen_new(1, &o, &g), KL_EINVAL);
	o = gen_opts(1, 1, 0);
	CU_ASSERT_EQUAL(demo_gen_new(1, &o, &g), KL_EINVAL);
	CU_ASSERT_EQUAL(demo_gen_new(1, NULL, &g), KL_OK);
	demo_gen_free(g);

	CU_ASSERT_STRING_EQUAL(demo_kind_name(DEMO_KIND_NOT_JSON), "not-json");
	CU_ASSERT(!demo_kind_malformed(DEMO_KIND_BOT));
	CU_ASSERT(demo_kind_malformed(DEMO_KIND_BAD_UTF8));
}

static void test_seq_ids_sizes(void)
{
	struct demo_gen_opts o = gen_opts(2, 5, 300);
	const size_t n = 6000;
	struct events e;
	struct keyseq *ks = calloc(n, sizeof(*ks));
	size_t valid = 0, total = 0, lo = SIZE_MAX, hi = 0;
	long keys;

	CU_ASSERT_FATAL(ks != NULL);
	events_make(&e, 1234567, &o, n);
	for (size_t i = 0; i < n; i++) {
		char id[DEMO_EVENT_ID_MAX];

		snprintf(id, sizeof(id), "1234567-%zu", i);
		CU_ASSERT_STRING_EQUAL(e.ev[i].event_id, id); /* unique and consecutive */
		CU_ASSERT_EQUAL(e.ev[i].n, i);
		CU_ASSERT_EQUAL(strlen(e.ev[i].partition_key), 36);
		snprintf(ks[i].key, sizeof(ks[i].key), "%s", e.ev[i].partition_key);
		ks[i].seq = e.ev[i].seq;
		ks[i].order = i;
		CU_ASSERT(e.len[i] <= DEMO_EVENT_MAX);
		if (!demo_kind_malformed(e.ev[i].kind)) {
			valid++;
			total += e.len[i];
			lo = e.len[i] < lo ? e.len[i] : lo;
			hi = e.len[i] > hi ? e.len[i] : hi;
		}
	}
	keys = check_key_order(ks, n);
	CU_ASSERT(keys > 0);
	/* Sessions of several events each. */
	CU_ASSERT((double)n / (double)keys >= 3.0 && (double)n / (double)keys <= 12.0);
	/* A few hundred bytes. */
	CU_ASSERT(lo >= 300);
	CU_ASSERT(hi <= 1000);
	CU_ASSERT(total / valid >= 400 && total / valid <= 700);
	fprintf(stderr, "[sizes %zu..%zu, mean %zu, %.1f events per session] ", lo, hi,
		total / valid, (double)n / (double)keys);
	free(ks);
	events_free(&e);
}

/* ------------------------------------------------------------ clickstream */

/* Runs every kind through the built clickstream plugin (staged into a
 * private directory: the host refuses group-writable plugin files). */
static void test_clickstream_plugin(void)
{
	char dir[] = "/tmp/kl-test-demo-XXXXXX", src[4096], dst[4200], chunk[65536];
	struct xform_plugin *p = NULL;
	struct xform *x = NULL;
	struct kl_errinfo info;
	struct events e;
	struct demo_gen_opts o = gen_opts(8, 10, 300);
	size_t results[DEMO_KIND_COUNT][3] = { { 0 } };
	config_t cfg;
	ssize_t r;
	int in, out;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(src, sizeof(src), "%s/plugins/clickstream/.libs/clickstream.so", KL_TEST_BUILDDIR);
	snprintf(dst, sizeof(dst), "%s/clickstream.so", dir);
	in = open(src, O_RDONLY);
	if (in < 0)
		fprintf(stderr, "cannot open %s: %s\n", src, strerror(errno));
	CU_ASSERT_FATAL(in >= 0);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0755);
	CU_ASSERT_FATAL(out >= 0);
	while ((r = read(in, chunk, sizeof(chunk))) > 0)
		CU_ASSERT_FATAL(write(out, chunk, (size_t)r) == r);
	close(in);
	close(out);
	chmod(dir, 0700);

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(xform_plugin_load(dst, NULL, &info, &p), KL_OK);
	config_init(&cfg);
	/* The settings the demo config uses. */
	CU_ASSERT_FATAL(config_read_string(&cfg, "timestamp_field = \"ts\";\n"
				     "required_fields = [\"event_id\", \"session_id\", \"user_id\","
				     " \"action\", \"ts\"];") == CONFIG_TRUE);
	CU_ASSERT_EQUAL_FATAL(xform_new(p, config_root_setting(&cfg), &info, &x), KL_OK);
	config_destroy(&cfg);

	events_make(&e, 99, &o, 5000);
	for (size_t i = 0; i < e.n; i++) {
		const struct kl_transform_record rec = {
			.data = (const uint8_t *)e.text[i],
			.len = e.len[i],
			.partition_key = e.ev[i].partition_key,
			.sequence_number = "1",
			.shard_id = "shardId-000000000000",
			.approximate_arrival_ms = NOW_MS,
		};
		struct xform_result res;

		CU_ASSERT_EQUAL_FATAL(xform_run(x, &rec, &res), KL_OK);
		results[e.ev[i].kind][res.result == KL_TRANSFORM_OK ? 0 :
				       res.result == KL_TRANSFORM_DROPPED ? 1 : 2]++;
		if (res.result == KL_TRANSFORM_OK) {
			/* Partitioned by the event's own time (ts is up to 1.5 s
			 * before NOW_MS + 7 i). */
			CU_ASSERT_EQUAL_FATAL(res.noutputs, 1);
			CU_ASSERT_FATAL(res.outputs[0].nkeys >= 1);
			CU_ASSERT_STRING_EQUAL(res.outputs[0].keys[0].name, "dt");
			CU_ASSERT_STRING_EQUAL(res.outputs[0].keys[0].value, "2025-11-21");
		}
	}
	for (int k = 0; k < DEMO_KIND_COUNT; k++) {
		size_t total = results[k][0] + results[k][1] + results[k][2];

		size_t want = k == DEMO_KIND_OK ? 0 : k == DEMO_KIND_BOT ? 1 : 2;

		CU_ASSERT(total > 0);
		/* ok: OK, bot: DROPPED, every malformed kind: FAILED */
		CU_ASSERT_EQUAL(results[k][want], total);
	}
	events_free(&e);
	xform_free(x);
	xform_plugin_free(p);
	unlink(dst);
	rmdir(dir);
}

/* ------------------------------------------------------------ queue */

/* n shards splitting the hash-key space evenly (n a power of two <= 256). */
static struct kinesis_shard *even_shards(size_t n, size_t first_index)
{
	struct kinesis_shard *v = calloc(n, sizeof(*v));

	CU_ASSERT_FATAL(v != NULL);
	for (size_t i = 0; i < n; i++) {
		struct kpl_u128 start = { 0, 0 }, end;
		unsigned shift = 0;

		while (((size_t)1 << shift) < n)
			shift++;
		/* start = i * 2^(128 - shift) */
		if (shift)
			start.hi = (uint64_t)i << (64 - shift);
		end.hi = shift ? start.hi + ((UINT64_C(1) << (64 - shift)) - 1) : UINT64_MAX;
		end.lo = UINT64_MAX;
		snprintf(v[i].shard_id, sizeof(v[i].shard_id), "shardId-%012zu", first_index + i);
		kpl_u128_format(start, v[i].starting_hash_key);
		kpl_u128_format(end, v[i].ending_hash_key);
		snprintf(v[i].starting_sequence_number, sizeof(v[i].starting_sequence_number), "1");
	}
	return v;
}

static struct kpl_u128 md5_key(const char *key)
{
	uint8_t d[EVP_MAX_MD_SIZE];
	unsigned dl = 0;

	CU_ASSERT_FATAL(EVP_Digest(key, strlen(key), d, &dl, EVP_md5(), NULL) == 1);
	return kpl_u128_from_be(d);
}

static const struct kinesis_shard *shard_of(const struct kinesis_shard *v, size_t n,
					    const char *key)
{
	struct kpl_u128 h = md5_key(key);

	for (size_t i = 0; i < n; i++) {
		struct kpl_hash_range r;

		if (kinesis_shard_is_closed(&v[i]))
			continue;
		CU_ASSERT_FATAL(kpl_hash_range_parse(v[i].starting_hash_key, v[i].ending_hash_key,
						     NULL, &r) == KL_OK);
		if (kpl_hash_range_contains(&r, h))
			return &v[i];
	}
	return NULL;
}

/* What acks say, in order. */
struct acks {
	size_t n, alloc;
	struct keyseq *v;
	uint64_t *ids;                /* event n, per ack */
	size_t bytes;
};

static void ack_cb(void *arg, const struct demo_event *ev, size_t len, const char *shard_id,
		   const char *seqno, uint64_t sub)
{
	struct acks *a = arg;

	(void)shard_id;
	(void)seqno;
	(void)sub;
	if (a->n == a->alloc) {
		a->alloc = a->alloc ? 2 * a->alloc : 1024;
		a->v = realloc(a->v, a->alloc * sizeof(*a->v));
		a->ids = realloc(a->ids, a->alloc * sizeof(*a->ids));
		CU_ASSERT_FATAL(a->v && a->ids);
	}
	snprintf(a->v[a->n].key, sizeof(a->v[a->n].key), "%s", ev->partition_key);
	a->v[a->n].seq = ev->seq;
	a->v[a->n].order = a->n;
	a->ids[a->n] = ev->n;
	a->bytes += len;
	a->n++;
}

/* Every id in [0, n) acked exactly once and per-key order kept. */
static void check_acks(struct acks *a, size_t n)
{
	uint8_t *seen = calloc(n, 1);

	CU_ASSERT_FATAL(seen != NULL);
	CU_ASSERT_EQUAL(a->n, n);
	for (size_t i = 0; i < a->n; i++) {
		CU_ASSERT_FATAL(a->ids[i] < n);
		CU_ASSERT_EQUAL(seen[a->ids[i]], 0);
		seen[a->ids[i]] = 1;
	}
	CU_ASSERT(check_key_order(a->v, a->n) > 0);
	free(seen);
}

static void acks_free(struct acks *a)
{
	free(a->v);
	free(a->ids);
	memset(a, 0, sizeof(*a));
}

static struct kinesis_put_results *results_new(size_t n)
{
	struct kinesis_put_results *r = calloc(1, sizeof(*r) + n * sizeof(r->r[0]));

	CU_ASSERT_FATAL(r != NULL);
	r->n = n;
	return r;
}

static void result_ok(struct kinesis_put_results *res, size_t i, const char *shard, uint64_t seq)
{
	snprintf(res->r[i].shard_id, sizeof(res->r[i].shard_id), "%s", shard);
	snprintf(res->r[i].sequence_number, sizeof(res->r[i].sequence_number), "%" PRIu64, seq);
}

static void result_fail(struct kinesis_put_results *res, size_t i, const char *code)
{
	snprintf(res->r[i].error_code, sizeof(res->r[i].error_code), "%s", code);
	res->failed_count++;
}

static void fill_queue(struct demo_queue *q, const struct events *e, size_t *next, size_t upto)
{
	while (*next < e->n && demo_queue_len(q) < upto) {
		CU_ASSERT_EQUAL_FATAL(demo_queue_add(q, &e->ev[*next], e->text[*next],
						     e->len[*next]), KL_OK);
		(*next)++;
	}
}

/* A user partition key and the entry that carries it. */
struct key_entry {
	char key[DEMO_KEY_MAX];
	size_t entry;
};

static int key_entry_cmp(const void *a, const void *b)
{
	const struct key_entry *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->entry < y->entry ? -1 : x->entry > y->entry;
}

/* Checks one batch: entry limits, no user key in two entries, and that
 * each entry decodes (through the consumer's KPL decoder, filtering with
 * the range of the shard its partition key maps to) to user records that
 * carry their own key. Returns the number of user records. */
static size_t check_batch(const struct kinesis_put_entry *en, size_t n,
			  const struct kinesis_shard *shards, size_t nshards, unsigned per,
			  struct kpl_decoder *dec, size_t *ret_aggregates)
{
	size_t users = 0, bytes = 0, cap = 0;
	struct key_entry *ke = NULL;

	CU_ASSERT(n >= 1 && n <= KINESIS_PUT_RECORDS_MAX);
	for (size_t i = 0; i < n; i++) {
		struct kpl_result res;
		struct kpl_hash_range range;
		const struct kinesis_shard *sh = shard_of(shards, nshards, en[i].partition_key);

		bytes += en[i].data_len + strlen(en[i].partition_key);
		CU_ASSERT(en[i].data_len <= (per > 1 ? DEMO_KPL_DEFAULT_MAX_BYTES : DEMO_EVENT_MAX));
		CU_ASSERT_PTR_NULL(en[i].explicit_hash_key);
		CU_ASSERT_FATAL(sh != NULL);
		CU_ASSERT_FATAL(kpl_hash_range_parse(sh->starting_hash_key, sh->ending_hash_key, NULL,
						     &range) == KL_OK);
		CU_ASSERT_EQUAL_FATAL(kpl_decode(dec, en[i].data, en[i].data_len, &range, NULL, &res),
				      KL_OK);
		if (per <= 1)
			CU_ASSERT_EQUAL(res.verdict, KPL_PLAIN);
		/* Never an aggregate that the consumer would drop. */
		CU_ASSERT_FATAL(res.verdict != KPL_FILTERED);
		if (res.verdict == KPL_AGGREGATE) {
			(*ret_aggregates)++;
			CU_ASSERT(res.nrecords >= 2 && res.nrecords <= per);
		}
		for (size_t k = 0; k < res.nrecords; k++) {
			const struct kpl_record *ur = &res.records[k];
			struct key_entry *x;

			if (users == cap) {
				cap = cap ? 2 * cap : 1024;
				ke = realloc(ke, cap * sizeof(*ke));
				CU_ASSERT_FATAL(ke != NULL);
			}
			x = &ke[users++];
			if (ur->partition_key)
				snprintf(x->key, sizeof(x->key), "%.*s", (int)ur->partition_key_len,
					 ur->partition_key);
			else
				snprintf(x->key, sizeof(x->key), "%s", en[i].partition_key);
			x->entry = i;
			/* The event names its own session. */
			CU_ASSERT(memmem(ur->data, ur->len, x->key, strlen(x->key)) != NULL);
		}
	}
	CU_ASSERT(bytes <= DEMO_BATCH_MAX_BYTES);
	qsort(ke, users, sizeof(*ke), key_entry_cmp);
	for (size_t i = 1; i < users; i++)
		if (strcmp(ke[i].key, ke[i - 1].key) == 0)
			CU_ASSERT_EQUAL(ke[i].entry, ke[i - 1].entry);
	free(ke);
	return users;
}

/* Drives a queue like the command does, with a fake PutRecords that fails
 * entries at random (fail_pct) and answers with the shard each key maps
 * to. Returns the number of take/settle rounds. */
static int drive(struct demo_queue *q, const struct events *e, const struct kinesis_shard *shards,
		 size_t nshards, unsigned per, unsigned fail_pct, struct acks *acks,
		 size_t *ret_aggregates, size_t *ret_failed)
{
	struct kpl_decoder *dec = NULL;
	struct kl_rng rng;
	size_t next = 0;
	uint64_t seqno = 1;
	int rounds = 0;

	kl_rng_seed_value(&rng, 5);
	CU_ASSERT_EQUAL_FATAL(kpl_decoder_new(NULL, &dec), KL_OK);
	for (;;) {
		const struct kinesis_put_entry *en;
		struct kinesis_put_results *res;
		struct demo_settle_stats st;
		size_t n = 0, users;

		fill_queue(q, e, &next, 1500);
		CU_ASSERT_EQUAL_FATAL(demo_queue_take(q, 500, &en, &n), KL_OK);
		if (n == 0) {
			CU_ASSERT_EQUAL(next, e->n);
			break;
		}
		CU_ASSERT_FATAL(++rounds < 100000);
		users = check_batch(en, n, shards, nshards, per, dec, ret_aggregates);
		/* A second take before settling is refused. */
		{
			const struct kinesis_put_entry *en2;
			size_t n2;

			CU_ASSERT_EQUAL(demo_queue_take(q, 500, &en2, &n2), KL_ESTATE);
		}
		res = results_new(n);
		for (size_t i = 0; i < n; i++) {
			if (kl_rng_below(&rng, 100) < fail_pct)
				result_fail(res, i, i % 2 ? "ProvisionedThroughputExceededException" :
					    "InternalFailure");
			else
				result_ok(res, i, shard_of(shards, nshards, en[i].partition_key)->shard_id,
					  seqno++);
		}
		CU_ASSERT(!demo_queue_misrouted(q, res));
		CU_ASSERT_EQUAL_FATAL(demo_queue_settle(q, res, ack_cb, acks, &st), KL_OK);
		CU_ASSERT_EQUAL(st.failed_entries, res->failed_count);
		CU_ASSERT(st.acked_records + st.failed_records == users);
		CU_ASSERT_EQUAL(st.misrouted_entries, 0);
		*ret_failed += st.failed_entries;
		free(res);
		/* Sometimes the whole call fails. */
		if (fail_pct && kl_rng_below(&rng, 10) == 0) {
			fill_queue(q, e, &next, 1500);
			CU_ASSERT_EQUAL_FATAL(demo_queue_take(q, 500, &en, &n), KL_OK);
			demo_queue_abandon(q);
		}
	}
	CU_ASSERT_EQUAL(demo_queue_len(q), 0);
	kpl_decoder_free(dec);
	return rounds;
}

static void test_queue_plain(void)
{
	struct demo_gen_opts o = gen_opts(5, 5, 40); /* few sessions: many keys repeat */
	struct demo_queue_opts qo = { 0 };
	struct demo_queue *q = NULL;
	struct kinesis_shard *shards = even_shards(4, 0);
	struct events e;
	struct acks acks = { 0 };
	size_t aggs = 0, failed = 0;
	int rounds;

	events_make(&e, 11, &o, 4000);
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	rounds = drive(q, &e, shards, 4, 1, 0, &acks, &aggs, &failed);
	check_acks(&acks, e.n);
	CU_ASSERT_EQUAL(aggs, 0);
	CU_ASSERT(rounds > 4000 / 500);
	acks_free(&acks);
	demo_queue_free(q);

	/* With failures: still exactly once, in order per key. */
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	drive(q, &e, shards, 4, 1, 30, &acks, &aggs, &failed);
	check_acks(&acks, e.n);
	CU_ASSERT(failed > 100);
	acks_free(&acks);
	demo_queue_free(q);
	events_free(&e);

	/* Many sessions: full batches of 500. */
	o.sessions = 5000;
	events_make(&e, 12, &o, 3000);
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	{
		const struct kinesis_put_entry *en;
		size_t next = 0, n = 0;

		fill_queue(q, &e, &next, 3000);
		CU_ASSERT_EQUAL(demo_queue_take(q, 0, &en, &n), KL_OK);
		CU_ASSERT_EQUAL(n, 500);
		demo_queue_abandon(q);
		CU_ASSERT_EQUAL(demo_queue_take(q, 7, &en, &n), KL_OK);
		CU_ASSERT_EQUAL(n, 7);
		/* The oldest first. */
		CU_ASSERT_EQUAL(en[0].data_len, e.len[0]);
		CU_ASSERT(memcmp(en[0].data, e.text[0], e.len[0]) == 0);
		CU_ASSERT_STRING_EQUAL(en[0].partition_key, e.ev[0].partition_key);
		demo_queue_abandon(q);
		CU_ASSERT_EQUAL(demo_queue_len(q), 3000);
	}
	demo_queue_free(q);
	demo_queue_free(NULL);
	events_free(&e);
	free(shards);
}

static void test_queue_kpl(void)
{
	struct demo_gen_opts o = gen_opts(5, 5, 300);
	struct demo_queue_opts qo = { .kpl_per_record = 10 };
	struct demo_queue *q = NULL;
	struct kinesis_shard *shards = even_shards(4, 0);
	struct events e;
	struct acks acks = { 0 };
	size_t aggs = 0, failed = 0;
	const struct kinesis_put_entry *en;
	size_t n;

	events_make(&e, 21, &o, 5000);
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	/* No shard map yet: no batch. */
	CU_ASSERT_EQUAL(demo_queue_add(q, &e.ev[0], e.text[0], e.len[0]), KL_OK);
	CU_ASSERT_EQUAL(demo_queue_take(q, 500, &en, &n), KL_ESTATE);
	demo_queue_free(q);

	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	CU_ASSERT_EQUAL_FATAL(demo_queue_set_shards(q, shards, 4), KL_OK);
	drive(q, &e, shards, 4, 10, 0, &acks, &aggs, &failed);
	check_acks(&acks, e.n);
	CU_ASSERT(aggs > 100);
	acks_free(&acks);
	demo_queue_free(q);

	aggs = failed = 0;
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	CU_ASSERT_EQUAL_FATAL(demo_queue_set_shards(q, shards, 4), KL_OK);
	drive(q, &e, shards, 4, 10, 25, &acks, &aggs, &failed);
	check_acks(&acks, e.n);
	CU_ASSERT(aggs > 100);
	CU_ASSERT(failed > 50);
	acks_free(&acks);
	demo_queue_free(q);
	events_free(&e);
	free(shards);
}

/* The stream was resharded after the map was read: aggregates land on a
 * child shard. Those whose records all fall in the child's range are kept
 * by a consumer (acked); the others are dropped by it, so they must be
 * sent again: nothing lost, nothing twice. */
static void test_queue_misrouted(void)
{
	struct demo_gen_opts o = gen_opts(0, 0, 400);
	struct demo_queue_opts qo = { .kpl_per_record = 8 };
	struct demo_queue *q = NULL;
	struct kinesis_shard *parent = even_shards(1, 0), *children = even_shards(2, 1);
	struct kinesis_shard all[3];
	struct kpl_decoder *dec = NULL;
	struct events e;
	struct acks acks = { 0 };
	const struct kinesis_put_entry *en;
	struct kinesis_put_results *res;
	struct demo_settle_stats st;
	size_t next = 0, n = 0, kept = 0, dropped = 0, users_kept = 0, aggs = 0, failed = 0;

	events_make(&e, 31, &o, 3000);
	CU_ASSERT_EQUAL_FATAL(kpl_decoder_new(NULL, &dec), KL_OK);
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	CU_ASSERT_EQUAL_FATAL(demo_queue_set_shards(q, parent, 1), KL_OK);
	fill_queue(q, &e, &next, 3000);
	CU_ASSERT_EQUAL_FATAL(demo_queue_take(q, 500, &en, &n), KL_OK);
	CU_ASSERT_FATAL(n > 10);

	/* Meanwhile the parent was split in two. */
	all[0] = parent[0];
	snprintf(all[0].ending_sequence_number, sizeof(all[0].ending_sequence_number), "99");
	all[1] = children[0];
	all[2] = children[1];
	res = results_new(n);
	for (size_t i = 0; i < n; i++) {
		const struct kinesis_shard *child = shard_of(children, 2, en[i].partition_key);
		struct kpl_hash_range range;
		struct kpl_result kr;

		result_ok(res, i, child->shard_id, i + 1);
		/* What a consumer of that child makes of it. */
		CU_ASSERT_FATAL(kpl_hash_range_parse(child->starting_hash_key, child->ending_hash_key,
						     NULL, &range) == KL_OK);
		CU_ASSERT_EQUAL_FATAL(kpl_decode(dec, en[i].data, en[i].data_len, &range, NULL, &kr),
				      KL_OK);
		if (kr.verdict == KPL_FILTERED) {
			dropped++;
		} else {
			kept++;
			users_kept += kr.nrecords;
		}
	}
	CU_ASSERT(dropped > 0 && kept > 0);
	CU_ASSERT(demo_queue_misrouted(q, res));
	CU_ASSERT_EQUAL_FATAL(demo_queue_set_shards(q, all, 3), KL_OK);
	CU_ASSERT_EQUAL_FATAL(demo_queue_settle(q, res, ack_cb, &acks, &st), KL_OK);
	CU_ASSERT_EQUAL(st.filtered_entries, dropped);
	CU_ASSERT_EQUAL(st.failed_entries, dropped);
	CU_ASSERT(st.misrouted_entries >= dropped);
	CU_ASSERT_EQUAL(st.acked_records, users_kept);
	free(res);

	/* The rest (all queued already), with the new map: everything
	 * exactly once, in order. */
	{
		struct events none = { 0 };

		drive(q, &none, all, 3, 8, 0, &acks, &aggs, &failed);
	}
	check_acks(&acks, e.n);
	acks_free(&acks);
	kpl_decoder_free(dec);
	demo_queue_free(q);
	events_free(&e);
	free(parent);
	free(children);
}

static void test_queue_limits(void)
{
	struct demo_queue_opts qo = { .kpl_per_record = 1000, .kpl_max_bytes = 8192,
				      .max_records = 100 };
	struct demo_gen_opts o = gen_opts(0, 0, 1);
	struct demo_queue *q = NULL;
	struct kinesis_shard *shards = even_shards(2, 0);
	struct kinesis_shard gap[2];
	struct events e;
	const struct kinesis_put_entry *en;
	size_t next = 0, n = 0;
	struct kinesis_put_results *res;
	struct demo_settle_stats st;
	static uint8_t huge[KINESIS_RECORD_DATA_MAX + 1];

	events_make(&e, 41, &o, 200);
	for (size_t i = 0; i < e.n; i++) {   /* all of one key */
		snprintf(e.ev[i].partition_key, sizeof(e.ev[i].partition_key), "one-key");
		e.ev[i].seq = i + 1;
	}
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	CU_ASSERT_EQUAL_FATAL(demo_queue_set_shards(q, shards, 2), KL_OK);
	fill_queue(q, &e, &next, 100);
	CU_ASSERT_EQUAL(demo_queue_len(q), 100); /* the cap */
	CU_ASSERT_EQUAL(demo_queue_add(q, &e.ev[150], e.text[150], e.len[150]), KL_ENOMEM);
	/* One key: one aggregate per batch, cut at the byte cap. */
	CU_ASSERT_EQUAL_FATAL(demo_queue_take(q, 500, &en, &n), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT(en[0].data_len <= 8192);
	CU_ASSERT(en[0].data_len > 8192 / 2);
	res = results_new(1);
	result_ok(res, 0, shard_of(shards, 2, en[0].partition_key)->shard_id, 1);
	CU_ASSERT_EQUAL(demo_queue_settle(q, res, NULL, NULL, &st), KL_OK);
	CU_ASSERT(st.acked_records > 5 && st.acked_records < 100);
	CU_ASSERT_EQUAL(demo_queue_len(q), 100 - st.acked_records);
	/* Settling twice, or a result of the wrong size, is refused. */
	CU_ASSERT_EQUAL(demo_queue_settle(q, res, NULL, NULL, &st), KL_EINVAL);
	free(res);
	CU_ASSERT_EQUAL_FATAL(demo_queue_take(q, 500, &en, &n), KL_OK);
	res = results_new(n + 1);
	CU_ASSERT_EQUAL(demo_queue_settle(q, res, NULL, NULL, &st), KL_EINVAL);
	free(res);
	demo_queue_abandon(q);
	/* Too large for one aggregate. */
	CU_ASSERT_EQUAL(demo_queue_add(q, &e.ev[0], huge, 8000), KL_EINVAL);
	demo_queue_free(q);

	/* Plain: 1 MiB is the limit of a record. */
	qo.kpl_per_record = 0;
	qo.kpl_max_bytes = 0;
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	CU_ASSERT_EQUAL(demo_queue_add(q, &e.ev[0], huge, sizeof(huge)), KL_EINVAL);
	CU_ASSERT_EQUAL(demo_queue_add(q, &e.ev[0], huge, sizeof(huge) - 1), KL_OK);
	demo_queue_free(q);

	/* A map with a hole is refused; so are bad options. */
	qo.kpl_per_record = 4;
	CU_ASSERT_EQUAL_FATAL(demo_queue_new(&qo, &q), KL_OK);
	memcpy(gap, shards, sizeof(gap));
	snprintf(gap[1].starting_hash_key, sizeof(gap[1].starting_hash_key), "%s",
		 "170141183460469231731687303715884105729"); /* 2^127 + 1: a gap of one */
	CU_ASSERT_EQUAL(demo_queue_set_shards(q, gap, 2), KL_EINVAL);
	CU_ASSERT_EQUAL(demo_queue_set_shards(q, shards, 1), KL_EINVAL);
	CU_ASSERT_EQUAL(demo_queue_set_shards(q, shards, 0), KL_EINVAL);
	CU_ASSERT_EQUAL(demo_queue_set_shards(q, shards, 2), KL_OK);
	demo_queue_free(q);
	qo.kpl_per_record = DEMO_KPL_MAX_PER_RECORD + 1;
	CU_ASSERT_EQUAL(demo_queue_new(&qo, &q), KL_EINVAL);
	qo.kpl_per_record = 4;
	qo.kpl_max_bytes = KINESIS_RECORD_DATA_MAX + 1;
	CU_ASSERT_EQUAL(demo_queue_new(&qo, &q), KL_EINVAL);
	events_free(&e);
	free(shards);
}

/* ------------------------------------------------------------ command */

static int run_main(const char *const *args)
{
	char *argv[32];
	int argc = 0;

	for (; args[argc]; argc++)
		argv[argc] = (char *)args[argc];
	argv[argc] = NULL;
	return demo_main(argc, argv);
}

/* Usage errors never reach the network. */
static void test_cli_usage(void)
{
	const char *const none[] = { "demo", NULL };
	const char *const unknown_sub[] = { "demo", "consume", NULL };
	const char *const no_stream[] = { "demo", "produce", "--count", "5", NULL };
	const char *const both[] = { "demo", "produce", "--stream", "s", "--count", "5",
				     "--duration", "3", NULL };
	const char *const bad_rate[] = { "demo", "produce", "--stream", "s", "--rate", "fast", NULL };
	const char *const bad_pct[] = { "demo", "produce", "--stream", "s", "--bot-pct", "101",
					NULL };
	const char *const unknown[] = { "demo", "produce", "--stream", "s", "--frobnicate", NULL };
	const char *const missing[] = { "demo", "produce", "--stream", NULL };
	const char *const zero_k[] = { "demo", "produce", "--stream=s", "--kpl-per-record=0", NULL };
	const char *const help[] = { "demo", "help", NULL };

	CU_ASSERT_EQUAL(run_main(none), 64);
	CU_ASSERT_EQUAL(run_main(unknown_sub), 64);
	CU_ASSERT_EQUAL(run_main(no_stream), 64);
	CU_ASSERT_EQUAL(run_main(both), 64);
	CU_ASSERT_EQUAL(run_main(bad_rate), 64);
	CU_ASSERT_EQUAL(run_main(bad_pct), 64);
	CU_ASSERT_EQUAL(run_main(unknown), 64);
	CU_ASSERT_EQUAL(run_main(missing), 64);
	CU_ASSERT_EQUAL(run_main(zero_k), 64);
	CU_ASSERT_EQUAL(run_main(help), 0);
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_determinism),
		KL_TEST(test_json_and_kinds),
		KL_TEST(test_counts_and_options),
		KL_TEST(test_seq_ids_sizes),
		KL_TEST(test_clickstream_plugin),
		KL_TEST(test_queue_plain),
		KL_TEST(test_queue_kpl),
		KL_TEST(test_queue_misrouted),
		KL_TEST(test_queue_limits),
		KL_TEST(test_cli_usage),
		{ NULL, NULL },
	};

	return kl_test_run("demo", tests);
}
