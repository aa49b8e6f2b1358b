/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kpl.c: KPL aggregate decoding/encoding with a small protobuf reader of
 * our own (varints and length-delimited fields are all the format needs).
 *
 * Decoding is three passes over the aggregate, none allocating per record:
 * (1) frame check (magic, length, MD5); (2) walk AggregatedRecord, noting
 * the key tables and record bodies as slices of the input; (3) parse each
 * record body, check its indices, and compute its effective hash key (the
 * MD5 of each distinct partition key is computed once per aggregate, by
 * our own MD5, eight short keys at a time: see md5_lanes()).
 * Any failure before the hash-range check means "not an aggregate".
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "kpl.h"

/* ------------------------------------------------------------ u128 */

enum kl_err kpl_u128_parse(const char *s, size_t len, struct kpl_u128 *ret)
{
	struct kpl_u128 v = { 0, 0 };

	if (!s || len == 0)
		return KL_EINVAL;
	for (size_t i = 0; i < len; i++) {
		uint64_t d, lo_lo, lo_hi, carry;

		if (s[i] < '0' || s[i] > '9')
			return KL_EINVAL;
		d = (uint64_t)(s[i] - '0');
		/* v = v * 10 + d, the low word in two 32-bit halves. */
		lo_lo = (v.lo & 0xffffffffu) * 10 + d;
		lo_hi = (v.lo >> 32) * 10 + (lo_lo >> 32);
		carry = lo_hi >> 32;
		if (v.hi > (UINT64_MAX - carry) / 10)
			return KL_EINVAL;
		v.hi = v.hi * 10 + carry;
		v.lo = (lo_hi << 32) | (lo_lo & 0xffffffffu);
	}
	*ret = v;
	return KL_OK;
}

/* v /= 10; returns the remainder. */
static unsigned u128_divmod10(struct kpl_u128 *v)
{
	uint64_t q_hi = v->hi / 10, r = v->hi % 10, cur, q1, q0;

	cur = (r << 32) | (v->lo >> 32);
	q1 = cur / 10;
	r = cur % 10;
	cur = (r << 32) | (v->lo & 0xffffffffu);
	q0 = cur / 10;
	r = cur % 10;
	v->hi = q_hi;
	v->lo = (q1 << 32) | q0;
	return (unsigned)r;
}

void kpl_u128_format(struct kpl_u128 v, char out[KPL_U128_DEC_SIZE])
{
	char tmp[KPL_U128_DEC_SIZE];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + u128_divmod10(&v));
	} while (v.hi || v.lo);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
}

int kpl_u128_cmp(struct kpl_u128 a, struct kpl_u128 b)
{
	if (a.hi != b.hi)
		return a.hi < b.hi ? -1 : 1;
	if (a.lo != b.lo)
		return a.lo < b.lo ? -1 : 1;
	return 0;
}

struct kpl_u128 kpl_u128_from_be(const uint8_t be[16])
{
	struct kpl_u128 v = { 0, 0 };

	for (int i = 0; i < 8; i++) {
		v.hi = (v.hi << 8) | be[i];
		v.lo = (v.lo << 8) | be[8 + i];
	}
	return v;
}

enum kl_err kpl_hash_range_parse(const char *start_dec, const char *end_dec,
				 struct kl_errinfo *info, struct kpl_hash_range *ret)
{
	struct kpl_hash_range r;

	if (!start_dec || kpl_u128_parse(start_dec, strlen(start_dec), &r.start) != KL_OK)
		return kl_errinfo_set(info, KL_EINVAL, "kpl: bad startingHashKey '%s'",
				      start_dec ? start_dec : "(null)");
	if (!end_dec || kpl_u128_parse(end_dec, strlen(end_dec), &r.end) != KL_OK)
		return kl_errinfo_set(info, KL_EINVAL, "kpl: bad endingHashKey '%s'",
				      end_dec ? end_dec : "(null)");
	if (kpl_u128_cmp(r.start, r.end) > 0)
		return kl_errinfo_set(info, KL_EINVAL,
				      "kpl: startingHashKey %s is greater than endingHashKey %s",
				      start_dec, end_dec);
	*ret = r;
	return KL_OK;
}

