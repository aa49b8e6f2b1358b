/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cfg.h: the kinlake configuration. One libconfig file is read through one
 * table per section (key, type, default, bounds, offset into struct
 * kl_config, one-line description); the same tables produce the defaults,
 * every check-config error (file:line, all of them, not only the first),
 * `check-config --dump`, packaging/kinlake.conf.example and kinlake.conf(5),
 * so none of them can drift from the code.
 *
 * Invariants: a struct kl_config returned by cfg_load() passed every type,
 * range and cross-field check, and its derived values (worker_id, lease
 * intervals, consumer threads, initial_timestamp_ms) are resolved; string
 * fields are never NULL ("" means unset); secrets are wiped before they are
 * freed and are never printed (dump shows "<set>").
 *
 * Units: a size key (type "size") takes an integer number of bytes or a
 * string with a binary unit: "512KiB", "64MiB", "5GiB" (B, KiB, MiB, GiB,
 * TiB; "MB" and friends are refused as ambiguous). A duration key takes an
 * integer in the unit its name ends with (_ms: milliseconds, _seconds:
 * seconds) or a string with a unit: "250ms", "10s", "5min", "2h", "1d".
 */
#ifndef KL_CFG_H
#define KL_CFG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <libconfig.h>

#include "aws.h"
#include "buf.h"
#include "creds.h"
#include "http.h"
#include "kl_err.h"
#include "lease_coord.h"
#include "log.h"
#include "spool.h"

/* What the example config puts in required keys; a file that still holds it
 * is "unchanged from the example" and is refused (packaging relies on it). */
#define CFG_PLACEHOLDER "CHANGE-ME"

/* Exit codes of cfg_check_main() (sysexits.h values). */
#define CFG_EXIT_OK 0
#define CFG_EXIT_USAGE 64
#define CFG_EXIT_CONFIG 78

/* At most this many error lines are kept; the rest are only counted. */
#define CFG_ERRORS_MAX 100

enum cfg_initial_position {
	CFG_INITIAL_TRIM_HORIZON = 0,
	CFG_INITIAL_LATEST,
	CFG_INITIAL_AT_TIMESTAMP,
};

enum cfg_compression {
	CFG_COMPRESSION_NONE = 0,
	CFG_COMPRESSION_GZIP,
	CFG_COMPRESSION_ZSTD,
};

/* Only classes Athena can read without a restore. */
enum cfg_storage_class {
	CFG_STORAGE_STANDARD = 0,
	CFG_STORAGE_STANDARD_IA,
	CFG_STORAGE_ONEZONE_IA,
	CFG_STORAGE_INTELLIGENT_TIERING,
	CFG_STORAGE_GLACIER_IR,
};

enum cfg_service {
	CFG_SERVICE_KINESIS = 0,
	CFG_SERVICE_DYNAMODB,
	CFG_SERVICE_S3,
	CFG_SERVICE_STS,
};

/*
 * The configuration. Every numeric field is int64_t (sizes in bytes,
 * durations in the unit of the key's suffix); descriptions, defaults and
 * bounds are in the tables in cfg.c (and in kinlake.conf(5)). Owned by
 * whoever got it from cfg_load()/cfg_defaults(); free with cfg_free().
 * Read-only after loading, so any number of threads may read it.
 */
struct cfg_lease {
	int64_t failover_ms;
	int64_t renew_interval_ms;      /* resolved: 0 in the file = failover_ms / 3 */
	int64_t take_interval_ms;       /* resolved: 0 in the file = 2 * failover_ms */
	int64_t max_leases;             /* 0 = unlimited */
	int64_t max_steal;
	int64_t shard_sync_interval_ms;
	bool heartbeat;
	bool release_on_shutdown;
	bool cleanup;
};

struct cfg_consumer {
	int64_t threads;                /* resolved: 0 in the file = online CPUs (>= 2) */
	int64_t get_records_limit;
	int64_t max_pages_in_memory;    /* worker-wide page budget (consumer_budget) */
	int64_t idle_ms;
	int64_t max_calls_per_sec;
};

