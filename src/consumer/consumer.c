/* SPDX-License-Identifier: Apache-2.0 */
/*
 * consumer.c: the shard consumer's state machine (see consumer.h and
 * README.md). One thread runs it; other threads only request a stop and
 * read metrics.
 *
 * Invariants kept here: a page of GetRecords stays in memory until every
 * record of it was taken by the sink (a refused record is offered again
 * with the same transform result), except that a page the sink is too busy
 * to take while other shards wait for the page budget is given up: the
 * floor moves to the last record taken and reading restarts AT the record
 * being pushed (its refused record is then transformed again); records at
 * or below the floor (the resume point, then the last record
 * taken) are dropped, so re-reading a page can never duplicate; the lease
 * is checked before each GetRecords, before the first push of each page
 * and whenever its validity runs out; after KL_ELEASE_LOST nothing but
 * abandon() reaches the sink.
 */
#include "config.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "consumer.h"
#include "kpl.h"
#include "log.h"
#include "util.h"

/* Partition and explicit hash keys of one KPL user record, NUL-terminated. */
#define KEYBUF_CAP ((size_t)1 << 20)

/* What pushing (part of) a page came to. */
enum push_step {
	PUSH_PAGE_DONE = 0,  /* every record of the page was handled */
	PUSH_RETRY,          /* the sink refused a record (or no memory): back off */
	PUSH_BUSY,           /* the sink refused it with KL_ETHROTTLED (busy uploading) */
	PUSH_WAIT,           /* the lease is not processable right now */
	PUSH_LOST,           /* the lease is lost */
	PUSH_STOP,           /* a stop was requested */
};

/* How a wait ended. */
enum wait_rc {
	WAIT_OK = 0,   /* the time came */
	WAIT_STOP,     /* a stop was requested */
	WAIT_LOST,     /* the lease was lost meanwhile */
};

struct consumer {
	/* Settings (strings owned). */
	struct consumer_config cfg;
	char *shard_id;
	char *starting_hash_key;
	char *ending_hash_key;
	struct kpl_hash_range range;
	bool has_range;
	int64_t spacing_ms;           /* 1000 / max_calls_per_sec */
	struct aws_retry_policy backoff;

	struct consumer_deps deps;
	struct consumer_clock clock;  /* deps.clock, or the real one below */

	/* The real clock's interruptible sleep. */
	pthread_mutex_t wake_mu;
	pthread_cond_t wake_cv;
	bool woken;

	/* Stop requests (any thread). */
	atomic_bool stop_requested;
	_Atomic int64_t stop_deadline_ms;

	/* Everything below belongs to the consumer's thread. */
	bool ran;
	enum consumer_state state;
	int64_t state_since_ms;
	struct kl_rng rng;
	struct kpl_decoder *dec;
	struct buf keybuf;

	struct lease_esn resume;      /* where reading starts when nothing was read */
	struct lease_esn floor;       /* records at or below are dropped */
	char last_read_seq[LEASE_SEQ_MAX + 1];  /* last Kinesis record received; "" = none */
	char *iterator;               /* NULL: get one before the next GetRecords */

	struct kinesis_records *page; /* the records being pushed */
	struct buf *slot;             /* the budget slot held for page (NULL: none) */
	size_t pos;                   /* next record of the page */
	bool decoded;                 /* page->records[pos] is decoded into kpl */
	struct kpl_result kpl;
	size_t sub;                   /* next user record of kpl */
	bool page_above_floor;        /* a record of this page was above the floor */
	bool pushed_in_page;          /* ... and last_* name the last one taken */
	size_t last_pos;
	uint64_t last_subseq;
	bool pending;                 /* trec/res hold a record refused by the sink */
	bool crashed;                 /* ... and it goes to push_crashed(), not push() */
	uint32_t crash_attempts;
	struct kl_transform_record trec;
	struct xform_result res;

	uint64_t aggregates_reread;   /* KPL aggregates decoded twice (dropped pages) */
	bool end_seen;                /* a page without NextShardIterator was pushed */
	struct lease_shard_list children;  /* at shard end */

	int64_t next_call_ms;         /* earliest next GetRecords */
	int64_t valid_until_ms;       /* lease validity from the last check */
	int64_t last_lease_check_ms;
	int64_t last_tick_ms;
	bool sink_open;               /* resume_after() was asked: tick() is allowed */
	bool blocked_episode;
	int error_streak;             /* consecutive failures, for the backoff */
	int throttle_streak;
	int push_streak;

	/* Metrics: the thread's working copy, and what readers get. */
	struct consumer_metrics m;
	pthread_mutex_t metrics_mu;
	struct consumer_metrics pub;
};

const char *consumer_state_name(enum consumer_state state)
{
	switch (state) {
	case CONSUMER_WAITING_ON_PARENTS: return "waiting-on-parents";
	case CONSUMER_INITIALIZING: return "initializing";
	case CONSUMER_PROCESSING: return "processing";
	case CONSUMER_SHARD_END: return "shard-end";
	case CONSUMER_SHUTTING_DOWN: return "shutdown-requested";
	case CONSUMER_DONE: return "done";
	case CONSUMER_LEASE_LOST: return "lease-lost";
	case CONSUMER_STOPPED: return "stopped";
	case CONSUMER_ABANDONED: return "abandoned";
	case CONSUMER_STATE_COUNT: break;
	}
	return "unknown";
}

/* ---------------------------------------------------------------- lease_coord adapter */

static enum kl_err coord_check(void *ctx, const char *key, uint64_t token,
			       int64_t *ret_valid_until_ms)
{
	return lease_coord_check(ctx, key, token, ret_valid_until_ms);
}

static enum kl_err coord_shard_end(void *ctx, const char *key, uint64_t token,
				   const struct lease_shard *children, size_t n,
				   struct kl_errinfo *info)
{
	return lease_coord_shard_end(ctx, key, token, children, n, info);
}

static enum kl_err coord_release(void *ctx, const char *key, uint64_t token,
				 struct kl_errinfo *info)
{
	return lease_coord_release(ctx, key, token, info);
}

static const struct consumer_lease_ops coord_ops = {
	.check = coord_check,
	.shard_end = coord_shard_end,
	.release = coord_release,
};

void consumer_lease_coord(struct lease_coord *coord, struct consumer_lease *ret)
{
	ret->ops = &coord_ops;
	ret->ctx = coord;
}

/* ---------------------------------------------------------------- the real clock */

static int64_t real_mono_ms(void *ctx)
{
	(void)ctx;
	return kl_mono_ms();
}

/* Waits on the consumer's condition variable, so a stop request cuts the
 * sleep short. */
