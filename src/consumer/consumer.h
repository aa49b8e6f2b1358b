/* SPDX-License-Identifier: Apache-2.0 */
/*
 * consumer.h: the shard consumer. One struct consumer reads one leased
 * shard on one thread: it waits until the lease is processable (parents
 * finished, handover over), opens an iterator where the sink says reading
 * resumes, polls GetRecords at most max_calls_per_sec times a second,
 * de-aggregates KPL records against the lease's hash range, drops what is
 * at or below the resume point, runs every user record through the
 * transform plugin (unless an optional guard says the record crashed it
 * too often: then it goes to the sink as such) and pushes the result into
 * a struct record_sink
 * (record_sink.h). At the shard's end it flushes the sink and hands the
 * child shards to the lease layer, which checkpoints SHARD_END.
 *
 * Invariants: records reach the sink once each, in ESN order; nothing is
 * pushed, flushed or checkpointed after the lease is known to be lost;
 * SHARD_END is written only after a successful flush; a record the sink
 * refused is offered again (same transform result, or, when a busy sink
 * made the consumer give its page up to the budget, transformed again
 * after the re-read), never skipped; no GetRecords call is made while
 * the sink says blocked().
 *
 * Everything outside (Kinesis, the lease coordinator, the clock) comes in
 * through the small interfaces below, so the state machine runs in unit
 * tests on fake time. State machine and threading: src/consumer/README.md.
 */
#ifndef KL_CONSUMER_H
#define KL_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "kinesis.h"
#include "kl_err.h"
#include "lease.h"
#include "lease_coord.h"
#include "lease_sync.h"
#include "record_sink.h"
#include "xform.h"

/* ------------------------------------------------------------ interfaces */

/*
 * What the consumer needs from Kinesis. Every function is called from the
 * consumer's thread only, with ctx; the strings passed in are borrowed.
 * Error returns follow kinesis.h (KL_ETHROTTLED, KL_EEXPIRED for an
 * expired iterator, retryable transport errors, ...), details in info.
 */
struct consumer_kinesis_ops {
	/* kinesis_get_shard_iterator(): *ret_iterator is malloc'd, the
	 * consumer frees it. */
	enum kl_err (*get_shard_iterator)(void *ctx, const char *shard_id,
					  const struct kinesis_position *pos, char **ret_iterator,
					  struct kl_errinfo *info);
	/* kinesis_get_records(): the consumer frees *ret with
	 * kinesis_records_free(). limit is always 1..10000. */
	enum kl_err (*get_records)(void *ctx, const char *iterator, int limit,
				   struct kinesis_records **ret, struct kl_errinfo *info);
	/*
	 * The child shards of the closed shard shard_id (for kinesalite, which
	 * sends no ChildShards: ListShards entries whose ParentShardId or
	 * AdjacentParentShardId is shard_id). Fills *ret (the consumer frees it
	 * with lease_shard_list_done); an empty list means none found (yet).
	 */
	enum kl_err (*list_children)(void *ctx, const char *shard_id, struct lease_shard_list *ret,
				     struct kl_errinfo *info);
	/* Optional (NULL): the transport's own counters, copied into the
	 * metrics after each call. */
	void (*stats)(void *ctx, struct aws_stats *ret);
	/*
	 * Optional (NULL: get_records is used): get_records with a scratch
	 * buffer for the response body. body is borrowed (the consumer's
	 * budget slot, consumer_budget_take()); the op may reset it, grow it
	 * and leave bytes in it, but must not free it, and nothing in *ret
	 * may point into it. Keeping one body buffer across calls spares a
	 * fresh allocation (and its page faults) of up to 10 MB per call.
	 */
	enum kl_err (*get_records_buf)(void *ctx, const char *iterator, int limit, struct buf *body,
				       struct kinesis_records **ret, struct kl_errinfo *info);
};

struct consumer_kinesis {
	const struct consumer_kinesis_ops *ops;
	void *ctx;
};

/*
 * What the consumer needs from the lease layer (consumer_lease_coord()
 * adapts a struct lease_coord). check is called from the consumer's thread
 * often and must not block on I/O; the semantics are lease_coord_check(),
 * lease_coord_shard_end() and lease_coord_release(). release may be NULL
 * (the lease is then left to the caller after a graceful stop).
 */
