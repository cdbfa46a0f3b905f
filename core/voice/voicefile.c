/* voicefile — see voicefile.h. */
#include "voice/voicefile.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int voicefile_read_f32(const char *path, int64_t unit, int64_t max_count, float **out,
                       int64_t *count, struct err *e)
{
    *out = NULL;
    *count = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "%s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return err_set(e, "%s: cannot seek (not a regular file?)", path);
    }
    long size = ftell(f);
    rewind(f);
    if (size <= 0) {
        fclose(f);
        return err_set(e, "%s: empty file", path);
    }
    if (size % 4 || (size / 4) % unit) {
        fclose(f);
        return err_set(e, "%s: %ld bytes is not a whole number of %lld float32 values", path, size,
                       (long long)unit);
    }
    int64_t n = size / 4;
    if (n > max_count) {
        fclose(f);
        return err_set(e, "%s: %lld values, at most %lld accepted", path, (long long)n,
                       (long long)max_count);
    }
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) {
        fclose(f);
        return err_set(e, "%s: out of memory", path);
    }
    size_t got = fread(x, sizeof(float), (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(x);
        return err_set(e, "%s: short read", path);
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            free(x);
            return err_set(e, "%s: value %lld is not finite", path, (long long)i);
        }
    *out = x;
    *count = n;
    return 0;
}

int voicefile_write_f32(const char *path, const float *x, int64_t n, struct err *e)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return err_set(e, "%s: %s", path, strerror(errno));
    size_t put = fwrite(x, sizeof(float), (size_t)n, f);
    if (fclose(f) != 0 || put != (size_t)n)
        return err_set(e, "%s: write failed", path);
    return 0;
}

static void vf_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void vf_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

int voicefile_write_wav(const char *path, const float *x, int64_t n, int sample_rate, int as_float,
                        struct err *e)
{
    int bytes = as_float ? 4 : 2;
    if (n < 0 || (uint64_t)n * (uint64_t)bytes > 0xFFFFFFFFull - 64)
        return err_set(e, "%s: %lld samples do not fit a WAV file", path, (long long)n);
    uint32_t data = (uint32_t)(n * bytes);
    unsigned char h[44];
    memcpy(h, "RIFF", 4);
    vf_u32(h + 4, 36 + data);
    memcpy(h + 8, "WAVEfmt ", 8);
    vf_u32(h + 16, 16);
    vf_u16(h + 20, as_float ? 3 : 1); /* IEEE float / PCM */
    vf_u16(h + 22, 1);
    vf_u32(h + 24, (uint32_t)sample_rate);
    vf_u32(h + 28, (uint32_t)(sample_rate * bytes));
    vf_u16(h + 32, (uint16_t)bytes);
    vf_u16(h + 34, (uint16_t)(bytes * 8));
    memcpy(h + 36, "data", 4);
    vf_u32(h + 40, data);
    FILE *f = fopen(path, "wb");
    if (!f)
        return err_set(e, "%s: %s", path, strerror(errno));
    int ok = fwrite(h, 1, sizeof h, f) == sizeof h;
    unsigned char buf[4096];
    int64_t i = 0;
    while (ok && i < n) {
        int k = 0;
        for (; i < n && k + bytes <= (int)sizeof buf; i++, k += bytes) {
            if (as_float) {
                uint32_t u;
                memcpy(&u, &x[i], 4);
                vf_u32(buf + k, u);
            } else {
                float v = x[i] > 1.0f ? 1.0f : x[i] < -1.0f ? -1.0f : x[i];
                vf_u16(buf + k, (uint16_t)(int16_t)lrintf(v * 32767.0f));
            }
        }
        ok = fwrite(buf, 1, (size_t)k, f) == (size_t)k;
    }
    if (fclose(f) != 0 || !ok)
        return err_set(e, "%s: write failed", path);
    return 0;
}