struct cfg_plugin {
	char *name;                     /* a name ("identity") or an absolute path */
	char *search_path;              /* "" = the built-in plugin directory */
	int64_t max_output_bytes;
	const config_setting_t *settings; /* plugin.settings group, or NULL; points
					   * into the parsed document that
					   * struct kl_config owns */
};

struct cfg_s3 {
	char *bucket;
	char *prefix;
	char *error_prefix;
	enum cfg_compression compression;
	int64_t gzip_level;
	int64_t zstd_level;
	int64_t zstd_window_log;        /* 0 = the level's default */
	char *delimiter;
	int64_t buffer_bytes;
	int64_t buffer_records;         /* 0 = unlimited */
	int64_t buffer_seconds;
	int64_t multipart_threshold;
	int64_t part_size;
	int64_t upload_threads;
	enum cfg_storage_class storage_class;
	char *content_type;
	bool virtual_host;
};

struct cfg_credentials {
	char *access_key_id;            /* secret */
	char *secret_access_key;        /* secret */
	char *session_token;            /* secret */
	char *profile;
	bool allow_imdsv1;
	bool disable_imds;
};

struct cfg_endpoints {
	char *kinesis, *dynamodb, *s3, *sts, *imds, *ecs;   /* "" = AWS default */
};

struct cfg_tls {
	char *ca_file;
};

struct cfg_http {
	int64_t connect_timeout_ms;
	int64_t timeout_ms;
};

struct cfg_retry {
	int64_t max_attempts;
	int64_t base_delay_ms;
	int64_t throttle_base_delay_ms;
	int64_t max_delay_ms;
};

struct cfg_log {
	enum log_level level;
	char *file;                     /* "" = stderr (journald under systemd) */
};

struct cfg_metrics {
	char *file;                     /* "" = off */
	int64_t interval_ms;
};

struct cfg_status {
	int64_t lag_warn_ms;
	int64_t lag_crit_ms;
	int64_t unowned_crit_ms;
	int64_t intent_stuck_ms;
};

struct cfg_poison {
	int64_t max_crashes;
};

/* Per-window aggregates in DynamoDB (src/agg/agg.h); off while table is "". */
struct cfg_aggregates {
	char *table;                    /* "" = off */
	int64_t window_seconds;
	int64_t allowed_lateness_seconds;
	char *time_field;               /* "" = the Kinesis arrival time */
	char *dimensions;               /* "page, action, key:dt" */
	char *measures;                 /* "count, sum:price" */
	int64_t buckets;
	int64_t max_entries;
	int64_t flush_seconds;
	bool create_table;
};

struct kl_config {
	char *path;                     /* the file it was loaded from; "" for defaults */
	char *application;
	char *worker_id;                /* resolved: "" in the file = host name */
	char *stream;
	char *region;
	enum cfg_initial_position initial_position;
	char *initial_timestamp;
	int64_t initial_timestamp_ms;   /* derived from initial_timestamp; 0 if unset */
	char *state_dir;
	int64_t shutdown_grace_ms;
	struct cfg_lease lease;
	struct cfg_consumer consumer;
	struct cfg_plugin plugin;
	struct cfg_s3 s3;
	struct cfg_credentials credentials;
	struct cfg_endpoints endpoints;
	struct cfg_tls tls;
	struct cfg_http http;
	struct cfg_retry retry;
	struct cfg_log log;
	struct cfg_metrics metrics;
	struct cfg_status status;
	struct cfg_poison poison;
	struct cfg_aggregates aggregates;
	config_t *doc;                  /* owned: the parsed file (plugin.settings
					 * points into it); NULL for defaults */
};

/*
 * Errors found while loading: one line per error, "FILE:LINE: KEY: what"
 * (or "FILE: KEY: what" when there is no line), in file order, cross-field
 * errors last. Never contains a secret's value. Owned by the caller.
 */
struct cfg_errors {
	size_t count;                   /* errors found (may exceed kept) */
	size_t kept;                    /* lines in text (<= CFG_ERRORS_MAX) */
	struct buf text;
};