struct consumer_lease_ops {
	enum kl_err (*check)(void *ctx, const char *key, uint64_t token,
			     int64_t *ret_valid_until_ms);
	enum kl_err (*shard_end)(void *ctx, const char *key, uint64_t token,
				 const struct lease_shard *children, size_t n, struct kl_errinfo *info);
	enum kl_err (*release)(void *ctx, const char *key, uint64_t token,
			       struct kl_errinfo *info);
};

struct consumer_lease {
	const struct consumer_lease_ops *ops;
	void *ctx;
};

/*
 * Fills *ret with ops that call lease_coord_check/_shard_end/_release on
 * coord (borrowed; must outlive every consumer using *ret). Thread-safe.
 */
void consumer_lease_coord(struct lease_coord *coord, struct consumer_lease *ret);

/*
 * Time. mono_ms: a monotonic clock in ms (the same one the lease
 * coordinator judges validity with). sleep_ms: waits ms, and may return
 * early once wake() was called (from any thread) since the last sleep
 * began. A fake clock's sleep just advances its time; its wake may do
 * nothing. NULL in struct consumer_deps means the real clock, whose sleep
 * wake() cuts short.
 */
struct consumer_clock {
	int64_t (*mono_ms)(void *ctx);
	void (*sleep_ms)(void *ctx, int64_t ms);
	void (*wake)(void *ctx);
	void *ctx;
};

/*
 * Optional: a guard around the plugin (the daemon's poison-record logic,
 * src/daemon/poison.h). before() is called for every user record right
 * before the plugin would see it: RUN lets the plugin run; CRASHED says
 * the record crashed the worker too often, and the consumer hands it to
 * the sink's push_crashed() with *ret_attempts instead of running the
 * plugin. after() is called when the plugin returned for rec (whatever
 * it answered; not after CRASHED). Both run on the consumer's thread for
 * every record: they must be cheap. rec is borrowed for the call.
 */
enum consumer_guard_verdict {
	CONSUMER_GUARD_RUN = 0,
	CONSUMER_GUARD_CRASHED,
};

struct consumer_guard_ops {
	enum consumer_guard_verdict (*before)(void *ctx, const struct kl_transform_record *rec,
					      uint32_t *ret_attempts);
	void (*after)(void *ctx, const struct kl_transform_record *rec);
};

struct consumer_guard {
	const struct consumer_guard_ops *ops;   /* NULL: no guard */
	void *ctx;
};

/* ------------------------------------------------------------ page budget */

/*
 * A worker-wide bound on GetRecords pages in memory: a counting semaphore
 * of n slots, each with a response-body buffer that is reused across calls.
 * A consumer given a budget takes a slot before each GetRecords call and
 * gives it back once the page was pushed (or dropped), so however many
 * shards a worker holds, at most n bodies (up to 10 MB each on Kinesis) and
 * n decoded pages (up to ~7.5 MB each) exist at once; the body buffers keep
 * their allocation, so steady state allocates no body at all. A consumer
 * waiting for a slot still ticks its sink, checks its lease and sees stop
 * requests (consumer_request_stop() wakes the budget's waiters). A consumer
 * whose sink is busy (push() says KL_ETHROTTLED: an upload in flight) while
 * no slot is free gives its half-pushed page up and reads the rest again
 * later, so shards stuck on uploads cannot hold every slot.
 * Thread-safe: every function may be called from any thread.
 */
struct consumer_budget;

/*
 * Creates a budget of slots (>= 1) slots, each body buffer capped at
 * body_cap bytes (0 = BUF_DEFAULT_CAP). KL_EINVAL for 0 slots, KL_ENOMEM.
 * Free with consumer_budget_free() (NULL-safe) once no consumer uses it.
 */
enum kl_err consumer_budget_new(unsigned slots, size_t body_cap, struct consumer_budget **ret);
void consumer_budget_free(struct consumer_budget *b);

/*
 * Takes a free slot and returns its body buffer (borrowed until given
 * back; empty or holding an old body), waiting up to timeout_ms (real
 * time) for one. NULL when the wait timed out or consumer_budget_wake()
 * was called meanwhile.
 */
