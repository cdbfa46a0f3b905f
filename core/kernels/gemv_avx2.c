/*
 * gemv_avx2 — the AVX2 + FMA + F16C kernels of gemv.
 *
 * Shape letters as in gemv.h: W [M][K] in its storage type, x [R][K] f32, y [R][M] f32.
 *
 * The scheme of gemv_avx512.c with 8-lane vectors: K in chunks of 32 elements (one Q8_0
 * block) taken as four 8-lane quarters; one weight row at a time, streamed whole for one
 * activation row, K-blocked for several; four accumulators per (weight row, activation row)
 * pair (one per quarter: four independent FMA chains) updated in a fixed order, so results do
 * not depend on the thread split or the batch. With 16 vector registers a batch runs in passes of
 * at most SUB_ROWS activation rows over each block of a weight row (the block is in L1 by then). A
 * partial last chunk (K % 32, never for Q8_0) is copied into zero-padded buffers first.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/gemv.h"

#define CHUNK          32
#define PREFETCH_BYTES 4096 /* see gemv_avx512.c */
#define GROUP          16
#define X_BLOCK_BYTES  16384
#define BLOCK_PF       8192
#define SUB_ROWS       2 /* 4 * SUB_ROWS accumulators + weight + scale fit in 16 registers */

static inline __attribute__((always_inline)) size_t chunk_bytes(enum dtype t)
{
    switch (t) {
    case DTYPE_F32: return CHUNK * 4;
    case DTYPE_F16:
    case DTYPE_BF16: return CHUNK * 2;
    case DTYPE_Q8_0: return sizeof(struct dtype_q8_0);
    }
    return 0;
}

/* The scale of a Q8_0 chunk (other types: unused). */
static inline __attribute__((always_inline)) __m256 chunk_scale(enum dtype t, const uint8_t *p)
{
    if (t != DTYPE_Q8_0)
        return _mm256_setzero_ps();
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm256_set1_ps(_cvtsh_ss(h));
}

/* Quarter q (elements 8q .. 8q+7) of the chunk at p, widened to f32. */
static inline __attribute__((always_inline)) __m256 load_quarter(enum dtype t, const uint8_t *p,
                                                                 int q, __m256 d)
{
    switch (t) {
    case DTYPE_F32: return _mm256_loadu_ps((const float *)p + 8 * q);
    case DTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * q)));
    case DTYPE_BF16: {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * q)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
    case DTYPE_Q8_0: {
        __m128i v = _mm_loadl_epi64((const __m128i *)(p + 2 + 8 * q));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d);
    }
    }
    return _mm256_setzero_ps();
}

/* One chunk of a weight row (at wp) into R activation rows (chunk of row r at x + r * ldx). */
static inline __attribute__((always_inline)) void chunk(__m256 acc[][4], const uint8_t *wp,
                                                        const float *x, int64_t ldx, const int R,
                                                        const enum dtype t)
{
    __m256 d = chunk_scale(t, wp);
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        __m256 w = load_quarter(t, wp, q, d);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            acc[r][q] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + r * ldx + 8 * q), acc[r][q]);
    }
}

static inline __attribute__((always_inline)) float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/*
 * Chunks [c0, c1) of a weight row for R (<= SUB_ROWS) activation rows, plus the partial last
 * chunk when `last`, continuing acc_mem[R][4] (one accumulator per quarter). Chunk c of activation
 * row r is read at xb + r * ldxb + (c - cx) * CHUNK. Prefetches from pf on, one chunk's bytes per
 * chunk.
 */
