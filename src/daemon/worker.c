/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker.c: the worker process. Three kinds of threads (README.md):
 *  - the lease thread ticks the coordinator whenever it is due and does
 *    nothing else, so record processing can never delay a renewal;
 *  - one shard thread per granted lease runs the consumer (GetRecords,
 *    KPL, plugin, S3 delivery) with its own AWS clients and plugin handle;
 *  - the main thread dispatches grants to shard threads, reaps them, waits
 *    for signals with sigtimedwait() (no handlers), writes metrics and
 *    talks to systemd.
 *
 * Invariants: a grant (key, token) gets at most one thread; a thread whose
 * token is no longer granted is asked to stop at once; nothing is released
 * while its consumer may still write; the main thread is the only one that
 * touches the list of shard threads.
 */
#include "config.h"

#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>   /* mallopt(M_ARENA_MAX) */
#endif

#include "agg.h"
#include "cfg.h"
#include "consumer_kinesis.h"
#include "creds.h"
#include "delivery.h"
#include "http.h"
#include "journal.h"
#include "keytmpl.h"
#include "lease_shards_kinesis.h"
#include "lease_store_ddb.h"
#include "log.h"
#include "notify.h"
#include "poison.h"
#include "spool.h"
#include "util.h"
#include "xform.h"

#define WORKER_DEFAULT_RETRY_MS 30000
#define WORKER_HARD_STOP_MARGIN_MS 5000

struct worker_shard {
	struct worker *w;
	struct lease_grant *grant;      /* owned (a one-element array) */
	void *ctx;                      /* env.new_shard_ctx's */
	pthread_t thread;
	atomic_bool done;
	enum consumer_state final;      /* valid once done */
	bool failed;                    /* runner could not start (set before done) */
	char failed_why[512];
	bool loss_logged;               /* main thread */
	char last_error[256];           /* main thread: the consumer error last logged */

	pthread_mutex_t mu;             /* guards what follows */
	struct consumer *consumer;
	bool stop_requested;
	int64_t stop_deadline_ms;
	struct consumer_metrics cm;     /* last copy taken */
	bool have_cm;
	struct metrics_flow sink_flow;
	int64_t open_first_arrival_ms;
	bool blocked;
	int64_t last_commit_wall_ms;
	struct metrics_aws s3;
	bool have_s3;

	struct worker_shard *next;
};

struct failure {
	char *key;
	int64_t until_ms;
};

struct worker {
	struct worker_opts opts;
	char *worker_id;
	struct worker_env env;
	struct lease_clock clock;
	struct lease_coord *coord;

	/* The lease thread. */
	pthread_t lease_thread;
	bool lease_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;              /* CLOCK_MONOTONIC */
	bool lease_stop;
	atomic_bool ready;
	_Atomic int64_t lease_loop_ms;  /* real monotonic time of its last loop */

	/* Main thread only. */
	struct worker_shard *shards;
	size_t n_threads;
	bool stopping;
	int64_t stop_deadline_ms;
	int64_t hard_deadline_ms;
	struct failure *failures;
	size_t n_failures;
	struct metrics_flow retired_flow;
	struct metrics_aws retired_aws[METRICS_SVC_COUNT];
	uint64_t consumers_started;
	bool capacity_warned;
};

/* ------------------------------------------------------------ counting wrappers */

/*
 * The lease store and shard source as the coordinator sees them: the
 * DynamoDB / Kinesis ones, with every call counted (their clients live
 * inside them, so their own stats are out of reach). Counters are atomics:
 * the coordinator and shard threads call, the main thread reads.
 */
struct counted {
	_Atomic uint64_t calls, errors, throttles;
};

static enum kl_err count(struct counted *k, enum kl_err err)
{
	atomic_fetch_add(&k->calls, 1);
	/* A failed condition or a missing item is an answer, not an error. */
	if (err != KL_OK && err != KL_ECONFLICT && err != KL_ENOTFOUND)
		atomic_fetch_add(&k->errors, 1);
	if (err == KL_ETHROTTLED)
		atomic_fetch_add(&k->throttles, 1);
	return err;
}

static void counted_add(const struct counted *k, struct metrics_aws *a)
{
	a->calls += atomic_load(&k->calls);
	a->errors += atomic_load(&k->errors);
	a->throttles += atomic_load(&k->throttles);
}

struct counting_store {
	struct lease_store pub;
	struct lease_store *inner;      /* borrowed */
	struct counted k;
};

#define CS(ctx) ((struct counting_store *)(ctx))

static enum kl_err cs_scan(void *ctx, struct lease_list *ret, struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_scan(CS(ctx)->inner, ret, info));
}

static enum kl_err cs_get(void *ctx, const char *key, struct lease *ret, struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_get(CS(ctx)->inner, key, ret, info));
}

static enum kl_err cs_create(void *ctx, const struct lease *l, struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_create(CS(ctx)->inner, l, info));
}

static enum kl_err cs_renew(void *ctx, const char *key, uint64_t counter, const char *session,
			    int64_t heartbeat_ms, struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_renew(CS(ctx)->inner, key, counter, session,
						      heartbeat_ms, info));
}

static enum kl_err cs_take(void *ctx, const char *key, uint64_t counter, const char *owner,
			   const char *session, int64_t heartbeat_ms, bool owner_changes,
			   struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_take(CS(ctx)->inner, key, counter, owner, session,
						     heartbeat_ms, owner_changes, info));
}

static enum kl_err cs_release(void *ctx, const char *key, uint64_t counter, const char *owner,
			      struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_release(CS(ctx)->inner, key, counter, owner, info));
}

static enum kl_err cs_checkpoint(void *ctx, const char *key, uint64_t counter, const char *session,
				 const struct lease_esn *cp, struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_checkpoint(CS(ctx)->inner, key, counter, session, cp,
							   info));
}

static enum kl_err cs_prepare(void *ctx, const char *key, uint64_t counter, const char *session,
			      const struct lease_esn *pending, const void *state, size_t state_len,
			      struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_prepare(CS(ctx)->inner, key, counter, session, pending,
							state, state_len, info));
}

static enum kl_err cs_update_meta(void *ctx, const char *key, const struct lease_strset *children,
				  const char *starting_hash_key, const char *ending_hash_key,
				  struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_update_meta(CS(ctx)->inner, key, children,
							    starting_hash_key, ending_hash_key, info));
}

static enum kl_err cs_delete(void *ctx, const char *key, uint64_t counter, struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_delete(CS(ctx)->inner, key, counter, info));
}

static enum kl_err cs_set_extra(void *ctx, const char *key, const char *name, const char *expected,
				const char *value, struct kl_errinfo *info)
{
	return count(&CS(ctx)->k, lease_store_set_extra(CS(ctx)->inner, key, name, expected, value,
							  info));
}

static void cs_destroy(void *ctx)
{
	(void)ctx; /* the wrapper is owned by worker_main; the inner store too */
}

#undef CS

static const struct lease_store_ops counting_store_ops = {
	.name = "dynamodb",
	.scan = cs_scan,
	.get = cs_get,
	.create = cs_create,
	.renew = cs_renew,
	.take = cs_take,
	.release = cs_release,
	.checkpoint = cs_checkpoint,
	.prepare = cs_prepare,
	.update_meta = cs_update_meta,
	.delete_lease = cs_delete,
	.destroy = cs_destroy,
	.set_extra = cs_set_extra,
};

static void counting_store_init(struct counting_store *cs, struct lease_store *inner)
{
	memset(cs, 0, sizeof(*cs));
	cs->inner = inner;
	cs->pub.ops = &counting_store_ops;
	cs->pub.ctx = cs;
}

struct counting_source {
	struct lease_shard_source pub;
	struct lease_shard_source inner;
	struct counted k;
};

static enum kl_err csrc_list(void *ctx, enum lease_shard_filter filter, int64_t timestamp_ms,
			     struct lease_shard_list *ret, struct kl_errinfo *info)
{
	struct counting_source *cs = ctx;

	return count(&cs->k, cs->inner.list(cs->inner.ctx, filter, timestamp_ms, ret, info));
}

static void counting_source_init(struct counting_source *cs, const struct lease_shard_source *inner)
{
	memset(cs, 0, sizeof(*cs));
	cs->inner = *inner;
	cs->pub.list = csrc_list;
	cs->pub.ctx = cs;
}

/* ------------------------------------------------------------ shard handles */

const struct lease_grant *worker_shard_grant(struct worker_shard *ws)
{
	return ws->grant;
}

struct lease_coord *worker_shard_coord(struct worker_shard *ws)
{
	return ws->w->coord;
}

void *worker_shard_ctx(struct worker_shard *ws)
{
	return ws->ctx;
}

