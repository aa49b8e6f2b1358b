/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fixture.c: one copy of the emulator fixture the integration tests share
 * (tests/fixture.h): the endpoints and keys from the environment, the
 * credentials chain and clients every test makes the same way, the binary
 * under test and the test's own directory.
 */
#include "config.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "http.h"
#include "testutil.h"

void tf_env_read(struct tf_env *ret_env)
{
	ret_env->kinesis = kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	ret_env->dynamodb = kl_test_env_or_skip("KL_TEST_DYNAMODB_ENDPOINT");
	ret_env->s3 = kl_test_env_or_skip("KL_TEST_S3_ENDPOINT");
	ret_env->key_id = kl_test_env_or_skip("KL_TEST_ACCESS_KEY_ID");
	ret_env->secret = kl_test_env_or_skip("KL_TEST_SECRET_ACCESS_KEY");
}

enum kl_err tf_aws_init(struct creds_chain **ret_creds)
{
	struct creds_config cc = { 0 };
	enum kl_err err;

	cc.access_key_id = kl_test_env_or_skip("KL_TEST_ACCESS_KEY_ID");
	cc.secret_access_key = kl_test_env_or_skip("KL_TEST_SECRET_ACCESS_KEY");
	cc.disable_imds = 1;
	err = http_global_init();
	if (err != KL_OK)
		return err;
	return creds_chain_new(&cc, ret_creds);
}

void tf_aws_done(struct creds_chain *creds)
{
	creds_chain_free(creds);
	http_global_cleanup();
}

void tf_client_config(const char *service, const char *endpoint, struct aws_client_config *ret_cfg)
{
	memset(ret_cfg, 0, sizeof(*ret_cfg));
	ret_cfg->service = service;
	ret_cfg->region = "us-east-1";
	ret_cfg->endpoint = endpoint;
	ret_cfg->http.timeout_ms = 20000;
	ret_cfg->retry.max_attempts = 3;
}

enum kl_err tf_client_init(struct aws_client *c, const char *service, const char *endpoint,
			   struct creds_chain *creds)
{
	struct aws_client_config ac;

	tf_client_config(service, endpoint, &ac);
	return aws_client_init(c, &ac, creds);
}

void tf_report(const char *what, enum kl_err err, const struct kl_errinfo *info)
{
	char buf[768];

	if (err)
		fprintf(stderr, "\n  %s: %s\n", what, kl_errinfo_format(err, info, buf, sizeof(buf)));
}

bool tf_program(const char *env_name, const char *dflt, char *out, size_t size)
{
	const char *v = getenv(env_name);

	snprintf(out, size, "%s", v && *v ? v : dflt);
	return access(out, X_OK) == 0;
}

bool tf_make_dir(const char *name, char *out, size_t size)
{
	const char *emu = kl_test_env_or_skip("KL_TEST_EMU_DIR");

	snprintf(out, size, "%s/%s-%ld", emu, name, (long)getpid());
	return mkdir(out, 0700) == 0;
}
