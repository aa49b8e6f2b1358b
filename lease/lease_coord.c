/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_coord.c: the coordinator's life cycle, the tick, renewing, the
 * table scan that feeds local expiry, and the calls consumer threads make
 * (check, prepare, checkpoint, release).
 *
 * Invariants: a held lease is processable only before basis + failover -
 * epsilon, where basis is the send time of its last confirmed write; a
 * write whose outcome is unknown is resolved by a re-read before the next
 * write to that lease; any conditional failure that the re-read does not
 * prove to be our own landed write ends the lease here (KL_ELEASE_LOST).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease_coord_int.h"
#include "log.h"

const char *lease_state_name(enum lease_state state)
{
	switch (state) {
	case LEASE_STATE_UNOWNED: return "unowned";
	case LEASE_STATE_OWNED: return "owned";
	case LEASE_STATE_EXPIRED: return "expired";
	case LEASE_STATE_FINISHED: return "finished";
	case LEASE_STATE_HANDOVER: return "handover";
	case LEASE_STATE_WAITING_PARENTS: return "waiting-on-parents";
	case LEASE_STATE_HELD: return "held";
	case LEASE_STATE_RENEWING: return "renewing";
	case LEASE_STATE_LOST: return "lost";
	case LEASE_STATE_RELEASED: return "released";
	}
	return "unknown";
}

/* ---------------------------------------------------------------- helpers */

static bool str_eq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

bool coord_item_is_ours(const struct lease_coord *c, const struct lease *item)
{
	return str_eq(item->owner, c->worker_id) && str_eq(item->session, c->session);
}

static int view_key_cmp(const void *key, const void *elem)
{
	const struct coord_view *v = elem;

	return strcmp(key, v->rec.key);
}

const struct coord_view *coord_find_view(const struct lease_coord *c, const char *key)
{
	if (!c->n_views)
		return NULL;
	return bsearch(key, c->views, c->n_views, sizeof(*c->views), view_key_cmp);
}

struct coord_held *coord_find_held(const struct lease_coord *c, const char *key)
{
	for (size_t i = 0; i < c->n_held; i++)
		if (!c->held[i]->ended && strcmp(c->held[i]->rec.key, key) == 0)
			return c->held[i];
	return NULL;
}

struct coord_held *coord_find_token(const struct lease_coord *c, const char *key, uint64_t token)
{
	for (size_t i = 0; i < c->n_held; i++)
		if (c->held[i]->token == token && strcmp(c->held[i]->rec.key, key) == 0)
			return c->held[i];
	return NULL;
}

bool coord_parents_done(const struct lease_coord *c, const struct lease *rec)
{
	for (size_t i = 0; i < rec->parents.n; i++) {
		const struct coord_view *p = coord_find_view(c, rec->parents.v[i]);

		if (p && !lease_is_finished(&p->rec))
			return false;
	}
	return true;
}

bool coord_view_expired(const struct lease_coord *c, const struct coord_view *v, int64_t now)
{
	return v->rec.owner && now - v->first_seen_ms > c->failover_ms;
}

void coord_end_held(struct lease_coord *c, struct coord_held *h, enum lease_state state,
		    const char *fmt, ...)
{
	va_list ap;

	if (h->ended)
		return;
	h->ended = state;
	h->ended_ms = coord_now(c);
	va_start(ap, fmt);
	vsnprintf(h->note, sizeof(h->note), fmt, ap);
	va_end(ap);
	if (state == LEASE_STATE_LOST)
		c->n_lost++;
	else if (state == LEASE_STATE_RELEASED)
		c->n_released++;
	log_debug("lease: '%s' %s: %s", h->rec.key, lease_state_name(state), h->note);
}

enum kl_err coord_note_error(struct lease_coord *c, enum kl_err err,
			     const struct kl_errinfo *info, const char *what)
{
	char buf[200];

	pthread_mutex_lock(&c->mu);
	snprintf(c->last_error, sizeof(c->last_error), "%s: %s", what,
		 kl_errinfo_format(err, info, buf, sizeof(buf)));
	pthread_mutex_unlock(&c->mu);
	log_debug("lease: %s", c->last_error);
	return err;
}

