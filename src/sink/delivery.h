/* SPDX-License-Identifier: Apache-2.0 */
/*
 * delivery.h: the S3 record sink of one held shard: batches what the
 * transform made of each record into spool files (one per partition, plus
 * error objects), and delivers every sealed batch exactly once with the
 * two-phase protocol of DESIGN.md section 4 (intent in the lease and the
 * journal, upload, checkpoint), recovering intents left by a crash.
 *
 * Invariants: a batch is a contiguous ESN range of the shard; its object
 * keys depend only on the batch (shard, first and last ESN, arrival time of
 * its first record, partition values, error type), so a rebuilt batch
 * overwrites its own objects; nothing is uploaded before the intent that
 * names the key is in the lease, and nothing is checkpointed before every
 * object of the batch is uploaded; records are never dropped: when S3, the
 * lease table or the disk fails, the shard stops advancing until it works.
 *
 * Threads: a struct delivery belongs to one shard consumer thread (every
 * call, the stats included). The coordinator, journal and key templates it
 * borrows are shared and thread-safe. The S3 uploader's aws_client must be
 * the calling thread's own.
 */
#ifndef KL_DELIVERY_H
#define KL_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aws.h"
#include "buf.h"
#include "errrec.h"
#include "esn.h"
#include "journal.h"
#include "keytmpl.h"
#include "kl_err.h"
#include "lease.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "log.h"
#include "record_sink.h"
#include "s3.h"
#include "spool.h"

#define DELIVERY_DEFAULT_BUFFER_BYTES ((uint64_t)64 << 20)
#define DELIVERY_DEFAULT_BUFFER_MS ((int64_t)300000)
#define DELIVERY_DEFAULT_MAX_PARTITIONS 64
#define DELIVERY_MAX_PARTITIONS 1000
#define DELIVERY_DEFAULT_RETRY_BASE_MS 1000
#define DELIVERY_DEFAULT_RETRY_MAX_MS 60000
/* Content-Type of error objects (JSON lines, whatever the data delimiter). */
#define DELIVERY_ERROR_CONTENT_TYPE "application/x-ndjson"

/* ------------------------------------------------------------ uploader */

/* One object to upload. Everything borrowed for the call. */
struct delivery_upload {
	const char *path;              /* the sealed spool file */
	uint64_t bytes;                /* its size, as sealed (checked) */
	const char *key;               /* S3 object key */
	const char *content_type;
	const char *content_encoding;  /* NULL = none */
};

/* What an upload did. Plain data. */
struct delivery_upload_result {
	uint64_t bytes;                /* bytes sent as the object body */
	unsigned n_parts;              /* 0 = one PutObject, else multipart parts */
};

/*
 * Where sealed objects go: S3 in production (delivery_s3_uploader()), a
 * recorder in unit tests. Both calls are synchronous and already retry
 * what their transport retries; a failure means "gave up for now" and the
 * delivery retries later with its own backoff. Overwriting an existing key
 * must replace it (that is how a rebuilt batch replaces a partial one);
 * remove() of a missing key is success.
 */
struct delivery_uploader_ops {
	enum kl_err (*upload)(void *ctx, const struct delivery_upload *up,
			      struct delivery_upload_result *ret, struct kl_errinfo *info);
	enum kl_err (*remove)(void *ctx, const char *key, struct kl_errinfo *info);
};

struct delivery_uploader {
	const struct delivery_uploader_ops *ops;
	void *ctx;
};

/*
 * The S3 uploader: upload() is s3_upload_file() from the spool file (one
 * PUT up to multipart_threshold, a multipart upload above it, Content-MD5
 * on every body, aborted on failure), remove() is s3_delete_object().
 * Fill the struct (everything borrowed; it must outlive the uploader),
 * then delivery_s3_uploader() gives the interface onto it.
 */
