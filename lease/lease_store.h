/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_store.h: the storage interface of the lease table, a table of
 * function pointers plus a context. Each operation is exactly one DynamoDB
 * request (documented below), so the DynamoDB store is a thin translation
 * and the in-memory store (lease_store_mem.h) can model it faithfully.
 *
 * Invariants every implementation keeps:
 *  - a conditional write whose condition fails changes nothing and returns
 *    KL_ECONFLICT (DynamoDB's ConditionalCheckFailedException);
 *  - writes name the attributes they change (UpdateItem SET/REMOVE/ADD);
 *    no write ever rewrites a whole existing item, so attributes kinlake
 *    does not know (struct lease.extra) are never dropped;
 *  - every write that changes checkpoint or pending fields, or ownership,
 *    bumps leaseCounter, so a record read with counter n is exact for n;
 *  - scan and get return only lease entities: an item whose entityType is
 *    present and not "LEASE" is skipped by scan and is KL_ENOTFOUND for get.
 *
 * Outcome of a failed write: KL_ECONFLICT means "not applied"; a transport
 * error (KL_ETIMEOUT, KL_ECONNECT, KL_ESERVER, KL_ETHROTTLED...) means
 * "unknown": it may have landed. Note that a client which retries
 * internally can turn a landed write into KL_ECONFLICT on its retry; the
 * coordinator re-reads the item to tell that case apart (kinlakeSession).
 *
 * Thread-safety: every operation may be called from several threads at
 * once (the coordinator thread renews while consumer threads checkpoint).
 * lease_store_free() must not race with any call.
 *
 * DynamoDB mapping (":n" is the counter the caller last saw, ":n1" = :n+1;
 * names in expressions are the LEASE_ATTR_* of lease.h; the table's hash
 * key is leaseKey (S); numbers are sent as N strings):
 *
 *   scan         Scan, ConsistentRead=true, all pages. Items with an
 *                entityType other than "LEASE" are dropped.
 *   get          GetItem Key={leaseKey}, ConsistentRead=true.
 *   create       PutItem of the full record (leaseKey, leaseCounter,
 *                leaseOwner if set, checkpoint, checkpointSubSequenceNumber,
 *                ownerSwitchesSinceCheckpoint, pendingCheckpoint* if set,
 *                parentShardId SS if non-empty, childShardIds SS if
 *                non-empty, startingHashKey/endingHashKey if set),
 *                ConditionExpression attribute_not_exists(leaseKey).
 *   renew        UpdateItem SET leaseCounter = :n1, kinlakeSession = :s
 *                [, kinlakeHeartbeat = :hb]
 *                ConditionExpression leaseCounter = :n
 *   take         UpdateItem SET leaseCounter = :n1, leaseOwner = :me,
 *                kinlakeSession = :s [, kinlakeHeartbeat = :hb]
 *                [ADD ownerSwitchesSinceCheckpoint :one  -- owner changes]
 *                ConditionExpression leaseCounter = :n
 *   release      UpdateItem REMOVE leaseOwner SET leaseCounter = :n1
 *                ConditionExpression leaseCounter = :n AND leaseOwner = :me
 *   checkpoint   UpdateItem SET leaseCounter = :n1, checkpoint = :cp,
 *                checkpointSubSequenceNumber = :sub,
 *                ownerSwitchesSinceCheckpoint = :zero, kinlakeSession = :s
 *                REMOVE pendingCheckpoint, pendingCheckpointSubSequenceNumber,
 *                pendingCheckpointState
 *                ConditionExpression leaseCounter = :n
 *   prepare      UpdateItem SET leaseCounter = :n1, pendingCheckpoint = :p,
 *                pendingCheckpointSubSequenceNumber = :psub,
 *                kinlakeSession = :s [, pendingCheckpointState = :st (B)]
 *                [REMOVE pendingCheckpointState -- when no state is given]
 *                ConditionExpression leaseCounter = :n
 *   update_meta  UpdateItem SET [childShardIds = :c (SS)]
 *                [, startingHashKey = :sh, endingHashKey = :eh]
 *                ConditionExpression attribute_exists(leaseKey) AND
 *                (attribute_not_exists(entityType) OR entityType = :lease)
 *                (no counter bump: KCL's updateLeaseWithMetaInfo; the
 *                entityType clause keeps other entities untouched, as
 *                the counter does for every other write). With nothing
 *                to change: a consistent GetItem, KL_ECONFLICT if no lease.
 *   delete       DeleteItem ConditionExpression leaseCounter = :n
 *                (KCL deletes unconditionally; the condition only makes
 *                a stale garbage collector harmless)
 *   set_extra    UpdateItem SET #x = :v  (or REMOVE #x when value is NULL)
 *                ConditionExpression attribute_exists(leaseKey) AND
 *                (attribute_not_exists(entityType) OR entityType = :lease)
 *                AND #x = :old  (or attribute_not_exists(#x) when expected
 *                is NULL); #x is the attribute, one of kinlake's own
 *                ("kinlake..." but not kinlakeHeartbeat / kinlakeSession).
 *                No counter bump and no counter condition: nothing of the
 *                lease protocol reads such an attribute, so it may be
 *                written by any worker, holder or not (the poison-record
 *                crash counts of src/daemon/poison.h); the attribute's own
 *                old value is the optimistic lock. KCL ignores it.
 */
