/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_creds.c: the credential provider chain against files in a private
 * HOME, a loopback HTTP server playing STS, the ECS agent and IMDS, and
 * (when installed) a real moto_server for STS. Every test starts from a
 * clean AWS_* environment with IMDS disabled and every endpoint on
 * 127.0.0.1, so nothing here can reach a real metadata service.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "loophttp.h"
#include "testutil.h"
#include "util.h"

/* Nothing listens on the discard port: a provider that wrongly goes to the
 * network fails fast instead of leaving the machine. */
#define CLOSED_URL "http://127.0.0.1:9"

static char tmpdir[64];

static const char *const aws_env[] = {
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
	"AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
	"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
	"AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_DISABLED", "AWS_REGION",
};

static void env_reset(void)
{
	char aws_dir[128];

	for (size_t i = 0; i < KL_ARRAY_LEN(aws_env); i++)
		unsetenv(aws_env[i]);
	setenv("HOME", tmpdir, 1);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	snprintf(aws_dir, sizeof(aws_dir), "%s/.aws", tmpdir);
	mkdir(aws_dir, 0700);
}

/* Writes tmpdir/name and returns its path in out. */
static const char *put_file(char *out, size_t n, const char *name, const char *content)
{
	FILE *f;

	snprintf(out, n, "%s/%s", tmpdir, name);
	f = fopen(out, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(content, f);
	fclose(f);
	return out;
}

static void rm_file(const char *name)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	unlink(p);
}

static struct creds_config base_cfg(void)
{
	struct creds_config cfg = { 0 };

	cfg.disable_imds = 1;
	cfg.imds_endpoint = CLOSED_URL;
	cfg.ecs_endpoint = CLOSED_URL;
	cfg.sts_endpoint = CLOSED_URL;
	cfg.timeout_ms = 3000;
	return cfg;
}

/* One chain, one get. */
static enum kl_err get_once(const struct creds_config *cfg, struct aws_creds *out,
			    struct kl_errinfo *info)
{
	struct creds_chain *chain = NULL;
	enum kl_err err = creds_chain_new(cfg, &chain);

	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	kl_errinfo_clear(info);
	err = creds_chain_get(chain, out, info);
	creds_chain_free(chain);
	return err;
}

static int streq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* "YYYY-MM-DDThh:mm:ss.mmmZ" for now + ms. */
static void iso_in(int64_t ms_from_now, char *out, size_t n)
{
	int64_t t = kl_wall_ms() + ms_from_now;
	time_t secs = (time_t)(t / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03dZ", base, (int)(t % 1000));
}

static int64_t wall_of_iso(const char *base_no_zone)
{
	struct tm tm = { 0 };

	CU_ASSERT_PTR_NOT_NULL(strptime(base_no_zone, "%Y-%m-%dT%H:%M:%S", &tm));
	return (int64_t)timegm(&tm) * 1000;
}

/* ------------------------------------------------------- fake endpoints */

/* The ECS/EKS agent. */
struct cont_srv {
	int status;                   /* 0 = 200 */
	const char *body;             /* fixed body; NULL = generated */
	int64_t expires_in_ms;        /* generated Expiration; 0 = leave it out */
	long delay_ms;
	int n;                        /* requests answered */
};

static void cont_handler(void *arg, const struct loophttp_request *req,
			 struct loophttp_response *resp)
{
	struct cont_srv *s = arg;
	char body[512], exp[64] = "";

	s->n++;
	resp->delay_ms = s->delay_ms;
	resp->status = s->status ? s->status : 200;
	if (s->body) {
		loophttp_set_body(resp, "application/json", s->body);
		return;
	}
	if (s->expires_in_ms) {
		char iso[40];

		iso_in(s->expires_in_ms, iso, sizeof(iso));
		snprintf(exp, sizeof(exp), ",\"Expiration\":\"%s\"", iso);
	}
	snprintf(body, sizeof(body),
		 "{\"RoleArn\":\"arn:aws:iam::123456789012:role/t\",\"AccessKeyId\":\"ASIACONT%d\","
		 "\"SecretAccessKey\":\"contsecret%d\",\"Token\":\"conttoken%d\"%s}",
		 s->n, s->n, s->n, exp);
	loophttp_set_body(resp, "application/json", body);
}

/* STS, query protocol. */
struct sts_srv {
	int status;                   /* 0 = 200 */
	const char *error_code;
	int64_t expires_in_ms;
	int n;
};

static void sts_handler(void *arg, const struct loophttp_request *req,
			struct loophttp_response *resp)
{
	struct sts_srv *s = arg;
	char body[2048], iso[40];

	s->n++;
	resp->status = s->status ? s->status : 200;
	if (resp->status != 200) {
		snprintf(body, sizeof(body),
			 "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
			 "<Error><Type>Sender</Type><Code>%s</Code>"
			 "<Message>Token is &lt;expired&gt;</Message></Error>"
			 "<RequestId>r-1</RequestId></ErrorResponse>", s->error_code);
		loophttp_set_body(resp, "text/xml", body);
		return;
	}
	iso_in(s->expires_in_ms ? s->expires_in_ms : 3600 * 1000, iso, sizeof(iso));
	snprintf(body, sizeof(body),
		 "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
		 "  <AssumeRoleWithWebIdentityResult>\n"
		 "    <SubjectFromWebIdentityToken>system:sa</SubjectFromWebIdentityToken>\n"
		 "    <Credentials>\n"
		 "      <SessionToken>ststoken%d</SessionToken>\n"
		 "      <SecretAccessKey>stssecret%d/a+b&amp;c</SecretAccessKey>\n"
		 "      <Expiration>%s</Expiration>\n"
		 "      <AccessKeyId>ASIASTS%d</AccessKeyId>\n"
		 "    </Credentials>\n"
		 "  </AssumeRoleWithWebIdentityResult>\n"
		 "  <ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata>\n"
		 "</AssumeRoleWithWebIdentityResponse>\n", s->n, s->n, iso, s->n);
	loophttp_set_body(resp, "text/xml", body);
}

/* EC2 instance metadata. */
struct imds_srv {
	int put_status;               /* 0 = 200 (issue tokens) */
	long put_delay_ms;            /* answer token requests this late */
	int require_token;            /* tokenless GETs get 401 */
	int role_status;              /* 0 = 200 */
	char token[32];               /* the one token currently accepted */
	int tokens_issued;
	int creds_served;
	char last_ttl[16];
};

#define IMDS_CREDS_PATH "/latest/meta-data/iam/security-credentials/"

static void imds_handler(void *arg, const struct loophttp_request *req,
			 struct loophttp_response *resp)
{
	struct imds_srv *s = arg;
	const char *tok = loophttp_header(req, "X-aws-ec2-metadata-token");
	char body[512], iso[40];

	if (strcmp(req->method, "PUT") == 0 && strcmp(req->target, "/latest/api/token") == 0) {
		const char *ttl = loophttp_header(req, "X-aws-ec2-metadata-token-ttl-seconds");

		resp->delay_ms = s->put_delay_ms;
		if (s->put_status && s->put_status != 200) {
			resp->status = s->put_status;
			return;
		}
		if (!ttl) {
			resp->status = 400;
			return;
		}
		snprintf(s->last_ttl, sizeof(s->last_ttl), "%s", ttl);
		snprintf(s->token, sizeof(s->token), "imds-token-%d", ++s->tokens_issued);
		loophttp_add_header(resp, "X-aws-ec2-metadata-token-ttl-seconds", "%s", ttl);
		loophttp_set_body(resp, "text/plain", s->token);
		return;
	}
	if (strcmp(req->method, "GET") != 0) {
		resp->status = 405;
		return;
	}
	if ((tok && strcmp(tok, s->token) != 0) || (!tok && s->require_token)) {
		resp->status = 401;
		return;
	}
	if (strcmp(req->target, IMDS_CREDS_PATH) == 0) {
		resp->status = s->role_status ? s->role_status : 200;
		loophttp_set_body(resp, "text/plain", resp->status == 200 ? "kl-role\n" : "");
		return;
	}
	if (strcmp(req->target, IMDS_CREDS_PATH "kl-role") == 0) {
		s->creds_served++;
		iso_in(6 * 3600 * 1000, iso, sizeof(iso));
		snprintf(body, sizeof(body),
			 "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2024-01-01T00:00:00Z\",\n"
			 "  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIAIMDS%d\",\n"
			 "  \"SecretAccessKey\" : \"imdssecret%d\",\n  \"Token\" : \"imdstoken%d\",\n"
			 "  \"Expiration\" : \"%s\"\n}", s->creds_served, s->creds_served,
			 s->creds_served, iso);
		loophttp_set_body(resp, "text/plain", body);
		return;
	}
	resp->status = 404;
}

static struct loophttp *start_srv(loophttp_handler fn, void *arg)
{
	struct loophttp *srv = NULL;

	CU_ASSERT_EQUAL_FATAL(loophttp_start(fn, arg, &srv), 0);
	return srv;
}

/* ------------------------------------------------------------ providers */

static void test_config_explicit(void)
{
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;

	env_reset();
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
	cfg.access_key_id = "AKIACFG";
	cfg.secret_access_key = "cfgsecret";
	cfg.session_token = "cfgtoken";
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "config");
	CU_ASSERT(streq(c.access_key_id, "AKIACFG"));
	CU_ASSERT(streq(c.secret_access_key, "cfgsecret"));
	CU_ASSERT(streq(c.session_token, "cfgtoken"));
	CU_ASSERT_EQUAL(c.expires_at_ms, 0);
	creds_done(&c);
	CU_ASSERT_PTR_NULL(c.access_key_id);
	CU_ASSERT_PTR_NULL(c.secret_access_key);
	creds_done(NULL);
	creds_chain_free(NULL);
}

