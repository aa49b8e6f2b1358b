/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_lease.c: unit tests of the lease library except the taker table and
 * the long simulation: ESN order, the record, the in-memory store's
 * conditional semantics and fault injection, shard sync planning (KCL's
 * own worked example), hash-range audits, GC and leader rules, and short
 * coordinator scenarios on a fake clock (take, renew, spurious failures,
 * steal with handover, release, lost checkpoints, two-phase checkpoints,
 * resharding, status).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store.h"
#include "lease_store_mem.h"
#include "lease_sync.h"
#include "testutil.h"
#include "util.h"

#define F 10000 /* default failover */

/* ---------------------------------------------------------------- helpers */

static struct lease_esn seq(const char *s, uint64_t sub)
{
	struct lease_esn e;

	CU_ASSERT_EQUAL_FATAL(lease_esn_parse(s, sub, &e, NULL), KL_OK);
	return e;
}

struct env {
	struct lease_fake_clock fc;
	struct lease_clock clock;
	struct lease_mem_table *table;
};

struct worker {
	char id[16];
	struct lease_store *store;
	struct lease_coord *coord;
};

static void env_init(struct env *e)
{
	lease_clock_fake(&e->fc, 1000000, &e->clock);
	e->table = lease_mem_table_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(e->table);
}

static void env_done(struct env *e)
{
	lease_mem_table_free(e->table);
}

static void worker_start_cfg(struct env *e, struct worker *w, const char *id,
			     const struct lease_coord_config *base,
			     const struct lease_shard_source *src)
{
	struct lease_coord_config cfg;

	if (base)
		cfg = *base;
	else
		memset(&cfg, 0, sizeof(cfg));
	snprintf(w->id, sizeof(w->id), "%s", id);
	cfg.worker_id = w->id;
	if (!cfg.seed)
		cfg.seed = (uint64_t)(unsigned char)id[0] * 7919 + 1;
	w->store = lease_store_mem_new(e->table, &e->clock);
	CU_ASSERT_PTR_NOT_NULL_FATAL(w->store);
	CU_ASSERT_EQUAL_FATAL(lease_coord_new(&cfg, w->store, &e->clock, src, &w->coord, NULL), KL_OK);
}

static void worker_start(struct env *e, struct worker *w, const char *id)
{
	worker_start_cfg(e, w, id, NULL, NULL);
}

/* kill -9: no writes. */
static void worker_crash(struct worker *w)
{
	lease_coord_free(w->coord);
	lease_store_free(w->store);
	w->coord = NULL;
	w->store = NULL;
}

/* Advances time by ms in 100 ms steps, ticking every running worker. */
static void run(struct env *e, struct worker *ws, size_t n, int64_t ms)
{
	for (int64_t t = 0; t < ms; t += 100) {
		lease_fake_clock_advance(&e->fc, 100);
		for (size_t i = 0; i < n; i++)
			if (ws[i].coord)
				lease_coord_tick(ws[i].coord, NULL);
	}
}

static void put_lease(struct env *e, const char *key, enum lease_esn_kind kind, const char *parent1,
		      const char *parent2)
{
	struct lease l;

	lease_init(&l);
	CU_ASSERT_EQUAL(lease_set_str(&l.key, key), KL_OK);
	l.checkpoint = lease_esn_sentinel(kind);
	if (parent1)
		CU_ASSERT_EQUAL(lease_strset_add(&l.parents, parent1), KL_OK);
	if (parent2)
		CU_ASSERT_EQUAL(lease_strset_add(&l.parents, parent2), KL_OK);
	CU_ASSERT_EQUAL(lease_mem_table_put(e->table, &l), KL_OK);
	lease_done(&l);
}

/* Token of the grant for key held by w, or 0. */
static uint64_t token_of(struct worker *w, const char *key, enum lease_state *ret_state)
{
	struct lease_grant *g;
	size_t n;
	uint64_t token = 0;

	if (!w->coord)
		return 0;
	CU_ASSERT_EQUAL_FATAL(lease_coord_grants(w->coord, &g, &n), KL_OK);
	for (size_t i = 0; i < n; i++)
		if (strcmp(g[i].key, key) == 0) {
			token = g[i].token;
			if (ret_state)
				*ret_state = g[i].state;
		}
	lease_grants_free(g, n);
	return token;
}

static size_t grant_count(struct worker *w)
{
	struct lease_grant *g;
	size_t n;

	CU_ASSERT_EQUAL_FATAL(lease_coord_grants(w->coord, &g, &n), KL_OK);
	lease_grants_free(g, n);
	return n;
}

static bool processable(struct worker *w, const char *key)
{
	uint64_t t = token_of(w, key, NULL);

	return t && lease_coord_check(w->coord, key, t, NULL) == KL_OK;
}

static struct lease read_item(struct env *e, const char *key)
{
	struct lease l;

	lease_init(&l);
	CU_ASSERT_EQUAL(lease_mem_table_read(e->table, key, &l), KL_OK);
	return l;
}

/* ---------------------------------------------------------------- ESN, record */

static void test_esn_order(void)
{
	struct lease_esn at = lease_esn_sentinel(LEASE_ESN_AT_TIMESTAMP);
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct lease_esn la = lease_esn_sentinel(LEASE_ESN_LATEST);
	struct lease_esn end = lease_esn_sentinel(LEASE_ESN_SHARD_END);
	struct lease_esn small = seq("9", 0), big = seq("49590338271490256608559692538361571095921575989136588898", 0);
	struct lease_esn big_sub = seq("49590338271490256608559692538361571095921575989136588898", 3);
	struct lease_esn bigger = seq("49590338271490256608559692538361571095921575989136588899", 0);
	struct lease_esn longer = seq("100000000000000000000000000000000000000000000000000000000", 0);
	struct lease_esn zeros = seq("0009", 0), e;

	CU_ASSERT(lease_esn_cmp(&at, &th) < 0);
	CU_ASSERT(lease_esn_cmp(&th, &la) < 0);
	CU_ASSERT(lease_esn_cmp(&la, &small) < 0);
	CU_ASSERT(lease_esn_cmp(&small, &big) < 0);   /* shorter is smaller */
	CU_ASSERT(lease_esn_cmp(&big, &big_sub) < 0); /* then sub-sequence */
	CU_ASSERT(lease_esn_cmp(&big_sub, &bigger) < 0);
	CU_ASSERT(lease_esn_cmp(&bigger, &longer) < 0);
	CU_ASSERT(lease_esn_cmp(&longer, &end) < 0);
	CU_ASSERT(lease_esn_cmp(&zeros, &small) == 0); /* leading zeros do not count */
	CU_ASSERT_STRING_EQUAL(lease_esn_str(&zeros), "9");
	CU_ASSERT(lease_esn_cmp(&end, &end) == 0);
	CU_ASSERT(lease_esn_cmp(&end, &at) > 0);

	CU_ASSERT_EQUAL(lease_esn_parse("SHARD_END", 0, &e, NULL), KL_OK);
	CU_ASSERT_EQUAL(e.kind, LEASE_ESN_SHARD_END);
	CU_ASSERT_STRING_EQUAL(lease_esn_str(&e), "SHARD_END");
	CU_ASSERT_EQUAL(lease_esn_parse("AT_TIMESTAMP", 0, &e, NULL), KL_OK);
	CU_ASSERT_STRING_EQUAL(lease_esn_str(&e), "AT_TIMESTAMP");
	CU_ASSERT_EQUAL(lease_esn_parse("12a", 0, &e, NULL), KL_EINVAL);
	CU_ASSERT_EQUAL(lease_esn_parse("", 0, &e, NULL), KL_EINVAL);
	CU_ASSERT_EQUAL(lease_esn_parse("trim_horizon", 0, &e, NULL), KL_EINVAL);
	{
		char too_long[200];

		memset(too_long, '7', 150);
		too_long[150] = 0;
		CU_ASSERT_EQUAL(lease_esn_parse(too_long, 0, &e, NULL), KL_EINVAL);
	}
}

