/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_delivery.c: the S3 record sink without a network: batches sealed by
 * bytes, records and age (fake clock), partition routing and the partition
 * cap, error routing, deterministic keys, the intent state codec, and the
 * exactly-once protocol against the real lease coordinator (memory store)
 * and the real journal, with S3 replaced by a recording uploader that can
 * be told to fail. Each test has its own temporary directory.
 */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>

#include "delivery.h"
#include "journal.h"
#include "keytmpl.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store_mem.h"
#include "spool.h"
#include "testutil.h"
#include "util.h"

#define SHARD "shardId-000000000007"
#define SEQ_PREFIX "4959033827149025660855969253"   /* 28 digits; 28 more follow */
#define ARRIVAL0 ((int64_t)1795291116903)           /* 2026-11-21T... UTC */

/* ================================================================ fake S3 */

struct fobj {
	char *key;
	char *content_type;
	char *encoding;
	uint8_t *body;
	size_t len;
};

struct fake_s3 {
	struct fobj *objs;
	size_t n;
	uint64_t uploads;         /* successful upload calls */
	uint64_t removes;
	uint32_t fail_next;       /* the next N upload calls fail */
	bool fail_all;
	uint32_t ok_before_fail;  /* with fail_after: let this many succeed first */
	bool fail_after;
};

static struct fobj *fake_find(struct fake_s3 *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->objs[i].key, key) == 0)
			return &s->objs[i];
	return NULL;
}

static enum kl_err fake_upload(void *ctx, const struct delivery_upload *up,
			       struct delivery_upload_result *ret, struct kl_errinfo *info)
{
	struct fake_s3 *s = ctx;
	struct fobj *o;
	uint8_t *body;
	struct stat sb;
	int fd;

	if (s->fail_all || s->fail_next) {
		if (s->fail_next)
			s->fail_next--;
		return kl_errinfo_set(info, KL_ESERVER, "fake S3: InternalError");
	}
	if (s->fail_after) {
		if (s->ok_before_fail == 0)
			return kl_errinfo_set(info, KL_ETIMEOUT, "fake S3: timed out");
		s->ok_before_fail--;
	}
	fd = open(up->path, O_RDONLY);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(fstat(fd, &sb) == 0);
	CU_ASSERT_EQUAL((uint64_t)sb.st_size, up->bytes);
	body = malloc((size_t)sb.st_size + 1);
	CU_ASSERT_FATAL(body != NULL);
	CU_ASSERT_FATAL(read(fd, body, (size_t)sb.st_size) == sb.st_size);
	body[sb.st_size] = '\0';   /* tests read bodies as text */
	close(fd);
	o = fake_find(s, up->key);
	if (!o) {
		s->objs = realloc(s->objs, (s->n + 1) * sizeof(*s->objs));
		CU_ASSERT_FATAL(s->objs != NULL);
		o = &s->objs[s->n++];
		memset(o, 0, sizeof(*o));
		o->key = strdup(up->key);
	} else {
		free(o->body);
		free(o->content_type);
		free(o->encoding);
	}
	o->body = body;
	o->len = (size_t)sb.st_size;
	o->content_type = strdup(up->content_type);
	o->encoding = up->content_encoding ? strdup(up->content_encoding) : NULL;
	s->uploads++;
	ret->bytes = o->len;
	ret->n_parts = 0;
	return KL_OK;
}

static enum kl_err fake_remove(void *ctx, const char *key, struct kl_errinfo *info)
{
	struct fake_s3 *s = ctx;

	(void)info;
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->objs[i].key, key) == 0) {
			free(s->objs[i].key);
			free(s->objs[i].body);
			free(s->objs[i].content_type);
			free(s->objs[i].encoding);
			s->objs[i] = s->objs[--s->n];
			break;
		}
	s->removes++;
	return KL_OK;
}

static const struct delivery_uploader_ops fake_ops = { fake_upload, fake_remove };

static void fake_done(struct fake_s3 *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->objs[i].key);
		free(s->objs[i].body);
		free(s->objs[i].content_type);
		free(s->objs[i].encoding);
	}
	free(s->objs);
	memset(s, 0, sizeof(*s));
}

static int cmp_fobj(const void *a, const void *b)
{
	return strcmp(((const struct fobj *)a)->key, ((const struct fobj *)b)->key);
}

static void fake_sort(struct fake_s3 *s)
{
	if (s->n)
		qsort(s->objs, s->n, sizeof(*s->objs), cmp_fobj);
}

/* Decompressed body of o (gzip or none), NUL-terminated; caller frees. */
static char *body_text(const struct fobj *o, size_t *ret_len)
{
	if (o->encoding && strcmp(o->encoding, "gzip") == 0) {
		size_t cap = o->len * 20 + 1024;
		char *out = malloc(cap);
		z_stream zs;

		memset(&zs, 0, sizeof(zs));
		CU_ASSERT_FATAL(out && inflateInit2(&zs, 15 + 16) == Z_OK);
		zs.next_in = o->body;
		zs.avail_in = (uInt)o->len;
		zs.next_out = (Bytef *)out;
		zs.avail_out = (uInt)cap - 1;
		CU_ASSERT_EQUAL(inflate(&zs, Z_FINISH), Z_STREAM_END);
		*ret_len = zs.total_out;
		out[zs.total_out] = '\0';
		inflateEnd(&zs);
		return out;
	}
	{
		char *out = malloc(o->len + 1);

		CU_ASSERT_FATAL(out != NULL);
		memcpy(out, o->body, o->len);
		out[o->len] = '\0';
		*ret_len = o->len;
		return out;
	}
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ================================================================ environment */

struct worker {
	struct lease_store *store;
	struct lease_coord *coord;
	char id[16];
};

struct env {
	struct lease_fake_clock fc;
	struct lease_clock clock;
	struct lease_mem_table *table;
	struct worker w;             /* the worker under test */
	char dir[256];
	char spool_dir[300];
	char journal_path[300];
	struct journal *journal;
	struct keytmpl *data_tmpl;
	struct keytmpl *error_tmpl;
	struct fake_s3 s3;
	struct delivery_opts opts;
	struct delivery *d;
	int reports;
};

static void report_cb(void *ctx, enum log_level level, const char *msg)
{
	struct env *e = ctx;

	(void)level;
	(void)msg;
	e->reports++;
}

static void worker_start(struct env *e, struct worker *w, const char *id)
{
	struct lease_coord_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	snprintf(w->id, sizeof(w->id), "%s", id);
	cfg.worker_id = w->id;
	cfg.seed = 7 + (uint64_t)id[0];
	w->store = lease_store_mem_new(e->table, &e->clock);
	CU_ASSERT_PTR_NOT_NULL_FATAL(w->store);
	CU_ASSERT_EQUAL_FATAL(lease_coord_new(&cfg, w->store, &e->clock, NULL, &w->coord, NULL), KL_OK);
}

static void worker_crash(struct worker *w)
{
	lease_coord_free(w->coord);
	lease_store_free(w->store);
	w->coord = NULL;
	w->store = NULL;
}

/* Advances the clock by ms in 100 ms steps, ticking the coordinator. */
static void run(struct env *e, struct worker *w, int64_t ms)
{
	for (int64_t t = 0; t < ms; t += 100) {
		lease_fake_clock_advance(&e->fc, 100);
		if (w->coord)
			lease_coord_tick(w->coord, NULL);
	}
}

/* Ticks until w may process SHARD; returns its grant (free with lease_grants_free). */
static struct lease_grant *wait_grant(struct env *e, struct worker *w)
{
	for (int i = 0; i < 600; i++) {
		struct lease_grant *g;
		size_t n;

		lease_coord_tick(w->coord, NULL);
		CU_ASSERT_EQUAL_FATAL(lease_coord_grants(w->coord, &g, &n), KL_OK);
		for (size_t k = 0; k < n; k++)
			if (strcmp(g[k].key, SHARD) == 0 &&
			    lease_coord_check(w->coord, SHARD, g[k].token, NULL) == KL_OK) {
				if (k != 0) {
					struct lease_grant tmp = g[0];

					g[0] = g[k];
					g[k] = tmp;
				}
				for (size_t j = 1; j < n; j++) {
					free(g[j].key);
					free(g[j].pending_state);
					lease_strset_done(&g[j].parents);
					free(g[j].starting_hash_key);
					free(g[j].ending_hash_key);
				}
				return g;
			}
		lease_grants_free(g, n);
		lease_fake_clock_advance(&e->fc, 100);
	}
	CU_FAIL_FATAL("lease never became processable");
	return NULL;
}

static void make_dirs(struct env *e)
{
	const char *base = getenv("TMPDIR");
	char tmpl[256];

	snprintf(tmpl, sizeof(tmpl), "%s/kl-delivery-XXXXXX", base && *base ? base : "/tmp");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpl));
	snprintf(e->dir, sizeof(e->dir), "%s", tmpl);
	snprintf(e->spool_dir, sizeof(e->spool_dir), "%s/spool", e->dir);
	snprintf(e->journal_path, sizeof(e->journal_path), "%s/journal.db", e->dir);
	CU_ASSERT_EQUAL_FATAL(mkdir(e->spool_dir, 0750), 0);
}

