/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cfg.c: the configuration tables and everything generated from them:
 * loading and checking a libconfig file (every error collected with its
 * file and line), defaults, --dump, the example config and the man page.
 *
 * Invariants: every key is read through its table entry and nothing else;
 * a secret's value is copied into our own memory, wiped from libconfig's,
 * and never formatted into any message or output; libconfig 1.5 silently
 * truncates integer literals that do not fit in 32 bits, so such literals
 * are re-read from the source text and refused (see literal_truncated()).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agg_spec.h"
#include "cfg.h"
#include "util.h"

#ifndef KL_SYSCONFDIR
#define KL_SYSCONFDIR "/etc"
#endif
#define CFG_DEFAULT_PATH KL_SYSCONFDIR "/kinlake/kinlake.conf"

#define KiB ((int64_t)1 << 10)
#define MiB ((int64_t)1 << 20)
#define GiB ((int64_t)1 << 30)
#define TiB ((int64_t)1 << 40)

#define CFG_STRING_MAX 8192     /* longest string value (session tokens are long) */
#define CFG_SOURCE_MAX (1 << 20) /* longest config file re-read for literal checks */
#define CFG_SOURCES_MAX 16

_Static_assert(sizeof(enum cfg_initial_position) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_compression) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_storage_class) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");

/* ====================================================================
 * The tables
 * ==================================================================== */

enum cfg_type {
	T_STRING,
	T_INT,
	T_BOOL,
	T_ENUM,      /* a string from choices, stored as its int value */
	T_SIZE,      /* bytes: integer, or a string with a binary unit */
	T_DURATION,  /* integer in the key's unit, or a string with a unit */
	T_GROUP,     /* an opaque group, stored as a config_setting_t pointer */
	T_SECTION,   /* a group read through its own table */
};

#define F_REQUIRED 0x1u  /* must be set; the example holds CFG_PLACEHOLDER */
#define F_SECRET   0x2u  /* never printed; wiped */
#define F_AUTO0    0x4u  /* 0 is allowed besides min..max: "derive it" */

struct cfg_choice {
	const char *name;
	int value;
};

struct cfg_section;

struct cfg_key {
	const char *name;
	enum cfg_type type;
	unsigned flags;
	size_t offset;                    /* into struct kl_config */
	int64_t def_num;                  /* INT, BOOL, ENUM, SIZE, DURATION */
	const char *def_str;              /* STRING */
	int64_t min, max;                 /* INT, SIZE, DURATION (in the key's unit) */
	int64_t unit_ms;                  /* DURATION: 1 (_ms) or 1000 (_seconds) */
	const struct cfg_choice *choices; /* ENUM, {NULL} terminated */
	const char *(*check)(const char *value); /* STRING: NULL = fine, else why not */
	enum kl_err (*parse)(const char *value, struct kl_errinfo *info); /* STRING: a
					     * parser shared with the code that uses the value;
					     * its message says why not */
	const struct cfg_section *section;/* SECTION */
	const char *desc;                 /* one line */
};

struct cfg_section {
	const char *name;                 /* "" for the top level */
	const char *desc;
	const struct cfg_key *keys;       /* {NULL} terminated */
};

#define OFF(field) offsetof(struct kl_config, field)

#define K_STR(n, field, fl, def, chk, d) \
	{ .name = n, .type = T_STRING, .flags = fl, .offset = OFF(field), \
	  .def_str = def, .check = chk, .desc = d }
#define K_STRP(n, field, fl, def, prs, d) \
	{ .name = n, .type = T_STRING, .flags = fl, .offset = OFF(field), \
	  .def_str = def, .parse = prs, .desc = d }
#define K_INT(n, field, fl, def, lo, hi, d) \
	{ .name = n, .type = T_INT, .flags = fl, .offset = OFF(field), \
	  .def_num = def, .min = lo, .max = hi, .desc = d }
#define K_BOOL(n, field, def, d) \
	{ .name = n, .type = T_BOOL, .offset = OFF(field), .def_num = def, .desc = d }
#define K_ENUM(n, field, def, ch, d) \
	{ .name = n, .type = T_ENUM, .offset = OFF(field), .def_num = def, \
	  .choices = ch, .desc = d }
#define K_SIZE(n, field, def, lo, hi, d) \
	{ .name = n, .type = T_SIZE, .offset = OFF(field), .def_num = def, \
	  .min = lo, .max = hi, .desc = d }
#define K_MS(n, field, fl, def, lo, hi, d) \
	{ .name = n, .type = T_DURATION, .flags = fl, .offset = OFF(field), \
	  .def_num = def, .min = lo, .max = hi, .unit_ms = 1, .desc = d }
#define K_SEC(n, field, fl, def, lo, hi, d) \
	{ .name = n, .type = T_DURATION, .flags = fl, .offset = OFF(field), \
	  .def_num = def, .min = lo, .max = hi, .unit_ms = 1000, .desc = d }
#define K_GROUP(n, field, d) \
	{ .name = n, .type = T_GROUP, .offset = OFF(field), .desc = d }
#define K_SECTION(n, sec) \
	{ .name = n, .type = T_SECTION, .section = &sec, .desc = NULL }

static const struct cfg_choice initial_position_choices[] = {
	{ "TRIM_HORIZON", CFG_INITIAL_TRIM_HORIZON },
	{ "LATEST", CFG_INITIAL_LATEST },
	{ "AT_TIMESTAMP", CFG_INITIAL_AT_TIMESTAMP },
	{ NULL, 0 },
};

static const struct cfg_choice compression_choices[] = {
	{ "none", CFG_COMPRESSION_NONE },
	{ "gzip", CFG_COMPRESSION_GZIP },
	{ "zstd", CFG_COMPRESSION_ZSTD },
	{ NULL, 0 },
};

static const struct cfg_choice storage_class_choices[] = {
	{ "STANDARD", CFG_STORAGE_STANDARD },
	{ "STANDARD_IA", CFG_STORAGE_STANDARD_IA },
	{ "ONEZONE_IA", CFG_STORAGE_ONEZONE_IA },
	{ "INTELLIGENT_TIERING", CFG_STORAGE_INTELLIGENT_TIERING },
	{ "GLACIER_IR", CFG_STORAGE_GLACIER_IR },
	{ NULL, 0 },
};

/* Same names and order as log_level_parse(). */
static const struct cfg_choice log_level_choices[] = {
	{ "error", LOG_LEVEL_ERROR },
	{ "warn", LOG_LEVEL_WARN },
	{ "info", LOG_LEVEL_INFO },
	{ "debug", LOG_LEVEL_DEBUG },
	{ NULL, 0 },
};

/* String checks: return NULL when value is fine, else a static reason. */
static const char *check_table_name(const char *v);
static const char *check_worker_id(const char *v);
static const char *check_stream(const char *v);
static const char *check_region(const char *v);
static const char *check_timestamp(const char *v);
static const char *check_abs_path(const char *v);
static const char *check_opt_abs_path(const char *v);
static const char *check_plugin_name(const char *v);
static const char *check_search_path(const char *v);
static const char *check_bucket(const char *v);
static const char *check_prefix(const char *v);
static const char *check_error_prefix(const char *v);
static const char *check_delimiter(const char *v);
static const char *check_content_type(const char *v);
static const char *check_profile(const char *v);
static const char *check_url(const char *v);
static const char *check_metrics_file(const char *v);
static const char *check_opt_table_name(const char *v);
static enum kl_err parse_agg_name(const char *v, struct kl_errinfo *info);
static enum kl_err parse_agg_dimensions(const char *v, struct kl_errinfo *info);
static enum kl_err parse_agg_measures(const char *v, struct kl_errinfo *info);

static const struct cfg_key lease_keys[] = {
	K_MS("failover_ms", lease.failover_ms, 0, 10000, 1000, 600000,
	     "A lease whose counter has not moved for this long is expired and may be taken (KCL's failoverTimeMillis)."),
	K_MS("renew_interval_ms", lease.renew_interval_ms, F_AUTO0, 0, 100, 300000,
	     "How often held leases are renewed; 0 = failover_ms / 3, as KCL. At most failover_ms / 2."),
	K_MS("take_interval_ms", lease.take_interval_ms, F_AUTO0, 0, 1000, 3600000,
	     "How often the worker looks for leases to take or steal; 0 = twice failover_ms, as KCL."),
	K_INT("max_leases", lease.max_leases, 0, 0, 0, 100000,
	      "Most leases (shards) this worker holds at once; 0 = no limit."),
	K_INT("max_steal", lease.max_steal, 0, 1, 1, 100,
	      "Most leases stolen from the busiest worker per take pass (KCL's maxLeasesToStealAtOneTime)."),
	K_MS("shard_sync_interval_ms", lease.shard_sync_interval_ms, 0, 60000, 5000, 86400000,
	     "How often the leader lists the stream's shards to create leases for new shards."),
	K_BOOL("heartbeat", lease.heartbeat, true,
	       "Write a wall-clock heartbeat attribute on renew, for `kinlake status` (KCL ignores it)."),
	K_BOOL("release_on_shutdown", lease.release_on_shutdown, true,
	       "Release held leases on SIGTERM so peers take them at once, instead of after failover_ms."),
	K_BOOL("cleanup", lease.cleanup, true,
	       "Delete finished parent-shard leases once every child has checkpointed (KCL's lease cleanup)."),
	{ NULL },
};

static const struct cfg_key consumer_keys[] = {
	K_INT("threads", consumer.threads, F_AUTO0, 0, 1, 1024,
	      "Most shards processed at once: one thread per held shard (it mostly waits on Kinesis and S3), so this also caps the leases held; 0 = 256."),
	K_INT("get_records_limit", consumer.get_records_limit, 0, 10000, 1, 10000,
	      "Most records asked for per GetRecords call (Kinesis's maximum is 10000)."),
	K_INT("max_pages_in_memory", consumer.max_pages_in_memory, 0, 2, 1, 1024,
	      "Most GetRecords answers the worker holds at once, all shards together (each up to 10 MB of body plus its decoded records, ~18 MB in all); a shard waits for a turn before it reads. Bounds the read side's memory whatever the number of shards. Two keep one page in processing while the next is fetched; raise it on workers with several cores to spare."),
	K_MS("idle_ms", consumer.idle_ms, 0, 1000, 0, 60000,
	     "Pause before the next GetRecords on a shard whose last call returned no records."),
	K_INT("max_calls_per_sec", consumer.max_calls_per_sec, 0, 5, 1, 5,
	      "Most GetRecords calls per second per shard; Kinesis allows 5 per shard, shared by all readers."),
	{ NULL },
};

static const struct cfg_key plugin_keys[] = {
	K_STR("name", plugin.name, 0, "identity", check_plugin_name,
	      "Transform plugin: a name looked up as NAME.so in search_path, or an absolute path to a .so."),
	K_STR("search_path", plugin.search_path, 0, "", check_search_path,
	      "Colon-separated absolute directories searched for plugins by name; empty = the built-in plugin directory."),
	K_SIZE("max_output_bytes", plugin.max_output_bytes, 64 * MiB, 1 * MiB, 1 * GiB,
	       "Most bytes the plugin may produce for one input record; a record over it is FAILED."),
	K_GROUP("settings", plugin.settings,
		"The plugin's own settings, handed to it unchanged; the plugin reports keys it does not know."),
	{ NULL },
};

