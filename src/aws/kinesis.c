/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kinesis.c: Kinesis Data Streams over JSON 1.1. Builders make request
 * objects, parsers turn responses into plain C structs; the calls glue the
 * two to aws_json_call(), which signs, retries and classifies errors
 * (GetRecords to aws_json_call_raw(): its body is scanned without json-c).
 * Invariants: GetRecords always carries Limit; a ListShards request never
 * holds NextToken together with StreamName; a GetRecords result is one
 * allocation (records' data live in its arena); ret_* are written only on
 * success.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
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
 * GetRecords responses are read by a dedicated scanner straight from the
 * body bytes, not through json-c: at up to 10 MB a call, json-c's tokenizer
 * and the tree it builds cost more than everything else together. One pass
 * over the body fills the result; base64 is decoded straight into it.
 *
 * What it accepts is strict JSON (RFC 8259) plus these rules:
 *  - the body is one object. Records and ChildShards are arrays or null;
 *    NextShardIterator is a string or null ("", null and absent all mean
 *    the shard is closed and fully read); MillisBehindLatest is a number or
 *    null (-1 when null or absent);
 *  - a record is an object with SequenceNumber (a non-empty string),
 *    PartitionKey and Data (strings; Data is base64, padded or not),
 *    ApproximateArrivalTimestamp (a number or null: epoch seconds, made ms
 *    exactly from the digits, truncated toward zero; 0 when null or absent)
 *    and EncryptionType (a string or null; "KMS" or anything else = none);
 *  - keys come in any order and may be escaped; a known key twice in one
 *    object is an error. Unknown keys may hold any JSON value, which is
 *    checked and skipped (nested up to SCAN_MAX_DEPTH);
 *  - strings are unescaped (\uXXXX as UTF-8, surrogate pairs joined; a lone
 *    surrogate is an error in a string that is kept); other bytes from 0x20
 *    up are copied as they are.
 * It never reads outside body[0, len), whatever the bytes.
 *
 * Memory: one block holds the result header and an arena. It starts at the
 * body's size (no decoded string or data is longer than its JSON text) and
 * would grow if it had to. While scanning, records and child shards wait in
 * side arrays that refer to the arena by offset, so growing the block moves
 * nothing that matters; at the end the block is cut to size and they are
 * written behind the arena as pointers: header | arena | records | children.
 */
#define ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))
#define SCAN_ARENA_OFF ALIGN_UP(sizeof(struct kinesis_records), _Alignof(max_align_t))
#define SCAN_MAX_DEPTH 64          /* a skipped value nests fewer levels than this */
#define SCAN_NONE SIZE_MAX         /* "no string" as an arena offset */

struct scan_record {
	size_t seq, pk, data;      /* arena offsets */
	size_t data_len;
	int64_t arrival_ms;
	enum kinesis_encryption encryption;
};

struct scan_child {
	size_t shard_id, parents[2], n_parents;  /* arena offsets */
	size_t starting_hash_key, ending_hash_key;
};

struct scan {
	const char *body, *p, *end;     /* the input, the cursor */
	char *block;                    /* header space + arena (see above) */
	size_t arena_used, arena_cap;
	struct scan_record *recs;
	size_t n_recs, cap_recs;
	struct scan_child *children;
	size_t n_children, cap_children;
	char *scratch;                  /* an escaped Data string, unescaped */
	size_t scratch_cap;
	size_t next_iterator;           /* arena offset or SCAN_NONE */
	int64_t millis_behind_latest;
	const char *err_at, *err_what;  /* the first parse error */
};

struct scan_key {
	const char *name;
	size_t len;
};

#define SCAN_KEY(s) { s, sizeof(s) - 1 }

/* Records where and why parsing failed (the first failure wins). */
static enum kl_err scan_fail(struct scan *s, const char *at, const char *what)
{
	if (!s->err_what) {
		s->err_at = at;
		s->err_what = what;
	}
	return KL_EPARSE;
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The 4 hex digits at p (checked by lex_string()). */
static uint32_t hex4(const char *p)
{
	return (uint32_t)(hex_val(p[0]) << 12 | hex_val(p[1]) << 8 | hex_val(p[2]) << 4 |
			  hex_val(p[3]));
}

static void skip_ws(struct scan *s)
{
	const char *p = s->p;

	while (p < s->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	s->p = p;
}

/* Skips whitespace, then consumes c if it comes next. */
static int eat(struct scan *s, char c)
{
	skip_ws(s);
	if (s->p < s->end && *s->p == c) {
		s->p++;
		return 1;
	}
	return 0;
}

/* Consumes the literal lit (n bytes) if it comes next. */
static int eat_literal(struct scan *s, const char *lit, size_t n)
{
	if ((size_t)(s->end - s->p) >= n && memcmp(s->p, lit, n) == 0) {
		s->p += n;
		return 1;
	}
	return 0;
}

static int next_is(const struct scan *s, char c)
{
	return s->p < s->end && *s->p == c;
}

/* Room for n more arena bytes: the write position, or NULL (ENOMEM). */
static char *arena_reserve(struct scan *s, size_t n)
{
	if (n > s->arena_cap - s->arena_used) {
		size_t cap = s->arena_cap;
		char *block;

		while (n > cap - s->arena_used) {
			if (cap > SIZE_MAX / 4)
				return NULL;
			cap *= 2;
		}
		block = realloc(s->block, SCAN_ARENA_OFF + cap);
		if (!block)
			return NULL;
		s->block = block;
		s->arena_cap = cap;
	}
	return s->block + SCAN_ARENA_OFF + s->arena_used;
}

/* arr (cap elements of size bytes) grown to hold at least one more. */
static void *grow(void *arr, size_t *cap, size_t size)
{
	size_t n = *cap ? *cap * 2 : 64;
	void *a;

	if (n > SIZE_MAX / size)
		return NULL;
	a = realloc(arr, n * size);
	if (a)
		*cap = n;
	return a;
}

/*
 * Whether the 8 bytes of w hold a '"', a '\\' or a control character: the
 * classic "has a zero byte" test on w ^ '"', w ^ '\\' and on w - 0x20 (a
 * byte below 0x20 borrows into bit 7; bytes >= 0x80 are masked by ~w).
 * Exact as a yes/no answer, which is all lex_string() uses it for.
 */
static int word_has_special(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');

	return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w)) & highs ? 1 : 0;
}

/*
 * Lexes the string whose opening quote is at s->p: checks its escapes and
 * that it holds no control character, and leaves s->p after the closing
 * quote. *ret_raw and *ret_len: the text between the quotes, still escaped;
 * *ret_escaped: whether it holds a backslash.
 */
static enum kl_err lex_string(struct scan *s, const char **ret_raw, size_t *ret_len,
			      int *ret_escaped)
{
	const char *start = s->p + 1, *p = start, *end = s->end;
	int escaped = 0;

	for (;;) {
		unsigned char c;
		uint64_t w;

		/* Sequence numbers and keys are long runs of plain bytes:
		 * skip them 8 at a time (memcpy: p has no alignment), then
		 * go bytewise to the special byte, within the next 8. */
		while (end - p >= 8) {
			memcpy(&w, p, 8);
			if (word_has_special(w))
				break;
			p += 8;
		}
		while (p < end && (c = (unsigned char)*p) != '"' && c != '\\' && c >= 0x20)
			p++;
		if (p >= end)
			return scan_fail(s, s->p, "unterminated string");
		c = (unsigned char)*p;
		if (c == '"')
			break;
		if (c < 0x20)
			return scan_fail(s, p, "control character in string");
		escaped = 1;
		if (end - p < 2)
			return scan_fail(s, s->p, "unterminated string");
		switch (p[1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
			p += 2;
			break;
		case 'u':
			if (end - p < 6 || hex_val(p[2]) < 0 || hex_val(p[3]) < 0 ||
			    hex_val(p[4]) < 0 || hex_val(p[5]) < 0)
				return scan_fail(s, p, "bad \\u escape");
			p += 6;
			break;
		default:
			return scan_fail(s, p, "bad escape");
		}
	}
	*ret_raw = start;
	*ret_len = (size_t)(p - start);
	*ret_escaped = escaped;
	s->p = p + 1;
	return KL_OK;
}

/*
 * Unescapes raw[0, len) (lexed by lex_string()) into dst, which has room
 * for len bytes: the output is never longer. Returns the output length, or
 * SIZE_MAX for a lone surrogate (*ret_bad points at it).
 */
static size_t unescape(const char *raw, size_t len, char *dst, const char **ret_bad)
{
	const char *p = raw, *end = raw + len;
	char *o = dst;

	while (p < end) {
		const char *bs = memchr(p, '\\', (size_t)(end - p));
		size_t n = bs ? (size_t)(bs - p) : (size_t)(end - p);
		uint32_t cp;

		memcpy(o, p, n);
		o += n;
		if (!bs)
			break;
		p = bs;
		switch (p[1]) {
		case 'b': *o++ = '\b'; p += 2; continue;
		case 'f': *o++ = '\f'; p += 2; continue;
		case 'n': *o++ = '\n'; p += 2; continue;
		case 'r': *o++ = '\r'; p += 2; continue;
		case 't': *o++ = '\t'; p += 2; continue;
		case 'u': break;
		default: *o++ = p[1]; p += 2; continue;   /* " \ / */
		}
		cp = hex4(p + 2);
		if (cp >= 0xdc00 && cp <= 0xdfff) {
			*ret_bad = p;
			return SIZE_MAX;
		}
		if (cp >= 0xd800 && cp <= 0xdbff) {
			uint32_t lo = 0;
			if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
			    (lo = hex4(p + 8)) < 0xdc00 || lo > 0xdfff) {
				*ret_bad = p;
				return SIZE_MAX;
			}
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			p += 6;
		}
		p += 6;
		if (cp < 0x80) {
			*o++ = (char)cp;
		} else if (cp < 0x800) {
			*o++ = (char)(0xc0 | cp >> 6);
			*o++ = (char)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			*o++ = (char)(0xe0 | cp >> 12);
			*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
			*o++ = (char)(0x80 | (cp & 0x3f));
		} else {
			*o++ = (char)(0xf0 | cp >> 18);
			*o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
			*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
			*o++ = (char)(0x80 | (cp & 0x3f));
		}
	}
	return (size_t)(o - dst);
}

/* Lexes the string at s->p into the arena, NUL-terminated. */
static enum kl_err store_string(struct scan *s, size_t *ret_off, size_t *ret_len)
{
	const char *raw, *bad = NULL;
	size_t len, n;
	int escaped;
	char *dst;
	enum kl_err err = lex_string(s, &raw, &len, &escaped);

	if (err)
		return err;
	dst = arena_reserve(s, len + 1);
	if (!dst)
		return KL_ENOMEM;
	if (escaped) {
		n = unescape(raw, len, dst, &bad);
		if (n == SIZE_MAX)
			return scan_fail(s, bad, "lone surrogate in string");
	} else {
		memcpy(dst, raw, len);
		n = len;
	}
	dst[n] = '\0';
	*ret_off = s->arena_used;
	*ret_len = n;
	s->arena_used += n + 1;
	return KL_OK;
}

/* An empty string in the arena (for optional fields that were absent). */
static enum kl_err store_empty(struct scan *s, size_t *ret_off)
{
	char *dst = arena_reserve(s, 1);

	if (!dst)
		return KL_ENOMEM;
	*dst = '\0';
	*ret_off = s->arena_used++;
	return KL_OK;
}

/*
 * Lexes a short string at s->p (a key, an enum value) and gives its
 * unescaped text in *ret_str and *ret_len: a pointer into the body, or into
 * buf when it had escapes; NULL when it does not fit buf or cannot be
 * unescaped (so it equals nothing we look for).
 */
static enum kl_err lex_short(struct scan *s, char *buf, size_t size, const char **ret_str,
			     size_t *ret_len)
{
	const char *raw, *bad;
	size_t len;
	int escaped;
	enum kl_err err = lex_string(s, &raw, &len, &escaped);

	if (err)
		return err;
	if (escaped) {
		len = len <= size ? unescape(raw, len, buf, &bad) : SIZE_MAX;
		raw = len == SIZE_MAX ? NULL : buf;
	}
	*ret_str = raw;
	*ret_len = len;
	return KL_OK;
}

/*
 * Reads an object key, the ':' after it and the whitespace before the
 * value. *ret_id: the key's index in keys[] (ended by a NULL name), or -1.
 */
static enum kl_err scan_key(struct scan *s, const struct scan_key *keys, int *ret_id)
{
	char buf[256];  /* a known key fully \u-escaped fits */
	const char *key;
	size_t len;
	enum kl_err err;

	skip_ws(s);
	if (!next_is(s, '"'))
		return scan_fail(s, s->p, "expected a key");
	err = lex_short(s, buf, sizeof(buf), &key, &len);
	if (err)
		return err;
	*ret_id = -1;
	for (int i = 0; key && keys[i].name; i++) {
		if (keys[i].len == len && memcmp(keys[i].name, key, len) == 0) {
			*ret_id = i;
			break;
		}
	}
	if (!eat(s, ':'))
		return scan_fail(s, s->p, "expected ':'");
	skip_ws(s);
	return KL_OK;
}

/* Marks key id as seen in *seen; a known key seen twice is an error. */
static enum kl_err key_once(struct scan *s, unsigned *seen, int id, const char *at)
{
	if (id < 0)
		return KL_OK;
	if (*seen & (1u << id))
		return scan_fail(s, at, "duplicate key");
	*seen |= 1u << id;
	return KL_OK;
}

/* Lexes a JSON number at s->p; *ret_raw and *ret_len: its text. */
static enum kl_err lex_number(struct scan *s, const char **ret_raw, size_t *ret_len)
{
	const char *start = s->p, *p = s->p, *end = s->end;

	if (p < end && *p == '-')
		p++;
	if (p >= end || !is_digit(*p))
		return scan_fail(s, start, "bad number");
	if (*p == '0')
		p++;
	else
		while (p < end && is_digit(*p))
			p++;
	if (p < end && *p == '.') {
		p++;
		if (p >= end || !is_digit(*p))
			return scan_fail(s, start, "bad number");
		while (p < end && is_digit(*p))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || !is_digit(*p))
			return scan_fail(s, start, "bad number");
		while (p < end && is_digit(*p))
			p++;
	}
	*ret_raw = start;
	*ret_len = (size_t)(p - start);
	s->p = p;
	return KL_OK;
}

