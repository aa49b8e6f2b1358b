/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_reshard.c: resharding with real shard ids, against kinesalite and
 * dynalite together (tests/emu/emulators.sh exports both endpoints; without
 * them this exits 77). A 2-shard stream is split, two shards are merged,
 * and a child of the split is split again, while two lease coordinators
 * (Kinesis shard source, DynamoDB store, real clock, 1.5 s failover) and a
 * toy consumer loop in this thread read it: GetRecords until shard end,
 * then lease_coord_shard_end() with the children ListShards names.
 *
 * Checked: a child lease is never processable before every parent reached
 * SHARD_END; the lease items carry KCL's parentShardId / childShardIds;
 * every record is committed (read, then checkpointed) exactly once; and the
 * finished parents are garbage-collected once their children checkpoint,
 * leaving exactly the open shards' leases. Last, new fleets start on the
 * resharded stream at TRIM_HORIZON and at LATEST.
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
#include "kinesis.h"
#include "lease.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_shards_kinesis.h"
#include "lease_store.h"
#include "lease_store_ddb.h"
#include "testutil.h"
#include "util.h"

#define FAILOVER_MS 1500
#define N_WORKERS 2
#define MAX_RECORDS 200
#define MAX_CONSUMERS 64
#define MAX_SHARDS 16

struct worker {
	char id[32];
	struct lease_store *store;
	struct lease_shards_kinesis *shards;
	struct lease_coord *coord;
	pthread_t thread;
	bool thread_running;
	atomic_bool stop;
};

/* The toy consumer of one acquisition (worker, token). */
struct consumer {
	bool used;
	int worker;
	uint64_t token;
	char key[KINESIS_SHARD_ID_MAX + 1];
	char *iterator;
};

static struct {
	struct creds_chain *creds;
	struct aws_client_config kc, dc;
	struct aws_client kin;        /* stream admin, puts, GetRecords: this thread */
	struct aws_client ddb;        /* raw reads of the lease table */
	struct lease_shards_kinesis *children_src; /* the consumer's ListShards */
	char stream[64];
	char table[64];
	struct lease_clock clock;
	struct worker w[N_WORKERS];
	struct consumer cons[MAX_CONSUMERS];

	int put;                      /* records put: data "rec-<n>" */
	int committed[MAX_RECORDS];   /* times each was committed */
	int duplicates;
	char ended[MAX_SHARDS][KINESIS_SHARD_ID_MAX + 1]; /* shard_end succeeded */
	int n_ended;
	char started[MAX_SHARDS][KINESIS_SHARD_ID_MAX + 1]; /* first processable */
	int n_started;
	int parent_violations;
	int merge_waits;              /* shard_end said KL_ESTATE (co-parent lease missing) */
	int waiting_seen;             /* grants seen in waiting-on-parents */
	int lost;                     /* consumers stopped by KL_ELEASE_LOST */
	const char *hold;             /* a slow consumer: this shard is not read */
} fx;

static int setup(void)
{
	const char *kin = kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	const char *ddb = kl_test_env_or_skip("KL_TEST_DYNAMODB_ENDPOINT");
	struct lease_shards_kinesis_config sc = { 0 };

	if (tf_aws_init(&fx.creds) != KL_OK)
		return -1;
	tf_client_config("kinesis", kin, &fx.kc);
	fx.kc.http.timeout_ms = 5000;
	fx.dc = fx.kc;
	fx.dc.service = "dynamodb";
	fx.dc.endpoint = ddb;
	fx.dc.http.timeout_ms = 1000;
	fx.dc.retry.max_attempts = 2;
	if (aws_client_init(&fx.kin, &fx.kc, fx.creds) != KL_OK ||
	    aws_client_init(&fx.ddb, &fx.dc, fx.creds) != KL_OK)
		return -1;
	snprintf(fx.stream, sizeof(fx.stream), "kl-reshard-%ld-%" PRId64, (long)getpid(), kl_mono_ms());
	snprintf(fx.table, sizeof(fx.table), "kl-reshard-leases-%ld-%" PRId64, (long)getpid(),
		 kl_mono_ms());
	sc.stream = fx.stream;
	sc.aws = &fx.kc;
	sc.creds = fx.creds;
	if (lease_shards_kinesis_new(&sc, &fx.children_src, NULL) != KL_OK)
		return -1;
	lease_clock_real(&fx.clock);
	return 0;
}