bool kpl_hash_range_contains(const struct kpl_hash_range *range, struct kpl_u128 key)
{
	return kpl_u128_cmp(range->start, key) <= 0 && kpl_u128_cmp(key, range->end) <= 0;
}

/* ------------------------------------------------------------ MD5 */

/* md: a fetched MD5 (OpenSSL 3), or NULL for the built-in EVP_md5(). */
static bool md5(EVP_MD_CTX *ctx, const EVP_MD *md, const void *data, size_t len,
		uint8_t out[KPL_DIGEST_LEN])
{
	unsigned int n = 0;

	return EVP_DigestInit_ex(ctx, md ? md : EVP_md5(), NULL) == 1 &&
	       EVP_DigestUpdate(ctx, data, len) == 1 &&
	       EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == KPL_DIGEST_LEN;
}

/*
 * MD5 of partition keys (RFC 1321), our own: an aggregate holds a key per
 * user record, mostly a dozen bytes; one EVP call each (about 280 ns) was
 * a quarter of all MD5 time in bench_recordpath's mixed case. Short keys
 * go eight at a time through md5_lanes(), the rest through md5_short().
 * The aggregate's digest (a long input, where libcrypto's assembly wins)
 * still goes through md5() above. tests/unit/test_kpl.c checks these
 * against libcrypto for every key length up to 300.
 */
static const uint32_t md5_k[64] = {
	0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee,
	0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
	0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
	0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
	0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa,
	0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
	0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
	0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
	0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
	0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
	0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05,
	0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
	0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039,
	0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
	0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
	0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

/* Rotation of each step; the same four repeat within a round. */
static const uint8_t md5_rot[4][4] = {
	{ 7, 12, 17, 22 }, { 5, 9, 14, 20 }, { 4, 11, 16, 23 }, { 6, 10, 15, 21 },
};

/*
 * One step on type T (uint32_t, or md5_vec for eight messages at once);
 * the rotation of (a, b, c, d) is done by the unrolled loop's renaming.
 * f: the round's function of b, c, d.
 */
#define MD5_STEP(T, f, i, g)                                                      \
	do {                                                                      \
		T t_ = a + (f) + md5_k[i] + m[g];                                 \
		unsigned r_ = md5_rot[(i) / 16][(i) % 4];                         \
		a = d;                                                            \
		d = c;                                                            \
		c = b;                                                            \
		b += t_ << r_ | t_ >> (32 - r_);                                  \
	} while (0)

/* The 64 steps, fully unrolled so that g, the constants, the rotations
 * and the renaming fold away. */
#define MD5_ROUNDS(T)                                                             \
	do {                                                                      \
		_Pragma("GCC unroll 16")                                          \
		for (int i = 0; i < 16; i++)                                      \
			MD5_STEP(T, d ^ (b & (c ^ d)), i, i);                     \
		_Pragma("GCC unroll 16")                                          \
		for (int i = 16; i < 32; i++)                                     \
			MD5_STEP(T, c ^ (d & (b ^ c)), i, (5 * i + 1) % 16);      \
		_Pragma("GCC unroll 16")                                          \
		for (int i = 32; i < 48; i++)                                     \
			MD5_STEP(T, b ^ c ^ d, i, (3 * i + 5) % 16);              \
		_Pragma("GCC unroll 16")                                          \
		for (int i = 48; i < 64; i++)                                     \
			MD5_STEP(T, c ^ (b | ~d), i, (7 * i) % 16);               \
	} while (0)

static uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void md5_block(uint32_t h[4], const uint8_t *blk)
{
	uint32_t m[16], a = h[0], b = h[1], c = h[2], d = h[3];

	for (int i = 0; i < 16; i++)
		m[i] = load_le32(blk + 4 * i);
	MD5_ROUNDS(uint32_t);
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
}

static const uint32_t md5_init[4] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };

/* The digest of state h: its words, little endian. */
static void md5_digest(const uint32_t h[4], uint8_t out[KPL_DIGEST_LEN])
{
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (uint8_t)(h[i] >> (8 * j));
}

