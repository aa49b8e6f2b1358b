/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_taker.c: the take/steal arithmetic (pure, see lease_taker.h) and
 * the coordinator's take pass, which turns a plan into conditional takes.
 *
 * Invariant: a lease taken from another owner (steal, or take of an
 * expired lease) becomes processable only once the counter it replaced has
 * been still for failover_ms on our clock, so the previous holder has
 * stopped by then; an unowned lease, or one last written by this process
 * (which no longer holds it), is processable at once.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lease_coord_int.h"
#include "lease_taker.h"

struct owner_count {
	const char *owner;
	uint32_t count;
};

static int str_ptr_cmp(const void *a, const void *b)
{
	const char *const *sa = a, *const *sb = b;

	return strcmp(*sa, *sb);
}

static void shuffle(size_t *v, size_t n, struct kl_rng *rng)
{
	if (!rng)
		return;
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)kl_rng_below(rng, i);
		size_t t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

void lease_taker_plan_done(struct lease_taker_plan *plan)
{
	if (!plan)
		return;
	free(plan->take);
	memset(plan, 0, sizeof(*plan));
}

static bool item_available(const struct lease_taker_item *it)
{
	return !it->owner || it->expired;
}

enum kl_err lease_taker_compute(const struct lease_taker_item *items, size_t n,
				const struct lease_taker_params *params, struct kl_rng *rng,
				struct lease_taker_plan *ret)
{
	struct lease_taker_plan plan;
	const char **owners = NULL;
	struct owner_count *counts = NULL;
	size_t n_owned = 0, n_counts = 0, n_old = 0, n_avail = 0;
	size_t *avail = NULL;
	uint32_t max_steal = params->max_steal ? params->max_steal : 1;
	int64_t needed;
	bool me_counted = false;

	memset(&plan, 0, sizeof(plan));
	owners = calloc(n ? n : 1, sizeof(*owners));
	counts = calloc(n ? n : 1, sizeof(*counts));
	avail = calloc(n ? n : 1, sizeof(*avail));
	plan.take = calloc(n ? n : 1, sizeof(*plan.take));
	if (!owners || !counts || !avail || !plan.take)
		goto nomem;

	/* Available leases, very old ones first; owners of the others. */
	for (size_t i = 0; i < n; i++)
		if (item_available(&items[i]) && items[i].very_old)
			avail[n_old++] = i;
	n_avail = n_old;
	for (size_t i = 0; i < n; i++) {
		if (!item_available(&items[i]))
			owners[n_owned++] = items[i].owner;
		else if (!items[i].very_old)
			avail[n_avail++] = i;
	}
	shuffle(avail, n_old, rng);
	shuffle(avail + n_old, n_avail - n_old, rng);
	plan.available = (uint32_t)n_avail;

	/* Lease counts per live worker (sorted by name). */
	qsort(owners, n_owned, sizeof(*owners), str_ptr_cmp);
	for (size_t i = 0; i < n_owned; i++) {
		if (n_counts && strcmp(counts[n_counts - 1].owner, owners[i]) == 0) {
			counts[n_counts - 1].count++;
			continue;
		}
		counts[n_counts].owner = owners[i];
		counts[n_counts].count = 1;
		n_counts++;
	}
	for (size_t i = 0; i < n_counts; i++) {
		if (strcmp(counts[i].owner, params->me) == 0) {
			plan.mine = counts[i].count;
			me_counted = true;
		}
	}
	plan.workers = (uint32_t)n_counts + (me_counted ? 0 : 1);

	if (n == 0)
		plan.target = 0;
	else if (plan.workers >= n)
		plan.target = 1;
	else
		plan.target = (uint32_t)((n + plan.workers - 1) / plan.workers);
	if (params->max_leases && plan.target > params->max_leases)
		plan.target = params->max_leases;
	needed = (int64_t)plan.target - (int64_t)plan.mine;

