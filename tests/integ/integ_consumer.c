/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_consumer.c: shard consumers against kinesalite (started by
 * tests/emu/emulators.sh; without KL_TEST_KINESIS_ENDPOINT this exits 77).
 * A small fleet of one worker: the lease coordinator on the in-memory lease
 * store (its own thread, shard sync from ListShards), a dispatcher that
 * starts one consumer thread per processable grant, the built clickstream
 * plugin, and a sink that records every push. Records are produced with
 * PutRecords: plain events, KPL aggregates (kpl_encode), malformed events
 * and bots. Checked: every record exactly once, in order per shard,
 * malformed -> FAILED with a reason, bots -> DROPPED, an aggregate outside
 * the shard's hash range dropped; and, with a split while reading, the
 * parent drained to SHARD_END before any record of a child is pushed.
 *
 * Avoided on purpose (see reference/emulators.md): AT_TIMESTAMP, GetRecords
 * without Limit, ListShards with a NextToken.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aws.h"
#include "buf.h"
#include "consumer.h"
#include "consumer_kinesis.h"
#include "creds.h"
#include "fixture.h"
#include "http.h"
#include "kinesis.h"
#include "kpl.h"
#include "lease_coord.h"
#include "lease_store_mem.h"
#include "testutil.h"
#include "util.h"
#include "xform.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define MAX_SEEN 8192
#define MAX_SLOTS 16
#define WAIT_ALL_MS 120000

static const char MAX_HASH[] = "340282366920938463463374607431768211455";

static struct {
	const char *endpoint;
	struct creds_chain *creds;
	struct aws_client c;          /* the test thread's: produce, reshard */
	char tmpdir[64];
	char plugin_path[4200];
	struct xform_plugin *plugin;
} fx;

/* ------------------------------------------------------------ helpers */

/* TF_CHECK_OK, with info cleared first */
#define CHECK_OK(call)                                 \
	do {                                           \
		kl_errinfo_clear(&info);               \
		TF_CHECK_OK(call);                     \
	} while (0)

/* ------------------------------------------------------------ the collecting sink */

struct seen {
	char id[48];
	char shard[KINESIS_SHARD_ID_MAX + 1];
	char seq[KINESIS_SEQ_MAX + 1];
	uint64_t sub;
	enum kl_transform_result result;
	char reason[160];
	long order;                   /* global push order */
};

static struct {
	pthread_mutex_t mu;
	struct seen v[MAX_SEEN];
	size_t n;
	long next_order;
	int overflow;
} seen = { .mu = PTHREAD_MUTEX_INITIALIZER };

struct csink {
	int flushes;
	int abandons;
	int ticks;
};

/* The event id: the value of "id" in the (possibly malformed) data. */
static void event_id(const uint8_t *data, size_t len, char *out, size_t outsz)
{
	static const char key[] = "\"id\":\"";
	size_t k = sizeof(key) - 1;

	snprintf(out, outsz, "?");
	for (size_t i = 0; i + k <= len; i++) {
		if (memcmp(data + i, key, k) == 0) {
			size_t j = i + k, n = 0;

			while (j < len && data[j] != '"' && n + 1 < outsz)
				out[n++] = (char)data[j++];
			out[n] = '\0';
			return;
		}
	}
}

static enum kl_err cs_push(void *ctx, const struct kl_transform_record *rec,
			   const struct xform_result *res, struct kl_errinfo *info)
{
	struct seen *s;

	(void)ctx;
	(void)info;
	pthread_mutex_lock(&seen.mu);
	if (seen.n == MAX_SEEN) {
		seen.overflow++;
		pthread_mutex_unlock(&seen.mu);
		return KL_OK;
	}
	s = &seen.v[seen.n++];
	event_id(rec->data, rec->len, s->id, sizeof(s->id));
	snprintf(s->shard, sizeof(s->shard), "%s", rec->shard_id);
	snprintf(s->seq, sizeof(s->seq), "%s", rec->sequence_number);
	s->sub = rec->sub_sequence_number;
	s->result = res->result;
	snprintf(s->reason, sizeof(s->reason), "%s", res->reason ? res->reason : "");
	s->order = seen.next_order++;
	pthread_mutex_unlock(&seen.mu);
	return KL_OK;
}

static bool cs_blocked(void *ctx)
{
	(void)ctx;
	return false;
}

