/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_lease_sim.c: a seeded simulation of a kinlake fleet on the memory
 * store and one fake clock: workers crash, pause past failover, restart
 * (same or new id), join and leave gracefully, get partitioned, see lost
 * replies and spurious conditional failures, while a modelled stream
 * splits and merges and consumers checkpoint (two-phase, sometimes).
 *
 * Checked at every 100 ms step: at most one worker may process a lease
 * (fencing, paused workers included); checkpoints in the table never go
 * backwards and a commit starts where the table's checkpoint was (no gap,
 * no overlap); a lease vanishes only after SHARD_END; a shard is processed
 * only after all its parents were read to the end and checkpointed
 * SHARD_END; an orphaned lease gets a healthy owner within failover + take
 * interval (+ one scan); counts reach target +-1 within a bounded number
 * of take passes in quiet phases. Also measures and prints failover after
 * a crash, handover after a graceful release and take passes to converge.
 *
 * KL_SIM_SEED=<n> replays a run; the seed is printed first. KL_SIM_SHORT=1
 * runs the short schedule used under valgrind.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lease.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store.h"
#include "lease_store_mem.h"
#include "lease_sync.h"
#include "testutil.h"
#include "util.h"

#define DT 100                 /* ms per step */
#define F 10000                /* coordinator defaults */
#define SCAN (F / 3)
#define TAKE (2 * F)
#define MAX_W 8
#define MAX_S 96

/* ---------------------------------------------------------------- model */

struct sim_shard {
	char id[32];
	int parents[2];            /* -1 when none */
	int children[2];
	int n_children;
	unsigned __int128 lo, hi;  /* hash key range */
	char lo_s[48], hi_s[48];
	int64_t length;            /* records written so far */
	bool closed;
};

struct sim_consumer {
	bool used;
	uint64_t token;
	int64_t local_cp;          /* index of the last committed record, -1 = none */
	int64_t pending_end;       /* intent to commit, -1 = none */
	int64_t retry_end;         /* a write with unknown outcome to repeat, -1 = none */
	bool retry_prepare;
};

enum wstate { W_DOWN = 0, W_UP, W_PAUSED };

struct sim_worker {
	char id[32];
	enum wstate st;
	int64_t pause_until;
	int64_t partition_until;   /* 0 = not partitioned */
	struct lease_store *store;
	struct lease_coord *coord;
	struct sim_consumer cons[MAX_S];
	struct lease_mem_faults base;
	int incarnation;
};

struct measure {
	double sum;
	int64_t min, max;
	unsigned n;
};

struct sim {
	struct kl_rng rng;
	struct lease_fake_clock fc;
	struct lease_clock clock;
	struct lease_mem_table *table;
	struct sim_shard shards[MAX_S];
	int n_shards;
	struct sim_worker w[MAX_W];
	int n_slots;
	struct lease_shard_source source;
	bool chaos;
	int64_t last_unhealthy;    /* last time a worker crashed, paused or was cut off */
	/* table tracking */
	bool seen_lease[MAX_S];
	bool finished[MAX_S];
	struct lease_esn last_cp[MAX_S];
	uint64_t last_counter[MAX_S];
	int64_t orphan_since[MAX_S];
	int64_t max_orphan_ms;
	unsigned lease_set_changes;
	/* failover/handover measurements: key -> start time */
	int64_t wait_since[MAX_S];
	struct measure *wait_measure[MAX_S];
	struct measure failover, handover;
	/* counters */
	uint64_t commits, prepares, shard_ends, steps;
	unsigned crashes, pauses, restarts, joins, leaves, partitions, splits, merges;
	unsigned violations;
};

#define VIOLATION(s, ...) do { \
	(s)->violations++; \
	if ((s)->violations <= 10) { \
		fprintf(stderr, "\n  VIOLATION at t=%" PRId64 ": ", (s)->fc.mono_ms); \
		fprintf(stderr, __VA_ARGS__); \
		fprintf(stderr, "\n"); \
	} \
} while (0)

static uint64_t sim_seed;
static int sim_trace = -1; /* KL_SIM_TRACE=<shard number>: print its story */
static int sim_cycles = 4;  /* chaos + quiet cycles */
static int sim_trials = 8;  /* measurement trials */

static void u128_str(unsigned __int128 v, char *out)
{
	char buf[48];
	int i = 47;

	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + (int)(v % 10));
		v /= 10;
	} while (v);
	strcpy(out, buf + i);
}

static void seq_str(int shard, int64_t index, char *out, size_t n)
{
	/* 56 digits like real sequence numbers: 49, shard, zero-padded index */
	snprintf(out, n, "49%03d%051" PRId64, shard, index);
}

static struct lease_esn seq_esn(int shard, int64_t index)
{
	char s[80];
	struct lease_esn e;

	seq_str(shard, index, s, sizeof(s));
	CU_ASSERT_EQUAL_FATAL(lease_esn_parse(s, 0, &e, NULL), KL_OK);
	return e;
}

/* Record index of a checkpoint: -1 for TRIM_HORIZON, else the index. */
static int64_t esn_index(const struct lease_esn *e)
{
	if (e->kind != LEASE_ESN_SEQ)
		return -1;
	return strtoll(e->seq + 5, NULL, 10);
}

static int key_index(const char *key)
{
	return atoi(key + strlen("shardId-"));
}

static bool chance(struct sim *s, unsigned per_million)
{
	return kl_rng_below(&s->rng, 1000000) < per_million;
}

static int64_t rnd(struct sim *s, int64_t lo, int64_t hi)
{
	return lo + (int64_t)kl_rng_below(&s->rng, (uint64_t)(hi - lo + 1));
}

