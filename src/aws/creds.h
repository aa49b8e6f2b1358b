/* SPDX-License-Identifier: Apache-2.0 */
/*
 * creds.h: the AWS credential provider chain, in the standard order:
 *   1. explicit keys from the config file,
 *   2. environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN),
 *   3. shared files: AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) and
 *      AWS_CONFIG_FILE (~/.aws/config, "[profile x]" sections), profile from
 *      the config, else AWS_PROFILE, else "default",
 *   4. web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *      (+ AWS_ROLE_SESSION_NAME) through STS AssumeRoleWithWebIdentity,
 *   5. container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (against the ECS
 *      host) or AWS_CONTAINER_CREDENTIALS_FULL_URI, with
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE) as Authorization header,
 *   6. EC2 instance metadata, IMDSv2 (PUT token with TTL, refresh on 401);
 *      IMDSv1 only if allow_imdsv1.
 * The first provider that yields credentials is used until its credentials
 * come within refresh_window_s of expiry, then the chain is walked again.
 * A provider that is not configured (its variables unset, no such file) is
 * skipped; one that is configured but broken (half a key pair, a malformed
 * shared file, an explicitly chosen profile that is missing, an STS or
 * container error) stops the walk, so a mistake never silently falls
 * through to other credentials. If a refresh fails while the current set
 * is still valid, that set keeps being handed out (retrying every few
 * seconds) until it expires.
 *
 * Thread-safe: one chain is shared by every thread; creds_chain_get()
 * lets one thread at a time walk the chain (without holding the lock, so
 * others keep getting the current set while it is valid, or wait for the
 * walk's outcome) and hands out copies. Secrets are never logged and are
 * wiped before they are freed.
 */
#ifndef KL_CREDS_H
#define KL_CREDS_H

#include <stdint.h>

#include "kl_err.h"

/* A copy of a credential set. Owned by whoever holds it; creds_done() wipes. */
struct aws_creds {
	char *access_key_id;
	char *secret_access_key;
	char *session_token;          /* NULL when none */
	int64_t expires_at_ms;        /* wall clock ms; 0 = does not expire */
	char provider[32];            /* "config", "env", "profile", "web-identity",
					 "container", "imds": for logs and status */
};

struct creds_config {
	/* explicit keys (all borrowed; NULL = not set) */
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token;
	const char *profile;          /* NULL = AWS_PROFILE or "default"; a profile
					 named here or in AWS_PROFILE must exist */
	/* endpoints, overridable so tests point them at loopback */
	const char *sts_endpoint;     /* NULL = https://sts.<region>.amazonaws.com */
	const char *imds_endpoint;    /* NULL = AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254 */
	const char *ecs_endpoint;     /* NULL = http://169.254.170.2 (relative URI base) */
	const char *region;           /* for STS; NULL = "us-east-1" */
	int allow_imdsv1;             /* fall back to IMDSv1 when the token PUT fails */
	int disable_imds;             /* skip IMDS entirely (also AWS_EC2_METADATA_DISABLED=true) */
	long imds_token_ttl_s;        /* 0 = 21600 (also the maximum); renewed a
					 quarter of the TTL (at most 60 s) early */
	long refresh_window_s;        /* refresh this long before expiry; 0 = 300 */
	long timeout_ms;              /* per metadata/STS request; 0 = 2000 */
	const char *ca_file;          /* for https STS/container endpoints */
};

struct creds_chain;

/*
 * Creates a chain from cfg (copied; the strings in cfg may be freed after
 * the call). No network traffic happens here. KL_ECONFIG for half an
 * explicit key pair, a session token without keys or out-of-range
 * numbers; KL_ENOMEM. Caller frees with creds_chain_free() (NULL-safe;
 * no other thread may be using the chain then).
 */
enum kl_err creds_chain_new(const struct creds_config *cfg, struct creds_chain **ret_chain);
void creds_chain_free(struct creds_chain *chain);

/*
 * Returns valid credentials in *ret_creds (a copy the caller must release
 * with creds_done()), refreshing them first if they are missing or within
 * the refresh window. KL_ECREDS when no provider yields credentials, with
 * what each provider tried said in info->message ("config: no keys; env:
 * ...; imds: ..."), and the HTTP status / AWS error code of the last
 * endpoint that refused, if any, in info (NULL allowed). KL_ENOMEM.
 * *ret_creds is written only on success. May block for the endpoints'
 * timeouts. Thread-safe.
 */
enum kl_err creds_chain_get(struct creds_chain *chain, struct aws_creds *ret_creds,
			    struct kl_errinfo *info);

/* Forces the next creds_chain_get() to refresh (e.g. after ExpiredToken);
 * the invalidated set is not handed out again. Thread-safe. */
void creds_chain_invalidate(struct creds_chain *chain);

/* Wipes and frees the strings in c; c itself is not freed. NULL-safe. */
void creds_done(struct aws_creds *c);

#endif
