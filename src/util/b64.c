/* SPDX-License-Identifier: Apache-2.0 */
/*
 * b64.c: the base64 codec. The decoder sits on the record path (every
 * GetRecords record's Data is base64, about half of a body's bytes), so it
 * has vector variants for x86-64: AVX2 (32 characters per step) and SSSE3
 * (16), chosen once at run time from what the CPU has, each followed by the
 * scalar code for the last characters. Invariants every variant keeps:
 * they accept and reject exactly the same inputs (any byte outside the
 * alphabet, '=' included, before the trailing '=' run; a length of 4k+1
 * without it), write exactly the same bytes, never read outside in[0, len)
 * and never write past the decoded length.
 */
#include "config.h"

#include <stdatomic.h>
#include <string.h>

#include "b64.h"
#include "util.h"

/*
 * The vector variants need a compiler that can build one function for a
 * wider target than the rest of the file (the target attribute), so that
 * the binary still runs on any x86-64 and asks the CPU at run time.
 */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute) && \
	defined(__has_include)
#if __has_attribute(target) && __has_include(<immintrin.h>)
#define KL_B64_X86 1
#include <immintrin.h>
#endif
#endif

/* ------------------------------------------------------------ encoder */

static const char b64_chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void kl_b64_encode(const uint8_t *in, size_t n, char *out)
{
	size_t i = 0, o = 0;

	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64_chars[v >> 18];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = b64_chars[(v >> 6) & 63];
		out[o++] = b64_chars[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = b64_chars[v >> 18];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
}

/* ------------------------------------------------------------ scalar decoder */

/* 0..63 for alphabet characters, 0xff for everything else. */
static const uint8_t b64_rev[256] = {
#define X 0xff
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, 62, X, X, X, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X, X, X, X, X, X,
	X, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X, X, X, X, X,
	X, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
#undef X
};

/*
 * Decodes s[i, len) (len already without its '=' run, not 4k+1, i a
 * multiple of 4) to out + o. Returns the decoded end, or SIZE_MAX when a
 * character is outside the alphabet.
 */
static size_t decode_scalar(const uint8_t *s, size_t i, size_t len, uint8_t *out, size_t o)
{
	size_t tail = len % 4;

	for (; i + 4 <= len; i += 4) {
		uint32_t a = b64_rev[s[i]], b = b64_rev[s[i + 1]];
		uint32_t c = b64_rev[s[i + 2]], d = b64_rev[s[i + 3]];
		if ((a | b | c | d) & 0x80)
			return SIZE_MAX;
		uint32_t v = a << 18 | b << 12 | c << 6 | d;
		out[o] = (uint8_t)(v >> 16);
		out[o + 1] = (uint8_t)(v >> 8);
		out[o + 2] = (uint8_t)v;
		o += 3;
	}
	if (tail) {
		uint32_t a = b64_rev[s[i]], b = b64_rev[s[i + 1]];
		uint32_t c = tail == 3 ? b64_rev[s[i + 2]] : 0;
		if ((a | b | c) & 0x80)
			return SIZE_MAX;
		uint32_t v = a << 18 | b << 12 | c << 6;
		out[o++] = (uint8_t)(v >> 16);
		if (tail == 3)
			out[o++] = (uint8_t)(v >> 8);
	}
	return o;
}

/* ------------------------------------------------------------ vector decoders */

#ifdef KL_B64_X86
/*
 * One vector step, the same for 16 or 32 characters (each 128-bit lane on
 * its own, as pshufb works):
 *
 * 1. Validate with two 16-entry tables, one indexed by each nibble of the
 *    character: lo_invalid[lo] has a bit for every group of high nibbles
 *    in which that low nibble is NOT in the alphabet, hi_group[hi] is the
 *    bit of hi's group; a character is invalid iff the two AND to nonzero.
 *      bit 0x01: hi 0, 1, 8..f  nothing valid (controls, space, '!'..'*',
 *                               bytes >= 0x80)
 *      bit 0x02: hi 2           '+' (b) and '/' (f) only
 *      bit 0x04: hi 3           '0'..'9' (0..9); ':'..'?' and '=' are not
 *      bit 0x08: hi 4, 6        'A'..'O', 'a'..'o' (1..f); '@' '`' are not
 *      bit 0x10: hi 5, 7        'P'..'Z', 'p'..'z' (0..a); the rest are not
 * 2. Translate by adding an offset chosen by the high nibble: +4 for
 *    digits, -65 for 'A'..'Z', -71 for 'a'..'z', +19 for '+'. '/' shares
 *    '+''s nibble, so its index is moved down by one (the compare gives
 *    -1) to an entry of its own, +16.
 * 3. Pack each 4 x 6 bits to 3 bytes: maddubs makes a<<6|b and c<<6|d in
 *    16 bits, madd makes a<<18|b<<12|c<<6|d in 32 bits (little endian),
 *    and a shuffle keeps bytes 2, 1, 0 of each, 12 bytes per lane.
 */
#define B64_LO_INVALID                                                          \
	0x0b, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x07, 0x15, \
	0x17, 0x17, 0x17, 0x15
#define B64_HI_GROUP                                                            \
	0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x08, 0x10, 0x01, 0x01, 0x01, 0x01, \
	0x01, 0x01, 0x01, 0x01
#define B64_OFFSET                                                              \
	0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0
#define B64_PACK_ORDER                                                          \
	2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1

/*
 * The blocks_*() functions decode whole blocks of s[*pi, len) to out + o
 * while a whole block is left (so they never read past len), advance *pi,
 * and return the new output end, or SIZE_MAX at a character outside the
 * alphabet. Their stores are exact: 12 or 24 bytes per block.
 */
__attribute__((target("ssse3")))
static size_t blocks_ssse3(const uint8_t *s, size_t *pi, size_t len, uint8_t *out, size_t o)
{
	const __m128i lo_invalid = _mm_setr_epi8(B64_LO_INVALID);
	const __m128i hi_group = _mm_setr_epi8(B64_HI_GROUP);
	const __m128i offset = _mm_setr_epi8(B64_OFFSET);
	const __m128i order = _mm_setr_epi8(B64_PACK_ORDER);
	const __m128i nibble = _mm_set1_epi8(0x0f);
	const __m128i slash = _mm_set1_epi8('/');
	const __m128i zero = _mm_setzero_si128();
	size_t i = *pi;

	for (; i + 16 <= len; i += 16) {
		__m128i c = _mm_loadu_si128((const __m128i *)(s + i));
		__m128i hi = _mm_and_si128(_mm_srli_epi32(c, 4), nibble);
		__m128i lo = _mm_and_si128(c, nibble);
		__m128i bad = _mm_and_si128(_mm_shuffle_epi8(lo_invalid, lo),
					    _mm_shuffle_epi8(hi_group, hi));
		__m128i v;
		uint32_t last4;

		if (_mm_movemask_epi8(_mm_cmpeq_epi8(bad, zero)) != 0xffff)
			return SIZE_MAX;
		v = _mm_add_epi8(c, _mm_shuffle_epi8(offset,
						      _mm_add_epi8(hi, _mm_cmpeq_epi8(c, slash))));
		v = _mm_maddubs_epi16(v, _mm_set1_epi32(0x01400140));
		v = _mm_madd_epi16(v, _mm_set1_epi32(0x00011000));
		v = _mm_shuffle_epi8(v, order);
		/* 8 + 4 bytes: never past the decoded length. */
		_mm_storel_epi64((__m128i *)(out + o), v);
		last4 = (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(v, 8));
		memcpy(out + o + 8, &last4, 4);
		o += 12;
	}
	*pi = i;
	return o;
}

__attribute__((target("avx2")))
static size_t blocks_avx2(const uint8_t *s, size_t *pi, size_t len, uint8_t *out, size_t o)
{
	const __m256i lo_invalid = _mm256_setr_epi8(B64_LO_INVALID, B64_LO_INVALID);
	const __m256i hi_group = _mm256_setr_epi8(B64_HI_GROUP, B64_HI_GROUP);
	const __m256i offset = _mm256_setr_epi8(B64_OFFSET, B64_OFFSET);
	const __m256i order = _mm256_setr_epi8(B64_PACK_ORDER, B64_PACK_ORDER);
	/* The two lanes' 12 bytes made contiguous (dwords 3 and 7 unused). */
	const __m256i join = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
	const __m256i nibble = _mm256_set1_epi8(0x0f);
	const __m256i slash = _mm256_set1_epi8('/');
	size_t i = *pi;

	for (; i + 32 <= len; i += 32) {
		__m256i c = _mm256_loadu_si256((const __m256i *)(s + i));
		__m256i hi = _mm256_and_si256(_mm256_srli_epi32(c, 4), nibble);
		__m256i lo = _mm256_and_si256(c, nibble);
		__m256i bad = _mm256_and_si256(_mm256_shuffle_epi8(lo_invalid, lo),
					       _mm256_shuffle_epi8(hi_group, hi));
		__m256i v;

		if (!_mm256_testz_si256(bad, bad))
			return SIZE_MAX;
		v = _mm256_add_epi8(c, _mm256_shuffle_epi8(offset,
							    _mm256_add_epi8(hi, _mm256_cmpeq_epi8(c, slash))));
		v = _mm256_maddubs_epi16(v, _mm256_set1_epi32(0x01400140));
		v = _mm256_madd_epi16(v, _mm256_set1_epi32(0x00011000));
		v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, order), join);
		/* 16 + 8 bytes: never past the decoded length. */
		_mm_storeu_si128((__m128i *)(out + o), _mm256_castsi256_si128(v));
		_mm_storel_epi64((__m128i *)(out + o + 16), _mm256_extracti128_si256(v, 1));
		o += 24;
	}
	*pi = i;
	return o;
}
#endif