static enum kl_err cs_tick(void *ctx, int64_t now, struct kl_errinfo *info)
{
	struct csink *cs = ctx;

	(void)now;
	(void)info;
	cs->ticks++;
	return KL_OK;
}

static enum kl_err cs_flush(void *ctx, struct kl_errinfo *info)
{
	struct csink *cs = ctx;

	(void)info;
	cs->flushes++;
	return KL_OK;
}

static void cs_abandon(void *ctx)
{
	struct csink *cs = ctx;

	cs->abandons++;
}

/* No state of its own: reading resumes at the grant's checkpoint. */
static void cs_resume_after(void *ctx, struct lease_esn *ret)
{
	(void)ctx;
	memset(ret, 0, sizeof(*ret));
}

static const struct record_sink_ops cs_ops = {
	cs_push, cs_blocked, cs_tick, cs_flush, cs_abandon, cs_resume_after, NULL, /* push_crashed */
};

static size_t seen_count(void)
{
	size_t n;

	pthread_mutex_lock(&seen.mu);
	n = seen.n;
	pthread_mutex_unlock(&seen.mu);
	return n;
}

static size_t seen_count_shard(const char *shard)
{
	size_t n = 0;

	pthread_mutex_lock(&seen.mu);
	for (size_t i = 0; i < seen.n; i++)
		n += strcmp(seen.v[i].shard, shard) == 0;
	pthread_mutex_unlock(&seen.mu);
	return n;
}

static void seen_reset(void)
{
	pthread_mutex_lock(&seen.mu);
	seen.n = 0;
	seen.next_order = 0;
	seen.overflow = 0;
	pthread_mutex_unlock(&seen.mu);
}

/* ------------------------------------------------------------ the fleet */

struct slot {
	char key[KINESIS_SHARD_ID_MAX + 1];
	uint64_t token;
	struct aws_client client;
	struct consumer_kinesis_aws kc;
	struct csink sink;
	struct xform *x;
	struct consumer *c;
	pthread_t th;
	atomic_bool finished;
	enum consumer_state final;
	struct consumer_metrics m;
};

struct fleet {
	const char *stream;
	struct lease_mem_table *table;
	struct lease_store *store;
	struct lease_coord *coord;
	struct aws_client coord_client;   /* used by the coordinator thread only */
	pthread_t coord_th;
	atomic_bool stop;
	int coord_errors;
	struct slot *slots[MAX_SLOTS];
	size_t n_slots;
};

static enum kl_err list_shards_source(void *ctx, enum lease_shard_filter filter, int64_t ts,
				      struct lease_shard_list *ret, struct kl_errinfo *info)
{
	struct fleet *f = ctx;
	struct kinesis_shard *shards = NULL;
	size_t n = 0;
	enum kl_err err;

	(void)filter;  /* kinesalite ignores ShardFilter; the streams start fresh */
	(void)ts;
	err = kinesis_list_shards(&f->coord_client, f->stream, NULL, &shards, &n, info);
	for (size_t i = 0; err == KL_OK && i < n; i++) {
		struct kinesis_shard *k = &shards[i];
		struct lease_shard s = {
			.shard_id = k->shard_id,
			.parent_id = k->parent_shard_id[0] ? k->parent_shard_id : NULL,
			.adjacent_parent_id = k->adjacent_parent_shard_id[0] ? k->adjacent_parent_shard_id : NULL,
			.starting_hash_key = k->starting_hash_key,
			.ending_hash_key = k->ending_hash_key,
			.starting_seq = k->starting_sequence_number[0] ? k->starting_sequence_number : NULL,
			.ending_seq = k->ending_sequence_number[0] ? k->ending_sequence_number : NULL,
		};

		err = lease_shard_list_add(ret, &s);
	}
	free(shards);
	return err;
}

static void *coord_main(void *arg)
{
	struct fleet *f = arg;

	while (!atomic_load(&f->stop)) {
		struct kl_errinfo info;
		int64_t wait;

		kl_errinfo_clear(&info);
		if (lease_coord_tick(f->coord, &info) != KL_OK)
			f->coord_errors++;
		wait = lease_coord_next_due(f->coord) - kl_mono_ms();
		kl_sleep_ms(wait < 1 ? 1 : wait > 50 ? 50 : wait);
	}
	return NULL;
}

