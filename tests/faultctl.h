/* SPDX-License-Identifier: Apache-2.0 */
/*
 * faultctl.h: starts tests/tools/faultproxy as a child process, points it
 * at one upstream emulator, changes its fault rules and reads its counters
 * over its loopback control port, and stops it. The rule syntax is
 * documented at the top of tests/tools/faultproxy.c.
 *
 * Invariant: a proxy started here never outlives the test process: it is
 * stopped by faultctl_stop(), by an atexit handler for those a failed
 * (longjmp'ed) test left behind, and by the kernel (PR_SET_PDEATHSIG) if
 * the test process dies. Not thread-safe: start and stop proxies from the
 * main thread (the death signal follows the thread that forked).
 */
#ifndef KL_FAULTCTL_H
#define KL_FAULTCTL_H

#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "kl_err.h"

struct faultctl;

/*
 * Starts a proxy in front of upstream_url ("http://127.0.0.1:PORT") and
 * waits (up to 10 s) until it reports its ports. The binary is $KL_FAULTPROXY
 * if set, else ../tools/faultproxy next to the running test program, else
 * the build-tree path compiled in as KL_FAULTPROXY_PATH. The random seed for
 * prob= rules is $KL_FAULTPROXY_SEED or 1. On KL_OK *ret_h is the caller's,
 * to be given to faultctl_stop(). KL_ECONFIG when the proxy refused its
 * arguments (exit status 64: e.g. an upstream that is not loopback),
 * KL_ETIMEOUT when it did not get ready, KL_EIO for anything else; the
 * reason is on stderr.
 */
enum kl_err faultctl_start(const char *upstream_url, struct faultctl **ret_h);

/* "http://127.0.0.1:PORT": the address clients use instead of the
 * upstream's. Borrowed, valid until faultctl_stop(). */
const char *faultctl_url(const struct faultctl *h);
/* "http://127.0.0.1:PORT" of the control port (for curl while debugging). */
const char *faultctl_control_url(const struct faultctl *h);
/* The proxy's process id. */
pid_t faultctl_pid(const struct faultctl *h);

/*
 * Replaces all rules with text (rule lines, see faultproxy.c); "" removes
 * every rule. Counters of the new rules start at 0 and held requests are
 * released. KL_EINVAL when the proxy rejects the text (its reason goes to
 * stderr), KL_EIO when it cannot be reached.
 */
enum kl_err faultctl_set_rules(struct faultctl *h, const char *text);

/*
 * Releases up to n (0 = all) requests held by rule (NULL = any rule),
 * oldest first. ret_released (NULL allowed) gets how many were released.
 */
enum kl_err faultctl_release(struct faultctl *h, const char *rule, unsigned n,
			     unsigned *ret_released);

/*
 * GET /stats, parsed: {"requests","faults","held","rules":{NAME:{"action",
 * "matched","faults","held"}},"ops":{OP:{"requests","faults"}}}. On KL_OK
 * the caller json_object_put()s *ret_stats.
 */
enum kl_err faultctl_stats(struct faultctl *h, json_object **ret_stats);

/*
 * One counter of the stats: section NULL for the totals ("requests",
 * "faults", "held"), or "rules" / "ops" with the rule or operation name
 * ("Kinesis_20131202.GetRecords", "S3.UploadPart"). An operation the proxy
 * has not seen counts 0; an unknown rule or field is KL_ENOTFOUND.
 */
enum kl_err faultctl_counter(struct faultctl *h, const char *section, const char *name,
			     const char *field, uint64_t *ret_value);

/*
 * Waits until at least n requests are held by rule (NULL = any), polling
 * every 10 ms. KL_ETIMEOUT after timeout_ms.
 */
enum kl_err faultctl_wait_held(struct faultctl *h, const char *rule, unsigned n,
			       long timeout_ms);

/*
 * Stops the proxy (SIGTERM, then SIGKILL after 5 s), reaps it and frees h.
 * Returns the proxy's exit status (0 = it stopped cleanly; an ASan build
 * reports leaks through it), or -1 when it had to be killed or did not
 * exit normally. NULL-safe (returns 0).
 */
int faultctl_stop(struct faultctl *h);

#endif
