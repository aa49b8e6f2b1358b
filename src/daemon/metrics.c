/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics.c: renders a struct metrics_snapshot as Prometheus text, writes
 * it atomically for node-exporter's textfile collector, and parses such
 * text back (for `kinlake status`). Families are tables (name, type, help,
 * field offset), so every family gets its HELP and TYPE by construction and
 * a family's samples are always contiguous.
 */
#include "config.h"

#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

const char *metrics_service_name(enum metrics_service svc)
{
	switch (svc) {
	case METRICS_SVC_KINESIS:
		return "kinesis";
	case METRICS_SVC_DYNAMODB:
		return "dynamodb";
	case METRICS_SVC_S3:
		return "s3";
	case METRICS_SVC_COUNT:
		break;
	}
	return "unknown";
}

void metrics_flow_add(struct metrics_flow *a, const struct metrics_flow *b)
{
	a->records_read += b->records_read;
	a->bytes_read += b->bytes_read;
	a->records_in += b->records_in;
	a->bytes_in += b->bytes_in;
	a->records_out += b->records_out;
	a->bytes_out += b->bytes_out;
	a->records_dropped += b->records_dropped;
	a->records_failed += b->records_failed;
	a->objects_uploaded += b->objects_uploaded;
	a->bytes_uploaded += b->bytes_uploaded;
	a->batches_committed += b->batches_committed;
	a->upload_failures += b->upload_failures;
	a->get_records_calls += b->get_records_calls;
	a->throttles += b->throttles;
	a->retries += b->retries;
	a->budget_waits += b->budget_waits;
	a->pages_dropped += b->pages_dropped;
	a->records_reread += b->records_reread;
	a->agg_records += b->agg_records;
	a->agg_late += b->agg_late;
	a->agg_updates += b->agg_updates;
	a->agg_already_applied += b->agg_already_applied;
	a->agg_failures += b->agg_failures;
}

/* ------------------------------------------------------------ grammar */