static void *consumer_main(void *arg)
{
	struct slot *s = arg;

	s->final = consumer_run(s->c);
	atomic_store(&s->finished, true);
	return NULL;
}

static void fleet_start(struct fleet *f, const char *stream)
{
	static const struct lease_shard_source proto = { list_shards_source, NULL };
	struct lease_shard_source src = proto;
	struct lease_coord_config cc;
	struct lease_clock clock;
	struct kl_errinfo info;

	memset(f, 0, sizeof(*f));
	f->stream = stream;
	atomic_init(&f->stop, false);
	CU_ASSERT_EQUAL_FATAL(tf_client_init(&f->coord_client, "kinesis", fx.endpoint, fx.creds),
			      KL_OK);
	f->table = lease_mem_table_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(f->table);
	lease_clock_real(&clock);
	f->store = lease_store_mem_new(f->table, &clock);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f->store);
	memset(&cc, 0, sizeof(cc));
	cc.worker_id = "integ-worker";
	cc.failover_ms = 3000;
	cc.initial_position = LEASE_INITIAL_TRIM_HORIZON;
	cc.seed = 7;
	src.ctx = f;
	CHECK_OK(lease_coord_new(&cc, f->store, &clock, &src, &f->coord, &info));
	CU_ASSERT_EQUAL_FATAL(pthread_create(&f->coord_th, NULL, coord_main, f), 0);
}

/* Starts a consumer thread for every processable-to-be grant not seen yet. */
static void fleet_dispatch(struct fleet *f)
{
	struct lease_grant *g = NULL;
	size_t n = 0;

	if (lease_coord_grants(f->coord, &g, &n) != KL_OK)
		return;
	for (size_t i = 0; i < n; i++) {
		struct consumer_config cfg;
		struct consumer_deps deps;
		struct kl_errinfo info;
		struct slot *s;
		bool known = false;

		if (g[i].state == LEASE_STATE_FINISHED)
			continue;
		for (size_t j = 0; j < f->n_slots; j++)
			known |= f->slots[j]->token == g[i].token && strcmp(f->slots[j]->key, g[i].key) == 0;
		if (known || f->n_slots == MAX_SLOTS)
			continue;
		s = calloc(1, sizeof(*s));
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		snprintf(s->key, sizeof(s->key), "%s", g[i].key);
		s->token = g[i].token;
		atomic_init(&s->finished, false);
		CU_ASSERT_EQUAL_FATAL(tf_client_init(&s->client, "kinesis", fx.endpoint, fx.creds), KL_OK);
		memset(&deps, 0, sizeof(deps));
		CU_ASSERT_EQUAL_FATAL(consumer_kinesis_aws(&s->kc, &s->client, f->stream, &deps.kinesis),
				      KL_OK);
		CHECK_OK(xform_new(fx.plugin, NULL, &info, &s->x));
		consumer_lease_coord(f->coord, &deps.lease);
		deps.sink.ops = &cs_ops;
		deps.sink.ctx = &s->sink;
		deps.xform = s->x;
		deps.clock = NULL;
		memset(&cfg, 0, sizeof(cfg));
		cfg.shard_id = g[i].key;
		cfg.lease_token = g[i].token;
		cfg.checkpoint = g[i].checkpoint;
		cfg.starting_hash_key = g[i].starting_hash_key;
		cfg.ending_hash_key = g[i].ending_hash_key;
		cfg.get_records_limit = 100;
		cfg.idle_ms = 200;
		cfg.poll_ms = 200;
		cfg.release_on_stop = true;
		CHECK_OK(consumer_new(&cfg, &deps, &s->c, &info));
		CU_ASSERT_EQUAL_FATAL(pthread_create(&s->th, NULL, consumer_main, s), 0);
		f->slots[f->n_slots++] = s;
	}
	lease_grants_free(g, n);
}

static struct slot *fleet_slot(struct fleet *f, const char *key)
{
	for (size_t i = 0; i < f->n_slots; i++)
		if (strcmp(f->slots[i]->key, key) == 0)
			return f->slots[i];
	return NULL;
}

/* Dispatches until done() says so or the time is up. Returns done(). */
static bool fleet_run_until(struct fleet *f, bool (*done)(void *), void *arg, int64_t ms)
{
	int64_t until = kl_mono_ms() + ms;

	while (kl_mono_ms() < until) {
		fleet_dispatch(f);
		if (done(arg))
			return true;
		kl_sleep_ms(50);
	}
	return done(arg);
}

