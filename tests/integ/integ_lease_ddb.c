/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_lease_ddb.c: the DynamoDB lease store and three lease coordinators
 * on dynalite (tests/emu/emulators.sh exports KL_TEST_DYNAMODB_ENDPOINT and
 * the keys; without them this exits 77), on the real clock with a 1.5 s
 * failover so the whole run takes seconds.
 *
 * Store level: every operation's condition against a real DynamoDB
 * implementation, attribute names and types as KCL writes them, non-LEASE
 * entities, scan paging and its cap, concurrent calls from many threads.
 * Fleet level, three coordinators in one process (each its own worker id,
 * store and ticking thread): take, steal to within one of target, two-phase
 * checkpoints seen in the raw item, release on shutdown and failover after
 * a kill (both measured and printed), a checkpoint by a worker that lost
 * its lease, attributes written by someone else surviving everything. A
 * monitor thread samples every worker all along and fails the test if two
 * acquisitions of one lease are ever processable at overlapping times.
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws.h"
#include "creds.h"
#include "fixture.h"
#include "ddb.h"
#include "http.h"
#include "lease.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store.h"
#include "lease_store_ddb.h"
#include "testutil.h"
#include "util.h"

#define FAILOVER_MS 1500
#define TAKE_INTERVAL_MS (2 * FAILOVER_MS)
#define N_LEASES 16
#define N_WORKERS 3
#define MAX_SPANS 2048

#define SEQ56 "49590338271490256608559692538361571095921575989136588898"
#define N38 "12345678901234567890123456789012345678"

/* One coordinator with its own store and ticking thread. */
struct worker {
	char id[32];
	struct lease_store *store;
	struct lease_coord *coord;   /* non-NULL while alive (changed under fx.mu) */
	pthread_t thread;
	bool thread_running;
	atomic_bool stop;
	atomic_bool paused;
	atomic_uint tick_errors;
	char last_error[256];        /* ticking thread only, read after join */
};

/* What the monitor saw of one acquisition (lease, worker, token): it was
 * certainly processable throughout [lo, hi] (empty when lo >= hi). */
struct span {
	char key[40];
	int worker;
	uint64_t token;
	int64_t lo;                  /* end of the first check that said OK */
	int64_t hi;                  /* start of the last check that said OK */
};

static struct {
	struct creds_chain *creds;
	struct aws_client_config ac;
	struct aws_client raw;       /* the test's own client: main thread only */
	char table[64];              /* the fleet's table */
	char ops_table[64];          /* store-level tests */
	struct lease_clock clock;

	pthread_mutex_t mu;          /* worker lifetimes vs the monitor; spans */
	struct worker w[N_WORKERS];
	pthread_t monitor;
	bool monitor_running;
	atomic_bool monitor_stop;
	struct span spans[MAX_SPANS];
	size_t n_spans;
	unsigned long samples;
	unsigned overlaps;
	char overlap[256];

	json_object *foreign[2];     /* lease items written by "someone else" */
	json_object *entities[2];    /* non-LEASE items */
	char keys[N_LEASES][40];
} fx;

/* ---------------------------------------------------------------- setup */

static int setup(void)
{
	const char *endpoint = kl_test_env_or_skip("KL_TEST_DYNAMODB_ENDPOINT");

	if (tf_aws_init(&fx.creds) != KL_OK)
		return -1;
	tf_client_config("dynamodb", endpoint, &fx.ac);
	/* Lease writes must finish well within the failover time. */
	fx.ac.http.timeout_ms = 2000;
	fx.ac.http.connect_timeout_ms = 500;
	fx.ac.retry.max_attempts = 2;
	if (aws_client_init(&fx.raw, &fx.ac, fx.creds) != KL_OK)
		return -1;
	snprintf(fx.table, sizeof(fx.table), "kl-fleet-%ld-%" PRId64, (long)getpid(), kl_mono_ms());
	snprintf(fx.ops_table, sizeof(fx.ops_table), "kl-ops-%ld-%" PRId64, (long)getpid(),
		 kl_mono_ms());
	lease_clock_real(&fx.clock);
	pthread_mutex_init(&fx.mu, NULL);
	return 0;
}

static struct lease_store *new_store(const char *table, unsigned max_clients, size_t max_items,
				     int page_limit)
{
	struct lease_store_ddb_config cfg;
	struct lease_store *s = NULL;
	struct kl_errinfo info;

	memset(&cfg, 0, sizeof(cfg));
	cfg.table = table;
	cfg.aws = &fx.ac;
	cfg.creds = fx.creds;
	cfg.max_clients = max_clients;
	cfg.max_items = max_items;
	cfg.scan_page_limit = page_limit;
	TF_CHECK_OK(lease_store_ddb_new(&cfg, &s, &info));
	return s;
}

/* The raw item with key (caller json_object_put()s), or NULL. */
static json_object *raw_get(const char *table, const char *key)
{
	json_object *k = ddb_key_s(LEASE_ATTR_KEY, key), *item = NULL;
	struct kl_errinfo info;

	TF_CHECK_OK(ddb_get_item(&fx.raw, table, k, true, &item, &info));
	json_object_put(k);
	return item;
}

static void raw_put(const char *table, json_object *item)
{
	struct kl_errinfo info;

	TF_CHECK_OK(ddb_put_item(&fx.raw, table, item, NULL, NULL, &info));
}

static uint64_t raw_counter(json_object *item)
{
	int64_t v = -1;

	CU_ASSERT_EQUAL(ddb_get_n_i64(item, LEASE_ATTR_COUNTER, &v), KL_OK);
	return (uint64_t)v;
}