static void rm_rf(const char *dir)
{
	DIR *dd = opendir(dir);
	struct dirent *de;
	char p[600];
	struct stat sb;

	if (!dd)
		return;
	while ((de = readdir(dd)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
			rm_rf(p);
		else
			unlink(p);
	}
	closedir(dd);
	rmdir(dir);
}

static size_t count_files(const char *dir)
{
	DIR *dd = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	if (!dd)
		return 0;
	while ((de = readdir(dd)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dd);
	return n;
}

static void put_lease(struct env *e)
{
	struct lease l;

	lease_init(&l);
	CU_ASSERT_EQUAL(lease_set_str(&l.key, SHARD), KL_OK);
	l.checkpoint = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	CU_ASSERT_EQUAL(lease_mem_table_put(e->table, &l), KL_OK);
	lease_done(&l);
}

static void set_templates(struct env *e, const char *data, const char *err)
{
	keytmpl_free(e->data_tmpl);
	keytmpl_free(e->error_tmpl);
	e->data_tmpl = e->error_tmpl = NULL;
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile(data, KEYTMPL_DATA, &e->data_tmpl, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile(err, KEYTMPL_ERROR, &e->error_tmpl, NULL), KL_OK);
	e->opts.data_tmpl = e->data_tmpl;
	e->opts.error_tmpl = e->error_tmpl;
}

/* A table with one lease, worker "A" holding it, templates, a journal. */
static void env_init(struct env *e)
{
	memset(e, 0, sizeof(*e));
	lease_clock_fake(&e->fc, 1000000, &e->clock);
	e->table = lease_mem_table_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(e->table);
	put_lease(e);
	worker_start(e, &e->w, "A");
	make_dirs(e);
	CU_ASSERT_EQUAL_FATAL(journal_open(e->journal_path, &e->journal, NULL), KL_OK);
	set_templates(e, "data/!{partition:kind}/!{timestamp:yyyy/MM/dd}/",
		      "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/");
	e->opts.coord = e->w.coord;
	e->opts.journal = e->journal;
	e->opts.spool_dir = e->spool_dir;
	e->opts.uploader.ops = &fake_ops;
	e->opts.uploader.ctx = &e->s3;
	e->opts.clock = e->clock;
	e->opts.seed = 42;
	e->opts.report = report_cb;
	e->opts.report_ctx = e;
}

/* Opens the delivery on the current worker's grant. */
static void open_delivery(struct env *e)
{
	struct lease_grant *g = wait_grant(e, &e->w);
	struct kl_errinfo info;

	e->opts.grant = g;
	e->opts.coord = e->w.coord;
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(delivery_new(&e->opts, &e->d, &info), KL_OK);
	e->opts.grant = NULL;
	lease_grants_free(g, 1);
}

static void env_done(struct env *e)
{
	delivery_free(e->d);
	e->d = NULL;
	worker_crash(&e->w);
	journal_close(e->journal);
	keytmpl_free(e->data_tmpl);
	keytmpl_free(e->error_tmpl);
	lease_mem_table_free(e->table);
	fake_done(&e->s3);
	rm_rf(e->dir);
}

/* ================================================================ records */

/* One test record and what the "plugin" made of it. */
struct trec {
	char seq[64];
	char pk[32];
	char data[4200];
	char out_data[4][4200];
	char kind[4][32];
	struct xform_pkey keys[4][2];
	struct xform_output outs[4];
	struct kl_transform_record r;
	struct xform_result res;
};

/* Record i: ESN = (SEQ_PREFIX + i/2, sub i%2), two user records per aggregate. */
static void trec_init(struct trec *t, unsigned i)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->seq, sizeof(t->seq), SEQ_PREFIX "%028u", 1000 + i / 2);
	snprintf(t->pk, sizeof(t->pk), "user-%u", i % 7);
	snprintf(t->data, sizeof(t->data), "{\"id\":%u}", i);
	t->r.data = (const uint8_t *)t->data;
	t->r.len = strlen(t->data);
	t->r.partition_key = t->pk;
	t->r.sequence_number = t->seq;
	t->r.sub_sequence_number = i % 2;
	t->r.shard_id = SHARD;
	t->r.approximate_arrival_ms = ARRIVAL0 + (int64_t)i * 10;
}

/* Adds an output with partition kind (NULL = no key); pad bytes of padding. */
static void trec_out(struct trec *t, unsigned i, const char *kind, size_t pad)
{
	size_t k = t->res.noutputs;
	int n;

	n = snprintf(t->out_data[k], sizeof(t->out_data[k]), "{\"id\":%u,\"o\":%zu,\"kind\":\"%s\"",
		     i, k, kind ? kind : "");
	for (size_t p = 0; p < pad && (size_t)n + 2 < sizeof(t->out_data[k]); p++)
		t->out_data[k][n++] = 'x';
	t->out_data[k][n++] = '}';
	t->out_data[k][n] = '\0';
	t->outs[k].data = (const uint8_t *)t->out_data[k];
	t->outs[k].len = (size_t)n;
	if (kind) {
		snprintf(t->kind[k], sizeof(t->kind[k]), "%s", kind);
		t->keys[k][0].name = "kind";
		t->keys[k][0].value = t->kind[k];
		t->outs[k].keys = t->keys[k];
		t->outs[k].nkeys = 1;
	}
	t->res.result = KL_TRANSFORM_OK;
	t->res.outputs = t->outs;
	t->res.noutputs = k + 1;
}

static void trec_ok(struct trec *t, unsigned i, const char *kind)
{
	trec_init(t, i);
	trec_out(t, i, kind, 0);
}

static enum kl_err push_ok(struct env *e, unsigned i, const char *kind)
{
	struct trec t;

	trec_ok(&t, i, kind);
	return delivery_push(e->d, &t.r, &t.res, NULL);
}

static void esn_of(unsigned i, struct lease_esn *ret)
{
	char seq[64];

	snprintf(seq, sizeof(seq), SEQ_PREFIX "%028u", 1000 + i / 2);
	CU_ASSERT_EQUAL(lease_esn_parse(seq, i % 2, ret, NULL), KL_OK);
}

static struct lease read_lease(struct env *e)
{
	struct lease l;

	lease_init(&l);
	CU_ASSERT_EQUAL(lease_mem_table_read(e->table, SHARD, &l), KL_OK);
	return l;
}

/* The lease's checkpoint is record i's ESN, and no intent is pending. */
static void assert_checkpoint(struct env *e, unsigned i)
{
	struct lease l = read_lease(e);
	struct lease_esn want;

	esn_of(i, &want);
	CU_ASSERT_EQUAL(lease_esn_cmp(&l.checkpoint, &want), 0);
	CU_ASSERT_EQUAL(l.pending.kind, LEASE_ESN_NONE);
	lease_done(&l);
}

/*
 * Every id in [0, n) appears in the fake bucket as often as want(i) says
 * (0 = dropped, 1 = once), in ascending order within each object, looking
 * for "\"id\":N," (data) or the base64 of "{\"id\":N}" (error records).
 */
static void assert_ids(struct env *e, unsigned n, int (*want)(unsigned))
{
	unsigned *seen = calloc(n, sizeof(*seen));

	CU_ASSERT_FATAL(seen != NULL);
	for (size_t k = 0; k < e->s3.n; k++) {
		size_t len;
		char *text = body_text(&e->s3.objs[k], &len);
		long prev = -1;

		for (char *line = text; line && *line;) {
			char *nl = strchr(line, '\n');
			unsigned id;

			if (nl)
				*nl = '\0';
			if (sscanf(line, "{\"id\":%u", &id) == 1) {
				/* a data record */
			} else {
				const char *rd = strstr(line, "\"rawData\":\"");
				uint8_t raw[256];
				size_t rl = 0;
				const char *end;

				CU_ASSERT_FATAL(rd != NULL);
				rd += 11;
				end = strchr(rd, '"');
				CU_ASSERT_FATAL(end && (size_t)(end - rd) < 300);
				CU_ASSERT_EQUAL_FATAL(kl_b64_decode(rd, (size_t)(end - rd), raw, &rl), KL_OK);
				raw[rl] = '\0';
				CU_ASSERT_EQUAL_FATAL(sscanf((char *)raw, "{\"id\":%u", &id), 1);
			}
			CU_ASSERT_FATAL(id < n);
			CU_ASSERT((long)id >= prev);   /* order within an object */
			prev = id;
			seen[id]++;
			line = nl ? nl + 1 : NULL;
		}
		free(text);
	}
	for (unsigned i = 0; i < n; i++) {
		if (seen[i] != (unsigned)want(i))
			fprintf(stderr, "\n  id %u seen %u times, want %d\n", i, seen[i], want(i));
		CU_ASSERT_EQUAL(seen[i], (unsigned)want(i));
	}
	free(seen);
}

