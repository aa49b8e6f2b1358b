/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_athena.c: `kinlake athena-ddl`. For several key templates (the
 * defaults, Hive layouts, plugin keys, odd date patterns) the statement is
 * parsed back (tests/athena_ddl.h), its columns, location and projection
 * properties are checked, and keys rendered by keytmpl for many times and
 * partition values must match it the way Athena's projection reads them;
 * templates that cannot be projected are refused with a message naming
 * the part. The command itself runs on a config file.
 */
#include "config.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "athena.h"
#include "athena_ddl.h"
#include "buf.h"
#include "esn.h"
#include "keytmpl.h"
#include "kl_err.h"
#include "testutil.h"

#define DAY_MS 86400000LL
/* 2025-01-01T00:00:00Z: the range start of every table here. */
#define START_MS 1735689600000LL
/* 2026-11-21 19:58:36.903 UTC, a batch time; "now" is a day later. */
#define ARRIVAL 1795291116903LL
#define NOW_SECS ((ARRIVAL + DAY_MS) / 1000)

#define SEQ1 "49590338271490256608559692538361571095921575989136588898"
#define SEQ2 "49590338271490256608559692540925702759324208523137515618"

/* Generates the statement for template (kind) into out; returns the error. */
static enum kl_err gen(const char *template, enum keytmpl_kind kind, const char *columns,
		       const struct athena_key_spec *keys, size_t n_keys, struct buf *out,
		       struct kl_errinfo *info)
{
	struct athena_table_opts o = {
		.bucket = "lake",
		.template = template,
		.kind = kind,
		.table = kind == KEYTMPL_ERROR ? "events_errors" : "events",
		.columns = columns,
		.compression = "gzip",
		.delimiter = "\n",
		.start_ms = START_MS,
		.keys = keys,
		.n_keys = n_keys,
	};

	kl_errinfo_clear(info);
	buf_reset(out);
	return athena_table_ddl(&o, out, info);
}

/* Generates and parses; fails the test when either fails. */
static void gen_parse(const char *template, enum keytmpl_kind kind, const char *columns,
		      const struct athena_key_spec *keys, size_t n_keys, struct ddl_table *t)
{
	struct kl_errinfo info;
	struct buf out;
	const char *p, *why;
	enum kl_err err;

	buf_init(&out, 1 << 20);
	err = gen(template, kind, columns, keys, n_keys, &out, &info);
	if (err)
		fprintf(stderr, "\n  %s: %s\n", template, info.message);
	CU_ASSERT_EQUAL_FATAL(err, KL_OK);
	CU_ASSERT_FATAL(buf_append_byte(&out, 0) == KL_OK);
	p = (const char *)out.data;
	why = ddl_parse(&p, t);
	if (why)
		fprintf(stderr, "\n  %s\n%s\n", why, (const char *)out.data);
	CU_ASSERT_PTR_NULL_FATAL(why);
	ddl_skip(&p);
	CU_ASSERT_EQUAL(*p, '\0');
	buf_done(&out);
}

static const char *prop(const struct ddl_table *t, const char *key)
{
	const char *v = ddl_prop(t, key);

	return v ? v : "(none)";
}

/* Renders the key for a batch at arrival_ms with pkeys (error type etype)
 * and checks whether it matches t. */
