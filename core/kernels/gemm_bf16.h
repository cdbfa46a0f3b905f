/*
 * gemm_bf16 — bf16 weights × many activation rows with bf16 dot products (AVX-512 BF16).
 *
 * Shape letters: W [M][K] bf16 (row m at w + m * w_stride bytes), x [N][K] f32, y [N][M] f32.
 *
 *   y[n][m] = sum_k x[n][k] * W[m][k]  (+ bias[m])
 *
 * Numerics. vdpbf16ps multiplies bf16 by bf16 (the product is exact in f32) and adds into an
 * f32 accumulator, so x has to be bf16. Each x is split as hi = bf16(x) (round to nearest
 * even, as PyTorch's .to(torch.bfloat16)) plus lo = bf16(x - hi), and both terms are
 * multiplied into the same f32 accumulator: x is used to about 2^-17 relative (f32 sgemm:
 * 2^-24), and the sums are f32 throughout. A row whose x values are bf16 values already has
 * lo = 0 and costs one pass instead of two; the reference LM (GLM-4-Voice in bf16 PyTorch)
 * feeds every linear layer bf16 activations, so in a model that rounds its activations as
 * the reference does (parley's LM does after its norms) the one-pass product IS the
 * reference's rounding, with f32 sums. gemm_bf16_forward gives rows of other f32 values the
 * two-term split (half the rate); gemm_bf16_rounded rounds every x to bf16 (one pass), what
 * the LM uses for bf16 weights: it rounds the input of every linear layer as the reference's
 * bf16 activations are, and its golden reference (tests/golden/lm_ref.py) models the same.
 *
 * Two forms over W as stored, chosen by N (gemm_bf16_rounded's fixed_form: always the first),
 * and a third over weights packed once (gemm_bf16_pack, below):
 *  - dot-product (N < GEMM_BF16_PACK_MIN_ROWS: decode): a 16-lane f32 accumulator per
 *    (row, output) sums 32 K at a time; W is read in place (nothing packed), so a call with 16
 *    rows reads W once at memory speed. Up to 4 rows walk one weight row at a time start to
 *    end (as fast through memory as gemv); more rows go in tiles of GEMM_BF16_TILE_ROWS ×
 *    GEMM_BF16_TILE_COLS. Both walks do the same operations per output: the same bits.
 *  - packed (prefill): a panel of GEMM_BF16_PANEL_COLS outputs of W is gathered once per chunk
 *    of rows into K/2 × 32 bf16 pairs (vdpbf16ps's layout), x pairs are broadcast, and a tile is
 *    up to GEMM_BF16_PANEL_ROWS rows × 32 outputs, one accumulator per output.
 *  - prepacked (gemm_bf16_packed, any N): the packed form's tiles over panels made once, which
 *    a call streams from memory in order (the first group of rows prefetching). On the 2-core
 *    Zen 5 development machine, 16 rows × 4096²: 612-636 GFLOP/s on 2 threads against 418 for
 *    the dot-product tiles; one row reads W as fast as the dot-product walk.
 * x is converted (hi, lo) once per call, a chunk of rows at a time, into the scratch memory.
 *
 * Determinism: every y[n][m] is computed by the same sequence of operations whatever the
 * thread count, the split, the tile it falls in and the other rows of the batch, given the
 * form (N below or from GEMM_BF16_PACK_MIN_ROWS): a row's result depends on N only through
 * that choice. Adding lo = 0 terms leaves a sum unchanged, so a row of bf16 values gives the
 * same bits in a one- or two-pass tile. The portable kernel (other CPUs, tests) uses the same
 * split but adds in another order: results agree within rounding, not bit for bit.
 */
#ifndef PARLEY_GEMM_BF16_H
#define PARLEY_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/pool.h"

/* Most activation rows converted to bf16 per pass (the scratch holds one chunk; fewer rows for
 * large K, so that a chunk stays in L2). */
#define GEMM_BF16_CHUNK_ROWS 192
/* Register tile of the AVX-512 kernel: activation rows × weight rows. */
#define GEMM_BF16_TILE_ROWS 4
#define GEMM_BF16_TILE_COLS 6

/* Packed form (n >= GEMM_BF16_PACK_MIN_ROWS): outputs per W panel, activation rows per tile. */
#define GEMM_BF16_PACK_MIN_ROWS 64
#define GEMM_BF16_PANEL_COLS    32
#define GEMM_BF16_PANEL_ROWS    8

/* Bytes of scratch gemm_bf16_forward needs for K inputs with this many threads. */
size_t gemm_bf16_scratch_bytes(int threads, int64_t k);

/*
 * y[n][M] = bf16(x[n][K]) · Wᵀ (+ bias[M] when not NULL). w_stride: bytes between rows of W
 * (at least 2 K). scratch: at least gemm_bf16_scratch_bytes(k) bytes (any alignment), or NULL
 * to allocate it for this call (if that fails, the portable kernel runs without it: slow). Threads
 * split the M outputs. y must not overlap x.
 */
void gemm_bf16_forward(struct pool *pool, float *y, const float *x, const uint16_t *w,
                       size_t w_stride, const float *bias, int64_t n, int64_t m, int64_t k,
                       void *scratch);

