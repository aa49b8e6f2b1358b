/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buf.c: growable, capped byte buffers. Growth doubles, never past cap+1
 * bytes (the +1 is the terminating NUL).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "util.h"

void buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->cap = cap ? cap : BUF_DEFAULT_CAP;
}

void buf_done(struct buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
}

void buf_wipe(struct buf *b)
{
	if (!b)
		return;
	if (b->data)
		kl_wipe(b->data, b->alloc);
	buf_done(b);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

enum kl_err buf_reserve(struct buf *b, size_t extra)
{
	size_t need, alloc;
	char *p;

	if (extra > b->cap || b->len > b->cap - extra)
		return KL_ENOMEM;
	need = b->len + extra + 1;
	if (need <= b->alloc)
		return KL_OK;
	alloc = b->alloc ? b->alloc : 256;
	while (alloc < need)
		alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
	if (alloc > b->cap + 1)
		alloc = b->cap + 1;
	p = realloc(b->data, alloc);
	if (!p)
		return KL_ENOMEM;
	b->data = p;
	b->alloc = alloc;
	return KL_OK;
}

enum kl_err buf_append(struct buf *b, const void *data, size_t len)
{
	enum kl_err err = buf_reserve(b, len);

	if (err)
		return err;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return KL_OK;
}

enum kl_err buf_append_str(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

enum kl_err buf_append_byte(struct buf *b, uint8_t c)
{
	return buf_append(b, &c, 1);
}

enum kl_err buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	enum kl_err err;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return KL_EINVAL;
	err = buf_reserve(b, (size_t)n);
	if (err)
		return err;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return KL_OK;
}

char *buf_steal(struct buf *b)
{
	char *p;

	if (!b->data && buf_reserve(b, 0) != KL_OK)
		return NULL;
	if (!b->data)
		return NULL;
	p = b->data;
	p[b->len] = '\0';
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	return p;
}
