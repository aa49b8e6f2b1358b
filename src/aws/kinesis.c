/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kinesis.c: Kinesis Data Streams over JSON 1.1. Builders make request
 * objects, parsers turn responses into plain C structs; the calls glue the
 * two to aws_json_call(), which signs, retries and classifies errors.
 * Invariants: GetRecords always carries Limit; a ListShards request never
 * holds NextToken together with StreamName; a GetRecords result is one
 * allocation (records' data live in its arena); ret_* are written only on
 * success.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kinesis.h"
#include "log.h"
#include "util.h"

/* ------------------------------------------------------------ helpers */

const char *kinesis_stream_name(const char *name_or_arn)
{
	const char *name = name_or_arn;

	if (!name || !*name)
		return NULL;
	if (strncmp(name, "arn:", 4) == 0) {
		const char *p = strstr(name, ":stream/");
		if (!p)
			return NULL;
		name = p + strlen(":stream/");
		/* A consumer ARN (".../stream/x/consumer/y:1") is not a stream. */
		if (strchr(name, '/'))
			return NULL;
	}
	if (!*name || strlen(name) > KINESIS_STREAM_NAME_MAX)
		return NULL;
	return name;
}

/* The string value of key in obj, or NULL when absent, null or not a string. */
static const char *get_str(json_object *obj, const char *key, size_t *ret_len)
{
	json_object *v;

	if (!obj || !json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	if (ret_len)
		*ret_len = (size_t)json_object_get_string_len(v);
	return json_object_get_string(v);
}

/* The integer value of key, or def when absent or not a number. */
static int64_t get_i64(json_object *obj, const char *key, int64_t def)
{
	json_object *v;

	if (!obj || !json_object_object_get_ex(obj, key, &v))
		return def;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return def;
	return json_object_get_int64(v);
}

static json_object *get_obj(json_object *obj, const char *key, json_type type)
{
	json_object *v;

	if (!obj || !json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, type))
		return NULL;
	return v;
}

/* Copies an optional string field into a fixed buffer; too long is KL_EPARSE. */
static enum kl_err copy_field(char *dst, size_t size, json_object *obj, const char *key,
			      int required)
{
	size_t len = 0;
	const char *s = get_str(obj, key, &len);

	if (!s) {
		dst[0] = '\0';
		return required ? KL_EPARSE : KL_OK;
	}
	if (len >= size)
		return KL_EPARSE;
	memcpy(dst, s, len);
	dst[len] = '\0';
	return KL_OK;
}

/*
 * Converts epoch seconds (a JSON number such as 1795291116.903, or an
 * integer) to epoch ms. The number's text is read exactly (json-c keeps the
 * original text of doubles) so no binary rounding creeps in; the fraction
 * is truncated to ms. Exponent forms fall back to the double value.
 */
static enum kl_err epoch_ms(json_object *v, int64_t *ret_ms)
{
	const char *s, *p;
	int64_t secs = 0, ms = 0;
	int neg = 0, digits = 0;

	if (json_object_is_type(v, json_type_int)) {
		*ret_ms = json_object_get_int64(v) * 1000;
		return KL_OK;
	}
	if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_string))
		return KL_EPARSE;
	s = json_object_get_string(v);
	p = s;
	if (*p == '-') {
		neg = 1;
		p++;
	}
	for (; *p >= '0' && *p <= '9'; p++, digits++) {
		if (secs > (INT64_MAX / 1000 - 9) / 10)
			return KL_EPARSE;
		secs = secs * 10 + (*p - '0');
	}
	if (*p == '.') {
		int n = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, n++)
			if (n < 3)
				ms = ms * 10 + (*p - '0');
		for (; n < 3; n++)
			ms *= 10;
	}
	if (*p == 'e' || *p == 'E' || digits == 0) {
		if (!json_object_is_type(v, json_type_double))
			return KL_EPARSE;
		double d = json_object_get_double(v) * 1000.0;
		if (!(d > -9.2e18 && d < 9.2e18))
			return KL_EPARSE;
		*ret_ms = (int64_t)d;
		return KL_OK;
	}
	if (*p != '\0')
		return KL_EPARSE;
	*ret_ms = neg ? -(secs * 1000 + ms) : secs * 1000 + ms;
	return KL_OK;
}

/* A JSON number holding epoch seconds with ms precision, text kept exact. */
static json_object *new_epoch_seconds(int64_t ms)
{
	char text[32];
	int64_t secs = ms / 1000, frac = ms % 1000;

	if (frac < 0) {
		frac += 1000;
		secs -= 1;
	}
	snprintf(text, sizeof(text), "%" PRId64 ".%03" PRId64, secs, frac);
	return json_object_new_double_s((double)ms / 1000.0, text);
}

/* Adds key: string; returns nonzero on ENOMEM. */
static int add_str(json_object *obj, const char *key, const char *val)
{
	json_object *s = json_object_new_string(val);

	if (!s)
		return 1;
	if (json_object_object_add(obj, key, s) != 0) {
		json_object_put(s);
		return 1;
	}
	return 0;
}