static void measure_add(struct measure *m, int64_t v)
{
	if (!m->n || v < m->min)
		m->min = v;
	if (!m->n || v > m->max)
		m->max = v;
	m->sum += (double)v;
	m->n++;
}

static int add_shard(struct sim *s, int p1, int p2, unsigned __int128 lo, unsigned __int128 hi)
{
	struct sim_shard *sh;
	int k = s->n_shards;

	CU_ASSERT_FATAL(k < MAX_S);
	sh = &s->shards[k];
	memset(sh, 0, sizeof(*sh));
	snprintf(sh->id, sizeof(sh->id), "shardId-%012d", k);
	sh->parents[0] = p1;
	sh->parents[1] = p2;
	sh->lo = lo;
	sh->hi = hi;
	u128_str(lo, sh->lo_s);
	u128_str(hi, sh->hi_s);
	s->n_shards++;
	return k;
}

static void fill_shard(const struct sim *s, int k, struct lease_shard *out, char *start_seq,
		       char *end_seq)
{
	const struct sim_shard *sh = &s->shards[k];

	memset(out, 0, sizeof(*out));
	out->shard_id = (char *)sh->id;
	out->parent_id = sh->parents[0] >= 0 ? (char *)s->shards[sh->parents[0]].id : NULL;
	out->adjacent_parent_id = sh->parents[1] >= 0 ? (char *)s->shards[sh->parents[1]].id : NULL;
	out->starting_hash_key = (char *)sh->lo_s;
	out->ending_hash_key = (char *)sh->hi_s;
	seq_str(k, 0, start_seq, 80);
	out->starting_seq = start_seq;
	if (sh->closed) {
		seq_str(k, sh->length, end_seq, 80);
		out->ending_seq = end_seq;
	}
}

/* The shard source the coordinators read (ListShards). */
static enum kl_err sim_list(void *ctx, enum lease_shard_filter filter, int64_t ts,
			    struct lease_shard_list *ret, struct kl_errinfo *info)
{
	struct sim *s = ctx;
	struct lease_shard_list out = { NULL, 0 };

	(void)ts;
	(void)info;
	for (int k = 0; k < s->n_shards; k++) {
		struct lease_shard sh;
		char a[80], b[80];

		if (filter == LEASE_SHARDS_AT_TRIM_HORIZON && s->shards[k].parents[0] >= 0)
			continue; /* nothing expires from retention here: roots */
		if ((filter == LEASE_SHARDS_AT_LATEST || filter == LEASE_SHARDS_AT_TIMESTAMP) &&
		    s->shards[k].closed)
			continue;
		fill_shard(s, k, &sh, a, b);
		if (lease_shard_list_add(&out, &sh) != KL_OK) {
			lease_shard_list_done(&out);
			return KL_ENOMEM;
		}
	}
	*ret = out;
	return KL_OK;
}

static void split_shard(struct sim *s, int k)
{
	struct sim_shard *p = &s->shards[k];
	unsigned __int128 mid = p->lo + (p->hi - p->lo) / 2;
	int a, b;

	CU_ASSERT_FATAL(!p->closed);
	p->closed = true;
	a = add_shard(s, k, -1, p->lo, mid);
	b = add_shard(s, k, -1, mid + 1, s->shards[k].hi);
	s->shards[k].children[0] = a;
	s->shards[k].children[1] = b;
	s->shards[k].n_children = 2;
	s->splits++;
}

static void merge_shards(struct sim *s, int k1, int k2)
{
	int c;

	CU_ASSERT_FATAL(!s->shards[k1].closed && !s->shards[k2].closed);
	CU_ASSERT_FATAL(s->shards[k1].hi + 1 == s->shards[k2].lo);
	s->shards[k1].closed = true;
	s->shards[k2].closed = true;
	c = add_shard(s, k1, k2, s->shards[k1].lo, s->shards[k2].hi);
	s->shards[k1].children[0] = c;
	s->shards[k1].n_children = 1;
	s->shards[k2].children[0] = c;
	s->shards[k2].n_children = 1;
	s->merges++;
}

static void random_reshard(struct sim *s)
{
	int open[MAX_S], n = 0;

	for (int k = 0; k < s->n_shards; k++)
		if (!s->shards[k].closed)
			open[n++] = k;
	if (s->n_shards + 2 >= MAX_S || !n)
		return;
	if (n < 10 && (n < 3 || chance(s, 600000))) {
		split_shard(s, open[kl_rng_below(&s->rng, (uint64_t)n)]);
		return;
	}
	/* merge two open shards with adjacent ranges */
	for (int tries = 0; tries < 20; tries++) {
		int a = open[kl_rng_below(&s->rng, (uint64_t)n)];

		for (int i = 0; i < n; i++)
			if (s->shards[open[i]].lo == s->shards[a].hi + 1) {
				merge_shards(s, a, open[i]);
				return;
			}
	}
}

/* ---------------------------------------------------------------- workers */

static bool healthy(const struct sim *s, const struct sim_worker *w)
{
	(void)s;
	return w->st == W_UP && !w->partition_until;
}

