/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics.h: the worker's metrics in Prometheus text exposition format
 * (version 0.0.4), written to a node-exporter "textfile collector" file.
 *
 * Invariants: every family is written as one block (HELP, TYPE, then all
 * its samples), every name carries the "kinlake_" prefix and matches
 * Prometheus' grammar, label values are escaped; the file on disk is always
 * a complete earlier or later version, never a partial one (temp file in
 * the same directory, fsync, rename, fsync of the directory).
 *
 * Threads: everything here works on data the caller owns; no shared state.
 */
#ifndef KL_METRICS_H
#define KL_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "kl_err.h"

#define METRICS_PREFIX "kinlake_"

/* AWS services whose calls are counted (the "service" label). */
enum metrics_service {
	METRICS_SVC_KINESIS = 0,
	METRICS_SVC_DYNAMODB,
	METRICS_SVC_S3,
	METRICS_SVC_COUNT,
};

/* "kinesis", "dynamodb", "s3". Static. */
const char *metrics_service_name(enum metrics_service svc);

/* Counters of one service's calls (struct aws_stats, summed). */
struct metrics_aws {
	uint64_t calls;                /* logical calls */
	uint64_t errors;               /* calls that finally failed */
	uint64_t throttles;
	uint64_t retries;
	bool present;                  /* false: nothing known, no samples */
	bool retries_unknown;          /* counted from outside the client: no retries sample */
};

/* The data-path counters, kept per shard and summed per worker. */
struct metrics_flow {
	uint64_t records_read;         /* Kinesis records received */
	uint64_t bytes_read;
	uint64_t records_in;           /* user records given to the transform */
	uint64_t bytes_in;
	uint64_t records_out;          /* data records written to objects */
	uint64_t bytes_out;            /* their uncompressed bytes */
	uint64_t records_dropped;      /* DROPPED by the plugin */
	uint64_t records_failed;       /* sent to the error prefix */
	uint64_t objects_uploaded;
	uint64_t bytes_uploaded;       /* object bytes as stored (compressed) */
	uint64_t batches_committed;
	uint64_t upload_failures;      /* uploads that gave up (retried later) */
	uint64_t get_records_calls;
	uint64_t throttles;            /* GetRecords throttled (after retries) */
	uint64_t retries;              /* consumer-level retries */
	uint64_t budget_waits;         /* waits for a slot of the page budget */
	uint64_t pages_dropped;        /* half-pushed pages given back to the budget */
	uint64_t records_reread;       /* Kinesis records read again after a drop */
	uint64_t agg_records;          /* aggregates (0 when off): outputs counted */
	uint64_t agg_late;             /* of which late */
	uint64_t agg_updates;          /* conditional UpdateItems that applied */
	uint64_t agg_already_applied;  /* ... found applied before (a rebuilt batch) */
	uint64_t agg_failures;         /* ... that failed (retried) */
};

/* Adds every counter of b to a. */
void metrics_flow_add(struct metrics_flow *a, const struct metrics_flow *b);

/* One shard this worker processes (or processed since the last write). */
struct metrics_shard {
	const char *shard_id;          /* borrowed */
	const char *state;             /* consumer state name; borrowed, static */
	int64_t millis_behind_latest;  /* -1 = unknown (no GetRecords answer yet) */
	int64_t lag_ms;                /* age of the oldest record not yet in S3; -1 = unknown */
	int64_t last_commit_wall_ms;   /* 0 = none */
	bool blocked;                  /* the sink refuses records (S3, lease, disk) */
	struct metrics_flow flow;
};

/* What one worker process knows, at one moment. Everything borrowed. */
struct metrics_snapshot {
	const char *worker_id;
	const char *version;
	int64_t start_wall_ms;
	bool ready;                    /* the coordinator ran its first pass */
	bool stopping;
	bool leader;
	uint32_t leases_held;          /* held here now (any state) */
	uint32_t leases_processing;    /* of which a consumer runs */
	uint32_t leases_target;
	uint32_t live_workers;
	uint64_t leases_taken;         /* cumulative, from the coordinator */
	uint64_t leases_stolen;
	uint64_t leases_lost;
	uint64_t leases_released;
	uint64_t leases_created;
	uint64_t leases_deleted;
	uint64_t consumers_started;
	struct metrics_flow total;     /* the worker's totals (monotonic) */
	struct metrics_aws aws[METRICS_SVC_COUNT];
	const struct metrics_shard *shards;
	size_t n_shards;
};

/*
 * Appends the whole exposition of s to out: for each family "# HELP",
 * "# TYPE" and its samples, with labels worker="..." (and shard="...",
 * service="..." where they apply). Counters end in _total. Returns KL_OK,
 * or KL_ENOMEM (out's cap; out is then incomplete: do not write it).
 * Pure; thread-safe.
 */
enum kl_err metrics_render(const struct metrics_snapshot *s, struct buf *out);

/*
 * Writes len bytes of text to path atomically, the textfile collector's
 * way: "<dir>/.<name>.tmp.<pid>" (not ending in .prom, so a collector
 * never reads it), mode 0644 whatever the umask (the collector runs as
 * another user), fsync, rename over path, fsync the directory. On any
 * failure the temp file is removed and path keeps its old content.
 * Returns KL_OK, KL_ENOSPC, or KL_EIO (errno and the file in info).
 * Thread-safe for different paths.
 */
enum kl_err metrics_write_file(const char *path, const char *text, size_t len,
			       struct kl_errinfo *info);

/* ------------------------------------------------------------ grammar */

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
bool metrics_name_valid(const char *name);
/* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved). */
bool metrics_label_name_valid(const char *name);
/* Appends value escaped for a label: backslash, double quote and newline
 * become \\, \" and \n. KL_ENOMEM on out's cap. */
enum kl_err metrics_escape_label(struct buf *out, const char *value);

/* ------------------------------------------------------------ reading */

#define METRICS_MAX_LABELS 8
#define METRICS_LABEL_MAX 512

/* One sample as parsed; strings valid during the callback only. */
struct metrics_sample {
	const char *name;
	size_t n_labels;
	const char *label_names[METRICS_MAX_LABELS];
	const char *label_values[METRICS_MAX_LABELS];  /* unescaped */
	double value;
};

/* The value of label name in s, or NULL. */
const char *metrics_sample_label(const struct metrics_sample *s, const char *name);

/*
 * Parses exposition text (text[0..len), need not be NUL-terminated) and
 * calls fn for every sample, in order. Comment lines are skipped; a HELP
 * or TYPE line must be well formed. Returns KL_OK, KL_EPARSE (info names
 * the line) on the first malformed line (samples before it were already
 * reported), KL_ENOMEM. Used by `kinlake status` to read the local
 * worker's lag. Thread-safe.
 */
enum kl_err metrics_parse(const char *text, size_t len,
			  void (*fn)(void *ctx, const struct metrics_sample *s), void *ctx,
			  struct kl_errinfo *info);

#endif
