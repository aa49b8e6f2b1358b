/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_status.c: `kinlake status` judged on synthetic lease sets: every
 * shard state (active, expired, unowned, waiting-on-parents, finished,
 * pending-intent), every exit code (0 ok, 1 warning, 2 critical, and 3
 * from status_main when the table cannot be read), the fleet rules (no
 * leases, no live worker), what watching counters without a heartbeat
 * shows, and that the JSON view parses with json-c and carries the same
 * data as the text view.
 */
#include "config.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "lease.h"
#include "status.h"
#include "testutil.h"

#define NOW ((int64_t)1795000000000)

static const struct status_thresholds TH = {
	.failover_ms = 10000,
	.stale_ms = 5000,
	.lag_warn_ms = 900000,
	.lag_crit_ms = 3600000,
	.unowned_crit_ms = 60000,
	.intent_stuck_ms = 900000,
};

struct set {
	struct lease l[16];
	struct status_obs o[16];
	size_t n;
};

static struct lease *add(struct set *s, const char *key, const char *owner, int64_t hb_age_ms,
			 const char *checkpoint)
{
	struct lease *l = &s->l[s->n];
	struct kl_errinfo info;

	lease_init(l);
	status_obs_init(&s->o[s->n]);
	s->n++;
	CU_ASSERT_FATAL(lease_set_str(&l->key, key) == KL_OK);
	if (owner)
		CU_ASSERT_FATAL(lease_set_str(&l->owner, owner) == KL_OK);
	l->counter = 7;
	l->heartbeat_ms = hb_age_ms >= 0 ? NOW - hb_age_ms : 0;
	CU_ASSERT_FATAL(lease_esn_parse(checkpoint ? checkpoint : "TRIM_HORIZON", 0, &l->checkpoint,
					&info) == KL_OK);
	return l;
}

static void set_done(struct set *s)
{
	for (size_t i = 0; i < s->n; i++)
		lease_done(&s->l[i]);
	s->n = 0;
}

static void classify(struct set *s, struct status_report *r)
{
	CU_ASSERT_EQUAL_FATAL(status_classify(s->l, s->o, s->n, &TH, NOW, r), KL_OK);
}

static const struct status_shard *shard(const struct status_report *r, const char *key)
{
	for (size_t i = 0; i < r->n_shards; i++)
		if (strcmp(r->shards[i].shard_id, key) == 0)
			return &r->shards[i];
	CU_FAIL("shard missing from the report");
	return NULL;
}

static void test_names(void)
{
	CU_ASSERT_EQUAL(STATUS_OK, 0);
	CU_ASSERT_EQUAL(STATUS_WARNING, 1);
	CU_ASSERT_EQUAL(STATUS_CRITICAL, 2);
	CU_ASSERT_EQUAL(STATUS_UNKNOWN, 3);
	CU_ASSERT_STRING_EQUAL(status_state_name(STATUS_STATE_WAITING_PARENTS), "waiting-on-parents");
	CU_ASSERT_STRING_EQUAL(status_state_name(STATUS_STATE_PENDING_INTENT), "pending-intent");
	CU_ASSERT_STRING_EQUAL(status_level_name(STATUS_CRITICAL), "critical");
}

static void test_healthy_fleet_is_ok(void)
{
	struct set s = { 0 };
	struct status_report r;

	add(&s, "shardId-000000000003", "host-b", 1000, "49590000000000000000000000000000000000000000000000000003");
	add(&s, "shardId-000000000000", "host-a", 500, NULL);
	add(&s, "shardId-000000000001", "host-a", 3000, NULL);
	add(&s, "shardId-000000000002", "host-b", 0, "LATEST");
	classify(&s, &r);
	CU_ASSERT_EQUAL(r.level, STATUS_OK);
	CU_ASSERT_EQUAL(r.n_shards, 4);
	CU_ASSERT_EQUAL(r.counts[STATUS_STATE_ACTIVE], 4);
	CU_ASSERT_EQUAL(r.live_workers, 2);
	CU_ASSERT_EQUAL(r.open_leases, 4);
	CU_ASSERT_EQUAL(r.target, 2);
	CU_ASSERT_EQUAL_FATAL(r.n_workers, 2);
	CU_ASSERT_STRING_EQUAL(r.workers[0].worker_id, "host-a");
	CU_ASSERT_EQUAL(r.workers[0].held, 2);
	CU_ASSERT_TRUE(r.workers[1].live);
	/* Sorted by shard id; renewal age from the heartbeat. */
	CU_ASSERT_STRING_EQUAL(r.shards[0].shard_id, "shardId-000000000000");
	CU_ASSERT_EQUAL(r.shards[0].since_renew_ms, 500);
	CU_ASSERT_STRING_EQUAL(r.shards[0].since_renew_source, STATUS_SRC_HEARTBEAT);
	CU_ASSERT_STRING_EQUAL(shard(&r, "shardId-000000000003")->checkpoint,
			       "49590000000000000000000000000000000000000000000000000003");
	CU_ASSERT(strncmp(r.summary, "OK: 4 shards", 12) == 0);
	status_report_done(&r);
	set_done(&s);
}