/* ---------------------------------------------------------------- workers */

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	while (!atomic_load(&w->stop)) {
		int64_t wait;

		lease_coord_tick(w->coord, NULL);
		wait = lease_coord_next_due(w->coord) - kl_mono_ms();
		kl_sleep_ms(wait < 1 ? 1 : wait > 10 ? 10 : wait);
	}
	return NULL;
}

static void worker_start(int i)
{
	struct worker *w = &fx.w[i];
	struct lease_store_ddb_config dcfg = { 0 };
	struct lease_shards_kinesis_config scfg = { 0 };
	struct lease_shard_source src;
	struct lease_coord_config cfg;
	struct kl_errinfo info;

	snprintf(w->id, sizeof(w->id), "reshard-%c-%ld", 'A' + i, (long)getpid());
	dcfg.table = fx.table;
	dcfg.aws = &fx.dc;
	dcfg.creds = fx.creds;
	TF_CHECK_OK(lease_store_ddb_new(&dcfg, &w->store, &info));
	TF_CHECK_OK(lease_store_ddb_ensure_table(w->store, 20000, &info));
	scfg.stream = fx.stream;
	scfg.aws = &fx.kc;
	scfg.creds = fx.creds;
	TF_CHECK_OK(lease_shards_kinesis_new(&scfg, &w->shards, &info));
	lease_shards_kinesis_source(w->shards, &src);

	memset(&cfg, 0, sizeof(cfg));
	cfg.worker_id = w->id;
	cfg.failover_ms = FAILOVER_MS;
	cfg.sync_interval_ms = 1000;
	cfg.initial_position = LEASE_INITIAL_TRIM_HORIZON;
	TF_CHECK_OK(lease_coord_new(&cfg, w->store, &fx.clock, &src, &w->coord, &info));
	atomic_store(&w->stop, false);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&w->thread, NULL, worker_main, w), 0);
	w->thread_running = true;
}

static void worker_stop(int i)
{
	struct worker *w = &fx.w[i];

	if (w->thread_running) {
		lease_coord_release_all(w->coord, NULL);
		atomic_store(&w->stop, true);
		pthread_join(w->thread, NULL);
		w->thread_running = false;
	}
	lease_coord_free(w->coord);
	lease_shards_kinesis_free(w->shards);
	lease_store_free(w->store);
	w->coord = NULL;
	w->shards = NULL;
	w->store = NULL;
}

/* ---------------------------------------------------------------- stream */

static void list_shards(struct kinesis_shard **ret, size_t *ret_n)
{
	struct kl_errinfo info;

	TF_CHECK_OK(kinesis_list_shards(&fx.kin, fx.stream, NULL, ret, ret_n, &info));
}

/* The id of the child of parent (and of adjacent, if given); for a split,
 * nth 0 is the lower half of the hash range and 1 the upper. */
