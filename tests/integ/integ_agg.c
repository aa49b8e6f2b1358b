/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_agg.c: the DynamoDB aggregates (src/agg) exactly once, with real
 * `kinlake run` workers against the emulators. `kinlake demo produce`
 * writes clickstream into a 4-shard stream while two workers with
 * aggregates on (per window x page x action, count and sum:price, small
 * batches, 5 s windows) drain it; the workers are killed with SIGKILL three times and
 * restarted. Once every ok event is in S3 and no lease has a pending
 * intent, the counts (count + late) and price sums per window x page x
 * action computed from the S3 data objects must equal the DynamoDB items
 * summed over their buckets, and no event may be in S3 twice. The
 * comparison is tests/tools/aggcheck's (the chaos test's judge too), run
 * here so CI exercises it, cross-checked with this test's own S3 count;
 * then one item is broken (ADD count 1, then ADD sum_price 0.5) and
 * aggcheck must say so.
 * (tests/emu/emulators.sh exports KL_TEST_*; without them this exits 77.)
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "agg.h"
#include "aws.h"
#include "creds.h"
#include "fixture.h"
#include "ddb.h"
#include "http.h"
#include "metrics.h"
#include "proc.h"
#include "s3.h"
#include "testutil.h"
#include "util.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif
#ifndef KL_AGGCHECK_PATH
#error "KL_AGGCHECK_PATH must name the built tests/tools/aggcheck"
#endif

#define MAX_PROCS 3
#define EVENTS 4000
#define MAX_CELLS 8192
/* Short windows, no lateness: many events straddle a window end, so the
 * late measure is exercised too (how many is up to timing; not asserted). */
#define WINDOW_S 5

struct proc {
	char name[16];
	pid_t pid;
	int starts, kills;
};

/* One window x page x action of the S3 objects. */
struct cell {
	char key[600];
	uint64_t n;                      /* records */
};

/* What aggcheck --json said (-1: missing). */
struct aggfig {
	int rc;
	long long objects, s3_records, s3_untimed, s3_cells, ddb_items, ddb_records, ddb_late,
		ddb_untimed, ddb_cells, bad_items, mismatches, distinct_buckets;
};

static struct {
	struct tf_env env;
	char bin[4096], aggcheck[4096], dir[512], bucket[64], app[64], stream[64], table[64],
		manifest[600];
	struct creds_chain *creds;
	struct aws_client s3c, ddbc;
	struct proc p[MAX_PROCS];
	struct cell *s3cells;
	size_t n_s3;
	uint64_t lines;                  /* data records in S3 once drained */
	bool drained;
} fx;

static void kill_all(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (fx.p[i].pid > 0) {
			tp_kill(fx.p[i].pid);
			fx.p[i].pid = 0;
		}
}

