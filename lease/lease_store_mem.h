/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_store_mem.h: the in-memory lease store. One struct lease_mem_table
 * plays the DynamoDB table; each worker gets its own store handle onto it,
 * and each handle can inject faults (errors, lost replies, spurious
 * conditional failures, latency, a network partition) so tests can hurt
 * one worker at a time. Semantics match lease_store.h exactly, including
 * the preservation of unknown attributes.
 *
 * Thread-safety: the table and every handle may be used from several
 * threads; faults are applied under the table lock. Latency goes through
 * the handle's clock (a fake clock only advances, and is single-threaded).
 */
#ifndef KL_LEASE_STORE_MEM_H
#define KL_LEASE_STORE_MEM_H

#include <stdbool.h>
#include <stdint.h>

#include "lease.h"
#include "lease_clock.h"
#include "lease_store.h"

struct lease_mem_table;

/* Returns an empty table or NULL (ENOMEM). Free with lease_mem_table_free
 * after every handle onto it is freed. */
struct lease_mem_table *lease_mem_table_new(void);
void lease_mem_table_free(struct lease_mem_table *t);

/* Test back doors, no faults, no conditions. put stores a deep copy of l
 * (any entityType, extra attributes included), replacing an item with the
 * same key. read copies the item with key into *ret (caller frees with
 * lease_done) or returns KL_ENOTFOUND. dump copies every item, non-lease
 * entities included, sorted by key. */
enum kl_err lease_mem_table_put(struct lease_mem_table *t, const struct lease *l);
enum kl_err lease_mem_table_read(struct lease_mem_table *t, const char *key, struct lease *ret);
enum kl_err lease_mem_table_dump(struct lease_mem_table *t, struct lease_list *ret);

/* Faults of one handle. Zeroed = a perfect network. */
struct lease_mem_faults {
	bool partitioned;            /* every call fails with KL_ETIMEOUT, unapplied */
	int64_t latency_ms;          /* sleep (via the clock) before a call is applied */
	int64_t reply_latency_ms;    /* sleep after it is applied, before returning */
	enum kl_err fail_err;        /* error of injected failures; KL_OK means KL_ETIMEOUT */
	uint32_t fail_next;          /* the next N calls fail with fail_err, unapplied */
	uint32_t fail_permille;      /* each call fails with fail_err, unapplied */
	uint32_t lost_reply_next;    /* the next N successful writes return KL_ETIMEOUT */
	uint32_t lost_reply_permille;
	uint32_t ghost_conflict_next; /* the next N successful writes return KL_ECONFLICT
				       * (a client retry whose first attempt landed) */
	uint32_t ghost_conflict_permille;
	uint64_t seed;               /* for the permille draws */
};

enum lease_mem_op {
	LEASE_MEM_OP_SCAN = 0,
	LEASE_MEM_OP_GET,
	LEASE_MEM_OP_CREATE,
	LEASE_MEM_OP_RENEW,
	LEASE_MEM_OP_TAKE,
	LEASE_MEM_OP_RELEASE,
	LEASE_MEM_OP_CHECKPOINT,
	LEASE_MEM_OP_PREPARE,
	LEASE_MEM_OP_UPDATE_META,
	LEASE_MEM_OP_DELETE,
	LEASE_MEM_OP_SET_EXTRA,
	LEASE_MEM_OP_COUNT,
};

struct lease_mem_stats {
	uint64_t calls[LEASE_MEM_OP_COUNT];  /* every call, faulted or not */
	uint64_t applied[LEASE_MEM_OP_COUNT]; /* writes that changed the table */
	uint64_t conflicts;                  /* real conditional failures */
	uint64_t injected;                   /* injected faults of any kind */
};

/*
 * Returns a new store handle onto t (borrowed; must outlive the handle),
 * or NULL (ENOMEM). clock (copied; may be NULL) is used for latency only.
 * Free with lease_store_free().
 */
struct lease_store *lease_store_mem_new(struct lease_mem_table *t, const struct lease_clock *clock);

/* Replaces the faults of handle s (which must come from lease_store_mem_new). */
void lease_store_mem_set_faults(struct lease_store *s, const struct lease_mem_faults *faults);
/* Copies the handle's call counters. */
void lease_store_mem_get_stats(struct lease_store *s, struct lease_mem_stats *ret);

#endif
