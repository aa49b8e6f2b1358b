/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_cfg.c: the configuration tables. Loads fixture files from
 * tests/fixtures/cfg and files written to a private temp dir, and checks
 * values, every class of error with its file:line text, that secrets never
 * reach errors or --dump, and that packaging/kinlake.conf.example and
 * kinlake.conf(5) in the source tree are exactly what the tables generate.
 */
#include "config.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "testutil.h"

#ifndef KL_TEST_SRCDIR
#define KL_TEST_SRCDIR "."
#endif
#define FIXTURES KL_TEST_SRCDIR "/tests/fixtures/cfg"

#define MINIMAL "application = \"clicks-app\";\nstream = \"clicks\";\ns3 = { bucket = \"my-lake\"; };\n"

static char tmpdir[256];

/* ---------------------------------------------------------------- helpers */

/* Writes text to tmpdir/name with mode; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text, mode_t mode)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	unlink(path);
	f = fopen(path, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs(text, f);
	fclose(f);
	CU_ASSERT_FATAL(chmod(path, mode) == 0);
	return path;
}

/* Loads text as tmpdir/kinlake.conf (mode 0600), then removes the file. */
static enum kl_err load_text(const char *text, struct kl_config **ret, struct cfg_errors *errors)
{
	const char *path = write_file("kinlake.conf", text, 0600);
	enum kl_err err = cfg_load(path, ret, errors);

	unlink(path);
	return err;
}

static bool has(const struct cfg_errors *e, const char *needle)
{
	bool found = e->text.data && strstr(e->text.data, needle);

	if (!found)
		fprintf(stderr, "\nmissing \"%s\" in errors:\n%s", needle,
			e->text.data ? e->text.data : "(none)\n");
	return found;
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *data;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	data = malloc((size_t)n + 1);
	if (data) {
		data[fread(data, 1, (size_t)n, f)] = '\0';
	}
	fclose(f);
	return data;
}

static char *dump_str(const struct kl_config *cfg)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT(cfg_dump(cfg, f) == 0);
	fclose(f);
	return out;
}

/* Replaces every line that assigns key (commented out or not) with line. */
static char *replace_line(const char *text, const char *key, const char *line)
{
	size_t klen = strlen(key), cap = strlen(text) + strlen(line) * 4 + 1, n = 0;
	char *out = malloc(cap);
	const char *p = text;

	while (*p) {
		const char *eol = strchr(p, '\n');
		const char *s = p;
		size_t len = eol ? (size_t)(eol - p + 1) : strlen(p);

		while (*s == ' ')
			s++;
		if (strncmp(s, key, klen) == 0 && strncmp(s + klen, " = ", 3) == 0) {
			n += (size_t)snprintf(out + n, cap - n, "%s\n", line);
		} else {
			memcpy(out + n, p, len);
			n += len;
		}
		p += len;
	}
	out[n] = '\0';
	return out;
}

/* Drops the '#' of every commented-out "#key = value;" line. */
static char *uncomment_all(const char *text)
{
	char *out = malloc(strlen(text) + 1), *o = out;
	const char *p = text;

	while (*p) {
		const char *s = p;

		while (*s == ' ')
			s++;
		if (s[0] == '#' && s[1] >= 'a' && s[1] <= 'z') {
			memcpy(o, p, (size_t)(s - p));
			o += s - p;
			p = s + 1;
		}
		while (*p && *p != '\n')
			*o++ = *p++;
		if (*p)
			*o++ = *p++;
	}
	*o = '\0';
	return out;
}

/* Runs cfg_check_main with stdout and stderr sent to /dev/null. */
static int run_check(int argc, char **argv)
{
	int saved_out, saved_err, devnull, rc;

	fflush(stdout);
	fflush(stderr);
	saved_out = dup(1);
	saved_err = dup(2);
	devnull = open("/dev/null", O_WRONLY);
	dup2(devnull, 1);
	dup2(devnull, 2);
	rc = cfg_check_main(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, 1);
	dup2(saved_err, 2);
	close(saved_out);
	close(saved_err);
	close(devnull);
	return rc;
}

/* ---------------------------------------------------------------- tests */

static void test_defaults(void)
{
	struct kl_config *c = NULL;

	CU_ASSERT_FATAL(cfg_defaults(&c) == KL_OK);
	CU_ASSERT_STRING_EQUAL(c->application, "");
	CU_ASSERT_STRING_EQUAL(c->stream, "");
	CU_ASSERT_STRING_EQUAL(c->region, "us-east-1");
	CU_ASSERT_EQUAL(c->initial_position, CFG_INITIAL_TRIM_HORIZON);
	CU_ASSERT_STRING_EQUAL(c->state_dir, "/var/lib/kinlake");
	CU_ASSERT_EQUAL(c->lease.failover_ms, 10000);
	CU_ASSERT_EQUAL(c->lease.renew_interval_ms, 0);
	CU_ASSERT_EQUAL(c->lease.take_interval_ms, 0);
	CU_ASSERT_EQUAL(c->lease.max_steal, 1);
	CU_ASSERT(c->lease.heartbeat && c->lease.release_on_shutdown);
	CU_ASSERT_EQUAL(c->consumer.get_records_limit, 10000);
	CU_ASSERT_EQUAL(c->consumer.idle_ms, 1000);
	CU_ASSERT_EQUAL(c->consumer.max_calls_per_sec, 5);
	CU_ASSERT_STRING_EQUAL(c->plugin.name, "identity");
	CU_ASSERT_PTR_NULL(c->plugin.settings);
	CU_ASSERT_STRING_EQUAL(c->s3.prefix, "!{timestamp:yyyy/MM/dd/HH}/");
	CU_ASSERT_STRING_EQUAL(c->s3.error_prefix,
			       "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd/HH}/");
	CU_ASSERT_EQUAL(c->s3.compression, CFG_COMPRESSION_GZIP);
	CU_ASSERT_EQUAL(c->s3.gzip_level, 6);
	CU_ASSERT_STRING_EQUAL(c->s3.delimiter, "\n");
	CU_ASSERT_EQUAL(c->s3.buffer_bytes, (int64_t)64 << 20);
	CU_ASSERT_EQUAL(c->s3.buffer_records, 0);
	CU_ASSERT_EQUAL(c->s3.buffer_seconds, 300);
	CU_ASSERT_EQUAL(c->s3.multipart_threshold, (int64_t)16 << 20);
	CU_ASSERT_EQUAL(c->s3.part_size, (int64_t)16 << 20);
	CU_ASSERT_FALSE(c->s3.virtual_host);
	CU_ASSERT_FALSE(c->credentials.allow_imdsv1);
	CU_ASSERT_FALSE(c->credentials.disable_imds);
	CU_ASSERT_EQUAL(c->log.level, LOG_LEVEL_INFO);
	CU_ASSERT_STRING_EQUAL(c->metrics.file, "");
	CU_ASSERT_EQUAL(c->poison.max_crashes, 3);
	CU_ASSERT_PTR_NULL(c->doc);
	cfg_free(c);
	cfg_free(NULL);
}