/*
 * y[n][M] = bf16(x)[n][K] · Wᵀ (+ bias[M] when not NULL): x rounded to bf16 (nearest even, as
 * PyTorch's .to(torch.bfloat16)) before the product, the activations of a model that runs in
 * bf16, so every row costs one pass. Products are exact in f32, sums f32.
 *
 * fixed_form = 1: the dot-product form at any n (decode steps). Then y[r][m] is accumulated in
 * one order that depends on nothing but K: sixteen f32 lanes, lane l taking the products of
 * K = 32 j + 2 l and 32 j + 2 l + 1 (odd one first, as vdpbf16ps adds them) for j = 0, 1, ...,
 * then the lanes added as a tree (l + 8, l + 4, l + 2, l + 1). A row's result is therefore
 * bit-identical alone or in a batch of any size, with any thread count.
 * fixed_form = 0 (prefill): from GEMM_BF16_PACK_MIN_ROWS rows the packed form (sums in K
 * order, lanes = outputs): the same products, another order of the f32 sums.
 *
 * On CPUs without AVX-512 BF16 the rounded x goes through gemv (fixed_form, or n <=
 * GEMV_MAX_ROWS) or matmul: the same rounded products, f32 sums in those kernels' orders, again
 * independent of n for fixed_form. scratch as for gemm_bf16_forward (NULL: allocated here).
 */
void gemm_bf16_rounded(struct pool *pool, float *y, const float *x, const uint16_t *w,
                       size_t w_stride, const float *bias, int64_t n, int64_t m, int64_t k,
                       int fixed_form, void *scratch);

/* ---- weights prepared once: the panel layout ------------------------------------------------ */

/*
 * gemm_bf16_pack stores W as panels of GEMM_BF16_PANEL_COLS outputs, panel p holding outputs
 * [32 p, 32 p + 32): [kp = 0 .. ceil(K / 2)][32] u32, W[m][2 kp] in the low half and
 * W[m][2 kp + 1] in the high half (0 past K), outputs past M all zero. That is the layout
 * vdpbf16ps multiplies lane by lane, so a product streams each panel in order and gathers
 * nothing (the packed form above gathers it again for every call). Threads split the panels
 * (1.4 GB/s of W per thread).
 */
size_t gemm_bf16_packed_bytes(int64_t m, int64_t k);
void gemm_bf16_pack(struct pool *pool, void *dst, const uint16_t *w, size_t w_stride, int64_t m,
                    int64_t k);

/*
 * y[n][M] = bf16(x)[n][K] · Wᵀ (+ bias[M] when not NULL), W packed by gemm_bf16_pack (wp: 64-byte
 * aligned), x rounded to bf16 as in gemm_bf16_rounded. One form for every n: each output is one
 * f32 accumulator adding the K pairs in order (each pair as vdpbf16ps adds it), so a row's bits
 * depend on its own x alone, not on n, the other rows or the thread count: a decode step, a
 * batch and a prefill block give the same bits. Without AVX-512 BF16 the portable kernel adds
 * the same products in the same order, with the rounding of f32 additions (within rounding of
 * the instruction's, not bit for bit). scratch as for gemm_bf16_forward (NULL: allocated here).
 */
void gemm_bf16_packed(struct pool *pool, float *y, const float *x, const void *wp,
                      const float *bias, int64_t n, int64_t m, int64_t k, void *scratch);

/* ---- internal: the interface between gemm_bf16.c and its AVX-512 kernel file ------------- */

struct gemm_bf16_args {
    float *y; /* [n][ldy] */
    int64_t ldy;
    const float *x;         /* [n][k]: read by the portable kernel when xb is NULL */
    const uint16_t *xb;     /* [n][kpad] hi = bf16(x), zeros beyond k; NULL: split x on the fly */
    const uint16_t *xl;     /* [n][kpad] lo = bf16(x - hi) */
    const uint8_t *lo_rows; /* [n]: 1 when the row's lo is not all zero */
    int64_t kpad;           /* k rounded up to 32 */
    const uint8_t *w;       /* row m at w + m * w_stride; prepacked: panel p at w + p * w_stride */
    size_t w_stride;
    const float *bias; /* [M] or NULL */
    int64_t n, k;
    int round; /* x is bf16(x) alone (gemm_bf16_rounded): the portable kernel drops lo */
};

/* Computes outputs [m0, m1) of all n rows (dot-product form). */
void gemm_bf16_avx512_cols(const struct gemm_bf16_args *a, int64_t m0, int64_t m1);
/* Outputs [m0, m1) (m0 a multiple of GEMM_BF16_PANEL_COLS) of all n rows, W prepacked. */
void gemm_bf16_avx512_prepacked(const struct gemm_bf16_args *a, int64_t m0, int64_t m1);
/* The same in the packed form; panel: [kpad / 2][GEMM_BF16_PANEL_COLS] u32, 64-byte aligned. */
void gemm_bf16_avx512_panels(const struct gemm_bf16_args *a, int64_t m0, int64_t m1,
                             uint32_t *panel);
/* hi[kpad] = bf16(src[k]), lo[kpad] = bf16(src - hi) (round to nearest even), zeros beyond k;
 * returns 1 when some lo is not zero. */
int gemm_bf16_avx512_round(uint16_t *hi, uint16_t *lo, const float *src, int64_t k, int64_t kpad);
/* hi[kpad] = bf16(src[k]) (round to nearest even), zeros beyond k. */
void gemm_bf16_avx512_round_hi(uint16_t *hi, const float *src, int64_t k, int64_t kpad);

#endif
