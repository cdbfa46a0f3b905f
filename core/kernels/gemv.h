/*
 * gemv — weight-matrix × a few activation rows: the decode path of every linear layer.
 *
 * Shape letters: W is a weight tensor of M output rows × K inputs (ne = {K, M}, any of F32,
 * F16, BF16, Q8_0, read in place from its storage); x is [R][K] f32 activations, one row per
 * session in a batched decode step (R = n_rows); y is [R][M] f32.
 *
 *   y[r][m] = sum_k x[r][k] * W[m][k]  (+ bias[m])
 *
 * Decode is memory-bound: the kernels read each weight row once for all R activation rows,
 * so a step for R sessions costs about what one session costs until the FMA units saturate
 * (around R = 4..8). Activations stay f32 (never quantized); sums are f32.
 *
 * Determinism: every y[r][m] is computed by one thread with the same sequence of operations
 * whatever the thread count, the split of rows between threads and the number R of rows in
 * the batch: a session's output does not depend on who it is batched with. Different CPU
 * levels give (slightly) different results.
 *
 * The kernels keep their working buffers on the stack (up to about 64 KiB per call).
 */
#ifndef PARLEY_GEMV_H
#define PARLEY_GEMV_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/dtype.h"
#include "runtime/pool.h"
#include "runtime/tensor.h"

/* Activation rows one pass over W serves; larger n_rows are processed in groups of this many
 * rows (W is then read once per group: use matmul_forward for prefill). */
#define GEMV_MAX_ROWS 8

/* 1 when gemv (and matmul) can compute with weights of type t. */
int gemv_supports(enum dtype t);

/*
 * y[n_rows][M] = x[n_rows][K] · Wᵀ (+ bias[M] when bias is not NULL), with K = w->ne[0] and
 * M = tensor_nrows(w); n_rows = 0 does nothing. y must not overlap x. Threads split the M
 * output rows. For n_rows > 1, x rows 64-byte aligned run fastest (others are copied a block
 * at a time).
 */
void gemv_forward(struct pool *pool, float *y, const float *x, const struct tensor *w,
                  const float *bias, int n_rows);

/* The same with row strides (in floats) for y and x, for activations that are not packed. */
void gemv_forward_strided(struct pool *pool, float *y, int64_t ldy, const float *x, int64_t ldx,
                          const struct tensor *w, const float *bias, int n_rows);

/* Converts n elements (whole blocks) of type t to f32 with the best kernel of this CPU: the
 * panel dequantization of matmul, and embedding lookups. */
void gemv_dequant(float *dst, const void *src, enum dtype t, int64_t n);

/* ---- internal: the interface between gemv.c and its per-ISA kernel files -------------- */

struct gemv_args {
    float *y; /* [n_rows][ldy] */
    int64_t ldy;
    const float *x; /* [n_rows][ldx] */
    int64_t ldx;
    const uint8_t *w; /* row m at w + m * w_stride */
    uint64_t w_stride;
    const float *bias; /* [M] or NULL */
    int64_t k;
    int n_rows; /* 1..GEMV_MAX_ROWS */
    enum dtype type;
};

/* Compute output rows [m0, m1) for all n_rows activation rows. */
void gemv_avx2_rows(const struct gemv_args *a, int64_t m0, int64_t m1);
void gemv_avx512_rows(const struct gemv_args *a, int64_t m0, int64_t m1);
void gemv_avx2_dequant(float *dst, const void *src, enum dtype t, int64_t n);
void gemv_avx512_dequant(float *dst, const void *src, enum dtype t, int64_t n);

#endif
