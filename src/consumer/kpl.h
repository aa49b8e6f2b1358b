/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kpl.h: KPL (Kinesis Producer Library) aggregation. Detects and decodes
 * aggregated records (MAGIC ‖ protobuf AggregatedRecord ‖ MD5) into user
 * records, filters aggregates against a shard's hash-key range the way KCL
 * does, and encodes aggregates (tests, demo producer, benchmarks). Also the
 * unsigned 128-bit hash-key arithmetic (decimal strings <-> numbers).
 *
 * Invariants: decoding allocates nothing per record (the decoder's arrays
 * grow to the largest aggregate seen and are reused); user records point
 * into the caller's input; anything that is not a valid aggregate is handed
 * back whole as one plain record, never lost.
 */
#ifndef KL_KPL_H
#define KL_KPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "kl_err.h"

#define KPL_MAGIC "\xF3\x89\x9A\xC2"
#define KPL_MAGIC_LEN 4
#define KPL_DIGEST_LEN 16

/* ------------------------------------------------------------ 128-bit keys */

/* An unsigned 128-bit integer: hi * 2^64 + lo. */
struct kpl_u128 {
	uint64_t hi;
	uint64_t lo;
};

/* Room for the decimal form of any u128: 39 digits of 2^128-1 plus a NUL. */
#define KPL_U128_DEC_SIZE 40

/*
 * Parses len bytes of s as a decimal number: ASCII digits only (no sign,
 * no spaces, leading zeros allowed), at least one digit, at most 2^128-1.
 * Returns KL_OK and stores *ret, or KL_EINVAL. Thread-safe.
 */
enum kl_err kpl_u128_parse(const char *s, size_t len, struct kpl_u128 *ret);

/* Writes the decimal form of v (NUL-terminated) into out. Thread-safe. */
void kpl_u128_format(struct kpl_u128 v, char out[KPL_U128_DEC_SIZE]);

/* Returns <0, 0, >0 as a is less than, equal to, greater than b. */
int kpl_u128_cmp(struct kpl_u128 a, struct kpl_u128 b);

/* The 16 bytes as a big-endian unsigned number (how KCL reads an MD5). */
struct kpl_u128 kpl_u128_from_be(const uint8_t be[16]);

/* A shard's inclusive hash-key range [start, end]. */
struct kpl_hash_range {
	struct kpl_u128 start;
	struct kpl_u128 end;
};

/*
 * Parses a shard's startingHashKey and endingHashKey (NUL-terminated
 * decimal strings). Returns KL_OK, or KL_EINVAL with a message in info
 * (NULL allowed) when either is malformed or start > end.
 */
enum kl_err kpl_hash_range_parse(const char *start_dec, const char *end_dec,
				 struct kl_errinfo *info, struct kpl_hash_range *ret);

/* True when start <= key <= end. */
bool kpl_hash_range_contains(const struct kpl_hash_range *range, struct kpl_u128 key);

/* ------------------------------------------------------------ decoding */

/*
 * One user record. Every pointer points into the input given to
 * kpl_decode(); nothing here is NUL-terminated.
 */
struct kpl_record {
	const uint8_t *data;
	size_t len;
	const char *partition_key;       /* NULL for a plain record (use the outer key) */
	size_t partition_key_len;
	const char *explicit_hash_key;   /* decimal, or NULL when the record has none */
	size_t explicit_hash_key_len;
	struct kpl_u128 hash_key;        /* effective key: EHK, else MD5(partition key);
	                                  * 0 for a plain record */
	uint64_t sub_sequence_number;    /* 0-based index in the aggregate; 0 if plain */
};

enum kpl_verdict {
	KPL_PLAIN = 0,     /* not an aggregate: records[0] is the whole input */
	KPL_AGGREGATE,     /* records[0..nrecords) are the user records */
	KPL_FILTERED,      /* a valid aggregate with a user record outside the
	                    * range: drop it whole (resharding duplicates) */
};