static void test_config_invalid(void)
{
	struct creds_config cfg = base_cfg();
	struct creds_chain *chain = (struct creds_chain *)&cfg;   /* must stay untouched */

	cfg.access_key_id = "AKIAONLY";
	CU_ASSERT_EQUAL(creds_chain_new(&cfg, &chain), KL_ECONFIG);
	CU_ASSERT_PTR_EQUAL(chain, (struct creds_chain *)&cfg);
	cfg.access_key_id = NULL;
	cfg.session_token = "lonelytoken";
	CU_ASSERT_EQUAL(creds_chain_new(&cfg, &chain), KL_ECONFIG);
	cfg = base_cfg();
	cfg.imds_token_ttl_s = 21601;
	CU_ASSERT_EQUAL(creds_chain_new(&cfg, &chain), KL_ECONFIG);
	cfg.imds_token_ttl_s = -1;
	CU_ASSERT_EQUAL(creds_chain_new(&cfg, &chain), KL_ECONFIG);
	CU_ASSERT_EQUAL(creds_chain_new(NULL, &chain), KL_ECONFIG);
	CU_ASSERT_PTR_EQUAL(chain, (struct creds_chain *)&cfg);
}

static void test_env(void)
{
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	char path[256];

	env_reset();
	/* a profile that would also work: env comes first */
	put_file(path, sizeof(path), ".aws/credentials",
		 "[default]\naws_access_key_id = AKIAPROF\naws_secret_access_key = profsecret\n");
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "env");
	CU_ASSERT(streq(c.access_key_id, "AKIAENV"));
	CU_ASSERT(streq(c.secret_access_key, "envsecret"));
	CU_ASSERT_PTR_NULL(c.session_token);
	creds_done(&c);

	setenv("AWS_SESSION_TOKEN", "envtoken", 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.session_token, "envtoken"));
	creds_done(&c);

	/* empty values count as unset */
	setenv("AWS_ACCESS_KEY_ID", "", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "", 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "profile");
	creds_done(&c);
	rm_file(".aws/credentials");
}

static void test_env_partial_is_fatal(void)
{
	struct creds_config cfg = base_cfg();
	struct aws_creds c = { 0 };
	struct kl_errinfo info;
	char path[256];

	env_reset();
	put_file(path, sizeof(path), ".aws/credentials",
		 "[default]\naws_access_key_id = AKIAPROF\naws_secret_access_key = profsecret\n");
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NULL(c.access_key_id);   /* ret_creds untouched on failure */
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message,
				      "env: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"));
	CU_ASSERT_PTR_NULL(strstr(info.message, "profile"));   /* the walk stopped */
	rm_file(".aws/credentials");
}

static void test_profile_default_and_selection(void)
{
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	char path[256];

	env_reset();
	put_file(path, sizeof(path), ".aws/credentials",
		 "[default]\naws_access_key_id = AKIADEF\naws_secret_access_key = defsecret\n"
		 "\n[dev]\naws_access_key_id=AKIADEV\naws_secret_access_key=devsecret\n"
		 "aws_session_token=devtoken\n"
		 "[ops]\naws_access_key_id = AKIAOPS\naws_secret_access_key = opssecret\n");
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "profile");
	CU_ASSERT(streq(c.access_key_id, "AKIADEF"));
	CU_ASSERT_PTR_NULL(c.session_token);
	creds_done(&c);

	setenv("AWS_PROFILE", "dev", 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIADEV"));
	CU_ASSERT(streq(c.secret_access_key, "devsecret"));
	CU_ASSERT(streq(c.session_token, "devtoken"));
	creds_done(&c);

	/* the config's profile beats AWS_PROFILE */
	cfg.profile = "ops";
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIAOPS"));
	creds_done(&c);

	/* AWS_SHARED_CREDENTIALS_FILE replaces ~/.aws/credentials */
	cfg.profile = NULL;
	unsetenv("AWS_PROFILE");
	setenv("AWS_SHARED_CREDENTIALS_FILE",
	       put_file(path, sizeof(path), "other-creds",
			"[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = s\n"), 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIAOTHER"));
	creds_done(&c);
	rm_file("other-creds");
	rm_file(".aws/credentials");
}

static void test_profile_config_file(void)
{
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	char path[256];

	env_reset();
	setenv("AWS_CONFIG_FILE",
	       put_file(path, sizeof(path), "cfgfile",
			"[default]\nregion = eu-west-1\naws_access_key_id = AKIACFGDEF\n"
			"aws_secret_access_key = cfgdefsecret\n"
			"[dev]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n"
			"[profile   dev]\naws_access_key_id = AKIACFGDEV\n"
			"aws_secret_access_key = cfgdevsecret\naws_session_token = cfgdevtoken\n"), 1);
	/* [default] in the config file */
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIACFGDEF"));
	creds_done(&c);
	/* [profile dev], never the bare [dev], in the config file */
	cfg.profile = "dev";
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIACFGDEV"));
	CU_ASSERT(streq(c.session_token, "cfgdevtoken"));
	creds_done(&c);

	/* in the credentials file "[profile dev]" is not profile dev, and
	 * the credentials file wins over the config file key by key */
	put_file(path, sizeof(path), ".aws/credentials",
		 "[profile dev]\naws_access_key_id = AKIANOPE\naws_secret_access_key = nope\n"
		 "[dev]\naws_access_key_id = AKIACREDDEV\naws_secret_access_key = creddevsecret\n");
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIACREDDEV"));
	CU_ASSERT(streq(c.secret_access_key, "creddevsecret"));
	CU_ASSERT(streq(c.session_token, "cfgdevtoken"));   /* only in config */
	creds_done(&c);
	rm_file(".aws/credentials");
	rm_file("cfgfile");
}

static void test_profile_syntax(void)
{
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	char path[256];

	env_reset();
	put_file(path, sizeof(path), ".aws/credentials",
		 "# comment\r\n; another\r\n\r\n"
		 "[ default ]  # trailing comment\r\n"
		 "AWS_ACCESS_KEY_ID\t=\tAKIAFIRST\r\n"
		 "s3 =\r\n    max_concurrent_requests = 10\r\n\taddressing_style = path\r\n"
		 "aws_secret_access_key = se=cr/et+1   \r\n"
		 "aws_access_key_id = AKIASECOND\r\n"
		 "[other]\r\naws_access_key_id = AKIAOTHER\r\n");
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIASECOND"));   /* the later value wins */
	CU_ASSERT(streq(c.secret_access_key, "se=cr/et+1"));
	creds_done(&c);
	rm_file(".aws/credentials");
}

static void test_profile_malformed(void)
{
	static const struct {
		const char *text;
		const char *expect;
	} cases[] = {
		{ "[default\naws_access_key_id = A\n", "credentials:1: section header without ']'" },
		{ "[default]\naws_access_key_id = A\njust words\n", "credentials:3: expected 'key = value'" },
		{ "aws_access_key_id = A\n[default]\n", "credentials:1: setting before the first section" },
		{ "[default] junk\n", "credentials:1: text after section header" },
		{ "\n[  ]\n", "credentials:2: empty section name" },
		{ "[default]\n= value\n", "credentials:2: expected 'key = value'" },
	};
	struct cont_srv cs = { 0 };
	struct loophttp *srv;
	char path[256], uri[128];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	/* A working container endpoint after the profile: a malformed file must
	 * stop the walk instead of silently using other credentials. */
	snprintf(uri, sizeof(uri), "%s/creds", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		struct creds_config cfg = base_cfg();
		struct aws_creds c = { 0 };
		struct kl_errinfo info;

		put_file(path, sizeof(path), ".aws/credentials", cases[i].text);
		CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
		if (!strstr(info.message, cases[i].expect))
			fprintf(stderr, "\ncase %zu: got '%s'\n", i, info.message);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, cases[i].expect));
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, tmpdir));
	}
	/* a file with a NUL byte */
	{
		struct creds_config cfg = base_cfg();
		struct aws_creds c;
		struct kl_errinfo info;
		int fd;

		snprintf(path, sizeof(path), "%s/.aws/credentials", tmpdir);
		fd = open(path, O_WRONLY | O_TRUNC);
		CU_ASSERT_FATAL(fd >= 0);
		CU_ASSERT_EQUAL(write(fd, "[default]\n\0x=1\n", 15), 15);
		close(fd);
		CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "is not a text file"));
	}
	/* a directory where the file should be */
	{
		struct creds_config cfg = base_cfg();
		struct aws_creds c;
		struct kl_errinfo info;

		rm_file(".aws/credentials");
		CU_ASSERT_EQUAL(mkdir(path, 0700), 0);
		CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "cannot read"));
		rmdir(path);
	}
	CU_ASSERT_EQUAL(loophttp_count(srv), 0);
	CU_ASSERT_EQUAL(cs.n, 0);
	loophttp_stop(srv);
}

