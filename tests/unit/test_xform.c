/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_xform.c: the transform plugin host against real shared objects:
 * the built-in identity and clickstream plugins and the fixture plugins
 * (wrong ABI, too small descriptor, no entry symbol, flaky, crashing),
 * loaded from the build tree's .libs/ after being copied into a private
 * temporary directory (so the build tree's umask cannot matter). Covers
 * load errors and their text, permission refusal, settings checks, result
 * checking, shared instances, a crashing plugin in a forked child, and
 * `kinlake plugin test|list` end to end.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libconfig.h>

#include "buf.h"
#include "kpl.h"
#include "plugin_cmd.h"
#include "testutil.h"
#include "xform.h"

#ifndef KL_TEST_BUILDDIR
#error "KL_TEST_BUILDDIR must name the build tree"
#endif

#define FIXTURES "/tests/fixtures/plugins/.libs/"
#define ARRIVAL_MS 1735787045000LL /* 2025-01-02T03:04:05Z */

static char tmpdir[] = "/tmp/kl-test-xform-XXXXXX";

/* ------------------------------------------------------------ helpers */

/* Copies a built .so into dir/name with the given mode; returns the path. */
static char *stage_in(const char *dir, const char *rel, const char *name, mode_t mode)
{
	char src[4096], *dst = NULL, chunk[65536];
	int in, out;
	ssize_t n;

	snprintf(src, sizeof(src), "%s%s", KL_TEST_BUILDDIR, rel);
	CU_ASSERT_FATAL(asprintf(&dst, "%s/%s", dir, name) > 0);
	in = open(src, O_RDONLY);
	if (in < 0)
		fprintf(stderr, "cannot open %s: %s (build the fixtures first)\n", src, strerror(errno));
	CU_ASSERT_FATAL(in >= 0);
	unlink(dst);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0600);
	CU_ASSERT_FATAL(out >= 0);
	while ((n = read(in, chunk, sizeof(chunk))) > 0)
		CU_ASSERT_FATAL(write(out, chunk, (size_t)n) == n);
	close(in);
	close(out);
	CU_ASSERT_FATAL(chmod(dst, mode) == 0);
	return dst;
}

static char *stage(const char *rel, const char *name)
{
	return stage_in(tmpdir, rel, name, 0755);
}

static char *fixture(const char *name)
{
	char rel[256], file[128];

	snprintf(rel, sizeof(rel), FIXTURES "%s.so", name);
	snprintf(file, sizeof(file), "%s.so", name);
	return stage(rel, file);
}

static struct xform_plugin *load_ok(const char *path)
{
	struct xform_plugin *p = NULL;
	struct kl_errinfo info;

	kl_errinfo_clear(&info);
	if (xform_plugin_load(path, NULL, &info, &p) != KL_OK)
		fprintf(stderr, "load %s: %s\n", path, info.message);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	return p;
}

/* Creates an instance with settings parsed from text (NULL = none). */
static enum kl_err new_instance(struct xform_plugin *p, const char *text, struct kl_errinfo *info,
				struct xform **ret)
{
	config_t cfg;
	enum kl_err err;

	kl_errinfo_clear(info);
	config_init(&cfg);
	if (text)
		CU_ASSERT_EQUAL_FATAL(config_read_string(&cfg, text), CONFIG_TRUE);
	err = xform_new(p, text ? config_root_setting(&cfg) : NULL, info, ret);
	config_destroy(&cfg);
	return err;
}

static struct xform *new_ok(struct xform_plugin *p, const char *text)
{
	struct kl_errinfo info;
	struct xform *x = NULL;

	if (new_instance(p, text, &info, &x) != KL_OK)
		fprintf(stderr, "xform_new: %s\n", info.message);
	CU_ASSERT_PTR_NOT_NULL_FATAL(x);
	return x;
}

static struct xform_result run_at(struct xform *x, const char *data, int64_t arrival_ms)
{
	const struct kl_transform_record rec = {
		.data = (const uint8_t *)data,
		.len = strlen(data),
		.partition_key = "pk-1",
		.sequence_number = "49590338271490256608559692538361571095921575989136588898",
		.sub_sequence_number = 0,
		.shard_id = "shardId-000000000001",
		.approximate_arrival_ms = arrival_ms,
	};
	struct xform_result r;

	CU_ASSERT_EQUAL_FATAL(xform_run(x, &rec, &r), KL_OK);
	return r;
}

static struct xform_result run(struct xform *x, const char *data)
{
	return run_at(x, data, ARRIVAL_MS);
}

static bool output_is(const struct xform_result *r, size_t i, const char *data)
{
	return r->result == KL_TRANSFORM_OK && i < r->noutputs && r->outputs[i].len == strlen(data) &&
	       memcmp(r->outputs[i].data, data, r->outputs[i].len) == 0;
}