static void md5_short(const void *data, size_t len, uint8_t out[KPL_DIGEST_LEN])
{
	const uint8_t *p = data;
	uint32_t h[4] = { md5_init[0], md5_init[1], md5_init[2], md5_init[3] };
	uint64_t bits = (uint64_t)len * 8;
	uint8_t last[128];
	size_t rest, n;

	for (; len >= 64; p += 64, len -= 64)
		md5_block(h, p);
	/* The rest, 0x80, zeros, and the bit length (little endian) end the
	 * last block: one more block when fewer than 9 bytes are left. */
	rest = len;
	n = rest < 56 ? 64 : 128;
	if (rest)
		memcpy(last, p, rest);
	last[rest] = 0x80;
	memset(last + rest + 1, 0, n - 8 - rest - 1);
	for (int i = 0; i < 8; i++)
		last[n - 8 + i] = (uint8_t)(bits >> (8 * i));
	md5_block(h, last);
	if (n == 128)
		md5_block(h, last + 64);
	md5_digest(h, out);
}

#if defined(__GNUC__)
/*
 * Eight one-block MD5s side by side. MD5 is one long dependency chain
 * (about 5 cycles a step), so hashing one short key leaves most of the
 * core idle; the compiler's vector types (two SSE2 registers on x86-64,
 * NEON on arm64, plain words elsewhere) run eight chains at once. An
 * aggregate holds one partition key per user record, mostly a dozen bytes.
 */
#define MD5_LANES 8
#define MD5_LANE_KEY_MAX 55    /* key, 0x80 and the 8-byte length fit 64 */
typedef uint32_t md5_vec __attribute__((vector_size(4 * MD5_LANES)));

/* Digests of msg[0..n) (n <= MD5_LANES, each len[l] <= MD5_LANE_KEY_MAX). */
static void md5_lanes(const char *const msg[], const size_t len[], size_t n,
		      uint8_t out[][KPL_DIGEST_LEN])
{
	uint8_t blk[MD5_LANES][64];
	md5_vec m[16], a, b, c, d;

	memset(blk, 0, sizeof(blk));
	for (size_t l = 0; l < n; l++) {
		uint32_t bits = (uint32_t)len[l] * 8;

		if (len[l])
			memcpy(blk[l], msg[l], len[l]);
		blk[l][len[l]] = 0x80;
		blk[l][56] = (uint8_t)bits;
		blk[l][57] = (uint8_t)(bits >> 8);
	}
	for (int i = 0; i < 16; i++)
		for (int l = 0; l < MD5_LANES; l++)
			m[i][l] = load_le32(blk[l] + 4 * i);
	a = (md5_vec){ 0 } + md5_init[0];
	b = (md5_vec){ 0 } + md5_init[1];
	c = (md5_vec){ 0 } + md5_init[2];
	d = (md5_vec){ 0 } + md5_init[3];
	MD5_ROUNDS(md5_vec);
	for (size_t l = 0; l < n; l++) {
		uint32_t h[4] = { a[l] + md5_init[0], b[l] + md5_init[1], c[l] + md5_init[2],
				  d[l] + md5_init[3] };

		md5_digest(h, out[l]);
	}
}
#endif

/* ------------------------------------------------------------ protobuf reader */

enum {
	PB_VARINT = 0,
	PB_I64 = 1,
	PB_LEN = 2,
	PB_I32 = 5,
};

struct pb_reader {
	const uint8_t *p;
	const uint8_t *end;
};

struct pb_field {
	uint32_t num;
	unsigned wire;
	uint64_t value;        /* PB_VARINT */
	const uint8_t *ptr;    /* PB_LEN */
	size_t len;            /* PB_LEN */
};

/* Reads a varint of at most 10 bytes whose value fits 64 bits. */
static bool pb_varint(struct pb_reader *r, uint64_t *ret)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;

		if (r->p >= r->end)
			return false;
		b = *r->p++;
		if (shift == 63 && b > 1)
			return false; /* overflow or an 11th byte */
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

/* Returns 1 with *f filled, 0 at the end of the message, -1 if malformed.
 * Groups (wire types 3 and 4) are treated as malformed. */
static int pb_next(struct pb_reader *r, struct pb_field *f)
{
	uint64_t key, n;

	if (r->p == r->end)
		return 0;
	if (!pb_varint(r, &key))
		return -1;
	if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff)
		return -1;
	f->num = (uint32_t)(key >> 3);
	f->wire = (unsigned)(key & 7);
	switch (f->wire) {
	case PB_VARINT:
		return pb_varint(r, &f->value) ? 1 : -1;
	case PB_I64:
		if (r->end - r->p < 8)
			return -1;
		r->p += 8;
		return 1;
	case PB_I32:
		if (r->end - r->p < 4)
			return -1;
		r->p += 4;
		return 1;
	case PB_LEN:
		if (!pb_varint(r, &n) || n > (uint64_t)(r->end - r->p))
			return -1;
		f->ptr = r->p;
		f->len = (size_t)n;
		r->p += n;
		return 1;
	default:
		return -1;
	}
}

