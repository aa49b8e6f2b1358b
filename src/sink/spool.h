/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool.h: the local spool file of one batch (or one partition of a
 * batch): records are appended with a delimiter, compressed on the fly
 * (none / gzip / zstd) and written to "<dir>/<name><ext>.part"; sealing
 * flushes, fsyncs, renames the file to "<dir>/<name><ext>" and fsyncs the
 * directory, then hands back the batch's metadata (sizes, record count,
 * first/last ESN, first arrival time, SHA-256 of the file).
 *
 * Invariants: memory is two fixed buffers plus the compressor's state,
 * whatever the object size; a record is either wholly accepted (KL_OK) or
 * not at all, except the documented large-record case; the SHA-256 covers
 * exactly the bytes that reached the file, in order; only a sealed file
 * has the final name, so after a crash every "*.part" file is garbage.
 *
 * A struct spool has one owner (one thread at a time). The free-standing
 * helpers are thread-safe.
 */
#ifndef KL_SPOOL_H
#define KL_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esn.h"
#include "kl_err.h"

enum spool_codec {
	SPOOL_CODEC_NONE = 0,
	SPOOL_CODEC_GZIP,      /* a real gzip stream (RFC 1952), zlib */
	SPOOL_CODEC_ZSTD,      /* a zstd frame with content checksum, libzstd */
};

#define SPOOL_DELIM_MAX 16                  /* longest record delimiter */
#define SPOOL_DEFAULT_BUFFER ((size_t)128 << 10)
#define SPOOL_MIN_BUFFER ((size_t)4 << 10)
#define SPOOL_MAX_BUFFER ((size_t)16 << 20)
#define SPOOL_NAME_MAX 200                  /* longest file name given to spool_new */
#define SPOOL_SHA256_HEX 65                 /* 64 hex digits + NUL */
#define SPOOL_PART_SUFFIX ".part"

/*
 * Options; a zeroed struct means: no compression, newline after every
 * record, 128 KiB buffers.
 */
struct spool_opts {
	enum spool_codec codec;
	int level;             /* 0 = codec default (gzip 6, zstd 3); gzip 1..9,
				  zstd ZSTD_minCLevel()..ZSTD_maxCLevel() */
	int window_log;        /* zstd: 0 = the level's default, else 10..27
				  (the context is ~2.5 windows of memory) */
	const char *delim;     /* written after every record; NULL = "\n" */
	size_t delim_len;      /* used when delim != NULL; 0 = no delimiter */
	size_t buffer_bytes;   /* size of each internal buffer (input and
				  compressed output); 0 = SPOOL_DEFAULT_BUFFER */
};

/* What a sealed spool holds. Plain data. */
struct spool_meta {
	enum spool_codec codec;
	uint64_t records;             /* spool_append() calls accepted */
	uint64_t raw_bytes;           /* uncompressed bytes, delimiters included */
	uint64_t file_bytes;          /* size of the file (compressed bytes) */
	struct esn first;             /* ESN of the first record */
	struct esn last;              /* ESN of the last record */
	int64_t first_arrival_ms;     /* approximate arrival time of the first record */
	char sha256[SPOOL_SHA256_HEX];/* lowercase hex SHA-256 of the file; "" until sealed */
};

struct spool;

/* ------------------------------------------------------------ helpers */

/* File extension for codec: "", ".gz", ".zst". Static string. */
const char *spool_codec_ext(enum spool_codec codec);
/* Content-Encoding header value: NULL (send none), "gzip", "zstd". */
const char *spool_codec_encoding(enum spool_codec codec);
/* Short name: "none", "gzip", "zstd". */
const char *spool_codec_name(enum spool_codec codec);
/*
 * Parses a codec name from the configuration: "none" (or "uncompressed"),
 * "gzip", "zstd"; case-insensitive. KL_ECONFIG for an unknown name or
 * zstd when this build has no zstd (info says which).
 */
enum kl_err spool_codec_parse(const char *name, enum spool_codec *ret_codec,
			      struct kl_errinfo *info);
/* False for SPOOL_CODEC_ZSTD in a build without libzstd. */
bool spool_codec_available(enum spool_codec codec);
/*
 * Content-Type for objects written with opts (NULL = defaults):
 * "application/x-ndjson" with the default newline delimiter, else
 * "application/octet-stream". Static string; the config may override it.
 */
const char *spool_content_type(const struct spool_opts *opts);

