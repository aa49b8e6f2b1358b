/* SPDX-License-Identifier: Apache-2.0 */
/*
 * s3.h: the S3 REST client kinlake needs to write objects exactly once:
 * PutObject (from memory or streamed from a file range), multipart upload,
 * HeadObject, GetObject, ListObjectsV2, and the bucket/object calls tests
 * and the demo use. Every request that carries a body carries Content-MD5.
 *
 * Invariants: a file body is never read into memory as a whole: it is read
 * once in fixed-size chunks to compute its digests, then streamed by the
 * HTTP layer from the same range. Keys are sent percent-encoded once per
 * path segment ('/' kept), exactly the form the SigV4 S3 canonical URI
 * wants. Every function takes the struct aws_client it runs on; a client
 * is used by one thread at a time, so N parallel part uploads need N
 * clients. Nothing here keeps state between calls, which is what makes
 * that possible: parts are recorded by the caller (struct s3_part slots).
 */
#ifndef KL_S3_H
#define KL_S3_H

#include <stddef.h>
#include <stdint.h>

#include "aws.h"
#include "buf.h"
#include "http.h"
#include "kl_err.h"

/* Longest ETag we keep (AWS's are 34 or ~40 characters with quotes). */
#define S3_ETAG_MAX 128
/* Base64 of an MD5 digest plus NUL. */
#define S3_MD5_B64_LEN 25
/* Longest key S3 accepts, in bytes of UTF-8. */
#define S3_MAX_KEY_LEN 1024
/* At most this many x-amz-meta-* headers per request (aws.c caps headers). */
#define S3_MAX_METADATA 16

#define S3_MIN_PART_SIZE ((uint64_t)5 << 20)
#define S3_MAX_PART_SIZE ((uint64_t)5 << 30)
#define S3_MAX_PARTS 10000
#define S3_MAX_OBJECT_SIZE ((uint64_t)5 << 40)
#define S3_DEFAULT_MULTIPART_THRESHOLD ((uint64_t)16 << 20)
#define S3_DEFAULT_PART_SIZE ((uint64_t)16 << 20)

/*
 * Options of a write. All strings borrowed for the call; NULL fields are
 * not sent. A NULL struct pointer means all defaults.
 */
struct s3_put_opts {
	const char *content_type;          /* e.g. "application/x-ndjson" */
	const char *content_encoding;      /* e.g. "gzip", "zstd" */
	const struct http_header *metadata;  /* user metadata: name without the
						"x-amz-meta-" prefix; ASCII */
	size_t n_metadata;                 /* <= S3_MAX_METADATA */
	const char *storage_class;         /* x-amz-storage-class (PutObject,
					      CreateMultipartUpload); NULL =
					      the bucket's default */
	/*
	 * File bodies: by default the one pass that computes Content-MD5 also
	 * computes SHA-256, and the request is signed over the body. Set this
	 * to send x-amz-content-sha256: UNSIGNED-PAYLOAD instead and skip the
	 * SHA-256 (saves CPU on HTTPS, where TLS already protects the bytes
	 * and the signed Content-MD5 still lets S3 reject corruption).
	 */
	int unsigned_payload;
};

/* Result of a write. Plain data, nothing to free. */
struct s3_put_result {
	char etag[S3_ETAG_MAX];            /* as S3 returned it, quotes kept;
					      "" when the response had none */
	char content_md5[S3_MD5_B64_LEN];  /* the Content-MD5 we sent; "" for a
					      completed multipart upload */
	unsigned n_parts;                  /* 0 for a single PutObject */
};

/* One uploaded part, as CompleteMultipartUpload needs it. Plain data. */
struct s3_part {
	int number;                        /* 1..S3_MAX_PARTS */
	char etag[S3_ETAG_MAX];            /* "" means "not uploaded" */
};

/* One user-metadata entry of a response. Owned by its container. */
struct s3_meta {
	char *name;                        /* lowercased, without "x-amz-meta-" */
	char *value;
};

/*
 * What HeadObject (or the headers of GetObject) say about an object.
 * Owns its strings; release with s3_object_info_done().
 */
