/*
 * ref_linear — naive double-precision references for gemv/matmul and the dtype decoders,
 * written independently of the fast code (no use of dtype.c).
 *
 * Shape letters: W [M][K] (ne = {K, M}) of any supported type, x [N][K] f32, y [N][M].
 */
#ifndef PARLEY_REF_LINEAR_H
#define PARLEY_REF_LINEAR_H

#include <stdint.h>

#include "runtime/tensor.h"

/* The exact value of an f16 / bf16 bit pattern (NaN for NaN patterns). */
double ref_linear_f16(uint16_t h);
double ref_linear_bf16(uint16_t b);

/* The exact value of weight element W[m][k]. */
double ref_linear_weight(const struct tensor *w, int64_t m, int64_t k);

/* y[n][m] = sum_k x[n][k] * W[m][k] (+ bias[m]) in double; yabs (when not NULL) receives
 * sum_k |x[n][k] * W[m][k]|, the scale of the rounding error a float sum can make. */
void ref_linear(double *y, double *yabs, const float *x, const struct tensor *w, const float *bias,
                int64_t n);

#endif