static int add_int(json_object *obj, const char *key, int64_t val)
{
	json_object *n = json_object_new_int64(val);

	if (!n)
		return 1;
	if (json_object_object_add(obj, key, n) != 0) {
		json_object_put(n);
		return 1;
	}
	return 0;
}

/* A new request object naming the stream, or NULL (*ret_err says why). */
static json_object *new_stream_req(const char *stream, enum kl_err *ret_err)
{
	const char *name = kinesis_stream_name(stream);
	json_object *req;

	if (!name) {
		*ret_err = KL_EINVAL;
		return NULL;
	}
	req = json_object_new_object();
	if (!req || add_str(req, "StreamName", name)) {
		json_object_put(req);
		*ret_err = KL_ENOMEM;
		return NULL;
	}
	return req;
}

/* Sends req (consumed) as operation op. On KL_OK *ret_resp is the caller's. */
static enum kl_err call(struct aws_client *c, const char *op, json_object *req,
			json_object **ret_resp, struct kl_errinfo *info)
{
	json_object *resp = NULL;
	enum kl_err err;

	err = aws_json_call(c, KINESIS_TARGET_PREFIX, KINESIS_JSON_VERSION, op, req, &resp, info);
	json_object_put(req);
	if (err) {
		log_debug("kinesis: %s failed: %s %s", op, kl_strerror(err),
			  info ? info->aws_code : "");
		return err;
	}
	if (!json_object_is_type(resp, json_type_object)) {
		json_object_put(resp);
		return kl_errinfo_set(info, KL_EPARSE, "kinesis: %s: response is not a JSON object", op);
	}
	*ret_resp = resp;
	return KL_OK;
}

/* Sends a request whose answer carries nothing we need. */
static enum kl_err call_noresult(struct aws_client *c, const char *op, json_object *req,
				 struct kl_errinfo *info)
{
	json_object *resp = NULL;
	enum kl_err err = call(c, op, req, &resp, info);

	json_object_put(resp);
	return err;
}

static enum kl_err build_failed(enum kl_err err, const char *op, struct kl_errinfo *info)
{
	if (err == KL_ENOMEM)
		return kl_errinfo_set(info, err, "kinesis: %s: out of memory", op);
	return kl_errinfo_set(info, err, "kinesis: %s: invalid arguments", op);
}

static enum kl_err parse_failed(enum kl_err err, const char *op, struct kl_errinfo *info)
{
	if (err == KL_ENOMEM)
		return kl_errinfo_set(info, err, "kinesis: %s: out of memory", op);
	return kl_errinfo_set(info, err, "kinesis: %s: unexpected response", op);
}

/* ------------------------------------------------------------ hash keys */

enum kl_err kinesis_hash_key_parse(const char *dec, struct kinesis_hash_key *ret_key)
{
	struct kinesis_hash_key k = { { 0, 0, 0, 0 } };
	size_t n = 0;

	if (!dec || !*dec)
		return KL_EINVAL;
	for (const char *p = dec; *p; p++, n++) {
		uint64_t carry;
		if (*p < '0' || *p > '9' || n >= KINESIS_HASH_KEY_MAX)
			return KL_EINVAL;
		carry = (uint64_t)(*p - '0');
		for (int i = 3; i >= 0; i--) {
			uint64_t v = (uint64_t)k.w[i] * 10 + carry;
			k.w[i] = (uint32_t)v;
			carry = v >> 32;
		}
		if (carry)
			return KL_EINVAL;
	}
	*ret_key = k;
	return KL_OK;
}

void kinesis_hash_key_format(const struct kinesis_hash_key *key, char out[KINESIS_HASH_KEY_MAX + 1])
{
	struct kinesis_hash_key k = *key;
	char rev[KINESIS_HASH_KEY_MAX + 1];
	size_t n = 0;

	do {
		uint64_t rem = 0;
		for (int i = 0; i < 4; i++) {
			uint64_t v = (rem << 32) | k.w[i];
			k.w[i] = (uint32_t)(v / 10);
			rem = v % 10;
		}
		rev[n++] = (char)('0' + rem);
	} while (k.w[0] | k.w[1] | k.w[2] | k.w[3]);
	for (size_t i = 0; i < n; i++)
		out[i] = rev[n - 1 - i];
	out[n] = '\0';
}

int kinesis_hash_key_cmp(const struct kinesis_hash_key *a, const struct kinesis_hash_key *b)
{
	for (int i = 0; i < 4; i++)
		if (a->w[i] != b->w[i])
			return a->w[i] < b->w[i] ? -1 : 1;
	return 0;
}

void kinesis_hash_key_mid(const struct kinesis_hash_key *a, const struct kinesis_hash_key *b,
			  struct kinesis_hash_key *ret_mid)
{
	struct kinesis_hash_key s;
	uint64_t carry = 0;
	uint32_t top;

	for (int i = 3; i >= 0; i--) {
		uint64_t v = (uint64_t)a->w[i] + b->w[i] + carry;
		s.w[i] = (uint32_t)v;
		carry = v >> 32;
	}
	/* Shift the 129-bit sum right by one; the carry becomes the top bit. */
	top = (uint32_t)carry;
	for (int i = 0; i < 4; i++) {
		uint32_t low = s.w[i] & 1;
		s.w[i] = (s.w[i] >> 1) | (top << 31);
		top = low;
	}
	*ret_mid = s;
}

