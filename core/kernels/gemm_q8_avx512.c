/*
 * gemm_q8 AVX-512 kernel (VNNI: vpdpbusd). See gemm_q8.h for the numerics.
 *
 * Layout of one row of x: per group of 16 blocks, 8 vectors of 64 bytes; vector t lane l
 * (4 bytes) holds bytes 4 t .. 4 t + 3 of block 16 g + l as q + 128. A weight row is brought
 * to the same layout (an 8 × 8 dword transpose in each 256-bit half), so that vpdpbusd's lane
 * l sums block l only and a group ends with 16 exact block sums in one vector. Up to
 * DIRECT_ROWS rows use each transposed group from the registers (`direct`); more rows store
 * it once per tile of outputs and run register tiles over it (`rows_tile`).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/gemm_q8.h"
#include "runtime/dtype.h"

/* Makefile's AVX-512 flags have no VNNI: every CPU with AVX-512 BF16 (the level's test in
 * cpu.c, which asks for VNNI too) has it. */
#define VNNI __attribute__((target("avx512vnni")))

#define QK       DTYPE_Q8_0_BLOCK
#define BLOCK_SZ (2 + QK)
#define GROUP_SZ (GEMM_Q8_GROUP * QK)
#define TC       GEMM_Q8_TILE_COLS
#define TR       GEMM_Q8_TILE_ROWS
_Static_assert(TR == 5, "last_rows instantiates tiles of 1 .. 4 rows");

/* Bytes ahead of the group being packed that the weight stream is prefetched: the hardware
 * prefetchers stop at 4 KiB pages (see gemv_avx512.c). */
#define PREFETCH_BYTES 12288 /* measured best of 2-16 KiB */

/* Most rows served by the direct walk (more go to the packed tiles; measured on 2 threads at
 * K = 4096: direct 622 GFLOP/s at 8 rows against the tiles' 468, tiles 560 at 16 rows against
 * direct 266, which no longer holds its accumulators in registers), and the most bytes of
 * quantized x it takes: the walk reads all of x again for every output, from L1 while it fits
 * (1 thread, K = 13696: 4 rows direct 107-111 GFLOP/s, in one tile 142; 6 rows direct 96-101,
 * in tiles 188; K = 4096: 6 rows direct 282-285, in tiles 221-228). */
#define DIRECT_ROWS    8
#define DIRECT_X_BYTES 32768

void gemm_q8_avx512_quantize(uint8_t *xq, float *xd, const float *x, int64_t k, int64_t groups)
{
    int64_t nb = k / QK, nbp = groups * GEMM_Q8_GROUP;
    memset(xq + (nb / GEMM_Q8_GROUP) * GROUP_SZ, 0x80,
           (size_t)(groups - nb / GEMM_Q8_GROUP) * GROUP_SZ);
    for (int64_t b = 0; b < nb; b++) {
        __m512 v0 = _mm512_loadu_ps(x + b * QK), v1 = _mm512_loadu_ps(x + b * QK + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = amax / 127.0f;
        __m128i q0 = _mm_setzero_si128(), q1 = _mm_setzero_si128();
        if (d > 0.0f) { /* cvtps rounds to nearest even (MXCSR default) as lrintf */
            __m512 vd = _mm512_set1_ps(d);
            q0 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_div_ps(v0, vd)));
            q1 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_div_ps(v1, vd)));
        }
        const __m128i bias = _mm_set1_epi8((char)0x80);
        uint32_t u[8];
        _mm_storeu_si128((__m128i *)u, _mm_xor_si128(q0, bias));
        _mm_storeu_si128((__m128i *)(u + 4), _mm_xor_si128(q1, bias));
        uint8_t *dst = xq + (b / GEMM_Q8_GROUP) * GROUP_SZ + (b % GEMM_Q8_GROUP) * 4;
        for (int t = 0; t < 8; t++)
            memcpy(dst + t * 64, &u[t], 4);
        xd[b] = d;
    }
    for (int64_t b = nb; b < nbp; b++)
        xd[b] = 0.0f;
}

