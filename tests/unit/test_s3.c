/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_s3.c: unit tests of the S3 client (src/aws/s3.c) and of the XML
 * reader it stands on (src/util/xml.c). Pure parts (paths, queries, XML
 * in and out, digests, error classes) are checked against values written
 * here (digests computed with the openssl command line); the calls are
 * checked on the wire against tests/loophttp, which records exactly what
 * the client sent. Nothing leaves 127.0.0.1.
 */
#include "config.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws.h"
#include "creds.h"
#include "http.h"
#include "loophttp.h"
#include "s3.h"
#include "testutil.h"
#include "xml.h"

/* ------------------------------------------------------------ helpers */

/* Path for bucket/key as a new string, or NULL when s3_build_path refuses. */
static char *path_of(int virtual_host, const char *bucket, const char *key)
{
	struct buf b;

	buf_init(&b, 0);
	if (s3_build_path(&b, virtual_host, bucket, key) != KL_OK) {
		buf_done(&b);
		return NULL;
	}
	return buf_steal(&b);
}

static void check_path(int virtual_host, const char *bucket, const char *key,
		       const char *expected)
{
	char *p = path_of(virtual_host, bucket, key);

	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT_STRING_EQUAL(p, expected);
	if (strcmp(p, expected) != 0)
		fprintf(stderr, "\n  key '%s': got '%s', want '%s'\n", key ? key : "(null)", p,
			expected);
	free(p);
}

/* The byte pattern of the digest tests: byte i of the file is (31 i + 7) mod 256. */
static uint8_t pattern_byte(size_t i)
{
	return (uint8_t)((i * 31 + 7) & 255);
}

/* Writes n pattern bytes to a new temporary file; returns its fd (unlinked). */
static int pattern_file(size_t n)
{
	char name[] = "/tmp/kl-test-s3-XXXXXX";
	int fd = mkstemp(name);
	uint8_t *data = malloc(n ? n : 1);

	CU_ASSERT_FATAL(fd >= 0 && data != NULL);
	unlink(name);
	for (size_t i = 0; i < n; i++)
		data[i] = pattern_byte(i);
	CU_ASSERT_FATAL(write(fd, data, n) == (ssize_t)n);
	free(data);
	return fd;
}

/* ------------------------------------------------------------ paths and queries */

static void test_path_encoding(void)
{
	check_path(0, "bkt", "plain/key.json", "/bkt/plain/key.json");
	check_path(0, "bkt", "a b/c d.txt", "/bkt/a%20b/c%20d.txt");
	/* UTF-8 bytes, each percent-encoded once (upper-case hex). */
	check_path(0, "bkt", "donn\xc3\xa9" "es/\xe2\x82\xac.gz", "/bkt/donn%C3%A9es/%E2%82%AC.gz");
	check_path(0, "bkt", "a+b", "/bkt/a%2Bb");
	check_path(0, "bkt", "tilde~dash-under_dot.", "/bkt/tilde~dash-under_dot.");
	check_path(0, "bkt", "dt=2026-11-21/hour=09/part=0", "/bkt/dt%3D2026-11-21/hour%3D09/part%3D0");
	check_path(0, "bkt", "q?x#y%z&w:v@u", "/bkt/q%3Fx%23y%25z%26w%3Av%40u");
	/* An already encoded key is a different key: encoded again, never decoded. */
	check_path(0, "bkt", "a%20b", "/bkt/a%2520b");
	/* No normalisation: empty segments and dots inside names stay. */
	check_path(0, "bkt", "a//b/", "/bkt/a//b/");
	check_path(0, "bkt", "/lead", "/bkt//lead");
	check_path(0, "bkt", ".../x..y/.z", "/bkt/.../x..y/.z");
	check_path(0, "my.bucket-1", "k", "/my.bucket-1/k");
	check_path(0, "bkt", NULL, "/bkt");
	/* Virtual-hosted: the bucket goes into the host, not the path. */
	check_path(1, "bkt", "a b/c", "/a%20b/c");
	check_path(1, "bkt", NULL, "/");

	/* Refused: dot segments (an HTTP layer would collapse them), empty
	 * or too long keys, bucket names that are not host/path safe. */
	CU_ASSERT_PTR_NULL(path_of(0, "bkt", "."));
	CU_ASSERT_PTR_NULL(path_of(0, "bkt", "a/../b"));
	CU_ASSERT_PTR_NULL(path_of(0, "bkt", "a/./b"));
	CU_ASSERT_PTR_NULL(path_of(0, "bkt", "a/.."));
	CU_ASSERT_PTR_NULL(path_of(0, "bkt", ""));
	CU_ASSERT_PTR_NULL(path_of(0, "", "k"));
	CU_ASSERT_PTR_NULL(path_of(0, NULL, "k"));
	CU_ASSERT_PTR_NULL(path_of(0, "a/b", "k"));
	CU_ASSERT_PTR_NULL(path_of(0, "a b", "k"));

	char key[S3_MAX_KEY_LEN + 2];
	memset(key, 'k', sizeof(key));
	key[S3_MAX_KEY_LEN] = '\0';
	char *p = path_of(0, "b", key);
	CU_ASSERT_PTR_NOT_NULL(p);
	CU_ASSERT_EQUAL(p ? strlen(p) : 0, S3_MAX_KEY_LEN + 3);
	free(p);
	key[S3_MAX_KEY_LEN] = 'k';
	key[S3_MAX_KEY_LEN + 1] = '\0';
	CU_ASSERT_PTR_NULL(path_of(0, "b", key));

	/* A failed build leaves what was in the buffer alone. */
	struct buf b;
	buf_init(&b, 0);
	CU_ASSERT_EQUAL(buf_append_str(&b, "keep"), KL_OK);
	CU_ASSERT_EQUAL(s3_build_path(&b, 0, "bkt", "a/../b"), KL_EINVAL);
	CU_ASSERT_STRING_EQUAL(b.data, "keep");
	buf_done(&b);
}

static void test_query_building(void)
{
	struct buf q;

	buf_init(&q, 0);
	CU_ASSERT_EQUAL(s3_query_add(&q, "prefix", "a b/c=d&e+f~g"), KL_OK);
	CU_ASSERT_EQUAL(s3_query_add(&q, "uploads", NULL), KL_OK);
	CU_ASSERT_EQUAL(s3_query_add(&q, "x y", "\xc3\xa9"), KL_OK);
	CU_ASSERT_STRING_EQUAL(q.data, "prefix=a%20b%2Fc%3Dd%26e%2Bf~g&uploads=&x%20y=%C3%A9");
	buf_done(&q);

	buf_init(&q, 0);
	CU_ASSERT_EQUAL(s3_build_list_query(&q, NULL), KL_OK);
	CU_ASSERT_STRING_EQUAL(q.data, "encoding-type=url&list-type=2");
	buf_done(&q);

	struct s3_list_opts o = {
		.prefix = "dt=2026/a b", .delimiter = "/", .continuation_token = "1ab+/cd==",
		.start_after = "dt=2026/a b/k~1", .max_keys = 7,
	};
	buf_init(&q, 0);
	CU_ASSERT_EQUAL(s3_build_list_query(&q, &o), KL_OK);
	CU_ASSERT_STRING_EQUAL(q.data,
			       "continuation-token=1ab%2B%2Fcd%3D%3D&delimiter=%2F&encoding-type=url"
			       "&list-type=2&max-keys=7&prefix=dt%3D2026%2Fa%20b"
			       "&start-after=dt%3D2026%2Fa%20b%2Fk~1");
	buf_done(&q);

	o = (struct s3_list_opts){ .max_keys = -1 };
	buf_init(&q, 0);
	CU_ASSERT_EQUAL(s3_build_list_query(&q, &o), KL_EINVAL);
	buf_done(&q);
}

/* ------------------------------------------------------------ XML in */

/* A page as AWS sends it: its namespace, encoding-type=url in effect
 * (space as '+', '+' as %2B), a top-level Prefix that is not a common
 * prefix, entities in ETags. */