enum lease_state coord_held_state(const struct lease_coord *c, const struct coord_held *h,
				  int64_t now)
{
	if (h->ended)
		return h->ended;
	if (now >= coord_valid_until(c, h))
		return LEASE_STATE_LOST;
	if (lease_is_finished(&h->rec))
		return LEASE_STATE_FINISHED;
	if (now < h->processable_from_ms)
		return LEASE_STATE_HANDOVER;
	if (!h->parents_done)
		return LEASE_STATE_WAITING_PARENTS;
	if (h->renew_failing)
		return LEASE_STATE_RENEWING;
	return LEASE_STATE_HELD;
}

bool coord_state_processable(enum lease_state s)
{
	return s == LEASE_STATE_HELD || s == LEASE_STATE_RENEWING;
}

static void held_free(struct coord_held *h)
{
	if (!h)
		return;
	lease_done(&h->rec);
	free(h);
}

enum kl_err coord_add_held(struct lease_coord *c, const struct lease *rec, int64_t send_ms,
			   int64_t processable_from_ms, struct coord_held **ret)
{
	struct coord_held *h;

	if (c->n_held == c->alloc_held) {
		size_t alloc = c->alloc_held ? c->alloc_held * 2 : 16;
		struct coord_held **v = realloc(c->held, alloc * sizeof(*v));

		if (!v)
			return KL_ENOMEM;
		c->held = v;
		c->alloc_held = alloc;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return KL_ENOMEM;
	if (lease_copy(&h->rec, rec) != KL_OK) {
		free(h);
		return KL_ENOMEM;
	}
	h->token = ++c->next_token;
	h->acquired_ms = send_ms;
	h->basis_ms = send_ms;
	h->unconfirmed_ms = -1;
	h->processable_from_ms = processable_from_ms;
	h->last_renew_ok_ms = send_ms;
	h->parents_done = coord_parents_done(c, rec);
	c->held[c->n_held++] = h;
	*ret = h;
	return KL_OK;
}

/* ---------------------------------------------------------------- lifecycle */

enum kl_err lease_coord_new(const struct lease_coord_config *cfg, struct lease_store *store,
			    const struct lease_clock *clock, const struct lease_shard_source *shards,
			    struct lease_coord **ret, struct kl_errinfo *info)
{
	struct lease_coord *c;
	int64_t now;

	if (!cfg || !cfg->worker_id || !*cfg->worker_id)
		return kl_errinfo_set(info, KL_ECONFIG, "lease: a worker id is required");
	if (!store || !clock)
		return kl_errinfo_set(info, KL_EINVAL, "lease: a store and a clock are required");
	c = calloc(1, sizeof(*c));
	if (!c)
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	c->failover_ms = cfg->failover_ms > 0 ? cfg->failover_ms : 10000;
	c->renew_interval_ms = cfg->renew_interval_ms > 0 ? cfg->renew_interval_ms : c->failover_ms / 3;
	c->take_interval_ms = cfg->take_interval_ms > 0 ? cfg->take_interval_ms : 2 * c->failover_ms;
	c->scan_interval_ms = cfg->scan_interval_ms > 0 ? cfg->scan_interval_ms : c->failover_ms / 3;
	c->sync_interval_ms = cfg->sync_interval_ms > 0 ? cfg->sync_interval_ms : 60000;
	c->epsilon_ms = cfg->epsilon_ms > 0 ? cfg->epsilon_ms : 25;
	c->max_leases = cfg->max_leases;
	c->max_steal = cfg->max_steal ? cfg->max_steal : 1;
	c->heartbeat = !cfg->no_heartbeat;
	c->cleanup = !cfg->no_cleanup;
	c->initial_position = cfg->initial_position;
	c->initial_timestamp_ms = cfg->initial_timestamp_ms;
	if (c->epsilon_ms >= c->failover_ms / 2 ||
	    c->renew_interval_ms >= c->failover_ms - c->epsilon_ms ||
	    c->scan_interval_ms > c->take_interval_ms) {
		free(c);
		return kl_errinfo_set(info, KL_ECONFIG,
				      "lease: need epsilon < failover/2, renew interval < failover - epsilon "
				      "and scan interval <= take interval");
	}
	c->worker_id = strdup(cfg->worker_id);
	if (!c->worker_id) {
		free(c);
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	}
	if (cfg->seed)
		kl_rng_seed_value(&c->rng, cfg->seed);
	else
		kl_rng_seed(&c->rng);
	snprintf(c->session, sizeof(c->session), "%016llx",
		 (unsigned long long)kl_rng_next(&c->rng));
	c->store = store;
	c->clock = *clock;
	if (shards && shards->list) {
		c->shards = *shards;
		c->has_shards = true;
	}
	if (pthread_mutex_init(&c->mu, NULL) != 0) {
		free(c->worker_id);
		free(c);
		return kl_errinfo_set(info, KL_ENOMEM, "lease: cannot create a mutex");
	}
	if (pthread_cond_init(&c->io_cv, NULL) != 0) {
		pthread_mutex_destroy(&c->mu);
		free(c->worker_id);
		free(c);
		return kl_errinfo_set(info, KL_ENOMEM, "lease: cannot create a condition variable");
	}
	now = coord_now(c);
	c->next_renew_ms = now + c->renew_interval_ms;
	c->next_scan_ms = now;
	c->next_take_ms = now;
	c->next_sync_ms = now;
	*ret = c;
	return KL_OK;
}

static void free_views(struct coord_view *views, size_t n)
{
	for (size_t i = 0; i < n; i++)
		lease_done(&views[i].rec);
	free(views);
}

void coord_free_workers(struct lease_status_worker *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(w[i].worker);
	free(w);
}

void lease_coord_free(struct lease_coord *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_held; i++)
		held_free(c->held[i]);
	free(c->held);
	free_views(c->views, c->n_views);
	coord_free_workers(c->workers, c->n_workers);
	pthread_cond_destroy(&c->io_cv);
	pthread_mutex_destroy(&c->mu);
	free(c->worker_id);
	free(c);
}

