/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_daemon.c: real `kinlake run` worker processes against the
 * emulators (tests/emu/emulators.sh exports KL_TEST_*; without them this
 * exits 77), judged from outside with `kinlake status --json`, the metrics
 * files, the logs, the sd_notify datagrams and the objects in S3:
 *
 *   1. two workers (2 shard threads each) on a 4-shard stream: status 0
 *      once both hold leases; READY=1, STATUS=, WATCHDOG=1 arrive on an
 *      abstract NOTIFY_SOCKET; every produced record lands in S3 once;
 *      the metrics files are valid Prometheus text; SIGHUP reopens the log;
 *   2. kill -9 one: its shards show "expired", status 1, then 2 once they
 *      have been ownerless for unowned_crit_ms (the survivor is at its
 *      thread cap, so nobody takes them); a third worker takes them over:
 *      status 0 again;
 *   3. SIGTERM one: STOPPING=1, exit 0, its leases released and taken by
 *      the other within seconds (measured and printed);
 *   4. kill -9 and immediate restart with the same worker id: status 0
 *      again after about the failover time (measured);
 *   5. every record produced (before and during all this) is in S3 exactly
 *      once; a final SIGTERM leaves the table with released leases.
 * The binary is $KL_TEST_KINLAKE, else the build tree's kinlake.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "aws.h"
#include "creds.h"
#include "fixture.h"
#include "http.h"
#include "kinesis.h"
#include "proc.h"
#include "promcheck.h"
#include "s3.h"
#include "testutil.h"
#include "util.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define SEED 4242
#define FIRST_BATCH 300
#define SECOND_BATCH 200
#define MAX_WORKERS 8

struct worker_proc {
	char name[16];
	pid_t pid;
};

static struct {
	struct tf_env env;
	char bin[4096];
	char dir[512];
	char app[64], stream[64], bucket[64];
	struct creds_chain *creds;
	struct aws_client kc, s3c;
	struct worker_proc w[MAX_WORKERS];
	int notify_fd;
	char notify_name[64];
	char notify_seen[8192];          /* every datagram received, one per line */
	/* figures */
	int64_t converge_ms, to_warning_ms, to_critical_ms, takeover_ms, handover_ms,
		sigterm_exit_ms, restart_ms;
} fx = { .notify_fd = -1 };

static void kill_all(void)
{
	for (int i = 0; i < MAX_WORKERS; i++)
		if (fx.w[i].pid > 0) {
			tp_kill(fx.w[i].pid);
			fx.w[i].pid = 0;
		}
}

static void on_fatal_signal(int sig)
{
	kill_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ------------------------------------------------------------ config files */

static void conf_path(const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s.conf", fx.dir, name);
}

static void write_conf(const char *name, int threads)
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
		"consumer = { threads = %d; idle_ms = 200; };\n"
		"plugin = { name = \"identity\"; search_path = \"%s/plugins/identity/.libs\"; };\n"
		"s3 = { bucket = \"%s\"; prefix = \"data/\"; compression = \"none\"; buffer_seconds = 1;\n"
		"       content_type = \"application/x-ndjson\"; };\n"
		"credentials = { access_key_id = \"%s\"; secret_access_key = \"%s\"; disable_imds = true; };\n"
		"endpoints = { kinesis = \"%s\"; dynamodb = \"%s\"; s3 = \"%s\"; };\n"
		"http = { connect_timeout_ms = 1000; timeout_ms = 5000; };\n"
		"retry = { max_attempts = 3; };\n"
		"log = { level = \"info\"; file = \"%s/%s.log\"; };\n"
		"metrics = { file = \"%s/%s.prom\"; interval_ms = 1000; };\n"
		"status = { lag_warn_ms = 60000; lag_crit_ms = 120000; unowned_crit_ms = 6000;\n"
		"           intent_stuck_ms = 60000; };\n",
		fx.app, name, fx.stream, fx.dir, name, threads, KL_TEST_BUILDDIR, fx.bucket, fx.env.key_id,
		fx.env.secret, fx.env.kinesis, fx.env.dynamodb, fx.env.s3, fx.dir, name, fx.dir, name);
	CU_ASSERT_FATAL(rc == 0);
}

/* ------------------------------------------------------------ processes */

