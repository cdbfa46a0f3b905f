/*
 * dtype — element types of model tensors, with the GGUF ecosystem's type ids and block
 * layouts, so that standard GGUF tools read parley's files and parley reads theirs.
 *
 * A type stores `block` elements in `block_bytes` bytes. Rows of a tensor are whole blocks.
 *   F32   4 bytes per element
 *   F16   IEEE binary16
 *   BF16  the upper 16 bits of a binary32 (rounded to nearest even when converting)
 *   Q8_0  blocks of 32: an f16 scale d then 32 int8 q; element = d * q   (34 bytes)
 */
#ifndef PARLEY_DTYPE_H
#define PARLEY_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum dtype {
    DTYPE_F32 = 0,
    DTYPE_F16 = 1,
    /* 2, 3, 6, 7: the ecosystem's 4/5-bit types, reserved for later */
    DTYPE_Q8_0 = 8,
    DTYPE_BF16 = 30,
};

#define DTYPE_ID_LIMIT   64 /* type ids are below this; anything else is unknown */
#define DTYPE_Q8_0_BLOCK 32

struct dtype_q8_0 {
    uint16_t d; /* f16 scale */
    int8_t q[DTYPE_Q8_0_BLOCK];
};

struct dtype_info {
    const char *name; /* "f32", "f16", "bf16", "q8_0" */
    int block;        /* elements per block */
    size_t block_bytes;
};

/* Information on a supported type id, or NULL for an id parley cannot compute with. */
const struct dtype_info *dtype_info(uint32_t id);

/* Parses "f32", "f16", "bf16", "q8_0"; returns -1 when the name is unknown. */
int dtype_from_name(const char *name, enum dtype *out);

/* Bytes taken by n elements (n a multiple of the block size); 0 on overflow or a partial
 * block. */
size_t dtype_row_bytes(enum dtype t, uint64_t n);

float dtype_f16_to_f32(uint16_t h);
uint16_t dtype_f32_to_f16(float f);
float dtype_bf16_to_f32(uint16_t b);
uint16_t dtype_f32_to_bf16(float f);

/* f rounded to the nearest bf16 value (ties to even), kept as a float; NaN stays unchanged.
 * Inline: the norm and rope kernels call it per element. */
static inline float dtype_round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) <= 0x7f800000u)
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* Converts n elements (a multiple of the block size) of type t at src to float. */
void dtype_to_f32(enum dtype t, const void *src, float *dst, int64_t n);

/* Converts n floats (a multiple of the block size) to type t, rounding to nearest even for
 * f16/bf16 and quantizing Q8_0 as the ecosystem does (d = max|x|/127, q = round(x/d)). */
void dtype_from_f32(enum dtype t, const float *src, void *dst, int64_t n);

#endif
