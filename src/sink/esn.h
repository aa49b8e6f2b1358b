/* SPDX-License-Identifier: Apache-2.0 */
/*
 * esn.h: the extended sequence number (ESN) of one Kinesis record as the
 * sink sees it: a decimal sequence number plus the KPL sub-sequence number,
 * and the fixed-width text form that goes into object keys.
 *
 * Invariants: seq is canonical (decimal digits, no leading zeros, "0" for
 * zero), so two ESNs compare by length, then bytes, then sub; the key form
 * of an ESN depends on nothing but the ESN. Plain data, no ownership;
 * every function is thread-safe. (lease/'s struct lease_esn holds the same
 * canonical digits, so converting is a strcpy plus the sub-sequence.)
 */
#ifndef KL_ESN_H
#define KL_ESN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kl_err.h"

/* Kinesis sequence numbers match "0|[1-9][0-9]{0,128}": at most 129 digits. */
#define ESN_SEQ_MAX 129

/*
 * Key form: the sequence number left-padded with zeros to ESN_SEQ_WIDTH
 * digits (today's Kinesis sequence numbers are exactly 56 digits), '-',
 * the sub-sequence number padded to ESN_SUB_WIDTH digits. Equal widths make
 * keys of one shard sort in ESN order in an S3 listing. A longer number is
 * written in full (still unique and deterministic, only not width-aligned).
 */
#define ESN_SEQ_WIDTH 56
#define ESN_SUB_WIDTH 10
/* Bytes needed for the key form of any ESN, NUL included. */
#define ESN_KEY_MAX (ESN_SEQ_MAX + 1 + 20 + 1)

struct esn {
	uint64_t sub;                /* KPL sub-sequence number; 0 when not aggregated */
	char seq[ESN_SEQ_MAX + 1];   /* canonical decimal digits */
};

/*
 * Fills *ret from a decimal sequence number (leading zeros are dropped)
 * and a sub-sequence number. Returns KL_OK, or KL_EINVAL (info says why)
 * when seq is empty, not decimal or longer than ESN_SEQ_MAX digits.
 */
enum kl_err esn_set(const char *seq, uint64_t sub, struct esn *ret,
		    struct kl_errinfo *info);

/* True when e holds a canonical, non-empty sequence number. */
bool esn_valid(const struct esn *e);

/* <0, 0, >0 like strcmp: by sequence number value, then sub-sequence. */
int esn_cmp(const struct esn *a, const struct esn *b);

/*
 * Writes the key form of e ("<seq padded>-<sub padded>") into out, which
 * must hold ESN_KEY_MAX bytes. Returns the length written (without NUL).
 */
size_t esn_key(const struct esn *e, char *out);

#endif
