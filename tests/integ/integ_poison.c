/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_poison.c: poison records with real `kinlake run` processes and the
 * crashing fixture plugin (tests/fixtures/plugins/fx_crash: abort() on a
 * record holding "CRASH_ABORT") against the emulators. A supervisor loop
 * here restarts a worker that died, as systemd's Restart=on-failure would.
 * (tests/emu/emulators.sh exports KL_TEST_*; without them this exits 77.)
 *
 *   1. one worker, two shards, a crash marker on each: the worker dies on
 *      them and is restarted until each marker has crashed it 3 times
 *      (poison.max_crashes); then both land in the error prefix as
 *      "plugin-crash" with attemptsMade 3 and their original data, and
 *      every other record is in a data object exactly once (checked here
 *      and by tests/tools/lakecheck); SIGTERM stops the worker cleanly;
 *   2. across hosts, one shard: worker A dies on the marker twice and does
 *      not come back; worker B (its own id and state dir) takes the shard
 *      over, finds 2 crashes in the lease, dies once more, and after its
 *      restart routes the record to the error prefix: 3 crashes in all,
 *      never more; again everything else exactly once.
 * The binary is $KL_TEST_KINLAKE, else the build tree's kinlake.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "aws.h"
#include "creds.h"
#include "fixture.h"
#include "http.h"
#include "kinesis.h"
#include "lease_store_ddb.h"
#include "poison.h"
#include "proc.h"
#include "s3.h"
#include "testutil.h"
#include "util.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define MAX_CRASHES 3
#define MAX_RECORDS 64
#define MAX_PROCS 4
/* A hash key in each half of the key space: shard 0 and shard 1 of a
 * two-shard stream (kinesalite splits it evenly, as Kinesis does). */
#define HASH_SHARD0 "1"
#define HASH_SHARD1 "200000000000000000000000000000000000000"

struct proc {
	char name[16];
	pid_t pid;
	int starts;
	int crashes;                     /* deaths by a signal or a failure exit */
};

/* One produced record and where it went. */
struct rec {
	char id[32];
	char data[128];
	char seq[KINESIS_SEQ_MAX + 1];
	char shard[KINESIS_SHARD_ID_MAX + 1];
	bool poison;
	int in_data, in_errors;          /* copies found in S3 */
	bool error_ok;                   /* its error record said what it should */
};

/* One stream, its table, its prefixes and what was put into it. */
struct scen {
	const char *tag;
	char app[64], stream[64];
	char data_prefix[32], error_prefix[32];
	struct rec r[MAX_RECORDS];
	int n;
	char manifest[600];
};

