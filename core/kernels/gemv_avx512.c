/*
 * gemv_avx512 — the AVX-512 kernels of gemv (compiled with AVX-512 F/BW/DQ/VL flags).
 *
 * Shape letters as in gemv.h: W [M][K] in its storage type, x [R][K] f32, y [R][M] f32.
 *
 * K is walked in chunks of 32 elements (two 16-lane vectors; one Q8_0 block). A chunk of W is
 * widened to f32 once and multiplied into every activation row, so W is read once for the
 * whole batch. Each (weight row, activation row) pair owns four accumulators (chunk parity ×
 * 16-lane half: four independent FMA chains), updated chunk after chunk in the same order
 * whatever R is and however rows are grouped, which is what makes the result independent of
 * the thread split and of the batch.
 *
 * Measured on the 2-core Zen 5 development machine (tests/bench, parley-bench): one weight
 * row at a time, start to end, is the fastest way through memory; several rows side by side
 * (interleaved streams) or K-blocked walks over a group of rows ran 15-50 % slower, and a
 * software prefetch a few KiB ahead is needed because the hardware prefetchers stop at 4 KiB
 * pages. With several activation rows the K-blocked walk is used anyway: x then stays in L1.
 * Once x outgrows L1 (down projection, K = 13696: 54 KB of f32 against a 48 KB L1) every x
 * load of a row-at-a-time walk misses L1 and one activation row ran at 62-72 % of the read
 * bandwidth; there GROUP_N rows run side by side over each load of x (stream_group), which cut
 * the x traffic from L2 by that factor and measured 83-86 % (bf16, f16), 76 % (Q8_0), 97 %
 * (f32) on one core, against 70, 62 and 85 % for the row-at-a-time or K-blocked walks.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/gemv.h"

#define CHUNK 32

/* Bytes ahead of the current chunk that a weight row is prefetched (measured on one core:
 * 1 KiB 16-25 GB/s, 4-8 KiB 30+ GB/s for Q8_0). Non-temporal: weights are read once per
 * step and should not push activations and the KV cache out of L2/L3 (same speed as T0). */
#define PREFETCH_BYTES 4096
#define PF_HINT        _MM_HINT_NTA

/* Blocked path (R > 1): weight rows per group, and bytes of x kept in L1 per K block. */
#define GROUP         16
#define X_BLOCK_BYTES 16384
#define BLOCK_PF      8192 /* prefetch distance of the blocked walk (measured best of 1-16 KiB) */

/* One activation row whose x is over X_STREAM bytes (no longer fits L1 beside the weight
 * stream): GROUP_N weight rows side by side, each prefetched GROUP_PF bytes ahead (Q8_0:
 * GROUP_PF_Q8_0; measured on one core at K = 13696, best of 2-8 rows and 0.5-4 KiB). */
#define X_STREAM      40960
#define GROUP_N       7
#define GROUP_PF      1024
#define GROUP_PF_Q8_0 2048

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

static inline __attribute__((always_inline)) __m512 bf16x16(__m256i v)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

/* Widens chunk c of a weight row to f32. */
static inline __attribute__((always_inline)) void load_chunk(enum dtype t, const uint8_t *row,
                                                             int64_t c, __m512 *lo, __m512 *hi)
{
    const uint8_t *p = row + (size_t)c * chunk_bytes(t);
    switch (t) {
    case DTYPE_F32:
        *lo = _mm512_loadu_ps(p);
        *hi = _mm512_loadu_ps(p + 64);
        break;
    case DTYPE_F16:
        *lo = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        *hi = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
        break;
    case DTYPE_BF16:
        *lo = bf16x16(_mm256_loadu_si256((const __m256i *)p));
        *hi = bf16x16(_mm256_loadu_si256((const __m256i *)(p + 32)));
        break;
    case DTYPE_Q8_0: {
        /* one broadcast load + one conversion: cheaper than a scalar conversion */
        short h;
        memcpy(&h, p, 2);
        __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16(h));
        __m128i q0 = _mm_loadu_si128((const __m128i *)(p + 2));
        __m128i q1 = _mm_loadu_si128((const __m128i *)(p + 18));
        *lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), d);
        *hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), d);
        break;
    }
    }
}

