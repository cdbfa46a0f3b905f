/* Tests of gemm_q8: every CPU level against a double reference of the same quantized maths
 * (x quantized per block, exact integer block sums, scales in double), odd block counts
 * (K = 32 .. 257 blocks, group tails), 1 .. 70 rows (passes of 64 rows, and of fewer where
 * K is large), a row stride wider than the row; the
 * results bit-identical across levels, 1 vs 2 threads and each row alone vs in the batch;
 * the quantizer's ties to even. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_q8.h"
#include "runtime/cpu.h"
#include "runtime/dtype.h"
#include "runtime/pool.h"
#include "test.h"

#define QK 32

struct shape {
    int64_t m, k;
};

static const struct shape shapes[] = {
    { 1, 32 }, { 5, 96 }, { 13, 544 }, { 37, 1056 }, { 3, 8224 }
};
static const int64_t row_counts[] = { 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 70 };
#define NMAX 70

/* W [m] rows of k / 32 blocks at stride ld bytes: random f16 scales (some 0), q in -128..127. */
static uint8_t *make_w(int64_t m, int64_t k, size_t ld)
{
    uint8_t *w = calloc((size_t)m, ld);
    if (!w)
        return NULL;
    for (int64_t r = 0; r < m; r++)
        for (int64_t b = 0; b < k / QK; b++) {
            uint8_t *p = w + (size_t)r * ld + (size_t)b * 34;
            uint16_t h = dtype_f32_to_f16(
                test_rand_u64() % 17 == 0 ? 0.0f : test_rand_uniform(0.001f, 0.02f));
            memcpy(p, &h, 2);
            for (int i = 0; i < QK; i++)
                p[2 + i] = (uint8_t)(test_rand_u64() & 0xff);
        }
    return w;
}

/* x with some all-zero blocks and some blocks with a tie (x / d = k + 0.5 exactly). */
static void make_x(float *x, int64_t n)
{
    test_fill_uniform(x, n, -2.0f, 2.0f);
    for (int64_t b = 0; b + QK <= n; b += QK) {
        uint64_t c = test_rand_u64() % 8;
        if (c == 0)
            memset(x + b, 0, QK * sizeof *x);
        if (c == 1) { /* amax 127: d = 1 */
            x[b] = 127.0f;
            x[b + 1] = 2.5f;
            x[b + 2] = -3.5f;
        }
    }
}

/* Written from the definition, in double: d = f32(amax / 127), q = nearest-even(f32(x / d)). */
static void ref_quantize(int32_t *q, double *d, const float *x)
{
    double amax = 0.0;
    for (int i = 0; i < QK; i++)
        amax = fabs(x[i]) > amax ? fabs(x[i]) : amax;
    float s = (float)(amax / 127.0);
    for (int i = 0; i < QK; i++) {
        double v = s > 0 ? (double)(float)((double)x[i] / s) : 0.0, f = floor(v);
        q[i] = (int32_t)(v - f > 0.5 || (v - f == 0.5 && fmod(f, 2.0) != 0.0) ? f + 1 : f);
    }
    *d = s;
}

static void reference(double *ref, double *abs_sum, const float *x, const uint8_t *w, size_t ld,
                      const float *bias, int64_t n, int64_t m, int64_t k)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < m; j++) {
            double s = 0.0, a = 0.0;
            for (int64_t b = 0; b < k / QK; b++) {
                int32_t q[QK];
                double dx;
                ref_quantize(q, &dx, x + r * k + b * QK);
                const uint8_t *p = w + (size_t)j * ld + (size_t)b * 34;
                uint16_t h;
                memcpy(&h, p, 2);
                long isum = 0;
                for (int i = 0; i < QK; i++)
                    isum += (long)q[i] * (int8_t)p[2 + i];
                double t = (double)dtype_f16_to_f32(h) * dx * (double)isum;
                s += t;
                a += fabs(t);
            }
            ref[r * m + j] = s + (bias ? bias[j] : 0.0);
            abs_sum[r * m + j] = a + (bias ? fabs(bias[j]) : 0.0);
        }
}