/* True when item's attribute names are exactly names[0..n). */
static bool has_exactly(json_object *item, const char *const *names, size_t n)
{
	size_t found = 0;

	for (size_t i = 0; i < n; i++) {
		if (!ddb_has(item, names[i])) {
			fprintf(stderr, "\n  missing attribute %s\n", names[i]);
			return false;
		}
		found++;
	}
	if ((size_t)json_object_object_length(item) != found) {
		fprintf(stderr, "\n  unexpected attributes in %s\n",
			json_object_to_json_string_ext(item, JSON_C_TO_STRING_PLAIN));
		return false;
	}
	return true;
}

static struct lease_esn esn(const char *seq, uint64_t sub)
{
	struct lease_esn e;

	CU_ASSERT_EQUAL(lease_esn_parse(seq, sub, &e, NULL), KL_OK);
	return e;
}

/* ---------------------------------------------------------------- store level */

static void test_ensure_table(void)
{
	struct lease_store *s = new_store(fx.ops_table, 0, 0, 0), *bad;
	struct ddb_table_desc d;
	struct kl_errinfo info;
	char bad_table[80];

	TF_CHECK_OK(lease_store_ddb_ensure_table(s, 20000, &info));
	TF_CHECK_OK(lease_store_ddb_ensure_table(s, 20000, &info)); /* exists: fine */
	TF_CHECK_OK(ddb_describe_table(&fx.raw, fx.ops_table, &d, &info));
	CU_ASSERT_EQUAL(d.status, DDB_TABLE_ACTIVE);
	CU_ASSERT_STRING_EQUAL(d.hash_key, "leaseKey");
	CU_ASSERT_STRING_EQUAL(d.hash_key_type, "S");
	CU_ASSERT_STRING_EQUAL(d.range_key, "");
	CU_ASSERT_TRUE(d.pay_per_request);
	lease_store_free(s);

	/* A table keyed otherwise is not a lease table. */
	snprintf(bad_table, sizeof(bad_table), "%s-badkey", fx.ops_table);
	TF_CHECK_OK(ddb_create_table(&fx.raw, bad_table, "id", "S", &info));
	bad = new_store(bad_table, 0, 0, 0);
	CU_ASSERT_EQUAL(lease_store_ddb_ensure_table(bad, 20000, &info), KL_ECONFIG);
	lease_store_free(bad);
	TF_CHECK_OK(ddb_delete_table(&fx.raw, bad_table, &info));

	/* The fleet's table, created by the same call. */
	s = new_store(fx.table, 0, 0, 0);
	TF_CHECK_OK(lease_store_ddb_ensure_table(s, 20000, &info));
	lease_store_free(s);
}

static void make_lease(struct lease *l, const char *key, enum lease_esn_kind kind)
{
	lease_init(l);
	CU_ASSERT_EQUAL(lease_set_str(&l->key, key), KL_OK);
	l->checkpoint = lease_esn_sentinel(kind);
}