static struct {
	struct tf_env env;
	char bin[4096], lakecheck[4096];
	char dir[512], bucket[64];
	struct creds_chain *creds;
	struct aws_client kc, s3c;
	struct proc p[MAX_PROCS];
	struct scen one, two;
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

static int count_in(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/* ------------------------------------------------------------ config, processes */

static void conf_path(const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s.conf", fx.dir, name);
}

static void log_path(const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s.log", fx.dir, name);
}

/* Worker `name` (its own id and state dir) on scenario s. */
static void write_conf(const char *name, const struct scen *s)
{
	char path[600];
	int rc;

	conf_path(name, path, sizeof(path));
	rc = tp_write_file(path,
		"application = \"%s\";\n"
		"worker_id = \"%s\";\n"
		"stream = \"%s\";\n"
		"region = \"us-east-1\";\n"
		"state_dir = \"%s/%s-state\";\n"
		"shutdown_grace_ms = 5000;\n"
		"lease = { failover_ms = 2000; shard_sync_interval_ms = 5000; };\n"
		"consumer = { threads = 2; idle_ms = 200; };\n"
		"plugin = { name = \"fx_crash\"; search_path = \"%s/tests/fixtures/plugins/.libs\"; };\n"
		"poison = { max_crashes = %d; };\n"
		"s3 = { bucket = \"%s\"; prefix = \"%s\"; error_prefix = \"%s\"; compression = \"none\";\n"
		"       buffer_seconds = 1; content_type = \"application/x-ndjson\"; };\n"
		"credentials = { access_key_id = \"%s\"; secret_access_key = \"%s\"; disable_imds = true; };\n"
		"endpoints = { kinesis = \"%s\"; dynamodb = \"%s\"; s3 = \"%s\"; };\n"
		"http = { connect_timeout_ms = 1000; timeout_ms = 5000; };\n"
		"retry = { max_attempts = 3; };\n"
		"log = { level = \"info\"; file = \"%s/%s.log\"; };\n",
		s->app, name, s->stream, fx.dir, name, KL_TEST_BUILDDIR, MAX_CRASHES, fx.bucket,
		s->data_prefix, s->error_prefix, fx.env.key_id, fx.env.secret, fx.env.kinesis, fx.env.dynamodb, fx.env.s3,
		fx.dir, name);
	CU_ASSERT_FATAL(rc == 0);
}

static struct proc *proc_named(const char *name)
{
	struct proc *free_slot = NULL;

	for (int i = 0; i < MAX_PROCS; i++) {
		if (strcmp(fx.p[i].name, name) == 0)
			return &fx.p[i];
		if (!free_slot && !fx.p[i].name[0])
			free_slot = &fx.p[i];
	}
	CU_ASSERT_FATAL(free_slot != NULL);
	snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
	return free_slot;
}

static void start(struct proc *p)
{
	char conf[600], out[600];
	char *argv[] = { fx.bin, "run", "-c", conf, NULL };
	/* The fixture aborts: no core files in the build tree. */
	struct tp_child c = { .flags = TP_NO_CORE, .out_path = out, .err_path = out };
	pid_t pid;

	CU_ASSERT_FATAL(p->pid <= 0);
	conf_path(p->name, conf, sizeof(conf));
	snprintf(out, sizeof(out), "%s/%s.out", fx.dir, p->name);
	pid = tp_spawn(argv, &c);
	CU_ASSERT_FATAL(pid >= 0);
	p->pid = pid;
	p->starts++;
	tp_step("started %s (pid %ld, start %d)", p->name, (long)pid, p->starts);
}

/* Reaps p if it ended: true then, with a crash counted unless it exited 0
 * (*ret_status gets the wait status when not NULL). */
static bool reaped(struct proc *p, int *ret_status)
{
	int status;

	if (p->pid <= 0 || !tp_reap(p->pid, 0, &status))
		return false;
	p->pid = 0;
	if (ret_status)
		*ret_status = status;
	if (WIFSIGNALED(status)) {
		p->crashes++;
		tp_step("%s died of signal %d (crash %d)", p->name, WTERMSIG(status), p->crashes);
	} else if (WEXITSTATUS(status) != 0) {
		p->crashes++;
		tp_step("%s exited %d (crash %d)", p->name, WEXITSTATUS(status), p->crashes);
	} else {
		tp_step("%s exited 0", p->name);
	}
	return true;
}

/* Waits up to ms for p to end; returns its wait status or -1 on timeout. */
static int wait_end(struct proc *p, int64_t ms)
{
	int64_t end = kl_mono_ms() + ms;
	int status = -1;

	while (kl_mono_ms() < end) {
		if (reaped(p, &status))
			return status;
		kl_sleep_ms(50);
	}
	return -1;
}

static void stop(struct proc *p)
{
	int status;

	CU_ASSERT_FATAL(p->pid > 0);
	tp_step("SIGTERM %s", p->name);
	kill(p->pid, SIGTERM);
	status = wait_end(p, 20000);
	CU_ASSERT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ------------------------------------------------------------ producing */

/*
 * Puts n records per shard hash key into s, the ids "<tag>-<i>"; the ones
 * in poison[] carry the fixture's crash marker. Keeps each record's
 * sequence number and shard, and writes lakecheck's manifest.
 */
static void produce(struct scen *s, const char *const *hash_keys, int n_keys, int per_key,
		    const int *poison, int n_poison)
{
	struct kinesis_put_entry e[MAX_RECORDS];
	struct kinesis_put_results *res = NULL;
	struct kl_errinfo info = { 0 };
	enum kl_err err;
	FILE *mf;

	CU_ASSERT_FATAL(n_keys * per_key <= MAX_RECORDS);
	memset(e, 0, sizeof(e));
	for (int k = 0; k < n_keys; k++)
		for (int i = 0; i < per_key; i++) {
			struct rec *r = &s->r[s->n];
			char id[32];
			bool bad = false;

			for (int j = 0; j < n_poison; j++)
				bad |= poison[j] == s->n;
			snprintf(id, sizeof(id), "%s-%d", s->tag, s->n);
			snprintf(r->id, sizeof(r->id), "%s", id);
			snprintf(r->data, sizeof(r->data), "{\"event_id\":\"%s\",\"key\":\"k%d\",\"seq\":%d%s}",
				 id, k, i, bad ? ",\"x\":\"CRASH_ABORT\"" : "");
			r->poison = bad;
			e[s->n].data = r->data;
			e[s->n].data_len = strlen(r->data);
			e[s->n].partition_key = k ? "k1" : "k0";
			e[s->n].explicit_hash_key = hash_keys[k];
			s->n++;
		}
	err = kinesis_put_records(&fx.kc, s->stream, e, (size_t)s->n, &res, &info);
	tf_report("PutRecords", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	CU_ASSERT_EQUAL_FATAL(res->failed_count, 0);
	snprintf(s->manifest, sizeof(s->manifest), "%s/%s.manifest", fx.dir, s->tag);
	mf = fopen(s->manifest, "w");
	CU_ASSERT_FATAL(mf != NULL);
	for (int i = 0; i < s->n; i++) {
		struct rec *r = &s->r[i];

		snprintf(r->seq, sizeof(r->seq), "%s", res->r[i].sequence_number);
		snprintf(r->shard, sizeof(r->shard), "%s", res->r[i].shard_id);
		/* lakecheck has no kind for a crash; any malformed kind means
		 * "expected once in the error prefix", which is the point. */
		fprintf(mf, "%s\t%s\t%d\t%s\t%s\t%s\t0\n", r->id, e[i].partition_key, i % per_key + 1,
			r->poison ? "missing-fields" : "ok", r->shard, r->seq);
	}
	fclose(mf);
	free(res);
	tp_step("produced %d records into %s", s->n, s->stream);
}

/* ------------------------------------------------------------ S3 */

static struct rec *rec_by_id(struct scen *s, const char *id, size_t len)
{
	for (int i = 0; i < s->n; i++)
		if (strlen(s->r[i].id) == len && memcmp(s->r[i].id, id, len) == 0)
			return &s->r[i];
	return NULL;
}

/* Finds the event ids in text[0..len) and counts them in *field. */
static void count_ids(struct scen *s, const char *text, bool data, int *ret_unknown)
{
	static const char needle[] = "\"event_id\":\"";

	for (const char *p = text; (p = strstr(p, needle)) != NULL;) {
		const char *id = p + sizeof(needle) - 1, *q = strchr(id, '"');
		struct rec *r;

		if (!q)
			break;
		r = rec_by_id(s, id, (size_t)(q - id));
		if (!r)
			(*ret_unknown)++;
		else if (data)
			r->in_data++;
		else
			r->in_errors++;
		p = q;
	}
}

/* One error line: its record must be a poison one, with the shape asked for. */
static void check_error_line(struct scen *s, const char *line, int *ret_bad)
{
	json_object *o = json_tokener_parse(line), *v;
	const char *raw = NULL;
	uint8_t data[256];
	size_t len = 0;
	struct rec *r = NULL;

	if (o && json_object_object_get_ex(o, "rawData", &v))
		raw = json_object_get_string(v);
	if (raw && strlen(raw) < 330 && kl_b64_decode(raw, strlen(raw), data, &len) == KL_OK) {
		data[len < sizeof(data) ? len : sizeof(data) - 1] = '\0';
		for (int i = 0; i < s->n && !r; i++)
			if (strlen(s->r[i].data) == len && memcmp(s->r[i].data, data, len) == 0)
				r = &s->r[i];
	}
	if (!r) {
		fprintf(stderr, "\n  error line with unknown rawData: %s\n", line);
		(*ret_bad)++;
	} else {
		const char *code = NULL, *shard = NULL, *seq = NULL;
		int64_t attempts = -1;

		if (json_object_object_get_ex(o, "errorCode", &v))
			code = json_object_get_string(v);
		if (json_object_object_get_ex(o, "attemptsMade", &v))
			attempts = json_object_get_int64(v);
		if (json_object_object_get_ex(o, "shardId", &v))
			shard = json_object_get_string(v);
		if (json_object_object_get_ex(o, "sequenceNumber", &v))
			seq = json_object_get_string(v);
		r->in_errors++;
		r->error_ok = r->poison && code && strcmp(code, "plugin-crash") == 0 &&
			      attempts == MAX_CRASHES && shard && strcmp(shard, r->shard) == 0 && seq &&
			      strcmp(seq, r->seq) == 0;
		if (!r->error_ok)
			fprintf(stderr, "\n  unexpected error record: %s\n", line);
	}
	json_object_put(o);
}

/* Reads every object under s's prefixes and counts each record's copies.
 * Returns unknown ids + bad error lines. */
static int scan_s3(struct scen *s)
{
	int bad = 0;

	for (int i = 0; i < s->n; i++) {
		s->r[i].in_data = s->r[i].in_errors = 0;
		s->r[i].error_ok = false;
	}
	for (int pass = 0; pass < 2; pass++) {
		struct s3_list_opts lo = { .prefix = pass ? s->error_prefix : s->data_prefix };
		char token[1024] = "";

		do {
			struct s3_list_result res;
			struct kl_errinfo info = { 0 };
			enum kl_err err;

			memset(&res, 0, sizeof(res));
			lo.continuation_token = token[0] ? token : NULL;
			err = s3_list_objects_v2(&fx.s3c, fx.bucket, &lo, &res, &info);
			tf_report("ListObjectsV2", err, &info);
			CU_ASSERT_EQUAL_FATAL(err, KL_OK);
			for (size_t k = 0; k < res.n_entries; k++) {
				char *body = NULL;
				size_t len = 0;

				err = s3_get_object(&fx.s3c, fx.bucket, res.entries[k].key, 16 << 20, &body,
						    &len, NULL, &info);
				tf_report("GetObject", err, &info);
				CU_ASSERT_EQUAL_FATAL(err, KL_OK);
				if (!pass) {
					count_ids(s, body, true, &bad);
				} else {
					for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n"))
						check_error_line(s, line, &bad);
				}
				free(body);
			}
			snprintf(token, sizeof(token), "%s",
				 res.next_continuation_token ? res.next_continuation_token : "");
			s3_list_result_done(&res);
		} while (token[0]);
	}
	return bad;
}

/* Every record where it belongs (at least once)? */
static bool all_landed(struct scen *s)
{
	int bad = scan_s3(s);

	for (int i = 0; i < s->n; i++)
		if (s->r[i].poison ? !s->r[i].in_errors : !s->r[i].in_data)
			return false;
	return bad == 0;
}

/* Exactly once, each in its place; lakecheck agrees. */
static void check_exactly_once(struct scen *s)
{
	int bad = scan_s3(s), wrong = 0;

	CU_ASSERT_EQUAL(bad, 0);
	for (int i = 0; i < s->n; i++) {
		const struct rec *r = &s->r[i];
		bool ok = r->poison ? r->in_data == 0 && r->in_errors == 1 && r->error_ok :
				      r->in_data == 1 && r->in_errors == 0;

		if (!ok) {
			fprintf(stderr, "\n  %s: %d in data, %d in errors%s\n", r->id, r->in_data,
				r->in_errors, r->poison ? " (poison)" : "");
			wrong++;
		}
	}
	CU_ASSERT_EQUAL(wrong, 0);
	if (access(fx.lakecheck, X_OK) == 0) {
		char cmd[8192], out[4096];
		FILE *p;
		size_t n;
		int status;

		snprintf(cmd, sizeof(cmd),
			 "AWS_ACCESS_KEY_ID='%s' AWS_SECRET_ACCESS_KEY='%s' NO_PROXY=127.0.0.1,localhost "
			 "http_proxy= https_proxy= HTTP_PROXY= HTTPS_PROXY= '%s' --endpoint '%s' "
			 "--bucket '%s' --data-prefix '%s' --error-prefix '%s' --manifest '%s' --json",
			 fx.env.key_id, fx.env.secret, fx.lakecheck, fx.env.s3, fx.bucket, s->data_prefix,
			 s->error_prefix, s->manifest);
		p = popen(cmd, "r");
		CU_ASSERT_FATAL(p != NULL);
		n = fread(out, 1, sizeof(out) - 1, p);
		out[n] = '\0';
		status = pclose(p);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fprintf(stderr, "\n  lakecheck: %s\n", out);
		CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"duplicates\":0"));
		CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"missing\":0"));
	} else {
		fprintf(stderr, "\n  (no %s: checked with kinlake's S3 client only)\n", fx.lakecheck);
	}
}

