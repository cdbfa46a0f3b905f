/* Tests of rope: the table against the reference's (cos, sin), the rotation against the
 * double-precision reference on GLM-4's shapes and odd ones, positions past the table,
 * explicit positions vs pos0 + i, strided rows, and 1 vs 2 threads bit for bit.
 *
 * Tolerances: table entries equal to the reference's f32 (or bf16) value within 1 f32 ulp
 * (libm cosf/sinf vs a correctly rounded double evaluation); rotated values within
 * 4e-7·(|x0| + |x1|) (two products and a sum in f32, plus that ulp). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/rope.h"
#include "ref/ref_ops.h"
#include "runtime/pool.h"
#include "test.h"

TEST(rope_table_values)
{
    for (int bf = 0; bf < 2; bf++) {
        struct rope_table t;
        struct err e;
        REQUIRE(rope_table_init(&t, 64, 10000.0f, 8192, bf, &e) == 0);
        int bad = 0;
        for (int64_t p = 0; p < 8192 && bad < 5; p += (p < 64 ? 1 : 97))
            for (int i = 0; i < 32; i++) {
                double c, s;
                float fc, fs;
                ref_ops_rope_cs(&c, &s, p, i, 64, 10000.0f, bf);
                rope_cos_sin(&t, p, i, &fc, &fs);
                /* with bf16 rounding a 1-ulp f32 difference can cross a bf16 midpoint */
                double tol = bf ? 0x1p-8 : 0x1p-24;
                if (!(fabs(fc - c) <= tol && fabs(fs - s) <= tol)) {
                    bad++;
                    test_fail(__FILE__, __LINE__, "p %lld i %d: (%.9g, %.9g) vs (%.9g, %.9g)",
                              (long long)p, i, (double)fc, (double)fs, c, s);
                }
            }
        /* past the table: computed on the fly, the same numbers */
        struct rope_table small;
        REQUIRE(rope_table_init(&small, 64, 10000.0f, 100, bf, &e) == 0);
        for (int64_t p = 100; p < 8192; p += 331)
            for (int i = 0; i < 32; i++) {
                float c1, s1, c2, s2;
                rope_cos_sin(&t, p, i, &c1, &s1);
                rope_cos_sin(&small, p, i, &c2, &s2);
                CHECK(c1 == c2 && s1 == s2);
            }
        rope_table_free(&small);
        rope_table_free(&t);
    }
    struct rope_table t;
    struct err e;
    CHECK(rope_table_init(&t, 63, 10000.0f, 10, 0, &e) == -1);
    CHECK(rope_table_init(&t, 64, 0.0f, 10, 0, &e) == -1);
}

static void check_rope(int n_rows, int n_head, int head_dim, int rot_dim, int64_t table_pos, int bf,
                       const int64_t *pos)
{
    const int64_t row = (int64_t)n_head * head_dim, stride = row + 3;
    float *x = malloc(n_rows * row * 4), *y = malloc(n_rows * stride * 4);
    float *y2 = malloc(n_rows * stride * 4);
    double *ref = malloc(n_rows * row * 8);
    struct rope_table t;
    struct err e;
    struct pool *two = pool_create(2);
    REQUIRE(x && y && y2 && ref && two);
    REQUIRE(rope_table_init(&t, rot_dim, 10000.0f, table_pos, bf, &e) == 0);
    for (int64_t i = 0; i < n_rows * row; i++)
        x[i] = test_rand_normal() * 4.0f;
    ref_ops_rope(ref, x, n_rows, n_head, head_dim, rot_dim, 10000.0f, pos, bf);
    for (int r = 0; r < n_rows; r++)
        memcpy(y + r * stride, x + r * row, row * 4);
    rope_apply(NULL, &t, y, n_rows, stride, n_head, head_dim, pos, 0);
    int bad = 0;
    for (int r = 0; r < n_rows; r++)
        for (int h = 0; h < n_head; h++)
            for (int d = 0; d < head_dim && bad < 5; d++) {
                const float *xh = x + r * row + h * head_dim;
                int pair = d / 2 * 2;
                double scale = d < rot_dim ? fabs(xh[pair]) + fabs(xh[pair + 1]) : 0;
                double got = y[r * stride + h * head_dim + d],
                       want = ref[r * row + h * head_dim + d];
                if (!(fabs(got - want) <= 4e-7 * scale)) {
                    bad++;
                    test_fail(__FILE__, __LINE__, "row %d (pos %lld) head %d dim %d: %.9g vs %.9g",
                              r, (long long)pos[r], h, d, got, want);
                }
            }
    /* 2 threads: same bits */
    for (int r = 0; r < n_rows; r++)
        memcpy(y2 + r * stride, x + r * row, row * 4);
    rope_apply(two, &t, y2, n_rows, stride, n_head, head_dim, pos, 0);
    for (int r = 0; r < n_rows; r++)
        CHECK(memcmp(y + r * stride, y2 + r * stride, row * 4) == 0);
    rope_table_free(&t);
    pool_free(two);
    free(x), free(y), free(y2), free(ref);
}

TEST(rope_glm4_shapes)
{
    enum { N = 300 };
    static int64_t pos[N];
    for (int i = 0; i < N; i++)
        pos[i] = i % 3 == 0 ? (int64_t)(test_rand_u64() % 8192) : i;
    check_rope(N, 32, 128, 64, 8192, 1, pos); /* Q heads */
    check_rope(N, 2, 128, 64, 8192, 1, pos);  /* K heads */
    check_rope(N, 2, 128, 64, 8192, 0, pos);  /* f32 table */
    check_rope(N, 2, 128, 64, 1000, 1, pos);  /* most positions past the table */
}

TEST(rope_odd_shapes)
{
    int64_t pos[5] = { 0, 1, 17, 4000, 3 };
    check_rope(5, 3, 6, 2, 64, 0, pos);   /* one pair per head */
    check_rope(5, 1, 10, 10, 64, 1, pos); /* whole head rotates */
    check_rope(1, 5, 18, 8, 0, 0, pos);   /* empty table */
}

TEST(rope_pos0_matches_positions)
{
    enum { N = 9, H = 4, D = 16 };
    float a[N * H * D], b[N * H * D];
    int64_t pos[N];
    struct rope_table t;
    struct err e;
    REQUIRE(rope_table_init(&t, 8, 500000.0f, 64, 1, &e) == 0);
    test_fill_uniform(a, N * H * D, -2, 2);
    memcpy(b, a, sizeof a);
    for (int i = 0; i < N; i++)
        pos[i] = 57 + i; /* crosses the end of the table */
    rope_apply(NULL, &t, a, N, H * D, H, D, pos, 0);
    rope_apply(NULL, &t, b, N, H * D, H, D, NULL, 57);
    CHECK(memcmp(a, b, sizeof a) == 0);
    rope_table_free(&t);
}
