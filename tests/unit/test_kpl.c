/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_kpl.c: KPL aggregates: the u128 decimal helpers at their edges,
 * decoding hand-written byte arrays and encoder output, corrupt aggregates
 * passed through whole with the right reason, hash-range filtering by
 * explicit hash key and by MD5 of the partition key, and the counters.
 * Expected hashes and byte arrays were computed independently (Python's
 * hashlib), not with the code under test.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "buf.h"
#include "kpl.h"
#include "testutil.h"

#define U128_MAX_DEC "340282366920938463463374607431768211455"
#define TWO_64_DEC "18446744073709551616"
#define TWO_127_M1_DEC "170141183460469231731687303715884105727"
#define TWO_127_DEC "170141183460469231731687303715884105728"
/* MD5("a") = 0cc175b9c0f1b6a831c399e269772661 as a big-endian integer. */
#define MD5_A_DEC "16955237001963240173058271559858726497"
#define MD5_A_M1_DEC "16955237001963240173058271559858726496"
#define MD5_A_P1_DEC "16955237001963240173058271559858726498"
#define MD5_PK_DEC "38317986088707300215492326132921849533"

/* MAGIC, pk table ["pk"], an unknown varint field 5, an unknown fixed64
 * field 6, Record{pk 0, data "abc"}, Record{pk 0, data "x", tags [{"tg"}]},
 * MD5 of the protobuf. */
static const uint8_t hand_two[] = {
	0xf3, 0x89, 0x9a, 0xc2, 0x0a, 0x02, 0x70, 0x6b, 0x28, 0x01, 0x31, 0x00, 0x01, 0x02,
	0x03, 0x04, 0x05, 0x06, 0x07, 0x1a, 0x07, 0x08, 0x00, 0x1a, 0x03, 0x61, 0x62, 0x63,
	0x1a, 0x0b, 0x08, 0x00, 0x1a, 0x01, 0x78, 0x22, 0x04, 0x0a, 0x02, 0x74, 0x67, 0x91,
	0x89, 0x06, 0x1d, 0x6b, 0x78, 0x35, 0xd7, 0xfe, 0x70, 0x72, 0x4a, 0x41, 0x7a, 0x6d,
	0x3a,
};

/* MAGIC, pk table ["pk"], Record{pk 0, data "abc"}, MD5: what the encoder
 * must produce byte for byte for that one record. */
static const uint8_t hand_one[] = {
	0xf3, 0x89, 0x9a, 0xc2, 0x0a, 0x02, 0x70, 0x6b, 0x1a, 0x07, 0x08, 0x00, 0x1a, 0x03,
	0x61, 0x62, 0x63, 0xa0, 0xde, 0x68, 0xe0, 0xbc, 0x09, 0x74, 0xe2, 0x8d, 0x06, 0x5f,
	0x47, 0x81, 0x43, 0x3d, 0x85,
};

static struct kpl_u128 dec(const char *s)
{
	struct kpl_u128 v = { 0, 0 };

	CU_ASSERT_EQUAL_FATAL(kpl_u128_parse(s, strlen(s), &v), KL_OK);
	return v;
}

static struct kpl_decoder *decoder(void)
{
	struct kpl_decoder *d = NULL;
	struct kl_errinfo info;

	CU_ASSERT_EQUAL_FATAL(kpl_decoder_new(&info, &d), KL_OK);
	return d;
}

/* MAGIC ‖ body ‖ MD5(body), computed here with libcrypto directly. */
static void wrap(struct buf *out, const uint8_t *body, size_t len)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	buf_init(out, 0);
	CU_ASSERT_EQUAL_FATAL(EVP_Digest(body, len, md, &n, EVP_md5(), NULL), 1);
	CU_ASSERT_EQUAL_FATAL(n, 16);
	CU_ASSERT_EQUAL_FATAL(buf_append(out, KPL_MAGIC, 4), KL_OK);
	CU_ASSERT_EQUAL_FATAL(buf_append(out, body, len), KL_OK);
	CU_ASSERT_EQUAL_FATAL(buf_append(out, md, 16), KL_OK);
}

static bool slice_eq(const void *p, size_t len, const char *s)
{
	return p && len == strlen(s) && memcmp(p, s, len) == 0;
}

