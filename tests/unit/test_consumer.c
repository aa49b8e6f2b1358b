/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_consumer.c: the shard consumer's state machine on fake time, with
 * a scripted Kinesis shard (iterators are positions; GetRecords bodies go
 * through the real scanner), a scripted lease, a collecting sink and the
 * built clickstream plugin. Covers state transitions, pacing and backoff
 * (exact, from the fake clock and a seeded jitter), iterator recovery, ESN
 * filtering inside KPL aggregates, the hash-range filter, lease loss,
 * shutdown, shard end, and sink backpressure.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "consumer.h"
#include "consumer_kinesis.h"
#include "kpl.h"
#include "testutil.h"
#include "util.h"
#include "xform.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define SHARD "shardId-000000000000"
#define MAX_RECS 256
#define MAX_CALLS 512
#define MAX_PUSHES 1024
#define ARRIVAL_MS INT64_C(1735787045123)
#define T0 INT64_C(1000000)

static char tmpdir[] = "/tmp/kl-test-consumer-XXXXXX";
static struct xform_plugin *clickstream;

/* ------------------------------------------------------------ fake clock */

static int64_t fake_now;

static int64_t fc_mono(void *ctx)
{
	(void)ctx;
	return fake_now;
}

static void fc_sleep(void *ctx, int64_t ms)
{
	(void)ctx;
	CU_ASSERT(ms > 0);
	if (ms > 0)
		fake_now += ms;
}

static void fc_wake(void *ctx)
{
	(void)ctx;
}

static const struct consumer_clock fake_clock = { fc_mono, fc_sleep, fc_wake, NULL };

/* ------------------------------------------------------------ event log */

static char events[16384];