	if (n_old > 0) {
		/* Very old leases are taken whatever the target (only max_leases
		 * caps them): a lease nobody touched for 3x failover must find an
		 * owner even when the worker count looks inflated. Nothing else
		 * is taken in this pass. */
		size_t k = n_old;

		if (params->max_leases)
			k = plan.mine >= params->max_leases ? 0 :
			    (params->max_leases - plan.mine < k ? params->max_leases - plan.mine : k);
		memcpy(plan.take, avail, k * sizeof(*avail));
		plan.n_take = k;
	} else if (needed > 0 && n_avail > 0) {
		size_t k = (size_t)needed < n_avail ? (size_t)needed : n_avail;

		memcpy(plan.take, avail, k * sizeof(*avail));
		plan.n_take = k;
	} else if (needed > 0 && n_avail == 0 && params->allow_steal) {
		const struct owner_count *most = NULL;
		uint32_t ties = 0;
		int64_t k;

		for (size_t i = 0; i < n_counts; i++) {
			if (strcmp(counts[i].owner, params->me) == 0)
				continue;
			if (!most || counts[i].count > most->count) {
				most = &counts[i];
				ties = 1;
			} else if (counts[i].count == most->count) {
				/* Random choice among equals (reservoir), else the first name. */
				ties++;
				if (rng && kl_rng_below(rng, ties) == 0)
					most = &counts[i];
			}
		}
		if (most && (most->count > plan.target || (most->count == plan.target && needed > 1))) {
			k = (int64_t)most->count - (int64_t)plan.target;
			if (k > needed)
				k = needed;
			if (k < 1)
				k = 1;
			if (k > (int64_t)max_steal)
				k = max_steal;
			/* Pick k of the victim's leases at random. */
			for (size_t i = 0; i < n; i++)
				if (!item_available(&items[i]) && strcmp(items[i].owner, most->owner) == 0)
					avail[plan.n_take++] = i;
			shuffle(avail, plan.n_take, rng);
			if ((int64_t)plan.n_take > k)
				plan.n_take = (size_t)k;
			memcpy(plan.take, avail, plan.n_take * sizeof(*avail));
			plan.n_steal = plan.n_take;
			plan.steal_from = most->owner;
		}
	}
	free(owners);
	free(counts);
	free(avail);
	*ret = plan;
	return KL_OK;
nomem:
	free(owners);
	free(counts);
	free(avail);
	free(plan.take);
	return KL_ENOMEM;
}

/* ---------------------------------------------------------------- take pass */

/*
 * After a take failed with an unknown outcome (transport error) or a
 * conditional failure that may be our own retried write: re-read once.
 * True when our take landed (our owner id and session, counter n + 1);
 * without this the lease would sit owned-but-unheld for a failover.
 */
static bool take_landed(struct lease_coord *c, const struct coord_view *v)
{
	struct lease item;
	bool ours;

	lease_init(&item);
	ours = lease_store_get(c->store, v->rec.key, &item, NULL) == KL_OK &&
	       coord_item_is_ours(c, &item) && item.counter == v->rec.counter + 1;
	lease_done(&item);
	return ours;
}

/* Takes view v. Tick thread; mu not held. */
static enum kl_err take_one(struct lease_coord *c, const struct coord_view *v, bool steal,
			    struct kl_errinfo *info)
{
	struct lease rec;
	struct coord_held *h;
	bool owner_changes = !v->rec.owner || strcmp(v->rec.owner, c->worker_id) != 0;
	int64_t send_ms, ready_ms, hb = 0;
	enum kl_err err;

