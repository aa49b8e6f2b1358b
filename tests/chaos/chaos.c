/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chaos.c: the fleet chaos test (DESIGN.md §1). Three real `kinlake run`
 * workers drain an 8-shard stream into S3 while two producers (plain and
 * KPL, with malformed events) write at a steady rate; for KL_CHAOS_SECONDS
 * (default 180) it kill -9s and restarts workers (same, fresh or new-id
 * state), rolls them with SIGTERM, pauses them with SIGSTOP for longer
 * than the failover time (half of the kills and pauses mid-upload),
 * splits and merges shards and injects S3, DynamoDB and Kinesis faults
 * through one faultproxy per worker and service, at moments drawn from
 * KL_CHAOS_SEED (printed). Then it stops
 * producing, waits until every shard's checkpoint reaches the last record
 * written (status 0, no intent), stops the fleet and judges the lake from
 * S3 alone with tests/tools/lakecheck: every id exactly once, malformed
 * ones only in error objects, per-key order, every key on its template;
 * and with tests/tools/aggcheck the workers' DynamoDB aggregates (count +
 * late and sum:price per 10 s window x page x action, README
 * "Aggregates") must equal what the S3 data objects hold. Along the way: no shard's checkpoint ever goes back, and a worker
 * resumed after SIGSTOP stops every shard taken from it meanwhile. Times
 * (unowned after a kill, SIGTERM handover) are printed, not judged.
 *
 * Invariants: every process it starts (workers, producers, proxies, the
 * kinlake runs it polls) is in its own process group, dies with this
 * process (PR_SET_PDEATHSIG) and is killed on every exit path (atexit,
 * fatal signals, the overall alarm). Every wait has a deadline. Without
 * the emulators (KL_TEST_*) it exits 77. Exit 0 pass, 1 fail.
 *
 *   KL_CHAOS_SECONDS=1800 KL_CHAOS_SEED=N \
 *       tests/emu/emulators.sh --no-moto -- ./tests/chaos/chaos
 * Other knobs: KL_CHAOS_RATE (events/s per producer, default 50),
 * KL_TEST_KINLAKE (the worker binary), KL_LAKECHECK and KL_AGGCHECK (the
 * checkers).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "aws.h"
#include "creds.h"
#include "faultctl.h"
#include "http.h"
#include "kinesis.h"
#include "proc.h"
#include "s3.h"
#include "util.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define NSLOTS 3                  /* worker processes */
#define NSHARDS 8                 /* shards at the start */
#define NSVC 3                    /* kinesis, dynamodb, s3 */
#define MAX_SHARDS 256            /* leases / shards ever seen */
#define MAX_TRACKERS 2048
#define MAX_EVENTS 4096
#define MAX_CHILDREN 64

#define FAILOVER_MS 3000
#define AGG_WINDOW_S 10             /* aggregates.window_seconds */
#define TAKE_MS 2000
#define GRACE_MS 5000
#define POLL_MS 250
#define UNOWNED_NOTE_MS 90000   /* a tracker gives up (noted, not failed) */
#define MIN_OPEN 4                /* merges stop here ... */
#define MAX_OPEN 14               /* ... splits here */

static const char *const svc_names[NSVC] = { "kinesis", "dynamodb", "s3" };

/* ------------------------------------------------------------ state */

enum slot_state { SLOT_DOWN = 0, SLOT_RUNNING, SLOT_STOPPED, SLOT_TERMINATING };

enum ev_kind { EV_KILL, EV_TERM, EV_PAUSE, EV_SPLIT, EV_MERGE, EV_FAULT, EV_KIND_COUNT };
static const char *const ev_names[EV_KIND_COUNT] = { "kill", "sigterm", "pause", "split",
						     "merge", "fault" };

struct slot {
	enum slot_state state;
	pid_t pid;
	char worker_id[32];
	int state_gen;                    /* state dir "<id>-state-<gen>" */
	int incarnation;                  /* log "<slot>-<n>.log" */
	int64_t restart_at;               /* SLOT_DOWN: mono ms, 0 = not scheduled */
	int64_t cont_at;                  /* SLOT_STOPPED: when to SIGCONT */
	int64_t kill_at;                  /* SLOT_TERMINATING: kill -9 mid-shutdown, 0 = no */
	int64_t rekill_at;                /* SLOT_RUNNING: kill -9 again (recovery), 0 = no */
	bool hold_restart;                /* SIGTERM: restart only once handed over */
	enum ev_kind pending;             /* SLOT_RUNNING: EV_KILL or EV_PAUSE once its S3 */
	int64_t pending_at;               /* is slow (mid-upload), else EV_KIND_COUNT */
	struct faultctl *proxy[NSVC];
};

enum track_kind { TRACK_KILL, TRACK_PAUSE, TRACK_TERM };

/* One disruption whose recovery is measured from the status polls. */
struct tracker {
	enum track_kind kind;
	int slot;
	char victim[32];
	int64_t t0, wall0;
	int n;
	char shards[32][64];
	bool done[32];
	int64_t worst;                    /* ms until the last of them was held again */
	bool finished;
	bool ddb_fault;                   /* a DynamoDB fault overlapped the measure */
	/* TRACK_PAUSE, filled at the SIGCONT: */
	bool resumed;
	int incarnation;                  /* the paused process's log */
	int64_t cont_mono;
	int64_t ended_mono;               /* that process was killed (0: not) */
	bool taken[32];                   /* seen held by another worker while paused */
};

/* The highest checkpoint seen per shard: a lease's checkpoint never goes
 * back (a fenced-out owner cannot write one). */
struct cp_seen {
	char id[64];
	int rank;                         /* 0 start position, 1 a record, 2 SHARD_END */
	char seq[160];
	uint64_t sub;
};

struct event {
	int64_t at;                       /* ms since the chaos start */
	enum ev_kind kind;
};

struct shard_view {
	char id[64];
	char state[24];
	char owner[48];
	char checkpoint[160];
	uint64_t cp_sub;
	bool pending;
	int64_t heartbeat;
};

struct snapshot {
	bool valid;
	int rc;
	int n;
	struct shard_view s[MAX_SHARDS];
	char summary[256];
};

struct expect {                           /* last record written to a shard */
	char shard[64];
	char seq[160];
	uint64_t sub;
};

static struct {
	/* environment */
	const char *kinesis, *dynamodb, *s3, *key_id, *secret;
	char bin[4096], lakecheck[4096], aggcheck[4096];
	char dir[512];
	char app[64], stream[64], bucket[64], table[80];
	uint64_t seed;
	int64_t duration_ms;
	unsigned rate;
	const char *compression, *ext;    /* s3.compression and its extension */
	int buffer_records;               /* s3.buffer_records */
	struct kl_rng rng;
	struct creds_chain *creds;
	struct aws_client kc;
	/* processes */
	struct slot slots[NSLOTS];
	pid_t producer[2];
	pid_t children[MAX_CHILDREN];     /* every live child, for the cleanup */
	/* schedule and measurements */
	struct event events[MAX_EVENTS];
	int n_events, next_event;
	struct tracker trackers[MAX_TRACKERS];
	int n_trackers;
	struct snapshot snap;
	struct cp_seen cps[MAX_SHARDS];
	int n_cps;
	int64_t t_start;                  /* mono ms when the chaos started */
	int roll_left, roll_slot;         /* rolling SIGTERM restart in progress */
	/* figures */
	int n_kill, n_term, n_pause, n_split, n_merge, n_fault, n_restart;
	int n_restart_fresh, n_restart_newid, n_skipped, status_polls, status_failures, n_term_kill;
	int n_rekill, n_gave_up, n_cp_backwards, n_mid_upload;
	int n_pause_checked, n_pause_unverified;
	bool aborted;                     /* the environment broke: stop, report */
	int64_t max_unowned_kill, max_unowned_pause, max_handover, sum_handover;
	int64_t max_unowned_kill_clean;   /* kills without a DynamoDB fault meanwhile */
	int64_t max_unowned_pause_clean;
	int64_t ddb_fault_until;          /* mono ms: the last DynamoDB fault period ends */
	int n_handover;
	int64_t drain_ms;
	uint64_t records, malformed, bots;
	/* failures */
	int failures;
	char fail_text[4096];
} fx = { .producer = { -1, -1 } };

/* ------------------------------------------------------------ output */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	int64_t t = fx.t_start ? kl_mono_ms() - fx.t_start : 0;

	fprintf(stderr, "chaos [%4" PRId64 ".%01" PRId64 "s] ", t / 1000, (t % 1000) / 100);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A finding that fails the run (the run goes on, so the lake is judged). */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	char line[512];
	size_t used = strlen(fx.fail_text);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	say("FAILURE: %s", line);
	fx.failures++;
	if (used + strlen(line) + 8 < sizeof(fx.fail_text))
		snprintf(fx.fail_text + used, sizeof(fx.fail_text) - used, "  - %s\n", line);
}

/* ------------------------------------------------------------ processes */

static void child_add(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (fx.children[i] <= 0) {
			fx.children[i] = pid;
			return;
		}
}

static void child_forget(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (fx.children[i] == pid)
			fx.children[i] = 0;
}

/* Kills every child's process group (a stopped one too) and reaps it.
 * Async-signal-safe apart from nothing: kill and waitpid only. */
static void kill_all(void)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (fx.children[i] > 0) {
			kill(-fx.children[i], SIGKILL);
			kill(fx.children[i], SIGKILL);
			kill(-fx.children[i], SIGCONT);
			waitpid(fx.children[i], NULL, 0);
			fx.children[i] = 0;
		}
}

static void on_fatal_signal(int sig)
{
	static const char msg[] = "chaos: interrupted or out of time, killing everything\n";

	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing to do */
	}
	kill_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Starts argv (tests/proc.c) in its own process group, dying with us,
 * default signals, stdin from /dev/null. stdout goes to out_fd (-1:
 * /dev/null), stderr to err_path (NULL: /dev/null, appended). Returns the
 * pid (registered for the cleanup).
 */
static pid_t spawn(char *const argv[], int out_fd, const char *err_path)
{
	struct tp_child c = {
		.flags = TP_OWN_GROUP | TP_DIE_WITH_PARENT | TP_DEFAULT_SIGNALS | TP_STDIN_NULL,
		.out_fd = out_fd,
		.out_path = out_fd >= 0 ? NULL : "/dev/null",
		.err_path = err_path ? err_path : "/dev/null",
	};
	pid_t pid = tp_spawn(argv, &c);

	if (pid < 0) {
		say("fork: %s", strerror(errno));
		return -1;
	}
	child_add(pid);
	return pid;
}

/* Waits up to ms for pid; returns its exit status, 128+sig when killed by
 * a signal, -2 on timeout (pid then still runs). */
static int wait_pid(pid_t pid, int64_t ms)
{
	int64_t end = kl_mono_ms() + ms;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			child_forget(pid);
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		if (r < 0 && errno != EINTR) {
			child_forget(pid);
			return -1;
		}
		if (kl_mono_ms() >= end)
			return -2;
		kl_sleep_ms(20);
	}
}

static int kill_and_reap(pid_t pid)
{
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	return wait_pid(pid, 10000);
}

