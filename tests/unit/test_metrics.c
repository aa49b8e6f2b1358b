/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_metrics.c: the Prometheus textfile writer. The rendered text is
 * judged by tests/promcheck.h (written apart from the writer): every
 * sample has HELP and TYPE, names and labels are valid, label values are
 * escaped and round-trip through the parser; the file is replaced
 * atomically (a concurrent reader only ever sees a whole version, a failed
 * write leaves the old file and no temp file behind).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "metrics.h"
#include "promcheck.h"
#include "testutil.h"

static char tmpdir[64];

/* A snapshot with two shards, one with every character that needs escaping. */
static void sample_snapshot(struct metrics_snapshot *s, struct metrics_shard shards[2])
{
	memset(s, 0, sizeof(*s));
	memset(shards, 0, 2 * sizeof(shards[0]));
	shards[0].shard_id = "shardId-000000000000";
	shards[0].state = "processing";
	shards[0].millis_behind_latest = 1200;
	shards[0].lag_ms = 4500;
	shards[0].last_commit_wall_ms = 1795000000123;
	shards[0].flow.records_read = 10;
	shards[0].flow.records_in = 12;
	shards[0].flow.objects_uploaded = 3;
	shards[0].flow.agg_updates = 7;
	shards[1].shard_id = "odd \"shard\"\\with\nnewline";
	shards[1].state = "waiting-on-parents";
	shards[1].millis_behind_latest = -1;
	shards[1].lag_ms = -1;
	shards[1].blocked = true;
	s->worker_id = "host-a";
	s->version = "0.1.0";
	s->start_wall_ms = 1795000000000;
	s->ready = true;
	s->leases_held = 2;
	s->leases_target = 2;
	s->live_workers = 2;
	s->leases_taken = 5;
	s->leases_stolen = 1;
	s->leases_lost = 1;
	s->total.records_in = 12;
	s->total.agg_updates = 7;
	s->aws[METRICS_SVC_KINESIS] = (struct metrics_aws){ 40, 1, 2, 3, true, false };
	s->aws[METRICS_SVC_S3] = (struct metrics_aws){ 6, 0, 0, 1, true, false };
	s->aws[METRICS_SVC_DYNAMODB] = (struct metrics_aws){ 90, 2, 0, 0, true, true };
	s->shards = shards;
	s->n_shards = 2;
}

static void render(const struct metrics_snapshot *s, struct buf *out)
{
	buf_init(out, 0);
	CU_ASSERT_EQUAL_FATAL(metrics_render(s, out), KL_OK);
	CU_ASSERT_FATAL(out->len > 0);
}

static void test_render_is_valid_prometheus(void)
{
	struct metrics_snapshot s;
	struct metrics_shard shards[2];
	struct buf out;
	static struct promcheck pc;

	sample_snapshot(&s, shards);
	render(&s, &out);
	if (!promcheck_run(&pc, out.data, out.len))
		fprintf(stderr, "\n  %s\n", pc.error);
	CU_ASSERT_STRING_EQUAL(pc.error, "");
	/* Every family is counter or gauge with both lines; a good number of them. */
	CU_ASSERT(pc.families >= 30);
	CU_ASSERT(pc.samples >= 60);
	promcheck_done(&pc);
	buf_done(&out);
}