static void test_minimal_resolves_derived(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;
	char host[257] = "";

	cfg_errors_init(&e);
	CU_ASSERT_FATAL(load_text(MINIMAL, &c, &e) == KL_OK);
	CU_ASSERT_EQUAL(e.count, 0);
	CU_ASSERT_EQUAL(c->lease.renew_interval_ms, 3333);
	CU_ASSERT_EQUAL(c->lease.take_interval_ms, 20000);
	CU_ASSERT_EQUAL(c->consumer.threads, 256);
	gethostname(host, sizeof(host) - 1);
	CU_ASSERT_STRING_EQUAL(c->worker_id, host);
	CU_ASSERT_STRING_EQUAL(c->application, "clicks-app");
	CU_ASSERT_STRING_EQUAL(c->s3.bucket, "my-lake");
	CU_ASSERT_EQUAL(c->initial_timestamp_ms, 0);
	cfg_free(c);
	cfg_errors_done(&e);
}

static void test_full_file(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;
	const config_setting_t *s;

	cfg_errors_init(&e);
	CU_ASSERT_FATAL(cfg_load(FIXTURES "/full.conf", &c, &e) == KL_OK);
	CU_ASSERT_EQUAL(e.count, 0);
	CU_ASSERT_STRING_EQUAL(c->path, FIXTURES "/full.conf");
	CU_ASSERT_STRING_EQUAL(c->worker_id, "worker-a.example");
	CU_ASSERT_STRING_EQUAL(c->stream, "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks");
	CU_ASSERT_STRING_EQUAL(c->region, "eu-west-1");
	CU_ASSERT_EQUAL(c->initial_position, CFG_INITIAL_AT_TIMESTAMP);
	CU_ASSERT_EQUAL(c->initial_timestamp_ms, INT64_C(1714521600000));
	CU_ASSERT_STRING_EQUAL(c->state_dir, "/srv/kinlake");
	CU_ASSERT_EQUAL(c->shutdown_grace_ms, 45000);
	CU_ASSERT_EQUAL(c->lease.failover_ms, 20000);
	CU_ASSERT_EQUAL(c->lease.renew_interval_ms, 5000);
	CU_ASSERT_EQUAL(c->lease.take_interval_ms, 60000);
	CU_ASSERT_EQUAL(c->lease.max_leases, 64);
	CU_ASSERT_EQUAL(c->lease.max_steal, 2);
	CU_ASSERT_EQUAL(c->lease.shard_sync_interval_ms, 300000);
	CU_ASSERT(!c->lease.heartbeat && !c->lease.release_on_shutdown && !c->lease.cleanup);
	CU_ASSERT_EQUAL(c->consumer.threads, 6);
	CU_ASSERT_EQUAL(c->consumer.get_records_limit, 2500);
	CU_ASSERT_EQUAL(c->consumer.idle_ms, 250);
	CU_ASSERT_EQUAL(c->consumer.max_calls_per_sec, 4);
	CU_ASSERT_STRING_EQUAL(c->plugin.name, "/opt/kinlake/plugins/clickstream.so");
	CU_ASSERT_STRING_EQUAL(c->plugin.search_path,
			       "/opt/kinlake/plugins:/usr/local/lib/kinlake/plugins");
	CU_ASSERT_EQUAL(c->plugin.max_output_bytes, (int64_t)2 << 20);
	CU_ASSERT_FATAL(c->plugin.settings != NULL);
	CU_ASSERT(config_setting_is_group(c->plugin.settings));
	s = config_setting_get_member(c->plugin.settings, "drop_bots");
	CU_ASSERT(s && config_setting_get_bool(s));
	CU_ASSERT_STRING_EQUAL(c->s3.bucket, "my-lake");
	CU_ASSERT_STRING_EQUAL(c->s3.prefix, "clicks/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/");
	CU_ASSERT_STRING_EQUAL(c->s3.error_prefix, "clicks-errors/!{firehose:error-output-type}/");
	CU_ASSERT_EQUAL(c->s3.compression, CFG_COMPRESSION_NONE);
	CU_ASSERT_EQUAL(c->s3.gzip_level, 9);
	CU_ASSERT_EQUAL(c->s3.zstd_level, 7);
	CU_ASSERT_STRING_EQUAL(c->s3.delimiter, "\r\n");
	CU_ASSERT_EQUAL(c->s3.buffer_bytes, (int64_t)1 << 30);
	CU_ASSERT_EQUAL(c->s3.buffer_records, 500000);
	CU_ASSERT_EQUAL(c->s3.buffer_seconds, 900);
	CU_ASSERT_EQUAL(c->s3.multipart_threshold, INT64_C(5368709120));
	CU_ASSERT_EQUAL(c->s3.part_size, (int64_t)64 << 20);
	CU_ASSERT_EQUAL(c->s3.upload_threads, 8);
	CU_ASSERT_EQUAL(c->s3.storage_class, CFG_STORAGE_INTELLIGENT_TIERING);
	CU_ASSERT_STRING_EQUAL(c->s3.content_type, "application/x-ndjson");
	CU_ASSERT(c->s3.virtual_host);
	CU_ASSERT_STRING_EQUAL(c->credentials.profile, "lake-writer");
	CU_ASSERT(c->credentials.allow_imdsv1);
	CU_ASSERT_STRING_EQUAL(c->endpoints.kinesis, "http://127.0.0.1:4567");
	CU_ASSERT_STRING_EQUAL(c->endpoints.imds, "http://[fd00:ec2::254]");
	CU_ASSERT_STRING_EQUAL(c->tls.ca_file, "/etc/ssl/certs/internal-ca.pem");
	CU_ASSERT_EQUAL(c->http.connect_timeout_ms, 1500);
	CU_ASSERT_EQUAL(c->http.timeout_ms, 120000);
	CU_ASSERT_EQUAL(c->retry.max_attempts, 12);
	CU_ASSERT_EQUAL(c->retry.throttle_base_delay_ms, 1000);
	CU_ASSERT_EQUAL(c->retry.max_delay_ms, 20000);
	CU_ASSERT_EQUAL(c->log.level, LOG_LEVEL_DEBUG);
	CU_ASSERT_STRING_EQUAL(c->log.file, "/var/log/kinlake/kinlake.log");
	CU_ASSERT_STRING_EQUAL(c->metrics.file, "/var/lib/node_exporter/textfile/kinlake.prom");
	CU_ASSERT_EQUAL(c->metrics.interval_ms, 30000);
	CU_ASSERT_EQUAL(c->status.lag_warn_ms, 1200000);
	CU_ASSERT_EQUAL(c->status.lag_crit_ms, 7200000);
	CU_ASSERT_EQUAL(c->status.unowned_crit_ms, 120000);
	CU_ASSERT_EQUAL(c->status.intent_stuck_ms, 1800000);
	CU_ASSERT_EQUAL(c->poison.max_crashes, 5);
	cfg_free(c);
	cfg_errors_done(&e);
}

