/* SPDX-License-Identifier: Apache-2.0 */
/*
 * journal.c: the recovery journal on SQLite. Every statement is prepared
 * once at open and reset after each use; every multi-statement change is
 * one BEGIN IMMEDIATE transaction, so a crash leaves either the old or
 * the new state. The schema is versioned in table schema_version and
 * migrated forward one step at a time by the scripts in migrations[].
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "journal.h"
#include "util.h"

/*
 * migrations[v] takes the schema from version v to v + 1. Append only:
 * a released script is never edited.
 */
static const char *const migrations[] = {
	/* 0 -> 1: batches, their objects, crash counters */
	"CREATE TABLE schema_version (version INTEGER NOT NULL);"
	"INSERT INTO schema_version (version) VALUES (0);"
	"CREATE TABLE batch ("
	"  id INTEGER PRIMARY KEY,"
	"  shard_id TEXT NOT NULL,"
	"  lease_key TEXT NOT NULL,"
	"  first_seq TEXT NOT NULL,"
	"  first_sub INTEGER NOT NULL,"
	"  last_seq TEXT NOT NULL,"
	"  last_sub INTEGER NOT NULL,"
	"  state TEXT NOT NULL CHECK (state IN ('open', 'intent', 'uploaded', 'committed')),"
	"  attempts INTEGER NOT NULL DEFAULT 1,"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL,"
	"  UNIQUE (shard_id, first_seq, first_sub));"
	"CREATE INDEX batch_by_state ON batch (state, shard_id);"
	"CREATE TABLE batch_object ("
	"  batch_id INTEGER NOT NULL REFERENCES batch (id) ON DELETE CASCADE,"
	"  idx INTEGER NOT NULL,"
	"  object_key TEXT NOT NULL,"
	"  spool_path TEXT,"
	"  spool_bytes INTEGER NOT NULL DEFAULT 0,"
	"  spool_sha256 TEXT,"
	"  uploaded INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (batch_id, idx),"
	"  UNIQUE (batch_id, object_key));"
	"CREATE TABLE crash_counter ("
	"  shard_id TEXT NOT NULL,"
	"  seq TEXT NOT NULL,"
	"  sub INTEGER NOT NULL,"
	"  count INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL,"
	"  PRIMARY KEY (shard_id, seq, sub)) WITHOUT ROWID;",
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == JOURNAL_SCHEMA_VERSION,
	       "one migration per schema version");

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SYNC_NORMAL,
	ST_SYNC_FULL,
	ST_UPSERT_BATCH,
	ST_BATCH_ID,
	ST_DEL_OBJECTS,
	ST_INS_OBJECT,
	ST_GET_STATE,
	ST_SET_STATE,
	ST_OBJ_UPLOADED,
	ST_ALL_UPLOADED,
	ST_COUNT_NOT_UPLOADED,
	ST_BUMP_ATTEMPTS,
	ST_GET_ATTEMPTS,
	ST_DEL_BATCH,
	ST_PRUNE_BATCHES,
	ST_PRUNE_CRASH,
	ST_LIST_PENDING,
	ST_LIST_OBJECTS,
	ST_CRASH_BUMP,
	ST_CRASH_GET,
	ST_CRASH_CLEAR_ONE,
	ST_CRASH_CLEAR_SHARD,
	ST_CRASH_LIST,
	ST_VERSION,
	ST_COUNT,
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
	[ST_SYNC_FULL] = "PRAGMA synchronous = FULL",
	[ST_UPSERT_BATCH] =
		"INSERT INTO batch (shard_id, lease_key, first_seq, first_sub, last_seq, last_sub,"
		" state, attempts, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)"
		" ON CONFLICT (shard_id, first_seq, first_sub) DO UPDATE SET"
		" lease_key = excluded.lease_key, last_seq = excluded.last_seq,"
		" last_sub = excluded.last_sub, state = excluded.state,"
		" attempts = attempts + (state <> 'open'), updated_ms = excluded.updated_ms",
	[ST_BATCH_ID] = "SELECT id FROM batch WHERE shard_id = ?1 AND first_seq = ?2 AND first_sub = ?3",
	[ST_DEL_OBJECTS] = "DELETE FROM batch_object WHERE batch_id = ?1",
	[ST_INS_OBJECT] =
		"INSERT INTO batch_object (batch_id, idx, object_key, spool_path, spool_bytes,"
		" spool_sha256, uploaded) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
	[ST_GET_STATE] = "SELECT state FROM batch WHERE id = ?1",
	[ST_SET_STATE] = "UPDATE batch SET state = ?2, updated_ms = ?3 WHERE id = ?1",
	[ST_OBJ_UPLOADED] = "UPDATE batch_object SET uploaded = 1 WHERE batch_id = ?1 AND object_key = ?2",
	[ST_ALL_UPLOADED] = "UPDATE batch_object SET uploaded = 1 WHERE batch_id = ?1",
	[ST_COUNT_NOT_UPLOADED] = "SELECT count(*) FROM batch_object WHERE batch_id = ?1 AND uploaded = 0",
	[ST_BUMP_ATTEMPTS] = "UPDATE batch SET attempts = attempts + 1, updated_ms = ?2 WHERE id = ?1",
	[ST_GET_ATTEMPTS] = "SELECT attempts FROM batch WHERE id = ?1",
	[ST_DEL_BATCH] = "DELETE FROM batch WHERE id = ?1",
	[ST_PRUNE_BATCHES] = "DELETE FROM batch WHERE state = 'committed' AND updated_ms < ?1",
	[ST_PRUNE_CRASH] = "DELETE FROM crash_counter WHERE updated_ms < ?1",
	[ST_LIST_PENDING] =
		"SELECT id, shard_id, lease_key, first_seq, first_sub, last_seq, last_sub, state,"
		" attempts, created_ms, updated_ms FROM batch"
		" WHERE state <> 'committed' AND (?1 IS NULL OR shard_id = ?1)"
		" ORDER BY shard_id, id",
	[ST_LIST_OBJECTS] =
		"SELECT object_key, spool_path, spool_bytes, spool_sha256, uploaded"
		" FROM batch_object WHERE batch_id = ?1 ORDER BY idx",
	[ST_CRASH_BUMP] =
		"INSERT INTO crash_counter (shard_id, seq, sub, count, updated_ms)"
		" VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT (shard_id, seq, sub) DO UPDATE SET"
		" count = count + 1, updated_ms = excluded.updated_ms",
	[ST_CRASH_GET] = "SELECT count FROM crash_counter WHERE shard_id = ?1 AND seq = ?2 AND sub = ?3",
	[ST_CRASH_CLEAR_ONE] = "DELETE FROM crash_counter WHERE shard_id = ?1 AND seq = ?2 AND sub = ?3",
	[ST_CRASH_CLEAR_SHARD] = "DELETE FROM crash_counter WHERE shard_id = ?1",
	[ST_CRASH_LIST] = "SELECT seq, sub, count FROM crash_counter WHERE shard_id = ?1 LIMIT ?2",
	[ST_VERSION] = "SELECT version FROM schema_version",
};