static void on_fatal_signal(int sig)
{
	kill_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void write_conf(const char *name)
{
	char path[600];
	int rc;

	snprintf(path, sizeof(path), "%s/%s.conf", fx.dir, name);
	rc = tp_write_file(path,
		"application = \"%s\";\n"
		"worker_id = \"%s\";\n"
		"stream = \"%s\";\n"
		"region = \"us-east-1\";\n"
		"state_dir = \"%s/%s-state\";\n"
		"shutdown_grace_ms = 10000;\n"
		"lease = { failover_ms = 2000; take_interval_ms = 1000; shard_sync_interval_ms = 5000; };\n"
		"consumer = { threads = 4; idle_ms = 200; };\n"
		"plugin = { name = \"clickstream\"; search_path = \"%s/plugins/clickstream/.libs\";\n"
		"  settings = { timestamp_field = \"ts\";\n"
		"    required_fields = [ \"event_id\", \"session_id\", \"user_id\", \"action\", \"ts\" ]; }; };\n"
		"s3 = { bucket = \"%s\";\n"
		"  prefix = \"data/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/\";\n"
		"  error_prefix = \"errors/!{firehose:error-output-type}/\";\n"
		"  compression = \"none\"; buffer_seconds = 2; buffer_records = 150; };\n"
		"aggregates = { table = \"%s\"; window_seconds = %d; allowed_lateness_seconds = 0;\n"
		"  time_field = \"ts\"; dimensions = \"page, action\";\n"
		"  measures = \"count, sum:price, distinct:session_id\";\n"
		"  buckets = 2; max_entries = 200; flush_seconds = 2; };\n"
		"credentials = { access_key_id = \"%s\"; secret_access_key = \"%s\"; disable_imds = true; };\n"
		"endpoints = { kinesis = \"%s\"; dynamodb = \"%s\"; s3 = \"%s\"; };\n"
		"http = { connect_timeout_ms = 1000; timeout_ms = 10000; };\n"
		"retry = { max_attempts = 4; base_delay_ms = 50; max_delay_ms = 1000; };\n"
		"log = { level = \"info\"; file = \"%s/%s.log\"; };\n"
		"metrics = { file = \"%s/%s.prom\"; interval_ms = 1000; };\n",
		fx.app, name, fx.stream, fx.dir, name, KL_TEST_BUILDDIR, fx.bucket, fx.table, WINDOW_S, fx.env.key_id,
		fx.env.secret, fx.env.kinesis, fx.env.dynamodb, fx.env.s3, fx.dir, name, fx.dir, name);
	CU_ASSERT_FATAL(rc == 0);
}

/* Starts argv with stdout and stderr appended to out, the emulators' keys
 * in its environment. */
static pid_t spawn(char *const *argv, const char *out)
{
	struct tp_child c = { .out_path = out, .err_path = out, .aws_key_id = fx.env.key_id,
			      .aws_secret = fx.env.secret };
	pid_t pid = tp_spawn(argv, &c);

	CU_ASSERT_FATAL(pid >= 0);
	return pid;
}

static void start(struct proc *p)
{
	char conf[600], out[600];
	char *argv[] = { fx.bin, "run", "-c", conf, NULL };

	CU_ASSERT_FATAL(p->pid <= 0);
	snprintf(conf, sizeof(conf), "%s/%s.conf", fx.dir, p->name);
	snprintf(out, sizeof(out), "%s/%s.out", fx.dir, p->name);
	p->pid = spawn(argv, out);
	p->starts++;
	tp_step("started %s (pid %ld, start %d)", p->name, (long)p->pid, p->starts);
}

static void kill9(struct proc *p)
{
	CU_ASSERT_FATAL(p->pid > 0);
	tp_kill(p->pid);
	p->pid = 0;
	p->kills++;
	tp_step("SIGKILL %s (kill %d)", p->name, p->kills);
}

static void stop(struct proc *p)
{
	int status = -1;

	CU_ASSERT_FATAL(p->pid > 0);
	kill(p->pid, SIGTERM);
	if (!tp_reap(p->pid, 30000, &status))
		status = -1;
	CU_ASSERT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (status < 0)
		tp_kill(p->pid);
	p->pid = 0;
	tp_step("stopped %s", p->name);
}

/* A producer in the background: `kinlake demo produce` at a steady rate. */
static pid_t produce_async(void)
{
	char conf[600], out[600], count[16];
	char *argv[] = { fx.bin, "demo", "produce", "--stream", fx.stream, "-c", conf,
			 "--count", count, "--rate", "200", "--seed", "77", "--sessions", "200",
			 "--malformed-pct", "2", "--bot-pct", "5", "--create-shards", "4",
			 "--manifest", fx.manifest, "--quiet", NULL };

	snprintf(conf, sizeof(conf), "%s/a.conf", fx.dir);
	snprintf(out, sizeof(out), "%s/producer.out", fx.dir);
	snprintf(count, sizeof(count), "%d", EVENTS);
	return spawn(argv, out);
}

/* ------------------------------------------------------------ counting */

static struct cell *cell(struct cell *cells, size_t *n, const char *key)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(cells[i].key, key) == 0)
			return &cells[i];
	CU_ASSERT_FATAL(*n < MAX_CELLS);
	memset(&cells[*n], 0, sizeof(cells[*n]));
	snprintf(cells[*n].key, sizeof(cells[*n].key), "%s", key);
	return &cells[(*n)++];
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || !v)
		return AGG_NONE_VALUE;
	return json_object_get_string(v);
}

