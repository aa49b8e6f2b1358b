/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker.h: the kinlake worker process (`kinlake run`): one lease
 * coordinator thread, one thread per held shard, and the main thread that
 * dispatches shards to threads, handles signals, writes metrics and talks
 * to systemd. The threading model is described in src/daemon/README.md.
 *
 * The core (struct worker) is independent of AWS: it takes a lease store,
 * an optional shard source and a function that runs one shard, so tests
 * drive it over the in-memory store with a fake shard runner. worker_main()
 * wires the production parts (DynamoDB store, Kinesis shard source,
 * consumer + S3 delivery + plugin) into it.
 *
 * Invariants: the coordinator thread never waits on record processing (it
 * only ticks the coordinator); a shard runs on at most one thread, and a
 * thread is started only for a lease the coordinator grants; at most
 * max_threads shard threads exist (the coordinator is capped to as many
 * leases); leases are released only after their consumer has stopped (or
 * the grace period has run out).
 */
#ifndef KL_WORKER_H
#define KL_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer.h"
#include "kl_err.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store.h"
#include "lease_sync.h"
#include "metrics.h"

struct worker;
struct worker_shard;

/*
 * Runs one held shard on the calling thread (a shard thread) until it ends
 * and returns its final consumer state (DONE, LEASE_LOST, STOPPED or
 * ABANDONED). ws gives the grant and the stop requests; a runner that
 * wraps a struct consumer attaches it with worker_shard_attach() so that
 * stops and metrics reach it. Called on a new thread per shard.
 */
typedef enum consumer_state (*worker_run_shard_fn)(void *ctx, struct worker_shard *ws);

struct worker_opts {
	struct lease_coord_config lease;    /* copied (worker_id too) */
	uint32_t max_threads;               /* shard threads; also caps held leases */
	bool release_on_shutdown;           /* release_all at the end of a graceful stop */
	int64_t retry_after_failure_ms;     /* a shard whose runner failed to start is
					       released and not started again here for
					       this long (0 = 30000) */
	const char *version;                /* for metrics; borrowed, static */
};

struct worker_env {
	struct lease_store *store;                 /* borrowed, thread-safe */
	const struct lease_shard_source *shards;   /* borrowed; NULL = no shard sync */
	const struct lease_clock *clock;           /* copied; NULL = the real clocks */
	worker_run_shard_fn run_shard;
	void *run_ctx;
	/*
	 * Optional, on the main thread: makes the per-shard context a runner
	 * needs (a plugin instance, say) before its thread starts; *ret_ctx is
	 * handed back by worker_shard_ctx() and freed by free_shard_ctx after
	 * the thread ended. Non-KL_OK: the shard is released as failed.
	 */
	enum kl_err (*new_shard_ctx)(void *ctx, const struct lease_grant *grant, void **ret_ctx,
				     struct kl_errinfo *info);
	void (*free_shard_ctx)(void *ctx, void *shard_ctx);
	/* Optional, on the main thread: adds counters the worker cannot see
	 * (the lease store's, the shard source's) to aws[METRICS_SVC_COUNT]. */
	void (*aws_stats)(void *ctx, struct metrics_aws *aws);
};

/*
 * Creates a worker: the coordinator (over env->store and env->shards) and
 * the dispatcher state; starts no thread and does no I/O. opts->lease's
 * max_leases is lowered to max_threads. Returns KL_OK and *ret (free with
 * worker_free()), KL_EINVAL, KL_ENOMEM, or the coordinator's error.
 */
enum kl_err worker_new(const struct worker_opts *opts, const struct worker_env *env,
		       struct worker **ret, struct kl_errinfo *info);

/* Starts the coordinator thread. KL_OK or KL_EIO (pthread). Main thread. */
enum kl_err worker_start(struct worker *w, struct kl_errinfo *info);

/*
 * The dispatcher; call it from the main thread a few times a second.
 * Starts a shard thread for each new grant (while under max_threads),
 * asks the consumer of a lease that is no longer granted to stop at once,
 * joins threads that ended, logs lease and consumer events. While
 * stopping, releases grants that have no thread. Returns true once a
 * stop was requested and every shard thread has ended (or, with threads
 * left, the hard deadline has passed: see worker_threads_left()).
 */
