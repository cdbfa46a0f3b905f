/*
 * ref_conv — see ref_conv.h. Every loop here is the textbook definition, in double.
 */
#include "ref/ref_conv.h"

#include <math.h>
#include <stdlib.h>

static int64_t reflect_index(int64_t i, int64_t t)
{
    if (i < 0)
        return -i;
    if (i >= t)
        return 2 * (t - 1) - i;
    return i;
}

int64_t ref_conv_1d(float *out, const float *x, const float *w, const float *bias, int c_in,
                    int c_out, int k, int stride, int dilation, int pad_left, int pad_right,
                    int groups, int reflect, int64_t t_in)
{
    int64_t padded = t_in + pad_left + pad_right, span = (int64_t)dilation * (k - 1) + 1;
    if (padded < span)
        return 0;
    int64_t t_out = (padded - span) / stride + 1;
    int cig = c_in / groups, cog = c_out / groups;
    for (int co = 0; co < c_out; co++) {
        int g = co / cog;
        for (int64_t t = 0; t < t_out; t++) {
            double acc = bias ? bias[co] : 0.0;
            for (int ci = 0; ci < cig; ci++)
                for (int kk = 0; kk < k; kk++) {
                    int64_t src = t * stride + (int64_t)kk * dilation - pad_left;
                    double v;
                    if (reflect)
                        v = x[(int64_t)(g * cig + ci) * t_in + reflect_index(src, t_in)];
                    else if (src < 0 || src >= t_in)
                        v = 0.0;
                    else
                        v = x[(int64_t)(g * cig + ci) * t_in + src];
                    acc += (double)w[((int64_t)co * cig + ci) * k + kk] * v;
                }
            out[(int64_t)co * t_out + t] = (float)acc;
        }
    }
    return t_out;
}

int64_t ref_conv_transpose_1d(float *out, const float *x, const float *w, const float *bias,
                              int c_in, int c_out, int k, int stride, int dilation, int pad,
                              int out_pad, int64_t t_in)
{
    int64_t t_out =
        (t_in - 1) * stride - 2 * (int64_t)pad + (int64_t)dilation * (k - 1) + out_pad + 1;
    if (t_out <= 0)
        return 0;
    double *acc = calloc((size_t)(c_out * t_out), sizeof *acc);
    if (!acc)
        abort();
    /* the scatter definition: input i, tap k lands on full-output i*stride + k*dilation */
    for (int ci = 0; ci < c_in; ci++)
        for (int co = 0; co < c_out; co++)
            for (int kk = 0; kk < k; kk++)
                for (int64_t i = 0; i < t_in; i++) {
                    int64_t t = i * stride + (int64_t)kk * dilation - pad;
                    if (t >= 0 && t < t_out)
                        acc[co * t_out + t] += (double)w[((int64_t)ci * c_out + co) * k + kk] *
                                               x[(int64_t)ci * t_in + i];
                }
    for (int co = 0; co < c_out; co++)
        for (int64_t t = 0; t < t_out; t++)
            out[co * t_out + t] = (float)(acc[co * t_out + t] + (bias ? bias[co] : 0.0));
    free(acc);
    return t_out;
}

int64_t ref_conv_avg_pool(float *out, const float *x, int64_t c, int64_t t, int k, int s,
                          int pad_right)
{
    if (t + pad_right < k)
        return 0;
    int64_t t_out = (t + pad_right - k) / s + 1;
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t j = 0; j < t_out; j++) {
            double sum = 0.0;
            for (int i = 0; i < k; i++) {
                int64_t src = j * s + i;
                sum += src < t ? x[ch * t + src] : 0.0;
            }
            out[ch * t_out + j] = (float)(sum / k);
        }
    return t_out;
}

