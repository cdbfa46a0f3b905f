/* Tests of gemv: every weight type, CPU level, batch size and odd shape against the
 * double-precision reference; 1 vs 2 threads and batch-size independence bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemv.h"
#include "ref/ref_linear.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "test.h"

static const int batch_sizes[] = { 1, 2, 3, 5, 8 };
static const int64_t out_sizes[] = { 1, 3, 17, 257 };
static const int64_t in_sizes[] = { 1, 7, 32, 45, 96, 4128, 13696 }; /* those of whole blocks */

/* A weight tensor of random values in [-1, 1] stored as type t, at an odd offset from an
 * aligned allocation so that no kernel may assume alignment. *mem is what to free. */
static int make_weight(struct tensor *w, void **mem, enum dtype t, int64_t m, int64_t k)
{
    size_t bytes = dtype_row_bytes(t, (uint64_t)k) * (size_t)m;
    size_t off = t == DTYPE_F32 ? 4 : 2;
    float *f = malloc((size_t)(m * k) * sizeof *f);
    uint8_t *buf = malloc(bytes + 64);
    if (!f || !buf) {
        free(f);
        free(buf);
        return -1;
    }
    test_fill_uniform(f, m * k, -1.0f, 1.0f);
    dtype_from_f32(t, f, buf + off, m * k);
    free(f);
    int64_t ne[2] = { k, m };
    *mem = buf;
    return tensor_init(w, "w", t, 2, ne, buf + off);
}

/* Checks y [n][M] against the reference: the error of a float sum of K products grows like
 * sqrt(K) rounding steps of the sum of their magnitudes. */
static int check_close(const float *y, const double *ref, const double *abs_sum, const float *bias,
                       int n, int64_t m, int64_t k, const char *what)
{
    for (int i = 0; i < n; i++) {
        for (int64_t j = 0; j < m; j++) {
            double want = ref[i * m + j] + (bias ? bias[j] : 0.0);
            double scale = abs_sum[i * m + j] + (bias ? fabs(bias[j]) : 0.0);
            double tol = 2.0 * sqrt((double)k) * 0x1p-24 * scale + 1e-30;
            if (!(fabs(y[i * m + j] - want) <= tol)) {
                test_fail(__FILE__, __LINE__, "%s: y[%d][%lld] = %.9g, reference %.9g, tol %.3g",
                          what, i, (long long)j, (double)y[i * m + j], want, tol);
                return 0;
            }
        }
    }
    return 1;
}

static void check_type(enum dtype t)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    int block = dtype_info(t)->block;
    for (size_t ki = 0; ki < sizeof in_sizes / sizeof in_sizes[0]; ki++) {
        int64_t k = in_sizes[ki];
        if (k % block)
            continue;
        for (size_t mi = 0; mi < sizeof out_sizes / sizeof out_sizes[0]; mi++) {
            int64_t m = out_sizes[mi];
            struct tensor w;
            void *mem;
            REQUIRE(make_weight(&w, &mem, t, m, k) == 0);
            /* x at a 64-byte boundary, and the same values one float further on: the
             * kernels' aligned and copying paths must agree bit for bit */
            size_t xbytes = ((size_t)(GEMV_MAX_ROWS * k + 1) * sizeof(float) + 63) & ~(size_t)63;
            float *x = aligned_alloc(64, xbytes), *xbuf = aligned_alloc(64, xbytes);
            float *bias = malloc((size_t)m * sizeof *bias);
            float *y1 = malloc((size_t)(GEMV_MAX_ROWS * m) * sizeof *y1);
            float *y2 = malloc((size_t)(GEMV_MAX_ROWS * m) * sizeof *y2);
            float *yall = malloc((size_t)(GEMV_MAX_ROWS * m) * sizeof *yall);
            double *ref = malloc((size_t)(GEMV_MAX_ROWS * m) * sizeof *ref);
            double *abs_sum = malloc((size_t)(GEMV_MAX_ROWS * m) * sizeof *abs_sum);
            REQUIRE(x && xbuf && bias && y1 && y2 && yall && ref && abs_sum);
            test_fill_uniform(x, GEMV_MAX_ROWS * k, -1.0f, 1.0f);
            float *xu = xbuf + 1;
            memcpy(xu, x, (size_t)(GEMV_MAX_ROWS * k) * sizeof *x);
            test_fill_uniform(bias, m, -1.0f, 1.0f);
            ref_linear(ref, abs_sum, x, &w, NULL, GEMV_MAX_ROWS);

            for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
                REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
                for (int with_bias = 0; with_bias <= 1; with_bias++) {
                    const float *b = with_bias ? bias : NULL;
                    gemv_forward(NULL, yall, x, &w, b, GEMV_MAX_ROWS);
                    for (size_t ni = 0; ni < sizeof batch_sizes / sizeof batch_sizes[0]; ni++) {
                        int n = batch_sizes[ni];
                        char what[128];
                        snprintf(what, sizeof what, "%s %s M=%lld K=%lld rows=%d bias=%d",
                                 dtype_info(t)->name, cpu_level_name((enum cpu_level)level),
                                 (long long)m, (long long)k, n, with_bias);
                        memset(y1, 0xff, (size_t)(n * m) * sizeof *y1);
                        gemv_forward(NULL, y1, x, &w, b, n);
                        if (!check_close(y1, ref, abs_sum, b, n, m, k, what))
                            goto next;
                        gemv_forward(two, y2, x, &w, b, n);
                        if (!CHECK(memcmp(y1, y2, (size_t)(n * m) * sizeof *y1) == 0)) {
                            test_fail(__FILE__, __LINE__, "%s: 1 and 2 threads differ", what);
                            goto next;
                        }
                        gemv_forward(two, y2, xu, &w, b, n);
                        if (!CHECK(memcmp(y1, y2, (size_t)(n * m) * sizeof *y1) == 0)) {
                            test_fail(__FILE__, __LINE__, "%s: unaligned x differs", what);
                            goto next;
                        }
                        if (!CHECK(memcmp(y1, yall, (size_t)(n * m) * sizeof *y1) == 0)) {
                            test_fail(__FILE__, __LINE__, "%s: differs from the batch of %d", what,
                                      GEMV_MAX_ROWS);
                            goto next;
                        }
                    }
                }
            }
        next:
            free(x);
            free(xbuf);
            free(bias);
            free(y1);
            free(y2);
            free(yall);
            free(ref);
            free(abs_sum);
            free(mem);
        }
    }
    cpu_set_level(best);
    pool_free(two);
}