/*
 * The JSON number t[0, len) (as lex_number() accepted it) times 10^scale,
 * truncated toward zero, computed from the digits, so 1.795291116903E9
 * seconds is 1795291116903 ms and not what a double makes of it.
 * KL_EPARSE when the result does not fit an int64_t.
 */
static enum kl_err number_scaled(const char *t, size_t len, int scale, int64_t *ret)
{
	const char *p = t, *end = t + len, *seg[2][2] = { { NULL, NULL }, { NULL, NULL } };
	uint64_t v = 0, limit = INT64_MAX;
	int64_t exp = 0, keep;
	int neg = 0;

	if (*p == '-') {
		neg = 1;
		limit = (uint64_t)INT64_MAX + 1;
		p++;
	}
	seg[0][0] = p;
	while (p < end && is_digit(*p))
		p++;
	seg[0][1] = p;
	if (p < end && *p == '.') {
		seg[1][0] = ++p;
		while (p < end && is_digit(*p))
			p++;
		seg[1][1] = p;
	}
	if (p < end) {                          /* the exponent */
		int exp_neg = 0;
		p++;
		if (*p == '+' || *p == '-')
			exp_neg = *p++ == '-';
		for (; p < end; p++)
			if (exp < 1000000000)   /* beyond that, only 0 fits */
				exp = exp * 10 + (*p - '0');
		if (exp_neg)
			exp = -exp;
	}
	/* Moving the point: the first keep digits make the integer part. */
	keep = (int64_t)(seg[0][1] - seg[0][0]) + exp + scale;
	for (int i = 0; i < 2; i++) {
		for (const char *q = seg[i][0]; q < seg[i][1] && keep > 0; q++, keep--) {
			unsigned d = (unsigned)(*q - '0');
			if (v > (limit - d) / 10)
				return KL_EPARSE;
			v = v * 10 + d;
		}
	}
	for (; keep > 0 && v != 0; keep--) {
		if (v > limit / 10)
			return KL_EPARSE;
		v *= 10;
	}
	*ret = neg ? (v ? -(int64_t)(v - 1) - 1 : 0) : (int64_t)v;
	return KL_OK;
}