/* Decodes and expects a plain pass-through for the given reason. */
static void expect_plain(const uint8_t *data, size_t len, enum kpl_reason reason)
{
	struct kpl_decoder *d = decoder();
	struct kpl_result r;
	struct kl_errinfo info;

	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, data, len, NULL, &info, &r), KL_OK);
	CU_ASSERT_EQUAL(r.verdict, KPL_PLAIN);
	CU_ASSERT_EQUAL(r.reason, reason);
	CU_ASSERT_EQUAL_FATAL(r.nrecords, 1);
	CU_ASSERT_PTR_EQUAL(r.records[0].data, data);
	CU_ASSERT_EQUAL(r.records[0].len, len);
	CU_ASSERT_PTR_NULL(r.records[0].partition_key);
	CU_ASSERT_EQUAL(r.records[0].sub_sequence_number, 0);
	CU_ASSERT_EQUAL(kpl_decoder_stats(d)->plain, 1);
	CU_ASSERT_EQUAL(kpl_decoder_stats(d)->aggregates, 0);
	kpl_decoder_free(d);
}

static void expect_plain_body(const uint8_t *body, size_t len, enum kpl_reason reason)
{
	struct buf b;

	wrap(&b, body, len);
	expect_plain((const uint8_t *)b.data, b.len, reason);
	buf_done(&b);
}

/* ------------------------------------------------------------ u128 */

static void test_u128_edges(void)
{
	struct kpl_u128 v;
	char out[KPL_U128_DEC_SIZE];

	v = dec("0");
	CU_ASSERT(v.hi == 0 && v.lo == 0);
	kpl_u128_format(v, out);
	CU_ASSERT_STRING_EQUAL(out, "0");

	v = dec(U128_MAX_DEC);
	CU_ASSERT(v.hi == UINT64_MAX && v.lo == UINT64_MAX);
	kpl_u128_format(v, out);
	CU_ASSERT_STRING_EQUAL(out, U128_MAX_DEC);

	v = dec(TWO_64_DEC);
	CU_ASSERT(v.hi == 1 && v.lo == 0);
	kpl_u128_format(v, out);
	CU_ASSERT_STRING_EQUAL(out, TWO_64_DEC);

	v = dec("18446744073709551615");
	CU_ASSERT(v.hi == 0 && v.lo == UINT64_MAX);
	kpl_u128_format(v, out);
	CU_ASSERT_STRING_EQUAL(out, "18446744073709551615");

	v = dec(TWO_127_DEC);
	CU_ASSERT(v.hi == (uint64_t)1 << 63 && v.lo == 0);

	v = dec("000000000000000000000000000000000000000000000042");
	CU_ASSERT(v.hi == 0 && v.lo == 42);
	kpl_u128_format(v, out);
	CU_ASSERT_STRING_EQUAL(out, "42");

	/* 2^128 and beyond, signs, spaces, empty: refused. */
	CU_ASSERT_EQUAL(kpl_u128_parse("340282366920938463463374607431768211456", 39, &v), KL_EINVAL);
	CU_ASSERT_EQUAL(kpl_u128_parse("3402823669209384634633746074317682114550", 40, &v), KL_EINVAL);
	CU_ASSERT_EQUAL(kpl_u128_parse("", 0, &v), KL_EINVAL);
	CU_ASSERT_EQUAL(kpl_u128_parse("-1", 2, &v), KL_EINVAL);
	CU_ASSERT_EQUAL(kpl_u128_parse("+1", 2, &v), KL_EINVAL);
	CU_ASSERT_EQUAL(kpl_u128_parse(" 1", 2, &v), KL_EINVAL);
	CU_ASSERT_EQUAL(kpl_u128_parse("12a", 3, &v), KL_EINVAL);
	/* Only len bytes are read. */
	CU_ASSERT_EQUAL(kpl_u128_parse("12a", 2, &v), KL_OK);
	CU_ASSERT(v.hi == 0 && v.lo == 12);
}