/* Every operation's condition, and what it writes, on dynalite. */
static void test_store_ops(void)
{
	static const uint8_t state[] = { 's', '3', ':', '/', '/', 0, 0xff };
	struct lease_store *s = new_store(fx.ops_table, 0, 0, 0);
	struct lease l, got;
	struct lease_strset kids = { NULL, 0 };
	struct lease_esn cp = esn(SEQ56, 4);
	json_object *item, *entity;
	struct kl_errinfo info;
	uint8_t *b = NULL;
	size_t n = 0;
	int64_t v = 0;

	make_lease(&l, "op-1", LEASE_ESN_TRIM_HORIZON);
	CU_ASSERT_EQUAL(lease_strset_add(&l.parents, "op-p1"), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&l.parents, "op-p2"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_str(&l.starting_hash_key, "0"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_str(&l.ending_hash_key, "340282366920938463463374607431768211455"),
			KL_OK);
	TF_CHECK_OK(lease_store_create(s, &l, &info));
	CU_ASSERT_EQUAL(lease_store_create(s, &l, &info), KL_ECONFLICT);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ConditionalCheckFailedException");
	lease_done(&l);

	/* Exactly KCL's attributes and types on a new lease. */
	item = raw_get(fx.ops_table, "op-1");
	CU_ASSERT_PTR_NOT_NULL_FATAL(item);
	{
		static const char *const names[] = {
			"leaseKey", "leaseCounter", "checkpoint", "checkpointSubSequenceNumber",
			"ownerSwitchesSinceCheckpoint", "parentShardId", "startingHashKey",
			"endingHashKey",
		};
		const char **strs = NULL;

		CU_ASSERT(has_exactly(item, names, KL_ARRAY_LEN(names)));
		CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "leaseCounter"), "0");
		CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "checkpoint"), "TRIM_HORIZON");
		CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "checkpointSubSequenceNumber"), "0");
		CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "ownerSwitchesSinceCheckpoint"), "0");
		CU_ASSERT_EQUAL(ddb_get_ss(item, "parentShardId", &strs, &n), KL_OK);
		CU_ASSERT_EQUAL(n, 2);
		free(strs);
		CU_ASSERT_PTR_NOT_NULL(ddb_get_s(item, "endingHashKey"));
	}
	json_object_put(item);

	TF_CHECK_OK(lease_store_get(s, "op-1", &got, &info));
	CU_ASSERT_EQUAL(got.counter, 0);
	CU_ASSERT_EQUAL(got.parents.n, 2);
	lease_done(&got);
	CU_ASSERT_EQUAL(lease_store_get(s, "op-none", &got, &info), KL_ENOTFOUND);

	/* renew: on the counter only */
	TF_CHECK_OK(lease_store_renew(s, "op-1", 0, "sess-1", 1790000000000LL, &info));
	CU_ASSERT_EQUAL(lease_store_renew(s, "op-1", 0, "sess-1", 0, &info), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_renew(s, "op-none", 0, "sess-1", 0, &info), KL_ECONFLICT);
	CU_ASSERT_PTR_NULL(raw_get(fx.ops_table, "op-none")); /* UpdateItem created nothing */

	/* take: owner, switches + 1, session, heartbeat */
	TF_CHECK_OK(lease_store_take(s, "op-1", 1, "w1", "sess-1", 1790000000001LL, true, &info));
	CU_ASSERT_EQUAL(lease_store_take(s, "op-1", 1, "w2", "sess-2", 0, true, &info), KL_ECONFLICT);
	item = raw_get(fx.ops_table, "op-1");
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "leaseOwner"), "w1");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "leaseCounter"), "2");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "ownerSwitchesSinceCheckpoint"), "1");
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "kinlakeSession"), "sess-1");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "kinlakeHeartbeat"), "1790000000001");
	json_object_put(item);

	/* prepare, then checkpoint: the two phases in the raw item */
	TF_CHECK_OK(lease_store_prepare(s, "op-1", 2, "sess-1", &cp, state, sizeof(state), &info));
	CU_ASSERT_EQUAL(lease_store_prepare(s, "op-1", 2, "sess-1", &cp, NULL, 0, &info), KL_ECONFLICT);
	item = raw_get(fx.ops_table, "op-1");
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "pendingCheckpoint"), SEQ56);
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "pendingCheckpointSubSequenceNumber"), "4");
	CU_ASSERT_EQUAL_FATAL(ddb_get_b(item, "pendingCheckpointState", &b, &n), KL_OK);
	CU_ASSERT(n == sizeof(state) && memcmp(b, state, n) == 0);
	free(b);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "checkpoint"), "TRIM_HORIZON");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "ownerSwitchesSinceCheckpoint"), "1");
	json_object_put(item);
	TF_CHECK_OK(lease_store_checkpoint(s, "op-1", 3, "sess-1", &cp, &info));
	CU_ASSERT_EQUAL(lease_store_checkpoint(s, "op-1", 3, "sess-1", &cp, &info), KL_ECONFLICT);
	item = raw_get(fx.ops_table, "op-1");
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "checkpoint"), SEQ56);
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "checkpointSubSequenceNumber"), "4");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "ownerSwitchesSinceCheckpoint"), "0");
	CU_ASSERT_FALSE(ddb_has(item, "pendingCheckpoint"));
	CU_ASSERT_FALSE(ddb_has(item, "pendingCheckpointSubSequenceNumber"));
	CU_ASSERT_FALSE(ddb_has(item, "pendingCheckpointState"));
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "leaseCounter"), "4");
	json_object_put(item);

	/* update_meta: no counter bump, needs a lease */
	CU_ASSERT_EQUAL(lease_strset_add(&kids, "op-c1"), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&kids, "op-c2"), KL_OK);
	TF_CHECK_OK(lease_store_update_meta(s, "op-1", &kids, NULL, NULL, &info));
	TF_CHECK_OK(lease_store_update_meta(s, "op-1", NULL, NULL, NULL, &info));
	CU_ASSERT_EQUAL(lease_store_update_meta(s, "op-none", &kids, NULL, NULL, &info), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_update_meta(s, "op-none", NULL, NULL, NULL, &info), KL_ECONFLICT);
	CU_ASSERT_PTR_NULL(raw_get(fx.ops_table, "op-none"));
	item = raw_get(fx.ops_table, "op-1");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "leaseCounter"), "4");
	CU_ASSERT_PTR_NOT_NULL(ddb_get(item, "childShardIds", "SS"));
	json_object_put(item);

	/* release: owner and counter */
	CU_ASSERT_EQUAL(lease_store_release(s, "op-1", 4, "w2", &info), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_release(s, "op-1", 3, "w1", &info), KL_ECONFLICT);
	TF_CHECK_OK(lease_store_release(s, "op-1", 4, "w1", &info));
	CU_ASSERT_EQUAL(lease_store_release(s, "op-1", 5, "w1", &info), KL_ECONFLICT); /* no owner */
	item = raw_get(fx.ops_table, "op-1");
	CU_ASSERT_FALSE(ddb_has(item, "leaseOwner"));
	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "leaseCounter", &v), KL_OK);
	CU_ASSERT_EQUAL(v, 5);
	json_object_put(item);

	/* A non-LEASE entity under the same table: invisible, untouchable. */
	entity = ddb_key_s(LEASE_ATTR_KEY, "op-worker");
	ddb_set(entity, "entityType", ddb_s("WORKER_METRIC_STATS"));
	ddb_set(entity, "lut", ddb_n("1790000000"));
	raw_put(fx.ops_table, entity);
	CU_ASSERT_EQUAL(lease_store_get(s, "op-worker", &got, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(lease_store_update_meta(s, "op-worker", &kids, NULL, NULL, &info),
			KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_update_meta(s, "op-worker", NULL, NULL, NULL, &info), KL_ECONFLICT);
	item = raw_get(fx.ops_table, "op-worker");
	CU_ASSERT(json_object_equal(item, entity));
	json_object_put(item);
	json_object_put(entity);
	lease_strset_done(&kids);

	/* delete: on the counter */
	CU_ASSERT_EQUAL(lease_store_delete(s, "op-1", 4, &info), KL_ECONFLICT);
	TF_CHECK_OK(lease_store_delete(s, "op-1", 5, &info));
	CU_ASSERT_EQUAL(lease_store_get(s, "op-1", &got, &info), KL_ENOTFOUND);
	lease_store_free(s);
}

/* Scans follow pages, skip other entities, stop at the cap; a missing
 * table is KL_ENOTFOUND. */
static void test_store_scan(void)
{
	struct lease_store *s = new_store(fx.ops_table, 0, 0, 2), *capped, *missing;
	struct lease_list list;
	struct kl_errinfo info;
	char key[32];

	for (int i = 0; i < 5; i++) {
		struct lease l;

		snprintf(key, sizeof(key), "scan-%d", i);
		make_lease(&l, key, LEASE_ESN_LATEST);
		TF_CHECK_OK(lease_store_create(s, &l, &info));
		lease_done(&l);
	}
	/* op-worker (WORKER_METRIC_STATS) is still there: 6 items, 5 leases, pages of 2. */
	TF_CHECK_OK(lease_store_scan(s, &list, &info));
	CU_ASSERT_EQUAL(list.n, 5);
	for (size_t i = 0; i < list.n; i++)
		CU_ASSERT_EQUAL(strncmp(list.items[i].key, "scan-", 5), 0);
	lease_list_done(&list);

	capped = new_store(fx.ops_table, 0, 4, 2);
	CU_ASSERT_EQUAL(lease_store_scan(capped, &list, &info), KL_ENOMEM);
	lease_store_free(capped);

	missing = new_store("kl-no-such-lease-table", 0, 0, 0);
	CU_ASSERT_EQUAL(lease_store_scan(missing, &list, &info), KL_ENOTFOUND);
	lease_store_free(missing);
	lease_store_free(s);
}

struct hammer {
	struct lease_store *store;
	char key[32];
	int renews;
	int ok;
	int scans_ok;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;

	for (int i = 0; i < h->renews; i++) {
		if (lease_store_renew(h->store, h->key, (uint64_t)i, "hammer", 0, NULL) == KL_OK)
			h->ok++;
		if (i % 5 == 0) {
			struct lease_list list;

			if (lease_store_scan(h->store, &list, NULL) == KL_OK) {
				h->scans_ok++;
				lease_list_done(&list);
			}
		}
	}
	return NULL;
}

/* One store, many threads, fewer clients than threads: every call lands. */
static void test_store_threads(void)
{
	enum { THREADS = 8, RENEWS = 25 };
	struct lease_store *s = new_store(fx.ops_table, 3, 0, 0);
	struct hammer h[THREADS];
	pthread_t t[THREADS];
	struct kl_errinfo info;

	for (int i = 0; i < THREADS; i++) {
		struct lease l;

		memset(&h[i], 0, sizeof(h[i]));
		h[i].store = s;
		h[i].renews = RENEWS;
		snprintf(h[i].key, sizeof(h[i].key), "thr-%d", i);
		make_lease(&l, h[i].key, LEASE_ESN_LATEST);
		TF_CHECK_OK(lease_store_create(s, &l, &info));
		lease_done(&l);
	}
	for (int i = 0; i < THREADS; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < THREADS; i++) {
		struct lease got;

		CU_ASSERT_EQUAL(h[i].ok, RENEWS);
		CU_ASSERT_EQUAL(h[i].scans_ok, (RENEWS + 4) / 5);
		TF_CHECK_OK(lease_store_get(s, h[i].key, &got, &info));
		CU_ASSERT_EQUAL(got.counter, RENEWS);
		lease_done(&got);
	}
	lease_store_free(s);
}

/* ---------------------------------------------------------------- the fleet */

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	while (!atomic_load(&w->stop)) {
		struct kl_errinfo info;
		enum kl_err err = KL_OK;
		int64_t wait;

		kl_errinfo_clear(&info);
		if (!atomic_load(&w->paused))
			err = lease_coord_tick(w->coord, &info);
		if (err != KL_OK) {
			atomic_fetch_add(&w->tick_errors, 1);
			kl_errinfo_format(err, &info, w->last_error, sizeof(w->last_error));
		}
		wait = lease_coord_next_due(w->coord) - kl_mono_ms();
		kl_sleep_ms(wait < 1 ? 1 : wait > 10 ? 10 : wait);
	}
	return NULL;
}

