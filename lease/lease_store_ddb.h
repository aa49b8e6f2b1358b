/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_store_ddb.h: the lease store (lease_store.h) on a DynamoDB table in
 * KCL 2.x's schema, plus the item <-> record conversion and the request
 * builders it is made of (public so tests can state the exact requests).
 *
 * Invariants: one DynamoDB request per store operation, with exactly the
 * condition and update expression lease_store.h documents; writes name only
 * the attributes they change, so attributes written by KCL or anyone else
 * survive; items whose entityType is present and not "LEASE" are never
 * returned; a failed condition is KL_ECONFLICT, unchanged.
 *
 * Thread-safety: the store keeps a small pool of AWS clients (an aws_client
 * is single-threaded). Each operation borrows an idle client, or creates one
 * while fewer than max_clients exist, or waits for one to come back, so a
 * consumer's slow checkpoint never delays the coordinator's renews behind a
 * lock. Every operation may therefore be called from any thread at once.
 */
#ifndef KL_LEASE_STORE_DDB_H
#define KL_LEASE_STORE_DDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "aws.h"
#include "creds.h"
#include "kl_err.h"
#include "lease.h"
#include "lease_store.h"

struct lease_store_ddb_config {
	const char *table;            /* the lease table (KCL: the application name); required */
	/* Endpoint, region, HTTP timeouts and retry policy of the clients;
	 * service is forced to "dynamodb". Lease writes should not retry for
	 * long: keep max_attempts x timeout well below the failover time. */
	const struct aws_client_config *aws;
	struct creds_chain *creds;    /* borrowed, shared; must outlive the store */
	unsigned max_clients;         /* concurrent requests; 0 = 8 */
	size_t max_items;             /* scan cap, items of any entity type; 0 = 100000 */
	int scan_page_limit;          /* Scan Limit per page; 0 = service default (1 MB) */
};

/*
 * Creates a store handle. cfg and its strings are copied (creds is
 * borrowed). No I/O: clients are created on first use. KL_EINVAL for a
 * missing table or creds, KL_ENOMEM. Free with lease_store_free() once no
 * call is in progress.
 */
enum kl_err lease_store_ddb_new(const struct lease_store_ddb_config *cfg,
				struct lease_store **ret_store, struct kl_errinfo *info);

/*
 * Creates the table if it is missing (hash key leaseKey S, PAY_PER_REQUEST,
 * as KCL does), then waits up to timeout_ms until it is ACTIVE. An
 * existing table whose hash key is not leaseKey (S) or that has a range key
 * is KL_ECONFIG. store must come from lease_store_ddb_new (else KL_EINVAL).
 * Blocks; thread-safe.
 */
enum kl_err lease_store_ddb_ensure_table(struct lease_store *store, long timeout_ms,
					 struct kl_errinfo *info);

/* ------------------------------------------------------ conversion */

/*
 * Reads one item (DynamoDB JSON, borrowed) into *ret (initialised here;
 * caller frees with lease_done). Known attributes must have KCL's types
 * (leaseKey S and leaseCounter N required; numbers are unsigned integers
 * that fit 64 bits, kinlakeHeartbeat signed); every other attribute is
 * kept verbatim in ret->extra as its DynamoDB JSON text.
 * Returns KL_OK; KL_ENOTFOUND for an item whose entityType is present and
 * not "LEASE" (skip it; nothing else is checked); KL_EPARSE for a malformed
 * lease (info names the attribute); KL_ENOMEM. Thread-safe.
 */
enum kl_err lease_ddb_from_item(const json_object *item, struct lease *ret,
				struct kl_errinfo *info);

/*
 * The item create writes for l (a new object the caller json_object_put()s):
 * leaseKey, leaseCounter, leaseOwner if set, checkpoint,
 * checkpointSubSequenceNumber, ownerSwitchesSinceCheckpoint,
 * pendingCheckpoint* if set, parentShardId / childShardIds (SS) if
 * non-empty, startingHashKey / endingHashKey if set. Not written: extra,
 * entityType, kinlakeSession, kinlakeHeartbeat. KL_EINVAL without a key or
 * checkpoint, KL_ENOMEM. Thread-safe.
 */
enum kl_err lease_ddb_to_item(const struct lease *l, json_object **ret_item,
			      struct kl_errinfo *info);

/* ------------------------------------------------------ requests */

/* A request ready for aws_json_call(): operation name and body. */
struct lease_ddb_req {
	const char *operation;        /* static: "GetItem", "PutItem", "UpdateItem", "DeleteItem" */
	json_object *body;            /* owned; release with lease_ddb_req_done() */
};

/* Releases r->body and zeroes r. NULL-safe. */
void lease_ddb_req_done(struct lease_ddb_req *r);

/*
 * Builders of the request each store operation sends (see lease_store.h
 * for the expressions). Arguments as for the store operation, plus the
 * table; strings are borrowed. Attribute names always go through
 * ExpressionAttributeNames (#lk leaseKey, #lo leaseOwner, #lc leaseCounter,
 * #cp checkpoint, #cps checkpointSubSequenceNumber, #pc pendingCheckpoint,
 * #pcs pendingCheckpointSubSequenceNumber, #pst pendingCheckpointState,
 * #osc ownerSwitchesSinceCheckpoint, #ch childShardIds, #sh/#eh hash keys,
 * #et entityType, #ss kinlakeSession, #hb kinlakeHeartbeat), so no
 * attribute name can collide with a DynamoDB reserved word. Each fills
 * *ret on KL_OK; KL_EINVAL for bad arguments (a counter that cannot be
 * incremented, an empty checkpoint, one hash key without the other),
 * KL_ENOMEM. update_meta with nothing to change builds a consistent
 * GetItem (the existence check alone). Thread-safe.
 */
enum kl_err lease_ddb_req_get(const char *table, const char *key, struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_create(const char *table, const struct lease *l,
				 struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_renew(const char *table, const char *key, uint64_t counter,
				const char *session, int64_t heartbeat_ms,
				struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_take(const char *table, const char *key, uint64_t counter,
			       const char *owner, const char *session, int64_t heartbeat_ms,
			       bool owner_changes, struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_release(const char *table, const char *key, uint64_t counter,
				  const char *owner, struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_checkpoint(const char *table, const char *key, uint64_t counter,
				     const char *session, const struct lease_esn *cp,
				     struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_prepare(const char *table, const char *key, uint64_t counter,
				  const char *session, const struct lease_esn *pending,
				  const void *state, size_t state_len, struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_update_meta(const char *table, const char *key,
				      const struct lease_strset *children,
				      const char *starting_hash_key, const char *ending_hash_key,
				      struct lease_ddb_req *ret);
enum kl_err lease_ddb_req_delete(const char *table, const char *key, uint64_t counter,
				 struct lease_ddb_req *ret);
/* set_extra: #x is the attribute; value and expected are DynamoDB JSON
 * (KL_EINVAL if either does not parse as a JSON object, or for a name the
 * lease record knows). */
enum kl_err lease_ddb_req_set_extra(const char *table, const char *key, const char *name,
				    const char *expected, const char *value,
				    struct lease_ddb_req *ret);

#endif