/* The value of partition key name on output i, or NULL. */
static const char *key_of(const struct xform_result *r, size_t i, const char *name)
{
	if (r->result != KL_TRANSFORM_OK || i >= r->noutputs)
		return NULL;
	for (size_t k = 0; k < r->outputs[i].nkeys; k++)
		if (strcmp(r->outputs[i].keys[k].name, name) == 0)
			return r->outputs[i].keys[k].value;
	return NULL;
}

static bool contains(const char *haystack, const char *needle)
{
	bool found = haystack && strstr(haystack, needle);

	if (!found)
		fprintf(stderr, "\n  expected '%s' in '%s'\n", needle, haystack ? haystack : "(null)");
	return found;
}

/* Expects loading path to fail with err and a message containing text. */
static void expect_load_error(const char *path, const char *search, enum kl_err err,
			      const char *text)
{
	struct xform_plugin *p = NULL;
	struct kl_errinfo info;

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(xform_plugin_load(path, search, &info, &p), err);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT(contains(info.message, text));
	xform_plugin_free(p);
}

/* ------------------------------------------------------------ loading */

static void test_identity(void)
{
	char *path = stage("/plugins/identity/.libs/identity.so", "identity.so");
	struct xform_plugin *p = load_ok(path);
	const struct kl_transform_plugin *d = xform_plugin_desc(p);
	struct xform *x = new_ok(p, NULL);
	struct xform_result r;
	const struct kl_transform_record bin = {
		.data = (const uint8_t *)"a\0b", .len = 3, .partition_key = "k",
		.sequence_number = "1", .shard_id = "s",
	};

	CU_ASSERT_STRING_EQUAL(d->name, "identity");
	CU_ASSERT_EQUAL(d->abi_major, KL_TRANSFORM_ABI_MAJOR);
	CU_ASSERT(d->flags & KL_TRANSFORM_F_THREAD_SAFE);
	CU_ASSERT_STRING_EQUAL(xform_plugin_path(p), path);
	r = run(x, "hello");
	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_OK);
	CU_ASSERT_EQUAL(r.noutputs, 1);
	CU_ASSERT(output_is(&r, 0, "hello"));
	CU_ASSERT_EQUAL(r.outputs[0].nkeys, 0);
	CU_ASSERT_PTR_NULL(r.reason);
	/* Binary data with a NUL survives. */
	CU_ASSERT_EQUAL_FATAL(xform_run(x, &bin, &r), KL_OK);
	CU_ASSERT_EQUAL_FATAL(r.noutputs, 1);
	CU_ASSERT_EQUAL(r.outputs[0].len, 3);
	CU_ASSERT_EQUAL(memcmp(r.outputs[0].data, "a\0b", 3), 0);
	r = run(x, "");
	CU_ASSERT(output_is(&r, 0, ""));
	CU_ASSERT_EQUAL(xform_get_stats(x)->records, 3);
	CU_ASSERT_EQUAL(xform_get_stats(x)->ok, 3);
	CU_ASSERT_EQUAL(xform_get_stats(x)->outputs, 3);
	xform_free(x);
	xform_plugin_free(p);
	free(path);
}

static void test_load_by_name(void)
{
	char *path = stage("/plugins/identity/.libs/identity.so", "identity.so");
	char search[512];
	struct xform_plugin *p = NULL;
	struct kl_errinfo info;

	snprintf(search, sizeof(search), "/nonexistent/kinlake:%s", tmpdir);
	CU_ASSERT_EQUAL_FATAL(xform_plugin_load("identity", search, &info, &p), KL_OK);
	CU_ASSERT_STRING_EQUAL(xform_plugin_path(p), path);
	xform_plugin_free(p);
	expect_load_error("nosuch", search, KL_ENOTFOUND, "no nosuch.so in /nonexistent/kinlake:");
	expect_load_error("bad name", search, KL_EINVAL, "plugin name 'bad name'");
	expect_load_error("", search, KL_EINVAL, "no name or path");
	free(path);
}

static void test_fixture_wrong_abi(void)
{
	char *path = fixture("fx_wrong_abi");

	expect_load_error(path, NULL, KL_EPLUGIN, "was built for transform ABI 99.3 but this kinlake "
			  "supports ABI 1.x");
	free(path);
}

static void test_fixture_small_struct(void)
{
	char *path = fixture("fx_small_struct");

	expect_load_error(path, NULL, KL_EPLUGIN, "descriptor is 24 bytes, smaller than the");
	free(path);
}

static void test_fixture_no_entry(void)
{
	char *path = fixture("fx_no_entry");

	expect_load_error(path, NULL, KL_EPLUGIN,
			  "has no entry symbol kinlake_transform_plugin() (is it a kinlake "
			  "transform plugin?)");
	expect_load_error(path, NULL, KL_EPLUGIN, "undefined symbol: kinlake_transform_plugin");
	free(path);
}

