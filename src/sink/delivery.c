/* SPDX-License-Identifier: Apache-2.0 */
/*
 * delivery.c: the S3 record sink of one shard (see delivery.h and the
 * protocol walk-through in src/sink/README.md).
 *
 * A batch goes OPEN -> SEAL -> INTENT -> UPLOAD -> DELETE -> COMMIT -> OPEN.
 * Every step after OPEN is idempotent and can be repeated after a failure
 * (drive() resumes at the step that failed), which is what makes "retry
 * later" safe. Invariants: only one batch is in flight; the open batch
 * takes no record while one is; nothing is uploaded before the lease holds
 * an intent listing its key; the checkpoint is written only after every
 * object of the batch is uploaded (and stale objects deleted).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "delivery.h"
#include "util.h"

/* Live keys of one batch may use this many bytes (the state stays small). */
#define KEY_BUDGET (DELIVERY_STATE_MAX / 4)
/* Scratch buffer for error records: a 1 MiB record in base64 plus JSON. */
#define SCRATCH_CAP ((size_t)16 << 20)
#define SCRATCH_KEEP ((size_t)1 << 20)

enum phase {
	PH_OPEN = 0,   /* taking records (maybe none yet) */
	PH_SEAL,       /* seal spools, render keys, compare with a recorded intent */
	PH_INTENT,     /* journal row + lease intent */
	PH_UPLOAD,     /* upload every object */
	PH_DELETE,     /* delete stale objects of a recorded intent */
	PH_COMMIT,     /* checkpoint, journal committed, spools removed */
	PH_HOOK,       /* between DELETE and COMMIT: the hook's apply() (aggregates) */
};

enum part_kind {
	PART_DATA = 0,
	PART_ERROR,
};

struct part {
	enum part_kind kind;
	char **values;                 /* data: one per partition name, owned */
	const char *error_type;        /* error: static (errrec_output_type), or NULL */
	struct spool *sp;              /* NULL once sealed (or for a recovered part) */
	char *path;                    /* sealed spool file */
	uint64_t file_bytes;
	char sha256[SPOOL_SHA256_HEX];
	char *key;                     /* rendered at seal */
	uint64_t records;
	bool uploaded;
};

struct batch {
	enum phase phase;
	uint64_t pushed;               /* records taken (any result) */
	struct esn first, last;
	int64_t first_arrival_ms;
	int64_t opened_mono_ms;
	uint64_t records;              /* records written to parts */
	uint64_t raw_bytes;
	struct part *parts;
	size_t n_parts, alloc_parts;
	size_t n_data_parts;
	size_t key_bytes;              /* sum of trial key lengths (KEY_BUDGET) */
	size_t last_hit;               /* part of the previous output (lookup cache) */
	/* in flight */
	bool rebuild;                  /* the rebuild of a recorded intent */
	bool need_prepare;
	bool commit_only;              /* records of the intent are gone: checkpoint it */
	int64_t journal_id;            /* 0 = no journal row */
	struct buf state;              /* encoded intent state */
	char **stale;                  /* keys to delete before the checkpoint */
	size_t n_stale, next_stale;
};

/* A record whose outputs were partly written when the disk filled up. */
struct partial {
	bool active;
	struct esn esn;
	size_t next_output;
};

enum fail_kind {
	FAIL_UPLOAD,
	FAIL_LEASE,
	FAIL_DISK,
	FAIL_OTHER,
};

struct delivery {
	/* set up once */
	char *lease_key;
	uint64_t token;
	char *shard_id;
	char shard_name[80];           /* shard id as a safe file-name part */
	struct lease_coord *coord;
	struct journal *journal;
	char *spool_dir;
	const struct keytmpl *data_tmpl;
	const struct keytmpl *error_tmpl;
	bool error_by_type;
	size_t n_names;
	struct spool_opts spool;
	struct spool_opts err_spool;
	char delim[SPOOL_DELIM_MAX];
	size_t delim_len;
	char *content_type;
	const char *ext;
	const char *encoding;
	struct delivery_uploader up;
	struct lease_clock clock;
	uint64_t buffer_bytes;
	uint64_t buffer_records;
	int64_t buffer_ms;
	uint32_t max_partitions;
	int64_t retry_base_ms, retry_max_ms;
	struct kl_rng rng;
	void (*report)(void *ctx, enum log_level level, const char *msg);
	void *report_ctx;
	struct delivery_hook hook;     /* ops NULL = none */

	/* where the shard stands */
	struct lease_esn checkpoint;   /* committed */
	bool rebuilding;
	struct esn rebuild_end;
	bool have_recorded;
	struct delivery_state recorded;
	bool lost, abandoned, broken, disk_full;

	struct batch b;
	struct partial partial;

	/* retry of the batch in flight */
	uint32_t failures;
	int64_t retry_at;
	enum fail_kind fail_kind;

	struct buf scratch;
	struct delivery_stats st;
};

/* ================================================================ helpers */

static int64_t now_mono(const struct delivery *d)
{
	return lease_clock_mono(&d->clock);
}

static void esn_to_lease(const struct esn *e, struct lease_esn *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->kind = LEASE_ESN_SEQ;
	ret->subseq = e->sub;
	memcpy(ret->seq, e->seq, sizeof(ret->seq) < sizeof(e->seq) ? sizeof(ret->seq) : sizeof(e->seq));
	ret->seq[sizeof(ret->seq) - 1] = '\0';
}

static bool lease_to_esn(const struct lease_esn *l, struct esn *ret)
{
	return l->kind == LEASE_ESN_SEQ && esn_set(l->seq, l->subseq, ret, NULL) == KL_OK;
}

/* <0, 0, >0: e compared with the lease position l (sentinels included). */
static int cmp_with_lease(const struct esn *e, const struct lease_esn *l)
{
	struct lease_esn le;

	esn_to_lease(e, &le);
	return lease_esn_cmp(&le, l);
}

