/* SPDX-License-Identifier: Apache-2.0 */
/*
 * athena.h: `kinlake athena-ddl`, the Athena tables over what the workers
 * write. The partition columns and their projection (Athena partition
 * projection: no Glue crawler, no MSCK REPAIR, a new partition is queryable
 * as soon as its first object exists) are derived from the compiled key
 * template, so the table and the keys cannot disagree; a template part that
 * cannot be projected is refused with its position.
 *
 * Invariant: every key the template renders (with a date inside the range
 * and any value of the plugin keys) matches the table's
 * storage.location.template followed by "<shard>/<esn range><ext>".
 */
#ifndef KL_ATHENA_H
#define KL_ATHENA_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "keytmpl.h"
#include "kl_err.h"

/* Columns the clickstream plugin writes for the events of `kinlake demo
 * produce` (the plugin passes an event's fields through; see README). */
#define ATHENA_CLICKSTREAM_COLUMNS                                                       \
	"event_id string, seq bigint, session_id string, ts string, user_id string, "     \
	"action string, page string, page_title string, item_id string, price double, "   \
	"currency string, qty int, query string, target string, parcel_id string, "       \
	"order_id string, items int, total double, referrer string, user_agent string, "  \
	"device string, country string"

/* How one plugin partition key is projected: --key NAME=SPEC, where SPEC is
 *   injected                   any value; queries must name it (default)
 *   enum:A,B,C                 one of these values
 *   date:FORMAT                a date in FORMAT (yyyy yy MM dd HH mm ss,
 *                              'quoted'), from the range start to NOW
 *   integer:LO,HI[:DIGITS]     an integer, zero-padded to DIGITS
 * NAME is the plugin's key name or the column name. Both borrowed. */
struct athena_key_spec {
	const char *name;
	const char *spec;
};

/* One table. Everything borrowed for the call. */
struct athena_table_opts {
	const char *bucket;
	const char *template;          /* s3.prefix or s3.error_prefix */
	enum keytmpl_kind kind;        /* KEYTMPL_ERROR: the error-record columns */
	const char *database;          /* NULL = "default" */
	const char *table;             /* required */
	const char *columns;           /* data: "name type, ..." for the JSON SerDe;
					  NULL = one `line` string column (raw text) */
	const char *compression;       /* "none", "gzip" or "zstd" (cfg names) */
	const char *delimiter;         /* data records' delimiter: must be "\n" */
	int64_t start_ms;              /* start of date projection ranges (UTC) */
	const struct athena_key_spec *keys;  /* first match wins */
	size_t n_keys;
};

/*
 * Appends the CREATE EXTERNAL TABLE statement (HiveQL, ending in ";\n") for
 * o to out. Returns KL_OK; KL_ECONFIG when the template cannot be
 * projected, a column or key spec is bad, or the delimiter is not a
 * newline, with a message naming the part (and its position); KL_ENOMEM.
 * out may hold part of a statement on failure. Thread-safe.
 */
enum kl_err athena_table_ddl(const struct athena_table_opts *o, struct buf *out,
			     struct kl_errinfo *info);

/*
 * `kinlake athena-ddl [-c FILE] [--database DB] [--table T] [--error-table T]
 * [--columns SPEC] [--key NAME=SPEC]... [--start YYYY-MM-DD] [--data-only |
 * --errors-only]`: prints the data table and the error table for the
 * configuration. argv[0] is "athena-ddl". Returns 0, 64 (usage) or 78
 * (configuration / template). Main thread only (stdout, stderr).
 */
int athena_main(int argc, char **argv);

#endif
