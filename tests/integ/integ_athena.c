/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_athena.c: the Athena tables against a real lake. A `kinlake run`
 * worker with the clickstream plugin drains demo clickstream (with
 * malformed events) from kinesalite into s3rver, with Hive-style plugin
 * keys in the data prefix and the error type plus an hourly date in the
 * error prefix. Then `kinlake athena-ddl` runs on the same configuration,
 * its two statements are parsed (tests/athena_ddl.h), their LOCATIONs are
 * checked against the bucket and prefixes, and every object key in the
 * bucket must belong to exactly one table and match its
 * storage.location.template with every value inside its projection
 * (dt within range start..now, hour 00-23, a known error type): what
 * Athena needs to find every object without a crawler.
 * Needs the emulators (tests/emu/emulators.sh exports KL_TEST_*; else 77).
 */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "athena_ddl.h"
#include "aws.h"
#include "creds.h"
#include "fixture.h"
#include "http.h"
#include "kinesis.h"
#include "proc.h"
#include "s3.h"
#include "testutil.h"
#include "util.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define EVENTS 400
#define KEYS_MAX 4096

static struct {
	struct tf_env env;
	char bin[4096], dir[512], conf[600];
	char app[64], stream[64], bucket[64];
	struct creds_chain *creds;
	struct aws_client kc, s3c;
	pid_t worker;
	char *keys[KEYS_MAX];
	size_t n_keys;
} fx;

static void kill_worker(void)
{
	if (fx.worker > 0) {
		tp_kill(fx.worker);
		fx.worker = 0;
	}
}

