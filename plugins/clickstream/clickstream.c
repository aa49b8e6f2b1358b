/* SPDX-License-Identifier: Apache-2.0 */
/*
 * clickstream.c: the built-in transform for JSON clickstream events. Per
 * record: parse (strict JSON, valid UTF-8, one object), rename fields,
 * trim string values, drop bot traffic by user-agent substring, check the
 * required fields, and set the partition keys dt (yyyy-MM-dd) and hour
 * (HH), UTC, from the event's timestamp field (ISO-8601 or epoch ms) or,
 * when the event has none, from the record's arrival time. The output is
 * the normalized event as compact JSON.
 *
 * Invariant: a record that cannot be handled is FAILED with a reason that
 * names the problem; only bot traffic is DROPPED. Field names are top-level
 * keys. One json_tokener per instance, so instances are not thread-safe.
 *
 * Settings (all optional):
 *   required_fields = [ "event", "user_id" ];   default: none
 *   renames = [ "ts=timestamp", "ua=user_agent" ]; default: none
 *   trim = true;
 *   user_agent_field = "user_agent";
 *   bot_patterns = [ "bot", "crawler", "spider", "slurp", "headless" ];
 *                                          (case-insensitive substrings)
 *   timestamp_field = "timestamp";
 *   date_key = "dt";  hour_key = "hour";   ("" disables that key)
 */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include <kinlake/transform.h>

/* Timestamps accepted: 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z. */
#define MAX_EPOCH_MS 253402300799999LL

static const char *const default_bots[] = { "bot", "crawler", "spider", "slurp", "headless" };

struct rename {
	char *from;
	char *to;
};

struct clickstream {
	const struct kl_transform_host *host;
	struct kl_transform_handle *h;
	json_tokener *tok;
	char **required;
	size_t nrequired;
	struct rename *renames;
	size_t nrenames;
	char **bots;
	size_t nbots;
	bool trim;
	char *ua_field;
	char *ts_field;
	char *date_key;
	char *hour_key;
};

static void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void cs_destroy(void *instance)
{
	struct clickstream *cs = instance;

	if (!cs)
		return;
	if (cs->tok)
		json_tokener_free(cs->tok);
	free_strings(cs->required, cs->nrequired);
	for (size_t i = 0; i < cs->nrenames; i++) {
		free(cs->renames[i].from);
		free(cs->renames[i].to);
	}
	free(cs->renames);
	free_strings(cs->bots, cs->nbots);
	free(cs->ua_field);
	free(cs->ts_field);
	free(cs->date_key);
	free(cs->hour_key);
	free(cs);
}