static void worker_start(int i)
{
	struct worker *w = &fx.w[i];
	struct lease_coord_config cfg;
	struct lease_coord *c = NULL;
	struct kl_errinfo info;

	memset(&cfg, 0, sizeof(cfg));
	snprintf(w->id, sizeof(w->id), "worker-%c-%ld", 'A' + i, (long)getpid());
	cfg.worker_id = w->id;
	cfg.failover_ms = FAILOVER_MS;
	cfg.take_interval_ms = TAKE_INTERVAL_MS;
	cfg.max_steal = 3;
	w->store = new_store(fx.table, 4, 0, 0);
	TF_CHECK_OK(lease_coord_new(&cfg, w->store, &fx.clock, NULL, &c, &info));
	atomic_store(&w->stop, false);
	atomic_store(&w->paused, false);
	pthread_mutex_lock(&fx.mu);
	w->coord = c;
	pthread_mutex_unlock(&fx.mu);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&w->thread, NULL, worker_main, w), 0);
	w->thread_running = true;
}

/* Stops the ticking thread, then frees the coordinator: with release
 * first, a graceful stop; without, a crash (no more writes). */
static void worker_stop(int i, bool release)
{
	struct worker *w = &fx.w[i];
	struct kl_errinfo info;

	if (!w->coord)
		return;
	if (release)
		TF_CHECK_OK(lease_coord_release_all(w->coord, &info));
	atomic_store(&w->stop, true);
	if (w->thread_running)
		pthread_join(w->thread, NULL);
	w->thread_running = false;
	pthread_mutex_lock(&fx.mu);
	lease_coord_free(w->coord);
	w->coord = NULL;
	pthread_mutex_unlock(&fx.mu);
	lease_store_free(w->store);
	w->store = NULL;
}

/* Records one OK check of (key, worker, token) between t_before and
 * t_after, and looks for an overlapping acquisition. fx.mu held. */
