/* SPDX-License-Identifier: Apache-2.0 */
/*
 * promcheck.h: a strict checker of Prometheus text exposition (0.0.4) for
 * the tests, written apart from src/daemon/metrics.c so that the writer is
 * not judged by its own reader. It accepts counter and gauge families only
 * (all kinlake writes) and insists on what node-exporter's textfile
 * collector and Prometheus need, and on kinlake's conventions:
 *  - every sample's family has "# HELP" and "# TYPE" before its first
 *    sample, each once; a family's lines are contiguous;
 *  - metric and label names match the grammar, label names are unique in a
 *    sample and do not start with "__"; values are quoted, escapes are only
 *    \\, \" and \n; no series appears twice;
 *  - names start with "kinlake_"; counters end in "_total" and are >= 0;
 *  - the text ends with a newline; no timestamps (the collector refuses them).
 */
#ifndef KL_PROMCHECK_H
#define KL_PROMCHECK_H

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROMCHECK_MAX_FAMILIES 512
#define PROMCHECK_MAX_SERIES 20000

struct promcheck {
	char error[512];               /* first problem, "" if none */
	size_t samples;
	size_t families;
	struct {
		char name[128];
		bool help, type, counter, closed;
	} fam[PROMCHECK_MAX_FAMILIES];
	char **series;                 /* "name{sorted labels}" */
	size_t n_series;
};

static inline bool promcheck_fail(struct promcheck *pc, size_t line, const char *what,
				  const char *text)
{
	if (!pc->error[0])
		snprintf(pc->error, sizeof(pc->error), "line %zu: %s: %.200s", line, what, text);
	return false;
}

static inline int promcheck_family(struct promcheck *pc, const char *name, bool create)
{
	for (size_t i = 0; i < pc->families; i++)
		if (strcmp(pc->fam[i].name, name) == 0)
			return (int)i;
	if (!create || pc->families == PROMCHECK_MAX_FAMILIES || strlen(name) >= 128)
		return -1;
	snprintf(pc->fam[pc->families].name, 128, "%s", name);
	pc->fam[pc->families].help = pc->fam[pc->families].type = false;
	pc->fam[pc->families].closed = false;
	return (int)pc->families++;
}

static inline bool promcheck_name_char(char c, bool first, bool colon)
{
	return isalpha((unsigned char)c) || c == '_' || (!first && isdigit((unsigned char)c)) ||
	       (colon && c == ':');
}

/* Reads a name at *p into out; false when there is none. */
static inline bool promcheck_name(const char **p, char *out, size_t size, bool colon)
{
	size_t n = 0;

	while (promcheck_name_char(**p, n == 0, colon)) {
		if (n + 1 >= size)
			return false;
		out[n++] = *(*p)++;
	}
	out[n] = '\0';
	return n > 0;
}

static inline int promcheck_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Closes every family but keep (its lines must be contiguous). */
static inline void promcheck_close_others(struct promcheck *pc, int keep)
{
	for (size_t i = 0; i < pc->families; i++)
		if ((int)i != keep && (pc->fam[i].help || pc->fam[i].type))
			pc->fam[i].closed = true;
}

static inline bool promcheck_sample(struct promcheck *pc, size_t lineno, const char *line)
{
	char name[128], lname[128], *labels[16], key[4096], value[64];
	const char *p = line;
	size_t n_labels = 0, used;
	int f;
	char *end;
	double v;
	bool ok = true;

	if (!promcheck_name(&p, name, sizeof(name), true))
		return promcheck_fail(pc, lineno, "bad metric name", line);
	if (strncmp(name, "kinlake_", 8) != 0)
		return promcheck_fail(pc, lineno, "name without the kinlake_ prefix", line);
	f = promcheck_family(pc, name, false);
	if (f < 0 || !pc->fam[f].help || !pc->fam[f].type)
		return promcheck_fail(pc, lineno, "sample before its HELP and TYPE", line);
	if (pc->fam[f].closed)
		return promcheck_fail(pc, lineno, "family lines are not contiguous", line);
	promcheck_close_others(pc, f);
	if (*p == '{') {
		p++;
		while (*p != '}') {
			char val[1024];
			size_t vn = 0;

			if (n_labels == 16 || !promcheck_name(&p, lname, sizeof(lname), false) ||
			    (lname[0] == '_' && lname[1] == '_')) {
				ok = promcheck_fail(pc, lineno, "bad label name", line);
				break;
			}
			if (p[0] != '=' || p[1] != '"') {
				ok = promcheck_fail(pc, lineno, "label without a quoted value", line);
				break;
			}
			for (p += 2; *p && *p != '"'; p++) {
				if (*p == '\\') {
					p++;
					if (*p != '\\' && *p != '"' && *p != 'n') {
						ok = promcheck_fail(pc, lineno, "bad escape in a label value", line);
						break;
					}
				}
				if (vn + 1 < sizeof(val))
					val[vn++] = *p;
			}
			if (!ok)
				break;
			val[vn] = '\0';
			if (*p != '"') {
				ok = promcheck_fail(pc, lineno, "unterminated label value", line);
				break;
			}
			p++;
			for (size_t i = 0; i < n_labels; i++)
				if (strncmp(labels[i], lname, strlen(lname)) == 0 &&
				    labels[i][strlen(lname)] == '=')
					ok = promcheck_fail(pc, lineno, "label given twice", line);
			labels[n_labels] = malloc(strlen(lname) + vn + 2);
			if (!labels[n_labels]) {
				ok = promcheck_fail(pc, lineno, "out of memory", line);
				break;
			}
			sprintf(labels[n_labels++], "%s=%s", lname, val);
			if (!ok)
				break;
			if (*p == ',')
				p++;
			else if (*p != '}') {
				ok = promcheck_fail(pc, lineno, "expected ',' or '}'", line);
				break;
			}
		}
		if (ok)
			p++;
	}
	if (ok && *p != ' ')
		ok = promcheck_fail(pc, lineno, "no space before the value", line);
	if (ok) {
		p++;
		snprintf(value, sizeof(value), "%s", p);
		if (strchr(value, ' '))
			ok = promcheck_fail(pc, lineno, "timestamp or trailing text after the value", line);
		v = strtod(value, &end);
		if (ok && (!value[0] || *end))
			ok = promcheck_fail(pc, lineno, "bad value", line);
		if (ok && pc->fam[f].counter && !(v >= 0))
			ok = promcheck_fail(pc, lineno, "negative counter", line);
	}
	if (ok) {
		qsort(labels, n_labels, sizeof(labels[0]), promcheck_cmp_str);
		used = (size_t)snprintf(key, sizeof(key), "%s{", name);
		for (size_t i = 0; i < n_labels && used < sizeof(key); i++)
			used += (size_t)snprintf(key + used, sizeof(key) - used, "%s,", labels[i]);
		for (size_t i = 0; i < pc->n_series; i++)
			if (strcmp(pc->series[i], key) == 0) {
				ok = promcheck_fail(pc, lineno, "series given twice", line);
				break;
			}
		if (ok && pc->n_series < PROMCHECK_MAX_SERIES) {
			char **ns = realloc(pc->series, (pc->n_series + 1) * sizeof(*ns));

			if (ns) {
				pc->series = ns;
				pc->series[pc->n_series++] = strdup(key);
			}
		}
	}
	for (size_t i = 0; i < n_labels; i++)
		free(labels[i]);
	if (ok)
		pc->samples++;
	return ok;
}

