/* Tests of matmul: every weight type and row count against the double-precision reference,
 * 1 vs 2 threads bit for bit, caller's vs matmul's own scratch, and matmul_f32. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "ref/ref_linear.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "test.h"

struct shape {
    int64_t m, k;
};

/* Odd sizes, a single output row, more than one panel with a partial last one. */
static const struct shape shapes[] = { { 1, 32 }, { 17, 96 }, { 300, 64 }, { 257, 4128 } };
static const int64_t row_counts[] = { 1, 9, 64, 100 };
static const enum dtype types[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };

static int make_weight(struct tensor *w, void **mem, enum dtype t, int64_t m, int64_t k)
{
    size_t bytes = dtype_row_bytes(t, (uint64_t)k) * (size_t)m;
    float *f = malloc((size_t)(m * k) * sizeof *f);
    void *buf = malloc(bytes);
    if (!f || !buf) {
        free(f);
        free(buf);
        return -1;
    }
    test_fill_uniform(f, m * k, -1.0f, 1.0f);
    dtype_from_f32(t, f, buf, m * k);
    free(f);
    int64_t ne[2] = { k, m };
    *mem = buf;
    return tensor_init(w, "w", t, 2, ne, buf);
}

/* sgemm sums in blocks of its own choosing; allow a little more than gemv's bound. */
static int check_close(const float *y, const double *ref, const double *abs_sum, const float *bias,
                       int64_t n, int64_t m, int64_t k, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < m; j++) {
            double want = ref[i * m + j] + (bias ? bias[j] : 0.0);
            double scale = abs_sum[i * m + j] + (bias ? fabs(bias[j]) : 0.0);
            double tol = 4.0 * sqrt((double)k) * 0x1p-24 * scale + 1e-30;
            if (!(fabs(y[i * m + j] - want) <= tol)) {
                test_fail(__FILE__, __LINE__, "%s: y[%lld][%lld] = %.9g, reference %.9g, tol %.3g",
                          what, (long long)i, (long long)j, (double)y[i * m + j], want, tol);
                return 0;
            }
        }
    }
    return 1;
}

TEST(matmul_all_types_against_reference)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int64_t m = shapes[si].m, k = shapes[si].k, nmax = 100;
            struct tensor w;
            void *mem;
            REQUIRE(make_weight(&w, &mem, types[ti], m, k) == 0);
            float *x = malloc((size_t)(nmax * k) * sizeof *x);
            float *bias = malloc((size_t)m * sizeof *bias);
            float *y1 = malloc((size_t)(nmax * m) * sizeof *y1);
            float *y2 = malloc((size_t)(nmax * m) * sizeof *y2);
            double *ref = malloc((size_t)(nmax * m) * sizeof *ref);
            double *abs_sum = malloc((size_t)(nmax * m) * sizeof *abs_sum);
            void *scratch = malloc(matmul_scratch_bytes(two, &w) + 1);
            REQUIRE(x && bias && y1 && y2 && ref && abs_sum && scratch);
            test_fill_uniform(x, nmax * k, -1.0f, 1.0f);
            test_fill_uniform(bias, m, -1.0f, 1.0f);
            ref_linear(ref, abs_sum, x, &w, NULL, nmax);

            for (size_t ni = 0; ni < sizeof row_counts / sizeof row_counts[0]; ni++) {
                int64_t n = row_counts[ni];
                /* the gemv path differs per CPU level; the sgemm path does not */
                int top = n <= GEMV_MAX_ROWS ? (int)best : CPU_LEVEL_GENERIC;
                for (int level = CPU_LEVEL_GENERIC; level <= top; level++) {
                    REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
                    for (int with_bias = 0; with_bias <= 1; with_bias++) {
                        const float *b = with_bias ? bias : NULL;
                        char what[128];
                        snprintf(what, sizeof what, "%s %s M=%lld K=%lld n=%lld bias=%d",
                                 dtype_info(types[ti])->name, cpu_level_name((enum cpu_level)level),
                                 (long long)m, (long long)k, (long long)n, with_bias);
                        memset(y1, 0xff, (size_t)(n * m) * sizeof *y1);
                        matmul_forward(NULL, y1, x, &w, b, n, NULL);
                        if (!check_close(y1, ref, abs_sum, b, n, m, k, what))
                            continue;
                        memset(y2, 0xff, (size_t)(n * m) * sizeof *y2);
                        matmul_forward(two, y2, x, &w, b, n, scratch);
                        if (memcmp(y1, y2, (size_t)(n * m) * sizeof *y1) != 0)
                            test_fail(__FILE__, __LINE__, "%s: 1 and 2 threads differ", what);
                    }
                }
            }
            cpu_set_level(best);
            free(x);
            free(bias);
            free(y1);
            free(y2);
            free(ref);
            free(abs_sum);
            free(scratch);
            free(mem);
        }
    }
    pool_free(two);
}

