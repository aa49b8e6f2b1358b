/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kinlake/transform.h: the transform plugin ABI, the one header kinlake
 * installs. A plugin is a shared object that exports one function,
 * kinlake_transform_plugin(), returning a constant descriptor. The host
 * hands the plugin a table of host functions (configuration getters,
 * logging, output helpers), Redis-module style, so a plugin links against
 * nothing of kinlake's.
 *
 * Per input record a plugin returns OK (with zero or more output records,
 * each with optional partition keys), DROPPED, or FAILED (with a reason):
 * the same contract as Firehose's Lambda transform (Ok / Dropped /
 * ProcessingFailed, metadata.partitionKeys), so Lambda logic ports 1:1.
 *
 * Evolution is append-only: within one ABI major, fields are only ever
 * added at the end of the structs below and the minor is bumped. The host
 * refuses a plugin whose major differs from its own or whose descriptor is
 * smaller than the 1.0 descriptor. A plugin built against a newer minor
 * than the host's must check host->abi_minor before it uses anything this
 * header marks "since 1.N".
 *
 * Threading: init and destroy are called from one thread. An instance is
 * used by one thread at a time (transform calls on one instance never
 * overlap) unless the descriptor sets KL_TRANSFORM_F_THREAD_SAFE, in which
 * case the host may call transform on one instance from several threads at
 * once. Host functions are thread-safe, but one struct kl_transform_output
 * belongs to one transform call and must not be used after it returns.
 *
 * Memory: whoever allocates frees. Everything the host hands over (record
 * views, strings, the output object) stays host-owned and is valid only
 * for the duration of the call that received it; everything the plugin
 * allocates (its instance) it frees in destroy. Data given to
 * host->emit() is copied.
 */
#ifndef KINLAKE_TRANSFORM_H
#define KINLAKE_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KL_TRANSFORM_ABI_MAJOR 1
#define KL_TRANSFORM_ABI_MINOR 0

/* The name of the entry symbol, for dlsym(). */
#define KL_TRANSFORM_ENTRY_SYMBOL "kinlake_transform_plugin"

#if defined(__GNUC__)
#define KL_TRANSFORM_EXPORT __attribute__((visibility("default")))
#define KL_TRANSFORM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define KL_TRANSFORM_EXPORT
#define KL_TRANSFORM_PRINTF(f, a)
#endif

/* The outcome of one input record (Firehose: Ok / Dropped / ProcessingFailed). */
enum kl_transform_result {
	KL_TRANSFORM_OK = 0,      /* zero or more outputs were emitted */
	KL_TRANSFORM_DROPPED = 1, /* deliberately filtered out (not an error) */
	KL_TRANSFORM_FAILED = 2,  /* goes to the error prefix with the reason */
};

/* Descriptor flags. */
#define KL_TRANSFORM_F_THREAD_SAFE ((uint64_t)1 << 0) /* see "Threading" above */

/* Levels for host->log(). */
enum kl_transform_log_level {
	KL_TRANSFORM_LOG_ERROR = 0,
	KL_TRANSFORM_LOG_WARN = 1,
	KL_TRANSFORM_LOG_INFO = 2,
	KL_TRANSFORM_LOG_DEBUG = 3,
};

/* Return values of the configuration getters. */
enum kl_transform_cfg {
	KL_TRANSFORM_CFG_SET = 0,     /* the setting exists; its value was stored */
	KL_TRANSFORM_CFG_DEFAULT = 1, /* the setting is absent; the default was stored */
	KL_TRANSFORM_CFG_BADTYPE = -1, /* wrong type: default stored, and the host
	                                 * fails the instance after init returns */
};

/*
 * One input record, as seen by transform(). Read-only and host-owned; valid
 * only during the transform() call. For a record that came out of a KPL
 * aggregate, data is the user record and sub_sequence_number its 0-based
 * index in the aggregate; otherwise sub_sequence_number is 0.
 */
struct kl_transform_record {
	const uint8_t *data;           /* may contain any bytes; not NUL-terminated */
	size_t len;
	const char *partition_key;     /* NUL-terminated; never NULL */
	const char *explicit_hash_key; /* decimal string, or NULL if none */
	const char *sequence_number;   /* decimal string; never NULL */
	uint64_t sub_sequence_number;
	const char *shard_id;          /* e.g. "shardId-000000000001"; never NULL */
	int64_t approximate_arrival_ms; /* ms since the Unix epoch, from Kinesis */
};

/* Opaque host objects. */
struct kl_transform_handle;  /* the host's side of one plugin instance */
struct kl_transform_output;  /* the outputs of one transform() call */

/*
 * The host function table, passed to init(). It outlives every instance,
 * so a plugin may keep the pointer. All functions are thread-safe in the
 * sense given at the top of this file.
 */
struct kl_transform_host {
	uint32_t abi_major;  /* the host's KL_TRANSFORM_ABI_MAJOR */
	uint32_t abi_minor;  /* the host's KL_TRANSFORM_ABI_MINOR */
	size_t struct_size;  /* sizeof(struct kl_transform_host) in the host */