static void find_child(const char *parent, const char *adjacent, int nth, char *out)
{
	struct kinesis_shard *v = NULL, *pick[2] = { NULL, NULL };
	struct kinesis_hash_key a, b;
	size_t n = 0;
	int seen = 0;

	out[0] = '\0';
	list_shards(&v, &n);
	for (size_t i = 0; i < n && seen < 2; i++) {
		if (strcmp(v[i].parent_shard_id, parent) != 0)
			continue;
		if (adjacent && strcmp(v[i].adjacent_parent_shard_id, adjacent) != 0)
			continue;
		pick[seen++] = &v[i];
	}
	if (seen == 2) {
		CU_ASSERT_EQUAL(kinesis_hash_key_parse(pick[0]->starting_hash_key, &a), KL_OK);
		CU_ASSERT_EQUAL(kinesis_hash_key_parse(pick[1]->starting_hash_key, &b), KL_OK);
		if (kinesis_hash_key_cmp(&a, &b) > 0) {
			struct kinesis_shard *t = pick[0];

			pick[0] = pick[1];
			pick[1] = t;
		}
	}
	if (nth < seen)
		snprintf(out, KINESIS_SHARD_ID_MAX + 1, "%s", pick[nth]->shard_id);
	free(v);
	CU_ASSERT_FATAL(out[0] != '\0');
}

static void shard_range(const char *id, char *start, char *end)
{
	struct kinesis_shard *v = NULL;
	size_t n = 0;

	start[0] = end[0] = '\0';
	list_shards(&v, &n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].shard_id, id) == 0) {
			snprintf(start, KINESIS_HASH_KEY_MAX + 1, "%s", v[i].starting_hash_key);
			snprintf(end, KINESIS_HASH_KEY_MAX + 1, "%s", v[i].ending_hash_key);
		}
	free(v);
	CU_ASSERT_FATAL(start[0] != '\0');
}

/* Puts count records into shard id (ExplicitHashKey = its first key). */
static void put_into(const char *id, int count)
{
	struct kinesis_put_entry e[20];
	char data[20][16], start[KINESIS_HASH_KEY_MAX + 1], end[KINESIS_HASH_KEY_MAX + 1];
	struct kinesis_put_results *res = NULL;
	struct kl_errinfo info;

	CU_ASSERT_FATAL(count <= 20 && fx.put + count <= MAX_RECORDS);
	shard_range(id, start, end);
	for (int i = 0; i < count; i++) {
		snprintf(data[i], sizeof(data[i]), "rec-%d", fx.put + i);
		e[i].data = data[i];
		e[i].data_len = strlen(data[i]);
		e[i].partition_key = "pk";
		e[i].explicit_hash_key = start;
	}
	TF_CHECK_OK(kinesis_put_records(&fx.kin, fx.stream, e, (size_t)count, &res, &info));
	CU_ASSERT_EQUAL(res->failed_count, 0);
	for (int i = 0; i < count; i++)
		CU_ASSERT_STRING_EQUAL(res->r[i].shard_id, id);
	free(res);
	fx.put += count;
}

static void split(const char *id)
{
	char start[KINESIS_HASH_KEY_MAX + 1], end[KINESIS_HASH_KEY_MAX + 1];
	char mid_text[KINESIS_HASH_KEY_MAX + 1];
	struct kinesis_hash_key a, b, mid;
	struct kl_errinfo info;

	shard_range(id, start, end);
	CU_ASSERT_EQUAL_FATAL(kinesis_hash_key_parse(start, &a), KL_OK);
	CU_ASSERT_EQUAL_FATAL(kinesis_hash_key_parse(end, &b), KL_OK);
	kinesis_hash_key_mid(&a, &b, &mid);
	kinesis_hash_key_format(&mid, mid_text);
	TF_CHECK_OK(kinesis_split_shard(&fx.kin, fx.stream, id, mid_text, &info));
	TF_CHECK_OK(kinesis_wait_active(&fx.kin, fx.stream, 10000, NULL, &info));
}

/* ---------------------------------------------------------------- bookkeeping */

static bool in_list(char list[][KINESIS_SHARD_ID_MAX + 1], int n, const char *id)
{
	for (int i = 0; i < n; i++)
		if (strcmp(list[i], id) == 0)
			return true;
	return false;
}

static json_object *raw_get(const char *key)
{
	json_object *k = ddb_key_s(LEASE_ATTR_KEY, key), *item = NULL;
	struct kl_errinfo info;

	TF_CHECK_OK(ddb_get_item(&fx.ddb, fx.table, k, true, &item, &info));
	json_object_put(k);
	return item;
}