static void test_expected_samples(void)
{
	struct metrics_snapshot s;
	struct metrics_shard shards[2];
	struct buf out;

	sample_snapshot(&s, shards);
	render(&s, &out);
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "# TYPE kinlake_leases_held gauge\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "kinlake_leases_held{worker=\"host-a\"} 2\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "kinlake_leases_stolen_total{worker=\"host-a\"} 1\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_shard_millis_behind_latest{worker=\"host-a\",shard=\"shardId-000000000000\"} 1200\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_shard_lag_ms{worker=\"host-a\",shard=\"shardId-000000000000\"} 4500\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_shard_last_commit_timestamp_seconds{worker=\"host-a\",shard=\"shardId-000000000000\"} 1795000000.123\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_aws_calls_total{worker=\"host-a\",service=\"dynamodb\"} 90\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_aws_throttles_total{worker=\"host-a\",service=\"kinesis\"} 2\n"));
	/* Unknown values leave no sample: no lag for the second shard, no
	 * retries for DynamoDB (counted from outside its client). */
	CU_ASSERT_PTR_NULL(strstr(out.data, "kinlake_shard_lag_ms{worker=\"host-a\",shard=\"odd"));
	CU_ASSERT_PTR_NULL(strstr(out.data, "kinlake_aws_retries_total{worker=\"host-a\",service=\"dynamodb\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "kinlake_aws_retries_total{worker=\"host-a\",service=\"s3\"} 1\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_shard_consumer_state{worker=\"host-a\",shard=\"shardId-000000000000\",state=\"processing\"} 1\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_shard_aggregate_updates_total{worker=\"host-a\",shard=\"shardId-000000000000\"} 7\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "kinlake_aggregate_updates_total{worker=\"host-a\"} 7\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "kinlake_aggregate_failures_total{worker=\"host-a\"} 0\n"));
	buf_done(&out);
}

static void test_label_escaping(void)
{
	struct metrics_snapshot s;
	struct metrics_shard shards[2];
	struct buf out, esc;

	buf_init(&esc, 0);
	CU_ASSERT_EQUAL(metrics_escape_label(&esc, "a\"b\\c\nd"), KL_OK);
	CU_ASSERT_STRING_EQUAL(esc.data, "a\\\"b\\\\c\\nd");
	buf_done(&esc);

	sample_snapshot(&s, shards);
	render(&s, &out);
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data,
		"kinlake_shard_blocked{worker=\"host-a\",shard=\"odd \\\"shard\\\"\\\\with\\nnewline\"} 1\n"));
	/* No raw newline inside a sample line: every line is a comment or
	 * starts with the prefix. */
	for (const char *p = out.data; *p; p = strchr(p, '\n') + 1)
		CU_ASSERT(*p == '#' || strncmp(p, "kinlake_", 8) == 0);
	buf_done(&out);
}

struct found {
	int shard_blocked_odd;
	int samples;
};

static void on_sample(void *ctx, const struct metrics_sample *s)
{
	struct found *f = ctx;
	const char *shard = metrics_sample_label(s, "shard");

	f->samples++;
	if (strcmp(s->name, "kinlake_shard_blocked") == 0 && shard &&
	    strcmp(shard, "odd \"shard\"\\with\nnewline") == 0 && s->value == 1)
		f->shard_blocked_odd++;
}

static void test_roundtrip_through_parser(void)
{
	struct metrics_snapshot s;
	struct metrics_shard shards[2];
	struct buf out;
	struct found f = { 0 };
	struct kl_errinfo info = { 0 };
	static struct promcheck pc;

	sample_snapshot(&s, shards);
	render(&s, &out);
	CU_ASSERT_EQUAL(metrics_parse(out.data, out.len, on_sample, &f, &info), KL_OK);
	CU_ASSERT_EQUAL(f.shard_blocked_odd, 1);
	CU_ASSERT(promcheck_run(&pc, out.data, out.len));
	CU_ASSERT_EQUAL((size_t)f.samples, pc.samples);
	promcheck_done(&pc);
	buf_done(&out);
}

static void test_checker_rejects(void)
{
	/* The checker must be able to fail, or the tests above prove nothing. */
	static const char *const bad[] = {
		"kinlake_x 1\n",                                                   /* no HELP/TYPE */
		"# HELP kinlake_x h\nkinlake_x 1\n",                               /* no TYPE */
		"# HELP kinlake_x_total h\n# TYPE kinlake_x_total counter\nkinlake_x_total -1\n",
		"# HELP kinlake_x h\n# TYPE kinlake_x counter\nkinlake_x 1\n",     /* counter not _total */
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x{a=\"b\\q\"} 1\n",
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x{a=\"b\",a=\"c\"} 1\n",
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x{__a=\"b\"} 1\n",
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x 1\nkinlake_x 2\n",
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x 1 1700000000000\n",
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x 1",       /* no final newline */
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\n# HELP kinlake_y h\n# TYPE kinlake_y gauge\n"
		"kinlake_y 1\nkinlake_x 1\n",                                      /* not contiguous */
		"# HELP x h\n# TYPE x gauge\nx 1\n",                               /* no prefix */
		"# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x{a=\"b\"} abc\n",
	};
	static struct promcheck pc;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool ok = promcheck_run(&pc, bad[i], strlen(bad[i]));

		if (ok)
			fprintf(stderr, "\n  accepted: %s\n", bad[i]);
		CU_ASSERT_FALSE(ok);
		promcheck_done(&pc);
	}
	CU_ASSERT_TRUE(promcheck_run(&pc, "# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x{a=\"\\\"\"} 1\n",
				     strlen("# HELP kinlake_x h\n# TYPE kinlake_x gauge\nkinlake_x{a=\"\\\"\"} 1\n")));
	promcheck_done(&pc);
}

static void test_names(void)
{
	CU_ASSERT_TRUE(metrics_name_valid("kinlake_x"));
	CU_ASSERT_TRUE(metrics_name_valid("a:b_c9"));
	CU_ASSERT_TRUE(metrics_name_valid("_x"));
	CU_ASSERT_FALSE(metrics_name_valid("9x"));
	CU_ASSERT_FALSE(metrics_name_valid("a-b"));
	CU_ASSERT_FALSE(metrics_name_valid(""));
	CU_ASSERT_TRUE(metrics_label_name_valid("shard"));
	CU_ASSERT_TRUE(metrics_label_name_valid("_x1"));
	CU_ASSERT_FALSE(metrics_label_name_valid("__name"));
	CU_ASSERT_FALSE(metrics_label_name_valid("a:b"));
	CU_ASSERT_FALSE(metrics_label_name_valid("1a"));
}

static void test_parse_rejects_and_accepts(void)
{
	struct found f = { 0 };
	struct kl_errinfo info = { 0 };
	const char *good = "# a comment\n\nkinlake_a 1\nkinlake_b{x=\"y\",} NaN\nkinlake_c +Inf 123\n";
	const char *bad[] = { "kinlake_a\n", "kinlake_a{x=y} 1\n", "kinlake_a{x=\"y} 1\n",
			      "kinlake_a 1 2 3\n", "# TYPE kinlake_a bogus\n", "kinlake_a{x=\"\\t\"} 1\n" };

	CU_ASSERT_EQUAL(metrics_parse(good, strlen(good), on_sample, &f, &info), KL_OK);
	CU_ASSERT_EQUAL(f.samples, 3);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CU_ASSERT_EQUAL(metrics_parse(bad[i], strlen(bad[i]), on_sample, &f, &info), KL_EPARSE);
}

/* Files in tmpdir other than name. */
static int other_files(const char *name)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, name))
			n++;
	closedir(d);
	return n;
}

