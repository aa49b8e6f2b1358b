/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_getrecords.c: the GetRecords body scanner (kinesis_parse_get_records)
 * and aws_json_call_raw(). Hand-written cases pin the rules (escapes,
 * whitespace, number forms, unknown keys, strictness, error positions); a
 * differential test checks random valid responses against what the
 * generator meant and against json-c plus a small reference written here;
 * every prefix and many one-byte mutations of a sample must fail cleanly.
 * Bodies are passed in exactly sized heap copies, so a read past the end
 * shows under ASan and valgrind.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "aws.h"
#include "buf.h"
#include "creds.h"
#include "http.h"
#include "kinesis.h"
#include "loophttp.h"
#include "testutil.h"
#include "util.h"

/* ------------------------------------------------------------ helpers */

/* The scanner on an exactly sized copy of body[0, len) (no NUL after it). */
static enum kl_err scan_len(const char *body, size_t len, struct kinesis_records **ret,
			    struct kl_errinfo *info)
{
	char *copy = malloc(len ? len : 1);
	enum kl_err err;

	CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
	memcpy(copy, body, len);
	err = kinesis_parse_get_records(copy, len, ret, info);
	free(copy);
	return err;
}

static enum kl_err scan(const char *text, struct kinesis_records **ret, struct kl_errinfo *info)
{
	return scan_len(text, strlen(text), ret, info);
}

/* A record's body with the given extra members; Data "aGk=" is "hi". */
#define REC(extra) "{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"p\"" extra "}"

/* Parses text, which must be accepted; the caller frees the result. */
static struct kinesis_records *scan_ok(const char *text)
{
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;

	kl_errinfo_clear(&info);
	if (scan(text, &r, &info) != KL_OK)
		fprintf(stderr, "\n  rejected: %s\n  body: %s\n", info.message, text);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	return r;
}

/* Asserts text is rejected with KL_EPARSE, a message naming what and the byte offset at. */
static void assert_bad(const char *text, const char *what, size_t at)
{
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;
	char expect[64];

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(scan(text, &r, &info), KL_EPARSE);
	CU_ASSERT_PTR_NULL(r);
	snprintf(expect, sizeof(expect), " at byte %zu of %zu", at, strlen(text));
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "kinesis: GetRecords: "));
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, what));
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, expect));
	if (!strstr(info.message, what) || !strstr(info.message, expect))
		fprintf(stderr, "\n  body: %s\n  got:  %s\n  want: %s ...%s\n", text, info.message,
			what, expect);
	kinesis_records_free(r);
}

/* Byte offset of the n-th (0-based) occurrence of needle in text. */
static size_t offset_of(const char *text, const char *needle, int n)
{
	const char *p = strstr(text, needle);

	for (; p && n > 0; n--)
		p = strstr(p + 1, needle);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	return (size_t)(p - text);
}

/* ------------------------------------------------------------ fixed cases */

static void test_escapes(void)
{
	/* Escaped keys are the same keys; every escape form decodes. */
	struct kinesis_records *r = scan_ok(
		"{\"Rec\\u006frds\":[{\"Sequence\\u004eumber\":\"4\\u0039\",\"D\\u0061ta\":"
		"\"AAEC\\/w==\",\"PartitionKey\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\te\\u00e9\\u20AC"
		"\\ud83d\\ude00\\u0000z\",\"Encryption\\u0054ype\":\"K\\u004dS\"},"
		"{\"SequenceNumber\":\"5\",\"Data\":\"\\u0061\\u0047\\u006b\\u003d\",\"PartitionKey\":"
		"\"\\u0041\\u00DF\"}],"
		"\"NextShard\\u0049terator\":\"it\\/\\u002b==\",\"MillisBehindLatest\":3}");

	CU_ASSERT_EQUAL_FATAL(r->n_records, 2);
	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number, "49");
	CU_ASSERT_EQUAL(r->records[0].data_len, 4);
	CU_ASSERT_EQUAL(memcmp(r->records[0].data, "\x00\x01\x02\xff", 4), 0);
	/* \u0000 is kept, so the C string stops there; the bytes before are exact. */
	CU_ASSERT_STRING_EQUAL(r->records[0].partition_key,
			       "a\"b\\c/d\b\f\n\r\te\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	CU_ASSERT_EQUAL(memcmp(r->records[0].partition_key + 22, "\0z", 3), 0);
	CU_ASSERT_EQUAL(r->records[0].encryption, KINESIS_ENCRYPTION_KMS);
	CU_ASSERT_EQUAL(r->records[1].data_len, 2);
	CU_ASSERT_EQUAL(memcmp(r->records[1].data, "hi", 2), 0);
	CU_ASSERT_STRING_EQUAL(r->records[1].partition_key, "A\xc3\x9f");
	CU_ASSERT_EQUAL(r->records[1].encryption, KINESIS_ENCRYPTION_NONE);
	CU_ASSERT_STRING_EQUAL(r->next_iterator, "it/+==");
	CU_ASSERT_EQUAL(r->millis_behind_latest, 3);
	CU_ASSERT_EQUAL(r->data_bytes, 6);
	kinesis_records_free(r);

	/* Even a value escaped to three times its length is recognised. */
	r = scan_ok("{\"Records\":[" REC(",\"EncryptionType\":\"\\u004B\\u004D\\u0053\"") "]}");
	CU_ASSERT_EQUAL(r->records[0].encryption, KINESIS_ENCRYPTION_KMS);
	kinesis_records_free(r);
}

static void test_whitespace(void)
{
	struct kinesis_records *r = scan_ok(
		" \r\n\t{ \"Records\" :\n[ { \"SequenceNumber\"\t:\t\"7\" , \"Data\" : \"aGk\" ,"
		"\r\n\"PartitionKey\" : \"p\" , \"ApproximateArrivalTimestamp\" : 1.5 } ,\n{\"Data\":"
		"\"\",\"SequenceNumber\":\"8\",\"PartitionKey\":\"\"} ] , \"NextShardIterator\" : "
		"\"n\" , \"MillisBehindLatest\" : 0 , \"ChildShards\" : [ ] } \n\t ");

	CU_ASSERT_EQUAL_FATAL(r->n_records, 2);
	CU_ASSERT_EQUAL(r->records[0].data_len, 2);        /* unpadded base64 */
	CU_ASSERT_EQUAL(memcmp(r->records[0].data, "hi", 2), 0);
	CU_ASSERT_EQUAL(r->records[0].arrival_ms, 1500);
	CU_ASSERT_EQUAL(r->records[1].data_len, 0);
	CU_ASSERT_STRING_EQUAL(r->records[1].sequence_number, "8");
	CU_ASSERT_STRING_EQUAL(r->records[1].partition_key, "");
	CU_ASSERT_EQUAL(r->records[1].arrival_ms, 0);
	CU_ASSERT_STRING_EQUAL(r->next_iterator, "n");
	CU_ASSERT_EQUAL(r->n_children, 0);
	kinesis_records_free(r);

	r = scan_ok("{}");
	CU_ASSERT_EQUAL(r->n_records, 0);
	CU_ASSERT_PTR_NULL(r->records);
	CU_ASSERT_PTR_NULL(r->next_iterator);
	CU_ASSERT_EQUAL(r->millis_behind_latest, -1);
	kinesis_records_free(r);
}

