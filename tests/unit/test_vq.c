/* Tests of vq: argmin against exact double distances on random data over every tiling path
 * (sgemv and sgemm tiles, several codebook and query tiles), exact ties resolving to the
 * lowest index across tiles, constructed near-ties, and 1 vs 2 threads bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/vq.h"
#include "ref/ref_conv.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "test.h"

static double sq_norm(const float *v, int64_t d)
{
    double s = 0.0;
    for (int64_t i = 0; i < d; i++)
        s += (double)v[i] * v[i];
    return s;
}

/* Runs vq_argmin with a pool; idx/dist must hold n entries. */
static void run_vq(struct pool *pool, int32_t *idx, float *dist, const float *x, int64_t n,
                   const float *cb, const float *norms, int64_t j, int64_t d)
{
    float *scratch = malloc(vq_scratch_floats(n, j, pool_threads(pool)) * sizeof *scratch);
    if (!scratch)
        abort();
    vq_argmin(pool, idx, dist, x, n, cb, norms, j, d, scratch);
    free(scratch);
}

/* Each choice must be the exact argmin, or within rounding of it: the float32 formula carries
 * errors of a few ulps of ||x||^2 + ||c||^2. */
static void check_against_exact(const int32_t *idx, const float *dist, const float *x, int64_t n,
                                const float *cb, int64_t j, int64_t d, int *mismatches)
{
    double *exact = malloc((size_t)j * sizeof *exact);
    int32_t *want = malloc((size_t)n * sizeof *want);
    if (!exact || !want)
        abort();
    ref_conv_vq_argmin(want, x, n, cb, j, d);
    for (int64_t a = 0; a < n; a++) {
        ref_conv_vq_dist(exact, x + a * d, 1, cb, j, d);
        double grain =
            (sq_norm(x + a * d, d) + sq_norm(cb + (int64_t)want[a] * d, d)) * 0x1p-24 * 8.0 + 1e-30;
        if (idx[a] < 0 || idx[a] >= j) {
            test_fail(__FILE__, __LINE__, "vq: idx[%lld] = %d out of range", (long long)a, idx[a]);
            break;
        }
        if (idx[a] != want[a]) {
            ++*mismatches;
            if (!(exact[idx[a]] - exact[want[a]] <= grain))
                test_fail(__FILE__, __LINE__,
                          "vq: row %lld chose %d (dist %.9g), exact argmin "
                          "%d (dist %.9g)",
                          (long long)a, idx[a], exact[idx[a]], want[a], exact[want[a]]);
        }
        CHECK_NEAR(dist[a], exact[want[a]], grain);
    }
    free(exact);
    free(want);
}

