/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util.c: codecs, clocks and the backoff random generator. The base64
 * decoder is table driven and processes four characters per step because
 * it sits on the record path (every GetRecords record is base64).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_GETRANDOM
#include <sys/random.h>
#endif

#include "util.h"

void kl_wipe(void *p, size_t n)
{
#ifdef HAVE_EXPLICIT_BZERO
	explicit_bzero(p, n);
#else
	volatile unsigned char *v = p;
	while (n--)
		*v++ = 0;
#endif
}

void kl_free_secret(char *s)
{
	if (!s)
		return;
	kl_wipe(s, strlen(s));
	free(s);
}

void kl_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

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

enum kl_err kl_b64_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len)
{
	const uint8_t *s = (const uint8_t *)in;
	size_t i = 0, o = 0, tail;

	while (len > 0 && s[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return KL_EPARSE;
	tail = len % 4;
	for (; i + 4 <= len; i += 4) {
		uint32_t a = b64_rev[s[i]], b = b64_rev[s[i + 1]];
		uint32_t c = b64_rev[s[i + 2]], d = b64_rev[s[i + 3]];
		if ((a | b | c | d) & 0x80)
			return KL_EPARSE;
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
			return KL_EPARSE;
		uint32_t v = a << 18 | b << 12 | c << 6;
		out[o++] = (uint8_t)(v >> 16);
		if (tail == 3)
			out[o++] = (uint8_t)(v >> 8);
	}
	*ret_len = o;
	return KL_OK;
}

size_t kl_utf8_seq_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int64_t kl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t kl_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kl_sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void kl_rng_seed_value(struct kl_rng *rng, uint64_t seed)
{
	rng->s[0] = splitmix64(&seed);
	rng->s[1] = splitmix64(&seed);
}

void kl_rng_seed(struct kl_rng *rng)
{
	uint64_t seed = 0;

#ifdef HAVE_GETRANDOM
	if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		seed = 0;
#endif
	if (!seed)
		seed = (uint64_t)kl_wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)rng;
	kl_rng_seed_value(rng, seed);
}

uint64_t kl_rng_next(struct kl_rng *rng)
{
	uint64_t s1 = rng->s[0];
	const uint64_t s0 = rng->s[1];

	rng->s[0] = s0;
	s1 ^= s1 << 23;
	rng->s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return rng->s[1] + s0;
}

uint64_t kl_rng_below(struct kl_rng *rng, uint64_t bound)
{
	uint64_t threshold = -bound % bound, r;

	do {
		r = kl_rng_next(rng);
	} while (r < threshold);
	return r % bound;
}