static struct worker_proc *start_worker(const char *name, bool notify)
{
	char conf[600], out[600];
	char *argv[] = { fx.bin, "run", "-c", conf, NULL };
	struct tp_child c = { .out_path = out, .err_path = out };
	struct worker_proc *wp = NULL;
	pid_t pid;

	for (int i = 0; i < MAX_WORKERS && !wp; i++)
		if (fx.w[i].pid <= 0)
			wp = &fx.w[i];
	CU_ASSERT_FATAL(wp != NULL);
	conf_path(name, conf, sizeof(conf));
	snprintf(out, sizeof(out), "%s/%s.out", fx.dir, name);
	if (notify) {
		c.notify_socket = fx.notify_name;
		c.watchdog_usec = "600000";
	}
	pid = tp_spawn(argv, &c);
	CU_ASSERT_FATAL(pid >= 0);
	snprintf(wp->name, sizeof(wp->name), "%s", name);
	wp->pid = pid;
	tp_step("started %s (pid %ld)", name, (long)pid);
	return wp;
}

static void notify_drain(void);

/* Sends sig; for SIGKILL also reaps. */
static void signal_worker(struct worker_proc *wp, int sig)
{
	CU_ASSERT_FATAL(wp->pid > 0);
	tp_step("%s %s (pid %ld)", sig == SIGKILL ? "SIGKILL" : sig == SIGTERM ? "SIGTERM" : "SIGHUP",
	     wp->name, (long)wp->pid);
	if (sig == SIGKILL) {
		tp_kill(wp->pid);
		wp->pid = 0;
	} else {
		kill(wp->pid, sig);
	}
}

/* Waits up to ms for the worker to exit; returns its exit status, -1 when
 * killed by a signal, -2 on timeout. */
static int wait_worker(struct worker_proc *wp, int64_t ms)
{
	int64_t end = kl_mono_ms() + ms;
	int status;

	while (kl_mono_ms() < end) {
		if (tp_reap(wp->pid, 0, &status)) {
			wp->pid = 0;
			return tp_exit_code(status);
		}
		notify_drain();
		kl_sleep_ms(20);
	}
	return -2;
}

