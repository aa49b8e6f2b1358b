/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease.h: the lease record (one item of a KCL 2.x lease table) and the
 * extended sequence number (ESN) that checkpoints are made of.
 *
 * Invariants: an ESN of kind LEASE_ESN_SEQ holds a decimal string without
 * leading zeros, so two of them compare by length then bytes (no bignum);
 * a struct lease owns every pointer it holds, lease_done() frees them all
 * and lease_copy() is deep. Nothing here is shared: the caller serialises.
 */
#ifndef KL_LEASE_H
#define KL_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

/* Attribute names of the lease table (KCL 2.x plus kinlake's own). */
#define LEASE_ATTR_KEY            "leaseKey"
#define LEASE_ATTR_OWNER          "leaseOwner"
#define LEASE_ATTR_COUNTER        "leaseCounter"
#define LEASE_ATTR_CHECKPOINT     "checkpoint"
#define LEASE_ATTR_CHECKPOINT_SUB "checkpointSubSequenceNumber"
#define LEASE_ATTR_PENDING        "pendingCheckpoint"
#define LEASE_ATTR_PENDING_SUB    "pendingCheckpointSubSequenceNumber"
#define LEASE_ATTR_PENDING_STATE  "pendingCheckpointState"
#define LEASE_ATTR_OWNER_SWITCHES "ownerSwitchesSinceCheckpoint"
#define LEASE_ATTR_PARENTS        "parentShardId"
#define LEASE_ATTR_CHILDREN       "childShardIds"
#define LEASE_ATTR_START_HASH     "startingHashKey"
#define LEASE_ATTR_END_HASH       "endingHashKey"
#define LEASE_ATTR_ENTITY_TYPE    "entityType"
/* kinlake-only attributes (KCL ignores unknown attributes). */
#define LEASE_ATTR_HEARTBEAT      "kinlakeHeartbeat" /* N: owner's wall-clock ms at its last renew/take */
#define LEASE_ATTR_SESSION        "kinlakeSession"   /* S: id of the process that last renewed/took/checkpointed */

/* entityType value of a lease; items with another entityType are skipped. */
#define LEASE_ENTITY_LEASE "LEASE"

/* Kinesis sequence numbers are at most 129 decimal digits ("0|[1-9]\d{0,128}"). */
#define LEASE_SEQ_MAX 129

/*
 * ESN kinds in KCL's order: AT_TIMESTAMP < TRIM_HORIZON < LATEST < any
 * sequence number < SHARD_END. NONE (attribute absent) sorts first.
 */
enum lease_esn_kind {
	LEASE_ESN_NONE = 0,
	LEASE_ESN_AT_TIMESTAMP,
	LEASE_ESN_TRIM_HORIZON,
	LEASE_ESN_LATEST,
	LEASE_ESN_SEQ,
	LEASE_ESN_SHARD_END,
};

/* Extended sequence number: sequence number + KPL sub-sequence number. */
struct lease_esn {
	enum lease_esn_kind kind;
	uint64_t subseq;              /* checkpointSubSequenceNumber; 0 for sentinels */
	char seq[LEASE_SEQ_MAX + 1];  /* decimal, no leading zeros; "" unless kind == SEQ */
};

/*
 * Parses a checkpoint attribute value: a sentinel name or a decimal
 * sequence number (leading zeros are dropped). subseq is kept as given.
 * Returns KL_OK and fills *ret, or KL_EINVAL (info says why).
 */
enum kl_err lease_esn_parse(const char *checkpoint, uint64_t subseq,
			    struct lease_esn *ret, struct kl_errinfo *info);

/* Builds a sentinel ESN (subseq 0). kind must not be LEASE_ESN_SEQ. */
struct lease_esn lease_esn_sentinel(enum lease_esn_kind kind);

/* The checkpoint attribute text of esn: the sentinel name or the digits;
 * "" for NONE. Points into esn or at a constant; valid while esn is. */
const char *lease_esn_str(const struct lease_esn *esn);

/* <0, 0, >0 like strcmp, in KCL's order (kind, then number, then subseq). */
int lease_esn_cmp(const struct lease_esn *a, const struct lease_esn *b);

static inline bool lease_esn_is(const struct lease_esn *esn, enum lease_esn_kind kind)
{
	return esn->kind == kind;
}

/*
 * Compares two non-negative decimal strings (no sign, leading zeros
 * ignored) by value: by length, then bytewise. Used for sequence numbers
 * and hash keys.
 */
