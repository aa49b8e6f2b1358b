/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_recordpath.c: the consumer's record path on one thread, from a
 * recorded GetRecords response body to newline-joined output in memory:
 * kinesis_parse_get_records() (the scanner) -> kpl_decode() -> xform_run()
 * (the built identity and clickstream plugins) -> output buffer. Bodies
 * hold generated clickstream JSON events of a few hundred bytes, plain or
 * with some records KPL aggregates. Each case runs twice: as direct calls
 * ("pipeline"), and through consumer_run() with in-memory Kinesis, lease
 * and sink and a clock that never waits ("consumer": everything the
 * consumer adds per record), and again with the daemon's poison-record
 * guard (src/daemon/poison.h: a marks file slot written per record, a
 * real journal, no suspects: its steady-state cost, "guarded"). Prints
 * medians: MB/s of record data per CPU second of the thread and per wall
 * second, and user records per second.
 * Built by `make bench`; make check never runs it.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "consumer.h"
#include "gen.h"
#include "harness.h"
#include "journal.h"
#include "kinesis.h"
#include "kpl.h"
#include "poison.h"
#include "util.h"
#include "xform.h"

#ifndef KL_BENCH_BUILDDIR
#error "KL_BENCH_BUILDDIR must name the build tree"
#endif

#define MAX_RUNS HARNESS_MAX_RUNS
#define PAGES 4                      /* GetRecords answers per consumer run */

/* PAGES recorded GetRecords bodies (sequence numbers ascending across
 * them) and what they hold in total. */
struct sample {
	const char *name;
	struct buf body[PAGES];
	size_t body_bytes;
	size_t n_records;             /* Kinesis records */
	size_t n_user;                /* user records after de-aggregation */
	size_t payload;               /* user record bytes */
	size_t data_bytes;            /* Kinesis Data bytes (aggregates included) */
};

/*
 * Builds PAGES bodies of at most 10000 records and 10 MB each (gen.h).
 * agg_every: every n-th record is a KPL aggregate of agg_size events (0:
 * all plain).
 */
static void gen_sample(struct sample *smp, const char *name, int agg_every, int agg_size,
		       uint64_t seed)
{
	struct gen g;

	memset(smp, 0, sizeof(*smp));
	smp->name = name;
	gen_init(&g, seed, agg_every, agg_size);
	for (int pg = 0; pg < PAGES; pg++) {
		harness_check(gen_page(&g, &smp->body[pg],
				       "AAAAAAAAAAGq1cHhO9X5b8Yp+jW3bZp7u1JQ8zK3mR2wVd0e4yT6nF5cL9hB2aG7kE"
				       "1sD3fX8qP4tU6vI0oM5rN9lJ2yC7wA1zS3xH6gK8iE0uY4bR5tQ7pO9nM2lK1jH3gF"
				       "5dS7aZ9xC2vB4nM6qW8eR0tY3uI5oP7aS9dF1g=="),
			      "cannot generate the sample");
		smp->body_bytes += smp->body[pg].len;
	}
	smp->n_records = g.n_records;
	smp->n_user = g.n_user;
	smp->payload = g.payload;
	smp->data_bytes = g.data_bytes;
	gen_done(&g);
}

/* ------------------------------------------------------------ timing */

struct times {
	double cpu;
	double wall;
};

static struct times now_times(void)
{
	return (struct times){ harness_cpu_now(), harness_wall_now() };
}

/* ------------------------------------------------------------ the pipeline */

/* What one pass produced, to check it against the sample. */
struct outcome {
	size_t outputs, ok, dropped, failed, user;
};

static void emit_result(struct buf *out, const struct xform_result *res, struct outcome *oc)
{
	switch (res->result) {
	case KL_TRANSFORM_OK:
		oc->ok++;
		for (size_t o = 0; o < res->noutputs; o++) {
			harness_check(buf_append(out, res->outputs[o].data, res->outputs[o].len),
				      "output cap");
			harness_check(buf_append_byte(out, '\n'), "output cap");
			oc->outputs++;
		}
		break;
	case KL_TRANSFORM_DROPPED:
		oc->dropped++;
		break;
	case KL_TRANSFORM_FAILED:
		oc->failed++;
		break;
	}
}

struct joined {
	struct buf *out;
	struct outcome *oc;
};