static void test_unknown_keys(void)
{
	char deep[400], too_deep[402], body[1200];
	struct kinesis_records *r;
	int n = 0;

	r = scan_ok("{\"Future\":{\"a\":[1,-2.5e-3,true,false,null,\"x\\u00e9\\ud800\",{},[]],"
		    "\"Records\":\"not the records\"},\"records\":[1],"
		    "\"Records\":[" REC(",\"data\":{\"Data\":\"!!\"},\"SequenceNumberX\":[[[]]],"
			"\"PartitionKeys\":null,\"Tags\":{\"k\":\"v\"}") "],"
		    "\"NextShardIterator\":\"n\",\"Extra\":-0,\"ChildShards\":[{\"ShardId\":\"c\","
		    "\"Unknown\":{\"ShardId\":5},\"HashKeyRange\":{\"StartingHashKey\":\"1\","
		    "\"Other\":[\"x\"],\"EndingHashKey\":\"2\"}}],\"Last\":[{\"a\":{\"b\":[0]}}]}");
	CU_ASSERT_EQUAL_FATAL(r->n_records, 1);
	CU_ASSERT_STRING_EQUAL(r->records[0].sequence_number, "1");
	CU_ASSERT_EQUAL(memcmp(r->records[0].data, "hi", 2), 0);
	CU_ASSERT_STRING_EQUAL(r->next_iterator, "n");
	CU_ASSERT_EQUAL_FATAL(r->n_children, 1);
	CU_ASSERT_STRING_EQUAL(r->children[0].shard_id, "c");
	CU_ASSERT_STRING_EQUAL(r->children[0].starting_hash_key, "1");
	CU_ASSERT_STRING_EQUAL(r->children[0].ending_hash_key, "2");
	kinesis_records_free(r);

	/* An unknown value may nest 63 deep under the top object, not 64:
	 * deep is [{"k":[{"k": ... []}]...}] with 63 containers. */
	for (int i = 0; i < 63; i++)
		n += snprintf(deep + n, sizeof(deep) - (size_t)n, "%s", i % 2 ? "{\"k\":" : "[");
	for (int i = 62; i >= 0; i--)
		deep[n++] = i % 2 ? '}' : ']';
	deep[n] = '\0';
	snprintf(body, sizeof(body), "{\"X\":%s,\"Records\":[]}", deep);
	r = scan_ok(body);
	kinesis_records_free(r);
	/* One more level fails at the innermost "[" (the one before the first "]"). */
	snprintf(too_deep, sizeof(too_deep), "[%s]", deep);
	snprintf(body, sizeof(body), "{\"X\":%s,\"Records\":[]}", too_deep);
	assert_bad(body, "nested too deeply", (size_t)(strchr(body, ']') - body) - 1);
}

static void test_timestamps(void)
{
	static const struct {
		const char *json;
		int64_t ms;
	} cases[] = {
		{ "1795291116.903", INT64_C(1795291116903) },
		{ "1.795291116903E9", INT64_C(1795291116903) },   /* AWS's own form */
		{ "1.795291116903e+9", INT64_C(1795291116903) },
		{ "17952911169.03e-1", INT64_C(1795291116903) },
		{ "1795291116903e-3", INT64_C(1795291116903) },
		{ "0.0001795291116903e13", INT64_C(1795291116903) },
		{ "1.7952911169039999E9", INT64_C(1795291116903) }, /* truncated, not rounded */
		{ "1.7e9", INT64_C(1700000000000) },
		{ "1700000000", INT64_C(1700000000000) },
		{ "1E0", 1000 },
		{ "0.001", 1 },
		{ "0.0009", 0 },
		{ "-1.5", -1500 },
		{ "-0.0009", 0 },
		{ "-0", 0 },
		{ "0", 0 },
		{ "0e999999999999999999", 0 },
		{ "1e-999999999999999999", 0 },
		{ "9223372036854775.807", INT64_MAX },
		{ "-9223372036854775.808", INT64_MIN },
		{ "null", 0 },
	};
	static const char *const bad[] = {
		"01", "1.", ".5", "+1", "1e", "1e+", "-", "1.e5", "NaN", "\"1700000000\"", "true",
		"[1]", "{}", "9223372036854775.808", "-9223372036854775.809", "1e400", "0x10",
	};
	char text[256];

	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		struct kinesis_records *r;

		snprintf(text, sizeof(text), "{\"Records\":[" REC(",\"ApproximateArrivalTimestamp\":%s")
			 "]}", cases[i].json);
		r = scan_ok(text);
		CU_ASSERT_EQUAL(r->records[0].arrival_ms, cases[i].ms);
		if (r->records[0].arrival_ms != cases[i].ms)
			fprintf(stderr, "\n  %s gave %" PRId64 "\n", cases[i].json, r->records[0].arrival_ms);
		kinesis_records_free(r);
	}
	for (size_t i = 0; i < KL_ARRAY_LEN(bad); i++) {
		struct kinesis_records *r = NULL;
		snprintf(text, sizeof(text), "{\"Records\":[" REC(",\"ApproximateArrivalTimestamp\":%s")
			 "]}", bad[i]);
		CU_ASSERT_EQUAL(scan(text, &r, NULL), KL_EPARSE);
		CU_ASSERT_PTR_NULL(r);
	}
	/* The position points at the number. */
	snprintf(text, sizeof(text), "{\"Records\":[" REC(",\"ApproximateArrivalTimestamp\":1e400") "]}");
	assert_bad(text, "number out of range", offset_of(text, "1e400", 0));
}

static void test_millis_behind(void)
{
	static const struct {
		const char *json;
		int64_t v;
	} cases[] = {
		{ "0", 0 }, { "12", 12 }, { "1.9", 1 }, { "1.5e3", 1500 }, { "86400000", 86400000 },
		{ "null", -1 },
	};
	char text[128];

	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		struct kinesis_records *r;
		snprintf(text, sizeof(text), "{\"MillisBehindLatest\":%s,\"Records\":[]}", cases[i].json);
		r = scan_ok(text);
		CU_ASSERT_EQUAL(r->millis_behind_latest, cases[i].v);
		kinesis_records_free(r);
	}
	assert_bad("{\"MillisBehindLatest\":\"5\"}", "MillisBehindLatest is not a number", 22);
}

static void test_shard_end_and_children(void)
{
	static const char *const ends[] = {
		"{\"Records\":[],\"NextShardIterator\":null}",
		"{\"Records\":[],\"NextShardIterator\":\"\"}",
		"{\"Records\":[]}",
		"{\"Records\":null,\"NextShardIterator\":null,\"ChildShards\":null}",
	};
	struct kinesis_records *r;

	for (size_t i = 0; i < KL_ARRAY_LEN(ends); i++) {
		r = scan_ok(ends[i]);
		CU_ASSERT_PTR_NULL(r->next_iterator);
		CU_ASSERT_EQUAL(r->n_records, 0);
		CU_ASSERT_EQUAL(r->n_children, 0);
		CU_ASSERT_PTR_NULL(r->children);
		kinesis_records_free(r);
	}

	r = scan_ok("{\"ChildShards\":[{\"HashKeyRange\":{\"EndingHashKey\":\"99\","
		    "\"StartingHashKey\":\"18\"},\"ParentShards\":[\"shardId-2\",\"shardId-3\"],"
		    "\"ShardId\":\"shardId-4\"},{\"ShardId\":\"s\\u0068ard-5\"},"
		    "{\"ShardId\":\"shard-6\",\"ParentShards\":null,\"HashKeyRange\":null},"
		    "{\"ShardId\":\"shard-7\",\"ParentShards\":[],\"HashKeyRange\":{\"StartingHashKey\":null}}],"
		    "\"Records\":[],\"MillisBehindLatest\":0}");
	CU_ASSERT_EQUAL_FATAL(r->n_children, 4);
	CU_ASSERT_STRING_EQUAL(r->children[0].shard_id, "shardId-4");
	CU_ASSERT_EQUAL(r->children[0].n_parents, 2);
	CU_ASSERT_STRING_EQUAL(r->children[0].parent_shard_ids[0], "shardId-2");
	CU_ASSERT_STRING_EQUAL(r->children[0].parent_shard_ids[1], "shardId-3");
	CU_ASSERT_STRING_EQUAL(r->children[0].starting_hash_key, "18");
	CU_ASSERT_STRING_EQUAL(r->children[0].ending_hash_key, "99");
	CU_ASSERT_STRING_EQUAL(r->children[1].shard_id, "shard-5");
	for (size_t i = 1; i < 4; i++) {
		CU_ASSERT_EQUAL(r->children[i].n_parents, 0);
		CU_ASSERT_PTR_NULL(r->children[i].parent_shard_ids[0]);
		CU_ASSERT_STRING_EQUAL(r->children[i].starting_hash_key, "");
		CU_ASSERT_STRING_EQUAL(r->children[i].ending_hash_key, "");
	}
	CU_ASSERT_PTR_NULL(r->next_iterator);
	kinesis_records_free(r);
}