static void test_unknown_keys(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(cfg_load(FIXTURES "/unknown.conf", &c, &e) == KL_ECONFIG);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT(has(&e, "unknown.conf:2: aplication: unknown key (did you mean 'application'?)"));
	CU_ASSERT(has(&e, "unknown.conf:5: bucket: unknown key (did you mean 's3.bucket'?)"));
	CU_ASSERT(has(&e, "unknown.conf:8: s3.gzip_levl: unknown key (did you mean 's3.gzip_level'?)"));
	CU_ASSERT(has(&e, "unknown.conf:11: lease.frobnicate: unknown key\n"));
	CU_ASSERT(has(&e, "unknown.conf:13: compression_stuff: unknown key\n"));
	CU_ASSERT_EQUAL(e.count, 5);
	cfg_errors_done(&e);
}

static void test_wrong_types(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = 5;\n"
			    "stream = \"clicks\";\n"
			    "lease = { failover_ms = true; heartbeat = 1; };\n"
			    "s3 = { bucket = \"my-lake\"; gzip_level = \"6\"; buffer_bytes = 1.5; };\n"
			    "plugin = { settings = \"x\"; };\n"
			    "poison = 3;\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":1: application: expected a string, got an integer"));
	CU_ASSERT(has(&e, ":3: lease.failover_ms: expected a duration (integer milliseconds or a string like \"10s\"), got a boolean"));
	CU_ASSERT(has(&e, ":3: lease.heartbeat: expected true or false, got an integer"));
	CU_ASSERT(has(&e, ":4: s3.gzip_level: expected an integer, got a string"));
	CU_ASSERT(has(&e, ":4: s3.buffer_bytes: expected a size (integer bytes or a string like \"64MiB\"), got a float"));
	CU_ASSERT(has(&e, ":5: plugin.settings: expected a group { ... }, got a string"));
	CU_ASSERT(has(&e, ":6: poison: expected a group { ... }, got an integer"));
	CU_ASSERT_EQUAL(e.count, 7);
	cfg_errors_done(&e);
}

static void test_out_of_range(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(load_text(MINIMAL
			    "s3 = { bucket = \"b-1\"; gzip_level = 11; part_size = \"4MiB\"; };\n"
			    "lease = { renew_interval_ms = 50; };\n"
			    "consumer = { get_records_limit = 0; max_calls_per_sec = 6; };\n", &c, &e) ==
		  KL_ECONFIG);
	/* MINIMAL has s3 at line 3: a second s3 group is libconfig's parse error. */
	CU_ASSERT(has(&e, ":4: duplicate setting name"));
	CU_ASSERT_EQUAL(e.count, 1);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
			    "s3 = { bucket = \"b-1\"; gzip_level = 11; part_size = \"4MiB\"; };\n"
			    "lease = { renew_interval_ms = 50; };\n"
			    "consumer = { get_records_limit = 0; max_calls_per_sec = 6; };\n", &c, &e) ==
		  KL_ECONFIG);
	CU_ASSERT(has(&e, ":3: s3.gzip_level: 11 is out of range 1..9\n"));
	CU_ASSERT(has(&e, ":3: s3.part_size: 4MiB is out of range 5MiB..5GiB\n"));
	CU_ASSERT(has(&e, ":4: lease.renew_interval_ms: 50 is out of range 100..300000 (or 0 for the default)"));
	CU_ASSERT(has(&e, ":5: consumer.get_records_limit: 0 is out of range 1..10000"));
	CU_ASSERT(has(&e, ":5: consumer.max_calls_per_sec: 6 is out of range 1..5"));
	CU_ASSERT_EQUAL(e.count, 5);
	cfg_errors_done(&e);
}

static void test_bad_enum(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(load_text(MINIMAL "initial_position = \"latest\";\n"
			    "log = { level = \"verbose\"; };\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":4: initial_position: \"latest\" is not one of: TRIM_HORIZON, LATEST, AT_TIMESTAMP"));
	CU_ASSERT(has(&e, ":5: log.level: \"verbose\" is not one of: error, warn, info, debug"));
	CU_ASSERT_EQUAL(e.count, 2);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
			    "s3 = { bucket = \"my-lake\"; storage_class = \"GLACIER\"; };\n", &c, &e) ==
		  KL_ECONFIG);
	CU_ASSERT(has(&e, ":3: s3.storage_class: \"GLACIER\" is not one of: STANDARD, STANDARD_IA"));
	cfg_errors_done(&e);
}

static void test_missing_required(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(load_text("# nothing\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, "kinlake.conf: application: required key is missing"));
	CU_ASSERT(has(&e, "kinlake.conf: stream: required key is missing"));
	CU_ASSERT(has(&e, "kinlake.conf: s3.bucket: required key is missing"));
	CU_ASSERT_EQUAL(e.count, 3);
	cfg_errors_done(&e);

	/* With the section present, the error points at its line. */
	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n\n"
			    "s3 = {\n  prefix = \"x/\";\n};\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, "kinlake.conf:4: s3.bucket: required key is missing"));
	CU_ASSERT_EQUAL(e.count, 1);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"\";\nstream = \"clicks\";\ns3 = { bucket = \"my-lake\"; };\n",
			    &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":1: application: must not be empty"));
	cfg_errors_done(&e);
}

