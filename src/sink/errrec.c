/* SPDX-License-Identifier: Apache-2.0 */
/*
 * errrec.c: a small, careful JSON writer for error records. Strings are
 * escaped per RFC 8259 and always come out as valid UTF-8 (bad bytes in a
 * plugin's message become U+FFFD), so every line parses. Nothing here
 * reads a clock.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "errrec.h"
#include "util.h"

const char *errrec_code_name(enum errrec_code code)
{
	switch (code) {
	case ERRREC_PROCESSING_FAILED: return "processing-failed";
	case ERRREC_PARTITION_KEY_MISSING: return "partition-key-missing";
	case ERRREC_PARTITION_KEY_INVALID: return "partition-key-invalid";
	case ERRREC_PLUGIN_CRASH: return "plugin-crash";
	}
	return "unknown";
}

const char *errrec_output_type(enum errrec_code code)
{
	switch (code) {
	case ERRREC_PROCESSING_FAILED:
	case ERRREC_PLUGIN_CRASH:
		return "processing-failed";
	case ERRREC_PARTITION_KEY_MISSING:
	case ERRREC_PARTITION_KEY_INVALID:
		return "partitioning-failed";
	}
	return "processing-failed";
}

static const char *default_message(enum errrec_code code)
{
	switch (code) {
	case ERRREC_PROCESSING_FAILED: return "The plugin reported a processing failure.";
	case ERRREC_PARTITION_KEY_MISSING: return "A partition key used by the S3 key template is missing.";
	case ERRREC_PARTITION_KEY_INVALID: return "A partition key value cannot be used in an S3 key.";
	case ERRREC_PLUGIN_CRASH: return "The plugin crashed repeatedly on this record.";
	}
	return "Unknown error.";
}


/* Appends s as a JSON string; at most max input bytes (cut at a character). */
static enum kl_err put_string(struct buf *out, const char *s, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)p), i = 0, run;
	enum kl_err err;

	if (n > max) {
		n = max;
		/* Do not cut a character (at most 3 continuation bytes). */
		for (int k = 0; k < 3 && n > 0 && (p[n] & 0xc0) == 0x80; k++)
			n--;
	}
	err = buf_append_byte(out, '"');
	while (!err && i < n) {
		/* Copy runs of plain characters in one go. */
		for (run = i; run < n && p[run] >= 0x20 && p[run] < 0x7f && p[run] != '"' &&
			      p[run] != '\\';
		     run++)
			;
		if (run > i) {
			err = buf_append(out, p + i, run - i);
			i = run;
			continue;
		}
		if (p[i] >= 0x80) {
			size_t l = kl_utf8_seq_len(p + i, n - i);

			if (l) {
				err = buf_append(out, p + i, l);
				i += l;
			} else {
				err = buf_append_str(out, "\\ufffd");
				i++;
			}
			continue;
		}
		switch (p[i]) {
		case '"': err = buf_append_str(out, "\\\""); break;
		case '\\': err = buf_append_str(out, "\\\\"); break;
		case '\b': err = buf_append_str(out, "\\b"); break;
		case '\f': err = buf_append_str(out, "\\f"); break;
		case '\n': err = buf_append_str(out, "\\n"); break;
		case '\r': err = buf_append_str(out, "\\r"); break;
		case '\t': err = buf_append_str(out, "\\t"); break;
		default: {
			char u[7] = { '\\', 'u', '0', '0', hex[p[i] >> 4], hex[p[i] & 15], 0 };

			err = buf_append(out, u, 6);
		}
		}
		i++;
	}
	if (!err)
		err = buf_append_byte(out, '"');
	return err;
}

static enum kl_err build(const struct errrec *r, struct buf *out)
{
	size_t b64 = KL_B64_ENCLEN(r->len);
	enum kl_err err;

	err = buf_printf(out, "{\"attemptsMade\":%" PRIu32 ",\"arrivalTimestamp\":%" PRId64
			 ",\"errorCode\":\"%s\",\"errorMessage\":",
			 r->attempts, r->arrival_ms, errrec_code_name(r->code));
	if (!err)
		err = put_string(out, r->message ? r->message : default_message(r->code),
				 ERRREC_MESSAGE_MAX);
	if (!err)
		err = buf_printf(out, ",\"attemptEndingTimestamp\":%" PRId64 ",\"rawData\":\"",
				 r->arrival_ms);
	if (!err)
		err = buf_reserve(out, b64);
	if (err)
		return err;
	kl_b64_encode(r->data, r->len, out->data + out->len);
	out->len += b64;
	err = buf_append_str(out, "\",\"shardId\":");
	if (!err)
		err = put_string(out, r->shard_id, SIZE_MAX);
	if (!err)
		err = buf_printf(out, ",\"sequenceNumber\":\"%s\",\"subSequenceNumber\":%" PRIu64
				 ",\"partitionKey\":",
				 r->esn->seq, r->esn->sub);
	if (!err)
		err = put_string(out, r->partition_key, SIZE_MAX);
	if (!err)
		err = buf_append_byte(out, '}');
	return err;
}

enum kl_err errrec_build(const struct errrec *r, struct buf *out, struct kl_errinfo *info)
{
	size_t start = out->len;
	enum kl_err err;

	if (!r->shard_id || !*r->shard_id)
		return kl_errinfo_set(info, KL_EINVAL, "errrec: no shard id");
	if (!r->esn || !esn_valid(r->esn))
		return kl_errinfo_set(info, KL_EINVAL, "errrec: no valid ESN");
	if (r->len && !r->data)
		return kl_errinfo_set(info, KL_EINVAL, "errrec: no data");
	err = build(r, out);
	if (err) {
		/* All or nothing: drop the partial line. */
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
		return kl_errinfo_set(info, err, "errrec: error record for %s/%s does not fit (%s)",
				      r->shard_id, r->esn->seq, kl_strerror(err));
	}
	return KL_OK;
}
