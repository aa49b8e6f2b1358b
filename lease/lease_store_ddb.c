/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_store_ddb.c: the DynamoDB lease store. Converts items in KCL 2.x's
 * schema to struct lease and back, builds the one request each store
 * operation sends, and runs it on a client borrowed from a small pool.
 *
 * Invariants: writes name only the attributes they change (UpdateItem
 * SET/REMOVE/ADD, never a PutItem over an existing item), so attributes we
 * do not know survive; every condition is the one lease_store.h documents;
 * numbers travel as decimal text and are only converted where a field of
 * struct lease is an integer; a pooled client is used by one thread at a
 * time (taken from and returned to the pool under the pool lock).
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddb.h"
#include "lease_store_ddb.h"
#include "log.h"

#define DEFAULT_MAX_CLIENTS 8
#define DEFAULT_MAX_ITEMS 100000

/* ---------------------------------------------------------------- numbers */

/* Parses an unsigned decimal integer that fits 64 bits (digits only). */
static bool parse_u64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!s || !*s)
		return false;
	for (; *s; s++) {
		unsigned d;

		if (*s < '0' || *s > '9')
			return false;
		d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*ret = v;
	return true;
}

static json_object *ddb_n_u64(uint64_t v)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRIu64, v);
	return ddb_n(text);
}

/* ---------------------------------------------------------------- item -> lease */

static bool is_known_attr(const char *name)
{
	static const char *const known[] = {
		LEASE_ATTR_KEY, LEASE_ATTR_OWNER, LEASE_ATTR_COUNTER, LEASE_ATTR_CHECKPOINT,
		LEASE_ATTR_CHECKPOINT_SUB, LEASE_ATTR_PENDING, LEASE_ATTR_PENDING_SUB,
		LEASE_ATTR_PENDING_STATE, LEASE_ATTR_OWNER_SWITCHES, LEASE_ATTR_PARENTS,
		LEASE_ATTR_CHILDREN, LEASE_ATTR_START_HASH, LEASE_ATTR_END_HASH,
		LEASE_ATTR_ENTITY_TYPE, LEASE_ATTR_HEARTBEAT, LEASE_ATTR_SESSION,
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(name, known[i]) == 0)
			return true;
	return false;
}

static enum kl_err bad_attr(struct kl_errinfo *info, const char *key, const char *attr,
			    const char *what)
{
	return kl_errinfo_set(info, KL_EPARSE, "lease ddb store: item '%.128s': %s %s",
			      key ? key : "?", attr, what);
}

/* An optional S attribute: *ret NULL when absent. KL_EPARSE if not S. */
static enum kl_err get_opt_s(const json_object *item, const char *key, const char *attr,
			     const char **ret, struct kl_errinfo *info)
{
	*ret = ddb_get_s(item, attr);
	if (!*ret && ddb_has(item, attr))
		return bad_attr(info, key, attr, "is not a string (S)");
	return KL_OK;
}

/* An optional unsigned N attribute: *ret = 0 and *present false when absent. */
static enum kl_err get_opt_u64(const json_object *item, const char *key, const char *attr,
			       uint64_t *ret, bool *present, struct kl_errinfo *info)
{
	const char *n = ddb_get_n(item, attr);

	*ret = 0;
	if (present)
		*present = n != NULL;
	if (!n) {
		if (ddb_has(item, attr))
			return bad_attr(info, key, attr, "is not a number (N)");
		return KL_OK;
	}
	if (!parse_u64(n, ret))
		return bad_attr(info, key, attr, "is not an unsigned 64-bit integer");
	return KL_OK;
}

/* An optional SS attribute added to *set. */
static enum kl_err get_opt_ss(const json_object *item, const char *key, const char *attr,
			      struct lease_strset *set, struct kl_errinfo *info)
{
	const char **strs = NULL;
	size_t n = 0;
	enum kl_err err = ddb_get_ss(item, attr, &strs, &n);

	if (err == KL_ENOTFOUND)
		return KL_OK;
	if (err == KL_ENOMEM)
		return kl_errinfo_set(info, err, "lease ddb store: out of memory");
	if (err != KL_OK)
		return bad_attr(info, key, attr, "is not a string set (SS)");
	for (size_t i = 0; i < n && err == KL_OK; i++)
		err = lease_strset_add(set, strs[i]);
	free(strs);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease ddb store: out of memory");
	return KL_OK;
}

static enum kl_err get_esn(const json_object *item, const char *key, const char *attr,
			   const char *sub_attr, struct lease_esn *ret, struct kl_errinfo *info)
{
	const char *text;
	uint64_t sub;
	enum kl_err err;

	*ret = lease_esn_sentinel(LEASE_ESN_NONE);
	err = get_opt_s(item, key, attr, &text, info);
	if (err == KL_OK)
		err = get_opt_u64(item, key, sub_attr, &sub, NULL, info);
	if (err != KL_OK || !text)
		return err;
	if (lease_esn_parse(text, sub, ret, NULL) != KL_OK)
		return bad_attr(info, key, attr, "is neither a sentinel nor a sequence number");
	return KL_OK;
}

static enum kl_err set_str_field(char **field, const char *s, struct kl_errinfo *info)
{
	if (lease_set_str(field, s) != KL_OK)
		return kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: out of memory");
	return KL_OK;
}

