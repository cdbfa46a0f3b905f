/*
 * norm — RMSNorm, LayerNorm and GroupNorm in portable C.
 *
 * Shape letters: [N][D] rows for RMSNorm and LayerNorm, [C][T] for GroupNorm (see norm.h).
 *
 * These ops read each value two or three times and are bound by memory, not arithmetic, so
 * there are no per-ISA files: the sums use NORM_LANES independent partial sums, a layout the
 * compiler vectorizes with the baseline SSE2 and whose rounding is the same at every CPU
 * level.
 */
#include "kernels/norm.h"
#include "runtime/dtype.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#define NORM_LANES 16
#define NORM_GRAIN 16384 /* values per unit of the thread split */

/* NORM_LANES partial sums as four 4-float vectors (GCC/clang vector extension, SSE2 on the
 * baseline): element i goes to lane i % 16. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Adds the 16 lanes (a0 holds lanes 0-3, a1 4-7, ...) pairwise in a fixed tree. */
static float lanes_sum(v4f a0, v4f a1, v4f a2, v4f a3)
{
    v4f h = (a0 + a2) + (a1 + a3); /* lanes l + 8, then l + 4 */
    return (h[0] + h[2]) + (h[1] + h[3]);
}

/* The last n % 16 values, zero-padded to 16 (a zero adds nothing to either sum). */
static void tail16(float *t, const float *x, int64_t n)
{
    memset(t, 0, NORM_LANES * sizeof *t);
    memcpy(t, x, (size_t)n * sizeof *t);
}

static float sum(const float *x, int64_t n)
{
    v4f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
    float t[NORM_LANES];
    for (int64_t i = 0; i < n; i += NORM_LANES) {
        const float *p = x + i;
        if (n - i < NORM_LANES) {
            tail16(t, p, n - i);
            p = t;
        }
        a0 += load4(p);
        a1 += load4(p + 4);
        a2 += load4(p + 8);
        a3 += load4(p + 12);
    }
    return lanes_sum(a0, a1, a2, a3);
}

/* sum((x − c)²); the zero padding of the tail must not count, so it is padded with c. */
static float sum_sq(const float *x, int64_t n, float c)
{
    v4f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 }, cv = { c, c, c, c };
    float t[NORM_LANES];
    for (int64_t i = 0; i < n; i += NORM_LANES) {
        const float *p = x + i;
        if (n - i < NORM_LANES) {
            for (int l = 0; l < NORM_LANES; l++)
                t[l] = l < n - i ? p[l] : c;
            p = t;
        }
        v4f d0 = load4(p) - cv, d1 = load4(p + 4) - cv, d2 = load4(p + 8) - cv,
            d3 = load4(p + 12) - cv;
        a0 += d0 * d0;
        a1 += d1 * d1;
        a2 += d2 * d2;
        a3 += d3 * d3;
    }
    return lanes_sum(a0, a1, a2, a3);
}

static int64_t row_grain(int64_t dim)
{
    return dim >= NORM_GRAIN ? 1 : NORM_GRAIN / (dim > 0 ? dim : 1);
}

struct row_job {
    float *out;
    const float *x, *w, *b;
    int64_t dim;
    float eps;
    int round_bf16;
};

static void run_rms(void *arg, int64_t begin, int64_t end)
{
    const struct row_job *j = arg;
    const int64_t d = j->dim;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * d;
        float *y = j->out + r * d;
        float inv = 1.0f / sqrtf(sum_sq(x, d, 0.0f) / (float)d + j->eps);
        if (j->round_bf16)
            for (int64_t i = 0; i < d; i++)
                y[i] = dtype_round_bf16(j->w[i] * (x[i] * inv));
        else
            for (int64_t i = 0; i < d; i++)
                y[i] = j->w[i] * (x[i] * inv);
    }
}

void norm_rms(struct pool *pool, float *out, const float *x, const float *w, int64_t n, int64_t dim,
              float eps, int round_bf16)
{
    assert(dim > 0);
    struct row_job j = { out, x, w, NULL, dim, eps, round_bf16 };
    pool_for(pool, n, row_grain(dim), run_rms, &j);
}

static void run_layer(void *arg, int64_t begin, int64_t end)
{
    const struct row_job *j = arg;
    const int64_t d = j->dim;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * d;
        float *y = j->out + r * d;
        float mean = sum(x, d) / (float)d;
        float rstd = 1.0f / sqrtf(sum_sq(x, d, mean) / (float)d + j->eps);
        for (int64_t i = 0; i < d; i++) {
            float v = (x[i] - mean) * rstd;
            if (j->w)
                v *= j->w[i];
            if (j->b)
                v += j->b[i];
            y[i] = v;
        }
    }
}

void norm_layer(struct pool *pool, float *out, const float *x, const float *w, const float *b,
                int64_t n, int64_t dim, float eps)
{
    assert(dim > 0);
    struct row_job j = { out, x, w, b, dim, eps, 0 };
    pool_for(pool, n, row_grain(dim), run_layer, &j);
}

struct group_job {
    float *out;
    const float *x, *w, *b;
    int64_t n_t, ch_per_group;
    float eps;
};

static void run_group(void *arg, int64_t begin, int64_t end)
{
    const struct group_job *j = arg;
    const int64_t t = j->n_t, cg = j->ch_per_group;
    const double count = (double)cg * (double)t;
    for (int64_t g = begin; g < end; g++) {
        const float *x = j->x + g * cg * t;
        float *y = j->out + g * cg * t;
        double s = 0;
        for (int64_t c = 0; c < cg; c++)
            s += sum(x + c * t, t);
        float mean = (float)(s / count);
        s = 0;
        for (int64_t c = 0; c < cg; c++)
            s += sum_sq(x + c * t, t, mean);
        float rstd = 1.0f / sqrtf((float)(s / count) + j->eps);
        for (int64_t c = 0; c < cg; c++) {
            int64_t ch = g * cg + c;
            float w = j->w ? j->w[ch] : 1.0f, b = j->b ? j->b[ch] : 0.0f;
            for (int64_t i = 0; i < t; i++)
                y[c * t + i] = (x[c * t + i] - mean) * rstd * w + b;
        }
    }
}

void norm_group(struct pool *pool, float *out, const float *x, const float *w, const float *b,
                int64_t n_ch, int64_t n_t, int n_groups, float eps)
{
    assert(n_groups > 0 && n_ch % n_groups == 0);
    struct group_job j = { out, x, w, b, n_t, n_ch / n_groups, eps };
    pool_for(pool, n_groups, row_grain(j.ch_per_group * n_t), run_group, &j);
}