/*
 * Runs the kinlake binary with args (NULL-terminated), stdout into out
 * (NUL-terminated, truncated to size), stderr appended to err_path (or
 * dropped). Killed after timeout_ms. Returns the exit status, -2 on
 * timeout.
 */
static int run_kinlake(const char *const *args, char *out, size_t size, const char *err_path,
		       int64_t timeout_ms)
{
	char *argv[24];
	int p[2], argc = 0, rc;
	size_t used = 0;
	int64_t end = kl_mono_ms() + timeout_ms;
	pid_t pid;

	argv[argc++] = fx.bin;
	for (; *args && argc < 23; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	pid = spawn(argv, p[1], err_path);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return -1;
	}
	for (;;) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		int64_t left = end - kl_mono_ms();
		ssize_t n;
		char sink[4096];

		if (left <= 0) {
			close(p[0]);
			kill_and_reap(pid);
			if (out && size)
				out[used] = '\0';
			return -2;
		}
		if (poll(&pfd, 1, (int)(left > 1000 ? 1000 : left)) <= 0)
			continue;
		if (out && used + 1 < size)
			n = read(p[0], out + used, size - 1 - used);
		else
			n = read(p[0], sink, sizeof(sink));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (out && used + 1 < size)
			used += (size_t)n;
	}
	close(p[0]);
	if (out && size)
		out[used] = '\0';
	rc = wait_pid(pid, end - kl_mono_ms() > 0 ? end - kl_mono_ms() : 1);
	if (rc == -2) {
		kill_and_reap(pid);
		return -2;
	}
	return rc;
}

/* ------------------------------------------------------------ files */

/* Prints the last lines of path to stderr. */
static void print_tail(const char *path, int lines)
{
	FILE *f = fopen(path, "r");
	char *buf, *p;
	long size, from;
	size_t n;
	int seen = 0;

	if (!f) {
		fprintf(stderr, "    (no %s)\n", path);
		return;
	}
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	from = size > 64 * 1024 ? size - 64 * 1024 : 0;
	fseek(f, from, SEEK_SET);
	buf = calloc(1, 64 * 1024 + 1);
	n = buf ? fread(buf, 1, 64 * 1024, f) : 0;
	fclose(f);
	if (!buf)
		return;
	buf[n] = '\0';
	for (p = buf + n; p > buf; p--)
		if (p[-1] == '\n' && p != buf + n && ++seen > lines)
			break;
	fprintf(stderr, "---- %s (last %d lines) ----\n%s", path, lines, p);
	if (n && buf[n - 1] != '\n')
		fputc('\n', stderr);
	free(buf);
}

/* ------------------------------------------------------------ configs */

static void monitor_conf(char *out, size_t size)
{
	snprintf(out, size, "%s/monitor.conf", fx.dir);
}

static void log_path(int slot, int incarnation, char *out, size_t size)
{
	snprintf(out, size, "%s/w%d-%d.log", fx.dir, slot, incarnation);
}

/* Writes a config (0600); endpoints NULL = the emulators themselves (monitor). */
static bool write_conf(const char *path, const char *worker_id, const char *state_dir,
		       const char *log, const char *const endpoints[NSVC])
{
	char log_line[700] = "";

	if (log)
		snprintf(log_line, sizeof(log_line), "log = { level = \"info\"; file = \"%s\"; };\n",
			 log);
	return tp_write_file(path,
		"application = \"%s\";\n"
		"worker_id = \"%s\";\n"
		"stream = \"%s\";\n"
		"region = \"us-east-1\";\n"
		"state_dir = \"%s\";\n"
		"shutdown_grace_ms = %d;\n"
		"lease = { failover_ms = %d; take_interval_ms = %d; shard_sync_interval_ms = 5000; };\n"
		"consumer = { threads = 32; idle_ms = 200; get_records_limit = 2000; };\n"
		"plugin = { name = \"clickstream\"; search_path = \"%s/plugins/clickstream/.libs\";\n"
		"  settings = { timestamp_field = \"ts\";\n"
		"    required_fields = [ \"event_id\", \"session_id\", \"user_id\", \"action\", \"ts\" ]; }; };\n"
		"s3 = { bucket = \"%s\";\n"
		"  prefix = \"data/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/\";\n"
		"  error_prefix = \"errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/\";\n"
		"  compression = \"%s\"; buffer_seconds = 2; buffer_records = %d; };\n"
		"aggregates = { table = \"%s\"; window_seconds = %d; allowed_lateness_seconds = 5;\n"
		"  time_field = \"ts\"; dimensions = \"page, action\";\n"
		"  measures = \"count, sum:price, distinct:session_id\";\n"
		"  buckets = 2; flush_seconds = 2; };\n"
		"credentials = { access_key_id = \"%s\"; secret_access_key = \"%s\"; disable_imds = true; };\n"
		"endpoints = { kinesis = \"%s\"; dynamodb = \"%s\"; s3 = \"%s\"; };\n"
		"http = { connect_timeout_ms = 1000; timeout_ms = 5000; };\n"
		"retry = { max_attempts = 4; max_delay_ms = 1000; };\n"
		"status = { lag_warn_ms = 120000; lag_crit_ms = 240000; unowned_crit_ms = 15000;\n"
		"           intent_stuck_ms = 120000; };\n"
		"%s",
		fx.app, worker_id, fx.stream, state_dir, GRACE_MS, FAILOVER_MS, TAKE_MS, KL_TEST_BUILDDIR,
		fx.bucket, fx.compression, fx.buffer_records, fx.table, AGG_WINDOW_S, fx.key_id, fx.secret,
		endpoints ? endpoints[0] : fx.kinesis,
		endpoints ? endpoints[1] : fx.dynamodb, endpoints ? endpoints[2] : fx.s3, log_line) == 0;
}

/* ------------------------------------------------------------ workers */

static int n_running(void)
{
	int n = 0;

	for (int i = 0; i < NSLOTS; i++)
		n += fx.slots[i].state == SLOT_RUNNING;
	return n;
}

static bool start_worker(int i)
{
	struct slot *sl = &fx.slots[i];
	char conf[600], state[600], log[600];
	const char *ep[NSVC];
	char *argv[] = { fx.bin, "run", "-c", conf, NULL };

	for (int s = 0; s < NSVC; s++)
		ep[s] = faultctl_url(sl->proxy[s]);
	sl->incarnation++;
	snprintf(conf, sizeof(conf), "%s/w%d.conf", fx.dir, i);
	snprintf(state, sizeof(state), "%s/%s-state-%d", fx.dir, sl->worker_id, sl->state_gen);
	log_path(i, sl->incarnation, log, sizeof(log));
	if (mkdir(state, 0700) != 0 && errno != EEXIST) {
		fail("mkdir %s: %s", state, strerror(errno));
		return false;
	}
	if (!write_conf(conf, sl->worker_id, state, log, ep)) {
		fail("cannot write %s", conf);
		return false;
	}
	sl->pid = spawn(argv, -1, log);
	if (sl->pid < 0)
		return false;
	sl->state = SLOT_RUNNING;
	sl->restart_at = 0;
	sl->cont_at = 0;
	sl->kill_at = 0;
	sl->hold_restart = false;
	sl->pending = EV_KIND_COUNT;
	say("started w%d as '%s' (pid %ld, state %s-state-%d, log w%d-%d.log)", i, sl->worker_id,
	    (long)sl->pid, sl->worker_id, sl->state_gen, i, sl->incarnation);
	return true;
}

/* Reaps workers that exited; one that exited without being asked to is a
 * finding (a crash), and is brought back. */
static void reap_workers(void)
{
	for (int i = 0; i < NSLOTS; i++) {
		struct slot *sl = &fx.slots[i];
		int rc;

		if (sl->pid <= 0)
			continue;
		rc = wait_pid(sl->pid, 0);
		if (rc == -2)
			continue;
		if (sl->state == SLOT_TERMINATING) {
			if (rc != 0)
				fail("w%d ('%s') exited with status %d after SIGTERM", i, sl->worker_id, rc);
			else
				say("w%d exited 0 after SIGTERM", i);
		} else {
			fail("w%d ('%s', pid %ld) exited on its own with status %d", i, sl->worker_id,
			     (long)sl->pid, rc);
			sl->restart_at = kl_mono_ms() + 1000;
		}
		sl->pid = -1;
		sl->state = SLOT_DOWN;
	}
}

/* ------------------------------------------------------------ status */

static int dec_cmp(const char *a, const char *b);
static void checkpoints_update(void);

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return NULL;
	return json_object_get_string(v);
}

static int64_t jint(json_object *o, const char *key, int64_t dflt)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return dflt;
	return json_object_get_int64(v);
}

/* One `kinlake status --json` through the monitor config into fx.snap. */
static void poll_status(void)
{
	static char out[1 << 20];
	char conf[600];
	const char *args[] = { "status", "-c", conf, "--json", NULL };
	json_object *doc, *shards;
	struct snapshot *sn = &fx.snap;

	monitor_conf(conf, sizeof(conf));
	fx.status_polls++;
	sn->valid = false;
	sn->rc = run_kinlake(args, out, sizeof(out), NULL, 15000);
	doc = json_tokener_parse(out);
	if (!doc || !json_object_object_get_ex(doc, "shards", &shards)) {
		fx.status_failures++;
		json_object_put(doc);
		return;
	}
	snprintf(sn->summary, sizeof(sn->summary), "%s", jstr(doc, "summary") ? jstr(doc, "summary") : "");
	sn->n = 0;
	for (size_t i = 0; i < json_object_array_length(shards) && sn->n < MAX_SHARDS; i++) {
		json_object *s = json_object_array_get_idx(shards, i);
		struct shard_view *v = &sn->s[sn->n++];

		memset(v, 0, sizeof(*v));
		snprintf(v->id, sizeof(v->id), "%s", jstr(s, "shard") ? jstr(s, "shard") : "");
		snprintf(v->state, sizeof(v->state), "%s", jstr(s, "state") ? jstr(s, "state") : "");
		snprintf(v->owner, sizeof(v->owner), "%s", jstr(s, "owner") ? jstr(s, "owner") : "");
		snprintf(v->checkpoint, sizeof(v->checkpoint), "%s",
			 jstr(s, "checkpoint") ? jstr(s, "checkpoint") : "");
		v->cp_sub = (uint64_t)jint(s, "checkpoint_sub", 0);
		v->pending = jstr(s, "pending") != NULL;
		v->heartbeat = jint(s, "heartbeat_ms", 0);
	}
	sn->valid = true;
	json_object_put(doc);
	checkpoints_update();
}

static const struct shard_view *snap_shard(const char *id)
{
	for (int i = 0; i < fx.snap.n; i++)
		if (strcmp(fx.snap.s[i].id, id) == 0)
			return &fx.snap.s[i];
	return NULL;
}

static bool state_held(const char *state)
{
	return strcmp(state, "active") == 0 || strcmp(state, "pending-intent") == 0 ||
	       strcmp(state, "waiting-on-parents") == 0;
}

static int cp_rank(const char *cp)
{
	if (strcmp(cp, "SHARD_END") == 0)
		return 2;
	return cp[0] >= '0' && cp[0] <= '9' ? 1 : 0;
}

