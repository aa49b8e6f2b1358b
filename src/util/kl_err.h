/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kl_err.h: the one project-wide error enum, its strerror, and the
 * error-info struct that carries details (HTTP status, AWS error code,
 * message, request id) out of a failed call.
 *
 * Invariant: values are appended, never renumbered; kl_strerror() is a
 * switch with no default so the compiler flags a missing case.
 */
#ifndef KL_ERR_H
#define KL_ERR_H

#include <stdbool.h>

enum kl_err {
	KL_OK = 0,
	KL_ENOMEM,        /* allocation failed or a hard buffer cap was hit */
	KL_EINVAL,        /* bad argument or malformed input */
	KL_ECONFIG,       /* bad configuration */
	KL_EIO,           /* local file or socket I/O failed (errno in info) */
	KL_EHTTP,         /* HTTP error status that has no better mapping */
	KL_ETIMEOUT,      /* connect or transfer timed out */
	KL_ECONNECT,      /* could not connect, or the connection was reset */
	KL_ETHROTTLED,    /* the service asked us to slow down */
	KL_EAWS,          /* a final (non-retryable) AWS error, see info */
	KL_ENOTFOUND,     /* resource, item, key or stream does not exist */
	KL_ECONFLICT,     /* conditional check failed / precondition failed */
	KL_EAUTH,         /* access denied, bad signature, unknown key */
	KL_ECREDS,        /* no credentials could be found or refreshed */
	KL_EPARSE,        /* a response or document could not be parsed */
	KL_ELEASE_LOST,   /* this worker no longer holds the lease */
	KL_ESERVER,       /* 5xx or InternalError from the service (retryable) */
	KL_EBUDGET,       /* the retry budget is exhausted, call not retried */
	KL_EEXPIRED,      /* an iterator, token or credential has expired */
	KL_EEXISTS,       /* resource already exists */
	KL_ESTATE,        /* object is in the wrong state for this call */
	KL_ENOSPC,        /* local disk is full */
	KL_EPLUGIN,       /* a plugin could not be loaded or misbehaved */
};

/*
 * Details of the last failure. Filled by the function that failed; every
 * field is optional (0 / empty string when unknown). Fixed-size so that it
 * can live on the caller's stack and needs no freeing.
 */
struct kl_errinfo {
	long http_status;
	int sys_errno;
	char aws_code[96];     /* e.g. "ConditionalCheckFailedException" */
	char message[384];     /* human-readable detail, never a secret */
	char request_id[96];
};

/* Returns a static, constant description of err. Thread-safe. */
const char *kl_strerror(enum kl_err err);

/* True when err is worth retrying (throttling, timeouts, 5xx, resets). */
bool kl_err_retryable(enum kl_err err);

/* Clears info (NULL allowed). */
void kl_errinfo_clear(struct kl_errinfo *info);

/*
 * printf-style: writes the message field of info (NULL allowed) and returns
 * err, so a failure can be reported in one line:
 *     return kl_errinfo_set(info, KL_EINVAL, "bad shard id '%s'", id);
 */
enum kl_err kl_errinfo_set(struct kl_errinfo *info, enum kl_err err,
			   const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Formats "<strerror>: <aws_code>: <message> (HTTP <status>, request <id>)"
 * into buf, leaving out empty parts. Returns buf.
 */
const char *kl_errinfo_format(enum kl_err err, const struct kl_errinfo *info,
			      char *buf, unsigned long bufsize);

#endif
