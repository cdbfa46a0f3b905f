#include "runtime/dtype.h"

#include <math.h>
#include <string.h>

static const struct dtype_info type_f32 = { "f32", 1, 4 };
static const struct dtype_info type_f16 = { "f16", 1, 2 };
static const struct dtype_info type_bf16 = { "bf16", 1, 2 };
static const struct dtype_info type_q8_0 = { "q8_0", DTYPE_Q8_0_BLOCK, sizeof(struct dtype_q8_0) };

_Static_assert(sizeof(struct dtype_q8_0) == 34, "q8_0 block must be 34 bytes");

const struct dtype_info *dtype_info(uint32_t id)
{
    switch (id) {
    case DTYPE_F32: return &type_f32;
    case DTYPE_F16: return &type_f16;
    case DTYPE_BF16: return &type_bf16;
    case DTYPE_Q8_0: return &type_q8_0;
    default: return NULL;
    }
}

int dtype_from_name(const char *name, enum dtype *out)
{
    static const enum dtype all[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(dtype_info(all[i])->name, name) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return -1;
}

size_t dtype_row_bytes(enum dtype t, uint64_t n)
{
    const struct dtype_info *info = dtype_info(t);
    if (!info || n % (uint64_t)info->block)
        return 0;
    uint64_t blocks = n / (uint64_t)info->block;
    if (blocks > SIZE_MAX / info->block_bytes)
        return 0;
    return (size_t)blocks * info->block_bytes;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float dtype_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { /* zero / subnormal: man * 2^-24 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t dtype_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf stays inf, nan stays a quiet nan */
        return sign | (abs > 0x7f800000u ? 0x7e00 : 0x7c00);
    if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00;
    if (abs < 0x38800000u) {               /* below the smallest normal f16: round to a subnormal */
        float v = bits_f32(abs) * 0x1p24f; /* exact scaling, then round to nearest even */
        return sign | (uint16_t)lrintf(v);
    }
    /* normal: round the 13 dropped mantissa bits to nearest even */
    uint32_t mant_odd = (abs >> 13) & 1;
    abs += 0xfffu + mant_odd;
    return sign | (uint16_t)((abs - 0x38000000u) >> 13);
}

float dtype_bf16_to_f32(uint16_t b)
{
    return bits_f32((uint32_t)b << 16);
}

uint16_t dtype_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* nan: keep it a quiet nan */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

void dtype_to_f32(enum dtype t, const void *src, float *dst, int64_t n)
{
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case DTYPE_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = dtype_f16_to_f32(s[i]);
        break;
    }
    case DTYPE_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = dtype_bf16_to_f32(s[i]);
        break;
    }
    case DTYPE_Q8_0: {
        const struct dtype_q8_0 *b = src;
        for (int64_t i = 0; i < n / DTYPE_Q8_0_BLOCK; i++) {
            float d = dtype_f16_to_f32(b[i].d);
            for (int j = 0; j < DTYPE_Q8_0_BLOCK; j++)
                dst[i * DTYPE_Q8_0_BLOCK + j] = d * (float)b[i].q[j];
        }
        break;
    }
    }
}

void dtype_from_f32(enum dtype t, const float *src, void *dst, int64_t n)
{
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case DTYPE_F16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = dtype_f32_to_f16(src[i]);
        break;
    }
    case DTYPE_BF16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = dtype_f32_to_bf16(src[i]);
        break;
    }
    case DTYPE_Q8_0: {
        struct dtype_q8_0 *b = dst;
        for (int64_t i = 0; i < n / DTYPE_Q8_0_BLOCK; i++) {
            const float *x = src + i * DTYPE_Q8_0_BLOCK;
            float amax = 0.0f;
            for (int j = 0; j < DTYPE_Q8_0_BLOCK; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            b[i].d = dtype_f32_to_f16(d);
            for (int j = 0; j < DTYPE_Q8_0_BLOCK; j++)
                b[i].q[j] = (int8_t)roundf(x[j] * id);
        }
        break;
    }
    }
}