static void test_expired_is_warning_then_critical(void)
{
	struct set s = { 0 };
	struct status_report r;

	add(&s, "a", "host-a", 1000, NULL);
	add(&s, "b", "host-b", 15000, NULL);      /* past failover (10 s) */
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "b")->state, STATUS_STATE_EXPIRED);
	CU_ASSERT_EQUAL(shard(&r, "b")->level, STATUS_WARNING);
	CU_ASSERT_EQUAL(shard(&r, "b")->since_renew_ms, 15000);
	CU_ASSERT_EQUAL(r.level, STATUS_WARNING);
	CU_ASSERT_EQUAL(r.live_workers, 1);
	CU_ASSERT_EQUAL(r.target, 2);
	CU_ASSERT_EQUAL_FATAL(r.n_workers, 2);
	CU_ASSERT_EQUAL(r.workers[1].expired, 1);
	CU_ASSERT_FALSE(r.workers[1].live);
	CU_ASSERT(strncmp(r.summary, "WARNING: shard 'b': expired", 27) == 0);
	status_report_done(&r);

	/* Without a live owner for longer than unowned_crit_ms (60 s). */
	s.l[1].heartbeat_ms = NOW - 61000;
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "b")->state, STATUS_STATE_EXPIRED);
	CU_ASSERT_EQUAL(shard(&r, "b")->level, STATUS_CRITICAL);
	CU_ASSERT_EQUAL(r.level, STATUS_CRITICAL);
	CU_ASSERT(strncmp(r.summary, "CRITICAL: shard 'b': no live owner", 34) == 0);
	status_report_done(&r);
	set_done(&s);
}

static void test_unowned(void)
{
	struct set s = { 0 };
	struct status_report r;

	add(&s, "a", "host-a", 1000, NULL);
	add(&s, "released", NULL, 2000, NULL);        /* last owner renewed 2 s ago */
	add(&s, "long-unowned", NULL, 70000, NULL);
	add(&s, "new", NULL, -1, NULL);               /* no heartbeat, not watched */
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "released")->state, STATUS_STATE_UNOWNED);
	CU_ASSERT_EQUAL(shard(&r, "released")->level, STATUS_WARNING);
	CU_ASSERT_EQUAL(shard(&r, "released")->unowned_ms, 2000);
	CU_ASSERT_EQUAL(shard(&r, "long-unowned")->level, STATUS_CRITICAL);
	CU_ASSERT_EQUAL(shard(&r, "new")->level, STATUS_WARNING);
	CU_ASSERT_EQUAL(shard(&r, "new")->unowned_ms, -1);
	CU_ASSERT_EQUAL(r.counts[STATUS_STATE_UNOWNED], 3);
	CU_ASSERT_EQUAL(r.level, STATUS_CRITICAL);
	status_report_done(&r);

	/* Watched for 70 s without a heartbeat: long enough to be critical. */
	s.o[3].watched_ms = 70000;
	s.o[3].unchanged_ms = 70000;
	s.l[2].heartbeat_ms = NOW - 1000;
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "new")->unowned_ms, 70000);
	CU_ASSERT_EQUAL(shard(&r, "new")->level, STATUS_CRITICAL);
	CU_ASSERT_EQUAL(shard(&r, "long-unowned")->level, STATUS_WARNING);
	status_report_done(&r);
	set_done(&s);
}