/* ------------------------------------------------------------ decoder */

/* A key-table entry with its lazily computed hash key. */
struct kpl_key {
	const char *str;
	size_t len;
	int state;             /* 0 not yet computed, 1 ok, -1 invalid,
	                        * 2 wanted (a partition key's hash, pass 3) */
	struct kpl_u128 hash;
};

struct kpl_decoder {
	EVP_MD_CTX *md;
	EVP_MD *md5;          /* fetched once: OpenSSL 3's implicit fetch per
	                       * init costs more than hashing a short key */
	struct kpl_key *pk;
	size_t npk, pk_alloc;
	struct kpl_key *ehk;
	size_t nehk, ehk_alloc;
	struct kpl_record *rec;
	size_t nrec, rec_alloc;
	const struct kpl_key **rec_pk;  /* pass 3: each record's partition
	                                 * key, when its hash is that key's */
	size_t rec_pk_alloc;
	struct kpl_stats stats;
};

enum kl_err kpl_decoder_new(struct kl_errinfo *info, struct kpl_decoder **ret)
{
	struct kpl_decoder *dec = calloc(1, sizeof(*dec));
	uint8_t digest[KPL_DIGEST_LEN];

	if (!dec)
		return kl_errinfo_set(info, KL_ENOMEM, "kpl: out of memory");
	dec->md = EVP_MD_CTX_new();
	if (!dec->md) {
		free(dec);
		return kl_errinfo_set(info, KL_ENOMEM, "kpl: out of memory");
	}
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	dec->md5 = EVP_MD_fetch(NULL, "MD5", NULL);
#endif
	/* Fail now, not on the first aggregate, if MD5 is unavailable. */
	if (!md5(dec->md, dec->md5, "", 0, digest)) {
		kpl_decoder_free(dec);
		return kl_errinfo_set(info, KL_ESTATE,
				      "kpl: libcrypto refuses MD5 (FIPS mode?); KPL needs it");
	}
	*ret = dec;
	return KL_OK;
}

void kpl_decoder_free(struct kpl_decoder *dec)
{
	if (!dec)
		return;
	EVP_MD_CTX_free(dec->md);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	EVP_MD_free(dec->md5);
#endif
	free(dec->pk);
	free(dec->ehk);
	free(dec->rec);
	free(dec->rec_pk);
	free(dec);
}

const struct kpl_stats *kpl_decoder_stats(const struct kpl_decoder *dec)
{
	return &dec->stats;
}

const char *kpl_reason_str(enum kpl_reason reason)
{
	switch (reason) {
	case KPL_REASON_NONE:
		return "aggregate";
	case KPL_REASON_NO_MAGIC:
		return "no KPL magic";
	case KPL_REASON_TOO_SHORT:
		return "too short for an aggregate";
	case KPL_REASON_BAD_DIGEST:
		return "bad MD5";
	case KPL_REASON_BAD_PROTOBUF:
		return "malformed protobuf";
	case KPL_REASON_BAD_INDEX:
		return "key index out of range";
	case KPL_REASON_BAD_HASH_KEY:
		return "bad explicit hash key";
	}
	return "unknown";
}

/* Makes room for one more element in *arr (count n, capacity *alloc). */
static bool grow(void **arr, size_t *alloc, size_t n, size_t elem)
{
	size_t want;
	void *p;

	if (n < *alloc)
		return true;
	want = *alloc ? *alloc * 2 : 16;
	if (want > SIZE_MAX / elem)
		return false;
	p = realloc(*arr, want * elem);
	if (!p)
		return false;
	*arr = p;
	*alloc = want;
	return true;
}

static bool key_push(struct kpl_key **arr, size_t *n, size_t *alloc, const struct pb_field *f)
{
	if (!grow((void **)arr, alloc, *n, sizeof(**arr)))
		return false;
	(*arr)[*n] = (struct kpl_key){ .str = (const char *)f->ptr, .len = f->len };
	(*n)++;
	return true;
}