static int want_once(unsigned i)
{
	(void)i;
	return 1;
}

/* ================================================================ sealing */

static void test_seal_by_records(void)
{
	struct env e;
	struct delivery_stats st;

	env_init(&e);
	e.opts.buffer_records = 10;
	open_delivery(&e);
	for (unsigned i = 0; i < 25; i++) {
		CU_ASSERT_EQUAL(push_ok(&e, i, "a"), KL_OK);
		/* sealed and committed exactly when the 10th, 20th record came */
		CU_ASSERT_EQUAL(e.s3.uploads, (i + 1) / 10);
	}
	assert_checkpoint(&e, 19);
	CU_ASSERT_FALSE(delivery_blocked(e.d));
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.n, 3);
	assert_checkpoint(&e, 24);
	fake_sort(&e.s3);
	for (size_t k = 0; k < e.s3.n; k++) {
		size_t len;
		char *text = body_text(&e.s3.objs[k], &len);

		CU_ASSERT_EQUAL(count_lines(text), k < 2 ? 10 : 5);
		CU_ASSERT_STRING_EQUAL(e.s3.objs[k].content_type, "application/x-ndjson");
		CU_ASSERT_PTR_NULL(e.s3.objs[k].encoding);
		free(text);
	}
	assert_ids(&e, 25, want_once);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.records_in, 25);
	CU_ASSERT_EQUAL(st.records_out, 25);
	CU_ASSERT_EQUAL(st.batches_committed, 3);
	CU_ASSERT_EQUAL(st.objects_uploaded, 3);
	CU_ASSERT_EQUAL(st.intents, 3);
	CU_ASSERT_EQUAL(st.lease_writes, 6);
	CU_ASSERT(st.last_commit_wall_ms > 0);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_NONE);
	/* committed spools are gone; the journal has nothing pending */
	CU_ASSERT_EQUAL(count_files(e.spool_dir), 0);
	{
		struct journal_batch *rows;
		size_t n;

		CU_ASSERT_EQUAL(journal_list_pending(e.journal, SHARD, &rows, &n, NULL), KL_OK);
		CU_ASSERT_EQUAL(n, 0);
		journal_batches_free(rows, n);
	}
	env_done(&e);
}

static void test_seal_by_bytes(void)
{
	struct env e;
	uint64_t before;

	env_init(&e);
	e.opts.buffer_bytes = 1000;
	e.opts.spool.codec = SPOOL_CODEC_GZIP;
	open_delivery(&e);
	for (unsigned i = 0; i < 200; i++)
		CU_ASSERT_EQUAL(push_ok(&e, i, "a"), KL_OK);
	before = e.s3.uploads;
	CU_ASSERT(before >= 5);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	fake_sort(&e.s3);
	for (size_t k = 0; k < e.s3.n; k++) {
		size_t len;
		char *text = body_text(&e.s3.objs[k], &len);
		char *last_line;

		CU_ASSERT_STRING_EQUAL(e.s3.objs[k].encoding, "gzip");
		CU_ASSERT(strlen(e.s3.objs[k].key) > 3 &&
			  strcmp(e.s3.objs[k].key + strlen(e.s3.objs[k].key) - 3, ".gz") == 0);
		/* sealed batches reach the limit, and only the last record crossed it */
		if (k + 1 < e.s3.n) {
			CU_ASSERT(len >= 1000);
			text[len - 1] = '\0';
			last_line = strrchr(text, '\n');
			CU_ASSERT(last_line && (size_t)(last_line + 1 - text) < 1000);
		}
		free(text);
	}
	assert_ids(&e, 200, want_once);
	env_done(&e);
}