void worker_shard_attach(struct worker_shard *ws, struct consumer *c)
{
	pthread_mutex_lock(&ws->mu);
	if (!c && ws->consumer) {
		consumer_get_metrics(ws->consumer, &ws->cm);
		ws->have_cm = true;
	}
	ws->consumer = c;
	if (c && ws->stop_requested)
		consumer_request_stop(c, ws->stop_deadline_ms);
	pthread_mutex_unlock(&ws->mu);
}

bool worker_shard_stop_requested(struct worker_shard *ws, int64_t *ret_deadline_ms)
{
	bool r;

	pthread_mutex_lock(&ws->mu);
	r = ws->stop_requested;
	if (r && ret_deadline_ms)
		*ret_deadline_ms = ws->stop_deadline_ms;
	pthread_mutex_unlock(&ws->mu);
	return r;
}

void worker_shard_publish(struct worker_shard *ws, const struct metrics_flow *sink_flow,
			  int64_t open_first_arrival_ms, bool blocked,
			  int64_t last_commit_wall_ms, const struct metrics_aws *s3)
{
	pthread_mutex_lock(&ws->mu);
	ws->sink_flow = *sink_flow;
	ws->open_first_arrival_ms = open_first_arrival_ms;
	ws->blocked = blocked;
	ws->last_commit_wall_ms = last_commit_wall_ms;
	if (s3) {
		ws->s3 = *s3;
		ws->have_s3 = true;
	}
	pthread_mutex_unlock(&ws->mu);
}

void worker_shard_failed(struct worker_shard *ws, const char *why)
{
	ws->failed = true;
	snprintf(ws->failed_why, sizeof(ws->failed_why), "%s", why);
}

static void shard_request_stop(struct worker_shard *ws, int64_t deadline_ms)
{
	pthread_mutex_lock(&ws->mu);
	if (!ws->stop_requested || deadline_ms < ws->stop_deadline_ms)
		ws->stop_deadline_ms = deadline_ms;
	ws->stop_requested = true;
	if (ws->consumer)
		consumer_request_stop(ws->consumer, ws->stop_deadline_ms);
	pthread_mutex_unlock(&ws->mu);
}

/* Copies the consumer's metrics (if attached) into ws->cm. */
static void shard_refresh(struct worker_shard *ws)
{
	pthread_mutex_lock(&ws->mu);
	if (ws->consumer) {
		consumer_get_metrics(ws->consumer, &ws->cm);
		ws->have_cm = true;
	}
	pthread_mutex_unlock(&ws->mu);
}

static void shard_free(struct worker *w, struct worker_shard *ws)
{
	if (!ws)
		return;
	if (ws->ctx && w->env.free_shard_ctx)
		w->env.free_shard_ctx(w->env.run_ctx, ws->ctx);
	lease_grants_free(ws->grant, ws->grant ? 1 : 0);
	pthread_mutex_destroy(&ws->mu);
	free(ws);
}

/* ------------------------------------------------------------ lease thread */

static int64_t real_mono(void)
{
	return kl_mono_ms();
}

static void *lease_thread_main(void *arg)
{
	struct worker *w = arg;
	char last[512] = "";

	pthread_mutex_lock(&w->mu);
	while (!w->lease_stop) {
		struct kl_errinfo info = { 0 };
		enum kl_err err;
		int64_t wait_ms;
		struct timespec ts;

		pthread_mutex_unlock(&w->mu);
		err = lease_coord_tick(w->coord, &info);
		atomic_store(&w->lease_loop_ms, real_mono());
		if (err == KL_ELEASE_LOST) {
			/* A renew found the lease taken: the main thread logs the
			 * loss with the new owner when the grant disappears. */
			log_debug("lease: %s", info.message);
		} else if (err) {
			char msg[512];

			kl_errinfo_format(err, &info, msg, sizeof(msg));
			/* One line per distinct problem, not one per tick. */
			if (strcmp(msg, last) != 0)
				log_warnx("lease: %s, retrying", msg);
			snprintf(last, sizeof(last), "%s", msg);
		} else if (last[0]) {
			log_info("lease: the lease table answers again");
			last[0] = '\0';
		}
		if (!atomic_load(&w->ready)) {
			struct lease_status st;

			/* Ready once a scan went through: the coordinator knows
			 * the table and has taken what it should. */
			if (lease_coord_status(w->coord, &st) == KL_OK) {
				if (st.scan.ok > 0 || err == KL_OK)
					atomic_store(&w->ready, true);
				lease_status_done(&st);
			}
		}
		wait_ms = lease_coord_next_due(w->coord) - lease_clock_mono(&w->clock);
		if (wait_ms < 5)
			wait_ms = 5;
		if (wait_ms > 1000)
			wait_ms = 1000;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&w->mu);
		if (!w->lease_stop)
			pthread_cond_timedwait(&w->cv, &w->mu, &ts);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ------------------------------------------------------------ the core */

enum kl_err worker_new(const struct worker_opts *opts, const struct worker_env *env,
		       struct worker **ret, struct kl_errinfo *info)
{
	struct worker *w;
	struct lease_coord_config lc;
	pthread_condattr_t ca;
	enum kl_err err;

	if (!opts || !env || !env->store || !env->run_shard || !opts->lease.worker_id ||
	    !*opts->lease.worker_id || opts->max_threads == 0)
		return kl_errinfo_set(info, KL_EINVAL, "worker: incomplete options");
	w = calloc(1, sizeof(*w));
	if (!w)
		return kl_errinfo_set(info, KL_ENOMEM, "out of memory");
	w->opts = *opts;
	if (!w->opts.retry_after_failure_ms)
		w->opts.retry_after_failure_ms = WORKER_DEFAULT_RETRY_MS;
	w->worker_id = strdup(opts->lease.worker_id);
	w->env = *env;
	if (env->clock)
		w->clock = *env->clock;
	else
		lease_clock_real(&w->clock);
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!w->worker_id) {
		worker_free(w);
		return kl_errinfo_set(info, KL_ENOMEM, "out of memory");
	}
	w->opts.lease.worker_id = w->worker_id;
	lc = w->opts.lease;
	/* A lease without a thread to run it would be renewed and never
	 * processed: hold no more leases than there are threads. */
	if (lc.max_leases == 0 || lc.max_leases > opts->max_threads)
		lc.max_leases = opts->max_threads;
	w->opts.lease.max_leases = lc.max_leases;
	err = lease_coord_new(&lc, env->store, &w->clock, env->shards, &w->coord, info);
	if (err) {
		worker_free(w);
		return err;
	}
	*ret = w;
	return KL_OK;
}

enum kl_err worker_start(struct worker *w, struct kl_errinfo *info)
{
	int rc;

	atomic_store(&w->lease_loop_ms, real_mono());
	rc = pthread_create(&w->lease_thread, NULL, lease_thread_main, w);
	if (rc) {
		if (info)
			info->sys_errno = rc;
		return kl_errinfo_set(info, KL_EIO, "cannot start the lease thread: %s", strerror(rc));
	}
	w->lease_started = true;
	return KL_OK;
}

bool worker_ready(struct worker *w)
{
	return atomic_load(&w->ready);
}

bool worker_alive(struct worker *w, int64_t max_silence_ms)
{
	return real_mono() - atomic_load(&w->lease_loop_ms) <= max_silence_ms;
}

struct lease_coord *worker_coord(struct worker *w)
{
	return w->coord;
}

size_t worker_threads_left(struct worker *w)
{
	return w->n_threads;
}

static bool in_failure_cooldown(struct worker *w, const char *key, int64_t now)
{
	for (size_t i = 0; i < w->n_failures; i++)
		if (strcmp(w->failures[i].key, key) == 0 && now < w->failures[i].until_ms)
			return true;
	return false;
}

static void add_failure(struct worker *w, const char *key, int64_t now)
{
	struct failure *nf;
	char *k;

	for (size_t i = 0; i < w->n_failures; i++)
		if (strcmp(w->failures[i].key, key) == 0) {
			w->failures[i].until_ms = now + w->opts.retry_after_failure_ms;
			return;
		}
	k = strdup(key);
	nf = k ? realloc(w->failures, (w->n_failures + 1) * sizeof(*nf)) : NULL;
	if (!nf) {
		free(k);
		return;
	}
	w->failures = nf;
	w->failures[w->n_failures].key = k;
	w->failures[w->n_failures].until_ms = now + w->opts.retry_after_failure_ms;
	w->n_failures++;
}

