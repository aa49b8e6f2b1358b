/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_delivery.c: the S3 record sink end to end against s3rver, with the
 * in-memory lease store and coordinator (fake clock) and a real journal.
 * Records carry unique ids; after each scenario every object under the
 * scenario's prefix is listed (ListObjectsV2, all pages), fetched,
 * decompressed and parsed, and every id must appear exactly once across
 * data and error objects, in ESN order, inside an object whose key has the
 * template's shape and the batch's ESN range. Crashes are simulated in
 * process (free without flush, coordinator freed without writing) at each
 * step of the protocol. Run:
 *   tests/emu/emulators.sh --no-moto -- ./tests/integ/integ_delivery
 */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "aws.h"
#include "creds.h"
#include "delivery.h"
#include "http.h"
#include "journal.h"
#include "keytmpl.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store_mem.h"
#include "s3.h"
#include "spool.h"
#include "testutil.h"
#include "util.h"

#define BUCKET "kl-integ-delivery"
#define SHARD "shardId-000000000003"
#define SEQ_PREFIX "4959033827149025660855969253"   /* + 28 digits = 56 */
#define SEQ_BASE 1000u
#define ARRIVAL0 ((int64_t)1795291116903)
#define N_RECORDS 3000u

static struct {
	struct creds_chain *creds;
	struct aws_client c;
	unsigned run_id;
} fx;

static void report(const char *what, enum kl_err err, const struct kl_errinfo *info)
{
	char msg[700];

	if (err)
		fprintf(stderr, "\n  %s: %s\n", what, kl_errinfo_format(err, info, msg, sizeof(msg)));
}

/* ================================================================ the workload */

/* What record i becomes (deterministic, so a rebuild sees the same). */
enum fate { F_DATA1, F_DATA2, F_DROPPED, F_FAILED, F_NOKEY, F_BADKEY };

static enum fate fate_of(unsigned i)
{
	if (i % 13 == 5)
		return F_DROPPED;
	if (i % 17 == 3)
		return F_FAILED;
	if (i % 29 == 7)
		return F_NOKEY;
	if (i % 31 == 11)
		return F_BADKEY;
	if (i % 23 == 1)
		return F_DATA2;
	return F_DATA1;
}

/* Times id i must appear: data outputs, or one error record. */
static unsigned want_of(unsigned i)
{
	switch (fate_of(i)) {
	case F_DATA2: return 2;
	case F_DROPPED: return 0;
	case F_DATA1:
	case F_FAILED:
	case F_NOKEY:
	case F_BADKEY:
		return 1;
	}
	return 0;
}

static const char *kind_of(unsigned i)
{
	static const char *kinds[] = { "page_view", "click", "add_to_cart" };

	return kinds[(i / 7) % 3];
}

struct trec {
	char seq[64];
	char pk[32];
	char data[256];
	char out[2][1400];
	struct xform_pkey keys[2];
	struct xform_output outs[2];
	struct kl_transform_record r;
	struct xform_result res;
};

/* Record i: ESN (SEQ_PREFIX + SEQ_BASE + i/2, sub i%2): KPL pairs. pad: extra bytes. */
static void trec_make(struct trec *t, unsigned i, size_t pad)
{
	enum fate f = fate_of(i);

	memset(t, 0, sizeof(*t));
	snprintf(t->seq, sizeof(t->seq), SEQ_PREFIX "%028u", SEQ_BASE + i / 2);
	snprintf(t->pk, sizeof(t->pk), "user-%u", i % 97);
	snprintf(t->data, sizeof(t->data), "{\"id\":%u,\"raw\":true}", i);
	t->r.data = (const uint8_t *)t->data;
	t->r.len = strlen(t->data);
	t->r.partition_key = t->pk;
	t->r.sequence_number = t->seq;
	t->r.sub_sequence_number = i % 2;
	t->r.shard_id = SHARD;
	t->r.approximate_arrival_ms = ARRIVAL0 + (int64_t)i * 1500;   /* crosses hours */
	switch (f) {
	case F_DROPPED:
		t->res.result = KL_TRANSFORM_DROPPED;
		return;
	case F_FAILED:
		t->res.result = KL_TRANSFORM_FAILED;
		t->res.reason = "clickstream: missing event_type";
		return;
	case F_DATA1:
	case F_DATA2:
	case F_NOKEY:
	case F_BADKEY:
		break;
	}
	t->res.result = KL_TRANSFORM_OK;
	t->res.outputs = t->outs;
	t->res.noutputs = f == F_DATA2 ? 2 : 1;
	for (size_t k = 0; k < t->res.noutputs; k++) {
		int n = snprintf(t->out[k], sizeof(t->out[k]),
				 "{\"id\":%u,\"o\":%zu,\"event_type\":\"%s\",\"user\":\"user-%u\","
				 "\"url\":\"https://shop.example.com/p/%u?ref=campaign-%u\","
				 "\"ua\":\"Mozilla/5.0 (X11; Linux x86_64)\",\"pad\":\"",
				 i, k, kind_of(i + (unsigned)k), i % 97, i * 7919 % 10007, i % 13);

		for (size_t p = 0; p < pad && (size_t)n + 3 < sizeof(t->out[k]); p++)
			t->out[k][n++] = (char)('a' + (i + p) % 26);
		t->out[k][n++] = '"';
		t->out[k][n++] = '}';
		t->out[k][n] = '\0';
		t->outs[k].data = (const uint8_t *)t->out[k];
		t->outs[k].len = (size_t)n;
		t->keys[k].name = "event";
		t->keys[k].value = f == F_BADKEY ? "a/b" : kind_of(i + (unsigned)k);
		t->outs[k].keys = &t->keys[k];
		t->outs[k].nkeys = f == F_NOKEY ? 0 : 1;
	}
}