static void test_dec(void)
{
	char out[64];

	CU_ASSERT(lease_dec_cmp("10", "9") > 0);
	CU_ASSERT(lease_dec_cmp("010", "10") == 0);
	CU_ASSERT(lease_dec_cmp("0", "000") == 0);
	CU_ASSERT_EQUAL(lease_dec_inc("199", out, sizeof(out)), KL_OK);
	CU_ASSERT_STRING_EQUAL(out, "200");
	CU_ASSERT_EQUAL(lease_dec_inc("999", out, sizeof(out)), KL_OK);
	CU_ASSERT_STRING_EQUAL(out, "1000");
	CU_ASSERT_EQUAL(lease_dec_inc("0", out, sizeof(out)), KL_OK);
	CU_ASSERT_STRING_EQUAL(out, "1");
	CU_ASSERT_EQUAL(lease_dec_inc(LEASE_HASH_KEY_MAX, out, sizeof(out)), KL_OK);
	CU_ASSERT_STRING_EQUAL(out, "340282366920938463463374607431768211456");
	CU_ASSERT_EQUAL(lease_dec_inc("99", out, 3), KL_EINVAL);
	CU_ASSERT_EQUAL(lease_dec_inc("x", out, sizeof(out)), KL_EINVAL);
}

static void test_record_copy(void)
{
	struct lease a, b;

	lease_init(&a);
	CU_ASSERT_EQUAL(lease_set_str(&a.key, "shardId-000000000001"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_str(&a.owner, "w1"), KL_OK);
	a.counter = 42;
	a.checkpoint = seq("123", 4);
	a.pending = seq("456", 0);
	CU_ASSERT_EQUAL(lease_set_pending_state(&a, "\x00\x01\x02", 3), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&a.parents, "p1"), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&a.parents, "p1"), KL_OK); /* a set */
	CU_ASSERT_EQUAL(a.parents.n, 1);
	CU_ASSERT_EQUAL(lease_set_extra(&a, "throughputKBps", "{\"N\":\"1.5\"}"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_extra(&a, "throughputKBps", "{\"N\":\"2.5\"}"), KL_OK);
	CU_ASSERT_EQUAL(a.n_extra, 1);
	CU_ASSERT_EQUAL(lease_copy(&b, &a), KL_OK);
	lease_done(&a);
	CU_ASSERT_STRING_EQUAL(b.key, "shardId-000000000001");
	CU_ASSERT_EQUAL(b.counter, 42);
	CU_ASSERT_EQUAL(b.checkpoint.subseq, 4);
	CU_ASSERT_EQUAL(b.pending_state_len, 3);
	CU_ASSERT_EQUAL(b.pending_state[2], 2);
	CU_ASSERT(lease_strset_has(&b.parents, "p1"));
	CU_ASSERT_STRING_EQUAL(lease_get_extra(&b, "throughputKBps"), "{\"N\":\"2.5\"}");
	lease_done(&b);
	lease_done(NULL);
	lease_free(NULL);
}

/* ---------------------------------------------------------------- memory store */

