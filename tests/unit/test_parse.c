/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_parse.c: the Kinesis and DynamoDB clients' request builders and
 * response parsers, on canned JSON (the only place canned service answers
 * are allowed; the integration tests talk to the real emulators). Requests
 * are compared as exact serialised JSON, so a field that appears, vanishes
 * or is renamed shows up here.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "aws.h"
#include "creds.h"
#include "ddb.h"
#include "http.h"
#include "kinesis.h"
#include "loophttp.h"
#include "testutil.h"

/* ------------------------------------------------------------ helpers */

static json_object *parse(const char *text)
{
	json_object *o = json_tokener_parse(text);

	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	return o;
}

/* Asserts req serialises (as aws_json_call sends it) to exactly expected,
 * then releases req. */
#define ASSERT_REQ(req, expected)                                                         \
	do {                                                                              \
		const char *got_ = json_object_to_json_string_ext((req),                  \
								  JSON_C_TO_STRING_PLAIN); \
		CU_ASSERT_STRING_EQUAL(got_, (expected));                                 \
		if (strcmp(got_, (expected)) != 0)                                        \
			fprintf(stderr, "\n  got:      %s\n  expected: %s\n", got_, (expected)); \
		json_object_put(req);                                                     \
		(req) = NULL;                                                             \
	} while (0)

/* Serialises a standalone value and releases it. */
#define ASSERT_VALUE(val, expected) ASSERT_REQ(val, expected)

static const char MAX_HASH[] = "340282366920938463463374607431768211455";

/* ------------------------------------------------------------ kinesis */

static void test_stream_name(void)
{
	char longname[200];

	CU_ASSERT_STRING_EQUAL(kinesis_stream_name("clicks"), "clicks");
	CU_ASSERT_STRING_EQUAL(
		kinesis_stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/clicks"), "clicks");
	CU_ASSERT_STRING_EQUAL(
		kinesis_stream_name("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/a.b-c_d"),
		"a.b-c_d");
	CU_ASSERT_PTR_NULL(kinesis_stream_name(
		"arn:aws:kinesis:us-east-1:123456789012:stream/clicks/consumer/app:1700000000"));
	CU_ASSERT_PTR_NULL(kinesis_stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/"));
	CU_ASSERT_PTR_NULL(kinesis_stream_name("arn:aws:s3:::bucket"));
	CU_ASSERT_PTR_NULL(kinesis_stream_name(""));
	CU_ASSERT_PTR_NULL(kinesis_stream_name(NULL));
	memset(longname, 'x', 129);
	longname[129] = '\0';
	CU_ASSERT_PTR_NULL(kinesis_stream_name(longname));
	longname[128] = '\0';
	CU_ASSERT_PTR_EQUAL(kinesis_stream_name(longname), longname);
}

static void test_hash_key(void)
{
	struct kinesis_hash_key zero, max, mid, k, a, b;
	char out[KINESIS_HASH_KEY_MAX + 1];

	CU_ASSERT_EQUAL(kinesis_hash_key_parse("0", &zero), KL_OK);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse(MAX_HASH, &max), KL_OK);
	CU_ASSERT_EQUAL(max.w[0], UINT32_MAX);
	CU_ASSERT_EQUAL(max.w[3], UINT32_MAX);
	kinesis_hash_key_format(&max, out);
	CU_ASSERT_STRING_EQUAL(out, MAX_HASH);
	kinesis_hash_key_format(&zero, out);
	CU_ASSERT_STRING_EQUAL(out, "0");

	/* 2^128 overflows; so does a 40-digit number; junk is rejected. */
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("340282366920938463463374607431768211456", &k),
			KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("1000000000000000000000000000000000000000", &k),
			KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("", &k), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("12a", &k), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("-1", &k), KL_EINVAL);

	/* The midpoint of the full range is 2^127 - 1 (floor). */
	kinesis_hash_key_mid(&zero, &max, &mid);
	kinesis_hash_key_format(&mid, out);
	CU_ASSERT_STRING_EQUAL(out, "170141183460469231731687303715884105727");
	/* max + max does not overflow into garbage. */
	kinesis_hash_key_mid(&max, &max, &mid);
	CU_ASSERT_EQUAL(kinesis_hash_key_cmp(&mid, &max), 0);

	CU_ASSERT_EQUAL(kinesis_hash_key_parse("4294967296", &a), KL_OK); /* 2^32 */
	CU_ASSERT_EQUAL(a.w[2], 1);
	CU_ASSERT_EQUAL(a.w[3], 0);
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("4294967295", &b), KL_OK);
	CU_ASSERT_EQUAL(kinesis_hash_key_cmp(&a, &b), 1);
	CU_ASSERT_EQUAL(kinesis_hash_key_cmp(&b, &a), -1);
	CU_ASSERT_EQUAL(kinesis_hash_key_cmp(&zero, &max), -1);
	kinesis_hash_key_mid(&a, &b, &mid);
	kinesis_hash_key_format(&mid, out);
	CU_ASSERT_STRING_EQUAL(out, "4294967295");
	CU_ASSERT_EQUAL(kinesis_hash_key_parse("85070591730234615865843651857942052864", &k), KL_OK);
	kinesis_hash_key_format(&k, out);
	CU_ASSERT_STRING_EQUAL(out, "85070591730234615865843651857942052864");
}

