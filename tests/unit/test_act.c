/* Tests of act: every activation at every CPU level against the double-precision reference
 * over its whole useful range, special values, in-place use, and 1 vs 2 threads bit for
 * bit.
 *
 * Tolerances (|y − ref| <= rel·|ref| + abs): 1e-6 relative for gelu, silu, mish, tanh, exp,
 * elu, snake, swiglu (the vector functions are ~2 ulp, libm ~1 ulp); abs floors only where
 * results are denormal (exp below −87.3, tails of gelu/silu/mish); sin 1e-6 absolute. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/act.h"
#include "ref/ref_ops.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "test.h"

typedef void act_fn(struct pool *pool, float *out, const float *x, int64_t n, float p);

static void w_gelu(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_gelu(pl, o, x, n);
}
static void w_silu(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_silu(pl, o, x, n);
}
static void w_mish(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_mish(pl, o, x, n);
}
static void w_tanh(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_tanh(pl, o, x, n);
}
static void w_exp(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_exp(pl, o, x, n);
}
static void w_sin(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_sin(pl, o, x, n);
}
static void w_elu(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_elu(pl, o, x, n, p);
}
static void w_leaky(struct pool *pl, float *o, const float *x, int64_t n, float p)
{
    act_leaky_relu(pl, o, x, n, p);
}

static double r_gelu(double x, double p)
{
    return ref_ops_gelu(x);
}
static double r_silu(double x, double p)
{
    return ref_ops_silu(x);
}
static double r_mish(double x, double p)
{
    return ref_ops_mish(x);
}
static double r_tanh(double x, double p)
{
    return tanh(x);
}
static double r_exp(double x, double p)
{
    return exp(x);
}
static double r_sin(double x, double p)
{
    return sin(x);
}
static double r_elu(double x, double p)
{
    return ref_ops_elu(x, p);
}
static double r_leaky(double x, double p)
{
    return ref_ops_leaky_relu(x, p);
}

struct unary_case {
    const char *name;
    act_fn *fn;
    double (*ref)(double x, double p);
    float lo, hi, p;
    double rel, abs;
};

static const struct unary_case cases[] = {
    { "gelu", w_gelu, r_gelu, -20.0f, 20.0f, 0, 1e-6, 1e-37 },
    { "silu", w_silu, r_silu, -90.0f, 90.0f, 0, 1e-6, 1e-36 },
    { "mish", w_mish, r_mish, -90.0f, 60.0f, 0, 1e-6, 1e-37 },
    { "tanh", w_tanh, r_tanh, -12.0f, 12.0f, 0, 1e-6, 0 },
    { "exp", w_exp, r_exp, -110.0f, 88.7f, 0, 1e-6, 3e-45 },
    { "sin", w_sin, r_sin, -100.0f, 100.0f, 0, 0, 1e-6 },
    { "sin_far", w_sin, r_sin, -9000.0f, 9000.0f, 0, 0, 1e-6 },
    { "elu", w_elu, r_elu, -30.0f, 10.0f, 1.0f, 1e-6, 1e-37 },
    { "elu_alpha", w_elu, r_elu, -30.0f, 10.0f, 0.7f, 1e-6, 1e-37 },
    { "leaky", w_leaky, r_leaky, -50.0f, 50.0f, 0.1f, 1e-7, 0 },
};

/* A dense sweep of [lo, hi], random points, and values near 0 on both sides. */
static void fill_inputs(float *x, int64_t n, float lo, float hi)
{
    int64_t k = 0;
    for (; k < n / 2; k++)
        x[k] = lo + (hi - lo) * (float)k / (float)(n / 2);
    for (; k < n - 40; k++)
        x[k] = test_rand_uniform(lo, hi);
    for (int e = 0; k < n; k++, e++)
        x[k] = (e % 2 ? -1.0f : 1.0f) * ldexpf(1.0f, -e); /* ±1, ±1/2, ... */
}

static void check_unary(const struct unary_case *c)
{
    const int64_t n = 4099;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *y2 = malloc(n * sizeof *y2);
    REQUIRE(x && y && y2);
    fill_inputs(x, n, c->lo, c->hi);
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        c->fn(NULL, y, x, n, c->p);
        int bad = 0;
        for (int64_t i = 0; i < n && bad < 5; i++) {
            double r = c->ref(x[i], c->p);
            if (!(fabs(y[i] - r) <= c->rel * fabs(r) + c->abs)) {
                bad++;
                test_fail(__FILE__, __LINE__, "%s at %s: f(%.9g) = %.9g, reference %.9g", c->name,
                          cpu_level_name((enum cpu_level)lv), (double)x[i], (double)y[i], r);
            }
        }
        /* in place gives the same bits */
        memcpy(y2, x, n * sizeof *x);
        c->fn(NULL, y2, y2, n, c->p);
        CHECK(memcmp(y, y2, n * sizeof *y) == 0);
    }
    cpu_set_level(cpu_detect());
    free(x);
    free(y);
    free(y2);
}

TEST(act_unary_accuracy_all_levels)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_unary(&cases[i]);
}

/* Sizes around the vector widths: every tail length goes through the masked path. */
TEST(act_odd_sizes)
{
    float x[67], y[67], ref[67];
    test_fill_uniform(x, 67, -4.0f, 4.0f);
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        for (int n = 0; n <= 33; n++) {
            for (int i = 0; i < 67; i++)
                y[i] = ref[i] = 12345.0f;
            act_gelu(NULL, y, x, n);
            for (int i = 0; i < n; i++)
                ref[i] = (float)ref_ops_gelu(x[i]);
            CHECK_ARRAY_NEAR(y, ref, 67, 1e-6); /* also: nothing written past n */
        }
    }
    cpu_set_level(cpu_detect());
}