#ifndef KL_LEASE_STORE_H
#define KL_LEASE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kl_err.h"
#include "lease.h"

struct lease_store_ops {
	const char *name; /* "memory", "dynamodb": for messages */

	/* Fills *ret (initialised by the callee; caller frees with
	 * lease_list_done) with every lease item, in no particular order. */
	enum kl_err (*scan)(void *ctx, struct lease_list *ret, struct kl_errinfo *info);
	/* Fills *ret (caller frees with lease_done) or KL_ENOTFOUND. */
	enum kl_err (*get)(void *ctx, const char *key, struct lease *ret,
			   struct kl_errinfo *info);
	/* Creates l if no item has its key; KL_ECONFLICT if one exists.
	 * Only the known fields of l are written (not extra, not session). */
	enum kl_err (*create)(void *ctx, const struct lease *l, struct kl_errinfo *info);
	/* heartbeat_ms <= 0 leaves kinlakeHeartbeat alone. */
	enum kl_err (*renew)(void *ctx, const char *key, uint64_t counter,
			     const char *session, int64_t heartbeat_ms,
			     struct kl_errinfo *info);
	enum kl_err (*take)(void *ctx, const char *key, uint64_t counter,
			    const char *owner, const char *session, int64_t heartbeat_ms,
			    bool owner_changes, struct kl_errinfo *info);
	enum kl_err (*release)(void *ctx, const char *key, uint64_t counter,
			       const char *owner, struct kl_errinfo *info);
	/* cp must not be LEASE_ESN_NONE. */
	enum kl_err (*checkpoint)(void *ctx, const char *key, uint64_t counter,
				  const char *session, const struct lease_esn *cp,
				  struct kl_errinfo *info);
	/* pending must not be NONE; state may be NULL (state_len 0). */
	enum kl_err (*prepare)(void *ctx, const char *key, uint64_t counter,
			       const char *session, const struct lease_esn *pending,
			       const void *state, size_t state_len,
			       struct kl_errinfo *info);
	/* children NULL (or empty) and hash keys NULL leave those unchanged;
	 * both hash keys or neither. */
	enum kl_err (*update_meta)(void *ctx, const char *key,
				   const struct lease_strset *children,
				   const char *starting_hash_key,
				   const char *ending_hash_key,
				   struct kl_errinfo *info);
	enum kl_err (*delete_lease)(void *ctx, const char *key, uint64_t counter,
				    struct kl_errinfo *info);
	/* Frees ctx. */
	void (*destroy)(void *ctx);
	/*
	 * Optional (NULL: not supported). Sets (value) or removes (value
	 * NULL) the extra attribute name of lease key when its current value
	 * is expected, or when it is absent if expected is NULL. value and
	 * expected are DynamoDB JSON ({"S":"..."}), as in struct lease_attr;
	 * lease_store_set_extra() checks name. KL_ECONFLICT when the
	 * condition fails or there is no such lease.
	 */
	enum kl_err (*set_extra)(void *ctx, const char *key, const char *name,
				 const char *expected, const char *value,
				 struct kl_errinfo *info);
};

