/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_poison.c: the poison-record logic of src/daemon/poison.c. The marks
 * file (what survives a crash, which slots count, the lock); the
 * fatal-signal handler in forked children that really crash; the
 * kinlakeCrashes lease attribute (codec, merges that stay idempotent under
 * lost replies and ghost conflicts, pruning, a foreign value left alone)
 * and its exact DynamoDB request; the guard's counting and routing over a
 * real journal in a temporary directory and the memory lease store,
 * including restarts of two workers replayed from snapshots of their marks
 * files; and the guard inside a consumer that runs the crashing fixture
 * plugin (which aborts this test if the poison record ever reaches it).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "consumer.h"
#include "journal.h"
#include "kinesis.h"
#include "lease_store_ddb.h"
#include "lease_store_mem.h"
#include "poison.h"
#include "testutil.h"
#include "util.h"
#include "xform.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define KEY "shardId-000000000001"
#define T0 INT64_C(1000000)

static char tmpdir[] = "/tmp/kl-test-poison-XXXXXX";

/* ------------------------------------------------------------ helpers */

static void tmp_path(const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s", tmpdir, name);
}

static struct esn esn_of(const char *seq, uint64_t sub)
{
	struct esn e;

	CU_ASSERT_EQUAL_FATAL(esn_set(seq, sub, &e, NULL), KL_OK);
	return e;
}

static struct journal *open_journal(const char *name)
{
	char path[512];
	struct kl_errinfo info;
	struct journal *j = NULL;

	tmp_path(name, path, sizeof(path));
	kl_errinfo_clear(&info);
	if (journal_open(path, &j, &info) != KL_OK)
		fprintf(stderr, "\njournal_open: %s\n", info.message);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	return j;
}

static uint32_t journal_count(struct journal *j, const char *seq, uint64_t sub)
{
	struct esn e = esn_of(seq, sub);
	uint32_t n = 99;

	CU_ASSERT_EQUAL(journal_crash_get(j, KEY, &e, &n, NULL), KL_OK);
	return n;
}

static void journal_bump(struct journal *j, const char *seq, unsigned times)
{
	struct esn e = esn_of(seq, 0);

	for (unsigned i = 0; i < times; i++)
		CU_ASSERT_EQUAL(journal_crash_bump(j, KEY, &e, NULL, NULL), KL_OK);
}

/* A lease KEY with counter 5 and checkpoint cp in t (extras kept). */
static void put_lease(struct lease_mem_table *t, const struct lease_esn *cp)
{
	struct lease l;

	lease_init(&l);
	if (lease_mem_table_read(t, KEY, &l) != KL_OK) {
		lease_init(&l);
		CU_ASSERT_EQUAL_FATAL(lease_set_str(&l.key, KEY), KL_OK);
		l.counter = 5;
	}
	l.checkpoint = *cp;
	CU_ASSERT_EQUAL_FATAL(lease_mem_table_put(t, &l), KL_OK);
	lease_done(&l);
}

static struct lease_esn seq_cp(const char *seq)
{
	struct lease_esn cp;

	CU_ASSERT_EQUAL_FATAL(lease_esn_parse(seq, 0, &cp, NULL), KL_OK);
	return cp;
}

/* The lease's kinlakeCrashes as a table (empty when absent). */
static void lease_table(struct lease_mem_table *t, struct poison_table *ret, uint64_t *ret_counter)
{
	struct lease l;

	CU_ASSERT_EQUAL_FATAL(lease_mem_table_read(t, KEY, &l), KL_OK);
	CU_ASSERT_EQUAL_FATAL(poison_table_decode(lease_get_extra(&l, POISON_LEASE_ATTR), ret, NULL),
			      KL_OK);
	if (ret_counter)
		*ret_counter = l.counter;
	lease_done(&l);
}

static uint32_t lease_count(struct lease_mem_table *t, const char *seq, const char *worker,
			    uint32_t *ret_mine)
{
	struct poison_table pt;
	struct esn e = esn_of(seq, 0);
	uint32_t n;

	lease_table(t, &pt, NULL);
	n = poison_table_count(&pt, &e, worker, ret_mine);
	poison_table_done(&pt);
	return n;
}

static bool lease_has_attr(struct lease_mem_table *t)
{
	struct lease l;
	bool has;

	CU_ASSERT_EQUAL_FATAL(lease_mem_table_read(t, KEY, &l), KL_OK);
	has = lease_get_extra(&l, POISON_LEASE_ATTR) != NULL;
	lease_done(&l);
	return has;
}

/* Whole-file copies: the marks file as it was when a process "died". */
static char *snapshot(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = malloc(1 << 22);
	size_t n;

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
	n = fread(buf, 1, 1 << 22, f);
	fclose(f);
	*ret_len = n;
	return buf;
}

static void restore(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fwrite(buf, 1, len, f), len);
	fclose(f);
	free(buf);
}

static struct kl_transform_record rec_of(const char *seq, uint64_t sub)
{
	struct kl_transform_record r;

	memset(&r, 0, sizeof(r));
	r.data = (const uint8_t *)"{}";
	r.len = 2;
	r.sequence_number = seq;
	r.sub_sequence_number = sub;
	r.shard_id = KEY;
	r.partition_key = "k";
	return r;
}

/* ------------------------------------------------------------ marks file */