/* Every data line: window of its ts x page x action; ids must be unique. */
static uint64_t count_s3(uint64_t *ret_dups)
{
	struct s3_list_opts lo = { .prefix = "data/" };
	char token[1024] = "";
	uint64_t lines = 0, dups = 0;
	json_object *ids = json_object_new_object();

	fx.n_s3 = 0;
	do {
		struct s3_list_result res;
		struct kl_errinfo info = { 0 };
		enum kl_err err;

		memset(&res, 0, sizeof(res));
		lo.continuation_token = token[0] ? token : NULL;
		err = s3_list_objects_v2(&fx.s3c, fx.bucket, &lo, &res, &info);
		tf_report("ListObjectsV2", err, &info);
		CU_ASSERT_FATAL(err == KL_OK);
		for (size_t k = 0; k < res.n_entries; k++) {
			char *body = NULL, *save = NULL;
			size_t len = 0;

			err = s3_get_object(&fx.s3c, fx.bucket, res.entries[k].key, 64 << 20, &body, &len,
					    NULL, &info);
			tf_report("GetObject", err, &info);
			CU_ASSERT_FATAL(err == KL_OK);
			for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
				json_object *o = json_tokener_parse(line);
				char window[40], key[600];
				int64_t t = 0, ws;
				time_t secs;
				struct tm tm;
				struct cell *c;

				CU_ASSERT_FATAL(o != NULL);
				lines++;
				if (json_object_object_get_ex(ids, jstr(o, "event_id"), NULL))
					dups++;
				else
					json_object_object_add(ids, jstr(o, "event_id"), NULL);
				CU_ASSERT_TRUE(agg_parse_time(jstr(o, "ts"), &t));
				ws = agg_window_start(t, WINDOW_S * 1000);
				secs = (time_t)(ws / 1000);
				gmtime_r(&secs, &tm);
				strftime(window, sizeof(window), "%Y-%m-%dT%H:%M:%SZ", &tm);
				snprintf(key, sizeof(key), "%s|%s|%s", window, jstr(o, "page"),
					 jstr(o, "action"));
				c = cell(fx.s3cells, &fx.n_s3, key);
				c->n++;
				json_object_put(o);
			}
			free(body);
		}
		snprintf(token, sizeof(token), "%s",
			 res.next_continuation_token ? res.next_continuation_token : "");
		s3_list_result_done(&res);
	} while (token[0]);
	json_object_put(ids);
	*ret_dups = dups;
	return lines;
}

static long long jint(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : -1;
}

/* Runs aggcheck --json on the bucket and table; its stderr goes to
 * <dir>/aggcheck.err, and into the log when it fails (the scratch dir
 * goes away). Returns its exit status (-1: no figures). */
