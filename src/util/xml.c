/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xml.c: element lookup by local name in small AWS XML documents. Scans
 * tags linearly; comments, processing instructions and CDATA sections are
 * jumped over whole, so markup inside them is never taken for markup (in
 * text, comments and PIs vanish and CDATA content is kept literally). The
 * matching end tag is found by counting nested elements of the same name,
 * so <Key> inside <Contents> inside <Contents> cannot confuse it. Input is
 * never modified.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "xml.h"
#include <stdint.h>

/* Local name of the tag starting at p (after '<' or '</'): skips "ns:". */
static int tag_name_is(const char *p, const char *end, const char *name, size_t *ret_taglen)
{
	const char *q = p, *local = p;
	size_t nlen = strlen(name);

	while (q < end && *q != '>' && *q != '/' && *q != ' ' && *q != '\t' &&
	       *q != '\r' && *q != '\n') {
		if (*q == ':')
			local = q + 1;
		q++;
	}
	*ret_taglen = (size_t)(q - p);
	return (size_t)(q - local) == nlen && memcmp(local, name, nlen) == 0;
}

/* Position just after the '>' closing the tag that starts at p, or end. */
static const char *tag_end(const char *p, const char *end, int *ret_selfclosing)
{
	char quote = 0;

	*ret_selfclosing = 0;
	for (; p < end; p++) {
		if (quote) {
			if (*p == quote)
				quote = 0;
		} else if (*p == '"' || *p == '\'') {
			quote = *p;
		} else if (*p == '>') {
			*ret_selfclosing = p[-1] == '/';
			return p + 1;
		}
	}
	return end;
}

/* Start of needle in p[0..end), or NULL. */
static const char *find(const char *p, const char *end, const char *needle)
{
	size_t nlen = strlen(needle);

	while (p && (size_t)(end - p) >= nlen) {
		p = memchr(p, needle[0], (size_t)(end - p) - nlen + 1);
		if (!p)
			return NULL;
		if (memcmp(p, needle, nlen) == 0)
			return p;
		p++;
	}
	return NULL;
}

/*
 * p points at '<'. For a comment, CDATA section or processing
 * instruction returns the position just past its end, or NULL when it is
 * unterminated; for anything else returns p. Markup inside those is not
 * markup, so the scanners below must jump over them as a whole.
 */
static const char *skip_special(const char *p, const char *end)
{
	static const struct {
		const char *open, *close;
	} kinds[] = { { "<!--", "-->" }, { "<![CDATA[", "]]>" }, { "<?", "?>" } };

	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		size_t olen = strlen(kinds[k].open);
		if ((size_t)(end - p) >= olen && memcmp(p, kinds[k].open, olen) == 0) {
			const char *c = find(p + olen, end, kinds[k].close);
			return c ? c + strlen(kinds[k].close) : NULL;
		}
	}
	return p;
}

int xml_next(const char *doc, size_t len, const char *name, size_t *pos,
	     struct xml_slice *ret_inner)
{
	const char *end = doc + len, *p = doc + *pos;
	size_t taglen;
	int selfclosing;

	while (p < end) {
		p = memchr(p, '<', (size_t)(end - p));
		if (!p || p + 1 >= end)
			return 0;
		const char *after_special = skip_special(p, end);
		if (!after_special)
			return 0;
		if (after_special != p) {
			p = after_special;
			continue;
		}
		if (p[1] == '/' || p[1] == '?' || p[1] == '!') {
			p++;
			continue;
		}
		if (!tag_name_is(p + 1, end, name, &taglen)) {
			p++;
			continue;
		}
		const char *inner = tag_end(p + 1 + taglen, end, &selfclosing);
		if (selfclosing) {
			ret_inner->p = inner;
			ret_inner->len = 0;
			*pos = (size_t)(inner - doc);
			return 1;
		}
		/* Find the matching close tag, counting same-name nesting. */
		int depth = 1;
		const char *q = inner;
		while (q < end) {
			q = memchr(q, '<', (size_t)(end - q));
			if (!q || q + 1 >= end)
				return 0;
			const char *after_q = skip_special(q, end);
			if (!after_q)
				return 0;
			if (after_q != q) {
				q = after_q;
				continue;
			}
			if (q[1] == '/') {
				if (tag_name_is(q + 2, end, name, &taglen) && --depth == 0) {
					const char *after = tag_end(q + 2 + taglen, end, &selfclosing);
					ret_inner->p = inner;
					ret_inner->len = (size_t)(q - inner);
					*pos = (size_t)(after - doc);
					return 1;
				}
			} else if (q[1] != '?' && q[1] != '!' &&
				   tag_name_is(q + 1, end, name, &taglen)) {
				tag_end(q + 1 + taglen, end, &selfclosing);
				if (!selfclosing)
					depth++;
			}
			q++;
		}
		return 0;
	}
	return 0;
}