/* A number (into *ret, scaled by 10^scale) or null (*ret unchanged). */
static enum kl_err scan_number_or_null(struct scan *s, int scale, int64_t *ret, const char *what)
{
	const char *at = s->p, *raw;
	size_t len;
	enum kl_err err;

	if (eat_literal(s, "null", 4))
		return KL_OK;
	if (!next_is(s, '-') && !(s->p < s->end && is_digit(*s->p)))
		return scan_fail(s, at, what);
	err = lex_number(s, &raw, &len);
	if (err)
		return err;
	if (number_scaled(raw, len, scale, ret) != KL_OK)
		return scan_fail(s, at, "number out of range");
	return KL_OK;
}

/* Checks and skips any JSON value at s->p. */
static enum kl_err skip_value(struct scan *s, int depth)
{
	const char *raw;
	size_t len;
	int escaped;

	skip_ws(s);
	if (s->p >= s->end)
		return scan_fail(s, s->p, "expected a value");
	switch (*s->p) {
	case '"':
		return lex_string(s, &raw, &len, &escaped);
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return lex_number(s, &raw, &len);
	case 't':
		if (eat_literal(s, "true", 4))
			return KL_OK;
		break;
	case 'f':
		if (eat_literal(s, "false", 5))
			return KL_OK;
		break;
	case 'n':
		if (eat_literal(s, "null", 4))
			return KL_OK;
		break;
	case '{':
	case '[': {
		int is_object = *s->p == '{';
		char close = is_object ? '}' : ']';
		enum kl_err err;

		if (depth >= SCAN_MAX_DEPTH)
			return scan_fail(s, s->p, "nested too deeply");
		s->p++;
		if (eat(s, close))
			return KL_OK;
		do {
			if (is_object) {
				skip_ws(s);
				if (!next_is(s, '"'))
					return scan_fail(s, s->p, "expected a key");
				err = lex_string(s, &raw, &len, &escaped);
				if (err)
					return err;
				if (!eat(s, ':'))
					return scan_fail(s, s->p, "expected ':'");
			}
			err = skip_value(s, depth + 1);
			if (err)
				return err;
		} while (eat(s, ','));
		if (!eat(s, close))
			return scan_fail(s, s->p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
		return KL_OK;
	}
	default:
		break;
	}
	return scan_fail(s, s->p, "expected a value");
}

/* Decodes base64 b64[0, len) into the arena as rec's data. */
static enum kl_err b64_to_arena(struct scan *s, const char *b64, size_t len,
				struct scan_record *rec)
{
	size_t pad = 0, n = 0;
	uint8_t *dst;

