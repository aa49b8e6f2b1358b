/* SPDX-License-Identifier: Apache-2.0 */
/*
 * record_sink.h: the seam between a shard consumer (reads Kinesis,
 * de-aggregates, runs the transform plugin) and what receives its output
 * (the S3 delivery of src/sink/, or a collector in tests).
 *
 * Contract, per shard, all calls from the shard's one thread:
 *  - push() is called once per user record, in ESN order, with what the
 *    plugin made of it. After KL_OK the record is the sink's: the consumer
 *    never offers it again. On any error the record was not taken; the
 *    consumer stops (KL_ELEASE_LOST), or backs off and offers the same
 *    record again (anything retryable, KL_ENOSPC).
 *  - While blocked() is true the consumer makes no GetRecords call (this
 *    is the backpressure that bounds memory: a slow sink slows reading).
 *  - tick() is called at least once a second while the shard is idle or
 *    blocked (age-based sealing, retrying a pending upload).
 *  - flush() commits everything taken so far (shard end, graceful stop);
 *    only after it returns KL_OK may the consumer checkpoint SHARD_END or
 *    release the lease.
 *  - abandon() drops open work without checkpointing (lease lost, or no
 *    time left at shutdown); a later owner rebuilds it from Kinesis.
 *  - push_crashed() (optional) takes the place of push() for a record the
 *    plugin is not run on because it crashed the worker too often.
 *  - resume_after() is where reading must restart: records with an ESN at
 *    or below it have been delivered (the sink may also be rebuilding an
 *    intent left by a previous owner; it then wants the records after the
 *    committed checkpoint, which is what it returns).
 */
#ifndef KL_RECORD_SINK_H
#define KL_RECORD_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include "kl_err.h"
#include "kinlake/transform.h"
#include "lease.h"
#include "xform.h"

struct record_sink_ops {
	enum kl_err (*push)(void *ctx, const struct kl_transform_record *rec,
			    const struct xform_result *res, struct kl_errinfo *info);
	bool (*blocked)(void *ctx);
	enum kl_err (*tick)(void *ctx, int64_t now_mono_ms, struct kl_errinfo *info);
	enum kl_err (*flush)(void *ctx, struct kl_errinfo *info);
	void (*abandon)(void *ctx);
	/* Fills *ret with the ESN after which reading resumes. */
	void (*resume_after)(void *ctx, struct lease_esn *ret);
	/*
	 * Optional (NULL: not supported). Takes a record that the plugin is
	 * not run on because it crashed the worker attempts times (the
	 * poison-record path, consumer_guard in consumer.h) into the error
	 * output, with its original data. Otherwise exactly like push().
	 */
	enum kl_err (*push_crashed)(void *ctx, const struct kl_transform_record *rec,
				    uint32_t attempts, struct kl_errinfo *info);
};

/* A sink: borrowed ops and the context they are called with. */
struct record_sink {
	const struct record_sink_ops *ops;
	void *ctx;
};

#endif
