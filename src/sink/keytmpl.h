/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keytmpl.h: S3 object-key templates in Firehose's syntax, compiled once
 * at start-up (every mistake reported with its position) and rendered
 * once per batch into a caller buffer.
 *
 * Expressions:
 *   !{timestamp:PATTERN}            arrival time of the batch's first record,
 *                                   UTC; PATTERN uses Java DateTimeFormatter
 *                                   letters yyyy yy MM dd HH mm ss, other
 *                                   characters and 'quoted text' are literal
 *   !{partitionKeyFromLambda:NAME}  a partition key set by the plugin
 *   !{partition:NAME}               the same (kinlake alias)
 *   !{firehose:error-output-type}   error templates only, e.g. processing-failed
 *   !{shard}                        the shard id
 *   !{esn_first} !{esn_last}        the batch's first / last ESN (esn.h key form)
 *   !{esn_range}                    "<esn_first>_<esn_last>"
 * A template without ESN expressions is a prefix, and the key is
 *   <prefix><shard>/<esn_first>_<esn_last><ext>
 * A template with ESN expressions is a full key: it must contain !{shard}
 * and, after its last '/', the first and last ESN; <ext> is appended.
 *
 * Invariant: a key depends only on the template and the batch (shard, ESN
 * range, first arrival time, partition values, error type), never on the
 * clock or randomness, and always contains the shard and both ESNs, so a
 * rebuilt batch overwrites its own object and no two batches share one.
 * A compiled template is immutable: render from any number of threads.
 */
#ifndef KL_KEYTMPL_H
#define KL_KEYTMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esn.h"
#include "kl_err.h"

#define KEYTMPL_TEXT_MAX 512    /* longest template (Firehose's prefix limit) */
#define KEYTMPL_KEY_MAX 1024    /* longest rendered key (S3's limit), bytes */
#define KEYTMPL_VALUE_MAX 256   /* longest partition value / shard id, bytes */
#define KEYTMPL_NAME_MAX 64     /* longest partition key name */

enum keytmpl_kind {
	KEYTMPL_DATA = 0,       /* the S3 prefix / key of data objects */
	KEYTMPL_ERROR,          /* the error prefix / key of error objects */
};

/* One partition key of a record: name and value, both borrowed. */
struct keytmpl_pkey {
	const char *name;
	const char *value;
};

/* What a key is made of. Everything borrowed for the call. */
struct keytmpl_batch {
	const char *shard_id;
	const struct esn *first;          /* first ESN of the batch */
	const struct esn *last;           /* last ESN of the batch (>= first) */
	int64_t first_arrival_ms;         /* approximate arrival of the first record */
	const struct keytmpl_pkey *pkeys; /* partition keys of this object */
	size_t n_pkeys;
	const char *error_output_type;    /* error templates: e.g. "processing-failed" */
	const char *ext;                  /* e.g. spool_codec_ext(); NULL = "" */
};

struct keytmpl;

/*
 * Compiles text (at most KEYTMPL_TEXT_MAX bytes) as a template of kind.
 * Returns KL_OK and *ret_t (free with keytmpl_free()), KL_ECONFIG with a
 * message that names the problem and its 1-based character position
 * (unknown namespace, bad or unsupported timestamp pattern, unbalanced
 * "!{", ESN range missing from the object name, error type outside the
 * error template, ...), or KL_ENOMEM. Thread-safe.
 */
enum kl_err keytmpl_compile(const char *text, enum keytmpl_kind kind,
			    struct keytmpl **ret_t, struct kl_errinfo *info);

/* Frees t. NULL-safe. */
void keytmpl_free(struct keytmpl *t);

/*
 * Renders the key of batch b into out (out_size bytes, NUL-terminated).
 * Returns KL_OK and the length in *ret_len (may be NULL), or:
 *   KL_ENOTFOUND  a partition key the template uses is not in b->pkeys
 *                 (route the records to the error prefix: partition-key-missing)
 *   KL_EINVAL     a partition value, shard id or error type is not safe in
 *                 a key (see keytmpl_check_value), or the ESNs / arrival
 *                 time are invalid (partition-key-invalid for the former)
 *   KL_ENOMEM     the key would exceed KEYTMPL_KEY_MAX or out_size - 1
 * info says which key and why. out is unspecified on failure.
 * Thread-safe (t is only read).
 */
enum kl_err keytmpl_render(const struct keytmpl *t, const struct keytmpl_batch *b,
			   char *out, size_t out_size, size_t *ret_len,
			   struct kl_errinfo *info);

/*
 * Checks that value may go into a key as one path segment: not empty, at
 * most KEYTMPL_VALUE_MAX bytes, valid UTF-8, no '/', no '\\', no control
 * characters, not "." or "..". KL_OK or KL_EINVAL (info says why).
 */
enum kl_err keytmpl_check_value(const char *value, struct kl_errinfo *info);

/* The distinct partition key names the template uses, in order of first
 * use: the batcher groups records by these. Strings owned by t. */
size_t keytmpl_partition_count(const struct keytmpl *t);
const char *keytmpl_partition_name(const struct keytmpl *t, size_t i);

/* True when the template uses !{firehose:error-output-type} (so each
 * error type of a batch needs its own object). */
bool keytmpl_has_error_type(const struct keytmpl *t);
/* True when the template uses !{timestamp:...}. */
bool keytmpl_has_timestamp(const struct keytmpl *t);
/* True when the template names the object itself (has ESN expressions). */
bool keytmpl_is_full_key(const struct keytmpl *t);


/*
 * The parts of a compiled template, in key order, for tools that describe
 * the keys rather than render them (`kinlake athena-ddl`). A prefix
 * template ends with the parts of the default object name (shard, "/",
 * ESN range), so every template ends with its object name. Read-only.
 */
enum keytmpl_part_kind {
	KEYTMPL_PART_LITERAL = 0,  /* text/len: literal bytes of the key */
	KEYTMPL_PART_YEAR4,        /* yyyy */
	KEYTMPL_PART_YEAR2,        /* yy */
	KEYTMPL_PART_MONTH,        /* MM */
	KEYTMPL_PART_DAY,          /* dd */
	KEYTMPL_PART_HOUR,         /* HH */
	KEYTMPL_PART_MINUTE,       /* mm */
	KEYTMPL_PART_SECOND,       /* ss */
	KEYTMPL_PART_PARTITION,    /* text: the partition key name */
	KEYTMPL_PART_ERROR_TYPE,
	KEYTMPL_PART_SHARD,
	KEYTMPL_PART_ESN_FIRST,
	KEYTMPL_PART_ESN_LAST,
	KEYTMPL_PART_ESN_RANGE,
};

struct keytmpl_part {
	enum keytmpl_part_kind kind;
	const char *text;          /* LITERAL, PARTITION: NUL-terminated, owned by t */
	size_t len;
	size_t pos;                /* 1-based position in the template, for messages */
};

/* Number of parts, and part i (false when i is out of range). Thread-safe. */
size_t keytmpl_part_count(const struct keytmpl *t);
bool keytmpl_part(const struct keytmpl *t, size_t i, struct keytmpl_part *ret_part);

/* The template as written. Owned by t. */
const char *keytmpl_text(const struct keytmpl *t);

#endif