/* ------------------------------------------------------------ dispatch */

bool kl_b64_impl_available(enum kl_b64_impl impl)
{
	switch (impl) {
	case KL_B64_SCALAR:
		return true;
	case KL_B64_SSSE3:
#ifdef KL_B64_X86
		__builtin_cpu_init();
		return __builtin_cpu_supports("ssse3");
#else
		return false;
#endif
	case KL_B64_AVX2:
#ifdef KL_B64_X86
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2");
#else
		return false;
#endif
	case KL_B64_IMPL_COUNT:
		break;
	}
	return false;
}

const char *kl_b64_impl_name(enum kl_b64_impl impl)
{
	switch (impl) {
	case KL_B64_SCALAR:
		return "scalar";
	case KL_B64_SSSE3:
		return "ssse3";
	case KL_B64_AVX2:
		return "avx2";
	case KL_B64_IMPL_COUNT:
		break;
	}
	return "?";
}

enum kl_b64_impl kl_b64_impl_best(void)
{
	/* Asked once; a race only makes two threads compute the same answer. */
	static atomic_int best = -1;
	int b = atomic_load_explicit(&best, memory_order_relaxed);

	if (b < 0) {
		b = KL_B64_SCALAR;
		if (kl_b64_impl_available(KL_B64_AVX2))
			b = KL_B64_AVX2;
		else if (kl_b64_impl_available(KL_B64_SSSE3))
			b = KL_B64_SSSE3;
		atomic_store_explicit(&best, b, memory_order_relaxed);
	}
	return (enum kl_b64_impl)b;
}

enum kl_err kl_b64_decode_impl(enum kl_b64_impl impl, const char *in, size_t len, uint8_t *out,
			       size_t *ret_len)
{
	const uint8_t *s = (const uint8_t *)in;
	size_t i = 0, o = 0;

	while (len > 0 && s[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return KL_EPARSE;
#ifdef KL_B64_X86
	/* AVX2 takes 32 at a time, then SSSE3 the next 16 if there are. */
	if (impl == KL_B64_AVX2)
		o = blocks_avx2(s, &i, len, out, o);
	if (o != SIZE_MAX && (impl == KL_B64_AVX2 || impl == KL_B64_SSSE3))
		o = blocks_ssse3(s, &i, len, out, o);
	if (o == SIZE_MAX)
		return KL_EPARSE;
#else
	(void)impl;
#endif
	o = decode_scalar(s, i, len, out, o);
	if (o == SIZE_MAX)
		return KL_EPARSE;
	*ret_len = o;
	return KL_OK;
}

enum kl_err kl_b64_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len)
{
	return kl_b64_decode_impl(kl_b64_impl_best(), in, len, out, ret_len);
}