/* A child may start only when each parent reached SHARD_END (seen by our
 * consumer, and in the table unless already deleted). */
static void check_parents(const struct lease_grant *g)
{
	for (size_t i = 0; i < g->parents.n; i++) {
		const char *p = g->parents.v[i];
		json_object *item = raw_get(p);
		const char *cp = item ? ddb_get_s(item, LEASE_ATTR_CHECKPOINT) : NULL;

		if (!in_list(fx.ended, fx.n_ended, p) || (item && (!cp || strcmp(cp, "SHARD_END") != 0))) {
			fprintf(stderr, "\n  '%s' processable while parent '%s' is at %s\n", g->key, p,
				cp ? cp : "(deleted)");
			fx.parent_violations++;
		}
		json_object_put(item);
	}
}

/* Record data "rec-<n>" committed once more. */
static void commit_record(const uint8_t *data, size_t len)
{
	char text[16];
	int n;

	CU_ASSERT_FATAL(len < sizeof(text));
	memcpy(text, data, len);
	text[len] = '\0';
	CU_ASSERT_FATAL(sscanf(text, "rec-%d", &n) == 1 && n >= 0 && n < MAX_RECORDS);
	if (fx.committed[n]++)
		fx.duplicates++;
}

static int committed_total(void)
{
	int t = 0;

	for (int i = 0; i < fx.put; i++)
		t += fx.committed[i] > 0;
	return t;
}

static void consumer_drop(struct consumer *c)
{
	free(c->iterator);
	memset(c, 0, sizeof(*c));
}

static struct consumer *consumer_find(int worker, uint64_t token)
{
	for (int i = 0; i < MAX_CONSUMERS; i++)
		if (fx.cons[i].used && fx.cons[i].worker == worker && fx.cons[i].token == token)
			return &fx.cons[i];
	return NULL;
}

/* Starts a consumer for a processable grant: position from the checkpoint. */
static void consumer_start(int worker, const struct lease_grant *g)
{
	struct kinesis_position pos = { 0 };
	struct consumer *c = NULL;
	struct kl_errinfo info;

	for (int i = 0; i < MAX_CONSUMERS && !c; i++)
		if (!fx.cons[i].used)
			c = &fx.cons[i];
	CU_ASSERT_FATAL(c != NULL);
	if (!in_list(fx.started, fx.n_started, g->key)) {
		check_parents(g);
		CU_ASSERT_FATAL(fx.n_started < MAX_SHARDS);
		snprintf(fx.started[fx.n_started++], KINESIS_SHARD_ID_MAX + 1, "%s", g->key);
	}
	switch (g->checkpoint.kind) {
	case LEASE_ESN_SEQ:
		pos.type = KINESIS_ITER_AFTER_SEQUENCE_NUMBER;
		pos.sequence_number = g->checkpoint.seq;
		break;
	case LEASE_ESN_TRIM_HORIZON:
		pos.type = KINESIS_ITER_TRIM_HORIZON;
		break;
	default:
		CU_FAIL("unexpected checkpoint kind");
		return;
	}
	c->used = true;
	c->worker = worker;
	c->token = g->token;
	snprintf(c->key, sizeof(c->key), "%s", g->key);
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.kin, fx.stream, g->key, &pos, &c->iterator, &info));
}