static const struct cfg_key s3_keys[] = {
	K_STR("bucket", s3.bucket, F_REQUIRED, NULL, check_bucket,
	      "Bucket the objects are written to."),
	K_STR("prefix", s3.prefix, 0, "!{timestamp:yyyy/MM/dd/HH}/", check_prefix,
	      "Key prefix (or full key template) of data objects, in Firehose's !{...} syntax; the shard and ESN range follow it."),
	K_STR("error_prefix", s3.error_prefix, 0,
	      "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd/HH}/", check_error_prefix,
	      "Key prefix of error objects (records the plugin failed or that crashed it); must not lie under prefix."),
	K_ENUM("compression", s3.compression, CFG_COMPRESSION_GZIP, compression_choices,
	       "Object compression; sets the file extension and Content-Encoding."),
	K_INT("gzip_level", s3.gzip_level, 0, 6, 1, 9,
	      "gzip compression level (with compression = \"gzip\")."),
	K_INT("zstd_level", s3.zstd_level, 0, 1, 1, 19,
	      "zstd compression level (with compression = \"zstd\"). 1 by default: on clickstream JSON it compresses as well as 3 at about 3 times the speed and with less than half the memory per open object (bench/RESULTS.md)."),
	K_INT("zstd_window_log", s3.zstd_window_log, 0, 0, 0, 27,
	      "zstd window as a power of two (10..27; 0 = the level's own, 2^19 at level 1). Each open object holds a compression context of about 2.5 windows: at 16 it is ~0.5 MiB instead of ~1.3 MiB, but objects came out 7 % to 53 % larger on the clickstream samples measured (bench/RESULTS.md). A memory knob for workers holding many shards; gzip needs ~0.3 MiB per open object."),
	K_STR("delimiter", s3.delimiter, 0, "\n", check_delimiter,
	      "Written after every record (at most 16 bytes; \"\" = none)."),
	K_SIZE("buffer_bytes", s3.buffer_bytes, 64 * MiB, 1 * MiB, 5 * GiB,
	       "An object is sealed when its uncompressed records reach this size (spooled to disk, not RAM)."),
	K_INT("buffer_records", s3.buffer_records, 0, 0, 0, 100000000,
	      "An object is sealed when it holds this many records; 0 = no limit."),
	K_SEC("buffer_seconds", s3.buffer_seconds, 0, 300, 1, 86400,
	      "An object is sealed this long after its first record; keep it well below the stream's retention."),
	K_SIZE("multipart_threshold", s3.multipart_threshold, 16 * MiB, 5 * MiB, 5 * GiB,
	       "Objects of at least this size are sent with a multipart upload, smaller ones with one PUT."),
	K_SIZE("part_size", s3.part_size, 16 * MiB, 5 * MiB, 5 * GiB,
	       "Part size of multipart uploads (streamed from the spool file); at most multipart_threshold."),
	K_INT("upload_threads", s3.upload_threads, 0, 4, 1, 64,
	      "Threads uploading sealed objects to S3."),
	K_ENUM("storage_class", s3.storage_class, CFG_STORAGE_STANDARD, storage_class_choices,
	       "Storage class of new objects (only classes Athena reads without a restore)."),
	K_STR("content_type", s3.content_type, 0, "", check_content_type,
	      "Content-Type of data objects; empty = application/x-ndjson with the newline delimiter, else application/octet-stream."),
	K_BOOL("virtual_host", s3.virtual_host, false,
	       "Address the bucket as BUCKET.host instead of host/BUCKET (path style works everywhere, dotted buckets too)."),
	{ NULL },
};

static const struct cfg_key credentials_keys[] = {
	K_STR("access_key_id", credentials.access_key_id, F_SECRET, "", NULL,
	      "Explicit access key id; empty = the standard chain (environment, profile, web identity, container, IMDSv2)."),
	K_STR("secret_access_key", credentials.secret_access_key, F_SECRET, "", NULL,
	      "Secret key for access_key_id; the file must then not be readable by others."),
	K_STR("session_token", credentials.session_token, F_SECRET, "", NULL,
	      "Session token for temporary explicit keys."),
	K_STR("profile", credentials.profile, 0, "", check_profile,
	      "Profile in the shared credentials/config files; empty = AWS_PROFILE or \"default\"."),
	K_BOOL("allow_imdsv1", credentials.allow_imdsv1, false,
	       "Fall back to IMDSv1 when the IMDSv2 token request fails (weaker against SSRF)."),
	K_BOOL("disable_imds", credentials.disable_imds, false,
	       "Never ask the EC2 instance metadata service for credentials."),
	{ NULL },
};

static const struct cfg_key endpoints_keys[] = {
	K_STR("kinesis", endpoints.kinesis, 0, "", check_url,
	      "Kinesis endpoint URL (http:// allowed, e.g. a local emulator); empty = https://kinesis.REGION.amazonaws.com."),
	K_STR("dynamodb", endpoints.dynamodb, 0, "", check_url,
	      "DynamoDB endpoint URL; empty = the AWS endpoint of region."),
	K_STR("s3", endpoints.s3, 0, "", check_url,
	      "S3 endpoint URL; empty = the AWS endpoint of region."),
	K_STR("sts", endpoints.sts, 0, "", check_url,
	      "STS endpoint URL (web identity credentials); empty = the AWS endpoint of region."),
	K_STR("imds", endpoints.imds, 0, "", check_url,
	      "EC2 instance metadata URL; empty = AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254."),
	K_STR("ecs", endpoints.ecs, 0, "", check_url,
	      "ECS container credentials host URL; empty = http://169.254.170.2."),
	{ NULL },
};

static const struct cfg_key tls_keys[] = {
	K_STR("ca_file", tls.ca_file, 0, "", check_opt_abs_path,
	      "PEM bundle of CA certificates for https endpoints; empty = the system's."),
	{ NULL },
};

static const struct cfg_key http_keys[] = {
	K_MS("connect_timeout_ms", http.connect_timeout_ms, 0, 3000, 100, 60000,
	     "Timeout for establishing one connection."),
	K_MS("timeout_ms", http.timeout_ms, 0, 30000, 1000, 600000,
	     "Timeout for one whole request (including the body of a part upload)."),
	{ NULL },
};

static const struct cfg_key retry_keys[] = {
	K_INT("max_attempts", retry.max_attempts, 0, 8, 1, 100,
	      "Tries per AWS call, the first included; when exhausted the shard waits and retries later, never drops data."),
	K_MS("base_delay_ms", retry.base_delay_ms, 0, 50, 1, 60000,
	     "Backoff base: retry n sleeps a random time up to base * 2^(n-1) (full jitter)."),
	K_MS("throttle_base_delay_ms", retry.throttle_base_delay_ms, 0, 500, 1, 60000,
	     "Backoff base after a throttling error."),
	K_MS("max_delay_ms", retry.max_delay_ms, 0, 5000, 1, 600000,
	     "Longest single backoff sleep."),
	{ NULL },
};

static const struct cfg_key log_keys[] = {
	K_ENUM("level", log.level, LOG_LEVEL_INFO, log_level_choices,
	       "Least severe messages logged."),
	K_STR("file", log.file, 0, "", check_opt_abs_path,
	      "Log file (reopened on SIGHUP); empty = stderr, which systemd sends to the journal."),
	{ NULL },
};

static const struct cfg_key metrics_keys[] = {
	K_STR("file", metrics.file, 0, "", check_metrics_file,
	      "Prometheus node-exporter textfile (absolute, ending in .prom), rewritten atomically; empty = no metrics."),
	K_MS("interval_ms", metrics.interval_ms, 0, 15000, 1000, 3600000,
	     "How often the metrics file is rewritten."),
	{ NULL },
};

static const struct cfg_key status_keys[] = {
	K_MS("lag_warn_ms", status.lag_warn_ms, 0, 900000, 1000, 604800000,
	     "`kinlake status` warns when a shard's oldest record not yet in S3 is older; must exceed s3.buffer_seconds."),
	K_MS("lag_crit_ms", status.lag_crit_ms, 0, 3600000, 1000, 604800000,
	     "`kinlake status` is critical when that age is larger; must exceed lag_warn_ms."),
	K_MS("unowned_crit_ms", status.unowned_crit_ms, 0, 60000, 1000, 86400000,
	     "Critical when a shard has had no live owner this long; at least lease.failover_ms + lease.take_interval_ms."),
	K_MS("intent_stuck_ms", status.intent_stuck_ms, 0, 900000, 1000, 86400000,
	     "Critical when an upload intent (pending checkpoint) is older than this."),
	{ NULL },
};

static const struct cfg_key poison_keys[] = {
	K_INT("max_crashes", poison.max_crashes, 0, 3, 1, 100,
	      "A record that crashed the transform this many times goes to the error prefix instead of being retried."),
	{ NULL },
};

static const struct cfg_key aggregates_keys[] = {
	K_STR("table", aggregates.table, 0, "", check_opt_table_name,
	      "DynamoDB table of per-window aggregates for dashboards (README \"Aggregates\"); \"\" = off."),
	K_SEC("window_seconds", aggregates.window_seconds, 0, 60, 1, 86400,
	      "Tumbling window size, by event time."),
	K_SEC("allowed_lateness_seconds", aggregates.allowed_lateness_seconds, 0, 60, 0, 86400,
	      "A record that arrives (Kinesis arrival time) this long after its window ended is counted in 'late', not 'count'."),
	K_STRP("time_field", aggregates.time_field, 0, "timestamp", parse_agg_name,
	      "Output JSON field with the event time (ISO-8601 or epoch ms; a.b = nested); \"\" or unusable = the arrival time (also counted in 'untimed')."),
	K_STRP("dimensions", aggregates.dimensions, 0, "", parse_agg_dimensions,
	      "Comma-separated output JSON fields (a.b = nested) or plugin partition keys (key:NAME) to group by, e.g. \"page, action\"; required with a table."),
	K_STRP("measures", aggregates.measures, 0, "count", parse_agg_measures,
	      "Comma-separated measures besides the record count: \"count\", \"sum:FIELD\" (numeric field, 6 decimals), \"distinct:FIELD\" (distinct-ish values: a set of 1024 hash buckets, README \"Aggregates\")."),
	K_INT("buckets", aggregates.buckets, 0, 4, 1, 1000,
	      "Items per window and dimensions, one per shard group (shard number mod buckets), so a popular value is no hot key; a query sums them."),
	K_INT("max_entries", aggregates.max_entries, 0, 10000, 10, 1000000,
	      "Distinct (window, dimensions) per batch held in memory; reaching it seals the S3 batch early."),
	K_SEC("flush_seconds", aggregates.flush_seconds, 0, 60, 1, 900,
	      "With aggregates on, batches are sealed at least this often (the dashboard delay), even if s3.buffer_seconds is longer."),
	K_BOOL("create_table", aggregates.create_table, 1,
	       "Create the table (hash key pk, on-demand) when it is missing."),
	{ NULL },
};

static const struct cfg_section lease_section = { "lease",
	"Lease table coordination (KCL 2.x compatible).", lease_keys };
static const struct cfg_section consumer_section = { "consumer",
	"Reading shards with GetRecords.", consumer_keys };
static const struct cfg_section plugin_section = { "plugin",
	"The transform plugin every record goes through.", plugin_keys };
static const struct cfg_section s3_section = { "s3",
	"Output objects.", s3_keys };
static const struct cfg_section credentials_section = { "credentials",
	"AWS credentials; by default the standard provider chain.", credentials_keys };
static const struct cfg_section endpoints_section = { "endpoints",
	"Endpoint overrides (local emulators, VPC endpoints, FIPS).", endpoints_keys };
static const struct cfg_section tls_section = { "tls",
	"TLS for https endpoints (certificates are always verified).", tls_keys };
static const struct cfg_section http_section = { "http",
	"HTTP timeouts for every AWS call.", http_keys };
static const struct cfg_section retry_section = { "retry",
	"Retries of AWS calls (exponential backoff with full jitter).", retry_keys };
static const struct cfg_section log_section = { "log",
	"Logging.", log_keys };
static const struct cfg_section metrics_section = { "metrics",
	"Metrics for Prometheus.", metrics_keys };
static const struct cfg_section status_section = { "status",
	"Thresholds of `kinlake status` (exit 1 warning, 2 critical).", status_keys };
static const struct cfg_section poison_section = { "poison",
	"Records that crash the plugin.", poison_keys };
static const struct cfg_section aggregates_section = { "aggregates",
	"Per-window aggregates of the delivered records in DynamoDB, exactly once.", aggregates_keys };