/* ---------------------------------------------------------------- writes */

/* Applies a confirmed write (sent at send_ms) to h. mu held. */
static void confirm_write(struct lease_coord *c, struct coord_held *h, enum coord_write kind,
			  int64_t send_ms, const struct lease_esn *esn, const void *state,
			  size_t state_len)
{
	h->rec.counter++;
	h->unconfirmed_ms = -1;
	if (kind == COORD_WRITE_RELEASE) {
		free(h->rec.owner);
		h->rec.owner = NULL;
		return;
	}
	h->basis_ms = send_ms;
	switch (kind) {
	case COORD_WRITE_RENEW:
		h->renew_failing = false;
		h->last_renew_ok_ms = send_ms;
		break;
	case COORD_WRITE_CHECKPOINT:
		h->rec.checkpoint = *esn;
		h->rec.pending = lease_esn_sentinel(LEASE_ESN_NONE);
		lease_set_pending_state(&h->rec, NULL, 0);
		h->rec.owner_switches = 0;
		break;
	case COORD_WRITE_PREPARE:
		h->rec.pending = *esn;
		/* On ENOMEM the local copy of the state is dropped; the table has it. */
		lease_set_pending_state(&h->rec, state, state_len);
		break;
	case COORD_WRITE_RELEASE:
		break;
	}
	(void)c;
}

/* Did the write of kind, conditioned on counter n, land? (item re-read) */
static bool write_landed(const struct lease_coord *c, enum coord_write kind, uint64_t n,
			 const struct lease *item, const struct lease_esn *esn)
{
	if (item->counter != n + 1)
		return false;
	switch (kind) {
	case COORD_WRITE_RELEASE:
		return !item->owner;
	case COORD_WRITE_RENEW:
		return coord_item_is_ours(c, item);
	case COORD_WRITE_CHECKPOINT:
		return coord_item_is_ours(c, item) && lease_esn_cmp(&item->checkpoint, esn) == 0 &&
		       item->pending.kind == LEASE_ESN_NONE;
	case COORD_WRITE_PREPARE:
		return coord_item_is_ours(c, item) && lease_esn_cmp(&item->pending, esn) == 0;
	}
	return false;
}

/*
 * Resolves an earlier write with unknown outcome by re-reading the item.
 * Caller owns h's io_busy; mu not held.
 */
static enum kl_err resync(struct lease_coord *c, struct coord_held *h, struct kl_errinfo *info)
{
	struct lease item;
	enum kl_err err;