static bool key_matches(const char *template, enum keytmpl_kind kind, int64_t arrival_ms,
			const struct keytmpl_pkey *pkeys, size_t n_pkeys, const char *etype,
			const struct ddl_table *t, bool verbose)
{
	struct kl_errinfo info;
	struct keytmpl *kt = NULL;
	struct esn first, last;
	struct keytmpl_batch b = {
		.shard_id = "shardId-000000000001",
		.first = &first,
		.last = &last,
		.first_arrival_ms = arrival_ms,
		.pkeys = pkeys,
		.n_pkeys = n_pkeys,
		.error_output_type = etype,
		.ext = ".gz",
	};
	char key[KEYTMPL_KEY_MAX + 1], uri[KEYTMPL_KEY_MAX + 64], why[1024];
	bool ok;

	CU_ASSERT_FATAL(esn_set(SEQ1, 0, &first, NULL) == KL_OK);
	CU_ASSERT_FATAL(esn_set(SEQ2, 3, &last, NULL) == KL_OK);
	CU_ASSERT_FATAL(keytmpl_compile(template, kind, &kt, &info) == KL_OK);
	CU_ASSERT_FATAL(keytmpl_render(kt, &b, key, sizeof(key), NULL, &info) == KL_OK);
	keytmpl_free(kt);
	snprintf(uri, sizeof(uri), "s3://lake/%s", key);
	ok = ddl_match(t, uri, ".gz", NOW_SECS, why, sizeof(why));
	if (!ok && verbose)
		fprintf(stderr, "\n  %s\n", why);
	return ok;
}

/* Refused, with a message containing want. */
static void expect_refused(const char *template, enum keytmpl_kind kind, const char *columns,
			   const struct athena_key_spec *keys, size_t n_keys, const char *want)
{
	struct kl_errinfo info;
	struct buf out;
	enum kl_err err;

	buf_init(&out, 1 << 20);
	err = gen(template, kind, columns, keys, n_keys, &out, &info);
	CU_ASSERT_EQUAL(err, KL_ECONFIG);
	if (!strstr(info.message, want))
		fprintf(stderr, "\n  %s: got '%s', want '%s'\n", template, info.message, want);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, want));
	buf_done(&out);
}

/* ------------------------------------------------------------ tests */

static void test_default_templates(void)
{
	static const char data[] = "!{timestamp:yyyy/MM/dd/HH}/";
	static const char errs[] = "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd/HH}/";
	struct ddl_table *t = calloc(1, sizeof(*t));

	CU_ASSERT_FATAL(t != NULL);
	gen_parse(data, KEYTMPL_DATA, NULL, NULL, 0, t);
	CU_ASSERT_STRING_EQUAL(t->database, "default");
	CU_ASSERT_STRING_EQUAL(t->table, "events");
	/* No column list: the raw line, read as text. */
	CU_ASSERT_EQUAL(t->n_cols, 1);
	CU_ASSERT_STRING_EQUAL(t->cols[0].name, "line");
	CU_ASSERT_STRING_EQUAL(t->cols[0].type, "string");
	CU_ASSERT_STRING_EQUAL(t->row_format, "DELIMITED");
	CU_ASSERT_STRING_EQUAL(t->location, "s3://lake/");
	CU_ASSERT_EQUAL_FATAL(t->n_pcols, 1);
	CU_ASSERT_STRING_EQUAL(t->pcols[0].name, "datehour");
	CU_ASSERT_STRING_EQUAL(t->pcols[0].type, "string");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.enabled"), "true");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.datehour.type"), "date");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.datehour.format"), "yyyy/MM/dd/HH");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.datehour.range"), "2025/01/01/00,NOW");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.datehour.interval"), "1");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.datehour.interval.unit"), "HOURS");
	CU_ASSERT_STRING_EQUAL(prop(t, "storage.location.template"), "s3://lake/${datehour}/");
	CU_ASSERT_STRING_EQUAL(prop(t, "compressionType"), "gzip");
	/* Every hour of a few days renders into the projection. */
	for (int64_t ms = ARRIVAL - 3 * DAY_MS; ms <= ARRIVAL; ms += 3600 * 1000 + 17)
		CU_ASSERT(key_matches(data, KEYTMPL_DATA, ms, NULL, 0, NULL, t, true));
	CU_ASSERT(key_matches(data, KEYTMPL_DATA, START_MS, NULL, 0, NULL, t, true));
	/* Before the range start: Athena would never look there. */
	CU_ASSERT(!key_matches(data, KEYTMPL_DATA, START_MS - 1000, NULL, 0, NULL, t, false));

	gen_parse(errs, KEYTMPL_ERROR, NULL, NULL, 0, t);
	CU_ASSERT_STRING_EQUAL(t->table, "events_errors");
	CU_ASSERT_STRING_EQUAL(t->row_format, "org.openx.data.jsonserde.JsonSerDe");
	CU_ASSERT_STRING_EQUAL(t->location, "s3://lake/errors/");
	CU_ASSERT_EQUAL_FATAL(t->n_cols, 10);
	CU_ASSERT_STRING_EQUAL(t->cols[0].name, "attemptsmade");
	CU_ASSERT_STRING_EQUAL(t->cols[5].name, "rawdata");
	CU_ASSERT_STRING_EQUAL(t->cols[8].name, "subsequencenumber");
	CU_ASSERT_STRING_EQUAL(t->cols[8].type, "bigint");
	CU_ASSERT_EQUAL_FATAL(t->n_pcols, 2);
	CU_ASSERT_STRING_EQUAL(t->pcols[0].name, "error_output_type");
	CU_ASSERT_STRING_EQUAL(t->pcols[1].name, "datehour");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.error_output_type.type"), "enum");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.error_output_type.values"),
			       "processing-failed,partitioning-failed");
	CU_ASSERT_STRING_EQUAL(prop(t, "storage.location.template"),
			       "s3://lake/errors/${error_output_type}/${datehour}/");
	CU_ASSERT(key_matches(errs, KEYTMPL_ERROR, ARRIVAL, NULL, 0, "processing-failed", t, true));
	CU_ASSERT(key_matches(errs, KEYTMPL_ERROR, ARRIVAL, NULL, 0, "partitioning-failed", t, true));
	free(t);
}

