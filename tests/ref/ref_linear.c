#include "ref/ref_linear.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ref_linear_f16(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    double v;
    if (exp == 31)
        v = man ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp((double)man, -24);
    else
        v = ldexp((double)(1024 + man), exp - 25);
    return sign ? -v : v;
}

double ref_linear_bf16(uint16_t b)
{
    int sign = b >> 15, exp = (b >> 7) & 255, man = b & 127;
    double v;
    if (exp == 255)
        v = man ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp((double)man, -133);
    else
        v = ldexp((double)(128 + man), exp - 134);
    return sign ? -v : v;
}

double ref_linear_weight(const struct tensor *w, int64_t m, int64_t k)
{
    const uint8_t *row = (const uint8_t *)w->data + (uint64_t)m * w->nb[1];
    switch (w->type) {
    case DTYPE_F32: {
        float f;
        memcpy(&f, row + 4 * k, 4);
        return f;
    }
    case DTYPE_F16:
    case DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, row + 2 * k, 2);
        return w->type == DTYPE_F16 ? ref_linear_f16(h) : ref_linear_bf16(h);
    }
    case DTYPE_Q8_0: {
        const uint8_t *block = row + 34 * (k / 32); /* f16 scale, then 32 int8 */
        uint16_t d;
        memcpy(&d, block, 2);
        int8_t q;
        memcpy(&q, block + 2 + k % 32, 1);
        return ref_linear_f16(d) * q;
    }
    }
    return NAN;
}

void ref_linear(double *y, double *yabs, const float *x, const struct tensor *w, const float *bias,
                int64_t n)
{
    int64_t K = w->ne[0], M = tensor_nrows(w);
    double *wrow = malloc((size_t)K * sizeof *wrow);
    if (!wrow)
        abort(); /* test code: no way to report it */
    for (int64_t m = 0; m < M; m++) {
        for (int64_t k = 0; k < K; k++)
            wrow[k] = ref_linear_weight(w, m, k);
        for (int64_t i = 0; i < n; i++) {
            double s = bias ? bias[m] : 0.0, a = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)x[i * K + k] * wrow[k];
                s += p;
                a += fabs(p);
            }
            y[i * M + m] = s;
            if (yabs)
                yabs[i * M + m] = a;
        }
    }
    free(wrow);
}

double ref_linear_round_bf16(float x)
{
    if (x == 0 || !isfinite(x))
        return x;
    int e;
    frexp((double)x, &e); /* |x| in [2^(e-1), 2^e): 8 significant bits below 2^e */
    double q = ldexp(1.0, e - 8 < -133 ? -133 : e - 8);
    double r = (double)x / q, f = floor(r), d = r - f;
    if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0))
        f += 1;
    return f * q;
}

void ref_linear_rounded(double *y, double *yabs, const float *x, const struct tensor *w,
                        const float *bias, int64_t n)
{
    int64_t K = w->ne[0];
    float *xr = malloc((size_t)(n * K) * sizeof *xr);
    if (!xr)
        abort(); /* test code: no way to report it */
    for (int64_t i = 0; i < n * K; i++)
        xr[i] = (float)ref_linear_round_bf16(x[i]); /* a bf16 value: exact in f32 */
    ref_linear(y, yabs, xr, w, bias, n);
    free(xr);
}
