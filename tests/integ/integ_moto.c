/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_moto.c: proves our SigV4 signatures are right by talking to
 * moto_server, the only local AWS implementation that recomputes them.
 * Correctly signed Kinesis, DynamoDB and S3 requests must be accepted;
 * a request signed with the wrong secret, or altered after signing, must
 * be rejected with SignatureDoesNotMatch.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aws.h"
#include "creds.h"
#include "http.h"
#include "sigv4.h"
#include "testutil.h"

static const char *endpoint;
static const char *key_id;
static const char *secret;
static char suffix[32];

static struct creds_chain *chain_with(const char *id, const char *sec)
{
	struct creds_config cc = { 0 };
	struct creds_chain *chain = NULL;

	cc.access_key_id = id;
	cc.secret_access_key = sec;
	cc.disable_imds = 1;
	CU_ASSERT_FATAL(creds_chain_new(&cc, &chain) == KL_OK);
	return chain;
}

static void client_for(struct aws_client *c, const char *service, struct creds_chain *chain)
{
	struct aws_client_config cfg = { 0 };

	cfg.service = service;
	cfg.region = "us-east-1";
	cfg.endpoint = endpoint;
	cfg.retry.max_attempts = 2;
	CU_ASSERT_FATAL(aws_client_init(c, &cfg, chain) == KL_OK);
}

static enum kl_err json_call(const char *service, const char *prefix, const char *version,
			     const char *op, const char *body, const char *id, const char *sec,
			     struct kl_errinfo *info)
{
	struct creds_chain *chain = chain_with(id, sec);
	struct aws_client c;
	json_object *in = json_tokener_parse(body), *out = NULL;
	enum kl_err err;

	CU_ASSERT_PTR_NOT_NULL_FATAL(in);
	client_for(&c, service, chain);
	err = aws_json_call(&c, prefix, version, op, in, &out, info);
	json_object_put(in);
	json_object_put(out);
	aws_client_done(&c);
	creds_chain_free(chain);
	return err;
}

static void test_kinesis_signed(void)
{
	struct kl_errinfo info;
	char body[256];

	snprintf(body, sizeof(body), "{\"StreamName\":\"sig-%s\",\"ShardCount\":1}", suffix);
	CU_ASSERT_EQUAL(json_call("kinesis", "Kinesis_20131202", "1.1", "CreateStream", body,
				  key_id, secret, &info), KL_OK);
	CU_ASSERT_EQUAL(json_call("kinesis", "Kinesis_20131202", "1.1", "ListStreams", "{}",
				  key_id, secret, &info), KL_OK);
	/* Same call, wrong secret: moto recomputes and refuses. */
	CU_ASSERT_EQUAL(json_call("kinesis", "Kinesis_20131202", "1.1", "ListStreams", "{}",
				  key_id, "not-the-secret", &info), KL_EAUTH);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "SignatureDoesNotMatch");
}

static void test_dynamodb_signed(void)
{
	struct kl_errinfo info;
	char body[512];

	snprintf(body, sizeof(body),
		 "{\"TableName\":\"sig-%s\",\"BillingMode\":\"PAY_PER_REQUEST\","
		 "\"AttributeDefinitions\":[{\"AttributeName\":\"leaseKey\",\"AttributeType\":\"S\"}],"
		 "\"KeySchema\":[{\"AttributeName\":\"leaseKey\",\"KeyType\":\"HASH\"}]}", suffix);
	CU_ASSERT_EQUAL(json_call("dynamodb", "DynamoDB_20120810", "1.0", "CreateTable", body,
				  key_id, secret, &info), KL_OK);
	snprintf(body, sizeof(body),
		 "{\"TableName\":\"sig-%s\",\"Item\":{\"leaseKey\":{\"S\":\"shardId-000000000000\"},"
		 "\"leaseCounter\":{\"N\":\"1\"}}}", suffix);
	CU_ASSERT_EQUAL(json_call("dynamodb", "DynamoDB_20120810", "1.0", "PutItem", body,
				  key_id, secret, &info), KL_OK);
	CU_ASSERT_EQUAL(json_call("dynamodb", "DynamoDB_20120810", "1.0", "ListTables", "{}",
				  key_id, "wrong", &info), KL_EAUTH);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "SignatureDoesNotMatch");
}

static enum kl_err s3_put(struct aws_client *c, const char *path, const char *body,
			  const char *payload_hash, struct kl_errinfo *info)
{
	struct aws_request req;
	struct http_response resp;
	struct http_header h[1] = { { "Content-Type", "text/plain" } };
	enum kl_err err;

	aws_request_init(&req);
	req.method = "PUT";
	req.path = path;
	req.s3 = 1;
	req.body = body;
	req.body_len = body ? strlen(body) : 0;
	req.headers = h;
	req.n_headers = body ? 1 : 0;
	req.payload_hash = payload_hash;
	http_response_init(&resp);
	err = aws_send(c, &req, &resp, info);
	if (err) {
		char msg[512];
		fprintf(stderr, "PUT %s: %s\n", path, kl_errinfo_format(err, info, msg, sizeof(msg)));
	}
	http_response_done(&resp);
	return err;
}