/*
 * The supervisor: keeps p running (restarting it when it dies, at most
 * max_crashes times in all) until every record of s has landed, then
 * stops it with SIGTERM. Fails on a timeout or one crash too many.
 */
static void supervise(struct proc *p, struct scen *s, int max_crashes, int64_t ms)
{
	int64_t end = kl_mono_ms() + ms, next_check = 0;

	if (p->pid <= 0)
		start(p);
	for (;;) {
		int64_t now = kl_mono_ms();

		if (reaped(p, NULL)) {
			CU_ASSERT_FATAL(p->crashes <= max_crashes);
			start(p);
		}
		if (now >= next_check) {
			next_check = now + 1000;
			if (all_landed(s))
				break;
		}
		CU_ASSERT_FATAL(now < end);
		kl_sleep_ms(100);
	}
	tp_step("every record of %s landed; %s crashed %d times", s->stream, p->name, p->crashes);
	stop(p);
}

/* The crash count of record r in the lease of s (sum, and worker's part). */
static uint32_t lease_crashes(struct scen *s, const struct rec *r, const char *worker,
			      uint32_t *ret_mine)
{
	struct lease_store_ddb_config dc = { 0 };
	struct aws_client_config ac = { 0 };
	struct lease_store *st = NULL;
	struct poison_table t = { NULL, 0 };
	struct kl_errinfo info = { 0 };
	struct lease l;
	struct esn e;
	uint32_t n;

	ac.region = "us-east-1";
	ac.endpoint = fx.env.dynamodb;
	ac.http.timeout_ms = 10000;
	ac.retry.max_attempts = 3;
	dc.table = s->app;
	dc.aws = &ac;
	dc.creds = fx.creds;
	CU_ASSERT_EQUAL_FATAL(lease_store_ddb_new(&dc, &st, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(lease_store_get(st, r->shard, &l, &info), KL_OK);
	CU_ASSERT_EQUAL(poison_table_decode(lease_get_extra(&l, POISON_LEASE_ATTR), &t, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(esn_set(r->seq, 0, &e, NULL), KL_OK);
	n = poison_table_count(&t, &e, worker, ret_mine);
	poison_table_done(&t);
	lease_done(&l);
	lease_store_free(st);
	return n;
}

/* ------------------------------------------------------------ the tests */

static void scen_init(struct scen *s, const char *tag, int shards)
{
	struct kl_errinfo info = { 0 };
	enum kl_err err;
	long id = (long)getpid();

	s->tag = tag;
	snprintf(s->app, sizeof(s->app), "kl-poison-%ld-%s", id, tag);
	snprintf(s->stream, sizeof(s->stream), "kl-poison-%ld-%s", id, tag);
	snprintf(s->data_prefix, sizeof(s->data_prefix), "%s/data/", tag);
	snprintf(s->error_prefix, sizeof(s->error_prefix), "%s/errors/", tag);
	err = kinesis_create_stream(&fx.kc, s->stream, shards, &info);
	tf_report("CreateStream", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	err = kinesis_wait_active(&fx.kc, s->stream, 30000, NULL, &info);
	CU_ASSERT_FATAL(err == KL_OK);
}

static void test_setup(void)
{
	struct kl_errinfo info = { 0 };
	long tag = (long)getpid();
	enum kl_err err;

	tf_env_read(&fx.env);
	CU_ASSERT_FATAL(tf_program("KL_TEST_KINLAKE", KL_TEST_BUILDDIR "/kinlake", fx.bin, sizeof(fx.bin)));
	snprintf(fx.lakecheck, sizeof(fx.lakecheck), "%s/tests/tools/lakecheck", KL_TEST_BUILDDIR);
	CU_ASSERT_FATAL(access(KL_TEST_BUILDDIR "/tests/fixtures/plugins/.libs/fx_crash.so", R_OK) == 0);
	CU_ASSERT_FATAL(tf_make_dir("integ-poison", fx.dir, sizeof(fx.dir)));
	snprintf(fx.bucket, sizeof(fx.bucket), "kl-poison-%ld", tag);
	CU_ASSERT_FATAL(tf_aws_init(&fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.kc, "kinesis", fx.env.kinesis, fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.s3c, "s3", fx.env.s3, fx.creds) == KL_OK);
	err = s3_create_bucket(&fx.s3c, fx.bucket, &info);
	tf_report("CreateBucket", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	scen_init(&fx.one, "one", 2);
	scen_init(&fx.two, "two", 1);
}

static void test_two_poison_records_one_worker(void)
{
	static const char *const keys[] = { HASH_SHARD0, HASH_SHARD1 };
	static const int poison[] = { 9, 20 + 14 };   /* one on each shard */
	struct proc *w = proc_named("w1");
	char path[600];
	char *log;

	produce(&fx.one, keys, 2, 20, poison, 2);
	CU_ASSERT_STRING_NOT_EQUAL(fx.one.r[9].shard, fx.one.r[34].shard);
	write_conf("w1", &fx.one);
	/* Each marker crashes the worker 3 times; two may go down together. */
	supervise(w, &fx.one, 2 * MAX_CRASHES, 180000);
	CU_ASSERT(w->crashes >= MAX_CRASHES && w->crashes <= 2 * MAX_CRASHES);
	check_exactly_once(&fx.one);
	log_path("w1", path, sizeof(path));
	log = tp_read_file(path, (8 << 20) - 1, NULL);
	CU_ASSERT_FATAL(log != NULL);
	/* At least once each: a start that routed one marker may have died on
	 * the other before committing, and the next start routes it again. */
	CU_ASSERT(count_in(log, "sent to the error prefix as plugin-crash") >= 2);
	/* Each of the 6 crashes counted once, at the start after it. */
	CU_ASSERT_EQUAL(count_in(log, "the last run died in the plugin"), 2 * MAX_CRASHES);
	CU_ASSERT_EQUAL(count_in(log, "no crash handler ran"), 0);
	free(log);
}

static void test_count_carries_to_another_worker(void)
{
	static const char *const keys[] = { HASH_SHARD0 };
	static const int poison[] = { 7 };
	struct proc *a = proc_named("pa"), *b = proc_named("pb");
	const struct rec *r = &fx.two.r[7];
	uint32_t mine = 0;
	char path[600];
	char *log;
	int status;

	produce(&fx.two, keys, 1, 20, poison, 1);
	write_conf("pa", &fx.two);
	write_conf("pb", &fx.two);
	/* A dies on the marker, comes back once, dies again, and is gone. */
	start(a);
	status = wait_end(a, 60000);
	CU_ASSERT_FATAL(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
	start(a);
	status = wait_end(a, 60000);
	CU_ASSERT_FATAL(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
	/* The second attempt was counted in the lease before it began. */
	CU_ASSERT_EQUAL(lease_crashes(&fx.two, r, "pa", &mine), 2);
	CU_ASSERT_EQUAL(mine, 2);
	/* B, with its own id and state dir, counts on from 2. */
	start(b);
	status = wait_end(b, 60000);
	CU_ASSERT_FATAL(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
	log_path("pb", path, sizeof(path));
	log = tp_read_file(path, (8 << 20) - 1, NULL);
	CU_ASSERT_FATAL(log != NULL);
	CU_ASSERT_PTR_NOT_NULL(strstr(log, "crashed the plugin 2 times before (limit 3): trying it again"));
	free(log);
	CU_ASSERT_EQUAL(lease_crashes(&fx.two, r, "pb", &mine), 3);
	CU_ASSERT_EQUAL(mine, 1);
	/* B's restart sends the record to the error prefix: no 4th crash. */
	supervise(b, &fx.two, 1, 120000);
	CU_ASSERT_EQUAL(a->crashes, 2);
	CU_ASSERT_EQUAL(b->crashes, 1);
	check_exactly_once(&fx.two);
	log = tp_read_file(path, (8 << 20) - 1, NULL);
	CU_ASSERT_FATAL(log != NULL);
	CU_ASSERT_EQUAL(count_in(log, "crashed the plugin 3 times (limit 3): sent to the error prefix"), 1);
	free(log);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_setup),
		KL_TEST(test_two_poison_records_one_worker),
		KL_TEST(test_count_carries_to_another_worker),
		{ NULL, NULL },
	};
	int rc;

	kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	kl_test_env_or_skip("KL_TEST_EMU_DIR");
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	atexit(kill_all);
	rc = kl_test_run("poison", t);
	kill_all();
	for (int i = 0; i < MAX_PROCS; i++)
		if (fx.p[i].name[0])
			printf("figures: %s started %d times, crashed %d times\n", fx.p[i].name,
			       fx.p[i].starts, fx.p[i].crashes);
	aws_client_done(&fx.kc);
	aws_client_done(&fx.s3c);
	tf_aws_done(fx.creds);
	return rc;
}