static void test_cross_field(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\n"                       /* 1 */
			    "stream = \"arn:aws:kinesis:eu-west-1:123456789012:stream/clicks\";\n"
			    "initial_position = \"AT_TIMESTAMP\";\n"                   /* 3 */
			    "lease = { failover_ms = 9000; renew_interval_ms = 5000; };\n"
			    "s3 = {\n"                                                 /* 5 */
			    "  bucket = \"my.lake\";\n"
			    "  virtual_host = true;\n"                                 /* 7 */
			    "  prefix = \"data/\";\n"
			    "  error_prefix = \"data/errors/\";\n"                     /* 9 */
			    "  part_size = \"32MiB\";\n"
			    "};\n"
			    "http = { connect_timeout_ms = 5000; timeout_ms = 4000; };\n" /* 12 */
			    "retry = { base_delay_ms = 9000; max_delay_ms = 8000; };\n"
			    "status = { lag_warn_ms = 300000; lag_crit_ms = 300000; unowned_crit_ms = 20000; };\n"
			    "credentials = { allow_imdsv1 = true; disable_imds = true; };\n", /* 15 */
			    &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":3: initial_position: AT_TIMESTAMP needs initial_timestamp"));
	CU_ASSERT(has(&e, ":2: stream: the stream ARN is in eu-west-1 but region is us-east-1 (the default): set region"));
	CU_ASSERT(has(&e, ":4: lease.renew_interval_ms: 5000 is more than half of lease.failover_ms (9000)"));
	CU_ASSERT(has(&e, ":10: s3.part_size: 32MiB is larger than s3.multipart_threshold (16MiB)"));
	CU_ASSERT(has(&e, ":9: s3.error_prefix: lies under s3.prefix \"data/\""));
	CU_ASSERT(has(&e, ":7: s3.virtual_host: cannot be used with a bucket name containing '.'"));
	CU_ASSERT(has(&e, ":12: http.connect_timeout_ms: 5000 is larger than http.timeout_ms (4000)"));
	CU_ASSERT(has(&e, ":13: retry.base_delay_ms: 9000 is larger than retry.max_delay_ms (8000)"));
	CU_ASSERT(has(&e, ":14: status.lag_warn_ms: 300000 is not above s3.buffer_seconds (300 s)"));
	CU_ASSERT(has(&e, ":14: status.lag_crit_ms: 300000 is not above status.lag_warn_ms (300000)"));
	CU_ASSERT(has(&e, ":14: status.unowned_crit_ms: 20000 is below lease.failover_ms + lease.take_interval_ms (27000)"));
	CU_ASSERT(has(&e, ":15: credentials.allow_imdsv1: contradicts credentials.disable_imds"));
	CU_ASSERT_EQUAL(e.count, 12);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
			    "s3 = { bucket = \"my-lake\"; zstd_window_log = 9; };\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":3: s3.zstd_window_log: 9 is not 0 or in 10..27"));
	CU_ASSERT_EQUAL(e.count, 1);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
			    "initial_timestamp = \"2024-05-01T00:00:00Z\";\n"
			    "s3 = { bucket = \"my-lake\"; prefix = \"p/\"; error_prefix = \"p/\"; };\n"
			    "credentials = { secret_access_key = \"abc\"; profile = \"x\"; };\n", &c, &e) ==
		  KL_ECONFIG);
	CU_ASSERT(has(&e, ":3: initial_timestamp: is set but initial_position is TRIM_HORIZON, not AT_TIMESTAMP"));
	CU_ASSERT(has(&e, ":4: s3.error_prefix: equals s3.prefix"));
	CU_ASSERT(has(&e, ":5: credentials.secret_access_key: access_key_id and secret_access_key must be set together"));
	CU_ASSERT_EQUAL(e.count, 3);
	cfg_errors_done(&e);
}

static void test_multiple_errors_in_order(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;
	const char *a, *b, *d, *f, *g;

	cfg_errors_init(&e);
	CU_ASSERT(cfg_load(FIXTURES "/errors.conf", &c, &e) == KL_ECONFIG);
	CU_ASSERT_EQUAL(e.count, 6);
	CU_ASSERT_EQUAL(e.kept, 6);
	a = strstr(e.text.data, "errors.conf:3: stream: expected a string");
	b = strstr(e.text.data, "errors.conf:6: s3.gzip_level: 11 is out of range 1..9");
	d = strstr(e.text.data, "errors.conf:7: s3.compression: \"lz4\" is not one of: none, gzip, zstd");
	f = strstr(e.text.data, "errors.conf:8: s3.buffer_bytes: \"64MB\" has an ambiguous unit");
	g = strstr(e.text.data, "errors.conf:11: lease.heartbeat: expected true or false, got a string");
	CU_ASSERT(a && b && d && f && g);
	CU_ASSERT(a < b && b < d && d < f && f < g);
	CU_ASSERT(has(&e, "errors.conf:13: consumer.get_records_limit: 20000 is out of range 1..10000"));
	cfg_errors_done(&e);
}

static void test_error_cap(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;
	struct buf text;
	char *out = NULL;
	size_t len = 0;
	FILE *f;

	buf_init(&text, 0);
	buf_append_str(&text, MINIMAL);
	for (int i = 0; i < 150; i++)
		buf_printf(&text, "unknown_%d = %d;\n", i, i);
	cfg_errors_init(&e);
	CU_ASSERT(load_text(text.data, &c, &e) == KL_ECONFIG);
	CU_ASSERT_EQUAL(e.count, 150);
	CU_ASSERT_EQUAL(e.kept, CFG_ERRORS_MAX);
	f = open_memstream(&out, &len);
	cfg_errors_print(&e, f);
	fclose(f);
	CU_ASSERT(strstr(out, "... and 50 more errors\n") != NULL);
	CU_ASSERT(strstr(out, ":4: unknown_0: unknown key") != NULL);
	free(out);
	cfg_errors_done(&e);
	buf_done(&text);
}

static void test_units(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT_FATAL(load_text(MINIMAL
				  "lease = { failover_ms = \"12s\"; shard_sync_interval_ms = \"1h\"; };\n"
				  "consumer = { idle_ms = 0; };\n"
				  "plugin = { max_output_bytes = \"512 KiB\"; };\n"
				  "poison = { max_crashes = 0x10; };\n"
				  "status = { lag_crit_ms = \"1d\"; };\n", &c, &e) == KL_ECONFIG);
	/* 512 KiB is below the 1 MiB minimum: a size error in the key's terms. */
	CU_ASSERT(has(&e, ":6: plugin.max_output_bytes: 512KiB is out of range 1MiB..1GiB"));
	CU_ASSERT_EQUAL(e.count, 1);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT_FATAL(load_text(MINIMAL
				  "lease = { failover_ms = \"12s\"; shard_sync_interval_ms = \"1h\"; };\n"
				  "consumer = { idle_ms = 0; };\n"
				  "plugin = { max_output_bytes = \"2 MiB\"; };\n"
				  "poison = { max_crashes = 0x10; };\n"
				  "status = { lag_crit_ms = \"1d\"; };\n", &c, &e) == KL_OK);
	CU_ASSERT_EQUAL(c->lease.failover_ms, 12000);
	CU_ASSERT_EQUAL(c->lease.renew_interval_ms, 4000);
	CU_ASSERT_EQUAL(c->lease.shard_sync_interval_ms, 3600000);
	CU_ASSERT_EQUAL(c->plugin.max_output_bytes, (int64_t)2 << 20);
	CU_ASSERT_EQUAL(c->poison.max_crashes, 16);
	CU_ASSERT_EQUAL(c->status.lag_crit_ms, 86400000);
	cfg_free(c);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
			    "s3 = {\n"
			    "  bucket = \"my-lake\";\n"
			    "  buffer_bytes = \"64MB\";\n"          /* 5 */
			    "  part_size = \"1.5GiB\";\n"           /* 6 */
			    "  buffer_seconds = \"1500ms\";\n"      /* 7 */
			    "  multipart_threshold = 2147483648;\n" /* 8: wraps in libconfig 1.5 */
			    "  buffer_records = \"10\";\n"          /* 9 */
			    "};\n"
			    "lease = { failover_ms = \"10\"; take_interval_ms = \"2 weeks\"; };\n" /* 11 */
			    "poison = { max_crashes = 0x100000000; };\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":5: s3.buffer_bytes: \"64MB\" has an ambiguous unit: write KiB, MiB, GiB or TiB"));
	CU_ASSERT(has(&e, ":6: s3.part_size: \"1.5GiB\" has an unknown unit"));
	CU_ASSERT(has(&e, ":7: s3.buffer_seconds: \"1500ms\" is not a whole number of seconds"));
	CU_ASSERT(has(&e, ":8: s3.multipart_threshold: integer does not fit in 32 bits: add an L suffix"));
	CU_ASSERT(has(&e, ":9: s3.buffer_records: expected an integer, got a string"));
	CU_ASSERT(has(&e, ":11: lease.failover_ms: \"10\" needs a unit"));
	CU_ASSERT(has(&e, ":11: lease.take_interval_ms: \"2 weeks\" has an unknown unit"));
	CU_ASSERT(has(&e, ":12: poison.max_crashes: integer does not fit in 32 bits"));
	CU_ASSERT_EQUAL(e.count, 8);
	cfg_errors_done(&e);
}