static void release_lease(struct worker *w, const char *key, uint64_t token, const char *why)
{
	struct kl_errinfo info = { 0 };
	char buf[512];
	enum kl_err err = lease_coord_release(w->coord, key, token, &info);

	if (err)
		log_warnx("lease: shard '%s': release (%s) failed: %s, it will expire instead", key,
			  why, kl_errinfo_format(err, &info, buf, sizeof(buf)));
	else
		log_info("lease: shard '%s' released (%s)", key, why);
}

static void *shard_thread_main(void *arg)
{
	struct worker_shard *ws = arg;

	ws->final = ws->w->env.run_shard(ws->w->env.run_ctx, ws);
	atomic_store(&ws->done, true);
	return NULL;
}

/* Takes over g (its fields move into a new thread's handle). */
static void start_shard(struct worker *w, struct lease_grant *g)
{
	struct worker_shard *ws = calloc(1, sizeof(*ws));
	struct kl_errinfo info = { 0 };
	char buf[512], pending[LEASE_SEQ_MAX + 48] = "";
	int64_t now = real_mono();
	int rc;

	if (!ws || !(ws->grant = malloc(sizeof(*ws->grant)))) {
		free(ws);
		log_errorx("worker: out of memory starting shard '%s'", g->key);
		return;
	}
	*ws->grant = *g;
	memset(g, 0, sizeof(*g));
	ws->w = w;
	pthread_mutex_init(&ws->mu, NULL);
	if (ws->grant->pending.kind != LEASE_ESN_NONE)
		snprintf(pending, sizeof(pending), ", intent up to %s left by the last holder",
			 lease_esn_str(&ws->grant->pending));
	log_info("lease: shard '%s' acquired (%s, checkpoint %s%s)", ws->grant->key,
		 lease_state_name(ws->grant->state), lease_esn_str(&ws->grant->checkpoint), pending);
	if (w->env.new_shard_ctx) {
		enum kl_err err = w->env.new_shard_ctx(w->env.run_ctx, ws->grant, &ws->ctx, &info);

		if (err) {
			log_errorx("worker: shard '%s' cannot start: %s", ws->grant->key,
				   kl_errinfo_format(err, &info, buf, sizeof(buf)));
			add_failure(w, ws->grant->key, now);
			release_lease(w, ws->grant->key, ws->grant->token, "could not start");
			shard_free(w, ws);
			return;
		}
	}
	rc = pthread_create(&ws->thread, NULL, shard_thread_main, ws);
	if (rc) {
		log_errorx("worker: shard '%s': cannot start a thread: %s", ws->grant->key, strerror(rc));
		add_failure(w, ws->grant->key, now);
		release_lease(w, ws->grant->key, ws->grant->token, "no thread");
		shard_free(w, ws);
		return;
	}
	ws->next = w->shards;
	w->shards = ws;
	w->n_threads++;
	w->consumers_started++;
}

/* The reading side's counters of a shard, from its consumer's metrics. */
static void flow_from_consumer(struct metrics_flow *f, const struct consumer_metrics *cm)
{
	f->records_read = cm->records_read;
	f->bytes_read = cm->bytes_read;
	f->get_records_calls = cm->get_records_calls;
	f->throttles = cm->throttles;
	f->retries = cm->retries;
	f->budget_waits = cm->budget_waits;
	f->pages_dropped = cm->pages_dropped;
	f->records_reread = cm->records_reread;
}

static void fold_totals(struct worker *w, struct worker_shard *ws)
{
	struct metrics_flow f = ws->sink_flow;

	if (ws->have_cm) {
		flow_from_consumer(&f, &ws->cm);
		w->retired_aws[METRICS_SVC_KINESIS].calls += ws->cm.aws.calls;
		w->retired_aws[METRICS_SVC_KINESIS].errors += ws->cm.aws.errors;
		w->retired_aws[METRICS_SVC_KINESIS].throttles += ws->cm.aws.throttles;
		w->retired_aws[METRICS_SVC_KINESIS].retries += ws->cm.aws.retries;
		w->retired_aws[METRICS_SVC_KINESIS].present = true;
	}
	if (ws->have_s3) {
		w->retired_aws[METRICS_SVC_S3].calls += ws->s3.calls;
		w->retired_aws[METRICS_SVC_S3].errors += ws->s3.errors;
		w->retired_aws[METRICS_SVC_S3].throttles += ws->s3.throttles;
		w->retired_aws[METRICS_SVC_S3].retries += ws->s3.retries;
		w->retired_aws[METRICS_SVC_S3].present = true;
	}
	metrics_flow_add(&w->retired_flow, &f);
}

/* Joins the shard threads that ended. */
static void reap(struct worker *w)
{
	struct worker_shard **pp = &w->shards;
	int64_t now = real_mono();

	while (*pp) {
		struct worker_shard *ws = *pp;
		const char *key = ws->grant->key;

		if (!atomic_load(&ws->done)) {
			pp = &ws->next;
			continue;
		}
		pthread_join(ws->thread, NULL);
		*pp = ws->next;
		w->n_threads--;
		if (ws->failed) {
			log_errorx("worker: shard '%s' could not run: %s; retrying in %" PRId64 " ms or elsewhere",
				   key, ws->failed_why, w->opts.retry_after_failure_ms);
			add_failure(w, key, now);
			release_lease(w, key, ws->grant->token, "could not run");
		} else {
			switch (ws->final) {
			case CONSUMER_DONE:
				log_info("consumer: shard '%s' finished (SHARD_END), lease released", key);
				break;
			case CONSUMER_LEASE_LOST:
				log_info("consumer: shard '%s' stopped: lease lost, open batch left to the next owner", key);
				break;
			case CONSUMER_STOPPED: {
				/* The consumer released its lease itself (release_on_stop)
				 * unless that failed; say so here if the grants did not
				 * show it before the thread ended. */
				bool released = !ws->loss_logged &&
					lease_coord_check(w->coord, key, ws->grant->token, NULL) == KL_ELEASE_LOST;

				log_info("consumer: shard '%s' stopped, everything committed%s", key,
					 released ? "; lease released" : "");
				break;
			}
			case CONSUMER_ABANDONED:
				log_warnx("consumer: shard '%s' stopped without finishing its open batch "
					  "(grace period over); the next owner rebuilds it", key);
				break;
			default:
				log_warnx("consumer: shard '%s' ended in state %s", key,
					  consumer_state_name(ws->final));
				break;
			}
			/* Ended on its own while still granted (should not
			 * happen outside a stop): give the lease up. Not when
			 * we stopped it because its grant had gone: a late
			 * renew can make the lease valid again (same token),
			 * and then the next poll simply runs it again. */
			if (!w->stopping && !ws->loss_logged && ws->final != CONSUMER_DONE &&
			    ws->final != CONSUMER_LEASE_LOST &&
			    lease_coord_check(w->coord, key, ws->grant->token, NULL) != KL_ELEASE_LOST) {
				add_failure(w, key, now);
				release_lease(w, key, ws->grant->token, "consumer ended");
			}
		}
		fold_totals(w, ws);
		shard_free(w, ws);
	}
}

static bool granted(const struct lease_grant *g, size_t n, const char *key, uint64_t token)
{
	for (size_t i = 0; i < n; i++)
		if (g[i].key && g[i].token == token && strcmp(g[i].key, key) == 0)
			return true;
	return false;
}

static bool has_thread(struct worker *w, const char *key, uint64_t token)
{
	for (struct worker_shard *ws = w->shards; ws; ws = ws->next)
		if (ws->grant->token == token && strcmp(ws->grant->key, key) == 0)
			return true;
	return false;
}

static void log_loss(struct worker *w, struct worker_shard *ws)
{
	struct lease_status st;
	const char *key = ws->grant->key;

	if (ws->loss_logged)
		return;
	ws->loss_logged = true;
	if (lease_coord_status(w->coord, &st) != KL_OK) {
		log_warnx("lease: shard '%s' lost", key);
		return;
	}
	for (size_t i = 0; i < st.n_leases; i++) {
		const struct lease_status_lease *l = &st.leases[i];

		if (strcmp(l->key, key) != 0)
			continue;
		/* A lease that ended here shows its scan entry with a note
		 * "<how> here: <why>". */
		if (l->state == LEASE_STATE_RELEASED || strncmp(l->note, "released", 8) == 0)
			log_info("lease: shard '%s' released", key);
		else if (l->owner && strcmp(l->owner, w->worker_id) != 0)
			log_warnx("lease: shard '%s' lost to '%s'%s%s%s", key, l->owner,
				  l->note[0] ? " (" : "", l->note, l->note[0] ? ")" : "");
		else
			log_warnx("lease: shard '%s' lost%s%s%s", key, l->note[0] ? " (" : "", l->note,
				  l->note[0] ? ")" : "");
		lease_status_done(&st);
		return;
	}
	log_warnx("lease: shard '%s' lost (no longer in the table)", key);
	lease_status_done(&st);
}