TEST(matmul_scratch_size)
{
    int64_t ne[2] = { 96, 1000 };
    struct tensor w;
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    REQUIRE(tensor_init(&w, "w", DTYPE_F32, 2, ne, NULL) == 0);
    CHECK(matmul_scratch_bytes(two, &w) == 0);
    REQUIRE(tensor_init(&w, "w", DTYPE_BF16, 2, ne, NULL) == 0);
    CHECK(matmul_scratch_bytes(NULL, &w) == (size_t)MATMUL_PANEL_ROWS * 96 * sizeof(float));
    CHECK(matmul_scratch_bytes(two, &w) == 2 * (size_t)MATMUL_PANEL_ROWS * 96 * sizeof(float));
    pool_free(two);
}

/* y[n][ldy] = alpha * a · B + beta * y in double; B[k][m] = b_trans ? b[m][k] : b[k][m]. */
static void ref_f32(double *y, int64_t ldy, const float *a, int64_t lda, const float *b,
                    int64_t ldb, int64_t n, int64_t m, int64_t k, int b_trans, double alpha,
                    double beta)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) {
            double s = 0;
            for (int64_t l = 0; l < k; l++)
                s += (double)a[i * lda + l] * (b_trans ? b[j * ldb + l] : b[l * ldb + j]);
            y[i * ldy + j] = alpha * s + beta * y[i * ldy + j];
        }
}

TEST(matmul_f32_products)
{
    static const int64_t ns[] = { 1, 5, 33 };
    const int64_t m = 19, k = 40, lda = 43, ldb_t = 41, ldb_n = 23, ldy = 21;
    float a[33 * 43], bt[19 * 41], bn[40 * 23], y[33 * 21];
    double want[33 * 21];
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    test_fill_uniform(a, 33 * lda, -1.0f, 1.0f);
    test_fill_uniform(bt, m * ldb_t, -1.0f, 1.0f);
    test_fill_uniform(bn, k * ldb_n, -1.0f, 1.0f);
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        int64_t n = ns[ni];
        for (int b_trans = 0; b_trans <= 1; b_trans++) {
            for (int with_beta = 0; with_beta <= 1; with_beta++) {
                float alpha = 0.5f, beta = with_beta ? -2.0f : 0.0f;
                test_fill_uniform(y, n * ldy, -1.0f, 1.0f);
                for (int64_t i = 0; i < n * ldy; i++)
                    want[i] = y[i];
                const float *b = b_trans ? bt : bn;
                int64_t ldb = b_trans ? ldb_t : ldb_n;
                ref_f32(want, ldy, a, lda, b, ldb, n, m, k, b_trans, alpha, beta);
                matmul_f32(two, y, ldy, a, lda, b, ldb, n, m, k, b_trans, alpha, beta);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < ldy; j++) {
                        /* beyond column m: the gap between rows stays as it was */
                        double tol = j < m ? 1e-5 : 0.0;
                        if (!(fabs(y[i * ldy + j] - want[i * ldy + j]) <= tol)) {
                            test_fail(__FILE__, __LINE__,
                                      "n=%lld trans=%d beta=%g: y[%lld][%lld] = %.9g, want %.9g",
                                      (long long)n, b_trans, (double)beta, (long long)i,
                                      (long long)j, (double)y[i * ldy + j], want[i * ldy + j]);
                            i = n;
                            break;
                        }
                    }
            }
        }
    }
    pool_free(two);
}
