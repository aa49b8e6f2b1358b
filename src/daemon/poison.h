/* SPDX-License-Identifier: Apache-2.0 */
/*
 * poison.h: poison records (DESIGN.md section 1 point 5, issue 8). A record
 * on which the plugin crashes the worker is tried at most poison.max_crashes
 * times across the fleet; then it goes to the error prefix as
 * "plugin-crash" instead of to the plugin, and the shard moves on.
 *
 * Three places keep the count (src/daemon/README.md, "Poison records"):
 *  - the marks file: one slot per shard thread in a shared file mapping,
 *    holding the ESN of the record the plugin has right now. A store to
 *    memory per record (no syscall); it survives the process dying, and
 *    the next start of the worker reads it;
 *  - the journal's crash counters: crashes seen by this host per (shard,
 *    ESN), bumped at start-up from the marks;
 *  - the lease's kinlakeCrashes attribute: per worker id, so whichever
 *    worker takes the shard next sums the crashes of every host.
 *
 * Invariants: the plugin never sees a record whose count reached the
 * limit; a count only grows while the record keeps crashing (a clean pass
 * clears it everywhere); counts are merged by maximum per worker, so any
 * write may be repeated without counting twice.
 */
#ifndef KL_POISON_H
#define KL_POISON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer.h"
#include "esn.h"
#include "journal.h"
#include "kl_err.h"
#include "lease.h"
#include "lease_store.h"

#define POISON_MARKS_FILE "poison.marks"   /* in state_dir */
#define POISON_LEASE_ATTR "kinlakeCrashes" /* S: JSON, see poison_table_decode() */
#define POISON_KEY_MAX 255                 /* longest lease key a marks slot holds */
#define POISON_MAX_POSITIONS 32            /* records kept per lease */
#define POISON_MAX_WORKERS 128             /* workers kept per record */

/* ------------------------------------------------------------ marks file */

struct poison_marks;
struct poison_slot;

/*
 * What the previous process left in one slot: a record it died on while
 * the plugin had it (crashed), and/or a record whose next attempt it had
 * already counted in the lease (ahead): if that attempt did not crash,
 * the count written ahead is taken back.
 */
struct poison_crash {
	char key[POISON_KEY_MAX + 1];  /* lease key (shard id) */
	struct esn esn;
	bool crashed;                  /* counts as a crash on this record */
	bool in_handler;               /* ... seen by the fatal-signal handler (else inferred) */
	bool ahead;                    /* an attempt was counted ahead in the lease */
	uint32_t ahead_base;           /* ... on top of this many crashes by this worker */
	uint32_t count;                /* for the caller: poison_count_crashes() fills it */
};

/*
 * Opens (creating if needed) the marks file at path for n_slots shard
 * threads, locks it (KL_ESTATE if another process holds it: two workers
 * on one state_dir), reads what the previous process left and starts a
 * clean file. The crashes: if the fatal-signal handler marked any slot,
 * exactly those; otherwise (kill -9, stack overflow, a crash outside any
 * plugin call) every slot whose thread was inside the plugin. Slots with
 * an attempt counted ahead are returned too (crashed or not). On KL_OK,
 * *ret_m (close with poison_marks_close()) and *ret_crashes (NULL when
 * none; free() it) / *ret_n are set. KL_EIO, KL_ENOMEM otherwise. Not
 * thread-safe: call at start-up.
 */
enum kl_err poison_marks_open(const char *path, uint32_t n_slots, struct poison_marks **ret_m,
			      struct poison_crash **ret_crashes, size_t *ret_n,
			      struct kl_errinfo *info);

/* Unmaps and unlocks; slots still marked stay in the file (as after a
 * crash). No slot may be in use. NULL-safe. */
void poison_marks_close(struct poison_marks *m);

/*
 * Claims a free slot for the calling thread's records of lease key and
 * binds it to the thread (what the fatal-signal handler looks at).
 * KL_ENOSPC when every slot is taken, KL_EINVAL for a key longer than
 * POISON_KEY_MAX. Thread-safe.
 */
enum kl_err poison_marks_claim(struct poison_marks *m, const char *key,
			       struct poison_slot **ret_slot, struct kl_errinfo *info);
/* Gives the slot back (from the thread that claimed it). NULL-safe. */
void poison_marks_release(struct poison_marks *m, struct poison_slot *s);

/* The plugin is about to get the record (seq, sub) / has returned. Only
 * the claiming thread; a few stores into the mapping, no syscall. */
void poison_slot_enter(struct poison_slot *s, const char *seq, uint64_t sub);
void poison_slot_leave(struct poison_slot *s);
/* An attempt at (seq, sub), after base crashes by this worker, is about to
 * be counted ahead in the lease / is settled (passed, or never made). */
void poison_slot_ahead(struct poison_slot *s, const char *seq, uint64_t sub, uint32_t base);
void poison_slot_ahead_done(struct poison_slot *s);

