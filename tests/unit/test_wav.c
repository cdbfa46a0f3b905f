/* Tests of the audio file readers: WAV (every sample format, extensible, channels, odd chunks,
 * bad input) and Ogg Opus (a stream built here, bad input). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/oggopus.h"
#include "audio/wav.h"
#include "test.h"

#define MAX_BYTES ((size_t)1 << 24)

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A WAV file in buf: fmt (16 bytes, or 40 when extensible), an optional LIST chunk of odd
 * size before data, then `data_len` bytes of data (copied from data). Returns its size. */
static size_t make_wav(uint8_t *buf, int tag, int channels, uint32_t rate, int bits,
                       const void *data, uint32_t data_len, int extensible, int list_chunk)
{
    size_t p = 12;
    memcpy(buf, "RIFF", 4);
    memcpy(buf + 8, "WAVE", 4);
    memcpy(buf + p, "fmt ", 4);
    put32(buf + p + 4, extensible ? 40 : 16);
    uint8_t *f = buf + p + 8;
    put16(f, extensible ? 0xFFFE : (unsigned)tag);
    put16(f + 2, (unsigned)channels);
    put32(f + 4, rate);
    put32(f + 8, rate * (uint32_t)channels * (uint32_t)(bits / 8));
    put16(f + 12, (unsigned)(channels * (bits / 8)));
    put16(f + 14, (unsigned)bits);
    if (extensible) {
        put16(f + 16, 22);
        put16(f + 18, (unsigned)bits);
        put32(f + 20, 0);
        memset(f + 24, 0, 16);
        put16(f + 24, (unsigned)tag);
    }
    p += 8 + (extensible ? 40 : 16);
    if (list_chunk) {
        memcpy(buf + p, "LIST", 4);
        put32(buf + p + 4, 3);
        memcpy(buf + p + 8, "abc\0", 4); /* 3 bytes + the pad byte */
        p += 12;
    }
    memcpy(buf + p, "data", 4);
    put32(buf + p + 4, data_len);
    memcpy(buf + p + 8, data, data_len);
    p += 8 + data_len;
    put32(buf + 4, (uint32_t)(p - 8));
    return p;
}

TEST(wav_formats)
{
    static uint8_t buf[4096];
    struct wav_audio a;
    struct err e;
    /* 16-bit stereo: channel planes in order */
    int16_t s16[6] = { 0, -32768, 16384, 32767, -1, 1 };
    size_t n = make_wav(buf, 1, 2, 16000, 16, s16, sizeof s16, 0, 1);
    REQUIRE(wav_decode(&a, buf, n, MAX_BYTES, &e) == 0);
    CHECK(a.rate == 16000 && a.channels == 2 && a.frames == 3);
    CHECK(a.samples[0] == 0.0f && a.samples[1] == 0.5f && a.samples[2] == -1.0f / 32768);
    CHECK(a.samples[3] == -1.0f && a.samples[4] == 32767.0f / 32768 &&
          a.samples[5] == 1.0f / 32768);
    wav_audio_free(&a);
    /* 8-bit unsigned */
    uint8_t u8[3] = { 0, 128, 255 };
    n = make_wav(buf, 1, 1, 8000, 8, u8, 3, 0, 0);
    REQUIRE(wav_decode(&a, buf, n, MAX_BYTES, &e) == 0);
    CHECK(a.frames == 3 && a.samples[0] == -1.0f && a.samples[1] == 0.0f &&
          a.samples[2] == 127.0f / 128);
    wav_audio_free(&a);
    /* 24-bit, extensible */
    uint8_t s24[6] = { 0x00, 0x00, 0x80, 0xff, 0xff, 0x7f };
    n = make_wav(buf, 1, 1, 44100, 24, s24, 6, 1, 0);
    REQUIRE(wav_decode(&a, buf, n, MAX_BYTES, &e) == 0);
    CHECK(a.frames == 2 && a.samples[0] == -1.0f && a.samples[1] == 8388607.0f / 8388608);
    wav_audio_free(&a);
    /* 32-bit integer */
    int32_t s32[2] = { INT32_MIN, 1 << 30 };
    n = make_wav(buf, 1, 1, 48000, 32, s32, 8, 0, 0);
    REQUIRE(wav_decode(&a, buf, n, MAX_BYTES, &e) == 0);
    CHECK(a.samples[0] == -1.0f && a.samples[1] == 0.5f);
    wav_audio_free(&a);
    /* float 32 and 64, extensible float */
    float f32[2] = { 0.25f, -1.5f };
    n = make_wav(buf, 3, 1, 22050, 32, f32, 8, 0, 0);
    REQUIRE(wav_decode(&a, buf, n, MAX_BYTES, &e) == 0);
    CHECK(a.samples[0] == 0.25f && a.samples[1] == -1.5f);
    wav_audio_free(&a);
    double f64[2] = { 0.1, -0.75 };
    n = make_wav(buf, 3, 1, 22050, 64, f64, 16, 1, 0);
    REQUIRE(wav_decode(&a, buf, n, MAX_BYTES, &e) == 0);
    CHECK(a.samples[0] == (float)0.1 && a.samples[1] == -0.75f);
    wav_audio_free(&a);
    /* a partial trailing frame is ignored */
    n = make_wav(buf, 1, 2, 16000, 16, s16, 6, 0, 0);
    REQUIRE(wav_decode(&a, buf, n, MAX_BYTES, &e) == 0);
    CHECK(a.frames == 1);
    wav_audio_free(&a);
}

