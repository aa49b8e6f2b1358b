/* SPDX-License-Identifier: Apache-2.0 */
/*
 * identity.c: the built-in pass-through transform: every record is OK with
 * one output equal to its input. Stateless, hence thread-safe; it takes no
 * settings (the host rejects any as unknown).
 */
#include <kinlake/transform.h>

static int identity_init(const struct kl_transform_host *host, struct kl_transform_handle *h,
			 void **ret_instance)
{
	(void)h;
	/* The host table outlives every instance; keep it as the instance. */
	*ret_instance = (void *)host;
	return 0;
}

static enum kl_transform_result identity_transform(void *instance,
						   const struct kl_transform_record *rec,
						   struct kl_transform_output *out)
{
	const struct kl_transform_host *host = instance;

	if (host->emit(out, rec->data, rec->len) < 0) {
		host->set_reason(out, "identity: output refused by host (%zu bytes)", rec->len);
		return KL_TRANSFORM_FAILED;
	}
	return KL_TRANSFORM_OK;
}

static void identity_destroy(void *instance)
{
	(void)instance; /* the host table is not ours to free */
}

static const struct kl_transform_plugin identity_plugin = {
	KL_TRANSFORM_PLUGIN_HEADER,
	.name = "identity",
	.version = "1.0",
	.description = "passes every record through unchanged",
	.flags = KL_TRANSFORM_F_THREAD_SAFE,
	.init = identity_init,
	.transform = identity_transform,
	.destroy = identity_destroy,
};

const struct kl_transform_plugin *kinlake_transform_plugin(void)
{
	return &identity_plugin;
}
