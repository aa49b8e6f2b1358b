/* SPDX-License-Identifier: Apache-2.0 */
/*
 * objread.h: reads the objects of a kinlake data lake for the test judges
 * (lakecheck, aggcheck): lists a prefix, downloads an object to an unlinked
 * temporary file, streams it through its codec (gzip, zstd or plain, by
 * the key's extension) and hands out its lines one at a time. Memory never
 * grows with object sizes: one download file, one line of at most
 * OBJREAD_LINE_MAX bytes. Never installed; built into the test tools.
 *
 * Failures are named on stderr as "<prog>: ..." (prog given to
 * objread_init()), so the tools only decide what a failure means.
 * Nothing here is thread-safe: one struct objread per process.
 */
#ifndef KL_TESTS_OBJREAD_H
#define KL_TESTS_OBJREAD_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "aws.h"
#include "creds.h"
#include "s3.h"

#define OBJREAD_LINE_MAX ((size_t)8 << 20)  /* longest line (a base64 error record) */

enum objread_codec { OBJREAD_PLAIN = 0, OBJREAD_GZIP, OBJREAD_ZSTD };

struct objread {
	const char *prog;              /* borrowed, for messages */
	struct creds_chain *creds;     /* the tools' other clients may share it */
	struct aws_client s3;
	json_tokener *tok;             /* for objread_parse_object() */
	char *line;                    /* the line being assembled, OBJREAD_LINE_MAX + 1 */
	size_t line_len;
	bool line_too_long;
	int tmp_fd;
	bool http_ready, s3_ready, tmp_ready;
};

/* Where objread_decode() sends an object's lines. */
struct objread_sink {
	/* A line without its '\n', NUL-terminated, borrowed until the next
	 * call; empty lines too, but never an empty last line without '\n'. */
	void (*line)(void *arg, const char *line, size_t len);
	/* Called once when a line passes OBJREAD_LINE_MAX; the line is left
	 * out. */
	void (*too_long)(void *arg);
	void *arg;
};

/*
 * Sets up HTTP, the credentials chain without instance metadata, an S3
 * client for endpoint and region (borrowed: must outlive r), the
 * temporary file (in $TMPDIR or /tmp) and the line buffer. r must be
 * zeroed before. Returns 0, or -1 after naming the failure; either way
 * objread_done() frees what was set up.
 */
int objread_init(struct objread *r, const char *prog, const char *endpoint, const char *region);

/* Frees everything objread_init() set up, of a zeroed r too. Any other
 * client on r->creds must be done before. */
void objread_done(struct objread *r);

/*
 * Lists bucket/prefix (every page) and calls each(arg, key) per key in
 * listing order, key borrowed for the call. Stops when each returns
 * nonzero. Returns 0, or -1 when S3 failed (named) or each stopped.
 */
int objread_list(struct objread *r, const char *bucket, const char *prefix,
		 int (*each)(void *arg, const char *key), void *arg);

/*
 * Downloads bucket/key into the temporary file, ready for
 * objread_decode(). ret_meta (may be NULL) as s3_get_object_to_fd(), the
 * caller frees it with s3_object_info_done(). Returns 0, or -1 after
 * naming the failure (an object that vanished meanwhile included).
 */
int objread_fetch(struct objread *r, const char *bucket, const char *key,
		  struct s3_object_info *ret_meta);

/* The codec of an object, by the extension of its key (.gz, .zst). */
enum objread_codec objread_codec_of(const char *key);

/*
 * Streams the fetched object through codec into the sink's line(), the
 * last line too (with or without its '\n'). Returns NULL, or why the
 * object cannot be read (static text); its lines up to there have been
 * handed out.
 */
const char *objread_decode(struct objread *r, enum objread_codec codec,
			   const struct objread_sink *sink);

/* Parses line[0..len) as one JSON object with r's tokener: the object
 * (the caller puts it), or NULL if the line is not exactly that. */
json_object *objread_parse_object(struct objread *r, const char *line, size_t len);

#endif