/* The parent's lease as KCL leaves it at shard end. */
static void check_ended_item(const char *key, const struct lease_shard_list *kids)
{
	json_object *item = raw_get(key);
	const char **strs = NULL;
	size_t n = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(item);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, LEASE_ATTR_CHECKPOINT), "SHARD_END");
	CU_ASSERT_FALSE(ddb_has(item, LEASE_ATTR_OWNER)); /* released */
	CU_ASSERT_EQUAL(ddb_get_ss(item, LEASE_ATTR_CHILDREN, &strs, &n), KL_OK);
	CU_ASSERT_EQUAL(n, kids->n);
	free(strs);
	json_object_put(item);
	for (size_t i = 0; i < kids->n; i++) {
		struct lease l;
		enum kl_err err;

		item = raw_get(kids->v[i].shard_id);
		CU_ASSERT_PTR_NOT_NULL_FATAL(item);
		err = lease_ddb_from_item(item, &l, NULL);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		CU_ASSERT(lease_strset_has(&l.parents, key));
		CU_ASSERT_EQUAL(l.parents.n, kids->v[i].adjacent_parent_id ? 2 : 1);
		CU_ASSERT_STRING_EQUAL(l.starting_hash_key, kids->v[i].starting_hash_key);
		CU_ASSERT_STRING_EQUAL(l.ending_hash_key, kids->v[i].ending_hash_key);
		lease_done(&l);
		json_object_put(item);
	}
}

/* One step of consumer c: a GetRecords and its checkpoint, or shard end. */
static void consumer_step(struct consumer *c)
{
	struct lease_coord *coord = fx.w[c->worker].coord;
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;
	enum kl_err err;

	if (fx.hold && strcmp(fx.hold, c->key) == 0)
		return;
	err = lease_coord_check(coord, c->key, c->token, NULL);
	if (err == KL_ESTATE)
		return;
	if (err != KL_OK) {
		fx.lost++;
		consumer_drop(c);
		return;
	}
	TF_CHECK_OK(kinesis_get_records(&fx.kin, c->iterator, 100, &r, &info));
	if (r->n_records) {
		struct lease_esn last;

		CU_ASSERT_EQUAL(lease_esn_parse(r->records[r->n_records - 1].sequence_number, 0, &last,
						NULL), KL_OK);
		/* Same checkpoint again after an unknown outcome, never another. */
		for (int tries = 0; tries < 5; tries++) {
			err = lease_coord_checkpoint(coord, c->key, c->token, &last, &info);
			if (!kl_err_retryable(err))
				break;
		}
		if (err == KL_OK) {
			for (size_t i = 0; i < r->n_records; i++)
				commit_record(r->records[i].data, r->records[i].data_len);
		} else {
			/* Lost: the batch is not ours to commit. */
			CU_ASSERT_EQUAL(err, KL_ELEASE_LOST);
			fx.lost++;
			kinesis_records_free(r);
			consumer_drop(c);
			return;
		}
	}
	free(c->iterator);
	c->iterator = r->next_iterator ? strdup(r->next_iterator) : NULL;
	kinesis_records_free(r);
	if (c->iterator)
		return;

	/* Shard end: kinesalite sends no ChildShards; ListShards knows them. */
	{
		struct lease_shard_list kids = { NULL, 0 };

		TF_CHECK_OK(lease_shards_kinesis_children(fx.children_src, c->key, &kids, &info));
		CU_ASSERT_FATAL(kids.n >= 1);
		err = lease_coord_shard_end(coord, c->key, c->token, kids.v, kids.n, &info);
		if (err == KL_OK) {
			CU_ASSERT_FATAL(fx.n_ended < MAX_SHARDS);
			snprintf(fx.ended[fx.n_ended++], KINESIS_SHARD_ID_MAX + 1, "%s", c->key);
			check_ended_item(c->key, &kids);
			consumer_drop(c);
		} else if (err == KL_ESTATE) {
			/* A merge whose co-parent has no lease yet: start again from
			 * the checkpoint on a later pass and retry. */
			fx.merge_waits++;
			consumer_drop(c);
		} else {
			CU_ASSERT_EQUAL(err, KL_ELEASE_LOST);
			fx.lost++;
			consumer_drop(c);
		}
		lease_shard_list_done(&kids);
	}
}

