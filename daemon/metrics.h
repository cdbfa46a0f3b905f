/*
 * metrics — the process's Prometheus registry: counters and gauges registered at start-up
 * (single-threaded), updated from any thread (atomics), rendered in the text exposition
 * format (version 0.0.4) for GET /metrics.
 */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include <stddef.h>

#define METRICS_MAX 128

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE };

struct metric;

/* Registers a series: name, help, type and its labels ('code="200"', or NULL). Series of one
 * name are rendered under one HELP/TYPE header. NULL when the registry is full. */
struct metric *metrics_register(const char *name, const char *help, enum metrics_type type,
                                const char *labels);
void metrics_set(struct metric *m, double v);
void metrics_add(struct metric *m, double v);
double metrics_get(const struct metric *m);

/* Histograms (cumulative buckets, _sum and _count), e.g. latencies. bounds: n increasing upper
 * bounds (at most METRICS_BUCKETS_MAX); "+Inf" is implied. NULL when the registry is full. */
#define METRICS_BUCKETS_MAX 16
#define METRICS_HIST_MAX    16
struct metrics_histogram;
struct metrics_histogram *metrics_register_histogram(const char *name, const char *help,
                                                     const char *labels, const double *bounds,
                                                     int n);
void metrics_observe(struct metrics_histogram *h, double v);
/* Observations so far (tests). */
long long metrics_histogram_count(const struct metrics_histogram *h);

/* Refreshes the process_* gauges (resident memory, CPU seconds, open fds). */
void metrics_update_process(void);

/* Renders every series into a malloc'ed string (*len bytes without the NUL). NULL when out
 * of memory. */
char *metrics_render(size_t *len);

/* Forgets every series (tests). */
void metrics_reset(void);

#endif