static void real_sleep_ms(void *ctx, int64_t ms)
{
	struct consumer *c = ctx;
	struct timespec until;

	if (ms <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)(ms / 1000);
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->wake_mu);
	while (!c->woken) {
		if (pthread_cond_timedwait(&c->wake_cv, &c->wake_mu, &until) != 0)
			break;  /* ETIMEDOUT (or an error: then just return) */
	}
	c->woken = false;
	pthread_mutex_unlock(&c->wake_mu);
}

static void real_wake(void *ctx)
{
	struct consumer *c = ctx;

	pthread_mutex_lock(&c->wake_mu);
	c->woken = true;
	pthread_cond_broadcast(&c->wake_cv);
	pthread_mutex_unlock(&c->wake_mu);
}

static int64_t now_ms(struct consumer *c)
{
	return c->clock.mono_ms(c->clock.ctx);
}

/* ---------------------------------------------------------------- lifecycle */

static enum kl_err dup_str(char **dst, const char *src)
{
	*dst = NULL;
	if (!src)
		return KL_OK;
	*dst = strdup(src);
	return *dst ? KL_OK : KL_ENOMEM;
}

void consumer_free(struct consumer *c)
{
	if (!c)
		return;
	kinesis_records_free(c->page);
	if (c->slot)
		consumer_budget_give(c->deps.budget, c->slot);
	free(c->iterator);
	lease_shard_list_done(&c->children);
	kpl_decoder_free(c->dec);
	buf_done(&c->keybuf);
	free(c->shard_id);
	free(c->starting_hash_key);
	free(c->ending_hash_key);
	pthread_mutex_destroy(&c->metrics_mu);
	pthread_cond_destroy(&c->wake_cv);
	pthread_mutex_destroy(&c->wake_mu);
	free(c);
}

static enum kl_err check_config(const struct consumer_config *cfg, const struct consumer_deps *deps,
				struct kl_errinfo *info)
{
	if (!cfg->shard_id || !*cfg->shard_id)
		return kl_errinfo_set(info, KL_EINVAL, "consumer: no shard id");
	if (cfg->checkpoint.kind == LEASE_ESN_NONE)
		return kl_errinfo_set(info, KL_EINVAL, "consumer: '%s' has no checkpoint",
				      cfg->shard_id);
	if (cfg->get_records_limit < 0 || cfg->get_records_limit > KINESIS_GET_RECORDS_MAX)
		return kl_errinfo_set(info, KL_EINVAL, "consumer: GetRecords limit %d not in 1..%d",
				      cfg->get_records_limit, KINESIS_GET_RECORDS_MAX);
	if (cfg->max_calls_per_sec < 0 || cfg->max_calls_per_sec > 5)
		return kl_errinfo_set(info, KL_EINVAL,
				      "consumer: max_calls_per_sec %d not in 1..5 (Kinesis allows 5)",
				      cfg->max_calls_per_sec);
	if (cfg->idle_ms < 0 || cfg->backoff_base_ms < 0 || cfg->throttle_base_ms < 0 ||
	    cfg->backoff_max_ms < 0 || cfg->poll_ms < 0 || cfg->tick_ms < 0 || cfg->tick_ms > 1000)
		return kl_errinfo_set(info, KL_EINVAL, "consumer: a negative interval, or tick_ms > 1000");
	if (!cfg->starting_hash_key != !cfg->ending_hash_key)
		return kl_errinfo_set(info, KL_EINVAL, "consumer: '%s' has half a hash range",
				      cfg->shard_id);
	if (!deps->kinesis.ops || !deps->kinesis.ops->get_shard_iterator ||
	    !deps->kinesis.ops->get_records || !deps->kinesis.ops->list_children ||
	    !deps->lease.ops || !deps->lease.ops->check || !deps->lease.ops->shard_end ||
	    !deps->sink.ops || !deps->sink.ops->push || !deps->sink.ops->blocked ||
	    !deps->sink.ops->tick || !deps->sink.ops->flush || !deps->sink.ops->abandon ||
	    !deps->sink.ops->resume_after || !deps->xform)
		return kl_errinfo_set(info, KL_EINVAL, "consumer: a dependency is missing");
	if (deps->guard.ops && (!deps->guard.ops->before || !deps->guard.ops->after ||
				!deps->sink.ops->push_crashed))
		return kl_errinfo_set(info, KL_EINVAL,
				      "consumer: a plugin guard needs before, after and the sink's push_crashed");
	if (deps->clock && (!deps->clock->mono_ms || !deps->clock->sleep_ms || !deps->clock->wake))
		return kl_errinfo_set(info, KL_EINVAL, "consumer: incomplete clock");
	return KL_OK;
}

enum kl_err consumer_new(const struct consumer_config *cfg, const struct consumer_deps *deps,
			 struct consumer **ret, struct kl_errinfo *info)
{
	struct consumer *c;
	pthread_condattr_t ca;
	enum kl_err err;

	err = check_config(cfg, deps, info);
	if (err)
		return err;
	c = calloc(1, sizeof(*c));
	if (!c)
		return kl_errinfo_set(info, KL_ENOMEM, "consumer: out of memory");
	pthread_mutex_init(&c->wake_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->wake_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&c->metrics_mu, NULL);
	buf_init(&c->keybuf, KEYBUF_CAP);

	c->cfg = *cfg;
	if (dup_str(&c->shard_id, cfg->shard_id) || dup_str(&c->starting_hash_key, cfg->starting_hash_key) ||
	    dup_str(&c->ending_hash_key, cfg->ending_hash_key)) {
		consumer_free(c);
		return kl_errinfo_set(info, KL_ENOMEM, "consumer: out of memory");
	}
	c->cfg.shard_id = c->shard_id;
	c->cfg.starting_hash_key = c->starting_hash_key;
	c->cfg.ending_hash_key = c->ending_hash_key;
	if (c->starting_hash_key) {
		err = kpl_hash_range_parse(c->starting_hash_key, c->ending_hash_key, info, &c->range);
		if (err) {
			consumer_free(c);
			return err;
		}
		c->has_range = true;
	}
	if (!c->cfg.get_records_limit)
		c->cfg.get_records_limit = CONSUMER_DEFAULT_LIMIT;
	if (!c->cfg.idle_ms)
		c->cfg.idle_ms = CONSUMER_DEFAULT_IDLE_MS;
	if (!c->cfg.max_calls_per_sec)
		c->cfg.max_calls_per_sec = CONSUMER_DEFAULT_CALLS_PER_SEC;
	if (!c->cfg.backoff_base_ms)
		c->cfg.backoff_base_ms = CONSUMER_DEFAULT_BACKOFF_BASE_MS;
	if (!c->cfg.throttle_base_ms)
		c->cfg.throttle_base_ms = CONSUMER_DEFAULT_THROTTLE_BASE_MS;
	if (!c->cfg.backoff_max_ms)
		c->cfg.backoff_max_ms = CONSUMER_DEFAULT_BACKOFF_MAX_MS;
	if (!c->cfg.poll_ms)
		c->cfg.poll_ms = CONSUMER_DEFAULT_POLL_MS;
	if (!c->cfg.tick_ms)
		c->cfg.tick_ms = CONSUMER_DEFAULT_TICK_MS;
	/* Rounded up, so that five calls never fit in less than a second. */
	c->spacing_ms = (1000 + c->cfg.max_calls_per_sec - 1) / c->cfg.max_calls_per_sec;
	c->backoff.base_delay_ms = (long)c->cfg.backoff_base_ms;
	c->backoff.throttle_base_delay_ms = (long)c->cfg.throttle_base_ms;
	c->backoff.max_delay_ms = (long)c->cfg.backoff_max_ms;
	if (c->cfg.seed)
		kl_rng_seed_value(&c->rng, c->cfg.seed);
	else
		kl_rng_seed(&c->rng);