static void test_string_checks(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"ab\";\n"
			    "stream = \"arn:aws:kinesis:us-east-1:1234:stream/x\";\n"
			    "state_dir = \"var/lib/kinlake\";\n"
			    "s3 = { bucket = \"My_Bucket\"; prefix = \"/x/!{timestamp:yyyy\"; delimiter = \"12345678901234567\"; };\n"
			    "endpoints = { kinesis = \"ftp://127.0.0.1\"; s3 = \"http://127.0.0.1:4569/path\"; sts = \"http://127.0.0.1:99999\"; };\n"
			    "metrics = { file = \"/var/lib/node_exporter/kinlake.txt\"; };\n"
			    "plugin = { name = \"../evil\"; search_path = \"/ok:relative\"; };\n"
			    "region = \"EU_WEST\";\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":1: application: \"ab\" is not a DynamoDB table name"));
	CU_ASSERT(has(&e, ":2: stream: \"arn:aws:kinesis:us-east-1:1234:stream/x\" is not a Kinesis stream ARN"));
	CU_ASSERT(has(&e, ":3: state_dir: \"var/lib/kinlake\" must be an absolute path"));
	CU_ASSERT(has(&e, ":4: s3.bucket: \"My_Bucket\" is not an S3 bucket name"));
	CU_ASSERT(has(&e, ":4: s3.prefix: \"/x/!{timestamp:yyyy\" must not start with '/'"));
	CU_ASSERT(has(&e, ":4: s3.delimiter: \"12345678901234567\" is longer than 16 bytes"));
	CU_ASSERT(has(&e, ":5: endpoints.kinesis: \"ftp://127.0.0.1\" must start with http:// or https://"));
	CU_ASSERT(has(&e, ":5: endpoints.s3: \"http://127.0.0.1:4569/path\" must be scheme://host[:port] without a path"));
	CU_ASSERT(has(&e, ":5: endpoints.sts: \"http://127.0.0.1:99999\" has a bad port"));
	CU_ASSERT(has(&e, ":6: metrics.file: \"/var/lib/node_exporter/kinlake.txt\" must end in .prom"));
	CU_ASSERT(has(&e, ":7: plugin.name: \"../evil\" must be a plugin name or an absolute path"));
	CU_ASSERT(has(&e, ":7: plugin.search_path: \"/ok:relative\" must be absolute directories"));
	CU_ASSERT(has(&e, ":8: region: \"EU_WEST\" is not an AWS region name"));
	CU_ASSERT_EQUAL(e.count, 13);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
			    "s3 = { bucket = \"my-lake\"; prefix = \"a/!{timestamp:HH/\"; error_prefix = \"\"; };\n",
			    &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":3: s3.prefix: \"a/!{timestamp:HH/\" has a \"!{\" without its '}'"));
	CU_ASSERT(has(&e, ":3: s3.error_prefix: \"\" must not be empty"));
	cfg_errors_done(&e);
}

/* The aggregates' lists go through the worker's own parser (agg_spec):
 * what check-config accepts, the worker starts with. */
static void test_aggregate_lists(void)
{
	static const struct {
		const char *section, *error;
	} bad[] = {
		{ "dimensions = \"page,,action\";", "aggregates.dimensions: empty item in \"page,,action\"" },
		{ "dimensions = \"page, key:page\";", "aggregates.dimensions: 'page' is listed twice" },
		{ "dimensions = \"pa ge\";", "aggregates.dimensions: 'pa ge': only letters, digits" },
		{ "dimensions = \"a,b,c,d,e,f,g,h,i\";", "aggregates.dimensions: at most 8 dimensions" },
		{ "dimensions = \"page\"; measures = \"avg:price\";",
		  "aggregates.measures: 'avg:price' is neither \"count\", \"sum:FIELD\" nor \"distinct:FIELD\"" },
		{ "dimensions = \"page\"; measures = \"sum:\";",
		  "aggregates.measures: 'sum:' is neither \"count\", \"sum:FIELD\" nor \"distinct:FIELD\"" },
		{ "dimensions = \"page\"; measures = \"sum:x, sum:"
		  "a12345678901234567890123456789012345678901234567890123456789012345\";",
		  "aggregates.measures: name 'a1234567890123456789012345678901234567890123456789"
		  "0123456789012345' must be 1 to 64 characters" },
		{ "dimensions = \"page\"; measures = \"sum:x, sum:x\";",
		  "aggregates.measures: sum:x is listed twice" },
		{ "dimensions = \"page\"; time_field = \"t/s\";",
		  "aggregates.time_field: 't/s': only letters, digits" },
		{ "measures = \"count\";", "aggregates.dimensions: is needed when aggregates.table is set" },
	};
	char text[512];

	for (size_t i = 0; i < KL_ARRAY_LEN(bad); i++) {
		struct cfg_errors e;
		struct kl_config *c = NULL;

		snprintf(text, sizeof(text),
			 "application = \"clicks-app\";\nstream = \"clicks\";\n"
			 "s3 = { bucket = \"my-lake\"; };\n"
			 "aggregates = { table = \"clicks-agg\"; %s };\n", bad[i].section);
		cfg_errors_init(&e);
		CU_ASSERT(load_text(text, &c, &e) == KL_ECONFIG);
		CU_ASSERT(has(&e, bad[i].error));
		CU_ASSERT_EQUAL(e.count, 1);
		cfg_errors_done(&e);
	}
	{
		struct cfg_errors e;
		struct kl_config *c = NULL;

		cfg_errors_init(&e);
		CU_ASSERT_EQUAL_FATAL(load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
						"s3 = { bucket = \"my-lake\"; };\n"
						"aggregates = { table = \"clicks-agg\"; dimensions = "
						"\" page , key:dt, a.b \"; measures = \"count, sum:price\"; };\n",
						&c, &e), KL_OK);
		CU_ASSERT_STRING_EQUAL(c->aggregates.dimensions, " page , key:dt, a.b ");
		cfg_free(c);
		cfg_errors_done(&e);
	}
}