static void monitor_note(const char *key, int worker, uint64_t token, int64_t t_before,
			 int64_t t_after)
{
	struct span *sp = NULL;

	for (size_t i = 0; i < fx.n_spans; i++)
		if (fx.spans[i].worker == worker && fx.spans[i].token == token &&
		    strcmp(fx.spans[i].key, key) == 0)
			sp = &fx.spans[i];
	if (!sp) {
		if (fx.n_spans == MAX_SPANS)
			return;
		sp = &fx.spans[fx.n_spans++];
		snprintf(sp->key, sizeof(sp->key), "%s", key);
		sp->worker = worker;
		sp->token = token;
		sp->lo = t_after;
	}
	sp->hi = t_before;
	for (size_t i = 0; i < fx.n_spans; i++) {
		const struct span *o = &fx.spans[i];
		int64_t lo, hi;

		if (o == sp || strcmp(o->key, key) != 0)
			continue;
		lo = o->lo > sp->lo ? o->lo : sp->lo;
		hi = o->hi < sp->hi ? o->hi : sp->hi;
		if (lo < hi) {
			if (!fx.overlaps++)
				snprintf(fx.overlap, sizeof(fx.overlap),
					 "'%s' processable at worker %d (token %" PRIu64 ") and worker %d "
					 "(token %" PRIu64 ") during %" PRId64 " ms",
					 key, o->worker, o->token, worker, token, hi - lo);
		}
	}
}

static void *monitor_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&fx.monitor_stop)) {
		pthread_mutex_lock(&fx.mu);
		for (int i = 0; i < N_WORKERS; i++) {
			struct lease_coord *c = fx.w[i].coord;
			struct lease_grant *g;
			size_t n;

			if (!c || lease_coord_grants(c, &g, &n) != KL_OK)
				continue;
			for (size_t k = 0; k < n; k++) {
				int64_t before = kl_mono_ms(), after;

				if (lease_coord_check(c, g[k].key, g[k].token, NULL) != KL_OK)
					continue;
				after = kl_mono_ms();
				monitor_note(g[k].key, i, g[k].token, before, after);
			}
			lease_grants_free(g, n);
		}
		fx.samples++;
		pthread_mutex_unlock(&fx.mu);
		kl_sleep_ms(3);
	}
	return NULL;
}

/* Number of leases worker i may process now. */
static size_t processable_count(int i)
{
	struct lease_grant *g;
	size_t n, p = 0;

	if (!fx.w[i].coord || lease_coord_grants(fx.w[i].coord, &g, &n) != KL_OK)
		return 0;
	for (size_t k = 0; k < n; k++)
		p += lease_coord_check(fx.w[i].coord, g[k].key, g[k].token, NULL) == KL_OK;
	lease_grants_free(g, n);
	return p;
}

/* Token of key if worker i may process it now, else 0. */
static uint64_t processable_token(int i, const char *key)
{
	struct lease_grant *g;
	size_t n;
	uint64_t token = 0;

	if (!fx.w[i].coord || lease_coord_grants(fx.w[i].coord, &g, &n) != KL_OK)
		return 0;
	for (size_t k = 0; k < n; k++)
		if (strcmp(g[k].key, key) == 0 &&
		    lease_coord_check(fx.w[i].coord, key, g[k].token, NULL) == KL_OK)
			token = g[k].token;
	lease_grants_free(g, n);
	return token;
}

/* Index of the worker that may process key now, or -1. */
static int holder_of(const char *key, uint64_t *ret_token)
{
	for (int i = 0; i < N_WORKERS; i++) {
		uint64_t t = processable_token(i, key);

		if (t) {
			if (ret_token)
				*ret_token = t;
			return i;
		}
	}
	return -1;
}

/* Keys worker i holds (processable), into keys[]; returns how many. */
static size_t held_keys(int i, char keys[][40], size_t max)
{
	size_t m = 0;

	for (int k = 0; k < N_LEASES && m < max; k++)
		if (processable_token(i, fx.keys[k]))
			snprintf(keys[m++], 40, "%s", fx.keys[k]);
	return m;
}

static bool balanced(void)
{
	size_t total = 0;
	unsigned target = (N_LEASES + N_WORKERS - 1) / N_WORKERS;

	for (int i = 0; i < N_WORKERS; i++) {
		size_t p = processable_count(i);

		if (p + 1 < target || p > target)
			return false;
		total += p;
	}
	return total == N_LEASES;
}

static void print_counts(const char *when)
{
	printf("\n    %s: A %zu, B %zu, C %zu processable", when, processable_count(0),
	       processable_count(1), processable_count(2));
}

/* The table: 16 leases (two written by "someone else" with attributes we
 * do not know, one with entityType LEASE) and two other entities. */
static void test_fleet_table(void)
{
	struct lease_store *s = new_store(fx.table, 0, 0, 0);
	struct kl_errinfo info;
	json_object *m;

	for (int i = 0; i < N_LEASES; i++)
		snprintf(fx.keys[i], sizeof(fx.keys[i]), "shardId-%012d", i);
	for (int i = 2; i < N_LEASES; i++) {
		struct lease l;

		make_lease(&l, fx.keys[i], LEASE_ESN_TRIM_HORIZON);
		TF_CHECK_OK(lease_store_create(s, &l, &info));
		lease_done(&l);
	}
	for (int i = 0; i < 2; i++) {
		json_object *it = ddb_key_s(LEASE_ATTR_KEY, fx.keys[i]);

		ddb_set(it, "leaseCounter", ddb_n("0"));
		ddb_set(it, "checkpoint", ddb_s("TRIM_HORIZON"));
		ddb_set(it, "checkpointSubSequenceNumber", ddb_n("0"));
		ddb_set(it, "ownerSwitchesSinceCheckpoint", ddb_n("0"));
		ddb_set(it, "throughputKBps", ddb_n("123.456789"));
		ddb_set(it, "appNote", ddb_s(i ? "written by someone else" : "x/y\"z"));
		ddb_set(it, "appBig", ddb_n(N38));
		m = json_object_new_object();
		ddb_set(m, "owner", ddb_s("another-tool"));
		ddb_set(m, "rev", ddb_n("3"));
		ddb_set(it, "appMap", ddb_m(m));
		if (i == 1)
			ddb_set(it, "entityType", ddb_s("LEASE"));
		raw_put(fx.table, it);
		fx.foreign[i] = it;
	}
	fx.entities[0] = ddb_key_s(LEASE_ATTR_KEY, "worker-x");
	ddb_set(fx.entities[0], "entityType", ddb_s("WORKER_METRIC_STATS"));
	ddb_set(fx.entities[0], "lut", ddb_n("1790000000"));
	fx.entities[1] = ddb_key_s(LEASE_ATTR_KEY, "Leader");
	ddb_set(fx.entities[1], "entityType", ddb_s("LEADER"));
	/* Shaped like a lease, on purpose: still not one. */
	ddb_set(fx.entities[1], "leaseCounter", ddb_n("0"));
	ddb_set(fx.entities[1], "checkpoint", ddb_s("TRIM_HORIZON"));
	raw_put(fx.table, fx.entities[0]);
	raw_put(fx.table, fx.entities[1]);
	lease_store_free(s);

	CU_ASSERT_EQUAL(pthread_create(&fx.monitor, NULL, monitor_main, NULL), 0);
	fx.monitor_running = true;
}