static void test_req_describe_stream_summary(void)
{
	json_object *req = NULL;

	CU_ASSERT_EQUAL(kinesis_req_describe_stream_summary("clicks", &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"clicks\"}");
	CU_ASSERT_EQUAL(kinesis_req_describe_stream_summary(
				"arn:aws:kinesis:eu-west-1:111122223333:stream/clicks", &req),
			KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"clicks\"}");
	CU_ASSERT_EQUAL(kinesis_req_describe_stream_summary("", &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
}

static void test_parse_describe_stream_summary(void)
{
	json_object *resp = parse(
		"{\"StreamDescriptionSummary\":{\"StreamName\":\"clicks\","
		"\"StreamARN\":\"arn:aws:kinesis:us-east-1:000000000000:stream/clicks\","
		"\"StreamStatus\":\"UPDATING\",\"RetentionPeriodHours\":24,"
		"\"StreamCreationTimestamp\":1795291116,\"EnhancedMonitoring\":[{\"ShardLevelMetrics\":[]}],"
		"\"EncryptionType\":\"NONE\",\"OpenShardCount\":3,\"ConsumerCount\":0}}");
	struct kinesis_stream_summary s;

	CU_ASSERT_EQUAL_FATAL(kinesis_parse_describe_stream_summary(resp, &s), KL_OK);
	CU_ASSERT_STRING_EQUAL(s.stream_name, "clicks");
	CU_ASSERT_STRING_EQUAL(s.stream_arn, "arn:aws:kinesis:us-east-1:000000000000:stream/clicks");
	CU_ASSERT_EQUAL(s.status, KINESIS_STREAM_UPDATING);
	CU_ASSERT_EQUAL(s.retention_hours, 24);
	CU_ASSERT_EQUAL(s.open_shard_count, 3);
	CU_ASSERT_EQUAL(s.consumer_count, 0);
	CU_ASSERT_EQUAL(s.created_ms, INT64_C(1795291116000));
	CU_ASSERT_EQUAL(s.encryption, KINESIS_ENCRYPTION_NONE);
	CU_ASSERT_EQUAL(s.on_demand, 0);
	json_object_put(resp);

	resp = parse("{\"StreamDescriptionSummary\":{\"StreamName\":\"x\",\"StreamStatus\":\"ACTIVE\","
		     "\"StreamCreationTimestamp\":1.7e9,\"EncryptionType\":\"KMS\","
		     "\"StreamModeDetails\":{\"StreamMode\":\"ON_DEMAND\"}}}");
	CU_ASSERT_EQUAL_FATAL(kinesis_parse_describe_stream_summary(resp, &s), KL_OK);
	CU_ASSERT_EQUAL(s.status, KINESIS_STREAM_ACTIVE);
	CU_ASSERT_EQUAL(s.created_ms, INT64_C(1700000000000));
	CU_ASSERT_EQUAL(s.encryption, KINESIS_ENCRYPTION_KMS);
	CU_ASSERT_EQUAL(s.on_demand, 1);
	CU_ASSERT_EQUAL(s.consumer_count, -1);
	json_object_put(resp);

	resp = parse("{\"StreamDescription\":{}}");
	CU_ASSERT_EQUAL(kinesis_parse_describe_stream_summary(resp, &s), KL_EPARSE);
	json_object_put(resp);
}

static void test_req_list_shards(void)
{
	struct kinesis_list_shards_opts opts = { 0 };
	json_object *req = NULL;

	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", NULL, NULL, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s1\"}");

	opts.exclusive_start_shard_id = "shardId-000000000001";
	opts.max_results = 2;
	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", &opts, NULL, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s1\",\"ExclusiveStartShardId\":\"shardId-000000000001\","
			"\"MaxResults\":2}");

	/* A continuation page: the token only (kinesalite exits otherwise, AWS
	 * rejects StreamName + NextToken). */
	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", &opts, "AAAAtoken==", &req), KL_OK);
	CU_ASSERT_FALSE(json_object_object_get_ex(req, "StreamName", NULL));
	CU_ASSERT_FALSE(json_object_object_get_ex(req, "ExclusiveStartShardId", NULL));
	ASSERT_REQ(req, "{\"NextToken\":\"AAAAtoken==\",\"MaxResults\":2}");
	CU_ASSERT_EQUAL(kinesis_req_list_shards(NULL, NULL, "tok", &req), KL_OK);
	ASSERT_REQ(req, "{\"NextToken\":\"tok\"}");
	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", NULL, "", &req), KL_EINVAL);

	memset(&opts, 0, sizeof(opts));
	opts.filter_type = "AT_TIMESTAMP";
	opts.filter_timestamp_ms = INT64_C(1795291116903);
	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", &opts, NULL, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s1\",\"ShardFilter\":{\"Type\":\"AT_TIMESTAMP\","
			"\"Timestamp\":1795291116.903}}");
	opts.filter_type = "AFTER_SHARD_ID";
	opts.filter_shard_id = "shardId-000000000003";
	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", &opts, NULL, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s1\",\"ShardFilter\":{\"Type\":\"AFTER_SHARD_ID\","
			"\"ShardId\":\"shardId-000000000003\"}}");
	/* The filter goes on the first page only. */
	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", &opts, "tok", &req), KL_OK);
	ASSERT_REQ(req, "{\"NextToken\":\"tok\"}");

	opts.max_results = 10001;
	CU_ASSERT_EQUAL(kinesis_req_list_shards("s1", &opts, NULL, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_req_list_shards("arn:aws:s3:::b", NULL, NULL, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
}

static const char LIST_SHARDS_PAGE[] =
	"{\"Shards\":["
	"{\"ShardId\":\"shardId-000000000000\","
	"\"HashKeyRange\":{\"StartingHashKey\":\"0\","
	"\"EndingHashKey\":\"340282366920938463463374607431768211455\"},"
	"\"SequenceNumberRange\":{\"StartingSequenceNumber\":"
	"\"49590338271490256608559692538361571095921575989136588898\","
	"\"EndingSequenceNumber\":\"49590338271501407981158957849931130029238326337312325634\"}},"
	"{\"ShardId\":\"shardId-000000000001\",\"ParentShardId\":\"shardId-000000000000\","
	"\"HashKeyRange\":{\"StartingHashKey\":\"0\","
	"\"EndingHashKey\":\"170141183460469231731687303715884105727\"},"
	"\"SequenceNumberRange\":{\"StartingSequenceNumber\":"
	"\"49590338271512708633358236780891672101093186532467998738\"}},"
	"{\"ShardId\":\"shardId-000000000003\",\"ParentShardId\":\"shardId-000000000001\","
	"\"AdjacentParentShardId\":\"shardId-000000000002\",\"FutureField\":{\"x\":1},"
	"\"HashKeyRange\":{\"StartingHashKey\":\"0\","
	"\"EndingHashKey\":\"340282366920938463463374607431768211455\"},"
	"\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"1\"}}],"
	"\"NextToken\":\"AAAAAAAAAAGK\"}";

static void test_parse_list_shards(void)
{
	json_object *resp = parse(LIST_SHARDS_PAGE);
	struct kinesis_shard *shards = NULL;
	char *token = NULL;
	size_t n = 0;

	CU_ASSERT_EQUAL_FATAL(kinesis_parse_list_shards(resp, &shards, &n, &token), KL_OK);
	json_object_put(resp);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	CU_ASSERT_STRING_EQUAL(token, "AAAAAAAAAAGK");
	CU_ASSERT_STRING_EQUAL(shards[0].shard_id, "shardId-000000000000");
	CU_ASSERT_STRING_EQUAL(shards[0].parent_shard_id, "");
	CU_ASSERT_STRING_EQUAL(shards[0].adjacent_parent_shard_id, "");
	CU_ASSERT_STRING_EQUAL(shards[0].starting_hash_key, "0");
	CU_ASSERT_STRING_EQUAL(shards[0].ending_hash_key, MAX_HASH);
	CU_ASSERT_STRING_EQUAL(shards[0].starting_sequence_number,
			       "49590338271490256608559692538361571095921575989136588898");
	CU_ASSERT_STRING_EQUAL(shards[0].ending_sequence_number,
			       "49590338271501407981158957849931130029238326337312325634");
	CU_ASSERT_TRUE(kinesis_shard_is_closed(&shards[0]));
	CU_ASSERT_STRING_EQUAL(shards[1].parent_shard_id, "shardId-000000000000");
	CU_ASSERT_STRING_EQUAL(shards[1].ending_hash_key, "170141183460469231731687303715884105727");
	CU_ASSERT_FALSE(kinesis_shard_is_closed(&shards[1]));
	CU_ASSERT_STRING_EQUAL(shards[2].parent_shard_id, "shardId-000000000001");
	CU_ASSERT_STRING_EQUAL(shards[2].adjacent_parent_shard_id, "shardId-000000000002");
	free(shards);
	free(token);

	/* The last page (kinesalite: the only page) has no NextToken. */
	resp = parse("{\"Shards\":[]}");
	shards = (struct kinesis_shard *)&n; /* must be overwritten */
	CU_ASSERT_EQUAL(kinesis_parse_list_shards(resp, &shards, &n, &token), KL_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_PTR_NULL(shards);
	CU_ASSERT_PTR_NULL(token);
	json_object_put(resp);
}

static void test_parse_list_shards_bad(void)
{
	static const char *const bad[] = {
		"{}",
		"{\"Shards\":{}}",
		"{\"Shards\":[1]}",
		/* no HashKeyRange */
		"{\"Shards\":[{\"ShardId\":\"s\",\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"1\"}}]}",
		/* no ShardId */
		"{\"Shards\":[{\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"1\"},"
		"\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"1\"}}]}",
		/* a 40-digit hash key does not fit */
		"{\"Shards\":[{\"ShardId\":\"s\",\"HashKeyRange\":{\"StartingHashKey\":\"0\","
		"\"EndingHashKey\":\"1000000000000000000000000000000000000000\"},"
		"\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"1\"}}]}",
	};
	struct kinesis_shard *shards = NULL;
	char *token = NULL;
	size_t n = 99;

	for (size_t i = 0; i < KL_ARRAY_LEN(bad); i++) {
		json_object *resp = parse(bad[i]);
		CU_ASSERT_EQUAL(kinesis_parse_list_shards(resp, &shards, &n, &token), KL_EPARSE);
		json_object_put(resp);
	}
	CU_ASSERT_PTR_NULL(shards);
	CU_ASSERT_PTR_NULL(token);
	CU_ASSERT_EQUAL(n, 99);
}

static void test_req_get_shard_iterator(void)
{
	struct kinesis_position pos = { 0 };
	json_object *req = NULL;

	pos.type = KINESIS_ITER_TRIM_HORIZON;
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "shardId-000000000000", &pos, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardId\":\"shardId-000000000000\","
			"\"ShardIteratorType\":\"TRIM_HORIZON\"}");
	pos.type = KINESIS_ITER_LATEST;
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "shardId-1", &pos, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardId\":\"shardId-1\","
			"\"ShardIteratorType\":\"LATEST\"}");
	pos.type = KINESIS_ITER_AT_SEQUENCE_NUMBER;
	pos.sequence_number = "49590338271490256608559692538361571095921575989136588898";
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "shardId-1", &pos, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardId\":\"shardId-1\","
			"\"ShardIteratorType\":\"AT_SEQUENCE_NUMBER\",\"StartingSequenceNumber\":"
			"\"49590338271490256608559692538361571095921575989136588898\"}");
	pos.type = KINESIS_ITER_AFTER_SEQUENCE_NUMBER;
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "shardId-1", &pos, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardId\":\"shardId-1\","
			"\"ShardIteratorType\":\"AFTER_SEQUENCE_NUMBER\",\"StartingSequenceNumber\":"
			"\"49590338271490256608559692538361571095921575989136588898\"}");
	pos.type = KINESIS_ITER_AT_TIMESTAMP;
	pos.timestamp_ms = INT64_C(1795291116005);
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "shardId-1", &pos, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardId\":\"shardId-1\","
			"\"ShardIteratorType\":\"AT_TIMESTAMP\",\"Timestamp\":1795291116.005}");

	pos.type = KINESIS_ITER_AT_SEQUENCE_NUMBER;
	pos.sequence_number = NULL;
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "shardId-1", &pos, &req), KL_EINVAL);
	pos.type = KINESIS_ITER_AFTER_SEQUENCE_NUMBER;
	pos.sequence_number = "";
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "shardId-1", &pos, &req), KL_EINVAL);
	pos.type = KINESIS_ITER_LATEST;
	CU_ASSERT_EQUAL(kinesis_req_get_shard_iterator("s", "", &pos, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
}

static void test_parse_get_shard_iterator(void)
{
	json_object *resp = parse("{\"ShardIterator\":\"AAAAAAAAAAE+abc/def==\"}");
	char *it = NULL;

	CU_ASSERT_EQUAL(kinesis_parse_get_shard_iterator(resp, &it), KL_OK);
	CU_ASSERT_STRING_EQUAL(it, "AAAAAAAAAAE+abc/def==");
	free(it);
	json_object_put(resp);
	it = NULL;
	resp = parse("{\"ShardIterator\":null}");
	CU_ASSERT_EQUAL(kinesis_parse_get_shard_iterator(resp, &it), KL_EPARSE);
	CU_ASSERT_PTR_NULL(it);
	json_object_put(resp);
}

static void test_req_get_records(void)
{
	json_object *req = NULL;

	/* Limit is always sent; 0 means the maximum. */
	CU_ASSERT_EQUAL(kinesis_req_get_records("AAAA/it+", 0, &req), KL_OK);
	CU_ASSERT_TRUE(json_object_object_get_ex(req, "Limit", NULL));
	ASSERT_REQ(req, "{\"ShardIterator\":\"AAAA\\/it+\",\"Limit\":10000}");
	CU_ASSERT_EQUAL(kinesis_req_get_records("it", 25, &req), KL_OK);
	ASSERT_REQ(req, "{\"ShardIterator\":\"it\",\"Limit\":25}");
	CU_ASSERT_EQUAL(kinesis_req_get_records("it", 10000, &req), KL_OK);
	ASSERT_REQ(req, "{\"ShardIterator\":\"it\",\"Limit\":10000}");
	CU_ASSERT_EQUAL(kinesis_req_get_records("it", 10001, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_req_get_records("it", -1, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_req_get_records("", 1, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_req_get_records(NULL, 1, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
}

/*
 * Runs the GetRecords scanner on an exactly sized heap copy of text (no
 * NUL after it, so a read past the end shows under ASan and valgrind) and
 * frees the copy before returning: nothing in the result may point into it.
 */
static enum kl_err parse_get_records(const char *text, struct kinesis_records **ret)
{
	size_t len = strlen(text);
	char *copy = malloc(len ? len : 1);
	enum kl_err err;

	CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
	memcpy(copy, text, len);
	err = kinesis_parse_get_records(copy, len, ret, NULL);
	free(copy);
	return err;
}

static void test_parse_get_records(void)
{
	/* "aGVsbG8=" = "hello"; "AAEC/w==" = 00 01 02 ff; "" = empty data. */
	const char *resp = (
		"{\"Records\":["
		"{\"SequenceNumber\":\"49590338271490256608559692538361571095921575989136588898\","
		"\"ApproximateArrivalTimestamp\":1795291116.903,\"Data\":\"aGVsbG8=\","
		"\"PartitionKey\":\"user-1\"},"
		"{\"SequenceNumber\":\"49590338271490256608559692538361571095921575989136588899\","
		"\"ApproximateArrivalTimestamp\":1795291117,\"Data\":\"AAEC/w==\","
		"\"PartitionKey\":\"user-2\",\"EncryptionType\":\"KMS\"},"
		"{\"SequenceNumber\":\"49590338271490256608559692538361571095921575989136588900\","
		"\"ApproximateArrivalTimestamp\":1795291117.1,\"Data\":\"\","
		"\"PartitionKey\":\"\\u00e9\"}],"
		"\"NextShardIterator\":\"AAAAAAAAAAHnext\",\"MillisBehindLatest\":1234}");
	struct kinesis_records *r = NULL;

	/* The result owns everything: parse_get_records() frees its copy of
	 * the body before returning. */
	CU_ASSERT_EQUAL_FATAL(parse_get_records(resp, &r), KL_OK);
	CU_ASSERT_EQUAL_FATAL(r->n_records, 3);
	CU_ASSERT_EQUAL(r->data_bytes, 9);
	CU_ASSERT_STRING_EQUAL(r->next_iterator, "AAAAAAAAAAHnext");
	CU_ASSERT_EQUAL(r->millis_behind_latest, 1234);
	CU_ASSERT_EQUAL(r->n_children, 0);
	CU_ASSERT_PTR_NULL(r->children);

	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number,
			       "49590338271490256608559692538361571095921575989136588898");
	CU_ASSERT_STRING_EQUAL(r->records[0].partition_key, "user-1");
	CU_ASSERT_EQUAL(r->records[0].data_len, 5);
	CU_ASSERT_EQUAL(memcmp(r->records[0].data, "hello", 5), 0);
	/* Exact ms, no binary rounding (1795291116.903 * 1000 is not exact). */
	CU_ASSERT_EQUAL(r->records[0].arrival_ms, INT64_C(1795291116903));
	CU_ASSERT_EQUAL(r->records[0].encryption, KINESIS_ENCRYPTION_NONE);

	CU_ASSERT_EQUAL(r->records[1].data_len, 4);
	CU_ASSERT_EQUAL(memcmp(r->records[1].data, "\x00\x01\x02\xff", 4), 0);
	CU_ASSERT_EQUAL(r->records[1].arrival_ms, INT64_C(1795291117000));
	CU_ASSERT_EQUAL(r->records[1].encryption, KINESIS_ENCRYPTION_KMS);

	CU_ASSERT_EQUAL(r->records[2].data_len, 0);
	CU_ASSERT_EQUAL(r->records[2].arrival_ms, INT64_C(1795291117100));
	CU_ASSERT_STRING_EQUAL(r->records[2].partition_key, "\xc3\xa9");
	kinesis_records_free(r);
}

static void test_parse_get_records_shard_end(void)
{
	/* AWS at the end of a closed shard: no NextShardIterator, ChildShards. */
	const char *resp = (
		"{\"Records\":[],\"MillisBehindLatest\":0,\"ChildShards\":["
		"{\"ShardId\":\"shardId-000000000001\",\"ParentShards\":[\"shardId-000000000000\"],"
		"\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"17\"}},"
		"{\"ShardId\":\"shardId-000000000004\","
		"\"ParentShards\":[\"shardId-000000000002\",\"shardId-000000000003\"],"
		"\"HashKeyRange\":{\"StartingHashKey\":\"18\",\"EndingHashKey\":\"99\"}}]}");
	struct kinesis_records *r = NULL;

	CU_ASSERT_EQUAL_FATAL(parse_get_records(resp, &r), KL_OK);
	CU_ASSERT_EQUAL(r->n_records, 0);
	CU_ASSERT_PTR_NULL(r->records);
	CU_ASSERT_PTR_NULL(r->next_iterator);
	CU_ASSERT_EQUAL(r->millis_behind_latest, 0);
	CU_ASSERT_EQUAL_FATAL(r->n_children, 2);
	CU_ASSERT_STRING_EQUAL(r->children[0].shard_id, "shardId-000000000001");
	CU_ASSERT_EQUAL(r->children[0].n_parents, 1);
	CU_ASSERT_STRING_EQUAL(r->children[0].parent_shard_ids[0], "shardId-000000000000");
	CU_ASSERT_STRING_EQUAL(r->children[0].ending_hash_key, "17");
	CU_ASSERT_EQUAL(r->children[1].n_parents, 2);
	CU_ASSERT_STRING_EQUAL(r->children[1].parent_shard_ids[1], "shardId-000000000003");
	CU_ASSERT_STRING_EQUAL(r->children[1].starting_hash_key, "18");
	kinesis_records_free(r);

	/* kinesalite at the end: an explicit null counts as absent too. */
	resp = "{\"Records\":[],\"NextShardIterator\":null,\"MillisBehindLatest\":12}";
	CU_ASSERT_EQUAL_FATAL(parse_get_records(resp, &r), KL_OK);
	CU_ASSERT_PTR_NULL(r->next_iterator);
	CU_ASSERT_EQUAL(r->millis_behind_latest, 12);
	kinesis_records_free(r);

	resp = "{\"Records\":[]}";
	CU_ASSERT_EQUAL_FATAL(parse_get_records(resp, &r), KL_OK);
	CU_ASSERT_EQUAL(r->millis_behind_latest, -1);
	kinesis_records_free(r);
	kinesis_records_free(NULL);
}

static void test_parse_get_records_bad(void)
{
	static const char *const bad[] = {
		"{\"Records\":{}}",
		"{\"Records\":[1]}",
		"{\"Records\":[{\"Data\":\"aGk=\",\"PartitionKey\":\"p\"}]}",
		"{\"Records\":[{\"SequenceNumber\":\"1\",\"PartitionKey\":\"p\"}]}",
		"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\"}]}",
		"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"a*k=\",\"PartitionKey\":\"p\"}]}",
		"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"a\",\"PartitionKey\":\"p\"}]}",
		"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"p\","
		"\"ApproximateArrivalTimestamp\":\"soon\"}]}",
		"{\"Records\":[],\"ChildShards\":[{\"ParentShards\":[]}]}",
		"{\"Records\":[],\"ChildShards\":[{\"ShardId\":\"c\",\"ParentShards\":[\"a\",\"b\",\"c\"]}]}",
		"[]",
	};
	struct kinesis_records *r = NULL;

	for (size_t i = 0; i < KL_ARRAY_LEN(bad); i++) {
		CU_ASSERT_EQUAL(parse_get_records(bad[i], &r), KL_EPARSE);
	}
	CU_ASSERT_PTR_NULL(r);
}

static void test_parse_timestamps(void)
{
	static const struct {
		const char *json;
		int64_t ms;
	} cases[] = {
		{ "1700000000", INT64_C(1700000000000) },
		{ "1700000000.5", INT64_C(1700000000500) },
		{ "1700000000.05", INT64_C(1700000000050) },
		{ "1700000000.123456", INT64_C(1700000000123) },
		{ "1700000000.999", INT64_C(1700000000999) },
		{ "1.7000000001e9", INT64_C(1700000000100) },
		{ "0.001", 1 },
	};
	char text[256];

	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		struct kinesis_records *r = NULL;

		snprintf(text, sizeof(text),
			 "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"\",\"PartitionKey\":\"p\","
			 "\"ApproximateArrivalTimestamp\":%s}]}", cases[i].json);
		CU_ASSERT_EQUAL_FATAL(parse_get_records(text, &r), KL_OK);
		CU_ASSERT_EQUAL(r->records[0].arrival_ms, cases[i].ms);
		if (r->records[0].arrival_ms != cases[i].ms)
			fprintf(stderr, "\n  %s gave %lld\n", cases[i].json,
				(long long)r->records[0].arrival_ms);
		kinesis_records_free(r);
	}
}

static void test_req_put_records(void)
{
	struct kinesis_put_entry e[3] = {
		{ "hello", 5, "user-1", NULL },
		{ "\x00\x01\x02\xff", 4, "user-2", "170141183460469231731687303715884105728" },
		{ NULL, 0, "k", NULL },
	};
	struct kinesis_put_entry *many;
	char longkey[KINESIS_PARTITION_KEY_MAX + 2];
	json_object *req = NULL;

	CU_ASSERT_EQUAL(kinesis_req_put_records("s", e, 3, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"Records\":["
			"{\"Data\":\"aGVsbG8=\",\"PartitionKey\":\"user-1\"},"
			"{\"Data\":\"AAEC\\/w==\",\"PartitionKey\":\"user-2\","
			"\"ExplicitHashKey\":\"170141183460469231731687303715884105728\"},"
			"{\"Data\":\"\",\"PartitionKey\":\"k\"}]}");

	CU_ASSERT_EQUAL(kinesis_req_put_records("s", e, 0, &req), KL_EINVAL);
	many = calloc(KINESIS_PUT_RECORDS_MAX + 1, sizeof(*many));
	CU_ASSERT_PTR_NOT_NULL_FATAL(many);
	for (size_t i = 0; i <= KINESIS_PUT_RECORDS_MAX; i++)
		many[i] = e[0];
	CU_ASSERT_EQUAL(kinesis_req_put_records("s", many, KINESIS_PUT_RECORDS_MAX + 1, &req),
			KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_req_put_records("s", many, KINESIS_PUT_RECORDS_MAX, &req), KL_OK);
	CU_ASSERT_EQUAL(json_object_array_length(json_object_object_get(req, "Records")),
			KINESIS_PUT_RECORDS_MAX);
	json_object_put(req);
	req = NULL;
	free(many);

	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	e[0].partition_key = longkey; /* 257 characters */
	CU_ASSERT_EQUAL(kinesis_req_put_records("s", e, 1, &req), KL_EINVAL);
	longkey[KINESIS_PARTITION_KEY_MAX] = '\0';
	CU_ASSERT_EQUAL(kinesis_req_put_records("s", e, 1, &req), KL_OK);
	json_object_put(req);
	req = NULL;
	e[0].partition_key = "";
	CU_ASSERT_EQUAL(kinesis_req_put_records("s", e, 1, &req), KL_EINVAL);
	e[0].partition_key = "p";
	e[0].data_len = KINESIS_RECORD_DATA_MAX + 1;
	CU_ASSERT_EQUAL(kinesis_req_put_records("s", e, 1, &req), KL_EINVAL);
	e[0].data_len = 5;
	e[0].explicit_hash_key = "340282366920938463463374607431768211456";
	CU_ASSERT_EQUAL(kinesis_req_put_records("s", e, 1, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
}

static void test_parse_put_records(void)
{
	json_object *resp = parse(
		"{\"FailedRecordCount\":1,\"Records\":["
		"{\"SequenceNumber\":\"49590338271490256608559692538361571095921575989136588898\","
		"\"ShardId\":\"shardId-000000000000\"},"
		"{\"ErrorCode\":\"ProvisionedThroughputExceededException\","
		"\"ErrorMessage\":\"Rate exceeded for shard shardId-000000000001\"},"
		"{\"SequenceNumber\":\"2\",\"ShardId\":\"shardId-000000000001\"}],"
		"\"EncryptionType\":\"NONE\"}");
	struct kinesis_put_results *res = NULL;

	CU_ASSERT_EQUAL_FATAL(kinesis_parse_put_records(resp, 3, &res), KL_OK);
	CU_ASSERT_EQUAL(res->n, 3);
	CU_ASSERT_EQUAL(res->failed_count, 1);
	CU_ASSERT_STRING_EQUAL(res->r[0].sequence_number,
			       "49590338271490256608559692538361571095921575989136588898");
	CU_ASSERT_STRING_EQUAL(res->r[0].shard_id, "shardId-000000000000");
	CU_ASSERT_STRING_EQUAL(res->r[0].error_code, "");
	CU_ASSERT_STRING_EQUAL(res->r[1].error_code, "ProvisionedThroughputExceededException");
	CU_ASSERT_STRING_EQUAL(res->r[1].error_message, "Rate exceeded for shard shardId-000000000001");
	CU_ASSERT_STRING_EQUAL(res->r[1].sequence_number, "");
	CU_ASSERT_STRING_EQUAL(res->r[2].shard_id, "shardId-000000000001");
	free(res);
	res = NULL;

	/* A count that does not match what was sent is not trusted. */
	CU_ASSERT_EQUAL(kinesis_parse_put_records(resp, 2, &res), KL_EPARSE);
	json_object_put(resp);
	/* Nor is a FailedRecordCount that disagrees with the records. */
	resp = parse("{\"FailedRecordCount\":0,\"Records\":[{\"ErrorCode\":\"InternalFailure\"}]}");
	CU_ASSERT_EQUAL(kinesis_parse_put_records(resp, 1, &res), KL_EPARSE);
	json_object_put(resp);
	resp = parse("{\"FailedRecordCount\":0,\"Records\":[{\"ShardId\":\"s\"}]}");
	CU_ASSERT_EQUAL(kinesis_parse_put_records(resp, 1, &res), KL_EPARSE);
	json_object_put(resp);
	CU_ASSERT_PTR_NULL(res);
}

static void test_req_stream_management(void)
{
	json_object *req = NULL;

	CU_ASSERT_EQUAL(kinesis_req_create_stream("s", 2, &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardCount\":2}");
	CU_ASSERT_EQUAL(kinesis_req_create_stream("s", 0, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_req_delete_stream("arn:aws:kinesis:us-east-1:1:stream/s", &req), KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\"}");
	CU_ASSERT_EQUAL(kinesis_req_split_shard("s", "shardId-000000000000",
						"170141183460469231731687303715884105728", &req),
			KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardToSplit\":\"shardId-000000000000\","
			"\"NewStartingHashKey\":\"170141183460469231731687303715884105728\"}");
	CU_ASSERT_EQUAL(kinesis_req_split_shard("s", "shardId-000000000000", "0x10", &req), KL_EINVAL);
	CU_ASSERT_EQUAL(kinesis_req_merge_shards("s", "shardId-000000000001", "shardId-000000000002",
						 &req),
			KL_OK);
	ASSERT_REQ(req, "{\"StreamName\":\"s\",\"ShardToMerge\":\"shardId-000000000001\","
			"\"AdjacentShardToMerge\":\"shardId-000000000002\"}");
	CU_ASSERT_EQUAL(kinesis_req_merge_shards("s", "shardId-000000000001", NULL, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
	CU_ASSERT_STRING_EQUAL(kinesis_iterator_type_name(KINESIS_ITER_AT_TIMESTAMP), "AT_TIMESTAMP");
}

/* ------------------------------------------------------------ dynamodb */

static const char N38[] = "12345678901234567890123456789012345678";

static void test_ddb_values(void)
{
	static const char *const ss[] = { "shardId-000000000000", "shardId-000000000001" };
	json_object *v, *map, *list;

	v = ddb_s("x\"y");
	ASSERT_VALUE(v, "{\"S\":\"x\\\"y\"}");
	v = ddb_n(N38);
	ASSERT_VALUE(v, "{\"N\":\"12345678901234567890123456789012345678\"}");
	v = ddb_n_i64(INT64_MIN);
	ASSERT_VALUE(v, "{\"N\":\"-9223372036854775808\"}");
	v = ddb_n_i64(42);
	ASSERT_VALUE(v, "{\"N\":\"42\"}");
	v = ddb_ss(ss, 2);
	ASSERT_VALUE(v, "{\"SS\":[\"shardId-000000000000\",\"shardId-000000000001\"]}");
	v = ddb_b("\x00\x01\x02\xff", 4);
	ASSERT_VALUE(v, "{\"B\":\"AAEC\\/w==\"}");
	v = ddb_b(NULL, 0);
	ASSERT_VALUE(v, "{\"B\":\"\"}");
	v = ddb_bool(true);
	ASSERT_VALUE(v, "{\"BOOL\":true}");
	v = ddb_null();
	ASSERT_VALUE(v, "{\"NULL\":true}");

	map = json_object_new_object();
	CU_ASSERT_EQUAL(ddb_set(map, "a", ddb_n("1")), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(map, "b", ddb_bool(false)), KL_OK);
	v = ddb_m(map);
	ASSERT_VALUE(v, "{\"M\":{\"a\":{\"N\":\"1\"},\"b\":{\"BOOL\":false}}}");
	list = json_object_new_array();
	json_object_array_add(list, ddb_s("x"));
	json_object_array_add(list, ddb_null());
	v = ddb_l(list);
	ASSERT_VALUE(v, "{\"L\":[{\"S\":\"x\"},{\"NULL\":true}]}");
	v = ddb_m(NULL);
	ASSERT_VALUE(v, "{\"M\":{}}");

	v = ddb_key_s("leaseKey", "shardId-000000000007");
	ASSERT_VALUE(v, "{\"leaseKey\":{\"S\":\"shardId-000000000007\"}}");

	/* ddb_set consumes, replaces, and turns a failed helper into ENOMEM. */
	map = json_object_new_object();
	CU_ASSERT_EQUAL(ddb_set(map, ":c", ddb_n_i64(1)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(map, ":c", ddb_n_i64(2)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(map, ":x", NULL), KL_ENOMEM);
	CU_ASSERT_EQUAL(ddb_set(NULL, ":x", ddb_n_i64(3)), KL_EINVAL);
	ASSERT_VALUE(map, "{\":c\":{\"N\":\"2\"}}");
	CU_ASSERT_PTR_NULL(ddb_s(NULL));
	CU_ASSERT_PTR_NULL(ddb_n(NULL));
}

static const char ITEM[] =
	"{\"leaseKey\":{\"S\":\"shardId-000000000001\"},"
	"\"leaseOwner\":{\"S\":\"host-a\"},"
	"\"leaseCounter\":{\"N\":\"42\"},"
	"\"big\":{\"N\":\"12345678901234567890123456789012345678\"},"
	"\"frac\":{\"N\":\"1.5\"},"
	"\"neg\":{\"N\":\"-9223372036854775808\"},"
	"\"over\":{\"N\":\"9223372036854775808\"},"
	"\"parentShardId\":{\"SS\":[\"shardId-000000000000\"]},"
	"\"blob\":{\"B\":\"AAEC/w==\"},"
	"\"flag\":{\"BOOL\":true},"
	"\"nothing\":{\"NULL\":true},"
	"\"meta\":{\"M\":{\"inner\":{\"S\":\"v\"}}},"
	"\"list\":{\"L\":[{\"N\":\"1\"},{\"S\":\"two\"}]},"
	"\"kclFutureAttr\":{\"S\":\"keep me\"}}";

static void test_ddb_getters(void)
{
	json_object *item = parse(ITEM);
	const char **strs = NULL;
	uint8_t *bytes = NULL;
	size_t n = 0;
	int64_t v = 0;
	bool b = false;

	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "leaseOwner"), "host-a");
	CU_ASSERT_PTR_NULL(ddb_get_s(item, "leaseCounter"));
	CU_ASSERT_PTR_NULL(ddb_get_s(item, "absent"));
	CU_ASSERT_PTR_NULL(ddb_get_s(NULL, "leaseOwner"));
	CU_ASSERT_TRUE(ddb_has(item, "nothing"));
	CU_ASSERT_FALSE(ddb_has(item, "absent"));

	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "leaseCounter", &v), KL_OK);
	CU_ASSERT_EQUAL(v, 42);
	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "neg", &v), KL_OK);
	CU_ASSERT_EQUAL(v, INT64_MIN);
	v = 7;
	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "over", &v), KL_EPARSE);
	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "big", &v), KL_EPARSE);
	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "frac", &v), KL_EPARSE);
	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "leaseOwner", &v), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_get_n_i64(item, "absent", &v), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(v, 7);
	/* 38 digits survive as text. */
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "big"), N38);

	CU_ASSERT_EQUAL_FATAL(ddb_get_ss(item, "parentShardId", &strs, &n), KL_OK);
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_STRING_EQUAL(strs[0], "shardId-000000000000");
	free(strs);
	strs = NULL;
	CU_ASSERT_EQUAL(ddb_get_ss(item, "leaseOwner", &strs, &n), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_get_ss(item, "absent", &strs, &n), KL_ENOTFOUND);
	CU_ASSERT_PTR_NULL(strs);
	/* A number set, as ddb_ns_i64() writes it: not an SS, its numbers as text. */
	{
		static const int64_t nums[] = { 3, 1023 };

		CU_ASSERT_EQUAL_FATAL(ddb_set(item, "buckets", ddb_ns_i64(nums, 2)), KL_OK);
		CU_ASSERT_EQUAL(ddb_get_ss(item, "buckets", &strs, &n), KL_EINVAL);
		CU_ASSERT_EQUAL_FATAL(ddb_get_ns(item, "buckets", &strs, &n), KL_OK);
		CU_ASSERT_EQUAL(n, 2);
		CU_ASSERT_STRING_EQUAL(strs[0], "3");
		CU_ASSERT_STRING_EQUAL(strs[1], "1023");
		free(strs);
		strs = NULL;
		CU_ASSERT_EQUAL(ddb_get_ns(item, "parentShardId", &strs, &n), KL_EINVAL);
		CU_ASSERT_EQUAL(ddb_get_ns(item, "absent", &strs, &n), KL_ENOTFOUND);
		CU_ASSERT_PTR_NULL(strs);
	}

	CU_ASSERT_EQUAL_FATAL(ddb_get_b(item, "blob", &bytes, &n), KL_OK);
	CU_ASSERT_EQUAL(n, 4);
	CU_ASSERT_EQUAL(memcmp(bytes, "\x00\x01\x02\xff", 4), 0);
	free(bytes);
	bytes = NULL;
	CU_ASSERT_EQUAL(ddb_get_b(item, "flag", &bytes, &n), KL_EINVAL);
	CU_ASSERT_PTR_NULL(bytes);

	CU_ASSERT_EQUAL(ddb_get_bool(item, "flag", &b), KL_OK);
	CU_ASSERT_TRUE(b);
	CU_ASSERT_EQUAL(ddb_get_bool(item, "nothing", &b), KL_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(ddb_get(item, "nothing", "NULL"));
	CU_ASSERT_PTR_NULL(ddb_get(item, "nothing", "S"));

	CU_ASSERT_STRING_EQUAL(ddb_get_s(ddb_get_m(item, "meta"), "inner"), "v");
	CU_ASSERT_PTR_NULL(ddb_get_m(item, "list"));
	CU_ASSERT_EQUAL(json_object_array_length(ddb_get_l(item, "list")), 2);
	CU_ASSERT_PTR_NULL(ddb_get_l(item, "meta"));
	json_object_put(item);
}