struct journal {
	pthread_mutex_t mu;
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	char *path;
	char *moved_aside;
	char *moved_reason;
	int version;
};

static const char *const state_names[] = { "open", "intent", "uploaded", "committed" };

const char *journal_state_name(enum journal_state state)
{
	switch (state) {
	case JOURNAL_STATE_OPEN:
	case JOURNAL_STATE_INTENT:
	case JOURNAL_STATE_UPLOADED:
	case JOURNAL_STATE_COMMITTED:
		return state_names[state];
	}
	return "unknown";
}

static bool state_parse(const char *s, enum journal_state *ret)
{
	for (size_t i = 0; s && i < sizeof(state_names) / sizeof(state_names[0]); i++)
		if (strcmp(s, state_names[i]) == 0) {
			*ret = (enum journal_state)i;
			return true;
		}
	return false;
}

/* ---------------------------------------------------------------- errors */

static enum kl_err map_rc(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return KL_ETIMEOUT;
	case SQLITE_FULL:
		return KL_ENOSPC;
	case SQLITE_NOMEM:
		return KL_ENOMEM;
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
	case SQLITE_TOOBIG:
		return KL_EINVAL;
	default:
		return KL_EIO;
	}
}

static enum kl_err db_error(struct journal *j, struct kl_errinfo *info, int rc, const char *what)
{
	enum kl_err err = map_rc(rc);

	kl_errinfo_set(info, err, "journal: %s: %s (SQLite %d)%s", what,
		       j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc), rc,
		       err == KL_ETIMEOUT ? ", database busy" : "");
	if (info && j->db)
		info->sys_errno = sqlite3_system_errno(j->db);
	return err;
}

/* ---------------------------------------------------------------- statements */

static sqlite3_stmt *stmt(struct journal *j, enum stmt_id id)
{
	sqlite3_reset(j->st[id]);
	sqlite3_clear_bindings(j->st[id]);
	return j->st[id];
}

/* Runs a statement that returns no rows (or whose rows are ignored). */
static int run(sqlite3_stmt *s)
{
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		;
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	sqlite3_reset(s);
	return rc;
}

static int bind_text(sqlite3_stmt *s, int i, const char *v)
{
	return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

static int begin(struct journal *j)
{
	return run(stmt(j, ST_BEGIN));
}

static void rollback(struct journal *j)
{
	/* After some errors SQLite has already rolled back: ignore the result. */
	if (!sqlite3_get_autocommit(j->db))
		run(stmt(j, ST_ROLLBACK));
}

static int commit(struct journal *j)
{
	int rc = run(stmt(j, ST_COMMIT));

	if (rc != SQLITE_OK)
		rollback(j);
	return rc;
}

/* ---------------------------------------------------------------- open */

static void close_db(struct journal *j)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(j->st[i]);
		j->st[i] = NULL;
	}
	if (j->db)
		sqlite3_close_v2(j->db);
	j->db = NULL;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	close_db(j);
	pthread_mutex_destroy(&j->mu);
	free(j->path);
	free(j->moved_aside);
	free(j->moved_reason);
	free(j);
}

/* Outcome of one attempt to open the file. */
enum open_result {
	OPEN_OK,
	OPEN_UNUSABLE,    /* corrupt, not a database, foreign or newer schema: move aside */
	OPEN_FAILED,      /* cannot open or write at all: report */
};