static void ev(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ev(const char *fmt, ...)
{
	size_t len = strlen(events);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(events + len, sizeof(events) - len, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------ fake shard */

struct frec {
	char seq[64];
	char pk[64];
	uint8_t *data;
	size_t len;
	int64_t arrival_ms;
};

struct fcall {
	int64_t at;
	char iterator[32];
	int limit;
};

struct fiter {
	enum kinesis_iterator_type type;
	char seq[64];
	int64_t timestamp_ms;
};

static struct {
	struct frec recs[MAX_RECS];
	size_t n;
	bool closed;
	bool child_shards;           /* ChildShards in the final answer */
	int page_max;                /* 0: Limit only */
	int64_t mbl_behind;          /* MillisBehindLatest while records remain */
	enum kl_err fault[MAX_CALLS];  /* by GetRecords call number (1-based) */
	bool neither[MAX_CALLS];     /* answer without NextShardIterator (open shard) */
	enum kl_err iter_fault[16];  /* by GetShardIterator call number */
	void (*hook)(int call);      /* at each GetRecords, before answering */
	struct fcall calls[MAX_CALLS];
	int n_calls;
	struct fiter iters[16];
	int n_iters;
	int list_calls;
	bool list_empty;             /* list_children finds nothing */
	int read_while_blocked;
} fk;

static void seq_of(size_t i, char out[64])
{
	snprintf(out, 64, "49590338271490256608559692538361571095921575989%09zu", (i + 1) * 10);
}

static void add_rec(const char *pk, const void *data, size_t len)
{
	struct frec *r = &fk.recs[fk.n];

	CU_ASSERT_FATAL(fk.n < MAX_RECS);
	seq_of(fk.n, r->seq);
	snprintf(r->pk, sizeof(r->pk), "%s", pk);
	r->data = malloc(len ? len : 1);
	CU_ASSERT_FATAL(r->data != NULL);
	memcpy(r->data, data, len);
	r->len = len;
	r->arrival_ms = ARRIVAL_MS + (int64_t)fk.n;
	fk.n++;
}

/* n JSON events {"event":"view","n":i} (i counting on from the shard's size). */
static void add_events(size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char d[128], pk[32];
		int len = snprintf(d, sizeof(d), "{\"event\":\"view\",\"user_agent\":\"Mozilla/5.0\",\"n\":%zu}",
				   fk.n);

		snprintf(pk, sizeof(pk), "pk-%zu", fk.n);
		add_rec(pk, d, (size_t)len);
	}
}

static size_t seq_index(const char *seq)
{
	for (size_t i = 0; i < fk.n; i++)
		if (strcmp(fk.recs[i].seq, seq) == 0)
			return i;
	CU_FAIL("unknown sequence number");
	return fk.n;
}

static enum kl_err fk_get_shard_iterator(void *ctx, const char *shard_id,
					 const struct kinesis_position *pos, char **ret_iterator,
					 struct kl_errinfo *info)
{
	struct fiter *it;
	size_t p = 0;
	char buf[32];
	int n;

	(void)ctx;
	CU_ASSERT_STRING_EQUAL(shard_id, SHARD);
	CU_ASSERT_FATAL(fk.n_iters < 16);
	it = &fk.iters[fk.n_iters];
	n = ++fk.n_iters;
	it->type = pos->type;
	snprintf(it->seq, sizeof(it->seq), "%s", pos->sequence_number ? pos->sequence_number : "");
	it->timestamp_ms = pos->timestamp_ms;
	ev("I,");
	if (fk.iter_fault[n - 1])
		return kl_errinfo_set(info, fk.iter_fault[n - 1], "injected");
	switch (pos->type) {
	case KINESIS_ITER_TRIM_HORIZON: p = 0; break;
	case KINESIS_ITER_LATEST: p = fk.n; break;
	case KINESIS_ITER_AT_SEQUENCE_NUMBER: p = seq_index(pos->sequence_number); break;
	case KINESIS_ITER_AFTER_SEQUENCE_NUMBER: p = seq_index(pos->sequence_number) + 1; break;
	case KINESIS_ITER_AT_TIMESTAMP:
		while (p < fk.n && fk.recs[p].arrival_ms < pos->timestamp_ms)
			p++;
		break;
	}
	snprintf(buf, sizeof(buf), "it-%zu", p);
	*ret_iterator = strdup(buf);
	return KL_OK;
}

static const char *const child_json =
	"\"ChildShards\":[{\"ShardId\":\"shardId-000000000001\",\"ParentShards\":[\"" SHARD "\"],"
	"\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"170141183460469231731687303715884105727\"}},"
	"{\"ShardId\":\"shardId-000000000002\",\"ParentShards\":[\"" SHARD "\"],"
	"\"HashKeyRange\":{\"StartingHashKey\":\"170141183460469231731687303715884105728\","
	"\"EndingHashKey\":\"340282366920938463463374607431768211455\"}}]";

static bool sink_blocked_now(void);

static enum kl_err fk_get_records(void *ctx, const char *iterator, int limit,
				  struct kinesis_records **ret, struct kl_errinfo *info)
{
	struct fcall *call;
	struct buf body, b64;
	size_t p, k;
	int n;
	bool next;
	enum kl_err err;

	(void)ctx;
	CU_ASSERT_FATAL(fk.n_calls < MAX_CALLS);
	call = &fk.calls[fk.n_calls];
	n = ++fk.n_calls;
	call->at = fake_now;
	call->limit = limit;
	snprintf(call->iterator, sizeof(call->iterator), "%s", iterator);
	if (sink_blocked_now())
		fk.read_while_blocked++;
	ev("G,");
	if (fk.hook)
		fk.hook(n);
	if (fk.fault[n])
		return kl_errinfo_set(info, fk.fault[n], "injected");
	CU_ASSERT_FATAL(strncmp(iterator, "it-", 3) == 0);
	p = strtoul(iterator + 3, NULL, 10);
	k = fk.n - p;
	if (k > (size_t)limit)
		k = (size_t)limit;
	if (fk.page_max && k > (size_t)fk.page_max)
		k = (size_t)fk.page_max;
	next = !(fk.closed && p == fk.n) && !fk.neither[n];
	buf_init(&body, 0);
	buf_init(&b64, 0);
	buf_append_str(&body, "{\"Records\":[");
	for (size_t i = p; i < p + k; i++) {
		const struct frec *r = &fk.recs[i];

		buf_reset(&b64);
		CU_ASSERT_FATAL(buf_reserve(&b64, KL_B64_ENCLEN(r->len) + 1) == KL_OK);
		kl_b64_encode(r->data, r->len, b64.data);
		buf_printf(&body,
			   "%s{\"SequenceNumber\":\"%s\",\"ApproximateArrivalTimestamp\":%" PRId64
			   ".%03d,\"Data\":\"%s\",\"PartitionKey\":\"%s\"}",
			   i > p ? "," : "", r->seq, r->arrival_ms / 1000, (int)(r->arrival_ms % 1000),
			   b64.data, r->pk);
	}
	buf_append_str(&body, "]");
	if (next)
		buf_printf(&body, ",\"NextShardIterator\":\"it-%zu\"", p + k);
	buf_printf(&body, ",\"MillisBehindLatest\":%" PRId64, p + k < fk.n ? fk.mbl_behind : 0);
	if (!next && fk.closed && fk.child_shards)
		buf_printf(&body, ",%s", child_json);
	buf_append_str(&body, "}");
	err = kinesis_parse_get_records(body.data, body.len, ret, info);
	CU_ASSERT_EQUAL(err, KL_OK);
	if (err)
		fprintf(stderr, "fake body rejected: %s\n", info->message);
	buf_done(&body);
	buf_done(&b64);
	return err;
}

static enum kl_err fk_list_children(void *ctx, const char *shard_id, struct lease_shard_list *ret,
				    struct kl_errinfo *info)
{
	/* A ListShards answer with the shard itself, its two children and an
	 * unrelated shard, through the production filter. */
	struct kinesis_shard shards[4];

	(void)ctx;
	(void)info;
	fk.list_calls++;
	ev("L,");
	memset(shards, 0, sizeof(shards));
	snprintf(shards[0].shard_id, sizeof(shards[0].shard_id), "%s", SHARD);
	snprintf(shards[0].ending_sequence_number, sizeof(shards[0].ending_sequence_number), "99");
	snprintf(shards[1].shard_id, sizeof(shards[1].shard_id), "shardId-000000000001");
	snprintf(shards[2].shard_id, sizeof(shards[2].shard_id), "shardId-000000000002");
	snprintf(shards[3].shard_id, sizeof(shards[3].shard_id), "shardId-000000000003");
	snprintf(shards[1].parent_shard_id, sizeof(shards[1].parent_shard_id), "%s", SHARD);
	snprintf(shards[2].parent_shard_id, sizeof(shards[2].parent_shard_id), "shardId-000000000009");
	snprintf(shards[2].adjacent_parent_shard_id, sizeof(shards[2].adjacent_parent_shard_id), "%s", SHARD);
	snprintf(shards[3].parent_shard_id, sizeof(shards[3].parent_shard_id), "shardId-000000000009");
	for (int i = 1; i < 4; i++) {
		snprintf(shards[i].starting_hash_key, sizeof(shards[i].starting_hash_key), "%d", i);
		snprintf(shards[i].ending_hash_key, sizeof(shards[i].ending_hash_key), "%d", i);
	}
	if (fk.list_empty || !fk.closed)
		return KL_OK;
	return consumer_kinesis_children(shards, 4, shard_id, ret);
}

static const struct consumer_kinesis_ops fk_ops = {
	.get_shard_iterator = fk_get_shard_iterator,
	.get_records = fk_get_records,
	.list_children = fk_list_children,
	.stats = NULL,
};

/* ------------------------------------------------------------ fake lease */

static struct {
	int estate_checks;           /* the first N checks say KL_ESTATE (waiting) */
	int lost_after_checks;       /* checks after the N-th say KL_ELEASE_LOST */
	bool lost;
	int checks;
	int shard_end_estate;        /* the first N shard_end calls say KL_ESTATE */
	int shard_end_calls;
	int64_t shard_end_at[8];
	struct lease_shard_list children;
	int releases;
} fl;

static enum kl_err fl_check(void *ctx, const char *key, uint64_t token, int64_t *ret_valid_until_ms)
{
	(void)ctx;
	CU_ASSERT_STRING_EQUAL(key, SHARD);
	CU_ASSERT_EQUAL(token, 7);
	fl.checks++;
	if (fl.lost_after_checks && fl.checks > fl.lost_after_checks)
		fl.lost = true;
	if (fl.lost)
		return KL_ELEASE_LOST;
	if (fl.checks <= fl.estate_checks)
		return KL_ESTATE;
	*ret_valid_until_ms = fake_now + 10000;
	return KL_OK;
}

static enum kl_err fl_shard_end(void *ctx, const char *key, uint64_t token,
				const struct lease_shard *children, size_t n, struct kl_errinfo *info)
{
	(void)ctx;
	(void)token;
	CU_ASSERT_STRING_EQUAL(key, SHARD);
	if (fl.shard_end_calls < 8)
		fl.shard_end_at[fl.shard_end_calls] = fake_now;
	fl.shard_end_calls++;
	ev("E%zu,", n);
	if (fl.lost)
		return KL_ELEASE_LOST;
	if (fl.shard_end_calls <= fl.shard_end_estate)
		return kl_errinfo_set(info, KL_ESTATE, "co-parent lease missing");
	lease_shard_list_done(&fl.children);
	for (size_t i = 0; i < n; i++)
		CU_ASSERT(lease_shard_list_add(&fl.children, &children[i]) == KL_OK);
	return KL_OK;
}

static enum kl_err fl_release(void *ctx, const char *key, uint64_t token, struct kl_errinfo *info)
{
	(void)ctx;
	(void)token;
	(void)info;
	CU_ASSERT_STRING_EQUAL(key, SHARD);
	fl.releases++;
	ev("R,");
	return KL_OK;
}

static const struct consumer_lease_ops fl_ops = { fl_check, fl_shard_end, fl_release };

/* ------------------------------------------------------------ collecting sink */

struct pushed {
	char seq[64];
	uint64_t sub;
	enum kl_transform_result result;
	char reason[256];
	char data[512];
	size_t len;
	char pk[64];
	char ehk[48];
	char shard[32];
	int64_t arrival_ms;
};

static struct {
	struct pushed v[MAX_PUSHES];
	size_t n;
	int attempts;
	int refuse_at[8];            /* push attempt numbers to refuse */
	enum kl_err refuse_err[8];
	int lost_at;                 /* push attempt that answers KL_ELEASE_LOST */
	int64_t blocked_until;       /* fake time */
	int block_after_pushes;      /* when n reaches this, block for block_ms */
	int64_t block_ms;
	int64_t ticks[256];
	int n_ticks;
	int flushes;
	int flush_fail;              /* the first N flushes fail with KL_ETIMEOUT */
	int abandons;
	struct lease_esn resume;
	int64_t resume_at;
	int resumes;
	void (*on_push)(size_t n);   /* after each accepted push */
} ts;

static bool sink_blocked_now(void)
{
	return fake_now < ts.blocked_until;
}

static enum kl_err ts_push(void *ctx, const struct kl_transform_record *rec,
			   const struct xform_result *res, struct kl_errinfo *info)
{
	struct pushed *p;
	int attempt = ++ts.attempts;

	(void)ctx;
	if (attempt == ts.lost_at)
		return kl_errinfo_set(info, KL_ELEASE_LOST, "sink says lost");
	for (int i = 0; i < 8; i++)
		if (ts.refuse_at[i] == attempt) {
			ev("X,");
			return kl_errinfo_set(info, ts.refuse_err[i], "sink full");
		}
	CU_ASSERT_FATAL(ts.n < MAX_PUSHES);
	p = &ts.v[ts.n++];
	memset(p, 0, sizeof(*p));
	snprintf(p->seq, sizeof(p->seq), "%s", rec->sequence_number);
	p->sub = rec->sub_sequence_number;
	p->result = res->result;
	if (res->reason)
		snprintf(p->reason, sizeof(p->reason), "%s", res->reason);
	CU_ASSERT(rec->len < sizeof(p->data));
	p->len = rec->len < sizeof(p->data) ? rec->len : 0;
	memcpy(p->data, rec->data, p->len);
	snprintf(p->pk, sizeof(p->pk), "%s", rec->partition_key);
	snprintf(p->ehk, sizeof(p->ehk), "%s", rec->explicit_hash_key ? rec->explicit_hash_key : "");
	snprintf(p->shard, sizeof(p->shard), "%s", rec->shard_id);
	p->arrival_ms = rec->approximate_arrival_ms;
	ev("P,");
	if (ts.block_after_pushes && ts.n == (size_t)ts.block_after_pushes)
		ts.blocked_until = fake_now + ts.block_ms;
	if (ts.on_push)
		ts.on_push(ts.n);
	return KL_OK;
}

static bool ts_blocked(void *ctx)
{
	(void)ctx;
	return sink_blocked_now();
}

static enum kl_err ts_tick(void *ctx, int64_t now, struct kl_errinfo *info)
{
	(void)ctx;
	(void)info;
	CU_ASSERT_EQUAL(now, fake_now);
	if (ts.n_ticks < 256)
		ts.ticks[ts.n_ticks++] = now;
	return KL_OK;
}

static enum kl_err ts_flush(void *ctx, struct kl_errinfo *info)
{
	(void)ctx;
	ts.flushes++;
	ev("F,");
	if (ts.flushes <= ts.flush_fail)
		return kl_errinfo_set(info, KL_ETIMEOUT, "upload timed out");
	return KL_OK;
}

static void ts_abandon(void *ctx)
{
	(void)ctx;
	ts.abandons++;
	ev("A,");
}

static void ts_resume_after(void *ctx, struct lease_esn *ret)
{
	(void)ctx;
	ts.resumes++;
	ts.resume_at = fake_now;
	*ret = ts.resume;
}

static const struct record_sink_ops ts_ops = {
	ts_push, ts_blocked, ts_tick, ts_flush, ts_abandon, ts_resume_after, NULL, /* push_crashed */
};

/* ------------------------------------------------------------ fixture */

static struct consumer *cons;

static void reset(void)
{
	for (size_t i = 0; i < fk.n; i++)
		free(fk.recs[i].data);
	memset(&fk, 0, sizeof(fk));
	lease_shard_list_done(&fl.children);
	memset(&fl, 0, sizeof(fl));
	memset(&ts, 0, sizeof(ts));
	events[0] = '\0';
	fake_now = T0;
}

static struct consumer_config base_config(void)
{
	struct consumer_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.shard_id = SHARD;
	cfg.lease_token = 7;
	cfg.checkpoint = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	cfg.get_records_limit = 10;
	cfg.seed = 12345;
	cfg.release_on_stop = true;
	return cfg;
}

static struct xform *new_xform(void)
{
	struct kl_errinfo info;
	struct xform *x = NULL;

	kl_errinfo_clear(&info);
	if (xform_new(clickstream, NULL, &info, &x) != KL_OK)
		fprintf(stderr, "xform_new: %s\n", info.message);
	CU_ASSERT_PTR_NOT_NULL_FATAL(x);
	return x;
}

static void make_budget(const struct consumer_config *cfg, struct consumer_budget *budget,
			struct xform **ret_x);

/* Creates the consumer on fake time; *ret_x is the plugin instance. */
static void make(const struct consumer_config *cfg, struct xform **ret_x)
{
	make_budget(cfg, NULL, ret_x);
}

static void done(struct xform *x)
{
	consumer_free(cons);
	cons = NULL;
	xform_free(x);
}

/* Stops the consumer (grace 5 s) at the call after the one that found the
 * fake shard read to its current end. */
static void stop_when_drained(int call)
{
	if (call > 1 && strtoul(fk.calls[call - 2].iterator + 3, NULL, 10) >= fk.n)
		consumer_request_stop(cons, fake_now + 5000);
}

/* The pushes are exactly records [from, to) of the fake shard, in order. */
static void assert_pushed_range(size_t from, size_t to)
{
	CU_ASSERT_EQUAL(ts.n, to - from);
	for (size_t i = 0; i < ts.n && from + i < to; i++) {
		const struct frec *r = &fk.recs[from + i];

		CU_ASSERT_STRING_EQUAL(ts.v[i].seq, r->seq);
		CU_ASSERT_EQUAL(ts.v[i].sub, 0);
		CU_ASSERT(ts.v[i].len == r->len && memcmp(ts.v[i].data, r->data, r->len) == 0);
		CU_ASSERT_STRING_EQUAL(ts.v[i].pk, r->pk);
	}
}

static int count_char(const char *s, char ch)
{
	int n = 0;

	for (; *s; s++)
		n += *s == ch;
	return n;
}

/* ------------------------------------------------------------ tests */

static void test_config_checked(void)
{
	struct consumer_config cfg;
	struct consumer_deps deps;
	struct kl_errinfo info;
	struct consumer *c = NULL;
	struct xform *x;

	reset();
	x = new_xform();
	memset(&deps, 0, sizeof(deps));
	deps.kinesis.ops = &fk_ops;
	deps.lease.ops = &fl_ops;
	deps.sink.ops = &ts_ops;
	deps.xform = x;
	deps.clock = &fake_clock;

	cfg = base_config();
	cfg.get_records_limit = 10001;
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_EINVAL);
	cfg = base_config();
	cfg.checkpoint.kind = LEASE_ESN_NONE;
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_EINVAL);
	cfg = base_config();
	cfg.max_calls_per_sec = 6;
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_EINVAL);
	cfg = base_config();
	cfg.starting_hash_key = "0";
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_EINVAL);
	cfg.ending_hash_key = "not a number";
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_EINVAL);
	cfg = base_config();
	deps.xform = NULL;
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_EINVAL);
	CU_ASSERT_PTR_NULL(c);
	deps.xform = x;
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_OK);
	consumer_free(c);
	xform_free(x);
	CU_ASSERT_STRING_EQUAL(consumer_state_name(CONSUMER_WAITING_ON_PARENTS), "waiting-on-parents");
	CU_ASSERT_STRING_EQUAL(consumer_state_name(CONSUMER_LEASE_LOST), "lease-lost");
}