/* ------------------------------------------------------- stream summary */

static enum kinesis_stream_status parse_status(const char *s)
{
	if (!s)
		return KINESIS_STREAM_UNKNOWN;
	if (strcmp(s, "ACTIVE") == 0)
		return KINESIS_STREAM_ACTIVE;
	if (strcmp(s, "CREATING") == 0)
		return KINESIS_STREAM_CREATING;
	if (strcmp(s, "DELETING") == 0)
		return KINESIS_STREAM_DELETING;
	if (strcmp(s, "UPDATING") == 0)
		return KINESIS_STREAM_UPDATING;
	return KINESIS_STREAM_UNKNOWN;
}

static enum kinesis_encryption parse_encryption(const char *s)
{
	return s && strcmp(s, "KMS") == 0 ? KINESIS_ENCRYPTION_KMS : KINESIS_ENCRYPTION_NONE;
}

enum kl_err kinesis_req_describe_stream_summary(const char *stream, json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req = new_stream_req(stream, &err);

	if (!req)
		return err;
	*ret_req = req;
	return KL_OK;
}

enum kl_err kinesis_parse_describe_stream_summary(json_object *resp,
						  struct kinesis_stream_summary *ret_summary)
{
	struct kinesis_stream_summary s;
	json_object *d = get_obj(resp, "StreamDescriptionSummary", json_type_object);
	json_object *v, *mode;

	memset(&s, 0, sizeof(s));
	if (!d)
		return KL_EPARSE;
	if (copy_field(s.stream_name, sizeof(s.stream_name), d, "StreamName", 1) ||
	    copy_field(s.stream_arn, sizeof(s.stream_arn), d, "StreamARN", 0))
		return KL_EPARSE;
	s.status = parse_status(get_str(d, "StreamStatus", NULL));
	s.open_shard_count = (int)get_i64(d, "OpenShardCount", 0);
	s.retention_hours = (int)get_i64(d, "RetentionPeriodHours", 0);
	s.consumer_count = (int)get_i64(d, "ConsumerCount", -1);
	if (json_object_object_get_ex(d, "StreamCreationTimestamp", &v) && v &&
	    epoch_ms(v, &s.created_ms) != KL_OK)
		return KL_EPARSE;
	s.encryption = parse_encryption(get_str(d, "EncryptionType", NULL));
	mode = get_obj(d, "StreamModeDetails", json_type_object);
	if (mode) {
		const char *m = get_str(mode, "StreamMode", NULL);
		s.on_demand = m && strcmp(m, "ON_DEMAND") == 0;
	}
	*ret_summary = s;
	return KL_OK;
}

enum kl_err kinesis_describe_stream_summary(struct aws_client *c, const char *stream,
					    struct kinesis_stream_summary *ret_summary,
					    struct kl_errinfo *info)
{
	static const char op[] = "DescribeStreamSummary";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = kinesis_req_describe_stream_summary(stream, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	if (err)
		return err;
	err = kinesis_parse_describe_stream_summary(resp, ret_summary);
	json_object_put(resp);
	return err ? parse_failed(err, op, info) : KL_OK;
}

enum kl_err kinesis_wait_active(struct aws_client *c, const char *stream, long timeout_ms,
				struct kinesis_stream_summary *ret_summary,
				struct kl_errinfo *info)
{
	int64_t deadline = kl_mono_ms() + timeout_ms;
	long delay = 50;