static bool is_alpha_(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

bool metrics_name_valid(const char *name)
{
	if (!name || !(is_alpha_(name[0]) || name[0] == ':'))
		return false;
	for (const char *p = name + 1; *p; p++)
		if (!is_alpha_(*p) && !is_digit(*p) && *p != ':')
			return false;
	return true;
}

bool metrics_label_name_valid(const char *name)
{
	if (!name || !is_alpha_(name[0]) || (name[0] == '_' && name[1] == '_'))
		return false;
	for (const char *p = name + 1; *p; p++)
		if (!is_alpha_(*p) && !is_digit(*p))
			return false;
	return true;
}

enum kl_err metrics_escape_label(struct buf *out, const char *value)
{
	enum kl_err err = KL_OK;

	for (const char *p = value; *p && !err; p++) {
		switch (*p) {
		case '\\':
			err = buf_append(out, "\\\\", 2);
			break;
		case '"':
			err = buf_append(out, "\\\"", 2);
			break;
		case '\n':
			err = buf_append(out, "\\n", 2);
			break;
		default:
			err = buf_append_byte(out, (uint8_t)*p);
			break;
		}
	}
	return err;
}

/* ------------------------------------------------------------ rendering */

enum fam_type { FAM_COUNTER, FAM_GAUGE };

/* Writes a family's header before its first sample only, so a family
 * with no samples leaves no trace and one with samples always has both
 * lines. */
struct fam {
	struct buf *out;
	const char *name;
	enum fam_type type;
	const char *help;
	bool started;
	enum kl_err err;
	const char *worker;
};

static void fam_begin(struct fam *f, struct buf *out, const char *worker, const char *name,
		      enum fam_type type, const char *help)
{
	/* f->err stays: the first error sticks until the end of rendering. */
	f->out = out;
	f->worker = worker;
	f->name = name;
	f->type = type;
	f->help = help;
	f->started = false;
}

static void fam_header(struct fam *f)
{
	if (f->started || f->err)
		return;
	f->started = true;
	f->err = buf_printf(f->out, "# HELP %s%s %s\n# TYPE %s%s %s\n", METRICS_PREFIX, f->name,
			    f->help, METRICS_PREFIX, f->name,
			    f->type == FAM_COUNTER ? "counter" : "gauge");
}

/* One sample with worker="..." plus up to two more labels (name NULL = none). */
static void fam_sample(struct fam *f, const char *l1, const char *v1, const char *l2,
		       const char *v2, const char *value_text)
{
	fam_header(f);
	if (!f->err)
		f->err = buf_printf(f->out, "%s%s{worker=\"", METRICS_PREFIX, f->name);
	if (!f->err)
		f->err = metrics_escape_label(f->out, f->worker ? f->worker : "");
	if (l1 && !f->err) {
		f->err = buf_printf(f->out, "\",%s=\"", l1);
		if (!f->err)
			f->err = metrics_escape_label(f->out, v1 ? v1 : "");
	}
	if (l2 && !f->err) {
		f->err = buf_printf(f->out, "\",%s=\"", l2);
		if (!f->err)
			f->err = metrics_escape_label(f->out, v2 ? v2 : "");
	}
	if (!f->err)
		f->err = buf_printf(f->out, "\"} %s\n", value_text);
}

static void fam_u64(struct fam *f, const char *l1, const char *v1, const char *l2,
		    const char *v2, uint64_t v)
{
	char text[32];

	snprintf(text, sizeof(text), "%" PRIu64, v);
	fam_sample(f, l1, v1, l2, v2, text);
}

static void fam_i64(struct fam *f, const char *l1, const char *v1, int64_t v)
{
	char text[32];

	snprintf(text, sizeof(text), "%" PRId64, v);
	fam_sample(f, l1, v1, NULL, NULL, text);
}

/* Epoch milliseconds as seconds with millisecond precision. */
static void fam_seconds(struct fam *f, const char *l1, const char *v1, int64_t ms)
{
	char text[48];

	snprintf(text, sizeof(text), "%" PRId64 ".%03" PRId64, ms / 1000, ms % 1000);
	fam_sample(f, l1, v1, NULL, NULL, text);
}

struct flow_family {
	const char *name;      /* after "kinlake_" (worker) or "kinlake_shard_" */
	size_t offset;         /* of a uint64_t in struct metrics_flow */
	const char *help;
};

#define FLOW(name, field, help) { name, offsetof(struct metrics_flow, field), help }
static const struct flow_family flow_families[] = {
	FLOW("records_read_total", records_read, "Kinesis records received by GetRecords."),
	FLOW("bytes_read_total", bytes_read, "Data bytes of the Kinesis records received."),
	FLOW("records_in_total", records_in, "User records (after KPL de-aggregation) taken by the sink."),
	FLOW("bytes_in_total", bytes_in, "Bytes of the user records taken by the sink."),
	FLOW("records_out_total", records_out, "Records written to data objects (transform outputs)."),
	FLOW("bytes_out_total", bytes_out, "Uncompressed bytes written to data objects."),
	FLOW("records_dropped_total", records_dropped, "Records the transform plugin DROPPED."),
	FLOW("records_failed_total", records_failed, "Records written to the error prefix (FAILED, crashed the plugin, bad partition key)."),
	FLOW("objects_uploaded_total", objects_uploaded, "Objects uploaded to S3."),
	FLOW("bytes_uploaded_total", bytes_uploaded, "Object bytes uploaded to S3 (as stored, compressed)."),
	FLOW("batches_committed_total", batches_committed, "Batches checkpointed after their upload."),
	FLOW("upload_failures_total", upload_failures, "Uploads given up for the moment (retried later; no data is dropped)."),
	FLOW("get_records_calls_total", get_records_calls, "GetRecords calls made by shard consumers."),
	FLOW("get_records_throttles_total", throttles, "GetRecords calls answered with a throttling error."),
	FLOW("consumer_retries_total", retries, "Calls repeated by shard consumers after an error."),
	FLOW("page_budget_waits_total", budget_waits, "Waits for a slot of the page budget (consumer.max_pages_in_memory): reading held back to bound memory."),
	FLOW("pages_dropped_total", pages_dropped, "Half-pushed pages given back to the page budget while the sink was busy (read again later)."),
	FLOW("records_reread_total", records_reread, "Kinesis records received again after a page was given back."),
	FLOW("aggregate_records_total", agg_records, "Data outputs counted in the DynamoDB aggregates (0 while aggregates are off)."),
	FLOW("aggregate_late_records_total", agg_late, "Of those, records that arrived after their window's allowed lateness."),
	FLOW("aggregate_updates_total", agg_updates, "Aggregate UpdateItems that applied."),
	FLOW("aggregate_already_applied_total", agg_already_applied, "Aggregate UpdateItems found applied before (a rebuilt batch; nothing counted twice)."),
	FLOW("aggregate_failures_total", agg_failures, "Aggregate UpdateItems that failed (the batch waits and retries; nothing is lost)."),
};
#undef FLOW

static uint64_t flow_get(const struct metrics_flow *fl, size_t offset)
{
	uint64_t v;

	memcpy(&v, (const char *)fl + offset, sizeof(v));
	return v;
}

static void render_worker(const struct metrics_snapshot *s, struct buf *out, struct fam *f)
{
	const char *w = s->worker_id;
	struct {
		const char *name;
		enum fam_type type;
		uint64_t value;
		const char *help;
	} simple[] = {
		{ "ready", FAM_GAUGE, s->ready, "1 once the lease coordinator ran its first pass." },
		{ "stopping", FAM_GAUGE, s->stopping, "1 while the worker shuts down." },
		{ "leader", FAM_GAUGE, s->leader, "1 when this worker runs shard sync and lease cleanup." },
		{ "leases_held", FAM_GAUGE, s->leases_held, "Leases held by this worker (any state)." },
		{ "leases_processing", FAM_GAUGE, s->leases_processing, "Held leases with a running shard consumer." },
		{ "leases_target", FAM_GAUGE, s->leases_target, "Leases this worker should hold: ceil(leases / live workers)." },
		{ "live_workers", FAM_GAUGE, s->live_workers, "Workers seen holding unexpired leases." },
		{ "leases_taken_total", FAM_COUNTER, s->leases_taken, "Leases taken (unowned, expired or stolen)." },
		{ "leases_stolen_total", FAM_COUNTER, s->leases_stolen, "Leases stolen from a busier worker." },
		{ "leases_lost_total", FAM_COUNTER, s->leases_lost, "Leases lost (taken by another worker, or not renewed in time)." },
		{ "leases_released_total", FAM_COUNTER, s->leases_released, "Leases released gracefully." },
		{ "leases_created_total", FAM_COUNTER, s->leases_created, "Leases created by shard sync or resharding." },
		{ "leases_deleted_total", FAM_COUNTER, s->leases_deleted, "Finished leases deleted by cleanup." },
		{ "consumers_started_total", FAM_COUNTER, s->consumers_started, "Shard consumer threads started." },
	};

	fam_begin(f, out, w, "info", FAM_GAUGE, "Constant 1; labels name the worker and the version.");
	fam_u64(f, "version", s->version ? s->version : "", NULL, NULL, 1);
	fam_begin(f, out, w, "start_time_seconds", FAM_GAUGE, "Start time of the worker process, Unix seconds.");
	fam_seconds(f, NULL, NULL, s->start_wall_ms);
	for (size_t i = 0; i < KL_ARRAY_LEN(simple); i++) {
		fam_begin(f, out, w, simple[i].name, simple[i].type, simple[i].help);
		fam_u64(f, NULL, NULL, NULL, NULL, simple[i].value);
	}
	for (size_t i = 0; i < KL_ARRAY_LEN(flow_families); i++) {
		fam_begin(f, out, w, flow_families[i].name, FAM_COUNTER, flow_families[i].help);
		fam_u64(f, NULL, NULL, NULL, NULL, flow_get(&s->total, flow_families[i].offset));
	}

	static const struct {
		const char *name;
		size_t offset;
		const char *help;
	} aws[] = {
		{ "aws_calls_total", offsetof(struct metrics_aws, calls), "AWS API calls (a retried call counts once)." },
		{ "aws_errors_total", offsetof(struct metrics_aws, errors), "AWS API calls that failed after their retries." },
		{ "aws_throttles_total", offsetof(struct metrics_aws, throttles), "AWS API answers that asked to slow down." },
		{ "aws_retries_total", offsetof(struct metrics_aws, retries), "AWS API requests sent again after a retryable failure." },
	};
	for (size_t i = 0; i < KL_ARRAY_LEN(aws); i++) {
		fam_begin(f, out, w, aws[i].name, FAM_COUNTER, aws[i].help);
		for (int svc = 0; svc < METRICS_SVC_COUNT; svc++) {
			uint64_t v;

			if (!s->aws[svc].present ||
			    (s->aws[svc].retries_unknown && aws[i].offset == offsetof(struct metrics_aws, retries)))
				continue;
			memcpy(&v, (const char *)&s->aws[svc] + aws[i].offset, sizeof(v));
			fam_u64(f, "service", metrics_service_name((enum metrics_service)svc), NULL, NULL, v);
		}
	}
}

static void render_shards(const struct metrics_snapshot *s, struct buf *out, struct fam *f)
{
	const char *w = s->worker_id;
	char name[96];

	fam_begin(f, out, w, "shard_millis_behind_latest", FAM_GAUGE,
		  "MillisBehindLatest of the shard's last GetRecords answer.");
	for (size_t i = 0; i < s->n_shards; i++)
		if (s->shards[i].millis_behind_latest >= 0)
			fam_i64(f, "shard", s->shards[i].shard_id, s->shards[i].millis_behind_latest);
	fam_begin(f, out, w, "shard_lag_ms", FAM_GAUGE,
		  "Age of the shard's oldest record not yet in S3 (the larger of MillisBehindLatest and the open batch's age).");
	for (size_t i = 0; i < s->n_shards; i++)
		if (s->shards[i].lag_ms >= 0)
			fam_i64(f, "shard", s->shards[i].shard_id, s->shards[i].lag_ms);
	fam_begin(f, out, w, "shard_last_commit_timestamp_seconds", FAM_GAUGE,
		  "When the shard's last batch was checkpointed, Unix seconds.");
	for (size_t i = 0; i < s->n_shards; i++)
		if (s->shards[i].last_commit_wall_ms > 0)
			fam_seconds(f, "shard", s->shards[i].shard_id, s->shards[i].last_commit_wall_ms);
	fam_begin(f, out, w, "shard_blocked", FAM_GAUGE,
		  "1 while the shard does not advance (S3, the lease table or the disk fails; retried).");
	for (size_t i = 0; i < s->n_shards; i++)
		fam_u64(f, "shard", s->shards[i].shard_id, NULL, NULL, s->shards[i].blocked);
	fam_begin(f, out, w, "shard_consumer_state", FAM_GAUGE,
		  "1 for the state the shard's consumer is in.");
	for (size_t i = 0; i < s->n_shards; i++)
		fam_u64(f, "shard", s->shards[i].shard_id, "state",
			s->shards[i].state ? s->shards[i].state : "unknown", 1);
	for (size_t k = 0; k < KL_ARRAY_LEN(flow_families); k++) {
		snprintf(name, sizeof(name), "shard_%s", flow_families[k].name);
		fam_begin(f, out, w, name, FAM_COUNTER, flow_families[k].help);
		for (size_t i = 0; i < s->n_shards; i++)
			fam_u64(f, "shard", s->shards[i].shard_id, NULL, NULL,
				flow_get(&s->shards[i].flow, flow_families[k].offset));
	}
}

enum kl_err metrics_render(const struct metrics_snapshot *s, struct buf *out)
{
	struct fam f = { 0 };

	render_worker(s, out, &f);
	if (!f.err)
		render_shards(s, out, &f);
	return f.err;
}

/* ------------------------------------------------------------ writing */

static enum kl_err io_err(struct kl_errinfo *info, const char *what, const char *path)
{
	int e = errno;

	if (info)
		info->sys_errno = e;
	return kl_errinfo_set(info, e == ENOSPC || e == EDQUOT ? KL_ENOSPC : KL_EIO, "%s %s: %s",
			      what, path, strerror(e));
}

enum kl_err metrics_write_file(const char *path, const char *text, size_t len,
			       struct kl_errinfo *info)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) : 0;
	const char *base = slash ? slash + 1 : path;
	enum kl_err err;
	int fd, n;

	if (!*base || dirlen >= sizeof(dir))
		return kl_errinfo_set(info, KL_EINVAL, "bad metrics file name '%s'", path);
	if (slash) {
		memcpy(dir, path, dirlen);
		dir[dirlen] = '\0';
		if (!dirlen)
			strcpy(dir, "/");
	} else {
		strcpy(dir, ".");
	}
	n = snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%ld", dir, base, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return kl_errinfo_set(info, KL_EINVAL, "metrics file name too long: '%s'", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return io_err(info, "cannot create", tmp);
	/* 0644 whatever the umask (the units run with UMask=0027): the
	 * collector runs as another user, and metrics hold no secrets. */
	if (fchmod(fd, 0644) != 0) {
		err = io_err(info, "cannot chmod", tmp);
		goto fail;
	}
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, text + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			err = io_err(info, "cannot write", tmp);
			goto fail;
		}
		off += (size_t)w;
	}
	if (fsync(fd) != 0) {
		err = io_err(info, "cannot fsync", tmp);
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		err = io_err(info, "cannot close", tmp);
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		err = io_err(info, "cannot rename to", path);
		goto fail;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		/* The rename is done; a failing directory fsync only weakens
		 * durability across a power cut, which a metrics file can bear. */
		(void)fsync(fd);
		close(fd);
	}
	return KL_OK;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return err;
}

