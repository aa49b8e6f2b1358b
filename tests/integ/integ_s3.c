/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_s3.c: the S3 client against s3rver (started by
 * tests/emu/emulators.sh, which exports KL_TEST_S3_ENDPOINT and the
 * S3RVER keys). Everything written is read back and compared byte for
 * byte; listings are walked page by page. Exits 77 when the emulator is
 * not there. When moto is running too (KL_TEST_MOTO_ENDPOINT), a second
 * suite repeats the core calls against it, because moto checks SigV4
 * signatures and s3rver does not. The parallel multipart tests put
 * tests/tools/faultproxy in front of s3rver to slow, hold or fail parts.
 * Run:
 *   tests/emu/emulators.sh [--no-moto] -- ./tests/integ/integ_s3
 */
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws.h"
#include "creds.h"
#include "faultctl.h"
#include "http.h"
#include "s3.h"
#include "testutil.h"

#define BUCKET "kl-integ-s3"
#define MOTO_BUCKET "kl-integ-s3-moto"

/* The fixture every test uses; set up once in main(). */
static struct {
	struct creds_chain *creds;
	struct aws_client c;
	struct aws_client_config cfg;      /* c's, straight to s3rver */
	/* moto: only set up when KL_TEST_MOTO_ENDPOINT is there */
	const char *moto_endpoint;
	struct creds_chain *moto_creds;
	struct aws_client moto;
} fx;

static uint8_t pattern_byte(size_t i)
{
	return (uint8_t)((i * 131 + (i >> 13)) & 255);
}

/* A new unlinked temporary file holding n pattern bytes. */
static int pattern_file(size_t n)
{
	char name[] = "/tmp/kl-integ-s3-XXXXXX";
	int fd = mkstemp(name);
	size_t chunk = 1 << 20;
	uint8_t *buf = malloc(chunk);

	CU_ASSERT_FATAL(fd >= 0 && buf != NULL);
	unlink(name);
	for (size_t off = 0; off < n; off += chunk) {
		size_t m = n - off < chunk ? n - off : chunk;
		for (size_t i = 0; i < m; i++)
			buf[i] = pattern_byte(off + i);
		CU_ASSERT_FATAL(write(fd, buf, m) == (ssize_t)m);
	}
	free(buf);
	return fd;
}

static int empty_file(void)
{
	char name[] = "/tmp/kl-integ-s3-get-XXXXXX";
	int fd = mkstemp(name);

	CU_ASSERT_FATAL(fd >= 0);
	unlink(name);
	return fd;
}

/* True when fd holds exactly len bytes equal to src's [offset, offset+len). */
static int same_bytes(int fd, int src, uint64_t offset, uint64_t len)
{
	size_t chunk = 1 << 20;
	uint8_t *a = malloc(chunk), *b = malloc(chunk);
	int same = a && b;

	if (lseek(fd, 0, SEEK_END) != (off_t)len)
		same = 0;
	for (uint64_t off = 0; same && off < len; off += chunk) {
		size_t m = len - off < chunk ? (size_t)(len - off) : chunk;
		if (pread(fd, a, m, (off_t)off) != (ssize_t)m ||
		    pread(src, b, m, (off_t)(offset + off)) != (ssize_t)m || memcmp(a, b, m) != 0)
			same = 0;
	}
	free(a);
	free(b);
	return same;
}

static void report(const char *what, enum kl_err err, const struct kl_errinfo *info)
{
	char msg[700];

	if (err)
		fprintf(stderr, "\n  %s: %s\n", what, kl_errinfo_format(err, info, msg, sizeof(msg)));
}

static const char *meta_value(const struct s3_object_info *obj, const char *name)
{
	for (size_t i = 0; i < obj->n_metadata; i++)
		if (strcmp(obj->metadata[i].name, name) == 0)
			return obj->metadata[i].value;
	return NULL;
}

/* ------------------------------------------------------------ tests */

