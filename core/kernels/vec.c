/*
 * vec — plain loops; each is one f32 operation per element, which compilers vectorize with
 * the baseline SSE2 where they can prove the pointers safe and leave scalar otherwise, with
 * identical results either way.
 *
 * Shape letters as in vec.h: n elements, [N][D] rows, [C][T] channels.
 */
#include "kernels/vec.h"

#include <string.h>

void vec_copy(float *out, const float *x, int64_t n)
{
    if (out != x && n > 0)
        memmove(out, x, (size_t)n * sizeof *out);
}

void vec_add(float *out, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void vec_sub(float *out, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] - b[i];
}

void vec_mul(float *out, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] * b[i];
}

void vec_scale(float *out, const float *x, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] * s;
}

void vec_add_scaled(float *out, const float *a, const float *b, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float t = b[i] * s; /* rounded before the add: never contracted into an FMA */
        out[i] = a[i] + t;
    }
}

void vec_add_bias(float *out, const float *x, const float *bias, int64_t n_rows, int64_t dim)
{
    for (int64_t r = 0; r < n_rows; r++)
        vec_add(out + r * dim, x + r * dim, bias, dim);
}

void vec_add_bias_ch(float *out, const float *x, const float *bias, int64_t n_ch, int64_t n_t)
{
    for (int64_t c = 0; c < n_ch; c++) {
        const float b = bias[c];
        float *o = out + c * n_t;
        const float *xc = x + c * n_t;
        for (int64_t t = 0; t < n_t; t++)
            o[t] = xc[t] + b;
    }
}
