/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agg_spec.c: the aggregates' list syntax (see agg_spec.h). Messages name
 * the bad item, never the list: the caller says which key it was.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "agg_spec.h"

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/*
 * Calls item(ctx, text, len) for each comma-separated item of list, spaces
 * around items trimmed. An empty item is an error; the empty list is not.
 */
static enum kl_err each_item(const char *list,
			     enum kl_err (*item)(void *ctx, const char *s, size_t len,
						 struct kl_errinfo *info),
			     void *ctx, struct kl_errinfo *info)
{
	const char *p = list ? list : "";

	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *s = p;
		enum kl_err err;

		while (len && (*s == ' ' || *s == '\t')) {
			s++;
			len--;
		}
		while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
			len--;
		if (!len) {
			if (!end && p == list && !*p)
				return KL_OK;   /* the empty list */
			return kl_errinfo_set(info, KL_ECONFIG, "empty item in \"%s\"", list);
		}
		err = item(ctx, s, len, info);
		if (err)
			return err;
		if (!end)
			return KL_OK;
		p = end + 1;
	}
}

/* Copies the name s[0..len) to out (AGG_NAME_MAX + 1 bytes) when it is one. */
static enum kl_err check_name(const char *s, size_t len, char *out, struct kl_errinfo *info)
{
	if (len == 0 || len > AGG_NAME_MAX)
		return kl_errinfo_set(info, KL_ECONFIG, "name '%.*s' must be 1 to %d characters",
				      (int)len, s, AGG_NAME_MAX);
	for (size_t i = 0; i < len; i++)
		if (!name_char(s[i]))
			return kl_errinfo_set(info, KL_ECONFIG, "'%.*s': only letters, digits, '_',"
					      " '.' and '-' are allowed in a name", (int)len, s);
	if (out) {
		memcpy(out, s, len);
		out[len] = '\0';
	}
	return KL_OK;
}

enum kl_err agg_spec_check_name(const char *name, struct kl_errinfo *info)
{
	return check_name(name, strlen(name), NULL, info);
}

static enum kl_err dim_item(void *ctx, const char *s, size_t len, struct kl_errinfo *info)
{
	struct agg_spec *spec = ctx;
	struct agg_dim dim;
	enum kl_err err;

	memset(&dim, 0, sizeof(dim));
	dim.kind = AGG_DIM_FIELD;
	if (len > 4 && memcmp(s, "key:", 4) == 0) {
		dim.kind = AGG_DIM_KEY;
		s += 4;
		len -= 4;
	}
	err = check_name(s, len, dim.name, info);
	if (err)
		return err;
	/* Both kinds share the attribute name dim_<name>: names are unique. */
	for (size_t i = 0; i < spec->n_dims; i++)
		if (strcmp(spec->dims[i].name, dim.name) == 0)
			return kl_errinfo_set(info, KL_ECONFIG, "'%s' is listed twice", dim.name);
	if (spec->n_dims == AGG_MAX_DIMS)
		return kl_errinfo_set(info, KL_ECONFIG, "at most %d dimensions", AGG_MAX_DIMS);
	spec->dims[spec->n_dims++] = dim;
	return KL_OK;
}

enum kl_err agg_spec_parse_dims(const char *list, struct agg_spec *spec, struct kl_errinfo *info)
{
	enum kl_err err;

	spec->n_dims = 0;
	err = each_item(list, dim_item, spec, info);
	if (!err && spec->n_dims == 0)
		err = kl_errinfo_set(info, KL_ECONFIG, "at least one dimension is needed");
	return err;
}

static enum kl_err measure_item(void *ctx, const char *s, size_t len, struct kl_errinfo *info)
{
	struct agg_spec *spec = ctx;
	char name[AGG_NAME_MAX + 1];
	enum kl_err err;

	if (len == 5 && memcmp(s, "count", 5) == 0)
		return KL_OK;
	if (len > 9 && memcmp(s, "distinct:", 9) == 0) {
		err = check_name(s + 9, len - 9, name, info);
		if (err)
			return err;
		for (size_t i = 0; i < spec->n_distinct; i++)
			if (strcmp(spec->distincts[i], name) == 0)
				return kl_errinfo_set(info, KL_ECONFIG, "distinct:%s is listed twice",
						      name);
		if (spec->n_distinct == AGG_MAX_DISTINCT)
			return kl_errinfo_set(info, KL_ECONFIG, "at most %d distinct counts",
					      AGG_MAX_DISTINCT);
		memcpy(spec->distincts[spec->n_distinct++], name, sizeof(name));
		return KL_OK;
	}
	if (len <= 4 || memcmp(s, "sum:", 4) != 0)
		return kl_errinfo_set(info, KL_ECONFIG, "'%.*s' is neither \"count\", \"sum:FIELD\""
				      " nor \"distinct:FIELD\"", (int)len, s);
	err = check_name(s + 4, len - 4, name, info);
	if (err)
		return err;
	for (size_t i = 0; i < spec->n_sums; i++)
		if (strcmp(spec->sums[i], name) == 0)
			return kl_errinfo_set(info, KL_ECONFIG, "sum:%s is listed twice", name);
	if (spec->n_sums == AGG_MAX_SUMS)
		return kl_errinfo_set(info, KL_ECONFIG, "at most %d sums", AGG_MAX_SUMS);
	memcpy(spec->sums[spec->n_sums++], name, sizeof(name));
	return KL_OK;
}

enum kl_err agg_spec_parse_measures(const char *list, struct agg_spec *spec,
				    struct kl_errinfo *info)
{
	spec->n_sums = 0;
	spec->n_distinct = 0;
	return each_item(list, measure_item, spec, info);
}