static void test_timestamps(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT_FATAL(load_text(MINIMAL "initial_position = \"AT_TIMESTAMP\";\n"
				  "initial_timestamp = \"2020-02-29T23:59:59.250-01:30\";\n", &c, &e) == KL_OK);
	/* 2020-03-01T01:29:59.250Z */
	CU_ASSERT_EQUAL(c->initial_timestamp_ms, INT64_C(1583026199250));
	cfg_free(c);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text(MINIMAL "initial_position = \"AT_TIMESTAMP\";\n"
			    "initial_timestamp = \"2024-05-01T00:00:00\";\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":5: initial_timestamp: \"2024-05-01T00:00:00\" needs a time zone (Z or +HH:MM)"));
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text(MINIMAL "initial_position = \"AT_TIMESTAMP\";\n"
			    "initial_timestamp = \"2023-02-29T00:00:00Z\";\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":5: initial_timestamp: \"2023-02-29T00:00:00Z\" is not a valid date and time"));
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(load_text(MINIMAL "initial_position = \"AT_TIMESTAMP\";\n"
			    "initial_timestamp = \"9999-01-01T00:00:00Z\";\n", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":5: initial_timestamp: \"9999-01-01T00:00:00Z\" is in the future"));
	cfg_errors_done(&e);
}

static void test_secrets_never_shown(void)
{
	static const char *const secrets[] = {
		"AKIDSECRETIDVALUE123", "wJalrXUtnFEMIK7MDENGbPxRfiCYSECRETKEY", "FwoGZXIvSESSIONTOKENVALUE",
		"pluginTOKENvalue",
	};
	const char *text =
		"application = \"clicks-app\";\nstream = \"clicks\";\ns3 = { bucket = \"my-lake\"; };\n"
		"credentials = {\n"
		"  access_key_id = \"AKIDSECRETIDVALUE123\";\n"
		"  secret_access_key = \"wJalrXUtnFEMIK7MDENGbPxRfiCYSECRETKEY\";\n"
		"  session_token = \"FwoGZXIvSESSIONTOKENVALUE\";\n"
		"};\n"
		"plugin = { settings = { api_token = \"pluginTOKENvalue\"; region_hint = \"visible-hint\";"
		" nested = { client_secret = \"pluginTOKENvalue\"; }; }; };\n";
	struct cfg_errors e;
	struct kl_config *c = NULL;
	struct creds_config cc;
	const char *path, *doc_copy;
	char *dump;

	/* Loaded from a private file: fine, and the values are ours. */
	cfg_errors_init(&e);
	CU_ASSERT_FATAL(load_text(text, &c, &e) == KL_OK);
	CU_ASSERT_STRING_EQUAL(c->credentials.secret_access_key, secrets[1]);
	cfg_creds_config(c, &cc);
	CU_ASSERT_STRING_EQUAL(cc.access_key_id, secrets[0]);
	CU_ASSERT_STRING_EQUAL(cc.session_token, secrets[2]);
	/* libconfig's copy was wiped. */
	CU_ASSERT(config_lookup_string(c->doc, "credentials.secret_access_key", &doc_copy));
	CU_ASSERT_STRING_EQUAL(doc_copy, "");
	dump = dump_str(c);
	for (size_t i = 0; i < KL_ARRAY_LEN(secrets); i++)
		CU_ASSERT(strstr(dump, secrets[i]) == NULL);
	CU_ASSERT(strstr(dump, "secret_access_key = \"<set>\";") != NULL);
	CU_ASSERT(strstr(dump, "api_token = \"<set>\";") != NULL);
	CU_ASSERT(strstr(dump, "client_secret = \"<set>\";") != NULL);
	CU_ASSERT(strstr(dump, "region_hint = \"visible-hint\";") != NULL);
	free(dump);
	cfg_free(c);
	cfg_errors_done(&e);

	/* A world-readable file with secrets, plus secret-related errors. */
	path = write_file("open.conf",
			  "application = \"clicks-app\";\nstream = \"clicks\";\ns3 = { bucket = \"my-lake\"; };\n"
			  "credentials = {\n"
			  "  session_token = \"FwoGZXIvSESSIONTOKENVALUE\";\n"
			  "  secret_access_key = \"wJalrXUtnFEMIK7MDENGbPxRfiCYSECRETKEY\";\n"
			  "  access_key_id = 12345;\n"
			  "};\n", 0644);
	cfg_errors_init(&e);
	CU_ASSERT(cfg_load(path, &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, ":5: credentials.session_token: a secret is set but"));
	CU_ASSERT(has(&e, "is accessible by others (mode 0644)"));
	CU_ASSERT(has(&e, ":7: credentials.access_key_id: expected a string, got an integer"));
	CU_ASSERT(has(&e, "credentials.secret_access_key: access_key_id and secret_access_key must be set together"));
	for (size_t i = 0; i < KL_ARRAY_LEN(secrets); i++)
		CU_ASSERT(strstr(e.text.data, secrets[i]) == NULL);
	cfg_errors_done(&e);
	unlink(path);
}

static void test_parse_error_and_io(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(cfg_load(FIXTURES "/syntax.conf", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, "syntax.conf:4: syntax error"));
	CU_ASSERT_EQUAL(e.count, 1);
	cfg_errors_done(&e);

	cfg_errors_init(&e);
	CU_ASSERT(cfg_load(FIXTURES "/does-not-exist.conf", &c, &e) == KL_EIO);
	CU_ASSERT(has(&e, "does-not-exist.conf: cannot read the file"));
	CU_ASSERT_PTR_NULL(c);
	cfg_errors_done(&e);
}

static void test_include_names_its_file(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;

	cfg_errors_init(&e);
	CU_ASSERT(cfg_load(FIXTURES "/include.conf", &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, "include-part.inc:3: s3.bucket_name: unknown key (did you mean 's3.bucket'?)"));
	CU_ASSERT(has(&e, "include-part.inc:2: s3.bucket: required key is missing"));
	CU_ASSERT_EQUAL(e.count, 2);
	cfg_errors_done(&e);
}

static void test_dump_round_trip(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL, *c2 = NULL;
	char *d1, *d2, *body1, *body2;
	const char *path;

	cfg_errors_init(&e);
	CU_ASSERT_FATAL(cfg_load(FIXTURES "/full.conf", &c, &e) == KL_OK);
	d1 = dump_str(c);
	CU_ASSERT(strstr(d1, "multipart_threshold = \"5GiB\";") != NULL);
	CU_ASSERT(strstr(d1, "delimiter = \"\\r\\n\";") != NULL);
	CU_ASSERT(strstr(d1, "ratio = 0.5;") != NULL);
	CU_ASSERT(strstr(d1, "fields = [\"user\", \"page\"];") != NULL);
	path = write_file("dumped.conf", d1, 0600);
	CU_ASSERT_FATAL(cfg_load(path, &c2, &e) == KL_OK);
	d2 = dump_str(c2);
	body1 = strchr(d1, '\n');
	body2 = strchr(d2, '\n');
	CU_ASSERT_FATAL(body1 && body2);
	CU_ASSERT_STRING_EQUAL(body1, body2);
	free(d1);
	free(d2);
	unlink(path);
	cfg_free(c);
	cfg_free(c2);
	cfg_errors_done(&e);
}

