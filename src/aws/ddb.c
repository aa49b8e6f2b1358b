/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ddb.c: DynamoDB over JSON 1.0. Items are kept as json-c objects in
 * DynamoDB JSON and passed through verbatim, so attributes nobody here
 * knows survive a read-modify-write; numbers are never converted to binary
 * unless a getter is asked to.
 * Invariants: inputs are borrowed (the request takes its own reference),
 * outputs carry one reference for the caller; AWS errors are returned as
 * aws_classify() made them (ConditionalCheckFailedException stays
 * KL_ECONFLICT); ret_* are written only on success; empty expression maps
 * are never sent (DynamoDB rejects them).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddb.h"
#include "log.h"
#include "util.h"

/* ------------------------------------------------------------ helpers */

/* Adds key: val to obj and consumes val; nonzero on failure (val released). */
static int add(json_object *obj, const char *key, json_object *val)
{
	if (!val)
		return 1;
	if (json_object_object_add(obj, key, val) != 0) {
		json_object_put(val);
		return 1;
	}
	return 0;
}

static int add_str(json_object *obj, const char *key, const char *val)
{
	return add(obj, key, json_object_new_string(val));
}

/* Adds a borrowed object (takes a new reference). */
static int add_ref(json_object *obj, const char *key, json_object *val)
{
	return add(obj, key, json_object_get(val));
}

static json_object *get_obj(const json_object *obj, const char *key, json_type type)
{
	json_object *v;

	if (!obj || !json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, type))
		return NULL;
	return v;
}

static const char *get_str(const json_object *obj, const char *key)
{
	json_object *v = get_obj(obj, key, json_type_string);

	return v ? json_object_get_string(v) : NULL;
}

static int64_t get_i64(const json_object *obj, const char *key, int64_t def)
{
	json_object *v;

	if (!obj || !json_object_object_get_ex(obj, key, &v))
		return def;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return def;
	return json_object_get_int64(v);
}

/* Table names: 3..255 of [A-Za-z0-9_.-]. */
static bool table_name_ok(const char *t)
{
	size_t n;

	if (!t)
		return false;
	n = strlen(t);
	if (n < 3 || n > 255)
		return false;
	return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static json_object *new_table_req(const char *table, enum kl_err *ret_err)
{
	json_object *req;

	if (!table_name_ok(table)) {
		*ret_err = KL_EINVAL;
		return NULL;
	}
	req = json_object_new_object();
	if (!req || add_str(req, "TableName", table)) {
		json_object_put(req);
		*ret_err = KL_ENOMEM;
		return NULL;
	}
	return req;
}

/* Sends req (consumed). On KL_OK *ret_resp is the caller's. */
static enum kl_err call(struct aws_client *c, const char *op, json_object *req,
			json_object **ret_resp, struct kl_errinfo *info)
{
	json_object *resp = NULL;
	enum kl_err err;

	err = aws_json_call(c, DDB_TARGET_PREFIX, DDB_JSON_VERSION, op, req, &resp, info);
	json_object_put(req);
	if (err) {
		log_debug("ddb: %s failed: %s %s", op, kl_strerror(err), info ? info->aws_code : "");
		return err;
	}
	*ret_resp = resp;
	return KL_OK;
}

static enum kl_err build_failed(enum kl_err err, const char *op, struct kl_errinfo *info)
{
	if (err == KL_ENOMEM)
		return kl_errinfo_set(info, err, "ddb: %s: out of memory", op);
	return kl_errinfo_set(info, err, "ddb: %s: invalid arguments", op);
}

static enum kl_err parse_failed(enum kl_err err, const char *op, struct kl_errinfo *info)
{
	if (err == KL_ENOMEM)
		return kl_errinfo_set(info, err, "ddb: %s: out of memory", op);
	return kl_errinfo_set(info, err, "ddb: %s: unexpected response", op);
}

/* ------------------------------------------------------ typed values */

/* {"<type>": val}, consuming val. */
static json_object *typed(const char *type, json_object *val)
{
	json_object *o;

	if (!val)
		return NULL;
	o = json_object_new_object();
	if (!o || add(o, type, val)) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

json_object *ddb_s(const char *s)
{
	return s ? typed("S", json_object_new_string(s)) : NULL;
}

json_object *ddb_n(const char *dec)
{
	return dec ? typed("N", json_object_new_string(dec)) : NULL;
}

json_object *ddb_n_i64(int64_t v)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRId64, v);
	return ddb_n(text);
}

