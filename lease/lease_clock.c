/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_clock.c: the real clock (thin wrappers over util.h) and the fake
 * one tests drive by hand. The fake clock never goes backwards.
 */
#include "config.h"

#include "lease_clock.h"
#include "util.h"

static int64_t real_mono(void *ctx)
{
	(void)ctx;
	return kl_mono_ms();
}

static int64_t real_wall(void *ctx)
{
	(void)ctx;
	return kl_wall_ms();
}

static void real_sleep(void *ctx, int64_t ms)
{
	(void)ctx;
	kl_sleep_ms(ms);
}

void lease_clock_real(struct lease_clock *ret)
{
	ret->mono_ms = real_mono;
	ret->wall_ms = real_wall;
	ret->sleep_ms = real_sleep;
	ret->ctx = NULL;
}

static int64_t fake_mono(void *ctx)
{
	const struct lease_fake_clock *fc = ctx;

	return fc->mono_ms;
}

static int64_t fake_wall(void *ctx)
{
	const struct lease_fake_clock *fc = ctx;

	return fc->mono_ms + fc->wall_offset_ms;
}

static void fake_sleep(void *ctx, int64_t ms)
{
	lease_fake_clock_advance(ctx, ms);
}

void lease_clock_fake(struct lease_fake_clock *fc, int64_t start_ms, struct lease_clock *ret)
{
	fc->mono_ms = start_ms;
	fc->wall_offset_ms = INT64_C(1790000000000); /* 2026-09, arbitrary but fixed */
	ret->mono_ms = fake_mono;
	ret->wall_ms = fake_wall;
	ret->sleep_ms = fake_sleep;
	ret->ctx = fc;
}

void lease_fake_clock_advance(struct lease_fake_clock *fc, int64_t ms)
{
	if (ms > 0)
		fc->mono_ms += ms;
}
