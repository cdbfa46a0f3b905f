#include "bench/figure.h"

#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/blas.h"
#include "runtime/clock.h"

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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double figure_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double figure_sgemm_rate(int threads)
{
    const int n = 2048;
    float *a = malloc((size_t)n * n * 4), *w = malloc((size_t)n * n * 4),
          *c = malloc((size_t)n * n * 4);
    double g = 0;
    if (a && w && c) {
        for (int64_t i = 0; i < (int64_t)n * n; i++) {
            a[i] = (float)(i % 13) * 0.01f;
            w[i] = (float)(i % 7) * 0.01f;
        }
        blas_threads(threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, w, n, 0, c, n);
        double t[3];
        for (int r = 0; r < 3; r++) {
            double t0 = clock_seconds();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, w, n, 0, c, n);
            t[r] = clock_seconds() - t0;
        }
        g = 2.0 * n * n * (double)n / figure_median(t, 3) / 1e9;
        blas_threads(1);
    }
    free(a);
    free(w);
    free(c);
    return g;
}