/* One pass of the consumer layer over both workers. */
static void consume_pass(void)
{
	for (int w = 0; w < N_WORKERS; w++) {
		struct lease_grant *g;
		size_t n;

		if (!fx.w[w].coord || lease_coord_grants(fx.w[w].coord, &g, &n) != KL_OK)
			continue;
		for (size_t k = 0; k < n; k++) {
			if (g[k].state == LEASE_STATE_WAITING_PARENTS)
				fx.waiting_seen++;
			if (g[k].processable && !consumer_find(w, g[k].token))
				consumer_start(w, &g[k]);
		}
		lease_grants_free(g, n);
	}
	for (int i = 0; i < MAX_CONSUMERS; i++)
		if (fx.cons[i].used)
			consumer_step(&fx.cons[i]);
}

/* Runs the consumers until every record put so far is committed. */
static bool consume_until_committed(int64_t timeout_ms)
{
	int64_t deadline = kl_mono_ms() + timeout_ms;

	while (committed_total() < fx.put && kl_mono_ms() < deadline) {
		consume_pass();
		kl_sleep_ms(20);
	}
	return committed_total() == fx.put;
}

/* ---------------------------------------------------------------- the test */

#define SID (KINESIS_SHARD_ID_MAX + 1)
static char s0[SID], s1[SID], s2[SID], s3[SID], s4[SID], s5[SID], s6[SID];

static void test_stream_and_fleet(void)
{
	struct kinesis_shard *v = NULL;
	struct kl_errinfo info;
	size_t n = 0;

	TF_CHECK_OK(kinesis_create_stream(&fx.kin, fx.stream, 2, &info));
	TF_CHECK_OK(kinesis_wait_active(&fx.kin, fx.stream, 10000, NULL, &info));
	list_shards(&v, &n);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	snprintf(s0, sizeof(s0), "%s", v[0].shard_id);
	snprintf(s1, sizeof(s1), "%s", v[1].shard_id);
	free(v);
	put_into(s0, 10);
	put_into(s1, 10);

	worker_start(0);
	worker_start(1);
	/* Empty table: the leader creates s0 and s1 at TRIM_HORIZON. */
	CU_ASSERT_FATAL(consume_until_committed(15000));
	CU_ASSERT_EQUAL(fx.duplicates, 0);
}

/* Is key's lease held somewhere in state waiting-on-parents? */
static bool seen_waiting(const char *key)
{
	bool waiting = false;

	for (int w = 0; w < N_WORKERS; w++) {
		struct lease_grant *g;
		size_t n;

		if (lease_coord_grants(fx.w[w].coord, &g, &n) != KL_OK)
			continue;
		for (size_t k = 0; k < n; k++)
			if (strcmp(g[k].key, key) == 0 && g[k].state == LEASE_STATE_WAITING_PARENTS)
				waiting = true;
		lease_grants_free(g, n);
	}
	return waiting;
}

/*
 * s0 is split into s2 + s3 and s3 merged with s1 into s4 while s0's
 * consumer is slow. s1 ends first: its merge child cannot be created until
 * the co-parent s3 has a lease (which s0's end creates), so shard end waits.
 * Then s3's consumer is the slow one: s4's lease exists and is held, but
 * waits on its parents until s3 is SHARD_END too.
 */