/* z[i] lane l (i < 8): dword l % 8 of block i (l < 8) or i + 8; out: t[i] lane l = dword i of
 * block l. */
static inline __attribute__((always_inline)) void transpose(__m512i *z)
{
    __m512i t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(z[2 * i], z[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(z[2 * i], z[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { /* rows 4 h .. 4 h + 3 */
        __m512i *s = t + 4 * h, *d = u + 4 * h;
        d[0] = _mm512_unpacklo_epi64(s[0], s[2]);
        d[1] = _mm512_unpackhi_epi64(s[0], s[2]);
        d[2] = _mm512_unpacklo_epi64(s[1], s[3]);
        d[3] = _mm512_unpackhi_epi64(s[1], s[3]);
    }
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        z[i] = _mm512_permutex2var_epi64(u[i], lo, u[i + 4]);
        z[i + 4] = _mm512_permutex2var_epi64(u[i], hi, u[i + 4]);
    }
}

/* Group g of weight row wr in registers, in the x layout: z[t] lane l = dword t of block
 * 16 g + l (q as stored), *d lane l = its scale; blocks beyond nb are zeros. */
VNNI static inline __attribute__((always_inline)) void
load_group(__m512i z[8], __m512 *d, const uint8_t *wr, int64_t g, int64_t nb)
{
    int64_t b0 = g * GEMM_Q8_GROUP;
    int cnt = nb - b0 < GEMM_Q8_GROUP ? (int)(nb - b0) : GEMM_Q8_GROUP;
    const uint8_t *p = wr + b0 * BLOCK_SZ;
#pragma GCC unroll 9
    for (int l = 0; l < (GEMM_Q8_GROUP * BLOCK_SZ + 63) / 64; l++)
        _mm_prefetch((const char *)p + PREFETCH_BYTES + 64 * l, _MM_HINT_NTA);
    if (cnt == GEMM_Q8_GROUP) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            z[i] = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + i * BLOCK_SZ + 2))),
                _mm256_loadu_si256((const __m256i *)(p + (i + 8) * BLOCK_SZ + 2)), 1);
    } else {
        __m256i blk[GEMM_Q8_GROUP];
        for (int j = 0; j < GEMM_Q8_GROUP; j++)
            blk[j] = j < cnt ? _mm256_loadu_si256((const __m256i *)(p + j * BLOCK_SZ + 2))
                             : _mm256_setzero_si256();
        for (int i = 0; i < 8; i++)
            z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(blk[i]), blk[i + 8], 1);
    }
    /* the 16 f16 scales: one gather of the dwords at the blocks' starts, low halves kept */
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(BLOCK_SZ));
    __mmask16 live = (__mmask16)((1u << cnt) - 1);
    __m512i h = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, idx, p, 1);
    *d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h));
    transpose(z);
}

/* -128 * sum(q) per block of a group in the x layout: what x's + 128 adds to each block sum. */
VNNI static inline __attribute__((always_inline)) __m512i offset_sums(const __m512i z[8])
{
    __m512i c = _mm512_setzero_si512();
    const __m512i u128 = _mm512_set1_epi8((char)0x80);
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++)
        c = _mm512_dpbusd_epi32(c, u128, z[t]);
    return _mm512_sub_epi32(_mm512_setzero_si512(), c);
}

/* Group g of weight row wr into memory for the tiles: wt[8][64], nc[16], dw[16]. */
VNNI static inline __attribute__((always_inline)) void
pack_group(uint8_t *wt, int32_t *nc, float *dw, const uint8_t *wr, int64_t g, int64_t nb)
{
    __m512i z[8];
    __m512 d;
    load_group(z, &d, wr, g, nb);
    _mm512_store_ps(dw, d);
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++)
        _mm512_store_si512((__m512i *)(wt + t * 64), z[t]);
    _mm512_store_si512((__m512i *)nc, offset_sums(z));
}

