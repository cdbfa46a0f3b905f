/*
 * gemm_q8 — q8_0 weights × activations quantized to q8_0 blocks, integer dot products.
 *
 * Shape letters: W [M][K] q8_0 (row m at w + m * w_stride bytes: K / 32 blocks of an f16 scale
 * then 32 int8), x [N][K] f32, y [N][M] f32. K is a multiple of 32.
 *
 * Numerics. Each row of x is quantized per block of 32 as q8_0 activations are: d = max|x| / 127
 * (f32 division), q = round(x / d) (f32 division, round half to EVEN, the default rounding of
 * the FPU, PyTorch's torch.round), q = 0 where d = 0; d stays f32. Then per (row, output, block)
 * isum = sum_i q_x[i] * q_w[i] is exact in int32, and
 *
 *   y[n][m] = sum over blocks b of (d_w[b] * d_x[b]) * isum[b]   (+ bias[m])
 *
 * added in one fixed order: sixteen f32 lanes, lane l taking blocks b = 16 j + l for
 * j = 0, 1, ... as acc = fma(d_w * d_x, (float)isum, acc) (blocks beyond K / 32 add
 * fma(0, 0, acc)), then the lanes as a tree (l + 8, l + 4, l + 2, l + 1), then + bias.
 * The integer part is exact and every level (portable C with fmaf, AVX2, AVX-512 VNNI) does
 * these float operations in this order, so y is bit-identical for any N, any thread count and
 * at every CPU level: a row's result never depends on the other rows of the batch.
 *
 * Kernels. AVX-512 (VNNI, vpdpbusd): x is stored as q + 128 (unsigned), and 128 * sum(q_w)
 * per block is subtracted (computed once per weight block, shared by every row); a weight
 * row's blocks are transposed in registers 16 blocks at a time so that lane l of a vector
 * sums block l alone (no horizontal sums per row), and up to GEMM_Q8_ROWS rows share each
 * weight load: up to 8 rows straight from those registers while their x fits 32 KiB (L1),
 * more in tiles of 4 outputs × up to 5 rows over weights stored in that layout once per
 * tile. AVX2: vpmaddubsw with |q_w| and q_x carrying the sign of q_w (no saturation:
 * 2 * 128 * 127 < 2^15), horizontal sums per block.
 */
#ifndef PARLEY_GEMM_Q8_H
#define PARLEY_GEMM_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/pool.h"

/* Most rows quantized and multiplied per pass: each weight load (and, on AVX-512, each tile
 * of weights brought to the kernel's layout) serves the rows of a pass. A pass takes fewer
 * rows when that many rows of quantized x would not stay in a 512 KiB share of L2, never
 * fewer than GEMM_Q8_MIN_ROWS, and whole register tiles where it can; which pass a row is in
 * does not change its bits. */
#define GEMM_Q8_ROWS      60 /* 12 register tiles */
#define GEMM_Q8_MIN_ROWS  16
#define GEMM_Q8_TILE_ROWS 5 /* activation rows per register tile of the AVX-512 kernel */
/* Blocks per lane group (one f32 lane each). */
#define GEMM_Q8_GROUP 16
/* Outputs per tile of the AVX-512 kernel. */
#define GEMM_Q8_TILE_COLS 4

/* Bytes of scratch gemm_q8_forward needs for K inputs with this many threads. */
size_t gemm_q8_scratch_bytes(int threads, int64_t k);

/*
 * y[n][M] = Q(x)[n][K] · Wᵀ (+ bias[M] when not NULL) as described above. w_stride: bytes
 * between rows of W (at least 34 K / 32). scratch: at least gemm_q8_scratch_bytes bytes (any
 * alignment), or NULL to allocate it here (if that fails, y is left unwritten and -1 returned).
 * Threads split the M outputs. Returns 0.
 */
int gemm_q8_forward(struct pool *pool, float *y, const float *x, const void *w, size_t w_stride,
                    const float *bias, int64_t n, int64_t m, int64_t k, void *scratch);

/* One block: d and q[32] of x[32] as above (portable; the SIMD quantizers give the same). */
void gemm_q8_quantize_block(int8_t *q, float *d, const float *x);

/* ---- internal: the interface between gemm_q8.c and its kernel files ---------------------- */

struct gemm_q8_args {
    float *y; /* [n][ldy] */
    int64_t ldy;
    const uint8_t *xq; /* [n][groups * 512]: AVX-512 transposed q + 128, else q per block */
    const float *xd;   /* [n][groups * 16] d_x per block, 0 beyond K / 32 */
    const uint8_t *w;  /* row m at w + m * w_stride */
    size_t w_stride;
    const float *bias; /* [M] or NULL */
    int64_t n, k, groups;
};

/* Bytes of per-thread scratch the kernels take (64-byte aligned). */
size_t gemm_q8_thread_bytes(int64_t groups);

/* Quantizes x[k] into one row of xq / xd in the kernel's layout. */
void gemm_q8_avx512_quantize(uint8_t *xq, float *xd, const float *x, int64_t k, int64_t groups);
/* Outputs [m0, m1) of all n rows; scratch: gemm_q8_thread_bytes, 64-byte aligned. */
void gemm_q8_avx512_cols(const struct gemm_q8_args *a, int64_t m0, int64_t m1, void *scratch);
void gemm_q8_avx2_cols(const struct gemm_q8_args *a, int64_t m0, int64_t m1, void *scratch);

#endif