/* Stops every consumer (graceful), then the coordinator. Metrics and final
 * states stay in the slots; fleet_free() frees them. */
static void fleet_stop(struct fleet *f)
{
	int64_t deadline = kl_mono_ms() + 5000;

	for (size_t i = 0; i < f->n_slots; i++)
		consumer_request_stop(f->slots[i]->c, deadline);
	for (size_t i = 0; i < f->n_slots; i++) {
		struct slot *s = f->slots[i];

		pthread_join(s->th, NULL);
		consumer_get_metrics(s->c, &s->m);
	}
	atomic_store(&f->stop, true);
	pthread_join(f->coord_th, NULL);
}

static void fleet_free(struct fleet *f)
{
	for (size_t i = 0; i < f->n_slots; i++) {
		struct slot *s = f->slots[i];

		consumer_free(s->c);
		xform_free(s->x);
		aws_client_done(&s->client);
		free(s);
	}
	lease_coord_free(f->coord);
	lease_store_free(f->store);
	lease_mem_table_free(f->table);
	aws_client_done(&f->coord_client);
}

/* ------------------------------------------------------------ producing */

enum kind { PLAIN, BOT, MALFORMED };

struct expect {
	char id[48];
	char shard[KINESIS_SHARD_ID_MAX + 1];
	enum kl_transform_result result;
};

static struct {
	struct expect v[MAX_SEEN];
	size_t n;
} want;

/* One clickstream event of a few hundred bytes. */
static void make_event(struct buf *b, const char *id, enum kind kind, int n)
{
	buf_reset(b);
	if (kind == MALFORMED) {
		buf_printf(b, "{\"id\":\"%s\",\"event\":\"view\",\"page\":\"/p/%d\",", id, n);
		return;
	}
	buf_printf(b,
		   "{\"id\":\"%s\",\"event\":\"%s\",\"user_id\":\"u-%07d\",\"session\":\"s-%08x\","
		   "\"page\":\"/products/shoes/%d\",\"referrer\":\"https://www.example.com/\","
		   "\"user_agent\":\"%s\",\"ip\":\"198.51.100.%d\",\"country\":\"DE\","
		   "\"timestamp\":\"2026-11-21T09:%02d:%02dZ\",\"value_cents\":%d}",
		   id, n % 3 ? "view" : "click", n * 7919 % 10000000, (unsigned)(n * 2654435761u),
		   n, kind == BOT ? "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)" :
				    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
		   n % 256, n % 60, (n * 7) % 60, n * 13 % 20000);
}

static void expect_add(const char *id, const char *shard, enum kl_transform_result r)
{
	struct expect *e = &want.v[want.n++];

	CU_ASSERT_FATAL(want.n < MAX_SEEN);
	snprintf(e->id, sizeof(e->id), "%.47s", id);
	snprintf(e->shard, sizeof(e->shard), "%.128s", shard);
	e->result = r;
}

/*
 * Puts count entries into the shard that ehk (decimal) hashes to, named
 * "<tag>-<n>": every 10th an aggregate of 4 events (sub-record EHKs sub_ehk,
 * NULL = ehk; it must lie in the same shard's range), every 13th a bot,
 * every 17th malformed. Records the expectations under the shard that
 * PutRecords reports.
 */
