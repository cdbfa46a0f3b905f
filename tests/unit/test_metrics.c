/* metrics: counters, gauges and histograms rendered in Prometheus text format. */
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "test.h"

TEST(metrics_histogram_renders_cumulative_buckets)
{
    metrics_reset();
    static const double bounds[] = { 0.1, 0.5, 1 };
    struct metrics_histogram *h =
        metrics_register_histogram("t_latency_seconds", "A latency.", "stage=\"a\"", bounds, 3);
    REQUIRE(h != NULL);
    metrics_observe(h, 0.05);
    metrics_observe(h, 0.1); /* on a bound: counted in that bucket (le) */
    metrics_observe(h, 0.7);
    metrics_observe(h, 9);
    CHECK(metrics_histogram_count(h) == 4);
    size_t len;
    char *text = metrics_render(&len);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "# TYPE t_latency_seconds histogram\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_bucket{stage=\"a\",le=\"0.1\"} 2\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_bucket{stage=\"a\",le=\"0.5\"} 2\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_bucket{stage=\"a\",le=\"1\"} 3\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_bucket{stage=\"a\",le=\"+Inf\"} 4\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_sum{stage=\"a\"} 9.85\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_count{stage=\"a\"} 4\n") != NULL);
    free(text);
    CHECK(metrics_register_histogram("x", "x", NULL, bounds, 0) == NULL);
    metrics_reset();
}

TEST(metrics_counters_and_gauges)
{
    metrics_reset();
    struct metric *c = metrics_register("t_total", "Things.", METRICS_COUNTER, "kind=\"x\"");
    struct metric *g = metrics_register("t_now", "Now.", METRICS_GAUGE, NULL);
    metrics_add(c, 2);
    metrics_add(c, 0.5);
    metrics_set(g, 7);
    size_t len;
    char *text = metrics_render(&len);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "# TYPE t_total counter\nt_total{kind=\"x\"} 2.5\n") != NULL);
    CHECK(strstr(text, "# TYPE t_now gauge\nt_now 7\n") != NULL);
    CHECK(strlen(text) == len);
    free(text);
    metrics_reset();
}
