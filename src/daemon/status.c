/* SPDX-License-Identifier: Apache-2.0 */
/*
 * status.c: `kinlake status`. Gathering (scan the lease table, watch
 * counters that carry no heartbeat, read this host's metrics file and
 * journal) is kept apart from judging (status_classify(), pure) and from
 * printing (text and JSON built from the same struct status_report, so the
 * two views cannot disagree).
 *
 * Invariants: status never writes anything (the journal is opened
 * read-only, never through journal_open(), which may move files); a
 * failure to read local files only loses detail, never the verdict on the
 * table; the exit code is the worst level found.
 */
#include "config.h"

#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cfg.h"
#include "creds.h"
#include "delivery.h"
#include "http.h"
#include "lease_store_ddb.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

const char *status_level_name(enum status_level level)
{
	switch (level) {
	case STATUS_OK:
		return "ok";
	case STATUS_WARNING:
		return "warning";
	case STATUS_CRITICAL:
		return "critical";
	case STATUS_UNKNOWN:
		return "unknown";
	}
	return "unknown";
}

const char *status_state_name(enum status_state state)
{
	switch (state) {
	case STATUS_STATE_ACTIVE:
		return "active";
	case STATUS_STATE_EXPIRED:
		return "expired";
	case STATUS_STATE_UNOWNED:
		return "unowned";
	case STATUS_STATE_WAITING_PARENTS:
		return "waiting-on-parents";
	case STATUS_STATE_FINISHED:
		return "finished";
	case STATUS_STATE_PENDING_INTENT:
		return "pending-intent";
	case STATUS_STATE_COUNT:
		break;
	}
	return "unknown";
}

void status_obs_init(struct status_obs *obs)
{
	obs->watched_ms = 0;
	obs->unchanged_ms = -1;
	obs->pending_seen_ms = -1;
	obs->lag_ms = -1;
	obs->lag_source = NULL;
	obs->intent_age_ms = -1;
}

/* "1.5s", "850ms", "5m03s", "2h10m", "3d04h". */
static void fmt_dur(int64_t ms, char *out, size_t size)
{
	if (ms < 0)
		snprintf(out, size, "-");
	else if (ms < 1000)
		snprintf(out, size, "%" PRId64 "ms", ms);
	else if (ms < 60000)
		snprintf(out, size, "%" PRId64 ".%" PRId64 "s", ms / 1000, ms % 1000 / 100);
	else if (ms < 3600000)
		snprintf(out, size, "%" PRId64 "m%02" PRId64 "s", ms / 60000, ms % 60000 / 1000);
	else if (ms < 86400000)
		snprintf(out, size, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, ms % 3600000 / 60000);
	else
		snprintf(out, size, "%" PRId64 "d%02" PRId64 "h", ms / 86400000, ms % 86400000 / 3600000);
}

/* ------------------------------------------------------------ classify */

static char *dup_or_null(const char *s, bool *oom)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

static int cmp_index_by_key(const void *a, const void *b, void *leases)
{
	const struct lease *l = leases;

	return strcmp(l[*(const size_t *)a].key, l[*(const size_t *)b].key);
}

/* The lease with key among the sorted index, or NULL. */
static const struct lease *find_lease(const struct lease *leases, const size_t *idx, size_t n,
				      const char *key)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(leases[idx[mid]].key, key);

		if (c == 0)
			return &leases[idx[mid]];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Raises sh's level to level with reason (the first reason at the worst
 * level wins). */