/* Strictness: each of these names its problem and where it is. */
static void test_rejects(void)
{
	static const struct {
		const char *body;
		const char *what;
		const char *at;              /* the problem starts at this text ... */
		int nth;                     /* ... its nth occurrence; NULL: at the end */
	} bad[] = {
		{ "", "response is not a JSON object", NULL, 0 },
		{ " \n", "response is not a JSON object", NULL, 0 },
		{ "null", "response is not a JSON object", "null", 0 },
		{ "[]", "response is not a JSON object", "[", 0 },
		{ "{\"Records\":[]}{}", "trailing bytes", "{}", 0 },
		{ "{\"Records\":[]} x", "trailing bytes", "x", 0 },
		{ "{\"Records\":[],}", "expected a key", "}", 0 },
		{ "{\"Records\":[] \"X\":1}", "expected ',' or '}'", "\"X", 0 },
		{ "{\"Records\" []}", "expected ':'", "[", 0 },
		{ "{'Records':[]}", "expected a key", "'", 0 },
		{ "{\"Records\":[],\"Records\":[]}", "duplicate key", "\"Records", 1 },
		{ "{\"Records\":[" REC(",\"Data\":\"aGk=\"") "]}", "duplicate key", "\"Data", 1 },
		{ "{\"Records\":[" REC(",\"D\\u0061ta\":\"aGk=\"") "]}", "duplicate key", "\"D\\u", 0 },
		{ "{\"ChildShards\":[{\"ShardId\":\"a\",\"ShardId\":\"b\"}]}", "duplicate key", "\"ShardId", 1 },
		{ "{\"Records\":{}}", "Records is not an array", "{}", 0 },
		{ "{\"Records\":[1]}", "record is not an object", "1", 0 },
		{ "{\"Records\":[" REC("") ",]}", "record is not an object", "]", 0 },
		{ "{\"Records\":[" REC("") "}", "expected ',' or ']' in Records", "}", 1 },
		{ "{\"Records\":[{\"Data\":\"aGk=\",\"PartitionKey\":\"p\"}]}",
		  "record without SequenceNumber", "{\"Data", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"PartitionKey\":\"p\"}]}",
		  "record without Data", "{\"Seq", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\"}]}",
		  "record without PartitionKey", "{\"Seq", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"\",\"Data\":\"\",\"PartitionKey\":\"\"}]}",
		  "empty SequenceNumber", "\"Seq", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":1,\"Data\":\"\",\"PartitionKey\":\"\"}]}",
		  "SequenceNumber is not a string", "1,", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":null,\"PartitionKey\":\"\"}]}",
		  "Data is not a string", "null", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"\",\"PartitionKey\":null}]}",
		  "PartitionKey is not a string", "null", 0 },
		{ "{\"Records\":[" REC(",\"EncryptionType\":0") "]}", "EncryptionType is not a string", "0}", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"a*k=\",\"PartitionKey\":\"p\"}]}",
		  "Data is not base64", "\"a*", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"a\",\"PartitionKey\":\"p\"}]}",
		  "Data is not base64", "\"a\"", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk==\",\"PartitionKey\":\"p\"}]}",
		  "Data is not base64", "\"aGk", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aG===\",\"PartitionKey\":\"p\"}]}",
		  "Data is not base64", "\"aG", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aG=k\",\"PartitionKey\":\"p\"}]}",
		  "Data is not base64", "\"aG", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aG\\u0000k\",\"PartitionKey\":\"p\"}]}",
		  "Data is not base64", "\"aG", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aG\\nk\",\"PartitionKey\":\"p\"}]}",
		  "Data is not base64", "\"aG", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"\\ud800\"}]}",
		  "lone surrogate", "\\ud800", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"\\udc00\"}]}",
		  "lone surrogate", "\\udc00", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"\\ud800\\u0041\"}]}",
		  "lone surrogate", "\\ud800", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"a\x01\"}]}",
		  "control character in string", "\x01", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"\\x\"}]}",
		  "bad escape", "\\x", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"\\u12G4\"}]}",
		  "bad \\u escape", "\\u12G4", 0 },
		{ "{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"aGk=\",\"PartitionKey\":\"p}]}",
		  "unterminated string", "\"p}", 0 },
		{ "{\"NextShardIterator\":5}", "NextShardIterator is not a string", "5", 0 },
		{ "{\"ChildShards\":{}}", "ChildShards is not an array", "{}", 0 },
		{ "{\"ChildShards\":[{\"ParentShards\":[]}]}", "child shard without ShardId", "{\"Par", 0 },
		{ "{\"ChildShards\":[{\"ShardId\":\"c\",\"ParentShards\":[\"a\",\"b\",\"c\"]}]}",
		  "more than two ParentShards", "\"c\"]", 0 },
		{ "{\"ChildShards\":[{\"ShardId\":\"c\",\"ParentShards\":\"a\"}]}",
		  "ParentShards is not an array", "\"a\"", 0 },
		{ "{\"ChildShards\":[{\"ShardId\":\"c\",\"ParentShards\":[1]}]}",
		  "parent shard is not a string", "1]", 0 },
		{ "{\"ChildShards\":[{\"ShardId\":\"c\",\"HashKeyRange\":[]}]}",
		  "HashKeyRange is not an object", "[]", 0 },
		{ "{\"ChildShards\":[{\"ShardId\":\"c\",\"HashKeyRange\":{\"EndingHashKey\":9}}]}",
		  "hash key is not a string", "9}", 0 },
		{ "{\"X\":[1,]}", "expected a value", "]", 0 },
		{ "{\"X\":tru}", "expected a value", "tru", 0 },
		{ "{\"X\":{\"a\" 1}}", "expected ':'", "1}", 0 },
		{ "{\"X\":{1:1}}", "expected a key", "1:", 0 },
		{ "{\"X\":[1 2]}", "expected ',' or ']'", "2]", 0 },
		{ "{\"X\":\"a\x1f\"}", "control character in string", "\x1f", 0 },
	};

	for (size_t i = 0; i < KL_ARRAY_LEN(bad); i++) {
		size_t at = bad[i].at ? offset_of(bad[i].body, bad[i].at, bad[i].nth)
				      : strlen(bad[i].body);
		assert_bad(bad[i].body, bad[i].what, at);
	}
}

/* ------------------------------------------------- a model and its JSON */

/* What a response means, as the generator made it or the reference read it. */
struct m_record {
	struct buf seq, pk, data;
	int64_t arrival_ms;
	enum kinesis_encryption encryption;
};

struct m_child {
	struct buf shard_id, parents[2], starting, ending;
	size_t n_parents;
};

struct model {
	struct m_record recs[40];
	size_t n_recs;
	int has_next;
	struct buf next;
	int64_t millis_behind;
	struct m_child children[4];
	size_t n_children;
};

static void model_init(struct model *m)
{
	memset(m, 0, sizeof(*m));
	for (size_t i = 0; i < KL_ARRAY_LEN(m->recs); i++) {
		buf_init(&m->recs[i].seq, 0);
		buf_init(&m->recs[i].pk, 0);
		buf_init(&m->recs[i].data, 0);
	}
	buf_init(&m->next, 0);
	for (size_t i = 0; i < KL_ARRAY_LEN(m->children); i++) {
		struct m_child *c = &m->children[i];
		buf_init(&c->shard_id, 0);
		buf_init(&c->parents[0], 0);
		buf_init(&c->parents[1], 0);
		buf_init(&c->starting, 0);
		buf_init(&c->ending, 0);
	}
	m->millis_behind = -1;
}

static void model_done(struct model *m)
{
	for (size_t i = 0; i < KL_ARRAY_LEN(m->recs); i++) {
		buf_done(&m->recs[i].seq);
		buf_done(&m->recs[i].pk);
		buf_done(&m->recs[i].data);
	}
	buf_done(&m->next);
	for (size_t i = 0; i < KL_ARRAY_LEN(m->children); i++) {
		struct m_child *c = &m->children[i];
		buf_done(&c->shard_id);
		buf_done(&c->parents[0]);
		buf_done(&c->parents[1]);
		buf_done(&c->starting);
		buf_done(&c->ending);
	}
	model_init(m);
}

static int str_is(const char *s, const struct buf *b)
{
	return strlen(s) == b->len && memcmp(s, b->len ? b->data : "", b->len) == 0;
}

