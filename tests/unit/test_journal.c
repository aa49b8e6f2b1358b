/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_journal.c: the SQLite recovery journal: intent -> uploaded ->
 * committed, restart keeps pending intents, replacement of a rebuilt
 * batch, pruning, crash counters, schema versions and migration, corrupt
 * and foreign files moved aside, waiting for a busy database, and
 * concurrent callers. Each test uses its own temp dir.
 */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "esn.h"
#include "journal.h"
#include "kl_err.h"
#include "testutil.h"
#include "util.h"

#define SEQ_A "49590338271490256608559692538361571095921575989136588898"
#define SEQ_B "49590338271490256608559692540925702759324208523137515618"
#define SEQ_C "49590338271490256608559692540925702759324208523137515999"

static char *make_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[512];
	char *d;

	snprintf(tmpl, sizeof(tmpl), "%s/kl-journal-XXXXXX", base && *base ? base : "/tmp");
	d = mkdtemp(tmpl);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	return strdup(d);
}

static void rm_tmpdir(char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[1024];

	if (d) {
		while ((de = readdir(d)) != NULL) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	CU_ASSERT_EQUAL(rmdir(dir), 0);
	free(dir);
}

static char *db_path(const char *dir)
{
	char *p = malloc(strlen(dir) + 32);

	sprintf(p, "%s/journal.db", dir);
	return p;
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static struct journal *open_ok(const char *path)
{
	struct kl_errinfo info;
	struct journal *j = NULL;
	enum kl_err err;

	kl_errinfo_clear(&info);
	err = journal_open(path, &j, &info);
	if (err)
		fprintf(stderr, "\njournal_open: %s\n", info.message);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	return j;
}

/* A batch of shard with the ESN range [first, last] and n objects. */
struct fixture {
	struct journal_batch b;
	struct journal_object objs[3];
};

static void fixture_init(struct fixture *f, const char *shard, const char *first,
			 uint64_t first_sub, const char *last, size_t n)
{
	static const char *const keys[] = {
		"dt=2026-11-21/a/shardId-000000000001/x_y.gz",
		"dt=2026-11-21/b/shardId-000000000001/x_y.gz",
		"errors/processing-failed/shardId-000000000001/x_y.gz",
	};
	memset(f, 0, sizeof(*f));
	f->b.shard_id = shard;
	f->b.lease_key = shard;
	CU_ASSERT_EQUAL_FATAL(esn_set(first, first_sub, &f->b.first, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(esn_set(last, 4, &f->b.last, NULL), KL_OK);
	for (size_t i = 0; i < n && i < 3; i++) {
		f->objs[i].key = keys[i];
		f->objs[i].spool_path = i == 2 ? NULL : "/var/lib/kinlake/spool/s-1.gz";
		f->objs[i].spool_bytes = 1000 + i;
		f->objs[i].spool_sha256 = i == 2 ? NULL : "ab12";
	}
	f->b.objects = f->objs;
	f->b.n_objects = n;
}

static void test_intent_lifecycle(void)
{
	char *dir = make_tmpdir(), *path = db_path(dir);
	struct journal *j = open_ok(path);
	struct kl_errinfo info;
	struct fixture f;
	struct journal_batch *v = NULL;
	size_t n = 99;
	int64_t id = 0;

	kl_errinfo_clear(&info);
	CU_ASSERT_PTR_NULL(journal_moved_aside(j));
	CU_ASSERT_EQUAL(journal_schema_version(j), JOURNAL_SCHEMA_VERSION);
	fixture_init(&f, "shardId-000000000001", SEQ_A, 0, SEQ_B, 3);
	CU_ASSERT_EQUAL_FATAL(journal_put(j, &f.b, JOURNAL_STATE_INTENT, &id, &info), KL_OK);
	CU_ASSERT(id > 0);

	CU_ASSERT_EQUAL_FATAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_EQUAL(v[0].id, id);
	CU_ASSERT_STRING_EQUAL(v[0].shard_id, "shardId-000000000001");
	CU_ASSERT_STRING_EQUAL(v[0].lease_key, "shardId-000000000001");
	CU_ASSERT_STRING_EQUAL(v[0].first.seq, SEQ_A);
	CU_ASSERT_EQUAL(v[0].first.sub, 0);
	CU_ASSERT_STRING_EQUAL(v[0].last.seq, SEQ_B);
	CU_ASSERT_EQUAL(v[0].last.sub, 4);
	CU_ASSERT_EQUAL(v[0].state, JOURNAL_STATE_INTENT);
	CU_ASSERT_EQUAL(v[0].attempts, 1);
	CU_ASSERT(v[0].created_ms > 0 && v[0].updated_ms >= v[0].created_ms);
	CU_ASSERT_EQUAL_FATAL(v[0].n_objects, 3);
	for (size_t i = 0; i < 3; i++) {
		CU_ASSERT_STRING_EQUAL(v[0].objects[i].key, f.objs[i].key);
		CU_ASSERT_EQUAL(v[0].objects[i].spool_bytes, 1000 + i);
		CU_ASSERT_FALSE(v[0].objects[i].uploaded);
	}
	CU_ASSERT_STRING_EQUAL(v[0].objects[0].spool_path, "/var/lib/kinlake/spool/s-1.gz");
	CU_ASSERT_STRING_EQUAL(v[0].objects[0].spool_sha256, "ab12");
	CU_ASSERT_PTR_NULL(v[0].objects[2].spool_path);
	CU_ASSERT_PTR_NULL(v[0].objects[2].spool_sha256);
	journal_batches_free(v, n);

	/* Objects one by one; the batch is uploaded when all are. */
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id, f.objs[1].key, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id, "no/such/key", &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(v[0].state, JOURNAL_STATE_INTENT);
	CU_ASSERT_FALSE(v[0].objects[0].uploaded);
	CU_ASSERT_TRUE(v[0].objects[1].uploaded);
	journal_batches_free(v, n);
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id, f.objs[0].key, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id, f.objs[2].key, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(v[0].state, JOURNAL_STATE_UPLOADED);
	journal_batches_free(v, n);

	CU_ASSERT_EQUAL(journal_mark_committed(j, id, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_mark_committed(j, id, &info), KL_OK);   /* retried: fine */
	CU_ASSERT_EQUAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_PTR_NULL(v);
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id, NULL, &info), KL_ESTATE);
	CU_ASSERT_EQUAL(journal_mark_committed(j, id + 100, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id + 100, NULL, &info), KL_ENOTFOUND);

	/* An open batch has no intent: it cannot be committed. */
	fixture_init(&f, "shardId-000000000002", SEQ_A, 0, SEQ_A, 0);
	CU_ASSERT_EQUAL(journal_put(j, &f.b, JOURNAL_STATE_OPEN, &id, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_mark_committed(j, id, &info), KL_ESTATE);
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id, NULL, &info), KL_ESTATE);
	CU_ASSERT_EQUAL(journal_forget(j, id, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_forget(j, id, &info), KL_ENOTFOUND);

	/* Bad input. */
	fixture_init(&f, "shardId-000000000003", SEQ_B, 0, SEQ_A, 1);
	CU_ASSERT_EQUAL(journal_put(j, &f.b, JOURNAL_STATE_INTENT, &id, &info), KL_EINVAL);
	fixture_init(&f, "shardId-000000000003", SEQ_A, 0, SEQ_B, 1);
	CU_ASSERT_EQUAL(journal_put(j, &f.b, JOURNAL_STATE_COMMITTED, &id, &info), KL_EINVAL);
	f.b.shard_id = NULL;
	CU_ASSERT_EQUAL(journal_put(j, &f.b, JOURNAL_STATE_INTENT, &id, &info), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(journal_state_name(JOURNAL_STATE_UPLOADED), "uploaded");

	journal_close(j);
	journal_close(NULL);
	free(path);
	rm_tmpdir(dir);
}

static void test_restart_keeps_pending(void)
{
	char *dir = make_tmpdir(), *path = db_path(dir);
	struct journal *j = open_ok(path);
	struct kl_errinfo info;
	struct fixture f1, f2, f3;
	struct journal_batch *v = NULL;
	size_t n = 0;
	int64_t id1, id2, id3, again;
	uint32_t attempts = 0;

	fixture_init(&f1, "shardId-000000000001", SEQ_A, 0, SEQ_B, 2);
	fixture_init(&f2, "shardId-000000000002", SEQ_A, 0, SEQ_B, 1);
	fixture_init(&f3, "shardId-000000000001", SEQ_C, 0, SEQ_C, 1);
	CU_ASSERT_EQUAL_FATAL(journal_put(j, &f1.b, JOURNAL_STATE_INTENT, &id1, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(journal_put(j, &f2.b, JOURNAL_STATE_INTENT, &id2, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(journal_put(j, &f3.b, JOURNAL_STATE_OPEN, &id3, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_mark_uploaded(j, id2, NULL, &info), KL_OK);
	/* The process dies (no clean shutdown needed with WAL; close is the same here). */
	journal_close(j);

	j = open_ok(path);
	CU_ASSERT_PTR_NULL(journal_moved_aside(j));
	CU_ASSERT_EQUAL_FATAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	/* Ordered by shard, then age. */
	CU_ASSERT_EQUAL(v[0].id, id1);
	CU_ASSERT_EQUAL(v[0].state, JOURNAL_STATE_INTENT);
	CU_ASSERT_EQUAL(v[0].n_objects, 2);
	CU_ASSERT_EQUAL(v[1].id, id3);
	CU_ASSERT_EQUAL(v[1].state, JOURNAL_STATE_OPEN);
	CU_ASSERT_EQUAL(v[2].id, id2);
	CU_ASSERT_EQUAL(v[2].state, JOURNAL_STATE_UPLOADED);
	CU_ASSERT_TRUE(v[2].objects[0].uploaded);
	journal_batches_free(v, n);
	CU_ASSERT_EQUAL_FATAL(journal_list_pending(j, "shardId-000000000002", &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_EQUAL(v[0].id, id2);
	journal_batches_free(v, n);
	CU_ASSERT_EQUAL(journal_list_pending(j, "shardId-000000000009", &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 0);

	/* The open batch gets its intent: same row, not a rebuild. */
	CU_ASSERT_EQUAL(journal_put(j, &f3.b, JOURNAL_STATE_INTENT, &again, &info), KL_OK);
	CU_ASSERT_EQUAL(again, id3);
	/* Rebuilt after a crash, now ending elsewhere with one object: replaced. */
	fixture_init(&f1, "shardId-000000000001", SEQ_A, 0, SEQ_C, 1);
	CU_ASSERT_EQUAL(journal_put(j, &f1.b, JOURNAL_STATE_INTENT, &again, &info), KL_OK);
	CU_ASSERT_EQUAL(again, id1);
	CU_ASSERT_EQUAL_FATAL(journal_list_pending(j, "shardId-000000000001", &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	CU_ASSERT_STRING_EQUAL(v[0].last.seq, SEQ_C);
	CU_ASSERT_EQUAL(v[0].n_objects, 1);
	CU_ASSERT_EQUAL(v[0].attempts, 2);
	CU_ASSERT_EQUAL(v[1].attempts, 1);
	journal_batches_free(v, n);
	CU_ASSERT_EQUAL(journal_bump_attempts(j, id1, &attempts, &info), KL_OK);
	CU_ASSERT_EQUAL(attempts, 3);
	CU_ASSERT_EQUAL(journal_bump_attempts(j, 999999, &attempts, &info), KL_ENOTFOUND);

	/* Prune: only committed rows older than the cut-off go. */
	{
		size_t deleted = 99;

		CU_ASSERT_EQUAL(journal_mark_committed(j, id2, &info), KL_OK);
		CU_ASSERT_EQUAL(journal_prune(j, 1, &deleted, &info), KL_OK);
		CU_ASSERT_EQUAL(deleted, 0);
		CU_ASSERT_EQUAL(journal_prune(j, kl_wall_ms() + 1000, &deleted, &info), KL_OK);
		CU_ASSERT_EQUAL(deleted, 1);
		CU_ASSERT_EQUAL(journal_mark_committed(j, id2, &info), KL_ENOTFOUND);
		CU_ASSERT_EQUAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
		CU_ASSERT_EQUAL(n, 2);
		journal_batches_free(v, n);
	}
	journal_close(j);
	free(path);
	rm_tmpdir(dir);
}

static void test_crash_counters(void)
{
	char *dir = make_tmpdir(), *path = db_path(dir);
	struct journal *j = open_ok(path);
	struct kl_errinfo info;
	struct esn a, a1, b;
	uint32_t c = 99;

	CU_ASSERT_EQUAL_FATAL(esn_set(SEQ_A, 0, &a, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(esn_set(SEQ_A, 1, &a1, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(esn_set(SEQ_B, 0, &b, NULL), KL_OK);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s1", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 0);
	CU_ASSERT_EQUAL(journal_crash_bump(j, "s1", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 1);
	CU_ASSERT_EQUAL(journal_crash_bump(j, "s1", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 2);
	CU_ASSERT_EQUAL(journal_crash_bump(j, "s1", &a1, &c, &info), KL_OK);   /* other sub-record */
	CU_ASSERT_EQUAL(c, 1);
	CU_ASSERT_EQUAL(journal_crash_bump(j, "s2", &a, &c, &info), KL_OK);    /* other shard */
	CU_ASSERT_EQUAL(c, 1);
	CU_ASSERT_EQUAL(journal_crash_bump(j, "s1", &b, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_crash_bump(j, NULL, &b, &c, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s1", NULL, &c, &info), KL_EINVAL);
	journal_close(j);

	/* Counters survive a restart (that is their whole point). */
	j = open_ok(path);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s1", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 2);
	CU_ASSERT_EQUAL(journal_crash_bump(j, "s1", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 3);
	CU_ASSERT_EQUAL(journal_crash_clear(j, "s1", &a, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s1", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 0);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s1", &a1, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 1);
	CU_ASSERT_EQUAL(journal_crash_clear(j, "s1", NULL, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s1", &a1, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 0);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s1", &b, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 0);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s2", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 1);
	/* Pruning by age takes old counters too. */
	CU_ASSERT_EQUAL(journal_prune(j, kl_wall_ms() + 1000, NULL, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_crash_get(j, "s2", &a, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 0);
	journal_close(j);
	free(path);
	rm_tmpdir(dir);
}

/* Runs sql on path with a plain SQLite connection. */
static void exec_sql(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void query_one(const char *path, const char *sql, char *out, size_t out_size)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;

	out[0] = '\0';
	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		snprintf(out, out_size, "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	sqlite3_close(db);
}

static void write_garbage(const char *path, off_t at, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	char junk[8192];

	CU_ASSERT_FATAL(fd >= 0 && n <= sizeof(junk));
	for (size_t i = 0; i < n; i++)
		junk[i] = (char)(i * 131 + 7);
	CU_ASSERT_EQUAL(pwrite(fd, junk, n, at), (ssize_t)n);
	close(fd);
}

static void test_corrupt_moved_aside(void)
{
	char *dir = make_tmpdir(), *path = db_path(dir);
	char aside[600], buf[64];
	struct journal *j;
	struct kl_errinfo info;
	struct fixture f;
	struct journal_batch *v = NULL;
	size_t n = 0;

	/* Garbage over the whole file. */
	write_garbage(path, 0, 8192);
	j = open_ok(path);
	snprintf(aside, sizeof(aside), "%s.corrupt.1", path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(journal_moved_aside(j));
	CU_ASSERT_STRING_EQUAL(journal_moved_aside(j), aside);
	CU_ASSERT_STRING_EQUAL(journal_moved_reason(j), "file is not a database");
	CU_ASSERT_TRUE(file_exists(aside));
	/* The fresh journal works. */
	fixture_init(&f, "shardId-000000000001", SEQ_A, 0, SEQ_B, 1);
	CU_ASSERT_EQUAL(journal_put(j, &f.b, JOURNAL_STATE_INTENT, NULL, &info), KL_OK);
	CU_ASSERT_EQUAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 1);
	journal_batches_free(v, n);
	CU_ASSERT_EQUAL(journal_schema_version(j), JOURNAL_SCHEMA_VERSION);
	journal_close(j);
	query_one(path, "PRAGMA journal_mode", buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "wal");

	/* A valid file with damaged pages: caught by the integrity check. */
	j = open_ok(path);
	for (int i = 0; i < 3000; i++) {
		struct esn e;
		char seq[32];

		snprintf(seq, sizeof(seq), "%d", 1000 + i);
		CU_ASSERT_EQUAL_FATAL(esn_set(seq, 0, &e, NULL), KL_OK);
		CU_ASSERT_EQUAL_FATAL(journal_crash_bump(j, "a-rather-long-shard-id-to-fill-pages", &e,
							 NULL, &info), KL_OK);
	}
	journal_close(j);
	{
		struct stat st;

		CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
		CU_ASSERT(st.st_size > 16 * 4096);
		/* Scribble over pages in the middle, keep the header intact. */
		write_garbage(path, st.st_size / 2 - 2048, 4096);
		write_garbage(path, st.st_size / 3, 4096);
	}
	j = open_ok(path);
	snprintf(aside, sizeof(aside), "%s.corrupt.2", path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(journal_moved_aside(j));
	CU_ASSERT_STRING_EQUAL(journal_moved_aside(j), aside);
	CU_ASSERT_PTR_NOT_NULL(journal_moved_reason(j));
	CU_ASSERT_EQUAL(journal_list_pending(j, NULL, &v, &n, &info), KL_OK);
	CU_ASSERT_EQUAL(n, 0);     /* fresh */
	journal_close(j);

	/* Unopenable location: an error, nothing moved. */
	CU_ASSERT_EQUAL(journal_open("/nonexistent/dir/journal.db", &j, &info), KL_EIO);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "cannot open"));
	free(path);
	rm_tmpdir(dir);
}

static void test_schema_versions(void)
{
	char *dir = make_tmpdir(), *path = db_path(dir);
	char buf[64], aside[600];
	struct journal *j;
	struct kl_errinfo info;
	int fd;

	/* An empty file is schema 0 and is migrated, not moved aside. */
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	close(fd);
	j = open_ok(path);
	CU_ASSERT_PTR_NULL(journal_moved_aside(j));
	CU_ASSERT_EQUAL(journal_schema_version(j), 1);
	journal_close(j);
	query_one(path, "SELECT version FROM schema_version", buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "1");
	query_one(path, "SELECT count(*) FROM sqlite_master WHERE name IN ('batch', 'batch_object', 'crash_counter')",
		  buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "3");

	/* Reopening a current journal changes nothing. */
	exec_sql(path, "INSERT INTO crash_counter VALUES ('s', '5', 0, 4, 1)");
	j = open_ok(path);
	CU_ASSERT_PTR_NULL(journal_moved_aside(j));
	{
		struct esn e;
		uint32_t c = 0;

		CU_ASSERT_EQUAL_FATAL(esn_set("5", 0, &e, NULL), KL_OK);
		CU_ASSERT_EQUAL(journal_crash_get(j, "s", &e, &c, &info), KL_OK);
		CU_ASSERT_EQUAL(c, 4);
	}
	journal_close(j);

	/* A newer schema (a downgrade): moved aside, not misread. */
	exec_sql(path, "UPDATE schema_version SET version = 99");
	j = open_ok(path);
	snprintf(aside, sizeof(aside), "%s.corrupt.1", path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(journal_moved_aside(j));
	CU_ASSERT_STRING_EQUAL(journal_moved_aside(j), aside);
	CU_ASSERT_STRING_EQUAL(journal_moved_reason(j), "schema version 99 is newer than this kinlake's (1)");
	journal_close(j);
	query_one(aside, "SELECT version FROM schema_version", buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "99");   /* kept intact for a human */

	/* Somebody else's database at our path. */
	unlink(path);
	exec_sql(path, "CREATE TABLE foo (x)");
	j = open_ok(path);
	CU_ASSERT_PTR_NOT_NULL(journal_moved_aside(j));
	CU_ASSERT_STRING_EQUAL(journal_moved_reason(j), "not a kinlake journal (foreign schema)");
	journal_close(j);
	free(path);
	rm_tmpdir(dir);
}

struct locker {
	const char *path;
	int hold_ms;
	int locked;       /* set once the write lock is held */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void *hold_write_lock(void *arg)
{
	struct locker *l = arg;
	sqlite3 *db = NULL;

	sqlite3_open(l->path, &db);
	sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	pthread_mutex_lock(&l->mu);
	l->locked = 1;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	kl_sleep_ms(l->hold_ms);
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(db);
	return NULL;
}

static void test_busy_waits(void)
{
	char *dir = make_tmpdir(), *path = db_path(dir);
	struct journal *j = open_ok(path);
	struct kl_errinfo info;
	struct fixture f;
	struct locker l = { .path = path, .hold_ms = 400 };
	pthread_t th;
	int64_t t0, waited;

	pthread_mutex_init(&l.mu, NULL);
	pthread_cond_init(&l.cv, NULL);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, hold_write_lock, &l), 0);
	pthread_mutex_lock(&l.mu);
	while (!l.locked)
		pthread_cond_wait(&l.cv, &l.mu);
	pthread_mutex_unlock(&l.mu);
	/* Another process holds the write lock: the intent waits, then succeeds. */
	fixture_init(&f, "shardId-000000000001", SEQ_A, 0, SEQ_B, 1);
	t0 = kl_mono_ms();
	CU_ASSERT_EQUAL(journal_put(j, &f.b, JOURNAL_STATE_INTENT, NULL, &info), KL_OK);
	waited = kl_mono_ms() - t0;
	CU_ASSERT(waited >= 200);
	pthread_join(th, NULL);
	pthread_mutex_destroy(&l.mu);
	pthread_cond_destroy(&l.cv);
	journal_close(j);
	free(path);
	rm_tmpdir(dir);
}

struct bumper {
	struct journal *j;
	int n;
	int failures;
};

static void *bump_many(void *arg)
{
	struct bumper *b = arg;
	struct esn e;

	esn_set("42", 0, &e, NULL);
	for (int i = 0; i < b->n; i++)
		if (journal_crash_bump(b->j, "shared", &e, NULL, NULL) != KL_OK)
			b->failures++;
	return NULL;
}

static void test_threads_share_one_journal(void)
{
	char *dir = make_tmpdir(), *path = db_path(dir);
	struct journal *j = open_ok(path);
	struct kl_errinfo info;
	struct bumper b[4];
	pthread_t th[4];
	struct esn e;
	uint32_t c = 0;

	for (int i = 0; i < 4; i++) {
		b[i] = (struct bumper){ .j = j, .n = 50 };
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, bump_many, &b[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CU_ASSERT_EQUAL(b[i].failures, 0);
	}
	CU_ASSERT_EQUAL_FATAL(esn_set("42", 0, &e, NULL), KL_OK);
	CU_ASSERT_EQUAL(journal_crash_get(j, "shared", &e, &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, 200);
	journal_close(j);
	free(path);
	rm_tmpdir(dir);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_intent_lifecycle),
		KL_TEST(test_restart_keeps_pending),
		KL_TEST(test_crash_counters),
		KL_TEST(test_corrupt_moved_aside),
		KL_TEST(test_schema_versions),
		KL_TEST(test_busy_waits),
		KL_TEST(test_threads_share_one_journal),
		{ 0 },
	};

	return kl_test_run("journal", t);
}
