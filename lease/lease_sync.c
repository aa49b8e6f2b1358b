/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_sync.c: shard sync (which leases to create), hash-range audits,
 * the shard sync leader, garbage collection of finished parents, and the
 * shard-end bookkeeping of resharding.
 *
 * Invariants: leases are created in starting sequence number order and a
 * sync stops at its first failed create, so an ancestor's lease is never
 * missing while a descendant's exists because of us; a child lease is
 * created (at TRIM_HORIZON) before its parent is checkpointed SHARD_END;
 * finished leases are deleted top-down, one generation per pass.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease_coord_int.h"
#include "lease_sync.h"

/* ---------------------------------------------------------------- shard lists */

enum kl_err lease_shard_list_add(struct lease_shard_list *list, const struct lease_shard *s)
{
	struct lease_shard *v, out;

	memset(&out, 0, sizeof(out));
	if (lease_set_str(&out.shard_id, s->shard_id) != KL_OK ||
	    lease_set_str(&out.parent_id, s->parent_id) != KL_OK ||
	    lease_set_str(&out.adjacent_parent_id, s->adjacent_parent_id) != KL_OK ||
	    lease_set_str(&out.starting_hash_key, s->starting_hash_key) != KL_OK ||
	    lease_set_str(&out.ending_hash_key, s->ending_hash_key) != KL_OK ||
	    lease_set_str(&out.starting_seq, s->starting_seq) != KL_OK ||
	    lease_set_str(&out.ending_seq, s->ending_seq) != KL_OK)
		goto fail;
	v = realloc(list->v, (list->n + 1) * sizeof(*v));
	if (!v)
		goto fail;
	v[list->n++] = out;
	list->v = v;
	return KL_OK;
fail:
	free(out.shard_id);
	free(out.parent_id);
	free(out.adjacent_parent_id);
	free(out.starting_hash_key);
	free(out.ending_hash_key);
	free(out.starting_seq);
	free(out.ending_seq);
	return KL_ENOMEM;
}

void lease_shard_list_done(struct lease_shard_list *list)
{
	if (!list)
		return;
	for (size_t i = 0; i < list->n; i++) {
		struct lease_shard *s = &list->v[i];

		free(s->shard_id);
		free(s->parent_id);
		free(s->adjacent_parent_id);
		free(s->starting_hash_key);
		free(s->ending_hash_key);
		free(s->starting_seq);
		free(s->ending_seq);
	}
	free(list->v);
	list->v = NULL;
	list->n = 0;
}

/* ---------------------------------------------------------------- hash ranges */

static int range_cmp(const void *a, const void *b)
{
	const struct lease_hash_range *ra = a, *rb = b;

	return lease_dec_cmp(ra->start, rb->start);
}

bool lease_hash_ranges_cover(const struct lease_hash_range *ranges, size_t n,
			     char *hole, size_t holesz)
{
	struct lease_hash_range *sorted;
	char next[64] = "0", tmp[64];
	bool ok = true;

	for (size_t i = 0; i < n; i++) {
		if (!lease_dec_valid(ranges[i].start) || !lease_dec_valid(ranges[i].end)) {
			if (hole && holesz)
				snprintf(hole, holesz, "%s", "malformed");
			return false;
		}
	}
	sorted = malloc((n ? n : 1) * sizeof(*sorted));
	if (!sorted)
		return false;
	if (n)
		memcpy(sorted, ranges, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), range_cmp);
	/* next = the first key not covered yet */
	for (size_t i = 0; i < n && ok; i++) {
		if (lease_dec_cmp(sorted[i].start, next) > 0)
			ok = false;
		else if (lease_dec_cmp(sorted[i].end, next) >= 0) {
			if (lease_dec_inc(sorted[i].end, tmp, sizeof(tmp)) != KL_OK)
				ok = false;
			else
				memcpy(next, tmp, sizeof(next));
		}
	}
	free(sorted);
	if (ok && lease_dec_cmp(next, LEASE_HASH_KEY_MAX) > 0)
		return true;
	if (hole && holesz)
		snprintf(hole, holesz, "%s", next);
	return false;
}

/* ---------------------------------------------------------------- sync plan */

