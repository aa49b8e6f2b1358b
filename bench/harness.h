/* SPDX-License-Identifier: Apache-2.0 */
/*
 * harness.h: what the record-path benchmarks (bench_recordpath,
 * bench_compress) share around the code they measure: dying on an error,
 * the thread's CPU clock and the wall clock, medians, staging a built
 * plugin, and the record path up to the plugin's result. Nothing here is
 * thread-safe; built into the benches only.
 */
#ifndef KL_BENCH_HARNESS_H
#define KL_BENCH_HARNESS_H

#include "buf.h"
#include "kl_err.h"
#include "kpl.h"
#include "xform.h"

#define HARNESS_MAX_RUNS 51            /* values harness_median() takes, at most */

/* Names the program in harness_die()'s messages (borrowed: a literal). */
void harness_init(const char *prog);

/* Prints "<prog>: what" and exits 1. */
void harness_die(const char *what) __attribute__((noreturn));

/* harness_die(what) unless err is KL_OK; _info adds what info says. */
void harness_check(enum kl_err err, const char *what);
void harness_check_info(enum kl_err err, const struct kl_errinfo *info, const char *what);

/* Seconds of CPU time of the calling thread; seconds of CLOCK_MONOTONIC. */
double harness_cpu_now(void);
double harness_wall_now(void);

/* The median of v[0..n), 1 <= n <= HARNESS_MAX_RUNS; v is not changed. */
double harness_median(const double *v, int n);

/*
 * Loads the plugin `name` built in builddir (plugins/NAME/.libs/NAME.so),
 * staged through a copy in dir (the caller's own directory: the host
 * refuses group-writable plugin directories; the copy is removed). Dies
 * on failure. The caller frees it with xform_plugin_free().
 */
struct xform_plugin *harness_load_plugin(const char *builddir, const char *dir, const char *name);

/*
 * The record path up to the plugin: scans one GetRecords body, decodes
 * every record with dec (KPL aggregates included), runs each user record
 * of shard shard_id through x, and calls fn(arg, rec, res) with the
 * record the plugin saw and its result (both borrowed for the call).
 * Dies on any error.
 */
void harness_run_body(const struct buf *body, struct kpl_decoder *dec, struct xform *x,
		      const char *shard_id,
		      void (*fn)(void *arg, const struct kl_transform_record *rec,
				 const struct xform_result *res),
		      void *arg);

#endif