/* First record index after the position pos. */
static unsigned index_after(const struct lease_esn *pos)
{
	unsigned long long n;

	if (pos->kind != LEASE_ESN_SEQ)
		return 0;
	CU_ASSERT_FATAL(strlen(pos->seq) == 56 && strncmp(pos->seq, SEQ_PREFIX, 28) == 0);
	n = strtoull(pos->seq + 28, NULL, 10);
	return (unsigned)((n - SEQ_BASE) * 2 + pos->subseq + 1);
}

/* ================================================================ a faulty S3 uploader */

/* Wraps the real S3 uploader; the scenarios tell it when to fail. */
struct faulty {
	struct delivery_s3 s3;
	struct delivery_uploader real;
	bool fail_uploads;            /* refuse every upload (S3 "down") */
	bool partition_on_upload;     /* at the next upload, cut the lease store off */
	struct lease_store *store;    /* ... this one */
	uint64_t uploads;
	unsigned max_parts;           /* most parts of one multipart upload */
	char **keys;                  /* keys uploaded since keys were last cleared */
	size_t n_keys;
};

static enum kl_err faulty_upload(void *ctx, const struct delivery_upload *up,
				 struct delivery_upload_result *ret, struct kl_errinfo *info)
{
	struct faulty *f = ctx;
	enum kl_err err;

	if (f->fail_uploads)
		return kl_errinfo_set(info, KL_ESERVER, "injected: S3 unavailable");
	if (f->partition_on_upload) {
		struct lease_mem_faults lf;

		memset(&lf, 0, sizeof(lf));
		lf.partitioned = true;
		lease_store_mem_set_faults(f->store, &lf);
		f->partition_on_upload = false;
	}
	err = f->real.ops->upload(f->real.ctx, up, ret, info);
	if (err)
		return err;
	f->uploads++;
	if (ret->n_parts > f->max_parts)
		f->max_parts = ret->n_parts;
	f->keys = realloc(f->keys, (f->n_keys + 1) * sizeof(*f->keys));
	CU_ASSERT_FATAL(f->keys != NULL);
	f->keys[f->n_keys++] = strdup(up->key);
	return KL_OK;
}

static enum kl_err faulty_remove(void *ctx, const char *key, struct kl_errinfo *info)
{
	struct faulty *f = ctx;

	return f->real.ops->remove(f->real.ctx, key, info);
}

static const struct delivery_uploader_ops faulty_ops = { faulty_upload, faulty_remove };

static void faulty_clear_keys(struct faulty *f)
{
	for (size_t i = 0; i < f->n_keys; i++)
		free(f->keys[i]);
	free(f->keys);
	f->keys = NULL;
	f->n_keys = 0;
}

/* ================================================================ environment */

struct ienv {
	char name[64];
	char prefix[96];              /* every key of the scenario starts with it */
	struct lease_fake_clock fc;
	struct lease_clock clock;
	struct lease_mem_table *table;
	struct lease_store *store;
	struct lease_coord *coord;
	char worker[16];
	char dir[256];
	char spool_dir[300];
	char journal_path[300];
	struct journal *journal;
	struct keytmpl *data_tmpl, *error_tmpl;
	struct faulty up;
	struct delivery_opts opts;
	struct delivery *d;
	char **dirs;                  /* every state dir made, removed at the end */
	size_t n_dirs;
};

static void rm_rf(const char *dir)
{
	DIR *dd = opendir(dir);
	struct dirent *de;
	char p[700];
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

/* A fresh state directory (another host). */
static void new_state_dir(struct ienv *e)
{
	const char *base = getenv("KL_TEST_EMU_DIR");
	char tmpl[256];

	if (!base || !*base)
		base = getenv("TMPDIR");
	snprintf(tmpl, sizeof(tmpl), "%s/kl-integ-dlv-XXXXXX", base && *base ? base : "/tmp");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpl));
	snprintf(e->dir, sizeof(e->dir), "%s", tmpl);
	snprintf(e->spool_dir, sizeof(e->spool_dir), "%s/spool", e->dir);
	snprintf(e->journal_path, sizeof(e->journal_path), "%s/journal.db", e->dir);
	CU_ASSERT_EQUAL_FATAL(mkdir(e->spool_dir, 0750), 0);
	e->dirs = realloc(e->dirs, (e->n_dirs + 1) * sizeof(*e->dirs));
	CU_ASSERT_FATAL(e->dirs != NULL);
	e->dirs[e->n_dirs++] = strdup(e->dir);
}