/* Every shard's checkpoint against the highest seen before: going back
 * means an owner wrote one after its lease was taken (or a finished
 * shard's lease came back), either of which breaks exactly-once. */
static void checkpoints_update(void)
{
	if (!fx.snap.valid)
		return;
	for (int i = 0; i < fx.snap.n; i++) {
		const struct shard_view *v = &fx.snap.s[i];
		struct cp_seen *c = NULL;
		int rank = cp_rank(v->checkpoint), cmp;

		for (int k = 0; k < fx.n_cps && !c; k++)
			if (strcmp(fx.cps[k].id, v->id) == 0)
				c = &fx.cps[k];
		if (!c) {
			if (fx.n_cps >= MAX_SHARDS)
				continue;
			c = &fx.cps[fx.n_cps++];
			snprintf(c->id, sizeof(c->id), "%s", v->id);
			c->rank = -1;
		}
		cmp = rank != c->rank ? (rank < c->rank ? -1 : 1)
		      : rank != 1     ? 0
				      : dec_cmp(v->checkpoint, c->seq);
		if (cmp == 0 && rank == 1)
			cmp = v->cp_sub < c->sub ? -1 : v->cp_sub > c->sub;
		if (cmp < 0) {
			fx.n_cp_backwards++;
			fail("the checkpoint of %s went back from %s/%" PRIu64 " to %s/%" PRIu64
			     " (owner '%s')", v->id, c->rank == 2 ? "SHARD_END" : c->seq, c->sub,
			     v->checkpoint, v->cp_sub, v->owner);
		} else if (cmp > 0) {
			c->rank = rank;
			snprintf(c->seq, sizeof(c->seq), "%s", v->checkpoint);
			c->sub = v->cp_sub;
		}
	}
}

/* ------------------------------------------------------------ trackers */

static void track(enum track_kind kind, int slot)
{
	struct tracker *t;

	if (fx.n_trackers >= MAX_TRACKERS)
		return;
	t = &fx.trackers[fx.n_trackers++];
	memset(t, 0, sizeof(*t));
	t->kind = kind;
	t->slot = slot;
	memcpy(t->victim, fx.slots[slot].worker_id, sizeof(t->victim));
	t->t0 = kl_mono_ms();
	t->wall0 = kl_wall_ms();
	t->ddb_fault = fx.ddb_fault_until > t->t0;
	if (!fx.snap.valid)
		poll_status();
	for (int i = 0; i < fx.snap.n && t->n < 32; i++)
		if (strcmp(fx.snap.s[i].owner, t->victim) == 0 && state_held(fx.snap.s[i].state))
			snprintf(t->shards[t->n++], sizeof(t->shards[0]), "%s", fx.snap.s[i].id);
	if (t->n == 0)
		t->finished = true;
}

/* Has shard v been taken back after the tracker's disruption? */
static bool tracker_shard_done(const struct tracker *t, const struct shard_view *v)
{
	if (!v || strcmp(v->state, "finished") == 0)
		return true;             /* gone (garbage-collected) or finished */
	if (!state_held(v->state))
		return false;
	if (t->kind == TRACK_TERM)   /* handed over: held by someone else */
		return strcmp(v->owner, t->victim) != 0;
	/* A renewal (or a take) after the kill or pause: only a live process
	 * can have written that heartbeat (one clock: one host). */
	return v->heartbeat > t->wall0 + 50;
}

static void trackers_update(void)
{
	int64_t now = kl_mono_ms();

	if (!fx.snap.valid)
		return;
	for (int k = 0; k < fx.n_trackers; k++) {
		struct tracker *t = &fx.trackers[k];
		bool all = true;

		/* A paused worker's shard seen held by another: the paused
		 * one must give it up once resumed (even if the taker has
		 * released it again meanwhile). */
		for (int i = 0; i < t->n && t->kind == TRACK_PAUSE && !t->resumed; i++) {
			const struct shard_view *v = snap_shard(t->shards[i]);

			t->taken[i] |= v && state_held(v->state) && v->owner[0] &&
				       strcmp(v->owner, t->victim) != 0;
		}
		if (t->finished)
			continue;
		for (int i = 0; i < t->n; i++) {
			if (!t->done[i] && tracker_shard_done(t, snap_shard(t->shards[i]))) {
				t->done[i] = true;
				if (now - t->t0 > t->worst)
					t->worst = now - t->t0;
			}
			all &= t->done[i];
		}
		if (!all && now - t->t0 > UNOWNED_NOTE_MS) {
			say("note: %s of '%s': shard(s) still not held by a live worker after %d s "
			    "(the drain decides whether that is a failure)",
			    t->kind == TRACK_KILL ? "kill" : t->kind == TRACK_PAUSE ? "pause" : "SIGTERM",
			    t->victim, UNOWNED_NOTE_MS / 1000);
			fx.n_gave_up++;
			t->worst = now - t->t0;
			all = true;
		}
		if (!all)
			continue;
		t->finished = true;
		switch (t->kind) {
		case TRACK_KILL:
			if (t->worst > fx.max_unowned_kill)
				fx.max_unowned_kill = t->worst;
			if (!t->ddb_fault && t->worst > fx.max_unowned_kill_clean)
				fx.max_unowned_kill_clean = t->worst;
			say("kill of '%s': its %d shard(s) held again after %" PRId64 " ms%s", t->victim,
			    t->n, t->worst, t->ddb_fault ? " (DynamoDB faults meanwhile)" : "");
			break;
		case TRACK_PAUSE:
			if (t->worst > fx.max_unowned_pause)
				fx.max_unowned_pause = t->worst;
			if (!t->ddb_fault && t->worst > fx.max_unowned_pause_clean)
				fx.max_unowned_pause_clean = t->worst;
			say("pause of '%s': its %d shard(s) held again after %" PRId64 " ms", t->victim,
			    t->n, t->worst);
			break;
		case TRACK_TERM:
			if (t->worst > fx.max_handover)
				fx.max_handover = t->worst;
			fx.sum_handover += t->worst;
			fx.n_handover++;
			say("SIGTERM of '%s': its %d shard(s) handed over after %" PRId64 " ms", t->victim,
			    t->n, t->worst);
			break;
		}
	}
}

/* The last SIGTERM tracker of slot i, if still measuring. */
static bool term_measuring(int i)
{
	for (int k = fx.n_trackers - 1; k >= 0; k--)
		if (fx.trackers[k].kind == TRACK_TERM && fx.trackers[k].slot == i)
			return !fx.trackers[k].finished;
	return false;
}

/* The last tracker of kind for slot i, or NULL. */
static struct tracker *last_tracker(enum track_kind kind, int i)
{
	for (int k = fx.n_trackers - 1; k >= 0; k--)
		if (fx.trackers[k].kind == kind && fx.trackers[k].slot == i)
			return &fx.trackers[k];
	return NULL;
}

/* Slot i's process is about to be killed or stopped: a resumed pause of
 * that process may not have had the time to notice and log its losses
 * (a SIGTERM soon after may stop a taken shard as a clean stop). */
static void note_slot_ending(int i)
{
	for (int k = 0; k < fx.n_trackers; k++) {
		struct tracker *t = &fx.trackers[k];

		if (t->kind == TRACK_PAUSE && t->slot == i && t->resumed && !t->ended_mono &&
		    t->incarnation == fx.slots[i].incarnation)
			t->ended_mono = kl_mono_ms();
	}
}

/* SIGCONT of slot i: which of the shards it held when paused has another
 * worker held meanwhile? Those it must give up without checkpointing. */
static void pause_resumed(int i)
{
	struct tracker *t = last_tracker(TRACK_PAUSE, i);

	if (!t || t->resumed)
		return;
	t->resumed = true;
	t->incarnation = fx.slots[i].incarnation;
	t->cont_mono = kl_mono_ms();
	poll_status();               /* fresh: the process was frozen all along */
	for (int k = 0; k < t->n; k++) {
		const struct shard_view *v = snap_shard(t->shards[k]);

		t->taken[k] |= v && state_held(v->state) && v->owner[0] &&
			       strcmp(v->owner, t->victim) != 0;
	}
}

/* "2026-01-02T03:04:05.678Z", the worker log's time stamp, of wall ms. */
static void iso_ms(int64_t ms, char *out, size_t size)
{
	time_t sec = (time_t)(ms / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, size, "%s.%03dZ", base, (int)(ms % 1000));
}

/*
 * After the run: a worker resumed from SIGSTOP must have stopped every
 * shard another worker took meanwhile ("stopped: lease lost", or given up
 * in its shutdown), in the log of that process, from a moment before the
 * pause on. That it wrote no checkpoint afterwards is checked throughout
 * (checkpoints_update) and by the lake itself (no duplicate, no overlap).
 */
static void check_pauses(void)
{
	for (int k = 0; k < fx.n_trackers; k++) {
		struct tracker *t = &fx.trackers[k];
		char path[600], from[40];
		char *text;

		if (t->kind != TRACK_PAUSE || !t->resumed)
			continue;
		log_path(t->slot, t->incarnation, path, sizeof(path));
		text = tp_read_file(path, 64 << 20, NULL);
		/* From a little before the pause: the status it was judged by
		 * may be a few seconds old on a loaded machine. */
		iso_ms(t->wall0 - 10000, from, sizeof(from));
		for (int i = 0; i < t->n; i++) {
			char lost[160], gave_up[160];
			bool seen = false;

			if (!t->taken[i])
				continue;
			snprintf(lost, sizeof(lost), "shard '%s' stopped: lease lost", t->shards[i]);
			snprintf(gave_up, sizeof(gave_up), "shard '%s' stopped without finishing",
				 t->shards[i]);
			for (char *line = text; line && *line && !seen;) {
				char *eol = strchr(line, '\n');

				if (eol)
					*eol = '\0';
				seen = strncmp(line, from, strlen(from)) >= 0 &&
				       (strstr(line, lost) || strstr(line, gave_up));
				if (eol)
					*eol = '\n';
				line = eol ? eol + 1 : NULL;
			}
			if (seen)
				fx.n_pause_checked++;
			else if (t->ended_mono && t->ended_mono - t->cont_mono < 10000)
				fx.n_pause_unverified++;   /* killed or stopped too soon */
			else
				fail("'%s' (w%d-%d.log), resumed after SIGSTOP, never stopped %s that "
				     "another worker had taken", t->victim, t->slot, t->incarnation,
				     t->shards[i]);
		}
		free(text);
	}
}

/* ------------------------------------------------------------ events */

static int64_t uniform(int64_t lo, int64_t hi)
{
	return lo + (int64_t)kl_rng_below(&fx.rng, (uint64_t)(hi - lo + 1));
}

/* A random slot in state st, or -1. */
static int pick_slot(enum slot_state st)
{
	int cand[NSLOTS], n = 0;

	for (int i = 0; i < NSLOTS; i++)
		if (fx.slots[i].state == st && fx.slots[i].pending == EV_KIND_COUNT)
			cand[n++] = i;
	return n ? cand[kl_rng_below(&fx.rng, (uint64_t)n)] : -1;
}

/* kill -9 of slot i; the restart is scheduled. rekill: maybe kill the
 * restarted process again while it recovers the shards it takes. */