	c->deps = *deps;
	if (deps->clock) {
		c->clock = *deps->clock;
	} else {
		c->clock.mono_ms = real_mono_ms;
		c->clock.sleep_ms = real_sleep_ms;
		c->clock.wake = real_wake;
		c->clock.ctx = c;
	}
	atomic_init(&c->stop_requested, false);
	atomic_init(&c->stop_deadline_ms, INT64_MAX);

	err = kpl_decoder_new(info, &c->dec);
	if (err) {
		consumer_free(c);
		return err;
	}
	c->state = CONSUMER_WAITING_ON_PARENTS;
	c->m.state = c->state;
	c->m.millis_behind_latest = -1;
	c->pub = c->m;
	*ret = c;
	return KL_OK;
}

void consumer_request_stop(struct consumer *c, int64_t grace_deadline_ms)
{
	int64_t cur = atomic_load(&c->stop_deadline_ms);

	while (grace_deadline_ms < cur &&
	       !atomic_compare_exchange_weak(&c->stop_deadline_ms, &cur, grace_deadline_ms))
		;
	atomic_store(&c->stop_requested, true);
	c->clock.wake(c->clock.ctx);
	if (c->deps.budget)
		consumer_budget_wake(c->deps.budget);
}

static bool stop_requested(const struct consumer *c)
{
	return atomic_load(&c->stop_requested);
}

/* ---------------------------------------------------------------- metrics */

/* Makes the working copy visible to consumer_get_metrics(). */
static void publish(struct consumer *c)
{
	const struct kpl_stats *ks = kpl_decoder_stats(c->dec);
	int64_t now = now_ms(c);

	c->m.state = c->state;
	c->m.kpl_aggregates = ks->aggregates - c->aggregates_reread;
	c->m.hash_range_dropped_aggregates = ks->filtered_aggregates;
	c->m.hash_range_dropped_records = ks->filtered_user_records;
	pthread_mutex_lock(&c->metrics_mu);
	c->pub = c->m;
	c->pub.state_ms[c->state] += now - c->state_since_ms;
	pthread_mutex_unlock(&c->metrics_mu);
}

void consumer_get_metrics(struct consumer *c, struct consumer_metrics *ret)
{
	pthread_mutex_lock(&c->metrics_mu);
	*ret = c->pub;
	pthread_mutex_unlock(&c->metrics_mu);
}

static void set_state(struct consumer *c, enum consumer_state s)
{
	int64_t now = now_ms(c);

	if (s == c->state)
		return;
	c->m.state_ms[c->state] += now - c->state_since_ms;
	c->state_since_ms = now;
	log_debug("consumer: '%s' %s -> %s", c->shard_id, consumer_state_name(c->state),
		  consumer_state_name(s));
	c->state = s;
	publish(c);
}

static void note_error(struct consumer *c, enum kl_err err, const struct kl_errinfo *info,
		       const char *what)
{
	char detail[200];

	c->m.last_error = err;
	snprintf(c->m.last_error_text, sizeof(c->m.last_error_text), "%s: %s", what,
		 kl_errinfo_format(err, info, detail, sizeof(detail)));
	log_debug("consumer: '%s' %s", c->shard_id, c->m.last_error_text);
}

static void copy_aws_stats(struct consumer *c)
{
	if (c->deps.kinesis.ops->stats)
		c->deps.kinesis.ops->stats(c->deps.kinesis.ctx, &c->m.aws);
}

/* ---------------------------------------------------------------- lease, sink, waits */

static enum kl_err lease_check(struct consumer *c)
{
	int64_t valid_until = INT64_MAX;
	enum kl_err err;

	err = c->deps.lease.ops->check(c->deps.lease.ctx, c->shard_id, c->cfg.lease_token,
				       &valid_until);
	c->last_lease_check_ms = now_ms(c);
	c->valid_until_ms = err == KL_OK ? valid_until : INT64_MIN;
	return err;
}

/* Ticks the sink when it is due. Returns KL_ELEASE_LOST when the sink says so. */
static enum kl_err maybe_tick(struct consumer *c, int64_t now)
{
	struct kl_errinfo info;
	enum kl_err err;

	if (!c->sink_open || now - c->last_tick_ms < c->cfg.tick_ms)
		return KL_OK;
	kl_errinfo_clear(&info);
	c->last_tick_ms = now;
	c->m.ticks++;
	err = c->deps.sink.ops->tick(c->deps.sink.ctx, now, &info);
	if (err == KL_ELEASE_LOST)
		return err;
	if (err)
		note_error(c, err, &info, "sink tick");
	return KL_OK;
}

/*
 * Waits until monotonic time until, ticking the sink (when open) and
 * re-checking the lease at least every poll_ms. A stop request ends the
 * wait unless the consumer is already shutting down (then the grace
 * deadline bounds it).
 */
static enum wait_rc wait_until(struct consumer *c, int64_t until)
{
	for (;;) {
		int64_t now = now_ms(c), next;

		if (c->state == CONSUMER_SHUTTING_DOWN) {
			int64_t deadline = atomic_load(&c->stop_deadline_ms);

			if (until > deadline)
				until = deadline;
		} else if (stop_requested(c)) {
			return WAIT_STOP;
		}
		if (maybe_tick(c, now) == KL_ELEASE_LOST)
			return WAIT_LOST;
		if (now >= until)
			return WAIT_OK;  /* the caller checks the lease next */
		if (now - c->last_lease_check_ms >= c->cfg.poll_ms &&
		    lease_check(c) == KL_ELEASE_LOST)
			return WAIT_LOST;
		next = until;
		if (c->sink_open && c->last_tick_ms + c->cfg.tick_ms < next)
			next = c->last_tick_ms + c->cfg.tick_ms;
		if (c->last_lease_check_ms + c->cfg.poll_ms < next)
			next = c->last_lease_check_ms + c->cfg.poll_ms;
		if (next <= now)
			next = now + 1;
		publish(c);
		c->clock.sleep_ms(c->clock.ctx, next - now);
	}
}