static int append_utf8(struct buf *out, unsigned long cp)
{
	uint8_t u[4];
	size_t n;

	if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0)
		return -1;
	if (cp < 0x80) {
		u[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xC0 | (cp >> 6));
		u[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (uint8_t)(0xE0 | (cp >> 12));
		u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (uint8_t)(0xF0 | (cp >> 18));
		u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return buf_append(out, u, n) == KL_OK ? 0 : -1;
}

static enum kl_err unescape(const char *p, size_t len, char **ret_text)
{
	static const struct {
		const char *name;
		char ch;
	} ents[] = { { "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' },
		     { "quot;", '"' }, { "apos;", '\'' } };
	struct buf out;
	size_t i = 0;

	buf_init(&out, len + 1);
	if (buf_reserve(&out, len) != KL_OK)
		return KL_ENOMEM;
	while (i < len) {
		const char *amp = memchr(p + i, '&', len - i);
		const char *lt = memchr(p + i, '<', amp ? (size_t)(amp - (p + i)) : len - i);
		const char *stop = lt ? lt : amp;
		size_t run = stop ? (size_t)(stop - (p + i)) : len - i;
		buf_append(&out, p + i, run);
		i += run;
		if (!stop)
			break;
		if (lt) {
			/* Comments and PIs vanish, CDATA is literal text; any
			 * other markup (mixed content) is kept as it is. */
			const char *after = skip_special(lt, p + len);
			if (!after) {
				buf_done(&out);
				return KL_EPARSE;
			}
			if (after == lt) {
				buf_append_byte(&out, '<');
				i++;
			} else {
				static const char cdata_open[] = "<![CDATA[", cdata_close[] = "]]>";
				const size_t olen = sizeof(cdata_open) - 1, clen = sizeof(cdata_close) - 1;
				if ((size_t)(after - lt) >= olen + clen && memcmp(lt, cdata_open, olen) == 0)
					buf_append(&out, lt + olen, (size_t)(after - lt) - olen - clen);
				i = (size_t)(after - p);
			}
			continue;
		}
		const char *e = p + i + 1;
		size_t left = len - i - 1;
		int done = 0;
		for (size_t k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
			size_t el = strlen(ents[k].name);
			if (left >= el && memcmp(e, ents[k].name, el) == 0) {
				buf_append_byte(&out, (uint8_t)ents[k].ch);
				i += 1 + el;
				done = 1;
				break;
			}
		}
		if (done)
			continue;
		if (left >= 3 && e[0] == '#') {
			const char *semi = memchr(e, ';', left);
			char *num_end;
			unsigned long cp;
			if (semi) {
				if (e[1] == 'x' || e[1] == 'X')
					cp = strtoul(e + 2, &num_end, 16);
				else
					cp = strtoul(e + 1, &num_end, 10);
				if (num_end == semi && append_utf8(&out, cp) == 0) {
					i += (size_t)(semi - (p + i)) + 1;
					continue;
				}
			}
		}
		buf_done(&out);
		return KL_EPARSE;
	}
	*ret_text = buf_steal(&out);
	return *ret_text ? KL_OK : KL_ENOMEM;
}

enum kl_err xml_slice_text(struct xml_slice s, const char *name, char **ret_text)
{
	struct xml_slice inner;
	size_t pos = 0;

	if (!xml_next(s.p, s.len, name, &pos, &inner))
		return KL_ENOTFOUND;
	return unescape(inner.p, inner.len, ret_text);
}

enum kl_err xml_text(const char *doc, size_t len, const char *name, char **ret_text)
{
	struct xml_slice s = { doc, len };

	return xml_slice_text(s, name, ret_text);
}

enum kl_err xml_escape(struct buf *out, const char *s)
{
	enum kl_err err = KL_OK;

	for (; *s && !err; s++) {
		switch (*s) {
		case '&': err = buf_append_str(out, "&amp;"); break;
		case '<': err = buf_append_str(out, "&lt;"); break;
		case '>': err = buf_append_str(out, "&gt;"); break;
		case '"': err = buf_append_str(out, "&quot;"); break;
		case '\'': err = buf_append_str(out, "&apos;"); break;
		default: err = buf_append_byte(out, (uint8_t)*s); break;
		}
	}
	return err;
}