static void worker_start(struct ienv *e, const char *id)
{
	struct lease_coord_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	snprintf(e->worker, sizeof(e->worker), "%s", id);
	cfg.worker_id = e->worker;
	cfg.seed = 11 + (uint64_t)id[0] * 31 + (uint64_t)id[1];
	e->store = lease_store_mem_new(e->table, &e->clock);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e->store);
	CU_ASSERT_EQUAL_FATAL(lease_coord_new(&cfg, e->store, &e->clock, NULL, &e->coord, NULL),
			      KL_OK);
	e->up.store = e->store;
}

/* Opens a delivery on the lease once the worker may process it. */
static void open_delivery(struct ienv *e)
{
	struct kl_errinfo info;
	enum kl_err err;

	for (int i = 0; i < 1000; i++) {
		struct lease_grant *g;
		size_t n;

		lease_coord_tick(e->coord, NULL);
		CU_ASSERT_EQUAL_FATAL(lease_coord_grants(e->coord, &g, &n), KL_OK);
		for (size_t k = 0; k < n; k++)
			if (strcmp(g[k].key, SHARD) == 0 &&
			    lease_coord_check(e->coord, SHARD, g[k].token, NULL) == KL_OK) {
				e->opts.grant = &g[k];
				e->opts.coord = e->coord;
				e->opts.journal = e->journal;
				e->opts.spool_dir = e->spool_dir;
				kl_errinfo_clear(&info);
				err = delivery_new(&e->opts, &e->d, &info);
				report("delivery_new", err, &info);
				CU_ASSERT_EQUAL_FATAL(err, KL_OK);
				e->opts.grant = NULL;
				lease_grants_free(g, n);
				return;
			}
		lease_grants_free(g, n);
		lease_fake_clock_advance(&e->fc, 100);
	}
	CU_FAIL_FATAL("the lease never became processable");
}

static void ienv_init(struct ienv *e, const char *name, enum spool_codec codec)
{
	struct lease l;
	char tmpl[256];

	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	snprintf(e->prefix, sizeof(e->prefix), "r%u-%s/", fx.run_id, name);
	lease_clock_fake(&e->fc, 5000000, &e->clock);
	e->table = lease_mem_table_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(e->table);
	lease_init(&l);
	CU_ASSERT_EQUAL(lease_set_str(&l.key, SHARD), KL_OK);
	l.checkpoint = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	CU_ASSERT_EQUAL(lease_mem_table_put(e->table, &l), KL_OK);
	lease_done(&l);
	new_state_dir(e);
	CU_ASSERT_EQUAL_FATAL(journal_open(e->journal_path, &e->journal, NULL), KL_OK);
	snprintf(tmpl, sizeof(tmpl), "%sdata/event=!{partitionKeyFromLambda:event}/"
		 "!{timestamp:'dt='yyyy-MM-dd/'hour='HH}/", e->prefix);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile(tmpl, KEYTMPL_DATA, &e->data_tmpl, NULL), KL_OK);
	snprintf(tmpl, sizeof(tmpl), "%serrors/!{firehose:error-output-type}/"
		 "!{timestamp:yyyy/MM/dd/HH}/", e->prefix);
	CU_ASSERT_EQUAL_FATAL(keytmpl_compile(tmpl, KEYTMPL_ERROR, &e->error_tmpl, NULL), KL_OK);
	e->up.s3.client = &fx.c;
	e->up.s3.bucket = BUCKET;
	delivery_s3_uploader(&e->up.s3, &e->up.real);
	e->opts.data_tmpl = e->data_tmpl;
	e->opts.error_tmpl = e->error_tmpl;
	e->opts.spool.codec = codec;
	e->opts.uploader.ops = &faulty_ops;
	e->opts.uploader.ctx = &e->up;
	e->opts.clock = e->clock;
	e->opts.buffer_bytes = 96 << 10;
	e->opts.retry_base_ms = 200;
	e->opts.seed = 5;
	worker_start(e, "A");
	open_delivery(e);
}

/* kill -9: delivery and coordinator go without a write; the journal closes. */
static void crash(struct ienv *e)
{
	delivery_free(e->d);
	e->d = NULL;
	lease_coord_free(e->coord);
	lease_store_free(e->store);
	e->coord = NULL;
	e->store = NULL;
	journal_close(e->journal);
	e->journal = NULL;
}

/* A new process takes the lease: on this host (same dir) or another. */
static void take_over(struct ienv *e, const char *id, bool same_host)
{
	struct kl_errinfo info;

	if (!same_host)
		new_state_dir(e);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(journal_open(e->journal_path, &e->journal, &info), KL_OK);
	worker_start(e, id);
	open_delivery(e);
}

static void ienv_done(struct ienv *e)
{
	delivery_free(e->d);
	if (e->coord)
		lease_coord_free(e->coord);
	lease_store_free(e->store);
	journal_close(e->journal);
	keytmpl_free(e->data_tmpl);
	keytmpl_free(e->error_tmpl);
	lease_mem_table_free(e->table);
	faulty_clear_keys(&e->up);
	for (size_t i = 0; i < e->n_dirs; i++) {
		rm_rf(e->dirs[i]);
		free(e->dirs[i]);
	}
	free(e->dirs);
}