/* Runs kinlake with args; stdout into out. Returns the exit status. */
static int run_kinlake(const char *const *args, char *out, size_t size)
{
	char *argv[16];
	struct tp_child c = { .err_path = "/dev/null" };
	int argc = 0, rc;

	argv[argc++] = fx.bin;
	for (; *args && argc < 15; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	rc = tp_run(argv, out, size, &c);
	CU_ASSERT_FATAL(rc != -2);
	return rc;
}

/* ------------------------------------------------------------ status */

struct fleet {
	int rc;
	json_object *doc;                /* owned; NULL if the output did not parse */
	int shards, active, expired, unowned;
	char owners[4][16];              /* owner of shardId-00..03, "" = none */
	int held[MAX_WORKERS];           /* by fx.w index, live workers only */
	char summary[256];
};

static void fleet_done(struct fleet *f)
{
	json_object_put(f->doc);
	f->doc = NULL;
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return NULL;
	return json_object_get_string(v);
}

/* Runs `kinlake status --json` with name's config. */
static void status_of(const char *name, struct fleet *f)
{
	static char out[256 * 1024];
	char conf[600];
	const char *args[] = { "status", "-c", conf, "--json", NULL };
	json_object *shards, *workers;

	memset(f, 0, sizeof(*f));
	conf_path(name, conf, sizeof(conf));
	f->rc = run_kinlake(args, out, sizeof(out));
	f->doc = json_tokener_parse(out);
	if (!f->doc)
		return;
	snprintf(f->summary, sizeof(f->summary), "%s", jstr(f->doc, "summary") ? jstr(f->doc, "summary") : "");
	if (json_object_object_get_ex(f->doc, "shards", &shards)) {
		f->shards = (int)json_object_array_length(shards);
		for (int i = 0; i < f->shards; i++) {
			json_object *s = json_object_array_get_idx(shards, (size_t)i);
			const char *state = jstr(s, "state"), *owner = jstr(s, "owner");
			const char *id = jstr(s, "shard");

			f->active += state && strcmp(state, "active") == 0;
			f->expired += state && strcmp(state, "expired") == 0;
			f->unowned += state && strcmp(state, "unowned") == 0;
			if (id && strncmp(id, "shardId-00000000000", 19) == 0 && id[19] >= '0' && id[19] <= '3')
				snprintf(f->owners[id[19] - '0'], sizeof(f->owners[0]), "%s", owner ? owner : "");
		}
	}
	if (json_object_object_get_ex(f->doc, "workers", &workers))
		for (size_t i = 0; i < json_object_array_length(workers); i++) {
			json_object *w = json_object_array_get_idx(workers, i), *held, *live;
			const char *id = jstr(w, "worker");

			if (!id || !json_object_object_get_ex(w, "held", &held) ||
			    !json_object_object_get_ex(w, "live", &live) || !json_object_get_boolean(live))
				continue;
			for (int k = 0; k < MAX_WORKERS; k++)
				if (strcmp(fx.w[k].name, id) == 0)
					f->held[k] = json_object_get_int(held);
		}
}

static double sample_sum(const char *text, const char *metric);

/* Polls status until pred holds or ms pass; returns the elapsed ms or -1. */
static int64_t poll_status(const char *name, bool (*pred)(const struct fleet *, void *), void *arg,
			   int64_t ms, struct fleet *last)
{
	int64_t start = kl_mono_ms();

	for (;;) {
		notify_drain();
		status_of(name, last);
		if (pred(last, arg))
			return kl_mono_ms() - start;
		if (kl_mono_ms() - start > ms)
			return -1;
		fleet_done(last);
		kl_sleep_ms(200);
	}
}

static int widx(const struct worker_proc *wp)
{
	return (int)(wp - fx.w);
}

/* ------------------------------------------------------------ notify */

static void notify_open_sock(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	size_t len;

	snprintf(fx.notify_name, sizeof(fx.notify_name), "@kl-integ-daemon-%ld", (long)getpid());
	len = strlen(fx.notify_name);
	memcpy(a.sun_path, fx.notify_name, len);
	a.sun_path[0] = '\0';
	fx.notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CU_ASSERT_FATAL(fx.notify_fd >= 0);
	CU_ASSERT_FATAL(bind(fx.notify_fd, (struct sockaddr *)&a,
			     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == 0);
}

/* Reads every pending datagram into fx.notify_seen. */
static void notify_drain(void)
{
	char msg[1024];
	ssize_t n;

	if (fx.notify_fd < 0)
		return;
	while ((n = recv(fx.notify_fd, msg, sizeof(msg) - 1, MSG_DONTWAIT)) > 0) {
		size_t used = strlen(fx.notify_seen);

		msg[n] = '\0';
		if (used + (size_t)n + 2 < sizeof(fx.notify_seen)) {
			memcpy(fx.notify_seen + used, msg, (size_t)n);
			fx.notify_seen[used + (size_t)n] = '\n';
			fx.notify_seen[used + (size_t)n + 1] = '\0';
		}
	}
}

static bool notify_has(const char *line)
{
	notify_drain();
	return strstr(fx.notify_seen, line) != NULL;
}

/* ------------------------------------------------------------ S3 */

/* Counts each event id "SEED-n", n < total, over every data object. */
static void count_in_s3(int *counts, int total, int *ret_objects)
{
	struct s3_list_opts lo = { .prefix = "data/" };
	struct s3_list_result res;
	struct kl_errinfo info = { 0 };
	char token[1024] = "", needle[32];
	enum kl_err err;
	int objects = 0;

	memset(counts, 0, (size_t)total * sizeof(*counts));
	snprintf(needle, sizeof(needle), "\"event_id\":\"%d-", SEED);
	do {
		memset(&res, 0, sizeof(res));
		lo.continuation_token = token[0] ? token : NULL;
		err = s3_list_objects_v2(&fx.s3c, fx.bucket, &lo, &res, &info);
		tf_report("ListObjectsV2", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		for (size_t i = 0; i < res.n_entries; i++) {
			char *data = NULL;
			size_t len = 0;

			err = s3_get_object(&fx.s3c, fx.bucket, res.entries[i].key, 64 << 20, &data, &len,
					    NULL, &info);
			tf_report("GetObject", err, &info);
			CU_ASSERT_EQUAL_FATAL(err, KL_OK);
			objects++;
			for (const char *p = data; (p = strstr(p, needle)) != NULL; p++) {
				long n = strtol(p + strlen(needle), NULL, 10);

				if (n >= 0 && n < total)
					counts[n]++;
			}
			free(data);
		}
		snprintf(token, sizeof(token), "%s", res.next_continuation_token ? res.next_continuation_token : "");
		s3_list_result_done(&res);
	} while (token[0]);
	*ret_objects = objects;
}

/* Waits until every id < total is in S3 exactly once (or ms pass);
 * returns missing + duplicated. */
static int wait_s3(int total, int64_t ms)
{
	int counts[FIRST_BATCH + SECOND_BATCH], objects, bad = 0;
	int64_t end = kl_mono_ms() + ms;

	for (;;) {
		int missing = 0, dup = 0;

		count_in_s3(counts, total, &objects);
		for (int i = 0; i < total; i++) {
			missing += counts[i] == 0;
			dup += counts[i] > 1;
		}
		bad = missing + dup;
		if (dup)
			fprintf(stderr, "\n  %d ids more than once in S3!\n", dup);
		if (bad == 0 || dup || kl_mono_ms() > end) {
			if (missing && !dup)
				fprintf(stderr, "\n  %d of %d ids not in S3 (%d objects)\n", missing, total, objects);
			return bad;
		}
		kl_sleep_ms(500);
	}
}

static int produce(int from, int count)
{
	char conf[600], sfrom[16], scount[16], seed[16], out[4096];
	const char *args[] = { "demo", "produce", "--stream", fx.stream, "-c", conf, "--count", scount,
			       "--seed", seed, "--ids-from", sfrom, "--quiet", NULL };
	int rc;

	conf_path("w1", conf, sizeof(conf));
	snprintf(sfrom, sizeof(sfrom), "%d", from);
	snprintf(scount, sizeof(scount), "%d", count);
	snprintf(seed, sizeof(seed), "%d", SEED);
	tp_step("producing %d records from id %d", count, from);
	rc = run_kinlake(args, out, sizeof(out));
	tp_step("produced (exit %d)", rc);
	return rc;
}

/* ------------------------------------------------------------ predicates */

static bool pred_both_hold(const struct fleet *f, void *arg)
{
	int *ab = arg;

	return f->rc == 0 && f->active == 4 && f->held[ab[0]] == 2 && f->held[ab[1]] == 2;
}

static bool pred_two_expired(const struct fleet *f, void *arg)
{
	(void)arg;
	return f->rc >= 1 && f->expired == 2 && f->active == 2;
}

static bool pred_rc(const struct fleet *f, void *arg)
{
	return f->rc == *(int *)arg;
}

/* Status 0 with all four shards active and owned by the names in arg. */
static bool pred_owned_by(const struct fleet *f, void *arg)
{
	const char *const *names = arg;

	if (f->rc != 0 || f->active != 4)
		return false;
	for (int i = 0; i < 4; i++) {
		bool ok = false;

		for (const char *const *n = names; *n; n++)
			ok |= strcmp(f->owners[i], *n) == 0;
		if (!ok)
			return false;
	}
	return true;
}

/* ------------------------------------------------------------ the test */

static struct worker_proc *W1, *W2, *W3;

/* Set when test_setup finished: the later tests depend on it and must
 * not run against a half-built fixture. */
static bool setup_done;
#define REQUIRE_SETUP()                                            \
	do {                                                       \
		if (!setup_done) {                                 \
			CU_FAIL("skipped: test_setup failed");     \
			return;                                    \
		}                                                  \
	} while (0)

static void test_setup(void)
{
	struct kl_errinfo info = { 0 };
	enum kl_err err;
	long tag = (long)getpid();

	tf_env_read(&fx.env);
	CU_ASSERT_FATAL(tf_program("KL_TEST_KINLAKE", KL_TEST_BUILDDIR "/kinlake", fx.bin, sizeof(fx.bin)));
	CU_ASSERT_FATAL(tf_make_dir("integ-daemon", fx.dir, sizeof(fx.dir)));
	snprintf(fx.app, sizeof(fx.app), "kl-daemon-%ld", tag);
	snprintf(fx.stream, sizeof(fx.stream), "kl-daemon-%ld", tag);
	snprintf(fx.bucket, sizeof(fx.bucket), "kl-daemon-%ld", tag);
	CU_ASSERT_FATAL(tf_aws_init(&fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.kc, "kinesis", fx.env.kinesis, fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.s3c, "s3", fx.env.s3, fx.creds) == KL_OK);
	err = kinesis_create_stream(&fx.kc, fx.stream, 4, &info);
	tf_report("CreateStream", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	err = kinesis_wait_active(&fx.kc, fx.stream, 30000, NULL, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	err = s3_create_bucket(&fx.s3c, fx.bucket, &info);
	tf_report("CreateBucket", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	write_conf("w1", 2);
	write_conf("w2", 2);
	write_conf("w3", 4);
	CU_ASSERT_EQUAL_FATAL(produce(0, FIRST_BATCH), 0);
	notify_open_sock();
	setup_done = true;
}

static void test_two_workers_share_the_stream(void)
{
	struct fleet f;
	int ab[2];
	int64_t t0 = kl_mono_ms();

	REQUIRE_SETUP();
	W1 = start_worker("w1", false);
	W2 = start_worker("w2", true);
	ab[0] = widx(W1);
	ab[1] = widx(W2);
	fx.converge_ms = poll_status("w1", pred_both_hold, ab, 30000, &f);
	if (fx.converge_ms < 0)
		fprintf(stderr, "\n  last status %d: %s\n", f.rc, f.summary);
	CU_ASSERT_FATAL(fx.converge_ms >= 0);
	fx.converge_ms = kl_mono_ms() - t0;
	CU_ASSERT_EQUAL(f.rc, 0);
	CU_ASSERT_EQUAL(f.shards, 4);
	CU_ASSERT(strncmp(f.summary, "OK: 4 shards", 12) == 0);
	fleet_done(&f);
	/* systemd protocol, from w2. */
	for (int i = 0; i < 30 && !notify_has("WATCHDOG=1"); i++)
		kl_sleep_ms(100);
	CU_ASSERT_TRUE(notify_has("READY=1"));
	CU_ASSERT_TRUE(notify_has("STATUS="));
	CU_ASSERT_TRUE(notify_has("WATCHDOG=1"));
	CU_ASSERT_FALSE(notify_has("STOPPING=1"));
}

static void test_records_reach_s3_once(void)
{
	REQUIRE_SETUP();
	CU_ASSERT_EQUAL(wait_s3(FIRST_BATCH, 30000), 0);
}

static double sample_sum(const char *text, const char *metric)
{
	double sum = 0;
	size_t n = strlen(metric);

	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, metric, n) == 0 && (p[n] == '{' || p[n] == ' ')) {
			const char *v = strchr(p, '}') ? strchr(p, '}') + 1 : p + n;

			sum += strtod(v, NULL);
		}
	return sum;
}

static void test_metrics_files(void)
{
	double records_in = 0;

	REQUIRE_SETUP();
	/* Let both files be rewritten after the last upload. */
	kl_sleep_ms(2500);
	for (int k = 0; k < 2; k++) {
		const struct worker_proc *wp = k ? W2 : W1;
		char path[600], held[96];
		static struct promcheck pc;
		size_t len;
		char *text;

		snprintf(path, sizeof(path), "%s/%s.prom", fx.dir, wp->name);
		text = tp_read_file(path, (4 << 20) - 1, &len);
		CU_ASSERT_FATAL(text != NULL);
		if (!promcheck_run(&pc, text, len))
			fprintf(stderr, "\n  %s: %s\n", path, pc.error);
		CU_ASSERT_STRING_EQUAL(pc.error, "");
		CU_ASSERT(pc.samples > 50);
		promcheck_done(&pc);
		snprintf(held, sizeof(held), "kinlake_leases_held{worker=\"%s\"} 2\n", wp->name);
		CU_ASSERT_PTR_NOT_NULL(strstr(text, held));
		CU_ASSERT_PTR_NOT_NULL(strstr(text, "kinlake_shard_records_in_total{worker="));
		CU_ASSERT_PTR_NOT_NULL(strstr(text, "service=\"dynamodb\""));
		CU_ASSERT(sample_sum(text, "kinlake_objects_uploaded_total") >= 1);
		records_in += sample_sum(text, "kinlake_records_in_total");
		free(text);
	}
	/* Each record went into a batch once: no failover has happened yet. */
	CU_ASSERT_EQUAL((int)records_in, FIRST_BATCH);
}

static void test_sighup_reopens_log(void)
{
	char log[600], old[600];
	size_t len = 0;
	char *text = NULL;

	REQUIRE_SETUP();
	snprintf(log, sizeof(log), "%s/w1.log", fx.dir);
	snprintf(old, sizeof(old), "%s/w1.log.1", fx.dir);
	CU_ASSERT_FATAL(rename(log, old) == 0);
	signal_worker(W1, SIGHUP);
	for (int i = 0; i < 50; i++) {
		free(text);
		text = tp_read_file(log, (4 << 20) - 1, &len);
		if (text && strstr(text, "log file reopened"))
			break;
		kl_sleep_ms(100);
	}
	CU_ASSERT(text && strstr(text, "kinlake: SIGHUP: log file reopened"));
	free(text);
}

static void test_kill9_then_takeover(void)
{
	static const char *const w2w3[] = { "w2", "w3", NULL };
	struct fleet f;
	int one = 1, two = 2;
	int64_t t0, t3;

	REQUIRE_SETUP();
	t0 = kl_mono_ms();
	signal_worker(W1, SIGKILL);
	/* w2 is at its cap of 2 threads: w1's shards stay without an owner. */
	fx.to_warning_ms = poll_status("w2", pred_rc, &one, 10000, &f);
	CU_ASSERT_FATAL(fx.to_warning_ms >= 0);
	fx.to_warning_ms = kl_mono_ms() - t0;
	tp_step("status 1: %d expired, %d active: %s", f.expired, f.active, f.summary);
	CU_ASSERT(f.expired >= 1);
	CU_ASSERT_EQUAL(f.expired + f.active, 4);
	fleet_done(&f);
	CU_ASSERT(poll_status("w2", pred_two_expired, NULL, 5000, &f) >= 0);
	fleet_done(&f);
	fx.to_critical_ms = poll_status("w2", pred_rc, &two, 15000, &f);
	CU_ASSERT_FATAL(fx.to_critical_ms >= 0);
	fx.to_critical_ms = kl_mono_ms() - t0;
	CU_ASSERT(strstr(f.summary, "no live owner") != NULL);
	/* unowned_crit_ms (6 s) counts from the last renewal, which was at
	 * most a renew interval (failover / 3) before the kill. */
	CU_ASSERT(fx.to_critical_ms >= 6000 - 700);
	fleet_done(&f);
	/* A replacement worker takes them over. */
	t3 = kl_mono_ms();
	W3 = start_worker("w3", false);
	fx.takeover_ms = poll_status("w2", pred_owned_by, (void *)w2w3, 20000, &f);
	if (fx.takeover_ms < 0)
		fprintf(stderr, "\n  last status %d: %s\n", f.rc, f.summary);
	CU_ASSERT_FATAL(fx.takeover_ms >= 0);
	fx.takeover_ms = kl_mono_ms() - t3;
	fleet_done(&f);
	CU_ASSERT_EQUAL(produce(FIRST_BATCH, SECOND_BATCH / 2), 0);
}

static void test_sigterm_hands_over(void)
{
	static const char *const w3only[] = { "w3", NULL };
	struct fleet f;
	char path[600];
	size_t len;
	char *log;
	int64_t t0 = kl_mono_ms();
	int rc;

	REQUIRE_SETUP();
	signal_worker(W2, SIGTERM);
	fx.handover_ms = poll_status("w3", pred_owned_by, (void *)w3only, 20000, &f);
	if (fx.handover_ms < 0)
		fprintf(stderr, "\n  last status %d: %s\n", f.rc, f.summary);
	CU_ASSERT(fx.handover_ms >= 0);
	fx.handover_ms = kl_mono_ms() - t0;
	fleet_done(&f);
	rc = wait_worker(W2, 15000);
	fx.sigterm_exit_ms = kl_mono_ms() - t0;
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT_TRUE(notify_has("STOPPING=1"));
	snprintf(path, sizeof(path), "%s/w2.log", fx.dir);
	log = tp_read_file(path, (4 << 20) - 1, &len);
	CU_ASSERT_FATAL(log != NULL);
	CU_ASSERT_PTR_NOT_NULL(strstr(log, "kinlake: SIGTERM: stopping"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, "released"));
	CU_ASSERT_PTR_NOT_NULL(strstr(log, "kinlake: worker 'w2' stopped"));
	/* One line per event, module first; never a secret. */
	CU_ASSERT_PTR_NULL(strstr(log, fx.env.secret));
	free(log);
	/* Handover means "within a few seconds", not after the failover. */
	CU_ASSERT(fx.handover_ms < 10000);
}

static void test_kill9_and_restart(void)
{
	static const char *const w3only[] = { "w3", NULL };
	struct fleet f;
	char path[600];
	int64_t kill_wall = kl_wall_ms(), t0 = kl_mono_ms();
	bool running = false;

	REQUIRE_SETUP();
	/* The same worker id comes back at once (systemd's Restart=): the
	 * table cannot tell it from the dead process, so status alone says 0
	 * all along; what counts is when the new process runs every shard,
	 * which its metrics file tells. */
	signal_worker(W3, SIGKILL);
	W3 = start_worker("w3", false);
	snprintf(path, sizeof(path), "%s/w3.prom", fx.dir);
	while (!running && kl_mono_ms() - t0 < 30000) {
		size_t len;
		char *text = tp_read_file(path, (4 << 20) - 1, &len);

		running = text && sample_sum(text, "kinlake_start_time_seconds") * 1000 >= (double)kill_wall &&
			  sample_sum(text, "kinlake_leases_processing") == 4;
		free(text);
		if (!running)
			kl_sleep_ms(100);
	}
	CU_ASSERT_FATAL(running);
	CU_ASSERT_FATAL(poll_status("w3", pred_owned_by, (void *)w3only, 10000, &f) >= 0);
	fx.restart_ms = kl_mono_ms() - t0;
	fleet_done(&f);
	/* Not before the old process's leases could have expired. */
	CU_ASSERT(fx.restart_ms >= 2000);
	CU_ASSERT_EQUAL(produce(FIRST_BATCH + SECOND_BATCH / 2, SECOND_BATCH / 2), 0);
}

static void test_everything_once_and_leases_released(void)
{
	struct fleet f;

	REQUIRE_SETUP();
	CU_ASSERT_EQUAL(wait_s3(FIRST_BATCH + SECOND_BATCH, 30000), 0);
	signal_worker(W3, SIGTERM);
	CU_ASSERT_EQUAL(wait_worker(W3, 15000), 0);
	status_of("w3", &f);
	/* Released, not expired: nobody owns anything, nobody is alive. */
	CU_ASSERT_EQUAL(f.rc, 2);
	CU_ASSERT_EQUAL(f.unowned, 4);
	CU_ASSERT(strstr(f.summary, "no live worker") != NULL);
	fleet_done(&f);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_setup),
		KL_TEST(test_two_workers_share_the_stream),
		KL_TEST(test_records_reach_s3_once),
		KL_TEST(test_metrics_files),
		KL_TEST(test_sighup_reopens_log),
		KL_TEST(test_kill9_then_takeover),
		KL_TEST(test_sigterm_hands_over),
		KL_TEST(test_kill9_and_restart),
		KL_TEST(test_everything_once_and_leases_released),
		{ NULL, NULL },
	};
	int rc;

	kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	kl_test_env_or_skip("KL_TEST_EMU_DIR");
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	atexit(kill_all);
	rc = kl_test_run("daemon", t);
	kill_all();
	printf("figures: both workers holding leases, status 0: %" PRId64 " ms after start\n"
	       "figures: kill -9 -> status 1 (expired): %" PRId64 " ms, -> status 2: %" PRId64 " ms\n"
	       "figures: replacement worker -> status 0: %" PRId64 " ms after its start\n"
	       "figures: SIGTERM -> leases taken by the other worker (status 0): %" PRId64
	       " ms; worker exited after %" PRId64 " ms\n"
	       "figures: kill -9 + immediate restart -> status 0: %" PRId64 " ms\n",
	       fx.converge_ms, fx.to_warning_ms, fx.to_critical_ms, fx.takeover_ms, fx.handover_ms,
	       fx.sigterm_exit_ms, fx.restart_ms);
	if (fx.notify_fd >= 0)
		close(fx.notify_fd);
	aws_client_done(&fx.kc);
	aws_client_done(&fx.s3c);
	tf_aws_done(fx.creds);
	return rc;
}
