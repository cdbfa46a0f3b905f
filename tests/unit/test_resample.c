/* Tests of the resampler: the kernel against §2.2 + E2 written out directly, outputs against a
 * direct convolution, streaming = whole-signal for any push sizes, lengths, bad rates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "speech/resample.h"
#include "test.h"

static const int rates[] = { 8000, 11025, 22050, 24000, 32000, 44100, 48000, 96000 };

TEST(resample_kernel_formula)
{
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        struct resample rs;
        struct err e;
        REQUIRE(resample_init(&rs, rates[r], 16000, &e) == 0);
        double base = (rs.o < rs.n ? rs.o : rs.n) * 0.99;
        CHECK(rs.width == (int)ceil(6.0 * rs.o / base) && rs.taps == 2 * rs.width + rs.o);
        int64_t bad = 0;
        for (int j = 0; j < rs.n; j++)
            for (int m = 0; m < rs.taps; m++) {
                double t =
                    ((double)((float)-j / (float)rs.n) + (double)(m - rs.width) / rs.o) * base;
                t = t < -6 ? -6 : t > 6 ? 6 : t;
                double w = cos(t * M_PI / 6 / 2);
                double k = t == 0 ? 1.0 : sin(t * M_PI) / (t * M_PI);
                float want = (float)(k * (w * w * (base / rs.o)));
                bad += want != rs.kernel[(int64_t)j * rs.taps + m];
            }
        CHECK(bad == 0);
        resample_free(&rs);
    }
}

TEST(resample_direct_and_stream)
{
    int64_t len = 12345;
    float *x = malloc((size_t)len * sizeof *x);
    test_fill_uniform(x, len, -1, 1);
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        struct resample rs;
        struct err e;
        REQUIRE(resample_init(&rs, rates[r], 16000, &e) == 0);
        int64_t n_out = resample_out_len(&rs, len);
        CHECK(n_out == (16000 / 1 * len + rates[r] - 1) / rates[r] ||
              n_out == ((int64_t)rs.n * len + rs.o - 1) / rs.o);
        float *y = malloc((size_t)n_out * sizeof *y), *z = malloc((size_t)(n_out + 64) * sizeof *z);
        REQUIRE(resample_run(&rs, y, x, len, &e) == 0);
        /* direct: y[q n + j] = sum_m k[j][m] xpad[q o + m], summed in double */
        int64_t bad = 0;
        for (int64_t i = 0; i < n_out; i += 7) {
            int64_t q = i / rs.n, j = i % rs.n;
            double acc = 0;
            for (int m = 0; m < rs.taps; m++) {
                int64_t s = q * rs.o + m - rs.width;
                acc += (double)rs.kernel[j * rs.taps + m] * (s >= 0 && s < len ? x[s] : 0.0f);
            }
            bad += (float)acc != y[i];
        }
        CHECK(bad == 0);
        /* streaming with uneven pushes gives the same samples */
        struct resample_stream st;
        REQUIRE(resample_stream_init(&st, &rs, 1000, &e) == 0);
        int64_t w = 0, i = 0, step = 1;
        while (i < len) {
            int64_t k = len - i < step ? len - i : step;
            int64_t got = resample_stream_push(&st, z + w, x + i, k, &e);
            CHECK(got >= 0 && got <= resample_stream_max_out(&st, k));
            w += got;
            i += k;
            step = step * 3 % 2001 + 1;
        }
        w += resample_stream_finish(&st, z + w);
        CHECK(w == n_out);
        CHECK(memcmp(y, z, (size_t)n_out * sizeof *y) == 0);
        CHECK(resample_stream_push(&st, z, x, 1, &e) == -1);
        resample_stream_free(&st);
        free(y);
        free(z);
        resample_free(&rs);
    }
    free(x);
}

TEST(resample_sine_and_edges)
{
    struct resample rs;
    struct err e;
    /* a 1 kHz sine keeps its amplitude and frequency through 48 -> 16 kHz */
    REQUIRE(resample_init(&rs, 48000, 16000, &e) == 0);
    int64_t len = 48000;
    float *x = malloc((size_t)len * sizeof *x), *y = malloc((size_t)16000 * sizeof *y);
    for (int64_t i = 0; i < len; i++)
        x[i] = (float)sin(2 * M_PI * 1000 * i / 48000.0);
    REQUIRE(resample_out_len(&rs, len) == 16000);
    REQUIRE(resample_run(&rs, y, x, len, &e) == 0);
    double err = 0;
    for (int64_t i = 200; i < 15800; i++)
        err = fmax(err, fabs(y[i] - sin(2 * M_PI * 1000 * i / 16000.0)));
    CHECK(err < 2e-3);
    resample_free(&rs);
    free(x);
    free(y);
    /* equal rates copy; bad rates refused */
    REQUIRE(resample_init(&rs, 16000, 16000, &e) == 0);
    float a[3] = { 1, 2, 3 }, b[3];
    CHECK(resample_out_len(&rs, 3) == 3 && resample_run(&rs, b, a, 3, &e) == 0 && b[2] == 3);
    resample_free(&rs);
    CHECK(resample_init(&rs, 10, 16000, &e) == -1);
    CHECK(resample_init(&rs, 16000, 10000000, &e) == -1);
    /* one input sample still gives ceil(n/o) outputs */
    REQUIRE(resample_init(&rs, 44100, 16000, &e) == 0);
    CHECK(resample_out_len(&rs, 1) == 1 && resample_run(&rs, b, a, 1, &e) == 0);
    resample_free(&rs);
}
