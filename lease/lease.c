/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease.c: the lease record, its deep copy/free, string sets, and ESN
 * parsing and ordering. Sequence numbers and hash keys stay decimal
 * strings: normalised (no leading zeros) they compare by length then bytes.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "lease.h"

static const char *const sentinel_names[] = {
	[LEASE_ESN_NONE] = "",
	[LEASE_ESN_AT_TIMESTAMP] = "AT_TIMESTAMP",
	[LEASE_ESN_TRIM_HORIZON] = "TRIM_HORIZON",
	[LEASE_ESN_LATEST] = "LATEST",
	[LEASE_ESN_SEQ] = "",
	[LEASE_ESN_SHARD_END] = "SHARD_END",
};

bool lease_dec_valid(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* Skips leading zeros but keeps a lone "0". */
static const char *dec_strip(const char *s)
{
	while (s[0] == '0' && s[1] != '\0')
		s++;
	return s;
}

int lease_dec_cmp(const char *a, const char *b)
{
	size_t la, lb;
	int c;

	a = dec_strip(a);
	b = dec_strip(b);
	la = strlen(a);
	lb = strlen(b);
	if (la != lb)
		return la < lb ? -1 : 1;
	c = memcmp(a, b, la);
	return c < 0 ? -1 : c > 0;
}

enum kl_err lease_dec_inc(const char *a, char *out, size_t outsz)
{
	size_t len;
	size_t i;

	if (!lease_dec_valid(a))
		return KL_EINVAL;
	a = dec_strip(a);
	len = strlen(a);
	if (outsz < len + 2)
		return KL_EINVAL;
	/* Work right to left in a copy shifted by one, so a carry out of the
	 * top digit has room. */
	out[0] = '0';
	memcpy(out + 1, a, len + 1);
	for (i = len + 1; i-- > 0;) {
		if (out[i] == '9') {
			out[i] = '0';
			continue;
		}
		out[i]++;
		break;
	}
	if (out[0] == '0')
		memmove(out, out + 1, len + 1);
	return KL_OK;
}

enum kl_err lease_esn_parse(const char *checkpoint, uint64_t subseq,
			    struct lease_esn *ret, struct kl_errinfo *info)
{
	struct lease_esn esn;
	const char *digits;

	memset(&esn, 0, sizeof(esn));
	esn.subseq = subseq;
	if (!checkpoint)
		return kl_errinfo_set(info, KL_EINVAL, "lease: no checkpoint value");
	for (int k = LEASE_ESN_AT_TIMESTAMP; k <= LEASE_ESN_SHARD_END; k++) {
		if (k != LEASE_ESN_SEQ && strcmp(checkpoint, sentinel_names[k]) == 0) {
			esn.kind = (enum lease_esn_kind)k;
			*ret = esn;
			return KL_OK;
		}
	}
	if (!lease_dec_valid(checkpoint))
		return kl_errinfo_set(info, KL_EINVAL,
				      "lease: checkpoint '%.64s' is neither a sentinel nor a sequence number",
				      checkpoint);
	digits = dec_strip(checkpoint);
	if (strlen(digits) > LEASE_SEQ_MAX)
		return kl_errinfo_set(info, KL_EINVAL, "lease: sequence number longer than %d digits",
				      LEASE_SEQ_MAX);
	esn.kind = LEASE_ESN_SEQ;
	strcpy(esn.seq, digits);
	*ret = esn;
	return KL_OK;
}

struct lease_esn lease_esn_sentinel(enum lease_esn_kind kind)
{
	struct lease_esn esn;

	memset(&esn, 0, sizeof(esn));
	esn.kind = kind == LEASE_ESN_SEQ ? LEASE_ESN_NONE : kind;
	return esn;
}

const char *lease_esn_str(const struct lease_esn *esn)
{
	if (esn->kind == LEASE_ESN_SEQ)
		return esn->seq;
	return sentinel_names[esn->kind];
}

int lease_esn_cmp(const struct lease_esn *a, const struct lease_esn *b)
{
	int c;

	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	if (a->kind != LEASE_ESN_SEQ)
		return 0;
	c = lease_dec_cmp(a->seq, b->seq);
	if (c)
		return c;
	if (a->subseq != b->subseq)
		return a->subseq < b->subseq ? -1 : 1;
	return 0;
}

/* ---------------------------------------------------------------- strset */

bool lease_strset_has(const struct lease_strset *set, const char *s)
{
	for (size_t i = 0; i < set->n; i++)
		if (strcmp(set->v[i], s) == 0)
			return true;
	return false;
}

enum kl_err lease_strset_add(struct lease_strset *set, const char *s)
{
	char **v;
	char *copy;

	if (lease_strset_has(set, s))
		return KL_OK;
	copy = strdup(s);
	if (!copy)
		return KL_ENOMEM;
	v = realloc(set->v, (set->n + 1) * sizeof(*v));
	if (!v) {
		free(copy);
		return KL_ENOMEM;
	}
	v[set->n++] = copy;
	set->v = v;
	return KL_OK;
}

void lease_strset_done(struct lease_strset *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		free(set->v[i]);
	free(set->v);
	set->v = NULL;
	set->n = 0;
}

enum kl_err lease_strset_copy(struct lease_strset *dst, const struct lease_strset *src)
{
	struct lease_strset out = { NULL, 0 };

	for (size_t i = 0; i < src->n; i++) {
		if (lease_strset_add(&out, src->v[i]) != KL_OK) {
			lease_strset_done(&out);
			return KL_ENOMEM;
		}
	}
	*dst = out;
	return KL_OK;
}

/* ---------------------------------------------------------------- record */

void lease_init(struct lease *l)
{
	memset(l, 0, sizeof(*l));
}

void lease_done(struct lease *l)
{
	if (!l)
		return;
	free(l->key);
	free(l->owner);
	free(l->pending_state);
	lease_strset_done(&l->parents);
	lease_strset_done(&l->children);
	free(l->starting_hash_key);
	free(l->ending_hash_key);
	free(l->entity_type);
	free(l->session);
	for (size_t i = 0; i < l->n_extra; i++) {
		free(l->extra[i].name);
		free(l->extra[i].value);
	}
	free(l->extra);
	memset(l, 0, sizeof(*l));
}

struct lease *lease_new(void)
{
	return calloc(1, sizeof(struct lease));
}

void lease_free(struct lease *l)
{
	lease_done(l);
	free(l);
}

enum kl_err lease_set_str(char **field, const char *s)
{
	char *copy = NULL;

	if (s) {
		copy = strdup(s);
		if (!copy)
			return KL_ENOMEM;
	}
	free(*field);
	*field = copy;
	return KL_OK;
}

enum kl_err lease_set_pending_state(struct lease *l, const void *data, size_t len)
{
	uint8_t *copy = NULL;

	if (data && len) {
		copy = malloc(len);
		if (!copy)
			return KL_ENOMEM;
		memcpy(copy, data, len);
	}
	free(l->pending_state);
	l->pending_state = copy;
	l->pending_state_len = copy ? len : 0;
	return KL_OK;
}

enum kl_err lease_set_extra(struct lease *l, const char *name, const char *value)
{
	struct lease_attr *extra;
	char *n, *v;

	for (size_t i = 0; i < l->n_extra; i++)
		if (strcmp(l->extra[i].name, name) == 0)
			return lease_set_str(&l->extra[i].value, value);
	n = strdup(name);
	v = strdup(value);
	extra = realloc(l->extra, (l->n_extra + 1) * sizeof(*extra));
	if (!n || !v || !extra) {
		free(n);
		free(v);
		if (extra)
			l->extra = extra;
		return KL_ENOMEM;
	}
	extra[l->n_extra].name = n;
	extra[l->n_extra].value = v;
	l->extra = extra;
	l->n_extra++;
	return KL_OK;
}

const char *lease_get_extra(const struct lease *l, const char *name)
{
	for (size_t i = 0; i < l->n_extra; i++)
		if (strcmp(l->extra[i].name, name) == 0)
			return l->extra[i].value;
	return NULL;
}

bool lease_is_lease_entity(const struct lease *l)
{
	return !l->entity_type || strcmp(l->entity_type, LEASE_ENTITY_LEASE) == 0;
}

enum kl_err lease_copy(struct lease *dst, const struct lease *src)
{
	struct lease out;

	lease_init(&out);
	out.counter = src->counter;
	out.checkpoint = src->checkpoint;
	out.pending = src->pending;
	out.owner_switches = src->owner_switches;
	out.heartbeat_ms = src->heartbeat_ms;
	if (lease_set_str(&out.key, src->key) != KL_OK ||
	    lease_set_str(&out.owner, src->owner) != KL_OK ||
	    lease_set_pending_state(&out, src->pending_state, src->pending_state_len) != KL_OK ||
	    lease_strset_copy(&out.parents, &src->parents) != KL_OK ||
	    lease_strset_copy(&out.children, &src->children) != KL_OK ||
	    lease_set_str(&out.starting_hash_key, src->starting_hash_key) != KL_OK ||
	    lease_set_str(&out.ending_hash_key, src->ending_hash_key) != KL_OK ||
	    lease_set_str(&out.entity_type, src->entity_type) != KL_OK ||
	    lease_set_str(&out.session, src->session) != KL_OK)
		goto fail;
	for (size_t i = 0; i < src->n_extra; i++)
		if (lease_set_extra(&out, src->extra[i].name, src->extra[i].value) != KL_OK)
			goto fail;
	*dst = out;
	return KL_OK;
fail:
	lease_done(&out);
	lease_init(dst);
	return KL_ENOMEM;
}

/* ---------------------------------------------------------------- list */

void lease_list_init(struct lease_list *list)
{
	memset(list, 0, sizeof(*list));
}

void lease_list_done(struct lease_list *list)
{
	if (!list)
		return;
	for (size_t i = 0; i < list->n; i++)
		lease_done(&list->items[i]);
	free(list->items);
	memset(list, 0, sizeof(*list));
}

enum kl_err lease_list_add(struct lease_list *list, const struct lease *l)
{
	if (list->n == list->alloc) {
		size_t alloc = list->alloc ? list->alloc * 2 : 16;
		struct lease *items = realloc(list->items, alloc * sizeof(*items));

		if (!items)
			return KL_ENOMEM;
		list->items = items;
		list->alloc = alloc;
	}
	if (lease_copy(&list->items[list->n], l) != KL_OK)
		return KL_ENOMEM;
	list->n++;
	return KL_OK;
}

static int lease_key_cmp(const void *a, const void *b)
{
	const struct lease *la = a, *lb = b;

	return strcmp(la->key, lb->key);
}

void lease_list_sort(struct lease_list *list)
{
	if (list->n > 1)
		qsort(list->items, list->n, sizeof(*list->items), lease_key_cmp);
}

const struct lease *lease_list_find(const struct lease_list *list, const char *key)
{
	size_t lo = 0, hi = list->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(list->items[mid].key, key);

		if (c == 0)
			return &list->items[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}
