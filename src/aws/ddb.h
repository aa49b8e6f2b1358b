/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ddb.h: the DynamoDB client (JSON 1.0, "DynamoDB_20120810") over
 * aws_json_call(): tables (create on demand, describe, wait, delete),
 * single-item reads and conditional writes, and paginated scans.
 *
 * Items stay json-c objects in DynamoDB JSON, {"attr":{"S":"x"}, ...}, so
 * attributes this code does not know round-trip untouched (the lease table
 * must never lose what KCL or a newer kinlake wrote). Small helpers build
 * typed values (ddb_s(), ddb_n_i64(), ...) and read them (ddb_get_s(), ...).
 * Numbers stay decimal strings end to end: 38 significant digits survive.
 *
 * json_object ownership, everywhere in this file:
 *   - an input json_object (item, key, names, values, exclusive start key)
 *     is borrowed: the call takes its own reference while it needs one, and
 *     the caller still json_object_put()s what it created;
 *   - a value helper (ddb_s(), ddb_n(), ...) returns a new object holding
 *     one reference, which the caller owns; ddb_set() and
 *     json_object_object_add() consume that reference;
 *   - an output json_object (*ret_item, *ret_attributes, a scan page's items
 *     and last key) holds one reference that the caller owns and releases
 *     with json_object_put() (or ddb_scan_page_done());
 *   - getters (ddb_get*) return pointers borrowed from the item: valid while
 *     the item lives and is not modified.
 *
 * Every call takes a struct aws_client set up with service "dynamodb"; it
 * is used by one thread at a time. json-c objects are not thread-safe
 * either: an item is used by one thread at a time.
 *
 * Errors: as aws_classify() maps them, unchanged. In particular a failed
 * ConditionExpression is KL_ECONFLICT (ConditionalCheckFailedException),
 * so the lease code can tell a lost lease from a transient error
 * (KL_ETHROTTLED, KL_ESERVER, KL_ETIMEOUT, KL_ECONNECT after retries). A
 * conditional write that timed out may still have been applied, and its
 * retry then fails the condition: on KL_ECONFLICT re-read before deciding.
 * A missing table is KL_ENOTFOUND. ret_* are written only on KL_OK.
 */
#ifndef KL_DDB_H
#define KL_DDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "aws.h"
#include "kl_err.h"

#define DDB_TARGET_PREFIX "DynamoDB_20120810"
#define DDB_JSON_VERSION "1.0"

/* ------------------------------------------------------ typed values */

/*
 * Value constructors. Each returns a new {"<type>": ...} object (one
 * reference, the caller's) or NULL when out of memory. Strings and bytes
 * are copied.
 */
json_object *ddb_s(const char *s);
/* dec: a DynamoDB number as text ("5", "-1.5e3", 38 digits), sent as is;
 * the service validates it. */
json_object *ddb_n(const char *dec);
json_object *ddb_n_i64(int64_t v);
/* A string set; n >= 1 distinct strings (DynamoDB rejects empty sets). */
json_object *ddb_ss(const char *const *strs, size_t n);
/* A number set; n >= 1 distinct integers. */
json_object *ddb_ns_i64(const int64_t *v, size_t n);
/* Binary: bytes are base64-encoded on the wire. */
json_object *ddb_b(const void *data, size_t len);
json_object *ddb_bool(bool v);
json_object *ddb_null(void);
/* A map; consumes map, a {"name": typed value} object (NULL = empty map). */
json_object *ddb_m(json_object *map);
/* A list; consumes list, a JSON array of typed values (NULL = empty list). */
json_object *ddb_l(json_object *list);

/*
 * Sets obj[name] = value and consumes value, replacing any previous value.
 * Works for items, keys, ExpressionAttributeValues (":v" -> typed value)
 * and ExpressionAttributeNames ("#n" -> json_object_new_string("name")).
 * value NULL (a helper that ran out of memory) gives KL_ENOMEM, so helper
 * results can be passed straight in:
 *     err = ddb_set(values, ":c", ddb_n_i64(counter));
 */
enum kl_err ddb_set(json_object *obj, const char *name, json_object *value);

/* A new key object {name: {"S": value}} (caller owns it), or NULL. */
json_object *ddb_key_s(const char *name, const char *value);

/*
 * Getters. item is an item in DynamoDB JSON. All return borrowed data.
 * ddb_get() returns the inner value of attribute name if it has the given
 * type ("S", "N", "SS", "B", "M", "L", "BOOL", "NULL"), else NULL.
 */
json_object *ddb_get(const json_object *item, const char *name, const char *type);
/* True when item has attribute name, whatever its type. */
bool ddb_has(const json_object *item, const char *name);
/* The string of an S attribute; NULL when absent or not S. */
const char *ddb_get_s(const json_object *item, const char *name);
/* The decimal text of an N attribute; NULL when absent or not N. */
const char *ddb_get_n(const json_object *item, const char *name);
/* An N attribute as int64: KL_ENOTFOUND absent, KL_EINVAL not N,
 * KL_EPARSE not an integer or out of range. */