struct buf *consumer_budget_take(struct consumer_budget *b, int64_t timeout_ms);

/* Gives back a slot taken with consumer_budget_take() (body: what it returned). */
void consumer_budget_give(struct consumer_budget *b, struct buf *body);

/* Makes every current consumer_budget_take() return NULL at once (stops). */
void consumer_budget_wake(struct consumer_budget *b);

/* Free slots now (tests, metrics). */
unsigned consumer_budget_available(struct consumer_budget *b);

/* ------------------------------------------------------------ config */

/* Defaults (kinlake.conf's consumer section uses the same values). */
#define CONSUMER_DEFAULT_LIMIT 10000
#define CONSUMER_DEFAULT_IDLE_MS 1000
#define CONSUMER_DEFAULT_CALLS_PER_SEC 5
#define CONSUMER_DEFAULT_BACKOFF_BASE_MS 100
#define CONSUMER_DEFAULT_THROTTLE_BASE_MS 500
#define CONSUMER_DEFAULT_BACKOFF_MAX_MS 10000
#define CONSUMER_DEFAULT_POLL_MS 1000
#define CONSUMER_DEFAULT_TICK_MS 1000

/*
 * One shard's settings. Strings are copied by consumer_new(). Numeric
 * fields left 0 take the defaults above.
 */
struct consumer_config {
	const char *shard_id;           /* required: the lease key */
	uint64_t lease_token;           /* the grant's token (lease_grant.token) */
	/* Where to resume when the sink's resume_after() has no answer (kind
	 * NONE): the grant's checkpoint. Must not be NONE itself. */
	struct lease_esn checkpoint;
	int64_t at_timestamp_ms;        /* for an AT_TIMESTAMP checkpoint: epoch ms */
	const char *starting_hash_key;  /* the lease's range (decimal); NULL: no */
	const char *ending_hash_key;    /* KPL hash-range filtering */
	int get_records_limit;          /* GetRecords Limit, 1..10000 (10000) */
	int64_t idle_ms;                /* pause after a read that caught up (1000) */
	int max_calls_per_sec;          /* GetRecords per second, 1..5 (5) */
	int64_t backoff_base_ms;        /* first retry after an error: up to this (100) */
	int64_t throttle_base_ms;       /* ... after a throttle (500) */
	int64_t backoff_max_ms;         /* cap of one backoff (10000) */
	int64_t poll_ms;                /* re-check period while waiting on parents,
					 * for a merge's co-parent at shard end, and of
					 * the lease during any wait (1000) */
	int64_t tick_ms;                /* sink tick() period when idle/blocked, <= 1000 (1000) */
	bool release_on_stop;           /* release the lease after a graceful stop's flush */
	uint64_t seed;                  /* backoff jitter; 0 = random */
};

/* What a consumer works with. Everything is borrowed and must outlive it. */
struct consumer_deps {
	struct consumer_kinesis kinesis;
	struct consumer_lease lease;
	struct record_sink sink;
	struct xform *xform;            /* used only by the consumer's thread while it runs */
	const struct consumer_clock *clock;  /* NULL: the real clock */
	struct consumer_guard guard;    /* optional; needs the sink's push_crashed */
	struct consumer_budget *budget; /* optional (NULL: no bound): shared by every
					 * consumer of the worker, see below */
};

/* ------------------------------------------------------------ states, metrics */

enum consumer_state {
	CONSUMER_WAITING_ON_PARENTS = 0, /* lease not processable yet (parents, handover) */
	CONSUMER_INITIALIZING,           /* resume point, first iterator */
	CONSUMER_PROCESSING,             /* reading and pushing */
	CONSUMER_SHARD_END,              /* end reached: flush, children, SHARD_END */
	CONSUMER_SHUTTING_DOWN,          /* stop requested: flush before the deadline */
	/* Final states: consumer_run() returns one of these. */
	CONSUMER_DONE,                   /* SHARD_END written, lease released */
	CONSUMER_LEASE_LOST,             /* stopped at once; sink abandoned */
	CONSUMER_STOPPED,                /* stop requested; sink flushed */
	CONSUMER_ABANDONED,              /* stop requested; no flush in time, sink abandoned */
	CONSUMER_STATE_COUNT,
};