static const char list_aws[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	"<Name>bkt</Name><Prefix>logs%2F</Prefix><KeyCount>4</KeyCount><MaxKeys>3</MaxKeys>"
	"<Delimiter>%2F</Delimiter><EncodingType>url</EncodingType>"
	"<IsTruncated>true</IsTruncated>"
	"<NextContinuationToken>1w41l63U+/tok==</NextContinuationToken>"
	"<Contents><Key>logs%2Fa+b%2Bc.json</Key>"
	"<LastModified>2026-11-21T09:00:00.000Z</LastModified>"
	"<ETag>&quot;9e107d9d372bb6826bd81d3542a419d6&quot;</ETag>"
	"<Size>43</Size><StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>logs%2Fdonn%C3%A9es</Key>"
	"<LastModified>2026-11-21T09:00:01.000Z</LastModified>"
	"<ETag>&quot;abc-2&quot;</ETag><Size>10485760</Size>"
	"<Owner><ID>x</ID><DisplayName>y</DisplayName></Owner></Contents>"
	"<CommonPrefixes><Prefix>logs%2Fdt%3D2026-11-21%2F</Prefix></CommonPrefixes>"
	"<CommonPrefixes><Prefix>logs%2Fsp+ace%2F</Prefix></CommonPrefixes>"
	"</ListBucketResult>";

/* The same kind of page from s3rver: another namespace, keys raw. */
static const char list_s3rver[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"http://doc.s3.amazonaws.com/2006-03-01/\">"
	"<Name>bkt</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>"
	"<IsTruncated>false</IsTruncated>"
	"<Contents><Key>a+b c&amp;d.txt</Key><LastModified>2026-11-21T09:00:00.000Z</LastModified>"
	"<ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag><Size>0</Size>"
	"<StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>z</Key><Size>18446744073709551615</Size></Contents>"
	"</ListBucketResult>";

static void test_list_parse_aws(void)
{
	struct s3_list_result r;

	CU_ASSERT_EQUAL_FATAL(s3_parse_list_result(list_aws, strlen(list_aws), &r), KL_OK);
	CU_ASSERT_TRUE(r.is_truncated);
	CU_ASSERT_STRING_EQUAL(r.next_continuation_token, "1w41l63U+/tok==");
	CU_ASSERT_EQUAL_FATAL(r.n_entries, 2);
	CU_ASSERT_STRING_EQUAL(r.entries[0].key, "logs/a b+c.json");
	CU_ASSERT_EQUAL(r.entries[0].size, 43);
	CU_ASSERT_STRING_EQUAL(r.entries[0].etag, "\"9e107d9d372bb6826bd81d3542a419d6\"");
	CU_ASSERT_STRING_EQUAL(r.entries[0].last_modified, "2026-11-21T09:00:00.000Z");
	CU_ASSERT_STRING_EQUAL(r.entries[1].key, "logs/donn\xc3\xa9" "es");
	CU_ASSERT_EQUAL(r.entries[1].size, 10485760);
	CU_ASSERT_STRING_EQUAL(r.entries[1].etag, "\"abc-2\"");
	CU_ASSERT_EQUAL_FATAL(r.n_common_prefixes, 2);
	CU_ASSERT_STRING_EQUAL(r.common_prefixes[0], "logs/dt=2026-11-21/");
	CU_ASSERT_STRING_EQUAL(r.common_prefixes[1], "logs/sp ace/");
	s3_list_result_done(&r);
	CU_ASSERT_EQUAL(r.n_entries, 0);
	s3_list_result_done(&r);   /* twice is harmless */
}

static void test_list_parse_s3rver(void)
{
	struct s3_list_result r;

	CU_ASSERT_EQUAL_FATAL(s3_parse_list_result(list_s3rver, strlen(list_s3rver), &r), KL_OK);
	CU_ASSERT_FALSE(r.is_truncated);
	CU_ASSERT_PTR_NULL(r.next_continuation_token);
	CU_ASSERT_EQUAL_FATAL(r.n_entries, 2);
	/* No EncodingType element: '+' and ' ' are literal. */
	CU_ASSERT_STRING_EQUAL(r.entries[0].key, "a+b c&d.txt");
	CU_ASSERT_EQUAL(r.entries[0].size, 0);
	CU_ASSERT_STRING_EQUAL(r.entries[0].etag, "\"d41d8cd98f00b204e9800998ecf8427e\"");
	CU_ASSERT_STRING_EQUAL(r.entries[1].key, "z");
	CU_ASSERT_EQUAL(r.entries[1].size, UINT64_MAX);
	CU_ASSERT_STRING_EQUAL(r.entries[1].etag, "");
	CU_ASSERT_EQUAL(r.n_common_prefixes, 0);
	s3_list_result_done(&r);

	/* An empty bucket, namespace given with a prefix instead. */
	static const char empty[] =
		"<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<s3:Name>b</s3:Name><s3:KeyCount>0</s3:KeyCount>"
		"<s3:IsTruncated>false</s3:IsTruncated></s3:ListBucketResult>";
	CU_ASSERT_EQUAL_FATAL(s3_parse_list_result(empty, strlen(empty), &r), KL_OK);
	CU_ASSERT_EQUAL(r.n_entries, 0);
	CU_ASSERT_EQUAL(r.n_common_prefixes, 0);
	CU_ASSERT_FALSE(r.is_truncated);
	s3_list_result_done(&r);
}

static void test_list_parse_many(void)
{
	struct s3_list_result r;
	struct buf x;

	/* More entries than the first allocation holds. */
	buf_init(&x, 0);
	buf_append_str(&x, "<ListBucketResult><IsTruncated>false</IsTruncated>");
	for (int i = 0; i < 1000; i++)
		buf_printf(&x, "<Contents><Key>k/%04d</Key><Size>%d</Size></Contents>", i, i);
	for (int i = 0; i < 40; i++)
		buf_printf(&x, "<CommonPrefixes><Prefix>p%d/</Prefix></CommonPrefixes>", i);
	buf_append_str(&x, "</ListBucketResult>");
	CU_ASSERT_EQUAL_FATAL(s3_parse_list_result(x.data, x.len, &r), KL_OK);
	CU_ASSERT_EQUAL_FATAL(r.n_entries, 1000);
	CU_ASSERT_STRING_EQUAL(r.entries[999].key, "k/0999");
	CU_ASSERT_EQUAL(r.entries[999].size, 999);
	CU_ASSERT_EQUAL_FATAL(r.n_common_prefixes, 40);
	CU_ASSERT_STRING_EQUAL(r.common_prefixes[39], "p39/");
	s3_list_result_done(&r);
	buf_done(&x);
}

static void test_list_parse_errors(void)
{
	static const char *const bad[] = {
		/* not a listing */
		"<Error><Code>NoSuchBucket</Code></Error>",
		"",
		/* truncated but impossible to continue */
		"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
		"<ListBucketResult><IsTruncated>true</IsTruncated>"
		"<NextContinuationToken></NextContinuationToken></ListBucketResult>",
		/* an entry without a key, a bad size, a bad entity */
		"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
		"<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
		"<ListBucketResult><Contents><Key>a</Key><Size>12x</Size></Contents></ListBucketResult>",
		"<ListBucketResult><Contents><Key>a&bogus;</Key></Contents></ListBucketResult>",
		/* a bad percent escape under encoding-type=url */
		"<ListBucketResult><EncodingType>url</EncodingType>"
		"<Contents><Key>a%2</Key></Contents></ListBucketResult>",
		"<ListBucketResult><EncodingType>url</EncodingType>"
		"<CommonPrefixes><Prefix>%zz</Prefix></CommonPrefixes></ListBucketResult>",
		"<ListBucketResult><CommonPrefixes></CommonPrefixes></ListBucketResult>",
		NULL
	};

	for (int i = 0; bad[i]; i++) {
		struct s3_list_result r = { .n_entries = 12345 };
		enum kl_err err = s3_parse_list_result(bad[i], strlen(bad[i]), &r);
		CU_ASSERT_EQUAL(err, KL_EPARSE);
		if (err != KL_EPARSE)
			fprintf(stderr, "\n  case %d: %s\n", i, kl_strerror(err));
		/* ret_res untouched on failure */
		CU_ASSERT_EQUAL(r.n_entries, 12345);
		if (err == KL_OK)
			s3_list_result_done(&r);
	}
}

static void test_initiate_parse(void)
{
	static const char aws[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<Bucket>bkt</Bucket><Key>a/b</Key>"
		"<UploadId>VXBsb2FkIElE+Zm9y/IDY5&amp;.x</UploadId>"
		"</InitiateMultipartUploadResult>";
	static const char s3rver[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>k</Key>"
		"<UploadId>0f1e2d3c4b5a69788796a5b4c3d2e1f0</UploadId>"
		"</InitiateMultipartUploadResult>";
	static const char *const bad[] = {
		"<InitiateMultipartUploadResult><Bucket>b</Bucket></InitiateMultipartUploadResult>",
		"<InitiateMultipartUploadResult><UploadId></UploadId></InitiateMultipartUploadResult>",
		"<InitiateMultipartUploadResult><UploadId/></InitiateMultipartUploadResult>",
		"<Error><Code>AccessDenied</Code><UploadId>x</UploadId></Error>",
		"not xml",
		NULL
	};
	char *id = NULL;

	CU_ASSERT_EQUAL_FATAL(s3_parse_initiate_result(aws, strlen(aws), &id), KL_OK);
	CU_ASSERT_STRING_EQUAL(id, "VXBsb2FkIElE+Zm9y/IDY5&.x");
	free(id);
	id = NULL;
	CU_ASSERT_EQUAL_FATAL(s3_parse_initiate_result(s3rver, strlen(s3rver), &id), KL_OK);
	CU_ASSERT_STRING_EQUAL(id, "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
	free(id);
	for (int i = 0; bad[i]; i++) {
		id = (char *)"untouched";
		CU_ASSERT_EQUAL(s3_parse_initiate_result(bad[i], strlen(bad[i]), &id), KL_EPARSE);
		CU_ASSERT_STRING_EQUAL(id, "untouched");
	}
}

static void test_complete_parse(void)
{
	static const char aws[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<Location>https://bkt.s3.amazonaws.com/k</Location><Bucket>bkt</Bucket>"
		"<Key>k</Key><ETag>&quot;3858f62230ac3c915f300c664312c11f-9&quot;</ETag>"
		"</CompleteMultipartUploadResult>";
	/* moto calls the root element ...Response. */
	static const char moto[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<CompleteMultipartUploadResponse xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<Location>http://dbg.s3.amazonaws.com/mp</Location><Bucket>dbg</Bucket><Key>mp</Key>"
		"<ETag>\"62109206880d38a4010a98e11243924a-1\"</ETag></CompleteMultipartUploadResponse>";
	static const char s3rver[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<CompleteMultipartUploadResult><Location>http://127.0.0.1/b/k</Location>"
		"<Bucket>b</Bucket><Key>k</Key><ETag>\"0123456789abcdef0123456789abcdef\"</ETag>"
		"</CompleteMultipartUploadResult>";
	/* S3 can answer 200 and then fail: the error is in the body. */
	static const char err_internal[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n"
		"<Error><Code>InternalError</Code><Message>We encountered an internal error. "
		"Please try again.</Message><RequestId>656c76696e6727732072657175657374</RequestId>"
		"<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>";
	static const char err_slow[] = "<Error><Code>SlowDown</Code></Error>";
	static const char err_part[] =
		"<Error><Code>InvalidPart</Code><Message>One or more of the specified parts "
		"could not be found.</Message></Error>";
	char etag[S3_ETAG_MAX];
	struct kl_errinfo info;

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(s3_parse_complete_result(aws, strlen(aws), etag, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(etag, "\"3858f62230ac3c915f300c664312c11f-9\"");
	CU_ASSERT_EQUAL(s3_parse_complete_result(s3rver, strlen(s3rver), etag, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(etag, "\"0123456789abcdef0123456789abcdef\"");
	CU_ASSERT_EQUAL(s3_parse_complete_result(moto, strlen(moto), etag, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(etag, "\"62109206880d38a4010a98e11243924a-1\"");

	strcpy(etag, "untouched");
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(s3_parse_complete_result(err_internal, strlen(err_internal), etag, &info),
			KL_ESERVER);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InternalError");
	CU_ASSERT_STRING_EQUAL(info.message, "We encountered an internal error. Please try again.");
	CU_ASSERT_STRING_EQUAL(info.request_id, "656c76696e6727732072657175657374");
	CU_ASSERT_STRING_EQUAL(etag, "untouched");
	CU_ASSERT_EQUAL(s3_parse_complete_result(err_slow, strlen(err_slow), etag, &info),
			KL_ETHROTTLED);
	CU_ASSERT_EQUAL(s3_parse_complete_result(err_part, strlen(err_part), etag, &info), KL_EAWS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InvalidPart");
	CU_ASSERT_FALSE(kl_err_retryable(KL_EAWS));
	CU_ASSERT_EQUAL(s3_parse_complete_result("", 0, etag, &info), KL_EPARSE);
	CU_ASSERT_EQUAL(s3_parse_complete_result(NULL, 0, etag, NULL), KL_EPARSE);
	CU_ASSERT_STRING_EQUAL(etag, "untouched");
}

/* ------------------------------------------------------------ XML out */

static void test_complete_body(void)
{
	struct s3_part parts[3] = {
		{ 1, "\"a54357aff0632cce46d942af68356b38\"" },
		{ 2, "\"0c78aef83f66abc1fa1e8477f296d394\"" },
		{ 10000, "x<&>'y" },
	};
	struct buf b;

	buf_init(&b, 0);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, parts, 3), KL_OK);
	CU_ASSERT_STRING_EQUAL(b.data,
			       "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
			       "<Part><PartNumber>1</PartNumber>"
			       "<ETag>&quot;a54357aff0632cce46d942af68356b38&quot;</ETag></Part>"
			       "<Part><PartNumber>2</PartNumber>"
			       "<ETag>&quot;0c78aef83f66abc1fa1e8477f296d394&quot;</ETag></Part>"
			       "<Part><PartNumber>10000</PartNumber>"
			       "<ETag>x&lt;&amp;&gt;&apos;y</ETag></Part>"
			       "</CompleteMultipartUpload>");
	buf_done(&b);

	/* What we send, we can read back with our own reader. */
	buf_init(&b, 0);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, parts, 2), KL_OK);
	{
		struct xml_slice part;
		size_t pos = 0;
		char *t = NULL;
		CU_ASSERT_TRUE_FATAL(xml_next(b.data, b.len, "Part", &pos, &part));
		CU_ASSERT_TRUE_FATAL(xml_next(b.data, b.len, "Part", &pos, &part));
		CU_ASSERT_EQUAL_FATAL(xml_slice_text(part, "ETag", &t), KL_OK);
		CU_ASSERT_STRING_EQUAL(t, parts[1].etag);
		free(t);
		CU_ASSERT_FALSE(xml_next(b.data, b.len, "Part", &pos, &part));
	}
	buf_done(&b);

	/* Refused before anything is sent: s3rver exits on a part it never saw. */
	struct s3_part unordered[2] = { { 2, "\"x\"" }, { 1, "\"y\"" } };
	struct s3_part dup[2] = { { 1, "\"x\"" }, { 1, "\"y\"" } };
	struct s3_part missing[2] = { { 1, "\"x\"" }, { 2, "" } };
	struct s3_part zero[1] = { { 0, "\"x\"" } };
	struct s3_part high[1] = { { 10001, "\"x\"" } };
	buf_init(&b, 0);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, unordered, 2), KL_EINVAL);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, dup, 2), KL_EINVAL);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, missing, 2), KL_EINVAL);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, zero, 1), KL_EINVAL);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, high, 1), KL_EINVAL);
	CU_ASSERT_EQUAL(s3_build_complete_body(&b, parts, 0), KL_EINVAL);
	CU_ASSERT_EQUAL(b.len, 0);
	buf_done(&b);
}

/* ------------------------------------------------------------ digests */

static void test_content_md5(void)
{
	char md5[S3_MD5_B64_LEN];
	static const char fox[] = "The quick brown fox jumps over the lazy dog";

	/* Expected values from: printf '...' | openssl dgst -md5 -binary | openssl base64 */
	CU_ASSERT_EQUAL(s3_content_md5("", 0, md5), KL_OK);
	CU_ASSERT_STRING_EQUAL(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
	CU_ASSERT_EQUAL(s3_content_md5(NULL, 0, md5), KL_OK);
	CU_ASSERT_STRING_EQUAL(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
	CU_ASSERT_EQUAL(s3_content_md5(fox, strlen(fox), md5), KL_OK);
	CU_ASSERT_STRING_EQUAL(md5, "nhB9nTcrtoJr2B01QqQZ1g==");
}

static void test_hash_file_range(void)
{
	char md5[S3_MD5_B64_LEN], sha[65];
	struct kl_errinfo info;
	int fd = pattern_file(600000);

	/*
	 * Expected values: the pattern file written with python, the range
	 * cut with it, then `openssl dgst -md5 -binary | openssl base64`
	 * and `openssl dgst -sha256`. 300000 bytes span two read chunks.
	 */
	CU_ASSERT_EQUAL(s3_hash_file_range(fd, 1000, 300000, md5, sha, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(md5, "lStxlIGeqrOebjAFZLKStw==");
	CU_ASSERT_STRING_EQUAL(sha, "207d839888bc31518bd62a7d9988705e43fe187644551f113f4e79d70f9ff63e");
	/* One read chunk exactly, at a chunk-aligned offset; MD5 only. */
	strcpy(sha, "untouched");
	CU_ASSERT_EQUAL(s3_hash_file_range(fd, 262144, 262144, md5, NULL, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(md5, "fJvwD9aDb0a407b00Y6SmA==");
	CU_ASSERT_EQUAL(s3_hash_file_range(fd, 262144, 262144, md5, sha, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(sha, "d30eb241f95e7c37c033251a78eae1610ac9b02dc99625442158180d35818c1b");
	/* Empty range: the digests of nothing. */
	CU_ASSERT_EQUAL(s3_hash_file_range(fd, 600000, 0, md5, sha, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
	CU_ASSERT_STRING_EQUAL(sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	/* The file offset is not moved by hashing (pread). */
	CU_ASSERT_EQUAL(lseek(fd, 0, SEEK_CUR), 600000);

	/* A range past the end: KL_EIO, outputs untouched. */
	strcpy(md5, "untouched");
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(s3_hash_file_range(fd, 599999, 2, md5, sha, &info), KL_EIO);
	CU_ASSERT_STRING_EQUAL(md5, "untouched");
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "before the end of the range"));
	close(fd);
	CU_ASSERT_EQUAL(s3_hash_file_range(fd, 0, 1, md5, NULL, &info), KL_EIO);
	CU_ASSERT_EQUAL(s3_hash_file_range(-1, 0, 1, md5, NULL, NULL), KL_EIO);
	CU_ASSERT_STRING_EQUAL(md5, "untouched");
}

/* ------------------------------------------------------------ error classes */

static void test_classify_s3_codes(void)
{
	static const struct {
		long status;
		const char *code;
		enum kl_err want;
	} cases[] = {
		{ 404, "NoSuchKey", KL_ENOTFOUND },
		{ 404, "NoSuchBucket", KL_ENOTFOUND },
		{ 404, "NoSuchUpload", KL_ENOTFOUND },
		{ 404, "NotFound", KL_ENOTFOUND },      /* HEAD: no body, aws.c names it */
		{ 404, "", KL_ENOTFOUND },
		{ 503, "SlowDown", KL_ETHROTTLED },
		{ 503, "ServiceUnavailable", KL_ESERVER },
		{ 500, "InternalError", KL_ESERVER },
		{ 200, "InternalError", KL_OK },        /* the status wins for 2xx */
		{ 400, "RequestTimeout", KL_ETIMEOUT },
		{ 403, "AccessDenied", KL_EAUTH },
		{ 403, "SignatureDoesNotMatch", KL_EAUTH },
		{ 403, "InvalidAccessKeyId", KL_EAUTH },
		{ 403, "RequestTimeTooSkewed", KL_EAUTH },
		{ 400, "ExpiredToken", KL_EEXPIRED },
		{ 412, "PreconditionFailed", KL_ECONFLICT },
		{ 409, "BucketAlreadyOwnedByYou", KL_EEXISTS },
		{ 409, "BucketAlreadyExists", KL_EEXISTS },
		{ 400, "BadDigest", KL_EAWS },          /* body corrupted: final */
		{ 400, "InvalidDigest", KL_EAWS },
		{ 400, "InvalidPart", KL_EAWS },
		{ 400, "InvalidPartOrder", KL_EAWS },
		{ 400, "EntityTooSmall", KL_EAWS },
		{ 400, "EntityTooLarge", KL_EAWS },
		{ 400, "InvalidArgument", KL_EAWS },
		{ 400, "MalformedXML", KL_EAWS },
		{ 405, "MethodNotAllowed", KL_EAWS },   /* s3rver's AbortMultipartUpload */
		{ 501, "NotImplemented", KL_ESERVER },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum kl_err got = aws_classify(cases[i].status, cases[i].code);
		CU_ASSERT_EQUAL(got, cases[i].want);
		if (got != cases[i].want)
			fprintf(stderr, "\n  %ld %s: got %s, want %s\n", cases[i].status,
				cases[i].code, kl_strerror(got), kl_strerror(cases[i].want));
	}
	CU_ASSERT_TRUE(kl_err_retryable(aws_classify(503, "SlowDown")));
	CU_ASSERT_TRUE(kl_err_retryable(aws_classify(500, "InternalError")));
	CU_ASSERT_FALSE(kl_err_retryable(aws_classify(404, "NoSuchKey")));
	CU_ASSERT_FALSE(kl_err_retryable(aws_classify(400, "BadDigest")));
}

/* ------------------------------------------------------------ xml.c */

static char *text_of(const char *doc, const char *name)
{
	char *t = NULL;

	if (xml_text(doc, strlen(doc), name, &t) != KL_OK)
		return NULL;
	return t;
}

static void check_text(const char *doc, const char *name, const char *want)
{
	char *t = text_of(doc, name);

	CU_ASSERT_PTR_NOT_NULL(t);
	if (t) {
		CU_ASSERT_STRING_EQUAL(t, want);
		if (strcmp(t, want) != 0)
			fprintf(stderr, "\n  <%s>: got '%s', want '%s'\n", name, t, want);
	}
	free(t);
}

static void test_xml_nested_same_name(void)
{
	static const char doc[] =
		"<R><Item><Item><Item>deep</Item></Item><Name>outer</Name></Item>"
		"<Item><Name>second</Name></Item></R>";
	struct xml_slice s;
	size_t pos = 0;
	char *t = NULL;

	/* The first Item runs to its own end tag, past the nested ones. */
	CU_ASSERT_TRUE_FATAL(xml_next(doc, strlen(doc), "Item", &pos, &s));
	CU_ASSERT_EQUAL(s.len, strlen("<Item><Item>deep</Item></Item><Name>outer</Name>"));
	CU_ASSERT_EQUAL(xml_slice_text(s, "Name", &t), KL_OK);
	CU_ASSERT_STRING_EQUAL(t, "outer");
	free(t);
	CU_ASSERT_TRUE_FATAL(xml_next(doc, strlen(doc), "Item", &pos, &s));
	CU_ASSERT_EQUAL(xml_slice_text(s, "Name", &t), KL_OK);
	CU_ASSERT_STRING_EQUAL(t, "second");
	free(t);
	CU_ASSERT_FALSE(xml_next(doc, strlen(doc), "Item", &pos, &s));

	/* Names that share a prefix are different elements. */
	check_text("<R><KeyCount>3</KeyCount><Key>k</Key></R>", "Key", "k");
	check_text("<R><Keys>no</Keys><Key>k</Key></R>", "Key", "k");
	CU_ASSERT_PTR_NULL(text_of("<R><KeyCount>3</KeyCount></R>", "Key"));
	/* A self-closing same-name element inside does not deepen nesting. */
	check_text("<R><Item><Item/><V>1</V></Item><V>2</V></R>", "V", "1");
	{
		static const char d[] = "<R><Item>a<Item/>b</Item>tail</R>";
		pos = 0;
		CU_ASSERT_TRUE_FATAL(xml_next(d, strlen(d), "Item", &pos, &s));
		CU_ASSERT_EQUAL(s.len, strlen("a<Item/>b"));
	}
	/* Unclosed: not found rather than read past the end. */
	CU_ASSERT_PTR_NULL(text_of("<R><Key>open", "Key"));
	CU_ASSERT_PTR_NULL(text_of("<R><Key>open</Ke", "Key"));
	CU_ASSERT_PTR_NULL(text_of("<R><Key", "Key"));
}

static void test_xml_entities(void)
{
	check_text("<a>&lt;&gt;&amp;&quot;&apos;</a>", "a", "<>&\"'");
	check_text("<a>x&amp;lt;y</a>", "a", "x&lt;y");    /* decoded once only */
	check_text("<a>&#65;&#x42;&#X43;</a>", "a", "ABC");
	check_text("<a>&#233;&#x20AC;&#x1F600;</a>", "a", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	check_text("<a>caf\xc3\xa9</a>", "a", "caf\xc3\xa9");
	check_text("<a></a>", "a", "");

	static const char *const bad[] = {
		"<a>&bogus;</a>", "<a>& </a>", "<a>&amp</a>", "<a>&#0;</a>", "<a>&#xD800;</a>",
		"<a>&#x110000;</a>", "<a>&#12x;</a>", "<a>&#;</a>", NULL
	};
	for (int i = 0; bad[i]; i++) {
		char *t = NULL;
		CU_ASSERT_EQUAL(xml_text(bad[i], strlen(bad[i]), "a", &t), KL_EPARSE);
		CU_ASSERT_PTR_NULL(t);
	}

	struct buf b;
	buf_init(&b, 0);
	CU_ASSERT_EQUAL(xml_escape(&b, "a<b>&\"c'\xc3\xa9"), KL_OK);
	CU_ASSERT_STRING_EQUAL(b.data, "a&lt;b&gt;&amp;&quot;c&apos;\xc3\xa9");
	buf_done(&b);
}

static void test_xml_self_closing(void)
{
	struct xml_slice s;
	size_t pos = 0;
	static const char doc[] = "<R><Prefix/><Other>x</Other><Prefix />y<Prefix a=\"1\"/></R>";

	check_text("<R><Prefix/><Next>n</Next></R>", "Prefix", "");
	check_text("<R><Prefix /></R>", "Prefix", "");
	check_text("<R><Prefix/><Next>n</Next></R>", "Next", "n");
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_TRUE(xml_next(doc, strlen(doc), "Prefix", &pos, &s));
		CU_ASSERT_EQUAL(s.len, 0);
	}
	CU_ASSERT_FALSE(xml_next(doc, strlen(doc), "Prefix", &pos, &s));
}

static void test_xml_namespaces_attributes(void)
{
	/* Default namespaces (AWS vs s3rver) and prefixed names all match. */
	check_text("<R xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Key>k</Key></R>", "Key", "k");
	check_text("<R xmlns=\"http://doc.s3.amazonaws.com/2006-03-01/\"><Key>k</Key></R>", "Key", "k");
	check_text("<s3:R xmlns:s3=\"u\"><s3:Key>k</s3:Key></s3:R>", "Key", "k");
	check_text("<R><a:Key>1</a:Key></R>", "Key", "1");
	/* Attributes, with '>' and '/' inside quoted values. */
	check_text("<R><Key type=\"a>b\" x='/'>k</Key></R>", "Key", "k");
	check_text("<R><Key\n\ttype=\"x\"\n>k</Key\n></R>", "Key", "k");
	/* The XML declaration and processing instructions are not elements. */
	check_text("<?xml version=\"1.0\"?><?Key no?><R><Key>k</Key></R>", "Key", "k");
}

static void test_xml_comments_cdata(void)
{
	/* Markup inside comments is not markup. */
	check_text("<R><!-- <Key>commented</Key> --><Key>real</Key></R>", "Key", "real");
	check_text("<R><Key>a<!-- </Key> -->b</Key></R>", "Key", "ab");
	check_text("<R><Key>a<!-- & -->b</Key></R>", "Key", "ab");
	/* CDATA content is literal text. */
	check_text("<R><Key><![CDATA[a<b>&amp;</Key>]]></Key></R>", "Key", "a<b>&amp;</Key>");
	check_text("<R><Key>x<![CDATA[]]>y&amp;</Key></R>", "Key", "xy&");
	/* Unterminated comment: nothing after it is found. */
	CU_ASSERT_PTR_NULL(text_of("<R><!-- <Key>k</Key></R>", "Key"));
}

/* ------------------------------------------------------------ on the wire */

/* What the fake S3 answers; requests are recorded by loophttp. */
struct fake_s3 {
	int fail_part;             /* UploadPart of this number gets 403 */
	int complete_errors;       /* this many Completes get 200 + InternalError */
	const char *complete_error_code;
	int abort_status;          /* 204, 404 (NoSuchUpload), 405 or 403 */
	int head_status;           /* 200 or 404 */
	const char *get_body;
	const char *list_body;
};

static int query_has(const char *target, const char *name)
{
	const char *q = strchr(target, '?');
	char *v = q ? loophttp_form_value(q + 1, name, NULL) : NULL;

	free(v);
	return v != NULL;
}

static void fake_s3_handler(void *arg, const struct loophttp_request *req,
			    struct loophttp_response *resp)
{
	struct fake_s3 *f = arg;
	const char *m = req->method;

	if (strcmp(m, "POST") == 0 && query_has(req->target, "uploads")) {
		loophttp_set_body(resp, "application/xml",
				  "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				  "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
				  "<Bucket>bkt</Bucket><Key>k</Key><UploadId>UP+ID/1=</UploadId>"
				  "</InitiateMultipartUploadResult>");
	} else if (strcmp(m, "PUT") == 0 && query_has(req->target, "partNumber")) {
		char *n = loophttp_form_value(strchr(req->target, '?') + 1, "partNumber", NULL);
		if (n && atoi(n) == f->fail_part) {
			resp->status = 403;
			loophttp_set_body(resp, "application/xml",
					  "<Error><Code>AccessDenied</Code><Message>no</Message></Error>");
		} else {
			loophttp_add_header(resp, "ETag", "\"etag-%s\"", n ? n : "?");
		}
		free(n);
	} else if (strcmp(m, "POST") == 0 && query_has(req->target, "uploadId")) {
		if (f->complete_errors > 0) {
			f->complete_errors--;
			loophttp_set_body(resp, "application/xml", f->complete_error_code);
		} else {
			loophttp_set_body(resp, "application/xml",
					  "<CompleteMultipartUploadResult><Location>x</Location>"
					  "<ETag>&quot;final-3&quot;</ETag></CompleteMultipartUploadResult>");
		}
	} else if (strcmp(m, "DELETE") == 0 && query_has(req->target, "uploadId")) {
		resp->status = f->abort_status;
		if (f->abort_status == 405)
			loophttp_set_body(resp, "application/xml",
					  "<Error><Code>MethodNotAllowed</Code><Message>The specified method "
					  "is not allowed against this resource.</Message>"
					  "<Method>DELETE</Method><ResourceType>UPLOADID</ResourceType></Error>");
		else if (f->abort_status == 404)
			loophttp_set_body(resp, "application/xml",
					  "<Error><Code>NoSuchUpload</Code></Error>");
		else if (f->abort_status == 403)
			loophttp_set_body(resp, "application/xml",
					  "<Error><Code>AccessDenied</Code></Error>");
	} else if (strcmp(m, "PUT") == 0) {
		loophttp_add_header(resp, "ETag", "\"put-etag\"");
	} else if (strcmp(m, "HEAD") == 0) {
		resp->status = f->head_status;
		if (f->head_status == 200) {
			loophttp_set_body(resp, NULL, "0123456789");  /* Content-Length: 10 */
			loophttp_add_header(resp, "ETag", "\"head-etag\"");
			loophttp_add_header(resp, "Content-Type", "application/x-ndjson");
			loophttp_add_header(resp, "Content-Encoding", "gzip");
			loophttp_add_header(resp, "Last-Modified", "Sat, 21 Nov 2026 09:00:00 GMT");
			loophttp_add_header(resp, "x-amz-meta-Shard", "shardId-0001");
			loophttp_add_header(resp, "x-amz-meta-esn", "49590338271490256608559692538361571095921575989136588898");
		}
	} else if (strcmp(m, "GET") == 0 && query_has(req->target, "list-type")) {
		loophttp_set_body(resp, "application/xml", f->list_body);
	} else if (strcmp(m, "GET") == 0) {
		loophttp_set_body(resp, "text/plain", f->get_body);
		loophttp_add_header(resp, "ETag", "\"get-etag\"");
	} else if (strcmp(m, "DELETE") == 0) {
		resp->status = 204;
	} else {
		resp->status = 400;
	}
}

struct wire {
	struct loophttp *srv;
	struct creds_chain *creds;
	struct aws_client c;
	struct fake_s3 fake;
};

static void wire_start(struct wire *w, int virtual_host)
{
	struct creds_config cc = {
		.access_key_id = "AKIDEXAMPLE",
		.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		.disable_imds = 1,
	};
	char endpoint[64];

	memset(w, 0, sizeof(*w));
	w->fake.abort_status = 204;
	w->fake.head_status = 200;
	w->fake.get_body = "hello, world";
	CU_ASSERT_EQUAL_FATAL(loophttp_start(fake_s3_handler, &w->fake, &w->srv), 0);
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cc, &w->creds), KL_OK);
	/* "bkt.localhost" resolves to loopback in curl itself. */
	snprintf(endpoint, sizeof(endpoint), "http://localhost:%u", loophttp_port(w->srv));
	struct aws_client_config cfg = {
		.service = "s3", .region = "us-east-1", .endpoint = endpoint,
		.s3_virtual_host = virtual_host,
		.retry = { .max_attempts = 2, .base_delay_ms = 1, .max_delay_ms = 2 },
	};
	CU_ASSERT_EQUAL_FATAL(aws_client_init(&w->c, &cfg, w->creds), KL_OK);
}

static void wire_stop(struct wire *w)
{
	aws_client_done(&w->c);
	creds_chain_free(w->creds);
	loophttp_stop(w->srv);
}

static const struct loophttp_request *last_req(struct wire *w)
{
	size_t n = loophttp_count(w->srv);

	return n ? loophttp_request(w->srv, n - 1) : NULL;
}

static void check_header(const struct loophttp_request *r, const char *name, const char *want)
{
	const char *v = loophttp_header(r, name);

	if (!want) {
		CU_ASSERT_PTR_NULL(v);
		return;
	}
	CU_ASSERT_PTR_NOT_NULL(v);
	if (v) {
		CU_ASSERT_STRING_EQUAL(v, want);
		if (strcmp(v, want) != 0)
			fprintf(stderr, "\n  %s: got '%s', want '%s'\n", name, v, want);
	}
}

static void test_wire_put_memory(void)
{
	static const char fox[] = "The quick brown fox jumps over the lazy dog";
	const struct http_header meta[] = { { "shard", "shardId-0001" }, { "Esn-Last", "42" } };
	struct s3_put_opts o = {
		.content_type = "application/x-ndjson", .content_encoding = "gzip",
		.metadata = meta, .n_metadata = 2, .storage_class = "STANDARD_IA",
	};
	struct s3_put_result res;
	struct kl_errinfo info;
	struct wire w;

	wire_start(&w, 0);
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "bkt", "dt=2026-11-21/a b+\xc3\xa9.json.gz", fox,
				      strlen(fox), &o, &res, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(res.etag, "\"put-etag\"");
	CU_ASSERT_STRING_EQUAL(res.content_md5, "nhB9nTcrtoJr2B01QqQZ1g==");
	CU_ASSERT_EQUAL(res.n_parts, 0);
	const struct loophttp_request *r = last_req(&w);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->method, "PUT");
	CU_ASSERT_STRING_EQUAL(r->target, "/bkt/dt%3D2026-11-21/a%20b%2B%C3%A9.json.gz");
	check_header(r, "Content-MD5", "nhB9nTcrtoJr2B01QqQZ1g==");
	check_header(r, "Content-Type", "application/x-ndjson");
	check_header(r, "Content-Encoding", "gzip");
	check_header(r, "Content-Length", "43");
	check_header(r, "x-amz-meta-shard", "shardId-0001");
	check_header(r, "x-amz-meta-Esn-Last", "42");
	check_header(r, "x-amz-storage-class", "STANDARD_IA");
	/* echo -n 'The quick brown fox jumps over the lazy dog' | openssl dgst -sha256 */
	check_header(r, "x-amz-content-sha256",
		     "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
	check_header(r, "Transfer-Encoding", NULL);
	{
		char host[64];
		const char *auth = loophttp_header(r, "Authorization");
		snprintf(host, sizeof(host), "localhost:%u", loophttp_port(w.srv));
		check_header(r, "Host", host);
		/* Content-MD5 and the metadata are signed, not just sent. */
		CU_ASSERT_PTR_NOT_NULL_FATAL(auth);
		CU_ASSERT_PTR_NOT_NULL(strstr(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
		CU_ASSERT_PTR_NOT_NULL(strstr(auth, "content-md5;"));
		CU_ASSERT_PTR_NOT_NULL(strstr(auth, "x-amz-meta-shard"));
		CU_ASSERT_PTR_NOT_NULL(strstr(auth, "x-amz-storage-class"));
	}
	CU_ASSERT_EQUAL(r->body_len, 43);
	CU_ASSERT_EQUAL(memcmp(r->body, fox, 43), 0);

	/* An empty object still carries the MD5 of nothing. */
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "bkt", "empty", NULL, 0, NULL, &res, &info), KL_OK);
	r = last_req(&w);
	check_header(r, "Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==");
	check_header(r, "Content-Length", "0");
	check_header(r, "Content-Type", NULL);

	/* Header injection and bad metadata are refused before sending. */
	size_t before = loophttp_count(w.srv);
	struct s3_put_opts evil = { .content_type = "text/plain\r\nX-Evil: 1" };
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "bkt", "k", "x", 1, &evil, &res, &info), KL_EINVAL);
	const struct http_header bad_meta[] = { { "a b", "v" } };
	struct s3_put_opts bad = { .metadata = bad_meta, .n_metadata = 1 };
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "bkt", "k", "x", 1, &bad, &res, &info), KL_EINVAL);
	const struct http_header bad_val[] = { { "ok", "line\nbreak" } };
	bad.metadata = bad_val;
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "bkt", "k", "x", 1, &bad, &res, &info), KL_EINVAL);
	bad.n_metadata = S3_MAX_METADATA + 1;
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "bkt", "k", "x", 1, &bad, &res, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "bkt", "a/../b", "x", 1, NULL, &res, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), before);
	wire_stop(&w);
}

static void test_wire_put_file(void)
{
	struct s3_put_opts unsigned_opts = { .unsigned_payload = 1 };
	struct s3_put_result res;
	struct kl_errinfo info;
	struct wire w;
	int fd = pattern_file(600000);

	wire_start(&w, 0);
	/* Signed (the default): the payload hash is the range's SHA-256. */
	CU_ASSERT_EQUAL(s3_put_object_file(&w.c, "bkt", "spool/part", fd, 1000, 300000, NULL,
					   &res, &info), KL_OK);
	const struct loophttp_request *r = last_req(&w);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->target, "/bkt/spool/part");
	check_header(r, "Content-MD5", "lStxlIGeqrOebjAFZLKStw==");
	check_header(r, "Content-Length", "300000");
	check_header(r, "x-amz-content-sha256",
		     "207d839888bc31518bd62a7d9988705e43fe187644551f113f4e79d70f9ff63e");
	CU_ASSERT_EQUAL_FATAL(r->body_len, 300000);
	int same = 1;
	for (size_t i = 0; i < 300000; i++)
		if ((uint8_t)r->body[i] != pattern_byte(1000 + i)) {
			same = 0;
			break;
		}
	CU_ASSERT_TRUE(same);
	CU_ASSERT_STRING_EQUAL(res.content_md5, "lStxlIGeqrOebjAFZLKStw==");

	/* Unsigned payload: same MD5, UNSIGNED-PAYLOAD, same bytes. */
	CU_ASSERT_EQUAL(s3_put_object_file(&w.c, "bkt", "spool/part", fd, 262144, 262144,
					   &unsigned_opts, &res, &info), KL_OK);
	r = last_req(&w);
	check_header(r, "Content-MD5", "fJvwD9aDb0a407b00Y6SmA==");
	check_header(r, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
	CU_ASSERT_EQUAL(r->body_len, 262144);

	/* A range past the end of the file fails before sending. */
	size_t before = loophttp_count(w.srv);
	CU_ASSERT_EQUAL(s3_put_object_file(&w.c, "bkt", "k", fd, 599000, 2000, NULL, &res, &info),
			KL_EIO);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), before);
	wire_stop(&w);
	close(fd);
}

