/*
 * gemm_q8 AVX2 kernel: vpmaddubsw on |q_w| and q_x with the sign of q_w, a horizontal sum per
 * block, and the f32 combine of gemm_q8.h in two 8-lane halves (the same operations per lane).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/gemm_q8.h"
#include "runtime/dtype.h"

#define QK       DTYPE_Q8_0_BLOCK
#define BLOCK_SZ (2 + QK)
#define GROUP_SZ (GEMM_Q8_GROUP * QK)
#define LANES    GEMM_Q8_GROUP

/* sum_i x[i] * w[i] over one block, exact. */
static int32_t block_dot(const int8_t *x, const int8_t *w)
{
    __m256i wv = _mm256_loadu_si256((const __m256i *)w);
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
    __m256i s = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    return _mm_cvtsi128_si32(h);
}

static float tree(__m256 lo, __m256 hi)
{
    __m256 a = _mm256_add_ps(lo, hi);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    __m128 d = _mm_add_ss(c, _mm_shuffle_ps(c, c, 1));
    return _mm_cvtss_f32(d);
}

void gemm_q8_avx2_cols(const struct gemm_q8_args *a, int64_t m0, int64_t m1, void *scratch)
{
    const int64_t G = a->groups, nb = a->k / QK;
    const size_t xrow = (size_t)G * GROUP_SZ;
    float *lanes = scratch; /* [n][16] */
    for (int64_t m = m0; m < m1; m++) {
        const uint8_t *wr = a->w + (size_t)m * a->w_stride;
        memset(lanes, 0, (size_t)a->n * LANES * sizeof *lanes);
        for (int64_t g = 0; g < G; g++) {
            float dw[LANES];
            for (int j = 0; j < LANES; j++) {
                int64_t b = g * LANES + j;
                uint16_t h = 0;
                if (b < nb)
                    memcpy(&h, wr + b * BLOCK_SZ, 2);
                dw[j] = dtype_f16_to_f32(h);
            }
            for (int64_t r = 0; r < a->n; r++) {
                const int8_t *xq = (const int8_t *)(a->xq + r * xrow) + g * GROUP_SZ;
                const float *xd = a->xd + (r * G + g) * LANES;
                int32_t is[LANES];
                for (int j = 0; j < LANES; j++) {
                    int64_t b = g * LANES + j;
                    is[j] = b < nb ? block_dot(xq + j * QK, (const int8_t *)(wr + b * BLOCK_SZ + 2))
                                   : 0;
                }
                float *l = lanes + r * LANES;
                for (int h = 0; h < 2; h++) {
                    __m256 s =
                        _mm256_mul_ps(_mm256_loadu_ps(dw + 8 * h), _mm256_loadu_ps(xd + 8 * h));
                    __m256 f =
                        _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(is + 8 * h)));
                    _mm256_storeu_ps(l + 8 * h, _mm256_fmadd_ps(s, f, _mm256_loadu_ps(l + 8 * h)));
                }
            }
        }
        for (int64_t r = 0; r < a->n; r++)
            a->y[r * a->ldy + m] =
                tree(_mm256_loadu_ps(lanes + r * LANES), _mm256_loadu_ps(lanes + r * LANES + 8)) +
                (a->bias ? a->bias[m] : 0.0f);
    }
}