static void test_profile_missing_or_partial(void)
{
	struct cont_srv cs = { 0 };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	char path[256], uri[128];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(uri, sizeof(uri), "%s/creds", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	put_file(path, sizeof(path), ".aws/config",
		 "[default]\nregion = us-west-2\n[profile roleonly]\nrole_arn = arn:x\n"
		 "source_profile = default\n");
	put_file(path, sizeof(path), ".aws/credentials",
		 "[half]\naws_access_key_id = AKIAHALF\n");

	/* no keys in the default profile: not an error, the walk goes on */
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "container");
	creds_done(&c);
	CU_ASSERT_EQUAL(loophttp_count(srv), 1);

	/* an explicitly chosen profile that is missing, keyless or half
	 * configured stops the walk */
	setenv("AWS_PROFILE", "nosuch", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "profile 'nosuch': not found in"));
	setenv("AWS_PROFILE", "roleonly", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "are not supported"));
	setenv("AWS_PROFILE", "half", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message,
				      "profile 'half': aws_access_key_id without aws_secret_access_key"));
	CU_ASSERT_EQUAL(loophttp_count(srv), 1);
	loophttp_stop(srv);
	rm_file(".aws/config");
	rm_file(".aws/credentials");
}

static void test_nothing_found_message(void)
{
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	char text[600];

	env_reset();
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "config: no keys; env: AWS_ACCESS_KEY_ID not set; "
					       "profile 'default': not found in "));
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "; web-identity: AWS_WEB_IDENTITY_TOKEN_FILE not set; "
					       "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI "
					       "not set; imds: disabled"));
	kl_errinfo_format(KL_ECREDS, &info, text, sizeof(text));
	CU_ASSERT_EQUAL(strncmp(text, "no usable AWS credentials: config: no keys", 42), 0);

	/* cfg->disable_imds alone disables it too */
	unsetenv("AWS_EC2_METADATA_DISABLED");
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "imds: disabled"));
}

/* --------------------------------------------------------- web identity */

static void test_web_identity_loopback(void)
{
	struct sts_srv ss = { 0 };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	const struct loophttp_request *r;
	char path[256];
	char *v;
	size_t count = 0;
	int64_t before = kl_wall_ms();

	env_reset();
	srv = start_srv(sts_handler, &ss);
	cfg.sts_endpoint = loophttp_url(srv);
	setenv("AWS_WEB_IDENTITY_TOKEN_FILE",
	       put_file(path, sizeof(path), "token.jwt", "eyJ.web+token/=x&y\n"), 1);
	setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kinlake-reader", 1);
	setenv("AWS_ROLE_SESSION_NAME", "sess one", 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "web-identity");
	CU_ASSERT(streq(c.access_key_id, "ASIASTS1"));
	CU_ASSERT(streq(c.secret_access_key, "stssecret1/a+b&c"));
	CU_ASSERT(streq(c.session_token, "ststoken1"));
	CU_ASSERT(c.expires_at_ms >= before + 3600 * 1000 - 5 &&
		  c.expires_at_ms <= kl_wall_ms() + 3600 * 1000 + 5);
	creds_done(&c);

	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 1);
	r = loophttp_request(srv, 0);
	CU_ASSERT_STRING_EQUAL(r->method, "POST");
	CU_ASSERT_STRING_EQUAL(r->target, "/");
	CU_ASSERT(streq(loophttp_header(r, "Content-Type"),
			"application/x-www-form-urlencoded; charset=utf-8"));
	CU_ASSERT_PTR_NULL(loophttp_header(r, "Authorization"));   /* unsigned */
	CU_ASSERT_PTR_NULL(loophttp_header(r, "X-Amz-Security-Token"));
	CU_ASSERT_STRING_EQUAL(r->body,
			       "Action=AssumeRoleWithWebIdentity"
			       "&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fkinlake-reader"
			       "&RoleSessionName=sess%20one&Version=2011-06-15"
			       "&WebIdentityToken=eyJ.web%2Btoken%2F%3Dx%26y");
	v = loophttp_form_value(r->body, "WebIdentityToken", &count);
	CU_ASSERT(streq(v, "eyJ.web+token/=x&y"));   /* newline trimmed */
	CU_ASSERT_EQUAL(count, 5);
	free(v);

	/* without AWS_ROLE_SESSION_NAME a name is made up */
	unsetenv("AWS_ROLE_SESSION_NAME");
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	creds_done(&c);
	r = loophttp_request(srv, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	v = loophttp_form_value(r->body, "RoleSessionName", NULL);
	CU_ASSERT(v && strncmp(v, "kinlake-", 8) == 0 && strlen(v) > 8);
	free(v);
	loophttp_stop(srv);
	rm_file("token.jwt");
}