static void test_wire_virtual_host(void)
{
	struct s3_put_result res;
	struct kl_errinfo info;
	struct wire w;
	char host[64];

	wire_start(&w, 1);
	CU_ASSERT_EQUAL(s3_put_object(&w.c, "my-bkt", "a b/c", "x", 1, NULL, &res, &info), KL_OK);
	const struct loophttp_request *r = last_req(&w);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->target, "/a%20b/c");
	snprintf(host, sizeof(host), "my-bkt.localhost:%u", loophttp_port(w.srv));
	check_header(r, "Host", host);
	wire_stop(&w);
}

static void test_wire_multipart(void)
{
	struct s3_upload_opts o = {
		.put = { .content_type = "application/x-ndjson", .unsigned_payload = 1 },
		.multipart_threshold = 5 << 20, .part_size = 5 << 20,
	};
	const size_t len = (size_t)(10 << 20) + 12345;   /* 5 MiB + 5 MiB + 12345 */
	struct s3_put_result res;
	struct kl_errinfo info;
	struct wire w;
	int fd = pattern_file(len + 100);

	wire_start(&w, 0);
	CU_ASSERT_EQUAL_FATAL(s3_upload_file(&w.c, "bkt", "big/obj", fd, 100, len, &o, &res, &info),
			      KL_OK);
	CU_ASSERT_STRING_EQUAL(res.etag, "\"final-3\"");
	CU_ASSERT_EQUAL(res.n_parts, 3);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(w.srv), 5);

	const struct loophttp_request *r = loophttp_request(w.srv, 0);
	CU_ASSERT_STRING_EQUAL(r->method, "POST");
	CU_ASSERT_STRING_EQUAL(r->target, "/bkt/big/obj?uploads=");
	check_header(r, "Content-Type", "application/x-ndjson");
	for (int i = 1; i <= 3; i++) {
		char target[128], md5[S3_MD5_B64_LEN];
		size_t plen = i < 3 ? (size_t)5 << 20 : 12345;
		r = loophttp_request(w.srv, (size_t)i);
		snprintf(target, sizeof(target), "/bkt/big/obj?partNumber=%d&uploadId=UP%%2BID%%2F1%%3D", i);
		CU_ASSERT_STRING_EQUAL(r->method, "PUT");
		CU_ASSERT_STRING_EQUAL(r->target, target);
		CU_ASSERT_EQUAL_FATAL(r->body_len, plen);
		/* The part is the right slice of the file. */
		size_t base = 100 + (size_t)(i - 1) * (5 << 20);
		CU_ASSERT_EQUAL((uint8_t)r->body[0], pattern_byte(base));
		CU_ASSERT_EQUAL((uint8_t)r->body[plen - 1], pattern_byte(base + plen - 1));
		/* Content-MD5 is the MD5 of exactly the bytes received. */
		CU_ASSERT_EQUAL(s3_content_md5(r->body, r->body_len, md5), KL_OK);
		check_header(r, "Content-MD5", md5);
		check_header(r, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
		check_header(r, "Content-Type", NULL);
	}
	r = loophttp_request(w.srv, 4);
	CU_ASSERT_STRING_EQUAL(r->method, "POST");
	CU_ASSERT_STRING_EQUAL(r->target, "/bkt/big/obj?uploadId=UP%2BID%2F1%3D");
	CU_ASSERT_STRING_EQUAL(r->body,
			       "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
			       "<Part><PartNumber>1</PartNumber><ETag>&quot;etag-1&quot;</ETag></Part>"
			       "<Part><PartNumber>2</PartNumber><ETag>&quot;etag-2&quot;</ETag></Part>"
			       "<Part><PartNumber>3</PartNumber><ETag>&quot;etag-3&quot;</ETag></Part>"
			       "</CompleteMultipartUpload>");
	{
		char md5[S3_MD5_B64_LEN];
		CU_ASSERT_EQUAL(s3_content_md5(r->body, r->body_len, md5), KL_OK);
		check_header(r, "Content-MD5", md5);
	}

	/* At the threshold exactly: one PutObject. */
	loophttp_clear(w.srv);
	CU_ASSERT_EQUAL(s3_upload_file(&w.c, "bkt", "small", fd, 0, 5 << 20, &o, &res, &info), KL_OK);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 1);
	CU_ASSERT_EQUAL(res.n_parts, 0);
	CU_ASSERT_STRING_EQUAL(last_req(&w)->target, "/bkt/small");

	/* A part size under S3's minimum is refused. */
	o.part_size = (5 << 20) - 1;
	CU_ASSERT_EQUAL(s3_upload_file(&w.c, "bkt", "x", fd, 0, len, &o, &res, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 1);
	wire_stop(&w);
	close(fd);
}