/* Copies every attribute that is not a known one into l->extra. */
static enum kl_err keep_extra(const json_object *item, struct lease *l, struct kl_errinfo *info)
{
	json_object_object_foreach((json_object *)item, name, val) {
		const char *text;

		if (is_known_attr(name))
			continue;
		text = json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN |
							   JSON_C_TO_STRING_NOSLASHESCAPE);
		if (!text || lease_set_extra(l, name, text) != KL_OK)
			return kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: out of memory");
	}
	return KL_OK;
}

enum kl_err lease_ddb_from_item(const json_object *item, struct lease *ret,
				struct kl_errinfo *info)
{
	struct lease l;
	const char *key, *s, *entity;
	int64_t hb = 0;
	bool present;
	enum kl_err err;

	lease_init(&l);
	if (!item || !json_object_is_type(item, json_type_object))
		return kl_errinfo_set(info, KL_EPARSE, "lease ddb store: item is not an object");
	key = ddb_get_s(item, LEASE_ATTR_KEY);
	/* Other entities (KCL 3.5 single-table mode) are skipped unread. */
	entity = ddb_get_s(item, LEASE_ATTR_ENTITY_TYPE);
	if (ddb_has(item, LEASE_ATTR_ENTITY_TYPE) &&
	    (!entity || strcmp(entity, LEASE_ENTITY_LEASE) != 0))
		return kl_errinfo_set(info, KL_ENOTFOUND, "lease ddb store: item '%.128s' is not a lease",
				      key ? key : "?");
	if (!key)
		return bad_attr(info, NULL, LEASE_ATTR_KEY, "is missing or not a string (S)");
	if ((err = set_str_field(&l.key, key, info)) != KL_OK ||
	    (err = set_str_field(&l.entity_type, entity, info)) != KL_OK)
		goto fail;

	if ((err = get_opt_s(item, key, LEASE_ATTR_OWNER, &s, info)) != KL_OK ||
	    (err = set_str_field(&l.owner, s, info)) != KL_OK)
		goto fail;
	if ((err = get_opt_u64(item, key, LEASE_ATTR_COUNTER, &l.counter, &present, info)) != KL_OK)
		goto fail;
	if (!present) {
		err = bad_attr(info, key, LEASE_ATTR_COUNTER, "is missing");
		goto fail;
	}
	if ((err = get_esn(item, key, LEASE_ATTR_CHECKPOINT, LEASE_ATTR_CHECKPOINT_SUB,
			   &l.checkpoint, info)) != KL_OK ||
	    (err = get_esn(item, key, LEASE_ATTR_PENDING, LEASE_ATTR_PENDING_SUB,
			   &l.pending, info)) != KL_OK)
		goto fail;
	if (ddb_has(item, LEASE_ATTR_PENDING_STATE)) {
		uint8_t *data = NULL;
		size_t len = 0;

		err = ddb_get_b(item, LEASE_ATTR_PENDING_STATE, &data, &len);
		if (err == KL_ENOMEM) {
			err = kl_errinfo_set(info, err, "lease ddb store: out of memory");
			goto fail;
		}
		if (err != KL_OK) {
			err = bad_attr(info, key, LEASE_ATTR_PENDING_STATE, "is not base64 binary (B)");
			goto fail;
		}
		err = lease_set_pending_state(&l, data, len);
		free(data);
		if (err != KL_OK) {
			err = kl_errinfo_set(info, err, "lease ddb store: out of memory");
			goto fail;
		}
	}
	if ((err = get_opt_u64(item, key, LEASE_ATTR_OWNER_SWITCHES, &l.owner_switches, NULL,
			       info)) != KL_OK ||
	    (err = get_opt_ss(item, key, LEASE_ATTR_PARENTS, &l.parents, info)) != KL_OK ||
	    (err = get_opt_ss(item, key, LEASE_ATTR_CHILDREN, &l.children, info)) != KL_OK)
		goto fail;
	if ((err = get_opt_s(item, key, LEASE_ATTR_START_HASH, &s, info)) != KL_OK)
		goto fail;
	if (s && !lease_dec_valid(s)) {
		err = bad_attr(info, key, LEASE_ATTR_START_HASH, "is not a decimal number");
		goto fail;
	}
	if ((err = set_str_field(&l.starting_hash_key, s, info)) != KL_OK ||
	    (err = get_opt_s(item, key, LEASE_ATTR_END_HASH, &s, info)) != KL_OK)
		goto fail;
	if (s && !lease_dec_valid(s)) {
		err = bad_attr(info, key, LEASE_ATTR_END_HASH, "is not a decimal number");
		goto fail;
	}
	if ((err = set_str_field(&l.ending_hash_key, s, info)) != KL_OK)
		goto fail;
	err = ddb_get_n_i64(item, LEASE_ATTR_HEARTBEAT, &hb);
	if (err != KL_OK && err != KL_ENOTFOUND) {
		err = bad_attr(info, key, LEASE_ATTR_HEARTBEAT, "is not a 64-bit integer (N)");
		goto fail;
	}
	l.heartbeat_ms = err == KL_OK ? hb : 0;
	if ((err = get_opt_s(item, key, LEASE_ATTR_SESSION, &s, info)) != KL_OK ||
	    (err = set_str_field(&l.session, s, info)) != KL_OK ||
	    (err = keep_extra(item, &l, info)) != KL_OK)
		goto fail;
	*ret = l;
	return KL_OK;
fail:
	lease_done(&l);
	return err;
}

/* ---------------------------------------------------------------- lease -> item */

