/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_shards_kinesis.h: the shard source of lease_sync.h over Kinesis
 * ListShards, plus the child lookup a consumer needs at shard end (Kinesis
 * reports children in GetRecords' ChildShards, kinesalite never does; the
 * listing has ParentShardId / AdjacentParentShardId everywhere).
 *
 * Invariants: a listing holds every shard the service returned across all
 * pages (kinesis_list_shards() follows NextToken and only ever sends a
 * token it received: kinesalite never returns one and exits on a token
 * without a stream name); the ShardFilter is sent *and* applied here,
 * because kinesalite ignores it: AT_LATEST keeps open shards only,
 * AT_TRIM_HORIZON and AT_TIMESTAMP keep shards none of whose parents is in
 * the listing (the oldest generation; later ones are reached through
 * SHARD_END). On AWS the service's own filtering already gives that set, so
 * the second pass changes nothing there.
 *
 * Thread-safety: one source owns one Kinesis client; its calls are
 * serialised by a mutex, so a source may be shared, but a slow listing
 * delays the others. The pure functions are thread-safe.
 */
#ifndef KL_LEASE_SHARDS_KINESIS_H
#define KL_LEASE_SHARDS_KINESIS_H

#include <stddef.h>
#include <stdint.h>

#include "aws.h"
#include "creds.h"
#include "kinesis.h"
#include "kl_err.h"
#include "lease_sync.h"

struct lease_shards_kinesis;

struct lease_shards_kinesis_config {
	const char *stream;           /* stream name or ARN; required */
	/* Endpoint, region, HTTP and retry settings; service is forced to
	 * "kinesis". */
	const struct aws_client_config *aws;
	struct creds_chain *creds;    /* borrowed; must outlive the source */
	int page_size;                /* ListShards MaxResults; 0 = service default */
};

/*
 * Creates a source (cfg copied, creds borrowed). Sets up its client but
 * sends nothing. KL_EINVAL for a missing stream, region or creds,
 * KL_ECONFIG for a bad endpoint, KL_ENOMEM. Free with
 * lease_shards_kinesis_free() (NULL-safe) after the coordinators using it.
 */
enum kl_err lease_shards_kinesis_new(const struct lease_shards_kinesis_config *cfg,
				     struct lease_shards_kinesis **ret_src,
				     struct kl_errinfo *info);
void lease_shards_kinesis_free(struct lease_shards_kinesis *src);

/* Fills *ret with the lease_shard_source interface over src (borrowed). */
void lease_shards_kinesis_source(struct lease_shards_kinesis *src, struct lease_shard_source *ret);

/*
 * Lists the stream's shards with filter (timestamp_ms for AT_TIMESTAMP):
 * what lease_shard_source.list does. Fills *ret (caller frees with
 * lease_shard_list_done). Errors as kinesis_list_shards() returns them.
 * Thread-safe (serialised).
 */
enum kl_err lease_shards_kinesis_list(struct lease_shards_kinesis *src,
				      enum lease_shard_filter filter, int64_t timestamp_ms,
				      struct lease_shard_list *ret, struct kl_errinfo *info);

/*
 * The children of shard parent (shards naming it as parent or adjacent
 * parent), ready for lease_coord_shard_end(). Fills *ret (caller frees);
 * an empty list means the listing shows none yet. Thread-safe (serialised).
 */
enum kl_err lease_shards_kinesis_children(struct lease_shards_kinesis *src, const char *parent,
					  struct lease_shard_list *ret, struct kl_errinfo *info);

/* ---------------------------------------------------------------- pure parts */

/*
 * Converts a ListShards result (v[0..n)) to lease shards and applies
 * filter as described at the top. Empty strings become NULL (no parent,
 * open shard). Fills *ret (caller frees). KL_ENOMEM. Pure.
 */
enum kl_err lease_shards_from_kinesis(const struct kinesis_shard *v, size_t n,
				      enum lease_shard_filter filter,
				      struct lease_shard_list *ret);

/* Copies the children of parent among all into *ret (caller frees). KL_ENOMEM. Pure. */
enum kl_err lease_shards_children_of(const struct lease_shard_list *all, const char *parent,
				     struct lease_shard_list *ret);

#endif
