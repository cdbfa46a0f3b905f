/* Tests of spectral: Hann windows, STFT and iSTFT with HiFT's (16/4) and Whisper's (400/160)
 * parameters against the double-precision DFT reference on odd lengths, the length parameter,
 * round trips, the envelope refusal, Whisper's power, and 1 vs 2 threads bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/spectral.h"
#include "ref/ref_conv.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "test.h"

TEST(spectral_hann_windows)
{
    float w[400];
    spectral_hann(w, 16, 1);
    for (int i = 0; i < 16; i++)
        CHECK_NEAR(w[i], 0.5 - 0.5 * cos(2 * M_PI * i / 16), 3e-8);
    CHECK(w[0] == 0.0f && w[8] == 1.0f && w[4] == 0.5f);
    spectral_hann(w, 400, 1);
    CHECK(w[200] == 1.0f && w[100] == 0.5f);
    spectral_hann(w, 7, 0); /* symmetric: both ends zero */
    CHECK(w[0] == 0.0f && w[6] == 0.0f && w[3] == 1.0f);
    /* torch's float32 recipe: within a few ulps of the exact window, same anchors */
    spectral_hann_torch(w, 400, 1);
    for (int i = 0; i < 400; i++)
        CHECK_NEAR(w[i], 0.5 - 0.5 * cos(2 * M_PI * i / 400), 3e-7);
    CHECK(w[0] == 0.0f && w[200] == 1.0f);
    spectral_hann_torch(w, 1, 1);
    CHECK(w[0] == 1.0f);
}

/* A plan with a periodic Hann window; REQUIREs success. */
static int make_plan(struct spectral_plan *p, int n_fft, int hop)
{
    float *w = malloc((size_t)n_fft * sizeof *w);
    struct err e;
    if (!w)
        return -1;
    spectral_hann(w, n_fft, 1);
    int rc = spectral_plan_init(p, n_fft, hop, w, &e);
    free(w);
    return rc;
}

static float *run_stft(struct pool *pool, const struct spectral_plan *p, const float *x, int64_t l,
                       int64_t frames)
{
    float *out = malloc((size_t)(2 * p->n_bins * frames) * sizeof *out);
    float *scratch = malloc(spectral_stft_scratch_floats(p, frames, pool_threads(pool)) * 4);
    struct err e;
    if (!out || !scratch || spectral_stft(pool, p, out, frames, x, l, scratch, &e)) {
        free(out);
        out = NULL;
    }
    free(scratch);
    return out;
}

static float *run_istft(struct pool *pool, const struct spectral_plan *p, const float *spec,
                        int64_t frames, int64_t length)
{
    float *out = malloc((size_t)(length > 0 ? length : 1) * sizeof *out);
    float *scratch = malloc(spectral_istft_scratch_floats(p, frames) * sizeof *scratch);
    struct err e;
    if (!out || !scratch || spectral_istft(pool, p, out, length, spec, frames, scratch, &e)) {
        free(out);
        out = NULL;
    }
    free(scratch);
    return out;
}