static void test_web_identity_errors(void)
{
	struct sts_srv ss = { .status = 400, .error_code = "InvalidIdentityToken" };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	char path[256];

	env_reset();
	srv = start_srv(sts_handler, &ss);
	cfg.sts_endpoint = loophttp_url(srv);
	setenv("AWS_WEB_IDENTITY_TOKEN_FILE", put_file(path, sizeof(path), "token.jwt", "tok"), 1);
	setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_EQUAL(info.http_status, 400);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InvalidIdentityToken");
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message,
				      "web-identity: STS AssumeRoleWithWebIdentity: HTTP 400 "
				      "InvalidIdentityToken: Token is <expired>"));

	/* a 200 that is not a credentials document */
	ss.status = 0;
	ss.expires_in_ms = -60 * 1000;   /* already expired */
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "web-identity: credentials already expired"));

	/* the role ARN is required once the token file is set */
	unsetenv("AWS_ROLE_ARN");
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "AWS_ROLE_ARN is not"));

	/* unreadable and empty token files */
	setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r", 1);
	rm_file("token.jwt");
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "token.jwt: no such file"));
	put_file(path, sizeof(path), "token.jwt", "\n");
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "token.jwt is empty"));
	CU_ASSERT_EQUAL(ss.n, 2);

	/* STS unreachable */
	put_file(path, sizeof(path), "token.jwt", "tok");
	cfg.sts_endpoint = CLOSED_URL;
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "web-identity: STS: connection failed"));
	loophttp_stop(srv);
	rm_file("token.jwt");
}

/* Finds prog on PATH; returns 1 and its path in out. */
static int find_on_path(const char *prog, char *out, size_t n)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL;
	int found = 0;

	if (!path)
		return 0;
	copy = strdup(path);
	for (char *dir = strtok_r(copy, ":", &save); dir && !found;
	     dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, n, "%s/%s", *dir ? dir : ".", prog);
		found = access(out, X_OK) == 0;
	}
	free(copy);
	return found;
}

static unsigned short free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unsigned short port = 0;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int port_open(unsigned short port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Stops the moto process group we started: TERM, then KILL after 5 s. */
static void moto_stop(pid_t pid)
{
	int status;

	kill(-pid, SIGTERM);
	for (int i = 0; i < 50; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			goto reap_group;
		kl_sleep_ms(100);
	}
	kill(-pid, SIGKILL);
	waitpid(pid, &status, 0);
reap_group:
	kill(-pid, SIGKILL);   /* any straggler of the group; ESRCH when none */
}

static void test_web_identity_moto(void)
{
	char prog[512], port_arg[8], logpath[256], url[64], path[256];
	struct creds_config cfg = base_cfg();
	struct creds_chain *chain = NULL;
	struct aws_creds c = { 0 };
	struct kl_errinfo info = { 0 };
	unsigned short port;
	pid_t pid;
	int ready = 0, status;
	int64_t before;

	if (!find_on_path("moto_server", prog, sizeof(prog))) {
		fprintf(stderr, "\n  note: moto_server not on PATH, moto case skipped ");
		return;
	}
	env_reset();
	port = free_port();
	CU_ASSERT_FATAL(port != 0);
	snprintf(port_arg, sizeof(port_arg), "%u", (unsigned)port);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)port);
	cfg.sts_endpoint = url;
	setenv("AWS_WEB_IDENTITY_TOKEN_FILE",
	       put_file(path, sizeof(path), "token.jwt", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n"), 1);
	setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kinlake", 1);
	setenv("AWS_ROLE_SESSION_NAME", "kinlake-test", 1);
	/* From the fork to moto_stop() only non-fatal asserts: the server
	 * must be stopped whatever happens (PR_SET_PDEATHSIG is the backstop
	 * should this process die). */
	snprintf(logpath, sizeof(logpath), "%s/moto.log", tmpdir);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the test */
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(prog, "moto_server", "-H", "127.0.0.1", "-p", port_arg, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);
	for (int i = 0; i < 300 && !ready; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			FILE *f = fopen(logpath, "r");
			char line[256];

			fprintf(stderr, "\n  moto_server exited early (status %d):\n", status);
			while (f && fgets(line, sizeof(line), f))
				fprintf(stderr, "    %s", line);
			if (f)
				fclose(f);
			CU_FAIL("moto_server did not start");
			rm_file("token.jwt");
			return;
		}
		ready = port_open(port);
		if (!ready)
			kl_sleep_ms(100);
	}
	CU_ASSERT(ready);
	if (ready && creds_chain_new(&cfg, &chain) == KL_OK) {
		before = kl_wall_ms();
		CU_ASSERT_EQUAL(creds_chain_get(chain, &c, &info), KL_OK);
		if (c.access_key_id) {
			CU_ASSERT_STRING_EQUAL(c.provider, "web-identity");
			CU_ASSERT_EQUAL(strncmp(c.access_key_id, "ASIA", 4), 0);
			CU_ASSERT(c.secret_access_key && strlen(c.secret_access_key) >= 20);
			CU_ASSERT(c.session_token && strlen(c.session_token) >= 20);
			/* moto's default duration is one hour */
			CU_ASSERT(c.expires_at_ms > before + 3500 * 1000 &&
				  c.expires_at_ms < kl_wall_ms() + 3700 * 1000);
			creds_done(&c);
		} else {
			fprintf(stderr, "\n  moto: %s ", info.message);
		}
		creds_chain_free(chain);
	}
	moto_stop(pid);
	rm_file("token.jwt");
	CU_ASSERT(!port_open(port));
}

/* ------------------------------------------------------------ container */

static void test_container_relative(void)
{
	struct cont_srv cs = { .expires_in_ms = 2 * 3600 * 1000 };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	const struct loophttp_request *r;
	char base[80];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(base, sizeof(base), "%s/", loophttp_url(srv));   /* trailing slash is fine */
	cfg.ecs_endpoint = base;
	setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/0f1e-2d3c", 1);
	/* RELATIVE_URI wins over FULL_URI */
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", CLOSED_URL "/never", 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Basic c2VjcmV0", 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "container");
	CU_ASSERT(streq(c.access_key_id, "ASIACONT1"));
	CU_ASSERT(streq(c.secret_access_key, "contsecret1"));
	CU_ASSERT(streq(c.session_token, "conttoken1"));
	CU_ASSERT(c.expires_at_ms > kl_wall_ms() + 3600 * 1000);
	creds_done(&c);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 1);
	r = loophttp_request(srv, 0);
	CU_ASSERT_STRING_EQUAL(r->method, "GET");
	CU_ASSERT_STRING_EQUAL(r->target, "/v2/credentials/0f1e-2d3c");
	CU_ASSERT(streq(loophttp_header(r, "Authorization"), "Basic c2VjcmV0"));

	/* without a token there is no Authorization header */
	unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	creds_done(&c);
	r = loophttp_request(srv, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_PTR_NULL(loophttp_header(r, "Authorization"));
	loophttp_stop(srv);
}

static void test_container_full_uri(void)
{
	struct cont_srv cs = { 0 };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info;
	const struct loophttp_request *r;
	char uri[128], path[256];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(uri, sizeof(uri), "%s/pod/creds?x=1", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	/* the token file wins over the variable (it is what rotates) */
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "from-env", 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
	       put_file(path, sizeof(path), "eks-token", "eks-pod-token-123\n"), 1);
	CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIACONT1"));
	CU_ASSERT_EQUAL(c.expires_at_ms, 0);   /* no Expiration in the answer */
	creds_done(&c);
	r = loophttp_request(srv, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->target, "/pod/creds?x=1");
	CU_ASSERT(streq(loophttp_header(r, "Authorization"), "eks-pod-token-123"));

	/* a token with a line break is refused before anything is sent */
	put_file(path, sizeof(path), "eks-token", "abc\r\nX-Evil: 1\n");
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "control characters"));
	CU_ASSERT_EQUAL(loophttp_count(srv), 1);
	rm_file("eks-token");
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "eks-token: no such file"));
	unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");

	/* plain http only to loopback or the agents' addresses */
	static const char *const refused[] = {
		"http://example.com/creds", "http://169.254.169.254/latest",
		"http://127.0.0.1.example.com/x", "http://user@example.com/", "ftp://127.0.0.1/x",
		"http://[fd00:ec2::24]/x", "http://10.0.0.1:80/",
	};
	for (size_t i = 0; i < KL_ARRAY_LEN(refused); i++) {
		setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", refused[i], 1);
		CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "FULL_URI must be https or http to a "
						       "loopback or ECS/EKS agent address"));
	}
	/* allowed forms reach the network (here: the closed port or our server) */
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.2:9/x", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "container: credentials endpoint: "));
	snprintf(uri, sizeof(uri), "http://localhost:%u/y", (unsigned)loophttp_port(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_OK);
	creds_done(&c);
	loophttp_stop(srv);
}