static void produce(const char *stream, const char *tag, const char *ehk, const char *sub_ehk,
		    int count)
{
	struct kinesis_put_entry e[100];
	struct buf data[100], agg;
	struct kinesis_put_results *res = NULL;
	struct kl_errinfo info;
	char pk[100][32];
	int done = 0;

	buf_init(&agg, 0);
	for (int i = 0; i < 100; i++)
		buf_init(&data[i], 0);
	while (done < count) {
		int n = count - done > 100 ? 100 : count - done;
		struct {
			char ids[4][48];
			int nids;
			enum kl_transform_result r[4];
		} exp[100];

		for (int i = 0; i < n; i++) {
			int k = done + i;

			snprintf(pk[i], sizeof(pk[i]), "pk-%s-%d", tag, k);
			exp[i].nids = 0;
			if (k % 10 == 9) {
				struct kpl_enc_record sub[4];
				struct buf ev[4];
				char spk[4][32];

				buf_reset(&agg);
				for (int j = 0; j < 4; j++) {
					char *id = exp[i].ids[j];

					snprintf(id, 48, "%s-%d.%d", tag, k, j);
					buf_init(&ev[j], 0);
					make_event(&ev[j], id, PLAIN, k * 4 + j);
					snprintf(spk[j], sizeof(spk[j]), "sub-%d", j);
					sub[j].partition_key = spk[j];
					sub[j].explicit_hash_key = sub_ehk ? sub_ehk : ehk;
					sub[j].data = ev[j].data;
					sub[j].len = ev[j].len;
					exp[i].r[j] = KL_TRANSFORM_OK;
				}
				exp[i].nids = 4;
				CU_ASSERT_FATAL(kpl_encode(sub, 4, &agg) == KL_OK);
				for (int j = 0; j < 4; j++)
					buf_done(&ev[j]);
				buf_reset(&data[i]);
				CU_ASSERT_FATAL(buf_append(&data[i], agg.data, agg.len) == KL_OK);
			} else {
				enum kind kind = k % 17 == 16 ? MALFORMED : k % 13 == 12 ? BOT : PLAIN;

				snprintf(exp[i].ids[0], 48, "%s-%d", tag, k);
				make_event(&data[i], exp[i].ids[0], kind, k);
				exp[i].r[0] = kind == MALFORMED ? KL_TRANSFORM_FAILED :
					      kind == BOT ? KL_TRANSFORM_DROPPED : KL_TRANSFORM_OK;
				exp[i].nids = 1;
			}
			e[i].data = data[i].data;
			e[i].data_len = data[i].len;
			e[i].partition_key = pk[i];
			e[i].explicit_hash_key = ehk;
		}
		CHECK_OK(kinesis_put_records(&fx.c, stream, e, (size_t)n, &res, &info));
		CU_ASSERT_EQUAL_FATAL(res->failed_count, 0);
		for (int i = 0; i < n; i++)
			for (int j = 0; j < exp[i].nids; j++)
				expect_add(exp[i].ids[j], res->r[i].shard_id, exp[i].r[j]);
		free(res);
		res = NULL;
		done += n;
	}
	for (int i = 0; i < 100; i++)
		buf_done(&data[i]);
	buf_done(&agg);
}

/* Puts one aggregate into the shard of ehk whose second user record hashes
 * to sub_ehk (another shard): the reader must drop it whole. */
static void produce_foreign_aggregate(const char *stream, const char *ehk, const char *sub_ehk)
{
	struct kpl_enc_record sub[2] = {
		{ "f0", ehk, "{\"id\":\"foreign-0\",\"event\":\"view\"}", 34 },
		{ "f1", sub_ehk, "{\"id\":\"foreign-1\",\"event\":\"view\"}", 34 },
	};
	struct kinesis_put_results *res = NULL;
	struct kinesis_put_entry e;
	struct kl_errinfo info;
	struct buf agg;

	buf_init(&agg, 0);
	CU_ASSERT_FATAL(kpl_encode(sub, 2, &agg) == KL_OK);
	e.data = agg.data;
	e.data_len = agg.len;
	e.partition_key = "foreign";
	e.explicit_hash_key = ehk;
	CHECK_OK(kinesis_put_records(&fx.c, stream, &e, 1, &res, &info));
	free(res);
	buf_done(&agg);
}

static bool all_seen(void *arg)
{
	(void)arg;
	return seen_count() >= want.n;
}

/* Every expected record exactly once, with its verdict; per shard in the
 * order produced, with ascending ESNs. Returns the number of problems. */