static const struct cfg_key root_keys[] = {
	K_STR("application", application, F_REQUIRED, NULL, check_table_name,
	      "Application name = name of the DynamoDB lease table (KCL compatible); created if missing."),
	K_STR("worker_id", worker_id, 0, "", check_worker_id,
	      "Lease owner name, stable across restarts so a restarted worker keeps its shards; empty = the host name (set it when one host runs several workers)."),
	K_STR("stream", stream, F_REQUIRED, NULL, check_stream,
	      "Kinesis stream name or ARN."),
	K_STR("region", region, 0, "us-east-1", check_region,
	      "AWS region of the stream, table and bucket."),
	K_ENUM("initial_position", initial_position, CFG_INITIAL_TRIM_HORIZON, initial_position_choices,
	       "Where a shard without a checkpoint starts; TRIM_HORIZON (the oldest retained record) because a data lake would rather read old data once than lose it, unlike KCL's LATEST."),
	K_STR("initial_timestamp", initial_timestamp, 0, "", check_timestamp,
	      "With initial_position = \"AT_TIMESTAMP\" (and only then): ISO-8601 time with a zone, e.g. \"2024-05-01T00:00:00Z\"."),
	K_STR("state_dir", state_dir, 0, "/var/lib/kinlake", check_abs_path,
	      "Directory of the local journal (SQLite) and the spool files."),
	K_MS("shutdown_grace_ms", shutdown_grace_ms, 0, 30000, 1000, 600000,
	     "On SIGTERM, time to finish in-flight uploads before leases are released; keep it below systemd's TimeoutStopSec."),
	K_SECTION("lease", lease_section),
	K_SECTION("consumer", consumer_section),
	K_SECTION("plugin", plugin_section),
	K_SECTION("s3", s3_section),
	K_SECTION("credentials", credentials_section),
	K_SECTION("endpoints", endpoints_section),
	K_SECTION("tls", tls_section),
	K_SECTION("http", http_section),
	K_SECTION("retry", retry_section),
	K_SECTION("log", log_section),
	K_SECTION("metrics", metrics_section),
	K_SECTION("status", status_section),
	K_SECTION("poison", poison_section),
	K_SECTION("aggregates", aggregates_section),
	{ NULL },
};

static const struct cfg_section root_section = { "", NULL, root_keys };

/* ====================================================================
 * Small helpers
 * ==================================================================== */

static void *field_ptr(struct kl_config *cfg, const struct cfg_key *k)
{
	return (char *)cfg + k->offset;
}

static const void *field_cptr(const struct kl_config *cfg, const struct cfg_key *k)
{
	return (const char *)cfg + k->offset;
}

static const char *choice_name(const struct cfg_choice *choices, int value)
{
	for (const struct cfg_choice *c = choices; c->name; c++)
		if (c->value == value)
			return c->name;
	return "?";
}

const char *cfg_compression_name(enum cfg_compression c)
{
	return choice_name(compression_choices, (int)c);
}

const char *cfg_storage_class_name(enum cfg_storage_class sc)
{
	return choice_name(storage_class_choices, (int)sc);
}

const char *cfg_initial_position_name(enum cfg_initial_position p)
{
	return choice_name(initial_position_choices, (int)p);
}

bool cfg_is_placeholder(const char *value)
{
	return value && strcmp(value, CFG_PLACEHOLDER) == 0;
}

static void key_path(char *out, size_t outsz, const char *secpath, const char *name)
{
	if (secpath && *secpath)
		snprintf(out, outsz, "%s.%s", secpath, name);
	else
		snprintf(out, outsz, "%s", name);
}

/* "64MiB" when v is a whole number of a binary unit, else plain digits. */
static void fmt_size(char *out, size_t outsz, int64_t v)
{
	static const struct { int64_t mul; const char *unit; } units[] = {
		{ TiB, "TiB" }, { GiB, "GiB" }, { MiB, "MiB" }, { KiB, "KiB" },
	};

	if (v != 0)
		for (size_t i = 0; i < KL_ARRAY_LEN(units); i++)
			if (v % units[i].mul == 0) {
				snprintf(out, outsz, "%" PRId64 "%s", v / units[i].mul, units[i].unit);
				return;
			}
	snprintf(out, outsz, "%" PRId64, v);
}

/* A number in the key's own terms (sizes with units) for messages. */
static void fmt_num(char *out, size_t outsz, const struct cfg_key *k, int64_t v)
{
	if (k->type == T_SIZE)
		fmt_size(out, outsz, v);
	else
		snprintf(out, outsz, "%" PRId64, v);
}

static const char *type_name(int type)
{
	switch (type) {
	case CONFIG_TYPE_GROUP: return "a group";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a float";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array";
	case CONFIG_TYPE_LIST: return "a list";
	}
	return "nothing";
}

static const char *duration_unit_name(const struct cfg_key *k)
{
	return k->unit_ms == 1000 ? "seconds" : "milliseconds";
}

/* ---------------------------------------------------------------- parsing */

/* Parses decimal digits at *p (no sign) into *ret; false on none/overflow. */
static bool parse_digits(const char **p, int64_t *ret)
{
	const char *s = *p;
	int64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return false;
	for (; isdigit((unsigned char)*s); s++) {
		int d = *s - '0';

		if (v > (INT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*p = s;
	*ret = v;
	return true;
}

/* "64MiB", "512 KiB", "100": bytes. reason set on failure. */
static bool parse_size(const char *s, int64_t *ret, const char **reason)
{
	static const struct { const char *unit; int64_t mul; } units[] = {
		{ "", 1 }, { "B", 1 }, { "KiB", KiB }, { "MiB", MiB }, { "GiB", GiB }, { "TiB", TiB },
	};
	static const char *const ambiguous[] = {
		"k", "K", "KB", "kB", "M", "MB", "G", "GB", "T", "TB", "m", "mb", "g", "gb", "kb", "tb",
	};
	int64_t v;

	if (!parse_digits(&s, &v)) {
		*reason = "is not a size (an integer, or a string like \"64MiB\")";
		return false;
	}
	if (*s == ' ')
		s++;
	for (size_t i = 0; i < KL_ARRAY_LEN(units); i++)
		if (strcmp(s, units[i].unit) == 0) {
			if (v > INT64_MAX / units[i].mul) {
				*reason = "is too large";
				return false;
			}
			*ret = v * units[i].mul;
			return true;
		}
	for (size_t i = 0; i < KL_ARRAY_LEN(ambiguous); i++)
		if (strcmp(s, ambiguous[i]) == 0) {
			*reason = "has an ambiguous unit: write KiB, MiB, GiB or TiB (powers of 1024)";
			return false;
		}
	*reason = "has an unknown unit (B, KiB, MiB, GiB or TiB)";
	return false;
}

/* "250ms", "10s", "5min", "2h", "1d": milliseconds. */
static bool parse_duration(const char *s, int64_t *ret_ms, const char **reason)
{
	static const struct { const char *unit; int64_t mul; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "min", 60000 }, { "m", 60000 },
		{ "h", 3600000 }, { "d", 86400000 },
	};
	int64_t v;

	if (!parse_digits(&s, &v)) {
		*reason = "is not a duration (an integer, or a string like \"10s\")";
		return false;
	}
	if (*s == ' ')
		s++;
	if (!*s) {
		*reason = "needs a unit in a string (ms, s, min, h, d), or write a bare integer";
		return false;
	}
	for (size_t i = 0; i < KL_ARRAY_LEN(units); i++)
		if (strcmp(s, units[i].unit) == 0) {
			if (v > INT64_MAX / units[i].mul) {
				*reason = "is too large";
				return false;
			}
			*ret_ms = v * units[i].mul;
			return true;
		}
	*reason = "has an unknown unit (ms, s, min, h, d)";
	return false;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
	static const int dm[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : dm[m - 1];
}

/* Reads exactly n digits. */
static bool fixed_digits(const char **p, int n, int *ret)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*ret = v;
	return true;
}

/*
 * ISO-8601 date and time with a zone: YYYY-MM-DDTHH:MM:SS[.fraction]
 * (Z | +HH:MM | -HH:MM | +HHMM); 'T' may be a space. Milliseconds since
 * the epoch in *ret_ms.
 */
static bool parse_timestamp(const char *s, int64_t *ret_ms, const char **reason)
{
	int y, mo, d, h, mi, sec, ms = 0, oh = 0, om = 0, sign = 0;
	const char *p = s;

	*reason = "is not an ISO-8601 time like \"2024-05-01T00:00:00Z\"";
	if (!fixed_digits(&p, 4, &y) || *p++ != '-' || !fixed_digits(&p, 2, &mo) || *p++ != '-' ||
	    !fixed_digits(&p, 2, &d))
		return false;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	if (!fixed_digits(&p, 2, &h) || *p++ != ':' || !fixed_digits(&p, 2, &mi) || *p++ != ':' ||
	    !fixed_digits(&p, 2, &sec))
		return false;
	if (*p == '.' || *p == ',') {
		int scale = 100;

		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		for (; isdigit((unsigned char)*p); p++) {
			ms += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (!fixed_digits(&p, 2, &oh))
			return false;
		if (*p == ':')
			p++;
		if (!fixed_digits(&p, 2, &om))
			return false;
	} else {
		*reason = "needs a time zone (Z or +HH:MM)";
		return false;
	}
	if (*p)
		return false;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
	    sec > 59 || oh > 23 || om > 59) {
		*reason = "is not a valid date and time";
		return false;
	}
	*ret_ms = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) -
		   (int64_t)sign * (oh * 3600 + om * 60)) * 1000 + ms;
	return true;
}

/* ---------------------------------------------------------------- string checks */

static bool all_chars(const char *v, const char *extra)
{
	for (; *v; v++)
		if (!isalnum((unsigned char)*v) && !strchr(extra, *v))
			return false;
	return true;
}

static const char *check_table_name(const char *v)
{
	size_t n = strlen(v);

	if (n < 3 || n > 255 || !all_chars(v, "_.-"))
		return "is not a DynamoDB table name (3..255 of A-Z a-z 0-9 _ . -)";
	return NULL;
}

static const char *check_worker_id(const char *v)
{
	if (strlen(v) > 256)
		return "is longer than 256 bytes";
	for (; *v; v++)
		if (*v <= 0x20 || *v >= 0x7f)
			return "must be printable ASCII without spaces";
	return NULL;
}

static bool stream_name_ok(const char *v)
{
	size_t n = strlen(v);

	return n >= 1 && n <= 128 && all_chars(v, "_.-");
}

/*
 * arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME. On success copies the
 * region into region (size regionsz) and returns true.
 */
static bool parse_stream_arn(const char *v, char *region, size_t regionsz)
{
	const char *p, *r, *acct, *res;

	if (strncmp(v, "arn:", 4) != 0)
		return false;
	p = strchr(v + 4, ':');                 /* end of partition */
	if (!p || p == v + 4 || strncmp(p, ":kinesis:", 9) != 0)
		return false;
	r = p + 9;                              /* region */
	acct = strchr(r, ':');
	if (!acct || acct == r || (size_t)(acct - r) >= regionsz)
		return false;
	res = strchr(acct + 1, ':');
	if (!res || res - (acct + 1) != 12)
		return false;
	for (const char *q = acct + 1; q < res; q++)
		if (!isdigit((unsigned char)*q))
			return false;
	if (strncmp(res + 1, "stream/", 7) != 0 || !stream_name_ok(res + 8))
		return false;
	memcpy(region, r, (size_t)(acct - r));
	region[acct - r] = '\0';
	return true;
}

static const char *check_stream(const char *v)
{
	char region[64];

	if (strncmp(v, "arn:", 4) == 0)
		return parse_stream_arn(v, region, sizeof(region)) ? NULL :
		       "is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)";
	if (!stream_name_ok(v))
		return "is not a stream name (1..128 of A-Z a-z 0-9 _ . -) or ARN";
	return NULL;
}

