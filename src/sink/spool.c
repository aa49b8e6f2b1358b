/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool.c: the streaming spool writer. Records are copied into a fixed
 * input buffer; when it is full the whole buffer goes through the
 * compressor in one call, and the compressed output buffer is written
 * with one write(2) when it is full. So a record costs a memcpy, not a
 * syscall or an allocation.
 *
 * Retry invariant: in[in_off..in_len) is accepted input the compressor has
 * not consumed yet and out[out_off..out_len) is compressed output not yet
 * on disk. A failed write leaves both exact, so the next call resumes
 * where the last one stopped and the file never has a gap or a duplicate.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "spool.h"
#include "util.h"

enum spool_state {
	SPOOL_OPEN,        /* accepting records */
	SPOOL_FINISHING,   /* seal started (stream end requested); seal may be retried */
	SPOOL_SYNCED,      /* data fsynced; rename / directory fsync still to do */
	SPOOL_SEALED,
	SPOOL_FAILED,      /* unusable: free and rebuild */
};

struct spool {
	enum spool_state state;
	enum spool_codec codec;
	int level;
	int window_log;
	char delim[SPOOL_DELIM_MAX];
	size_t delim_len;

	int fd;
	char *dir;
	char *path;        /* final name */
	char *part_path;   /* name while open */

	uint8_t *in;       /* accepted, not yet compressed input */
	size_t in_off, in_len, buf_size;
	uint8_t *out;      /* compressed, not yet written (unused for NONE) */
	size_t out_off, out_len;

	z_stream zs;
	bool zs_ready;
#ifdef HAVE_ZSTD
	ZSTD_CCtx *zc;
#endif
	EVP_MD_CTX *sha;

	bool ended;        /* the compressed stream is complete (seal) */
	bool renamed;      /* the file has its final name (seal) */
	uint64_t written;  /* bytes that reached the file */
	struct spool_meta meta;
	char failure[512]; /* why the spool failed, for later KL_ESTATE messages */
};

/* ---------------------------------------------------------------- helpers */

const char *spool_codec_ext(enum spool_codec codec)
{
	switch (codec) {
	case SPOOL_CODEC_NONE: return "";
	case SPOOL_CODEC_GZIP: return ".gz";
	case SPOOL_CODEC_ZSTD: return ".zst";
	}
	return "";
}

const char *spool_codec_encoding(enum spool_codec codec)
{
	switch (codec) {
	case SPOOL_CODEC_NONE: return NULL;
	case SPOOL_CODEC_GZIP: return "gzip";
	case SPOOL_CODEC_ZSTD: return "zstd";
	}
	return NULL;
}

const char *spool_codec_name(enum spool_codec codec)
{
	switch (codec) {
	case SPOOL_CODEC_NONE: return "none";
	case SPOOL_CODEC_GZIP: return "gzip";
	case SPOOL_CODEC_ZSTD: return "zstd";
	}
	return "unknown";
}

bool spool_codec_available(enum spool_codec codec)
{
#ifdef HAVE_ZSTD
	return codec == SPOOL_CODEC_NONE || codec == SPOOL_CODEC_GZIP ||
	       codec == SPOOL_CODEC_ZSTD;
#else
	return codec == SPOOL_CODEC_NONE || codec == SPOOL_CODEC_GZIP;
#endif
}

enum kl_err spool_codec_parse(const char *name, enum spool_codec *ret_codec,
			      struct kl_errinfo *info)
{
	enum spool_codec codec;

	if (!name)
		return kl_errinfo_set(info, KL_ECONFIG, "spool: no compression name");
	if (strcasecmp(name, "none") == 0 || strcasecmp(name, "uncompressed") == 0)
		codec = SPOOL_CODEC_NONE;
	else if (strcasecmp(name, "gzip") == 0)
		codec = SPOOL_CODEC_GZIP;
	else if (strcasecmp(name, "zstd") == 0)
		codec = SPOOL_CODEC_ZSTD;
	else
		return kl_errinfo_set(info, KL_ECONFIG,
				      "spool: unknown compression '%.64s' (none, gzip, zstd)", name);
	if (!spool_codec_available(codec))
		return kl_errinfo_set(info, KL_ECONFIG,
				      "spool: this kinlake was built without zstd support");
	*ret_codec = codec;
	return KL_OK;
}