/* Sets item[name] = an SS of set (left out when empty). */
static enum kl_err set_ss(json_object *item, const char *name, const struct lease_strset *set)
{
	if (!set->n)
		return KL_OK;
	return ddb_set(item, name, ddb_ss((const char *const *)set->v, set->n));
}

enum kl_err lease_ddb_to_item(const struct lease *l, json_object **ret_item,
			      struct kl_errinfo *info)
{
	json_object *item;
	enum kl_err err;

	if (!l->key || !*l->key || l->checkpoint.kind == LEASE_ESN_NONE)
		return kl_errinfo_set(info, KL_EINVAL, "lease ddb store: a lease needs a key and a checkpoint");
	item = ddb_key_s(LEASE_ATTR_KEY, l->key);
	if (!item)
		return kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: out of memory");
	err = ddb_set(item, LEASE_ATTR_COUNTER, ddb_n_u64(l->counter));
	if (!err && l->owner)
		err = ddb_set(item, LEASE_ATTR_OWNER, ddb_s(l->owner));
	if (!err)
		err = ddb_set(item, LEASE_ATTR_CHECKPOINT, ddb_s(lease_esn_str(&l->checkpoint)));
	if (!err)
		err = ddb_set(item, LEASE_ATTR_CHECKPOINT_SUB, ddb_n_u64(l->checkpoint.subseq));
	if (!err)
		err = ddb_set(item, LEASE_ATTR_OWNER_SWITCHES, ddb_n_u64(l->owner_switches));
	if (!err && l->pending.kind != LEASE_ESN_NONE) {
		err = ddb_set(item, LEASE_ATTR_PENDING, ddb_s(lease_esn_str(&l->pending)));
		if (!err)
			err = ddb_set(item, LEASE_ATTR_PENDING_SUB, ddb_n_u64(l->pending.subseq));
	}
	if (!err && l->pending_state && l->pending_state_len)
		err = ddb_set(item, LEASE_ATTR_PENDING_STATE,
			      ddb_b(l->pending_state, l->pending_state_len));
	if (!err)
		err = set_ss(item, LEASE_ATTR_PARENTS, &l->parents);
	if (!err)
		err = set_ss(item, LEASE_ATTR_CHILDREN, &l->children);
	if (!err && l->starting_hash_key)
		err = ddb_set(item, LEASE_ATTR_START_HASH, ddb_s(l->starting_hash_key));
	if (!err && l->ending_hash_key)
		err = ddb_set(item, LEASE_ATTR_END_HASH, ddb_s(l->ending_hash_key));
	if (err) {
		json_object_put(item);
		return kl_errinfo_set(info, err, "lease ddb store: out of memory");
	}
	*ret_item = item;
	return KL_OK;
}

/* ---------------------------------------------------------------- requests */

void lease_ddb_req_done(struct lease_ddb_req *r)
{
	if (!r)
		return;
	json_object_put(r->body);
	r->body = NULL;
	r->operation = NULL;
}

/*
 * Expression under construction: placeholders for names and values, and
 * the SET / REMOVE / ADD clauses. The first failure sticks in err.
 */
struct expr {
	json_object *names;
	json_object *values;
	char set[512];
	char remove[256];
	char add[128];
	enum kl_err err;
};

static void expr_init(struct expr *e)
{
	memset(e, 0, sizeof(*e));
	e->names = json_object_new_object();
	e->values = json_object_new_object();
	if (!e->names || !e->values)
		e->err = KL_ENOMEM;
}

static void expr_done(struct expr *e)
{
	json_object_put(e->names);
	json_object_put(e->values);
	e->names = e->values = NULL;
}

/* Declares placeholder ph (e.g. "#lc") for attribute attr, once. */
static void expr_name(struct expr *e, const char *ph, const char *attr)
{
	if (e->err || json_object_object_get_ex(e->names, ph, NULL))
		return;
	e->err = ddb_set(e->names, ph, json_object_new_string(attr));
}

/* Declares value placeholder ph (consumes val, a typed value). */
static void expr_value(struct expr *e, const char *ph, json_object *val)
{
	if (e->err) {
		json_object_put(val);
		return;
	}
	e->err = ddb_set(e->values, ph, val);
}

/* Appends text to a clause list, comma-separated. */
static void clause_add(struct expr *e, char *clause, size_t size, const char *text)
{
	size_t len = strlen(clause);
	int n;

	if (e->err)
		return;
	n = snprintf(clause + len, size - len, "%s%s", len ? ", " : "", text);
	if (n < 0 || (size_t)n >= size - len)
		e->err = KL_EINVAL;
}

/* SET ph = vph, declaring both. */
static void expr_set(struct expr *e, const char *ph, const char *attr, const char *vph,
		     json_object *val)
{
	char text[64];

	expr_name(e, ph, attr);
	expr_value(e, vph, val);
	snprintf(text, sizeof(text), "%s = %s", ph, vph);
	clause_add(e, e->set, sizeof(e->set), text);
}

static void expr_remove(struct expr *e, const char *ph, const char *attr)
{
	expr_name(e, ph, attr);
	clause_add(e, e->remove, sizeof(e->remove), ph);
}

static void expr_add(struct expr *e, const char *ph, const char *attr, const char *vph,
		     json_object *val)
{
	char text[64];

	expr_name(e, ph, attr);
	expr_value(e, vph, val);
	snprintf(text, sizeof(text), "%s %s", ph, vph);
	clause_add(e, e->add, sizeof(e->add), text);
}