static void test_hive_layout(void)
{
	static const char tmpl[] = "logs/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/";
	struct ddl_table *t = calloc(1, sizeof(*t));

	CU_ASSERT_FATAL(t != NULL);
	gen_parse(tmpl, KEYTMPL_DATA, "event_id string, n bigint, tags array<string>, "
		  "price decimal(10,2), geo struct<lat:double,lon:double>", NULL, 0, t);
	CU_ASSERT_STRING_EQUAL(t->location, "s3://lake/logs/");
	CU_ASSERT_STRING_EQUAL(t->row_format, "org.openx.data.jsonserde.JsonSerDe");
	CU_ASSERT_EQUAL_FATAL(t->n_cols, 5);
	CU_ASSERT_STRING_EQUAL(t->cols[2].type, "array<string>");
	CU_ASSERT_STRING_EQUAL(t->cols[3].type, "decimal(10,2)");
	CU_ASSERT_STRING_EQUAL(t->cols[4].type, "struct<lat:double,lon:double>");
	CU_ASSERT_EQUAL_FATAL(t->n_pcols, 2);
	CU_ASSERT_STRING_EQUAL(t->pcols[0].name, "dt");
	CU_ASSERT_STRING_EQUAL(t->pcols[1].name, "hour");
	CU_ASSERT_STRING_EQUAL(t->pcols[1].type, "int");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.type"), "date");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.format"), "yyyy-MM-dd");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.range"), "2025-01-01,NOW");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.interval.unit"), "DAYS");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.hour.type"), "integer");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.hour.range"), "0,23");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.hour.digits"), "2");
	CU_ASSERT_STRING_EQUAL(prop(t, "storage.location.template"),
			       "s3://lake/logs/dt=${dt}/hour=${hour}/");
	for (int h = 0; h < 24; h++)
		CU_ASSERT(key_matches(tmpl, KEYTMPL_DATA, ARRIVAL - 19 * 3600000LL + h * 3600000LL, NULL, 0,
				      NULL, t, true));
	free(t);
}