const char *spool_content_type(const struct spool_opts *opts)
{
	if (!opts || !opts->delim || (opts->delim_len == 1 && opts->delim[0] == '\n'))
		return "application/x-ndjson";
	return "application/octet-stream";
}

static char *path_join(const char *dir, const char *name, const char *ext, const char *suffix)
{
	size_t n = strlen(dir) + 1 + strlen(name) + strlen(ext) + strlen(suffix) + 1;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s%s%s", dir, name, ext, suffix);
	return p;
}

/* Maps a write/fsync/open errno to the project's error and fills info. */
static enum kl_err sys_error(struct kl_errinfo *info, int err, const char *what,
			     const char *path, const char *advice)
{
	enum kl_err code = KL_EIO;

	if (err == ENOSPC || err == EDQUOT || err == EFBIG)
		code = KL_ENOSPC;
	else if (err == ENOMEM)
		code = KL_ENOMEM;
	kl_errinfo_set(info, code, "spool: %s '%s': %s%s", what, path, strerror(err),
		       advice ? advice : "");
	if (info)
		info->sys_errno = err;
	return code;
}

static enum kl_err fsync_dir(const char *dir, struct kl_errinfo *info)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int err;

	if (fd < 0)
		return sys_error(info, errno, "cannot open directory", dir, NULL);
	if (fsync(fd) != 0 && errno != EINVAL) {
		err = errno;
		close(fd);
		return sys_error(info, err, "cannot fsync directory", dir, NULL);
	}
	close(fd);
	return KL_OK;
}

static bool name_ok(const char *name)
{
	size_t len;

	if (!name)
		return false;
	len = strlen(name);
	if (len == 0 || len > SPOOL_NAME_MAX || name[0] == '.')
		return false;
	for (const char *p = name; *p; p++)
		if (*p == '/' || (unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* ---------------------------------------------------------------- writing */

static const char retry_advice[] =
	"; nothing accepted was lost: retry later or discard the spool";

/*
 * Writes n bytes at p, hashing what reached the file. On failure
 * *ret_done says how many bytes were written before it.
 */
static enum kl_err write_hashed(struct spool *sp, const uint8_t *p, size_t n,
				struct kl_errinfo *info, size_t *ret_done)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = write(sp->fd, p + done, n - done);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			*ret_done = done;
			return sys_error(info, errno, "cannot write", sp->part_path, retry_advice);
		}
		if (w == 0) {
			*ret_done = done;
			return sys_error(info, ENOSPC, "cannot write", sp->part_path, retry_advice);
		}
		if (EVP_DigestUpdate(sp->sha, p + done, (size_t)w) != 1) {
			/* The bytes are on disk but not hashed: no way to resume. */
			*ret_done = done + (size_t)w;
			sp->written += (size_t)w;
			return kl_errinfo_set(info, KL_ENOMEM, "spool: SHA-256 update failed");
		}
		done += (size_t)w;
		sp->written += (size_t)w;
	}
	*ret_done = done;
	return KL_OK;
}

/* Writes out[out_off..out_len); on success the output buffer is empty. */
static enum kl_err drain_out(struct spool *sp, struct kl_errinfo *info)
{
	size_t done = 0;
	enum kl_err err;

	err = write_hashed(sp, sp->out + sp->out_off, sp->out_len - sp->out_off, info, &done);
	sp->out_off += done;
	if (err)
		return err;
	sp->out_off = sp->out_len = 0;
	return KL_OK;
}

static void fail(struct spool *sp, const struct kl_errinfo *info, const char *why)
{
	sp->state = SPOOL_FAILED;
	snprintf(sp->failure, sizeof(sp->failure), "%s%s%s", why,
		 info && info->message[0] ? ": " : "", info ? info->message : "");
}

/*
 * Runs src[0..len) through the compressor (finish: also ends the stream),
 * writing full output buffers. *ret_used is how much of src was consumed,
 * also on failure, so that the caller can resume. For NONE the bytes are
 * written directly.
 */