static char *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "r");
	char *data = NULL;
	size_t len = 0, alloc = 0, n;

	if (!f)
		return NULL;
	do {
		if (alloc - len < 65536) {
			char *nd = realloc(data, alloc + 262144);

			if (!nd)
				break;
			data = nd;
			alloc += 262144;
		}
		n = fread(data + len, 1, alloc - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	*ret_len = len;
	return data;
}

static void test_atomic_write(void)
{
	char path[128];
	struct kl_errinfo info = { 0 };
	struct stat st1, st2;
	mode_t old_mask;
	size_t len;
	char *got;

	snprintf(path, sizeof(path), "%s/kinlake.prom", tmpdir);
	CU_ASSERT_EQUAL_FATAL(metrics_write_file(path, "one\n", 4, &info), KL_OK);
	CU_ASSERT_EQUAL(stat(path, &st1), 0);
	CU_ASSERT_EQUAL(st1.st_mode & 0777, 0644);
	/* The units' UMask=0027 must not hide the file from the collector. */
	old_mask = umask(027);
	CU_ASSERT_EQUAL(metrics_write_file(path, "two!\n", 5, &info), KL_OK);
	umask(old_mask);
	CU_ASSERT_EQUAL(stat(path, &st2), 0);
	CU_ASSERT_EQUAL(st2.st_mode & 0777, 0644);
	/* Replaced by rename (a new inode), not rewritten in place. */
	CU_ASSERT_NOT_EQUAL(st1.st_ino, st2.st_ino);
	got = slurp(path, &len);
	CU_ASSERT_FATAL(got != NULL);
	CU_ASSERT_EQUAL(len, 5);
	CU_ASSERT_EQUAL(memcmp(got, "two!\n", 5), 0);
	free(got);
	CU_ASSERT_EQUAL(other_files("kinlake.prom"), 0);
	/* A directory that does not exist: an error, nothing created. */
	snprintf(path, sizeof(path), "%s/missing/kinlake.prom", tmpdir);
	CU_ASSERT_EQUAL(metrics_write_file(path, "x\n", 2, &info), KL_EIO);
	CU_ASSERT(strstr(info.message, "missing") != NULL);
	CU_ASSERT_EQUAL(other_files("kinlake.prom"), 0);
}

/* A write that fails half-way (file size limit) keeps the old file whole
 * and leaves no temp file behind. In a child: the limit is per process. */
static void test_failed_write_keeps_old_file(void)
{
	char path[128];
	struct kl_errinfo info = { 0 };
	size_t big = 256 * 1024, len;
	char *text = malloc(big), *got;
	pid_t pid;
	int status;

	CU_ASSERT_FATAL(text != NULL);
	memset(text, 'x', big);
	text[big - 1] = '\n';
	snprintf(path, sizeof(path), "%s/kinlake.prom", tmpdir);
	CU_ASSERT_EQUAL_FATAL(metrics_write_file(path, "old\n", 4, &info), KL_OK);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { 65536, 65536 };

		int failed;

		signal(SIGXFSZ, SIG_IGN);
		setrlimit(RLIMIT_FSIZE, &rl);
		failed = metrics_write_file(path, text, big, &info) != KL_OK;
		free(text);
		_exit(failed ? 0 : 1);
	}
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	got = slurp(path, &len);
	CU_ASSERT_FATAL(got != NULL);
	CU_ASSERT_EQUAL(len, 4);
	CU_ASSERT_EQUAL(memcmp(got, "old\n", 4), 0);
	free(got);
	CU_ASSERT_EQUAL(other_files("kinlake.prom"), 0);
	free(text);
}

