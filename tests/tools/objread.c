/* SPDX-License-Identifier: Apache-2.0 */
/*
 * objread.c: the one reader of lake objects that the test judges share
 * (lakecheck.c, aggcheck.c; see objread.h). Objects are downloaded to an
 * unlinked temporary file and streamed through the decompressor a buffer
 * at a time, so memory is bounded by the buffers and OBJREAD_LINE_MAX,
 * never by an object's size.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "http.h"
#include "objread.h"

#define OBJREAD_CHUNK (64 * 1024)      /* read and inflate buffers */

int objread_init(struct objread *r, const char *prog, const char *endpoint, const char *region)
{
	struct creds_config cc = { 0 };
	struct aws_client_config ac = { 0 };
	const char *tmpdir = getenv("TMPDIR");
	char tmpl[4096];

	r->prog = prog;
	cc.disable_imds = 1;
	cc.region = region;
	if (http_global_init() != KL_OK) {
		fprintf(stderr, "%s: cannot set up HTTP\n", prog);
		return -1;
	}
	r->http_ready = true;
	if (creds_chain_new(&cc, &r->creds) != KL_OK) {
		fprintf(stderr, "%s: cannot set up credentials\n", prog);
		return -1;
	}
	ac.service = "s3";
	ac.region = region;
	ac.endpoint = endpoint;
	ac.http.timeout_ms = 60000;
	ac.retry.max_attempts = 5;
	if (aws_client_init(&r->s3, &ac, r->creds) != KL_OK) {
		fprintf(stderr, "%s: cannot set up the S3 client for %s\n", prog, endpoint);
		return -1;
	}
	r->s3_ready = true;
	snprintf(tmpl, sizeof(tmpl), "%s/%s.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp", prog);
	r->tmp_fd = mkstemp(tmpl);
	if (r->tmp_fd < 0) {
		fprintf(stderr, "%s: cannot create %s: %s\n", prog, tmpl, strerror(errno));
		return -1;
	}
	r->tmp_ready = true;
	unlink(tmpl);
	r->tok = json_tokener_new();
	r->line = malloc(OBJREAD_LINE_MAX + 1);
	if (!r->tok || !r->line) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return -1;
	}
	return 0;
}

void objread_done(struct objread *r)
{
	free(r->line);
	if (r->tok)
		json_tokener_free(r->tok);
	if (r->tmp_ready)
		close(r->tmp_fd);
	if (r->s3_ready)
		aws_client_done(&r->s3);
	creds_chain_free(r->creds);
	if (r->http_ready)
		http_global_cleanup();
}

int objread_list(struct objread *r, const char *bucket, const char *prefix,
		 int (*each)(void *arg, const char *key), void *arg)
{
	char *token = NULL;
	int rc = 0;

	do {
		struct s3_list_opts lo = { .prefix = prefix, .continuation_token = token };
		struct s3_list_result res = { 0 };
		struct kl_errinfo info = { 0 };
		char buf[512];
		enum kl_err err = s3_list_objects_v2(&r->s3, bucket, &lo, &res, &info);

		free(token);
		token = NULL;
		if (err) {
			fprintf(stderr, "%s: ListObjectsV2 %s/%s: %s\n", r->prog, bucket, prefix,
				kl_errinfo_format(err, &info, buf, sizeof(buf)));
			return -1;
		}
		for (size_t i = 0; i < res.n_entries && rc == 0; i++)
			rc = each(arg, res.entries[i].key);
		/* Taken over, not copied: s3_list_result_done() frees what is left. */
		if (rc == 0 && res.is_truncated) {
			token = res.next_continuation_token;
			res.next_continuation_token = NULL;
		}
		s3_list_result_done(&res);
	} while (token);
	return rc ? -1 : 0;
}

int objread_fetch(struct objread *r, const char *bucket, const char *key,
		  struct s3_object_info *ret_meta)
{
	struct kl_errinfo info = { 0 };
	char buf[512];
	enum kl_err err;

	if (ftruncate(r->tmp_fd, 0) != 0 || lseek(r->tmp_fd, 0, SEEK_SET) != 0) {
		fprintf(stderr, "%s: temporary file: %s\n", r->prog, strerror(errno));
		return -1;
	}
	err = s3_get_object_to_fd(&r->s3, bucket, key, r->tmp_fd, ret_meta, &info);
	if (err == KL_ENOTFOUND) {
		fprintf(stderr, "%s: %s vanished while being checked; run again\n", r->prog, key);
		return -1;
	}
	if (err) {
		fprintf(stderr, "%s: GetObject %s: %s\n", r->prog, key,
			kl_errinfo_format(err, &info, buf, sizeof(buf)));
		return -1;
	}
	if (lseek(r->tmp_fd, 0, SEEK_SET) != 0) {
		fprintf(stderr, "%s: temporary file: %s\n", r->prog, strerror(errno));
		return -1;
	}
	return 0;
}

enum objread_codec objread_codec_of(const char *key)
{
	size_t n = strlen(key);

	if (n > 3 && strcmp(key + n - 3, ".gz") == 0)
		return OBJREAD_GZIP;
	if (n > 4 && strcmp(key + n - 4, ".zst") == 0)
		return OBJREAD_ZSTD;
	return OBJREAD_PLAIN;
}