	/* Padding is optional, but when present it completes the last quad. */
	while (pad < 3 && pad < len && b64[len - 1 - pad] == '=')
		pad++;
	if (pad > 2 || (pad && len % 4))
		return KL_EPARSE;
	rec->data = s->arena_used;
	rec->data_len = 0;
	if (len == 0)
		return KL_OK;
	dst = (uint8_t *)arena_reserve(s, (len / 4 + 1) * 3);
	if (!dst)
		return KL_ENOMEM;
	if (kl_b64_decode(b64, len, dst, &n) != KL_OK)
		return KL_EPARSE;
	rec->data_len = n;
	s->arena_used += n;
	return KL_OK;
}

/*
 * Data: the common case is one memchr for the closing quote and one decode
 * from the body into the arena. A string with escapes (some encoders write
 * '/' as "\/") is lexed and unescaped into scratch first.
 */
static enum kl_err scan_data(struct scan *s, struct scan_record *rec)
{
	const char *at = s->p, *raw, *quote, *bad;
	size_t len;
	int escaped;
	enum kl_err err;

	if (!next_is(s, '"'))
		return scan_fail(s, at, "Data is not a string");
	raw = s->p + 1;
	quote = memchr(raw, '"', (size_t)(s->end - raw));
	if (quote) {
		/* Base64 has no backslash, so this quote really ends the string. */
		err = b64_to_arena(s, raw, (size_t)(quote - raw), rec);
		if (err == KL_OK)
			s->p = quote + 1;
		if (err != KL_EPARSE)
			return err;
	}
	err = lex_string(s, &raw, &len, &escaped);
	if (err)
		return err;
	if (!escaped)
		return scan_fail(s, at, "Data is not base64");
	if (len > s->scratch_cap) {
		char *p = realloc(s->scratch, len);
		if (!p)
			return KL_ENOMEM;
		s->scratch = p;
		s->scratch_cap = len;
	}
	len = unescape(raw, len, s->scratch, &bad);
	if (len == SIZE_MAX)
		return scan_fail(s, at, "Data is not base64");
	err = b64_to_arena(s, s->scratch, len, rec);
	return err == KL_EPARSE ? scan_fail(s, at, "Data is not base64") : err;
}

enum { REC_SEQ, REC_TIMESTAMP, REC_DATA, REC_PK, REC_ENCRYPTION };
static const struct scan_key record_keys[] = {
	SCAN_KEY("SequenceNumber"), SCAN_KEY("ApproximateArrivalTimestamp"), SCAN_KEY("Data"),
	SCAN_KEY("PartitionKey"), SCAN_KEY("EncryptionType"), { NULL, 0 },
};

static enum kl_err scan_record(struct scan *s)
{
	struct scan_record rec = { 0, 0, 0, 0, 0, KINESIS_ENCRYPTION_NONE };
	const char *at;
	unsigned seen = 0;
	enum kl_err err = KL_OK;