static void test_seal_by_age(void)
{
	struct env e;
	int64_t t0;

	env_init(&e);
	e.opts.buffer_ms = 5000;
	open_delivery(&e);
	t0 = lease_clock_mono(&e.clock);
	CU_ASSERT_EQUAL(push_ok(&e, 0, "a"), KL_OK);
	run(&e, &e.w, 2000);
	CU_ASSERT_EQUAL(push_ok(&e, 1, "a"), KL_OK);
	run(&e, &e.w, 2900);
	CU_ASSERT_EQUAL(delivery_tick(e.d, lease_clock_mono(&e.clock), NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);           /* 4.9 s since the first push */
	CU_ASSERT_EQUAL(delivery_tick(e.d, t0 + 4999, NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);
	run(&e, &e.w, 100);
	CU_ASSERT_EQUAL(delivery_tick(e.d, t0 + 5000, NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 1);
	assert_checkpoint(&e, 1);
	/* an empty delivery never seals on age */
	run(&e, &e.w, 6000);
	CU_ASSERT_EQUAL(delivery_tick(e.d, lease_clock_mono(&e.clock), NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 1);
	env_done(&e);
}

static void test_dropped_only(void)
{
	struct env e;
	struct delivery_stats st;

	env_init(&e);
	open_delivery(&e);
	for (unsigned i = 0; i < 5; i++) {
		struct trec t;

		trec_init(&t, i);
		t.res.result = KL_TRANSFORM_DROPPED;
		CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	}
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);
	assert_checkpoint(&e, 4);   /* the checkpoint moves on anyway */
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.records_dropped, 5);
	CU_ASSERT_EQUAL(st.intents, 0);
	CU_ASSERT_EQUAL(st.batches_committed, 1);
	env_done(&e);
}

/* ================================================================ routing */

static void test_partition_routing(void)
{
	static const char *kinds[] = { "a", "b", "a", "c", "b", "a" };
	struct env e;
	char ek0[ESN_KEY_MAX], ek5[ESN_KEY_MAX], want[512];
	struct esn f, l;

	env_init(&e);
	open_delivery(&e);
	for (unsigned i = 0; i < 6; i++)
		CU_ASSERT_EQUAL(push_ok(&e, i, kinds[i]), KL_OK);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(e.s3.n, 3);
	fake_sort(&e.s3);
	/* one batch: every part has the batch's range and first arrival time */
	CU_ASSERT_EQUAL(esn_set(SEQ_PREFIX "0000000000000000000000001000", 0, &f, NULL), KL_OK);
	CU_ASSERT_EQUAL(esn_set(SEQ_PREFIX "0000000000000000000000001002", 1, &l, NULL), KL_OK);
	esn_key(&f, ek0);
	esn_key(&l, ek5);
	snprintf(want, sizeof(want), "data/a/2026/11/21/" SHARD "/%s_%s", ek0, ek5);
	CU_ASSERT_STRING_EQUAL(e.s3.objs[0].key, want);
	snprintf(want, sizeof(want), "data/b/2026/11/21/" SHARD "/%s_%s", ek0, ek5);
	CU_ASSERT_STRING_EQUAL(e.s3.objs[1].key, want);
	snprintf(want, sizeof(want), "data/c/2026/11/21/" SHARD "/%s_%s", ek0, ek5);
	CU_ASSERT_STRING_EQUAL(e.s3.objs[2].key, want);
	{
		size_t len;
		char *a = body_text(&e.s3.objs[0], &len);
		char *b = body_text(&e.s3.objs[1], &len);
		char *c = body_text(&e.s3.objs[2], &len);

		CU_ASSERT_STRING_EQUAL(a, "{\"id\":0,\"o\":0,\"kind\":\"a\"}\n{\"id\":2,\"o\":0,\"kind\":\"a\"}\n"
				       "{\"id\":5,\"o\":0,\"kind\":\"a\"}\n");
		CU_ASSERT_STRING_EQUAL(b, "{\"id\":1,\"o\":0,\"kind\":\"b\"}\n"
				       "{\"id\":4,\"o\":0,\"kind\":\"b\"}\n");
		CU_ASSERT_STRING_EQUAL(c, "{\"id\":3,\"o\":0,\"kind\":\"c\"}\n");
		free(a);
		free(b);
		free(c);
	}
	env_done(&e);
}

static void test_partition_cap(void)
{
	static const char *kinds[] = { "a", "b", "a", "c", "a", "d", "b" };
	struct env e;
	struct delivery_stats st;

	env_init(&e);
	e.opts.max_partitions = 2;
	open_delivery(&e);
	for (unsigned i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(push_ok(&e, i, kinds[i]), KL_OK);
	/* "c" (record 3) could not open a third partition: batch 0..2 sealed */
	CU_ASSERT_EQUAL(e.s3.uploads, 2);
	assert_checkpoint(&e, 2);
	for (unsigned i = 4; i < 7; i++)
		CU_ASSERT_EQUAL(push_ok(&e, i, kinds[i]), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 4);
	assert_checkpoint(&e, 4);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	/* batch 3..4 {c, a} sealed by "d", then 5..6 {d, b} by the flush */
	CU_ASSERT_EQUAL(e.s3.n, 6);
	assert_checkpoint(&e, 6);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.partition_cap_seals, 2);
	CU_ASSERT_EQUAL(st.batches_committed, 3);
	assert_ids(&e, 7, want_once);

	/* one record needing more partitions than a batch may have: error output */
	{
		struct trec t;

		trec_init(&t, 7);
		trec_out(&t, 7, "x", 0);
		trec_out(&t, 7, "y", 0);
		trec_out(&t, 7, "z", 0);
		CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
		CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
		CU_ASSERT_EQUAL(e.s3.n, 7);
		fake_sort(&e.s3);
		CU_ASSERT(strncmp(e.s3.objs[6].key, "errors/partitioning-failed/", 27) == 0);
		CU_ASSERT_PTR_NOT_NULL(strstr((char *)e.s3.objs[6].body, "more than a batch may have"));
	}
	env_done(&e);
}

static int want_routing(unsigned i)
{
	return i == 5 ? 0 : 1;
}

static void test_error_routing(void)
{
	struct env e;
	struct trec t;
	struct delivery_stats st;
	size_t len;
	char *text;

	env_init(&e);
	e.opts.spool.codec = SPOOL_CODEC_GZIP;
	open_delivery(&e);
	CU_ASSERT_EQUAL(push_ok(&e, 0, "a"), KL_OK);
	trec_init(&t, 1);
	t.res.result = KL_TRANSFORM_FAILED;
	t.res.reason = "not JSON";
	CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	CU_ASSERT_EQUAL(push_ok(&e, 2, NULL), KL_OK);        /* no partition key */
	CU_ASSERT_EQUAL(push_ok(&e, 3, ".."), KL_OK);        /* not a safe value */
	/* two outputs, the second without its key: the whole record is an error */
	trec_init(&t, 4);
	trec_out(&t, 4, "a", 0);
	trec_out(&t, 4, NULL, 0);
	CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	trec_init(&t, 5);
	t.res.result = KL_TRANSFORM_DROPPED;
	CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	trec_init(&t, 6);
	CU_ASSERT_EQUAL(delivery_push_error(e.d, &t.r, ERRREC_PLUGIN_CRASH, NULL, 3, NULL), KL_OK);
	trec_init(&t, 7);
	t.res.result = (enum kl_transform_result)7;   /* not a result: never dropped */
	CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(e.s3.n, 3);
	fake_sort(&e.s3);
	CU_ASSERT(strncmp(e.s3.objs[0].key, "data/a/", 7) == 0);
	CU_ASSERT(strncmp(e.s3.objs[1].key, "errors/partitioning-failed/2026/11/21/" SHARD "/", 59) == 0);
	CU_ASSERT(strncmp(e.s3.objs[2].key, "errors/processing-failed/2026/11/21/" SHARD "/", 57) == 0);
	CU_ASSERT_STRING_EQUAL(e.s3.objs[1].content_type, DELIVERY_ERROR_CONTENT_TYPE);
	CU_ASSERT_STRING_EQUAL(e.s3.objs[1].encoding, "gzip");
	text = body_text(&e.s3.objs[1], &len);
	CU_ASSERT_EQUAL(count_lines(text), 3);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"errorCode\":\"partition-key-missing\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "partition key 'kind' is missing"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "output 1: partition key 'kind' is missing"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"errorCode\":\"partition-key-invalid\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"shardId\":\"" SHARD "\""));
	free(text);
	text = body_text(&e.s3.objs[2], &len);
	CU_ASSERT_EQUAL(count_lines(text), 3);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "unknown transform result 7"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"errorCode\":\"processing-failed\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"errorMessage\":\"not JSON\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"errorCode\":\"plugin-crash\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"attemptsMade\":3"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"partitionKey\":\"user-1\""));
	free(text);
	/* record 4's first output went nowhere: it is only in the error object */
	text = body_text(&e.s3.objs[0], &len);
	CU_ASSERT_STRING_EQUAL(text, "{\"id\":0,\"o\":0,\"kind\":\"a\"}\n");
	free(text);
	assert_ids(&e, 8, want_routing);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.records_failed, 6);
	CU_ASSERT_EQUAL(st.records_dropped, 1);
	CU_ASSERT_EQUAL(st.records_out, 1);
	env_done(&e);

	/* an error prefix without the error type: one error object per batch */
	env_init(&e);
	set_templates(&e, "data/!{partition:kind}/", "errors/");
	open_delivery(&e);
	trec_init(&t, 0);
	t.res.result = KL_TRANSFORM_FAILED;
	t.res.reason = "r";
	CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	CU_ASSERT_EQUAL(push_ok(&e, 1, NULL), KL_OK);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(e.s3.n, 1);
	CU_ASSERT(strncmp(e.s3.objs[0].key, "errors/" SHARD "/", 28) == 0);
	CU_ASSERT_EQUAL(count_lines((char *)e.s3.objs[0].body), 2);
	env_done(&e);
}

/* Runs a fixed mixed workload; returns "key sha\n..." of every object. */
static char *workload_fingerprint(const char *spool_codec)
{
	static const char *kinds[] = { "a", "b", "c" };
	struct env e;
	struct buf out;
	char *r;

	env_init(&e);
	e.opts.buffer_records = 17;
	e.opts.spool.codec = strcmp(spool_codec, "gzip") == 0 ? SPOOL_CODEC_GZIP : SPOOL_CODEC_NONE;
	open_delivery(&e);
	for (unsigned i = 0; i < 100; i++) {
		struct trec t;

		trec_init(&t, i);
		if (i % 11 == 0) {
			t.res.result = KL_TRANSFORM_FAILED;
			t.res.reason = "eleven";
		} else {
			trec_out(&t, i, kinds[i % 3], i % 5);
		}
		CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
		run(&e, &e.w, 100);   /* wall time passes: must not matter */
	}
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	fake_sort(&e.s3);
	buf_init(&out, 0);
	for (size_t k = 0; k < e.s3.n; k++) {
		uint8_t md[32];
		char hex[65];
		unsigned int mdlen = 0;

		CU_ASSERT(EVP_Digest(e.s3.objs[k].body, e.s3.objs[k].len, md, &mdlen, EVP_sha256(),
				     NULL) == 1);
		kl_hex(md, 32, hex);
		buf_printf(&out, "%s %s\n", e.s3.objs[k].key, hex);
	}
	env_done(&e);
	r = buf_steal(&out);
	buf_done(&out);
	return r;
}

static void test_deterministic_keys(void)
{
	char *a = workload_fingerprint("gzip");
	char *b = workload_fingerprint("gzip");
	char *c = workload_fingerprint("none");

	CU_ASSERT(count_lines(a) >= 12);
	CU_ASSERT_STRING_EQUAL(a, b);   /* other dir, other clock offset, same bytes */
	CU_ASSERT_STRING_NOT_EQUAL(a, c);
	free(a);
	free(b);
	free(c);
}

/* ================================================================ state codec */

