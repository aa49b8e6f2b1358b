/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_util.c: capped buffers, hex/base64 codecs, the backoff RNG, the
 * error strings, and the XML extractor used for S3 and STS responses.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "kl_err.h"
#include "testutil.h"
#include "util.h"
#include "xml.h"

static void test_buf_cap(void)
{
	struct buf b;

	buf_init(&b, 8);
	CU_ASSERT_EQUAL(buf_append_str(&b, "12345678"), KL_OK);
	CU_ASSERT_EQUAL(b.len, 8);
	CU_ASSERT_STRING_EQUAL(b.data, "12345678");
	/* One more byte would pass the cap: refused, buffer unchanged. */
	CU_ASSERT_EQUAL(buf_append_byte(&b, 'x'), KL_ENOMEM);
	CU_ASSERT_EQUAL(b.len, 8);
	CU_ASSERT_STRING_EQUAL(b.data, "12345678");
	buf_reset(&b);
	CU_ASSERT_EQUAL(buf_printf(&b, "%d-%s", 42, "ab"), KL_OK);
	CU_ASSERT_STRING_EQUAL(b.data, "42-ab");
	CU_ASSERT_EQUAL(buf_printf(&b, "%s", "toolong"), KL_ENOMEM);
	char *s = buf_steal(&b);
	CU_ASSERT_STRING_EQUAL(s, "42-ab");
	CU_ASSERT_PTR_NULL(b.data);
	free(s);
	buf_done(&b);
	buf_done(NULL);
}

static void test_buf_growth(void)
{
	struct buf b;

	buf_init(&b, 0);
	for (int i = 0; i < 10000; i++)
		CU_ASSERT_EQUAL_FATAL(buf_append(&b, "abc", 3), KL_OK);
	CU_ASSERT_EQUAL(b.len, 30000);
	CU_ASSERT_EQUAL(memcmp(b.data + 29997, "abc", 3), 0);
	CU_ASSERT_EQUAL(b.data[b.len], '\0');
	buf_wipe(&b);
	CU_ASSERT_PTR_NULL(b.data);
}

static void test_hex(void)
{
	const uint8_t in[] = { 0x00, 0x7f, 0xab, 0xff };
	char out[9];

	kl_hex(in, sizeof(in), out);
	CU_ASSERT_STRING_EQUAL(out, "007fabff");
}

static void test_b64_vectors(void)
{
	/* RFC 4648 section 10 test vectors. */
	static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char out[16];
	uint8_t dec[16];
	size_t n;

	for (size_t i = 0; i < KL_ARRAY_LEN(plain); i++) {
		kl_b64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
		CU_ASSERT_STRING_EQUAL(out, enc[i]);
		CU_ASSERT_EQUAL(kl_b64_decode(enc[i], strlen(enc[i]), dec, &n), KL_OK);
		CU_ASSERT_EQUAL(n, strlen(plain[i]));
		CU_ASSERT_EQUAL(memcmp(dec, plain[i], n), 0);
	}
	/* Unpadded input decodes too. */
	CU_ASSERT_EQUAL(kl_b64_decode("Zm9vYg", 6, dec, &n), KL_OK);
	CU_ASSERT_EQUAL(n, 4);
}

static void test_b64_bad(void)
{
	uint8_t dec[16];
	size_t n = 12345;

	CU_ASSERT_EQUAL(kl_b64_decode("Zm9v!mFy", 8, dec, &n), KL_EPARSE);
	CU_ASSERT_EQUAL(kl_b64_decode("Z", 1, dec, &n), KL_EPARSE);
	CU_ASSERT_EQUAL(kl_b64_decode("Zm 9", 4, dec, &n), KL_EPARSE);
	CU_ASSERT_EQUAL(n, 12345); /* not written on failure */
}