static void kill_slot(int i, bool rekill)
{
	struct slot *sl = &fx.slots[i];
	uint64_t mode;

	track(TRACK_KILL, i);
	note_slot_ending(i);
	kill_and_reap(sl->pid);
	sl->pid = -1;
	sl->state = SLOT_DOWN;
	sl->restart_at = kl_mono_ms() + uniform(0, 2 * FAILOVER_MS);
	mode = kl_rng_below(&fx.rng, 100);
	if (mode >= 85) {
		/* Another host: new worker id, nothing on disk. */
		char id[32];

		snprintf(id, sizeof(id), "w%d-%d", i, sl->incarnation + 1);
		snprintf(sl->worker_id, sizeof(sl->worker_id), "%s", id);
		sl->state_gen = 0;
		fx.n_restart_newid++;
	} else if (mode >= 60) {
		sl->state_gen++;         /* the same name, a replaced disk */
		fx.n_restart_fresh++;
	}
	/* Its shards are taken after failover + a scan; a new owner then
	 * rebuilds open intents: kill that one in the middle of it. */
	sl->rekill_at = rekill && kl_rng_below(&fx.rng, 100) < 30
				? sl->restart_at + uniform(FAILOVER_MS, 2 * FAILOVER_MS + TAKE_MS)
				: 0;
	fx.n_kill++;
	say("kill -9 w%d ('%s', %d shard(s)); restart in %" PRId64 " ms as '%s' with %s state%s",
	    i, fx.trackers[fx.n_trackers - 1].victim, fx.trackers[fx.n_trackers - 1].n,
	    sl->restart_at - kl_mono_ms(), sl->worker_id,
	    mode >= 85 ? "new" : mode >= 60 ? "fresh" : "its old",
	    sl->rekill_at ? ", to be killed again while it recovers" : "");
}

/*
 * Half of the kills and pauses hit a worker in the middle of its uploads:
 * for a few seconds first, its S3 proxy answers nearly every request with
 * 503 SlowDown (nothing lands: the batch waits, retried) or delays it (it
 * lands late, maybe after the worker died), so the blow falls between a
 * batch's intent and its checkpoint, where a worker that writes its state
 * in the wrong order loses or repeats records.
 */
static bool defer_mid_upload(int i, enum ev_kind kind)
{
	struct slot *sl = &fx.slots[i];
	char rule[160];
	int64_t wait = uniform(800, 2500);

	if (kl_rng_below(&fx.rng, 100) >= 50)
		return false;
	if (kl_rng_below(&fx.rng, 2))
		snprintf(rule, sizeof(rule), "chaos op=S3 prob=0.90 for=%" PRId64 " action=s3-slowdown",
			 wait + 3000);
	else
		snprintf(rule, sizeof(rule), "chaos op=S3 prob=0.90 for=%" PRId64
			 " action=delay ms=%" PRId64, wait + 3000, uniform(1500, 3000));
	if (faultctl_set_rules(sl->proxy[2], rule) != KL_OK) {
		fail("setting rule '%s' on w%d's s3 proxy", rule, i);
		return false;
	}
	sl->pending = kind;
	sl->pending_at = kl_mono_ms() + wait;
	fx.n_mid_upload++;
	say("%s of w%d ('%s') in %" PRId64 " ms, mid-upload: %s", ev_names[kind], i, sl->worker_id,
	    wait, rule);
	return true;
}

static bool ev_kill(void)
{
	int i;

	if (n_running() < 2 || (i = pick_slot(SLOT_RUNNING)) < 0)
		return false;
	if (!defer_mid_upload(i, EV_KILL))
		kill_slot(i, true);
	return true;
}

static bool term_one(int i)
{
	struct slot *sl = &fx.slots[i];
	/* Now and then the shutdown itself is cut short by kill -9. */
	bool cut = kl_rng_below(&fx.rng, 100) < 20;

	track(TRACK_TERM, i);
	note_slot_ending(i);
	sl->pending = EV_KIND_COUNT;
	kill(sl->pid, SIGTERM);
	sl->state = SLOT_TERMINATING;
	sl->hold_restart = true;
	sl->restart_at = kl_mono_ms() + GRACE_MS + 10000;  /* the exit deadline */
	sl->kill_at = cut ? kl_mono_ms() + uniform(0, 300) : 0;
	fx.n_term++;
	say("SIGTERM w%d ('%s', %d shard(s))%s", i, sl->worker_id,
	    fx.trackers[fx.n_trackers - 1].n, cut ? ", kill -9 during the shutdown" : "");
	return true;
}

static bool ev_term(void)
{
	int i;

	if (fx.roll_left > 0 || n_running() < 2 || (i = pick_slot(SLOT_RUNNING)) < 0)
		return false;
	fx.roll_left = 1 + (int)kl_rng_below(&fx.rng, NSLOTS);
	fx.roll_slot = i;
	say("rolling restart of %d worker(s)", fx.roll_left);
	fx.roll_left--;
	return term_one(i);
}

static void pause_slot(int i)
{
	struct slot *sl = &fx.slots[i];

	track(TRACK_PAUSE, i);
	kill(-sl->pid, SIGSTOP);
	sl->state = SLOT_STOPPED;
	sl->cont_at = kl_mono_ms() + uniform(FAILOVER_MS * 3 / 2, FAILOVER_MS * 3);
	fx.n_pause++;
	say("SIGSTOP w%d ('%s', %d shard(s)) for %" PRId64 " ms", i, sl->worker_id,
	    fx.trackers[fx.n_trackers - 1].n, sl->cont_at - kl_mono_ms());
}

static bool ev_pause(void)
{
	int i;

	if (n_running() < 2 || (i = pick_slot(SLOT_RUNNING)) < 0)
		return false;
	if (!defer_mid_upload(i, EV_PAUSE))
		pause_slot(i);
	return true;
}

/* Open shards of the stream (ListShards, straight to kinesalite). */
static int open_shards(struct kinesis_shard **ret, size_t *ret_n)
{
	struct kl_errinfo info = { 0 };
	struct kinesis_shard *all = NULL;
	size_t n = 0, k = 0;

	if (kinesis_list_shards(&fx.kc, fx.stream, NULL, &all, &n, &info) != KL_OK)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!kinesis_shard_is_closed(&all[i]))
			all[k++] = all[i];
	*ret = all;
	*ret_n = k;
	return 0;
}

static bool ev_reshard(bool split)
{
	struct kinesis_shard *open = NULL;
	size_t n = 0;
	char conf[600], out[1024], shard[KINESIS_SHARD_ID_MAX + 1], err_path[600];
	const char *args[] = { "demo", split ? "split" : "merge", "-c", conf, "--shard", shard, NULL };
	int rc;

	if (open_shards(&open, &n) != 0 || n == 0) {
		free(open);
		return false;
	}
	/* Keep the open shards within [MIN_OPEN, MAX_OPEN]. */
	if (split && n >= MAX_OPEN)
		split = false;
	else if (!split && n <= MIN_OPEN)
		split = true;
	args[1] = split ? "split" : "merge";
	snprintf(shard, sizeof(shard), "%s", open[kl_rng_below(&fx.rng, n)].shard_id);
	free(open);
	monitor_conf(conf, sizeof(conf));
	snprintf(err_path, sizeof(err_path), "%s/reshard.err", fx.dir);
	rc = run_kinlake(args, out, sizeof(out), err_path, 60000);
	for (char *p = out; *p; p++)
		if (*p == '\n')
			*p = *(p + 1) ? ';' : '\0';
	if (rc != 0) {
		fail("kinlake demo %s --shard %s: exit %d (%s)", args[1], shard, rc, out);
		return true;
	}
	if (split)
		fx.n_split++;
	else
		fx.n_merge++;
	say("%s of %s (%zu open before): %s", args[1], shard, n, out);
	return true;
}

static bool ev_fault(void)
{
	static const struct {
		int svc;
		const char *match;
		const char *action;
		int prob_pct;
		int delay_max_ms;        /* > 0: action takes ms= up to this */
	} menu[] = {
		{ 0, "op=Kinesis_20131202.GetRecords", "throttle-kinesis", 50, 0 },
		{ 0, "op=Kinesis_20131202", "kinesis-500", 30, 0 },
		{ 0, "op=Kinesis_20131202", "delay", 50, 2000 },
		{ 0, "op=Kinesis_20131202", "reset", 20, 0 },
		{ 0, "op=Kinesis_20131202.GetRecords", "after:reset", 20, 0 },
		{ 1, "op=DynamoDB_20120810", "throttle-ddb", 30, 0 },
		{ 1, "op=DynamoDB_20120810", "ddb-500", 20, 0 },
		{ 1, "op=DynamoDB_20120810", "delay", 50, 1500 },
		{ 1, "op=DynamoDB_20120810", "reset", 10, 0 },
		{ 1, "op=DynamoDB_20120810", "after:reset", 10, 0 },
		{ 1, "op=DynamoDB_20120810.UpdateItem", "after:throttle-ddb", 15, 0 },
		{ 2, "op=S3", "s3-slowdown", 50, 0 },
		{ 2, "op=S3", "s3-500", 30, 0 },
		{ 2, "op=S3", "delay", 50, 3000 },
		{ 2, "op=S3", "reset", 20, 0 },
		{ 2, "op=S3", "after:reset", 30, 0 },
		{ 2, "op=S3", "after:s3-slowdown", 30, 0 },
	};
	size_t m = kl_rng_below(&fx.rng, KL_ARRAY_LEN(menu));
	bool everyone = kl_rng_below(&fx.rng, 100) < 30;
	int one = (int)kl_rng_below(&fx.rng, NSLOTS);
	int64_t period = uniform(3000, 15000);
	char rule[256], extra[32] = "";

	if (menu[m].delay_max_ms)
		snprintf(extra, sizeof(extra), " ms=%" PRId64, uniform(100, menu[m].delay_max_ms));
	snprintf(rule, sizeof(rule), "chaos %s prob=%d.%02d for=%" PRId64 " action=%s%s", menu[m].match,
		 menu[m].prob_pct / 100, menu[m].prob_pct % 100, period, menu[m].action, extra);
	if (menu[m].svc == 1) {
		int64_t until = kl_mono_ms() + period;

		if (until > fx.ddb_fault_until)
			fx.ddb_fault_until = until;
		for (int k = 0; k < fx.n_trackers; k++)
			fx.trackers[k].ddb_fault |= !fx.trackers[k].finished;
	}
	for (int i = 0; i < NSLOTS; i++) {
		enum kl_err err;

		if (!everyone && i != one)
			continue;
		err = faultctl_set_rules(fx.slots[i].proxy[menu[m].svc], rule);
		if (err != KL_OK)
			fail("setting rule '%s' on w%d's %s proxy: %s", rule, i, svc_names[menu[m].svc],
			     kl_strerror(err));
	}
	fx.n_fault++;
	if (everyone)
		say("fault on every %s proxy: %s", svc_names[menu[m].svc], rule);
	else
		say("fault on w%d's %s proxy: %s", one, svc_names[menu[m].svc], rule);
	return true;
}

static bool run_event(enum ev_kind kind)
{
	switch (kind) {
	case EV_KILL:
		return ev_kill();
	case EV_TERM:
		return ev_term();
	case EV_PAUSE:
		return ev_pause();
	case EV_SPLIT:
		return ev_reshard(true);
	case EV_MERGE:
		return ev_reshard(false);
	case EV_FAULT:
		return ev_fault();
	case EV_KIND_COUNT:
		break;
	}
	return false;
}

