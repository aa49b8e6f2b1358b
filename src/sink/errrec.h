/* SPDX-License-Identifier: Apache-2.0 */
/*
 * errrec.h: one line of an error object, in the shape of Firehose's
 * error records (so existing Athena tables over an error prefix keep
 * working) plus the record's Kinesis coordinates:
 *
 *   {"attemptsMade":1,"arrivalTimestamp":1795291116903,
 *    "errorCode":"processing-failed","errorMessage":"...",
 *    "attemptEndingTimestamp":1795291116903,"rawData":"<base64>",
 *    "shardId":"shardId-000000000001","sequenceNumber":"4959...",
 *    "subSequenceNumber":0,"partitionKey":"user-42"}
 *
 * Invariant: the line is a pure function of its inputs, so an error
 * object rebuilt after a crash is byte-identical to the first one. That is
 * why attemptEndingTimestamp is NOT the wall-clock time of the attempt (as
 * in Firehose) but the record's own arrival time: a deterministic lower
 * bound of when the attempt ended, kept so that the schema matches.
 * attemptsMade and errorMessage must be deterministic too (see below).
 * All functions are thread-safe; the output buffer is the caller's.
 */
#ifndef KL_ERRREC_H
#define KL_ERRREC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "esn.h"
#include "kl_err.h"

#define ERRREC_MESSAGE_MAX 1024   /* errorMessage is cut (at a UTF-8 boundary) beyond this */

enum errrec_code {
	ERRREC_PROCESSING_FAILED = 0,  /* the plugin returned FAILED for the record */
	ERRREC_PARTITION_KEY_MISSING,  /* the key template needs a key the plugin did not set */
	ERRREC_PARTITION_KEY_INVALID,  /* a partition value is not safe in an S3 key */
	ERRREC_PLUGIN_CRASH,           /* the worker died in the plugin on this record too often */
};

/* errorCode text: "processing-failed", "partition-key-missing",
 * "partition-key-invalid", "plugin-crash". Static string. */
const char *errrec_code_name(enum errrec_code code);

/*
 * The !{firehose:error-output-type} value for code: "processing-failed"
 * (plugin failure or crash, as Firehose files a failed or crashed Lambda)
 * or "partitioning-failed" (missing / invalid partition key). Static.
 */
const char *errrec_output_type(enum errrec_code code);

/* One failed record. Everything borrowed for the call. */
struct errrec {
	enum errrec_code code;
	const char *message;        /* errorMessage; NULL = a default for code. Must
				       be deterministic (the plugin's reason, not a
				       time or an address). Any bytes: invalid UTF-8
				       becomes U+FFFD */
	uint32_t attempts;          /* attemptsMade: deterministic, e.g. 1 for a plugin
				       FAILED, the crash limit for plugin-crash */
	int64_t arrival_ms;         /* approximate arrival time of the record */
	const char *shard_id;
	const struct esn *esn;      /* sequenceNumber + subSequenceNumber */
	const char *partition_key;  /* the Kinesis partition key; NULL = "" */
	const void *data;           /* the original record (before the plugin) */
	size_t len;
};

/*
 * Appends the JSON object for r to out, without a trailing newline (the
 * error spool's delimiter adds it). Returns KL_OK; KL_EINVAL for a missing
 * shard id or ESN; KL_ENOMEM when out's cap would be passed, in which
 * case out is left as it was.
 */
enum kl_err errrec_build(const struct errrec *r, struct buf *out, struct kl_errinfo *info);

#endif
