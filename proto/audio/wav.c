/* wav — RIFF/WAVE reader and PCM16 writer (see wav.h). */
#include "audio/wav.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAV_FORMAT_PCM        1
#define WAV_FORMAT_FLOAT      3
#define WAV_FORMAT_EXTENSIBLE 0xFFFE

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float sample_at(const uint8_t *p, int fmt, int bits)
{
    if (fmt == WAV_FORMAT_FLOAT) {
        if (bits == 32) {
            float f;
            memcpy(&f, p, 4);
            return f;
        }
        double d;
        memcpy(&d, p, 8);
        return (float)d;
    }
    switch (bits) {
    case 8: return ((float)p[0] - 128.0f) / 128.0f;
    case 16: return (float)(int16_t)rd16(p) / 32768.0f;
    case 24: {
        int32_t v =
            (int32_t)((uint32_t)p[0] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 24) >> 8;
        return (float)v / 8388608.0f;
    }
    default: return (float)((double)(int32_t)rd32(p) / 2147483648.0);
    }
}

int wav_decode(struct wav_audio *out, const void *data, size_t size, size_t max_bytes,
               struct err *e)
{
    const uint8_t *b = data;
    memset(out, 0, sizeof *out);
    if (size > max_bytes)
        return err_set(e, "file of %zu bytes is over the %zu-byte limit", size, max_bytes);
    if (size < 12)
        return err_set(e, "truncated RIFF header (%zu bytes)", size);
    if (memcmp(b, "RIFF", 4) != 0 || memcmp(b + 8, "WAVE", 4) != 0)
        return err_set(e, "not a WAV file (no RIFF/WAVE header)");
    int have_fmt = 0, fmt = 0, channels = 0, bits = 0, align = 0;
    uint32_t rate = 0;
    size_t pos = 12;
    while (pos + 8 <= size) {
        const uint8_t *c = b + pos;
        uint32_t len = rd32(c + 4);
        size_t body = pos + 8;
        if (memcmp(c, "fmt ", 4) == 0) {
            if (len < 16 || len > size - body)
                return err_set(e, "truncated fmt chunk (%u bytes declared, %zu left)", len,
                               size - body);
            const uint8_t *f = b + body;
            fmt = rd16(f);
            channels = rd16(f + 2);
            rate = rd32(f + 4);
            align = rd16(f + 12);
            bits = rd16(f + 14);
            if (fmt == WAV_FORMAT_EXTENSIBLE) {
                if (len < 40)
                    return err_set(e, "WAVE_FORMAT_EXTENSIBLE fmt chunk of %u bytes (needs 40)",
                                   len);
                fmt = rd16(f + 24); /* first two bytes of the sub-format GUID */
            }
            have_fmt = 1;
        } else if (memcmp(c, "data", 4) == 0) {
            if (!have_fmt)
                return err_set(e, "data chunk before the fmt chunk");
            if (len > size - body)
                return err_set(e, "data chunk of %u bytes is larger than the file (%zu left)", len,
                               size - body);
            if (fmt != WAV_FORMAT_PCM && fmt != WAV_FORMAT_FLOAT)
                return err_set(e, "unsupported sample format %d (PCM and IEEE float only)", fmt);
            if (fmt == WAV_FORMAT_PCM && bits != 8 && bits != 16 && bits != 24 && bits != 32)
                return err_set(e, "unsupported PCM sample size %d bits", bits);
            if (fmt == WAV_FORMAT_FLOAT && bits != 32 && bits != 64)
                return err_set(e, "unsupported float sample size %d bits", bits);
            if (channels == 0)
                return err_set(e, "zero channels");
            if (channels > WAV_MAX_CHANNELS)
                return err_set(e, "%d channels (at most %d)", channels, WAV_MAX_CHANNELS);
            if (rate < WAV_MIN_RATE || rate > WAV_MAX_RATE)
                return err_set(e, "sample rate %u Hz outside %d..%d Hz", rate, WAV_MIN_RATE,
                               WAV_MAX_RATE);
            if (align != channels * (bits / 8))
                return err_set(e, "block alignment %d does not match %d channels of %d bits", align,
                               channels, bits);
            int64_t frames = len / (uint32_t)align;
            if (frames == 0)
                return err_set(e, "no audio (empty data chunk)");
            out->samples = malloc((size_t)frames * channels * sizeof *out->samples);
            if (!out->samples)
                return err_set(e, "out of memory for %lld samples", (long long)frames * channels);
            const uint8_t *p = b + body;
            int bps = bits / 8;
            for (int64_t i = 0; i < frames; i++)
                for (int ch = 0; ch < channels; ch++, p += bps)
                    out->samples[(int64_t)ch * frames + i] = sample_at(p, fmt, bits);
            out->rate = (int)rate;
            out->channels = channels;
            out->frames = frames;
            return 0;
        }
        if (len > size - body)
            return err_set(e, "chunk '%.4s' of %u bytes is larger than the file", (const char *)c,
                           len);
        pos = body + len + (len & 1);
    }
    return err_set(e, have_fmt ? "no data chunk" : "truncated header (no fmt chunk)");
}