/*
 * The consumer: pushes records [from, to) in order, ticking now and then;
 * returns the first index not taken (to, or where a push failed).
 */
static unsigned feed(struct ienv *e, unsigned from, unsigned to, size_t pad,
		     enum kl_err *ret_err)
{
	struct kl_errinfo info;
	enum kl_err err = KL_OK;
	unsigned i;

	for (i = from; i < to; i++) {
		struct trec t;

		trec_make(&t, i, pad);
		kl_errinfo_clear(&info);
		err = delivery_push(e->d, &t.r, &t.res, &info);
		if (err)
			break;
		if (i % 200 == 0) {
			/* keep the lease renewed as fake time passes */
			lease_fake_clock_advance(&e->fc, 100);
			lease_coord_tick(e->coord, NULL);
		}
	}
	if (ret_err)
		*ret_err = err;
	else if (err)
		report("push", err, &info);
	return i;
}

static void flush_ok(struct ienv *e)
{
	struct kl_errinfo info;
	enum kl_err err;

	kl_errinfo_clear(&info);
	err = delivery_flush(e->d, &info);
	report("flush", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
}

/* ================================================================ reading back */

/* Decompresses body by its Content-Encoding; returns a malloc'd NUL-terminated text. */
static char *decode_body(const char *key, const char *encoding, const char *body, size_t len,
			 size_t *ret_len)
{
	size_t klen = strlen(key);

	if (encoding && strcmp(encoding, "gzip") == 0) {
		size_t cap = len * 8 + 4096, used = 0;
		char *out = malloc(cap);
		z_stream zs;
		int zr;

		CU_ASSERT(klen > 3 && strcmp(key + klen - 3, ".gz") == 0);
		memset(&zs, 0, sizeof(zs));
		CU_ASSERT_FATAL(out && inflateInit2(&zs, 15 + 16) == Z_OK);
		zs.next_in = (Bytef *)(uintptr_t)body;
		zs.avail_in = (uInt)len;
		do {
			if (cap - used < 65536) {
				cap *= 2;
				out = realloc(out, cap);
				CU_ASSERT_FATAL(out != NULL);
			}
			zs.next_out = (Bytef *)out + used;
			zs.avail_out = (uInt)(cap - used - 1);
			zr = inflate(&zs, Z_NO_FLUSH);
			used = zs.total_out;
		} while (zr == Z_OK);
		CU_ASSERT_EQUAL(zr, Z_STREAM_END);
		CU_ASSERT_EQUAL(zs.avail_in, 0);   /* one member, nothing after it */
		inflateEnd(&zs);
		out[used] = '\0';
		*ret_len = used;
		return out;
	}
#ifdef HAVE_ZSTD
	if (encoding && strcmp(encoding, "zstd") == 0) {
		ZSTD_DStream *ds = ZSTD_createDStream();
		ZSTD_inBuffer in = { body, len, 0 };
		size_t cap = len * 8 + 4096, zr = 1;
		char *out = malloc(cap);
		ZSTD_outBuffer ob = { out, cap - 1, 0 };

		CU_ASSERT(klen > 4 && strcmp(key + klen - 4, ".zst") == 0);
		CU_ASSERT_FATAL(ds && out);
		ZSTD_initDStream(ds);
		while (in.pos < in.size || zr != 0) {
			if (ob.size - ob.pos < 65536) {
				cap *= 2;
				out = realloc(out, cap);
				CU_ASSERT_FATAL(out != NULL);
				ob.dst = out;
				ob.size = cap - 1;
			}
			zr = ZSTD_decompressStream(ds, &ob, &in);
			CU_ASSERT_FATAL(!ZSTD_isError(zr));
			if (zr != 0 && in.pos == in.size && ob.pos < ob.size)
				break;   /* truncated frame */
		}
		CU_ASSERT_EQUAL(zr, 0);
		ZSTD_freeDStream(ds);
		out[ob.pos] = '\0';
		*ret_len = ob.pos;
		return out;
	}
#endif
	CU_ASSERT_PTR_NULL(encoding);
	{
		char *out = malloc(len + 1);

		CU_ASSERT_FATAL(out != NULL);
		memcpy(out, body, len);
		out[len] = '\0';
		*ret_len = len;
		return out;
	}
}

/*
 * The key ends "<shard>/<esn>_<esn><ext>": returns the record indices of
 * the batch's first and last ESN, or false.
 */
static bool key_range(const char *key, const char *ext, unsigned *ret_first, unsigned *ret_last)
{
	const char *name = strrchr(key, '/');
	char a[57], as[11], b[57], bs[11];
	struct lease_esn fa, la;

	if (!name || name - key < (ptrdiff_t)strlen(SHARD) ||
	    strncmp(name - strlen(SHARD), SHARD, strlen(SHARD)) != 0)
		return false;
	name++;
	if (strlen(name) != 56 + 1 + 10 + 1 + 56 + 1 + 10 + strlen(ext) ||
	    strcmp(name + 56 + 1 + 10 + 1 + 56 + 1 + 10, ext) != 0)
		return false;
	memcpy(a, name, 56);
	a[56] = '\0';
	memcpy(as, name + 57, 10);
	as[10] = '\0';
	memcpy(b, name + 68, 56);
	b[56] = '\0';
	memcpy(bs, name + 125, 10);
	bs[10] = '\0';
	if (name[56] != '-' || name[67] != '_' || name[124] != '-')
		return false;
	if (lease_esn_parse(a, strtoull(as, NULL, 10), &fa, NULL) != KL_OK ||
	    lease_esn_parse(b, strtoull(bs, NULL, 10), &la, NULL) != KL_OK)
		return false;
	*ret_first = index_after(&fa) - 1;
	*ret_last = index_after(&la) - 1;
	return true;
}

/* "dt=YYYY-MM-DD/hour=HH" or "YYYY/MM/DD/HH" of record i's arrival. */
static void time_folder(unsigned i, bool hive, char *out, size_t out_size)
{
	time_t secs = (time_t)((ARRIVAL0 + (int64_t)i * 1500) / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	if (hive)
		snprintf(out, out_size, "dt=%04d-%02d-%02d/hour=%02d", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour);
	else
		snprintf(out, out_size, "%04d/%02d/%02d/%02d", tm.tm_year + 1900, tm.tm_mon + 1,
			 tm.tm_mday, tm.tm_hour);
}

struct range {
	unsigned first, last;
};

/*
 * Lists and reads every object of the scenario and checks exactly-once,
 * order and key shape for ids [0, n). Returns the number of objects.
 */
static size_t verify_bucket(struct ienv *e, unsigned n, const char *ext)
{
	unsigned *seen = calloc(n, sizeof(*seen));
	struct range *ranges = NULL;
	size_t n_ranges = 0, n_objects = 0;
	char *token = NULL;

	CU_ASSERT_FATAL(seen != NULL);
	do {
		struct s3_list_opts lo;
		struct s3_list_result page;
		struct kl_errinfo info;
		enum kl_err err;

		memset(&lo, 0, sizeof(lo));
		lo.prefix = e->prefix;
		lo.continuation_token = token;
		lo.max_keys = 50;   /* several pages */
		kl_errinfo_clear(&info);
		err = s3_list_objects_v2(&fx.c, BUCKET, &lo, &page, &info);
		report("ListObjectsV2", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		free(token);
		token = page.is_truncated && page.next_continuation_token
				? strdup(page.next_continuation_token) : NULL;
		for (size_t k = 0; k < page.n_entries; k++) {
			const char *key = page.entries[k].key;
			struct s3_object_info obj;
			char *body = NULL, *text;
			size_t blen = 0, tlen;
			unsigned first = 0, last = 0;
			bool is_error = strncmp(key + strlen(e->prefix), "errors/", 7) == 0;
			char folder[64];
			long prev = -1;

			n_objects++;
			memset(&obj, 0, sizeof(obj));
			kl_errinfo_clear(&info);
			err = s3_get_object(&fx.c, BUCKET, key, (size_t)64 << 20, &body, &blen, &obj,
					    &info);
			report("GetObject", err, &info);
			CU_ASSERT_EQUAL_FATAL(err, KL_OK);
			CU_ASSERT_STRING_EQUAL(obj.content_type, is_error ? DELIVERY_ERROR_CONTENT_TYPE
									  : "application/x-ndjson");
			CU_ASSERT_FATAL(key_range(key, ext, &first, &last));
			/* the time folder is the arrival hour of the batch's first record */
			time_folder(first, !is_error, folder, sizeof(folder));
			if (!strstr(key, folder))
				fprintf(stderr, "\n  key %s lacks %s\n", key, folder);
			CU_ASSERT_PTR_NOT_NULL(strstr(key, folder));
			if (is_error) {
				CU_ASSERT(strncmp(key + strlen(e->prefix), "errors/processing-failed/", 25) == 0 ||
					  strncmp(key + strlen(e->prefix), "errors/partitioning-failed/", 27) == 0);
			} else {
				CU_ASSERT(strncmp(key + strlen(e->prefix), "data/event=", 11) == 0);
			}
			text = decode_body(key, obj.content_encoding, body, blen, &tlen);
			for (char *line = text; *line;) {
				char *nl = strchr(line, '\n');
				unsigned id = UINT32_MAX;

				CU_ASSERT_FATAL(nl != NULL);   /* every record ends with the delimiter */
				*nl = '\0';
				if (is_error) {
					const char *rd = strstr(line, "\"rawData\":\"");
					uint8_t raw[512];
					size_t rl = 0;
					const char *end;

					CU_ASSERT_FATAL(rd != NULL);
					rd += 11;
					end = strchr(rd, '"');
					CU_ASSERT_FATAL(end && end - rd < 600);
					CU_ASSERT_EQUAL_FATAL(kl_b64_decode(rd, (size_t)(end - rd), raw, &rl), KL_OK);
					raw[rl] = '\0';
					CU_ASSERT_EQUAL(sscanf((char *)raw, "{\"id\":%u", &id), 1);
				} else {
					char want_kind[64];

					CU_ASSERT_EQUAL(sscanf(line, "{\"id\":%u", &id), 1);
					/* the partition folder matches the record's event */
					{
						const char *ev = strstr(line, "\"event_type\":\"");

						CU_ASSERT_FATAL(ev != NULL);
						ev += 14;
						snprintf(want_kind, sizeof(want_kind), "event=%.*s/",
							 (int)(strchr(ev, '"') - ev), ev);
						CU_ASSERT_PTR_NOT_NULL(strstr(key, want_kind));
					}
				}
				CU_ASSERT_FATAL(id < n);
				CU_ASSERT(id >= first && id <= last);   /* inside the batch's range */
				CU_ASSERT((long)id >= prev);            /* ESN order in the object */
				prev = id;
				seen[id]++;
				line = nl + 1;
			}
			/* remember the batch range: ranges of batches never overlap */
			{
				bool known = false;

				for (size_t r = 0; r < n_ranges; r++) {
					if (ranges[r].first == first && ranges[r].last == last)
						known = true;
					else
						CU_ASSERT(last < ranges[r].first || first > ranges[r].last);
				}
				if (!known) {
					ranges = realloc(ranges, (n_ranges + 1) * sizeof(*ranges));
					CU_ASSERT_FATAL(ranges != NULL);
					ranges[n_ranges].first = first;
					ranges[n_ranges].last = last;
					n_ranges++;
				}
			}
			free(text);
			free(body);
			s3_object_info_done(&obj);
		}
		s3_list_result_done(&page);
	} while (token);
	for (unsigned i = 0; i < n; i++) {
		if (seen[i] != want_of(i))
			fprintf(stderr, "\n  %s: id %u seen %u times, want %u\n", e->name, i, seen[i],
				want_of(i));
		CU_ASSERT_EQUAL(seen[i], want_of(i));
	}
	free(seen);
	free(ranges);
	return n_objects;
}

static const char *ext_of(enum spool_codec codec)
{
	return spool_codec_ext(codec);
}

/* ================================================================ scenarios */

/* No failure at all, for each codec. */
static void plain_run(const char *name, enum spool_codec codec)
{
	struct ienv e;
	struct delivery_stats st;
	size_t objects;

	ienv_init(&e, name, codec);
	CU_ASSERT_EQUAL(feed(&e, 0, N_RECORDS, 40, NULL), N_RECORDS);
	flush_ok(&e);
	delivery_get_stats(e.d, &st);
	/* sealed by size (96 KiB of uncompressed records), the rest by the flush */
	CU_ASSERT(st.batches_committed >= 5);
	CU_ASSERT(st.batches_committed <= st.bytes_out / (96 << 10) + 1);
	CU_ASSERT(st.batches_committed >= st.bytes_out / ((96 << 10) + 2048));
	objects = verify_bucket(&e, N_RECORDS, ext_of(codec));
	CU_ASSERT_EQUAL(objects, st.objects_uploaded);
	CU_ASSERT_EQUAL(st.records_in, N_RECORDS);
	ienv_done(&e);
}

static void test_plain_gzip(void)
{
	plain_run("plain-gzip", SPOOL_CODEC_GZIP);
}

static void test_plain_zstd(void)
{
#ifdef HAVE_ZSTD
	plain_run("plain-zstd", SPOOL_CODEC_ZSTD);
#else
	fprintf(stderr, "(no zstd in this build) ");
#endif
}

/* (a) crash with a batch open: another worker re-reads from the checkpoint. */
static void test_crash_open_batch(void)
{
	struct ienv e;
	struct delivery_stats st;
	struct lease_esn ra;
	unsigned next;

	ienv_init(&e, "crash-open", SPOOL_CODEC_GZIP);
	CU_ASSERT_EQUAL(feed(&e, 0, 1000, 40, NULL), 1000);
	delivery_get_stats(e.d, &st);
	CU_ASSERT(st.open_records > 0);    /* records taken, not yet sealed */
	crash(&e);
	take_over(&e, "B", false);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_FALSE(st.rebuilding);    /* no intent was pending */
	delivery_resume_after(e.d, &ra);
	next = index_after(&ra);
	CU_ASSERT(next > 0 && next < 1000);
	CU_ASSERT_EQUAL(feed(&e, next, N_RECORDS, 40, NULL), N_RECORDS);
	flush_ok(&e);
	verify_bucket(&e, N_RECORDS, ".gz");
	ienv_done(&e);
}

/* Pushes until the delivery refuses (a batch stuck in flight); returns where. */
static unsigned feed_until_stuck(struct ienv *e, unsigned from)
{
	enum kl_err err = KL_OK;
	unsigned at = feed(e, from, N_RECORDS, 40, &err);

	CU_ASSERT_EQUAL(err, KL_ETHROTTLED);
	CU_ASSERT_TRUE(delivery_blocked(e->d));
	return at;
}

/* (b) crash after the intent, before any upload: rebuilt elsewhere. */
static void test_crash_after_intent(void)
{
	struct ienv e;
	struct delivery_stats st;
	struct lease l;

	ienv_init(&e, "crash-intent", SPOOL_CODEC_ZSTD);
	CU_ASSERT_EQUAL(feed(&e, 0, 700, 40, NULL), 700);
	e.up.fail_uploads = true;
	feed_until_stuck(&e, 700);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_UPLOAD);
	lease_init(&l);
	CU_ASSERT_EQUAL(lease_mem_table_read(e.table, SHARD, &l), KL_OK);
	CU_ASSERT_EQUAL(l.pending.kind, LEASE_ESN_SEQ);   /* the intent is in the lease */
	lease_done(&l);
	crash(&e);
	e.up.fail_uploads = false;
	take_over(&e, "B", false);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_TRUE(st.rebuilding);
	CU_ASSERT_EQUAL(feed(&e, index_after(&st.checkpoint), N_RECORDS, 40, NULL), N_RECORDS);
	flush_ok(&e);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.rebuilds, 1);
	CU_ASSERT_EQUAL(st.key_mismatches, 0);
	verify_bucket(&e, N_RECORDS, ext_of(SPOOL_CODEC_ZSTD));
	ienv_done(&e);
}

/* (c) crash after every upload, before the checkpoint: overwritten, not doubled. */
static void test_crash_after_upload(void)
{
	struct ienv e;
	struct delivery_stats st;
	uint64_t a_uploaded;
	size_t stuck_keys, objects;
	char **keys_a;

	ienv_init(&e, "crash-upload", SPOOL_CODEC_GZIP);
	CU_ASSERT_EQUAL(feed(&e, 0, 700, 40, NULL), 700);
	faulty_clear_keys(&e.up);
	e.up.partition_on_upload = true;    /* the checkpoint write will time out */
	feed_until_stuck(&e, 700);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.blocked, DELIVERY_BLOCKED_LEASE_WRITE);
	a_uploaded = st.objects_uploaded;
	stuck_keys = e.up.n_keys;           /* the stuck batch's objects are in S3 */
	CU_ASSERT(stuck_keys >= 2);
	keys_a = e.up.keys;
	e.up.keys = NULL;
	e.up.n_keys = 0;
	crash(&e);
	take_over(&e, "B", false);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_TRUE(st.rebuilding);
	CU_ASSERT_EQUAL(feed(&e, index_after(&st.checkpoint), N_RECORDS, 40, NULL), N_RECORDS);
	flush_ok(&e);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.key_mismatches, 0);
	/* the rebuilt batch was uploaded to exactly the keys A had used */
	CU_ASSERT_FATAL(e.up.n_keys >= stuck_keys);
	for (size_t i = 0; i < stuck_keys; i++) {
		bool found = false;

		for (size_t k = 0; k < stuck_keys; k++)
			found |= strcmp(keys_a[i], e.up.keys[k]) == 0;
		CU_ASSERT_TRUE(found);
		free(keys_a[i]);
	}
	free(keys_a);
	objects = verify_bucket(&e, N_RECORDS, ".gz");
	/* no second object: what A committed plus what B uploaded, nothing more */
	CU_ASSERT_EQUAL(objects, a_uploaded - stuck_keys + st.objects_uploaded);
	ienv_done(&e);
}

