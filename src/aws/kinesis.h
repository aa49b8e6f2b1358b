/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kinesis.h: the Kinesis Data Streams client (JSON 1.1, "Kinesis_20131202")
 * over aws_json_call(): stream summary, shard listing, iterators, the
 * GetRecords hot path, PutRecords, and the calls tests and the demo need to
 * create and reshard streams.
 *
 * Every call takes a struct aws_client set up with service "kinesis"; a
 * client is used by one thread at a time, so these functions are as
 * thread-safe as the client they are given. Streams are named by StreamName
 * on the wire (kinesalite ignores StreamARN); a stream ARN is accepted
 * wherever a stream is asked for and reduced to its name.
 *
 * Each call is three steps that are public on their own: kinesis_req_*()
 * builds the request object, aws_json_call() sends it, kinesis_parse_*()
 * turns the response into C structs. Tests state the exact request through
 * the builders and feed canned responses to the parsers. A builder returns
 * a new json_object in *ret_req that the caller json_object_put()s (KL_EINVAL
 * for bad arguments, KL_ENOMEM); a parser only borrows resp, and nothing it
 * returns points into resp. All strings passed in are borrowed.
 * GetRecords, the hot path, is the exception: aws_json_call_raw() hands
 * back the body bytes and kinesis_parse_get_records() scans them directly.
 *
 * Conventions: results go to ret_* only on KL_OK; errors are enum kl_err
 * with detail in info (NULL allowed); AWS errors come back as
 * aws_classify() maps them (ResourceNotFoundException = KL_ENOTFOUND,
 * ExpiredIteratorException = KL_EEXPIRED, throttling = KL_ETHROTTLED after
 * aws_json_call's own retries, InvalidArgumentException = KL_EAWS).
 */
#ifndef KL_KINESIS_H
#define KL_KINESIS_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "aws.h"
#include "kl_err.h"

#define KINESIS_TARGET_PREFIX "Kinesis_20131202"
#define KINESIS_JSON_VERSION "1.1"

#define KINESIS_STREAM_NAME_MAX 128
#define KINESIS_SHARD_ID_MAX 128
#define KINESIS_SEQ_MAX 128           /* sequence numbers: up to 128 digits */
#define KINESIS_HASH_KEY_MAX 39       /* 2^128 - 1 has 39 digits */
#define KINESIS_GET_RECORDS_MAX 10000 /* GetRecords Limit upper bound */
#define KINESIS_PUT_RECORDS_MAX 500   /* records per PutRecords call */
#define KINESIS_RECORD_DATA_MAX (1024 * 1024)
#define KINESIS_PARTITION_KEY_MAX 256

/*
 * Returns the stream name inside name_or_arn: the string itself for a
 * plain name, the part after ":stream/" for a stream ARN
 * ("arn:aws:kinesis:us-east-1:123456789012:stream/clicks" gives "clicks").
 * The result points into name_or_arn (borrowed). NULL when the argument is
 * empty, too long, or an ARN that does not name a stream. Thread-safe.
 */
const char *kinesis_stream_name(const char *name_or_arn);

/* ------------------------------------------------------------ hash keys */

/*
 * A 128-bit hash key (shard hash ranges, ExplicitHashKey) as four 32-bit
 * limbs, most significant first, so it works without __int128.
 */
struct kinesis_hash_key {
	uint32_t w[4];
};

/* Parses a decimal string in [0, 2^128 - 1]. KL_EINVAL otherwise. */
enum kl_err kinesis_hash_key_parse(const char *dec, struct kinesis_hash_key *ret_key);
/* Writes the decimal form into out (KINESIS_HASH_KEY_MAX + 1 bytes). */
void kinesis_hash_key_format(const struct kinesis_hash_key *key,
			     char out[KINESIS_HASH_KEY_MAX + 1]);
/* -1, 0, 1 as a is below, equal to, above b. */
int kinesis_hash_key_cmp(const struct kinesis_hash_key *a, const struct kinesis_hash_key *b);
/* floor((a + b) / 2), without overflow: the key that splits [a, b] in half. */
void kinesis_hash_key_mid(const struct kinesis_hash_key *a, const struct kinesis_hash_key *b,
			  struct kinesis_hash_key *ret_mid);

/* ------------------------------------------------------- stream summary */

enum kinesis_stream_status {
	KINESIS_STREAM_UNKNOWN = 0,   /* a status this code does not know */
	KINESIS_STREAM_CREATING,
	KINESIS_STREAM_DELETING,
	KINESIS_STREAM_ACTIVE,
	KINESIS_STREAM_UPDATING,
};

enum kinesis_encryption {
	KINESIS_ENCRYPTION_NONE = 0,
	KINESIS_ENCRYPTION_KMS,
};

/* DescribeStreamSummary's StreamDescriptionSummary. Plain value, no frees. */
struct kinesis_stream_summary {
	char stream_name[KINESIS_STREAM_NAME_MAX + 1];
	char stream_arn[384];
	enum kinesis_stream_status status;
	int open_shard_count;
	int retention_hours;
	int consumer_count;           /* -1 when absent */
	int64_t created_ms;           /* StreamCreationTimestamp, epoch ms */
	enum kinesis_encryption encryption;
	int on_demand;                /* StreamModeDetails says ON_DEMAND */
};

enum kl_err kinesis_req_describe_stream_summary(const char *stream, json_object **ret_req);
enum kl_err kinesis_parse_describe_stream_summary(json_object *resp,
						  struct kinesis_stream_summary *ret_summary);

/*
 * DescribeStreamSummary. stream is a name or ARN. KL_ENOTFOUND when the
 * stream does not exist.
 */
enum kl_err kinesis_describe_stream_summary(struct aws_client *c, const char *stream,
					    struct kinesis_stream_summary *ret_summary,
					    struct kl_errinfo *info);

/*
 * Polls DescribeStreamSummary (50 ms, doubling up to 1 s) until the
 * stream is ACTIVE or timeout_ms has passed (KL_ETIMEOUT). A stream that
 * is not found yet is waited for (AWS is eventually consistent after
 * CreateStream); one that is DELETING gives KL_ESTATE. ret_summary may be
 * NULL. Blocks the calling thread.
 */
enum kl_err kinesis_wait_active(struct aws_client *c, const char *stream, long timeout_ms,
				struct kinesis_stream_summary *ret_summary,
				struct kl_errinfo *info);

/* ------------------------------------------------------------ ListShards */

/* One shard as ListShards describes it. Plain value (copyable), no frees. */
struct kinesis_shard {
	char shard_id[KINESIS_SHARD_ID_MAX + 1];
	char parent_shard_id[KINESIS_SHARD_ID_MAX + 1];          /* "" = none */
	char adjacent_parent_shard_id[KINESIS_SHARD_ID_MAX + 1]; /* "" = none */
	char starting_hash_key[KINESIS_HASH_KEY_MAX + 1];        /* decimal */
	char ending_hash_key[KINESIS_HASH_KEY_MAX + 1];          /* decimal */
	char starting_sequence_number[KINESIS_SEQ_MAX + 1];
	char ending_sequence_number[KINESIS_SEQ_MAX + 1];        /* "" = open shard */
};

/* True when the shard is closed (it has an ending sequence number). */
static inline int kinesis_shard_is_closed(const struct kinesis_shard *s)
{
	return s->ending_sequence_number[0] != '\0';
}

/* Optional ListShards inputs; a NULL options pointer means all defaults. */
struct kinesis_list_shards_opts {
	const char *exclusive_start_shard_id;  /* NULL = from the first shard */
	int max_results;                       /* per page, 1..10000; 0 = service default */
	const char *filter_type;               /* ShardFilter.Type ("AT_LATEST",
						  "AT_TRIM_HORIZON", "AFTER_SHARD_ID", ...);
						  NULL = no filter */
	const char *filter_shard_id;           /* ShardFilter.ShardId, AFTER_SHARD_ID */
	int64_t filter_timestamp_ms;           /* ShardFilter.Timestamp, *_TIMESTAMP */
};

/*
 * Builds one ListShards page request. The first page (next_token NULL)
 * names the stream and carries the options; a later page carries only
 * NextToken (and MaxResults), never StreamName, ExclusiveStartShardId or
 * ShardFilter: AWS rejects those together, and kinesalite *exits* when it
 * gets a NextToken without a StreamName, so callers only send a token they
 * received. Caller json_object_put()s *ret_req.
 */
enum kl_err kinesis_req_list_shards(const char *stream, const struct kinesis_list_shards_opts *opts,
				    const char *next_token, json_object **ret_req);

/*
 * Parses one ListShards page. *ret_shards (malloc'd, caller frees; NULL
 * when *ret_n is 0) and *ret_next_token (malloc'd, caller frees; NULL on
 * the last page).
 */
enum kl_err kinesis_parse_list_shards(json_object *resp, struct kinesis_shard **ret_shards,
				      size_t *ret_n, char **ret_next_token);

/*
 * Lists every shard of stream (closed ones too, as the service returns
 * them), following NextToken across pages (at most 1000 pages). On KL_OK
 * *ret_shards is a malloc'd array the caller free()s (NULL if *ret_n is 0).
 */
enum kl_err kinesis_list_shards(struct aws_client *c, const char *stream,
				const struct kinesis_list_shards_opts *opts,
				struct kinesis_shard **ret_shards, size_t *ret_n,
				struct kl_errinfo *info);

/* ------------------------------------------------------ GetShardIterator */

enum kinesis_iterator_type {
	KINESIS_ITER_TRIM_HORIZON = 0,
	KINESIS_ITER_LATEST,
	KINESIS_ITER_AT_SEQUENCE_NUMBER,
	KINESIS_ITER_AFTER_SEQUENCE_NUMBER,
	KINESIS_ITER_AT_TIMESTAMP,
};

/* Where to start reading a shard. Strings borrowed. */
struct kinesis_position {
	enum kinesis_iterator_type type;
	const char *sequence_number;   /* AT_/AFTER_SEQUENCE_NUMBER */
	int64_t timestamp_ms;          /* AT_TIMESTAMP, epoch ms */
};

/* "TRIM_HORIZON", ... Static string. */
const char *kinesis_iterator_type_name(enum kinesis_iterator_type type);

/* KL_EINVAL for a sequence type without a sequence number. */
enum kl_err kinesis_req_get_shard_iterator(const char *stream, const char *shard_id,
					   const struct kinesis_position *pos,
					   json_object **ret_req);
enum kl_err kinesis_parse_get_shard_iterator(json_object *resp, char **ret_iterator);

/*
 * GetShardIterator. On KL_OK *ret_iterator is malloc'd (caller frees).
 * Note: AT_TIMESTAMP past the shard's last record never gets an answer from
 * kinesalite; the HTTP timeout bounds it (KL_ETIMEOUT after retries).
 */
enum kl_err kinesis_get_shard_iterator(struct aws_client *c, const char *stream,
				       const char *shard_id, const struct kinesis_position *pos,
				       char **ret_iterator, struct kl_errinfo *info);

/* ------------------------------------------------------------ GetRecords */

/* One record. Every pointer points into the owning struct kinesis_records. */
struct kinesis_record {
	const char *sequence_number;   /* decimal, NUL-terminated */
	const char *partition_key;     /* NUL-terminated */
	const uint8_t *data;           /* decoded bytes (not NUL-terminated) */
	size_t data_len;
	int64_t arrival_ms;            /* ApproximateArrivalTimestamp, epoch ms */
	enum kinesis_encryption encryption;
};

/* A child shard from GetRecords' ChildShards (AWS only; kinesalite never sends it). */
struct kinesis_child_shard {
	const char *shard_id;
	const char *parent_shard_ids[2];
	size_t n_parents;
	const char *starting_hash_key;  /* "" when absent */
	const char *ending_hash_key;
};

/*
 * A GetRecords result. It is one allocation: the header, the record and
 * child arrays and an arena holding every string and every record's
 * decoded data, so reading a batch costs one malloc however many records
 * it holds. Free with kinesis_records_free().
 */
struct kinesis_records {
	struct kinesis_record *records;
	size_t n_records;
	size_t data_bytes;             /* sum of data_len */
	const char *next_iterator;     /* NULL: the shard is closed and fully read */
	int64_t millis_behind_latest;  /* -1 when absent */
	struct kinesis_child_shard *children;
	size_t n_children;
};

/* Frees r and everything it points to. NULL-safe. */
void kinesis_records_free(struct kinesis_records *r);

/*
 * Always sends Limit: limit 0 means KINESIS_GET_RECORDS_MAX, anything
 * outside 0..KINESIS_GET_RECORDS_MAX is KL_EINVAL. (kinesalite has no
 * 10 MB response cap and dies building a huge answer without one.)
 */
enum kl_err kinesis_req_get_records(const char *iterator, int limit, json_object **ret_req);

/*
 * Parses the raw body of a GetRecords response, body[0, len) (len is
 * authoritative; the bytes need not be NUL-terminated), in one pass with a
 * dedicated scanner: no json-c tree. Every Data field is base64-decoded
 * straight into the result's arena; ApproximateArrivalTimestamp (epoch
 * seconds, any JSON number form) becomes ms exactly, truncated toward zero.
 * Strict JSON: keys in any order (escaped or not), unknown keys of any
 * value skipped, a known key twice in one object, a field of the wrong
 * type, a missing SequenceNumber/PartitionKey/Data or bad base64 are
 * KL_EPARSE, with info->message naming the problem and its byte offset.
 * NextShardIterator null, "" or absent all give next_iterator NULL (shard
 * end). KL_ENOMEM when memory runs out. On KL_OK the caller owns *ret
 * (kinesis_records_free()); nothing in it points into body, which stays
 * the caller's. info may be NULL. Thread-safe (no shared state).
 */
enum kl_err kinesis_parse_get_records(const char *body, size_t len, struct kinesis_records **ret,
				      struct kl_errinfo *info);

/*
 * GetRecords with the given iterator and limit (see kinesis_req_get_records).
 * KL_EEXPIRED for ExpiredIteratorException: get a new iterator
 * AFTER_SEQUENCE_NUMBER of the last record read. The end of a closed shard
 * shows as next_iterator == NULL (possibly after one more empty batch).
 */
enum kl_err kinesis_get_records(struct aws_client *c, const char *iterator, int limit,
				struct kinesis_records **ret, struct kl_errinfo *info);

/* ------------------------------------------------------------ PutRecords */

/* One record to put. Everything borrowed. */
struct kinesis_put_entry {
	const void *data;
	size_t data_len;               /* 0..KINESIS_RECORD_DATA_MAX */
	const char *partition_key;     /* 1..256 characters */
	const char *explicit_hash_key; /* decimal, or NULL */
};

/* The outcome of one entry, in the order of the request. */
struct kinesis_put_result {
	char sequence_number[KINESIS_SEQ_MAX + 1];  /* "" when it failed */
	char shard_id[KINESIS_SHARD_ID_MAX + 1];
	char error_code[64];           /* "" on success, else e.g.
					  "ProvisionedThroughputExceededException" */
	char error_message[256];
};

/* One allocation; free with free(). */
struct kinesis_put_results {
	size_t failed_count;           /* FailedRecordCount */
	size_t n;
	struct kinesis_put_result r[];
};

/* KL_EINVAL when n is 0 or above 500, or an entry breaks the limits above. */
enum kl_err kinesis_req_put_records(const char *stream, const struct kinesis_put_entry *entries,
				    size_t n, json_object **ret_req);
/* expected_n: entries sent; a response with another count is KL_EPARSE. */
enum kl_err kinesis_parse_put_records(json_object *resp, size_t expected_n,
				      struct kinesis_put_results **ret);

/*
 * PutRecords. KL_OK means the call succeeded, not that every record was
 * written: check (*ret)->failed_count and retry the failed entries. On
 * KL_OK the caller free()s *ret.
 */
enum kl_err kinesis_put_records(struct aws_client *c, const char *stream,
				const struct kinesis_put_entry *entries, size_t n,
				struct kinesis_put_results **ret, struct kl_errinfo *info);

/* ------------------------------------------- stream management (tests, demo) */

/* CreateStream, provisioned with shard_count shards (kinesalite has no
 * on-demand mode). */
enum kl_err kinesis_req_create_stream(const char *stream, int shard_count, json_object **ret_req);
enum kl_err kinesis_req_delete_stream(const char *stream, json_object **ret_req);
/* new_starting_hash_key: decimal, strictly inside the shard's range. */
enum kl_err kinesis_req_split_shard(const char *stream, const char *shard_id,
				    const char *new_starting_hash_key, json_object **ret_req);
enum kl_err kinesis_req_merge_shards(const char *stream, const char *shard_id,
				     const char *adjacent_shard_id, json_object **ret_req);

/*
 * CreateStream. KL_EEXISTS when a stream of that name exists already
 * (ResourceInUseException). Returns once the request is accepted; use
 * kinesis_wait_active() before using the stream.
 */
enum kl_err kinesis_create_stream(struct aws_client *c, const char *stream, int shard_count,
				  struct kl_errinfo *info);
/* DeleteStream. KL_ENOTFOUND if there is no such stream. */
enum kl_err kinesis_delete_stream(struct aws_client *c, const char *stream,
				  struct kl_errinfo *info);
/*
 * SplitShard / MergeShards. The stream goes UPDATING; wait for ACTIVE before
 * the next reshard (a second one meanwhile gives KL_ESTATE).
 */
enum kl_err kinesis_split_shard(struct aws_client *c, const char *stream, const char *shard_id,
				const char *new_starting_hash_key, struct kl_errinfo *info);
enum kl_err kinesis_merge_shards(struct aws_client *c, const char *stream, const char *shard_id,
				 const char *adjacent_shard_id, struct kl_errinfo *info);

#endif