TEST(gemv_f32_shapes)
{
    check_type(DTYPE_F32);
}
TEST(gemv_f16_shapes)
{
    check_type(DTYPE_F16);
}
TEST(gemv_bf16_shapes)
{
    check_type(DTYPE_BF16);
}
TEST(gemv_q8_0_shapes)
{
    check_type(DTYPE_Q8_0);
}

TEST(gemv_strided_and_many_rows)
{
    /* Rows beyond GEMV_MAX_ROWS run in groups; strides leave gaps that must stay untouched. */
    const int64_t m = 37, k = 160, ldx = k + 5, ldy = m + 3;
    const int n = 11;
    static const enum dtype types[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };
    enum cpu_level best = cpu_detect();
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        struct tensor w;
        void *mem;
        REQUIRE(make_weight(&w, &mem, types[ti], m, k) == 0);
        float x[11 * 165], xp[11 * 160], y[11 * 40], yp[11 * 37];
        double ref[11 * 37], abs_sum[11 * 37];
        test_fill_uniform(x, n * ldx, -1.0f, 1.0f);
        for (int i = 0; i < n; i++)
            memcpy(xp + i * k, x + i * ldx, (size_t)k * sizeof *x);
        ref_linear(ref, abs_sum, xp, &w, NULL, n);
        for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
            REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
            for (int i = 0; i < n * ldy; i++)
                y[i] = 12345.0f;
            gemv_forward_strided(two, y, ldy, x, ldx, &w, NULL, n);
            for (int i = 0; i < n; i++) {
                memcpy(yp + i * m, y + i * ldy, (size_t)m * sizeof *y);
                for (int64_t j = m; j < ldy; j++)
                    CHECK(y[i * ldy + j] == 12345.0f);
            }
            check_close(yp, ref, abs_sum, NULL, n, m, k, dtype_info(types[ti])->name);
        }
        free(mem);
    }
    cpu_set_level(best);
    pool_free(two);
}

TEST(gemv_dequant_matches_dtype)
{
    /* The SIMD widening must give exactly dtype_to_f32's values (it is an exact operation). */
    static const enum dtype types[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };
    static const int64_t sizes[] = { 1, 15, 32, 47, 96, 4128 };
    enum cpu_level best = cpu_detect();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int64_t n = sizes[si];
            if (n % dtype_info(types[ti])->block)
                continue;
            float *f = malloc((size_t)n * sizeof *f), *a = malloc((size_t)n * sizeof *a);
            float *b = malloc((size_t)n * sizeof *b);
            void *q = malloc(dtype_row_bytes(types[ti], (uint64_t)n));
            REQUIRE(f && a && b && q);
            for (int64_t i = 0; i < n; i++)
                f[i] = test_rand_normal() * 3.0f;
            dtype_from_f32(types[ti], f, q, n);
            dtype_to_f32(types[ti], q, a, n);
            for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
                REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
                memset(b, 0xff, (size_t)n * sizeof *b);
                gemv_dequant(b, q, types[ti], n);
                CHECK(memcmp(a, b, (size_t)n * sizeof *a) == 0);
            }
            free(f);
            free(a);
            free(b);
            free(q);
        }
    }
    cpu_set_level(best);
}

TEST(gemv_many_threads_few_rows)
{
    /* More threads than output rows, and a row count that splits mid-group. */
    const int64_t k = 64;
    static const int64_t sizes[] = { 1, 2, 5, 33 };
    struct pool *four = pool_create(4);
    REQUIRE(four != NULL);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int64_t m = sizes[si];
        struct tensor w;
        void *mem;
        REQUIRE(make_weight(&w, &mem, DTYPE_BF16, m, k) == 0);
        float x[2 * 64], y1[2 * 33], y4[2 * 33];
        test_fill_uniform(x, 2 * k, -1.0f, 1.0f);
        gemv_forward(NULL, y1, x, &w, NULL, 2);
        gemv_forward(four, y4, x, &w, NULL, 2);
        CHECK(memcmp(y1, y4, (size_t)(2 * m) * sizeof *y1) == 0);
        free(mem);
    }
    pool_free(four);
}
