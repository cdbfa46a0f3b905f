/*
 * gemm_bf16_avx512 — the AVX-512 BF16 kernels of gemm_bf16 (vdpbf16ps).
 *
 * Shape letters as in gemm_bf16.h: W [M][K] bf16 in place, x [N][kpad] as two bf16 rows (xb =
 * hi, xl = lo, by gemm_bf16_avx512_round), y [N][M] f32. A tile whose rows all have lo = 0
 * runs the one-pass instance; otherwise each hi product is followed by the lo product into
 * the same accumulator (two passes' work).
 *
 * Dot-product form. A tile is TR activation rows × TC weight rows: TR × TC accumulators of 16
 * f32 lanes, each vdpbf16ps adding 32 products (one 64-byte vector of W and one of x) into one
 * of them. Per step of 32 K: TC vectors of W and TR of x are loaded for TR × TC dot-products
 * (4 × 6 measured best of 4 × 6, 8 × 3, 3 × 8, 2 × 12). The weight rows are walked in blocks
 * of BLOCK_BYTES (24 rows at K = 4096, inside L2; 192-768 KiB measured within noise), and
 * within a block the activation rows in groups of TR: all groups find the block in L2. While
 * the second group runs, the next block is prefetched into L2 (the hardware prefetchers stop
 * at 4 KiB pages; this took 16 rows × 4096² from 108 to 205 GFLOP/s); the very first block,
 * and every block when there is a single group, stream their rows with a prefetch ahead. K tail:
 * the last partial vector of W is read with a masked load (zeros beyond K), and x is zero there, so
 * an odd K needs no other care. Lanes are added at the end with a fixed tree. Up to
 * STREAM_ROWS rows take the one-weight-row-at-a-time walk instead (`stream`: the same
 * operations per output). A K-blocked variant of the tiles (accumulators kept in L1 between
 * K blocks of 256-2048, so that a block of W and x stays in L1 for every group) measured
 * slower in the LM's 16-row decode step (99 against 128 tokens/s, 8 layers, 2 threads).
 *
 * Packed form. A panel of PW = 32 outputs is gathered into K/2 × 32 u32 pairs (the layout
 * vdpbf16ps multiplies lane by lane), and a tile of PR = 8 rows × 32 outputs (16 accumulators)
 * broadcasts one x pair per row per step: 2 vector loads and 8 broadcasts per 16 dot-products
 * (12 rows measured the same). The gather costs about as much as a 16-row product, so the
 * packed form pays from about 64 rows. Over weights packed once (gemm_bf16_pack) the same
 * tiles serve every row count, with exactly the rows there are (1..8 per tile).
 */
#include <immintrin.h>

#include "kernels/gemm_bf16.h"

#define TR          GEMM_BF16_TILE_ROWS
#define TC          GEMM_BF16_TILE_COLS
#define BLOCK_BYTES (192 * 1024) /* W rows walked together: a block, kept in L2 */
#define PF_BYTES    4096         /* prefetch distance of a W row streamed from memory */

/* Few-row walk (stream): most activation rows it serves, and its prefetch distance (one weight
 * row at a time with 4 KiB measured best, against 2 or 4 rows side by side and 2 or 8 KiB). */
#define STREAM_ROWS 4
#define STREAM_PF   4096

/* What a tile prefetches: nothing (its W is in L2 already), its own W rows ahead (the first
 * block, or a group with nobody to fetch for it), or the same place of the next block's rows
 * (the second group of activation rows, so that the next block is in L2 when it starts). */
enum { PF_NONE, PF_STREAM, PF_NEXT };

/* 32 floats (zeros where the masks are clear) to hi = bf16(x) and lo = bf16(x - hi); returns
 * the bits of lo (nonzero when some x is not a bf16 value). */
static __m512i split32(uint16_t *hi, uint16_t *lo, __m512 a, __m512 b)
{
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    /* hi back to f32: each bf16 is the high half of its f32 */
    __m512 ha = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    __m512 hb = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    __m512i l = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha));
    _mm512_storeu_si512(hi, h);
    _mm512_storeu_si512(lo, l);
    return l;
}

