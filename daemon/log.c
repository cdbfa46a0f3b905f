/* log — see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level_now = LOG_LEVEL_INFO;
static int log_to_journal;
static char log_prog[32] = "parleyd";

void log_init(const char *prog, int level)
{
    snprintf(log_prog, sizeof log_prog, "%s", prog);
    log_set_level(level);
    /* JOURNAL_STREAM is "DEV:INODE" of the journal socket; it is inherited by children, so
     * trust it only when stderr is that very socket (systemd.exec(5)). */
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    log_to_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
                     (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_set_level(int level)
{
    atomic_store(&log_level_now, level);
}

int log_enabled(int level)
{
    return level <= atomic_load(&log_level_now);
}

int log_journal(void)
{
    return log_to_journal;
}

static const char *log_level_name(int level)
{
    switch (level) {
    case LOG_LEVEL_ERROR: return "error";
    case LOG_LEVEL_WARN: return "warn";
    case LOG_LEVEL_INFO: return "info";
    default: return "debug";
    }
}

void log_msg(int level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char line[2048];
    int n;
    if (log_to_journal) {
        n = snprintf(line, sizeof line, "<%d>", level);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        n +=
            snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %s[%d] %s: ", ts.tv_nsec / 1000000,
                     log_prog, (int)getpid(), log_level_name(level));
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    /* one message, one line: a newline inside would start a new journal entry */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(2, line, len);
    (void)w;
}