static void test_container_bad_answers(void)
{
	static const struct {
		int status;
		const char *body;
		const char *expect;
	} cases[] = {
		{ 500, "{}", "container: credentials endpoint answered HTTP 500" },
		{ 200, "not json", "container: response is not a JSON object" },
		{ 200, "[1,2]", "container: response is not a JSON object" },
		{ 200, "", "container: response is not a JSON object" },
		{ 200, "{\"AccessKeyId\":\"A\"}", "lacks AccessKeyId or SecretAccessKey" },
		{ 200, "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":7}", "lacks AccessKeyId" },
		{ 200, "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Expiration\":\"tomorrow\"}",
		  "bad Expiration 'tomorrow'" },
		{ 200, "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\","
		       "\"Expiration\":\"2030-02-30T00:00:00Z\"}", "bad Expiration" },
		{ 200, "{\"Code\":\"Failure\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\"}",
		  "endpoint answered Code 'Failure'" },
	};
	struct cont_srv cs = { 0 };
	struct loophttp *srv;
	char uri[128];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(uri, sizeof(uri), "%s/c", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		struct creds_config cfg = base_cfg();
		struct aws_creds c;
		struct kl_errinfo info;

		cs.status = cases[i].status;
		cs.body = cases[i].body;
		CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
		if (!strstr(info.message, cases[i].expect))
			fprintf(stderr, "\ncase %zu: got '%s'\n", i, info.message);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, cases[i].expect));
	}
	CU_ASSERT_EQUAL(cs.n, (int)KL_ARRAY_LEN(cases));
	loophttp_stop(srv);
}

static void test_expiration_formats(void)
{
	static const struct {
		const char *iso;
		const char *base;    /* the same instant in UTC, for timegm() */
		int64_t plus_ms;
	} cases[] = {
		{ "2030-01-02T03:04:05Z", "2030-01-02T03:04:05", 0 },
		{ "2030-01-02T03:04:05.250Z", "2030-01-02T03:04:05", 250 },
		{ "2030-01-02T03:04:05.123456Z", "2030-01-02T03:04:05", 123 },
		{ "2030-01-02T04:04:05+01:00", "2030-01-02T03:04:05", 0 },
		{ "2030-01-01T23:34:05-0330", "2030-01-02T03:04:05", 0 },
		{ "2032-02-29T12:00:00Z", "2032-02-29T12:00:00", 0 },
		{ "2100-03-01T00:00:00Z", "2100-03-01T00:00:00", 0 },
	};
	struct cont_srv cs = { 0 };
	struct loophttp *srv;
	char uri[128], body[256];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(uri, sizeof(uri), "%s/c", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	for (size_t i = 0; i < KL_ARRAY_LEN(cases); i++) {
		struct creds_config cfg = base_cfg();
		struct aws_creds c;
		struct kl_errinfo info;

		snprintf(body, sizeof(body), "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\","
			 "\"Token\":\"T\",\"Expiration\":\"%s\"}", cases[i].iso);
		cs.body = body;
		CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
		CU_ASSERT_EQUAL(c.expires_at_ms, wall_of_iso(cases[i].base) + cases[i].plus_ms);
		creds_done(&c);
	}
	loophttp_stop(srv);
}

/* ------------------------------------------------------------------ IMDS */

static struct creds_config imds_cfg(struct loophttp *srv)
{
	struct creds_config cfg = base_cfg();

	cfg.disable_imds = 0;
	cfg.imds_endpoint = loophttp_url(srv);
	return cfg;
}

static void check_imds_get(const struct loophttp_request *r, const char *target,
			   const char *token)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->method, "GET");
	CU_ASSERT_STRING_EQUAL(r->target, target);
	if (token) {
		CU_ASSERT(streq(loophttp_header(r, "X-aws-ec2-metadata-token"), token));
	} else {
		CU_ASSERT_PTR_NULL(loophttp_header(r, "X-aws-ec2-metadata-token"));
	}
}

static void check_imds_put(const struct loophttp_request *r, const char *ttl)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_STRING_EQUAL(r->method, "PUT");
	CU_ASSERT_STRING_EQUAL(r->target, "/latest/api/token");
	CU_ASSERT(streq(loophttp_header(r, "X-aws-ec2-metadata-token-ttl-seconds"), ttl));
	CU_ASSERT_EQUAL(r->body_len, 0);
}

static void test_imds_v2(void)
{
	struct imds_srv is = { .require_token = 1 };
	struct loophttp *srv;
	struct creds_config cfg;
	struct creds_chain *chain;
	struct aws_creds c;
	struct kl_errinfo info;

	env_reset();
	unsetenv("AWS_EC2_METADATA_DISABLED");
	srv = start_srv(imds_handler, &is);
	cfg = imds_cfg(srv);
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);
	CU_ASSERT_EQUAL(loophttp_count(srv), 0);   /* nothing before the first get */
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(c.provider, "imds");
	CU_ASSERT(streq(c.access_key_id, "ASIAIMDS1"));
	CU_ASSERT(streq(c.secret_access_key, "imdssecret1"));
	CU_ASSERT(streq(c.session_token, "imdstoken1"));
	CU_ASSERT(c.expires_at_ms > kl_wall_ms() + 5 * 3600 * 1000);
	creds_done(&c);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 3);
	check_imds_put(loophttp_request(srv, 0), "21600");
	check_imds_get(loophttp_request(srv, 1), IMDS_CREDS_PATH, "imds-token-1");
	check_imds_get(loophttp_request(srv, 2), IMDS_CREDS_PATH "kl-role", "imds-token-1");

	/* valid for hours: a second get is served from the cache */
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIAIMDS1"));
	creds_done(&c);
	CU_ASSERT_EQUAL(loophttp_count(srv), 3);

	/* forced refresh: the token is reused, no second PUT */
	creds_chain_invalidate(chain);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIAIMDS2"));
	creds_done(&c);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 5);
	check_imds_get(loophttp_request(srv, 3), IMDS_CREDS_PATH, "imds-token-1");
	check_imds_get(loophttp_request(srv, 4), IMDS_CREDS_PATH "kl-role", "imds-token-1");
	CU_ASSERT_EQUAL(is.tokens_issued, 1);

	/* the server forgets the token: 401, then a new token, then success */
	snprintf(is.token, sizeof(is.token), "rotated-server-side");
	creds_chain_invalidate(chain);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIAIMDS3"));
	creds_done(&c);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 9);
	check_imds_get(loophttp_request(srv, 5), IMDS_CREDS_PATH, "imds-token-1");  /* 401 */
	check_imds_put(loophttp_request(srv, 6), "21600");
	check_imds_get(loophttp_request(srv, 7), IMDS_CREDS_PATH, "imds-token-2");
	check_imds_get(loophttp_request(srv, 8), IMDS_CREDS_PATH "kl-role", "imds-token-2");
	creds_chain_free(chain);
	loophttp_stop(srv);
}

static void test_imds_token_ttl(void)
{
	struct imds_srv is = { .require_token = 1 };
	struct loophttp *srv;
	struct creds_config cfg;
	struct creds_chain *chain;
	struct aws_creds c;
	struct kl_errinfo info;

	env_reset();
	srv = start_srv(imds_handler, &is);
	cfg = imds_cfg(srv);
	cfg.imds_token_ttl_s = 1;
	/* AWS_EC2_METADATA_DISABLED=true must win over the config */
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);
	CU_ASSERT_EQUAL(creds_chain_get(chain, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "imds: disabled"));
	CU_ASSERT_EQUAL(loophttp_count(srv), 0);
	unsetenv("AWS_EC2_METADATA_DISABLED");

	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	creds_done(&c);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 3);
	check_imds_put(loophttp_request(srv, 0), "1");
	/* within the token's life it is reused */
	creds_chain_invalidate(chain);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	creds_done(&c);
	CU_ASSERT_EQUAL(is.tokens_issued, 1);
	/* a 1 s token is renewed after 750 ms, before the server would refuse it */
	kl_sleep_ms(800);
	creds_chain_invalidate(chain);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	creds_done(&c);
	CU_ASSERT_EQUAL(is.tokens_issued, 2);
	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 8);
	check_imds_put(loophttp_request(srv, 5), "1");
	check_imds_get(loophttp_request(srv, 6), IMDS_CREDS_PATH, "imds-token-2");
	creds_chain_free(chain);
	loophttp_stop(srv);
}