static void test_u128_cmp_and_be(void)
{
	const uint8_t be[16] = { 0x0c, 0xc1, 0x75, 0xb9, 0xc0, 0xf1, 0xb6, 0xa8,
				 0x31, 0xc3, 0x99, 0xe2, 0x69, 0x77, 0x26, 0x61 };
	struct kpl_u128 v = kpl_u128_from_be(be);
	char out[KPL_U128_DEC_SIZE];

	CU_ASSERT(v.hi == 0x0cc175b9c0f1b6a8ull && v.lo == 0x31c399e269772661ull);
	kpl_u128_format(v, out);
	CU_ASSERT_STRING_EQUAL(out, MD5_A_DEC);

	CU_ASSERT(kpl_u128_cmp(dec("0"), dec(U128_MAX_DEC)) < 0);
	CU_ASSERT(kpl_u128_cmp(dec(U128_MAX_DEC), dec("0")) > 0);
	CU_ASSERT(kpl_u128_cmp(dec(TWO_64_DEC), dec("18446744073709551615")) > 0);
	CU_ASSERT(kpl_u128_cmp(dec(TWO_127_M1_DEC), dec(TWO_127_DEC)) < 0);
	CU_ASSERT_EQUAL(kpl_u128_cmp(dec(MD5_A_DEC), v), 0);
}

static void test_hash_range_parse(void)
{
	struct kpl_hash_range r;
	struct kl_errinfo info;

	CU_ASSERT_EQUAL(kpl_hash_range_parse("0", U128_MAX_DEC, &info, &r), KL_OK);
	CU_ASSERT(kpl_hash_range_contains(&r, dec("0")));
	CU_ASSERT(kpl_hash_range_contains(&r, dec(U128_MAX_DEC)));

	CU_ASSERT_EQUAL(kpl_hash_range_parse(TWO_127_DEC, U128_MAX_DEC, &info, &r), KL_OK);
	CU_ASSERT(!kpl_hash_range_contains(&r, dec(TWO_127_M1_DEC)));
	CU_ASSERT(kpl_hash_range_contains(&r, dec(TWO_127_DEC)));

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(kpl_hash_range_parse("5", "4", &info, &r), KL_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "greater than"));
	CU_ASSERT_EQUAL(kpl_hash_range_parse("x", "4", &info, &r), KL_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "startingHashKey 'x'"));
	CU_ASSERT_EQUAL(kpl_hash_range_parse("0", "340282366920938463463374607431768211456", &info, &r),
			KL_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "endingHashKey"));
}

/* ------------------------------------------------------------ decoding */

static void test_decode_hand_written(void)
{
	struct kpl_decoder *d = decoder();
	struct kl_errinfo info;
	struct kpl_result r;
	char out[KPL_U128_DEC_SIZE];

	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, hand_two, sizeof(hand_two), NULL, &info, &r), KL_OK);
	CU_ASSERT_EQUAL(r.verdict, KPL_AGGREGATE);
	CU_ASSERT_EQUAL(r.reason, KPL_REASON_NONE);
	CU_ASSERT_EQUAL_FATAL(r.nrecords, 2);
	CU_ASSERT(slice_eq(r.records[0].data, r.records[0].len, "abc"));
	CU_ASSERT(slice_eq(r.records[1].data, r.records[1].len, "x"));
	/* Zero-copy: data and keys point into the input. */
	CU_ASSERT_PTR_EQUAL(r.records[0].data, hand_two + 25);
	CU_ASSERT_PTR_EQUAL(r.records[0].partition_key, (const char *)hand_two + 6);
	for (size_t i = 0; i < 2; i++) {
		CU_ASSERT(slice_eq(r.records[i].partition_key, r.records[i].partition_key_len, "pk"));
		CU_ASSERT_PTR_NULL(r.records[i].explicit_hash_key);
		CU_ASSERT_EQUAL(r.records[i].sub_sequence_number, i);
		kpl_u128_format(r.records[i].hash_key, out);
		CU_ASSERT_STRING_EQUAL(out, MD5_PK_DEC);
	}
	CU_ASSERT_EQUAL(kpl_decoder_stats(d)->aggregates, 1);
	CU_ASSERT_EQUAL(kpl_decoder_stats(d)->user_records, 2);
	kpl_decoder_free(d);
}

/* The decoder hashes partition keys with its own MD5, eight at a time
 * when it can: libcrypto's digest for aggregates of 1..24 records whose
 * first key has every length from 0 to 300 (1, 2 and 3 blocks, each
 * padding edge) and the others 0..80 bytes (either side of the one-block
 * limit), some keys repeated, some records with an explicit hash key;
 * bytes 1..255 (the encoder takes C strings). */
