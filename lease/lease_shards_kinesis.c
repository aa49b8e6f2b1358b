/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_shards_kinesis.c: shard listings for shard sync and shard end,
 * from Kinesis ListShards. The filter is applied on our side as well as
 * sent, since kinesalite ignores ShardFilter (see the header).
 *
 * Invariant: the client is used by one thread at a time (src->mu).
 */
#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lease_shards_kinesis.h"
#include "log.h"

struct lease_shards_kinesis {
	pthread_mutex_t mu;
	struct aws_client client;
	char *stream;
	int page_size;
};

/* ---------------------------------------------------------------- pure parts */

static const char *or_null(const char *s)
{
	return s && *s ? s : NULL;
}

/* True when some shard of v[0..n) has the id id. */
static bool listed(const struct kinesis_shard *v, size_t n, const char *id)
{
	if (!id || !*id)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].shard_id, id) == 0)
			return true;
	return false;
}

static bool keep(const struct kinesis_shard *v, size_t n, size_t i, enum lease_shard_filter filter)
{
	switch (filter) {
	case LEASE_SHARDS_ALL:
		return true;
	case LEASE_SHARDS_AT_LATEST:
		return !kinesis_shard_is_closed(&v[i]);
	case LEASE_SHARDS_AT_TRIM_HORIZON:
	case LEASE_SHARDS_AT_TIMESTAMP:
		/* The oldest generation listed; descendants follow at SHARD_END. */
		return !listed(v, n, v[i].parent_shard_id) &&
		       !listed(v, n, v[i].adjacent_parent_shard_id);
	}
	return true;
}

enum kl_err lease_shards_from_kinesis(const struct kinesis_shard *v, size_t n,
				      enum lease_shard_filter filter,
				      struct lease_shard_list *ret)
{
	struct lease_shard_list out = { NULL, 0 };

	for (size_t i = 0; i < n; i++) {
		struct lease_shard s;

		if (!keep(v, n, i, filter))
			continue;
		/* lease_shard_list_add copies; the casts only drop const. */
		s.shard_id = (char *)v[i].shard_id;
		s.parent_id = (char *)or_null(v[i].parent_shard_id);
		s.adjacent_parent_id = (char *)or_null(v[i].adjacent_parent_shard_id);
		s.starting_hash_key = (char *)or_null(v[i].starting_hash_key);
		s.ending_hash_key = (char *)or_null(v[i].ending_hash_key);
		s.starting_seq = (char *)or_null(v[i].starting_sequence_number);
		s.ending_seq = (char *)or_null(v[i].ending_sequence_number);
		if (lease_shard_list_add(&out, &s) != KL_OK) {
			lease_shard_list_done(&out);
			return KL_ENOMEM;
		}
	}
	*ret = out;
	return KL_OK;
}

static bool str_eq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

enum kl_err lease_shards_children_of(const struct lease_shard_list *all, const char *parent,
				     struct lease_shard_list *ret)
{
	struct lease_shard_list out = { NULL, 0 };

	for (size_t i = 0; i < all->n; i++) {
		const struct lease_shard *s = &all->v[i];

		if (!str_eq(s->parent_id, parent) && !str_eq(s->adjacent_parent_id, parent))
			continue;
		if (lease_shard_list_add(&out, s) != KL_OK) {
			lease_shard_list_done(&out);
			return KL_ENOMEM;
		}
	}
	*ret = out;
	return KL_OK;
}

/* ---------------------------------------------------------------- the source */

static const char *filter_type(enum lease_shard_filter filter)
{
	switch (filter) {
	case LEASE_SHARDS_ALL: return NULL;
	case LEASE_SHARDS_AT_TRIM_HORIZON: return "AT_TRIM_HORIZON";
	case LEASE_SHARDS_AT_LATEST: return "AT_LATEST";
	case LEASE_SHARDS_AT_TIMESTAMP: return "AT_TIMESTAMP";
	}
	return NULL;
}