bool worker_poll(struct worker *w)
{
	struct lease_grant *g = NULL;
	size_t n = 0;
	int64_t now;

	reap(w);
	now = real_mono();
	if (lease_coord_grants(w->coord, &g, &n) == KL_OK) {
		for (struct worker_shard *ws = w->shards; ws; ws = ws->next) {
			if (atomic_load(&ws->done) || granted(g, n, ws->grant->key, ws->grant->token))
				continue;
			log_loss(w, ws);
			shard_request_stop(ws, now);
		}
		for (size_t i = 0; i < n; i++) {
			if (has_thread(w, g[i].key, g[i].token))
				continue;
			if (w->stopping) {
				release_lease(w, g[i].key, g[i].token, "shutting down");
			} else if (in_failure_cooldown(w, g[i].key, now)) {
				release_lease(w, g[i].key, g[i].token, "failed here recently");
			} else if (w->n_threads < w->opts.max_threads) {
				start_shard(w, &g[i]);
			}
		}
		lease_grants_free(g, n);
	}
	/* Consumer errors, once each: they retry on their own. */
	for (struct worker_shard *ws = w->shards; ws; ws = ws->next) {
		shard_refresh(ws);
		pthread_mutex_lock(&ws->mu);
		if (ws->have_cm && ws->cm.last_error_text[0] &&
		    strcmp(ws->cm.last_error_text, ws->last_error) != 0) {
			snprintf(ws->last_error, sizeof(ws->last_error), "%s", ws->cm.last_error_text);
			log_warnx("consumer: shard '%s': %s, retrying", ws->grant->key, ws->last_error);
		}
		pthread_mutex_unlock(&ws->mu);
	}
	if (!w->stopping)
		return false;
	return w->n_threads == 0 || now >= w->hard_deadline_ms;
}

void worker_stop(struct worker *w, int64_t grace_ms)
{
	int64_t now = real_mono();
	int64_t deadline = now + (grace_ms > 0 ? grace_ms : 0);

	if (w->stopping && deadline >= w->stop_deadline_ms)
		return;
	if (!w->stopping)
		log_info("worker: stopping: %zu shard%s to flush within %" PRId64 " ms", w->n_threads,
			 w->n_threads == 1 ? "" : "s", grace_ms);
	else
		log_info("worker: stopping now: abandoning open batches");
	w->stopping = true;
	w->stop_deadline_ms = deadline;
	w->hard_deadline_ms = deadline + WORKER_HARD_STOP_MARGIN_MS;
	for (struct worker_shard *ws = w->shards; ws; ws = ws->next)
		shard_request_stop(ws, deadline);
}

enum kl_err worker_finish(struct worker *w, struct kl_errinfo *info)
{
	enum kl_err err = KL_OK;

	if (w->opts.release_on_shutdown) {
		struct lease_grant *g = NULL;
		size_t n = 0;

		if (lease_coord_grants(w->coord, &g, &n) == KL_OK)
			lease_grants_free(g, n);
		err = lease_coord_release_all(w->coord, info);
		if (err) {
			char buf[512];

			log_warnx("lease: releasing leases failed: %s; they expire in %" PRId64 " ms instead",
				  kl_errinfo_format(err, info, buf, sizeof(buf)), w->opts.lease.failover_ms);
		} else if (n) {
			log_info("lease: released the %zu remaining lease%s", n, n == 1 ? "" : "s");
		}
	}
	if (w->lease_started) {
		pthread_mutex_lock(&w->mu);
		w->lease_stop = true;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->lease_thread, NULL);
		w->lease_started = false;
	}
	return err;
}

void worker_free(struct worker *w)
{
	if (!w)
		return;
	if (w->lease_started) {
		pthread_mutex_lock(&w->mu);
		w->lease_stop = true;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->lease_thread, NULL);
	}
	while (w->shards) {
		struct worker_shard *ws = w->shards;

		/* Only reached with every thread ended (see worker.h). */
		if (!atomic_load(&ws->done))
			break;
		pthread_join(ws->thread, NULL);
		w->shards = ws->next;
		shard_free(w, ws);
	}
	lease_coord_free(w->coord);
	for (size_t i = 0; i < w->n_failures; i++)
		free(w->failures[i].key);
	free(w->failures);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w->worker_id);
	free(w);
}

/* ------------------------------------------------------------ metrics */

static bool lease_held_state(enum lease_state s)
{
	return s == LEASE_STATE_HANDOVER || s == LEASE_STATE_WAITING_PARENTS ||
	       s == LEASE_STATE_HELD || s == LEASE_STATE_RENEWING;
}

static void add_aws(struct metrics_aws *a, const struct aws_stats *s)
{
	a->calls += s->calls;
	a->errors += s->errors;
	a->throttles += s->throttles;
	a->retries += s->retries;
}

enum kl_err worker_render_metrics(struct worker *w, int64_t start_wall_ms, struct buf *out)
{
	struct metrics_snapshot snap = { 0 };
	struct metrics_shard *shards = NULL;
	struct lease_status st;
	bool have_st = lease_coord_status(w->coord, &st) == KL_OK;
	int64_t now_wall = kl_wall_ms();
	size_t n = 0;
	enum kl_err err;

	snap.worker_id = w->worker_id;
	snap.version = w->opts.version;
	snap.start_wall_ms = start_wall_ms;
	snap.ready = worker_ready(w);
	snap.stopping = w->stopping;
	snap.total = w->retired_flow;
	memcpy(snap.aws, w->retired_aws, sizeof(snap.aws));
	snap.consumers_started = w->consumers_started;
	if (have_st) {
		snap.leader = st.leader;
		snap.leases_target = st.target;
		snap.live_workers = st.live_workers;
		snap.leases_taken = st.taken;
		snap.leases_stolen = st.stolen;
		snap.leases_lost = st.lost;
		snap.leases_released = st.released;
		snap.leases_created = st.created;
		snap.leases_deleted = st.deleted;
		for (size_t i = 0; i < st.n_leases; i++)
			if (st.leases[i].held_here && lease_held_state(st.leases[i].state))
				snap.leases_held++;
	}
	if (w->n_threads) {
		shards = calloc(w->n_threads, sizeof(*shards));
		if (!shards) {
			if (have_st)
				lease_status_done(&st);
			return KL_ENOMEM;
		}
	}
	for (struct worker_shard *ws = w->shards; ws && n < w->n_threads; ws = ws->next) {
		struct metrics_shard *m = &shards[n++];

		shard_refresh(ws);
		pthread_mutex_lock(&ws->mu);
		m->shard_id = ws->grant->key;
		m->state = ws->have_cm ? consumer_state_name(ws->cm.state) : "starting";
		m->millis_behind_latest = ws->have_cm ? ws->cm.millis_behind_latest : -1;
		m->lag_ms = m->millis_behind_latest;
		if (ws->open_first_arrival_ms > 0 && now_wall - ws->open_first_arrival_ms > m->lag_ms)
			m->lag_ms = now_wall - ws->open_first_arrival_ms;
		m->last_commit_wall_ms = ws->last_commit_wall_ms;
		m->blocked = ws->blocked;
		m->flow = ws->sink_flow;
		if (ws->have_cm) {
			flow_from_consumer(&m->flow, &ws->cm);
			add_aws(&snap.aws[METRICS_SVC_KINESIS], &ws->cm.aws);
			snap.aws[METRICS_SVC_KINESIS].present = true;
		}
		if (ws->have_s3) {
			snap.aws[METRICS_SVC_S3].calls += ws->s3.calls;
			snap.aws[METRICS_SVC_S3].errors += ws->s3.errors;
			snap.aws[METRICS_SVC_S3].throttles += ws->s3.throttles;
			snap.aws[METRICS_SVC_S3].retries += ws->s3.retries;
			snap.aws[METRICS_SVC_S3].present = true;
		}
		pthread_mutex_unlock(&ws->mu);
		if (strcmp(m->state, consumer_state_name(CONSUMER_PROCESSING)) == 0)
			snap.leases_processing++;
		metrics_flow_add(&snap.total, &m->flow);
	}
	if (w->env.aws_stats)
		w->env.aws_stats(w->env.run_ctx, snap.aws);
	snap.shards = shards;
	snap.n_shards = n;
	err = metrics_render(&snap, out);
	free(shards);
	if (have_st)
		lease_status_done(&st);
	return err;
}