static void test_state_roundtrip(void)
{
	struct delivery_state st, back;
	struct delivery_state_object objs[5] = {
		{ DELIVERY_OBJ_DATA, "data/kind=b/2026/" SHARD "/x_y.gz" },
		{ DELIVERY_OBJ_DATA, "data/kind=a/2026/" SHARD "/x_y.gz" },
		{ DELIVERY_OBJ_ERROR, "errors/processing-failed/2026/" SHARD "/x_y.gz" },
		{ DELIVERY_OBJ_STALE, "old/kind=a/" SHARD "/x_y" },
		{ DELIVERY_OBJ_DATA, "data/kind=aa/2026/" SHARD "/x_y.gz" },
	};
	struct buf b;
	struct kl_errinfo info;

	memset(&st, 0, sizeof(st));
	CU_ASSERT_EQUAL(esn_set("49590338271490256608559692538361571095921575989136588898", 7,
				&st.first, NULL), KL_OK);
	st.first_arrival_ms = ARRIVAL0;
	st.records = 123456;
	st.objects = objs;
	st.n_objects = 5;
	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(delivery_state_encode(&st, &b, NULL), KL_OK);
	CU_ASSERT_EQUAL(memcmp(b.data, "KL\x01", 3), 0);
	CU_ASSERT_EQUAL_FATAL(delivery_state_decode(b.data, b.len, &back, NULL), KL_OK);
	CU_ASSERT_STRING_EQUAL(back.first.seq, st.first.seq);
	CU_ASSERT_EQUAL(back.first.sub, 7);
	CU_ASSERT_EQUAL(back.first_arrival_ms, ARRIVAL0);
	CU_ASSERT_EQUAL(back.records, 123456);
	CU_ASSERT_EQUAL_FATAL(back.n_objects, 5);
	/* sorted by key */
	CU_ASSERT_STRING_EQUAL(back.objects[0].key, objs[1].key);
	CU_ASSERT_EQUAL(back.objects[0].kind, DELIVERY_OBJ_DATA);
	CU_ASSERT_STRING_EQUAL(back.objects[1].key, objs[4].key);
	CU_ASSERT_STRING_EQUAL(back.objects[2].key, objs[0].key);
	CU_ASSERT_STRING_EQUAL(back.objects[3].key, objs[2].key);
	CU_ASSERT_EQUAL(back.objects[3].kind, DELIVERY_OBJ_ERROR);
	CU_ASSERT_STRING_EQUAL(back.objects[4].key, objs[3].key);
	CU_ASSERT_EQUAL(back.objects[4].kind, DELIVERY_OBJ_STALE);
	delivery_state_done(&back);

	/* every single-byte corruption and every truncation is refused */
	for (size_t i = 0; i < b.len; i++) {
		b.data[i] ^= 0x20;
		kl_errinfo_clear(&info);
		CU_ASSERT_EQUAL(delivery_state_decode(b.data, b.len, &back, &info), KL_EPARSE);
		b.data[i] ^= 0x20;
	}
	for (size_t n = 0; n < b.len; n++)
		CU_ASSERT_EQUAL(delivery_state_decode(b.data, n, &back, NULL), KL_EPARSE);
	CU_ASSERT_EQUAL(delivery_state_decode("{\"kcl\":1}", 9, &back, NULL), KL_EPARSE);
	b.data[2] = 2;    /* a later version */
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(delivery_state_decode(b.data, b.len, &back, &info), KL_EPARSE);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "version 2"));
	buf_done(&b);

	/* duplicates and empty keys are refused; no objects is fine */
	objs[4].key = objs[0].key;
	buf_init(&b, 0);
	CU_ASSERT_EQUAL(delivery_state_encode(&st, &b, NULL), KL_EINVAL);
	CU_ASSERT_EQUAL(b.len, 0);
	objs[4].key = "";
	CU_ASSERT_EQUAL(delivery_state_encode(&st, &b, NULL), KL_EINVAL);
	st.n_objects = 0;
	CU_ASSERT_EQUAL(delivery_state_encode(&st, &b, NULL), KL_OK);
	CU_ASSERT_EQUAL(delivery_state_decode(b.data, b.len, &back, NULL), KL_OK);
	CU_ASSERT_EQUAL(back.n_objects, 0);
	delivery_state_done(&back);
	buf_done(&b);
}

