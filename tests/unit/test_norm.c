/* Tests of norm: RMSNorm (with and without bf16 rounding), LayerNorm and GroupNorm against
 * the double-precision reference on odd shapes; the same bits at every CPU level and with
 * 1 or 2 threads; in place.
 *
 * Tolerances: |y − ref| <= 1e-6 · scale, scale = |ref| for RMSNorm and |ref| + 4|w| + |b| for
 * LayerNorm/GroupNorm (the normalized value, of size up to ~4 here, carries the error of a
 * few ulp from the mean/variance sums, before w and b; ×10 with a common offset of 100,
 * which the f32 inputs themselves only resolve to ~1e-5). bf16 output: within half a bf16
 * ulp (2^-8 relative) plus that, exactly bf16-representable, and equal to the nearest bf16
 * of the exact value wherever that is not within 20% of a rounding midpoint. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/norm.h"
#include "ref/ref_ops.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "test.h"

struct shape {
    int64_t n, dim;
};
static const struct shape shapes[] = { { 1, 4096 }, { 3, 1 },  { 5, 17 }, { 2, 4099 },
                                       { 7, 1280 }, { 1, 15 }, { 4, 512 } };

/* |y − ref| <= rel·scale for every element. */
static int close_to(const float *y, const double *ref, const double *scale, int64_t n, double rel,
                    const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(y[i] - ref[i]) <= rel * scale[i] + 1e-30)) {
            test_fail(__FILE__, __LINE__, "%s: [%lld] = %.9g, reference %.9g", what, (long long)i,
                      (double)y[i], ref[i]);
            return 0;
        }
    return 1;
}

TEST(norm_rms_odd_sizes)
{
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t n = shapes[s].n, d = shapes[s].dim;
        float *x = malloc(n * d * 4), *w = malloc(d * 4), *y = malloc(n * d * 4);
        double *ref = malloc(n * d * 8), *scale = malloc(n * d * 8);
        REQUIRE(x && w && y && ref && scale);
        for (int64_t i = 0; i < n * d; i++)
            x[i] = test_rand_normal() * 3.0f + 0.5f;
        test_fill_uniform(w, d, -2.0f, 2.0f);
        for (int k = 0; k < 2; k++) {
            float eps = k ? 3.90625e-8f : 1e-5f;
            ref_ops_rms_norm(ref, x, w, n, d, eps);
            for (int64_t i = 0; i < n * d; i++)
                scale[i] = fabs(ref[i]);
            norm_rms(NULL, y, x, w, n, d, eps, 0);
            close_to(y, ref, scale, n * d, 1e-6, "rms");
            norm_rms(NULL, y, x, w, n, d, eps, 1);
            int bad = 0;
            for (int64_t i = 0; i < n * d && bad < 5; i++) {
                uint32_t u;
                memcpy(&u, &y[i], 4);
                if ((u & 0xffff) || !(fabs(y[i] - ref[i]) <= (0x1p-8 + 1e-6) * fabs(ref[i]))) {
                    bad++;
                    test_fail(__FILE__, __LINE__, "rms bf16 [%lld] = %.9g, reference %.9g",
                              (long long)i, (double)y[i], ref[i]);
                }
                /* away from a rounding midpoint it is the nearest bf16 of the exact value */
                float rf = (float)ref[i];
                if (fabs(ref_ops_bf16(rf) - ref[i]) < 0.4 * fabs(ref[i]) * 0x1p-8)
                    CHECK(y[i] == (float)ref_ops_bf16(rf));
            }
        }
        free(x), free(w), free(y), free(ref), free(scale);
    }
}

TEST(norm_layer_odd_sizes)
{
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t n = shapes[s].n, d = shapes[s].dim;
        float *x = malloc(n * d * 4), *w = malloc(d * 4), *b = malloc(d * 4);
        float *y = malloc(n * d * 4);
        double *ref = malloc(n * d * 8), *scale = malloc(n * d * 8);
        REQUIRE(x && w && b && y && ref && scale);
        for (int k = 0; k < 3; k++) {
            /* k = 2: a large common offset, where E[x²] − E[x]² would cancel */
            for (int64_t i = 0; i < n * d; i++)
                x[i] = test_rand_normal() * 2.0f + (k == 2 ? 100.0f : 0.5f);
            test_fill_uniform(w, d, -2.0f, 2.0f);
            test_fill_uniform(b, d, -1.0f, 1.0f);
            const float *wk = k == 1 ? NULL : w, *bk = k == 1 ? NULL : b;
            ref_ops_layer_norm(ref, x, wk, bk, n, d, 1e-5);
            for (int64_t i = 0; i < n * d; i++) {
                double wi = wk ? fabs(wk[i % d]) : 1.0, bi = bk ? fabs(bk[i % d]) : 0.0;
                /* the normalized value (not its product with w) carries the error; with an
                 * offset of 100 the inputs themselves only hold ~1e-5 of it */
                scale[i] = (fabs(ref[i]) + wi * 4 + bi) * (k == 2 ? 10 : 1);
            }
            norm_layer(NULL, y, x, wk, bk, n, d, 1e-5f);
            close_to(y, ref, scale, n * d, 1e-6, "layer");
        }
        free(x), free(w), free(b), free(y), free(ref), free(scale);
    }
}