/*
 * Installs the process-wide fatal-signal handler (SIGSEGV, SIGBUS, SIGILL,
 * SIGFPE, SIGABRT raised by the process itself): it marks the slot of the
 * crashing thread when that thread is inside the plugin, then lets the
 * previous disposition (default: core dump) act. Idempotent; call before
 * any shard thread starts.
 */
void poison_handler_install(void);

/* ------------------------------------------------------------ start-up */

/*
 * Adds each crash to the journal's counter of (key, esn) (at least to
 * ahead_base + 1 when it was counted ahead), sets count to the crashes of
 * this worker on that record and logs it (warning). An attempt counted
 * ahead that did not crash gets count = ahead_base (logged). A journal
 * failure is logged; that crash is then not counted here. Thread-safe
 * (the journal is).
 */
void poison_count_crashes(struct journal *j, struct poison_crash *crashes, size_t n,
			  uint32_t max_crashes);

/* poison_publish() of each entry's count (exact for ahead entries, so an
 * attempt that did not crash is taken back); failures are logged (the
 * shard's next start here publishes the journal's counts again). */
void poison_publish_crashes(struct lease_store *store, const char *worker_id,
			    const struct poison_crash *crashes, size_t n);

/* ------------------------------------------------------------ the lease attribute */

/*
 * The kinlakeCrashes attribute: a string holding
 *   {"v":1,"crashes":[{"seq":"<digits>","sub":<n>,"by":{"<worker>":<n>,...}},...]}
 * sorted by ESN, workers sorted by name; the count of a record is the sum
 * over workers. Plain data below; everything is owned by the table.
 */
struct poison_by {
	char *worker;
	uint32_t count;
};

struct poison_entry {
	struct esn esn;
	struct poison_by *by;
	size_t n_by;
};

struct poison_table {
	struct poison_entry *v;
	size_t n;
};

/*
 * Decodes the attribute's DynamoDB JSON ({"S":"..."}; NULL = absent: an
 * empty table) into *ret (free with poison_table_done()). KL_EPARSE for
 * anything else (a later version included: callers then leave it alone),
 * KL_ENOMEM. Thread-safe.
 */
enum kl_err poison_table_decode(const char *ddb_json, struct poison_table *ret,
				struct kl_errinfo *info);
/* Encodes t as DynamoDB JSON into *ret (free()); NULL when t is empty. */
enum kl_err poison_table_encode(const struct poison_table *t, char **ret);
void poison_table_done(struct poison_table *t);
/* Sum over the workers of esn's entry (0 if none); *ret_mine (may be NULL)
 * gets worker's own part. */
uint32_t poison_table_count(const struct poison_table *t, const struct esn *esn,
			    const char *worker, uint32_t *ret_mine);

/*
 * Raises worker's count of esn in the lease of key to at least count, or
 * (exact) sets it to count (0: removes it); only worker itself writes its
 * count. Conditional on the attribute's old value, re-read and retried on
 * a conflict or an unknown outcome: repeating it never counts twice.
 * Entries at or below the lease's checkpoint are dropped on the way.
 * KL_ENOTFOUND (no lease), KL_EPARSE (a foreign attribute: left alone),
 * KL_EINVAL (the store has no set_extra), or the store's error.
 * Thread-safe.
 */
enum kl_err poison_publish(struct lease_store *store, const char *key, const char *worker_id,
			   const struct esn *esn, uint32_t count, bool exact,
			   struct kl_errinfo *info);

/* ------------------------------------------------------------ the guard */

struct poison_guard_config {
	const char *key;               /* lease key (shard id); copied */
	const char *worker_id;         /* copied */
	uint32_t max_crashes;          /* >= 1 */
	struct journal *journal;       /* borrowed; required */
	struct lease_store *store;     /* borrowed; NULL (or no set_extra): this host only */
	struct poison_marks *marks;    /* borrowed; NULL: crashes are not marked */
	struct lease_esn checkpoint;   /* the grant's: records at or below are done */
};

/* Counters of one guard (plain data). */
struct poison_guard_stats {
	uint32_t suspects;             /* records with a crash count when loaded */
	uint64_t retried;              /* suspects given to the plugin again */
	uint64_t passed;               /* ... which it survived (count cleared) */
	uint64_t routed;               /* sent to push_crashed() instead */
	uint64_t lease_errors;         /* lease reads / writes that failed */
};

struct poison_guard;

/*
 * The consumer_guard of one shard thread (call from that thread: it claims
 * a marks slot bound to it). Reads nothing yet: the journal and the lease
 * are read at the first record. KL_EINVAL, KL_ENOMEM; a marks file with no
 * free slot only costs the marking (logged). Free with poison_guard_free()
 * on the same thread after consumer_run().
 */
enum kl_err poison_guard_new(const struct poison_guard_config *cfg, struct poison_guard **ret,
			     struct kl_errinfo *info);
void poison_guard_free(struct poison_guard *g);

/* Fills *ret with the consumer_guard view of g. */
void poison_guard_consumer(struct poison_guard *g, struct consumer_guard *ret);

/* Copies g's counters (the guard's thread, or after it ran). */
void poison_guard_get_stats(const struct poison_guard *g, struct poison_guard_stats *ret);

#endif
