/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease_clock.h: the clock the lease library reads, injected so that tests
 * and simulations run on fake time. Expiry is judged only with mono_ms
 * (monotonic, never compared across hosts); wall_ms only feeds the
 * optional heartbeat attribute shown by `kinlake status`.
 */
#ifndef KL_LEASE_CLOCK_H
#define KL_LEASE_CLOCK_H

#include <stdint.h>

struct lease_clock {
	int64_t (*mono_ms)(void *ctx);            /* monotonic milliseconds */
	int64_t (*wall_ms)(void *ctx);            /* Unix epoch milliseconds */
	void (*sleep_ms)(void *ctx, int64_t ms);  /* waits (a fake clock just advances) */
	void *ctx;
};

/* Fills *ret with the real clocks (kl_mono_ms, kl_wall_ms, kl_sleep_ms).
 * The result is thread-safe and needs no freeing. */
void lease_clock_real(struct lease_clock *ret);

/*
 * A fake clock for tests: time moves only when the test (or a simulated
 * latency through sleep_ms) advances it. Not thread-safe: one thread owns it.
 */
struct lease_fake_clock {
	int64_t mono_ms;
	int64_t wall_offset_ms;  /* wall_ms = mono_ms + wall_offset_ms */
};

/* Starts fc at mono start_ms (wall = a fixed 2026 epoch + start_ms) and
 * fills *ret with a clock reading it. fc must outlive every user of *ret. */
void lease_clock_fake(struct lease_fake_clock *fc, int64_t start_ms, struct lease_clock *ret);
/* Moves fake time forward by ms (>= 0). */
void lease_fake_clock_advance(struct lease_fake_clock *fc, int64_t ms);

static inline int64_t lease_clock_mono(const struct lease_clock *c)
{
	return c->mono_ms(c->ctx);
}

static inline int64_t lease_clock_wall(const struct lease_clock *c)
{
	return c->wall_ms(c->ctx);
}

#endif