static void worker_up(struct sim *s, int i, bool new_id)
{
	struct sim_worker *w = &s->w[i];
	struct lease_coord_config cfg;

	if (new_id || !w->id[0]) {
		w->incarnation++;
		snprintf(w->id, sizeof(w->id), "worker-%d.%d", i, w->incarnation);
	}
	memset(w->cons, 0, sizeof(w->cons));
	w->store = lease_store_mem_new(s->table, &s->clock);
	CU_ASSERT_PTR_NOT_NULL_FATAL(w->store);
	memset(&w->base, 0, sizeof(w->base));
	if (s->chaos) {
		w->base.latency_ms = rnd(s, 0, 40);
		w->base.reply_latency_ms = rnd(s, 0, 20);
		w->base.fail_permille = 8;
		w->base.lost_reply_permille = 5;
		w->base.ghost_conflict_permille = 5;
	}
	w->base.seed = kl_rng_next(&s->rng);
	lease_store_mem_set_faults(w->store, &w->base);
	memset(&cfg, 0, sizeof(cfg));
	cfg.worker_id = w->id;
	cfg.initial_position = LEASE_INITIAL_TRIM_HORIZON;
	cfg.seed = kl_rng_next(&s->rng) | 1;
	CU_ASSERT_EQUAL_FATAL(lease_coord_new(&cfg, w->store, &s->clock, &s->source, &w->coord, NULL),
			      KL_OK);
	w->st = W_UP;
	w->partition_until = 0;
}

/* Starts waiting for every lease w can process now to be processable elsewhere. */
static void watch_leases_of(struct sim *s, struct sim_worker *w, struct measure *m)
{
	struct lease_grant *g;
	size_t n;

	if (lease_coord_grants(w->coord, &g, &n) != KL_OK)
		return;
	for (size_t i = 0; i < n; i++) {
		int k = key_index(g[i].key);

		if (g[i].processable && s->wait_since[k] < 0) {
			s->wait_since[k] = s->fc.mono_ms;
			s->wait_measure[k] = m;
		}
	}
	lease_grants_free(g, n);
}

static void worker_crash(struct sim *s, int i)
{
	struct sim_worker *w = &s->w[i];

	watch_leases_of(s, w, &s->failover);
	lease_coord_free(w->coord);
	lease_store_free(w->store);
	w->coord = NULL;
	w->store = NULL;
	w->st = W_DOWN;
	w->partition_until = 0;
	s->last_unhealthy = s->fc.mono_ms;
	s->crashes++;
}

static void worker_leave(struct sim *s, int i)
{
	struct sim_worker *w = &s->w[i];

	watch_leases_of(s, w, &s->handover);
	/* Consumers have committed what they could; hand the leases back. */
	lease_store_mem_set_faults(w->store, &(struct lease_mem_faults){ .seed = 1 });
	CU_ASSERT_EQUAL(lease_coord_release_all(w->coord, NULL), KL_OK);
	lease_coord_free(w->coord);
	lease_store_free(w->store);
	w->coord = NULL;
	w->store = NULL;
	w->st = W_DOWN;
	s->last_unhealthy = s->fc.mono_ms;
	s->leaves++;
}

/* ---------------------------------------------------------------- consumers */

static bool parent_done(struct sim *s, int p)
{
	struct lease l;
	bool done;

	if (!s->shards[p].closed)
		return false;
	lease_init(&l);
	if (lease_mem_table_read(s->table, s->shards[p].id, &l) == KL_ENOTFOUND)
		return s->seen_lease[p]; /* deleted after SHARD_END (checked elsewhere) */
	done = l.checkpoint.kind == LEASE_ESN_SHARD_END;
	lease_done(&l);
	return done;
}

static struct lease_esn table_cp(struct sim *s, int k)
{
	struct lease l;
	struct lease_esn cp = lease_esn_sentinel(LEASE_ESN_NONE);

	lease_init(&l);
	if (lease_mem_table_read(s->table, s->shards[k].id, &l) == KL_OK)
		cp = l.checkpoint;
	lease_done(&l);
	return cp;
}

/* A successful commit of (from, to]: the table was at from (or already at
 * to, when repeating a write whose reply was lost). */
static void note_commit(struct sim *s, int k, int64_t from, int64_t to, int64_t before)
{
	if (before != from && before != to)
		VIOLATION(s, "%s: commit (%" PRId64 ", %" PRId64 "] but table was at %" PRId64,
			  s->shards[k].id, from, to, before);
	if (to <= from && before != to)
		VIOLATION(s, "%s: empty or backwards commit", s->shards[k].id);
	s->commits++;
}

/* Prepares (intent) or commits the batch (local_cp, end] of shard k. */
static enum kl_err write_batch(struct sim *s, struct sim_worker *w, const struct lease_grant *g,
			       int k, int64_t end, bool prep)
{
	struct sim_consumer *c = &w->cons[k];
	struct lease_esn e = seq_esn(k, end), before = table_cp(s, k);
	enum kl_err err;

	if (prep) {
		char st[64];

		snprintf(st, sizeof(st), "b:%" PRId64 "-%" PRId64, c->local_cp, end);
		err = lease_coord_prepare(w->coord, g->key, g->token, &e, st, strlen(st), NULL);
		if (err == KL_OK) {
			c->pending_end = end;
			s->prepares++;
		}
		return err;
	}
	err = lease_coord_checkpoint(w->coord, g->key, g->token, &e, NULL);
	if (err == KL_OK) {
		note_commit(s, k, c->local_cp, end, esn_index(&before));
		c->local_cp = end;
		c->pending_end = -1;
	}
	return err;
}