static bool rc_means_damage(int rc)
{
	return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

/* Runs sql and returns its first column of the first row in out (may be NULL). */
static int query_text(sqlite3 *db, const char *sql, char *out, size_t out_size)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(s, 0);

		if (out)
			snprintf(out, out_size, "%s", t ? (const char *)t : "");
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		if (out && out_size)
			out[0] = '\0';
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc;
}

static enum open_result unusable(char *reason, size_t reason_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static enum open_result unusable(char *reason, size_t reason_size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, reason_size, fmt, ap);
	va_end(ap);
	/* SQLite's integrity report is multi-line: keep it one log line. */
	for (char *p = reason; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return OPEN_UNUSABLE;
}

/* Reads the schema version: 0 for an empty database, -1 for a foreign one. */
static int read_version(struct journal *j, int *ret_version)
{
	char buf[64];
	int rc;

	rc = query_text(j->db, "SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'",
			buf, sizeof(buf));
	if (rc != SQLITE_OK)
		return rc;
	if (strcmp(buf, "0") == 0) {
		rc = query_text(j->db, "SELECT count(*) FROM sqlite_master", buf, sizeof(buf));
		if (rc != SQLITE_OK)
			return rc;
		*ret_version = strcmp(buf, "0") == 0 ? 0 : -1;
		return SQLITE_OK;
	}
	rc = query_text(j->db, "SELECT count(*) || ':' || coalesce(max(version), -1) FROM schema_version",
			buf, sizeof(buf));
	if (rc != SQLITE_OK)
		return rc;
	*ret_version = strncmp(buf, "1:", 2) == 0 ? atoi(buf + 2) : -1;
	return SQLITE_OK;
}

static int migrate(struct journal *j, int from)
{
	char sql[64];
	int rc;

	rc = sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return rc;
	for (int v = from; v < JOURNAL_SCHEMA_VERSION && rc == SQLITE_OK; v++) {
		rc = sqlite3_exec(j->db, migrations[v], NULL, NULL, NULL);
		if (rc == SQLITE_OK) {
			snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", v + 1);
			rc = sqlite3_exec(j->db, sql, NULL, NULL, NULL);
		}
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK && !sqlite3_get_autocommit(j->db))
		sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/*
 * One attempt: open, check, configure, migrate, prepare. On OPEN_UNUSABLE
 * reason says why; on OPEN_FAILED info does. The database is closed
 * unless OPEN_OK.
 */
static enum open_result try_open(struct journal *j, char *reason, size_t reason_size,
				 struct kl_errinfo *info, enum kl_err *ret_err)
{
	char buf[256];
	int rc, version = 0;
	enum open_result res = OPEN_FAILED;
	enum kl_err err = KL_EIO;

	rc = sqlite3_open_v2(j->path, &j->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		err = db_error(j, info, rc, "cannot open the database");
		goto out;
	}
	sqlite3_extended_result_codes(j->db, 1);
	sqlite3_busy_timeout(j->db, JOURNAL_BUSY_TIMEOUT_MS);

	/* The first read of the file: a garbage header shows up here. */
	rc = query_text(j->db, "PRAGMA integrity_check(1)", buf, sizeof(buf));
	if (rc_means_damage(rc)) {
		res = unusable(reason, reason_size, "%s", sqlite3_errmsg(j->db));
		goto out;
	}
	if (rc != SQLITE_OK) {
		err = db_error(j, info, rc, "integrity check");
		goto out;
	}
	if (strcmp(buf, "ok") != 0) {
		res = unusable(reason, reason_size, "integrity check failed: %s", buf);
		goto out;
	}
	rc = query_text(j->db, "PRAGMA journal_mode = WAL", buf, sizeof(buf));
	if (rc == SQLITE_OK && strcmp(buf, "wal") != 0) {
		err = kl_errinfo_set(info, KL_EIO, "journal: cannot switch '%s' to WAL (mode is '%s')",
			       j->path, buf);
		goto out;
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(j->db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
				  NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = read_version(j, &version);
	if (rc_means_damage(rc)) {
		res = unusable(reason, reason_size, "%s", sqlite3_errmsg(j->db));
		goto out;
	}
	if (rc != SQLITE_OK) {
		err = db_error(j, info, rc, "cannot read the schema");
		goto out;
	}
	if (version < 0) {
		res = unusable(reason, reason_size, "%s", "not a kinlake journal (foreign schema)");
		goto out;
	}
	if (version > JOURNAL_SCHEMA_VERSION) {
		res = unusable(reason, reason_size, "schema version %d is newer than this kinlake's (%d)",
			       version, JOURNAL_SCHEMA_VERSION);
		goto out;
	}
	if (version < JOURNAL_SCHEMA_VERSION) {
		rc = migrate(j, version);
		if (rc_means_damage(rc)) {
			res = unusable(reason, reason_size, "%s", sqlite3_errmsg(j->db));
			goto out;
		}
		if (rc != SQLITE_OK) {
			err = db_error(j, info, rc, "schema migration");
			goto out;
		}
	}
	j->version = JOURNAL_SCHEMA_VERSION;
	for (int i = 0; i < ST_COUNT; i++) {
		rc = sqlite3_prepare_v3(j->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					&j->st[i], NULL);
		if (rc != SQLITE_OK) {
			err = db_error(j, info, rc, "prepare");
			goto out;
		}
	}
	return OPEN_OK;
out:
	close_db(j);
	*ret_err = err;
	return res;
}

/* Renames the damaged database (and its WAL) to "<path>.corrupt.<n>". */
static enum kl_err move_aside(struct journal *j, struct kl_errinfo *info)
{
	char aside[4096], from[4200], to[4200], dir[4096];
	int n;

	for (n = 1; n < 1000; n++) {
		snprintf(aside, sizeof(aside), "%s.corrupt.%d", j->path, n);
		if (access(aside, F_OK) != 0 && errno == ENOENT)
			break;
	}
	if (n == 1000)
		return kl_errinfo_set(info, KL_EIO, "journal: too many moved-aside journals next to '%s'",
				      j->path);
	if (rename(j->path, aside) != 0) {
		int e = errno;

		kl_errinfo_set(info, KL_EIO, "journal: cannot move '%s' aside: %s", j->path, strerror(e));
		if (info)
			info->sys_errno = e;
		return KL_EIO;
	}
	/* A stale WAL must not be replayed into the new database. */
	snprintf(from, sizeof(from), "%s-wal", j->path);
	snprintf(to, sizeof(to), "%s-wal", aside);
	if (rename(from, to) != 0 && errno != ENOENT)
		unlink(from);
	snprintf(from, sizeof(from), "%s-shm", j->path);
	unlink(from);
	snprintf(dir, sizeof(dir), "%s", j->path);
	{
		int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
	}
	free(j->moved_aside);
	j->moved_aside = strdup(aside);
	if (!j->moved_aside)
		return kl_errinfo_set(info, KL_ENOMEM, "journal: out of memory");
	return KL_OK;
}

enum kl_err journal_open(const char *path, struct journal **ret_j, struct kl_errinfo *info)
{
	char reason[384];
	struct journal *j;
	enum open_result res;
	enum kl_err err;

	if (!path || !*path)
		return kl_errinfo_set(info, KL_EINVAL, "journal: no path");
	if (strlen(path) > 4000)
		return kl_errinfo_set(info, KL_EINVAL, "journal: path too long");
	j = calloc(1, sizeof(*j));
	if (!j)
		return kl_errinfo_set(info, KL_ENOMEM, "journal: out of memory");
	if (pthread_mutex_init(&j->mu, NULL) != 0) {
		free(j);
		return kl_errinfo_set(info, KL_ENOMEM, "journal: cannot create mutex");
	}
	j->path = strdup(path);
	if (!j->path) {
		journal_close(j);
		return kl_errinfo_set(info, KL_ENOMEM, "journal: out of memory");
	}
	res = try_open(j, reason, sizeof(reason), info, &err);
	if (res == OPEN_UNUSABLE) {
		j->moved_reason = strdup(reason);
		err = move_aside(j, info);
		if (err) {
			journal_close(j);
			return err;
		}
		res = try_open(j, reason, sizeof(reason), info, &err);
		if (res == OPEN_UNUSABLE) {
			err = kl_errinfo_set(info, KL_EIO, "journal: fresh database '%s' is unusable: %s",
					     path, reason);
			res = OPEN_FAILED;
		}
	}
	if (res != OPEN_OK) {
		journal_close(j);
		return err;
	}
	*ret_j = j;
	return KL_OK;
}

const char *journal_moved_aside(const struct journal *j)
{
	return j->moved_aside;
}

const char *journal_moved_reason(const struct journal *j)
{
	return j->moved_aside ? j->moved_reason : NULL;
}

int journal_schema_version(struct journal *j)
{
	int v = -1;

	pthread_mutex_lock(&j->mu);
	{
		sqlite3_stmt *s = stmt(j, ST_VERSION);

		if (sqlite3_step(s) == SQLITE_ROW)
			v = sqlite3_column_int(s, 0);
		sqlite3_reset(s);
	}
	pthread_mutex_unlock(&j->mu);
	return v;
}

/* ---------------------------------------------------------------- batches */

static bool sub_ok(const struct esn *e)
{
	return e->sub <= (uint64_t)INT64_MAX;
}

static enum kl_err put_locked(struct journal *j, const struct journal_batch *b,
			      enum journal_state state, struct kl_errinfo *info, int64_t *ret_id)
{
	sqlite3_stmt *s;
	int64_t id = 0;
	int rc;

	rc = begin(j);
	if (rc != SQLITE_OK)
		return db_error(j, info, rc, "begin");
	s = stmt(j, ST_UPSERT_BATCH);
	bind_text(s, 1, b->shard_id);
	bind_text(s, 2, b->lease_key);
	bind_text(s, 3, b->first.seq);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)b->first.sub);
	bind_text(s, 5, b->last.seq);
	sqlite3_bind_int64(s, 6, (sqlite3_int64)b->last.sub);
	bind_text(s, 7, journal_state_name(state));
	sqlite3_bind_int64(s, 8, kl_wall_ms());
	rc = run(s);
	if (rc == SQLITE_OK) {
		s = stmt(j, ST_BATCH_ID);
		bind_text(s, 1, b->shard_id);
		bind_text(s, 2, b->first.seq);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)b->first.sub);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			id = sqlite3_column_int64(s, 0);
			rc = SQLITE_OK;
		} else if (rc == SQLITE_DONE) {
			rc = SQLITE_INTERNAL;
		}
		sqlite3_reset(s);
	}
	if (rc == SQLITE_OK) {
		s = stmt(j, ST_DEL_OBJECTS);
		sqlite3_bind_int64(s, 1, id);
		rc = run(s);
	}
	for (size_t i = 0; rc == SQLITE_OK && i < b->n_objects; i++) {
		const struct journal_object *o = &b->objects[i];

		s = stmt(j, ST_INS_OBJECT);
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)i);
		bind_text(s, 3, o->key);
		bind_text(s, 4, o->spool_path);
		sqlite3_bind_int64(s, 5, (sqlite3_int64)o->spool_bytes);
		bind_text(s, 6, o->spool_sha256);
		rc = run(s);
	}
	if (rc == SQLITE_OK)
		rc = commit(j);
	if (rc != SQLITE_OK) {
		enum kl_err err = db_error(j, info, rc, "recording the batch");

		rollback(j);
		return err;
	}
	if (ret_id)
		*ret_id = id;
	return KL_OK;
}

