/* Tests of gemm_bf16: both kernels against a double reference computed from the bf16 split of
 * x (hi + lo) and bf16 W, at shapes that are not multiples of the tile sizes (odd K included); 1 vs
 * 2 threads and batch composition bit for bit; the split of x; matmul's routing of bf16 weights.
 * gemm_bf16_rounded (x rounded to bf16): the same against a double reference of bf16(x) · W at
 * every CPU level, 1 vs 2 threads, and in the fixed form every row alone bit-identical to the
 * batch at every row count (the one-row walk, the tiles, what the packed form would take). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_bf16.h"
#include "kernels/matmul.h"
#include "ref/ref_linear.h"
#include "runtime/cpu.h"
#include "runtime/dtype.h"
#include "runtime/pool.h"
#include "runtime/tensor.h"
#include "test.h"

struct shape {
    int64_t m, k;
};

/* K = 1, odd K below and above one 32-wide vector, a K tail, M not a multiple of the tile. */
static const struct shape shapes[] = { { 1, 1 }, { 7, 33 }, { 13, 63 }, { 50, 96 }, { 97, 1027 } };
static const int64_t row_counts[] = { 1, 3, 4, 5, 9, 37, 64, 77, 200 }; /* 200: two chunks */
#define NMAX 200

/* w [m][ld] bf16 from uniform values; ld > k so that the row stride is exercised. */
static uint16_t *make_w(int64_t m, int64_t k, int64_t ld)
{
    uint16_t *w = malloc((size_t)(m * ld) * sizeof *w);
    if (!w)
        return NULL;
    for (int64_t i = 0; i < m * ld; i++)
        w[i] = dtype_f32_to_bf16(test_rand_uniform(-1.0f, 1.0f));
    return w;
}

/* x as the kernels see it: hi = bf16(x) plus lo = bf16(x - hi) (exact in f32). */
static double split_x(float x)
{
    float hi = dtype_bf16_to_f32(dtype_f32_to_bf16(x));
    return (double)hi + (double)dtype_bf16_to_f32(dtype_f32_to_bf16(x - hi));
}

/* ref[n][m] = sum_k split(x) W (+ bias) in double; abs_sum the sum of the terms' magnitudes. */
static void reference(double *ref, double *abs_sum, const float *x, const uint16_t *w, int64_t ld,
                      const float *bias, int64_t n, int64_t m, int64_t k)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) {
            double s = bias ? bias[j] : 0.0, a = bias ? fabs(bias[j]) : 0.0;
            for (int64_t l = 0; l < k; l++) {
                double t = split_x(x[i * k + l]) * (double)dtype_bf16_to_f32(w[j * ld + l]);
                s += t;
                a += fabs(t);
            }
            ref[i * m + j] = s;
            abs_sum[i * m + j] = a;
        }
}

/* f32 sums of exact products: a few roundings per term at worst, √K-like in practice. */
static double tolerance(double abs_sum, int64_t k)
{
    return (4.0 * sqrt((double)k) + 8.0) * 0x1p-24 * abs_sum + 1e-30;
}

static int check_close(const float *y, const double *ref, const double *abs_sum, int64_t n,
                       int64_t m, int64_t k, const char *what)
{
    for (int64_t i = 0; i < n * m; i++)
        if (!(fabs(y[i] - ref[i]) <= tolerance(abs_sum[i], k)))
            return test_fail(__FILE__, __LINE__, "%s: y[%lld][%lld] = %.9g, reference %.9g", what,
                             (long long)(i / m), (long long)(i % m), (double)y[i], ref[i]);
    return 1;
}

/* One shape's operands (w, NMAX rows of x, bias) and the outputs the tests compare. */
struct gb_bufs {
    uint16_t *w;
    float *x, *bias, *y1, *y2, *yg;
    double *ref, *abs_sum;
    void *scratch;
};