struct s3_object_info {
	uint64_t size;                     /* Content-Length */
	char etag[S3_ETAG_MAX];            /* quotes kept */
	char *content_type;                /* NULL when absent */
	char *content_encoding;            /* NULL when absent */
	char *last_modified;               /* HTTP date as sent; NULL when absent */
	struct s3_meta *metadata;          /* n_metadata entries, or NULL */
	size_t n_metadata;
};

/* Frees what obj owns and zeroes it. NULL-safe; safe on a zeroed struct. */
void s3_object_info_done(struct s3_object_info *obj);

/* ListObjectsV2 parameters. All borrowed; NULL / 0 = not sent. */
struct s3_list_opts {
	const char *prefix;
	const char *delimiter;
	const char *continuation_token;    /* NextContinuationToken of the last page */
	const char *start_after;
	int max_keys;                      /* 0 = server default (1000) */
};

struct s3_list_entry {
	char *key;                         /* decoded, owned */
	uint64_t size;
	char etag[S3_ETAG_MAX];
	char last_modified[40];            /* ISO 8601 as sent */
};

/*
 * One page of ListObjectsV2. Owns everything it points to; release with
 * s3_list_result_done().
 */
struct s3_list_result {
	struct s3_list_entry *entries;
	size_t n_entries;
	char **common_prefixes;            /* with a delimiter; decoded */
	size_t n_common_prefixes;
	int is_truncated;
	char *next_continuation_token;     /* NULL unless is_truncated */
};

void s3_list_result_done(struct s3_list_result *res);

/*
 * All calls below: c is the caller's client (configured with service
 * "s3"), used by one thread at a time. bucket and key are borrowed UTF-8
 * strings; the key is 1..S3_MAX_KEY_LEN bytes. info (NULL allowed) gets
 * the details of a failure. ret_* are written only on KL_OK. Error
 * mapping is aws_classify()'s: NoSuchKey/NoSuchBucket/NoSuchUpload and a
 * body-less 404 give KL_ENOTFOUND, SlowDown KL_ETHROTTLED, and so on.
 * Thread-safe as long as each thread has its own client.
 */

/* PutObject with a body in memory (data borrowed; len may be 0). */
enum kl_err s3_put_object(struct aws_client *c, const char *bucket, const char *key,
			  const void *data, size_t len, const struct s3_put_opts *opts,
			  struct s3_put_result *ret_result, struct kl_errinfo *info);

/*
 * PutObject streaming len bytes of fd from offset (pread: the file offset
 * is untouched). Memory use is one read chunk, whatever len is. The range
 * is read once for Content-MD5 (and SHA-256, see s3_put_opts) and then
 * streamed again; if the file changes in between S3 rejects the body
 * (BadDigest), which is the point. len <= 5 GiB (S3's single-PUT limit).
 */
enum kl_err s3_put_object_file(struct aws_client *c, const char *bucket, const char *key,
			       int fd, uint64_t offset, uint64_t len,
			       const struct s3_put_opts *opts,
			       struct s3_put_result *ret_result, struct kl_errinfo *info);

/* Deletes an object. A missing key is success (S3 answers 204 either way). */
enum kl_err s3_delete_object(struct aws_client *c, const char *bucket, const char *key,
			     struct kl_errinfo *info);

/*
 * HeadObject. KL_ENOTFOUND when the key (or bucket) does not exist.
 * *ret_obj is the caller's; release it with s3_object_info_done().
 */
enum kl_err s3_head_object(struct aws_client *c, const char *bucket, const char *key,
			   struct s3_object_info *ret_obj, struct kl_errinfo *info);

/*
 * GetObject into memory. Objects larger than max_bytes fail with
 * KL_ENOMEM (the transfer itself is capped by the client's
 * http.max_response_bytes, so set that to bound transient memory). On
 * success *ret_data is a malloc'd, NUL-terminated copy of the body (the
 * NUL is not counted in *ret_len) the caller frees; ret_obj (NULL allowed)
 * gets the response headers as with s3_head_object().
 */
enum kl_err s3_get_object(struct aws_client *c, const char *bucket, const char *key,
			  size_t max_bytes, char **ret_data, size_t *ret_len,
			  struct s3_object_info *ret_obj, struct kl_errinfo *info);