enum kl_err journal_put(struct journal *j, const struct journal_batch *b,
			enum journal_state state, int64_t *ret_id, struct kl_errinfo *info)
{
	enum kl_err err;

	if (!b || !b->shard_id || !*b->shard_id || !b->lease_key || !*b->lease_key)
		return kl_errinfo_set(info, KL_EINVAL, "journal: batch without shard id or lease key");
	if (!esn_valid(&b->first) || !esn_valid(&b->last) || !sub_ok(&b->first) ||
	    !sub_ok(&b->last) || esn_cmp(&b->first, &b->last) > 0)
		return kl_errinfo_set(info, KL_EINVAL, "journal: batch with a bad ESN range");
	if (state != JOURNAL_STATE_OPEN && state != JOURNAL_STATE_INTENT)
		return kl_errinfo_set(info, KL_EINVAL, "journal: a batch is recorded as open or intent");
	if (b->n_objects > JOURNAL_MAX_OBJECTS || (b->n_objects && !b->objects))
		return kl_errinfo_set(info, KL_EINVAL, "journal: bad object list");
	for (size_t i = 0; i < b->n_objects; i++)
		if (!b->objects[i].key || !*b->objects[i].key ||
		    b->objects[i].spool_bytes > (uint64_t)INT64_MAX)
			return kl_errinfo_set(info, KL_EINVAL, "journal: object %zu without a key", i);
	pthread_mutex_lock(&j->mu);
	err = put_locked(j, b, state, info, ret_id);
	pthread_mutex_unlock(&j->mu);
	return err;
}