static void test_dlopen_errors(void)
{
	char *bogus = NULL;
	FILE *f;

	CU_ASSERT_FATAL(asprintf(&bogus, "%s/bogus.so", tmpdir) > 0);
	f = fopen(bogus, "w");
	CU_ASSERT_FATAL(f != NULL);
	for (int i = 0; i < 16; i++)
		fputs("this is not an ELF object\n", f);
	fclose(f);
	CU_ASSERT_FATAL(chmod(bogus, 0755) == 0);
	expect_load_error(bogus, NULL, KL_EPLUGIN, "cannot be loaded: ");
	expect_load_error(bogus, NULL, KL_EPLUGIN, "invalid ELF header");
	expect_load_error("/nonexistent/dir/x.so", NULL, KL_ENOTFOUND, "No such file");
	/* A directory is not a plugin. */
	expect_load_error(tmpdir, NULL, KL_EPLUGIN, "is not a regular file");
	unlink(bogus);
	free(bogus);
}

static void test_permissions(void)
{
	char *dir = NULL, *path, *lndir = NULL, *lnpath = NULL;
	struct xform_plugin *p = NULL;
	struct kl_errinfo info;

	CU_ASSERT_FATAL(asprintf(&dir, "%s/perm", tmpdir) > 0);
	CU_ASSERT_FATAL(mkdir(dir, 0755) == 0);
	path = stage_in(dir, "/plugins/identity/.libs/identity.so", "identity.so", 0755);
	CU_ASSERT_EQUAL(xform_check_perms(path, &info), KL_OK);

	/* A group-writable file. */
	CU_ASSERT_FATAL(chmod(path, 0775) == 0);
	expect_load_error(path, NULL, KL_EPLUGIN, "file '");
	expect_load_error(path, NULL, KL_EPLUGIN, "is writable by its group (mode 0775)");
	CU_ASSERT_FATAL(chmod(path, 0757) == 0);
	expect_load_error(path, NULL, KL_EPLUGIN, "is writable by others (mode 0757)");
	CU_ASSERT_FATAL(chmod(path, 0777) == 0);
	expect_load_error(path, NULL, KL_EPLUGIN, "writable by group and others");
	CU_ASSERT_FATAL(chmod(path, 0755) == 0);

	/* A group-writable directory, also when the plugin is looked up by name. */
	CU_ASSERT_FATAL(chmod(dir, 0775) == 0);
	expect_load_error(path, NULL, KL_EPLUGIN, "directory '");
	expect_load_error("identity", dir, KL_EPLUGIN, "is writable by its group (mode 0775)");
	CU_ASSERT_FATAL(chmod(dir, 0755) == 0);

	/* Once fixed it loads. */
	CU_ASSERT_EQUAL(xform_plugin_load(path, NULL, &info, &p), KL_OK);
	xform_plugin_free(p);

	/* A symlink in a world-writable directory to a good file. */
	CU_ASSERT_FATAL(asprintf(&lndir, "%s/links", tmpdir) > 0);
	CU_ASSERT_FATAL(mkdir(lndir, 0755) == 0);
	CU_ASSERT_FATAL(chmod(lndir, 0777) == 0);
	CU_ASSERT_FATAL(asprintf(&lnpath, "%s/identity.so", lndir) > 0);
	CU_ASSERT_FATAL(symlink(path, lnpath) == 0);
	expect_load_error(lnpath, NULL, KL_EPLUGIN, "/links' is writable by group and others");
	CU_ASSERT_FATAL(chmod(lndir, 0755) == 0);
	CU_ASSERT_EQUAL(xform_plugin_load(lnpath, NULL, &info, &p), KL_OK);
	/* The resolved path is the link's target. */
	CU_ASSERT_EQUAL(xform_check_perms(lnpath, &info), KL_OK);
	xform_plugin_free(p);

	free(lnpath);
	free(lndir);
	free(path);
	free(dir);
}

/* ------------------------------------------------------------ instances */