static void test_decode_pk_md5_every_length(void)
{
	struct kpl_decoder *d = decoder();
	struct kl_errinfo info;
	struct kpl_result r;
	struct buf b;
	static char pk[24][301];
	uint32_t x = 12345;

	buf_init(&b, 0);
	for (size_t round = 0; round <= 300; round++) {
		struct kpl_enc_record rec[24];
		size_t count = 1 + round % 24;

		for (size_t j = 0; j < count; j++) {
			size_t len;

			x = x * 1103515245u + 12345u;
			len = j == 0 ? round : (x >> 16) % 81;
			if (j > 0 && (x >> 8) % 5 == 0) {
				memcpy(pk[j], pk[j - 1], sizeof(pk[j]));   /* a repeated key */
			} else {
				for (size_t i = 0; i < len; i++) {
					x = x * 1103515245u + 12345u;
					pk[j][i] = (char)(1 + (x >> 16) % 255);
				}
				pk[j][len] = '\0';
			}
			rec[j] = (struct kpl_enc_record){ .partition_key = pk[j], .data = "v", .len = 1 };
			if ((x >> 12) % 7 == 0)
				rec[j].explicit_hash_key = "12345678901234567890";
		}
		buf_reset(&b);
		CU_ASSERT_EQUAL_FATAL(kpl_encode(rec, count, &b), KL_OK);
		CU_ASSERT_EQUAL_FATAL(kpl_decode(d, (const uint8_t *)b.data, b.len, NULL, &info, &r),
				      KL_OK);
		CU_ASSERT_EQUAL_FATAL(r.verdict, KPL_AGGREGATE);
		CU_ASSERT_EQUAL_FATAL(r.nrecords, count);
		for (size_t j = 0; j < count; j++) {
			uint8_t md[EVP_MAX_MD_SIZE];
			unsigned int n = 0;
			size_t len = strlen(pk[j]);
			struct kpl_u128 want;

			CU_ASSERT_EQUAL_FATAL(r.records[j].partition_key_len, len);
			if (rec[j].explicit_hash_key) {
				CU_ASSERT_EQUAL_FATAL(kpl_u128_parse(rec[j].explicit_hash_key, 20, &want),
						      KL_OK);
			} else {
				CU_ASSERT_EQUAL_FATAL(EVP_Digest(pk[j], len, md, &n, EVP_md5(), NULL), 1);
				want = kpl_u128_from_be(md);
			}
			CU_ASSERT_EQUAL_FATAL(kpl_u128_cmp(r.records[j].hash_key, want), 0);
		}
	}
	buf_done(&b);
	kpl_decoder_free(d);
}

static void test_encoder_exact_bytes(void)
{
	const struct kpl_enc_record rec = { .partition_key = "pk", .data = "abc", .len = 3 };
	struct buf b;

	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(kpl_encode(&rec, 1, &b), KL_OK);
	CU_ASSERT_EQUAL_FATAL(b.len, sizeof(hand_one));
	CU_ASSERT_EQUAL(memcmp(b.data, hand_one, sizeof(hand_one)), 0);
	CU_ASSERT_EQUAL(kpl_encoded_size(&rec, 1), sizeof(hand_one));
	buf_done(&b);
}

static void test_encode_decode_roundtrip(void)
{
	const struct kpl_enc_record recs[] = {
		{ .partition_key = "a", .data = "first", .len = 5 },
		{ .partition_key = "user-42", .explicit_hash_key = TWO_64_DEC, .data = "", .len = 0 },
		{ .partition_key = "a", .data = "third\0bin", .len = 9 },
		{ .partition_key = "b", .explicit_hash_key = TWO_64_DEC, .data = "4", .len = 1 },
	};
	struct kpl_decoder *d = decoder();
	struct kl_errinfo info;
	struct kpl_result r;
	char out[KPL_U128_DEC_SIZE];
	struct buf b;

	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(buf_append_str(&b, "prefix"), KL_OK);
	CU_ASSERT_EQUAL_FATAL(kpl_encode(recs, 4, &b), KL_OK);
	CU_ASSERT_EQUAL(b.len, 6 + kpl_encoded_size(recs, 4));
	CU_ASSERT_EQUAL(memcmp(b.data, "prefix", 6), 0);
	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, (uint8_t *)b.data + 6, b.len - 6, NULL, &info, &r), KL_OK);
	CU_ASSERT_EQUAL(r.verdict, KPL_AGGREGATE);
	CU_ASSERT_EQUAL_FATAL(r.nrecords, 4);
	for (size_t i = 0; i < 4; i++) {
		const struct kpl_record *k = &r.records[i];

		CU_ASSERT_EQUAL(k->sub_sequence_number, i);
		CU_ASSERT_EQUAL(k->len, recs[i].len);
		CU_ASSERT(k->len == 0 || memcmp(k->data, recs[i].data, k->len) == 0);
		CU_ASSERT((const char *)k->data >= b.data && (const char *)k->data + k->len <= b.data + b.len);
		CU_ASSERT(slice_eq(k->partition_key, k->partition_key_len, recs[i].partition_key));
		if (recs[i].explicit_hash_key) {
			CU_ASSERT(slice_eq(k->explicit_hash_key, k->explicit_hash_key_len,
					   recs[i].explicit_hash_key));
		} else {
			CU_ASSERT_PTR_NULL(k->explicit_hash_key);
		}
	}
	/* Keys were deduplicated: both "a" records share one table entry. */
	CU_ASSERT_PTR_EQUAL(r.records[0].partition_key, r.records[2].partition_key);
	CU_ASSERT_PTR_EQUAL(r.records[1].explicit_hash_key, r.records[3].explicit_hash_key);
	kpl_u128_format(r.records[0].hash_key, out);
	CU_ASSERT_STRING_EQUAL(out, MD5_A_DEC);
	kpl_u128_format(r.records[1].hash_key, out);
	CU_ASSERT_STRING_EQUAL(out, TWO_64_DEC);
	buf_done(&b);
	kpl_decoder_free(d);
}