static void join_one(void *arg, const struct kl_transform_record *rec,
		     const struct xform_result *res)
{
	struct joined *j = arg;

	(void)rec;
	j->oc->user++;
	emit_result(j->out, res, j->oc);
}

/* Direct calls: scan, de-aggregate, transform, join. */
static void run_pipeline(const struct sample *smp, struct kpl_decoder *dec, struct xform *x,
			 struct buf *out, struct outcome *oc)
{
	struct joined j = { out, oc };

	for (int pg = 0; pg < PAGES; pg++)
		harness_run_body(&smp->body[pg], dec, x, "shardId-000000000000", join_one, &j);
}

/* ------------------------------------------------------------ through consumer_run */

struct mem {
	const struct sample *smp;
	int pages_left;
	struct buf *out;
	struct outcome *oc;
	int64_t now;
};

static enum kl_err m_iter(void *ctx, const char *shard_id, const struct kinesis_position *pos,
			  char **ret_iterator, struct kl_errinfo *info)
{
	(void)ctx;
	(void)shard_id;
	(void)pos;
	(void)info;
	*ret_iterator = strdup("it");
	return *ret_iterator ? KL_OK : KL_ENOMEM;
}

/* Every call scans the recorded body again (the scan is part of the path);
 * the last page says the shard ended, with one child. */
static enum kl_err m_records(void *ctx, const char *iterator, int limit,
			     struct kinesis_records **ret, struct kl_errinfo *info)
{
	static const char end[] =
		"{\"Records\":[],\"MillisBehindLatest\":0,\"ChildShards\":[{\"ShardId\":"
		"\"shardId-000000000001\",\"ParentShards\":[\"shardId-000000000000\"],"
		"\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"1\"}}]}";
	struct mem *m = ctx;

	(void)iterator;
	(void)limit;
	if (m->pages_left > 0) {
		const struct buf *b = &m->smp->body[PAGES - m->pages_left--];

		return kinesis_parse_get_records(b->data, b->len, ret, info);
	}
	return kinesis_parse_get_records(end, sizeof(end) - 1, ret, info);
}

static enum kl_err m_children(void *ctx, const char *shard_id, struct lease_shard_list *ret,
			      struct kl_errinfo *info)
{
	(void)ctx;
	(void)shard_id;
	(void)ret;
	(void)info;
	return KL_OK;
}

static const struct consumer_kinesis_ops mem_kinesis = { m_iter, m_records, m_children, NULL, NULL };

static enum kl_err l_check(void *ctx, const char *key, uint64_t token, int64_t *ret_valid_until_ms)
{
	(void)ctx;
	(void)key;
	(void)token;
	*ret_valid_until_ms = INT64_MAX;
	return KL_OK;
}

static enum kl_err l_shard_end(void *ctx, const char *key, uint64_t token,
			       const struct lease_shard *children, size_t n, struct kl_errinfo *info)
{
	(void)ctx;
	(void)key;
	(void)token;
	(void)children;
	(void)info;
	return n == 1 ? KL_OK : KL_EINVAL;
}

static const struct consumer_lease_ops mem_lease = { l_check, l_shard_end, NULL };

static enum kl_err s_push(void *ctx, const struct kl_transform_record *rec,
			  const struct xform_result *res, struct kl_errinfo *info)
{
	struct mem *m = ctx;

	(void)rec;
	(void)info;
	m->oc->user++;
	emit_result(m->out, res, m->oc);
	return KL_OK;
}

static bool s_blocked(void *ctx)
{
	(void)ctx;
	return false;
}

static enum kl_err s_tick(void *ctx, int64_t now, struct kl_errinfo *info)
{
	(void)ctx;
	(void)now;
	(void)info;
	return KL_OK;
}

static enum kl_err s_flush(void *ctx, struct kl_errinfo *info)
{
	(void)ctx;
	(void)info;
	return KL_OK;
}

static void s_abandon(void *ctx)
{
	(void)ctx;
}

static void s_resume(void *ctx, struct lease_esn *ret)
{
	(void)ctx;
	*ret = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
}

/* Never called: the bench has no poison records. */
static enum kl_err s_push_crashed(void *ctx, const struct kl_transform_record *rec,
				  uint32_t attempts, struct kl_errinfo *info)
{
	(void)ctx;
	(void)rec;
	(void)attempts;
	(void)info;
	harness_die("a record was routed as a poison record");
	return KL_EINVAL;
}