/* The last, partial chunk of n (1..31) elements; lanes past the end are zero. Q8_0 rows are
 * whole blocks and never get here. */
static inline __attribute__((always_inline)) void load_tail(enum dtype t, const uint8_t *row,
                                                            int64_t c, __mmask16 m0, __mmask16 m1,
                                                            __m512 *lo, __m512 *hi)
{
    const uint8_t *p = row + (size_t)c * chunk_bytes(t);
    switch (t) {
    case DTYPE_F32:
        *lo = _mm512_maskz_loadu_ps(m0, p);
        *hi = _mm512_maskz_loadu_ps(m1, p + 64);
        break;
    case DTYPE_F16:
        *lo = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, p));
        *hi = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, p + 32));
        break;
    case DTYPE_BF16:
        *lo = bf16x16(_mm256_maskz_loadu_epi16(m0, p));
        *hi = bf16x16(_mm256_maskz_loadu_epi16(m1, p + 32));
        break;
    case DTYPE_Q8_0:
        *lo = _mm512_setzero_ps();
        *hi = _mm512_setzero_ps();
        break;
    }
}

/* Accumulators of one (weight row, activation row) pair: [chunk parity][16-lane half]. Four
 * independent FMA chains, so that one activation row is not held up by the FMA latency. */
typedef __m512 pair_acc[2][2];

/* Activation rows one pass of `segment` serves: 4 * SUB_ROWS accumulators, plus the weight
 * chunk and its x operands, fit in the 32 vector registers. */
#define SUB_ROWS 4

/* Chunk c of one weight row (lo, hi) into R activation rows, accumulators of parity P. */
static inline __attribute__((always_inline)) void step(__m512 acc[][2][2], __m512 wl, __m512 wh,
                                                       const float *x, int64_t ldx, const int P,
                                                       const int R)
{
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        acc[r][P][0] = _mm512_fmadd_ps(wl, _mm512_loadu_ps(x + r * ldx), acc[r][P][0]);
        acc[r][P][1] = _mm512_fmadd_ps(wh, _mm512_loadu_ps(x + r * ldx + 16), acc[r][P][1]);
    }
}

/*
 * Chunks [c0, c1) of weight row m for R (<= SUB_ROWS) activation rows (plus the partial last
 * chunk when `last`), continuing the accumulators acc_mem[R]. Chunk c of activation row r is
 * read at xb + r * ldxb + (c - cx) * CHUNK. Prefetches from pf on, one chunk's bytes per
 * chunk. The parity of the chunk index c picks the accumulator, so the sequence of operations
 * of a pair does not depend on where segments start. R and t are constants after inlining.
 */
