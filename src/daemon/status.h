/* SPDX-License-Identifier: Apache-2.0 */
/*
 * status.h: `kinlake status`: what the lease table (plus, on a worker
 * host, the local journal and metrics file) says about the fleet, as a
 * table for people, JSON for machines, and an exit code for monitoring
 * (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN: the monitoring-plugin
 * convention).
 *
 * The judgement is a pure function, status_classify(), of a lease set,
 * per-lease observations (heartbeat age, what watching the counter
 * showed, lag and intent age from local files) and the thresholds of the
 * config's status section, so it is unit-tested with synthetic leases.
 * Wall clocks of other hosts are only ever used for display and for these
 * monitoring thresholds (kinlakeHeartbeat), never for lease decisions.
 *
 * Threads: status_main() is a command (main thread); everything else works
 * on caller-owned data and is thread-safe.
 */
#ifndef KL_STATUS_H
#define KL_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "kl_err.h"
#include "lease.h"

/* Exit codes (monitoring-plugin convention). */
enum status_level {
	STATUS_OK = 0,
	STATUS_WARNING = 1,
	STATUS_CRITICAL = 2,
	STATUS_UNKNOWN = 3,
};

/* "ok", "warning", "critical", "unknown". Static. */
const char *status_level_name(enum status_level level);

/* A shard's state as `status` shows it. */
enum status_state {
	STATUS_STATE_ACTIVE = 0,        /* owned, renewed within failover_ms */
	STATUS_STATE_EXPIRED,           /* owned, not renewed for failover_ms */
	STATUS_STATE_UNOWNED,           /* no owner (released, new, never taken) */
	STATUS_STATE_WAITING_PARENTS,   /* owned, a parent lease is not finished */
	STATUS_STATE_FINISHED,          /* checkpoint SHARD_END */
	STATUS_STATE_PENDING_INTENT,    /* active, an upload intent is in flight */
	STATUS_STATE_COUNT,
};

/* "active", "expired", "unowned", "waiting-on-parents", "finished",
 * "pending-intent". Static. */
const char *status_state_name(enum status_state state);

/* Thresholds, from the config (lease and status sections). */
struct status_thresholds {
	int64_t failover_ms;           /* a lease not renewed this long is expired */
	int64_t stale_ms;              /* without a heartbeat: a counter watched
					  this long without moving counts as not
					  renewed (1.5 renew intervals) */
	int64_t lag_warn_ms;
	int64_t lag_crit_ms;
	int64_t unowned_crit_ms;       /* no live owner this long: critical */
	int64_t intent_stuck_ms;       /* an intent this old: critical */
};

/* Where a number came from (for people; "" / NULL = unknown). */
#define STATUS_SRC_HEARTBEAT "heartbeat"
#define STATUS_SRC_WATCH "watch"
#define STATUS_SRC_METRICS "metrics"
#define STATUS_SRC_INTENT "intent"
#define STATUS_SRC_JOURNAL "journal"

/*
 * What was observed about one lease besides its item. -1 = unknown for
 * every duration. Fill with status_obs_init() first.
 */
struct status_obs {
	int64_t watched_ms;            /* how long this process has watched the
					  lease (0 = one scan only) */
	int64_t unchanged_ms;          /* how long its counter has not moved, as
					  seen here (<= watched_ms; == watched_ms
					  when it never moved while watched) */
	int64_t pending_seen_ms;       /* how long the current intent has been
					  seen unchanged here; -1 = no intent */
	int64_t lag_ms;                /* age of the oldest record not in S3 */
	const char *lag_source;        /* STATUS_SRC_METRICS / _INTENT; static */
	int64_t intent_age_ms;         /* from the local journal */
};

/* Sets every field of obs to "unknown" (0 watched, -1 durations). */
void status_obs_init(struct status_obs *obs);