/*
 * GetObject streamed into fd (written from its current offset; memory use
 * does not depend on the object size). When fd is a regular file the
 * written length is checked against Content-Length, and on any failure the
 * file is truncated back to where it started; for pipes and sockets the
 * bytes written before a failure are unspecified. ret_obj as above.
 */
enum kl_err s3_get_object_to_fd(struct aws_client *c, const char *bucket, const char *key,
				int fd, struct s3_object_info *ret_obj, struct kl_errinfo *info);

/* One page of ListObjectsV2. *ret_res is released with s3_list_result_done(). */
enum kl_err s3_list_objects_v2(struct aws_client *c, const char *bucket,
			       const struct s3_list_opts *opts, struct s3_list_result *ret_res,
			       struct kl_errinfo *info);

/*
 * CreateBucket (with a LocationConstraint outside us-east-1). KL_OK also
 * when the bucket exists and is ours (BucketAlreadyOwnedByYou);
 * KL_EEXISTS when it exists and is someone else's (BucketAlreadyExists,
 * which s3rver also answers for its own buckets).
 */
enum kl_err s3_create_bucket(struct aws_client *c, const char *bucket,
			     struct kl_errinfo *info);

/* ---------------------------------------------------------- multipart */

/*
 * CreateMultipartUpload. opts' content type, encoding and metadata apply
 * to the final object. On success *ret_upload_id is a malloc'd string the
 * caller frees.
 */
enum kl_err s3_create_multipart(struct aws_client *c, const char *bucket, const char *key,
				const struct s3_put_opts *opts, char **ret_upload_id,
				struct kl_errinfo *info);

/*
 * UploadPart number part_number (1..S3_MAX_PARTS) from len bytes of fd at
 * offset, with Content-MD5; only opts->unsigned_payload is used. On
 * success fills *ret_part (number and ETag), typically the caller's slot
 * parts[part_number - 1]: parallel uploaders each write their own slot,
 * so no lock is needed.
 */
enum kl_err s3_upload_part(struct aws_client *c, const char *bucket, const char *key,
			   const char *upload_id, int part_number, int fd, uint64_t offset,
			   uint64_t len, const struct s3_put_opts *opts,
			   struct s3_part *ret_part, struct kl_errinfo *info);

/*
 * CompleteMultipartUpload with parts (borrowed), which must have strictly
 * increasing numbers and a non-empty ETag each (checked before sending:
 * KL_EINVAL; naming a part that was never uploaded would also make s3rver
 * exit). A 200 response carrying an <Error> document is a failure; a
 * retryable one (InternalError, SlowDown) is retried a few times.
 */
enum kl_err s3_complete_multipart(struct aws_client *c, const char *bucket, const char *key,
				  const char *upload_id, const struct s3_part *parts,
				  size_t n_parts, struct s3_put_result *ret_result,
				  struct kl_errinfo *info);

/*
 * AbortMultipartUpload. KL_OK also when the upload is already gone
 * (NoSuchUpload) and when the server does not implement abort (s3rver
 * answers 405 MethodNotAllowed; its parts stay on its disk). Either way
 * the caller must treat the upload id as abandoned and never use it again.
 */
enum kl_err s3_abort_multipart(struct aws_client *c, const char *bucket, const char *key,
			       const char *upload_id, struct kl_errinfo *info);

/* ---------------------------------------------------------- convenience */

/* Most parts s3_upload_file() has in flight at once (s3_upload_opts.parallel). */
#define S3_MAX_PARALLEL 64

struct s3_upload_opts {
	struct s3_put_opts put;            /* type, encoding, metadata, signing */
	uint64_t multipart_threshold;      /* single PUT up to this; 0 = 16 MiB */
	uint64_t part_size;                /* >= 5 MiB; 0 = 16 MiB; grown when the
					      file would need > 10000 parts */
	/*
	 * Parts uploaded at once, 1..S3_MAX_PARALLEL; 0 or 1 = one after
	 * another on the caller's client. With parallel > 1 the call starts
	 * parallel - 1 threads (fewer when there are fewer parts), each with
	 * its own struct aws_client made from client_cfg and creds for the
	 * duration of the call; both are borrowed and required then.
	 */
	unsigned parallel;
	const struct aws_client_config *client_cfg;  /* service "s3" */
	struct creds_chain *creds;         /* shared; thread-safe */
};