static void test_marks_survive_a_crash(void)
{
	char path[512];
	struct poison_marks *m = NULL;
	struct poison_crash *cr = NULL;
	struct poison_slot *s = NULL, *s2 = NULL;
	struct kl_errinfo info;
	size_t n = 7, len;
	char *snap;

	tmp_path("marks-1", path, sizeof(path));
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 4, &m, &cr, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_PTR_NULL(cr);
	CU_ASSERT_EQUAL_FATAL(poison_marks_claim(m, KEY, &s, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(poison_marks_claim(m, "shardId-2", &s2, &info), KL_OK);
	/* shardId-2's record went through; KEY's did not come back. */
	poison_slot_enter(s2, "777", 0);
	poison_slot_leave(s2);
	poison_slot_enter(s, "12345678901234567890", 4);
	snap = snapshot(path, &len);
	poison_slot_leave(s);
	poison_marks_release(m, s);
	poison_marks_release(m, s2);
	poison_marks_close(m);
	restore(path, snap, len);

	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 4, &m, &cr, &n, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_STRING_EQUAL(cr[0].key, KEY);
	CU_ASSERT_STRING_EQUAL(cr[0].esn.seq, "12345678901234567890");
	CU_ASSERT_EQUAL(cr[0].esn.sub, 4);
	CU_ASSERT_FALSE(cr[0].in_handler);
	free(cr);
	poison_marks_close(m);
	/* Read once: the next start finds a clean file. */
	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 8, &m, &cr, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 0);
	poison_marks_close(m);
}

static void test_marks_lock_and_slots(void)
{
	char path[512];
	struct poison_marks *m = NULL, *m2 = NULL;
	struct poison_crash *cr = NULL;
	struct poison_slot *a = NULL, *b = NULL, *c = NULL;
	struct kl_errinfo info;
	char longkey[POISON_KEY_MAX + 2];
	size_t n;

	tmp_path("marks-2", path, sizeof(path));
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 2, &m, &cr, &n, &info), KL_OK);
	/* A second process on the same state_dir is refused. */
	CU_ASSERT_EQUAL(poison_marks_open(path, 2, &m2, &cr, &n, &info), KL_ESTATE);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "another kinlake process"));
	CU_ASSERT_EQUAL(poison_marks_claim(m, "k1", &a, NULL), KL_OK);
	CU_ASSERT_EQUAL(poison_marks_claim(m, "k2", &b, NULL), KL_OK);
	CU_ASSERT_EQUAL(poison_marks_claim(m, "k3", &c, NULL), KL_ENOSPC);
	memset(longkey, 'x', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	poison_marks_release(m, a);
	CU_ASSERT_EQUAL(poison_marks_claim(m, longkey, &c, NULL), KL_EINVAL);
	CU_ASSERT_EQUAL(poison_marks_claim(m, "k3", &c, NULL), KL_OK);
	CU_ASSERT_PTR_EQUAL(c, a);
	poison_marks_release(m, b);
	poison_marks_release(m, c);
	poison_marks_close(m);
	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 2, &m, &cr, &n, &info), KL_OK);
	poison_marks_close(m);

	/* Not a marks file: nothing learnt, a clean one made. */
	tmp_path("marks-3", path, sizeof(path));
	restore(path, strdup("this is not a marks file, not at all, no no no no no no no no no no no no"), 72);
	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 2, &m, &cr, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 0);
	poison_marks_close(m);
}

/* ------------------------------------------------------------ real crashes */

struct bystander {
	struct poison_marks *m;
	const char *key, *seq;
	int ready_fd;
	uint32_t ahead;                  /* 0, or 1 + the base of an attempt counted ahead */
};

/* In a child: claims a slot, enters a record, says so, waits forever. */
static void *bystander_main(void *arg)
{
	struct bystander *b = arg;
	struct poison_slot *s;

	if (poison_marks_claim(b->m, b->key, &s, NULL) != KL_OK)
		_exit(3);
	if (b->ahead)
		poison_slot_ahead(s, b->seq, 0, b->ahead - 1);
	poison_slot_enter(s, b->seq, 0);
	if (write(b->ready_fd, "r", 1) != 1)
		_exit(4);
	for (;;)
		pause();
	return NULL;
}

enum child_end { END_ABORT, END_WAIT };

/*
 * Forks a child that opens the marks file at path, installs the handler,
 * starts two bystander threads inside the plugin on shard-b/shard-c and
 * enters the plugin on shard-a itself; once all three are inside it tells
 * the parent, then either aborts (END_ABORT: a crash in its own plugin
 * call) or waits to be killed (END_WAIT). Returns the child's pid once
 * all three threads are inside the plugin.
 */
static pid_t crash_child(const char *path, enum child_end end, uint32_t ahead_b)
{
	int p[2];
	pid_t pid;
	char c[3];

	CU_ASSERT_FATAL(pipe(p) == 0);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };
		struct poison_marks *m;
		struct poison_crash *cr;
		struct poison_slot *s;
		struct bystander b1, b2;
		pthread_t t1, t2;
		int q[2];
		size_t n;

		setrlimit(RLIMIT_CORE, &no_core);
		close(p[0]);
		if (pipe(q) != 0 || poison_marks_open(path, 4, &m, &cr, &n, NULL) != KL_OK)
			_exit(2);
		poison_handler_install();
		b1 = (struct bystander){ m, "shard-b", "2002", q[1], ahead_b };
		b2 = (struct bystander){ m, "shard-c", "3003", q[1], 0 };
		if (pthread_create(&t1, NULL, bystander_main, &b1) != 0 ||
		    pthread_create(&t2, NULL, bystander_main, &b2) != 0)
			_exit(5);
		if (poison_marks_claim(m, "shard-a", &s, NULL) != KL_OK)
			_exit(3);
		poison_slot_enter(s, "1001", 0);
		if (read(q[0], c, 1) != 1 || read(q[0], c, 1) != 1 || write(p[1], "rrr", 3) != 3)
			_exit(4);
		if (end == END_ABORT)
			abort();
		for (;;)
			pause();
	}
	close(p[1]);
	CU_ASSERT_FATAL(read(p[0], c, 3) == 3);
	close(p[0]);
	return pid;
}

static size_t reopen_crashes(const char *path, struct poison_crash **ret)
{
	struct poison_marks *m = NULL;
	size_t n = 0;

	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 4, &m, ret, &n, NULL), KL_OK);
	poison_marks_close(m);
	return n;
}

static bool has_crash(const struct poison_crash *cr, size_t n, const char *key, const char *seq)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(cr[i].key, key) == 0 && strcmp(cr[i].esn.seq, seq) == 0)
			return true;
	return false;
}

static void test_handler_names_the_crashing_thread(void)
{
	char path[512];
	struct poison_crash *cr = NULL;
	int status = 0;
	pid_t pid;
	size_t n;

	tmp_path("marks-abort", path, sizeof(path));
	pid = crash_child(path, END_ABORT, 0);
	CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
	CU_ASSERT_TRUE(WIFSIGNALED(status));
	CU_ASSERT_EQUAL(WTERMSIG(status), SIGABRT);
	/* Three threads were inside the plugin; only one crashed in it. */
	n = reopen_crashes(path, &cr);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_STRING_EQUAL(cr[0].key, "shard-a");
	CU_ASSERT_STRING_EQUAL(cr[0].esn.seq, "1001");
	CU_ASSERT_TRUE(cr[0].in_handler);
	free(cr);
}