static void test_flaky_results(void)
{
	char *path = fixture("fx_flaky");
	struct xform_plugin *p = load_ok(path);
	struct xform *x = new_ok(p, NULL);
	struct xform_result r;

	r = run(x, "one");
	CU_ASSERT(output_is(&r, 0, "one"));
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "n"), "1");
	r = run(x, "two");
	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_FAILED);
	CU_ASSERT_STRING_EQUAL(r.reason, "flaky: record 2 fails");
	CU_ASSERT_EQUAL(r.noutputs, 0);
	CU_ASSERT_PTR_NULL(r.outputs);
	r = run(x, "three");
	CU_ASSERT(output_is(&r, 0, "three"));
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "n"), "3");
	r = run(x, "four");
	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_FAILED);
	CU_ASSERT_STRING_EQUAL(r.reason, "flaky: record 4 fails");
	CU_ASSERT_EQUAL(xform_get_stats(x)->ok, 2);
	CU_ASSERT_EQUAL(xform_get_stats(x)->failed, 2);
	CU_ASSERT_EQUAL(xform_get_stats(x)->records, 4);
	xform_free(x);

	/* FAILED without a reason gets one; an invalid result is FAILED. */
	x = new_ok(p, "fail_without_reason = true;");
	run(x, "a");
	r = run(x, "b");
	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_FAILED);
	CU_ASSERT_STRING_EQUAL(r.reason, "no reason given by plugin");
	xform_free(x);
	x = new_ok(p, "bad_result = 7;");
	run(x, "a");
	r = run(x, "b");
	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_FAILED);
	CU_ASSERT_STRING_EQUAL(r.reason, "plugin returned an invalid result (7)");
	xform_free(x);

	/* The output cap turns an OK into FAILED. */
	x = new_ok(p, NULL);
	xform_set_output_cap(x, 10);
	r = run(x, "this record is longer than ten bytes");
	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_FAILED);
	CU_ASSERT(contains(r.reason, "exceeded the cap of 10 bytes"));
	xform_free(x);
	xform_plugin_free(p);
	free(path);
}

static void test_settings_checked(void)
{
	char *flaky = fixture("fx_flaky");
	char *ident = stage("/plugins/identity/.libs/identity.so", "identity.so");
	struct xform_plugin *p = load_ok(flaky), *id = load_ok(ident);
	struct kl_errinfo info;
	struct xform *x = NULL;
	config_t cfg;

	CU_ASSERT_EQUAL(new_instance(p, "fail_without_reason = true;\nbogus = 1;\n", &info, &x),
			KL_ECONFIG);
	CU_ASSERT(contains(info.message, "plugin fx_flaky: line 2: unknown setting 'bogus'"));
	CU_ASSERT_EQUAL(new_instance(p, "\nfail_without_reason = \"yes\";\n", &info, &x), KL_ECONFIG);
	CU_ASSERT(contains(info.message, "line 2: setting 'fail_without_reason' must be true or false"));
	CU_ASSERT_EQUAL(new_instance(p, "bad_result = 1.5;", &info, &x), KL_ECONFIG);
	CU_ASSERT(contains(info.message, "setting 'bad_result' must be an integer"));
	/* identity takes no settings at all. */
	CU_ASSERT_EQUAL(new_instance(id, "anything = 1;", &info, &x), KL_ECONFIG);
	CU_ASSERT(contains(info.message, "unknown setting 'anything'"));
	CU_ASSERT_PTR_NULL(x);

	/* Settings must be a group. */
	config_init(&cfg);
	CU_ASSERT_EQUAL_FATAL(config_read_string(&cfg, "v = 1;"), CONFIG_TRUE);
	CU_ASSERT_EQUAL(xform_new(p, config_lookup(&cfg, "v"), &info, &x), KL_ECONFIG);
	CU_ASSERT(contains(info.message, "settings must be a group"));
	config_destroy(&cfg);

	xform_plugin_free(p);
	xform_plugin_free(id);
	free(flaky);
	free(ident);
}

static void test_share(void)
{
	char *ident = stage("/plugins/identity/.libs/identity.so", "identity.so");
	char *flaky = fixture("fx_flaky");
	struct xform_plugin *id = load_ok(ident), *fl = load_ok(flaky);
	struct xform *x = new_ok(id, NULL), *y = NULL, *z = new_ok(fl, NULL), *w = NULL;
	struct kl_errinfo info;
	struct xform_result r, q;

	CU_ASSERT_EQUAL_FATAL(xform_share(x, &info, &y), KL_OK);
	/* Each handle has its own arena: results of one survive a run on the other. */
	r = run(x, "from x");
	q = run(y, "from y");
	CU_ASSERT(output_is(&q, 0, "from y"));
	CU_ASSERT(output_is(&r, 0, "from x"));
	xform_free(x);
	q = run(y, "still");
	CU_ASSERT(output_is(&q, 0, "still"));
	xform_free(y);

	CU_ASSERT_EQUAL(xform_share(z, &info, &w), KL_ESTATE);
	CU_ASSERT(contains(info.message, "plugin fx_flaky is not thread-safe"));
	CU_ASSERT_PTR_NULL(w);
	xform_free(z);
	xform_plugin_free(id);
	xform_plugin_free(fl);
	free(ident);
	free(flaky);
}

/* Runs data through a fresh instance of plugin p in a child; returns the
 * wait status. The child exits 0 only if the call returned. */