TEST(act_special_values)
{
    const float inf = INFINITY;
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        float x[4] = { NAN, inf, -inf, 0.0f }, y[4];
        act_exp(NULL, y, x, 4);
        CHECK(isnan(y[0]) && y[1] == inf && y[2] == 0.0f && y[3] == 1.0f);
        act_tanh(NULL, y, x, 4);
        CHECK(isnan(y[0]) && y[1] == 1.0f && y[2] == -1.0f && y[3] == 0.0f);
        act_gelu(NULL, y, x, 4);
        CHECK(isnan(y[0]) && y[1] == inf && y[3] == 0.0f);
        act_silu(NULL, y, x, 4);
        CHECK(isnan(y[0]) && y[1] == inf && y[3] == 0.0f);
        act_mish(NULL, y, x, 4);
        CHECK(isnan(y[0]) && y[1] == inf && y[3] == 0.0f);
        act_elu(NULL, y, x, 4, 1.0f);
        CHECK(isnan(y[0]) && y[1] == inf && y[2] == -1.0f && y[3] == 0.0f);
        act_leaky_relu(NULL, y, x, 4, 0.01f);
        CHECK(isnan(y[0]) && y[1] == inf && y[2] == -inf && y[3] == 0.0f);
        act_sin(NULL, y, x, 4);
        CHECK(isnan(y[0]) && isnan(y[1]) && isnan(y[2]) && y[3] == 0.0f);
        /* huge and denormal inputs stay finite and right */
        float h[4] = { 1e30f, -1e30f, 1e-40f, -1e-40f }, g[4];
        act_gelu(NULL, g, h, 4);
        CHECK(g[0] == 1e30f && g[1] == 0.0f && fabsf(g[2] - 0.5e-40f) < 1e-44f);
        act_tanh(NULL, g, h, 4);
        CHECK(g[0] == 1.0f && g[1] == -1.0f && g[2] == 1e-40f && g[3] == -1e-40f);
    }
    cpu_set_level(cpu_detect());
}

TEST(act_snake_per_channel)
{
    enum { C = 7, T = 1001 };
    static float x[C * T], y[C * T], y2[C * T];
    float alpha[C] = { 1.0f, 0.05f, 3.0f, 0.37f, 1e-12f, 12.0f, 0.9f };
    for (int i = 0; i < C * T; i++)
        x[i] = test_rand_normal() * 2.0f;
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        act_snake(NULL, y, x, alpha, C, T);
        int bad = 0;
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T && bad < 5; t++) {
                double xv = x[c * T + t], r = ref_ops_snake(xv, alpha[c]);
                double s = sin(alpha[c] * xv), scale = fabs(xv) + s * s / (alpha[c] + 1e-9);
                if (!(fabs(y[c * T + t] - r) <= 2e-6 * scale + 1e-30)) {
                    bad++;
                    test_fail(__FILE__, __LINE__, "%s: snake(%g; alpha %g) = %.9g, ref %.9g",
                              cpu_level_name((enum cpu_level)lv), xv, (double)alpha[c],
                              (double)y[c * T + t], r);
                }
            }
        memcpy(y2, x, sizeof x);
        act_snake(NULL, y2, y2, alpha, C, T);
        CHECK(memcmp(y, y2, sizeof y) == 0);
    }
    cpu_set_level(cpu_detect());
}

TEST(act_swiglu_rows)
{
    enum { R = 3, D = 1001 };
    static float x[R * 2 * D], y[R * D], y2[R * 2 * D];
    test_fill_uniform(x, R * 2 * D, -6.0f, 6.0f);
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        act_swiglu(NULL, y, x, R, D);
        int bad = 0;
        for (int r = 0; r < R; r++)
            for (int d = 0; d < D && bad < 5; d++) {
                double g = x[r * 2 * D + d], u = x[r * 2 * D + D + d];
                double want = ref_ops_silu(g) * u;
                if (!(fabs(y[r * D + d] - want) <= 1e-6 * fabs(want) + 1e-30)) {
                    bad++;
                    test_fail(__FILE__, __LINE__, "swiglu[%d][%d] = %.9g, ref %.9g", r, d,
                              (double)y[r * D + d], want);
                }
            }
        memcpy(y2, x, sizeof x); /* in place: out overlays the front of x */
        act_swiglu(NULL, y2, y2, R, D);
        CHECK(memcmp(y, y2, sizeof y) == 0);
    }
    cpu_set_level(cpu_detect());
}

TEST(act_threads_bit_identical)
{
    const int64_t n = 3 * 8192 + 17;
    float *x = malloc(n * sizeof *x), *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2);
    float alpha[3] = { 0.5f, 1.5f, 0.1f };
    struct pool *two = pool_create(2);
    REQUIRE(x && y1 && y2 && two);
    test_fill_uniform(x, n, -10.0f, 10.0f);
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            cases[i].fn(NULL, y1, x, n, cases[i].p);
            cases[i].fn(two, y2, x, n, cases[i].p);
            if (memcmp(y1, y2, n * sizeof *y1) != 0)
                test_fail(__FILE__, __LINE__, "%s at %s differs with 2 threads", cases[i].name,
                          cpu_level_name((enum cpu_level)lv));
        }
        act_snake(NULL, y1, x, alpha, 3, n / 3);
        act_snake(two, y2, x, alpha, 3, n / 3);
        CHECK(memcmp(y1, y2, (n / 3) * 3 * sizeof *y1) == 0);
        act_swiglu(NULL, y1, x, 9, n / 18);
        act_swiglu(two, y2, x, 9, n / 18);
        CHECK(memcmp(y1, y2, 9 * (n / 18) * sizeof *y1) == 0);
    }
    cpu_set_level(cpu_detect());
    pool_free(two);
    free(x);
    free(y1);
    free(y2);
}