static void test_waiting_on_parents_and_finished(void)
{
	struct set s = { 0 };
	struct status_report r;
	struct lease *child;

	add(&s, "parent", "host-a", 1000, NULL);
	child = add(&s, "child", "host-b", 1000, NULL);
	CU_ASSERT_FATAL(lease_strset_add(&child->parents, "parent") == KL_OK);
	CU_ASSERT_FATAL(lease_strset_add(&child->parents, "gone-parent") == KL_OK);
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "child")->state, STATUS_STATE_WAITING_PARENTS);
	CU_ASSERT_EQUAL(shard(&r, "child")->level, STATUS_OK);
	CU_ASSERT_STRING_EQUAL(shard(&r, "child")->parents, "parent,gone-parent");
	CU_ASSERT_EQUAL(r.level, STATUS_OK);
	status_report_done(&r);

	/* The parent reaches SHARD_END (and is released): the child is active,
	 * the parent finished; finished leases need no owner. */
	s.l[0].checkpoint = lease_esn_sentinel(LEASE_ESN_SHARD_END);
	lease_set_str(&s.l[0].owner, NULL);
	s.l[0].heartbeat_ms = NOW - 3600000;
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "parent")->state, STATUS_STATE_FINISHED);
	CU_ASSERT_EQUAL(shard(&r, "parent")->level, STATUS_OK);
	CU_ASSERT_EQUAL(shard(&r, "child")->state, STATUS_STATE_ACTIVE);
	CU_ASSERT_EQUAL(r.open_leases, 1);
	CU_ASSERT_EQUAL(r.target, 1);
	CU_ASSERT_EQUAL(r.level, STATUS_OK);
	status_report_done(&r);

	/* Only finished leases: nothing to do, nobody needs to be alive. */
	lease_set_str(&s.l[1].owner, NULL);
	s.l[1].checkpoint = lease_esn_sentinel(LEASE_ESN_SHARD_END);
	classify(&s, &r);
	CU_ASSERT_EQUAL(r.counts[STATUS_STATE_FINISHED], 2);
	CU_ASSERT_EQUAL(r.level, STATUS_OK);
	status_report_done(&r);
	set_done(&s);
}

static void test_pending_intent(void)
{
	struct set s = { 0 };
	struct status_report r;
	struct lease *l;
	struct kl_errinfo info;

	l = add(&s, "a", "host-a", 1000, "100");
	CU_ASSERT_FATAL(lease_esn_parse("250", 3, &l->pending, &info) == KL_OK);
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "a")->state, STATUS_STATE_PENDING_INTENT);
	CU_ASSERT_EQUAL(shard(&r, "a")->level, STATUS_OK);
	CU_ASSERT_STRING_EQUAL(shard(&r, "a")->pending, "250");
	CU_ASSERT_EQUAL(shard(&r, "a")->pending_sub, 3);
	status_report_done(&r);

	/* The local journal says the intent is 16 min old: stuck. */
	s.o[0].intent_age_ms = 960000;
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "a")->level, STATUS_CRITICAL);
	CU_ASSERT_STRING_EQUAL(shard(&r, "a")->intent_age_source, STATUS_SRC_JOURNAL);
	CU_ASSERT(strstr(shard(&r, "a")->reason, "stuck") != NULL);
	CU_ASSERT_EQUAL(r.level, STATUS_CRITICAL);
	status_report_done(&r);

	/* Or watching saw the same intent for that long. */
	s.o[0].intent_age_ms = -1;
	s.o[0].pending_seen_ms = 1000000;
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "a")->level, STATUS_CRITICAL);
	CU_ASSERT_STRING_EQUAL(shard(&r, "a")->intent_age_source, STATUS_SRC_WATCH);
	status_report_done(&r);
	set_done(&s);
}

static void test_lag(void)
{
	struct set s = { 0 };
	struct status_report r;

	add(&s, "a", "host-a", 1000, NULL);
	add(&s, "b", "host-a", 1000, NULL);
	s.o[0].lag_ms = 1000000;                  /* > 15 min */
	s.o[0].lag_source = STATUS_SRC_METRICS;
	s.o[1].lag_ms = 5000;
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "a")->level, STATUS_WARNING);
	CU_ASSERT_EQUAL(shard(&r, "a")->lag_ms, 1000000);
	CU_ASSERT_EQUAL(shard(&r, "b")->level, STATUS_OK);
	CU_ASSERT_EQUAL(r.level, STATUS_WARNING);
	status_report_done(&r);
	s.o[0].lag_ms = 4000000;                  /* > 1 h */
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "a")->level, STATUS_CRITICAL);
	CU_ASSERT_EQUAL(r.level, STATUS_CRITICAL);
	status_report_done(&r);
	set_done(&s);
}

