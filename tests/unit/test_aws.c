/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_aws.c: the retry classifier (which AWS errors are retried, which
 * are final) and the bounds of full-jitter backoff.
 */
#include "config.h"

#include <string.h>

#include "aws.h"
#include "testutil.h"

static void test_classify_table(void)
{
	static const struct {
		long status;
		const char *code;
		enum kl_err want;
	} cases[] = {
		{ 200, NULL, KL_OK },
		{ 204, "", KL_OK },
		{ 400, "ProvisionedThroughputExceededException", KL_ETHROTTLED },
		{ 400, "ThrottlingException", KL_ETHROTTLED },
		{ 503, "SlowDown", KL_ETHROTTLED },
		{ 400, "RequestLimitExceeded", KL_ETHROTTLED },
		{ 400, "LimitExceededException", KL_ETHROTTLED },
		{ 429, NULL, KL_ETHROTTLED },
		{ 400, "ConditionalCheckFailedException", KL_ECONFLICT },
		{ 412, "PreconditionFailed", KL_ECONFLICT },
		{ 400, "ResourceNotFoundException", KL_ENOTFOUND },
		{ 404, "NoSuchKey", KL_ENOTFOUND },
		{ 404, "NoSuchUpload", KL_ENOTFOUND },
		{ 404, NULL, KL_ENOTFOUND },
		{ 403, "SignatureDoesNotMatch", KL_EAUTH },
		{ 400, "AccessDeniedException", KL_EAUTH },
		{ 403, "InvalidAccessKeyId", KL_EAUTH },
		{ 400, "UnrecognizedClientException", KL_EAUTH },
		{ 403, NULL, KL_EAUTH },
		{ 400, "ExpiredIteratorException", KL_EEXPIRED },
		{ 400, "ExpiredTokenException", KL_EEXPIRED },
		{ 500, "InternalFailure", KL_ESERVER },
		{ 500, "InternalError", KL_ESERVER },
		{ 503, "ServiceUnavailable", KL_ESERVER },
		{ 502, NULL, KL_ESERVER },
		{ 503, NULL, KL_ETHROTTLED },
		{ 400, "RequestTimeout", KL_ETIMEOUT },
		{ 400, "ValidationException", KL_EAWS },
		{ 400, "InvalidArgumentException", KL_EAWS },
		{ 400, "SerializationException", KL_EAWS },
		{ 413, NULL, KL_EAWS },
		{ 409, "BucketAlreadyOwnedByYou", KL_EEXISTS },
		{ 400, "ResourceInUseException", KL_ESTATE },
	};

	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		enum kl_err got = aws_classify(cases[i].status, cases[i].code);
		if (got != cases[i].want)
			fprintf(stderr, "classify(%ld, %s) = %s, want %s\n", cases[i].status,
				cases[i].code ? cases[i].code : "NULL", kl_strerror(got),
				kl_strerror(cases[i].want));
		CU_ASSERT_EQUAL(got, cases[i].want);
	}
}

static void test_retryable_vs_final(void)
{
	/* Throttles, 5xx and timeouts are retried; conflicts, validation,
	 * auth and not-found never are. */
	CU_ASSERT_TRUE(kl_err_retryable(aws_classify(400, "ProvisionedThroughputExceededException")));
	CU_ASSERT_TRUE(kl_err_retryable(aws_classify(503, "SlowDown")));
	CU_ASSERT_TRUE(kl_err_retryable(aws_classify(500, NULL)));
	CU_ASSERT_TRUE(kl_err_retryable(aws_classify(400, "RequestTimeout")));
	CU_ASSERT_FALSE(kl_err_retryable(aws_classify(400, "ConditionalCheckFailedException")));
	CU_ASSERT_FALSE(kl_err_retryable(aws_classify(400, "ValidationException")));
	CU_ASSERT_FALSE(kl_err_retryable(aws_classify(403, "AccessDenied")));
	CU_ASSERT_FALSE(kl_err_retryable(aws_classify(404, "NoSuchKey")));
	CU_ASSERT_TRUE(kl_err_retryable(KL_ECONNECT));
	CU_ASSERT_TRUE(kl_err_retryable(KL_ETIMEOUT));
}

static void test_policy_defaults(void)
{
	struct aws_retry_policy p = { 0 };

	aws_retry_policy_defaults(&p);
	CU_ASSERT_EQUAL(p.max_attempts, 8);
	CU_ASSERT_EQUAL(p.base_delay_ms, 50);
	CU_ASSERT_EQUAL(p.max_delay_ms, 5000);
	CU_ASSERT_EQUAL(p.throttle_base_delay_ms, 500);
	CU_ASSERT_EQUAL(p.budget_capacity, 500);
	CU_ASSERT_EQUAL(p.budget_retry_cost, 5);
	/* Set values are kept. */
	p.max_attempts = 3;
	aws_retry_policy_defaults(&p);
	CU_ASSERT_EQUAL(p.max_attempts, 3);
}

static void test_backoff_bounds(void)
{
	struct aws_retry_policy p = { 0 };
	struct kl_rng rng;

	aws_retry_policy_defaults(&p);
	kl_rng_seed_value(&rng, 1234);
	for (int attempt = 1; attempt <= 12; attempt++) {
		for (int throttled = 0; throttled <= 1; throttled++) {
			long base = throttled ? p.throttle_base_delay_ms : p.base_delay_ms;
			long ceiling = base;
			for (int i = 1; i < attempt; i++)
				ceiling = ceiling * 2 > p.max_delay_ms ? p.max_delay_ms : ceiling * 2;
			long lo = ceiling, hi = 0;
			double sum = 0;
			for (int i = 0; i < 4000; i++) {
				long d = aws_backoff_ms(&p, &rng, attempt, throttled);
				CU_ASSERT_FATAL(d >= 0 && d <= ceiling);
				lo = d < lo ? d : lo;
				hi = d > hi ? d : hi;
				sum += (double)d;
			}
			/* Full jitter: the whole range is used and the mean sits
			 * near the middle. */
			CU_ASSERT(lo <= ceiling / 20);
			CU_ASSERT(hi >= ceiling - ceiling / 20);
			double mean = sum / 4000;
			CU_ASSERT(mean > ceiling * 0.4 && mean < ceiling * 0.6);
		}
	}
	/* The cap holds for absurd attempt numbers (no overflow). */
	for (int i = 0; i < 100; i++)
		CU_ASSERT(aws_backoff_ms(&p, &rng, 1000, 1) <= p.max_delay_ms);
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_classify_table),
		KL_TEST(test_retryable_vs_final),
		KL_TEST(test_policy_defaults),
		KL_TEST(test_backoff_bounds),
		{ NULL, NULL },
	};
	return kl_test_run("aws", tests);
}