enum kl_err ddb_get_n_i64(const json_object *item, const char *name, int64_t *ret_v);
/*
 * An SS attribute: *ret_strs is a malloc'd array of *ret_n string pointers
 * borrowed from item (free() the array only). KL_ENOTFOUND absent,
 * KL_EINVAL not SS.
 */
enum kl_err ddb_get_ss(const json_object *item, const char *name, const char ***ret_strs,
		       size_t *ret_n);
/* An NS attribute, the same way: its numbers as the decimal strings of the
 * wire. KL_EINVAL when not NS. */
enum kl_err ddb_get_ns(const json_object *item, const char *name, const char ***ret_strs,
		       size_t *ret_n);
/* A B attribute decoded: *ret_data is malloc'd (caller frees; never NULL
 * on KL_OK, even for 0 bytes). KL_ENOTFOUND, KL_EINVAL, KL_EPARSE. */
enum kl_err ddb_get_b(const json_object *item, const char *name, uint8_t **ret_data,
		      size_t *ret_len);
/* A BOOL attribute. KL_ENOTFOUND absent, KL_EINVAL not BOOL. */
enum kl_err ddb_get_bool(const json_object *item, const char *name, bool *ret_v);
/* The inner map of an M attribute (an item-shaped object) or the inner
 * array of an L attribute; NULL when absent or of another type. */
json_object *ddb_get_m(const json_object *item, const char *name);
json_object *ddb_get_l(const json_object *item, const char *name);

/* ------------------------------------------------------------ tables */

enum ddb_table_status {
	DDB_TABLE_UNKNOWN = 0,
	DDB_TABLE_CREATING,
	DDB_TABLE_UPDATING,
	DDB_TABLE_DELETING,
	DDB_TABLE_ACTIVE,
};

/* What DescribeTable says about a table. Plain value, no frees. */
struct ddb_table_desc {
	char table_name[256];
	char table_arn[512];
	enum ddb_table_status status;
	char hash_key[256];            /* the HASH attribute's name */
	char hash_key_type[2];         /* "S", "N" or "B" */
	char range_key[256];           /* "" when the table has none */
	int64_t item_count;            /* approximate, as DynamoDB reports it */
	bool pay_per_request;
};

/* Request builders and parsers (see kinesis.h for the pattern). Builders
 * return KL_EINVAL for missing arguments; *ret_req is the caller's. */
enum kl_err ddb_req_create_table(const char *table, const char *hash_key,
				 const char *hash_key_type, json_object **ret_req);
enum kl_err ddb_req_table(const char *table, json_object **ret_req); /* {"TableName":...} */
enum kl_err ddb_parse_describe_table(json_object *resp, struct ddb_table_desc *ret_desc);

/*
 * CreateTable with one hash key (hash_key_type "S", "N" or "B") and
 * on-demand billing (PAY_PER_REQUEST). KL_EEXISTS when the table exists
 * (ResourceInUseException). Does not wait: see ddb_wait_table_active().
 */
enum kl_err ddb_create_table(struct aws_client *c, const char *table, const char *hash_key,
			     const char *hash_key_type, struct kl_errinfo *info);
/* DescribeTable. KL_ENOTFOUND when there is no such table. */
enum kl_err ddb_describe_table(struct aws_client *c, const char *table,
			       struct ddb_table_desc *ret_desc, struct kl_errinfo *info);
/*
 * Polls DescribeTable (50 ms doubling to 1 s) until ACTIVE or timeout_ms
 * passed (KL_ETIMEOUT). A table not found yet is waited for; DELETING is
 * KL_ESTATE. ret_desc may be NULL. Blocks the calling thread.
 */
enum kl_err ddb_wait_table_active(struct aws_client *c, const char *table, long timeout_ms,
				  struct ddb_table_desc *ret_desc, struct kl_errinfo *info);
/* DeleteTable (does not wait). KL_ENOTFOUND when there is no such table. */
enum kl_err ddb_delete_table(struct aws_client *c, const char *table, struct kl_errinfo *info);

/* ------------------------------------------------------------ items */

enum ddb_return_values {
	DDB_RETURN_NONE = 0,           /* not sent */
	DDB_RETURN_ALL_OLD,
	DDB_RETURN_UPDATED_OLD,        /* UpdateItem only */
	DDB_RETURN_ALL_NEW,            /* UpdateItem only */
	DDB_RETURN_UPDATED_NEW,        /* UpdateItem only */
};