/* Validates a Tag message: required string key = 1; optional string value = 2. */
static bool tag_valid(const uint8_t *p, size_t len)
{
	struct pb_reader r = { p, p + len };
	struct pb_field f;
	bool has_key = false;
	int rc;

	while ((rc = pb_next(&r, &f)) > 0)
		if (f.num == 1 && f.wire == PB_LEN)
			has_key = true;
	return rc == 0 && has_key;
}

/* Parses a Record body into *out (data, indices). Returns a reason. */
static enum kpl_reason record_parse(const uint8_t *p, size_t len, uint64_t *ret_pk_index,
				    bool *ret_has_ehk, uint64_t *ret_ehk_index,
				    struct kpl_record *out)
{
	struct pb_reader r = { p, p + len };
	struct pb_field f;
	bool has_pk = false, has_data = false;
	int rc;

	*ret_has_ehk = false;
	while ((rc = pb_next(&r, &f)) > 0) {
		/* A known number with another wire type is an unknown field to
		 * protobuf and is skipped; for singular fields the last one wins. */
		if (f.num == 1 && f.wire == PB_VARINT) {
			*ret_pk_index = f.value;
			has_pk = true;
		} else if (f.num == 2 && f.wire == PB_VARINT) {
			*ret_ehk_index = f.value;
			*ret_has_ehk = true;
		} else if (f.num == 3 && f.wire == PB_LEN) {
			out->data = f.ptr;
			out->len = f.len;
			has_data = true;
		} else if (f.num == 4 && f.wire == PB_LEN) {
			if (!tag_valid(f.ptr, f.len))
				return KPL_REASON_BAD_PROTOBUF;
		}
	}
	if (rc < 0 || !has_pk || !has_data)
		return KPL_REASON_BAD_PROTOBUF;
	return KPL_REASON_NONE;
}

/* The effective hash key of a partition-key entry: MD5 as big-endian. */
static void pk_hash(struct kpl_key *k)
{
	uint8_t digest[KPL_DIGEST_LEN];

	md5_short(k->str, k->len, digest);
	k->hash = kpl_u128_from_be(digest);
	k->state = 1;
}

/* Hashes every wanted partition key (state 2), short ones MD5_LANES at a
 * time: the keys of one aggregate are independent messages. */
static void pk_hash_wanted(struct kpl_decoder *dec)
{
#if defined(__GNUC__)
	struct kpl_key *batch[MD5_LANES];
	const char *msg[MD5_LANES];
	size_t len[MD5_LANES], n = 0;
	uint8_t digest[MD5_LANES][KPL_DIGEST_LEN];

	for (size_t j = 0; j <= dec->npk; j++) {
		struct kpl_key *k = j < dec->npk ? &dec->pk[j] : NULL;

		if (k && (k->state != 2 || k->len > MD5_LANE_KEY_MAX)) {
			if (k->state == 2)
				pk_hash(k);
			continue;
		}
		if (k) {
			batch[n] = k;
			msg[n] = k->str;
			len[n++] = k->len;
		}
		if (n == MD5_LANES || (!k && n > 1)) {
			md5_lanes(msg, len, n, digest);
			for (size_t l = 0; l < n; l++) {
				batch[l]->hash = kpl_u128_from_be(digest[l]);
				batch[l]->state = 1;
			}
			n = 0;
		}
	}
	if (n == 1)   /* one key alone: the scalar code is quicker */
		pk_hash(batch[0]);
#else
	for (size_t j = 0; j < dec->npk; j++)
		if (dec->pk[j].state == 2)
			pk_hash(&dec->pk[j]);
#endif
}

static void ehk_hash(struct kpl_key *k)
{
	if (k->state == 0)
		k->state = kpl_u128_parse(k->str, k->len, &k->hash) == KL_OK ? 1 : -1;
}

/* Pass 2 and 3 over a frame-checked protobuf body. */
static enum kpl_reason aggregate_parse(struct kpl_decoder *dec, const uint8_t *p, size_t len,
				       enum kl_err *ret_err)
{
	struct pb_reader r = { p, p + len };
	struct pb_field f;
	int rc;