static const char *check_region(const char *v)
{
	size_t n = strlen(v);

	if (n < 2 || n > 32 || !islower((unsigned char)v[0]))
		return "is not an AWS region name like \"eu-west-1\"";
	for (; *v; v++)
		if (!islower((unsigned char)*v) && !isdigit((unsigned char)*v) && *v != '-')
			return "is not an AWS region name like \"eu-west-1\"";
	return NULL;
}

static const char *check_timestamp(const char *v)
{
	const char *reason;
	int64_t ms;

	if (!*v)
		return NULL;
	return parse_timestamp(v, &ms, &reason) ? NULL : reason;
}

static const char *check_abs_path(const char *v)
{
	if (v[0] != '/')
		return "must be an absolute path";
	if (strlen(v) > 4000)
		return "is too long";
	return NULL;
}

static const char *check_opt_abs_path(const char *v)
{
	return *v ? check_abs_path(v) : NULL;
}

static const char *check_plugin_name(const char *v)
{
	size_t n = strlen(v);

	if (strchr(v, '/'))
		return v[0] == '/' ? check_abs_path(v) :
		       "must be a plugin name or an absolute path";
	if (n < 1 || n > 64 || !all_chars(v, "_-"))
		return "is not a plugin name (1..64 of A-Z a-z 0-9 _ -) or an absolute path";
	return NULL;
}

static const char *check_search_path(const char *v)
{
	const char *p = v;

	if (!*v)
		return NULL;
	if (strlen(v) > 4000)
		return "is too long";
	for (;;) {
		if (*p != '/')
			return "must be absolute directories separated by ':'";
		p = strchr(p, ':');
		if (!p)
			return NULL;
		p++;
	}
}

static const char *check_bucket(const char *v)
{
	size_t n = strlen(v);
	int dots = 0, digits_only = 1;

	if (n < 3 || n > 63 || !all_chars(v, ".-") ||
	    !(islower((unsigned char)v[0]) || isdigit((unsigned char)v[0])) ||
	    !(islower((unsigned char)v[n - 1]) || isdigit((unsigned char)v[n - 1])))
		return "is not an S3 bucket name (3..63 of a-z 0-9 . -, starting and ending with a letter or digit)";
	for (const char *p = v; *p; p++) {
		if (isupper((unsigned char)*p))
			return "is not an S3 bucket name (no upper case)";
		if (*p == '.') {
			dots++;
			if (p[1] == '.')
				return "is not an S3 bucket name (\"..\")";
		} else if (!isdigit((unsigned char)*p)) {
			digits_only = 0;
		}
	}
	if (dots == 3 && digits_only)
		return "is not an S3 bucket name (looks like an IP address)";
	return NULL;
}

/* Length, no leading '/', every "!{" closed by a '}' before the next "!{". */
static const char *check_template(const char *v)
{
	if (strlen(v) > 512)
		return "is longer than 512 bytes";
	if (v[0] == '/')
		return "must not start with '/'";
	for (const char *p = v; (p = strstr(p, "!{")); ) {
		const char *close = strchr(p + 2, '}');
		const char *next = strstr(p + 2, "!{");

		if (!close || (next && next < close))
			return "has a \"!{\" without its '}'";
		if (close == p + 2)
			return "has an empty \"!{}\"";
		p = close + 1;
	}
	return NULL;
}

static const char *check_prefix(const char *v)
{
	return check_template(v);
}

static const char *check_error_prefix(const char *v)
{
	if (!*v)
		return "must not be empty (error objects would mix with data objects)";
	return check_template(v);
}

static const char *check_delimiter(const char *v)
{
	return strlen(v) > SPOOL_DELIM_MAX ? "is longer than 16 bytes" : NULL;
}

static const char *check_content_type(const char *v)
{
	const char *slash = strchr(v, '/');

	if (!*v)
		return NULL; /* derived from the delimiter */
	if (!slash || slash == v || !slash[1] || strlen(v) > 255)
		return "is not a media type like \"application/x-ndjson\"";
	for (; *v; v++)
		if (*v < 0x20 || *v >= 0x7f)
			return "must be printable ASCII";
	return NULL;
}

static const char *check_profile(const char *v)
{
	if (strlen(v) > 64 || !all_chars(v, "_.-@+"))
		return "is not a profile name (at most 64 of A-Z a-z 0-9 _ . - @ +)";
	return NULL;
}

