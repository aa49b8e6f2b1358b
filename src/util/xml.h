/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xml.h: just enough XML reading for AWS responses (S3 listings and
 * errors, STS credentials): find elements by local name, ignoring
 * namespace prefixes, attributes and the default namespace (s3rver uses a
 * different one than AWS). Not a validating parser; it never allocates
 * except for the returned text. Thread-safe (no state).
 */
#ifndef KL_XML_H
#define KL_XML_H

#include <stddef.h>

#include "buf.h"
#include "kl_err.h"

/* A borrowed slice of the document: the inner content of one element. */
struct xml_slice {
	const char *p;
	size_t len;
};

/*
 * Finds the next element whose local name is name, starting at *pos
 * within doc[0..len), at any depth. On success sets *ret_inner to its
 * content (between the start and end tags; empty for <x/>), advances *pos
 * past its end tag and returns 1; returns 0 when there is none.
 */
int xml_next(const char *doc, size_t len, const char *name, size_t *pos,
	     struct xml_slice *ret_inner);

/*
 * Finds the first element named name in doc[0..len) and returns its text,
 * with the five predefined entities and numeric character references
 * decoded, as a new string (caller frees). KL_ENOTFOUND when absent,
 * KL_ENOMEM, KL_EPARSE for a bad entity.
 */
enum kl_err xml_text(const char *doc, size_t len, const char *name, char **ret_text);

/* Same as xml_text() on a slice. */
enum kl_err xml_slice_text(struct xml_slice s, const char *name, char **ret_text);

/* Appends s to out with &, <, >, ", ' escaped (for request bodies). */
enum kl_err xml_escape(struct buf *out, const char *s);

#endif
