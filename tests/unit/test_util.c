/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_util.c: capped buffers, hex/base64 codecs (every decoder variant
 * against a slow reference, on every length, offset and corruption class),
 * the backoff RNG, the error strings, and the XML extractor used for S3
 * and STS responses.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "b64.h"
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

/* ------------------------------------------------------------ base64 variants */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* kl_b64_decode()'s contract written the slow, obvious way. */
static enum kl_err b64_ref_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len)
{
	uint32_t acc = 0;
	size_t o = 0, bits = 0;

	while (len > 0 && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return KL_EPARSE;
	for (size_t i = 0; i < len; i++) {
		const char *p = memchr(b64_alphabet, in[i], 64);

		if (!p)
			return KL_EPARSE;
		acc = (acc << 6 | (uint32_t)(p - b64_alphabet)) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	*ret_len = o;
	return KL_OK;
}

static int b64_cases;

/*
 * Decodes s[0, len) with the reference and every variant this CPU has,
 * from a heap copy that ends exactly at len (ASan and valgrind see any
 * read past it) at in_off bytes into its block, into a block of exactly
 * the documented size at out_off. All must agree on the verdict and the
 * bytes, write nothing past the decoded length, and leave *ret_len alone
 * on failure.
 */
static void b64_check_all(const char *s, size_t len, size_t in_off, size_t out_off)
{
	size_t out_size = (len / 4 + 1) * 3;
	/* Exactly len bytes of input behind in_off: no slack at all (one
	 * byte only when there is nothing, as malloc(0) may be NULL). */
	char *in_block = malloc(in_off + len + (in_off + len == 0));
	uint8_t *want = malloc(out_size), *out_block = malloc(out_off + out_size);
	size_t want_len = 77777;
	enum kl_err want_err;

	CU_ASSERT_FATAL(in_block && want && out_block);
	if (len)
		memcpy(in_block + in_off, s, len);
	want_err = b64_ref_decode(in_block + in_off, len, want, &want_len);
	for (int impl = 0; impl < KL_B64_IMPL_COUNT; impl++) {
		uint8_t *out = out_block + out_off;
		size_t got_len = 77777;
		enum kl_err err;

		if (!kl_b64_impl_available((enum kl_b64_impl)impl))
			continue;
		memset(out_block, 0xa5, out_off + out_size);
		err = kl_b64_decode_impl((enum kl_b64_impl)impl, in_block + in_off, len, out, &got_len);
		b64_cases++;
		if (err != want_err || (err == KL_OK && got_len != want_len) ||
		    (err != KL_OK && got_len != 77777)) {
			fprintf(stderr, "\nb64 %s: len %zu in_off %zu: err %d want %d, n %zu want %zu: %.*s\n",
				kl_b64_impl_name((enum kl_b64_impl)impl), len, in_off, (int)err,
				(int)want_err, got_len, want_len, (int)len, s);
			CU_FAIL_FATAL("decoder variants disagree");
		}
		for (size_t i = 0; i < out_off; i++)
			CU_ASSERT_EQUAL_FATAL(out_block[i], 0xa5);
		if (err != KL_OK)
			continue;
		CU_ASSERT_EQUAL_FATAL(memcmp(out, want, want_len), 0);
		for (size_t i = want_len; i < out_size; i++)
			CU_ASSERT_EQUAL_FATAL(out[i], 0xa5);
	}
	free(in_block);
	free(want);
	free(out_block);
}

static void b64_random_alpha(struct kl_rng *rng, char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		s[i] = b64_alphabet[kl_rng_below(rng, 64)];
}

/* Bytes outside the alphabet, '=' excluded (it has tests of its own). */
static uint8_t b64_random_invalid(struct kl_rng *rng)
{
	for (;;) {
		uint8_t c = (uint8_t)kl_rng_below(rng, 256);

		if (c != '=' && !memchr(b64_alphabet, c, 64))
			return c;
	}
}

static void test_b64_impls_random(void)
{
	struct kl_rng rng;
	char s[300 + 8];

	CU_ASSERT_TRUE(kl_b64_impl_available(KL_B64_SCALAR));
	CU_ASSERT_TRUE(kl_b64_impl_available(kl_b64_impl_best()));
	kl_rng_seed_value(&rng, 11);
	for (size_t len = 0; len <= 300; len++) {
		for (int rep = 0; rep < 8; rep++) {
			size_t pad = (size_t)rep % 4;

			b64_random_alpha(&rng, s, len);
			memset(s + len, '=', pad);
			b64_check_all(s, len + pad, kl_rng_below(&rng, 64), kl_rng_below(&rng, 64));
		}
	}
	/* Real encodings, whose last character has zero low bits. */
	for (size_t n = 0; n <= 225; n++) {
		uint8_t raw[225];
		char enc[KL_B64_ENCLEN(225) + 1];

		for (size_t i = 0; i < n; i++)
			raw[i] = (uint8_t)kl_rng_next(&rng);
		kl_b64_encode(raw, n, enc);
		b64_check_all(enc, strlen(enc), kl_rng_below(&rng, 64), kl_rng_below(&rng, 64));
		/* And without the padding. */
		b64_check_all(enc, strcspn(enc, "="), kl_rng_below(&rng, 64), kl_rng_below(&rng, 64));
	}
}

/* One bad byte at every position of every length: an invalid character,
 * and '=' (padding in the middle, or at the end where it is a padding). */
static void test_b64_impls_corrupt(void)
{
	struct kl_rng rng;
	char s[300];

	kl_rng_seed_value(&rng, 12);
	for (size_t len = 1; len <= 300; len++) {
		size_t in_off = kl_rng_below(&rng, 64), out_off = kl_rng_below(&rng, 64);

		b64_random_alpha(&rng, s, len);
		for (size_t p = 0; p < len; p++) {
			char keep = s[p];

			s[p] = (char)b64_random_invalid(&rng);
			b64_check_all(s, len, in_off, out_off);
			s[p] = '=';
			b64_check_all(s, len, in_off, out_off);
			s[p] = keep;
		}
	}
}

/* Every byte value at every position, in lengths whose positions cover
 * each part of the vector variants: the scalar tail only (3), one SSSE3
 * block and a tail (18), AVX2 + SSSE3 + tail (50), three AVX2 blocks,
 * scalar quads and a tail of 3 (111). */
static void test_b64_impls_every_byte(void)
{
	static const size_t lens[] = { 3, 18, 50, 111 };
	struct kl_rng rng;
	char s[111];

	kl_rng_seed_value(&rng, 13);
	for (size_t l = 0; l < KL_ARRAY_LEN(lens); l++) {
		size_t len = lens[l];

		b64_random_alpha(&rng, s, len);
		for (size_t p = 0; p < len; p++) {
			char keep = s[p];

			for (int c = 0; c < 256; c++) {
				s[p] = (char)c;
				b64_check_all(s, len, p % 32, (p * 7) % 32);
			}
			s[p] = keep;
		}
	}
}

/* Padding: any run of '=' is stripped, then the rest must be alphabet of
 * a length other than 4k+1; '=' followed by more data is invalid. */
static void test_b64_impls_padding(void)
{
	struct kl_rng rng;
	char s[80 + 6 + 40];

	kl_rng_seed_value(&rng, 14);
	for (size_t len = 0; len <= 80; len++) {
		for (size_t pad = 0; pad <= 5; pad++) {
			for (size_t more = 0; more <= 40; more += more < 6 ? 1 : 17) {
				b64_random_alpha(&rng, s, len);
				memset(s + len, '=', pad);
				b64_random_alpha(&rng, s + len + pad, more);
				b64_check_all(s, len + pad + more, kl_rng_below(&rng, 32),
					      kl_rng_below(&rng, 32));
			}
		}
	}
	b64_check_all("====", 4, 0, 0);
	b64_check_all("=", 1, 0, 0);
	b64_check_all("QQ=", 3, 0, 0);
	b64_check_all("QQ=A", 4, 0, 0);
	b64_check_all("QUJD=QQ==", 9, 0, 0);
	fprintf(stderr, " [%d decodes; best variant %s] ", b64_cases,
		kl_b64_impl_name(kl_b64_impl_best()));
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
		KL_TEST(test_b64_impls_random),
		KL_TEST(test_b64_impls_corrupt),
		KL_TEST(test_b64_impls_every_byte),
		KL_TEST(test_b64_impls_padding),
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