/* Lanes added l + 8, l + 4, l + 2, l + 1 (the portable kernel's tree). */
static float tree(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    __m128 d = _mm_add_ss(c, _mm_shuffle_ps(c, c, 1));
    return _mm_cvtss_f32(d);
}

/* Rows r0 .. r0 + rt - 1 against the TC packed outputs of the tile at m (mt of them real). */
VNNI static inline __attribute__((always_inline)) void
rows_tile(const struct gemm_q8_args *a, const uint8_t *wt, const int32_t *nc, const float *dw,
          int64_t m, int mt, int64_t r0, const int rt)
{
    const int64_t G = a->groups;
    const size_t xrow = (size_t)G * GROUP_SZ;
    __m512 facc[TC][TR];
#pragma GCC unroll 8
    for (int i = 0; i < TC; i++)
#pragma GCC unroll 8
        for (int r = 0; r < rt; r++)
            facc[i][r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        __m512i acc[TC][TR];
#pragma GCC unroll 8
        for (int i = 0; i < TC; i++) {
            __m512i c = _mm512_load_si512((const __m512i *)(nc + (i * G + g) * 16));
#pragma GCC unroll 8
            for (int r = 0; r < rt; r++)
                acc[i][r] = c;
        }
        const uint8_t *xg = a->xq + (size_t)r0 * xrow + (size_t)g * GROUP_SZ;
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            __m512i wv[TC];
#pragma GCC unroll 8
            for (int i = 0; i < TC; i++)
                wv[i] =
                    _mm512_load_si512((const __m512i *)(wt + ((size_t)(i * G + g) * 8 + t) * 64));
#pragma GCC unroll 8
            for (int r = 0; r < rt; r++) {
                __m512i xv = _mm512_load_si512((const __m512i *)(xg + r * xrow + t * 64));
#pragma GCC unroll 8
                for (int i = 0; i < TC; i++)
                    acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], xv, wv[i]);
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < TC; i++) {
            __m512 d = _mm512_load_ps(dw + (i * G + g) * 16);
#pragma GCC unroll 8
            for (int r = 0; r < rt; r++) {
                __m512 s = _mm512_mul_ps(d, _mm512_loadu_ps(a->xd + (r0 + r) * G * 16 + g * 16));
                facc[i][r] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(acc[i][r]), facc[i][r]);
            }
        }
    }
    for (int i = 0; i < mt; i++)
        for (int r = 0; r < rt; r++)
            a->y[(r0 + r) * a->ldy + m + i] = tree(facc[i][r]) + (a->bias ? a->bias[m + i] : 0.0f);
}

/*
 * Few rows (n <= DIRECT_ROWS): each weight group is multiplied straight from the registers
 * it was transposed in, one weight row at a time, into every row of x, instead of being
 * stored for tiles first (packing cost more than the products for a few rows: one row read
 * 41-43 GB/s on 2 threads that way, 73-80 GB/s directly, the machine's read bandwidth). The
 * same integer sums and the same float operations per output as rows_tile: the same bits.
 */
VNNI static inline __attribute__((always_inline)) void direct(const struct gemm_q8_args *a,
                                                              int64_t m0, int64_t m1, const int R)
{
    const int64_t G = a->groups, nb = a->k / QK;
    const size_t xrow = (size_t)G * GROUP_SZ;
    for (int64_t m = m0; m < m1; m++) {
        const uint8_t *wr = a->w + (size_t)m * a->w_stride;
        __m512 facc[DIRECT_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            facc[r] = _mm512_setzero_ps();
        for (int64_t g = 0; g < G; g++) {
            __m512i z[8];
            __m512 d;
            load_group(z, &d, wr, g, nb);
            __m512i nc = offset_sums(z);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const uint8_t *xg = a->xq + (size_t)r * xrow + (size_t)g * GROUP_SZ;
                __m512i acc = nc;
#pragma GCC unroll 8
                for (int t = 0; t < 8; t++)
                    acc = _mm512_dpbusd_epi32(
                        acc, _mm512_load_si512((const __m512i *)(xg + t * 64)), z[t]);
                __m512 s = _mm512_mul_ps(d, _mm512_loadu_ps(a->xd + r * G * 16 + g * 16));
                facc[r] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(acc), facc[r]);
            }
        }
        for (int r = 0; r < R; r++)
            a->y[r * a->ldy + m] = tree(facc[r]) + (a->bias ? a->bias[m] : 0.0f);
    }
}

