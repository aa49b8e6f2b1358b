/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agg_spec.h: what the aggregates count (struct agg_spec) and the one
 * parser of its list syntax in the config, shared by `kinlake
 * check-config` (src/cli/cfg.c, which is why it is built into libcfg), the
 * worker at start-up and tests/tools/aggcheck. Plain data and pure
 * functions: no allocation, thread-safe. The aggregates themselves are in
 * agg.h.
 */
#ifndef KL_AGG_SPEC_H
#define KL_AGG_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

#define AGG_MAX_DIMS 8
#define AGG_MAX_SUMS 8
#define AGG_MAX_DISTINCT 4
#define AGG_NAME_MAX 64                /* a field or key name */
/* Linear counting: a distinct:FIELD measure keeps the set of buckets
 * (0..AGG_DISTINCT_BUCKETS-1) that the field's values hash to. */
#define AGG_DISTINCT_BUCKETS 1024

enum agg_dim_kind {
	AGG_DIM_FIELD = 0,             /* a field of the output JSON object ("a.b" = nested) */
	AGG_DIM_KEY,                   /* a partition key the plugin set ("key:NAME") */
};

struct agg_dim {
	enum agg_dim_kind kind;
	char name[AGG_NAME_MAX + 1];
};

/* What to aggregate; from the config's aggregates section. */
struct agg_spec {
	int64_t window_ms;             /* tumbling window size, > 0 */
	int64_t lateness_ms;           /* allowed lateness, >= 0 */
	char time_field[AGG_NAME_MAX + 1]; /* "" = the arrival time is the event time */
	struct agg_dim dims[AGG_MAX_DIMS];
	size_t n_dims;
	char sums[AGG_MAX_SUMS][AGG_NAME_MAX + 1];   /* fields whose values are summed */
	size_t n_sums;
	char distincts[AGG_MAX_DISTINCT][AGG_NAME_MAX + 1]; /* fields counted distinct-ish */
	size_t n_distinct;
	uint32_t buckets;              /* write spreading: 1..1000 */
	size_t max_entries;            /* distinct (window, dimensions) per batch */
};

/*
 * Parses the list syntax of the config into spec (the other fields are
 * left as they are): dimensions "page, action, key:dt" (1..AGG_MAX_DIMS
 * distinct names), measures "count, sum:price, distinct:session_id"
 * ("count" is always there and may be listed; up to AGG_MAX_SUMS sums and
 * AGG_MAX_DISTINCT distinct counts). KL_ECONFIG with a message
 * naming the bad item but not the list (the caller names the key).
 */
enum kl_err agg_spec_parse_dims(const char *list, struct agg_spec *spec, struct kl_errinfo *info);
enum kl_err agg_spec_parse_measures(const char *list, struct agg_spec *spec,
				    struct kl_errinfo *info);

/* A field or key name: 1..AGG_NAME_MAX of A-Z a-z 0-9 _ . -; KL_ECONFIG
 * with the reason otherwise. */
enum kl_err agg_spec_check_name(const char *name, struct kl_errinfo *info);

#endif
