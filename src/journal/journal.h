/* SPDX-License-Identifier: Apache-2.0 */
/*
 * journal.h: the local SQLite recovery journal of one worker host: the
 * batch intents of the exactly-once protocol (DESIGN.md section 4) with
 * their object keys and spool files, and per-ESN crash counters for the
 * poison-record logic. The lease table stays the source of truth; the
 * journal only lets a restarted worker upload a verified spool file
 * instead of re-reading Kinesis, and lets `status` show pending intents.
 *
 * Invariants: intent and commit writes are durable when the call returns
 * (WAL, synchronous=FULL); a journal that cannot be read or has a foreign
 * or newer schema is moved aside and replaced by an empty one, never
 * fatal (the lease table still knows every intent); a batch is identified
 * by (shard, first ESN): recording it again replaces it.
 *
 * Threads: one struct journal per process, shared by every thread; each
 * call holds the journal's mutex for its duration (SQLite's own mutexes
 * are off: the connection is never used by two threads at once). Other
 * processes (kinlake status) may open the same file: SQLite locks it and
 * a busy database is waited for (busy_timeout, 5 s) before KL_ETIMEOUT.
 */
#ifndef KL_JOURNAL_H
#define KL_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esn.h"
#include "kl_err.h"

/* The schema this build writes; older ones are migrated at open. */
#define JOURNAL_SCHEMA_VERSION 1
#define JOURNAL_BUSY_TIMEOUT_MS 5000
#define JOURNAL_MAX_OBJECTS 10000   /* objects per batch (partitions + error objects) */

enum journal_state {
	JOURNAL_STATE_OPEN = 0,   /* batch being built; spool files not sealed */
	JOURNAL_STATE_INTENT,     /* intent recorded (lease and journal); uploading */
	JOURNAL_STATE_UPLOADED,   /* every object uploaded; checkpoint not yet done */
	JOURNAL_STATE_COMMITTED,  /* checkpointed; kept until pruned */
};

/* One object of a batch. As input every field is borrowed; in a list from
 * journal_list_pending() the strings belong to the list. */
struct journal_object {
	const char *key;            /* S3 object key */
	const char *spool_path;     /* local sealed spool file; NULL = none */
	uint64_t spool_bytes;       /* its size */
	const char *spool_sha256;   /* its SHA-256, hex; NULL = unknown */
	bool uploaded;              /* output only */
};

/* One batch. Fields marked "out" are ignored on input. */
struct journal_batch {
	int64_t id;                 /* out: row id, the handle for later calls */
	const char *shard_id;
	const char *lease_key;      /* the lease's leaseKey (normally the shard id) */
	struct esn first, last;     /* the batch's ESN range */
	enum journal_state state;   /* out */
	uint32_t attempts;          /* out: times the batch was recorded (rebuilds) */
	int64_t created_ms;         /* out: wall clock, for people */
	int64_t updated_ms;         /* out */
	struct journal_object *objects;
	size_t n_objects;
};

struct journal;

/*
 * Opens (creating if needed) the journal database at path, checks it
 * (PRAGMA integrity_check), switches it to WAL and migrates its schema to
 * JOURNAL_SCHEMA_VERSION. A file that is not a database, is corrupt, or
 * has a foreign or newer schema is renamed to "<path>.corrupt.<n>" (with
 * its -wal file) and a fresh journal is created: see journal_moved_aside().
 * Returns KL_OK and *ret_j (close with journal_close()), or KL_EIO /
 * KL_ENOSPC / KL_ENOMEM / KL_ETIMEOUT when the file cannot be opened or
 * written at all (info says why). Call once at start-up.
 */
enum kl_err journal_open(const char *path, struct journal **ret_j, struct kl_errinfo *info);

/* Finalizes the statements and closes the database. NULL-safe. */
void journal_close(struct journal *j);

/*
 * When journal_open() had to move a damaged journal aside: where it went
 * and why ("not a database", "integrity check failed: ...", ...);
 * otherwise NULL. Owned by j. The caller should log it (warning).
 */
const char *journal_moved_aside(const struct journal *j);
const char *journal_moved_reason(const struct journal *j);

/* Schema version of the open journal (JOURNAL_SCHEMA_VERSION after open). */
int journal_schema_version(struct journal *j);