static void test_decoder_reuse_large(void)
{
	enum { N = 5000 };
	struct kpl_enc_record *recs = calloc(N, sizeof(*recs));
	char (*keys)[16] = calloc(N, sizeof(*keys));
	struct kpl_decoder *d = decoder();
	struct kl_errinfo info;
	struct kpl_result r;
	struct buf b;
	bool ok = true;

	CU_ASSERT_FATAL(recs && keys);
	for (size_t i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%zu", i % 300);
		recs[i] = (struct kpl_enc_record){ .partition_key = keys[i], .data = keys[i],
						   .len = strlen(keys[i]) };
	}
	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(kpl_encode(recs, N, &b), KL_OK);
	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, (uint8_t *)b.data, b.len, NULL, &info, &r), KL_OK);
	CU_ASSERT_EQUAL_FATAL(r.nrecords, N);
	for (size_t i = 0; i < N; i++)
		ok = ok && slice_eq(r.records[i].data, r.records[i].len, keys[i]) &&
		     slice_eq(r.records[i].partition_key, r.records[i].partition_key_len, keys[i]) &&
		     r.records[i].sub_sequence_number == i;
	CU_ASSERT(ok);
	/* A smaller aggregate after a large one: no stale records. */
	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, hand_one, sizeof(hand_one), NULL, &info, &r), KL_OK);
	CU_ASSERT_EQUAL(r.nrecords, 1);
	CU_ASSERT(slice_eq(r.records[0].data, r.records[0].len, "abc"));
	CU_ASSERT_EQUAL(kpl_decoder_stats(d)->inputs, 2);
	CU_ASSERT_EQUAL(kpl_decoder_stats(d)->user_records, N + 1);
	buf_done(&b);
	free(recs);
	free(keys);
	kpl_decoder_free(d);
}

static void test_empty_aggregate(void)
{
	const uint8_t body[] = { 0x0a, 0x01, 'k' }; /* a key table, no records */
	struct kpl_decoder *d = decoder();
	struct kl_errinfo info;
	struct kpl_result r;
	struct buf b;

	wrap(&b, body, sizeof(body));
	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, (uint8_t *)b.data, b.len, NULL, &info, &r), KL_OK);
	CU_ASSERT_EQUAL(r.verdict, KPL_AGGREGATE);
	CU_ASSERT_EQUAL(r.nrecords, 0);
	buf_done(&b);
	kpl_decoder_free(d);
}

/* ------------------------------------------------------------ corrupt input */