static void test_no_handler_counts_every_plugin_call(void)
{
	static const int sigs[] = { SIGKILL, SIGABRT };
	char path[512];

	/* kill -9 runs no handler; a SIGABRT from outside (a watchdog) names
	 * no record: both leave every thread inside the plugin suspect. */
	for (size_t k = 0; k < KL_ARRAY_LEN(sigs); k++) {
		struct poison_crash *cr = NULL;
		int status = 0;
		pid_t pid;
		size_t n;

		tmp_path(k ? "marks-extabrt" : "marks-kill", path, sizeof(path));
		pid = crash_child(path, END_WAIT, 0);
		CU_ASSERT_FATAL(kill(pid, sigs[k]) == 0);
		CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
		CU_ASSERT_TRUE(WIFSIGNALED(status));
		CU_ASSERT_EQUAL(WTERMSIG(status), sigs[k]);
		n = reopen_crashes(path, &cr);
		CU_ASSERT_EQUAL(n, 3);
		CU_ASSERT_TRUE(has_crash(cr, n, "shard-a", "1001"));
		CU_ASSERT_TRUE(has_crash(cr, n, "shard-b", "2002"));
		CU_ASSERT_TRUE(has_crash(cr, n, "shard-c", "3003"));
		for (size_t i = 0; i < n; i++)
			CU_ASSERT_FALSE(cr[i].in_handler);
		free(cr);
	}
}

/* Thread b was retrying 2002 (1 crash before, counted ahead as 2) when
 * thread a crashed on 1001: b's attempt is taken back, a's counted. */
static void test_attempt_ahead_taken_back(void)
{
	char path[512];
	struct lease_mem_table *t = lease_mem_table_new();
	struct lease_store *st = lease_store_mem_new(t, NULL);
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct esn b = esn_of("2002", 0);
	struct journal *j = open_journal("j-ahead.db");
	struct poison_crash *cr = NULL;
	struct poison_table pt;
	uint32_t mine = 0, n_b = 99;
	int status = 0;
	pid_t pid;
	size_t n;

	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	put_lease(t, &th);
	tmp_path("marks-ahead", path, sizeof(path));
	pid = crash_child(path, END_ABORT, 1 + 1);
	CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
	CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
	n = reopen_crashes(path, &cr);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(cr[i].key, "shard-a") == 0) {
			CU_ASSERT_TRUE(cr[i].crashed && cr[i].in_handler && !cr[i].ahead);
		} else {
			CU_ASSERT_STRING_EQUAL(cr[i].key, "shard-b");
			CU_ASSERT_TRUE(!cr[i].crashed && cr[i].ahead);
			CU_ASSERT_EQUAL(cr[i].ahead_base, 1);
			/* Published under KEY: the lease this test has. */
			snprintf(cr[i].key, sizeof(cr[i].key), "%s", KEY);
		}
	}
	/* The lease says 2 for w1 (the attempt counted ahead), the journal 1
	 * (shard-a's crash goes to a lease this table lacks: logged). */
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &b, 2, false, NULL), KL_OK);
	CU_ASSERT_EQUAL(journal_crash_bump(j, KEY, &b, NULL, NULL), KL_OK);
	poison_count_crashes(j, cr, n, 3);
	poison_publish_crashes(st, "w1", cr, n);
	CU_ASSERT_EQUAL(journal_crash_get(j, KEY, &b, &n_b, NULL), KL_OK);
	CU_ASSERT_EQUAL(n_b, 1);
	lease_table(t, &pt, NULL);
	CU_ASSERT_EQUAL(poison_table_count(&pt, &b, "w1", &mine), 1);
	CU_ASSERT_EQUAL(mine, 1);
	poison_table_done(&pt);
	free(cr);
	journal_close(j);
	lease_store_free(st);
	lease_mem_table_free(t);
}

/* ------------------------------------------------------------ the lease attribute */

#define ATTR_V1 "{\"S\":\"{\\\"v\\\":1,\\\"crashes\\\":[{\\\"seq\\\":\\\"1001\\\",\\\"sub\\\":0," \
		"\\\"by\\\":{\\\"w1\\\":2,\\\"w2\\\":1}}]}\"}"