	for (;;) {
		struct kinesis_stream_summary s;
		enum kl_err err = kinesis_describe_stream_summary(c, stream, &s, info);

		if (err == KL_OK && s.status == KINESIS_STREAM_ACTIVE) {
			if (ret_summary)
				*ret_summary = s;
			return KL_OK;
		}
		if (err == KL_OK && s.status == KINESIS_STREAM_DELETING)
			return kl_errinfo_set(info, KL_ESTATE, "kinesis: stream '%s' is being deleted",
					      stream);
		if (err && err != KL_ENOTFOUND)
			return err;
		if (kl_mono_ms() + delay > deadline) {
			if (err)
				return err;
			return kl_errinfo_set(info, KL_ETIMEOUT,
					      "kinesis: stream '%s' not ACTIVE after %ld ms",
					      stream, timeout_ms);
		}
		kl_sleep_ms(delay);
		if (delay < 1000)
			delay *= 2;
	}
}

/* ------------------------------------------------------------ ListShards */

enum kl_err kinesis_req_list_shards(const char *stream, const struct kinesis_list_shards_opts *opts,
				    const char *next_token, json_object **ret_req)
{
	static const struct kinesis_list_shards_opts no_opts;
	enum kl_err err = KL_OK;
	json_object *req;

	if (!opts)
		opts = &no_opts;
	if (opts->max_results < 0 || opts->max_results > 10000)
		return KL_EINVAL;
	if (next_token) {
		/* A continuation page: the token alone names the stream. */
		if (!*next_token)
			return KL_EINVAL;
		req = json_object_new_object();
		if (!req || add_str(req, "NextToken", next_token) ||
		    (opts->max_results && add_int(req, "MaxResults", opts->max_results)))
			goto nomem;
		*ret_req = req;
		return KL_OK;
	}
	req = new_stream_req(stream, &err);
	if (!req)
		return err;
	if (opts->exclusive_start_shard_id &&
	    add_str(req, "ExclusiveStartShardId", opts->exclusive_start_shard_id))
		goto nomem;
	if (opts->max_results && add_int(req, "MaxResults", opts->max_results))
		goto nomem;
	if (opts->filter_type) {
		json_object *f = json_object_new_object();
		if (!f)
			goto nomem;
		if (json_object_object_add(req, "ShardFilter", f) != 0) {
			json_object_put(f);
			goto nomem;
		}
		if (add_str(f, "Type", opts->filter_type))
			goto nomem;
		if (opts->filter_shard_id && add_str(f, "ShardId", opts->filter_shard_id))
			goto nomem;
		if (strstr(opts->filter_type, "TIMESTAMP")) {
			json_object *ts = new_epoch_seconds(opts->filter_timestamp_ms);
			if (!ts)
				goto nomem;
			if (json_object_object_add(f, "Timestamp", ts) != 0) {
				json_object_put(ts);
				goto nomem;
			}
		}
	}
	*ret_req = req;
	return KL_OK;
nomem:
	json_object_put(req);
	return KL_ENOMEM;
}

static enum kl_err parse_shard(json_object *o, struct kinesis_shard *s)
{
	json_object *hash = get_obj(o, "HashKeyRange", json_type_object);
	json_object *seq = get_obj(o, "SequenceNumberRange", json_type_object);

	if (!json_object_is_type(o, json_type_object) || !hash || !seq)
		return KL_EPARSE;
	if (copy_field(s->shard_id, sizeof(s->shard_id), o, "ShardId", 1) ||
	    copy_field(s->parent_shard_id, sizeof(s->parent_shard_id), o, "ParentShardId", 0) ||
	    copy_field(s->adjacent_parent_shard_id, sizeof(s->adjacent_parent_shard_id), o,
		       "AdjacentParentShardId", 0) ||
	    copy_field(s->starting_hash_key, sizeof(s->starting_hash_key), hash, "StartingHashKey", 1) ||
	    copy_field(s->ending_hash_key, sizeof(s->ending_hash_key), hash, "EndingHashKey", 1) ||
	    copy_field(s->starting_sequence_number, sizeof(s->starting_sequence_number), seq,
		       "StartingSequenceNumber", 1) ||
	    copy_field(s->ending_sequence_number, sizeof(s->ending_sequence_number), seq,
		       "EndingSequenceNumber", 0))
		return KL_EPARSE;
	return KL_OK;
}

enum kl_err kinesis_parse_list_shards(json_object *resp, struct kinesis_shard **ret_shards,
				      size_t *ret_n, char **ret_next_token)
{
	json_object *arr = get_obj(resp, "Shards", json_type_array);
	struct kinesis_shard *shards = NULL;
	const char *token;
	char *next = NULL;
	size_t n;

	if (!arr)
		return KL_EPARSE;
	n = json_object_array_length(arr);
	if (n > 0) {
		shards = calloc(n, sizeof(*shards));
		if (!shards)
			return KL_ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		if (parse_shard(json_object_array_get_idx(arr, i), &shards[i]) != KL_OK) {
			free(shards);
			return KL_EPARSE;
		}
	}
	token = get_str(resp, "NextToken", NULL);
	if (token && *token) {
		next = strdup(token);
		if (!next) {
			free(shards);
			return KL_ENOMEM;
		}
	}
	*ret_shards = shards;
	*ret_n = n;
	*ret_next_token = next;
	return KL_OK;
}

#define LIST_SHARDS_MAX_PAGES 1000

enum kl_err kinesis_list_shards(struct aws_client *c, const char *stream,
				const struct kinesis_list_shards_opts *opts,
				struct kinesis_shard **ret_shards, size_t *ret_n,
				struct kl_errinfo *info)
{
	static const char op[] = "ListShards";
	struct kinesis_shard *all = NULL;
	size_t n_all = 0;
	char *token = NULL;
	enum kl_err err = KL_OK;