/* A reader racing a writer sees one whole version or the other, never a
 * mix or a truncated file. */
static void test_concurrent_reader_sees_whole_files(void)
{
	char path[128];
	size_t big = 512 * 1024;
	char *a = malloc(big), *b = malloc(big);
	pid_t pid;
	int status, reads = 0, partial = 0;

	CU_ASSERT_FATAL(a && b);
	memset(a, 'a', big);
	memset(b, 'b', big);
	a[big - 1] = b[big - 1] = '\n';
	snprintf(path, sizeof(path), "%s/race.prom", tmpdir);
	CU_ASSERT_EQUAL_FATAL(metrics_write_file(path, a, big, NULL), KL_OK);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		int rc = 0;

		for (int i = 0; i < 60 && !rc; i++)
			rc = metrics_write_file(path, i % 2 ? a : b, big, NULL) != KL_OK;
		free(a);
		free(b);
		_exit(rc);
	}
	for (;;) {
		size_t len;
		char *got = slurp(path, &len);

		reads++;
		if (!got || len != big || (got[0] != 'a' && got[0] != 'b') ||
		    memcmp(got, got[0] == 'a' ? a : b, big) != 0)
			partial++;
		free(got);
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
	}
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CU_ASSERT(reads > 1);
	CU_ASSERT_EQUAL(partial, 0);
	unlink(path);
	CU_ASSERT_EQUAL(other_files("kinlake.prom"), 0);
	free(a);
	free(b);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_render_is_valid_prometheus),
		KL_TEST(test_expected_samples),
		KL_TEST(test_label_escaping),
		KL_TEST(test_roundtrip_through_parser),
		KL_TEST(test_checker_rejects),
		KL_TEST(test_names),
		KL_TEST(test_parse_rejects_and_accepts),
		KL_TEST(test_atomic_write),
		KL_TEST(test_failed_write_keeps_old_file),
		KL_TEST(test_concurrent_reader_sees_whole_files),
		{ NULL, NULL },
	};
	char path[128];
	int rc;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kl-test-metrics-XXXXXX");
	if (!mkdtemp(tmpdir))
		return 1;
	rc = kl_test_run("metrics", t);
	snprintf(path, sizeof(path), "%s/kinlake.prom", tmpdir);
	unlink(path);
	rmdir(tmpdir);
	return rc;
}
