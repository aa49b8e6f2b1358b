/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log.h: the process logger, OpenBSD style. log_warn() appends
 * strerror(errno), log_warnx() does not. The level is checked before any
 * argument is formatted. This and the config are the only global mutable
 * state in kinlake; every function here is thread-safe (one line is
 * written with one write(2)).
 */
#ifndef KL_LOG_H
#define KL_LOG_H

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* Current threshold; read without a lock (an int store is atomic enough). */
extern volatile int log_threshold;

/* Parses "error", "warn", "info", "debug". Returns -1 if unknown. */
int log_level_parse(const char *name);
void log_set_level(enum log_level level);

/*
 * Sends output to path (appending) instead of stderr; NULL = stderr.
 * Returns 0 or -1 with errno set. log_reopen() reopens the same path
 * (SIGHUP); call it from the main thread, not from a signal handler.
 */
int log_open_file(const char *path);
int log_reopen(void);
void log_close(void);

void log_emit(enum log_level level, int with_errno, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_enabled(lvl) ((int)(lvl) <= log_threshold)
#define log_errorx(...) do { if (log_enabled(LOG_LEVEL_ERROR)) log_emit(LOG_LEVEL_ERROR, 0, __VA_ARGS__); } while (0)
#define log_error(...) do { if (log_enabled(LOG_LEVEL_ERROR)) log_emit(LOG_LEVEL_ERROR, 1, __VA_ARGS__); } while (0)
#define log_warnx(...) do { if (log_enabled(LOG_LEVEL_WARN)) log_emit(LOG_LEVEL_WARN, 0, __VA_ARGS__); } while (0)
#define log_warn(...) do { if (log_enabled(LOG_LEVEL_WARN)) log_emit(LOG_LEVEL_WARN, 1, __VA_ARGS__); } while (0)
#define log_info(...) do { if (log_enabled(LOG_LEVEL_INFO)) log_emit(LOG_LEVEL_INFO, 0, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_enabled(LOG_LEVEL_DEBUG)) log_emit(LOG_LEVEL_DEBUG, 0, __VA_ARGS__); } while (0)

#endif