/* "SET ... REMOVE ... ADD ..." into out. */
static void expr_update_text(struct expr *e, char *out, size_t size)
{
	int n;

	if (e->err)
		return;
	n = snprintf(out, size, "%s%s%s%s%s%s%s%s", e->set[0] ? "SET " : "", e->set,
		     e->set[0] && (e->remove[0] || e->add[0]) ? " " : "",
		     e->remove[0] ? "REMOVE " : "", e->remove,
		     e->remove[0] && e->add[0] ? " " : "", e->add[0] ? "ADD " : "", e->add);
	if (n < 0 || (size_t)n >= size)
		e->err = KL_EINVAL;
}

/* The condition "#lc = :n" on counter n; also declares :n1 = n + 1. */
static void expr_counter(struct expr *e, uint64_t counter)
{
	if (counter == UINT64_MAX && !e->err)
		e->err = KL_EINVAL;
	expr_name(e, "#lc", LEASE_ATTR_COUNTER);
	expr_value(e, ":n", ddb_n_u64(counter));
	expr_set(e, "#lc", LEASE_ATTR_COUNTER, ":n1", ddb_n_u64(counter + 1));
}

/* Finishes an UpdateItem on key into *ret. Always releases e. */
static enum kl_err finish_update(struct expr *e, const char *table, const char *key,
				 const char *condition, struct lease_ddb_req *ret)
{
	char update[1024];
	struct ddb_write_opts opts;
	json_object *k = NULL, *body = NULL;
	enum kl_err err;

	expr_update_text(e, update, sizeof(update));
	err = e->err;
	if (!err && !key)
		err = KL_EINVAL;
	if (!err) {
		k = ddb_key_s(LEASE_ATTR_KEY, key);
		if (!k)
			err = KL_ENOMEM;
	}
	if (!err) {
		memset(&opts, 0, sizeof(opts));
		opts.condition = condition;
		opts.names = e->names;
		opts.values = e->values;
		err = ddb_req_update_item(table, k, update, &opts, &body);
	}
	json_object_put(k);
	expr_done(e);
	if (err)
		return err;
	ret->operation = "UpdateItem";
	ret->body = body;
	return KL_OK;
}

/* kinlakeSession = :s, or REMOVE kinlakeSession when session is NULL (as
 * the memory store clears it). */
static void expr_session(struct expr *e, const char *session)
{
	if (session)
		expr_set(e, "#ss", LEASE_ATTR_SESSION, ":s", ddb_s(session));
	else
		expr_remove(e, "#ss", LEASE_ATTR_SESSION);
}

enum kl_err lease_ddb_req_get(const char *table, const char *key, struct lease_ddb_req *ret)
{
	json_object *k, *body = NULL;
	enum kl_err err;

	if (!key)
		return KL_EINVAL;
	k = ddb_key_s(LEASE_ATTR_KEY, key);
	if (!k)
		return KL_ENOMEM;
	err = ddb_req_get_item(table, k, true, &body);
	json_object_put(k);
	if (err)
		return err;
	ret->operation = "GetItem";
	ret->body = body;
	return KL_OK;
}

enum kl_err lease_ddb_req_create(const char *table, const struct lease *l,
				 struct lease_ddb_req *ret)
{
	struct ddb_write_opts opts;
	json_object *item = NULL, *names, *body = NULL;
	enum kl_err err;

	err = lease_ddb_to_item(l, &item, NULL);
	if (err)
		return err;
	names = json_object_new_object();
	err = names ? ddb_set(names, "#lk", json_object_new_string(LEASE_ATTR_KEY)) : KL_ENOMEM;
	if (!err) {
		memset(&opts, 0, sizeof(opts));
		opts.condition = "attribute_not_exists(#lk)";
		opts.names = names;
		err = ddb_req_put_item(table, item, &opts, &body);
	}
	json_object_put(names);
	json_object_put(item);
	if (err)
		return err;
	ret->operation = "PutItem";
	ret->body = body;
	return KL_OK;
}

enum kl_err lease_ddb_req_renew(const char *table, const char *key, uint64_t counter,
				const char *session, int64_t heartbeat_ms,
				struct lease_ddb_req *ret)
{
	struct expr e;

	expr_init(&e);
	expr_counter(&e, counter);
	expr_session(&e, session);
	if (heartbeat_ms > 0)
		expr_set(&e, "#hb", LEASE_ATTR_HEARTBEAT, ":hb", ddb_n_i64(heartbeat_ms));
	return finish_update(&e, table, key, "#lc = :n", ret);
}

enum kl_err lease_ddb_req_take(const char *table, const char *key, uint64_t counter,
			       const char *owner, const char *session, int64_t heartbeat_ms,
			       bool owner_changes, struct lease_ddb_req *ret)
{
	struct expr e;

	if (!owner)
		return KL_EINVAL;
	expr_init(&e);
	expr_counter(&e, counter);
	expr_set(&e, "#lo", LEASE_ATTR_OWNER, ":me", ddb_s(owner));
	expr_session(&e, session);
	if (heartbeat_ms > 0)
		expr_set(&e, "#hb", LEASE_ATTR_HEARTBEAT, ":hb", ddb_n_i64(heartbeat_ms));
	if (owner_changes)
		expr_add(&e, "#osc", LEASE_ATTR_OWNER_SWITCHES, ":one", ddb_n_u64(1));
	return finish_update(&e, table, key, "#lc = :n", ret);
}

