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

struct metrics_histogram {
    const char *name, *help, *labels;
    double bounds[METRICS_BUCKETS_MAX];
    int n;
    _Atomic long long counts[METRICS_BUCKETS_MAX + 1]; /* per bucket, not cumulative; last: +Inf */
    struct metric sum;
};

static struct metrics_histogram hist_table[METRICS_HIST_MAX];
static _Atomic int hist_n;
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

struct metrics_histogram *metrics_register_histogram(const char *name, const char *help,
                                                     const char *labels, const double *bounds,
                                                     int n)
{
    int k = atomic_load(&hist_n);
    if (k >= METRICS_HIST_MAX || n < 1 || n > METRICS_BUCKETS_MAX)
        return NULL;
    struct metrics_histogram *h = &hist_table[k];
    h->name = name;
    h->help = help;
    h->labels = labels;
    h->n = n;
    memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
    for (int i = 0; i <= n; i++)
        atomic_store(&h->counts[i], 0);
    atomic_store(&h->sum.bits, d2u(0));
    atomic_store(&hist_n, k + 1);
    return h;
}

void metrics_observe(struct metrics_histogram *h, double v)
{
    if (!h)
        return;
    int b = 0;
    while (b < h->n && v > h->bounds[b])
        b++;
    atomic_fetch_add(&h->counts[b], 1);
    metrics_add(&h->sum, v);
}

long long metrics_histogram_count(const struct metrics_histogram *h)
{
    long long n = 0;
    for (int i = 0; h && i <= h->n; i++)
        n += atomic_load(&((struct metrics_histogram *)(uintptr_t)h)->counts[i]);
    return n;
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

static int render_histograms(char **buf, size_t *len, size_t *cap)
{
    int n = atomic_load(&hist_n);
    for (int i = 0; i < n; i++) {
        struct metrics_histogram *h = &hist_table[i];
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(hist_table[j].name, h->name) == 0;
        if (!seen && buf_printf(buf, len, cap, "# HELP %s %s\n# TYPE %s histogram\n", h->name,
                                h->help, h->name))
            return -1;
        const char *l = h->labels ? h->labels : "", *sep = h->labels ? "," : "";
        long long cum = 0;
        for (int b = 0; b <= h->n; b++) {
            cum += atomic_load(&h->counts[b]);
            char le[64];
            if (b < h->n)
                fmt_value(le, sizeof le, h->bounds[b]);
            else
                snprintf(le, sizeof le, "+Inf");
            if (buf_printf(buf, len, cap, "%s_bucket{%s%sle=\"%s\"} %lld\n", h->name, l, sep, le,
                           cum))
                return -1;
        }
        char v[64];
        fmt_value(v, sizeof v, metrics_get(&h->sum));
        if (buf_printf(buf, len, cap, "%s_sum%s%s%s %s\n%s_count%s%s%s %lld\n", h->name,
                       h->labels ? "{" : "", l, h->labels ? "}" : "", v, h->name,
                       h->labels ? "{" : "", l, h->labels ? "}" : "", cum))
            return -1;
    }
    return 0;
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
    if (render_histograms(&buf, len, &cap))
        goto oom;
    return buf;
oom:
    free(buf);
    return NULL;
}

void metrics_reset(void)
{
    atomic_store(&metrics_n, 0);
    atomic_store(&hist_n, 0);
    proc_rss = proc_cpu = proc_fds = proc_start = NULL;
}
