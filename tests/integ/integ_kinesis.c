/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_kinesis.c: the Kinesis client against kinesalite (started by
 * tests/emu/emulators.sh, which exports KL_TEST_KINESIS_ENDPOINT and the
 * keys; without them this exits 77). Every call of kinesis.h is exercised
 * on real streams with unique names, including a split, a merge and
 * reading closed parents to their end.
 * Avoided on purpose (they crash or hang kinesalite, see
 * reference/emulators.md): ListShards with a NextToken (kinesalite never
 * returns one), AT_TIMESTAMP past the last record, GetRecords without
 * Limit. ExpiredIteratorException takes 5 minutes to provoke: not tested.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws.h"
#include "creds.h"
#include "fixture.h"
#include "http.h"
#include "kinesis.h"
#include "testutil.h"

static const char MAX_HASH[] = "340282366920938463463374607431768211455";

/* The fixture: one client for the whole run (CUnit tests take no arguments). */
static struct {
	struct creds_chain *creds;
	struct aws_client c;
	char stream[64];          /* created by test_create_describe */
	char reshard[64];         /* created by test_split_merge */
} fx;

static int setup(void)
{
	const char *endpoint = kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");

	if (tf_aws_init(&fx.creds) != KL_OK ||
	    tf_client_init(&fx.c, "kinesis", endpoint, fx.creds) != KL_OK)
		return -1;
	snprintf(fx.stream, sizeof(fx.stream), "kl-integ-%ld-%" PRId64, (long)getpid(), kl_mono_ms());
	snprintf(fx.reshard, sizeof(fx.reshard), "kl-reshard-%ld-%" PRId64, (long)getpid(),
		 kl_mono_ms());
	return 0;
}

static void teardown(void)
{
	aws_client_done(&fx.c);
	tf_aws_done(fx.creds);
}

/* Reads a shard from iter until it ends (next_iterator NULL) or max_calls
 * calls were made; appends every record's data as "<data>\n" to out.
 * Returns the number of calls that it took, or -1 if the shard never ended. */
static int drain_shard(const char *iter0, int limit, int max_calls, char *out, size_t out_size,
		       size_t *ret_records)
{
	struct kl_errinfo info;
	char *iter = strdup(iter0);
	size_t n = 0;
	int calls = 0;

	out[0] = '\0';
	while (iter && calls < max_calls) {
		struct kinesis_records *r = NULL;
		enum kl_err err = kinesis_get_records(&fx.c, iter, limit, &r, &info);

		calls++;
		tf_report("GetRecords", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		CU_ASSERT(r->n_records <= (size_t)limit);
		for (size_t i = 0; i < r->n_records; i++) {
			size_t used = strlen(out);
			snprintf(out + used, out_size - used, "%.*s\n", (int)r->records[i].data_len,
				 (const char *)r->records[i].data);
		}
		n += r->n_records;
		free(iter);
		iter = r->next_iterator ? strdup(r->next_iterator) : NULL;
		kinesis_records_free(r);
	}
	*ret_records = n;
	if (iter) {
		free(iter);
		return -1;
	}
	return calls;
}

static const struct kinesis_shard *find_shard(const struct kinesis_shard *s, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s[i].shard_id, id) == 0)
			return &s[i];
	return NULL;
}

/* --------------------------------------------------------------- tests */

