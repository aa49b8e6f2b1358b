/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_exactly_once.c: DESIGN.md section 1.1 at process level. Real
 * `kinlake run` workers drain a 4-shard kinesalite stream through the
 * clickstream plugin into s3rver, with tests/tools/faultproxy in front of
 * s3rver (and of dynalite where a lease write must be held), and
 * tests/tools/lakecheck judges the bucket against the manifests of
 * `kinlake demo produce`: every ok event once in a data object, every
 * malformed one once in an error object, bots nowhere, order per key within
 * a shard, valid compression, keys matching the template. Scenarios, each
 * on its own stream, lease table and bucket:
 *
 *   1. a normal run, gzip (then lakecheck's own negative controls on it);
 *   2. a normal run, zstd, KPL-aggregated records (when built with zstd);
 *   3. kill -9 with a batch open (records pushed, not sealed), restart on
 *      the same host;
 *   4. kill -9 with an upload in flight (held by the proxy), release,
 *      restart on the same host: the spool path;
 *   5. the same kill, then takeover by another worker with a fresh state
 *      directory: the rebuild path, same keys;
 *   6. kill -9 between upload and checkpoint (every UpdateItem held), then
 *      takeover by another worker: the objects are overwritten in place;
 *   7. the same kill, restart on the same host: its journal knows the
 *      objects are up, it only commits (nothing rewritten);
 *   8. S3 answering 503 SlowDown and resetting connections for a while;
 *   9. DynamoDB lease writes applied but answered with a reset (the retry
 *      finds the counter already moved), and DynamoDB throttling;
 *  10. a journal overwritten with garbage while the worker was dead.
 * After each: no pending intent, exactly once (and no ESN range with more
 * objects than its intent names), then SIGTERM and one more check with
 * nothing running. Figures per scenario are printed at the end.
 * The binaries are $KL_TEST_KINLAKE / $KL_LAKECHECK when set, else the
 * build tree's. Every process started here is killed on any way out.
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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <zlib.h>

#include "aws.h"
#include "creds.h"
#include "delivery.h"
#include "faultctl.h"
#include "fixture.h"
#include "http.h"
#include "kinesis.h"
#include "lease_store_ddb.h"
#include "proc.h"
#include "s3.h"
#include "testutil.h"
#include "util.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif
#ifndef KL_LAKECHECK_PATH
#error "KL_LAKECHECK_PATH must name the built tests/tools/lakecheck"
#endif

#define MAX_PROCS 8
#define SHARDS 4
#define RECORDS 1500            /* events per scenario */
#define SESSIONS 120            /* partition keys: ~12 events each, so order means something */
#define LAKE_WAIT_MS 90000      /* longest wait for the lake to be complete */
#define MAX_INTENTS SHARDS
#define MAX_SCENARIOS 12

struct proc {
	char conf[32];                  /* config / log / metrics name of this start */
	pid_t pid;                      /* also its process group; 0 = not running */
};

/* What lakecheck --json said. */
struct lakefig {
	int rc;                         /* its exit status; -1 = did not run */
	long long records_expected, records_found, objects, data_objects, error_objects, batches;
	long long duplicates, missing, unexpected, out_of_order, misplaced, bad_keys, bad_objects,
		bad_lines, overlapping;
};

struct scenario {
	const char *name;
	char tag[48];                   /* stream, table, bucket, file prefix */
	const char *codec;              /* "gzip" / "zstd" */
	int buffer_seconds, buffer_records;
	char manifests[4][600];
	int n_manifests;
	uint64_t next_id, seed;
	char regex[512];
	/* figures */
	struct lakefig fig;
	int64_t recovery_ms;            /* fault (kill, fault window) -> lake complete; -1 n/a */
	const char *recovery_what;
	bool finished;
};

/* One intent found in the lease table. */
struct intent {
	char shard[64];
	char end[200];                  /* "SEQ/SUB", as the delivery logs it */
	char end_seq[160];              /* "SEQ", as the lease log line shows it */
	char basename[300];             /* "<first>_<last><ext>": shared by the batch's objects */
	size_t n_keys;                  /* data + error objects it names */
	char keys[8][KEYTMPL_KEY_MAX];
	char last_modified[8][64];
};

static struct {
	struct tf_env env;
	char bin[4096], lakecheck[4096];
	char dir[512];
	struct creds_chain *creds;
	struct aws_client kc, s3c;
	struct aws_client_config ddb_cfg;
	struct faultctl *s3p, *ddbp;
	struct proc procs[MAX_PROCS];
	struct scenario sc[MAX_SCENARIOS];
	int n_sc;
	int64_t spool_recovery_ms, rebuild_ms;
} fx;

/* ------------------------------------------------------------ processes */

static void kill_proc(struct proc *p)
{
	if (p->pid > 0) {
		tp_kill(p->pid);
		p->pid = 0;
	}
}

static void kill_all(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		kill_proc(&fx.procs[i]);
}

static void on_fatal_signal(int sig)
{
	kill_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Runs argv[0] with argv, stdout into out (NUL-terminated), stderr
 * appended to errpath (NULL = /dev/null). Returns the exit status, -1 when
 * killed by a signal.
 */
static int run_cmd(char *const *argv, char *out, size_t size, const char *errpath)
{
	/* No proxies for loopback, no systemd, die with the test. */
	struct tp_child c = { .flags = TP_DIE_WITH_PARENT, .err_path = errpath ? errpath : "/dev/null",
			      .aws_key_id = fx.env.key_id, .aws_secret = fx.env.secret };
	int rc = tp_run(argv, out, size, &c);

	CU_ASSERT_FATAL(rc != -2);
	return rc;
}

/* ------------------------------------------------------------ scenarios */

static void scen_path(const struct scenario *sc, const char *name, const char *ext, char *out,
		      size_t size)
{
	snprintf(out, size, "%s/%s-%s%s", fx.dir, sc->tag, name, ext);
}

/*
 * Writes the config of one worker start: conf names the files (config,
 * log, metrics), id is the worker id, state its state directory (the
 * same for a restart on the same host), ddb the DynamoDB endpoint.
 */
static void write_conf(const struct scenario *sc, const char *conf, const char *id, const char *state,
		       const char *ddb)
{
	char path[700], statedir[700], log[700], prom[700];
	int rc;

	scen_path(sc, conf, ".conf", path, sizeof(path));
	scen_path(sc, state, "-state", statedir, sizeof(statedir));
	scen_path(sc, conf, ".log", log, sizeof(log));
	scen_path(sc, conf, ".prom", prom, sizeof(prom));
	rc = tp_write_file(path,
		"application = \"%s\";\n"
		"worker_id = \"%s\";\n"
		"stream = \"%s\";\n"
		"region = \"us-east-1\";\n"
		"state_dir = \"%s\";\n"
		"shutdown_grace_ms = 10000;\n"
		"lease = { failover_ms = 2000; take_interval_ms = 1000; shard_sync_interval_ms = 5000; };\n"
		"consumer = { threads = %d; idle_ms = 200; };\n"
		"plugin = { name = \"clickstream\"; search_path = \"%s/plugins/clickstream/.libs\";\n"
		"  settings = { timestamp_field = \"ts\";\n"
		"    required_fields = [ \"event_id\", \"session_id\", \"user_id\", \"action\", \"ts\" ]; }; };\n"
		"s3 = { bucket = \"%s\";\n"
		"  prefix = \"data/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/\";\n"
		"  error_prefix = \"errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd/HH}/\";\n"
		"  compression = \"%s\"; buffer_seconds = %d; buffer_records = %d; };\n"
		"credentials = { access_key_id = \"%s\"; secret_access_key = \"%s\"; disable_imds = true; };\n"
		"endpoints = { kinesis = \"%s\"; dynamodb = \"%s\"; s3 = \"%s\"; };\n"
		/* A held request must outlast the few steps between "held" and
		 * the kill; retries short, so a fault window is ridden out. */
		"http = { connect_timeout_ms = 1000; timeout_ms = 10000; };\n"
		"retry = { max_attempts = 4; base_delay_ms = 50; throttle_base_delay_ms = 200;"
		" max_delay_ms = 1000; };\n"
		"log = { level = \"info\"; file = \"%s\"; };\n"
		"metrics = { file = \"%s\"; interval_ms = 1000; };\n",
		sc->tag, id, sc->tag, statedir, SHARDS, KL_TEST_BUILDDIR, sc->tag, sc->codec,
		sc->buffer_seconds, sc->buffer_records, fx.env.key_id, fx.env.secret, fx.env.kinesis, ddb,
		faultctl_url(fx.s3p), log, prom);
	CU_ASSERT_FATAL(rc == 0);
}

/* Starts `kinlake run` in its own process group; see write_conf(). */
static struct proc *start_worker(const struct scenario *sc, const char *conf, const char *id,
				 const char *state, const char *ddb)
{
	char path[700], out[700];
	char *argv[] = { fx.bin, "run", "-c", path, NULL };
	struct tp_child c = { .flags = TP_OWN_GROUP | TP_DIE_WITH_PARENT, .out_path = out,
			      .err_path = out, .aws_key_id = fx.env.key_id, .aws_secret = fx.env.secret };
	struct proc *p = NULL;
	pid_t pid;

	for (int i = 0; i < MAX_PROCS && !p; i++)
		if (fx.procs[i].pid <= 0)
			p = &fx.procs[i];
	CU_ASSERT_FATAL(p != NULL);
	write_conf(sc, conf, id, state, ddb ? ddb : fx.env.dynamodb);
	scen_path(sc, conf, ".conf", path, sizeof(path));
	scen_path(sc, conf, ".out", out, sizeof(out));
	pid = tp_spawn(argv, &c);
	CU_ASSERT_FATAL(pid >= 0);
	snprintf(p->conf, sizeof(p->conf), "%s", conf);
	p->pid = pid;
	tp_step("%s: started worker '%s' as %s (pid %ld)", sc->name, id, conf, (long)pid);
	return p;
}

static void kill9(const struct scenario *sc, struct proc *p)
{
	CU_ASSERT_FATAL(p->pid > 0);
	tp_step("%s: kill -9 %s (pid %ld)", sc->name, p->conf, (long)p->pid);
	kill_proc(p);
}

/* SIGTERM and wait (up to ms) for exit; returns the exit status, -1 for a
 * signal, -2 for a timeout (then killed). */
static int stop_worker(struct proc *p, int64_t ms)
{
	int status;

	if (p->pid <= 0)
		return 0;
	kill(p->pid, SIGTERM);
	if (tp_reap(p->pid, ms, &status)) {
		p->pid = 0;
		return tp_exit_code(status);
	}
	kill_proc(p);
	return -2;
}

static bool log_has(const struct scenario *sc, const char *conf, const char *needle)
{
	char path[700];
	char *text;
	bool found;

	scen_path(sc, conf, ".log", path, sizeof(path));
	text = tp_read_file(path, (64u << 20) - 1, NULL);
	found = text && strstr(text, needle) != NULL;
	free(text);
	return found;
}

/* The worker logged taking the lease of it's shard with it pending. */
static bool log_took_intent(const struct scenario *sc, const char *conf, const struct intent *it)
{
	char path[700], head[200], tail[260];
	char *text, *p;
	bool found = false;

	scen_path(sc, conf, ".log", path, sizeof(path));
	text = tp_read_file(path, (64u << 20) - 1, NULL);
	snprintf(head, sizeof(head), "lease: shard '%s' acquired (", it->shard);
	snprintf(tail, sizeof(tail), "intent up to %s left by the last holder)", it->end_seq);
	for (p = text; p && !found && (p = strstr(p, head)) != NULL; p++) {
		const char *eol = strchr(p, '\n');
		const char *t = strstr(p, tail);

		found = t && (!eol || t < eol);
	}
	if (!found)
		fprintf(stderr, "\n  %s.log: no \"%s...%s\"\n", conf, head, tail);
	free(text);
	return found;
}

/* Sum of the samples of metric whose labels contain label ("" = all). */
static double metric(const struct scenario *sc, const char *conf, const char *name, const char *label)
{
	char path[700];
	char *text;
	double sum = 0;
	size_t n = strlen(name);

	scen_path(sc, conf, ".prom", path, sizeof(path));
	text = tp_read_file(path, (64u << 20) - 1, NULL);
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		const char *end = strchr(p, '}');

		if (strncmp(p, name, n) != 0 || (p[n] != '{' && p[n] != ' '))
			continue;
		if (p[n] == '{' && end) {
			char labels[512];

			snprintf(labels, sizeof(labels), "%.*s", (int)(end - p - n), p + n);
			if (!strstr(labels, label))
				continue;
			sum += strtod(end + 1, NULL);
		} else if (!*label) {
			sum += strtod(p + n, NULL);
		}
	}
	free(text);
	return sum;
}

static struct scenario *scen_new(const char *name, const char *codec, int buffer_seconds,
				 int buffer_records)
{
	struct scenario *sc;
	struct kl_errinfo info = { 0 };
	enum kl_err err;
	const char *ext = strcmp(codec, "zstd") == 0 ? "zst" : "gz";

	/* What a failed scenario may have left running. */
	kill_all();
	faultctl_stop(fx.ddbp);
	fx.ddbp = NULL;
	CU_ASSERT_FATAL(fx.n_sc < MAX_SCENARIOS);
	sc = &fx.sc[fx.n_sc++];
	memset(sc, 0, sizeof(*sc));
	sc->name = name;
	sc->codec = codec;
	sc->buffer_seconds = buffer_seconds;
	sc->buffer_records = buffer_records;
	sc->recovery_ms = -1;
	sc->seed = 100 + (uint64_t)fx.n_sc;
	sc->fig.rc = -1;
	snprintf(sc->tag, sizeof(sc->tag), "eo-%ld-%d", (long)getpid(), fx.n_sc);
	snprintf(sc->regex, sizeof(sc->regex),
		 "^(data/dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/hour=[0-9]{2}/"
		 "|errors/processing-failed/[0-9]{4}/[0-9]{2}/[0-9]{2}/[0-9]{2}/)"
		 "shardId-[0-9]{12}/[0-9]{56}-[0-9]{10}_[0-9]{56}-[0-9]{10}\\.%s$", ext);
	err = kinesis_create_stream(&fx.kc, sc->tag, SHARDS, &info);
	tf_report("CreateStream", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	err = kinesis_wait_active(&fx.kc, sc->tag, 30000, NULL, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	err = s3_create_bucket(&fx.s3c, sc->tag, &info);
	tf_report("CreateBucket", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
	CU_ASSERT_FATAL(faultctl_set_rules(fx.s3p, "") == KL_OK);
	tp_step("%s: stream/table/bucket '%s'", name, sc->tag);
	return sc;
}

/* `kinlake demo produce` of count events into the scenario's stream. */
static void produce(struct scenario *sc, int count, bool kpl)
{
	char conf[700], from[24], scount[24], seed[24], sessions[24], out[4096], err[700];
	char *argv[32];
	int argc = 0, rc;

	/* Only its Kinesis endpoint and credentials are used. */
	write_conf(sc, "producer", "producer", "producer", fx.env.dynamodb);
	scen_path(sc, "producer", ".conf", conf, sizeof(conf));
	scen_path(sc, "producer", ".err", err, sizeof(err));
	CU_ASSERT_FATAL(sc->n_manifests < 4);
	snprintf(sc->manifests[sc->n_manifests], sizeof(sc->manifests[0]), "%s/%s-manifest-%d.tsv",
		 fx.dir, sc->tag, sc->n_manifests);
	snprintf(from, sizeof(from), "%" PRIu64, sc->next_id);
	snprintf(scount, sizeof(scount), "%d", count);
	snprintf(seed, sizeof(seed), "%" PRIu64, sc->seed);
	snprintf(sessions, sizeof(sessions), "%d", SESSIONS);
	argv[argc++] = fx.bin;
	argv[argc++] = "demo";
	argv[argc++] = "produce";
	argv[argc++] = "--stream";
	argv[argc++] = sc->tag;
	argv[argc++] = "-c";
	argv[argc++] = conf;
	argv[argc++] = "--count";
	argv[argc++] = scount;
	argv[argc++] = "--seed";
	argv[argc++] = seed;
	argv[argc++] = "--ids-from";
	argv[argc++] = from;
	argv[argc++] = "--sessions";
	argv[argc++] = sessions;
	argv[argc++] = "--malformed-pct";
	argv[argc++] = "3";
	argv[argc++] = "--bot-pct";
	argv[argc++] = "5";
	argv[argc++] = "--manifest";
	argv[argc++] = sc->manifests[sc->n_manifests];
	argv[argc++] = "--quiet";
	if (kpl)
		argv[argc++] = "--kpl";
	argv[argc] = NULL;
	rc = run_cmd(argv, out, sizeof(out), err);
	tp_step("%s: produced %d events from id %s%s (exit %d)", sc->name, count, from,
	     kpl ? ", KPL-aggregated" : "", rc);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	sc->n_manifests++;
	sc->next_id += (uint64_t)count;
}

/* ------------------------------------------------------------ lakecheck */

static long long jint(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : -1;
}

/* Runs lakecheck on the scenario's bucket; extra_regex NULL = its own. */
static int lakecheck(const struct scenario *sc, const char *regex, struct lakefig *ret)
{
	char errpath[700], out[8192];
	char *argv[32];
	int argc = 0;
	json_object *o;

	memset(ret, 0, sizeof(*ret));
	scen_path(sc, "lakecheck", ".err", errpath, sizeof(errpath));
	argv[argc++] = fx.lakecheck;
	argv[argc++] = "--endpoint";
	argv[argc++] = (char *)fx.env.s3;
	argv[argc++] = "--bucket";
	argv[argc++] = (char *)sc->tag;
	argv[argc++] = "--data-prefix";
	argv[argc++] = "data/";
	argv[argc++] = "--error-prefix";
	argv[argc++] = "errors/";
	for (int i = 0; i < sc->n_manifests; i++) {
		argv[argc++] = "--manifest";
		argv[argc++] = (char *)sc->manifests[i];
	}
	argv[argc++] = "--key-regex";
	argv[argc++] = (char *)(regex ? regex : sc->regex);
	argv[argc++] = "--json";
	argv[argc] = NULL;
	ret->rc = run_cmd(argv, out, sizeof(out), errpath);
	o = json_tokener_parse(out);
	if (o) {
		ret->records_expected = jint(o, "records_expected");
		ret->records_found = jint(o, "records_found");
		ret->objects = jint(o, "objects");
		ret->data_objects = jint(o, "data_objects");
		ret->error_objects = jint(o, "error_objects");
		ret->batches = jint(o, "batches");
		ret->duplicates = jint(o, "duplicates");
		ret->missing = jint(o, "missing");
		ret->unexpected = jint(o, "unexpected");
		ret->out_of_order = jint(o, "out_of_order");
		ret->misplaced = jint(o, "misplaced");
		ret->bad_keys = jint(o, "bad_keys");
		ret->bad_objects = jint(o, "bad_objects");
		ret->bad_lines = jint(o, "bad_lines");
		ret->overlapping = jint(o, "overlapping");
		json_object_put(o);
	} else if (ret->rc == 0 || ret->rc == 1) {
		ret->rc = -1;       /* a verdict without figures is no verdict */
	}
	return ret->rc;
}

static void print_fig(const char *what, const struct lakefig *f)
{
	fprintf(stderr,
		"\n  %s: lakecheck exit %d: expected %lld found %lld objects %lld (data %lld, error %lld)"
		" batches %lld dup %lld missing %lld unexpected %lld order %lld misplaced %lld"
		" bad keys %lld bad objects %lld bad lines %lld overlapping %lld",
		what, f->rc, f->records_expected, f->records_found, f->objects, f->data_objects,
		f->error_objects, f->batches, f->duplicates, f->missing, f->unexpected, f->out_of_order,
		f->misplaced, f->bad_keys, f->bad_objects, f->bad_lines, f->overlapping);
}

/*
 * Polls lakecheck until it passes or ms pass; returns the ms waited, -1 on
 * timeout (the last figures in sc->fig either way). Only "missing" can
 * heal by waiting; anything else is reported at once but still waited out,
 * so a transient read of an object being overwritten cannot fail a test.
 */
static int64_t wait_lake(struct scenario *sc, int64_t ms)
{
	int64_t start = kl_mono_ms();
	bool said = false;

	for (;;) {
		lakecheck(sc, NULL, &sc->fig);
		if (sc->fig.rc == 0)
			return kl_mono_ms() - start;
		if (!said && sc->fig.rc == 1 && (sc->fig.duplicates || sc->fig.unexpected ||
						 sc->fig.misplaced || sc->fig.out_of_order)) {
			print_fig("not exactly once (yet?)", &sc->fig);
			said = true;
		}
		if (kl_mono_ms() - start > ms) {
			print_fig("gave up waiting", &sc->fig);
			return -1;
		}
		kl_sleep_ms(300);
	}
}

/* ------------------------------------------------------------ lease table */

static struct lease_store *store_for(const struct scenario *sc)
{
	struct lease_store_ddb_config cfg = { 0 };
	struct lease_store *st = NULL;
	struct kl_errinfo info = { 0 };

	cfg.table = sc->tag;
	cfg.aws = &fx.ddb_cfg;
	cfg.creds = fx.creds;
	CU_ASSERT_FATAL(lease_store_ddb_new(&cfg, &st, &info) == KL_OK);
	return st;
}

/* The basename of key (after the last '/'). */
static const char *base_of(const char *key)
{
	const char *s = strrchr(key, '/');

	return s ? s + 1 : key;
}

/*
 * Reads the pending intents of the scenario's table (directly from
 * dynalite, never through a proxy): shard, end, object keys. Returns how
 * many (-1 if the table cannot be read yet).
 */
static int read_intents(const struct scenario *sc, struct intent *out, int *ret_owned)
{
	struct lease_store *st = store_for(sc);
	struct lease_list list;
	struct kl_errinfo info = { 0 };
	int n = 0, owned = 0;

	lease_list_init(&list);
	if (lease_store_scan(st, &list, &info) != KL_OK) {
		lease_store_free(st);
		return -1;
	}
	for (size_t i = 0; i < list.n; i++) {
		const struct lease *l = &list.items[i];
		struct delivery_state ds;
		struct intent *it;

		owned += l->owner != NULL;
		if (l->pending.kind != LEASE_ESN_SEQ || lease_esn_cmp(&l->pending, &l->checkpoint) <= 0)
			continue;
		CU_ASSERT_FATAL(n < MAX_INTENTS);
		it = &out[n++];
		memset(it, 0, sizeof(*it));
		snprintf(it->shard, sizeof(it->shard), "%s", l->key);
		snprintf(it->end, sizeof(it->end), "%s/%" PRIu64, l->pending.seq, l->pending.subseq);
		snprintf(it->end_seq, sizeof(it->end_seq), "%s", l->pending.seq);
		CU_ASSERT_FATAL(l->pending_state != NULL);
		CU_ASSERT_FATAL(delivery_state_decode(l->pending_state, l->pending_state_len, &ds, &info) ==
				KL_OK);
		for (size_t k = 0; k < ds.n_objects; k++) {
			if (ds.objects[k].kind == DELIVERY_OBJ_STALE)
				continue;
			CU_ASSERT_FATAL(it->n_keys < 8);
			snprintf(it->keys[it->n_keys++], sizeof(it->keys[0]), "%s", ds.objects[k].key);
			/* Every object of a batch has the batch's range as its name. */
			if (!it->basename[0])
				snprintf(it->basename, sizeof(it->basename), "%s", base_of(ds.objects[k].key));
			CU_ASSERT_STRING_EQUAL(base_of(ds.objects[k].key), it->basename);
		}
		delivery_state_done(&ds);
	}
	lease_list_done(&list);
	lease_store_free(st);
	if (ret_owned)
		*ret_owned = owned;
	return n;
}

/* Waits until the table shows every shard owned and no intent pending. */
static bool wait_settled(const struct scenario *sc, int64_t ms)
{
	int64_t end = kl_mono_ms() + ms;
	struct intent it[MAX_INTENTS];

	for (;;) {
		int owned = 0, n = read_intents(sc, it, &owned);

		if (n == 0 && owned == SHARDS)
			return true;
		if (kl_mono_ms() > end) {
			fprintf(stderr, "\n  %s: %d intents pending, %d shards owned\n", sc->name, n, owned);
			return false;
		}
		kl_sleep_ms(200);
	}
}

/* ------------------------------------------------------------ S3 */

/* Every key of the bucket (caller frees each and the array). */
static char **list_keys(const struct scenario *sc, size_t *ret_n)
{
	char token[1024] = "";
	char **keys = NULL;
	size_t n = 0;

	do {
		struct s3_list_opts lo = { .continuation_token = token[0] ? token : NULL };
		struct s3_list_result res = { 0 };
		struct kl_errinfo info = { 0 };
		enum kl_err err = s3_list_objects_v2(&fx.s3c, sc->tag, &lo, &res, &info);

		tf_report("ListObjectsV2", err, &info);
		CU_ASSERT_FATAL(err == KL_OK);
		keys = realloc(keys, (n + res.n_entries + 1) * sizeof(*keys));
		CU_ASSERT_FATAL(keys != NULL);
		for (size_t i = 0; i < res.n_entries; i++)
			keys[n++] = strdup(res.entries[i].key);
		snprintf(token, sizeof(token), "%s",
			 res.is_truncated && res.next_continuation_token ? res.next_continuation_token : "");
		s3_list_result_done(&res);
	} while (token[0]);
	*ret_n = n;
	return keys;
}

static void free_keys(char **keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}

static size_t count_objects(const struct scenario *sc)
{
	size_t n;
	char **keys = list_keys(sc, &n);

	free_keys(keys, n);
	return n;
}

/* HEAD: true when key exists; its Last-Modified into lm (may be NULL). */
static bool object_exists(const struct scenario *sc, const char *key, char *lm, size_t lm_size)
{
	struct s3_object_info oi = { 0 };
	struct kl_errinfo info = { 0 };
	enum kl_err err = s3_head_object(&fx.s3c, sc->tag, key, &oi, &info);

	if (err != KL_OK && err != KL_ENOTFOUND)
		tf_report("HeadObject", err, &info);
	if (err == KL_OK && lm)
		snprintf(lm, lm_size, "%s", oi.last_modified ? oi.last_modified : "");
	s3_object_info_done(&oi);
	return err == KL_OK;
}

/*
 * After recovery: every key an intent named exists, and its batch's range
 * names exactly as many objects as the intent did (no second object for
 * the batch). Returns the problems found.
 */
static int check_intents_landed(const struct scenario *sc, const struct intent *it, int n)
{
	size_t nk;
	char **keys = list_keys(sc, &nk);
	int bad = 0;

	for (int i = 0; i < n; i++) {
		size_t same_range = 0;

		for (size_t k = 0; k < it[i].n_keys; k++)
			if (!object_exists(sc, it[i].keys[k], NULL, 0)) {
				fprintf(stderr, "\n  %s: intent key %s is not in S3\n", sc->name, it[i].keys[k]);
				bad++;
			}
		for (size_t k = 0; k < nk; k++)
			same_range += strcmp(base_of(keys[k]), it[i].basename) == 0;
		if (same_range != it[i].n_keys) {
			fprintf(stderr, "\n  %s: range %s has %zu objects, its intent named %zu\n", sc->name,
				it[i].basename, same_range, it[i].n_keys);
			bad++;
		}
	}
	free_keys(keys, nk);
	return bad;
}

/* ------------------------------------------------------------ the end of a scenario */

/*
 * The lake must be complete with nothing pending; then every worker is
 * stopped with SIGTERM (exit 0) and lakecheck runs once more with nothing
 * running. t_fault >= 0: the recovery time is measured from it.
 */
static void finish(struct scenario *sc, int64_t t_fault, const char *what)
{
	struct lakefig last;
	int64_t waited = wait_lake(sc, LAKE_WAIT_MS);

	if (t_fault >= 0 && waited >= 0) {
		sc->recovery_ms = kl_mono_ms() - t_fault;
		sc->recovery_what = what;
		tp_step("%s: exactly once %" PRId64 " ms after %s", sc->name, sc->recovery_ms, what);
	}
	CU_ASSERT_FATAL(waited >= 0);
	CU_ASSERT_FATAL(wait_settled(sc, 30000));
	for (int i = 0; i < MAX_PROCS; i++)
		if (fx.procs[i].pid > 0)
			CU_ASSERT_EQUAL(stop_worker(&fx.procs[i], 20000), 0);
	lakecheck(sc, NULL, &last);
	if (last.rc != 0)
		print_fig("after the workers stopped", &last);
	CU_ASSERT_EQUAL(last.rc, 0);
	CU_ASSERT_EQUAL(last.records_found, last.records_expected);
	CU_ASSERT_EQUAL(last.objects, sc->fig.objects);
	CU_ASSERT(last.records_expected > RECORDS * 9 / 10);
	sc->fig = last;
	sc->finished = true;
}

/*
 * Holds the first S3 PutObject, produces, waits until it is held and
 * kills the worker: it dies with an intent in the lease, its journal row
 * and sealed spools on disk, and the upload unanswered. Returns the
 * intents as the table shows them after the kill (at least one). (Objects
 * here are far below s3.multipart_threshold, so PutObject is the upload;
 * UploadPart would need objects of 5 MiB and more.)
 */
static int kill_during_upload(struct scenario *sc, struct proc *w, struct intent *it,
			      int64_t *ret_t_kill)
{
	int n;

	CU_ASSERT_FATAL(faultctl_set_rules(fx.s3p, "h op=S3.PutObject first=1 action=hold") == KL_OK);
	produce(sc, RECORDS, false);
	CU_ASSERT_EQUAL_FATAL(faultctl_wait_held(fx.s3p, "h", 1, 30000), KL_OK);
	kill9(sc, w);
	*ret_t_kill = kl_mono_ms();
	n = read_intents(sc, it, NULL);
	tp_step("%s: %d intent(s) pending at the kill", sc->name, n);
	CU_ASSERT_FATAL(n >= 1);
	/* The worker is gone: let the held PUT go (the proxy forwards what the
	 * dead client had sent; a cut body is refused by s3rver). */
	CU_ASSERT_FATAL(faultctl_set_rules(fx.s3p, "") == KL_OK);
	return n;
}

/* ------------------------------------------------------------ the tests */

static void test_setup(void)
{

	tf_env_read(&fx.env);
	CU_ASSERT_FATAL(tf_program("KL_TEST_KINLAKE", KL_TEST_BUILDDIR "/kinlake", fx.bin, sizeof(fx.bin)));
	CU_ASSERT_FATAL(tf_program("KL_LAKECHECK", KL_LAKECHECK_PATH, fx.lakecheck, sizeof(fx.lakecheck)));
	CU_ASSERT_FATAL(tf_make_dir("integ-eo", fx.dir, sizeof(fx.dir)));
	CU_ASSERT_FATAL(tf_aws_init(&fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.kc, "kinesis", fx.env.kinesis, fx.creds) == KL_OK);
	CU_ASSERT_FATAL(tf_client_init(&fx.s3c, "s3", fx.env.s3, fx.creds) == KL_OK);
	tf_client_config("dynamodb", fx.env.dynamodb, &fx.ddb_cfg);
	CU_ASSERT_FATAL(faultctl_start(fx.env.s3, &fx.s3p) == KL_OK);
}

static void test_normal_gzip(void)
{
	struct scenario *sc = scen_new("normal-gzip", "gzip", 2, 200);

	start_worker(sc, "a1", "a", "a", NULL);
	produce(sc, RECORDS, false);
	finish(sc, -1, NULL);
}

/* gzip helpers for the negative controls. */
static bool gunzip(const char *in, size_t len, char **ret, size_t *ret_len)
{
	z_stream z = { 0 };
	size_t cap = len * 8 + 1024, used = 0;
	char *out = malloc(cap);
	int zr = Z_OK;

	if (!out || inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
		free(out);
		return false;
	}
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	while (zr == Z_OK) {
		if (cap - used < 4096) {
			cap *= 2;
			out = realloc(out, cap);
			if (!out)
				break;
		}
		z.next_out = (Bytef *)out + used;
		z.avail_out = (uInt)(cap - used);
		zr = inflate(&z, Z_NO_FLUSH);
		used = cap - z.avail_out;
	}
	inflateEnd(&z);
	if (zr != Z_STREAM_END || !out) {
		free(out);
		return false;
	}
	*ret = out;
	*ret_len = used;
	return true;
}

static bool gzip_mem(const char *in, size_t len, char **ret, size_t *ret_len)
{
	z_stream z = { 0 };
	size_t cap = len + len / 10 + 1024;
	char *out = malloc(cap);

	if (!out || deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		free(out);
		return false;
	}
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = (Bytef *)out;
	z.avail_out = (uInt)cap;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
		deflateEnd(&z);
		free(out);
		return false;
	}
	*ret_len = cap - z.avail_out;
	deflateEnd(&z);
	*ret = out;
	return true;
}

static void put_object(const struct scenario *sc, const char *key, const char *data, size_t len,
		       const char *encoding)
{
	struct s3_put_opts po = { .content_encoding = encoding };
	struct s3_put_result res;
	struct kl_errinfo info = { 0 };
	enum kl_err err = s3_put_object(&fx.s3c, sc->tag, key, data, len, &po, &res, &info);

	tf_report("PutObject", err, &info);
	CU_ASSERT_FATAL(err == KL_OK);
}

static void delete_object(const struct scenario *sc, const char *key)
{
	struct kl_errinfo info = { 0 };

	CU_ASSERT_FATAL(s3_delete_object(&fx.s3c, sc->tag, key, &info) == KL_OK);
}

/*
 * lakecheck must be able to fail: on the finished gzip lake, a copied
 * object (duplicates), a deleted one (missing), one with its lines
 * reversed (out of order), a garbage object (bad object, bad key), a
 * malformed event, an unknown id and a non-JSON line in a data object
 * (misplaced, unexpected, bad line) and a regex no key matches are each
 * caught; restored, the lake passes again.
 */
static void test_lakecheck_catches_breakage(void)
{
	struct scenario *sc = &fx.sc[0];
	struct lakefig f;
	size_t nk, best_len = 0, raw_len = 0, len, gz_len = 0;
	char **keys, *best = NULL, *gz = NULL, *raw = NULL, *rev, *copy_key;
	struct kl_errinfo info = { 0 };

	CU_ASSERT_FATAL(fx.n_sc >= 1 && sc->finished);
	/* The data object with the most bytes: most records per session. */
	keys = list_keys(sc, &nk);
	for (size_t i = 0; i < nk; i++) {
		struct s3_object_info oi = { 0 };

		if (strncmp(keys[i], "data/", 5) != 0 ||
		    s3_head_object(&fx.s3c, sc->tag, keys[i], &oi, &info) != KL_OK)
			continue;
		if (oi.size > best_len) {
			best_len = oi.size;
			best = keys[i];
		}
		s3_object_info_done(&oi);
	}
	CU_ASSERT_FATAL(best != NULL);
	CU_ASSERT_FATAL(s3_get_object(&fx.s3c, sc->tag, best, 64 << 20, &gz, &gz_len, NULL, &info) ==
			KL_OK);
	CU_ASSERT_FATAL(gunzip(gz, gz_len, &raw, &raw_len));

	/* 1. a copy under another (valid) partition: every record twice */
	copy_key = strdup(best);
	CU_ASSERT_FATAL(copy_key && strstr(copy_key, "/hour=") != NULL);
	memcpy(strstr(copy_key, "/hour=") + 6, "99", 2);
	put_object(sc, copy_key, gz, gz_len, "gzip");
	CU_ASSERT_EQUAL(lakecheck(sc, NULL, &f), 1);
	CU_ASSERT(f.duplicates > 0);
	CU_ASSERT_EQUAL(f.missing, 0);
	delete_object(sc, copy_key);

	/* 2. the object gone: its records are missing */
	delete_object(sc, best);
	CU_ASSERT_EQUAL(lakecheck(sc, NULL, &f), 1);
	CU_ASSERT(f.missing > 0);
	CU_ASSERT_EQUAL(f.duplicates, 0);

	/* 3. its lines reversed: later seqs of a session before earlier ones */
	rev = malloc(raw_len + 2);
	CU_ASSERT_FATAL(rev != NULL);
	len = 0;
	for (size_t end = raw_len; end > 0;) {
		size_t start = end - 1;

		/* the line ending at raw[end - 1] ('\n') starts after the previous '\n' */
		while (start > 0 && raw[start - 1] != '\n')
			start--;
		memcpy(rev + len, raw + start, end - start);
		len += end - start;
		end = start;
	}
	{
		char *rgz = NULL;
		size_t rgz_len = 0;

		CU_ASSERT_FATAL(gzip_mem(rev, len, &rgz, &rgz_len));
		put_object(sc, best, rgz, rgz_len, "gzip");
		free(rgz);
	}
	CU_ASSERT_EQUAL(lakecheck(sc, NULL, &f), 1);
	CU_ASSERT(f.out_of_order > 0);
	CU_ASSERT_EQUAL(f.missing + f.duplicates, 0);

	/* 4. the original back, plus a garbage object */
	put_object(sc, best, gz, gz_len, "gzip");
	put_object(sc, "data/junk.gz", "not gzip at all", 15, "gzip");
	CU_ASSERT_EQUAL(lakecheck(sc, NULL, &f), 1);
	CU_ASSERT(f.bad_objects >= 1);
	CU_ASSERT(f.bad_keys >= 1);
	delete_object(sc, "data/junk.gz");

	/* 5. in a data object: a malformed event (its place is the error
	 * prefix), an id no manifest has, and a line that is not JSON */
	{
		char *manifest = tp_read_file(sc->manifests[0], (64u << 20) - 1, NULL), line[256], *bad = NULL, *bgz = NULL;
		char key[KEYTMPL_KEY_MAX];
		const char *p;
		size_t bgz_len = 0;

		CU_ASSERT_FATAL(manifest != NULL);
		for (p = manifest; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
			const char *kind = strchr(p, '\t');

			for (int tab = 0; kind && tab < 2; tab++)
				kind = strchr(kind + 1, '\t');
			if (kind && strncmp(kind + 1, "ok\t", 3) != 0 && strncmp(kind + 1, "bot\t", 4) != 0) {
				snprintf(line, sizeof(line), "{\"event_id\":\"%.*s\"}\n{\"event_id\":\"%"
					 PRIu64 "-999999\"}\nnot json\n", (int)(strchr(p, '\t') - p), p, sc->seed);
				bad = line;
				break;
			}
		}
		CU_ASSERT_FATAL(bad != NULL);
		CU_ASSERT_FATAL(gzip_mem(bad, strlen(bad), &bgz, &bgz_len));
		snprintf(key, sizeof(key), "%s", best);
		memcpy(strstr(key, "/hour=") + 6, "98", 2);
		put_object(sc, key, bgz, bgz_len, "gzip");
		CU_ASSERT_EQUAL(lakecheck(sc, NULL, &f), 1);
		CU_ASSERT(f.misplaced >= 1);
		CU_ASSERT(f.unexpected >= 1);
		CU_ASSERT(f.bad_lines >= 1);
		delete_object(sc, key);
		free(bgz);
		free(manifest);
	}

	/* 6. keys of another template */
	CU_ASSERT_EQUAL(lakecheck(sc, "^lake/", &f), 1);
	CU_ASSERT_EQUAL(f.bad_keys, f.objects);

	/* restored: all good again */
	CU_ASSERT_EQUAL(lakecheck(sc, NULL, &f), 0);
	CU_ASSERT_EQUAL(f.records_found, f.records_expected);
	free(rev);
	free(raw);
	free(gz);
	free(copy_key);
	free_keys(keys, nk);
}

static void test_normal_zstd_kpl(void)
{
#ifdef HAVE_ZSTD
	struct scenario *sc = scen_new("normal-zstd-kpl", "zstd", 2, 200);

	start_worker(sc, "a1", "a", "a", NULL);
	produce(sc, RECORDS, true);
	finish(sc, -1, NULL);
#else
	fprintf(stderr, "\n  (built without zstd: skipped)");
#endif
}

static void test_kill9_open_batch(void)
{
	/* Sealed by age only, 5 s after the first record: long enough to see
	 * records pushed and kill before the seal. */
	struct scenario *sc = scen_new("kill9-open-batch", "gzip", 5, 0);
	struct proc *a = start_worker(sc, "a1", "a", "a", NULL);
	int64_t end, t_kill;

	produce(sc, RECORDS, false);
	end = kl_mono_ms() + 30000;
	while (metric(sc, "a1", "kinlake_records_in_total", "") < 1 && kl_mono_ms() < end)
		kl_sleep_ms(50);
	CU_ASSERT_FATAL(metric(sc, "a1", "kinlake_records_in_total", "") >= 1);
	kill9(sc, a);
	t_kill = kl_mono_ms();
	/* Nothing was sealed: no object, no intent. */
	CU_ASSERT_EQUAL_FATAL(count_objects(sc), 0);
	{
		struct intent it[MAX_INTENTS];

		CU_ASSERT_EQUAL(read_intents(sc, it, NULL), 0);
	}
	start_worker(sc, "a2", "a", "a", NULL);
	finish(sc, t_kill, "kill -9, restart");
	/* The open batch's spool files were there, unfinished. */
	CU_ASSERT_TRUE(log_has(sc, "a2", "unfinished spool file"));
}

static void test_kill9_upload_restart_same_host(void)
{
	struct scenario *sc = scen_new("kill9-upload-same-host", "gzip", 2, 200);
	struct proc *a = start_worker(sc, "a1", "a", "a", NULL);
	struct intent it[MAX_INTENTS];
	int64_t t_kill;
	int n = kill_during_upload(sc, a, it, &t_kill);

	start_worker(sc, "a2", "a", "a", NULL);
	finish(sc, t_kill, "kill -9 mid-upload, restart (spool path)");
	fx.spool_recovery_ms = sc->recovery_ms;
	CU_ASSERT_EQUAL(check_intents_landed(sc, it, n), 0);
	/* Each intent was uploaded from this host's verified spool files. */
	for (int i = 0; i < n; i++) {
		char needle[600];

		snprintf(needle, sizeof(needle), "delivery: shard '%.63s': uploading the pending batch up to"
			 " %.199s from its", it[i].shard, it[i].end);
		if (!log_has(sc, "a2", needle))
			fprintf(stderr, "\n  not in the log: %s\n", needle);
		CU_ASSERT_TRUE(log_has(sc, "a2", needle));
	}
}

static void test_kill9_upload_takeover_other_host(void)
{
	struct scenario *sc = scen_new("kill9-upload-other-host", "gzip", 2, 200);
	struct proc *a = start_worker(sc, "a1", "a", "a", NULL);
	struct intent it[MAX_INTENTS];
	int64_t t_kill;
	int n = kill_during_upload(sc, a, it, &t_kill);

	/* Another host: its own worker id and an empty state directory. */
	start_worker(sc, "b1", "b", "b", NULL);
	finish(sc, t_kill, "kill -9 mid-upload, takeover (rebuild path)");
	fx.rebuild_ms = sc->recovery_ms;
	CU_ASSERT_EQUAL(check_intents_landed(sc, it, n), 0);
	/* b took each lease with its intent and, having no spool, rebuilt it. */
	for (int i = 0; i < n; i++)
		CU_ASSERT_TRUE(log_took_intent(sc, "b1", &it[i]));
	CU_ASSERT_FALSE(log_has(sc, "b1", "verified spool"));
}

/*
 * Kills the worker between upload and checkpoint: every object of its
 * pending intents is in S3 (Last-Modified noted in it[]), no commit
 * landed. Returns the number of intents.
 *
 * The commit is a DynamoDB UpdateItem, and so are renewals, takes and
 * intents: the proxy cannot tell them apart without the body. So: hold the
 * first S3 upload; then hold *every* UpdateItem; then let the upload go.
 * From that moment no lease write of this worker lands, so once the held
 * batch's objects are all in S3 the worker is, for sure, between upload
 * and checkpoint (its renewals being held too does not matter: it is
 * killed within a lease period). After the kill the DynamoDB proxy is
 * stopped, which drops the held requests unforwarded (a release would
 * forward them: the checkpoint would land after the worker's death and
 * there would be nothing to recover).
 */
static int kill_before_checkpoint(struct scenario *sc, struct intent *it, int64_t *ret_t_kill)
{
	struct intent again[MAX_INTENTS];
	struct proc *a;
	int64_t end;
	int n = 0, n_again;
	bool all_up = false;

	CU_ASSERT_FATAL(faultctl_start(fx.env.dynamodb, &fx.ddbp) == KL_OK);
	a = start_worker(sc, "a1", "a", "a", faultctl_url(fx.ddbp));
	CU_ASSERT_FATAL(faultctl_set_rules(fx.s3p, "h op=S3.PutObject first=1 action=hold") == KL_OK);
	produce(sc, RECORDS, false);
	CU_ASSERT_EQUAL_FATAL(faultctl_wait_held(fx.s3p, "h", 1, 30000), KL_OK);
	CU_ASSERT_FATAL(faultctl_set_rules(fx.ddbp, "hu target=DynamoDB_20120810.UpdateItem action=hold") ==
			KL_OK);
	CU_ASSERT_FATAL(faultctl_release(fx.s3p, "h", 0, NULL) == KL_OK);
	/* Intents are frozen now; wait until every object they name is up. */
	end = kl_mono_ms() + 20000;
	while (!all_up && kl_mono_ms() < end) {
		n = read_intents(sc, it, NULL);
		all_up = n >= 1;
		for (int i = 0; all_up && i < n; i++)
			for (size_t k = 0; all_up && k < it[i].n_keys; k++)
				all_up = object_exists(sc, it[i].keys[k], it[i].last_modified[k],
						       sizeof(it[i].last_modified[0]));
		if (!all_up)
			kl_sleep_ms(50);
	}
	CU_ASSERT_FATAL(all_up);
	kill9(sc, a);
	*ret_t_kill = kl_mono_ms();
	CU_ASSERT_EQUAL(faultctl_stop(fx.ddbp), 0);
	fx.ddbp = NULL;
	/* Still pending after the kill: no commit got through. */
	n_again = read_intents(sc, again, NULL);
	CU_ASSERT_EQUAL_FATAL(n_again, n);
	for (int i = 0; i < n; i++)
		CU_ASSERT_STRING_EQUAL(again[i].end, it[i].end);
	tp_step("%s: %d intent(s) with every object uploaded and no checkpoint", sc->name, n);
	return n;
}

/* How many of the intents' objects have another Last-Modified now. */
static size_t count_rewritten(const struct scenario *sc, const struct intent *it, int n,
			      size_t *ret_total)
{
	size_t rewritten = 0, total = 0;

	for (int i = 0; i < n; i++)
		for (size_t k = 0; k < it[i].n_keys; k++) {
			char lm[64] = "";

			CU_ASSERT_TRUE(object_exists(sc, it[i].keys[k], lm, sizeof(lm)));
			rewritten += strcmp(lm, it[i].last_modified[k]) != 0;
			total++;
		}
	*ret_total = total;
	return rewritten;
}

static void test_kill9_before_checkpoint_takeover(void)
{
	struct scenario *sc = scen_new("kill9-before-ckpt-other", "gzip", 2, 200);
	struct intent it[MAX_INTENTS];
	int64_t t_kill;
	int n = kill_before_checkpoint(sc, it, &t_kill);
	size_t total, rewritten;

	/* Another host rebuilds the batch and uploads it again: the same keys,
	 * overwritten. (It can take the lease only failover_ms after the
	 * kill, so the one-second Last-Modified shows the rewrite.) */
	start_worker(sc, "b1", "b", "b", NULL);
	finish(sc, t_kill, "kill -9 after upload, takeover (overwrite)");
	CU_ASSERT_EQUAL(check_intents_landed(sc, it, n), 0);
	rewritten = count_rewritten(sc, it, n, &total);
	tp_step("%s: %zu of %zu objects of the intents rewritten in place", sc->name, rewritten, total);
	CU_ASSERT_EQUAL(rewritten, total);
	for (int i = 0; i < n; i++)
		CU_ASSERT_TRUE(log_took_intent(sc, "b1", &it[i]));
	CU_ASSERT_FALSE(log_has(sc, "b1", "verified spool"));
}

static void test_kill9_before_checkpoint_same_host(void)
{
	struct scenario *sc = scen_new("kill9-before-ckpt-same", "gzip", 2, 200);
	struct intent it[MAX_INTENTS];
	int64_t t_kill;
	int n = kill_before_checkpoint(sc, it, &t_kill);
	size_t total, rewritten;

	/* The same host knows from its journal that the objects are up: it
	 * only commits, nothing is uploaded again. */
	start_worker(sc, "a2", "a", "a", NULL);
	finish(sc, t_kill, "kill -9 after upload, restart (commit only)");
	CU_ASSERT_EQUAL(check_intents_landed(sc, it, n), 0);
	rewritten = count_rewritten(sc, it, n, &total);
	tp_step("%s: %zu of %zu objects of the intents rewritten", sc->name, rewritten, total);
	CU_ASSERT_EQUAL(rewritten, 0);
	for (int i = 0; i < n; i++) {
		char needle[600];

		snprintf(needle, sizeof(needle), "delivery: shard '%.63s': uploading the pending batch up to"
			 " %.199s from its", it[i].shard, it[i].end);
		CU_ASSERT_TRUE(log_has(sc, "a2", needle));
	}
}

/*
 * Lease writes that land but whose answer is lost: every 4th UpdateItem
 * (intents, checkpoints, renewals alike) is applied by dynalite and then
 * the connection is reset, so the worker's retry finds the counter
 * already moved and must work out whether its own write landed (or give
 * the lease up and get it back later); plus DynamoDB throttling. Either
 * way nothing may double or go missing.
 */
static void test_ddb_ambiguous_writes(void)
{
	struct scenario *sc = scen_new("ddb-lost-answers", "gzip", 2, 200);
	uint64_t late = 0, thr = 0;
	int64_t t_fault;

	CU_ASSERT_FATAL(faultctl_start(fx.env.dynamodb, &fx.ddbp) == KL_OK);
	start_worker(sc, "a1", "a", "a", faultctl_url(fx.ddbp));
	CU_ASSERT_FATAL(faultctl_set_rules(fx.ddbp,
					   "late target=DynamoDB_20120810.UpdateItem for=8000 every=4"
					   " action=after:reset\n"
					   "thr target=DynamoDB_20120810 for=8000 every=7 action=throttle-ddb\n") ==
			KL_OK);
	t_fault = kl_mono_ms();
	produce(sc, RECORDS, false);
	finish(sc, t_fault, "DynamoDB faults began (8 s window)");
	CU_ASSERT_EQUAL(faultctl_counter(fx.ddbp, "rules", "late", "faults", &late), KL_OK);
	CU_ASSERT_EQUAL(faultctl_counter(fx.ddbp, "rules", "thr", "faults", &thr), KL_OK);
	tp_step("%s: %" PRIu64 " UpdateItems applied with their answer lost, %" PRIu64 " throttled",
	     sc->name, late, thr);
	CU_ASSERT(late > 0);
	CU_ASSERT(thr > 0);
	CU_ASSERT_EQUAL(faultctl_stop(fx.ddbp), 0);
	fx.ddbp = NULL;
}

static void test_s3_slowdown_and_resets(void)
{
	struct scenario *sc = scen_new("s3-slowdown-resets", "gzip", 2, 200);
	uint64_t slow = 0, rst = 0, late = 0;
	int64_t t_fault, end;

	start_worker(sc, "a1", "a", "a", NULL);
	/* For 6 s: every 2nd PutObject answered 503 SlowDown, every 3rd of the
	 * rest reset before it reaches s3rver, every 4th of the rest reset
	 * after s3rver stored it (the retry overwrites the same key). */
	CU_ASSERT_FATAL(faultctl_set_rules(fx.s3p,
					   "slow op=S3.PutObject for=6000 every=2 action=s3-slowdown\n"
					   "rst op=S3.PutObject for=6000 every=3 action=reset\n"
					   "late op=S3.PutObject for=6000 every=4 action=after:reset\n") == KL_OK);
	t_fault = kl_mono_ms();
	produce(sc, RECORDS, false);
	finish(sc, t_fault, "S3 faults began (6 s window)");
	CU_ASSERT_EQUAL(faultctl_counter(fx.s3p, "rules", "slow", "faults", &slow), KL_OK);
	CU_ASSERT_EQUAL(faultctl_counter(fx.s3p, "rules", "rst", "faults", &rst), KL_OK);
	CU_ASSERT_EQUAL(faultctl_counter(fx.s3p, "rules", "late", "faults", &late), KL_OK);
	tp_step("%s: injected %" PRIu64 " SlowDown, %" PRIu64 " resets, %" PRIu64 " resets after the write",
	     sc->name, slow, rst, late);
	CU_ASSERT(slow > 0);
	CU_ASSERT(rst + late > 0);
	/* The worker counted them (the final metrics file is written at exit). */
	end = kl_mono_ms() + 5000;
	while (metric(sc, "a1", "kinlake_aws_retries_total", "service=\"s3\"") < 1 && kl_mono_ms() < end)
		kl_sleep_ms(100);
	tp_step("%s: metrics: s3 throttles %.0f, retries %.0f, errors %.0f", sc->name,
	     metric(sc, "a1", "kinlake_aws_throttles_total", "service=\"s3\""),
	     metric(sc, "a1", "kinlake_aws_retries_total", "service=\"s3\""),
	     metric(sc, "a1", "kinlake_aws_errors_total", "service=\"s3\""));
	CU_ASSERT(metric(sc, "a1", "kinlake_aws_throttles_total", "service=\"s3\"") >= 1);
	CU_ASSERT(metric(sc, "a1", "kinlake_aws_retries_total", "service=\"s3\"") >= 1);
}

static void test_corrupt_journal(void)
{
	struct scenario *sc = scen_new("corrupt-journal", "gzip", 2, 200);
	struct proc *a = start_worker(sc, "a1", "a", "a", NULL);
	struct intent it[MAX_INTENTS];
	char path[700], moved[760], junk[16384];
	struct kl_rng rng;
	int64_t t_kill;
	int n = kill_during_upload(sc, a, it, &t_kill), fd;
	struct stat sb;

	/*
	 * The journal is the database file plus its WAL: killed before any
	 * checkpoint, every page of a young journal is still in the WAL, and
	 * SQLite reads pages from the WAL first, so garbage in journal.db
	 * alone goes unnoticed (and does no harm). Garbage in both, and the
	 * shared-memory index (derived from the WAL) gone.
	 */
	scen_path(sc, "a", "-state/journal.db", path, sizeof(path));
	CU_ASSERT_FATAL(stat(path, &sb) == 0);
	kl_rng_seed_value(&rng, 77);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)kl_rng_below(&rng, 256);
	for (int k = 0; k < 2; k++) {
		char file[760];

		snprintf(file, sizeof(file), "%s%s", path, k ? "-wal" : "");
		fd = open(file, O_WRONLY | O_TRUNC);
		if (k && fd < 0 && errno == ENOENT)
			continue;
		CU_ASSERT_FATAL(fd >= 0);
		CU_ASSERT_FATAL(write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
		close(fd);
	}
	snprintf(moved, sizeof(moved), "%s-shm", path);
	unlink(moved);
	tp_step("%s: overwrote %s (and its WAL) with garbage", sc->name, path);
	start_worker(sc, "a2", "a", "a", NULL);
	finish(sc, t_kill, "kill -9, garbage journal, restart");
	CU_ASSERT_EQUAL(check_intents_landed(sc, it, n), 0);
	CU_ASSERT_TRUE(log_has(sc, "a2", "was damaged"));
	snprintf(moved, sizeof(moved), "%s.corrupt.1", path);
	CU_ASSERT_EQUAL(stat(moved, &sb), 0);
	/* Without its journal the host rebuilt the intents from the stream. */
	CU_ASSERT_FALSE(log_has(sc, "a2", "verified spool"));
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_setup),
		KL_TEST(test_normal_gzip),
		KL_TEST(test_lakecheck_catches_breakage),
		KL_TEST(test_normal_zstd_kpl),
		KL_TEST(test_kill9_open_batch),
		KL_TEST(test_kill9_upload_restart_same_host),
		KL_TEST(test_kill9_upload_takeover_other_host),
		KL_TEST(test_kill9_before_checkpoint_takeover),
		KL_TEST(test_kill9_before_checkpoint_same_host),
		KL_TEST(test_s3_slowdown_and_resets),
		KL_TEST(test_ddb_ambiguous_writes),
		KL_TEST(test_corrupt_journal),
		{ NULL, NULL },
	};
	const char *only = getenv("KL_EO_ONLY");
	struct kl_test run[sizeof(t) / sizeof(t[0])];
	size_t n = 0;
	int64_t t0 = kl_mono_ms();
	int rc;

	/* $KL_EO_ONLY=SUBSTRING (debugging one path over and over): only the
	 * tests whose name contains it, after the set-up. */
	for (size_t i = 0; t[i].name; i++)
		if (i == 0 || !only || !*only || strstr(t[i].name, only))
			run[n++] = t[i];
	run[n] = (struct kl_test){ NULL, NULL };

	kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	kl_test_env_or_skip("KL_TEST_EMU_DIR");
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGALRM, on_fatal_signal);
	atexit(kill_all);
	alarm(900);             /* a hang must not outlive the harness */
	rc = kl_test_run("exactly_once", run);
	kill_all();
	faultctl_stop(fx.ddbp);
	faultctl_stop(fx.s3p);
	printf("figures: %-26s %8s %8s %8s %6s %6s %8s %8s  %s\n", "scenario", "records", "found",
	       "objects", "dup", "lost", "other", "recovery", "(ms, from)");
	for (int i = 0; i < fx.n_sc; i++) {
		const struct scenario *sc = &fx.sc[i];
		const struct lakefig *f = &sc->fig;

		printf("figures: %-26s %8lld %8lld %8lld %6lld %6lld %8lld %8" PRId64 "  %s%s\n", sc->name,
		       f->records_expected, f->records_found, f->objects, f->duplicates, f->missing,
		       f->unexpected + f->out_of_order + f->misplaced + f->bad_keys + f->bad_objects +
			       f->bad_lines + f->overlapping,
		       sc->recovery_ms, sc->recovery_what ? sc->recovery_what : "-",
		       sc->finished ? "" : " [did not finish]");
	}
	printf("figures: recovery after kill -9 mid-upload: same host (spool) %" PRId64
	       " ms, other host (rebuild) %" PRId64 " ms\n",
	       fx.spool_recovery_ms, fx.rebuild_ms);
	printf("figures: whole program %" PRId64 " ms\n", kl_mono_ms() - t0);
	aws_client_done(&fx.kc);
	aws_client_done(&fx.s3c);
	tf_aws_done(fx.creds);
	return rc;
}
