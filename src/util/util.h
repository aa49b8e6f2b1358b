/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util.h: small helpers with no better home: hex and base64 codecs, secret
 * wiping, monotonic and wall clocks, and a per-owner random generator for
 * backoff jitter (no global state: each owner keeps its own struct kl_rng).
 * All functions are thread-safe unless they take a struct the caller owns.
 */
#ifndef KL_UTIL_H
#define KL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

#define KL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Zeroes n bytes in a way the compiler cannot remove. */
void kl_wipe(void *p, size_t n);
/* Wipes and frees a NUL-terminated secret string. NULL-safe. */
void kl_free_secret(char *s);

/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void kl_hex(const uint8_t *in, size_t n, char *out);

/* Base64 (standard alphabet, padded). Encoded length for n input bytes: */
#define KL_B64_ENCLEN(n) ((((n) + 2) / 3) * 4)
/* Writes KL_B64_ENCLEN(n) chars plus a NUL into out. */
void kl_b64_encode(const uint8_t *in, size_t n, char *out);
/*
 * Decodes len chars (padding optional, no whitespace) into out, which must
 * hold at least (len / 4 + 1) * 3 bytes; only the decoded length is
 * written. On success stores the decoded length in *ret_len and returns
 * KL_OK; malformed input gives KL_EPARSE. Runs the fastest variant this CPU
 * has (AVX2, SSSE3 or scalar; b64.c), all with the same results.
 */
enum kl_err kl_b64_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len);

/*
 * Length of the valid UTF-8 sequence starting at s (n > 0 bytes left):
 * 1..4, or 0 when it is not valid UTF-8 (overlong forms, surrogates and
 * code points above U+10FFFF are invalid).
 */
size_t kl_utf8_seq_len(const unsigned char *s, size_t n);

/* Milliseconds on CLOCK_MONOTONIC (never jumps). */
int64_t kl_mono_ms(void);
/* Milliseconds since the Unix epoch (wall clock; never compared across hosts). */
int64_t kl_wall_ms(void);
/* Sleeps ms milliseconds (restarts after EINTR until the time has passed). */
void kl_sleep_ms(int64_t ms);

/* xorshift128+ state; seed it once with kl_rng_seed(). Not thread-safe. */
struct kl_rng {
	uint64_t s[2];
};
/* Seeds from getrandom() (falls back to time and pid). */
void kl_rng_seed(struct kl_rng *rng);
void kl_rng_seed_value(struct kl_rng *rng, uint64_t seed);
uint64_t kl_rng_next(struct kl_rng *rng);
/* Uniform in [0, bound) (bound > 0). */
uint64_t kl_rng_below(struct kl_rng *rng, uint64_t bound);

#endif