/* Expects wav_decode to refuse buf[0..n) with a message containing `want`. */
static void refuse(const uint8_t *buf, size_t n, size_t max, const char *want, int line)
{
    struct wav_audio a;
    struct err e;
    e.msg[0] = 0;
    if (wav_decode(&a, buf, n, max, &e) == 0) {
        test_fail(__FILE__, line, "accepted a file that should fail with '%s'", want);
        wav_audio_free(&a);
        return;
    }
    if (!strstr(e.msg, want))
        test_fail(__FILE__, line, "message '%s' does not mention '%s'", e.msg, want);
    CHECK(a.samples == NULL);
}

TEST(wav_bad_input)
{
    static uint8_t buf[4096];
    int16_t s16[4] = { 1, 2, 3, 4 };
    size_t n = make_wav(buf, 1, 1, 16000, 16, s16, sizeof s16, 0, 0);
    refuse(buf, 8, MAX_BYTES, "truncated RIFF header", __LINE__);
    refuse(buf, 20, MAX_BYTES, "truncated fmt chunk", __LINE__);
    refuse(buf, 12, MAX_BYTES, "no fmt chunk", __LINE__);
    refuse(buf, n, n - 1, "limit", __LINE__);
    refuse(buf, n - 2, MAX_BYTES, "larger than the file", __LINE__);
    uint8_t bad[4096];
    memcpy(bad, buf, n);
    memcpy(bad, "RIFX", 4);
    refuse(bad, n, MAX_BYTES, "not a WAV file", __LINE__);
    n = make_wav(buf, 1, 0, 16000, 16, s16, sizeof s16, 0, 0);
    refuse(buf, n, MAX_BYTES, "zero channels", __LINE__);
    n = make_wav(buf, 1, 1, 5, 16, s16, sizeof s16, 0, 0);
    refuse(buf, n, MAX_BYTES, "sample rate", __LINE__);
    n = make_wav(buf, 1, 1, 4000000, 16, s16, sizeof s16, 0, 0);
    refuse(buf, n, MAX_BYTES, "sample rate", __LINE__);
    n = make_wav(buf, 1, 1, 16000, 16, s16, 0, 0, 0);
    refuse(buf, n, MAX_BYTES, "no audio", __LINE__);
    n = make_wav(buf, 1, 1, 16000, 12, s16, sizeof s16, 0, 0);
    refuse(buf, n, MAX_BYTES, "sample size", __LINE__);
    n = make_wav(buf, 3, 1, 16000, 16, s16, sizeof s16, 0, 0);
    refuse(buf, n, MAX_BYTES, "float sample size", __LINE__);
    n = make_wav(buf, 2, 1, 16000, 16, s16, sizeof s16, 0, 0);
    refuse(buf, n, MAX_BYTES, "unsupported sample format", __LINE__);
    n = make_wav(buf, 1, 100, 16000, 16, s16, sizeof s16, 0, 0);
    refuse(buf, n, MAX_BYTES, "channels", __LINE__);
    n = make_wav(buf, 1, 1, 16000, 16, s16, sizeof s16, 0, 0);
    put16(buf + 32, 4); /* block align */
    refuse(buf, n, MAX_BYTES, "block alignment", __LINE__);
    n = make_wav(buf, 1, 1, 16000, 16, s16, sizeof s16, 0, 0);
    n = 36; /* header without its data chunk */
    refuse(buf, n, MAX_BYTES, "no data chunk", __LINE__);
    /* data before fmt */
    memcpy(buf + 12, "data", 4);
    put32(buf + 16, 0);
    refuse(buf, 20, MAX_BYTES, "before the fmt", __LINE__);
}