static int event_cmp(const void *a, const void *b)
{
	const struct event *x = a, *y = b;

	return x->at < y->at ? -1 : x->at > y->at;
}

/* The schedule: each kind a number of times that grows with the duration
 * (at least once), at uniform random moments of the chaos window. */
static void make_schedule(void)
{
	int64_t d = fx.duration_ms, from = d / 8 < 10000 ? d / 8 : 10000, to = d - 4000;
	int counts[EV_KIND_COUNT] = {
		[EV_KILL] = (int)(d / 50000), [EV_TERM] = (int)(d / 90000),
		[EV_PAUSE] = (int)(d / 70000), [EV_SPLIT] = (int)(d / 100000),
		[EV_MERGE] = (int)(d / 100000), [EV_FAULT] = (int)(d / 10000),
	};

	if (counts[EV_KILL] < 2)
		counts[EV_KILL] = 2;
	for (int k = 0; k < EV_KIND_COUNT; k++)
		for (int i = 0; i < (counts[k] ? counts[k] : 1) && fx.n_events < MAX_EVENTS; i++) {
			fx.events[fx.n_events].kind = (enum ev_kind)k;
			fx.events[fx.n_events].at = uniform(from, to > from ? to : from);
			fx.n_events++;
		}
	qsort(fx.events, (size_t)fx.n_events, sizeof(fx.events[0]), event_cmp);
	fprintf(stderr, "chaos: schedule (%d events):", fx.n_events);
	for (int i = 0; i < fx.n_events; i++)
		fprintf(stderr, "%s %s@%" PRId64 ".%01" PRId64 "s", i % 8 ? "" : "\n  ",
			ev_names[fx.events[i].kind], fx.events[i].at / 1000,
			(fx.events[i].at % 1000) / 100);
	fputc('\n', stderr);
}

/* Due restarts, SIGCONTs, the next step of a rolling restart. */
static void slot_actions(bool chaos_over)
{
	int64_t now = kl_mono_ms();

	for (int i = 0; i < NSLOTS; i++) {
		struct slot *sl = &fx.slots[i];

		if (sl->state == SLOT_STOPPED && (chaos_over || now >= sl->cont_at)) {
			kill(-sl->pid, SIGCONT);
			sl->state = SLOT_RUNNING;
			say("SIGCONT w%d ('%s')", i, sl->worker_id);
			pause_resumed(i);
		}
		if (sl->state == SLOT_RUNNING && sl->pending != EV_KIND_COUNT && now >= sl->pending_at) {
			enum ev_kind kind = sl->pending;

			sl->pending = EV_KIND_COUNT;
			if (!chaos_over && n_running() >= 2 && kind == EV_KILL)
				kill_slot(i, true);
			else if (!chaos_over && n_running() >= 2 && kind == EV_PAUSE)
				pause_slot(i);
			else
				fx.n_skipped++;
		}
		if (sl->state == SLOT_RUNNING && sl->rekill_at && now >= sl->rekill_at) {
			sl->rekill_at = 0;
			if (!chaos_over && n_running() >= 2) {
				fx.n_rekill++;
				kill_slot(i, false);
			}
		}
		if (sl->state == SLOT_TERMINATING && sl->kill_at && now >= sl->kill_at) {
			struct tracker *t = last_tracker(TRACK_TERM, i);

			/* Not a handover any more: measured as a kill. */
			if (t && !t->finished)
				t->kind = TRACK_KILL;
			note_slot_ending(i);
			kill_and_reap(sl->pid);
			say("kill -9 w%d ('%s') during its shutdown", i, sl->worker_id);
			sl->pid = -1;
			sl->state = SLOT_DOWN;
			sl->kill_at = 0;
			fx.n_term_kill++;
		}
		if (sl->state == SLOT_TERMINATING && now >= sl->restart_at) {
			fail("w%d ('%s') still running %d ms after SIGTERM; killing it", i,
			     sl->worker_id, GRACE_MS + 10000);
			note_slot_ending(i);
			kill_and_reap(sl->pid);
			sl->pid = -1;
			sl->state = SLOT_DOWN;
			sl->restart_at = now;
		}
		if (sl->state == SLOT_DOWN && sl->hold_restart) {
			/* After SIGTERM: restart once the handover was seen (or
			 * given up on), so the measure is not the restart. */
			if (term_measuring(i))
				continue;
			sl->hold_restart = false;
			sl->restart_at = now + 500;
		}
		if (sl->state == SLOT_DOWN && (chaos_over || (sl->restart_at && now >= sl->restart_at))) {
			if (start_worker(i)) {
				fx.n_restart++;
				if (fx.roll_slot == i && fx.roll_left > 0 && !chaos_over) {
					/* The next worker of the rolling restart, a few
					 * seconds after this one is back. */
					int next = (i + 1) % NSLOTS;

					fx.roll_slot = next;
					fx.roll_left--;
					if (fx.slots[next].state == SLOT_RUNNING && n_running() >= 2)
						term_one(next);
					else
						fx.roll_left = 0;
				}
			}
		}
	}
}

/* ------------------------------------------------------------ manifests */

/* Decimal strings without sign: -1, 0, 1. */
static int dec_cmp(const char *a, const char *b)
{
	size_t la, lb;

	while (*a == '0' && a[1])
		a++;
	while (*b == '0' && b[1])
		b++;
	la = strlen(a);
	lb = strlen(b);
	if (la != lb)
		return la < lb ? -1 : 1;
	return strcmp(a, b) < 0 ? -1 : strcmp(a, b) > 0;
}

/* Reads both manifests: the count of records and, per shard, the last
 * one written. Returns the number of shards in *ret. */
static int read_manifests(struct expect *ex, int max)
{
	int n = 0;

	fx.records = fx.malformed = fx.bots = 0;
	for (int k = 0; k < 2; k++) {
		char path[600], line[1024];
		FILE *f;

		snprintf(path, sizeof(path), "%s/manifest-%d.tsv", fx.dir, k);
		f = fopen(path, "r");
		if (!f) {
			fail("no manifest %s", path);
			continue;
		}
		while (fgets(line, sizeof(line), f)) {
			char *field[8] = { 0 }, *save = NULL, *p = line;
			int nf = 0, j;

			line[strcspn(line, "\n")] = '\0';
			for (char *t = strtok_r(p, "\t", &save); t && nf < 8; t = strtok_r(NULL, "\t", &save))
				field[nf++] = t;
			if (nf < 7)
				continue;
			fx.records++;
			if (strcmp(field[3], "bot") == 0)
				fx.bots++;
			else if (strcmp(field[3], "ok") != 0)
				fx.malformed++;
			for (j = 0; j < n && strcmp(ex[j].shard, field[4]) != 0; j++)
				;
			if (j == n) {
				if (n == max)
					continue;
				memset(&ex[n], 0, sizeof(ex[n]));
				snprintf(ex[n].shard, sizeof(ex[n].shard), "%s", field[4]);
				snprintf(ex[n].seq, sizeof(ex[n].seq), "0");
				n++;
			}
			{
				int c = dec_cmp(field[5], ex[j].seq);
				uint64_t sub = strtoull(field[6], NULL, 10);

				if (c > 0 || (c == 0 && sub > ex[j].sub)) {
					snprintf(ex[j].seq, sizeof(ex[j].seq), "%s", field[5]);
					ex[j].sub = sub;
				}
			}
		}
		fclose(f);
	}
	return n;
}

/* ------------------------------------------------------------ producers */

static bool start_producers(void)
{
	for (int k = 0; k < 2; k++) {
		char conf[600], rate[16], seed[32], manifest[600], out[600], err[600];
		char *argv[] = { fx.bin, "demo", "produce", "-c", conf, "--rate", rate,
				 "--seed", seed, "--manifest", manifest, "--malformed-pct", "2",
				 "--bot-pct", "3", "--sessions", "300", k ? "--kpl" : NULL,
				 "--kpl-per-record", "8", NULL };
		int fd;

		monitor_conf(conf, sizeof(conf));
		snprintf(rate, sizeof(rate), "%u", fx.rate);
		/* Distinct seeds: distinct ids and session keys. */
		snprintf(seed, sizeof(seed), "%" PRIu64, (fx.seed % 1000000) * 10 + 1 + (uint64_t)k);
		snprintf(manifest, sizeof(manifest), "%s/manifest-%d.tsv", fx.dir, k);
		snprintf(out, sizeof(out), "%s/producer-%d.out", fx.dir, k);
		snprintf(err, sizeof(err), "%s/producer-%d.err", fx.dir, k);
		fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return false;
		fx.producer[k] = spawn(argv, fd, err);
		close(fd);
		if (fx.producer[k] < 0)
			return false;
		say("producer %d (%s, seed %s, %u events/s) pid %ld", k, k ? "KPL" : "plain", seed,
		    fx.rate, (long)fx.producer[k]);
	}
	return true;
}

static void stop_producers(void)
{
	for (int k = 0; k < 2; k++)
		if (fx.producer[k] > 0)
			kill(fx.producer[k], SIGINT);
	for (int k = 0; k < 2; k++) {
		char path[600];
		char *text;
		int rc;

		if (fx.producer[k] <= 0)
			continue;
		rc = wait_pid(fx.producer[k], 60000);
		if (rc == -2) {
			fail("producer %d did not stop within 60 s", k);
			kill_and_reap(fx.producer[k]);
		}
		fx.producer[k] = -1;
		snprintf(path, sizeof(path), "%s/producer-%d.out", fx.dir, k);
		text = tp_read_file(path, 4096, NULL);
		if (rc != 0 || !text || !strstr(text, "complete=yes"))
			fail("producer %d: exit %d, %s", k, rc, text ? text : "(no summary)");
		else
			say("producer %d: %.*s", k, (int)strcspn(text, "\n"), text);
		free(text);
	}
}

static void check_producers_alive(void)
{
	for (int k = 0; k < 2; k++) {
		int rc;

		if (fx.producer[k] <= 0)
			continue;
		rc = wait_pid(fx.producer[k], 0);
		if (rc != -2) {
			fail("producer %d exited early with status %d", k, rc);
			fx.producer[k] = -1;
		}
	}
}

/* ------------------------------------------------------------ drain */

/* True when every shard with records is checkpointed at its last one
 * (or finished), nothing is pending and status is 0. */