static int aggcheck(struct aggfig *ret)
{
	char window[16], errpath[600], out[4096];
	char *argv[] = { fx.aggcheck, "--s3-endpoint", (char *)fx.env.s3, "--bucket", fx.bucket,
			 "--data-prefix", "data/", "--ddb-endpoint", (char *)fx.env.dynamodb,
			 "--table", fx.table, "--window-seconds", window, "--time-field", "ts",
			 "--dimensions", "page, action", "--measures",
			 "count, sum:price, distinct:session_id", "--json",
			 NULL };
	struct tp_child c = { .err_path = errpath, .aws_key_id = fx.env.key_id,
			      .aws_secret = fx.env.secret };
	int fd;
	json_object *o;

	memset(ret, 0, sizeof(*ret));
	snprintf(window, sizeof(window), "%d", WINDOW_S);
	snprintf(errpath, sizeof(errpath), "%s/aggcheck.err", fx.dir);
	fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);  /* this run's only */
	if (fd >= 0)
		close(fd);
	ret->rc = tp_run(argv, out, sizeof(out), &c);
	CU_ASSERT_FATAL(ret->rc != -2);
	o = json_tokener_parse(out);
	if (!o) {
		ret->rc = -1;       /* a verdict without figures is no verdict */
	} else {
		ret->objects = jint(o, "objects");
		ret->s3_records = jint(o, "s3_records");
		ret->s3_untimed = jint(o, "s3_untimed");
		ret->s3_cells = jint(o, "s3_cells");
		ret->ddb_items = jint(o, "ddb_items");
		ret->ddb_records = jint(o, "ddb_records");
		ret->ddb_late = jint(o, "ddb_late");
		ret->ddb_untimed = jint(o, "ddb_untimed");
		ret->ddb_cells = jint(o, "ddb_cells");
		ret->bad_items = jint(o, "bad_items");
		ret->mismatches = jint(o, "mismatches");
		ret->distinct_buckets = jint(o, "distinct_buckets");
		json_object_put(o);
	}
	tp_step("aggcheck exit %d: %lld objects, S3 %lld records in %lld cells (untimed %lld),"
	     " DynamoDB %lld items, %lld records in %lld cells (late %lld, untimed %lld),"
	     " %lld session buckets, %lld bad items, %lld mismatches (details in %s)", ret->rc,
	     ret->objects, ret->s3_records, ret->s3_cells, ret->s3_untimed, ret->ddb_items,
	     ret->ddb_records, ret->ddb_cells, ret->ddb_late, ret->ddb_untimed, ret->distinct_buckets,
	     ret->bad_items, ret->mismatches, errpath);
	if (ret->rc != 0) {
		FILE *f = fopen(errpath, "r");
		char line[1024];

		while (f && fgets(line, sizeof(line), f))
			fprintf(stderr, "\n    %s", strtok(line, "\n") ? line : "");
		if (f)
			fclose(f);
	}
	return ret->rc;
}

/* ADD one number attribute of one item of the table (the breakage). */
/* "ADD #a :v" or "DELETE #a :v" (a set's elements) on an existing
 * attribute of item pk; v is consumed. */
static void update_item(const char *pk, const char *op, const char *attr, json_object *v)
{
	json_object *key = ddb_key_s(AGG_HASH_KEY, pk), *names = json_object_new_object(),
		    *values = json_object_new_object();
	struct ddb_write_opts wo = { 0 };
	struct kl_errinfo info = { 0 };
	char expr[32];
	enum kl_err err;

	CU_ASSERT_FATAL(key && names && values && v);
	CU_ASSERT_FATAL(json_object_object_add(names, "#a", json_object_new_string(attr)) == 0);
	CU_ASSERT_FATAL(ddb_set(values, ":v", v) == KL_OK);
	snprintf(expr, sizeof(expr), "%s #a :v", op);
	wo.condition = "attribute_exists(#a)";
	wo.names = names;
	wo.values = values;
	err = ddb_update_item(&fx.ddbc, fx.table, key, expr, &wo, NULL, &info);
	tf_report("UpdateItem", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	json_object_put(key);
	json_object_put(names);
	json_object_put(values);
}

static void add_to_item(const char *pk, const char *attr, const char *dec)
{
	update_item(pk, "ADD", attr, ddb_n(dec));
}

/* Leases with a pending intent (pendingCheckpoint set). */
static int pending_intents(void)
{
	json_object *items = NULL;
	struct kl_errinfo info = { 0 };
	enum kl_err err = ddb_scan_all(&fx.ddbc, fx.app, NULL, 0, &items, &info);
	int pending = 0;

	if (err)
		return -1;
	for (size_t i = 0; i < json_object_array_length(items); i++) {
		const char *p = ddb_get_s(json_object_array_get_idx(items, i), "pendingCheckpoint");

		if (p && *p)
			pending++;
	}
	json_object_put(items);
	return pending;
}

static uint64_t manifest_ok(void)
{
	FILE *f = fopen(fx.manifest, "r");
	char line[1024];
	uint64_t n = 0;

	CU_ASSERT_FATAL(f != NULL);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "\tok\t"))
			n++;
	fclose(f);
	return n;
}