static void test_plugin_keys(void)
{
	static const char tmpl[] = "clicks/region=!{partitionKeyFromLambda:region}/"
				   "!{partition:tenant.id}/dt=!{partitionKeyFromLambda:dt}/"
				   "hour=!{partitionKeyFromLambda:hour}/";
	static const struct athena_key_spec keys[] = {
		{ "region", "enum:eu,us" },
		{ "dt", "date:yyyy-MM-dd" },
		{ "hour", "integer:0,23:2" },
	};
	struct keytmpl_pkey pk[4] = {
		{ "region", "eu" }, { "tenant.id", "acme" }, { "dt", "2026-11-20" }, { "hour", "07" },
	};
	struct ddl_table *t = calloc(1, sizeof(*t));

	CU_ASSERT_FATAL(t != NULL);
	gen_parse(tmpl, KEYTMPL_DATA, ATHENA_CLICKSTREAM_COLUMNS, keys, 3, t);
	CU_ASSERT_STRING_EQUAL(t->location, "s3://lake/clicks/");
	CU_ASSERT_EQUAL(t->n_cols, 22);
	CU_ASSERT_STRING_EQUAL(t->cols[0].name, "event_id");
	CU_ASSERT_EQUAL_FATAL(t->n_pcols, 4);
	CU_ASSERT_STRING_EQUAL(t->pcols[0].name, "region");
	CU_ASSERT_STRING_EQUAL(t->pcols[1].name, "tenant_id");
	CU_ASSERT_STRING_EQUAL(t->pcols[2].name, "dt");
	CU_ASSERT_STRING_EQUAL(t->pcols[3].name, "hour");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.region.type"), "enum");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.region.values"), "eu,us");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.tenant_id.type"), "injected");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.type"), "date");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.hour.type"), "integer");
	CU_ASSERT_STRING_EQUAL(prop(t, "storage.location.template"),
			       "s3://lake/clicks/region=${region}/${tenant_id}/dt=${dt}/hour=${hour}/");
	CU_ASSERT(key_matches(tmpl, KEYTMPL_DATA, ARRIVAL, pk, 4, NULL, t, true));
	pk[0].value = "us";
	pk[3].value = "23";
	CU_ASSERT(key_matches(tmpl, KEYTMPL_DATA, ARRIVAL, pk, 4, NULL, t, true));
	/* Values the projection does not produce are not matched. */
	pk[0].value = "ap";
	CU_ASSERT(!key_matches(tmpl, KEYTMPL_DATA, ARRIVAL, pk, 4, NULL, t, false));
	pk[0].value = "eu";
	pk[3].value = "24";
	CU_ASSERT(!key_matches(tmpl, KEYTMPL_DATA, ARRIVAL, pk, 4, NULL, t, false));
	pk[3].value = "07";
	pk[2].value = "2024-12-31";
	CU_ASSERT(!key_matches(tmpl, KEYTMPL_DATA, ARRIVAL, pk, 4, NULL, t, false));
	free(t);
}