static void test_watching_without_heartbeat(void)
{
	struct set s = { 0 };
	struct status_report r;

	add(&s, "moving", "kcl-1", -1, NULL);
	add(&s, "still", "kcl-2", -1, NULL);
	add(&s, "stale-hb-but-moving", "kcl-1", 600000, NULL);
	add(&s, "unwatched", "kcl-1", -1, NULL);
	s.o[0].watched_ms = 6000;
	s.o[0].unchanged_ms = 1500;
	s.o[1].watched_ms = 6000;
	s.o[1].unchanged_ms = 6000;               /* >= stale_ms: not renewed */
	s.o[2].watched_ms = 6000;
	s.o[2].unchanged_ms = 2000;
	classify(&s, &r);
	CU_ASSERT_EQUAL(shard(&r, "moving")->state, STATUS_STATE_ACTIVE);
	CU_ASSERT_EQUAL(shard(&r, "moving")->since_renew_ms, 1500);
	CU_ASSERT_STRING_EQUAL(shard(&r, "moving")->since_renew_source, STATUS_SRC_WATCH);
	CU_ASSERT_EQUAL(shard(&r, "still")->state, STATUS_STATE_EXPIRED);
	CU_ASSERT_TRUE(shard(&r, "still")->since_renew_at_least);
	CU_ASSERT_EQUAL(shard(&r, "still")->level, STATUS_WARNING);
	CU_ASSERT_EQUAL(shard(&r, "stale-hb-but-moving")->state, STATUS_STATE_ACTIVE);
	CU_ASSERT_EQUAL(shard(&r, "unwatched")->state, STATUS_STATE_ACTIVE);
	CU_ASSERT_EQUAL(shard(&r, "unwatched")->since_renew_ms, -1);
	CU_ASSERT_EQUAL(r.level, STATUS_WARNING);
	status_report_done(&r);
	set_done(&s);
}

static void test_fleet_rules(void)
{
	struct set s = { 0 };
	struct status_report r;
	struct lease *other;

	classify(&s, &r);   /* an empty table */
	CU_ASSERT_EQUAL(r.level, STATUS_CRITICAL);
	CU_ASSERT(strstr(r.summary, "no leases") != NULL);
	status_report_done(&r);

	add(&s, "a", "host-a", 12000, NULL);
	add(&s, "b", "host-a", 12000, NULL);
	classify(&s, &r);   /* every lease expired, none long enough for the shard rule */
	CU_ASSERT_EQUAL(shard(&r, "a")->level, STATUS_WARNING);
	CU_ASSERT_EQUAL(r.live_workers, 0);
	CU_ASSERT_EQUAL(r.target, 0);
	CU_ASSERT_EQUAL(r.level, STATUS_CRITICAL);
	CU_ASSERT(strstr(r.summary, "no live worker") != NULL);
	status_report_done(&r);

	/* Items that are not leases are not judged at all. */
	s.l[0].heartbeat_ms = s.l[1].heartbeat_ms = NOW - 100;
	other = add(&s, "config-item", NULL, -1, NULL);
	CU_ASSERT_FATAL(lease_set_str(&other->entity_type, "CONFIG") == KL_OK);
	classify(&s, &r);
	CU_ASSERT_EQUAL(r.n_shards, 2);
	CU_ASSERT_EQUAL(r.level, STATUS_OK);
	status_report_done(&r);
	set_done(&s);
}

/* ------------------------------------------------------------ views */

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return NULL;
	return json_object_get_string(v);
}

static int64_t jint(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return -1;
	return json_object_get_int64(v);
}

/* The text line of the table that starts with key, or NULL. */
static const char *text_row(const char *text, const char *key)
{
	size_t n = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, key, n) == 0 && p[n] == ' ')
			return p;
	return NULL;
}

static bool row_has(const char *row, const char *word)
{
	const char *end = strchr(row, '\n');
	const char *hit = strstr(row, word);

	return hit && (!end || hit < end);
}