static void consumer_step(struct sim *s, struct sim_worker *w, const struct lease_grant *g)
{
	int k = key_index(g->key);
	struct sim_consumer *c = &w->cons[k];
	struct sim_shard *sh = &s->shards[k];
	enum kl_err err;
	int64_t end;

	if (!c->used || c->token != g->token) {
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->token = g->token;
		c->local_cp = esn_index(&g->checkpoint);
		c->pending_end = g->pending.kind == LEASE_ESN_SEQ ? esn_index(&g->pending) : -1;
		c->retry_end = -1;
		if (c->pending_end >= 0) {
			char want[64];

			/* The intent left by the last holder comes back intact. */
			snprintf(want, sizeof(want), "b:%" PRId64 "-%" PRId64, c->local_cp, c->pending_end);
			if (g->pending_state_len != strlen(want) ||
			    memcmp(g->pending_state, want, g->pending_state_len) != 0)
				VIOLATION(s, "%s: intent state does not match", sh->id);
		}
	}
	if (lease_coord_check(w->coord, g->key, g->token, NULL) != KL_OK)
		return;
	/* Parents must be finished before a child is touched. */
	for (int p = 0; p < 2; p++)
		if (sh->parents[p] >= 0 && !parent_done(s, sh->parents[p]))
			VIOLATION(s, "%s processed by %s before parent %s ended", sh->id, w->id,
				  s->shards[sh->parents[p]].id);
	if (!chance(s, 500000))
		return;

	if (c->retry_end >= 0 || c->pending_end >= 0) {
		/* Repeat a write whose outcome is unknown, or commit the intent. */
		bool prep = c->retry_end >= 0 && c->retry_prepare;

		end = c->retry_end >= 0 ? c->retry_end : c->pending_end;
		err = write_batch(s, w, g, k, end, prep);
		if (err == KL_OK)
			c->retry_end = -1;
	} else if (c->local_cp + 1 < sh->length) {
		/* A new batch of 1-5 records, half of the time two-phase. */
		bool prep = chance(s, 500000);

		end = c->local_cp + rnd(s, 1, 5);
		if (end > sh->length - 1)
			end = sh->length - 1;
		err = write_batch(s, w, g, k, end, prep);
		if (err != KL_OK && kl_err_retryable(err)) {
			/* Unknown outcome: repeat exactly this write, never another. */
			c->retry_end = end;
			c->retry_prepare = prep;
		}
	} else if (sh->closed && c->local_cp + 1 == sh->length) {
		struct lease_shard kids[2];
		char a[2][80], b[2][80];

		for (int i = 0; i < sh->n_children; i++)
			fill_shard(s, sh->children[i], &kids[i], a[i], b[i]);
		err = lease_coord_shard_end(w->coord, g->key, g->token, kids, (size_t)sh->n_children, NULL);
		if (err == KL_OK)
			s->shard_ends++;
	} else {
		return;
	}
	if (err == KL_ELEASE_LOST)
		c->used = false;
}

static void worker_consume(struct sim *s, struct sim_worker *w)
{
	struct lease_grant *g;
	size_t n;

	if (lease_coord_grants(w->coord, &g, &n) != KL_OK)
		return;
	for (size_t i = 0; i < n; i++)
		if (g[i].processable)
			consumer_step(s, w, &g[i]);
	lease_grants_free(g, n);
}

/* ---------------------------------------------------------------- checks */

static void trace_shard(struct sim *s, const struct lease *l)
{
	printf("  trace t=%" PRId64 " %s owner=%s counter=%" PRIu64 " cp=%s |", s->fc.mono_ms, l->key,
	       l->owner ? l->owner : "-", l->counter, lease_esn_str(&l->checkpoint));
	for (int i = 0; i < s->n_slots; i++) {
		struct sim_worker *w = &s->w[i];
		enum lease_state st = LEASE_STATE_UNOWNED;
		struct lease_grant *g;
		size_t n;
		struct lease_status ls;

		printf(" %s:%s%s", w->id, w->st == W_DOWN ? "down" : w->st == W_PAUSED ? "paused" : "up",
		       w->partition_until ? "/cut" : "");
		if (w->st == W_DOWN)
			continue;
		if (lease_coord_grants(w->coord, &g, &n) == KL_OK) {
			for (size_t j = 0; j < n; j++)
				if (strcmp(g[j].key, l->key) == 0) {
					st = g[j].state;
					printf("[%s]", lease_state_name(st));
				}
			lease_grants_free(g, n);
		}
		if (lease_coord_status(w->coord, &ls) == KL_OK) {
			printf("(n%zu t%u w%u)", n, ls.target, ls.live_workers);
			lease_status_done(&ls);
		}
	}
	printf("\n");
}