static inline __attribute__((always_inline)) void
segment(const struct gemv_args *a, int64_t m, int64_t c0, int64_t c1, int last, pair_acc *acc_mem,
        const float *xb, int64_t ldxb, int64_t cx, const char *pf, const int R, const enum dtype t)
{
    const uint8_t *row = a->w + (size_t)m * a->w_stride;
    const size_t cb = chunk_bytes(t);
    __m512 acc[SUB_ROWS][2][2];
    __m512 wl, wh;

#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        for (int p = 0; p < 2; p++)
            for (int h = 0; h < 2; h++)
                acc[r][p][h] = acc_mem[r][p][h];

    int64_t c = c0;
    if (c < c1 && (c & 1)) {
        _mm_prefetch(pf, PF_HINT);
        if (cb > 64)
            _mm_prefetch(pf + 64, PF_HINT);
        load_chunk(t, row, c, &wl, &wh);
        step(acc, wl, wh, xb + (c - cx) * CHUNK, ldxb, 1, R);
        c++;
    }
    for (; c + 1 < c1; c += 2) {
        const char *p = pf + (size_t)(c - c0) * cb;
        _mm_prefetch(p, PF_HINT);
        _mm_prefetch(p + cb, PF_HINT);
        if (cb > 64) {
            _mm_prefetch(p + 64, PF_HINT);
            _mm_prefetch(p + cb + 64, PF_HINT);
        }
        load_chunk(t, row, c, &wl, &wh);
        step(acc, wl, wh, xb + (c - cx) * CHUNK, ldxb, 0, R);
        load_chunk(t, row, c + 1, &wl, &wh);
        step(acc, wl, wh, xb + (c + 1 - cx) * CHUNK, ldxb, 1, R);
    }
    if (c < c1) {
        _mm_prefetch(pf + (size_t)(c - c0) * cb, PF_HINT);
        load_chunk(t, row, c, &wl, &wh);
        step(acc, wl, wh, xb + (c - cx) * CHUNK, ldxb, 0, R);
    }
    int64_t tail = a->k % CHUNK, nc = a->k / CHUNK;
    if (last && tail) {
        __mmask16 m0 = (__mmask16)(tail >= 16 ? 0xffff : (1u << tail) - 1);
        __mmask16 m1 = (__mmask16)(tail > 16 ? (1u << (tail - 16)) - 1 : 0);
        const float *x = xb + (nc - cx) * CHUNK;
        load_tail(t, row, nc, m0, m1, &wl, &wh);
        /* masked x loads: lanes past K read nothing */
        if (nc & 1) {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                acc[r][1][0] =
                    _mm512_fmadd_ps(wl, _mm512_maskz_loadu_ps(m0, x + r * ldxb), acc[r][1][0]);
                acc[r][1][1] =
                    _mm512_fmadd_ps(wh, _mm512_maskz_loadu_ps(m1, x + r * ldxb + 16), acc[r][1][1]);
            }
        } else {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                acc[r][0][0] =
                    _mm512_fmadd_ps(wl, _mm512_maskz_loadu_ps(m0, x + r * ldxb), acc[r][0][0]);
                acc[r][0][1] =
                    _mm512_fmadd_ps(wh, _mm512_maskz_loadu_ps(m1, x + r * ldxb + 16), acc[r][0][1]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        for (int p = 0; p < 2; p++)
            for (int h = 0; h < 2; h++)
                acc_mem[r][p][h] = acc[r][p][h];
}

/* y for rows m .. m + n - 1 from their finished accumulators. */
static void finish(const struct gemv_args *a, int64_t m, int64_t n, int R,
                   pair_acc acc_mem[][GEMV_MAX_ROWS])
{
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < R; r++) {
            const __m512 *v = &acc_mem[i][r][0][0];
            __m512 sum = _mm512_add_ps(_mm512_add_ps(v[0], v[2]), _mm512_add_ps(v[1], v[3]));
            float s = _mm512_reduce_add_ps(sum);
            if (a->bias)
                s += a->bias[m + i];
            a->y[r * a->ldy + m + i] = s;
        }
}

/* One activation row: each weight row streamed whole, one after the other, which makes a
 * single sequential stream through W. */
static inline __attribute__((always_inline)) void stream_rows(const struct gemv_args *a, int64_t m0,
                                                              int64_t m1, const enum dtype t)
{
    int64_t nc = a->k / CHUNK;
    for (int64_t m = m0; m < m1; m++) {
        pair_acc acc[1][GEMV_MAX_ROWS];
        memset(acc[0], 0, sizeof(pair_acc));
        const char *pf = (const char *)a->w + (size_t)m * a->w_stride + PREFETCH_BYTES;
        segment(a, m, 0, nc, 1, acc[0], a->x, a->ldx, 0, pf, 1, t);
        finish(a, m, 1, 1, acc);
    }
}

/* One activation row, NP (<= 8) weight rows side by side over each load of x: x comes from L2
 * once per NP rows instead of once per row. Each row's accumulators see the same operations
 * in the same order as in stream_rows, so the result does not depend on the grouping (nor on
 * where a thread's rows start). */
static inline __attribute__((always_inline)) void
stream_group(const struct gemv_args *a, int64_t m0, int64_t m1, const int NP, const enum dtype t)
{
    const int64_t nc = a->k / CHUNK;
    const size_t cb = chunk_bytes(t);
    int64_t m = m0;
    for (; m + NP <= m1; m += NP) {
        const uint8_t *r0 = a->w + (size_t)m * a->w_stride;
        __m512 acc[8][2][2];
        __m512 wl, wh, xl, xh;
        const float *x = a->x;
#pragma GCC unroll 8
        for (int i = 0; i < NP; i++)
            acc[i][0][0] = acc[i][0][1] = acc[i][1][0] = acc[i][1][1] = _mm512_setzero_ps();
        int64_t c = 0;
        for (; c + 1 < nc; c += 2) {
#pragma GCC unroll 8
            for (int i = 0; i < NP; i++) {
                const char *f = (const char *)r0 + (size_t)i * a->w_stride + (size_t)c * cb +
                                (t == DTYPE_Q8_0 ? GROUP_PF_Q8_0 : GROUP_PF);
                _mm_prefetch(f, PF_HINT);
                _mm_prefetch(f + cb, PF_HINT);
                if (cb > 64) {
                    _mm_prefetch(f + 64, PF_HINT);
                    _mm_prefetch(f + cb + 64, PF_HINT);
                }
            }
#pragma GCC unroll 2
            for (int p = 0; p < 2; p++) {
                xl = _mm512_loadu_ps(x + (c + p) * CHUNK);
                xh = _mm512_loadu_ps(x + (c + p) * CHUNK + 16);
#pragma GCC unroll 8
                for (int i = 0; i < NP; i++) {
                    load_chunk(t, r0 + (size_t)i * a->w_stride, c + p, &wl, &wh);
                    acc[i][p][0] = _mm512_fmadd_ps(wl, xl, acc[i][p][0]);
                    acc[i][p][1] = _mm512_fmadd_ps(wh, xh, acc[i][p][1]);
                }
            }
        }
        if (c < nc) {
            xl = _mm512_loadu_ps(x + c * CHUNK);
            xh = _mm512_loadu_ps(x + c * CHUNK + 16);
#pragma GCC unroll 8
            for (int i = 0; i < NP; i++) {
                load_chunk(t, r0 + (size_t)i * a->w_stride, c, &wl, &wh);
                acc[i][0][0] = _mm512_fmadd_ps(wl, xl, acc[i][0][0]);
                acc[i][0][1] = _mm512_fmadd_ps(wh, xh, acc[i][0][1]);
            }
        }
        pair_acc am[8][GEMV_MAX_ROWS];
#pragma GCC unroll 8
        for (int i = 0; i < NP; i++) {
            for (int p = 0; p < 2; p++)
                for (int h = 0; h < 2; h++)
                    am[i][0][p][h] = acc[i][p][h];
            /* the partial last chunk */
            segment(a, m + i, nc, nc, 1, am[i], a->x, a->ldx, 0, (const char *)r0, 1, t);
        }
        finish(a, m, NP, 1, am);
    }
    if (m < m1)
        stream_rows(a, m, m1, t);
}

/*
 * Several activation rows: x no longer fits the L1 cache whole, and streaming all of it from
 * L2 for every weight row costs more than the weights themselves. So K is cut in blocks whose
 * slice of x (X_BLOCK_BYTES) stays in L1, and GROUP weight rows run block by block, their
 * accumulators waiting in memory in between; each segment prefetches the one it will be
 * followed by BLOCK_PF bytes later (the same block of a later row of the group). x rows not
 * 64-byte aligned are copied block by block into an aligned buffer first: loads that straddle
 * cache lines halve the speed of this load-bound loop.
 */
static inline __attribute__((always_inline)) void
blocked_rows(const struct gemv_args *a, int64_t m0, int64_t m1, const int R, const enum dtype t)
{
    const int64_t nc = a->k / CHUNK, nk = (a->k + CHUNK - 1) / CHUNK;
    const int64_t kbc = X_BLOCK_BYTES / (R * CHUNK * (int64_t)sizeof(float)); /* chunks per block */
    const size_t cb = chunk_bytes(t);
    /* prefetch the segment this many segments ahead, at least BLOCK_PF bytes away */
    const int64_t ahead = (BLOCK_PF + (int64_t)(kbc * cb) - 1) / (int64_t)(kbc * cb);
    const int aligned = ((uintptr_t)a->x % 64 == 0) && (a->ldx % 16 == 0);
    pair_acc acc[GROUP][GEMV_MAX_ROWS];
    const int R1 = R < SUB_ROWS ? R : SUB_ROWS, R2 = R - R1;
    float xcopy[X_BLOCK_BYTES / sizeof(float)] __attribute__((aligned(64)));

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
                segment(a, g + i, c0, c1, last, acc[i], xb, ldxb, c0, pf, R1, t);
                if (R2 > 0) /* the rest of the batch, over the weight block now in L1 */
                    segment(a, g + i, c0, c1, last, acc[i] + R1, xb + R1 * ldxb, ldxb, c0, pf, R2,
                            t);
            }
        }
        finish(a, g, gn, R, acc);
    }
}