static void test_imds_v1_fallback(void)
{
	static const int refusals[] = { 403, 404, 405 };
	struct loophttp *srv;
	struct aws_creds c;
	struct kl_errinfo info;

	env_reset();
	unsetenv("AWS_EC2_METADATA_DISABLED");
	for (size_t i = 0; i < KL_ARRAY_LEN(refusals); i++) {
		struct imds_srv is = { .put_status = refusals[i] };
		struct creds_config cfg;

		srv = start_srv(imds_handler, &is);
		cfg = imds_cfg(srv);
		/* not allowed: the token refusal is the end */
		CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
		CU_ASSERT_EQUAL(loophttp_count(srv), 1);
		CU_ASSERT_STRING_EQUAL(loophttp_request(srv, 0)->method, "PUT");
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "and IMDSv1 fallback is disabled"));
		CU_ASSERT_EQUAL(info.http_status, refusals[i]);

		/* allowed: plain GETs without a token */
		cfg.allow_imdsv1 = 1;
		loophttp_clear(srv);
		CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
		CU_ASSERT(streq(c.access_key_id, "ASIAIMDS1"));
		creds_done(&c);
		CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 3);
		check_imds_put(loophttp_request(srv, 0), "21600");
		check_imds_get(loophttp_request(srv, 1), IMDS_CREDS_PATH, NULL);
		check_imds_get(loophttp_request(srv, 2), IMDS_CREDS_PATH "kl-role", NULL);
		loophttp_stop(srv);
	}

	/* A token PUT that never comes back in time (what a container behind
	 * a hop limit of 1 sees): v1 only if allowed. */
	{
		struct imds_srv is = { .put_delay_ms = 3000 };
		struct creds_config cfg;

		srv = start_srv(imds_handler, &is);
		cfg = imds_cfg(srv);
		cfg.timeout_ms = 300;
		CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "imds: token request: timed out"));
		CU_ASSERT_EQUAL(loophttp_count(srv), 1);

		cfg.allow_imdsv1 = 1;
		loophttp_clear(srv);
		CU_ASSERT_EQUAL_FATAL(get_once(&cfg, &c, &info), KL_OK);
		CU_ASSERT(streq(c.access_key_id, "ASIAIMDS1"));
		creds_done(&c);
		CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 3);
		check_imds_put(loophttp_request(srv, 0), "21600");
		check_imds_get(loophttp_request(srv, 1), IMDS_CREDS_PATH, NULL);
		check_imds_get(loophttp_request(srv, 2), IMDS_CREDS_PATH "kl-role", NULL);
		loophttp_stop(srv);
	}
}

static void test_imds_errors(void)
{
	struct imds_srv is = { .role_status = 404 };
	struct loophttp *srv;
	struct creds_config cfg;
	struct aws_creds c;
	struct kl_errinfo info;

	env_reset();
	unsetenv("AWS_EC2_METADATA_DISABLED");
	srv = start_srv(imds_handler, &is);
	cfg = imds_cfg(srv);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "imds: role name: HTTP 404 (no IAM role"));
	CU_ASSERT_EQUAL(info.http_status, 404);

	/* v1 against a v2-only instance */
	is.role_status = 0;
	is.put_status = 403;
	is.require_token = 1;
	cfg.allow_imdsv1 = 1;
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "HTTP 401 without a token"));

	/* AWS_EC2_METADATA_SERVICE_ENDPOINT is used when the config has none */
	is.put_status = 0;
	cfg.imds_endpoint = NULL;
	cfg.allow_imdsv1 = 0;
	setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", loophttp_url(srv), 1);
	loophttp_clear(srv);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_OK);
	creds_done(&c);
	CU_ASSERT_EQUAL(loophttp_count(srv), 3);

	/* nothing listening */
	cfg.imds_endpoint = CLOSED_URL;
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "imds: token request: connection failed"));
	loophttp_stop(srv);
}

/* ---------------------------------------------------- refresh and cache */

static void test_refresh_window(void)
{
	struct cont_srv cs = { .expires_in_ms = 3600 * 1000 };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct creds_chain *chain;
	struct aws_creds c;
	struct kl_errinfo info;
	char uri[128];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(uri, sizeof(uri), "%s/c", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);

	/* one hour of validity, default 300 s window: cached */
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
		CU_ASSERT(streq(c.access_key_id, "ASIACONT1"));
		creds_done(&c);
	}
	CU_ASSERT_EQUAL(cs.n, 1);
	creds_chain_free(chain);

	/* 100 s left is inside the 300 s window: every get refreshes */
	cs.n = 0;
	cs.expires_in_ms = 100 * 1000;
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);
	for (int i = 1; i <= 3; i++) {
		char want[32];

		snprintf(want, sizeof(want), "ASIACONT%d", i);
		CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
		CU_ASSERT(streq(c.access_key_id, want));
		creds_done(&c);
	}
	CU_ASSERT_EQUAL(cs.n, 3);
	creds_chain_free(chain);

	/* 2.5 s validity, 1.5 s window: cached for ~1 s, then refreshed */
	cs.n = 0;
	cs.expires_in_ms = 2500;
	cfg.refresh_window_s = 1;
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	creds_done(&c);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIACONT1"));
	creds_done(&c);
	CU_ASSERT_EQUAL(cs.n, 1);
	kl_sleep_ms(1600);   /* 0.9 s left: inside the 1 s window */
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIACONT2"));
	creds_done(&c);
	CU_ASSERT_EQUAL(cs.n, 2);
	creds_chain_free(chain);
	loophttp_stop(srv);
}

static void test_refresh_failure_keeps_valid(void)
{
	struct cont_srv cs = { .expires_in_ms = 1500 };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct creds_chain *chain;
	struct aws_creds c;
	struct kl_errinfo info;
	char uri[128];

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(uri, sizeof(uri), "%s/c", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);   /* 300 s window */
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	creds_done(&c);
	CU_ASSERT_EQUAL(cs.n, 1);

	/* the agent breaks: the still-valid set is handed out */
	cs.status = 503;
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIACONT1"));
	creds_done(&c);
	CU_ASSERT_EQUAL(cs.n, 2);
	/* and the next get does not hammer the broken endpoint */
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	creds_done(&c);
	CU_ASSERT_EQUAL(cs.n, 2);

	/* once expired, the failure is reported */
	kl_sleep_ms(1600);
	CU_ASSERT_EQUAL(creds_chain_get(chain, &c, &info), KL_ECREDS);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "answered HTTP 503"));
	CU_ASSERT_EQUAL(cs.n, 3);

	/* and the agent's recovery is picked up */
	cs.status = 0;
	cs.expires_in_ms = 3600 * 1000;
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "ASIACONT4"));
	creds_done(&c);
	creds_chain_free(chain);
	loophttp_stop(srv);
}

static void test_invalidate(void)
{
	struct creds_config cfg = base_cfg();
	struct creds_chain *chain;
	struct aws_creds c;
	struct kl_errinfo info;

	env_reset();
	setenv("AWS_ACCESS_KEY_ID", "AKIAONE", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "s1", 1);
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	creds_done(&c);
	setenv("AWS_ACCESS_KEY_ID", "AKIATWO", 1);
	/* static credentials are cached... */
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIAONE"));
	creds_done(&c);
	/* ...until someone says they were rejected */
	creds_chain_invalidate(chain);
	CU_ASSERT_EQUAL_FATAL(creds_chain_get(chain, &c, &info), KL_OK);
	CU_ASSERT(streq(c.access_key_id, "AKIATWO"));
	creds_done(&c);
	/* an invalidated set is not served when the refresh fails */
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	creds_chain_invalidate(chain);
	CU_ASSERT_EQUAL(creds_chain_get(chain, &c, &info), KL_ECREDS);
	creds_chain_free(chain);
}