static void check_step(struct sim *s)
{
	int procs[MAX_S] = { 0 };
	bool held_ok[MAX_S] = { false };
	struct lease_list dump;
	bool present[MAX_S] = { false };
	int64_t now = s->fc.mono_ms;
	bool any_healthy = false;

	/* Orphan windows only count while someone healthy could take over. */
	for (int i = 0; i < s->n_slots; i++)
		any_healthy |= healthy(s, &s->w[i]);
	if (!any_healthy)
		s->last_unhealthy = now;

	for (int i = 0; i < s->n_slots; i++) {
		struct sim_worker *w = &s->w[i];
		struct lease_grant *g;
		size_t n;

		if (w->st == W_DOWN)
			continue;
		CU_ASSERT_EQUAL_FATAL(lease_coord_grants(w->coord, &g, &n), KL_OK);
		for (size_t j = 0; j < n; j++) {
			int k = key_index(g[j].key);

			/* paused workers count: they would go on the moment they wake */
			if (lease_coord_check(w->coord, g[j].key, g[j].token, NULL) == KL_OK) {
				procs[k]++;
				if (procs[k] > 1)
					VIOLATION(s, "%s processable by two workers (one is %s)", g[j].key, w->id);
				if (s->wait_since[k] >= 0 && healthy(s, w)) {
					measure_add(s->wait_measure[k], now - s->wait_since[k]);
					s->wait_since[k] = -1;
				}
			}
			if (healthy(s, w))
				held_ok[k] = true;
		}
		lease_grants_free(g, n);
	}

	CU_ASSERT_EQUAL_FATAL(lease_mem_table_dump(s->table, &dump), KL_OK);
	for (size_t j = 0; j < dump.n; j++) {
		const struct lease *l = &dump.items[j];
		int k = key_index(l->key);

		present[k] = true;
		if (k == sim_trace && (l->counter != s->last_counter[k] || !s->seen_lease[k] ||
				       (s->steps % 10) == 0))
			trace_shard(s, l);
		if (!s->seen_lease[k])
			s->lease_set_changes++;
		if (s->seen_lease[k] && lease_esn_cmp(&l->checkpoint, &s->last_cp[k]) < 0)
			VIOLATION(s, "%s: checkpoint went backwards (%s -> %s)", l->key,
				  lease_esn_str(&s->last_cp[k]), lease_esn_str(&l->checkpoint));
		if (s->seen_lease[k] && l->counter < s->last_counter[k])
			VIOLATION(s, "%s: counter went backwards", l->key);
		if (!s->finished[k] && lease_is_finished(l))
			s->lease_set_changes++;
		s->seen_lease[k] = true;
		s->finished[k] = lease_is_finished(l);
		s->last_cp[k] = l->checkpoint;
		s->last_counter[k] = l->counter;

		/* orphans: unfinished leases nobody healthy holds */
		if (lease_is_finished(l) || held_ok[k]) {
			if (s->orphan_since[k] >= 0) {
				int64_t start = s->orphan_since[k] > s->last_unhealthy ?
						s->orphan_since[k] : s->last_unhealthy;

				if (now - start > s->max_orphan_ms && start < now)
					s->max_orphan_ms = now - start;
			}
			s->orphan_since[k] = -1;
		} else if (s->orphan_since[k] < 0) {
			s->orphan_since[k] = now;
		} else {
			int64_t start = s->orphan_since[k] > s->last_unhealthy ? s->orphan_since[k] :
					s->last_unhealthy;

			if (now - start > F + TAKE + SCAN + 1000) {
				VIOLATION(s, "%s without a healthy owner for %" PRId64 " ms", l->key,
					  now - start);
				s->orphan_since[k] = now; /* report once per window */
			}
		}
	}
	lease_list_done(&dump);
	for (int k = 0; k < s->n_shards; k++) {
		if (s->seen_lease[k] && !present[k] && !s->finished[k])
			VIOLATION(s, "%s vanished before SHARD_END", s->shards[k].id);
		if (s->seen_lease[k] && !present[k] && s->finished[k]) {
			s->finished[k] = true; /* deleted by GC: stays finished */
			s->orphan_since[k] = -1;
		}
	}
}

/* ---------------------------------------------------------------- driver */

static void sim_init(struct sim *s, uint64_t seed, int roots, bool chaos)
{
	memset(s, 0, sizeof(*s));
	kl_rng_seed_value(&s->rng, seed);
	lease_clock_fake(&s->fc, 1000000, &s->clock);
	s->table = lease_mem_table_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->table);
	s->source.list = sim_list;
	s->source.ctx = s;
	s->chaos = chaos;
	s->last_unhealthy = -1;
	for (int k = 0; k < MAX_S; k++) {
		s->orphan_since[k] = -1;
		s->wait_since[k] = -1;
	}
	/* roots split the key space evenly */
	{
		unsigned __int128 max = ~(unsigned __int128)0, step = max / (unsigned)roots;

		for (int r = 0; r < roots; r++)
			add_shard(s, -1, -1, step * (unsigned)r,
				  r == roots - 1 ? max : step * (unsigned)(r + 1) - 1);
	}
}

static void sim_done(struct sim *s)
{
	for (int i = 0; i < MAX_W; i++) {
		lease_coord_free(s->w[i].coord);
		lease_store_free(s->w[i].store);
	}
	lease_mem_table_free(s->table);
}

