/*
 * log — leveled log lines on stderr.
 *
 * Under systemd (JOURNAL_STREAM names stderr) each line starts with the "<N>" syslog priority
 * prefix journald understands, and no timestamp (the journal adds its own); otherwise a line
 * is "2026-11-29T15:55:52.123Z parleyd[PID] info: message". Thread-safe: each line is one
 * write(2). Never call from a signal handler.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

enum log_level { /* syslog priorities */
                 LOG_LEVEL_ERROR = 3,
                 LOG_LEVEL_WARN = 4,
                 LOG_LEVEL_INFO = 6,
                 LOG_LEVEL_DEBUG = 7,
};

/* Reads JOURNAL_STREAM and checks it against stderr; sets the program name and level. */
void log_init(const char *prog, int level);
void log_set_level(int level);
int log_enabled(int level);
/* 1 when lines carry journald priority prefixes. */
int log_journal(void);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
