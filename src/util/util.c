/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util.c: hex, UTF-8, clocks and the backoff random generator. The base64
 * codec declared in util.h lives in b64.c (it has vector variants).
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