static void test_create_describe(void)
{
	struct kinesis_stream_summary s;
	struct kl_errinfo info;
	char arn[256];

	TF_CHECK_OK(kinesis_create_stream(&fx.c, fx.stream, 1, &info));
	CU_ASSERT_EQUAL(kinesis_create_stream(&fx.c, fx.stream, 1, &info), KL_EEXISTS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ResourceInUseException");
	TF_CHECK_OK(kinesis_wait_active(&fx.c, fx.stream, 30000, &s, &info));
	CU_ASSERT_EQUAL(s.status, KINESIS_STREAM_ACTIVE);
	CU_ASSERT_STRING_EQUAL(s.stream_name, fx.stream);
	CU_ASSERT_EQUAL(s.open_shard_count, 1);
	CU_ASSERT(s.retention_hours >= 24);
	CU_ASSERT(s.created_ms > INT64_C(1500000000000));
	CU_ASSERT_PTR_NOT_NULL(strstr(s.stream_arn, fx.stream));

	/* The ARN form names the same stream. */
	snprintf(arn, sizeof(arn), "arn:aws:kinesis:us-east-1:000000000000:stream/%s", fx.stream);
	memset(&s, 0, sizeof(s));
	TF_CHECK_OK(kinesis_describe_stream_summary(&fx.c, arn, &s, &info));
	CU_ASSERT_STRING_EQUAL(s.stream_name, fx.stream);

	CU_ASSERT_EQUAL(kinesis_describe_stream_summary(&fx.c, "kl-no-such-stream", &s, &info),
			KL_ENOTFOUND);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ResourceNotFoundException");
	CU_ASSERT_EQUAL(kinesis_wait_active(&fx.c, "kl-no-such-stream", 300, NULL, &info),
			KL_ENOTFOUND);
	CU_ASSERT_EQUAL(kinesis_create_stream(&fx.c, "arn:aws:s3:::bucket", 1, &info), KL_EINVAL);
}

static void test_list_shards(void)
{
	struct kinesis_list_shards_opts opts = { 0 };
	struct kinesis_shard *shards = NULL;
	struct kl_errinfo info;
	size_t n = 0;

	TF_CHECK_OK(kinesis_list_shards(&fx.c, fx.stream, NULL, &shards, &n, &info));
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_STRING_EQUAL(shards[0].shard_id, "shardId-000000000000");
	CU_ASSERT_STRING_EQUAL(shards[0].starting_hash_key, "0");
	CU_ASSERT_STRING_EQUAL(shards[0].ending_hash_key, MAX_HASH);
	CU_ASSERT_STRING_EQUAL(shards[0].parent_shard_id, "");
	CU_ASSERT(strlen(shards[0].starting_sequence_number) > 20);
	CU_ASSERT_FALSE(kinesis_shard_is_closed(&shards[0]));
	free(shards);

	/* Starting after the only shard leaves nothing. */
	opts.exclusive_start_shard_id = "shardId-000000000000";
	opts.max_results = 5;
	shards = NULL;
	TF_CHECK_OK(kinesis_list_shards(&fx.c, fx.stream, &opts, &shards, &n, &info));
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_PTR_NULL(shards);

	CU_ASSERT_EQUAL(kinesis_list_shards(&fx.c, "kl-no-such-stream", NULL, &shards, &n, &info),
			KL_ENOTFOUND);
}

/* Records put here are read back by the next tests, in this order. */
static const char *const put_data[] = { "first", "second", "third" };
static char put_seq[3][KINESIS_SEQ_MAX + 1];
static int64_t first_arrival_ms;

static void test_put_get_records(void)
{
	static const uint8_t binary[] = { 0x00, 0xff, 0x10, 0x80, 0x00 };
	struct kinesis_put_entry e[4];
	struct kinesis_put_results *res = NULL;
	struct kinesis_position pos = { .type = KINESIS_ITER_TRIM_HORIZON };
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;
	char *iter = NULL;
	int64_t before = kl_wall_ms();

	for (size_t i = 0; i < 3; i++)
		e[i] = (struct kinesis_put_entry){ put_data[i], strlen(put_data[i]), "pk", NULL };
	TF_CHECK_OK(kinesis_put_records(&fx.c, fx.stream, e, 3, &res, &info));
	CU_ASSERT_EQUAL_FATAL(res->n, 3);
	CU_ASSERT_EQUAL(res->failed_count, 0);
	for (size_t i = 0; i < 3; i++) {
		CU_ASSERT_STRING_EQUAL(res->r[i].shard_id, "shardId-000000000000");
		CU_ASSERT_STRING_EQUAL(res->r[i].error_code, "");
		snprintf(put_seq[i], sizeof(put_seq[i]), "%s", res->r[i].sequence_number);
	}
	/* Sequence numbers grow (same length, so compare as text). */
	CU_ASSERT(strlen(put_seq[0]) == strlen(put_seq[1]) && strcmp(put_seq[0], put_seq[1]) < 0);
	CU_ASSERT(strcmp(put_seq[1], put_seq[2]) < 0);
	free(res);

	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000000", &pos, &iter,
					    &info));
	/* Limit is honoured: 2 of 3. */
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 2, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 2);
	CU_ASSERT_EQUAL(r->data_bytes, strlen("first") + strlen("second"));
	for (size_t i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(r->records[i].data_len, strlen(put_data[i]));
		CU_ASSERT_EQUAL(memcmp(r->records[i].data, put_data[i], r->records[i].data_len), 0);
		CU_ASSERT_STRING_EQUAL(r->records[i].sequence_number, put_seq[i]);
		CU_ASSERT_STRING_EQUAL(r->records[i].partition_key, "pk");
		CU_ASSERT(r->records[i].arrival_ms >= before - 5000);
		CU_ASSERT(r->records[i].arrival_ms <= kl_wall_ms() + 5000);
	}
	first_arrival_ms = r->records[0].arrival_ms;
	CU_ASSERT_PTR_NOT_NULL_FATAL(r->next_iterator);
	iter = strdup(r->next_iterator);
	kinesis_records_free(r);
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 100, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 1);
	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number, put_seq[2]);
	CU_ASSERT_PTR_NOT_NULL(r->next_iterator); /* an open shard never ends */
	CU_ASSERT(r->millis_behind_latest >= 0);
	kinesis_records_free(r);

	/* Binary, empty data, an explicit hash key and a 256-byte key. */
	char longkey[KINESIS_PARTITION_KEY_MAX + 1];
	memset(longkey, 'k', KINESIS_PARTITION_KEY_MAX);
	longkey[KINESIS_PARTITION_KEY_MAX] = '\0';
	e[0] = (struct kinesis_put_entry){ binary, sizeof(binary), "bin", NULL };
	e[1] = (struct kinesis_put_entry){ NULL, 0, "empty", "0" };
	e[2] = (struct kinesis_put_entry){ "x", 1, longkey, MAX_HASH };
	res = NULL;
	TF_CHECK_OK(kinesis_put_records(&fx.c, fx.stream, e, 3, &res, &info));
	CU_ASSERT_EQUAL(res->failed_count, 0);
	pos.type = KINESIS_ITER_AT_SEQUENCE_NUMBER;
	pos.sequence_number = res->r[0].sequence_number;
	iter = NULL;
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000000", &pos, &iter,
					    &info));
	free(res);
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 10, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 3);
	CU_ASSERT_EQUAL(r->records[0].data_len, sizeof(binary));
	CU_ASSERT_EQUAL(memcmp(r->records[0].data, binary, sizeof(binary)), 0);
	CU_ASSERT_EQUAL(r->records[1].data_len, 0);
	CU_ASSERT_STRING_EQUAL(r->records[1].partition_key, "empty");
	CU_ASSERT_STRING_EQUAL(r->records[2].partition_key, longkey);
	kinesis_records_free(r);
}

