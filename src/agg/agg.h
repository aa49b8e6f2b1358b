/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agg.h: per-window aggregates of one shard's S3 batches, written to a
 * DynamoDB table for dashboards (issue 9). The delivery feeds every data
 * output it writes to a batch's objects into agg_add(); when the batch has
 * been uploaded and before its checkpoint, agg_apply() adds the batch's
 * contributions with one conditional UpdateItem ADD per (window,
 * dimensions) entry, and the batch's end ESN is SET in a per-shard
 * attribute of the item under the condition "absent or smaller", so a
 * rebuilt batch (same end ESN, any owner) applies nothing twice and
 * completes an apply a crash cut short.
 *
 * Invariants: contributions depend on record data only (event time, the
 * Kinesis arrival time, field values, the shard), never on the clock, so a
 * rebuild computes the same ones; memory is bounded by spec.max_entries
 * entries per batch (agg_full() asks the delivery to seal early) plus what
 * one record's outputs add.
 *
 * Threads: a struct agg_spec is read-only once filled in and may be
 * shared; a struct agg belongs to one shard thread (like its delivery),
 * and so does the DynamoDB client its writer uses.
 */
#ifndef KL_AGG_H
#define KL_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agg_spec.h"
#include "aws.h"
#include "esn.h"
#include "kinlake/transform.h"
#include "kl_err.h"
#include "xform.h"

#define AGG_VALUE_MAX 256              /* a dimension value, bytes (longer: cut at a char) */
#define AGG_PK_MAX 2048                /* DynamoDB's partition key limit */
#define AGG_DEFAULT_BUCKETS 4
#define AGG_DEFAULT_MAX_ENTRIES 10000
#define AGG_NONE_VALUE "(none)"        /* a dimension the record does not have */
#define AGG_HASH_KEY "pk"              /* the table's only key attribute (S) */

/* ------------------------------------------------------------ the writer */

/*
 * One item update: ADD the measures to the item pk, SET its descriptive
 * attributes, SET esn_attr = esn, all under the condition
 * "attribute_not_exists(esn_attr) OR esn_attr < esn". Borrowed for the call.
 */
struct agg_update {
	const char *pk;
	const char *window;            /* window start, "2026-11-21T21:05:00Z" */
	int64_t window_start_s;        /* the same, epoch seconds */
	uint32_t bucket;
	const struct agg_dim *dims;
	const char *const *values;     /* n_dims dimension values */
	size_t n_dims;
	uint64_t count;                /* on-time records */
	uint64_t late;                 /* records that came after window end + lateness */
	uint64_t untimed;              /* of count + late: no usable event time (arrival used) */
	const char (*sum_names)[AGG_NAME_MAX + 1];
	const char *const *sum_values; /* decimal text, n_sums of them */
	size_t n_sums;
	const char (*distinct_names)[AGG_NAME_MAX + 1];
	const uint64_t (*distinct)[AGG_DISTINCT_BUCKETS / 64]; /* n_distinct bucket bitmaps;
							     * ADDed as number sets */
	size_t n_distinct;
	const char *esn_attr;          /* "esn_<shard id>" */
	const char *esn;               /* esn_key() of the batch's last ESN (fixed width) */
};

/*
 * Where updates go: DynamoDB in production (agg_ddb_writer()), an
 * in-memory table in unit tests. update() returns KL_OK when applied,
 * KL_ECONFLICT when the condition failed (already applied: not an error
 * for the caller), anything else when it failed for now (retried later).
 */
struct agg_writer_ops {
	enum kl_err (*update)(void *ctx, const struct agg_update *u, struct kl_errinfo *info);
};

struct agg_writer {
	const struct agg_writer_ops *ops;
	void *ctx;
};

/* The DynamoDB writer: UpdateItem on table through client (both borrowed;
 * the client is the shard thread's own, service "dynamodb"). */
struct agg_ddb {
	struct aws_client *client;
	const char *table;
};

/* Fills *ret with the DynamoDB writer over ddb (borrowed). No allocation. */
void agg_ddb_writer(struct agg_ddb *ddb, struct agg_writer *ret);

/*
 * Creates table (hash key AGG_HASH_KEY, S, on-demand) when it does not
 * exist and waits up to timeout_ms for it to be ACTIVE; a table with
 * another key is KL_ECONFIG. Blocks. client: service "dynamodb".
 */
enum kl_err agg_ensure_table(struct aws_client *client, const char *table, long timeout_ms,
			     struct kl_errinfo *info);

/* ------------------------------------------------------------ per shard */

struct agg_stats {
	uint64_t records;              /* outputs added (count + late) */
	uint64_t late;
	uint64_t untimed;
	uint64_t updates;              /* UpdateItem calls that applied */
	uint64_t already_applied;      /* conditional check failed: applied before */
	uint64_t failures;             /* updates that failed (retried) */
	uint64_t batches;              /* batches applied */
	size_t entries;                /* entries of the open batch now */
};