struct delivery_s3 {
	struct aws_client *client;     /* configured for "s3"; the caller thread's own */
	const char *bucket;
	uint64_t multipart_threshold;  /* 0 = S3_DEFAULT_MULTIPART_THRESHOLD */
	uint64_t part_size;            /* 0 = S3_DEFAULT_PART_SIZE */
	int unsigned_payload;          /* see struct s3_put_opts */
	const char *storage_class;     /* x-amz-storage-class of every object;
					  NULL = the bucket's default */
	/* Multipart parts in flight at once (s3_upload_opts.parallel); 0 or 1
	 * = one after another on client. Above 1, client_cfg and creds make
	 * the extra clients, one per extra part thread, for each upload. */
	unsigned upload_threads;
	const struct aws_client_config *client_cfg;
	struct creds_chain *creds;
};

/* Fills *ret with the S3 uploader over s3 (borrowed). No allocation. */
void delivery_s3_uploader(struct delivery_s3 *s3, struct delivery_uploader *ret);

/* ------------------------------------------------------------ intent state */

/*
 * What the lease's pendingCheckpointState holds for a batch in flight, so
 * that whoever takes the lease can rebuild the batch and check that it
 * comes out with the same object keys. STALE keys are objects an earlier
 * attempt may have written under keys the batch no longer has (a changed
 * key template): they are deleted before the checkpoint.
 *
 * Encoding, version 1 (all integers LEB128 varints unless said otherwise):
 *   "KL" 0x01                   magic and version
 *   flags                       0 (a later flag means a later version)
 *   len, digits                 first ESN: sequence number, decimal
 *   sub                         first ESN: sub-sequence number
 *   zigzag(first_arrival_ms)    arrival time of the batch's first record
 *   records                     records in the batch's objects
 *   n                           objects, sorted by key (bytewise, unique)
 *   n x { kind (1 byte: 0 data, 1 error, 2 stale),
 *         prefix, suffix        bytes shared with the previous key's start / end
 *         len, bytes }          the rest of the key
 *   crc32                       4 bytes big-endian, zlib's CRC-32 of all above
 * Front and back coding make a batch of 64 partition keys ~1-2 KB.
 */
enum delivery_obj_kind {
	DELIVERY_OBJ_DATA = 0,
	DELIVERY_OBJ_ERROR = 1,
	DELIVERY_OBJ_STALE = 2,
};

struct delivery_state_object {
	enum delivery_obj_kind kind;
	char *key;                     /* owned by the state */
};

struct delivery_state {
	struct esn first;              /* first ESN of the batch */
	int64_t first_arrival_ms;
	uint64_t records;
	struct delivery_state_object *objects;   /* owned; sorted by key after decode */
	size_t n_objects;
};

#define DELIVERY_STATE_VERSION 1
/* Longest encoded state accepted or produced (DynamoDB items are <= 400 KB). */
#define DELIVERY_STATE_MAX ((size_t)256 << 10)

/*
 * Appends the encoding of st to out (objects are written sorted; st is not
 * changed). KL_EINVAL for a bad ESN, an empty / too long key, a duplicate
 * key or more than JOURNAL_MAX_OBJECTS objects; KL_ENOMEM when out's cap
 * or DELIVERY_STATE_MAX would be passed (out is then left as it was).
 * Thread-safe.
 */
enum kl_err delivery_state_encode(const struct delivery_state *st, struct buf *out,
				  struct kl_errinfo *info);

/*
 * Decodes data[0..len) into *ret (free with delivery_state_done()).
 * KL_EPARSE for anything that is not a version-1 state of ours (foreign
 * bytes, a later version, a bad checksum, truncation, trailing bytes);
 * KL_ENOMEM. *ret is written only on KL_OK. Thread-safe.
 */
enum kl_err delivery_state_decode(const void *data, size_t len, struct delivery_state *ret,
				  struct kl_errinfo *info);

/* Frees what st owns and zeroes it. NULL-safe. */
void delivery_state_done(struct delivery_state *st);

/* ------------------------------------------------------------ the sink */