static enum wait_rc wait_for(struct consumer *c, int64_t ms)
{
	return wait_until(c, now_ms(c) + ms);
}

/* The backoff before the streak-th retry: full jitter, capped. */
static int64_t backoff_ms(struct consumer *c, int streak, bool throttled)
{
	return aws_backoff_ms(&c->backoff, &c->rng, streak, throttled ? 1 : 0);
}

/* Adds one to a failure streak (capped: it only feeds the backoff). */
static int bump(int *streak)
{
	if (*streak < 64)
		(*streak)++;
	return *streak;
}

/* Counts a failed call and returns how long to back off before the next. */
static int64_t after_error(struct consumer *c, enum kl_err err, const struct kl_errinfo *info,
			   const char *what)
{
	note_error(c, err, info, what);
	c->m.retries++;
	if (err == KL_ETHROTTLED) {
		c->m.throttles++;
		return backoff_ms(c, bump(&c->throttle_streak), true);
	}
	return backoff_ms(c, bump(&c->error_streak), false);
}

static enum consumer_state wait_rc_state(enum wait_rc rc)
{
	return rc == WAIT_LOST ? CONSUMER_LEASE_LOST : CONSUMER_SHUTTING_DOWN;
}

/* Moves the next GetRecords to at, never earlier than the pacing allows. */
static void defer_next_call(struct consumer *c, int64_t at)
{
	if (c->next_call_ms < at)
		c->next_call_ms = at;
}

/* ---------------------------------------------------------------- iterators */

static void resume_position(const struct consumer *c, struct kinesis_position *pos)
{
	memset(pos, 0, sizeof(*pos));
	if (c->last_read_seq[0]) {
		pos->type = KINESIS_ITER_AFTER_SEQUENCE_NUMBER;
		pos->sequence_number = c->last_read_seq;
		return;
	}
	switch (c->resume.kind) {
	case LEASE_ESN_SEQ:
		/* AT, not AFTER: the rest of a KPL aggregate may follow the
		 * resume point; the floor drops what was delivered. */
		pos->type = KINESIS_ITER_AT_SEQUENCE_NUMBER;
		pos->sequence_number = c->resume.seq;
		break;
	case LEASE_ESN_LATEST:
		pos->type = KINESIS_ITER_LATEST;
		break;
	case LEASE_ESN_AT_TIMESTAMP:
		pos->type = KINESIS_ITER_AT_TIMESTAMP;
		pos->timestamp_ms = c->cfg.at_timestamp_ms;
		break;
	case LEASE_ESN_TRIM_HORIZON:
	case LEASE_ESN_NONE:
	case LEASE_ESN_SHARD_END:
		pos->type = KINESIS_ITER_TRIM_HORIZON;
		break;
	}
}

/*
 * Gets an iterator (one attempt). KL_OK, or the error after scheduling the
 * retry in next_call_ms.
 */
static enum kl_err fetch_iterator(struct consumer *c)
{
	struct kinesis_position pos;
	struct kl_errinfo info;
	char *it = NULL;
	enum kl_err err;

	resume_position(c, &pos);
	kl_errinfo_clear(&info);
	c->m.get_iterator_calls++;
	err = c->deps.kinesis.ops->get_shard_iterator(c->deps.kinesis.ctx, c->shard_id, &pos, &it,
						      &info);
	copy_aws_stats(c);
	if (err) {
		int64_t delay = after_error(c, err, &info, "GetShardIterator");

		defer_next_call(c, now_ms(c) + delay);
		return err;
	}
	free(c->iterator);
	c->iterator = it;
	c->error_streak = 0;
	c->throttle_streak = 0;
	return KL_OK;
}

/* ---------------------------------------------------------------- records */

/* Is (seq, subseq) at or below the floor? Records of a page ascend, so
 * once one is above, the rest of the page is too. */
static bool below_floor(struct consumer *c, const char *seq, uint64_t subseq)
{
	int cmp;

	if (c->page_above_floor || c->floor.kind != LEASE_ESN_SEQ)
		return false;
	cmp = lease_dec_cmp(seq, c->floor.seq);
	if (cmp > 0) {
		c->page_above_floor = true;
		return false;
	}
	return cmp < 0 || subseq <= c->floor.subseq;
}

/* Copies a KPL user record's keys (not NUL-terminated) into keybuf. */
static enum kl_err user_record_keys(struct consumer *c, const struct kpl_record *ur,
				    const char *outer_key, const char **ret_pk, const char **ret_ehk)
{
	size_t ehk_at;

	buf_reset(&c->keybuf);
	*ret_pk = outer_key;
	*ret_ehk = NULL;
	if (ur->partition_key) {
		if (buf_append(&c->keybuf, ur->partition_key, ur->partition_key_len) ||
		    buf_append_byte(&c->keybuf, 0))
			return KL_ENOMEM;
	}
	ehk_at = c->keybuf.len;
	if (ur->explicit_hash_key) {
		if (buf_append(&c->keybuf, ur->explicit_hash_key, ur->explicit_hash_key_len) ||
		    buf_append_byte(&c->keybuf, 0))
			return KL_ENOMEM;
		*ret_ehk = c->keybuf.data + ehk_at;
	}
	if (ur->partition_key)
		*ret_pk = c->keybuf.data;
	return KL_OK;
}

static void count_result(struct consumer *c, enum kl_transform_result r)
{
	switch (r) {
	case KL_TRANSFORM_OK: c->m.plugin_ok++; break;
	case KL_TRANSFORM_DROPPED: c->m.plugin_dropped++; break;
	case KL_TRANSFORM_FAILED: c->m.plugin_failed++; break;
	}
}

/*
 * Runs the user records of the page from (pos, sub) through the plugin
 * and into the sink, stopping at the first refusal. The hot path: no
 * allocation, one clock read per record.
 */
static enum push_step push_page(struct consumer *c)
{
	const struct record_sink *sink = &c->deps.sink;
	const struct consumer_guard *guard = c->deps.guard.ops ? &c->deps.guard : NULL;
	struct kl_errinfo info;
	enum kl_err err;