static void test_b64_roundtrip_random(void)
{
	struct kl_rng rng;
	uint8_t in[300], dec[300];
	char enc[KL_B64_ENCLEN(300) + 1];
	size_t n;

	kl_rng_seed_value(&rng, 7);
	for (int iter = 0; iter < 500; iter++) {
		size_t len = kl_rng_below(&rng, sizeof(in) + 1);
		for (size_t i = 0; i < len; i++)
			in[i] = (uint8_t)kl_rng_next(&rng);
		kl_b64_encode(in, len, enc);
		CU_ASSERT_EQUAL_FATAL(strlen(enc), KL_B64_ENCLEN(len));
		CU_ASSERT_EQUAL_FATAL(kl_b64_decode(enc, strlen(enc), dec, &n), KL_OK);
		CU_ASSERT_EQUAL_FATAL(n, len);
		CU_ASSERT_EQUAL_FATAL(memcmp(in, dec, len), 0);
	}
}

static void test_rng_bounds(void)
{
	struct kl_rng a, b;
	int seen[10] = { 0 };

	kl_rng_seed_value(&a, 99);
	kl_rng_seed_value(&b, 99);
	for (int i = 0; i < 1000; i++)
		CU_ASSERT_EQUAL(kl_rng_next(&a), kl_rng_next(&b)); /* same seed, same stream */
	for (int i = 0; i < 10000; i++) {
		uint64_t v = kl_rng_below(&a, 10);
		CU_ASSERT_FATAL(v < 10);
		seen[v]++;
	}
	for (int i = 0; i < 10; i++)
		CU_ASSERT(seen[i] > 800 && seen[i] < 1200);
}

static void test_utf8_seq_len(void)
{
	static const struct {
		const char *s;
		size_t n, want;
	} cases[] = {
		{ "a", 1, 1 },
		{ "\xc3\xa9", 2, 2 },            /* e acute */
		{ "\xe2\x82\xac", 3, 3 },        /* euro sign */
		{ "\xf0\x9f\x98\x80", 4, 4 },    /* emoji */
		{ "\xc0\xaf", 2, 0 },            /* overlong '/' */
		{ "\xe0\x80\xaf", 3, 0 },        /* overlong, 3 bytes */
		{ "\xed\xa0\x80", 3, 0 },        /* surrogate U+D800 */
		{ "\xf4\x90\x80\x80", 4, 0 },    /* above U+10FFFF */
		{ "\xe2\x82", 2, 0 },            /* truncated */
		{ "\x80", 1, 0 },                /* lone continuation */
		{ "\xc3\x28", 2, 0 },            /* bad continuation */
	};

	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++)
		CU_ASSERT_EQUAL(kl_utf8_seq_len((const unsigned char *)cases[i].s, cases[i].n),
				cases[i].want);
}

static void test_strerror_complete(void)
{
	/* Every value up to the last one has its own text. */
	for (int e = KL_OK; e <= KL_EPLUGIN; e++) {
		const char *s = kl_strerror((enum kl_err)e);
		CU_ASSERT_PTR_NOT_NULL(s);
		CU_ASSERT_STRING_NOT_EQUAL(s, "unknown error");
	}
	CU_ASSERT_TRUE(kl_err_retryable(KL_ETHROTTLED));
	CU_ASSERT_TRUE(kl_err_retryable(KL_ESERVER));
	CU_ASSERT_FALSE(kl_err_retryable(KL_ECONFLICT));
	CU_ASSERT_FALSE(kl_err_retryable(KL_ELEASE_LOST));
}

static void test_errinfo_format(void)
{
	struct kl_errinfo info;
	char out[256];

	kl_errinfo_clear(&info);
	info.http_status = 400;
	snprintf(info.aws_code, sizeof(info.aws_code), "ValidationException");
	kl_errinfo_set(&info, KL_EAWS, "bad %s", "limit");
	snprintf(info.request_id, sizeof(info.request_id), "abc");
	kl_errinfo_format(KL_EAWS, &info, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "AWS error: ValidationException: bad limit (HTTP 400, request abc)");
	kl_errinfo_format(KL_ETIMEOUT, NULL, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "timed out");
}

