/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_demo.c: runs the real `kinlake demo produce` binary against
 * kinesalite (tests/emu/emulators.sh exports KL_TEST_KINESIS_ENDPOINT and
 * the keys; without them this exits 77), then reads every shard back with
 * kinlake's Kinesis client and the consumer's KPL decoder (filtering by
 * the shard's hash range, as the consumer does) and checks that every
 * event id is there exactly once and that per-key order holds, comparing
 * with the same events regenerated in-process. Runs: plain records, KPL
 * aggregates, and a config-file run stopped with SIGTERM.
 * The binary is $KL_TEST_KINLAKE, else the build tree's kinlake.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aws.h"
#include "buf.h"
#include "creds.h"
#include "demo.h"
#include "fixture.h"
#include "proc.h"
#include "http.h"
#include "kinesis.h"
#include "kpl.h"
#include "testutil.h"
#include "util.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

static struct {
	const char *endpoint;
	const char *key_id;
	const char *secret;
	char bin[4096];
	char tmp[64];
	struct creds_chain *creds;
	struct aws_client c;
	char run_id[32];
} fx;

static int setup(void)
{
	const char *bin = getenv("KL_TEST_KINLAKE");

	fx.endpoint = kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	fx.key_id = kl_test_env_or_skip("KL_TEST_ACCESS_KEY_ID");
	fx.secret = kl_test_env_or_skip("KL_TEST_SECRET_ACCESS_KEY");
	snprintf(fx.bin, sizeof(fx.bin), "%s", bin && *bin ? bin : KL_TEST_BUILDDIR "/kinlake");
	if (access(fx.bin, X_OK) != 0) {
		fprintf(stderr, "integ_demo: %s is not executable: %s\n", fx.bin, strerror(errno));
		return -1;
	}
	snprintf(fx.tmp, sizeof(fx.tmp), "/tmp/kl-integ-demo-XXXXXX");
	if (!mkdtemp(fx.tmp))
		return -1;
	snprintf(fx.run_id, sizeof(fx.run_id), "%ld-%" PRId64, (long)getpid(), kl_mono_ms() % 100000);
	if (tf_aws_init(&fx.creds) != KL_OK)
		return -1;
	return tf_client_init(&fx.c, "kinesis", fx.endpoint, fx.creds) == KL_OK ? 0 : -1;
}

static void teardown(void)
{
	char path[128];
	const char *files[] = { "plain.manifest", "kpl.manifest", "term.manifest", "demo.conf" };

	for (size_t i = 0; i < KL_ARRAY_LEN(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", fx.tmp, files[i]);
		unlink(path);
	}
	rmdir(fx.tmp);
	aws_client_done(&fx.c);
	tf_aws_done(fx.creds);
}

/* ------------------------------------------------------------ the binary */

/* argv for kinlake with args (NULL-terminated, without the program name) */
static void make_argv(const char *const *args, char **argv, size_t cap)
{
	size_t argc = 0;

	argv[argc++] = fx.bin;
	for (; *args && argc + 1 < cap; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
}

/* The standard credential chain, from the environment. */
static const struct tp_child *child_opts(void)
{
	static struct tp_child c;

	c = (struct tp_child){ .aws_key_id = fx.key_id, .aws_secret = fx.secret };
	return &c;
}

/* Starts kinlake with args; its stdout goes to *ret_fd, its stderr to ours. */
static pid_t spawn(const char *const *args, int *ret_fd)
{
	struct tp_child c = *child_opts();
	char *argv[48];
	int p[2];
	pid_t pid;

	make_argv(args, argv, KL_ARRAY_LEN(argv));
	CU_ASSERT_FATAL(pipe2(p, O_CLOEXEC) == 0);
	c.out_fd = p[1];
	pid = tp_spawn(argv, &c);
	close(p[1]);
	CU_ASSERT_FATAL(pid >= 0);
	*ret_fd = p[0];
	return pid;
}

/* Reads fd to its end into out, waits for pid; returns the exit status
 * (-1 when killed by a signal). */
static int finish(pid_t pid, int fd, char *out, size_t size)
{
	size_t used = 0;
	ssize_t n;
	int status;

	while (used + 1 < size && (n = read(fd, out + used, size - 1 - used)) > 0)
		used += (size_t)n;
	out[used] = '\0';
	close(fd);
	CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
	return tp_exit_code(status);
}

static int run(const char *const *args, char *out, size_t size)
{
	char *argv[48];
	int rc;

	make_argv(args, argv, KL_ARRAY_LEN(argv));
	rc = tp_run(argv, out, size, child_opts());
	CU_ASSERT_FATAL(rc != -2);
	return rc;
}

/* The value of key=... in the stdout summary line, or "" */
static const char *field(const char *line, const char *key, char *val, size_t size)
{
	size_t kl = strlen(key);

	val[0] = '\0';
	for (const char *p = line; (p = strstr(p, key)) != NULL; p += kl) {
		if ((p == line || p[-1] == ' ') && p[kl] == '=') {
			size_t n = strcspn(p + kl + 1, " \n");

			snprintf(val, size, "%.*s", (int)n, p + kl + 1);
			break;
		}
	}
	return val;
}

static uint64_t field_u64(const char *line, const char *key)
{
	char v[64];

	return strtoull(field(line, key, v, sizeof(v)), NULL, 10);
}

/* ------------------------------------------------------------ reading back */

struct seen {
	uint64_t n;
	char key[DEMO_KEY_MAX];
	size_t order;
	bool aggregated;
};

struct readback {
	struct seen *v;
	size_t n, alloc;
	size_t aggregates;
	size_t filtered;
	size_t kinesis_records;
	size_t bad;                   /* user records without a parseable id */
};

/* The n of "event_id":"<seed>-<n>" in data, or -1. */
static int64_t event_n(const uint8_t *data, size_t len, uint64_t seed)
{
	static const char needle[] = "\"event_id\":\"";
	char prefix[40];
	size_t nl = sizeof(needle) - 1, pl;

	pl = (size_t)snprintf(prefix, sizeof(prefix), "%" PRIu64 "-", seed);
	for (size_t i = 0; i + nl + pl < len; i++) {
		uint64_t v = 0;
		size_t j;

		if (memcmp(data + i, needle, nl) != 0)
			continue;
		if (memcmp(data + i + nl, prefix, pl) != 0)
			return -1;
		for (j = i + nl + pl; j < len && data[j] >= '0' && data[j] <= '9'; j++)
			v = v * 10 + (uint64_t)(data[j] - '0');
		return j < len && data[j] == '"' && j > i + nl + pl ? (int64_t)v : -1;
	}
	return -1;
}

static void read_stream(const char *stream, uint64_t seed, struct readback *rb)
{
	struct kinesis_shard *shards = NULL;
	struct kpl_decoder *dec = NULL;
	struct kl_errinfo info;
	size_t nshards = 0;

	memset(rb, 0, sizeof(*rb));
	CU_ASSERT_EQUAL_FATAL(kpl_decoder_new(NULL, &dec), KL_OK);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(kinesis_list_shards(&fx.c, stream, NULL, &shards, &nshards, &info),
			      KL_OK);
	for (size_t s = 0; s < nshards; s++) {
		struct kinesis_position pos = { .type = KINESIS_ITER_TRIM_HORIZON };
		struct kpl_hash_range range;
		char *iter = NULL;
		int calls = 0;

		CU_ASSERT_FATAL(kpl_hash_range_parse(shards[s].starting_hash_key,
						     shards[s].ending_hash_key, NULL, &range) == KL_OK);
		{
			enum kl_err e = kinesis_get_shard_iterator(&fx.c, stream, shards[s].shard_id, &pos,
								   &iter, &info);

			tf_report("GetShardIterator", e, &info);
			CU_ASSERT_EQUAL_FATAL(e, KL_OK);
		}
		while (iter && calls++ < 1000) {
			struct kinesis_records *r = NULL;
			enum kl_err e = kinesis_get_records(&fx.c, iter, 10000, &r, &info);
			bool done;

			tf_report("GetRecords", e, &info);
			CU_ASSERT_EQUAL_FATAL(e, KL_OK);
			for (size_t i = 0; i < r->n_records; i++) {
				const struct kinesis_record *kr = &r->records[i];
				struct kpl_result res;

				rb->kinesis_records++;
				CU_ASSERT_EQUAL_FATAL(kpl_decode(dec, kr->data, kr->data_len, &range,
								 NULL, &res), KL_OK);
				if (res.verdict == KPL_FILTERED) {
					rb->filtered++;
					continue;
				}
				if (res.verdict == KPL_AGGREGATE)
					rb->aggregates++;
				for (size_t k = 0; k < res.nrecords; k++) {
					const struct kpl_record *u = &res.records[k];
					int64_t n = event_n(u->data, u->len, seed);
					struct seen *sv;

					if (n < 0) {
						rb->bad++;
						continue;
					}
					if (rb->n == rb->alloc) {
						rb->alloc = rb->alloc ? 2 * rb->alloc : 4096;
						rb->v = realloc(rb->v, rb->alloc * sizeof(*rb->v));
						CU_ASSERT_FATAL(rb->v != NULL);
					}
					sv = &rb->v[rb->n];
					sv->n = (uint64_t)n;
					sv->order = rb->n++;
					sv->aggregated = res.verdict == KPL_AGGREGATE;
					if (u->partition_key)
						snprintf(sv->key, sizeof(sv->key), "%.*s",
							 (int)u->partition_key_len, u->partition_key);
					else
						snprintf(sv->key, sizeof(sv->key), "%s",
							 kr->partition_key);
				}
			}
			/* Everything was written before reading: an empty answer
			 * at the tip is the end of the shard's data. */
			done = r->n_records == 0 && r->millis_behind_latest <= 0;
			free(iter);
			iter = r->next_iterator && !done ? strdup(r->next_iterator) : NULL;
			kinesis_records_free(r);
		}
		free(iter);
	}
	free(shards);
	kpl_decoder_free(dec);
}

struct keyseq {
	char key[DEMO_KEY_MAX];
	uint64_t seq;
	size_t order;
};

static int keyseq_cmp(const void *a, const void *b)
{
	const struct keyseq *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Checks rb against the first count events of seed regenerated with opts:
 * each id exactly once, under the right key, and per key seq 1, 2, ... in
 * the order read. If manifest is not NULL, its lines must name the same
 * ids with the same kinds. */
static void verify(const struct readback *rb, uint64_t seed, const struct demo_gen_opts *opts,
		   uint64_t count, const char *manifest)
{
	struct demo_gen *g = NULL;
	struct demo_event *ev = calloc(count, sizeof(*ev));
	uint32_t *times = calloc(count, sizeof(*times));
	struct keyseq *ks = calloc(rb->n ? rb->n : 1, sizeof(*ks));
	struct buf b;
	size_t missing = 0, twice = 0, wrong_key = 0, out_of_range = 0;

	CU_ASSERT_FATAL(ev && times && ks);
	CU_ASSERT_EQUAL_FATAL(demo_gen_new(seed, opts, &g), KL_OK);
	buf_init(&b, 0);
	for (uint64_t i = 0; i < count; i++) {
		buf_reset(&b);
		CU_ASSERT_EQUAL_FATAL(demo_gen_event(g, 0, &b, &ev[i]), KL_OK);
	}
	buf_done(&b);
	demo_gen_free(g);

	CU_ASSERT_EQUAL(rb->bad, 0);
	for (size_t i = 0; i < rb->n; i++) {
		const struct seen *s = &rb->v[i];

		if (s->n < opts->first_id || s->n - opts->first_id >= count) {
			out_of_range++;
			continue;
		}
		times[s->n - opts->first_id]++;
		if (strcmp(s->key, ev[s->n - opts->first_id].partition_key) != 0)
			wrong_key++;
		snprintf(ks[i].key, sizeof(ks[i].key), "%s", s->key);
		ks[i].seq = ev[s->n - opts->first_id].seq;
		ks[i].order = s->order;
	}
	for (uint64_t i = 0; i < count; i++) {
		missing += times[i] == 0;
		twice += times[i] > 1;
	}
	if (missing || twice || wrong_key || out_of_range)
		fprintf(stderr, "\n  %zu missing, %zu more than once, %zu under another key, %zu "
				"unknown ids\n", missing, twice, wrong_key, out_of_range);
	CU_ASSERT_EQUAL(missing, 0);
	CU_ASSERT_EQUAL(twice, 0);
	CU_ASSERT_EQUAL(wrong_key, 0);
	CU_ASSERT_EQUAL(out_of_range, 0);
	CU_ASSERT_EQUAL(rb->n, count);

	/* Per key: seq 1, 2, 3, ... in the order the shard returns them. */
	qsort(ks, rb->n, sizeof(*ks), keyseq_cmp);
	{
		size_t keys = 0, bad = 0;

		for (size_t i = 0; i < rb->n; i++) {
			bool first = i == 0 || strcmp(ks[i].key, ks[i - 1].key) != 0;

			keys += first;
			if (ks[i].seq != (first ? 1 : ks[i - 1].seq + 1))
				bad++;
		}
		if (bad)
			fprintf(stderr, "\n  %zu records out of order per key\n", bad);
		CU_ASSERT_EQUAL(bad, 0);
		CU_ASSERT(keys > 10 && keys < rb->n); /* several events per session */
	}

	if (manifest) {
		FILE *f = fopen(manifest, "r");
		char line[1024];
		uint64_t lines = 0, mismatched = 0;

		CU_ASSERT_PTR_NOT_NULL_FATAL(f);
		while (fgets(line, sizeof(line), f)) {
			char id[DEMO_EVENT_ID_MAX], key[DEMO_KEY_MAX], kind[32];
			uint64_t seq, n;
			char want[DEMO_EVENT_ID_MAX + 8];

			lines++;
			if (sscanf(line, "%47[^\t]\t%39[^\t]\t%" SCNu64 "\t%31[^\t]", id, key, &seq,
				   kind) != 4 ||
			    sscanf(strchr(id, '-') ? strchr(id, '-') + 1 : "x", "%" SCNu64, &n) != 1 ||
			    n < opts->first_id || n - opts->first_id >= count) {
				mismatched++;
				continue;
			}
			snprintf(want, sizeof(want), "%" PRIu64 "-%" PRIu64, seed, n);
			n -= opts->first_id;
			if (strcmp(id, want) != 0 || strcmp(key, ev[n].partition_key) != 0 ||
			    seq != ev[n].seq || strcmp(kind, demo_kind_name(ev[n].kind)) != 0)
				mismatched++;
		}
		fclose(f);
		CU_ASSERT_EQUAL(lines, count);
		CU_ASSERT_EQUAL(mismatched, 0);
	}
	free(ev);
	free(times);
	free(ks);
}

/* ------------------------------------------------------------ tests */

static void produce_and_verify(const char *tag, bool kpl)
{
	char stream[96], manifest[128], out[4096], v[128], want[64];
	struct demo_gen_opts opts;
	struct readback rb;
	const uint64_t seed = kpl ? 808 : 707;
	const char *args[40];
	char seed_s[24];
	int n = 0, rc;

	snprintf(stream, sizeof(stream), "kl-demo-%s-%s", tag, fx.run_id);
	snprintf(manifest, sizeof(manifest), "%s/%s.manifest", fx.tmp, tag);
	snprintf(seed_s, sizeof(seed_s), "%" PRIu64, seed);
	args[n++] = "demo";
	args[n++] = "produce";
	args[n++] = "--stream";
	args[n++] = stream;
	args[n++] = "--endpoint";
	args[n++] = fx.endpoint;
	args[n++] = "--region";
	args[n++] = "us-east-1";
	args[n++] = "--create-shards";
	args[n++] = "4";
	args[n++] = "--count";
	args[n++] = "2000";
	args[n++] = "--seed";
	args[n++] = seed_s;
	args[n++] = "--sessions";
	args[n++] = "150";
	args[n++] = "--malformed-pct";
	args[n++] = "3";
	args[n++] = "--bot-pct";
	args[n++] = "10";
	args[n++] = "--manifest";
	args[n++] = manifest;
	if (kpl) {
		args[n++] = "--kpl";
		args[n++] = "--kpl-per-record";
		args[n++] = "10";
	}
	args[n] = NULL;
	rc = run(args, out, sizeof(out));
	fprintf(stderr, "\n  stdout: %s", out);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	snprintf(want, sizeof(want), "%" PRIu64 "-0..%" PRIu64 "-1999", seed, seed);
	CU_ASSERT_STRING_EQUAL(field(out, "event_ids", v, sizeof(v)), want);
	CU_ASSERT_STRING_EQUAL(field(out, "complete", v, sizeof(v)), "yes");
	CU_ASSERT_STRING_EQUAL(field(out, "stream", v, sizeof(v)), stream);
	CU_ASSERT_EQUAL(field_u64(out, "generated"), 2000);
	CU_ASSERT_EQUAL(field_u64(out, "acked"), 2000);
	CU_ASSERT(field_u64(out, "malformed") > 20 && field_u64(out, "malformed") < 120);
	CU_ASSERT(field_u64(out, "bots") > 60);
	CU_ASSERT_EQUAL(field_u64(out, "ok") + field_u64(out, "bots") + field_u64(out, "malformed"),
			2000);

	read_stream(stream, seed, &rb);
	demo_gen_opts_default(&opts);
	opts.sessions = 150;
	opts.malformed_pct = 3;
	opts.bot_pct = 10;
	verify(&rb, seed, &opts, 2000, manifest);
	CU_ASSERT_EQUAL(rb.filtered, 0);
	if (kpl) {
		/* Aggregated: fewer Kinesis records than events. */
		CU_ASSERT(rb.aggregates > 20);
		CU_ASSERT(rb.kinesis_records < 2000);
	} else {
		CU_ASSERT_EQUAL(rb.aggregates, 0);
		CU_ASSERT_EQUAL(rb.kinesis_records, 2000);
	}
	fprintf(stderr, "  %zu Kinesis records, %zu aggregates ", rb.kinesis_records, rb.aggregates);
	free(rb.v);

	/* Running again into the existing stream with --ids-from adds new ids
	 * (and new sessions) after the first ones. */
	if (!kpl) {
		const char *again[] = { "demo", "produce", "--stream", stream, "--endpoint",
					fx.endpoint, "--count", "300", "--seed", seed_s,
					"--ids-from", "2000", "--sessions", "150", "--quiet", NULL };
		struct demo_gen_opts o2 = opts;

		rc = run(again, out, sizeof(out));
		CU_ASSERT_EQUAL_FATAL(rc, 0);
		snprintf(want, sizeof(want), "%" PRIu64 "-2000..%" PRIu64 "-2299", seed, seed);
		CU_ASSERT_STRING_EQUAL(field(out, "event_ids", v, sizeof(v)), want);
		read_stream(stream, seed, &rb);
		CU_ASSERT_EQUAL(rb.n, 2300);
		/* Keep only the second run's records for the order check. */
		{
			size_t o = 0;

			for (size_t i = 0; i < rb.n; i++)
				if (rb.v[i].n >= 2000)
					rb.v[o++] = rb.v[i];
			rb.n = o;
		}
		o2.first_id = 2000;
		o2.malformed_pct = DEMO_DEFAULT_MALFORMED_PCT;
		o2.bot_pct = DEMO_DEFAULT_BOT_PCT;
		verify(&rb, seed, &o2, 300, NULL);
		free(rb.v);
	}
}

static void test_plain(void)
{
	produce_and_verify("plain", false);
}

static void test_kpl(void)
{
	produce_and_verify("kpl", true);
}

/* Endpoint, keys and stream from a config file; no --count: runs paced
 * until SIGTERM, then drains and reports exactly what it wrote. */
static void test_config_and_sigterm(void)
{
	char conf[128], manifest[128], stream[96], out[4096], v[128];
	struct demo_gen_opts opts;
	struct readback rb;
	FILE *f;
	uint64_t generated;
	int fd, rc;
	pid_t pid;

	snprintf(stream, sizeof(stream), "kl-demo-term-%s", fx.run_id);
	snprintf(conf, sizeof(conf), "%s/demo.conf", fx.tmp);
	snprintf(manifest, sizeof(manifest), "%s/term.manifest", fx.tmp);
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	fprintf(f, "application = \"demo-integ\";\nstream = \"%s\";\nregion = \"us-east-1\";\n"
		   "s3 = { bucket = \"demo-bucket\"; };\n"
		   "endpoints = { kinesis = \"%s\"; };\n"
		   "credentials = { access_key_id = \"%s\"; secret_access_key = \"%s\"; };\n",
		stream, fx.endpoint, fx.key_id, fx.secret);
	fclose(f);
	chmod(conf, 0600);
	{
		const char *args[] = { "demo", "produce", "-c", conf, "--create-shards", "2", "--rate",
				       "400/s", "--seed", "909", "--sessions", "100", "--manifest",
				       manifest, NULL };
		int64_t t0 = kl_mono_ms();

		pid = spawn(args, &fd);
		kl_sleep_ms(2500);
		CU_ASSERT_EQUAL(kill(pid, SIGTERM), 0);
		rc = finish(pid, fd, out, sizeof(out));
		fprintf(stderr, "\n  stdout: %s", out);
		CU_ASSERT_EQUAL_FATAL(rc, 0);
		CU_ASSERT(kl_mono_ms() - t0 < 15000);
	}
	CU_ASSERT_STRING_EQUAL(field(out, "complete", v, sizeof(v)), "yes");
	CU_ASSERT_STRING_EQUAL(field(out, "stream", v, sizeof(v)), stream);
	generated = field_u64(out, "generated");
	/* Paced at 400/s for at most 2.5 s (stream creation took part of it). */
	CU_ASSERT(generated > 50 && generated <= 400 * 5 / 2 + 400 / 2);
	CU_ASSERT_EQUAL(field_u64(out, "acked"), generated);
	read_stream(stream, 909, &rb);
	demo_gen_opts_default(&opts);
	opts.sessions = 100;
	verify(&rb, 909, &opts, generated, manifest);
	free(rb.v);
}

/* The stream is split while a KPL run is under way: aggregates routed
 * with the old shard map land on a child shard; those a consumer would
 * drop (a user record outside the child's range) must be sent again, the
 * others must not. Reading back (parents first, filtering like the
 * consumer) must still give every event exactly once, in order per key. */
static void test_kpl_reshard(void)
{
	char stream[96], out[4096], mid_s[KINESIS_HASH_KEY_MAX + 1];
	struct kinesis_shard *shards = NULL;
	struct kinesis_hash_key lo, hi, mid;
	struct demo_gen_opts opts;
	struct kl_errinfo info;
	struct readback rb;
	size_t nshards = 0;
	uint64_t generated;
	int fd, rc;
	pid_t pid;

	snprintf(stream, sizeof(stream), "kl-demo-reshard-%s", fx.run_id);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(kinesis_create_stream(&fx.c, stream, 1, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(kinesis_wait_active(&fx.c, stream, 30000, NULL, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(kinesis_list_shards(&fx.c, stream, NULL, &shards, &nshards, &info),
			      KL_OK);
	CU_ASSERT_EQUAL_FATAL(nshards, 1);
	{
		const char *args[] = { "demo", "produce", "--stream", stream, "--endpoint",
				       fx.endpoint, "--kpl", "--kpl-per-record", "10", "--rate",
				       "2000", "--duration", "3", "--seed", "606", "--sessions",
				       "300", "--quiet", NULL };

		pid = spawn(args, &fd);
		kl_sleep_ms(1000);
		CU_ASSERT_FATAL(kinesis_hash_key_parse(shards[0].starting_hash_key, &lo) == KL_OK);
		CU_ASSERT_FATAL(kinesis_hash_key_parse(shards[0].ending_hash_key, &hi) == KL_OK);
		kinesis_hash_key_mid(&lo, &hi, &mid);
		kinesis_hash_key_format(&mid, mid_s);
		rc = kinesis_split_shard(&fx.c, stream, shards[0].shard_id, mid_s, &info);
		tf_report("SplitShard", (enum kl_err)rc, &info);
		CU_ASSERT_EQUAL(rc, KL_OK);
		rc = finish(pid, fd, out, sizeof(out));
		fprintf(stderr, "\n  stdout: %s", out);
		CU_ASSERT_EQUAL_FATAL(rc, 0);
	}
	free(shards);
	generated = field_u64(out, "generated");
	CU_ASSERT(generated > 3000);
	read_stream(stream, 606, &rb);
	demo_gen_opts_default(&opts);
	opts.sessions = 300;
	verify(&rb, 606, &opts, generated, NULL);
	fprintf(stderr, "  %zu aggregates, %zu dropped by the range check ", rb.aggregates,
		rb.filtered);
	free(rb.v);
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_plain),
		KL_TEST(test_kpl),
		KL_TEST(test_config_and_sigterm),
		KL_TEST(test_kpl_reshard),
		{ NULL, NULL },
	};
	int rc;

	if (setup() != 0) {
		fprintf(stderr, "integ_demo: setup failed\n");
		return 1;
	}
	rc = kl_test_run("integ_demo", tests);
	teardown();
	return rc;
}