static void test_state_compact(void)
{
	struct delivery_state st, back;
	struct delivery_state_object objs[64];
	char keys[64][600];
	char ek1[ESN_KEY_MAX], ek2[ESN_KEY_MAX];
	struct esn a, z;
	struct buf b;

	memset(&st, 0, sizeof(st));
	CU_ASSERT_EQUAL(esn_set("49590338271490256608559692538361571095921575989136588898", 0, &a,
				NULL), KL_OK);
	CU_ASSERT_EQUAL(esn_set("49590338271490256608559692540925702759324208523137515618", 3, &z,
				NULL), KL_OK);
	esn_key(&a, ek1);
	esn_key(&z, ek2);
	for (int i = 0; i < 64; i++) {
		snprintf(keys[i], sizeof(keys[i]), "lake/events/site=site-%03d/dt=2026-11-21/hour=09/"
			 SHARD "/%s_%s.zst", i * 7, ek1, ek2);
		objs[i].kind = DELIVERY_OBJ_DATA;
		objs[i].key = keys[i];
	}
	st.first = a;
	st.objects = objs;
	st.n_objects = 64;
	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(delivery_state_encode(&st, &b, NULL), KL_OK);
	/* 64 keys of ~200 bytes: front and back coding keep it small */
	CU_ASSERT(strlen(keys[0]) > 190);
	CU_ASSERT(b.len < 1200);
	CU_ASSERT_EQUAL_FATAL(delivery_state_decode(b.data, b.len, &back, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(back.n_objects, 64);
	for (int i = 0; i < 64; i++)
		CU_ASSERT_STRING_EQUAL(back.objects[i].key, keys[i]);
	delivery_state_done(&back);
	buf_done(&b);
}

/* ================================================================ protocol + journal */

/* Pushes [from, to) as OK records of kind "a". */
static void push_range(struct env *e, unsigned from, unsigned to)
{
	for (unsigned i = from; i < to; i++)
		CU_ASSERT_EQUAL(push_ok(e, i, i % 3 ? "a" : "b"), KL_OK);
}

static void test_upload_failure_blocks_and_retries(void)
{
	struct env e;
	struct delivery_stats st;
	struct journal_batch *rows;
	struct lease l;
	struct delivery_state ds;
	size_t n;
	int64_t t;

	env_init(&e);
	e.opts.buffer_records = 10;
	e.opts.retry_base_ms = 1000;
	open_delivery(&e);
	e.s3.fail_all = true;
	push_range(&e, 0, 10);             /* sealed; both uploads fail */
	CU_ASSERT_TRUE(delivery_blocked(e.d));
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_UPLOAD);
	if (!strstr(st.blocked_reason, "InternalError"))
		fprintf(stderr, "\n  blocked_reason: %s\n", st.blocked_reason);
	CU_ASSERT_PTR_NOT_NULL(strstr(st.blocked_reason, "InternalError"));
	CU_ASSERT_EQUAL(st.upload_failures, 1);
	CU_ASSERT_TRUE(st.in_flight);
	CU_ASSERT(e.reports > 0);
	/* the next record is not taken while the batch waits */
	CU_ASSERT_EQUAL(push_ok(&e, 10, "a"), KL_ETHROTTLED);

	/* the intent is in the lease and the journal, with verifiable spools */
	l = read_lease(&e);
	CU_ASSERT_EQUAL(l.pending.kind, LEASE_ESN_SEQ);
	CU_ASSERT_EQUAL_FATAL(delivery_state_decode(l.pending_state, l.pending_state_len, &ds, NULL),
			      KL_OK);
	CU_ASSERT_EQUAL(ds.n_objects, 2);
	CU_ASSERT_EQUAL(ds.records, 10);
	CU_ASSERT_EQUAL(journal_list_pending(e.journal, SHARD, &rows, &n, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CU_ASSERT_EQUAL(rows[0].state, JOURNAL_STATE_INTENT);
	CU_ASSERT_EQUAL_FATAL(rows[0].n_objects, 2);
	for (size_t k = 0; k < 2; k++) {
		CU_ASSERT_EQUAL(spool_verify(rows[0].objects[k].spool_path, rows[0].objects[k].spool_bytes,
					     rows[0].objects[k].spool_sha256, NULL), KL_OK);
		bool found = false;

		for (size_t m = 0; m < ds.n_objects; m++)
			found |= strcmp(ds.objects[m].key, rows[0].objects[k].key) == 0;
		CU_ASSERT_TRUE(found);
	}
	{
		struct esn last;

		CU_ASSERT_EQUAL(esn_set(l.pending.seq, l.pending.subseq, &last, NULL), KL_OK);
		CU_ASSERT_EQUAL(esn_cmp(&rows[0].last, &last), 0);
		CU_ASSERT_EQUAL(esn_cmp(&rows[0].first, &ds.first), 0);
	}
	journal_batches_free(rows, n);
	delivery_state_done(&ds);
	lease_done(&l);

	/* S3 is back; retries wait for the backoff */
	e.s3.fail_all = false;
	t = lease_clock_mono(&e.clock);
	CU_ASSERT_EQUAL(delivery_tick(e.d, t, NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);
	run(&e, &e.w, 1100);
	CU_ASSERT_EQUAL(delivery_tick(e.d, lease_clock_mono(&e.clock), NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 2);
	CU_ASSERT_FALSE(delivery_blocked(e.d));
	assert_checkpoint(&e, 9);
	CU_ASSERT_EQUAL(journal_list_pending(e.journal, SHARD, &rows, &n, NULL), KL_OK);
	CU_ASSERT_EQUAL(n, 0);
	journal_batches_free(rows, n);
	CU_ASSERT_EQUAL(count_files(e.spool_dir), 0);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_NONE);
	CU_ASSERT_STRING_EQUAL(st.blocked_reason, "");
	/* the refused record is taken now */
	CU_ASSERT_EQUAL(push_ok(&e, 10, "a"), KL_OK);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_ids(&e, 11, want_once);
	env_done(&e);
}

/* ================================================================ recovery */

/*
 * kill -9 of the worker (no flush, no lease write), then a new process
 * takes the lease after expiry. same_host: it finds the same spool
 * directory and journal; otherwise it is another host with empty ones.
 */
static void crash_and_take_over(struct env *e, const char *new_id, bool same_host)
{
	char old_dir[256];

	delivery_free(e->d);
	e->d = NULL;
	worker_crash(&e->w);
	journal_close(e->journal);
	e->journal = NULL;
	if (!same_host) {
		snprintf(old_dir, sizeof(old_dir), "%s", e->dir);
		rm_rf(old_dir);
		make_dirs(e);
	}
	CU_ASSERT_EQUAL_FATAL(journal_open(e->journal_path, &e->journal, NULL), KL_OK);
	e->opts.journal = e->journal;
	e->opts.spool_dir = e->spool_dir;
	worker_start(e, &e->w, new_id);
	open_delivery(e);
}

/* A worker that sealed 0..9 ({a, b} parts) but could not upload: the intent is pending. */
static void leave_pending_intent(struct env *e, uint32_t uploads_before_failing)
{
	e->opts.buffer_records = 10;
	open_delivery(e);
	e->s3.fail_after = true;
	e->s3.ok_before_fail = uploads_before_failing;
	push_range(e, 0, 10);
	CU_ASSERT_TRUE(delivery_blocked(e->d));
	CU_ASSERT_EQUAL(e->s3.uploads, uploads_before_failing);
	e->s3.fail_after = false;
}

static void test_same_host_restart_uses_spool(void)
{
	struct env e;
	struct delivery_stats st;
	struct lease_esn ra, want;

	env_init(&e);
	leave_pending_intent(&e, 0);
	crash_and_take_over(&e, "A2", true);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.spool_recoveries, 1);
	CU_ASSERT_EQUAL(st.rebuilds, 0);
	CU_ASSERT_FALSE(st.rebuilding);
	CU_ASSERT_TRUE(delivery_blocked(e.d));
	delivery_resume_after(e.d, &ra);
	esn_of(9, &want);
	CU_ASSERT_EQUAL(lease_esn_cmp(&ra, &want), 0);   /* no re-read of 0..9 */
	CU_ASSERT_EQUAL(delivery_tick(e.d, lease_clock_mono(&e.clock), NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 2);
	CU_ASSERT_FALSE(delivery_blocked(e.d));
	assert_checkpoint(&e, 9);
	CU_ASSERT_EQUAL(count_files(e.spool_dir), 0);
	push_range(&e, 10, 15);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_ids(&e, 15, want_once);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.intents, 1);   /* only the new batch wrote an intent */
	env_done(&e);
}

static void corrupt_first_spool(struct env *e)
{
	struct journal_batch *rows;
	size_t n;
	int fd;
	char c;

	CU_ASSERT_EQUAL_FATAL(journal_list_pending(e->journal, SHARD, &rows, &n, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	fd = open(rows[0].objects[0].spool_path, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(pread(fd, &c, 1, 5), 1);
	c ^= 1;
	CU_ASSERT_EQUAL(pwrite(fd, &c, 1, 5), 1);
	close(fd);
	journal_batches_free(rows, n);
}

static void test_damaged_spool_rebuilds(void)
{
	struct env e;
	struct delivery_stats st;
	struct lease_esn ra;

	env_init(&e);
	leave_pending_intent(&e, 0);
	corrupt_first_spool(&e);
	e.opts.buffer_records = 3;   /* a rebuild ignores size limits */
	crash_and_take_over(&e, "A2", true);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.damaged_spools, 1);
	CU_ASSERT_EQUAL(st.spool_recoveries, 0);
	CU_ASSERT_TRUE(st.rebuilding);
	delivery_resume_after(e.d, &ra);
	CU_ASSERT_EQUAL(ra.kind, LEASE_ESN_TRIM_HORIZON);
	push_range(&e, 0, 9);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);
	push_range(&e, 9, 10);         /* the intent's end: sealed, uploaded, committed */
	CU_ASSERT_EQUAL(e.s3.uploads, 2);
	assert_checkpoint(&e, 9);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_FALSE(st.rebuilding);
	CU_ASSERT_EQUAL(st.key_mismatches, 0);
	CU_ASSERT_EQUAL(st.intents, 0);   /* same keys: the recorded intent is reused */
	push_range(&e, 10, 15);           /* normal again: sealed by 3 records */
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_ids(&e, 15, want_once);
	env_done(&e);
}

static void test_rebuild_by_other_worker_overwrites(void)
{
	struct env e;
	struct delivery_stats st;
	char *first_key;

	env_init(&e);
	leave_pending_intent(&e, 1);      /* one of the two objects made it */
	CU_ASSERT_EQUAL_FATAL(e.s3.n, 1);
	first_key = strdup(e.s3.objs[0].key);
	crash_and_take_over(&e, "B", false);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_TRUE(st.rebuilding);
	CU_ASSERT_EQUAL(st.rebuilds, 1);
	push_range(&e, 0, 10);
	CU_ASSERT_EQUAL(e.s3.n, 2);       /* overwritten, not duplicated */
	CU_ASSERT_PTR_NOT_NULL(fake_find(&e.s3, first_key));
	assert_checkpoint(&e, 9);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.key_mismatches, 0);
	CU_ASSERT_EQUAL(st.stale_deleted, 0);
	CU_ASSERT_EQUAL(e.s3.removes, 0);
	push_range(&e, 10, 12);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_ids(&e, 12, want_once);
	free(first_key);
	env_done(&e);
}

static void test_rebuild_key_mismatch(void)
{
	struct env e;
	struct delivery_stats st;

	env_init(&e);
	leave_pending_intent(&e, 1);
	/* the operator changed the prefix while the intent was pending */
	set_templates(&e, "lake/!{partition:kind}/",
		      "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/");
	e.reports = 0;
	crash_and_take_over(&e, "B", false);
	push_range(&e, 0, 10);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.key_mismatches, 1);
	CU_ASSERT(e.reports > 0);
	CU_ASSERT_EQUAL(st.intents, 1);          /* new keys are recorded before upload */
	CU_ASSERT_EQUAL(st.stale_deleted, 2);    /* both recorded keys (one existed) */
	CU_ASSERT_EQUAL_FATAL(e.s3.n, 2);
	fake_sort(&e.s3);
	CU_ASSERT(strncmp(e.s3.objs[0].key, "lake/a/", 7) == 0);
	CU_ASSERT(strncmp(e.s3.objs[1].key, "lake/b/", 7) == 0);
	assert_checkpoint(&e, 9);
	assert_ids(&e, 10, want_once);
	env_done(&e);
}

static void test_rebuild_flush_partial(void)
{
	struct env e;
	struct delivery_stats st;

	env_init(&e);
	leave_pending_intent(&e, 1);
	crash_and_take_over(&e, "B", false);
	/* nothing rebuilt yet: flush leaves the intent to the next owner */
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	CU_ASSERT_EQUAL(e.s3.uploads, 1);
	push_range(&e, 0, 5);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);   /* graceful stop mid-rebuild */
	assert_checkpoint(&e, 4);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.key_mismatches, 1);   /* 0..4 is not 0..9 */
	CU_ASSERT_EQUAL(st.stale_deleted, 2);
	CU_ASSERT_FALSE(st.rebuilding);
	push_range(&e, 5, 13);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_ids(&e, 13, want_once);
	env_done(&e);
}

static int want_vanished(unsigned i)
{
	return i >= 12 ? 1 : 0;
}

static void test_rebuild_records_vanished(void)
{
	struct env e;
	struct delivery_stats st;

	env_init(&e);
	leave_pending_intent(&e, 0);
	crash_and_take_over(&e, "B", false);
	e.reports = 0;
	/* the stream no longer has 0..11 (trimmed): the intent is checkpointed as is */
	push_range(&e, 12, 15);
	CU_ASSERT(e.reports > 0);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_FALSE(st.rebuilding);
	CU_ASSERT_EQUAL(st.batches_committed, 1);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_checkpoint(&e, 14);
	assert_ids(&e, 15, want_vanished);
	env_done(&e);
}