/* Why a shard does not advance (stats.blocked). */
enum delivery_blocked {
	DELIVERY_BLOCKED_NONE = 0,
	DELIVERY_BLOCKED_UPLOAD,       /* S3 gave up; retried with backoff */
	DELIVERY_BLOCKED_LEASE_WRITE,  /* intent or checkpoint write failed; retried */
	DELIVERY_BLOCKED_DISK,         /* spool or journal: disk full / not writable */
	DELIVERY_BLOCKED_ERROR,        /* anything else (bad key, ...); retried, see error */
	DELIVERY_BLOCKED_BROKEN,       /* the open batch was lost locally: shard stopped */
	DELIVERY_BLOCKED_LEASE_LOST,   /* final: the lease is gone, nothing more is written */
};

/* "none", "upload", "lease-write", "disk", "error", "broken", "lease-lost":
 * a static string. Thread-safe. */
const char *delivery_blocked_name(enum delivery_blocked b);

/* Counters and the current condition, for metrics and `kinlake status`. */
struct delivery_stats {
	uint64_t records_in;           /* records taken by push() (any result) */
	uint64_t records_out;          /* data records written (plugin outputs) */
	uint64_t records_failed;       /* error records written */
	uint64_t records_dropped;      /* DROPPED by the plugin */
	uint64_t records_skipped;      /* offered at or below the checkpoint: ignored */
	uint64_t bytes_in;             /* input record bytes taken */
	uint64_t bytes_out;            /* uncompressed bytes written to spools */
	uint64_t objects_uploaded;
	uint64_t bytes_uploaded;       /* object bytes (compressed) */
	uint64_t batches_committed;
	int64_t last_commit_wall_ms;   /* 0 = none yet */
	uint64_t upload_failures;      /* uploads the uploader gave up on */
	uint64_t lease_write_failures; /* intent / checkpoint writes that failed */
	uint64_t intents;              /* intents written to the lease */
	uint64_t lease_writes;         /* prepare + checkpoint calls that succeeded */
	uint64_t partition_cap_seals;  /* batches sealed early by max_partitions */
	uint64_t rebuilds;             /* intents of a previous owner rebuilt from Kinesis */
	uint64_t spool_recoveries;     /* intents uploaded from this host's verified spools */
	uint64_t damaged_spools;       /* spools that failed verification (rebuilt instead) */
	uint64_t key_mismatches;       /* a rebuild gave other keys than its intent (bug!) */
	uint64_t stale_deleted;        /* objects of such an intent deleted */
	uint64_t foreign_intents;      /* intents whose state was not ours (rebuilt, no check) */
	uint64_t journal_errors;       /* journal writes that failed (non-fatal) */
	/* now: */
	bool rebuilding;               /* rebuilding a recorded intent */
	bool in_flight;                /* a sealed batch waits for upload / commit */
	uint32_t open_parts;           /* spools of the open batch */
	uint64_t open_records;
	uint64_t open_bytes;            /* uncompressed */
	uint64_t open_spool_bytes;      /* compressed, on disk (about what will be uploaded) */
	int64_t open_first_arrival_ms; /* 0 = no open batch */
	struct lease_esn checkpoint;   /* last committed (resume point) */
	enum delivery_blocked blocked;
	char blocked_reason[320];      /* "" when not blocked */
	char last_error[320];          /* the last failure seen, "" if none */
};

/*
 * Optional second output fed by each batch (src/agg/agg.h: the DynamoDB
 * aggregates). add() gets every data output right after it was written to
 * a data spool of the open batch (so it sees exactly the records of the
 * batch's data objects; error records are not passed); a failure there
 * makes the open batch broken (re-read from the checkpoint). full() asks
 * for the open batch to be sealed after the current record (never while
 * rebuilding: the intent's end decides then). apply() runs after the
 * upload and before the checkpoint, with the batch's end ESN, and must be
 * idempotent per end ESN (it is repeated after a failure, and a rebuild of
 * the batch by any owner calls it again); reset() forgets the batch
 * (committed or dropped). With a hook the same-host spool shortcut is not
 * used (the records must be re-read to feed add()), and flush() while
 * rebuilding a recorded intent leaves the intent to the next owner instead
 * of committing part of it (a part would break apply()'s idempotence).
 */