/* Waits while the lease is not processable, then reads everything once,
 * in order, and stops with a flush and a release. */
static void test_waiting_then_processing_then_stop(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	struct xform *x;

	reset();
	add_events(25);
	fl.estate_checks = 3;
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.state, CONSUMER_WAITING_ON_PARENTS);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 25);
	/* Nothing touched the sink or Kinesis before the lease was processable. */
	CU_ASSERT_EQUAL(ts.resumes, 1);
	CU_ASSERT(ts.resume_at >= T0 + 3 * CONSUMER_DEFAULT_POLL_MS);
	CU_ASSERT_EQUAL(fk.iters[0].type, KINESIS_ITER_TRIM_HORIZON);
	CU_ASSERT(fk.calls[0].at >= ts.resume_at);
	CU_ASSERT_EQUAL(fk.calls[0].limit, 10);
	/* Stop: flush, then release; the answer read at the stop is not pushed. */
	CU_ASSERT_EQUAL(ts.flushes, 1);
	CU_ASSERT_EQUAL(ts.abandons, 0);
	CU_ASSERT_EQUAL(fl.releases, 1);
	CU_ASSERT(strstr(events, "F,R,") != NULL);
	CU_ASSERT_EQUAL(strstr(events, "F,R,")[4], '\0');
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.state, CONSUMER_STOPPED);
	CU_ASSERT_EQUAL(m.records_read, 25);
	CU_ASSERT_EQUAL(m.pushed, 25);
	CU_ASSERT_EQUAL(m.plugin_ok, 25);
	CU_ASSERT_EQUAL(m.user_records, 25);
	CU_ASSERT_EQUAL(m.get_records_calls, (uint64_t)fk.n_calls);
	CU_ASSERT_EQUAL(m.flushes, 1);
	CU_ASSERT_STRING_EQUAL(m.last_pushed.seq, fk.recs[24].seq);
	CU_ASSERT(m.state_ms[CONSUMER_WAITING_ON_PARENTS] >= 3 * CONSUMER_DEFAULT_POLL_MS);
	CU_ASSERT(m.state_ms[CONSUMER_PROCESSING] > 0);
	CU_ASSERT_EQUAL(m.state_ms[CONSUMER_DONE], 0);
	CU_ASSERT_STRING_EQUAL(ts.v[0].shard, SHARD);
	CU_ASSERT_EQUAL(ts.v[3].arrival_ms, ARRIVAL_MS + 3);
	/* run() only runs once. */
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	done(x);
}

/* Behind (full pages, MillisBehindLatest 0 as on kinesalite): 200 ms
 * apart, no idle; caught up: idle 1000 ms. Never 6 calls in a second. */
static void test_pacing_full_pages(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(50);
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 50);
	CU_ASSERT_FATAL(fk.n_calls >= 7);
	for (int i = 1; i <= 5; i++)  /* calls 2..6 follow full pages */
		CU_ASSERT_EQUAL(fk.calls[i].at - fk.calls[i - 1].at, 200);
	/* Call 6 read an empty page: the next one waits the idle time. */
	CU_ASSERT_EQUAL(fk.calls[6].at - fk.calls[5].at, 1000);
	for (int i = 5; i < fk.n_calls; i++)
		CU_ASSERT(fk.calls[i].at - fk.calls[i - 5].at >= 1000);
	done(x);
}

/* Behind by MillisBehindLatest with short pages: no idle either. */
static void test_pacing_millis_behind(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(20);
	fk.page_max = 4;
	fk.mbl_behind = 3000;
	fk.hook = stop_when_drained;
	cfg.idle_ms = 700;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 20);
	CU_ASSERT_FATAL(fk.n_calls >= 7);
	/* Calls 1..4 leave records behind (MBL > 0): 200 ms. Call 5 reads the
	 * last 4 (MBL 0, not a full page): idle. */
	for (int i = 1; i <= 4; i++)
		CU_ASSERT_EQUAL(fk.calls[i].at - fk.calls[i - 1].at, 200);
	CU_ASSERT_EQUAL(fk.calls[5].at - fk.calls[4].at, 700);
	done(x);
}

/* A slower configured rate spaces calls further apart. */
static void test_pacing_rate(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(30);
	fk.hook = stop_when_drained;
	cfg.max_calls_per_sec = 2;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 30);
	CU_ASSERT_EQUAL(fk.calls[1].at - fk.calls[0].at, 500);
	CU_ASSERT_EQUAL(fk.calls[2].at - fk.calls[1].at, 500);
	done(x);
}

/* Throttling: exponential backoff with full jitter on top of the pacing,
 * exactly as the seeded jitter says, and within its bounds. */
static void test_throttle_backoff(void)
{
	struct consumer_config cfg = base_config();
	struct aws_retry_policy pol;
	struct consumer_metrics m;
	struct kl_rng rng;
	struct xform *x;
	int64_t total = 0;

	reset();
	add_events(40);
	for (int n = 2; n <= 8; n++)
		fk.fault[n] = KL_ETHROTTLED;
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 40);
	memset(&pol, 0, sizeof(pol));
	pol.base_delay_ms = CONSUMER_DEFAULT_BACKOFF_BASE_MS;
	pol.throttle_base_delay_ms = CONSUMER_DEFAULT_THROTTLE_BASE_MS;
	pol.max_delay_ms = CONSUMER_DEFAULT_BACKOFF_MAX_MS;
	kl_rng_seed_value(&rng, cfg.seed);
	CU_ASSERT_FATAL(fk.n_calls > 9);
	for (int k = 1; k <= 7; k++) {
		int64_t d = aws_backoff_ms(&pol, &rng, k, 1);
		int64_t bound = 500LL << (k - 1);
		int64_t gap = fk.calls[k + 1].at - fk.calls[k].at;

		if (bound > 10000)
			bound = 10000;
		CU_ASSERT(gap >= 200);
		CU_ASSERT(gap <= (bound > 200 ? bound : 200));
		CU_ASSERT_EQUAL(gap, d > 200 ? d : 200);
		/* The same iterator is tried again. */
		CU_ASSERT_STRING_EQUAL(fk.calls[k + 1].iterator, fk.calls[1].iterator);
		total += gap;
	}
	/* Full jitter over 7 doublings from 500 ms cannot all be tiny. */
	CU_ASSERT(total > 7 * 200);
	/* After a success the streak starts over: back to 200 ms. */
	CU_ASSERT_EQUAL(fk.calls[9].at - fk.calls[8].at, 200);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.throttles, 7);
	CU_ASSERT_EQUAL(m.retries, 7);
	CU_ASSERT_EQUAL(m.last_error, KL_ETHROTTLED);
	done(x);
}

/* Transient errors: retried with the same iterator after a backoff of at
 * most the base (first retry). A final error: a fresh iterator after the
 * last record read. */
static void test_transient_and_final_errors(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	struct xform *x;

	reset();
	add_events(40);
	fk.fault[2] = KL_ETIMEOUT;
	fk.fault[4] = KL_EAWS;
	fk.iter_fault[1] = KL_ESERVER;  /* the second GetShardIterator fails once */
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 40);
	CU_ASSERT_STRING_EQUAL(fk.calls[2].iterator, fk.calls[1].iterator);
	CU_ASSERT(fk.calls[2].at - fk.calls[1].at >= 200);
	CU_ASSERT(fk.calls[2].at - fk.calls[1].at <= 200 + CONSUMER_DEFAULT_BACKOFF_BASE_MS);
	/* Call 4 (EAWS) after call 3 read records 10..19. */
	CU_ASSERT_EQUAL_FATAL(fk.n_iters, 3);
	CU_ASSERT_EQUAL(fk.iters[1].type, KINESIS_ITER_AFTER_SEQUENCE_NUMBER);
	CU_ASSERT_STRING_EQUAL(fk.iters[1].seq, fk.recs[19].seq);
	CU_ASSERT_EQUAL(fk.iters[2].type, KINESIS_ITER_AFTER_SEQUENCE_NUMBER);
	CU_ASSERT_STRING_EQUAL(fk.calls[4].iterator, "it-20");
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.retries, 3);
	CU_ASSERT_EQUAL(m.throttles, 0);
	CU_ASSERT_EQUAL(m.get_iterator_calls, 3);
	done(x);
}

/* ExpiredIterator: a new iterator AFTER_SEQUENCE_NUMBER of the last record
 * read, no record lost or repeated. */
static void test_expired_iterator(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	struct xform *x;

	reset();
	add_events(35);
	fk.fault[3] = KL_EEXPIRED;
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 35);
	CU_ASSERT_EQUAL_FATAL(fk.n_iters, 2);
	CU_ASSERT_EQUAL(fk.iters[1].type, KINESIS_ITER_AFTER_SEQUENCE_NUMBER);
	CU_ASSERT_STRING_EQUAL(fk.iters[1].seq, fk.recs[19].seq);
	CU_ASSERT_STRING_EQUAL(fk.calls[3].iterator, "it-20");
	CU_ASSERT_EQUAL(fk.calls[3].at - fk.calls[2].at, 200);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.iterator_expired, 1);
	done(x);
}

/* Expired before anything was read: back to the resume point, AT the
 * checkpoint's sequence number (and the checkpoint record is dropped). */
static void test_expired_before_any_read(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(12);
	fk.fault[1] = KL_EEXPIRED;
	fk.hook = stop_when_drained;
	ts.resume.kind = LEASE_ESN_NONE;  /* the sink has no answer: the grant's checkpoint */
	cfg.checkpoint.kind = LEASE_ESN_SEQ;
	snprintf(cfg.checkpoint.seq, sizeof(cfg.checkpoint.seq), "%s", fk.recs[4].seq);
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(5, 12);
	CU_ASSERT_EQUAL_FATAL(fk.n_iters, 2);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(fk.iters[i].type, KINESIS_ITER_AT_SEQUENCE_NUMBER);
		CU_ASSERT_STRING_EQUAL(fk.iters[i].seq, fk.recs[4].seq);
	}
	done(x);
}

