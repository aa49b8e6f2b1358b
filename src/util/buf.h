/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buf.h: a growable byte buffer with a hard cap. The cap is what bounds
 * memory: an append that would pass it fails with KL_ENOMEM and leaves the
 * buffer unchanged. The data is always NUL-terminated (not counted in len)
 * so text can be used in place. Not thread-safe; one owner at a time.
 */
#ifndef KL_BUF_H
#define KL_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

struct buf {
	char *data;       /* owned; NULL until the first append */
	size_t len;
	size_t alloc;
	size_t cap;       /* maximum len; 0 means BUF_DEFAULT_CAP */
};

#define BUF_DEFAULT_CAP ((size_t)64 << 20)

/* Sets up an empty buffer with the given cap (0 = default). No allocation. */
void buf_init(struct buf *b, size_t cap);
/* Frees the data; the buffer can be reused after buf_init(). NULL-safe. */
void buf_done(struct buf *b);
/* Like buf_done() but zeroes the bytes first (secrets). */
void buf_wipe(struct buf *b);
/* Empties the buffer, keeping its allocation. */
void buf_reset(struct buf *b);

enum kl_err buf_reserve(struct buf *b, size_t extra);
enum kl_err buf_append(struct buf *b, const void *data, size_t len);
enum kl_err buf_append_str(struct buf *b, const char *s);
enum kl_err buf_append_byte(struct buf *b, uint8_t c);
enum kl_err buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Hands the data to the caller (who frees it) and empties the buffer.
 * Returns an allocated "" for an empty buffer; NULL only on ENOMEM. */
char *buf_steal(struct buf *b);

#endif