static int run_in_child(struct xform_plugin *p, const char *data)
{
	struct rlimit no_core = { 0, 0 };
	int status = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct xform *x = NULL;
		struct kl_errinfo info;
		struct xform_result r;
		const struct kl_transform_record rec = {
			.data = (const uint8_t *)data, .len = strlen(data), .partition_key = "k",
			.sequence_number = "1", .shard_id = "s",
		};
		int devnull = open("/dev/null", O_WRONLY);

		setrlimit(RLIMIT_CORE, &no_core);
		if (devnull >= 0)
			dup2(devnull, STDERR_FILENO); /* the sanitizer's crash report */
		if (xform_new(p, NULL, &info, &x) != KL_OK || xform_run(x, &rec, &r) != KL_OK)
			_exit(3);
		_exit(r.result == KL_TRANSFORM_OK ? 0 : 4);
	}
	CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
	return status;
}

static void test_crash_in_child(void)
{
	char *path = fixture("fx_crash");
	struct xform_plugin *p = load_ok(path);
	struct xform *x = new_ok(p, NULL);
	struct xform_result r;
	int st;

	/* Control: an ordinary record returns, in a child and here. */
	st = run_in_child(p, "ordinary");
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	r = run(x, "ordinary");
	CU_ASSERT(output_is(&r, 0, "ordinary"));

	st = run_in_child(p, "xx CRASH_ABORT yy");
	CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);

	/* SIGSEGV, or the sanitizer's abort/exit after reporting it. */
	st = run_in_child(p, "CRASH_SEGV");
	CU_ASSERT((WIFSIGNALED(st) && (WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGABRT)) ||
		  (WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 4));

	/* The parent's instance is untouched. */
	r = run(x, "after");
	CU_ASSERT(output_is(&r, 0, "after"));
	xform_free(x);
	xform_plugin_free(p);
	free(path);
}

/* ------------------------------------------------------------ clickstream */

static struct xform_plugin *clickstream(char **ret_path)
{
	*ret_path = stage("/plugins/clickstream/.libs/clickstream.so", "clickstream.so");
	return load_ok(*ret_path);
}

static void test_clickstream_ok_and_keys(void)
{
	char *path;
	struct xform_plugin *p = clickstream(&path);
	struct xform *x = new_ok(p, NULL);
	struct xform_result r;

	CU_ASSERT_EQUAL(xform_plugin_desc(p)->flags & KL_TRANSFORM_F_THREAD_SAFE, 0);
	r = run(x, "{ \"event\": \"view\", \"user_agent\": \"Mozilla/5.0\", "
		   "\"timestamp\": \"2026-11-21T09:15:30Z\" }\n");
	CU_ASSERT(output_is(&r, 0, "{\"event\":\"view\",\"user_agent\":\"Mozilla/5.0\","
				 "\"timestamp\":\"2026-11-21T09:15:30Z\"}"));
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "dt"), "2026-11-21");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "hour"), "09");

	/* Epoch milliseconds, as a number and as a string. */
	r = run(x, "{\"timestamp\": 1763716530000}");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "dt"), "2025-11-21");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "hour"), "09");
	r = run(x, "{\"timestamp\": \"1763716530000\"}");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "dt"), "2025-11-21");
	/* A zone offset moves the hour and the day. */
	r = run(x, "{\"timestamp\": \"2026-11-21T22:30:00.123-08:00\"}");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "dt"), "2026-11-22");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "hour"), "06");
	r = run(x, "{\"timestamp\": \"2024-02-29\"}");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "dt"), "2024-02-29");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "hour"), "00");

	/* No timestamp field (or null): the arrival time. */
	r = run(x, "{\"event\": \"click\"}");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "dt"), "2025-01-02");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "hour"), "03");
	r = run_at(x, "{\"event\": \"click\", \"timestamp\": null}", 1709251199000LL);
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "dt"), "2024-02-29");
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "hour"), "23");

	/* Strings are trimmed, nested ones too. */
	r = run(x, "{\"event\": \"  view\\t\", \"page\": {\"title\": \" Home \"}, \"n\": [\" a\"]}");
	CU_ASSERT(output_is(&r, 0, "{\"event\":\"view\",\"page\":{\"title\":\"Home\"},\"n\":[\"a\"]}"));
	xform_free(x);
	xform_plugin_free(p);
	free(path);
}