	/*
	 * Configuration: the plugin's own settings (a libconfig group in the
	 * daemon's config file). Callable during init() only. A plugin must
	 * read every setting it supports during init(), even ones it ends up
	 * not using: the host rejects settings that were never asked for as
	 * unknown keys. Strings handed out stay valid until init() returns;
	 * copy what you keep. On KL_TRANSFORM_CFG_BADTYPE the default is
	 * stored and the host fails the instance with a message naming the key
	 * and its line, so a plugin need not report type errors itself.
	 */
	enum kl_transform_cfg (*config_string)(struct kl_transform_handle *h, const char *key,
					       const char *def, const char **ret_value);
	enum kl_transform_cfg (*config_int)(struct kl_transform_handle *h, const char *key,
					    int64_t def, int64_t *ret_value);
	enum kl_transform_cfg (*config_bool)(struct kl_transform_handle *h, const char *key,
					     int def, int *ret_value);
	/*
	 * A list (or array) of strings: stores the element count in *ret_count
	 * (0 when absent or on a bad type); fetch elements with
	 * config_list_item(). A scalar string is accepted as a one-element list.
	 */
	enum kl_transform_cfg (*config_list)(struct kl_transform_handle *h, const char *key,
					     size_t *ret_count);
	/* Element idx (< count) of the list key, or NULL if out of range. */
	const char *(*config_list_item)(struct kl_transform_handle *h, const char *key, size_t idx);

	/* Logs one line "plugin <name>: <message>" at the given level. */
	void (*log)(struct kl_transform_handle *h, enum kl_transform_log_level level,
		    const char *fmt, ...) KL_TRANSFORM_PRINTF(3, 4);

	/*
	 * During init() only: explains why init is about to fail (the host
	 * shows it to the operator). Call it, then return non-zero from init.
	 */
	void (*set_error)(struct kl_transform_handle *h, const char *fmt, ...)
		KL_TRANSFORM_PRINTF(2, 3);

	/*
	 * Appends an output record with a copy of data[0..len). Returns the
	 * output's index (>= 0), used by set_partition_key(), or -1 if the
	 * host's per-record output cap was hit (return FAILED then; the host
	 * also turns an OK after a refused emit into FAILED).
	 */
	int (*emit)(struct kl_transform_output *out, const void *data, size_t len);

	/*
	 * Sets partition key name = value on output index (replacing an
	 * earlier value of the same name). name: 1-64 characters of
	 * [A-Za-z0-9_]; value: 1-512 bytes, no control characters, no '/'.
	 * Both are copied. Returns 0, or -1 if index, name or value is invalid
	 * or the output cap was hit; the key is then not set, and an OK result
	 * for this record becomes FAILED with the host's explanation.
	 */
	int (*set_partition_key)(struct kl_transform_output *out, int index,
				 const char *name, const char *value);

	/*
	 * The reason shown with a FAILED result (copied; truncated to 1023
	 * bytes). Without one the host records "no reason given by plugin".
	 */
	void (*set_reason)(struct kl_transform_output *out, const char *fmt, ...)
		KL_TRANSFORM_PRINTF(2, 3);

	/* Fields added in later minors are appended here. */
};

/*
 * The descriptor a plugin returns from its entry function. Static and
 * constant for the life of the loaded object. Fill it with
 * KL_TRANSFORM_PLUGIN_HEADER so that the version and size are right.
 */
struct kl_transform_plugin {
	uint32_t abi_major;     /* KL_TRANSFORM_ABI_MAJOR the plugin was built with */
	uint32_t abi_minor;     /* KL_TRANSFORM_ABI_MINOR the plugin was built with */
	size_t struct_size;     /* sizeof(struct kl_transform_plugin) at build time */
	const char *name;       /* short name, [A-Za-z0-9_-], used in logs */
	const char *version;    /* the plugin's own version, free text */
	const char *description; /* one line */
	uint64_t flags;         /* KL_TRANSFORM_F_* */

	/*
	 * Creates an instance. host: the function table (outlives the
	 * instance). h: this instance's handle for the host functions (valid
	 * until destroy returns). On success stores the instance (may be NULL
	 * for a stateless plugin) in *ret_instance and returns 0; on failure
	 * calls host->set_error(), frees what it allocated and returns
	 * non-zero (destroy is then not called).
	 */
	int (*init)(const struct kl_transform_host *host, struct kl_transform_handle *h,
		    void **ret_instance);

	/*
	 * Transforms one record: emits outputs through host->emit() and
	 * returns the result. Must not keep rec or out after returning. Must
	 * not call exit(), longjmp out, or block for long.
	 */
	enum kl_transform_result (*transform)(void *instance, const struct kl_transform_record *rec,
					      struct kl_transform_output *out);

	/* Frees the instance (NULL-safe for a stateless plugin). */
	void (*destroy)(void *instance);

	/* Fields added in later minors are appended here. */
};

#define KL_TRANSFORM_PLUGIN_HEADER                    \
	.abi_major = KL_TRANSFORM_ABI_MAJOR,          \
	.abi_minor = KL_TRANSFORM_ABI_MINOR,          \
	.struct_size = sizeof(struct kl_transform_plugin)

/*
 * The entry symbol every plugin defines (and the only one the host looks
 * up). Returns the plugin's static descriptor; it is called once per load.
 */
KL_TRANSFORM_EXPORT const struct kl_transform_plugin *kinlake_transform_plugin(void);

#ifdef __cplusplus
}
#endif

#endif