TEST(norm_group_shapes)
{
    static const struct {
        int64_t c, t;
        int g;
    } gs[] = { { 80, 37, 1 }, { 256, 69, 8 }, { 16, 1, 4 }, { 12, 1000, 3 }, { 8, 5, 8 } };
    for (size_t s = 0; s < sizeof gs / sizeof gs[0]; s++) {
        int64_t c = gs[s].c, t = gs[s].t;
        float *x = malloc(c * t * 4), *w = malloc(c * 4), *b = malloc(c * 4);
        float *y = malloc(c * t * 4);
        double *ref = malloc(c * t * 8), *scale = malloc(c * t * 8);
        REQUIRE(x && w && b && y && ref && scale);
        for (int64_t i = 0; i < c * t; i++)
            x[i] = test_rand_normal() * 1.5f - 0.7f;
        test_fill_uniform(w, c, -2.0f, 2.0f);
        test_fill_uniform(b, c, -1.0f, 1.0f);
        ref_ops_group_norm(ref, x, w, b, c, t, gs[s].g, 1e-5);
        for (int64_t i = 0; i < c * t; i++)
            scale[i] = fabs(ref[i]) + fabs(w[i / t]) * 4 + fabs(b[i / t]);
        norm_group(NULL, y, x, w, b, c, t, gs[s].g, 1e-5f);
        close_to(y, ref, scale, c * t, 1e-6, "group");
        free(x), free(w), free(b), free(y), free(ref), free(scale);
    }
}

/* One value per row (LayerNorm of a constant row): var = 0, the output is the bias. */
TEST(norm_layer_constant_row)
{
    float x[3] = { 5.0f, 5.0f, 5.0f }, w[3] = { 2, 2, 2 }, b[3] = { 0.25f, -1, 3 }, y[3];
    norm_layer(NULL, y, x, w, b, 1, 3, 1e-5f);
    CHECK(y[0] == 0.25f && y[1] == -1.0f && y[2] == 3.0f);
}

/* The same bits at every CPU level, with 1 or 2 threads, and in place. */
TEST(norm_threads_levels_in_place)
{
    const int64_t n = 37, d = 1283, c = 64, t = 517;
    float *x = malloc(n * d * 4), *w = malloc(d * 4), *b = malloc(d * 4);
    float *y0 = malloc(n * d * 4), *y1 = malloc(n * d * 4);
    struct pool *two = pool_create(2);
    REQUIRE(x && w && b && y0 && y1 && two);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = test_rand_normal();
    test_fill_uniform(w, d, -2.0f, 2.0f);
    test_fill_uniform(b, d, -1.0f, 1.0f);
    for (int op = 0; op < 3; op++) {
        int first = 1;
        for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
            REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
            for (int k = 0; k < 3; k++) { /* NULL pool, 2 threads, in place */
                struct pool *p = k == 1 ? two : NULL;
                float *y = first ? y0 : y1;
                if (k == 2)
                    memcpy(y, x, n * d * 4);
                const float *in = k == 2 ? y : x;
                if (op == 0)
                    norm_rms(p, y, in, w, n, d, 1e-6f, 1);
                else if (op == 1)
                    norm_layer(p, y, in, w, b, n, d, 1e-5f);
                else
                    norm_group(p, y, in, w, b, c, t, 8, 1e-5f);
                if (!first && memcmp(y0, y1, (op == 2 ? c * t : n * d) * 4) != 0)
                    test_fail(__FILE__, __LINE__, "op %d differs at %s, run %d", op,
                              cpu_level_name((enum cpu_level)lv), k);
                first = 0;
            }
        }
    }
    cpu_set_level(cpu_detect());
    pool_free(two);
    free(x), free(w), free(b), free(y0), free(y1);
}