/* Options of a write (PutItem, UpdateItem, DeleteItem). All borrowed. */
struct ddb_write_opts {
	const char *condition;         /* ConditionExpression; NULL = unconditional */
	json_object *names;            /* ExpressionAttributeNames {"#n":"name"}; NULL = none */
	json_object *values;           /* ExpressionAttributeValues {":v":{"N":"1"}}; NULL = none */
	enum ddb_return_values return_values;
};

enum kl_err ddb_req_get_item(const char *table, json_object *key, bool consistent_read,
			     json_object **ret_req);
enum kl_err ddb_req_put_item(const char *table, json_object *item,
			     const struct ddb_write_opts *opts, json_object **ret_req);
enum kl_err ddb_req_update_item(const char *table, json_object *key, const char *update_expression,
				const struct ddb_write_opts *opts, json_object **ret_req);
enum kl_err ddb_req_delete_item(const char *table, json_object *key,
				const struct ddb_write_opts *opts, json_object **ret_req);
/* "Item" of a GetItem response (a new reference) or NULL when the item does
 * not exist. KL_EPARSE when Item is there but not an object. */
enum kl_err ddb_parse_get_item(json_object *resp, json_object **ret_item);
/* "Attributes" of a write response (a new reference) or NULL. */
enum kl_err ddb_parse_attributes(json_object *resp, json_object **ret_attributes);

/*
 * GetItem. key is the full primary key ({"leaseKey":{"S":"shardId-0"}}).
 * On KL_OK *ret_item is the item (caller json_object_put()s it) or NULL
 * when no such item exists; a missing table is KL_ENOTFOUND.
 */
enum kl_err ddb_get_item(struct aws_client *c, const char *table, json_object *key,
			 bool consistent_read, json_object **ret_item, struct kl_errinfo *info);

/*
 * PutItem / UpdateItem / DeleteItem, optionally conditional (opts NULL =
 * unconditional, no ReturnValues). KL_ECONFLICT when the condition fails.
 * ret_attributes may be NULL; otherwise on KL_OK it gets the returned
 * Attributes (caller json_object_put()s) or NULL when none came back.
 * UpdateItem on a missing key creates the item (add
 * "attribute_exists(<key>)" to the condition to prevent that).
 */
enum kl_err ddb_put_item(struct aws_client *c, const char *table, json_object *item,
			 const struct ddb_write_opts *opts, json_object **ret_attributes,
			 struct kl_errinfo *info);
enum kl_err ddb_update_item(struct aws_client *c, const char *table, json_object *key,
			    const char *update_expression, const struct ddb_write_opts *opts,
			    json_object **ret_attributes, struct kl_errinfo *info);
enum kl_err ddb_delete_item(struct aws_client *c, const char *table, json_object *key,
			    const struct ddb_write_opts *opts, json_object **ret_attributes,
			    struct kl_errinfo *info);

/* ------------------------------------------------------------ scans */

/* Scan inputs. All borrowed; a NULL options pointer means defaults. */
struct ddb_scan_opts {
	int limit;                     /* items evaluated per page; 0 = service default (1 MB) */
	json_object *exclusive_start_key;  /* the previous page's last key; NULL = start */
	const char *filter;            /* FilterExpression; NULL = none */
	json_object *names;            /* ExpressionAttributeNames, NULL = none */
	json_object *values;           /* ExpressionAttributeValues, NULL = none */
	bool consistent_read;
};

/* One page. Release with ddb_scan_page_done(). */
struct ddb_scan_page {
	json_object *items;            /* JSON array of items; owned */
	json_object *last_evaluated_key;  /* owned; NULL on the last page */
	int64_t count;                 /* items returned (after the filter) */
	int64_t scanned_count;         /* items evaluated (before the filter) */
};

/* Releases the page's objects and zeroes it. NULL-safe. */
void ddb_scan_page_done(struct ddb_scan_page *page);

enum kl_err ddb_req_scan(const char *table, const struct ddb_scan_opts *opts,
			 json_object **ret_req);
enum kl_err ddb_parse_scan(json_object *resp, struct ddb_scan_page *ret_page);

/*
 * One Scan page. Continue with opts->exclusive_start_key =
 * page.last_evaluated_key while that is not NULL. A page may hold fewer
 * items than limit, even none, and still not be the last (with a filter,
 * Limit counts evaluated items).
 */
enum kl_err ddb_scan(struct aws_client *c, const char *table, const struct ddb_scan_opts *opts,
		     struct ddb_scan_page *ret_page, struct kl_errinfo *info);

/*
 * Scans the whole table (following LastEvaluatedKey; opts'
 * exclusive_start_key is the starting point) into *ret_items, a new JSON
 * array the caller json_object_put()s. More than max_items items
 * (0 = 1,000,000) is KL_ENOMEM: that cap is what bounds memory.
 */
enum kl_err ddb_scan_all(struct aws_client *c, const char *table, const struct ddb_scan_opts *opts,
			 size_t max_items, json_object **ret_items, struct kl_errinfo *info);

#endif