static void test_custom_dates(void)
{
	static const char quoted[] = "x/!{timestamp:yyyy'y'MM}/";
	static const char split[] = "y/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/";
	static const char merged[] = "z/!{timestamp:yyyy}/d/!{timestamp:MM-dd'T'HH}/";
	struct ddl_table *t = calloc(1, sizeof(*t));

	CU_ASSERT_FATAL(t != NULL);
	gen_parse(quoted, KEYTMPL_DATA, NULL, NULL, 0, t);
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.month.format"), "yyyy'y'MM");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.month.range"), "2025y01,NOW");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.month.interval.unit"), "MONTHS");
	CU_ASSERT(key_matches(quoted, KEYTMPL_DATA, ARRIVAL, NULL, 0, NULL, t, true));

	gen_parse(split, KEYTMPL_DATA, NULL, NULL, 0, t);
	CU_ASSERT_EQUAL_FATAL(t->n_pcols, 3);
	CU_ASSERT_STRING_EQUAL(t->pcols[0].name, "year");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.year.type"), "date");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.year.format"), "yyyy");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.year.interval.unit"), "YEARS");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.month.type"), "integer");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.month.range"), "1,12");
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.day.range"), "1,31");
	CU_ASSERT_STRING_EQUAL(prop(t, "storage.location.template"),
			       "s3://lake/y/year=${year}/month=${month}/day=${day}/");
	CU_ASSERT(key_matches(split, KEYTMPL_DATA, ARRIVAL, NULL, 0, NULL, t, true));

	/* Text without '=' between fields is part of one date. */
	gen_parse(merged, KEYTMPL_DATA, NULL, NULL, 0, t);
	CU_ASSERT_EQUAL_FATAL(t->n_pcols, 1);
	CU_ASSERT_STRING_EQUAL(prop(t, "projection.datehour.format"), "yyyy/'d'/MM-dd'T'HH");
	CU_ASSERT_STRING_EQUAL(prop(t, "storage.location.template"), "s3://lake/z/${datehour}/");
	for (int64_t ms = ARRIVAL - DAY_MS; ms <= ARRIVAL; ms += 3600 * 1000)
		CU_ASSERT(key_matches(merged, KEYTMPL_DATA, ms, NULL, 0, NULL, t, true));

	/* No partition at all: a plain table under the prefix. */
	gen_parse("data/", KEYTMPL_DATA, NULL, NULL, 0, t);
	CU_ASSERT_EQUAL(t->n_pcols, 0);
	CU_ASSERT_STRING_EQUAL(t->location, "s3://lake/data/");
	CU_ASSERT_PTR_NULL(ddl_prop(t, "projection.enabled"));
	CU_ASSERT(key_matches("data/", KEYTMPL_DATA, ARRIVAL, NULL, 0, NULL, t, true));
	free(t);
}

static void test_refused(void)
{
	static const struct athena_key_spec bad_enum[] = { { "region", "enum:eu,,us" } };
	static const struct athena_key_spec bad_date[] = { { "dt", "date:MM-dd" } };
	static const struct athena_key_spec bad_int[] = { { "dt", "integer:5" } };
	static const struct athena_key_spec bad_kind[] = { { "dt", "uuid" } };

	expect_refused("data/!{timestamp:yyyy/MM}-!{shard}/!{esn_range}", KEYTMPL_DATA, NULL, NULL, 0,
		       "timestamp field 'MM' at position 23");
	expect_refused("data-!{partition:dt}", KEYTMPL_DATA, NULL, NULL, 0,
		       "partition key 'dt' at position 18 of 'data-!{partition:dt}' is in the same path "
		       "segment as the object name");
	expect_refused("data/!{timestamp:MM/dd}/", KEYTMPL_DATA, NULL, NULL, 0,
		       "the timestamp fields 'MM/dd' at position 18");
	expect_refused("data/!{timestamp:yyyy/dd}/", KEYTMPL_DATA, NULL, NULL, 0,
		       "a field between the year and the finest one is missing");
	expect_refused("!{shard}/!{timestamp:yyyy}/!{esn_range}", KEYTMPL_DATA, NULL, NULL, 0,
		       "!{shard} at position 3");
	expect_refused("data/x=!{timestamp:yyyy}/x=!{timestamp:MM}/", KEYTMPL_DATA, NULL, NULL, 0,
		       "partition column 'x' at positions 20 and 40");
	expect_refused("data/!{timestamp:yyyy}/!{timestamp:yyyy}/", KEYTMPL_DATA, NULL, NULL, 0,
		       "timestamp field 'yyyy' at position 36");
	expect_refused("data/${x}/!{timestamp:yyyy}/", KEYTMPL_DATA, NULL, NULL, 0,
		       "'${' in the text at position 1");
	expect_refused("dt=!{partition:dt}/", KEYTMPL_DATA, "dt string, x int", NULL, 0,
		       "data column 'dt' has the name of a partition column");
	expect_refused("data/", KEYTMPL_DATA, "a string, b", NULL, 0, "column 'b' needs a type");
	expect_refused("data/", KEYTMPL_DATA, "a string, b varchar2", NULL, 0,
		       "'varchar2' is not a Hive type");
	expect_refused("data/", KEYTMPL_DATA, "a-b string", NULL, 0, "'a-b' is not a column name");
	expect_refused("data/", KEYTMPL_DATA, "a string, A int", NULL, 0, "'a' twice");
	expect_refused("r=!{partition:region}/", KEYTMPL_DATA, NULL, bad_enum, 1, "are not valid");
	expect_refused("!{partition:dt}/", KEYTMPL_DATA, NULL, bad_date, 1, "needs a year");
	expect_refused("!{partition:dt}/", KEYTMPL_DATA, NULL, bad_int, 1, "integer:LO,HI[:DIGITS]");
	expect_refused("!{partition:dt}/", KEYTMPL_DATA, NULL, bad_kind, 1, "unknown projection 'uuid'");
	/* A template keytmpl itself refuses comes back with its message. */
	expect_refused("data/!{partition:}/", KEYTMPL_DATA, NULL, NULL, 0, "missing partition key name");
	{
		struct athena_table_opts o = {
			.bucket = "lake", .template = "data/", .kind = KEYTMPL_DATA, .table = "t",
			.delimiter = "|", .start_ms = START_MS,
		};
		struct kl_errinfo info;
		struct buf out;

		buf_init(&out, 4096);
		kl_errinfo_clear(&info);
		CU_ASSERT_EQUAL(athena_table_ddl(&o, &out, &info), KL_ECONFIG);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "s3.delimiter"));
		o.delimiter = "\n";
		o.table = "bad-name";
		CU_ASSERT_EQUAL(athena_table_ddl(&o, &out, &info), KL_ECONFIG);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "table name 'bad-name'"));
		buf_done(&out);
	}
}