enum kl_err lease_ddb_req_release(const char *table, const char *key, uint64_t counter,
				  const char *owner, struct lease_ddb_req *ret)
{
	struct expr e;

	if (!owner)
		return KL_EINVAL;
	expr_init(&e);
	expr_counter(&e, counter);
	expr_remove(&e, "#lo", LEASE_ATTR_OWNER);
	expr_value(&e, ":me", ddb_s(owner));
	return finish_update(&e, table, key, "#lc = :n AND #lo = :me", ret);
}

enum kl_err lease_ddb_req_checkpoint(const char *table, const char *key, uint64_t counter,
				     const char *session, const struct lease_esn *cp,
				     struct lease_ddb_req *ret)
{
	struct expr e;

	if (!cp || cp->kind == LEASE_ESN_NONE)
		return KL_EINVAL;
	expr_init(&e);
	expr_counter(&e, counter);
	expr_set(&e, "#cp", LEASE_ATTR_CHECKPOINT, ":cp", ddb_s(lease_esn_str(cp)));
	expr_set(&e, "#cps", LEASE_ATTR_CHECKPOINT_SUB, ":sub", ddb_n_u64(cp->subseq));
	expr_set(&e, "#osc", LEASE_ATTR_OWNER_SWITCHES, ":zero", ddb_n_u64(0));
	expr_session(&e, session);
	expr_remove(&e, "#pc", LEASE_ATTR_PENDING);
	expr_remove(&e, "#pcs", LEASE_ATTR_PENDING_SUB);
	expr_remove(&e, "#pst", LEASE_ATTR_PENDING_STATE);
	return finish_update(&e, table, key, "#lc = :n", ret);
}

enum kl_err lease_ddb_req_prepare(const char *table, const char *key, uint64_t counter,
				  const char *session, const struct lease_esn *pending,
				  const void *state, size_t state_len, struct lease_ddb_req *ret)
{
	struct expr e;

	if (!pending || pending->kind == LEASE_ESN_NONE)
		return KL_EINVAL;
	expr_init(&e);
	expr_counter(&e, counter);
	expr_set(&e, "#pc", LEASE_ATTR_PENDING, ":p", ddb_s(lease_esn_str(pending)));
	expr_set(&e, "#pcs", LEASE_ATTR_PENDING_SUB, ":psub", ddb_n_u64(pending->subseq));
	expr_session(&e, session);
	/* No state (or an empty one) clears the old state, as in the memory store. */
	if (state && state_len)
		expr_set(&e, "#pst", LEASE_ATTR_PENDING_STATE, ":st", ddb_b(state, state_len));
	else
		expr_remove(&e, "#pst", LEASE_ATTR_PENDING_STATE);
	return finish_update(&e, table, key, "#lc = :n", ret);
}

/* Only lease entities may be changed by update_meta: other entities share
 * the table in KCL 3.5 single-table mode. */
#define META_CONDITION "attribute_exists(#lk) AND (attribute_not_exists(#et) OR #et = :lease)"

enum kl_err lease_ddb_req_update_meta(const char *table, const char *key,
				      const struct lease_strset *children,
				      const char *starting_hash_key, const char *ending_hash_key,
				      struct lease_ddb_req *ret)
{
	struct expr e;

	if (!starting_hash_key != !ending_hash_key)
		return KL_EINVAL;
	if ((!children || !children->n) && !starting_hash_key)
		return lease_ddb_req_get(table, key, ret);
	expr_init(&e);
	if (children && children->n)
		expr_set(&e, "#ch", LEASE_ATTR_CHILDREN, ":c",
			 ddb_ss((const char *const *)children->v, children->n));
	if (starting_hash_key) {
		expr_set(&e, "#sh", LEASE_ATTR_START_HASH, ":sh", ddb_s(starting_hash_key));
		expr_set(&e, "#eh", LEASE_ATTR_END_HASH, ":eh", ddb_s(ending_hash_key));
	}
	expr_name(&e, "#lk", LEASE_ATTR_KEY);
	expr_name(&e, "#et", LEASE_ATTR_ENTITY_TYPE);
	expr_value(&e, ":lease", ddb_s(LEASE_ENTITY_LEASE));
	return finish_update(&e, table, key, META_CONDITION, ret);
}

enum kl_err lease_ddb_req_set_extra(const char *table, const char *key, const char *name,
				    const char *expected, const char *value,
				    struct lease_ddb_req *ret)
{
	json_object *v = NULL, *old = NULL;
	struct expr e;

	if (!name || !*name || is_known_attr(name))
		return KL_EINVAL;
	/* The values are typed DynamoDB JSON already ({"S":"..."}). */
	if (value && !json_object_is_type(v = json_tokener_parse(value), json_type_object)) {
		json_object_put(v);
		return KL_EINVAL;
	}
	if (expected && !json_object_is_type(old = json_tokener_parse(expected), json_type_object)) {
		json_object_put(v);
		json_object_put(old);
		return KL_EINVAL;
	}
	expr_init(&e);
	if (v)
		expr_set(&e, "#x", name, ":v", v);
	else
		expr_remove(&e, "#x", name);
	expr_name(&e, "#lk", LEASE_ATTR_KEY);
	expr_name(&e, "#et", LEASE_ATTR_ENTITY_TYPE);
	expr_value(&e, ":lease", ddb_s(LEASE_ENTITY_LEASE));
	if (old)
		expr_value(&e, ":old", old);
	return finish_update(&e, table, key,
			     old ? META_CONDITION " AND #x = :old" :
				   META_CONDITION " AND attribute_not_exists(#x)",
			     ret);
}

