/*
 * ref_ops — the plain references (see ref_ops.h). Everything is a direct transcription of
 * a formula, in double, with no attention to speed.
 */
#include "ref/ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ref_ops_gelu(double x)
{
    return x * 0.5 * erfc(-x / sqrt(2.0));
}

double ref_ops_silu(double x)
{
    return x / (1.0 + exp(-x));
}

double ref_ops_mish(double x)
{
    double sp = x > 30 ? x : log1p(exp(x));
    return x * tanh(sp);
}

double ref_ops_elu(double x, double alpha)
{
    return x > 0 ? x : alpha * expm1(x);
}

double ref_ops_leaky_relu(double x, double slope)
{
    return x > 0 ? x : slope * x;
}

double ref_ops_snake(double x, double alpha)
{
    double s = sin(alpha * x);
    return x + s * s / (alpha + 1e-9);
}

double ref_ops_bf16(float f)
{
    if (f != f)
        return f;
    /* the two bf16 neighbours by truncating the f32 bit pattern, then the nearer one */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t lo_bits = u & 0xffff0000u, hi_bits = lo_bits + 0x10000u;
    float lo, hi;
    memcpy(&lo, &lo_bits, 4);
    memcpy(&hi, &hi_bits, 4);
    double dlo = fabs((double)f - lo), dhi = fabs((double)hi - f);
    if (dlo < dhi)
        return lo;
    if (dhi < dlo)
        return hi;
    return (lo_bits >> 16) % 2 == 0 ? lo : hi; /* tie: even mantissa */
}

void ref_ops_rms_norm(double *out, const float *x, const float *w, int64_t n, int64_t dim,
                      double eps)
{
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * dim;
        double ss = 0;
        for (int64_t i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int64_t i = 0; i < dim; i++)
            out[r * dim + i] = xr[i] * inv * w[i];
    }
}

void ref_ops_layer_norm(double *out, const float *x, const float *w, const float *b, int64_t n,
                        int64_t dim, double eps)
{
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * dim;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < dim; i++)
            mean += xr[i];
        mean /= dim;
        for (int64_t i = 0; i < dim; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        var /= dim;
        for (int64_t i = 0; i < dim; i++)
            out[r * dim + i] =
                (xr[i] - mean) / sqrt(var + eps) * (w ? w[i] : 1.0) + (b ? b[i] : 0.0);
    }
}

void ref_ops_group_norm(double *out, const float *x, const float *w, const float *b, int64_t n_ch,
                        int64_t n_t, int n_groups, double eps)
{
    int64_t cg = n_ch / n_groups;
    for (int g = 0; g < n_groups; g++) {
        double mean = 0, var = 0, count = (double)cg * n_t;
        for (int64_t c = g * cg; c < (g + 1) * cg; c++)
            for (int64_t t = 0; t < n_t; t++)
                mean += x[c * n_t + t];
        mean /= count;
        for (int64_t c = g * cg; c < (g + 1) * cg; c++)
            for (int64_t t = 0; t < n_t; t++)
                var += (x[c * n_t + t] - mean) * (x[c * n_t + t] - mean);
        var /= count;
        for (int64_t c = g * cg; c < (g + 1) * cg; c++)
            for (int64_t t = 0; t < n_t; t++)
                out[c * n_t + t] =
                    (x[c * n_t + t] - mean) / sqrt(var + eps) * (w ? w[c] : 1.0) + (b ? b[c] : 0.0);
    }
}

/* the block of a (non-negative) position */
static int64_t block_of(int64_t a, int64_t b)
{
    return a / b;
}

int ref_ops_visible(const struct ref_ops_mask *m, int64_t i, int64_t j)
{
    if (!m)
        return 1;
    int64_t qpos = m->pos0 + i;
    int ok = 1;
    if (m->kind == 1)
        ok = j <= qpos;
    else if (m->kind == 2)
        ok = j <= qpos || block_of(j, m->block) == block_of(qpos, m->block);
    if (m->n_valid > 0 && j >= m->n_valid)
        ok = 0;
    return ok;
}