int gemm_bf16_avx512_round(uint16_t *hi, uint16_t *lo, const float *src, int64_t k, int64_t kpad)
{
    __m512i any = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32)
        any = _mm512_or_si512(
            any, split32(hi + i, lo + i, _mm512_loadu_ps(src + i), _mm512_loadu_ps(src + i + 16)));
    for (; i < kpad; i += 32) {
        int64_t left = k - i; /* < 32, may be <= 0 */
        __mmask16 mlo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        __mmask16 mhi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
        any = _mm512_or_si512(any, split32(hi + i, lo + i, _mm512_maskz_loadu_ps(mlo, src + i),
                                           _mm512_maskz_loadu_ps(mhi, src + i + 16)));
    }
    /* -0 is a lo of 0 as well: an x that is a bf16 value gives +-0 */
    return _mm512_test_epi16_mask(any, _mm512_set1_epi16(0x7fff)) != 0;
}

void gemm_bf16_avx512_round_hi(uint16_t *hi, const float *src, int64_t k, int64_t kpad)
{
    int64_t i = 0;
    for (; i + 32 <= k; i += 32)
        _mm512_storeu_si512(hi + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16),
                                                                 _mm512_loadu_ps(src + i)));
    for (; i < kpad; i += 32) {
        int64_t left = k - i; /* < 32, may be <= 0 */
        __mmask16 mlo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        __mmask16 mhi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
        _mm512_storeu_si512(hi + i,
                            (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mhi, src + i + 16),
                                                         _mm512_maskz_loadu_ps(mlo, src + i)));
    }
}

/* acc[i][j] += x[i] · w[j] over 32 K at kk: hi, then lo when two (the same accumulator). */
static inline __attribute__((always_inline)) void step(__m512 acc[TR][TC],
                                                       const uint16_t *const xr[TR],
                                                       const uint16_t *const xl[TR],
                                                       const __m512bh wv[TC], int64_t kk, int two)
{
#pragma GCC unroll 8
    for (int i = 0; i < TR; i++) {
        __m512bh xv = (__m512bh)_mm512_load_si512(xr[i] + kk);
#pragma GCC unroll 8
        for (int j = 0; j < TC; j++)
            acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
        if (two) {
            xv = (__m512bh)_mm512_load_si512(xl[i] + kk);
#pragma GCC unroll 8
            for (int j = 0; j < TC; j++)
                acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
        }
    }
}

/*
 * Rows [r0, r0 + rows) × outputs [m0, m0 + cols), rows <= TR, cols <= TC. A short tile repeats
 * its first row / output in the missing places (computed, not stored), so that one fully
 * unrolled kernel serves every tile.
 */
static inline __attribute__((always_inline)) void tile(const struct gemm_bf16_args *a, int64_t r0,
                                                       int rows, int64_t m0, int cols, int pf,
                                                       int64_t next, int two)
{
    const uint16_t *xr[TR], *xl[TR];
    const uint16_t *wr[TC];
#pragma GCC unroll 8
    for (int i = 0; i < TR; i++) {
        xr[i] = a->xb + (r0 + (i < rows ? i : 0)) * a->kpad;
        xl[i] = a->xl + (r0 + (i < rows ? i : 0)) * a->kpad;
    }
#pragma GCC unroll 8
    for (int j = 0; j < TC; j++)
        wr[j] = (const uint16_t *)(a->w + (size_t)(m0 + (j < cols ? j : 0)) * a->w_stride);
    __m512 acc[TR][TC];
#pragma GCC unroll 8
    for (int i = 0; i < TR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < TC; j++)
            acc[i][j] = _mm512_setzero_ps();
    int64_t kfull = a->k / 32 * 32;
    for (int64_t kk = 0; kk < kfull; kk += 32) {
        __m512bh wv[TC];
#pragma GCC unroll 8
        for (int j = 0; j < TC; j++) {
            if (pf == PF_STREAM)
                _mm_prefetch((const char *)(wr[j] + kk) + PF_BYTES, _MM_HINT_T0);
            else if (pf == PF_NEXT)
                _mm_prefetch((const char *)(wr[j] + kk) + next, _MM_HINT_T1);
            wv[j] = (__m512bh)_mm512_loadu_si512(wr[j] + kk);
        }
        step(acc, xr, xl, wv, kk, two);
    }
    if (kfull < a->k) { /* the K tail: zeros past K */
        __mmask32 mask = (__mmask32)((1ull << (a->k - kfull)) - 1);
        __m512bh wv[TC];
#pragma GCC unroll 8
        for (int j = 0; j < TC; j++)
            wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(mask, wr[j] + kfull);
        step(acc, xr, xl, wv, kfull, two);
    }
    for (int i = 0; i < rows; i++) {
        float *y = a->y + (r0 + i) * a->ldy + m0;
        for (int j = 0; j < cols; j++)
            y[j] = _mm512_reduce_add_ps(acc[i][j]) + (a->bias ? a->bias[m0 + j] : 0.0f);
    }
}