static void test_json_matches_text(void)
{
	struct set s = { 0 };
	struct status_report r;
	struct lease *l;
	struct kl_errinfo info;
	json_object *o, *parsed, *shards, *workers;
	char *text = NULL;
	size_t text_len = 0;
	FILE *mem;
	const char *serialized;

	add(&s, "shardId-000000000000", "host-a", 800, "49590338271490256608559692538361571095921575989136588898");
	add(&s, "shardId-000000000001", "host-b", 25000, "TRIM_HORIZON");
	add(&s, "shardId-000000000002", NULL, 3000, "SHARD_END");
	l = add(&s, "shardId-000000000003", "host-a", 100, "5000");
	CU_ASSERT_FATAL(lease_esn_parse("6000", 2, &l->pending, &info) == KL_OK);
	l->owner_switches = 4;
	s.o[0].lag_ms = 1234;
	s.o[0].lag_source = STATUS_SRC_METRICS;
	classify(&s, &r);
	r.table = strdup("kinlake-app");
	snprintf(r.note, sizeof(r.note), "lag from /var/lib/node_exporter/kinlake.prom");

	o = status_to_json(&r);
	CU_ASSERT_FATAL(o != NULL);
	serialized = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	parsed = json_tokener_parse(serialized);
	CU_ASSERT_FATAL(parsed != NULL);
	mem = open_memstream(&text, &text_len);
	CU_ASSERT_FATAL(mem != NULL);
	CU_ASSERT_EQUAL(status_print_text(&r, mem), 0);
	fclose(mem);

	CU_ASSERT_STRING_EQUAL(jstr(parsed, "status"), "warning");
	CU_ASSERT_EQUAL(jint(parsed, "exit_code"), 1);
	CU_ASSERT_EQUAL(jint(parsed, "exit_code"), (int64_t)r.level);
	CU_ASSERT_STRING_EQUAL(jstr(parsed, "table"), "kinlake-app");
	/* The summary is the text view's first line. */
	CU_ASSERT(strncmp(text, jstr(parsed, "summary"), strlen(jstr(parsed, "summary"))) == 0);
	CU_ASSERT(strstr(text, jstr(parsed, "note")) != NULL);
	CU_ASSERT_EQUAL(jint(parsed, "live_workers"), 1);
	CU_ASSERT_FATAL(json_object_object_get_ex(parsed, "shards", &shards));
	CU_ASSERT_EQUAL_FATAL(json_object_array_length(shards), 4);
	for (size_t i = 0; i < 4; i++) {
		json_object *sh = json_object_array_get_idx(shards, i);
		const char *id = jstr(sh, "shard");
		const char *row = text_row(text, id);
		char num[32];

		CU_ASSERT_FATAL(row != NULL);
		CU_ASSERT_STRING_EQUAL(id, r.shards[i].shard_id);
		CU_ASSERT_STRING_EQUAL(jstr(sh, "state"), status_state_name(r.shards[i].state));
		CU_ASSERT_TRUE(row_has(row, jstr(sh, "state")));
		CU_ASSERT_TRUE(row_has(row, jstr(sh, "owner") ? jstr(sh, "owner") : " - "));
		CU_ASSERT_TRUE(row_has(row, jstr(sh, "checkpoint")));
		CU_ASSERT_TRUE(row_has(row, jstr(sh, "level")));
		snprintf(num, sizeof(num), " %" PRId64 " ", jint(sh, "owner_switches"));
		CU_ASSERT_TRUE(row_has(row, num));
		if (jstr(sh, "pending"))
			CU_ASSERT_TRUE(row_has(row, jstr(sh, "pending")));
		if (*jstr(sh, "reason"))
			CU_ASSERT_TRUE(row_has(row, jstr(sh, "reason")));
	}
	CU_ASSERT_STRING_EQUAL(jstr(json_object_array_get_idx(shards, 1), "state"), "expired");
	CU_ASSERT_EQUAL(jint(json_object_array_get_idx(shards, 1), "since_renew_ms"), 25000);
	CU_ASSERT_EQUAL(jint(json_object_array_get_idx(shards, 0), "lag_ms"), 1234);
	CU_ASSERT_TRUE(row_has(text_row(text, "shardId-000000000000"), "1.2s"));
	CU_ASSERT_EQUAL(jint(json_object_array_get_idx(shards, 1), "lag_ms"), -1);   /* null */
	CU_ASSERT_STRING_EQUAL(jstr(json_object_array_get_idx(shards, 3), "state"), "pending-intent");
	CU_ASSERT_EQUAL(jint(json_object_array_get_idx(shards, 3), "pending_sub"), 2);
	CU_ASSERT_TRUE(row_has(text_row(text, "shardId-000000000003"), "6000:2"));
	CU_ASSERT_FATAL(json_object_object_get_ex(parsed, "workers", &workers));
	CU_ASSERT_EQUAL_FATAL(json_object_array_length(workers), 2);
	for (size_t i = 0; i < 2; i++) {
		json_object *w = json_object_array_get_idx(workers, i);
		const char *row = text_row(text, jstr(w, "worker"));
		char held[32];

		CU_ASSERT_FATAL(row != NULL);
		snprintf(held, sizeof(held), " %" PRId64 " ", jint(w, "held"));
		CU_ASSERT_TRUE(row_has(row, held));
		CU_ASSERT_TRUE(row_has(row, json_object_get_boolean(json_object_object_get(w, "live")) ?
					    "yes" : "no"));
	}
	json_object_put(parsed);
	json_object_put(o);
	free(text);
	status_report_done(&r);
	set_done(&s);
}