static void test_table_codec(void)
{
	static const char *const bad[] = {
		"{\"N\":\"1\"}",
		"{\"S\":\"{\\\"v\\\":2,\\\"crashes\\\":[]}\"}",
		"{\"S\":\"{\\\"v\\\":1}\"}",
		"{\"S\":\"{\\\"v\\\":1,\\\"crashes\\\":[{\\\"seq\\\":\\\"12x\\\",\\\"sub\\\":0,\\\"by\\\":{}}]}\"}",
		"{\"S\":\"{\\\"v\\\":1,\\\"crashes\\\":[{\\\"seq\\\":\\\"1\\\",\\\"sub\\\":0,\\\"by\\\":{\\\"w\\\":0}}]}\"}",
		"{\"S\":\"{\\\"v\\\":1,\\\"crashes\\\":[{\\\"seq\\\":\\\"1\\\",\\\"sub\\\":0,\\\"by\\\":{}},"
		"{\\\"seq\\\":\\\"01\\\",\\\"sub\\\":0,\\\"by\\\":{}}]}\"}",
		"not json",
	};
	struct poison_table t;
	struct esn e = esn_of("1001", 0), other = esn_of("1001", 1);
	uint32_t mine = 0;
	char *text = NULL;

	CU_ASSERT_EQUAL(poison_table_decode(NULL, &t, NULL), KL_OK);
	CU_ASSERT_EQUAL(t.n, 0);
	CU_ASSERT_EQUAL(poison_table_encode(&t, &text), KL_OK);
	CU_ASSERT_PTR_NULL(text);
	/* Workers in any order in; sorted out. */
	CU_ASSERT_EQUAL_FATAL(poison_table_decode("{\"S\":\"{\\\"v\\\":1,\\\"crashes\\\":[{\\\"seq\\\":"
						  "\\\"1001\\\",\\\"sub\\\":0,\\\"by\\\":{\\\"w2\\\":1,"
						  "\\\"w1\\\":2}}]}\"}", &t, NULL), KL_OK);
	CU_ASSERT_EQUAL(poison_table_count(&t, &e, "w1", &mine), 3);
	CU_ASSERT_EQUAL(mine, 2);
	CU_ASSERT_EQUAL(poison_table_count(&t, &e, "w3", &mine), 3);
	CU_ASSERT_EQUAL(mine, 0);
	CU_ASSERT_EQUAL(poison_table_count(&t, &other, NULL, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(poison_table_encode(&t, &text), KL_OK);
	CU_ASSERT_STRING_EQUAL(text, ATTR_V1);
	poison_table_done(&t);
	free(text);
	for (size_t i = 0; i < KL_ARRAY_LEN(bad); i++) {
		struct kl_errinfo info;

		kl_errinfo_clear(&info);
		CU_ASSERT_EQUAL(poison_table_decode(bad[i], &t, &info), KL_EPARSE);
	}
}

static void test_publish_merges_once(void)
{
	struct lease_mem_table *t = lease_mem_table_new();
	struct lease_store *st = lease_store_mem_new(t, NULL);
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct lease_mem_faults f;
	struct esn p = esn_of("1001", 0), q = esn_of("2001", 0);
	struct kl_errinfo info;
	uint64_t counter = 0;
	struct poison_table pt;
	struct lease l;
	uint32_t mine;

	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	put_lease(t, &th);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(poison_publish(st, "nope", "w1", &p, 1, false, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &p, 1, false, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", "w1", &mine), 1);
	/* The same news again changes nothing; no counter bump ever. */
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &p, 1, false, &info), KL_OK);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w2", &p, 1, false, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", "w1", &mine), 2);
	lease_table(t, &pt, &counter);
	poison_table_done(&pt);
	CU_ASSERT_EQUAL(counter, 5);
	/* The write lands but the reply is lost: retried, counted once. */
	memset(&f, 0, sizeof(f));
	f.lost_reply_next = 1;
	lease_store_mem_set_faults(st, &f);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &p, 2, false, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", "w1", &mine), 3);
	CU_ASSERT_EQUAL(mine, 2);
	/* A client retry whose first try landed says "conditional check
	 * failed": re-read, nothing left to do. */
	f.lost_reply_next = 0;
	f.ghost_conflict_next = 1;
	lease_store_mem_set_faults(st, &f);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w2", &p, 3, false, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", "w2", &mine), 5);
	CU_ASSERT_EQUAL(mine, 3);
	/* Lower news never lowers a count... */
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &p, 1, false, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", NULL, NULL), 5);
	/* ... unless the worker sets its own count exactly (an attempt
	 * counted ahead taken back); 0 removes it. */
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &p, 1, true, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", "w2", &mine), 4);
	CU_ASSERT_EQUAL(mine, 3);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &p, 0, true, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", "w1", &mine), 3);
	CU_ASSERT_EQUAL(mine, 0);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w2", &p, 0, true, &info), KL_OK);
	CU_ASSERT_FALSE(lease_has_attr(t));
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w2", &p, 2, true, &info), KL_OK);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &p, 1, true, &info), KL_OK);
	CU_ASSERT_EQUAL(lease_count(t, "1001", NULL, NULL), 3);
	/* The checkpoint passed 1001: its entry goes with the next write. */
	{
		struct lease_esn cp = seq_cp("1500");

		put_lease(t, &cp);
	}
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &q, 1, false, &info), KL_OK);
	lease_table(t, &pt, &counter);
	CU_ASSERT_EQUAL(pt.n, 1);
	CU_ASSERT_EQUAL(poison_table_count(&pt, &q, NULL, NULL), 1);
	CU_ASSERT_EQUAL(poison_table_count(&pt, &p, NULL, NULL), 0);
	poison_table_done(&pt);
	/* A value we do not understand is left as it is. */
	CU_ASSERT_EQUAL_FATAL(lease_mem_table_read(t, KEY, &l), KL_OK);
	CU_ASSERT_EQUAL(lease_set_extra(&l, POISON_LEASE_ATTR, "{\"S\":\"{\\\"v\\\":2}\"}"), KL_OK);
	CU_ASSERT_EQUAL(lease_mem_table_put(t, &l), KL_OK);
	lease_done(&l);
	CU_ASSERT_EQUAL(poison_publish(st, KEY, "w1", &q, 4, false, &info), KL_EPARSE);
	CU_ASSERT_EQUAL_FATAL(lease_mem_table_read(t, KEY, &l), KL_OK);
	CU_ASSERT_STRING_EQUAL(lease_get_extra(&l, POISON_LEASE_ATTR), "{\"S\":\"{\\\"v\\\":2}\"}");
	lease_done(&l);
	/* Only kinlake's own attributes. */
	CU_ASSERT_EQUAL(lease_store_set_extra(st, KEY, LEASE_ATTR_OWNER, NULL, "{\"S\":\"x\"}", NULL),
			KL_EINVAL);
	CU_ASSERT_EQUAL(lease_store_set_extra(st, KEY, LEASE_ATTR_SESSION, NULL, "{\"S\":\"x\"}", NULL),
			KL_EINVAL);
	CU_ASSERT_EQUAL(lease_store_set_extra(st, KEY, "kinlake", NULL, "{\"S\":\"x\"}", NULL),
			KL_EINVAL);
	/* set_extra's own condition. */
	CU_ASSERT_EQUAL(lease_store_set_extra(st, KEY, "kinlakeTest", "{\"S\":\"a\"}", "{\"S\":\"b\"}",
					      NULL), KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_set_extra(st, KEY, "kinlakeTest", NULL, "{\"S\":\"a\"}", NULL), KL_OK);
	CU_ASSERT_EQUAL(lease_store_set_extra(st, KEY, "kinlakeTest", NULL, "{\"S\":\"b\"}", NULL),
			KL_ECONFLICT);
	CU_ASSERT_EQUAL(lease_store_set_extra(st, KEY, "kinlakeTest", "{\"S\":\"a\"}", NULL, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(lease_mem_table_read(t, KEY, &l), KL_OK);
	CU_ASSERT_PTR_NULL(lease_get_extra(&l, "kinlakeTest"));
	CU_ASSERT_EQUAL(l.counter, 5);
	lease_done(&l);
	lease_store_free(st);
	lease_mem_table_free(t);
}

static void check_body(const struct lease_ddb_req *r, const char *want)
{
	json_object *w = json_tokener_parse(want);

	CU_ASSERT_PTR_NOT_NULL_FATAL(w);
	CU_ASSERT_STRING_EQUAL(r->operation, "UpdateItem");
	if (!json_object_equal(w, r->body))
		fprintf(stderr, "\n  expected %s\n  got      %s\n",
			json_object_to_json_string_ext(w, JSON_C_TO_STRING_PLAIN),
			json_object_to_json_string_ext(r->body, JSON_C_TO_STRING_PLAIN));
	CU_ASSERT_TRUE(json_object_equal(w, r->body));
	json_object_put(w);
}

static void test_ddb_request(void)
{
	struct lease_ddb_req r = { NULL, NULL };

	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_set_extra("app", KEY, POISON_LEASE_ATTR, "{\"S\":\"old\"}",
						      "{\"S\":\"new\"}", &r), KL_OK);
	check_body(&r, "{\"TableName\":\"app\",\"Key\":{\"leaseKey\":{\"S\":\"" KEY "\"}},"
		       "\"UpdateExpression\":\"SET #x = :v\","
		       "\"ConditionExpression\":\"attribute_exists(#lk) AND "
		       "(attribute_not_exists(#et) OR #et = :lease) AND #x = :old\","
		       "\"ExpressionAttributeNames\":{\"#x\":\"kinlakeCrashes\",\"#lk\":\"leaseKey\","
		       "\"#et\":\"entityType\"},"
		       "\"ExpressionAttributeValues\":{\":v\":{\"S\":\"new\"},\":lease\":{\"S\":\"LEASE\"},"
		       "\":old\":{\"S\":\"old\"}}}");
	lease_ddb_req_done(&r);
	CU_ASSERT_EQUAL_FATAL(lease_ddb_req_set_extra("app", KEY, POISON_LEASE_ATTR, NULL, NULL, &r),
			      KL_OK);
	check_body(&r, "{\"TableName\":\"app\",\"Key\":{\"leaseKey\":{\"S\":\"" KEY "\"}},"
		       "\"UpdateExpression\":\"REMOVE #x\","
		       "\"ConditionExpression\":\"attribute_exists(#lk) AND "
		       "(attribute_not_exists(#et) OR #et = :lease) AND attribute_not_exists(#x)\","
		       "\"ExpressionAttributeNames\":{\"#x\":\"kinlakeCrashes\",\"#lk\":\"leaseKey\","
		       "\"#et\":\"entityType\"},"
		       "\"ExpressionAttributeValues\":{\":lease\":{\"S\":\"LEASE\"}}}");
	lease_ddb_req_done(&r);
	CU_ASSERT_EQUAL(lease_ddb_req_set_extra("app", KEY, LEASE_ATTR_COUNTER, NULL, "{\"N\":\"1\"}", &r),
			KL_EINVAL);
	CU_ASSERT_EQUAL(lease_ddb_req_set_extra("app", KEY, POISON_LEASE_ATTR, NULL, "nope", &r),
			KL_EINVAL);
	CU_ASSERT_EQUAL(lease_ddb_req_set_extra("app", KEY, POISON_LEASE_ATTR, "[1]", NULL, &r),
			KL_EINVAL);
}