/* ------------------------------------------------------------- threads */

#define N_THREADS 8
#define GETS_PER_THREAD 200

struct worker {
	struct creds_chain *chain;
	pthread_barrier_t *barrier;
	int ok;
	int failed;
	int mismatched;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(w->barrier);
	for (int i = 0; i < GETS_PER_THREAD; i++) {
		struct aws_creds c;
		struct kl_errinfo info;

		if (creds_chain_get(w->chain, &c, &info) != KL_OK) {
			w->failed++;
			continue;
		}
		w->ok++;
		if (!streq(c.access_key_id, "ASIACONT1") || !streq(c.secret_access_key, "contsecret1"))
			w->mismatched++;
		creds_done(&c);
	}
	return NULL;
}

static void run_workers(struct creds_chain *chain, struct worker *w)
{
	pthread_t tid[N_THREADS];
	pthread_barrier_t barrier;

	pthread_barrier_init(&barrier, NULL, N_THREADS);
	for (int i = 0; i < N_THREADS; i++) {
		w[i] = (struct worker){ .chain = chain, .barrier = &barrier };
		CU_ASSERT_EQUAL_FATAL(pthread_create(&tid[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(tid[i], NULL);
	pthread_barrier_destroy(&barrier);
}

struct one_get {
	struct creds_chain *chain;
	pthread_barrier_t *barrier;
	enum kl_err err;
};

static void *one_get_main(void *arg)
{
	struct one_get *g = arg;
	struct aws_creds c;
	struct kl_errinfo info;

	pthread_barrier_wait(g->barrier);
	g->err = creds_chain_get(g->chain, &c, &info);
	if (g->err == KL_OK)
		creds_done(&c);
	return NULL;
}

static void test_threads(void)
{
	struct cont_srv cs = { .expires_in_ms = 3600 * 1000, .delay_ms = 300 };
	struct loophttp *srv;
	struct creds_config cfg = base_cfg();
	struct creds_chain *chain;
	struct worker w[N_THREADS];
	struct one_get g[N_THREADS];
	pthread_t tid[N_THREADS];
	pthread_barrier_t barrier;
	char uri[128];
	int ok = 0, failed = 0, mismatched = 0;

	env_reset();
	srv = start_srv(cont_handler, &cs);
	snprintf(uri, sizeof(uri), "%s/c", loophttp_url(srv));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);

	/* everyone starts with an empty cache and a slow agent: one fetch,
	 * shared by all, and every copy is intact */
	run_workers(chain, w);
	for (int i = 0; i < N_THREADS; i++) {
		ok += w[i].ok;
		failed += w[i].failed;
		mismatched += w[i].mismatched;
	}
	CU_ASSERT_EQUAL(ok, N_THREADS * GETS_PER_THREAD);
	CU_ASSERT_EQUAL(failed, 0);
	CU_ASSERT_EQUAL(mismatched, 0);
	CU_ASSERT_EQUAL(cs.n, 1);
	creds_chain_free(chain);

	/* Credentials that are born inside the refresh window (100 s left,
	 * 300 s window) and a failing agent: in both cases the threads that
	 * waited take the outcome of the one walk instead of walking again.
	 * The agent's 1 s delay is far longer than the threads need to get
	 * past the barrier, so exactly one walk happens. */
	cs.delay_ms = 1000;
	for (int round = 0; round < 2; round++) {
		cs.n = 0;
		cs.expires_in_ms = 100 * 1000;
		cs.status = round == 0 ? 0 : 500;
		CU_ASSERT_EQUAL_FATAL(creds_chain_new(&cfg, &chain), KL_OK);
		pthread_barrier_init(&barrier, NULL, N_THREADS);
		for (int i = 0; i < N_THREADS; i++) {
			g[i] = (struct one_get){ .chain = chain, .barrier = &barrier, .err = KL_EINVAL };
			CU_ASSERT_EQUAL_FATAL(pthread_create(&tid[i], NULL, one_get_main, &g[i]), 0);
		}
		for (int i = 0; i < N_THREADS; i++) {
			pthread_join(tid[i], NULL);
			CU_ASSERT_EQUAL(g[i].err, round == 0 ? KL_OK : KL_ECREDS);
		}
		pthread_barrier_destroy(&barrier);
		CU_ASSERT_EQUAL(cs.n, 1);
		creds_chain_free(chain);
	}
	loophttp_stop(srv);
}

/* ------------------------------------------------------------- secrets */

static int file_contains(const char *path, const char *needle)
{
	struct buf b;
	char chunk[4096];
	size_t n;
	int found;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	buf_init(&b, 0);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	found = b.data && strstr(b.data, needle) != NULL;
	buf_done(&b);
	return found;
}

static void test_no_secrets_in_logs_or_messages(void)
{
	static const char *const secrets[] = {
		"SECRET-WEB-TOKEN", "stssecret", "ststoken", "SECRET-AUTH", "contsecret",
		"conttoken", "imdssecret", "imdstoken", "imds-token-", "envsecret",
	};
	struct sts_srv ss = { 0 };
	struct cont_srv cs = { 0 };
	struct imds_srv is = { .require_token = 1 };
	struct loophttp *sts, *cont, *imds;
	struct creds_config cfg = base_cfg();
	struct aws_creds c;
	struct kl_errinfo info[6];
	char path[256], logpath[256], uri[128];
	int n_info = 0;

	env_reset();
	snprintf(logpath, sizeof(logpath), "%s/creds.log", tmpdir);
	CU_ASSERT_EQUAL_FATAL(log_open_file(logpath), 0);
	log_set_level(LOG_LEVEL_DEBUG);
	sts = start_srv(sts_handler, &ss);
	cont = start_srv(cont_handler, &cs);
	imds = start_srv(imds_handler, &is);

	/* successes through each HTTP provider */
	cfg.sts_endpoint = loophttp_url(sts);
	setenv("AWS_WEB_IDENTITY_TOKEN_FILE",
	       put_file(path, sizeof(path), "token.jwt", "SECRET-WEB-TOKEN"), 1);
	setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info[0]), KL_OK);
	creds_done(&c);
	ss.status = 403;
	ss.error_code = "AccessDenied";
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info[n_info++]), KL_ECREDS);
	unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");

	snprintf(uri, sizeof(uri), "%s/c", loophttp_url(cont));
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "SECRET-AUTH", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info[n_info]), KL_OK);
	creds_done(&c);
	cs.status = 401;
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info[n_info++]), KL_ECREDS);
	cs.status = 0;
	cs.body = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"contsecret\",\"Expiration\":\"x\"}";
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info[n_info++]), KL_ECREDS);
	unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");

	unsetenv("AWS_EC2_METADATA_DISABLED");
	cfg.disable_imds = 0;
	cfg.imds_endpoint = loophttp_url(imds);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info[n_info]), KL_OK);
	creds_done(&c);
	setenv("AWS_ACCESS_KEY_ID", "AKIA", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
	CU_ASSERT_EQUAL(get_once(&cfg, &c, &info[n_info]), KL_OK);
	creds_done(&c);

	log_close();
	log_set_level(LOG_LEVEL_WARN);
	/* the log is not empty (so the check below means something)... */
	CU_ASSERT_EQUAL(file_contains(logpath, "creds: using credentials from web-identity"), 1);
	CU_ASSERT_EQUAL(file_contains(logpath, "creds: using credentials from imds"), 1);
	/* ...and holds no secret; nor do the error messages */
	for (size_t i = 0; i < KL_ARRAY_LEN(secrets); i++) {
		CU_ASSERT_EQUAL(file_contains(logpath, secrets[i]), 0);
		for (int j = 0; j < n_info; j++)
			CU_ASSERT_PTR_NULL(strstr(info[j].message, secrets[i]));
	}
	loophttp_stop(sts);
	loophttp_stop(cont);
	loophttp_stop(imds);
	rm_file("token.jwt");
	unlink(logpath);
}