static int close_enough(const float *y, const double *ref, const double *abs_sum, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        if (!(fabs(y[i] - ref[i]) <= 1e-6 * abs_sum[i] + 1e-30))
            return test_fail(__FILE__, __LINE__, "y[%lld] = %.9g, reference %.9g", (long long)i,
                             (double)y[i], ref[i]);
    return 1;
}

TEST(gemm_q8_against_reference)
{
    struct pool *p2 = pool_create(2);
    REQUIRE(p2 != NULL);
    enum cpu_level best = cpu_detect();
    int worked = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && worked; s++) {
        int64_t m = shapes[s].m, k = shapes[s].k;
        size_t ld = (size_t)(k / QK) * 34 + 6;
        uint8_t *w = make_w(m, k, ld);
        float *x = malloc((size_t)(NMAX * k) * sizeof *x), *bias = malloc((size_t)m * sizeof *bias);
        float *y0 = malloc((size_t)(NMAX * m) * sizeof *y0),
              *y = malloc((size_t)(NMAX * m) * sizeof *y);
        double *ref = malloc((size_t)(NMAX * m) * sizeof *ref),
               *abs_sum = malloc((size_t)(NMAX * m) * sizeof *abs_sum);
        REQUIRE(w && x && bias && y0 && y && ref && abs_sum);
        make_x(x, NMAX * k);
        test_fill_uniform(bias, m, -1.0f, 1.0f);
        const float *b = s % 2 ? bias : NULL;
        reference(ref, abs_sum, x, w, ld, b, NMAX, m, k);
        /* the whole batch at the best level, 1 thread: the bits everything else must match */
        REQUIRE(gemm_q8_forward(NULL, y0, x, w, ld, b, NMAX, m, k, NULL) == 0);
        worked &= close_enough(y0, ref, abs_sum, NMAX * m);
        for (int level = CPU_LEVEL_GENERIC; level <= (int)best && worked; level++) {
            REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
            for (size_t c = 0; c < sizeof row_counts / sizeof row_counts[0]; c++) {
                int64_t n = row_counts[c];
                for (int t = 1; t <= 2; t++) {
                    memset(y, 0xff, (size_t)(n * m) * sizeof *y);
                    gemm_q8_forward(t == 2 ? p2 : NULL, y, x, w, ld, b, n, m, k, NULL);
                    if (memcmp(y, y0, (size_t)(n * m) * sizeof *y) != 0) {
                        worked = test_fail(__FILE__, __LINE__,
                                           "%s m %lld k %lld n %lld t %d: bits differ",
                                           cpu_level_name((enum cpu_level)level), (long long)m,
                                           (long long)k, (long long)n, t);
                        break;
                    }
                }
            }
            /* each row alone (the last rows: other tile positions) */
            for (int64_t r = NMAX - 6; r < NMAX && worked; r++) {
                gemm_q8_forward(p2, y, x + r * k, w, ld, b, 1, m, k, NULL);
                worked &= CHECK(memcmp(y, y0 + r * m, (size_t)m * sizeof *y) == 0);
            }
        }
        cpu_set_level(best);
        free(w), free(x), free(bias), free(y0), free(y), free(ref), free(abs_sum);
    }
    pool_free(p2);
}

TEST(gemm_q8_quantize)
{
    float x[QK] = { 127.0f, 2.5f, -2.5f, 3.5f, -3.5f, 0.5f, -0.5f, 1.5f };
    int8_t q[QK];
    float d;
    gemm_q8_quantize_block(q, &d, x);
    CHECK(d == 1.0f);
    CHECK(q[0] == 127 && q[1] == 2 && q[2] == -2 && q[3] == 4 && q[4] == -4);
    CHECK(q[5] == 0 && q[6] == 0 && q[7] == 2 && q[8] == 0);
    float z[QK] = { 0 };
    gemm_q8_quantize_block(q, &d, z);
    CHECK(d == 0.0f && q[0] == 0);
}
