/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_ddb.c: the DynamoDB client against dynalite (started by
 * tests/emu/emulators.sh, which exports KL_TEST_DYNAMODB_ENDPOINT and the
 * keys; without them this exits 77). Exercises every call of ddb.h the way
 * the lease store will: conditional create, counter-conditioned updates
 * that must fail with KL_ECONFLICT when stale, unknown attributes that must
 * survive, 38-digit numbers, and scans over several pages.
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
#include "ddb.h"
#include "http.h"
#include "testutil.h"

static const char N38[] = "12345678901234567890123456789012345678";
static const char N38_NEG_FRAC[] = "-0.12345678901234567890123456789012345678";

static struct {
	struct creds_chain *creds;
	struct aws_client c;
	char table[64];           /* leases-shaped table */
	char scan_table[64];      /* for the paging tests */
} fx;

static int setup(void)
{
	const char *endpoint = kl_test_env_or_skip("KL_TEST_DYNAMODB_ENDPOINT");

	if (tf_aws_init(&fx.creds) != KL_OK ||
	    tf_client_init(&fx.c, "dynamodb", endpoint, fx.creds) != KL_OK)
		return -1;
	snprintf(fx.table, sizeof(fx.table), "kl-leases-%ld-%" PRId64, (long)getpid(), kl_mono_ms());
	snprintf(fx.scan_table, sizeof(fx.scan_table), "kl-scan-%ld-%" PRId64, (long)getpid(),
		 kl_mono_ms());
	return 0;
}

static void teardown(void)
{
	aws_client_done(&fx.c);
	tf_aws_done(fx.creds);
}

/* A fresh lease-shaped item; the caller puts it. */
static json_object *lease_item(const char *key, const char *owner, int64_t counter)
{
	json_object *item = ddb_key_s("leaseKey", key);

	CU_ASSERT_PTR_NOT_NULL_FATAL(item);
	CU_ASSERT_EQUAL_FATAL(ddb_set(item, "leaseOwner", ddb_s(owner)), KL_OK);
	CU_ASSERT_EQUAL_FATAL(ddb_set(item, "leaseCounter", ddb_n_i64(counter)), KL_OK);
	CU_ASSERT_EQUAL_FATAL(ddb_set(item, "checkpoint", ddb_s("TRIM_HORIZON")), KL_OK);
	return item;
}

/* --------------------------------------------------------------- tests */