enum kl_err lease_shards_kinesis_list(struct lease_shards_kinesis *src,
				      enum lease_shard_filter filter, int64_t timestamp_ms,
				      struct lease_shard_list *ret, struct kl_errinfo *info)
{
	struct kinesis_list_shards_opts opts;
	struct kinesis_shard *shards = NULL;
	size_t n = 0;
	enum kl_err err;

	memset(&opts, 0, sizeof(opts));
	opts.max_results = src->page_size;
	opts.filter_type = filter_type(filter);
	opts.filter_timestamp_ms = timestamp_ms;
	pthread_mutex_lock(&src->mu);
	err = kinesis_list_shards(&src->client, src->stream, &opts, &shards, &n, info);
	pthread_mutex_unlock(&src->mu);
	if (err != KL_OK) {
		log_debug("lease: ListShards of '%s' failed: %s", src->stream, kl_strerror(err));
		return err;
	}
	err = lease_shards_from_kinesis(shards, n, filter, ret);
	free(shards);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease: out of memory");
	return KL_OK;
}

enum kl_err lease_shards_kinesis_children(struct lease_shards_kinesis *src, const char *parent,
					  struct lease_shard_list *ret, struct kl_errinfo *info)
{
	struct lease_shard_list all = { NULL, 0 };
	enum kl_err err;

	if (!parent)
		return kl_errinfo_set(info, KL_EINVAL, "lease: no parent shard id");
	err = lease_shards_kinesis_list(src, LEASE_SHARDS_ALL, 0, &all, info);
	if (err != KL_OK)
		return err;
	err = lease_shards_children_of(&all, parent, ret);
	lease_shard_list_done(&all);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease: out of memory");
	return KL_OK;
}

static enum kl_err source_list(void *ctx, enum lease_shard_filter filter, int64_t timestamp_ms,
			       struct lease_shard_list *ret, struct kl_errinfo *info)
{
	return lease_shards_kinesis_list(ctx, filter, timestamp_ms, ret, info);
}

void lease_shards_kinesis_source(struct lease_shards_kinesis *src, struct lease_shard_source *ret)
{
	ret->list = source_list;
	ret->ctx = src;
}

enum kl_err lease_shards_kinesis_new(const struct lease_shards_kinesis_config *cfg,
				     struct lease_shards_kinesis **ret_src,
				     struct kl_errinfo *info)
{
	struct lease_shards_kinesis *src;
	struct aws_client_config ac;
	const char *name;
	enum kl_err err;

	if (!cfg || !cfg->stream || !cfg->aws || !cfg->aws->region || !cfg->creds)
		return kl_errinfo_set(info, KL_EINVAL,
				      "lease: a stream, a region and credentials are required");
	name = kinesis_stream_name(cfg->stream);
	if (!name)
		return kl_errinfo_set(info, KL_EINVAL, "lease: '%.200s' does not name a stream",
				      cfg->stream);
	if (cfg->page_size < 0 || cfg->page_size > 10000)
		return kl_errinfo_set(info, KL_EINVAL, "lease: ListShards page size out of range");
	src = calloc(1, sizeof(*src));
	if (!src)
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	src->stream = strdup(name);
	if (!src->stream || pthread_mutex_init(&src->mu, NULL) != 0) {
		free(src->stream);
		free(src);
		return kl_errinfo_set(info, KL_ENOMEM, "lease: out of memory");
	}
	src->page_size = cfg->page_size;
	ac = *cfg->aws;
	ac.service = "kinesis";
	err = aws_client_init(&src->client, &ac, cfg->creds);
	if (err != KL_OK) {
		lease_shards_kinesis_free(src);
		return kl_errinfo_set(info, err, "lease: cannot set up the Kinesis client");
	}
	*ret_src = src;
	return KL_OK;
}

void lease_shards_kinesis_free(struct lease_shards_kinesis *src)
{
	if (!src)
		return;
	aws_client_done(&src->client);
	pthread_mutex_destroy(&src->mu);
	free(src->stream);
	free(src);
}