/* (d) same host restarts: the verified spool is uploaded without re-reading. */
static void test_same_host_intact_spool(void)
{
	struct ienv e;
	struct delivery_stats st;
	struct lease_esn ra;
	unsigned stuck_at, next;

	ienv_init(&e, "restart-intact", SPOOL_CODEC_ZSTD);
	CU_ASSERT_EQUAL(feed(&e, 0, 700, 40, NULL), 700);
	e.up.fail_uploads = true;
	stuck_at = feed_until_stuck(&e, 700);
	crash(&e);
	e.up.fail_uploads = false;
	take_over(&e, "A2", true);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.spool_recoveries, 1);
	CU_ASSERT_FALSE(st.rebuilding);
	delivery_resume_after(e.d, &ra);
	next = index_after(&ra);
	CU_ASSERT_EQUAL(next, stuck_at);    /* nothing before the refused record is re-read */
	CU_ASSERT_EQUAL(delivery_tick(e.d, lease_clock_mono(&e.clock), NULL), KL_OK);
	CU_ASSERT_FALSE(delivery_blocked(e.d));
	CU_ASSERT_EQUAL(feed(&e, next, N_RECORDS, 40, NULL), N_RECORDS);
	flush_ok(&e);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.records_in, N_RECORDS - stuck_at);
	verify_bucket(&e, N_RECORDS, ext_of(SPOOL_CODEC_ZSTD));
	ienv_done(&e);
}