static void raise_level(struct status_shard *sh, enum status_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void raise_level(struct status_shard *sh, enum status_level level, const char *fmt, ...)
{
	va_list ap;

	if (level <= sh->level)
		return;
	sh->level = level;
	va_start(ap, fmt);
	vsnprintf(sh->reason, sizeof(sh->reason), fmt, ap);
	va_end(ap);
}

static void judge_renewal(const struct lease *l, const struct status_obs *obs,
			  const struct status_thresholds *th, int64_t now, struct status_shard *sh,
			  bool *ret_expired)
{
	bool watched = obs && obs->watched_ms > 0 && obs->unchanged_ms >= 0;
	bool moved = watched && obs->unchanged_ms < obs->watched_ms;

	*ret_expired = false;
	if (moved) {
		/* Seen moving: alive, whatever an old heartbeat (say, one left
		 * by a kinlake worker before a KCL worker took over) claims. */
		sh->since_renew_ms = obs->unchanged_ms;
		sh->since_renew_source = STATUS_SRC_WATCH;
	} else if (l->heartbeat_ms > 0) {
		sh->since_renew_ms = now > l->heartbeat_ms ? now - l->heartbeat_ms : 0;
		sh->since_renew_source = STATUS_SRC_HEARTBEAT;
		*ret_expired = sh->since_renew_ms > th->failover_ms;
	} else if (watched) {
		sh->since_renew_ms = obs->unchanged_ms;
		sh->since_renew_at_least = true;
		sh->since_renew_source = STATUS_SRC_WATCH;
		*ret_expired = obs->unchanged_ms >= th->stale_ms;
	}
}

static bool parent_unfinished(const struct lease *l, const struct lease *leases,
			      const size_t *idx, size_t n)
{
	for (size_t p = 0; p < l->parents.n; p++) {
		const struct lease *parent = find_lease(leases, idx, n, l->parents.v[p]);

		if (parent && !lease_is_finished(parent))
			return true;
	}
	return false;
}

static enum kl_err join_parents(const struct lease_strset *set, char **ret)
{
	size_t len = 1;
	char *s;

	for (size_t i = 0; i < set->n; i++)
		len += strlen(set->v[i]) + 1;
	s = malloc(len);
	if (!s)
		return KL_ENOMEM;
	s[0] = '\0';
	for (size_t i = 0; i < set->n; i++) {
		if (i)
			strcat(s, ",");
		strcat(s, set->v[i]);
	}
	*ret = s;
	return KL_OK;
}

static void judge_shard(const struct lease *l, const struct status_obs *obs,
			const struct lease *leases, const size_t *idx, size_t n,
			const struct status_thresholds *th, int64_t now, struct status_shard *sh)
{
	char a[32], b[32];
	bool expired = false;

	sh->since_renew_ms = -1;
	sh->unowned_ms = -1;
	sh->lag_ms = -1;
	sh->intent_age_ms = -1;
	sh->heartbeat_wall_ms = l->heartbeat_ms;
	sh->level = STATUS_OK;
	if (lease_is_finished(l)) {
		sh->state = STATUS_STATE_FINISHED;
		return;
	}
	if (!l->owner) {
		sh->state = STATUS_STATE_UNOWNED;
		if (l->heartbeat_ms > 0) {
			/* The last renewal of its last owner: the lease was
			 * released (or given up) at most a renew interval later. */
			sh->unowned_ms = now > l->heartbeat_ms ? now - l->heartbeat_ms : 0;
		} else if (obs && obs->watched_ms > 0 && obs->unchanged_ms >= 0) {
			sh->unowned_ms = obs->unchanged_ms;
		}
	} else {
		judge_renewal(l, obs, th, now, sh, &expired);
		if (expired) {
			sh->state = STATUS_STATE_EXPIRED;
			sh->unowned_ms = sh->since_renew_ms;
		} else if (parent_unfinished(l, leases, idx, n)) {
			sh->state = STATUS_STATE_WAITING_PARENTS;
		} else if (l->pending.kind != LEASE_ESN_NONE) {
			sh->state = STATUS_STATE_PENDING_INTENT;
		} else {
			sh->state = STATUS_STATE_ACTIVE;
		}
	}

	if (sh->state == STATUS_STATE_EXPIRED || sh->state == STATUS_STATE_UNOWNED) {
		fmt_dur(sh->unowned_ms, a, sizeof(a));
		fmt_dur(th->unowned_crit_ms, b, sizeof(b));
		if (sh->unowned_ms > th->unowned_crit_ms)
			raise_level(sh, STATUS_CRITICAL, "no live owner for %s%s (> %s)",
				    sh->since_renew_at_least ? "at least " : "", a, b);
		else if (sh->state == STATUS_STATE_EXPIRED)
			raise_level(sh, STATUS_WARNING, "expired: '%s' has not renewed it for %s%s, not yet taken",
				    l->owner, sh->since_renew_at_least ? "at least " : "", a);
		else if (sh->unowned_ms >= 0)
			raise_level(sh, STATUS_WARNING, "unowned for about %s, not yet taken", a);
		else
			raise_level(sh, STATUS_WARNING, "unowned, not yet taken");
	}

	if (obs && obs->lag_ms >= 0) {
		sh->lag_ms = obs->lag_ms;
		sh->lag_source = obs->lag_source;
		fmt_dur(sh->lag_ms, a, sizeof(a));
		if (sh->lag_ms > th->lag_crit_ms) {
			fmt_dur(th->lag_crit_ms, b, sizeof(b));
			raise_level(sh, STATUS_CRITICAL, "lag %s > %s", a, b);
		} else if (sh->lag_ms > th->lag_warn_ms) {
			fmt_dur(th->lag_warn_ms, b, sizeof(b));
			raise_level(sh, STATUS_WARNING, "lag %s > %s", a, b);
		}
	}

	if (l->pending.kind != LEASE_ESN_NONE && obs) {
		if (obs->intent_age_ms >= 0) {
			sh->intent_age_ms = obs->intent_age_ms;
			sh->intent_age_source = STATUS_SRC_JOURNAL;
		}
		if (obs->pending_seen_ms > sh->intent_age_ms) {
			sh->intent_age_ms = obs->pending_seen_ms;
			sh->intent_age_source = STATUS_SRC_WATCH;
		}
		if (sh->intent_age_ms > th->intent_stuck_ms) {
			fmt_dur(sh->intent_age_ms, a, sizeof(a));
			fmt_dur(th->intent_stuck_ms, b, sizeof(b));
			raise_level(sh, STATUS_CRITICAL, "upload intent up to %s stuck for %s (> %s)",
				    lease_esn_str(&l->pending), a, b);
		}
	}
}

static struct status_worker *worker_slot(struct status_report *r, size_t *alloc, const char *id)
{
	for (size_t i = 0; i < r->n_workers; i++)
		if (strcmp(r->workers[i].worker_id, id) == 0)
			return &r->workers[i];
	if (r->n_workers == *alloc) {
		size_t na = *alloc ? *alloc * 2 : 8;
		struct status_worker *nw = realloc(r->workers, na * sizeof(*nw));

		if (!nw)
			return NULL;
		r->workers = nw;
		*alloc = na;
	}
	memset(&r->workers[r->n_workers], 0, sizeof(r->workers[0]));
	r->workers[r->n_workers].worker_id = strdup(id);
	if (!r->workers[r->n_workers].worker_id)
		return NULL;
	return &r->workers[r->n_workers++];
}

static int cmp_shard(const void *a, const void *b)
{
	return strcmp(((const struct status_shard *)a)->shard_id,
		      ((const struct status_shard *)b)->shard_id);
}

static int cmp_worker(const void *a, const void *b)
{
	return strcmp(((const struct status_worker *)a)->worker_id,
		      ((const struct status_worker *)b)->worker_id);
}

static void summarise(struct status_report *r, const char *fleet_problem)
{
	size_t problems = 0;
	const struct status_shard *worst = NULL;
	char counts[160] = "";
	size_t used = 0;

	for (size_t i = 0; i < r->n_shards; i++) {
		if (r->shards[i].level == STATUS_OK)
			continue;
		problems++;
		if (!worst || r->shards[i].level > worst->level)
			worst = &r->shards[i];
	}
	for (int s = 0; s < STATUS_STATE_COUNT; s++) {
		int n;

		if (!r->counts[s])
			continue;
		n = snprintf(counts + used, sizeof(counts) - used, "%s%u %s", used ? ", " : "",
			     r->counts[s], status_state_name((enum status_state)s));
		if (n < 0 || (size_t)n >= sizeof(counts) - used)
			break;
		used += (size_t)n;
	}
	if (fleet_problem) {
		problems++;
		snprintf(r->summary, sizeof(r->summary), "%s: %s%s", "CRITICAL", fleet_problem,
			 problems > 1 ? " (and more, see below)" : "");
	} else if (worst) {
		char up[16];
		size_t k;

		snprintf(up, sizeof(up), "%s", status_level_name(worst->level));
		for (k = 0; up[k]; k++)
			up[k] = (char)(up[k] >= 'a' && up[k] <= 'z' ? up[k] - 32 : up[k]);
		snprintf(r->summary, sizeof(r->summary), "%s: shard '%s': %s%s", up, worst->shard_id,
			 worst->reason, problems > 1 ? " (and more, see below)" : "");
	} else {
		snprintf(r->summary, sizeof(r->summary), "OK: %zu shards (%s), %u live worker%s, target %u",
			 r->n_shards, counts, r->live_workers, r->live_workers == 1 ? "" : "s", r->target);
	}
}

enum kl_err status_classify(const struct lease *leases, const struct status_obs *obs, size_t n,
			    const struct status_thresholds *th, int64_t now_wall_ms,
			    struct status_report *ret)
{
	struct status_report r;
	size_t *idx = NULL, n_idx = 0, walloc = 0;
	const char *fleet_problem = NULL;
	bool oom = false;

	memset(&r, 0, sizeof(r));
	r.now_wall_ms = now_wall_ms;
	r.level = STATUS_OK;
	if (n) {
		idx = malloc(n * sizeof(*idx));
		r.shards = calloc(n, sizeof(*r.shards));
		if (!idx || !r.shards)
			goto oom;
	}
	for (size_t i = 0; i < n; i++)
		if (leases[i].key && lease_is_lease_entity(&leases[i]))
			idx[n_idx++] = i;
	if (n_idx)
		qsort_r(idx, n_idx, sizeof(*idx), cmp_index_by_key, (void *)leases);

	for (size_t k = 0; k < n_idx; k++) {
		const struct lease *l = &leases[idx[k]];
		const struct status_obs *o = obs ? &obs[idx[k]] : NULL;
		struct status_shard *sh = &r.shards[r.n_shards++];

		sh->shard_id = dup_or_null(l->key, &oom);
		sh->owner = dup_or_null(l->owner, &oom);
		sh->counter = l->counter;
		sh->checkpoint = dup_or_null(lease_esn_str(&l->checkpoint), &oom);
		sh->checkpoint_sub = l->checkpoint.subseq;
		if (l->pending.kind != LEASE_ESN_NONE) {
			sh->pending = dup_or_null(lease_esn_str(&l->pending), &oom);
			sh->pending_sub = l->pending.subseq;
		}
		sh->owner_switches = l->owner_switches;
		if (join_parents(&l->parents, &sh->parents) != KL_OK || oom)
			goto oom;
		judge_shard(l, o, leases, idx, n_idx, th, now_wall_ms, sh);
		r.counts[sh->state]++;
		if (sh->level > r.level)
			r.level = sh->level;
		if (sh->state != STATUS_STATE_FINISHED)
			r.open_leases++;
		if (sh->owner && sh->state != STATUS_STATE_FINISHED) {
			struct status_worker *w = worker_slot(&r, &walloc, sh->owner);

			if (!w)
				goto oom;
			if (sh->state == STATUS_STATE_EXPIRED) {
				w->expired++;
			} else {
				w->held++;
				w->live = true;
			}
		}
	}
	for (size_t i = 0; i < r.n_workers; i++)
		if (r.workers[i].live)
			r.live_workers++;
	if (r.live_workers)
		r.target = (r.open_leases + r.live_workers - 1) / r.live_workers;
	if (r.n_shards == 0)
		fleet_problem = "the lease table holds no leases: no worker has listed the stream's shards";
	else if (r.open_leases > 0 && r.live_workers == 0)
		fleet_problem = "no live worker: no lease is being renewed";
	if (fleet_problem)
		r.level = STATUS_CRITICAL;
	if (r.n_shards)
		qsort(r.shards, r.n_shards, sizeof(*r.shards), cmp_shard);
	if (r.n_workers)
		qsort(r.workers, r.n_workers, sizeof(*r.workers), cmp_worker);
	summarise(&r, fleet_problem);
	free(idx);
	*ret = r;
	return KL_OK;
oom:
	free(idx);
	status_report_done(&r);
	return KL_ENOMEM;
}

void status_report_done(struct status_report *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_shards; i++) {
		free(r->shards[i].shard_id);
		free(r->shards[i].owner);
		free(r->shards[i].checkpoint);
		free(r->shards[i].pending);
		free(r->shards[i].parents);
	}
	free(r->shards);
	for (size_t i = 0; i < r->n_workers; i++)
		free(r->workers[i].worker_id);
	free(r->workers);
	free(r->table);
	memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------ output */

/* The checkpoint cell: "SEQ" or "SEQ:SUB" (only when sub != 0). */
static void fmt_esn(const char *esn, uint64_t sub, char *out, size_t size)
{
	if (!esn || !*esn)
		snprintf(out, size, "-");
	else if (sub)
		snprintf(out, size, "%s:%" PRIu64, esn, sub);
	else
		snprintf(out, size, "%s", esn);
}

#define TEXT_COLS 9
#define CELL_MAX 600

static void shard_cells(const struct status_shard *sh, char cells[TEXT_COLS][CELL_MAX])
{
	char d[32];

	snprintf(cells[0], CELL_MAX, "%s", sh->shard_id);
	snprintf(cells[1], CELL_MAX, "%s", status_state_name(sh->state));
	snprintf(cells[2], CELL_MAX, "%s", sh->owner ? sh->owner : "-");
	fmt_esn(sh->checkpoint, sh->checkpoint_sub, cells[3], CELL_MAX);
	fmt_dur(sh->lag_ms, cells[4], CELL_MAX);
	fmt_dur(sh->since_renew_ms, d, sizeof(d));
	snprintf(cells[5], CELL_MAX, "%s%s", sh->since_renew_at_least ? ">=" : "", d);
	snprintf(cells[6], CELL_MAX, "%" PRIu64, sh->owner_switches);
	snprintf(cells[7], CELL_MAX, "%s", status_level_name(sh->level));
	if (sh->pending) {
		char p[180];

		fmt_esn(sh->pending, sh->pending_sub, p, sizeof(p));
		fmt_dur(sh->intent_age_ms, d, sizeof(d));
		snprintf(cells[8], CELL_MAX, "%s%sintent up to %s (age %s)", sh->reason,
			 sh->reason[0] ? "; " : "", p, d);
	} else {
		snprintf(cells[8], CELL_MAX, "%s", sh->reason);
	}
}

int status_print_text(const struct status_report *r, FILE *out)
{
	static const char *const head[TEXT_COLS] = { "SHARD", "STATE", "OWNER", "CHECKPOINT",
						     "LAG", "RENEWED", "SWITCHES", "LEVEL", "NOTE" };
	size_t width[TEXT_COLS];
	char cells[TEXT_COLS][CELL_MAX];

	fprintf(out, "%s\n", r->summary);
	fprintf(out, "table %s: %zu shards, %u open, %u live worker%s, target %u\n",
		r->table ? r->table : "?", r->n_shards, r->open_leases, r->live_workers,
		r->live_workers == 1 ? "" : "s", r->target);
	if (r->note[0])
		fprintf(out, "note: %s\n", r->note);
	if (r->n_shards) {
		for (int c = 0; c < TEXT_COLS; c++)
			width[c] = strlen(head[c]);
		for (size_t i = 0; i < r->n_shards; i++) {
			shard_cells(&r->shards[i], cells);
			for (int c = 0; c < TEXT_COLS; c++)
				if (strlen(cells[c]) > width[c])
					width[c] = strlen(cells[c]);
		}
		fputc('\n', out);
		for (int c = 0; c < TEXT_COLS - 1; c++)
			fprintf(out, "%-*s  ", (int)width[c], head[c]);
		fprintf(out, "%s\n", head[TEXT_COLS - 1]);
		for (size_t i = 0; i < r->n_shards; i++) {
			shard_cells(&r->shards[i], cells);
			for (int c = 0; c < TEXT_COLS - 1; c++)
				fprintf(out, "%-*s  ", (int)width[c], cells[c]);
			fprintf(out, "%s\n", cells[TEXT_COLS - 1]);
		}
	}
	if (r->n_workers) {
		fprintf(out, "\n%-*s  %-5s  %-6s  %-7s  %s\n", 20, "WORKER", "HELD", "TARGET",
			"EXPIRED", "LIVE");
		for (size_t i = 0; i < r->n_workers; i++) {
			const struct status_worker *w = &r->workers[i];

			fprintf(out, "%-*s  %-5u  %-6u  %-7u  %s\n", 20, w->worker_id, w->held,
				w->live ? r->target : 0, w->expired, w->live ? "yes" : "no");
		}
	}
	fflush(out);
	return ferror(out) ? -1 : 0;
}

static json_object *j_i64_or_null(int64_t v)
{
	return v < 0 ? NULL : json_object_new_int64(v);
}

static json_object *j_str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

static json_object *j_u64(uint64_t v)
{
	/* json-c's int64 holds every counter value we can meet (< 2^63). */
	return json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

static json_object *shard_json(const struct status_shard *sh)
{
	json_object *o = json_object_new_object();
	json_object *parents = json_object_new_array();

	if (!o || !parents) {
		json_object_put(o);
		json_object_put(parents);
		return NULL;
	}
	if (sh->parents && *sh->parents) {
		char *copy = strdup(sh->parents), *save = NULL;

		for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
			json_object_array_add(parents, json_object_new_string(t));
		free(copy);
	}
	json_object_object_add(o, "shard", json_object_new_string(sh->shard_id));
	json_object_object_add(o, "state", json_object_new_string(status_state_name(sh->state)));
	json_object_object_add(o, "owner", j_str_or_null(sh->owner));
	json_object_object_add(o, "counter", j_u64(sh->counter));
	json_object_object_add(o, "checkpoint", json_object_new_string(sh->checkpoint ? sh->checkpoint : ""));
	json_object_object_add(o, "checkpoint_sub", j_u64(sh->checkpoint_sub));
	json_object_object_add(o, "pending", j_str_or_null(sh->pending));
	json_object_object_add(o, "pending_sub", sh->pending ? j_u64(sh->pending_sub) : NULL);
	json_object_object_add(o, "owner_switches", j_u64(sh->owner_switches));
	json_object_object_add(o, "parents", parents);
	json_object_object_add(o, "since_renew_ms", j_i64_or_null(sh->since_renew_ms));
	json_object_object_add(o, "since_renew_at_least", json_object_new_boolean(sh->since_renew_at_least));
	json_object_object_add(o, "since_renew_source", j_str_or_null(sh->since_renew_source));
	json_object_object_add(o, "heartbeat_ms", sh->heartbeat_wall_ms > 0 ?
				json_object_new_int64(sh->heartbeat_wall_ms) : NULL);
	json_object_object_add(o, "unowned_ms", j_i64_or_null(sh->unowned_ms));
	json_object_object_add(o, "lag_ms", j_i64_or_null(sh->lag_ms));
	json_object_object_add(o, "lag_source", j_str_or_null(sh->lag_ms >= 0 ? sh->lag_source : NULL));
	json_object_object_add(o, "intent_age_ms", j_i64_or_null(sh->intent_age_ms));
	json_object_object_add(o, "intent_age_source",
			       j_str_or_null(sh->intent_age_ms >= 0 ? sh->intent_age_source : NULL));
	json_object_object_add(o, "level", json_object_new_string(status_level_name(sh->level)));
	json_object_object_add(o, "reason", json_object_new_string(sh->reason));
	return o;
}

json_object *status_to_json(const struct status_report *r)
{
	json_object *o = json_object_new_object();
	json_object *shards = json_object_new_array();
	json_object *workers = json_object_new_array();
	json_object *counts = json_object_new_object();

	if (!o || !shards || !workers || !counts)
		goto oom;
	json_object_object_add(o, "status", json_object_new_string(status_level_name(r->level)));
	json_object_object_add(o, "exit_code", json_object_new_int((int)r->level));
	json_object_object_add(o, "summary", json_object_new_string(r->summary));
	json_object_object_add(o, "note", json_object_new_string(r->note));
	json_object_object_add(o, "table", j_str_or_null(r->table));
	json_object_object_add(o, "now_ms", json_object_new_int64(r->now_wall_ms));
	json_object_object_add(o, "open_leases", json_object_new_int64(r->open_leases));
	json_object_object_add(o, "live_workers", json_object_new_int64(r->live_workers));
	json_object_object_add(o, "target", json_object_new_int64(r->target));
	for (int s = 0; s < STATUS_STATE_COUNT; s++)
		json_object_object_add(counts, status_state_name((enum status_state)s),
				       json_object_new_int64(r->counts[s]));
	json_object_object_add(o, "counts", counts);
	counts = NULL;
	for (size_t i = 0; i < r->n_shards; i++) {
		json_object *s = shard_json(&r->shards[i]);

		if (!s || json_object_array_add(shards, s) != 0) {
			json_object_put(s);
			goto oom;
		}
	}
	json_object_object_add(o, "shards", shards);
	shards = NULL;
	for (size_t i = 0; i < r->n_workers; i++) {
		const struct status_worker *w = &r->workers[i];
		json_object *wo = json_object_new_object();

		if (!wo)
			goto oom;
		json_object_object_add(wo, "worker", json_object_new_string(w->worker_id));
		json_object_object_add(wo, "held", json_object_new_int64(w->held));
		json_object_object_add(wo, "target", json_object_new_int64(w->live ? r->target : 0));
		json_object_object_add(wo, "expired", json_object_new_int64(w->expired));
		json_object_object_add(wo, "live", json_object_new_boolean(w->live));
		json_object_array_add(workers, wo);
	}
	json_object_object_add(o, "workers", workers);
	return o;
oom:
	json_object_put(o);
	json_object_put(shards);
	json_object_put(workers);
	json_object_put(counts);
	return NULL;
}

/* ------------------------------------------------------------ gathering */

/* What watching the table has shown about one lease (monotonic times). */
struct seen {
	char *key;
	uint64_t counter;
	int64_t first_ms;              /* first scan that showed it */
	int64_t changed_ms;            /* last scan where the counter differed */
	char pending[LEASE_SEQ_MAX + 24];  /* "" = no intent */
	int64_t pending_ms;            /* first scan that showed this intent */
	bool present;
};

struct history {
	struct seen *v;
	size_t n, alloc;
};

static void history_done(struct history *h)
{
	for (size_t i = 0; i < h->n; i++)
		free(h->v[i].key);
	free(h->v);
	memset(h, 0, sizeof(*h));
}

static struct seen *history_find(struct history *h, const char *key)
{
	for (size_t i = 0; i < h->n; i++)
		if (strcmp(h->v[i].key, key) == 0)
			return &h->v[i];
	return NULL;
}

static enum kl_err history_update(struct history *h, const struct lease_list *list, int64_t now)
{
	for (size_t i = 0; i < h->n; i++)
		h->v[i].present = false;
	for (size_t i = 0; i < list->n; i++) {
		const struct lease *l = &list->items[i];
		struct seen *s = history_find(h, l->key);
		char pending[sizeof(s->pending)] = "";

		if (l->pending.kind != LEASE_ESN_NONE)
			snprintf(pending, sizeof(pending), "%s:%" PRIu64, lease_esn_str(&l->pending),
				 l->pending.subseq);
		if (!s) {
			if (h->n == h->alloc) {
				size_t na = h->alloc ? h->alloc * 2 : 16;
				struct seen *nv = realloc(h->v, na * sizeof(*nv));

				if (!nv)
					return KL_ENOMEM;
				h->v = nv;
				h->alloc = na;
			}
			s = &h->v[h->n];
			memset(s, 0, sizeof(*s));
			s->key = strdup(l->key);
			if (!s->key)
				return KL_ENOMEM;
			h->n++;
			s->counter = l->counter;
			s->first_ms = s->changed_ms = now;
			snprintf(s->pending, sizeof(s->pending), "%s", pending);
			s->pending_ms = now;
		}
		if (s->counter != l->counter) {
			s->counter = l->counter;
			s->changed_ms = now;
		}
		if (strcmp(s->pending, pending) != 0) {
			snprintf(s->pending, sizeof(s->pending), "%s", pending);
			s->pending_ms = now;
		}
		s->present = true;
	}
	return KL_OK;
}

/* Lag per (worker, shard) from this host's metrics file. */
struct local_lag {
	char worker[256];
	char shard[256];
	int64_t lag_ms;
};

struct local_info {
	struct local_lag *lags;
	size_t n_lags, alloc;
	bool oom;
	/* journal intents */
	struct journal_intent {
		char *lease_key;
		char seq[LEASE_SEQ_MAX + 1];
		uint64_t sub;
		int64_t created_ms;
	} *intents;
	size_t n_intents;
	char note[200];
};

static void local_info_done(struct local_info *li)
{
	free(li->lags);
	for (size_t i = 0; i < li->n_intents; i++)
		free(li->intents[i].lease_key);
	free(li->intents);
	memset(li, 0, sizeof(*li));
}

static void note_add(char *note, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void note_add(char *note, size_t size, const char *fmt, ...)
{
	size_t used = strlen(note);
	va_list ap;

	if (used && used + 2 < size) {
		strcat(note, "; ");
		used += 2;
	}
	va_start(ap, fmt);
	vsnprintf(note + used, size - used, fmt, ap);
	va_end(ap);
}

static void on_metric(void *ctx, const struct metrics_sample *s)
{
	struct local_info *li = ctx;
	const char *w = metrics_sample_label(s, "worker");
	const char *sh = metrics_sample_label(s, "shard");

	if (strcmp(s->name, METRICS_PREFIX "shard_lag_ms") != 0 || !w || !sh || !(s->value >= 0))
		return;
	if (li->n_lags == li->alloc) {
		size_t na = li->alloc ? li->alloc * 2 : 16;
		struct local_lag *nl = realloc(li->lags, na * sizeof(*nl));

		if (!nl) {
			li->oom = true;
			return;
		}
		li->lags = nl;
		li->alloc = na;
	}
	snprintf(li->lags[li->n_lags].worker, sizeof(li->lags[0].worker), "%s", w);
	snprintf(li->lags[li->n_lags].shard, sizeof(li->lags[0].shard), "%s", sh);
	li->lags[li->n_lags].lag_ms = (int64_t)s->value;
	li->n_lags++;
}

#define STATUS_METRICS_FILE_MAX ((size_t)16 << 20)

static void read_local_metrics(const struct kl_config *cfg, struct local_info *li)
{
	struct stat st;
	struct kl_errinfo info = { 0 };
	FILE *f;
	char *text;
	size_t len;
	int64_t age_ms, max_age_ms = 3 * cfg->metrics.interval_ms;

	if (!*cfg->metrics.file || stat(cfg->metrics.file, &st) != 0)
		return;
	age_ms = kl_wall_ms() - ((int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000);
	if (max_age_ms < 30000)
		max_age_ms = 30000;
	if (age_ms > max_age_ms) {
		note_add(li->note, sizeof(li->note), "metrics file %s is stale (%" PRId64 " s old), lag not shown",
			 cfg->metrics.file, age_ms / 1000);
		return;
	}
	if ((size_t)st.st_size > STATUS_METRICS_FILE_MAX || !(f = fopen(cfg->metrics.file, "re")))
		return;
	text = malloc((size_t)st.st_size + 1);
	len = text ? fread(text, 1, (size_t)st.st_size, f) : 0;
	fclose(f);
	if (!text)
		return;
	if (metrics_parse(text, len, on_metric, li, &info) != KL_OK)
		note_add(li->note, sizeof(li->note), "metrics file %s: %s", cfg->metrics.file, info.message);
	else
		note_add(li->note, sizeof(li->note), "lag from %s", cfg->metrics.file);
	free(text);
}

/* Reads the intents of this host's journal, read-only, without
 * journal_open() (which may migrate or move the file). */
static void read_local_journal(const struct kl_config *cfg, struct local_info *li)
{
	char path[4096];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	size_t alloc = 0;
	int rc;

	snprintf(path, sizeof(path), "%s/journal.db", cfg->state_dir);
	if (access(path, R_OK) != 0)
		return;
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		sqlite3_busy_timeout(db, 1000);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db,
					"SELECT b.lease_key, b.last_seq, b.last_sub, b.created_ms "
					"FROM batch b, schema_version v WHERE v.version = 1 AND "
					"b.state IN ('intent', 'uploaded')", -1, &st, NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(st, 0);
		const char *seq = (const char *)sqlite3_column_text(st, 1);

		if (!key || !seq)
			continue;
		if (li->n_intents == alloc) {
			size_t na = alloc ? alloc * 2 : 8;
			void *nv = realloc(li->intents, na * sizeof(*li->intents));

			if (!nv)
				break;
			li->intents = nv;
			alloc = na;
		}
		li->intents[li->n_intents].lease_key = strdup(key);
		if (!li->intents[li->n_intents].lease_key)
			break;
		snprintf(li->intents[li->n_intents].seq, sizeof(li->intents[0].seq), "%s", seq);
		li->intents[li->n_intents].sub = (uint64_t)sqlite3_column_int64(st, 2);
		li->intents[li->n_intents].created_ms = sqlite3_column_int64(st, 3);
		li->n_intents++;
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_OK)
		note_add(li->note, sizeof(li->note), "journal %s not read: %s", path,
			 db ? sqlite3_errmsg(db) : "cannot open");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* Fills obs[i] for list->items[i] from what was watched and read. */
static void fill_obs(const struct lease_list *list, struct history *h, const struct local_info *li,
		     int64_t now_mono, int64_t now_wall, struct status_obs *obs)
{
	for (size_t i = 0; i < list->n; i++) {
		const struct lease *l = &list->items[i];
		const struct seen *s = history_find(h, l->key);

		status_obs_init(&obs[i]);
		if (s) {
			obs[i].watched_ms = now_mono - s->first_ms;
			obs[i].unchanged_ms = now_mono - s->changed_ms;
			if (s->pending[0])
				obs[i].pending_seen_ms = now_mono - s->pending_ms;
		}
		/* Lag: this host's worker, for the shards it still owns. */
		for (size_t k = 0; k < li->n_lags; k++)
			if (l->owner && strcmp(li->lags[k].worker, l->owner) == 0 &&
			    strcmp(li->lags[k].shard, l->key) == 0) {
				obs[i].lag_ms = li->lags[k].lag_ms;
				obs[i].lag_source = STATUS_SRC_METRICS;
			}
		if (l->pending.kind == LEASE_ESN_SEQ) {
			/* An intent holds the arrival time of its batch's first
			 * record: nothing from there on is committed yet. */
			struct delivery_state ds;
			struct kl_errinfo info;

			if (l->pending_state_len &&
			    delivery_state_decode(l->pending_state, l->pending_state_len, &ds, &info) == KL_OK) {
				int64_t lag = ds.first_arrival_ms > 0 && now_wall > ds.first_arrival_ms ?
					now_wall - ds.first_arrival_ms : -1;

				if (lag > obs[i].lag_ms) {
					obs[i].lag_ms = lag;
					obs[i].lag_source = STATUS_SRC_INTENT;
				}
				delivery_state_done(&ds);
			}
			for (size_t k = 0; k < li->n_intents; k++)
				if (strcmp(li->intents[k].lease_key, l->key) == 0 &&
				    strcmp(li->intents[k].seq, l->pending.seq) == 0 &&
				    li->intents[k].sub == l->pending.subseq && li->intents[k].created_ms > 0)
					obs[i].intent_age_ms = now_wall > li->intents[k].created_ms ?
						now_wall - li->intents[k].created_ms : 0;
		}
	}
}

/* True when some owned lease has no heartbeat to judge it by. (For an
 * unowned one, one watch could only show an age far below the critical
 * threshold: not worth the wait.) */
static bool needs_watch(const struct lease_list *list)
{
	for (size_t i = 0; i < list->n; i++) {
		const struct lease *l = &list->items[i];

		if (l->owner && !lease_is_finished(l) && l->heartbeat_ms <= 0 && lease_is_lease_entity(l))
			return true;
	}
	return false;
}

/* ------------------------------------------------------------ command */

static volatile sig_atomic_t status_interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	status_interrupted = 1;
}

/* Sleeps ms, or less when interrupted. */
static void nap(int64_t ms)
{
	int64_t end = kl_mono_ms() + ms;

	while (!status_interrupted) {
		int64_t left = end - kl_mono_ms();

		if (left <= 0)
			break;
		kl_sleep_ms(left > 100 ? 100 : left);
	}
}

static void print_unknown(bool json, const char *table, const char *msg)
{
	if (json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "status", json_object_new_string("unknown"));
		json_object_object_add(o, "exit_code", json_object_new_int(STATUS_UNKNOWN));
		json_object_object_add(o, "summary", json_object_new_string(msg));
		json_object_object_add(o, "table", j_str_or_null(table));
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(o);
	} else {
		printf("UNKNOWN: %s\n", msg);
	}
	fflush(stdout);
}

static void usage(FILE *out)
{
	fprintf(out, "usage: kinlake status [-c FILE] [--json] [--watch SECONDS]\n"
		     "exit status: 0 ok, 1 warning, 2 critical, 3 unknown\n");
}

struct status_run {
	const struct kl_config *cfg;
	struct lease_store *store;
	struct history hist;
	bool json;
};

/* One scan (or two, to watch counters without heartbeats) and one report. */
static int status_once(struct status_run *run, bool may_watch)
{
	const struct kl_config *cfg = run->cfg;
	struct lease_list list;
	struct kl_errinfo info = { 0 };
	struct status_thresholds th = {
		.failover_ms = cfg->lease.failover_ms,
		.stale_ms = cfg->lease.renew_interval_ms * 3 / 2,
		.lag_warn_ms = cfg->status.lag_warn_ms,
		.lag_crit_ms = cfg->status.lag_crit_ms,
		.unowned_crit_ms = cfg->status.unowned_crit_ms,
		.intent_stuck_ms = cfg->status.intent_stuck_ms,
	};
	struct local_info li = { 0 };
	struct status_report rep;
	struct status_obs *obs = NULL;
	char buf[768], note[256] = "";
	enum kl_err err;
	int level;

	if (th.stale_ms < 1000)
		th.stale_ms = 1000;
	lease_list_init(&list);
	err = lease_store_scan(run->store, &list, &info);
	if (!err)
		err = history_update(&run->hist, &list, kl_mono_ms());
	if (!err && may_watch && needs_watch(&list)) {
		char d[32];

		/* No heartbeat: a lease is alive if its counter moves within
		 * 1.5 renew intervals. */
		fmt_dur(th.stale_ms, d, sizeof(d));
		note_add(note, sizeof(note), "no heartbeat on some leases: watched the counters for %s", d);
		nap(th.stale_ms);
		lease_list_done(&list);
		lease_list_init(&list);
		err = lease_store_scan(run->store, &list, &info);
		if (!err)
			err = history_update(&run->hist, &list, kl_mono_ms());
	}
	if (err) {
		char msg[900];

		snprintf(msg, sizeof(msg), "cannot read the lease table '%s': %s", cfg->application,
			 kl_errinfo_format(err, &info, buf, sizeof(buf)));
		print_unknown(run->json, cfg->application, msg);
		lease_list_done(&list);
		return STATUS_UNKNOWN;
	}
	read_local_metrics(cfg, &li);
	read_local_journal(cfg, &li);
	if (li.note[0])
		note_add(note, sizeof(note), "%s", li.note);
	obs = list.n ? calloc(list.n, sizeof(*obs)) : NULL;
	if (list.n && !obs) {
		print_unknown(run->json, cfg->application, "out of memory");
		local_info_done(&li);
		lease_list_done(&list);
		return STATUS_UNKNOWN;
	}
	fill_obs(&list, &run->hist, &li, kl_mono_ms(), kl_wall_ms(), obs);
	err = status_classify(list.items, obs, list.n, &th, kl_wall_ms(), &rep);
	free(obs);
	local_info_done(&li);
	lease_list_done(&list);
	if (err) {
		print_unknown(run->json, cfg->application, "out of memory");
		return STATUS_UNKNOWN;
	}
	rep.table = strdup(cfg->application);
	snprintf(rep.note, sizeof(rep.note), "%s", note);
	if (run->json) {
		json_object *o = status_to_json(&rep);

		if (o)
			printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								      JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(o);
		fflush(stdout);
	} else {
		status_print_text(&rep, stdout);
	}
	level = (int)rep.level;
	status_report_done(&rep);
	return level;
}

int status_main(int argc, char **argv)
{
	const char *path = KL_SYSCONFDIR "/kinlake/kinlake.conf";
	struct status_run run = { 0 };
	struct kl_config *cfg = NULL;
	struct cfg_errors errors;
	struct creds_config cc;
	struct aws_client_config ac;
	struct lease_store_ddb_config dc = { 0 };
	struct creds_chain *creds = NULL;
	struct kl_errinfo info = { 0 };
	char buf[768];
	long watch_s = 0;
	int level = STATUS_UNKNOWN;
	enum kl_err err;

	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--json") == 0) {
			run.json = true;
		} else if (strcmp(argv[i], "--watch") == 0 && i + 1 < argc) {
			char *end;

			watch_s = strtol(argv[++i], &end, 10);
			if (*end || watch_s < 1 || watch_s > 86400) {
				fprintf(stderr, "kinlake status: --watch takes 1..86400 seconds\n");
				return STATUS_UNKNOWN;
			}
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return STATUS_UNKNOWN;
		}
	}
	log_set_level(LOG_LEVEL_WARN);
	cfg_errors_init(&errors);
	err = cfg_load(path, &cfg, &errors);
	if (err) {
		cfg_errors_print(&errors, stderr);
		cfg_errors_done(&errors);
		print_unknown(run.json, NULL, "cannot load the configuration");
		return STATUS_UNKNOWN;
	}
	cfg_errors_done(&errors);
	run.cfg = cfg;
	cfg_creds_config(cfg, &cc);
	cfg_aws_client_config(cfg, CFG_SERVICE_DYNAMODB, &ac);
	dc.table = cfg->application;
	dc.aws = &ac;
	dc.max_clients = 1;
	err = http_global_init();
	if (!err)
		err = creds_chain_new(&cc, &creds);
	if (!err) {
		dc.creds = creds;
		err = lease_store_ddb_new(&dc, &run.store, &info);
	}
	if (err) {
		char msg[900];

		snprintf(msg, sizeof(msg), "cannot set up the DynamoDB client: %s",
			 kl_errinfo_format(err, &info, buf, sizeof(buf)));
		print_unknown(run.json, cfg->application, msg);
		goto out;
	}
	if (watch_s) {
		struct sigaction sa = { 0 };
		bool tty = !run.json && isatty(STDOUT_FILENO);

		sa.sa_handler = on_sigint;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		while (!status_interrupted) {
			if (tty)
				fputs("\033[H\033[2J", stdout);
			level = status_once(&run, false);
			nap(watch_s * 1000);
		}
	} else {
		level = status_once(&run, true);
	}
out:
	history_done(&run.hist);
	lease_store_free(run.store);
	creds_chain_free(creds);
	http_global_cleanup();
	cfg_free(cfg);
	return level;
}
