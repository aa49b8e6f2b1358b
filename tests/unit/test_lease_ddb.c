/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_lease_ddb.c: the DynamoDB lease store's pure parts, on canned
 * DynamoDB JSON: items written by KCL (extra attributes, entityType
 * variants, two parents, 38-digit numbers, base64 state) read into struct
 * lease, records written back as items, the exact request of every store
 * operation, and the Kinesis shard source's conversion and filters.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ddb.h"
#include "kinesis.h"
#include "lease.h"
#include "lease_shards_kinesis.h"
#include "lease_store_ddb.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

static json_object *parse(const char *text)
{
	json_object *o = json_tokener_parse(text);

	CU_ASSERT_PTR_NOT_NULL_FATAL(o);
	return o;
}

/* Parses item text and reads it; returns the result code. */
static enum kl_err read_item(const char *text, struct lease *ret)
{
	json_object *item = parse(text);
	struct kl_errinfo info;
	enum kl_err err;

	kl_errinfo_clear(&info);
	lease_init(ret);
	err = lease_ddb_from_item(item, ret, &info);
	if (err == KL_EPARSE)
		CU_ASSERT(info.message[0] != '\0');
	json_object_put(item);
	return err;
}

/* True when the JSON text a and the object b are equal as JSON values. */
static bool json_same(const char *a, json_object *b)
{
	json_object *o = parse(a);
	bool same = json_object_equal(o, b);

	if (!same)
		fprintf(stderr, "\n  expected %s\n  got      %s\n",
			json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return same;
}

#define SEQ56 "49590338271490256608559692538361571095921575989136588898"
#define HKMAX "340282366920938463463374607431768211455"
#define N38 "12345678901234567890123456789012345678"

/* A lease item as KCL 2.x/3.x writes it, with attributes kinlake does not
 * know: throughputKBps (3.x), checkpointOwner, a map, a list, a 38-digit
 * number, a binary and a number set. */
static const char kcl_item[] =
	"{\"leaseKey\":{\"S\":\"shardId-000000000007\"},"
	"\"leaseOwner\":{\"S\":\"host-a:1234\"},"
	"\"leaseCounter\":{\"N\":\"4242\"},"
	"\"checkpoint\":{\"S\":\"" SEQ56 "\"},"
	"\"checkpointSubSequenceNumber\":{\"N\":\"7\"},"
	"\"pendingCheckpoint\":{\"S\":\"" SEQ56 "9\"},"
	"\"pendingCheckpointSubSequenceNumber\":{\"N\":\"3\"},"
	"\"pendingCheckpointState\":{\"B\":\"AP8QL2Jhcg==\"},"
	"\"ownerSwitchesSinceCheckpoint\":{\"N\":\"2\"},"
	"\"parentShardId\":{\"SS\":[\"shardId-000000000003\",\"shardId-000000000004\"]},"
	"\"childShardIds\":{\"SS\":[\"shardId-000000000009\"]},"
	"\"startingHashKey\":{\"S\":\"170141183460469231731687303715884105728\"},"
	"\"endingHashKey\":{\"S\":\"" HKMAX "\"},"
	"\"entityType\":{\"S\":\"LEASE\"},"
	"\"kinlakeHeartbeat\":{\"N\":\"1790000000123\"},"
	"\"kinlakeSession\":{\"S\":\"00c0ffee00c0ffee\"},"
	"\"throughputKBps\":{\"N\":\"12.345678\"},"
	"\"checkpointOwner\":{\"S\":\"host-b:99\"},"
	"\"bigNumber\":{\"N\":\"" N38 "\"},"
	"\"meta\":{\"M\":{\"a\":{\"S\":\"x/y\"},\"b\":{\"L\":[{\"N\":\"1\"},{\"BOOL\":true}]}}},"
	"\"blob\":{\"B\":\"3q2+7w==\"},"
	"\"nums\":{\"NS\":[\"1\",\"2.5\"]}}";

/* ---------------------------------------------------------------- item -> lease */

static void test_kcl_item(void)
{
	static const uint8_t state[] = { 0x00, 0xff, 0x10, '/', 'b', 'a', 'r' };
	static const char *const extras[][2] = {
		{ "throughputKBps", "{\"N\":\"12.345678\"}" },
		{ "checkpointOwner", "{\"S\":\"host-b:99\"}" },
		{ "bigNumber", "{\"N\":\"" N38 "\"}" },
		{ "meta", "{\"M\":{\"a\":{\"S\":\"x/y\"},\"b\":{\"L\":[{\"N\":\"1\"},{\"BOOL\":true}]}}}" },
		{ "blob", "{\"B\":\"3q2+7w==\"}" },
		{ "nums", "{\"NS\":[\"1\",\"2.5\"]}" },
	};
	struct lease l;

	CU_ASSERT_EQUAL_FATAL(read_item(kcl_item, &l), KL_OK);
	CU_ASSERT_STRING_EQUAL(l.key, "shardId-000000000007");
	CU_ASSERT_STRING_EQUAL(l.owner, "host-a:1234");
	CU_ASSERT_EQUAL(l.counter, 4242);
	CU_ASSERT_EQUAL(l.checkpoint.kind, LEASE_ESN_SEQ);
	CU_ASSERT_STRING_EQUAL(l.checkpoint.seq, SEQ56);
	CU_ASSERT_EQUAL(l.checkpoint.subseq, 7);
	CU_ASSERT_EQUAL(l.pending.kind, LEASE_ESN_SEQ);
	CU_ASSERT_STRING_EQUAL(l.pending.seq, SEQ56 "9");
	CU_ASSERT_EQUAL(l.pending.subseq, 3);
	CU_ASSERT_EQUAL_FATAL(l.pending_state_len, sizeof(state));
	CU_ASSERT_EQUAL(memcmp(l.pending_state, state, sizeof(state)), 0);
	CU_ASSERT_EQUAL(l.owner_switches, 2);
	CU_ASSERT_EQUAL(l.parents.n, 2);
	CU_ASSERT(lease_strset_has(&l.parents, "shardId-000000000003"));
	CU_ASSERT(lease_strset_has(&l.parents, "shardId-000000000004"));
	CU_ASSERT_EQUAL(l.children.n, 1);
	CU_ASSERT(lease_strset_has(&l.children, "shardId-000000000009"));
	CU_ASSERT_STRING_EQUAL(l.starting_hash_key, "170141183460469231731687303715884105728");
	CU_ASSERT_STRING_EQUAL(l.ending_hash_key, HKMAX);
	CU_ASSERT_STRING_EQUAL(l.entity_type, "LEASE");
	CU_ASSERT(lease_is_lease_entity(&l));
	CU_ASSERT_EQUAL(l.heartbeat_ms, 1790000000123LL);
	CU_ASSERT_STRING_EQUAL(l.session, "00c0ffee00c0ffee");
	/* Every unknown attribute, and nothing else, verbatim. */
	CU_ASSERT_EQUAL(l.n_extra, KL_ARRAY_LEN(extras));
	for (size_t i = 0; i < KL_ARRAY_LEN(extras); i++) {
		const char *v = lease_get_extra(&l, extras[i][0]);

		CU_ASSERT_PTR_NOT_NULL_FATAL(v);
		CU_ASSERT_STRING_EQUAL(v, extras[i][1]);
	}
	CU_ASSERT_PTR_NULL(lease_get_extra(&l, "leaseCounter"));
	lease_done(&l);
}

static void test_minimal_and_sentinels(void)
{
	static const char *const names[] = { "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END" };
	static const enum lease_esn_kind kinds[] = { LEASE_ESN_TRIM_HORIZON, LEASE_ESN_LATEST,
						     LEASE_ESN_AT_TIMESTAMP, LEASE_ESN_SHARD_END };
	struct lease l;
	char text[256];

	/* KCL's create: no owner, counter 0, no entityType (= a lease). */
	CU_ASSERT_EQUAL_FATAL(read_item("{\"leaseKey\":{\"S\":\"s0\"},\"leaseCounter\":{\"N\":\"0\"}}",
					&l), KL_OK);
	CU_ASSERT_PTR_NULL(l.owner);
	CU_ASSERT_EQUAL(l.counter, 0);
	CU_ASSERT_EQUAL(l.checkpoint.kind, LEASE_ESN_NONE);
	CU_ASSERT_EQUAL(l.pending.kind, LEASE_ESN_NONE);
	CU_ASSERT_PTR_NULL(l.pending_state);
	CU_ASSERT_EQUAL(l.parents.n + l.children.n + l.n_extra, 0);
	CU_ASSERT_PTR_NULL(l.entity_type);
	CU_ASSERT_PTR_NULL(l.session);
	CU_ASSERT_EQUAL(l.heartbeat_ms, 0);
	CU_ASSERT(lease_is_lease_entity(&l));
	lease_done(&l);

	for (size_t i = 0; i < KL_ARRAY_LEN(names); i++) {
		snprintf(text, sizeof(text),
			 "{\"leaseKey\":{\"S\":\"s0\"},\"leaseCounter\":{\"N\":\"18446744073709551615\"},"
			 "\"checkpoint\":{\"S\":\"%s\"},\"checkpointSubSequenceNumber\":{\"N\":\"0\"}}",
			 names[i]);
		CU_ASSERT_EQUAL_FATAL(read_item(text, &l), KL_OK);
		CU_ASSERT_EQUAL(l.checkpoint.kind, kinds[i]);
		CU_ASSERT_EQUAL(l.counter, UINT64_MAX);
		lease_done(&l);
	}
	/* One parent: still a set. Leading zeros of a sequence number go. */
	CU_ASSERT_EQUAL_FATAL(read_item("{\"leaseKey\":{\"S\":\"c\"},\"leaseCounter\":{\"N\":\"1\"},"
					"\"checkpoint\":{\"S\":\"00123\"},"
					"\"parentShardId\":{\"SS\":[\"p\"]}}", &l), KL_OK);
	CU_ASSERT_EQUAL(l.parents.n, 1);
	CU_ASSERT_STRING_EQUAL(l.checkpoint.seq, "123");
	lease_done(&l);
}

static void test_entity_types(void)
{
	struct lease l;

	/* KCL 3.5 single-table entities: skipped unread, even without a counter. */
	CU_ASSERT_EQUAL(read_item("{\"leaseKey\":{\"S\":\"host-a\"},"
				  "\"entityType\":{\"S\":\"WORKER_METRIC_STATS\"},"
				  "\"lut\":{\"N\":\"1790000000\"}}", &l), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(read_item("{\"leaseKey\":{\"S\":\"Leader\"},"
				  "\"entityType\":{\"S\":\"LEADER\"},"
				  "\"leaseCounter\":{\"N\":\"3\"}}", &l), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(read_item("{\"leaseKey\":{\"S\":\"Migration3.0\"},"
				  "\"entityType\":{\"S\":\"CLIENT_VERSION_MIGRATION\"}}", &l),
			KL_ENOTFOUND);
	/* Case matters; a non-string entityType is not LEASE either. */
	CU_ASSERT_EQUAL(read_item("{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"3\"},"
				  "\"entityType\":{\"S\":\"lease\"}}", &l), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(read_item("{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"3\"},"
				  "\"entityType\":{\"NULL\":true}}", &l), KL_ENOTFOUND);
	CU_ASSERT_EQUAL_FATAL(read_item("{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"3\"},"
					"\"entityType\":{\"S\":\"LEASE\"}}", &l), KL_OK);
	CU_ASSERT_STRING_EQUAL(l.entity_type, "LEASE");
	lease_done(&l);
}

static void test_malformed_items(void)
{
	static const char *const bad[] = {
		/* no counter; wrong types; not unsigned 64-bit */
		"{\"leaseKey\":{\"S\":\"x\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"S\":\"1\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"-1\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1.5\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"18446744073709551616\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"" N38 "\"}}",
		/* no key */
		"{\"leaseCounter\":{\"N\":\"1\"}}",
		"{\"leaseKey\":{\"N\":\"1\"},\"leaseCounter\":{\"N\":\"1\"}}",
		/* known attributes of the wrong type or value */
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"leaseOwner\":{\"N\":\"1\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"checkpoint\":{\"S\":\"NOW\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"checkpoint\":{\"S\":\"1\"},"
		"\"checkpointSubSequenceNumber\":{\"S\":\"0\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"parentShardId\":{\"S\":\"p\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},"
		"\"pendingCheckpointState\":{\"B\":\"not base64!\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},"
		"\"pendingCheckpointState\":{\"S\":\"AA==\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"startingHashKey\":{\"S\":\"0x10\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"endingHashKey\":{\"N\":\"10\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"kinlakeHeartbeat\":{\"N\":\"1.5\"}}",
		"{\"leaseKey\":{\"S\":\"x\"},\"leaseCounter\":{\"N\":\"1\"},\"kinlakeSession\":{\"B\":\"AA==\"}}",
	};
	struct lease l;

	for (size_t i = 0; i < KL_ARRAY_LEN(bad); i++) {
		enum kl_err err = read_item(bad[i], &l);

		if (err != KL_EPARSE)
			fprintf(stderr, "\n  accepted: %s\n", bad[i]);
		CU_ASSERT_EQUAL(err, KL_EPARSE);
		CU_ASSERT_PTR_NULL(l.key); /* nothing half-filled left behind */
	}
	CU_ASSERT_EQUAL(lease_ddb_from_item(NULL, &l, NULL), KL_EPARSE);
}

/* ---------------------------------------------------------------- lease -> item */

static void test_to_item(void)
{
	static const uint8_t state[] = { 0, 1, 2, 0xfe, 0xff };
	struct lease l, back;
	json_object *item = NULL;

	lease_init(&l);
	CU_ASSERT_EQUAL(lease_set_str(&l.key, "shardId-000000000005"), KL_OK);
	CU_ASSERT_EQUAL(lease_esn_parse("TRIM_HORIZON", 0, &l.checkpoint, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&l.parents, "shardId-000000000001"), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&l.parents, "shardId-000000000002"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_str(&l.starting_hash_key, "0"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_str(&l.ending_hash_key, HKMAX), KL_OK);
	/* Not written by create: */
	CU_ASSERT_EQUAL(lease_set_str(&l.session, "sess"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_str(&l.entity_type, "LEASE"), KL_OK);
	CU_ASSERT_EQUAL(lease_set_extra(&l, "x", "{\"S\":\"y\"}"), KL_OK);
	l.heartbeat_ms = 5;

	CU_ASSERT_EQUAL_FATAL(lease_ddb_to_item(&l, &item, NULL), KL_OK);
	CU_ASSERT(json_same("{\"leaseKey\":{\"S\":\"shardId-000000000005\"},"
			    "\"leaseCounter\":{\"N\":\"0\"},"
			    "\"checkpoint\":{\"S\":\"TRIM_HORIZON\"},"
			    "\"checkpointSubSequenceNumber\":{\"N\":\"0\"},"
			    "\"ownerSwitchesSinceCheckpoint\":{\"N\":\"0\"},"
			    "\"parentShardId\":{\"SS\":[\"shardId-000000000001\",\"shardId-000000000002\"]},"
			    "\"startingHashKey\":{\"S\":\"0\"},"
			    "\"endingHashKey\":{\"S\":\"" HKMAX "\"}}", item));
	json_object_put(item);

	/* Everything create writes reads back the same. */
	CU_ASSERT_EQUAL(lease_set_str(&l.owner, "w1"), KL_OK);
	l.counter = 9;
	l.owner_switches = 4;
	CU_ASSERT_EQUAL(lease_esn_parse(SEQ56, 12, &l.checkpoint, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_esn_parse(SEQ56 "1", 2, &l.pending, NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_set_pending_state(&l, state, sizeof(state)), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&l.children, "c1"), KL_OK);
	CU_ASSERT_EQUAL_FATAL(lease_ddb_to_item(&l, &item, NULL), KL_OK);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(ddb_get(item, "pendingCheckpointState", "B")),
			       "AAEC/v8=");
	CU_ASSERT_STRING_EQUAL(ddb_get_n(item, "checkpointSubSequenceNumber"), "12");
	CU_ASSERT_EQUAL_FATAL(lease_ddb_from_item(item, &back, NULL), KL_OK);
	CU_ASSERT_STRING_EQUAL(back.owner, "w1");
	CU_ASSERT_EQUAL(back.counter, 9);
	CU_ASSERT_EQUAL(back.owner_switches, 4);
	CU_ASSERT_EQUAL(lease_esn_cmp(&back.checkpoint, &l.checkpoint), 0);
	CU_ASSERT_EQUAL(lease_esn_cmp(&back.pending, &l.pending), 0);
	CU_ASSERT_EQUAL(back.pending_state_len, sizeof(state));
	CU_ASSERT(lease_strset_has(&back.children, "c1") && back.parents.n == 2);
	CU_ASSERT_PTR_NULL(back.session);
	CU_ASSERT_PTR_NULL(back.entity_type);
	CU_ASSERT_EQUAL(back.n_extra, 0);
	CU_ASSERT_EQUAL(back.heartbeat_ms, 0);
	lease_done(&back);
	json_object_put(item);

	/* No checkpoint or no key: refused. */
	l.checkpoint = lease_esn_sentinel(LEASE_ESN_NONE);
	CU_ASSERT_EQUAL(lease_ddb_to_item(&l, &item, NULL), KL_EINVAL);
	lease_done(&l);
}

/* ---------------------------------------------------------------- requests */

/* Checks r's operation and body against the expected ones, then frees r. */
static void check_req(struct lease_ddb_req *r, const char *op, const char *body)
{
	CU_ASSERT_STRING_EQUAL(r->operation, op);
	CU_ASSERT(json_same(body, r->body));
	lease_ddb_req_done(r);
	CU_ASSERT_PTR_NULL(r->body);
}

#define KEY "\"Key\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"}}"

static void test_requests(void)
{
	static const uint8_t st[] = { 'k', 'e', 'y', 0 };
	struct lease_ddb_req r = { NULL, NULL };
	struct lease_esn cp, pend;
	struct lease_strset kids = { NULL, 0 };
	struct lease l;
	const char *k = "shardId-000000000001";

	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_get("app", k, &r), KL_OK);
	check_req(&r, "GetItem", "{\"TableName\":\"app\"," KEY ",\"ConsistentRead\":true}");

	lease_init(&l);
	CU_ASSERT_EQUAL(lease_set_str(&l.key, k), KL_OK);
	l.checkpoint = lease_esn_sentinel(LEASE_ESN_LATEST);
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_create("app", &l, &r), KL_OK);
	check_req(&r, "PutItem",
		  "{\"TableName\":\"app\",\"Item\":{\"leaseKey\":{\"S\":\"shardId-000000000001\"},"
		  "\"leaseCounter\":{\"N\":\"0\"},\"checkpoint\":{\"S\":\"LATEST\"},"
		  "\"checkpointSubSequenceNumber\":{\"N\":\"0\"},"
		  "\"ownerSwitchesSinceCheckpoint\":{\"N\":\"0\"}},"
		  "\"ConditionExpression\":\"attribute_not_exists(#lk)\","
		  "\"ExpressionAttributeNames\":{\"#lk\":\"leaseKey\"}}");
	lease_done(&l);

	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_renew("app", k, 41, "sess", 1790000000000LL, &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1, #ss = :s, #hb = :hb\","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#ss\":\"kinlakeSession\","
		  "\"#hb\":\"kinlakeHeartbeat\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"41\"},\":n1\":{\"N\":\"42\"},"
		  "\":s\":{\"S\":\"sess\"},\":hb\":{\"N\":\"1790000000000\"}}}");
	/* No heartbeat: kinlakeHeartbeat is left alone. */
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_renew("app", k, 0, "sess", 0, &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1, #ss = :s\","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#ss\":\"kinlakeSession\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"0\"},\":n1\":{\"N\":\"1\"},"
		  "\":s\":{\"S\":\"sess\"}}}");

	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_take("app", k, 18446744073709551614ULL, "w2", "s2", 7,
						 true, &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1, #lo = :me, #ss = :s, #hb = :hb "
		  "ADD #osc :one\","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#lo\":\"leaseOwner\","
		  "\"#ss\":\"kinlakeSession\",\"#hb\":\"kinlakeHeartbeat\","
		  "\"#osc\":\"ownerSwitchesSinceCheckpoint\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"18446744073709551614\"},"
		  "\":n1\":{\"N\":\"18446744073709551615\"},\":me\":{\"S\":\"w2\"},"
		  "\":s\":{\"S\":\"s2\"},\":hb\":{\"N\":\"7\"},\":one\":{\"N\":\"1\"}}}");
	/* Re-taking our own lease: no owner switch. */
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_take("app", k, 3, "w2", "s2", 0, false, &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1, #lo = :me, #ss = :s\","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#lo\":\"leaseOwner\","
		  "\"#ss\":\"kinlakeSession\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"3\"},\":n1\":{\"N\":\"4\"},"
		  "\":me\":{\"S\":\"w2\"},\":s\":{\"S\":\"s2\"}}}");
	CU_ASSERT_EQUAL(lease_ddb_req_take("app", k, UINT64_MAX, "w2", "s2", 0, false, &r), KL_EINVAL);
	CU_ASSERT_EQUAL(lease_ddb_req_take("app", k, 1, NULL, "s2", 0, false, &r), KL_EINVAL);

	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_release("app", k, 8, "w2", &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1 REMOVE #lo\","
		  "\"ConditionExpression\":\"#lc = :n AND #lo = :me\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#lo\":\"leaseOwner\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"8\"},\":n1\":{\"N\":\"9\"},"
		  "\":me\":{\"S\":\"w2\"}}}");

	CU_ASSERT_EQUAL(lease_esn_parse(SEQ56, 5, &cp, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_checkpoint("app", k, 10, "sess", &cp, &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1, #cp = :cp, #cps = :sub, #osc = :zero, "
		  "#ss = :s REMOVE #pc, #pcs, #pst\","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#cp\":\"checkpoint\","
		  "\"#cps\":\"checkpointSubSequenceNumber\",\"#osc\":\"ownerSwitchesSinceCheckpoint\","
		  "\"#ss\":\"kinlakeSession\",\"#pc\":\"pendingCheckpoint\","
		  "\"#pcs\":\"pendingCheckpointSubSequenceNumber\",\"#pst\":\"pendingCheckpointState\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"10\"},\":n1\":{\"N\":\"11\"},"
		  "\":cp\":{\"S\":\"" SEQ56 "\"},\":sub\":{\"N\":\"5\"},\":zero\":{\"N\":\"0\"},"
		  "\":s\":{\"S\":\"sess\"}}}");
	cp = lease_esn_sentinel(LEASE_ESN_SHARD_END);
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_checkpoint("app", k, 1, "sess", &cp, &r), KL_OK);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(
		ddb_get(json_object_object_get(r.body, "ExpressionAttributeValues"), ":cp", "S")),
		"SHARD_END");
	lease_ddb_req_done(&r);
	cp = lease_esn_sentinel(LEASE_ESN_NONE);
	CU_ASSERT_EQUAL(lease_ddb_req_checkpoint("app", k, 1, "sess", &cp, &r), KL_EINVAL);

	CU_ASSERT_EQUAL(lease_esn_parse("77", 2, &pend, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_prepare("app", k, 12, "sess", &pend, st, sizeof(st), &r),
			      KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1, #pc = :p, #pcs = :psub, #ss = :s, #pst = :st\","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#pc\":\"pendingCheckpoint\","
		  "\"#pcs\":\"pendingCheckpointSubSequenceNumber\",\"#ss\":\"kinlakeSession\","
		  "\"#pst\":\"pendingCheckpointState\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"12\"},\":n1\":{\"N\":\"13\"},"
		  "\":p\":{\"S\":\"77\"},\":psub\":{\"N\":\"2\"},\":s\":{\"S\":\"sess\"},"
		  "\":st\":{\"B\":\"a2V5AA==\"}}}");
	/* Without state: the old state goes. */
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_prepare("app", k, 12, "sess", &pend, NULL, 0, &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #lc = :n1, #pc = :p, #pcs = :psub, #ss = :s "
		  "REMOVE #pst\","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\",\"#pc\":\"pendingCheckpoint\","
		  "\"#pcs\":\"pendingCheckpointSubSequenceNumber\",\"#ss\":\"kinlakeSession\","
		  "\"#pst\":\"pendingCheckpointState\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"12\"},\":n1\":{\"N\":\"13\"},"
		  "\":p\":{\"S\":\"77\"},\":psub\":{\"N\":\"2\"},\":s\":{\"S\":\"sess\"}}}");

	CU_ASSERT_EQUAL(lease_strset_add(&kids, "c1"), KL_OK);
	CU_ASSERT_EQUAL(lease_strset_add(&kids, "c2"), KL_OK);
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_update_meta("app", k, &kids, "5", "9", &r), KL_OK);
	check_req(&r, "UpdateItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"UpdateExpression\":\"SET #ch = :c, #sh = :sh, #eh = :eh\","
		  "\"ConditionExpression\":\"attribute_exists(#lk) AND "
		  "(attribute_not_exists(#et) OR #et = :lease)\","
		  "\"ExpressionAttributeNames\":{\"#ch\":\"childShardIds\",\"#sh\":\"startingHashKey\","
		  "\"#eh\":\"endingHashKey\",\"#lk\":\"leaseKey\",\"#et\":\"entityType\"},"
		  "\"ExpressionAttributeValues\":{\":c\":{\"SS\":[\"c1\",\"c2\"]},\":sh\":{\"S\":\"5\"},"
		  "\":eh\":{\"S\":\"9\"},\":lease\":{\"S\":\"LEASE\"}}}");
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_update_meta("app", k, &kids, NULL, NULL, &r), KL_OK);
	CU_ASSERT_STRING_EQUAL(json_object_get_string(json_object_object_get(r.body,
									      "UpdateExpression")),
			       "SET #ch = :c");
	lease_ddb_req_done(&r);
	CU_ASSERT_EQUAL(lease_ddb_req_update_meta("app", k, &kids, "5", NULL, &r), KL_EINVAL);
	/* Nothing to change: the existence check is a consistent read. */
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_update_meta("app", k, NULL, NULL, NULL, &r), KL_OK);
	check_req(&r, "GetItem", "{\"TableName\":\"app\"," KEY ",\"ConsistentRead\":true}");
	lease_strset_done(&kids);

	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_delete("app", k, 99, &r), KL_OK);
	check_req(&r, "DeleteItem",
		  "{\"TableName\":\"app\"," KEY ","
		  "\"ConditionExpression\":\"#lc = :n\","
		  "\"ExpressionAttributeNames\":{\"#lc\":\"leaseCounter\"},"
		  "\"ExpressionAttributeValues\":{\":n\":{\"N\":\"99\"}}}");

	/* A table name DynamoDB would refuse never leaves. */
	CU_ASSERT_EQUAL(lease_ddb_req_get("a", k, &r), KL_EINVAL);
	CU_ASSERT_EQUAL(lease_ddb_req_renew("app", NULL, 1, "s", 0, &r), KL_EINVAL);
}

/* ---------------------------------------------------------------- shard source */

static struct kinesis_shard kshard(const char *id, const char *p, const char *ap, const char *sh,
				   const char *eh, const char *sseq, const char *eseq)
{
	struct kinesis_shard s;

	memset(&s, 0, sizeof(s));
	snprintf(s.shard_id, sizeof(s.shard_id), "%s", id);
	snprintf(s.parent_shard_id, sizeof(s.parent_shard_id), "%s", p);
	snprintf(s.adjacent_parent_shard_id, sizeof(s.adjacent_parent_shard_id), "%s", ap);
	snprintf(s.starting_hash_key, sizeof(s.starting_hash_key), "%s", sh);
	snprintf(s.ending_hash_key, sizeof(s.ending_hash_key), "%s", eh);
	snprintf(s.starting_sequence_number, sizeof(s.starting_sequence_number), "%s", sseq);
	snprintf(s.ending_sequence_number, sizeof(s.ending_sequence_number), "%s", eseq);
	return s;
}

static bool has_id(const struct lease_shard_list *l, const char *id)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].shard_id, id) == 0)
			return true;
	return false;
}