static void test_clickstream_bots(void)
{
	char *path;
	struct xform_plugin *p = clickstream(&path);
	struct xform *x = new_ok(p, NULL);
	struct xform_result r;

	r = run(x, "{\"user_agent\": \"Mozilla/5.0 (compatible; Googlebot/2.1)\"}");
	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_DROPPED);
	CU_ASSERT_EQUAL(run(x, "{\"user_agent\": \"Baiduspider\"}").result, KL_TRANSFORM_DROPPED);
	CU_ASSERT_EQUAL(run(x, "{\"user_agent\": \"Mozilla/5.0 HeadlessChrome/120\"}").result,
			KL_TRANSFORM_DROPPED);
	CU_ASSERT_EQUAL(run(x, "{\"user_agent\": \"Mozilla/5.0 (X11; Linux)\"}").result,
			KL_TRANSFORM_OK);
	CU_ASSERT_EQUAL(xform_get_stats(x)->dropped, 3);
	xform_free(x);

	/* A configured list replaces the defaults; a renamed field is checked. */
	x = new_ok(p, "bot_patterns = [\"Monitor\"]; user_agent_field = \"ua\";");
	CU_ASSERT_EQUAL(run(x, "{\"ua\": \"Googlebot\"}").result, KL_TRANSFORM_OK);
	CU_ASSERT_EQUAL(run(x, "{\"ua\": \"uptime-monitor/1\"}").result, KL_TRANSFORM_DROPPED);
	CU_ASSERT_EQUAL(run(x, "{\"user_agent\": \"uptime-monitor/1\"}").result, KL_TRANSFORM_OK);
	xform_free(x);
	xform_plugin_free(p);
	free(path);
}

static void expect_failed(struct xform *x, const char *data, const char *reason)
{
	struct xform_result r = run(x, data);

	CU_ASSERT_EQUAL(r.result, KL_TRANSFORM_FAILED);
	CU_ASSERT(contains(r.reason, reason));
}

static void test_clickstream_malformed(void)
{
	char *path;
	struct xform_plugin *p = clickstream(&path);
	struct xform *x = new_ok(p, "required_fields = [\"user_id\", \"event\"];");

	expect_failed(x, "", "empty record");
	expect_failed(x, "{not json", "invalid JSON at byte");
	expect_failed(x, "{\"user_id\": \"u", "unexpected end of input");
	expect_failed(x, "{\"user_id\": \"u\", \"event\": \"e\"} trailing", "invalid JSON");
	expect_failed(x, "{\"user_id\": \"u\", \"event\": \"e\",}", "invalid JSON");
	expect_failed(x, "{\"user_id\": \"\xff\", \"event\": \"e\"}", "invalid JSON");
	expect_failed(x, "[1, 2]", "event is a JSON array, not an object");
	expect_failed(x, "\"text\"", "event is a JSON string, not an object");
	expect_failed(x, "{\"event\": \"e\"}", "missing required field 'user_id'");
	expect_failed(x, "{\"user_id\": \"   \", \"event\": \"e\"}", "missing required field 'user_id'");
	expect_failed(x, "{\"user_id\": null, \"event\": \"e\"}", "missing required field 'user_id'");
	expect_failed(x, "{\"user_id\": \"u\", \"event\": \"e\", \"timestamp\": \"yesterday\"}",
		      "timestamp field 'timestamp' is neither ISO-8601 nor epoch milliseconds");
	expect_failed(x, "{\"user_id\": \"u\", \"event\": \"e\", \"timestamp\": \"2026-02-30T00:00:00Z\"}",
		      "neither ISO-8601");
	expect_failed(x, "{\"user_id\": \"u\", \"event\": \"e\", \"timestamp\": \"2026-01-01T24:00:00Z\"}",
		      "neither ISO-8601");
	expect_failed(x, "{\"user_id\": \"u\", \"event\": \"e\", \"timestamp\": -5}", "out of range");
	expect_failed(x, "{\"user_id\": \"u\", \"event\": \"e\", \"timestamp\": true}", "neither ISO");
	/* Bots are dropped before the required fields are checked. */
	CU_ASSERT_EQUAL(run(x, "{\"user_agent\": \"crawler\"}").result, KL_TRANSFORM_DROPPED);
	CU_ASSERT_EQUAL(run(x, "{\"user_id\": \"u\", \"event\": \"e\"}").result, KL_TRANSFORM_OK);
	CU_ASSERT_EQUAL(xform_get_stats(x)->failed, 16);
	xform_free(x);
	xform_plugin_free(p);
	free(path);
}