	/* Cleared once: every error below ends this call. */
	kl_errinfo_clear(&info);
	while (c->pos < c->page->n_records) {
		const struct kinesis_record *kr = &c->page->records[c->pos];
		size_t n_user;

		if (!c->decoded) {
			err = kpl_decode(c->dec, kr->data, kr->data_len, c->has_range ? &c->range : NULL,
					 &info, &c->kpl);
			if (err) {
				note_error(c, err, &info, "KPL decode");
				return PUSH_RETRY;
			}
			c->decoded = true;
			c->sub = 0;
			if (c->kpl.verdict != KPL_FILTERED)
				c->m.user_records += c->kpl.nrecords;
		}
		n_user = c->kpl.verdict == KPL_FILTERED ? 0 : c->kpl.nrecords;
		for (; c->sub < n_user; c->sub++) {
			if (stop_requested(c))
				return PUSH_STOP;
			if (!c->pending) {
				const struct kpl_record *ur = &c->kpl.records[c->sub];
				uint64_t subseq = c->kpl.verdict == KPL_AGGREGATE ? ur->sub_sequence_number : 0;
				struct kl_transform_record *t = &c->trec;

				if (below_floor(c, kr->sequence_number, subseq)) {
					c->m.esn_filtered++;
					continue;
				}
				if (user_record_keys(c, ur, kr->partition_key, &t->partition_key,
						     &t->explicit_hash_key) != KL_OK) {
					note_error(c, KL_ENOMEM, NULL, "KPL keys");
					return PUSH_RETRY;
				}
				t->data = ur->data;
				t->len = ur->len;
				t->sequence_number = kr->sequence_number;
				t->sub_sequence_number = subseq;
				t->shard_id = c->shard_id;
				t->approximate_arrival_ms = kr->arrival_ms;
				c->crashed = guard &&
					     guard->ops->before(guard->ctx, t, &c->crash_attempts) ==
						     CONSUMER_GUARD_CRASHED;
				if (c->crashed) {
					c->m.plugin_crashed++;
				} else {
					err = xform_run(c->deps.xform, t, &c->res);
					if (guard)
						guard->ops->after(guard->ctx, t);
					if (err != KL_OK) {
						note_error(c, KL_ENOMEM, NULL, "transform");
						return PUSH_RETRY;
					}
					count_result(c, c->res.result);
				}
				c->pending = true;
			}
			/* Never push on a validity that has run out. */
			if (now_ms(c) >= c->valid_until_ms) {
				err = lease_check(c);
				if (err == KL_ELEASE_LOST)
					return PUSH_LOST;
				if (err)
					return PUSH_WAIT;
			}
			if (c->crashed)
				err = sink->ops->push_crashed(sink->ctx, &c->trec, c->crash_attempts, &info);
			else
				err = sink->ops->push(sink->ctx, &c->trec, &c->res, &info);
			if (err == KL_ELEASE_LOST) {
				note_error(c, err, &info, "sink push");
				return PUSH_LOST;
			}
			if (err) {
				c->m.push_retries++;
				note_error(c, err, &info, "sink push");
				return err == KL_ETHROTTLED ? PUSH_BUSY : PUSH_RETRY;
			}
			c->pending = false;
			c->push_streak = 0;
			c->m.pushed++;
			c->pushed_in_page = true;
			c->last_pos = c->pos;
			c->last_subseq = c->trec.sub_sequence_number;
		}
		c->pos++;
		c->decoded = false;
	}
	return PUSH_PAGE_DONE;
}

static enum kl_err children_from_page(struct consumer *c)
{
	lease_shard_list_done(&c->children);
	for (size_t i = 0; i < c->page->n_children; i++) {
		const struct kinesis_child_shard *k = &c->page->children[i];
		struct lease_shard s;
		char *strs[5] = { NULL, NULL, NULL, NULL, NULL };
		enum kl_err err;

		/* lease_shard holds non-const strings; copy to stay honest. */
		memset(&s, 0, sizeof(s));
		if (dup_str(&strs[0], k->shard_id) ||
		    dup_str(&strs[1], k->n_parents > 0 ? k->parent_shard_ids[0] : NULL) ||
		    dup_str(&strs[2], k->n_parents > 1 ? k->parent_shard_ids[1] : NULL) ||
		    dup_str(&strs[3], k->starting_hash_key && *k->starting_hash_key ?
				      k->starting_hash_key : NULL) ||
		    dup_str(&strs[4], k->ending_hash_key && *k->ending_hash_key ?
				      k->ending_hash_key : NULL)) {
			err = KL_ENOMEM;
		} else {
			s.shard_id = strs[0];
			s.parent_id = strs[1];
			s.adjacent_parent_id = strs[2];
			s.starting_hash_key = strs[3];
			s.ending_hash_key = strs[4];
			err = lease_shard_list_add(&c->children, &s);
		}
		for (size_t j = 0; j < KL_ARRAY_LEN(strs); j++)
			free(strs[j]);
		if (err) {
			lease_shard_list_done(&c->children);
			return err;
		}
	}
	return KL_OK;
}

/* Gives the budget slot back, if one is held (the page is gone). */
static void give_slot(struct consumer *c)
{
	if (c->slot) {
		consumer_budget_give(c->deps.budget, c->slot);
		c->slot = NULL;
	}
}

/* Moves the floor to the last record of the page the sink took, if any. */
static void floor_to_last_taken(struct consumer *c)
{
	if (c->pushed_in_page) {
		const char *seq = c->page->records[c->last_pos].sequence_number;

		c->floor.kind = LEASE_ESN_SEQ;
		c->floor.subseq = c->last_subseq;
		snprintf(c->floor.seq, sizeof(c->floor.seq), "%s", seq);
		c->m.last_pushed = c->floor;
	}
}

/*
 * The page was pushed completely: move the floor to the last record taken,
 * keep its children if it ended the shard, and free it.
 */
static void page_done(struct consumer *c)
{
	const struct kinesis_records *p = c->page;

	floor_to_last_taken(c);
	if (!p->next_iterator) {
		c->end_seen = true;
		if (p->n_children && children_from_page(c) != KL_OK)
			note_error(c, KL_ENOMEM, NULL, "child shards");
	}
	kinesis_records_free(c->page);
	c->page = NULL;
	give_slot(c);
}

/*
 * May the page be given up because the sink said KL_ETHROTTLED? Only to
 * a budget that has no free slot (others wait, or would: an uncontended
 * worker keeps its page rather than read it again), and not while the
 * refused record is one the guard routed to push_crashed(): the guard
 * moves past a record it says CRASHED for, so asked again after a re-read
 * it would let the plugin run the record that crashed it.
 */
static bool may_drop_page(struct consumer *c)
{
	return c->deps.budget && c->slot && !(c->pending && c->crashed) &&
	       consumer_budget_available(c->deps.budget) == 0;
}