enum kl_err lease_ddb_req_delete(const char *table, const char *key, uint64_t counter,
				 struct lease_ddb_req *ret)
{
	struct ddb_write_opts opts;
	json_object *k = NULL, *body = NULL;
	struct expr e;
	enum kl_err err;

	if (!key)
		return KL_EINVAL;
	expr_init(&e);
	expr_name(&e, "#lc", LEASE_ATTR_COUNTER);
	expr_value(&e, ":n", ddb_n_u64(counter));
	err = e.err;
	if (!err) {
		k = ddb_key_s(LEASE_ATTR_KEY, key);
		if (!k)
			err = KL_ENOMEM;
	}
	if (!err) {
		memset(&opts, 0, sizeof(opts));
		opts.condition = "#lc = :n";
		opts.names = e.names;
		opts.values = e.values;
		err = ddb_req_delete_item(table, k, &opts, &body);
	}
	json_object_put(k);
	expr_done(&e);
	if (err)
		return err;
	ret->operation = "DeleteItem";
	ret->body = body;
	return KL_OK;
}

/* ---------------------------------------------------------------- the store */

struct pooled_client {
	struct aws_client c;
	struct pooled_client *next;
};

struct ddb_store {
	char *table;
	struct aws_client_config aws;  /* strings below are ours */
	char *region, *endpoint, *ca_file;
	struct creds_chain *creds;
	size_t max_items;
	int page_limit;

	pthread_mutex_t mu;
	pthread_cond_t cv;             /* a client came back to the pool */
	struct pooled_client *idle;
	unsigned n_clients, max_clients;
};

static const struct lease_store_ops ddb_ops;

/* Borrows a client: an idle one, a new one, or the next one returned. */
static enum kl_err client_get(struct ddb_store *st, struct pooled_client **ret,
			      struct kl_errinfo *info)
{
	struct pooled_client *p;
	enum kl_err err;

	pthread_mutex_lock(&st->mu);
	while (!st->idle && st->n_clients >= st->max_clients)
		pthread_cond_wait(&st->cv, &st->mu);
	p = st->idle;
	if (p) {
		st->idle = p->next;
		pthread_mutex_unlock(&st->mu);
		*ret = p;
		return KL_OK;
	}
	st->n_clients++;
	pthread_mutex_unlock(&st->mu);

	p = calloc(1, sizeof(*p));
	err = p ? aws_client_init(&p->c, &st->aws, st->creds) : KL_ENOMEM;
	if (err != KL_OK) {
		if (p)
			aws_client_done(&p->c);
		free(p);
		pthread_mutex_lock(&st->mu);
		st->n_clients--;
		pthread_cond_signal(&st->cv);
		pthread_mutex_unlock(&st->mu);
		return kl_errinfo_set(info, err, "lease ddb store: cannot set up a DynamoDB client");
	}
	*ret = p;
	return KL_OK;
}

static void client_put(struct ddb_store *st, struct pooled_client *p)
{
	pthread_mutex_lock(&st->mu);
	p->next = st->idle;
	st->idle = p;
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->mu);
}

/* Sends req (released here). On KL_OK and ret_resp not NULL, *ret_resp is
 * the response (caller json_object_put()s it). */
static enum kl_err send_req(struct ddb_store *st, enum kl_err build_err, struct lease_ddb_req *req,
			    json_object **ret_resp, struct kl_errinfo *info)
{
	struct pooled_client *p;
	json_object *resp = NULL;
	enum kl_err err = build_err;

	if (err != KL_OK) {
		lease_ddb_req_done(req);
		return kl_errinfo_set(info, err, "lease ddb store: cannot build the request: %s",
				      kl_strerror(err));
	}
	err = client_get(st, &p, info);
	if (err == KL_OK) {
		err = aws_json_call(&p->c, DDB_TARGET_PREFIX, DDB_JSON_VERSION, req->operation,
				    req->body, &resp, info);
		client_put(st, p);
	}
	if (err != KL_OK)
		log_debug("lease ddb store: %s on '%s' failed: %s %s", req->operation, st->table,
			  kl_strerror(err), info ? info->aws_code : "");
	lease_ddb_req_done(req);
	if (err == KL_OK && ret_resp)
		*ret_resp = resp;
	else
		json_object_put(resp);
	return err;
}

/* GetItem of key; *ret_item NULL when there is no such item. */
static enum kl_err get_item(struct ddb_store *st, const char *key, json_object **ret_item,
			    struct kl_errinfo *info)
{
	struct lease_ddb_req req = { NULL, NULL };
	json_object *resp = NULL, *item = NULL;
	enum kl_err err;

	err = send_req(st, lease_ddb_req_get(st->table, key, &req), &req, &resp, info);
	if (err != KL_OK)
		return err;
	err = ddb_parse_get_item(resp, &item);
	json_object_put(resp);
	if (err != KL_OK)
		return kl_errinfo_set(info, err, "lease ddb store: GetItem: unexpected response");
	*ret_item = item;
	return KL_OK;
}