static void test_split_merge_slow_parents(void)
{
	struct kl_errinfo info;
	int64_t deadline;
	json_object *item;

	fx.hold = s0;
	split(s0);
	find_child(s0, NULL, 0, s2);
	find_child(s0, NULL, 1, s3);
	TF_CHECK_OK(kinesis_merge_shards(&fx.kin, fx.stream, s3, s1, &info));
	TF_CHECK_OK(kinesis_wait_active(&fx.kin, fx.stream, 10000, NULL, &info));
	find_child(s3, s1, 0, s4);
	put_into(s2, 10);
	put_into(s4, 10);

	deadline = kl_mono_ms() + 10000;
	while (fx.merge_waits < 3 && kl_mono_ms() < deadline) {
		consume_pass();
		kl_sleep_ms(20);
	}
	CU_ASSERT(fx.merge_waits >= 3);
	item = raw_get(s4);
	CU_ASSERT_PTR_NULL(item); /* no merge child without both parents' leases */
	json_object_put(item);
	CU_ASSERT_FALSE(in_list(fx.ended, fx.n_ended, s1));

	fx.hold = s3;
	deadline = kl_mono_ms() + 10000;
	while (!seen_waiting(s4) && kl_mono_ms() < deadline) {
		consume_pass();
		kl_sleep_ms(20);
	}
	CU_ASSERT(seen_waiting(s4));
	CU_ASSERT(in_list(fx.ended, fx.n_ended, s0) && in_list(fx.ended, fx.n_ended, s1));
	CU_ASSERT_FALSE(in_list(fx.started, fx.n_started, s4));

	fx.hold = NULL;
	CU_ASSERT_FATAL(consume_until_committed(15000));
	CU_ASSERT(in_list(fx.ended, fx.n_ended, s3));
	CU_ASSERT(in_list(fx.started, fx.n_started, s2) && in_list(fx.started, fx.n_started, s4));
}

static void test_split_child(void)
{
	split(s2);
	find_child(s2, NULL, 0, s5);
	find_child(s2, NULL, 1, s6);
	put_into(s5, 10);
	put_into(s6, 10);
	put_into(s4, 5);
	CU_ASSERT_FATAL(consume_until_committed(15000));
	CU_ASSERT(in_list(fx.ended, fx.n_ended, s2));
	CU_ASSERT(in_list(fx.started, fx.n_started, s5) && in_list(fx.started, fx.n_started, s6));
}

/* Finished parents go once their children checkpointed; what stays is
 * exactly the open shards' leases. */
static void test_gc_and_totals(void)
{
	const char *gone[] = { s0, s1, s2, s3 };
	const char *kept[] = { s4, s5, s6 };
	int64_t deadline = kl_mono_ms() + 15000;
	bool all_gone = false;
	json_object *items = NULL;
	struct kl_errinfo info;

	while (!all_gone && kl_mono_ms() < deadline) {
		consume_pass();
		all_gone = true;
		for (size_t i = 0; i < KL_ARRAY_LEN(gone); i++) {
			json_object *item = raw_get(gone[i]);

			if (item)
				all_gone = false;
			json_object_put(item);
		}
		kl_sleep_ms(50);
	}
	CU_ASSERT(all_gone);
	TF_CHECK_OK(ddb_scan_all(&fx.ddb, fx.table, NULL, 0, &items, &info));
	CU_ASSERT_EQUAL(json_object_array_length(items), KL_ARRAY_LEN(kept));
	for (size_t i = 0; i < KL_ARRAY_LEN(kept); i++) {
		json_object *item = raw_get(kept[i]);
		const char *cp = item ? ddb_get_s(item, LEASE_ATTR_CHECKPOINT) : NULL;

		CU_ASSERT(cp && lease_dec_valid(cp)); /* checkpointed past its start */
		json_object_put(item);
	}
	json_object_put(items);

	printf("\n    %d records, %d committed, %d duplicates; shards ended: %d; "
	       "merge waits for a co-parent lease: %d; waiting-on-parents grants seen: %d; "
	       "lost: %d", fx.put, committed_total(), fx.duplicates, fx.n_ended, fx.merge_waits,
	       fx.waiting_seen, fx.lost);
	CU_ASSERT_EQUAL(committed_total(), fx.put);
	CU_ASSERT_EQUAL(fx.duplicates, 0);
	CU_ASSERT_EQUAL(fx.parent_violations, 0);
	CU_ASSERT_EQUAL(fx.n_ended, 4);
	CU_ASSERT_EQUAL(fx.n_started, 7);
}

/*
 * A fleet that starts on the stream as it is now (7 shards, 4 closed), on
 * a new table: at TRIM_HORIZON its leases start at the shards open at the
 * trim horizon, s0 and s1, although both are closed; at LATEST at the open
 * shards s4, s5 and s6.
 */
