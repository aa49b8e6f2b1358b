/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_taker.h: the take/steal arithmetic of a take pass, as a pure
 * function of one worker's view of the table, so it can be tested by
 * tables of cases. The coordinator (lease_coord.h) builds the view from its
 * last scan and performs the chosen takes as conditional writes.
 *
 * Rules (KCL 2.x's DynamoDBLeaseTaker):
 *  - live workers = distinct owners of leases that are not available, plus
 *    this worker; available = unowned or expired;
 *  - target = 1 if live workers >= leases, else ceil(leases / workers),
 *    capped by max_leases;
 *  - if some available leases are very old (untouched for 3x failover, or
 *    unowned when first seen), take all of them whatever the target, up to
 *    max_leases, and nothing else in this pass;
 *  - else needed = target - (my unavailable leases); if needed > 0, take up
 *    to needed available leases;
 *  - only when no lease is available: steal from the single most loaded
 *    worker, if it has more than target (or exactly target while needed > 1):
 *    n = min(needed, most - target), at least 1, at most max_steal.
 */
#ifndef KL_LEASE_TAKER_H
#define KL_LEASE_TAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"
#include "util.h"

/* One lease as the taker sees it. Finished (SHARD_END) leases are left
 * out by the caller. */
struct lease_taker_item {
	const char *owner;  /* NULL = unowned */
	bool expired;       /* owned, counter unchanged for failover (judged locally) */
	bool very_old;      /* unchanged for 3x failover, or unowned when first seen */
};

struct lease_taker_params {
	const char *me;       /* this worker's id */
	uint32_t max_leases;  /* 0 = no cap */
	uint32_t max_steal;   /* 0 = 1 */
	bool allow_steal;     /* false on quick passes between full take passes */
};

struct lease_taker_plan {
	size_t *take;         /* indexes into items[]: available leases first, then steals */
	size_t n_take;
	size_t n_steal;       /* how many of take[] (the last ones) are steals */
	uint32_t workers;     /* live workers, this one included */
	uint32_t target;
	uint32_t mine;        /* my unavailable leases before the pass */
	uint32_t available;   /* available leases */
	const char *steal_from; /* the victim (points into items[]), or NULL */
};

/*
 * Computes which of items[0..n) to take. rng (may be NULL: no shuffling,
 * ties broken by order and name) randomises choices so that workers do
 * not all race for the same leases. On success fills *ret (free with
 * lease_taker_plan_done) and returns KL_OK; KL_ENOMEM otherwise.
 * Pure: thread-safe if rng is not shared.
 */
enum kl_err lease_taker_compute(const struct lease_taker_item *items, size_t n,
				const struct lease_taker_params *params, struct kl_rng *rng,
				struct lease_taker_plan *ret);

/* Frees plan->take. NULL-safe. */
void lease_taker_plan_done(struct lease_taker_plan *plan);

#endif
