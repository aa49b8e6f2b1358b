/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_errrec.c: error-record lines: the exact bytes for a simple record,
 * json-c parsing back every field of a nasty one (quotes, control bytes,
 * invalid UTF-8, binary data), determinism, truncation and the buffer cap.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "errrec.h"
#include "esn.h"
#include "kl_err.h"
#include "testutil.h"
#include "util.h"

#define SEQ "49590338271490256608559692538361571095921575989136588898"

static struct json_object *parse_all(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);

	/* The whole line must be one JSON value. */
	if (o && json_tokener_get_parse_end(tok) != len) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t get_int(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return -12345;
	return json_object_get_int64(v);
}

static void test_exact_line(void)
{
	struct esn e;
	struct buf b;
	struct kl_errinfo info;
	struct errrec r = {
		.code = ERRREC_PROCESSING_FAILED,
		.message = "bad \"json\"",
		.attempts = 1,
		.arrival_ms = 1795291116903LL,
		.shard_id = "shardId-000000000001",
		.esn = &e,
		.partition_key = "user-42",
		.data = "hi!",
		.len = 3,
	};

	CU_ASSERT_EQUAL_FATAL(esn_set(SEQ, 7, &e, NULL), KL_OK);
	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(errrec_build(&r, &b, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(b.data,
			       "{\"attemptsMade\":1,\"arrivalTimestamp\":1795291116903,"
			       "\"errorCode\":\"processing-failed\",\"errorMessage\":\"bad \\\"json\\\"\","
			       "\"attemptEndingTimestamp\":1795291116903,\"rawData\":\"aGkh\","
			       "\"shardId\":\"shardId-000000000001\",\"sequenceNumber\":\"" SEQ "\","
			       "\"subSequenceNumber\":7,\"partitionKey\":\"user-42\"}");
	/* Appends: a second record goes after the first, nothing in between. */
	{
		size_t first = b.len;

		CU_ASSERT_EQUAL(errrec_build(&r, &b, &info), KL_OK);
		CU_ASSERT_EQUAL(b.len, 2 * first);
		CU_ASSERT_EQUAL(memcmp(b.data, b.data + first, first), 0);
	}
	buf_done(&b);
}

static void test_parse_back(void)
{
	static const uint8_t data[] = { 0, 1, 2, 0xff, 0xfe, '\n', '"', '\\', 'z' };
	const char *msg = "line1\nline2\t\"quoted\" back\\slash \x01 bad\xff utf8 caf\xc3\xa9 \xe2\x80\xa8 end";
	struct esn e;
	struct buf b;
	struct kl_errinfo info;
	struct json_object *o;
	struct errrec r = {
		.code = ERRREC_PLUGIN_CRASH,
		.message = msg,
		.attempts = 3,
		.arrival_ms = 1700000000123LL,
		.shard_id = "shardId-000000000007",
		.esn = &e,
		.partition_key = "p\"k\x02",
		.data = data,
		.len = sizeof(data),
	};

	CU_ASSERT_EQUAL_FATAL(esn_set("0012", 0, &e, NULL), KL_OK);
	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(errrec_build(&r, &b, &info), KL_OK);
	CU_ASSERT_PTR_NULL(memchr(b.data, '\n', b.len));   /* one line, no newline */
	o = parse_all(b.data, b.len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	CU_ASSERT_EQUAL(get_int(o, "attemptsMade"), 3);
	CU_ASSERT_EQUAL(get_int(o, "arrivalTimestamp"), 1700000000123LL);
	CU_ASSERT_EQUAL(get_int(o, "attemptEndingTimestamp"), 1700000000123LL);
	CU_ASSERT_STRING_EQUAL(get_str(o, "errorCode"), "plugin-crash");
	CU_ASSERT_STRING_EQUAL(get_str(o, "errorMessage"),
			       "line1\nline2\t\"quoted\" back\\slash \x01 bad\xef\xbf\xbd utf8 caf\xc3\xa9"
			       " \xe2\x80\xa8 end");
	CU_ASSERT_STRING_EQUAL(get_str(o, "shardId"), "shardId-000000000007");
	CU_ASSERT_STRING_EQUAL(get_str(o, "sequenceNumber"), "12");
	CU_ASSERT_EQUAL(get_int(o, "subSequenceNumber"), 0);
	CU_ASSERT_STRING_EQUAL(get_str(o, "partitionKey"), "p\"k\x02");
	{
		const char *raw = get_str(o, "rawData");
		uint8_t dec[64];
		size_t n = 0;

		CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
		CU_ASSERT_EQUAL(kl_b64_decode(raw, strlen(raw), dec, &n), KL_OK);
		CU_ASSERT_EQUAL(n, sizeof(data));
		CU_ASSERT_EQUAL(memcmp(dec, data, sizeof(data)), 0);
	}
	CU_ASSERT_EQUAL(json_object_object_length(o), 10);
	json_object_put(o);

	/* Deterministic: the same input gives the same bytes. */
	{
		struct buf b2;

		buf_init(&b2, 0);
		CU_ASSERT_EQUAL(errrec_build(&r, &b2, &info), KL_OK);
		CU_ASSERT_EQUAL(b2.len, b.len);
		CU_ASSERT(b2.len == b.len && memcmp(b.data, b2.data, b.len) == 0);
		buf_done(&b2);
	}
	buf_done(&b);
}

static void test_defaults_and_limits(void)
{
	struct esn e;
	struct buf b;
	struct kl_errinfo info;
	struct json_object *o;
	char *longmsg = malloc(ERRREC_MESSAGE_MAX + 16);
	uint8_t *big = calloc(1, 1 << 20);
	struct errrec r = {
		.code = ERRREC_PARTITION_KEY_MISSING,
		.attempts = 1,
		.arrival_ms = 5,
		.shard_id = "s",
		.esn = &e,
	};

	CU_ASSERT_EQUAL_FATAL(esn_set("1", 0, &e, NULL), KL_OK);
	buf_init(&b, 0);
	/* No message, no partition key, no data. */
	CU_ASSERT_EQUAL_FATAL(errrec_build(&r, &b, &info), KL_OK);
	o = parse_all(b.data, b.len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	CU_ASSERT_STRING_EQUAL(get_str(o, "errorMessage"),
			       "A partition key used by the S3 key template is missing.");
	CU_ASSERT_STRING_EQUAL(get_str(o, "rawData"), "");
	CU_ASSERT_STRING_EQUAL(get_str(o, "partitionKey"), "");
	json_object_put(o);

	/* A long message is cut before a character that would not fit whole. */
	memset(longmsg, 'a', ERRREC_MESSAGE_MAX - 1);
	memcpy(longmsg + ERRREC_MESSAGE_MAX - 1, "\xc3\xa9tail", 7);
	r.message = longmsg;
	buf_reset(&b);
	CU_ASSERT_EQUAL_FATAL(errrec_build(&r, &b, &info), KL_OK);
	o = parse_all(b.data, b.len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	CU_ASSERT_EQUAL(strlen(get_str(o, "errorMessage")), ERRREC_MESSAGE_MAX - 1);
	json_object_put(o);

	/* A 1 MiB record. */
	r.message = NULL;
	r.data = big;
	r.len = 1 << 20;
	buf_reset(&b);
	CU_ASSERT_EQUAL_FATAL(errrec_build(&r, &b, &info), KL_OK);
	CU_ASSERT(b.len > KL_B64_ENCLEN(1 << 20));
	o = parse_all(b.data, b.len);
	CU_ASSERT_PTR_NOT_NULL(o);
	CU_ASSERT_EQUAL(strlen(get_str(o, "rawData")), KL_B64_ENCLEN(1 << 20));
	json_object_put(o);
	buf_done(&b);

	/* The cap: all or nothing, earlier content intact. */
	buf_init(&b, 4096);
	CU_ASSERT_EQUAL(buf_append_str(&b, "previous"), KL_OK);
	CU_ASSERT_EQUAL(errrec_build(&r, &b, &info), KL_ENOMEM);
	CU_ASSERT_EQUAL(b.len, 8);
	CU_ASSERT_STRING_EQUAL(b.data, "previous");
	buf_done(&b);

	/* Missing identity. */
	buf_init(&b, 0);
	r.shard_id = NULL;
	CU_ASSERT_EQUAL(errrec_build(&r, &b, &info), KL_EINVAL);
	r.shard_id = "s";
	r.esn = NULL;
	CU_ASSERT_EQUAL(errrec_build(&r, &b, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(b.len, 0);
	buf_done(&b);
	free(longmsg);
	free(big);
}

static void test_names(void)
{
	CU_ASSERT_STRING_EQUAL(errrec_code_name(ERRREC_PROCESSING_FAILED), "processing-failed");
	CU_ASSERT_STRING_EQUAL(errrec_code_name(ERRREC_PARTITION_KEY_MISSING), "partition-key-missing");
	CU_ASSERT_STRING_EQUAL(errrec_code_name(ERRREC_PARTITION_KEY_INVALID), "partition-key-invalid");
	CU_ASSERT_STRING_EQUAL(errrec_code_name(ERRREC_PLUGIN_CRASH), "plugin-crash");
	CU_ASSERT_STRING_EQUAL(errrec_output_type(ERRREC_PROCESSING_FAILED), "processing-failed");
	CU_ASSERT_STRING_EQUAL(errrec_output_type(ERRREC_PLUGIN_CRASH), "processing-failed");
	CU_ASSERT_STRING_EQUAL(errrec_output_type(ERRREC_PARTITION_KEY_MISSING), "partitioning-failed");
	CU_ASSERT_STRING_EQUAL(errrec_output_type(ERRREC_PARTITION_KEY_INVALID), "partitioning-failed");
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_exact_line),
		KL_TEST(test_parse_back),
		KL_TEST(test_defaults_and_limits),
		KL_TEST(test_names),
		{ 0 },
	};

	return kl_test_run("errrec", t);
}