/* 1 when every buffer was allocated (w, x and bias filled), 0 otherwise (free it anyway). */
static int gb_alloc(struct gb_bufs *g, int64_t m, int64_t k, int64_t ld)
{
    g->w = make_w(m, k, ld);
    g->x = malloc((size_t)(NMAX * k) * sizeof *g->x);
    g->bias = malloc((size_t)m * sizeof *g->bias);
    g->y1 = malloc((size_t)(NMAX * m) * sizeof *g->y1);
    g->y2 = malloc((size_t)(NMAX * m) * sizeof *g->y2);
    g->yg = malloc((size_t)(NMAX * m) * sizeof *g->yg);
    g->ref = malloc((size_t)(NMAX * m) * sizeof *g->ref);
    g->abs_sum = malloc((size_t)(NMAX * m) * sizeof *g->abs_sum);
    g->scratch = malloc(gemm_bf16_scratch_bytes(2, k));
    if (!(g->w && g->x && g->bias && g->y1 && g->y2 && g->yg && g->ref && g->abs_sum && g->scratch))
        return 0;
    test_fill_uniform(g->x, NMAX * k, -1.0f, 1.0f);
    test_fill_uniform(g->bias, m, -1.0f, 1.0f);
    return 1;
}

static void gb_free(struct gb_bufs *g)
{
    free(g->w);
    free(g->x);
    free(g->bias);
    free(g->y1);
    free(g->y2);
    free(g->yg);
    free(g->ref);
    free(g->abs_sum);
    free(g->scratch);
}

TEST(gemm_bf16_against_reference)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    int quick = getenv("PARLEY_TEST_QUICK") != NULL;
    size_t n_shapes = sizeof shapes / sizeof shapes[0] - (quick ? 1 : 0);
    for (size_t si = 0; si < n_shapes; si++) {
        int64_t m = shapes[si].m, k = shapes[si].k, ld = k + 5;
        struct gb_bufs g;
        REQUIRE(gb_alloc(&g, m, k, ld));
        const uint16_t *w = g.w;
        const float *x = g.x, *bias = g.bias;
        float *y1 = g.y1, *y2 = g.y2, *yg = g.yg;
        double *ref = g.ref, *abs_sum = g.abs_sum;
        void *scratch = g.scratch;
        for (int with_bias = 0; with_bias <= 1; with_bias++) {
            const float *b = with_bias ? bias : NULL;
            reference(ref, abs_sum, x, w, ld, b, NMAX, m, k);
            for (size_t ni = 0; ni < sizeof row_counts / sizeof row_counts[0]; ni++) {
                int64_t n = row_counts[ni];
                for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
                    REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
                    char what[128];
                    snprintf(what, sizeof what, "%s M=%lld K=%lld n=%lld bias=%d",
                             cpu_level_name((enum cpu_level)level), (long long)m, (long long)k,
                             (long long)n, with_bias);
                    memset(y1, 0xff, (size_t)(n * m) * sizeof *y1);
                    gemm_bf16_forward(NULL, y1, x, w, (size_t)ld * 2, b, n, m, k, NULL);
                    if (!check_close(y1, ref, abs_sum, n, m, k, what))
                        continue;
                    memset(y2, 0xff, (size_t)(n * m) * sizeof *y2);
                    gemm_bf16_forward(two, y2, x, w, (size_t)ld * 2, b, n, m, k, scratch);
                    if (memcmp(y1, y2, (size_t)(n * m) * sizeof *y1) != 0)
                        test_fail(__FILE__, __LINE__, "%s: 1 and 2 threads differ", what);
                    /* a row's result does not depend on the rest of the batch, only on the
                     * form, chosen by the row count: compare the last rows alone */
                    int64_t sub = n < GEMM_BF16_PACK_MIN_ROWS ? 1 : GEMM_BF16_PACK_MIN_ROWS;
                    gemm_bf16_forward(two, y2, x + (n - sub) * k, w, (size_t)ld * 2, b, sub, m, k,
                                      scratch);
                    if (memcmp(y1 + (n - sub) * m, y2, (size_t)(sub * m) * sizeof *y1) != 0)
                        test_fail(__FILE__, __LINE__, "%s: last rows alone differ", what);
                    if (level == CPU_LEVEL_GENERIC)
                        memcpy(yg, y1, (size_t)(n * m) * sizeof *y1);
                    for (int64_t i = 0; i < n * m; i++)
                        if (!(fabs(y1[i] - yg[i]) <= 2.0 * tolerance(abs_sum[i], k))) {
                            test_fail(__FILE__, __LINE__, "%s: y[%lld] %.9g vs generic %.9g", what,
                                      (long long)i, (double)y1[i], (double)yg[i]);
                            break;
                        }
                }
                cpu_set_level(best);
            }
        }
        gb_free(&g);
    }
    pool_free(two);
}