	for (int page = 0;; page++) {
		json_object *req = NULL, *resp = NULL;
		struct kinesis_shard *shards = NULL;
		char *next = NULL;
		size_t n = 0;

		if (page >= LIST_SHARDS_MAX_PAGES) {
			err = kl_errinfo_set(info, KL_EPARSE, "kinesis: %s: more than %d pages", op,
					     LIST_SHARDS_MAX_PAGES);
			break;
		}
		err = kinesis_req_list_shards(stream, opts, token, &req);
		if (err) {
			err = build_failed(err, op, info);
			break;
		}
		err = call(c, op, req, &resp, info);
		if (err)
			break;
		err = kinesis_parse_list_shards(resp, &shards, &n, &next);
		json_object_put(resp);
		if (err) {
			err = parse_failed(err, op, info);
			break;
		}
		if (n > 0) {
			struct kinesis_shard *grown = realloc(all, (n_all + n) * sizeof(*all));
			if (!grown) {
				free(shards);
				free(next);
				err = kl_errinfo_set(info, KL_ENOMEM, "kinesis: %s: out of memory", op);
				break;
			}
			all = grown;
			memcpy(all + n_all, shards, n * sizeof(*all));
			n_all += n;
		}
		free(shards);
		free(token);
		token = next;
		if (!token)
			break;
	}
	free(token);
	if (err) {
		free(all);
		return err;
	}
	*ret_shards = all;
	*ret_n = n_all;
	return KL_OK;
}

/* ------------------------------------------------------ GetShardIterator */

const char *kinesis_iterator_type_name(enum kinesis_iterator_type type)
{
	switch (type) {
	case KINESIS_ITER_TRIM_HORIZON:
		return "TRIM_HORIZON";
	case KINESIS_ITER_LATEST:
		return "LATEST";
	case KINESIS_ITER_AT_SEQUENCE_NUMBER:
		return "AT_SEQUENCE_NUMBER";
	case KINESIS_ITER_AFTER_SEQUENCE_NUMBER:
		return "AFTER_SEQUENCE_NUMBER";
	case KINESIS_ITER_AT_TIMESTAMP:
		return "AT_TIMESTAMP";
	}
	return "?";
}

enum kl_err kinesis_req_get_shard_iterator(const char *stream, const char *shard_id,
					   const struct kinesis_position *pos,
					   json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req;
	int with_seq;

	if (!shard_id || !*shard_id || !pos)
		return KL_EINVAL;
	with_seq = pos->type == KINESIS_ITER_AT_SEQUENCE_NUMBER ||
		   pos->type == KINESIS_ITER_AFTER_SEQUENCE_NUMBER;
	if (with_seq && (!pos->sequence_number || !*pos->sequence_number))
		return KL_EINVAL;
	if ((unsigned)pos->type > KINESIS_ITER_AT_TIMESTAMP)
		return KL_EINVAL;
	req = new_stream_req(stream, &err);
	if (!req)
		return err;
	if (add_str(req, "ShardId", shard_id) ||
	    add_str(req, "ShardIteratorType", kinesis_iterator_type_name(pos->type)))
		goto nomem;
	if (with_seq && add_str(req, "StartingSequenceNumber", pos->sequence_number))
		goto nomem;
	if (pos->type == KINESIS_ITER_AT_TIMESTAMP) {
		json_object *ts = new_epoch_seconds(pos->timestamp_ms);
		if (!ts)
			goto nomem;
		if (json_object_object_add(req, "Timestamp", ts) != 0) {
			json_object_put(ts);
			goto nomem;
		}
	}
	*ret_req = req;
	return KL_OK;
nomem:
	json_object_put(req);
	return KL_ENOMEM;
}

enum kl_err kinesis_parse_get_shard_iterator(json_object *resp, char **ret_iterator)
{
	const char *it = get_str(resp, "ShardIterator", NULL);
	char *copy;