static char *generated(int (*writer)(FILE *))
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT(writer(f) == 0);
	fclose(f);
	return out;
}

static void test_example_in_sync(void)
{
	char *committed = read_all(KL_TEST_SRCDIR "/packaging/kinlake.conf.example");
	char *gen = generated(cfg_write_example);

	CU_ASSERT_FATAL(committed != NULL);
	if (strcmp(committed, gen) != 0)
		fprintf(stderr, "\npackaging/kinlake.conf.example is stale: run make update-config-docs\n");
	CU_ASSERT_STRING_EQUAL(committed, gen);
	free(committed);
	free(gen);
}

static void test_example_placeholders(void)
{
	char *example = generated(cfg_write_example), *t1, *t2, *t3, *all;
	struct cfg_errors e;
	struct kl_config *c = NULL, *c2 = NULL, *defs = NULL;
	char *d1, *d2, *settings;

	/* Unchanged: refused, naming every placeholder. */
	cfg_errors_init(&e);
	CU_ASSERT(load_text(example, &c, &e) == KL_ECONFIG);
	CU_ASSERT(has(&e, "application: still \"CHANGE-ME\", unchanged from the example config"));
	CU_ASSERT(has(&e, "stream: still \"CHANGE-ME\""));
	CU_ASSERT(has(&e, "s3.bucket: still \"CHANGE-ME\""));
	CU_ASSERT_EQUAL(e.count, 3);
	CU_ASSERT(cfg_is_placeholder(CFG_PLACEHOLDER));
	CU_ASSERT_FALSE(cfg_is_placeholder("clicks"));
	cfg_errors_done(&e);

	/* Placeholders filled in: valid, and equal to the defaults. */
	t1 = replace_line(example, "application", "application = \"clicks-app\";");
	t2 = replace_line(t1, "stream", "stream = \"clicks\";");
	t3 = replace_line(t2, "bucket", "  bucket = \"my-lake\";");
	cfg_errors_init(&e);
	CU_ASSERT_FATAL(load_text(t3, &c, &e) == KL_OK);
	CU_ASSERT_FATAL(cfg_defaults(&defs) == KL_OK);
	CU_ASSERT_EQUAL(c->s3.buffer_bytes, defs->s3.buffer_bytes);
	CU_ASSERT_EQUAL(c->initial_position, defs->initial_position);

	/* Every commented-out default uncommented: still valid, same values. */
	all = uncomment_all(t3);
	CU_ASSERT(strstr(all, "\n  gzip_level = 6;\n") != NULL);
	CU_ASSERT_FATAL(load_text(all, &c2, &e) == KL_OK);
	CU_ASSERT_EQUAL(e.count, 0);
	d1 = dump_str(c);
	d2 = dump_str(c2);
	settings = strstr(d2, "  settings = { };\n");
	CU_ASSERT_FATAL(settings != NULL);
	memmove(settings, settings + strlen("  settings = { };\n"),
		strlen(settings + strlen("  settings = { };\n")) + 1);
	CU_ASSERT_STRING_EQUAL(strchr(d1, '\n'), strchr(d2, '\n'));
	free(d1);
	free(d2);
	cfg_free(c);
	cfg_free(c2);
	cfg_free(defs);
	cfg_errors_done(&e);
	free(all);
	free(t1);
	free(t2);
	free(t3);
	free(example);
}

static void test_man_page(void)
{
	char *committed = read_all(KL_TEST_SRCDIR "/packaging/kinlake.conf.5");
	char *gen = generated(cfg_write_man);
	struct kl_config *defs = NULL;
	char *dump, *line, *save = NULL, section[64] = "";
	int keys = 0;

	CU_ASSERT_FATAL(committed != NULL);
	if (strcmp(committed, gen) != 0)
		fprintf(stderr, "\npackaging/kinlake.conf.5 is stale: run make update-config-docs\n");
	CU_ASSERT_STRING_EQUAL(committed, gen);

	/* Every key the dump shows is documented (".B section.key", roff escaped). */
	CU_ASSERT_FATAL(cfg_defaults(&defs) == KL_OK);
	dump = dump_str(defs);
	for (line = strtok_r(dump, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[64], want[160], *eq;
		int depth = line[0] == ' ';

		if (line[0] == '#' || strcmp(line, "};") == 0 || !(eq = strstr(line, " = ")))
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)(eq - line) - 2 * depth, line + 2 * depth);
		if (strcmp(eq, " = {") == 0) {
			snprintf(section, sizeof(section), "%s", name);
			continue;
		}
		snprintf(want, sizeof(want), "\n.B %s%s%s\n", depth ? section : "", depth ? "." : "", name);
		for (char *p = want; (p = strchr(p, '-')); p += 2) {
			memmove(p + 1, p, strlen(p) + 1);
			*p = '\\';
		}
		if (!strstr(committed, want))
			fprintf(stderr, "\nkey not in the man page: %s", want);
		CU_ASSERT(strstr(committed, want) != NULL);
		keys++;
	}
	CU_ASSERT(keys > 60);
	free(dump);
	cfg_free(defs);
	free(committed);
	free(gen);
}

static void test_check_main(void)
{
	const char *bad = FIXTURES "/errors.conf";
	const char *good = write_file("good.conf", MINIMAL, 0600);
	char good_path[512];

	snprintf(good_path, sizeof(good_path), "%s", good);
	{
		char *argv[] = { "check-config", good_path, NULL };
		CU_ASSERT_EQUAL(run_check(2, argv), 0);
	}
	{
		char *argv[] = { "check-config", "-c", good_path, "--dump", NULL };
		CU_ASSERT_EQUAL(run_check(4, argv), 0);
	}
	{
		char *argv[] = { "check-config", "--config", (char *)bad, NULL };
		CU_ASSERT_EQUAL(run_check(3, argv), CFG_EXIT_CONFIG);
	}
	{
		char *argv[] = { "check-config", "--dump", (char *)FIXTURES "/nope.conf", NULL };
		CU_ASSERT_EQUAL(run_check(3, argv), 78);
	}
	{
		char *argv[] = { "check-config", "-c", NULL };
		CU_ASSERT_EQUAL(run_check(2, argv), 64);
	}
	{
		char *argv[] = { "check-config", "--frob", NULL };
		CU_ASSERT_EQUAL(run_check(2, argv), 64);
	}
	{
		char *argv[] = { "check-config", good_path, good_path, NULL };
		CU_ASSERT_EQUAL(run_check(3, argv), 64);
	}
	unlink(good_path);
}