/* Reads the state of batch id. */
static enum kl_err get_state(struct journal *j, int64_t id, struct kl_errinfo *info,
			     enum journal_state *ret_state)
{
	sqlite3_stmt *s = stmt(j, ST_GET_STATE);
	enum kl_err err = KL_OK;
	int rc;

	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		if (!state_parse((const char *)sqlite3_column_text(s, 0), ret_state))
			err = kl_errinfo_set(info, KL_EIO, "journal: batch %lld has an unknown state",
					     (long long)id);
	} else if (rc == SQLITE_DONE) {
		err = kl_errinfo_set(info, KL_ENOTFOUND, "journal: no batch %lld", (long long)id);
	} else {
		err = db_error(j, info, rc, "reading a batch");
	}
	sqlite3_reset(s);
	return err;
}

static int set_state(struct journal *j, int64_t id, enum journal_state state)
{
	sqlite3_stmt *s = stmt(j, ST_SET_STATE);

	sqlite3_bind_int64(s, 1, id);
	bind_text(s, 2, journal_state_name(state));
	sqlite3_bind_int64(s, 3, kl_wall_ms());
	return run(s);
}

static enum kl_err mark_uploaded_locked(struct journal *j, int64_t id, const char *key,
					struct kl_errinfo *info)
{
	enum journal_state state;
	sqlite3_stmt *s;
	enum kl_err err;
	int rc;

	rc = begin(j);
	if (rc != SQLITE_OK)
		return db_error(j, info, rc, "begin");
	err = get_state(j, id, info, &state);
	if (!err && state != JOURNAL_STATE_INTENT && state != JOURNAL_STATE_UPLOADED)
		err = kl_errinfo_set(info, KL_ESTATE, "journal: batch %lld is %s, not in flight",
				     (long long)id, journal_state_name(state));
	if (err) {
		rollback(j);
		return err;
	}
	s = stmt(j, key ? ST_OBJ_UPLOADED : ST_ALL_UPLOADED);
	sqlite3_bind_int64(s, 1, id);
	if (key)
		bind_text(s, 2, key);
	rc = run(s);
	if (rc == SQLITE_OK && key && sqlite3_changes(j->db) == 0) {
		rollback(j);
		return kl_errinfo_set(info, KL_ENOTFOUND, "journal: batch %lld has no object '%s'",
				      (long long)id, key);
	}
	if (rc == SQLITE_OK) {
		s = stmt(j, ST_COUNT_NOT_UPLOADED);
		sqlite3_bind_int64(s, 1, id);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			bool all = sqlite3_column_int64(s, 0) == 0;

			sqlite3_reset(s);
			rc = all ? set_state(j, id, JOURNAL_STATE_UPLOADED) : SQLITE_OK;
		} else {
			sqlite3_reset(s);
		}
	}
	if (rc == SQLITE_OK)
		rc = commit(j);
	if (rc != SQLITE_OK) {
		err = db_error(j, info, rc, "marking uploaded");
		rollback(j);
	}
	return err;
}

