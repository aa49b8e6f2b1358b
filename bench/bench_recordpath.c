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

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "consumer.h"
#include "journal.h"
#include "kinesis.h"
#include "kpl.h"
#include "poison.h"
#include "util.h"
#include "xform.h"

#ifndef KL_BENCH_BUILDDIR
#error "KL_BENCH_BUILDDIR must name the build tree"
#endif

#define BODY_CAP ((size_t)10 * 1000 * 1000)
#define MAX_RUNS 51
#define PAGES 4                      /* GetRecords answers per consumer run */

static void die(const char *what)
{
	fprintf(stderr, "bench_recordpath: %s\n", what);
	exit(1);
}

static void check(enum kl_err err, const char *what)
{
	if (err != KL_OK)
		die(what);
}

/* ------------------------------------------------------------ data */

static const char *const pages[] = {
	"/", "/search?q=running+shoes", "/cart", "/checkout", "/checkout/payment",
	"/account/orders", "/products/shoes/running/aurora-3", "/products/jackets/rain/storm-shell",
	"/products/bags/backpacks/daypack-22", "/blog/choosing-trail-shoes", "/help/returns",
};
static const char *const types[] = {
	"page_view", "click", "scroll", "add_to_cart", "search", "begin_checkout", "purchase",
};
static const char *const agents[] = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.0.0 Safari/537.36",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
	"like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
	"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.6367.82 Mobile Safari/537.36",
};
static const char *const countries[] = { "DE", "US", "FR", "GB", "NL", "SE", "JP", "BR" };

#define PICK(rng, a) ((a)[kl_rng_below((rng), KL_ARRAY_LEN(a))])

/* One event, JSON, ~350 bytes; about 1 in 50 from a crawler. */
static void gen_event(struct kl_rng *rng, int64_t ms, struct buf *out)
{
	uint64_t id = kl_rng_next(rng);
	time_t secs = (time_t)(ms / 1000);
	bool bot = kl_rng_below(rng, 50) == 0;
	struct tm tm;
	char when[32];

	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	check(buf_printf(out,
			 "{\"event_id\":\"%016" PRIx64 "\",\"timestamp\":\"%s.%03dZ\",\"type\":\"%s\","
			 "\"user_id\":\"u-%07" PRIu64 "\",\"session_id\":\"s-%012" PRIx64 "\","
			 "\"page\":\"%s\",\"user_agent\":\"%s\",\"ip\":\"203.0.%d.%d\","
			 "\"country\":\"%s\",\"value_cents\":%d,\"props\":{\"sku\":\"SKU-%05d\",\"qty\":%d}}",
			 id, when, (int)(ms % 1000), PICK(rng, types), kl_rng_below(rng, 5000000),
			 id >> 16, PICK(rng, pages),
			 bot ? "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)" :
			       PICK(rng, agents),
			 (int)kl_rng_below(rng, 256), (int)kl_rng_below(rng, 256), PICK(rng, countries),
			 (int)kl_rng_below(rng, 20000), (int)kl_rng_below(rng, 100000),
			 1 + (int)kl_rng_below(rng, 4)),
	      "out of memory");
}

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
 * Builds PAGES bodies of at most 10000 records and 10 MB each. agg_every:
 * every n-th record is a KPL aggregate of agg_size events (0: all plain).
 */