/* Sets up an empty error list. No allocation. */
void cfg_errors_init(struct cfg_errors *errors);
/* Frees the text. NULL-safe; the list can be reused after cfg_errors_init(). */
void cfg_errors_done(struct cfg_errors *errors);
/* Writes the kept lines, then "... and N more" when some were dropped. */
void cfg_errors_print(const struct cfg_errors *errors, FILE *out);

/*
 * Returns a new config holding the table defaults only (required keys are
 * "", derived values are not resolved, no host name lookup). For tests and
 * tools. Free with cfg_free(). KL_ENOMEM is the only failure.
 */
enum kl_err cfg_defaults(struct kl_config **ret_cfg);

/*
 * Reads path (libconfig syntax, @include relative to its directory), checks
 * every key against the tables and the cross-field rules, and resolves the
 * derived values. On KL_OK *ret_cfg is a new config (free with cfg_free()).
 * Otherwise *ret_cfg is untouched and errors (which must have been set up
 * with cfg_errors_init(); new lines are appended) says what is wrong:
 * KL_ECONFIG (parse, type, range, unknown key, cross-field, placeholder),
 * KL_EIO (cannot read the file), KL_ENOMEM. Thread-safe (no shared state),
 * but call it before starting threads: it may call gethostname().
 */
enum kl_err cfg_load(const char *path, struct kl_config **ret_cfg, struct cfg_errors *errors);

/* Wipes the secrets, frees everything, including the parsed document that
 * plugin.settings points into. NULL-safe. */
void cfg_free(struct kl_config *cfg);

/* True when value is the example's placeholder for a required key. */
bool cfg_is_placeholder(const char *value);

/*
 * Writes the effective configuration in libconfig syntax, every key of
 * every table, secrets (and plugin settings whose names look secret) shown
 * as "<set>". Loading the output again gives the same config (except for
 * secrets). Returns 0, or -1 when writing failed. Thread-safe for a given
 * out.
 */
int cfg_dump(const struct kl_config *cfg, FILE *out);

/*
 * Writes packaging/kinlake.conf.example: every key with its description,
 * bounds and default (commented out), required keys set to CFG_PLACEHOLDER.
 * Returns 0 or -1 on a write error.
 */
int cfg_write_example(FILE *out);

/* Writes kinlake.conf(5) in roff from the same tables. Returns 0 or -1. */
int cfg_write_man(FILE *out);

/*
 * Derived views for the modules that take their own option structs. Every
 * pointer written points into cfg (borrowed: valid while cfg lives); ""
 * becomes NULL where the target means "default" by NULL. Thread-safe.
 */
void cfg_http_opts(const struct kl_config *cfg, struct http_opts *ret_opts);
void cfg_creds_config(const struct kl_config *cfg, struct creds_config *ret_creds);
void cfg_aws_client_config(const struct kl_config *cfg, enum cfg_service service,
			   struct aws_client_config *ret_client);
void cfg_lease_coord_config(const struct kl_config *cfg, struct lease_coord_config *ret_lease);
void cfg_spool_opts(const struct kl_config *cfg, struct spool_opts *ret_spool);

/* Static names: "gzip", "STANDARD_IA", ... (as written in the file). */
const char *cfg_compression_name(enum cfg_compression c);
const char *cfg_storage_class_name(enum cfg_storage_class sc);
const char *cfg_initial_position_name(enum cfg_initial_position p);

/*
 * `kinlake check-config [-c FILE | FILE] [--dump]`. argv[0] is the word
 * "check-config" (main passes argc - 1, argv + 1). Without a file, reads
 * KL_SYSCONFDIR/kinlake/kinlake.conf. Prints "ok" (or, with --dump, the
 * effective configuration) on stdout and returns 0; or prints every error
 * on stderr and returns 78 (EX_CONFIG); 64 for bad usage. Call from the
 * main thread (uses stdout/stderr).
 */
int cfg_check_main(int argc, char **argv);

#endif