/*
 * Gives a half-pushed page up while the sink is busy (an upload in flight
 * can take many seconds), so the slot serves shards that can make
 * progress: the floor moves to the last record taken, the page is freed,
 * the slot given back, and the next read opens AT_SEQUENCE_NUMBER of the
 * record being pushed (records before it were all handled): the floor
 * drops its user records already taken, including the first part of a
 * split KPL aggregate. Nothing of the page counts as the shard's end.
 * The refused record (c->pending) is transformed again after the re-read:
 * a guard sees before()/after() twice for it, balanced. The per-record
 * metrics of what will be read again are taken back here, so they still
 * count each record once; records_reread and pages_dropped show the cost.
 * The next read waits out the push backoff on top of the pacing, so a sink
 * that refuses without saying blocked() cannot make it spin.
 */
static void drop_page(struct consumer *c)
{
	const struct kinesis_records *p = c->page;
	const struct kinesis_record *kr = &p->records[c->pos];

	floor_to_last_taken(c);
	for (size_t i = c->pos; i < p->n_records; i++) {
		c->m.records_read--;
		c->m.bytes_read -= p->records[i].data_len;
		c->m.records_reread++;
	}
	if (c->decoded && c->kpl.verdict != KPL_FILTERED) {
		/* Decoded again after the re-read; its first c->sub user
		 * records (taken, or below the old floor) are then filtered. */
		c->m.user_records -= c->kpl.nrecords;
		c->m.esn_filtered -= c->sub;
		if (c->kpl.verdict == KPL_AGGREGATE)
			c->aggregates_reread++;
	}
	if (c->pending) {
		if (c->crashed) {
			c->m.plugin_crashed--;
		} else {
			switch (c->res.result) {
			case KL_TRANSFORM_OK: c->m.plugin_ok--; break;
			case KL_TRANSFORM_DROPPED: c->m.plugin_dropped--; break;
			case KL_TRANSFORM_FAILED: c->m.plugin_failed--; break;
			}
		}
	}
	c->resume.kind = LEASE_ESN_SEQ;
	c->resume.subseq = 0;
	snprintf(c->resume.seq, sizeof(c->resume.seq), "%s", kr->sequence_number);
	/* resume_position() prefers AFTER the last record read: that would
	 * skip the rest of this page. */
	c->last_read_seq[0] = '\0';
	free(c->iterator);
	c->iterator = NULL;
	c->m.pages_dropped++;
	log_debug("consumer: '%s' sink busy, page given up at %s (%zu records to read again)",
		  c->shard_id, kr->sequence_number, p->n_records - c->pos);
	kinesis_records_free(c->page);
	c->page = NULL;
	c->pending = false;
	c->decoded = false;
	give_slot(c);
	defer_next_call(c, now_ms(c) + backoff_ms(c, bump(&c->push_streak), false));
}

/* Takes a GetRecords answer: the iterator moves on, pacing is set. */
static void take_page(struct consumer *c, struct kinesis_records *r, int64_t call_start)
{
	bool behind;
	int64_t now = now_ms(c);

	c->m.records_read += r->n_records;
	c->m.bytes_read += r->data_bytes;
	c->m.millis_behind_latest = r->millis_behind_latest;
	if (r->n_records) {
		const char *last = r->records[r->n_records - 1].sequence_number;

		snprintf(c->last_read_seq, sizeof(c->last_read_seq), "%s", last);
	}
	if (r->next_iterator) {
		char *it = strdup(r->next_iterator);

		/* Without memory keep the old iterator: re-reading is harmless
		 * (the floor drops what was taken). */
		if (it) {
			free(c->iterator);
			c->iterator = it;
		}
	}
	behind = r->millis_behind_latest > 0 || r->n_records >= (size_t)c->cfg.get_records_limit;
	c->next_call_ms = call_start + c->spacing_ms;
	if (!behind && c->next_call_ms < now + c->cfg.idle_ms)
		c->next_call_ms = now + c->cfg.idle_ms;
	c->page = r;
	c->pos = 0;
	c->decoded = false;
	c->pending = false;
	c->page_above_floor = false;
	c->pushed_in_page = false;
	c->valid_until_ms = INT64_MIN;  /* check the lease before the first push */
}

/*
 * A page without a next iterator was pushed. The end is confirmed by
 * children (ChildShards, else ListShards); with none, the answer had
 * neither an iterator nor an end: GetRecords is repeated with the same
 * iterator. Returns SHARD_END, PROCESSING (go on) or a wait outcome.
 */
static enum consumer_state resolve_end(struct consumer *c)
{
	struct kl_errinfo info;
	enum kl_err err;
	int64_t delay;

	if (c->children.n)
		return CONSUMER_SHARD_END;
	kl_errinfo_clear(&info);
	err = c->deps.kinesis.ops->list_children(c->deps.kinesis.ctx, c->shard_id, &c->children,
						 &info);
	copy_aws_stats(c);
	if (err == KL_OK && c->children.n) {
		c->error_streak = 0;
		return CONSUMER_SHARD_END;
	}
	if (err == KL_OK) {
		kl_errinfo_set(&info, KL_EPARSE, "no NextShardIterator and no child shards");
		err = KL_EPARSE;
	}
	lease_shard_list_done(&c->children);
	delay = after_error(c, err, &info, "shard end");
	if (err == KL_EPARSE)
		c->end_seen = false;  /* read again with the same iterator */
	defer_next_call(c, now_ms(c) + delay);
	return CONSUMER_PROCESSING;
}

/* ---------------------------------------------------------------- states */

static enum consumer_state st_waiting(struct consumer *c)
{
	for (;;) {
		enum kl_err err;
		enum wait_rc rc;

		if (stop_requested(c))
			return CONSUMER_SHUTTING_DOWN;
		err = lease_check(c);
		if (err == KL_OK)
			return CONSUMER_INITIALIZING;
		if (err == KL_ELEASE_LOST)
			return CONSUMER_LEASE_LOST;
		rc = wait_for(c, c->cfg.poll_ms);
		if (rc != WAIT_OK)
			return wait_rc_state(rc);
	}
}

static enum consumer_state st_initializing(struct consumer *c)
{
	struct lease_esn esn;