static void test_plain_framing(void)
{
	uint8_t bad[sizeof(hand_two)];
	uint8_t short20[20] = { 0xf3, 0x89, 0x9a, 0xc2 };

	expect_plain((const uint8_t *)"{\"event\":\"click\"}", 17, KPL_REASON_NO_MAGIC);
	expect_plain((const uint8_t *)"", 0, KPL_REASON_NO_MAGIC);
	expect_plain(hand_two, 3, KPL_REASON_NO_MAGIC);
	expect_plain(short20, sizeof(short20), KPL_REASON_TOO_SHORT);
	expect_plain(hand_two, 4, KPL_REASON_TOO_SHORT);

	/* One flipped bit in the digest, in the body, and a truncated copy. */
	memcpy(bad, hand_two, sizeof(bad));
	bad[sizeof(bad) - 1] ^= 1;
	expect_plain(bad, sizeof(bad), KPL_REASON_BAD_DIGEST);
	memcpy(bad, hand_two, sizeof(bad));
	bad[26] ^= 0x20;
	expect_plain(bad, sizeof(bad), KPL_REASON_BAD_DIGEST);
	expect_plain(hand_two, sizeof(hand_two) - 1, KPL_REASON_BAD_DIGEST);
	expect_plain(hand_two, 30, KPL_REASON_BAD_DIGEST);
}