/* ------------------------------------------------------------- loophttp */

static void slow_handler(void *arg, const struct loophttp_request *req,
			 struct loophttp_response *resp)
{
	if (strcmp(req->target, "/slow") == 0)
		resp->delay_ms = 1500;
	else if (strcmp(req->target, "/drop") == 0)
		resp->drop = 1;
	loophttp_add_header(resp, "X-Echo", "%s %s", req->method, req->target);
	loophttp_set_body(resp, "text/plain", req->target);
}

struct slow_get {
	const char *url;
	enum kl_err err;
	long status;
	int64_t done_ms;
};

static void *slow_get_main(void *arg)
{
	struct slow_get *g = arg;
	struct http_client *client;
	struct http_request req;
	struct http_response resp;
	struct kl_errinfo info;

	if (http_client_new(NULL, &client) != KL_OK) {
		g->err = KL_ENOMEM;
		return NULL;
	}
	http_request_init(&req);
	req.method = "GET";
	req.url = g->url;
	http_response_init(&resp);
	g->err = http_send(client, &req, &resp, &info);
	g->status = resp.status;
	g->done_ms = kl_mono_ms();
	http_response_done(&resp);
	http_client_free(client);
	return NULL;
}

/* A delayed answer holds up only its own connection; drop closes. */
static void test_loophttp_delay_and_drop(void)
{
	struct loophttp *srv = start_srv(slow_handler, NULL);
	struct slow_get slow = { 0 }, fast = { 0 }, drop = { 0 };
	char slow_url[96], fast_url[96], drop_url[96];
	pthread_t tid;
	int64_t start = kl_mono_ms();

	snprintf(slow_url, sizeof(slow_url), "%s/slow", loophttp_url(srv));
	snprintf(fast_url, sizeof(fast_url), "%s/fast", loophttp_url(srv));
	snprintf(drop_url, sizeof(drop_url), "%s/drop", loophttp_url(srv));
	slow.url = slow_url;
	fast.url = fast_url;
	drop.url = drop_url;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&tid, NULL, slow_get_main, &slow), 0);
	while (loophttp_count(srv) == 0 && kl_mono_ms() - start < 5000)
		kl_sleep_ms(5);
	slow_get_main(&fast);
	pthread_join(tid, NULL);
	CU_ASSERT_EQUAL(fast.err, KL_OK);
	CU_ASSERT_EQUAL(fast.status, 200);
	CU_ASSERT_EQUAL(slow.err, KL_OK);
	CU_ASSERT_EQUAL(slow.status, 200);
	CU_ASSERT(fast.done_ms < slow.done_ms);
	CU_ASSERT(slow.done_ms - start >= 1500);
	slow_get_main(&drop);
	CU_ASSERT_NOT_EQUAL(drop.err, KL_OK);
	CU_ASSERT(loophttp_count(srv) >= 3);
	loophttp_stop(srv);
}

/* The test server itself: canned queue, keep-alive, recorded requests. */
static void test_loophttp(void)
{
	struct loophttp *srv = start_srv(NULL, NULL);
	struct http_client *client;
	struct http_request req;
	struct http_response resp;
	struct http_header h = { "X-Test", "  padded value " };
	struct kl_errinfo info;
	char url[128];
	const struct loophttp_request *r;

	CU_ASSERT_EQUAL_FATAL(http_client_new(NULL, &client), KL_OK);
	CU_ASSERT_EQUAL(loophttp_push(srv, 201, "text/plain", "first"), 0);
	CU_ASSERT_EQUAL(loophttp_push(srv, 404, NULL, NULL), 0);
	snprintf(url, sizeof(url), "%s/a/b?x=1&y=%%2F", loophttp_url(srv));
	http_request_init(&req);
	req.method = "PUT";
	req.url = url;
	req.headers = &h;
	req.n_headers = 1;
	req.body = "hello\0world";
	req.body_len = 11;
	http_response_init(&resp);
	CU_ASSERT_EQUAL_FATAL(http_send(client, &req, &resp, &info), KL_OK);
	CU_ASSERT_EQUAL(resp.status, 201);
	CU_ASSERT(streq(resp.body.data, "first"));
	CU_ASSERT(streq(http_response_header(&resp, "content-type"), "text/plain"));
	req.method = "GET";
	req.body = NULL;
	req.body_len = 0;
	CU_ASSERT_EQUAL_FATAL(http_send(client, &req, &resp, &info), KL_OK);
	CU_ASSERT_EQUAL(resp.status, 404);
	CU_ASSERT_EQUAL_FATAL(http_send(client, &req, &resp, &info), KL_OK);
	CU_ASSERT_EQUAL(resp.status, 500);   /* queue empty */
	http_response_done(&resp);

	CU_ASSERT_EQUAL_FATAL(loophttp_count(srv), 3);
	r = loophttp_request(srv, 0);
	CU_ASSERT_STRING_EQUAL(r->method, "PUT");
	CU_ASSERT_STRING_EQUAL(r->target, "/a/b?x=1&y=%2F");
	CU_ASSERT(streq(loophttp_header(r, "x-test"), "padded value"));
	CU_ASSERT_EQUAL(r->body_len, 11);
	CU_ASSERT_EQUAL(memcmp(r->body, "hello\0world", 11), 0);
	/* one keep-alive connection carried all three */
	CU_ASSERT_EQUAL(loophttp_request(srv, 2)->conn_id, r->conn_id);
	CU_ASSERT_PTR_NULL(loophttp_request(srv, 3));
	loophttp_clear(srv);
	CU_ASSERT_EQUAL(loophttp_count(srv), 0);
	http_client_free(client);
	loophttp_stop(srv);

	{
		size_t n = 0;
		char *v = loophttp_form_value("a=1&b=x+y%21&c&d=%zz", "b", &n);

		CU_ASSERT(streq(v, "x y!"));
		CU_ASSERT_EQUAL(n, 4);
		free(v);
		v = loophttp_form_value("a=1&b=2", "c", NULL);
		CU_ASSERT_PTR_NULL(v);
		v = loophttp_form_value("a=1&c&d=%zz", "d", NULL);
		CU_ASSERT(streq(v, "%zz"));
		free(v);
	}
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_loophttp),
		KL_TEST(test_loophttp_delay_and_drop),
		KL_TEST(test_config_explicit),
		KL_TEST(test_config_invalid),
		KL_TEST(test_env),
		KL_TEST(test_env_partial_is_fatal),
		KL_TEST(test_profile_default_and_selection),
		KL_TEST(test_profile_config_file),
		KL_TEST(test_profile_syntax),
		KL_TEST(test_profile_malformed),
		KL_TEST(test_profile_missing_or_partial),
		KL_TEST(test_nothing_found_message),
		KL_TEST(test_web_identity_loopback),
		KL_TEST(test_web_identity_errors),
		KL_TEST(test_web_identity_moto),
		KL_TEST(test_container_relative),
		KL_TEST(test_container_full_uri),
		KL_TEST(test_container_bad_answers),
		KL_TEST(test_expiration_formats),
		KL_TEST(test_imds_v2),
		KL_TEST(test_imds_token_ttl),
		KL_TEST(test_imds_v1_fallback),
		KL_TEST(test_imds_errors),
		KL_TEST(test_refresh_window),
		KL_TEST(test_refresh_failure_keeps_valid),
		KL_TEST(test_invalidate),
		KL_TEST(test_threads),
		KL_TEST(test_no_secrets_in_logs_or_messages),
		{ 0 },
	};
	char cmd[128];
	int rc;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kl-test-creds.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	/* a proxy from the environment must not see loopback traffic */
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("ALL_PROXY");
	unsetenv("all_proxy");
	log_set_level(LOG_LEVEL_WARN);
	if (http_global_init() != KL_OK)
		return 1;
	rc = kl_test_run("creds", t);
	http_global_cleanup();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return rc;
}