int lease_dec_cmp(const char *a, const char *b);
/* True when s is a non-empty string of decimal digits. */
bool lease_dec_valid(const char *s);
/*
 * Writes a + 1 (a decimal string) into out (outsz bytes) without leading
 * zeros. Returns KL_OK, or KL_EINVAL when a is not decimal or out is too
 * small.
 */
enum kl_err lease_dec_inc(const char *a, char *out, size_t outsz);

/* A set of strings (parentShardId, childShardIds): owned, no duplicates. */
struct lease_strset {
	char **v;
	size_t n;
};

/* Adds s (copied) unless present. KL_ENOMEM on allocation failure. */
enum kl_err lease_strset_add(struct lease_strset *set, const char *s);
bool lease_strset_has(const struct lease_strset *set, const char *s);
void lease_strset_done(struct lease_strset *set);
enum kl_err lease_strset_copy(struct lease_strset *dst, const struct lease_strset *src);

/*
 * An attribute kinlake does not know, kept verbatim so that nothing is
 * lost: value is the attribute's DynamoDB JSON ({"S":"..."}), opaque here.
 */
struct lease_attr {
	char *name;
	char *value;
};

/* One lease item. Absent optional attributes are NULL / NONE / 0. */
struct lease {
	char *key;                       /* leaseKey (shard id) */
	char *owner;                     /* leaseOwner; NULL = unowned */
	uint64_t counter;                /* leaseCounter: the fencing token */
	struct lease_esn checkpoint;     /* checkpoint + checkpointSubSequenceNumber */
	struct lease_esn pending;        /* pendingCheckpoint*; kind NONE when absent */
	uint8_t *pending_state;          /* pendingCheckpointState (B); NULL when absent */
	size_t pending_state_len;
	uint64_t owner_switches;         /* ownerSwitchesSinceCheckpoint */
	struct lease_strset parents;     /* parentShardId (SS) */
	struct lease_strset children;    /* childShardIds (SS) */
	char *starting_hash_key;         /* decimal; NULL when absent */
	char *ending_hash_key;
	char *entity_type;               /* entityType; NULL = a lease (compatibility) */
	int64_t heartbeat_ms;            /* kinlakeHeartbeat (wall clock); 0 = absent */
	char *session;                   /* kinlakeSession; NULL = absent */
	struct lease_attr *extra;        /* every other attribute, preserved */
	size_t n_extra;
};

/* Zeroes l (an empty, unowned lease with no checkpoint). */
void lease_init(struct lease *l);
/* Frees everything l owns and zeroes it. NULL-safe. */
void lease_done(struct lease *l);
/* Heap variants: lease_new() returns a zeroed lease or NULL; lease_free()
 * is lease_done() + free(), NULL-safe. */
struct lease *lease_new(void);
void lease_free(struct lease *l);
/* Deep copy of src into *dst (which is overwritten, not freed first).
 * KL_ENOMEM leaves *dst zeroed. */
enum kl_err lease_copy(struct lease *dst, const struct lease *src);

/* Setters that replace a string field with a copy of s (NULL clears). */
enum kl_err lease_set_str(char **field, const char *s);
/* Replaces the pending state bytes (NULL/0 clears). */
enum kl_err lease_set_pending_state(struct lease *l, const void *data, size_t len);
/* Adds or replaces an extra attribute (both strings copied). */
enum kl_err lease_set_extra(struct lease *l, const char *name, const char *value);
/* The value of extra attribute name, or NULL. */
const char *lease_get_extra(const struct lease *l, const char *name);

/* True when l is a lease item (entityType absent or LEASE). */
bool lease_is_lease_entity(const struct lease *l);
/* True when l's checkpoint is SHARD_END. */
static inline bool lease_is_finished(const struct lease *l)
{
	return l->checkpoint.kind == LEASE_ESN_SHARD_END;
}

/* A list of leases (a scan result). items is owned. */
struct lease_list {
	struct lease *items;
	size_t n;
	size_t alloc;
};

void lease_list_init(struct lease_list *list);
/* Frees every lease and the array. NULL-safe. */
void lease_list_done(struct lease_list *list);
/* Appends a deep copy of l. */
enum kl_err lease_list_add(struct lease_list *list, const struct lease *l);
/* Sorts by key (bytewise). */
void lease_list_sort(struct lease_list *list);
/* Binary search in a sorted list; NULL when absent. */
const struct lease *lease_list_find(const struct lease_list *list, const char *key);

#endif