static inline __attribute__((always_inline)) void
segment(const struct gemv_args *a, const uint8_t *row, int64_t cw, int64_t c0, int64_t c1, int last,
        __m256 acc_mem[][4], const float *xb, int64_t ldxb, int64_t cx, const char *pf, const int R,
        const enum dtype t)
{
    const size_t cb = chunk_bytes(t);
    __m256 acc[SUB_ROWS][4];

#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        for (int q = 0; q < 4; q++)
            acc[r][q] = acc_mem[r][q];
    }
    for (int64_t c = c0; c < c1; c++) {
        const uint8_t *wp = row + (size_t)(c - cw) * cb;
        const char *p = pf + (size_t)(c - c0) * cb;
        _mm_prefetch(p, _MM_HINT_NTA);
        if (cb > 64)
            _mm_prefetch(p + 64, _MM_HINT_NTA);
        chunk(acc, wp, xb + (c - cx) * CHUNK, ldxb, R, t);
    }
    int64_t tail = a->k % CHUNK;
    if (last && tail) {
        /* zero-padded copies of the partial chunk, so it runs through the same code */
        int64_t nc = a->k / CHUNK;
        size_t eb = t == DTYPE_F32 ? 4 : 2;
        uint8_t wt[CHUNK * 4] = { 0 };
        float xt[SUB_ROWS][CHUNK] = { { 0 } };
        memcpy(wt, row + (size_t)(nc - cw) * cb, (size_t)tail * eb);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            memcpy(xt[r], xb + r * ldxb + (nc - cx) * CHUNK, (size_t)tail * sizeof(float));
        chunk(acc, wt, xt[0], CHUNK, R, t);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        for (int q = 0; q < 4; q++)
            acc_mem[r][q] = acc[r][q];
    }
}

static void finish(const struct gemv_args *a, int64_t m, int64_t n, int R,
                   __m256 acc_mem[][GEMV_MAX_ROWS][4])
{
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < R; r++) {
            const __m256 *v = acc_mem[i][r];
            float s = hsum(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3])));
            if (a->bias)
                s += a->bias[m + i];
            a->y[r * a->ldy + m + i] = s;
        }
}

static inline __attribute__((always_inline)) void stream_rows(const struct gemv_args *a, int64_t m0,
                                                              int64_t m1, const enum dtype t)
{
    int64_t nc = a->k / CHUNK;
    for (int64_t m = m0; m < m1; m++) {
        __m256 acc[1][GEMV_MAX_ROWS][4];
        memset(acc[0], 0, sizeof acc[0][0]);
        const char *pf = (const char *)a->w + (size_t)m * a->w_stride + PREFETCH_BYTES;
        segment(a, a->w + (size_t)m * a->w_stride, 0, 0, nc, 1, acc[0], a->x, a->ldx, 0, pf, 1, t);
        finish(a, m, 1, 1, acc);
    }
}

/* As in gemv_avx512.c: K blocks whose slice of x stays in L1, GROUP weight rows per group,
 * each segment prefetching a later one, x copied to an aligned buffer when its rows straddle
 * cache lines. */
static inline __attribute__((always_inline)) void
blocked_rows(const struct gemv_args *a, int64_t m0, int64_t m1, const int R, const enum dtype t)
{
    const int64_t nc = a->k / CHUNK, nk = (a->k + CHUNK - 1) / CHUNK;
    const int64_t kbc = X_BLOCK_BYTES / (R * CHUNK * (int64_t)sizeof(float));
    const size_t cb = chunk_bytes(t);
    const int64_t ahead = (BLOCK_PF + (int64_t)(kbc * cb) - 1) / (int64_t)(kbc * cb);
    const int aligned = ((uintptr_t)a->x % 32 == 0) && (a->ldx % 8 == 0);
    __m256 acc[GROUP][GEMV_MAX_ROWS][4];
    float xcopy[X_BLOCK_BYTES / sizeof(float)] __attribute__((aligned(32)));

    for (int64_t g = m0; g < m1; g += GROUP) {
        int64_t gn = m1 - g < GROUP ? m1 - g : GROUP;
        memset(acc, 0, (size_t)gn * sizeof acc[0]);
        for (int64_t c0 = 0; c0 < nk; c0 += kbc) {
            int64_t c1 = c0 + kbc < nc ? c0 + kbc : nc;
            int last = c0 + kbc >= nk;
            const float *xb = a->x + c0 * CHUNK;
            int64_t ldxb = a->ldx;
            if (!aligned) {
                int64_t n = (last ? a->k : c1 * CHUNK) - c0 * CHUNK;
                for (int r = 0; r < R; r++)
                    memcpy(xcopy + r * kbc * CHUNK, a->x + r * a->ldx + c0 * CHUNK,
                           (size_t)n * sizeof(float));
                xb = xcopy;
                ldxb = kbc * CHUNK;
            }
            for (int64_t i = 0; i < gn; i++) {
                int64_t j = (i + ahead) % gn, blocks = (i + ahead) / gn;
                const char *pf = (const char *)a->w + (size_t)(g + j) * a->w_stride +
                                 (size_t)(c0 + blocks * kbc) * cb;
                const uint8_t *row = a->w + (size_t)(g + i) * a->w_stride;
                /* passes of SUB_ROWS activation rows; after the first the block is in L1 */
#pragma GCC unroll 4
                for (int r0 = 0; r0 < R; r0 += SUB_ROWS) {
                    if (R - r0 >= 2)
                        segment(a, row, 0, c0, c1, last, acc[i] + r0, xb + r0 * ldxb, ldxb, c0, pf,
                                2, t);
                    else
                        segment(a, row, 0, c0, c1, last, acc[i] + r0, xb + r0 * ldxb, ldxb, c0, pf,
                                1, t);
                }
            }
        }
        finish(a, g, gn, R, acc);
    }
}