enum kl_err journal_mark_uploaded(struct journal *j, int64_t id, const char *key,
				  struct kl_errinfo *info)
{
	enum kl_err err;

	pthread_mutex_lock(&j->mu);
	err = mark_uploaded_locked(j, id, key, info);
	pthread_mutex_unlock(&j->mu);
	return err;
}

static enum kl_err mark_committed_locked(struct journal *j, int64_t id, struct kl_errinfo *info)
{
	enum journal_state state;
	enum kl_err err;
	int rc;

	err = get_state(j, id, info, &state);
	if (err)
		return err;
	if (state == JOURNAL_STATE_COMMITTED)
		return KL_OK;
	if (state == JOURNAL_STATE_OPEN)
		return kl_errinfo_set(info, KL_ESTATE, "journal: batch %lld is open, it has no intent",
				      (long long)id);
	/* One statement: autocommit makes it its own durable transaction. */
	rc = set_state(j, id, JOURNAL_STATE_COMMITTED);
	if (rc != SQLITE_OK)
		return db_error(j, info, rc, "marking committed");
	return KL_OK;
}

enum kl_err journal_mark_committed(struct journal *j, int64_t id, struct kl_errinfo *info)
{
	enum kl_err err;

	pthread_mutex_lock(&j->mu);
	err = mark_committed_locked(j, id, info);
	pthread_mutex_unlock(&j->mu);
	return err;
}

enum kl_err journal_bump_attempts(struct journal *j, int64_t id, uint32_t *ret_attempts,
				  struct kl_errinfo *info)
{
	enum kl_err err = KL_OK;
	sqlite3_stmt *s;
	uint32_t attempts = 0;
	int rc;

	pthread_mutex_lock(&j->mu);
	s = stmt(j, ST_BUMP_ATTEMPTS);
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, kl_wall_ms());
	rc = run(s);
	if (rc != SQLITE_OK) {
		err = db_error(j, info, rc, "counting an attempt");
	} else if (sqlite3_changes(j->db) == 0) {
		err = kl_errinfo_set(info, KL_ENOTFOUND, "journal: no batch %lld", (long long)id);
	} else {
		s = stmt(j, ST_GET_ATTEMPTS);
		sqlite3_bind_int64(s, 1, id);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			attempts = (uint32_t)sqlite3_column_int64(s, 0);
		else
			err = db_error(j, info, rc, "reading attempts");
		sqlite3_reset(s);
	}
	pthread_mutex_unlock(&j->mu);
	if (!err && ret_attempts)
		*ret_attempts = attempts;
	return err;
}

enum kl_err journal_forget(struct journal *j, int64_t id, struct kl_errinfo *info)
{
	enum kl_err err = KL_OK;
	sqlite3_stmt *s;
	int rc;

	pthread_mutex_lock(&j->mu);
	s = stmt(j, ST_DEL_BATCH);
	sqlite3_bind_int64(s, 1, id);
	rc = run(s);
	if (rc != SQLITE_OK)
		err = db_error(j, info, rc, "deleting a batch");
	else if (sqlite3_changes(j->db) == 0)
		err = kl_errinfo_set(info, KL_ENOTFOUND, "journal: no batch %lld", (long long)id);
	pthread_mutex_unlock(&j->mu);
	return err;
}

enum kl_err journal_prune(struct journal *j, int64_t older_than_ms, size_t *ret_deleted,
			  struct kl_errinfo *info)
{
	enum kl_err err = KL_OK;
	sqlite3_stmt *s;
	size_t deleted = 0;
	int rc;

	pthread_mutex_lock(&j->mu);
	rc = begin(j);
	if (rc == SQLITE_OK) {
		s = stmt(j, ST_PRUNE_BATCHES);
		sqlite3_bind_int64(s, 1, older_than_ms);
		rc = run(s);
		deleted = rc == SQLITE_OK ? (size_t)sqlite3_changes(j->db) : 0;
	}
	if (rc == SQLITE_OK) {
		s = stmt(j, ST_PRUNE_CRASH);
		sqlite3_bind_int64(s, 1, older_than_ms);
		rc = run(s);
	}
	if (rc == SQLITE_OK)
		rc = commit(j);
	if (rc != SQLITE_OK) {
		err = db_error(j, info, rc, "pruning");
		rollback(j);
	}
	pthread_mutex_unlock(&j->mu);
	if (!err && ret_deleted)
		*ret_deleted = deleted;
	return err;
}

/* ---------------------------------------------------------------- listing */

static char *col_strdup(sqlite3_stmt *s, int col)
{
	const unsigned char *t = sqlite3_column_text(s, col);

	return t ? strdup((const char *)t) : NULL;
}