static void test_derived_structs(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;
	struct aws_client_config ac;
	struct creds_config cc;
	struct http_opts ho;
	struct lease_coord_config lc;
	struct spool_opts so;

	cfg_errors_init(&e);
	CU_ASSERT_FATAL(cfg_load(FIXTURES "/full.conf", &c, &e) == KL_OK);
	cfg_aws_client_config(c, CFG_SERVICE_S3, &ac);
	CU_ASSERT_STRING_EQUAL(ac.service, "s3");
	CU_ASSERT_STRING_EQUAL(ac.region, "eu-west-1");
	CU_ASSERT_STRING_EQUAL(ac.endpoint, "https://s3.example.internal:9000");
	CU_ASSERT_EQUAL(ac.s3_virtual_host, 1);
	CU_ASSERT_EQUAL(ac.http.connect_timeout_ms, 1500);
	CU_ASSERT_EQUAL(ac.http.timeout_ms, 120000);
	CU_ASSERT_STRING_EQUAL(ac.http.ca_file, "/etc/ssl/certs/internal-ca.pem");
	CU_ASSERT_EQUAL(ac.retry.max_attempts, 12);
	CU_ASSERT_EQUAL(ac.retry.base_delay_ms, 100);
	CU_ASSERT_EQUAL(ac.retry.throttle_base_delay_ms, 1000);
	CU_ASSERT_EQUAL(ac.retry.max_delay_ms, 20000);
	cfg_aws_client_config(c, CFG_SERVICE_DYNAMODB, &ac);
	CU_ASSERT_STRING_EQUAL(ac.service, "dynamodb");
	CU_ASSERT_STRING_EQUAL(ac.endpoint, "http://127.0.0.1:4568/");
	CU_ASSERT_EQUAL(ac.s3_virtual_host, 0);
	cfg_creds_config(c, &cc);
	CU_ASSERT_PTR_NULL(cc.access_key_id);
	CU_ASSERT_PTR_NULL(cc.secret_access_key);
	CU_ASSERT_STRING_EQUAL(cc.profile, "lake-writer");
	CU_ASSERT_STRING_EQUAL(cc.sts_endpoint, "https://sts.eu-west-1.amazonaws.com");
	CU_ASSERT_STRING_EQUAL(cc.imds_endpoint, "http://[fd00:ec2::254]");
	CU_ASSERT_EQUAL(cc.allow_imdsv1, 1);
	CU_ASSERT_EQUAL(cc.disable_imds, 0);
	cfg_http_opts(c, &ho);
	CU_ASSERT_EQUAL(ho.timeout_ms, 120000);
	cfg_lease_coord_config(c, &lc);
	CU_ASSERT_STRING_EQUAL(lc.worker_id, "worker-a.example");
	CU_ASSERT_EQUAL(lc.failover_ms, 20000);
	CU_ASSERT_EQUAL(lc.renew_interval_ms, 5000);
	CU_ASSERT_EQUAL(lc.take_interval_ms, 60000);
	CU_ASSERT_EQUAL(lc.sync_interval_ms, 300000);
	CU_ASSERT_EQUAL(lc.max_leases, 64);
	CU_ASSERT_EQUAL(lc.max_steal, 2);
	CU_ASSERT(lc.no_heartbeat && lc.no_cleanup);
	CU_ASSERT_EQUAL(lc.initial_position, LEASE_INITIAL_AT_TIMESTAMP);
	CU_ASSERT_EQUAL(lc.initial_timestamp_ms, INT64_C(1714521600000));
	cfg_spool_opts(c, &so);
	CU_ASSERT_EQUAL(so.codec, SPOOL_CODEC_NONE);
	CU_ASSERT_EQUAL(so.delim_len, 2);
	CU_ASSERT(memcmp(so.delim, "\r\n", 2) == 0);
	cfg_free(c);

	/* Defaults: NULL where the target module means "default" by NULL. */
	CU_ASSERT_FATAL(load_text(MINIMAL, &c, &e) == KL_OK);
	cfg_aws_client_config(c, CFG_SERVICE_KINESIS, &ac);
	CU_ASSERT_STRING_EQUAL(ac.service, "kinesis");
	CU_ASSERT_PTR_NULL(ac.endpoint);
	CU_ASSERT_PTR_NULL(ac.http.ca_file);
	cfg_creds_config(c, &cc);
	CU_ASSERT_PTR_NULL(cc.profile);
	CU_ASSERT_STRING_EQUAL(cc.region, "us-east-1");
	cfg_lease_coord_config(c, &lc);
	CU_ASSERT_EQUAL(lc.initial_position, LEASE_INITIAL_TRIM_HORIZON);
	cfg_spool_opts(c, &so);
	CU_ASSERT_EQUAL(so.codec, SPOOL_CODEC_GZIP);
	CU_ASSERT_EQUAL(so.level, 6);
	CU_ASSERT_EQUAL(so.delim_len, 1);
	cfg_free(c);
	cfg_errors_done(&e);
}

static void test_zstd_matches_build(void)
{
	struct cfg_errors e;
	struct kl_config *c = NULL;
	enum kl_err err;

	cfg_errors_init(&e);
	err = load_text("application = \"clicks-app\";\nstream = \"clicks\";\n"
			"s3 = { bucket = \"my-lake\"; compression = \"zstd\"; zstd_level = 19; };\n", &c, &e);
#ifdef HAVE_ZSTD
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	CU_ASSERT_EQUAL(c->s3.compression, CFG_COMPRESSION_ZSTD);
	CU_ASSERT_STRING_EQUAL(cfg_compression_name(c->s3.compression), "zstd");
	cfg_free(c);
#else
	CU_ASSERT_EQUAL(err, KL_ECONFIG);
	CU_ASSERT(has(&e, ":3: s3.compression: \"zstd\" is not available"));
#endif
	cfg_errors_done(&e);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_defaults),
		KL_TEST(test_minimal_resolves_derived),
		KL_TEST(test_full_file),
		KL_TEST(test_unknown_keys),
		KL_TEST(test_wrong_types),
		KL_TEST(test_out_of_range),
		KL_TEST(test_bad_enum),
		KL_TEST(test_missing_required),
		KL_TEST(test_cross_field),
		KL_TEST(test_multiple_errors_in_order),
		KL_TEST(test_error_cap),
		KL_TEST(test_units),
		KL_TEST(test_string_checks),
		KL_TEST(test_aggregate_lists),
		KL_TEST(test_timestamps),
		KL_TEST(test_secrets_never_shown),
		KL_TEST(test_parse_error_and_io),
		KL_TEST(test_include_names_its_file),
		KL_TEST(test_dump_round_trip),
		KL_TEST(test_example_in_sync),
		KL_TEST(test_example_placeholders),
		KL_TEST(test_man_page),
		KL_TEST(test_check_main),
		KL_TEST(test_derived_structs),
		KL_TEST(test_zstd_matches_build),
		{ 0 },
	};
	const char *base = getenv("TMPDIR");
	int rc;

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_cfg.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	rc = kl_test_run("cfg", t);
	rmdir(tmpdir);
	return rc;
}
