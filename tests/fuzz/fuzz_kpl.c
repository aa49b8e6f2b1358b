/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_kpl.c: libFuzzer target for the KPL decoder (built and run by
 * tests/fuzz/run.sh, outside automake). The first input byte picks a mode:
 * bit 0 wraps the rest as MAGIC ‖ body ‖ MD5(body) so the fuzzer reaches
 * the protobuf parser past the digest check; bits 1-2 pick a hash range.
 * Checked on every input: no memory error, a PLAIN result is the whole
 * input, user records point into the input, the range verdict agrees with
 * the hash keys, and an aggregate re-encodes and decodes to the same
 * records. Also round-trips the u128 decimal helpers.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "buf.h"
#include "kpl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

static bool inside(const void *p, size_t len, const uint8_t *buf, size_t size)
{
	const uint8_t *q = p;

	return len == 0 || (q >= buf && q <= buf + size && len <= (size_t)(buf + size - q));
}

static void check_u128(const uint8_t *data, size_t size)
{
	struct kpl_u128 a, b;
	char out[KPL_U128_DEC_SIZE];

	if (size > 48)
		size = 48;
	if (kpl_u128_parse((const char *)data, size, &a) != KL_OK)
		return;
	kpl_u128_format(a, out);
	CHECK(strlen(out) <= 39);
	CHECK(kpl_u128_parse(out, strlen(out), &b) == KL_OK);
	CHECK(kpl_u128_cmp(a, b) == 0);
}

/* Re-encodes the user records and checks the decoder returns them again. */
static void check_roundtrip(const struct kpl_result *r)
{
	struct kpl_enc_record *recs = calloc(r->nrecords + 1, sizeof(*recs));
	char **keys = calloc(r->nrecords + 1, sizeof(*keys));
	char (*ehks)[KPL_U128_DEC_SIZE] = calloc(r->nrecords + 1, sizeof(*ehks));
	struct kpl_decoder *dec = NULL;
	struct kl_errinfo info;
	struct kpl_result again;
	struct buf b;

	CHECK(recs && keys && ehks);
	/* An empty aggregate has no encoding (the encoder refuses it). */
	if (r->nrecords == 0)
		goto out;
	for (size_t i = 0; i < r->nrecords; i++) {
		const struct kpl_record *k = &r->records[i];

		/* The encoder takes C strings: keys with a NUL cannot round-trip. */
		if (memchr(k->partition_key, 0, k->partition_key_len))
			goto out;
		keys[i] = strndup(k->partition_key, k->partition_key_len);
		CHECK(keys[i]);
		recs[i].partition_key = keys[i];
		recs[i].data = k->data;
		recs[i].len = k->len;
		if (k->explicit_hash_key) {
			kpl_u128_format(k->hash_key, ehks[i]);
			recs[i].explicit_hash_key = ehks[i];
		}
	}
	buf_init(&b, 0);
	CHECK(kpl_encode(recs, r->nrecords, &b) == KL_OK);
	CHECK(b.len == kpl_encoded_size(recs, r->nrecords));
	CHECK(kpl_decoder_new(&info, &dec) == KL_OK);
	CHECK(kpl_decode(dec, (const uint8_t *)b.data, b.len, NULL, &info, &again) == KL_OK);
	CHECK(again.verdict == KPL_AGGREGATE);
	CHECK(again.nrecords == r->nrecords);
	for (size_t i = 0; i < r->nrecords; i++) {
		const struct kpl_record *x = &r->records[i], *y = &again.records[i];

		CHECK(x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0));
		CHECK(x->partition_key_len == y->partition_key_len &&
		      memcmp(x->partition_key, y->partition_key, x->partition_key_len) == 0);
		CHECK(kpl_u128_cmp(x->hash_key, y->hash_key) == 0);
		CHECK((x->explicit_hash_key == NULL) == (y->explicit_hash_key == NULL));
		CHECK(y->sub_sequence_number == i);
	}
	kpl_decoder_free(dec);
	buf_done(&b);
out:
	for (size_t i = 0; i < r->nrecords; i++)
		free(keys[i]);
	free(keys);
	free(recs);
	free(ehks);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const starts[] = { "0", "0", "170141183460469231731687303715884105728",
					      "100000000000000000000000000000000000000" };
	static const char *const ends[] = { "340282366920938463463374607431768211455",
					    "170141183460469231731687303715884105727",
					    "340282366920938463463374607431768211455",
					    "200000000000000000000000000000000000000" };
	struct kpl_decoder *dec = NULL;
	struct kpl_hash_range range;
	struct kl_errinfo info;
	struct kpl_result r;
	uint8_t *input = NULL;
	size_t len;
	unsigned mode;

	if (size == 0)
		return 0;
	mode = data[0];
	data++;
	size--;
	check_u128(data, size);
	if (mode & 1) {
		unsigned int n = 0;

		len = KPL_MAGIC_LEN + size + KPL_DIGEST_LEN;
		input = malloc(len);
		CHECK(input);
		memcpy(input, KPL_MAGIC, KPL_MAGIC_LEN);
		if (size)
			memcpy(input + KPL_MAGIC_LEN, data, size);
		CHECK(EVP_Digest(data, size, input + KPL_MAGIC_LEN + size, &n, EVP_md5(), NULL) == 1);
	} else {
		/* A private copy, so that ASan sees reads past the input. */
		len = size;
		input = malloc(len ? len : 1);
		CHECK(input);
		if (size)
			memcpy(input, data, size);
	}
	CHECK(kpl_hash_range_parse(starts[(mode >> 1) & 3], ends[(mode >> 1) & 3], &info, &range) ==
	      KL_OK);
	CHECK(kpl_decoder_new(&info, &dec) == KL_OK);
	CHECK(kpl_decode(dec, input, len, (mode & 8) ? NULL : &range, &info, &r) == KL_OK);
	if (r.verdict == KPL_PLAIN) {
		CHECK(r.nrecords == 1 && r.records[0].data == input && r.records[0].len == len);
		CHECK(r.reason != KPL_REASON_NONE);
	} else {
		bool all_in = true;

		CHECK(r.reason == KPL_REASON_NONE);
		for (size_t i = 0; i < r.nrecords; i++) {
			const struct kpl_record *k = &r.records[i];

			CHECK(inside(k->data, k->len, input, len));
			CHECK(inside(k->partition_key, k->partition_key_len, input, len));
			CHECK(!k->explicit_hash_key ||
			      inside(k->explicit_hash_key, k->explicit_hash_key_len, input, len));
			CHECK(k->sub_sequence_number == i);
			all_in = all_in && kpl_hash_range_contains(&range, k->hash_key);
		}
		if (mode & 8)
			CHECK(r.verdict == KPL_AGGREGATE);
		else
			CHECK((r.verdict == KPL_AGGREGATE) == all_in);
		check_roundtrip(&r);
	}
	kpl_decoder_free(dec);
	free(input);
	return 0;
}