	lease_init(&item);
	err = lease_store_get(c->store, h->rec.key, &item, info);
	pthread_mutex_lock(&c->mu);
	if (err == KL_ENOTFOUND) {
		coord_end_held(c, h, LEASE_STATE_LOST, "lease deleted");
		err = KL_ELEASE_LOST;
	} else if (err != KL_OK) {
		/* still unknown; the next write tries again */
	} else if (coord_item_is_ours(c, &item) && item.counter >= h->rec.counter) {
		if (item.counter > h->rec.counter) {
			/* A write sent at or after unconfirmed_ms landed. */
			h->basis_ms = h->unconfirmed_ms;
			h->rec.counter = item.counter;
			h->rec.checkpoint = item.checkpoint;
			h->rec.pending = item.pending;
			h->rec.owner_switches = item.owner_switches;
			lease_set_pending_state(&h->rec, item.pending_state, item.pending_state_len);
		}
		h->unconfirmed_ms = -1;
	} else {
		coord_end_held(c, h, LEASE_STATE_LOST, "taken by '%s'",
			       item.owner ? item.owner : "(nobody)");
		err = KL_ELEASE_LOST;
	}
	pthread_mutex_unlock(&c->mu);
	lease_done(&item);
	if (err == KL_ELEASE_LOST)
		return kl_errinfo_set(info, err, "lease: '%s' is no longer held by '%s'",
				      h->rec.key, c->worker_id);
	return err;
}

enum kl_err coord_held_write(struct lease_coord *c, struct coord_held *h, enum coord_write kind,
			     const struct lease_esn *esn, const void *state, size_t state_len,
			     struct kl_errinfo *info)
{
	struct lease item;
	struct kl_errinfo reread_info;
	enum kl_err err, rerr;
	bool need_resync;
	uint64_t n;
	int64_t send_ms, hb = 0;
	const char *key = h->rec.key;

	pthread_mutex_lock(&c->mu);
	if (h->ended && kind != COORD_WRITE_RELEASE) {
		pthread_mutex_unlock(&c->mu);
		return kl_errinfo_set(info, KL_ELEASE_LOST, "lease: '%s' is no longer held", key);
	}
	need_resync = h->unconfirmed_ms >= 0;
	pthread_mutex_unlock(&c->mu);
	if (need_resync) {
		err = resync(c, h, info);
		if (err != KL_OK)
			return err;
	}
	pthread_mutex_lock(&c->mu);
	n = h->rec.counter;
	pthread_mutex_unlock(&c->mu);
	if (kind == COORD_WRITE_RENEW && c->heartbeat)
		hb = lease_clock_wall(&c->clock);

	send_ms = coord_now(c);
	switch (kind) {
	case COORD_WRITE_RENEW:
		err = lease_store_renew(c->store, key, n, c->session, hb, info);
		break;
	case COORD_WRITE_CHECKPOINT:
		err = lease_store_checkpoint(c->store, key, n, c->session, esn, info);
		break;
	case COORD_WRITE_PREPARE:
		err = lease_store_prepare(c->store, key, n, c->session, esn, state, state_len, info);
		break;
	case COORD_WRITE_RELEASE:
		err = lease_store_release(c->store, key, n, c->worker_id, info);
		break;
	default:
		err = KL_EINVAL;
		break;
	}
	if (err == KL_OK) {
		pthread_mutex_lock(&c->mu);
		confirm_write(c, h, kind, send_ms, esn, state, state_len);
		pthread_mutex_unlock(&c->mu);
		return KL_OK;
	}
	if (err != KL_ECONFLICT) {
		/* Outcome unknown: it may have landed. Resolve before the next write. */
		pthread_mutex_lock(&c->mu);
		if (h->unconfirmed_ms < 0)
			h->unconfirmed_ms = send_ms;
		pthread_mutex_unlock(&c->mu);
		return err;
	}

