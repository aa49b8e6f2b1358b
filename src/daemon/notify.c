/* SPDX-License-Identifier: Apache-2.0 */
/*
 * notify.c: the sd_notify protocol over a datagram socket. The address is
 * taken from $NOTIFY_SOCKET as systemd documents it: an absolute path, or
 * '@' followed by an abstract-namespace name (the '@' becomes a NUL byte
 * and the address length counts exactly the name's bytes).
 */
#include "config.h"

#include "notify.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum kl_err notify_open(struct notify *n, struct kl_errinfo *info)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	const char *wd = getenv("WATCHDOG_USEC");
	const char *wd_pid = getenv("WATCHDOG_PID");
	size_t len;

	memset(n, 0, sizeof(*n));
	n->fd = -1;
	if (wd && *wd) {
		char *end;
		long long v = strtoll(wd, &end, 10);
		bool ours = true;

		if (wd_pid && *wd_pid) {
			long long pid = strtoll(wd_pid, &end, 10);

			ours = *end == '\0' && pid == (long long)getpid();
		}
		if (ours && v > 0)
			n->watchdog_usec = v;
	}
	if (!sock || !*sock)
		return KL_OK;
	len = strlen(sock);
	if ((sock[0] != '/' && sock[0] != '@') || len < 2 || len > sizeof(n->addr.sun_path)) {
		n->watchdog_usec = 0;
		return kl_errinfo_set(info, KL_EINVAL, "NOTIFY_SOCKET '%s' is not a path or @name", sock);
	}
	n->addr.sun_family = AF_UNIX;
	memcpy(n->addr.sun_path, sock, len);
	if (sock[0] == '@')
		n->addr.sun_path[0] = '\0';
	/* A path includes its NUL (harmless, and what sd_notify does when it
	 * fits); an abstract name must not: its length is its identity. */
	n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
				  (sock[0] == '/' && len < sizeof(n->addr.sun_path) ? 1 : 0));
	/* Non-blocking: a service manager that does not read (its queue
	 * full) must never stall the main thread; a lost datagram is only
	 * reported. */
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (n->fd < 0) {
		if (info)
			info->sys_errno = errno;
		n->watchdog_usec = 0;
		return kl_errinfo_set(info, KL_EIO, "notify socket: %s", strerror(errno));
	}
	return KL_OK;
}

bool notify_enabled(const struct notify *n)
{
	return n && n->fd >= 0;
}

enum kl_err notify_send(struct notify *n, const char *text, struct kl_errinfo *info)
{
	ssize_t r;

	if (!notify_enabled(n))
		return KL_OK;
	do
		r = sendto(n->fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT,
			   (const struct sockaddr *)&n->addr, n->addr_len);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		if (info)
			info->sys_errno = errno;
		return kl_errinfo_set(info, KL_EIO, "sd_notify: %s", strerror(errno));
	}
	return KL_OK;
}

enum kl_err notify_status(struct notify *n, const char *text, struct kl_errinfo *info)
{
	char msg[512];

	if (!notify_enabled(n))
		return KL_OK;
	snprintf(msg, sizeof(msg), "STATUS=%s", text);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return notify_send(n, msg, info);
}

int64_t notify_watchdog_interval_ms(const struct notify *n)
{
	int64_t ms;

	if (!n || n->watchdog_usec <= 0)
		return 0;
	ms = n->watchdog_usec / 2000;
	return ms > 0 ? ms : 1;
}

void notify_close(struct notify *n)
{
	if (!n)
		return;
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
	n->watchdog_usec = 0;
}