static int verify_seen(void)
{
	int problems = 0;

	pthread_mutex_lock(&seen.mu);
	CU_ASSERT_EQUAL(seen.overflow, 0);
	CU_ASSERT_EQUAL(seen.n, want.n);
	for (size_t i = 0; i < want.n; i++) {
		const struct expect *e = &want.v[i];
		size_t hits = 0, at = 0;

		for (size_t j = 0; j < seen.n; j++)
			if (strcmp(seen.v[j].id, e->id) == 0) {
				hits++;
				at = j;
			}
		if (hits != 1) {
			if (problems++ < 10)
				fprintf(stderr, "\n  %s seen %zu times", e->id, hits);
			continue;
		}
		CU_ASSERT_STRING_EQUAL(seen.v[at].shard, e->shard);
		CU_ASSERT_EQUAL(seen.v[at].result, e->result);
		if (e->result == KL_TRANSFORM_FAILED)
			CU_ASSERT(seen.v[at].reason[0] != '\0');
	}
	CU_ASSERT_EQUAL(problems, 0);
	/* Order per shard: the k-th push of a shard is its k-th expectation. */
	for (size_t i = 0; i < want.n; i++) {
		size_t k = 0, j, m = 0;

		for (j = 0; j < i; j++)
			k += strcmp(want.v[j].shard, want.v[i].shard) == 0;
		for (j = 0; j < seen.n; j++) {
			if (strcmp(seen.v[j].shard, want.v[i].shard) != 0)
				continue;
			if (m++ == k)
				break;
		}
		if (j == seen.n || strcmp(seen.v[j].id, want.v[i].id) != 0) {
			if (problems++ < 10)
				fprintf(stderr, "\n  %s out of order on %s", want.v[i].id, want.v[i].shard);
		}
	}
	for (size_t j = 1; j < seen.n; j++)
		for (size_t p = j; p-- > 0;)
			if (strcmp(seen.v[p].shard, seen.v[j].shard) == 0) {
				int c = lease_dec_cmp(seen.v[p].seq, seen.v[j].seq);

				CU_ASSERT(c < 0 || (c == 0 && seen.v[p].sub < seen.v[j].sub));
				break;
			}
	pthread_mutex_unlock(&seen.mu);
	CU_ASSERT_EQUAL(problems, 0);
	return problems;
}

static void shard_ranges(const char *stream, struct kinesis_shard **ret, size_t *ret_n)
{
	struct kl_errinfo info;

	CHECK_OK(kinesis_list_shards(&fx.c, stream, NULL, ret, ret_n, &info));
}

/* ------------------------------------------------------------ tests */

/* Two shards, one consumer thread each: exactly once, in order, verdicts. */
static void test_two_shards_exactly_once(void)
{
	struct kinesis_shard *shards = NULL;
	struct kl_errinfo info;
	struct fleet f;
	char stream[64];
	size_t n = 0;
	uint64_t ok = 0, dropped = 0, failed = 0;

	seen_reset();
	want.n = 0;
	snprintf(stream, sizeof(stream), "kl-cons-%ld-%" PRId64, (long)getpid(), kl_mono_ms());
	CHECK_OK(kinesis_create_stream(&fx.c, stream, 2, &info));
	CHECK_OK(kinesis_wait_active(&fx.c, stream, 30000, NULL, &info));
	shard_ranges(stream, &shards, &n);
	CU_ASSERT_EQUAL_FATAL(n, 2);

	/* Half before the consumers start, half while they run. */
	produce(stream, "a", shards[0].starting_hash_key, NULL, 150);
	produce(stream, "b", shards[1].starting_hash_key, NULL, 150);
	produce_foreign_aggregate(stream, shards[1].starting_hash_key, shards[0].starting_hash_key);
	fleet_start(&f, stream);
	produce(stream, "c", shards[1].ending_hash_key, NULL, 150);
	produce(stream, "d", shards[0].ending_hash_key, NULL, 150);

	CU_ASSERT(fleet_run_until(&f, all_seen, NULL, WAIT_ALL_MS));
	kl_sleep_ms(600);  /* a late duplicate would show up now */
	fleet_stop(&f);
	verify_seen();
	fprintf(stderr, "\n  %zu records expected, %zu pushed, %zu consumers ", want.n, seen_count(),
		f.n_slots);

	CU_ASSERT_EQUAL(f.n_slots, 2);
	for (size_t i = 0; i < f.n_slots; i++) {
		struct slot *s = f.slots[i];
		bool second = strcmp(s->key, shards[1].shard_id) == 0;

		CU_ASSERT_EQUAL(s->final, CONSUMER_STOPPED);
		CU_ASSERT_EQUAL(s->sink.flushes, 1);
		CU_ASSERT_EQUAL(s->sink.abandons, 0);
		CU_ASSERT_EQUAL(s->m.hash_range_dropped_aggregates, second ? 1 : 0);
		CU_ASSERT_EQUAL(s->m.pushed, seen_count_shard(s->key));
		CU_ASSERT(s->m.kpl_aggregates >= 30);
		CU_ASSERT(s->m.get_records_calls >= 3);
		CU_ASSERT_EQUAL(s->m.esn_filtered, 0);
		ok += s->m.plugin_ok;
		dropped += s->m.plugin_dropped;
		failed += s->m.plugin_failed;
	}
	{
		uint64_t wok = 0, wdrop = 0, wfail = 0;

		for (size_t i = 0; i < want.n; i++) {
			wok += want.v[i].result == KL_TRANSFORM_OK;
			wdrop += want.v[i].result == KL_TRANSFORM_DROPPED;
			wfail += want.v[i].result == KL_TRANSFORM_FAILED;
		}
		CU_ASSERT(wdrop > 0 && wfail > 0);
		CU_ASSERT_EQUAL(ok, wok);
		CU_ASSERT_EQUAL(dropped, wdrop);
		CU_ASSERT_EQUAL(failed, wfail);
	}
	fleet_free(&f);
	free(shards);
	CHECK_OK(kinesis_delete_stream(&fx.c, stream, &info));
}