/* The instances: what to prefetch × one or two bf16 terms of x. */
static void tile_stream(const struct gemm_bf16_args *a, int64_t r0, int rows, int64_t m0, int cols,
                        int two)
{
    if (two)
        tile(a, r0, rows, m0, cols, PF_STREAM, 0, 1);
    else
        tile(a, r0, rows, m0, cols, PF_STREAM, 0, 0);
}

static void tile_next(const struct gemm_bf16_args *a, int64_t r0, int rows, int64_t m0, int cols,
                      int64_t next, int two)
{
    if (two)
        tile(a, r0, rows, m0, cols, PF_NEXT, next, 1);
    else
        tile(a, r0, rows, m0, cols, PF_NEXT, next, 0);
}

static void tile_cached(const struct gemm_bf16_args *a, int64_t r0, int rows, int64_t m0, int cols,
                        int two)
{
    if (two)
        tile(a, r0, rows, m0, cols, PF_NONE, 0, 1);
    else
        tile(a, r0, rows, m0, cols, PF_NONE, 0, 0);
}

/* 1 when a row of [r0, r0 + rows) has a nonzero lo part. */
static int any_lo(const struct gemm_bf16_args *a, int64_t r0, int rows)
{
    int any = 0;
    for (int i = 0; i < rows; i++)
        any |= a->lo_rows[r0 + i];
    return any;
}

/*
 * Few rows (n <= STREAM_ROWS: batch-1 and small decode steps): one weight row at a time, start to
 * end, with a non-temporal prefetch ahead (weights are read once per step), against every
 * activation row. The same accumulator per (row, output), updated at the same K steps and
 * reduced by the same tree as `tile`: the same bits as the tiled walk. On one core at K = 4096
 * this reads 38 GB/s for one row (gemv: 37) and 102 GFLOP/s for four (the 4 × 6 tile: 91).
 */
static inline __attribute__((always_inline)) void stream_step(const struct gemm_bf16_args *a,
                                                              __m512 acc[STREAM_ROWS], __m512bh wv,
                                                              int64_t kk, const int R, int two)
{
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        acc[i] =
            _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_load_si512(a->xb + i * a->kpad + kk), wv);
        if (two)
            acc[i] =
                _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_load_si512(a->xl + i * a->kpad + kk), wv);
    }
}

static inline __attribute__((always_inline)) void stream(const struct gemm_bf16_args *a, int64_t m0,
                                                         int64_t m1, const int R, int two)
{
    int64_t kfull = a->k / 32 * 32;
    __mmask32 tail = (__mmask32)((1ull << (a->k - kfull)) - 1);
    for (int64_t m = m0; m < m1; m++) {
        const uint16_t *wr = (const uint16_t *)(a->w + (size_t)m * a->w_stride);
        __m512 acc[STREAM_ROWS];
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
            acc[i] = _mm512_setzero_ps();
        for (int64_t kk = 0; kk < kfull; kk += 32) {
            _mm_prefetch((const char *)(wr + kk) + STREAM_PF, _MM_HINT_NTA);
            stream_step(a, acc, (__m512bh)_mm512_loadu_si512(wr + kk), kk, R, two);
        }
        if (kfull < a->k) /* the K tail: zeros past K, as in `tile` */
            stream_step(a, acc, (__m512bh)_mm512_maskz_loadu_epi16(tail, wr + kfull), kfull, R,
                        two);
        for (int i = 0; i < R; i++)
            a->y[i * a->ldy + m] = _mm512_reduce_add_ps(acc[i]) + (a->bias ? a->bias[m] : 0.0f);
    }
}

/* The instances: R rows × one or two bf16 terms of x. */
#define STREAM_INSTANCE(R)                                                                      \
    static void stream_rows##R(const struct gemm_bf16_args *a, int64_t m0, int64_t m1, int two) \
    {                                                                                           \
        if (two)                                                                                \
            stream(a, m0, m1, R, 1);                                                            \
        else                                                                                    \
            stream(a, m0, m1, R, 0);                                                            \
    }
STREAM_INSTANCE(1)
STREAM_INSTANCE(2)
STREAM_INSTANCE(3)
STREAM_INSTANCE(4)
#undef STREAM_INSTANCE