/* Copies the string list key into *ret (defaults when absent). */
static int get_list(struct clickstream *cs, const char *key, const char *const *def, size_t ndef,
		    char ***ret, size_t *ret_n)
{
	const struct kl_transform_host *host = cs->host;
	size_t n = 0;
	enum kl_transform_cfg got = host->config_list(cs->h, key, &n);
	char **v;

	if (got != KL_TRANSFORM_CFG_SET)
		n = ndef;
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *s = got == KL_TRANSFORM_CFG_SET ? host->config_list_item(cs->h, key, i) : def[i];

		v[i] = strdup(s ? s : "");
		if (!v[i]) {
			free_strings(v, i);
			return -1;
		}
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int get_string(struct clickstream *cs, const char *key, const char *def, char **ret)
{
	const char *v = def;

	cs->host->config_string(cs->h, key, def, &v);
	*ret = strdup(v ? v : "");
	return *ret ? 0 : -1;
}

static int cs_init(const struct kl_transform_host *host, struct kl_transform_handle *h,
		   void **ret_instance)
{
	struct clickstream *cs = calloc(1, sizeof(*cs));
	char **pairs = NULL;
	size_t npairs = 0;
	int trim = 1;

	if (!cs) {
		host->set_error(h, "out of memory");
		return -1;
	}
	cs->host = host;
	cs->h = h;
	host->config_bool(h, "trim", 1, &trim);
	cs->trim = trim != 0;
	if (get_list(cs, "required_fields", NULL, 0, &cs->required, &cs->nrequired) ||
	    get_list(cs, "renames", NULL, 0, &pairs, &npairs) ||
	    get_list(cs, "bot_patterns", default_bots, sizeof(default_bots) / sizeof(default_bots[0]),
		     &cs->bots, &cs->nbots) ||
	    get_string(cs, "user_agent_field", "user_agent", &cs->ua_field) ||
	    get_string(cs, "timestamp_field", "timestamp", &cs->ts_field) ||
	    get_string(cs, "date_key", "dt", &cs->date_key) ||
	    get_string(cs, "hour_key", "hour", &cs->hour_key))
		goto nomem;

	cs->renames = calloc(npairs ? npairs : 1, sizeof(*cs->renames));
	if (!cs->renames)
		goto nomem;
	for (size_t i = 0; i < npairs; i++) {
		char *eq = strchr(pairs[i], '=');

		if (!eq || eq == pairs[i] || !eq[1] || strchr(eq + 1, '=')) {
			host->set_error(h, "renames: entry '%s' is not \"from=to\"", pairs[i]);
			goto fail;
		}
		*eq = '\0';
		cs->renames[i].from = strdup(pairs[i]);
		cs->renames[i].to = strdup(eq + 1);
		cs->nrenames++;
		if (!cs->renames[i].from || !cs->renames[i].to)
			goto nomem;
	}
	for (size_t i = 0; i < cs->nbots; i++)
		if (!cs->bots[i][0]) {
			host->set_error(h, "bot_patterns: empty pattern would match every event");
			goto fail;
		}
	cs->tok = json_tokener_new();
	if (!cs->tok)
		goto nomem;
	json_tokener_set_flags(cs->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	free_strings(pairs, npairs);
	*ret_instance = cs;
	return 0;

nomem:
	host->set_error(h, "out of memory");
fail:
	free_strings(pairs, npairs);
	cs_destroy(cs);
	return -1;
}

/* ------------------------------------------------------------ time */

static bool digits(const char *s, int n, int *ret)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (year >= 1). */
static int64_t days_from_civil(int y, int m, int d)
{
	static const int cumulative[12] = { 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334 };
	int64_t yy = y - 1;
	int64_t days = yy * 365 + yy / 4 - yy / 100 + yy / 400; /* days before year y since 0001-01-01 */
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	days += cumulative[m - 1] + (m > 2 && leap) + (d - 1);
	return days - 719162; /* 0001-01-01 to 1970-01-01 */
}

static int days_in_month(int y, int m)
{
	static const int len[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : len[m - 1];
}

/*
 * ISO-8601 / RFC 3339: YYYY-MM-DD, optionally followed by 'T' (or a space)
 * and HH:MM[:SS[.fraction]], then an optional Z or +HH:MM / -HHMM / +HH.
 * Without a zone the time is taken as UTC.
 */
static bool parse_iso8601(const char *s, int64_t *ret_ms)
{
	int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, oh = 0, om = 0, sign = 0;
	const char *p = s;

	if (!digits(p, 4, &y) || p[4] != '-' || !digits(p + 5, 2, &mo) || p[7] != '-' ||
	    !digits(p + 8, 2, &d))
		return false;
	p += 10;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		if (!digits(p + 1, 2, &h) || p[3] != ':' || !digits(p + 4, 2, &mi))
			return false;
		p += 6;
		if (*p == ':') {
			if (!digits(p + 1, 2, &sec))
				return false;
			p += 3;
			if (*p == '.' || *p == ',') {
				int n = 0;

				p++;
				for (; isdigit((unsigned char)*p); p++, n++)
					if (n < 3)
						ms = ms * 10 + (*p - '0');
				if (n == 0)
					return false;
				for (; n < 3; n++)
					ms *= 10;
			}
		}
		if (*p == 'Z' || *p == 'z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			sign = *p == '+' ? 1 : -1;
			if (!digits(p + 1, 2, &oh))
				return false;
			p += 3;
			if (*p == ':')
				p++;
			if (isdigit((unsigned char)*p)) {
				if (!digits(p, 2, &om))
					return false;
				p += 2;
			}
		}
	}
	if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
	    mi > 59 || sec > 60 || oh > 23 || om > 59)
		return false;
	*ret_ms = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000LL + sec * 1000LL + ms -
		  sign * (oh * 60 + om) * 60000LL;
	return true;
}

/* The event time in ms, from the timestamp field or the arrival time. */
static bool event_time(struct clickstream *cs, json_object *ev,
		       const struct kl_transform_record *rec, int64_t *ret_ms, const char **ret_why)
{
	json_object *v = NULL;
	int64_t ms;

	if (!cs->ts_field[0] || !json_object_object_get_ex(ev, cs->ts_field, &v) || !v) {
		ms = rec->approximate_arrival_ms;
		if (ms < 0 || ms > MAX_EPOCH_MS) {
			*ret_why = "is missing and the arrival time is out of range";
			return false;
		}
		*ret_ms = ms;
		return true;
	}
	switch (json_object_get_type(v)) {
	case json_type_int:
		ms = json_object_get_int64(v);
		break;
	case json_type_double:
		if (!(json_object_get_double(v) >= 0 && json_object_get_double(v) <= (double)MAX_EPOCH_MS)) {
			*ret_why = "is out of range";
			return false;
		}
		ms = (int64_t)json_object_get_double(v);
		break;
	case json_type_string: {
		const char *s = json_object_get_string(v);
		size_t n = strspn(s, "0123456789");

		if (n > 0 && n <= 15 && !s[n]) {
			ms = strtoll(s, NULL, 10);
		} else if (!parse_iso8601(s, &ms)) {
			*ret_why = "is neither ISO-8601 nor epoch milliseconds";
			return false;
		}
		break;
	}
	default:
		*ret_why = "is neither ISO-8601 nor epoch milliseconds";
		return false;
	}
	if (ms < 0 || ms > MAX_EPOCH_MS) {
		*ret_why = "is out of range (1970 to 9999)";
		return false;
	}
	*ret_ms = ms;
	return true;
}

/* ------------------------------------------------------------ transform */

/* Trims ASCII whitespace around every string value, recursively. Returns
 * false only when memory ran out. */
static bool trim_strings(json_object *v, int depth)
{
	bool ok = true;

	if (depth > 64)
		return true;
	switch (json_object_get_type(v)) {
	case json_type_object: {
		struct json_object_iterator it = json_object_iter_begin(v);
		struct json_object_iterator end = json_object_iter_end(v);

		while (ok && !json_object_iter_equal(&it, &end)) {
			ok = trim_strings(json_object_iter_peek_value(&it), depth + 1);
			json_object_iter_next(&it);
		}
		break;
	}
	case json_type_array:
		for (size_t i = 0; ok && i < json_object_array_length(v); i++)
			ok = trim_strings(json_object_array_get_idx(v, i), depth + 1);
		break;
	case json_type_string: {
		const char *s = json_object_get_string(v);
		int len = json_object_get_string_len(v);
		int start = 0, end = len;
		char *copy;

		while (start < end && isspace((unsigned char)s[start]))
			start++;
		while (end > start && isspace((unsigned char)s[end - 1]))
			end--;
		if (start == 0 && end == len)
			break;
		/* json-c copies with memcpy: the source must not be its own buffer. */
		copy = malloc((size_t)(end - start) + 1);
		if (!copy)
			return false;
		memcpy(copy, s + start, (size_t)(end - start));
		copy[end - start] = '\0';
		ok = json_object_set_string_len(v, copy, end - start) != 0;
		free(copy);
		break;
	}
	default:
		break;
	}
	return ok;
}

static bool is_bot(const struct clickstream *cs, json_object *ev)
{
	json_object *ua;
	const char *s;

	if (!cs->ua_field[0] || !json_object_object_get_ex(ev, cs->ua_field, &ua) ||
	    !json_object_is_type(ua, json_type_string))
		return false;
	s = json_object_get_string(ua);
	for (size_t i = 0; i < cs->nbots; i++)
		if (strcasestr(s, cs->bots[i]))
			return true;
	return false;
}

static const char *type_name(json_object *v)
{
	return json_type_to_name(json_object_get_type(v));
}

static enum kl_transform_result cs_transform(void *instance, const struct kl_transform_record *rec,
					     struct kl_transform_output *out)
{
	struct clickstream *cs = instance;
	const struct kl_transform_host *host = cs->host;
	enum kl_transform_result result = KL_TRANSFORM_FAILED;
	json_object *ev, *v;
	const char *why = NULL, *json;
	char date[40], hour[16];
	size_t json_len, end;
	int64_t ms;
	struct tm tm;
	time_t secs;
	int idx;

	if (rec->len == 0) {
		host->set_reason(out, "empty record");
		return KL_TRANSFORM_FAILED;
	}
	if (rec->len > INT_MAX) {
		host->set_reason(out, "record of %zu bytes is too large for JSON parsing", rec->len);
		return KL_TRANSFORM_FAILED;
	}
	json_tokener_reset(cs->tok);
	ev = json_tokener_parse_ex(cs->tok, (const char *)rec->data, (int)rec->len);
	if (!ev) {
		enum json_tokener_error e = json_tokener_get_error(cs->tok);

		host->set_reason(out, "invalid JSON at byte %zu: %s", json_tokener_get_parse_end(cs->tok),
				 e == json_tokener_continue ? "unexpected end of input" :
				 json_tokener_error_desc(e));
		return KL_TRANSFORM_FAILED;
	}
	end = json_tokener_get_parse_end(cs->tok);
	while (end < rec->len && isspace(rec->data[end]))
		end++;
	if (end < rec->len) {
		host->set_reason(out, "invalid JSON: trailing data at byte %zu", end);
		goto done;
	}
	if (!json_object_is_type(ev, json_type_object)) {
		host->set_reason(out, "event is a JSON %s, not an object", type_name(ev));
		goto done;
	}

	for (size_t i = 0; i < cs->nrenames; i++) {
		const struct rename *r = &cs->renames[i];

		if (!json_object_object_get_ex(ev, r->from, &v))
			continue;
		if (json_object_object_get_ex(ev, r->to, NULL)) {
			host->set_reason(out, "cannot rename '%s' to '%s': both are present", r->from, r->to);
			goto done;
		}
		json_object_get(v);
		json_object_object_del(ev, r->from);
		if (json_object_object_add(ev, r->to, v) != 0) {
			json_object_put(v);
			host->set_reason(out, "out of memory renaming '%s'", r->from);
			goto done;
		}
	}
	if (cs->trim && !trim_strings(ev, 0)) {
		host->set_reason(out, "out of memory trimming strings");
		goto done;
	}

	if (is_bot(cs, ev)) {
		result = KL_TRANSFORM_DROPPED;
		goto done;
	}
	for (size_t i = 0; i < cs->nrequired; i++) {
		if (!json_object_object_get_ex(ev, cs->required[i], &v) || !v ||
		    (json_object_is_type(v, json_type_string) && json_object_get_string_len(v) == 0)) {
			host->set_reason(out, "missing required field '%s'", cs->required[i]);
			goto done;
		}
	}
	if (!event_time(cs, ev, rec, &ms, &why)) {
		host->set_reason(out, "timestamp field '%s' %s", cs->ts_field, why);
		goto done;
	}
	secs = (time_t)(ms / 1000);
	if (!gmtime_r(&secs, &tm)) {
		host->set_reason(out, "timestamp %lld ms cannot be converted", (long long)ms);
		goto done;
	}
	snprintf(date, sizeof(date), "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
	snprintf(hour, sizeof(hour), "%02d", tm.tm_hour);

	json = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN |
						 JSON_C_TO_STRING_NOSLASHESCAPE, &json_len);
	if (!json) {
		host->set_reason(out, "out of memory serializing the event");
		goto done;
	}
	idx = host->emit(out, json, json_len);
	if (idx < 0) {
		host->set_reason(out, "output of %zu bytes refused by host", json_len);
		goto done;
	}
	if ((cs->date_key[0] && host->set_partition_key(out, idx, cs->date_key, date) != 0) ||
	    (cs->hour_key[0] && host->set_partition_key(out, idx, cs->hour_key, hour) != 0)) {
		host->set_reason(out, "partition keys '%s'/'%s' refused by host", cs->date_key,
				 cs->hour_key);
		goto done;
	}
	result = KL_TRANSFORM_OK;
done:
	json_object_put(ev);
	return result;
}

static const struct kl_transform_plugin clickstream_plugin = {
	KL_TRANSFORM_PLUGIN_HEADER,
	.name = "clickstream",
	.version = "1.0",
	.description = "validates and normalizes JSON click events, drops bots, "
		       "partitions by dt/hour",
	.flags = 0,
	.init = cs_init,
	.transform = cs_transform,
	.destroy = cs_destroy,
};

const struct kl_transform_plugin *kinlake_transform_plugin(void)
{
	return &clickstream_plugin;
}