static void test_iterator_types(void)
{
	struct kinesis_position pos = { 0 };
	struct kinesis_records *r = NULL;
	struct kinesis_put_entry e = { "after-latest", 12, "pk", NULL };
	struct kinesis_put_results *res = NULL;
	struct kl_errinfo info;
	char *iter = NULL;

	pos.type = KINESIS_ITER_AT_SEQUENCE_NUMBER;
	pos.sequence_number = put_seq[1];
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000000", &pos, &iter,
					    &info));
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 1, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 1);
	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number, put_seq[1]);
	kinesis_records_free(r);

	pos.type = KINESIS_ITER_AFTER_SEQUENCE_NUMBER;
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000000", &pos, &iter,
					    &info));
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 1, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 1);
	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number, put_seq[2]);
	kinesis_records_free(r);

	/* AT_TIMESTAMP of the first record's arrival: records exist at or after
	 * it, so kinesalite answers (it hangs past the last record). */
	pos.type = KINESIS_ITER_AT_TIMESTAMP;
	pos.timestamp_ms = first_arrival_ms;
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000000", &pos, &iter,
					    &info));
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 1, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 1);
	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number, put_seq[0]);
	kinesis_records_free(r);

	/* LATEST: nothing yet, then exactly what is put afterwards. */
	pos.type = KINESIS_ITER_LATEST;
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000000", &pos, &iter,
					    &info));
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 10, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL(r->n_records, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r->next_iterator);
	iter = strdup(r->next_iterator);
	kinesis_records_free(r);
	TF_CHECK_OK(kinesis_put_records(&fx.c, fx.stream, &e, 1, &res, &info));
	TF_CHECK_OK(kinesis_get_records(&fx.c, iter, 10, &r, &info));
	free(iter);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 1);
	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number, res->r[0].sequence_number);
	CU_ASSERT_EQUAL(memcmp(r->records[0].data, "after-latest", 12), 0);
	kinesis_records_free(r);
	free(res);

	/* Errors: a garbage iterator, a sequence number of no shard of ours,
	 * an unknown shard. */
	CU_ASSERT_EQUAL(kinesis_get_records(&fx.c, "bm90IGFuIGl0ZXJhdG9y", 1, &r, &info), KL_EAWS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InvalidArgumentException");
	pos.type = KINESIS_ITER_AT_SEQUENCE_NUMBER;
	pos.sequence_number = "12345";
	CU_ASSERT_EQUAL(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000000", &pos,
						   &iter, &info),
			KL_EAWS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InvalidArgumentException");
	pos.type = KINESIS_ITER_TRIM_HORIZON;
	CU_ASSERT_EQUAL(kinesis_get_shard_iterator(&fx.c, fx.stream, "shardId-000000000009", &pos,
						   &iter, &info),
			KL_ENOTFOUND);
	/* Builder errors never reach the wire and are reported as such. */
	CU_ASSERT_EQUAL(kinesis_get_records(&fx.c, "it", KINESIS_GET_RECORDS_MAX + 1, &r, &info),
			KL_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "GetRecords"));
}