struct plan_ctx {
	const struct lease_shard *shards;
	size_t n;
	size_t *by_id;          /* shard indexes sorted by id */
	const char **leased;    /* sorted lease keys */
	size_t n_leased;
	bool from_oldest;       /* TRIM_HORIZON or AT_TIMESTAMP: start at the oldest ancestors */
	signed char *covered;   /* -1 unknown, 0/1, 2 while visiting */
	bool *planned;
};

/* Sort keys carry what they compare, so plain qsort() suffices. */
struct id_key {
	const char *id;
	size_t idx;
};

static int id_key_cmp(const void *a, const void *b)
{
	const struct id_key *ka = a, *kb = b;

	return strcmp(ka->id, kb->id);
}

/* Index of shard id, or (size_t)-1. */
static size_t plan_find(const struct plan_ctx *p, const char *id)
{
	size_t lo = 0, hi = p->n;

	if (!id)
		return (size_t)-1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(p->shards[p->by_id[mid]].shard_id, id);

		if (c == 0)
			return p->by_id[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (size_t)-1;
}

static int str_ptr_cmp(const void *a, const void *b)
{
	const char *const *sa = a, *const *sb = b;

	return strcmp(*sa, *sb);
}

static bool plan_leased(const struct plan_ctx *p, size_t i)
{
	const char *id = p->shards[i].shard_id;

	return p->n_leased &&
	       bsearch(&id, p->leased, p->n_leased, sizeof(*p->leased), str_ptr_cmp) != NULL;
}

/*
 * Is shard i covered, i.e. leased or descending from a leased shard (or,
 * when starting at the oldest data, from any shard of the listing)? Marks
 * the leases to create on the way: the nearest uncovered parents of each
 * covered, unleased shard.
 */
static bool plan_visit(struct plan_ctx *p, size_t i)
{
	size_t par[2];
	bool cov = false;

	if (p->covered[i] == 2)
		return false; /* a cycle in malformed input */
	if (p->covered[i] >= 0)
		return p->covered[i] == 1;
	if (plan_leased(p, i)) {
		p->covered[i] = 1;
		return true;
	}
	p->covered[i] = 2;
	par[0] = plan_find(p, p->shards[i].parent_id);
	par[1] = plan_find(p, p->shards[i].adjacent_parent_id);
	for (int k = 0; k < 2; k++) {
		if (par[k] == (size_t)-1)
			continue;
		/* An uncovered parent is where processing starts when we read
		 * from the oldest data, so it covers its child too. */
		if (plan_visit(p, par[k]) || p->from_oldest)
			cov = true;
	}
	p->covered[i] = cov ? 1 : 0;
	if (cov)
		for (int k = 0; k < 2; k++)
			if (par[k] != (size_t)-1 && !plan_leased(p, par[k]) && !plan_visit(p, par[k]))
				p->planned[par[k]] = true;
	return cov;
}

struct seq_key {
	const char *seq;  /* NULL sorts last */
	const char *id;
	struct lease_sync_new item;
};

static int seq_key_cmp(const void *a, const void *b)
{
	const struct seq_key *ka = a, *kb = b;
	int c;

	if (ka->seq && kb->seq && (c = lease_dec_cmp(ka->seq, kb->seq)) != 0)
		return c;
	if (!ka->seq != !kb->seq)
		return ka->seq ? -1 : 1;
	return strcmp(ka->id, kb->id);
}

void lease_sync_plan_done(struct lease_sync_plan *plan)
{
	if (!plan)
		return;
	free(plan->v);
	plan->v = NULL;
	plan->n = 0;
}

enum kl_err lease_sync_plan(const struct lease_shard *shards, size_t n,
			    const struct lease_strset *leased, bool table_empty,
			    enum lease_esn_kind initial, struct lease_sync_plan *ret)
{
	struct plan_ctx p;
	struct lease_sync_plan out = { NULL, 0 };
	struct id_key *keys = NULL;
	struct seq_key *seqs = NULL;
	enum kl_err err = KL_ENOMEM;

	for (size_t i = 0; i < n; i++)
		if (!shards[i].shard_id)
			return KL_EINVAL;
	memset(&p, 0, sizeof(p));
	p.shards = shards;
	p.n = n;
	p.from_oldest = initial == LEASE_ESN_TRIM_HORIZON || initial == LEASE_ESN_AT_TIMESTAMP;
	p.by_id = calloc(n ? n : 1, sizeof(*p.by_id));
	p.covered = malloc(n ? n : 1);
	p.planned = calloc(n ? n : 1, sizeof(*p.planned));
	p.n_leased = leased ? leased->n : 0;
	p.leased = calloc(p.n_leased ? p.n_leased : 1, sizeof(*p.leased));
	out.v = calloc(n ? n : 1, sizeof(*out.v));
	if (!p.by_id || !p.covered || !p.planned || !p.leased || !out.v)
		goto done;
	keys = calloc(n ? n : 1, sizeof(*keys));
	if (!keys)
		goto done;
	for (size_t i = 0; i < n; i++) {
		keys[i].id = shards[i].shard_id;
		keys[i].idx = i;
		p.covered[i] = -1;
	}
	qsort(keys, n, sizeof(*keys), id_key_cmp);
	for (size_t i = 0; i < n; i++)
		p.by_id[i] = keys[i].idx;
	for (size_t i = 0; i < p.n_leased; i++)
		p.leased[i] = leased->v[i];
	qsort(p.leased, p.n_leased, sizeof(*p.leased), str_ptr_cmp);

	if (table_empty) {
		for (size_t i = 0; i < n; i++)
			p.planned[i] = true;
	} else {
		for (size_t i = 0; i < n; i++) {
			if (shards[i].ending_seq || plan_leased(&p, i))
				continue; /* closed, or already has a lease */
			if (!plan_visit(&p, i))
				p.planned[i] = true;
		}
	}
	seqs = calloc(n ? n : 1, sizeof(*seqs));
	if (!seqs)
		goto done;
	for (size_t i = 0; i < n; i++) {
		if (!p.planned[i] || plan_leased(&p, i))
			continue;
		seqs[out.n].seq = shards[i].starting_seq;
		seqs[out.n].id = shards[i].shard_id;
		seqs[out.n].item.shard = i;
		seqs[out.n].item.checkpoint = lease_esn_sentinel(initial);
		out.n++;
	}
	/* Ancestors start before their descendants: create in that order. */
	qsort(seqs, out.n, sizeof(*seqs), seq_key_cmp);
	for (size_t i = 0; i < out.n; i++)
		out.v[i] = seqs[i].item;
	*ret = out;
	out.v = NULL;
	err = KL_OK;
done:
	free(keys);
	free(seqs);
	free(p.by_id);
	free(p.covered);
	free(p.planned);
	free(p.leased);
	free(out.v);
	return err;
}

/* ---------------------------------------------------------------- leader, GC */

static uint64_t fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

size_t lease_leader_pick(const char *const *owners, size_t n)
{
	size_t best = n;
	uint64_t best_h = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t h = fnv1a64(owners[i]);

		if (best == n || h < best_h || (h == best_h && strcmp(owners[i], owners[best]) < 0)) {
			best = i;
			best_h = h;
		}
	}
	return best;
}