	dec->npk = dec->nehk = dec->nrec = 0;
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.wire != PB_LEN || f.num > 3)
			continue;
		if (f.num == 1 && !key_push(&dec->pk, &dec->npk, &dec->pk_alloc, &f))
			goto nomem;
		if (f.num == 2 && !key_push(&dec->ehk, &dec->nehk, &dec->ehk_alloc, &f))
			goto nomem;
		if (f.num == 3) {
			if (!grow((void **)&dec->rec, &dec->rec_alloc, dec->nrec, sizeof(*dec->rec)))
				goto nomem;
			/* The raw body for now; pass 3 replaces it with the data. */
			dec->rec[dec->nrec++] = (struct kpl_record){ .data = f.ptr, .len = f.len };
		}
	}
	if (rc < 0)
		return KPL_REASON_BAD_PROTOBUF;
	while (dec->rec_pk_alloc < dec->nrec)
		if (!grow((void **)&dec->rec_pk, &dec->rec_pk_alloc, dec->rec_pk_alloc,
			  sizeof(*dec->rec_pk)))
			goto nomem;

	/* Pass 3; the partition keys' hashes are computed after it, together. */
	for (size_t i = 0; i < dec->nrec; i++) {
		struct kpl_record *rec = &dec->rec[i];
		uint64_t pk_index = 0, ehk_index = 0;
		bool has_ehk;
		enum kpl_reason reason;

		reason = record_parse(rec->data, rec->len, &pk_index, &has_ehk, &ehk_index, rec);
		if (reason != KPL_REASON_NONE)
			return reason;
		if (pk_index >= dec->npk || (has_ehk && ehk_index >= dec->nehk))
			return KPL_REASON_BAD_INDEX;
		rec->partition_key = dec->pk[pk_index].str;
		rec->partition_key_len = dec->pk[pk_index].len;
		rec->sub_sequence_number = i;
		if (has_ehk) {
			struct kpl_key *k = &dec->ehk[ehk_index];

			ehk_hash(k);
			if (k->state < 0)
				return KPL_REASON_BAD_HASH_KEY;
			rec->explicit_hash_key = k->str;
			rec->explicit_hash_key_len = k->len;
			rec->hash_key = k->hash;
			dec->rec_pk[i] = NULL;
		} else {
			struct kpl_key *k = &dec->pk[pk_index];

			if (k->state == 0)
				k->state = 2;
			rec->explicit_hash_key = NULL;
			rec->explicit_hash_key_len = 0;
			dec->rec_pk[i] = k;
		}
	}
	pk_hash_wanted(dec);
	for (size_t i = 0; i < dec->nrec; i++)
		if (dec->rec_pk[i])
			dec->rec[i].hash_key = dec->rec_pk[i]->hash;
	return KPL_REASON_NONE;

nomem:
	*ret_err = KL_ENOMEM;
	return KPL_REASON_NONE;
}

/* Fills the single plain record. */
static enum kl_err plain(struct kpl_decoder *dec, const uint8_t *data, size_t len,
			 enum kpl_reason reason, struct kl_errinfo *info, struct kpl_result *ret)
{
	if (!grow((void **)&dec->rec, &dec->rec_alloc, 0, sizeof(*dec->rec)))
		return kl_errinfo_set(info, KL_ENOMEM, "kpl: out of memory");
	dec->rec[0] = (struct kpl_record){ .data = data, .len = len };
	dec->nrec = 1;
	dec->stats.inputs++;
	dec->stats.plain++;
	*ret = (struct kpl_result){
		.verdict = KPL_PLAIN, .reason = reason, .nrecords = 1, .records = dec->rec,
	};
	return KL_OK;
}

enum kl_err kpl_decode(struct kpl_decoder *dec, const uint8_t *data, size_t len,
		       const struct kpl_hash_range *range, struct kl_errinfo *info,
		       struct kpl_result *ret)
{
	uint8_t digest[KPL_DIGEST_LEN];
	const uint8_t *body;
	size_t body_len;
	enum kpl_reason reason;
	enum kl_err err = KL_OK;
	bool inside = true;