static void test_tables(void)
{
	struct ddb_table_desc d;
	struct kl_errinfo info;

	TF_CHECK_OK(ddb_create_table(&fx.c, fx.table, "leaseKey", "S", &info));
	CU_ASSERT_EQUAL(ddb_create_table(&fx.c, fx.table, "leaseKey", "S", &info), KL_EEXISTS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ResourceInUseException");
	TF_CHECK_OK(ddb_wait_table_active(&fx.c, fx.table, 30000, &d, &info));
	CU_ASSERT_EQUAL(d.status, DDB_TABLE_ACTIVE);
	CU_ASSERT_STRING_EQUAL(d.table_name, fx.table);
	CU_ASSERT_STRING_EQUAL(d.hash_key, "leaseKey");
	CU_ASSERT_STRING_EQUAL(d.hash_key_type, "S");
	CU_ASSERT_STRING_EQUAL(d.range_key, "");
	CU_ASSERT_TRUE(d.pay_per_request);
	CU_ASSERT_PTR_NOT_NULL(strstr(d.table_arn, fx.table));

	memset(&d, 0, sizeof(d));
	TF_CHECK_OK(ddb_describe_table(&fx.c, fx.table, &d, &info));
	CU_ASSERT_EQUAL(d.status, DDB_TABLE_ACTIVE);
	CU_ASSERT_EQUAL(d.item_count, 0);

	CU_ASSERT_EQUAL(ddb_describe_table(&fx.c, "kl-no-such-table", &d, &info), KL_ENOTFOUND);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ResourceNotFoundException");
	CU_ASSERT_EQUAL(ddb_wait_table_active(&fx.c, "kl-no-such-table", 300, NULL, &info),
			KL_ENOTFOUND);
	CU_ASSERT_EQUAL(ddb_create_table(&fx.c, "x", "k", "S", &info), KL_EINVAL);

	TF_CHECK_OK(ddb_create_table(&fx.c, fx.scan_table, "id", "N", &info));
	TF_CHECK_OK(ddb_wait_table_active(&fx.c, fx.scan_table, 30000, &d, &info));
	CU_ASSERT_STRING_EQUAL(d.hash_key_type, "N");
}

/* Every attribute type goes in and comes back as it was. */
static void test_put_get_types(void)
{
	static const char *const ss[] = { "shardId-000000000001", "shardId-000000000002" };
	static const uint8_t bytes[] = { 0, 1, 2, 0xfe, 0xff, 0 };
	json_object *item = lease_item("types", "host-a", 1), *key, *got = NULL, *map, *list;
	const char **strs = NULL;
	struct kl_errinfo info;
	uint8_t *b = NULL;
	size_t n = 0;
	bool flag = false;
	int64_t v = 0;

	map = json_object_new_object();
	ddb_set(map, "inner", ddb_s("v"));
	ddb_set(map, "deep", ddb_m(NULL));
	list = json_object_new_array();
	json_object_array_add(list, ddb_n("1"));
	json_object_array_add(list, ddb_s("two"));
	CU_ASSERT_EQUAL(ddb_set(item, "big", ddb_n(N38)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(item, "negfrac", ddb_n(N38_NEG_FRAC)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(item, "parentShardId", ddb_ss(ss, 2)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(item, "blob", ddb_b(bytes, sizeof(bytes))), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(item, "flag", ddb_bool(true)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(item, "nothing", ddb_null()), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(item, "meta", ddb_m(map)), KL_OK);
	CU_ASSERT_EQUAL(ddb_set(item, "list", ddb_l(list)), KL_OK);
	TF_CHECK_OK(ddb_put_item(&fx.c, fx.table, item, NULL, NULL, &info));
	json_object_put(item);

	key = ddb_key_s("leaseKey", "types");
	TF_CHECK_OK(ddb_get_item(&fx.c, fx.table, key, true, &got, &info));
	CU_ASSERT_PTR_NOT_NULL_FATAL(got);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(got, "leaseOwner"), "host-a");
	CU_ASSERT_EQUAL(ddb_get_n_i64(got, "leaseCounter", &v), KL_OK);
	CU_ASSERT_EQUAL(v, 1);
	CU_ASSERT_STRING_EQUAL(ddb_get_n(got, "big"), N38);
	CU_ASSERT_STRING_EQUAL(ddb_get_n(got, "negfrac"), N38_NEG_FRAC);
	CU_ASSERT_EQUAL_FATAL(ddb_get_ss(got, "parentShardId", &strs, &n), KL_OK);
	CU_ASSERT_EQUAL(n, 2);
	CU_ASSERT((strcmp(strs[0], ss[0]) == 0 && strcmp(strs[1], ss[1]) == 0) ||
		  (strcmp(strs[0], ss[1]) == 0 && strcmp(strs[1], ss[0]) == 0)); /* a set */
	free(strs);
	CU_ASSERT_EQUAL_FATAL(ddb_get_b(got, "blob", &b, &n), KL_OK);
	CU_ASSERT_EQUAL(n, sizeof(bytes));
	CU_ASSERT_EQUAL(memcmp(b, bytes, sizeof(bytes)), 0);
	free(b);
	CU_ASSERT_EQUAL(ddb_get_bool(got, "flag", &flag), KL_OK);
	CU_ASSERT_TRUE(flag);
	CU_ASSERT_PTR_NOT_NULL(ddb_get(got, "nothing", "NULL"));
	CU_ASSERT_STRING_EQUAL(ddb_get_s(ddb_get_m(got, "meta"), "inner"), "v");
	CU_ASSERT_PTR_NOT_NULL(ddb_get_m(ddb_get_m(got, "meta"), "deep"));
	CU_ASSERT_EQUAL(json_object_array_length(ddb_get_l(got, "list")), 2);
	json_object_put(got);
	got = NULL;

	/* Not consistent, same answer here; a missing item is KL_OK + NULL. */
	TF_CHECK_OK(ddb_get_item(&fx.c, fx.table, key, false, &got, &info));
	CU_ASSERT_PTR_NOT_NULL(got);
	json_object_put(got);
	json_object_put(key);
	key = ddb_key_s("leaseKey", "absent");
	got = (json_object *)&info;
	TF_CHECK_OK(ddb_get_item(&fx.c, fx.table, key, true, &got, &info));
	CU_ASSERT_PTR_NULL(got);
	CU_ASSERT_EQUAL(ddb_get_item(&fx.c, "kl-no-such-table", key, true, &got, &info),
			KL_ENOTFOUND);
	json_object_put(key);

	/* 39 significant digits are more than DynamoDB keeps: refused. */
	item = lease_item("toolong", "x", 1);
	ddb_set(item, "n", ddb_n("123456789012345678901234567890123456789"));
	CU_ASSERT_EQUAL(ddb_put_item(&fx.c, fx.table, item, NULL, NULL, &info), KL_EAWS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ValidationException");
	json_object_put(item);
}

static void test_conditional_put(void)
{
	json_object *item = lease_item("shardId-000000000000", "host-a", 0), *old = NULL;
	json_object *names = json_object_new_object();
	struct ddb_write_opts w = { 0 };
	struct kl_errinfo info;
	enum kl_err err;

	ddb_set(names, "#k", json_object_new_string("leaseKey"));
	w.condition = "attribute_not_exists(#k)";
	w.names = names;
	TF_CHECK_OK(ddb_put_item(&fx.c, fx.table, item, &w, NULL, &info));
	/* The lease exists now: a second create conflicts. */
	err = ddb_put_item(&fx.c, fx.table, item, &w, NULL, &info);
	CU_ASSERT_EQUAL(err, KL_ECONFLICT);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ConditionalCheckFailedException");
	CU_ASSERT_EQUAL(info.http_status, 400);
	/* Not retried: one logical call, one attempt. */
	CU_ASSERT_FALSE(kl_err_retryable(err));

	/* Unconditional overwrite returns the old item. */
	ddb_set(item, "leaseOwner", ddb_s("host-b"));
	w.condition = NULL;
	w.names = NULL;
	w.return_values = DDB_RETURN_ALL_OLD;
	TF_CHECK_OK(ddb_put_item(&fx.c, fx.table, item, &w, &old, &info));
	CU_ASSERT_PTR_NOT_NULL_FATAL(old);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(old, "leaseOwner"), "host-a");
	json_object_put(old);
	json_object_put(item);
	json_object_put(names);
}

/* The lease store's renew/take/checkpoint: conditional on the counter. */
static void test_conditional_update(void)
{
	json_object *key = ddb_key_s("leaseKey", "shardId-000000000000");
	json_object *values = json_object_new_object(), *names = json_object_new_object();
	json_object *attrs = NULL, *got = NULL;
	struct ddb_write_opts w = { 0 };
	struct kl_errinfo info;
	int64_t counter = -1;

	/* Another KCL version wrote attributes we do not know. */
	json_object *extra = json_object_new_object();
	ddb_set(extra, ":f", ddb_s("from-the-future"));
	ddb_set(extra, ":m", ddb_m(json_object_new_object()));
	ddb_set(extra, ":big", ddb_n(N38));
	w.values = extra;
	TF_CHECK_OK(ddb_update_item(&fx.c, fx.table, key, "SET kclFutureAttr = :f, kclMap = :m, big = :big",
				 &w, NULL, &info));
	json_object_put(extra);

	/* Renew: counter 0 -> 1, only if it is still 0. */
	ddb_set(values, ":c", ddb_n_i64(0));
	ddb_set(values, ":one", ddb_n_i64(1));
	ddb_set(names, "#c", json_object_new_string("leaseCounter"));
	memset(&w, 0, sizeof(w));
	w.condition = "#c = :c";
	w.names = names;
	w.values = values;
	w.return_values = DDB_RETURN_ALL_NEW;
	TF_CHECK_OK(ddb_update_item(&fx.c, fx.table, key, "SET #c = #c + :one", &w, &attrs, &info));
	CU_ASSERT_PTR_NOT_NULL_FATAL(attrs);
	CU_ASSERT_EQUAL(ddb_get_n_i64(attrs, "leaseCounter", &counter), KL_OK);
	CU_ASSERT_EQUAL(counter, 1);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(attrs, "kclFutureAttr"), "from-the-future");
	json_object_put(attrs);
	attrs = NULL;

	/* The same renew again is stale now: KL_ECONFLICT, nothing returned. */
	CU_ASSERT_EQUAL(ddb_update_item(&fx.c, fx.table, key, "SET #c = #c + :one", &w, &attrs, &info),
			KL_ECONFLICT);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ConditionalCheckFailedException");
	CU_ASSERT_PTR_NULL(attrs);

	/* Take + checkpoint with the right counter; UPDATED_NEW returns only
	 * what changed. */
	ddb_set(values, ":c", ddb_n_i64(1));
	ddb_set(values, ":o", ddb_s("host-c"));
	ddb_set(values, ":cp", ddb_s("49590338271490256608559692538361571095921575989136588898"));
	w.return_values = DDB_RETURN_UPDATED_NEW;
	TF_CHECK_OK(ddb_update_item(&fx.c, fx.table, key,
				 "SET #c = #c + :one, leaseOwner = :o, checkpoint = :cp", &w, &attrs,
				 &info));
	CU_ASSERT_PTR_NOT_NULL_FATAL(attrs);
	CU_ASSERT_EQUAL(json_object_object_length(attrs), 3);
	CU_ASSERT_FALSE(ddb_has(attrs, "kclFutureAttr"));
	json_object_put(attrs);
	attrs = NULL;

	/* UPDATED_OLD / REMOVE; then the unknown attributes are all still there. */
	memset(&w, 0, sizeof(w));
	w.return_values = DDB_RETURN_UPDATED_OLD;
	TF_CHECK_OK(ddb_update_item(&fx.c, fx.table, key, "REMOVE checkpoint", &w, &attrs, &info));
	CU_ASSERT_STRING_EQUAL(ddb_get_s(attrs, "checkpoint"),
			       "49590338271490256608559692538361571095921575989136588898");
	json_object_put(attrs);

	TF_CHECK_OK(ddb_get_item(&fx.c, fx.table, key, true, &got, &info));
	CU_ASSERT_PTR_NOT_NULL_FATAL(got);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(got, "kclFutureAttr"), "from-the-future");
	CU_ASSERT_PTR_NOT_NULL(ddb_get_m(got, "kclMap"));
	CU_ASSERT_STRING_EQUAL(ddb_get_n(got, "big"), N38);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(got, "leaseOwner"), "host-c");
	CU_ASSERT_EQUAL(ddb_get_n_i64(got, "leaseCounter", &counter), KL_OK);
	CU_ASSERT_EQUAL(counter, 2);
	CU_ASSERT_FALSE(ddb_has(got, "checkpoint"));

	/* A read-modify-write of the whole item keeps them too. */
	ddb_set(got, "leaseOwner", ddb_s("host-d"));
	TF_CHECK_OK(ddb_put_item(&fx.c, fx.table, got, NULL, NULL, &info));
	json_object_put(got);
	got = NULL;
	TF_CHECK_OK(ddb_get_item(&fx.c, fx.table, key, true, &got, &info));
	CU_ASSERT_STRING_EQUAL(ddb_get_s(got, "kclFutureAttr"), "from-the-future");
	CU_ASSERT_STRING_EQUAL(ddb_get_s(got, "leaseOwner"), "host-d");
	json_object_put(got);

	/* An unused value is a ValidationException, not a conflict. */
	memset(&w, 0, sizeof(w));
	w.values = values;
	CU_ASSERT_EQUAL(ddb_update_item(&fx.c, fx.table, key, "SET a = :o", &w, NULL, &info), KL_EAWS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ValidationException");
	json_object_put(values);
	json_object_put(names);
	json_object_put(key);
}

static void test_conditional_delete(void)
{
	json_object *key = ddb_key_s("leaseKey", "shardId-000000000000");
	json_object *values = json_object_new_object(), *old = NULL, *got = NULL;
	struct ddb_write_opts w = { 0 };
	struct kl_errinfo info;

	ddb_set(values, ":o", ddb_s("host-a"));
	w.condition = "leaseOwner = :o";
	w.values = values;
	w.return_values = DDB_RETURN_ALL_OLD;
	CU_ASSERT_EQUAL(ddb_delete_item(&fx.c, fx.table, key, &w, &old, &info), KL_ECONFLICT);
	CU_ASSERT_PTR_NULL(old);
	ddb_set(values, ":o", ddb_s("host-d"));
	TF_CHECK_OK(ddb_delete_item(&fx.c, fx.table, key, &w, &old, &info));
	CU_ASSERT_PTR_NOT_NULL_FATAL(old);
	CU_ASSERT_STRING_EQUAL(ddb_get_s(old, "kclFutureAttr"), "from-the-future");
	json_object_put(old);
	TF_CHECK_OK(ddb_get_item(&fx.c, fx.table, key, true, &got, &info));
	CU_ASSERT_PTR_NULL(got);
	/* Deleting what is not there, unconditionally, is fine. */
	TF_CHECK_OK(ddb_delete_item(&fx.c, fx.table, key, NULL, NULL, &info));
	json_object_put(values);
	json_object_put(key);
}

#define SCAN_ITEMS 23

static void test_scan_pages(void)
{
	struct ddb_scan_opts o = { 0 };
	struct ddb_scan_page prev = { 0 };
	struct kl_errinfo info;
	int seen[SCAN_ITEMS] = { 0 };
	int pages = 0, total = 0;

	for (int i = 0; i < SCAN_ITEMS; i++) {
		json_object *item = json_object_new_object();
		ddb_set(item, "id", ddb_n_i64(i));
		ddb_set(item, "grp", ddb_s(i % 3 == 0 ? "three" : "other"));
		TF_CHECK_OK(ddb_put_item(&fx.c, fx.scan_table, item, NULL, NULL, &info));
		json_object_put(item);
	}

	/* Page by page with Limit 5: 5 pages, a last key on all but the last. */
	o.limit = 5;
	o.consistent_read = true;
	for (;;) {
		struct ddb_scan_page page;
		size_t n;

		TF_CHECK_OK(ddb_scan(&fx.c, fx.scan_table, &o, &page, &info));
		ddb_scan_page_done(&prev);
		pages++;
		n = json_object_array_length(page.items);
		CU_ASSERT(n <= 5);
		CU_ASSERT_EQUAL(page.count, (int64_t)n);
		for (size_t i = 0; i < n; i++) {
			int64_t id = -1;
			CU_ASSERT_EQUAL(ddb_get_n_i64(json_object_array_get_idx(page.items, i), "id", &id),
					KL_OK);
			if (id >= 0 && id < SCAN_ITEMS)
				seen[id]++;
			total++;
		}
		if (!page.last_evaluated_key) {
			ddb_scan_page_done(&page);
			break;
		}
		CU_ASSERT_EQUAL(n, 5);
		CU_ASSERT_FATAL(pages < 20);
		prev = page;
		o.exclusive_start_key = prev.last_evaluated_key;
	}
	CU_ASSERT_EQUAL(pages, 5);
	CU_ASSERT_EQUAL(total, SCAN_ITEMS);
	for (int i = 0; i < SCAN_ITEMS; i++)
		CU_ASSERT_EQUAL(seen[i], 1);
}

static void test_scan_all(void)
{
	struct ddb_scan_opts o = { 0 };
	json_object *items = NULL, *values = json_object_new_object(), *names;
	struct kl_errinfo info;

	o.limit = 4;
	TF_CHECK_OK(ddb_scan_all(&fx.c, fx.scan_table, &o, 0, &items, &info));
	CU_ASSERT_EQUAL(json_object_array_length(items), SCAN_ITEMS);
	json_object_put(items);
	items = NULL;

	/* A cap below the table size is an error, not a silent truncation. */
	CU_ASSERT_EQUAL(ddb_scan_all(&fx.c, fx.scan_table, &o, 10, &items, &info), KL_ENOMEM);
	CU_ASSERT_PTR_NULL(items);

	/* With a filter Limit counts evaluated items; every match still comes. */
	names = json_object_new_object();
	ddb_set(names, "#g", json_object_new_string("grp"));
	ddb_set(values, ":g", ddb_s("three"));
	o.filter = "#g = :g";
	o.names = names;
	o.values = values;
	TF_CHECK_OK(ddb_scan_all(&fx.c, fx.scan_table, &o, 0, &items, &info));
	CU_ASSERT_EQUAL(json_object_array_length(items), (SCAN_ITEMS + 2) / 3);
	for (size_t i = 0; i < json_object_array_length(items); i++)
		CU_ASSERT_STRING_EQUAL(ddb_get_s(json_object_array_get_idx(items, i), "grp"), "three");
	json_object_put(items);
	items = NULL;

	/* One page with a filter may come back empty but not last. */
	struct ddb_scan_page page;
	o.limit = 1;
	ddb_set(values, ":g", ddb_s("none-match"));
	TF_CHECK_OK(ddb_scan(&fx.c, fx.scan_table, &o, &page, &info));
	CU_ASSERT_EQUAL(page.count, 0);
	CU_ASSERT_EQUAL(page.scanned_count, 1);
	CU_ASSERT_PTR_NOT_NULL(page.last_evaluated_key);
	ddb_scan_page_done(&page);

	CU_ASSERT_EQUAL(ddb_scan_all(&fx.c, "kl-no-such-table", NULL, 0, &items, &info), KL_ENOTFOUND);
	json_object_put(values);
	json_object_put(names);
}

static void test_delete_tables(void)
{
	struct kl_errinfo info;

	TF_CHECK_OK(ddb_delete_table(&fx.c, fx.table, &info));
	TF_CHECK_OK(ddb_delete_table(&fx.c, fx.scan_table, &info));
	CU_ASSERT_EQUAL(ddb_delete_table(&fx.c, "kl-no-such-table", &info), KL_ENOTFOUND);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_tables),
		KL_TEST(test_put_get_types),
		KL_TEST(test_conditional_put),
		KL_TEST(test_conditional_update),
		KL_TEST(test_conditional_delete),
		KL_TEST(test_scan_pages),
		KL_TEST(test_scan_all),
		KL_TEST(test_delete_tables),
		{ 0 },
	};
	int rc;

	if (setup() != 0) {
		fprintf(stderr, "integ_ddb: setup failed\n");
		return 1;
	}
	rc = kl_test_run("integ_ddb", t);
	teardown();
	return rc;
}