	if (c->heartbeat)
		hb = lease_clock_wall(&c->clock);
	send_ms = coord_now(c);
	err = lease_store_take(c->store, v->rec.key, v->rec.counter, c->worker_id, c->session, hb,
			       owner_changes, info);
	if (err != KL_OK && !take_landed(c, v))
		return err;
	if (lease_copy(&rec, &v->rec) != KL_OK ||
	    lease_set_str(&rec.owner, c->worker_id) != KL_OK ||
	    lease_set_str(&rec.session, c->session) != KL_OK) {
		lease_done(&rec);
		/* The take landed; the lease will show as ours but unheld and expire. */
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	}
	rec.counter++;
	if (owner_changes)
		rec.owner_switches++;
	if (hb)
		rec.heartbeat_ms = hb;
	/*
	 * If someone owned it, they may still process until their last write
	 * plus failover; that write landed no later than our first sight of
	 * the counter we just replaced.
	 */
	ready_ms = send_ms;
	if (v->rec.owner && !coord_item_is_ours(c, &v->rec) &&
	    v->first_seen_ms + c->failover_ms > ready_ms)
		ready_ms = v->first_seen_ms + c->failover_ms;
	pthread_mutex_lock(&c->mu);
	if (c->stopping) {
		/* release_all() ran meanwhile (another thread): give it back. */
		pthread_mutex_unlock(&c->mu);
		(void)lease_store_release(c->store, rec.key, rec.counter, c->worker_id, NULL);
		lease_done(&rec);
		return KL_OK;
	}
	err = coord_add_held(c, &rec, send_ms, ready_ms, &h);
	if (err == KL_OK) {
		c->n_taken++;
		if (steal)
			c->n_stolen++;
	}
	pthread_mutex_unlock(&c->mu);
	lease_done(&rec);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease: out of memory");
	return KL_OK;
}

enum kl_err coord_take_pass(struct lease_coord *c, bool full, struct kl_errinfo *info)
{
	struct lease_taker_item *items;
	size_t *map;
	size_t m = 0;
	struct lease_taker_plan plan;
	struct lease_taker_params params;
	int64_t start = coord_now(c), now = start;
	uint32_t ok = 0, conflicts = 0;
	enum kl_err first = KL_OK, err;

	items = calloc(c->n_views ? c->n_views : 1, sizeof(*items));
	map = calloc(c->n_views ? c->n_views : 1, sizeof(*map));
	if (!items || !map) {
		free(items);
		free(map);
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	}
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->n_views; i++) {
		const struct coord_view *v = &c->views[i];

		if (lease_is_finished(&v->rec))
			continue; /* nothing to process: not counted, not taken */
		if (coord_find_held(c, v->rec.key)) {
			items[m].owner = c->worker_id;
		} else {
			items[m].owner = v->rec.owner;
			/* Last written by this very process, which no longer holds
			 * it (lapsed, or a take whose reply was lost): nobody is
			 * using it, no need to wait for it to expire. */
			items[m].expired = coord_item_is_ours(c, &v->rec) ||
					   coord_view_expired(c, v, now);
			items[m].very_old = v->unowned_at_sight ||
					    now - v->first_seen_ms > 3 * c->failover_ms;
		}
		map[m++] = i;
	}
	pthread_mutex_unlock(&c->mu);

	params.me = c->worker_id;
	params.max_leases = c->max_leases;
	params.max_steal = c->max_steal;
	params.allow_steal = full;
	err = lease_taker_compute(items, m, &params, &c->rng, &plan);
	if (err != KL_OK) {
		free(items);
		free(map);
		return kl_errinfo_set(info, err, "lease: out of memory");
	}
	pthread_mutex_lock(&c->mu);
	c->live_workers = plan.workers;
	c->target = plan.target;
	pthread_mutex_unlock(&c->mu);

	/* The views are only replaced by this thread, so pointers stay valid. */
	for (size_t i = 0; i < plan.n_take; i++) {
		const struct coord_view *v = &c->views[map[plan.take[i]]];
		bool steal = i >= plan.n_take - plan.n_steal;
		struct kl_errinfo ei;

		kl_errinfo_clear(&ei);
		err = take_one(c, v, steal, &ei);
		if (err == KL_OK) {
			ok++;
		} else if (err == KL_ECONFLICT) {
			conflicts++; /* another worker was faster: fine */
		} else {
			coord_note_error(c, err, &ei, "take");
			if (first == KL_OK) {
				first = err;
				if (info)
					*info = ei;
			}
		}
	}
	lease_taker_plan_done(&plan);
	free(items);
	free(map);
	if (full) {
		pthread_mutex_lock(&c->mu);
		c->full_take_passes++;
		c->st_take.at_ms = start;
		c->st_take.duration_ms = coord_now(c) - start;
		c->st_take.ok = ok;
		c->st_take.failed = conflicts;
		pthread_mutex_unlock(&c->mu);
	}
	return first;
}