static void test_clickstream_settings(void)
{
	char *path;
	struct xform_plugin *p = clickstream(&path);
	struct kl_errinfo info;
	struct xform *x = NULL;
	struct xform_result r;

	x = new_ok(p, "renames = [\"uid=user_id\", \"ts=timestamp\"];\n"
		      "required_fields = \"user_id\";\n"
		      "trim = false;\n"
		      "date_key = \"date\"; hour_key = \"\";\n");
	r = run(x, "{\"uid\": \" u1 \", \"ts\": \"2026-03-01T12:00:00+01:00\"}");
	CU_ASSERT(output_is(&r, 0, "{\"user_id\":\" u1 \",\"timestamp\":\"2026-03-01T12:00:00+01:00\"}"));
	CU_ASSERT_STRING_EQUAL(key_of(&r, 0, "date"), "2026-03-01");
	CU_ASSERT_PTR_NULL(key_of(&r, 0, "hour"));
	CU_ASSERT_PTR_NULL(key_of(&r, 0, "dt"));
	expect_failed(x, "{\"uid\": \"a\", \"user_id\": \"b\"}",
		      "cannot rename 'uid' to 'user_id': both are present");
	expect_failed(x, "{\"ts\": 1}", "missing required field 'user_id'");
	xform_free(x);

	CU_ASSERT_EQUAL(new_instance(p, "renames = [\"nope\"];", &info, &x), KL_EPLUGIN);
	CU_ASSERT(contains(info.message, "plugin clickstream: init failed: renames: entry 'nope' "
			   "is not \"from=to\""));
	CU_ASSERT_EQUAL(new_instance(p, "trim = \"yes\";", &info, &x), KL_ECONFIG);
	CU_ASSERT(contains(info.message, "setting 'trim' must be true or false"));
	CU_ASSERT_EQUAL(new_instance(p, "bot_patterns = [1, 2];", &info, &x), KL_ECONFIG);
	CU_ASSERT(contains(info.message, "setting 'bot_patterns' must be a list of strings"));
	CU_ASSERT_EQUAL(new_instance(p, "bot_patterns = [\"\"];", &info, &x), KL_EPLUGIN);
	CU_ASSERT(contains(info.message, "empty pattern"));
	CU_ASSERT_EQUAL(new_instance(p, "timestamp = \"ts\";", &info, &x), KL_ECONFIG);
	CU_ASSERT(contains(info.message, "unknown setting 'timestamp'"));
	xform_plugin_free(p);
	free(path);
}

/* ------------------------------------------------------------ kinlake plugin */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	struct buf b;
	char chunk[4096];
	size_t n;

	buf_init(&b, 0);
	CU_ASSERT_FATAL(f != NULL);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		CU_ASSERT_FATAL(buf_append(&b, chunk, n) == KL_OK);
	fclose(f);
	return buf_steal(&b);
}

/* Runs plugin_cmd_main(argv) in a child with stdin = in; returns its exit
 * code and what it wrote to stdout and stderr (caller frees). */