	/* Conditional failure: re-read once, our own write may have landed
	 * (a client retry after a lost reply). Anything else: the lease is lost. */
	lease_init(&item);
	kl_errinfo_clear(&reread_info);
	rerr = lease_store_get(c->store, key, &item, &reread_info);
	pthread_mutex_lock(&c->mu);
	if (rerr == KL_OK && write_landed(c, kind, n, &item, esn)) {
		confirm_write(c, h, kind, send_ms, esn, state, state_len);
		pthread_mutex_unlock(&c->mu);
		lease_done(&item);
		log_debug("lease: '%s': spurious conditional failure, our write had landed", key);
		return KL_OK;
	}
	if (kind == COORD_WRITE_RELEASE) {
		/* Already ended locally; someone else moved it on. Nothing to do. */
		pthread_mutex_unlock(&c->mu);
		lease_done(&item);
		return KL_OK;
	}
	if (rerr == KL_OK)
		coord_end_held(c, h, LEASE_STATE_LOST, "taken by '%s' (counter %llu)",
			       item.owner ? item.owner : "(nobody)",
			       (unsigned long long)item.counter);
	else if (rerr == KL_ENOTFOUND)
		coord_end_held(c, h, LEASE_STATE_LOST, "lease deleted");
	else
		coord_end_held(c, h, LEASE_STATE_LOST, "conditional failure, re-read failed: %s",
			       kl_strerror(rerr));
	pthread_mutex_unlock(&c->mu);
	lease_done(&item);
	return kl_errinfo_set(info, KL_ELEASE_LOST, "lease: '%s' lost: conditional %s failed",
			      key, kind == COORD_WRITE_RENEW ? "renew" :
			      kind == COORD_WRITE_CHECKPOINT ? "checkpoint" : "prepare");
}

enum kl_err coord_claim_for_consumer(struct lease_coord *c, struct coord_held *h)
{
	enum lease_state s;
	int64_t now;

	while (h->io_busy && !h->ended)
		pthread_cond_wait(&c->io_cv, &c->mu);
	if (h->ended)
		return KL_ELEASE_LOST;
	now = coord_now(c);
	s = coord_held_state(c, h, now);
	if (s == LEASE_STATE_LOST) {
		coord_end_held(c, h, LEASE_STATE_LOST, "not renewed within failover");
		return KL_ELEASE_LOST;
	}
	if (!coord_state_processable(s))
		return KL_ESTATE;
	h->io_busy = true;
	return KL_OK;
}

void coord_unclaim(struct lease_coord *c, struct coord_held *h)
{
	pthread_mutex_lock(&c->mu);
	h->io_busy = false;
	pthread_cond_broadcast(&c->io_cv);
	pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- tick parts */

/* Ends held leases whose validity ran out; frees ended ones after a while. */
static void sweep(struct lease_coord *c, int64_t now)
{
	size_t j = 0;

	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->n_held; i++) {
		struct coord_held *h = c->held[i];

		if (!h->ended && now >= coord_valid_until(c, h))
			coord_end_held(c, h, LEASE_STATE_LOST, "not renewed within failover (%lld ms)",
				       (long long)c->failover_ms);
		if (h->ended && !h->io_busy && now - h->ended_ms > c->failover_ms) {
			held_free(h);
			continue;
		}
		c->held[j++] = h;
	}
	c->n_held = j;
	pthread_mutex_unlock(&c->mu);
}

static enum kl_err renew_pass(struct lease_coord *c, struct kl_errinfo *info)
{
	struct coord_held **todo;
	size_t n = 0;
	uint32_t ok = 0, failed = 0;
	enum kl_err first = KL_OK;
	int64_t start = coord_now(c);

	/* Entries are freed only by sweep() on this thread: the pointers stay
	 * valid for the pass. Each lease is claimed just before its renew so
	 * a consumer's checkpoint never waits for the rest of the pass. */
	pthread_mutex_lock(&c->mu);
	todo = calloc(c->n_held ? c->n_held : 1, sizeof(*todo));
	if (!todo) {
		pthread_mutex_unlock(&c->mu);
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	}
	for (size_t i = 0; i < c->n_held; i++)
		if (!c->held[i]->ended)
			todo[n++] = c->held[i];
	pthread_mutex_unlock(&c->mu);