json_object *ddb_ss(const char *const *strs, size_t n)
{
	json_object *arr = json_object_new_array_ext((int)n);

	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		json_object *s = strs[i] ? json_object_new_string(strs[i]) : NULL;
		if (!s || json_object_array_add(arr, s) != 0) {
			json_object_put(s);
			json_object_put(arr);
			return NULL;
		}
	}
	return typed("SS", arr);
}

json_object *ddb_ns_i64(const int64_t *v, size_t n)
{
	json_object *arr = json_object_new_array_ext((int)n);
	char text[24];

	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		json_object *s;

		snprintf(text, sizeof(text), "%" PRId64, v[i]);
		s = json_object_new_string(text);
		if (!s || json_object_array_add(arr, s) != 0) {
			json_object_put(s);
			json_object_put(arr);
			return NULL;
		}
	}
	return typed("NS", arr);
}

json_object *ddb_b(const void *data, size_t len)
{
	char *b64 = malloc(KL_B64_ENCLEN(len) + 1);
	json_object *s;

	if (!b64)
		return NULL;
	kl_b64_encode(len ? data : (const void *)"", len, b64);
	s = json_object_new_string_len(b64, (int)KL_B64_ENCLEN(len));
	free(b64);
	return typed("B", s);
}

json_object *ddb_bool(bool v)
{
	return typed("BOOL", json_object_new_boolean(v));
}

json_object *ddb_null(void)
{
	return typed("NULL", json_object_new_boolean(1));
}

json_object *ddb_m(json_object *map)
{
	if (!map)
		map = json_object_new_object();
	return typed("M", map);
}

json_object *ddb_l(json_object *list)
{
	if (!list)
		list = json_object_new_array();
	return typed("L", list);
}

enum kl_err ddb_set(json_object *obj, const char *name, json_object *value)
{
	if (!value)
		return KL_ENOMEM;
	if (!obj || !name) {
		json_object_put(value);
		return KL_EINVAL;
	}
	if (json_object_object_add(obj, name, value) != 0) {
		json_object_put(value);
		return KL_ENOMEM;
	}
	return KL_OK;
}

json_object *ddb_key_s(const char *name, const char *value)
{
	json_object *key = json_object_new_object();

	if (!key)
		return NULL;
	if (ddb_set(key, name, ddb_s(value)) != KL_OK) {
		json_object_put(key);
		return NULL;
	}
	return key;
}

json_object *ddb_get(const json_object *item, const char *name, const char *type)
{
	json_object *attr, *v;

	if (!item || !name || !type || !json_object_object_get_ex(item, name, &attr) ||
	    !json_object_is_type(attr, json_type_object) ||
	    !json_object_object_get_ex(attr, type, &v))
		return NULL;
	return v;
}

bool ddb_has(const json_object *item, const char *name)
{
	return item && name && json_object_object_get_ex(item, name, NULL);
}