static void test_shards_from_kinesis(void)
{
	/* s0 split into s2 + s3, then s3 merged with s1 into s4, as kinesalite lists them. */
	struct kinesis_shard v[] = {
		kshard("s0", "", "", "0", "99", "100", "150"),
		kshard("s1", "", "", "100", HKMAX, "101", "160"),
		kshard("s2", "s0", "", "0", "49", "170", ""),
		kshard("s3", "s0", "", "50", "99", "171", "180"),
		kshard("s4", "s1", "s3", "50", HKMAX, "190", ""),
	};
	struct lease_shard_list l, kids;

	CU_ASSERT_EQUAL_FATAL(lease_shards_from_kinesis(v, 5, LEASE_SHARDS_ALL, &l), KL_OK);
	CU_ASSERT_EQUAL_FATAL(l.n, 5);
	CU_ASSERT_PTR_NULL(l.v[0].parent_id);
	CU_ASSERT_PTR_NULL(l.v[0].adjacent_parent_id);
	CU_ASSERT_STRING_EQUAL(l.v[0].ending_seq, "150");
	CU_ASSERT_STRING_EQUAL(l.v[0].starting_seq, "100");
	CU_ASSERT_PTR_NULL(l.v[2].ending_seq);
	CU_ASSERT_STRING_EQUAL(l.v[4].parent_id, "s1");
	CU_ASSERT_STRING_EQUAL(l.v[4].adjacent_parent_id, "s3");
	CU_ASSERT_STRING_EQUAL(l.v[4].starting_hash_key, "50");
	CU_ASSERT_STRING_EQUAL(l.v[4].ending_hash_key, HKMAX);

	CU_ASSERT_EQUAL_FATAL(lease_shards_children_of(&l, "s0", &kids), KL_OK);
	CU_ASSERT(kids.n == 2 && has_id(&kids, "s2") && has_id(&kids, "s3"));
	lease_shard_list_done(&kids);
	/* Both parents of a merge find the child. */
	CU_ASSERT_EQUAL_FATAL(lease_shards_children_of(&l, "s3", &kids), KL_OK);
	CU_ASSERT(kids.n == 1 && has_id(&kids, "s4"));
	lease_shard_list_done(&kids);
	CU_ASSERT_EQUAL_FATAL(lease_shards_children_of(&l, "s1", &kids), KL_OK);
	CU_ASSERT(kids.n == 1 && has_id(&kids, "s4"));
	CU_ASSERT_STRING_EQUAL(kids.v[0].adjacent_parent_id, "s3");
	lease_shard_list_done(&kids);
	CU_ASSERT_EQUAL_FATAL(lease_shards_children_of(&l, "s4", &kids), KL_OK);
	CU_ASSERT_EQUAL(kids.n, 0);
	lease_shard_list_done(&kids);
	lease_shard_list_done(&l);

	/* kinesalite ignores ShardFilter: the filters are applied here. */
	CU_ASSERT_EQUAL_FATAL(lease_shards_from_kinesis(v, 5, LEASE_SHARDS_AT_LATEST, &l), KL_OK);
	CU_ASSERT(l.n == 2 && has_id(&l, "s2") && has_id(&l, "s4"));
	lease_shard_list_done(&l);
	CU_ASSERT_EQUAL_FATAL(lease_shards_from_kinesis(v, 5, LEASE_SHARDS_AT_TRIM_HORIZON, &l), KL_OK);
	CU_ASSERT(l.n == 2 && has_id(&l, "s0") && has_id(&l, "s1"));
	lease_shard_list_done(&l);
	CU_ASSERT_EQUAL_FATAL(lease_shards_from_kinesis(v, 5, LEASE_SHARDS_AT_TIMESTAMP, &l), KL_OK);
	CU_ASSERT(l.n == 2 && has_id(&l, "s0") && has_id(&l, "s1"));
	lease_shard_list_done(&l);
	/* Parents aged out of retention: their children are the oldest generation. */
	CU_ASSERT_EQUAL_FATAL(lease_shards_from_kinesis(v + 2, 3, LEASE_SHARDS_AT_TRIM_HORIZON, &l),
			      KL_OK);
	CU_ASSERT(l.n == 2 && has_id(&l, "s2") && has_id(&l, "s3"));
	lease_shard_list_done(&l);
	/* What AWS returns for AT_LATEST passes through unchanged. */
	CU_ASSERT_EQUAL_FATAL(lease_shards_from_kinesis(v + 2, 1, LEASE_SHARDS_AT_TRIM_HORIZON, &l),
			      KL_OK);
	CU_ASSERT_EQUAL(l.n, 1);
	lease_shard_list_done(&l);
	CU_ASSERT_EQUAL_FATAL(lease_shards_from_kinesis(NULL, 0, LEASE_SHARDS_ALL, &l), KL_OK);
	CU_ASSERT_EQUAL(l.n, 0);
	lease_shard_list_done(&l);
}