static void test_wire_multipart_failure_aborts(void)
{
	struct s3_upload_opts o = {
		.put = { .unsigned_payload = 1 }, .multipart_threshold = 5 << 20, .part_size = 5 << 20,
	};
	const size_t len = (size_t)(10 << 20) + 1;
	struct s3_put_result res = { .n_parts = 77 };
	struct kl_errinfo info;
	struct wire w;
	int fd = pattern_file(len);

	/* Part 2 is refused: no Complete, an Abort, and the part's error. */
	wire_start(&w, 0);
	w.fake.fail_part = 2;
	w.fake.abort_status = 405;   /* as s3rver: the abort itself is not implemented */
	CU_ASSERT_EQUAL(s3_upload_file(&w.c, "bkt", "k", fd, 0, len, &o, &res, &info), KL_EAUTH);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "AccessDenied");
	CU_ASSERT_EQUAL(res.n_parts, 77);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(w.srv), 4);
	const struct loophttp_request *r = last_req(&w);
	CU_ASSERT_STRING_EQUAL(r->method, "DELETE");
	CU_ASSERT_STRING_EQUAL(r->target, "/bkt/k?uploadId=UP%2BID%2F1%3D");

	/* Complete fails for good (200 + InvalidPart): aborted as well. */
	loophttp_clear(w.srv);
	w.fake.fail_part = 0;
	w.fake.abort_status = 204;
	w.fake.complete_errors = 1;
	w.fake.complete_error_code = "<Error><Code>InvalidPart</Code><Message>m</Message></Error>";
	CU_ASSERT_EQUAL(s3_upload_file(&w.c, "bkt", "k", fd, 0, len, &o, &res, &info), KL_EAWS);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InvalidPart");
	CU_ASSERT_EQUAL_FATAL(loophttp_count(w.srv), 6);
	CU_ASSERT_STRING_EQUAL(last_req(&w)->method, "DELETE");
	wire_stop(&w);
	close(fd);
}