static void say(struct delivery *d, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Hands a message to the caller's report hook (and the debug log). */
static void say(struct delivery *d, enum log_level level, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_debug("%s", msg);
	if (d->report)
		d->report(d->report_ctx, level, msg);
}

static void note_error(struct delivery *d, enum kl_err err, const struct kl_errinfo *info)
{
	char msg[sizeof(d->st.last_error)];

	kl_errinfo_format(err, info, msg, sizeof(msg));
	snprintf(d->st.last_error, sizeof(d->st.last_error), "%s", msg);
}

static void set_blocked(struct delivery *d, enum delivery_blocked why, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_blocked(struct delivery *d, enum delivery_blocked why, const char *fmt, ...)
{
	va_list ap;

	d->st.blocked = why;
	va_start(ap, fmt);
	vsnprintf(d->st.blocked_reason, sizeof(d->st.blocked_reason), fmt, ap);
	va_end(ap);
}

static void clear_blocked(struct delivery *d)
{
	d->st.blocked = DELIVERY_BLOCKED_NONE;
	d->st.blocked_reason[0] = '\0';
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static bool name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.';
}

/* The shard id if it is a safe file-name part, else "s<hash>". */
static void make_shard_name(const char *shard, char *out, size_t out_size)
{
	size_t len = strlen(shard);
	bool ok = len > 0 && len <= 64 && shard[0] != '.';

	for (size_t i = 0; ok && i < len; i++)
		ok = name_char_ok(shard[i]);
	if (ok)
		snprintf(out, out_size, "%s", shard);
	else
		snprintf(out, out_size, "s%016" PRIx64, fnv1a(shard));
}

/* Codec of a spool file, from its extension (recovered spools). */
static enum spool_codec codec_of_path(const char *path)
{
	size_t n = strlen(path);

	if (n > 3 && strcmp(path + n - 3, ".gz") == 0)
		return SPOOL_CODEC_GZIP;
	if (n > 4 && strcmp(path + n - 4, ".zst") == 0)
		return SPOOL_CODEC_ZSTD;
	return SPOOL_CODEC_NONE;
}

static void free_strv(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* ================================================================ state codec */

static enum kl_err put_varint(struct buf *out, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	do {
		uint8_t byte = v & 0x7f;

		v >>= 7;
		tmp[n++] = byte | (v ? 0x80 : 0);
	} while (v);
	return buf_append(out, tmp, n);
}

static uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

struct cursor {
	const uint8_t *p;
	size_t len, off;
};

static bool get_varint(struct cursor *c, uint64_t *ret)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t byte;

		if (c->off >= c->len)
			return false;
		byte = c->p[c->off++];
		if (shift == 63 && (byte & 0x7e))
			return false;        /* more than 64 bits */
		v |= (uint64_t)(byte & 0x7f) << shift;
		if (!(byte & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

static bool get_bytes(struct cursor *c, size_t n, const uint8_t **ret)
{
	if (n > c->len - c->off)
		return false;
	*ret = c->p + c->off;
	c->off += n;
	return true;
}

static size_t common_prefix(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t n = 0;

	while (n < alen && n < blen && a[n] == b[n])
		n++;
	return n;
}

static size_t common_suffix(const char *a, size_t alen, const char *b, size_t blen, size_t max)
{
	size_t n = 0;

	while (n < max && n < alen && n < blen && a[alen - 1 - n] == b[blen - 1 - n])
		n++;
	return n;
}

static int cmp_obj_ptr(const void *a, const void *b)
{
	const struct delivery_state_object *x = *(const struct delivery_state_object *const *)a;
	const struct delivery_state_object *y = *(const struct delivery_state_object *const *)b;

	return strcmp(x->key, y->key);
}

enum kl_err delivery_state_encode(const struct delivery_state *st, struct buf *out,
				  struct kl_errinfo *info)
{
	const struct delivery_state_object **v = NULL;
	size_t start = out->len, seq_len;
	enum kl_err err = KL_OK;
	const char *prev = "";
	size_t prev_len = 0;
	uint32_t crc;
	uint8_t be[4];

	if (!esn_valid(&st->first))
		return kl_errinfo_set(info, KL_EINVAL, "delivery: state without a valid first ESN");
	if (st->n_objects > JOURNAL_MAX_OBJECTS || (st->n_objects && !st->objects))
		return kl_errinfo_set(info, KL_EINVAL, "delivery: %zu objects in a state",
				      st->n_objects);
	if (st->n_objects) {
		v = malloc(st->n_objects * sizeof(*v));
		if (!v)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
	}
	for (size_t i = 0; i < st->n_objects; i++) {
		const struct delivery_state_object *o = &st->objects[i];
		size_t klen = o->key ? strlen(o->key) : 0;

		if (klen == 0 || klen > KEYTMPL_KEY_MAX ||
		    (o->kind != DELIVERY_OBJ_DATA && o->kind != DELIVERY_OBJ_ERROR &&
		     o->kind != DELIVERY_OBJ_STALE)) {
			free(v);
			return kl_errinfo_set(info, KL_EINVAL, "delivery: state object %zu is invalid", i);
		}
		v[i] = o;
	}
	if (st->n_objects)
		qsort(v, st->n_objects, sizeof(*v), cmp_obj_ptr);
	for (size_t i = 1; i < st->n_objects; i++)
		if (strcmp(v[i - 1]->key, v[i]->key) == 0) {
			kl_errinfo_set(info, KL_EINVAL, "delivery: key '%.200s' twice in a state",
				       v[i]->key);
			free(v);
			return KL_EINVAL;
		}

	seq_len = strlen(st->first.seq);
	if (!err)
		err = buf_append(out, "KL\x01", 3);
	if (!err)
		err = put_varint(out, 0);
	if (!err)
		err = put_varint(out, seq_len);
	if (!err)
		err = buf_append(out, st->first.seq, seq_len);
	if (!err)
		err = put_varint(out, st->first.sub);
	if (!err)
		err = put_varint(out, zigzag(st->first_arrival_ms));
	if (!err)
		err = put_varint(out, st->records);
	if (!err)
		err = put_varint(out, st->n_objects);
	for (size_t i = 0; !err && i < st->n_objects; i++) {
		const char *k = v[i]->key;
		size_t klen = strlen(k);
		size_t pre = common_prefix(prev, prev_len, k, klen);
		size_t suf = common_suffix(prev + pre, prev_len - pre, k + pre, klen - pre,
					   klen - pre);
		uint8_t kind = (uint8_t)v[i]->kind;

		err = buf_append(out, &kind, 1);
		if (!err)
			err = put_varint(out, pre);
		if (!err)
			err = put_varint(out, suf);
		if (!err)
			err = put_varint(out, klen - pre - suf);
		if (!err)
			err = buf_append(out, k + pre, klen - pre - suf);
		prev = k;
		prev_len = klen;
	}
	free(v);
	if (!err) {
		crc = (uint32_t)crc32(0L, Z_NULL, 0);
		crc = (uint32_t)crc32(crc, (const Bytef *)out->data + start, (uInt)(out->len - start));
		be[0] = (uint8_t)(crc >> 24);
		be[1] = (uint8_t)(crc >> 16);
		be[2] = (uint8_t)(crc >> 8);
		be[3] = (uint8_t)crc;
		err = buf_append(out, be, 4);
	}
	if (!err && out->len - start > DELIVERY_STATE_MAX)
		err = KL_ENOMEM;
	if (err) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
		return kl_errinfo_set(info, err, "delivery: intent state does not fit (%zu objects)",
				      st->n_objects);
	}
	return KL_OK;
}

void delivery_state_done(struct delivery_state *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_objects; i++)
		free(st->objects[i].key);
	free(st->objects);
	memset(st, 0, sizeof(*st));
}

enum kl_err delivery_state_decode(const void *data, size_t len, struct delivery_state *ret,
				  struct kl_errinfo *info)
{
	struct cursor c = { data, len, 0 };
	struct delivery_state st;
	char seq[ESN_SEQ_MAX + 1];
	const uint8_t *bytes;
	uint64_t flags, n, v, sub, arrival, records;
	uint32_t crc, want;
	char prev[KEYTMPL_KEY_MAX + 1] = "";
	size_t prev_len = 0;

	memset(&st, 0, sizeof(st));
	if (!data || len < 3 + 4 || len > DELIVERY_STATE_MAX ||
	    memcmp(data, "KL", 2) != 0)
		return kl_errinfo_set(info, KL_EPARSE, "delivery: intent state is not kinlake's");
	if (((const uint8_t *)data)[2] != DELIVERY_STATE_VERSION)
		return kl_errinfo_set(info, KL_EPARSE, "delivery: intent state version %u is unknown",
				      ((const uint8_t *)data)[2]);
	c.len = len - 4;
	crc = (uint32_t)crc32(0L, Z_NULL, 0);
	crc = (uint32_t)crc32(crc, (const Bytef *)data, (uInt)c.len);
	bytes = (const uint8_t *)data + c.len;
	want = (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 | bytes[3];
	if (crc != want)
		return kl_errinfo_set(info, KL_EPARSE, "delivery: intent state checksum mismatch");
	c.off = 3;
	if (!get_varint(&c, &flags) || flags != 0 || !get_varint(&c, &v) || v == 0 ||
	    v > ESN_SEQ_MAX || !get_bytes(&c, (size_t)v, &bytes))
		goto bad;
	memcpy(seq, bytes, (size_t)v);
	seq[v] = '\0';
	if (!get_varint(&c, &sub) || !get_varint(&c, &arrival) || !get_varint(&c, &records) ||
	    !get_varint(&c, &n) || n > JOURNAL_MAX_OBJECTS)
		goto bad;
	if (strspn(seq, "0123456789") != (size_t)v || esn_set(seq, sub, &st.first, NULL) != KL_OK ||
	    strcmp(st.first.seq, seq) != 0)
		goto bad;
	st.first_arrival_ms = unzigzag(arrival);
	st.records = records;
	if (n) {
		st.objects = calloc((size_t)n, sizeof(*st.objects));
		if (!st.objects)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pre, suf, mid;
		char key[KEYTMPL_KEY_MAX + 1];
		uint8_t kind;

		if (!get_bytes(&c, 1, &bytes))
			goto bad;
		kind = bytes[0];
		if (kind > DELIVERY_OBJ_STALE || !get_varint(&c, &pre) || !get_varint(&c, &suf) ||
		    !get_varint(&c, &mid) || pre > prev_len || suf > prev_len - pre ||
		    mid > KEYTMPL_KEY_MAX || pre + suf + mid > KEYTMPL_KEY_MAX ||
		    pre + suf + mid == 0 || !get_bytes(&c, (size_t)mid, &bytes))
			goto bad;
		memcpy(key, prev, (size_t)pre);
		memcpy(key + pre, bytes, (size_t)mid);
		memcpy(key + pre + mid, prev + prev_len - suf, (size_t)suf);
		key[pre + mid + suf] = '\0';
		if (strlen(key) != pre + mid + suf || (i > 0 && strcmp(prev, key) >= 0))
			goto bad;   /* NUL inside, or not sorted / unique */
		st.objects[i].kind = (enum delivery_obj_kind)kind;
		st.objects[i].key = strdup(key);
		st.n_objects = (size_t)i + 1;
		if (!st.objects[i].key) {
			delivery_state_done(&st);
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		}
		memcpy(prev, key, (size_t)(pre + mid + suf) + 1);
		prev_len = (size_t)(pre + mid + suf);
	}
	if (c.off != c.len)
		goto bad;
	*ret = st;
	return KL_OK;
bad:
	delivery_state_done(&st);
	return kl_errinfo_set(info, KL_EPARSE, "delivery: intent state is malformed (at byte %zu)",
			      c.off);
}

/* ================================================================ S3 uploader */

static enum kl_err s3_up_upload(void *ctx, const struct delivery_upload *up,
				struct delivery_upload_result *ret, struct kl_errinfo *info)
{
	struct delivery_s3 *s3 = ctx;
	struct s3_upload_opts o;
	struct s3_put_result res;
	struct stat sb;
	enum kl_err err;
	int fd;

	fd = open(up->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		err = errno == ENOENT ? KL_ENOTFOUND : KL_EIO;
		kl_errinfo_set(info, err, "delivery: cannot open '%s': %s", up->path, strerror(errno));
		return err;
	}
	if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != up->bytes) {
		close(fd);
		return kl_errinfo_set(info, KL_EIO, "delivery: '%s' is not %" PRIu64 " bytes as sealed",
				      up->path, up->bytes);
	}
	memset(&o, 0, sizeof(o));
	o.put.content_type = up->content_type;
	o.put.content_encoding = up->content_encoding;
	o.put.unsigned_payload = s3->unsigned_payload;
	o.put.storage_class = s3->storage_class;
	o.multipart_threshold = s3->multipart_threshold;
	o.part_size = s3->part_size;
	o.parallel = s3->upload_threads;
	o.client_cfg = s3->client_cfg;
	o.creds = s3->creds;
	err = s3_upload_file(s3->client, s3->bucket, up->key, fd, 0, up->bytes, &o, &res, info);
	close(fd);
	if (err)
		return err;
	ret->bytes = up->bytes;
	ret->n_parts = res.n_parts;
	return KL_OK;
}

static enum kl_err s3_up_remove(void *ctx, const char *key, struct kl_errinfo *info)
{
	struct delivery_s3 *s3 = ctx;

	return s3_delete_object(s3->client, s3->bucket, key, info);
}

static const struct delivery_uploader_ops s3_uploader_ops = {
	.upload = s3_up_upload,
	.remove = s3_up_remove,
};

void delivery_s3_uploader(struct delivery_s3 *s3, struct delivery_uploader *ret)
{
	ret->ops = &s3_uploader_ops;
	ret->ctx = s3;
}

/* ================================================================ parts */

static void part_done(struct part *p, size_t n_names)
{
	spool_free(p->sp);
	free_strv(p->values, p->values ? n_names : 0);
	free(p->path);
	free(p->key);
	memset(p, 0, sizeof(*p));
}

/*
 * Frees the batch. remove_files: also unlink its sealed spool files (the
 * batch was committed, or nothing on disk refers to them).
 */
static void batch_reset(struct delivery *d, bool remove_files)
{
	struct batch *b = &d->b;

	for (size_t i = 0; i < b->n_parts; i++) {
		if (remove_files && b->parts[i].path)
			spool_remove(b->parts[i].path, NULL);
		part_done(&b->parts[i], d->n_names);
	}
	free(b->parts);
	free_strv(b->stale, b->n_stale);
	buf_done(&b->state);
	if (d->hook.ops)
		d->hook.ops->reset(d->hook.ctx);
	memset(b, 0, sizeof(*b));
	buf_init(&b->state, DELIVERY_STATE_MAX + 64);
}

static enum kl_err parts_grow(struct batch *b, struct kl_errinfo *info)
{
	size_t na;
	struct part *np;

	if (b->n_parts < b->alloc_parts)
		return KL_OK;
	na = b->alloc_parts ? b->alloc_parts * 2 : 4;
	np = realloc(b->parts, na * sizeof(*np));
	if (!np)
		return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
	b->parts = np;
	b->alloc_parts = na;
	return KL_OK;
}

/* Maps a spool/journal failure to the disk condition: KL_ENOSPC out. */
static enum kl_err disk_failure(struct delivery *d, enum kl_err err, const struct kl_errinfo *info)
{
	note_error(d, err, info);
	if (!d->disk_full)
		say(d, LOG_LEVEL_WARN, "delivery: shard '%s': cannot write spool files in '%s' (%s),"
		    " not taking records until it works", d->shard_id, d->spool_dir,
		    info && info->message[0] ? info->message : kl_strerror(err));
	d->disk_full = true;
	set_blocked(d, DELIVERY_BLOCKED_DISK, "spool directory %s: %s", d->spool_dir,
		    info && info->message[0] ? info->message : kl_strerror(err));
	return KL_ENOSPC;
}

/* The open batch lost accepted records (a spool failed inside a record). */
static enum kl_err broken(struct delivery *d, enum kl_err err, const struct kl_errinfo *info)
{
	note_error(d, err, info);
	d->broken = true;
	set_blocked(d, DELIVERY_BLOCKED_BROKEN,
		    "a spool file failed (%s); the open batch must be re-read from the checkpoint:"
		    " stopping the shard", info && info->message[0] ? info->message : kl_strerror(err));
	say(d, LOG_LEVEL_ERROR, "delivery: shard '%s': %s", d->shard_id, d->st.blocked_reason);
	/*
	 * Answered like a lost lease: the consumer stops this shard now and
	 * abandons; a new consumer on the lease re-reads from the checkpoint.
	 */
	return KL_ELEASE_LOST;
}

/* Spool file name of a new part: "<shard>-<esn key or hash>-<d|e><n>". */
static void spool_name(const struct delivery *d, const struct esn *e, char kind, size_t idx,
		       char *out, size_t out_size)
{
	char ek[ESN_KEY_MAX];
	size_t n = esn_key(e, ek);

	if (n > 80)
		snprintf(ek, sizeof(ek), "h%016" PRIx64, fnv1a(ek));
	snprintf(out, out_size, "%.72s-%.80s-%c%zu", d->shard_name, ek, kind, idx);
}

/* Appends a new part with an open spool. *ret_idx = its index. */
static enum kl_err part_new(struct delivery *d, enum part_kind kind, const char *const *values,
			    const char *error_type, const struct esn *e, size_t *ret_idx,
			    struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	char name[SPOOL_NAME_MAX + 1];
	struct part p;
	enum kl_err err;

	err = parts_grow(b, info);
	if (err)
		return err;
	memset(&p, 0, sizeof(p));
	p.kind = kind;
	p.error_type = error_type;
	if (kind == PART_DATA && d->n_names) {
		p.values = calloc(d->n_names, sizeof(*p.values));
		if (!p.values)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		for (size_t i = 0; i < d->n_names; i++) {
			p.values[i] = strdup(values[i]);
			if (!p.values[i]) {
				part_done(&p, d->n_names);
				return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
			}
		}
	}
	spool_name(d, e, kind == PART_DATA ? 'd' : 'e', b->n_parts, name, sizeof(name));
	err = spool_new(d->spool_dir, name, kind == PART_DATA ? &d->spool : &d->err_spool, &p.sp,
			info);
	if (err) {
		part_done(&p, d->n_names);
		return err;
	}
	b->parts[b->n_parts] = p;
	*ret_idx = b->n_parts++;
	if (kind == PART_DATA)
		b->n_data_parts++;
	return KL_OK;
}

static bool values_equal(const struct part *p, const char *const *values, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(p->values[i], values[i]) != 0)
			return false;
	return true;
}

/* Index of the data part with these values, or SIZE_MAX. */
static size_t find_data_part(struct delivery *d, const char *const *values)
{
	struct batch *b = &d->b;

	if (b->last_hit < b->n_parts && b->parts[b->last_hit].kind == PART_DATA &&
	    values_equal(&b->parts[b->last_hit], values, d->n_names))
		return b->last_hit;
	for (size_t i = 0; i < b->n_parts; i++)
		if (b->parts[i].kind == PART_DATA && values_equal(&b->parts[i], values, d->n_names)) {
			b->last_hit = i;
			return i;
		}
	return SIZE_MAX;
}

static size_t find_error_part(struct delivery *d, const char *type)
{
	struct batch *b = &d->b;

	for (size_t i = 0; i < b->n_parts; i++)
		if (b->parts[i].kind == PART_ERROR &&
		    (!d->error_by_type || strcmp(b->parts[i].error_type, type) == 0))
			return i;
	return SIZE_MAX;
}

/* Renders the key of a part for the batch range first..last. */
static enum kl_err render_key(struct delivery *d, enum part_kind kind, const char *const *values,
			      const char *error_type, const struct esn *first, const struct esn *last,
			      int64_t first_arrival_ms, char *out, size_t out_size, size_t *ret_len,
			      struct kl_errinfo *info)
{
	struct keytmpl_pkey pk[KEYTMPL_TEXT_MAX / 4];
	struct keytmpl_batch kb;

	memset(&kb, 0, sizeof(kb));
	kb.shard_id = d->shard_id;
	kb.first = first;
	kb.last = last;
	kb.first_arrival_ms = first_arrival_ms;
	kb.ext = d->ext;
	if (kind == PART_DATA) {
		for (size_t i = 0; i < d->n_names && i < KL_ARRAY_LEN(pk); i++) {
			pk[i].name = keytmpl_partition_name(d->data_tmpl, i);
			pk[i].value = values[i];
		}
		kb.pkeys = pk;
		kb.n_pkeys = d->n_names;
		return keytmpl_render(d->data_tmpl, &kb, out, out_size, ret_len, info);
	}
	kb.error_output_type = error_type;
	return keytmpl_render(d->error_tmpl, &kb, out, out_size, ret_len, info);
}

/* ================================================================ the protocol */

static bool in_flight(const struct delivery *d)
{
	return d->b.phase != PH_OPEN;
}

/* Is key one of the batch's live keys? */
static bool batch_has_key(const struct batch *b, const char *key)
{
	for (size_t i = 0; i < b->n_parts; i++)
		if (b->parts[i].key && strcmp(b->parts[i].key, key) == 0)
			return true;
	return false;
}

static bool recorded_has_key(const struct delivery_state *st, const char *key)
{
	for (size_t i = 0; i < st->n_objects; i++)
		if (strcmp(st->objects[i].key, key) == 0)
			return true;
	return false;
}

/* Encodes the batch's intent state: its live keys plus the stale ones. */
static enum kl_err encode_state(struct delivery *d, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	struct delivery_state st;
	enum kl_err err;

	memset(&st, 0, sizeof(st));
	st.first = b->first;
	st.first_arrival_ms = b->first_arrival_ms;
	st.records = b->records;
	st.n_objects = b->n_parts + b->n_stale;
	if (st.n_objects) {
		st.objects = calloc(st.n_objects, sizeof(*st.objects));
		if (!st.objects)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
	}
	for (size_t i = 0; i < b->n_parts; i++) {
		st.objects[i].kind = b->parts[i].kind == PART_DATA ? DELIVERY_OBJ_DATA
								   : DELIVERY_OBJ_ERROR;
		st.objects[i].key = b->parts[i].key;
	}
	for (size_t i = 0; i < b->n_stale; i++) {
		st.objects[b->n_parts + i].kind = DELIVERY_OBJ_STALE;
		st.objects[b->n_parts + i].key = b->stale[i];
	}
	buf_reset(&b->state);
	err = delivery_state_encode(&st, &b->state, info);
	free(st.objects);   /* keys are borrowed */
	return err;
}

/*
 * A rebuilt batch against the intent it rebuilds: every recorded key the
 * batch no longer has is stale (deleted before the checkpoint); a key the
 * batch has that the intent does not list needs a new intent first.
 */
static enum kl_err compare_with_recorded(struct delivery *d, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	const struct delivery_state *rec = &d->recorded;
	const char *first_new = NULL, *first_gone = NULL;

	b->need_prepare = false;
	if (!d->have_recorded) {
		b->need_prepare = b->n_parts > 0;
		return KL_OK;
	}
	if (rec->n_objects) {
		b->stale = calloc(rec->n_objects, sizeof(*b->stale));
		if (!b->stale)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
	}
	for (size_t i = 0; i < rec->n_objects; i++) {
		const struct delivery_state_object *o = &rec->objects[i];

		if (batch_has_key(b, o->key))
			continue;
		if (o->kind != DELIVERY_OBJ_STALE && !first_gone)
			first_gone = o->key;
		b->stale[b->n_stale] = strdup(o->key);
		if (!b->stale[b->n_stale])
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		b->n_stale++;
	}
	for (size_t i = 0; i < b->n_parts; i++)
		if (!recorded_has_key(rec, b->parts[i].key)) {
			b->need_prepare = true;
			if (!first_new)
				first_new = b->parts[i].key;
		}
	if (first_new || first_gone) {
		d->st.key_mismatches++;
		say(d, LOG_LEVEL_ERROR,
		    "delivery: shard '%s': the rebuilt batch does not have the keys of its intent"
		    " (first new key '%.300s', first missing key '%.300s'): a changed key template,"
		    " a changed plugin, or a determinism bug. Uploading the rebuilt objects and"
		    " deleting the %zu recorded ones it does not have, so every record stays in"
		    " exactly one object", d->shard_id, first_new ? first_new : "-",
		    first_gone ? first_gone : "-", b->n_stale);
	}
	return KL_OK;
}

/* SEAL: seal the spools, render the keys, settle the intent state. */
static enum kl_err step_seal(struct delivery *d, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	char key[KEYTMPL_KEY_MAX + 1];
	enum kl_err err = KL_OK;
	size_t w = 0;

	/* Parts left empty by a record that was not taken are dropped. */
	for (size_t i = 0; i < b->n_parts; i++) {
		struct part *p = &b->parts[i];

		if (p->sp && spool_records(p->sp) == 0) {
			if (p->kind == PART_DATA)
				b->n_data_parts--;
			part_done(p, d->n_names);
			continue;
		}
		if (w != i)
			b->parts[w] = *p;
		w++;
	}
	b->n_parts = w;
	b->last_hit = 0;
	for (size_t i = 0; i < b->n_parts; i++) {
		struct part *p = &b->parts[i];
		struct spool_meta meta;

		if (!p->sp)
			continue;
		err = spool_seal(p->sp, &meta, info);
		if (err == KL_ESTATE) {
			d->fail_kind = FAIL_OTHER;
			return broken(d, err, info);
		}
		if (err) {
			d->fail_kind = FAIL_DISK;
			return err;
		}
		p->path = strdup(spool_path(p->sp));
		if (!p->path) {
			d->fail_kind = FAIL_OTHER;
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		}
		p->file_bytes = meta.file_bytes;
		memcpy(p->sha256, meta.sha256, sizeof(p->sha256));
		p->records = meta.records;
		spool_free(p->sp);   /* sealed: the file stays, buffers go */
		p->sp = NULL;
	}
	for (size_t i = 0; i < b->n_parts; i++) {
		struct part *p = &b->parts[i];

		if (p->key)
			continue;
		err = render_key(d, p->kind, (const char *const *)p->values, p->error_type,
				 &b->first, &b->last, b->first_arrival_ms, key, sizeof(key), NULL,
				 info);
		if (!err && !(p->key = strdup(key)))
			err = kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		if (err) {
			d->fail_kind = FAIL_OTHER;
			return err;
		}
	}
	if (b->rebuild) {
		free_strv(b->stale, b->n_stale);
		b->stale = NULL;
		b->n_stale = b->next_stale = 0;
		err = compare_with_recorded(d, info);
	} else {
		b->need_prepare = b->n_parts > 0;
	}
	if (!err && (b->n_parts || b->n_stale))
		err = encode_state(d, info);
	if (err) {
		d->fail_kind = FAIL_OTHER;
		return err;
	}
	b->phase = b->n_parts || b->n_stale ? PH_INTENT : PH_COMMIT;
	return KL_OK;
}

static void lease_failure(struct delivery *d, enum kl_err err, const char *what,
			  const struct kl_errinfo *info)
{
	if (err == KL_ELEASE_LOST) {
		d->lost = true;
		set_blocked(d, DELIVERY_BLOCKED_LEASE_LOST, "lease '%s' lost during %s", d->lease_key,
			    what);
	}
	note_error(d, err, info);
}

/* INTENT: the journal row (best effort), then the intent in the lease. */
static enum kl_err step_intent(struct delivery *d, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	struct lease_esn end;
	enum kl_err err;

	if (d->journal && !b->journal_id && b->n_parts) {
		struct journal_object *objs = calloc(b->n_parts, sizeof(*objs));
		struct journal_batch jb;
		struct kl_errinfo ji;

		if (!objs)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		for (size_t i = 0; i < b->n_parts; i++) {
			objs[i].key = b->parts[i].key;
			objs[i].spool_path = b->parts[i].path;
			objs[i].spool_bytes = b->parts[i].file_bytes;
			objs[i].spool_sha256 = b->parts[i].sha256;
		}
		memset(&jb, 0, sizeof(jb));
		jb.shard_id = d->shard_id;
		jb.lease_key = d->lease_key;
		jb.first = b->first;
		jb.last = b->last;
		jb.objects = objs;
		jb.n_objects = b->n_parts;
		kl_errinfo_clear(&ji);
		err = journal_put(d->journal, &jb, JOURNAL_STATE_INTENT, &b->journal_id, &ji);
		free(objs);
		if (err) {
			/* The lease is the truth; only the same-host shortcut is lost. */
			d->st.journal_errors++;
			note_error(d, err, &ji);
			say(d, LOG_LEVEL_WARN, "delivery: shard '%s': journal: %s; continuing without"
			    " a local record of this batch", d->shard_id, ji.message);
			b->journal_id = 0;
		}
	}
	if (b->need_prepare) {
		esn_to_lease(&b->last, &end);
		err = lease_coord_prepare(d->coord, d->lease_key, d->token, &end, b->state.data,
					  b->state.len, info);
		if (err) {
			d->fail_kind = FAIL_LEASE;
			d->st.lease_write_failures++;
			lease_failure(d, err, "the intent write", info);
			return err;
		}
		b->need_prepare = false;
		d->st.intents++;
		d->st.lease_writes++;
	}
	b->phase = PH_UPLOAD;
	return KL_OK;
}

/* Before any S3 write: do we still hold the lease? */
static enum kl_err check_lease(struct delivery *d, struct kl_errinfo *info)
{
	enum kl_err err = lease_coord_check(d->coord, d->lease_key, d->token, NULL);

	if (err == KL_OK)
		return KL_OK;
	if (err == KL_ELEASE_LOST)
		kl_errinfo_set(info, err, "delivery: lease '%s' is no longer held", d->lease_key);
	else
		kl_errinfo_set(info, err, "delivery: lease '%s' is not processable now", d->lease_key);
	d->fail_kind = FAIL_LEASE;
	lease_failure(d, err, "the upload", info);
	return err;
}

static const char *part_content_type(const struct delivery *d, const struct part *p)
{
	return p->kind == PART_DATA ? d->content_type : DELIVERY_ERROR_CONTENT_TYPE;
}

/* UPLOAD: every object not uploaded yet. */
static enum kl_err step_upload(struct delivery *d, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	enum kl_err err;

	for (size_t i = 0; i < b->n_parts; i++) {
		struct part *p = &b->parts[i];
		struct delivery_upload up;
		struct delivery_upload_result res;

		if (p->uploaded)
			continue;
		err = check_lease(d, info);
		if (err)
			return err;
		up.path = p->path;
		up.bytes = p->file_bytes;
		up.key = p->key;
		up.content_type = part_content_type(d, p);
		up.content_encoding = spool_codec_encoding(codec_of_path(p->path));
		memset(&res, 0, sizeof(res));
		err = d->up.ops->upload(d->up.ctx, &up, &res, info);
		if (err) {
			d->fail_kind = FAIL_UPLOAD;
			d->st.upload_failures++;
			note_error(d, err, info);
			return err;
		}
		p->uploaded = true;
		d->st.objects_uploaded++;
		d->st.bytes_uploaded += p->file_bytes;
		if (d->journal && b->journal_id) {
			struct kl_errinfo ji;

			kl_errinfo_clear(&ji);
			if (journal_mark_uploaded(d->journal, b->journal_id, p->key, &ji) != KL_OK)
				d->st.journal_errors++;
		}
	}
	b->phase = PH_DELETE;
	return KL_OK;
}

/* DELETE: objects a recorded intent named that the rebuilt batch has not. */
static enum kl_err step_delete(struct delivery *d, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	enum kl_err err;

	while (b->next_stale < b->n_stale) {
		err = check_lease(d, info);
		if (err)
			return err;
		err = d->up.ops->remove(d->up.ctx, b->stale[b->next_stale], info);
		if (err) {
			d->fail_kind = FAIL_UPLOAD;
			d->st.upload_failures++;
			note_error(d, err, info);
			return err;
		}
		d->st.stale_deleted++;
		b->next_stale++;
	}
	b->phase = d->hook.ops ? PH_HOOK : PH_COMMIT;
	return KL_OK;
}

/*
 * HOOK: the batch's contributions to the hook (aggregates), after every
 * object is in S3 and before the checkpoint; idempotent per end ESN, so a
 * retry or a rebuild by the next owner applies nothing twice.
 */
static enum kl_err step_hook(struct delivery *d, struct kl_errinfo *info)
{
	enum kl_err err = check_lease(d, info);

	if (err)
		return err;
	err = d->hook.ops->apply(d->hook.ctx, &d->b.last, info);
	if (err) {
		d->fail_kind = FAIL_OTHER;
		note_error(d, err, info);
		return err;
	}
	d->b.phase = PH_COMMIT;
	return KL_OK;
}

/* COMMIT: checkpoint the batch's end, then the local clean-up. */
static enum kl_err step_commit(struct delivery *d, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	struct lease_esn end;
	enum kl_err err;

	esn_to_lease(b->commit_only ? &d->rebuild_end : &b->last, &end);
	err = lease_coord_checkpoint(d->coord, d->lease_key, d->token, &end, info);
	if (err) {
		d->fail_kind = FAIL_LEASE;
		d->st.lease_write_failures++;
		lease_failure(d, err, "the checkpoint", info);
		return err;
	}
	d->st.lease_writes++;
	if (d->journal && b->journal_id) {
		struct kl_errinfo ji;

		kl_errinfo_clear(&ji);
		if (journal_mark_committed(d->journal, b->journal_id, &ji) != KL_OK)
			d->st.journal_errors++;
	}
	d->checkpoint = end;
	d->st.checkpoint = end;
	d->st.batches_committed++;
	d->st.last_commit_wall_ms = lease_clock_wall(&d->clock);
	if (b->rebuild || b->commit_only) {
		d->rebuilding = false;
		d->st.rebuilding = false;
		delivery_state_done(&d->recorded);
		d->have_recorded = false;
	}
	batch_reset(d, true);
	return KL_OK;
}

/* Backoff before the next attempt: exponential, jittered into [d/2, d]. */
static void schedule_retry(struct delivery *d)
{
	int64_t delay = d->retry_base_ms;
	uint32_t n = d->failures < 30 ? d->failures : 30;

	for (uint32_t i = 1; i < n && delay < d->retry_max_ms; i++)
		delay *= 2;
	if (delay > d->retry_max_ms)
		delay = d->retry_max_ms;
	delay = delay / 2 + (int64_t)kl_rng_below(&d->rng, (uint64_t)(delay - delay / 2) + 1);
	d->retry_at = now_mono(d) + delay;
}

/*
 * Runs the batch in flight forward until it is committed or a step fails.
 * On failure the batch stays where it stopped, the condition is in the
 * stats and the next attempt waits for the backoff.
 */
static enum kl_err drive(struct delivery *d, struct kl_errinfo *info)
{
	enum kl_err err = KL_OK;

	while (in_flight(d) && !err && !d->lost && !d->broken) {
		switch (d->b.phase) {
		case PH_OPEN:
			break;
		case PH_SEAL:
			err = step_seal(d, info);
			break;
		case PH_INTENT:
			err = step_intent(d, info);
			break;
		case PH_UPLOAD:
			err = step_upload(d, info);
			break;
		case PH_DELETE:
			err = step_delete(d, info);
			break;
		case PH_HOOK:
			err = step_hook(d, info);
			break;
		case PH_COMMIT:
			err = step_commit(d, info);
			break;
		}
	}
	if (d->lost || d->broken)
		return KL_ELEASE_LOST;
	if (!err) {
		d->failures = 0;
		if (!d->disk_full)
			clear_blocked(d);
		d->st.in_flight = false;
		return KL_OK;
	}
	d->failures++;
	schedule_retry(d);
	d->st.in_flight = true;
	switch (d->fail_kind) {
	case FAIL_UPLOAD:
		set_blocked(d, DELIVERY_BLOCKED_UPLOAD, "S3: %s (attempt %u, retrying in %" PRId64
			    " ms)", d->st.last_error, d->failures, d->retry_at - now_mono(d));
		break;
	case FAIL_LEASE:
		set_blocked(d, DELIVERY_BLOCKED_LEASE_WRITE, "lease table: %s (attempt %u, retrying"
			    " in %" PRId64 " ms)", d->st.last_error, d->failures,
			    d->retry_at - now_mono(d));
		break;
	case FAIL_DISK:
		note_error(d, err, info);
		set_blocked(d, DELIVERY_BLOCKED_DISK, "sealing: %s (retrying in %" PRId64 " ms)",
			    d->st.last_error, d->retry_at - now_mono(d));
		break;
	case FAIL_OTHER:
		note_error(d, err, info);
		set_blocked(d, DELIVERY_BLOCKED_ERROR, "%s (retrying in %" PRId64 " ms)",
			    d->st.last_error, d->retry_at - now_mono(d));
		break;
	}
	if (d->failures == 1 || d->failures % 10 == 0)
		say(d, LOG_LEVEL_WARN, "delivery: shard '%s' is not advancing: %s", d->shard_id,
		    d->st.blocked_reason);
	return err;
}

/* Seals the open batch and runs the protocol. */
static enum kl_err seal_and_drive(struct delivery *d, struct kl_errinfo *info)
{
	d->b.phase = PH_SEAL;
	d->b.rebuild = d->rebuilding;
	d->st.in_flight = true;
	d->failures = 0;
	return drive(d, info);
}

/* What push() answers while the batch in flight does not move. */
static enum kl_err busy(struct delivery *d, enum kl_err err, struct kl_errinfo *info)
{
	if (d->lost || d->broken)
		return KL_ELEASE_LOST;
	if (d->st.blocked == DELIVERY_BLOCKED_DISK)
		return kl_errinfo_set(info, KL_ENOSPC, "delivery: %s", d->st.blocked_reason);
	(void)err;
	return kl_errinfo_set(info, KL_ETHROTTLED, "delivery: shard '%s' waits: %s", d->shard_id,
			      d->st.blocked_reason);
}

/* ================================================================ taking records */

/* How one record is routed. */
struct plan {
	bool to_error;
	enum errrec_code code;
	const char *message;
	uint32_t attempts;
	char msg[512];
	size_t *out_part;              /* data: part index per output */
};

/* Partition values of output o, or an error record reason in pl. */
static bool output_values(struct delivery *d, const struct xform_output *o, size_t oi,
			  const char **values, struct plan *pl)
{
	for (size_t i = 0; i < d->n_names; i++) {
		const char *name = keytmpl_partition_name(d->data_tmpl, i);
		const char *v = NULL;
		struct kl_errinfo ci;

		for (size_t k = 0; k < o->nkeys; k++)
			if (o->keys[k].name && strcmp(o->keys[k].name, name) == 0) {
				v = o->keys[k].value;
				break;
			}
		if (!v) {
			pl->to_error = true;
			pl->code = ERRREC_PARTITION_KEY_MISSING;
			snprintf(pl->msg, sizeof(pl->msg),
				 "output %zu: partition key '%s' is missing", oi, name);
			return false;
		}
		kl_errinfo_clear(&ci);
		if (keytmpl_check_value(v, &ci) != KL_OK) {
			pl->to_error = true;
			pl->code = ERRREC_PARTITION_KEY_INVALID;
			snprintf(pl->msg, sizeof(pl->msg), "output %zu: partition key '%s': %s", oi,
				 name, ci.message);
			return false;
		}
		values[i] = v;
	}
	return true;
}

enum take_result {
	TAKE_OK,        /* planned; parts exist */
	TAKE_SEAL,      /* the batch must be sealed first (partition cap) */
	TAKE_ERR,       /* err set */
};

/*
 * Plans an OK record: finds or creates the part of every output. A record
 * that needs more new partitions than the batch may still open asks for
 * the batch to be sealed first; one that needs more than a whole batch
 * may have goes to the error output.
 */
static enum take_result plan_outputs(struct delivery *d, const struct esn *e,
				     int64_t arrival_ms, const struct xform_result *res,
				     struct plan *pl, enum kl_err *ret_err, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	const char *values[KEYTMPL_TEXT_MAX / 4];
	size_t new_parts = 0, new_key_bytes = 0;
	char key[KEYTMPL_KEY_MAX + 1];
	enum kl_err err;

	/* Pass 1: every output has valid values; count new partitions. */
	for (size_t oi = 0; oi < res->noutputs; oi++) {
		bool seen = false;

		if (!output_values(d, &res->outputs[oi], oi, values, pl))
			return TAKE_OK;
		if (find_data_part(d, values) != SIZE_MAX)
			continue;
		/* A new partition an earlier output of this record also needs? */
		for (size_t pj = 0; pj < oi && !seen; pj++) {
			const char *pv[KEYTMPL_TEXT_MAX / 4];
			struct plan scratch_plan;

			memset(&scratch_plan, 0, sizeof(scratch_plan));
			if (!output_values(d, &res->outputs[pj], pj, pv, &scratch_plan))
				continue;
			seen = true;
			for (size_t k = 0; k < d->n_names && seen; k++)
				seen = strcmp(pv[k], values[k]) == 0;
		}
		if (seen)
			continue;
		{
			size_t klen = 0;
			struct kl_errinfo ki;
			const struct esn *first = b->pushed ? &b->first : e;
			int64_t fa = b->pushed ? b->first_arrival_ms : arrival_ms;

			kl_errinfo_clear(&ki);
			err = render_key(d, PART_DATA, values, NULL, first, e, fa, key, sizeof(key),
					 &klen, &ki);
			if (err) {
				pl->to_error = true;
				pl->code = ERRREC_PARTITION_KEY_INVALID;
				snprintf(pl->msg, sizeof(pl->msg), "output %zu: no valid object key: %s",
					 oi, ki.message);
				return TAKE_OK;
			}
			new_key_bytes += klen + 16;
		}
		new_parts++;
	}
	if (new_parts && !d->partial.active) {
		bool over = b->n_data_parts + new_parts > d->max_partitions ||
			    b->key_bytes + new_key_bytes > KEY_BUDGET;

		if (over && b->pushed > 0) {
			if (!d->rebuilding)
				return TAKE_SEAL;
			/*
			 * A rebuild never seals early: the original batch had
			 * room for this record (else it would have ended before
			 * it). Only the hard ceiling still applies.
			 */
			over = b->n_data_parts + new_parts > DELIVERY_MAX_PARTITIONS;
		}
		/* Same rule for a batch's first record, rebuilding or not. */
		if (over) {
			pl->to_error = true;
			pl->code = ERRREC_PARTITION_KEY_INVALID;
			snprintf(pl->msg, sizeof(pl->msg),
				 "the record needs %zu partitions, more than a batch may have (%u)",
				 new_parts, d->max_partitions);
			return TAKE_OK;
		}
	}
	/* Pass 2: create the missing parts, map every output to its part. */
	for (size_t oi = 0; oi < res->noutputs; oi++) {
		size_t idx;

		output_values(d, &res->outputs[oi], oi, values, pl);
		idx = find_data_part(d, values);
		if (idx == SIZE_MAX) {
			size_t klen = 0;

			render_key(d, PART_DATA, values, NULL, b->pushed ? &b->first : e, e,
				   b->pushed ? b->first_arrival_ms : arrival_ms, key, sizeof(key),
				   &klen, NULL);
			err = part_new(d, PART_DATA, values, NULL, e, &idx, info);
			if (err) {
				*ret_err = err;
				return TAKE_ERR;
			}
			b->key_bytes += klen + 16;
		}
		b->last_hit = idx;
		pl->out_part[oi] = idx;
	}
	return TAKE_OK;
}

/* The record is wholly in the batch: account for it. */
static void record_taken(struct delivery *d, const struct esn *e,
			 const struct kl_transform_record *rec)
{
	struct batch *b = &d->b;

	if (b->pushed == 0) {
		b->first = *e;
		b->first_arrival_ms = rec->approximate_arrival_ms > 0 ? rec->approximate_arrival_ms : 0;
		b->opened_mono_ms = now_mono(d);
	}
	b->last = *e;
	b->pushed++;
	d->partial.active = false;
	d->st.records_in++;
	d->st.bytes_in += rec->len;
	if (d->disk_full) {
		d->disk_full = false;
		clear_blocked(d);
		say(d, LOG_LEVEL_INFO, "delivery: shard '%s': spool directory writable again",
		    d->shard_id);
	}
}

static bool seal_due(const struct delivery *d, const struct esn *e)
{
	const struct batch *b = &d->b;

	if (d->rebuilding)
		return esn_cmp(e, &d->rebuild_end) >= 0;
	return b->raw_bytes >= d->buffer_bytes ||
	       (d->buffer_records && b->records >= d->buffer_records) ||
	       (d->hook.ops && d->hook.ops->full(d->hook.ctx));
}

/* Writes one error record for rec into the error part of its type. */
static enum kl_err write_error(struct delivery *d, const struct kl_transform_record *rec,
			       const struct esn *e, const struct plan *pl, struct kl_errinfo *info)
{
	const char *type = errrec_output_type(pl->code);
	struct errrec r;
	size_t idx;
	enum kl_err err;

	memset(&r, 0, sizeof(r));
	r.code = pl->code;
	r.message = pl->message;
	r.attempts = pl->attempts;
	r.arrival_ms = rec->approximate_arrival_ms;
	r.shard_id = d->shard_id;
	r.esn = e;
	r.partition_key = rec->partition_key;
	r.data = rec->data;
	r.len = rec->len;
	buf_reset(&d->scratch);
	err = errrec_build(&r, &d->scratch, info);
	if (err)
		return err;
	idx = find_error_part(d, type);
	if (idx == SIZE_MAX) {
		err = part_new(d, PART_ERROR, NULL, d->error_by_type ? type : NULL, e, &idx, info);
		if (err == KL_ENOSPC || err == KL_EIO)
			return disk_failure(d, err, info);
		if (err)
			return err;
	}
	err = spool_append(d->b.parts[idx].sp, d->scratch.data, d->scratch.len, e,
			   rec->approximate_arrival_ms, info);
	if (err == KL_ENOSPC || err == KL_EIO)
		return disk_failure(d, err, info);
	if (err == KL_ESTATE)
		return broken(d, err, info);
	if (err)
		return err;
	d->b.parts[idx].records++;
	d->b.records++;
	d->b.raw_bytes += d->scratch.len + 1;
	d->st.records_failed++;
	d->st.bytes_out += d->scratch.len + 1;
	if (d->scratch.alloc > SCRATCH_KEEP) {
		buf_done(&d->scratch);
		buf_init(&d->scratch, SCRATCH_CAP);
	}
	return KL_OK;
}

/*
 * The records of a recorded intent are gone from the stream (the first
 * record offered is already past its end): checkpoint the intent's end
 * as it is, keeping whatever it uploaded.
 */
static enum kl_err commit_vanished_intent(struct delivery *d, const struct esn *e,
					  struct kl_errinfo *info)
{
	say(d, LOG_LEVEL_ERROR, "delivery: shard '%s': the records of the pending intent (up to"
	    " %s/%" PRIu64 ") are no longer in the stream (the first one offered is %s/%" PRIu64
	    "); checkpointing the intent as it is", d->shard_id, d->rebuild_end.seq,
	    d->rebuild_end.sub, e->seq, e->sub);
	d->b.commit_only = true;
	d->b.phase = PH_COMMIT;
	d->st.in_flight = true;
	d->failures = 0;
	return drive(d, info);
}

/* KL_OK while d can take records and flush; else why not, in info. */
static enum kl_err check_usable(const struct delivery *d, struct kl_errinfo *info)
{
	if (d->abandoned)
		return kl_errinfo_set(info, KL_ESTATE, "delivery: shard '%s' was abandoned",
				      d->shard_id);
	if (d->lost)
		return kl_errinfo_set(info, KL_ELEASE_LOST, "delivery: lease '%s' is lost",
				      d->lease_key);
	if (d->broken)
		return kl_errinfo_set(info, KL_ELEASE_LOST, "delivery: %s", d->st.blocked_reason);
	return KL_OK;
}

static enum kl_err push_common(struct delivery *d, const struct kl_transform_record *rec,
			       const struct xform_result *res, const struct plan *forced,
			       struct kl_errinfo *info)
{
	size_t out_part_small[16];
	struct kl_errinfo local;
	struct plan pl;
	struct esn e;
	enum kl_err err;

	/* Failure details also feed the stats: keep them when the caller does not. */
	if (!info) {
		kl_errinfo_clear(&local);
		info = &local;
	}
	err = check_usable(d, info);
	if (err)
		return err;
	if (!rec || !rec->sequence_number || (!forced && !res))
		return kl_errinfo_set(info, KL_EINVAL, "delivery: push without a record");
	err = esn_set(rec->sequence_number, rec->sub_sequence_number, &e, info);
	if (err)
		return err;
	if (cmp_with_lease(&e, &d->checkpoint) <= 0) {
		d->st.records_skipped++;
		return KL_OK;
	}
	if (in_flight(d)) {
		if (now_mono(d) >= d->retry_at)
			err = drive(d, info);
		if (in_flight(d) || d->lost || d->broken)
			return busy(d, err, info);
	}
	if (d->partial.active && esn_cmp(&e, &d->partial.esn) != 0)
		return kl_errinfo_set(info, KL_ESTATE, "delivery: record %s/%" PRIu64 " was partly"
				      " written; offer it again first", d->partial.esn.seq,
				      d->partial.esn.sub);
	if (d->b.pushed && esn_cmp(&e, &d->b.last) <= 0)
		return kl_errinfo_set(info, KL_EINVAL, "delivery: ESN %s/%" PRIu64 " is not after"
				      " %s/%" PRIu64, e.seq, e.sub, d->b.last.seq, d->b.last.sub);
	if (d->rebuilding && esn_cmp(&e, &d->rebuild_end) > 0) {
		/* Past the intent's end without reaching it exactly. */
		err = d->b.pushed ? seal_and_drive(d, info) : commit_vanished_intent(d, &e, info);
		if (in_flight(d) || d->lost || d->broken)
			return busy(d, err, info);
	}

	memset(&pl, 0, sizeof(pl));
	if (forced) {
		pl.to_error = true;
		pl.code = forced->code;
		pl.message = forced->message;
		pl.attempts = forced->attempts;
	} else if (res->result == KL_TRANSFORM_FAILED) {
		pl.to_error = true;
		pl.code = ERRREC_PROCESSING_FAILED;
		pl.message = res->reason;
		pl.attempts = 1;
	} else if (res->result != KL_TRANSFORM_OK && res->result != KL_TRANSFORM_DROPPED) {
		/* Never dropped silently: whatever this is, it is not a result. */
		pl.to_error = true;
		pl.code = ERRREC_PROCESSING_FAILED;
		snprintf(pl.msg, sizeof(pl.msg), "unknown transform result %d", (int)res->result);
		pl.message = pl.msg;
		pl.attempts = 1;
	} else if (res->result == KL_TRANSFORM_OK && res->noutputs) {
		enum take_result tr;

		pl.out_part = res->noutputs <= KL_ARRAY_LEN(out_part_small)
				      ? out_part_small
				      : malloc(res->noutputs * sizeof(*pl.out_part));
		if (!pl.out_part)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		for (;;) {
			tr = plan_outputs(d, &e, rec->approximate_arrival_ms, res, &pl, &err, info);
			if (tr != TAKE_SEAL)
				break;
			/* Partition cap: this record starts the next batch. */
			d->st.partition_cap_seals++;
			err = seal_and_drive(d, info);
			if (in_flight(d) || d->lost || d->broken) {
				if (pl.out_part != out_part_small)
					free(pl.out_part);
				return busy(d, err, info);
			}
		}
		if (tr == TAKE_ERR) {
			if (pl.out_part != out_part_small)
				free(pl.out_part);
			if (err == KL_ENOSPC || err == KL_EIO)
				return disk_failure(d, err, info);
			return err;
		}
		if (pl.to_error) {
			pl.message = pl.msg;
			pl.attempts = 1;
		} else {
			size_t from = d->partial.active ? d->partial.next_output : 0;

			for (size_t oi = from; oi < res->noutputs; oi++) {
				const struct xform_output *o = &res->outputs[oi];
				struct part *p = &d->b.parts[pl.out_part[oi]];

				err = spool_append(p->sp, o->data, o->len, &e,
						   rec->approximate_arrival_ms, info);
				if (err) {
					if (pl.out_part != out_part_small)
						free(pl.out_part);
					if (err == KL_ESTATE)
						return broken(d, err, info);
					if (err != KL_ENOSPC && err != KL_EIO)
						return err;
					d->partial.active = true;
					d->partial.esn = e;
					d->partial.next_output = oi;
					return disk_failure(d, err, info);
				}
				p->records++;
				d->b.records++;
				d->b.raw_bytes += o->len + d->delim_len;
				d->st.records_out++;
				d->st.bytes_out += o->len + d->delim_len;
				/* The output is in the batch: so is its contribution
				 * (a resumed partial record starts after it). */
				if (d->hook.ops) {
					err = d->hook.ops->add(d->hook.ctx, rec, o, info);
					if (err) {
						if (pl.out_part != out_part_small)
							free(pl.out_part);
						return broken(d, err, info);
					}
				}
			}
		}
		if (pl.out_part != out_part_small)
			free(pl.out_part);
		pl.out_part = NULL;
	}
	if (pl.to_error) {
		err = write_error(d, rec, &e, &pl, info);
		if (err)
			return err;
	} else if (!forced && (res->result == KL_TRANSFORM_DROPPED ||
			       (res->result == KL_TRANSFORM_OK && res->noutputs == 0))) {
		d->st.records_dropped += res->result == KL_TRANSFORM_DROPPED;
	}
	record_taken(d, &e, rec);
	if (seal_due(d, &e)) {
		err = seal_and_drive(d, info);
		if (err == KL_ELEASE_LOST)
			return err;
	}
	return KL_OK;
}

enum kl_err delivery_push(struct delivery *d, const struct kl_transform_record *rec,
			  const struct xform_result *res, struct kl_errinfo *info)
{
	return push_common(d, rec, res, NULL, info);
}

enum kl_err delivery_push_error(struct delivery *d, const struct kl_transform_record *rec,
				enum errrec_code code, const char *message, uint32_t attempts,
				struct kl_errinfo *info)
{
	struct plan forced;

	memset(&forced, 0, sizeof(forced));
	forced.code = code;
	forced.message = message;
	forced.attempts = attempts;
	return push_common(d, rec, NULL, &forced, info);
}

/* ================================================================ the rest of the seam */

bool delivery_blocked(const struct delivery *d)
{
	return d->abandoned || d->lost || d->broken || d->disk_full || d->partial.active ||
	       in_flight(d);
}

enum kl_err delivery_tick(struct delivery *d, int64_t now_mono_ms, struct kl_errinfo *info)
{
	struct kl_errinfo local;

	if (!info) {
		kl_errinfo_clear(&local);
		info = &local;
	}
	if (d->abandoned)
		return kl_errinfo_set(info, KL_ESTATE, "delivery: shard '%s' was abandoned",
				      d->shard_id);
	if (d->lost || d->broken)
		return KL_ELEASE_LOST;
	if (in_flight(d)) {
		if (now_mono_ms < d->retry_at)
			return KL_OK;
		return drive(d, info);
	}
	if (d->b.pushed && !d->rebuilding && !d->partial.active &&
	    now_mono_ms - d->b.opened_mono_ms >= d->buffer_ms)
		return seal_and_drive(d, info);
	return KL_OK;
}

enum kl_err delivery_flush(struct delivery *d, struct kl_errinfo *info)
{
	struct kl_errinfo local;
	enum kl_err err;

	if (!info) {
		kl_errinfo_clear(&local);
		info = &local;
	}
	err = check_usable(d, info);
	if (err)
		return err;
	if (d->partial.active)
		return kl_errinfo_set(info, KL_ENOSPC, "delivery: record %s/%" PRIu64 " was partly"
				      " written (disk full); offer it again before flushing",
				      d->partial.esn.seq, d->partial.esn.sub);
	if (in_flight(d)) {
		err = drive(d, info);
		if (err)
			return err;
	}
	/* While rebuilding with nothing taken yet the intent stays for the next owner. */
	if (d->b.pushed && d->rebuilding && d->hook.ops) {
		/*
		 * With a hook, too, whatever was rebuilt: the recorded batch may
		 * have been applied in part by its first owner, and committing
		 * a shorter batch would make the rest be applied again under a
		 * later end ESN. The next owner rebuilds the whole intent.
		 */
		say(d, LOG_LEVEL_INFO, "delivery: shard '%s': leaving the pending intent up to %s/%"
		    PRIu64 " to the next owner", d->shard_id, d->rebuild_end.seq, d->rebuild_end.sub);
		return KL_OK;
	}
	if (d->b.pushed)
		return seal_and_drive(d, info);
	return KL_OK;
}

void delivery_abandon(struct delivery *d)
{
	if (!d || d->abandoned)
		return;
	d->abandoned = true;
	/* Keep the sealed files of a batch the journal knows; drop the rest. */
	batch_reset(d, d->b.journal_id == 0);
	d->partial.active = false;
}

void delivery_resume_after(const struct delivery *d, struct lease_esn *ret)
{
	if (d->b.pushed && !d->b.commit_only)
		esn_to_lease(&d->b.last, ret);
	else
		*ret = d->checkpoint;
}

void delivery_get_stats(const struct delivery *d, struct delivery_stats *ret)
{
	*ret = d->st;
	ret->in_flight = in_flight(d);
	ret->rebuilding = d->rebuilding;
	ret->checkpoint = d->checkpoint;
	ret->open_parts = in_flight(d) ? 0 : (uint32_t)d->b.n_parts;
	ret->open_records = in_flight(d) ? 0 : d->b.records;
	ret->open_bytes = in_flight(d) ? 0 : d->b.raw_bytes;
	ret->open_first_arrival_ms = d->b.pushed ? d->b.first_arrival_ms : 0;
	ret->open_spool_bytes = 0;
	for (size_t i = 0; !in_flight(d) && i < d->b.n_parts; i++)
		if (d->b.parts[i].sp)
			ret->open_spool_bytes += spool_file_bytes(d->b.parts[i].sp);
}

const char *delivery_blocked_name(enum delivery_blocked b)
{
	switch (b) {
	case DELIVERY_BLOCKED_NONE: return "none";
	case DELIVERY_BLOCKED_UPLOAD: return "upload";
	case DELIVERY_BLOCKED_LEASE_WRITE: return "lease-write";
	case DELIVERY_BLOCKED_DISK: return "disk";
	case DELIVERY_BLOCKED_ERROR: return "error";
	case DELIVERY_BLOCKED_BROKEN: return "broken";
	case DELIVERY_BLOCKED_LEASE_LOST: return "lease-lost";
	}
	return "unknown";
}

/* record_sink adapters */
static enum kl_err sink_push(void *ctx, const struct kl_transform_record *rec,
			     const struct xform_result *res, struct kl_errinfo *info)
{
	return delivery_push(ctx, rec, res, info);
}

static bool sink_blocked(void *ctx)
{
	return delivery_blocked(ctx);
}

static enum kl_err sink_tick(void *ctx, int64_t now_mono_ms, struct kl_errinfo *info)
{
	return delivery_tick(ctx, now_mono_ms, info);
}

static enum kl_err sink_flush(void *ctx, struct kl_errinfo *info)
{
	return delivery_flush(ctx, info);
}

static void sink_abandon(void *ctx)
{
	delivery_abandon(ctx);
}

static void sink_resume_after(void *ctx, struct lease_esn *ret)
{
	delivery_resume_after(ctx, ret);
}

/* The poison-record path: the default message, attempts as counted. */
static enum kl_err sink_push_crashed(void *ctx, const struct kl_transform_record *rec,
				     uint32_t attempts, struct kl_errinfo *info)
{
	return delivery_push_error(ctx, rec, ERRREC_PLUGIN_CRASH, NULL, attempts, info);
}

static const struct record_sink_ops delivery_sink_ops = {
	.push = sink_push,
	.blocked = sink_blocked,
	.tick = sink_tick,
	.flush = sink_flush,
	.abandon = sink_abandon,
	.resume_after = sink_resume_after,
	.push_crashed = sink_push_crashed,
};

void delivery_sink(struct delivery *d, struct record_sink *ret)
{
	ret->ops = &delivery_sink_ops;
	ret->ctx = d;
}

/* ================================================================ set-up and recovery */

/* Removes the spool files a journal row lists. */
static void remove_row_spools(const struct journal_batch *row)
{
	for (size_t i = 0; i < row->n_objects; i++)
		if (row->objects[i].spool_path)
			spool_remove(row->objects[i].spool_path, NULL);
}

static const struct delivery_state_object *state_find(const struct delivery_state *st,
						       const char *key)
{
	for (size_t i = 0; i < st->n_objects; i++)
		if (strcmp(st->objects[i].key, key) == 0)
			return &st->objects[i];
	return NULL;
}

/*
 * Does journal row match the lease's intent (end, state), and are its
 * spools intact? KL_OK: usable; KL_ENOTFOUND: another batch; KL_ECONFLICT:
 * this batch but damaged or incomplete (info says why).
 */
static enum kl_err row_usable(struct delivery *d, const struct journal_batch *row,
			      const struct esn *end, const struct delivery_state *st,
			      struct kl_errinfo *info)
{
	size_t live = 0;

	if (esn_cmp(&row->last, end) != 0 || esn_cmp(&row->first, &st->first) != 0)
		return KL_ENOTFOUND;
	if (row->state != JOURNAL_STATE_INTENT && row->state != JOURNAL_STATE_UPLOADED)
		return kl_errinfo_set(info, KL_ECONFLICT, "journal row is %s",
				      journal_state_name(row->state));
	for (size_t i = 0; i < st->n_objects; i++)
		live += st->objects[i].kind != DELIVERY_OBJ_STALE;
	if (row->n_objects != live)
		return kl_errinfo_set(info, KL_ECONFLICT, "journal lists %zu objects, the intent %zu",
				      row->n_objects, live);
	for (size_t i = 0; i < row->n_objects; i++) {
		const struct journal_object *o = &row->objects[i];
		const struct delivery_state_object *so = state_find(st, o->key);
		enum kl_err err;

		if (!so || so->kind == DELIVERY_OBJ_STALE)
			return kl_errinfo_set(info, KL_ECONFLICT, "object '%.200s' is not in the intent",
					      o->key);
		if (!o->spool_path || !o->spool_sha256)
			return kl_errinfo_set(info, KL_ECONFLICT, "object '%.200s' has no spool file",
					      o->key);
		if (o->uploaded)
			continue;    /* already in S3: its file is not needed */
		err = spool_verify(o->spool_path, o->spool_bytes, o->spool_sha256, info);
		if (err)
			return KL_ECONFLICT;
	}
	return KL_OK;
}

/* Turns a usable journal row into the batch in flight (upload phase). */
static enum kl_err adopt_row(struct delivery *d, const struct journal_batch *row,
			     const struct delivery_state *st, struct kl_errinfo *info)
{
	struct batch *b = &d->b;
	size_t n_stale = 0;
	enum kl_err err;

	for (size_t i = 0; i < row->n_objects; i++) {
		const struct journal_object *o = &row->objects[i];
		const struct delivery_state_object *so = state_find(st, o->key);
		struct part *p;

		err = parts_grow(b, info);
		if (err)
			return err;
		p = &b->parts[b->n_parts++];
		memset(p, 0, sizeof(*p));
		p->kind = so->kind == DELIVERY_OBJ_DATA ? PART_DATA : PART_ERROR;
		p->key = strdup(o->key);
		p->path = strdup(o->spool_path);
		p->file_bytes = o->spool_bytes;
		snprintf(p->sha256, sizeof(p->sha256), "%s", o->spool_sha256);
		p->uploaded = o->uploaded;
		if (!p->key || !p->path)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		if (p->kind == PART_DATA)
			b->n_data_parts++;
	}
	for (size_t i = 0; i < st->n_objects; i++)
		n_stale += st->objects[i].kind == DELIVERY_OBJ_STALE;
	if (n_stale) {
		b->stale = calloc(n_stale, sizeof(*b->stale));
		if (!b->stale)
			return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
		for (size_t i = 0; i < st->n_objects; i++)
			if (st->objects[i].kind == DELIVERY_OBJ_STALE) {
				b->stale[b->n_stale] = strdup(st->objects[i].key);
				if (!b->stale[b->n_stale])
					return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
				b->n_stale++;
			}
	}
	b->first = st->first;
	b->last = row->last;
	b->first_arrival_ms = st->first_arrival_ms;
	b->records = st->records;
	b->pushed = 1;   /* not counted as taken here; marks the range as known */
	b->journal_id = row->id;
	b->phase = PH_UPLOAD;
	d->st.in_flight = true;
	d->retry_at = now_mono(d);
	return KL_OK;
}

/* Settles the journal against the lease; may set up the batch in flight. */
static enum kl_err recover(struct delivery *d, const struct lease_grant *g, struct kl_errinfo *info)
{
	struct journal_batch *rows = NULL;
	struct esn end;
	bool has_intent = false, adopted = false;
	size_t n = 0;
	enum kl_err err;

	if (g->pending.kind == LEASE_ESN_SEQ && lease_esn_cmp(&g->pending, &g->checkpoint) > 0 &&
	    lease_to_esn(&g->pending, &end)) {
		struct kl_errinfo si;

		has_intent = true;
		kl_errinfo_clear(&si);
		if (g->pending_state_len &&
		    delivery_state_decode(g->pending_state, g->pending_state_len, &d->recorded,
					  &si) == KL_OK) {
			d->have_recorded = true;
		} else {
			d->st.foreign_intents++;
			say(d, LOG_LEVEL_WARN, "delivery: shard '%s': the pending intent up to %s/%"
			    PRIu64 " carries no kinlake state (%s); rebuilding it without a key check",
			    d->shard_id, end.seq, end.sub,
			    g->pending_state_len ? si.message : "no state");
		}
	}
	if (d->journal) {
		struct kl_errinfo li;

		kl_errinfo_clear(&li);
		err = journal_list_pending(d->journal, d->shard_id, &rows, &n, &li);
		if (err) {
			/* The lease is the truth: go on without the local shortcut. */
			d->st.journal_errors++;
			note_error(d, err, &li);
			say(d, LOG_LEVEL_WARN, "delivery: shard '%s': cannot read the journal (%s);"
			    " pending work is rebuilt from the stream", d->shard_id, li.message);
			rows = NULL;
			n = 0;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct journal_batch *row = &rows[i];
		struct kl_errinfo ri;
		struct lease_esn row_last;

		kl_errinfo_clear(&ri);
		/* A hook needs the records themselves: no spool shortcut then. */
		if (has_intent && d->have_recorded && !adopted && !d->hook.ops) {
			err = row_usable(d, row, &end, &d->recorded, &ri);
			if (err == KL_OK) {
				err = adopt_row(d, row, &d->recorded, info);
				if (err) {
					journal_batches_free(rows, n);
					return err;
				}
				adopted = true;
				d->st.spool_recoveries++;
				say(d, LOG_LEVEL_INFO, "delivery: shard '%s': uploading the pending batch"
				    " up to %s/%" PRIu64 " from its %zu verified spool file(s)",
				    d->shard_id, end.seq, end.sub, row->n_objects);
				continue;
			}
			if (err == KL_ECONFLICT) {
				d->st.damaged_spools++;
				say(d, LOG_LEVEL_WARN, "delivery: shard '%s': local spools of the pending"
				    " batch cannot be used (%s); rebuilding it from the stream",
				    d->shard_id, ri.message);
			}
		}
		/* Not the lease's intent: committed already, or never landed. */
		esn_to_lease(&row->last, &row_last);
		if (lease_esn_cmp(&row_last, &g->checkpoint) <= 0 &&
		    row->state != JOURNAL_STATE_OPEN)
			err = journal_mark_committed(d->journal, row->id, &ri);
		else
			err = journal_forget(d->journal, row->id, &ri);
		if (err)
			d->st.journal_errors++;
		remove_row_spools(row);
	}
	journal_batches_free(rows, n);
	if (has_intent && !adopted) {
		d->rebuilding = true;
		d->rebuild_end = end;
		d->st.rebuilding = true;
		d->st.rebuilds++;
	} else if (!adopted && d->have_recorded) {
		delivery_state_done(&d->recorded);
		d->have_recorded = false;
	}
	return KL_OK;
}

static char *dup_or_null(const char *s, bool *oom)
{
	char *r;

	if (!s)
		return NULL;
	r = strdup(s);
	if (!r)
		*oom = true;
	return r;
}

enum kl_err delivery_new(const struct delivery_opts *opts, struct delivery **ret,
			 struct kl_errinfo *info)
{
	struct delivery *d;
	bool oom = false;
	enum kl_err err;

	if (!opts || !opts->grant || !opts->grant->key || !opts->coord || !opts->spool_dir ||
	    !opts->data_tmpl || !opts->error_tmpl || !opts->uploader.ops ||
	    !opts->uploader.ops->upload || !opts->uploader.ops->remove)
		return kl_errinfo_set(info, KL_EINVAL, "delivery: missing option");
	if (opts->hook.ops && (!opts->hook.ops->add || !opts->hook.ops->full ||
			       !opts->hook.ops->apply || !opts->hook.ops->reset))
		return kl_errinfo_set(info, KL_EINVAL, "delivery: incomplete hook");
	if (opts->max_partitions > DELIVERY_MAX_PARTITIONS)
		return kl_errinfo_set(info, KL_EINVAL, "delivery: max_partitions %u is above %u",
				      opts->max_partitions, DELIVERY_MAX_PARTITIONS);
	if (keytmpl_partition_count(opts->data_tmpl) > KEYTMPL_TEXT_MAX / 4)
		return kl_errinfo_set(info, KL_EINVAL, "delivery: too many partition keys");
	if (opts->spool.delim && opts->spool.delim_len > SPOOL_DELIM_MAX)
		return kl_errinfo_set(info, KL_EINVAL, "delivery: delimiter too long");
	err = keytmpl_check_value(opts->shard_id ? opts->shard_id : opts->grant->key, info);
	if (err)
		return err;
	if (!spool_codec_available(opts->spool.codec))
		return kl_errinfo_set(info, KL_ECONFIG, "delivery: codec %s is not built in",
				      spool_codec_name(opts->spool.codec));

	d = calloc(1, sizeof(*d));
	if (!d)
		return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
	d->lease_key = dup_or_null(opts->grant->key, &oom);
	d->token = opts->grant->token;
	d->shard_id = dup_or_null(opts->shard_id ? opts->shard_id : opts->grant->key, &oom);
	d->spool_dir = dup_or_null(opts->spool_dir, &oom);
	d->coord = opts->coord;
	d->journal = opts->journal;
	d->data_tmpl = opts->data_tmpl;
	d->error_tmpl = opts->error_tmpl;
	d->error_by_type = keytmpl_has_error_type(opts->error_tmpl);
	d->n_names = keytmpl_partition_count(opts->data_tmpl);
	d->spool = opts->spool;
	if (opts->spool.delim) {
		memcpy(d->delim, opts->spool.delim, opts->spool.delim_len);
		d->delim_len = opts->spool.delim_len;
		d->spool.delim = d->delim;
	} else {
		d->delim[0] = '\n';
		d->delim_len = 1;
	}
	d->err_spool = d->spool;
	d->err_spool.delim = "\n";
	d->err_spool.delim_len = 1;
	d->content_type = dup_or_null(opts->content_type ? opts->content_type
							  : spool_content_type(&opts->spool), &oom);
	d->ext = spool_codec_ext(opts->spool.codec);
	d->encoding = spool_codec_encoding(opts->spool.codec);
	d->up = opts->uploader;
	if (opts->clock.mono_ms)
		d->clock = opts->clock;
	else
		lease_clock_real(&d->clock);
	d->buffer_bytes = opts->buffer_bytes ? opts->buffer_bytes : DELIVERY_DEFAULT_BUFFER_BYTES;
	d->buffer_records = opts->buffer_records;
	d->buffer_ms = opts->buffer_ms > 0 ? opts->buffer_ms : DELIVERY_DEFAULT_BUFFER_MS;
	d->max_partitions = opts->max_partitions ? opts->max_partitions
						  : DELIVERY_DEFAULT_MAX_PARTITIONS;
	d->retry_base_ms = opts->retry_base_ms > 0 ? opts->retry_base_ms
						    : DELIVERY_DEFAULT_RETRY_BASE_MS;
	d->retry_max_ms = opts->retry_max_ms > 0 ? opts->retry_max_ms
						  : DELIVERY_DEFAULT_RETRY_MAX_MS;
	if (d->retry_max_ms < d->retry_base_ms)
		d->retry_max_ms = d->retry_base_ms;
	if (opts->seed)
		kl_rng_seed_value(&d->rng, opts->seed);
	else
		kl_rng_seed(&d->rng);
	d->report = opts->report;
	d->report_ctx = opts->report_ctx;
	d->hook = opts->hook;
	buf_init(&d->scratch, SCRATCH_CAP);
	buf_init(&d->b.state, DELIVERY_STATE_MAX + 64);
	d->checkpoint = opts->grant->checkpoint;
	d->st.checkpoint = d->checkpoint;
	if (oom) {
		delivery_free(d);
		return kl_errinfo_set(info, KL_ENOMEM, "delivery: out of memory");
	}
	make_shard_name(d->shard_id, d->shard_name, sizeof(d->shard_name));
	err = recover(d, opts->grant, info);
	if (err) {
		delivery_free(d);
		return err;
	}
	*ret = d;
	return KL_OK;
}

void delivery_free(struct delivery *d)
{
	if (!d)
		return;
	batch_reset(d, d->b.journal_id == 0);
	buf_done(&d->b.state);
	buf_done(&d->scratch);
	delivery_state_done(&d->recorded);
	free(d->lease_key);
	free(d->shard_id);
	free(d->spool_dir);
	free(d->content_type);
	free(d);
}
