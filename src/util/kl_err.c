/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kl_err.c: error strings and the retry decision shared by every module.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kl_err.h"

const char *kl_strerror(enum kl_err err)
{
	switch (err) {
	case KL_OK: return "success";
	case KL_ENOMEM: return "out of memory or buffer limit reached";
	case KL_EINVAL: return "invalid argument or input";
	case KL_ECONFIG: return "configuration error";
	case KL_EIO: return "I/O error";
	case KL_EHTTP: return "HTTP error";
	case KL_ETIMEOUT: return "timed out";
	case KL_ECONNECT: return "connection failed";
	case KL_ETHROTTLED: return "throttled by the service";
	case KL_EAWS: return "AWS error";
	case KL_ENOTFOUND: return "not found";
	case KL_ECONFLICT: return "conditional check failed";
	case KL_EAUTH: return "authentication or authorization failed";
	case KL_ECREDS: return "no usable AWS credentials";
	case KL_EPARSE: return "could not parse response";
	case KL_ELEASE_LOST: return "lease lost";
	case KL_ESERVER: return "service error";
	case KL_EBUDGET: return "retry budget exhausted";
	case KL_EEXPIRED: return "expired";
	case KL_EEXISTS: return "already exists";
	case KL_ESTATE: return "wrong state";
	case KL_ENOSPC: return "no space left on device";
	case KL_EPLUGIN: return "plugin error";
	}
	return "unknown error";
}

bool kl_err_retryable(enum kl_err err)
{
	switch (err) {
	case KL_ETIMEOUT:
	case KL_ECONNECT:
	case KL_ETHROTTLED:
	case KL_ESERVER:
		return true;
	case KL_OK:
	case KL_ENOMEM:
	case KL_EINVAL:
	case KL_ECONFIG:
	case KL_EIO:
	case KL_EHTTP:
	case KL_EAWS:
	case KL_ENOTFOUND:
	case KL_ECONFLICT:
	case KL_EAUTH:
	case KL_ECREDS:
	case KL_EPARSE:
	case KL_ELEASE_LOST:
	case KL_EBUDGET:
	case KL_EEXPIRED:
	case KL_EEXISTS:
	case KL_ESTATE:
	case KL_ENOSPC:
	case KL_EPLUGIN:
		return false;
	}
	return false;
}

void kl_errinfo_clear(struct kl_errinfo *info)
{
	if (info)
		memset(info, 0, sizeof(*info));
}

enum kl_err kl_errinfo_set(struct kl_errinfo *info, enum kl_err err,
			   const char *fmt, ...)
{
	va_list ap;

	if (!info)
		return err;
	va_start(ap, fmt);
	vsnprintf(info->message, sizeof(info->message), fmt, ap);
	va_end(ap);
	return err;
}

const char *kl_errinfo_format(enum kl_err err, const struct kl_errinfo *info,
			      char *buf, unsigned long bufsize)
{
	int n;

	n = snprintf(buf, bufsize, "%s", kl_strerror(err));
	if (!info || n < 0 || (unsigned long)n >= bufsize)
		return buf;
	if (info->aws_code[0])
		n += snprintf(buf + n, bufsize - n, ": %s", info->aws_code);
	if ((unsigned long)n < bufsize && info->message[0])
		n += snprintf(buf + n, bufsize - n, ": %s", info->message);
	if ((unsigned long)n < bufsize && info->http_status)
		n += snprintf(buf + n, bufsize - n, " (HTTP %ld%s%s)",
			      info->http_status,
			      info->request_id[0] ? ", request " : "",
			      info->request_id);
	return buf;
}