/* Sentinels map to their iterator types; AT_TIMESTAMP carries the time. */
static void test_sentinel_positions(void)
{
	static const struct {
		enum lease_esn_kind kind;
		enum kinesis_iterator_type type;
		size_t first;
	} cases[] = {
		{ LEASE_ESN_TRIM_HORIZON, KINESIS_ITER_TRIM_HORIZON, 0 },
		{ LEASE_ESN_LATEST, KINESIS_ITER_LATEST, 6 },
		{ LEASE_ESN_AT_TIMESTAMP, KINESIS_ITER_AT_TIMESTAMP, 2 },
	};

	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		struct consumer_config cfg = base_config();
		struct xform *x;

		reset();
		add_events(6);
		fk.hook = stop_when_drained;
		ts.resume = lease_esn_sentinel(cases[i].kind);
		cfg.at_timestamp_ms = ARRIVAL_MS + 2;
		make(&cfg, &x);
		CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
		CU_ASSERT_EQUAL(fk.iters[0].type, cases[i].type);
		if (cases[i].kind == LEASE_ESN_AT_TIMESTAMP)
			CU_ASSERT_EQUAL(fk.iters[0].timestamp_ms, ARRIVAL_MS + 2);
		assert_pushed_range(cases[i].first, 6);
		done(x);
	}
}

/* Resuming inside a KPL aggregate: AT_SEQUENCE_NUMBER, then the user
 * records at or below the sub-sequence number are dropped. */
static void test_esn_filter_in_aggregate(void)
{
	struct consumer_config cfg = base_config();
	struct kpl_enc_record sub[5];
	char data[5][64], pks[5][8];
	struct consumer_metrics m;
	struct buf agg;
	struct xform *x;

	reset();
	add_events(2);
	buf_init(&agg, 0);
	for (int i = 0; i < 5; i++) {
		snprintf(data[i], sizeof(data[i]), "{\"event\":\"click\",\"sub\":%d}", i);
		snprintf(pks[i], sizeof(pks[i]), "k%d", i);
		sub[i].partition_key = pks[i];
		sub[i].explicit_hash_key = i == 4 ? "12345" : NULL;
		sub[i].data = data[i];
		sub[i].len = strlen(data[i]);
	}
	CU_ASSERT_FATAL(kpl_encode(sub, 5, &agg) == KL_OK);
	add_rec("outer", agg.data, agg.len);  /* record 2 */
	add_events(2);
	buf_done(&agg);
	fk.hook = stop_when_drained;
	ts.resume.kind = LEASE_ESN_SEQ;
	snprintf(ts.resume.seq, sizeof(ts.resume.seq), "%s", fk.recs[2].seq);
	ts.resume.subseq = 2;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	CU_ASSERT_EQUAL(fk.iters[0].type, KINESIS_ITER_AT_SEQUENCE_NUMBER);
	CU_ASSERT_STRING_EQUAL(fk.iters[0].seq, fk.recs[2].seq);
	CU_ASSERT_EQUAL_FATAL(ts.n, 4);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_STRING_EQUAL(ts.v[i].seq, fk.recs[2].seq);
		CU_ASSERT_EQUAL(ts.v[i].sub, (uint64_t)(3 + i));
		CU_ASSERT(ts.v[i].len == strlen(data[3 + i]) &&
			  memcmp(ts.v[i].data, data[3 + i], ts.v[i].len) == 0);
		CU_ASSERT_STRING_EQUAL(ts.v[i].pk, pks[3 + i]);
	}
	CU_ASSERT_STRING_EQUAL(ts.v[0].ehk, "");
	CU_ASSERT_STRING_EQUAL(ts.v[1].ehk, "12345");
	CU_ASSERT_STRING_EQUAL(ts.v[2].seq, fk.recs[3].seq);
	CU_ASSERT_EQUAL(ts.v[2].sub, 0);
	CU_ASSERT_STRING_EQUAL(ts.v[3].seq, fk.recs[4].seq);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.esn_filtered, 3);
	CU_ASSERT_EQUAL(m.kpl_aggregates, 1);
	CU_ASSERT_EQUAL(m.user_records, 7);
	CU_ASSERT_EQUAL(m.records_read, 3);
	CU_ASSERT_EQUAL(m.last_pushed.subseq, 0);
	done(x);
}

/* An aggregate with a user record outside the lease's hash range is
 * dropped whole and counted; one inside is delivered. */
static void test_hash_range_filter(void)
{
	struct consumer_config cfg = base_config();
	struct kpl_enc_record sub[3];
	struct consumer_metrics m;
	struct buf agg;
	struct xform *x;

	reset();
	buf_init(&agg, 0);
	for (int i = 0; i < 3; i++) {
		sub[i].partition_key = "p";
		sub[i].explicit_hash_key = "100";
		sub[i].data = "{\"event\":\"in\"}";
		sub[i].len = strlen("{\"event\":\"in\"}");
	}
	CU_ASSERT_FATAL(kpl_encode(sub, 3, &agg) == KL_OK);
	add_rec("a", agg.data, agg.len);
	buf_reset(&agg);
	sub[1].explicit_hash_key = "1000";  /* outside [0, 999] */
	CU_ASSERT_FATAL(kpl_encode(sub, 3, &agg) == KL_OK);
	add_rec("b", agg.data, agg.len);
	buf_done(&agg);
	add_events(1);
	fk.hook = stop_when_drained;
	cfg.starting_hash_key = "0";
	cfg.ending_hash_key = "999";
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	CU_ASSERT_EQUAL_FATAL(ts.n, 4);
	CU_ASSERT_STRING_EQUAL(ts.v[2].seq, fk.recs[0].seq);
	CU_ASSERT_EQUAL(ts.v[2].sub, 2);
	CU_ASSERT_STRING_EQUAL(ts.v[3].seq, fk.recs[2].seq);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.hash_range_dropped_aggregates, 1);
	CU_ASSERT_EQUAL(m.hash_range_dropped_records, 3);
	CU_ASSERT_EQUAL(m.records_read, 3);
	done(x);
}

/* OK / DROPPED (bot) / FAILED (malformed, with the reason) reach the sink
 * with the plugin's verdict and are counted. */
static void test_plugin_results(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	const struct xform_stats *xs;
	struct xform *x;
	const char *bot = "{\"event\":\"view\",\"user_agent\":\"Googlebot/2.1\"}";
	const char *bad = "{\"event\": \"view\"";

	reset();
	add_events(1);
	add_rec("b", bot, strlen(bot));
	add_rec("c", bad, strlen(bad));
	add_events(1);
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 4);
	CU_ASSERT_EQUAL(ts.v[0].result, KL_TRANSFORM_OK);
	CU_ASSERT_EQUAL(ts.v[1].result, KL_TRANSFORM_DROPPED);
	CU_ASSERT_EQUAL(ts.v[2].result, KL_TRANSFORM_FAILED);
	CU_ASSERT(ts.v[2].reason[0] != '\0');
	CU_ASSERT_EQUAL(ts.v[3].result, KL_TRANSFORM_OK);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.plugin_ok, 2);
	CU_ASSERT_EQUAL(m.plugin_dropped, 1);
	CU_ASSERT_EQUAL(m.plugin_failed, 1);
	xs = xform_get_stats(x);
	CU_ASSERT_EQUAL(xs->records, 4);
	done(x);
}

/* Lease lost between GetRecords and the push of its page: nothing of that
 * page reaches the sink, the sink is abandoned, nothing is flushed. */
static void lose_at_call_3(int call)
{
	if (call == 3)
		fl.lost = true;
}

static void test_lease_lost_before_push(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	struct xform *x;

	reset();
	add_events(40);
	fk.hook = lose_at_call_3;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_LEASE_LOST);
	assert_pushed_range(0, 20);
	CU_ASSERT_EQUAL(fk.n_calls, 3);
	CU_ASSERT_EQUAL(ts.abandons, 1);
	CU_ASSERT_EQUAL(ts.flushes, 0);
	CU_ASSERT_EQUAL(fl.shard_end_calls, 0);
	CU_ASSERT_EQUAL(fl.releases, 0);
	CU_ASSERT_EQUAL(events[strlen(events) - 2], 'A');
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.state, CONSUMER_LEASE_LOST);
	done(x);
}

/* The sink says the lease is lost: stop at once, no further push. */
static void test_lease_lost_from_sink(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(30);
	ts.lost_at = 14;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_LEASE_LOST);
	assert_pushed_range(0, 13);
	CU_ASSERT_EQUAL(ts.attempts, 14);
	CU_ASSERT_EQUAL(fk.n_calls, 2);
	CU_ASSERT_EQUAL(ts.abandons, 1);
	CU_ASSERT_EQUAL(ts.flushes, 0);
	done(x);
}

/* Lost while waiting on parents: the sink was never opened, so it sees no
 * call at all, and Kinesis is never asked. */
static void test_lease_lost_while_waiting(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(3);
	fl.estate_checks = 1000000;
	fl.lost_after_checks = 4;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_LEASE_LOST);
	CU_ASSERT_EQUAL(fl.checks, 5);
	CU_ASSERT_EQUAL(ts.resumes, 0);
	CU_ASSERT_EQUAL(ts.abandons, 0);
	CU_ASSERT_EQUAL(ts.flushes, 0);
	CU_ASSERT_EQUAL(fk.n_iters, 0);
	CU_ASSERT_EQUAL(fk.n_calls, 0);
	done(x);
}

/* Lost during a long idle wait: noticed by the wait's lease polling within
 * poll_ms, not at the end of the idle time. */
static int64_t lost_at;

static void lose_after_3(size_t n)
{
	if (n == 3) {
		fl.lost = true;
		lost_at = fake_now;
	}
}

static void test_lease_lost_while_idle(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(3);
	cfg.idle_ms = 60000;
	ts.on_push = lose_after_3;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_LEASE_LOST);
	assert_pushed_range(0, 3);
	CU_ASSERT_EQUAL(fk.n_calls, 1);
	CU_ASSERT(fake_now - lost_at <= CONSUMER_DEFAULT_POLL_MS);
	CU_ASSERT_EQUAL(ts.abandons, 1);
	CU_ASSERT_EQUAL(ts.flushes, 0);
	done(x);
}

/* Stop requested: reading stops at once, the sink is flushed, the lease
 * released; the page read when the stop came is not pushed. */
static void stop_at_call_3(int call)
{
	if (call == 3)
		consumer_request_stop(cons, fake_now + 10000);
}

static void test_shutdown_flushes(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(50);
	fk.hook = stop_at_call_3;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 20);
	CU_ASSERT_EQUAL(fk.n_calls, 3);
	CU_ASSERT_EQUAL(ts.flushes, 1);
	CU_ASSERT_EQUAL(ts.abandons, 0);
	CU_ASSERT_EQUAL(fl.releases, 1);
	CU_ASSERT(strstr(events, "G,F,R,") != NULL);
	done(x);
}