struct delivery_hook_ops {
	enum kl_err (*add)(void *ctx, const struct kl_transform_record *rec,
			   const struct xform_output *o, struct kl_errinfo *info);
	bool (*full)(void *ctx);
	enum kl_err (*apply)(void *ctx, const struct esn *last, struct kl_errinfo *info);
	void (*reset)(void *ctx);
};

struct delivery_hook {
	const struct delivery_hook_ops *ops;   /* NULL = none */
	void *ctx;
};

struct delivery_opts {
	/*
	 * The lease: borrowed for delivery_new() only (key, token, checkpoint
	 * and any intent a previous holder left: pending + pending_state).
	 */
	const struct lease_grant *grant;
	struct lease_coord *coord;     /* borrowed, must outlive the delivery */
	const char *shard_id;          /* NULL = grant->key */
	struct journal *journal;       /* borrowed; NULL = no same-host recovery */
	const char *spool_dir;         /* must exist; may be shared by every shard */
	const struct keytmpl *data_tmpl;   /* KEYTMPL_DATA, borrowed */
	const struct keytmpl *error_tmpl;  /* KEYTMPL_ERROR, borrowed */
	struct spool_opts spool;       /* data spools (copied; delim borrowed);
					  error spools use the same codec with "\n" */
	const char *content_type;      /* data objects; NULL = spool_content_type() */
	struct delivery_uploader uploader;
	struct lease_clock clock;      /* mono: batch age, backoff; wall: stats only.
					  All NULL = the real clocks */
	uint64_t buffer_bytes;         /* seal at these uncompressed bytes; 0 = 64 MiB */
	uint64_t buffer_records;       /* seal at these records written; 0 = no limit */
	int64_t buffer_ms;             /* seal this long after the first push; 0 = 300 s */
	uint32_t max_partitions;       /* open data partitions per batch; 0 = 64 */
	int64_t retry_base_ms;         /* backoff after a failure; 0 = 1000 */
	int64_t retry_max_ms;          /* 0 = 60000 */
	uint64_t seed;                 /* backoff jitter; 0 = random */
	/*
	 * Optional: things an operator must hear about (a rebuild that gave
	 * other keys, a damaged spool, S3 giving up, a full disk). The
	 * delivery only logs at debug level; the caller logs these at level.
	 * msg is valid for the call. Called from the delivery's thread.
	 */
	void (*report)(void *ctx, enum log_level level, const char *msg);
	void *report_ctx;
	/* Optional (ops NULL = none): see struct delivery_hook. Borrowed; it
	 * must outlive the delivery. Called from the delivery's thread. */
	struct delivery_hook hook;
};

struct delivery;

/*
 * Creates the sink of one held shard. opts is copied (borrowed pointers
 * as marked). Works out where the shard stands:
 *  - the grant carries an intent and the journal has its row with spool
 *    files that verify (size + SHA-256): the batch will be uploaded from
 *    them (resume_after() = the intent's end, no re-read);
 *  - the grant carries an intent otherwise: rebuild mode (resume_after()
 *    = the checkpoint; records pushed up to the intent's end form exactly
 *    that batch, which is then checked against the recorded keys,
 *    uploaded and committed);
 *  - journal rows of the shard that do not match the lease are settled
 *    (committed ones marked, others forgotten) and their spools removed.
 * Does no network I/O. Returns KL_OK and *ret (free with delivery_free()),
 * KL_EINVAL / KL_ECONFIG for bad options, KL_ENOMEM, KL_EIO / KL_ENOSPC
 * (journal). Not thread-safe with respect to the shard.
 */
enum kl_err delivery_new(const struct delivery_opts *opts, struct delivery **ret,
			 struct kl_errinfo *info);