	if (len < KPL_MAGIC_LEN || memcmp(data, KPL_MAGIC, KPL_MAGIC_LEN) != 0)
		return plain(dec, data, len, KPL_REASON_NO_MAGIC, info, ret);
	if (len <= KPL_MAGIC_LEN + KPL_DIGEST_LEN)
		return plain(dec, data, len, KPL_REASON_TOO_SHORT, info, ret);
	body = data + KPL_MAGIC_LEN;
	body_len = len - KPL_MAGIC_LEN - KPL_DIGEST_LEN;
	if (!md5(dec->md, dec->md5, body, body_len, digest))
		return kl_errinfo_set(info, KL_ESTATE, "kpl: MD5 failed in libcrypto");
	if (memcmp(digest, body + body_len, KPL_DIGEST_LEN) != 0)
		return plain(dec, data, len, KPL_REASON_BAD_DIGEST, info, ret);

	reason = aggregate_parse(dec, body, body_len, &err);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "kpl: out of memory for %zu-byte aggregate", len);
	if (reason != KPL_REASON_NONE)
		return plain(dec, data, len, reason, info, ret);

	if (range)
		for (size_t i = 0; i < dec->nrec && inside; i++)
			inside = kpl_hash_range_contains(range, dec->rec[i].hash_key);
	dec->stats.inputs++;
	if (inside) {
		dec->stats.aggregates++;
		dec->stats.user_records += dec->nrec;
	} else {
		dec->stats.filtered_aggregates++;
		dec->stats.filtered_user_records += dec->nrec;
	}
	*ret = (struct kpl_result){
		.verdict = inside ? KPL_AGGREGATE : KPL_FILTERED,
		.reason = KPL_REASON_NONE,
		.nrecords = dec->nrec,
		.records = dec->rec,
	};
	return KL_OK;
}

/* ------------------------------------------------------------ encoder */

static size_t varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Deduplicates strings into a table: an open-addressing set of indices. */
struct strtab {
	const char **str;      /* distinct strings, in order of first use */
	size_t n;
	size_t *slot;          /* index + 1 into str, 0 = empty */
	size_t nslots;         /* power of two, >= 2 * capacity */
};

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

static bool strtab_init(struct strtab *t, size_t capacity)
{
	size_t nslots = 16;

	while (nslots < capacity * 2)
		nslots *= 2;
	t->n = 0;
	t->nslots = nslots;
	t->str = calloc(capacity ? capacity : 1, sizeof(*t->str));
	t->slot = calloc(nslots, sizeof(*t->slot));
	return t->str && t->slot;
}

static void strtab_done(struct strtab *t)
{
	free(t->str);
	free(t->slot);
}

/* Returns the table index of s, adding it if new (capacity is never passed). */
static size_t strtab_index(struct strtab *t, const char *s)
{
	size_t i = (size_t)str_hash(s) & (t->nslots - 1);

	while (t->slot[i]) {
		if (strcmp(t->str[t->slot[i] - 1], s) == 0)
			return t->slot[i] - 1;
		i = (i + 1) & (t->nslots - 1);
	}
	t->str[t->n] = s;
	t->slot[i] = ++t->n;
	return t->n - 1;
}

/* Key tables and per-record indices of an aggregate being encoded. */
struct enc_plan {
	struct strtab pk, ehk;
	size_t *pk_index;
	size_t *ehk_index;     /* SIZE_MAX: none */
	size_t body_len;       /* protobuf bytes */
};

static void plan_done(struct enc_plan *plan)
{
	strtab_done(&plan->pk);
	strtab_done(&plan->ehk);
	free(plan->pk_index);
	free(plan->ehk_index);
}

static size_t record_body_len(const struct kpl_enc_record *rec, size_t pk_index, size_t ehk_index)
{
	size_t n = 1 + varint_size(pk_index) + 1 + varint_size(rec->len) + rec->len;

	if (ehk_index != SIZE_MAX)
		n += 1 + varint_size(ehk_index);
	return n;
}

