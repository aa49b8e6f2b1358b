/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gen.h: the clickstream the benchmarks feed the record path (bench_recordpath,
 * bench_compress): JSON events of a few hundred bytes, about 1 in 50 from a
 * crawler, wrapped as recorded GetRecords response bodies, some records
 * KPL aggregates. Deterministic: the same seed and arguments give the same
 * bytes, so figures of different builds stay comparable. Not thread-safe
 * per struct gen; built into the benches only.
 */
#ifndef KL_BENCH_GEN_H
#define KL_BENCH_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "kl_err.h"
#include "util.h"

#define GEN_AGG_MAX 64                 /* events in one KPL aggregate, at most */

/* The generator's state across the bodies of one sample, and what they
 * hold so far. */
struct gen {
	struct kl_rng rng;
	int64_t ms;                    /* event and arrival time */
	int agg_every, agg_size;
	size_t n_records;              /* Kinesis records */
	size_t n_user;                 /* user records after de-aggregation */
	size_t payload;                /* user record bytes */
	size_t data_bytes;             /* Kinesis Data bytes (aggregates included) */
	struct buf rec, b64, ev[GEN_AGG_MAX];
};

/*
 * Starts a sample: every agg_every-th record a KPL aggregate of agg_size
 * (1..GEN_AGG_MAX) events; agg_every 0: all plain. Free with gen_done().
 */
void gen_init(struct gen *g, uint64_t seed, int agg_every, int agg_size);

/* Frees g's buffers (not the bodies it wrote). */
void gen_done(struct gen *g);

/* Appends one event (JSON, ~350 bytes) at time ms to out, drawing from
 * rng. KL_OK or KL_ENOMEM. */
enum kl_err gen_event(struct kl_rng *rng, int64_t ms, struct buf *out);

/*
 * Writes the next GetRecords body into body (initialised by gen_page, the
 * caller frees it with buf_done()): at most KINESIS_GET_RECORDS_MAX
 * records and 10 MB, sequence numbers ascending across the sample's
 * bodies, NextShardIterator next_iterator. KL_OK, or the error of
 * allocation or KPL encoding.
 */
enum kl_err gen_page(struct gen *g, struct buf *body, const char *next_iterator);

#endif
