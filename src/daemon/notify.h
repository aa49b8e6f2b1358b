/* SPDX-License-Identifier: Apache-2.0 */
/*
 * notify.h: systemd's sd_notify datagram protocol, spoken directly (no
 * libsystemd): "READY=1", "STOPPING=1", "STATUS=...", "WATCHDOG=1" sent as
 * one datagram each to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
 * or "@name" for the abstract namespace).
 *
 * Invariants: without $NOTIFY_SOCKET every call is a cheap no-op; a send
 * never blocks (a full queue drops the datagram) and a failure is reported
 * but never fatal (the service manager may be restarting). The watchdog interval is honoured only when $WATCHDOG_PID
 * is unset or names this process, as sd_watchdog_enabled() does.
 *
 * Threads: one struct notify belongs to the main thread.
 */
#ifndef KL_NOTIFY_H
#define KL_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "kl_err.h"

struct notify {
	int fd;                        /* -1 = disabled */
	struct sockaddr_un addr;
	socklen_t addr_len;
	int64_t watchdog_usec;         /* 0 = no watchdog */
};

/*
 * Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID and opens a
 * datagram socket. Returns KL_OK (also when the variable is unset: n is
 * then disabled), or KL_EINVAL for a malformed address / KL_EIO when the
 * socket cannot be made (n is then disabled too; info says why).
 */
enum kl_err notify_open(struct notify *n, struct kl_errinfo *info);

/* True when a service manager listens. */
bool notify_enabled(const struct notify *n);

/*
 * Sends text (one or more "KEY=value" lines) as one datagram, without
 * waiting. Returns KL_OK, or KL_EIO (info has errno; EAGAIN when the
 * receiver's queue is full). No-op (KL_OK) when disabled.
 */
enum kl_err notify_send(struct notify *n, const char *text, struct kl_errinfo *info);

/* "STATUS=<text>" with newlines in text replaced by spaces. */
enum kl_err notify_status(struct notify *n, const char *text, struct kl_errinfo *info);

/* How often to send WATCHDOG=1: half of $WATCHDOG_USEC, in ms; 0 = never. */
int64_t notify_watchdog_interval_ms(const struct notify *n);

/* Closes the socket. NULL-safe; n is disabled afterwards. */
void notify_close(struct notify *n);

#endif
