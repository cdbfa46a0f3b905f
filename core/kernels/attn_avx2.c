/*
 * attn_avx2 — attn's kernels for AVX2 + FMA + F16C (8 lanes); the code is in attn_simd.h.
 */
#include "kernels/attn_simd.h"