/* (d') same host, damaged spool: rebuilt from the stream instead. */
static void test_same_host_damaged_spool(void)
{
	struct ienv e;
	struct delivery_stats st;
	struct journal_batch *rows;
	size_t n;
	int fd;

	ienv_init(&e, "restart-damaged", SPOOL_CODEC_GZIP);
	CU_ASSERT_EQUAL(feed(&e, 0, 700, 40, NULL), 700);
	e.up.fail_uploads = true;
	feed_until_stuck(&e, 700);
	CU_ASSERT_EQUAL_FATAL(journal_list_pending(e.journal, SHARD, &rows, &n, NULL), KL_OK);
	CU_ASSERT_EQUAL_FATAL(n, 1);
	/* truncate one spool file */
	fd = open(rows[0].objects[rows[0].n_objects - 1].spool_path, O_WRONLY);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)rows[0].objects[rows[0].n_objects - 1].spool_bytes / 2), 0);
	close(fd);
	journal_batches_free(rows, n);
	crash(&e);
	e.up.fail_uploads = false;
	take_over(&e, "A2", true);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.damaged_spools, 1);
	CU_ASSERT_TRUE(st.rebuilding);
	CU_ASSERT_EQUAL(feed(&e, index_after(&st.checkpoint), N_RECORDS, 40, NULL), N_RECORDS);
	flush_ok(&e);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.key_mismatches, 0);
	verify_bucket(&e, N_RECORDS, ".gz");
	ienv_done(&e);
}