/*
 * Uploads len bytes of fd from offset as bucket/key: one PutObject when
 * len <= threshold, else a multipart upload whose parts are streamed from
 * the file (memory use: one read chunk per part in flight plus the part
 * table, 10000 * sizeof(struct s3_part) at most). Parts go one after
 * another, or up to opts->parallel at a time, each from its own client,
 * finishing in any order; CompleteMultipartUpload lists them in order.
 * Create, complete and abort run on c in the calling thread. If any step
 * of a multipart upload fails for good, no new part is started, the parts
 * in flight are waited for, and the upload is aborted before returning
 * the first error (info: that error's details). opts NULL = defaults.
 * ret_result as for s3_put_object(). Thread-safe as long as c is the
 * calling thread's own and fd is not shared with a writer; the extra
 * clients never outlive the call. KL_EINVAL when parallel > 1 comes
 * without client_cfg/creds or above S3_MAX_PARALLEL.
 */
enum kl_err s3_upload_file(struct aws_client *c, const char *bucket, const char *key,
			   int fd, uint64_t offset, uint64_t len,
			   const struct s3_upload_opts *opts,
			   struct s3_put_result *ret_result, struct kl_errinfo *info);

/* ---------------------------------------------------------- building blocks
 * Pure functions the calls above are made of; public so that unit tests
 * can state exactly what goes on the wire.
 */

/*
 * Appends the request path for bucket/key to out: "/bucket/key" path-style,
 * "/key" when virtual_host (the bucket then goes in the host prefix).
 * key NULL = the bucket itself ("/bucket" or "/"). Each segment is
 * percent-encoded (RFC 3986 unreserved kept, '/' kept); a segment that is
 * exactly "." or ".." is written as %2E / %2E%2E so that no HTTP layer can
 * collapse it. KL_EINVAL for an empty or too long key or a bad bucket name.
 */
enum kl_err s3_build_path(struct buf *out, int virtual_host, const char *bucket,
			  const char *key);

/*
 * Appends "name=value" (with a leading '&' unless out is empty), both
 * percent-encoded per RFC 3986. value NULL appends "name=".
 */
enum kl_err s3_query_add(struct buf *out, const char *name, const char *value);

/* Appends the ListObjectsV2 query for opts (NULL = defaults), sorted by name. */
enum kl_err s3_build_list_query(struct buf *out, const struct s3_list_opts *opts);

/* Appends the CompleteMultipartUpload XML body for parts (checked as above). */
enum kl_err s3_build_complete_body(struct buf *out, const struct s3_part *parts,
				   size_t n_parts);

/* Parses a ListObjectsV2 body (any namespace). ret_res owned by the caller. */
enum kl_err s3_parse_list_result(const char *xml, size_t len, struct s3_list_result *ret_res);

/* Parses InitiateMultipartUploadResult; *ret_upload_id malloc'd. */
enum kl_err s3_parse_initiate_result(const char *xml, size_t len, char **ret_upload_id);

/*
 * Parses a CompleteMultipartUpload 200 body: KL_OK with the ETag copied to
 * ret_etag (S3_ETAG_MAX bytes), or, when the body is an <Error> document,
 * the classified error with code and message in info.
 */
enum kl_err s3_parse_complete_result(const char *xml, size_t len, char *ret_etag,
				     struct kl_errinfo *info);

/* Base64 Content-MD5 of data[0..len) into ret_md5 (S3_MD5_B64_LEN bytes). */
enum kl_err s3_content_md5(const void *data, size_t len, char *ret_md5);

/*
 * Reads len bytes of fd from offset once (pread, fixed-size chunks) and
 * computes the base64 MD5 into ret_md5 and, when ret_sha256_hex is not
 * NULL, the hex SHA-256 (65 bytes) in the same pass. KL_EIO when the file
 * cannot be read or is shorter than offset + len.
 */
enum kl_err s3_hash_file_range(int fd, uint64_t offset, uint64_t len, char *ret_md5,
			       char *ret_sha256_hex, struct kl_errinfo *info);

#endif