/* Appends l to list by moving it (no deep copy). */
static enum kl_err list_move_in(struct lease_list *list, struct lease *l)
{
	if (list->n == list->alloc) {
		size_t alloc = list->alloc ? list->alloc * 2 : 16;
		struct lease *items = realloc(list->items, alloc * sizeof(*items));

		if (!items)
			return KL_ENOMEM;
		list->items = items;
		list->alloc = alloc;
	}
	list->items[list->n++] = *l;
	lease_init(l);
	return KL_OK;
}

static enum kl_err ddb_scan_op(void *ctx, struct lease_list *ret, struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct ddb_scan_opts opts;
	struct ddb_scan_page prev = { 0 };
	struct pooled_client *p;
	struct lease_list out;
	size_t seen = 0;
	enum kl_err err;

	err = client_get(st, &p, info);
	if (err != KL_OK)
		return err;
	lease_list_init(&out);
	memset(&opts, 0, sizeof(opts));
	opts.limit = st->page_limit;
	opts.consistent_read = true;
	for (;;) {
		struct ddb_scan_page page;
		size_t n;

		err = ddb_scan(&p->c, st->table, &opts, &page, info);
		/* opts.exclusive_start_key points into prev: release it only now. */
		ddb_scan_page_done(&prev);
		if (err != KL_OK)
			break;
		n = json_object_array_length(page.items);
		seen += n;
		if (seen > st->max_items) {
			ddb_scan_page_done(&page);
			err = kl_errinfo_set(info, KL_ENOMEM,
					     "lease ddb store: table '%s' has more than %zu items",
					     st->table, st->max_items);
			break;
		}
		for (size_t i = 0; i < n && err == KL_OK; i++) {
			struct lease l;
			enum kl_err e = lease_ddb_from_item(json_object_array_get_idx(page.items, i),
							    &l, info);

			if (e == KL_ENOTFOUND)
				continue; /* another entity type */
			if (e == KL_OK && list_move_in(&out, &l) != KL_OK) {
				lease_done(&l);
				e = kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: out of memory");
			}
			err = e;
		}
		if (err != KL_OK || !page.last_evaluated_key) {
			ddb_scan_page_done(&page);
			break;
		}
		prev = page;
		opts.exclusive_start_key = prev.last_evaluated_key;
	}
	client_put(st, p);
	if (err != KL_OK) {
		log_debug("lease ddb store: scan of '%s' failed: %s", st->table, kl_strerror(err));
		lease_list_done(&out);
		return err;
	}
	*ret = out;
	return KL_OK;
}

static enum kl_err ddb_get_op(void *ctx, const char *key, struct lease *ret,
			      struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	json_object *item = NULL;
	enum kl_err err;

	err = get_item(st, key, &item, info);
	if (err != KL_OK)
		return err;
	if (!item)
		return kl_errinfo_set(info, KL_ENOTFOUND, "lease ddb store: no lease '%s'", key);
	err = lease_ddb_from_item(item, ret, info);
	json_object_put(item);
	return err;
}

static enum kl_err ddb_create_op(void *ctx, const struct lease *l, struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_create(st->table, l, &req), &req, NULL, info);
}

static enum kl_err ddb_renew_op(void *ctx, const char *key, uint64_t counter, const char *session,
				int64_t heartbeat_ms, struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_renew(st->table, key, counter, session, heartbeat_ms, &req),
			&req, NULL, info);
}

static enum kl_err ddb_take_op(void *ctx, const char *key, uint64_t counter, const char *owner,
			       const char *session, int64_t heartbeat_ms, bool owner_changes,
			       struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_take(st->table, key, counter, owner, session, heartbeat_ms,
					       owner_changes, &req),
			&req, NULL, info);
}

static enum kl_err ddb_release_op(void *ctx, const char *key, uint64_t counter, const char *owner,
				  struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_release(st->table, key, counter, owner, &req), &req, NULL,
			info);
}

static enum kl_err ddb_checkpoint_op(void *ctx, const char *key, uint64_t counter,
				     const char *session, const struct lease_esn *cp,
				     struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_checkpoint(st->table, key, counter, session, cp, &req),
			&req, NULL, info);
}

static enum kl_err ddb_prepare_op(void *ctx, const char *key, uint64_t counter,
				  const char *session, const struct lease_esn *pending,
				  const void *state, size_t state_len, struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_prepare(st->table, key, counter, session, pending, state,
						  state_len, &req),
			&req, NULL, info);
}

static enum kl_err ddb_update_meta_op(void *ctx, const char *key,
				      const struct lease_strset *children,
				      const char *starting_hash_key, const char *ending_hash_key,
				      struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };
	json_object *item = NULL;
	struct lease l;
	enum kl_err err;

	if ((children && children->n) || starting_hash_key || ending_hash_key)
		return send_req(st, lease_ddb_req_update_meta(st->table, key, children,
							      starting_hash_key, ending_hash_key,
							      &req),
				&req, NULL, info);
	/* Nothing to change: the existence check alone (a consistent read). */
	err = get_item(st, key, &item, info);
	if (err != KL_OK)
		return err;
	err = item ? lease_ddb_from_item(item, &l, NULL) : KL_ENOTFOUND;
	json_object_put(item);
	if (err == KL_OK) {
		lease_done(&l);
		return KL_OK;
	}
	return kl_errinfo_set(info, KL_ECONFLICT, "lease ddb store: update_meta '%s': no such lease",
			      key);
}

static enum kl_err ddb_delete_op(void *ctx, const char *key, uint64_t counter,
				 struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_delete(st->table, key, counter, &req), &req, NULL, info);
}

