/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xform.c: the transform plugin host: loading (permission checks, dlopen,
 * descriptor validation), the host function table handed to plugins, and
 * running records through an instance.
 *
 * Invariants: a descriptor field is read only after struct_size shows it
 * is there; the plugin never sees host memory it could keep (outputs are
 * copied into the arena of the struct xform, which is reset per record);
 * anything invalid a plugin does with a record turns that record into
 * FAILED with a reason instead of being ignored.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "log.h"
#include "xform.h"

/* The 1.0 descriptor ends with destroy; anything smaller is refused. */
#define DESC_MIN_SIZE \
	(offsetof(struct kl_transform_plugin, destroy) + sizeof(((struct kl_transform_plugin *)0)->destroy))

#define NAME_MAX_LEN 64
#define KEY_NAME_MAX 64
#define KEY_VALUE_MAX 512

struct xform_plugin {
	void *dl;
	const struct kl_transform_plugin *desc;
	char *path;
	atomic_int ninstances;
};

/* The host's side of one plugin instance (what host functions receive). */
struct kl_transform_handle {
	struct xform_plugin *plugin;
	const config_setting_t *settings; /* during init only */
	bool in_init;
	bool nomem;
	const config_setting_t **asked;   /* settings the plugin looked up */
	size_t nasked, asked_alloc;
	char error[512];                  /* from set_error() */
	char cfg_error[512];              /* the first wrongly typed setting */
};

/* A plugin instance, shared by the handles of a thread-safe plugin. */
struct instance {
	struct kl_transform_handle handle;
	void *inst;
	atomic_int refs;
};

struct out_entry {
	size_t off, len;
};

struct key_entry {
	int out;
	size_t name_off, value_off;
};

struct kl_transform_output {
	struct buf bytes;           /* output data and key strings */
	struct out_entry *outs;
	size_t nouts, outs_alloc;
	struct key_entry *keys;
	size_t nkeys, keys_alloc;
	size_t cap;
	bool nomem;                 /* the host ran out of memory */
	bool refused;               /* an emit passed the cap */
	bool has_reason;
	char reason[1024];          /* from set_reason() */
	char host_reason[1024];     /* what the host found wrong */
};

struct xform {
	struct instance *core;
	struct kl_transform_output out;
	struct xform_output *res_outs;
	size_t res_outs_alloc;
	struct xform_pkey *res_keys;
	size_t res_keys_alloc;
	struct xform_stats stats;
};

/* Makes room for need elements in *arr (capacity *alloc). */
static bool reserve(void **arr, size_t *alloc, size_t need, size_t elem)
{
	size_t want;
	void *p;

	if (need <= *alloc)
		return true;
	want = *alloc ? *alloc : 8;
	while (want < need)
		want *= 2;
	if (want > SIZE_MAX / elem)
		return false;
	p = realloc(*arr, want * elem);
	if (!p)
		return false;
	*arr = p;
	*alloc = want;
	return true;
}