	for (size_t i = 0; i < n; i++) {
		struct kl_errinfo ei;
		enum kl_err err;
		bool skip;

		pthread_mutex_lock(&c->mu);
		/* A write in flight (a checkpoint) renews the lease anyway. */
		skip = todo[i]->ended || todo[i]->io_busy;
		if (!skip)
			todo[i]->io_busy = true;
		pthread_mutex_unlock(&c->mu);
		if (skip)
			continue;
		kl_errinfo_clear(&ei);
		err = coord_held_write(c, todo[i], COORD_WRITE_RENEW, NULL, NULL, 0, &ei);
		if (err == KL_OK) {
			ok++;
		} else {
			failed++;
			if (err != KL_ELEASE_LOST) {
				pthread_mutex_lock(&c->mu);
				todo[i]->renew_failing = true;
				pthread_mutex_unlock(&c->mu);
			}
			if (first == KL_OK) {
				first = err;
				if (info)
					*info = ei;
			}
			coord_note_error(c, err, &ei, "renew");
		}
		coord_unclaim(c, todo[i]);
	}
	free(todo);
	pthread_mutex_lock(&c->mu);
	c->st_renew.at_ms = start;
	c->st_renew.duration_ms = coord_now(c) - start;
	c->st_renew.ok = ok;
	c->st_renew.failed = failed;
	pthread_mutex_unlock(&c->mu);
	return first;
}

/* Counts unexpired, unfinished leases per owner for status. mu held. */
static void count_workers(struct lease_coord *c, int64_t now)
{
	struct lease_status_worker *w = NULL;
	size_t n = 0;

	for (size_t i = 0; i < c->n_views; i++) {
		const struct coord_view *v = &c->views[i];
		size_t k;

		if (!v->rec.owner || lease_is_finished(&v->rec) || coord_view_expired(c, v, now))
			continue;
		for (k = 0; k < n; k++)
			if (strcmp(w[k].worker, v->rec.owner) == 0)
				break;
		if (k == n) {
			struct lease_status_worker *nw = realloc(w, (n + 1) * sizeof(*w));

			if (!nw)
				break;
			w = nw;
			w[n].worker = strdup(v->rec.owner);
			if (!w[n].worker)
				break;
			w[n].leases = 0;
			n++;
		}
		w[k].leases++;
	}
	coord_free_workers(c->workers, c->n_workers);
	c->workers = w;
	c->n_workers = n;
}

/* Scans the table and replaces the views, keeping first-seen times of
 * counters that did not move. Ends held leases the scan shows as taken. */
static enum kl_err scan(struct lease_coord *c, struct kl_errinfo *info)
{
	struct lease_list list;
	struct coord_view *views;
	int64_t start = coord_now(c), seen;
	enum kl_err err;

	err = lease_store_scan(c->store, &list, info);
	/* Receipt time: nothing in the result can have been written later. */
	seen = coord_now(c);
	pthread_mutex_lock(&c->mu);
	c->st_scan.at_ms = start;
	c->st_scan.duration_ms = seen - start;
	if (err != KL_OK) {
		c->st_scan.failed++;
		pthread_mutex_unlock(&c->mu);
		return coord_note_error(c, err, info, "scan");
	}
	c->st_scan.ok++;
	pthread_mutex_unlock(&c->mu);

	lease_list_sort(&list);
	views = calloc(list.n ? list.n : 1, sizeof(*views));
	if (!views) {
		lease_list_done(&list);
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	}
	for (size_t i = 0; i < list.n; i++) {
		const struct coord_view *old = coord_find_view(c, list.items[i].key);

		views[i].rec = list.items[i]; /* moved */
		if (old && old->rec.counter == views[i].rec.counter) {
			views[i].first_seen_ms = old->first_seen_ms;
			views[i].unowned_at_sight = old->unowned_at_sight;
		} else {
			views[i].first_seen_ms = seen;
			views[i].unowned_at_sight = !old && !views[i].rec.owner;
		}
	}
	free(list.items);

	pthread_mutex_lock(&c->mu);
	free_views(c->views, c->n_views);
	c->views = views;
	c->n_views = list.n;
	c->scanned = true;
	count_workers(c, seen);
	for (size_t i = 0; i < c->n_held; i++) {
		struct coord_held *h = c->held[i];
		const struct coord_view *v;

		if (h->ended)
			continue;
		v = coord_find_view(c, h->rec.key);
		if (!v) {
			if (!h->io_busy)
				coord_end_held(c, h, LEASE_STATE_LOST, "lease deleted");
			continue;
		}
		/* A counter beyond ours that is not our own write: taken. */
		if (v->rec.counter > h->rec.counter && !coord_item_is_ours(c, &v->rec) && !h->io_busy) {
			coord_end_held(c, h, LEASE_STATE_LOST, "taken by '%s'",
				       v->rec.owner ? v->rec.owner : "(nobody)");
			continue;
		}
		if (!h->parents_done)
			h->parents_done = coord_parents_done(c, &h->rec);
	}
	pthread_mutex_unlock(&c->mu);
	return KL_OK;
}

