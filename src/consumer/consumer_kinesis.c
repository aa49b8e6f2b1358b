/* SPDX-License-Identifier: Apache-2.0 */
/*
 * consumer_kinesis.c: struct consumer_kinesis over kinesis.h. Thin on
 * purpose: retries inside one call are aws.c's; pacing, backoff and
 * iterator recovery across calls are the consumer's.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer_kinesis.h"

static enum kl_err ck_get_shard_iterator(void *ctx, const char *shard_id,
					 const struct kinesis_position *pos, char **ret_iterator,
					 struct kl_errinfo *info)
{
	struct consumer_kinesis_aws *kc = ctx;

	return kinesis_get_shard_iterator(kc->client, kc->stream, shard_id, pos, ret_iterator, info);
}

static enum kl_err ck_get_records(void *ctx, const char *iterator, int limit,
				  struct kinesis_records **ret, struct kl_errinfo *info)
{
	struct consumer_kinesis_aws *kc = ctx;

	return kinesis_get_records(kc->client, iterator, limit, ret, info);
}

/*
 * kinesis_get_records() with the response body in the caller's buffer:
 * the same three public steps (build, aws_json_call_raw, scan), with body
 * lent to the struct http_response for the call and taken back after, so
 * its allocation outlives the call. The scan copies everything it keeps.
 */
static enum kl_err ck_get_records_buf(void *ctx, const char *iterator, int limit,
				      struct buf *body, struct kinesis_records **ret,
				      struct kl_errinfo *info)
{
	struct consumer_kinesis_aws *kc = ctx;
	struct http_response resp;
	json_object *req = NULL;
	enum kl_err err;

	err = kinesis_req_get_records(iterator, limit, &req);
	if (err)
		return kl_errinfo_set(info, err, "kinesis: GetRecords: cannot build the request");
	http_response_init(&resp);
	resp.body = *body;              /* lent: http_send() resets, keeps the allocation */
	err = aws_json_call_raw(kc->client, KINESIS_TARGET_PREFIX, KINESIS_JSON_VERSION,
				"GetRecords", req, &resp, info);
	json_object_put(req);
	if (err == KL_OK)
		err = kinesis_parse_get_records(resp.body.data, resp.body.len, ret, info);
	*body = resp.body;              /* taken back; resp keeps only its headers */
	buf_init(&resp.body, body->cap);
	http_response_done(&resp);
	return err;
}

static char *or_null(char *s)
{
	return s[0] ? s : NULL;
}

enum kl_err consumer_kinesis_children(const struct kinesis_shard *shards, size_t n,
				      const char *shard_id, struct lease_shard_list *ret)
{
	for (size_t i = 0; i < n; i++) {
		/* A copy, because lease_shard's strings are not const. */
		struct kinesis_shard k = shards[i];
		struct lease_shard s;
		enum kl_err err;

		if (strcmp(k.parent_shard_id, shard_id) != 0 &&
		    strcmp(k.adjacent_parent_shard_id, shard_id) != 0)
			continue;
		memset(&s, 0, sizeof(s));
		s.shard_id = k.shard_id;
		s.parent_id = or_null(k.parent_shard_id);
		s.adjacent_parent_id = or_null(k.adjacent_parent_shard_id);
		s.starting_hash_key = or_null(k.starting_hash_key);
		s.ending_hash_key = or_null(k.ending_hash_key);
		s.starting_seq = or_null(k.starting_sequence_number);
		s.ending_seq = or_null(k.ending_sequence_number);
		err = lease_shard_list_add(ret, &s);
		if (err)
			return err;
	}
	return KL_OK;
}

static enum kl_err ck_list_children(void *ctx, const char *shard_id, struct lease_shard_list *ret,
				    struct kl_errinfo *info)
{
	struct consumer_kinesis_aws *kc = ctx;
	struct kinesis_list_shards_opts opts;
	struct kinesis_shard *shards = NULL;
	size_t n = 0;
	enum kl_err err;

	memset(&opts, 0, sizeof(opts));
	opts.exclusive_start_shard_id = shard_id;
	err = kinesis_list_shards(kc->client, kc->stream, &opts, &shards, &n, info);
	if (err == KL_OK)
		err = consumer_kinesis_children(shards, n, shard_id, ret);
	free(shards);
	return err;
}

static void ck_stats(void *ctx, struct aws_stats *ret)
{
	struct consumer_kinesis_aws *kc = ctx;

	*ret = kc->client->stats;
}

static const struct consumer_kinesis_ops aws_ops = {
	.get_shard_iterator = ck_get_shard_iterator,
	.get_records = ck_get_records,
	.list_children = ck_list_children,
	.stats = ck_stats,
	.get_records_buf = ck_get_records_buf,
};

enum kl_err consumer_kinesis_aws(struct consumer_kinesis_aws *kc, struct aws_client *client,
				 const char *stream, struct consumer_kinesis *ret)
{
	const char *name = stream ? kinesis_stream_name(stream) : NULL;

	if (!client || !name)
		return KL_EINVAL;
	memset(kc, 0, sizeof(*kc));
	kc->client = client;
	snprintf(kc->stream, sizeof(kc->stream), "%s", name);
	ret->ops = &aws_ops;
	ret->ctx = kc;
	return KL_OK;
}