/* ------------------------------------------------------------ reading */

const char *metrics_sample_label(const struct metrics_sample *s, const char *name)
{
	for (size_t i = 0; i < s->n_labels; i++)
		if (strcmp(s->label_names[i], name) == 0)
			return s->label_values[i];
	return NULL;
}

static const char *skip_blanks(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

/* Reads a metric or label name at p into out (NUL-terminated); returns the
 * position after it, or NULL when there is none or it is too long. */
static const char *read_name(const char *p, const char *end, char *out, size_t size,
			     bool colon_ok)
{
	size_t n = 0;

	while (p < end && (is_alpha_(*p) || (n && is_digit(*p)) || (colon_ok && *p == ':'))) {
		if (n + 1 >= size)
			return NULL;
		out[n++] = *p++;
	}
	out[n] = '\0';
	return n ? p : NULL;
}

static bool parse_value(const char *p, const char *end, double *ret)
{
	char text[64], *stop;
	size_t n = (size_t)(end - p);

	if (n == 0 || n >= sizeof(text))
		return false;
	memcpy(text, p, n);
	text[n] = '\0';
	if (strcmp(text, "+Inf") == 0 || strcmp(text, "Inf") == 0) {
		*ret = INFINITY;
		return true;
	}
	if (strcmp(text, "-Inf") == 0) {
		*ret = -INFINITY;
		return true;
	}
	if (strcmp(text, "NaN") == 0) {
		*ret = NAN;
		return true;
	}
	/* strtod also takes "inf", "nan", hex floats: the format does not. */
	for (size_t i = 0; i < n; i++)
		if (!is_digit(text[i]) && !strchr("+-.eE", text[i]))
			return false;
	errno = 0;
	*ret = strtod(text, &stop);
	return *stop == '\0' && errno != ERANGE;
}

struct parse_line {
	char name[256];
	char lnames[METRICS_MAX_LABELS][128];
	char lvalues[METRICS_MAX_LABELS][METRICS_LABEL_MAX];
};

static bool parse_sample(const char *p, const char *end, struct parse_line *pl,
			 struct metrics_sample *s)
{
	memset(s, 0, sizeof(*s));
	p = read_name(p, end, pl->name, sizeof(pl->name), true);
	if (!p)
		return false;
	s->name = pl->name;
	if (p < end && *p == '{') {
		p++;
		for (;;) {
			size_t k = s->n_labels, n = 0;

			p = skip_blanks(p, end);
			if (p < end && *p == '}') {
				p++;
				break;
			}
			if (k >= METRICS_MAX_LABELS)
				return false;
			p = read_name(p, end, pl->lnames[k], sizeof(pl->lnames[k]), false);
			if (!p || !metrics_label_name_valid(pl->lnames[k]))
				return false;
			p = skip_blanks(p, end);
			if (p + 1 >= end || p[0] != '=' || p[1] != '"')
				return false;
			p += 2;
			while (p < end && *p != '"') {
				char c = *p++;

				if (c == '\n')
					return false;
				if (c == '\\') {
					if (p >= end)
						return false;
					c = *p++;
					if (c == 'n')
						c = '\n';
					else if (c != '\\' && c != '"')
						return false;
				}
				if (n + 1 >= METRICS_LABEL_MAX)
					return false;
				pl->lvalues[k][n++] = c;
			}
			if (p >= end)
				return false;
			p++;
			pl->lvalues[k][n] = '\0';
			for (size_t j = 0; j < k; j++)
				if (strcmp(pl->lnames[j], pl->lnames[k]) == 0)
					return false;
			s->label_names[k] = pl->lnames[k];
			s->label_values[k] = pl->lvalues[k];
			s->n_labels++;
			p = skip_blanks(p, end);
			if (p < end && *p == ',') {
				p++;
				continue;
			}
			if (p < end && *p == '}') {
				p++;
				break;
			}
			return false;
		}
	}
	if (p >= end || (*p != ' ' && *p != '\t'))
		return false;
	p = skip_blanks(p, end);
	{
		const char *v = p;
		const char *vend = v;

		while (vend < end && *vend != ' ' && *vend != '\t')
			vend++;
		if (!parse_value(v, vend, &s->value))
			return false;
		p = skip_blanks(vend, end);
		if (p < end) {
			/* An optional integer timestamp (ms). */
			const char *t = p;

			if (*t == '-')
				t++;
			if (t >= end)
				return false;
			for (; t < end; t++)
				if (!is_digit(*t))
					return false;
		}
	}
	return true;
}

static bool parse_comment(const char *p, const char *end)
{
	char name[256], word[16];
	size_t n = 0;

	p = skip_blanks(p + 1, end);
	if (end - p >= 5 && (memcmp(p, "HELP ", 5) == 0 || memcmp(p, "TYPE ", 5) == 0)) {
		bool type = p[0] == 'T';

		p = read_name(skip_blanks(p + 5, end), end, name, sizeof(name), true);
		if (!p)
			return false;
		if (!type)
			return p == end || *p == ' ' || *p == '\t';
		p = skip_blanks(p, end);
		while (p < end && *p != ' ' && *p != '\t' && n + 1 < sizeof(word))
			word[n++] = *p++;
		word[n] = '\0';
		if (skip_blanks(p, end) != end)
			return false;
		return strcmp(word, "counter") == 0 || strcmp(word, "gauge") == 0 ||
		       strcmp(word, "histogram") == 0 || strcmp(word, "summary") == 0 ||
		       strcmp(word, "untyped") == 0;
	}
	return true;
}

enum kl_err metrics_parse(const char *text, size_t len,
			  void (*fn)(void *ctx, const struct metrics_sample *s), void *ctx,
			  struct kl_errinfo *info)
{
	struct parse_line *pl = malloc(sizeof(*pl));
	const char *p = text, *end = text + len;
	size_t lineno = 0;

	if (!pl)
		return kl_errinfo_set(info, KL_ENOMEM, "out of memory");
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *lend = eol ? eol : end;
		const char *q = skip_blanks(p, lend);
		struct metrics_sample s;

		lineno++;
		if (q < lend) {
			bool ok = *q == '#' ? parse_comment(q, lend) : parse_sample(q, lend, pl, &s);

			if (!ok) {
				free(pl);
				return kl_errinfo_set(info, KL_EPARSE, "line %zu: malformed: %.*s", lineno,
						      (int)(lend - p > 120 ? 120 : lend - p), p);
			}
			if (*q != '#')
				fn(ctx, &s);
		}
		p = eol ? eol + 1 : end;
	}
	free(pl);
	return KL_OK;
}