static void test_lease_lost_stops(void)
{
	struct env e;
	struct delivery_stats st;

	env_init(&e);
	e.opts.buffer_records = 10;
	open_delivery(&e);
	push_range(&e, 0, 5);
	/* no renewals for longer than the failover time */
	lease_fake_clock_advance(&e.fc, 11000);
	push_range(&e, 5, 9);
	CU_ASSERT_EQUAL(push_ok(&e, 9, "a"), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);
	CU_ASSERT_TRUE(delivery_blocked(e.d));
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_LEASE_LOST);
	CU_ASSERT_EQUAL(push_ok(&e, 10, "a"), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(delivery_tick(e.d, lease_clock_mono(&e.clock), NULL), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);
	env_done(&e);
}

static int want_twice(unsigned i)
{
	(void)i;
	return 2;
}

static void test_disk_full_resumes(void)
{
	struct env e;
	struct delivery_stats st;
	struct rlimit old, small;
	unsigned i, failed_at = 0;
	enum kl_err err = KL_OK;

	signal(SIGXFSZ, SIG_IGN);
	CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
	env_init(&e);
	e.opts.spool.buffer_bytes = SPOOL_MIN_BUFFER;
	open_delivery(&e);
	small = old;
	small.rlim_cur = 64 << 10;
	CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &small), 0);
	/* two outputs: a small one to "a", a 2 KB one to "b" (which fills first) */
	for (i = 0; i < 200; i++) {
		struct trec t;

		trec_init(&t, i);
		trec_out(&t, i, "a", 10);
		trec_out(&t, i, "b", 2000);
		err = delivery_push(e.d, &t.r, &t.res, NULL);
		if (err) {
			failed_at = i;
			break;
		}
	}
	CU_ASSERT_EQUAL(err, KL_ENOSPC);
	CU_ASSERT(failed_at > 10);
	CU_ASSERT_TRUE(delivery_blocked(e.d));
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_DISK);
	CU_ASSERT_PTR_NOT_NULL(strstr(st.blocked_reason, e.spool_dir));
	/* the first output of the refused record is in; the second is not */
	CU_ASSERT_EQUAL(st.records_out, 2 * (uint64_t)failed_at + 1);
	CU_ASSERT_EQUAL(st.records_in, failed_at);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_ENOSPC);
	/* still full: the same record is refused again, nothing doubles */
	{
		struct trec t;

		trec_init(&t, failed_at);
		trec_out(&t, failed_at, "a", 10);
		trec_out(&t, failed_at, "b", 2000);
		CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_ENOSPC);
		CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &old), 0);
		CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	}
	CU_ASSERT_FALSE(delivery_blocked(e.d));
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_NONE);
	for (i = failed_at + 1; i < failed_at + 5; i++) {
		struct trec t;

		trec_init(&t, i);
		trec_out(&t, i, "a", 10);
		trec_out(&t, i, "b", 2000);
		CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_OK);
	}
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_ids(&e, failed_at + 5, want_twice);
	env_done(&e);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_DFL);
}

static void test_broken_spool_stops_shard(void)
{
	struct env e;
	struct delivery_stats st;
	struct rlimit old, small;
	struct lease_esn ra;
	enum kl_err err = KL_OK;
	unsigned i;

	signal(SIGXFSZ, SIG_IGN);
	CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
	env_init(&e);
	e.opts.spool.buffer_bytes = SPOOL_MIN_BUFFER;
	open_delivery(&e);
	push_range(&e, 0, 2);
	small = old;
	small.rlim_cur = 10 << 10;
	CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &small), 0);
	/* records larger than the spool buffer are streamed: the disk fills inside one */
	for (i = 2; i < 10 && !err; i++) {
		struct trec t;

		trec_init(&t, i);
		trec_out(&t, i, "a", 4100);
		err = delivery_push(e.d, &t.r, &t.res, NULL);
	}
	CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &old), 0);
	/* that push says "disk full" (spool.h); offered again, the spool is known failed */
	CU_ASSERT_EQUAL(err, KL_ENOSPC);
	{
		struct trec t;

		trec_init(&t, i - 1);
		trec_out(&t, i - 1, "a", 4100);
		CU_ASSERT_EQUAL(delivery_push(e.d, &t.r, &t.res, NULL), KL_ELEASE_LOST);
	}
	CU_ASSERT_TRUE(delivery_blocked(e.d));
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_BROKEN);
	CU_ASSERT(e.reports > 0);
	CU_ASSERT_EQUAL(push_ok(&e, i, "a"), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_ELEASE_LOST);
	CU_ASSERT_EQUAL(e.s3.uploads, 0);
	/* the consumer abandons; a new delivery on the same lease re-reads */
	delivery_abandon(e.d);
	delivery_free(e.d);
	e.d = NULL;
	CU_ASSERT_EQUAL(count_files(e.spool_dir), 0);
	open_delivery(&e);
	delivery_resume_after(e.d, &ra);
	CU_ASSERT_EQUAL(ra.kind, LEASE_ESN_TRIM_HORIZON);
	push_range(&e, 0, 12);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_ids(&e, 12, want_once);
	env_done(&e);
	signal(SIGXFSZ, SIG_DFL);
}

static int want_skip(unsigned i)
{
	return i < 12 ? 1 : 0;
}

static void test_order_and_skips(void)
{
	struct env e;
	struct delivery_stats st;
	struct record_sink sink;
	struct lease_esn ra, want;
	struct trec t;

	env_init(&e);
	e.opts.buffer_records = 10;
	open_delivery(&e);
	delivery_sink(e.d, &sink);
	sink.ops->resume_after(sink.ctx, &ra);
	CU_ASSERT_EQUAL(ra.kind, LEASE_ESN_TRIM_HORIZON);
	for (unsigned i = 0; i < 11; i++) {
		trec_ok(&t, i, "a");
		CU_ASSERT_EQUAL(sink.ops->push(sink.ctx, &t.r, &t.res, NULL), KL_OK);
	}
	/* resume_after covers what was taken, committed or not */
	sink.ops->resume_after(sink.ctx, &ra);
	esn_of(10, &want);
	CU_ASSERT_EQUAL(lease_esn_cmp(&ra, &want), 0);
	/* at or below the checkpoint (9): ignored; not after the last: refused */
	CU_ASSERT_EQUAL(push_ok(&e, 5, "a"), KL_OK);
	CU_ASSERT_EQUAL(push_ok(&e, 9, "a"), KL_OK);
	CU_ASSERT_EQUAL(push_ok(&e, 10, "a"), KL_EINVAL);
	CU_ASSERT_EQUAL(push_ok(&e, 11, "a"), KL_OK);
	{
		struct trec bad;

		trec_ok(&bad, 12, "a");
		bad.r.sequence_number = "12x";
		CU_ASSERT_EQUAL(delivery_push(e.d, &bad.r, &bad.res, NULL), KL_EINVAL);
	}
	CU_ASSERT_FALSE(sink.ops->blocked(sink.ctx));
	CU_ASSERT_EQUAL(sink.ops->tick(sink.ctx, lease_clock_mono(&e.clock), NULL), KL_OK);
	CU_ASSERT_EQUAL(sink.ops->flush(sink.ctx, NULL), KL_OK);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.records_skipped, 2);
	CU_ASSERT_EQUAL(st.records_in, 12);
	assert_ids(&e, 13, want_skip);
	/* abandon: open work goes, nothing else is accepted */
	CU_ASSERT_EQUAL(push_ok(&e, 12, "a"), KL_OK);
	CU_ASSERT(count_files(e.spool_dir) > 0);
	sink.ops->abandon(sink.ctx);
	CU_ASSERT_EQUAL(count_files(e.spool_dir), 0);
	CU_ASSERT_TRUE(delivery_blocked(e.d));
	CU_ASSERT_EQUAL(push_ok(&e, 13, "a"), KL_ESTATE);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_ESTATE);
	assert_checkpoint(&e, 11);
	env_done(&e);
}