void worker_status_line(struct worker *w, char *out, size_t size)
{
	struct lease_status st;
	uint32_t held = 0;

	if (lease_coord_status(w->coord, &st) != KL_OK) {
		snprintf(out, size, "%zu shard threads", w->n_threads);
		return;
	}
	for (size_t i = 0; i < st.n_leases; i++)
		if (st.leases[i].held_here && lease_held_state(st.leases[i].state))
			held++;
	/* The fleet wants more of this worker than it has threads for: say
	 * so once (again after it recovered), or shards stay unowned. */
	if (st.target > w->opts.lease.max_leases && !w->capacity_warned && !w->stopping) {
		log_warnx("worker: this worker's share is %u leases (%u live workers) but it holds at most %u "
			  "(consumer.threads / lease.max_leases): some shards may stay unowned; raise "
			  "consumer.threads or add workers", st.target, st.live_workers, w->opts.lease.max_leases);
		w->capacity_warned = true;
	} else if (st.target <= w->opts.lease.max_leases) {
		w->capacity_warned = false;
	}
	snprintf(out, size, "%s%u lease%s held, %zu shard thread%s; %u live worker%s, target %u%s%s",
		 w->stopping ? "stopping: " : "", held, held == 1 ? "" : "s", w->n_threads,
		 w->n_threads == 1 ? "" : "s", st.live_workers, st.live_workers == 1 ? "" : "s",
		 st.target, st.last_error[0] ? "; last error: " : "", st.last_error);
	lease_status_done(&st);
}

/* ================================================================ kinlake run */

/* Everything the production shard runner shares between threads. */
struct daemon {
	const struct kl_config *cfg;
	struct creds_chain *creds;
	struct journal *journal;
	struct keytmpl *data_tmpl;
	struct keytmpl *error_tmpl;
	struct xform_plugin *plugin;
	struct xform *root;             /* the shared instance of a thread-safe plugin */
	char spool_dir[PATH_MAX];
	struct spool_opts spool;
	struct aws_client_config kinesis_cfg;
	struct aws_client_config s3_cfg;
	struct counting_store store;    /* the DynamoDB store, counted */
	struct counting_source source;  /* ListShards, counted */
	struct poison_marks *marks;     /* what each shard thread's plugin has (poison.h) */
	struct poison_crash *crashes;   /* the last run died on these; published at start */
	size_t n_crashes;
	bool agg_on;                    /* aggregates.table is set */
	struct agg_spec agg_spec;       /* read-only once parsed */
	struct aws_client_config ddb_cfg;
	struct consumer_budget *budget; /* GetRecords pages in memory, all shards */
};

static void daemon_aws_stats(void *ctx, struct metrics_aws *aws)
{
	struct daemon *d = ctx;

	counted_add(&d->store.k, &aws[METRICS_SVC_DYNAMODB]);
	aws[METRICS_SVC_DYNAMODB].present = true;
	aws[METRICS_SVC_DYNAMODB].retries_unknown = true;
	counted_add(&d->source.k, &aws[METRICS_SVC_KINESIS]);
	aws[METRICS_SVC_KINESIS].present = true;
}

/* A plugin handle for one shard thread (main thread: xform_new is not
 * thread-safe with respect to the plugin). */
static enum kl_err daemon_new_shard_ctx(void *ctx, const struct lease_grant *grant, void **ret_ctx,
					struct kl_errinfo *info)
{
	struct daemon *d = ctx;
	struct xform *x = NULL;
	enum kl_err err;

	(void)grant;
	if (d->root)
		err = xform_share(d->root, info, &x);
	else
		err = xform_new(d->plugin, d->cfg->plugin.settings, info, &x);
	if (err)
		return err;
	xform_set_output_cap(x, (size_t)d->cfg->plugin.max_output_bytes);
	*ret_ctx = x;
	return KL_OK;
}

static void daemon_free_shard_ctx(void *ctx, void *shard_ctx)
{
	(void)ctx;
	xform_free(shard_ctx);
}

/* The delivery's messages for the operator, with the shard in them. */
static void daemon_report(void *ctx, enum log_level level, const char *msg)
{
	(void)ctx;
	if (log_enabled(level))
		log_emit(level, 0, "%s", msg);
}

/*
 * The record_sink the consumer sees: the delivery's, plus a copy of its
 * counters into the shard's handle at most every 500 ms (the delivery's
 * stats belong to this thread; the main thread reads the copy).
 */
struct stat_sink {
	struct record_sink inner;
	struct delivery *d;
	struct agg *ag;                /* NULL while aggregates are off */
	struct aws_client *s3;
	struct worker_shard *ws;
	int64_t last_ms;
};

static void stat_sink_publish(struct stat_sink *s, bool force)
{
	struct delivery_stats ds;
	struct metrics_flow f = { 0 };
	struct metrics_aws a = { 0 };
	int64_t now = kl_mono_ms();

	if (!force && now - s->last_ms < 500)
		return;
	s->last_ms = now;
	delivery_get_stats(s->d, &ds);
	f.records_in = ds.records_in;
	f.bytes_in = ds.bytes_in;
	f.records_out = ds.records_out;
	f.bytes_out = ds.bytes_out;
	f.records_dropped = ds.records_dropped;
	f.records_failed = ds.records_failed;
	f.objects_uploaded = ds.objects_uploaded;
	f.bytes_uploaded = ds.bytes_uploaded;
	f.batches_committed = ds.batches_committed;
	f.upload_failures = ds.upload_failures;
	if (s->ag) {
		struct agg_stats as;

		agg_get_stats(s->ag, &as);
		f.agg_records = as.records;
		f.agg_late = as.late;
		f.agg_updates = as.updates;
		f.agg_already_applied = as.already_applied;
		f.agg_failures = as.failures;
	}
	add_aws(&a, &s->s3->stats);
	worker_shard_publish(s->ws, &f, ds.open_first_arrival_ms,
			     ds.blocked != DELIVERY_BLOCKED_NONE, ds.last_commit_wall_ms, &a);
}

static enum kl_err ss_push(void *ctx, const struct kl_transform_record *rec,
			   const struct xform_result *res, struct kl_errinfo *info)
{
	struct stat_sink *s = ctx;
	enum kl_err err = s->inner.ops->push(s->inner.ctx, rec, res, info);

	stat_sink_publish(s, false);
	return err;
}

static bool ss_blocked(void *ctx)
{
	struct stat_sink *s = ctx;

	return s->inner.ops->blocked(s->inner.ctx);
}

static enum kl_err ss_tick(void *ctx, int64_t now_mono_ms, struct kl_errinfo *info)
{
	struct stat_sink *s = ctx;
	enum kl_err err = s->inner.ops->tick(s->inner.ctx, now_mono_ms, info);

	stat_sink_publish(s, false);
	return err;
}

static enum kl_err ss_flush(void *ctx, struct kl_errinfo *info)
{
	struct stat_sink *s = ctx;
	enum kl_err err = s->inner.ops->flush(s->inner.ctx, info);

	stat_sink_publish(s, true);
	return err;
}

static void ss_abandon(void *ctx)
{
	struct stat_sink *s = ctx;

	s->inner.ops->abandon(s->inner.ctx);
	stat_sink_publish(s, true);
}

static void ss_resume_after(void *ctx, struct lease_esn *ret)
{
	struct stat_sink *s = ctx;

	s->inner.ops->resume_after(s->inner.ctx, ret);
}

static enum kl_err ss_push_crashed(void *ctx, const struct kl_transform_record *rec,
				   uint32_t attempts, struct kl_errinfo *info)
{
	struct stat_sink *s = ctx;
	enum kl_err err = s->inner.ops->push_crashed(s->inner.ctx, rec, attempts, info);

	stat_sink_publish(s, false);
	return err;
}

static const struct record_sink_ops stat_sink_ops = {
	.push = ss_push,
	.blocked = ss_blocked,
	.tick = ss_tick,
	.flush = ss_flush,
	.abandon = ss_abandon,
	.resume_after = ss_resume_after,
	.push_crashed = ss_push_crashed,
};

/* Runs one shard: its own Kinesis and S3 clients, delivery and consumer. */
static enum consumer_state daemon_run_shard(void *ctx, struct worker_shard *ws)
{
	struct daemon *dm = ctx;
	const struct kl_config *cfg = dm->cfg;
	const struct lease_grant *g = worker_shard_grant(ws);
	struct aws_client kin = { 0 }, s3 = { 0 };
	struct consumer_kinesis_aws kc;
	struct delivery_s3 ds3 = { 0 };
	struct delivery_opts dopts = { 0 };
	struct delivery *d = NULL;
	struct consumer_config cc = { 0 };
	struct consumer_deps deps = { 0 };
	struct consumer *c = NULL;
	struct stat_sink ss = { 0 };
	struct poison_guard_config pc = { 0 };
	struct poison_guard *pg = NULL;
	struct kl_errinfo info = { 0 };
	enum consumer_state final = CONSUMER_ABANDONED;
	char why[512], buf[400];
	struct aws_client ddbc = { 0 };
	struct agg_ddb adb = { 0 };
	struct agg_writer aw;
	struct agg *ag = NULL;
	enum kl_err err;

