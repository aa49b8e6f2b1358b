/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_store_mem.c: the in-memory lease table and its fault-injecting
 * store handles. Each operation mirrors the DynamoDB request documented in
 * lease_store.h: conditions are checked first, then only the named fields
 * change, so extra attributes survive every write.
 *
 * Invariant: items stay sorted by key; the table lock is held for the
 * whole of a call's fault decision and application, never while sleeping.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lease_store_mem.h"
#include "util.h"

struct lease_mem_table {
	pthread_mutex_t mu;
	struct lease_list items; /* sorted by key */
};

struct mem_handle {
	struct lease_mem_table *table;
	bool has_clock;
	struct lease_clock clock;
	struct lease_mem_faults faults;
	struct kl_rng rng;
	struct lease_mem_stats stats;
};

static const struct lease_store_ops mem_ops;

/* ---------------------------------------------------------------- table */

struct lease_mem_table *lease_mem_table_new(void)
{
	struct lease_mem_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	if (pthread_mutex_init(&t->mu, NULL) != 0) {
		free(t);
		return NULL;
	}
	lease_list_init(&t->items);
	return t;
}

void lease_mem_table_free(struct lease_mem_table *t)
{
	if (!t)
		return;
	lease_list_done(&t->items);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* Index of key, or the insertion point with *found false. Lock held. */
static size_t table_pos(const struct lease_mem_table *t, const char *key, bool *found)
{
	size_t lo = 0, hi = t->items.n;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(t->items.items[mid].key, key);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The lease entity with key, or NULL. Lock held. */
static struct lease *table_lease(struct lease_mem_table *t, const char *key)
{
	bool found;
	size_t i = table_pos(t, key, &found);

	if (!found || !lease_is_lease_entity(&t->items.items[i]))
		return NULL;
	return &t->items.items[i];
}

/* Inserts a deep copy of l at its sorted place (key must be absent). */
static enum kl_err table_insert(struct lease_mem_table *t, const struct lease *l)
{
	bool found;
	size_t pos = table_pos(t, l->key, &found);
	struct lease tmp;

	if (lease_list_add(&t->items, l) != KL_OK)
		return KL_ENOMEM;
	tmp = t->items.items[t->items.n - 1];
	memmove(&t->items.items[pos + 1], &t->items.items[pos],
		(t->items.n - 1 - pos) * sizeof(tmp));
	t->items.items[pos] = tmp;
	return KL_OK;
}

static void table_remove(struct lease_mem_table *t, size_t pos)
{
	lease_done(&t->items.items[pos]);
	memmove(&t->items.items[pos], &t->items.items[pos + 1],
		(t->items.n - 1 - pos) * sizeof(t->items.items[0]));
	t->items.n--;
}

enum kl_err lease_mem_table_put(struct lease_mem_table *t, const struct lease *l)
{
	bool found;
	size_t pos;
	enum kl_err err = KL_OK;
	struct lease copy;

	if (!l->key)
		return KL_EINVAL;
	pthread_mutex_lock(&t->mu);
	pos = table_pos(t, l->key, &found);
	if (found) {
		if (lease_copy(&copy, l) != KL_OK) {
			err = KL_ENOMEM;
		} else {
			lease_done(&t->items.items[pos]);
			t->items.items[pos] = copy;
		}
	} else {
		err = table_insert(t, l);
	}
	pthread_mutex_unlock(&t->mu);
	return err;
}

enum kl_err lease_mem_table_read(struct lease_mem_table *t, const char *key, struct lease *ret)
{
	bool found;
	size_t pos;
	enum kl_err err = KL_ENOTFOUND;

	pthread_mutex_lock(&t->mu);
	pos = table_pos(t, key, &found);
	if (found)
		err = lease_copy(ret, &t->items.items[pos]);
	pthread_mutex_unlock(&t->mu);
	return err;
}

enum kl_err lease_mem_table_dump(struct lease_mem_table *t, struct lease_list *ret)
{
	struct lease_list out;
	enum kl_err err = KL_OK;

	lease_list_init(&out);
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < t->items.n && err == KL_OK; i++)
		err = lease_list_add(&out, &t->items.items[i]);
	pthread_mutex_unlock(&t->mu);
	if (err != KL_OK) {
		lease_list_done(&out);
		return err;
	}
	*ret = out;
	return KL_OK;
}

/* ---------------------------------------------------------------- faults */

static bool draw(struct mem_handle *h, uint32_t permille)
{
	return permille && kl_rng_below(&h->rng, 1000) < permille;
}

static enum kl_err fail_err(const struct mem_handle *h)
{
	return h->faults.fail_err == KL_OK ? KL_ETIMEOUT : h->faults.fail_err;
}

/*
 * Called with the lock held before applying op: returns KL_OK to go on or
 * the injected error (the call is then not applied).
 */
static enum kl_err fault_before(struct mem_handle *h, enum lease_mem_op op,
				struct kl_errinfo *info)
{
	h->stats.calls[op]++;
	if (h->faults.partitioned) {
		h->stats.injected++;
		return kl_errinfo_set(info, KL_ETIMEOUT, "lease mem store: partitioned (injected)");
	}
	if (h->faults.fail_next) {
		h->faults.fail_next--;
		h->stats.injected++;
		return kl_errinfo_set(info, fail_err(h), "lease mem store: injected failure");
	}
	if (draw(h, h->faults.fail_permille)) {
		h->stats.injected++;
		return kl_errinfo_set(info, fail_err(h), "lease mem store: injected failure");
	}
	return KL_OK;
}

/* Called with the lock held after a write was applied successfully:
 * may turn the success into a lost reply or a ghost conflict. */
static enum kl_err fault_after_write(struct mem_handle *h, enum lease_mem_op op,
				     struct kl_errinfo *info)
{
	h->stats.applied[op]++;
	if (h->faults.lost_reply_next) {
		h->faults.lost_reply_next--;
		h->stats.injected++;
		return kl_errinfo_set(info, KL_ETIMEOUT, "lease mem store: reply lost (injected)");
	}
	if (draw(h, h->faults.lost_reply_permille)) {
		h->stats.injected++;
		return kl_errinfo_set(info, KL_ETIMEOUT, "lease mem store: reply lost (injected)");
	}
	if (h->faults.ghost_conflict_next) {
		h->faults.ghost_conflict_next--;
		h->stats.injected++;
		return kl_errinfo_set(info, KL_ECONFLICT,
				      "lease mem store: conditional check failed on retry (injected)");
	}
	if (draw(h, h->faults.ghost_conflict_permille)) {
		h->stats.injected++;
		return kl_errinfo_set(info, KL_ECONFLICT,
				      "lease mem store: conditional check failed on retry (injected)");
	}
	return KL_OK;
}

static void pause_for(struct mem_handle *h, int64_t ms)
{
	if (ms > 0 && h->has_clock && h->clock.sleep_ms)
		h->clock.sleep_ms(h->clock.ctx, ms);
}

/* Starts a call: latency, lock, pre-faults. On error the lock is released. */
static enum kl_err call_begin(struct mem_handle *h, enum lease_mem_op op, struct kl_errinfo *info)
{
	enum kl_err err;

	pause_for(h, h->faults.latency_ms);
	pthread_mutex_lock(&h->table->mu);
	err = fault_before(h, op, info);
	if (err != KL_OK)
		pthread_mutex_unlock(&h->table->mu);
	return err;
}

/* Ends a write: post-faults when it applied, unlock, reply latency. */
static enum kl_err call_end_write(struct mem_handle *h, enum lease_mem_op op, enum kl_err err,
				  struct kl_errinfo *info)
{
	if (err == KL_OK)
		err = fault_after_write(h, op, info);
	else if (err == KL_ECONFLICT)
		h->stats.conflicts++;
	pthread_mutex_unlock(&h->table->mu);
	pause_for(h, h->faults.reply_latency_ms);
	return err;
}

static enum kl_err call_end_read(struct mem_handle *h, enum kl_err err)
{
	pthread_mutex_unlock(&h->table->mu);
	pause_for(h, h->faults.reply_latency_ms);
	return err;
}

static enum kl_err conflict(struct kl_errinfo *info, const char *op, const char *key)
{
	return kl_errinfo_set(info, KL_ECONFLICT, "lease mem store: %s '%s': conditional check failed",
			      op, key);
}

/* The lease for a counter-conditioned write, or NULL (condition failed). */
static struct lease *cond_counter(struct mem_handle *h, const char *key, uint64_t counter)
{
	struct lease *l = table_lease(h->table, key);

	return l && l->counter == counter ? l : NULL;
}

/* ---------------------------------------------------------------- ops */

static enum kl_err mem_scan(void *ctx, struct lease_list *ret, struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease_list out;
	enum kl_err err;

	err = call_begin(h, LEASE_MEM_OP_SCAN, info);
	if (err != KL_OK)
		return err;
	lease_list_init(&out);
	for (size_t i = 0; i < h->table->items.n && err == KL_OK; i++)
		if (lease_is_lease_entity(&h->table->items.items[i]))
			err = lease_list_add(&out, &h->table->items.items[i]);
	err = call_end_read(h, err);
	if (err != KL_OK) {
		lease_list_done(&out);
		return kl_errinfo_set(info, err, "lease mem store: scan: out of memory");
	}
	*ret = out;
	return KL_OK;
}

static enum kl_err mem_get(void *ctx, const char *key, struct lease *ret, struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	struct lease out;
	enum kl_err err;

	err = call_begin(h, LEASE_MEM_OP_GET, info);
	if (err != KL_OK)
		return err;
	l = table_lease(h->table, key);
	if (!l)
		err = KL_ENOTFOUND;
	else
		err = lease_copy(&out, l);
	err = call_end_read(h, err);
	if (err == KL_ENOTFOUND)
		return kl_errinfo_set(info, err, "lease mem store: no lease '%s'", key);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease mem store: get: out of memory");
	*ret = out;
	return KL_OK;
}

static enum kl_err mem_create(void *ctx, const struct lease *l, struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease rec;
	bool found;
	enum kl_err err;

	if (!l->key || l->checkpoint.kind == LEASE_ESN_NONE)
		return kl_errinfo_set(info, KL_EINVAL, "lease mem store: create needs a key and a checkpoint");
	err = call_begin(h, LEASE_MEM_OP_CREATE, info);
	if (err != KL_OK)
		return err;
	table_pos(h->table, l->key, &found);
	if (found) {
		err = conflict(info, "create", l->key);
	} else if ((err = lease_copy(&rec, l)) == KL_OK) {
		/* PutItem of the known fields only. */
		for (size_t i = 0; i < rec.n_extra; i++) {
			free(rec.extra[i].name);
			free(rec.extra[i].value);
		}
		free(rec.extra);
		rec.extra = NULL;
		rec.n_extra = 0;
		lease_set_str(&rec.session, NULL);
		lease_set_str(&rec.entity_type, NULL);
		rec.heartbeat_ms = 0;
		err = table_insert(h->table, &rec);
		lease_done(&rec);
	}
	return call_end_write(h, LEASE_MEM_OP_CREATE, err, info);
}

static enum kl_err mem_renew(void *ctx, const char *key, uint64_t counter, const char *session,
			     int64_t heartbeat_ms, struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	enum kl_err err;

	err = call_begin(h, LEASE_MEM_OP_RENEW, info);
	if (err != KL_OK)
		return err;
	l = cond_counter(h, key, counter);
	if (!l) {
		err = conflict(info, "renew", key);
	} else if ((err = lease_set_str(&l->session, session)) == KL_OK) {
		l->counter = counter + 1;
		if (heartbeat_ms > 0)
			l->heartbeat_ms = heartbeat_ms;
	}
	return call_end_write(h, LEASE_MEM_OP_RENEW, err, info);
}

static enum kl_err mem_take(void *ctx, const char *key, uint64_t counter, const char *owner,
			    const char *session, int64_t heartbeat_ms, bool owner_changes,
			    struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	enum kl_err err;

	err = call_begin(h, LEASE_MEM_OP_TAKE, info);
	if (err != KL_OK)
		return err;
	l = cond_counter(h, key, counter);
	if (!l) {
		err = conflict(info, "take", key);
	} else {
		char *o = strdup(owner), *s = session ? strdup(session) : NULL;

		if (!o || (session && !s)) {
			free(o);
			free(s);
			err = KL_ENOMEM;
		} else {
			free(l->owner);
			l->owner = o;
			free(l->session);
			l->session = s;
			l->counter = counter + 1;
			if (heartbeat_ms > 0)
				l->heartbeat_ms = heartbeat_ms;
			if (owner_changes)
				l->owner_switches++;
		}
	}
	return call_end_write(h, LEASE_MEM_OP_TAKE, err, info);
}

static enum kl_err mem_release(void *ctx, const char *key, uint64_t counter, const char *owner,
			       struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	enum kl_err err;

	err = call_begin(h, LEASE_MEM_OP_RELEASE, info);
	if (err != KL_OK)
		return err;
	l = cond_counter(h, key, counter);
	if (!l || !l->owner || strcmp(l->owner, owner) != 0) {
		err = conflict(info, "release", key);
	} else {
		free(l->owner);
		l->owner = NULL;
		l->counter = counter + 1;
	}
	return call_end_write(h, LEASE_MEM_OP_RELEASE, err, info);
}

static enum kl_err mem_checkpoint(void *ctx, const char *key, uint64_t counter, const char *session,
				  const struct lease_esn *cp, struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	enum kl_err err;

	if (cp->kind == LEASE_ESN_NONE)
		return kl_errinfo_set(info, KL_EINVAL, "lease mem store: empty checkpoint");
	err = call_begin(h, LEASE_MEM_OP_CHECKPOINT, info);
	if (err != KL_OK)
		return err;
	l = cond_counter(h, key, counter);
	if (!l) {
		err = conflict(info, "checkpoint", key);
	} else if ((err = lease_set_str(&l->session, session)) == KL_OK) {
		l->counter = counter + 1;
		l->checkpoint = *cp;
		l->owner_switches = 0;
		l->pending = lease_esn_sentinel(LEASE_ESN_NONE);
		lease_set_pending_state(l, NULL, 0);
	}
	return call_end_write(h, LEASE_MEM_OP_CHECKPOINT, err, info);
}

static enum kl_err mem_prepare(void *ctx, const char *key, uint64_t counter, const char *session,
			       const struct lease_esn *pending, const void *state, size_t state_len,
			       struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	enum kl_err err;

	if (pending->kind == LEASE_ESN_NONE)
		return kl_errinfo_set(info, KL_EINVAL, "lease mem store: empty pending checkpoint");
	err = call_begin(h, LEASE_MEM_OP_PREPARE, info);
	if (err != KL_OK)
		return err;
	l = cond_counter(h, key, counter);
	if (!l) {
		err = conflict(info, "prepare", key);
	} else if ((err = lease_set_pending_state(l, state, state_len)) == KL_OK &&
		   (err = lease_set_str(&l->session, session)) == KL_OK) {
		l->counter = counter + 1;
		l->pending = *pending;
	}
	return call_end_write(h, LEASE_MEM_OP_PREPARE, err, info);
}

static enum kl_err mem_update_meta(void *ctx, const char *key, const struct lease_strset *children,
				   const char *starting_hash_key, const char *ending_hash_key,
				   struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	struct lease_strset set = { NULL, 0 };
	char *sh = NULL, *eh = NULL;
	enum kl_err err;

	if (!starting_hash_key != !ending_hash_key)
		return kl_errinfo_set(info, KL_EINVAL, "lease mem store: both hash keys or neither");
	err = call_begin(h, LEASE_MEM_OP_UPDATE_META, info);
	if (err != KL_OK)
		return err;
	l = table_lease(h->table, key);
	if (!l) {
		err = conflict(info, "update_meta", key);
		goto out;
	}
	if (children && children->n && (err = lease_strset_copy(&set, children)) != KL_OK)
		goto out;
	if (starting_hash_key) {
		sh = strdup(starting_hash_key);
		eh = strdup(ending_hash_key);
		if (!sh || !eh) {
			err = KL_ENOMEM;
			goto out;
		}
	}
	if (children && children->n) {
		lease_strset_done(&l->children);
		l->children = set;
		set.v = NULL;
		set.n = 0;
	}
	if (sh) {
		free(l->starting_hash_key);
		free(l->ending_hash_key);
		l->starting_hash_key = sh;
		l->ending_hash_key = eh;
		sh = eh = NULL;
	}
out:
	lease_strset_done(&set);
	free(sh);
	free(eh);
	return call_end_write(h, LEASE_MEM_OP_UPDATE_META, err, info);
}

static enum kl_err mem_delete(void *ctx, const char *key, uint64_t counter, struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	bool found;
	size_t pos;
	enum kl_err err;

	err = call_begin(h, LEASE_MEM_OP_DELETE, info);
	if (err != KL_OK)
		return err;
	pos = table_pos(h->table, key, &found);
	if (!found || !lease_is_lease_entity(&h->table->items.items[pos]) ||
	    h->table->items.items[pos].counter != counter)
		err = conflict(info, "delete", key);
	else
		table_remove(h->table, pos);
	return call_end_write(h, LEASE_MEM_OP_DELETE, err, info);
}

/* Removes extra attribute i of l. */
static void extra_remove(struct lease *l, size_t i)
{
	free(l->extra[i].name);
	free(l->extra[i].value);
	memmove(&l->extra[i], &l->extra[i + 1], (l->n_extra - 1 - i) * sizeof(l->extra[0]));
	l->n_extra--;
}

static enum kl_err mem_set_extra(void *ctx, const char *key, const char *name,
				 const char *expected, const char *value, struct kl_errinfo *info)
{
	struct mem_handle *h = ctx;
	struct lease *l;
	const char *cur;
	enum kl_err err;

	err = call_begin(h, LEASE_MEM_OP_SET_EXTRA, info);
	if (err != KL_OK)
		return err;
	l = table_lease(h->table, key);
	cur = l ? lease_get_extra(l, name) : NULL;
	/* DynamoDB compares values; ours are compared as the text given. */
	if (!l || (expected ? !cur || strcmp(cur, expected) != 0 : cur != NULL)) {
		err = conflict(info, "set_extra", key);
	} else if (value) {
		err = lease_set_extra(l, name, value);
	} else {
		for (size_t i = 0; i < l->n_extra; i++)
			if (strcmp(l->extra[i].name, name) == 0) {
				extra_remove(l, i);
				break;
			}
	}
	return call_end_write(h, LEASE_MEM_OP_SET_EXTRA, err, info);
}

static void mem_destroy(void *ctx)
{
	free(ctx);
}

static const struct lease_store_ops mem_ops = {
	.name = "memory",
	.scan = mem_scan,
	.get = mem_get,
	.create = mem_create,
	.renew = mem_renew,
	.take = mem_take,
	.release = mem_release,
	.checkpoint = mem_checkpoint,
	.prepare = mem_prepare,
	.update_meta = mem_update_meta,
	.delete_lease = mem_delete,
	.destroy = mem_destroy,
	.set_extra = mem_set_extra,
};

struct lease_store *lease_store_mem_new(struct lease_mem_table *t, const struct lease_clock *clock)
{
	struct lease_store *s = calloc(1, sizeof(*s));
	struct mem_handle *h = calloc(1, sizeof(*h));

	if (!s || !h) {
		free(s);
		free(h);
		return NULL;
	}
	h->table = t;
	if (clock) {
		h->clock = *clock;
		h->has_clock = true;
	}
	kl_rng_seed_value(&h->rng, 1);
	s->ops = &mem_ops;
	s->ctx = h;
	return s;
}

void lease_store_mem_set_faults(struct lease_store *s, const struct lease_mem_faults *faults)
{
	struct mem_handle *h = s->ctx;

	if (s->ops != &mem_ops)
		return;
	pthread_mutex_lock(&h->table->mu);
	h->faults = *faults;
	kl_rng_seed_value(&h->rng, faults->seed);
	pthread_mutex_unlock(&h->table->mu);
}

void lease_store_mem_get_stats(struct lease_store *s, struct lease_mem_stats *ret)
{
	struct mem_handle *h = s->ctx;

	if (s->ops != &mem_ops) {
		memset(ret, 0, sizeof(*ret));
		return;
	}
	pthread_mutex_lock(&h->table->mu);
	*ret = h->stats;
	pthread_mutex_unlock(&h->table->mu);
}