static bool valid_name(const char *s, size_t max)
{
	size_t n = 0;

	if (!s)
		return false;
	for (; s[n]; n++) {
		char c = s[n];

		if (n >= max || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				  (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return n > 0;
}

/* ------------------------------------------------------------ host functions */

static const char *handle_name(const struct kl_transform_handle *h)
{
	return h->plugin->desc->name;
}

static const config_setting_t *cfg_lookup(struct kl_transform_handle *h, const char *key)
{
	const config_setting_t *s;

	if (!h->in_init) {
		log_warnx("plugin %s: setting '%s' read outside init(), default used",
			  handle_name(h), key ? key : "(null)");
		return NULL;
	}
	if (!h->settings || !key)
		return NULL;
	s = config_setting_get_member(h->settings, key);
	if (!s)
		return NULL;
	if (!reserve((void **)&h->asked, &h->asked_alloc, h->nasked + 1, sizeof(*h->asked)))
		h->nomem = true;
	else
		h->asked[h->nasked++] = s;
	return s;
}

/* "file:line" or "line N" of a setting, for messages. */
static void setting_where(const config_setting_t *s, char *buf, size_t size)
{
	const char *file = config_setting_source_file(s);

	if (file)
		snprintf(buf, size, "%s:%u", file, config_setting_source_line(s));
	else
		snprintf(buf, size, "line %u", config_setting_source_line(s));
}

static enum kl_transform_cfg cfg_badtype(struct kl_transform_handle *h, const config_setting_t *s,
					 const char *want)
{
	char where[256];

	if (!h->cfg_error[0]) {
		setting_where(s, where, sizeof(where));
		snprintf(h->cfg_error, sizeof(h->cfg_error), "%s: setting '%s' must be %s", where,
			 config_setting_name(s), want);
	}
	return KL_TRANSFORM_CFG_BADTYPE;
}

static enum kl_transform_cfg host_config_string(struct kl_transform_handle *h, const char *key,
						const char *def, const char **ret_value)
{
	const config_setting_t *s = cfg_lookup(h, key);

	*ret_value = def;
	if (!s)
		return KL_TRANSFORM_CFG_DEFAULT;
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return cfg_badtype(h, s, "a string");
	*ret_value = config_setting_get_string(s);
	return KL_TRANSFORM_CFG_SET;
}

static enum kl_transform_cfg host_config_int(struct kl_transform_handle *h, const char *key,
					     int64_t def, int64_t *ret_value)
{
	const config_setting_t *s = cfg_lookup(h, key);

	*ret_value = def;
	if (!s)
		return KL_TRANSFORM_CFG_DEFAULT;
	if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
		return cfg_badtype(h, s, "an integer");
	*ret_value = config_setting_get_int64(s);
	return KL_TRANSFORM_CFG_SET;
}

static enum kl_transform_cfg host_config_bool(struct kl_transform_handle *h, const char *key,
					      int def, int *ret_value)
{
	const config_setting_t *s = cfg_lookup(h, key);

	*ret_value = def;
	if (!s)
		return KL_TRANSFORM_CFG_DEFAULT;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return cfg_badtype(h, s, "true or false");
	*ret_value = config_setting_get_bool(s) ? 1 : 0;
	return KL_TRANSFORM_CFG_SET;
}

/* Element count of a list of strings, or -1 if s is something else. */
static int string_list_len(const config_setting_t *s)
{
	int n;

	if (config_setting_type(s) == CONFIG_TYPE_STRING)
		return 1;
	if (config_setting_type(s) != CONFIG_TYPE_LIST && config_setting_type(s) != CONFIG_TYPE_ARRAY)
		return -1;
	n = config_setting_length(s);
	for (int i = 0; i < n; i++)
		if (config_setting_type(config_setting_get_elem(s, (unsigned)i)) != CONFIG_TYPE_STRING)
			return -1;
	return n;
}

static enum kl_transform_cfg host_config_list(struct kl_transform_handle *h, const char *key,
					      size_t *ret_count)
{
	const config_setting_t *s = cfg_lookup(h, key);
	int n;

	*ret_count = 0;
	if (!s)
		return KL_TRANSFORM_CFG_DEFAULT;
	n = string_list_len(s);
	if (n < 0)
		return cfg_badtype(h, s, "a list of strings");
	*ret_count = (size_t)n;
	return KL_TRANSFORM_CFG_SET;
}

static const char *host_config_list_item(struct kl_transform_handle *h, const char *key, size_t idx)
{
	const config_setting_t *s = cfg_lookup(h, key);
	int n;

	if (!s)
		return NULL;
	n = string_list_len(s);
	if (n < 0 || idx >= (size_t)n)
		return NULL;
	if (config_setting_type(s) == CONFIG_TYPE_STRING)
		return config_setting_get_string(s);
	return config_setting_get_string(config_setting_get_elem(s, (unsigned)idx));
}

static void host_log(struct kl_transform_handle *h, enum kl_transform_log_level level,
		     const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void host_log(struct kl_transform_handle *h, enum kl_transform_log_level level,
		     const char *fmt, ...)
{
	enum log_level l;
	char msg[1024];
	va_list ap;

	switch (level) {
	case KL_TRANSFORM_LOG_ERROR:
		l = LOG_LEVEL_ERROR;
		break;
	case KL_TRANSFORM_LOG_WARN:
		l = LOG_LEVEL_WARN;
		break;
	case KL_TRANSFORM_LOG_DEBUG:
		l = LOG_LEVEL_DEBUG;
		break;
	case KL_TRANSFORM_LOG_INFO:
	default:
		l = LOG_LEVEL_INFO;
		break;
	}
	if (!log_enabled(l) || !fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(l, 0, "plugin %s: %s", handle_name(h), msg);
}

static void host_set_error(struct kl_transform_handle *h, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void host_set_error(struct kl_transform_handle *h, const char *fmt, ...)
{
	va_list ap;

	if (!h->in_init || !fmt) {
		log_debug("plugin %s: set_error() outside init() ignored", handle_name(h));
		return;
	}
	va_start(ap, fmt);
	vsnprintf(h->error, sizeof(h->error), fmt, ap);
	va_end(ap);
}

/* Bytes of the arena in use, bookkeeping included (what the cap bounds). */
static size_t out_used(const struct kl_transform_output *out)
{
	return out->bytes.len + out->nouts * sizeof(struct out_entry) +
	       out->nkeys * sizeof(struct key_entry);
}

/* True when extra more bytes fit under the cap. */
static bool out_fits(const struct kl_transform_output *out, size_t extra)
{
	size_t used = out_used(out);

	return used <= out->cap && extra <= out->cap - used;
}

static int host_emit(struct kl_transform_output *out, const void *data, size_t len)
{
	size_t off;

	if (!data && len) {
		snprintf(out->host_reason, sizeof(out->host_reason),
			 "plugin emitted %zu bytes from a NULL pointer", len);
		return -1;
	}
	if (out->nouts >= INT_MAX || len > SIZE_MAX / 2 ||
	    !out_fits(out, len + sizeof(struct out_entry))) {
		out->refused = true;
		return -1;
	}
	if (!reserve((void **)&out->outs, &out->outs_alloc, out->nouts + 1, sizeof(*out->outs))) {
		out->nomem = true;
		return -1;
	}
	off = out->bytes.len;
	if (len && buf_append(&out->bytes, data, len) != KL_OK) {
		out->nomem = true;
		return -1;
	}
	out->outs[out->nouts] = (struct out_entry){ .off = off, .len = len };
	return (int)out->nouts++;
}

/* Checks a partition key value: 1..KEY_VALUE_MAX bytes, no control, no '/'. */
static const char *bad_value(const char *value)
{
	size_t n = 0;

	if (!value || !*value)
		return "is empty";
	for (; value[n]; n++) {
		unsigned char c = (unsigned char)value[n];

		if (n >= KEY_VALUE_MAX)
			return "is longer than 512 bytes";
		if (c < 0x20 || c == 0x7f)
			return "contains a control character";
		if (c == '/')
			return "contains '/'";
	}
	return NULL;
}

static int host_set_partition_key(struct kl_transform_output *out, int index, const char *name,
				  const char *value)
{
	size_t name_len, value_len, name_off, value_off;
	const char *why;

	if (index < 0 || (size_t)index >= out->nouts) {
		snprintf(out->host_reason, sizeof(out->host_reason),
			 "plugin set a partition key on output %d of %zu", index, out->nouts);
		return -1;
	}
	if (!valid_name(name, KEY_NAME_MAX) || strchr(name, '-')) {
		snprintf(out->host_reason, sizeof(out->host_reason),
			 "plugin set a partition key with an invalid name '%.64s' "
			 "(1-64 characters of A-Z a-z 0-9 _)", name ? name : "(null)");
		return -1;
	}
	why = bad_value(value);
	if (why) {
		snprintf(out->host_reason, sizeof(out->host_reason),
			 "plugin set partition key '%s' to a value that %s", name, why);
		return -1;
	}
	name_len = strlen(name);
	value_len = strlen(value);
	/* Replace an earlier value of the same name: only the value moves. */
	for (size_t i = 0; i < out->nkeys; i++) {
		struct key_entry *k = &out->keys[i];

		if (k->out == index && strcmp(out->bytes.data + k->name_off, name) == 0) {
			if (!out_fits(out, value_len + 1)) {
				out->refused = true;
				return -1;
			}
			value_off = out->bytes.len;
			if (buf_append(&out->bytes, value, value_len + 1) != KL_OK) {
				out->nomem = true;
				return -1;
			}
			k->value_off = value_off;
			return 0;
		}
	}
	if (!out_fits(out, name_len + value_len + 2 + sizeof(struct key_entry))) {
		out->refused = true;
		return -1;
	}
	if (!reserve((void **)&out->keys, &out->keys_alloc, out->nkeys + 1, sizeof(*out->keys))) {
		out->nomem = true;
		return -1;
	}
	name_off = out->bytes.len;
	value_off = name_off + name_len + 1;
	/* The NULs are stored too, so the strings can be used in place. */
	if (buf_append(&out->bytes, name, name_len + 1) != KL_OK ||
	    buf_append(&out->bytes, value, value_len + 1) != KL_OK) {
		out->nomem = true;
		return -1;
	}
	out->keys[out->nkeys++] = (struct key_entry){
		.out = index, .name_off = name_off, .value_off = value_off,
	};
	return 0;
}

static void host_set_reason(struct kl_transform_output *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void host_set_reason(struct kl_transform_output *out, const char *fmt, ...)
{
	va_list ap;

	if (!fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
	va_end(ap);
	out->has_reason = true;
}

static const struct kl_transform_host host_table = {
	.abi_major = KL_TRANSFORM_ABI_MAJOR,
	.abi_minor = KL_TRANSFORM_ABI_MINOR,
	.struct_size = sizeof(struct kl_transform_host),
	.config_string = host_config_string,
	.config_int = host_config_int,
	.config_bool = host_config_bool,
	.config_list = host_config_list,
	.config_list_item = host_config_list_item,
	.log = host_log,
	.set_error = host_set_error,
	.emit = host_emit,
	.set_partition_key = host_set_partition_key,
	.set_reason = host_set_reason,
};

/* ------------------------------------------------------------ loading */

static enum kl_err check_mode(const char *what, const char *path, bool want_dir,
			      struct kl_errinfo *info)
{
	struct stat st;
	mode_t w;

	if (stat(path, &st) != 0)
		return kl_errinfo_set(info, errno == ENOENT ? KL_ENOTFOUND : KL_EPLUGIN,
				      "plugin %s '%s': %s", what, path, strerror(errno));
	if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
		return kl_errinfo_set(info, KL_EPLUGIN, "plugin %s '%s' is not a %s", what, path,
				      want_dir ? "directory" : "regular file");
	w = st.st_mode & (S_IWGRP | S_IWOTH);
	if (w)
		return kl_errinfo_set(info, KL_EPLUGIN,
				      "refusing plugin: %s '%s' is writable by %s (mode %04o); "
				      "only its owner may write it (chmod go-w)",
				      what, path,
				      w == (S_IWGRP | S_IWOTH) ? "group and others" :
				      w == S_IWGRP ? "its group" : "others",
				      (unsigned)(st.st_mode & 07777));
	return KL_OK;
}

/* Checks the directory that contains path (which need not be resolved). */
static enum kl_err check_parent(const char *path, struct kl_errinfo *info)
{
	char *copy = strdup(path), *slash, *dir;
	enum kl_err err;

	if (!copy)
		return kl_errinfo_set(info, KL_ENOMEM, "plugin: out of memory");
	slash = strrchr(copy, '/');
	if (!slash)
		dir = ".";
	else if (slash == copy)
		dir = "/";
	else {
		*slash = '\0';
		dir = copy;
	}
	err = check_mode("directory", dir, true, info);
	free(copy);
	return err;
}

enum kl_err xform_check_perms(const char *path, struct kl_errinfo *info)
{
	struct stat lst;
	char *real;
	enum kl_err err;

	if (lstat(path, &lst) != 0)
		return kl_errinfo_set(info, errno == ENOENT ? KL_ENOTFOUND : KL_EPLUGIN,
				      "plugin file '%s': %s", path, strerror(errno));
	/* A symlink can be replaced by whoever may write the link's directory. */
	if (S_ISLNK(lst.st_mode)) {
		err = check_parent(path, info);
		if (err != KL_OK)
			return err;
	}
	real = realpath(path, NULL);
	if (!real)
		return kl_errinfo_set(info, errno == ENOENT ? KL_ENOTFOUND : KL_EPLUGIN,
				      "plugin file '%s': %s", path, strerror(errno));
	err = check_mode("file", real, false, info);
	if (err == KL_OK)
		err = check_parent(real, info);
	free(real);
	return err;
}

/* Looks name.so up in the colon-separated search path. */
static enum kl_err find_plugin(const char *name, const char *search_path,
			       struct kl_errinfo *info, char **ret_path)
{
	const char *p = search_path;

	while (*p) {
		const char *colon = strchr(p, ':');
		size_t dir_len = colon ? (size_t)(colon - p) : strlen(p);
		struct stat st;
		char *path;

		if (dir_len > 0) {
			if (asprintf(&path, "%.*s/%s.so", (int)dir_len, p, name) < 0)
				return kl_errinfo_set(info, KL_ENOMEM, "plugin: out of memory");
			if (stat(path, &st) == 0) {
				*ret_path = path;
				return KL_OK;
			}
			free(path);
		}
		p += dir_len + (colon ? 1 : 0);
	}
	return kl_errinfo_set(info, KL_ENOTFOUND, "plugin '%s' not found: no %s.so in %s",
			      name, name, search_path);
}

static enum kl_err validate_desc(const struct kl_transform_plugin *d, const char *path,
				 struct kl_errinfo *info)
{
	if (!d)
		return kl_errinfo_set(info, KL_EPLUGIN, "plugin '%s': %s() returned NULL", path,
				      KL_TRANSFORM_ENTRY_SYMBOL);
	if (d->abi_major != KL_TRANSFORM_ABI_MAJOR)
		return kl_errinfo_set(info, KL_EPLUGIN,
				      "plugin '%s' was built for transform ABI %u.%u but this "
				      "kinlake supports ABI %u.x; rebuild it against this "
				      "kinlake's <kinlake/transform.h>",
				      path, d->abi_major, d->abi_minor, KL_TRANSFORM_ABI_MAJOR);
	if (d->struct_size < DESC_MIN_SIZE)
		return kl_errinfo_set(info, KL_EPLUGIN,
				      "plugin '%s': descriptor is %zu bytes, smaller than the %zu "
				      "bytes of ABI %u.0 (fill it with KL_TRANSFORM_PLUGIN_HEADER)",
				      path, d->struct_size, (size_t)DESC_MIN_SIZE,
				      KL_TRANSFORM_ABI_MAJOR);
	if (!valid_name(d->name, NAME_MAX_LEN))
		return kl_errinfo_set(info, KL_EPLUGIN,
				      "plugin '%s': descriptor name is missing or not 1-64 "
				      "characters of A-Z a-z 0-9 _ -", path);
	if (!d->init || !d->transform)
		return kl_errinfo_set(info, KL_EPLUGIN, "plugin '%s' (%s): descriptor lacks %s()",
				      path, d->name, d->init ? "transform" : "init");
	if (d->abi_minor > KL_TRANSFORM_ABI_MINOR)
		log_debug("plugin %s: built for ABI %u.%u, host is %u.%u; it must check "
			  "host->abi_minor", d->name, d->abi_major, d->abi_minor,
			  KL_TRANSFORM_ABI_MAJOR, KL_TRANSFORM_ABI_MINOR);
	return KL_OK;
}

enum kl_err xform_plugin_load(const char *name_or_path, const char *search_path,
			      struct kl_errinfo *info, struct xform_plugin **ret)
{
	const struct kl_transform_plugin *(*entry)(void);
	struct xform_plugin *p = NULL;
	char *path = NULL;
	const char *dlerr;
	enum kl_err err;
	void *dl, *sym;

	if (!name_or_path || !*name_or_path)
		return kl_errinfo_set(info, KL_EINVAL, "plugin: no name or path given");
	if (strchr(name_or_path, '/')) {
		path = strdup(name_or_path);
		if (!path)
			return kl_errinfo_set(info, KL_ENOMEM, "plugin: out of memory");
	} else {
		if (!valid_name(name_or_path, NAME_MAX_LEN))
			return kl_errinfo_set(info, KL_EINVAL,
					      "plugin name '%s' is not 1-64 characters of "
					      "A-Z a-z 0-9 _ - (give a path to load a file)",
					      name_or_path);
		err = find_plugin(name_or_path, search_path ? search_path : XFORM_DEFAULT_PATH,
				  info, &path);
		if (err != KL_OK)
			return err;
	}
	err = xform_check_perms(path, info);
	if (err != KL_OK)
		goto fail;

	dlerror();
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		dlerr = dlerror();
		err = kl_errinfo_set(info, KL_EPLUGIN, "plugin '%s' cannot be loaded: %s", path,
				     dlerr ? dlerr : "unknown dlopen error");
		goto fail;
	}
	dlerror();
	sym = dlsym(dl, KL_TRANSFORM_ENTRY_SYMBOL);
	dlerr = dlerror();
	if (!sym || dlerr) {
		err = kl_errinfo_set(info, KL_EPLUGIN,
				     "plugin '%s' has no entry symbol %s() (is it a kinlake "
				     "transform plugin?): %s",
				     path, KL_TRANSFORM_ENTRY_SYMBOL, dlerr ? dlerr : "symbol is NULL");
		dlclose(dl);
		goto fail;
	}
	/* POSIX guarantees a data pointer from dlsym converts to a function pointer. */
	memcpy(&entry, &sym, sizeof(entry));
	p = calloc(1, sizeof(*p));
	if (!p) {
		dlclose(dl);
		err = kl_errinfo_set(info, KL_ENOMEM, "plugin: out of memory");
		goto fail;
	}
	p->dl = dl;
	p->path = path;
	p->desc = entry();
	err = validate_desc(p->desc, path, info);
	if (err != KL_OK) {
		p->path = NULL;
		xform_plugin_free(p);
		goto fail;
	}
	log_debug("plugin %s %s (ABI %u.%u) loaded from %s", p->desc->name,
		  p->desc->version ? p->desc->version : "", p->desc->abi_major,
		  p->desc->abi_minor, path);
	*ret = p;
	return KL_OK;

fail:
	free(path);
	return err;
}

void xform_plugin_free(struct xform_plugin *plugin)
{
	if (!plugin)
		return;
	/* Unmapping code that an instance still points into would crash later. */
	if (atomic_load(&plugin->ninstances) != 0)
		log_errorx("plugin %s: unloaded with %d live instance(s), keeping it mapped",
			   plugin->desc ? plugin->desc->name : "?", atomic_load(&plugin->ninstances));
	else if (plugin->dl)
		dlclose(plugin->dl);
	free(plugin->path);
	free(plugin);
}

const struct kl_transform_plugin *xform_plugin_desc(const struct xform_plugin *plugin)
{
	return plugin->desc;
}

const char *xform_plugin_path(const struct xform_plugin *plugin)
{
	return plugin->path;
}

/* ------------------------------------------------------------ instances */

static void instance_release(struct instance *core)
{
	const struct kl_transform_plugin *d;

	if (!core || atomic_fetch_sub(&core->refs, 1) != 1)
		return;
	d = core->handle.plugin->desc;
	if (d->destroy)
		d->destroy(core->inst);
	atomic_fetch_sub(&core->handle.plugin->ninstances, 1);
	free(core->handle.asked);
	free(core);
}

static struct xform *xform_alloc(struct instance *core)
{
	struct xform *x = calloc(1, sizeof(*x));

	if (!x)
		return NULL;
	x->core = core;
	x->out.cap = XFORM_DEFAULT_OUTPUT_CAP;
	buf_init(&x->out.bytes, x->out.cap);
	return x;
}

/* Finds a setting the plugin never asked for. */
static const config_setting_t *unknown_setting(const struct kl_transform_handle *h,
						const config_setting_t *settings)
{
	int n = config_setting_length(settings);

	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(settings, (unsigned)i);
		bool asked = false;

		for (size_t j = 0; j < h->nasked && !asked; j++)
			asked = h->asked[j] == s;
		if (!asked)
			return s;
	}
	return NULL;
}

enum kl_err xform_new(struct xform_plugin *plugin, const config_setting_t *settings,
		      struct kl_errinfo *info, struct xform **ret)
{
	const struct kl_transform_plugin *d = plugin->desc;
	struct kl_transform_handle *h;
	const config_setting_t *unknown;
	struct instance *core;
	struct xform *x;
	char where[256];
	enum kl_err err;
	int rc;

	if (settings && !config_setting_is_group(settings))
		return kl_errinfo_set(info, KL_ECONFIG, "plugin %s: settings must be a group",
				      d->name);
	core = calloc(1, sizeof(*core));
	if (!core)
		return kl_errinfo_set(info, KL_ENOMEM, "plugin %s: out of memory", d->name);
	h = &core->handle;
	h->plugin = plugin;
	h->settings = settings;
	h->in_init = true;
	rc = d->init(&host_table, h, &core->inst);
	h->in_init = false;
	if (rc != 0) {
		err = kl_errinfo_set(info, KL_EPLUGIN, "plugin %s: init failed: %s", d->name,
				     h->error[0] ? h->error : "no reason given by plugin");
		free(h->asked);
		free(core);
		return err;
	}
	atomic_init(&core->refs, 1);
	atomic_fetch_add(&plugin->ninstances, 1);
	if (h->nomem)
		err = kl_errinfo_set(info, KL_ENOMEM, "plugin %s: out of memory", d->name);
	else if (h->cfg_error[0])
		err = kl_errinfo_set(info, KL_ECONFIG, "plugin %s: %s", d->name, h->cfg_error);
	else if (settings && (unknown = unknown_setting(h, settings))) {
		setting_where(unknown, where, sizeof(where));
		err = kl_errinfo_set(info, KL_ECONFIG, "plugin %s: %s: unknown setting '%s'",
				     d->name, where, config_setting_name(unknown));
	} else
		err = KL_OK;
	h->settings = NULL;
	x = err == KL_OK ? xform_alloc(core) : NULL;
	if (err == KL_OK && !x)
		err = kl_errinfo_set(info, KL_ENOMEM, "plugin %s: out of memory", d->name);
	if (err != KL_OK) {
		instance_release(core);
		return err;
	}
	*ret = x;
	return KL_OK;
}

enum kl_err xform_share(struct xform *x, struct kl_errinfo *info, struct xform **ret)
{
	const struct kl_transform_plugin *d = x->core->handle.plugin->desc;
	struct xform *y;

	if (!(d->flags & KL_TRANSFORM_F_THREAD_SAFE))
		return kl_errinfo_set(info, KL_ESTATE,
				      "plugin %s is not thread-safe: create one instance per "
				      "thread", d->name);
	y = xform_alloc(x->core);
	if (!y)
		return kl_errinfo_set(info, KL_ENOMEM, "plugin %s: out of memory", d->name);
	atomic_fetch_add(&x->core->refs, 1);
	*ret = y;
	return KL_OK;
}

void xform_free(struct xform *x)
{
	if (!x)
		return;
	instance_release(x->core);
	buf_done(&x->out.bytes);
	free(x->out.outs);
	free(x->out.keys);
	free(x->res_outs);
	free(x->res_keys);
	free(x);
}

void xform_set_output_cap(struct xform *x, size_t cap)
{
	x->out.cap = cap;
	buf_done(&x->out.bytes);
	buf_init(&x->out.bytes, cap);
}

const struct xform_stats *xform_get_stats(const struct xform *x)
{
	return &x->stats;
}

const char *xform_result_str(enum kl_transform_result result)
{
	switch (result) {
	case KL_TRANSFORM_OK:
		return "OK";
	case KL_TRANSFORM_DROPPED:
		return "DROPPED";
	case KL_TRANSFORM_FAILED:
		return "FAILED";
	}
	return "INVALID";
}

/* Turns the arena into the result arrays (keys grouped by output). */
static bool build_outputs(struct xform *x)
{
	struct kl_transform_output *out = &x->out;
	static const uint8_t empty[1];
	size_t pos = 0;

	if (!reserve((void **)&x->res_outs, &x->res_outs_alloc, out->nouts, sizeof(*x->res_outs)) ||
	    !reserve((void **)&x->res_keys, &x->res_keys_alloc, out->nkeys, sizeof(*x->res_keys)))
		return false;
	for (size_t i = 0; i < out->nouts; i++) {
		x->res_outs[i] = (struct xform_output){
			.data = out->bytes.data ? (const uint8_t *)out->bytes.data + out->outs[i].off : empty,
			.len = out->outs[i].len,
		};
	}
	for (size_t i = 0; i < out->nkeys; i++)
		x->res_outs[out->keys[i].out].nkeys++;
	for (size_t i = 0; i < out->nouts; i++) {
		x->res_outs[i].keys = x->res_keys + pos;
		pos += x->res_outs[i].nkeys;
		x->res_outs[i].nkeys = 0;
	}
	for (size_t i = 0; i < out->nkeys; i++) {
		struct xform_output *o = &x->res_outs[out->keys[i].out];
		struct xform_pkey *k = (struct xform_pkey *)o->keys + o->nkeys++;

		k->name = out->bytes.data + out->keys[i].name_off;
		k->value = out->bytes.data + out->keys[i].value_off;
	}
	return true;
}

enum kl_err xform_run(struct xform *x, const struct kl_transform_record *rec,
		      struct xform_result *ret)
{
	const struct kl_transform_plugin *d = x->core->handle.plugin->desc;
	struct kl_transform_output *out = &x->out;
	enum kl_transform_result r;
	const char *reason = NULL;
	int raw;

	buf_reset(&out->bytes);
	out->nouts = out->nkeys = 0;
	out->nomem = out->refused = out->has_reason = false;
	out->reason[0] = out->host_reason[0] = '\0';

	raw = (int)d->transform(x->core->inst, rec, out);
	if (out->nomem)
		return KL_ENOMEM;
	switch (raw) {
	case KL_TRANSFORM_OK:
	case KL_TRANSFORM_DROPPED:
	case KL_TRANSFORM_FAILED:
		r = (enum kl_transform_result)raw;
		break;
	default:
		r = KL_TRANSFORM_FAILED;
		snprintf(out->host_reason, sizeof(out->host_reason),
			 "plugin returned an invalid result (%d)", raw);
		break;
	}
	if (out->refused && !out->host_reason[0])
		snprintf(out->host_reason, sizeof(out->host_reason),
			 "plugin output exceeded the cap of %zu bytes for one record", out->cap);
	if (r == KL_TRANSFORM_OK && out->host_reason[0])
		r = KL_TRANSFORM_FAILED;
	if (r == KL_TRANSFORM_FAILED) {
		if (out->host_reason[0] && raw != KL_TRANSFORM_FAILED)
			reason = out->host_reason;
		else if (out->has_reason && out->reason[0])
			reason = out->reason;
		else if (out->host_reason[0])
			reason = out->host_reason;
		else
			reason = "no reason given by plugin";
	}
	if (r == KL_TRANSFORM_OK && !build_outputs(x))
		return KL_ENOMEM;

	x->stats.records++;
	switch (r) {
	case KL_TRANSFORM_OK:
		x->stats.ok++;
		x->stats.outputs += out->nouts;
		break;
	case KL_TRANSFORM_DROPPED:
		x->stats.dropped++;
		break;
	case KL_TRANSFORM_FAILED:
		x->stats.failed++;
		break;
	}
	*ret = (struct xform_result){
		.result = r,
		.reason = reason,
		.outputs = r == KL_TRANSFORM_OK ? x->res_outs : NULL,
		.noutputs = r == KL_TRANSFORM_OK ? out->nouts : 0,
	};
	return KL_OK;
}