/* status_main with a table nobody answers for: exit 3 (UNKNOWN), in text
 * and in JSON. */
static int run_status_main(const char *conf, bool json, char *out, size_t size)
{
	char *argv[] = { "status", "-c", (char *)conf, json ? "--json" : NULL, NULL };
	char path[] = "/tmp/kl-test-status-out-XXXXXX";
	int fd = mkstemp(path), saved = dup(1), rc;
	ssize_t n;

	CU_ASSERT_FATAL(fd >= 0 && saved >= 0);
	fflush(stdout);
	dup2(fd, 1);
	rc = status_main(json ? 4 : 3, argv);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	n = pread(fd, out, size - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return rc;
}

static void test_unreadable_table_is_unknown(void)
{
	char dir[] = "/tmp/kl-test-status-XXXXXX", conf[128], out[4096];
	FILE *f;
	json_object *o;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(conf, sizeof(conf), "%s/kinlake.conf", dir);
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	/* Port 9 on loopback: nothing listens (discard is never enabled here). */
	fprintf(f, "application = \"status-test\";\nstream = \"s\";\nstate_dir = \"%s\";\n"
		   "s3 = { bucket = \"status-test-bucket\"; };\n"
		   "credentials = { access_key_id = \"AKID\"; secret_access_key = \"SECRET\"; disable_imds = true; };\n"
		   "endpoints = { dynamodb = \"http://127.0.0.1:9\"; };\n"
		   "retry = { max_attempts = 1; };\nhttp = { connect_timeout_ms = 200; timeout_ms = 1000; };\n",
		dir);
	fclose(f);
	chmod(conf, 0600);
	CU_ASSERT_EQUAL(run_status_main(conf, false, out, sizeof(out)), STATUS_UNKNOWN);
	CU_ASSERT(strncmp(out, "UNKNOWN: cannot read the lease table 'status-test'", 50) == 0);
	CU_ASSERT_EQUAL(run_status_main(conf, true, out, sizeof(out)), STATUS_UNKNOWN);
	o = json_tokener_parse(out);
	CU_ASSERT_FATAL(o != NULL);
	CU_ASSERT_STRING_EQUAL(jstr(o, "status"), "unknown");
	CU_ASSERT_EQUAL(jint(o, "exit_code"), 3);
	json_object_put(o);
	/* A config that does not load: also UNKNOWN. */
	snprintf(conf, sizeof(conf), "%s/missing.conf", dir);
	CU_ASSERT_EQUAL(run_status_main(conf, false, out, sizeof(out)), STATUS_UNKNOWN);
	snprintf(conf, sizeof(conf), "%s/kinlake.conf", dir);
	unlink(conf);
	rmdir(dir);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_names),
		KL_TEST(test_healthy_fleet_is_ok),
		KL_TEST(test_expired_is_warning_then_critical),
		KL_TEST(test_unowned),
		KL_TEST(test_waiting_on_parents_and_finished),
		KL_TEST(test_pending_intent),
		KL_TEST(test_lag),
		KL_TEST(test_watching_without_heartbeat),
		KL_TEST(test_fleet_rules),
		KL_TEST(test_json_matches_text),
		KL_TEST(test_unreadable_table_is_unknown),
		{ NULL, NULL },
	};

	return kl_test_run("status", t);
}