static void test_put_records_limits(void)
{
	struct kinesis_put_entry *e = calloc(KINESIS_PUT_RECORDS_MAX + 1, sizeof(*e));
	struct kinesis_put_results *res = NULL;
	struct kl_errinfo info;
	uint64_t attempts;

	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	for (size_t i = 0; i <= KINESIS_PUT_RECORDS_MAX; i++)
		e[i] = (struct kinesis_put_entry){ "r", 1, "pk", NULL };
	attempts = fx.c.stats.attempts;
	CU_ASSERT_EQUAL(kinesis_put_records(&fx.c, fx.stream, e, KINESIS_PUT_RECORDS_MAX + 1, &res,
					    &info),
			KL_EINVAL);
	CU_ASSERT_EQUAL(fx.c.stats.attempts, attempts); /* refused locally */
	TF_CHECK_OK(kinesis_put_records(&fx.c, fx.stream, e, KINESIS_PUT_RECORDS_MAX, &res, &info));
	CU_ASSERT_EQUAL(res->n, KINESIS_PUT_RECORDS_MAX);
	CU_ASSERT_EQUAL(res->failed_count, 0);
	free(res);
	free(e);
	CU_ASSERT_EQUAL(kinesis_put_records(&fx.c, "kl-no-such-stream", NULL, 0, &res, &info), KL_EINVAL);
}

/* Split the only shard, read the parent to its end, merge the children,
 * read them to their end, and check where new records go. */