static void test_xml_nested_and_ns(void)
{
	const char *doc =
		"<?xml version=\"1.0\"?>\n"
		"<ListBucketResult xmlns=\"http://doc.s3.amazonaws.com/2006-03-01/\">"
		"<Name>bkt</Name><s3:IsTruncated>true</s3:IsTruncated>"
		"<Contents><Key>a &amp; b</Key><Size>3</Size></Contents>"
		"<Contents><Key>c&#x20AC;&#65;</Key><Size>4</Size></Contents>"
		"<Empty/><Contents ><Key>x</Key></Contents>"
		"</ListBucketResult>";
	struct xml_slice s;
	size_t pos = 0;
	char *t = NULL;
	int n = 0;

	CU_ASSERT_EQUAL(xml_text(doc, strlen(doc), "IsTruncated", &t), KL_OK);
	CU_ASSERT_STRING_EQUAL(t, "true");
	free(t);
	while (xml_next(doc, strlen(doc), "Contents", &pos, &s)) {
		CU_ASSERT_EQUAL(xml_slice_text(s, "Key", &t), KL_OK);
		if (n == 0)
			CU_ASSERT_STRING_EQUAL(t, "a & b");
		if (n == 1)
			CU_ASSERT_STRING_EQUAL(t, "c\xe2\x82\xac" "A");
		if (n == 2)
			CU_ASSERT_STRING_EQUAL(t, "x");
		free(t);
		n++;
	}
	CU_ASSERT_EQUAL(n, 3);
	CU_ASSERT_EQUAL(xml_text(doc, strlen(doc), "Empty", &t), KL_OK);
	CU_ASSERT_STRING_EQUAL(t, "");
	free(t);
	CU_ASSERT_EQUAL(xml_text(doc, strlen(doc), "Missing", &t), KL_ENOTFOUND);
	/* "Key" must not match "KeyCount". */
	const char *doc2 = "<R><KeyCount>2</KeyCount><Key>k</Key></R>";
	CU_ASSERT_EQUAL(xml_text(doc2, strlen(doc2), "Key", &t), KL_OK);
	CU_ASSERT_STRING_EQUAL(t, "k");
	free(t);
}

static void test_xml_same_name_nesting(void)
{
	const char *doc = "<a><b><a>inner</a></b>tail</a><a>second</a>";
	struct xml_slice s;
	size_t pos = 0;

	CU_ASSERT_TRUE(xml_next(doc, strlen(doc), "a", &pos, &s));
	CU_ASSERT_EQUAL(s.len, strlen("<b><a>inner</a></b>tail"));
	CU_ASSERT_TRUE(xml_next(doc, strlen(doc), "a", &pos, &s));
	CU_ASSERT_EQUAL(s.len, 6);
	CU_ASSERT_EQUAL(memcmp(s.p, "second", 6), 0);
	CU_ASSERT_FALSE(xml_next(doc, strlen(doc), "a", &pos, &s));
}

static void test_xml_bad_entity_and_truncated(void)
{
	char *t = NULL;
	const char *bad = "<Code>a &bogus; b</Code>";
	const char *trunc = "<Code>never closed";

	CU_ASSERT_EQUAL(xml_text(bad, strlen(bad), "Code", &t), KL_EPARSE);
	CU_ASSERT_PTR_NULL(t);
	CU_ASSERT_EQUAL(xml_text(trunc, strlen(trunc), "Code", &t), KL_ENOTFOUND);
}

static void test_xml_escape(void)
{
	struct buf b;

	buf_init(&b, 0);
	CU_ASSERT_EQUAL(xml_escape(&b, "a<b>&\"c'"), KL_OK);
	CU_ASSERT_STRING_EQUAL(b.data, "a&lt;b&gt;&amp;&quot;c&apos;");
	buf_done(&b);
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_buf_cap),
		KL_TEST(test_buf_growth),
		KL_TEST(test_hex),
		KL_TEST(test_b64_vectors),
		KL_TEST(test_b64_bad),
		KL_TEST(test_b64_roundtrip_random),
		KL_TEST(test_rng_bounds),
		KL_TEST(test_utf8_seq_len),
		KL_TEST(test_strerror_complete),
		KL_TEST(test_errinfo_format),
		KL_TEST(test_xml_nested_and_ns),
		KL_TEST(test_xml_same_name_nesting),
		KL_TEST(test_xml_bad_entity_and_truncated),
		KL_TEST(test_xml_escape),
		{ NULL, NULL },
	};
	return kl_test_run("util", tests);
}
