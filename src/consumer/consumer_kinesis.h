/* SPDX-License-Identifier: Apache-2.0 */
/*
 * consumer_kinesis.h: the production struct consumer_kinesis: the
 * consumer's three Kinesis needs (GetShardIterator, GetRecords, the
 * children of a closed shard) over kinlake's Kinesis client (kinesis.h).
 *
 * Children come from ListShards, starting after the shard itself (child
 * shard ids are always higher than their parents'), keeping the entries
 * whose ParentShardId or AdjacentParentShardId is the shard: that is how
 * kinesalite, which never sends ChildShards, shows them.
 */
#ifndef KL_CONSUMER_KINESIS_H
#define KL_CONSUMER_KINESIS_H

#include "aws.h"
#include "consumer.h"
#include "kinesis.h"

/* The context the ops run with. Plain value; fill it with
 * consumer_kinesis_aws(). */
struct consumer_kinesis_aws {
	struct aws_client *client;    /* borrowed */
	char stream[KINESIS_STREAM_NAME_MAX + 1];
};

/*
 * Sets kc up to read stream (a name or an ARN, copied) through client
 * (borrowed, set up for service "kinesis"; it must outlive kc) and fills
 * *ret with ops whose ctx is kc. A struct aws_client is used by one thread
 * at a time: give every consumer thread its own client. Returns KL_OK or
 * KL_EINVAL for a bad stream name. Thread-safe.
 */
enum kl_err consumer_kinesis_aws(struct consumer_kinesis_aws *kc, struct aws_client *client,
				 const char *stream, struct consumer_kinesis *ret);

/*
 * The children of shard_id among shards[0..n) (a ListShards result):
 * entries whose ParentShardId or AdjacentParentShardId is shard_id, as
 * struct lease_shard (parents, hash range, starting sequence number),
 * appended to *ret (caller frees with lease_shard_list_done). KL_OK or
 * KL_ENOMEM. Pure.
 */
enum kl_err consumer_kinesis_children(const struct kinesis_shard *shards, size_t n,
				      const char *shard_id, struct lease_shard_list *ret);

#endif