struct agg;

/*
 * The aggregator of one shard's batches. spec, shard_id and writer are
 * borrowed and must outlive it. KL_EINVAL / KL_ENOMEM. Free with agg_free().
 */
enum kl_err agg_new(const struct agg_spec *spec, const char *shard_id,
		    const struct agg_writer *writer, struct agg **ret, struct kl_errinfo *info);

/* NULL-safe. */
void agg_free(struct agg *a);

/*
 * Adds one data output o of record rec (both borrowed) to the open batch:
 * event time from spec.time_field (ISO-8601 "...Z"/"+hh:mm" or epoch
 * milliseconds; else the arrival time, counted as untimed), window =
 * floor(event time / window), late when arrival >= window end + lateness;
 * dimension values from the JSON object (or the output's partition keys);
 * sums of numeric fields (other values are left out of the sum). Never
 * fails on the record's content. KL_ENOMEM only.
 */
enum kl_err agg_add(struct agg *a, const struct kl_transform_record *rec,
		    const struct xform_output *o, struct kl_errinfo *info);

/* True when the open batch holds spec.max_entries entries or more. */
bool agg_full(const struct agg *a);

/*
 * Applies the batch's contributions, last = the batch's end ESN (its
 * identity). Resumable: entries already done (applied or found applied)
 * are not sent again; a failure returns the error and the next call goes
 * on from there. KL_OK when every entry is done.
 */
enum kl_err agg_apply(struct agg *a, const struct esn *last, struct kl_errinfo *info);

/* Forgets the batch (committed, or dropped to be rebuilt). */
void agg_reset(struct agg *a);

void agg_get_stats(const struct agg *a, struct agg_stats *ret);

struct delivery_hook;

/*
 * Fills *ret with the delivery hook over a (src/sink/delivery.h): add ->
 * agg_add(), full -> agg_full(), apply -> agg_apply(), reset ->
 * agg_reset(). a is borrowed and must outlive the delivery.
 */
void agg_delivery_hook(struct agg *a, struct delivery_hook *ret);

/* ------------------------------------------------------------ pure helpers (tests) */

/*
 * Event time of a JSON value: ISO-8601 string (UTC "Z" or an offset,
 * optional fraction) or a number of epoch milliseconds. false = unusable.
 */
bool agg_parse_time(const char *iso_or_ms, int64_t *ret_ms);

/* Window start of t (floor, also for times before 1970). */
int64_t agg_window_start(int64_t t_ms, int64_t window_ms);

/* The bucket of a shard: its trailing number (shardId-000000000007 -> 7)
 * mod buckets, or an FNV-1a hash of the id when it has none. */
uint32_t agg_bucket(const char *shard_id, uint32_t buckets);

/*
 * The item key "<window>#<value>#...#b<bucket>", values with '%' and '#'
 * written as %25 / %23. KL_EINVAL when longer than out_size - 1.
 */
enum kl_err agg_item_key(const char *window, const char *const *values, size_t n,
			 uint32_t bucket, char *out, size_t out_size);

/* Formats a fixed-point micro-unit sum as decimal text ("12.5", "-3"). */
void agg_format_micros(int64_t micros, char *out, size_t out_size);

struct json_object;

/*
 * What agg_add() takes from the JSON object doc of one data output (doc
 * borrowed, NULL when the output is not a JSON object), for agg_add() and
 * for checkers that recompute the aggregates from the S3 objects
 * (tests/tools/aggcheck): the event time from spec.time_field into
 * *ret_t_ms (returns false when missing or unusable, *ret_t_ms then
 * meaningless: the arrival time is used and the record is untimed), the
 * spec.n_dims dimension values into ret_values (key:NAME dimensions get
 * AGG_NONE_VALUE: the partition keys are not in doc), spec.n_sums
 * summands in micro-units into ret_sums (0 when not summable), and for
 * each of spec.n_distinct fields its value's bucket into ret_distinct (-1
 * when the field is missing or null). Thread-safe.
 */
bool agg_doc_values(const struct agg_spec *spec, struct json_object *doc, int64_t *ret_t_ms,
		    char (*ret_values)[AGG_VALUE_MAX + 1], int64_t *ret_sums, int *ret_distinct);

/* The bucket (0..AGG_DISTINCT_BUCKETS-1) of a value's text: FNV-1a 64 of
 * its bytes, mod AGG_DISTINCT_BUCKETS. Pure. */
int agg_distinct_bucket(const char *value);

/*
 * Linear counting: the number of distinct values that set buckets_set of
 * the AGG_DISTINCT_BUCKETS buckets, -m ln(1 - set/m). Within a few percent
 * up to a few thousand values; a full set is a lower bound (about 7100).
 * Pure.
 */
double agg_distinct_estimate(unsigned buckets_set);

/* The item attribute `window` of a window start: "2026-11-21T21:05:00Z". */
void agg_format_window(int64_t window_ms, char *out, size_t out_size);

#endif