static void keep_first(enum kl_err *first, struct kl_errinfo *info, enum kl_err err,
		       const struct kl_errinfo *ei)
{
	if (err == KL_OK || *first != KL_OK)
		return;
	*first = err;
	if (info)
		*info = *ei;
}

enum kl_err lease_coord_tick(struct lease_coord *c, struct kl_errinfo *info)
{
	enum kl_err first = KL_OK, err;
	struct kl_errinfo ei;
	int64_t now = coord_now(c);

	sweep(c, now);
	if (c->stopping)
		return KL_OK;

	if (now >= c->next_renew_ms) {
		pthread_mutex_lock(&c->mu);
		c->next_renew_ms = now + c->renew_interval_ms;
		pthread_mutex_unlock(&c->mu);
		kl_errinfo_clear(&ei);
		err = renew_pass(c, &ei);
		keep_first(&first, info, err, &ei);
	}

	now = coord_now(c);
	if (now >= c->next_scan_ms) {
		bool full = now >= c->next_take_ms;

		pthread_mutex_lock(&c->mu);
		c->next_scan_ms = now + c->scan_interval_ms;
		pthread_mutex_unlock(&c->mu);
		kl_errinfo_clear(&ei);
		err = scan(c, &ei);
		if (err == KL_OK) {
			coord_elect(c);
			if (full) {
				pthread_mutex_lock(&c->mu);
				c->next_take_ms = now + c->take_interval_ms;
				pthread_mutex_unlock(&c->mu);
				if (c->leader)
					coord_audit_leases(c);
			}
			err = coord_take_pass(c, full, &ei);
		}
		keep_first(&first, info, err, &ei);
	}

	now = coord_now(c);
	if (c->has_shards && c->scanned && now >= c->next_sync_ms) {
		kl_errinfo_clear(&ei);
		err = coord_sync_pass(c, &ei);
		keep_first(&first, info, err, &ei);
	}
	sweep(c, coord_now(c));
	return first;
}

int64_t lease_coord_next_due(struct lease_coord *c)
{
	int64_t next;

	pthread_mutex_lock(&c->mu);
	next = c->next_scan_ms;
	if (!c->stopping) {
		bool any_held = false;

		for (size_t i = 0; i < c->n_held; i++) {
			const struct coord_held *h = c->held[i];

			if (h->ended)
				continue;
			any_held = true;
			if (coord_valid_until(c, h) < next)
				next = coord_valid_until(c, h);
		}
		if (any_held && c->next_renew_ms < next)
			next = c->next_renew_ms;
		if (c->has_shards && c->next_sync_ms < next)
			next = c->next_sync_ms;
	} else {
		next = INT64_MAX;
	}
	pthread_mutex_unlock(&c->mu);
	return next;
}

/* ---------------------------------------------------------------- consumer calls */

enum kl_err lease_coord_check(struct lease_coord *c, const char *key, uint64_t token,
			      int64_t *ret_valid_until_ms)
{
	struct coord_held *h;
	enum lease_state s;
	enum kl_err err = KL_OK;

	pthread_mutex_lock(&c->mu);
	h = coord_find_token(c, key, token);
	if (!h) {
		err = KL_ELEASE_LOST;
	} else {
		s = coord_held_state(c, h, coord_now(c));
		if (s == LEASE_STATE_LOST || s == LEASE_STATE_RELEASED || s == LEASE_STATE_FINISHED)
			err = KL_ELEASE_LOST;
		else if (!coord_state_processable(s))
			err = KL_ESTATE;
		else if (ret_valid_until_ms)
			*ret_valid_until_ms = coord_valid_until(c, h);
	}
	pthread_mutex_unlock(&c->mu);
	return err;
}