/* A stop in the middle of a page: no further record is pushed. */
static void stop_after_5(size_t n)
{
	if (n == 5)
		consumer_request_stop(cons, fake_now + 10000);
}

static void test_shutdown_mid_page(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(10);
	ts.on_push = stop_after_5;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 5);
	CU_ASSERT_EQUAL(ts.flushes, 1);
	CU_ASSERT_EQUAL(fl.releases, 1);
	CU_ASSERT(strstr(events, "P,F,R,") != NULL);
	done(x);
}

/* The flush keeps failing: retried until the grace deadline, then the
 * sink is abandoned and the lease is not released. */
static void test_shutdown_deadline_abandons(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	struct xform *x;

	reset();
	add_events(50);
	fk.hook = stop_at_call_3;
	ts.flush_fail = 1000;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_ABANDONED);
	CU_ASSERT(ts.flushes >= 2);
	CU_ASSERT_EQUAL(ts.abandons, 1);
	CU_ASSERT_EQUAL(fl.releases, 0);
	CU_ASSERT(fake_now >= fk.calls[2].at + 10000);
	CU_ASSERT(fake_now <= fk.calls[2].at + 10000 + 1000);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.state, CONSUMER_ABANDONED);
	CU_ASSERT_EQUAL(m.flushes, 0);
	done(x);
}

/* Shard end with ChildShards: drained, flushed, then shard_end with the
 * children; no ListShards. */
static void test_shard_end_child_shards(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	const char *f, *e;
	struct xform *x;

	reset();
	add_events(15);
	fk.closed = true;
	fk.child_shards = true;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_DONE);
	assert_pushed_range(0, 15);
	CU_ASSERT_EQUAL(fk.list_calls, 0);
	CU_ASSERT_EQUAL(fl.shard_end_calls, 1);
	f = strstr(events, "F,");
	e = strstr(events, "E2,");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT(f < e);
	CU_ASSERT_EQUAL(count_char(events, 'F'), 1);
	/* Nothing after SHARD_END: no push, no read, no release (the lease
	 * layer released it). */
	CU_ASSERT_STRING_EQUAL(e, "E2,");
	CU_ASSERT_EQUAL(fl.releases, 0);
	CU_ASSERT_EQUAL_FATAL(fl.children.n, 2);
	CU_ASSERT_STRING_EQUAL(fl.children.v[0].shard_id, "shardId-000000000001");
	CU_ASSERT_STRING_EQUAL(fl.children.v[0].parent_id, SHARD);
	CU_ASSERT_PTR_NULL(fl.children.v[0].adjacent_parent_id);
	CU_ASSERT_STRING_EQUAL(fl.children.v[1].starting_hash_key,
			       "170141183460469231731687303715884105728");
	CU_ASSERT_STRING_EQUAL(fl.children.v[1].ending_hash_key, LEASE_HASH_KEY_MAX);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.state, CONSUMER_DONE);
	CU_ASSERT(m.state_ms[CONSUMER_PROCESSING] > 0);
	done(x);
}

/* Shard end as kinesalite shows it (no ChildShards): children through
 * list_children (ParentShardId or AdjacentParentShardId). A merge whose
 * co-parent lease is missing (KL_ESTATE) is retried every poll_ms. */
static void test_shard_end_list_children_merge_retry(void)
{
	struct consumer_config cfg = base_config();
	struct xform *x;

	reset();
	add_events(12);
	fk.closed = true;
	fl.shard_end_estate = 2;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_DONE);
	assert_pushed_range(0, 12);
	CU_ASSERT_EQUAL(fk.list_calls, 1);
	CU_ASSERT_EQUAL(fl.shard_end_calls, 3);
	CU_ASSERT_EQUAL(fl.shard_end_at[1] - fl.shard_end_at[0], CONSUMER_DEFAULT_POLL_MS);
	CU_ASSERT_EQUAL(fl.shard_end_at[2] - fl.shard_end_at[1], CONSUMER_DEFAULT_POLL_MS);
	CU_ASSERT_EQUAL(ts.flushes, 1);
	CU_ASSERT(strstr(events, "L,F,E2,E2,E2,") != NULL);
	CU_ASSERT_EQUAL_FATAL(fl.children.n, 2);
	CU_ASSERT_STRING_EQUAL(fl.children.v[0].shard_id, "shardId-000000000001");
	CU_ASSERT_STRING_EQUAL(fl.children.v[1].shard_id, "shardId-000000000002");
	CU_ASSERT_STRING_EQUAL(fl.children.v[1].parent_id, "shardId-000000000009");
	CU_ASSERT_STRING_EQUAL(fl.children.v[1].adjacent_parent_id, SHARD);
	done(x);
}

/* An answer with neither a next iterator nor an end (no children): read
 * again with the same iterator; the repeated records are not pushed twice. */
static void test_neither_iterator_nor_end(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	struct xform *x;

	reset();
	add_events(30);
	fk.neither[2] = true;
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 30);
	CU_ASSERT_EQUAL(fk.list_calls, 1);
	CU_ASSERT_STRING_EQUAL(fk.calls[2].iterator, fk.calls[1].iterator);
	CU_ASSERT(fk.calls[2].at - fk.calls[1].at >= 200);
	CU_ASSERT_EQUAL(fl.shard_end_calls, 0);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.esn_filtered, 10);
	CU_ASSERT_EQUAL(m.retries, 1);
	done(x);
}

/* Backpressure: no GetRecords while the sink is blocked, tick() at least
 * once a second meanwhile, reading resumes afterwards. */
static void test_blocked_sink(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	struct xform *x;
	int during = 0;
	int64_t from, until;

	reset();
	add_events(40);
	ts.block_after_pushes = 10;
	ts.block_ms = 3500;
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 40);
	CU_ASSERT_EQUAL(fk.read_while_blocked, 0);
	from = fk.calls[0].at;
	until = from + 3500;
	CU_ASSERT(fk.calls[1].at >= until);
	CU_ASSERT(fk.calls[1].at <= until + 1000);
	for (int i = 0; i < ts.n_ticks; i++)
		if (ts.ticks[i] > from && ts.ticks[i] <= until)
			during++;
	CU_ASSERT(during >= 3);
	for (int i = 1; i < ts.n_ticks; i++)
		if (ts.ticks[i] <= until)
			CU_ASSERT(ts.ticks[i] - ts.ticks[i - 1] <= 1000);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.blocked_waits, 1);
	done(x);
}

/* A refused push: the same record (same transform result) is offered
 * again after a backoff, the rest of the page stays in memory (no
 * GetRecords meanwhile), nothing is lost or duplicated. */
static void test_push_retry_same_record(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_metrics m;
	const struct xform_stats *xs;
	const char *x1, *x3;
	struct xform *x;

	reset();
	add_events(25);
	ts.refuse_at[0] = 4;
	ts.refuse_err[0] = KL_ENOSPC;
	ts.refuse_at[1] = 5;
	ts.refuse_err[1] = KL_ENOSPC;
	ts.refuse_at[2] = 9;
	ts.refuse_err[2] = KL_ETIMEOUT;
	fk.hook = stop_when_drained;
	make(&cfg, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 25);
	CU_ASSERT_EQUAL(ts.attempts, 28);
	/* Attempts 1-3 push records 0-2; 4 and 5 refuse record 3; 6 takes it. */
	x1 = strstr(events, "X,");
	CU_ASSERT_PTR_NOT_NULL_FATAL(x1);
	CU_ASSERT(strncmp(x1, "X,X,P,P,P,X,P,", 14) == 0);
	/* No read between the first refusal and the end of the page. */
	x3 = strstr(events, "G,");
	CU_ASSERT(x3 < x1);
	CU_ASSERT(strstr(x1, "G,") > x1 + 14);
	xs = xform_get_stats(x);
	CU_ASSERT_EQUAL(xs->records, 25);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.push_retries, 3);
	CU_ASSERT_EQUAL(m.plugin_ok, 25);
	CU_ASSERT_EQUAL(m.pushed, 25);
	done(x);
}

/* The real clock: a stop request wakes a consumer sleeping in a long idle
 * wait (on its own thread). */
static void *run_thread(void *arg)
{
	return (void *)(intptr_t)consumer_run(arg);
}

static void test_real_clock_stop_wakes(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_deps deps;
	struct kl_errinfo info;
	struct consumer *c = NULL;
	struct consumer_metrics m;
	struct xform *x;
	pthread_t th;
	void *res;
	int64_t t0, waited;

	reset();
	add_events(3);
	cfg.idle_ms = 60000;
	x = new_xform();
	memset(&deps, 0, sizeof(deps));
	deps.kinesis.ops = &fk_ops;
	deps.lease.ops = &fl_ops;
	deps.sink.ops = &ts_ops;
	deps.xform = x;
	deps.clock = NULL;
	CU_ASSERT_FATAL(consumer_new(&cfg, &deps, &c, &info) == KL_OK);
	CU_ASSERT_FATAL(pthread_create(&th, NULL, run_thread, c) == 0);
	for (int i = 0; i < 500; i++) {  /* until the first page was pushed */
		consumer_get_metrics(c, &m);
		if (m.pushed == 3)
			break;
		kl_sleep_ms(10);
	}
	CU_ASSERT_EQUAL(m.pushed, 3);
	kl_sleep_ms(50);
	t0 = kl_mono_ms();
	consumer_request_stop(c, kl_mono_ms() + 5000);
	pthread_join(th, &res);
	waited = kl_mono_ms() - t0;
	CU_ASSERT_EQUAL((intptr_t)res, CONSUMER_STOPPED);
	CU_ASSERT(waited < 1000);
	CU_ASSERT_EQUAL(fk.n_calls, 1);
	CU_ASSERT_EQUAL(ts.flushes, 1);
	consumer_free(c);
	xform_free(x);
}

/* ------------------------------------------------------------ page budget */

/* The semaphore alone: slots, timeouts, reuse of the same body, wake. */
static atomic_int take_done;

static void *take_long(void *arg)
{
	void *r = consumer_budget_take(arg, 10000);

	atomic_store(&take_done, 1);
	return r;
}