TEST(vq_random_vs_exact)
{
    static const struct {
        int64_t n, j, d;
    } cases[] = {
        { 1, 1, 1 },     { 1, 7, 3 },      { 2, 513, 16 },   { 3, 1100, 16 },
        { 4, 1100, 16 }, { 37, 1000, 64 }, { 600, 1030, 8 }, { 20, 2048, 1280 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t n = cases[i].n, j = cases[i].j, d = cases[i].d;
        float *x = malloc((size_t)(n * d) * sizeof *x), *cb = malloc((size_t)(j * d) * 4);
        float *norms = malloc((size_t)j * sizeof *norms), *dist = malloc((size_t)n * 4);
        int32_t *idx = malloc((size_t)n * sizeof *idx);
        REQUIRE(x && cb && norms && dist && idx);
        test_fill_uniform(x, n * d, -1.0f, 1.0f);
        test_fill_uniform(cb, j * d, -1.0f, 1.0f);
        vq_codebook_norms(norms, cb, j, d);
        for (int64_t r = 0; r < j; r++)
            CHECK_NEAR(norms[r], sq_norm(cb + r * d, d), 1e-6 * norms[r]);
        run_vq(NULL, idx, dist, x, n, cb, norms, j, d);
        int mismatches = 0;
        check_against_exact(idx, dist, x, n, cb, j, d, &mismatches);
        CHECK(mismatches <= n / 100); /* random data: near-ties are rare */
        free(x), free(cb), free(norms), free(dist), free(idx);
    }
}

TEST(vq_ties_lowest_index)
{
    int64_t j = 1100, d = 32, n = 6;
    float *cb = malloc((size_t)(j * d) * sizeof *cb), *norms = malloc((size_t)j * 4);
    float x[6 * 32], dist[6];
    int32_t idx[6];
    REQUIRE(cb && norms);
    test_fill_uniform(cb, j * d, -1.0f, 1.0f);
    /* duplicates: within a tile (5, 9), across tiles (100, 700, 1099) */
    static const int64_t pairs[][2] = { { 5, 9 }, { 100, 700 }, { 100, 1099 } };
    memcpy(cb + 9 * d, cb + 5 * d, (size_t)d * sizeof *cb);
    memcpy(cb + 700 * d, cb + 100 * d, (size_t)d * sizeof *cb);
    memcpy(cb + 1099 * d, cb + 100 * d, (size_t)d * sizeof *cb);
    vq_codebook_norms(norms, cb, j, d);
    for (int r = 0; r < 6; r++) {
        const float *c = cb + pairs[r % 3][0] * d;
        for (int64_t i = 0; i < d; i++)
            x[r * d + i] = c[i] + (r < 3 ? 0.0f : 0.01f * test_rand_uniform(-1.0f, 1.0f));
    }
    for (int64_t nn = 1; nn <= n; nn += n - 1) { /* the sgemv path and the sgemm path */
        run_vq(NULL, idx, dist, x, nn, cb, norms, j, d);
        for (int r = 0; r < nn; r++)
            CHECK(idx[r] == pairs[r % 3][0]);
    }
    /* a codebook of one repeated row: always index 0 */
    for (int64_t r = 1; r < j; r++)
        memcpy(cb + r * d, cb, (size_t)d * sizeof *cb);
    vq_codebook_norms(norms, cb, j, d);
    run_vq(NULL, idx, dist, x, n, cb, norms, j, d);
    for (int r = 0; r < n; r++)
        CHECK(idx[r] == 0);
    free(cb), free(norms);
}

TEST(vq_near_ties)
{
    /* two rows whose exact distances to x differ far below float resolution: either may win,
     * but the choice must be one of them and its distance must be right */
    int64_t j = 600, d = 1280, n = 8;
    float *cb = malloc((size_t)(j * d) * sizeof *cb), *norms = malloc((size_t)j * 4);
    float *x = malloc((size_t)(n * d) * sizeof *x), dist[8];
    int32_t idx[8];
    REQUIRE(cb && norms && x);
    test_fill_uniform(cb, j * d, -1.0f, 1.0f);
    for (int r = 0; r < n; r++) {
        int64_t a = 10 + 70 * r, b = a + 1 + r * 11;
        float *ca = cb + a * d, *cbb = cb + b * d;
        for (int64_t i = 0; i < d; i++)
            cbb[i] = ca[i];
        cbb[r] = nextafterf(ca[r], 2.0f); /* one ulp apart in one coordinate */
        for (int64_t i = 0; i < d; i++)
            x[r * d + i] = 0.5f * (ca[i] + cbb[i]) + 0.05f * test_rand_uniform(-1.0f, 1.0f);
    }
    vq_codebook_norms(norms, cb, j, d);
    run_vq(NULL, idx, dist, x, n, cb, norms, j, d);
    int mismatches = 0;
    check_against_exact(idx, dist, x, n, cb, j, d, &mismatches);
    for (int r = 0; r < n; r++) {
        int64_t a = 10 + 70 * r, b = a + 1 + r * 11;
        CHECK(idx[r] == a || idx[r] == b);
    }
    free(cb), free(norms), free(x);
}

TEST(vq_threads_and_levels_identical)
{
    int64_t n = 375, j = 4096, d = 128;
    float *x = malloc((size_t)(n * d) * sizeof *x), *cb = malloc((size_t)(j * d) * 4);
    float *norms = malloc((size_t)j * 4), *d1 = malloc((size_t)n * 4), *d2 = malloc((size_t)n * 4);
    int32_t *i1 = malloc((size_t)n * 4), *i2 = malloc((size_t)n * 4);
    struct pool *two = pool_create(2);
    REQUIRE(x && cb && norms && d1 && d2 && i1 && i2 && two);
    test_fill_uniform(x, n * d, -1.0f, 1.0f);
    test_fill_uniform(cb, j * d, -1.0f, 1.0f);
    vq_codebook_norms(norms, cb, j, d);
    run_vq(NULL, i1, d1, x, n, cb, norms, j, d);
    enum cpu_level best = cpu_detect();
    for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
        cpu_set_level((enum cpu_level)level);
        run_vq(two, i2, d2, x, n, cb, norms, j, d);
        CHECK(memcmp(i1, i2, (size_t)n * sizeof *i1) == 0);
        CHECK(memcmp(d1, d2, (size_t)n * sizeof *d1) == 0);
    }
    cpu_set_level(best);
    /* a query alone (the sgemv path) gets the same index and distance as inside a batch */
    for (int64_t r = 0; r < 40; r++) {
        int32_t one;
        float one_d;
        run_vq(two, &one, &one_d, x + r * d, 1, cb, norms, j, d);
        CHECK(one == i1[r] && one_d == d1[r]);
    }
    pool_free(two);
    free(x), free(cb), free(norms), free(d1), free(d2), free(i1), free(i2);
}