/* ------------------------------------------------------------ tests */

static void test_setup(void)
{
	struct kl_errinfo info = { 0 };
	long tag = (long)getpid();
	enum kl_err err;

	tf_env_read(&fx.env);
	CU_ASSERT_FATAL(tf_program("KL_TEST_KINLAKE", KL_TEST_BUILDDIR "/kinlake", fx.bin, sizeof(fx.bin)));
	snprintf(fx.aggcheck, sizeof(fx.aggcheck), "%s", KL_AGGCHECK_PATH);
	CU_ASSERT_FATAL(access(fx.aggcheck, X_OK) == 0);
	CU_ASSERT_FATAL(tf_make_dir("integ-agg", fx.dir, sizeof(fx.dir)));
	snprintf(fx.bucket, sizeof(fx.bucket), "kl-agg-%ld", tag);
	snprintf(fx.app, sizeof(fx.app), "kl-agg-%ld-leases", tag);
	snprintf(fx.stream, sizeof(fx.stream), "kl-agg-%ld", tag);
	snprintf(fx.table, sizeof(fx.table), "kl-agg-%ld-dash", tag);
	snprintf(fx.manifest, sizeof(fx.manifest), "%s/manifest.tsv", fx.dir);
	fx.s3cells = calloc(MAX_CELLS, sizeof(*fx.s3cells));
	CU_ASSERT_FATAL(fx.s3cells != NULL);
	CU_ASSERT_FATAL(tf_aws_init(&fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.s3c, "s3", fx.env.s3, fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.ddbc, "dynamodb", fx.env.dynamodb, fx.creds) == KL_OK);
	err = s3_create_bucket(&fx.s3c, fx.bucket, &info);
	tf_report("CreateBucket", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	snprintf(fx.p[0].name, sizeof(fx.p[0].name), "a");
	snprintf(fx.p[1].name, sizeof(fx.p[1].name), "b");
	write_conf("a");
	write_conf("b");
}

/* Worker-level aggregate counters of a metrics file (no shard label). */
struct aggmetrics {
	double records, updates, already, failures;
	int samples;
};

static void aggmetrics_sample(void *ctx, const struct metrics_sample *m)
{
	struct aggmetrics *am = ctx;

	static const struct {
		const char *name;
		size_t offset;
	} fields[] = {
		{ "kinlake_aggregate_records_total", offsetof(struct aggmetrics, records) },
		{ "kinlake_aggregate_updates_total", offsetof(struct aggmetrics, updates) },
		{ "kinlake_aggregate_already_applied_total", offsetof(struct aggmetrics, already) },
		{ "kinlake_aggregate_failures_total", offsetof(struct aggmetrics, failures) },
	};

	if (metrics_sample_label(m, "shard"))
		return;
	for (size_t i = 0; i < KL_ARRAY_LEN(fields); i++)
		if (strcmp(m->name, fields[i].name) == 0) {
			*(double *)((char *)am + fields[i].offset) += m->value;
			am->samples++;
		}
}

/* Adds the final metrics file of worker name (written at its graceful stop). */
static void read_aggmetrics(const char *name, struct aggmetrics *am)
{
	struct kl_errinfo info;
	char path[600];
	size_t len = 0;
	char *text;

	snprintf(path, sizeof(path), "%s/%s.prom", fx.dir, name);
	text = tp_read_file(path, 1 << 20, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT_EQUAL(metrics_parse(text, len, aggmetrics_sample, am, &info), KL_OK);
	free(text);
}

static void test_counts_equal_s3_after_kills(void)
{
	struct proc *a = &fx.p[0], *b = &fx.p[1];
	pid_t producer = produce_async();
	int status = -1, pending = -1;
	uint64_t expected, lines = 0, dups = 0;
	struct aggfig f;
	int64_t end;

	tp_step("producing %d events at 200/s (pid %ld)", EVENTS, (long)producer);
	kl_sleep_ms(2000);   /* --create-shards makes the stream first */
	start(a);
	start(b);
	kl_sleep_ms(5000);
	kill9(a);
	start(a);
	kl_sleep_ms(4000);
	kill9(b);
	start(b);
	kl_sleep_ms(3000);
	kill9(a);
	kl_sleep_ms(500);
	start(a);
	CU_ASSERT_FATAL(waitpid(producer, &status, 0) == producer);
	tp_step("producer exited %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	CU_ASSERT_FATAL(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	expected = manifest_ok();
	tp_step("%" PRIu64 " ok events expected in S3", expected);

	/* Drained: every ok event in S3 and no intent pending (so every batch
	 * applied its aggregates and committed). Generous: the machine is shared. */
	end = kl_mono_ms() + 240000 * (int64_t)kl_test_slowdown();
	while (kl_mono_ms() < end) {
		lines = count_s3(&dups);
		pending = pending_intents();
		if (lines >= expected && pending == 0)
			break;
		kl_sleep_ms(2000);
	}
	tp_step("S3: %" PRIu64 " data records (%" PRIu64 " duplicates), %d intents pending", lines, dups,
	     pending);
	CU_ASSERT_EQUAL(lines, expected);
	CU_ASSERT_EQUAL(dups, 0);
	CU_ASSERT_EQUAL(pending, 0);
	stop(a);
	stop(b);

	lines = count_s3(&dups);
	CU_ASSERT_EQUAL(lines, expected);
	/* The comparison itself: aggcheck, checked against this test's own
	 * reading of the objects (records, cells), so a tool that read
	 * nothing cannot pass. */
	CU_ASSERT_EQUAL(aggcheck(&f), 0);
	CU_ASSERT_EQUAL(f.mismatches, 0);
	CU_ASSERT_EQUAL(f.bad_items, 0);
	CU_ASSERT_EQUAL(f.s3_records, (long long)lines);
	CU_ASSERT_EQUAL(f.ddb_records, (long long)lines);
	CU_ASSERT_EQUAL(f.s3_cells, (long long)fx.n_s3);
	CU_ASSERT_EQUAL(f.ddb_cells, (long long)fx.n_s3);
	CU_ASSERT_EQUAL(f.s3_untimed, 0);
	CU_ASSERT_EQUAL(f.ddb_untimed, 0);
	CU_ASSERT_TRUE(f.distinct_buckets > 0);   /* the session sets were compared */
	CU_ASSERT_TRUE(f.ddb_items >= f.ddb_cells);
	CU_ASSERT_TRUE(a->kills + b->kills >= 3);
	/* The operator's view: the last run of each worker counted records and
	 * applied updates (counters start again with each process, so only
	 * bounds hold: no more records than S3 has). */
	{
		struct aggmetrics am = { 0 };

		read_aggmetrics("a", &am);
		read_aggmetrics("b", &am);
		tp_step("metrics of the last runs: %.0f records, %.0f updates, %.0f already applied, "
			"%.0f failures", am.records, am.updates, am.already, am.failures);
		CU_ASSERT_EQUAL(am.samples, 8);
		CU_ASSERT_TRUE(am.records > 0 && am.records <= (double)lines);
		CU_ASSERT_TRUE(am.updates > 0);
	}
	fx.lines = lines;
	fx.drained = f.rc == 0;
	printf("\nfigures: %" PRIu64 " records, %zu cells, %lld items, %lld late, %d kills\n",
	       lines, fx.n_s3, f.ddb_items, f.ddb_late, a->kills + b->kills);
}

/*
 * aggcheck must be able to fail: one item's count one too high, then
 * (count restored) its price sum 0.5 too high, then (restored) a session
 * bucket too many in its set; each is one mismatch, and restoring passes
 * again.
 */
static void test_aggcheck_catches_breakage(void)
{
	json_object *items = NULL;
	struct kl_errinfo info = { 0 };
	bool used[AGG_DISTINCT_BUCKETS] = { false };
	int64_t free_bucket = -1;
	struct aggfig f;
	char pk[AGG_PK_MAX + 1];
	enum kl_err err;

	CU_ASSERT_FATAL(fx.drained);
	err = ddb_scan_all(&fx.ddbc, fx.table, NULL, 0, &items, &info);
	tf_report("Scan", err, &info);
	CU_ASSERT_FATAL(err == KL_OK && json_object_array_length(items) > 0);
	snprintf(pk, sizeof(pk), "%s", ddb_get_s(json_object_array_get_idx(items, 0), AGG_HASH_KEY));
	/* A bucket no item's session set holds: adding it to one item must
	 * change its cell's union whatever the other buckets' items hold. */
	for (size_t i = 0; i < json_object_array_length(items); i++) {
		const char **nums = NULL;
		size_t n = 0;

		if (ddb_get_ns(json_object_array_get_idx(items, i), "distinct_session_id", &nums,
			       &n) != KL_OK)
			continue;
		for (size_t k = 0; k < n; k++) {
			long b = atol(nums[k]);

			if (b >= 0 && b < AGG_DISTINCT_BUCKETS)
				used[b] = true;
		}
		free(nums);
	}
	json_object_put(items);
	for (int b = 0; b < AGG_DISTINCT_BUCKETS && free_bucket < 0; b++)
		if (!used[b])
			free_bucket = b;
	CU_ASSERT_FATAL(free_bucket >= 0);
	tp_step("breaking item %s", pk);

	add_to_item(pk, "count", "1");
	CU_ASSERT_EQUAL(aggcheck(&f), 1);
	CU_ASSERT_EQUAL(f.mismatches, 1);
	CU_ASSERT_EQUAL(f.s3_records, (long long)fx.lines);
	CU_ASSERT_EQUAL(f.ddb_records, (long long)fx.lines + 1);

	add_to_item(pk, "count", "-1");
	add_to_item(pk, "sum_price", "0.5");
	CU_ASSERT_EQUAL(aggcheck(&f), 1);
	CU_ASSERT_EQUAL(f.mismatches, 1);
	CU_ASSERT_EQUAL(f.ddb_records, (long long)fx.lines);

	add_to_item(pk, "sum_price", "-0.5");
	CU_ASSERT_EQUAL(aggcheck(&f), 0);
	CU_ASSERT_EQUAL(f.mismatches, 0);

	/* One session too many in the item's set, then taken out again. */
	update_item(pk, "ADD", "distinct_session_id", ddb_ns_i64(&free_bucket, 1));
	CU_ASSERT_EQUAL(aggcheck(&f), 1);
	CU_ASSERT_EQUAL(f.mismatches, 1);
	update_item(pk, "DELETE", "distinct_session_id", ddb_ns_i64(&free_bucket, 1));
	CU_ASSERT_EQUAL(aggcheck(&f), 0);
	CU_ASSERT_EQUAL(f.mismatches, 0);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_setup),
		KL_TEST(test_counts_equal_s3_after_kills),
		KL_TEST(test_aggcheck_catches_breakage),
		{ NULL, NULL },
	};
	int rc;

	kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	kl_test_env_or_skip("KL_TEST_EMU_DIR");
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	atexit(kill_all);
	rc = kl_test_run("agg", t);
	kill_all();
	aws_client_done(&fx.s3c);
	aws_client_done(&fx.ddbc);
	free(fx.s3cells);
	tf_aws_done(fx.creds);
	return rc;
}