const char *ddb_get_s(const json_object *item, const char *name)
{
	json_object *v = ddb_get(item, name, "S");

	return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

const char *ddb_get_n(const json_object *item, const char *name)
{
	json_object *v = ddb_get(item, name, "N");

	return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

enum kl_err ddb_get_n_i64(const json_object *item, const char *name, int64_t *ret_v)
{
	const char *s = ddb_get_n(item, name);
	char *end;
	long long v;

	if (!s)
		return ddb_has(item, name) ? KL_EINVAL : KL_ENOTFOUND;
	if (!(*s == '-' || (*s >= '0' && *s <= '9')))
		return KL_EPARSE;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end != '\0')
		return KL_EPARSE;
	*ret_v = (int64_t)v;
	return KL_OK;
}

/* A set attribute of type "SS" or "NS": both are arrays of strings. */
static enum kl_err get_set(const json_object *item, const char *name, const char *type,
			   const char ***ret_strs, size_t *ret_n)
{
	json_object *arr = ddb_get(item, name, type);
	const char **strs;
	size_t n;

	if (!arr)
		return ddb_has(item, name) ? KL_EINVAL : KL_ENOTFOUND;
	if (!json_object_is_type(arr, json_type_array))
		return KL_EINVAL;
	n = json_object_array_length(arr);
	strs = malloc((n ? n : 1) * sizeof(*strs));
	if (!strs)
		return KL_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_object *s = json_object_array_get_idx(arr, i);
		if (!json_object_is_type(s, json_type_string)) {
			free(strs);
			return KL_EINVAL;
		}
		strs[i] = json_object_get_string(s);
	}
	*ret_strs = strs;
	*ret_n = n;
	return KL_OK;
}

enum kl_err ddb_get_ss(const json_object *item, const char *name, const char ***ret_strs,
		       size_t *ret_n)
{
	return get_set(item, name, "SS", ret_strs, ret_n);
}

enum kl_err ddb_get_ns(const json_object *item, const char *name, const char ***ret_strs,
		       size_t *ret_n)
{
	return get_set(item, name, "NS", ret_strs, ret_n);
}

enum kl_err ddb_get_b(const json_object *item, const char *name, uint8_t **ret_data,
		      size_t *ret_len)
{
	json_object *v = ddb_get(item, name, "B");
	uint8_t *out;
	size_t len, n;

	if (!v)
		return ddb_has(item, name) ? KL_EINVAL : KL_ENOTFOUND;
	if (!json_object_is_type(v, json_type_string))
		return KL_EINVAL;
	len = (size_t)json_object_get_string_len(v);
	out = malloc((len / 4 + 1) * 3);
	if (!out)
		return KL_ENOMEM;
	if (kl_b64_decode(json_object_get_string(v), len, out, &n) != KL_OK) {
		free(out);
		return KL_EPARSE;
	}
	*ret_data = out;
	*ret_len = n;
	return KL_OK;
}

enum kl_err ddb_get_bool(const json_object *item, const char *name, bool *ret_v)
{
	json_object *v = ddb_get(item, name, "BOOL");

	if (!v)
		return ddb_has(item, name) ? KL_EINVAL : KL_ENOTFOUND;
	if (!json_object_is_type(v, json_type_boolean))
		return KL_EINVAL;
	*ret_v = json_object_get_boolean(v);
	return KL_OK;
}

json_object *ddb_get_m(const json_object *item, const char *name)
{
	json_object *v = ddb_get(item, name, "M");

	return json_object_is_type(v, json_type_object) ? v : NULL;
}

json_object *ddb_get_l(const json_object *item, const char *name)
{
	json_object *v = ddb_get(item, name, "L");

	return json_object_is_type(v, json_type_array) ? v : NULL;
}

/* ------------------------------------------------------------ tables */