/* Inputs at bf16's rounding boundaries: 1 + 2^-8 and 1 + 3 * 2^-8 are ties, 1 + 2^-8 + 2^-20
 * just above one; 1.5 and -2 are bf16 values. */
static const float bf16_edges[5] = { 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f,
                                     1.5f, -2.0f };

/* x is split as hi = bf16(x) rounded to nearest, ties to even (as PyTorch's
 * .to(torch.bfloat16)), plus lo = bf16(x - hi); an x that is a bf16 value is used as it is. */
TEST(gemm_bf16_splits_x)
{
    enum cpu_level best = cpu_detect();
    const uint16_t one = 0x3f80; /* 1.0 */
    /* 1 + 2^-8: hi 1 (tie, even), lo 2^-8; 1 + 3 * 2^-8: hi 1 + 2^-6 (tie, even), lo -2^-8;
     * 1 + 2^-8 + 2^-20: hi 1 + 2^-7, lo -(2^-8 - 2^-20) rounds to -2^-8; 1.5 and -2: bf16 */
    const float *xs = bf16_edges;
    const float want[5] = { 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f, 1.5f, -2.0f };
    for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
        REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
        for (int64_t n = 1; n <= 5; n += 4) { /* the last row alone, then all */
            float y[5];
            gemm_bf16_forward(NULL, y, xs + 5 - n, &one, 2, NULL, n, 1, 1, NULL);
            for (int i = 0; i < n; i++)
                if (y[i] != want[5 - n + i])
                    test_fail(__FILE__, __LINE__, "%s: x %.9g gives %.9g, want %.9g",
                              cpu_level_name((enum cpu_level)level), (double)xs[5 - n + i],
                              (double)y[i], (double)want[5 - n + i]);
        }
    }
    cpu_set_level(best);
}

/* On AVX-512 matmul hands bf16 weights with many rows to gemm_bf16 (the same bits); its
 * scratch is large enough for it. */
TEST(gemm_bf16_matmul_routing)
{
    enum cpu_level best = cpu_detect();
    const int64_t m = 70, k = 129, n = 40;
    uint16_t *w = make_w(m, k, k);
    float *x = malloc((size_t)(n * k) * sizeof *x);
    float *y1 = malloc((size_t)(n * m) * sizeof *y1), *y2 = malloc((size_t)(n * m) * sizeof *y2);
    struct pool *two = pool_create(2);
    REQUIRE(w && x && y1 && y2 && two);
    test_fill_uniform(x, n * k, -1.0f, 1.0f);
    struct tensor t;
    int64_t ne[2] = { k, m };
    REQUIRE(tensor_init(&t, "w", DTYPE_BF16, 2, ne, w) == 0);
    for (int64_t kk = 1; kk <= 4096; kk *= 8) {
        int64_t ne2[2] = { kk, 3 };
        struct tensor t2;
        REQUIRE(tensor_init(&t2, "w", DTYPE_BF16, 2, ne2, NULL) == 0);
        CHECK(matmul_scratch_bytes(NULL, &t2) >= gemm_bf16_scratch_bytes(1, kk));
        CHECK(matmul_scratch_bytes(two, &t2) >= gemm_bf16_scratch_bytes(2, kk));
    }
    if (best == CPU_LEVEL_AVX512) {
        void *scratch = malloc(matmul_scratch_bytes(two, &t));
        REQUIRE(scratch != NULL);
        matmul_forward(two, y1, x, &t, NULL, n, scratch);
        gemm_bf16_forward(NULL, y2, x, w, (size_t)k * 2, NULL, n, m, k, NULL);
        CHECK(memcmp(y1, y2, (size_t)(n * m) * sizeof *y1) == 0);
        free(scratch);
    }
    pool_free(two);
    free(w);
    free(x);
    free(y1);
    free(y2);
}