/* 1 when the scanner's result means exactly what m says. */
static int same(const struct kinesis_records *r, const struct model *m)
{
	size_t data_bytes = 0;

	if (r->n_records != m->n_recs || r->n_children != m->n_children ||
	    r->millis_behind_latest != m->millis_behind)
		return 0;
	if (m->has_next ? !r->next_iterator || !str_is(r->next_iterator, &m->next) : !!r->next_iterator)
		return 0;
	for (size_t i = 0; i < m->n_recs; i++) {
		const struct kinesis_record *a = &r->records[i];
		const struct m_record *b = &m->recs[i];
		if (!str_is(a->sequence_number, &b->seq) || !str_is(a->partition_key, &b->pk) ||
		    a->data_len != b->data.len || a->arrival_ms != b->arrival_ms ||
		    a->encryption != b->encryption ||
		    (b->data.len && memcmp(a->data, b->data.data, b->data.len) != 0))
			return 0;
		data_bytes += a->data_len;
	}
	if (data_bytes != r->data_bytes)
		return 0;
	for (size_t i = 0; i < m->n_children; i++) {
		const struct kinesis_child_shard *a = &r->children[i];
		const struct m_child *b = &m->children[i];
		if (!str_is(a->shard_id, &b->shard_id) || a->n_parents != b->n_parents ||
		    !str_is(a->starting_hash_key, &b->starting) ||
		    !str_is(a->ending_hash_key, &b->ending))
			return 0;
		for (size_t j = 0; j < b->n_parents; j++)
			if (!str_is(a->parent_shard_ids[j], &b->parents[j]))
				return 0;
	}
	return 1;
}

/* 1 when two models are equal (the reference against the generator). */
static int same_model(const struct model *a, const struct model *b)
{
#define SAME_BUF(x, y) ((x).len == (y).len && ((x).len == 0 || memcmp((x).data, (y).data, (x).len) == 0))
	if (a->n_recs != b->n_recs || a->n_children != b->n_children ||
	    a->millis_behind != b->millis_behind || a->has_next != b->has_next ||
	    (a->has_next && !SAME_BUF(a->next, b->next)))
		return 0;
	for (size_t i = 0; i < a->n_recs; i++) {
		const struct m_record *x = &a->recs[i], *y = &b->recs[i];
		if (!SAME_BUF(x->seq, y->seq) || !SAME_BUF(x->pk, y->pk) || !SAME_BUF(x->data, y->data) ||
		    x->arrival_ms != y->arrival_ms || x->encryption != y->encryption)
			return 0;
	}
	for (size_t i = 0; i < a->n_children; i++) {
		const struct m_child *x = &a->children[i], *y = &b->children[i];
		if (!SAME_BUF(x->shard_id, y->shard_id) || x->n_parents != y->n_parents ||
		    !SAME_BUF(x->starting, y->starting) || !SAME_BUF(x->ending, y->ending))
			return 0;
		for (size_t j = 0; j < x->n_parents; j++)
			if (!SAME_BUF(x->parents[j], y->parents[j]))
				return 0;
	}
	return 1;
#undef SAME_BUF
}

/* ---------------------------------------------- the reference (json-c) */

/*
 * The rules of kinesis.h applied to json-c's tree, written independently
 * of the scanner: numbers go through their text (json-c keeps a double's
 * original text) shifted as a string and read by strtoll.
 */
static int ref_scaled(const char *text, int scale, int64_t *ret)
{
	char digits[512], out[32];
	const char *p = text;
	long point = 0, exp = 0;
	size_t nd = 0, o = 0;
	int neg = 0;

	if (*p == '-') {
		neg = 1;
		p++;
	}
	for (; *p >= '0' && *p <= '9'; p++, point++)
		if (nd < sizeof(digits))
			digits[nd++] = *p;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			if (nd < sizeof(digits))
				digits[nd++] = *p;
	if (nd == sizeof(digits))
		return -1;
	if (*p == 'e' || *p == 'E') {
		errno = 0;
		exp = strtol(p + 1, NULL, 10);
		if (errno == ERANGE || exp > 100000000 || exp < -100000000)
			exp = exp > 0 ? 100000000 : -100000000;
	}
	point += exp + scale;
	while (nd > 0 && digits[0] == '0') {
		memmove(digits, digits + 1, --nd);
		point--;
	}
	if (point <= 0 || nd == 0) {
		*ret = 0;
		return 0;
	}
	if (point > 19)
		return -1;
	if (neg)
		out[o++] = '-';
	for (long i = 0; i < point; i++)
		out[o++] = (size_t)i < nd ? digits[i] : '0';
	out[o] = '\0';
	errno = 0;
	*ret = strtoll(out, NULL, 10);
	return errno == ERANGE ? -1 : 0;
}

static int ref_number(json_object *v, int scale, int64_t *ret)
{
	if (json_object_is_type(v, json_type_int)) {
		int64_t n = json_object_get_int64(v);
		int64_t mul = scale == 3 ? 1000 : 1;
		if (n > INT64_MAX / mul || n < INT64_MIN / mul)
			return -1;
		*ret = n * mul;
		return 0;
	}
	if (json_object_is_type(v, json_type_double))
		return ref_scaled(json_object_get_string(v), scale, ret);
	return -1;
}

/* A string as the C API shows it: up to its first NUL (\u0000). */
static int ref_string(json_object *v, struct buf *out)
{
	if (!json_object_is_type(v, json_type_string))
		return -1;
	buf_reset(out);
	return buf_append_str(out, json_object_get_string(v)) ? -1 : 0;
}

/* Data per kinesis.h: base64, padding optional but only completing a quad. */
static int ref_base64(json_object *v, struct buf *out)
{
	const char *s;
	size_t len, pad = 0, n = 0;

	if (!json_object_is_type(v, json_type_string))
		return -1;
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	while (pad < len && s[len - 1 - pad] == '=')
		pad++;
	if (pad > 2 || (pad && len % 4) || memchr(s, '\0', len))
		return -1;
	buf_reset(out);
	if (buf_reserve(out, (len / 4 + 1) * 3) != KL_OK)
		return -1;
	if (kl_b64_decode(s, len, (uint8_t *)out->data, &n) != KL_OK)
		return -1;
	out->len = n;
	return 0;
}

/* Absent and null are the same to every optional field. */
static json_object *ref_get(json_object *o, const char *key)
{
	json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

static int ref_child(json_object *o, struct m_child *c)
{
	json_object *v, *hash;

	if (!json_object_is_type(o, json_type_object))
		return -1;
	if (ref_string(ref_get(o, "ShardId"), &c->shard_id) || c->shard_id.len == 0)
		return -1;
	c->n_parents = 0;
	if ((v = ref_get(o, "ParentShards"))) {
		if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) > 2)
			return -1;
		for (size_t j = 0; j < json_object_array_length(v); j++)
			if (ref_string(json_object_array_get_idx(v, j), &c->parents[c->n_parents++]))
				return -1;
	}
	buf_reset(&c->starting);
	buf_reset(&c->ending);
	if ((hash = ref_get(o, "HashKeyRange"))) {
		if (!json_object_is_type(hash, json_type_object))
			return -1;
		if ((v = ref_get(hash, "StartingHashKey")) && ref_string(v, &c->starting))
			return -1;
		if ((v = ref_get(hash, "EndingHashKey")) && ref_string(v, &c->ending))
			return -1;
	}
	return 0;
}

static int ref_record(json_object *o, struct m_record *r)
{
	json_object *v;

	if (!json_object_is_type(o, json_type_object))
		return -1;
	if (ref_string(ref_get(o, "SequenceNumber"), &r->seq) || r->seq.len == 0 ||
	    ref_string(ref_get(o, "PartitionKey"), &r->pk) || ref_base64(ref_get(o, "Data"), &r->data))
		return -1;
	r->arrival_ms = 0;
	if ((v = ref_get(o, "ApproximateArrivalTimestamp")) && ref_number(v, 3, &r->arrival_ms))
		return -1;
	r->encryption = KINESIS_ENCRYPTION_NONE;
	if ((v = ref_get(o, "EncryptionType"))) {
		if (!json_object_is_type(v, json_type_string))
			return -1;
		if (strcmp(json_object_get_string(v), "KMS") == 0 && json_object_get_string_len(v) == 3)
			r->encryption = KINESIS_ENCRYPTION_KMS;
	}
	return 0;
}