static void test_split_merge(void)
{
	struct kinesis_hash_key lo, hi, mid;
	char mid_dec[KINESIS_HASH_KEY_MAX + 1], out[4096];
	struct kinesis_shard *shards = NULL;
	const struct kinesis_shard *parent, *a = NULL, *b = NULL, *m = NULL;
	struct kinesis_put_entry e[3];
	struct kinesis_put_results *res = NULL;
	struct kinesis_position pos = { .type = KINESIS_ITER_TRIM_HORIZON };
	struct kl_errinfo info;
	char *iter = NULL;
	char child_a[KINESIS_SHARD_ID_MAX + 1], child_b[KINESIS_SHARD_ID_MAX + 1];
	size_t n = 0, nrec = 0;
	int calls;

	TF_CHECK_OK(kinesis_create_stream(&fx.c, fx.reshard, 1, &info));
	TF_CHECK_OK(kinesis_wait_active(&fx.c, fx.reshard, 30000, NULL, &info));
	e[0] = (struct kinesis_put_entry){ "p1", 2, "a", NULL };
	e[1] = (struct kinesis_put_entry){ "p2", 2, "b", NULL };
	TF_CHECK_OK(kinesis_put_records(&fx.c, fx.reshard, e, 2, &res, &info));
	free(res);

	/* Split at the midpoint of the hash range. */
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("0", &lo), KL_OK);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse(MAX_HASH, &hi), KL_OK);
	kinesis_hash_key_mid(&lo, &hi, &mid);
	kinesis_hash_key_format(&mid, mid_dec);
	TF_CHECK_OK(kinesis_split_shard(&fx.c, fx.reshard, "shardId-000000000000", mid_dec, &info));
	TF_CHECK_OK(kinesis_wait_active(&fx.c, fx.reshard, 30000, NULL, &info));

	TF_CHECK_OK(kinesis_list_shards(&fx.c, fx.reshard, NULL, &shards, &n, &info));
	CU_ASSERT_EQUAL_FATAL(n, 3);
	parent = find_shard(shards, n, "shardId-000000000000");
	CU_ASSERT_PTR_NOT_NULL_FATAL(parent);
	CU_ASSERT_TRUE(kinesis_shard_is_closed(parent));
	for (size_t i = 0; i < n; i++) {
		if (&shards[i] == parent)
			continue;
		CU_ASSERT_STRING_EQUAL(shards[i].parent_shard_id, "shardId-000000000000");
		CU_ASSERT_FALSE(kinesis_shard_is_closed(&shards[i]));
		if (strcmp(shards[i].starting_hash_key, "0") == 0)
			a = &shards[i];
		else
			b = &shards[i];
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_STRING_EQUAL(b->starting_hash_key, mid_dec);
	CU_ASSERT_STRING_EQUAL(b->ending_hash_key, MAX_HASH);
	snprintf(child_a, sizeof(child_a), "%s", a->shard_id);
	snprintf(child_b, sizeof(child_b), "%s", b->shard_id);

	/* The closed parent: its records, then the end (no NextShardIterator). */
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.reshard, "shardId-000000000000", &pos, &iter,
					    &info));
	calls = drain_shard(iter, 1, 10, out, sizeof(out), &nrec);
	free(iter);
	CU_ASSERT(calls > 0);
	CU_ASSERT_EQUAL(nrec, 2);
	CU_ASSERT_STRING_EQUAL(out, "p1\np2\n");
	free(shards);
	shards = NULL;

	/* New records go to the children, chosen by explicit hash key. */
	e[0] = (struct kinesis_put_entry){ "ca", 2, "x", "0" };
	e[1] = (struct kinesis_put_entry){ "cb", 2, "x", MAX_HASH };
	e[2] = (struct kinesis_put_entry){ "cb2", 3, "x", mid_dec };
	TF_CHECK_OK(kinesis_put_records(&fx.c, fx.reshard, e, 3, &res, &info));
	CU_ASSERT_STRING_EQUAL(res->r[0].shard_id, child_a);
	CU_ASSERT_STRING_EQUAL(res->r[1].shard_id, child_b);
	CU_ASSERT_STRING_EQUAL(res->r[2].shard_id, child_b);
	free(res);

	/* Merge the two children back into one. */
	TF_CHECK_OK(kinesis_merge_shards(&fx.c, fx.reshard, child_a, child_b, &info));
	TF_CHECK_OK(kinesis_wait_active(&fx.c, fx.reshard, 30000, NULL, &info));
	TF_CHECK_OK(kinesis_list_shards(&fx.c, fx.reshard, NULL, &shards, &n, &info));
	CU_ASSERT_EQUAL_FATAL(n, 4);
	for (size_t i = 0; i < n; i++)
		if (!kinesis_shard_is_closed(&shards[i]))
			m = &shards[i];
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	CU_ASSERT_STRING_EQUAL(m->parent_shard_id, child_a);
	CU_ASSERT_STRING_EQUAL(m->adjacent_parent_shard_id, child_b);
	CU_ASSERT_STRING_EQUAL(m->starting_hash_key, "0");
	CU_ASSERT_STRING_EQUAL(m->ending_hash_key, MAX_HASH);
	CU_ASSERT_TRUE(kinesis_shard_is_closed(find_shard(shards, n, child_a)));
	CU_ASSERT_TRUE(kinesis_shard_is_closed(find_shard(shards, n, child_b)));

	/* Both merged parents read to their ends. */
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.reshard, child_b, &pos, &iter, &info));
	calls = drain_shard(iter, 10, 10, out, sizeof(out), &nrec);
	free(iter);
	CU_ASSERT(calls > 0);
	CU_ASSERT_STRING_EQUAL(out, "cb\ncb2\n");
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.reshard, child_a, &pos, &iter, &info));
	calls = drain_shard(iter, 10, 10, out, sizeof(out), &nrec);
	free(iter);
	CU_ASSERT(calls > 0);
	CU_ASSERT_STRING_EQUAL(out, "ca\n");

	/* The merged shard takes new records and stays open. */
	e[0] = (struct kinesis_put_entry){ "m", 1, "x", NULL };
	TF_CHECK_OK(kinesis_put_records(&fx.c, fx.reshard, e, 1, &res, &info));
	CU_ASSERT_STRING_EQUAL(res->r[0].shard_id, m->shard_id);
	free(res);
	TF_CHECK_OK(kinesis_get_shard_iterator(&fx.c, fx.reshard, m->shard_id, &pos, &iter, &info));
	calls = drain_shard(iter, 10, 2, out, sizeof(out), &nrec);
	free(iter);
	CU_ASSERT_EQUAL(calls, -1);
	CU_ASSERT_STRING_EQUAL(out, "m\n");

	/* Merging shards that are not adjacent (or closed) is refused. */
	CU_ASSERT_EQUAL(kinesis_merge_shards(&fx.c, fx.reshard, child_a, m->shard_id, &info), KL_EAWS);
	CU_ASSERT_EQUAL(kinesis_split_shard(&fx.c, fx.reshard, m->shard_id, "0", &info), KL_EAWS);
	free(shards);
}

