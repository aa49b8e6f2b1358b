/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xform.h: the transform plugin host. Loads a plugin (by name from the
 * plugin search path, or by path) after checking that neither the file nor
 * its directory is writable by group or others, checks its ABI version and
 * descriptor size, creates instances with their settings, and runs records
 * through them, turning each call into an OK / DROPPED / FAILED result with
 * host-owned outputs and partition keys.
 *
 * Invariants: nothing the plugin hands back is trusted (results, key names
 * and values, output sizes are all checked); outputs live in one capped,
 * reused arena per struct xform, so steady-state runs allocate nothing.
 */
#ifndef KL_XFORM_H
#define KL_XFORM_H

#include <stddef.h>
#include <stdint.h>

#include <libconfig.h>

#include "kinlake/transform.h"
#include "kl_err.h"

/* Where plugins are looked up by name when no search path is given. */
#ifndef KL_PLUGINDIR
#define KL_PLUGINDIR "/usr/lib/kinlake/plugins"
#endif
#define XFORM_DEFAULT_PATH KL_PLUGINDIR ":/usr/lib/kinlake/plugins"

/* Default cap on the bytes one input record may produce (outputs + keys). */
#define XFORM_DEFAULT_OUTPUT_CAP ((size_t)64 << 20)

struct xform_plugin; /* a loaded shared object and its descriptor */
struct xform;        /* an instance, plus its own output arena */

/*
 * Refuses path when it or its directory (after resolving symlinks; for a
 * symlink the link's directory too) is writable by group or others, or is
 * not a regular file. Returns KL_OK, KL_ENOTFOUND (no such file) or
 * KL_EPLUGIN, with the reason in info. Thread-safe.
 */
enum kl_err xform_check_perms(const char *path, struct kl_errinfo *info);

/*
 * Loads a plugin. name_or_path: a path if it contains '/', else a name
 * ([A-Za-z0-9_-]) looked up as NAME.so in each directory of search_path
 * (colon-separated; NULL = XFORM_DEFAULT_PATH). Checks permissions,
 * dlopen()s (RTLD_NOW), finds kinlake_transform_plugin, and validates the
 * descriptor (ABI major, struct size, name, functions).
 * Returns KL_OK, KL_EINVAL (bad name), KL_ENOTFOUND, KL_EPLUGIN or
 * KL_ENOMEM, with a message for the operator in info. The caller frees
 * *ret with xform_plugin_free() after freeing its instances.
 * Thread-safe (dlopen is).
 */
enum kl_err xform_plugin_load(const char *name_or_path, const char *search_path,
			      struct kl_errinfo *info, struct xform_plugin **ret);

/* Unloads the plugin. Every instance must be freed first. NULL-safe. */
void xform_plugin_free(struct xform_plugin *plugin);

/* The validated descriptor (owned by the plugin; valid until it is freed). */
const struct kl_transform_plugin *xform_plugin_desc(const struct xform_plugin *plugin);

/* The resolved path the plugin was loaded from (owned by plugin). */
const char *xform_plugin_path(const struct xform_plugin *plugin);

/*
 * Creates an instance: calls the plugin's init with settings (a libconfig
 * group; NULL = no settings). Fails with KL_ECONFIG when settings is not a
 * group, a setting has the wrong type, or a setting was never asked for by
 * the plugin (an unknown key; the message names it and its line), and with
 * KL_EPLUGIN when init fails (with the plugin's reason). settings is only
 * borrowed during the call. Free *ret with xform_free(). Not thread-safe
 * with respect to plugin: create instances from one thread.
 */
enum kl_err xform_new(struct xform_plugin *plugin, const config_setting_t *settings,
		      struct kl_errinfo *info, struct xform **ret);

/*
 * For a plugin that declares KL_TRANSFORM_F_THREAD_SAFE: a second handle
 * sharing x's plugin instance (init is not called again) with an output
 * arena of its own, for use by another thread. Otherwise KL_ESTATE: create
 * one instance per thread with xform_new() instead. Free with xform_free();
 * the instance is destroyed when its last handle is freed.
 */
enum kl_err xform_share(struct xform *x, struct kl_errinfo *info, struct xform **ret);

/* Frees the handle (destroying the instance with its last handle). NULL-safe. */
void xform_free(struct xform *x);

/* Sets the per-record output cap (bytes of data, keys and bookkeeping). */
void xform_set_output_cap(struct xform *x, size_t cap);

struct xform_pkey {
	const char *name;
	const char *value;
};

struct xform_output {
	const uint8_t *data;
	size_t len;
	const struct xform_pkey *keys;
	size_t nkeys;
};

/*
 * The outcome of one record. Everything points into x's arena and is valid
 * until the next xform_run() on x or xform_free(x).
 */
struct xform_result {
	enum kl_transform_result result;
	const char *reason;               /* FAILED only, never NULL then */
	const struct xform_output *outputs; /* OK only */
	size_t noutputs;
};

struct xform_stats {
	uint64_t records, ok, dropped, failed, outputs;
};

/*
 * Runs one record through the plugin. Always yields a result: whatever the
 * plugin returns is checked, and anything invalid (an unknown result, an
 * OK after a refused emit) becomes FAILED with a reason. Returns KL_OK, or
 * KL_ENOMEM if the host itself ran out of memory (then *ret is untouched
 * and the record should be retried). rec is borrowed. One thread at a
 * time per struct xform.
 */
enum kl_err xform_run(struct xform *x, const struct kl_transform_record *rec,
		      struct xform_result *ret);

/* Running totals of x (not of instances shared with it). */
const struct xform_stats *xform_get_stats(const struct xform *x);

/* Static text for a result: "OK", "DROPPED", "FAILED". */
const char *xform_result_str(enum kl_transform_result result);

#endif