static double max_abs(const float *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

TEST(spectral_stft_vs_reference)
{
    static const struct {
        int n_fft, hop;
        int64_t l;
        int drop_last;
    } cases[] = {
        { 16, 4, 9, 0 },        { 16, 4, 768, 0 },
        { 16, 4, 1001, 0 }, /* HiFT: 256 T samples, and odd */
        { 400, 160, 201, 0 },   { 400, 160, 4000, 1 },
        { 400, 160, 12345, 0 }, /* Whisper */
        { 15, 4, 50, 0 },       /* odd n_fft */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        struct spectral_plan p;
        REQUIRE(make_plan(&p, cases[ci].n_fft, cases[ci].hop) == 0);
        int64_t l = cases[ci].l, frames = spectral_frames(&p, l) - cases[ci].drop_last;
        CHECK(frames == 1 + (l + 2 * (p.n_fft / 2) - p.n_fft) / p.hop - cases[ci].drop_last);
        float *x = malloc((size_t)l * sizeof *x);
        float *ref = malloc((size_t)(2 * p.n_bins * frames) * sizeof *ref);
        REQUIRE(x && ref);
        test_fill_uniform(x, l, -1.0f, 1.0f);
        float *y = run_stft(NULL, &p, x, l, frames);
        REQUIRE(y != NULL);
        ref_conv_stft(ref, x, l, p.n_fft, p.hop, p.window, frames);
        /* sum of |terms| <= sum(w) * max|x| = N/2; error ~ sqrt(N) roundings of it */
        double tol = 4.0 * sqrt((double)p.n_fft) * 0x1p-24 * (p.n_fft / 2.0);
        CHECK_ARRAY_NEAR(y, ref, 2 * p.n_bins * frames, tol);
        free(x), free(ref), free(y);
        spectral_plan_free(&p);
    }
}

TEST(spectral_istft_vs_reference)
{
    static const struct {
        int n_fft, hop;
        int64_t frames, length;
    } cases[] = {
        { 16, 4, 1, -1 },          { 16, 4, 2, -1 },
        { 16, 4, 64 * 3 + 1, -1 },                     /* HiFT: 256 T samples */
        { 16, 4, 50, 150 },        { 16, 4, 50, 230 }, /* shorter / zero tail */
        { 400, 160, 26, -1 },      { 15, 4, 20, -1 },
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        struct spectral_plan p;
        REQUIRE(make_plan(&p, cases[ci].n_fft, cases[ci].hop) == 0);
        int64_t frames = cases[ci].frames, n = 2 * p.n_bins * frames;
        int64_t length = cases[ci].length < 0 ? spectral_istft_len(&p, frames) : cases[ci].length;
        if (length == 0) {
            spectral_plan_free(&p);
            continue;
        }
        float *spec = malloc((size_t)n * sizeof *spec), *ref = malloc((size_t)length * 4);
        REQUIRE(spec && ref);
        test_fill_uniform(spec, n, -3.0f, 3.0f);
        float *y = run_istft(NULL, &p, spec, frames, length);
        REQUIRE(y != NULL);
        REQUIRE(ref_conv_istft(ref, length, spec, frames, p.n_fft, p.hop, p.window) == 0);
        double tol = 8.0 * sqrt((double)p.n_fft) * 0x1p-24 * max_abs(ref, length) + 1e-6;
        CHECK_ARRAY_NEAR(y, ref, length, tol);
        if (cases[ci].length > spectral_istft_len(&p, frames) + p.n_fft / 2) /* zero tail */
            CHECK(y[length - 1] == 0.0f);
        free(spec), free(ref), free(y);
        spectral_plan_free(&p);
    }
}

TEST(spectral_round_trip)
{
    /* istft(stft(x)) == x for HiFT's parameters (the COLA envelope divides out exactly) */
    struct spectral_plan p;
    REQUIRE(make_plan(&p, 16, 4) == 0);
    int64_t l = 256 * 5;
    float x[256 * 5];
    test_fill_uniform(x, l, -1.0f, 1.0f);
    int64_t frames = spectral_frames(&p, l);
    CHECK(frames == 64 * 5 + 1);
    float *spec = run_stft(NULL, &p, x, l, frames);
    REQUIRE(spec != NULL);
    CHECK(spectral_istft_len(&p, frames) == l);
    float *y = run_istft(NULL, &p, spec, frames, l);
    REQUIRE(y != NULL);
    CHECK_ARRAY_NEAR(y, x, l, 2e-6);
    free(spec), free(y);
    spectral_plan_free(&p);
}

TEST(spectral_rejects_bad_input)
{
    struct spectral_plan p;
    struct err e;
    float x[64] = { 0 }, out[2 * 9 * 20], scratch[4096];
    float w[16] = { 0 };
    CHECK(spectral_plan_init(&p, 1, 4, w, &e) == -1);
    spectral_plan_free(&p);
    REQUIRE(make_plan(&p, 16, 4) == 0);
    CHECK(spectral_stft(NULL, &p, out, 1, x, 8, scratch, &e) == -1); /* l <= n_fft/2 */
    CHECK(spectral_stft(NULL, &p, out, 1, x, 9, scratch, &e) == 0);
    CHECK(spectral_stft(NULL, &p, out, 4, x, 9, scratch, &e) == -1); /* too many frames */
    spectral_plan_free(&p);
    /* a symmetric window (zero at both ends) with hop = n_fft leaves envelope zeros */
    spectral_hann(w, 16, 0);
    REQUIRE(spectral_plan_init(&p, 16, 16, w, &e) == 0);
    for (int i = 0; i < 2 * 9 * 4; i++)
        out[i] = 1.0f;
    float y[64];
    y[0] = 42.0f;
    CHECK(spectral_istft(NULL, &p, y, -1, out, 4, scratch, &e) == -1);
    CHECK(strstr(e.msg, "envelope") != NULL);
    CHECK(y[0] == 42.0f);
    CHECK(ref_conv_istft(y, spectral_istft_len(&p, 4), out, 4, 16, 16, w) == -1);
    spectral_plan_free(&p);
}

TEST(spectral_power_whisper)
{
    float spec[2 * 3 * 2] = { 3, 0, 1e-20f, 5, /* re */ 4, 1, 0, 12, /* im */ 0, 0, 0, 0 };
    float pw[3 * 2];
    spectral_power(pw, spec, 3, 2);
    /* bins 0..2 x frames 0..1: re rows 0..2 = {3,0},{1e-20,5},{4,1}; im rows = {0,12},{0,0}... */
    CHECK_NEAR(pw[0], 9.0, 1e-6);
    CHECK(pw[1] == 144.0f);
    CHECK(pw[2] == (float)(1e-20f * 1e-20f) || pw[2] == 0.0f);
    CHECK_NEAR(pw[3], 25.0, 1e-5);
    CHECK_NEAR(pw[4], 16.0, 1e-5);
    CHECK_NEAR(pw[5], 1.0, 1e-6);
}

TEST(spectral_threads_and_levels_identical)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    static const int params[][2] = { { 400, 160 }, { 16, 4 } };
    for (int pi = 0; pi < 2; pi++) {
        struct spectral_plan p;
        REQUIRE(make_plan(&p, params[pi][0], params[pi][1]) == 0);
        int64_t l = 160 * 1000 + 77, frames = spectral_frames(&p, l);
        float *x = malloc((size_t)l * sizeof *x);
        REQUIRE(x != NULL);
        test_fill_uniform(x, l, -1.0f, 1.0f);
        float *s1 = run_stft(NULL, &p, x, l, frames), *y1 = NULL;
        REQUIRE(s1 != NULL);
        y1 = run_istft(NULL, &p, s1, frames, l);
        REQUIRE(y1 != NULL);
        for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
            cpu_set_level((enum cpu_level)level);
            float *s2 = run_stft(two, &p, x, l, frames);
            float *y2 = run_istft(two, &p, s1, frames, l);
            CHECK(s2 && memcmp(s1, s2, (size_t)(2 * p.n_bins * frames) * sizeof *s1) == 0);
            CHECK(y2 && memcmp(y1, y2, (size_t)l * sizeof *y1) == 0);
            free(s2), free(y2);
        }
        cpu_set_level(best);
        CHECK_ARRAY_NEAR(y1, x, l, 1e-5);
        free(x), free(s1), free(y1);
        spectral_plan_free(&p);
    }
    pool_free(two);
}
