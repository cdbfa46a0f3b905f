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

/* x rounded to the nearest bf16 value, ties to even (PyTorch's .to(torch.bfloat16)), for finite x
 * inside the bf16 range; computed in double from the definition (8 significant bits, subnormal
 * quantum 2^-133). */
double ref_linear_round_bf16(float x);

/* ref_linear with every x first rounded to bf16 (ref_linear_round_bf16): the product of
 * gemm_bf16_rounded; yabs as in ref_linear, bias included in neither sum of magnitudes. */
void ref_linear_rounded(double *y, double *yabs, const float *x, const struct tensor *w,
                        const float *bias, int64_t n);

#endif