/* Runs athena_main with argv, stdout into a file; returns the exit code
 * and the output (caller frees). */
static int run_main(const char *const *args, char **ret_out)
{
	char path[] = "/tmp/kl-test-athena-out-XXXXXX";
	char *argv[32];
	int argc = 0, fd = mkstemp(path), saved, rc;
	FILE *f;
	long len;

	CU_ASSERT_FATAL(fd >= 0);
	argv[argc++] = (char *)"athena-ddl";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	fflush(stdout);
	saved = dup(1);
	dup2(fd, 1);
	rc = athena_main(argc, argv);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	f = fdopen(fd, "r");
	CU_ASSERT_FATAL(f != NULL);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	*ret_out = calloc(1, (size_t)len + 1);
	CU_ASSERT_FATAL(*ret_out != NULL);
	CU_ASSERT_EQUAL(fread(*ret_out, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	unlink(path);
	return rc;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	CU_ASSERT_FATAL(f != NULL);
	fputs(text, f);
	fclose(f);
	chmod(path, 0600);
}

static void test_command(void)
{
	char dir[] = "/tmp/kl-test-athena-XXXXXX", conf[128], bad[128], *out = NULL;
	struct ddl_table *t = calloc(1, sizeof(*t));
	const char *p;

	CU_ASSERT_FATAL(t != NULL);
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(conf, sizeof(conf), "%s/k.conf", dir);
	snprintf(bad, sizeof(bad), "%s/bad.conf", dir);
	write_file(conf, "application = \"Kinlake-Demo\"; stream = \"s\";\n"
			 "plugin = { name = \"clickstream\"; settings = { hour_key = \"hh\"; }; };\n"
			 "s3 = { bucket = \"lake\"; compression = \"zstd\";\n"
			 "  prefix = \"clicks/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hh}/\";\n"
			 "  error_prefix = \"errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/\"; };\n");
	write_file(bad, "application = \"app\"; stream = \"s\";\n"
			"s3 = { bucket = \"lake\"; prefix = \"data/!{timestamp:MM}-!{timestamp:dd}/\"; };\n");
	{
		const char *args[] = { "-c", conf, "--start", "2025-01-01", NULL };

		CU_ASSERT_EQUAL(run_main(args, &out), 0);
		p = out;
		CU_ASSERT_PTR_NULL_FATAL(ddl_parse(&p, t));
		CU_ASSERT_STRING_EQUAL(t->table, "kinlake_demo");
		CU_ASSERT_STRING_EQUAL(t->cols[0].name, "event_id");
		CU_ASSERT_STRING_EQUAL(t->location, "s3://lake/clicks/");
		/* The clickstream plugin's keys: a date and an hour. */
		CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.type"), "date");
		CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.range"), "2025-01-01,NOW");
		CU_ASSERT_STRING_EQUAL(prop(t, "projection.hour.type"), "integer");
		CU_ASSERT_STRING_EQUAL(prop(t, "projection.hour.digits"), "2");
		CU_ASSERT_STRING_EQUAL(prop(t, "compressionType"), "zstd");
		CU_ASSERT_PTR_NULL_FATAL(ddl_parse(&p, t));
		CU_ASSERT_STRING_EQUAL(t->table, "kinlake_demo_errors");
		CU_ASSERT_STRING_EQUAL(t->location, "s3://lake/errors/");
		CU_ASSERT_STRING_EQUAL(prop(t, "storage.location.template"),
				       "s3://lake/errors/${error_output_type}/dt=${dt}/");
		ddl_skip(&p);
		CU_ASSERT_EQUAL(*p, '\0');
		free(out);
	}
	{
		const char *args[] = { "-c", conf, "--database", "lake", "--table", "clicks",
				       "--columns", "a string", "--key", "dt=injected",
				       "--errors-only", "--error-table", "errs", NULL };

		CU_ASSERT_EQUAL(run_main(args, &out), 0);
		p = out;
		CU_ASSERT_PTR_NULL_FATAL(ddl_parse(&p, t));
		CU_ASSERT_STRING_EQUAL(t->database, "lake");
		CU_ASSERT_STRING_EQUAL(t->table, "errs");
		ddl_skip(&p);
		CU_ASSERT_EQUAL(*p, '\0');
		free(out);
	}
	{
		const char *args[] = { "-c", conf, "--data-only", "--table", "clicks", "--key",
				       "dt=injected", "--columns", "a string", NULL };

		CU_ASSERT_EQUAL(run_main(args, &out), 0);
		p = out;
		CU_ASSERT_PTR_NULL_FATAL(ddl_parse(&p, t));
		CU_ASSERT_STRING_EQUAL(t->table, "clicks");
		CU_ASSERT_EQUAL(t->n_cols, 1);
		/* --key comes before what the plugin is known to write. */
		CU_ASSERT_STRING_EQUAL(prop(t, "projection.dt.type"), "injected");
		ddl_skip(&p);
		CU_ASSERT_EQUAL(*p, '\0');
		free(out);
	}
	{
		const char *args[] = { "-c", bad, NULL };

		CU_ASSERT_EQUAL(run_main(args, &out), 78);
		CU_ASSERT_STRING_EQUAL(out, "");
		free(out);
	}
	{
		const char *args1[] = { "-c", conf, "--bogus", NULL };
		const char *args2[] = { "-c", conf, "--start", "yesterday", NULL };
		const char *args3[] = { "-c", conf, "--data-only", "--errors-only", NULL };

		CU_ASSERT_EQUAL(run_main(args1, &out), 64);
		free(out);
		CU_ASSERT_EQUAL(run_main(args2, &out), 64);
		free(out);
		CU_ASSERT_EQUAL(run_main(args3, &out), 64);
		free(out);
	}
	unlink(conf);
	unlink(bad);
	rmdir(dir);
	free(t);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_default_templates),
		KL_TEST(test_hive_layout),
		KL_TEST(test_plugin_keys),
		KL_TEST(test_custom_dates),
		KL_TEST(test_refused),
		KL_TEST(test_command),
		{ NULL, NULL },
	};

	return kl_test_run("athena", t);
}
