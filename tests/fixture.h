/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fixture.h: the AWS side of an integration test's fixture: where the
 * emulators are (the KL_TEST_* variables tests/emu/emulators.sh exports; a
 * test without them exits 77), a credentials chain and clients for them,
 * the kinlake binary to run and a directory of the test's own. Uses CUnit
 * only in TF_CHECK_OK. Not thread-safe: set up from the main thread.
 */
#ifndef KL_TEST_FIXTURE_H
#define KL_TEST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "aws.h"
#include "creds.h"
#include "kl_err.h"

/* The emulators; the strings are the environment's (borrowed, never freed). */
struct tf_env {
	const char *kinesis, *dynamodb, *s3;  /* endpoints */
	const char *key_id, *secret;          /* their static credentials */
};

/* Fills *ret_env from KL_TEST_{KINESIS,DYNAMODB,S3}_ENDPOINT,
 * KL_TEST_ACCESS_KEY_ID and KL_TEST_SECRET_ACCESS_KEY; exits 77 (skip)
 * when one is not set. */
void tf_env_read(struct tf_env *ret_env);

/*
 * Initialises the HTTP library and makes a credentials chain with the
 * emulators' static keys (exits 77 without them), IMDS off. On KL_OK the
 * caller owns *ret_creds and ends with tf_aws_done(). Returns the first
 * error otherwise.
 */
enum kl_err tf_aws_init(struct creds_chain **ret_creds);

/* Frees creds (NULL: fine) and cleans up the HTTP library. */
void tf_aws_done(struct creds_chain *creds);

/* Fills *ret_cfg for service at endpoint (both borrowed: they must outlive
 * the clients made from it): us-east-1, 20 s timeout, 3 attempts. */
void tf_client_config(const char *service, const char *endpoint, struct aws_client_config *ret_cfg);

/* aws_client_init() of c with tf_client_config(service, endpoint) and the
 * borrowed creds; the caller ends c with aws_client_done(). */
enum kl_err tf_client_init(struct aws_client *c, const char *service, const char *endpoint,
			   struct creds_chain *creds);

/* Prints "what: <error and its detail>" to stderr when err is not KL_OK. */
void tf_report(const char *what, enum kl_err err, const struct kl_errinfo *info);

/* Asserts that call (which fills a `struct kl_errinfo info` in scope)
 * returned KL_OK, printing the error detail when it did not. */
#define TF_CHECK_OK(call)                              \
	do {                                           \
		struct kl_errinfo *info_ = &info;      \
		enum kl_err e_ = (call);               \
		tf_report(#call, e_, info_);           \
		CU_ASSERT_EQUAL_FATAL(e_, KL_OK);      \
	} while (0)

/* Writes to out the program that env_name names when it is set and not
 * empty, else dflt. Returns true when that is executable. */
bool tf_program(const char *env_name, const char *dflt, char *out, size_t size);

/* Makes the directory "$KL_TEST_EMU_DIR/<name>-<pid>" (0700; exits 77
 * without KL_TEST_EMU_DIR) and writes its path to out. Returns false when
 * it could not be made (it must not exist yet). */
bool tf_make_dir(const char *name, char *out, size_t size);

#endif