/* A takes everything; B and C join and steal until 6/5/5. */
static void test_fleet_take_and_steal(void)
{
	struct lease_status st;
	int64_t t0 = kl_mono_ms(), deadline;
	uint64_t stolen = 0;

	worker_start(0);
	deadline = t0 + 10000;
	while (processable_count(0) < N_LEASES && kl_mono_ms() < deadline)
		kl_sleep_ms(10);
	CU_ASSERT_EQUAL_FATAL(processable_count(0), N_LEASES);
	printf("\n    A took %d leases in %" PRId64 " ms", N_LEASES, kl_mono_ms() - t0);

	t0 = kl_mono_ms();
	worker_start(1);
	worker_start(2);
	deadline = t0 + 30000;
	while (!balanced() && kl_mono_ms() < deadline)
		kl_sleep_ms(20);
	print_counts("balanced");
	CU_ASSERT_FATAL(balanced());
	printf(" after %" PRId64 " ms", kl_mono_ms() - t0);
	for (int i = 0; i < N_WORKERS; i++) {
		CU_ASSERT_EQUAL_FATAL(lease_coord_status(fx.w[i].coord, &st), KL_OK);
		stolen += st.stolen;
		CU_ASSERT_EQUAL(st.n_leases, N_LEASES); /* other entities are not leases */
		CU_ASSERT_EQUAL(st.live_workers, N_WORKERS);
		lease_status_done(&st);
	}
	/* A ends with at most 6 of its 16: the rest were stolen, never unowned. */
	CU_ASSERT(stolen >= N_LEASES - (N_LEASES + N_WORKERS - 1) / N_WORKERS);
	printf(", %" PRIu64 " steals", stolen);
}

/* Every holder checkpoints every lease; then a two-phase checkpoint, read
 * back from the raw item as KCL would see it. */
static void test_fleet_checkpoints(void)
{
	static const uint8_t state[] = { 'k', 'e', 'y', '-', '1', 0, 0xff, '/' };
	struct kl_errinfo info;
	char seq[32];
	uint64_t token = 0;
	int h;
	json_object *item;
	struct lease_esn pend = esn(SEQ56, 3);
	uint8_t *b = NULL;
	size_t n = 0;

	for (int k = 0; k < N_LEASES; k++) {
		struct lease_esn e;

		h = holder_of(fx.keys[k], &token);
		CU_ASSERT_FATAL(h >= 0);
		snprintf(seq, sizeof(seq), "%d", 1000 + k);
		e = esn(seq, 0);
		TF_CHECK_OK(lease_coord_checkpoint(fx.w[h].coord, fx.keys[k], token, &e, &info));
	}
	for (int k = 0; k < N_LEASES; k++) {
		item = raw_get(fx.table, fx.keys[k]);
		snprintf(seq, sizeof(seq), "%d", 1000 + k);
		CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "checkpoint"), seq);
		CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "checkpointSubSequenceNumber"), "0");
		CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "ownerSwitchesSinceCheckpoint"), "0");
		CU_ASSERT_PTR_NOT_NULL(ddb_get_s(item, "leaseOwner"));
		CU_ASSERT_PTR_NOT_NULL(ddb_get_n(item, "kinlakeHeartbeat"));
		json_object_put(item);
	}

	/* Phase 1 on shardId 5: the intent, and only the intent, changes. */
	h = holder_of(fx.keys[5], &token);
	CU_ASSERT_FATAL(h >= 0);
	TF_CHECK_OK(lease_coord_prepare(fx.w[h].coord, fx.keys[5], token, &pend, state, sizeof(state),
				     &info));
	item = raw_get(fx.table, fx.keys[5]);
	{
		static const char *const names[] = {
			"leaseKey", "leaseOwner", "leaseCounter", "checkpoint",
			"checkpointSubSequenceNumber", "ownerSwitchesSinceCheckpoint",
			"pendingCheckpoint", "pendingCheckpointSubSequenceNumber",
			"pendingCheckpointState", "kinlakeSession", "kinlakeHeartbeat",
		};

		CU_ASSERT(has_exactly(item, names, KL_ARRAY_LEN(names)));
	}
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "leaseOwner"), fx.w[h].id);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "pendingCheckpoint"), SEQ56);
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "pendingCheckpointSubSequenceNumber"), "3");
	CU_ASSERT_EQUAL_FATAL(ddb_get_b(item, "pendingCheckpointState", &b, &n), KL_OK);
	CU_ASSERT(n == sizeof(state) && memcmp(b, state, n) == 0);
	free(b);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "checkpoint"), "1005");
	json_object_put(item);
	/* Phase 2: the checkpoint moves, the intent goes. */
	TF_CHECK_OK(lease_coord_checkpoint(fx.w[h].coord, fx.keys[5], token, &pend, &info));
	item = raw_get(fx.table, fx.keys[5]);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "checkpoint"), SEQ56);
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "checkpointSubSequenceNumber"), "3");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "ownerSwitchesSinceCheckpoint"), "0");
	CU_ASSERT_FALSE(ddb_has(item, "pendingCheckpoint"));
	CU_ASSERT_FALSE(ddb_has(item, "pendingCheckpointSubSequenceNumber"));
	CU_ASSERT_FALSE(ddb_has(item, "pendingCheckpointState"));
	json_object_put(item);
}