	memset(&esn, 0, sizeof(esn));
	c->deps.sink.ops->resume_after(c->deps.sink.ctx, &esn);
	c->sink_open = true;
	c->last_tick_ms = now_ms(c);
	if (esn.kind == LEASE_ESN_NONE)
		esn = c->cfg.checkpoint;
	if (esn.kind == LEASE_ESN_SHARD_END)
		return CONSUMER_DONE;  /* finished earlier: nothing to read */
	c->resume = esn;
	c->floor = esn;
	if (esn.kind == LEASE_ESN_SEQ)
		c->m.last_pushed = esn;
	for (;;) {
		enum kl_err err;
		enum wait_rc rc;

		if (stop_requested(c))
			return CONSUMER_SHUTTING_DOWN;
		err = lease_check(c);
		if (err == KL_ELEASE_LOST)
			return CONSUMER_LEASE_LOST;
		if (err == KL_OK && fetch_iterator(c) == KL_OK)
			return CONSUMER_PROCESSING;
		rc = wait_until(c, err == KL_OK ? c->next_call_ms : now_ms(c) + c->cfg.poll_ms);
		if (rc != WAIT_OK)
			return wait_rc_state(rc);
	}
}

static enum consumer_state st_processing(struct consumer *c)
{
	for (;;) {
		struct kinesis_records *r = NULL;
		struct kl_errinfo info;
		enum kl_err err;
		enum wait_rc rc;
		int64_t start;

		if (stop_requested(c))
			return CONSUMER_SHUTTING_DOWN;
		if (c->page) {
			switch (push_page(c)) {
			case PUSH_PAGE_DONE:
				page_done(c);
				if (maybe_tick(c, now_ms(c)) == KL_ELEASE_LOST)
					return CONSUMER_LEASE_LOST;
				publish(c);
				continue;
			case PUSH_LOST:
				return CONSUMER_LEASE_LOST;
			case PUSH_STOP:
				return CONSUMER_SHUTTING_DOWN;
			case PUSH_WAIT:
				rc = wait_for(c, c->cfg.poll_ms);
				break;
			case PUSH_BUSY:
				if (may_drop_page(c)) {
					/* The wait for the sink happens below, without
					 * the page ("no reading while the sink is full"). */
					drop_page(c);
					publish(c);
					continue;
				}
				rc = wait_for(c, backoff_ms(c, bump(&c->push_streak), false));
				break;
			case PUSH_RETRY:
			default:
				rc = wait_for(c, backoff_ms(c, bump(&c->push_streak), false));
				break;
			}
			if (rc != WAIT_OK)
				return wait_rc_state(rc);
			continue;
		}
		if (c->end_seen) {
			enum consumer_state next = resolve_end(c);

			if (next != CONSUMER_PROCESSING)
				return next;
			if (c->end_seen) {  /* ListShards failed: retry it after the backoff */
				rc = wait_until(c, c->next_call_ms);
				if (rc != WAIT_OK)
					return wait_rc_state(rc);
				continue;
			}
		}
		/* Backpressure: no reading while the sink is full. */
		if (c->deps.sink.ops->blocked(c->deps.sink.ctx)) {
			if (!c->blocked_episode) {
				c->blocked_episode = true;
				c->m.blocked_waits++;
			}
			rc = wait_for(c, c->cfg.tick_ms);
			if (rc != WAIT_OK)
				return wait_rc_state(rc);
			continue;
		}
		c->blocked_episode = false;
		if (now_ms(c) < c->next_call_ms) {
			rc = wait_until(c, c->next_call_ms);
			if (rc != WAIT_OK)
				return wait_rc_state(rc);
			continue;  /* re-check the sink and stop requests */
		}
		err = lease_check(c);
		if (err == KL_ELEASE_LOST)
			return CONSUMER_LEASE_LOST;
		if (err) {
			rc = wait_for(c, c->cfg.poll_ms);
			if (rc != WAIT_OK)
				return wait_rc_state(rc);
			continue;
		}
		if (!c->iterator) {
			if (fetch_iterator(c) != KL_OK)
				continue;  /* next_call_ms holds the backoff */
		}
		/* The worker-wide page budget: a slot for the body and the page
		 * until the page is pushed. Waiting for one is like waiting on
		 * a blocked sink: tick, then re-check stop, sink and lease. */
		if (c->deps.budget && !c->slot) {
			c->slot = consumer_budget_take(c->deps.budget, c->cfg.tick_ms);
			if (!c->slot) {
				c->m.budget_waits++;
				if (maybe_tick(c, now_ms(c)) == KL_ELEASE_LOST)
					return CONSUMER_LEASE_LOST;
				publish(c);
				continue;
			}
		}
		start = now_ms(c);
		kl_errinfo_clear(&info);
		c->m.get_records_calls++;
		if (c->slot && c->deps.kinesis.ops->get_records_buf)
			err = c->deps.kinesis.ops->get_records_buf(c->deps.kinesis.ctx, c->iterator,
								   c->cfg.get_records_limit, c->slot,
								   &r, &info);
		else
			err = c->deps.kinesis.ops->get_records(c->deps.kinesis.ctx, c->iterator,
							       c->cfg.get_records_limit, &r, &info);
		copy_aws_stats(c);
		if (err != KL_OK)
			give_slot(c);   /* no page: nothing to hold the slot for */
		if (err == KL_OK) {
			c->error_streak = 0;
			c->throttle_streak = 0;
			take_page(c, r, start);
			continue;
		}
		if (err == KL_EEXPIRED) {
			/* AFTER_SEQUENCE_NUMBER of the last record read (or the
			 * resume point): no backoff, the pacing still holds. */
			note_error(c, err, &info, "GetRecords");
			c->m.iterator_expired++;
			free(c->iterator);
			c->iterator = NULL;
			c->next_call_ms = start + c->spacing_ms;
			continue;
		}
		{
			int64_t delay = after_error(c, err, &info, "GetRecords");
			int64_t at = now_ms(c) + delay;

			/* A final error may be the iterator's fault: start afresh
			 * from the last record read (nothing is lost or repeated). */
			if (!kl_err_retryable(err)) {
				free(c->iterator);
				c->iterator = NULL;
			}
			c->next_call_ms = start + c->spacing_ms;
			defer_next_call(c, at);
		}
	}
}

static enum consumer_state st_shard_end(struct consumer *c)
{
	struct kl_errinfo info;
	enum kl_err err;
	enum wait_rc rc;
	int streak = 0;