/* Why an input was treated as plain (KPL_REASON_NONE for an aggregate). */
enum kpl_reason {
	KPL_REASON_NONE = 0,
	KPL_REASON_NO_MAGIC,
	KPL_REASON_TOO_SHORT,     /* length <= 4 + 16 */
	KPL_REASON_BAD_DIGEST,    /* trailing MD5 does not match */
	KPL_REASON_BAD_PROTOBUF,  /* malformed wire format or a required field missing */
	KPL_REASON_BAD_INDEX,     /* a key index is outside its table */
	KPL_REASON_BAD_HASH_KEY,  /* an explicit hash key is not a decimal u128 */
};

/* Returns a static description of reason, e.g. "bad MD5". Thread-safe. */
const char *kpl_reason_str(enum kpl_reason reason);

struct kpl_result {
	enum kpl_verdict verdict;
	enum kpl_reason reason;
	size_t nrecords;                  /* 1 for PLAIN; may be 0 for an empty aggregate */
	const struct kpl_record *records; /* decoder-owned; valid until the next
	                                   * kpl_decode() or kpl_decoder_free() */
};

/* Running totals kept by one decoder. */
struct kpl_stats {
	uint64_t inputs;
	uint64_t plain;
	uint64_t aggregates;            /* delivered (not filtered) */
	uint64_t user_records;          /* delivered from aggregates */
	uint64_t filtered_aggregates;   /* dropped whole: outside the hash range */
	uint64_t filtered_user_records; /* user records inside those */
};

struct kpl_decoder;

/*
 * Creates a decoder (one per consumer thread). Fails with KL_ENOMEM, or
 * KL_ESTATE when libcrypto refuses MD5 (FIPS mode), with a message in info.
 * Free with kpl_decoder_free(). A decoder is not thread-safe.
 */
enum kl_err kpl_decoder_new(struct kl_errinfo *info, struct kpl_decoder **ret);

/* Frees the decoder and every result it handed out. NULL-safe. */
void kpl_decoder_free(struct kpl_decoder *dec);

/*
 * Decodes one Kinesis record's data[0..len). range: the shard's hash-key
 * range, or NULL to skip filtering. The result's records point into data
 * (borrowed; keep it alive while using them) and into the decoder.
 * Returns KL_OK (whatever the verdict) or KL_ENOMEM / KL_ESTATE with
 * *ret untouched. The memory the decoder holds is bounded by the largest
 * input it has seen (about one kpl_record per 6 input bytes at worst).
 */
enum kl_err kpl_decode(struct kpl_decoder *dec, const uint8_t *data, size_t len,
		       const struct kpl_hash_range *range, struct kl_errinfo *info,
		       struct kpl_result *ret);

/* The decoder's running totals. */
const struct kpl_stats *kpl_decoder_stats(const struct kpl_decoder *dec);

/* ------------------------------------------------------------ encoding */

struct kpl_enc_record {
	const char *partition_key;      /* NUL-terminated, required */
	const char *explicit_hash_key;  /* NUL-terminated decimal, or NULL */
	const void *data;
	size_t len;
};

/*
 * Appends the aggregate of recs[0..n) (MAGIC ‖ AggregatedRecord ‖ MD5) to
 * out; partition and explicit hash keys are deduplicated into the key
 * tables in order of first use. Returns KL_OK, KL_EINVAL (n == 0 or a NULL
 * key),
 * KL_ENOMEM (allocation or out's cap; out is then unchanged) or KL_ESTATE
 * (no MD5). Thread-safe as long as out is the caller's own.
 */
enum kl_err kpl_encode(const struct kpl_enc_record *recs, size_t n, struct buf *out);

/* The exact number of bytes kpl_encode() would append for recs[0..n);
 * 0 when it would fail. */
size_t kpl_encoded_size(const struct kpl_enc_record *recs, size_t n);

#endif