#define DEFINE_KERNEL(T, TN, R)                                                      \
    static void kernel_##TN##_##R(const struct gemv_args *a, int64_t m0, int64_t m1) \
    {                                                                                \
        if (R == 1 && a->k * 4 <= X_STREAM)                                          \
            stream_rows(a, m0, m1, T);                                               \
        else if (R == 1)                                                             \
            stream_group(a, m0, m1, GROUP_N, T);                                     \
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

void gemv_avx512_rows(const struct gemv_args *a, int64_t m0, int64_t m1)
{
    int r = a->n_rows - 1;
    switch (a->type) {
    case DTYPE_F32: kernels_f32[r](a, m0, m1); break;
    case DTYPE_F16: kernels_f16[r](a, m0, m1); break;
    case DTYPE_BF16: kernels_bf16[r](a, m0, m1); break;
    case DTYPE_Q8_0: kernels_q8_0[r](a, m0, m1); break;
    }
}

void gemv_avx512_dequant(float *dst, const void *src, enum dtype t, int64_t n)
{
    const uint8_t *s = src;
    int64_t nc = n / CHUNK, tail = n % CHUNK, c = 0;
    __m512 lo = _mm512_setzero_ps(), hi = lo;
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case DTYPE_F16:
        for (; c < nc; c++) {
            load_chunk(DTYPE_F16, s, c, &lo, &hi);
            _mm512_storeu_ps(dst + c * CHUNK, lo);
            _mm512_storeu_ps(dst + c * CHUNK + 16, hi);
        }
        break;
    case DTYPE_BF16:
        for (; c < nc; c++) {
            load_chunk(DTYPE_BF16, s, c, &lo, &hi);
            _mm512_storeu_ps(dst + c * CHUNK, lo);
            _mm512_storeu_ps(dst + c * CHUNK + 16, hi);
        }
        break;
    case DTYPE_Q8_0:
        for (; c < nc; c++) {
            load_chunk(DTYPE_Q8_0, s, c, &lo, &hi);
            _mm512_storeu_ps(dst + c * CHUNK, lo);
            _mm512_storeu_ps(dst + c * CHUNK + 16, hi);
        }
        return;
    }
    if (tail) {
        __mmask16 m0 = (__mmask16)(tail >= 16 ? 0xffff : (1u << tail) - 1);
        __mmask16 m1 = (__mmask16)(tail > 16 ? (1u << (tail - 16)) - 1 : 0);
        load_tail(t, s, nc, m0, m1, &lo, &hi);
        _mm512_mask_storeu_ps(dst + nc * CHUNK, m0, lo);
        _mm512_mask_storeu_ps(dst + nc * CHUNK + 16, m1, hi);
    }
}