/* ref[n][m] = sum_k bf16(x) W (+ bias) in double (tests/ref, independent of dtype.c), abs_sum as
 * in reference(). */
static void reference_rounded(double *ref, double *abs_sum, const float *x, const uint16_t *w,
                              int64_t ld, const float *bias, int64_t n, int64_t m, int64_t k)
{
    struct tensor t;
    int64_t ne[2] = { k, m };
    if (tensor_init(&t, "w", DTYPE_BF16, 2, ne, w) != 0)
        abort();
    t.nb[1] = (uint64_t)ld * 2;
    ref_linear_rounded(ref, abs_sum, x, &t, bias, n);
    for (int64_t i = 0; bias && i < n * m; i++)
        abs_sum[i] += fabs(bias[i % m]);
}

static const int64_t rounded_rows[] = { 1, 2, 3, 4, 5, 9, 16, 37, 64, 77, 200 };

/* One shape, one level: both forms against the reference, threads, rows alone (fixed form). */
static void check_rounded(const uint16_t *w, int64_t ld, const float *x, const float *b,
                          const double *ref, const double *abs_sum, int64_t m, int64_t k,
                          struct pool *two, void *scratch, float *y1, float *y2, const char *lvl)
{
    for (size_t ni = 0; ni < sizeof rounded_rows / sizeof rounded_rows[0]; ni++) {
        int64_t n = rounded_rows[ni];
        for (int fixed = 0; fixed <= 1; fixed++) {
            char what[128];
            snprintf(what, sizeof what, "rounded %s M=%lld K=%lld n=%lld fixed=%d bias=%d", lvl,
                     (long long)m, (long long)k, (long long)n, fixed, b != NULL);
            memset(y1, 0xff, (size_t)(n * m) * sizeof *y1);
            gemm_bf16_rounded(NULL, y1, x, w, (size_t)ld * 2, b, n, m, k, fixed, NULL);
            if (!check_close(y1, ref, abs_sum, n, m, k, what))
                continue;
            memset(y2, 0xff, (size_t)(n * m) * sizeof *y2);
            gemm_bf16_rounded(two, y2, x, w, (size_t)ld * 2, b, n, m, k, fixed, scratch);
            if (memcmp(y1, y2, (size_t)(n * m) * sizeof *y1) != 0)
                test_fail(__FILE__, __LINE__, "%s: 1 and 2 threads differ", what);
            if (!fixed)
                continue;
            for (int64_t r = 0; r<n; r += n> 16 ? 7 : 1) { /* each row alone, same bits */
                gemm_bf16_rounded(two, y2, x + r * k, w, (size_t)ld * 2, b, 1, m, k, 1, scratch);
                if (memcmp(y1 + r * m, y2, (size_t)m * sizeof *y1) != 0) {
                    test_fail(__FILE__, __LINE__, "%s: row %lld alone differs", what, (long long)r);
                    break;
                }
            }
        }
    }
}

TEST(gemm_bf16_rounded_against_reference)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    int quick = getenv("PARLEY_TEST_QUICK") != NULL;
    size_t n_shapes = sizeof shapes / sizeof shapes[0] - (quick ? 1 : 0);
    for (size_t si = 0; si < n_shapes; si++) {
        int64_t m = shapes[si].m, k = shapes[si].k, ld = k + 3;
        struct gb_bufs g;
        REQUIRE(gb_alloc(&g, m, k, ld));
        for (int with_bias = 0; with_bias <= 1; with_bias++) {
            const float *b = with_bias ? g.bias : NULL;
            reference_rounded(g.ref, g.abs_sum, g.x, g.w, ld, b, NMAX, m, k);
            for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
                REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
                check_rounded(g.w, ld, g.x, b, g.ref, g.abs_sum, m, k, two, g.scratch, g.y1, g.y2,
                              cpu_level_name((enum cpu_level)level));
            }
            cpu_set_level(best);
        }
        gb_free(&g);
    }
    pool_free(two);
}