/* Time until every key of keys[0..n) is processable by a worker other
 * than gone; fills per-key delays (ms since t0). */
static void wait_moved(char keys[][40], size_t n, int gone, int64_t t0, int64_t timeout_ms,
		       int64_t *delays)
{
	size_t done = 0;

	for (size_t k = 0; k < n; k++)
		delays[k] = -1;
	while (done < n && kl_mono_ms() - t0 < timeout_ms) {
		for (size_t k = 0; k < n; k++) {
			int h;

			if (delays[k] >= 0)
				continue;
			h = holder_of(keys[k], NULL);
			if (h >= 0 && h != gone) {
				delays[k] = kl_mono_ms() - t0;
				done++;
			}
		}
		kl_sleep_ms(5);
	}
}

static void report(const char *what, const int64_t *delays, size_t n, int64_t *ret_max,
		   int64_t *ret_min)
{
	int64_t max = 0, sum = 0, min = INT64_MAX;

	for (size_t k = 0; k < n; k++) {
		CU_ASSERT(delays[k] >= 0);
		if (delays[k] > max)
			max = delays[k];
		if (delays[k] < min)
			min = delays[k];
		sum += delays[k];
	}
	printf("\n    %s: %zu leases, processable elsewhere after %" PRId64 "..%" PRId64
	       " ms (avg %" PRId64 " ms)", what, n, n ? min : 0, max, n ? sum / (int64_t)n : 0);
	*ret_max = max;
	*ret_min = n ? min : 0;
}

/* C stops gracefully with an intent in flight: its leases move at once,
 * the intent with them. */
static void test_fleet_release(void)
{
	static const uint8_t state[] = "part-0007";
	char keys[N_LEASES][40];
	int64_t delays[N_LEASES], max, min, t0;
	/* Past every checkpoint written so far (1000 + k, and SEQ56). */
	struct lease_esn pend = esn(SEQ56 "7", 9);
	struct lease_grant *g;
	size_t n, ng;
	uint64_t token = 0;
	struct kl_errinfo info;
	bool found = false;
	int h;

	n = held_keys(2, keys, N_LEASES);
	CU_ASSERT_FATAL(n >= 1);
	token = processable_token(2, keys[0]);
	TF_CHECK_OK(lease_coord_prepare(fx.w[2].coord, keys[0], token, &pend, state, sizeof(state),
				     &info));

	t0 = kl_mono_ms();
	worker_stop(2, true);
	wait_moved(keys, n, 2, t0, 10000, delays);
	report("handover after release", delays, n, &max, &min);
	CU_ASSERT(max <= 3000);

	/* The new holder got the intent: rebuild that batch, then commit it. */
	h = holder_of(keys[0], &token);
	CU_ASSERT_FATAL(h >= 0);
	CU_ASSERT_EQUAL_FATAL(lease_coord_grants(fx.w[h].coord, &g, &ng), KL_OK);
	for (size_t k = 0; k < ng; k++) {
		if (strcmp(g[k].key, keys[0]) != 0)
			continue;
		found = true;
		CU_ASSERT_EQUAL(lease_esn_cmp(&g[k].pending, &pend), 0);
		CU_ASSERT(g[k].pending_state_len == sizeof(state) &&
			  memcmp(g[k].pending_state, state, sizeof(state)) == 0);
	}
	lease_grants_free(g, ng);
	CU_ASSERT(found);
	TF_CHECK_OK(lease_coord_checkpoint(fx.w[h].coord, keys[0], token, &pend, &info));
	{
		json_object *item = raw_get(fx.table, keys[0]);

		CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "checkpoint"), SEQ56 "7");
		CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "checkpointSubSequenceNumber"), "9");
		CU_ASSERT_FALSE(ddb_has(item, "pendingCheckpointState"));
		CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "leaseOwner"), fx.w[h].id);
		json_object_put(item);
	}
}

/* B stalls (no ticks: a GC pause, a stuck disk); meanwhile the lease is
 * taken under it. B still believes it holds it, but its checkpoint is
 * refused by the table: KL_ELEASE_LOST, and nothing changes. */
static void test_fleet_lost_checkpoint(void)
{
	struct lease_store *thief = new_store(fx.table, 0, 0, 0);
	char keys[N_LEASES][40];
	struct lease_esn e = esn(SEQ56 "99", 0); /* past any checkpoint so far */
	int64_t valid_until = 0, deadline = kl_mono_ms() + 3000;
	struct kl_errinfo info;
	json_object *item;
	uint64_t token = 0;
	size_t n;

	n = held_keys(1, keys, N_LEASES);
	CU_ASSERT_FATAL(n >= 1);
	/* Right after a renew, so B's own clock leaves it a second to go. */
	do {
		token = processable_token(1, keys[0]);
		valid_until = 0;
		if (token)
			lease_coord_check(fx.w[1].coord, keys[0], token, &valid_until);
		if (valid_until - kl_mono_ms() >= FAILOVER_MS - 200)
			break;
		kl_sleep_ms(2);
	} while (kl_mono_ms() < deadline);
	CU_ASSERT_FATAL(token != 0);
	atomic_store(&fx.w[1].paused, true);

	item = raw_get(fx.table, keys[0]);
	TF_CHECK_OK(lease_store_take(thief, keys[0], raw_counter(item), "thief", "thief-session", 0,
				  true, &info));
	json_object_put(item);
	/* Locally B cannot know yet... */
	CU_ASSERT_EQUAL(lease_coord_check(fx.w[1].coord, keys[0], token, NULL), KL_OK);
	/* ...but the table fences it off. */
	CU_ASSERT_EQUAL(lease_coord_checkpoint(fx.w[1].coord, keys[0], token, &e, &info),
			KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(lease_coord_check(fx.w[1].coord, keys[0], token, NULL), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(lease_coord_prepare(fx.w[1].coord, keys[0], token, &e, NULL, 0, &info),
			KL_ELEASE_LOST);
	atomic_store(&fx.w[1].paused, false);
	item = raw_get(fx.table, keys[0]);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "leaseOwner"), "thief");
	CU_ASSERT_STRING_NOT_EQUAL(ddb_get_s(item, "checkpoint"), SEQ56 "99");
	json_object_put(item);
	/* B's other leases were not hurt by the stall. */
	for (size_t k = 1; k < n; k++)
		CU_ASSERT(processable_token(1, keys[k]) != 0);
	lease_store_free(thief);
}

