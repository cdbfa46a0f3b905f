/* Tests of the log-mel front-end: frames against a direct double-precision DFT with the
 * reflection padding, block-wise = whole, the filterbank's shape, the floor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "speech/mel.h"
#include "test.h"

TEST(mel_frames_direct)
{
    struct mel m;
    struct err e;
    REQUIRE(mel_init(&m, 128, 400, 160, 16000, &e) == 0);
    int64_t l = 16000 + 77, nf = 1 + l / 160;
    float *x = malloc((size_t)l * sizeof *x);
    test_fill_uniform(x, l, -0.5f, 0.5f);
    for (int64_t i = 0; i < l; i++)
        x[i] += 0.3f * (float)sin(i * 0.05);
    float *out = malloc((size_t)nf * 128 * sizeof *out);
    float *scr = malloc((size_t)mel_scratch_floats(&m, nf) * sizeof *scr);
    mel_log10(&m, out, x, l, 0, nf, scr);
    /* frames at both edges and one inside, directly */
    int64_t frames[] = { 0, 1, 50, nf - 2, nf - 1 };
    double worst = 0;
    for (size_t fi = 0; fi < sizeof frames / sizeof frames[0]; fi++) {
        int64_t f = frames[fi];
        double power[201];
        for (int k = 0; k < 201; k++) {
            double re = 0, im = 0;
            for (int i = 0; i < 400; i++) {
                int64_t t = f * 160 - 200 + i;
                t = t < 0 ? -t : t >= l ? 2 * (l - 1) - t : t;
                double v = (double)m.window[i] * x[t];
                re += v * cos(2 * M_PI * (double)(k * i % 400) / 400);
                im -= v * sin(2 * M_PI * (double)(k * i % 400) / 400);
            }
            power[k] = re * re + im * im;
        }
        for (int j = 0; j < 128; j++) {
            double s = 0;
            for (int k = 0; k < 201; k++)
                s += m.filters[j * 201 + k] * power[k];
            double want = log10(fmax(s, 1e-10));
            worst = fmax(worst, fabs(want - out[f * 128 + j]));
        }
    }
    CHECK(worst < 2e-5);
    /* block-wise computation gives the same frames */
    float *part = malloc((size_t)nf * 128 * sizeof *part);
    for (int64_t f0 = 0; f0 < nf; f0 += 37)
        mel_log10(&m, part + f0 * 128, x, l, f0, nf - f0 < 37 ? nf - f0 : 37, scr);
    CHECK_ARRAY_NEAR(part, out, nf * 128, 1e-6);
    free(part);
    free(x);
    free(out);
    free(scr);
    mel_free(&m);
}

TEST(mel_filterbank_and_floor)
{
    struct mel m;
    struct err e;
    REQUIRE(mel_init(&m, 128, 400, 160, 16000, &e) == 0);
    /* triangles: non-negative, each filter's peak after the previous one's, Slaney area
     * normalisation: sum_k W[k] * 40 Hz is near 1 for filters several bins wide */
    int prev_peak = -1;
    for (int j = 0; j < 128; j++) {
        int peak = 0;
        double area = 0;
        for (int k = 0; k < 201; k++) {
            float v = m.filters[j * 201 + k];
            CHECK(v >= 0);
            if (v > m.filters[j * 201 + peak])
                peak = k;
            area += v * 40.0;
        }
        CHECK(peak >= prev_peak);
        prev_peak = peak;
        if (j > 60)
            CHECK_NEAR(area, 1.0, 0.15); /* sampled triangles: ±10 % */
    }
    CHECK(mel_feature(-3.0f, 1.0f) == 0.25f);
    CHECK(mel_feature(-9.0f, 1.0f) == -0.75f); /* floored at max - 8 */
    mel_free(&m);
    CHECK(mel_init(&m, 0, 400, 160, 16000, &e) == -1);
    CHECK(mel_init(&m, 128, 400, 0, 16000, &e) == -1);
    mel_free(&m);
}