static enum kl_err feed(struct spool *sp, const uint8_t *src, size_t len, bool finish,
			struct kl_errinfo *info, size_t *ret_used)
{
	enum kl_err err = KL_OK;

	*ret_used = 0;
	switch (sp->codec) {
	case SPOOL_CODEC_NONE:
		return write_hashed(sp, src, len, info, ret_used);
	case SPOOL_CODEC_GZIP: {
		size_t used = 0;

		for (;;) {
			/* avail_in is 32-bit: feed huge records in slices. */
			size_t slice = len - used > (1u << 30) ? 1u << 30 : len - used;
			bool last = used + slice == len;
			int zr;

			if (sp->out_len == sp->buf_size) {
				err = drain_out(sp, info);
				if (err)
					break;
			}
			sp->zs.next_in = (Bytef *)(uintptr_t)(src ? src + used : NULL);
			sp->zs.avail_in = (uInt)slice;
			sp->zs.next_out = sp->out + sp->out_len;
			sp->zs.avail_out = (uInt)(sp->buf_size - sp->out_len);
			zr = deflate(&sp->zs, finish && last ? Z_FINISH : Z_NO_FLUSH);
			used += slice - sp->zs.avail_in;
			sp->out_len = sp->buf_size - sp->zs.avail_out;
			if (zr == Z_STREAM_END)
				break;
			/* Z_BUF_ERROR is "no progress": fine only without input left. */
			if (zr != Z_OK && !(zr == Z_BUF_ERROR && used == len && !finish)) {
				err = kl_errinfo_set(info, KL_EIO, "spool: deflate failed (%d)", zr);
				break;
			}
			if (!finish && used == len)
				break;
		}
		sp->zs.next_in = NULL;
		sp->zs.avail_in = 0;
		*ret_used = used;
		return err;
	}
	case SPOOL_CODEC_ZSTD:
#ifdef HAVE_ZSTD
		for (;;) {
			ZSTD_inBuffer ib = { src, len, *ret_used };
			ZSTD_outBuffer ob;
			size_t zr;

			if (sp->out_len == sp->buf_size) {
				err = drain_out(sp, info);
				if (err)
					break;
			}
			ob.dst = sp->out;
			ob.size = sp->buf_size;
			ob.pos = sp->out_len;
			zr = ZSTD_compressStream2(sp->zc, &ob, &ib, finish ? ZSTD_e_end : ZSTD_e_continue);
			*ret_used = ib.pos;
			sp->out_len = ob.pos;
			if (ZSTD_isError(zr)) {
				err = kl_errinfo_set(info, KL_EIO, "spool: zstd failed: %s",
						     ZSTD_getErrorName(zr));
				break;
			}
			if (finish ? zr == 0 : ib.pos == ib.size)
				break;
		}
		return err;
#else
		return kl_errinfo_set(info, KL_ECONFIG, "spool: zstd support not built");
#endif
	}
	return kl_errinfo_set(info, KL_EINVAL, "spool: bad codec");
}

/* Compresses and writes in[in_off..in_len); on success the input buffer is empty. */
static enum kl_err flush_in(struct spool *sp, struct kl_errinfo *info)
{
	size_t used = 0;
	enum kl_err err;

	if (sp->in_off == sp->in_len) {
		sp->in_off = sp->in_len = 0;
		return KL_OK;
	}
	err = feed(sp, sp->in + sp->in_off, sp->in_len - sp->in_off, false, info, &used);
	sp->in_off += used;
	if (err)
		return err;
	sp->in_off = sp->in_len = 0;
	return KL_OK;
}