static void test_budget_semaphore(void)
{
	struct consumer_budget *b = NULL;
	struct buf *s1, *s2, *s3;
	pthread_t th;
	void *res = (void *)1;
	int64_t t0;

	CU_ASSERT_EQUAL(consumer_budget_new(0, 0, &b), KL_EINVAL);
	consumer_budget_free(NULL);
	CU_ASSERT_FATAL(consumer_budget_new(2, 1 << 20, &b) == KL_OK);
	CU_ASSERT_EQUAL(consumer_budget_available(b), 2);
	s1 = consumer_budget_take(b, 0);
	s2 = consumer_budget_take(b, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
	CU_ASSERT_PTR_NOT_EQUAL(s1, s2);
	CU_ASSERT_EQUAL(s1->cap, 1 << 20);
	CU_ASSERT_EQUAL(consumer_budget_available(b), 0);
	/* Full: a take waits its timeout, then gives up. */
	t0 = kl_mono_ms();
	CU_ASSERT_PTR_NULL(consumer_budget_take(b, 50));
	CU_ASSERT(kl_mono_ms() - t0 >= 45);
	/* A body given back comes back with its allocation. */
	CU_ASSERT_FATAL(buf_append(s1, "body", 4) == KL_OK);
	consumer_budget_give(b, s1);
	s3 = consumer_budget_take(b, 0);
	CU_ASSERT_PTR_EQUAL(s3, s1);
	CU_ASSERT(s3->alloc > 0);
	/* wake() ends a long wait at once, with nothing taken (woken again
	 * until it returns: the thread may not be waiting yet at the first). */
	atomic_store(&take_done, 0);
	CU_ASSERT_FATAL(pthread_create(&th, NULL, take_long, b) == 0);
	kl_sleep_ms(50);
	t0 = kl_mono_ms();
	while (!atomic_load(&take_done) && kl_mono_ms() - t0 < 5000) {
		consumer_budget_wake(b);
		kl_sleep_ms(10);
	}
	pthread_join(th, &res);
	CU_ASSERT_PTR_NULL(res);
	CU_ASSERT(kl_mono_ms() - t0 < 5000);
	atomic_store(&take_done, 0);
	/* give() hands the slot to a waiter. */
	CU_ASSERT_FATAL(pthread_create(&th, NULL, take_long, b) == 0);
	kl_sleep_ms(50);
	consumer_budget_give(b, s2);
	pthread_join(th, &res);
	CU_ASSERT_PTR_EQUAL(res, s2);
	CU_ASSERT_EQUAL(consumer_budget_available(b), 0);
	consumer_budget_give(b, s2);
	consumer_budget_give(b, s3);
	CU_ASSERT_EQUAL(consumer_budget_available(b), 2);
	consumer_budget_free(b);
}

/* get_records_buf: what the consumer lends, and whether it holds a slot. */
static struct {
	struct consumer_budget *budget;
	int calls;
	int slot_held;            /* calls made while no slot was free */
	struct buf *body;         /* the body lent by the last call */
	const char *data;         /* its bytes' address after the call */
	int data_moved;           /* calls after the first whose bytes moved */
} fb;

static enum kl_err fk_get_records_buf(void *ctx, const char *iterator, int limit,
				      struct buf *body, struct kinesis_records **ret,
				      struct kl_errinfo *info)
{
	static char filler[100000];
	enum kl_err err;

	fb.calls++;
	if (consumer_budget_available(fb.budget) == 0)
		fb.slot_held++;
	fb.body = body;
	/* As the production op: the body goes into the lent buffer. */
	buf_reset(body);
	CU_ASSERT_FATAL(buf_append(body, filler, sizeof(filler)) == KL_OK);
	if (fb.calls > 1 && body->data != fb.data)
		fb.data_moved++;
	fb.data = body->data;
	err = fk_get_records(ctx, iterator, limit, ret, info);
	return err;
}

/* The test sink on the real clock: tick() counts instead of checking fake time. */
static int real_ticks;

static enum kl_err ts_tick_real(void *ctx, int64_t now, struct kl_errinfo *info)
{
	(void)ctx;
	(void)now;
	(void)info;
	real_ticks++;
	return KL_OK;
}

static const struct record_sink_ops ts_real_ops = {
	ts_push, ts_blocked, ts_tick_real, ts_flush, ts_abandon, ts_resume_after, NULL,
};

static const struct consumer_kinesis_ops fk_buf_ops = {
	.get_shard_iterator = fk_get_shard_iterator,
	.get_records = fk_get_records,
	.list_children = fk_list_children,
	.stats = NULL,
	.get_records_buf = fk_get_records_buf,
};

/* With a budget: every GetRecords holds a slot and gets the same body
 * buffer, whose allocation is kept; failed calls and the end give the
 * slot back. */
static void test_budget_slot_per_page(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_deps deps;
	struct kl_errinfo info;
	struct consumer_metrics m;
	struct xform *x;

	reset();
	memset(&fb, 0, sizeof(fb));
	add_events(35);
	fk.fault[2] = KL_EHTTP;   /* a failed call in between */
	fk.hook = stop_when_drained;
	CU_ASSERT_FATAL(consumer_budget_new(1, 0, &fb.budget) == KL_OK);
	x = new_xform();
	memset(&deps, 0, sizeof(deps));
	deps.kinesis.ops = &fk_buf_ops;
	deps.lease.ops = &fl_ops;
	deps.sink.ops = &ts_ops;
	deps.xform = x;
	deps.clock = &fake_clock;
	deps.budget = fb.budget;
	kl_errinfo_clear(&info);
	CU_ASSERT_FATAL(consumer_new(&cfg, &deps, &cons, &info) == KL_OK);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 35);
	CU_ASSERT(fb.calls >= 5);
	CU_ASSERT_EQUAL(fb.calls, fk.n_calls);
	CU_ASSERT_EQUAL(fb.slot_held, fb.calls);
	CU_ASSERT_EQUAL(fb.data_moved, 0);
	CU_ASSERT(fb.body->alloc >= 100000);
	CU_ASSERT_EQUAL(consumer_budget_available(fb.budget), 1);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.budget_waits, 0);
	consumer_free(cons);
	cons = NULL;
	xform_free(x);
	consumer_budget_free(fb.budget);
}

/* A consumer whose budget has no free slot reads nothing, keeps ticking,
 * reads once a slot comes back, and stops at once while waiting. */
static void test_budget_wait_and_stop(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_deps deps;
	struct kl_errinfo info;
	struct consumer *c = NULL;
	struct consumer_metrics m;
	struct buf *mine;
	struct xform *x;
	pthread_t th;
	void *res;
	int64_t t0;
	uint64_t waits;

	reset();
	memset(&fb, 0, sizeof(fb));
	add_events(3);
	cfg.idle_ms = 1;          /* keep asking for pages once caught up */
	cfg.tick_ms = 50;
	CU_ASSERT_FATAL(consumer_budget_new(1, 0, &fb.budget) == KL_OK);
	mine = consumer_budget_take(fb.budget, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mine);
	x = new_xform();
	memset(&deps, 0, sizeof(deps));
	deps.kinesis.ops = &fk_buf_ops;
	deps.lease.ops = &fl_ops;
	deps.sink.ops = &ts_real_ops;
	deps.xform = x;
	deps.clock = NULL;
	deps.budget = fb.budget;
	CU_ASSERT_FATAL(consumer_new(&cfg, &deps, &c, &info) == KL_OK);
	CU_ASSERT_FATAL(pthread_create(&th, NULL, run_thread, c) == 0);
	real_ticks = 0;
	kl_sleep_ms(300);
	consumer_get_metrics(c, &m);
	CU_ASSERT_EQUAL(fk.n_calls, 0);
	CU_ASSERT(m.budget_waits >= 2);
	CU_ASSERT(real_ticks >= 1);     /* the sink is ticked while waiting */
	consumer_budget_give(fb.budget, mine);
	for (int i = 0; i < 500; i++) {  /* until the first page was pushed */
		consumer_get_metrics(c, &m);
		if (m.pushed == 3)
			break;
		kl_sleep_ms(10);
	}
	CU_ASSERT_EQUAL(m.pushed, 3);
	/* The page is done: the slot is free again; take it away once more,
	 * then stop the consumer while it waits for it. */
	for (int i = 0; i < 100 && !(mine = consumer_budget_take(fb.budget, 10)); i++)
		;
	CU_ASSERT_PTR_NOT_NULL_FATAL(mine);
	consumer_get_metrics(c, &m);
	waits = m.budget_waits;
	kl_sleep_ms(500);
	consumer_get_metrics(c, &m);
	CU_ASSERT(m.budget_waits > waits);
	t0 = kl_mono_ms();
	consumer_request_stop(c, kl_mono_ms() + 5000);
	pthread_join(th, &res);
	CU_ASSERT_EQUAL((intptr_t)res, CONSUMER_STOPPED);
	CU_ASSERT(kl_mono_ms() - t0 < 1000);
	consumer_free(c);
	consumer_budget_give(fb.budget, mine);
	CU_ASSERT_EQUAL(consumer_budget_available(fb.budget), 1);
	consumer_budget_free(fb.budget);
	xform_free(x);
}

/* ------------------------------------------------------------ busy sink, shared budget */

/* Creates the consumer on fake time with the given budget (NULL: none);
 * *ret_x is the plugin instance. */
static void make_budget(const struct consumer_config *cfg, struct consumer_budget *budget,
			struct xform **ret_x)
{
	struct consumer_deps deps;
	struct kl_errinfo info;

	memset(&deps, 0, sizeof(deps));
	*ret_x = new_xform();
	deps.kinesis.ops = &fk_ops;
	deps.lease.ops = &fl_ops;
	deps.sink.ops = &ts_ops;
	deps.xform = *ret_x;
	deps.clock = &fake_clock;
	deps.budget = budget;
	kl_errinfo_clear(&info);
	if (consumer_new(cfg, &deps, &cons, &info) != KL_OK)
		fprintf(stderr, "consumer_new: %s\n", info.message);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cons);
}

/* A sink that says KL_ETHROTTLED (busy uploading) keeps its page when
 * there is no budget, or a budget with a free slot: the same record is
 * offered again, nothing is read again. */
static void test_busy_sink_keeps_page(void)
{
	for (unsigned slots = 0; slots <= 2; slots += 2) {
		struct consumer_config cfg = base_config();
		struct consumer_budget *budget = NULL;
		struct consumer_metrics m;
		const char *x1;
		struct xform *x;

		reset();
		add_events(25);
		ts.refuse_at[0] = 4;
		ts.refuse_err[0] = KL_ETHROTTLED;
		ts.refuse_at[1] = 5;
		ts.refuse_err[1] = KL_ETHROTTLED;
		fk.hook = stop_when_drained;
		if (slots)
			CU_ASSERT_FATAL(consumer_budget_new(slots, 0, &budget) == KL_OK);
		make_budget(&cfg, budget, &x);
		CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
		assert_pushed_range(0, 25);
		CU_ASSERT_EQUAL(fk.n_iters, 1);
		x1 = strstr(events, "X,");
		CU_ASSERT_PTR_NOT_NULL_FATAL(x1);
		CU_ASSERT(strncmp(x1, "X,X,P,P,P,P,P,P,P,G,", 20) == 0);
		CU_ASSERT_EQUAL(xform_get_stats(x)->records, 25);
		consumer_get_metrics(cons, &m);
		CU_ASSERT_EQUAL(m.pages_dropped, 0);
		CU_ASSERT_EQUAL(m.records_reread, 0);
		CU_ASSERT_EQUAL(m.records_read, 25);
		CU_ASSERT_EQUAL(m.push_retries, 2);
		done(x);
		if (budget)
			CU_ASSERT_EQUAL(consumer_budget_available(budget), slots);
		consumer_budget_free(budget);
	}
}

