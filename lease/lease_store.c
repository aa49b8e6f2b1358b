/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_store.c: the one generic piece of the store interface, freeing a
 * handle through its implementation's destroy().
 */
#include "config.h"

#include <stdlib.h>

#include "lease_store.h"

void lease_store_free(struct lease_store *store)
{
	if (!store)
		return;
	if (store->ops && store->ops->destroy)
		store->ops->destroy(store->ctx);
	free(store);
}
