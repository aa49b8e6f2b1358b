/* SPDX-License-Identifier: Apache-2.0 */
/*
 * example.c: a complete kinlake transform plugin, built out of tree
 * against the installed <kinlake/transform.h> (see Makefile). It keeps log
 * lines that contain one of the configured words, partitions them by that
 * word, drops the other lines, and fails empty records.
 *
 * Settings, in the plugin's config group:
 *   keep = [ "ERROR", "WARN" ];   words to look for, in order
 *   key  = "level";               the partition key to set
 */
#include <stdlib.h>
#include <string.h>

#include <kinlake/transform.h>

struct example {
	const struct kl_transform_host *host;
	char **words;
	size_t nwords;
	char *key;
};

static void example_destroy(void *instance)
{
	struct example *ex = instance;

	if (!ex)
		return;
	for (size_t i = 0; i < ex->nwords; i++)
		free(ex->words[i]);
	free(ex->words);
	free(ex->key);
	free(ex);
}

static int example_init(const struct kl_transform_host *host, struct kl_transform_handle *h,
			void **ret_instance)
{
	static const char *const default_words[] = { "ERROR", "WARN" };
	struct example *ex = calloc(1, sizeof(*ex));
	const char *key = NULL;
	size_t n = 0;
	int from_config;

	if (!ex) {
		host->set_error(h, "out of memory");
		return -1;
	}
	ex->host = host;
	/* Settings are read here, in init, and copied: the strings the host
	 * hands out are valid only until init returns. */
	from_config = host->config_list(h, "keep", &n) == KL_TRANSFORM_CFG_SET;
	if (!from_config)
		n = sizeof(default_words) / sizeof(default_words[0]);
	ex->words = calloc(n ? n : 1, sizeof(*ex->words));
	if (!ex->words)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		const char *w = from_config ? host->config_list_item(h, "keep", i) : default_words[i];

		if (!w || !*w) {
			host->set_error(h, "keep: words must not be empty");
			example_destroy(ex);
			return -1;
		}
		ex->words[i] = strdup(w);
		if (!ex->words[i])
			goto nomem;
		ex->nwords++;
	}
	host->config_string(h, "key", "level", &key);
	ex->key = strdup(key);
	if (!ex->key)
		goto nomem;
	*ret_instance = ex;
	return 0;
nomem:
	host->set_error(h, "out of memory");
	example_destroy(ex);
	return -1;
}

/* True when word occurs in data[0..len) (records are not NUL-terminated). */
static int contains(const uint8_t *data, size_t len, const char *word)
{
	size_t m = strlen(word);

	for (size_t i = 0; i + m <= len; i++)
		if (memcmp(data + i, word, m) == 0)
			return 1;
	return 0;
}

static enum kl_transform_result example_transform(void *instance,
						  const struct kl_transform_record *rec,
						  struct kl_transform_output *out)
{
	struct example *ex = instance;
	int idx;

	if (rec->len == 0) {
		ex->host->set_reason(out, "empty record from shard %s", rec->shard_id);
		return KL_TRANSFORM_FAILED;
	}
	for (size_t i = 0; i < ex->nwords; i++) {
		if (!contains(rec->data, rec->len, ex->words[i]))
			continue;
		idx = ex->host->emit(out, rec->data, rec->len);
		if (idx < 0 || ex->host->set_partition_key(out, idx, ex->key, ex->words[i]) != 0) {
			ex->host->set_reason(out, "host refused the output");
			return KL_TRANSFORM_FAILED;
		}
		return KL_TRANSFORM_OK;
	}
	return KL_TRANSFORM_DROPPED;
}

static const struct kl_transform_plugin example_plugin = {
	KL_TRANSFORM_PLUGIN_HEADER,
	.name = "example",
	.version = "1.0",
	.description = "keeps log lines containing configured words, partitioned by word",
	.flags = 0, /* keeps no per-call state, but says so only when sure */
	.init = example_init,
	.transform = example_transform,
	.destroy = example_destroy,
};

const struct kl_transform_plugin *kinlake_transform_plugin(void)
{
	return &example_plugin;
}