/* A store handle: created by an implementation's constructor
 * (lease_store_mem_new, lease_store_ddb_new), freed by lease_store_free. */
struct lease_store {
	const struct lease_store_ops *ops;
	void *ctx;
};

/* Frees the handle and its context. NULL-safe. */
void lease_store_free(struct lease_store *store);

/* Dispatchers: same arguments and results as the ops above. */
static inline enum kl_err lease_store_scan(struct lease_store *s, struct lease_list *ret,
					   struct kl_errinfo *info)
{
	return s->ops->scan(s->ctx, ret, info);
}

static inline enum kl_err lease_store_get(struct lease_store *s, const char *key,
					  struct lease *ret, struct kl_errinfo *info)
{
	return s->ops->get(s->ctx, key, ret, info);
}

static inline enum kl_err lease_store_create(struct lease_store *s, const struct lease *l,
					     struct kl_errinfo *info)
{
	return s->ops->create(s->ctx, l, info);
}

static inline enum kl_err lease_store_renew(struct lease_store *s, const char *key,
					    uint64_t counter, const char *session,
					    int64_t heartbeat_ms, struct kl_errinfo *info)
{
	return s->ops->renew(s->ctx, key, counter, session, heartbeat_ms, info);
}

static inline enum kl_err lease_store_take(struct lease_store *s, const char *key,
					   uint64_t counter, const char *owner,
					   const char *session, int64_t heartbeat_ms,
					   bool owner_changes, struct kl_errinfo *info)
{
	return s->ops->take(s->ctx, key, counter, owner, session, heartbeat_ms,
			    owner_changes, info);
}

static inline enum kl_err lease_store_release(struct lease_store *s, const char *key,
					      uint64_t counter, const char *owner,
					      struct kl_errinfo *info)
{
	return s->ops->release(s->ctx, key, counter, owner, info);
}

static inline enum kl_err lease_store_checkpoint(struct lease_store *s, const char *key,
						 uint64_t counter, const char *session,
						 const struct lease_esn *cp,
						 struct kl_errinfo *info)
{
	return s->ops->checkpoint(s->ctx, key, counter, session, cp, info);
}

static inline enum kl_err lease_store_prepare(struct lease_store *s, const char *key,
					      uint64_t counter, const char *session,
					      const struct lease_esn *pending,
					      const void *state, size_t state_len,
					      struct kl_errinfo *info)
{
	return s->ops->prepare(s->ctx, key, counter, session, pending, state, state_len, info);
}

static inline enum kl_err lease_store_update_meta(struct lease_store *s, const char *key,
						  const struct lease_strset *children,
						  const char *starting_hash_key,
						  const char *ending_hash_key,
						  struct kl_errinfo *info)
{
	return s->ops->update_meta(s->ctx, key, children, starting_hash_key,
				   ending_hash_key, info);
}

static inline enum kl_err lease_store_delete(struct lease_store *s, const char *key,
					     uint64_t counter, struct kl_errinfo *info)
{
	return s->ops->delete_lease(s->ctx, key, counter, info);
}

/* True when the store implements set_extra. */
static inline bool lease_store_has_set_extra(const struct lease_store *s)
{
	return s->ops->set_extra != NULL;
}

/*
 * set_extra for kinlake's own attributes only: KL_EINVAL for a name that
 * does not start with "kinlake" or is one the lease record parses
 * (kinlakeHeartbeat, kinlakeSession), or a NULL key, and when the store
 * has no set_extra. Otherwise as the op.
 */
static inline enum kl_err lease_store_set_extra(struct lease_store *s, const char *key,
						const char *name, const char *expected,
						const char *value, struct kl_errinfo *info)
{
	if (!key || !name || strncmp(name, "kinlake", 7) != 0 || !name[7] ||
	    strcmp(name, LEASE_ATTR_HEARTBEAT) == 0 || strcmp(name, LEASE_ATTR_SESSION) == 0)
		return kl_errinfo_set(info, KL_EINVAL, "lease store: '%s' is not a kinlake attribute",
				      name ? name : "(null)");
	if (!s->ops->set_extra)
		return kl_errinfo_set(info, KL_EINVAL, "lease store %s: set_extra not supported",
				      s->ops->name);
	return s->ops->set_extra(s->ctx, key, name, expected, value, info);
}

#endif