static void test_s3_signed(void)
{
	struct creds_chain *good = chain_with(key_id, secret);
	struct creds_chain *bad = chain_with(key_id, "wrong-secret");
	struct aws_client c, cb;
	struct kl_errinfo info;
	char bucket[64], object[128];

	client_for(&c, "s3", good);
	client_for(&cb, "s3", bad);
	snprintf(bucket, sizeof(bucket), "/sig-%s", suffix);
	/* moto 5.2 miscomputes the signature of keys holding '=' (boto3's own
	 * requests fail the same way), so Hive-style keys are covered by the
	 * SigV4 vectors and the botocore differential test instead; a space
	 * still exercises key encoding here. */
	snprintf(object, sizeof(object), "/sig-%s/dt-2026-11-21/part%%200.json", suffix);
	CU_ASSERT_EQUAL(s3_put(&c, bucket, NULL, NULL, &info), KL_OK);
	/* Signed payload (hex SHA-256) and UNSIGNED-PAYLOAD both verify. */
	CU_ASSERT_EQUAL(s3_put(&c, object, "{\"a\":1}\n", NULL, &info), KL_OK);
	CU_ASSERT_EQUAL(s3_put(&c, object, "{\"a\":2}\n", SIGV4_UNSIGNED_PAYLOAD, &info), KL_OK);
	CU_ASSERT_EQUAL(s3_put(&cb, object, "{\"a\":3}\n", NULL, &info), KL_EAUTH);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "SignatureDoesNotMatch");
	aws_client_done(&c);
	aws_client_done(&cb);
	creds_chain_free(good);
	creds_chain_free(bad);
}

/*
 * Sign a Kinesis request by hand, then change one byte of the body before
 * sending it: the signature covers the payload hash, so moto must refuse.
 * The untouched request must pass, or the test proves nothing.
 */
static long send_signed_kinesis(const char *signed_body, const char *sent_body)
{
	const char *host = strstr(endpoint, "://") + 3;
	char amz_date[17], hash[65], url[256];
	struct buf auth;
	struct http_client *hc = NULL;
	struct http_response resp;
	struct http_request hr;
	struct kl_errinfo info;
	time_t now = time(NULL);
	long status;

	sigv4_amz_date(now, amz_date);
	sigv4_sha256_hex(signed_body, strlen(signed_body), hash);
	struct http_header h[5] = {
		{ "Host", host },
		{ "X-Amz-Date", amz_date },
		{ "Content-Type", "application/x-amz-json-1.1" },
		{ "X-Amz-Target", "Kinesis_20131202.ListStreams" },
		{ "Authorization", NULL },
	};
	struct sigv4_request sr = { .method = "POST", .path = "/", .query = NULL, .headers = h,
				    .n_headers = 4, .payload_hash = hash, .region = "us-east-1",
				    .service = "kinesis", .when = now };
	struct sigv4_creds sc = { key_id, secret, NULL };

	buf_init(&auth, 0);
	CU_ASSERT_FATAL(sigv4_sign(&sr, &sc, NULL, &auth, NULL) == KL_OK);
	h[4].value = auth.data;
	snprintf(url, sizeof(url), "%s/", endpoint);
	CU_ASSERT_FATAL(http_client_new(NULL, &hc) == KL_OK);
	http_request_init(&hr);
	hr.method = "POST";
	hr.url = url;
	hr.headers = h;
	hr.n_headers = 5;
	hr.body = sent_body;
	hr.body_len = strlen(sent_body);
	http_response_init(&resp);
	CU_ASSERT_EQUAL(http_send(hc, &hr, &resp, &info), KL_OK);
	status = resp.status;
	if (status != 200)
		CU_ASSERT_PTR_NOT_NULL(strstr(resp.body.data ? resp.body.data : "", "SignatureDoesNotMatch"));
	http_response_done(&resp);
	http_client_free(hc);
	buf_done(&auth);
	return status;
}

static void test_tampered_body_rejected(void)
{
	CU_ASSERT_EQUAL(send_signed_kinesis("{\"Limit\":10}", "{\"Limit\":10}"), 200);
	CU_ASSERT_EQUAL(send_signed_kinesis("{\"Limit\":10}", "{\"Limit\":11}"), 403);
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_kinesis_signed),
		KL_TEST(test_dynamodb_signed),
		KL_TEST(test_s3_signed),
		KL_TEST(test_tampered_body_rejected),
		{ NULL, NULL },
	};
	int rc;

	endpoint = kl_test_env_or_skip("KL_TEST_MOTO_ENDPOINT");
	key_id = kl_test_env_or_skip("KL_TEST_MOTO_ACCESS_KEY_ID");
	secret = kl_test_env_or_skip("KL_TEST_MOTO_SECRET_ACCESS_KEY");
	snprintf(suffix, sizeof(suffix), "%ld-%d", (long)time(NULL), (int)getpid());
	http_global_init();
	rc = kl_test_run("moto", tests);
	http_global_cleanup();
	return rc;
}