/* Reads body[0, len) with json-c (strict mode when strict) into m. */
static int ref_parse(const char *body, size_t len, int strict, struct model *m)
{
	json_tokener *tok = json_tokener_new_ex(100);
	json_object *obj = NULL, *v;
	int rc = -1;

	CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
	while (len > 0 && strchr(" \t\r\n", body[len - 1]) && body[len - 1])
		len--;
	if (strict)
		json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	if (len)
		obj = json_tokener_parse_ex(tok, body, (int)len);
	if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len || !json_object_is_type(obj, json_type_object))
		goto out;
	if ((v = ref_get(obj, "Records"))) {
		if (!json_object_is_type(v, json_type_array) ||
		    json_object_array_length(v) > KL_ARRAY_LEN(m->recs))
			goto out;
		for (size_t i = 0; i < json_object_array_length(v); i++)
			if (ref_record(json_object_array_get_idx(v, i), &m->recs[m->n_recs++]))
				goto out;
	}
	if ((v = ref_get(obj, "NextShardIterator"))) {
		if (ref_string(v, &m->next))
			goto out;
		m->has_next = m->next.len > 0;
	}
	if ((v = ref_get(obj, "MillisBehindLatest")) && ref_number(v, 0, &m->millis_behind))
		goto out;
	if ((v = ref_get(obj, "ChildShards"))) {
		if (!json_object_is_type(v, json_type_array) ||
		    json_object_array_length(v) > KL_ARRAY_LEN(m->children))
			goto out;
		for (size_t i = 0; i < json_object_array_length(v); i++)
			if (ref_child(json_object_array_get_idx(v, i), &m->children[m->n_children++]))
				goto out;
	}
	rc = 0;
out:
	json_object_put(obj);
	json_tokener_free(tok);
	return rc;
}

/* ------------------------------------------------------ the generator */

struct gen {
	struct kl_rng rng;
	int escape_pct;               /* how often a character is escaped */
	int ws_pct;                   /* how often whitespace goes between tokens */
};

static unsigned rnd(struct gen *g, unsigned n)
{
	return (unsigned)kl_rng_below(&g->rng, n);
}

static int chance(struct gen *g, int pct)
{
	return (int)rnd(g, 100) < pct;
}

static void put(struct buf *out, const char *s)
{
	CU_ASSERT_EQUAL_FATAL(buf_append_str(out, s), KL_OK);
}

static void put_ws(struct gen *g, struct buf *out)
{
	static const char ws[] = " \t\n\r";

	while (chance(g, g->ws_pct))
		CU_ASSERT_EQUAL_FATAL(buf_append_byte(out, (uint8_t)ws[rnd(g, 4)]), KL_OK);
}

static void put_u(struct gen *g, struct buf *out, unsigned cp)
{
	CU_ASSERT_EQUAL_FATAL(buf_printf(out, chance(g, 50) ? "\\u%04x" : "\\u%04X", cp), KL_OK);
}

/* Writes the UTF-8 text s[0, len) as a JSON string, escaping at random. */
static void put_string(struct gen *g, struct buf *out, const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s, *end = p + len;

	put(out, "\"");
	while (p < end) {
		unsigned cp = *p, n = 1;
		if (cp >= 0xf0) {
			cp = (cp & 0x07) << 18 | (p[1] & 0x3fu) << 12 | (p[2] & 0x3fu) << 6 | (p[3] & 0x3fu);
			n = 4;
		} else if (cp >= 0xe0) {
			cp = (cp & 0x0f) << 12 | (p[1] & 0x3fu) << 6 | (p[2] & 0x3fu);
			n = 3;
		} else if (cp >= 0xc0) {
			cp = (cp & 0x1f) << 6 | (p[1] & 0x3fu);
			n = 2;
		}
		if (cp < 0x20 || cp == '"' || cp == '\\' || chance(g, g->escape_pct)) {
			static const char short_esc[] = "\"\\/\b\f\n\r\t", letters[] = "\"\\/bfnrt";
			const char *e = cp && cp < 0x80 ? strchr(short_esc, (int)cp) : NULL;
			if (e && chance(g, 70)) {
				char two[3] = { '\\', letters[e - short_esc], '\0' };
				put(out, two);
			} else if (cp >= 0x10000) {
				put_u(g, out, 0xd800 + ((cp - 0x10000) >> 10));
				put_u(g, out, 0xdc00 + ((cp - 0x10000) & 0x3ff));
			} else {
				put_u(g, out, cp);
			}
		} else {
			CU_ASSERT_EQUAL_FATAL(buf_append(out, p, n), KL_OK);
		}
		p += n;
	}
	put(out, "\"");
}