static void test_bad_options(void)
{
	struct env e;
	struct delivery *d = NULL;
	struct lease_grant *g;
	struct kl_errinfo info;

	env_init(&e);
	g = wait_grant(&e, &e.w);
	e.opts.grant = g;
	e.opts.uploader.ops = NULL;
	CU_ASSERT_EQUAL(delivery_new(&e.opts, &d, NULL), KL_EINVAL);
	e.opts.uploader.ops = &fake_ops;
	e.opts.max_partitions = DELIVERY_MAX_PARTITIONS + 1;
	CU_ASSERT_EQUAL(delivery_new(&e.opts, &d, NULL), KL_EINVAL);
	e.opts.max_partitions = 0;
	e.opts.shard_id = "bad/shard";
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(delivery_new(&e.opts, &d, &info), KL_EINVAL);
	e.opts.shard_id = NULL;
	CU_ASSERT_EQUAL(delivery_new(&e.opts, &d, NULL), KL_OK);
	delivery_free(d);
	delivery_free(NULL);
	CU_ASSERT_STRING_EQUAL(delivery_blocked_name(DELIVERY_BLOCKED_LEASE_LOST), "lease-lost");
	e.opts.grant = NULL;
	lease_grants_free(g, 1);
	env_done(&e);
}

/* ================================================================ the batch hook (aggregates) */

/* A hook that records what the delivery tells it. */
struct rec_hook {
	struct env *e;
	unsigned adds, open_adds;        /* all / of the open batch */
	unsigned applies, resets;
	unsigned applied_adds;           /* adds of the batches applied */
	unsigned fail_applies;           /* fail this many apply() calls */
	unsigned full_at;                /* full() once open_adds reaches it; 0 = never */
	struct lease_esn last_end;       /* end of the last apply() */
	bool checkpoint_before_end;      /* at every apply(), checkpoint < end */
};

static enum kl_err rh_add(void *ctx, const struct kl_transform_record *rec,
			  const struct xform_output *o, struct kl_errinfo *info)
{
	struct rec_hook *h = ctx;

	(void)rec;
	(void)o;
	(void)info;
	h->adds++;
	h->open_adds++;
	return KL_OK;
}

static bool rh_full(void *ctx)
{
	struct rec_hook *h = ctx;

	return h->full_at && h->open_adds >= h->full_at;
}

static enum kl_err rh_apply(void *ctx, const struct esn *last, struct kl_errinfo *info)
{
	struct rec_hook *h = ctx;
	struct lease l = read_lease(h->e);
	struct lease_esn end;

	CU_ASSERT_EQUAL(lease_esn_parse(last->seq, last->sub, &end, NULL), KL_OK);
	/* Before the checkpoint, with the intent of this very batch pending. */
	if (l.checkpoint.kind == LEASE_ESN_SEQ && lease_esn_cmp(&l.checkpoint, &end) >= 0)
		h->checkpoint_before_end = false;
	if (l.pending.kind == LEASE_ESN_SEQ)
		CU_ASSERT_EQUAL(lease_esn_cmp(&l.pending, &end), 0);
	lease_done(&l);
	h->applies++;
	if (h->fail_applies) {
		h->fail_applies--;
		return kl_errinfo_set(info, KL_ETHROTTLED, "throttled (test)");
	}
	h->last_end = end;
	h->applied_adds += h->open_adds;
	return KL_OK;
}

static void rh_reset(void *ctx)
{
	struct rec_hook *h = ctx;

	h->resets++;
	h->open_adds = 0;
}

static const struct delivery_hook_ops rh_ops = { rh_add, rh_full, rh_apply, rh_reset };

static void hook_init(struct env *e, struct rec_hook *h)
{
	memset(h, 0, sizeof(*h));
	h->e = e;
	h->checkpoint_before_end = true;
	e->opts.hook.ops = &rh_ops;
	e->opts.hook.ctx = h;
}

static void test_hook_applies_before_checkpoint(void)
{
	struct env e;
	struct rec_hook h;
	struct lease_esn want;

	env_init(&e);
	hook_init(&e, &h);
	e.opts.buffer_records = 10;
	open_delivery(&e);
	push_range(&e, 0, 25);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_checkpoint(&e, 24);
	assert_ids(&e, 25, want_once);
	CU_ASSERT_EQUAL(h.adds, 25);
	CU_ASSERT_EQUAL(h.applied_adds, 25);
	CU_ASSERT_EQUAL(h.applies, 3);        /* 0..9, 10..19, 20..24 */
	CU_ASSERT_TRUE(h.checkpoint_before_end);
	esn_of(24, &want);
	CU_ASSERT_EQUAL(lease_esn_cmp(&h.last_end, &want), 0);
	env_done(&e);
}

static void test_hook_full_seals_early(void)
{
	struct env e;
	struct rec_hook h;

	env_init(&e);
	hook_init(&e, &h);
	h.full_at = 4;
	open_delivery(&e);
	push_range(&e, 0, 10);
	CU_ASSERT_EQUAL(h.applies, 2);        /* 0..3, 4..7 */
	assert_checkpoint(&e, 7);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_checkpoint(&e, 9);
	CU_ASSERT_EQUAL(h.applied_adds, 10);
	env_done(&e);
}

static void test_hook_failure_retries(void)
{
	struct env e;
	struct rec_hook h;
	struct delivery_stats st;

	env_init(&e);
	hook_init(&e, &h);
	h.fail_applies = 2;
	e.opts.buffer_records = 5;
	open_delivery(&e);
	push_range(&e, 0, 5);
	CU_ASSERT_TRUE(delivery_blocked(e.d));
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_ERROR);
	for (int i = 0; i < 10 && delivery_blocked(e.d); i++) {
		run(&e, &e.w, 3000);   /* past the backoff (retry_base 1 s) */
		delivery_tick(e.d, lease_clock_mono(&e.clock), NULL);
	}
	CU_ASSERT_FALSE(delivery_blocked(e.d));
	CU_ASSERT_EQUAL(h.applies, 3);
	assert_checkpoint(&e, 4);
	env_done(&e);
}

/* With a hook, the same host rebuilds from the stream (the hook needs the
 * records), and a flush in the middle of a rebuild leaves the intent. */
static void test_hook_rebuilds_and_flush_leaves_intent(void)
{
	struct env e;
	struct rec_hook h;
	struct delivery_stats st;
	struct lease l;

	env_init(&e);
	hook_init(&e, &h);
	leave_pending_intent(&e, 1);
	CU_ASSERT_EQUAL(h.applies, 0);
	crash_and_take_over(&e, "A2", true);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.spool_recoveries, 0);
	CU_ASSERT_EQUAL(st.rebuilds, 1);
	push_range(&e, 0, 5);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);   /* graceful stop mid-rebuild */
	CU_ASSERT_EQUAL(h.applies, 0);
	l = read_lease(&e);
	CU_ASSERT_EQUAL(l.pending.kind, LEASE_ESN_SEQ);       /* still there */
	CU_ASSERT_NOT_EQUAL(l.checkpoint.kind, LEASE_ESN_SEQ);
	lease_done(&l);
	/* The next owner rebuilds the whole batch and applies it once. */
	crash_and_take_over(&e, "B", false);
	h.open_adds = 0;
	push_range(&e, 0, 13);
	CU_ASSERT_EQUAL(delivery_flush(e.d, NULL), KL_OK);
	assert_checkpoint(&e, 12);
	assert_ids(&e, 13, want_once);
	CU_ASSERT_EQUAL(h.applies, 2);                        /* 0..9 (the intent), 10..12 */
	CU_ASSERT_TRUE(h.checkpoint_before_end);
	env_done(&e);
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_seal_by_records),
		KL_TEST(test_seal_by_bytes),
		KL_TEST(test_seal_by_age),
		KL_TEST(test_dropped_only),
		KL_TEST(test_partition_routing),
		KL_TEST(test_partition_cap),
		KL_TEST(test_error_routing),
		KL_TEST(test_deterministic_keys),
		KL_TEST(test_state_roundtrip),
		KL_TEST(test_state_compact),
		KL_TEST(test_upload_failure_blocks_and_retries),
		KL_TEST(test_same_host_restart_uses_spool),
		KL_TEST(test_damaged_spool_rebuilds),
		KL_TEST(test_rebuild_by_other_worker_overwrites),
		KL_TEST(test_rebuild_key_mismatch),
		KL_TEST(test_rebuild_flush_partial),
		KL_TEST(test_rebuild_records_vanished),
		KL_TEST(test_lease_lost_stops),
		KL_TEST(test_disk_full_resumes),
		KL_TEST(test_broken_spool_stops_shard),
		KL_TEST(test_order_and_skips),
		KL_TEST(test_bad_options),
		KL_TEST(test_hook_applies_before_checkpoint),
		KL_TEST(test_hook_full_seals_early),
		KL_TEST(test_hook_failure_retries),
		KL_TEST(test_hook_rebuilds_and_flush_leaves_intent),
		{ NULL, NULL },
	};

	return kl_test_run("delivery", tests);
}
