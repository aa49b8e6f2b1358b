/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_coord_int.h: the coordinator's private state, shared by
 * lease_coord.c (lifecycle, renew, scan, consumer calls), lease_status.c
 * (grants, status), lease_taker.c (take passes) and lease_sync.c (shard
 * sync, resharding, GC). Not installed; nothing outside lease/ includes it.
 *
 * Locking: c->mu guards held[], views and every statistic. It is never
 * held across a store call. A held lease with io_busy set has a write in
 * flight by exactly one thread and is never freed until io_busy clears.
 * views are replaced only by the ticking thread (under mu).
 */
#ifndef KL_LEASE_COORD_INT_H
#define KL_LEASE_COORD_INT_H

#include <pthread.h>

#include "lease_coord.h"
#include "util.h"

/* A lease as seen in the last scan. */
struct coord_view {
	struct lease rec;
	int64_t first_seen_ms;   /* receipt time of the scan that first showed rec.counter */
	bool unowned_at_sight;   /* unowned when this coordinator first saw it: very old */
};

/* A lease this worker holds (or recently held: ended != 0). */
struct coord_held {
	struct lease rec;          /* local copy; rec.counter = last confirmed counter */
	uint64_t token;
	enum lease_state ended;    /* 0 while held; LOST, RELEASED or FINISHED after */
	int64_t acquired_ms;
	int64_t basis_ms;          /* send time of the last confirmed write */
	int64_t unconfirmed_ms;    /* send time of the first write with unknown outcome, -1 */
	int64_t processable_from_ms;
	int64_t last_renew_ok_ms;
	int64_t ended_ms;
	bool renew_failing;
	bool parents_done;         /* sticky */
	bool io_busy;
	char note[160];
};

struct lease_coord {
	pthread_mutex_t mu;
	pthread_cond_t io_cv;      /* io_busy cleared */

	/* configuration, defaults resolved */
	char *worker_id;
	char session[24];
	int64_t failover_ms, renew_interval_ms, take_interval_ms, scan_interval_ms;
	int64_t sync_interval_ms, epsilon_ms;
	uint32_t max_leases, max_steal;
	bool heartbeat, cleanup;
	enum lease_initial_position initial_position;
	int64_t initial_timestamp_ms;

	struct lease_store *store;
	struct lease_clock clock;
	struct lease_shard_source shards;
	bool has_shards;
	struct kl_rng rng;         /* tick thread only */
	uint64_t next_token;

	struct coord_held **held;
	size_t n_held, alloc_held;

	struct coord_view *views;  /* sorted by key */
	size_t n_views;
	bool scanned;              /* views hold at least one scan */

	int64_t next_renew_ms, next_scan_ms, next_take_ms, next_sync_ms;
	bool stopping;
	bool leader;
	uint32_t live_workers, target;
	struct lease_status_worker *workers; /* counts from the last scan */
	size_t n_workers;
	uint32_t hash_holes_in_a_row;

	struct lease_pass_stats st_renew, st_scan, st_take, st_sync;
	uint64_t full_take_passes, n_taken, n_stolen, n_lost, n_released, n_created, n_deleted;
	char last_error[256];
};

static inline int64_t coord_now(const struct lease_coord *c)
{
	return lease_clock_mono(&c->clock);
}

/* Monotonic end of h's validity. */
static inline int64_t coord_valid_until(const struct lease_coord *c, const struct coord_held *h)
{
	return h->basis_ms + c->failover_ms - c->epsilon_ms;
}

/* -- lease_coord.c -- */

/* State of held lease h at now (HANDOVER ... LOST). mu held. */
enum lease_state coord_held_state(const struct lease_coord *c, const struct coord_held *h,
				  int64_t now);
/* True for HELD and RENEWING. */
bool coord_state_processable(enum lease_state s);
/* Frees a worker-count array. */
void coord_free_workers(struct lease_status_worker *w, size_t n);

/* True when item shows this process as owner and last writer
 * (leaseOwner = worker id and kinlakeSession = our session). */
bool coord_item_is_ours(const struct lease_coord *c, const struct lease *item);
/* The view of key, or NULL. Tick thread, or mu held. */
const struct coord_view *coord_find_view(const struct lease_coord *c, const char *key);
/* The active held lease with key, or NULL. mu held. */
struct coord_held *coord_find_held(const struct lease_coord *c, const char *key);
/* True when every parent of rec that has a lease in the views is SHARD_END. */
bool coord_parents_done(const struct lease_coord *c, const struct lease *rec);
/* True when v's counter has not moved for failover_ms (owned leases only). */
bool coord_view_expired(const struct lease_coord *c, const struct coord_view *v, int64_t now);
/* Adds a held lease (copied from rec, already written as ours). mu held. */
enum kl_err coord_add_held(struct lease_coord *c, const struct lease *rec, int64_t send_ms,
			   int64_t processable_from_ms, struct coord_held **ret);
/* Marks h ended with state and a note. mu held. */
void coord_end_held(struct lease_coord *c, struct coord_held *h, enum lease_state state,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Records an error for status; returns err. Takes mu itself. */
enum kl_err coord_note_error(struct lease_coord *c, enum kl_err err,
			     const struct kl_errinfo *info, const char *what);

/* Kinds of write to a held lease, for coord_held_write(). */
enum coord_write {
	COORD_WRITE_RENEW,
	COORD_WRITE_CHECKPOINT,
	COORD_WRITE_PREPARE,
	COORD_WRITE_RELEASE,
};

/*
 * One conditional write to held lease h, whose io_busy the caller set (mu
 * not held). Re-reads first when an earlier write's outcome is unknown,
 * tells a spurious conditional failure (our own write landed) from a lost
 * lease, and updates h. Returns KL_OK, KL_ELEASE_LOST (h is now ended), or
 * the store's error (outcome unknown; h remembers that).
 */
enum kl_err coord_held_write(struct lease_coord *c, struct coord_held *h, enum coord_write kind,
			     const struct lease_esn *esn, const void *state, size_t state_len,
			     struct kl_errinfo *info);

/* Claims h for a write from a consumer thread: waits for io_busy to clear,
 * then checks processability. mu held on entry and exit. Returns KL_OK
 * with io_busy set, or KL_ELEASE_LOST / KL_ESTATE. */
enum kl_err coord_claim_for_consumer(struct lease_coord *c, struct coord_held *h);
/* Clears io_busy and wakes waiters. Takes mu. */
void coord_unclaim(struct lease_coord *c, struct coord_held *h);
/* Finds (key, token) among held leases, ended or not. mu held. */
struct coord_held *coord_find_token(const struct lease_coord *c, const char *key, uint64_t token);

/* -- lease_taker.c -- */

/* A take pass on the current views; full passes may steal. Tick thread. */
enum kl_err coord_take_pass(struct lease_coord *c, bool full, struct kl_errinfo *info);

/* -- lease_sync.c -- */

/* Recomputes c->leader from the views. Tick thread, takes mu. */
void coord_elect(struct lease_coord *c);
/* Shard sync (+ GC) if leader and due. Tick thread. */
enum kl_err coord_sync_pass(struct lease_coord *c, struct kl_errinfo *info);
/* Audits the hash ranges of unfinished leases (leader). Tick thread. */
void coord_audit_leases(struct lease_coord *c);

#endif