static void test_constructors_refuse(void)
{
	struct lease_store_ddb_config dc;
	struct lease_shards_kinesis_config kc;
	struct aws_client_config ac;
	struct lease_store *s = NULL;
	struct lease_shards_kinesis *k = NULL;
	struct kl_errinfo info;

	memset(&dc, 0, sizeof(dc));
	memset(&kc, 0, sizeof(kc));
	memset(&ac, 0, sizeof(ac));
	ac.region = "us-east-1";
	dc.aws = &ac;
	dc.table = "app";
	CU_ASSERT_EQUAL(lease_store_ddb_new(&dc, &s, &info), KL_EINVAL); /* no creds */
	CU_ASSERT_PTR_NULL(s);
	kc.aws = &ac;
	kc.stream = "arn:aws:kinesis:us-east-1:123456789012:table/x";
	CU_ASSERT_EQUAL(lease_shards_kinesis_new(&kc, &k, &info), KL_EINVAL);
	CU_ASSERT_PTR_NULL(k);
	/* Only a DynamoDB store has a table to ensure. */
	CU_ASSERT_EQUAL(lease_store_ddb_ensure_table(NULL, 10, &info), KL_EINVAL);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_kcl_item),
		KL_TEST(test_minimal_and_sentinels),
		KL_TEST(test_entity_types),
		KL_TEST(test_malformed_items),
		KL_TEST(test_to_item),
		KL_TEST(test_requests),
		KL_TEST(test_shards_from_kinesis),
		KL_TEST(test_constructors_refuse),
		{ 0 },
	};

	return kl_test_run("lease_ddb", t);
}