static enum kl_err init_codec(struct spool *sp, struct kl_errinfo *info)
{
	switch (sp->codec) {
	case SPOOL_CODEC_NONE:
		return KL_OK;
	case SPOOL_CODEC_GZIP: {
		int level = sp->level ? sp->level : 6;

		if (level < 1 || level > 9)
			return kl_errinfo_set(info, KL_EINVAL, "spool: gzip level %d is not in 1..9",
					      sp->level);
		/* windowBits 15 + 16: a gzip header and trailer, not zlib's. */
		if (deflateInit2(&sp->zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			return kl_errinfo_set(info, KL_ENOMEM, "spool: deflateInit2 failed");
		sp->zs_ready = true;
		return KL_OK;
	}
	case SPOOL_CODEC_ZSTD:
#ifdef HAVE_ZSTD
	{
		int level = sp->level ? sp->level : ZSTD_CLEVEL_DEFAULT;

		if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
			return kl_errinfo_set(info, KL_EINVAL, "spool: zstd level %d is not in %d..%d",
					      sp->level, ZSTD_minCLevel(), ZSTD_maxCLevel());
		sp->zc = ZSTD_createCCtx();
		if (!sp->zc)
			return kl_errinfo_set(info, KL_ENOMEM, "spool: ZSTD_createCCtx failed");
		if (ZSTD_isError(ZSTD_CCtx_setParameter(sp->zc, ZSTD_c_compressionLevel, level)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(sp->zc, ZSTD_c_checksumFlag, 1)))
			return kl_errinfo_set(info, KL_EINVAL, "spool: cannot set zstd level %d", level);
		if (sp->window_log &&
		    ZSTD_isError(ZSTD_CCtx_setParameter(sp->zc, ZSTD_c_windowLog, sp->window_log)))
			return kl_errinfo_set(info, KL_EINVAL, "spool: zstd window log %d is out of range",
					      sp->window_log);
		return KL_OK;
	}
#else
		return kl_errinfo_set(info, KL_ECONFIG, "spool: this kinlake was built without zstd support");
#endif
	}
	return kl_errinfo_set(info, KL_EINVAL, "spool: unknown codec %d", (int)sp->codec);
}

/* Releases everything but the metadata and the paths. */
static void release_work(struct spool *sp)
{
	if (sp->zs_ready) {
		deflateEnd(&sp->zs);
		sp->zs_ready = false;
	}
#ifdef HAVE_ZSTD
	ZSTD_freeCCtx(sp->zc);
	sp->zc = NULL;
#endif
	EVP_MD_CTX_free(sp->sha);
	sp->sha = NULL;
	free(sp->in);
	free(sp->out);
	sp->in = sp->out = NULL;
	if (sp->fd >= 0) {
		close(sp->fd);
		sp->fd = -1;
	}
}

void spool_free(struct spool *sp)
{
	if (!sp)
		return;
	if (sp->fd >= 0 && sp->state != SPOOL_SEALED)
		unlink(sp->renamed ? sp->path : sp->part_path);
	release_work(sp);
	free(sp->dir);
	free(sp->path);
	free(sp->part_path);
	free(sp);
}

enum kl_err spool_new(const char *dir, const char *name, const struct spool_opts *opts,
		      struct spool **ret_sp, struct kl_errinfo *info)
{
	static const struct spool_opts defaults;
	struct spool *sp;
	enum kl_err err;

	if (!opts)
		opts = &defaults;
	if (!dir || !*dir)
		return kl_errinfo_set(info, KL_EINVAL, "spool: no directory");
	if (!name_ok(name))
		return kl_errinfo_set(info, KL_EINVAL,
				      "spool: bad file name '%.64s' (1..%d bytes, no '/', no leading '.')",
				      name ? name : "(null)", SPOOL_NAME_MAX);
	if (opts->delim && opts->delim_len > SPOOL_DELIM_MAX)
		return kl_errinfo_set(info, KL_EINVAL, "spool: delimiter longer than %d bytes",
				      SPOOL_DELIM_MAX);
	if (opts->buffer_bytes && (opts->buffer_bytes < SPOOL_MIN_BUFFER ||
				   opts->buffer_bytes > SPOOL_MAX_BUFFER))
		return kl_errinfo_set(info, KL_EINVAL, "spool: buffer size %zu not in %zu..%zu",
				      opts->buffer_bytes, SPOOL_MIN_BUFFER, SPOOL_MAX_BUFFER);
	if (!spool_codec_available(opts->codec))
		return kl_errinfo_set(info, KL_ECONFIG, "spool: codec %s is not built",
				      spool_codec_name(opts->codec));

	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return kl_errinfo_set(info, KL_ENOMEM, "spool: out of memory");
	sp->fd = -1;
	sp->codec = opts->codec;
	sp->level = opts->level;
	sp->window_log = opts->window_log;
	sp->meta.codec = opts->codec;
	if (opts->delim) {
		memcpy(sp->delim, opts->delim, opts->delim_len);
		sp->delim_len = opts->delim_len;
	} else {
		sp->delim[0] = '\n';
		sp->delim_len = 1;
	}
	sp->buf_size = opts->buffer_bytes ? opts->buffer_bytes : SPOOL_DEFAULT_BUFFER;
	sp->dir = strdup(dir);
	sp->path = path_join(dir, name, spool_codec_ext(sp->codec), "");
	sp->part_path = path_join(dir, name, spool_codec_ext(sp->codec), SPOOL_PART_SUFFIX);
	sp->in = malloc(sp->buf_size);
	if (sp->codec != SPOOL_CODEC_NONE)
		sp->out = malloc(sp->buf_size);
	sp->sha = EVP_MD_CTX_new();
	if (!sp->dir || !sp->path || !sp->part_path || !sp->in || !sp->sha ||
	    (sp->codec != SPOOL_CODEC_NONE && !sp->out)) {
		spool_free(sp);
		return kl_errinfo_set(info, KL_ENOMEM, "spool: out of memory");
	}
	if (EVP_DigestInit_ex(sp->sha, EVP_sha256(), NULL) != 1) {
		spool_free(sp);
		return kl_errinfo_set(info, KL_ENOMEM, "spool: cannot set up SHA-256");
	}
	err = init_codec(sp, info);
	if (err) {
		spool_free(sp);
		return err;
	}
	/* O_TRUNC: a ".part" file of the same name is a leftover of a crash. */
	sp->fd = open(sp->part_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (sp->fd < 0) {
		err = sys_error(info, errno, "cannot create", sp->part_path, NULL);
		spool_free(sp);
		return err;
	}
	*ret_sp = sp;
	return KL_OK;
}

static enum kl_err check_state(const struct spool *sp, struct kl_errinfo *info)
{
	switch (sp->state) {
	case SPOOL_OPEN:
		return KL_OK;
	case SPOOL_FINISHING:
	case SPOOL_SYNCED:
		return kl_errinfo_set(info, KL_ESTATE, "spool: '%s' is being sealed", sp->path);
	case SPOOL_SEALED:
		return kl_errinfo_set(info, KL_ESTATE, "spool: '%s' is sealed", sp->path);
	case SPOOL_FAILED:
		return kl_errinfo_set(info, KL_ESTATE, "spool: '%s' failed earlier (%s); discard it",
				      sp->path, sp->failure);
	}
	return KL_ESTATE;
}

static void account(struct spool *sp, size_t n, const struct esn *esn, int64_t arrival_ms)
{
	if (sp->meta.records == 0) {
		sp->meta.first = *esn;
		sp->meta.first_arrival_ms = arrival_ms;
	}
	sp->meta.last = *esn;
	sp->meta.records++;
	sp->meta.raw_bytes += n;
}

enum kl_err spool_append(struct spool *sp, const void *data, size_t len,
			 const struct esn *esn, int64_t arrival_ms,
			 struct kl_errinfo *info)
{
	size_t need, used;
	enum kl_err err;

	err = check_state(sp, info);
	if (err)
		return err;
	/* esn_set() validated it; a cheap check here (this runs per record). */
	if (!esn || esn->seq[0] < '0' || esn->seq[0] > '9')
		return kl_errinfo_set(info, KL_EINVAL, "spool: record without a valid ESN");
	if (sp->meta.records && esn_cmp(esn, &sp->meta.last) < 0)
		return kl_errinfo_set(info, KL_EINVAL,
				      "spool: ESN %s/%llu is lower than the previous %s/%llu",
				      esn->seq, (unsigned long long)esn->sub, sp->meta.last.seq,
				      (unsigned long long)sp->meta.last.sub);
	if (len > SIZE_MAX - sp->delim_len)
		return kl_errinfo_set(info, KL_EINVAL, "spool: record too large");
	need = len + sp->delim_len;

	/* Fast path: room in the input buffer, and no earlier drain pending. */
	if (sp->in_off == 0 && need <= sp->buf_size - sp->in_len) {
		if (len)
			memcpy(sp->in + sp->in_len, data, len);
		memcpy(sp->in + sp->in_len + len, sp->delim, sp->delim_len);
		sp->in_len += need;
		account(sp, need, esn, arrival_ms);
		return KL_OK;
	}
	err = flush_in(sp, info);
	if (err)
		return err;            /* record not accepted; state resumable */
	if (need <= sp->buf_size) {
		memcpy(sp->in, data, len);
		memcpy(sp->in + len, sp->delim, sp->delim_len);
		sp->in_len = need;
		account(sp, need, esn, arrival_ms);
		return KL_OK;
	}
	/* Larger than the buffer: stream it; a failure half-way is final. */
	err = feed(sp, data, len, false, info, &used);
	if (!err && sp->delim_len)
		err = feed(sp, (const uint8_t *)sp->delim, sp->delim_len, false, info, &used);
	if (err) {
		fail(sp, info, "write failed inside a record larger than the buffer");
		return err;
	}
	account(sp, need, esn, arrival_ms);
	return KL_OK;
}

uint64_t spool_records(const struct spool *sp)
{
	return sp->meta.records;
}

uint64_t spool_raw_bytes(const struct spool *sp)
{
	return sp->meta.raw_bytes;
}

uint64_t spool_file_bytes(const struct spool *sp)
{
	return sp->written + (sp->out_len - sp->out_off) +
	       (sp->codec == SPOOL_CODEC_NONE ? sp->in_len - sp->in_off : 0);
}

const char *spool_path(const struct spool *sp)
{
	return sp->path;
}

enum kl_err spool_seal(struct spool *sp, struct spool_meta *ret_meta,
		       struct kl_errinfo *info)
{
	enum kl_err err;
	size_t used;

	if (sp->state == SPOOL_OPEN) {
		if (sp->meta.records == 0)
			return kl_errinfo_set(info, KL_ESTATE,
					      "spool: '%s' has no records, nothing to seal", sp->path);
		err = flush_in(sp, info);
		if (err)
			return err;
		sp->state = SPOOL_FINISHING;
	} else if (sp->state != SPOOL_FINISHING && sp->state != SPOOL_SYNCED) {
		return check_state(sp, info);
	}
	if (sp->state == SPOOL_FINISHING) {
		/* Each step can be repeated after a failed write. */
		if (sp->codec != SPOOL_CODEC_NONE && !sp->ended) {
			err = feed(sp, NULL, 0, true, info, &used);
			if (err)
				return err;
			sp->ended = true;
		}
		if (sp->codec != SPOOL_CODEC_NONE) {
			err = drain_out(sp, info);
			if (err)
				return err;
		}
		if (fsync(sp->fd) != 0) {
			err = sys_error(info, errno, "cannot fsync", sp->part_path, NULL);
			fail(sp, info, "fsync failed");
			return err;
		}
		sp->state = SPOOL_SYNCED;
	}
	if (!sp->renamed) {
		if (rename(sp->part_path, sp->path) != 0)
			return sys_error(info, errno, "cannot rename to", sp->path, NULL);
		sp->renamed = true;
	}
	err = fsync_dir(sp->dir, info);
	if (err)
		return err;            /* retry: only the directory fsync is repeated */
	{
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int md_len = 0;

		if (EVP_DigestFinal_ex(sp->sha, md, &md_len) != 1 || md_len != 32) {
			fail(sp, NULL, "SHA-256 finalisation failed");
			return kl_errinfo_set(info, KL_ENOMEM, "spool: SHA-256 finalisation failed");
		}
		kl_hex(md, md_len, sp->meta.sha256);
	}
	sp->meta.file_bytes = sp->written;
	sp->state = SPOOL_SEALED;
	release_work(sp);
	if (ret_meta)
		*ret_meta = sp->meta;
	return KL_OK;
}

/* ---------------------------------------------------------------- restart */

enum kl_err spool_verify(const char *path, uint64_t expected_bytes,
			 const char *expected_sha256, struct kl_errinfo *info)
{
	enum { CHUNK = 256 << 10 };
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char hex[SPOOL_SHA256_HEX];
	struct stat st;
	EVP_MD_CTX *sha = NULL;
	uint8_t *chunk = NULL;
	uint64_t total = 0;
	enum kl_err err = KL_OK;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return kl_errinfo_set(info, KL_ENOTFOUND, "spool: '%s' does not exist", path);
		return sys_error(info, errno, "cannot open", path, NULL);
	}
	if (fstat(fd, &st) != 0) {
		err = sys_error(info, errno, "cannot stat", path, NULL);
		goto out;
	}
	if ((uint64_t)st.st_size != expected_bytes) {
		err = kl_errinfo_set(info, KL_ECONFLICT,
				     "spool: '%s' has %llu bytes, expected %llu (%s)", path,
				     (unsigned long long)st.st_size,
				     (unsigned long long)expected_bytes,
				     (uint64_t)st.st_size < expected_bytes ? "truncated" : "grown");
		goto out;
	}
	sha = EVP_MD_CTX_new();
	chunk = malloc(CHUNK);
	if (!sha || !chunk || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) {
		err = kl_errinfo_set(info, KL_ENOMEM, "spool: out of memory");
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, chunk, CHUNK);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			err = sys_error(info, errno, "cannot read", path, NULL);
			goto out;
		}
		if (r == 0)
			break;
		total += (uint64_t)r;
		if (EVP_DigestUpdate(sha, chunk, (size_t)r) != 1) {
			err = kl_errinfo_set(info, KL_ENOMEM, "spool: SHA-256 update failed");
			goto out;
		}
	}
	if (total != expected_bytes) {
		err = kl_errinfo_set(info, KL_ECONFLICT, "spool: '%s' changed while it was read", path);
		goto out;
	}
	if (EVP_DigestFinal_ex(sha, md, &md_len) != 1 || md_len != 32) {
		err = kl_errinfo_set(info, KL_ENOMEM, "spool: SHA-256 finalisation failed");
		goto out;
	}
	kl_hex(md, md_len, hex);
	if (!expected_sha256 || strcasecmp(hex, expected_sha256) != 0)
		err = kl_errinfo_set(info, KL_ECONFLICT,
				     "spool: '%s' is damaged: SHA-256 %.16s... differs from"
				     " the recorded %.16s...",
				     path, hex, expected_sha256 ? expected_sha256 : "(none)");
out:
	free(chunk);
	EVP_MD_CTX_free(sha);
	close(fd);
	return err;
}

enum kl_err spool_remove(const char *path, struct kl_errinfo *info)
{
	if (unlink(path) != 0 && errno != ENOENT)
		return sys_error(info, errno, "cannot remove", path, NULL);
	return KL_OK;
}

enum kl_err spool_sweep(const char *dir, size_t *ret_removed, struct kl_errinfo *info)
{
	const size_t suffix_len = sizeof(SPOOL_PART_SUFFIX) - 1;
	struct dirent *de;
	size_t removed = 0;
	DIR *d;
	int dfd;

	d = opendir(dir);
	if (!d)
		return sys_error(info, errno, "cannot open directory", dir, NULL);
	dfd = dirfd(d);
	while ((errno = 0, de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		if (len <= suffix_len || de->d_name[0] == '.' ||
		    strcmp(de->d_name + len - suffix_len, SPOOL_PART_SUFFIX) != 0)
			continue;
		if (unlinkat(dfd, de->d_name, 0) != 0 && errno != ENOENT) {
			enum kl_err err = sys_error(info, errno, "cannot remove stale", de->d_name, NULL);

			closedir(d);
			return err;
		}
		removed++;
	}
	closedir(d);
	if (ret_removed)
		*ret_removed = removed;
	return KL_OK;
}