static void test_wire_complete_retry(void)
{
	struct s3_part parts[2] = { { 1, "\"a\"" }, { 2, "\"b\"" } };
	struct s3_put_result res;
	struct kl_errinfo info;
	struct wire w;

	wire_start(&w, 0);
	/* Two 200 + InternalError, then success: retried, KL_OK. */
	w.fake.complete_errors = 2;
	w.fake.complete_error_code = "<Error><Code>InternalError</Code></Error>";
	CU_ASSERT_EQUAL(s3_complete_multipart(&w.c, "bkt", "k", "id", parts, 2, &res, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(res.etag, "\"final-3\"");
	CU_ASSERT_EQUAL(res.n_parts, 2);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 3);

	/* Always failing: gives up after a bounded number of tries. */
	loophttp_clear(w.srv);
	w.fake.complete_errors = 100;
	CU_ASSERT_EQUAL(s3_complete_multipart(&w.c, "bkt", "k", "id", parts, 2, &res, &info),
			KL_ESERVER);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InternalError");
	CU_ASSERT_EQUAL(info.http_status, 200);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 4);

	/* Nothing is sent for a part list s3rver would die on. */
	loophttp_clear(w.srv);
	parts[1].etag[0] = '\0';
	CU_ASSERT_EQUAL(s3_complete_multipart(&w.c, "bkt", "k", "id", parts, 2, &res, &info),
			KL_EINVAL);
	CU_ASSERT_EQUAL(s3_complete_multipart(&w.c, "bkt", "k", "", parts, 1, &res, &info),
			KL_EINVAL);
	CU_ASSERT_EQUAL(loophttp_count(w.srv), 0);
	wire_stop(&w);
}