static void batch_done(struct journal_batch *b)
{
	free((char *)b->shard_id);
	free((char *)b->lease_key);
	for (size_t i = 0; i < b->n_objects; i++) {
		free((char *)b->objects[i].key);
		free((char *)b->objects[i].spool_path);
		free((char *)b->objects[i].spool_sha256);
	}
	free(b->objects);
}

void journal_batches_free(struct journal_batch *batches, size_t n)
{
	if (!batches)
		return;
	for (size_t i = 0; i < n; i++)
		batch_done(&batches[i]);
	free(batches);
}

/* Loads the objects of b (b->id set). Returns an SQLite code or -1 for ENOMEM. */
static int load_objects(struct journal *j, struct journal_batch *b)
{
	sqlite3_stmt *s = stmt(j, ST_LIST_OBJECTS);
	size_t cap = 0;
	int rc;

	sqlite3_bind_int64(s, 1, b->id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct journal_object *o;

		if (b->n_objects == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			struct journal_object *v = realloc(b->objects, ncap * sizeof(*v));

			if (!v) {
				rc = SQLITE_NOMEM;
				break;
			}
			b->objects = v;
			cap = ncap;
		}
		o = &b->objects[b->n_objects];
		memset(o, 0, sizeof(*o));
		b->n_objects++;
		o->key = col_strdup(s, 0);
		o->spool_path = col_strdup(s, 1);
		o->spool_bytes = (uint64_t)sqlite3_column_int64(s, 2);
		o->spool_sha256 = col_strdup(s, 3);
		o->uploaded = sqlite3_column_int(s, 4) != 0;
		if (!o->key || (sqlite3_column_type(s, 1) != SQLITE_NULL && !o->spool_path) ||
		    (sqlite3_column_type(s, 3) != SQLITE_NULL && !o->spool_sha256)) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static enum kl_err list_locked(struct journal *j, const char *shard_id, struct kl_errinfo *info,
			       struct journal_batch **ret_batches, size_t *ret_n)
{
	struct journal_batch *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s;
	enum kl_err err = KL_OK;
	int rc;

	/* A read transaction: the batches and their objects from one snapshot. */
	rc = sqlite3_exec(j->db, "BEGIN", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return db_error(j, info, rc, "begin");
	s = stmt(j, ST_LIST_PENDING);
	bind_text(s, 1, shard_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct journal_batch *b;
		const char *st;

		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct journal_batch *nv = realloc(v, ncap * sizeof(*nv));

			if (!nv) {
				rc = SQLITE_NOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		b = &v[n++];
		memset(b, 0, sizeof(*b));
		b->id = sqlite3_column_int64(s, 0);
		b->shard_id = col_strdup(s, 1);
		b->lease_key = col_strdup(s, 2);
		if (esn_set((const char *)sqlite3_column_text(s, 3),
			    (uint64_t)sqlite3_column_int64(s, 4), &b->first, NULL) != KL_OK ||
		    esn_set((const char *)sqlite3_column_text(s, 5),
			    (uint64_t)sqlite3_column_int64(s, 6), &b->last, NULL) != KL_OK) {
			err = kl_errinfo_set(info, KL_EIO, "journal: batch %lld has a bad ESN",
					     (long long)b->id);
			break;
		}
		st = (const char *)sqlite3_column_text(s, 7);
		if (!state_parse(st, &b->state)) {
			err = kl_errinfo_set(info, KL_EIO, "journal: batch %lld has an unknown state",
					     (long long)b->id);
			break;
		}
		b->attempts = (uint32_t)sqlite3_column_int64(s, 8);
		b->created_ms = sqlite3_column_int64(s, 9);
		b->updated_ms = sqlite3_column_int64(s, 10);
		if (!b->shard_id || !b->lease_key) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_reset(s);
	if (!err && rc != SQLITE_DONE)
		err = db_error(j, info, rc, "listing batches");
	/* Objects after the batch scan: one statement is stepped at a time. */
	for (size_t i = 0; !err && i < n; i++) {
		rc = load_objects(j, &v[i]);
		if (rc != SQLITE_OK)
			err = db_error(j, info, rc, "listing objects");
	}
	sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
	if (err) {
		journal_batches_free(v, n);
		return err;
	}
	if (n == 0) {
		free(v);
		v = NULL;
	}
	*ret_batches = v;
	*ret_n = n;
	return KL_OK;
}

enum kl_err journal_list_pending(struct journal *j, const char *shard_id,
				 struct journal_batch **ret_batches, size_t *ret_n,
				 struct kl_errinfo *info)
{
	enum kl_err err;

	pthread_mutex_lock(&j->mu);
	err = list_locked(j, shard_id, info, ret_batches, ret_n);
	pthread_mutex_unlock(&j->mu);
	return err;
}

/* ---------------------------------------------------------------- crash counters */

static enum kl_err crash_args(const char *shard_id, const struct esn *esn, bool esn_required,
			      struct kl_errinfo *info)
{
	if (!shard_id || !*shard_id)
		return kl_errinfo_set(info, KL_EINVAL, "journal: no shard id");
	if ((esn_required && !esn) || (esn && (!esn_valid(esn) || !sub_ok(esn))))
		return kl_errinfo_set(info, KL_EINVAL, "journal: no valid ESN");
	return KL_OK;
}

static int crash_read(struct journal *j, const char *shard_id, const struct esn *esn,
		      uint32_t *ret_count)
{
	sqlite3_stmt *s = stmt(j, ST_CRASH_GET);
	int rc;

	bind_text(s, 1, shard_id);
	bind_text(s, 2, esn->seq);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)esn->sub);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_count = (uint32_t)sqlite3_column_int64(s, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		*ret_count = 0;
		rc = SQLITE_OK;
	}
	sqlite3_reset(s);
	return rc;
}

enum kl_err journal_crash_bump(struct journal *j, const char *shard_id, const struct esn *esn,
			       uint32_t *ret_count, struct kl_errinfo *info)
{
	enum kl_err err = crash_args(shard_id, esn, true, info);
	sqlite3_stmt *s;
	uint32_t count = 0;
	int rc;

	if (err)
		return err;
	pthread_mutex_lock(&j->mu);
	rc = run(stmt(j, ST_SYNC_NORMAL));
	if (rc == SQLITE_OK) {
		s = stmt(j, ST_CRASH_BUMP);
		bind_text(s, 1, shard_id);
		bind_text(s, 2, esn->seq);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)esn->sub);
		sqlite3_bind_int64(s, 4, kl_wall_ms());
		rc = run(s);
		/* Back to FULL whatever happened: intents depend on it. */
		if (run(stmt(j, ST_SYNC_FULL)) != SQLITE_OK && rc == SQLITE_OK)
			rc = SQLITE_ERROR;
	}
	if (rc == SQLITE_OK)
		rc = crash_read(j, shard_id, esn, &count);
	if (rc != SQLITE_OK)
		err = db_error(j, info, rc, "bumping a crash counter");
	pthread_mutex_unlock(&j->mu);
	if (!err && ret_count)
		*ret_count = count;
	return err;
}

enum kl_err journal_crash_get(struct journal *j, const char *shard_id, const struct esn *esn,
			      uint32_t *ret_count, struct kl_errinfo *info)
{
	enum kl_err err = crash_args(shard_id, esn, true, info);
	uint32_t count = 0;
	int rc;

	if (err)
		return err;
	pthread_mutex_lock(&j->mu);
	rc = crash_read(j, shard_id, esn, &count);
	if (rc != SQLITE_OK)
		err = db_error(j, info, rc, "reading a crash counter");
	pthread_mutex_unlock(&j->mu);
	if (!err && ret_count)
		*ret_count = count;
	return err;
}

enum kl_err journal_crash_clear(struct journal *j, const char *shard_id, const struct esn *esn,
				struct kl_errinfo *info)
{
	enum kl_err err = crash_args(shard_id, esn, false, info);
	sqlite3_stmt *s;
	int rc;

	if (err)
		return err;
	pthread_mutex_lock(&j->mu);
	s = stmt(j, esn ? ST_CRASH_CLEAR_ONE : ST_CRASH_CLEAR_SHARD);
	bind_text(s, 1, shard_id);
	if (esn) {
		bind_text(s, 2, esn->seq);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)esn->sub);
	}
	rc = run(s);
	if (rc != SQLITE_OK)
		err = db_error(j, info, rc, "clearing crash counters");
	pthread_mutex_unlock(&j->mu);
	return err;
}