static enum kl_err consumer_write(struct lease_coord *c, const char *key, uint64_t token,
				  enum coord_write kind, const struct lease_esn *esn,
				  const void *state, size_t state_len, struct kl_errinfo *info)
{
	struct coord_held *h;
	enum kl_err err;
	int cmp;

	if (!esn || esn->kind == LEASE_ESN_NONE)
		return kl_errinfo_set(info, KL_EINVAL, "lease: empty checkpoint for '%s'", key);
	pthread_mutex_lock(&c->mu);
	h = coord_find_token(c, key, token);
	if (!h) {
		pthread_mutex_unlock(&c->mu);
		return kl_errinfo_set(info, KL_ELEASE_LOST, "lease: '%s' (token %llu) is not held",
				      key, (unsigned long long)token);
	}
	err = coord_claim_for_consumer(c, h);
	if (err != KL_OK) {
		pthread_mutex_unlock(&c->mu);
		return kl_errinfo_set(info, err, "lease: '%s' is %s", key,
				      err == KL_ESTATE ? "not processable yet" : "no longer held");
	}
	cmp = lease_esn_cmp(esn, &h->rec.checkpoint);
	if (kind == COORD_WRITE_CHECKPOINT ? cmp < 0 : cmp <= 0) {
		char was[LEASE_SEQ_MAX + 16];

		snprintf(was, sizeof(was), "%s", lease_esn_str(&h->rec.checkpoint));
		h->io_busy = false;
		pthread_cond_broadcast(&c->io_cv);
		pthread_mutex_unlock(&c->mu);
		return kl_errinfo_set(info, KL_EINVAL,
				      "lease: '%s': checkpoint %.40s/%llu would not move forward from %.40s",
				      key, lease_esn_str(esn), (unsigned long long)esn->subseq, was);
	}
	pthread_mutex_unlock(&c->mu);
	err = coord_held_write(c, h, kind, esn, state, state_len, info);
	coord_unclaim(c, h);
	return err;
}

enum kl_err lease_coord_prepare(struct lease_coord *c, const char *key, uint64_t token,
				const struct lease_esn *pending, const void *state,
				size_t state_len, struct kl_errinfo *info)
{
	return consumer_write(c, key, token, COORD_WRITE_PREPARE, pending, state, state_len, info);
}

enum kl_err lease_coord_checkpoint(struct lease_coord *c, const char *key, uint64_t token,
				   const struct lease_esn *esn, struct kl_errinfo *info)
{
	return consumer_write(c, key, token, COORD_WRITE_CHECKPOINT, esn, NULL, 0, info);
}

enum kl_err lease_coord_release(struct lease_coord *c, const char *key, uint64_t token,
				struct kl_errinfo *info)
{
	struct coord_held *h;
	enum kl_err err;

	pthread_mutex_lock(&c->mu);
	h = coord_find_token(c, key, token);
	while (h && h->io_busy && !h->ended)
		pthread_cond_wait(&c->io_cv, &c->mu);
	if (!h || h->ended) {
		pthread_mutex_unlock(&c->mu);
		return KL_OK;
	}
	/* Stop processing first, then tell the table. */
	coord_end_held(c, h, LEASE_STATE_RELEASED, "released");
	h->io_busy = true;
	pthread_mutex_unlock(&c->mu);
	err = coord_held_write(c, h, COORD_WRITE_RELEASE, NULL, NULL, 0, info);
	coord_unclaim(c, h);
	return err;
}

enum kl_err lease_coord_release_all(struct lease_coord *c, struct kl_errinfo *info)
{
	enum kl_err first = KL_OK;

	pthread_mutex_lock(&c->mu);
	c->stopping = true;
	pthread_mutex_unlock(&c->mu);
	for (;;) {
		struct kl_errinfo ei;
		char *key = NULL;
		uint64_t token = 0;
		enum kl_err err;

		pthread_mutex_lock(&c->mu);
		for (size_t i = 0; i < c->n_held; i++) {
			if (!c->held[i]->ended) {
				key = strdup(c->held[i]->rec.key);
				token = c->held[i]->token;
				break;
			}
		}
		pthread_mutex_unlock(&c->mu);
		if (!key)
			break;
		kl_errinfo_clear(&ei);
		err = lease_coord_release(c, key, token, &ei);
		keep_first(&first, info, err, &ei);
		free(key);
	}
	return first;
}