	err = aws_client_init(&kin, &dm->kinesis_cfg, dm->creds);
	if (!err)
		err = aws_client_init(&s3, &dm->s3_cfg, dm->creds);
	if (!err && dm->agg_on)
		err = aws_client_init(&ddbc, &dm->ddb_cfg, dm->creds);
	if (err) {
		snprintf(why, sizeof(why), "AWS client: %s", kl_strerror(err));
		goto fail;
	}
	err = consumer_kinesis_aws(&kc, &kin, cfg->stream, &deps.kinesis);
	if (err) {
		snprintf(why, sizeof(why), "Kinesis: %s", kl_strerror(err));
		goto fail;
	}
	ds3.client = &s3;
	ds3.bucket = cfg->s3.bucket;
	ds3.multipart_threshold = (uint64_t)cfg->s3.multipart_threshold;
	ds3.part_size = (uint64_t)cfg->s3.part_size;
	/* STANDARD is what S3 stores without the header: sent only otherwise. */
	ds3.storage_class = cfg->s3.storage_class == CFG_STORAGE_STANDARD ?
				    NULL : cfg_storage_class_name(cfg->s3.storage_class);
	ds3.upload_threads = (unsigned)cfg->s3.upload_threads;
	ds3.client_cfg = &dm->s3_cfg;
	ds3.creds = dm->creds;
	delivery_s3_uploader(&ds3, &dopts.uploader);
	dopts.grant = g;
	dopts.coord = worker_shard_coord(ws);
	dopts.journal = dm->journal;
	dopts.spool_dir = dm->spool_dir;
	dopts.data_tmpl = dm->data_tmpl;
	dopts.error_tmpl = dm->error_tmpl;
	dopts.spool = dm->spool;
	dopts.content_type = cfg->s3.content_type[0] ? cfg->s3.content_type : NULL;
	dopts.buffer_bytes = (uint64_t)cfg->s3.buffer_bytes;
	dopts.buffer_records = (uint64_t)cfg->s3.buffer_records;
	dopts.buffer_ms = cfg->s3.buffer_seconds * 1000;
	dopts.report = daemon_report;
	if (dm->agg_on) {
		/* Aggregates of each batch, applied before its checkpoint. */
		adb.client = &ddbc;
		adb.table = cfg->aggregates.table;
		agg_ddb_writer(&adb, &aw);
		err = agg_new(&dm->agg_spec, g->key, &aw, &ag, &info);
		if (err) {
			snprintf(why, sizeof(why), "aggregates: %s", kl_errinfo_format(err, &info, buf, sizeof(buf)));
			goto fail;
		}
		agg_delivery_hook(ag, &dopts.hook);
		if (dopts.buffer_ms > cfg->aggregates.flush_seconds * 1000)
			dopts.buffer_ms = cfg->aggregates.flush_seconds * 1000;
	}
	err = delivery_new(&dopts, &d, &info);
	if (err) {
		snprintf(why, sizeof(why), "delivery: %s", kl_errinfo_format(err, &info, buf, sizeof(buf)));
		goto fail;
	}
	ss.d = d;
	ss.s3 = &s3;
	ss.ag = ag;
	ss.ws = ws;
	delivery_sink(d, &ss.inner);
	deps.sink.ops = &stat_sink_ops;
	deps.sink.ctx = &ss;
	consumer_lease_coord(worker_shard_coord(ws), &deps.lease);
	deps.xform = worker_shard_ctx(ws);
	deps.budget = dm->budget;
	/* Records that crashed the plugin poison.max_crashes times skip it. */
	pc.key = g->key;
	pc.worker_id = cfg->worker_id;
	pc.max_crashes = (uint32_t)cfg->poison.max_crashes;
	pc.journal = dm->journal;
	pc.store = &dm->store.pub;
	pc.marks = dm->marks;
	pc.checkpoint = g->checkpoint;
	err = poison_guard_new(&pc, &pg, &info);
	if (err) {
		snprintf(why, sizeof(why), "%s", kl_errinfo_format(err, &info, buf, sizeof(buf)));
		goto fail;
	}
	poison_guard_consumer(pg, &deps.guard);
	cc.shard_id = g->key;
	cc.lease_token = g->token;
	cc.checkpoint = g->checkpoint;
	cc.at_timestamp_ms = cfg->initial_timestamp_ms;
	cc.starting_hash_key = g->starting_hash_key;
	cc.ending_hash_key = g->ending_hash_key;
	cc.get_records_limit = (int)cfg->consumer.get_records_limit;
	cc.idle_ms = cfg->consumer.idle_ms;
	cc.max_calls_per_sec = (int)cfg->consumer.max_calls_per_sec;
	cc.release_on_stop = cfg->lease.release_on_shutdown;
	err = consumer_new(&cc, &deps, &c, &info);
	if (err) {
		snprintf(why, sizeof(why), "consumer: %s", kl_errinfo_format(err, &info, buf, sizeof(buf)));
		goto fail;
	}
	worker_shard_attach(ws, c);
	final = consumer_run(c);
	stat_sink_publish(&ss, true);
	worker_shard_attach(ws, NULL);
	consumer_free(c);
	poison_guard_free(pg);
	delivery_free(d);
	agg_free(ag);
	aws_client_done(&ddbc);
	aws_client_done(&s3);
	aws_client_done(&kin);
	return final;
fail:
	worker_shard_failed(ws, why);
	poison_guard_free(pg);
	delivery_free(d);
	agg_free(ag);
	aws_client_done(&ddbc);
	aws_client_done(&s3);
	aws_client_done(&kin);
	return final;
}

static void daemon_done(struct daemon *d)
{
	poison_marks_close(d->marks);
	free(d->crashes);
	xform_free(d->root);
	xform_plugin_free(d->plugin);
	keytmpl_free(d->data_tmpl);
	keytmpl_free(d->error_tmpl);
	journal_close(d->journal);
	creds_chain_free(d->creds);
	consumer_budget_free(d->budget);
}