const struct lease *lease_gc_find_in_list(void *list, const char *key)
{
	return lease_list_find(list, key);
}

bool lease_gc_may_delete(const struct lease *f,
			 const struct lease *(*find)(void *ctx, const char *key), void *ctx,
			 const struct lease_strset *children_hint)
{
	const struct lease_strset *kids = f->children.n ? &f->children : children_hint;

	if (!lease_is_finished(f) || !kids || !kids->n)
		return false;
	for (size_t i = 0; i < kids->n; i++) {
		const struct lease *k = find(ctx, kids->v[i]);

		if (!k)
			return false;
		switch (k->checkpoint.kind) {
		case LEASE_ESN_NONE:
		case LEASE_ESN_TRIM_HORIZON:
		case LEASE_ESN_AT_TIMESTAMP:
			return false;
		case LEASE_ESN_LATEST:
		case LEASE_ESN_SEQ:
		case LEASE_ESN_SHARD_END:
			break;
		}
	}
	for (size_t i = 0; i < f->parents.n; i++)
		if (find(ctx, f->parents.v[i]))
			return false;
	return true;
}

/* ---------------------------------------------------------------- coordinator: leader */

void coord_elect(struct lease_coord *c)
{
	const char **owners;
	size_t n = 0, pick;
	int64_t now = coord_now(c);
	bool leader = true;

	owners = calloc(c->n_views ? c->n_views : 1, sizeof(*owners));
	if (!owners)
		return; /* keep the previous answer */
	for (size_t i = 0; i < c->n_views; i++) {
		const struct coord_view *v = &c->views[i];

		if (v->rec.owner && !lease_is_finished(&v->rec) && !coord_view_expired(c, v, now))
			owners[n++] = v->rec.owner;
	}
	/* Nobody alive owns anything (empty table, or everyone gone): every
	 * worker may sync; creates are conditional, so racing is harmless. */
	if (n) {
		pick = lease_leader_pick(owners, n);
		leader = strcmp(owners[pick], c->worker_id) == 0;
	}
	free(owners);
	pthread_mutex_lock(&c->mu);
	c->leader = leader;
	pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- coordinator: audits */

static const struct lease *view_find(void *ctx, const char *key)
{
	const struct coord_view *v = coord_find_view(ctx, key);

	return v ? &v->rec : NULL;
}

void coord_audit_leases(struct lease_coord *c)
{
	struct lease_hash_range *r;
	size_t n = 0;
	bool covered;

	r = calloc(c->n_views ? c->n_views : 1, sizeof(*r));
	if (!r)
		return;
	for (size_t i = 0; i < c->n_views; i++) {
		const struct lease *l = &c->views[i].rec;

		if (lease_is_finished(l))
			continue;
		if (!l->starting_hash_key || !l->ending_hash_key) {
			/* Leases written without hash ranges: cannot audit. */
			free(r);
			return;
		}
		r[n].start = l->starting_hash_key;
		r[n].end = l->ending_hash_key;
		n++;
	}
	covered = n && lease_hash_ranges_cover(r, n, NULL, 0);
	free(r);
	pthread_mutex_lock(&c->mu);
	c->hash_holes_in_a_row = covered ? 0 : c->hash_holes_in_a_row + 1;
	/* A hole seen on three audits in a row (not a resharding in flight):
	 * run shard sync now rather than at its period. */
	if (c->hash_holes_in_a_row >= 3 && c->n_views)
		c->next_sync_ms = coord_now(c);
	pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- coordinator: sync */

static enum lease_esn_kind initial_kind(const struct lease_coord *c)
{
	switch (c->initial_position) {
	case LEASE_INITIAL_TRIM_HORIZON: return LEASE_ESN_TRIM_HORIZON;
	case LEASE_INITIAL_AT_TIMESTAMP: return LEASE_ESN_AT_TIMESTAMP;
	case LEASE_INITIAL_LATEST: return LEASE_ESN_LATEST;
	}
	return LEASE_ESN_LATEST;
}

static enum lease_shard_filter initial_filter(const struct lease_coord *c)
{
	switch (c->initial_position) {
	case LEASE_INITIAL_TRIM_HORIZON: return LEASE_SHARDS_AT_TRIM_HORIZON;
	case LEASE_INITIAL_AT_TIMESTAMP: return LEASE_SHARDS_AT_TIMESTAMP;
	case LEASE_INITIAL_LATEST: return LEASE_SHARDS_AT_LATEST;
	}
	return LEASE_SHARDS_AT_LATEST;
}

/* Builds the lease record of a new lease for shard s. */
static enum kl_err new_lease_for(const struct lease_shard *s, const struct lease_esn *cp,
				 struct lease *ret)
{
	struct lease l;

	lease_init(&l);
	l.checkpoint = *cp;
	if (lease_set_str(&l.key, s->shard_id) != KL_OK ||
	    (s->parent_id && lease_strset_add(&l.parents, s->parent_id) != KL_OK) ||
	    (s->adjacent_parent_id && lease_strset_add(&l.parents, s->adjacent_parent_id) != KL_OK) ||
	    (s->starting_hash_key && s->ending_hash_key &&
	     (lease_set_str(&l.starting_hash_key, s->starting_hash_key) != KL_OK ||
	      lease_set_str(&l.ending_hash_key, s->ending_hash_key) != KL_OK))) {
		lease_done(&l);
		return KL_ENOMEM;
	}
	*ret = l;
	return KL_OK;
}

/*
 * True when the shards of list cover the key space: the open ones, or with
 * all set every listed shard. A listing filtered by the initial position
 * (empty table) holds shards that were all open at one instant, the trim
 * horizon say, and that may all be closed by now.
 */
static bool shards_cover(const struct lease_shard_list *list, bool all, char *hole,
			 size_t holesz)
{
	struct lease_hash_range *r = calloc(list->n ? list->n : 1, sizeof(*r));
	size_t n = 0;
	bool ok;

	if (!r)
		return false;
	for (size_t i = 0; i < list->n; i++) {
		if (list->v[i].ending_seq && !all)
			continue;
		r[n].start = list->v[i].starting_hash_key;
		r[n].end = list->v[i].ending_hash_key;
		n++;
	}
	ok = lease_hash_ranges_cover(r, n, hole, holesz);
	free(r);
	return ok;
}

/* Creates the missing leases. Tick thread. */
static enum kl_err sync_leases(struct lease_coord *c, struct lease_shard_list *list,
			       uint32_t *ret_created, struct kl_errinfo *info)
{
	struct lease_strset leased = { NULL, 0 };
	struct lease_sync_plan plan = { NULL, 0 };
	bool empty = c->n_views == 0;
	char hole[64];
	uint32_t created = 0;
	enum kl_err err;

	err = c->shards.list(c->shards.ctx, empty ? initial_filter(c) : LEASE_SHARDS_ALL,
			     c->initial_timestamp_ms, list, info);
	if (err != KL_OK)
		return err;
	if (!shards_cover(list, empty, hole, sizeof(hole))) {
		/* An incomplete listing (resharding in flight, paging race):
		 * never create leases from it for an empty table. */
		if (empty)
			return kl_errinfo_set(info, KL_ESTATE,
					      "lease: listed shards leave a hash key hole at %s", hole);
		coord_note_error(c, KL_ESTATE, NULL, "shard sync: open shards leave a hash key hole");
	}
	for (size_t i = 0; i < c->n_views; i++)
		if (lease_strset_add(&leased, c->views[i].rec.key) != KL_OK) {
			lease_strset_done(&leased);
			return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
		}
	err = lease_sync_plan(list->v, list->n, &leased, empty, initial_kind(c), &plan);
	lease_strset_done(&leased);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease: shard sync plan failed");
	for (size_t i = 0; i < plan.n && err == KL_OK; i++) {
		struct lease l;

		err = new_lease_for(&list->v[plan.v[i].shard], &plan.v[i].checkpoint, &l);
		if (err != KL_OK)
			break;
		err = lease_store_create(c->store, &l, info);
		lease_done(&l);
		if (err == KL_OK)
			created++;
		else if (err == KL_ECONFLICT)
			err = KL_OK; /* someone else created it */
		/* any other error stops here: ancestors before descendants */
	}
	lease_sync_plan_done(&plan);
	*ret_created = created;
	return err;
}

/* Deletes finished leases whose children have all started. Tick thread. */
static void gc_leases(struct lease_coord *c, const struct lease_shard_list *list)
{
	for (size_t i = 0; i < c->n_views; i++) {
		const struct lease *f = &c->views[i].rec;
		struct lease_strset hint = { NULL, 0 };
		bool ok = true;

		if (!lease_is_finished(f))
			continue;
		if (!f->children.n && list)
			for (size_t k = 0; k < list->n && ok; k++)
				if ((list->v[k].parent_id && strcmp(list->v[k].parent_id, f->key) == 0) ||
				    (list->v[k].adjacent_parent_id &&
				     strcmp(list->v[k].adjacent_parent_id, f->key) == 0))
					ok = lease_strset_add(&hint, list->v[k].shard_id) == KL_OK;
		if (ok && lease_gc_may_delete(f, view_find, c, &hint)) {
			struct kl_errinfo ei;

			kl_errinfo_clear(&ei);
			if (lease_store_delete(c->store, f->key, f->counter, &ei) == KL_OK) {
				pthread_mutex_lock(&c->mu);
				c->n_deleted++;
				pthread_mutex_unlock(&c->mu);
			}
		}
		lease_strset_done(&hint);
	}
}

enum kl_err coord_sync_pass(struct lease_coord *c, struct kl_errinfo *info)
{
	struct lease_shard_list list = { NULL, 0 };
	int64_t start = coord_now(c);
	uint32_t created = 0;
	enum kl_err err;
	int64_t retry_ms = c->failover_ms < c->sync_interval_ms ? c->failover_ms : c->sync_interval_ms;

	if (!c->leader) {
		pthread_mutex_lock(&c->mu);
		c->next_sync_ms = start + c->sync_interval_ms;
		pthread_mutex_unlock(&c->mu);
		return KL_OK;
	}
	err = sync_leases(c, &list, &created, info);
	if (c->cleanup && (err == KL_OK || list.n))
		gc_leases(c, list.n ? &list : NULL);
	lease_shard_list_done(&list);
	pthread_mutex_lock(&c->mu);
	c->st_sync.at_ms = start;
	c->st_sync.duration_ms = coord_now(c) - start;
	c->st_sync.ok = created;
	c->st_sync.failed = err != KL_OK;
	c->n_created += created;
	c->next_sync_ms = start + (err == KL_OK ? c->sync_interval_ms : retry_ms);
	if (created)
		c->next_scan_ms = coord_now(c); /* pick the new leases up at once */
	pthread_mutex_unlock(&c->mu);
	if (err != KL_OK)
		return coord_note_error(c, err, info, "shard sync");
	return KL_OK;
}

/* ---------------------------------------------------------------- resharding */

enum kl_err lease_coord_shard_end(struct lease_coord *c, const char *key, uint64_t token,
				  const struct lease_shard *children, size_t n,
				  struct kl_errinfo *info)
{
	struct coord_held *h;
	struct lease_strset kids = { NULL, 0 };
	struct lease_esn end = lease_esn_sentinel(LEASE_ESN_SHARD_END);
	struct lease_esn trim = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	uint32_t created = 0;
	enum kl_err err;

	pthread_mutex_lock(&c->mu);
	h = coord_find_token(c, key, token);
	if (!h) {
		pthread_mutex_unlock(&c->mu);
		return kl_errinfo_set(info, KL_ELEASE_LOST, "lease: '%s' is not held", key);
	}
	err = coord_claim_for_consumer(c, h);
	pthread_mutex_unlock(&c->mu);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease: '%s' is %s", key,
				      err == KL_ESTATE ? "not processable yet" : "no longer held");

	/* A merge needs both parent leases (present or both absent): the
	 * child must not start while the co-parent's data is unread. */
	if (n == 1 && children[0].parent_id && children[0].adjacent_parent_id) {
		const char *other = strcmp(children[0].parent_id, key) == 0 ?
				    children[0].adjacent_parent_id : children[0].parent_id;
		struct lease co;

		lease_init(&co);
		err = lease_store_get(c->store, other, &co, info);
		lease_done(&co);
		if (err == KL_ENOTFOUND)
			err = kl_errinfo_set(info, KL_ESTATE,
					     "lease: merge of '%s' into '%s' waits for a lease on '%s'",
					     key, children[0].shard_id, other);
		if (err != KL_OK)
			goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct lease l;

		if (!children[i].shard_id) {
			err = kl_errinfo_set(info, KL_EINVAL, "lease: child shard without id");
			goto out;
		}
		err = new_lease_for(&children[i], &trim, &l);
		if (err == KL_OK) {
			err = lease_store_create(c->store, &l, info);
			lease_done(&l);
		}
		if (err == KL_OK)
			created++;
		else if (err != KL_ECONFLICT)
			goto out;
		err = lease_strset_add(&kids, children[i].shard_id);
		if (err != KL_OK)
			goto out;
	}
	if (kids.n) {
		err = lease_store_update_meta(c->store, key, &kids, NULL, NULL, info);
		if (err == KL_ECONFLICT) {
			pthread_mutex_lock(&c->mu);
			coord_end_held(c, h, LEASE_STATE_LOST, "lease deleted");
			pthread_mutex_unlock(&c->mu);
			err = kl_errinfo_set(info, KL_ELEASE_LOST, "lease: '%s' no longer exists", key);
		}
		if (err != KL_OK)
			goto out;
	}
	err = coord_held_write(c, h, COORD_WRITE_CHECKPOINT, &end, NULL, 0, info);
	if (err != KL_OK)
		goto out;
	pthread_mutex_lock(&c->mu);
	lease_strset_done(&h->rec.children);
	h->rec.children = kids;
	kids.v = NULL;
	kids.n = 0;
	/* Nothing left to process: drop it and hand it back to the table. */
	coord_end_held(c, h, LEASE_STATE_FINISHED, "shard ended");
	pthread_mutex_unlock(&c->mu);
	(void)coord_held_write(c, h, COORD_WRITE_RELEASE, NULL, NULL, 0, NULL);
out:
	pthread_mutex_lock(&c->mu);
	c->n_created += created;
	pthread_mutex_unlock(&c->mu);
	lease_strset_done(&kids);
	coord_unclaim(c, h);
	return err;
}