static bool drained(const struct expect *ex, int n_ex, char *why, size_t size)
{
	if (!fx.snap.valid) {
		snprintf(why, size, "no status");
		return false;
	}
	if (fx.snap.rc != 0) {
		snprintf(why, size, "status %d: %s", fx.snap.rc, fx.snap.summary);
		return false;
	}
	for (int i = 0; i < fx.snap.n; i++) {
		const struct shard_view *v = &fx.snap.s[i];

		if (v->pending) {
			snprintf(why, size, "%s has an intent", v->id);
			return false;
		}
	}
	for (int j = 0; j < n_ex; j++) {
		const struct shard_view *v = snap_shard(ex[j].shard);
		int c;

		if (!v)
			continue;            /* garbage-collected: finished before */
		if (strcmp(v->checkpoint, "SHARD_END") == 0)
			continue;
		if (v->checkpoint[0] < '0' || v->checkpoint[0] > '9') {
			snprintf(why, size, "%s at %s", v->id, v->checkpoint);
			return false;
		}
		c = dec_cmp(v->checkpoint, ex[j].seq);
		if (c < 0 || (c == 0 && v->cp_sub < ex[j].sub)) {
			snprintf(why, size, "%s at %.12s..%s/%" PRIu64 ", last record ..%s/%" PRIu64,
				 v->id, v->checkpoint, v->checkpoint + (strlen(v->checkpoint) > 8 ? strlen(v->checkpoint) - 8 : 0),
				 v->cp_sub, ex[j].seq + (strlen(ex[j].seq) > 8 ? strlen(ex[j].seq) - 8 : 0),
				 ex[j].sub);
			return false;
		}
	}
	return true;
}

/* Does something accept connections at url ("http://127.0.0.1:PORT")? */
static bool endpoint_up(const char *url)
{
	const char *colon = strrchr(url, ':');
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd, rc;

	if (!colon)
		return false;
	a.sin_port = htons((uint16_t)atoi(colon + 1));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true;             /* cannot tell */
	rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
	close(fd);
	return rc == 0;
}

/* The emulators are not ours to restart: if one died (killed from
 * outside), say so instead of waiting for a drain that cannot happen. */
static bool emulators_up(void)
{
	const char *urls[NSVC] = { fx.kinesis, fx.dynamodb, fx.s3 };

	for (int s = 0; s < NSVC; s++)
		if (!endpoint_up(urls[s])) {
			fail("the %s emulator (%s) does not accept connections any more: killed from "
			     "outside? This run proves nothing", svc_names[s], urls[s]);
			return false;
		}
	return true;
}

/* The run's ground: the emulators and the work directory (both can be
 * taken away by something outside this test). False (and a failure
 * recorded) when the run cannot mean anything any more. */
static bool environment_ok(void)
{
	char conf[600];

	if (fx.aborted)
		return false;
	monitor_conf(conf, sizeof(conf));
	if (access(conf, R_OK) != 0) {
		fail("%s vanished: the work directory was removed from outside; this run proves "
		     "nothing", conf);
		fx.aborted = true;
	} else if (!emulators_up()) {
		fx.aborted = true;
	}
	return !fx.aborted;
}

/* A shard with records must have a lease unless it is closed (its lease
 * may be garbage-collected once finished). */
static bool leases_cover(const struct expect *ex, int n_ex, char *why, size_t size)
{
	struct kinesis_shard *all = NULL;
	struct kl_errinfo info = { 0 };
	size_t n = 0;
	bool ok = true;

	if (kinesis_list_shards(&fx.kc, fx.stream, NULL, &all, &n, &info) != KL_OK) {
		snprintf(why, size, "ListShards failed");
		return false;
	}
	for (int j = 0; j < n_ex && ok; j++) {
		bool closed = false;

		if (snap_shard(ex[j].shard))
			continue;
		for (size_t i = 0; i < n; i++)
			if (strcmp(all[i].shard_id, ex[j].shard) == 0)
				closed = kinesis_shard_is_closed(&all[i]);
		if (!closed) {
			snprintf(why, size, "open shard %s has records and no lease", ex[j].shard);
			ok = false;
		}
	}
	free(all);
	return ok;
}

static void drain(void)
{
	struct expect *ex = calloc(MAX_SHARDS, sizeof(*ex));
	int n_ex;
	int64_t t0 = kl_mono_ms(), deadline = t0 + 120000 + fx.duration_ms / 10, last_say = 0;
	char why[512] = "";

	if (!ex) {
		fail("out of memory");
		return;
	}
	stop_producers();
	for (int i = 0; i < NSLOTS; i++)
		for (int s = 0; s < NSVC; s++)
			if (faultctl_set_rules(fx.slots[i].proxy[s], "") != KL_OK)
				fail("cannot clear the rules of w%d's %s proxy", i, svc_names[s]);
	n_ex = read_manifests(ex, MAX_SHARDS);
	say("drain: %" PRIu64 " records in %d shard(s) written; waiting for every checkpoint",
	    fx.records, n_ex);
	for (;;) {
		int64_t now;

		reap_workers();
		slot_actions(true);
		poll_status();
		trackers_update();
		if (drained(ex, n_ex, why, sizeof(why)) && leases_cover(ex, n_ex, why, sizeof(why)))
			break;
		now = kl_mono_ms();
		if (now > deadline) {
			fail("the fleet did not drain within %" PRId64 " s: %s", (deadline - t0) / 1000, why);
			break;
		}
		if (now - last_say > 5000) {
			say("drain: waiting (%s)", why);
			last_say = now;
			if (!environment_ok())
				break;
		}
		kl_sleep_ms(POLL_MS);
	}
	fx.drain_ms = kl_mono_ms() - t0;
	say("drain: done after %" PRId64 " ms", fx.drain_ms);
	free(ex);
}

static void stop_fleet(void)
{
	for (int i = 0; i < NSLOTS; i++) {
		struct slot *sl = &fx.slots[i];

		if (sl->pid <= 0)
			continue;
		if (sl->state == SLOT_STOPPED)
			kill(-sl->pid, SIGCONT);
		note_slot_ending(i);
		if (sl->state != SLOT_TERMINATING)
			kill(sl->pid, SIGTERM);
		sl->state = SLOT_TERMINATING;
	}
	for (int i = 0; i < NSLOTS; i++) {
		struct slot *sl = &fx.slots[i];
		int rc;

		if (sl->pid <= 0)
			continue;
		rc = wait_pid(sl->pid, GRACE_MS + 10000);
		if (rc == -2) {
			fail("w%d ('%s') did not exit within %d ms of SIGTERM", i, sl->worker_id,
			     GRACE_MS + 10000);
			kill_and_reap(sl->pid);
		} else if (rc != 0) {
			fail("w%d ('%s') exited with status %d after the final SIGTERM", i,
			     sl->worker_id, rc);
		}
		sl->pid = -1;
		sl->state = SLOT_DOWN;
	}
}

/* ------------------------------------------------------------ verdict */

/*
 * Runs a checker (lakecheck, aggcheck): argv[0] with its stdout read into
 * out (NUL-terminated, at most cap - 1 bytes) and its stderr into err_path,
 * waited for up to 60 s (killed after: *ret_rc -2). False when it could
 * not be started (a failure is recorded when argv[0] is not executable:
 * env names the variable that sets it); else true and its wait_pid()
 * status in *ret_rc.
 */
static bool run_checker(char *const argv[], const char *env, const char *err_path, char *out,
			size_t cap, int *ret_rc)
{
	size_t used = 0;
	ssize_t n;
	pid_t pid;
	int p[2];

	if (access(argv[0], X_OK) != 0) {
		fail("no checker at %s (set %s)", argv[0], env);
		return false;
	}
	if (pipe2(p, O_CLOEXEC) != 0)
		return false;
	pid = spawn(argv, p[1], err_path);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return false;
	}
	while ((n = read(p[0], out + used, cap - 1 - used)) > 0 || (n < 0 && errno == EINTR))
		if (n > 0)
			used += (size_t)n;
	out[used] = '\0';
	close(p[0]);
	*ret_rc = wait_pid(pid, 60000);
	if (*ret_rc == -2)
		kill_and_reap(pid);
	return true;
}

/* lakecheck's figures (-1: not in its output). */
struct lake {
	bool ran;
	int rc;
	int64_t expected, found, objects, data_objects, error_objects, batches;
	int64_t duplicates, missing, unexpected, out_of_order, misplaced, bad_keys;
	int64_t bad_objects, bad_lines, overlapping;
	char raw[4096];
};

static void run_lakecheck(struct lake *lk)
{
	char m0[600], m1[600], err_path[600], regex[512];
	static char out[1 << 20];
	char *argv[] = { fx.lakecheck, "--endpoint", (char *)fx.s3, "--bucket", fx.bucket,
			 "--data-prefix", "data/", "--error-prefix", "errors/",
			 "--manifest", m0, "--manifest", m1, "--key-regex", regex, "--json", NULL };
	json_object *doc;
	size_t used;

	memset(lk, 0, sizeof(*lk));
	snprintf(m0, sizeof(m0), "%s/manifest-0.tsv", fx.dir);
	snprintf(m1, sizeof(m1), "%s/manifest-1.tsv", fx.dir);
	snprintf(err_path, sizeof(err_path), "%s/lakecheck.err", fx.dir);
	/* The two templates of write_conf(), then the shard and ESN range. */
	snprintf(regex, sizeof(regex),
		 "^(data/dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/hour=[0-9]{2}/"
		 "|errors/processing-failed/dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/)"
		 "shardId-[0-9]{12}/[0-9]{56}-[0-9]{10}_[0-9]{56}-[0-9]{10}%s$", fx.ext);
	/* lakecheck reads every object once: bounded by the run's size. */
	if (!run_checker(argv, "KL_LAKECHECK", err_path, out, sizeof(out), &lk->rc))
		return;
	lk->ran = true;
	used = strnlen(out, sizeof(lk->raw) - 1);
	memcpy(lk->raw, out, used);
	lk->raw[used] = '\0';
	doc = json_tokener_parse(out);
	lk->expected = jint(doc, "records_expected", -1);
	lk->found = jint(doc, "records_found", -1);
	lk->objects = jint(doc, "objects", -1);
	lk->data_objects = jint(doc, "data_objects", -1);
	lk->error_objects = jint(doc, "error_objects", -1);
	lk->batches = jint(doc, "batches", -1);
	lk->duplicates = jint(doc, "duplicates", -1);
	lk->missing = jint(doc, "missing", -1);
	lk->unexpected = jint(doc, "unexpected", -1);
	lk->out_of_order = jint(doc, "out_of_order", -1);
	lk->misplaced = jint(doc, "misplaced", -1);
	lk->bad_keys = jint(doc, "bad_keys", -1);
	lk->bad_objects = jint(doc, "bad_objects", -1);
	lk->bad_lines = jint(doc, "bad_lines", -1);
	lk->overlapping = jint(doc, "overlapping", -1);
	if (lk->rc != 0)
		fail("lakecheck exit %d: duplicates %" PRId64 ", missing %" PRId64 ", unexpected %" PRId64
		     ", out of order %" PRId64 ", misplaced %" PRId64 ", bad keys %" PRId64
		     ", bad objects %" PRId64 ", bad lines %" PRId64 ", overlapping %" PRId64,
		     lk->rc, lk->duplicates, lk->missing, lk->unexpected, lk->out_of_order,
		     lk->misplaced, lk->bad_keys, lk->bad_objects, lk->bad_lines, lk->overlapping);
	else if (!doc)
		fail("lakecheck's output is not JSON");
	json_object_put(doc);
}

/* aggcheck's figures (-1: not in its output). */
struct aggfig {
	bool ran;
	int rc;
	int64_t objects, s3_records, s3_cells, ddb_items, ddb_records, ddb_late, mismatches;
	int64_t distinct_buckets;
};