/* mkdir -p with mode for the missing parts. */
static int make_dirs(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(tmp))
		return -1;
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* Start-up steps that need no network: journal, templates, plugin. */
static int daemon_init(struct daemon *d, const struct kl_config *cfg)
{
	struct creds_config cc;
	struct kl_errinfo info = { 0 };
	char path[PATH_MAX + 16], buf[512];
	size_t swept = 0;
	enum kl_err err;

	d->cfg = cfg;
	cfg_creds_config(cfg, &cc);
	err = creds_chain_new(&cc, &d->creds);
	if (err) {
		log_errorx("kinlake: credentials: %s", kl_strerror(err));
		return -1;
	}
	cfg_aws_client_config(cfg, CFG_SERVICE_KINESIS, &d->kinesis_cfg);
	cfg_aws_client_config(cfg, CFG_SERVICE_S3, &d->s3_cfg);
	cfg_aws_client_config(cfg, CFG_SERVICE_DYNAMODB, &d->ddb_cfg);
	if (cfg->aggregates.table[0]) {
		struct agg_spec *as = &d->agg_spec;

		as->window_ms = cfg->aggregates.window_seconds * 1000;
		as->lateness_ms = cfg->aggregates.allowed_lateness_seconds * 1000;
		snprintf(as->time_field, sizeof(as->time_field), "%s", cfg->aggregates.time_field);
		as->buckets = (uint32_t)cfg->aggregates.buckets;
		as->max_entries = (size_t)cfg->aggregates.max_entries;
		if (agg_spec_parse_dims(cfg->aggregates.dimensions, as, &info) != KL_OK) {
			log_errorx("aggregates.dimensions: %s", info.message);
			return -1;
		}
		if (agg_spec_parse_measures(cfg->aggregates.measures, as, &info) != KL_OK) {
			log_errorx("aggregates.measures: %s", info.message);
			return -1;
		}
		d->agg_on = true;
	}
	if (consumer_budget_new((unsigned)cfg->consumer.max_pages_in_memory, 0, &d->budget) != KL_OK) {
		log_errorx("kinlake: out of memory");
		return -1;
	}
	cfg_spool_opts(cfg, &d->spool);
	snprintf(d->spool_dir, sizeof(d->spool_dir), "%s/spool", cfg->state_dir);
	if (make_dirs(d->spool_dir, 0750) != 0) {
		log_error("kinlake: cannot create %s", d->spool_dir);
		return -1;
	}
	if (spool_sweep(d->spool_dir, &swept, &info) != KL_OK)
		log_warnx("kinlake: spool sweep of %s: %s", d->spool_dir, info.message);
	else if (swept)
		log_info("kinlake: removed %zu unfinished spool file%s of the last run", swept,
			 swept == 1 ? "" : "s");
	snprintf(path, sizeof(path), "%s/journal.db", cfg->state_dir);
	err = journal_open(path, &d->journal, &info);
	if (err) {
		log_errorx("journal: cannot open %s: %s", path, kl_errinfo_format(err, &info, buf, sizeof(buf)));
		return -1;
	}
	if (journal_moved_aside(d->journal))
		log_warnx("journal: %s was damaged (%s): moved to %s, starting a new one; the lease "
			  "table still knows every intent", path, journal_moved_reason(d->journal),
			  journal_moved_aside(d->journal));
	/* Before any plugin runs: which records did the last run die on? */
	snprintf(path, sizeof(path), "%s/" POISON_MARKS_FILE, cfg->state_dir);
	err = poison_marks_open(path, (uint32_t)cfg->consumer.threads, &d->marks, &d->crashes,
				&d->n_crashes, &info);
	if (err) {
		log_errorx("%s", kl_errinfo_format(err, &info, buf, sizeof(buf)));
		return -1;
	}
	poison_count_crashes(d->journal, d->crashes, d->n_crashes, (uint32_t)cfg->poison.max_crashes);
	poison_handler_install();
	err = keytmpl_compile(cfg->s3.prefix, KEYTMPL_DATA, &d->data_tmpl, &info);
	if (!err)
		err = keytmpl_compile(cfg->s3.error_prefix, KEYTMPL_ERROR, &d->error_tmpl, &info);
	if (err) {
		log_errorx("kinlake: key template: %s", kl_errinfo_format(err, &info, buf, sizeof(buf)));
		return -1;
	}
	err = xform_plugin_load(cfg->plugin.name, *cfg->plugin.search_path ? cfg->plugin.search_path : NULL,
				&info, &d->plugin);
	if (err) {
		log_errorx("plugin: cannot load '%s': %s", cfg->plugin.name,
			   kl_errinfo_format(err, &info, buf, sizeof(buf)));
		return -1;
	}
	/* One instance now, so that bad settings stop the start-up; kept and
	 * shared when the plugin says it is thread-safe. */
	err = xform_new(d->plugin, cfg->plugin.settings, &info, &d->root);
	if (err) {
		log_errorx("plugin: '%s': %s", cfg->plugin.name, kl_errinfo_format(err, &info, buf, sizeof(buf)));
		return -1;
	}
	if (!(xform_plugin_desc(d->plugin)->flags & KL_TRANSFORM_F_THREAD_SAFE)) {
		xform_free(d->root);
		d->root = NULL;
	}
	log_info("plugin: '%s' loaded from %s (%s)", xform_plugin_desc(d->plugin)->name,
		 xform_plugin_path(d->plugin), d->root ? "thread-safe: one instance shared" :
		 "one instance per shard thread");
	return 0;
}

static int run_usage(FILE *out)
{
	fprintf(out, "usage: kinlake run [-c FILE]\n"
		     "  runs a worker until SIGTERM/SIGINT (graceful stop); SIGHUP reopens the log\n");
	return out == stdout ? 0 : 64;
}

/* Writes the metrics file; logs a failure once until it works again. */
static void write_metrics(struct worker *w, const struct kl_config *cfg, int64_t start_wall_ms,
			  bool *failing)
{
	struct buf out;
	struct kl_errinfo info = { 0 };
	enum kl_err err;

	buf_init(&out, (size_t)64 << 20);
	err = worker_render_metrics(w, start_wall_ms, &out);
	if (!err)
		err = metrics_write_file(cfg->metrics.file, out.data ? out.data : "", out.len, &info);
	if (err && !*failing) {
		char b[512];

		log_warnx("metrics: cannot write %s: %s, retrying every %" PRId64 " ms", cfg->metrics.file,
			  kl_errinfo_format(err, &info, b, sizeof(b)), cfg->metrics.interval_ms);
	} else if (!err && *failing) {
		log_info("metrics: %s written again", cfg->metrics.file);
	}
	*failing = err != KL_OK;
	buf_done(&out);
}

/*
 * Committed batch rows are history only (recovery reads pending ones), and
 * a crash counter not bumped for a week belongs to a record long past:
 * both are pruned at start and then hourly, on the main thread (the
 * journal has its own mutex), so the file does not grow for ever.
 */
#define JOURNAL_PRUNE_AGE_MS (7 * 24 * 3600 * INT64_C(1000))
#define JOURNAL_PRUNE_EVERY_MS (3600 * INT64_C(1000))

static void prune_journal(struct journal *j)
{
	struct kl_errinfo info = { 0 };
	size_t n = 0;

	if (!j)
		return;
	if (journal_prune(j, kl_wall_ms() - JOURNAL_PRUNE_AGE_MS, &n, &info) != KL_OK)
		log_warnx("journal: pruning old rows failed: %s", info.message);
	else if (n)
		log_info("journal: pruned %zu committed batch%s older than 7 days", n, n == 1 ? "" : "es");
}

/*
 * Creates the lease table if missing and waits until it is ACTIVE. An
 * unreachable DynamoDB at boot is waited out here (backoff up to 30 s),
 * not turned into an exit that systemd's start limit would end up
 * refusing; SIGTERM/SIGINT meanwhile give KL_ESTATE. Other errors (a
 * table with the wrong key, access denied) are returned.
 */
static enum kl_err ensure_table(struct lease_store *store, const char *table, const sigset_t *sigs,
				struct kl_errinfo *info)
{
	int64_t backoff = 1000;
	char last[512] = "";

	for (;;) {
		enum kl_err err = lease_store_ddb_ensure_table(store, 120000, info);
		char msg[512];
		int64_t until;

		if (err == KL_OK || !kl_err_retryable(err))
			return err;
		kl_errinfo_format(err, info, msg, sizeof(msg));
		if (strcmp(msg, last) != 0)
			log_warnx("lease: table '%s': %s, retrying in %" PRId64 " ms", table, msg, backoff);
		snprintf(last, sizeof(last), "%s", msg);
		until = kl_mono_ms() + backoff;
		for (int64_t left; (left = until - kl_mono_ms()) > 0;) {
			struct timespec ts = { left / 1000, (left % 1000) * 1000000L };
			int sig = sigtimedwait(sigs, NULL, &ts);

			if (sig == SIGTERM || sig == SIGINT)
				return KL_ESTATE;
			if (sig == SIGHUP && log_reopen() != 0)
				log_warn("kinlake: SIGHUP: cannot reopen the log file");
		}
		backoff = backoff * 2 > 30000 ? 30000 : backoff * 2;
	}
}

static void say(struct notify *n, const char *text)
{
	struct kl_errinfo info = { 0 };

	if (notify_send(n, text, &info) != KL_OK)
		log_debug("notify: %s", info.message);
}

int worker_main(int argc, char **argv)
{
	const char *path = KL_SYSCONFDIR "/kinlake/kinlake.conf";
	struct kl_config *cfg = NULL;
	struct cfg_errors errors;
	struct daemon dm = { 0 };
	struct worker_opts wo = { 0 };
	struct worker_env env = { 0 };
	struct worker *w = NULL;
	struct lease_store *store = NULL;
	struct lease_shards_kinesis *src = NULL;
	struct lease_shard_source shards;
	struct lease_store_ddb_config dc = { 0 };
	struct lease_shards_kinesis_config kc = { 0 };
	struct aws_client_config ddb_cfg, kin_cfg;
	struct notify nt;
	struct kl_errinfo info = { 0 };
	sigset_t sigs;
	char buf[512], line[400], last_line[400] = "";
	int64_t start_wall = kl_wall_ms(), next_metrics = 0, next_wd = 0, next_status = 0;
	int64_t next_prune = 0;
	int64_t wd_ms, first_signal_ms = 0;
	bool ready_sent = false, metrics_failing = false, http_up = false;
	int rc = 1;
	enum kl_err err;

	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			path = argv[++i];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			path = argv[i] + 9;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return run_usage(stdout);
		else
			return run_usage(stderr);
	}
	cfg_errors_init(&errors);
	err = cfg_load(path, &cfg, &errors);
	if (err) {
		cfg_errors_print(&errors, stderr);
		fprintf(stderr, "kinlake run: %s: %s\n", path, err == KL_ECONFIG ? "configuration errors" :
			kl_strerror(err));
		cfg_errors_done(&errors);
		return CFG_EXIT_CONFIG;
	}
	cfg_errors_done(&errors);
	log_set_level(cfg->log.level);
	if (*cfg->log.file && log_open_file(cfg->log.file) != 0) {
		fprintf(stderr, "kinlake run: cannot open log file %s: %s\n", cfg->log.file, strerror(errno));
		cfg_free(cfg);
		return CFG_EXIT_CONFIG;
	}

	/* Signals are taken with sigtimedwait() by the main thread: block
	 * them before any thread exists so every thread inherits the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

#ifdef M_ARENA_MAX
	/*
	 * glibc gives threads their own malloc arenas (up to 8 per core) and
	 * each keeps the blocks freed in it: with one thread per shard, every
	 * arena ends up holding a few GetRecords pages' worth of free memory
	 * (bench/RESULTS.md: 626 MiB peak RSS at 64 shards with the default,
	 * about half with 2 arenas). The threads mostly wait on the network,
	 * so 2 arenas cost no measurable contention. MALLOC_ARENA_MAX in the
	 * environment still wins (glibc reads it before main()); mallopt()
	 * must run before the threads start, which is now.
	 */
	if (!getenv("MALLOC_ARENA_MAX"))
		mallopt(M_ARENA_MAX, 2);
