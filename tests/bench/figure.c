#include "bench/figure.h"

#include <time.h>

static FILE *json_out;

void figure_set_json(FILE *json)
{
    json_out = json;
}

void figure_emit(const char *name, double value, const char *unit, double limit)
{
    if (limit > 0)
        printf("  %-44s %10.3f %-8s (limit %.2f, %5.1f %%)\n", name, value, unit, limit,
               100.0 * value / limit);
    else
        printf("  %-44s %10.3f %s\n", name, value, unit);
    fflush(stdout);
    if (!json_out)
        return;
    fprintf(json_out, "{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"", name, value, unit);
    if (limit > 0)
        fprintf(json_out, ", \"limit\": %.6g, \"ratio\": %.4f", limit, value / limit);
    fprintf(json_out, "}\n");
    fflush(json_out);
}

double figure_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
