/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_keytmpl.c: object-key templates: Firehose-style prefixes, Hive
 * layouts, full-key templates, every compile error with its exact message
 * and position, deterministic rendering, and the partition values that
 * must be refused.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "esn.h"
#include "keytmpl.h"
#include "kl_err.h"
#include "testutil.h"

/* 2026-11-21 19:58:36.903 UTC */
#define ARRIVAL 1795291116903LL

#define SEQ1 "49590338271490256608559692538361571095921575989136588898"
#define SEQ2 "49590338271490256608559692540925702759324208523137515618"
#define KEY1 SEQ1 "-0000000000"
#define KEY2 SEQ2 "-0000000003"

struct fixture {
	struct esn first, last;
	struct keytmpl_pkey pkeys[3];
	struct keytmpl_batch b;
};

static void fixture_init(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	CU_ASSERT_EQUAL_FATAL(esn_set(SEQ1, 0, &f->first, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(esn_set(SEQ2, 3, &f->last, NULL), KL_OK);
	f->pkeys[0] = (struct keytmpl_pkey){ "customer_id", "acme" };
	f->pkeys[1] = (struct keytmpl_pkey){ "device", "phone" };
	f->pkeys[2] = (struct keytmpl_pkey){ "region", "eu-west-1" };
	f->b.shard_id = "shardId-000000000001";
	f->b.first = &f->first;
	f->b.last = &f->last;
	f->b.first_arrival_ms = ARRIVAL;
	f->b.pkeys = f->pkeys;
	f->b.n_pkeys = 3;
	f->b.ext = ".gz";
}

/* Compiles text as kind and renders f's batch; checks the key. */
static void expect_key(enum keytmpl_kind kind, const char *text, const struct fixture *f,
		       const char *want)
{
	struct kl_errinfo info;
	struct keytmpl *t = NULL;
	char key[KEYTMPL_KEY_MAX + 1];
	size_t len = 0;
	enum kl_err err;

	kl_errinfo_clear(&info);
	err = keytmpl_compile(text, kind, &t, &info);
	if (err)
		fprintf(stderr, "\n%s: %s\n", text, info.message);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	err = keytmpl_render(t, &f->b, key, sizeof(key), &len, &info);
	if (err)
		fprintf(stderr, "\n%s: %s\n", text, info.message);
	CU_ASSERT_EQUAL(err, KL_OK);
	if (!err) {
		if (strcmp(key, want) != 0)
			fprintf(stderr, "\n  template %s\n  got  %s\n  want %s\n", text, key, want);
		CU_ASSERT_STRING_EQUAL(key, want);
		CU_ASSERT_EQUAL(len, strlen(want));
	}
	keytmpl_free(t);
}

/* Compiles text and expects KL_ECONFIG with exactly message msg. */
static void expect_error(enum keytmpl_kind kind, const char *text, const char *msg)
{
	struct kl_errinfo info;
	struct keytmpl *t = NULL;

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(keytmpl_compile(text, kind, &t, &info), KL_ECONFIG);
	CU_ASSERT_PTR_NULL(t);
	if (strcmp(info.message, msg) != 0)
		fprintf(stderr, "\n  template %s\n  got  %s\n  want %s\n", text, info.message, msg);
	CU_ASSERT_STRING_EQUAL(info.message, msg);
	keytmpl_free(t);
}

static void test_firehose_prefixes(void)
{
	struct fixture f;

	fixture_init(&f);
	/* Firehose's default-style prefix: time of the first record, UTC. */
	expect_key(KEYTMPL_DATA, "myApp/!{timestamp:yyyy/MM/dd/HH}/", &f,
		   "myApp/2026/11/21/19/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* One expression per field, as in Firehose's documentation. */
	expect_key(KEYTMPL_DATA, "year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/", &f,
		   "year=2026/month=11/day=21/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	expect_key(KEYTMPL_DATA,
		   "customer_id=!{partitionKeyFromLambda:customer_id}/device=!{partitionKeyFromLambda:device}/"
		   "year=!{timestamp:yyyy}/",
		   &f, "customer_id=acme/device=phone/year=2026/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* kinlake's alias for plugin keys. */
	expect_key(KEYTMPL_DATA, "r/!{partition:region}/", &f,
		   "r/eu-west-1/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* Every supported field, literals between, yy. */
	expect_key(KEYTMPL_DATA, "t/!{timestamp:yy.MM.dd HH:mm:ss}/", &f,
		   "t/26.11.21 19:58:36/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* A prefix without a slash is used as is (Firehose does the same). */
	expect_key(KEYTMPL_DATA, "raw-", &f, "raw-shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* Empty template: just the default object name. */
	expect_key(KEYTMPL_DATA, "", &f, "shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* '}' and '{' alone are literal text. */
	expect_key(KEYTMPL_DATA, "a}b{c/", &f, "a}b{c/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	f.b.ext = NULL;
	expect_key(KEYTMPL_DATA, "p/", &f, "p/shardId-000000000001/" KEY1 "_" KEY2);
}

static void test_hive_and_quotes(void)
{
	struct fixture f;

	fixture_init(&f);
	expect_key(KEYTMPL_DATA, "events/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/", &f,
		   "events/dt=2026-11-21/hour=19/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* The same with quoted literals inside one pattern. */
	expect_key(KEYTMPL_DATA, "events/!{timestamp:'dt='yyyy-MM-dd'/hour='HH}/", &f,
		   "events/dt=2026-11-21/hour=19/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* '' is a quote, outside and inside quoted text. */
	expect_key(KEYTMPL_DATA, "q/!{timestamp:yyyy''MM'it''s'}/", &f,
		   "q/2026'11it's/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	/* Midnight at the epoch and the turn of a year, to check the fields. */
	f.b.first_arrival_ms = 946684800000LL - 1;
	expect_key(KEYTMPL_DATA, "!{timestamp:yyyy-MM-dd-HH-mm-ss}/", &f,
		   "1999-12-31-23-59-59/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	f.b.first_arrival_ms = 0;
	expect_key(KEYTMPL_DATA, "!{timestamp:yyyy-MM-dd-HH-mm-ss}/", &f,
		   "1970-01-01-00-00-00/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
}

static void test_full_keys_and_errors(void)
{
	struct fixture f;

	fixture_init(&f);
	expect_key(KEYTMPL_DATA, "data/!{partition:customer_id}/!{shard}/!{timestamp:HHmmss}-!{esn_range}",
		   &f, "data/acme/shardId-000000000001/195836-" KEY1 "_" KEY2 ".gz");
	expect_key(KEYTMPL_DATA, "data/!{shard}/!{esn_first}--!{esn_last}", &f,
		   "data/shardId-000000000001/" KEY1 "--" KEY2 ".gz");
	expect_key(KEYTMPL_DATA, "!{shard}-!{esn_last}-!{esn_first}", &f,
		   "shardId-000000000001-" KEY2 "-" KEY1 ".gz");
	/* Error prefix with the error type. */
	f.b.error_output_type = "processing-failed";
	expect_key(KEYTMPL_ERROR, "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/", &f,
		   "errors/processing-failed/2026/11/21/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
}

static void test_compile_errors(void)
{
	expect_error(KEYTMPL_DATA, "logs/!{foo:x}/",
		     "keytmpl: unknown namespace 'foo' at position 8 of 'logs/!{foo:x}/'");
	expect_error(KEYTMPL_DATA, "logs/!{Timestamp:yyyy}/",
		     "keytmpl: unknown namespace 'Timestamp' at position 8 of 'logs/!{Timestamp:yyyy}/'");
	expect_error(KEYTMPL_DATA, "a/!{}/",
		     "keytmpl: empty expression at position 5 of 'a/!{}/'");
	expect_error(KEYTMPL_DATA, "logs/!{timestamp:yyyy",
		     "keytmpl: unterminated '!{' (missing '}') at position 6 of 'logs/!{timestamp:yyyy'");
	expect_error(KEYTMPL_DATA, "a/!{partition:!{x}}/",
		     "keytmpl: '!{' inside an expression (the one opened before is not closed)"
		     " at position 15 of 'a/!{partition:!{x}}/'");
	expect_error(KEYTMPL_DATA, "a/!{timestamp:yyyy-MMM}/",
		     "keytmpl: unsupported timestamp field 'MMM' (supported: yyyy yy MM dd HH mm ss)"
		     " at position 20 of 'a/!{timestamp:yyyy-MMM}/'");
	/* Java's YYYY is the week-based year: a classic mistake, refused. */
	expect_error(KEYTMPL_DATA, "!{timestamp:YYYY}/",
		     "keytmpl: unsupported timestamp field 'YYYY' (supported: yyyy yy MM dd HH mm ss)"
		     " at position 13 of '!{timestamp:YYYY}/'");
	expect_error(KEYTMPL_DATA, "!{timestamp:d}/",
		     "keytmpl: unsupported timestamp field 'd' (supported: yyyy yy MM dd HH mm ss)"
		     " at position 13 of '!{timestamp:d}/'");
	expect_error(KEYTMPL_DATA, "!{timestamp:}/",
		     "keytmpl: empty timestamp pattern at position 13 of '!{timestamp:}/'");
	expect_error(KEYTMPL_DATA, "!{timestamp}/",
		     "keytmpl: !{timestamp} needs a pattern (e.g. !{timestamp:yyyy/MM/dd})"
		     " at position 3 of '!{timestamp}/'");
	expect_error(KEYTMPL_DATA, "!{timestamp:yyyy[MM]}/",
		     "keytmpl: reserved pattern character '[' at position 17 of '!{timestamp:yyyy[MM]}/'");
	expect_error(KEYTMPL_DATA, "!{timestamp:'dt=yyyy}/",
		     "keytmpl: unterminated quote in timestamp pattern at position 13 of '!{timestamp:'dt=yyyy}/'");
	/* Full keys: the ESN range belongs in the object name. */
	expect_error(KEYTMPL_DATA, "x/!{shard}/!{esn_first}/!{esn_last}",
		     "keytmpl: ESN expression before the last '/' (the object name must contain the"
		     " ESN range) at position 14 of 'x/!{shard}/!{esn_first}/!{esn_last}'");
	expect_error(KEYTMPL_DATA, "x/!{shard}/!{esn_first}.json",
		     "keytmpl: missing ESN range in the object name (add !{esn_range}, or both"
		     " !{esn_first} and !{esn_last}) at position 12 of 'x/!{shard}/!{esn_first}.json'");
	expect_error(KEYTMPL_DATA, "x/!{esn_range}",
		     "keytmpl: missing !{shard} (a full key must contain the shard id)"
		     " at position 15 of 'x/!{esn_range}'");
	expect_error(KEYTMPL_DATA, "x/!{shard:1}/",
		     "keytmpl: unexpected argument (write !{shard}) at position 10 of 'x/!{shard:1}/'");
	/* Namespaces in the wrong place or not supported. */
	expect_error(KEYTMPL_DATA, "e/!{firehose:error-output-type}/",
		     "keytmpl: !{firehose:error-output-type} is only allowed in the error prefix"
		     " at position 5 of 'e/!{firehose:error-output-type}/'");
	expect_error(KEYTMPL_ERROR, "e/!{partition:x}/",
		     "keytmpl: partition keys cannot be used in the error prefix"
		     " at position 15 of 'e/!{partition:x}/'");
	expect_error(KEYTMPL_DATA, "e/!{firehose:random-string}/",
		     "keytmpl: !{firehose:random-string} is not supported (keys must be deterministic"
		     " for exactly-once delivery; the shard and ESN range already make them unique)"
		     " at position 5 of 'e/!{firehose:random-string}/'");
	expect_error(KEYTMPL_DATA, "e/!{firehose:stream}/",
		     "keytmpl: unknown firehose keyword 'stream' at position 14 of 'e/!{firehose:stream}/'");
	expect_error(KEYTMPL_DATA, "e/!{partitionKeyFromQuery:id}/",
		     "keytmpl: !{partitionKeyFromQuery:...} is not supported (kinlake has no jq: let the"
		     " plugin set the key and use !{partitionKeyFromLambda:NAME}) at position 5 of"
		     " 'e/!{partitionKeyFromQuery:id}/'");
	expect_error(KEYTMPL_DATA, "e/!{partition:}/",
		     "keytmpl: missing partition key name at position 15 of 'e/!{partition:}/'");
	expect_error(KEYTMPL_DATA, "e/!{partition:a b}/",
		     "keytmpl: bad character in partition key name (use letters, digits, '_', '-', '.')"
		     " at position 16 of 'e/!{partition:a b}/'");
	/* Literal text. */
	expect_error(KEYTMPL_DATA, "/logs/",
		     "keytmpl: key starts with '/' (S3 keys should not) at position 1 of '/logs/'");
	expect_error(KEYTMPL_DATA, "logs//x/",
		     "keytmpl: empty path segment '//' at position 5 of 'logs//x/'");
	expect_error(KEYTMPL_DATA, "lo\tgs/",
		     "keytmpl: control character at position 3 of 'lo?gs/'");
	expect_error(KEYTMPL_DATA, "lo\\gs/",
		     "keytmpl: backslash (not portable in S3 keys) at position 3 of 'lo\\gs/'");
	expect_error(KEYTMPL_DATA, "caf\xc3/",
		     "keytmpl: invalid UTF-8 at position 4 of 'caf?/'");
	{
		char big[KEYTMPL_TEXT_MAX + 2];
		struct kl_errinfo info;
		struct keytmpl *t = NULL;

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		CU_ASSERT_EQUAL(keytmpl_compile(big, KEYTMPL_DATA, &t, &info), KL_ECONFIG);
		CU_ASSERT_STRING_EQUAL(info.message, "keytmpl: template is 513 bytes, at most 512 allowed");
		big[KEYTMPL_TEXT_MAX] = '\0';
		CU_ASSERT_EQUAL(keytmpl_compile(big, KEYTMPL_DATA, &t, &info), KL_OK);
		keytmpl_free(t);
		CU_ASSERT_EQUAL(keytmpl_compile(NULL, KEYTMPL_DATA, &t, &info), KL_ECONFIG);
	}
	/* Valid UTF-8 is fine in literals. */
	{
		struct fixture f;

		fixture_init(&f);
		expect_key(KEYTMPL_DATA, "caf\xc3\xa9/", &f,
			   "caf\xc3\xa9/shardId-000000000001/" KEY1 "_" KEY2 ".gz");
	}
}

static void test_introspection(void)
{
	struct kl_errinfo info;
	struct keytmpl *t = NULL;

	CU_ASSERT_EQUAL_FATAL(keytmpl_compile("a=!{partition:a}/b=!{partitionKeyFromLambda:b}/"
					      "a2=!{partitionKeyFromLambda:a}/",
					      KEYTMPL_DATA, &t, &info), KL_OK);
	CU_ASSERT_EQUAL(keytmpl_partition_count(t), 2);
	CU_ASSERT_STRING_EQUAL(keytmpl_partition_name(t, 0), "a");
	CU_ASSERT_STRING_EQUAL(keytmpl_partition_name(t, 1), "b");
	CU_ASSERT_PTR_NULL(keytmpl_partition_name(t, 2));
	CU_ASSERT_FALSE(keytmpl_has_error_type(t));
	CU_ASSERT_FALSE(keytmpl_has_timestamp(t));
	CU_ASSERT_FALSE(keytmpl_is_full_key(t));
	keytmpl_free(t);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile("e/!{firehose:error-output-type}/!{timestamp:yyyy}/!{shard}/!{esn_range}",
					      KEYTMPL_ERROR, &t, &info), KL_OK);
	CU_ASSERT_EQUAL(keytmpl_partition_count(t), 0);
	CU_ASSERT_TRUE(keytmpl_has_error_type(t));
	CU_ASSERT_TRUE(keytmpl_has_timestamp(t));
	CU_ASSERT_TRUE(keytmpl_is_full_key(t));
	keytmpl_free(t);
	keytmpl_free(NULL);
}

static void test_determinism(void)
{
	struct fixture f;
	struct kl_errinfo info;
	struct keytmpl *t1 = NULL, *t2 = NULL;
	char k1[KEYTMPL_KEY_MAX + 1], k2[KEYTMPL_KEY_MAX + 1], k3[KEYTMPL_KEY_MAX + 1];
	const char *text = "dt=!{timestamp:yyyy-MM-dd}/c=!{partition:customer_id}/";
	struct esn other;

	fixture_init(&f);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile(text, KEYTMPL_DATA, &t1, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile(text, KEYTMPL_DATA, &t2, &info), KL_OK);
	/* Same batch, separately compiled templates: the same key. */
	CU_ASSERT_EQUAL(keytmpl_render(t1, &f.b, k1, sizeof(k1), NULL, &info), KL_OK);
	CU_ASSERT_EQUAL(keytmpl_render(t2, &f.b, k2, sizeof(k2), NULL, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(k1, k2);
	/* Another first ESN: another key, even with everything else equal. */
	CU_ASSERT_EQUAL_FATAL(esn_set(SEQ1, 1, &other, NULL), KL_OK);
	f.b.first = &other;
	CU_ASSERT_EQUAL(keytmpl_render(t1, &f.b, k3, sizeof(k3), NULL, &info), KL_OK);
	CU_ASSERT_STRING_NOT_EQUAL(k1, k3);
	/* Another partition value: another key for the same batch. */
	f.b.first = &f.first;
	f.pkeys[0].value = "globex";
	CU_ASSERT_EQUAL(keytmpl_render(t1, &f.b, k3, sizeof(k3), NULL, &info), KL_OK);
	CU_ASSERT_STRING_NOT_EQUAL(k1, k3);
	/* Keys of one shard sort in ESN order: 99 before 100. */
	{
		struct esn a, b;

		CU_ASSERT_EQUAL_FATAL(esn_set("99", 0, &a, NULL), KL_OK);
		CU_ASSERT_EQUAL_FATAL(esn_set("100", 0, &b, NULL), KL_OK);
		f.b.first = f.b.last = &a;
		CU_ASSERT_EQUAL(keytmpl_render(t1, &f.b, k1, sizeof(k1), NULL, &info), KL_OK);
		f.b.first = f.b.last = &b;
		CU_ASSERT_EQUAL(keytmpl_render(t1, &f.b, k2, sizeof(k2), NULL, &info), KL_OK);
		CU_ASSERT(strcmp(k1, k2) < 0);
	}
	keytmpl_free(t1);
	keytmpl_free(t2);
}

/* Renders with customer_id = value; returns the error and the message. */
static enum kl_err render_value(const char *value, char *msg, size_t msg_size)
{
	struct fixture f;
	struct kl_errinfo info;
	struct keytmpl *t = NULL;
	char key[KEYTMPL_KEY_MAX + 1];
	enum kl_err err;

	fixture_init(&f);
	f.pkeys[0].value = value;
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile("c=!{partition:customer_id}/", KEYTMPL_DATA, &t, &info), KL_OK);
	err = keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info);
	snprintf(msg, msg_size, "%s", info.message);
	keytmpl_free(t);
	return err;
}

static void test_partition_values(void)
{
	char msg[400], big[KEYTMPL_VALUE_MAX + 2];

	CU_ASSERT_EQUAL(render_value("a/b", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(msg, "keytmpl: partition key 'customer_id': value 'a/b' contains '/'");
	CU_ASSERT_EQUAL(render_value("..", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(msg, "keytmpl: partition key 'customer_id': value '..' is a relative path segment");
	CU_ASSERT_EQUAL(render_value(".", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_EQUAL(render_value("", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(msg, "keytmpl: partition key 'customer_id': empty value");
	CU_ASSERT_EQUAL(render_value("a\nb", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(msg, "keytmpl: partition key 'customer_id': value 'a?b' contains a control character");
	CU_ASSERT_EQUAL(render_value("a\x7f", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_EQUAL(render_value("a\\b", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_EQUAL(render_value("\xff\xfe", msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(msg, "keytmpl: partition key 'customer_id': value '?" "?' is not valid UTF-8");
	CU_ASSERT_EQUAL(render_value("\xed\xa0\x80", msg, sizeof(msg)), KL_EINVAL);  /* surrogate */
	CU_ASSERT_EQUAL(render_value("\xc0\xaf", msg, sizeof(msg)), KL_EINVAL);      /* overlong '/' */
	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CU_ASSERT_EQUAL(render_value(big, msg, sizeof(msg)), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(msg, "keytmpl: partition key 'customer_id': value of 257 bytes is longer than 256");
	big[KEYTMPL_VALUE_MAX] = '\0';
	CU_ASSERT_EQUAL(render_value(big, msg, sizeof(msg)), KL_OK);
	/* Allowed: dots inside, '=' and unicode. */
	CU_ASSERT_EQUAL(render_value("a..b", msg, sizeof(msg)), KL_OK);
	CU_ASSERT_EQUAL(render_value("k=v", msg, sizeof(msg)), KL_OK);
	CU_ASSERT_EQUAL(render_value("M\xc3\xbcnchen \xf0\x9f\x9a\x80", msg, sizeof(msg)), KL_OK);

	CU_ASSERT_EQUAL(keytmpl_check_value(NULL, NULL), KL_EINVAL);
	CU_ASSERT_EQUAL(keytmpl_check_value("ok", NULL), KL_OK);
}

static void test_render_errors(void)
{
	struct fixture f;
	struct kl_errinfo info;
	struct keytmpl *t = NULL, *te = NULL;
	char key[KEYTMPL_KEY_MAX + 1], small[40], big[KEYTMPL_VALUE_MAX + 1];
	struct keytmpl_pkey many[5];

	fixture_init(&f);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile("!{timestamp:yyyy}/c=!{partition:customer_id}/",
					      KEYTMPL_DATA, &t, &info), KL_OK);
	/* A key the plugin did not set. */
	f.b.n_pkeys = 1;
	f.pkeys[0].name = "other";
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_ENOTFOUND);
	CU_ASSERT_STRING_EQUAL(info.message, "keytmpl: partition key 'customer_id' is missing");
	f.b.n_pkeys = 0;
	f.b.pkeys = NULL;
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_ENOTFOUND);
	fixture_init(&f);
	/* Bad batch data. */
	f.b.shard_id = "shard/1";
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(info.message, "keytmpl: shard id: value 'shard/1' contains '/'");
	fixture_init(&f);
	f.b.first = &f.last;
	f.b.last = &f.first;
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_EINVAL);
	fixture_init(&f);
	f.b.first_arrival_ms = -1;
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_EINVAL);
	fixture_init(&f);
	/* Output caps: the caller's buffer, then S3's 1024 bytes. */
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, small, sizeof(small), NULL, &info), KL_ENOMEM);
	CU_ASSERT_STRING_EQUAL(info.message, "keytmpl: key would be longer than 39 bytes");
	keytmpl_free(t);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile("!{partition:a}/!{partition:b}/!{partition:c}/!{partition:d}/",
					      KEYTMPL_DATA, &t, &info), KL_OK);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	many[0] = (struct keytmpl_pkey){ "a", big };
	many[1] = (struct keytmpl_pkey){ "b", big };
	many[2] = (struct keytmpl_pkey){ "c", big };
	many[3] = (struct keytmpl_pkey){ "d", big };
	f.b.pkeys = many;
	f.b.n_pkeys = 4;
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_ENOMEM);
	CU_ASSERT_STRING_EQUAL(info.message, "keytmpl: key would be longer than 1024 bytes");
	many[3].value = "d";
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_OK);
	keytmpl_free(t);
	/* An empty segment made by a quoted '/' in a pattern is caught at render. */
	fixture_init(&f);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile("!{timestamp:yyyy'/'}/", KEYTMPL_DATA, &t, &info), KL_OK);
	CU_ASSERT_EQUAL(keytmpl_render(t, &f.b, key, sizeof(key), NULL, &info), KL_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "empty path segment"));
	keytmpl_free(t);
	/* The error type must be given, and safe. */
	fixture_init(&f);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile("e/!{firehose:error-output-type}/", KEYTMPL_ERROR, &te, &info),
			      KL_OK);
	CU_ASSERT_EQUAL(keytmpl_render(te, &f.b, key, sizeof(key), NULL, &info), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(info.message, "keytmpl: error output type: empty value");
	f.b.error_output_type = "x/y";
	CU_ASSERT_EQUAL(keytmpl_render(te, &f.b, key, sizeof(key), NULL, &info), KL_EINVAL);
	keytmpl_free(te);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_firehose_prefixes),
		KL_TEST(test_hive_and_quotes),
		KL_TEST(test_full_keys_and_errors),
		KL_TEST(test_compile_errors),
		KL_TEST(test_introspection),
		KL_TEST(test_determinism),
		KL_TEST(test_partition_values),
		KL_TEST(test_render_errors),
		{ 0 },
	};

	return kl_test_run("keytmpl", t);
}
