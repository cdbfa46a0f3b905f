/* Tests of proto/audio/codec: soxr resampling keeps tones and lengths; Opus round trips. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "audio/codec.h"
#include "test.h"

static void codec_sine(float *x, int64_t n, double freq, int rate, float amp)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = amp * (float)sin(2 * M_PI * freq * (double)i / rate);
}

/* Amplitude and frequency of a sine by correlation with sin/cos at freq, over [a, b). */
static double codec_tone_amp(const float *x, int64_t a, int64_t b, double freq, int rate)
{
    double s = 0, c = 0;
    for (int64_t i = a; i < b; i++) {
        s += x[i] * sin(2 * M_PI * freq * (double)i / rate);
        c += x[i] * cos(2 * M_PI * freq * (double)i / rate);
    }
    return 2 * sqrt(s * s + c * c) / (double)(b - a);
}

static int64_t codec_zero_crossings(const float *x, int64_t a, int64_t b)
{
    int64_t n = 0;
    for (int64_t i = a + 1; i < b; i++)
        n += (x[i - 1] < 0) != (x[i] < 0);
    return n;
}

/* Streams one second of a 440 Hz tone in odd-sized chunks, flushes, checks the result. */
static void codec_check_resample(int in_rate, int out_rate)
{
    struct err e;
    struct resampler *r = resampler_new(in_rate, out_rate, &e);
    REQUIRE(r != NULL);
    int64_t n = in_rate;
    float *in = malloc(sizeof(float) * (size_t)n);
    int64_t cap = resampler_max_out(r, n) + resampler_max_out(r, 0);
    float *out = malloc(sizeof(float) * (size_t)cap);
    REQUIRE(in && out);
    codec_sine(in, n, 440, in_rate, 0.5f);
    int64_t got = 0;
    for (int64_t at = 0; at < n;) {
        int64_t k = n - at < 317 ? n - at : 317;
        int64_t w = resampler_process(r, out + got, cap - got, in + at, k, &e);
        REQUIRE(w >= 0);
        CHECK(w <= resampler_max_out(r, k));
        got += w;
        at += k;
    }
    int64_t w = resampler_flush(r, out + got, cap - got, &e);
    REQUIRE(w >= 0);
    got += w;
    int64_t want = n * out_rate / in_rate;
    CHECK_NEAR(got, want, 4);
    /* the middle half: amplitude kept, frequency kept (zero crossings of 440 Hz) */
    int64_t a = want / 4, b = 3 * want / 4;
    CHECK_NEAR(codec_tone_amp(out, a, b, 440, out_rate), 0.5, 0.01);
    double crossings = (double)codec_zero_crossings(out, a, b);
    CHECK_NEAR(crossings, 2 * 440.0 * (double)(b - a) / out_rate, 2);
    resampler_free(r);
    free(in);
    free(out);
}

TEST(codec_resample_22050_to_48000)
{
    codec_check_resample(22050, 48000);
}

TEST(codec_resample_22050_to_16000)
{
    codec_check_resample(22050, 16000);
}

TEST(codec_resample_48000_to_16000)
{
    codec_check_resample(48000, 16000);
}

TEST(codec_resample_bad_rate)
{
    struct err e;
    CHECK(resampler_new(0, 16000, &e) == NULL);
}

static void codec_check_opus(int rate)
{
    struct err e;
    struct opus_out *o = opus_out_new(rate, 0, &e);
    struct opus_in *d = opus_in_new(rate, &e);
    REQUIRE(o && d);
    int frame = opus_out_frame(o);
    CHECK(frame == rate / 50);
    int n_frames = 50;
    float *in = malloc(sizeof(float) * (size_t)(frame * n_frames));
    float *out = malloc(sizeof(float) * (size_t)(frame * n_frames));
    float tmp[48000 * 120 / 1000];
    REQUIRE(in && out);
    codec_sine(in, frame * n_frames, 440, rate, 0.4f);
    int64_t got = 0;
    for (int f = 0; f < n_frames; f++) {
        uint8_t pkt[1500];
        int len = opus_out_encode(o, pkt, sizeof pkt, in + (int64_t)f * frame, &e);
        REQUIRE(len > 0);
        int k = opus_in_decode(d, tmp, (int)(sizeof tmp / sizeof tmp[0]), pkt, (size_t)len, &e);
        REQUIRE(k == frame);
        memcpy(out + got, tmp, sizeof(float) * (size_t)k);
        got += k;
        if (f == 10) { /* garbage in the middle: an error, and the decoder goes on */
            uint8_t junk[5] = { 0xff, 0xff, 0xff, 0xff, 0xff };
            CHECK(opus_in_decode(d, tmp, 960 * 6, junk, sizeof junk, &e) < 0);
            CHECK(strstr(e.msg, "invalid Opus packet") != NULL);
            CHECK(opus_in_decode(d, tmp, 960 * 6, junk, 0, &e) < 0);
        }
    }
    /* Opus delays its output a little: compare tone amplitude over the second half */
    int64_t a = got / 2, b = got;
    CHECK_NEAR(codec_tone_amp(out, a, b, 440, rate), 0.4, 0.06);
    double crossings = (double)codec_zero_crossings(out, a, b);
    CHECK_NEAR(crossings, 2 * 440.0 * (double)(b - a) / rate, 4);
    opus_in_free(d);
    opus_out_free(o);
    free(in);
    free(out);
}

TEST(codec_opus_round_trip_48k)
{
    codec_check_opus(48000);
}

TEST(codec_opus_round_trip_16k)
{
    codec_check_opus(16000);
}

TEST(codec_opus_bad_rate)
{
    struct err e;
    CHECK(opus_in_new(44100, &e) == NULL);
    CHECK(opus_out_new(22050, 0, &e) == NULL);
}
