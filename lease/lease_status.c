/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_status.c: what the coordinator shows to others: the grants the
 * consumer layer starts and stops consumers from, and the status snapshot
 * `kinlake status` prints. Everything is copied under the coordinator's
 * lock, so callers own plain data and never see the coordinator change.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease_coord_int.h"

static enum kl_err grant_fill(const struct lease_coord *c, const struct coord_held *h,
			      int64_t now, struct lease_grant *g)
{
	memset(g, 0, sizeof(*g));
	g->token = h->token;
	g->state = coord_held_state(c, h, now);
	g->processable = coord_state_processable(g->state);
	g->valid_until_ms = coord_valid_until(c, h);
	g->processable_from_ms = h->processable_from_ms;
	g->checkpoint = h->rec.checkpoint;
	g->pending = h->rec.pending;
	if (lease_set_str(&g->key, h->rec.key) != KL_OK ||
	    lease_strset_copy(&g->parents, &h->rec.parents) != KL_OK ||
	    lease_set_str(&g->starting_hash_key, h->rec.starting_hash_key) != KL_OK ||
	    lease_set_str(&g->ending_hash_key, h->rec.ending_hash_key) != KL_OK)
		return KL_ENOMEM;
	if (h->rec.pending_state_len) {
		g->pending_state = malloc(h->rec.pending_state_len);
		if (!g->pending_state)
			return KL_ENOMEM;
		memcpy(g->pending_state, h->rec.pending_state, h->rec.pending_state_len);
		g->pending_state_len = h->rec.pending_state_len;
	}
	return KL_OK;
}

void lease_grants_free(struct lease_grant *grants, size_t n)
{
	if (!grants)
		return;
	for (size_t i = 0; i < n; i++) {
		free(grants[i].key);
		free(grants[i].pending_state);
		lease_strset_done(&grants[i].parents);
		free(grants[i].starting_hash_key);
		free(grants[i].ending_hash_key);
	}
	free(grants);
}

enum kl_err lease_coord_grants(struct lease_coord *c, struct lease_grant **ret_grants,
			       size_t *ret_n)
{
	struct lease_grant *g;
	size_t n = 0;
	int64_t now;

	pthread_mutex_lock(&c->mu);
	now = coord_now(c);
	g = calloc(c->n_held ? c->n_held : 1, sizeof(*g));
	if (!g) {
		pthread_mutex_unlock(&c->mu);
		return KL_ENOMEM;
	}
	for (size_t i = 0; i < c->n_held; i++) {
		const struct coord_held *h = c->held[i];
		enum lease_state s = coord_held_state(c, h, now);

		if (s == LEASE_STATE_LOST || s == LEASE_STATE_RELEASED || h->ended)
			continue;
		if (grant_fill(c, h, now, &g[n]) != KL_OK) {
			pthread_mutex_unlock(&c->mu);
			lease_grants_free(g, n + 1);
			return KL_ENOMEM;
		}
		n++;
	}
	pthread_mutex_unlock(&c->mu);
	*ret_grants = g;
	*ret_n = n;
	return KL_OK;
}

static enum kl_err status_add(struct lease_status *st, size_t *alloc,
			      const struct lease_status_lease *e)
{
	if (st->n_leases == *alloc) {
		size_t na = *alloc ? *alloc * 2 : 16;
		struct lease_status_lease *v = realloc(st->leases, na * sizeof(*v));

		if (!v)
			return KL_ENOMEM;
		st->leases = v;
		*alloc = na;
	}
	st->leases[st->n_leases++] = *e;
	return KL_OK;
}