static enum kl_err ddb_set_extra_op(void *ctx, const char *key, const char *name,
				    const char *expected, const char *value,
				    struct kl_errinfo *info)
{
	struct ddb_store *st = ctx;
	struct lease_ddb_req req = { NULL, NULL };

	return send_req(st, lease_ddb_req_set_extra(st->table, key, name, expected, value, &req),
			&req, NULL, info);
}

static void ddb_destroy(void *ctx)
{
	struct ddb_store *st = ctx;

	if (!st)
		return;
	while (st->idle) {
		struct pooled_client *p = st->idle;

		st->idle = p->next;
		aws_client_done(&p->c);
		free(p);
	}
	pthread_cond_destroy(&st->cv);
	pthread_mutex_destroy(&st->mu);
	free(st->table);
	free(st->region);
	free(st->endpoint);
	free(st->ca_file);
	free(st);
}

static const struct lease_store_ops ddb_ops = {
	.name = "dynamodb",
	.scan = ddb_scan_op,
	.get = ddb_get_op,
	.create = ddb_create_op,
	.renew = ddb_renew_op,
	.take = ddb_take_op,
	.release = ddb_release_op,
	.checkpoint = ddb_checkpoint_op,
	.prepare = ddb_prepare_op,
	.update_meta = ddb_update_meta_op,
	.delete_lease = ddb_delete_op,
	.destroy = ddb_destroy,
	.set_extra = ddb_set_extra_op,
};

static char *dup_or_null(const char *s, bool *failed)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*failed = true;
	return d;
}

enum kl_err lease_store_ddb_new(const struct lease_store_ddb_config *cfg,
				struct lease_store **ret_store, struct kl_errinfo *info)
{
	struct lease_store *s;
	struct ddb_store *st;
	bool failed = false;

	if (!cfg || !cfg->table || !*cfg->table || !cfg->aws || !cfg->aws->region || !cfg->creds)
		return kl_errinfo_set(info, KL_EINVAL,
				      "lease ddb store: a table, a region and credentials are required");
	s = calloc(1, sizeof(*s));
	st = calloc(1, sizeof(*st));
	if (!s || !st) {
		free(s);
		free(st);
		return kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: out of memory");
	}
	if (pthread_mutex_init(&st->mu, NULL) != 0) {
		free(s);
		free(st);
		return kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: cannot create a mutex");
	}
	if (pthread_cond_init(&st->cv, NULL) != 0) {
		pthread_mutex_destroy(&st->mu);
		free(s);
		free(st);
		return kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: cannot create a condition");
	}
	st->aws = *cfg->aws;
	st->aws.service = "dynamodb";
	st->table = dup_or_null(cfg->table, &failed);
	st->region = dup_or_null(cfg->aws->region, &failed);
	st->endpoint = dup_or_null(cfg->aws->endpoint, &failed);
	st->ca_file = dup_or_null(cfg->aws->http.ca_file, &failed);
	st->aws.region = st->region;
	st->aws.endpoint = st->endpoint;
	st->aws.http.ca_file = st->ca_file;
	st->creds = cfg->creds;
	st->max_clients = cfg->max_clients ? cfg->max_clients : DEFAULT_MAX_CLIENTS;
	st->max_items = cfg->max_items ? cfg->max_items : DEFAULT_MAX_ITEMS;
	st->page_limit = cfg->scan_page_limit > 0 ? cfg->scan_page_limit : 0;
	if (failed) {
		ddb_destroy(st);
		free(s);
		return kl_errinfo_set(info, KL_ENOMEM, "lease ddb store: out of memory");
	}
	s->ops = &ddb_ops;
	s->ctx = st;
	*ret_store = s;
	return KL_OK;
}

enum kl_err lease_store_ddb_ensure_table(struct lease_store *store, long timeout_ms,
					 struct kl_errinfo *info)
{
	struct ddb_store *st;
	struct pooled_client *p;
	struct ddb_table_desc d;
	enum kl_err err;

	if (!store || store->ops != &ddb_ops)
		return kl_errinfo_set(info, KL_EINVAL, "lease ddb store: not a DynamoDB store");
	st = store->ctx;
	err = client_get(st, &p, info);
	if (err != KL_OK)
		return err;
	err = ddb_describe_table(&p->c, st->table, &d, info);
	if (err == KL_ENOTFOUND) {
		/* As KCL: on-demand billing, hash key leaseKey (S), no range key. */
		err = ddb_create_table(&p->c, st->table, LEASE_ATTR_KEY, "S", info);
		if (err == KL_EEXISTS)
			err = KL_OK; /* another worker was faster */
		if (err == KL_OK)
			log_debug("lease ddb store: created table '%s'", st->table);
	}
	if (err == KL_OK)
		err = ddb_wait_table_active(&p->c, st->table, timeout_ms, &d, info);
	client_put(st, p);
	if (err != KL_OK)
		return err;
	if (strcmp(d.hash_key, LEASE_ATTR_KEY) != 0 || strcmp(d.hash_key_type, "S") != 0 ||
	    d.range_key[0])
		return kl_errinfo_set(info, KL_ECONFIG,
				      "lease ddb store: table '%s' has key %s (%s)%s%s, not %s (S)",
				      st->table, d.hash_key, d.hash_key_type,
				      d.range_key[0] ? " + range key " : "", d.range_key,
				      LEASE_ATTR_KEY);
	return KL_OK;
}