	if (!it || !*it)
		return KL_EPARSE;
	copy = strdup(it);
	if (!copy)
		return KL_ENOMEM;
	*ret_iterator = copy;
	return KL_OK;
}

enum kl_err kinesis_get_shard_iterator(struct aws_client *c, const char *stream,
				       const char *shard_id, const struct kinesis_position *pos,
				       char **ret_iterator, struct kl_errinfo *info)
{
	static const char op[] = "GetShardIterator";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = kinesis_req_get_shard_iterator(stream, shard_id, pos, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	if (err)
		return err;
	err = kinesis_parse_get_shard_iterator(resp, ret_iterator);
	json_object_put(resp);
	return err ? parse_failed(err, op, info) : KL_OK;
}

/* ------------------------------------------------------------ GetRecords */

enum kl_err kinesis_req_get_records(const char *iterator, int limit, json_object **ret_req)
{
	json_object *req;

	if (!iterator || !*iterator || limit < 0 || limit > KINESIS_GET_RECORDS_MAX)
		return KL_EINVAL;
	if (limit == 0)
		limit = KINESIS_GET_RECORDS_MAX;
	req = json_object_new_object();
	if (!req || add_str(req, "ShardIterator", iterator) || add_int(req, "Limit", limit)) {
		json_object_put(req);
		return KL_ENOMEM;
	}
	*ret_req = req;
	return KL_OK;
}

void kinesis_records_free(struct kinesis_records *r)
{
	free(r);
}

/*
 * The result is built in two passes over the same code: the sizing pass
 * validates the response and adds up how many bytes the arena needs, the
 * filling pass copies strings and decodes data into it. So there is exactly
 * one allocation and no pointer is ever invalidated by a realloc.
 */
#define ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))

struct arena {
	char *base;                   /* NULL in the sizing pass */
	size_t used;
};

static const char *arena_str(struct arena *a, const char *s, size_t len)
{
	char *p;

	if (!a->base) {
		a->used += len + 1;
		return NULL;
	}
	p = a->base + a->used;
	memcpy(p, s, len);
	p[len] = '\0';
	a->used += len + 1;
	return p;
}

/* Decodes base64 b64[0..len) into the arena; sizes by the upper bound. */
static enum kl_err arena_b64(struct arena *a, const char *b64, size_t len, const uint8_t **ret,
			     size_t *ret_len)
{
	size_t n;

	if (!a->base) {
		a->used += (len / 4 + 1) * 3;
		return KL_OK;
	}
	if (kl_b64_decode(b64, len, (uint8_t *)a->base + a->used, &n) != KL_OK)
		return KL_EPARSE;
	*ret = (const uint8_t *)a->base + a->used;
	*ret_len = n;
	a->used += n;
	return KL_OK;
}

static enum kl_err records_pass(json_object *resp, struct kinesis_records *r, struct arena *a)
{
	json_object *recs = NULL, *children = NULL, *v;
	const char *s;
	size_t len, n_recs = 0, n_children = 0;

	if (json_object_object_get_ex(resp, "Records", &recs) && recs) {
		if (!json_object_is_type(recs, json_type_array))
			return KL_EPARSE;
		n_recs = json_object_array_length(recs);
	}
	for (size_t i = 0; i < n_recs; i++) {
		json_object *o = json_object_array_get_idx(recs, i);
		struct kinesis_record rec = { 0 };
		const char *seq, *pk, *data;
		size_t seq_len, pk_len, data_len;

		if (!json_object_is_type(o, json_type_object))
			return KL_EPARSE;
		seq = get_str(o, "SequenceNumber", &seq_len);
		pk = get_str(o, "PartitionKey", &pk_len);
		data = get_str(o, "Data", &data_len);
		if (!seq || !pk || !data || seq_len == 0)
			return KL_EPARSE;
		rec.sequence_number = arena_str(a, seq, seq_len);
		rec.partition_key = arena_str(a, pk, pk_len);
		if (arena_b64(a, data, data_len, &rec.data, &rec.data_len) != KL_OK)
			return KL_EPARSE;
		if (json_object_object_get_ex(o, "ApproximateArrivalTimestamp", &v) && v &&
		    epoch_ms(v, &rec.arrival_ms) != KL_OK)
			return KL_EPARSE;
		rec.encryption = parse_encryption(get_str(o, "EncryptionType", NULL));
		if (a->base) {
			r->records[i] = rec;
			r->data_bytes += rec.data_len;
		}
	}

	s = get_str(resp, "NextShardIterator", &len);
	if (s && len > 0) {
		const char *it = arena_str(a, s, len);
		if (a->base)
			r->next_iterator = it;
	}

	if (json_object_object_get_ex(resp, "ChildShards", &children) && children) {
		if (!json_object_is_type(children, json_type_array))
			return KL_EPARSE;
		n_children = json_object_array_length(children);
	}
	for (size_t i = 0; i < n_children; i++) {
		json_object *o = json_object_array_get_idx(children, i);
		json_object *parents = get_obj(o, "ParentShards", json_type_array);
		json_object *hash = get_obj(o, "HashKeyRange", json_type_object);
		struct kinesis_child_shard ch = { 0 };
		const char *id, *hs, *he;
		size_t id_len, hs_len = 0, he_len = 0, np;

		id = get_str(o, "ShardId", &id_len);
		if (!id || !id_len)
			return KL_EPARSE;
		ch.shard_id = arena_str(a, id, id_len);
		np = parents ? json_object_array_length(parents) : 0;
		if (np > KL_ARRAY_LEN(ch.parent_shard_ids))
			return KL_EPARSE;
		for (size_t j = 0; j < np; j++) {
			json_object *p = json_object_array_get_idx(parents, j);
			if (!json_object_is_type(p, json_type_string))
				return KL_EPARSE;
			ch.parent_shard_ids[j] = arena_str(a, json_object_get_string(p),
							   (size_t)json_object_get_string_len(p));
		}
		ch.n_parents = np;
		hs = get_str(hash, "StartingHashKey", &hs_len);
		he = get_str(hash, "EndingHashKey", &he_len);
		ch.starting_hash_key = arena_str(a, hs ? hs : "", hs ? hs_len : 0);
		ch.ending_hash_key = arena_str(a, he ? he : "", he ? he_len : 0);
		if (a->base)
			r->children[i] = ch;
	}

	if (!a->base) {
		r->n_records = n_recs;
		r->n_children = n_children;
	}
	r->millis_behind_latest = get_i64(resp, "MillisBehindLatest", -1);
	return KL_OK;
}

enum kl_err kinesis_parse_get_records(json_object *resp, struct kinesis_records **ret)
{
	struct kinesis_records sizing = { 0 }, *r;
	struct arena a = { NULL, 0 };
	size_t head, recs_off, children_off;
	char *block;
	enum kl_err err;

	if (!json_object_is_type(resp, json_type_object))
		return KL_EPARSE;
	err = records_pass(resp, &sizing, &a);
	if (err)
		return err;
	/* Layout: header | records[] | children[] | arena, each array start
	 * aligned for its type. */
	recs_off = ALIGN_UP(sizeof(*r), _Alignof(struct kinesis_record));
	children_off = ALIGN_UP(recs_off + sizing.n_records * sizeof(struct kinesis_record),
				_Alignof(struct kinesis_child_shard));
	head = children_off + sizing.n_children * sizeof(struct kinesis_child_shard);
	block = malloc(head + a.used + 1);
	if (!block)
		return KL_ENOMEM;
	r = (struct kinesis_records *)block;
	memset(r, 0, sizeof(*r));
	r->n_records = sizing.n_records;
	r->records = r->n_records ? (struct kinesis_record *)(block + recs_off) : NULL;
	r->n_children = sizing.n_children;
	r->children = r->n_children ? (struct kinesis_child_shard *)(block + children_off) : NULL;
	a.base = block + head;
	a.used = 0;
	err = records_pass(resp, r, &a);
	if (err) {
		free(block);
		return err;
	}
	*ret = r;
	return KL_OK;
}

enum kl_err kinesis_get_records(struct aws_client *c, const char *iterator, int limit,
				struct kinesis_records **ret, struct kl_errinfo *info)
{
	static const char op[] = "GetRecords";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = kinesis_req_get_records(iterator, limit, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	if (err)
		return err;
	err = kinesis_parse_get_records(resp, ret);
	json_object_put(resp);
	return err ? parse_failed(err, op, info) : KL_OK;
}

/* ------------------------------------------------------------ PutRecords */

enum kl_err kinesis_req_put_records(const char *stream, const struct kinesis_put_entry *entries,
				    size_t n, json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req, *arr;
	size_t max_len = 0;
	char *b64;

	if (n == 0 || n > KINESIS_PUT_RECORDS_MAX || !entries)
		return KL_EINVAL;
	for (size_t i = 0; i < n; i++) {
		const struct kinesis_put_entry *e = &entries[i];
		size_t pk_len = e->partition_key ? strlen(e->partition_key) : 0;
		if (pk_len == 0 || pk_len > KINESIS_PARTITION_KEY_MAX ||
		    e->data_len > KINESIS_RECORD_DATA_MAX || (e->data_len && !e->data))
			return KL_EINVAL;
		if (e->explicit_hash_key) {
			struct kinesis_hash_key k;
			if (kinesis_hash_key_parse(e->explicit_hash_key, &k) != KL_OK)
				return KL_EINVAL;
		}
		if (e->data_len > max_len)
			max_len = e->data_len;
	}
	req = new_stream_req(stream, &err);
	if (!req)
		return err;
	b64 = malloc(KL_B64_ENCLEN(max_len) + 1);
	arr = json_object_new_array_ext((int)n);
	if (!b64 || !arr || json_object_object_add(req, "Records", arr) != 0) {
		json_object_put(arr);
		goto nomem;
	}
	for (size_t i = 0; i < n; i++) {
		const struct kinesis_put_entry *e = &entries[i];
		json_object *rec = json_object_new_object(), *d;

		if (!rec || json_object_array_add(arr, rec) != 0) {
			json_object_put(rec);
			goto nomem;
		}
		kl_b64_encode(e->data ? e->data : (const void *)"", e->data_len, b64);
		d = json_object_new_string_len(b64, (int)KL_B64_ENCLEN(e->data_len));
		if (!d || json_object_object_add(rec, "Data", d) != 0) {
			json_object_put(d);
			goto nomem;
		}
		if (add_str(rec, "PartitionKey", e->partition_key))
			goto nomem;
		if (e->explicit_hash_key && add_str(rec, "ExplicitHashKey", e->explicit_hash_key))
			goto nomem;
	}
	free(b64);
	*ret_req = req;
	return KL_OK;
nomem:
	free(b64);
	json_object_put(req);
	return KL_ENOMEM;
}

/* Copies a string field, truncating (for messages that are only informative). */
static void copy_trunc(char *dst, size_t size, json_object *obj, const char *key)
{
	size_t len = 0;
	const char *s = get_str(obj, key, &len);

	if (!s)
		len = 0;
	if (len >= size)
		len = size - 1;
	if (len)
		memcpy(dst, s, len);
	dst[len] = '\0';
}

enum kl_err kinesis_parse_put_records(json_object *resp, size_t expected_n,
				      struct kinesis_put_results **ret)
{
	json_object *arr = get_obj(resp, "Records", json_type_array);
	struct kinesis_put_results *res;
	size_t n, failed = 0;

	if (!arr)
		return KL_EPARSE;
	n = json_object_array_length(arr);
	if (n != expected_n)
		return KL_EPARSE;
	res = calloc(1, sizeof(*res) + n * sizeof(res->r[0]));
	if (!res)
		return KL_ENOMEM;
	res->n = n;
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(arr, i);
		struct kinesis_put_result *r = &res->r[i];

		if (!json_object_is_type(o, json_type_object))
			goto bad;
		copy_trunc(r->error_code, sizeof(r->error_code), o, "ErrorCode");
		copy_trunc(r->error_message, sizeof(r->error_message), o, "ErrorMessage");
		if (r->error_code[0]) {
			failed++;
			continue;
		}
		if (copy_field(r->sequence_number, sizeof(r->sequence_number), o, "SequenceNumber", 1) ||
		    copy_field(r->shard_id, sizeof(r->shard_id), o, "ShardId", 1))
			goto bad;
	}
	/* Trust the per-record outcome; FailedRecordCount must agree with it. */
	if ((size_t)get_i64(resp, "FailedRecordCount", 0) != failed)
		goto bad;
	res->failed_count = failed;
	*ret = res;
	return KL_OK;
bad:
	free(res);
	return KL_EPARSE;
}

enum kl_err kinesis_put_records(struct aws_client *c, const char *stream,
				const struct kinesis_put_entry *entries, size_t n,
				struct kinesis_put_results **ret, struct kl_errinfo *info)
{
	static const char op[] = "PutRecords";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = kinesis_req_put_records(stream, entries, n, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	if (err)
		return err;
	err = kinesis_parse_put_records(resp, n, ret);
	json_object_put(resp);
	return err ? parse_failed(err, op, info) : KL_OK;
}

/* ------------------------------------------------------ stream management */

enum kl_err kinesis_req_create_stream(const char *stream, int shard_count, json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req;

	if (shard_count < 1)
		return KL_EINVAL;
	req = new_stream_req(stream, &err);
	if (!req)
		return err;
	if (add_int(req, "ShardCount", shard_count)) {
		json_object_put(req);
		return KL_ENOMEM;
	}
	*ret_req = req;
	return KL_OK;
}

enum kl_err kinesis_req_delete_stream(const char *stream, json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req = new_stream_req(stream, &err);

	if (!req)
		return err;
	*ret_req = req;
	return KL_OK;
}

enum kl_err kinesis_req_split_shard(const char *stream, const char *shard_id,
				    const char *new_starting_hash_key, json_object **ret_req)
{
	struct kinesis_hash_key k;
	enum kl_err err = KL_OK;
	json_object *req;

	if (!shard_id || !*shard_id || !new_starting_hash_key ||
	    kinesis_hash_key_parse(new_starting_hash_key, &k) != KL_OK)
		return KL_EINVAL;
	req = new_stream_req(stream, &err);
	if (!req)
		return err;
	if (add_str(req, "ShardToSplit", shard_id) ||
	    add_str(req, "NewStartingHashKey", new_starting_hash_key)) {
		json_object_put(req);
		return KL_ENOMEM;
	}
	*ret_req = req;
	return KL_OK;
}

enum kl_err kinesis_req_merge_shards(const char *stream, const char *shard_id,
				     const char *adjacent_shard_id, json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req;

	if (!shard_id || !*shard_id || !adjacent_shard_id || !*adjacent_shard_id)
		return KL_EINVAL;
	req = new_stream_req(stream, &err);
	if (!req)
		return err;
	if (add_str(req, "ShardToMerge", shard_id) ||
	    add_str(req, "AdjacentShardToMerge", adjacent_shard_id)) {
		json_object_put(req);
		return KL_ENOMEM;
	}
	*ret_req = req;
	return KL_OK;
}

enum kl_err kinesis_create_stream(struct aws_client *c, const char *stream, int shard_count,
				  struct kl_errinfo *info)
{
	static const char op[] = "CreateStream";
	struct kl_errinfo scratch;
	json_object *req = NULL;
	enum kl_err err;

	if (!info)
		info = &scratch;
	err = kinesis_req_create_stream(stream, shard_count, &req);
	if (err)
		return build_failed(err, op, info);
	err = call_noresult(c, op, req, info);
	/* ResourceInUseException here can only mean the name is taken. */
	if (err == KL_ESTATE && strcmp(info->aws_code, "ResourceInUseException") == 0)
		err = KL_EEXISTS;
	return err;
}

enum kl_err kinesis_delete_stream(struct aws_client *c, const char *stream,
				  struct kl_errinfo *info)
{
	static const char op[] = "DeleteStream";
	json_object *req = NULL;
	enum kl_err err;

	err = kinesis_req_delete_stream(stream, &req);
	if (err)
		return build_failed(err, op, info);
	return call_noresult(c, op, req, info);
}

enum kl_err kinesis_split_shard(struct aws_client *c, const char *stream, const char *shard_id,
				const char *new_starting_hash_key, struct kl_errinfo *info)
{
	static const char op[] = "SplitShard";
	json_object *req = NULL;
	enum kl_err err;

	err = kinesis_req_split_shard(stream, shard_id, new_starting_hash_key, &req);
	if (err)
		return build_failed(err, op, info);
	return call_noresult(c, op, req, info);
}

enum kl_err kinesis_merge_shards(struct aws_client *c, const char *stream, const char *shard_id,
				 const char *adjacent_shard_id, struct kl_errinfo *info)
{
	static const char op[] = "MergeShards";
	json_object *req = NULL;
	enum kl_err err;

	err = kinesis_req_merge_shards(stream, shard_id, adjacent_shard_id, &req);
	if (err)
		return build_failed(err, op, info);
	return call_noresult(c, op, req, info);
}