enum kl_err ddb_req_create_table(const char *table, const char *hash_key,
				 const char *hash_key_type, json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req, *defs, *def, *schema, *elem;

	if (!hash_key || !*hash_key || !hash_key_type ||
	    (strcmp(hash_key_type, "S") != 0 && strcmp(hash_key_type, "N") != 0 &&
	     strcmp(hash_key_type, "B") != 0))
		return KL_EINVAL;
	req = new_table_req(table, &err);
	if (!req)
		return err;
	defs = json_object_new_array();
	if (add(req, "AttributeDefinitions", defs))
		goto nomem;
	def = json_object_new_object();
	if (!def || json_object_array_add(defs, def) != 0) {
		json_object_put(def);
		goto nomem;
	}
	if (add_str(def, "AttributeName", hash_key) || add_str(def, "AttributeType", hash_key_type))
		goto nomem;
	schema = json_object_new_array();
	if (add(req, "KeySchema", schema))
		goto nomem;
	elem = json_object_new_object();
	if (!elem || json_object_array_add(schema, elem) != 0) {
		json_object_put(elem);
		goto nomem;
	}
	if (add_str(elem, "AttributeName", hash_key) || add_str(elem, "KeyType", "HASH"))
		goto nomem;
	if (add_str(req, "BillingMode", "PAY_PER_REQUEST"))
		goto nomem;
	*ret_req = req;
	return KL_OK;
nomem:
	json_object_put(req);
	return KL_ENOMEM;
}

enum kl_err ddb_req_table(const char *table, json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req = new_table_req(table, &err);

	if (!req)
		return err;
	*ret_req = req;
	return KL_OK;
}

static enum ddb_table_status parse_table_status(const char *s)
{
	if (!s)
		return DDB_TABLE_UNKNOWN;
	if (strcmp(s, "ACTIVE") == 0)
		return DDB_TABLE_ACTIVE;
	if (strcmp(s, "CREATING") == 0)
		return DDB_TABLE_CREATING;
	if (strcmp(s, "UPDATING") == 0)
		return DDB_TABLE_UPDATING;
	if (strcmp(s, "DELETING") == 0)
		return DDB_TABLE_DELETING;
	return DDB_TABLE_UNKNOWN;
}

/* Copies s into dst[size]; KL_EPARSE when it does not fit. NULL = "". */
static enum kl_err copy_text(char *dst, size_t size, const char *s)
{
	size_t len = s ? strlen(s) : 0;

	if (len >= size)
		return KL_EPARSE;
	if (len)
		memcpy(dst, s, len);
	dst[len] = '\0';
	return KL_OK;
}

enum kl_err ddb_parse_describe_table(json_object *resp, struct ddb_table_desc *ret_desc)
{
	json_object *t = get_obj(resp, "Table", json_type_object);
	json_object *schema, *defs, *billing;
	struct ddb_table_desc d;

	memset(&d, 0, sizeof(d));
	if (!t || !get_str(t, "TableName"))
		return KL_EPARSE;
	if (copy_text(d.table_name, sizeof(d.table_name), get_str(t, "TableName")) ||
	    copy_text(d.table_arn, sizeof(d.table_arn), get_str(t, "TableArn")))
		return KL_EPARSE;
	d.status = parse_table_status(get_str(t, "TableStatus"));
	d.item_count = get_i64(t, "ItemCount", 0);
	schema = get_obj(t, "KeySchema", json_type_array);
	for (size_t i = 0; schema && i < json_object_array_length(schema); i++) {
		json_object *e = json_object_array_get_idx(schema, i);
		const char *name = get_str(e, "AttributeName"), *kt = get_str(e, "KeyType");
		if (!name || !kt)
			return KL_EPARSE;
		if (strcmp(kt, "HASH") == 0 && copy_text(d.hash_key, sizeof(d.hash_key), name))
			return KL_EPARSE;
		if (strcmp(kt, "RANGE") == 0 && copy_text(d.range_key, sizeof(d.range_key), name))
			return KL_EPARSE;
	}
	defs = get_obj(t, "AttributeDefinitions", json_type_array);
	for (size_t i = 0; defs && d.hash_key[0] && i < json_object_array_length(defs); i++) {
		json_object *e = json_object_array_get_idx(defs, i);
		const char *name = get_str(e, "AttributeName"), *at = get_str(e, "AttributeType");
		if (name && at && strcmp(name, d.hash_key) == 0 &&
		    copy_text(d.hash_key_type, sizeof(d.hash_key_type), at))
			return KL_EPARSE;
	}
	billing = get_obj(t, "BillingModeSummary", json_type_object);
	if (billing) {
		const char *m = get_str(billing, "BillingMode");
		d.pay_per_request = m && strcmp(m, "PAY_PER_REQUEST") == 0;
	}
	*ret_desc = d;
	return KL_OK;
}