/* scheme://host[:port] with scheme http or https, no path. */
static const char *check_url(const char *v)
{
	const char *host, *p;

	if (!*v)
		return NULL;
	if (strncmp(v, "https://", 8) == 0)
		host = v + 8;
	else if (strncmp(v, "http://", 7) == 0)
		host = v + 7;
	else
		return "must start with http:// or https://";
	p = host;
	if (*p == '[') {
		p = strchr(p, ']');
		if (!p)
			return "has an unterminated IPv6 address";
		p++;
	} else {
		while (isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_')
			p++;
	}
	if (p == host)
		return "has no host";
	if (*p == ':') {
		int64_t port;

		p++;
		if (!parse_digits(&p, &port) || port < 1 || port > 65535)
			return "has a bad port";
	}
	if (*p == '/' && !p[1])
		p++;
	if (*p)
		return "must be scheme://host[:port] without a path, query or user";
	return NULL;
}

static const char *check_opt_table_name(const char *v)
{
	return *v ? check_table_name(v) : NULL;
}

/* The aggregates' names and lists, parsed as the worker parses them
 * (src/agg/agg_spec.c); "" is allowed here, the cross-key checks decide. */
static enum kl_err parse_agg_name(const char *v, struct kl_errinfo *info)
{
	return *v ? agg_spec_check_name(v, info) : KL_OK;
}

static enum kl_err parse_agg_dimensions(const char *v, struct kl_errinfo *info)
{
	struct agg_spec spec;

	return *v ? agg_spec_parse_dims(v, &spec, info) : KL_OK;
}

static enum kl_err parse_agg_measures(const char *v, struct kl_errinfo *info)
{
	struct agg_spec spec;

	return agg_spec_parse_measures(v, &spec, info);
}

static const char *check_metrics_file(const char *v)
{
	size_t n = strlen(v);

	if (!n)
		return NULL;
	if (v[0] != '/')
		return "must be an absolute path";
	if (n < 6 || strcmp(v + n - 5, ".prom") != 0)
		return "must end in .prom (node-exporter's textfile collector reads only those)";
	return NULL;
}

/* ====================================================================
 * Errors
 * ==================================================================== */

void cfg_errors_init(struct cfg_errors *errors)
{
	errors->count = 0;
	errors->kept = 0;
	buf_init(&errors->text, (size_t)1 << 20);
}

void cfg_errors_done(struct cfg_errors *errors)
{
	if (!errors)
		return;
	buf_done(&errors->text);
	errors->count = errors->kept = 0;
}

void cfg_errors_print(const struct cfg_errors *errors, FILE *out)
{
	if (errors->text.len)
		fwrite(errors->text.data, 1, errors->text.len, out);
	if (errors->count > errors->kept)
		fprintf(out, "... and %zu more errors\n", errors->count - errors->kept);
}

/* ====================================================================
 * Loading
 * ==================================================================== */

struct source {
	char *file;
	char *text;           /* NULL when it could not be read */
};

struct ctx {
	struct kl_config *cfg;
	struct cfg_errors *errors;
	const char *path;      /* as given by the caller */
	struct source sources[CFG_SOURCES_MAX];
	size_t nsources;
	bool nomem;
	bool secret_mode_checked;
};

static void add_error_v(struct ctx *x, const char *file, unsigned line, const char *key,
			const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

static void add_error_v(struct ctx *x, const char *file, unsigned line, const char *key,
			const char *fmt, va_list ap)
{
	struct cfg_errors *e = x->errors;
	char msg[1024];

	e->count++;
	if (e->kept >= CFG_ERRORS_MAX)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (line)
		buf_printf(&e->text, "%s:%u: ", file ? file : x->path, line);
	else
		buf_printf(&e->text, "%s: ", file ? file : x->path);
	if (key && *key)
		buf_printf(&e->text, "%s: ", key);
	if (buf_printf(&e->text, "%s\n", msg) != KL_OK)
		x->nomem = true;
	e->kept++;
}

/* An error about setting s (NULL: no line) of key. */
static void err_at(struct ctx *x, const config_setting_t *s, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void err_at(struct ctx *x, const config_setting_t *s, const char *key, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_error_v(x, s ? config_setting_source_file(s) : NULL,
		    s ? config_setting_source_line(s) : 0, key, fmt, ap);
	va_end(ap);
}

/* An error about the key at path ("s3.part_size"), at its line when set. */
static void err_key(struct ctx *x, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void err_key(struct ctx *x, const char *path, const char *fmt, ...)
{
	const config_setting_t *s = x->cfg->doc ? config_lookup(x->cfg->doc, path) : NULL;
	va_list ap;

	va_start(ap, fmt);
	add_error_v(x, s ? config_setting_source_file(s) : NULL,
		    s ? config_setting_source_line(s) : 0, path, fmt, ap);
	va_end(ap);
}

static bool key_is_set(const struct ctx *x, const char *path)
{
	return x->cfg->doc && config_lookup(x->cfg->doc, path);
}

/* ---------------------------------------------------------------- unknown keys */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Looks for name as a key of another section; writes "sec.name". */
static bool find_elsewhere(const struct cfg_section *here, const char *name, char *out, size_t outsz)
{
	for (const struct cfg_key *k = root_keys; k->name; k++) {
		if (here != &root_section && k->type != T_SECTION && strcmp(k->name, name) == 0) {
			snprintf(out, outsz, "%s", k->name);
			return true;
		}
		if (k->type != T_SECTION || k->section == here)
			continue;
		for (const struct cfg_key *sk = k->section->keys; sk->name; sk++)
			if (strcmp(sk->name, name) == 0) {
				snprintf(out, outsz, "%s.%s", k->name, sk->name);
				return true;
			}
	}
	return false;
}

static void unknown_key(struct ctx *x, const config_setting_t *s, const struct cfg_section *sec,
			const char *secpath)
{
	const char *name = config_setting_name(s);
	const struct cfg_key *best = NULL;
	size_t best_d = 3;  /* suggest only within 2 edits */
	char path[160], other[160];

	key_path(path, sizeof(path), secpath, name ? name : "?");
	for (const struct cfg_key *k = sec->keys; name && k->name; k++) {
		size_t d = edit_distance(name, k->name);
		size_t shorter = strlen(name) < strlen(k->name) ? strlen(name) : strlen(k->name);

		/* "bucket_name" for "bucket": one is the start of the other. */
		if (d > 2 && shorter >= 4 && strncmp(name, k->name, shorter) == 0)
			d = 2;
		if (d < best_d && d < strlen(k->name)) {
			best_d = d;
			best = k;
		}
	}
	if (best) {
		key_path(other, sizeof(other), secpath, best->name);
		err_at(x, s, path, "unknown key (did you mean '%s'?)", other);
	} else if (name && find_elsewhere(sec, name, other, sizeof(other))) {
		err_at(x, s, path, "unknown key (did you mean '%s'?)", other);
	} else {
		err_at(x, s, path, "unknown key");
	}
}

/* ---------------------------------------------------------------- literal check */

static const char *source_text(struct ctx *x, const char *file)
{
	struct source *src;
	FILE *f;
	size_t n;

	for (size_t i = 0; i < x->nsources; i++)
		if (strcmp(x->sources[i].file, file) == 0)
			return x->sources[i].text;
	if (x->nsources == CFG_SOURCES_MAX)
		return NULL;
	src = &x->sources[x->nsources];
	src->file = strdup(file);
	if (!src->file) {
		x->nomem = true;
		return NULL;
	}
	x->nsources++;
	src->text = NULL;
	f = fopen(file, "r");
	if (!f)
		return NULL;
	src->text = malloc(CFG_SOURCE_MAX + 1);
	if (!src->text) {
		x->nomem = true;
		fclose(f);
		return NULL;
	}
	n = fread(src->text, 1, CFG_SOURCE_MAX, f);
	src->text[n] = '\0';
	fclose(f);
	return src->text;
}

static bool is_name_char(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '*';
}

/*
 * libconfig 1.5 stores an integer literal without an L suffix in an int,
 * silently wrapping values outside 32 bits (2147483648 reads as
 * -2147483648). For an int setting, find "name =" from its line on in the
 * source and compare the literal with the stored value. True = truncated.
 * When the literal cannot be found the value is trusted.
 */
static bool literal_truncated(struct ctx *x, const config_setting_t *s)
{
	const char *file = config_setting_source_file(s);
	const char *name = config_setting_name(s);
	const char *text, *p;
	unsigned line = config_setting_source_line(s);
	size_t nlen;

	if (config_setting_type(s) != CONFIG_TYPE_INT || !file || !name || !line)
		return false;
	text = source_text(x, file);
	if (!text)
		return false;
	for (p = text; line > 1 && p; line--) {
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	if (!p)
		return false;
	nlen = strlen(name);
	for (; (p = strstr(p, name)); p += nlen) {
		const char *q = p + nlen;
		long long lit;
		char *end;
		int neg = 0;

		if ((p > text && is_name_char(p[-1])) || is_name_char(*q))
			continue;
		while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
			q++;
		if (*q != '=' && *q != ':')
			continue;
		q++;
		while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
			q++;
		if (*q == '-' || *q == '+')
			neg = *q++ == '-';
		errno = 0;
		if (q[0] == '0' && (q[1] == 'x' || q[1] == 'X'))
			lit = (long long)strtoull(q + 2, &end, 16);
		else
			lit = strtoll(q, &end, 10);
		if (end == q)
			return false;
		if (errno == ERANGE)
			return true;
		if (neg)
			lit = -lit;
		return lit != config_setting_get_int64(s);
	}
	return false;
}

/* ---------------------------------------------------------------- one key */

static void set_string(struct ctx *x, const struct cfg_key *k, const char *v)
{
	char **slot = field_ptr(x->cfg, k);
	char *copy = strdup(v);

	if (!copy) {
		x->nomem = true;
		return;
	}
	if (k->flags & F_SECRET)
		kl_free_secret(*slot);
	else
		free(*slot);
	*slot = copy;
}

/* Secrets in a file others may read are refused, like ssh does. */
static void check_secret_file_mode(struct ctx *x, const config_setting_t *s, const char *path)
{
	const char *file = config_setting_source_file(s);
	struct stat st;

	if (x->secret_mode_checked || !file || stat(file, &st) != 0)
		return;
	x->secret_mode_checked = true;
	if (st.st_mode & (S_IROTH | S_IWOTH))
		err_at(x, s, path, "a secret is set but %s is accessible by others (mode %04o); "
		       "run chmod o-rwx on it", file, (unsigned)(st.st_mode & 07777));
}

static void load_string(struct ctx *x, const config_setting_t *s, const struct cfg_key *k,
			const char *path)
{
	bool secret = k->flags & F_SECRET;
	const char *v, *reason;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		err_at(x, s, path, "expected a string, got %s", type_name(config_setting_type(s)));
		return;
	}
	v = config_setting_get_string(s);
	if (strlen(v) > CFG_STRING_MAX) {
		err_at(x, s, path, "is longer than %d bytes", CFG_STRING_MAX);
		return;
	}
	if (k->flags & F_REQUIRED) {
		if (cfg_is_placeholder(v)) {
			err_at(x, s, path, "still \"%s\", unchanged from the example config: set it",
			       CFG_PLACEHOLDER);
			return;
		}
		if (!*v) {
			err_at(x, s, path, "must not be empty");
			return;
		}
	}
	if (k->check && (reason = k->check(v))) {
		if (secret)
			err_at(x, s, path, "%s", reason);
		else
			err_at(x, s, path, "\"%s\" %s", v, reason);
		return;
	}
	if (k->parse) {
		struct kl_errinfo info;

		kl_errinfo_clear(&info);
		if (k->parse(v, &info) != KL_OK) {
			err_at(x, s, path, "%s", info.message);
			return;
		}
	}
	set_string(x, k, v);
	if (secret && *v) {
		/* Our copy is the only one from now on (cfg_free wipes it). */
		kl_wipe((char *)v, strlen(v));
		check_secret_file_mode(x, s, path);
	}
}

static void range_error(struct ctx *x, const config_setting_t *s, const struct cfg_key *k,
			const char *path, int64_t v)
{
	char sv[40], lo[40], hi[40];

	fmt_num(sv, sizeof(sv), k, v);
	fmt_num(lo, sizeof(lo), k, k->min);
	fmt_num(hi, sizeof(hi), k, k->max);
	err_at(x, s, path, "%s is out of range %s..%s%s", sv, lo, hi,
	       (k->flags & F_AUTO0) ? " (or 0 for the default)" : "");
}

static void load_number(struct ctx *x, const config_setting_t *s, const struct cfg_key *k,
			const char *path)
{
	int type = config_setting_type(s);
	int64_t v;

	if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
		if (literal_truncated(x, s)) {
			err_at(x, s, path, "integer does not fit in 32 bits: add an L suffix "
			       "(5368709120L)%s", k->type == T_SIZE ? " or write a unit (\"5GiB\")" : "");
			return;
		}
		v = config_setting_get_int64(s);
	} else if (type == CONFIG_TYPE_STRING && (k->type == T_SIZE || k->type == T_DURATION)) {
		const char *str = config_setting_get_string(s), *reason;
		int64_t ms;

		if (k->type == T_SIZE) {
			if (!parse_size(str, &v, &reason)) {
				err_at(x, s, path, "\"%s\" %s", str, reason);
				return;
			}
		} else {
			if (!parse_duration(str, &ms, &reason)) {
				err_at(x, s, path, "\"%s\" %s", str, reason);
				return;
			}
			if (ms % k->unit_ms) {
				err_at(x, s, path, "\"%s\" is not a whole number of %s", str,
				       duration_unit_name(k));
				return;
			}
			v = ms / k->unit_ms;
		}
	} else {
		if (k->type == T_SIZE)
			err_at(x, s, path, "expected a size (integer bytes or a string like \"64MiB\"), got %s",
			       type_name(type));
		else if (k->type == T_DURATION)
			err_at(x, s, path, "expected a duration (integer %s or a string like \"10s\"), got %s",
			       duration_unit_name(k), type_name(type));
		else
			err_at(x, s, path, "expected an integer, got %s", type_name(type));
		return;
	}
	if ((v < k->min || v > k->max) && !(v == 0 && (k->flags & F_AUTO0))) {
		range_error(x, s, k, path, v);
		return;
	}
	*(int64_t *)field_ptr(x->cfg, k) = v;
}

static void load_group(struct ctx *x, const config_setting_t *g, const struct cfg_section *sec,
		       const char *secpath);

static void load_key(struct ctx *x, const config_setting_t *s, const struct cfg_key *k,
		     const char *path)
{
	int type = config_setting_type(s);

	switch (k->type) {
	case T_STRING:
		load_string(x, s, k, path);
		break;
	case T_INT:
	case T_SIZE:
	case T_DURATION:
		load_number(x, s, k, path);
		break;
	case T_BOOL:
		if (type != CONFIG_TYPE_BOOL)
			err_at(x, s, path, "expected true or false, got %s", type_name(type));
		else
			*(bool *)field_ptr(x->cfg, k) = config_setting_get_bool(s);
		break;
	case T_ENUM: {
		const char *v;
		struct buf allowed;

		if (type != CONFIG_TYPE_STRING) {
			err_at(x, s, path, "expected a string, got %s", type_name(type));
			break;
		}
		v = config_setting_get_string(s);
		for (const struct cfg_choice *c = k->choices; c->name; c++)
			if (strcmp(c->name, v) == 0) {
				*(int *)field_ptr(x->cfg, k) = c->value;
				return;
			}
		buf_init(&allowed, 1024);
		for (const struct cfg_choice *c = k->choices; c->name; c++)
			buf_printf(&allowed, "%s%s", c == k->choices ? "" : ", ", c->name);
		err_at(x, s, path, "\"%s\" is not one of: %s", v, allowed.data ? allowed.data : "");
		buf_done(&allowed);
		break;
	}
	case T_GROUP:
		if (type != CONFIG_TYPE_GROUP)
			err_at(x, s, path, "expected a group { ... }, got %s", type_name(type));
		else
			*(const config_setting_t **)field_ptr(x->cfg, k) = s;
		break;
	case T_SECTION:
		if (type != CONFIG_TYPE_GROUP)
			err_at(x, s, path, "expected a group { ... }, got %s", type_name(type));
		else
			load_group(x, s, k->section, path);
		break;
	}
}

/* Required keys of a section that is absent altogether. */
static void missing_in_absent(struct ctx *x, const struct cfg_section *sec, const char *secpath)
{
	char path[160];

	for (const struct cfg_key *k = sec->keys; k->name; k++) {
		key_path(path, sizeof(path), secpath, k->name);
		if (k->flags & F_REQUIRED)
			err_at(x, NULL, path, "required key is missing");
		else if (k->type == T_SECTION)
			missing_in_absent(x, k->section, path);
	}
}

static void load_group(struct ctx *x, const config_setting_t *g, const struct cfg_section *sec,
		       const char *secpath)
{
	int n = config_setting_length(g);
	char path[160];

	/* In file order, so errors come out in file order. */
	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(s);
		const struct cfg_key *k;

		for (k = sec->keys; name && k->name; k++)
			if (strcmp(k->name, name) == 0)
				break;
		if (!name || !k->name) {
			unknown_key(x, s, sec, secpath);
			continue;
		}
		key_path(path, sizeof(path), secpath, k->name);
		load_key(x, s, k, path);
	}
	for (const struct cfg_key *k = sec->keys; k->name; k++) {
		if (config_setting_get_member(g, k->name))
			continue;
		key_path(path, sizeof(path), secpath, k->name);
		if (k->flags & F_REQUIRED)
			err_at(x, config_setting_is_root(g) ? NULL : g, path, "required key is missing");
		else if (k->type == T_SECTION)
			missing_in_absent(x, k->section, path);
	}
}

/* ---------------------------------------------------------------- cross-field */

static int64_t effective_renew_ms(const struct kl_config *c)
{
	return c->lease.renew_interval_ms ? c->lease.renew_interval_ms : c->lease.failover_ms / 3;
}

static int64_t effective_take_ms(const struct kl_config *c)
{
	return c->lease.take_interval_ms ? c->lease.take_interval_ms : 2 * c->lease.failover_ms;
}

/* The literal text before the first "!{" of a template. */
static size_t literal_head(const char *t)
{
	const char *p = strstr(t, "!{");

	return p ? (size_t)(p - t) : strlen(t);
}

static void cross_checks(struct ctx *x)
{
	struct kl_config *c = x->cfg;
	char a[40], b[40];

	/* Aggregates: dimensions go with a table. */
	if (*c->aggregates.table && !*c->aggregates.dimensions &&
	    !(c->doc && config_lookup(c->doc, "aggregates.dimensions")))  /* else reported above */
		err_key(x, "aggregates.dimensions", "is needed when aggregates.table is set");
	if (!*c->aggregates.table && *c->aggregates.dimensions)
		err_key(x, "aggregates.dimensions", "is set but aggregates.table is empty (aggregates are off)");
	if (*c->aggregates.table && strcmp(c->aggregates.table, c->application) == 0)
		err_key(x, "aggregates.table", "is the lease table (application); use a table of its own");

	/* Where to start. */
	if (c->initial_position == CFG_INITIAL_AT_TIMESTAMP && !*c->initial_timestamp)
		err_key(x, "initial_position", "AT_TIMESTAMP needs initial_timestamp");
	if (c->initial_position != CFG_INITIAL_AT_TIMESTAMP && *c->initial_timestamp)
		err_key(x, "initial_timestamp", "is set but initial_position is %s, not AT_TIMESTAMP",
			cfg_initial_position_name(c->initial_position));
	if (*c->initial_timestamp) {
		const char *reason;

		if (parse_timestamp(c->initial_timestamp, &c->initial_timestamp_ms, &reason) &&
		    c->initial_timestamp_ms > kl_wall_ms())
			err_key(x, "initial_timestamp", "\"%s\" is in the future", c->initial_timestamp);
	}
	if (strncmp(c->stream, "arn:", 4) == 0) {
		char region[64];

		if (parse_stream_arn(c->stream, region, sizeof(region)) && strcmp(region, c->region) != 0)
			err_key(x, key_is_set(x, "region") ? "region" : "stream",
				"the stream ARN is in %s but region is %s%s", region, c->region,
				key_is_set(x, "region") ? "" : " (the default): set region");
	}

	/* Leases. */
	if (effective_renew_ms(c) * 2 > c->lease.failover_ms)
		err_key(x, "lease.renew_interval_ms",
			"%" PRId64 " is more than half of lease.failover_ms (%" PRId64 "): "
			"one slow renew would lose every lease", effective_renew_ms(c), c->lease.failover_ms);

	/* Output. */
#ifndef HAVE_ZSTD
	if (c->s3.compression == CFG_COMPRESSION_ZSTD)
		err_key(x, "s3.compression", "\"zstd\" is not available: kinlake was built without libzstd");
#endif
	if (c->s3.zstd_window_log && c->s3.zstd_window_log < 10)
		err_key(x, "s3.zstd_window_log", "%" PRId64 " is not 0 or in 10..27", c->s3.zstd_window_log);
	if (c->s3.part_size > c->s3.multipart_threshold) {
		fmt_size(a, sizeof(a), c->s3.part_size);
		fmt_size(b, sizeof(b), c->s3.multipart_threshold);
		err_key(x, "s3.part_size", "%s is larger than s3.multipart_threshold (%s)", a, b);
	}
	if (strcmp(c->s3.prefix, c->s3.error_prefix) == 0) {
		err_key(x, "s3.error_prefix", "equals s3.prefix: error objects would mix with data objects");
	} else {
		size_t head = literal_head(c->s3.prefix);

		if (head && strncmp(c->s3.error_prefix, c->s3.prefix, head) == 0)
			err_key(x, "s3.error_prefix", "lies under s3.prefix \"%.*s\": tables over the data "
				"would read error records", (int)head, c->s3.prefix);
	}
	if (c->s3.virtual_host && strchr(c->s3.bucket, '.'))
		err_key(x, "s3.virtual_host", "cannot be used with a bucket name containing '.' "
			"(the TLS certificate would not match)");

	/* Credentials. */
	if (!*c->credentials.access_key_id != !*c->credentials.secret_access_key)
		err_key(x, *c->credentials.access_key_id ? "credentials.access_key_id" :
			"credentials.secret_access_key",
			"access_key_id and secret_access_key must be set together");
	if (*c->credentials.session_token && !*c->credentials.access_key_id)
		err_key(x, "credentials.session_token", "is set without access_key_id");
	if (*c->credentials.profile && *c->credentials.access_key_id)
		err_key(x, "credentials.profile", "is set together with explicit keys, which would win; "
			"use one or the other");
	if (c->credentials.allow_imdsv1 && c->credentials.disable_imds)
		err_key(x, "credentials.allow_imdsv1", "contradicts credentials.disable_imds");

	/* HTTP and retries. */
	if (c->http.connect_timeout_ms > c->http.timeout_ms)
		err_key(x, "http.connect_timeout_ms", "%" PRId64 " is larger than http.timeout_ms (%" PRId64 ")",
			c->http.connect_timeout_ms, c->http.timeout_ms);
	if (c->retry.base_delay_ms > c->retry.max_delay_ms)
		err_key(x, "retry.base_delay_ms", "%" PRId64 " is larger than retry.max_delay_ms (%" PRId64 ")",
			c->retry.base_delay_ms, c->retry.max_delay_ms);
	if (c->retry.throttle_base_delay_ms > c->retry.max_delay_ms)
		err_key(x, "retry.throttle_base_delay_ms",
			"%" PRId64 " is larger than retry.max_delay_ms (%" PRId64 ")",
			c->retry.throttle_base_delay_ms, c->retry.max_delay_ms);

	/* Status thresholds that would fire in normal operation. */
	if (c->status.lag_warn_ms <= c->s3.buffer_seconds * 1000)
		err_key(x, "status.lag_warn_ms", "%" PRId64 " is not above s3.buffer_seconds (%" PRId64
			" s): status would warn while batches fill normally",
			c->status.lag_warn_ms, c->s3.buffer_seconds);
	if (c->status.lag_crit_ms <= c->status.lag_warn_ms)
		err_key(x, "status.lag_crit_ms", "%" PRId64 " is not above status.lag_warn_ms (%" PRId64 ")",
			c->status.lag_crit_ms, c->status.lag_warn_ms);
	if (c->status.unowned_crit_ms < c->lease.failover_ms + effective_take_ms(c))
		err_key(x, "status.unowned_crit_ms", "%" PRId64 " is below lease.failover_ms + "
			"lease.take_interval_ms (%" PRId64 "): status would be critical during a normal failover",
			c->status.unowned_crit_ms, c->lease.failover_ms + effective_take_ms(c));
}

/* ---------------------------------------------------------------- derived values */

static void resolve(struct ctx *x)
{
	struct kl_config *c = x->cfg;

	c->lease.renew_interval_ms = effective_renew_ms(c);
	c->lease.take_interval_ms = effective_take_ms(c);
	/* A shard thread spends its time waiting on the network, so the
	 * cap is about leases, not cores. */
	if (!c->consumer.threads)
		c->consumer.threads = 256;
	if (!*c->worker_id) {
		char host[257];

		/* The host name survives restarts, so a restarted worker renews
		 * (keeps) the leases it held, as KCL does with a stable id. */
		memset(host, 0, sizeof(host));
		if (gethostname(host, sizeof(host) - 1) != 0 || !host[0] || check_worker_id(host)) {
			err_key(x, "worker_id", "is empty and the host name cannot be used: set it");
			return;
		}
		free(c->worker_id);
		c->worker_id = strdup(host);
		if (!c->worker_id)
			x->nomem = true;
	}
}

/* ---------------------------------------------------------------- defaults, free */

static bool apply_defaults(struct kl_config *c, const struct cfg_section *sec)
{
	bool ok = true;

	for (const struct cfg_key *k = sec->keys; k->name; k++) {
		void *p = field_ptr(c, k);

		switch (k->type) {
		case T_STRING:
			*(char **)p = strdup(k->def_str ? k->def_str : "");
			ok = ok && *(char **)p;
			break;
		case T_INT:
		case T_SIZE:
		case T_DURATION:
			*(int64_t *)p = k->def_num;
			break;
		case T_BOOL:
			*(bool *)p = k->def_num != 0;
			break;
		case T_ENUM:
			*(int *)p = (int)k->def_num;
			break;
		case T_GROUP:
			*(const config_setting_t **)p = NULL;
			break;
		case T_SECTION:
			ok = apply_defaults(c, k->section) && ok;
			break;
		}
	}
	return ok;
}

static void free_strings(struct kl_config *c, const struct cfg_section *sec)
{
	for (const struct cfg_key *k = sec->keys; k->name; k++) {
		if (k->type == T_SECTION) {
			free_strings(c, k->section);
		} else if (k->type == T_STRING) {
			char **p = field_ptr(c, k);

			if (k->flags & F_SECRET)
				kl_free_secret(*p);
			else
				free(*p);
			*p = NULL;
		}
	}
}

/*
 * Wipes every string under the credentials group of the parsed document,
 * misspelled keys included (loaded secrets were wiped already).
 */
static void wipe_doc_credentials(config_t *doc)
{
	const config_setting_t *g = config_lookup(doc, "credentials");
	int n = g && config_setting_is_group(g) ? config_setting_length(g) : 0;

	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);

		if (config_setting_type(s) == CONFIG_TYPE_STRING) {
			char *v = (char *)config_setting_get_string(s);

			kl_wipe(v, strlen(v));
		}
	}
}