int64_t ref_conv_nearest_index(int64_t dst, int64_t t_in, int64_t t_out)
{
    if (t_out == t_in)
        return dst;
    if (t_out == 2 * t_in)
        return dst / 2;
    float scale = (float)t_in / (float)t_out; /* compute_scales_value<float> */
    float src = floorf((float)dst * scale);
    int64_t i = (int64_t)src;
    return i < t_in - 1 ? i : t_in - 1;
}

void ref_conv_vq_dist(double *dist, const float *x, int64_t n, const float *codebook, int64_t j,
                      int64_t d)
{
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = 0; b < j; b++) {
            double s = 0.0;
            for (int64_t i = 0; i < d; i++) {
                double diff = (double)x[a * d + i] - codebook[b * d + i];
                s += diff * diff;
            }
            dist[a * j + b] = s;
        }
}

void ref_conv_vq_argmin(int32_t *idx, const float *x, int64_t n, const float *codebook, int64_t j,
                        int64_t d)
{
    double *dist = malloc((size_t)j * sizeof *dist);
    if (!dist)
        abort();
    for (int64_t a = 0; a < n; a++) {
        ref_conv_vq_dist(dist, x + a * d, 1, codebook, j, d);
        int64_t best = 0;
        for (int64_t b = 1; b < j; b++)
            if (dist[b] < dist[best])
                best = b;
        idx[a] = (int32_t)best;
    }
    free(dist);
}

void ref_conv_stft(float *out, const float *x, int64_t l, int n_fft, int hop, const float *window,
                   int64_t n_frames)
{
    int b = n_fft / 2 + 1;
    for (int64_t f = 0; f < n_frames; f++)
        for (int k = 0; k < b; k++) {
            double re = 0.0, im = 0.0;
            for (int i = 0; i < n_fft; i++) {
                double v = (double)window[i] * x[reflect_index(f * hop + i - n_fft / 2, l)];
                double a = -2.0 * M_PI * (double)k * i / n_fft;
                re += v * cos(a);
                im += v * sin(a);
            }
            out[(int64_t)k * n_frames + f] = (float)re;
            out[(int64_t)(b + k) * n_frames + f] = (float)im;
        }
}

int ref_conv_istft(float *out, int64_t length, const float *spec, int64_t n_frames, int n_fft,
                   int hop, const float *window)
{
    int b = n_fft / 2 + 1;
    int64_t full = n_fft + (int64_t)hop * (n_frames - 1);
    double *y = calloc((size_t)full, sizeof *y), *env = calloc((size_t)full, sizeof *env);
    double *re = malloc((size_t)n_fft * sizeof *re), *im = malloc((size_t)n_fft * sizeof *im);
    if (!y || !env || !re || !im)
        abort();
    for (int64_t f = 0; f < n_frames; f++) {
        /* full spectrum by Hermitian symmetry; DC (and Nyquist) must be real */
        for (int k = 0; k < n_fft; k++) {
            int kk = k < b ? k : n_fft - k;
            re[k] = spec[(int64_t)kk * n_frames + f];
            im[k] = spec[(int64_t)(b + kk) * n_frames + f] * (k < b ? 1.0 : -1.0);
            if (k == 0 || 2 * k == n_fft)
                im[k] = 0.0;
        }
        for (int i = 0; i < n_fft; i++) {
            double s = 0.0;
            for (int k = 0; k < n_fft; k++) {
                double a = 2.0 * M_PI * (double)k * i / n_fft;
                s += re[k] * cos(a) - im[k] * sin(a);
            }
            y[f * hop + i] += s / n_fft * window[i];
            env[f * hop + i] += (double)window[i] * window[i];
        }
    }
    int64_t start = n_fft / 2;
    int rc = 0;
    for (int64_t i = 0; i < length && start + i < full; i++)
        if (fabs(env[start + i]) < 1e-11)
            rc = -1;
    for (int64_t i = 0; i < length && rc == 0; i++)
        out[i] = start + i < full ? (float)(y[start + i] / env[start + i]) : 0.0f;
    free(y);
    free(env);
    free(re);
    free(im);
    return rc;
}