int wav_read_file(struct wav_audio *out, const char *path, size_t max_bytes, struct err *e)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "%s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap > max_bytes) {
                fclose(f);
                free(buf);
                return err_set(e, "%s: file is over the %zu-byte limit", path, max_bytes);
            }
            cap = cap ? cap * 2 : 1 << 16;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                fclose(f);
                free(buf);
                return err_set(e, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (k == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(e, "%s: read error", path);
    }
    int rc = wav_decode(out, buf, len, max_bytes, e);
    free(buf);
    return rc ? err_prefix(e, "%s", path) : 0;
}

void wav_pcm16(float *out, const void *bytes, int64_t n)
{
    const uint8_t *p = bytes;
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)(int16_t)rd16(p + 2 * i) / 32768.0f;
}

void wav_audio_free(struct wav_audio *a)
{
    free(a->samples);
    memset(a, 0, sizeof *a);
}

/* ---- writing --------------------------------------------------------------------------- */

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, (uint16_t)v);
    wr16(p + 2, (uint16_t)(v >> 16));
}

void wav_to_pcm16(void *bytes, const float *pcm, int64_t n)
{
    uint8_t *p = bytes;
    for (int64_t i = 0; i < n; i++) {
        float v = pcm[i] > 1.0f ? 1.0f : pcm[i] < -1.0f ? -1.0f : pcm[i];
        if (v != v) /* NaN: silence rather than whatever lrintf makes of it */
            v = 0;
        wr16(p + 2 * i, (uint16_t)(int16_t)lrintf(v * 32767.0f));
    }
}

int wav_encode_pcm16(uint8_t **out, size_t *size, const float *pcm, int64_t n, int rate,
                     struct err *e)
{
    *out = NULL;
    *size = 0;
    if (n < 0 || (uint64_t)n * 2 > 0xFFFFFFFFull - 64)
        return err_set(e, "%lld samples do not fit a WAV file", (long long)n);
    if (rate < WAV_MIN_RATE || rate > WAV_MAX_RATE)
        return err_set(e, "cannot write a WAV file at %d Hz", rate);
    uint32_t data = (uint32_t)n * 2;
    uint8_t *b = malloc(WAV_HEADER_BYTES + (size_t)data);
    if (!b)
        return err_set(e, "out of memory for a WAV file of %lld samples", (long long)n);
    memcpy(b, "RIFF", 4);
    wr32(b + 4, 36 + data);
    memcpy(b + 8, "WAVEfmt ", 8);
    wr32(b + 16, 16);
    wr16(b + 20, WAV_FORMAT_PCM);
    wr16(b + 22, 1);
    wr32(b + 24, (uint32_t)rate);
    wr32(b + 28, (uint32_t)rate * 2);
    wr16(b + 32, 2);
    wr16(b + 34, 16);
    memcpy(b + 36, "data", 4);
    wr32(b + 40, data);
    wav_to_pcm16(b + WAV_HEADER_BYTES, pcm, n);
    *out = b;
    *size = WAV_HEADER_BYTES + (size_t)data;
    return 0;
}
