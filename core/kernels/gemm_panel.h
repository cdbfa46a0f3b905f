/*
 * gemm_panel — f32 and f16 weight matrices packed once into panels of outputs, multiplied by
 * f32 activations: one kernel for the language model's decode steps and prefill blocks.
 *
 * Shape letters: W [M][K] (ne = {K, M}), x [N][K] f32, y [N][M] f32.
 *
 *   y[n][m] = sum_k x[n][k] * W[m][k]  (+ bias[m])
 *
 * Layout (gemm_panel_pack): panel p holds outputs [32 p, 32 p + 32) as [K][32] values of the
 * weights' own type, outputs past M zero. A product broadcasts x[n][k] into the 32 outputs'
 * accumulators, so each weight is read once for up to GEMM_PANEL_ROWS rows from registers
 * and once per such group from cache (the row-major GEMV reads x once per weight row and is
 * bound by those loads).
 *
 * Numerics. Each output is one f32 accumulator: acc = fma(x[n][k], W[m][k], acc) for
 * k = 0, 1, ..., K - 1 (f16 weights widened exactly first), then acc + bias[m]. Every kernel
 * (AVX-512, portable C with fmaf) does exactly these operations, so y[n][m] is bit-identical
 * for any N, any thread count, at every CPU level: a row decoded alone, in a batch or in a
 * prefill block gets the same bits.
 */
#ifndef PARLEY_GEMM_PANEL_H
#define PARLEY_GEMM_PANEL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/dtype.h"
#include "runtime/pool.h"

#define GEMM_PANEL_COLS 32 /* outputs per panel: two vectors of 16 */
#define GEMM_PANEL_ROWS 8  /* rows of x per register tile */

/* 1 for the types gemm_panel packs (f32, f16). */
int gemm_panel_supports(enum dtype t);

/* Bytes of the packed form of an M × K matrix of type t. */
size_t gemm_panel_bytes(enum dtype t, int64_t m, int64_t k);

/* dst (64-byte aligned, gemm_panel_bytes) = W [M][K] of type t, row m at w + m * w_stride bytes,
 * in panels. Threads split the panels. */
void gemm_panel_pack(struct pool *pool, void *dst, enum dtype t, const void *w, size_t w_stride,
                     int64_t m, int64_t k);

/* y[n][M] = x[n][K] · Wᵀ (+ bias[M] when not NULL), W packed by gemm_panel_pack. Threads split
 * the panels. y must not overlap x. */
void gemm_panel_forward(struct pool *pool, float *y, const float *x, const void *wp, enum dtype t,
                        const float *bias, int64_t n, int64_t m, int64_t k);

/* ---- internal: the interface between gemm_panel.c and its AVX-512 kernel file ------------- */

struct gemm_panel_args {
    float *y;         /* [n][m] */
    const float *x;   /* [n][k] */
    const uint8_t *w; /* panel p at w + p * panel_bytes */
    size_t panel_bytes;
    const float *bias; /* [m] or NULL */
    int64_t n, m, k;
    enum dtype type;
};

/* Panels [p0, p1) for all n rows. */
void gemm_panel_avx512_panels(const struct gemm_panel_args *a, int64_t p0, int64_t p1);

#endif
