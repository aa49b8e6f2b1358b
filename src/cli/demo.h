/* SPDX-License-Identifier: Apache-2.0 */
/*
 * demo.h: `kinlake demo produce`, a clickstream producer for the demo, the
 * integration and chaos tests and the benchmarks (the local stand-in for
 * Firehose's "test with demo data"), and the two pieces it is built from,
 * public so that tests and benchmarks can use them in-process:
 *
 *  - a generator of website clickstream events (JSON, a few hundred bytes)
 *    for a parcel-delivery / food-ordering site. It is deterministic: the
 *    same seed, options and event times give the same bytes, and which
 *    events are malformed or from bots never depends on the times. Every
 *    record, even a malformed one, contains the literal text
 *    "event_id":"<seed>-<n>" so a reader can account for each one.
 *  - a send queue that turns generated events into PutRecords batches,
 *    plain or KPL-aggregated, and applies the results. Invariant: per
 *    partition key, records reach the stream in generation order with no
 *    duplicates, whatever fails and is retried. A batch never holds two
 *    Kinesis records that share a user partition key, so a failed record
 *    can be resent before any later record of its key.
 */
#ifndef KL_DEMO_H
#define KL_DEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "kinesis.h"
#include "kl_err.h"

/* ------------------------------------------------------------ generator */

#define DEMO_DEFAULT_MALFORMED_PCT 1.0
#define DEMO_DEFAULT_BOT_PCT 5.0
#define DEMO_DEFAULT_SESSIONS 1000     /* sessions open at the same time */
#define DEMO_SESSIONS_MAX 1000000
#define DEMO_EVENT_ID_MAX 48           /* "<20 digits>-<20 digits>" + NUL */
#define DEMO_KEY_MAX 40                /* a session id (UUID form) + NUL */
#define DEMO_EVENT_MAX 2048            /* no event is longer than this */

enum demo_kind {
	DEMO_KIND_OK = 0,              /* valid event from a person */
	DEMO_KIND_BOT,                 /* valid event from a crawler (the plugin drops it) */
	DEMO_KIND_TRUNCATED,           /* JSON cut short */
	DEMO_KIND_NOT_JSON,            /* a log line that is not JSON */
	DEMO_KIND_MISSING_FIELDS,      /* valid JSON without user_id and action
					  (never from a bot: bots are dropped first) */
	DEMO_KIND_BAD_UTF8,            /* JSON with an invalid UTF-8 byte in a string */
};
#define DEMO_KIND_COUNT 6

/* "ok", "bot", "truncated", "not-json", "missing-fields", "bad-utf8". Static. */
const char *demo_kind_name(enum demo_kind kind);
/* True for the four malformed kinds: the clickstream plugin must FAIL them
 * (with required_fields naming user_id or action for MISSING_FIELDS). */
bool demo_kind_malformed(enum demo_kind kind);

struct demo_gen_opts {
	uint64_t first_id;             /* n of the first event (--ids-from) */
	double malformed_pct;          /* 0..100, share of events that are malformed */
	double bot_pct;                /* 0..100, share of sessions that are crawlers,
					  and so about the share of events */
	unsigned sessions;             /* open sessions, 1..DEMO_SESSIONS_MAX */
};

/* Fills o with the defaults above and first_id 0. */
void demo_gen_opts_default(struct demo_gen_opts *o);

/* What was generated, besides the bytes. Plain value. */
struct demo_event {
	uint64_t n;                           /* the counter: event id "<seed>-<n>" */
	char event_id[DEMO_EVENT_ID_MAX];
	char partition_key[DEMO_KEY_MAX];     /* the session id */
	uint64_t seq;                         /* 1, 2, ... per partition key */
	enum demo_kind kind;
};

struct demo_gen;

/*
 * Creates a generator. opts NULL = demo_gen_opts_default(). The random
 * state is derived from seed and opts->first_id, so runs with other
 * --ids-from values use other session ids. KL_EINVAL for options out of
 * range, KL_ENOMEM. Free with demo_gen_free() (NULL-safe). A generator is
 * used by one thread at a time.
 */
enum kl_err demo_gen_new(uint64_t seed, const struct demo_gen_opts *opts,
			 struct demo_gen **ret_gen);
void demo_gen_free(struct demo_gen *gen);

/*
 * Appends the next event to out (no newline; at most DEMO_EVENT_MAX bytes)
 * and describes it in *ret_event. now_ms is the wall-clock time to stamp
 * (the event's ts is up to 1.5 s earlier, as a browser beacon's would be).
 * KL_ENOMEM when out's cap is reached (out is then unchanged and the
 * generator has not advanced).
 */
enum kl_err demo_gen_event(struct demo_gen *gen, int64_t now_ms, struct buf *out,
			   struct demo_event *ret_event);

/* Counters since demo_gen_new(): events of each kind. */
const uint64_t *demo_gen_counts(const struct demo_gen *gen); /* [DEMO_KIND_COUNT] */

/* ------------------------------------------------------------ send queue */

#define DEMO_KPL_DEFAULT_PER_RECORD 20
#define DEMO_KPL_MAX_PER_RECORD 1000
#define DEMO_KPL_DEFAULT_MAX_BYTES 51200   /* like the KPL's AggregationMaxSize */
#define DEMO_BATCH_MAX_BYTES (5u * 1024 * 1024)
#define DEMO_QUEUE_DEFAULT_MAX 50000