static int crash_entry_cmp(const void *a, const void *b)
{
	return esn_cmp(&((const struct journal_crash *)a)->esn, &((const struct journal_crash *)b)->esn);
}

enum kl_err journal_crash_list(struct journal *j, const char *shard_id,
			       struct journal_crash **ret_list, size_t *ret_n, struct kl_errinfo *info)
{
	enum kl_err err = crash_args(shard_id, NULL, false, info);
	struct journal_crash *list = NULL;
	size_t n = 0;
	sqlite3_stmt *s;
	int rc;

	if (err)
		return err;
	pthread_mutex_lock(&j->mu);
	s = stmt(j, ST_CRASH_LIST);
	bind_text(s, 1, shard_id);
	sqlite3_bind_int64(s, 2, JOURNAL_MAX_CRASHES);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *seq = (const char *)sqlite3_column_text(s, 0);
		struct journal_crash *c;

		if (!list) {
			list = calloc(JOURNAL_MAX_CRASHES, sizeof(*list));
			if (!list) {
				err = kl_errinfo_set(info, KL_ENOMEM, "journal: out of memory");
				break;
			}
		}
		c = &list[n];
		/* A row that is not an ESN (written by hand?) is skipped. */
		if (!seq || esn_set(seq, (uint64_t)sqlite3_column_int64(s, 1), &c->esn, NULL) != KL_OK)
			continue;
		c->count = (uint32_t)sqlite3_column_int64(s, 2);
		n++;
	}
	if (!err && rc != SQLITE_DONE)
		err = db_error(j, info, rc, "listing crash counters");
	sqlite3_reset(s);
	pthread_mutex_unlock(&j->mu);
	if (err || !n) {
		free(list);
		list = NULL;
		n = 0;
	}
	if (err)
		return err;
	if (n > 1)
		qsort(list, n, sizeof(*list), crash_entry_cmp);
	*ret_list = list;
	*ret_n = n;
	return KL_OK;
}