static const char *parent_id_of_split;

static bool parent_started(void *arg)
{
	(void)arg;
	return seen_count_shard(parent_id_of_split) >= 20;
}

/* A split while the parent is being read: the parent drains, its shard
 * end creates the child leases, children run only after it. */
static void test_split_during_consumption(void)
{
	struct kinesis_shard *shards = NULL;
	struct kinesis_hash_key lo, hi, mid;
	char mid_dec[KINESIS_HASH_KEY_MAX + 1], parent[KINESIS_SHARD_ID_MAX + 1];
	char child_a[KINESIS_SHARD_ID_MAX + 1] = "", child_b[KINESIS_SHARD_ID_MAX + 1] = "";
	struct kl_errinfo info;
	struct lease rec;
	struct fleet f;
	struct slot *ps;
	char stream[64];
	size_t n = 0;
	long parent_last = -1, child_first[2] = { -1, -1 };

	seen_reset();
	want.n = 0;
	snprintf(stream, sizeof(stream), "kl-split-%ld-%" PRId64, (long)getpid(), kl_mono_ms());
	CHECK_OK(kinesis_create_stream(&fx.c, stream, 1, &info));
	CHECK_OK(kinesis_wait_active(&fx.c, stream, 30000, NULL, &info));
	shard_ranges(stream, &shards, &n);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	snprintf(parent, sizeof(parent), "%s", shards[0].shard_id);
	parent_id_of_split = parent;
	free(shards);
	shards = NULL;

	produce(stream, "p", "0", MAX_HASH, 250);  /* aggregates span both halves */
	fleet_start(&f, stream);
	CU_ASSERT_FATAL(fleet_run_until(&f, parent_started, NULL, 30000));
	produce(stream, "q", MAX_HASH, NULL, 100);

	CU_ASSERT_EQUAL(kinesis_hash_key_parse("0", &lo), KL_OK);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse(MAX_HASH, &hi), KL_OK);
	kinesis_hash_key_mid(&lo, &hi, &mid);
	kinesis_hash_key_format(&mid, mid_dec);
	CHECK_OK(kinesis_split_shard(&fx.c, stream, parent, mid_dec, &info));
	CHECK_OK(kinesis_wait_active(&fx.c, stream, 30000, NULL, &info));
	shard_ranges(stream, &shards, &n);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(shards[i].parent_shard_id, parent) != 0)
			continue;
		if (strcmp(shards[i].starting_hash_key, "0") == 0)
			snprintf(child_a, sizeof(child_a), "%s", shards[i].shard_id);
		else
			snprintf(child_b, sizeof(child_b), "%s", shards[i].shard_id);
	}
	free(shards);
	CU_ASSERT_FATAL(child_a[0] && child_b[0]);

	produce(stream, "ca", "0", NULL, 120);
	produce(stream, "cb", MAX_HASH, mid_dec, 60);   /* aggregates inside child b's range */
	produce(stream, "cc", mid_dec, NULL, 60);

	CU_ASSERT(fleet_run_until(&f, all_seen, NULL, WAIT_ALL_MS));
	kl_sleep_ms(600);
	fleet_stop(&f);
	verify_seen();
	fprintf(stderr, "\n  %zu records expected, %zu pushed, %zu consumers ", want.n, seen_count(),
		f.n_slots);

	/* The parent's last push precedes every child push. */
	pthread_mutex_lock(&seen.mu);
	for (size_t i = 0; i < seen.n; i++) {
		const struct seen *s = &seen.v[i];

		if (strcmp(s->shard, parent) == 0 && s->order > parent_last)
			parent_last = s->order;
		for (int c = 0; c < 2; c++)
			if (strcmp(s->shard, c ? child_b : child_a) == 0 &&
			    (child_first[c] < 0 || s->order < child_first[c]))
				child_first[c] = s->order;
	}
	pthread_mutex_unlock(&seen.mu);
	CU_ASSERT(parent_last >= 0);
	CU_ASSERT(child_first[0] > parent_last);
	CU_ASSERT(child_first[1] > parent_last);

	ps = fleet_slot(&f, parent);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ps);
	CU_ASSERT_EQUAL(ps->final, CONSUMER_DONE);
	CU_ASSERT_EQUAL(ps->sink.flushes, 1);
	CU_ASSERT(ps->m.state_ms[CONSUMER_SHARD_END] >= 0);
	CU_ASSERT_PTR_NOT_NULL(fleet_slot(&f, child_a));
	CU_ASSERT_PTR_NOT_NULL(fleet_slot(&f, child_b));
	CU_ASSERT_EQUAL(f.n_slots, 3);
	for (size_t i = 0; i < f.n_slots; i++)
		if (f.slots[i] != ps)
			CU_ASSERT_EQUAL(f.slots[i]->final, CONSUMER_STOPPED);

	/* The table: the parent at SHARD_END with both children, the
	 * children's leases naming their parent. */
	lease_init(&rec);
	CU_ASSERT_EQUAL_FATAL(lease_mem_table_read(f.table, parent, &rec), KL_OK);
	CU_ASSERT_EQUAL(rec.checkpoint.kind, LEASE_ESN_SHARD_END);
	CU_ASSERT(lease_strset_has(&rec.children, child_a));
	CU_ASSERT(lease_strset_has(&rec.children, child_b));
	lease_done(&rec);
	CU_ASSERT_EQUAL_FATAL(lease_mem_table_read(f.table, child_b, &rec), KL_OK);
	CU_ASSERT(lease_strset_has(&rec.parents, parent));
	lease_done(&rec);

	fleet_free(&f);
	CHECK_OK(kinesis_delete_stream(&fx.c, stream, &info));
}