/* ------------------------------------------------------------ writing */

/*
 * Creates the spool file "<dir>/<name><ext>.part" (truncating a stale one
 * left by a crash). name is a plain file name chosen by the caller (no '/',
 * not starting with '.', at most SPOOL_NAME_MAX bytes); the extension of
 * the codec is appended. opts NULL = defaults; it is copied.
 * Returns KL_OK and *ret_sp (free with spool_free()), or KL_EINVAL (bad
 * name or options), KL_ECONFIG (zstd not built), KL_ENOSPC, KL_EIO,
 * KL_ENOMEM; info says why.
 */
enum kl_err spool_new(const char *dir, const char *name, const struct spool_opts *opts,
		      struct spool **ret_sp, struct kl_errinfo *info);

/*
 * Appends one record (len bytes, may be 0) followed by the delimiter.
 * esn is the record's ESN (copied); it must not be lower than the previous
 * record's (equal is fine: one input record may give several outputs).
 * arrival_ms is its approximate arrival time; the first record's is kept.
 * Most calls only copy into the input buffer; a full buffer is compressed
 * and written in one go.
 *
 * Returns KL_OK when the record is in the spool. On KL_ENOSPC / KL_EIO
 * the record was NOT accepted and the spool is unchanged apart from
 * progress on earlier data: retry the same call later, or spool_free() it
 * and rebuild the batch. Exception: a record longer than the input buffer
 * is streamed straight into the compressor; if the disk fills in the
 * middle of it the spool is marked failed (every later call returns
 * KL_ESTATE) and must be freed and rebuilt. KL_EINVAL for an ESN that goes
 * backwards or an invalid ESN, KL_ESTATE after seal or failure.
 */
enum kl_err spool_append(struct spool *sp, const void *data, size_t len,
			 const struct esn *esn, int64_t arrival_ms,
			 struct kl_errinfo *info);

/* Progress of an open spool, for the batch's size/count/age limits. */
uint64_t spool_records(const struct spool *sp);
uint64_t spool_raw_bytes(const struct spool *sp);
/* Compressed bytes so far, including those still in the output buffer
 * (the compressor may hold up to a block more). */
uint64_t spool_file_bytes(const struct spool *sp);

/*
 * Finishes the compressed stream, writes everything, fsyncs the file,
 * renames it to its final name and fsyncs the directory. The buffers and
 * compressor are released; the struct keeps only the metadata and path.
 * Returns KL_OK and *ret_meta (may be NULL). KL_ESTATE for an empty spool
 * (nothing to upload: free it) or one already sealed or failed.
 * KL_ENOSPC / KL_EIO while writing the tail: retry spool_seal() later
 * (nothing is lost). A failed fsync marks the spool failed (the kernel
 * may have dropped the dirty pages, so the file cannot be trusted).
 */
enum kl_err spool_seal(struct spool *sp, struct spool_meta *ret_meta,
		       struct kl_errinfo *info);

/* Full path of the file: the final name (the ".part" name until sealed is
 * not exposed). Valid until spool_free(). */
const char *spool_path(const struct spool *sp);

/*
 * Frees sp. An unsealed spool is discarded: its ".part" file is closed and
 * unlinked. A sealed spool's file stays. NULL-safe.
 */
void spool_free(struct spool *sp);

/* ------------------------------------------------------------ after a restart */

/*
 * Checks that the sealed spool file at path is intact: its size is
 * expected_bytes and its SHA-256 (hex, as in struct spool_meta) matches.
 * Reads the file once with a fixed buffer. Returns KL_OK, KL_ENOTFOUND
 * (no such file), KL_ECONFLICT (size or checksum differ: truncated or
 * damaged; info says which), KL_EIO. Thread-safe.
 */
enum kl_err spool_verify(const char *path, uint64_t expected_bytes,
			 const char *expected_sha256, struct kl_errinfo *info);

/* Unlinks a spool file; a missing file is success. KL_EIO otherwise. */
enum kl_err spool_remove(const char *path, struct kl_errinfo *info);

/*
 * Removes every "*.part" file in dir (unsealed spools of a previous run;
 * call at start-up before any spool is created). Returns KL_OK and the
 * number removed in *ret_removed (may be NULL), or KL_EIO.
 */
enum kl_err spool_sweep(const char *dir, size_t *ret_removed, struct kl_errinfo *info);

#endif
