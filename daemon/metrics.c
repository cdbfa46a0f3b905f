/* metrics — see metrics.h. */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct metric {
    const char *name, *help, *labels;
    enum metrics_type type;
    _Atomic uint64_t bits; /* the double's bits: C11 has no atomic add for double */
};

static struct metric metrics_table[METRICS_MAX];
static _Atomic int metrics_n;
static struct metric *proc_rss, *proc_cpu, *proc_fds, *proc_start;

static uint64_t d2u(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static double u2d(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

struct metric *metrics_register(const char *name, const char *help, enum metrics_type type,
                                const char *labels)
{
    int n = atomic_load(&metrics_n);
    if (n >= METRICS_MAX)
        return NULL;
    struct metric *m = &metrics_table[n];
    m->name = name;
    m->help = help;
    m->labels = labels;
    m->type = type;
    atomic_store(&m->bits, d2u(0));
    atomic_store(&metrics_n, n + 1);
    return m;
}

void metrics_set(struct metric *m, double v)
{
    if (m)
        atomic_store(&m->bits, d2u(v));
}

void metrics_add(struct metric *m, double v)
{
    if (!m)
        return;
    uint64_t old = atomic_load(&m->bits);
    while (!atomic_compare_exchange_weak(&m->bits, &old, d2u(u2d(old) + v)))
        ;
}

double metrics_get(const struct metric *m)
{
    return m ? u2d(atomic_load(&((struct metric *)(uintptr_t)m)->bits)) : 0;
}

void metrics_update_process(void)
{
    if (!proc_rss) {
        proc_rss = metrics_register("process_resident_memory_bytes",
                                    "Resident memory size in bytes.", METRICS_GAUGE, NULL);
        proc_cpu = metrics_register("process_cpu_seconds_total",
                                    "Total user and system CPU time spent in seconds.",
                                    METRICS_COUNTER, NULL);
        proc_fds = metrics_register("process_open_fds", "Number of open file descriptors.",
                                    METRICS_GAUGE, NULL);
        proc_start = metrics_register("process_start_time_seconds",
                                      "Start time of the process since unix epoch in seconds.",
                                      METRICS_GAUGE, NULL);
        metrics_set(proc_start, (double)time(NULL));
    }
    long pages_total = 0, pages_rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages_total, &pages_rss) != 2)
            pages_rss = 0;
        fclose(f);
    }
    metrics_set(proc_rss, (double)pages_rss * (double)sysconf(_SC_PAGESIZE));
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        metrics_set(proc_cpu, (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
                                  (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6);
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int n = 0;
        while (readdir(d))
            n++;
        closedir(d);
        metrics_set(proc_fds, n > 3 ? n - 3 : 0); /* ".", ".." and the DIR's own fd */
    }
}

/* Appends to a growing buffer; returns -1 when out of memory. */
static int buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return 0;
        }
        size_t ncap = *cap * 2 + (size_t)n;
        char *p = realloc(*buf, ncap);
        if (!p)
            return -1;
        *buf = p;
        *cap = ncap;
    }
}

static void fmt_value(char *out, size_t len, double v)
{
    if (v == (double)(long long)v && v < 9e15 && v > -9e15)
        snprintf(out, len, "%lld", (long long)v);
    else
        snprintf(out, len, "%.15g", v);
}

char *metrics_render(size_t *len)
{
    size_t cap = 4096;
    char *buf = malloc(cap);
    *len = 0;
    if (!buf)
        return NULL;
    buf[0] = 0;
    int n = atomic_load(&metrics_n);
    for (int i = 0; i < n; i++) {
        const struct metric *m = &metrics_table[i];
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(metrics_table[j].name, m->name) == 0;
        if (seen)
            continue;
        if (buf_printf(&buf, len, &cap, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                       m->type == METRICS_COUNTER ? "counter" : "gauge"))
            goto oom;
        for (int j = i; j < n; j++) {
            const struct metric *s = &metrics_table[j];
            if (strcmp(s->name, m->name) != 0)
                continue;
            char v[64];
            fmt_value(v, sizeof v, metrics_get(s));
            if (buf_printf(&buf, len, &cap, "%s%s%s%s %s\n", s->name, s->labels ? "{" : "",
                           s->labels ? s->labels : "", s->labels ? "}" : "", v))
                goto oom;
        }
    }
    return buf;
oom:
    free(buf);
    return NULL;
}

void metrics_reset(void)
{
    atomic_store(&metrics_n, 0);
    proc_rss = proc_cpu = proc_fds = proc_start = NULL;
}