static void on_fatal_signal(int sig)
{
	kill_worker();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Runs kinlake with args; stdout into out (stderr to the test's). Returns
 * the exit status. */
static int run_kinlake(const char *const *args, char *out, size_t size)
{
	char *argv[24];
	int argc = 0, rc;

	argv[argc++] = fx.bin;
	for (; *args && argc < 23; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	rc = tp_run(argv, out, size, NULL);
	CU_ASSERT_FATAL(rc != -2);
	return rc;
}

static void write_conf(void)
{
	int rc;

	snprintf(fx.conf, sizeof(fx.conf), "%s/w.conf", fx.dir);
	rc = tp_write_file(fx.conf,
		"application = \"%s\";\n"
		"worker_id = \"w1\";\n"
		"stream = \"%s\";\n"
		"state_dir = \"%s/state\";\n"
		"shutdown_grace_ms = 10000;\n"
		"lease = { failover_ms = 3000; };\n"
		"consumer = { threads = 2; idle_ms = 200; };\n"
		"plugin = { name = \"clickstream\"; search_path = \"%s/plugins/clickstream/.libs\";\n"
		"  settings = { timestamp_field = \"ts\";\n"
		"    required_fields = [ \"event_id\", \"session_id\", \"user_id\", \"action\", \"ts\" ]; }; };\n"
		"s3 = { bucket = \"%s\"; compression = \"gzip\"; buffer_seconds = 2;\n"
		"  prefix = \"clicks/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/\";\n"
		"  error_prefix = \"errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd/HH}/\"; };\n"
		"credentials = { access_key_id = \"%s\"; secret_access_key = \"%s\"; disable_imds = true; };\n"
		"endpoints = { kinesis = \"%s\"; dynamodb = \"%s\"; s3 = \"%s\"; };\n"
		"http = { connect_timeout_ms = 2000; timeout_ms = 20000; };\n"
		"log = { level = \"info\"; file = \"%s/w.log\"; };\n",
		fx.app, fx.stream, fx.dir, KL_TEST_BUILDDIR, fx.bucket, fx.env.key_id, fx.env.secret,
		fx.env.kinesis, fx.env.dynamodb, fx.env.s3, fx.dir);
	CU_ASSERT_FATAL(rc == 0);
}

static void start_worker(void)
{
	char out[600];
	char *argv[] = { fx.bin, "run", "-c", fx.conf, NULL };
	struct tp_child c = { .out_path = out, .err_path = out };
	pid_t pid;

	snprintf(out, sizeof(out), "%s/w.out", fx.dir);
	pid = tp_spawn(argv, &c);
	CU_ASSERT_FATAL(pid >= 0);
	fx.worker = pid;
}

static void free_keys(void)
{
	for (size_t i = 0; i < fx.n_keys; i++)
		free(fx.keys[i]);
	fx.n_keys = 0;
}

/* Lists every key of the bucket into fx.keys. */
static void list_bucket(void)
{
	struct s3_list_opts lo = { 0 };
	struct s3_list_result res;
	struct kl_errinfo info = { 0 };
	char token[1024] = "";
	enum kl_err err;

	free_keys();
	do {
		memset(&res, 0, sizeof(res));
		lo.continuation_token = token[0] ? token : NULL;
		err = s3_list_objects_v2(&fx.s3c, fx.bucket, &lo, &res, &info);
		tf_report("ListObjectsV2", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		for (size_t i = 0; i < res.n_entries && fx.n_keys < KEYS_MAX; i++)
			fx.keys[fx.n_keys++] = strdup(res.entries[i].key);
		snprintf(token, sizeof(token), "%s", res.next_continuation_token ? res.next_continuation_token : "");
		s3_list_result_done(&res);
	} while (token[0]);
}

static size_t count_prefix(const char *prefix)
{
	size_t n = 0;

	for (size_t i = 0; i < fx.n_keys; i++)
		n += strncmp(fx.keys[i], prefix, strlen(prefix)) == 0;
	return n;
}

/* ------------------------------------------------------------ tests */

static bool setup_done;

static void test_setup(void)
{
	struct kl_errinfo info = { 0 };
	char out[4096], count[16];
	const char *produce[] = { "demo", "produce", "--stream", fx.stream, "-c", fx.conf, "--count",
				  count, "--seed", "77", "--malformed-pct", "5", "--quiet", NULL };
	long tag = (long)getpid();
	enum kl_err err;

	tf_env_read(&fx.env);
	CU_ASSERT_FATAL(tf_program("KL_TEST_KINLAKE", KL_TEST_BUILDDIR "/kinlake", fx.bin, sizeof(fx.bin)));
	CU_ASSERT_FATAL(tf_make_dir("integ-athena", fx.dir, sizeof(fx.dir)));
	snprintf(fx.app, sizeof(fx.app), "kl-athena-%ld", tag);
	snprintf(fx.stream, sizeof(fx.stream), "kl-athena-%ld", tag);
	snprintf(fx.bucket, sizeof(fx.bucket), "kl-athena-%ld", tag);
	CU_ASSERT_FATAL(tf_aws_init(&fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.kc, "kinesis", fx.env.kinesis, fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.s3c, "s3", fx.env.s3, fx.creds) == KL_OK);
	err = kinesis_create_stream(&fx.kc, fx.stream, 2, &info);
	tf_report("CreateStream", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	err = kinesis_wait_active(&fx.kc, fx.stream, 30000, NULL, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	err = s3_create_bucket(&fx.s3c, fx.bucket, &info);
	tf_report("CreateBucket", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	write_conf();
	snprintf(count, sizeof(count), "%d", EVENTS);
	CU_ASSERT_EQUAL_FATAL(run_kinlake(produce, out, sizeof(out)), 0);
	setup_done = true;
}

static void test_worker_writes_the_lake(void)
{
	int64_t end;
	int status = 0;

	CU_ASSERT_FATAL(setup_done);
	start_worker();
	/* Data and error objects both, then a graceful stop flushes the rest. */
	end = kl_mono_ms() + 90000LL * kl_test_slowdown();
	do {
		kl_sleep_ms(500);
		list_bucket();
	} while ((count_prefix("clicks/") == 0 || count_prefix("errors/") == 0) && kl_mono_ms() < end);
	kl_sleep_ms(3000);
	kill(fx.worker, SIGTERM);
	CU_ASSERT_EQUAL(waitpid(fx.worker, &status, 0), fx.worker);
	fx.worker = 0;
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	list_bucket();
	fprintf(stderr, "\n  %zu objects: %zu data, %zu error\n", fx.n_keys, count_prefix("clicks/"),
		count_prefix("errors/"));
	CU_ASSERT(count_prefix("clicks/") > 0);
	CU_ASSERT(count_prefix("errors/") > 0);
}

static void test_ddl_covers_every_object(void)
{
	static char out[256 * 1024];
	const char *args[] = { "athena-ddl", "-c", fx.conf, NULL };
	struct ddl_table *data = calloc(1, sizeof(*data)), *errs = calloc(1, sizeof(*errs));
	char want[256], why[1024];
	const char *p = out, *msg;
	int64_t now_secs = kl_wall_ms() / 1000;
	size_t in_data = 0, in_errs = 0;

	CU_ASSERT_FATAL(setup_done && data && errs);
	CU_ASSERT_EQUAL_FATAL(run_kinlake(args, out, sizeof(out)), 0);
	msg = ddl_parse(&p, data);
	if (msg)
		fprintf(stderr, "\n  data table: %s\n%s\n", msg, out);
	CU_ASSERT_PTR_NULL_FATAL(msg);
	msg = ddl_parse(&p, errs);
	if (msg)
		fprintf(stderr, "\n  error table: %s\n%s\n", msg, out);
	CU_ASSERT_PTR_NULL_FATAL(msg);

	snprintf(want, sizeof(want), "s3://%s/clicks/", fx.bucket);
	CU_ASSERT_STRING_EQUAL(data->location, want);
	snprintf(want, sizeof(want), "s3://%s/errors/", fx.bucket);
	CU_ASSERT_STRING_EQUAL(errs->location, want);
	CU_ASSERT_STRING_EQUAL(data->row_format, "org.openx.data.jsonserde.JsonSerDe");
	CU_ASSERT_STRING_EQUAL(ddl_prop(data, "projection.enabled"), "true");
	CU_ASSERT_STRING_EQUAL(ddl_prop(data, "projection.dt.type"), "date");
	CU_ASSERT_STRING_EQUAL(ddl_prop(data, "projection.hour.range"), "0,23");
	CU_ASSERT_STRING_EQUAL(ddl_prop(errs, "projection.error_output_type.type"), "enum");
	CU_ASSERT_STRING_EQUAL(ddl_prop(errs, "projection.datehour.format"), "yyyy/MM/dd/HH");

	for (size_t i = 0; i < fx.n_keys; i++) {
		char uri[2048];
		bool d, e;

		snprintf(uri, sizeof(uri), "s3://%s/%s", fx.bucket, fx.keys[i]);
		d = ddl_match(data, uri, ".gz", now_secs, why, sizeof(why));
		if (!d && strncmp(fx.keys[i], "clicks/", 7) == 0)
			fprintf(stderr, "\n  data: %s\n", why);
		e = ddl_match(errs, uri, ".gz", now_secs, why, sizeof(why));
		if (!e && strncmp(fx.keys[i], "errors/", 7) == 0)
			fprintf(stderr, "\n  errors: %s\n", why);
		/* In exactly one table. */
		CU_ASSERT(d != e);
		in_data += d;
		in_errs += e;
	}
	fprintf(stderr, "\n  matched: %zu in %s, %zu in %s\n", in_data, data->table, in_errs, errs->table);
	CU_ASSERT_EQUAL(in_data, count_prefix("clicks/"));
	CU_ASSERT_EQUAL(in_errs, count_prefix("errors/"));
	CU_ASSERT(in_data > 0 && in_errs > 0);
	free(data);
	free(errs);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_setup),
		KL_TEST(test_worker_writes_the_lake),
		KL_TEST(test_ddl_covers_every_object),
		{ NULL, NULL },
	};
	int rc;

	kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	kl_test_env_or_skip("KL_TEST_EMU_DIR");
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	atexit(kill_worker);
	rc = kl_test_run("athena", t);
	kill_worker();
	free_keys();
	if (setup_done) {
		aws_client_done(&fx.kc);
		aws_client_done(&fx.s3c);
	}
	tf_aws_done(fx.creds);
	return rc;
}
