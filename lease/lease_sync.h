/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_sync.h: shard sync and resharding rules as pure functions, plus
 * the shard source interface they read (the Kinesis ListShards client in
 * the daemon, a fake stream in tests).
 *
 * Invariants: leases are created ancestors before descendants (a child's
 * lease only ever appears after its parents' leases, or never with them);
 * a finished lease is deleted only after every child has checkpointed past
 * its start and its own parents' leases are gone.
 */
#ifndef KL_LEASE_SYNC_H
#define KL_LEASE_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"
#include "lease.h"

/* 2^128 - 1, the last hash key, in decimal. */
#define LEASE_HASH_KEY_MAX "340282366920938463463374607431768211455"

/* A shard as ListShards (or GetRecords' childShards) describes it. */
struct lease_shard {
	char *shard_id;
	char *parent_id;             /* NULL when none */
	char *adjacent_parent_id;    /* NULL when none (set for merges) */
	char *starting_hash_key;     /* decimal */
	char *ending_hash_key;
	char *starting_seq;          /* decimal; NULL when unknown (child shards) */
	char *ending_seq;            /* NULL while the shard is open */
};

struct lease_shard_list {
	struct lease_shard *v;
	size_t n;
};

/* Appends a deep copy of s. */
enum kl_err lease_shard_list_add(struct lease_shard_list *list, const struct lease_shard *s);
/* Frees all shards and the array. NULL-safe. */
void lease_shard_list_done(struct lease_shard_list *list);

/* Which shards a listing returns (Kinesis ShardFilter). */
enum lease_shard_filter {
	LEASE_SHARDS_ALL = 0,          /* every shard still in retention */
	LEASE_SHARDS_AT_TRIM_HORIZON,  /* shards open at the trim horizon */
	LEASE_SHARDS_AT_LATEST,        /* shards open now */
	LEASE_SHARDS_AT_TIMESTAMP,     /* shards open at timestamp_ms */
};

/*
 * Where shards come from. list fills *ret (caller frees with
 * lease_shard_list_done) and returns KL_OK or an error with info. It is
 * only called from the coordinator's thread.
 */
struct lease_shard_source {
	enum kl_err (*list)(void *ctx, enum lease_shard_filter filter, int64_t timestamp_ms,
			    struct lease_shard_list *ret, struct kl_errinfo *info);
	void *ctx;
};

/* A hash key range [start, end], both decimal, inclusive. */
struct lease_hash_range {
	const char *start;
	const char *end;
};

/*
 * True when ranges[0..n) together cover 0 .. 2^128-1 with no hole
 * (overlaps are fine). On a hole, when hole is not NULL, writes its first
 * key there (holesz bytes). A malformed key counts as a hole. Pure.
 */
bool lease_hash_ranges_cover(const struct lease_hash_range *ranges, size_t n,
			     char *hole, size_t holesz);

/* One lease to create. */
struct lease_sync_new {
	size_t shard;                  /* index into the shard array */
	struct lease_esn checkpoint;   /* TRIM_HORIZON, LATEST or AT_TIMESTAMP */
};

struct lease_sync_plan {
	struct lease_sync_new *v;      /* in starting sequence number order */
	size_t n;
};

void lease_sync_plan_done(struct lease_sync_plan *plan);

/*
 * Which leases shard sync must create.
 *
 * table_empty: the table has no lease at all; shards[] must then be the
 * listing filtered by the initial position, and every shard gets a lease
 * at the initial position (checkpoint kind TRIM_HORIZON, LATEST or
 * AT_TIMESTAMP given in initial).
 *
 * Otherwise shards[] is the full listing and leased[] the keys of every
 * lease in the table. For each open shard without a lease: if it descends
 * from a leased shard (or, under TRIM_HORIZON/AT_TIMESTAMP, from a shard
 * in the listing), leases are created only for the nearest ancestors that
 * are neither leased nor descendants themselves (the rest follows at
 * SHARD_END); otherwise the open shard itself gets a lease. All new leases
 * take the initial position. Pure; fills *ret (free with
 * lease_sync_plan_done) or returns KL_ENOMEM/KL_EINVAL (a shard without id).
 */
enum kl_err lease_sync_plan(const struct lease_shard *shards, size_t n,
			    const struct lease_strset *leased, bool table_empty,
			    enum lease_esn_kind initial, struct lease_sync_plan *ret);

/*
 * Shard sync leader among owners[0..n) (duplicates allowed): the one with
 * the smallest 64-bit FNV-1a hash of its id (ties by name), so every
 * worker with the same view picks the same one and the choice moves when
 * that worker's leases expire. Returns an index, or n when n == 0. Pure.
 */
size_t lease_leader_pick(const char *const *owners, size_t n);

/*
 * May the finished lease f be deleted? find(ctx, key) returns the lease
 * with that key in the caller's view of the table, or NULL (for a sorted
 * scan: lease_gc_find_in_list with ctx = the struct lease_list).
 * children_hint (may be NULL) lists f's child shard ids when f->children
 * is empty. True when f is SHARD_END, has at least one known child, every
 * child lease exists and has a checkpoint past its start (not
 * TRIM_HORIZON/AT_TIMESTAMP), and none of f's parents has a lease any
 * more. Pure.
 */
bool lease_gc_may_delete(const struct lease *f,
			 const struct lease *(*find)(void *ctx, const char *key), void *ctx,
			 const struct lease_strset *children_hint);
/* find() for lease_gc_may_delete over a sorted struct lease_list. */
const struct lease *lease_gc_find_in_list(void *list, const char *key);

#endif