static enum kl_err status_entry(const struct lease_coord *c, const struct lease *rec,
				const struct coord_view *v, const struct coord_held *h,
				int64_t now, struct lease_status_lease *e)
{
	memset(e, 0, sizeof(*e));
	if (lease_set_str(&e->key, rec->key) != KL_OK ||
	    lease_set_str(&e->owner, rec->owner) != KL_OK) {
		free(e->key);
		return KL_ENOMEM;
	}
	e->counter = rec->counter;
	e->checkpoint = rec->checkpoint;
	e->has_pending = rec->pending.kind != LEASE_ESN_NONE;
	e->owner_switches = rec->owner_switches;
	e->heartbeat_wall_ms = rec->heartbeat_ms;
	e->waiting_on_parents = !lease_is_finished(rec) && !coord_parents_done(c, rec);
	if (v)
		e->unchanged_ms = now - v->first_seen_ms;
	if (h) {
		e->held_here = !h->ended;
		e->state = coord_held_state(c, h, now);
		e->token = h->token;
		e->acquired_ms = h->acquired_ms;
		e->last_renew_ms = h->last_renew_ok_ms;
		e->valid_until_ms = coord_valid_until(c, h);
		snprintf(e->note, sizeof(e->note), "%s", h->note);
	} else if (lease_is_finished(rec)) {
		e->state = LEASE_STATE_FINISHED;
	} else if (!rec->owner) {
		e->state = LEASE_STATE_UNOWNED;
	} else if (v && coord_view_expired(c, v, now)) {
		e->state = LEASE_STATE_EXPIRED;
	} else {
		e->state = LEASE_STATE_OWNED;
	}
	return KL_OK;
}

void lease_status_done(struct lease_status *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_leases; i++) {
		free(st->leases[i].key);
		free(st->leases[i].owner);
	}
	free(st->leases);
	coord_free_workers(st->workers, st->n_workers);
	free(st->worker_id);
	memset(st, 0, sizeof(*st));
}

enum kl_err lease_coord_status(struct lease_coord *c, struct lease_status *ret)
{
	struct lease_status st;
	struct lease_status_lease e;
	size_t alloc = 0;
	int64_t now;
	enum kl_err err = KL_OK;

	memset(&st, 0, sizeof(st));
	pthread_mutex_lock(&c->mu);
	now = coord_now(c);
	st.now_ms = now;
	st.leader = c->leader;
	st.stopping = c->stopping;
	st.live_workers = c->live_workers;
	st.target = c->target;
	st.renew = c->st_renew;
	st.scan = c->st_scan;
	st.take = c->st_take;
	st.sync = c->st_sync;
	st.full_take_passes = c->full_take_passes;
	st.taken = c->n_taken;
	st.stolen = c->n_stolen;
	st.lost = c->n_lost;
	st.released = c->n_released;
	st.created = c->n_created;
	st.deleted = c->n_deleted;
	st.hash_holes_in_a_row = c->hash_holes_in_a_row;
	snprintf(st.last_error, sizeof(st.last_error), "%s", c->last_error);
	st.worker_id = strdup(c->worker_id);
	if (!st.worker_id)
		err = KL_ENOMEM;
	if (err == KL_OK && c->n_workers) {
		st.workers = calloc(c->n_workers, sizeof(*st.workers));
		if (!st.workers)
			err = KL_ENOMEM;
		for (size_t i = 0; err == KL_OK && i < c->n_workers; i++) {
			st.workers[i].leases = c->workers[i].leases;
			st.workers[i].worker = strdup(c->workers[i].worker);
			if (!st.workers[i].worker)
				err = KL_ENOMEM;
			st.n_workers = i + 1;
		}
	}
	for (size_t i = 0; err == KL_OK && i < c->n_views; i++) {
		const struct coord_view *v = &c->views[i];
		const struct coord_held *h = coord_find_held(c, v->rec.key);

		err = status_entry(c, h ? &h->rec : &v->rec, v, h, now, &e);
		if (err == KL_OK && !h) {
			/* Say why we no longer hold it, if we did recently. */
			for (size_t k = c->n_held; k-- > 0;)
				if (strcmp(c->held[k]->rec.key, v->rec.key) == 0) {
					snprintf(e.note, sizeof(e.note), "%s here: %.140s",
						 lease_state_name(c->held[k]->ended), c->held[k]->note);
					break;
				}
		}
		if (err == KL_OK && (err = status_add(&st, &alloc, &e)) != KL_OK) {
			free(e.key);
			free(e.owner);
		}
	}
	/* Leases held or ended here that the last scan did not show at all. */
	for (size_t i = 0; err == KL_OK && i < c->n_held; i++) {
		const struct coord_held *h = c->held[i];

		if (coord_find_view(c, h->rec.key))
			continue;
		err = status_entry(c, &h->rec, coord_find_view(c, h->rec.key), h, now, &e);
		if (err == KL_OK && (err = status_add(&st, &alloc, &e)) != KL_OK) {
			free(e.key);
			free(e.owner);
		}
	}
	pthread_mutex_unlock(&c->mu);
	if (err != KL_OK) {
		lease_status_done(&st);
		return err;
	}
	*ret = st;
	return KL_OK;
}
