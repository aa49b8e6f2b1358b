/* SPDX-License-Identifier: Apache-2.0 */
/*
 * b64.h: the base64 decoder's variants, for the tests and benchmarks that
 * check them against each other. Everyone else calls kl_b64_decode()
 * (util.h), which picks the fastest variant the CPU has. Every variant
 * accepts and rejects exactly the same inputs and writes the same bytes.
 */
#ifndef KL_B64_H
#define KL_B64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

enum kl_b64_impl {
	KL_B64_SCALAR = 0,   /* table driven, four characters per step */
	KL_B64_SSSE3,        /* 16 characters per step (x86-64 with SSSE3) */
	KL_B64_AVX2,         /* 32 characters per step (x86-64 with AVX2) */
	KL_B64_IMPL_COUNT
};

/* Whether impl was compiled in and this CPU can run it. Thread-safe. */
bool kl_b64_impl_available(enum kl_b64_impl impl);

/* Its name ("scalar", "ssse3", "avx2"), static. */
const char *kl_b64_impl_name(enum kl_b64_impl impl);

/* The variant kl_b64_decode() uses on this CPU. Thread-safe. */
enum kl_b64_impl kl_b64_impl_best(void);

/*
 * kl_b64_decode() with the variant impl, which must be available: same
 * contract (out holds at least (len / 4 + 1) * 3 bytes; *ret_len written
 * only on success; KL_EPARSE for malformed input). Thread-safe.
 */
enum kl_err kl_b64_decode_impl(enum kl_b64_impl impl, const char *in, size_t len, uint8_t *out,
			       size_t *ret_len);

#endif