	skip_ws(s);
	at = s->p;
	if (!eat(s, '{'))
		return scan_fail(s, at, "record is not an object");
	if (!eat(s, '}')) {
		do {
			const char *key_at, *str;
			char buf[32];   /* "KMS" fully \u-escaped fits */
			size_t len;
			int id;

			skip_ws(s);
			key_at = s->p;
			err = scan_key(s, record_keys, &id);
			if (!err)
				err = key_once(s, &seen, id, key_at);
			if (err)
				return err;
			switch (id) {
			case REC_SEQ:
				if (!next_is(s, '"'))
					return scan_fail(s, s->p, "SequenceNumber is not a string");
				err = store_string(s, &rec.seq, &len);
				if (!err && len == 0)
					err = scan_fail(s, key_at, "empty SequenceNumber");
				break;
			case REC_TIMESTAMP:
				err = scan_number_or_null(s, 3, &rec.arrival_ms,
							  "ApproximateArrivalTimestamp is not a number");
				break;
			case REC_DATA:
				err = scan_data(s, &rec);
				break;
			case REC_PK:
				if (!next_is(s, '"'))
					return scan_fail(s, s->p, "PartitionKey is not a string");
				err = store_string(s, &rec.pk, &len);
				break;
			case REC_ENCRYPTION:
				if (eat_literal(s, "null", 4))
					break;
				if (!next_is(s, '"'))
					return scan_fail(s, s->p, "EncryptionType is not a string");
				err = lex_short(s, buf, sizeof(buf), &str, &len);
				if (!err && str && len == 3 && memcmp(str, "KMS", 3) == 0)
					rec.encryption = KINESIS_ENCRYPTION_KMS;
				break;
			default:
				err = skip_value(s, 1);
				break;
			}
			if (err)
				return err;
		} while (eat(s, ','));
		if (!eat(s, '}'))
			return scan_fail(s, s->p, "expected ',' or '}' in record");
	}
	if (!(seen & 1u << REC_SEQ))
		return scan_fail(s, at, "record without SequenceNumber");
	if (!(seen & 1u << REC_PK))
		return scan_fail(s, at, "record without PartitionKey");
	if (!(seen & 1u << REC_DATA))
		return scan_fail(s, at, "record without Data");
	if (s->n_recs == s->cap_recs) {
		void *a = grow(s->recs, &s->cap_recs, sizeof(*s->recs));
		if (!a)
			return KL_ENOMEM;
		s->recs = a;
	}
	s->recs[s->n_recs++] = rec;
	return KL_OK;
}

/* A JSON array (or null), each element read by scan_elem; the two messages
 * (static strings) name the field when it is not an array or is cut. */
static enum kl_err scan_array(struct scan *s, enum kl_err (*scan_elem)(struct scan *s),
			      const char *not_array, const char *bad_end)
{
	enum kl_err err;

	if (eat_literal(s, "null", 4))
		return KL_OK;
	if (!eat(s, '['))
		return scan_fail(s, s->p, not_array);
	if (eat(s, ']'))
		return KL_OK;
	do {
		err = scan_elem(s);
		if (err)
			return err;
	} while (eat(s, ','));
	if (!eat(s, ']'))
		return scan_fail(s, s->p, bad_end);
	return KL_OK;
}

enum { HASH_START, HASH_END };
static const struct scan_key hash_keys[] = {
	SCAN_KEY("StartingHashKey"), SCAN_KEY("EndingHashKey"), { NULL, 0 },
};

/* A child's HashKeyRange: an object (or null) with two optional strings. */
static enum kl_err scan_hash_range(struct scan *s, struct scan_child *ch)
{
	unsigned seen = 0;
	enum kl_err err;