static enum kl_err plan_build(const struct kpl_enc_record *recs, size_t n, struct enc_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	if (!strtab_init(&plan->pk, n) || !strtab_init(&plan->ehk, n))
		goto nomem;
	plan->pk_index = calloc(n ? n : 1, sizeof(*plan->pk_index));
	plan->ehk_index = calloc(n ? n : 1, sizeof(*plan->ehk_index));
	if (!plan->pk_index || !plan->ehk_index)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		size_t body;

		if (!recs[i].partition_key || (!recs[i].data && recs[i].len)) {
			plan_done(plan);
			return KL_EINVAL;
		}
		plan->pk_index[i] = strtab_index(&plan->pk, recs[i].partition_key);
		plan->ehk_index[i] = recs[i].explicit_hash_key ?
			strtab_index(&plan->ehk, recs[i].explicit_hash_key) : SIZE_MAX;
		body = record_body_len(&recs[i], plan->pk_index[i], plan->ehk_index[i]);
		plan->body_len += 1 + varint_size(body) + body;
	}
	for (size_t i = 0; i < plan->pk.n; i++) {
		size_t l = strlen(plan->pk.str[i]);

		plan->body_len += 1 + varint_size(l) + l;
	}
	for (size_t i = 0; i < plan->ehk.n; i++) {
		size_t l = strlen(plan->ehk.str[i]);

		plan->body_len += 1 + varint_size(l) + l;
	}
	return KL_OK;
nomem:
	plan_done(plan);
	return KL_ENOMEM;
}

size_t kpl_encoded_size(const struct kpl_enc_record *recs, size_t n)
{
	struct enc_plan plan;
	size_t size;

	if (n == 0 || plan_build(recs, n, &plan) != KL_OK)
		return 0;
	size = KPL_MAGIC_LEN + plan.body_len + KPL_DIGEST_LEN;
	plan_done(&plan);
	return size;
}

static uint8_t *put_string_field(uint8_t *p, uint8_t tag, const char *s)
{
	size_t l = strlen(s);

	*p++ = tag;
	p = put_varint(p, l);
	memcpy(p, s, l);
	return p + l;
}

enum kl_err kpl_encode(const struct kpl_enc_record *recs, size_t n, struct buf *out)
{
	struct enc_plan plan;
	size_t total;
	uint8_t *start, *p;
	EVP_MD_CTX *md;
	enum kl_err err;

	/* With no records there is no protobuf, and the 20 bytes left would not
	 * be an aggregate at all (KCL passes them through as data). */
	if (n == 0)
		return KL_EINVAL;
	err = plan_build(recs, n, &plan);
	if (err != KL_OK)
		return err;
	total = KPL_MAGIC_LEN + plan.body_len + KPL_DIGEST_LEN;
	err = buf_reserve(out, total);
	md = err == KL_OK ? EVP_MD_CTX_new() : NULL;
	if (err == KL_OK && !md)
		err = KL_ENOMEM;
	if (err != KL_OK) {
		plan_done(&plan);
		return err;
	}

	start = p = (uint8_t *)out->data + out->len;
	memcpy(p, KPL_MAGIC, KPL_MAGIC_LEN);
	p += KPL_MAGIC_LEN;
	for (size_t i = 0; i < plan.pk.n; i++)
		p = put_string_field(p, 0x0a, plan.pk.str[i]);   /* field 1, LEN */
	for (size_t i = 0; i < plan.ehk.n; i++)
		p = put_string_field(p, 0x12, plan.ehk.str[i]);  /* field 2, LEN */
	for (size_t i = 0; i < n; i++) {
		*p++ = 0x1a;                                     /* field 3, LEN */
		p = put_varint(p, record_body_len(&recs[i], plan.pk_index[i], plan.ehk_index[i]));
		*p++ = 0x08;                                     /* field 1, VARINT */
		p = put_varint(p, plan.pk_index[i]);
		if (plan.ehk_index[i] != SIZE_MAX) {
			*p++ = 0x10;                             /* field 2, VARINT */
			p = put_varint(p, plan.ehk_index[i]);
		}
		*p++ = 0x1a;                                     /* field 3, LEN */
		p = put_varint(p, recs[i].len);
		if (recs[i].len)
			memcpy(p, recs[i].data, recs[i].len);
		p += recs[i].len;
	}
	if (!md5(md, NULL, start + KPL_MAGIC_LEN, plan.body_len, p)) {
		EVP_MD_CTX_free(md);
		plan_done(&plan);
		return KL_ESTATE;
	}
	p += KPL_DIGEST_LEN;
	EVP_MD_CTX_free(md);
	plan_done(&plan);
	/* Keep buf's invariants: len counts the bytes, data stays NUL-terminated. */
	out->len += (size_t)(p - start);
	out->data[out->len] = '\0';
	return KL_OK;
}