/* (e) the journal file is garbage after the crash: moved aside, still exactly once. */
static void test_corrupt_journal(void)
{
	struct ienv e;
	struct delivery_stats st;
	char junk[8192];
	int fd;

	ienv_init(&e, "corrupt-journal", SPOOL_CODEC_GZIP);
	CU_ASSERT_EQUAL(feed(&e, 0, 700, 40, NULL), 700);
	e.up.fail_uploads = true;
	feed_until_stuck(&e, 700);
	crash(&e);
	e.up.fail_uploads = false;
	memset(junk, 'J', sizeof(junk));
	fd = open(e.journal_path, O_WRONLY | O_TRUNC);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	take_over(&e, "A2", true);
	CU_ASSERT_PTR_NOT_NULL(journal_moved_aside(e.journal));
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.spool_recoveries, 0);
	CU_ASSERT_TRUE(st.rebuilding);
	CU_ASSERT_EQUAL(feed(&e, index_after(&st.checkpoint), N_RECORDS, 40, NULL), N_RECORDS);
	flush_ok(&e);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.key_mismatches, 0);
	verify_bucket(&e, N_RECORDS, ".gz");
	ienv_done(&e);
}

/* A batch above the multipart threshold (5 MiB here), read back whole. */
static void test_multipart_batch(void)
{
	struct ienv e;
	struct delivery_stats st;
	const unsigned n = 18000;

	ienv_init(&e, "multipart", SPOOL_CODEC_NONE);
	delivery_free(e.d);
	e.d = NULL;
	e.up.s3.multipart_threshold = (uint64_t)5 << 20;
	e.up.s3.part_size = (uint64_t)5 << 20;
	e.opts.buffer_bytes = (uint64_t)64 << 20;
	open_delivery(&e);
	CU_ASSERT_EQUAL(feed(&e, 0, n, 1200, NULL), n);
	flush_ok(&e);
	delivery_get_stats(e.d, &st);
	CU_ASSERT_EQUAL(st.batches_committed, 1);
	CU_ASSERT(st.bytes_uploaded > ((uint64_t)15 << 20));
	CU_ASSERT(e.up.max_parts >= 2);    /* the data objects went up in parts */
	verify_bucket(&e, n, "");
	ienv_done(&e);
}