/* One step: time, records, ticks and consumers in random order, checks. */
static void sim_step(struct sim *s)
{
	int order[MAX_W];

	lease_fake_clock_advance(&s->fc, DT);
	s->steps++;
	for (int k = 0; k < s->n_shards; k++)
		if (!s->shards[k].closed && chance(s, 500000))
			s->shards[k].length++;
	for (int i = 0; i < s->n_slots; i++) {
		struct sim_worker *w = &s->w[i];

		order[i] = i;
		if (w->st == W_PAUSED && s->fc.mono_ms >= w->pause_until)
			w->st = W_UP;
		if (w->st != W_DOWN && w->partition_until && s->fc.mono_ms >= w->partition_until) {
			lease_store_mem_set_faults(w->store, &w->base);
			w->partition_until = 0;
		}
	}
	for (int i = s->n_slots - 1; i > 0; i--) {
		int j = (int)kl_rng_below(&s->rng, (uint64_t)i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (int i = 0; i < s->n_slots; i++) {
		struct sim_worker *w = &s->w[order[i]];

		if (w->st != W_UP)
			continue;
		lease_coord_tick(w->coord, NULL);
		worker_consume(s, w);
	}
	check_step(s);
}

/* Chaos: one random event, rarely. */
enum sim_ev { EV_CRASH, EV_PAUSE, EV_RESTART, EV_LEAVE, EV_JOIN, EV_PARTITION, EV_RESHARD };

/* Applies one event of kind `ev` to worker slot `i`; false when that
 * worker cannot take it (already down, last one up, ...). */
static bool sim_apply(struct sim *s, enum sim_ev ev, int i)
{
	struct sim_worker *w = &s->w[i];
	unsigned up = 0;

	for (int j = 0; j < s->n_slots; j++)
		up += s->w[j].st != W_DOWN;
	switch (ev) {
	case EV_CRASH:
		if (w->st == W_DOWN || up < 2)
			return false;
		worker_crash(s, i);
		return true;
	case EV_PAUSE: /* past failover (or not) */
		if (w->st != W_UP)
			return false;
		w->st = W_PAUSED;
		w->pause_until = s->fc.mono_ms + rnd(s, F / 2, 3 * F);
		s->last_unhealthy = s->fc.mono_ms;
		s->pauses++;
		return true;
	case EV_RESTART: /* same id half of the time */
		if (w->st != W_DOWN)
			return false;
		worker_up(s, i, chance(s, 500000));
		s->restarts++;
		return true;
	case EV_LEAVE: /* graceful */
		if (w->st != W_UP || up < 2)
			return false;
		worker_leave(s, i);
		return true;
	case EV_JOIN: /* a new slot */
		if (s->n_slots >= 6)
			return false;
		worker_up(s, s->n_slots, true);
		s->n_slots++;
		s->joins++;
		return true;
	case EV_PARTITION: /* from the table */
		if (w->st != W_UP || w->partition_until)
			return false;
		{
			struct lease_mem_faults f = w->base;

			f.partitioned = true;
			lease_store_mem_set_faults(w->store, &f);
		}
		w->partition_until = s->fc.mono_ms + rnd(s, F / 2, 2 * F);
		s->last_unhealthy = s->fc.mono_ms;
		s->partitions++;
		return true;
	case EV_RESHARD:
		random_reshard(s);
		return true;
	}
	return false;
}

/* A random event on a random worker; it may not apply (and then nothing
 * happens), as in life. */
static void sim_event(struct sim *s)
{
	static const enum sim_ev evs[8] = { EV_CRASH, EV_PAUSE,	    EV_RESTART, EV_LEAVE,
					    EV_JOIN,  EV_PARTITION, EV_RESHARD, EV_RESHARD };
	int i = (int)kl_rng_below(&s->rng, (uint64_t)s->n_slots);

	(void)sim_apply(s, evs[kl_rng_below(&s->rng, 8)], i);
}

/* A scripted event: the first worker, from a random slot on, that can take
 * it; restarts a down worker first when too few are up to lose one. The
 * random schedule alone may leave a short run with almost no disruption,
 * so each chaos cycle forces one of each kind. */
static bool sim_force(struct sim *s, enum sim_ev ev)
{
	int start = (int)kl_rng_below(&s->rng, (uint64_t)s->n_slots);

	for (int pass = 0; pass < 2; pass++) {
		for (int k = 0; k < s->n_slots; k++)
			if (sim_apply(s, ev, (start + k) % s->n_slots))
				return true;
		for (int k = 0; k < s->n_slots; k++)
			if (sim_apply(s, EV_RESTART, (start + k) % s->n_slots))
				break;
	}
	return false;
}

/* Ends chaos: heal, wake, restart a minimum fleet, perfect network. */
static void sim_calm(struct sim *s, int min_up)
{
	int up = 0;

	s->chaos = false;
	for (int i = 0; i < s->n_slots; i++) {
		struct sim_worker *w = &s->w[i];

		if (w->st == W_PAUSED)
			w->st = W_UP;
		if (w->st == W_UP) {
			memset(&w->base, 0, sizeof(w->base));
			lease_store_mem_set_faults(w->store, &w->base);
			w->partition_until = 0;
			up++;
		}
	}
	for (int i = 0; i < s->n_slots && up < min_up; i++)
		if (s->w[i].st == W_DOWN) {
			worker_up(s, i, true);
			up++;
		}
	s->last_unhealthy = s->fc.mono_ms;
}

/* Counts of healthy workers are within one of ceil(active / workers)? */
static bool balanced(struct sim *s, unsigned *ret_target)
{
	unsigned counts[MAX_W] = { 0 }, workers = 0, active = 0, target;
	struct lease_list dump;

	CU_ASSERT_EQUAL_FATAL(lease_mem_table_dump(s->table, &dump), KL_OK);
	for (size_t j = 0; j < dump.n; j++) {
		if (lease_is_finished(&dump.items[j]))
			continue;
		active++;
		for (int i = 0; i < s->n_slots; i++)
			if (s->w[i].st == W_UP && dump.items[j].owner &&
			    strcmp(dump.items[j].owner, s->w[i].id) == 0)
				counts[i]++;
	}
	lease_list_done(&dump);
	for (int i = 0; i < s->n_slots; i++)
		workers += s->w[i].st == W_UP;
	if (!workers || !active)
		return false;
	target = (active + workers - 1) / workers;
	*ret_target = target;
	for (int i = 0; i < s->n_slots; i++)
		if (s->w[i].st == W_UP && (counts[i] + 1 < target || counts[i] > target + 1))
			return false;
	return true;
}

/* ---------------------------------------------------------------- tests */

static void print_measure(const char *what, const struct measure *m)
{
	if (!m->n) {
		printf("  %-34s n/a\n", what);
		return;
	}
	printf("  %-34s min %5.1f s  avg %5.1f s  max %5.1f s  (n=%u)\n", what, (double)m->min / 1000,
	       m->sum / m->n / 1000, (double)m->max / 1000, m->n);
}

static void test_sim_chaos(void)
{
	struct sim *s = calloc(1, sizeof(*s));
	unsigned max_conv_passes = 0;
	int forced_ok = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	sim_init(s, sim_seed, 4, true);
	for (int i = 0; i < 4; i++)
		worker_up(s, i, true);
	s->n_slots = 4;
	/* Scripted resharding early on: a split, a split of a child, a merge. */
	for (int cycle = 0; cycle < sim_cycles; cycle++) {
		s->chaos = true;
		for (int i = 0; i < s->n_slots; i++)
			if (s->w[i].st == W_UP) {
				s->w[i].base.fail_permille = 8;
				s->w[i].base.lost_reply_permille = 5;
				s->w[i].base.ghost_conflict_permille = 5;
				s->w[i].base.latency_ms = rnd(s, 0, 40);
				if (!s->w[i].partition_until)
					lease_store_mem_set_faults(s->w[i].store, &s->w[i].base);
			}
		for (int step = 0; step < 3000; step++) {
			/* (random events may have closed these shards already) */
			if (cycle == 0 && step == 300 && !s->shards[0].closed)
				split_shard(s, 0);
			if (cycle == 0 && step == 900 && s->shards[0].n_children == 2 &&
			    !s->shards[s->shards[0].children[0]].closed)
				split_shard(s, s->shards[0].children[0]);
			if (cycle == 0 && step == 1500 && !s->shards[1].closed && !s->shards[2].closed &&
			    s->shards[1].hi + 1 == s->shards[2].lo)
				merge_shards(s, 1, 2);
			if (step > 100 && chance(s, 4000))
				sim_event(s);
			if (step == 600 || step == 1200 || step == 1800 || step == 2400) {
				static const enum sim_ev forced[4] = { EV_CRASH, EV_PAUSE,
								       EV_PARTITION, EV_LEAVE };

				forced_ok += sim_force(s, forced[step / 600 - 1]);
			}
			sim_step(s);
		}
		/* Quiet: counts must settle, the stream is read to its open ends. */
		sim_calm(s, 3);
		{
			int64_t q = s->fc.mono_ms, conv = -1;
			unsigned changes = s->lease_set_changes, target = 0;

			for (int step = 0; step < 2500; step++) {
				sim_step(s);
				if (s->lease_set_changes != changes) {
					changes = s->lease_set_changes;
					q = s->fc.mono_ms; /* the set moved: count from here */
					conv = -1;
				}
				if (balanced(s, &target)) {
					if (conv < 0)
						conv = s->fc.mono_ms;
				} else {
					conv = -1;
				}
			}
			if (conv < 0)
				VIOLATION(s, "cycle %d: counts never settled within one of target %u", cycle,
					  target);
			else {
				unsigned passes = (unsigned)((conv - q + TAKE - 1) / TAKE);

				if (passes > max_conv_passes)
					max_conv_passes = passes;
				/* one steal per pass per thief: target passes, plus
				 * expiry of dead owners and restarts */
				if (passes > target + 3)
					VIOLATION(s, "cycle %d: %u take passes to settle (target %u)", cycle,
						  passes, target);
			}
		}
	}
	/* Everything closed has been read to the end and finished. */
	for (int k = 0; k < s->n_shards; k++) {
		if (s->shards[k].closed && !s->finished[k])
			VIOLATION(s, "%s closed but never finished", s->shards[k].id);
		if (!s->shards[k].closed && !s->seen_lease[k])
			VIOLATION(s, "%s open without a lease", s->shards[k].id);
	}
	printf("\n  seed %" PRIu64 ": %" PRIu64 " steps (%.0f s simulated), %u crashes, %u pauses, "
	       "%u restarts, %u joins, %u leaves, %u partitions, %u splits, %u merges\n",
	       sim_seed, s->steps, (double)s->steps * DT / 1000, s->crashes, s->pauses, s->restarts,
	       s->joins, s->leaves, s->partitions, s->splits, s->merges);
	printf("  %" PRIu64 " commits, %" PRIu64 " intents, %" PRIu64 " shard ends, %d shards\n",
	       s->commits, s->prepares, s->shard_ends, s->n_shards);
	print_measure("failover after crash (chaos):", &s->failover);
	print_measure("handover after release (chaos):", &s->handover);
	printf("  longest orphan window (chaos): %.1f s (bound %.1f s); worst settle: %u take passes\n",
	       (double)s->max_orphan_ms / 1000, (double)(F + TAKE + SCAN + 1000) / 1000, max_conv_passes);
	CU_ASSERT(s->commits > 1000);
	CU_ASSERT(s->shard_ends >= 3);
	/* every forced disruption found a worker to hit; random ones add more */
	CU_ASSERT_EQUAL(forced_ok, 4 * sim_cycles);
	CU_ASSERT(s->crashes + s->pauses + s->partitions + s->leaves >= (unsigned)(4 * sim_cycles));
	CU_ASSERT_EQUAL(s->violations, 0);
	if (s->violations)
		fprintf(stderr, "  replay with KL_SIM_SEED=%" PRIu64 "\n", sim_seed);
	sim_done(s);
	free(s);
}

/* A split, a split of a child of that split, and a merge, without chaos:
 * children wait for parents, finished parents are collected. */
static void test_sim_reshard(void)
{
	struct sim *s = calloc(1, sizeof(*s));
	int gc_done = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	sim_init(s, sim_seed ^ 0x5eed, 3, false);
	for (int i = 0; i < 3; i++)
		worker_up(s, i, true);
	s->n_slots = 3;
	for (int step = 0; step < 6000; step++) {
		if (step == 200)
			split_shard(s, 0);                       /* 0 -> 3, 4 */
		if (step == 600)
			split_shard(s, 3);                       /* 3 -> 5, 6: child of a split */
		if (step == 1000)
			merge_shards(s, 4, 1);                   /* 4 + 1 -> 7 */
		if (step == 1400)
			merge_shards(s, 6, 7);                   /* a child of a split + a merge child */
		sim_step(s);
	}
	for (int k = 0; k < s->n_shards; k++) {
		struct lease l;

		lease_init(&l);
		if (s->shards[k].closed) {
			CU_ASSERT(s->finished[k]);
			if (lease_mem_table_read(s->table, s->shards[k].id, &l) == KL_ENOTFOUND)
				gc_done++;
		} else {
			CU_ASSERT_EQUAL(lease_mem_table_read(s->table, s->shards[k].id, &l), KL_OK);
			CU_ASSERT(l.checkpoint.kind == LEASE_ESN_SEQ);
		}
		lease_done(&l);
	}
	printf("\n  reshard: %d shards, %d closed leases collected, %" PRIu64 " commits\n",
	       s->n_shards, gc_done, s->commits);
	/* 0, 3, 4, 1 have children that all started: collected (6/7 depend
	 * on timing of their child's first checkpoint). */
	CU_ASSERT(gc_done >= 4);
	CU_ASSERT_EQUAL(s->violations, 0);
	sim_done(s);
	free(s);
}

/* The figures for the closing note, on a perfect network with defaults:
 * 3 workers, 16 leases. */
static void test_sim_measure(void)
{
	struct measure conv = { 0 }, conv_ms = { 0 }, fail = { 0 }, hand = { 0 };

	for (int trial = 0; trial < sim_trials; trial++) {
		struct sim *s = calloc(1, sizeof(*s));
		unsigned target = 0;
		int64_t start;
		int victim, most = -1;
		unsigned passes = 0;

		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		sim_init(s, sim_seed + 1000 + (uint64_t)trial, 16, false);
		/* workers start within a second of each other */
		s->n_slots = 3;
		for (int i = 0; i < 3; i++) {
			for (int64_t t = rnd(s, 0, 5); t > 0; t--)
				sim_step(s);
			worker_up(s, i, true);
		}
		start = s->fc.mono_ms;
		while (!balanced(s, &target) && s->fc.mono_ms - start < 30 * TAKE)
			sim_step(s);
		CU_ASSERT(balanced(s, &target));
		for (int i = 0; i < 3; i++) {
			struct lease_status st;

			CU_ASSERT_EQUAL_FATAL(lease_coord_status(s->w[i].coord, &st), KL_OK);
			if (st.full_take_passes > passes)
				passes = (unsigned)st.full_take_passes;
			lease_status_done(&st);
		}
		measure_add(&conv, passes);
		measure_add(&conv_ms, s->fc.mono_ms - start);
		for (int step = 0; step < 300; step++)
			sim_step(s);

		/* crash the busiest worker at a random phase */
		for (int64_t t = rnd(s, 0, 60); t > 0; t--)
			sim_step(s);
		{
			struct lease_list dump;
			unsigned best = 0;

			CU_ASSERT_EQUAL_FATAL(lease_mem_table_dump(s->table, &dump), KL_OK);
			for (int i = 0; i < 3; i++) {
				unsigned n = 0;

				for (size_t j = 0; j < dump.n; j++)
					n += dump.items[j].owner && strcmp(dump.items[j].owner, s->w[i].id) == 0;
				if (most < 0 || n > best) {
					most = i;
					best = n;
				}
			}
			lease_list_done(&dump);
		}
		victim = most;
		s->failover = (struct measure){ 0 };
		worker_crash(s, victim);
		for (int step = 0; step < 600; step++)
			sim_step(s);
		if (s->failover.n)
			measure_add(&fail, s->failover.max);
		CU_ASSERT(s->failover.n > 0);

		/* restart it, let it settle, then stop another one gracefully */
		worker_up(s, victim, false);
		for (int step = 0; step < 2400; step++)
			sim_step(s);
		for (int64_t t = rnd(s, 0, 60); t > 0; t--)
			sim_step(s);
		worker_leave(s, (victim + 1) % 3);
		for (int step = 0; step < 300; step++)
			sim_step(s);
		if (s->handover.n)
			measure_add(&hand, s->handover.max);
		CU_ASSERT(s->handover.n > 0);
		CU_ASSERT_EQUAL(s->violations, 0);
		sim_done(s);
		free(s);
	}
	printf("\n  3 workers, 16 leases, defaults (failover 10 s, renew 3.3 s, scan 3.3 s, take 20 s):\n");
	printf("  %-34s min %5.0f    avg %5.1f    max %5.0f    (n=%u)\n",
	       "full take passes to converge:", (double)conv.min, conv.sum / conv.n, (double)conv.max,
	       conv.n);
	print_measure("time to converge from cold start:", &conv_ms);
	print_measure("failover after a crash (all leases):", &fail);
	print_measure("handover after graceful release:", &hand);
	/* Failover: the survivors first saw the dead worker's last counter at
	 * most a renew interval before the crash (no earlier take is
	 * possible), expiry follows failover later, then a scan or two (two
	 * survivors may race for the same lease): within the guarantee of
	 * failover + take interval. Handover: a peer's next scan or two. */
	CU_ASSERT(fail.min >= F - SCAN - 500);
	CU_ASSERT(fail.max <= F + TAKE);
	CU_ASSERT(hand.max <= 2 * SCAN + 500);
	CU_ASSERT(conv.min >= 1);
	CU_ASSERT(conv.max <= 8);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_sim_chaos),
		KL_TEST(test_sim_reshard),
		KL_TEST(test_sim_measure),
		{ 0 },
	};
	const char *env = getenv("KL_SIM_SEED");

	if (getenv("KL_SIM_TRACE"))
		sim_trace = atoi(getenv("KL_SIM_TRACE"));
	if (env && *env)
		sim_seed = strtoull(env, NULL, 0);
	else
		sim_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
	/* Under valgrind (about 60 times slower) run a shorter schedule: the
	 * same code paths, fewer steps. KL_SIM_SHORT=1 asks for it anywhere. */
	env = getenv("LD_PRELOAD");
	if ((env && strstr(env, "vgpreload")) || getenv("KL_SIM_SHORT")) {
		sim_cycles = 2;
		sim_trials = 3;
	}
	printf("test_lease_sim: KL_SIM_SEED=%" PRIu64 "%s\n", sim_seed,
	       sim_cycles < 4 ? " (short run under valgrind)" : "");
	return kl_test_run("lease_sim", t);
}