	if (eat_literal(s, "null", 4))
		return KL_OK;
	if (!eat(s, '{'))
		return scan_fail(s, s->p, "HashKeyRange is not an object");
	if (eat(s, '}'))
		return KL_OK;
	do {
		const char *key_at;
		size_t len, *off;
		int id;

		skip_ws(s);
		key_at = s->p;
		err = scan_key(s, hash_keys, &id);
		if (!err)
			err = key_once(s, &seen, id, key_at);
		if (err)
			return err;
		if (id < 0) {
			err = skip_value(s, 1);
		} else if (!eat_literal(s, "null", 4)) {
			if (!next_is(s, '"'))
				return scan_fail(s, s->p, "hash key is not a string");
			off = id == HASH_START ? &ch->starting_hash_key : &ch->ending_hash_key;
			err = store_string(s, off, &len);
		}
		if (err)
			return err;
	} while (eat(s, ','));
	if (!eat(s, '}'))
		return scan_fail(s, s->p, "expected ',' or '}' in HashKeyRange");
	return KL_OK;
}

static enum kl_err scan_parents(struct scan *s, struct scan_child *ch)
{
	enum kl_err err;
	size_t len;

	if (eat_literal(s, "null", 4))
		return KL_OK;
	if (!eat(s, '['))
		return scan_fail(s, s->p, "ParentShards is not an array");
	if (eat(s, ']'))
		return KL_OK;
	do {
		skip_ws(s);
		if (ch->n_parents == KL_ARRAY_LEN(ch->parents))
			return scan_fail(s, s->p, "more than two ParentShards");
		if (!next_is(s, '"'))
			return scan_fail(s, s->p, "parent shard is not a string");
		err = store_string(s, &ch->parents[ch->n_parents], &len);
		if (err)
			return err;
		ch->n_parents++;
	} while (eat(s, ','));
	if (!eat(s, ']'))
		return scan_fail(s, s->p, "expected ',' or ']' in ParentShards");
	return KL_OK;
}

enum { CHILD_SHARD_ID, CHILD_PARENTS, CHILD_HASH_RANGE };
static const struct scan_key child_keys[] = {
	SCAN_KEY("ShardId"), SCAN_KEY("ParentShards"), SCAN_KEY("HashKeyRange"), { NULL, 0 },
};

static enum kl_err scan_child(struct scan *s)
{
	struct scan_child ch = { SCAN_NONE, { 0, 0 }, 0, SCAN_NONE, SCAN_NONE };
	const char *at;
	unsigned seen = 0;
	enum kl_err err = KL_OK;