/* Appends one random code point as UTF-8 (no NUL, no surrogates). */
static void gen_char(struct gen *g, struct buf *b)
{
	static const unsigned samples[] = { 0xe9, 0xdf, 0x3a9, 0x20ac, 0x4e2d, 0xfeff, 0xffff,
					    0x1f600, 0x10ffff, 0x10000 };
	unsigned cp, r = rnd(g, 100);
	uint8_t u[4];
	size_t n;

	if (r < 70)
		cp = 0x20 + rnd(g, 0x5f);                 /* printable ASCII, '"' and '\\' too */
	else if (r < 78)
		cp = 1 + rnd(g, 0x1f);                    /* controls */
	else
		cp = samples[rnd(g, KL_ARRAY_LEN(samples))];
	if (cp < 0x80) {
		u[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xc0 | cp >> 6);
		u[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (uint8_t)(0xe0 | cp >> 12);
		u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (uint8_t)(0xf0 | cp >> 18);
		u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	CU_ASSERT_EQUAL_FATAL(buf_append(b, u, n), KL_OK);
}

static void gen_text(struct gen *g, struct buf *b, unsigned max_chars, int allow_empty)
{
	unsigned n = rnd(g, max_chars + 1);

	buf_reset(b);
	if (!n && !allow_empty)
		n = 1;
	while (n--)
		gen_char(g, b);
}

/* A random JSON value for an unknown key (nesting up to depth more levels). */
static void gen_value(struct gen *g, struct buf *out, int depth)
{
	static const char *const atoms[] = {
		"0", "-0", "12", "-3.25", "1e5", "2.5E-3", "-0.0e+0", "true", "false", "null",
		"\"\"", "\"x\\ud800y\"", "\"\\udc00\"", "\"]}\\\",\"",
	};
	unsigned kind = rnd(g, depth > 0 ? 4 : 2);
	struct buf s;

	if (kind == 0) {
		put(out, atoms[rnd(g, KL_ARRAY_LEN(atoms))]);
	} else if (kind == 1) {
		buf_init(&s, 0);
		gen_text(g, &s, 12, 1);
		put_string(g, out, s.data ? s.data : "", s.len);
		buf_done(&s);
	} else {
		unsigned n = rnd(g, 4);
		put(out, kind == 2 ? "[" : "{");
		for (unsigned i = 0; i < n; i++) {
			if (i)
				put(out, ",");
			put_ws(g, out);
			if (kind == 3) {
				put(out, chance(g, 50) ? "\"SequenceNumber\"" : "\"k\"");
				put_ws(g, out);
				put(out, ":");
				put_ws(g, out);
			}
			gen_value(g, out, depth - 1);
			put_ws(g, out);
		}
		put(out, kind == 2 ? "]" : "}");
	}
}

/* The members of one object being written, shuffled before joining. */
struct members {
	struct buf m[16];
	size_t n;
};

static struct buf *member(struct gen *g, struct members *ms, const char *key)
{
	struct buf *b;

	CU_ASSERT_FATAL(ms->n < KL_ARRAY_LEN(ms->m));
	b = &ms->m[ms->n++];
	buf_init(b, 0);
	put_string(g, b, key, strlen(key));
	put_ws(g, b);
	put(b, ":");
	put_ws(g, b);
	return b;
}

/* 0 to 2 members with names the scanner does not know. */
static void unknown_members(struct gen *g, struct members *ms)
{
	static const char *const names[] = {
		"records", "Data ", "SequenceNumberX", "ShardIdentifier", "_", "", "EncryptionKeyId",
		"Rec\xc3\xb6rds", "NextShardIterator2", "HashKeyRanges", "\xf0\x9f\x98\x80",
	};

	for (unsigned n = rnd(g, 3); n > 0 && chance(g, 60); n--)
		gen_value(g, member(g, ms, names[rnd(g, KL_ARRAY_LEN(names))]), 3);
}

static void join(struct gen *g, struct members *ms, struct buf *out)
{
	for (size_t i = ms->n; i > 1; i--) {
		size_t j = rnd(g, (unsigned)i);
		struct buf t = ms->m[i - 1];
		ms->m[i - 1] = ms->m[j];
		ms->m[j] = t;
	}
	put(out, "{");
	for (size_t i = 0; i < ms->n; i++) {
		if (i)
			put(out, ",");
		put_ws(g, out);
		CU_ASSERT_EQUAL_FATAL(buf_append(out, ms->m[i].data, ms->m[i].len), KL_OK);
		put_ws(g, out);
		buf_done(&ms->m[i]);
	}
	put(out, "}");
	ms->n = 0;
}

/* Writes ms / 10^scale (truncation target) as some JSON number form of it. */
static void put_number(struct gen *g, struct buf *out, int64_t v, int scale)
{
	char digits[40];
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	int nd, point, k, lead_zeros = 0;

	if (v == 0) {
		static const char *const zeros[] = { "0", "-0", "0.0", "0e7", "0.000E-2", "-0.0009" };
		/* -0.0009 is 0 at ms precision; at scale 0 it is 0 too. */
		put(out, zeros[rnd(g, KL_ARRAY_LEN(zeros))]);
		return;
	}
	nd = snprintf(digits, sizeof(digits), "%" PRIu64, mag);
	point = nd - scale;              /* digits before the point at this value */
	/* Extra digits below the unit do not change the truncated value. */
	if (chance(g, 30))
		for (int i = rnd(g, 5) + 1; i > 0; i--)
			digits[nd++] = (char)('0' + rnd(g, 10));
	digits[nd] = '\0';
	if (v < 0)
		put(out, "-");
	if (point > 0 && chance(g, 40)) {
		/* Plain decimal: d...d[.d...] with trailing fraction zeros dropped. */
		int last = nd;
		while (last > point && digits[last - 1] == '0')
			last--;
		CU_ASSERT_EQUAL_FATAL(buf_append(out, digits, (size_t)point), KL_OK);
		if (last > point) {
			put(out, ".");
			CU_ASSERT_EQUAL_FATAL(buf_append(out, digits + point, (size_t)(last - point)), KL_OK);
		}
		return;
	}
	/* Scientific: k digits before the point, the exponent makes up the rest. */
	if (chance(g, 15)) {
		lead_zeros = (int)rnd(g, 4);
		put(out, "0.");
		for (int i = 0; i < lead_zeros; i++)
			put(out, "0");
		CU_ASSERT_EQUAL_FATAL(buf_append(out, digits, (size_t)nd), KL_OK);
		k = 0;
	} else {
		k = 1 + (int)rnd(g, (unsigned)nd);
		CU_ASSERT_EQUAL_FATAL(buf_append(out, digits, (size_t)k), KL_OK);
		if (k < nd) {
			put(out, ".");
			CU_ASSERT_EQUAL_FATAL(buf_append(out, digits + k, (size_t)(nd - k)), KL_OK);
		}
	}
	CU_ASSERT_EQUAL_FATAL(buf_printf(out, "%s%s%d", chance(g, 50) ? "e" : "E",
					 point - k + lead_zeros >= 0 && chance(g, 30) ? "+" : "",
					 point - k + lead_zeros),
			      KL_OK);
}

static void gen_record(struct gen *g, struct buf *out, struct m_record *r)
{
	struct members ms = { .n = 0 };
	uint8_t raw[700];
	char b64[KL_B64_ENCLEN(sizeof(raw)) + 1];
	size_t n = rnd(g, 100) < 10 ? 0 : rnd(g, sizeof(raw) + 1), len;
	struct buf *b;
	unsigned u;

	/* SequenceNumber: digits (sometimes anything non-empty). */
	buf_reset(&r->seq);
	if (chance(g, 90)) {
		CU_ASSERT_EQUAL_FATAL(buf_printf(&r->seq, "4959%020" PRIu64 "%010u",
						 kl_rng_next(&g->rng) % UINT64_C(10000000000000000000),
						 rnd(g, 1000000000)), KL_OK);
	} else {
		gen_text(g, &r->seq, 20, 0);
	}
	put_string(g, member(g, &ms, "SequenceNumber"), r->seq.data, r->seq.len);

	gen_text(g, &r->pk, 24, 1);
	put_string(g, member(g, &ms, "PartitionKey"), r->pk.data ? r->pk.data : "", r->pk.len);

	buf_reset(&r->data);
	for (size_t i = 0; i < n; i++)
		raw[i] = (uint8_t)rnd(g, 256);
	CU_ASSERT_EQUAL_FATAL(buf_append(&r->data, raw, n), KL_OK);
	kl_b64_encode(raw, n, b64);
	len = strlen(b64);
	if (chance(g, 30))
		while (len && b64[len - 1] == '=')
			len--;
	b = member(g, &ms, "Data");
	if (chance(g, 70)) {
		/* The usual case: base64 as is (the scanner's fast path). */
		put(b, "\"");
		CU_ASSERT_EQUAL_FATAL(buf_append(b, b64, len), KL_OK);
		put(b, "\"");
	} else {
		put_string(g, b, b64, len);
	}

	r->arrival_ms = 0;
	u = rnd(g, 10);
	if (u < 8) {
		r->arrival_ms = (int64_t)kl_rng_below(&g->rng, UINT64_C(4000000000000));
		if (u == 0)
			r->arrival_ms = -r->arrival_ms;
		put_number(g, member(g, &ms, "ApproximateArrivalTimestamp"), r->arrival_ms, 3);
	} else if (u == 8) {
		put(member(g, &ms, "ApproximateArrivalTimestamp"), "null");
	}

	r->encryption = KINESIS_ENCRYPTION_NONE;
	u = rnd(g, 5);
	if (u == 0) {
		r->encryption = KINESIS_ENCRYPTION_KMS;
		put_string(g, member(g, &ms, "EncryptionType"), "KMS", 3);
	} else if (u == 1) {
		put_string(g, member(g, &ms, "EncryptionType"), "NONE", 4);
	} else if (u == 2) {
		put_string(g, member(g, &ms, "EncryptionType"), "KMS2", 4);
	} else if (u == 3) {
		put(member(g, &ms, "EncryptionType"), "null");
	}
	unknown_members(g, &ms);
	join(g, &ms, out);
}

static void gen_child(struct gen *g, struct buf *out, struct m_child *c)
{
	struct members ms = { .n = 0 };
	struct buf *b;
	unsigned u;

	gen_text(g, &c->shard_id, 20, 0);
	put_string(g, member(g, &ms, "ShardId"), c->shard_id.data, c->shard_id.len);
	c->n_parents = 0;
	u = rnd(g, 4);
	if (u == 0) {
		put(member(g, &ms, "ParentShards"), "null");
	} else if (u > 1) {
		b = member(g, &ms, "ParentShards");
		put(b, "[");
		for (size_t n = rnd(g, 3); c->n_parents < n; c->n_parents++) {
			struct buf *p = &c->parents[c->n_parents];
			if (c->n_parents)
				put(b, ",");
			put_ws(g, b);
			gen_text(g, p, 20, 1);
			put_string(g, b, p->data ? p->data : "", p->len);
			put_ws(g, b);
		}
		put(b, "]");
	}
	buf_reset(&c->starting);
	buf_reset(&c->ending);
	u = rnd(g, 4);
	if (u == 0) {
		put(member(g, &ms, "HashKeyRange"), "null");
	} else if (u > 1) {
		struct members hs = { .n = 0 };
		CU_ASSERT_EQUAL_FATAL(buf_printf(&c->starting, "%u", rnd(g, 1000000)), KL_OK);
		put_string(g, member(g, &hs, "StartingHashKey"), c->starting.data, c->starting.len);
		if (chance(g, 70)) {
			CU_ASSERT_EQUAL_FATAL(buf_printf(&c->ending, "%" PRIu64, kl_rng_next(&g->rng)), KL_OK);
			put_string(g, member(g, &hs, "EndingHashKey"), c->ending.data, c->ending.len);
		} else if (chance(g, 50)) {
			put(member(g, &hs, "EndingHashKey"), "null");
		}
		unknown_members(g, &hs);
		join(g, &hs, member(g, &ms, "HashKeyRange"));
	}
	unknown_members(g, &ms);
	join(g, &ms, out);
}

/* A random valid GetRecords body in out and what it means in m. */
static void gen_response(struct gen *g, struct buf *out, struct model *m, size_t max_recs)
{
	struct members ms = { .n = 0 };
	struct buf *b;
	unsigned u;

	buf_reset(out);
	model_init(m);
	u = rnd(g, 10);
	if (u < 8) {
		b = member(g, &ms, "Records");
		put(b, "[");
		m->n_recs = rnd(g, (unsigned)max_recs + 1);
		for (size_t i = 0; i < m->n_recs; i++) {
			if (i)
				put(b, ",");
			put_ws(g, b);
			gen_record(g, b, &m->recs[i]);
			put_ws(g, b);
		}
		put(b, "]");
	} else if (u == 8) {
		put(member(g, &ms, "Records"), "null");
	}
	u = rnd(g, 6);
	if (u < 3) {
		gen_text(g, &m->next, 60, 1);
		m->has_next = m->next.len > 0;
		put_string(g, member(g, &ms, "NextShardIterator"), m->next.data ? m->next.data : "",
			   m->next.len);
	} else if (u == 3) {
		put(member(g, &ms, "NextShardIterator"), "null");
	}
	u = rnd(g, 4);
	if (u < 2) {
		m->millis_behind = chance(g, 30) ? 0 : (int64_t)kl_rng_below(&g->rng, 100000000);
		put_number(g, member(g, &ms, "MillisBehindLatest"), m->millis_behind, 0);
	} else if (u == 2) {
		put(member(g, &ms, "MillisBehindLatest"), "null");
	}
	u = rnd(g, 4);
	if (u == 0) {
		put(member(g, &ms, "ChildShards"), "null");
	} else if (u == 1) {
		b = member(g, &ms, "ChildShards");
		put(b, "[");
		m->n_children = rnd(g, (unsigned)KL_ARRAY_LEN(m->children) + 1);
		for (size_t i = 0; i < m->n_children; i++) {
			if (i)
				put(b, ",");
			put_ws(g, b);
			gen_child(g, b, &m->children[i]);
			put_ws(g, b);
		}
		put(b, "]");
	}
	unknown_members(g, &ms);
	put_ws(g, out);
	join(g, &ms, out);
	put_ws(g, out);
}

/* ------------------------------------------------------ differential */

static void test_differential(void)
{
	struct buf body;
	struct model want, ref;
	size_t failures = 0;

	buf_init(&body, 0);
	model_init(&want);
	model_init(&ref);
	for (uint64_t seed = 1; seed <= 600; seed++) {
		struct gen g;
		struct kinesis_records *r = NULL;
		struct kl_errinfo info;
		enum kl_err err;
		int ref_rc, ok;

		kl_rng_seed_value(&g.rng, seed);
		g.escape_pct = seed % 3 == 0 ? 0 : (int)(seed % 4) * 10;
		g.ws_pct = seed % 5 == 0 ? 0 : (int)(seed % 3) * 25;
		model_done(&want);
		gen_response(&g, &body, &want, seed % 10 == 0 ? KL_ARRAY_LEN(want.recs) : 6);
		kl_errinfo_clear(&info);
		err = scan_len(body.data, body.len, &r, &info);
		model_done(&ref);
		ref_rc = ref_parse(body.data, body.len, 1, &ref);
		ok = err == KL_OK && ref_rc == 0 && same(r, &want) && same(r, &ref) &&
		     same_model(&ref, &want);
		CU_ASSERT_TRUE(ok);
		if (!ok && failures++ < 3)
			fprintf(stderr, "\n  seed %" PRIu64 ": scanner %s (%s), reference %d, "
				"scanner==generated %d, scanner==reference %d\n  body: %s\n", seed,
				kl_strerror(err), info.message, ref_rc, r ? same(r, &want) : -1,
				r ? same(r, &ref) : -1, body.data);
		kinesis_records_free(r);
	}
	model_done(&want);
	model_done(&ref);
	buf_done(&body);
}

/* ------------------------------------------------- truncation, mutation */

/* A sample with every feature, built by the generator from a fixed seed. */
static void sample(struct buf *body, struct model *m)
{
	struct gen g;

	for (uint64_t seed = 1000;; seed++) {
		kl_rng_seed_value(&g.rng, seed);
		g.escape_pct = 10;
		g.ws_pct = 20;
		model_done(m);
		gen_response(&g, body, m, 4);
		if (m->n_recs >= 2 && m->n_children >= 2 && body->len < 3000 &&
		    strstr(body->data, "\\u") && strstr(body->data, "E") && strstr(body->data, "null"))
			return;
	}
}

static void test_every_prefix(void)
{
	struct buf body;
	struct model m;
	size_t last;

	buf_init(&body, 0);
	model_init(&m);
	sample(&body, &m);
	last = body.len;
	while (strchr(" \t\r\n", body.data[last - 1]))
		last--;
	/* Up to the closing brace nothing is complete; after it only whitespace is missing. */
	for (size_t len = 0; len <= body.len; len++) {
		struct kinesis_records *r = NULL;
		struct kl_errinfo info;
		enum kl_err err;
		unsigned long at = 0, of = 0;
		const char *p;

		kl_errinfo_clear(&info);
		err = scan_len(body.data, len, &r, &info);
		if (len < last) {
			CU_ASSERT_EQUAL(err, KL_EPARSE);
			CU_ASSERT_PTR_NULL(r);
			p = strstr(info.message, " at byte ");
			CU_ASSERT_PTR_NOT_NULL_FATAL(p);
			CU_ASSERT_EQUAL(sscanf(p, " at byte %lu of %lu", &at, &of), 2);
			CU_ASSERT(at <= len);
			CU_ASSERT_EQUAL(of, len);
		} else {
			CU_ASSERT_EQUAL(err, KL_OK);
			CU_ASSERT(r && same(r, &m));
		}
		kinesis_records_free(r);
	}
	model_done(&m);
	buf_done(&body);
}

/*
 * Every byte of the sample replaced by bytes that matter to JSON, and
 * deleted: the scanner must never crash or read outside the body, and
 * whatever it accepts json-c (strict) must accept with the same meaning.
 */
static void test_mutations(void)
{
	static const char subst[] = "\"\\{}[],: 0-e.nA=/u\x01\x7f\xff";
	struct buf body, mutated;
	struct model m, ref;
	size_t accepted = 0, mismatches = 0;

	buf_init(&body, 0);
	buf_init(&mutated, 0);
	model_init(&m);
	model_init(&ref);
	sample(&body, &m);
	for (size_t i = 0; i < body.len; i++) {
		for (size_t k = 0; k <= sizeof(subst) - 1; k++) {
			struct kinesis_records *r = NULL;
			enum kl_err err;

			buf_reset(&mutated);
			CU_ASSERT_EQUAL_FATAL(buf_append(&mutated, body.data, body.len), KL_OK);
			if (k < sizeof(subst) - 1) {
				if (body.data[i] == subst[k])
					continue;
				mutated.data[i] = subst[k];
			} else {
				/* the last round deletes the byte */
				memmove(mutated.data + i, mutated.data + i + 1, body.len - i - 1);
				mutated.len--;
			}
			err = scan_len(mutated.data, mutated.len, &r, NULL);
			CU_ASSERT(err == KL_OK || err == KL_EPARSE);
			if (err == KL_OK) {
				int ok;
				accepted++;
				model_done(&ref);
				ok = ref_parse(mutated.data, mutated.len, 1, &ref) == 0 && same(r, &ref);
				CU_ASSERT_TRUE(ok);
				if (!ok && mismatches++ < 3)
					fprintf(stderr, "\n  accepted but json-c disagrees: %.*s\n",
						(int)mutated.len, mutated.data);
			} else {
				CU_ASSERT_PTR_NULL(r);
			}
			kinesis_records_free(r);
		}
	}
	/* Some mutations stay valid (inside strings, data, whitespace). */
	CU_ASSERT(accepted > 0);
	model_done(&m);
	model_done(&ref);
	buf_done(&body);
	buf_done(&mutated);
}

/* A response as big as AWS sends: 10000 records, ~6 MB. */
static void test_large(void)
{
	struct buf body, ref_body;
	struct kinesis_records *r = NULL;
	struct kl_rng rng;
	uint8_t raw[512];
	char b64[KL_B64_ENCLEN(sizeof(raw)) + 1];
	size_t total = 0;

	buf_init(&body, 0);
	buf_init(&ref_body, 0);
	kl_rng_seed_value(&rng, 7);
	put(&body, "{\"Records\":[");
	for (int i = 0; i < KINESIS_GET_RECORDS_MAX; i++) {
		size_t n = (size_t)kl_rng_below(&rng, sizeof(raw) + 1);
		for (size_t j = 0; j < n; j++)
			raw[j] = (uint8_t)kl_rng_next(&rng);
		CU_ASSERT_EQUAL_FATAL(buf_append(&ref_body, raw, n), KL_OK);
		kl_b64_encode(raw, n, b64);
		CU_ASSERT_EQUAL_FATAL(buf_printf(&body, "%s{\"SequenceNumber\":\"%d\","
						 "\"ApproximateArrivalTimestamp\":1.7952911%05dE9,"
						 "\"Data\":\"%s\",\"PartitionKey\":\"pk-%d\"}",
						 i ? "," : "", i, i, b64, i % 97), KL_OK);
		total += n;
	}
	put(&body, "],\"NextShardIterator\":\"AAAA\",\"MillisBehindLatest\":0}");
	CU_ASSERT_EQUAL_FATAL(scan_len(body.data, body.len, &r, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(r->n_records, KINESIS_GET_RECORDS_MAX);
	CU_ASSERT_EQUAL(r->data_bytes, total);
	total = 0;
	for (int i = 0; i < KINESIS_GET_RECORDS_MAX; i++) {
		char seq[16], pk[16];
		const struct kinesis_record *rec = &r->records[i];
		snprintf(seq, sizeof(seq), "%d", i);
		snprintf(pk, sizeof(pk), "pk-%d", i % 97);
		if (strcmp(rec->sequence_number, seq) != 0 || strcmp(rec->partition_key, pk) != 0 ||
		    memcmp(rec->data, ref_body.data + total, rec->data_len) != 0 ||
		    rec->arrival_ms != INT64_C(1795291100000) + i) {
			CU_FAIL("record differs");
			break;
		}
		total += rec->data_len;
	}
	kinesis_records_free(r);
	buf_done(&body);
	buf_done(&ref_body);
}

/* ------------------------------------------------- through the wire */

struct wire {
	struct loophttp *srv;
	struct creds_chain *creds;
	struct aws_client c;
};

static void wire_start(struct wire *w)
{
	struct creds_config cc = { 0 };
	struct aws_client_config ac = { 0 };

	memset(w, 0, sizeof(*w));
	CU_ASSERT_EQUAL_FATAL(loophttp_start(NULL, NULL, &w->srv), 0);
	cc.access_key_id = "AKIDEXAMPLE";
	cc.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
	cc.disable_imds = 1;
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cc, &w->creds), KL_OK);
	ac.service = "kinesis";
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

/* aws_json_call_raw() sends what aws_json_call() sends and hands back the body untouched. */
static void test_wire_raw(void)
{
	static const char J11[] = "application/x-amz-json-1.1";
	const struct loophttp_request *req;
	struct http_response resp;
	struct kl_errinfo info;
	json_object *in = json_object_new_object();
	struct wire w;

	CU_ASSERT_PTR_NOT_NULL_FATAL(in);
	json_object_object_add(in, "ShardIterator", json_object_new_string("it/1"));
	wire_start(&w);
	loophttp_push(w.srv, 200, J11, "not JSON at all, { and that is fine here");
	http_response_init(&resp);
	CU_ASSERT_EQUAL(aws_json_call_raw(&w.c, "Kinesis_20131202", "1.1", "GetRecords", in, &resp,
					  &info), KL_OK);
	CU_ASSERT_EQUAL(resp.status, 200);
	CU_ASSERT_EQUAL(resp.body.len, strlen("not JSON at all, { and that is fine here"));
	CU_ASSERT_STRING_EQUAL(resp.body.data, "not JSON at all, { and that is fine here");
	http_response_done(&resp);
	req = loophttp_request(w.srv, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(req);
	CU_ASSERT_STRING_EQUAL(req->method, "POST");
	CU_ASSERT_STRING_EQUAL(loophttp_header(req, "X-Amz-Target"), "Kinesis_20131202.GetRecords");
	CU_ASSERT_STRING_EQUAL(loophttp_header(req, "Content-Type"), J11);
	CU_ASSERT_STRING_EQUAL(req->body, "{\"ShardIterator\":\"it\\/1\"}");

	/* Errors are classified as aws_json_call() does it. */
	loophttp_push(w.srv, 400, J11, "{\"__type\":\"ExpiredIteratorException\",\"message\":\"old\"}");
	http_response_init(&resp);
	CU_ASSERT_EQUAL(aws_json_call_raw(&w.c, "Kinesis_20131202", "1.1", "GetRecords", in, &resp,
					  &info), KL_EEXPIRED);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ExpiredIteratorException");
	CU_ASSERT_EQUAL(resp.status, 400);
	http_response_done(&resp);

	/* aws_json_call() hands back only a JSON object: an empty body is an
	 * empty one, anything else is KL_EPARSE with the operation named. */
	{
		static const struct {
			const char *body;
			enum kl_err want;
			const char *msg;
		} shapes[] = {
			{ "{\"a\":1}", KL_OK, NULL },
			{ "", KL_OK, NULL },
			{ "[1,2]", KL_EPARSE, "DescribeStream: response is not a JSON object" },
			{ "\"x\"", KL_EPARSE, "DescribeStream: response is not a JSON object" },
			{ "{\"a\":", KL_EPARSE, "DescribeStream: response is not JSON (5 bytes)" },
		};

		for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
			json_object *out = NULL;

			loophttp_push(w.srv, 200, J11, shapes[i].body);
			CU_ASSERT_EQUAL(aws_json_call(&w.c, "Kinesis_20131202", "1.1", "DescribeStream",
						      in, &out, &info), shapes[i].want);
			if (shapes[i].want == KL_OK) {
				CU_ASSERT(json_object_is_type(out, json_type_object));
			} else {
				CU_ASSERT_PTR_NOT_NULL(strstr(info.message, shapes[i].msg));
			}
			json_object_put(out);
		}
	}
	json_object_put(in);
	wire_stop(&w);
}

/* kinesis_get_records() end to end over HTTP, on generated responses. */
static void test_wire_get_records(void)
{
	struct buf body;
	struct model m;
	struct wire w;

	buf_init(&body, 0);
	model_init(&m);
	wire_start(&w);
	for (uint64_t seed = 1; seed <= 5; seed++) {
		struct kinesis_records *r = NULL;
		struct kl_errinfo info;
		struct gen g;

		kl_rng_seed_value(&g.rng, seed * 7919);
		g.escape_pct = 10;
		g.ws_pct = 20;
		model_done(&m);
		gen_response(&g, &body, &m, KL_ARRAY_LEN(m.recs));
		loophttp_push(w.srv, 200, "application/x-amz-json-1.1", body.data);
		CU_ASSERT_EQUAL(kinesis_get_records(&w.c, "it", 0, &r, &info), KL_OK);
		CU_ASSERT(r && same(r, &m));
		if (!r)
			fprintf(stderr, "\n  %s\n", info.message);
		kinesis_records_free(r);
	}
	/* An empty 200 is not a response, and the message names the call. */
	loophttp_push(w.srv, 200, "application/x-amz-json-1.1", "");
	{
		struct kinesis_records *r = NULL;
		struct kl_errinfo info;
		CU_ASSERT_EQUAL(kinesis_get_records(&w.c, "it", 5, &r, &info), KL_EPARSE);
		CU_ASSERT_PTR_NULL(r);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "GetRecords"));
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "at byte 0 of 0"));
	}
	wire_stop(&w);
	model_done(&m);
	buf_done(&body);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_escapes),
		KL_TEST(test_whitespace),
		KL_TEST(test_unknown_keys),
		KL_TEST(test_timestamps),
		KL_TEST(test_millis_behind),
		KL_TEST(test_shard_end_and_children),
		KL_TEST(test_rejects),
		KL_TEST(test_differential),
		KL_TEST(test_every_prefix),
		KL_TEST(test_mutations),
		KL_TEST(test_large),
		KL_TEST(test_wire_raw),
		KL_TEST(test_wire_get_records),
		{ 0 },
	};
	int rc;

	if (http_global_init() != KL_OK)
		return 1;
	rc = kl_test_run("getrecords", t);
	http_global_cleanup();
	return rc;
}