/* One shard in the report. Strings owned by the report. */
struct status_shard {
	char *shard_id;
	char *owner;                   /* NULL: unowned */
	uint64_t counter;
	char *checkpoint;              /* "TRIM_HORIZON", "4959...", "SHARD_END", "" */
	uint64_t checkpoint_sub;
	char *pending;                 /* pending checkpoint, NULL when none */
	uint64_t pending_sub;
	uint64_t owner_switches;
	char *parents;                 /* comma-separated, "" when none */
	enum status_state state;
	int64_t since_renew_ms;        /* -1 unknown */
	bool since_renew_at_least;     /* a lower bound (watched, never moved) */
	const char *since_renew_source;/* STATUS_SRC_HEARTBEAT / _WATCH / NULL */
	int64_t heartbeat_wall_ms;     /* 0 = none */
	int64_t unowned_ms;            /* unowned/expired: how long without a live
					  owner (estimate); -1 unknown */
	int64_t lag_ms;                /* -1 unknown */
	const char *lag_source;
	int64_t intent_age_ms;         /* -1 unknown or no intent */
	const char *intent_age_source;
	enum status_level level;
	char reason[192];              /* why level is not OK; "" when OK */
};

struct status_worker {
	char *worker_id;
	uint32_t held;                 /* live, unfinished leases it owns */
	uint32_t expired;              /* expired leases still in its name */
	bool live;                     /* renews at least one lease */
};

struct status_report {
	int64_t now_wall_ms;
	char *table;                   /* for display; may be NULL */
	struct status_shard *shards;   /* sorted by shard id */
	size_t n_shards;
	struct status_worker *workers; /* sorted by worker id */
	size_t n_workers;
	uint32_t open_leases;          /* not finished */
	uint32_t live_workers;
	uint32_t target;               /* ceil(open / live); 0 without live workers */
	uint32_t counts[STATUS_STATE_COUNT];
	enum status_level level;       /* the worst of all findings */
	char summary[256];             /* one line: the worst finding, or "N shards, ..." */
	char note[256];                /* how the data was gathered; may be "" */
};

/*
 * Judges leases[0..n) (a scan of the table; obs may be NULL, else obs[i]
 * belongs to leases[i]) at wall time now_wall_ms. Items that are not
 * lease entities are ignored. Fills *ret (free with status_report_done):
 *  - per shard: state, time since the last renewal (heartbeat, else what
 *    watching showed), lag, intent age and a level:
 *      expired or unowned          WARNING, CRITICAL once without a live
 *                                  owner for more than unowned_crit_ms
 *      lag > lag_warn / lag_crit   WARNING / CRITICAL
 *      intent older than intent_stuck_ms  CRITICAL
 *  - fleet: no leases at all, or unfinished leases and no live worker:
 *    CRITICAL.
 * Returns KL_OK or KL_ENOMEM. Pure.
 */
enum kl_err status_classify(const struct lease *leases, const struct status_obs *obs, size_t n,
			    const struct status_thresholds *th, int64_t now_wall_ms,
			    struct status_report *ret);

/* Frees what the report owns. NULL-safe. */
void status_report_done(struct status_report *r);

/* Writes the report for people: a summary line, a table of shards, a
 * table of workers. Returns 0, or -1 when writing failed. */
int status_print_text(const struct status_report *r, FILE *out);

/*
 * The same data as JSON: {"status", "exit_code", "summary", "note",
 * "table", "now_ms", "open_leases", "live_workers", "target", "counts",
 * "shards": [...], "workers": [...]}; unknown numbers are null. Returns a
 * new object (caller json_object_put()s) or NULL (ENOMEM).
 */
json_object *status_to_json(const struct status_report *r);

/*
 * `kinlake status [-c FILE] [--json] [--watch SECONDS]` (argv[0] is
 * "status"). Reads the lease table (and, when present and readable, this
 * host's journal and metrics file), prints the report, returns its level;
 * 3 when the config or the table cannot be read (and for bad usage, as
 * monitoring plugins do). With --watch, refreshes every SECONDS until
 * interrupted and returns the last level. Main thread only.
 */
int status_main(int argc, char **argv);

#endif