static void test_wire_abort(void)
{
	struct kl_errinfo info;
	struct wire w;

	wire_start(&w, 0);
	CU_ASSERT_EQUAL(s3_abort_multipart(&w.c, "bkt", "k", "id/1", &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(last_req(&w)->method, "DELETE");
	CU_ASSERT_STRING_EQUAL(last_req(&w)->target, "/bkt/k?uploadId=id%2F1");
	w.fake.abort_status = 405;
	CU_ASSERT_EQUAL(s3_abort_multipart(&w.c, "bkt", "k", "id", &info), KL_OK);
	w.fake.abort_status = 404;
	CU_ASSERT_EQUAL(s3_abort_multipart(&w.c, "bkt", "k", "id", &info), KL_OK);
	w.fake.abort_status = 403;
	CU_ASSERT_EQUAL(s3_abort_multipart(&w.c, "bkt", "k", "id", &info), KL_EAUTH);
	CU_ASSERT_EQUAL(s3_abort_multipart(&w.c, "bkt", "k", NULL, &info), KL_EINVAL);
	wire_stop(&w);
}

static void test_wire_head_get(void)
{
	struct s3_object_info obj = { 0 };
	struct kl_errinfo info;
	struct wire w;
	char *data = NULL;
	size_t len = 0;

	wire_start(&w, 0);
	CU_ASSERT_EQUAL_FATAL(s3_head_object(&w.c, "bkt", "k 1", &obj, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(last_req(&w)->method, "HEAD");
	CU_ASSERT_STRING_EQUAL(last_req(&w)->target, "/bkt/k%201");
	CU_ASSERT_EQUAL(obj.size, 10);
	CU_ASSERT_STRING_EQUAL(obj.etag, "\"head-etag\"");
	CU_ASSERT_STRING_EQUAL(obj.content_type, "application/x-ndjson");
	CU_ASSERT_STRING_EQUAL(obj.content_encoding, "gzip");
	CU_ASSERT_STRING_EQUAL(obj.last_modified, "Sat, 21 Nov 2026 09:00:00 GMT");
	CU_ASSERT_EQUAL_FATAL(obj.n_metadata, 2);
	CU_ASSERT_STRING_EQUAL(obj.metadata[0].name, "shard");
	CU_ASSERT_STRING_EQUAL(obj.metadata[0].value, "shardId-0001");
	CU_ASSERT_STRING_EQUAL(obj.metadata[1].name, "esn");
	s3_object_info_done(&obj);
	CU_ASSERT_PTR_NULL(obj.metadata);

	/* 404 without a body: KL_ENOTFOUND, ret_obj untouched. */
	w.fake.head_status = 404;
	obj.size = 99;
	CU_ASSERT_EQUAL(s3_head_object(&w.c, "bkt", "missing", &obj, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(info.http_status, 404);
	CU_ASSERT_EQUAL(obj.size, 99);

	/* GET into memory, with and without the headers. */
	CU_ASSERT_EQUAL_FATAL(s3_get_object(&w.c, "bkt", "k", 100, &data, &len, &obj, &info), KL_OK);
	CU_ASSERT_EQUAL(len, 12);
	CU_ASSERT_STRING_EQUAL(data, "hello, world");
	CU_ASSERT_STRING_EQUAL(obj.etag, "\"get-etag\"");
	CU_ASSERT_EQUAL(obj.size, 12);
	CU_ASSERT_STRING_EQUAL(obj.content_type, "text/plain");
	free(data);
	s3_object_info_done(&obj);
	CU_ASSERT_EQUAL_FATAL(s3_get_object(&w.c, "bkt", "k", 12, &data, &len, NULL, &info), KL_OK);
	free(data);
	/* Over the cap: KL_ENOMEM, nothing returned. */
	data = (char *)"untouched";
	CU_ASSERT_EQUAL(s3_get_object(&w.c, "bkt", "k", 11, &data, &len, NULL, &info), KL_ENOMEM);
	CU_ASSERT_STRING_EQUAL(data, "untouched");

	/* GET into a file, appended at its current offset. */
	char name[] = "/tmp/kl-test-s3-get-XXXXXX";
	int fd = mkstemp(name);
	char back[64] = "";
	CU_ASSERT_FATAL(fd >= 0);
	unlink(name);
	CU_ASSERT_EQUAL(write(fd, ">>", 2), 2);
	CU_ASSERT_EQUAL(s3_get_object_to_fd(&w.c, "bkt", "k", fd, NULL, &info), KL_OK);
	CU_ASSERT_EQUAL(lseek(fd, 0, SEEK_CUR), 14);
	CU_ASSERT_EQUAL(pread(fd, back, sizeof(back) - 1, 0), 14);
	CU_ASSERT_STRING_EQUAL(back, ">>hello, world");
	close(fd);

	CU_ASSERT_EQUAL(s3_delete_object(&w.c, "bkt", "k", &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(last_req(&w)->method, "DELETE");
	CU_ASSERT_STRING_EQUAL(last_req(&w)->target, "/bkt/k");
	wire_stop(&w);
}

static void test_wire_list(void)
{
	struct s3_list_opts o = { .prefix = "logs/", .delimiter = "/", .max_keys = 3,
				  .continuation_token = "t+1" };
	struct s3_list_result r;
	struct kl_errinfo info;
	struct wire w;

	wire_start(&w, 0);
	w.fake.list_body = list_aws;
	CU_ASSERT_EQUAL_FATAL(s3_list_objects_v2(&w.c, "bkt", &o, &r, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(last_req(&w)->method, "GET");
	CU_ASSERT_STRING_EQUAL(last_req(&w)->target,
			       "/bkt?continuation-token=t%2B1&delimiter=%2F&encoding-type=url"
			       "&list-type=2&max-keys=3&prefix=logs%2F");
	CU_ASSERT_EQUAL(r.n_entries, 2);
	CU_ASSERT_TRUE(r.is_truncated);
	s3_list_result_done(&r);

	w.fake.list_body = "<NotAListing/>";
	CU_ASSERT_EQUAL(s3_list_objects_v2(&w.c, "bkt", NULL, &r, &info), KL_EPARSE);
	CU_ASSERT_STRING_EQUAL(last_req(&w)->target, "/bkt?encoding-type=url&list-type=2");
	wire_stop(&w);
}

static void test_wire_create_bucket(void)
{
	struct kl_errinfo info;
	struct wire w;

	wire_start(&w, 0);
	CU_ASSERT_EQUAL(s3_create_bucket(&w.c, "new-bkt", &info), KL_OK);
	const struct loophttp_request *r = last_req(&w);
	CU_ASSERT_STRING_EQUAL(r->method, "PUT");
	CU_ASSERT_STRING_EQUAL(r->target, "/new-bkt");
	CU_ASSERT_EQUAL(r->body_len, 0);   /* us-east-1: no LocationConstraint */
	CU_ASSERT_EQUAL(s3_create_bucket(&w.c, "bad/name", &info), KL_EINVAL);
	wire_stop(&w);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_path_encoding),
		KL_TEST(test_query_building),
		KL_TEST(test_list_parse_aws),
		KL_TEST(test_list_parse_s3rver),
		KL_TEST(test_list_parse_many),
		KL_TEST(test_list_parse_errors),
		KL_TEST(test_initiate_parse),
		KL_TEST(test_complete_parse),
		KL_TEST(test_complete_body),
		KL_TEST(test_content_md5),
		KL_TEST(test_hash_file_range),
		KL_TEST(test_classify_s3_codes),
		KL_TEST(test_xml_nested_same_name),
		KL_TEST(test_xml_entities),
		KL_TEST(test_xml_self_closing),
		KL_TEST(test_xml_namespaces_attributes),
		KL_TEST(test_xml_comments_cdata),
		KL_TEST(test_wire_put_memory),
		KL_TEST(test_wire_put_file),
		KL_TEST(test_wire_virtual_host),
		KL_TEST(test_wire_multipart),
		KL_TEST(test_wire_multipart_failure_aborts),
		KL_TEST(test_wire_complete_retry),
		KL_TEST(test_wire_abort),
		KL_TEST(test_wire_head_get),
		KL_TEST(test_wire_list),
		KL_TEST(test_wire_create_bucket),
		{ 0 },
	};

	if (http_global_init() != KL_OK)
		return 1;
	int rc = kl_test_run("s3", t);
	http_global_cleanup();
	return rc;
}
