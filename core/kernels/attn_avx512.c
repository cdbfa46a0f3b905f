/*
 * attn_avx512 — attn's kernels for AVX-512 (16 lanes); the code is in attn_simd.h.
 */
#include "kernels/attn_simd.h"