void cfg_free(struct kl_config *cfg)
{
	if (!cfg)
		return;
	free_strings(cfg, &root_section);
	free(cfg->path);
	if (cfg->doc) {
		wipe_doc_credentials(cfg->doc);
		config_destroy(cfg->doc);
		free(cfg->doc);
	}
	free(cfg);
}

enum kl_err cfg_defaults(struct kl_config **ret_cfg)
{
	struct kl_config *c = calloc(1, sizeof(*c));

	if (!c)
		return KL_ENOMEM;
	c->path = strdup("");
	if (!apply_defaults(c, &root_section) || !c->path) {
		cfg_free(c);
		return KL_ENOMEM;
	}
	*ret_cfg = c;
	return KL_OK;
}

/* ---------------------------------------------------------------- cfg_load */

enum kl_err cfg_load(const char *path, struct kl_config **ret_cfg, struct cfg_errors *errors)
{
	struct ctx x;
	struct kl_config *c;
	size_t errors_before = errors->count;
	enum kl_err err = KL_OK;
	char *dir, *slash;

	memset(&x, 0, sizeof(x));
	x.errors = errors;
	x.path = path;
	if (cfg_defaults(&c) != KL_OK)
		return KL_ENOMEM;
	x.cfg = c;
	free(c->path);
	c->path = strdup(path);
	c->doc = malloc(sizeof(*c->doc));
	dir = strdup(path);
	if (!c->path || !c->doc || !dir) {
		free(dir);
		free(c->doc);
		c->doc = NULL;
		cfg_free(c);
		return KL_ENOMEM;
	}
	config_init(c->doc);
	slash = strrchr(dir, '/');
	if (slash) {
		*(slash == dir ? slash + 1 : slash) = '\0';
		config_set_include_dir(c->doc, dir);
	}
	free(dir);

	errno = 0;
	if (!config_read_file(c->doc, path)) {
		if (config_error_type(c->doc) == CONFIG_ERR_FILE_IO) {
			int e = errno;

			err_at(&x, NULL, NULL, "cannot read the file%s%s", e ? ": " : "",
			       e ? strerror(e) : "");
			err = KL_EIO;
		} else {
			unsigned line = (unsigned)config_error_line(c->doc);
			const char *file = config_error_file(c->doc);

			errors->count++;
			if (errors->kept < CFG_ERRORS_MAX) {
				errors->kept++;
				buf_printf(&errors->text, "%s:%u: %s\n", file ? file : path, line,
					   config_error_text(c->doc) ? config_error_text(c->doc) :
					   "parse error");
			}
			err = KL_ECONFIG;
		}
		goto out;
	}
	load_group(&x, config_root_setting(c->doc), &root_section, "");
	cross_checks(&x);
	if (errors->count == errors_before)
		resolve(&x);
	if (errors->count != errors_before)
		err = KL_ECONFIG;
out:
	for (size_t i = 0; i < x.nsources; i++) {
		free(x.sources[i].file);
		if (x.sources[i].text)  /* the file's text may hold secrets */
			kl_wipe(x.sources[i].text, strlen(x.sources[i].text));
		free(x.sources[i].text);
	}
	if (x.nomem)
		err = KL_ENOMEM;
	if (err != KL_OK) {
		cfg_free(c);
		return err;
	}
	*ret_cfg = c;
	return KL_OK;
}

/* ====================================================================
 * Writing: values, --dump, the example config, the man page
 * ==================================================================== */

static void write_str_lit(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		switch (ch) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		case '\f': fputs("\\f", out); break;
		default:
			if (ch < 0x20 || ch == 0x7f)
				fprintf(out, "\\x%02x", ch);
			else
				fputc(ch, out);
		}
	}
	fputc('"', out);
}