/* Splits decoded bytes into lines for the sink. */
static void feed(struct objread *r, const struct objread_sink *sink, const char *p, size_t n)
{
	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;

		if (!r->line_too_long) {
			if (r->line_len + take > OBJREAD_LINE_MAX) {
				r->line_too_long = true;
				sink->too_long(sink->arg);
			} else {
				memcpy(r->line + r->line_len, p, take);
				r->line_len += take;
			}
		}
		if (!nl)
			return;
		if (!r->line_too_long) {
			r->line[r->line_len] = '\0';
			sink->line(sink->arg, r->line, r->line_len);
		}
		r->line_len = 0;
		r->line_too_long = false;
		p = nl + 1;
		n -= take + 1;
	}
}

/* The delivery ends every output with the delimiter: a last line without
 * one is still a record. */
static void feed_end(struct objread *r, const struct objread_sink *sink)
{
	if (!r->line_too_long && r->line_len) {
		r->line[r->line_len] = '\0';
		sink->line(sink->arg, r->line, r->line_len);
	}
	r->line_len = 0;
	r->line_too_long = false;
}

const char *objread_decode(struct objread *r, enum objread_codec codec,
			   const struct objread_sink *sink)
{
	static unsigned char in[OBJREAD_CHUNK], out[OBJREAD_CHUNK];
	const char *why = NULL;
	bool ended = codec == OBJREAD_PLAIN;
	int fd = r->tmp_fd;
	z_stream z;
#ifdef HAVE_ZSTD
	ZSTD_DStream *zd = NULL;
	size_t zret = 1;
#else
	static char no_zstd[128];
#endif
	ssize_t got;

	r->line_len = 0;
	r->line_too_long = false;
	memset(&z, 0, sizeof(z));
	if (codec == OBJREAD_GZIP && inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return "zlib cannot start";
#ifdef HAVE_ZSTD
	if (codec == OBJREAD_ZSTD) {
		zd = ZSTD_createDStream();
		if (!zd || ZSTD_isError(ZSTD_initDStream(zd))) {
			ZSTD_freeDStream(zd);
			return "zstd cannot start";
		}
	}
#else
	if (codec == OBJREAD_ZSTD) {
		snprintf(no_zstd, sizeof(no_zstd), "a .zst object, and %s is built without zstd",
			 r->prog);
		return no_zstd;
	}
#endif
	while (!why && (got = read(fd, in, sizeof(in))) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			why = "cannot read the downloaded object";
			break;
		}
		if (codec == OBJREAD_PLAIN) {
			feed(r, sink, (const char *)in, (size_t)got);
			continue;
		}
		if (codec == OBJREAD_GZIP) {
			z.next_in = in;
			z.avail_in = (uInt)got;
			while (!why && z.avail_in) {
				int zr;

				if (ended) {
					/* Another gzip member after the first: allowed by
					 * the format, so read it too. */
					if (inflateReset(&z) != Z_OK)
						why = "zlib reset failed";
					ended = false;
				}
				z.next_out = out;
				z.avail_out = sizeof(out);
				zr = inflate(&z, Z_NO_FLUSH);
				/* Input and output space were both there: anything but
				 * progress is a broken stream. */
				if (zr != Z_OK && zr != Z_STREAM_END)
					why = "not valid gzip";
				feed(r, sink, (const char *)out, sizeof(out) - z.avail_out);
				if (zr == Z_STREAM_END)
					ended = true;
			}
			continue;
		}
#ifdef HAVE_ZSTD
		{
			ZSTD_inBuffer zin = { in, (size_t)got, 0 };

			while (!why && zin.pos < zin.size) {
				ZSTD_outBuffer zout = { out, sizeof(out), 0 };

				zret = ZSTD_decompressStream(zd, &zout, &zin);
				if (ZSTD_isError(zret))
					why = "not valid zstd";
				else
					feed(r, sink, (const char *)out, zout.pos);
			}
			/* Flush what the frame still holds. */
			while (!why && zret != 0) {
				ZSTD_outBuffer zout = { out, sizeof(out), 0 };
				ZSTD_inBuffer none = { in, 0, 0 };

				zret = ZSTD_decompressStream(zd, &zout, &none);
				if (ZSTD_isError(zret))
					why = "not valid zstd";
				else if (zout.pos == 0)
					break;
				else
					feed(r, sink, (const char *)out, zout.pos);
			}
			ended = zret == 0;
		}
#endif
	}
	if (codec == OBJREAD_GZIP) {
		/* Drain what inflate still holds after the last input. */
		while (!why && !ended) {
			int zr;

			z.next_out = out;
			z.avail_out = sizeof(out);
			zr = inflate(&z, Z_NO_FLUSH);
			feed(r, sink, (const char *)out, sizeof(out) - z.avail_out);
			if (zr == Z_STREAM_END)
				ended = true;
			else if (zr != Z_OK || z.avail_out == sizeof(out))
				break;
		}
		inflateEnd(&z);
	}
#ifdef HAVE_ZSTD
	ZSTD_freeDStream(zd);
#endif
	if (!why && !ended)
		why = codec == OBJREAD_GZIP ? "gzip stream cut short" : "zstd frame cut short";
	if (!why)
		feed_end(r, sink);
	return why;
}

json_object *objread_parse_object(struct objread *r, const char *line, size_t len)
{
	json_object *o;

	if (len > (size_t)INT32_MAX)
		return NULL;
	json_tokener_reset(r->tok);
	o = json_tokener_parse_ex(r->tok, line, (int)len);
	if (!o || json_tokener_get_error(r->tok) != json_tokener_success ||
	    (size_t)json_tokener_get_parse_end(r->tok) != len ||
	    !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return NULL;
	}
	return o;
}
