/*
 * resize — see resize.h. Shape letters: C channels, T_in / T_out frames, k kernel, s stride.
 */
#include "kernels/resize.h"

#include <assert.h>
#include <math.h>
#include <string.h>

int64_t resize_avg_pool_out_len(int64_t t, int kernel, int stride, int pad_right)
{
    if (t < 1 || kernel < 1 || stride < 1 || pad_right < 0 || t + pad_right < kernel)
        return 0;
    return (t + pad_right - kernel) / stride + 1;
}

void resize_avg_pool(float *out, const float *x, int64_t c, int64_t t, int kernel, int stride,
                     int pad_right)
{
    int64_t t_out = resize_avg_pool_out_len(t, kernel, stride, pad_right);
    assert(t_out > 0);
    for (int64_t ch = 0; ch < c; ch++) {
        const float *xr = x + ch * t;
        float *o = out + ch * t_out;
        for (int64_t j = 0; j < t_out; j++) {
            int64_t t0 = j * stride, t1 = t0 + kernel < t ? t0 + kernel : t; /* zeros add 0 */
            float sum = 0.0f;
            for (int64_t i = t0; i < t1; i++)
                sum += xr[i];
            o[j] = sum / (float)kernel;
        }
    }
}

void resize_avg_pool_tc(float *out, const float *x, int64_t t, int64_t c, int kernel, int stride,
                        int pad_right)
{
    int64_t t_out = resize_avg_pool_out_len(t, kernel, stride, pad_right);
    assert(t_out > 0);
    for (int64_t j = 0; j < t_out; j++) {
        int64_t t0 = j * stride, t1 = t0 + kernel < t ? t0 + kernel : t;
        float *o = out + j * c;
        /* row-wise sums in the same time order as resize_avg_pool, vectorised over C */
        memcpy(o, x + t0 * c, (size_t)c * sizeof *o);
        for (int64_t i = t0 + 1; i < t1; i++) {
            const float *xr = x + i * c;
            for (int64_t ch = 0; ch < c; ch++)
                o[ch] += xr[ch];
        }
        for (int64_t ch = 0; ch < c; ch++)
            o[ch] /= (float)kernel;
    }
}

/* floorf(dst * scale) clamped, with PyTorch's float32 arithmetic. */
static int64_t nearest_scaled(int64_t dst, float scale, int64_t t_in)
{
    int64_t src = (int64_t)floorf((float)dst * scale);
    return src < t_in - 1 ? src : t_in - 1;
}

int64_t resize_nearest_index(int64_t dst, int64_t t_in, int64_t t_out)
{
    if (t_out == t_in)
        return dst;
    if (t_out == 2 * t_in)
        return dst >> 1;
    return nearest_scaled(dst, (float)t_in / (float)t_out, t_in);
}

void resize_nearest(float *out, const float *x, int64_t c, int64_t t_in, int64_t t_out)
{
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t t = 0; t < t_out; t++)
            out[ch * t_out + t] = x[ch * t_in + resize_nearest_index(t, t_in, t_out)];
}

void resize_nearest_tc(float *out, const float *x, int64_t t_in, int64_t c, int64_t t_out)
{
    for (int64_t t = 0; t < t_out; t++)
        memcpy(out + t * c, x + resize_nearest_index(t, t_in, t_out) * c, (size_t)c * sizeof *out);
}

void resize_repeat(float *out, const float *x, int64_t c, int64_t t_in, int factor)
{
    int64_t t_out = t_in * factor;
    float scale = (float)(1.0 / factor);
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t t = 0; t < t_out; t++)
            out[ch * t_out + t] = x[ch * t_in + (factor == 1   ? t
                                                 : factor == 2 ? t >> 1
                                                               : nearest_scaled(t, scale, t_in))];
}
