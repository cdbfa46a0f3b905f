/*
 * gemm_panel_avx512 — the AVX-512 kernel of gemm_panel.
 *
 * Per panel, rows in chunks of ROW_CHUNK whose accumulators wait in memory, K in spans of
 * K_SPAN: within a span every group of up to GEMM_PANEL_ROWS rows runs over the span's part of
 * the panel (K_SPAN × 32 weights, in L1/L2 after the first group fetched it), its 2 R
 * accumulators in registers: per k, two vectors of weights (widened once for f16) and one
 * broadcast x per row for 2 R FMAs. Accumulators and the order of operations per output are
 * those of gemm_panel.h whatever the grouping: the same bits as the portable kernel.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/gemm_panel.h"

#define PW        GEMM_PANEL_COLS
#define PR        GEMM_PANEL_ROWS
#define ROW_CHUNK 64
#define K_SPAN    1024
#define PANEL_PF  8192 /* bytes ahead that the first group prefetches the panel */

/* Rows [r0, r0 + R) over k in [k0, k1), accumulators acc[R][32] in memory. */
static inline __attribute__((always_inline)) void
span(const struct gemm_panel_args *a, const uint8_t *panel, int64_t r0, const int R, int64_t k0,
     int64_t k1, float *accm, const enum dtype t, const int pf)
{
    const size_t step = PW * (t == DTYPE_F32 ? 4 : 2);
    __m512 acc[PR][2];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        acc[i][0] = _mm512_load_ps(accm + i * PW);
        acc[i][1] = _mm512_load_ps(accm + i * PW + 16);
    }
    const float *x = a->x + r0 * a->k;
    for (int64_t kk = k0; kk < k1; kk++) {
        const uint8_t *p = panel + (size_t)kk * step;
        __m512 w0, w1;
        if (pf)
            _mm_prefetch((const char *)p + PANEL_PF, _MM_HINT_T0);
        if (t == DTYPE_F32) {
            if (pf)
                _mm_prefetch((const char *)p + PANEL_PF + 64, _MM_HINT_T0);
            w0 = _mm512_load_ps(p);
            w1 = _mm512_load_ps(p + 64);
        } else {
            w0 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)p));
            w1 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(p + 32)));
        }
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __m512 xv = _mm512_set1_ps(x[i * a->k + kk]);
            acc[i][0] = _mm512_fmadd_ps(xv, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(xv, w1, acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        _mm512_store_ps(accm + i * PW, acc[i][0]);
        _mm512_store_ps(accm + i * PW + 16, acc[i][1]);
    }
}

typedef void span_fn(const struct gemm_panel_args *a, const uint8_t *panel, int64_t r0, int64_t k0,
                     int64_t k1, float *accm, int pf);

#define SPAN_INSTANCE(T, TN, R)                                                                 \
    static void span_##TN##R(const struct gemm_panel_args *a, const uint8_t *panel, int64_t r0, \
                             int64_t k0, int64_t k1, float *accm, int pf)                       \
    {                                                                                           \
        if (pf)                                                                                 \
            span(a, panel, r0, R, k0, k1, accm, T, 1);                                          \
        else                                                                                    \
            span(a, panel, r0, R, k0, k1, accm, T, 0);                                          \
    }
#define SPAN_TYPE(T, TN)                                        \
    SPAN_INSTANCE(T, TN, 1)                                     \
    SPAN_INSTANCE(T, TN, 2)                                     \
    SPAN_INSTANCE(T, TN, 3)                                     \
    SPAN_INSTANCE(T, TN, 4)                                     \
    SPAN_INSTANCE(T, TN, 5)                                     \
    SPAN_INSTANCE(T, TN, 6)                                     \
    SPAN_INSTANCE(T, TN, 7)                                     \
    SPAN_INSTANCE(T, TN, 8)                                     \
    static span_fn *const spans_##TN[PR] = {                    \
        span_##TN##1, span_##TN##2, span_##TN##3, span_##TN##4, \
        span_##TN##5, span_##TN##6, span_##TN##7, span_##TN##8  \
    };
SPAN_TYPE(DTYPE_F32, f32)
SPAN_TYPE(DTYPE_F16, f16)

void gemm_panel_avx512_panels(const struct gemm_panel_args *a, int64_t p0, int64_t p1)
{
    span_fn *const *spans = a->type == DTYPE_F32 ? spans_f32 : spans_f16;
    float acc[ROW_CHUNK * PW] __attribute__((aligned(64)));
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *panel = a->w + (size_t)p * a->panel_bytes;
        int64_t m0 = p * PW;
        int cols = a->m - m0 < PW ? (int)(a->m - m0) : PW;
        for (int64_t c0 = 0; c0 < a->n; c0 += ROW_CHUNK) {
            int64_t rows = a->n - c0 < ROW_CHUNK ? a->n - c0 : ROW_CHUNK;
            memset(acc, 0, (size_t)rows * PW * sizeof *acc);
            for (int64_t k0 = 0; k0 < a->k; k0 += K_SPAN) {
                int64_t k1 = a->k - k0 < K_SPAN ? a->k : k0 + K_SPAN;
                for (int64_t g = 0; g < rows; g += PR) {
                    int R = rows - g < PR ? (int)(rows - g) : PR;
                    spans[R - 1](a, panel, c0 + g, k0, k1, acc + g * PW, c0 == 0 && g == 0);
                }
            }
            for (int64_t i = 0; i < rows; i++) {
                float *y = a->y + (c0 + i) * a->m + m0;
                for (int c = 0; c < cols; c++)
                    y[c] = acc[i * PW + c] + (a->bias ? a->bias[m0 + c] : 0.0f);
            }
        }
    }
}
