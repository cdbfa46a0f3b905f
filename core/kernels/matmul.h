/*
 * matmul — weight matrix × many activation rows (prefill, encoders) and f32 × f32 products.
 *
 * Shape letters: W [M][K] (ne = {K, M}; F32, F16, BF16 or Q8_0), x [N][K] f32, y [N][M] f32.
 *
 *   y[n][m] = sum_k x[n][k] * W[m][k]  (+ bias[m])
 *
 * N <= GEMV_MAX_ROWS goes to gemv (which reads W once). Larger N with bf16 weights on a CPU
 * with AVX-512 BF16 (cpu_level() == CPU_LEVEL_AVX512) goes to gemm_bf16 (vdpbf16ps, f32 sums;
 * x split into two bf16 terms unless its values are bf16 already, see gemm_bf16.h) without
 * widening W: one pass runs at about 1.6× OpenBLAS's AVX-512 sgemm (3× its Haswell kernels),
 * two passes at half that. Otherwise larger N uses OpenBLAS sgemm: f32
 * weights directly; other types one panel of MATMUL_PANEL_ROWS rows of W at a time, widened
 * to f32 into scratch memory and multiplied while it is still in cache. Each pool thread
 * takes whole panels (its own scratch, single-threaded sgemm), so the panels' results do not
 * depend on the thread count and no second set of threads competes with the pool's.
 *
 * Speed is OpenBLAS's: on an AVX-512 machine make sure OpenBLAS runs its AVX-512 kernels
 * (openblas_get_corename() "SkylakeX"/"Cooperlake"); an environment with
 * OPENBLAS_CORETYPE=Haswell halves sgemm (measured 125 vs 242 GFLOP/s per core on Zen 5).
 */
#ifndef PARLEY_MATMUL_H
#define PARLEY_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/pool.h"
#include "runtime/tensor.h"

/* Rows of W widened per panel: large enough that sgemm runs near its peak, small enough that
 * a panel (256 × K floats: 4 MiB at K = 4096) stays in the last-level cache. */
#define MATMUL_PANEL_ROWS 256

/* Rows from which bf16 weights go to gemm_bf16 (AVX-512 BF16 CPUs only). */
#define MATMUL_BF16_MIN_ROWS 9 /* GEMV_MAX_ROWS + 1: fewer rows go to gemv */

/* Bytes of scratch matmul_forward needs for weights like w with this pool (0 for f32
 * weights): one panel per thread (bf16: at least what gemm_bf16 needs). Allocate once (at
 * model load) and pass it on each call. */
size_t matmul_scratch_bytes(const struct pool *pool, const struct tensor *w);

/*
 * y[n][M] = x[n][K] · Wᵀ (+ bias[M] when bias is not NULL), K = w->ne[0], M = tensor_nrows(w).
 * scratch: at least matmul_scratch_bytes(pool, w) bytes, 64-byte aligned preferred; NULL
 * makes matmul allocate it for this call (and if that fails, fall back to gemv in groups of
 * GEMV_MAX_ROWS rows: slower, same result within rounding). y must not overlap x.
 */
void matmul_forward(struct pool *pool, float *y, const float *x, const struct tensor *w,
                    const float *bias, int64_t n, void *scratch);

/*
 * y[n][m] = alpha * a[n][k] · B + beta * y, with B = b[m][k]ᵀ when b_trans (attention scores
 * q·kᵀ) or b[k][m] otherwise (probabilities · v). Leading dimensions in floats. OpenBLAS runs
 * with pool_threads(pool) threads.
 */
void matmul_f32(struct pool *pool, float *y, int64_t ldy, const float *a, int64_t lda,
                const float *b, int64_t ldb, int64_t n, int64_t m, int64_t k, int b_trans,
                float alpha, float beta);

#endif
