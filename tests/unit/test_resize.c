/* Tests of resize: average pooling (ragged tails, both layouts) against the double reference;
 * nearest upsampling index rules (PyTorch's float32 formula and its special cases), both
 * layouts, and repetition by a factor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/resize.h"
#include "ref/ref_conv.h"
#include "test.h"

static void transpose(float *dst, const float *src, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            dst[c * rows + r] = src[r * cols + c];
}

TEST(resize_avg_pool_ragged)
{
    static const struct {
        int64_t c, t;
        int k, s, pad;
    } cases[] = {
        { 1, 1, 1, 1, 0 },  { 1, 4, 4, 4, 0 },
        { 3, 17, 4, 4, 3 }, /* tokenizer: pad to a multiple */
        { 5, 9, 4, 4, 0 },  /* no pad: the ragged tail is dropped */
        { 2, 10, 3, 2, 1 }, { 1280, 375 * 4 - 2, 4, 4, 2 },
        { 7, 6, 6, 1, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t c = cases[i].c, t = cases[i].t;
        int k = cases[i].k, s = cases[i].s, pad = cases[i].pad;
        int64_t t_out = resize_avg_pool_out_len(t, k, s, pad);
        float *x = malloc((size_t)(c * t) * sizeof *x), *xt = malloc((size_t)(c * t) * sizeof *x);
        float *y = malloc((size_t)(c * t_out) * sizeof *y), *ref = malloc((size_t)(c * t_out) * 4);
        float *yt = malloc((size_t)(c * t_out) * sizeof *y), *ytt = malloc((size_t)(c * t_out) * 4);
        REQUIRE(x && xt && y && ref && yt && ytt && t_out > 0);
        test_fill_uniform(x, c * t, -2.0f, 2.0f);
        CHECK(ref_conv_avg_pool(ref, x, c, t, k, s, pad) == t_out);
        resize_avg_pool(y, x, c, t, k, s, pad);
        CHECK_ARRAY_NEAR(y, ref, c * t_out, 2e-6 * k);
        transpose(xt, x, c, t); /* [T][C] */
        resize_avg_pool_tc(yt, xt, t, c, k, s, pad);
        transpose(ytt, yt, t_out, c);
        CHECK(memcmp(ytt, y, (size_t)(c * t_out) * sizeof *y) == 0); /* same sum order */
        free(x), free(xt), free(y), free(ref), free(yt), free(ytt);
    }
    CHECK(resize_avg_pool_out_len(3, 4, 4, 0) == 0);
    CHECK(resize_avg_pool_out_len(3, 4, 4, 1) == 1);
    CHECK(resize_avg_pool_out_len(1500, 4, 4, 0) == 375);
}

TEST(resize_nearest_index_rules)
{
    /* every length pair up to 64, plus flow-decoder sizes (n tokens -> frames) */
    for (int64_t in = 1; in <= 64; in++)
        for (int64_t out = 1; out <= 64; out++)
            for (int64_t d = 0; d < out; d++) {
                int64_t got = resize_nearest_index(d, in, out);
                if (got != ref_conv_nearest_index(d, in, out) || got < 0 || got >= in) {
                    CHECK(got == ref_conv_nearest_index(d, in, out));
                    return;
                }
            }
    static const int64_t toks[] = { 10, 20, 25, 26, 50, 100, 150, 200, 3392 };
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
        int64_t n = toks[i], t = (int64_t)((float)n / 12.5f * 22050.0f / 256.0f);
        for (int64_t d = 0; d < t; d++)
            CHECK(resize_nearest_index(d, n, t) == ref_conv_nearest_index(d, n, t));
    }
    /* the float32 scale is not the exact ratio: 2 -> 82 maps frame 41 to source 0, where
     * floor(41 * 2 / 82) would be 1 */
    CHECK(resize_nearest_index(41, 2, 82) == 0);
    CHECK(resize_nearest_index(6, 3, 7) == 2);
    CHECK(resize_nearest_index(5, 3, 6) == 2); /* out == 2*in: shift */
    CHECK(resize_nearest_index(4, 5, 5) == 4);
}

TEST(resize_nearest_layouts)
{
    int64_t c = 5, t_in = 13, t_out = 89;
    float x[5 * 13], xt[5 * 13], y[5 * 89], yt[5 * 89], ytt[5 * 89];
    test_fill_uniform(x, c * t_in, -1.0f, 1.0f);
    resize_nearest(y, x, c, t_in, t_out);
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t t = 0; t < t_out; t++)
            CHECK(y[ch * t_out + t] == x[ch * t_in + ref_conv_nearest_index(t, t_in, t_out)]);
    transpose(xt, x, c, t_in);
    resize_nearest_tc(yt, xt, t_in, c, t_out);
    transpose(ytt, yt, t_out, c);
    CHECK(memcmp(ytt, y, sizeof y) == 0);
    /* downsampling too */
    resize_nearest(y, x, c, t_in, 4);
    for (int64_t t = 0; t < 4; t++)
        CHECK(y[t] == x[ref_conv_nearest_index(t, t_in, 4)]);
}

TEST(resize_repeat_factors)
{
    int64_t c = 2, t_in = 37;
    float x[2 * 37];
    test_fill_uniform(x, c * t_in, -1.0f, 1.0f);
    float *y = malloc((size_t)(c * t_in * 256) * sizeof *y);
    REQUIRE(y != NULL);
    resize_repeat(y, x, c, t_in, 256); /* HiFT F0: exact repetition */
    int ok = 1;
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t t = 0; t < t_in * 256; t++)
            ok &= y[ch * t_in * 256 + t] == x[ch * t_in + t / 256];
    CHECK(ok);
    for (int f = 1; f <= 7; f++) {
        resize_repeat(y, x, c, t_in, f);
        ok = 1;
        for (int64_t t = 0; t < t_in * f; t++) {
            /* scale_factor path: s = (float)(1.0 / f) */
            int64_t src = f <= 2 ? t / f : (int64_t)floorf((float)t * (float)(1.0 / f));
            if (src > t_in - 1)
                src = t_in - 1;
            ok &= y[t] == x[src] && y[t_in * f + t] == x[t_in + src];
        }
        CHECK(ok);
    }
    free(y);
}
