/*
 * voicefile tests (the decoder tools' raw float32 and WAV files): round trips, the WAV
 * header fields, and refusals of bad input files with messages naming the problem.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "voice/voicefile.h"

static void tio_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
}

static void tio_write(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

TEST(voicefile_f32_round_trip_and_errors)
{
    char path[512];
    struct err e;
    float x[160], *y;
    int64_t n;
    for (int i = 0; i < 160; i++)
        x[i] = (float)i * 0.5f - 3.0f;
    tio_path(path, sizeof path, "mel.f32");
    REQUIRE(voicefile_write_f32(path, x, 160, &e) == 0);
    REQUIRE(voicefile_read_f32(path, 80, 1000, &y, &n, &e) == 0);
    CHECK(n == 160 && memcmp(x, y, sizeof x) == 0);
    free(y);
    /* not a whole number of 80-float frames */
    CHECK(voicefile_read_f32(path, 96, 1000, &y, &n, &e) == -1 && strstr(e.msg, "whole") && !y);
    /* too many values */
    CHECK(voicefile_read_f32(path, 80, 80, &y, &n, &e) == -1 && strstr(e.msg, "at most"));
    /* empty, odd size, non-finite, missing */
    tio_path(path, sizeof path, "empty.f32");
    tio_write(path, "", 0);
    CHECK(voicefile_read_f32(path, 1, 10, &y, &n, &e) == -1 && strstr(e.msg, "empty"));
    tio_path(path, sizeof path, "odd.f32");
    tio_write(path, "abcde", 5);
    CHECK(voicefile_read_f32(path, 1, 10, &y, &n, &e) == -1 && strstr(e.msg, "5 bytes"));
    float bad[2] = { 1.0f, 0.0f };
    bad[1] = INFINITY;
    tio_path(path, sizeof path, "inf.f32");
    tio_write(path, bad, sizeof bad);
    CHECK(voicefile_read_f32(path, 1, 10, &y, &n, &e) == -1 && strstr(e.msg, "finite"));
    CHECK(voicefile_read_f32("/nonexistent/x.f32", 1, 10, &y, &n, &e) == -1 &&
          strstr(e.msg, "/nonexistent/x.f32"));
}

TEST(voicefile_wav_header_and_samples)
{
    char path[512];
    struct err e;
    float x[5] = { 0.0f, 0.5f, -0.5f, 2.0f, -2.0f };
    tio_path(path, sizeof path, "a.wav");
    REQUIRE(voicefile_write_wav(path, x, 5, 22050, 0, &e) == 0);
    unsigned char b[64];
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    size_t got = fread(b, 1, sizeof b, f);
    fclose(f);
    CHECK(got == 44 + 10);
    CHECK(memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WAVEfmt ", 8) == 0);
    CHECK(b[20] == 1 && b[22] == 1 && b[34] == 16);
    CHECK((b[24] | b[25] << 8 | b[26] << 16) == 22050);
    CHECK(b[40] == 10);
    int16_t s[5];
    memcpy(s, b + 44, 10);
    CHECK(s[0] == 0 && s[1] == 16384 && s[2] == -16384 && s[3] == 32767 && s[4] == -32767);
    REQUIRE(voicefile_write_wav(path, x, 5, 22050, 1, &e) == 0);
    f = fopen(path, "rb");
    REQUIRE(f != NULL);
    got = fread(b, 1, sizeof b, f);
    fclose(f);
    CHECK(got == 44 + 20 && b[20] == 3 && b[34] == 32);
    float y[5];
    memcpy(y, b + 44, 20);
    CHECK(memcmp(x, y, sizeof x) == 0);
    CHECK(voicefile_write_wav("/nonexistent/a.wav", x, 5, 22050, 0, &e) == -1);
}
