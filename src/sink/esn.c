/* SPDX-License-Identifier: Apache-2.0 */
/*
 * esn.c: canonical extended sequence numbers and their key form. No
 * bignum: canonical decimal strings compare by length, then bytes.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "esn.h"

enum kl_err esn_set(const char *seq, uint64_t sub, struct esn *ret,
		    struct kl_errinfo *info)
{
	size_t len;

	if (!seq || !*seq)
		return kl_errinfo_set(info, KL_EINVAL, "esn: empty sequence number");
	for (const char *p = seq; *p; p++)
		if (*p < '0' || *p > '9')
			return kl_errinfo_set(info, KL_EINVAL,
					      "esn: sequence number '%.40s' is not decimal", seq);
	while (seq[0] == '0' && seq[1])
		seq++;
	len = strlen(seq);
	if (len > ESN_SEQ_MAX)
		return kl_errinfo_set(info, KL_EINVAL,
				      "esn: sequence number has %zu digits, at most %d allowed",
				      len, ESN_SEQ_MAX);
	memcpy(ret->seq, seq, len + 1);
	ret->sub = sub;
	return KL_OK;
}

bool esn_valid(const struct esn *e)
{
	size_t len = strnlen(e->seq, sizeof(e->seq));

	if (len == 0 || len > ESN_SEQ_MAX)
		return false;
	if (e->seq[0] == '0' && len > 1)
		return false;
	for (size_t i = 0; i < len; i++)
		if (e->seq[i] < '0' || e->seq[i] > '9')
			return false;
	return true;
}

int esn_cmp(const struct esn *a, const struct esn *b)
{
	size_t la = strlen(a->seq), lb = strlen(b->seq);
	int c;

	if (la != lb)
		return la < lb ? -1 : 1;
	c = memcmp(a->seq, b->seq, la);
	if (c)
		return c < 0 ? -1 : 1;
	if (a->sub != b->sub)
		return a->sub < b->sub ? -1 : 1;
	return 0;
}

size_t esn_key(const struct esn *e, char *out)
{
	size_t len = strlen(e->seq), pos = 0;
	int n;

	for (; len + pos < ESN_SEQ_WIDTH; pos++)
		out[pos] = '0';
	memcpy(out + pos, e->seq, len);
	pos += len;
	n = snprintf(out + pos, ESN_KEY_MAX - pos, "-%0*" PRIu64, ESN_SUB_WIDTH, e->sub);
	return pos + (size_t)n;
}