static void test_store_conditions(void)
{
	struct env e;
	struct lease_store *s;
	struct lease l, got;
	struct lease_list list;
	struct lease_esn cp = seq("100", 0), pend = seq("200", 1);
	struct lease_strset kids = { NULL, 0 };

	env_init(&e);
	s = lease_store_mem_new(e.table, &e.clock);
	lease_init(&l);
	lease_set_str(&l.key, "s1");
	l.checkpoint = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	CU_ASSERT_EQUAL(lease_store_create(s, &l, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_create(s, &l, NULL), KL_ECONFLICT);
	lease_done(&l);

	/* renew / take / release conditions on the counter (and owner) */
	CU_ASSERT_EQUAL(lease_store_renew(s, "s1", 1, "x", 0, NULL), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_take(s, "s1", 0, "w1", "sess1", 5, true, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_take(s, "s1", 0, "w2", "sess2", 5, true, NULL), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_renew(s, "s1", 1, "sess1", 7, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_release(s, "s1", 2, "w2", NULL), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_prepare(s, "s1", 2, "sess1", &pend, "st", 2, NULL), KL_OK);
	got = read_item(&e, "s1");
	CU_ASSERT_EQUAL(got.counter, 3);
	CU_ASSERT_STRING_EQUAL(got.owner, "w1");
	CU_ASSERT_EQUAL(got.owner_switches, 1);
	CU_ASSERT_EQUAL(got.heartbeat_ms, 7);
	CU_ASSERT_EQUAL(lease_esn_cmp(&got.pending, &pend), 0);
	CU_ASSERT_EQUAL(got.pending_state_len, 2);
	lease_done(&got);
	CU_ASSERT_EQUAL(lease_store_checkpoint(s, "s1", 3, "sess1", &cp, NULL), KL_OK);
	got = read_item(&e, "s1");
	CU_ASSERT_EQUAL(lease_esn_cmp(&got.checkpoint, &cp), 0);
	CU_ASSERT_EQUAL(got.pending.kind, LEASE_ESN_NONE);
	CU_ASSERT_PTR_NULL(got.pending_state);
	CU_ASSERT_EQUAL(got.owner_switches, 0);
	lease_done(&got);
	CU_ASSERT_EQUAL(lease_store_release(s, "s1", 4, "w1", NULL), KL_OK);
	got = read_item(&e, "s1");
	CU_ASSERT_PTR_NULL(got.owner);
	CU_ASSERT_EQUAL(got.counter, 5);
	lease_done(&got);

	/* update_meta: attribute_exists, no counter bump */
	lease_strset_add(&kids, "c1");
	lease_strset_add(&kids, "c2");
	CU_ASSERT_EQUAL(lease_store_update_meta(s, "nope", &kids, NULL, NULL, NULL), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_update_meta(s, "s1", &kids, "0", "99", NULL), KL_OK);
	got = read_item(&e, "s1");
	CU_ASSERT_EQUAL(got.counter, 5);
	CU_ASSERT_EQUAL(got.children.n, 2);
	CU_ASSERT_STRING_EQUAL(got.ending_hash_key, "99");
	lease_done(&got);
	lease_strset_done(&kids);

	/* conditional writes on a missing item fail the condition */
	CU_ASSERT_EQUAL(lease_store_renew(s, "nope", 0, "x", 0, NULL), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_get(s, "nope", &got, NULL), KL_ENOTFOUND);

	/* delete conditions on the counter */
	CU_ASSERT_EQUAL(lease_store_delete(s, "s1", 4, NULL), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_delete(s, "s1", 5, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_scan(s, &list, NULL), KL_OK);
	CU_ASSERT_EQUAL(list.n, 0);
	lease_list_done(&list);
	lease_store_free(s);
	env_done(&e);
}

/* Unknown attributes survive every write; other entity types are invisible. */
static void test_store_preserves_unknown(void)
{
	struct env e;
	struct lease_store *s;
	struct lease l, got;
	struct lease_list list;
	struct lease_esn cp = seq("5", 0);
	struct lease_strset kids = { NULL, 0 };

	env_init(&e);
	s = lease_store_mem_new(e.table, &e.clock);
	lease_init(&l);
	lease_set_str(&l.key, "s1");
	l.checkpoint = lease_esn_sentinel(LEASE_ESN_LATEST);
	lease_set_extra(&l, "throughputKBps", "{\"N\":\"12.5\"}");
	lease_set_extra(&l, "checkpointOwner", "{\"S\":\"old\"}");
	CU_ASSERT_EQUAL(lease_mem_table_put(e.table, &l), KL_OK);
	lease_done(&l);
	lease_init(&l);
	lease_set_str(&l.key, "Leader");
	lease_set_str(&l.entity_type, "LEADER");
	CU_ASSERT_EQUAL(lease_mem_table_put(e.table, &l), KL_OK);
	lease_done(&l);

	CU_ASSERT_EQUAL(lease_store_take(s, "s1", 0, "w", "ss", 1, true, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_renew(s, "s1", 1, "ss", 2, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_prepare(s, "s1", 2, "ss", &cp, NULL, 0, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_checkpoint(s, "s1", 3, "ss", &cp, NULL), KL_OK);
	lease_strset_add(&kids, "c");
	CU_ASSERT_EQUAL(lease_store_update_meta(s, "s1", &kids, NULL, NULL, NULL), KL_OK);
	lease_strset_done(&kids);
	CU_ASSERT_EQUAL(lease_store_release(s, "s1", 4, "w", NULL), KL_OK);
	got = read_item(&e, "s1");
	CU_ASSERT_EQUAL(got.n_extra, 2);
	CU_ASSERT_PTR_NOT_NULL(lease_get_extra(&got, "throughputKBps"));
	CU_ASSERT_STRING_EQUAL(lease_get_extra(&got, "checkpointOwner"), "{\"S\":\"old\"}");
	lease_done(&got);

	/* The Leader item is not a lease: not scanned, not found, not writable. */
	CU_ASSERT_EQUAL(lease_store_scan(s, &list, NULL), KL_OK);
	CU_ASSERT_EQUAL(list.n, 1);
	CU_ASSERT_STRING_EQUAL(list.items[0].key, "s1");
	lease_list_done(&list);
	CU_ASSERT_EQUAL(lease_store_get(s, "Leader", &got, NULL), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(lease_store_take(s, "Leader", 0, "w", "ss", 0, true, NULL), KL_ECONFLICT);
	lease_store_free(s);
	env_done(&e);
}

static void test_store_faults(void)
{
	struct env e;
	struct lease_store *s;
	struct lease_mem_faults f;
	struct lease_mem_stats st;
	struct lease got;
	int64_t t0;

	env_init(&e);
	put_lease(&e, "s1", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	s = lease_store_mem_new(e.table, &e.clock);
	memset(&f, 0, sizeof(f));
	f.partitioned = true;
	lease_store_mem_set_faults(s, &f);
	CU_ASSERT_EQUAL(lease_store_take(s, "s1", 0, "w", "x", 0, true, NULL), KL_ETIMEOUT);
	got = read_item(&e, "s1");
	CU_ASSERT_EQUAL(got.counter, 0); /* not applied */
	lease_done(&got);

	memset(&f, 0, sizeof(f));
	f.lost_reply_next = 1;
	f.latency_ms = 250;
	lease_store_mem_set_faults(s, &f);
	t0 = e.fc.mono_ms;
	CU_ASSERT_EQUAL(lease_store_take(s, "s1", 0, "w", "x", 0, true, NULL), KL_ETIMEOUT);
	CU_ASSERT_EQUAL(e.fc.mono_ms - t0, 250);
	got = read_item(&e, "s1");
	CU_ASSERT_EQUAL(got.counter, 1); /* applied, reply lost */
	lease_done(&got);

	memset(&f, 0, sizeof(f));
	f.ghost_conflict_next = 1;
	lease_store_mem_set_faults(s, &f);
	CU_ASSERT_EQUAL(lease_store_renew(s, "s1", 1, "x", 0, NULL), KL_ECONFLICT);
	got = read_item(&e, "s1");
	CU_ASSERT_EQUAL(got.counter, 2); /* applied, reported as a conflict */
	lease_done(&got);

	memset(&f, 0, sizeof(f));
	f.fail_next = 2;
	f.fail_err = KL_ETHROTTLED;
	lease_store_mem_set_faults(s, &f);
	CU_ASSERT_EQUAL(lease_store_renew(s, "s1", 2, "x", 0, NULL), KL_ETHROTTLED);
	CU_ASSERT_EQUAL(lease_store_renew(s, "s1", 2, "x", 0, NULL), KL_ETHROTTLED);
	CU_ASSERT_EQUAL(lease_store_renew(s, "s1", 2, "x", 0, NULL), KL_OK);
	lease_store_mem_get_stats(s, &st);
	CU_ASSERT_EQUAL(st.calls[LEASE_MEM_OP_RENEW], 4);
	CU_ASSERT_EQUAL(st.applied[LEASE_MEM_OP_RENEW], 2);
	CU_ASSERT_EQUAL(st.injected, 5);
	lease_store_free(s);
	env_done(&e);
}

/* ---------------------------------------------------------------- sync rules */

static struct lease_shard shard(const char *id, const char *p1, const char *p2, const char *start,
				bool open)
{
	struct lease_shard s;

	memset(&s, 0, sizeof(s));
	s.shard_id = (char *)id;
	s.parent_id = (char *)p1;
	s.adjacent_parent_id = (char *)p2;
	s.starting_seq = (char *)start;
	s.ending_seq = open ? NULL : (char *)"999999";
	return s;
}

static void plan_ids(const struct lease_shard *sh, size_t n, const char *const *leased, size_t nl,
		     enum lease_esn_kind initial, char *out, size_t outsz)
{
	struct lease_strset set = { NULL, 0 };
	struct lease_sync_plan plan;

	for (size_t i = 0; i < nl; i++)
		lease_strset_add(&set, leased[i]);
	CU_ASSERT_EQUAL_FATAL(lease_sync_plan(sh, n, &set, false, initial, &plan), KL_OK);
	out[0] = 0;
	for (size_t i = 0; i < plan.n; i++) {
		CU_ASSERT_EQUAL(plan.v[i].checkpoint.kind, initial);
		snprintf(out + strlen(out), outsz - strlen(out), "%s%s", i ? "," : "",
			 sh[plan.v[i].shard].shard_id);
	}
	lease_sync_plan_done(&plan);
	lease_strset_done(&set);
}

/*
 * The stream of KCL's HierarchicalShardSyncer comment: 0+1 -> 6, 2+3 -> 7,
 * 6+7 -> 8, 5 -> 9+10, 4 never changes; open: 4, 8, 9, 10. With leases on
 * 4, 5 and 7, LATEST creates 6 and TRIM_HORIZON/AT_TIMESTAMP create 0 and 1.
 */
static void test_sync_plan_kcl_example(void)
{
	struct lease_shard sh[] = {
		shard("0", NULL, NULL, "100", false), shard("1", NULL, NULL, "101", false),
		shard("2", NULL, NULL, "102", false), shard("3", NULL, NULL, "103", false),
		shard("4", NULL, NULL, "104", true), shard("5", NULL, NULL, "105", false),
		shard("6", "0", "1", "200", false), shard("7", "2", "3", "201", false),
		shard("8", "6", "7", "300", true), shard("9", "5", NULL, "301", true),
		shard("10", "5", NULL, "302", true),
	};
	const char *leased[] = { "4", "5", "7" };
	char got[64];

	plan_ids(sh, KL_ARRAY_LEN(sh), leased, 3, LEASE_ESN_LATEST, got, sizeof(got));
	CU_ASSERT_STRING_EQUAL(got, "6");
	plan_ids(sh, KL_ARRAY_LEN(sh), leased, 3, LEASE_ESN_TRIM_HORIZON, got, sizeof(got));
	CU_ASSERT_STRING_EQUAL(got, "0,1");
	plan_ids(sh, KL_ARRAY_LEN(sh), leased, 3, LEASE_ESN_AT_TIMESTAMP, got, sizeof(got));
	CU_ASSERT_STRING_EQUAL(got, "0,1");
	/* Everything leased: nothing to do. */
	{
		const char *all[] = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10" };

		plan_ids(sh, KL_ARRAY_LEN(sh), all, 11, LEASE_ESN_TRIM_HORIZON, got, sizeof(got));
		CU_ASSERT_STRING_EQUAL(got, "");
	}
	/* Only 4 leased. LATEST: the open shards that descend from nothing
	 * leased get leases themselves (8, 9, 10). TRIM_HORIZON: the oldest
	 * ancestors instead (0, 1, 2, 3, 5), in starting sequence order. */
	{
		const char *four[] = { "4" };

		plan_ids(sh, KL_ARRAY_LEN(sh), four, 1, LEASE_ESN_LATEST, got, sizeof(got));
		CU_ASSERT_STRING_EQUAL(got, "8,9,10");
		plan_ids(sh, KL_ARRAY_LEN(sh), four, 1, LEASE_ESN_TRIM_HORIZON, got, sizeof(got));
		CU_ASSERT_STRING_EQUAL(got, "0,1,2,3,5");
	}
}

static void test_sync_plan_empty_table(void)
{
	struct lease_shard sh[] = {
		shard("b", NULL, NULL, "20", true), shard("a", NULL, NULL, "10", true),
	};
	struct lease_sync_plan plan;

	CU_ASSERT_EQUAL_FATAL(lease_sync_plan(sh, 2, NULL, true, LEASE_ESN_LATEST, &plan), KL_OK);
	CU_ASSERT_EQUAL_FATAL(plan.n, 2);
	CU_ASSERT_STRING_EQUAL(sh[plan.v[0].shard].shard_id, "a"); /* by starting sequence */
	CU_ASSERT_EQUAL(plan.v[1].checkpoint.kind, LEASE_ESN_LATEST);
	lease_sync_plan_done(&plan);
}

static void test_hash_cover(void)
{
	char hole[64];
	struct lease_hash_range whole[] = { { "0", LEASE_HASH_KEY_MAX } };
	struct lease_hash_range halves[] = {
		{ "170141183460469231731687303715884105728", LEASE_HASH_KEY_MAX },
		{ "0", "170141183460469231731687303715884105727" },
	};
	struct lease_hash_range gap[] = {
		{ "0", "99" }, { "101", LEASE_HASH_KEY_MAX },
	};
	struct lease_hash_range overlap[] = {
		{ "0", "500" }, { "100", "200" }, { "400", LEASE_HASH_KEY_MAX },
	};
	struct lease_hash_range short_end[] = { { "0", "340282366920938463463374607431768211454" } };
	struct lease_hash_range late_start[] = { { "1", LEASE_HASH_KEY_MAX } };

	CU_ASSERT(lease_hash_ranges_cover(whole, 1, NULL, 0));
	CU_ASSERT(lease_hash_ranges_cover(halves, 2, NULL, 0));
	CU_ASSERT(lease_hash_ranges_cover(overlap, 3, NULL, 0));
	CU_ASSERT(!lease_hash_ranges_cover(gap, 2, hole, sizeof(hole)));
	CU_ASSERT_STRING_EQUAL(hole, "100");
	CU_ASSERT(!lease_hash_ranges_cover(short_end, 1, hole, sizeof(hole)));
	CU_ASSERT_STRING_EQUAL(hole, LEASE_HASH_KEY_MAX);
	CU_ASSERT(!lease_hash_ranges_cover(late_start, 1, hole, sizeof(hole)));
	CU_ASSERT_STRING_EQUAL(hole, "0");
	CU_ASSERT(!lease_hash_ranges_cover(NULL, 0, NULL, 0));
}

static void add_list(struct lease_list *list, const char *key, enum lease_esn_kind kind,
		     const char *parent, const char *child)
{
	struct lease l;

	lease_init(&l);
	lease_set_str(&l.key, key);
	l.checkpoint = kind == LEASE_ESN_SEQ ? seq("77", 0) : lease_esn_sentinel(kind);
	if (parent)
		lease_strset_add(&l.parents, parent);
	if (child)
		lease_strset_add(&l.children, child);
	CU_ASSERT_EQUAL(lease_list_add(list, &l), KL_OK);
	lease_done(&l);
}

static void test_gc_rule(void)
{
	struct lease_list list;

	lease_list_init(&list);
	add_list(&list, "p", LEASE_ESN_SHARD_END, "gp", "c");
	add_list(&list, "gp", LEASE_ESN_SHARD_END, NULL, "p");
	add_list(&list, "c", LEASE_ESN_TRIM_HORIZON, "p", NULL);
	lease_list_sort(&list);
	/* child not started; grandparent still there */
	CU_ASSERT(!lease_gc_may_delete(lease_list_find(&list, "p"), lease_gc_find_in_list, &list, NULL));
	/* gp: its child p is SHARD_END (past its start), no parents: deletable */
	CU_ASSERT(lease_gc_may_delete(lease_list_find(&list, "gp"), lease_gc_find_in_list, &list, NULL));
	lease_list_done(&list);

	lease_list_init(&list);
	add_list(&list, "p", LEASE_ESN_SHARD_END, "gp", "c");
	add_list(&list, "c", LEASE_ESN_SEQ, "p", NULL);
	lease_list_sort(&list);
	CU_ASSERT(lease_gc_may_delete(lease_list_find(&list, "p"), lease_gc_find_in_list, &list, NULL));
	/* an unfinished lease is never deleted */
	CU_ASSERT(!lease_gc_may_delete(lease_list_find(&list, "c"), lease_gc_find_in_list, &list, NULL));
	lease_list_done(&list);

	/* children unknown in the lease: hint needed; missing child blocks */
	lease_list_init(&list);
	add_list(&list, "p", LEASE_ESN_SHARD_END, NULL, NULL);
	add_list(&list, "c1", LEASE_ESN_SEQ, "p", NULL);
	lease_list_sort(&list);
	{
		struct lease_strset hint = { NULL, 0 };

		CU_ASSERT(!lease_gc_may_delete(lease_list_find(&list, "p"), lease_gc_find_in_list, &list, NULL));
		lease_strset_add(&hint, "c1");
		CU_ASSERT(lease_gc_may_delete(lease_list_find(&list, "p"), lease_gc_find_in_list, &list, &hint));
		lease_strset_add(&hint, "c2");
		CU_ASSERT(!lease_gc_may_delete(lease_list_find(&list, "p"), lease_gc_find_in_list, &list, &hint));
		lease_strset_done(&hint);
	}
	lease_list_done(&list);
}

static void test_leader_pick(void)
{
	const char *a[] = { "w1", "w2", "w3", "w2" };
	const char *b[] = { "w3", "w2", "w1" };
	size_t ia = lease_leader_pick(a, 4), ib = lease_leader_pick(b, 3);

	/* Same set, any order: same leader. */
	CU_ASSERT_STRING_EQUAL(a[ia], b[ib]);
	CU_ASSERT_EQUAL(lease_leader_pick(NULL, 0), 0);
	/* Without the leader, someone else. */
	{
		const char *rest[2];
		size_t n = 0;

		for (size_t i = 0; i < 3; i++)
			if (strcmp(b[i], b[ib]) != 0)
				rest[n++] = b[i];
		CU_ASSERT_STRING_NOT_EQUAL(rest[lease_leader_pick(rest, n)], b[ib]);
	}
}

/* ---------------------------------------------------------------- coordinator */

static void test_coord_take_renew(void)
{
	struct env e;
	struct worker w[1];
	struct lease got;
	uint64_t c0;

	env_init(&e);
	for (int i = 0; i < 4; i++) {
		char key[8];

		snprintf(key, sizeof(key), "s%d", i);
		put_lease(&e, key, LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	}
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 100);
	/* New, unowned leases: taken at once and processable at once. */
	CU_ASSERT_EQUAL(grant_count(&w[0]), 4);
	CU_ASSERT(processable(&w[0], "s2"));
	got = read_item(&e, "s2");
	CU_ASSERT_STRING_EQUAL(got.owner, "A");
	CU_ASSERT_EQUAL(got.owner_switches, 1);
	CU_ASSERT(got.heartbeat_ms > 0);
	c0 = got.counter;
	lease_done(&got);
	run(&e, w, 1, 60000);
	got = read_item(&e, "s2");
	/* renewed every failover/3: 60 s -> about 18 renews */
	CU_ASSERT(got.counter >= c0 + 16);
	lease_done(&got);
	CU_ASSERT(processable(&w[0], "s2"));
	worker_crash(&w[0]);
	env_done(&e);
}

/* A crash: the survivor takes over after the counters stood still for
 * failover, and never processes before that. */
static void test_coord_failover(void)
{
	struct env e;
	struct worker w[2];
	int64_t crash, took = 0;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	put_lease(&e, "s1", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	CU_ASSERT_EQUAL(grant_count(&w[0]), 2);
	worker_start(&e, &w[1], "B");
	run(&e, w, 2, 5000);
	crash = e.fc.mono_ms;
	worker_crash(&w[0]);
	for (int64_t t = 0; t < 40000; t += 100) {
		run(&e, w, 2, 100);
		if (processable(&w[1], "s0") && processable(&w[1], "s1")) {
			took = e.fc.mono_ms;
			break;
		}
		/* B may hold s0 by a steal before the crash, but never processes
		 * within failover of A's last renew */
	}
	CU_ASSERT(took > 0);
	CU_ASSERT(took - crash >= F - 3400);          /* A's last renew was at most F/3 earlier */
	CU_ASSERT(took - crash <= F + 2 * 3334 + 200); /* failover + a scan interval or two */
	worker_crash(&w[1]);
	env_done(&e);
}

/* A steal: the thief waits (handover) until the victim must have stopped;
 * at no moment can both process. */
static void test_coord_steal_handover(void)
{
	struct env e;
	struct worker w[2];
	bool saw_handover = false, stolen = false;

	env_init(&e);
	for (int i = 0; i < 4; i++) {
		char key[8];

		snprintf(key, sizeof(key), "s%d", i);
		put_lease(&e, key, LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	}
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	CU_ASSERT_EQUAL(grant_count(&w[0]), 4);
	worker_start(&e, &w[1], "B");
	for (int64_t t = 0; t < 60000; t += 100) {
		run(&e, w, 2, 100);
		for (int i = 0; i < 4; i++) {
			char key[8];
			enum lease_state st = LEASE_STATE_UNOWNED;

			snprintf(key, sizeof(key), "s%d", i);
			CU_ASSERT(!(processable(&w[0], key) && processable(&w[1], key)));
			if (token_of(&w[1], key, &st)) {
				stolen = true;
				saw_handover |= st == LEASE_STATE_HANDOVER;
			}
		}
	}
	CU_ASSERT(stolen);
	CU_ASSERT(saw_handover);
	/* 2 workers, 4 leases: 2 each after a couple of take passes */
	CU_ASSERT_EQUAL(grant_count(&w[0]), 2);
	CU_ASSERT_EQUAL(grant_count(&w[1]), 2);
	worker_crash(&w[0]);
	worker_crash(&w[1]);
	env_done(&e);
}

/* A renew whose reply is lost, and one reported as a conflict although it
 * landed: both are recognised as ours; the lease stays. */
static void test_coord_spurious_failures(void)
{
	struct env e;
	struct worker w[1];
	struct lease_mem_faults f;
	struct lease_status st;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	CU_ASSERT(processable(&w[0], "s0"));
	memset(&f, 0, sizeof(f));
	f.ghost_conflict_next = 1;
	f.lost_reply_next = 1;
	lease_store_mem_set_faults(w[0].store, &f);
	run(&e, w, 1, 20000);
	CU_ASSERT(processable(&w[0], "s0"));
	CU_ASSERT_EQUAL_FATAL(lease_coord_status(w[0].coord, &st), KL_OK);
	CU_ASSERT_EQUAL(st.lost, 0);
	lease_status_done(&st);

	/* Checkpoint with a ghost conflict: succeeds (our write landed). */
	{
		struct lease_esn cp = seq("1000", 0);
		struct lease got;

		memset(&f, 0, sizeof(f));
		f.ghost_conflict_next = 1;
		lease_store_mem_set_faults(w[0].store, &f);
		CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", token_of(&w[0], "s0", NULL),
						       &cp, NULL), KL_OK);
		got = read_item(&e, "s0");
		CU_ASSERT_EQUAL(lease_esn_cmp(&got.checkpoint, &cp), 0);
		lease_done(&got);
		/* lost reply on a checkpoint: the error is reported; a retry
		 * re-reads first and is harmless */
		memset(&f, 0, sizeof(f));
		f.lost_reply_next = 1;
		lease_store_mem_set_faults(w[0].store, &f);
		cp = seq("2000", 0);
		CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", token_of(&w[0], "s0", NULL),
						       &cp, NULL), KL_ETIMEOUT);
		CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", token_of(&w[0], "s0", NULL),
						       &cp, NULL), KL_OK);
		got = read_item(&e, "s0");
		CU_ASSERT_EQUAL(lease_esn_cmp(&got.checkpoint, &cp), 0);
		lease_done(&got);
	}
	worker_crash(&w[0]);
	env_done(&e);
}

/* A take whose reply is lost, or that comes back as a conditional failure
 * although it landed (a client retry), is recognised on a re-read: the
 * lease is held at once instead of sitting owned-but-unheld. */
static void test_coord_take_outcome_unknown(void)
{
	struct env e;
	struct worker w[1];
	struct lease_mem_faults f;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	put_lease(&e, "s1", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "A");
	memset(&f, 0, sizeof(f));
	f.lost_reply_next = 1;
	f.ghost_conflict_next = 0;
	lease_store_mem_set_faults(w[0].store, &f);
	run(&e, w, 1, 100);
	CU_ASSERT_EQUAL(grant_count(&w[0]), 2);
	CU_ASSERT(processable(&w[0], "s0") && processable(&w[0], "s1"));
	worker_crash(&w[0]);

	env_done(&e);

	/* The same with a ghost conflict. */
	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	put_lease(&e, "s1", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "B");
	memset(&f, 0, sizeof(f));
	f.ghost_conflict_next = 1;
	lease_store_mem_set_faults(w[0].store, &f);
	run(&e, w, 1, 100);
	CU_ASSERT_EQUAL(grant_count(&w[0]), 2);
	worker_crash(&w[0]);
	env_done(&e);
}

/* A partitioned holder stops processing before anyone can take over, and
 * its checkpoint is rejected once the lease moved. */
static void test_coord_partition_and_lost_checkpoint(void)
{
	struct env e;
	struct worker w[2];
	struct lease_mem_faults f;
	struct lease_esn cp = seq("500", 0);
	uint64_t tok;
	int64_t cut, a_stopped = 0, b_started = 0;
	struct kl_errinfo info;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	tok = token_of(&w[0], "s0", NULL);
	CU_ASSERT(tok != 0);
	worker_start(&e, &w[1], "B");
	run(&e, w, 2, 3000);
	memset(&f, 0, sizeof(f));
	f.partitioned = true;
	lease_store_mem_set_faults(w[0].store, &f);
	cut = e.fc.mono_ms;
	for (int64_t t = 0; t < 40000; t += 100) {
		run(&e, w, 2, 100);
		if (!a_stopped && lease_coord_check(w[0].coord, "s0", tok, NULL) != KL_OK)
			a_stopped = e.fc.mono_ms;
		if (!b_started && processable(&w[1], "s0"))
			b_started = e.fc.mono_ms;
		CU_ASSERT(!(lease_coord_check(w[0].coord, "s0", tok, NULL) == KL_OK &&
			    processable(&w[1], "s0")));
	}
	CU_ASSERT(a_stopped > 0 && b_started > 0);
	CU_ASSERT(a_stopped <= b_started);
	CU_ASSERT(a_stopped - cut <= F);
	/* Heal the partition: A's checkpoint is refused as lost. */
	memset(&f, 0, sizeof(f));
	lease_store_mem_set_faults(w[0].store, &f);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", tok, &cp, &info), KL_ELEASE_LOST);
	{
		struct lease got = read_item(&e, "s0");

		CU_ASSERT_STRING_EQUAL(got.owner, "B");
		CU_ASSERT_EQUAL(got.checkpoint.kind, LEASE_ESN_TRIM_HORIZON);
		lease_done(&got);
	}
	worker_crash(&w[0]);
	worker_crash(&w[1]);
	env_done(&e);
}

/* The only worker is cut off past failover: it drops its leases, and once
 * the network is back it takes them again at its next scan (it knows it
 * was the last writer), not a failover later. */
static void test_coord_sole_worker_partition(void)
{
	struct env e;
	struct worker w[1];
	struct lease_mem_faults f;
	struct lease_coord_config cfg;
	int64_t healed, back = 0;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	put_lease(&e, "s1", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	/* Scans at 0 and 6 s, renews at 3.3 s: cut at 5 s, the last counter
	 * it wrote was never seen in a scan. */
	memset(&cfg, 0, sizeof(cfg));
	cfg.scan_interval_ms = 6000;
	worker_start_cfg(&e, &w[0], "A", &cfg, NULL);
	run(&e, w, 1, 5000);
	CU_ASSERT_EQUAL(grant_count(&w[0]), 2);
	memset(&f, 0, sizeof(f));
	f.partitioned = true;
	lease_store_mem_set_faults(w[0].store, &f);
	run(&e, w, 1, 2 * F);
	CU_ASSERT_EQUAL(grant_count(&w[0]), 0);
	memset(&f, 0, sizeof(f));
	lease_store_mem_set_faults(w[0].store, &f);
	healed = e.fc.mono_ms;
	for (int64_t t = 0; t < 3 * F && !back; t += 100) {
		run(&e, w, 1, 100);
		if (processable(&w[0], "s0") && processable(&w[0], "s1"))
			back = e.fc.mono_ms;
	}
	CU_ASSERT(back > 0);
	CU_ASSERT(back - healed <= cfg.scan_interval_ms + 200); /* not failover */
	worker_crash(&w[0]);
	env_done(&e);
}

/* A lease stolen while A still thinks it holds it: A's checkpoint through
 * the counter condition fails and is reported as lost. */
static void test_coord_checkpoint_conflict_is_lost(void)
{
	struct env e;
	struct worker w[1];
	struct lease_store *thief;
	struct lease got;
	struct lease_esn cp = seq("10", 0);
	uint64_t tok;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	tok = token_of(&w[0], "s0", NULL);
	got = read_item(&e, "s0");
	thief = lease_store_mem_new(e.table, &e.clock);
	CU_ASSERT_EQUAL(lease_store_take(thief, "s0", got.counter, "X", "xs", 0, true, NULL), KL_OK);
	lease_done(&got);
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", tok, &cp, NULL), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(lease_coord_check(w[0].coord, "s0", tok, NULL), KL_ELEASE_LOST);
	/* ... and again, without another write */
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", tok, &cp, NULL), KL_ELEASE_LOST);
	lease_store_free(thief);
	worker_crash(&w[0]);
	env_done(&e);
}

static void test_coord_two_phase_and_token(void)
{
	struct env e;
	struct worker w[2];
	struct lease_esn p1 = seq("300", 2), back = seq("100", 0);
	struct lease got;
	struct lease_grant *g;
	size_t n;
	uint64_t tok;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	tok = token_of(&w[0], "s0", NULL);
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", tok + 1, &p1, NULL), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", tok, &back, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_coord_prepare(w[0].coord, "s0", tok, &back, NULL, 0, NULL), KL_EINVAL);
	CU_ASSERT_EQUAL(lease_coord_prepare(w[0].coord, "s0", tok, &p1, "key-1", 5, NULL), KL_OK);
	got = read_item(&e, "s0");
	CU_ASSERT_EQUAL(lease_esn_cmp(&got.pending, &p1), 0);
	CU_ASSERT_EQUAL(got.pending_state_len, 5);
	lease_done(&got);
	/* A crashes between intent and commit; B takes over and sees the intent */
	worker_crash(&w[0]);
	worker_start(&e, &w[1], "B");
	run(&e, &w[1], 1, 3 * F);
	CU_ASSERT_EQUAL_FATAL(lease_coord_grants(w[1].coord, &g, &n), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_EQUAL(lease_esn_cmp(&g[0].pending, &p1), 0);
	CU_ASSERT_EQUAL(lease_esn_cmp(&g[0].checkpoint, &back), 0);
	CU_ASSERT_EQUAL(g[0].pending_state_len, 5);
	CU_ASSERT_EQUAL(memcmp(g[0].pending_state, "key-1", 5), 0);
	tok = g[0].token;
	lease_grants_free(g, n);
	/* A's checkpoint reset the switches, B's take added one. */
	got = read_item(&e, "s0");
	CU_ASSERT_EQUAL(got.owner_switches, 1);
	lease_done(&got);
	/* backwards is refused, the commit clears the intent */
	{
		struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);

		CU_ASSERT_EQUAL(lease_coord_checkpoint(w[1].coord, "s0", tok, &th, NULL), KL_EINVAL);
	}
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[1].coord, "s0", tok, &p1, NULL), KL_OK);
	got = read_item(&e, "s0");
	CU_ASSERT_EQUAL(got.pending.kind, LEASE_ESN_NONE);
	CU_ASSERT_EQUAL(got.owner_switches, 0);
	lease_done(&got);
	worker_crash(&w[1]);
	env_done(&e);
}

/* Graceful release: the other worker has the leases within a scan
 * interval, processable at once. */
static void test_coord_release(void)
{
	struct env e;
	struct worker w[2];
	int64_t released, all = 0;

	env_init(&e);
	for (int i = 0; i < 4; i++) {
		char key[8];

		snprintf(key, sizeof(key), "s%d", i);
		put_lease(&e, key, LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	}
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	worker_start(&e, &w[1], "B");
	run(&e, w, 2, 6 * F); /* balanced: 2 each, nothing in handover */
	CU_ASSERT_EQUAL(grant_count(&w[0]), 2);
	CU_ASSERT_EQUAL(lease_coord_release_all(w[0].coord, NULL), KL_OK);
	released = e.fc.mono_ms;
	CU_ASSERT_EQUAL(grant_count(&w[0]), 0);
	CU_ASSERT_FALSE(processable(&w[0], "s1"));
	for (int64_t t = 0; t < 20000 && !all; t += 100) {
		run(&e, w, 2, 100);
		if (processable(&w[1], "s0") && processable(&w[1], "s1") &&
		    processable(&w[1], "s2") && processable(&w[1], "s3"))
			all = e.fc.mono_ms;
	}
	CU_ASSERT(all > 0);
	CU_ASSERT(all - released <= 3334 + 200);
	worker_crash(&w[0]);
	worker_crash(&w[1]);
	env_done(&e);
}

/* ---------------------------------------------------------------- resharding */

struct static_source {
	struct lease_shard *v;
	size_t n;
	unsigned calls;
};

static enum kl_err static_list(void *ctx, enum lease_shard_filter filter, int64_t ts,
			       struct lease_shard_list *ret, struct kl_errinfo *info)
{
	struct static_source *src = ctx;
	struct lease_shard_list out = { NULL, 0 };

	(void)ts;
	(void)info;
	src->calls++;
	for (size_t i = 0; i < src->n; i++) {
		if (filter == LEASE_SHARDS_AT_LATEST && src->v[i].ending_seq)
			continue;
		if (lease_shard_list_add(&out, &src->v[i]) != KL_OK) {
			lease_shard_list_done(&out);
			return KL_ENOMEM;
		}
	}
	*ret = out;
	return KL_OK;
}

static struct lease_shard hshard(const char *id, const char *p1, const char *p2, const char *start,
				 const char *end, const char *seq0, bool open)
{
	struct lease_shard s = shard(id, p1, p2, seq0, open);

	s.starting_hash_key = (char *)start;
	s.ending_hash_key = (char *)end;
	return s;
}

#define HALF "170141183460469231731687303715884105727"
#define HALF1 "170141183460469231731687303715884105728"

static void test_coord_sync_split_merge(void)
{
	struct env e;
	struct worker w[1];
	struct lease_shard sh[] = {
		hshard("s0", NULL, NULL, "0", HALF, "100", true),
		hshard("s1", NULL, NULL, HALF1, LEASE_HASH_KEY_MAX, "101", true),
	};
	struct static_source src = { sh, 2, 0 };
	struct lease_shard_source source = { static_list, &src };
	struct lease_coord_config cfg;
	struct lease got;
	enum lease_state st;
	struct lease_esn cp = seq("150", 0);

	env_init(&e);
	memset(&cfg, 0, sizeof(cfg));
	cfg.initial_position = LEASE_INITIAL_TRIM_HORIZON;
	cfg.sync_interval_ms = 5000;
	worker_start_cfg(&e, &w[0], "A", &cfg, &source);
	run(&e, w, 1, 5000);
	/* empty table: leases at TRIM_HORIZON, taken */
	got = read_item(&e, "s0");
	CU_ASSERT_EQUAL(got.checkpoint.kind, LEASE_ESN_TRIM_HORIZON);
	CU_ASSERT_STRING_EQUAL(got.ending_hash_key, HALF);
	lease_done(&got);
	CU_ASSERT(processable(&w[0], "s0") && processable(&w[0], "s1"));

	/* split s0 into s2 + s3 */
	{
		struct lease_shard kids[] = {
			hshard("s2", "s0", NULL, "0", "1000", NULL, true),
			hshard("s3", "s0", NULL, "1001", HALF, NULL, true),
		};
		uint64_t tok = token_of(&w[0], "s0", NULL);

		CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s0", tok, &cp, NULL), KL_OK);
		CU_ASSERT_EQUAL(lease_coord_shard_end(w[0].coord, "s0", tok, kids, 2, NULL), KL_OK);
		CU_ASSERT_EQUAL(lease_coord_check(w[0].coord, "s0", tok, NULL), KL_ELEASE_LOST);
	}
	got = read_item(&e, "s0");
	CU_ASSERT_EQUAL(got.checkpoint.kind, LEASE_ESN_SHARD_END);
	CU_ASSERT_PTR_NULL(got.owner); /* released */
	CU_ASSERT(lease_strset_has(&got.children, "s2") && lease_strset_has(&got.children, "s3"));
	lease_done(&got);
	got = read_item(&e, "s2");
	CU_ASSERT_EQUAL(got.checkpoint.kind, LEASE_ESN_TRIM_HORIZON);
	CU_ASSERT(lease_strset_has(&got.parents, "s0"));
	CU_ASSERT_STRING_EQUAL(got.ending_hash_key, "1000");
	lease_done(&got);
	run(&e, w, 1, 4000);
	CU_ASSERT(processable(&w[0], "s2")); /* parent finished: not blocked */

	/* merge s3 + s1 into s4: s1 ends first -> s4 waits for s3 */
	{
		struct lease_shard kid = hshard("s4", "s1", "s3", "1001", LEASE_HASH_KEY_MAX, NULL, true);
		uint64_t t1 = token_of(&w[0], "s1", NULL), t3 = token_of(&w[0], "s3", NULL);

		CU_ASSERT_EQUAL(lease_coord_shard_end(w[0].coord, "s1", t1, &kid, 1, NULL), KL_OK);
		run(&e, w, 1, 4000);
		CU_ASSERT(token_of(&w[0], "s4", &st) != 0);
		CU_ASSERT_EQUAL(st, LEASE_STATE_WAITING_PARENTS);
		CU_ASSERT_FALSE(processable(&w[0], "s4"));
		CU_ASSERT_EQUAL(lease_coord_shard_end(w[0].coord, "s3", t3, &kid, 1, NULL), KL_OK);
		run(&e, w, 1, 4000);
		CU_ASSERT(processable(&w[0], "s4"));
	}
	/* GC: s0 goes once s2 and s3 have checkpointed past their start
	 * (s3 is SHARD_END); s2 has not yet. */
	run(&e, w, 1, 6000);
	CU_ASSERT_EQUAL(lease_mem_table_read(e.table, "s0", &got), KL_OK);
	lease_done(&got);
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s2", token_of(&w[0], "s2", NULL), &cp, NULL),
			KL_OK);
	CU_ASSERT_EQUAL(lease_coord_checkpoint(w[0].coord, "s4", token_of(&w[0], "s4", NULL), &cp, NULL),
			KL_OK);
	run(&e, w, 1, 6000);
	CU_ASSERT_EQUAL(lease_mem_table_read(e.table, "s0", &got), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(lease_mem_table_read(e.table, "s1", &got), KL_ENOTFOUND);
	/* s3's parent s0 was deleted in an earlier pass: s3 goes too. */
	run(&e, w, 1, 6000);
	CU_ASSERT_EQUAL(lease_mem_table_read(e.table, "s3", &got), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(lease_mem_table_read(e.table, "s2", &got), KL_OK);
	lease_done(&got);
	worker_crash(&w[0]);
	env_done(&e);
}

/* Lists like Kinesis honouring ShardFilter: AT_LATEST gives the open
 * shards, AT_TRIM_HORIZON the shards open at the trim horizon (here: those
 * whose parents are not listed), which may all be closed by now. */
static enum kl_err kinesis_like_list(void *ctx, enum lease_shard_filter filter, int64_t ts,
				     struct lease_shard_list *ret, struct kl_errinfo *info)
{
	struct static_source *src = ctx;
	struct lease_shard_list out = { NULL, 0 };

	(void)ts;
	(void)info;
	src->calls++;
	for (size_t i = 0; i < src->n; i++) {
		const struct lease_shard *s = &src->v[i];
		bool root = true;

		for (size_t k = 0; k < src->n; k++)
			if ((s->parent_id && strcmp(s->parent_id, src->v[k].shard_id) == 0) ||
			    (s->adjacent_parent_id && strcmp(s->adjacent_parent_id, src->v[k].shard_id) == 0))
				root = false;
		if (filter == LEASE_SHARDS_AT_LATEST && s->ending_seq)
			continue;
		if (filter == LEASE_SHARDS_AT_TRIM_HORIZON && !root)
			continue;
		if (lease_shard_list_add(&out, s) != KL_OK) {
			lease_shard_list_done(&out);
			return KL_ENOMEM;
		}
	}
	*ret = out;
	return KL_OK;
}

/* Starting on a stream resharded within its retention: at TRIM_HORIZON the
 * shards open at the trim horizon are all closed now, yet together they
 * cover the key space; the leases start there (KCL's empty-table sync). */
static void test_coord_sync_resharded_stream(void)
{
	struct lease_shard sh[] = {
		hshard("s0", NULL, NULL, "0", HALF, "100", false),
		hshard("s1", NULL, NULL, HALF1, LEASE_HASH_KEY_MAX, "101", true),
		hshard("s2", "s0", NULL, "0", "1000", "200", true),
		hshard("s3", "s0", NULL, "1001", HALF, "201", true),
	};
	struct static_source src = { sh, 4, 0 };
	struct lease_shard_source source = { kinesis_like_list, &src };
	struct lease_coord_config cfg;
	struct lease_list all;
	struct env e;
	struct worker w[1];

	for (int pos = 0; pos < 2; pos++) {
		env_init(&e);
		memset(&cfg, 0, sizeof(cfg));
		cfg.initial_position = pos ? LEASE_INITIAL_LATEST : LEASE_INITIAL_TRIM_HORIZON;
		worker_start_cfg(&e, &w[0], "A", &cfg, &source);
		run(&e, w, 1, 2000);
		CU_ASSERT_EQUAL_FATAL(lease_mem_table_dump(e.table, &all), KL_OK);
		if (pos == 0) {
			/* s0 (closed) and s1 (open), whose ranges cover the key space */
			CU_ASSERT_EQUAL(all.n, 2);
			CU_ASSERT(lease_list_find(&all, "s0") && lease_list_find(&all, "s1"));
		} else {
			CU_ASSERT_EQUAL(all.n, 3);
			CU_ASSERT(lease_list_find(&all, "s1") && lease_list_find(&all, "s2") &&
				  lease_list_find(&all, "s3"));
		}
		lease_list_done(&all);
		worker_crash(&w[0]);
		env_done(&e);
	}
}

/* A merge whose co-parent has no lease yet waits (KL_ESTATE). */
static void test_coord_merge_needs_coparent(void)
{
	struct env e;
	struct worker w[1];
	struct lease_shard kid = hshard("m", "a", "b", "0", LEASE_HASH_KEY_MAX, NULL, true);
	struct lease got;

	env_init(&e);
	put_lease(&e, "a", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	CU_ASSERT_EQUAL(lease_coord_shard_end(w[0].coord, "a", token_of(&w[0], "a", NULL), &kid, 1, NULL),
			KL_ESTATE);
	CU_ASSERT_EQUAL(lease_mem_table_read(e.table, "m", &got), KL_ENOTFOUND);
	got = read_item(&e, "a");
	CU_ASSERT_EQUAL(got.checkpoint.kind, LEASE_ESN_TRIM_HORIZON);
	lease_done(&got);
	CU_ASSERT(processable(&w[0], "a"));
	worker_crash(&w[0]);
	env_done(&e);
}

/* Status: states and counts a `kinlake status` needs. */
static void test_coord_status(void)
{
	struct env e;
	struct worker w[2];
	struct lease_status st;
	size_t held = 0, owned = 0, finished = 0;

	env_init(&e);
	put_lease(&e, "s0", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	put_lease(&e, "s1", LEASE_ESN_TRIM_HORIZON, NULL, NULL);
	put_lease(&e, "s9", LEASE_ESN_SHARD_END, NULL, NULL);
	worker_start(&e, &w[0], "A");
	run(&e, w, 1, 200);
	worker_start(&e, &w[1], "B");
	run(&e, w, 2, 4 * F);
	CU_ASSERT_EQUAL_FATAL(lease_coord_status(w[1].coord, &st), KL_OK);
	CU_ASSERT_STRING_EQUAL(st.worker_id, "B");
	CU_ASSERT_EQUAL(st.n_leases, 3);
	CU_ASSERT_EQUAL(st.live_workers, 2);
	CU_ASSERT_EQUAL(st.target, 1);
	CU_ASSERT_EQUAL(st.n_workers, 2);
	CU_ASSERT(st.full_take_passes >= 2);
	CU_ASSERT(st.renew.at_ms > 0);
	for (size_t i = 0; i < st.n_leases; i++) {
		held += st.leases[i].state == LEASE_STATE_HELD;
		owned += st.leases[i].state == LEASE_STATE_OWNED;
		finished += st.leases[i].state == LEASE_STATE_FINISHED;
		if (st.leases[i].held_here)
			CU_ASSERT(st.leases[i].valid_until_ms > st.now_ms);
	}
	CU_ASSERT_EQUAL(held, 1);
	CU_ASSERT_EQUAL(owned, 1);
	CU_ASSERT_EQUAL(finished, 1);
	CU_ASSERT_STRING_EQUAL(lease_state_name(LEASE_STATE_WAITING_PARENTS), "waiting-on-parents");
	lease_status_done(&st);
	worker_crash(&w[0]);
	worker_crash(&w[1]);
	env_done(&e);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_esn_order),
		KL_TEST(test_dec),
		KL_TEST(test_record_copy),
		KL_TEST(test_store_conditions),
		KL_TEST(test_store_preserves_unknown),
		KL_TEST(test_store_faults),
		KL_TEST(test_sync_plan_kcl_example),
		KL_TEST(test_sync_plan_empty_table),
		KL_TEST(test_hash_cover),
		KL_TEST(test_gc_rule),
		KL_TEST(test_leader_pick),
		KL_TEST(test_coord_take_renew),
		KL_TEST(test_coord_failover),
		KL_TEST(test_coord_steal_handover),
		KL_TEST(test_coord_spurious_failures),
		KL_TEST(test_coord_take_outcome_unknown),
		KL_TEST(test_coord_partition_and_lost_checkpoint),
		KL_TEST(test_coord_sole_worker_partition),
		KL_TEST(test_coord_checkpoint_conflict_is_lost),
		KL_TEST(test_coord_two_phase_and_token),
		KL_TEST(test_coord_release),
		KL_TEST(test_coord_sync_split_merge),
		KL_TEST(test_coord_sync_resharded_stream),
		KL_TEST(test_coord_merge_needs_coparent),
		KL_TEST(test_coord_status),
		{ 0 },
	};

	return kl_test_run("lease", t);
}