static int run_cmd(char **argv, const void *in, size_t in_len, char **ret_out, char **ret_err)
{
	char inp[512], outp[512], errp[512];
	int argc = 0, status = 0, fd;
	pid_t pid;

	while (argv[argc])
		argc++;
	snprintf(inp, sizeof(inp), "%s/cmd.in", tmpdir);
	snprintf(outp, sizeof(outp), "%s/cmd.out", tmpdir);
	snprintf(errp, sizeof(errp), "%s/cmd.err", tmpdir);
	fd = open(inp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CU_ASSERT_FATAL(fd >= 0 && write(fd, in, in_len) == (ssize_t)in_len);
	close(fd);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		int i = open(inp, O_RDONLY);
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (i < 0 || o < 0 || e < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(120);
		close(i);
		close(o);
		close(e);
		exit(plugin_cmd_main(argc, argv));
	}
	CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
	*ret_out = slurp(outp);
	*ret_err = slurp(errp);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_cmd_test_lines(void)
{
	char *path = stage("/plugins/clickstream/.libs/clickstream.so", "clickstream.so");
	char *conf = NULL, *out, *err;
	const char *input = "{\"event\":\"a\",\"timestamp\":\"2026-11-21T09:00:00Z\"}\n"
			    "{\"user_agent\":\"SomeBot\"}\n"
			    "not json\n"
			    "{\"event\":\"b\"}";
	FILE *f;
	int rc;

	CU_ASSERT_FATAL(asprintf(&conf, "%s/cs.conf", tmpdir) > 0);
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs("# clickstream settings\nrequired_fields = [\"event\"];\n", f);
	fclose(f);
	{
		char *argv[] = { "plugin", "test", "clickstream", "--config", conf,
				 "--plugin-path", tmpdir, "--arrival-ms", "1735787045000", NULL };

		rc = run_cmd(argv, input, strlen(input), &out, &err);
	}
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT(contains(out, "1 OK\n  -> dt=2026-11-21 hour=09 "
			   "{\"event\":\"a\",\"timestamp\":\"2026-11-21T09:00:00Z\"}\n"
			   "2 DROPPED\n"
			   "3 FAILED invalid JSON at byte"));
	CU_ASSERT(contains(out, "4 OK\n  -> dt=2025-01-02 hour=03 {\"event\":\"b\"}\n"));
	CU_ASSERT(contains(err, "plugin clickstream: 4 input(s), 4 record(s): 2 OK (2 output(s)), "
			   "1 DROPPED, 1 FAILED"));
	free(out);
	free(err);

	/* A config error names the file and line. */
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs("trim = true;\nunknown_key = 3;\n", f);
	fclose(f);
	{
		char *argv[] = { "plugin", "test", path, "--config", conf, NULL };

		rc = run_cmd(argv, "", 0, &out, &err);
	}
	CU_ASSERT_EQUAL(rc, 1);
	CU_ASSERT(contains(err, "cs.conf:2: unknown setting 'unknown_key'"));
	free(out);
	free(err);
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs("trim = true\n = 3;\n", f);
	fclose(f);
	{
		char *argv[] = { "plugin", "test", path, "--config", conf, NULL };

		rc = run_cmd(argv, "", 0, &out, &err);
	}
	CU_ASSERT_EQUAL(rc, 1);
	CU_ASSERT(contains(err, "cs.conf:2: syntax error"));
	free(out);
	free(err);
	unlink(conf);
	free(conf);
	free(path);
}

static void test_cmd_test_binary_kpl(void)
{
	char *path = stage("/plugins/identity/.libs/identity.so", "identity.so");
	const struct kpl_enc_record recs[] = {
		{ .partition_key = "p1", .data = "first", .len = 5 },
		{ .partition_key = "p2", .data = "bin\001\n", .len = 5 },
	};
	char *argv[] = { "plugin", "test", path, "--binary", NULL };
	char *out, *err;
	struct buf agg;
	int rc;

	buf_init(&agg, 0);
	CU_ASSERT_EQUAL_FATAL(kpl_encode(recs, 2, &agg), KL_OK);
	rc = run_cmd(argv, agg.data, agg.len, &out, &err);
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT(contains(out, "1.0 OK\n  -> first\n1.1 OK\n  -> bin\\x01\\n\n"));
	CU_ASSERT(contains(err, "1 input(s), 2 record(s): 2 OK"));
	free(out);
	free(err);
	buf_done(&agg);
	free(path);
}

static void test_cmd_errors_and_list(void)
{
	char *ident = stage("/plugins/identity/.libs/identity.so", "identity.so");
	char *wrong = fixture("fx_wrong_abi");
	char *out, *err;
	int rc;

	{
		char *argv[] = { "plugin", NULL };

		CU_ASSERT_EQUAL(run_cmd(argv, "", 0, &out, &err), 64);
		CU_ASSERT(contains(err, "usage: kinlake plugin test"));
		free(out);
		free(err);
	}
	{
		char *argv[] = { "plugin", "test", "--binary", NULL };

		CU_ASSERT_EQUAL(run_cmd(argv, "", 0, &out, &err), 64);
		CU_ASSERT(contains(err, "needs a plugin name or path"));
		free(out);
		free(err);
	}
	{
		char *argv[] = { "plugin", "test", wrong, NULL };

		CU_ASSERT_EQUAL(run_cmd(argv, "", 0, &out, &err), 1);
		CU_ASSERT(contains(err, "was built for transform ABI 99.3"));
		free(out);
		free(err);
	}
	{
		char *argv[] = { "plugin", "test", "nosuch", "--plugin-path", tmpdir, NULL };

		CU_ASSERT_EQUAL(run_cmd(argv, "", 0, &out, &err), 1);
		CU_ASSERT(contains(err, "plugin 'nosuch' not found"));
		free(out);
		free(err);
	}
	{
		char *argv[] = { "plugin", "list", "--plugin-path", tmpdir, NULL };

		rc = run_cmd(argv, "", 0, &out, &err);
		CU_ASSERT_EQUAL(rc, 0);
		CU_ASSERT(contains(out, "identity         1.0        ABI 1.0  thread-safe "));
		CU_ASSERT(contains(out, "fx_wrong_abi     UNUSABLE: plugin '"));
		free(out);
		free(err);
	}
	free(ident);
	free(wrong);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_identity),
		KL_TEST(test_load_by_name),
		KL_TEST(test_fixture_wrong_abi),
		KL_TEST(test_fixture_small_struct),
		KL_TEST(test_fixture_no_entry),
		KL_TEST(test_dlopen_errors),
		KL_TEST(test_permissions),
		KL_TEST(test_flaky_results),
		KL_TEST(test_settings_checked),
		KL_TEST(test_share),
		KL_TEST(test_crash_in_child),
		KL_TEST(test_clickstream_ok_and_keys),
		KL_TEST(test_clickstream_bots),
		KL_TEST(test_clickstream_malformed),
		KL_TEST(test_clickstream_settings),
		KL_TEST(test_cmd_test_lines),
		KL_TEST(test_cmd_test_binary_kpl),
		KL_TEST(test_cmd_errors_and_list),
		{ 0 },
	};
	int rc;

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	/* The plugin host refuses group/other-writable directories. */
	chmod(tmpdir, 0755);
	rc = kl_test_run("xform", t);
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