static void test_ddb_req_tables(void)
{
	json_object *req = NULL;

	CU_ASSERT_EQUAL(ddb_req_create_table("kinlake-app", "leaseKey", "S", &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"kinlake-app\","
			"\"AttributeDefinitions\":[{\"AttributeName\":\"leaseKey\",\"AttributeType\":\"S\"}],"
			"\"KeySchema\":[{\"AttributeName\":\"leaseKey\",\"KeyType\":\"HASH\"}],"
			"\"BillingMode\":\"PAY_PER_REQUEST\"}");
	CU_ASSERT_EQUAL(ddb_req_create_table("kinlake-app", "k", "SS", &req), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_req_create_table("kinlake-app", "", "S", &req), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_req_create_table("ab", "k", "S", &req), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_req_create_table("bad name", "k", "S", &req), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_req_table("kinlake-app", &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"kinlake-app\"}");
	CU_ASSERT_EQUAL(ddb_req_table(NULL, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
}

static void test_ddb_parse_describe_table(void)
{
	json_object *resp = parse(
		"{\"Table\":{\"AttributeDefinitions\":[{\"AttributeName\":\"leaseKey\","
		"\"AttributeType\":\"S\"}],\"TableName\":\"kinlake-app\","
		"\"KeySchema\":[{\"AttributeName\":\"leaseKey\",\"KeyType\":\"HASH\"}],"
		"\"TableStatus\":\"CREATING\",\"CreationDateTime\":1795291116.2,"
		"\"ProvisionedThroughput\":{\"ReadCapacityUnits\":0,\"WriteCapacityUnits\":0,"
		"\"NumberOfDecreasesToday\":0},\"TableSizeBytes\":0,\"ItemCount\":12,"
		"\"TableArn\":\"arn:aws:dynamodb:us-east-1:000000000000:table/kinlake-app\","
		"\"BillingModeSummary\":{\"BillingMode\":\"PAY_PER_REQUEST\"}}}");
	struct ddb_table_desc d;

	CU_ASSERT_EQUAL_FATAL(ddb_parse_describe_table(resp, &d), KL_OK);
	CU_ASSERT_STRING_EQUAL(d.table_name, "kinlake-app");
	CU_ASSERT_STRING_EQUAL(d.table_arn, "arn:aws:dynamodb:us-east-1:000000000000:table/kinlake-app");
	CU_ASSERT_EQUAL(d.status, DDB_TABLE_CREATING);
	CU_ASSERT_STRING_EQUAL(d.hash_key, "leaseKey");
	CU_ASSERT_STRING_EQUAL(d.hash_key_type, "S");
	CU_ASSERT_STRING_EQUAL(d.range_key, "");
	CU_ASSERT_EQUAL(d.item_count, 12);
	CU_ASSERT_TRUE(d.pay_per_request);
	json_object_put(resp);
	resp = parse("{\"TableDescription\":{}}");
	CU_ASSERT_EQUAL(ddb_parse_describe_table(resp, &d), KL_EPARSE);
	json_object_put(resp);
}

static void test_ddb_req_get_item(void)
{
	json_object *key = ddb_key_s("leaseKey", "shardId-000000000001"), *req = NULL;
	json_object *empty = json_object_new_object();

	CU_ASSERT_EQUAL(ddb_req_get_item("tbl", key, true, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Key\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"}},"
			"\"ConsistentRead\":true}");
	CU_ASSERT_EQUAL(ddb_req_get_item("tbl", key, false, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Key\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"}}}");
	CU_ASSERT_EQUAL(ddb_req_get_item("tbl", empty, false, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_req_get_item("tbl", NULL, false, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
	/* The key was borrowed: it is still ours, intact. */
	ASSERT_VALUE(key, "{\"leaseKey\":{\"S\":\"shardId-000000000001\"}}");
	json_object_put(empty);
}

static void test_ddb_parse_get_item(void)
{
	json_object *resp = parse("{}"), *item = (json_object *)&resp;

	/* No such item: KL_OK and NULL. */
	CU_ASSERT_EQUAL(ddb_parse_get_item(resp, &item), KL_OK);
	CU_ASSERT_PTR_NULL(item);
	json_object_put(resp);

	resp = json_object_new_object();
	json_object_object_add(resp, "Item", parse(ITEM));
	CU_ASSERT_EQUAL_FATAL(ddb_parse_get_item(resp, &item), KL_OK);
	/* The item is the caller's reference: it outlives the response. */
	json_object_put(resp);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(item, "kclFutureAttr"), "keep me");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "big"), N38);
	json_object_put(item);

	resp = parse("{\"Item\":[]}");
	item = NULL;
	CU_ASSERT_EQUAL(ddb_parse_get_item(resp, &item), KL_EPARSE);
	CU_ASSERT_PTR_NULL(item);
	json_object_put(resp);

	resp = parse("{\"Attributes\":{\"leaseCounter\":{\"N\":\"43\"}}}");
	CU_ASSERT_EQUAL_FATAL(ddb_parse_attributes(resp, &item), KL_OK);
	json_object_put(resp);
	ASSERT_VALUE(item, "{\"leaseCounter\":{\"N\":\"43\"}}");
}

/* A full item read and written back keeps every attribute, byte for byte. */
static void test_ddb_item_round_trip(void)
{
	json_object *item = parse(ITEM), *req = NULL, *sent;
	char expected[2048];

	CU_ASSERT_EQUAL_FATAL(ddb_req_put_item("tbl", item, NULL, &req), KL_OK);
	sent = json_object_object_get(req, "Item");
	CU_ASSERT_EQUAL(json_object_object_length(sent), json_object_object_length(item));
	snprintf(expected, sizeof(expected), "{\"TableName\":\"tbl\",\"Item\":%s}",
		 json_object_to_json_string_ext(item, JSON_C_TO_STRING_PLAIN));
	ASSERT_REQ(req, expected);
	CU_ASSERT_PTR_NOT_NULL(strstr(expected, "\"kclFutureAttr\":{\"S\":\"keep me\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(expected, "{\"N\":\"12345678901234567890123456789012345678\"}"));
	json_object_put(item);
}

static void test_ddb_req_writes(void)
{
	json_object *key = ddb_key_s("leaseKey", "shardId-000000000001"), *req = NULL;
	json_object *item = ddb_key_s("leaseKey", "shardId-000000000001");
	json_object *names = json_object_new_object(), *values = json_object_new_object();
	json_object *empty_names = json_object_new_object();
	struct ddb_write_opts w = { 0 };

	CU_ASSERT_EQUAL(ddb_set(item, "leaseCounter", ddb_n_i64(0)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(names, "#k", json_object_new_string("leaseKey")), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(values, ":c", ddb_n_i64(41)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(values, ":o", ddb_s("host-b")), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(values, ":one", ddb_n_i64(1)), KL_OK);

	/* Conditional create. */
	w.condition = "attribute_not_exists(#k)";
	w.names = names;
	CU_ASSERT_EQUAL(ddb_req_put_item("tbl", item, &w, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Item\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"},"
			"\"leaseCounter\":{\"N\":\"0\"}},\"ConditionExpression\":\"attribute_not_exists(#k)\","
			"\"ExpressionAttributeNames\":{\"#k\":\"leaseKey\"}}");
	w.return_values = DDB_RETURN_ALL_OLD;
	w.names = empty_names; /* an empty map is not sent: DynamoDB rejects it */
	w.condition = NULL;
	CU_ASSERT_EQUAL(ddb_req_put_item("tbl", item, &w, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Item\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"},"
			"\"leaseCounter\":{\"N\":\"0\"}},\"ReturnValues\":\"ALL_OLD\"}");
	w.return_values = DDB_RETURN_ALL_NEW;
	CU_ASSERT_EQUAL(ddb_req_put_item("tbl", item, &w, &req), KL_EINVAL);

	/* A lease take: conditional on the counter, increments it. */
	memset(&w, 0, sizeof(w));
	w.condition = "leaseCounter = :c";
	w.values = values;
	w.return_values = DDB_RETURN_ALL_NEW;
	CU_ASSERT_EQUAL(ddb_req_update_item("tbl", key,
					    "SET leaseOwner = :o, leaseCounter = leaseCounter + :one",
					    &w, &req),
			KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Key\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"}},"
			"\"UpdateExpression\":\"SET leaseOwner = :o, leaseCounter = leaseCounter + :one\","
			"\"ConditionExpression\":\"leaseCounter = :c\","
			"\"ExpressionAttributeValues\":{\":c\":{\"N\":\"41\"},\":o\":{\"S\":\"host-b\"},"
			"\":one\":{\"N\":\"1\"}},\"ReturnValues\":\"ALL_NEW\"}");
	w.return_values = DDB_RETURN_UPDATED_OLD;
	CU_ASSERT_EQUAL(ddb_req_update_item("tbl", key, "REMOVE x", &w, &req), KL_OK);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(req, "ReturnValues")),
			       "UPDATED_OLD");
	json_object_put(req);
	req = NULL;
	CU_ASSERT_EQUAL(ddb_req_update_item("tbl", key, "", &w, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_req_update_item("tbl", key, NULL, NULL, &req), KL_EINVAL);
	CU_ASSERT_EQUAL(ddb_req_update_item("tbl", key, "SET a = :o", NULL, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Key\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"}},"
			"\"UpdateExpression\":\"SET a = :o\"}");

	memset(&w, 0, sizeof(w));
	w.condition = "leaseOwner = :o";
	w.values = values;
	w.return_values = DDB_RETURN_ALL_OLD;
	CU_ASSERT_EQUAL(ddb_req_delete_item("tbl", key, &w, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Key\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"}},"
			"\"ConditionExpression\":\"leaseOwner = :o\","
			"\"ExpressionAttributeValues\":{\":c\":{\"N\":\"41\"},\":o\":{\"S\":\"host-b\"},"
			"\":one\":{\"N\":\"1\"}},\"ReturnValues\":\"ALL_OLD\"}");
	CU_ASSERT_EQUAL(ddb_req_delete_item("tbl", key, NULL, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Key\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"}}}");
	w.return_values = DDB_RETURN_UPDATED_NEW;
	CU_ASSERT_EQUAL(ddb_req_delete_item("tbl", key, &w, &req), KL_EINVAL);

	/* A non-object map is a caller bug the builder refuses. */
	memset(&w, 0, sizeof(w));
	w.values = json_object_new_array();
	CU_ASSERT_EQUAL(ddb_req_delete_item("tbl", key, &w, &req), KL_EINVAL);
	json_object_put(w.values);
	CU_ASSERT_PTR_NULL(req);

	/* Every input is still the caller's and unchanged. */
	ASSERT_VALUE(values, "{\":c\":{\"N\":\"41\"},\":o\":{\"S\":\"host-b\"},\":one\":{\"N\":\"1\"}}");
	json_object_put(names);
	json_object_put(empty_names);
	json_object_put(item);
	json_object_put(key);
}

static void test_ddb_req_scan(void)
{
	json_object *start = ddb_key_s("leaseKey", "shardId-000000000006"), *req = NULL;
	json_object *values = json_object_new_object(), *names = json_object_new_object();
	struct ddb_scan_opts o = { 0 };

	CU_ASSERT_EQUAL(ddb_req_scan("tbl", NULL, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\"}");
	o.limit = 7;
	o.exclusive_start_key = start;
	o.consistent_read = true;
	CU_ASSERT_EQUAL(ddb_req_scan("tbl", &o, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"Limit\":7,"
			"\"ExclusiveStartKey\":{\"leaseKey\":{\"S\":\"shardId-000000000006\"}},"
			"\"ConsistentRead\":true}");
	ddb_set(values, ":t", ddb_s("LEASE"));
	ddb_set(names, "#t", json_object_new_string("entityType"));
	memset(&o, 0, sizeof(o));
	o.filter = "attribute_not_exists(#t) OR #t = :t";
	o.names = names;
	o.values = values;
	CU_ASSERT_EQUAL(ddb_req_scan("tbl", &o, &req), KL_OK);
	ASSERT_REQ(req, "{\"TableName\":\"tbl\",\"FilterExpression\":\"attribute_not_exists(#t) OR #t = :t\","
			"\"ExpressionAttributeNames\":{\"#t\":\"entityType\"},"
			"\"ExpressionAttributeValues\":{\":t\":{\"S\":\"LEASE\"}}}");
	o.limit = -1;
	CU_ASSERT_EQUAL(ddb_req_scan("tbl", &o, &req), KL_EINVAL);
	CU_ASSERT_PTR_NULL(req);
	json_object_put(start);
	json_object_put(values);
	json_object_put(names);
}

static void test_ddb_parse_scan(void)
{
	json_object *resp = parse(
		"{\"Items\":[{\"leaseKey\":{\"S\":\"a\"},\"x\":{\"N\":\"1\"}},{\"leaseKey\":{\"S\":\"b\"}}],"
		"\"Count\":2,\"ScannedCount\":7,\"LastEvaluatedKey\":{\"leaseKey\":{\"S\":\"b\"}}}");
	struct ddb_scan_page p = { 0 };

	CU_ASSERT_EQUAL_FATAL(ddb_parse_scan(resp, &p), KL_OK);
	json_object_put(resp);
	CU_ASSERT_EQUAL(json_object_array_length(p.items), 2);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(json_object_array_get_idx(p.items, 1), "leaseKey"), "b");
	CU_ASSERT_EQUAL(p.count, 2);
	CU_ASSERT_EQUAL(p.scanned_count, 7);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(p.last_evaluated_key, "leaseKey"), "b");
	ddb_scan_page_done(&p);
	CU_ASSERT_PTR_NULL(p.items);
	ddb_scan_page_done(&p);
	ddb_scan_page_done(NULL);

	/* The last page has no LastEvaluatedKey. */
	resp = parse("{\"Items\":[],\"Count\":0,\"ScannedCount\":0}");
	CU_ASSERT_EQUAL_FATAL(ddb_parse_scan(resp, &p), KL_OK);
	CU_ASSERT_EQUAL(json_object_array_length(p.items), 0);
	CU_ASSERT_PTR_NULL(p.last_evaluated_key);
	ddb_scan_page_done(&p);
	json_object_put(resp);

	resp = parse("{\"Count\":0}");
	CU_ASSERT_EQUAL(ddb_parse_scan(resp, &p), KL_EPARSE);
	json_object_put(resp);
	resp = parse("{\"Items\":[1]}");
	CU_ASSERT_EQUAL(ddb_parse_scan(resp, &p), KL_EPARSE);
	json_object_put(resp);
	CU_ASSERT_PTR_NULL(p.items);
}

/* What the lease code relies on: a failed condition is a conflict, not a
 * retryable error, and it is distinct from throttling. */
static void test_error_classes(void)
{
	CU_ASSERT_EQUAL(aws_classify(400, "ConditionalCheckFailedException"), KL_ECONFLICT);
	CU_ASSERT_FALSE(kl_err_retryable(KL_ECONFLICT));
	CU_ASSERT_EQUAL(aws_classify(400, "ProvisionedThroughputExceededException"), KL_ETHROTTLED);
	CU_ASSERT_EQUAL(aws_classify(400, "ExpiredIteratorException"), KL_EEXPIRED);
	CU_ASSERT_EQUAL(aws_classify(400, "ResourceNotFoundException"), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(aws_classify(400, "ResourceInUseException"), KL_ESTATE);
}


/* ------------------------------------------------- through the wire */

/*
 * These run the full call (builder, aws_json_call, parser) against the
 * loopback server with canned answers: they check the headers and the
 * sequence of requests that pagination and errors produce.
 */
struct wire {
	struct loophttp *srv;
	struct creds_chain *creds;
	struct aws_client c;
};

static void wire_start(struct wire *w, const char *service)
{
	struct creds_config cc = { 0 };
	struct aws_client_config ac = { 0 };

	memset(w, 0, sizeof(*w));
	CU_ASSERT_EQUAL_FATAL(loophttp_start(NULL, NULL, &w->srv), 0);
	cc.access_key_id = "AKIDEXAMPLE";
	cc.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
	cc.disable_imds = 1;
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cc, &w->creds), KL_OK);
	ac.service = service;
	ac.region = "us-east-1";
	ac.endpoint = loophttp_url(w->srv);
	ac.http.timeout_ms = 5000;
	ac.retry.max_attempts = 2;
	ac.retry.base_delay_ms = 1;
	ac.retry.throttle_base_delay_ms = 1;
	CU_ASSERT_EQUAL_FATAL(aws_client_init(&w->c, &ac, w->creds), KL_OK);
}

static void wire_stop(struct wire *w)
{
	aws_client_done(&w->c);
	creds_chain_free(w->creds);
	loophttp_stop(w->srv);
}

/* Asserts request i was the JSON call target with exactly this body. */
static void assert_sent(struct wire *w, size_t i, const char *target, const char *ctype,
			const char *body)
{
	const struct loophttp_request *r = loophttp_request(w->srv, i);

	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->method, "POST");
	CU_ASSERT_STRING_EQUAL(r->target, "/");
	CU_ASSERT_STRING_EQUAL(loophttp_header(r, "X-Amz-Target"), target);
	CU_ASSERT_STRING_EQUAL(loophttp_header(r, "Content-Type"), ctype);
	CU_ASSERT_PTR_NOT_NULL(loophttp_header(r, "Authorization"));
	CU_ASSERT_STRING_EQUAL(r->body, body);
	if (strcmp(r->body, body) != 0)
		fprintf(stderr, "\n  sent:     %s\n  expected: %s\n", r->body, body);
}

static const char J11[] = "application/x-amz-json-1.1";
static const char J10[] = "application/x-amz-json-1.0";

#define WIRE_SHARD(id)                                                                     \
	"{\"ShardId\":\"" id "\",\"HashKeyRange\":{\"StartingHashKey\":\"0\","             \
	"\"EndingHashKey\":\"9\"},\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"1\"}}"

/* ListShards follows NextToken, and pages after the first carry nothing else. */
static void test_wire_list_shards_pages(void)
{
	struct kinesis_list_shards_opts opts = { .max_results = 1 };
	struct kinesis_shard *shards = NULL;
	struct kl_errinfo info;
	struct wire w;
	size_t n = 0;

	wire_start(&w, "kinesis");
	loophttp_push(w.srv, 200, J11, "{\"Shards\":[" WIRE_SHARD("shardId-0") "],\"NextToken\":\"t1\"}");
	loophttp_push(w.srv, 200, J11, "{\"Shards\":[" WIRE_SHARD("shardId-1") "],\"NextToken\":\"t/2\"}");
	loophttp_push(w.srv, 200, J11, "{\"Shards\":[" WIRE_SHARD("shardId-2") "]}");
	CU_ASSERT_EQUAL_FATAL(kinesis_list_shards(&w.c, "s", &opts, &shards, &n, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	CU_ASSERT_STRING_EQUAL(shards[0].shard_id, "shardId-0");
	CU_ASSERT_STRING_EQUAL(shards[2].shard_id, "shardId-2");
	free(shards);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(w.srv), 3);
	assert_sent(&w, 0, "Kinesis_20131202.ListShards", J11, "{\"StreamName\":\"s\",\"MaxResults\":1}");
	assert_sent(&w, 1, "Kinesis_20131202.ListShards", J11, "{\"NextToken\":\"t1\",\"MaxResults\":1}");
	assert_sent(&w, 2, "Kinesis_20131202.ListShards", J11, "{\"NextToken\":\"t\\/2\",\"MaxResults\":1}");

	/* A failing page fails the whole listing and returns nothing. */
	loophttp_clear(w.srv);
	loophttp_push(w.srv, 200, J11, "{\"Shards\":[" WIRE_SHARD("shardId-0") "],\"NextToken\":\"t1\"}");
	loophttp_push(w.srv, 400, J11,
		      "{\"__type\":\"ExpiredNextTokenException\",\"message\":\"token expired\"}");
	shards = NULL;
	CU_ASSERT_EQUAL(kinesis_list_shards(&w.c, "s", NULL, &shards, &n, &info), KL_EAWS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ExpiredNextTokenException");
	CU_ASSERT_PTR_NULL(shards);
	wire_stop(&w);
}

static void test_wire_get_records(void)
{
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;
	struct wire w;

	wire_start(&w, "kinesis");
	loophttp_push(w.srv, 200, J11,
		      "{\"Records\":[{\"SequenceNumber\":\"7\",\"ApproximateArrivalTimestamp\":1.5,"
		      "\"Data\":\"aGk=\",\"PartitionKey\":\"p\"}],\"NextShardIterator\":\"n\","
		      "\"MillisBehindLatest\":0}");
	CU_ASSERT_EQUAL_FATAL(kinesis_get_records(&w.c, "it", 0, &r, &info), KL_OK);
	assert_sent(&w, 0, "Kinesis_20131202.GetRecords", J11, "{\"ShardIterator\":\"it\",\"Limit\":10000}");
	CU_ASSERT_EQUAL(r->n_records, 1);
	CU_ASSERT_EQUAL(memcmp(r->records[0].data, "hi", 2), 0);
	CU_ASSERT_EQUAL(r->records[0].arrival_ms, 1500);
	kinesis_records_free(r);
	r = NULL;

	/* A 200 with the wrong shape is a parse error naming the call. */
	loophttp_push(w.srv, 200, J11, "{\"Records\":{}}");
	CU_ASSERT_EQUAL(kinesis_get_records(&w.c, "it", 5, &r, &info), KL_EPARSE);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "GetRecords"));
	CU_ASSERT_PTR_NULL(r);
	/* An expired iterator is KL_EEXPIRED and not retried. */
	loophttp_clear(w.srv);
	loophttp_push(w.srv, 400, J11, "{\"__type\":\"ExpiredIteratorException\",\"message\":\"old\"}");
	CU_ASSERT_EQUAL(kinesis_get_records(&w.c, "it", 5, &r, &info), KL_EEXPIRED);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 1);
	/* ResourceInUseException: "exists" on CreateStream, "wrong state" otherwise. */
	loophttp_push(w.srv, 400, J11, "{\"__type\":\"ResourceInUseException\",\"message\":\"x\"}");
	CU_ASSERT_EQUAL(kinesis_create_stream(&w.c, "s", 1, NULL), KL_EEXISTS);
	loophttp_push(w.srv, 400, J11, "{\"__type\":\"ResourceInUseException\",\"message\":\"x\"}");
	CU_ASSERT_EQUAL(kinesis_split_shard(&w.c, "s", "shardId-0", "5", &info), KL_ESTATE);
	wire_stop(&w);
}

/* A failed condition comes back as KL_ECONFLICT, once, with the AWS code. */
static void test_wire_conflict(void)
{
	json_object *key = ddb_key_s("leaseKey", "shardId-0"), *attrs = (json_object *)&key;
	json_object *values = json_object_new_object();
	struct ddb_write_opts o = { .condition = "leaseCounter = :c", .values = values };
	struct kl_errinfo info;
	struct wire w;

	ddb_set(values, ":c", ddb_n_i64(3));
	wire_start(&w, "dynamodb");
	loophttp_push(w.srv, 400, J10,
		      "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException\","
		      "\"message\":\"The conditional request failed\"}");
	CU_ASSERT_EQUAL(ddb_update_item(&w.c, "tbl", key, "SET leaseCounter = leaseCounter + :c", &o,
					&attrs, &info),
			KL_ECONFLICT);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ConditionalCheckFailedException");
	CU_ASSERT_EQUAL(info.http_status, 400);
	CU_ASSERT_PTR_EQUAL(attrs, (json_object *)&key); /* untouched on failure */
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 1);       /* not retried */
	assert_sent(&w, 0, "DynamoDB_20120810.UpdateItem", J10,
		    "{\"TableName\":\"tbl\",\"Key\":{\"leaseKey\":{\"S\":\"shardId-0\"}},"
		    "\"UpdateExpression\":\"SET leaseCounter = leaseCounter + :c\","
		    "\"ConditionExpression\":\"leaseCounter = :c\","
		    "\"ExpressionAttributeValues\":{\":c\":{\"N\":\"3\"}}}");

	/* Throttling is retried, then surfaces as KL_ETHROTTLED, not a conflict. */
	loophttp_clear(w.srv);
	for (int i = 0; i < 2; i++)
		loophttp_push(w.srv, 400, J10,
			      "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
			      "ProvisionedThroughputExceededException\",\"message\":\"slow down\"}");
	CU_ASSERT_EQUAL(ddb_put_item(&w.c, "tbl", key, &o, NULL, &info), KL_ETHROTTLED);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 2);
	json_object_put(values);
	json_object_put(key);
	wire_stop(&w);
}

/* ddb_scan_all feeds each LastEvaluatedKey back as ExclusiveStartKey. */
static void test_wire_scan_all(void)
{
	struct ddb_scan_opts o = { .limit = 2 };
	json_object *items = NULL;
	struct kl_errinfo info;
	struct wire w;

	wire_start(&w, "dynamodb");
	loophttp_push(w.srv, 200, J10,
		      "{\"Items\":[{\"k\":{\"S\":\"a\"}},{\"k\":{\"S\":\"b\"}}],\"Count\":2,"
		      "\"ScannedCount\":2,\"LastEvaluatedKey\":{\"k\":{\"S\":\"b\"}}}");
	loophttp_push(w.srv, 200, J10,
		      "{\"Items\":[],\"Count\":0,\"ScannedCount\":2,\"LastEvaluatedKey\":{\"k\":{\"S\":\"d\"}}}");
	loophttp_push(w.srv, 200, J10, "{\"Items\":[{\"k\":{\"S\":\"e\"}}],\"Count\":1,\"ScannedCount\":1}");
	CU_ASSERT_EQUAL_FATAL(ddb_scan_all(&w.c, "tbl", &o, 0, &items, &info), KL_OK);
	CU_ASSERT_EQUAL(json_object_array_length(items), 3);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(json_object_array_get_idx(items, 2), "k"), "e");
	json_object_put(items);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(w.srv), 3);
	assert_sent(&w, 0, "DynamoDB_20120810.Scan", J10, "{\"TableName\":\"tbl\",\"Limit\":2}");
	assert_sent(&w, 1, "DynamoDB_20120810.Scan", J10,
		    "{\"TableName\":\"tbl\",\"Limit\":2,\"ExclusiveStartKey\":{\"k\":{\"S\":\"b\"}}}");
	assert_sent(&w, 2, "DynamoDB_20120810.Scan", J10,
		    "{\"TableName\":\"tbl\",\"Limit\":2,\"ExclusiveStartKey\":{\"k\":{\"S\":\"d\"}}}");

	/* GetItem of a missing item: {} gives KL_OK and NULL. */
	json_object *key = ddb_key_s("k", "zz"), *item = (json_object *)&w;
	loophttp_push(w.srv, 200, J10, "{}");
	CU_ASSERT_EQUAL(ddb_get_item(&w.c, "tbl", key, true, &item, &info), KL_OK);
	CU_ASSERT_PTR_NULL(item);
	assert_sent(&w, 3, "DynamoDB_20120810.GetItem", J10,
		    "{\"TableName\":\"tbl\",\"Key\":{\"k\":{\"S\":\"zz\"}},\"ConsistentRead\":true}");
	json_object_put(key);
	wire_stop(&w);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_stream_name),
		KL_TEST(test_hash_key),
		KL_TEST(test_req_describe_stream_summary),
		KL_TEST(test_parse_describe_stream_summary),
		KL_TEST(test_req_list_shards),
		KL_TEST(test_parse_list_shards),
		KL_TEST(test_parse_list_shards_bad),
		KL_TEST(test_req_get_shard_iterator),
		KL_TEST(test_parse_get_shard_iterator),
		KL_TEST(test_req_get_records),
		KL_TEST(test_parse_get_records),
		KL_TEST(test_parse_get_records_shard_end),
		KL_TEST(test_parse_get_records_bad),
		KL_TEST(test_parse_timestamps),
		KL_TEST(test_req_put_records),
		KL_TEST(test_parse_put_records),
		KL_TEST(test_req_stream_management),
		KL_TEST(test_ddb_values),
		KL_TEST(test_ddb_getters),
		KL_TEST(test_ddb_req_tables),
		KL_TEST(test_ddb_parse_describe_table),
		KL_TEST(test_ddb_req_get_item),
		KL_TEST(test_ddb_parse_get_item),
		KL_TEST(test_ddb_item_round_trip),
		KL_TEST(test_ddb_req_writes),
		KL_TEST(test_ddb_req_scan),
		KL_TEST(test_ddb_parse_scan),
		KL_TEST(test_error_classes),
		KL_TEST(test_wire_list_shards_pages),
		KL_TEST(test_wire_get_records),
		KL_TEST(test_wire_conflict),
		KL_TEST(test_wire_scan_all),
		{ 0 },
	};
	int rc;

	if (http_global_init() != KL_OK)
		return 1;
	rc = kl_test_run("parse", t);
	http_global_cleanup();
	return rc;
}