/*
 * The DynamoDB aggregates against the S3 data objects (issue 9's proof under
 * chaos): tests/tools/aggcheck recomputes count + late, sum:price and the
 * session_id bucket set per 10 s window x page x action from the objects
 * and compares them with the table's items summed (sets: united) over
 * their buckets. Its stderr goes to
 * <dir>/aggcheck.err.
 */
static void run_aggcheck(struct aggfig *af)
{
	char err_path[600], window[16];
	static char out[1 << 16];
	char *argv[] = { fx.aggcheck, "--s3-endpoint", (char *)fx.s3, "--bucket", fx.bucket,
			 "--data-prefix", "data/", "--ddb-endpoint", (char *)fx.dynamodb,
			 "--table", fx.table, "--window-seconds", window, "--time-field", "ts",
			 "--dimensions", "page, action", "--measures",
			 "count, sum:price, distinct:session_id", "--json",
			 NULL };
	json_object *doc;

	memset(af, 0, sizeof(*af));
	snprintf(window, sizeof(window), "%d", AGG_WINDOW_S);
	snprintf(err_path, sizeof(err_path), "%s/aggcheck.err", fx.dir);
	if (!run_checker(argv, "KL_AGGCHECK", err_path, out, sizeof(out), &af->rc))
		return;
	af->ran = true;
	doc = json_tokener_parse(out);
	af->objects = jint(doc, "objects", -1);
	af->s3_records = jint(doc, "s3_records", -1);
	af->s3_cells = jint(doc, "s3_cells", -1);
	af->ddb_items = jint(doc, "ddb_items", -1);
	af->ddb_records = jint(doc, "ddb_records", -1);
	af->ddb_late = jint(doc, "ddb_late", -1);
	af->mismatches = jint(doc, "mismatches", -1);
	af->distinct_buckets = jint(doc, "distinct_buckets", -1);
	if (af->rc != 0)
		fail("aggcheck exit %d: mismatches %" PRId64 " (S3 %" PRId64 " records, DynamoDB %" PRId64
		     "); see %s", af->rc, af->mismatches, af->s3_records, af->ddb_records, err_path);
	else if (!doc)
		fail("aggcheck's output is not JSON");
	else if (af->s3_records > 0 && af->distinct_buckets <= 0)
		fail("aggcheck compared no session set (distinct_buckets %" PRId64 ")",
		     af->distinct_buckets);
	json_object_put(doc);
	printf("chaos: aggregates: %" PRId64 " records in %" PRId64 " cells from %" PRId64
	       " objects; DynamoDB %" PRId64 " items, %" PRId64 " records (%" PRId64 " late); session"
	       " buckets %" PRId64 "; mismatches %" PRId64 " (aggcheck exit %d)\n", af->s3_records,
	       af->s3_cells, af->objects, af->ddb_items, af->ddb_records, af->ddb_late,
	       af->distinct_buckets, af->mismatches, af->rc);
}

static void print_figures(const struct lake *lk, int64_t elapsed_ms)
{
	char repro[256];

	snprintf(repro, sizeof(repro),
		 "KL_CHAOS_SEED=%" PRIu64 " KL_CHAOS_SECONDS=%" PRId64
		 " tests/emu/emulators.sh --no-moto -- ./tests/chaos/chaos",
		 fx.seed, fx.duration_ms / 1000);
	printf("chaos: seed %" PRIu64 ", %" PRId64 " s of chaos, %" PRId64 " s in all, %d workers, %d shards "
	       "at the start, %u events/s per producer\n",
	       fx.seed, fx.duration_ms / 1000, elapsed_ms / 1000, NSLOTS, NSHARDS, fx.rate);
	printf("chaos: kills %d (%d during a recovery; restarts %d: %d with a fresh state dir, "
	       "%d as a new worker id), "
	       "SIGTERMs %d (%d cut short by kill -9), pauses %d, splits %d, merges %d, "
	       "fault periods %d, mid-upload %d, events skipped %d\n",
	       fx.n_kill, fx.n_rekill, fx.n_restart, fx.n_restart_fresh, fx.n_restart_newid, fx.n_term,
	       fx.n_term_kill, fx.n_pause, fx.n_split, fx.n_merge, fx.n_fault, fx.n_mid_upload,
	       fx.n_skipped);
	printf("chaos: records %" PRIu64 " written (%" PRIu64 " malformed, %" PRIu64 " bots, dropped); "
	       "lakecheck: %" PRId64 " expected, %" PRId64 " found in %" PRId64 " objects (data %" PRId64
	       ", error %" PRId64 ", %" PRId64 " batches)\n",
	       fx.records, fx.malformed, fx.bots, lk->expected, lk->found, lk->objects,
	       lk->data_objects, lk->error_objects, lk->batches);
	printf("chaos: duplicates %" PRId64 ", losses %" PRId64 ", unexpected %" PRId64
	       ", out of order %" PRId64 ", misplaced %" PRId64 ", bad keys %" PRId64
	       ", bad objects %" PRId64 ", bad lines %" PRId64 ", overlapping %" PRId64
	       " (lakecheck exit %d)\n",
	       lk->duplicates, lk->missing, lk->unexpected, lk->out_of_order, lk->misplaced,
	       lk->bad_keys, lk->bad_objects, lk->bad_lines, lk->overlapping, lk->rc);
	printf("chaos: max time a shard stayed unowned after a kill %" PRId64 " ms (%" PRId64
	       " ms without DynamoDB faults), after a pause %" PRId64 " ms (%" PRId64
	       " ms); handover after SIGTERM max %" PRId64 " ms, mean %" PRId64 " ms (%d); drain %" PRId64
	       " ms; status polls %d (%d failed)\n",
	       fx.max_unowned_kill, fx.max_unowned_kill_clean, fx.max_unowned_pause,
	       fx.max_unowned_pause_clean, fx.max_handover,
	       fx.n_handover ? fx.sum_handover / fx.n_handover : 0, fx.n_handover, fx.drain_ms,
	       fx.status_polls, fx.status_failures);
	printf("chaos: after SIGCONT %d taken shard(s) seen stopped by the resumed worker (%d not "
	       "verifiable: killed or SIGTERMed within 10 s); checkpoints gone back %d; "
	       "measures given up after %d s %d\n",
	       fx.n_pause_checked, fx.n_pause_unverified, fx.n_cp_backwards, UNOWNED_NOTE_MS / 1000,
	       fx.n_gave_up);
	printf("chaos: reproduce with %s\n", repro);
	if (fx.failures) {
		printf("chaos: FAIL (seed %" PRIu64 "):\n%s", fx.seed, fx.fail_text);
		if (lk->ran)
			printf("chaos: lakecheck said:\n%s\n", lk->raw);
	} else {
		printf("chaos: PASS\n");
	}
	fflush(stdout);
}

static void print_logs(void)
{
	char path[600];

	for (int i = 0; i < NSLOTS; i++) {
		for (int k = fx.slots[i].incarnation - 1; k <= fx.slots[i].incarnation; k++) {
			if (k < 1)
				continue;
			log_path(i, k, path, sizeof(path));
			print_tail(path, k == fx.slots[i].incarnation ? 40 : 15);
		}
	}
	for (int k = 0; k < 2; k++) {
		snprintf(path, sizeof(path), "%s/producer-%d.err", fx.dir, k);
		print_tail(path, 5);
	}
	snprintf(path, sizeof(path), "%s/lakecheck.err", fx.dir);
	print_tail(path, 30);
}

/* ------------------------------------------------------------ set-up */

static void setup_fatal(const char *what, enum kl_err err, const struct kl_errinfo *info)
{
	char buf[768];

	fprintf(stderr, "chaos: %s: %s\n", what, kl_errinfo_format(err, info, buf, sizeof(buf)));
	exit(1);
}

/*
 * `kinlake demo merge` on a 3-shard stream of its own: the default pair,
 * then a named top shard (merged with the one below), then nothing left to
 * merge (exit 1), then a bad option (64). Checked against ListShards.
 */
static void check_demo_merge(void)
{
	char conf[600], stream[80], out[1024], top[KINESIS_SHARD_ID_MAX + 1];
	const char *a1[] = { "demo", "merge", "-c", conf, "--stream", stream, NULL };
	const char *a2[] = { "demo", "merge", "-c", conf, "--stream", stream, "--shard", top, NULL };
	const char *a3[] = { "demo", "merge", "-c", conf, "--stream", stream, "--bogus", "x", NULL };
	struct kl_errinfo info = { 0 };
	struct kinesis_shard *sh = NULL;
	size_t n = 0;
	int rc, open = 0;
	bool child_ok = false;
	enum kl_err err;

	monitor_conf(conf, sizeof(conf));
	snprintf(stream, sizeof(stream), "%s-merge", fx.stream);
	if ((err = kinesis_create_stream(&fx.kc, stream, 3, &info)) != KL_OK ||
	    (err = kinesis_wait_active(&fx.kc, stream, 30000, NULL, &info)) != KL_OK ||
	    (err = kinesis_list_shards(&fx.kc, stream, NULL, &sh, &n, &info)) != KL_OK)
		setup_fatal("merge check stream", err, &info);
	snprintf(top, sizeof(top), "%s", sh[2].shard_id);
	free(sh);
	rc = run_kinlake(a1, out, sizeof(out), NULL, 60000);
	if (rc != 0 || !strstr(out, "merged shardId-000000000000 and shardId-000000000001\n") ||
	    !strstr(out, "child shardId-000000000003\n"))
		fail("demo merge (first pair): exit %d, '%s'", rc, out);
	rc = run_kinlake(a2, out, sizeof(out), NULL, 60000);
	if (rc != 0 || !strstr(out, "merged shardId-000000000003 and shardId-000000000002\n") ||
	    !strstr(out, "child shardId-000000000004\n"))
		fail("demo merge --shard %s: exit %d, '%s'", top, rc, out);
	if ((err = kinesis_list_shards(&fx.kc, stream, NULL, &sh, &n, &info)) != KL_OK)
		setup_fatal("ListShards", err, &info);
	for (size_t i = 0; i < n; i++) {
		open += !kinesis_shard_is_closed(&sh[i]);
		if (strcmp(sh[i].shard_id, "shardId-000000000004") == 0)
			child_ok = !kinesis_shard_is_closed(&sh[i]) &&
				   strcmp(sh[i].parent_shard_id, "shardId-000000000003") == 0 &&
				   strcmp(sh[i].adjacent_parent_shard_id, "shardId-000000000002") == 0 &&
				   strcmp(sh[i].starting_hash_key, "0") == 0 &&
				   strcmp(sh[i].ending_hash_key, "340282366920938463463374607431768211455") == 0;
	}
	free(sh);
	if (n != 5 || open != 1 || !child_ok)
		fail("demo merge: after two merges %zu shards, %d open, child ok %d", n, open, child_ok);
	rc = run_kinlake(a1, out, sizeof(out), NULL, 60000);
	if (rc != 1)
		fail("demo merge with one open shard: exit %d, want 1", rc);
	rc = run_kinlake(a3, out, sizeof(out), NULL, 60000);
	if (rc != 64)
		fail("demo merge --bogus: exit %d, want 64", rc);
	kinesis_delete_stream(&fx.kc, stream, &info);
	say("demo merge: checked");
}