/* ------------------------------------------------------------ main */

static int stage_plugin(void)
{
	char src[4096], dst[4096], chunk[65536];
	struct kl_errinfo info;
	int in, out;
	ssize_t n;

	snprintf(fx.tmpdir, sizeof(fx.tmpdir), "/tmp/kl-integ-consumer-XXXXXX");
	if (!mkdtemp(fx.tmpdir))
		return -1;
	snprintf(src, sizeof(src), "%s/plugins/clickstream/.libs/clickstream.so", KL_TEST_BUILDDIR);
	snprintf(dst, sizeof(dst), "%s/clickstream.so", fx.tmpdir);
	snprintf(fx.plugin_path, sizeof(fx.plugin_path), "%s", dst);
	in = open(src, O_RDONLY);
	if (in < 0) {
		fprintf(stderr, "cannot open %s: %s (build the plugins first)\n", src, strerror(errno));
		return -1;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0755);
	if (out < 0) {
		close(in);
		return -1;
	}
	while ((n = read(in, chunk, sizeof(chunk))) > 0)
		if (write(out, chunk, (size_t)n) != n)
			break;
	close(in);
	close(out);
	chmod(dst, 0755);
	kl_errinfo_clear(&info);
	if (xform_plugin_load(dst, NULL, &info, &fx.plugin) != KL_OK) {
		fprintf(stderr, "load %s: %s\n", dst, info.message);
		return -1;
	}
	return 0;
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_two_shards_exactly_once),
		KL_TEST(test_split_during_consumption),
		{ NULL, NULL },
	};
	int rc;

	fx.endpoint = kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	if (tf_aws_init(&fx.creds) != KL_OK ||
	    tf_client_init(&fx.c, "kinesis", fx.endpoint, fx.creds) != KL_OK || stage_plugin() != 0)
		return 1;
	rc = kl_test_run("integ_consumer", tests);
	xform_plugin_free(fx.plugin);
	unlink(fx.plugin_path);
	rmdir(fx.tmpdir);
	aws_client_done(&fx.c);
	tf_aws_done(fx.creds);
	return rc;
}