#define DEFINE_KERNEL(T, TN, R)                                                      \
    static void kernel_##TN##_##R(const struct gemv_args *a, int64_t m0, int64_t m1) \
    {                                                                                \
        if (R == 1)                                                                  \
            stream_rows(a, m0, m1, T);                                               \
        else                                                                         \
            blocked_rows(a, m0, m1, R, T);                                           \
    }

#define DEFINE_TYPE(T, TN)                                                              \
    DEFINE_KERNEL(T, TN, 1)                                                             \
    DEFINE_KERNEL(T, TN, 2)                                                             \
    DEFINE_KERNEL(T, TN, 3)                                                             \
    DEFINE_KERNEL(T, TN, 4)                                                             \
    DEFINE_KERNEL(T, TN, 5)                                                             \
    DEFINE_KERNEL(T, TN, 6)                                                             \
    DEFINE_KERNEL(T, TN, 7)                                                             \
    DEFINE_KERNEL(T, TN, 8)                                                             \
    static void (*const kernels_##TN[GEMV_MAX_ROWS])(const struct gemv_args *, int64_t, \
                                                     int64_t) = {                       \
        kernel_##TN##_1, kernel_##TN##_2, kernel_##TN##_3, kernel_##TN##_4,             \
        kernel_##TN##_5, kernel_##TN##_6, kernel_##TN##_7, kernel_##TN##_8,             \
    };

DEFINE_TYPE(DTYPE_F32, f32)
DEFINE_TYPE(DTYPE_F16, f16)
DEFINE_TYPE(DTYPE_BF16, bf16)
DEFINE_TYPE(DTYPE_Q8_0, q8_0)

void gemv_avx2_rows(const struct gemv_args *a, int64_t m0, int64_t m1)
{
    int r = a->n_rows - 1;
    switch (a->type) {
    case DTYPE_F32: kernels_f32[r](a, m0, m1); break;
    case DTYPE_F16: kernels_f16[r](a, m0, m1); break;
    case DTYPE_BF16: kernels_bf16[r](a, m0, m1); break;
    case DTYPE_Q8_0: kernels_q8_0[r](a, m0, m1); break;
    }
}

void gemv_avx2_dequant(float *dst, const void *src, enum dtype t, int64_t n)
{
    if (t == DTYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    const uint8_t *s = src;
    const size_t cb = chunk_bytes(t);
    int64_t nc = n / CHUNK, tail = n % CHUNK;
    for (int64_t c = 0; c < nc; c++) {
        const uint8_t *p = s + (size_t)c * cb;
        __m256 d = chunk_scale(t, p);
        for (int q = 0; q < 4; q++)
            _mm256_storeu_ps(dst + c * CHUNK + 8 * q, load_quarter(t, p, q, d));
    }
    if (tail) {
        uint8_t wt[CHUNK * 2] = { 0 };
        float out[CHUNK];
        memcpy(wt, s + (size_t)nc * cb, (size_t)tail * 2); /* f16 / bf16 only */
        for (int q = 0; q < 4; q++)
            _mm256_storeu_ps(out + 8 * q, load_quarter(t, wt, q, _mm256_setzero_ps()));
        memcpy(dst + nc * CHUNK, out, (size_t)tail * sizeof(float));
    }
}