static const struct record_sink_ops mem_sink = { s_push, s_blocked, s_tick, s_flush, s_abandon,
						 s_resume, s_push_crashed };

/* What the guarded runs use, as the daemon does (one guard per shard run). */
static struct {
	struct journal *journal;
	struct poison_marks *marks;
} guard_env;

/* A clock whose sleeps only move its own time: pacing costs nothing. */
static int64_t c_mono(void *ctx)
{
	return ((struct mem *)ctx)->now;
}

static void c_sleep(void *ctx, int64_t ms)
{
	((struct mem *)ctx)->now += ms;
}

static void c_wake(void *ctx)
{
	(void)ctx;
}

static void run_consumer(const struct sample *smp, struct xform *x, struct buf *out,
			 struct outcome *oc, bool guarded)
{
	struct poison_guard *g = NULL;
	struct mem m = { smp, PAGES, out, oc, 1000000 };
	struct consumer_clock clock = { c_mono, c_sleep, c_wake, &m };
	struct consumer_config cfg;
	struct consumer_deps deps;
	struct kl_errinfo info;
	struct consumer *c = NULL;

	memset(&cfg, 0, sizeof(cfg));
	cfg.shard_id = "shardId-000000000000";
	cfg.lease_token = 1;
	cfg.checkpoint = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	cfg.seed = 1;
	memset(&deps, 0, sizeof(deps));
	deps.kinesis.ops = &mem_kinesis;
	deps.kinesis.ctx = &m;
	deps.lease.ops = &mem_lease;
	deps.sink.ops = &mem_sink;
	deps.sink.ctx = &m;
	deps.xform = x;
	deps.clock = &clock;
	if (guarded) {
		struct poison_guard_config pc;

		memset(&pc, 0, sizeof(pc));
		pc.key = cfg.shard_id;
		pc.worker_id = "bench";
		pc.max_crashes = 3;
		pc.journal = guard_env.journal;
		pc.marks = guard_env.marks;
		pc.checkpoint = cfg.checkpoint;
		harness_check(poison_guard_new(&pc, &g, &info), "poison_guard_new");
		poison_guard_consumer(g, &deps.guard);
	}
	harness_check(consumer_new(&cfg, &deps, &c, &info), "consumer_new");
	if (consumer_run(c) != CONSUMER_DONE)
		harness_die("the consumer did not reach DONE");
	consumer_free(c);
	poison_guard_free(g);
}

/* ------------------------------------------------------------ main */

static void report(const char *how, const struct sample *smp, double *cpu, double *wall,
		   int runs, const struct outcome *oc)
{
	double c = harness_median(cpu, runs), w = harness_median(wall, runs);
	double payload = (double)smp->payload, user = (double)smp->n_user;

	printf("    %-9s %7.1f MB/s per CPU-s %7.1f MB/s wall %10.0f records/s"
	       "  (body %.1f MB/s; ok %zu dropped %zu failed %zu)\n",
	       how, payload / c / 1e6, payload / w / 1e6, user / c,
	       (double)smp->body_bytes / c / 1e6, oc->ok, oc->dropped, oc->failed);
}