int main(void)
{
	const char *endpoint = kl_test_env_or_skip("KL_TEST_S3_ENDPOINT");
	struct creds_config cc = {
		.access_key_id = kl_test_env_or_skip("KL_TEST_ACCESS_KEY_ID"),
		.secret_access_key = kl_test_env_or_skip("KL_TEST_SECRET_ACCESS_KEY"),
		.disable_imds = 1,
	};
	struct aws_client_config cfg = {
		.service = "s3", .region = "us-east-1", .endpoint = endpoint,
		.http = { .timeout_ms = 120000 },
	};
	static const struct kl_test tests[] = {
		KL_TEST(test_plain_gzip),
		KL_TEST(test_plain_zstd),
		KL_TEST(test_crash_open_batch),
		KL_TEST(test_crash_after_intent),
		KL_TEST(test_crash_after_upload),
		KL_TEST(test_same_host_intact_spool),
		KL_TEST(test_same_host_damaged_spool),
		KL_TEST(test_corrupt_journal),
		KL_TEST(test_multipart_batch),
		{ NULL, NULL },
	};
	struct kl_errinfo info;
	enum kl_err err;
	int rc;

	if (http_global_init() != KL_OK || creds_chain_new(&cc, &fx.creds) != KL_OK ||
	    aws_client_init(&fx.c, &cfg, fx.creds) != KL_OK) {
		fprintf(stderr, "integ_delivery: cannot set up the S3 client\n");
		return 1;
	}
	fx.run_id = (unsigned)getpid();
	kl_errinfo_clear(&info);
	err = s3_create_bucket(&fx.c, BUCKET, &info);
	if (err != KL_OK && err != KL_EEXISTS) {
		report("CreateBucket", err, &info);
		return 1;
	}
	rc = kl_test_run("delivery-integ", tests);
	aws_client_done(&fx.c);
	creds_chain_free(fx.creds);
	http_global_cleanup();
	return rc;
}