/* libconfig 1.5 needs the L suffix beyond 32 bits (see literal_truncated). */
static void write_int_lit(FILE *out, int64_t v)
{
	fprintf(out, "%" PRId64 "%s", v, (v > INT32_MAX || v < INT32_MIN) ? "L" : "");
}

/* The value of k in c, in libconfig syntax; secrets as "<set>" or "". */
static void write_value(FILE *out, const struct cfg_key *k, const struct kl_config *c)
{
	const void *p = field_cptr(c, k);

	switch (k->type) {
	case T_STRING: {
		const char *s = *(char *const *)p;

		if (!s)
			s = "";
		write_str_lit(out, (k->flags & F_SECRET) && *s ? "<set>" : s);
		break;
	}
	case T_INT:
	case T_DURATION:
		write_int_lit(out, *(const int64_t *)p);
		break;
	case T_SIZE: {
		int64_t v = *(const int64_t *)p;
		char s[40];

		fmt_size(s, sizeof(s), v);
		if (isdigit((unsigned char)s[strlen(s) - 1]))
			write_int_lit(out, v);
		else
			write_str_lit(out, s);
		break;
	}
	case T_BOOL:
		fputs(*(const bool *)p ? "true" : "false", out);
		break;
	case T_ENUM:
		write_str_lit(out, choice_name(k->choices, *(const int *)p));
		break;
	case T_GROUP:
	case T_SECTION:
		break;
	}
}

static void indent(FILE *out, int depth)
{
	for (int i = 0; i < depth; i++)
		fputs("  ", out);
}

/* Plugin setting names whose values --dump hides. */
static bool looks_secret(const char *name)
{
	static const char *const words[] = {
		"secret", "password", "passwd", "token", "credential", "private", "apikey", "api_key",
	};
	char lower[128];
	size_t i;

	if (!name)
		return false;
	for (i = 0; name[i] && i < sizeof(lower) - 1; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	lower[i] = '\0';
	for (i = 0; i < KL_ARRAY_LEN(words); i++)
		if (strstr(lower, words[i]))
			return true;
	return false;
}

/* An opaque setting (plugin.settings and below), recursively. */
static void write_setting(FILE *out, const config_setting_t *s, int depth, bool redact)
{
	int type = config_setting_type(s), n;

	if (redact && config_setting_is_scalar(s)) {
		write_str_lit(out, "<set>");
		return;
	}
	switch (type) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		fprintf(out, "%lld%s", config_setting_get_int64(s), type == CONFIG_TYPE_INT64 ? "L" : "");
		break;
	case CONFIG_TYPE_FLOAT: {
		char num[64];

		double d = config_setting_get_float(s);

		/* The shortest form that reads back as the same double. */
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(num, sizeof(num), "%.*g", prec, d);
			if (strtod(num, NULL) == d)
				break;
		}
		if (!strpbrk(num, ".eEn"))
			strcat(num, ".0");
		fputs(num, out);
		break;
	}
	case CONFIG_TYPE_STRING:
		write_str_lit(out, config_setting_get_string(s));
		break;
	case CONFIG_TYPE_BOOL:
		fputs(config_setting_get_bool(s) ? "true" : "false", out);
		break;
	case CONFIG_TYPE_GROUP:
		n = config_setting_length(s);
		if (n == 0) {
			fputs("{ }", out);
			break;
		}
		fputs("{\n", out);
		for (int i = 0; i < n; i++) {
			const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

			indent(out, depth + 1);
			fprintf(out, "%s = ", config_setting_name(e));
			write_setting(out, e, depth + 1, redact || looks_secret(config_setting_name(e)));
			fputs(";\n", out);
		}
		indent(out, depth);
		fputc('}', out);
		break;
	case CONFIG_TYPE_ARRAY:
	case CONFIG_TYPE_LIST:
		n = config_setting_length(s);
		fputc(type == CONFIG_TYPE_ARRAY ? '[' : '(', out);
		for (int i = 0; i < n; i++) {
			if (i)
				fputs(", ", out);
			write_setting(out, config_setting_get_elem(s, (unsigned)i), depth, redact);
		}
		fputc(type == CONFIG_TYPE_ARRAY ? ']' : ')', out);
		break;
	}
}

static void dump_section(FILE *out, const struct kl_config *c, const struct cfg_section *sec,
			 int depth)
{
	for (const struct cfg_key *k = sec->keys; k->name; k++) {
		if (k->type == T_SECTION) {
			if (depth == 0)
				fputc('\n', out);
			indent(out, depth);
			fprintf(out, "%s = {\n", k->name);
			dump_section(out, c, k->section, depth + 1);
			indent(out, depth);
			fputs("};\n", out);
		} else if (k->type == T_GROUP) {
			const config_setting_t *g = *(const config_setting_t *const *)field_cptr(c, k);

			if (!g)
				continue;  /* absent: the plugin sees no settings */
			indent(out, depth);
			fprintf(out, "%s = ", k->name);
			write_setting(out, g, depth, false);
			fputs(";\n", out);
		} else {
			indent(out, depth);
			fprintf(out, "%s = ", k->name);
			write_value(out, k, c);
			fputs(";\n", out);
		}
	}
}

int cfg_dump(const struct kl_config *cfg, FILE *out)
{
	fprintf(out, "# Effective kinlake configuration%s%s (secrets shown as \"<set>\").\n",
		*cfg->path ? " of " : "", cfg->path);
	dump_section(out, cfg, &root_section, 0);
	return ferror(out) || fflush(out) ? -1 : 0;
}

/* ---------------------------------------------------------------- example */

/* "Range: 1..9.", "One of: none, gzip, zstd.", ... ("" when nothing to say). */
static void constraint_text(const struct cfg_key *k, char *out, size_t outsz)
{
	char lo[40], hi[40];
	size_t n = 0;

	out[0] = '\0';
	switch (k->type) {
	case T_INT:
	case T_SIZE:
	case T_DURATION:
		fmt_num(lo, sizeof(lo), k, k->min);
		fmt_num(hi, sizeof(hi), k, k->max);
		n = (size_t)snprintf(out, outsz, "%s%s%s..%s%s.",
				     k->type == T_SIZE ? "Size, range " :
				     k->type == T_DURATION ? "Duration, range " : "Range: ",
				     (k->flags & F_AUTO0) ? "0 or " : "", lo, hi,
				     k->type != T_DURATION ? "" : k->unit_ms == 1000 ? " s" : " ms");
		break;
	case T_ENUM:
		n = (size_t)snprintf(out, outsz, "One of:");
		for (const struct cfg_choice *c = k->choices; c->name && n < outsz; c++)
			n += (size_t)snprintf(out + n, outsz - n, " %s%s", c->name, c[1].name ? "," : ".");
		break;
	case T_STRING:
		if (k->flags & F_REQUIRED)
			snprintf(out, outsz, "Required.");
		else if (k->flags & F_SECRET)
			snprintf(out, outsz, "Secret: never printed.");
		break;
	case T_BOOL:
	case T_GROUP:
	case T_SECTION:
		break;
	}
}

/* Writes text as "# " comment lines of at most 78 columns. */
static void write_comment(FILE *out, int depth, const char *text)
{
	const int width = 78 - 2 * depth - 2;
	const char *p = text;

	while (*p) {
		int len = (int)strlen(p), cut = len;

		if (len > width) {
			for (cut = width; cut > 0 && p[cut] != ' '; cut--)
				;
			if (cut == 0)
				for (cut = width; p[cut] && p[cut] != ' '; cut++)
					;
		}
		indent(out, depth);
		fprintf(out, "# %.*s\n", cut, p);
		p += cut;
		while (*p == ' ')
			p++;
	}
}

static void example_section(FILE *out, const struct kl_config *defs, const struct cfg_section *sec,
			    int depth)
{
	char extra[256];

	for (const struct cfg_key *k = sec->keys; k->name; k++) {
		if (k != sec->keys || depth == 0)
			fputc('\n', out);
		if (k->type == T_SECTION) {
			write_comment(out, depth, k->section->desc);
			indent(out, depth);
			fprintf(out, "%s = {\n", k->name);
			example_section(out, defs, k->section, depth + 1);
			indent(out, depth);
			fputs("};\n", out);
			continue;
		}
		write_comment(out, depth, k->desc);
		constraint_text(k, extra, sizeof(extra));
		if (*extra)
			write_comment(out, depth, extra);
		indent(out, depth);
		if (k->flags & F_REQUIRED) {
			fprintf(out, "%s = ", k->name);
			write_str_lit(out, CFG_PLACEHOLDER);
		} else if (k->type == T_GROUP) {
			fprintf(out, "#%s = { };", k->name);
			fputc('\n', out);
			continue;
		} else {
			fprintf(out, "#%s = ", k->name);
			write_value(out, k, defs);
		}
		fputs(";\n", out);
	}
}

int cfg_write_example(FILE *out)
{
	static const char *const head[] = {
		"kinlake.conf: configuration of a kinlake worker (libconfig syntax).",
		"",
		"Every key is listed with what it does; a key you leave commented out",
		"keeps the default shown. The keys set to \"" CFG_PLACEHOLDER "\" are required:",
		"kinlake refuses to start, and `kinlake check-config` fails, until you",
		"have set them. Unknown keys, wrong types and out-of-range values are",
		"errors (with file and line), never silently ignored.",
		"",
		"Sizes: integer bytes, or a string with a binary unit: \"512KiB\", \"64MiB\",",
		"\"5GiB\" (B, KiB, MiB, GiB, TiB). Durations: an integer in the unit the",
		"key name ends with (_ms: milliseconds, _seconds: seconds), or a string",
		"with a unit: \"250ms\", \"10s\", \"5min\", \"2h\", \"1d\". Integers beyond",
		"2147483647 need an L suffix (5368709120L).",
		"",
		"Check a file: kinlake check-config -c /etc/kinlake/kinlake.conf",
		"Show the effective values: kinlake check-config --dump",
		"Generated from kinlake's option tables; see kinlake.conf(5).",
	};
	struct kl_config *defs;

	if (cfg_defaults(&defs) != KL_OK)
		return -1;
	for (size_t i = 0; i < KL_ARRAY_LEN(head); i++)
		fprintf(out, "#%s%s\n", *head[i] ? " " : "", head[i]);
	example_section(out, defs, &root_section, 0);
	cfg_free(defs);
	return ferror(out) || fflush(out) ? -1 : 0;
}

/* ---------------------------------------------------------------- man page */

/* Text for roff: backslashes and hyphens escaped, no leading '.' or '\''. */
static void roff_text(FILE *out, const char *s)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", out);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", out);
		else if (*s == '-')
			fputs("\\-", out);
		else if (*s == '\n')
			fputs("\\en", out);
		else
			fputc(*s, out);
	}
}

static const char *key_type_name(const struct cfg_key *k)
{
	switch (k->type) {
	case T_STRING: return "string";
	case T_INT: return "integer";
	case T_BOOL: return "boolean";
	case T_ENUM: return "string";
	case T_SIZE: return "size";
	case T_DURATION: return "duration";
	case T_GROUP: return "group";
	case T_SECTION: return "section";
	}
	return "?";
}

static void man_keys(FILE *out, const struct kl_config *defs, const struct cfg_section *sec,
		     const char *secpath)
{
	char path[160], extra[256];

	for (const struct cfg_key *k = sec->keys; k->name; k++) {
		if (k->type == T_SECTION)
			continue;
		key_path(path, sizeof(path), secpath, k->name);
		fputs(".TP\n.B ", out);
		roff_text(out, path);
		fprintf(out, "\n(%s", key_type_name(k));
		if (k->flags & F_REQUIRED) {
			fputs(", required", out);
		} else if (k->type != T_GROUP) {
			char *buf = NULL;
			size_t len = 0;
			FILE *mem = open_memstream(&buf, &len);

			if (mem) {
				write_value(mem, k, defs);
				fclose(mem);
				fputs(", default ", out);
				roff_text(out, buf ? buf : "");
				free(buf);
			}
		}
		fputs(")\n.br\n", out);
		roff_text(out, k->desc);
		fputc('\n', out);
		constraint_text(k, extra, sizeof(extra));
		if (*extra && !(k->flags & F_REQUIRED)) {
			roff_text(out, extra);
			fputc('\n', out);
		}
	}
}