static void test_delete_streams(void)
{
	struct kinesis_stream_summary s;
	struct kl_errinfo info;
	enum kl_err err;

	TF_CHECK_OK(kinesis_delete_stream(&fx.c, fx.stream, &info));
	TF_CHECK_OK(kinesis_delete_stream(&fx.c, fx.reshard, &info));
	/* Gone, or on its way (deleteStreamMs may be non-zero). */
	err = kinesis_describe_stream_summary(&fx.c, fx.stream, &s, &info);
	CU_ASSERT(err == KL_ENOTFOUND || (err == KL_OK && s.status == KINESIS_STREAM_DELETING));
	CU_ASSERT_EQUAL(kinesis_delete_stream(&fx.c, "kl-no-such-stream", &info), KL_ENOTFOUND);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_create_describe),
		KL_TEST(test_list_shards),
		KL_TEST(test_put_get_records),
		KL_TEST(test_iterator_types),
		KL_TEST(test_put_records_limits),
		KL_TEST(test_split_merge),
		KL_TEST(test_delete_streams),
		{ 0 },
	};
	int rc;

	if (setup() != 0) {
		fprintf(stderr, "integ_kinesis: setup failed\n");
		return 1;
	}
	rc = kl_test_run("integ_kinesis", t);
	teardown();
	return rc;
}