#endif
	log_info("kinlake: worker '%s' starting (version %s, stream '%s', table '%s', config %s)",
		 cfg->worker_id, PACKAGE_VERSION, cfg->stream, cfg->application, path);
	if (http_global_init() != KL_OK) {
		log_errorx("kinlake: HTTP library initialisation failed");
		goto out;
	}
	http_up = true;
	if (daemon_init(&dm, cfg) != 0)
		goto out;

	cfg_aws_client_config(cfg, CFG_SERVICE_DYNAMODB, &ddb_cfg);
	dc.table = cfg->application;
	dc.aws = &ddb_cfg;
	dc.creds = dm.creds;
	err = lease_store_ddb_new(&dc, &store, &info);
	if (!err) {
		log_info("lease: checking lease table '%s'", cfg->application);
		err = ensure_table(store, cfg->application, &sigs, &info);
	}
	if (err == KL_ESTATE) {
		log_info("kinlake: stopped before the lease table was ready");
		rc = 0;
		goto out;
	}
	if (err) {
		log_errorx("lease: table '%s': %s", cfg->application, kl_errinfo_format(err, &info, buf, sizeof(buf)));
		goto out;
	}
	if (dm.agg_on && cfg->aggregates.create_table) {
		struct aws_client ac = { 0 };

		err = aws_client_init(&ac, &dm.ddb_cfg, dm.creds);
		if (!err)
			err = agg_ensure_table(&ac, cfg->aggregates.table, 120000, &info);
		aws_client_done(&ac);
		if (err) {
			log_errorx("aggregates: table '%s': %s", cfg->aggregates.table,
				   kl_errinfo_format(err, &info, buf, sizeof(buf)));
			goto out;
		}
	}
	cfg_aws_client_config(cfg, CFG_SERVICE_KINESIS, &kin_cfg);
	kc.stream = cfg->stream;
	kc.aws = &kin_cfg;
	kc.creds = dm.creds;
	err = lease_shards_kinesis_new(&kc, &src, &info);
	if (err) {
		log_errorx("kinesis: stream '%s': %s", cfg->stream, kl_errinfo_format(err, &info, buf, sizeof(buf)));
		goto out;
	}
	lease_shards_kinesis_source(src, &shards);
	counting_store_init(&dm.store, store);
	counting_source_init(&dm.source, &shards);
	/* Before this worker takes any lease: other workers must learn of the
	 * crashes found at start-up when they take those shards. */
	poison_publish_crashes(&dm.store.pub, cfg->worker_id, dm.crashes, dm.n_crashes);

	cfg_lease_coord_config(cfg, &wo.lease);
	wo.max_threads = (uint32_t)cfg->consumer.threads;
	wo.release_on_shutdown = cfg->lease.release_on_shutdown;
	wo.version = PACKAGE_VERSION;
	env.store = &dm.store.pub;
	env.shards = &dm.source.pub;
	env.aws_stats = daemon_aws_stats;
	env.run_shard = daemon_run_shard;
	env.run_ctx = &dm;
	env.new_shard_ctx = daemon_new_shard_ctx;
	env.free_shard_ctx = daemon_free_shard_ctx;
	err = worker_new(&wo, &env, &w, &info);
	if (err) {
		log_errorx("kinlake: %s", kl_errinfo_format(err, &info, buf, sizeof(buf)));
		goto out;
	}
	if (notify_open(&nt, &info) != KL_OK)
		log_warnx("notify: %s; not talking to systemd", info.message);
	wd_ms = notify_watchdog_interval_ms(&nt);
	if (worker_start(w, &info) != KL_OK) {
		log_errorx("kinlake: %s", info.message);
		goto out_notify;
	}
	log_info("kinlake: worker '%s' running: up to %" PRIu32 " shards, failover %" PRId64 " ms",
		 cfg->worker_id, wo.max_threads, cfg->lease.failover_ms);

	for (;;) {
		struct timespec ts = { 0, 200 * 1000000L };
		siginfo_t si;
		int sig = sigtimedwait(&sigs, &si, &ts);
		int64_t now = kl_mono_ms();

		if (sig == SIGHUP) {
			if (log_reopen() != 0)
				log_warn("kinlake: SIGHUP: cannot reopen the log file");
			else
				log_info("kinlake: SIGHUP: log file reopened");
		} else if (sig == SIGTERM || sig == SIGINT) {
			if (!first_signal_ms) {
				first_signal_ms = now;
				log_info("kinlake: %s: stopping (grace %" PRId64 " ms)", sig == SIGTERM ?
					 "SIGTERM" : "SIGINT", cfg->shutdown_grace_ms);
				say(&nt, "STOPPING=1");
				worker_stop(w, cfg->shutdown_grace_ms);
			} else {
				log_info("kinlake: second signal: abandoning open batches now");
				worker_stop(w, 0);
			}
		}
		if (worker_poll(w))
			break;
		if (!ready_sent && worker_ready(w)) {
			ready_sent = true;
			log_info("kinlake: ready (first lease pass done)");
			say(&nt, "READY=1");
			next_status = 0;
		}
		if (now >= next_status) {
			next_status = now + 5000;
			worker_status_line(w, line, sizeof(line));
			if (strcmp(line, last_line) != 0) {
				struct kl_errinfo ni = { 0 };

				snprintf(last_line, sizeof(last_line), "%s", line);
				notify_status(&nt, line, &ni);
			}
		}
		/* Pet the watchdog only while the lease thread is alive: a
		 * stuck coordinator must get the worker restarted. It loops at
		 * least once a second unless a tick waits on DynamoDB, hence
		 * the 10 s floor. */
		if (wd_ms && now >= next_wd) {
			int64_t silence = 2 * wd_ms > 10000 ? 2 * wd_ms : 10000;

			next_wd = now + wd_ms;
			if (worker_alive(w, silence))
				say(&nt, "WATCHDOG=1");
			else
				log_warnx("kinlake: lease thread silent for over %" PRId64 " ms: not petting the watchdog",
					  silence);
		}
		if (*cfg->metrics.file && now >= next_metrics) {
			next_metrics = now + cfg->metrics.interval_ms;
			write_metrics(w, cfg, start_wall, &metrics_failing);
		}
		if (now >= next_prune) {
			next_prune = now + JOURNAL_PRUNE_EVERY_MS;
			prune_journal(dm.journal);
		}
	}

	if (worker_threads_left(w)) {
		/* Stuck in a call past the grace period: release what we hold
		 * (their writes are fenced by the lease counter) and leave
		 * without freeing what those threads still use. */
		log_warnx("kinlake: %zu shard thread%s did not stop in time; releasing leases and exiting",
			  worker_threads_left(w), worker_threads_left(w) == 1 ? "" : "s");
		worker_finish(w, &info);
		say(&nt, "STATUS=stopped (threads abandoned)");
		log_info("kinlake: worker '%s' stopped", cfg->worker_id);
		_exit(0);
	}
	worker_finish(w, &info);
	if (*cfg->metrics.file)
		write_metrics(w, cfg, start_wall, &metrics_failing);
	say(&nt, "STATUS=stopped");
	log_info("kinlake: worker '%s' stopped after %" PRId64 " ms of shutdown", cfg->worker_id,
		 kl_mono_ms() - first_signal_ms);
	rc = 0;
out_notify:
	notify_close(&nt);
out:
	worker_free(w);
	lease_shards_kinesis_free(src);
	lease_store_free(store);
	daemon_done(&dm);
	if (http_up)
		http_global_cleanup();
	log_close();
	cfg_free(cfg);
	return rc;
}