	skip_ws(s);
	at = s->p;
	if (!eat(s, '{'))
		return scan_fail(s, at, "child shard is not an object");
	if (!eat(s, '}')) {
		do {
			const char *key_at;
			size_t len;
			int id;

			skip_ws(s);
			key_at = s->p;
			err = scan_key(s, child_keys, &id);
			if (!err)
				err = key_once(s, &seen, id, key_at);
			if (err)
				return err;
			switch (id) {
			case CHILD_SHARD_ID:
				if (!next_is(s, '"'))
					return scan_fail(s, s->p, "ShardId is not a string");
				err = store_string(s, &ch.shard_id, &len);
				if (!err && len == 0)
					err = scan_fail(s, key_at, "empty ShardId");
				break;
			case CHILD_PARENTS:
				err = scan_parents(s, &ch);
				break;
			case CHILD_HASH_RANGE:
				err = scan_hash_range(s, &ch);
				break;
			default:
				err = skip_value(s, 1);
				break;
			}
			if (err)
				return err;
		} while (eat(s, ','));
		if (!eat(s, '}'))
			return scan_fail(s, s->p, "expected ',' or '}' in child shard");
	}
	if (ch.shard_id == SCAN_NONE)
		return scan_fail(s, at, "child shard without ShardId");
	if (ch.starting_hash_key == SCAN_NONE && (err = store_empty(s, &ch.starting_hash_key)))
		return err;
	if (ch.ending_hash_key == SCAN_NONE && (err = store_empty(s, &ch.ending_hash_key)))
		return err;
	if (s->n_children == s->cap_children) {
		void *a = grow(s->children, &s->cap_children, sizeof(*s->children));
		if (!a)
			return KL_ENOMEM;
		s->children = a;
	}
	s->children[s->n_children++] = ch;
	return KL_OK;
}

enum { TOP_RECORDS, TOP_NEXT_ITERATOR, TOP_MILLIS_BEHIND, TOP_CHILD_SHARDS };
static const struct scan_key top_keys[] = {
	SCAN_KEY("Records"), SCAN_KEY("NextShardIterator"), SCAN_KEY("MillisBehindLatest"),
	SCAN_KEY("ChildShards"), { NULL, 0 },
};

static enum kl_err scan_response(struct scan *s)
{
	unsigned seen = 0;
	enum kl_err err = KL_OK;

	skip_ws(s);
	if (!eat(s, '{'))
		return scan_fail(s, s->p, "response is not a JSON object");
	if (!eat(s, '}')) {
		do {
			const char *key_at;
			size_t off, len;
			int id;

			skip_ws(s);
			key_at = s->p;
			err = scan_key(s, top_keys, &id);
			if (!err)
				err = key_once(s, &seen, id, key_at);
			if (err)
				return err;
			switch (id) {
			case TOP_RECORDS:
				err = scan_array(s, scan_record, "Records is not an array",
						 "expected ',' or ']' in Records");
				break;
			case TOP_NEXT_ITERATOR:
				if (eat_literal(s, "null", 4))
					break;
				if (!next_is(s, '"'))
					return scan_fail(s, s->p, "NextShardIterator is not a string");
				err = store_string(s, &off, &len);
				if (!err && len > 0)
					s->next_iterator = off;
				break;
			case TOP_MILLIS_BEHIND:
				err = scan_number_or_null(s, 0, &s->millis_behind_latest,
							  "MillisBehindLatest is not a number");
				break;
			case TOP_CHILD_SHARDS:
				err = scan_array(s, scan_child, "ChildShards is not an array",
						 "expected ',' or ']' in ChildShards");
				break;
			default:
				err = skip_value(s, 1);
				break;
			}
			if (err)
				return err;
		} while (eat(s, ','));
		if (!eat(s, '}'))
			return scan_fail(s, s->p, "expected ',' or '}'");
	}
	skip_ws(s);
	if (s->p != s->end)
		return scan_fail(s, s->p, "trailing bytes after the response");
	return KL_OK;
}

/* Cuts the block to size and writes the header, records and children. */
static enum kl_err scan_finish(struct scan *s, struct kinesis_records **ret)
{
	size_t recs_off = ALIGN_UP(SCAN_ARENA_OFF + s->arena_used, _Alignof(struct kinesis_record));
	size_t children_off = ALIGN_UP(recs_off + s->n_recs * sizeof(struct kinesis_record),
				       _Alignof(struct kinesis_child_shard));
	size_t total = children_off + s->n_children * sizeof(struct kinesis_child_shard);
	struct kinesis_records *r;
	const char *arena;
	char *block;