/* With the budget's only slot held: each busy refusal gives the page up;
 * reading restarts AT the refused record, after the push backoff and
 * never faster than the pacing; every record arrives once, in order, the
 * refused one transformed again; the metrics count each record once. */
static void test_busy_sink_drops_page_on_fake_time(void)
{
	struct consumer_config cfg = base_config();
	struct consumer_budget *budget = NULL;
	struct consumer_metrics m;
	struct xform *x;

	reset();
	add_events(25);
	ts.refuse_at[0] = 4;
	ts.refuse_err[0] = KL_ETHROTTLED;
	ts.refuse_at[1] = 5;
	ts.refuse_err[1] = KL_ETHROTTLED;
	fk.hook = stop_when_drained;
	CU_ASSERT_FATAL(consumer_budget_new(1, 0, &budget) == KL_OK);
	make_budget(&cfg, budget, &x);
	CU_ASSERT_EQUAL(consumer_run(cons), CONSUMER_STOPPED);
	assert_pushed_range(0, 25);
	CU_ASSERT_EQUAL_FATAL(fk.n_iters, 3);
	CU_ASSERT_EQUAL(fk.iters[0].type, KINESIS_ITER_TRIM_HORIZON);
	for (int i = 1; i < 3; i++) {
		CU_ASSERT_EQUAL(fk.iters[i].type, KINESIS_ITER_AT_SEQUENCE_NUMBER);
		CU_ASSERT_STRING_EQUAL(fk.iters[i].seq, fk.recs[3].seq);
	}
	/* Refusal, drop, new iterator, read: "X,I,G,". */
	CU_ASSERT_PTR_NOT_NULL(strstr(events, "P,P,P,X,I,G,X,I,G,P,"));
	for (int i = 1; i < fk.n_calls; i++)
		CU_ASSERT(fk.calls[i].at - fk.calls[i - 1].at >= 200);
	CU_ASSERT_EQUAL(xform_get_stats(x)->records, 27);
	consumer_get_metrics(cons, &m);
	CU_ASSERT_EQUAL(m.pages_dropped, 2);
	CU_ASSERT_EQUAL(m.records_reread, 7 + 10);  /* records 3-9, then 3-12 */
	CU_ASSERT_EQUAL(m.records_read, 25);
	CU_ASSERT_EQUAL(m.user_records, 25);
	CU_ASSERT_EQUAL(m.plugin_ok + m.plugin_dropped + m.plugin_failed, 25);
	CU_ASSERT_EQUAL(m.esn_filtered, 0);
	CU_ASSERT_EQUAL(m.pushed, 25);
	CU_ASSERT_EQUAL(m.push_retries, 2);
	CU_ASSERT_STRING_EQUAL(m.last_pushed.seq, fk.recs[24].seq);
	done(x);
	CU_ASSERT_EQUAL(consumer_budget_available(budget), 1);
	consumer_budget_free(budget);
}

/*
 * Two consumers on their own threads (real clock) share a one-slot
 * budget. Each has its own shard, sink and lease, passed as ctx.
 */
struct mshard {
	struct frec recs[16];
	size_t n;
	int page_max;
	struct fiter iters[16];      /* this consumer's thread only */
	int n_iters;
	atomic_int get_calls;
	atomic_int read_while_blocked;
	atomic_bool blocked;         /* the sink is busy: blocked(), KL_ETHROTTLED */
	size_t block_after;          /* the sink blocks once it took this many */
	atomic_int refusals;
	struct { char seq[64]; uint64_t sub; } v[64];
	atomic_size_t n_pushed;
};

static struct mshard msa, msb;

static void ms_add(struct mshard *s, const void *data, size_t len)
{
	struct frec *r = &s->recs[s->n];

	CU_ASSERT_FATAL(s->n < 16);
	seq_of(s->n, r->seq);
	snprintf(r->pk, sizeof(r->pk), "pk-%zu", s->n);
	r->data = malloc(len);
	CU_ASSERT_FATAL(r->data != NULL);
	memcpy(r->data, data, len);
	r->len = len;
	r->arrival_ms = ARRIVAL_MS + (int64_t)s->n;
	s->n++;
}

static void ms_add_events(struct mshard *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char d[128];
		int len = snprintf(d, sizeof(d), "{\"event\":\"view\",\"n\":%zu}", s->n);

		ms_add(s, d, (size_t)len);
	}
}

static void ms_free(struct mshard *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->recs[i].data);
}

static size_t ms_index(const struct mshard *s, const char *seq)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->recs[i].seq, seq) == 0)
			return i;
	CU_FAIL("unknown sequence number");
	return s->n;
}

static enum kl_err ms_get_shard_iterator(void *ctx, const char *shard_id,
					 const struct kinesis_position *pos, char **ret_iterator,
					 struct kl_errinfo *info)
{
	struct mshard *s = ctx;
	size_t p = 0;
	char buf[32];

	(void)shard_id;
	(void)info;
	if (s->n_iters < 16) {
		s->iters[s->n_iters].type = pos->type;
		snprintf(s->iters[s->n_iters].seq, sizeof(s->iters[0].seq), "%s",
			 pos->sequence_number ? pos->sequence_number : "");
	}
	s->n_iters++;
	if (pos->type == KINESIS_ITER_AT_SEQUENCE_NUMBER)
		p = ms_index(s, pos->sequence_number);
	else if (pos->type == KINESIS_ITER_AFTER_SEQUENCE_NUMBER)
		p = ms_index(s, pos->sequence_number) + 1;
	else
		CU_ASSERT_EQUAL(pos->type, KINESIS_ITER_TRIM_HORIZON);
	snprintf(buf, sizeof(buf), "it-%zu", p);
	*ret_iterator = strdup(buf);
	return *ret_iterator ? KL_OK : KL_ENOMEM;
}

static enum kl_err ms_get_records(void *ctx, const char *iterator, int limit,
				  struct kinesis_records **ret, struct kl_errinfo *info)
{
	struct mshard *s = ctx;
	struct buf body, b64;
	size_t p, k;
	enum kl_err err;

	atomic_fetch_add(&s->get_calls, 1);
	if (atomic_load(&s->blocked))
		atomic_fetch_add(&s->read_while_blocked, 1);
	CU_ASSERT_FATAL(strncmp(iterator, "it-", 3) == 0);
	p = strtoul(iterator + 3, NULL, 10);
	k = s->n - p;
	if (k > (size_t)limit)
		k = (size_t)limit;
	if (s->page_max && k > (size_t)s->page_max)
		k = (size_t)s->page_max;
	buf_init(&body, 0);
	buf_init(&b64, 0);
	buf_append_str(&body, "{\"Records\":[");
	for (size_t i = p; i < p + k; i++) {
		const struct frec *r = &s->recs[i];

		buf_reset(&b64);
		CU_ASSERT_FATAL(buf_reserve(&b64, KL_B64_ENCLEN(r->len) + 1) == KL_OK);
		kl_b64_encode(r->data, r->len, b64.data);
		buf_printf(&body,
			   "%s{\"SequenceNumber\":\"%s\",\"ApproximateArrivalTimestamp\":%" PRId64
			   ".%03d,\"Data\":\"%s\",\"PartitionKey\":\"%s\"}",
			   i > p ? "," : "", r->seq, r->arrival_ms / 1000, (int)(r->arrival_ms % 1000),
			   b64.data, r->pk);
	}
	buf_printf(&body, "],\"NextShardIterator\":\"it-%zu\",\"MillisBehindLatest\":0}", p + k);
	err = kinesis_parse_get_records(body.data, body.len, ret, info);
	CU_ASSERT_EQUAL(err, KL_OK);
	buf_done(&body);
	buf_done(&b64);
	return err;
}

static enum kl_err ms_list_children(void *ctx, const char *shard_id, struct lease_shard_list *ret,
				    struct kl_errinfo *info)
{
	(void)ctx;
	(void)shard_id;
	(void)ret;
	(void)info;
	return KL_OK;   /* the shard is open: never asked */
}

static const struct consumer_kinesis_ops ms_kinesis_ops = {
	.get_shard_iterator = ms_get_shard_iterator,
	.get_records = ms_get_records,
	.list_children = ms_list_children,
};

static enum kl_err ml_check(void *ctx, const char *key, uint64_t token, int64_t *ret_valid_until_ms)
{
	(void)ctx;
	(void)key;
	(void)token;
	*ret_valid_until_ms = kl_mono_ms() + 60000;
	return KL_OK;
}

static enum kl_err ml_shard_end(void *ctx, const char *key, uint64_t token,
				const struct lease_shard *children, size_t n, struct kl_errinfo *info)
{
	(void)ctx;
	(void)key;
	(void)token;
	(void)children;
	(void)n;
	(void)info;
	CU_FAIL("shard end on an open shard");
	return KL_OK;
}

static const struct consumer_lease_ops ml_ops = { ml_check, ml_shard_end, NULL };

static enum kl_err ms_push(void *ctx, const struct kl_transform_record *rec,
			   const struct xform_result *res, struct kl_errinfo *info)
{
	struct mshard *s = ctx;
	size_t n = atomic_load(&s->n_pushed);

	(void)res;
	if (atomic_load(&s->blocked)) {
		atomic_fetch_add(&s->refusals, 1);
		return kl_errinfo_set(info, KL_ETHROTTLED, "uploading");
	}
	CU_ASSERT_FATAL(n < 64);
	snprintf(s->v[n].seq, sizeof(s->v[n].seq), "%s", rec->sequence_number);
	s->v[n].sub = rec->sub_sequence_number;
	atomic_store(&s->n_pushed, n + 1);
	if (n + 1 == s->block_after)
		atomic_store(&s->blocked, true);
	return KL_OK;
}

static bool ms_blocked(void *ctx)
{
	struct mshard *s = ctx;

	return atomic_load(&s->blocked);
}

static enum kl_err ms_tick(void *ctx, int64_t now, struct kl_errinfo *info)
{
	(void)ctx;
	(void)now;
	(void)info;
	return KL_OK;
}

static enum kl_err ms_flush(void *ctx, struct kl_errinfo *info)
{
	(void)ctx;
	(void)info;
	return KL_OK;
}

static void ms_abandon(void *ctx)
{
	(void)ctx;
}

static void ms_resume_after(void *ctx, struct lease_esn *ret)
{
	(void)ctx;
	(void)ret;       /* kind NONE: the grant's checkpoint (TRIM_HORIZON) */
}