void gemm_bf16_avx512_cols(const struct gemm_bf16_args *a, int64_t m0, int64_t m1)
{
    if (a->n <= STREAM_ROWS) {
        int two = any_lo(a, 0, (int)a->n);
        switch (a->n) {
        case 1: stream_rows1(a, m0, m1, two); break;
        case 2: stream_rows2(a, m0, m1, two); break;
        case 3: stream_rows3(a, m0, m1, two); break;
        default: stream_rows4(a, m0, m1, two); break;
        }
        return;
    }
    int64_t block = BLOCK_BYTES / (a->k * 2) / TC * TC;
    if (block < TC)
        block = TC;
    for (int64_t mb = m0; mb < m1; mb += block) {
        int64_t me = m1 - mb < block ? m1 : mb + block;
        /* the next block's rows, whole tiles of them (none past m1) */
        int64_t next = (int64_t)a->w_stride * block;
        int64_t next_rows = m1 - me < block ? m1 - me : block;
        for (int64_t r0 = 0; r0 < a->n; r0 += TR) {
            int rows = a->n - r0 < TR ? (int)(a->n - r0) : TR;
            int two = any_lo(a, r0, rows);
            for (int64_t c0 = mb; c0 < me; c0 += TC) {
                int cols = me - c0 < TC ? (int)(me - c0) : TC;
                if (r0 == 0 && mb == m0)
                    tile_stream(a, r0, rows, c0, cols, two);
                else if (r0 == TR && c0 - mb + TC <= next_rows)
                    tile_next(a, r0, rows, c0, cols, next, two);
                else if (r0 == 0 && a->n <= TR)
                    tile_stream(a, r0, rows, c0, cols, two);
                else
                    tile_cached(a, r0, rows, c0, cols, two);
            }
        }
    }
}

/* ---- packed form: W panels of PW outputs as bf16 pairs, x pairs broadcast --------------- */

#define PW GEMM_BF16_PANEL_COLS /* outputs per panel: two vectors of 16 */
#define PR GEMM_BF16_PANEL_ROWS /* activation rows per register tile */

/*
 * panel[kp][PW] (u32: W[m][2 kp] in the low half, W[m][2 kp + 1] in the high half) for outputs
 * [m0, m0 + cols), zeros for the missing outputs and past K. Gathers 16 rows' pairs at a time;
 * an odd K's last pair is read as a single element (the next one may be past the tensor).
 */
static void pack_panel(uint32_t *panel, const struct gemm_bf16_args *a, int64_t m0, int cols)
{
    const uint8_t *base = a->w + (size_t)m0 * a->w_stride;
    int64_t pairs = a->k / 2;
    for (int h = 0; h < PW / 16; h++) {
        int c0 = h * 16;
        int live = cols - c0 < 0 ? 0 : cols - c0 > 16 ? 16 : cols - c0;
        __mmask16 mask = (__mmask16)((1u << live) - 1);
        __m512i idx = _mm512_mullo_epi32(
            _mm512_add_epi32(_mm512_set1_epi32(c0), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                      10, 11, 12, 13, 14, 15)),
            _mm512_set1_epi32((int)a->w_stride));
        for (int64_t kp = 0; kp < pairs; kp++)
            _mm512_store_si512(
                panel + kp * PW + c0,
                _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, idx, base + kp * 4, 1));
        if (a->k % 2) {
            uint32_t *dst = panel + pairs * PW + c0;
            for (int c = 0; c < 16; c++)
                dst[c] = c < live
                             ? ((const uint16_t *)(base + (size_t)(c0 + c) * a->w_stride))[a->k - 1]
                             : 0;
        }
    }
}

/* Bytes ahead that the first group of rows prefetches a prepacked panel it streams from
 * memory (measured on one core at K = 4096, 16 rows: 2 KiB 303, 4 KiB 332, 8 KiB 365 GFLOP/s). */
#define PANEL_PF 8192

/*
 * Rows [r0, r0 + R) × the panel's outputs [m0, m0 + cols), R <= PR: one accumulator per output,
 * the K pairs added in order (two: each hi product followed by the lo product). pf: prefetch
 * the panel PANEL_PF bytes ahead.
 */