static void gen_sample(struct sample *smp, const char *name, int agg_every, int agg_size,
		       uint64_t seed)
{
	struct kl_rng rng;
	struct buf rec, ev[64], b64;
	int64_t ms = INT64_C(1795291116903);
	char seqbase[] = "49590338271490256608559692538361571095921575989";

	memset(smp, 0, sizeof(*smp));
	smp->name = name;
	buf_init(&rec, 0);
	buf_init(&b64, 0);
	for (int i = 0; i < 64; i++)
		buf_init(&ev[i], 0);
	kl_rng_seed_value(&rng, seed);
	for (int pg = 0; pg < PAGES; pg++) {
	struct buf *body = &smp->body[pg];
	size_t in_page = 0;

	buf_init(body, 32 << 20);
	check(buf_append_str(body, "{\"Records\":["), "out of memory");
	while (in_page < KINESIS_GET_RECORDS_MAX) {
		size_t mark = body->len, user = 1, payload;
		bool agg = agg_every && smp->n_records % (size_t)agg_every == (size_t)agg_every - 1;

		buf_reset(&rec);
		if (agg) {
			struct kpl_enc_record sub[64];
			char pks[64][24];

			payload = 0;
			for (int i = 0; i < agg_size; i++) {
				buf_reset(&ev[i]);
				gen_event(&rng, ms, &ev[i]);
				snprintf(pks[i], sizeof(pks[i]), "u-%07" PRIu64, kl_rng_below(&rng, 5000000));
				sub[i].partition_key = pks[i];
				sub[i].explicit_hash_key = NULL;
				sub[i].data = ev[i].data;
				sub[i].len = ev[i].len;
				payload += ev[i].len;
			}
			check(kpl_encode(sub, (size_t)agg_size, &rec), "kpl_encode");
			user = (size_t)agg_size;
		} else {
			gen_event(&rng, ms, &rec);
			payload = rec.len;
		}
		ms += (int64_t)kl_rng_below(&rng, 5);
		buf_reset(&b64);
		check(buf_reserve(&b64, KL_B64_ENCLEN(rec.len) + 1), "out of memory");
		kl_b64_encode((const uint8_t *)rec.data, rec.len, b64.data);
		check(buf_printf(body,
				 "%s{\"SequenceNumber\":\"%s%09zu\",\"ApproximateArrivalTimestamp\":%"
				 PRId64 ".%03d,\"Data\":\"%s\",\"PartitionKey\":\"u-%07" PRIu64 "\"}",
				 in_page ? "," : "", seqbase, (smp->n_records + 1) * 10,
				 ms / 1000, (int)(ms % 1000), b64.data, kl_rng_below(&rng, 5000000)),
		      "out of memory");
		if (body->len > BODY_CAP - 400) {
			body->len = mark;
			body->data[mark] = '\0';
			break;
		}
		in_page++;
		smp->n_records++;
		smp->n_user += user;
		smp->payload += payload;
		smp->data_bytes += rec.len;
	}
	check(buf_append_str(body, "],\"NextShardIterator\":\"AAAAAAAAAAGq1cHhO9X5b8Yp+jW3bZ"
			     "p7u1JQ8zK3mR2wVd0e4yT6nF5cL9hB2aG7kE1sD3fX8qP4tU6vI0oM5rN9lJ2yC7wA1zS3"
			     "xH6gK8iE0uY4bR5tQ7pO9nM2lK1jH3gF5dS7aZ9xC2vB4nM6qW8eR0tY3uI5oP7aS9dF1g==\","
			     "\"MillisBehindLatest\":0}"),
	      "out of memory");
	smp->body_bytes += body->len;
	}
	buf_done(&rec);
	buf_done(&b64);
	for (int i = 0; i < 64; i++)
		buf_done(&ev[i]);
}

/* ------------------------------------------------------------ timing */

struct times {
	double cpu;
	double wall;
};

static struct times now_times(void)
{
	struct timespec c, w;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c);
	clock_gettime(CLOCK_MONOTONIC, &w);
	return (struct times){ (double)c.tv_sec + (double)c.tv_nsec / 1e9,
			       (double)w.tv_sec + (double)w.tv_nsec / 1e9 };
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
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
			check(buf_append(out, res->outputs[o].data, res->outputs[o].len), "output cap");
			check(buf_append_byte(out, '\n'), "output cap");
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

/* Direct calls: scan, de-aggregate, transform, join. */
static void run_pipeline(const struct sample *smp, struct kpl_decoder *dec, struct xform *x,
			 struct buf *out, struct outcome *oc)
{
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;
	char keys[512];

