/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_coord.h: the lease coordinator of one worker: renews the leases it
 * holds, takes and steals leases to balance the fleet, runs shard sync and
 * lease garbage collection when it is the leader, and lets consumer threads
 * checkpoint, end shards and release leases.
 *
 * Threading: one thread drives the coordinator by calling
 * lease_coord_tick() whenever lease_coord_next_due() says (the daemon's
 * coordinator thread; a simulation's loop). Every other function may be
 * called from any thread (consumer threads, status). The coordinator never
 * holds its lock across a store call; writes to one lease are serialised
 * (a checkpoint waits for an in-flight renew of the same lease and vice
 * versa), so the store must be thread-safe.
 *
 * Fencing invariant: lease_coord_check() answers KL_OK for a lease only
 * while no other worker can have started processing it: the holder stops
 * failover_ms - epsilon_ms after the send time of its last confirmed write,
 * and a taker waits until the counter it took over has been unchanged for
 * failover_ms (as seen on its own monotonic clock) before processing.
 */
#ifndef KL_LEASE_COORD_H
#define KL_LEASE_COORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"
#include "lease.h"
#include "lease_clock.h"
#include "lease_store.h"
#include "lease_sync.h"

struct lease_coord;

enum lease_initial_position {
	LEASE_INITIAL_LATEST = 0,      /* KCL's default */
	LEASE_INITIAL_TRIM_HORIZON,
	LEASE_INITIAL_AT_TIMESTAMP,
};

/* Zero means "the default" for every field except worker_id. */
struct lease_coord_config {
	const char *worker_id;        /* required; unique per process (copied) */
	int64_t failover_ms;          /* 10000 */
	int64_t renew_interval_ms;    /* failover / 3 */
	int64_t take_interval_ms;     /* 2 x failover: full take passes (with stealing) */
	int64_t scan_interval_ms;     /* failover / 3: quick passes that take unowned and
				       * expired leases up to target, never steal */
	int64_t sync_interval_ms;     /* 60000: shard sync + GC, leader only */
	int64_t epsilon_ms;           /* 25: the holder stops this much before failover */
	uint32_t max_leases;          /* unlimited */
	uint32_t max_steal;           /* 1 */
	bool no_heartbeat;            /* do not write kinlakeHeartbeat on renew/take */
	bool no_cleanup;              /* never delete finished parent leases */
	enum lease_initial_position initial_position;
	int64_t initial_timestamp_ms; /* AT_TIMESTAMP: wall-clock ms (not stored in leases) */
	uint64_t seed;                /* 0: random. Seeds shuffles and the session id */
};

enum lease_state {
	LEASE_STATE_UNOWNED = 0,       /* in the table, no owner */
	LEASE_STATE_OWNED,             /* another worker holds it and renews it */
	LEASE_STATE_EXPIRED,           /* owned, counter unchanged for failover_ms */
	LEASE_STATE_FINISHED,          /* checkpoint is SHARD_END */
	LEASE_STATE_HANDOVER,          /* held here, waiting until the previous holder must have stopped */
	LEASE_STATE_WAITING_PARENTS,   /* held here, a parent lease is not SHARD_END yet */
	LEASE_STATE_HELD,              /* held here, renewed: process it */
	LEASE_STATE_RENEWING,          /* held here, still valid, but the last renew failed */
	LEASE_STATE_LOST,              /* was held here: taken, deleted, or not renewed in time */
	LEASE_STATE_RELEASED,          /* was held here: released gracefully */
};

/* Static name of a state ("held", "waiting-on-parents", ...). Thread-safe. */
const char *lease_state_name(enum lease_state state);

/*
 * Creates a coordinator. store and shards (may be NULL: no shard sync) are
 * borrowed and must outlive it; cfg and clock are copied. Does no I/O.
 * On success *ret is set (free with lease_coord_free).
 */
enum kl_err lease_coord_new(const struct lease_coord_config *cfg, struct lease_store *store,
			    const struct lease_clock *clock, const struct lease_shard_source *shards,
			    struct lease_coord **ret, struct kl_errinfo *info);

/*
 * Frees the coordinator without writing anything (what a crash does:
 * leases expire). Call lease_coord_release_all() first for a graceful
 * stop. No other call may be in progress. NULL-safe.
 */
void lease_coord_free(struct lease_coord *c);

/*
 * Does whatever is due at the clock's current time: local expiry, renew
 * pass, scan with a quick or full take pass, shard sync and GC. Returns
 * KL_OK, or the first error met (the rest of the work is still done; the
 * details are in info and in the status). Call from one thread only.
 */
enum kl_err lease_coord_tick(struct lease_coord *c, struct kl_errinfo *info);

/* Monotonic time at which lease_coord_tick() next has work to do. */
int64_t lease_coord_next_due(struct lease_coord *c);

/* A lease held by this worker, as handed to the consumer layer. */
struct lease_grant {
	char *key;
	uint64_t token;                /* concurrency token of this acquisition */
	enum lease_state state;        /* HANDOVER, WAITING_PARENTS, HELD, RENEWING or FINISHED */
	bool processable;              /* lease_coord_check() would say KL_OK now */
	int64_t valid_until_ms;        /* monotonic */
	int64_t processable_from_ms;   /* end of the handover wait */
	struct lease_esn checkpoint;   /* where to resume */
	struct lease_esn pending;      /* an intent left by the last holder; NONE if none */
	uint8_t *pending_state;
	size_t pending_state_len;
	struct lease_strset parents;
	char *starting_hash_key;       /* NULL when unknown */
	char *ending_hash_key;
};

/*
 * Lists the leases held now (including those waiting for a handover or for
 * their parents). Fills *ret_grants (free with lease_grants_free) and
 * *ret_n. A consumer whose token is no longer listed must stop. Thread-safe.
 */
enum kl_err lease_coord_grants(struct lease_coord *c, struct lease_grant **ret_grants,
			       size_t *ret_n);
void lease_grants_free(struct lease_grant *grants, size_t n);

/*
 * May the holder of (key, token) process now? KL_OK (and *ret_valid_until_ms,
 * if not NULL: do not start work that ends after it), KL_ESTATE (held but
 * waiting: handover or parents), or KL_ELEASE_LOST. Thread-safe, no I/O.
 */
enum kl_err lease_coord_check(struct lease_coord *c, const char *key, uint64_t token,
			      int64_t *ret_valid_until_ms);

/*
 * Phase 1 of a checkpoint: records the intent (pendingCheckpoint* and the
 * opaque state bytes, copied) conditional on the counter. pending must be
 * after the current checkpoint. Returns KL_OK; KL_ELEASE_LOST (the lease
 * is gone: stop, never retry); KL_ESTATE (not processable now); KL_EINVAL;
 * or a transport error (outcome unknown: retrying is safe). Thread-safe;
 * blocks while a write to the same lease is in flight.
 */
enum kl_err lease_coord_prepare(struct lease_coord *c, const char *key, uint64_t token,
				const struct lease_esn *pending, const void *state,
				size_t state_len, struct kl_errinfo *info);

/*
 * Phase 2 (or a plain checkpoint): writes esn as the checkpoint, resets
 * ownerSwitchesSinceCheckpoint and removes any intent, conditional on the
 * counter. esn must not be before the current checkpoint (equal is allowed
 * and just clears the intent). Results as for lease_coord_prepare().
 */
enum kl_err lease_coord_checkpoint(struct lease_coord *c, const char *key, uint64_t token,
				   const struct lease_esn *esn, struct kl_errinfo *info);

/*
 * The consumer reached the end of shard key: children[0..n) are its child
 * shards (from GetRecords' childShards; parents and hash ranges set).
 * Creates each child lease at TRIM_HORIZON with parentShardId, writes
 * childShardIds on this lease, checkpoints SHARD_END and releases the
 * lease. For a merge (one child, two parents) the co-parent's lease must
 * exist: if not, returns KL_ESTATE (retry later; shard sync creates it).
 * Other results as for lease_coord_prepare(). Thread-safe.
 */
enum kl_err lease_coord_shard_end(struct lease_coord *c, const char *key, uint64_t token,
				  const struct lease_shard *children, size_t n,
				  struct kl_errinfo *info);

/*
 * Gives the lease up now: it stops being processable at once, then the
 * owner is removed (counter + 1, conditional on owner and counter) so any
 * worker takes it on its next scan. Call after committing what can be
 * committed. KL_OK also when the lease was already lost. Thread-safe.
 */
enum kl_err lease_coord_release(struct lease_coord *c, const char *key, uint64_t token,
				struct kl_errinfo *info);

/* Releases every held lease (graceful shutdown) and stops taking new ones:
 * later ticks only renew nothing. Returns the first error. Thread-safe. */
enum kl_err lease_coord_release_all(struct lease_coord *c, struct kl_errinfo *info);

/* ---------------------------------------------------------------- status */

struct lease_status_lease {
	char *key;
	char *owner;                  /* NULL: unowned */
	uint64_t counter;
	struct lease_esn checkpoint;
	bool has_pending;
	uint64_t owner_switches;
	enum lease_state state;       /* as seen from this worker */
	bool held_here;
	bool waiting_on_parents;      /* some parent lease exists and is not SHARD_END */
	int64_t unchanged_ms;         /* time since its counter last moved, as seen here */
	int64_t heartbeat_wall_ms;    /* kinlakeHeartbeat, 0 if none */
	/* Held (or recently held) here only, else 0: */
	uint64_t token;
	int64_t acquired_ms;
	int64_t last_renew_ms;        /* monotonic time of the last successful renew */
	int64_t valid_until_ms;
	char note[160];               /* why it was lost, etc. */
};

struct lease_status_worker {
	char *worker;
	uint32_t leases;              /* unexpired, unfinished leases it owns */
};

struct lease_pass_stats {
	int64_t at_ms;                /* monotonic start of the last pass; 0 = never */
	int64_t duration_ms;
	uint32_t ok;
	uint32_t failed;
};

struct lease_status {
	char *worker_id;
	int64_t now_ms;
	bool leader;                  /* runs shard sync and GC */
	bool stopping;                /* release_all was called */
	uint32_t live_workers;
	uint32_t target;
	struct lease_status_lease *leases;   /* the last scan, plus leases ended here */
	size_t n_leases;
	struct lease_status_worker *workers;
	size_t n_workers;
	struct lease_pass_stats renew;       /* ok/failed = renews */
	struct lease_pass_stats scan;        /* ok/failed = scans */
	struct lease_pass_stats take;        /* last full take pass: ok = taken, failed = conflicts */
	struct lease_pass_stats sync;        /* ok = leases created, failed = errors */
	uint64_t full_take_passes;
	uint64_t taken;                      /* cumulative */
	uint64_t stolen;
	uint64_t lost;
	uint64_t released;
	uint64_t created;
	uint64_t deleted;
	uint32_t hash_holes_in_a_row;        /* audits of open leases' hash ranges */
	char last_error[256];
};

/* Fills *ret (free with lease_status_done). Thread-safe. */
enum kl_err lease_coord_status(struct lease_coord *c, struct lease_status *ret);
void lease_status_done(struct lease_status *st);

#endif