void ref_ops_softmax(double *out, const float *x, int64_t n_rows, int64_t n,
                     const struct ref_ops_mask *m)
{
    for (int64_t r = 0; r < n_rows; r++) {
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; j++)
            if (ref_ops_visible(m, r, j) && x[r * n + j] > mx)
                mx = x[r * n + j];
        for (int64_t j = 0; j < n; j++) {
            double e = ref_ops_visible(m, r, j) && mx > -INFINITY ? exp(x[r * n + j] - mx) : 0;
            out[r * n + j] = e;
            sum += e;
        }
        for (int64_t j = 0; j < n; j++)
            out[r * n + j] = sum > 0 ? out[r * n + j] / sum : 0;
    }
}

void ref_ops_attention(double *out, const float *q, const double *k, const double *v, int64_t n_q,
                       int64_t n_kv, int n_head, int n_kv_head, int head_dim, double scale,
                       double bias, const struct ref_ops_mask *m)
{
    double *sc = malloc((size_t)(n_kv > 0 ? n_kv : 1) * sizeof *sc);
    if (!sc)
        abort();
    int group = n_head / n_kv_head;
    for (int64_t i = 0; i < n_q; i++) {
        for (int h = 0; h < n_head; h++) {
            int g = h / group;
            const float *qv = q + (i * n_head + h) * head_dim;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < n_kv; j++) {
                const double *kv = k + (j * n_kv_head + g) * head_dim;
                double dot = 0;
                for (int d = 0; d < head_dim; d++)
                    dot += qv[d] * kv[d];
                sc[j] = ref_ops_visible(m, i, j) ? dot * scale + bias : -INFINITY;
                if (sc[j] > mx)
                    mx = sc[j];
            }
            for (int64_t j = 0; j < n_kv; j++) {
                sc[j] = mx > -INFINITY && sc[j] > -INFINITY ? exp(sc[j] - mx) : 0;
                sum += sc[j];
            }
            double *o = out + (i * n_head + h) * head_dim;
            for (int d = 0; d < head_dim; d++) {
                double a = 0;
                for (int64_t j = 0; j < n_kv; j++)
                    a += sc[j] * v[(j * n_kv_head + g) * head_dim + d];
                o[d] = sum > 0 ? a / sum : 0;
            }
        }
    }
    free(sc);
}

void ref_ops_rope_cs(double *c, double *s, int64_t p, int i, int rot_dim, float base,
                     int round_bf16)
{
    /* spec §4.3c: θ_i = base^(−2i/R), angle p·θ_i, both f32; cos/sin of the f32 angle */
    float expo = (float)(2 * i) / (float)rot_dim;
    float theta = 1.0f / powf(base, expo);
    float angle = (float)p * theta;
    float cf = (float)cos((double)angle), sf = (float)sin((double)angle);
    *c = round_bf16 ? ref_ops_bf16(cf) : cf;
    *s = round_bf16 ? ref_ops_bf16(sf) : sf;
}

void ref_ops_rope(double *out, const float *x, int64_t n_rows, int n_head, int head_dim,
                  int rot_dim, float base, const int64_t *pos, int round_bf16)
{
    for (int64_t r = 0; r < n_rows; r++)
        for (int h = 0; h < n_head; h++) {
            const float *xh = x + (r * n_head + h) * head_dim;
            double *o = out + (r * n_head + h) * head_dim;
            for (int d = 0; d < head_dim; d++)
                o[d] = xh[d];
            for (int i = 0; i < rot_dim / 2; i++) {
                double c, s;
                ref_ops_rope_cs(&c, &s, pos[r], i, rot_dim, base, round_bf16);
                o[2 * i] = xh[2 * i] * c - xh[2 * i + 1] * s;
                o[2 * i + 1] = xh[2 * i + 1] * c + xh[2 * i] * s;
            }
        }
}