static const char *env_or_skip(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "skip: %s is not set (run under tests/emu/emulators.sh)\n", name);
		exit(77);
	}
	return v;
}

static void setup(void)
{
	struct creds_config cc = { 0 };
	struct aws_client_config ac = { 0 };
	struct kl_errinfo info = { 0 };
	struct aws_client s3c;
	const char *emu = env_or_skip("KL_TEST_EMU_DIR"), *v;
	char conf[600], state[600];
	long tag = (long)getpid();
	int saved_err, proxy_log;
	enum kl_err err;

	fx.kinesis = env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	fx.dynamodb = env_or_skip("KL_TEST_DYNAMODB_ENDPOINT");
	fx.s3 = env_or_skip("KL_TEST_S3_ENDPOINT");
	fx.key_id = env_or_skip("KL_TEST_ACCESS_KEY_ID");
	fx.secret = env_or_skip("KL_TEST_SECRET_ACCESS_KEY");
	v = getenv("KL_TEST_KINLAKE");
	snprintf(fx.bin, sizeof(fx.bin), "%s", v && *v ? v : KL_TEST_BUILDDIR "/kinlake");
	v = getenv("KL_AGGCHECK");
	snprintf(fx.aggcheck, sizeof(fx.aggcheck), "%s",
		 v && *v ? v : KL_TEST_BUILDDIR "/tests/tools/aggcheck");
	v = getenv("KL_LAKECHECK");
	snprintf(fx.lakecheck, sizeof(fx.lakecheck), "%s",
		 v && *v ? v : KL_TEST_BUILDDIR "/tests/tools/lakecheck");
	if (access(fx.bin, X_OK) != 0) {
		fprintf(stderr, "chaos: no kinlake binary at %s\n", fx.bin);
		exit(1);
	}
	v = getenv("KL_CHAOS_SECONDS");
	fx.duration_ms = (v && *v ? strtoll(v, NULL, 10) : 180) * 1000;
	if (fx.duration_ms < 20000)
		fx.duration_ms = 20000;
	v = getenv("KL_CHAOS_RATE");
	fx.rate = v && *v ? (unsigned)strtoul(v, NULL, 10) : 50;
	if (fx.rate < 1)
		fx.rate = 1;
	v = getenv("KL_CHAOS_SEED");
	if (v && *v) {
		fx.seed = strtoull(v, NULL, 10);
	} else {
		struct kl_rng r;

		kl_rng_seed(&r);
		fx.seed = kl_rng_below(&r, 1000000000);
	}
	kl_rng_seed_value(&fx.rng, fx.seed);
	/* The seed also picks the output format (not from the RNG, so the
	 * schedule of a seed does not depend on it). */
	switch (fx.seed % 3) {
	case 0:
		fx.compression = "gzip";
		fx.ext = "\\.gz";
		break;
	case 1:
#ifdef HAVE_ZSTD
		fx.compression = "zstd";
		fx.ext = "\\.zst";
		break;
#endif
	default:
		fx.compression = "none";
		fx.ext = "";
		break;
	}
	fx.buffer_records = (fx.seed / 3) % 2 ? 40 : 0;
	printf("chaos: seed %" PRIu64 " (KL_CHAOS_SEED), %" PRId64 " s (KL_CHAOS_SECONDS), "
	       "compression %s, buffer_records %d\n", fx.seed, fx.duration_ms / 1000, fx.compression,
	       fx.buffer_records);
	fflush(stdout);

	snprintf(fx.dir, sizeof(fx.dir), "%s/chaos-%ld", emu, tag);
	if (mkdir(fx.dir, 0700) != 0) {
		fprintf(stderr, "chaos: mkdir %s: %s\n", fx.dir, strerror(errno));
		exit(1);
	}
	snprintf(fx.app, sizeof(fx.app), "kl-chaos-%ld", tag);
	snprintf(fx.stream, sizeof(fx.stream), "kl-chaos-%ld", tag);
	snprintf(fx.bucket, sizeof(fx.bucket), "kl-chaos-%ld", tag);
	snprintf(fx.table, sizeof(fx.table), "kl-chaos-%ld-agg", tag);
	monitor_conf(conf, sizeof(conf));
	snprintf(state, sizeof(state), "%s/monitor-state", fx.dir);
	mkdir(state, 0700);
	if (!write_conf(conf, "monitor", state, NULL, NULL)) {
		fprintf(stderr, "chaos: cannot write %s\n", conf);
		exit(1);
	}

	/* lakecheck takes its credentials from the standard chain. */
	setenv("AWS_ACCESS_KEY_ID", fx.key_id, 1);
	setenv("AWS_SECRET_ACCESS_KEY", fx.secret, 1);
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_PROFILE");
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	cc.access_key_id = fx.key_id;
	cc.secret_access_key = fx.secret;
	cc.disable_imds = 1;
	if (http_global_init() != KL_OK || creds_chain_new(&cc, &fx.creds) != KL_OK) {
		fprintf(stderr, "chaos: cannot set up HTTP or credentials\n");
		exit(1);
	}
	ac.region = "us-east-1";
	ac.http.timeout_ms = 20000;
	ac.retry.max_attempts = 3;
	ac.service = "kinesis";
	ac.endpoint = fx.kinesis;
	if (aws_client_init(&fx.kc, &ac, fx.creds) != KL_OK)
		exit(1);
	ac.service = "s3";
	ac.endpoint = fx.s3;
	if (aws_client_init(&s3c, &ac, fx.creds) != KL_OK)
		exit(1);
	if ((err = kinesis_create_stream(&fx.kc, fx.stream, NSHARDS, &info)) != KL_OK ||
	    (err = kinesis_wait_active(&fx.kc, fx.stream, 30000, NULL, &info)) != KL_OK)
		setup_fatal("CreateStream", err, &info);
	if ((err = s3_create_bucket(&s3c, fx.bucket, &info)) != KL_OK)
		setup_fatal("CreateBucket", err, &info);
	aws_client_done(&s3c);

	/* One proxy per worker and service, each with its own seed. Their
	 * line per injected fault goes to proxies.log, not to our stderr
	 * (a proxy inherits the stderr it was started with). */
	snprintf(state, sizeof(state), "%s/proxies.log", fx.dir);
	saved_err = fcntl(2, F_DUPFD_CLOEXEC, 3);
	proxy_log = open(state, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (saved_err >= 0 && proxy_log >= 0)
		dup2(proxy_log, 2);
	for (int i = 0; i < NSLOTS; i++)
		for (int s = 0; s < NSVC; s++) {
			const char *up = s == 0 ? fx.kinesis : s == 1 ? fx.dynamodb : fx.s3;
			char pseed[32];

			snprintf(pseed, sizeof(pseed), "%" PRIu64, fx.seed * 16 + (uint64_t)(i * NSVC + s) + 1);
			setenv("KL_FAULTPROXY_SEED", pseed, 1);
			if (faultctl_start(up, &fx.slots[i].proxy[s]) != KL_OK) {
				if (saved_err >= 0)
					dup2(saved_err, 2);
				fprintf(stderr, "chaos: cannot start the %s proxy of w%d (see %s)\n",
					svc_names[s], i, state);
				exit(1);
			}
		}
	if (saved_err >= 0) {
		dup2(saved_err, 2);
		close(saved_err);
	}
	if (proxy_log >= 0)
		close(proxy_log);
	for (int i = 0; i < NSLOTS; i++)
		snprintf(fx.slots[i].worker_id, sizeof(fx.slots[i].worker_id), "w%d", i);
}

/* ------------------------------------------------------------ main */

int main(void)
{
	struct lake lk;
	struct aggfig af;
	int64_t t_begin, chaos_end, last_poll = 0, last_env_check = 0;
	bool converged = false;

	env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	signal(SIGINT, on_fatal_signal);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGHUP, on_fatal_signal);
	signal(SIGALRM, on_fatal_signal);
	signal(SIGPIPE, SIG_IGN);
	atexit(kill_all);
	t_begin = kl_mono_ms();
	setup();
	/* Nothing may outlive a hung run: chaos + drain + verification. */
	alarm((unsigned)(fx.duration_ms / 1000 + 600));
	check_demo_merge();
	make_schedule();

	for (int i = 0; i < NSLOTS; i++)
		if (!start_worker(i)) {
			fprintf(stderr, "chaos: cannot start w%d\n", i);
			return 1;
		}
	if (!start_producers()) {
		fprintf(stderr, "chaos: cannot start the producers\n");
		return 1;
	}
	fx.t_start = kl_mono_ms();
	chaos_end = fx.t_start + fx.duration_ms;

	while (kl_mono_ms() < chaos_end) {
		int64_t now = kl_mono_ms();

		if (now - last_env_check >= 5000) {
			last_env_check = now;
			if (!environment_ok())
				break;
		}

		if (now - last_poll >= POLL_MS) {
			last_poll = now;
			poll_status();
			trackers_update();
			if (!converged && fx.snap.valid && fx.snap.rc == 0) {
				converged = true;
				say("fleet healthy (status 0): %s", fx.snap.summary);
			}
		}
		reap_workers();
		check_producers_alive();
		slot_actions(false);
		while (fx.next_event < fx.n_events &&
		       now - fx.t_start >= fx.events[fx.next_event].at) {
			struct event *e = &fx.events[fx.next_event];

			if (run_event(e->kind)) {
				fx.next_event++;
			} else if (now - fx.t_start + 1000 < fx.duration_ms - 2000) {
				e->at = now - fx.t_start + 1000;   /* not possible now: later */
				break;
			} else {
				say("skipped %s (no worker to spare before the end)", ev_names[e->kind]);
				fx.n_skipped++;
				fx.next_event++;
			}
		}
		kl_sleep_ms(50);
	}
	if (!fx.aborted) {
		say("chaos over; stopping the producers and draining");
		drain();
		trackers_update();
	}
	stop_fleet();
	for (int i = 0; i < NSLOTS; i++)
		for (int s = 0; s < NSVC; s++) {
			faultctl_stop(fx.slots[i].proxy[s]);
			fx.slots[i].proxy[s] = NULL;
		}
	memset(&lk, 0, sizeof(lk));
	memset(&af, 0, sizeof(af));
	if (!fx.aborted) {
		say("judging the lake with %s", fx.lakecheck);
		run_lakecheck(&lk);
		say("judging the aggregates with %s", fx.aggcheck);
		run_aggcheck(&af);
	}
	if (fx.records == 0 && !fx.aborted)
		fail("no records were written");
	if (fx.n_kill == 0)
		fail("no worker was killed");
	/* Times (unowned after a kill, handover) are figures, not verdicts:
	 * a loaded machine stretches them. A shard that is never taken back
	 * shows as a drain that does not finish. */
	check_pauses();
	if (lk.ran && lk.rc == 0 && (lk.expected < 0 || (uint64_t)lk.expected != fx.records - fx.bots))
		fail("lakecheck expected %" PRId64 " records, the manifests hold %" PRIu64
		     " (without bots)", lk.expected, fx.records - fx.bots);
	if (fx.failures)
		print_logs();
	print_figures(&lk, kl_mono_ms() - t_begin);
	kill_all();
	aws_client_done(&fx.kc);
	creds_chain_free(fx.creds);
	http_global_cleanup();
	return fx.failures ? 1 : 0;
}