/* Pipeline and consumer runs alternate, so a busy machine slows both alike. */
static void bench_case(const struct sample *smp, const char *plugin_name, struct xform *x,
		       int runs)
{
	double cpu[3][MAX_RUNS], wall[3][MAX_RUNS];
	struct kpl_decoder *dec = NULL;
	struct kl_errinfo info;
	struct outcome oc[3];
	struct buf out;
	bool identity = strcmp(plugin_name, "identity") == 0;

	harness_check(kpl_decoder_new(&info, &dec), "kpl_decoder_new");
	buf_init(&out, (size_t)256 << 20);
	harness_check(buf_reserve(&out, smp->payload + smp->n_user + 1), "out of memory");
	printf("  %s plugin:\n", plugin_name);
	for (int i = -1; i < runs; i++) {  /* run -1 warms up */
		for (int how = 0; how < 3; how++) {
			struct times t0, t1;

			memset(&oc[how], 0, sizeof(oc[how]));
			buf_reset(&out);
			t0 = now_times();
			if (how == 0)
				run_pipeline(smp, dec, x, &out, &oc[how]);
			else
				run_consumer(smp, x, &out, &oc[how], how == 2);
			t1 = now_times();
			if (oc[how].user != smp->n_user)
				harness_die("user record count differs");
			if (identity && out.len != smp->payload + smp->n_user)
				harness_die("identity output differs in size");
			if (i >= 0) {
				cpu[how][i] = t1.cpu - t0.cpu;
				wall[how][i] = t1.wall - t0.wall;
			}
		}
	}
	report("pipeline", smp, cpu[0], wall[0], runs, &oc[0]);
	report("consumer", smp, cpu[1], wall[1], runs, &oc[1]);
	report("guarded", smp, cpu[2], wall[2], runs, &oc[2]);
	buf_done(&out);
	kpl_decoder_free(dec);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_recordpath [-n runs (1..%d, default 9)] [-s seed] "
		"[-p identity|clickstream (default both)]\n", MAX_RUNS);
	exit(2);
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/kl-bench-recordpath-XXXXXX";
	char state[] = "/tmp/kl-bench-recordpath-state-XXXXXX";
	struct xform_plugin *identity, *clickstream;
	struct sample plain, mixed;
	struct kl_errinfo info;
	struct xform *xi = NULL, *xc = NULL;
	const char *only = NULL;
	uint64_t seed = 42;
	int runs = 9;

	harness_init("bench_recordpath");
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc)
			only = argv[++i];
		else
			usage();
	}
	if (only && strcmp(only, "identity") != 0 && strcmp(only, "clickstream") != 0)
		usage();
	if (runs < 1 || runs > MAX_RUNS)
		usage();
	if (!mkdtemp(dir))
		harness_die("mkdtemp");
	identity = harness_load_plugin(KL_BENCH_BUILDDIR, dir, "identity");
	clickstream = harness_load_plugin(KL_BENCH_BUILDDIR, dir, "clickstream");
	rmdir(dir);
	harness_check(xform_new(identity, NULL, &info, &xi), "identity instance");
	harness_check(xform_new(clickstream, NULL, &info, &xc), "clickstream instance");
	{
		char jpath[64], mpath[64];
		struct poison_crash *cr = NULL;
		size_t n = 0;

		if (!mkdtemp(state))
			harness_die("mkdtemp");
		snprintf(jpath, sizeof(jpath), "%s/journal.db", state);
		snprintf(mpath, sizeof(mpath), "%s/" POISON_MARKS_FILE, state);
		harness_check(journal_open(jpath, &guard_env.journal, &info), "journal_open");
		harness_check(poison_marks_open(mpath, 4, &guard_env.marks, &cr, &n, &info), "marks");
		free(cr);
	}

	printf("MB = 10^6 bytes of user record data (the JSON events); single thread; median of %d\n",
	       runs);
	gen_sample(&plain, "plain", 0, 0, seed);
	gen_sample(&mixed, "mixed", 5, 20, seed + 1);
	for (int s = 0; s < 2; s++) {
		const struct sample *smp = s ? &mixed : &plain;

		printf("%s: %d GetRecords bodies, %zu Kinesis records, %zu user records, "
		       "%.2f MB events (avg %zu B), bodies %.2f MB%s\n",
		       smp->name, PAGES, smp->n_records, smp->n_user, (double)smp->payload / 1e6,
		       smp->payload / smp->n_user, (double)smp->body_bytes / 1e6,
		       s ? ", 1 record in 5 a KPL aggregate of 20 events" : "");
		if (!only || strcmp(only, "identity") == 0)
			bench_case(smp, "identity", xi, runs);
		if (!only || strcmp(only, "clickstream") == 0)
			bench_case(smp, "clickstream", xc, runs);
	}
	for (int pg = 0; pg < PAGES; pg++) {
		buf_done(&plain.body[pg]);
		buf_done(&mixed.body[pg]);
	}
	xform_free(xi);
	xform_free(xc);
	xform_plugin_free(identity);
	xform_plugin_free(clickstream);
	poison_marks_close(guard_env.marks);
	journal_close(guard_env.journal);
	{
		static const char *const files[] = { "journal.db", "journal.db-wal", "journal.db-shm",
						     POISON_MARKS_FILE };
		char path[128];

		for (size_t i = 0; i < KL_ARRAY_LEN(files); i++) {
			snprintf(path, sizeof(path), "%s/%s", state, files[i]);
			unlink(path);
		}
		rmdir(state);
	}
	return 0;
}
