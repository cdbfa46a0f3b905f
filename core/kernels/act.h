/*
 * act — elementwise activations of the four models, f32 in and out.
 *
 * Shape letters: n elements of a flat array; for Snake, x is [C][T] (channel-major, as the
 * vocoder's Conv1d activations: channel c is the row x[c*T .. c*T + T-1]) with one alpha per
 * channel; for SwiGLU, x is [R][2·D] rows holding gate then up (GLM-4's fused h→4h output)
 * and out is [R][D].
 *
 * out may equal x (in place) for every function. Threads split the elements (channels for
 * Snake, rows for SwiGLU); every element is computed the same way whatever the split, so
 * results are bit-identical for any thread count.
 *
 * Numerics: the portable level uses libm (expf, expm1f, tanhf, log1pf, sinf within ~1 ulp;
 * GELU through double erfc, so its far negative tail keeps full relative accuracy); the AVX2
 * and AVX-512 levels use the vector functions of vmath.h (relative error < 1e-6, most
 * under 3e-7: see vmath.h). Formulas, matching PyTorch's definitions:
 *   gelu(x)        = x·½·(1 + erf(x/√2))       exact (erf) form, as Whisper and the flow
 *                                               decoder use; no tanh approximation is needed
 *   silu(x)        = x / (1 + e^−x)
 *   mish(x)        = x·tanh(softplus(x))        (vector levels: x·n/(n+2), n = e^x(e^x+2))
 *   elu(x; α)      = x > 0 ? x : α·(e^x − 1)
 *   leaky(x; s)    = x > 0 ? x : s·x
 *   snake(x; α_c)  = x + (1/(α_c + 1e-9))·sin²(α_c·x)   HiFT (spec §8.3), α used directly
 *   swiglu(g, u)   = silu(g)·u                  GLM-4 MLP (spec §4.3g)
 */
#ifndef PARLEY_ACT_H
#define PARLEY_ACT_H

#include <stdint.h>

#include "runtime/pool.h"

void act_gelu(struct pool *pool, float *out, const float *x, int64_t n);
void act_silu(struct pool *pool, float *out, const float *x, int64_t n);
void act_mish(struct pool *pool, float *out, const float *x, int64_t n);
void act_tanh(struct pool *pool, float *out, const float *x, int64_t n);
void act_exp(struct pool *pool, float *out, const float *x, int64_t n);
void act_sin(struct pool *pool, float *out, const float *x, int64_t n);
void act_elu(struct pool *pool, float *out, const float *x, int64_t n, float alpha);
void act_leaky_relu(struct pool *pool, float *out, const float *x, int64_t n, float slope);

/* out, x: [C][T]; alpha: [C]. */
void act_snake(struct pool *pool, float *out, const float *x, const float *alpha, int64_t n_ch,
               int64_t n_t);

/* out: [R][D]; x: [R][2·D] (gate = x[r][0:D], up = x[r][D:2D]). out may equal x (the first
 * half of each row is overwritten after it is read). */
void act_swiglu(struct pool *pool, float *out, const float *x, int64_t n_rows, int64_t dim);

/* ---- internal: the interface between act.c and its per-ISA kernel files --------------- */

/* Unary kernels on n contiguous elements; p is the parameter of elu (alpha) and leaky
 * (slope), unused by the others. */
typedef void act_kernel(float *out, const float *x, int64_t n, float p);

struct act_kernels {
    act_kernel *gelu, *silu, *mish, *tanh, *exp, *sin, *elu, *leaky;
    /* one channel: out[t] = x[t] + inv·sin²(alpha·x[t]) */
    void (*snake)(float *out, const float *x, int64_t n, float alpha, float inv);
    void (*swiglu)(float *out, const float *gate, const float *up, int64_t n);
};

extern const struct act_kernels act_avx2_kernels, act_avx512_kernels;

#endif