/*
 * Records batch b (shard, lease key, ESN range, objects) in state
 * JOURNAL_STATE_OPEN or JOURNAL_STATE_INTENT, in one transaction. A batch
 * with the same shard and first ESN is replaced (its objects too), its
 * attempts counter incremented. Returns KL_OK and the row id in *ret_id
 * (may be NULL); KL_EINVAL for a bad argument; KL_EIO, KL_ENOSPC,
 * KL_ETIMEOUT (busy) from SQLite. Durable on return.
 */
enum kl_err journal_put(struct journal *j, const struct journal_batch *b,
			enum journal_state state, int64_t *ret_id, struct kl_errinfo *info);

/*
 * Marks object key of batch id uploaded (key NULL = all of them). When
 * every object is uploaded the batch moves to JOURNAL_STATE_UPLOADED.
 * KL_ENOTFOUND for an unknown id or key, KL_ESTATE unless the batch is in
 * INTENT or UPLOADED. Durable on return.
 */
enum kl_err journal_mark_uploaded(struct journal *j, int64_t id, const char *key,
				  struct kl_errinfo *info);

/*
 * Marks batch id committed (after the lease checkpoint succeeded). From
 * INTENT or UPLOADED; already COMMITTED is success (a retried call).
 * KL_ENOTFOUND, KL_ESTATE (an OPEN batch has no intent). Durable.
 */
enum kl_err journal_mark_committed(struct journal *j, int64_t id, struct kl_errinfo *info);

/* Adds one to the attempts counter of batch id; new value in *ret_attempts. */
enum kl_err journal_bump_attempts(struct journal *j, int64_t id, uint32_t *ret_attempts,
				  struct kl_errinfo *info);

/* Deletes batch id and its objects whatever its state (a discarded batch). */
enum kl_err journal_forget(struct journal *j, int64_t id, struct kl_errinfo *info);

/*
 * Deletes committed batches and crash counters last updated before
 * older_than_ms (wall clock, ms). Number of batches deleted in
 * *ret_deleted (may be NULL).
 */
enum kl_err journal_prune(struct journal *j, int64_t older_than_ms, size_t *ret_deleted,
			  struct kl_errinfo *info);

/*
 * Every batch not yet committed (OPEN, INTENT, UPLOADED) of shard_id, or
 * of all shards when shard_id is NULL, ordered by shard then age, with
 * their objects. On KL_OK *ret_batches (NULL when none) and *ret_n belong
 * to the caller: free with journal_batches_free().
 */
enum kl_err journal_list_pending(struct journal *j, const char *shard_id,
				 struct journal_batch **ret_batches, size_t *ret_n,
				 struct kl_errinfo *info);
void journal_batches_free(struct journal_batch *batches, size_t n);

/*
 * Crash counters: how many times the worker died while processing the
 * record at (shard, esn). bump adds one and returns the new count; get
 * returns 0 for an unknown position; clear forgets one position (esn) or
 * every position of the shard (esn NULL). Bumps are written with
 * synchronous=NORMAL: in WAL mode that survives the process dying (what
 * is being counted); only an OS crash can lose the last bump, which gives
 * the record one more try.
 */
enum kl_err journal_crash_bump(struct journal *j, const char *shard_id, const struct esn *esn,
			       uint32_t *ret_count, struct kl_errinfo *info);
enum kl_err journal_crash_get(struct journal *j, const char *shard_id, const struct esn *esn,
			      uint32_t *ret_count, struct kl_errinfo *info);
enum kl_err journal_crash_clear(struct journal *j, const char *shard_id, const struct esn *esn,
				struct kl_errinfo *info);

/* One crash counter, as listed. */
struct journal_crash {
	struct esn esn;
	uint32_t count;
};

/* Rows journal_crash_list() returns at most (more would mean a plugin that
 * crashes on everything: the rest wait for the next call). */
#define JOURNAL_MAX_CRASHES 256

/*
 * Every crash counter of shard_id (at most JOURNAL_MAX_CRASHES), sorted by
 * ESN. On KL_OK *ret_list (NULL when there are none; free() it) and *ret_n
 * are set. KL_EINVAL without a shard id; KL_EIO / KL_ETIMEOUT / KL_ENOMEM.
 */
enum kl_err journal_crash_list(struct journal *j, const char *shard_id,
			       struct journal_crash **ret_list, size_t *ret_n,
			       struct kl_errinfo *info);

/* "open", "intent", "uploaded", "committed". Static string. */
const char *journal_state_name(enum journal_state state);

#endif