/* B dies: its leases, and the one the thief abandoned, end up with A
 * within failover + one take interval. */
static void test_fleet_kill(void)
{
	char keys[N_LEASES][40];
	int64_t delays[N_LEASES], max, min, t0;
	size_t n;

	n = held_keys(1, keys, N_LEASES);
	CU_ASSERT_FATAL(n >= 1);
	t0 = kl_mono_ms();
	worker_stop(1, false);
	wait_moved(keys, n, 1, t0, 15000, delays);
	report("failover after kill", delays, n, &max, &min);
	CU_ASSERT(max <= FAILOVER_MS + TAKE_INTERVAL_MS);
	/* Never before the lease expired: B's last renew was at most one
	 * renew interval (plus a pass) before the kill. */
	CU_ASSERT(min >= FAILOVER_MS - FAILOVER_MS / 3 - 200);

	/* Everything, thief's lease included, is A's in the end. */
	t0 = kl_mono_ms();
	while (processable_count(0) < N_LEASES && kl_mono_ms() - t0 < 10000)
		kl_sleep_ms(10);
	CU_ASSERT_EQUAL(processable_count(0), N_LEASES);
}

/* What "someone else" wrote is still there; other entities untouched;
 * A's graceful stop leaves every lease unowned; no overlap was seen. */
static void test_fleet_end(void)
{
	json_object *item;

	for (int i = 0; i < 2; i++) {
		static const char *const kept[] = { "throughputKBps", "appNote", "appBig", "appMap",
						    "entityType" };

		item = raw_get(fx.table, fx.keys[i]);
		for (size_t k = 0; k < KL_ARRAY_LEN(kept); k++) {
			json_object *a = NULL, *b = NULL;

			json_object_object_get_ex(item, kept[k], &a);
			json_object_object_get_ex(fx.foreign[i], kept[k], &b);
			CU_ASSERT((!a && !b) || (a && b && json_object_equal(a, b)));
		}
		CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "appBig"), N38);
		/* ... and the lease moved many times meanwhile. */
		CU_ASSERT(raw_counter(item) > 5);
		json_object_put(item);
	}
	for (int i = 0; i < 2; i++) {
		item = raw_get(fx.table, json_object_get_string(ddb_get(fx.entities[i], "leaseKey", "S")));
		CU_ASSERT(json_object_equal(item, fx.entities[i]));
		json_object_put(item);
	}

	worker_stop(0, true);
	for (int k = 0; k < N_LEASES; k++) {
		item = raw_get(fx.table, fx.keys[k]);
		CU_ASSERT_FALSE(ddb_has(item, "leaseOwner"));
		json_object_put(item);
	}
	atomic_store(&fx.monitor_stop, true);
	pthread_join(fx.monitor, NULL);
	fx.monitor_running = false;
	printf("\n    monitor: %lu samples, %zu acquisitions, %u overlaps", fx.samples, fx.n_spans,
	       fx.overlaps);
	if (fx.overlaps)
		fprintf(stderr, "\n  overlap: %s\n", fx.overlap);
	CU_ASSERT_EQUAL(fx.overlaps, 0);
	CU_ASSERT(fx.n_spans >= N_LEASES * 2); /* it did watch the moves */
	for (int i = 0; i < N_WORKERS; i++)
		if (atomic_load(&fx.w[i].tick_errors))
			printf("\n    worker %c: %u ticks reported an error (a renew that finds its lease "
			       "stolen does), the last: %s", 'A' + i,
			       atomic_load(&fx.w[i].tick_errors), fx.w[i].last_error);
}

static void teardown(void)
{
	struct kl_errinfo info;

	for (int i = 0; i < N_WORKERS; i++)
		worker_stop(i, false);
	if (fx.monitor_running) {
		atomic_store(&fx.monitor_stop, true);
		pthread_join(fx.monitor, NULL);
	}
	for (int i = 0; i < 2; i++) {
		json_object_put(fx.foreign[i]);
		json_object_put(fx.entities[i]);
	}
	ddb_delete_table(&fx.raw, fx.table, &info);
	ddb_delete_table(&fx.raw, fx.ops_table, &info);
	aws_client_done(&fx.raw);
	creds_chain_free(fx.creds);
	pthread_mutex_destroy(&fx.mu);
	http_global_cleanup();
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_ensure_table),
		KL_TEST(test_store_ops),
		KL_TEST(test_store_scan),
		KL_TEST(test_store_threads),
		KL_TEST(test_fleet_table),
		KL_TEST(test_fleet_take_and_steal),
		KL_TEST(test_fleet_checkpoints),
		KL_TEST(test_fleet_release),
		KL_TEST(test_fleet_lost_checkpoint),
		KL_TEST(test_fleet_kill),
		KL_TEST(test_fleet_end),
		{ 0 },
	};
	int rc;

	if (setup() != 0) {
		fprintf(stderr, "integ_lease_ddb: setup failed\n");
		return 1;
	}
	rc = kl_test_run("integ_lease_ddb", t);
	teardown();
	return rc;
}