static void test_plain_bad_protobuf(void)
{
	/* A record whose length runs past the end. */
	const uint8_t truncated[] = { 0x0a, 0x01, 'k', 0x1a, 0x07, 0x08, 0x00 };
	/* An 11-byte varint, and a 10-byte one that overflows 64 bits. */
	const uint8_t long_varint[] = { 0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					0xff, 0xff, 0xff, 0xff, 0x01 };
	const uint8_t overflow[] = { 0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				     0xff, 0xff, 0xff, 0x02 };
	/* A varint cut off at the end of the message. */
	const uint8_t cut_varint[] = { 0x0a, 0x01, 'k', 0x28, 0x80 };
	/* Field number 0. */
	const uint8_t field_zero[] = { 0x00, 0x01 };
	/* A group (wire type 3). */
	const uint8_t group[] = { 0x0a, 0x01, 'k', 0x2b };
	/* Record without data (required). */
	const uint8_t no_data[] = { 0x0a, 0x01, 'k', 0x1a, 0x02, 0x08, 0x00 };
	/* Record without partition_key_index (required). */
	const uint8_t no_pk[] = { 0x0a, 0x01, 'k', 0x1a, 0x03, 0x1a, 0x01, 'd' };
	/* Tag without its required key. */
	const uint8_t tag_no_key[] = { 0x0a, 0x01, 'k', 0x1a, 0x09, 0x08, 0x00, 0x1a, 0x01, 'd',
				       0x22, 0x02, 0x12, 0x00 };
	/* A truncated fixed32 inside a record. */
	const uint8_t cut_fixed[] = { 0x0a, 0x01, 'k', 0x1a, 0x03, 0x08, 0x00, 0x2d };
	/* A varint with a valid tenth byte still parses (control case). */
	const uint8_t ten_byte_ok[] = { 0x0a, 0x01, 'k', 0x28, 0xff, 0xff, 0xff, 0xff, 0xff,
					0xff, 0xff, 0xff, 0xff, 0x01, 0x1a, 0x05, 0x08, 0x00,
					0x1a, 0x01, 'd' };
	struct kpl_decoder *d;
	struct kl_errinfo info;
	struct kpl_result r;
	struct buf b;

	expect_plain_body(truncated, sizeof(truncated), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(long_varint, sizeof(long_varint), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(overflow, sizeof(overflow), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(cut_varint, sizeof(cut_varint), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(field_zero, sizeof(field_zero), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(group, sizeof(group), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(no_data, sizeof(no_data), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(no_pk, sizeof(no_pk), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(tag_no_key, sizeof(tag_no_key), KPL_REASON_BAD_PROTOBUF);
	expect_plain_body(cut_fixed, sizeof(cut_fixed), KPL_REASON_BAD_PROTOBUF);

	d = decoder();
	wrap(&b, ten_byte_ok, sizeof(ten_byte_ok));
	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, (uint8_t *)b.data, b.len, NULL, &info, &r), KL_OK);
	CU_ASSERT_EQUAL(r.verdict, KPL_AGGREGATE);
	CU_ASSERT_EQUAL_FATAL(r.nrecords, 1);
	CU_ASSERT(slice_eq(r.records[0].data, r.records[0].len, "d"));
	buf_done(&b);
	kpl_decoder_free(d);
}

static void test_plain_bad_index(void)
{
	/* pk index 1 with a one-entry table. */
	const uint8_t pk_out[] = { 0x0a, 0x01, 'k', 0x1a, 0x05, 0x08, 0x01, 0x1a, 0x01, 'd' };
	/* ehk index 0 with no EHK table. */
	const uint8_t ehk_out[] = { 0x0a, 0x01, 'k', 0x1a, 0x07, 0x08, 0x00, 0x10, 0x00,
				    0x1a, 0x01, 'd' };
	/* A huge index. */
	const uint8_t pk_huge[] = { 0x0a, 0x01, 'k', 0x1a, 0x0e, 0x08, 0xff, 0xff, 0xff, 0xff,
				    0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x1a, 0x01, 'd' };
	/* An explicit hash key that is not a number, and one above 2^128-1. */
	const uint8_t ehk_bad[] = { 0x0a, 0x01, 'k', 0x12, 0x03, '1', '2', 'x', 0x1a, 0x07,
				    0x08, 0x00, 0x10, 0x00, 0x1a, 0x01, 'd' };
	uint8_t ehk_big[3 + 2 + 39 + 9] = { 0x0a, 0x01, 'k', 0x12, 39 };

	memcpy(ehk_big + 5, "340282366920938463463374607431768211456", 39);
	memcpy(ehk_big + 44, "\x1a\x07\x08\x00\x10\x00\x1a\x01" "d", 9);
	expect_plain_body(pk_out, sizeof(pk_out), KPL_REASON_BAD_INDEX);
	expect_plain_body(ehk_out, sizeof(ehk_out), KPL_REASON_BAD_INDEX);
	expect_plain_body(pk_huge, sizeof(pk_huge), KPL_REASON_BAD_INDEX);
	expect_plain_body(ehk_bad, sizeof(ehk_bad), KPL_REASON_BAD_HASH_KEY);
	expect_plain_body(ehk_big, sizeof(ehk_big), KPL_REASON_BAD_HASH_KEY);
	CU_ASSERT_STRING_EQUAL(kpl_reason_str(KPL_REASON_BAD_INDEX), "key index out of range");
	CU_ASSERT_STRING_EQUAL(kpl_reason_str(KPL_REASON_BAD_DIGEST), "bad MD5");
}

/* ------------------------------------------------------------ hash ranges */

static enum kpl_verdict verdict_in(const struct kpl_enc_record *recs, size_t n, const char *start,
				   const char *end, size_t *ret_n)
{
	struct kpl_decoder *d = decoder();
	struct kpl_hash_range range;
	struct kl_errinfo info;
	struct kpl_result r;
	struct buf b;
	enum kpl_verdict v;

	CU_ASSERT_EQUAL_FATAL(kpl_hash_range_parse(start, end, &info, &range), KL_OK);
	buf_init(&b, 0);
	CU_ASSERT_EQUAL_FATAL(kpl_encode(recs, n, &b), KL_OK);
	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, (uint8_t *)b.data, b.len, &range, &info, &r), KL_OK);
	v = r.verdict;
	*ret_n = r.nrecords;
	if (v == KPL_FILTERED) {
		CU_ASSERT_EQUAL(kpl_decoder_stats(d)->filtered_aggregates, 1);
		CU_ASSERT_EQUAL(kpl_decoder_stats(d)->filtered_user_records, n);
		CU_ASSERT_EQUAL(kpl_decoder_stats(d)->user_records, 0);
	} else {
		CU_ASSERT_EQUAL(kpl_decoder_stats(d)->filtered_aggregates, 0);
	}
	buf_done(&b);
	kpl_decoder_free(d);
	return v;
}

static void test_range_by_ehk(void)
{
	const struct kpl_enc_record lower[] = {
		{ .partition_key = "a", .explicit_hash_key = "0", .data = "1", .len = 1 },
		{ .partition_key = "a", .explicit_hash_key = TWO_127_M1_DEC, .data = "2", .len = 1 },
	};
	const struct kpl_enc_record mixed[] = {
		{ .partition_key = "a", .explicit_hash_key = "0", .data = "1", .len = 1 },
		{ .partition_key = "a", .explicit_hash_key = TWO_127_DEC, .data = "2", .len = 1 },
		{ .partition_key = "a", .explicit_hash_key = "5", .data = "3", .len = 1 },
	};
	size_t n;

	CU_ASSERT_EQUAL(verdict_in(lower, 2, "0", TWO_127_M1_DEC, &n), KPL_AGGREGATE);
	CU_ASSERT_EQUAL(n, 2);
	/* One sub-record in the upper half: the whole aggregate goes. */
	CU_ASSERT_EQUAL(verdict_in(mixed, 3, "0", TWO_127_M1_DEC, &n), KPL_FILTERED);
	CU_ASSERT_EQUAL(n, 3);
	CU_ASSERT_EQUAL(verdict_in(lower, 2, TWO_127_DEC, U128_MAX_DEC, &n), KPL_FILTERED);
	CU_ASSERT_EQUAL(verdict_in(mixed, 3, "0", U128_MAX_DEC, &n), KPL_AGGREGATE);
	/* The EHK wins over the partition key's MD5 (MD5("a") is not 0). */
	CU_ASSERT_EQUAL(verdict_in(lower, 1, "0", "0", &n), KPL_AGGREGATE);
}

static void test_range_by_md5(void)
{
	const struct kpl_enc_record recs[] = {
		{ .partition_key = "a", .data = "1", .len = 1 },
		{ .partition_key = "a", .data = "2", .len = 1 },
	};
	size_t n;

	CU_ASSERT_EQUAL(verdict_in(recs, 2, MD5_A_DEC, MD5_A_DEC, &n), KPL_AGGREGATE);
	CU_ASSERT_EQUAL(verdict_in(recs, 2, "0", MD5_A_DEC, &n), KPL_AGGREGATE);
	CU_ASSERT_EQUAL(verdict_in(recs, 2, MD5_A_DEC, U128_MAX_DEC, &n), KPL_AGGREGATE);
	CU_ASSERT_EQUAL(verdict_in(recs, 2, MD5_A_P1_DEC, U128_MAX_DEC, &n), KPL_FILTERED);
	CU_ASSERT_EQUAL(verdict_in(recs, 2, "0", MD5_A_M1_DEC, &n), KPL_FILTERED);
}

static void test_range_ignores_plain(void)
{
	struct kpl_decoder *d = decoder();
	struct kpl_hash_range range;
	struct kl_errinfo info;
	struct kpl_result r;

	CU_ASSERT_EQUAL_FATAL(kpl_hash_range_parse("0", "0", &info, &range), KL_OK);
	CU_ASSERT_EQUAL_FATAL(kpl_decode(d, (const uint8_t *)"plain", 5, &range, &info, &r), KL_OK);
	CU_ASSERT_EQUAL(r.verdict, KPL_PLAIN);
	CU_ASSERT_EQUAL(kpl_decoder_stats(d)->filtered_aggregates, 0);
	kpl_decoder_free(d);
}

static void test_encode_errors(void)
{
	const struct kpl_enc_record no_key = { .partition_key = NULL, .data = "x", .len = 1 };
	const struct kpl_enc_record ok = { .partition_key = "k", .data = "0123456789", .len = 10 };
	struct buf b;

	buf_init(&b, 0);
	CU_ASSERT_EQUAL(kpl_encode(&no_key, 1, &b), KL_EINVAL);
	CU_ASSERT_EQUAL(b.len, 0);
	CU_ASSERT_EQUAL(kpl_encode(&ok, 0, &b), KL_EINVAL);
	CU_ASSERT_EQUAL(kpl_encoded_size(&ok, 0), 0);
	CU_ASSERT_EQUAL(b.len, 0);
	buf_done(&b);
	/* Past the buffer's cap: refused, buffer unchanged. */
	buf_init(&b, 30);
	CU_ASSERT_EQUAL(kpl_encode(&ok, 1, &b), KL_ENOMEM);
	CU_ASSERT_EQUAL(b.len, 0);
	buf_done(&b);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_u128_edges),
		KL_TEST(test_u128_cmp_and_be),
		KL_TEST(test_hash_range_parse),
		KL_TEST(test_decode_hand_written),
		KL_TEST(test_decode_pk_md5_every_length),
		KL_TEST(test_encoder_exact_bytes),
		KL_TEST(test_encode_decode_roundtrip),
		KL_TEST(test_decoder_reuse_large),
		KL_TEST(test_empty_aggregate),
		KL_TEST(test_plain_framing),
		KL_TEST(test_plain_bad_protobuf),
		KL_TEST(test_plain_bad_index),
		KL_TEST(test_range_by_ehk),
		KL_TEST(test_range_by_md5),
		KL_TEST(test_range_ignores_plain),
		KL_TEST(test_encode_errors),
		{ 0 },
	};

	return kl_test_run("kpl", t);
}