int cfg_write_man(FILE *out)
{
	struct kl_config *defs;

	if (cfg_defaults(&defs) != KL_OK)
		return -1;
	fputs(".\\\" SPDX-License-Identifier: Apache-2.0\n"
	      ".\\\" Generated from the option tables in src/cli/cfg.c by\n"
	      ".\\\" tools/gen-example-config --man; do not edit.\n"
	      ".TH KINLAKE.CONF 5 \"\" \"kinlake\" \"File Formats Manual\"\n"
	      ".SH NAME\n"
	      "kinlake.conf \\- configuration file of the kinlake worker\n"
	      ".SH SYNOPSIS\n"
	      ".I /etc/kinlake/kinlake.conf\n"
	      ".SH DESCRIPTION\n"
	      "One file in libconfig syntax configures a kinlake worker:\n"
	      ".B key = value;\n"
	      "at the top level, and\n"
	      ".B section = { key = value; };\n"
	      "for the sections below.\n"
	      "Strings are double-quoted, booleans are\n"
	      ".B true\n"
	      "or\n"
	      ".BR false ,\n"
	      "comments start with #, and\n"
	      ".B @include \\(dqfile\\(dq\n"
	      "reads another file relative to this one's directory.\n"
	      ".PP\n"
	      "Every key has a type, a default and bounds.\n"
	      "An unknown key (at any level), a value of the wrong type or out of range,\n"
	      "and a broken rule between keys are errors that name the file and line;\n"
	      "all of them are reported, not only the first.\n"
	      "The required keys hold the placeholder\n"
	      ".B \\(dq" CFG_PLACEHOLDER "\\(dq\n"
	      "in the packaged example, and a file that still does is refused.\n"
	      ".SS Sizes\n"
	      "An integer number of bytes, or a string with a binary unit:\n"
	      ".BR \"512KiB\" ,\n"
	      ".BR \"64MiB\" ,\n"
	      ".B \"5GiB\"\n"
	      "(B, KiB, MiB, GiB, TiB; MB and the like are refused as ambiguous).\n"
	      ".SS Durations\n"
	      "An integer in the unit the key name ends with (\\fI_ms\\fR: milliseconds,\n"
	      "\\fI_seconds\\fR: seconds), or a string with a unit:\n"
	      ".BR \"250ms\" ,\n"
	      ".BR \"10s\" ,\n"
	      ".BR \"5min\" ,\n"
	      ".BR \"2h\" ,\n"
	      ".BR \"1d\" .\n"
	      ".SS Large integers\n"
	      "libconfig keeps integers without an\n"
	      ".B L\n"
	      "suffix in 32 bits; kinlake refuses such a literal beyond 2147483647\n"
	      "instead of reading a wrapped value.\n"
	      "Write 5368709120L, or a size with a unit.\n"
	      ".SS Checking\n"
	      ".B kinlake check-config\n"
	      "[\\fB\\-c\\fR \\fIFILE\\fR | \\fIFILE\\fR] [\\fB\\-\\-dump\\fR]\n"
	      "prints\n"
	      ".B ok\n"
	      "and exits 0, or prints every error and exits 78 (EX_CONFIG).\n"
	      "With\n"
	      ".B \\-\\-dump\n"
	      "it prints the effective configuration instead (derived values resolved,\n"
	      "secrets shown as \"<set>\").\n", out);
	fputs(".SH TOP-LEVEL KEYS\n", out);
	man_keys(out, defs, &root_section, "");
	for (const struct cfg_key *k = root_keys; k->name; k++) {
		if (k->type != T_SECTION)
			continue;
		fputs(".SH SECTION ", out);
		roff_text(out, k->name);
		fputc('\n', out);
		roff_text(out, k->section->desc);
		fputc('\n', out);
		man_keys(out, defs, k->section, k->name);
	}
	fputs(".SH FILES\n"
	      ".TP\n"
	      ".I /etc/kinlake/kinlake.conf\n"
	      "The configuration read by\n"
	      ".BR \"kinlake run\" .\n"
	      ".TP\n"
	      ".I /usr/share/doc/kinlake/kinlake.conf.example\n"
	      "Every key with its default, generated from the same tables as this page.\n"
	      ".SH SEE ALSO\n"
	      ".BR kinlake (8)\n", out);
	cfg_free(defs);
	return ferror(out) || fflush(out) ? -1 : 0;
}

/* ====================================================================
 * Derived option structs
 * ==================================================================== */

static const char *or_null(const char *s)
{
	return s && *s ? s : NULL;
}

void cfg_http_opts(const struct kl_config *cfg, struct http_opts *ret_opts)
{
	memset(ret_opts, 0, sizeof(*ret_opts));
	ret_opts->connect_timeout_ms = (long)cfg->http.connect_timeout_ms;
	ret_opts->timeout_ms = (long)cfg->http.timeout_ms;
	ret_opts->ca_file = or_null(cfg->tls.ca_file);
}

void cfg_creds_config(const struct kl_config *cfg, struct creds_config *ret_creds)
{
	memset(ret_creds, 0, sizeof(*ret_creds));
	ret_creds->access_key_id = or_null(cfg->credentials.access_key_id);
	ret_creds->secret_access_key = or_null(cfg->credentials.secret_access_key);
	ret_creds->session_token = or_null(cfg->credentials.session_token);
	ret_creds->profile = or_null(cfg->credentials.profile);
	ret_creds->sts_endpoint = or_null(cfg->endpoints.sts);
	ret_creds->imds_endpoint = or_null(cfg->endpoints.imds);
	ret_creds->ecs_endpoint = or_null(cfg->endpoints.ecs);
	ret_creds->region = or_null(cfg->region);
	ret_creds->allow_imdsv1 = cfg->credentials.allow_imdsv1;
	ret_creds->disable_imds = cfg->credentials.disable_imds;
	ret_creds->ca_file = or_null(cfg->tls.ca_file);
}

void cfg_aws_client_config(const struct kl_config *cfg, enum cfg_service service,
			   struct aws_client_config *ret_client)
{
	memset(ret_client, 0, sizeof(*ret_client));
	switch (service) {
	case CFG_SERVICE_KINESIS:
		ret_client->service = "kinesis";
		ret_client->endpoint = or_null(cfg->endpoints.kinesis);
		break;
	case CFG_SERVICE_DYNAMODB:
		ret_client->service = "dynamodb";
		ret_client->endpoint = or_null(cfg->endpoints.dynamodb);
		break;
	case CFG_SERVICE_S3:
		ret_client->service = "s3";
		ret_client->endpoint = or_null(cfg->endpoints.s3);
		ret_client->s3_virtual_host = cfg->s3.virtual_host;
		break;
	case CFG_SERVICE_STS:
		ret_client->service = "sts";
		ret_client->endpoint = or_null(cfg->endpoints.sts);
		break;
	}
	ret_client->region = cfg->region;
	cfg_http_opts(cfg, &ret_client->http);
	ret_client->retry.max_attempts = (int)cfg->retry.max_attempts;
	ret_client->retry.base_delay_ms = (long)cfg->retry.base_delay_ms;
	ret_client->retry.max_delay_ms = (long)cfg->retry.max_delay_ms;
	ret_client->retry.throttle_base_delay_ms = (long)cfg->retry.throttle_base_delay_ms;
}

void cfg_lease_coord_config(const struct kl_config *cfg, struct lease_coord_config *ret_lease)
{
	memset(ret_lease, 0, sizeof(*ret_lease));
	ret_lease->worker_id = cfg->worker_id;
	ret_lease->failover_ms = cfg->lease.failover_ms;
	ret_lease->renew_interval_ms = cfg->lease.renew_interval_ms;
	ret_lease->take_interval_ms = cfg->lease.take_interval_ms;
	ret_lease->sync_interval_ms = cfg->lease.shard_sync_interval_ms;
	ret_lease->max_leases = (uint32_t)cfg->lease.max_leases;
	ret_lease->max_steal = (uint32_t)cfg->lease.max_steal;
	ret_lease->no_heartbeat = !cfg->lease.heartbeat;
	ret_lease->no_cleanup = !cfg->lease.cleanup;
	switch (cfg->initial_position) {
	case CFG_INITIAL_TRIM_HORIZON:
		ret_lease->initial_position = LEASE_INITIAL_TRIM_HORIZON;
		break;
	case CFG_INITIAL_LATEST:
		ret_lease->initial_position = LEASE_INITIAL_LATEST;
		break;
	case CFG_INITIAL_AT_TIMESTAMP:
		ret_lease->initial_position = LEASE_INITIAL_AT_TIMESTAMP;
		break;
	}
	ret_lease->initial_timestamp_ms = cfg->initial_timestamp_ms;
}

void cfg_spool_opts(const struct kl_config *cfg, struct spool_opts *ret_spool)
{
	memset(ret_spool, 0, sizeof(*ret_spool));
	switch (cfg->s3.compression) {
	case CFG_COMPRESSION_NONE:
		ret_spool->codec = SPOOL_CODEC_NONE;
		break;
	case CFG_COMPRESSION_GZIP:
		ret_spool->codec = SPOOL_CODEC_GZIP;
		ret_spool->level = (int)cfg->s3.gzip_level;
		break;
	case CFG_COMPRESSION_ZSTD:
		ret_spool->codec = SPOOL_CODEC_ZSTD;
		ret_spool->level = (int)cfg->s3.zstd_level;
		ret_spool->window_log = (int)cfg->s3.zstd_window_log;
		break;
	}
	ret_spool->delim = cfg->s3.delimiter;
	ret_spool->delim_len = strlen(cfg->s3.delimiter);
}

/* ====================================================================
 * kinlake check-config
 * ==================================================================== */

static int check_usage(void)
{
	fprintf(stderr, "usage: kinlake check-config [--dump] [-c FILE | FILE]\n"
		"  checks FILE (default %s); prints \"ok\" and exits 0,\n"
		"  or prints every error and exits %d; --dump prints the effective\n"
		"  configuration (secrets as \"<set>\")\n", CFG_DEFAULT_PATH, CFG_EXIT_CONFIG);
	return CFG_EXIT_USAGE;
}

int cfg_check_main(int argc, char **argv)
{
	const char *path = NULL;
	bool dump = false;
	struct cfg_errors errors;
	struct kl_config *cfg = NULL;
	enum kl_err err;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--dump") == 0) {
			dump = true;
		} else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (path || i + 1 >= argc)
				return check_usage();
			path = argv[++i];
		} else if (strncmp(a, "--config=", 9) == 0) {
			if (path)
				return check_usage();
			path = a + 9;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			check_usage();
			return CFG_EXIT_OK;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kinlake check-config: unknown option '%s'\n", a);
			return check_usage();
		} else {
			if (path)
				return check_usage();
			path = a;
		}
	}
	if (!path)
		path = CFG_DEFAULT_PATH;
	cfg_errors_init(&errors);
	err = cfg_load(path, &cfg, &errors);
	if (err != KL_OK) {
		cfg_errors_print(&errors, stderr);
		if (err == KL_ENOMEM)
			fprintf(stderr, "kinlake check-config: %s\n", kl_strerror(err));
		else
			fprintf(stderr, "%s: %zu error%s\n", path, errors.count,
				errors.count == 1 ? "" : "s");
		cfg_errors_done(&errors);
		return CFG_EXIT_CONFIG;
	}
	cfg_errors_done(&errors);
	if (dump ? cfg_dump(cfg, stdout) != 0 : (puts("ok") < 0 || fflush(stdout) != 0)) {
		cfg_free(cfg);
		return 74; /* EX_IOERR */
	}
	cfg_free(cfg);
	return CFG_EXIT_OK;
}