enum kl_err ddb_create_table(struct aws_client *c, const char *table, const char *hash_key,
			     const char *hash_key_type, struct kl_errinfo *info)
{
	static const char op[] = "CreateTable";
	struct kl_errinfo scratch;
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	if (!info)
		info = &scratch;
	err = ddb_req_create_table(table, hash_key, hash_key_type, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	json_object_put(resp);
	/* On CreateTable, ResourceInUseException means the table exists. */
	if (err == KL_ESTATE && strcmp(info->aws_code, "ResourceInUseException") == 0)
		err = KL_EEXISTS;
	return err;
}

enum kl_err ddb_describe_table(struct aws_client *c, const char *table,
			       struct ddb_table_desc *ret_desc, struct kl_errinfo *info)
{
	static const char op[] = "DescribeTable";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = ddb_req_table(table, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	if (err)
		return err;
	err = ddb_parse_describe_table(resp, ret_desc);
	json_object_put(resp);
	return err ? parse_failed(err, op, info) : KL_OK;
}

enum kl_err ddb_wait_table_active(struct aws_client *c, const char *table, long timeout_ms,
				  struct ddb_table_desc *ret_desc, struct kl_errinfo *info)
{
	int64_t deadline = kl_mono_ms() + timeout_ms;
	long delay = 50;

	for (;;) {
		struct ddb_table_desc d;
		enum kl_err err = ddb_describe_table(c, table, &d, info);

		if (err == KL_OK && d.status == DDB_TABLE_ACTIVE) {
			if (ret_desc)
				*ret_desc = d;
			return KL_OK;
		}
		if (err == KL_OK && d.status == DDB_TABLE_DELETING)
			return kl_errinfo_set(info, KL_ESTATE, "ddb: table '%s' is being deleted", table);
		if (err && err != KL_ENOTFOUND)
			return err;
		if (kl_mono_ms() + delay > deadline) {
			if (err)
				return err;
			return kl_errinfo_set(info, KL_ETIMEOUT, "ddb: table '%s' not ACTIVE after %ld ms",
					      table, timeout_ms);
		}
		kl_sleep_ms(delay);
		if (delay < 1000)
			delay *= 2;
	}
}

enum kl_err ddb_delete_table(struct aws_client *c, const char *table, struct kl_errinfo *info)
{
	static const char op[] = "DeleteTable";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = ddb_req_table(table, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	json_object_put(resp);
	return err;
}

/* ------------------------------------------------------------ items */

static const char *return_values_name(enum ddb_return_values rv)
{
	switch (rv) {
	case DDB_RETURN_NONE:
		return NULL;
	case DDB_RETURN_ALL_OLD:
		return "ALL_OLD";
	case DDB_RETURN_UPDATED_OLD:
		return "UPDATED_OLD";
	case DDB_RETURN_ALL_NEW:
		return "ALL_NEW";
	case DDB_RETURN_UPDATED_NEW:
		return "UPDATED_NEW";
	}
	return NULL;
}

/* Adds an expression map unless it is NULL or empty; KL_EINVAL if not an object. */
static enum kl_err add_expr_map(json_object *req, const char *key, json_object *map)
{
	if (!map)
		return KL_OK;
	if (!json_object_is_type(map, json_type_object))
		return KL_EINVAL;
	if (json_object_object_length(map) == 0)
		return KL_OK;
	return add_ref(req, key, map) ? KL_ENOMEM : KL_OK;
}

static enum kl_err add_write_opts(json_object *req, const struct ddb_write_opts *opts)
{
	const char *rv;
	enum kl_err err;

	if (!opts)
		return KL_OK;
	if (opts->condition && add_str(req, "ConditionExpression", opts->condition))
		return KL_ENOMEM;
	err = add_expr_map(req, "ExpressionAttributeNames", opts->names);
	if (!err)
		err = add_expr_map(req, "ExpressionAttributeValues", opts->values);
	if (err)
		return err;
	rv = return_values_name(opts->return_values);
	if (rv && add_str(req, "ReturnValues", rv))
		return KL_ENOMEM;
	return KL_OK;
}

/* {"TableName":table, <field>: obj} with obj borrowed and required. */
static enum kl_err new_item_req(const char *table, const char *field, json_object *obj,
				json_object **ret_req)
{
	enum kl_err err = KL_OK;
	json_object *req;

	if (!json_object_is_type(obj, json_type_object) || json_object_object_length(obj) == 0)
		return KL_EINVAL;
	req = new_table_req(table, &err);
	if (!req)
		return err;
	if (add_ref(req, field, obj)) {
		json_object_put(req);
		return KL_ENOMEM;
	}
	*ret_req = req;
	return KL_OK;
}

enum kl_err ddb_req_get_item(const char *table, json_object *key, bool consistent_read,
			     json_object **ret_req)
{
	json_object *req = NULL;
	enum kl_err err = new_item_req(table, "Key", key, &req);

	if (err)
		return err;
	if (consistent_read && add(req, "ConsistentRead", json_object_new_boolean(1))) {
		json_object_put(req);
		return KL_ENOMEM;
	}
	*ret_req = req;
	return KL_OK;
}

/* PutItem and DeleteItem: field ("Item" or "Key") plus the write options;
 * both can only return the old item. */
static enum kl_err new_write_req(const char *table, const char *field, json_object *obj,
				 const struct ddb_write_opts *opts, json_object **ret_req)
{
	json_object *req = NULL;
	enum kl_err err;

	if (opts && (opts->return_values != DDB_RETURN_NONE &&
		     opts->return_values != DDB_RETURN_ALL_OLD))
		return KL_EINVAL;
	err = new_item_req(table, field, obj, &req);
	if (err)
		return err;
	err = add_write_opts(req, opts);
	if (err) {
		json_object_put(req);
		return err;
	}
	*ret_req = req;
	return KL_OK;
}

enum kl_err ddb_req_put_item(const char *table, json_object *item,
			     const struct ddb_write_opts *opts, json_object **ret_req)
{
	return new_write_req(table, "Item", item, opts, ret_req);
}

enum kl_err ddb_req_update_item(const char *table, json_object *key, const char *update_expression,
				const struct ddb_write_opts *opts, json_object **ret_req)
{
	json_object *req = NULL;
	enum kl_err err;

	if (!update_expression || !*update_expression)
		return KL_EINVAL;
	err = new_item_req(table, "Key", key, &req);
	if (err)
		return err;
	if (add_str(req, "UpdateExpression", update_expression)) {
		json_object_put(req);
		return KL_ENOMEM;
	}
	err = add_write_opts(req, opts);
	if (err) {
		json_object_put(req);
		return err;
	}
	*ret_req = req;
	return KL_OK;
}

enum kl_err ddb_req_delete_item(const char *table, json_object *key,
				const struct ddb_write_opts *opts, json_object **ret_req)
{
	return new_write_req(table, "Key", key, opts, ret_req);
}

/* resp[field] as a new reference, NULL when absent; KL_EPARSE when not an object. */
static enum kl_err take_object(json_object *resp, const char *field, json_object **ret)
{
	json_object *v;

	if (!json_object_object_get_ex(resp, field, &v) || !v) {
		*ret = NULL;
		return KL_OK;
	}
	if (!json_object_is_type(v, json_type_object))
		return KL_EPARSE;
	*ret = json_object_get(v);
	return KL_OK;
}

enum kl_err ddb_parse_get_item(json_object *resp, json_object **ret_item)
{
	return take_object(resp, "Item", ret_item);
}

enum kl_err ddb_parse_attributes(json_object *resp, json_object **ret_attributes)
{
	return take_object(resp, "Attributes", ret_attributes);
}

enum kl_err ddb_get_item(struct aws_client *c, const char *table, json_object *key,
			 bool consistent_read, json_object **ret_item, struct kl_errinfo *info)
{
	static const char op[] = "GetItem";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = ddb_req_get_item(table, key, consistent_read, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	if (err)
		return err;
	err = ddb_parse_get_item(resp, ret_item);
	json_object_put(resp);
	return err ? parse_failed(err, op, info) : KL_OK;
}

/* Sends a write and hands back its Attributes if the caller wants them. */
static enum kl_err write_call(struct aws_client *c, const char *op, json_object *req,
			      json_object **ret_attributes, struct kl_errinfo *info)
{
	json_object *resp = NULL;
	enum kl_err err = call(c, op, req, &resp, info);

	if (err)
		return err;
	if (ret_attributes) {
		err = ddb_parse_attributes(resp, ret_attributes);
		if (err)
			err = parse_failed(err, op, info);
	}
	json_object_put(resp);
	return err;
}

enum kl_err ddb_put_item(struct aws_client *c, const char *table, json_object *item,
			 const struct ddb_write_opts *opts, json_object **ret_attributes,
			 struct kl_errinfo *info)
{
	json_object *req = NULL;
	enum kl_err err = ddb_req_put_item(table, item, opts, &req);

	if (err)
		return build_failed(err, "PutItem", info);
	return write_call(c, "PutItem", req, ret_attributes, info);
}

enum kl_err ddb_update_item(struct aws_client *c, const char *table, json_object *key,
			    const char *update_expression, const struct ddb_write_opts *opts,
			    json_object **ret_attributes, struct kl_errinfo *info)
{
	json_object *req = NULL;
	enum kl_err err = ddb_req_update_item(table, key, update_expression, opts, &req);

	if (err)
		return build_failed(err, "UpdateItem", info);
	return write_call(c, "UpdateItem", req, ret_attributes, info);
}

enum kl_err ddb_delete_item(struct aws_client *c, const char *table, json_object *key,
			    const struct ddb_write_opts *opts, json_object **ret_attributes,
			    struct kl_errinfo *info)
{
	json_object *req = NULL;
	enum kl_err err = ddb_req_delete_item(table, key, opts, &req);

	if (err)
		return build_failed(err, "DeleteItem", info);
	return write_call(c, "DeleteItem", req, ret_attributes, info);
}

/* ------------------------------------------------------------ scans */

void ddb_scan_page_done(struct ddb_scan_page *page)
{
	if (!page)
		return;
	json_object_put(page->items);
	json_object_put(page->last_evaluated_key);
	memset(page, 0, sizeof(*page));
}

enum kl_err ddb_req_scan(const char *table, const struct ddb_scan_opts *opts,
			 json_object **ret_req)
{
	static const struct ddb_scan_opts no_opts;
	enum kl_err err = KL_OK;
	json_object *req;

	if (!opts)
		opts = &no_opts;
	if (opts->limit < 0)
		return KL_EINVAL;
	if (opts->exclusive_start_key && !json_object_is_type(opts->exclusive_start_key, json_type_object))
		return KL_EINVAL;
	req = new_table_req(table, &err);
	if (!req)
		return err;
	if (opts->limit && add(req, "Limit", json_object_new_int(opts->limit)))
		goto nomem;
	if (opts->exclusive_start_key && add_ref(req, "ExclusiveStartKey", opts->exclusive_start_key))
		goto nomem;
	if (opts->filter && add_str(req, "FilterExpression", opts->filter))
		goto nomem;
	err = add_expr_map(req, "ExpressionAttributeNames", opts->names);
	if (!err)
		err = add_expr_map(req, "ExpressionAttributeValues", opts->values);
	if (err) {
		json_object_put(req);
		return err;
	}
	if (opts->consistent_read && add(req, "ConsistentRead", json_object_new_boolean(1)))
		goto nomem;
	*ret_req = req;
	return KL_OK;
nomem:
	json_object_put(req);
	return KL_ENOMEM;
}

enum kl_err ddb_parse_scan(json_object *resp, struct ddb_scan_page *ret_page)
{
	json_object *items = get_obj(resp, "Items", json_type_array), *lek = NULL;
	struct ddb_scan_page p = { 0 };

	if (!items)
		return KL_EPARSE;
	for (size_t i = 0; i < json_object_array_length(items); i++)
		if (!json_object_is_type(json_object_array_get_idx(items, i), json_type_object))
			return KL_EPARSE;
	if (json_object_object_get_ex(resp, "LastEvaluatedKey", &lek) && lek) {
		if (!json_object_is_type(lek, json_type_object))
			return KL_EPARSE;
		if (json_object_object_length(lek) > 0)
			p.last_evaluated_key = json_object_get(lek);
	}
	p.items = json_object_get(items);
	p.count = get_i64(resp, "Count", (int64_t)json_object_array_length(items));
	p.scanned_count = get_i64(resp, "ScannedCount", p.count);
	*ret_page = p;
	return KL_OK;
}

enum kl_err ddb_scan(struct aws_client *c, const char *table, const struct ddb_scan_opts *opts,
		     struct ddb_scan_page *ret_page, struct kl_errinfo *info)
{
	static const char op[] = "Scan";
	json_object *req = NULL, *resp = NULL;
	enum kl_err err;

	err = ddb_req_scan(table, opts, &req);
	if (err)
		return build_failed(err, op, info);
	err = call(c, op, req, &resp, info);
	if (err)
		return err;
	err = ddb_parse_scan(resp, ret_page);
	json_object_put(resp);
	return err ? parse_failed(err, op, info) : KL_OK;
}

#define SCAN_ALL_DEFAULT_MAX 1000000

enum kl_err ddb_scan_all(struct aws_client *c, const char *table, const struct ddb_scan_opts *opts,
			 size_t max_items, json_object **ret_items, struct kl_errinfo *info)
{
	struct ddb_scan_opts o = { 0 };
	struct ddb_scan_page prev = { 0 };
	json_object *all = json_object_new_array();
	enum kl_err err = KL_OK;

	if (!all)
		return kl_errinfo_set(info, KL_ENOMEM, "ddb: Scan: out of memory");
	if (opts)
		o = *opts;
	if (max_items == 0)
		max_items = SCAN_ALL_DEFAULT_MAX;
	for (;;) {
		struct ddb_scan_page page;
		size_t n;

		err = ddb_scan(c, table, &o, &page, info);
		/* o.exclusive_start_key may point into prev: release it only now. */
		ddb_scan_page_done(&prev);
		if (err)
			break;
		n = json_object_array_length(page.items);
		if (json_object_array_length(all) + n > max_items) {
			ddb_scan_page_done(&page);
			err = kl_errinfo_set(info, KL_ENOMEM, "ddb: Scan of '%s': more than %zu items",
					     table, max_items);
			break;
		}
		for (size_t i = 0; i < n; i++) {
			json_object *item = json_object_array_get_idx(page.items, i);
			if (json_object_array_add(all, json_object_get(item)) != 0) {
				json_object_put(item);
				err = KL_ENOMEM;
				break;
			}
		}
		if (err) {
			ddb_scan_page_done(&page);
			err = kl_errinfo_set(info, err, "ddb: Scan: out of memory");
			break;
		}
		if (!page.last_evaluated_key) {
			ddb_scan_page_done(&page);
			break;
		}
		prev = page;
		o.exclusive_start_key = prev.last_evaluated_key;
	}
	if (err) {
		json_object_put(all);
		return err;
	}
	*ret_items = all;
	return KL_OK;
}