bool worker_poll(struct worker *w);

/* True once the coordinator finished its first tick. Thread-safe. */
bool worker_ready(struct worker *w);

/* True while the coordinator thread has looped within max_silence_ms
 * (the watchdog's question). Thread-safe. */
bool worker_alive(struct worker *w, int64_t max_silence_ms);

/*
 * Begins a graceful stop: no new shard threads; every consumer is asked
 * to flush and stop by now + grace_ms (then it abandons its open batch).
 * A second call can only bring the deadline forward. Main thread.
 */
void worker_stop(struct worker *w, int64_t grace_ms);

/* Shard threads still running (after worker_poll() returned true with
 * threads left, they are stuck in a call: the process must exit without
 * worker_free()). */
size_t worker_threads_left(struct worker *w);

/*
 * Ends the lease side after worker_poll() returned true: releases every
 * lease (if release_on_shutdown and force_release or no thread is left),
 * stops and joins the coordinator thread. Returns the release error, if
 * any. Main thread.
 */
enum kl_err worker_finish(struct worker *w, struct kl_errinfo *info);

/*
 * Frees everything (coordinator without writes: call worker_finish()
 * first for a graceful stop). Only when no shard thread is left.
 * NULL-safe.
 */
void worker_free(struct worker *w);

/* The coordinator (borrowed; valid until worker_free). Thread-safe object. */
struct lease_coord *worker_coord(struct worker *w);

/*
 * Renders the worker's metrics (lease status, every shard thread's
 * counters, totals including ended threads) into out. KL_OK or KL_ENOMEM.
 * Main thread.
 */
enum kl_err worker_render_metrics(struct worker *w, int64_t start_wall_ms, struct buf *out);

/* A one-line state for systemd's STATUS=; also warns (once) when the
 * fleet's target for this worker exceeds its thread cap. Main thread. */
void worker_status_line(struct worker *w, char *out, size_t size);

/* ------------------------------------------------------------ shard threads */

/* The grant the thread was started for (borrowed, valid for the thread's
 * life; do not free). */
const struct lease_grant *worker_shard_grant(struct worker_shard *ws);
/* The coordinator (thread-safe). */
struct lease_coord *worker_shard_coord(struct worker_shard *ws);
/* What env->new_shard_ctx made, or NULL. */
void *worker_shard_ctx(struct worker_shard *ws);

/*
 * Attaches the shard's consumer (NULL detaches, before consumer_free()):
 * a stop requested before or after reaches it, metrics read it. Called
 * from the shard's thread. Thread-safe.
 */
void worker_shard_attach(struct worker_shard *ws, struct consumer *c);

/* True (and the deadline, monotonic ms) once a stop was requested. */
bool worker_shard_stop_requested(struct worker_shard *ws, int64_t *ret_deadline_ms);

/*
 * Publishes the sink side of the shard's counters (delivery stats, the S3
 * client's calls) for the metrics: flow fields it does not know come from
 * the attached consumer. s3 may be NULL. Thread-safe (a short mutex).
 */
void worker_shard_publish(struct worker_shard *ws, const struct metrics_flow *sink_flow,
			  int64_t open_first_arrival_ms, bool blocked,
			  int64_t last_commit_wall_ms, const struct metrics_aws *s3);

/* Marks the shard as failed to start (logged, released, retried later
 * elsewhere). Call before returning from the runner. */
void worker_shard_failed(struct worker_shard *ws, const char *why);

/* ------------------------------------------------------------ the command */

/*
 * `kinlake run [-c FILE]` (argv[0] is "run"). Loads the config (78 on
 * errors), sets up logging, the journal, the plugin, the lease table
 * (created if missing), then runs until SIGTERM/SIGINT (graceful stop,
 * exit 0); SIGHUP reopens the log file. Returns the exit status: 0, 64
 * usage, 78 config, 1 start-up failure. Main thread only; installs its
 * own signal mask.
 */
int worker_main(int argc, char **argv);

#endif