	for (int pg = 0; pg < PAGES; pg++) {
	check(kinesis_parse_get_records(smp->body[pg].data, smp->body[pg].len, &r, &info),
	      "scanner");
	for (size_t i = 0; i < r->n_records; i++) {
		const struct kinesis_record *kr = &r->records[i];
		struct kpl_result kres;

		check(kpl_decode(dec, kr->data, kr->data_len, NULL, &info, &kres), "kpl_decode");
		for (size_t j = 0; j < kres.nrecords; j++) {
			const struct kpl_record *ur = &kres.records[j];
			struct kl_transform_record t;
			struct xform_result res;

			memset(&t, 0, sizeof(t));
			t.data = ur->data;
			t.len = ur->len;
			t.partition_key = kr->partition_key;
			if (ur->partition_key && ur->partition_key_len < sizeof(keys)) {
				memcpy(keys, ur->partition_key, ur->partition_key_len);
				keys[ur->partition_key_len] = '\0';
				t.partition_key = keys;
			}
			t.sequence_number = kr->sequence_number;
			t.sub_sequence_number = ur->sub_sequence_number;
			t.shard_id = "shardId-000000000000";
			t.approximate_arrival_ms = kr->arrival_ms;
			check(xform_run(x, &t, &res), "xform_run");
			oc->user++;
			emit_result(out, &res, oc);
		}
	}
	kinesis_records_free(r);
	}
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
	die("a record was routed as a poison record");
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
		check(poison_guard_new(&pc, &g, &info), "poison_guard_new");
		poison_guard_consumer(g, &deps.guard);
	}
	check(consumer_new(&cfg, &deps, &c, &info), "consumer_new");
	if (consumer_run(c) != CONSUMER_DONE)
		die("the consumer did not reach DONE");
	consumer_free(c);
	poison_guard_free(g);
}

/* ------------------------------------------------------------ main */

static struct xform_plugin *load(const char *dir, const char *name)
{
	char src[4096], dst[4096], chunk[65536];
	struct xform_plugin *p = NULL;
	struct kl_errinfo info;
	int in, out;
	ssize_t n;

	snprintf(src, sizeof(src), "%s/plugins/%s/.libs/%s.so", KL_BENCH_BUILDDIR, name, name);
	snprintf(dst, sizeof(dst), "%s/%s.so", dir, name);
	in = open(src, O_RDONLY);
	if (in < 0) {
		fprintf(stderr, "%s: %s\n", src, strerror(errno));
		die("build the plugins first");
	}
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	if (out < 0)
		die("cannot stage the plugin");
	while ((n = read(in, chunk, sizeof(chunk))) > 0)
		if (write(out, chunk, (size_t)n) != n)
			die("cannot stage the plugin");
	close(in);
	close(out);
	chmod(dst, 0755);
	if (xform_plugin_load(dst, NULL, &info, &p) != KL_OK) {
		fprintf(stderr, "%s\n", info.message);
		die("cannot load the plugin");
	}
	unlink(dst);
	return p;
}

static void report(const char *how, const struct sample *smp, double *cpu, double *wall,
		   int runs, const struct outcome *oc)
{
	double c = median(cpu, runs), w = median(wall, runs);
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

	check(kpl_decoder_new(&info, &dec), "kpl_decoder_new");
	buf_init(&out, (size_t)256 << 20);
	check(buf_reserve(&out, smp->payload + smp->n_user + 1), "out of memory");
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
				die("user record count differs");
			if (identity && out.len != smp->payload + smp->n_user)
				die("identity output differs in size");
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
		die("mkdtemp");
	identity = load(dir, "identity");
	clickstream = load(dir, "clickstream");
	rmdir(dir);
	check(xform_new(identity, NULL, &info, &xi), "identity instance");
	check(xform_new(clickstream, NULL, &info, &xc), "clickstream instance");
	{
		char jpath[64], mpath[64];
		struct poison_crash *cr = NULL;
		size_t n = 0;

		if (!mkdtemp(state))
			die("mkdtemp");
		snprintf(jpath, sizeof(jpath), "%s/journal.db", state);
		snprintf(mpath, sizeof(mpath), "%s/" POISON_MARKS_FILE, state);
		check(journal_open(jpath, &guard_env.journal, &info), "journal_open");
		check(poison_marks_open(mpath, 4, &guard_env.marks, &cr, &n, &info), "marks");
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