	/* Everything taken so far must be committed before SHARD_END. */
	for (;;) {
		if (stop_requested(c))
			return CONSUMER_SHUTTING_DOWN;
		kl_errinfo_clear(&info);
		err = c->deps.sink.ops->flush(c->deps.sink.ctx, &info);
		if (err == KL_OK)
			break;
		note_error(c, err, &info, "sink flush");
		if (err == KL_ELEASE_LOST)
			return CONSUMER_LEASE_LOST;
		rc = wait_for(c, backoff_ms(c, bump(&streak), false));
		if (rc != WAIT_OK)
			return wait_rc_state(rc);
	}
	c->m.flushes++;
	streak = 0;
	for (;;) {
		int64_t delay;

		kl_errinfo_clear(&info);
		err = c->deps.lease.ops->shard_end(c->deps.lease.ctx, c->shard_id, c->cfg.lease_token,
						   c->children.v, c->children.n, &info);
		if (err == KL_OK)
			return CONSUMER_DONE;
		note_error(c, err, &info, "shard end");
		if (err == KL_ELEASE_LOST)
			return CONSUMER_LEASE_LOST;
		/* KL_ESTATE: a merge whose co-parent has no lease yet. */
		delay = err == KL_ESTATE ? c->cfg.poll_ms : backoff_ms(c, bump(&streak), false);
		rc = wait_for(c, delay);
		if (rc != WAIT_OK)
			return wait_rc_state(rc);
	}
}

static enum consumer_state st_shutting_down(struct consumer *c)
{
	struct kl_errinfo info;
	enum kl_err err;
	int streak = 0;

	if (lease_check(c) == KL_ELEASE_LOST)
		return CONSUMER_LEASE_LOST;
	/* Stopped before INITIALIZING: the sink never took anything. */
	for (; c->sink_open;) {
		enum wait_rc rc;

		if (now_ms(c) >= atomic_load(&c->stop_deadline_ms))
			return CONSUMER_ABANDONED;
		kl_errinfo_clear(&info);
		err = c->deps.sink.ops->flush(c->deps.sink.ctx, &info);
		if (err == KL_OK)
			break;
		note_error(c, err, &info, "sink flush");
		if (err == KL_ELEASE_LOST)
			return CONSUMER_LEASE_LOST;
		rc = wait_for(c, backoff_ms(c, bump(&streak), false));
		if (rc == WAIT_LOST)
			return CONSUMER_LEASE_LOST;
	}
	if (c->sink_open)
		c->m.flushes++;
	if (c->cfg.release_on_stop && c->deps.lease.ops->release) {
		kl_errinfo_clear(&info);
		err = c->deps.lease.ops->release(c->deps.lease.ctx, c->shard_id, c->cfg.lease_token,
						 &info);
		if (err)
			note_error(c, err, &info, "lease release");
	}
	return CONSUMER_STOPPED;
}

enum consumer_state consumer_run(struct consumer *c)
{
	enum consumer_state s;

	if (c->ran)
		return c->state;
	c->ran = true;
	c->state_since_ms = now_ms(c);
	c->last_lease_check_ms = c->state_since_ms;
	s = st_waiting(c);
	for (;;) {
		set_state(c, s);
		switch (s) {
		case CONSUMER_WAITING_ON_PARENTS: s = st_waiting(c); continue;
		case CONSUMER_INITIALIZING: s = st_initializing(c); continue;
		case CONSUMER_PROCESSING: s = st_processing(c); continue;
		case CONSUMER_SHARD_END: s = st_shard_end(c); continue;
		case CONSUMER_SHUTTING_DOWN: s = st_shutting_down(c); continue;
		case CONSUMER_LEASE_LOST:
		case CONSUMER_ABANDONED:
			if (c->sink_open)
				c->deps.sink.ops->abandon(c->deps.sink.ctx);
			break;
		case CONSUMER_DONE:
		case CONSUMER_STOPPED:
		case CONSUMER_STATE_COUNT:
			break;
		}
		break;
	}
	/* The page and its iterator are of no use any more. */
	kinesis_records_free(c->page);
	c->page = NULL;
	give_slot(c);
	publish(c);
	return c->state;
}

/* ---------------------------------------------------------------- page budget */

/*
 * A counting semaphore whose free slots are a stack of body buffers. The
 * buffers live as long as the budget; wake_gen counts wake() calls so that
 * a waiter can tell a wake from a spurious return.
 */
struct consumer_budget {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned n_slots;
	unsigned n_free;
	uint64_t wake_gen;
	struct buf *bodies;           /* n_slots buffers, owned */
	struct buf **free_stack;      /* n_free of them are free */
};

enum kl_err consumer_budget_new(unsigned slots, size_t body_cap, struct consumer_budget **ret)
{
	struct consumer_budget *b;
	pthread_condattr_t ca;

	if (slots == 0)
		return KL_EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return KL_ENOMEM;
	b->bodies = calloc(slots, sizeof(*b->bodies));
	b->free_stack = calloc(slots, sizeof(*b->free_stack));
	if (!b->bodies || !b->free_stack) {
		free(b->bodies);
		free(b->free_stack);
		free(b);
		return KL_ENOMEM;
	}
	pthread_mutex_init(&b->mu, NULL);
	/* Timed waits on the monotonic clock: wall-clock steps must not
	 * stretch or cut them. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cv, &ca);
	pthread_condattr_destroy(&ca);
	for (unsigned i = 0; i < slots; i++) {
		buf_init(&b->bodies[i], body_cap);
		b->free_stack[i] = &b->bodies[i];
	}
	b->n_slots = b->n_free = slots;
	*ret = b;
	return KL_OK;
}

void consumer_budget_free(struct consumer_budget *b)
{
	if (!b)
		return;
	for (unsigned i = 0; i < b->n_slots; i++)
		buf_done(&b->bodies[i]);
	free(b->bodies);
	free(b->free_stack);
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

struct buf *consumer_budget_take(struct consumer_budget *b, int64_t timeout_ms)
{
	struct timespec until;
	struct buf *body = NULL;
	uint64_t gen;

	clock_gettime(CLOCK_MONOTONIC, &until);
	if (timeout_ms > 0) {
		until.tv_sec += (time_t)(timeout_ms / 1000);
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&b->mu);
	gen = b->wake_gen;
	while (b->n_free == 0 && b->wake_gen == gen && timeout_ms > 0) {
		if (pthread_cond_timedwait(&b->cv, &b->mu, &until) != 0)
			break;  /* ETIMEDOUT */
	}
	if (b->n_free > 0 && b->wake_gen == gen)
		body = b->free_stack[--b->n_free];
	pthread_mutex_unlock(&b->mu);
	return body;
}

void consumer_budget_give(struct consumer_budget *b, struct buf *body)
{
	pthread_mutex_lock(&b->mu);
	/* A programmer error, never input: more gives than takes. */
	assert(b->n_free < b->n_slots && body >= b->bodies && body < b->bodies + b->n_slots);
	b->free_stack[b->n_free++] = body;
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

void consumer_budget_wake(struct consumer_budget *b)
{
	pthread_mutex_lock(&b->mu);
	b->wake_gen++;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

unsigned consumer_budget_available(struct consumer_budget *b)
{
	unsigned n;

	pthread_mutex_lock(&b->mu);
	n = b->n_free;
	pthread_mutex_unlock(&b->mu);
	return n;
}