static void test_create_bucket(void)
{
	struct kl_errinfo info;
	enum kl_err err;

	err = s3_create_bucket(&fx.c, BUCKET, &info);
	report("CreateBucket", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	/* Again: AWS says BucketAlreadyOwnedByYou (KL_OK), s3rver says
	 * BucketAlreadyExists even to the owner (KL_EEXISTS). */
	err = s3_create_bucket(&fx.c, BUCKET, &info);
	CU_ASSERT_TRUE(err == KL_OK || err == KL_EEXISTS);
	CU_ASSERT_EQUAL(s3_create_bucket(&fx.c, "not/valid", &info), KL_EINVAL);
}

static void test_put_memory_roundtrip(void)
{
	static const char body[] = "{\"a\":1}\n{\"a\":2}\n";
	const struct http_header meta[] = { { "shard", "shardId-000000000001" },
					    { "esn-last", "4959033827149025660855969253836" } };
	struct s3_put_opts o = { .content_type = "application/x-ndjson",
				 .content_encoding = "identity", .metadata = meta, .n_metadata = 2 };
	struct s3_object_info obj = { 0 }, head = { 0 };
	struct s3_put_result res;
	struct kl_errinfo info;
	char *data = NULL;
	size_t len = 0;
	enum kl_err err;

	err = s3_put_object(&fx.c, BUCKET, "mem/one.json", body, strlen(body), &o, &res, &info);
	report("PutObject", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	/* s3rver's ETag is the quoted MD5 of the body (hex), like AWS's. */
	CU_ASSERT_EQUAL(strlen(res.etag), 34);

	err = s3_get_object(&fx.c, BUCKET, "mem/one.json", 1024, &data, &len, &obj, &info);
	report("GetObject", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	CU_ASSERT_EQUAL(len, strlen(body));
	CU_ASSERT_EQUAL(memcmp(data, body, strlen(body)), 0);
	CU_ASSERT_STRING_EQUAL(obj.etag, res.etag);
	CU_ASSERT_PTR_NOT_NULL(obj.content_type);
	if (obj.content_type)
		CU_ASSERT_STRING_EQUAL(obj.content_type, "application/x-ndjson");
	CU_ASSERT_PTR_NOT_NULL(obj.content_encoding);
	if (obj.content_encoding)
		CU_ASSERT_STRING_EQUAL(obj.content_encoding, "identity");
	free(data);

	err = s3_head_object(&fx.c, BUCKET, "mem/one.json", &head, &info);
	report("HeadObject", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	CU_ASSERT_EQUAL(head.size, strlen(body));
	CU_ASSERT_STRING_EQUAL(head.etag, res.etag);
	CU_ASSERT_PTR_NOT_NULL(head.content_type);
	if (head.content_type)
		CU_ASSERT_STRING_EQUAL(head.content_type, "application/x-ndjson");
	CU_ASSERT_PTR_NOT_NULL(head.last_modified);
	CU_ASSERT_PTR_NOT_NULL(meta_value(&head, "shard"));
	if (meta_value(&head, "shard"))
		CU_ASSERT_STRING_EQUAL(meta_value(&head, "shard"), "shardId-000000000001");
	CU_ASSERT_PTR_NOT_NULL(meta_value(&head, "esn-last"));
	s3_object_info_done(&obj);
	s3_object_info_done(&head);

	/* Over the memory cap: refused, nothing handed back. */
	data = NULL;
	CU_ASSERT_EQUAL(s3_get_object(&fx.c, BUCKET, "mem/one.json", 5, &data, &len, NULL, &info),
			KL_ENOMEM);
	CU_ASSERT_PTR_NULL(data);

	/* An empty object. */
	err = s3_put_object(&fx.c, BUCKET, "mem/empty", NULL, 0, NULL, &res, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_STRING_EQUAL(res.etag, "\"d41d8cd98f00b204e9800998ecf8427e\"");
	CU_ASSERT_EQUAL(s3_get_object(&fx.c, BUCKET, "mem/empty", 10, &data, &len, NULL, &info),
			KL_OK);
	CU_ASSERT_EQUAL(len, 0);
	free(data);
}

static void test_put_file_range(void)
{
	const uint64_t offset = 123, len = 700001;
	struct s3_put_opts signed_opts = { .content_type = "application/gzip",
					   .content_encoding = "gzip" };
	struct s3_put_opts unsigned_opts = { .unsigned_payload = 1 };
	struct s3_object_info obj = { 0 };
	struct s3_put_result res;
	struct kl_errinfo info;
	int src = pattern_file(1 << 20);
	enum kl_err err;

	for (int pass = 0; pass < 2; pass++) {
		int dst = empty_file();
		err = s3_put_object_file(&fx.c, BUCKET, "file/range.gz", src, offset, len,
					 pass ? &unsigned_opts : &signed_opts, &res, &info);
		report("PutObject (file)", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		err = s3_get_object_to_fd(&fx.c, BUCKET, "file/range.gz", dst, &obj, &info);
		report("GetObject (file)", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		CU_ASSERT_TRUE(same_bytes(dst, src, offset, len));
		CU_ASSERT_EQUAL(obj.size, len);
		CU_ASSERT_STRING_EQUAL(obj.etag, res.etag);
		if (pass == 0) {
			CU_ASSERT_PTR_NOT_NULL(obj.content_encoding);
			if (obj.content_encoding)
				CU_ASSERT_STRING_EQUAL(obj.content_encoding, "gzip");
			CU_ASSERT_PTR_NOT_NULL(obj.content_type);
			if (obj.content_type)
				CU_ASSERT_STRING_EQUAL(obj.content_type, "application/gzip");
		}
		s3_object_info_done(&obj);
		close(dst);
	}
	close(src);
}

static void test_multipart_12mib(void)
{
	const uint64_t len = ((uint64_t)12 << 20) + 777, offset = 4096;
	struct s3_upload_opts o = {
		.put = { .content_type = "application/x-ndjson", .content_encoding = "zstd" },
		.multipart_threshold = (uint64_t)5 << 20, .part_size = (uint64_t)5 << 20,
	};
	struct s3_object_info obj = { 0 };
	struct s3_put_result res;
	struct kl_errinfo info;
	int src = pattern_file((size_t)(offset + len));
	int dst = empty_file();
	enum kl_err err;

	err = s3_upload_file(&fx.c, BUCKET, "mp/twelve.zst", src, offset, len, &o, &res, &info);
	report("upload_file (multipart)", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	CU_ASSERT_EQUAL(res.n_parts, 3);
	CU_ASSERT_NOT_EQUAL(res.etag[0], '\0');

	err = s3_get_object_to_fd(&fx.c, BUCKET, "mp/twelve.zst", dst, &obj, &info);
	report("GetObject (multipart)", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	CU_ASSERT_EQUAL(obj.size, len);
	CU_ASSERT_TRUE(same_bytes(dst, src, offset, len));
	/* Headers given at CreateMultipartUpload belong to the final object. */
	CU_ASSERT_PTR_NOT_NULL(obj.content_type);
	if (obj.content_type)
		CU_ASSERT_STRING_EQUAL(obj.content_type, "application/x-ndjson");
	CU_ASSERT_PTR_NOT_NULL(obj.content_encoding);
	if (obj.content_encoding)
		CU_ASSERT_STRING_EQUAL(obj.content_encoding, "zstd");
	s3_object_info_done(&obj);

	/* Uploading the same spool file again is an overwrite with the same bytes. */
	err = s3_upload_file(&fx.c, BUCKET, "mp/twelve.zst", src, offset, len, &o, &res, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	err = s3_head_object(&fx.c, BUCKET, "mp/twelve.zst", &obj, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_EQUAL(obj.size, len);
	s3_object_info_done(&obj);

	/* Under the default 16 MiB threshold the same file is one PutObject. */
	err = s3_upload_file(&fx.c, BUCKET, "mp/single", src, offset, len, NULL, &res, &info);
	report("upload_file (single)", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_EQUAL(res.n_parts, 0);
	CU_ASSERT_EQUAL(strlen(res.content_md5), 24);
	close(dst);
	close(src);
}

static void test_multipart_abort(void)
{
	struct s3_part part;
	struct kl_errinfo info;
	char *upload_id = NULL;
	int src = pattern_file(1000);
	enum kl_err err;

	err = s3_create_multipart(&fx.c, BUCKET, "mp/abandoned", NULL, &upload_id, &info);
	report("CreateMultipartUpload", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	err = s3_upload_part(&fx.c, BUCKET, "mp/abandoned", upload_id, 1, src, 0, 1000, NULL, &part,
			     &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_EQUAL(part.number, 1);
	CU_ASSERT_NOT_EQUAL(part.etag[0], '\0');
	/* s3rver answers 405: tolerated, the upload counts as abandoned. */
	err = s3_abort_multipart(&fx.c, BUCKET, "mp/abandoned", upload_id, &info);
	report("AbortMultipartUpload", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	/* Never completed, so there is no object. */
	struct s3_object_info obj = { 0 };
	CU_ASSERT_EQUAL(s3_head_object(&fx.c, BUCKET, "mp/abandoned", &obj, &info), KL_ENOTFOUND);
	free(upload_id);
	close(src);
}

/* ------------------------------------------------ parallel multipart */

/* 24 MiB + a tail: five 5 MiB parts, the last one short. */
#define PAR_LEN (((uint64_t)24 << 20) + 4321)
#define PAR_PART ((uint64_t)5 << 20)
#define PAR_PARTS 5

/* A proxy in front of s3rver and a client (3 attempts a call) through it. */
struct par_fx {
	struct faultctl *fp;
	struct aws_client_config cfg;
	struct aws_client c;
};

static void par_setup(struct par_fx *p)
{
	memset(p, 0, sizeof(*p));
	CU_ASSERT_EQUAL_FATAL(faultctl_start(fx.cfg.endpoint, &p->fp), KL_OK);
	p->cfg = fx.cfg;
	p->cfg.endpoint = faultctl_url(p->fp);
	p->cfg.retry.max_attempts = 3;
	CU_ASSERT_EQUAL_FATAL(aws_client_init(&p->c, &p->cfg, fx.creds), KL_OK);
}

static void par_teardown(struct par_fx *p)
{
	aws_client_done(&p->c);
	CU_ASSERT_EQUAL(faultctl_stop(p->fp), 0);
}

static struct s3_upload_opts par_opts(struct par_fx *p, unsigned parallel)
{
	struct s3_upload_opts o = {
		.multipart_threshold = PAR_PART, .part_size = PAR_PART,
		.parallel = parallel, .client_cfg = &p->cfg, .creds = fx.creds,
	};
	return o;
}

static uint64_t counter(struct par_fx *p, const char *section, const char *name,
			const char *field)
{
	uint64_t v = UINT64_MAX;

	CU_ASSERT_EQUAL(faultctl_counter(p->fp, section, name, field, &v), KL_OK);
	return v;
}

/* Uploads src as key with opts, reads it back and compares; returns the ms taken. */
static long par_upload_checked(struct par_fx *p, const char *key, int src,
			       const struct s3_upload_opts *o)
{
	struct s3_put_result res;
	struct kl_errinfo info;
	int dst = empty_file();
	long t0 = (long)kl_mono_ms(), ms;
	enum kl_err err;

	err = s3_upload_file(&p->c, BUCKET, key, src, 0, PAR_LEN, o, &res, &info);
	ms = (long)kl_mono_ms() - t0;
	report("upload_file (parallel)", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_EQUAL(res.n_parts, PAR_PARTS);
	err = s3_get_object_to_fd(&fx.c, BUCKET, key, dst, NULL, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_TRUE(same_bytes(dst, src, 0, PAR_LEN));
	close(dst);
	return ms;
}

/* With every UploadPart delayed 300 ms, four at a time beats one at a time. */
static void test_multipart_parallel_delay(void)
{
	struct par_fx p;
	struct s3_upload_opts one, four;
	int src = pattern_file((size_t)PAR_LEN);
	long ms1, ms4;

	par_setup(&p);
	one = par_opts(&p, 1);
	four = par_opts(&p, 4);
	CU_ASSERT_EQUAL_FATAL(faultctl_set_rules(p.fp, "slow op=S3.UploadPart action=delay ms=300"),
			      KL_OK);
	ms1 = par_upload_checked(&p, "mp/par-1", src, &one);
	ms4 = par_upload_checked(&p, "mp/par-4", src, &four);
	fprintf(stderr, "\n  %d parts, UploadPart delayed 300 ms: parallel=1 %ld ms, "
		"parallel=4 %ld ms\n", PAR_PARTS, ms1, ms4);
	CU_ASSERT_EQUAL(counter(&p, "rules", "slow", "faults"), 2 * PAR_PARTS);
	/* One at a time cannot beat the sum of the delays ... */
	CU_ASSERT_TRUE(ms1 >= PAR_PARTS * 300);
	/* ... four at a time pays two waves of delay (600 ms), not five:
	 * require at least half the 900 ms that overlap ideally saves. */
	CU_ASSERT_TRUE(ms4 + 450 <= ms1);
	par_teardown(&p);
	close(src);
}

struct par_bg {
	struct aws_client *c;
	const struct s3_upload_opts *o;
	int src;
	enum kl_err err;
	struct s3_put_result res;
	struct kl_errinfo info;
};

static void *par_bg_main(void *arg)
{
	struct par_bg *b = arg;

	b->err = s3_upload_file(b->c, BUCKET, "mp/par-held", b->src, 0, PAR_LEN, b->o, &b->res,
				&b->info);
	return NULL;
}

/*
 * Holding every UploadPart at the proxy: exactly 4 parts reach it at once
 * (overlap), and no 5th is sent while they are held (the bound).
 */
static void test_multipart_parallel_bound(void)
{
	struct par_fx p;
	struct s3_upload_opts o;
	struct par_bg b = { 0 };
	pthread_t t;
	int src = pattern_file((size_t)PAR_LEN);
	int dst = empty_file();

	par_setup(&p);
	o = par_opts(&p, 4);
	CU_ASSERT_EQUAL_FATAL(faultctl_set_rules(p.fp, "h op=S3.UploadPart action=hold max=4"),
			      KL_OK);
	b.c = &p.c;
	b.o = &o;
	b.src = src;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, par_bg_main, &b), 0);
	CU_ASSERT_EQUAL(faultctl_wait_held(p.fp, "h", 4, 20000), KL_OK);
	usleep(300 * 1000);   /* time for a 5th part to show up if it were sent */
	CU_ASSERT_EQUAL(counter(&p, "rules", "h", "held"), 4);
	CU_ASSERT_EQUAL(counter(&p, "ops", "S3.UploadPart", "requests"), 4);
	CU_ASSERT_EQUAL(faultctl_release(p.fp, "h", 0, NULL), KL_OK);
	pthread_join(t, NULL);
	report("upload_file (held)", b.err, &b.info);
	CU_ASSERT_EQUAL(b.err, KL_OK);
	CU_ASSERT_EQUAL(b.res.n_parts, PAR_PARTS);
	CU_ASSERT_EQUAL(counter(&p, "ops", "S3.UploadPart", "requests"), PAR_PARTS);
	CU_ASSERT_EQUAL(s3_get_object_to_fd(&fx.c, BUCKET, "mp/par-held", dst, NULL, &b.info),
			KL_OK);
	CU_ASSERT_TRUE(same_bytes(dst, src, 0, PAR_LEN));
	par_teardown(&p);
	close(dst);
	close(src);
}

/*
 * Part 1 fails every attempt while parts 2-4 are slow: the upload stops
 * handing out parts (5 is never sent), waits for 2-4, aborts, never
 * completes, and returns part 1's error.
 */
static void test_multipart_parallel_failure(void)
{
	struct par_fx p;
	struct s3_upload_opts o;
	struct s3_object_info obj = { 0 };
	struct s3_put_result res;
	struct kl_errinfo info = { 0 };
	int src = pattern_file((size_t)PAR_LEN);
	enum kl_err err;

	par_setup(&p);
	o = par_opts(&p, 4);
	CU_ASSERT_EQUAL_FATAL(faultctl_set_rules(p.fp,
		"p5 op=S3.UploadPart query=partNumber=5 action=delay ms=1\n"
		"bad op=S3.UploadPart query=partNumber=1& action=s3-500\n"
		"slow op=S3.UploadPart action=delay ms=1000"), KL_OK);
	err = s3_upload_file(&p.c, BUCKET, "mp/par-failed", src, 0, PAR_LEN, &o, &res, &info);
	CU_ASSERT_NOT_EQUAL(err, KL_OK);
	CU_ASSERT_EQUAL(info.http_status, 500);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InternalError");
	CU_ASSERT_EQUAL(counter(&p, "rules", "bad", "faults"), 3);      /* all attempts */
	CU_ASSERT_EQUAL(counter(&p, "rules", "slow", "faults"), 3);     /* parts 2-4 */
	CU_ASSERT_EQUAL(counter(&p, "rules", "p5", "matched"), 0);
	CU_ASSERT_EQUAL(counter(&p, "ops", "S3.CompleteMultipartUpload", "requests"), 0);
	CU_ASSERT_EQUAL(counter(&p, "ops", "S3.AbortMultipartUpload", "requests"), 1);
	CU_ASSERT_EQUAL(s3_head_object(&fx.c, BUCKET, "mp/par-failed", &obj, &info), KL_ENOTFOUND);
	s3_object_info_done(&obj);

	/* A caller that forgets the client config gets KL_EINVAL, nothing sent. */
	o.client_cfg = NULL;
	err = s3_upload_file(&p.c, BUCKET, "mp/par-failed", src, 0, PAR_LEN, &o, &res, &info);
	CU_ASSERT_EQUAL(err, KL_EINVAL);
	CU_ASSERT_EQUAL(counter(&p, "ops", "S3.CreateMultipartUpload", "requests"), 1);
	par_teardown(&p);
	close(src);
}

static void test_overwrite_idempotent(void)
{
	struct s3_put_result a, b, c2;
	struct kl_errinfo info;
	struct s3_list_result page;
	struct s3_list_opts lo = { .prefix = "ow/" };
	char *data = NULL;
	size_t len = 0;

	CU_ASSERT_EQUAL_FATAL(s3_put_object(&fx.c, BUCKET, "ow/k", "same", 4, NULL, &a, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(s3_put_object(&fx.c, BUCKET, "ow/k", "same", 4, NULL, &b, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(a.etag, b.etag);
	CU_ASSERT_STRING_EQUAL(a.content_md5, b.content_md5);
	CU_ASSERT_EQUAL_FATAL(s3_list_objects_v2(&fx.c, BUCKET, &lo, &page, &info), KL_OK);
	CU_ASSERT_EQUAL(page.n_entries, 1);
	s3_list_result_done(&page);
	/* A different body replaces the old one. */
	CU_ASSERT_EQUAL_FATAL(s3_put_object(&fx.c, BUCKET, "ow/k", "changed", 7, NULL, &c2, &info),
			      KL_OK);
	CU_ASSERT_STRING_NOT_EQUAL(c2.etag, a.etag);
	CU_ASSERT_EQUAL_FATAL(s3_get_object(&fx.c, BUCKET, "ow/k", 100, &data, &len, NULL, &info), KL_OK);
	CU_ASSERT_EQUAL(len, 7);
	CU_ASSERT_EQUAL(memcmp(data, "changed", 7), 0);
	free(data);
}

static void test_list_pagination(void)
{
	const int n = 23;
	struct s3_put_result res;
	struct kl_errinfo info;
	char key[64], *token = NULL;
	int seen = 0, pages = 0, in_order = 1;
	enum kl_err err;

	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "page/%03d", i);
		CU_ASSERT_EQUAL_FATAL(s3_put_object(&fx.c, BUCKET, key, key, strlen(key), NULL, &res,
						    &info), KL_OK);
	}
	/* Objects outside the prefix must not show up. */
	CU_ASSERT_EQUAL(s3_put_object(&fx.c, BUCKET, "pagf", "x", 1, NULL, &res, &info), KL_OK);

	do {
		struct s3_list_opts o = { .prefix = "page/", .max_keys = 5,
					  .continuation_token = token };
		struct s3_list_result page;
		err = s3_list_objects_v2(&fx.c, BUCKET, &o, &page, &info);
		report("ListObjectsV2", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		free(token);
		token = NULL;
		pages++;
		CU_ASSERT_TRUE(page.n_entries <= 5);
		for (size_t i = 0; i < page.n_entries; i++) {
			snprintf(key, sizeof(key), "page/%03d", seen);
			if (strcmp(page.entries[i].key, key) != 0)
				in_order = 0;
			CU_ASSERT_EQUAL(page.entries[i].size, strlen(key));
			seen++;
		}
		if (page.is_truncated) {
			CU_ASSERT_PTR_NOT_NULL_FATAL(page.next_continuation_token);
			token = strdup(page.next_continuation_token);
		}
		s3_list_result_done(&page);
	} while (token && pages < 20);
	CU_ASSERT_EQUAL(seen, n);
	CU_ASSERT_EQUAL(pages, 5);
	CU_ASSERT_TRUE(in_order);
	free(token);

	/* StartAfter skips up to and including the named key. */
	struct s3_list_opts sa = { .prefix = "page/", .start_after = "page/019" };
	struct s3_list_result page;
	CU_ASSERT_EQUAL_FATAL(s3_list_objects_v2(&fx.c, BUCKET, &sa, &page, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(page.n_entries, 3);
	CU_ASSERT_STRING_EQUAL(page.entries[0].key, "page/020");
	CU_ASSERT_FALSE(page.is_truncated);
	s3_list_result_done(&page);

	/* Delimiter: common prefixes and the objects beside them. */
	static const char *const dl[] = { "dl/a/1", "dl/a/2", "dl/b/1", "dl/c" };
	for (size_t i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(s3_put_object(&fx.c, BUCKET, dl[i], "x", 1, NULL, &res, &info), KL_OK);
	struct s3_list_opts d = { .prefix = "dl/", .delimiter = "/" };
	CU_ASSERT_EQUAL_FATAL(s3_list_objects_v2(&fx.c, BUCKET, &d, &page, &info), KL_OK);
	CU_ASSERT_EQUAL(page.n_entries, 1);
	if (page.n_entries == 1)
		CU_ASSERT_STRING_EQUAL(page.entries[0].key, "dl/c");
	CU_ASSERT_EQUAL_FATAL(page.n_common_prefixes, 2);
	CU_ASSERT_STRING_EQUAL(page.common_prefixes[0], "dl/a/");
	CU_ASSERT_STRING_EQUAL(page.common_prefixes[1], "dl/b/");
	s3_list_result_done(&page);
}

static void test_not_found(void)
{
	struct s3_object_info obj = { .size = 42 };
	struct kl_errinfo info;
	char *data = NULL;
	size_t len = 0;
	int fd = empty_file();

	CU_ASSERT_EQUAL(s3_head_object(&fx.c, BUCKET, "nope/missing", &obj, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(info.http_status, 404);
	CU_ASSERT_EQUAL(obj.size, 42);
	CU_ASSERT_EQUAL(s3_get_object(&fx.c, BUCKET, "nope/missing", 100, &data, &len, NULL, &info),
			KL_ENOTFOUND);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "NoSuchKey");
	CU_ASSERT_PTR_NULL(data);
	/* The error document does not end up in the download file. */
	CU_ASSERT_EQUAL(s3_get_object_to_fd(&fx.c, BUCKET, "nope/missing", fd, NULL, &info),
			KL_ENOTFOUND);
	CU_ASSERT_EQUAL(lseek(fd, 0, SEEK_END), 0);
	close(fd);
	CU_ASSERT_EQUAL(s3_head_object(&fx.c, "no-such-bucket-kl", "k", &obj, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(s3_get_object(&fx.c, "no-such-bucket-kl", "k", 100, &data, &len, NULL, &info),
			KL_ENOTFOUND);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "NoSuchBucket");

	/* Delete, then it is gone; deleting again is fine. */
	struct s3_put_result res;
	CU_ASSERT_EQUAL_FATAL(s3_put_object(&fx.c, BUCKET, "del/k", "x", 1, NULL, &res, &info), KL_OK);
	CU_ASSERT_EQUAL(s3_delete_object(&fx.c, BUCKET, "del/k", &info), KL_OK);
	CU_ASSERT_EQUAL(s3_head_object(&fx.c, BUCKET, "del/k", &obj, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(s3_delete_object(&fx.c, BUCKET, "del/k", &info), KL_OK);
}

static void test_special_keys(void)
{
	static const char *const keys[] = {
		"sp/with space/and  two.json",
		"sp/donn\xc3\xa9" "es/\xe2\x82\xac-\xe6\x97\xa5\xe6\x9c\xac.json",
		"sp/plus+tilde~eq=amp&semi;comma,paren(1)",
		"sp/dt=2026-11-21/hour=09/shardId-000000000001-49590338271490256608559692538361571095921575989136588898.ndjson.gz",
	};
	struct s3_put_result res;
	struct kl_errinfo info;
	enum kl_err err;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		struct s3_object_info obj = { 0 };
		char *data = NULL;
		size_t len = 0;
		err = s3_put_object(&fx.c, BUCKET, keys[i], keys[i], strlen(keys[i]), NULL, &res, &info);
		report(keys[i], err, &info);
		CU_ASSERT_EQUAL(err, KL_OK);
		CU_ASSERT_EQUAL(s3_head_object(&fx.c, BUCKET, keys[i], &obj, &info), KL_OK);
		CU_ASSERT_EQUAL(obj.size, strlen(keys[i]));
		s3_object_info_done(&obj);
		err = s3_get_object(&fx.c, BUCKET, keys[i], 1024, &data, &len, NULL, &info);
		CU_ASSERT_EQUAL(err, KL_OK);
		if (!err) {
			CU_ASSERT_EQUAL(len, strlen(keys[i]));
			CU_ASSERT_EQUAL(memcmp(data, keys[i], len), 0);
		}
		free(data);
	}
	/* The listing gives the keys back exactly (sorted by UTF-8 bytes). */
	struct s3_list_opts o = { .prefix = "sp/" };
	struct s3_list_result page;
	CU_ASSERT_EQUAL_FATAL(s3_list_objects_v2(&fx.c, BUCKET, &o, &page, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(page.n_entries, 4);
	for (size_t i = 0; i < 4; i++) {
		int found = 0;
		for (size_t j = 0; j < page.n_entries; j++)
			found |= strcmp(page.entries[j].key, keys[i]) == 0;
		CU_ASSERT_TRUE(found);
		if (!found)
			fprintf(stderr, "\n  key not listed: %s\n", keys[i]);
	}
	s3_list_result_done(&page);
	/* A prefix with a space and a non-ASCII character is sent and matched. */
	struct s3_list_opts o2 = { .prefix = "sp/donn\xc3\xa9" };
	CU_ASSERT_EQUAL_FATAL(s3_list_objects_v2(&fx.c, BUCKET, &o2, &page, &info), KL_OK);
	CU_ASSERT_EQUAL(page.n_entries, 1);
	s3_list_result_done(&page);
	struct s3_list_opts o3 = { .prefix = "sp/with space/" };
	CU_ASSERT_EQUAL_FATAL(s3_list_objects_v2(&fx.c, BUCKET, &o3, &page, &info), KL_OK);
	CU_ASSERT_EQUAL(page.n_entries, 1);
	s3_list_result_done(&page);
}


/* ------------------------------------------------------------ moto (signatures checked) */

static void test_moto_roundtrip(void)
{
	static const char body[] = "signed body\n";
	const struct http_header meta[] = { { "shard", "shardId-0001" } };
	/* A storage class too: moto checks that the signed x-amz-storage-class
	 * is a class it knows (InvalidStorageClass otherwise). */
	struct s3_put_opts o = { .content_type = "application/x-ndjson", .content_encoding = "gzip",
				 .metadata = meta, .n_metadata = 1, .storage_class = "STANDARD_IA" };
	struct s3_put_opts unsigned_opts = { .unsigned_payload = 1 };
	struct s3_object_info obj = { 0 };
	struct s3_put_result res;
	struct kl_errinfo info;
	char *data = NULL, key[32];
	size_t len = 0;
	int src = pattern_file(300000);
	enum kl_err err;

	err = s3_create_bucket(&fx.moto, MOTO_BUCKET, &info);
	report("moto CreateBucket", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	/* moto, like AWS, says BucketAlreadyOwnedByYou to the owner. */
	err = s3_create_bucket(&fx.moto, MOTO_BUCKET, &info);
	report("moto CreateBucket again", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);

	err = s3_put_object(&fx.moto, MOTO_BUCKET, "mo-a b.json", body, strlen(body), &o, &res, &info);
	report("moto PutObject", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	err = s3_head_object(&fx.moto, MOTO_BUCKET, "mo-a b.json", &obj, &info);
	report("moto HeadObject", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_EQUAL(obj.size, strlen(body));
	CU_ASSERT_STRING_EQUAL(obj.etag, res.etag);
	CU_ASSERT_PTR_NOT_NULL(meta_value(&obj, "shard"));
	s3_object_info_done(&obj);
	err = s3_get_object(&fx.moto, MOTO_BUCKET, "mo-a b.json", 100, &data, &len, NULL, &info);
	report("moto GetObject", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_EQUAL(len, strlen(body));
	free(data);

	/* File bodies, signed over the SHA-256 and unsigned. */
	for (int pass = 0; pass < 2; pass++) {
		int dst = empty_file();
		snprintf(key, sizeof(key), "mo-file%d", pass);
		err = s3_put_object_file(&fx.moto, MOTO_BUCKET, key, src, 77, 250000,
					 pass ? &unsigned_opts : NULL, &res, &info);
		report("moto PutObject (file)", err, &info);
		CU_ASSERT_EQUAL(err, KL_OK);
		err = s3_get_object_to_fd(&fx.moto, MOTO_BUCKET, key, dst, NULL, &info);
		CU_ASSERT_EQUAL(err, KL_OK);
		CU_ASSERT_TRUE(same_bytes(dst, src, 77, 250000));
		close(dst);
	}

	/* Pagination with signed continuation tokens. The prefix has no '/':
	 * moto 5.2.1 rejects the signature of a prefix with one (boto3's too). */
	char *token = NULL;
	int seen = 0, pages = 0;
	do {
		struct s3_list_opts lo = { .prefix = "mo-", .max_keys = 2, .continuation_token = token };
		struct s3_list_result page;
		err = s3_list_objects_v2(&fx.moto, MOTO_BUCKET, &lo, &page, &info);
		report("moto ListObjectsV2", err, &info);
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		free(token);
		token = page.is_truncated && page.next_continuation_token
				? strdup(page.next_continuation_token) : NULL;
		seen += (int)page.n_entries;
		pages++;
		s3_list_result_done(&page);
	} while (token && pages < 10);
	free(token);
	CU_ASSERT_EQUAL(seen, 3);
	CU_ASSERT_EQUAL(pages, 2);

	CU_ASSERT_EQUAL(s3_head_object(&fx.moto, MOTO_BUCKET, "mo-none", &obj, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(s3_delete_object(&fx.moto, MOTO_BUCKET, "mo-file1", &info), KL_OK);
	CU_ASSERT_EQUAL(s3_head_object(&fx.moto, MOTO_BUCKET, "mo-file1", &obj, &info), KL_ENOTFOUND);
	close(src);
}

static void test_moto_multipart(void)
{
	const uint64_t len = ((uint64_t)11 << 20) + 5;
	struct s3_upload_opts o = { .multipart_threshold = (uint64_t)5 << 20,
				    .part_size = (uint64_t)5 << 20 };
	struct s3_put_result res;
	struct kl_errinfo info;
	char *upload_id = NULL;
	int src = pattern_file((size_t)len);
	int dst = empty_file();
	enum kl_err err;

	err = s3_upload_file(&fx.moto, MOTO_BUCKET, "mp/eleven", src, 0, len, &o, &res, &info);
	report("moto upload_file (multipart)", err, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	CU_ASSERT_EQUAL(res.n_parts, 3);
	/* moto, like AWS, gives a multipart ETag "<md5 of md5s>-<parts>". */
	CU_ASSERT_PTR_NOT_NULL(strstr(res.etag, "-3"));
	err = s3_get_object_to_fd(&fx.moto, MOTO_BUCKET, "mp/eleven", dst, NULL, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	CU_ASSERT_TRUE(same_bytes(dst, src, 0, len));

	/* A real abort (204 here), and a second one finds nothing to abort. */
	err = s3_create_multipart(&fx.moto, MOTO_BUCKET, "mp/aborted", NULL, &upload_id, &info);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	err = s3_abort_multipart(&fx.moto, MOTO_BUCKET, "mp/aborted", upload_id, &info);
	report("moto AbortMultipartUpload", err, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	err = s3_abort_multipart(&fx.moto, MOTO_BUCKET, "mp/aborted", upload_id, &info);
	CU_ASSERT_EQUAL(err, KL_OK);
	free(upload_id);
	close(dst);
	close(src);
}

static void test_moto_bad_signature(void)
{
	struct creds_config cc = {
		.access_key_id = getenv("KL_TEST_MOTO_ACCESS_KEY_ID"),
		.secret_access_key = "definitely-not-the-secret",
		.disable_imds = 1,
	};
	struct aws_client_config cfg = {
		.service = "s3", .region = "us-east-1", .endpoint = fx.moto_endpoint,
		.retry = { .max_attempts = 1 },
	};
	struct creds_chain *creds = NULL;
	struct aws_client c;
	struct s3_put_result res;
	struct kl_errinfo info;

	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cc, &creds), KL_OK);
	CU_ASSERT_EQUAL_FATAL(aws_client_init(&c, &cfg, creds), KL_OK);
	CU_ASSERT_EQUAL(s3_put_object(&c, MOTO_BUCKET, "mo-forged", "x", 1, NULL, &res, &info),
			KL_EAUTH);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "SignatureDoesNotMatch");
	aws_client_done(&c);
	creds_chain_free(creds);
}

/* Sets up the moto client; returns 0 when moto is not running. */
static int moto_setup(void)
{
	struct creds_config cc = {
		.access_key_id = getenv("KL_TEST_MOTO_ACCESS_KEY_ID"),
		.secret_access_key = getenv("KL_TEST_MOTO_SECRET_ACCESS_KEY"),
		.disable_imds = 1,
	};
	struct aws_client_config cfg = { .service = "s3", .region = "us-east-1" };

	fx.moto_endpoint = getenv("KL_TEST_MOTO_ENDPOINT");
	if (!fx.moto_endpoint || !*fx.moto_endpoint || !cc.access_key_id || !cc.secret_access_key)
		return 0;
	cfg.endpoint = fx.moto_endpoint;
	cfg.http.timeout_ms = 120000;
	if (creds_chain_new(&cc, &fx.moto_creds) != KL_OK ||
	    aws_client_init(&fx.moto, &cfg, fx.moto_creds) != KL_OK)
		return -1;
	return 1;
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
	static const struct kl_test t[] = {
		KL_TEST(test_create_bucket),
		KL_TEST(test_put_memory_roundtrip),
		KL_TEST(test_put_file_range),
		KL_TEST(test_multipart_12mib),
		KL_TEST(test_multipart_abort),
		KL_TEST(test_multipart_parallel_delay),
		KL_TEST(test_multipart_parallel_bound),
		KL_TEST(test_multipart_parallel_failure),
		KL_TEST(test_overwrite_idempotent),
		KL_TEST(test_list_pagination),
		KL_TEST(test_not_found),
		KL_TEST(test_special_keys),
		{ 0 },
	};
	static const struct kl_test moto_t[] = {
		KL_TEST(test_moto_roundtrip),
		KL_TEST(test_moto_multipart),
		KL_TEST(test_moto_bad_signature),
		{ 0 },
	};
	int rc;

	fx.cfg = cfg;
	if (http_global_init() != KL_OK || creds_chain_new(&cc, &fx.creds) != KL_OK ||
	    aws_client_init(&fx.c, &cfg, fx.creds) != KL_OK) {
		fprintf(stderr, "integ_s3: cannot set up the client\n");
		return 1;
	}
	rc = kl_test_run("s3-integ", t);
	switch (moto_setup()) {
	case 0:
		fprintf(stderr, "integ_s3: moto is not running, signature checks skipped\n");
		break;
	case 1:
		if (kl_test_run("s3-moto", moto_t) != 0)
			rc = 1;
		break;
	default:
		fprintf(stderr, "integ_s3: cannot set up the moto client\n");
		rc = 1;
	}
	aws_client_done(&fx.moto);
	creds_chain_free(fx.moto_creds);
	aws_client_done(&fx.c);
	creds_chain_free(fx.creds);
	http_global_cleanup();
	return rc;
}
