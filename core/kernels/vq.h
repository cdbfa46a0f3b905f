/*
 * vq — nearest codebook row by squared L2 distance (the speech tokenizer's bottleneck, §3.3).
 *
 * Shape letters: N query vectors, J codebook rows, D dimensions. x is [N][D], the codebook
 * [J][D] (f32), both row-major.
 *
 * The distance is computed with the reference's formula and operation order, because on
 * near-ties the rounding decides the token: the reference (GV `vector_quantize`) forms
 *   dist[n][j] = (||c_j||^2 + ||x_n||^2) - 2 * (x_n . c_j)
 * in float32 as one addmm (C = bias, alpha = -2, beta = 1) and takes torch.min's first index
 * of the smallest value. Keeping ||x||^2 (which does not change the exact argmin) matters: it
 * sets the rounding grain, so candidates closer than that grain tie exactly and go to the
 * lower index as in the reference.
 * parley computes all distances with that formula as sgemm tiles (C = the float32 sum of the
 * norms, alpha -2, beta 1), then re-ranks the few candidates within ~2^-17 (||x||^2 +
 * max ||c||^2) of each minimum with the same formula on a dot product accumulated in double
 * and rounded once, lowest index first. So exact ties (duplicate rows) always resolve to the
 * lowest index, and the result does not depend on BLAS tiling, batch size or thread count.
 * What cannot match the reference bit for bit is its own dot-product rounding (cuBLAS or
 * MKL summation order): candidates whose exact distances differ by less than about
 * 1e-7 * (||x||^2 + ||c||^2) may resolve differently there.
 * The squared norms are float32 squares summed in double and rounded once (torch.sum's
 * cascade is about as accurate).
 * NaN distances never win: a row of NaN gets index 0.
 */
#ifndef PARLEY_VQ_H
#define PARLEY_VQ_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/pool.h"

/* norms[j] = ||codebook[j]||^2; once per codebook, at load. */
void vq_codebook_norms(float *norms, const float *codebook, int64_t j, int64_t d);

/* Floats of scratch vq_argmin needs for n vectors against j rows with n_threads threads. */
size_t vq_scratch_floats(int64_t n, int64_t j, int n_threads);

/*
 * idx[n] = argmin_j dist[n][j] (lowest j on ties); dist_out[n] = that distance (float32, the
 * formula above with the re-ranked dot product) when dist_out is not NULL. norms from
 * vq_codebook_norms. j < 2^24. scratch: vq_scratch_floats(n, j, pool_threads(pool)).
 */
void vq_argmin(struct pool *pool, int32_t *idx, float *dist_out, const float *x, int64_t n,
               const float *codebook, const float *norms, int64_t j, int64_t d, float *scratch);

#endif