/* Static name ("processing", "lease-lost", ...). Thread-safe. */
const char *consumer_state_name(enum consumer_state state);

/* A copy of one consumer's counters (plain value, no frees). */
struct consumer_metrics {
	enum consumer_state state;
	uint64_t records_read;          /* Kinesis records received (once each: see
					 * records_reread) */
	uint64_t bytes_read;            /* their Data bytes */
	uint64_t user_records;          /* after KPL de-aggregation */
	uint64_t get_records_calls;     /* GetRecords attempts by the consumer */
	uint64_t get_iterator_calls;
	uint64_t throttles;             /* KL_ETHROTTLED answers (after aws.c's retries) */
	uint64_t retries;               /* calls repeated after an error or a bad answer */
	uint64_t iterator_expired;      /* ExpiredIterator recoveries */
	int64_t millis_behind_latest;   /* last value; -1 before the first answer */
	uint64_t kpl_aggregates;        /* aggregates de-aggregated */
	uint64_t hash_range_dropped_aggregates;  /* dropped whole: outside the range */
	uint64_t hash_range_dropped_records;     /* user records inside those */
	uint64_t esn_filtered;          /* user records at or below the resume point */
	uint64_t plugin_ok, plugin_dropped, plugin_failed;
	uint64_t plugin_crashed;        /* not run: the guard said CRASHED (push_crashed) */
	uint64_t pushed;                /* records the sink took */
	uint64_t push_retries;          /* refusals by the sink (record offered again) */
	uint64_t blocked_waits;         /* waits because the sink was blocked */
	uint64_t budget_waits;          /* waits for a slot of the page budget */
	uint64_t pages_dropped;         /* pages given up half-pushed to the budget
					 * while the sink was busy (read again later) */
	uint64_t records_reread;        /* Kinesis records received again because
					 * of that (not in records_read, nor their
					 * user records or plugin results counted
					 * twice) */
	uint64_t ticks;
	uint64_t flushes;
	struct lease_esn last_pushed;   /* ESN of the last record the sink took */
	int64_t state_ms[CONSUMER_STATE_COUNT]; /* time spent in each state so far */
	struct aws_stats aws;           /* from consumer_kinesis_ops.stats, if any */
	enum kl_err last_error;         /* last error met (KL_OK: none) */
	char last_error_text[256];
};

/* ------------------------------------------------------------ lifecycle */

struct consumer;

/*
 * Creates a consumer for cfg->shard_id. Checks the config (KL_EINVAL with
 * a message in info for a missing shard id, a NONE checkpoint, bad limits
 * or a malformed hash range), copies it, and allocates the KPL decoder
 * (KL_ENOMEM, KL_ESTATE without MD5). deps is copied; what it points to
 * stays the caller's. Free *ret with consumer_free() after consumer_run()
 * has returned. Thread-safe (touches nothing shared).
 */
enum kl_err consumer_new(const struct consumer_config *cfg, const struct consumer_deps *deps,
			 struct consumer **ret, struct kl_errinfo *info);

/*
 * Runs the shard to a final state on the calling thread and returns it:
 * DONE, LEASE_LOST, STOPPED or ABANDONED. Call once per consumer. Blocks:
 * the daemon gives each held shard a thread of its own. Errors along the
 * way are retried (they show in the metrics); it gives up only when the
 * lease is lost or a stop is requested.
 */
enum consumer_state consumer_run(struct consumer *c);

/*
 * Asks a running (or not yet started) consumer to stop: it stops reading
 * at once, flushes the sink and (release_on_stop) releases the lease, or
 * abandons the sink when grace_deadline_ms (monotonic, the consumer's
 * clock) passes first. Returns at once; a second call can only bring the
 * deadline forward. Thread-safe.
 */
void consumer_request_stop(struct consumer *c, int64_t grace_deadline_ms);

/* Copies the current metrics into *ret. Thread-safe (a short mutex). */
void consumer_get_metrics(struct consumer *c, struct consumer_metrics *ret);

/* Frees c (not while consumer_run() is running). NULL-safe. */
void consumer_free(struct consumer *c);

#endif