static void test_late_start(void)
{
	for (int pos = 0; pos < 2; pos++) {
		struct lease_store_ddb_config dcfg = { 0 };
		struct lease_shards_kinesis_config scfg = { 0 };
		struct lease_shards_kinesis *shards = NULL;
		struct lease_store *store = NULL;
		struct lease_coord *coord = NULL;
		struct lease_shard_source src;
		struct lease_coord_config cfg;
		struct lease_list list = { NULL, 0, 0 };
		struct kl_errinfo info;
		char table[80];
		int64_t deadline;

		snprintf(table, sizeof(table), "%s-late%d", fx.table, pos);
		dcfg.table = table;
		dcfg.aws = &fx.dc;
		dcfg.creds = fx.creds;
		TF_CHECK_OK(lease_store_ddb_new(&dcfg, &store, &info));
		TF_CHECK_OK(lease_store_ddb_ensure_table(store, 20000, &info));
		scfg.stream = fx.stream;
		scfg.aws = &fx.kc;
		scfg.creds = fx.creds;
		TF_CHECK_OK(lease_shards_kinesis_new(&scfg, &shards, &info));
		lease_shards_kinesis_source(shards, &src);
		memset(&cfg, 0, sizeof(cfg));
		cfg.worker_id = "late";
		cfg.failover_ms = FAILOVER_MS;
		cfg.initial_position = pos ? LEASE_INITIAL_LATEST : LEASE_INITIAL_TRIM_HORIZON;
		TF_CHECK_OK(lease_coord_new(&cfg, store, &fx.clock, &src, &coord, &info));
		deadline = kl_mono_ms() + 5000;
		do {
			lease_coord_tick(coord, NULL);
			lease_list_done(&list);
			TF_CHECK_OK(lease_store_scan(store, &list, &info));
			kl_sleep_ms(20);
		} while (list.n < 2 && kl_mono_ms() < deadline);
		lease_list_sort(&list);
		if (pos == 0) {
			CU_ASSERT_EQUAL(list.n, 2);
			CU_ASSERT(lease_list_find(&list, s0) && lease_list_find(&list, s1));
		} else {
			CU_ASSERT_EQUAL(list.n, 3);
			CU_ASSERT(lease_list_find(&list, s4) && lease_list_find(&list, s5) &&
				  lease_list_find(&list, s6));
		}
		for (size_t i = 0; i < list.n; i++)
			CU_ASSERT_EQUAL(list.items[i].checkpoint.kind,
					pos ? LEASE_ESN_LATEST : LEASE_ESN_TRIM_HORIZON);
		lease_list_done(&list);
		lease_coord_release_all(coord, NULL);
		lease_coord_free(coord);
		lease_shards_kinesis_free(shards);
		lease_store_free(store);
		ddb_delete_table(&fx.ddb, table, &info);
	}
}

static void teardown(void)
{
	struct kl_errinfo info;

	for (int i = 0; i < N_WORKERS; i++)
		worker_stop(i);
	for (int i = 0; i < MAX_CONSUMERS; i++)
		consumer_drop(&fx.cons[i]);
	kinesis_delete_stream(&fx.kin, fx.stream, &info);
	ddb_delete_table(&fx.ddb, fx.table, &info);
	lease_shards_kinesis_free(fx.children_src);
	aws_client_done(&fx.kin);
	aws_client_done(&fx.ddb);
	tf_aws_done(fx.creds);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_stream_and_fleet),
		KL_TEST(test_split_merge_slow_parents),
		KL_TEST(test_split_child),
		KL_TEST(test_gc_and_totals),
		KL_TEST(test_late_start),
		{ 0 },
	};
	int rc;

	if (setup() != 0) {
		fprintf(stderr, "integ_reshard: setup failed\n");
		return 1;
	}
	rc = kl_test_run("integ_reshard", t);
	teardown();
	return rc;
}