static inline bool promcheck_comment(struct promcheck *pc, size_t lineno, const char *line)
{
	const char *p = line + 1;
	char name[128];
	int f;
	bool help;

	if (*p != ' ')
		return true;
	p++;
	if (strncmp(p, "HELP ", 5) != 0 && strncmp(p, "TYPE ", 5) != 0)
		return true;
	help = p[0] == 'H';
	p += 5;
	if (!promcheck_name(&p, name, sizeof(name), true) || *p != ' ')
		return promcheck_fail(pc, lineno, "bad HELP/TYPE line", line);
	p++;
	f = promcheck_family(pc, name, true);
	if (f < 0)
		return promcheck_fail(pc, lineno, "too many families", line);
	if (pc->fam[f].closed)
		return promcheck_fail(pc, lineno, "family lines are not contiguous", line);
	promcheck_close_others(pc, f);
	if (help) {
		if (pc->fam[f].help)
			return promcheck_fail(pc, lineno, "HELP given twice", line);
		if (!*p)
			return promcheck_fail(pc, lineno, "empty HELP", line);
		for (; *p; p++)
			if (*p == '\\' && p[1] != '\\' && p[1] != 'n')
				return promcheck_fail(pc, lineno, "bad escape in HELP", line);
			else if (*p == '\\')
				p++;
		pc->fam[f].help = true;
	} else {
		if (pc->fam[f].type)
			return promcheck_fail(pc, lineno, "TYPE given twice", line);
		if (strcmp(p, "counter") == 0) {
			size_t len = strlen(name);

			if (len < 6 || strcmp(name + len - 6, "_total") != 0)
				return promcheck_fail(pc, lineno, "counter not named *_total", line);
			pc->fam[f].counter = true;
		} else if (strcmp(p, "gauge") != 0) {
			return promcheck_fail(pc, lineno, "TYPE neither counter nor gauge", line);
		}
		pc->fam[f].type = true;
	}
	return true;
}

/* Checks text[0..len). Returns true when valid; else pc->error says why.
 * Free with promcheck_done(). */
static inline bool promcheck_run(struct promcheck *pc, const char *text, size_t len)
{
	size_t lineno = 0;
	const char *p = text, *end = text + len;
	char *line;

	memset(pc, 0, sizeof(*pc));
	if (len == 0 || text[len - 1] != '\n')
		return promcheck_fail(pc, 0, "text does not end with a newline", "");
	line = malloc(len + 1);
	if (!line)
		return promcheck_fail(pc, 0, "out of memory", "");
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)(nl - p);

		lineno++;
		memcpy(line, p, n);
		line[n] = '\0';
		if (memchr(line, '\0', n) || (n && line[n - 1] == '\r')) {
			promcheck_fail(pc, lineno, "NUL or CR in a line", line);
			break;
		}
		if (n && !(line[0] == '#' ? promcheck_comment(pc, lineno, line) :
			   promcheck_sample(pc, lineno, line)))
			break;
		p = nl + 1;
	}
	free(line);
	for (size_t i = 0; !pc->error[0] && i < pc->families; i++)
		if (!pc->fam[i].help || !pc->fam[i].type)
			promcheck_fail(pc, 0, "family without HELP or TYPE", pc->fam[i].name);
	return pc->error[0] == '\0';
}

static inline void promcheck_done(struct promcheck *pc)
{
	for (size_t i = 0; i < pc->n_series; i++)
		free(pc->series[i]);
	free(pc->series);
	pc->series = NULL;
	pc->n_series = 0;
}

#endif