/* The rows after the whole tiles (1 .. TR - 1 of them) as one tile; on its own, as the walks
 * below are, so that the tiles' loops keep their layout. */
VNNI __attribute__((noinline)) static void last_rows(const struct gemm_q8_args *a,
                                                     const uint8_t *wt, const int32_t *nc,
                                                     const float *dw, int64_t m, int mt, int64_t r)
{
    switch (a->n - r) {
    case 1: rows_tile(a, wt, nc, dw, m, mt, r, 1); break;
    case 2: rows_tile(a, wt, nc, dw, m, mt, r, 2); break;
    case 3: rows_tile(a, wt, nc, dw, m, mt, r, 3); break;
    default: rows_tile(a, wt, nc, dw, m, mt, r, 4); break;
    }
}

/* One function per row count, so that each walk's loops are laid out on their own, whatever
 * else the kernel file holds (inlined into one function, the walk for one row ran 2-5 %
 * slower for code added elsewhere in it). */
#define DIRECT_INSTANCE(R)                                                              \
    VNNI __attribute__((noinline)) static void direct_##R(const struct gemm_q8_args *a, \
                                                          int64_t m0, int64_t m1)       \
    {                                                                                   \
        direct(a, m0, m1, R);                                                           \
    }
DIRECT_INSTANCE(1)
DIRECT_INSTANCE(2)
DIRECT_INSTANCE(3)
DIRECT_INSTANCE(4)
DIRECT_INSTANCE(5)
DIRECT_INSTANCE(6)
DIRECT_INSTANCE(7)
DIRECT_INSTANCE(8)

VNNI void gemm_q8_avx512_cols(const struct gemm_q8_args *a, int64_t m0, int64_t m1, void *scratch)
{
    if (a->n <= DIRECT_ROWS && (size_t)a->n * a->groups * GROUP_SZ <= DIRECT_X_BYTES) {
        static void (*const walk[DIRECT_ROWS])(const struct gemm_q8_args *, int64_t, int64_t) = {
            direct_1, direct_2, direct_3, direct_4, direct_5, direct_6, direct_7, direct_8
        };
        walk[a->n - 1](a, m0, m1);
        return;
    }
    const int64_t G = a->groups, nb = a->k / QK;
    uint8_t *wt = scratch;                                     /* [TC][G][8][64] */
    int32_t *nc = (int32_t *)(wt + (size_t)TC * G * GROUP_SZ); /* [TC][G][16] */
    float *dw = (float *)(nc + TC * G * 16);                   /* [TC][G][16] */
    for (int64_t m = m0; m < m1; m += TC) {
        int mt = m1 - m < TC ? (int)(m1 - m) : TC;
        for (int i = 0; i < TC; i++) {
            if (i >= mt) { /* zero weights: sums 0, d 0 */
                memset(wt + (size_t)i * G * GROUP_SZ, 0, (size_t)G * GROUP_SZ);
                memset(nc + i * G * 16, 0, (size_t)G * 16 * sizeof *nc);
                memset(dw + i * G * 16, 0, (size_t)G * 16 * sizeof *dw);
                continue;
            }
            const uint8_t *wr = a->w + (size_t)(m + i) * a->w_stride;
            for (int64_t g = 0; g < G; g++)
                pack_group(wt + (size_t)(i * G + g) * GROUP_SZ, nc + (i * G + g) * 16,
                           dw + (i * G + g) * 16, wr, g, nb);
        }
        int64_t r = 0;
        for (; r + TR <= a->n; r += TR)
            rows_tile(a, wt, nc, dw, m, mt, r, TR);
        if (r < a->n)
            last_rows(a, wt, nc, dw, m, mt, r);
    }
}