/*
 * Frees d without committing anything, like a crash (see abandon()).
 * NULL-safe.
 */
void delivery_free(struct delivery *d);

/*
 * Takes one record and what the plugin made of it (record_sink's push):
 * OK outputs go to the data spool of their partition values, FAILED and
 * records whose partition keys are missing or invalid become error
 * records, DROPPED ones only advance the batch. Records must come in
 * strictly increasing ESN order; one at or below the checkpoint is
 * ignored (KL_OK, stats.records_skipped). May seal a batch and run the
 * protocol (network I/O) before returning. rec and res are borrowed.
 * Returns:
 *   KL_OK          taken (even when the batch it sealed is still in flight)
 *   KL_ETHROTTLED  not taken: an earlier batch waits for S3 or the lease
 *                  table (backpressure); offer it again later
 *   KL_ENOSPC      not taken: the disk is full or the spool directory is
 *                  not writable; offer it again later
 *   KL_ELEASE_LOST stop this shard at once, as for a lost lease: the lease
 *                  is gone (stats.blocked = LEASE_LOST), or the open batch
 *                  was lost locally (a spool failed inside a record or at
 *                  its fsync; stats.blocked = BROKEN) and the range must be
 *                  re-read: abandon(); a new delivery on the same lease
 *                  resumes from the checkpoint
 *   KL_EINVAL      bad record (no ESN, ESN not increasing): a consumer bug
 *   KL_ESTATE      after abandon(), or another record offered while one
 *                  is partly written
 * A record whose outputs were partly written when the disk filled up is
 * resumed where it stopped when it is offered again.
 */
enum kl_err delivery_push(struct delivery *d, const struct kl_transform_record *rec,
			  const struct xform_result *res, struct kl_errinfo *info);

/*
 * Takes a record straight into the error output with code (e.g.
 * ERRREC_PLUGIN_CRASH for a record that crashed the plugin max_crashes
 * times: the poison-record path), message (NULL = the code's default) and
 * attempts (attemptsMade; must be deterministic). Same results as
 * delivery_push().
 */
enum kl_err delivery_push_error(struct delivery *d, const struct kl_transform_record *rec,
				enum errrec_code code, const char *message, uint32_t attempts,
				struct kl_errinfo *info);

/* True while the consumer must not read: a batch in flight, a full disk,
 * a broken batch, or the lease lost. */
bool delivery_blocked(const struct delivery *d);

/*
 * Time passes (now on the clock's monotonic scale): seals the open batch
 * when it is buffer_ms old (never while rebuilding), retries a batch in
 * flight when its backoff is over. Returns KL_OK, KL_ELEASE_LOST, or the
 * failure of the retried step (still blocked; see stats).
 */
enum kl_err delivery_tick(struct delivery *d, int64_t now_mono_ms, struct kl_errinfo *info);

/*
 * Seals the open batch (while rebuilding: what was rebuilt so far, see
 * src/sink/README.md) and delivers everything, making one attempt now at
 * whatever is in flight. KL_OK when everything taken is committed (only
 * then may the consumer checkpoint SHARD_END or release the lease); else
 * the failure (retry flush later, or abandon()).
 */
enum kl_err delivery_flush(struct delivery *d, struct kl_errinfo *info);

/*
 * Drops open work without checkpointing (lease lost, no time left). The
 * spools of a sealed batch in flight and its journal row stay, so this
 * host can upload them if it gets the lease back; everything else is
 * rebuilt by the next owner. Every later call but delivery_free() and the
 * getters fails with KL_ESTATE.
 */
void delivery_abandon(struct delivery *d);

/* Where reading resumes: records at or below *ret are taken care of. */
void delivery_resume_after(const struct delivery *d, struct lease_esn *ret);

/* Copies the counters and the current condition. */
void delivery_get_stats(const struct delivery *d, struct delivery_stats *ret);

/* Fills *ret with the record_sink view of d (ops are static). */
void delivery_sink(struct delivery *d, struct record_sink *ret);

#endif
