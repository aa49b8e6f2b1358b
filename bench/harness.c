/* SPDX-License-Identifier: Apache-2.0 */
/*
 * harness.c: the record-path benchmarks' shared scaffolding (see
 * harness.h). harness_run_body() is part of what they measure: it must
 * stay what the daemon's consumer does per record (scan, KPL decode,
 * plugin), with nothing added that the consumer does not do.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kinesis.h"

static const char *harness_prog = "bench";

void harness_init(const char *prog)
{
	harness_prog = prog;
}

void harness_die(const char *what)
{
	fprintf(stderr, "%s: %s\n", harness_prog, what);
	exit(1);
}

void harness_check(enum kl_err err, const char *what)
{
	if (err != KL_OK)
		harness_die(what);
}

void harness_check_info(enum kl_err err, const struct kl_errinfo *info, const char *what)
{
	char msg[700];

	if (err == KL_OK)
		return;
	fprintf(stderr, "%s: %s: %s\n", harness_prog, what,
		kl_errinfo_format(err, info, msg, sizeof(msg)));
	exit(1);
}

static double seconds(clockid_t clock)
{
	struct timespec t;

	clock_gettime(clock, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

double harness_cpu_now(void)
{
	return seconds(CLOCK_THREAD_CPUTIME_ID);
}

double harness_wall_now(void)
{
	return seconds(CLOCK_MONOTONIC);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double harness_median(const double *v, int n)
{
	double s[HARNESS_MAX_RUNS];

	if (n < 1 || n > HARNESS_MAX_RUNS)
		harness_die("harness_median: bad count");
	memcpy(s, v, (size_t)n * sizeof(*v));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

struct xform_plugin *harness_load_plugin(const char *builddir, const char *dir, const char *name)
{
	char src[4096], dst[4096], chunk[65536];
	struct xform_plugin *p = NULL;
	struct kl_errinfo info;
	int in, out;
	ssize_t n;

	snprintf(src, sizeof(src), "%s/plugins/%s/.libs/%s.so", builddir, name, name);
	snprintf(dst, sizeof(dst), "%s/%s.so", dir, name);
	in = open(src, O_RDONLY);
	if (in < 0) {
		fprintf(stderr, "%s: %s\n", src, strerror(errno));
		harness_die("build the plugins first");
	}
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	if (out < 0)
		harness_die("cannot stage the plugin");
	while ((n = read(in, chunk, sizeof(chunk))) > 0)
		if (write(out, chunk, (size_t)n) != n)
			harness_die("cannot stage the plugin");
	close(in);
	close(out);
	chmod(dst, 0755);
	harness_check_info(xform_plugin_load(dst, NULL, &info, &p), &info, "cannot load the plugin");
	unlink(dst);
	return p;
}

void harness_run_body(const struct buf *body, struct kpl_decoder *dec, struct xform *x,
		      const char *shard_id,
		      void (*fn)(void *arg, const struct kl_transform_record *rec,
				 const struct xform_result *res),
		      void *arg)
{
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;
	char keys[512];

	harness_check_info(kinesis_parse_get_records(body->data, body->len, &r, &info), &info,
			   "scanner");
	for (size_t i = 0; i < r->n_records; i++) {
		const struct kinesis_record *kr = &r->records[i];
		struct kpl_result kres;

		harness_check_info(kpl_decode(dec, kr->data, kr->data_len, NULL, &info, &kres), &info,
				   "kpl_decode");
		for (size_t j = 0; j < kres.nrecords; j++) {
			const struct kpl_record *ur = &kres.records[j];
			struct kl_transform_record t;
			struct xform_result res;

			memset(&t, 0, sizeof(t));
			t.data = ur->data;
			t.len = ur->len;
			t.partition_key = kr->partition_key;
			if (ur->partition_key && ur->partition_key_len < sizeof(keys)) {
				memcpy(keys, ur->partition_key, ur->partition_key_len);
				keys[ur->partition_key_len] = '\0';
				t.partition_key = keys;
			}
			t.sequence_number = kr->sequence_number;
			t.sub_sequence_number = ur->sub_sequence_number;
			t.shard_id = shard_id;
			t.approximate_arrival_ms = kr->arrival_ms;
			harness_check(xform_run(x, &t, &res), "xform_run");
			fn(arg, &t, &res);
		}
	}
	kinesis_records_free(r);
}