/* ------------------------------------------------------------ the journal's list */

static void test_journal_crash_list(void)
{
	struct journal *j = open_journal("j-list.db");
	struct journal_crash *list = NULL;
	struct esn other = esn_of("5", 0);
	size_t n = 9;

	CU_ASSERT_EQUAL(journal_crash_list(j, KEY, &list, &n, NULL), KL_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_PTR_NULL(list);
	CU_ASSERT_EQUAL(journal_crash_list(j, NULL, &list, &n, NULL), KL_EINVAL);
	/* In ESN order, not text order ("1000" < "999" as text). */
	journal_bump(j, "1000", 1);
	journal_bump(j, "999", 2);
	CU_ASSERT_EQUAL(journal_crash_bump(j, "shardId-other", &other, NULL, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(journal_crash_list(j, KEY, &list, &n, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	CU_ASSERT_STRING_EQUAL(list[0].esn.seq, "999");
	CU_ASSERT_EQUAL(list[0].count, 2);
	CU_ASSERT_STRING_EQUAL(list[1].esn.seq, "1000");
	CU_ASSERT_EQUAL(list[1].count, 1);
	free(list);
	journal_close(j);
}

/* ------------------------------------------------------------ the guard */

struct env {
	struct lease_mem_table *table;
	struct lease_store *store;
	struct journal *j;
};

static void env_init(struct env *e, const char *journal_name, const struct lease_esn *cp)
{
	e->table = lease_mem_table_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(e->table);
	e->store = lease_store_mem_new(e->table, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e->store);
	put_lease(e->table, cp);
	e->j = open_journal(journal_name);
}

static void env_done(struct env *e)
{
	lease_store_free(e->store);
	lease_mem_table_free(e->table);
	journal_close(e->j);
}

static struct poison_guard *guard_for(struct env *e, struct journal *j, const char *worker,
				      struct poison_marks *marks, struct lease_esn cp,
				      struct consumer_guard *ret_cg)
{
	struct poison_guard_config pc;
	struct poison_guard *g = NULL;

	memset(&pc, 0, sizeof(pc));
	pc.key = KEY;
	pc.worker_id = worker;
	pc.max_crashes = 3;
	pc.journal = j;
	pc.store = e ? e->store : NULL;
	pc.marks = marks;
	pc.checkpoint = cp;
	CU_ASSERT_EQUAL_FATAL(poison_guard_new(&pc, &g, NULL), KL_OK);
	poison_guard_consumer(g, ret_cg);
	return g;
}

static enum consumer_guard_verdict before(struct consumer_guard *cg, const char *seq,
					  uint32_t *ret_attempts)
{
	struct kl_transform_record r = rec_of(seq, 0);

	*ret_attempts = 0;
	return cg->ops->before(cg->ctx, &r, ret_attempts);
}

static void after(struct consumer_guard *cg, const char *seq)
{
	struct kl_transform_record r = rec_of(seq, 0);

	cg->ops->after(cg->ctx, &r);
}

static void test_guard_routes_at_the_limit(void)
{
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct esn p = esn_of("1001", 0);
	struct poison_guard_stats gs;
	struct consumer_guard cg;
	struct poison_guard *g;
	struct env e;
	uint32_t attempts, mine;

	env_init(&e, "j-route.db", &th);
	/* One crash here (w1), two elsewhere (w2). */
	journal_bump(e.j, "1001", 1);
	CU_ASSERT_EQUAL(poison_publish(e.store, KEY, "w2", &p, 2, false, NULL), KL_OK);
	g = guard_for(&e, e.j, "w1", NULL, th, &cg);
	CU_ASSERT_EQUAL(before(&cg, "999", &attempts), CONSUMER_GUARD_RUN);
	after(&cg, "999");
	/* Loaded at the first record: this host's crash is now in the lease. */
	CU_ASSERT_EQUAL(lease_count(e.table, "1001", "w1", &mine), 3);
	CU_ASSERT_EQUAL(mine, 1);
	CU_ASSERT_EQUAL(before(&cg, "1001", &attempts), CONSUMER_GUARD_CRASHED);
	CU_ASSERT_EQUAL(attempts, 3);
	CU_ASSERT_EQUAL(before(&cg, "1002", &attempts), CONSUMER_GUARD_RUN);
	after(&cg, "1002");
	poison_guard_get_stats(g, &gs);
	CU_ASSERT_EQUAL(gs.suspects, 1);
	CU_ASSERT_EQUAL(gs.routed, 1);
	CU_ASSERT_EQUAL(gs.retried, 0);
	CU_ASSERT_EQUAL(gs.lease_errors, 0);
	/* Routed, not passed: the counts stay until the checkpoint passes. */
	CU_ASSERT_EQUAL(journal_count(e.j, "1001", 0), 1);
	CU_ASSERT_EQUAL(lease_count(e.table, "1001", NULL, NULL), 3);
	poison_guard_free(g);
	env_done(&e);
}

static void test_guard_retries_then_clears(void)
{
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct poison_guard_stats gs;
	struct consumer_guard cg;
	struct poison_guard *g;
	struct env e;
	uint32_t attempts, mine;

	env_init(&e, "j-retry.db", &th);
	journal_bump(e.j, "1001", 1);
	g = guard_for(&e, e.j, "w1", NULL, th, &cg);
	CU_ASSERT_EQUAL(before(&cg, "1001", &attempts), CONSUMER_GUARD_RUN);
	/* Counted ahead: if this attempt crashes, the next owner knows. */
	CU_ASSERT_EQUAL(lease_count(e.table, "1001", "w1", &mine), 2);
	CU_ASSERT_EQUAL(mine, 2);
	CU_ASSERT_EQUAL(journal_count(e.j, "1001", 0), 1);
	after(&cg, "1001");
	CU_ASSERT_EQUAL(journal_count(e.j, "1001", 0), 0);
	CU_ASSERT_FALSE(lease_has_attr(e.table));
	poison_guard_get_stats(g, &gs);
	CU_ASSERT_EQUAL(gs.retried, 1);
	CU_ASSERT_EQUAL(gs.passed, 1);
	CU_ASSERT_EQUAL(gs.routed, 0);
	poison_guard_free(g);
	env_done(&e);
}

static void test_guard_forgets_what_is_done(void)
{
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON), cp = seq_cp("2000");
	struct esn p = esn_of("1001", 0), r = esn_of("3000", 0);
	struct consumer_guard cg;
	struct poison_guard *g;
	struct poison_table pt;
	struct env e;
	uint32_t attempts;

	env_init(&e, "j-done.db", &th);
	journal_bump(e.j, "1001", 2);
	journal_bump(e.j, "3000", 1);
	CU_ASSERT_EQUAL(poison_publish(e.store, KEY, "w2", &p, 1, false, NULL), KL_OK);
	CU_ASSERT_EQUAL(poison_publish(e.store, KEY, "w2", &r, 1, false, NULL), KL_OK);
	/* Someone committed past 1001 since the grant was made. */
	put_lease(e.table, &cp);
	g = guard_for(&e, e.j, "w1", NULL, th, &cg);
	CU_ASSERT_EQUAL(before(&cg, "2500", &attempts), CONSUMER_GUARD_RUN);
	after(&cg, "2500");
	CU_ASSERT_EQUAL(journal_count(e.j, "1001", 0), 0);
	CU_ASSERT_EQUAL(journal_count(e.j, "3000", 0), 1);
	lease_table(e.table, &pt, NULL);
	CU_ASSERT_EQUAL(pt.n, 1);
	CU_ASSERT_EQUAL(poison_table_count(&pt, &r, NULL, NULL), 2);
	poison_table_done(&pt);
	/* 2 so far: one more try, counted ahead (w1 1 -> 2). */
	CU_ASSERT_EQUAL(before(&cg, "3000", &attempts), CONSUMER_GUARD_RUN);
	CU_ASSERT_EQUAL(lease_count(e.table, "3000", NULL, NULL), 3);
	poison_guard_free(g);
	env_done(&e);
}

static void test_guard_without_the_lease(void)
{
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct lease_mem_faults f;
	struct poison_guard_stats gs;
	struct consumer_guard cg;
	struct poison_guard *g;
	struct env e;
	uint32_t attempts;

	env_init(&e, "j-nolease.db", &th);
	journal_bump(e.j, "1001", 3);
	journal_bump(e.j, "1005", 1);
	memset(&f, 0, sizeof(f));
	f.partitioned = true;
	lease_store_mem_set_faults(e.store, &f);
	g = guard_for(&e, e.j, "w1", NULL, th, &cg);
	CU_ASSERT_EQUAL(before(&cg, "1001", &attempts), CONSUMER_GUARD_CRASHED);
	CU_ASSERT_EQUAL(attempts, 3);
	CU_ASSERT_EQUAL(before(&cg, "1005", &attempts), CONSUMER_GUARD_RUN);
	after(&cg, "1005");
	CU_ASSERT_EQUAL(journal_count(e.j, "1005", 0), 0);
	poison_guard_get_stats(g, &gs);
	CU_ASSERT(gs.lease_errors >= 3);  /* load, the try ahead, the clear */
	CU_ASSERT_EQUAL(gs.routed, 1);
	CU_ASSERT_EQUAL(gs.passed, 1);
	poison_guard_free(g);
	/* Nor without any store. */
	g = guard_for(NULL, e.j, "w1", NULL, th, &cg);
	CU_ASSERT_EQUAL(before(&cg, "1001", &attempts), CONSUMER_GUARD_CRASHED);
	poison_guard_free(g);
	env_done(&e);
}

/*
 * One start of a worker up to the record at seq: the marks of its last
 * run are counted and published, the guard decides. RUN means the
 * plugin "crashed" on it: the marks file is put back as it was at that
 * moment. Returns the verdict (attempts in *ret_attempts).
 */
static enum consumer_guard_verdict run_once(struct env *e, struct journal *j, const char *worker,
					    const char *marks_name, const char *seq,
					    uint32_t *ret_attempts)
{
	char path[512];
	struct poison_marks *m = NULL;
	struct poison_crash *cr = NULL;
	struct consumer_guard cg;
	struct poison_guard *g;
	enum consumer_guard_verdict v;
	char *snap = NULL;
	size_t n = 0, len = 0;

	tmp_path(marks_name, path, sizeof(path));
	CU_ASSERT_EQUAL_FATAL(poison_marks_open(path, 4, &m, &cr, &n, NULL), KL_OK);
	poison_count_crashes(j, cr, n, 3);
	poison_publish_crashes(e->store, worker, cr, n);
	free(cr);
	g = guard_for(e, j, worker, m, lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON), &cg);
	v = before(&cg, seq, ret_attempts);
	if (v == CONSUMER_GUARD_RUN)
		snap = snapshot(path, &len);
	poison_guard_free(g);
	poison_marks_close(m);
	if (snap)
		restore(path, snap, len);
	return v;
}

static void test_restarts_across_two_workers(void)
{
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct journal *jb;
	struct env e;
	uint32_t attempts = 0, mine = 0;

	env_init(&e, "j-cycle-a.db", &th);
	jb = open_journal("j-cycle-b.db");
	/* Worker a dies on 1001 twice. */
	CU_ASSERT_EQUAL(run_once(&e, e.j, "a", "marks-a", "1001", &attempts), CONSUMER_GUARD_RUN);
	CU_ASSERT_FALSE(lease_has_attr(e.table));  /* a first crash is known only after a restart */
	CU_ASSERT_EQUAL(run_once(&e, e.j, "a", "marks-a", "1001", &attempts), CONSUMER_GUARD_RUN);
	CU_ASSERT_EQUAL(journal_count(e.j, "1001", 0), 1);
	CU_ASSERT_EQUAL(lease_count(e.table, "1001", "a", &mine), 2);
	/* a never comes back; b (its own journal and marks) takes over and
	 * counts on from 2: one more try, counted ahead. */
	CU_ASSERT_EQUAL(run_once(&e, jb, "b", "marks-b", "1001", &attempts), CONSUMER_GUARD_RUN);
	CU_ASSERT_EQUAL(lease_count(e.table, "1001", "b", &mine), 3);
	CU_ASSERT_EQUAL(mine, 1);
	/* Three crashes in all: b's restart sends it to the error output. */
	CU_ASSERT_EQUAL(run_once(&e, jb, "b", "marks-b", "1001", &attempts), CONSUMER_GUARD_CRASHED);
	CU_ASSERT_EQUAL(attempts, 3);
	CU_ASSERT_EQUAL(journal_count(jb, "1001", 0), 1);
	/* a, back after all, agrees (its journal says 2: no double count). */
	CU_ASSERT_EQUAL(run_once(&e, e.j, "a", "marks-a", "1001", &attempts), CONSUMER_GUARD_CRASHED);
	CU_ASSERT_EQUAL(attempts, 3);
	CU_ASSERT_EQUAL(journal_count(e.j, "1001", 0), 2);
	CU_ASSERT_EQUAL(lease_count(e.table, "1001", NULL, NULL), 3);
	journal_close(jb);
	env_done(&e);
}

/* ------------------------------------------------------------ inside a consumer */

static int64_t fake_now;

static int64_t fc_mono(void *ctx)
{
	(void)ctx;
	return fake_now;
}

static void fc_sleep(void *ctx, int64_t ms)
{
	(void)ctx;
	fake_now += ms > 0 ? ms : 1;
}

static void fc_wake(void *ctx)
{
	(void)ctx;
}

static const struct consumer_clock fake_clock = { fc_mono, fc_sleep, fc_wake, NULL };

static struct {
	int pages_served;
	char log[1024];
	int refuse_crashed;              /* refuse this many push_crashed() calls */
} fk;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	size_t used = strlen(fk.log);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fk.log + used, sizeof(fk.log) - used, fmt, ap);
	va_end(ap);
}

static enum kl_err fk_iter(void *ctx, const char *shard_id, const struct kinesis_position *pos,
			   char **ret_iterator, struct kl_errinfo *info)
{
	(void)ctx;
	(void)shard_id;
	(void)pos;
	(void)info;
	*ret_iterator = strdup("it");
	return *ret_iterator ? KL_OK : KL_ENOMEM;
}

static void add_record(struct buf *b, const char *seq, const char *data, bool first)
{
	char b64[256];

	kl_b64_encode((const uint8_t *)data, strlen(data), b64);
	CU_ASSERT_EQUAL(buf_printf(b, "%s{\"SequenceNumber\":\"%s\",\"ApproximateArrivalTimestamp\":"
				   "1735787045.123,\"Data\":\"%s\",\"PartitionKey\":\"k\"}",
				   first ? "" : ",", seq, b64), KL_OK);
}

/* Page 1: four records, the third the fixture's crash marker. Then the
 * shard's end with one child. */
static enum kl_err fk_records(void *ctx, const char *iterator, int limit,
			      struct kinesis_records **ret, struct kl_errinfo *info)
{
	static const char end[] =
		"{\"Records\":[],\"MillisBehindLatest\":0,\"ChildShards\":[{\"ShardId\":"
		"\"shardId-000000000009\",\"ParentShards\":[\"" KEY "\"],"
		"\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"1\"}}]}";
	struct buf b;
	enum kl_err err;

	(void)ctx;
	(void)iterator;
	(void)limit;
	if (fk.pages_served++)
		return kinesis_parse_get_records(end, sizeof(end) - 1, ret, info);
	buf_init(&b, 1 << 20);
	CU_ASSERT_EQUAL(buf_append_str(&b, "{\"Records\":["), KL_OK);
	add_record(&b, "100", "{\"n\":100}", true);
	add_record(&b, "101", "{\"n\":101}", false);
	add_record(&b, "102", "{\"n\":102,\"x\":\"CRASH_ABORT\"}", false);
	add_record(&b, "103", "{\"n\":103}", false);
	CU_ASSERT_EQUAL(buf_append_str(&b, "],\"NextShardIterator\":\"it2\",\"MillisBehindLatest\":0}"),
			KL_OK);
	err = kinesis_parse_get_records(b.data, b.len, ret, info);
	buf_done(&b);
	return err;
}

static enum kl_err fk_children(void *ctx, const char *shard_id, struct lease_shard_list *ret,
			       struct kl_errinfo *info)
{
	(void)ctx;
	(void)shard_id;
	(void)ret;
	(void)info;
	return KL_OK;
}

static const struct consumer_kinesis_ops fk_ops = {
	.get_shard_iterator = fk_iter,
	.get_records = fk_records,
	.list_children = fk_children,
};

static enum kl_err fl_check(void *ctx, const char *key, uint64_t token, int64_t *ret_valid_until_ms)
{
	(void)ctx;
	(void)key;
	(void)token;
	*ret_valid_until_ms = INT64_MAX;
	return KL_OK;
}

static enum kl_err fl_shard_end(void *ctx, const char *key, uint64_t token,
				const struct lease_shard *children, size_t n, struct kl_errinfo *info)
{
	(void)ctx;
	(void)key;
	(void)token;
	(void)children;
	(void)info;
	logf_("END%zu", n);
	return KL_OK;
}

static const struct consumer_lease_ops fl_ops = { .check = fl_check, .shard_end = fl_shard_end };

static enum kl_err ts_push(void *ctx, const struct kl_transform_record *rec,
			   const struct xform_result *res, struct kl_errinfo *info)
{
	(void)ctx;
	(void)info;
	CU_ASSERT_EQUAL(res->result, KL_TRANSFORM_OK);
	logf_("P%s,", rec->sequence_number);
	return KL_OK;
}

static enum kl_err ts_push_crashed(void *ctx, const struct kl_transform_record *rec,
				   uint32_t attempts, struct kl_errinfo *info)
{
	(void)ctx;
	CU_ASSERT_PTR_NOT_NULL(memmem(rec->data, rec->len, "CRASH_ABORT", 11));
	if (fk.refuse_crashed > 0) {
		fk.refuse_crashed--;
		logf_("R%s,", rec->sequence_number);
		return kl_errinfo_set(info, KL_ETHROTTLED, "busy");
	}
	logf_("C%s:%" PRIu32 ",", rec->sequence_number, attempts);
	return KL_OK;
}

static bool ts_blocked(void *ctx)
{
	(void)ctx;
	return false;
}

static enum kl_err ts_tick(void *ctx, int64_t now, struct kl_errinfo *info)
{
	(void)ctx;
	(void)now;
	(void)info;
	return KL_OK;
}

static enum kl_err ts_flush(void *ctx, struct kl_errinfo *info)
{
	(void)ctx;
	(void)info;
	logf_("F,");
	return KL_OK;
}

static void ts_abandon(void *ctx)
{
	(void)ctx;
}

static void ts_resume(void *ctx, struct lease_esn *ret)
{
	(void)ctx;
	*ret = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
}

static const struct record_sink_ops ts_ops = {
	.push = ts_push,
	.blocked = ts_blocked,
	.tick = ts_tick,
	.flush = ts_flush,
	.abandon = ts_abandon,
	.resume_after = ts_resume,
	.push_crashed = ts_push_crashed,
};

/* The fixture plugin, copied where the loader accepts it. */
static struct xform_plugin *load_fx_crash(void)
{
	char src[4096], dst[600], chunk[65536];
	struct xform_plugin *p = NULL;
	struct kl_errinfo info;
	int in, out;
	ssize_t n;

	snprintf(src, sizeof(src), "%s/tests/fixtures/plugins/.libs/fx_crash.so", KL_TEST_BUILDDIR);
	tmp_path("fx_crash.so", dst, sizeof(dst));
	in = open(src, O_RDONLY);
	if (in < 0)
		fprintf(stderr, "\ncannot open %s: %s (build the fixtures first)\n", src, strerror(errno));
	CU_ASSERT_FATAL(in >= 0);
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	CU_ASSERT_FATAL(out >= 0);
	while ((n = read(in, chunk, sizeof(chunk))) > 0)
		CU_ASSERT_FATAL(write(out, chunk, (size_t)n) == n);
	close(in);
	close(out);
	CU_ASSERT_FATAL(chmod(dst, 0755) == 0);
	kl_errinfo_clear(&info);
	if (xform_plugin_load(dst, NULL, &info, &p) != KL_OK)
		fprintf(stderr, "\nxform_plugin_load: %s\n", info.message);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	return p;
}

static void test_guard_in_a_consumer(void)
{
	struct lease_esn th = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	struct xform_plugin *plugin = load_fx_crash();
	struct record_sink_ops no_crashed = ts_ops;
	struct consumer_config cfg;
	struct consumer_deps deps;
	struct consumer_metrics cm;
	struct poison_guard_stats gs;
	struct kl_errinfo info;
	struct consumer *c = NULL;
	struct xform *x = NULL;
	struct poison_guard *g;
	struct journal *j = open_journal("j-consumer.db");

	CU_ASSERT_EQUAL_FATAL(xform_new(plugin, NULL, &info, &x), KL_OK);
	journal_bump(j, "102", 3);
	memset(&fk, 0, sizeof(fk));
	fk.refuse_crashed = 1;
	fake_now = T0;
	memset(&cfg, 0, sizeof(cfg));
	cfg.shard_id = KEY;
	cfg.lease_token = 1;
	cfg.checkpoint = th;
	cfg.seed = 1;
	memset(&deps, 0, sizeof(deps));
	deps.kinesis.ops = &fk_ops;
	deps.lease.ops = &fl_ops;
	deps.sink.ops = &ts_ops;
	deps.xform = x;
	deps.clock = &fake_clock;
	g = guard_for(NULL, j, "w1", NULL, th, &deps.guard);
	/* A guard needs a sink that can take crashed records. */
	no_crashed.push_crashed = NULL;
	deps.sink.ops = &no_crashed;
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(consumer_new(&cfg, &deps, &c, &info), KL_EINVAL);
	deps.sink.ops = &ts_ops;
	CU_ASSERT_EQUAL_FATAL(consumer_new(&cfg, &deps, &c, &info), KL_OK);
	/* 102 would abort this process if the plugin saw it. */
	CU_ASSERT_EQUAL(consumer_run(c), CONSUMER_DONE);
	CU_ASSERT_STRING_EQUAL(fk.log, "P100,P101,R102,C102:3,P103,F,END1");
	consumer_get_metrics(c, &cm);
	CU_ASSERT_EQUAL(cm.plugin_crashed, 1);
	CU_ASSERT_EQUAL(cm.plugin_ok, 3);
	CU_ASSERT_EQUAL(cm.pushed, 4);
	CU_ASSERT_EQUAL(cm.push_retries, 1);
	poison_guard_get_stats(g, &gs);
	CU_ASSERT_EQUAL(gs.routed, 1);  /* asked once, offered twice */
	consumer_free(c);
	poison_guard_free(g);
	xform_free(x);
	xform_plugin_free(plugin);
	journal_close(j);
}

/* ------------------------------------------------------------ main */

static void cleanup(void)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_marks_survive_a_crash),
		KL_TEST(test_marks_lock_and_slots),
		KL_TEST(test_handler_names_the_crashing_thread),
		KL_TEST(test_no_handler_counts_every_plugin_call),
		KL_TEST(test_attempt_ahead_taken_back),
		KL_TEST(test_table_codec),
		KL_TEST(test_publish_merges_once),
		KL_TEST(test_ddb_request),
		KL_TEST(test_journal_crash_list),
		KL_TEST(test_guard_routes_at_the_limit),
		KL_TEST(test_guard_retries_then_clears),
		KL_TEST(test_guard_forgets_what_is_done),
		KL_TEST(test_guard_without_the_lease),
		KL_TEST(test_restarts_across_two_workers),
		KL_TEST(test_guard_in_a_consumer),
		{ NULL, NULL },
	};
	int rc;

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	rc = kl_test_run("poison", t);
	cleanup();
	return rc;
}