TEST(wav_read_file_errors)
{
    struct wav_audio a;
    struct err e;
    CHECK(wav_read_file(&a, "/nonexistent/x.wav", MAX_BYTES, &e) == -1);
    CHECK(strstr(e.msg, "/nonexistent/x.wav") != NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/short.wav", test_tmpdir());
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fwrite("RIFF\x10\0\0\0WAVEfmt ", 1, 16, f);
    fclose(f);
    CHECK(wav_read_file(&a, path, MAX_BYTES, &e) == -1);
    CHECK(strstr(e.msg, "short.wav") != NULL);
    float out[2];
    uint8_t pcm[4] = { 0x00, 0x80, 0xff, 0x7f };
    wav_pcm16(out, pcm, 2);
    CHECK(out[0] == -1.0f && out[1] == 32767.0f / 32768);
}

/* ---- Ogg Opus: a stream of TOC-only packets (lost frames: the decoder conceals them with
 * silence), framed by hand ----------------------------------------------------------------- */

/* Appends one page holding one packet. */
static size_t ogg_page(uint8_t *out, int flags, int64_t granule, uint32_t seq, const uint8_t *pkt,
                       size_t len)
{
    uint8_t *h = out;
    memcpy(h, "OggS", 4);
    h[4] = 0;
    h[5] = (uint8_t)flags;
    for (int i = 0; i < 8; i++)
        h[6 + i] = (uint8_t)((uint64_t)granule >> (8 * i));
    put32(h + 14, 0x1234);
    put32(h + 18, seq);
    put32(h + 22, 0);
    size_t nseg = len / 255 + 1;
    h[26] = (uint8_t)nseg;
    for (size_t i = 0; i < nseg; i++)
        h[27 + i] = (uint8_t)(i + 1 < nseg ? 255 : len % 255);
    memcpy(h + 27 + nseg, pkt, len);
    size_t total = 27 + nseg + len;
    put32(h + 22, test_ogg_crc(h, total));
    return total;
}

static size_t make_opus(uint8_t *buf, int channels, int packets, int pre_skip)
{
    uint8_t head[19];
    memcpy(head, "OpusHead", 8);
    head[8] = 1;
    head[9] = (uint8_t)channels;
    put16(head + 10, (unsigned)pre_skip);
    put32(head + 12, 16000);
    put16(head + 16, 0);
    head[18] = 0;
    uint8_t tags[24];
    memcpy(tags, "OpusTags", 8);
    put32(tags + 8, 4);
    memcpy(tags + 12, "test", 4);
    put32(tags + 16, 0);
    size_t n = ogg_page(buf, 2, 0, 0, head, sizeof head);
    n += ogg_page(buf + n, 0, 0, 1, tags, 20);
    uint8_t toc = (uint8_t)(31 << 3 | (channels == 2 ? 4 : 0)); /* CELT FB 20 ms, 1 frame */
    for (int i = 0; i < packets; i++)
        n += ogg_page(buf + n, i == packets - 1 ? 4 : 0, (int64_t)(i + 1) * 960, (uint32_t)(2 + i),
                      &toc, 1);
    return n;
}

TEST(oggopus_decode_stream)
{
    static uint8_t buf[8192];
    struct wav_audio a;
    struct err e;
    size_t n = make_opus(buf, 2, 10, 312);
    REQUIRE(oggopus_sniff(buf, n));
    if (oggopus_decode(&a, buf, n, MAX_BYTES, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    CHECK(a.rate == 48000 && a.channels == 2);
    CHECK(a.frames == 10 * 960 - 312); /* pre-skip removed */
    float peak = 0;
    for (int64_t i = 0; i < a.frames * 2; i++)
        peak = fabsf(a.samples[i]) > peak ? fabsf(a.samples[i]) : peak;
    CHECK(peak < 1e-3f);
    wav_audio_free(&a);
    /* bad input */
    CHECK(oggopus_decode(&a, buf, n, n - 1, &e) == -1 && strstr(e.msg, "limit"));
    CHECK(oggopus_decode(&a, "RIFF....", 8, MAX_BYTES, &e) == -1 && strstr(e.msg, "not an Ogg"));
    CHECK(oggopus_decode(&a, buf, 40, MAX_BYTES, &e) == -1);
    memcpy(buf + 28, "OpusHeax", 8); /* first packet no longer an Opus header */
    CHECK(oggopus_decode(&a, buf, n, MAX_BYTES, &e) == -1 && strstr(e.msg, "Ogg Opus"));
    n = make_opus(buf, 1, 1, 3000); /* pre-skip longer than the audio: nothing left */
    CHECK(oggopus_decode(&a, buf, n, MAX_BYTES, &e) == -1);
}