static inline __attribute__((always_inline)) void panel_rows(const struct gemm_bf16_args *a,
                                                             const uint32_t *panel, int64_t r0,
                                                             const int R, int64_t m0, int cols,
                                                             const int two, const int pf)
{
    const uint16_t *xr[PR], *xl[PR];
#pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
        xr[i] = a->xb + (r0 + i) * a->kpad;
        xl[i] = a->xl + (r0 + i) * a->kpad;
    }
    __m512 acc[PR][2];
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    int64_t pairs = (a->k + 1) / 2;
    for (int64_t kp = 0; kp < pairs; kp++) {
        if (pf) {
            _mm_prefetch((const char *)(panel + kp * PW) + PANEL_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)(panel + kp * PW) + PANEL_PF + 64, _MM_HINT_T0);
        }
        __m512bh w0 = (__m512bh)_mm512_load_si512(panel + kp * PW);
        __m512bh w1 = (__m512bh)_mm512_load_si512(panel + kp * PW + 16);
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) {
            uint32_t xp;
            __builtin_memcpy(&xp, xr[i] + 2 * kp, sizeof xp);
            __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xp);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], xv, w0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], xv, w1);
            if (two) {
                __builtin_memcpy(&xp, xl[i] + 2 * kp, sizeof xp);
                xv = (__m512bh)_mm512_set1_epi32((int)xp);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], xv, w0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], xv, w1);
            }
        }
    }
    __mmask16 m_lo = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
    __mmask16 m_hi = cols >= 32 ? 0xffff : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    if (a->bias) {
        b0 = _mm512_maskz_loadu_ps(m_lo, a->bias + m0);
        b1 = _mm512_maskz_loadu_ps(m_hi, a->bias + m0 + 16);
    }
    for (int i = 0; i < R; i++) {
        float *y = a->y + (r0 + i) * a->ldy + m0;
        _mm512_mask_storeu_ps(y, m_lo, _mm512_add_ps(acc[i][0], b0));
        _mm512_mask_storeu_ps(y + 16, m_hi, _mm512_add_ps(acc[i][1], b1));
    }
}

/* The instances: R rows × one bf16 term of x (with or without the prefetch) or two. */
typedef void panel_fn(const struct gemm_bf16_args *a, const uint32_t *panel, int64_t r0, int64_t m0,
                      int cols, int pf);
#define PANEL_INSTANCE(R)                                                                       \
    static void panel_one##R(const struct gemm_bf16_args *a, const uint32_t *panel, int64_t r0, \
                             int64_t m0, int cols, int pf)                                      \
    {                                                                                           \
        if (pf)                                                                                 \
            panel_rows(a, panel, r0, R, m0, cols, 0, 1);                                        \
        else                                                                                    \
            panel_rows(a, panel, r0, R, m0, cols, 0, 0);                                        \
    }                                                                                           \
    static void panel_two##R(const struct gemm_bf16_args *a, const uint32_t *panel, int64_t r0, \
                             int64_t m0, int cols, int pf)                                      \
    {                                                                                           \
        (void)pf;                                                                               \
        panel_rows(a, panel, r0, R, m0, cols, 1, 0);                                            \
    }
PANEL_INSTANCE(1)
PANEL_INSTANCE(2)
PANEL_INSTANCE(3)
PANEL_INSTANCE(4)
PANEL_INSTANCE(5)
PANEL_INSTANCE(6)
PANEL_INSTANCE(7)
PANEL_INSTANCE(8)
#undef PANEL_INSTANCE

static panel_fn *const panel_one[PR] = { panel_one1, panel_one2, panel_one3, panel_one4,
                                         panel_one5, panel_one6, panel_one7, panel_one8 };
static panel_fn *const panel_two[PR] = { panel_two1, panel_two2, panel_two3, panel_two4,
                                         panel_two5, panel_two6, panel_two7, panel_two8 };

/* Every row of the call against one panel, PR rows at a time; the first group prefetches. */
static void panel_all_rows(const struct gemm_bf16_args *a, const uint32_t *panel, int64_t m0,
                           int cols, int pf)
{
    for (int64_t r0 = 0; r0 < a->n; r0 += PR) {
        int rows = a->n - r0 < PR ? (int)(a->n - r0) : PR;
        if (any_lo(a, r0, rows))
            panel_two[rows - 1](a, panel, r0, m0, cols, 0);
        else
            panel_one[rows - 1](a, panel, r0, m0, cols, pf && r0 == 0);
    }
}

void gemm_bf16_avx512_prepacked(const struct gemm_bf16_args *a, int64_t m0, int64_t m1)
{
    for (int64_t p = m0; p < m1; p += PW) {
        int cols = m1 - p < PW ? (int)(m1 - p) : PW;
        panel_all_rows(a, (const uint32_t *)(a->w + (size_t)(p / PW) * a->w_stride), p, cols, 1);
    }
}

void gemm_bf16_avx512_panels(const struct gemm_bf16_args *a, int64_t m0, int64_t m1,
                             uint32_t *panel)
{
    for (int64_t p = m0; p < m1; p += PW) {
        int cols = m1 - p < PW ? (int)(m1 - p) : PW;
        pack_panel(panel, a, p, cols);
        panel_all_rows(a, panel, p, cols, 0);
    }
}