	block = realloc(s->block, total);
	if (!block)
		return KL_ENOMEM;
	s->block = NULL;
	arena = block + SCAN_ARENA_OFF;
	r = (struct kinesis_records *)block;
	memset(r, 0, sizeof(*r));
	r->n_records = s->n_recs;
	r->records = s->n_recs ? (struct kinesis_record *)(block + recs_off) : NULL;
	for (size_t i = 0; i < s->n_recs; i++) {
		const struct scan_record *sr = &s->recs[i];
		struct kinesis_record *rec = &r->records[i];

		rec->sequence_number = arena + sr->seq;
		rec->partition_key = arena + sr->pk;
		rec->data = (const uint8_t *)arena + sr->data;
		rec->data_len = sr->data_len;
		rec->arrival_ms = sr->arrival_ms;
		rec->encryption = sr->encryption;
		r->data_bytes += sr->data_len;
	}
	r->next_iterator = s->next_iterator == SCAN_NONE ? NULL : arena + s->next_iterator;
	r->millis_behind_latest = s->millis_behind_latest;
	r->n_children = s->n_children;
	r->children = s->n_children ? (struct kinesis_child_shard *)(block + children_off) : NULL;
	for (size_t i = 0; i < s->n_children; i++) {
		const struct scan_child *sc = &s->children[i];
		struct kinesis_child_shard *ch = &r->children[i];

		memset(ch, 0, sizeof(*ch));
		ch->shard_id = arena + sc->shard_id;
		for (size_t j = 0; j < sc->n_parents; j++)
			ch->parent_shard_ids[j] = arena + sc->parents[j];
		ch->n_parents = sc->n_parents;
		ch->starting_hash_key = arena + sc->starting_hash_key;
		ch->ending_hash_key = arena + sc->ending_hash_key;
	}
	*ret = r;
	return KL_OK;
}

enum kl_err kinesis_parse_get_records(const char *body, size_t len, struct kinesis_records **ret,
				      struct kl_errinfo *info)
{
	struct scan s;
	enum kl_err err = KL_ENOMEM;

	memset(&s, 0, sizeof(s));
	if (!body) {
		body = "";
		len = 0;
	}
	s.body = s.p = body;
	s.end = body + len;
	s.next_iterator = SCAN_NONE;
	s.millis_behind_latest = -1;
	if (len < SIZE_MAX / 2) {
		s.arena_cap = len + 64;
		s.block = malloc(SCAN_ARENA_OFF + s.arena_cap);
	}
	if (s.block) {
		err = scan_response(&s);
		if (!err)
			err = scan_finish(&s, ret);
	}
	free(s.block);
	free(s.recs);
	free(s.children);
	free(s.scratch);
	if (err == KL_ENOMEM)
		return kl_errinfo_set(info, err, "kinesis: GetRecords: out of memory");
	if (err)
		return kl_errinfo_set(info, err, "kinesis: GetRecords: %s at byte %zu of %zu",
				      s.err_what ? s.err_what : "malformed response",
				      s.err_at ? (size_t)(s.err_at - body) : (size_t)(s.p - body), len);
	return KL_OK;
}

enum kl_err kinesis_get_records(struct aws_client *c, const char *iterator, int limit,
				struct kinesis_records **ret, struct kl_errinfo *info)
{
	static const char op[] = "GetRecords";
	struct http_response resp;
	json_object *req = NULL;
	enum kl_err err;

	err = kinesis_req_get_records(iterator, limit, &req);
	if (err)
		return build_failed(err, op, info);
	http_response_init(&resp);
	err = aws_json_call_raw(c, KINESIS_TARGET_PREFIX, KINESIS_JSON_VERSION, op, req, &resp, info);
	json_object_put(req);
	if (err)
		log_debug("kinesis: %s failed: %s %s", op, kl_strerror(err), info ? info->aws_code : "");
	else
		err = kinesis_parse_get_records(resp.body.data, resp.body.len, ret, info);
	http_response_done(&resp);
	return err;
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