static const struct record_sink_ops ms_sink_ops = {
	ms_push, ms_blocked, ms_tick, ms_flush, ms_abandon, ms_resume_after, NULL,
};

static struct consumer *ms_consumer(struct mshard *s, const char *shard_id,
				    struct consumer_budget *budget, struct xform *x)
{
	struct consumer_config cfg = base_config();
	struct consumer_deps deps;
	struct kl_errinfo info;
	struct consumer *c = NULL;

	cfg.shard_id = shard_id;
	cfg.release_on_stop = false;
	cfg.idle_ms = 20;
	cfg.tick_ms = 20;
	cfg.poll_ms = 100;
	cfg.backoff_base_ms = 5;
	cfg.throttle_base_ms = 20;
	cfg.backoff_max_ms = 100;
	memset(&deps, 0, sizeof(deps));
	deps.kinesis.ops = &ms_kinesis_ops;
	deps.kinesis.ctx = s;
	deps.lease.ops = &ml_ops;
	deps.sink.ops = &ms_sink_ops;
	deps.sink.ctx = s;
	deps.xform = x;
	deps.clock = NULL;
	deps.budget = budget;
	kl_errinfo_clear(&info);
	if (consumer_new(&cfg, &deps, &c, &info) != KL_OK)
		fprintf(stderr, "consumer_new: %s\n", info.message);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	return c;
}

/* Polls (real time, generous bound: the machine is shared) until s has
 * n pushes, or refusals when n is 0. */
static bool ms_wait(struct mshard *s, size_t n)
{
	for (int i = 0; i < 3000; i++) {
		if (n ? atomic_load(&s->n_pushed) >= n : atomic_load(&s->refusals) > 0)
			return true;
		kl_sleep_ms(10);
	}
	return false;
}

/*
 * A's sink becomes busy (an upload) after taking part of a page: three
 * plain records and two of a five-record KPL aggregate. B shares the
 * one-slot budget and must read and push all its records meanwhile; once
 * A's sink is free again, A delivers the rest exactly once, in order.
 */
static void test_busy_sink_frees_budget_for_others(void)
{
	struct consumer_budget *budget = NULL;
	struct consumer *ca, *cb;
	struct consumer_metrics m;
	struct kpl_enc_record sub[5];
	char data[5][64], pks[5][8];
	struct xform *xa, *xb;
	struct buf agg;
	pthread_t ta, tb;
	void *res;
	size_t k = 0;
	bool ok;

	memset(&msa, 0, sizeof(msa));
	memset(&msb, 0, sizeof(msb));
	ms_add_events(&msa, 3);
	buf_init(&agg, 0);
	for (int i = 0; i < 5; i++) {
		snprintf(data[i], sizeof(data[i]), "{\"event\":\"click\",\"sub\":%d}", i);
		snprintf(pks[i], sizeof(pks[i]), "k%d", i);
		sub[i].partition_key = pks[i];
		sub[i].explicit_hash_key = NULL;
		sub[i].data = data[i];
		sub[i].len = strlen(data[i]);
	}
	CU_ASSERT_FATAL(kpl_encode(sub, 5, &agg) == KL_OK);
	ms_add(&msa, agg.data, agg.len);    /* record 3 */
	buf_done(&agg);
	ms_add_events(&msa, 3);
	msa.block_after = 5;                /* records 0-2, sub-records 3/0 and 3/1 */
	ms_add_events(&msb, 15);
	msb.page_max = 4;
	CU_ASSERT_FATAL(consumer_budget_new(1, 0, &budget) == KL_OK);
	xa = new_xform();
	xb = new_xform();
	ca = ms_consumer(&msa, "shardId-A", budget, xa);
	cb = ms_consumer(&msb, "shardId-B", budget, xb);

	CU_ASSERT_FATAL(pthread_create(&ta, NULL, run_thread, ca) == 0);
	CU_ASSERT(ms_wait(&msa, 0));        /* A's sink refused a record */
	CU_ASSERT_FATAL(pthread_create(&tb, NULL, run_thread, cb) == 0);
	ok = ms_wait(&msb, 15);
	CU_ASSERT(ok);                      /* B was not starved by A's upload */
	if (!ok)
		fprintf(stderr, "B pushed %zu of 15 while A's sink was busy\n",
			atomic_load(&msb.n_pushed));
	CU_ASSERT_EQUAL(atomic_load(&msa.n_pushed), 5);
	atomic_store(&msa.blocked, false);  /* the upload is done */
	CU_ASSERT(ms_wait(&msa, 11));
	kl_sleep_ms(100);                   /* nothing more may come */
	consumer_request_stop(ca, kl_mono_ms() + 5000);
	consumer_request_stop(cb, kl_mono_ms() + 5000);
	pthread_join(ta, &res);
	CU_ASSERT_EQUAL((intptr_t)res, CONSUMER_STOPPED);
	pthread_join(tb, &res);
	CU_ASSERT_EQUAL((intptr_t)res, CONSUMER_STOPPED);

	/* A: every user record once, in ESN order. */
	CU_ASSERT_EQUAL_FATAL(atomic_load(&msa.n_pushed), 11);
	for (size_t i = 0; i < 7; i++) {
		for (uint64_t s = 0; s < (i == 3 ? 5u : 1u); s++, k++) {
			CU_ASSERT_STRING_EQUAL(msa.v[k].seq, msa.recs[i].seq);
			CU_ASSERT_EQUAL(msa.v[k].sub, s);
		}
	}
	CU_ASSERT_EQUAL(atomic_load(&msa.read_while_blocked), 0);
	CU_ASSERT_EQUAL_FATAL(msa.n_iters, 2);
	CU_ASSERT_EQUAL(msa.iters[0].type, KINESIS_ITER_TRIM_HORIZON);
	CU_ASSERT_EQUAL(msa.iters[1].type, KINESIS_ITER_AT_SEQUENCE_NUMBER);
	CU_ASSERT_STRING_EQUAL(msa.iters[1].seq, msa.recs[3].seq);
	CU_ASSERT_EQUAL(xform_get_stats(xa)->records, 12);  /* 3/2 transformed twice */
	consumer_get_metrics(ca, &m);
	CU_ASSERT_EQUAL(m.pages_dropped, 1);
	CU_ASSERT_EQUAL(m.records_reread, 4);
	CU_ASSERT_EQUAL(m.records_read, 7);
	CU_ASSERT_EQUAL(m.user_records, 11);
	CU_ASSERT_EQUAL(m.kpl_aggregates, 1);
	CU_ASSERT_EQUAL(m.esn_filtered, 0);
	CU_ASSERT_EQUAL(m.plugin_ok + m.plugin_dropped + m.plugin_failed, 11);
	CU_ASSERT_EQUAL(m.pushed, 11);
	CU_ASSERT(m.push_retries >= 1);
	/* B: all of it, in order, never a page given up. */
	CU_ASSERT_EQUAL_FATAL(atomic_load(&msb.n_pushed), 15);
	for (size_t i = 0; i < 15; i++) {
		CU_ASSERT_STRING_EQUAL(msb.v[i].seq, msb.recs[i].seq);
		CU_ASSERT_EQUAL(msb.v[i].sub, 0);
	}
	consumer_get_metrics(cb, &m);
	CU_ASSERT_EQUAL(m.pages_dropped, 0);
	CU_ASSERT_EQUAL(m.records_read, 15);
	CU_ASSERT_EQUAL(consumer_budget_available(budget), 1);
	consumer_free(ca);
	consumer_free(cb);
	xform_free(xa);
	xform_free(xb);
	consumer_budget_free(budget);
	ms_free(&msa);
	ms_free(&msb);
}

/* ------------------------------------------------------------ main */

static int stage_plugin(void)
{
	char src[4096], dst[4096], chunk[65536];
	struct kl_errinfo info;
	int in, out;
	ssize_t n;

	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(src, sizeof(src), "%s/plugins/clickstream/.libs/clickstream.so", KL_TEST_BUILDDIR);
	snprintf(dst, sizeof(dst), "%s/clickstream.so", tmpdir);
	in = open(src, O_RDONLY);
	if (in < 0) {
		fprintf(stderr, "cannot open %s: %s (build the plugins first)\n", src, strerror(errno));
		return -1;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0755);
	if (out < 0) {
		close(in);
		return -1;
	}
	while ((n = read(in, chunk, sizeof(chunk))) > 0)
		if (write(out, chunk, (size_t)n) != n)
			break;
	close(in);
	close(out);
	chmod(dst, 0755);
	kl_errinfo_clear(&info);
	if (xform_plugin_load(dst, NULL, &info, &clickstream) != KL_OK) {
		fprintf(stderr, "load %s: %s\n", dst, info.message);
		return -1;
	}
	return 0;
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_config_checked),
		KL_TEST(test_waiting_then_processing_then_stop),
		KL_TEST(test_pacing_full_pages),
		KL_TEST(test_pacing_millis_behind),
		KL_TEST(test_pacing_rate),
		KL_TEST(test_throttle_backoff),
		KL_TEST(test_transient_and_final_errors),
		KL_TEST(test_expired_iterator),
		KL_TEST(test_expired_before_any_read),
		KL_TEST(test_sentinel_positions),
		KL_TEST(test_esn_filter_in_aggregate),
		KL_TEST(test_hash_range_filter),
		KL_TEST(test_plugin_results),
		KL_TEST(test_lease_lost_before_push),
		KL_TEST(test_lease_lost_from_sink),
		KL_TEST(test_lease_lost_while_waiting),
		KL_TEST(test_lease_lost_while_idle),
		KL_TEST(test_shutdown_flushes),
		KL_TEST(test_shutdown_mid_page),
		KL_TEST(test_shutdown_deadline_abandons),
		KL_TEST(test_shard_end_child_shards),
		KL_TEST(test_shard_end_list_children_merge_retry),
		KL_TEST(test_neither_iterator_nor_end),
		KL_TEST(test_blocked_sink),
		KL_TEST(test_budget_semaphore),
		KL_TEST(test_budget_slot_per_page),
		KL_TEST(test_budget_wait_and_stop),
		KL_TEST(test_busy_sink_keeps_page),
		KL_TEST(test_busy_sink_drops_page_on_fake_time),
		KL_TEST(test_busy_sink_frees_budget_for_others),
		KL_TEST(test_push_retry_same_record),
		KL_TEST(test_real_clock_stop_wakes),
		{ NULL, NULL },
	};
	char path[4096];
	int rc;

	if (stage_plugin() != 0)
		return 1;
	rc = kl_test_run("consumer", tests);
	reset();
	xform_plugin_free(clickstream);
	snprintf(path, sizeof(path), "%s/clickstream.so", tmpdir);
	unlink(path);
	rmdir(tmpdir);
	return rc;
}