struct demo_queue_opts {
	unsigned kpl_per_record;       /* user records per aggregate; 0 or 1 = no KPL */
	size_t kpl_max_bytes;          /* cap of one aggregate; 0 = default, <= 1 MiB */
	size_t max_records;            /* queue capacity in user records; 0 = default */
};

/* The outcome of one demo_queue_settle(). */
struct demo_settle_stats {
	size_t acked_records;          /* user records now in the stream */
	size_t acked_bytes;            /* their bytes */
	size_t failed_entries;         /* Kinesis records to resend */
	size_t failed_records;         /* user records inside them */
	size_t throttled_entries;      /* of which ProvisionedThroughputExceeded */
	size_t misrouted_entries;      /* aggregates that landed on another shard ... */
	size_t filtered_entries;       /* ... and that a consumer will drop (resent) */
};

/* Called for each user record written, in stream order. Everything borrowed. */
typedef void (*demo_ack_fn)(void *arg, const struct demo_event *ev, size_t len,
			    const char *shard_id, const char *sequence_number,
			    uint64_t sub_sequence_number);

struct demo_queue;

/*
 * Creates an empty queue. In KPL mode it cannot form batches before
 * demo_queue_set_shards(). KL_EINVAL, KL_ENOMEM, KL_ESTATE (libcrypto
 * refuses MD5). Free with demo_queue_free() (NULL-safe). One thread.
 */
enum kl_err demo_queue_new(const struct demo_queue_opts *opts, struct demo_queue **ret_q);
void demo_queue_free(struct demo_queue *q);

/*
 * Sets the stream's shards (copied; closed shards too: they tell where a
 * record went). Routing uses the open ones: the real KPL aggregates only
 * user records that hash to the same shard, because a consumer drops an
 * aggregate holding a record outside its shard's range. KL_EINVAL when
 * the open shards do not cover the hash-key space, KL_ENOMEM.
 */
enum kl_err demo_queue_set_shards(struct demo_queue *q, const struct kinesis_shard *shards,
				  size_t n);

/* Appends an event (data copied). KL_ENOMEM when the queue is full or
 * memory runs out, KL_EINVAL for data larger than one Kinesis record. */
enum kl_err demo_queue_add(struct demo_queue *q, const struct demo_event *ev, const void *data,
			   size_t len);

/* User records queued and not yet acknowledged. */
size_t demo_queue_len(const struct demo_queue *q);

/*
 * Forms the next batch from the oldest records: at most max_entries (<=
 * 500) Kinesis records and DEMO_BATCH_MAX_BYTES of data and keys; no user
 * partition key in two of them. *ret_entries (owned by q, valid until the
 * next take/settle/abandon/free) may be handed to kinesis_put_records().
 * *ret_n is 0 only when the queue is empty. KL_ESTATE in KPL mode without
 * shards or when the previous batch was not settled; KL_ENOMEM.
 */
enum kl_err demo_queue_take(struct demo_queue *q, size_t max_entries,
			    const struct kinesis_put_entry **ret_entries, size_t *ret_n);

/*
 * True when an entry of the batch succeeded on a shard other than the one
 * its aggregate was routed to: the shard map is stale; refresh it with
 * demo_queue_set_shards() before demo_queue_settle(), which then decides
 * whether a consumer keeps the aggregate or drops it.
 */
bool demo_queue_misrouted(const struct demo_queue *q, const struct kinesis_put_results *res);

/*
 * Applies res (from PutRecords of the batch last taken; res->n must match)
 * : written user records leave the queue (on_ack, NULL allowed, is called
 * for each); failed ones stay in place and are sent again by a later take.
 * KL_EINVAL (no batch, count mismatch).
 */
enum kl_err demo_queue_settle(struct demo_queue *q, const struct kinesis_put_results *res,
			      demo_ack_fn on_ack, void *arg, struct demo_settle_stats *ret_stats);

/* The whole call failed: every record of the batch stays queued. */
void demo_queue_abandon(struct demo_queue *q);

/* ------------------------------------------------------------ command */

/*
 * `kinlake demo produce --stream NAME [options]` (argv[0] is "demo"); see
 * the usage text in demo.c. Prints progress and a summary on stderr and
 * one line of key=value pairs on stdout (ids are "<seed>-<n>" for
 * first <= n < next; ok + bots + malformed = acked):
 *   event_ids=42-0..42-1999 stream=clicks seed=42 first=0 next=2000
 *   generated=2000 acked=2000 ok=1756 bots=183 malformed=61 complete=yes
 * --manifest FILE adds one tab-separated line per written event: event id,
 * partition key, seq, kind (demo_kind_name), shard id, sequence number,
 * sub-sequence number. Returns 0 when every generated event was written,
 * 1 on failure, 64 for bad usage, 78 for a bad config file. Installs
 * SIGINT/SIGTERM handlers while producing (the first stops generating and
 * drains the queue, the second abandons it). Main thread only.
 * Exactly once holds as long as no PutRecords call fails ambiguously: a
 * call that timed out after the service wrote it is sent again (the AWS
 * client's own retries behave the same), which would duplicate its records.
 */
int demo_main(int argc, char **argv);

#endif