/* x is rounded to the nearest bf16, ties to even (PyTorch's .to(torch.bfloat16)), and nothing
 * of the rest is kept. */
TEST(gemm_bf16_rounded_rounds_x)
{
    enum cpu_level best = cpu_detect();
    const uint16_t one = 0x3f80; /* 1.0 */
    /* 1 + 2^-8: a tie, to 1 (even); 1 + 3 * 2^-8: a tie, to 1 + 2^-6; 1 + 2^-8 + 2^-20: up to
     * 1 + 2^-7; 1.5 and -2: bf16 values */
    const float *xs = bf16_edges;
    const float want[5] = { 1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, 1.5f, -2.0f };
    for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
        REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
        for (int fixed = 0; fixed <= 1; fixed++) {
            float y[5];
            gemm_bf16_rounded(NULL, y, xs, &one, 2, NULL, 5, 1, 1, fixed, NULL);
            for (int i = 0; i < 5; i++)
                if (y[i] != want[i])
                    test_fail(__FILE__, __LINE__, "%s fixed=%d: x %.9g gives %.9g, want %.9g",
                              cpu_level_name((enum cpu_level)level), fixed, (double)xs[i],
                              (double)y[i], (double)want[i]);
        }
    }
    cpu_set_level(best);
}

/* Packed weights (gemm_bf16_pack + gemm_bf16_packed): against the reference of bf16(x) · W at
 * every level; at the best level the bits of every row depend on nothing else: 1 or 2 threads,
 * any row count, a row alone, a prefill-sized batch. The portable kernel agrees within rounding. */
TEST(gemm_bf16_packed_against_reference)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t m = shapes[si].m, k = shapes[si].k, ld = k + 3;
        struct gb_bufs g;
        REQUIRE(gb_alloc(&g, m, k, ld));
        void *wp = aligned_alloc(64, gemm_bf16_packed_bytes(m, k) + 64);
        REQUIRE(wp != NULL);
        gemm_bf16_pack(two, wp, g.w, (size_t)ld * 2, m, k);
        for (int with_bias = 0; with_bias <= 1; with_bias++) {
            const float *b = with_bias ? g.bias : NULL;
            reference_rounded(g.ref, g.abs_sum, g.x, g.w, ld, b, NMAX, m, k);
            for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
                REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
                /* the whole batch on one thread: the bits every other call must give */
                gemm_bf16_packed(NULL, g.yg, g.x, wp, b, NMAX, m, k, NULL);
                for (size_t ni = 0; ni < sizeof rounded_rows / sizeof rounded_rows[0]; ni++) {
                    int64_t n = rounded_rows[ni];
                    char what[128];
                    snprintf(what, sizeof what, "packed %s M=%lld K=%lld n=%lld bias=%d",
                             cpu_level_name((enum cpu_level)level), (long long)m, (long long)k,
                             (long long)n, with_bias);
                    memset(g.y1, 0xff, (size_t)(n * m) * sizeof *g.y1);
                    gemm_bf16_packed(two, g.y1, g.x, wp, b, n, m, k, g.scratch);
                    if (!check_close(g.y1, g.ref, g.abs_sum, n, m, k, what))
                        continue;
                    if (memcmp(g.y1, g.yg, (size_t)(n * m) * sizeof *g.y1) != 0)
                        test_fail(__FILE__, __LINE__, "%s: differs from the batch of %d", what,
                                  NMAX);
                    int64_t r = n - 1; /* the last row alone */
                    gemm_bf16_packed(two, g.y2, g.x + r * k, wp, b, 1, m, k, g.scratch);
                    if (memcmp(g.y1 + r * m, g.y2, (size_t)m * sizeof *g.y1) != 0)
                        test_fail(__FILE__, __LINE__, "%s: row %lld alone differs", what,
                                  (long long)r);
                }
            }
            cpu_set_level(best);
        }
        free(wp);
        gb_free(&g);
    }
    pool_free(two);
}
